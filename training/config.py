"""One config schema for every script (train, export, evaluate, summary, bench).

A config is YAML: dataclass sections below, ``model`` a free mapping (``type`` + the architecture's
keyword arguments, see ``training.archs``). Loading merges, in order:

1. each ``--config`` file; a file may name a ``base:`` file (relative to itself) that it overrides;
2. ``model_by_type: {TYPE: {...}}`` from any file, merged into ``model`` when ``model.type`` is TYPE
   (the ``tiny.yaml`` overlay shrinks every architecture this way);
3. ``--set a.b=value`` overrides, values parsed as YAML.

Unknown keys are errors. The resolved config is saved as ``config.json`` in each run folder and in the
ONNX metadata, and is all that ``export.py`` needs to rebuild a model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class GraphConfig:
    log_diffuse: bool = False       # filter diffuse light in log1p space too (KPCN: linear)
    use_variance: bool = False      # feed the variance passes (model then needs them: needs_variance)
    use_gradients: bool = True      # feed x/y finite differences of colour and features
    depth_max: float = 1.0e4        # depth is clamped here before log1p normalisation
    # Denoising Albedo is clamped to [0, albedo_max] (null: only >= 0). Cycles gives backgrounds and
    # lights their radiance as "albedo" (5.6 % of training pixels > 1, up to 1,101; 2,389 on a validation
    # light); unclamped, such a value let a model move a light's pixel onto its neighbour
    # (docs/experiments.md)
    albedo_max: float | None = None
    # take Diffuse Color as an input and output it denoised (training/graph.py); needs kpunet and shards
    # with the reference colour (pack index version 3)
    denoise_diffuse_color: bool = False
    # filter the specular radiance and, as a path of its own, the demodulated specular light, chosen per
    # pixel (training/graph.py); needs kpunet and data.demodulate_specular
    specular_light_path: bool = False


@dataclass
class DataConfig:
    kind: str = "synthetic"         # synthetic (training.data.SyntheticDataset) | shards (ShardDataset)
    train: list[str] = field(default_factory=list)   # shard folders / index.json files
    val: list[str] = field(default_factory=list)
    patch_size: int = 64
    batch_size: int = 16
    workers: int = 2
    val_batches: int = 8
    val_patch_size: int | None = None   # None: shards' stored size (synthetic: patch_size)
    options: dict = field(default_factory=dict)      # extra keyword arguments for the dataset class
    summary: str = ""               # one line for the model's training_data metadata
    denoise_residual: bool = False  # shards packed with --denoise-residual (specular = all but diffuse)
    demodulate_specular: bool = False  # shards packed with --demodulate-specular (specular light + colour)
    # shards packed with --separate-volume: volume light (and the residual) a buffer of its own, which
    # the specular network filters as a second signal (training/graph.py; needs kpunet)
    separate_volume: bool = False


@dataclass
class LossConfig:
    type: str = "l1"                # l1 | relmse | smape | ssim | combined
    range: str = "hdr"              # hdr (non-finite targets masked) | tonemapped
    tonemap: str = "srgb"           # for range tonemapped and validation PSNR: srgb | reinhard | log
    component_space: str = "filtering"   # component losses in the filtering space (KPCN) | linear
    # tonemapped component losses see diffuse as its share of the beauty, diffuse_color * diffuse (and
    # demodulated specular as specular_color * specular)
    # (contribution), or as demodulated light clamped at 1 (light: fast and quality were trained so)
    tonemapped_diffuse: str = "contribution"
    weights: dict = field(default_factory=lambda: {"l1": 0.16, "ssim": 0.84})  # combined (Zhao et al.)
    # weight of a loss of its own on the specular light path's output (graph.specular_light_path) in the
    # components stage: that path's kernels then learn whatever weight the blend gives the path
    light_path: float = 0.0


@dataclass
class OptimizerConfig:
    type: str = "adam"              # adam | adamw
    lr: float = 1.0e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0


@dataclass
class ScheduleConfig:
    type: str = "none"              # none | step | plateau | cosine (restarted in each stage)
    step_size: int = 0              # step: decay every N steps (0: a third of the stage)
    gamma: float = 0.5              # step / plateau decay factor
    patience: int = 3               # plateau: validations without improvement before decaying
    min_lr: float = 1.0e-7


@dataclass
class StageConfig:
    name: str = "components"
    target: str = "components"      # components: diffuse and specular losses | joint: recombined image
    fraction: float = 1.0           # share of train.steps
    lr_scale: float = 1.0           # multiplies optimizer.lr


@dataclass
class TrainConfig:
    steps: int = 100_000
    val_interval: int = 1000
    checkpoint_interval: int = 1000
    log_interval: int = 50
    grad_clip: float = 0.0          # max gradient norm; 0 = off
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda
    threads: int = 0                # torch CPU threads per process; 0 = torch's default


@dataclass
class ExportConfig:
    opset: int = 17


@dataclass
class Config:
    name: str = "model"
    model: dict = field(default_factory=lambda: {"type": "kpunet"})
    graph: GraphConfig = field(default_factory=GraphConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_CLASSES = {"graph": GraphConfig, "data": DataConfig, "loss": LossConfig,
                    "optimizer": OptimizerConfig, "schedule": ScheduleConfig, "train": TrainConfig,
                    "export": ExportConfig}


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins, lists are replaced."""
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if nested else value
    return out


def read_yaml(path: str | Path) -> dict:
    """A config file with its ``base:`` chain resolved."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read config {path}: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    base = raw.pop("base", None)
    return merge(read_yaml(path.parent / base), raw) if base else raw


def apply_override(raw: dict, assignment: str) -> dict:
    """``a.b.c=value`` (value parsed as YAML) applied to a nested dict."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"override {assignment!r} is not KEY=VALUE")
    update: dict = {}
    node = update
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return merge(raw, update)


def _section(cls, values, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config section {where} must be a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key {where}.{unknown[0]}; known: {', '.join(sorted(names))}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{key: _checked(value, types[key], f"{where}.{key}") for key, value in values.items()})


def _checked(value, declared: str, where: str):
    """Scalars of the declared type. YAML 1.1 reads ``1e-4`` (no dot) as a string: numeric strings are
    accepted for float keys, anything else of the wrong type is an error naming the key."""
    if declared.endswith("| None"):
        if value is None:
            return None
        declared = declared.removesuffix("| None").strip()
    if declared == "float":
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif declared in ("int", "bool", "str"):
        if type(value).__name__ == declared:
            return value  # a str key given `a: b` in YAML (unquoted ": ") arrives as a mapping: refused
    else:
        return value  # lists and mappings: checked where they are used
    raise ValueError(f"config key {where} must be {declared}, not {value!r}")


def config_from_dict(raw: dict) -> Config:
    """Validate a merged mapping into a ``Config`` (defaults fill what it leaves out)."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"unknown config section {unknown[0]}; known: {', '.join(_SECTIONS)}")
    kwargs = {key: _section(cls, raw[key], key) for key, cls in _SECTION_CLASSES.items() if key in raw}
    if "stages" in raw:
        kwargs["stages"] = [_section(StageConfig, s, f"stages[{i}]") for i, s in enumerate(raw["stages"])]
    model = raw.get("model", {"type": "kpunet"})
    if not isinstance(model, dict) or "type" not in model:
        raise ValueError("config section model must be a mapping with a 'type'")
    config = Config(name=str(raw.get("name", "model")), model=dict(model), **kwargs)
    validate(config)
    return config


def validate(config: Config) -> None:
    checks = [
        (config.data.kind in ("synthetic", "shards"), "data.kind must be synthetic or shards"),
        (config.data.kind == "shards" or not config.data.denoise_residual,
         "data.denoise_residual needs data.kind shards (packed with --denoise-residual)"),
        (config.data.kind == "shards" or not config.data.demodulate_specular,
         "data.demodulate_specular needs data.kind shards (packed with --demodulate-specular)"),
        (config.data.kind == "shards" or not config.data.separate_volume,
         "data.separate_volume needs data.kind shards (packed with --separate-volume)"),
        (config.data.demodulate_specular or not config.graph.specular_light_path,
         "graph.specular_light_path needs data.demodulate_specular (shards packed with "
         "--demodulate-specular)"),
        (config.loss.type in ("l1", "relmse", "smape", "ssim", "combined"), "unknown loss.type"),
        (config.loss.range in ("hdr", "tonemapped"), "loss.range must be hdr or tonemapped"),
        (config.loss.tonemap in ("srgb", "reinhard", "log"), "loss.tonemap must be srgb, reinhard or log"),
        (config.loss.component_space in ("filtering", "linear"), "loss.component_space: filtering|linear"),
        (config.loss.tonemapped_diffuse in ("contribution", "light"),
         "loss.tonemapped_diffuse: contribution|light"),
        (config.optimizer.type in ("adam", "adamw"), "optimizer.type must be adam or adamw"),
        (config.schedule.type in ("none", "step", "plateau", "cosine"), "unknown schedule.type"),
        (all(s.target in ("components", "joint") for s in config.stages), "stage target: components|joint"),
        (bool(config.stages) and all(s.fraction > 0 for s in config.stages), "stages need fraction > 0"),
        (config.train.steps > 0 and config.data.batch_size > 0, "train.steps and batch_size must be > 0"),
        (config.graph.albedo_max is None or config.graph.albedo_max > 0, "graph.albedo_max: > 0 or null"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"config: {message}")


def load_config(paths: list[str | Path] | str | Path, overrides: list[str] | None = None) -> Config:
    """Merge config files, ``model_by_type`` overlays and ``--set`` overrides into a ``Config``."""
    raw: dict = {}
    by_type: dict = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        layer = read_yaml(path)
        by_type = merge(by_type, layer.pop("model_by_type", {}) or {})
        raw = merge(raw, layer)
    model_type = raw.get("model", {}).get("type")
    if model_type in by_type:
        raw["model"] = merge(raw["model"], by_type[model_type])
    for assignment in overrides or []:
        raw = apply_override(raw, assignment)
    return config_from_dict(raw)


def load_config_json(path: str | Path) -> Config:
    """The resolved config a run folder or an exported model stores."""
    return config_from_dict(json.loads(Path(path).read_text()))
