"""Applying per-pixel kernels predicted by a network (Bako et al. 2017, "Kernel-predicting convolutional
networks for denoising Monte Carlo renderings", SIGGRAPH).

The weights are softmax-normalised, so the output is a convex combination of noisy neighbours: it stays
in the range of the input and the network cannot invent energy.

Memory: the naive way (``unfold`` to an (N, C*k*k, H, W) tensor) materialises every neighbour of every
pixel for every channel. Here we accumulate one kernel offset at a time: each step multiplies a view of
the padded colour by one weight plane. Measured on 16x3x64x64 patches, k=21, forward+backward on CPU:
offset loop 4.0 s / +0.6 GB peak, per-row unfold 4.2 s / +1.1 GB, full unfold 3.0 s / +1.3 GB. The offset
loop needs the least memory at similar speed and exports to plain Slice/Mul/Add ONNX nodes that work with
dynamic H and W. ``split`` (not indexing) takes the weight planes, so the backward pass concatenates
the plane gradients once instead of allocating a full-size gradient per offset.

On a GPU the offset loop is launch-bound (2 k^2 small kernels each way: ~1,800 for k=21), so CUDA tensors
take one ``unfold`` and one reduction instead, with memory to spare; both ways compute the same sum
(tested), and export always traces the offset loop (exported on the CPU).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def apply_kernels(color: torch.Tensor, logits: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Filter ``color`` (N, C, H, W) with per-pixel kernels from ``logits`` (N, k*k, H, W).

    Offset i = dy * k + dx addresses neighbour (y + dy - k//2, x + dx - k//2); outside the image the
    colour is zero-padded, which only touches pixels within k//2 of the border (part of the receptive
    radius, so tiled inference stays exact).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd (a centred kernel), not {kernel_size}")
    radius = kernel_size // 2
    # softmax written out, with the normalisation applied once to the filtered colour instead of to
    # all k*k weight planes: same result, and onnxruntime's Softmax over the channel axis of an NCHW
    # tensor was half the fast model's CPU time (it transposes the tensor)
    logits = logits - logits.amax(dim=1, keepdim=True).detach()
    exps = torch.exp(logits)
    if color.is_cuda:
        return _apply_unfolded(color, exps, kernel_size)
    weights = exps.split(1, dim=1)
    padded = F.pad(color, (radius, radius, radius, radius))
    height, width = color.shape[-2], color.shape[-1]
    terms = (weight * padded[:, :, dy:dy + height, dx:dx + width]
             for weight, (dy, dx) in zip(weights, _offsets(kernel_size), strict=True))
    return _sum_terms(terms, traced=torch.jit.is_tracing()) / exps.sum(dim=1, keepdim=True)


def _offsets(kernel_size: int) -> list[tuple[int, int]]:
    return [divmod(index, kernel_size) for index in range(kernel_size * kernel_size)]


def _sum_terms(terms: Iterator[torch.Tensor], traced: bool) -> torch.Tensor:
    """The products' sum, added in order. Run eagerly, one product at a time. When ``traced`` (export),
    every product is traced before the first addition -- the same additions in the same order, so the same
    result to the bit: onnxruntime orders a graph's nodes by a depth-first walk that, traced as a loop,
    computed all k^2 products before adding any, so they were all alive at once; traced this way each
    product is added as soon as it is made, and onnxruntime's first run of a 0.77-megapixel window of
    `fast` peaks 0.16 GiB lower (0.99 -> 0.83 GiB, 2026-11-28)."""
    if traced:
        terms = iter(list(terms))
    out = next(terms)
    for term in terms:
        out = out + term
    return out


def _apply_unfolded(color: torch.Tensor, exps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The same weighted sum as the offset loop from one (N, C, k*k, H, W) view of every neighbour:
    ``unfold`` orders a channel's neighbours row by row, i = dy * k + dx, as the loop does."""
    n, c, height, width = color.shape
    neighbours = F.unfold(color, kernel_size, padding=kernel_size // 2)
    neighbours = neighbours.view(n, c, kernel_size * kernel_size, height, width)
    return (neighbours * exps.unsqueeze(1)).sum(dim=2) / exps.sum(dim=1, keepdim=True)
