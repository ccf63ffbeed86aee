"""Parameters, FLOPs per megapixel and receptive radius of a config's graph.

    python -m training.archs.summary --config training/configs/fast.yaml [--config ...] [--measure]

FLOPs count every convolution (2 per multiply-accumulate, via forward hooks) and the kernel application
(2 per tap, channel and pixel); pointwise pre-/post-processing is left out (it is a few percent).
``--measure`` also finds the receptive radius empirically: the farthest input pixel with a non-zero
gradient of one output pixel.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

import torch
from torch import nn

from training.archs import single_scale, unet
from training.archs.blocks import DifferencesConv2d
from training.graph import build_graph, example_inputs


@contextmanager
def _count_kernel_taps(counter: list[int]):
    original = single_scale.apply_kernels

    def counting(color, logits, kernel_size):
        counter[0] += 2 * color[0].numel() * kernel_size * kernel_size
        return original(color, logits, kernel_size)

    single_scale.apply_kernels = unet.apply_kernels = counting
    try:
        yield
    finally:
        single_scale.apply_kernels = unet.apply_kernels = original


@torch.no_grad()
def flops_per_megapixel(graph: nn.Module, size: int = 128) -> float:
    """FLOPs of one forward pass per million pixels (measured on a size x size input, batch 1)."""
    counter = [0]

    def conv_hook(module: nn.Conv2d, _inputs, output):
        weight = module.folded_weight() if isinstance(module, DifferencesConv2d) else module.weight
        per_output = weight[0].numel()  # inputs per output: (in_channels / groups) x the kernel's taps
        counter[0] += 2 * output[0].numel() * per_output

    hooks = [m.register_forward_hook(conv_hook) for m in graph.modules() if isinstance(m, nn.Conv2d)]
    multiple = graph.size_multiple
    size = -(-size // multiple) * multiple
    try:
        with _count_kernel_taps(counter):
            graph.eval()(**example_inputs(graph, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return counter[0] * 1e6 / (size * size)


def measured_receptive_radius(graph: nn.Module, size: int) -> int:
    """Largest |offset| (Chebyshev) of an input pixel that changes the centre output pixel."""
    inputs = {k: v.requires_grad_() for k, v in example_inputs(graph, size, size, seed=1).items()}
    graph.eval()
    outputs = graph(**inputs)
    centre = size // 2
    sum(o[..., centre, centre].sum() for o in outputs).backward()
    radius = 0
    for x in inputs.values():
        ys, xs = torch.nonzero(x.grad.abs().sum(dim=(0, 1)) > 0, as_tuple=True)
        if len(ys):
            radius = max(radius, int((ys - centre).abs().max()), int((xs - centre).abs().max()))
    return radius


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config, measure: bool = False) -> dict:
    graph = build_graph(config)
    info = {"name": config.name, "architecture": config.model["type"], "parameters": parameter_count(graph),
            "gflop_per_megapixel": flops_per_megapixel(graph) / 1e9,
            "receptive_radius": graph.receptive_radius, "size_multiple": graph.size_multiple}
    if measure:
        size = 2 * graph.receptive_radius + 2 * graph.size_multiple + 1
        size = -(-size // graph.size_multiple) * graph.size_multiple
        info["measured_radius"] = measured_receptive_radius(graph, min(size, 640))
    return info


def main(argv: list[str] | None = None) -> int:
    from training.config import load_config

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="YAML config (repeat to overlay)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--measure", action="store_true", help="also measure the receptive radius")
    args = parser.parse_args(argv)
    try:
        info = describe(load_config(args.config, args.set), args.measure)
    except ValueError as error:
        print(f"summary: error: {error}", file=sys.stderr)
        return 2
    print(f"{info['name']} ({info['architecture']}): {info['parameters']:,} parameters, "
          f"{info['gflop_per_megapixel']:.1f} GFLOP per megapixel, "
          f"receptive radius {info['receptive_radius']} px"
          + (f" (measured {info['measured_radius']})" if "measured_radius" in info else "")
          + f", size multiple {info['size_multiple']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
