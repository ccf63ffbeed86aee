"""Blender render-pass names across versions, and the diffuse/specular decomposition.

This module is the single definition of:

* the canonical pass names the project uses (``diffuse_direct``, ``glossy_color``, ...),
* how each Blender version spells them in a multilayer EXR (4.x ``DiffDir``, 5.0 ``Diffuse Direct``),
* which view-layer setting turns each pass on (for error messages and the Blender add-on),
* the decomposition of a render into the parts the networks denoise, and the recombination.

Decomposition (Cycles' own light-path split, checked against real 4.5 renders: the sum below equals
Combined to float precision)::

    Combined = DiffCol * (DiffDir + DiffInd)                      -> diffuse_color * diffuse
             + GlossCol * (GlossDir + GlossInd)                   \
             + TransCol * (TransDir + TransInd)                    > specular
             + VolumeDir + VolumeInd                              /
             + Emit + Env + residual                              -> passed through unchanged

``diffuse`` is Cycles' diffuse *light* (the albedo DiffCol is already divided out), which is exactly the
untextured irradiance KPCN denoises. Whatever the parts do not explain (passes the user did not enable,
subsurface, holdouts, ...) stays in ``residual`` and is added back untouched, so a pixel the networks do
not change recombines to Combined: nothing is lost.

The passes are per-sample *means*, and Combined holds the mean of the per-sample products DiffCol * light,
not the product of the means: where a pixel's samples see different diffuse colours (edges, textures under
depth of field, fog in front of a surface) the two differ by the samples' covariance, which at low sample
counts is noise of either sign (down to -2.7 on a fog view at 16 spp). When Emit and Env are rendered,
``decompose`` therefore takes the diffuse light as what Combined leaves for it,
``(Combined - specular - Emit - Env) / DiffCol`` (where DiffCol > ``FOLD_MIN_COLOR``, clamped at 0), so that
noise is denoised with the diffuse light instead of being added back untouched (measured in
docs/experiments.md: +0.4 dB at 4 and 16 spp on the held-back views, with the shipped weights).

With ``demodulate_specular`` (models whose metadata says ``kprcan.demodulate_specular``), the specular
buffer is divided by the specular colour ``GlossCol + TransCol`` (per channel, where it exceeds
``FOLD_MIN_COLOR``; elsewhere the colour is 1 and the radiance is kept), as Cycles divides the diffuse light
by DiffCol: the networks then filter specular *light*, and a textured reflector keeps its texture because
``recombine`` multiplies the colour back::

    Combined = diffuse_color * diffuse + specular_color * specular + residual

Volume light (and, with ``denoise_residual``, the residual) that joins the specular buffer is divided by
the same colour, so the recombination stays exact.

With ``separate_volume`` (models that take the ``volume`` input), volume light and, with
``denoise_residual``, the residual do not join the specular buffer: they form a buffer of their own,
``volume``, denoised as radiance, never divided by a colour. Behind fog Glossy Color carries the volume's
per-sample transmittance, and volume light divided by it is noise (docs/experiments.md); apart, the specular
buffer is glossy and transmission light only, which ``demodulate_specular`` can divide by its colour
safely::

    Combined = diffuse_color * diffuse + specular_color * specular + volume + residual
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# canonical name -> (Blender 3.x/4.x layer name, Blender 5.0 layer name, channel count, setting path)
# The setting path is relative to the view layer; "cycles." settings live on view_layer.cycles.
PASS_TABLE: dict[str, tuple[str, str, int, str]] = {
    "combined": ("Combined", "Combined", 4, "use_pass_combined"),
    "diffuse_direct": ("DiffDir", "Diffuse Direct", 3, "use_pass_diffuse_direct"),
    "diffuse_indirect": ("DiffInd", "Diffuse Indirect", 3, "use_pass_diffuse_indirect"),
    "diffuse_color": ("DiffCol", "Diffuse Color", 3, "use_pass_diffuse_color"),
    "glossy_direct": ("GlossDir", "Glossy Direct", 3, "use_pass_glossy_direct"),
    "glossy_indirect": ("GlossInd", "Glossy Indirect", 3, "use_pass_glossy_indirect"),
    "glossy_color": ("GlossCol", "Glossy Color", 3, "use_pass_glossy_color"),
    "transmission_direct": ("TransDir", "Transmission Direct", 3, "use_pass_transmission_direct"),
    "transmission_indirect": ("TransInd", "Transmission Indirect", 3, "use_pass_transmission_indirect"),
    "transmission_color": ("TransCol", "Transmission Color", 3, "use_pass_transmission_color"),
    "volume_direct": ("VolumeDir", "Volume Direct", 3, "cycles.use_pass_volume_direct"),
    "volume_indirect": ("VolumeInd", "Volume Indirect", 3, "cycles.use_pass_volume_indirect"),
    "emission": ("Emit", "Emission", 3, "use_pass_emit"),
    "environment": ("Env", "Environment", 3, "use_pass_environment"),
    "normal": ("Normal", "Normal", 3, "use_pass_normal"),
    "depth": ("Depth", "Depth", 1, "use_pass_z"),
    "denoising_albedo": ("Denoising Albedo", "Denoising Albedo", 3, "cycles.denoising_store_passes"),
    "denoising_normal": ("Denoising Normal", "Denoising Normal", 3, "cycles.denoising_store_passes"),
    "denoising_depth": ("Denoising Depth", "Denoising Depth", 1, "cycles.denoising_store_passes"),
    "noisy_image": ("Noisy Image", "Noisy Image", 4, "cycles.denoising_store_passes"),
    # screen motion to the previous (xy) and next (zw) frame; Cycles writes it only without motion blur
    "vector": ("Vector", "Vector", 4, "use_pass_vector"),
}

# Passes the decomposition needs. The volume passes are optional: present, they are denoised as part of
# the specular buffer (or as a buffer of their own, decompose's separate_volume); absent, volume light stays
# in the residual (passed through, not denoised).
# Emission, environment and anything else stay in the residual, unless a model denoises it too
# (decompose's ``denoise_residual``).
DECOMPOSITION_PASSES = (
    "combined",
    "diffuse_direct", "diffuse_indirect", "diffuse_color",
    "glossy_direct", "glossy_indirect", "glossy_color",
    "transmission_direct", "transmission_indirect", "transmission_color",
)
OPTIONAL_PASSES = ("volume_direct", "volume_indirect")
# Light that is not diffuse, glossy, transmission or volume; with both present, decompose() folds the rest
# of the residual (the per-sample colour covariance, see the module docstring) into the diffuse light.
EMITTED_PASSES = ("emission", "environment")
FOLD_MIN_COLOR = 0.02   # below this DiffCol the division would amplify noise; the residual keeps it
# Below this GlossCol + TransCol the specular radiance is not demodulated (decompose's demodulate_specular):
# dividing by a tiny colour would amplify noise, as for the fold above.
SPECULAR_MIN_COLOR = FOLD_MIN_COLOR
# Every pass decompose() uses when present, beyond the required ones: inference forwards exactly these and
# the add-on enables them, so a pass added to decompose() reaches both.
PASSES_USED_WHEN_PRESENT = (*OPTIONAL_PASSES, *EMITTED_PASSES)
FEATURE_PASSES = ("denoising_albedo", "denoising_normal", "denoising_depth")

_LAYER_NAME_TO_CANONICAL = {}
for _canonical, (_v4, _v5, _n, _setting) in PASS_TABLE.items():
    _LAYER_NAME_TO_CANONICAL[_v4] = _canonical
    _LAYER_NAME_TO_CANONICAL[_v5] = _canonical
_LAYER_NAME_TO_CANONICAL["Z"] = "depth"  # also accept a depth pass named plain "Z"


def canonical_pass_name(layer_pass_name: str) -> str | None:
    """Map a pass name as written in an EXR (any Blender version) to its canonical name, or None."""
    return _LAYER_NAME_TO_CANONICAL.get(layer_pass_name)


def blender_pass_name(canonical: str, blender_major: int) -> str:
    """The name Blender ``blender_major`` gives this pass in a multilayer EXR."""
    v4, v5, _n, _setting = PASS_TABLE[canonical]
    return v5 if blender_major >= 5 else v4


# Where Blender's UI (Properties > View Layer > Passes) has the checkbox of passes outside the Light panel.
_UI_LOCATION = {
    "combined": "Data > Combined", "depth": "Data > Z", "normal": "Data > Normal",
    "denoising_albedo": "Data > Denoising Data", "denoising_normal": "Data > Denoising Data",
    "denoising_depth": "Data > Denoising Data", "noisy_image": "Data > Denoising Data",
    "emission": "Light > Other > Emission", "environment": "Light > Other > Environment",
    "vector": "Data > Vector (with Motion Blur off)",
}


def enable_hint(canonical: str) -> str:
    """Where to turn the pass on in Blender's UI, and the Python setting, for error messages."""
    # the other passes sit in the Light panel under their own name: "Glossy Direct" -> Light > Glossy > Direct
    where = _UI_LOCATION.get(canonical) or "Light > " + display_name(canonical).replace(" ", " > ")
    return f"View Layer Properties > Passes > {where}, or view_layer.{PASS_TABLE[canonical][3]} = True"


@dataclass
class Decomposition:
    """A render split into what the networks see and what is carried through.

    All arrays are float32, shape (H, W, C): C = 3 for colours, normals, albedo; 1 for depth/alpha.
    """

    diffuse: np.ndarray         # diffuse light, DiffDir + DiffInd (albedo already divided out by Cycles),
    #                             with the colour covariance folded in when Emit and Env are present
    diffuse_color: np.ndarray   # DiffCol, multiplied back in after denoising
    specular: np.ndarray        # glossy + transmission (+ volume, without separate_volume) radiance,
    #                             divided by specular_color
    albedo: np.ndarray          # Denoising Albedo (feature)
    normal: np.ndarray          # Denoising Normal (feature)
    depth: np.ndarray           # Denoising Depth (feature), (H, W, 1)
    residual: np.ndarray        # Combined.rgb - (diffuse_color * diffuse + specular_color * specular
    #                             [+ volume]): emission, env, rest (zero with denoise_residual)
    alpha: np.ndarray           # Combined.A, (H, W, 1)
    specular_color: np.ndarray  # GlossCol + TransCol with demodulate_specular (1 where tiny), else ones;
    #                             multiplied back in after denoising
    volume: np.ndarray | None = None  # with separate_volume: volume light (+ the residual with
    #                                   denoise_residual), radiance; None: it is in specular

    @property
    def shape(self) -> tuple[int, int]:
        return self.diffuse.shape[0], self.diffuse.shape[1]


def missing_passes(available: set[str], needed: tuple[str, ...] | list[str]) -> list[str]:
    """Canonical names in ``needed`` that are not in ``available``, in order."""
    return [name for name in needed if name not in available]


def sanitize(image: np.ndarray) -> np.ndarray:
    """Replace NaN and +-Inf by 0 so they can never reach a network or an output file. An image that is
    finite already is returned as it is (no copy)."""
    image = np.asarray(image, dtype=np.float32)
    if all_finite(image):
        return image
    return np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)


def all_finite(image: np.ndarray) -> bool:
    """Whether every value is finite. Usually one float32 sum, with no mask the size of the image (NaN
    and +-Inf reach the sum; 1080p, 19 passes: 0.04 s against 0.05 s for masks, 0.08 s for float64 sums);
    only a sum that is not finite, from such values or from an overflow, is checked value by value."""
    return bool(np.isfinite(np.add.reduce(image, axis=None, dtype=np.float32))
                or np.isfinite(image).all())


# The valid range of each guide the networks read (decompose, sanitize_guide). A few broken pixels (a
# normal of 1e6) would otherwise spread through a network's context of over a hundred pixels. None: no
# upper bound (a light or the background holds its radiance in Denoising Albedo; the shipped graphs clamp
# it themselves). Depth is a distance: +Inf becomes FAR_DEPTH, what Cycles writes for the background.
FAR_DEPTH = 1e10
GUIDE_RANGES: dict[str, tuple[float, float | None]] = {
    "albedo": (0.0, None), "normal": (-1.0, 1.0), "depth": (0.0, FAR_DEPTH),
    "diffuse_variance": (0.0, None), "specular_variance": (0.0, None),
}


def sanitize_guide(name: str, image: np.ndarray, finite: bool = False) -> np.ndarray:
    """A copy of guide ``name`` (a GUIDE_RANGES key) clamped to its valid range: NaN becomes 0 (or the
    range's end nearest to 0), +-Inf the range's ends (0 where a range has no upper end). ``finite``: the
    caller has checked that ``image`` holds no NaN/Inf."""
    low, high = GUIDE_RANGES[name]
    image = np.asarray(image, dtype=np.float32)
    top = np.inf if high is None else high
    if not finite and not all_finite(image):
        image = np.nan_to_num(image, nan=min(max(0.0, low), top), posinf=0.0 if high is None else high,
                              neginf=low)
    return np.clip(image, low, top).astype(np.float32, copy=False)


def decompose(passes: dict[str, np.ndarray], denoise_residual: bool = False,
              demodulate_specular: bool = False, *, separate_volume: bool = False,
              finite: bool = False) -> Decomposition:
    """Split canonical passes (H, W, C float arrays) into the denoiser's components.

    ``passes`` (left unchanged) must hold DECOMPOSITION_PASSES and FEATURE_PASSES: colours are read with
    NaN/Inf as 0, the features clamped to GUIDE_RANGES. OPTIONAL_PASSES are used when present,
    and with both EMITTED_PASSES the diffuse light takes the colour covariance too (module docstring).
    With ``denoise_residual`` the specular buffer is everything that is not diffuse light (the residual --
    emission, environment, what no pass covers -- joins it and is denoised with it) and the residual is
    zero: for models trained that way (metadata ``kprcan.denoise_residual``). With ``demodulate_specular``
    the specular buffer is light, divided by ``specular_color`` (module docstring; metadata
    ``kprcan.demodulate_specular``); without, ``specular_color`` is ones. With ``separate_volume`` volume
    light (and the residual, with ``denoise_residual``) is the ``volume`` buffer instead of part of the
    specular one (module docstring; models with the ``volume`` input). ``finite``: the caller has
    checked that no pass holds NaN/Inf (inference counts them for its warning), so none is checked again.
    """
    # Written with in-place operations on arrays made here (a 1080p frame: 8 fresh images instead of
    # 17, 0.2 s less), in the order of the formulas above, so every value is the same to the bit.
    def get(name: str) -> np.ndarray:
        return np.asarray(passes[name], dtype=np.float32) if finite else sanitize(passes[name])

    def light(direct: str, indirect: str) -> np.ndarray:  # a new array
        return np.add(get(direct), get(indirect))

    combined = get("combined")
    rgb = combined[..., :3]
    alpha = _read_only(combined[..., 3:4]) if combined.shape[-1] > 3 else np.ones_like(rgb[..., :1])
    diffuse = light("diffuse_direct", "diffuse_indirect")
    diffuse_color = get("diffuse_color")
    glossy_color, transmission_color = get("glossy_color"), get("transmission_color")
    specular = light("glossy_direct", "glossy_indirect")
    specular *= glossy_color
    transmission = light("transmission_direct", "transmission_indirect")
    transmission *= transmission_color
    specular += transmission
    del transmission
    # volume light: its own buffer with separate_volume, else part of the specular one
    volume = np.zeros_like(specular) if separate_volume else specular
    for name in OPTIONAL_PASSES:
        if name in passes:
            volume += get(name)
    residual = diffuse_color * diffuse
    residual += specular
    if separate_volume:
        residual += volume
    np.subtract(rgb, residual, out=residual)
    if all(name in passes for name in EMITTED_PASSES):
        emission, environment = (get(name)[..., :3] for name in EMITTED_PASSES)
        emitted = np.add(emission, environment)
        diffuse, residual = _fold_covariance(diffuse, diffuse_color, residual, emitted)
    if denoise_residual:
        volume += residual  # the specular buffer itself without separate_volume
        residual = np.zeros_like(residual)
    specular_color = np.ones_like(specular)
    if demodulate_specular:
        colour = glossy_color + transmission_color
        specular_color = np.where(colour > SPECULAR_MIN_COLOR, colour, np.float32(1.0))
        specular /= specular_color
    return Decomposition(
        diffuse=diffuse,
        diffuse_color=_read_only(diffuse_color),
        specular=specular,
        albedo=sanitize_guide("albedo", passes["denoising_albedo"][..., :3], finite),
        normal=sanitize_guide("normal", passes["denoising_normal"][..., :3], finite),
        depth=sanitize_guide("depth", passes["denoising_depth"][..., :1], finite),
        residual=residual,
        alpha=alpha,
        specular_color=specular_color,
        volume=volume if separate_volume else None,
    )


def _read_only(image: np.ndarray) -> np.ndarray:
    """A read-only view: parts that may be the caller's own pixels (no copy) cannot be changed through
    the decomposition."""
    view = image.view()
    view.flags.writeable = False
    return view


def _fold_covariance(diffuse: np.ndarray, diffuse_color: np.ndarray, residual: np.ndarray,
                     emitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse light that explains everything in Combined but specular and emitted light (module
    docstring); the recombination ``diffuse_color * diffuse + residual`` is unchanged."""
    # in place on this module's own arrays (``diffuse``, ``residual`` and ``emitted`` come from
    # decompose), each operation as in ``radiance = diffuse_color * diffuse + residual - emitted``,
    # ``folded = max(where(colour > min, radiance / max(colour, min), diffuse), 0)`` and
    # ``residual + diffuse_color * (diffuse - folded)``
    folded = diffuse_color * diffuse
    folded += residual
    folded -= emitted
    np.divide(folded, np.maximum(diffuse_color, FOLD_MIN_COLOR, out=emitted), out=folded)
    np.copyto(folded, diffuse, where=~(diffuse_color > FOLD_MIN_COLOR))
    np.maximum(folded, 0.0, out=folded)
    diffuse -= folded
    diffuse *= diffuse_color
    residual += diffuse
    return folded, residual


def recombine(parts: Decomposition, diffuse: np.ndarray, specular: np.ndarray,
              volume: np.ndarray | None = None) -> np.ndarray:
    """Beauty RGBA from (denoised) diffuse light, specular buffer (radiance, or light with
    ``demodulate_specular``) and, with ``separate_volume``, volume buffer, plus the carried-through rest.

    With the noisy ``parts.diffuse`` / ``parts.specular`` / ``parts.volume`` this returns Combined (to
    float rounding).
    """
    return recombine_radiance(parts, diffuse, specular, volume)[0]


def recombine_radiance(parts: Decomposition, diffuse: np.ndarray, specular: np.ndarray,
                       volume: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``recombine``'s beauty RGBA and the two terms it adds to the residual, each made finite: the
    diffuse radiance ``diffuse_color * diffuse`` and the specular radiance ``specular_color * specular``
    (plus ``volume``, which a decomposition with ``separate_volume`` needs: all that is not diffuse).
    The beauty is planar, (4, H, W) storage behind the (H, W, 4) array, as an EXR pass is stored."""
    if (volume is None) != (parts.volume is None):
        raise ValueError("recombine takes a volume buffer exactly when the decomposition has one")
    diffuse_radiance = (parts.diffuse_color * diffuse).astype(np.float32, copy=False)
    specular_radiance = (parts.specular_color * specular).astype(np.float32, copy=False)
    if volume is not None:
        specular_radiance += volume
    height, width = diffuse_radiance.shape[:2]
    beauty = np.empty((3 + parts.alpha.shape[-1], height, width), np.float32).transpose(1, 2, 0)
    rgb = np.add(diffuse_radiance, specular_radiance, out=beauty[..., :3])
    rgb += parts.residual
    beauty[..., 3:] = parts.alpha
    return tuple(sanitize_in_place(image) for image in (beauty, diffuse_radiance, specular_radiance))


def sanitize_in_place(image: np.ndarray) -> np.ndarray:
    """``sanitize`` of a float32 array this module made, writing into it."""
    if not all_finite(image):
        np.nan_to_num(image, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return image


def display_name(canonical: str) -> str:
    """The pass's name as Blender's UI shows it (the 5.0 spelling, e.g. "Glossy Direct")."""
    return PASS_TABLE[canonical][1]


def missing_passes_hint(missing: list[str] | tuple[str, ...]) -> str:
    """``"Glossy Direct (enable in View Layer Properties > Passes > Light > Glossy > Direct, or
    view_layer.use_pass_glossy_direct = True); ..."``.

    Passes switched on by one setting (the three Denoising Data passes) are listed together.
    """
    by_setting: dict[str, list[str]] = {}
    for name in missing:
        by_setting.setdefault(enable_hint(name), []).append(display_name(name))
    return "; ".join(f"{', '.join(names)} (enable in {hint})" for hint, names in by_setting.items())
