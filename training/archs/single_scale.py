"""Single-scale component networks: head -> body -> tail at full resolution.

Kernel-predicting variants end in k*k logits per pixel, softmax-normalised and applied to the noisy
colour (``kernels.apply_kernels``); direct variants end in the 3 colour channels. Every network maps
(features (N, in_channels, H, W), colour (N, 3, H, W)) -> denoised colour (N, 3, H, W), both in the
graph's pre-processed space.
"""

from __future__ import annotations

import torch
from torch import nn

from training.archs.blocks import GLOBAL_POOL_RADIUS, ConvAct, PlainBody, ResBlock, ResidualGroup, conv
from training.archs.kernels import apply_kernels
from training.archs.registry import register


class SingleScaleNet(nn.Module):
    """head -> body (-> + head output: the long skip of EDSR/RCAN) -> tail -> kernels or colour."""

    size_multiple = 1

    def __init__(self, head: nn.Module, body: nn.Module, tail: nn.Module, radius: int,
                 predict_kernel: int | None, long_skip: bool):
        super().__init__()
        if predict_kernel is not None and predict_kernel % 2 != 1:
            raise ValueError(f"predict_kernel must be odd, not {predict_kernel}")
        self.head, self.body, self.tail = head, body, tail
        self.predict_kernel, self.long_skip = predict_kernel, long_skip
        # the kernel at pixel p comes from features around p and weighs colours around p: the two
        # reaches do not add up
        self.receptive_radius = max(radius, predict_kernel // 2 if predict_kernel else 0)

    def forward(self, features: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        head = self.head(features)
        body = self.body(head)
        out = self.tail(body + head if self.long_skip else body)
        return apply_kernels(color, out, self.predict_kernel) if self.predict_kernel else out


def _outputs(predict_kernel: int | None) -> int:
    return predict_kernel * predict_kernel if predict_kernel else 3


@register("kpcn")
class KPCN(SingleScaleNet):
    """KPCN (Bako et al. 2017): ``depth`` convolutions of ``width`` filters, ReLU between, no skips; the
    last predicts a ``predict_kernel``^2 kernel per pixel. Paper: 9 layers, 100 filters of 5x5, 21x21."""

    def __init__(self, in_channels: int, width: int = 100, depth: int = 9, kernel_size: int = 5,
                 predict_kernel: int = 21, norm: str = "none", dropout: float = 0.0):
        self._build(in_channels, width, depth, kernel_size, predict_kernel, norm, dropout, long_skip=False)

    def _build(self, in_channels, width, depth, kernel_size, predict_kernel, norm, dropout, long_skip):
        if depth < 2:
            raise ValueError("depth counts every convolution and must be >= 2")
        head = ConvAct(in_channels, width, kernel_size, norm, dropout)
        body = PlainBody(width, depth - 2, kernel_size, norm, dropout)
        radius = depth * (kernel_size // 2)
        super().__init__(head, body, conv(width, _outputs(predict_kernel), kernel_size), radius,
                         predict_kernel, long_skip)


@register("direct_cnn")
class DirectCNN(KPCN):
    """KPCN's layers predicting the colour directly: Bako et al. 2017's DPCN, a plain stack of
    convolutions. ``long_skip`` adds a skip across the body, which DPCN does not have."""

    def __init__(self, in_channels: int, width: int = 100, depth: int = 9, kernel_size: int = 5,
                 norm: str = "none", dropout: float = 0.0, long_skip: bool = False):
        self._build(in_channels, width, depth, kernel_size, None, norm, dropout, long_skip)


@register("kprcn")
class KPRCN(SingleScaleNet):
    """Kernel-predicting residual network: conv head, ``n_blocks`` EDSR residual blocks (Lim et al. 2017;
    two convs per skip, no bottleneck, no batch norm) and a closing conv, long skip, kernel tail."""

    def __init__(self, in_channels: int, width: int = 100, n_blocks: int = 4, kernel_size: int = 5,
                 predict_kernel: int | None = 21, norm: str = "none", dropout: float = 0.0):
        blocks: list[nn.Module] = [ResBlock(width, kernel_size, norm, dropout) for _ in range(n_blocks)]
        body = nn.Sequential(*blocks, conv(width, width, kernel_size))
        radius = (2 * n_blocks + 3) * (kernel_size // 2)  # head + blocks + closing conv + tail
        super().__init__(conv(in_channels, width, kernel_size), body,
                         conv(width, _outputs(predict_kernel), kernel_size), radius, predict_kernel, True)


@register("direct_rcn")
class DirectRCN(KPRCN):
    """KPRCN's body predicting the colour directly (EDSR's head/body/tail layout)."""

    def __init__(self, in_channels: int, width: int = 100, n_blocks: int = 4, kernel_size: int = 5,
                 norm: str = "none", dropout: float = 0.0):
        super().__init__(in_channels, width, n_blocks, kernel_size, None, norm, dropout)


@register("kprcan")
class KPRCAN(SingleScaleNet):
    """Kernel-predicting residual channel-attention network: RCAN's residual-in-residual body (Zhang et
    al. 2018: ``n_groups`` groups of ``n_blocks`` RCABs, long skips) with a kernel-predicting tail.

    ``closing_conv`` adds RCAN's conv at the end of each group and of the body, each closing a skip;
    without them the network has no group or long skips either (the RCABs carry the identity, and the
    skips would add it again). The "4 block" preset drops them and uses a 1x1 tail so that its
    convolutions match KPCN's depth and reach; its local attention reaches further (its config says how
    far). ``attention_pool``: see ``blocks.ChannelAttention`` (``local`` keeps tiled inference exact).
    """

    def __init__(self, in_channels: int, width: int = 64, n_groups: int = 2, n_blocks: int = 4,
                 kernel_size: int = 3, predict_kernel: int | None = 21, reduction: int = 16,
                 attention_pool: str = "local", attention_window: int = 31, closing_conv: bool = True,
                 tail_kernel_size: int = 3, norm: str = "none", dropout: float = 0.0):
        groups: list[nn.Module] = [
            ResidualGroup(width, n_blocks, kernel_size, reduction, attention_pool, attention_window,
                          closing_conv, norm, dropout) for _ in range(n_groups)]
        radius = kernel_size // 2 + sum(g.radius for g in groups) + tail_kernel_size // 2
        if closing_conv:
            groups.append(conv(width, width, kernel_size))
            radius += kernel_size // 2
        tail = conv(width, _outputs(predict_kernel), tail_kernel_size)
        super().__init__(conv(in_channels, width, kernel_size), nn.Sequential(*groups), tail, radius,
                         predict_kernel, long_skip=closing_conv)
        if attention_pool == "global":  # depends on the whole input: declare a finite stand-in
            self.receptive_radius = max(self.receptive_radius, GLOBAL_POOL_RADIUS)


@register("direct_rcan")
class DirectRCAN(KPRCAN):
    """KPRCAN's body predicting the colour directly (RCAN's head/body/tail layout)."""

    def __init__(self, in_channels: int, width: int = 64, n_groups: int = 2, n_blocks: int = 4,
                 kernel_size: int = 3, reduction: int = 16, attention_pool: str = "local",
                 attention_window: int = 31, closing_conv: bool = True, tail_kernel_size: int = 3,
                 norm: str = "none", dropout: float = 0.0):
        super().__init__(in_channels, width, n_groups, n_blocks, kernel_size, None, reduction, attention_pool,
                         attention_window, closing_conv, tail_kernel_size, norm, dropout)
