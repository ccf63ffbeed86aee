"""Run folders and checkpoints.

A run folder ``runs/<name>/`` holds ``config.json`` (the complete resolved config), ``tb/`` (TensorBoard),
``metrics.jsonl`` (one line per validation: step, seconds, losses, PSNR)
and ``checkpoints/{latest,best}.safetensors`` (graph weights) with ``{tag}.state.pt`` beside each (step,
stage, optimizer, scheduler, counters: plain tensors and dicts, read back with ``weights_only=True``).
Every file is written to a temporary name in the same folder and moved into place, so an interrupted
write never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TAGS = ("latest", "best")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then ``os.replace(tmp, path)``; the temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def save_weights(path: Path, module: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_weights(path: Path, module: torch.nn.Module) -> None:
    """Strictly load a safetensors file into ``module`` (clear error on a mismatch)."""
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for unreadable files
        raise ValueError(f"cannot read weights {path}: {error}") from None
    try:
        missing, unexpected = module.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # tensors of the same name and another shape
        mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), error)
        raise ValueError(f"{path} does not fit this model ({mismatch}): was it trained with another "
                         "config?") from None
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}): was it trained with another config?")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.config_path = self.path / "config.json"

    def weights_path(self, tag: str) -> Path:
        return self.checkpoints / f"{tag}.safetensors"

    def state_path(self, tag: str) -> Path:
        return self.checkpoints / f"{tag}.state.pt"

    def has(self, tag: str) -> bool:
        return self.weights_path(tag).exists() and self.state_path(tag).exists()

    def save(self, tag: str, module: torch.nn.Module, state: dict) -> None:
        """Weights then state; both carry the step, so a pair from different saves is detected."""
        save_weights(self.weights_path(tag), module, {"step": str(state["step"])})
        atomic_write(self.state_path(tag), lambda tmp: torch.save(state, tmp))

    def load_state(self, tag: str) -> dict:
        state = torch.load(self.state_path(tag), map_location="cpu", weights_only=True)
        with open(self.weights_path(tag), "rb") as handle:  # header: 8-byte length + JSON
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        if header.get("__metadata__", {}).get("step") != str(state["step"]):
            raise ValueError(f"{self.checkpoints}: {tag} weights and state are from different steps")
        return state

    def best_or_latest(self) -> str:
        for tag in ("best", "latest"):
            if self.weights_path(tag).exists():
                return tag
        raise ValueError(f"{self.path}: no checkpoints (expected {self.weights_path('latest')})")
