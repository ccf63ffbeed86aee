"""The full denoiser graph: pre-processing, the two component networks, kernel application and
post-processing in one ``nn.Module``. It is both what ``train.py`` optimises and what ``export.py``
writes to ONNX, so training and inference run the same computation (docs/contract.md).

Everything is pointwise or local (finite differences, convolutions, local pooling), so tiled inference
with ``receptive_radius`` of overlap is exact.

Pre-processing (after Bako et al. 2017, KPCN):
* colours are clamped to >= 0. The *filtering space* of a component is where its kernels are applied and
  its loss is computed: specular is log1p-compressed (KPCN), diffuse light is used as is (Cycles already
  divided the albedo out; ``log_diffuse`` switches it to log1p too). Outputs go back with exp(x) - 1.
* the networks always *see* log1p colours, whatever the filtering space: a bounded input range for the
  convolutions, while the kernels still average the linear values.
* features: albedo (clamped to [0, ``albedo_max``] when set: Cycles writes a light's or the background's
  radiance there), normal, and depth as log1p(min(depth, depth_max)) / log1p(depth_max) (background
  depth in Cycles is ~1e10, the clamp keeps it finite and in [0, 1]).
* variances (optional): of the log1p colour the network sees, by the delta method Var[log1p X] ~
  Var[X] / (1 + X)^2, then log1p-compressed so that fireflies do not dominate the input range.
* x/y forward differences of the colour and the features, of the image extended by zeros. They are not
  built: each network's first convolution folds them into its weights (``DifferencesConv2d``), which is
  the same convolution and skips 26 full-resolution input channels per network. A network whose first
  convolution cannot fold them (not odd, square, stride 1) gets them built by ``finite_differences``,
  zero in the last column / row: the same except at the image's edge.
* Diffuse Color (optional, ``denoise_diffuse_color``): behind fog and other volumes Cycles' colour passes
  carry the volume's per-sample transmittance and are as noisy as the light, and ``recombine`` multiplies
  the denoised light by them. Such models take Diffuse Color as an input (a feature of both networks,
  clamped to [0, 1]) and the diffuse network filters it with kernels of its own (kpunet ``signals: 2``)
  into a third output, ``diffuse_color_denoised``, which the core multiplies back instead.
* Volume light apart (optional, ``separate_volume``; shards packed with ``--separate-volume``): the
  decomposition's ``volume`` buffer (volume light, and the residual with ``denoise_residual``) is a third
  colour input. The specular network filters it with kernels of its own (kpunet ``signals: 2``, in log1p
  space like the specular buffer, and of the light's size: ``extra_signal_kernel`` is for colour passes)
  into ``volume_denoised``. That network still sees the sum of the two buffers as its colour, as a
  network without the split does, and both networks see the volume buffer (log1p) as a feature: where
  the split is, they learn; weights without it start nearly as they were (``_load_from_state_dict``; the
  kernels act in log1p space, so where both buffers are non-zero the two results differ a little).
* Specular light path (optional, ``specular_light_path``; shards packed with ``--demodulate-specular``):
  the specular input is glossy and transmission *light* with its colour (GlossCol + TransCol,
  ``specular_color``) divided out, and the colour is an input too (a feature, clamped to [0, 1]). The
  specular network filters the radiance (light times colour, what the networks without the path filter)
  and, as one more signal with kernels of its own, the light, and predicts a per-pixel weight w between
  the two: specular light out = (1 - w) * filtered radiance / colour + w * filtered light, which the core
  multiplies by the colour as for any demodulating model. Filtering light keeps a texture that the colour
  carries (the mortar of a glossy brick wall) where filtering radiance blurs it; filtering radiance is
  right where the colour is noisy (behind volumes) or where the light path has not learned yet. Weights
  without the path load with w = 0.12 (``_path_heads``, ``PATH_WEIGHT_START``) and the light kernels a
  copy of the radiance's, so the fine-tune starts near their image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from denoiser_core.models import COLOUR_OUTPUT, VOLUME_OUTPUT  # models with the optional outputs
from denoiser_core.models import KNOWN_INPUTS as INPUT_CHANNELS  # the contract's inputs: name -> channels
from training.archs import build_arch
from training.archs.blocks import DifferencesConv2d, first_convolution

COMPONENTS = ("diffuse", "specular")
FEATURE_INPUTS = ("albedo", "normal", "depth")
OUTPUTS = ("diffuse_denoised", "specular_denoised")
# Logit of the light path's weight for weights loaded without the path: sigmoid(-2) = 0.12 starts the
# fine-tune near their image (-0.09 dB validation PSNR for `fast`) with a live gradient; from
# sigmoid(-10) the logit moved by 0.002 in 2,000 steps and the path stayed unused (docs/experiments.md)
PATH_WEIGHT_START = -2.0


def finite_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y, zero in the last column / row (same size as ``x``)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def set_layer_channels(module: nn.Module, channels: dict[str, list[int]],
                       design_outputs: frozenset[str] = frozenset()) -> None:
    """Give the layers ``channels`` names (paths in ``module``) these ``[in, out]`` channel counts: each
    convolution or batch norm is replaced by a fresh one of that size with its other settings kept. How a
    config (``model.channels``) rebuilds a network whose channels were pruned; load its weights after.
    Layers in ``design_outputs`` keep their output count (kernel logits: the design's, so a pruned
    network can change its kernel size, training/configs/fast_k3_gpu.yaml) and take only the inputs."""
    for path, (in_channels, out_channels) in channels.items():
        owner_path, _, name = path.rpartition(".")
        try:
            owner = module.get_submodule(owner_path)
            layer = getattr(owner, name)
        except AttributeError:
            raise ValueError(f"model.channels names {path}, which this model does not have") from None
        if path in design_outputs and isinstance(layer, nn.Conv2d):
            out_channels = layer.out_channels
        if isinstance(layer, nn.Conv2d):
            resized = nn.Conv2d(in_channels, out_channels, layer.kernel_size, layer.stride, layer.padding,
                                layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
        elif isinstance(layer, nn.BatchNorm2d) and in_channels == out_channels:
            resized = nn.BatchNorm2d(out_channels, layer.eps, layer.momentum, layer.affine,
                                     layer.track_running_stats)
        else:
            raise ValueError(f"model.channels: {path} is a {type(layer).__name__}, not a convolution or a "
                             "batch norm with as many inputs as outputs")
        setattr(owner, name, resized)


class DenoiserGraph(nn.Module):
    """``forward(diffuse, specular, albedo, normal, depth[, diffuse_variance, specular_variance])`` ->
    ``(diffuse_denoised, specular_denoised)``, all (N, C, H, W) as in docs/contract.md.

    ``model`` is the config's ``model`` mapping (``type`` + keyword arguments, see ``training.archs``);
    one network of that type is built per component. Its optional ``channels`` (written by
    ``training/prune.py``) gives layers other channel counts (``set_layer_channels``).
    """

    def __init__(self, model: dict, log_diffuse: bool = False, use_variance: bool = False,
                 use_gradients: bool = True, depth_max: float = 1e4, albedo_max: float | None = None,
                 denoise_diffuse_color: bool = False, separate_volume: bool = False,
                 specular_light_path: bool = False):
        super().__init__()
        self.denoise_diffuse_color = bool(denoise_diffuse_color)
        self.separate_volume = bool(separate_volume)
        self.specular_light_path = bool(specular_light_path)
        if ((self.denoise_diffuse_color or self.separate_volume or self.specular_light_path)
                and model.get("type") != "kpunet"):
            raise ValueError("graph.denoise_diffuse_color, graph.specular_light_path and "
                             "data.separate_volume need a kpunet model (its networks filter several signals)")
        self.albedo_max = None if albedo_max is None else float(albedo_max)
        self.model_spec = dict(model)
        self.log_space = {"diffuse": log_diffuse, "specular": True, "volume": True}
        self.use_variance, self.use_gradients, self.depth_max = use_variance, use_gradients, float(depth_max)
        self.differences_folded = False  # until _fold_differences
        architecture = {key: value for key, value in model.items() if key != "channels"}
        # the diffuse network also filters Diffuse Color, the specular one the volume buffer: light, with
        # kernels of the light's size (a 3x3 kernel at full resolution costs light 0.3-0.7 dB,
        # docs/experiments.md, questions 20 and 23)
        specular_signals = 1 + self.separate_volume + self.specular_light_path
        designs = {"diffuse": {**architecture, "signals": 2} if self.denoise_diffuse_color else architecture,
                   "specular": {**architecture, "signals": specular_signals, "extra_signal_kernel": None,
                                "path_weights": int(self.specular_light_path)}
                   if specular_signals > 1 else architecture}
        self.nets = nn.ModuleDict({c: build_arch(designs[c], self.feature_channels) for c in COMPONENTS})
        if model.get("channels"):  # a pruned graph (training/prune.py)
            outputs = {id(layer) for net in self.nets.values() if hasattr(net, "output_layers")
                       for layer in net.output_layers()}
            set_layer_channels(self, self._with_feature_inputs(model["channels"]), frozenset(
                name for name, layer in self.named_modules() if id(layer) in outputs))
        self.differences_folded = self._fold_differences()
        # Extra input channels the networks' first convolutions take, with zero weights (export's
        # pad_input_channels): the result is unchanged, and onnxruntime runs a convolution whose input
        # channels are a multiple of its NCHWc block (16 with AVX-512) about twice as fast.
        self.input_padding = 0

    def _with_feature_inputs(self, channels: dict[str, list[int]]) -> dict[str, list[int]]:
        """A pruned config's ``channels`` with each network's input convolution taking this graph's
        ``feature_channels``: pruning never removes inputs, and the count follows the graph's options (a
        pruned network fine-tuned with more features, ``_load_from_state_dict``)."""
        channels = dict(channels)
        for component, net in self.nets.items():
            path = f"nets.{component}.{first_convolution(net)[0]}"
            if path in channels:
                channels[path] = [self.feature_channels, channels[path][1]]
        return channels

    @property
    def feature_channels(self) -> int:
        """Channels a component network sees (``_network_input``): its colour and the shared features,
        with their x and y differences when ``use_gradients``, and its variance when ``use_variance``."""
        return sum(self._input_blocks(self._shared_channels))

    @property
    def network_input_channels(self) -> int:
        """Channels ``_network_input`` builds (before ``input_padding``): ``feature_channels``, less the
        differences when the first convolutions fold them."""
        blocks = self._input_blocks(self._shared_channels)
        return sum(blocks) - (sum(blocks[2:6]) if self.differences_folded else 0)

    @property
    def _shared_channels(self) -> int:
        return sum(INPUT_CHANNELS[name] for name in self._feature_inputs)

    def _fold_differences(self) -> bool:
        """Make every network's first convolution a ``DifferencesConv2d`` (same parameters); False, and
        nothing changed, when the graph takes no differences or a first convolution cannot fold them."""
        firsts = [first_convolution(net) for net in self.nets.values()]
        if not self.use_gradients or not all(DifferencesConv2d.applies_to(conv)
                                             and conv.in_channels == self.feature_channels
                                             for _name, conv in firsts):
            return False
        differenced = sum(self._input_blocks(self._shared_channels)[:2])
        self.replace_first_convolutions(lambda conv: DifferencesConv2d.from_convolution(conv, differenced))
        return True

    def replace_first_convolutions(self, make: Callable[[nn.Conv2d], nn.Module]) -> None:
        """Put ``make(conv)`` where each network's first convolution (``first_convolution``) is."""
        for net in self.nets.values():
            name, conv = first_convolution(net)
            owner_path, _, attribute = name.rpartition(".")
            setattr(net.get_submodule(owner_path), attribute, make(conv))

    @property
    def _feature_inputs(self) -> tuple[str, ...]:
        """The inputs every network sees beside its own colour, in ``_shared_features`` order: optional
        ones appended, so weights without them load with zero weights for them (``_load_from_state_dict``)."""
        return (FEATURE_INPUTS + (("diffuse_color",) if self.denoise_diffuse_color else ())
                + (("volume",) if self.separate_volume else ())
                + (("specular_color",) if self.specular_light_path else ()))

    @property
    def input_names(self) -> list[str]:
        names = list(COMPONENTS) + list(self._feature_inputs)
        return names + [f"{c}_variance" for c in COMPONENTS] if self.use_variance else names

    @property
    def output_names(self) -> list[str]:
        return (list(OUTPUTS) + ([COLOUR_OUTPUT] if self.denoise_diffuse_color else [])
                + ([VOLUME_OUTPUT] if self.separate_volume else []))

    def _input_blocks(self, shared: int) -> list[int]:
        """Channel counts of ``_network_input``'s parts, in order, with ``shared`` feature channels."""
        colour = INPUT_CHANNELS[COMPONENTS[0]]
        blocks = [colour, shared] * (3 if self.use_gradients else 1)
        return blocks + ([INPUT_CHANNELS["diffuse_variance"]] if self.use_variance else [])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights of a graph whose feature inputs are a prefix of this one's (``_feature_inputs``: without
        Diffuse Color and the volume buffer, or without the volume buffer) load into this one
        (``train.py --init``; the channel count alone cannot tell other layouts apart): each network's
        first convolution gets zero weights for the added feature channels, so the fine-tune starts from
        the trained network (kpunet starts a Diffuse Color signal's kernels as the identity). A specular
        network that did not filter the volume buffer starts filtering it with the kernels it predicted
        for the specular buffer, which held the volume light then: the same kernels on both parts of the
        buffer it sees."""
        shared = self._shared_channels
        for component, net in self.nets.items():
            name, _conv = first_convolution(net)
            key = f"{prefix}nets.{component}.{name}.weight"
            stored = state_dict.get(key)
            if stored is None or stored.dim() != 4:
                continue
            fewer = [s for s in range(sum(INPUT_CHANNELS[n] for n in FEATURE_INPUTS), shared)
                     if stored.shape[1] == sum(self._input_blocks(s))]
            if fewer:
                old_blocks, new_blocks = self._input_blocks(fewer[0]), self._input_blocks(shared)
                widened = stored.new_zeros((stored.shape[0], sum(new_blocks), *stored.shape[2:]))
                old_start = new_start = 0
                for old, new in zip(old_blocks, new_blocks, strict=True):
                    widened[:, new_start:new_start + old] = stored[:, old_start:old_start + old]
                    old_start, new_start = old_start + old, new_start + new
                state_dict[key] = widened
        if self.separate_volume or self.specular_light_path:
            self._path_heads(state_dict, f"{prefix}nets.specular.")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _path_heads(self, state_dict, prefix: str) -> None:
        """A specular head with fewer signals than this one's, widened: a one-signal head's logits give
        the volume signal's kernels too (they filtered the volume light then); the light path's kernels
        start as the radiance's, its weight at ``PATH_WEIGHT_START``."""
        net = self.nets["specular"]
        for level, head in enumerate(net.heads):
            for name in ("weight", "bias"):
                key = f"{prefix}heads.{level}.{name}"
                stored = state_dict.get(key)
                signal = net.predict_kernels[level] ** 2 + net._blend_rows(level)
                if stored is None or stored.shape[0] == head.out_channels or stored.shape[0] % signal:
                    continue
                chunks = list(stored.split(signal))
                if len(chunks) > 1 + self.separate_volume:
                    continue  # not a layout this widening knows: the strict load reports it
                if self.separate_volume and len(chunks) == 1:
                    chunks.append(chunks[0])
                if self.specular_light_path:
                    chunks.append(chunks[0])
                    if level == 0:
                        start = stored.new_zeros((1, *stored.shape[1:]))
                        chunks.append(start + PATH_WEIGHT_START if name == "bias" else start)
                state_dict[key] = torch.cat(chunks)

    @property
    def receptive_radius(self) -> int:
        return max(net.receptive_radius for net in self.nets.values()) + (1 if self.use_gradients else 0)

    @property
    def size_multiple(self) -> int:
        return max(getattr(net, "size_multiple", 1) for net in self.nets.values())

    def to_space(self, component: str, linear: torch.Tensor) -> torch.Tensor:
        """Linear colour -> the component's filtering space (also used on references by the loss)."""
        x = linear.clamp(min=0)
        return torch.log1p(x) if self.log_space[component] else x

    def from_space(self, component: str, x: torch.Tensor) -> torch.Tensor:
        # exp(x) - 1 rather than expm1: the ONNX exporter has no expm1; float32 error is ~1e-7 absolute
        return torch.exp(x) - 1 if self.log_space[component] else x

    def _shared_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``_feature_inputs`` as the networks see them: albedo clamped, depth normalised, Diffuse Color
        clamped to [0, 1], the volume buffer log1p-compressed like the colours, the specular colour clamped
        to [0, 1]."""
        depth = torch.log1p(inputs["depth"].clamp(0, self.depth_max)) / math.log1p(self.depth_max)
        features = [inputs["albedo"].clamp(0, self.albedo_max), inputs["normal"], depth]
        if self.denoise_diffuse_color:
            features.append(inputs["diffuse_color"].clamp(0, 1))
        if self.separate_volume:
            features.append(torch.log1p(inputs["volume"].clamp(min=0)))
        if self.specular_light_path:
            features.append(inputs["specular_color"].clamp(0, 1))
        return torch.cat(features, dim=1)

    def _network_input(self, linear: torch.Tensor, shared: list[torch.Tensor],
                       variance: torch.Tensor | None) -> torch.Tensor:
        """[colour, shared features, their x differences, their y differences, variance, padding], without
        the differences when the first convolutions fold them. ``shared`` is ``_shared_parts``: the
        features' differences are taken once for both components."""
        seen = torch.log1p(linear.clamp(min=0))
        parts = [seen, shared[0]]
        if self.use_gradients and not self.differences_folded:
            seen_dx, seen_dy = finite_differences(seen)
            parts += [seen_dx, shared[1], seen_dy, shared[2]]
        if self.use_variance:
            brightness = linear.clamp(min=0).mean(dim=1, keepdim=True)
            parts.append(torch.log1p(variance.clamp(min=0) / (1 + brightness) ** 2))
        if self.input_padding:  # any finite channels: their weights are zero
            parts += [seen[:, :1]] * self.input_padding  # (no Expand: its shape arithmetic is ops too)
        return torch.cat(parts, dim=1)

    def _shared_parts(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        shared = self._shared_features(inputs)
        differences = self.use_gradients and not self.differences_folded
        return [shared, *finite_differences(shared)] if differences else [shared]

    def denoise(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both components: ``{c}`` (linear output) and ``{c}_space`` (in the filtering space); with
        ``separate_volume`` ``volume`` and ``volume_space`` too, with ``denoise_diffuse_color``
        ``diffuse_color``; with ``specular_light_path`` ``specular`` is light, as its input was, and
        ``light_path`` / ``light_path_space`` are that path's own output."""
        shared = self._shared_parts(inputs)
        out: dict[str, torch.Tensor] = {}
        for component in COMPONENTS:
            linear = inputs[component]
            light_path = component == "specular" and self.specular_light_path
            if light_path:  # the input is light: the network filters the radiance, the light as a signal
                linear = linear * inputs["specular_color"]
            variance = inputs.get(f"{component}_variance") if self.use_variance else None
            seen = linear + inputs["volume"] if component == "specular" and self.separate_volume else linear
            features = self._network_input(seen, shared, variance)
            further = self._further_signals(component, inputs)
            filtered = self.nets[component](features, self.to_space(component, linear),
                                            *(signal for signal, _space in further.values()))
            if further:
                filtered, *results = filtered
                for (name, (_signal, space)), result in zip(further.items(), results, strict=False):
                    if space is None:
                        out[name] = result
                    else:
                        out[f"{name}_space"], out[name] = result, self.from_space(space, result)
            out[f"{component}_space"] = filtered
            out[component] = self.from_space(component, filtered)
            if light_path:
                weight = torch.sigmoid(results[-1])  # kpunet's path weight, after the signals
                from_radiance = out[component] / inputs["specular_color"]
                out[component] = from_radiance + weight * (out["light_path"] - from_radiance)
                out[f"{component}_space"] = self.to_space(component, out[component])
        return out

    def _further_signals(self, component: str, inputs: dict[str, torch.Tensor],
                         ) -> dict[str, tuple[torch.Tensor, str | None]]:
        """What a component's network filters after its own colour, in kpunet's signal order: output name
        -> (signal, the filtering space it is in, or None for a colour pass filtered as it is)."""
        if component == "diffuse":
            return ({"diffuse_color": (inputs["diffuse_color"].clamp(min=0), None)}
                    if self.denoise_diffuse_color else {})
        further = {}
        if self.separate_volume:
            further["volume"] = (self.to_space("volume", inputs["volume"]), "volume")
        if self.specular_light_path:
            further["light_path"] = (self.to_space("specular", inputs["specular"]), "specular")
        return further

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs in ``input_names`` order (as ONNX feeds them) or by name; outputs in ``output_names``
        order: diffuse light, specular[, Diffuse Color][, volume]."""
        inputs = {**dict(zip(self.input_names[:len(args)], args, strict=True)), **kwargs}
        out = self.denoise(inputs)
        return ((out["diffuse"], out["specular"]) + ((out["diffuse_color"],) if self.denoise_diffuse_color
                                                     else ())
                + ((out["volume"],) if self.separate_volume else ()))


def example_inputs(graph: DenoiserGraph, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the graph's signature (HDR-ish colours, plausible features), batch 1: for export,
    FLOP counts, benchmarks and tests."""
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    for name in graph.input_names:
        x = torch.rand(1, INPUT_CHANNELS[name], height, width, generator=g)
        if name in COMPONENTS or name == "volume":
            x = x * 4 * torch.rand(1, 1, height, width, generator=g) ** 4
        elif name == "normal":
            x = 2 * x - 1
        elif name == "depth":
            x = 1 + 20 * x
        elif name == "specular_color":  # as decompose gives it: 1 where the colour is below its minimum
            x = torch.where(x > 0.02, x, torch.ones_like(x))
        inputs[name] = x
    return inputs


def build_graph(config) -> DenoiserGraph:
    """The graph a ``training.config.Config`` describes."""
    g = config.graph
    return DenoiserGraph(config.model, log_diffuse=g.log_diffuse, use_variance=g.use_variance,
                         use_gradients=g.use_gradients, depth_max=g.depth_max, albedo_max=g.albedo_max,
                         denoise_diffuse_color=g.denoise_diffuse_color,
                         separate_volume=config.data.separate_volume,
                         specular_light_path=g.specular_light_path)
