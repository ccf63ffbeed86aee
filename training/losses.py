"""Training losses and the validation metric.

Terms (per element, averaged over valid elements):
* ``l1``: |x - y|                                          (Bako et al. 2017 train KPCN with L1)
* ``relmse``: (x - y)^2 / (y^2 + 0.01)                        (Rousselle et al. 2011; as training/metrics.py)
* ``smape``: |x - y| / (|x| + |y| + 0.01)                      (Vogels et al. 2018)
* ``ssim``: 1 - SSIM, 11x11 Gaussian window, sigma 1.5         (Wang et al. 2004), on tonemapped values
* ``combined``: sum of ``loss.weights[term] * term``; default 0.16 L1 + 0.84 (1 - SSIM) (Zhao et al. 2017)

Range the loss sees (``loss.range``):
* ``hdr``: component losses in each component's filtering space (``loss.component_space: filtering``, as
  KPCN: log1p specular) or linear; joint losses on the linear recombined image. Target elements that are
  not finite are masked out.
* ``tonemapped``: everything through ``tonemap`` first (``srgb`` = clamp to [0, 1] + sRGB curve, exactly
  what evaluation's PSNR/SSIM/FLIP see; ``reinhard`` = x / (1 + x); ``log`` = log1p(x) / log1p(64)),
  clamped to [0, 1].

What is tonemapped in the component stage (``loss.tonemapped_diffuse``; also SSIM's input in ``hdr``):
* ``contribution`` (default): each component's share of the beauty, ``diffuse_color * diffuse`` and
  ``specular`` (``specular_color * specular`` for shards packed with ``--demodulate-specular``, whose
  specular is light), the values the display adds up. Demodulated diffuse light is often above 1 where the
  image is not (irradiance 3 on albedo 0.3 is shown at 0.9); clamped as light, such pixels had no
  gradient at all.
* ``light``: the demodulated diffuse light itself, clamped at 1 (how the shipped fast and quality were
  trained).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.config import LossConfig

EPSILON = 1e-2
LOG_WHITE = 64.0


def tonemap(x: torch.Tensor, kind: str = "srgb") -> torch.Tensor:
    """Linear HDR -> display values in [0, 1] (differentiable)."""
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    if kind == "srgb":  # the pow branch is clamped so its gradient stays finite at 0
        x = x.clamp(max=1)
        return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    if kind == "reinhard":
        return x / (1 + x)
    if kind == "log":
        return (torch.log1p(x) / math.log1p(LOG_WHITE)).clamp(max=1)
    raise ValueError(f"unknown tonemap {kind!r}")


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    window = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return window / window.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM of (N, C, H, W) images (separable Gaussian window, zero-padded borders)."""
    channels = x.shape[1]
    window = _gaussian_window().to(x)
    wx = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    wy = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, wx, padding=(0, wx.shape[-1] // 2), groups=channels)
        return F.conv2d(t, wy, padding=(wy.shape[-2] // 2, 0), groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.expand_as(values).to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


POINTWISE = {
    "l1": lambda x, y: (x - y).abs(),
    "relmse": lambda x, y: (x - y) ** 2 / (y * y + EPSILON),
    "smape": lambda x, y: (x - y).abs() / (x.abs() + y.abs() + EPSILON),
}


class DenoiseLoss:
    """The configured loss of one image pair; see the module docstring."""

    def __init__(self, config: LossConfig):
        self.config = config
        self.weights = dict(config.weights) if config.type == "combined" else {config.type: 1.0}
        unknown = set(self.weights) - set(POINTWISE) - {"ssim"}
        if unknown:
            raise ValueError(f"unknown loss.weights term {sorted(unknown)[0]}")

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, pred_linear: torch.Tensor | None = None,
                 target_linear: torch.Tensor | None = None) -> torch.Tensor:
        """``pred``/``target`` in the space the pointwise terms see (filtering space or linear HDR);
        ``*_linear`` the same images in linear HDR for tonemapping (default: ``pred``/``target``)."""
        pred_linear = pred if pred_linear is None else pred_linear
        target_linear = target if target_linear is None else target_linear
        mask = torch.isfinite(target_linear).all(dim=1, keepdim=True) & torch.isfinite(target).all(1, True)
        target = torch.nan_to_num(target, nan=0.0, posinf=0.0, neginf=0.0)
        shown_pred = shown_target = None
        if self.config.range == "tonemapped" or "ssim" in self.weights:
            shown_pred = tonemap(pred_linear, self.config.tonemap)
            shown_target = tonemap(target_linear, self.config.tonemap)
        if self.config.range == "tonemapped":
            pred, target = shown_pred, shown_target
        total = pred.new_zeros(())
        for term, weight in self.weights.items():
            if term == "ssim":
                values = 1 - ssim_map(shown_pred, shown_target)
            else:
                values = POINTWISE[term](pred, target)
            total = total + weight * _masked_mean(values, mask)
        return total


def recombine(diffuse_color: torch.Tensor, diffuse: torch.Tensor, specular: torch.Tensor,
              specular_color: torch.Tensor | None = None, volume: torch.Tensor | None = None) -> torch.Tensor:
    """The beauty the networks are responsible for: DiffCol * diffuse light + specular, the specular
    multiplied by ``specular_color`` when it is light (shards packed with --demodulate-specular), plus
    the volume buffer when it is apart (--separate-volume)."""
    beauty = diffuse_color * diffuse + (specular if specular_color is None else specular_color * specular)
    return beauty if volume is None else beauty + volume


def recombine_batch(batch: dict, diffuse: torch.Tensor, specular: torch.Tensor,
                    diffuse_color: torch.Tensor | None = None, volume: torch.Tensor | None = None,
                    ) -> torch.Tensor:
    """``recombine`` with the colours of ``batch`` (its ``specular_color`` when the shards have one), or
    with ``diffuse_color`` in place of the noisy render's; shards with a volume buffer add ``volume``,
    or the batch's noisy one."""
    colour = batch["diffuse_color"] if diffuse_color is None else diffuse_color
    if volume is None:
        volume = batch.get("volume")
    return recombine(colour, diffuse, specular, batch.get("specular_color"), volume)


def reference_beauty(batch: dict) -> torch.Tensor:
    """The reference image: reference light times the reference's Diffuse Color where the shards hold it
    (pack index version 3), else the noisy render's (older packs)."""
    return recombine_batch(batch, batch["diffuse_reference"], batch["specular_reference"],
                           batch.get("diffuse_color_reference"), batch.get("volume_reference"))


def diffuse_colours(batch: dict, outputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(Diffuse Color the prediction is multiplied by, the one its target is multiplied by): a model that
    denoises Diffuse Color is held to the reference's colour; any other model can do nothing about the
    noisy render's colour, so both sides keep it and the loss sees only what the model can change."""
    if "diffuse_color" in outputs:
        return outputs["diffuse_color"], batch["diffuse_color_reference"]
    return batch["diffuse_color"], batch["diffuse_color"]


# The colour that turns each component's buffer into its share of the beauty (``contribution``); the
# volume buffer is radiance, its own share.
COMPONENT_COLOURS = {"diffuse": "diffuse_color", "specular": "specular_color", "volume": None}


def stage_loss(loss: DenoiseLoss, graph, outputs: dict, batch: dict, target: str) -> torch.Tensor:
    """Loss of one training stage: ``components`` (diffuse + specular (+ volume), each on its own, as
    KPCN, plus the light path's own output with ``loss.light_path``) or ``joint`` (the recombined image
    ``diffuse_color * diffuse + specular_color * specular`` (+ volume))."""
    predicted_colour, target_colour = diffuse_colours(batch, outputs)
    if target == "joint":
        pred = recombine_batch(batch, outputs["diffuse"], outputs["specular"], predicted_colour,
                               outputs.get("volume"))
        return loss(pred, reference_beauty({**batch, "diffuse_color_reference": target_colour}))
    # (output, the component it is scored as, weight): the light path is scored as specular light
    scored = [(c, c, 1.0) for c in ("diffuse", "specular") + (("volume",) if "volume" in outputs else ())]
    if "light_path" in outputs and loss.config.light_path:
        scored.append(("light_path", "specular", loss.config.light_path))
    total = 0
    for name, component, weight in scored:
        reference = batch[f"{component}_reference"]
        shown = (outputs[name], reference)  # what tonemapping sees of this output
        colour_name = COMPONENT_COLOURS[component]
        colours = ((predicted_colour, target_colour) if component == "diffuse"
                   else (batch.get(colour_name) if colour_name else None,) * 2)
        if colours[0] is not None and loss.config.tonemapped_diffuse == "contribution":
            shown = (colours[0] * outputs[name], colours[1] * reference)
        if loss.config.component_space == "filtering":
            term = loss(outputs[f"{name}_space"], graph.to_space(component, reference), *shown)
        else:
            term = loss(outputs[name], reference, *shown)
        total = total + weight * term
    return total


@torch.no_grad()
def psnr(pred: torch.Tensor, target: torch.Tensor, kind: str = "srgb") -> torch.Tensor:
    """Per-image PSNR (dB) of tonemapped (N, C, H, W) images; ``srgb`` matches evaluation's PSNR."""
    mse = ((tonemap(pred, kind) - tonemap(target, kind)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))
