"""Finding model files and reading / validating their contract metadata (docs/contract.md)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from .errors import DenoiserError
from .passes import PASS_TABLE

log = logging.getLogger("kprcan")

# Version 2 = version 1 plus ``denoise_residual: true`` (a different specular input): a kprcan that only
# reads version 1 refuses such a model instead of feeding it the wrong buffer. Version 3 adds
# ``demodulate_specular: true`` (specular light in, GlossCol + TransCol multiplied back) for the same reason.
# Version 4 adds models that take Diffuse Color as an input and output it denoised
# (``diffuse_color_denoised``, multiplied back instead of the render's: noisy behind volumes).
# Version 5 adds models that take volume light apart from the specular buffer (the ``volume`` input,
# ``volume_denoised`` output; passes.decompose's ``separate_volume``). Version 6 adds models that take the
# specular colour (``specular_color``: GlossCol + TransCol as decompose divides it out) as an input beside
# the demodulated specular light. Versions 1 to 5 still load.
FORMAT_VERSION = 6
PREFIX = "kprcan."
REQUIRED_KEYS = ("format_version", "name", "architecture", "inputs", "outputs", "required_passes",
                 "needs_variance", "receptive_radius", "size_multiple")
KNOWN_INPUTS = {"diffuse": 3, "specular": 3, "albedo": 3, "normal": 3, "depth": 1,
                "diffuse_variance": 1, "specular_variance": 1, "diffuse_color": 3, "volume": 3,
                "specular_color": 3}
KNOWN_OUTPUTS = {"diffuse_denoised": 3, "specular_denoised": 3, "diffuse_color_denoised": 3,
                 "volume_denoised": 3}
REQUIRED_OUTPUTS = ("diffuse_denoised", "specular_denoised")
COLOUR_OUTPUT = "diffuse_color_denoised"  # with the diffuse_color input, format version 4
VOLUME_OUTPUT = "volume_denoised"  # with the volume input, format version 5
# Arithmetic the graph's convolutions use (``kprcan.precision``; absent means float32). int8 models are
# QDQ graphs (training/quantize.py): same float inputs and outputs, so the core runs them unchanged.
PRECISIONS = ("float32", "int8")
DEFAULT_MODEL = "fast"
MODEL_PATH_ENV = "KPRCAN_MODEL_PATH"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    architecture: str
    path: Path
    required_passes: tuple[str, ...]
    needs_variance: bool
    receptive_radius: int
    size_multiple: int
    training_data: str
    parameters: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    denoise_residual: bool = False  # the residual is denoised too, with the specular buffer or, for a
    #                                 model with volume light apart, with the volume (passes.decompose)
    demodulate_specular: bool = False  # specular buffer = light, specular colour divided out (decompose)
    precision: str = "float32"  # one of PRECISIONS
    metadata: dict[str, str] = field(default_factory=dict, compare=False)  # raw metadata_props

    @property
    def denoises_diffuse_color(self) -> bool:
        return COLOUR_OUTPUT in self.outputs

    @property
    def separates_volume(self) -> bool:
        """Volume light (and the residual) is a buffer of its own (``passes.decompose``'s
        ``separate_volume``), not part of the specular one."""
        return VOLUME_OUTPUT in self.outputs

    def summary(self) -> str:
        params = f"{self.parameters:,} parameters" if self.parameters is not None else "? parameters"
        residual = ", denoises emission/environment" if self.denoise_residual else ""
        residual += (", specular as light or radiance per pixel" if "specular_color" in self.inputs
                     else ", demodulates specular" if self.demodulate_specular else "")
        residual += ", denoises Diffuse Color" if self.denoises_diffuse_color else ""
        residual += ", volume light apart" if self.separates_volume else ""
        precision = f", {self.precision} convolutions" if self.precision != "float32" else ""
        return (f"{self.name} ({self.architecture}{precision}, {params}, context {self.receptive_radius} px, "
                f"size multiple {self.size_multiple}{residual})")


def model_dirs() -> list[Path]:
    """Where models are looked for, in priority order (earlier wins when two share a name)."""
    package = Path(__file__).resolve().parent
    dirs = [package.parent / "models", package / "models"]
    dirs += [Path(p).expanduser() for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    dirs.append(Path.home() / ".local" / "share" / "kprcan" / "models")
    return list(dict.fromkeys(dirs))


def parse_metadata(metadata: dict[str, str], path: Path) -> ModelInfo:
    """Validate ``kprcan.*`` metadata per the contract; any problem is a DenoiserError naming the file."""
    def bad(problem: str) -> DenoiserError:
        return DenoiserError(f"{path}: not a usable kprcan model: {problem}")

    missing = [PREFIX + key for key in REQUIRED_KEYS if PREFIX + key not in metadata]
    if missing:
        raise bad(f"metadata lacks {', '.join(missing)}")
    meta = {key: metadata[PREFIX + key] for key in REQUIRED_KEYS}
    version = _integer(meta["format_version"], "format_version", bad)
    if not 1 <= version <= FORMAT_VERSION:
        newer = " (update kprcan)" if version > FORMAT_VERSION else ""
        raise bad(f"format version {version}, this kprcan reads versions 1 to {FORMAT_VERSION}{newer}")
    inputs = _string_list(meta["inputs"], "inputs", bad)
    outputs = _string_list(meta["outputs"], "outputs", bad)
    required = _string_list(meta["required_passes"], "required_passes", bad)
    unknown = [n for n in inputs if n not in KNOWN_INPUTS] + [n for n in outputs if n not in KNOWN_OUTPUTS]
    unknown += [n for n in required if n not in PASS_TABLE]
    if unknown:
        raise bad(f"unknown names in metadata: {', '.join(unknown)}")
    if not set(REQUIRED_OUTPUTS) <= set(outputs) or len(set(outputs)) != len(outputs):
        raise bad(f"outputs must be {list(REQUIRED_OUTPUTS)} (plus {COLOUR_OUTPUT}, {VOLUME_OUTPUT}), "
                  f"got {outputs}")
    for given, made, needed in (("diffuse_color", COLOUR_OUTPUT, 4), ("volume", VOLUME_OUTPUT, 5)):
        if (made in outputs) != (given in inputs):
            raise bad(f"a model takes the {given} input exactly when it outputs {made}")
        if made in outputs and version < needed:
            raise bad(f"{made} needs format_version {needed}")
    if meta["needs_variance"].strip().lower() not in ("true", "false"):
        raise bad(f"needs_variance must be true or false, got {meta['needs_variance']!r}")
    radius = _integer(meta["receptive_radius"], "receptive_radius", bad)
    multiple = _integer(meta["size_multiple"], "size_multiple", bad)
    if radius < 0 or multiple < 1:
        raise bad("receptive_radius must be >= 0 and size_multiple >= 1")
    parameters = metadata.get(PREFIX + "parameters", "")
    denoise_residual = metadata.get(PREFIX + "denoise_residual", "false").strip().lower()
    if denoise_residual not in ("true", "false"):
        raise bad(f"denoise_residual must be true or false, got {denoise_residual!r}")
    if denoise_residual == "true" and version < 2:
        raise bad("denoise_residual needs format_version 2")
    demodulate_specular = metadata.get(PREFIX + "demodulate_specular", "false").strip().lower()
    if demodulate_specular not in ("true", "false"):
        raise bad(f"demodulate_specular must be true or false, got {demodulate_specular!r}")
    if demodulate_specular == "true" and version < 3:
        raise bad("demodulate_specular needs format_version 3")
    if "specular_color" in inputs and (demodulate_specular != "true" or version < 6):
        raise bad("the specular_color input needs demodulate_specular true and format_version 6")
    precision = metadata.get(PREFIX + "precision", "float32").strip().lower()
    if precision not in PRECISIONS:
        raise bad(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return ModelInfo(
        name=meta["name"], architecture=meta["architecture"], path=path,
        required_passes=tuple(required),
        needs_variance=meta["needs_variance"].strip().lower() == "true",
        receptive_radius=radius, size_multiple=multiple,
        training_data=metadata.get(PREFIX + "training_data", ""),
        parameters=int(parameters) if parameters.strip().isdigit() else None,
        inputs=tuple(inputs), outputs=tuple(outputs), denoise_residual=denoise_residual == "true",
        demodulate_specular=demodulate_specular == "true",
        precision=precision, metadata=dict(metadata),
    )


def _integer(text: str, key: str, bad) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad(f"{key} must be an integer, got {text!r}") from None


def _string_list(text: str, key: str, bad) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{key} must be a JSON list of strings, got {text!r}")
    return value


def open_session(path: Path, providers: list[str], options: ort.SessionOptions | None = None):
    """An onnxruntime session, or a DenoiserError when the file is not a loadable ONNX model."""
    if not path.is_file():
        raise DenoiserError(f"{path}: model file not found")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own pybind exception types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DenoiserError(f"{path}: not a valid ONNX model ({first_line[:200]})") from None


def check_graph(info: ModelInfo, session) -> None:
    """The graph's inputs/outputs must be exactly what the metadata declares."""
    graph_inputs = sorted(i.name for i in session.get_inputs())
    graph_outputs = {o.name for o in session.get_outputs()}
    if graph_inputs != sorted(info.inputs):
        raise DenoiserError(f"{info.path}: graph inputs {graph_inputs} differ from the metadata's "
                            f"{sorted(info.inputs)}")
    if not set(info.outputs) <= graph_outputs:
        raise DenoiserError(f"{info.path}: graph lacks outputs {sorted(set(info.outputs) - graph_outputs)}")
    variance = {"diffuse_variance", "specular_variance"} & set(info.inputs)
    if variance and not info.needs_variance:
        raise DenoiserError(f"{info.path}: graph takes {sorted(variance)} but needs_variance is false")
    # Shapes and types per the contract (float32 NCHW, C fixed), so a wrong model fails here in one line
    # instead of inside onnxruntime at the first tile. Symbolic dimensions ("N", "H", ...) are fine.
    declared = [(arg, "input", KNOWN_INPUTS[arg.name]) for arg in session.get_inputs()]
    declared += [(arg, "output", KNOWN_OUTPUTS[arg.name]) for arg in session.get_outputs()
                 if arg.name in KNOWN_OUTPUTS]
    for arg, role, channels in declared:
        shape, wanted = list(arg.shape), f"float32 (N, {channels}, H, W)"
        if arg.type != "tensor(float)":
            problem = f"holds {arg.type}"
        elif len(shape) != 4:
            problem = f"has rank {len(shape)}"
        elif isinstance(shape[1], int) and shape[1] != channels:
            problem = f"has {shape[1]} channels"
        else:
            continue
        raise DenoiserError(f"{info.path}: graph {role} {arg.name!r} {problem} (shape {shape}); the model "
                            f"contract needs {wanted}")


_INFO_CACHE: dict[tuple[str, int, int], ModelInfo] = {}

# ONNX ModelProto field numbers (onnx/onnx.proto3): the graph holds the weights, metadata_props follows it.
_GRAPH_FIELD = 7
_METADATA_FIELD = 14
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _WireError(ValueError):
    """The bytes are not protobuf (so not an ONNX model)."""


def _read_varint(stream) -> int | None:
    """A protobuf varint from ``stream``; None at a clean end of the file."""
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift:
                raise _WireError("file ends inside a field")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _WireError("varint longer than 10 bytes")


def _string_pair(entry: bytes) -> tuple[str, str]:
    """(key, value) of a StringStringEntryProto (key = field 1, value = field 2)."""
    import io

    stream, fields = io.BytesIO(entry), {1: "", 2: ""}
    while (tag := _read_varint(stream)) is not None:
        number, wire = tag >> 3, tag & 7
        if wire != _LENGTH_DELIMITED:
            raise _WireError(f"metadata entry field {number} has wire type {wire}")
        fields[number] = stream.read(_read_varint(stream) or 0).decode("utf-8", "replace")
    return fields[1], fields[2]


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read straight from its protobuf wire format.

    No onnxruntime session is built (with onnxruntime-gpu that took 0.95 s for ``fast`` and 6.9 s for
    ``quality``) and the ``onnx`` package is not needed: the top-level fields in the way (the graph with
    its weights) are skipped with a seek, so a few hundred bytes of the file are read.
    """
    size = path.stat().st_size
    metadata: dict[str, str] = {}
    has_graph = False
    try:
        with open(path, "rb") as stream:
            while (tag := _read_varint(stream)) is not None:
                number, wire = tag >> 3, tag & 7
                if number == 0:
                    raise _WireError("field number 0")
                if wire == _VARINT:
                    _read_varint(stream)
                elif wire in (_FIXED64, _FIXED32):
                    stream.seek(8 if wire == _FIXED64 else 4, os.SEEK_CUR)
                elif wire == _LENGTH_DELIMITED:
                    length = _read_varint(stream)
                    if length is None or stream.tell() + length > size:
                        raise _WireError(f"field {number} runs past the end of the file")
                    if number == _METADATA_FIELD:
                        key, value = _string_pair(stream.read(length))
                        metadata[key] = value
                    else:
                        has_graph |= number == _GRAPH_FIELD
                        stream.seek(length, os.SEEK_CUR)
                else:
                    raise _WireError(f"field {number} has unknown wire type {wire}")
    except OSError as error:
        raise DenoiserError(f"{path}: cannot read the model ({error.strerror or error})") from None
    except _WireError as error:
        raise DenoiserError(f"{path}: not a valid ONNX model ({error})") from None
    if not has_graph:
        raise DenoiserError(f"{path}: not a valid ONNX model (no graph)")
    return metadata


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Validated contract metadata of one model file, read without building an onnxruntime session
    (listing models must stay instant, inside Blender too). The graph's inputs and outputs are checked
    against the metadata when a session is built (``inference.load_model`` runs ``check_graph``)."""
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        raise DenoiserError(f"{path}: model file not found") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _INFO_CACHE:
        _INFO_CACHE[key] = parse_metadata(read_onnx_metadata(path), path)
    return _INFO_CACHE[key]


def list_models() -> list[ModelInfo]:
    """Every usable model in ``model_dirs()``; unusable files are skipped with a warning."""
    found: list[ModelInfo] = []
    seen_paths: set[Path] = set()
    for directory in model_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.onnx")):
            if path.resolve() in seen_paths:
                continue
            seen_paths.add(path.resolve())
            try:
                found.append(read_model_info(path))
            except DenoiserError as error:
                log.warning("skipping %s", error)
    return found


def resolve_model(name_or_path: str | os.PathLike | None) -> ModelInfo:
    """A model by file path, by metadata name / file stem, or the default ("fast", else the first found)."""
    if name_or_path is not None:
        text = str(name_or_path)
        candidate = Path(text).expanduser()
        if candidate.suffix.lower() == ".onnx" or os.sep in text or "/" in text or candidate.is_file():
            return read_model_info(candidate)
    models = list_models()
    searched = ", ".join(str(d) for d in model_dirs())
    if not models:
        raise DenoiserError(f"no models found (searched {searched}; "
                            f"set ${MODEL_PATH_ENV} or pass --model PATH)")
    wanted = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    for info in models:
        if info.name == wanted or info.path.stem == wanted:
            return info
    if name_or_path is None:
        return models[0]
    names = ", ".join(sorted({m.name for m in models}))
    raise DenoiserError(f"model {wanted!r} not found (available: {names})")
