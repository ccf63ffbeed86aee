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

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.archs.blocks import RCAB, ConvAct, first_convolution, radius_of
from training.archs.kernels import apply_kernels
from training.archs.registry import register


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


@register("kpunet")
class MultiScaleKPUNet(nn.Module):
    """U-Net with ``len(widths)`` levels (``widths[l]`` channels at 1/2^l resolution) predicting
    ``predict_kernel``^2 kernels plus a blend weight at each level. ``predict_kernel`` is one size for
    every level or a list, finest first: the full-resolution level's kernel application is three quarters
    of all of it, so a 3x3 kernel there and 5x5 below cuts it by almost half. H and W must be multiples
    of ``size_multiple`` = 2^(levels - 1).

    ``attention_blocks`` (one count, or one per level) appends residual channel-attention blocks (RCAB,
    Zhang et al. 2018; local pooling over ``attention_window`` pixels of the level, so tiling stays exact)
    to each level's encoder: KPRCAN's blocks inside the multi-scale kernel predictor, most cheaply at the
    coarse levels, where a pixel costs 1/4^level of a full-resolution one.

    ``signals`` > 1 filters that many images (``forward(features, first, second, ...)``), each with kernels
    and blend weights of its own from the same features: the diffuse network filters its light and, for
    models that denoise Diffuse Color, that colour (training/graph.py). ``extra_signal_kernel`` (one size,
    or one per level) gives the signals after the first kernels of their own size: a colour pass is clean
    except behind volumes, and 3x3 kernels filter it at full resolution for a third of a 5x5's cost.

    ``path_weights`` > 0 adds that many per-pixel logits to the full-resolution head, returned after the
    filtered signals: weights with which the caller chooses between them (the specular network's
    radiance and light paths, training/graph.py)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] | list[int] = (16, 32, 64, 96),
                 kernel_size: int = 3, predict_kernel: int | list[int] = 5, encoder_convs: int = 2,
                 decoder_convs: int = 1, norm: str = "none", dropout: float = 0.0, signals: int = 1,
                 attention_blocks: int | list[int] = 0, reduction: int = 16, attention_window: int = 5,
                 extra_signal_kernel: int | list[int] | None = None, path_weights: int = 0):
        super().__init__()
        widths = list(widths)

        def per_level(size: int | list[int]) -> list[int]:
            return [size] * len(widths) if isinstance(size, int) else list(size)

        sizes = per_level(predict_kernel)
        extra = sizes if extra_signal_kernel is None else per_level(extra_signal_kernel)
        blocks = ([attention_blocks] * len(widths) if isinstance(attention_blocks, int)
                  else list(attention_blocks))
        if (len(widths) < 2 or encoder_convs < 1 or decoder_convs < 1 or len(sizes) != len(widths)
                or len(extra) != len(widths) or any(size % 2 != 1 for size in sizes + extra) or signals < 1
                or len(blocks) != len(widths) or path_weights < 0):
            raise ValueError("kpunet needs >= 2 widths, >= 1 conv per level, an odd predict_kernel and "
                             "extra_signal_kernel and attention_blocks (each one, or one per level)")
        if signals > 1 and any(later > first for first, later in zip(sizes, extra, strict=True)):
            # what lets a stored head's layout be read from its size (_stored_kernel_sizes)
            raise ValueError(f"kpunet's extra_signal_kernel {extra} must not exceed predict_kernel {sizes}")
        self.levels, self.signals, self.path_weights = len(widths), signals, path_weights
        # kernel size of each signal at each level, and the largest at each level (the reach)
        self.signal_kernels = [sizes] + [extra] * (signals - 1)
        self.predict_kernels = [max(k[level] for k in self.signal_kernels) for level in range(self.levels)]
        self.size_multiple = 2 ** (self.levels - 1)
        self.pool = nn.AvgPool2d(2)

        def stack(cin: int, cout: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[ConvAct(cin if i == 0 else cout, cout, kernel_size, norm, dropout)
                                   for i in range(n)])

        chain = [in_channels] + widths
        self.encoders = nn.ModuleList(
            nn.Sequential(*stack(chain[i], chain[i + 1], encoder_convs),
                          *[RCAB(widths[i], kernel_size, reduction, "local", attention_window, norm, dropout)
                            for _ in range(blocks[i])])
            for i in range(self.levels))
        self.projections = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1)
                                         for i in range(self.levels - 1))
        self.decoders = nn.ModuleList(stack(w, w, decoder_convs) for w in widths[:-1])
        self.heads = nn.ModuleList(nn.Conv2d(w, self._head_rows(i), 1)
                                   for i, w in enumerate(widths))
        self.receptive_radius = self._radius()

    def output_layers(self) -> list[nn.Module]:
        """The convolutions that write the outputs (each level's kernel logits and blend weight): their
        output counts are the design's (``predict_kernel``, ``signals``), never pruned
        (training/prune.py) nor taken from a pruned config's ``channels``."""
        return list(self.heads)

    def _head_rows(self, level: int) -> int:
        """Logits of a level's head: each signal's, one after another (``_signal_rows``), then at full
        resolution the ``path_weights``."""
        signals = sum(self._signal_rows(level, signal) for signal in range(self.signals))
        return signals + (self.path_weights if level == 0 else 0)

    def _signal_rows(self, level: int, signal: int) -> int:
        """Logits one signal takes from a level's head: its kernel's taps, then a blend weight (not at
        the coarsest level)."""
        return self.signal_kernels[signal][level] ** 2 + self._blend_rows(level)

    def _blend_rows(self, level: int) -> int:
        return 1 if level < self.levels - 1 else 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Two ways to start from weights of another shape (``train.py --init``), combinable:

        * larger kernels at a level load with their central taps: the softmax over the central logits is
          the larger kernel conditioned on those taps (training/configs/fast_k3.yaml);
        * a one-signal network loads into a several-signal one, the extra signals starting as the
          identity (a centre logit far above the rest, blend weights near 0), so the fine-tune starts
          from the trained network's output (training/configs/fast_colour.yaml);
        * a narrower network loads into a wider one (``_grow``): the added channels are computed but
          read by nothing yet, so step 0 is the narrow network (training/configs/quality_wide.yaml).
        """
        for level in range(self.levels):
            for name in ("weight", "bias"):
                key = f"{prefix}heads.{level}.{name}"
                if key in state_dict:
                    state_dict[key] = self._adapt_head(state_dict[key], level, name)
        self._add_identity_blocks(state_dict, prefix)
        self._grow(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _grow(self, state_dict, prefix: str) -> None:
        """Stored tensors smaller than this network's in some dimensions fill the leading part of its
        own (freshly initialised) tensors. A convolution's weights on added *input* channels are zeroed,
        so the added output channels of the layer before (and their batch norm) change nothing. Two
        dimensions are not channel counts and never grow here: a head's rows (kernel taps, _adapt_head)
        and the input convolution's inputs (the graph's feature layout, training/graph.py)."""
        fixed = {"heads.": 0, f"{first_convolution(self)[0]}.weight": 1}  # name prefix -> fixed dimension
        for local, target in self.state_dict().items():
            stored = state_dict.get(prefix + local)
            if (stored is None or stored.shape == target.shape or stored.dim() != target.dim()
                    or any(s > t for s, t in zip(stored.shape, target.shape, strict=True))
                    or any(local.startswith(name) and stored.shape[dim] != target.shape[dim]
                           for name, dim in fixed.items())):
                continue  # the strict load reports what does not fit
            grown = target.detach().clone()
            if grown.dim() == 4:
                grown[:, stored.shape[1]:] = 0
            grown[tuple(slice(0, n) for n in stored.shape)] = stored
            state_dict[prefix + local] = grown

    def _add_identity_blocks(self, state_dict, prefix: str) -> None:
        """Attention blocks the loaded weights lack start as the identity: their second convolution
        is zero, so x + body(x) = x and the network computes what the loaded one did (a fine-tune from
        fast's weights to a deeper network, training/configs/quality.yaml)."""
        if f"{prefix}encoders.0.0.0.weight" not in state_dict:
            return  # not a whole kpunet's weights
        for name, module in self.named_modules():
            if not isinstance(module, RCAB) or any(k.startswith(f"{prefix}{name}.") for k in state_dict):
                continue
            for key, value in module.state_dict().items():
                value = value.clone()
                if key.startswith("body.1."):  # the convolution before the attention
                    value.zero_()
                state_dict[f"{prefix}{name}.{key}"] = value

    def _adapt_head(self, stored: torch.Tensor, level: int, name: str) -> torch.Tensor:
        blend = self._blend_rows(level)
        if stored.shape[0] == self._head_rows(level):
            return stored  # this design's head
        sizes = [kernels[level] for kernels in self.signal_kernels]
        stored_sizes = self._stored_kernel_sizes(stored.shape[0], blend)
        if stored_sizes is None or any(k < size for k, size in zip(stored_sizes, sizes, strict=False)):
            return stored  # not a head of this design: the strict load reports the mismatch
        chunks = stored.split([k * k + blend for k in stored_sizes])
        cropped = []
        for chunk, larger, size in zip(chunks, stored_sizes, sizes, strict=False):
            offset = (larger - size) // 2
            taps = [(offset + dy) * larger + offset + dx for dy in range(size) for dx in range(size)]
            cropped.append(chunk[taps + list(range(larger * larger, chunk.shape[0]))])
        for size in sizes[len(cropped):]:
            extra = stored.new_zeros(size * size + blend, *stored.shape[1:])
            if name == "bias":
                extra[size * size // 2] = 8.0  # softmax weight 0.99 on the centre of 5x5
                extra[size * size:] = -4.0     # blend weight 0.02
            cropped.append(extra)
        return torch.cat(cropped)

    def _stored_kernel_sizes(self, rows: int, blend: int) -> list[int] | None:
        """The kernel size of each signal of a stored head of ``rows`` logits: this network's signal count
        with one size for all, or a first size and a smaller one for the rest (``extra_signal_kernel``),
        or one signal (a one-signal network's head); None when no odd sizes fit, or when several
        unequal layouts do (the size alone cannot tell them apart: the strict load then refuses)."""
        def odd_size(count: int) -> int | None:  # the odd k with count = k^2, if any
            k = math.isqrt(max(count, 0))
            return k if k * k == count and k % 2 else None

        signals = self.signals
        share, left = divmod(rows, signals)
        equal = None if left else odd_size(share - blend)
        if equal:
            return [equal] * signals
        if signals > 1:
            layouts = []
            for first in range(1, math.isqrt(max(rows - signals * blend, 0)) + 1, 2):
                rest, left = divmod(rows - signals * blend - first * first, signals - 1)
                later = None if left else odd_size(rest)
                if later and later < first:
                    layouts.append([first] + [later] * (signals - 1))
            if layouts:
                return layouts[0] if len(layouts) == 1 else None
        single = odd_size(rows - blend)
        return [single] if single else None

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
        out = 0
        for level in range(last, -1, -1):
            scale = 2 ** level
            filtered = max(features[level], scale - 1 + self.predict_kernels[level] // 2 * scale)
            if level == last:
                out = filtered
            else:  # up(down(filtered)) and up(out of the coarser level)
                out = max(filtered + scale + 2 * scale, features[level], out + 2 * scale)
        return out

    def forward(self, features: torch.Tensor,
                *signals: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(signals) != self.signals:
            raise ValueError(f"this kpunet filters {self.signals} signal(s), got {len(signals)}")
        skips, x = [], features
        for level, encoder in enumerate(self.encoders):
            x = encoder(self.pool(x) if level else x)
            skips.append(x)
        decoded = [x]  # coarsest first
        for level in range(self.levels - 2, -1, -1):
            x = self.decoders[level](upsample(self.projections[level](x)) + skips[level])
            decoded.insert(0, x)

        pyramids = []
        for signal in signals:
            pyramid = [signal]
            for _ in range(self.levels - 1):
                pyramid.append(self.pool(pyramid[-1]))
            pyramids.append(pyramid)
        outs: list[torch.Tensor | None] = [None] * self.signals
        for level in range(self.levels - 1, -1, -1):
            head = self.heads[level](decoded[level])
            start = 0
            for index, pyramid in enumerate(pyramids):
                size, rows = self.signal_kernels[index][level], self._signal_rows(level, index)
                taps = size * size
                logits = head[:, start:start + rows]
                start += rows
                filtered = apply_kernels(pyramid[level], logits[:, :taps], size)
                if outs[index] is None:
                    outs[index] = filtered
                else:
                    alpha = torch.sigmoid(logits[:, taps:])
                    # bilinear upsampling is linear: one upsampling of the coarse difference
                    outs[index] = filtered + alpha * upsample(outs[index] - self.pool(filtered))
        if self.path_weights:
            return (*outs, head[:, start:])  # the full-resolution head's last rows
        return outs[0] if self.signals == 1 else tuple(outs)
