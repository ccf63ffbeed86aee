"""Optimiser, learning-rate schedule and training stages from the config."""

from __future__ import annotations

import torch

from training.config import Config


def stage_bounds(config: Config) -> list[tuple[int, int]]:
    """[start, end) step range of each stage: ``fraction`` shares of ``train.steps``."""
    total = sum(stage.fraction for stage in config.stages)
    bounds, start, acc = [], 0, 0.0
    for stage in config.stages:
        acc += stage.fraction
        end = round(config.train.steps * acc / total)
        bounds.append((start, end))
        start = end
    return bounds


def stage_at(config: Config, step: int) -> int:
    for index, (_start, end) in enumerate(stage_bounds(config)):
        if step < end:
            return index
    return len(config.stages) - 1


def build_optimizer(config: Config, params, lr_scale: float) -> torch.optim.Optimizer:
    o = config.optimizer
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.type]
    return cls(params, lr=o.lr * lr_scale, betas=tuple(o.betas), weight_decay=o.weight_decay)


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer, stage_steps: int):
    """Stepped once per optimiser step, except ``plateau``, stepped with each validation PSNR."""
    s = config.schedule
    if s.type == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, s.step_size or max(1, stage_steps // 3), s.gamma)
    if s.type == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=s.gamma,
                                                          patience=s.patience, min_lr=s.min_lr)
    if s.type == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, stage_steps), eta_min=s.min_lr)
    return None
