"""Procedural noisy/reference pairs with the keys of docs/contract.md, for tests and smoke runs.

Each sample is a little "scene" drawn from its own seeded generator (so sample i is the same in every
epoch and process): a few regions with their own albedo, gloss and depth, a bumpy height field giving
normals, one directional light with a soft shadow. Diffuse light is Lambertian shading, specular a
Blinn-Phong highlight (HDR peaks). The noisy versions multiply the references by mean-one log-normal
noise whose variance falls as 1/spp, plus rare fireflies, roughly like a path tracer; the variance
inputs are the per-pixel variance of that noise. It is no substitute for real Cycles data: it only gives
the networks edges to preserve and noise to remove.
"""

from __future__ import annotations

import math

import torch


def _bumps(xx, yy, g, count, amplitude):
    height = torch.zeros_like(xx)
    for _ in range(count):
        cx, cy, width, amp = torch.rand(4, generator=g).tolist()
        distance2 = (xx - cx) ** 2 + (yy - cy) ** 2
        height += amplitude * (amp - 0.5) * torch.exp(-distance2 / (0.02 + 0.1 * width))
    return height


def _regions(xx, yy, g, count):
    """Label map from random half-planes and discs (sharp edges for the denoiser to keep)."""
    label = torch.zeros_like(xx, dtype=torch.long)
    for index in range(1, count):
        a, b, c, kind = torch.rand(4, generator=g).tolist()
        if kind < 0.5:
            angle = 2 * math.pi * a
            inside = (xx - b) * math.cos(angle) + (yy - c) * math.sin(angle) > 0
        else:
            inside = (xx - b) ** 2 + (yy - c) ** 2 < (0.1 + 0.3 * a) ** 2
        label[inside] = index
    return label


def _noisy(reference, relative_variance, spp, g, firefly_rate):
    """Mean-preserving log-normal noise with variance relative_variance/spp, plus fireflies."""
    sigma2 = math.log1p(relative_variance / spp)
    z = torch.randn(reference.shape[1:], generator=g).expand_as(reference)
    noisy = reference * torch.exp(math.sqrt(sigma2) * z - sigma2 / 2)
    fireflies = torch.rand(reference.shape[1:], generator=g) < firefly_rate / spp
    noisy = noisy + fireflies * (5 + 20 * torch.rand(reference.shape[1:], generator=g))
    variance = (reference ** 2).mean(0, keepdim=True) * math.expm1(sigma2) + fireflies * 25.0 / spp
    return noisy, variance


def make_sample(size: int, g: torch.Generator, spp_range=(2, 32), firefly_rate: float = 0.05) -> dict:
    ramp = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    regions = int(torch.randint(2, 6, (1,), generator=g))
    label = _regions(xx, yy, g, regions)
    palette = 0.1 + 0.8 * torch.rand(regions, 3, generator=g)
    gloss = torch.rand(regions, generator=g) * (torch.rand(regions, generator=g) < 0.6)
    shininess = 8 + 120 * torch.rand(regions, generator=g)
    offsets = 5 * torch.rand(regions, generator=g)
    stripes = 1 + 0.3 * torch.sin(2 * math.pi * (4 + 12 * torch.rand(1, generator=g)) * (xx + yy))
    albedo = palette[label].permute(2, 0, 1) * torch.where(label % 2 == 0, stripes, torch.ones_like(xx))

    height = _bumps(xx, yy, g, 4, 0.6)
    dhdy, dhdx = torch.gradient(height * size / 8)
    normal = torch.stack([-dhdx, -dhdy, torch.ones_like(xx)])
    normal = normal / normal.norm(dim=0, keepdim=True)
    depth = (2 + 10 * torch.rand(1, generator=g) + offsets[label] + height)[None]

    theta = 0.6 * math.pi / 2 * float(torch.rand(1, generator=g))
    phi = 2 * math.pi * float(torch.rand(1, generator=g))
    light = torch.tensor([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])
    tint = 0.7 + 0.3 * torch.rand(3, 1, 1, generator=g)
    intensity = 0.5 + 4 * float(torch.rand(1, generator=g))
    shadow = torch.sigmoid(12 * (_bumps(xx, yy, g, 2, 2.0) + 0.2))
    n_dot_l = (normal * light[:, None, None]).sum(0).clamp(min=0)
    diffuse_ref = tint * (intensity * n_dot_l * shadow + 0.1)
    half = light + torch.tensor([0.0, 0.0, 1.0])
    half = half / half.norm()
    n_dot_h = (normal * half[:, None, None]).sum(0).clamp(min=0)
    specular_ref = tint * (4 * intensity * gloss[label] * n_dot_h ** shininess[label] * shadow)

    spp = int(torch.randint(spp_range[0], spp_range[1] + 1, (1,), generator=g))
    diffuse, diffuse_var = _noisy(diffuse_ref, 1.0, spp, g, firefly_rate)
    specular, specular_var = _noisy(specular_ref, 4.0, spp, g, firefly_rate)
    sample = {"diffuse": diffuse, "specular": specular, "albedo": albedo, "normal": normal, "depth": depth,
              "diffuse_variance": diffuse_var, "specular_variance": specular_var,
              "diffuse_reference": diffuse_ref, "specular_reference": specular_ref, "diffuse_color": albedo,
              "diffuse_color_reference": albedo}
    return {key: value.float().contiguous() for key, value in sample.items()}


class SyntheticDataset(torch.utils.data.Dataset):
    """``length`` procedural samples of ``patch_size``^2 pixels; sample i depends only on (seed, i)."""

    def __init__(self, length: int = 4096, patch_size: int = 64, seed: int = 0,
                 spp: tuple[int, int] | list[int] = (2, 32), firefly_rate: float = 0.05, cache: bool = False):
        self.length, self.patch_size, self.seed = length, patch_size, seed
        self.spp, self.firefly_rate = tuple(spp), firefly_rate
        self.cache: dict[int, dict] | None = {} if cache else None  # keep generated samples (small sets)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: thread hand-offs cost far more than they save
        try:
            sample = make_sample(self.patch_size, g, self.spp, self.firefly_rate)
        finally:
            torch.set_num_threads(threads)
        if self.cache is not None:
            self.cache[index] = sample
        return sample
