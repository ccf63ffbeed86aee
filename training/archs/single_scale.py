"""Single-scale component networks: head -> body -> tail at full resolution.

Kernel-predicting variants end in k*k logits per pixel, softmax-normalised and applied to the noisy
colour (``kernels.apply_kernels``); direct variants end in the 3 colour channels. Every network maps
(features (N, in_channels, H, W), colour (N, 3, H, W)) -> denoised colour (N, 3, H, W), both in the
graph's pre-processed space.

Each body (plain, residual, residual channel-attention) is built by one function and used by a
kernel-predicting and a direct network; the two differ only in their tail.
"""

from __future__ import annotations

import torch
from torch import nn

from training.archs.blocks import (
    ConvAct,
    PlainBody,
    ResBlock,
    ResidualGroup,
    conv,
    declared_radius,
    radius_of,
)
from training.archs.kernels import apply_kernels
from training.archs.registry import register


class SingleScaleNet(nn.Module):
    """head -> body (-> + head output: the long skip of EDSR/RCAN) -> tail -> kernels or colour.

    The receptive radius is the three parts' radii summed (``blocks.radius_of``)."""

    size_multiple = 1

    def __init__(self, head: nn.Module, body: nn.Module, tail: nn.Module, predict_kernel: int | None,
                 long_skip: bool):
        super().__init__()
        self.head, self.body, self.tail = head, body, tail
        self.predict_kernel, self.long_skip = predict_kernel, long_skip
        # the kernel at pixel p comes from features around p and weighs colours around p: the two
        # reaches do not add up
        reach = max(radius_of(head, body, tail), predict_kernel // 2 if predict_kernel else 0)
        self.receptive_radius = declared_radius(self, reach)

    def output_layers(self) -> list[nn.Module]:
        """The convolution that writes the output (kernel logits or colour): its output count is the
        design's, never pruned (training/prune.py) nor taken from a pruned config's ``channels``."""
        return [self.tail]

    def forward(self, features: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        head = self.head(features)
        body = self.body(head)
        out = self.tail(body + head if self.long_skip else body)
        return apply_kernels(color, out, self.predict_kernel) if self.predict_kernel else out


def output_conv(width: int, kernel_size: int, predict_kernel: int | None) -> nn.Conv2d:
    """The last convolution: ``predict_kernel``^2 kernel logits, or the 3 colour channels when None."""
    if predict_kernel is not None and predict_kernel % 2 != 1:
        raise ValueError(f"predict_kernel must be odd, not {predict_kernel}")
    return conv(width, predict_kernel * predict_kernel if predict_kernel else 3, kernel_size)


# The layer functions create their modules in the order the networks always did, so a seed gives the
# same initial weights as before they were shared.
def plain_layers(in_channels: int, width: int, depth: int, kernel_size: int, norm: str,
                 dropout: float) -> tuple[nn.Module, nn.Module]:
    """KPCN's head and body: ``depth`` convolutions in all, counting the tail the network adds."""
    if depth < 2:
        raise ValueError("depth counts every convolution and must be >= 2")
    return (ConvAct(in_channels, width, kernel_size, norm, dropout),
            PlainBody(width, depth - 2, kernel_size, norm, dropout))


def residual_layers(in_channels: int, width: int, n_blocks: int, kernel_size: int, norm: str,
                    dropout: float) -> tuple[nn.Module, nn.Module]:
    """EDSR's head and body: a conv, ``n_blocks`` residual blocks and a closing conv."""
    body = nn.Sequential(*[ResBlock(width, kernel_size, norm, dropout) for _ in range(n_blocks)],
                         conv(width, width, kernel_size))
    return conv(in_channels, width, kernel_size), body


def rcan_layers(in_channels: int, width: int, n_groups: int, n_blocks: int, kernel_size: int,
                reduction: int, attention_pool: str, attention_window: int, closing_conv: bool, norm: str,
                dropout: float, tail_kernel_size: int,
                predict_kernel: int | None) -> tuple[nn.Module, nn.Module, nn.Module]:
    """RCAN's head, residual-in-residual body (``n_groups`` groups of ``n_blocks`` RCABs, each group and
    the body closed by a conv when ``closing_conv``) and tail."""
    groups: list[nn.Module] = [
        ResidualGroup(width, n_blocks, kernel_size, reduction, attention_pool, attention_window,
                      closing_conv, norm, dropout) for _ in range(n_groups)]
    if closing_conv:
        groups.append(conv(width, width, kernel_size))
    last = output_conv(width, tail_kernel_size, predict_kernel)
    return conv(in_channels, width, kernel_size), nn.Sequential(*groups), last


@register("kpcn")
class KPCN(SingleScaleNet):
    """KPCN (Bako et al. 2017): ``depth`` convolutions of ``width`` filters, ReLU between, no skips; the
    last predicts a ``predict_kernel``^2 kernel per pixel. Paper: 9 layers, 100 filters of 5x5, 21x21."""

    def __init__(self, in_channels: int, width: int = 100, depth: int = 9, kernel_size: int = 5,
                 predict_kernel: int = 21, norm: str = "none", dropout: float = 0.0):
        head, body = plain_layers(in_channels, width, depth, kernel_size, norm, dropout)
        super().__init__(head, body, output_conv(width, kernel_size, predict_kernel), predict_kernel, False)


@register("direct_cnn")
class DirectCNN(SingleScaleNet):
    """KPCN's layers predicting the colour directly: Bako et al. 2017's DPCN, a plain stack of
    convolutions. ``long_skip`` adds a skip across the body, which DPCN does not have."""

    def __init__(self, in_channels: int, width: int = 100, depth: int = 9, kernel_size: int = 5,
                 norm: str = "none", dropout: float = 0.0, long_skip: bool = False):
        head, body = plain_layers(in_channels, width, depth, kernel_size, norm, dropout)
        super().__init__(head, body, output_conv(width, kernel_size, None), None, long_skip)


@register("kprcn")
class KPRCN(SingleScaleNet):
    """Kernel-predicting residual network: conv head, ``n_blocks`` EDSR residual blocks (Lim et al. 2017;
    two convs per skip, no bottleneck, no batch norm) and a closing conv, long skip, kernel tail."""

    def __init__(self, in_channels: int, width: int = 100, n_blocks: int = 4, kernel_size: int = 5,
                 predict_kernel: int = 21, norm: str = "none", dropout: float = 0.0):
        head, body = residual_layers(in_channels, width, n_blocks, kernel_size, norm, dropout)
        super().__init__(head, body, output_conv(width, kernel_size, predict_kernel), predict_kernel, True)


@register("direct_rcn")
class DirectRCN(SingleScaleNet):
    """KPRCN's body predicting the colour directly (EDSR's head/body/tail layout)."""

    def __init__(self, in_channels: int, width: int = 100, n_blocks: int = 4, kernel_size: int = 5,
                 norm: str = "none", dropout: float = 0.0):
        head, body = residual_layers(in_channels, width, n_blocks, kernel_size, norm, dropout)
        super().__init__(head, body, output_conv(width, kernel_size, None), None, True)


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
                 kernel_size: int = 3, predict_kernel: int = 21, reduction: int = 16,
                 attention_pool: str = "local", attention_window: int = 31, closing_conv: bool = True,
                 tail_kernel_size: int = 3, norm: str = "none", dropout: float = 0.0):
        layers = rcan_layers(in_channels, width, n_groups, n_blocks, kernel_size, reduction, attention_pool,
                             attention_window, closing_conv, norm, dropout, tail_kernel_size, predict_kernel)
        super().__init__(*layers, predict_kernel, closing_conv)


@register("direct_rcan")
class DirectRCAN(SingleScaleNet):
    """KPRCAN's body predicting the colour directly (RCAN's head/body/tail layout)."""

    def __init__(self, in_channels: int, width: int = 64, n_groups: int = 2, n_blocks: int = 4,
                 kernel_size: int = 3, reduction: int = 16, attention_pool: str = "local",
                 attention_window: int = 31, closing_conv: bool = True, tail_kernel_size: int = 3,
                 norm: str = "none", dropout: float = 0.0):
        layers = rcan_layers(in_channels, width, n_groups, n_blocks, kernel_size, reduction, attention_pool,
                             attention_window, closing_conv, norm, dropout, tail_kernel_size, None)
        super().__init__(*layers, None, closing_conv)
