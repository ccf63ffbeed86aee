"""The fast CPU network: a small U-Net (Ronneberger et al. 2015) predicting 5x5 kernels at every scale,
combined coarse-to-fine (Vogels et al. 2018, "Denoising with kernel prediction and asymmetric loss
functions", SIGGRAPH: the multi-scale kernel-prediction "scale compositor").

Small kernels at several scales reach as far as one large kernel at a fraction of the cost: a 5x5 kernel
at 1/8 resolution spans 40 pixels. At each scale s the noisy colour is 2x2-average-pooled s times and
filtered with that scale's kernels; then, from coarse to fine,

    out_s = filtered_s + alpha_s * (up(out_{s+1}) - up(down(filtered_s)))

i.e. the low frequencies of the fine result are swapped for the (less noisy) coarse result, by a
per-pixel blend weight alpha_s in [0, 1] the network predicts too.

Decoder skips are added (FPN/LinkNet style: 1x1 projection at the coarse level, bilinear upsampling,
sum) rather than concatenated, which keeps the full-resolution layers cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.archs.blocks import ConvAct, radius_of
from training.archs.kernels import apply_kernels
from training.archs.registry import register


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


@register("kpunet")
class MultiScaleKPUNet(nn.Module):
    """U-Net with ``len(widths)`` levels (``widths[l]`` channels at 1/2^l resolution) predicting
    ``predict_kernel``^2 kernels plus a blend weight at each level. H and W must be multiples of
    ``size_multiple`` = 2^(levels - 1)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] | list[int] = (16, 32, 64, 96),
                 kernel_size: int = 3, predict_kernel: int = 5, encoder_convs: int = 2,
                 decoder_convs: int = 1, norm: str = "none", dropout: float = 0.0):
        super().__init__()
        widths = list(widths)
        if len(widths) < 2 or encoder_convs < 1 or decoder_convs < 1 or predict_kernel % 2 != 1:
            raise ValueError("kpunet needs >= 2 widths, >= 1 conv per level and an odd predict_kernel")
        self.levels, self.predict_kernel = len(widths), predict_kernel
        self.size_multiple = 2 ** (self.levels - 1)
        self.pool = nn.AvgPool2d(2)

        def stack(cin: int, cout: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[ConvAct(cin if i == 0 else cout, cout, kernel_size, norm, dropout)
                                   for i in range(n)])

        chain = [in_channels] + widths
        self.encoders = nn.ModuleList(stack(chain[i], chain[i + 1], encoder_convs)
                                      for i in range(self.levels))
        self.projections = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1)
                                         for i in range(self.levels - 1))
        self.decoders = nn.ModuleList(stack(w, w, decoder_convs) for w in widths[:-1])
        taps = predict_kernel * predict_kernel
        self.heads = nn.ModuleList(nn.Conv2d(w, taps + (1 if i < self.levels - 1 else 0), 1)
                                   for i, w in enumerate(widths))
        self.receptive_radius = self._radius()

    def _radius(self) -> int:
        """Conservative receptive radius in full-resolution pixels (checked against gradients in tests):
        each level's convolutions reach ``radius_of`` their stack, in pixels of that level's scale."""
        last = self.levels - 1
        encoder = [radius_of(self.encoders[0])]
        for level in range(1, self.levels):  # a 2x2 pool reaches 2^(level-1) pixels further
            encoder.append(encoder[-1] + 2 ** (level - 1) + radius_of(self.encoders[level]) * 2 ** level)
        features = {last: encoder[last]}
        for level in range(last - 1, -1, -1):  # bilinear upsampling reaches one coarse pixel
            features[level] = (max(features[level + 1] + 2 ** (level + 1), encoder[level])
                               + radius_of(self.decoders[level]) * 2 ** level)
        kernel_radius = self.predict_kernel // 2
        out = 0
        for level in range(last, -1, -1):
            scale = 2 ** level
            filtered = max(features[level], scale - 1 + kernel_radius * scale)
            if level == last:
                out = filtered
            else:  # up(down(filtered)) and up(out of the coarser level)
                out = max(filtered + scale + 2 * scale, features[level], out + 2 * scale)
        return out

    def forward(self, features: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        skips, x = [], features
        for level, encoder in enumerate(self.encoders):
            x = encoder(self.pool(x) if level else x)
            skips.append(x)
        decoded = [x]  # coarsest first
        for level in range(self.levels - 2, -1, -1):
            x = self.decoders[level](upsample(self.projections[level](x)) + skips[level])
            decoded.insert(0, x)

        colors = [color]
        for _ in range(self.levels - 1):
            colors.append(self.pool(colors[-1]))
        taps = self.predict_kernel ** 2
        out = None
        for level in range(self.levels - 1, -1, -1):
            head = self.heads[level](decoded[level])
            filtered = apply_kernels(colors[level], head[:, :taps], self.predict_kernel)
            if out is None:
                out = filtered
            else:
                alpha = torch.sigmoid(head[:, taps:])
                out = filtered + alpha * (upsample(out) - upsample(self.pool(filtered)))
        return out
