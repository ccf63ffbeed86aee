"""Multilayer OpenEXR reading and writing on the OpenEXR 3.x Python bindings (``OpenEXR.File``).

Blender names channels ``<view layer>.<pass>.<component>`` (``ViewLayer.DiffDir.R``, ``Second.001.Depth.Z``);
view-layer names may contain dots, pass names do not, so a name is split at its last two dots. Files from
other tools may drop the layer (``Combined.R``) or both (``R``); those become layer ``""`` / pass ``""``.

Pixels are kept per pass as one (C, H, W) float32 array: ``pixels[c]`` is a contiguous plane that is written
back without a copy, and ``ExrPass.hwc`` is a free (H, W, C) view for the denoiser.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import OpenEXR

from .devices import usable_cores
from .errors import DenoiserError
from .native_output import captured_native_output
from .passes import canonical_pass_name

EXR_MAGIC = b"\x76\x2f\x31\x01"
HALF_MAX = float(np.finfo(np.float16).max)  # 65504
# Component order inside a pass: RGBA, XYZW, UV; anything else after these, alphabetically.
_COMPONENT_RANK = {"R": 0, "G": 1, "B": 2, "A": 3, "X": 0, "Y": 1, "Z": 2, "W": 3, "U": 0, "V": 1}
# Header attributes that describe the file's layout; the writer sets its own.
_STRUCTURAL_ATTRIBUTES = {"channels", "chunkCount", "type", "tiles", "name", "version", "lineOrder"}
# Temp files are ``.NAME.XXXXXXXX.tmp`` beside the output (temp_path_for, stale_temporaries).
_TEMP_SUFFIX = ".tmp"
_TEMP_RANDOM = r"[a-z0-9_]{8}"  # what tempfile.mkstemp puts between prefix and suffix


def _use_every_core() -> None:
    """Let OpenEXR (de)compress on every core: the bindings default to none (0: all work in the calling
    thread), which left ZIP compression of a 4K multilayer frame at ~20 s, a third of a CLI run. A count
    a caller set is kept (0 cannot be told apart from the default). Older bindings lack the calls."""
    if getattr(OpenEXR, "global_thread_count", lambda: 1)() == 0:
        OpenEXR.set_global_thread_count(usable_cores())


@dataclass
class ExrPass:
    """One render pass of one view layer, e.g. ``ViewLayer.DiffDir`` with components R, G, B."""

    layer: str                 # view-layer name as written ("" when the channel names carry none)
    name: str                  # pass name as written: "DiffDir", "Diffuse Direct", "Combined", ...
    components: list[str]      # channel suffixes in component order: ["R", "G", "B", "A"]
    pixels: np.ndarray         # (C, H, W) float32 (uint32 for integer channels)
    part: int = 0              # index of the file part holding it
    stored_as: str = "float"   # pixel type in the file it was read from: "half", "float" or "uint"

    @property
    def canonical(self) -> str | None:
        return canonical_pass_name(self.name)

    @property
    def channel_names(self) -> list[str]:
        prefix = ".".join(p for p in (self.layer, self.name) if p)
        return [f"{prefix}.{c}" if prefix else c for c in self.components]

    @property
    def hwc(self) -> np.ndarray:
        """(H, W, C) view of the pixels (no copy)."""
        return self.pixels.transpose(1, 2, 0)

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[2], self.pixels.shape[1]


@dataclass
class ExrPart:
    name: str
    header: dict               # attributes to write back (compression, windows, Blender metadata, ...)

    @property
    def compression(self):
        return self.header.get("compression", OpenEXR.ZIP_COMPRESSION)


@dataclass
class ExrImage:
    passes: list[ExrPass]
    parts: list[ExrPart] = field(default_factory=list)
    path: Path | None = None

    @property
    def layers(self) -> list[str]:
        """View-layer names in file order."""
        return list(dict.fromkeys(p.layer for p in self.passes))

    def layer_passes(self, layer: str) -> dict[str, ExrPass]:
        """Pass name as written -> pass, for one view layer."""
        return {p.name: p for p in self.passes if p.layer == layer}

    def canonical_passes(self, layer: str) -> dict[str, np.ndarray]:
        """Canonical name -> (H, W, C) view, for the passes of ``layer`` the project knows."""
        return {p.canonical: p.hwc for p in self.passes if p.layer == layer and p.canonical}

    def find(self, layer: str, name: str) -> ExrPass | None:
        return next((p for p in self.passes if p.layer == layer and p.name == name), None)

    def set_pass(self, layer: str, name: str, components: str | list[str], hwc: np.ndarray,
                 part: int = 0) -> ExrPass:
        """Add pass ``layer.name`` from an (H, W, C) array, or replace its pixels if it exists."""
        pixels = np.ascontiguousarray(np.asarray(hwc, dtype=np.float32).transpose(2, 0, 1))
        existing = self.find(layer, name)
        if existing is not None:
            existing.pixels = pixels
            return existing
        new = ExrPass(layer, name, list(components), pixels, part)
        self.passes.append(new)
        return new

    def size(self, layer: str | None = None) -> tuple[int, int]:
        """(width, height) of a layer's passes (of the first pass when ``layer`` is None)."""
        passes = [p for p in self.passes if layer is None or p.layer == layer]
        return passes[0].size if passes else (0, 0)


def split_channel_name(channel: str) -> tuple[str, str, str]:
    """``"Second.001.Combined.R"`` -> ("Second.001", "Combined", "R"); ``"Combined.R"`` -> ("", ...)."""
    pieces = channel.rsplit(".", 2)
    if len(pieces) == 3:
        return pieces[0], pieces[1], pieces[2]
    if len(pieces) == 2:
        return "", pieces[0], pieces[1]
    return "", "", channel


def _component_key(component: str) -> tuple[int, str]:
    return _COMPONENT_RANK.get(component.upper(), len(_COMPONENT_RANK)), component


def check_exr_file(path: str | os.PathLike) -> Path:
    """Fail early, with a clear message, when ``path`` is missing or is not an OpenEXR file."""
    path = Path(path)
    if not path.exists():
        raise DenoiserError(f"{path}: no such file")
    if not path.is_file():
        raise DenoiserError(f"{path}: not a file")
    try:
        with open(path, "rb") as stream:
            magic = stream.read(4)
    except OSError as error:
        raise DenoiserError(f"{path}: cannot read ({error.strerror})") from None
    if magic != EXR_MAGIC:
        raise DenoiserError(f"{path}: not an OpenEXR file")
    return path


def read_exr(path: str | os.PathLike) -> ExrImage:
    """Read every part, layer and pass of an EXR (half or float, any compression) as float32."""
    path = check_exr_file(path)
    _use_every_core()
    failure = None
    with captured_native_output() as native:
        try:
            exr = OpenEXR.File(str(path), separate_channels=True)
            part_count = len(exr.parts)
        except Exception as error:  # the bindings raise RuntimeError / ValueError with C++ messages
            failure = error
    detail = native.last_line().replace(f"{path}: ", "")
    if failure is not None:
        raise DenoiserError(f"{path}: corrupt EXR ({detail or failure})")
    if part_count == 0:  # what OpenEXR.File leaves when pixel data is truncated or corrupt
        raise DenoiserError(f"{path}: truncated or corrupt EXR ({detail or 'no readable part'})")
    image = ExrImage(passes=[], path=path)
    for index, part in enumerate(exr.parts):
        image.parts.append(ExrPart(part.name(), _kept_header(part.header, path)))
        image.passes.extend(_part_passes(part, index, path))
    del exr
    return image


def _kept_header(header: dict, path: Path) -> dict:
    if header.get("type") in (OpenEXR.deepscanline, OpenEXR.deeptile):
        raise DenoiserError(f"{path}: deep EXR images are not supported")
    return {k: v for k, v in header.items() if k not in _STRUCTURAL_ATTRIBUTES}


def _part_passes(part, index: int, path: Path) -> list[ExrPass]:
    channels = part.channels
    height, width = part.height(), part.width()
    groups: dict[tuple[str, str], list[str]] = {}
    for channel in channels:
        layer, name, _component = split_channel_name(channel)
        groups.setdefault((layer, name), []).append(channel)
    passes = []
    for (layer, name), members in groups.items():
        members.sort(key=lambda ch: _component_key(split_channel_name(ch)[2]))
        planes = []
        for channel in members:
            # pop so each plane is released once stacked: peak memory stays near the file's size
            plane = channels.pop(channel).pixels
            if plane.shape != (height, width):
                raise DenoiserError(f"{path}: channel {channel} is {plane.shape[1]}x{plane.shape[0]}, "
                                    f"not {width}x{height} (subsampled channels are not supported)")
            planes.append(plane)
        stored_as = {np.dtype(np.float16): "half", np.dtype(np.uint32): "uint"}.get(planes[0].dtype, "float")
        # uint channels (IDs) stay integer: float32 would round values above 2**24
        pixels = np.stack(planes).astype(np.uint32 if stored_as == "uint" else np.float32, copy=False)
        del planes
        components = [split_channel_name(ch)[2] for ch in members]
        passes.append(ExrPass(layer, name, components, pixels, index, stored_as))
    return passes


def write_exr(image: ExrImage, path: str | os.PathLike, *, half: bool = False) -> Path:
    """Write ``image`` (all parts, layers and passes) atomically: temp file in the same folder, then rename.

    Pixels are stored as float32 (half when ``half``, clamped to half's finite range); each part keeps the
    compression it was read with.
    """
    path = Path(path)
    temp = temp_path_for(path)
    try:
        write_exr_in_place(image, temp, half=half, shown_as=path)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def temp_path_for(path: Path) -> Path:
    """A fresh, already-created temp file next to ``path`` (so the folder is known writable):
    ``.NAME.XXXXXXXX.tmp``, see stale_temporaries."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    except OSError as error:
        raise DenoiserError(f"{path.parent}: cannot write output there ({error.strerror})") from None
    try:  # a signal (Ctrl+C, SIGTERM) landing here must not leave the file behind
        os.close(handle)
        # mkstemp makes the file private (0600); give the output the permissions a new file normally gets
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def stale_temporaries(path: Path) -> list[Path]:
    """Temp files temp_path_for made for ``path`` that are still there: left by a run that was killed
    (SIGKILL, power loss), or being written right now by another process; callers that remove them must
    know no one is writing ``path`` (claims.claim)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TEMP_RANDOM}{re.escape(_TEMP_SUFFIX)}")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:  # no folder yet: nothing left behind
        return []


def write_exr_in_place(image: ExrImage, path: Path, *, half: bool = False,
                       shown_as: Path | None = None) -> None:
    """Write ``image`` to ``path`` as it is (callers write to a temp file); errors name ``shown_as``."""
    shown_as = shown_as or path
    _use_every_core()
    parts = image.parts or [ExrPart("", {"compression": OpenEXR.ZIP_COMPRESSION})]
    stray = next((p for p in image.passes if not 0 <= p.part < len(parts)), None)
    if stray is not None:  # it would silently be left out of the file
        name = ".".join(n for n in (stray.layer, stray.name) if n)
        raise DenoiserError(f"{shown_as}: pass {name!r} is in part {stray.part}, but the image has "
                            f"{len(parts)} part(s)", exit_code=1)
    built = []
    for index, part in enumerate(parts):
        channels = {}
        for exr_pass in (p for p in image.passes if p.part == index):
            for name, plane in zip(exr_pass.channel_names, exr_pass.pixels, strict=True):
                channels[name] = _stored(plane, half)
        header = dict(part.header)
        header.setdefault("compression", OpenEXR.ZIP_COMPRESSION)
        header["type"] = OpenEXR.scanlineimage
        built.append((header, channels, part.name))
    failure = None
    with captured_native_output() as native:
        try:
            if len(built) == 1:
                exr = OpenEXR.File(built[0][0], built[0][1])
            else:
                exr = OpenEXR.File([OpenEXR.Part(h, c, n) for h, c, n in built])
            exr.write(str(path))
        except (RuntimeError, ValueError, TypeError) as error:
            failure = error
    if failure is not None:
        detail = (native.last_line() or str(failure)).replace(str(path), str(shown_as))
        raise DenoiserError(f"{shown_as}: cannot write EXR ({detail})", exit_code=1)


def _stored(plane: np.ndarray, half: bool) -> np.ndarray:
    """A contiguous plane as written: uint stays uint; float is float32, or half clamped to +-HALF_MAX."""
    if plane.dtype == np.uint32:
        return np.ascontiguousarray(plane)
    if not half:
        return np.ascontiguousarray(plane, dtype=np.float32)
    # beyond half's range a value would turn into Inf (Cycles writes 1e10 depth for the background)
    return np.clip(plane, -HALF_MAX, HALF_MAX).astype(np.float16)
