"""Building blocks shared by the component networks.

Every block has a ``radius``: how many pixels of context (each side, at the block's own resolution) one
output pixel depends on. ``radius_of`` sums it along a chain of modules, which gives a network the
receptive radius that tiled inference needs as overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ATTENTION_POOLS = ("local", "global")
# declared context of global pooling: tiles only approximate it (see ChannelAttention)
GLOBAL_POOL_RADIUS = 256


POINTWISE = (nn.ReLU, nn.BatchNorm2d, nn.Dropout2d, nn.Identity)


def first_convolution(network: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, module) of the convolution that reads a network's input features."""
    return next((name, m) for name, m in network.named_modules() if isinstance(m, nn.Conv2d))


class DifferencesConv2d(nn.Conv2d):
    """A first convolution over ``[x, dx(x), dy(x), extra]`` that is given only ``[x, extra]``.

    ``dx(x)(p) = x(p + e_x) - x(p)`` (KPCN's gradient features) is linear, and so is a convolution, so
    ``conv(W, [x, dx, dy])`` is one convolution of ``x`` with a kernel one pixel larger to the right and
    below: ``F[j] = W_x[j] + W_dx[j - e_x] - W_dx[j] + W_dy[j - e_y] - W_dy[j]`` (``folded_weight``). The
    weights keep their unfolded shape (``in_channels`` counts dx and dy), so checkpoints, pruning and
    ``train.py --init`` see an ordinary convolution; only the input and the arithmetic are smaller: each
    of ``fast``'s networks builds no 26 difference channels and reads 16 full-resolution channels instead
    of 48 (13 and 39, padded to onnxruntime's block). The image is zero outside, so the differences at its
    edge are those of the zero-extended image (``finite_differences`` puts 0 in the last column/row).

    ``differenced``: the channels of ``x``; ``in_channels - 3 * differenced`` channels of ``extra``
    (a variance, padding) follow without differences. Built with ``from_convolution``.
    """

    differenced: int
    # torch-pruning's dependency graph follows a convolution's weight only as a parameter: while tracing
    # for it (``constant_fold``) the folded kernel is a constant, so the layer is an ordinary convolution
    _fold_is_constant = False

    @classmethod
    @contextmanager
    def constant_fold(cls) -> Iterator[None]:
        cls._fold_is_constant = True
        try:
            yield
        finally:
            cls._fold_is_constant = False

    @classmethod
    def from_convolution(cls, conv: nn.Conv2d, differenced: int) -> DifferencesConv2d:
        if not cls.applies_to(conv) or conv.in_channels < 3 * differenced:
            raise ValueError(f"{conv} is not a plain odd square convolution over {3 * differenced} channels")
        # skip_init: no initialisation (its random draws would shift every later use of torch's generator)
        folded = nn.utils.skip_init(cls, conv.in_channels, conv.out_channels, conv.kernel_size,
                                    padding=conv.padding, bias=conv.bias is not None)
        folded.weight, folded.bias = conv.weight, conv.bias  # the same parameters (and initialisation)
        folded.differenced = differenced
        return folded

    @staticmethod
    def applies_to(conv: nn.Conv2d) -> bool:
        size = conv.kernel_size[0]
        return (type(conv) is nn.Conv2d and conv.kernel_size == (size, size) and size % 2 == 1
                and conv.padding == (size // 2,) * 2 and conv.stride == (1, 1) and conv.dilation == (1, 1)
                and conv.groups == 1 and conv.padding_mode == "zeros")

    def folded_weight(self) -> torch.Tensor:
        n = self.differenced
        plain, dx, dy, extra = (self.weight[:, :n], self.weight[:, n:2 * n], self.weight[:, 2 * n:3 * n],
                                self.weight[:, 3 * n:])
        pad = nn.functional.pad  # (left, right, top, bottom) of the kernel's last two axes
        differenced = pad(plain - dx - dy, (0, 1, 0, 1)) + pad(dx, (1, 0, 0, 1)) + pad(dy, (0, 1, 1, 0))
        return torch.cat([differenced, pad(extra, (0, 1, 0, 1))], dim=1)

    @property
    def edge_padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zeros the folded kernel needs around the image."""
        radius = self.padding[0]
        return (radius, radius + 1, radius, radius + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.folded_weight()
        weight = weight.detach() if self._fold_is_constant else weight
        return nn.functional.conv2d(nn.functional.pad(x, self.edge_padding), weight, self.bias)

    def baked(self) -> nn.Sequential:
        """The same computation with the folded kernel as a plain convolution's weight (the ONNX
        exporter needs a convolution's kernel as a constant, not computed)."""
        weight = self.folded_weight().detach()
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], bias=self.bias is not None)
        conv.weight = nn.Parameter(weight.clone())
        if self.bias is not None:
            conv.bias = nn.Parameter(self.bias.detach().clone())
        return nn.Sequential(nn.ZeroPad2d(self.edge_padding), conv)


def radius_of(*modules: nn.Module) -> int:
    """Radius of ``modules`` applied one after the other: a block's ``radius``, a convolution's half
    size, the sum along a Sequential, 0 for pointwise layers; anything else is an error, not a guess."""
    total = 0
    for module in modules:
        if hasattr(module, "radius"):
            total += module.radius
        elif isinstance(module, nn.Conv2d):
            total += module.dilation[0] * (module.kernel_size[0] // 2)
        elif isinstance(module, nn.Sequential):
            total += radius_of(*module)
        elif not isinstance(module, POINTWISE):
            raise TypeError(f"no receptive radius known for {type(module).__name__}")
    return total


def conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """'Same'-size convolution with zero padding."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class ConvAct(nn.Sequential):
    """conv -> [BatchNorm] -> ReLU -> [Dropout]: a hidden layer of KPCN (Bako et al. 2017).

    BatchNorm (Ioffe & Szegedy 2015) and dropout (Srivastava et al. 2014) are switches for the baseline
    study only; the shipped networks use neither.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str = "none",
                 dropout: float = 0.0):
        layers: list[nn.Module] = [conv(in_channels, out_channels, kernel_size)]
        if norm == "batch":
            layers.append(nn.BatchNorm2d(out_channels))
        elif norm != "none":
            raise ValueError(f"norm must be 'none' or 'batch', not {norm!r}")
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)
        self.radius = radius_of(*layers)


class PlainBody(nn.Sequential):
    """``depth`` ConvAct layers of equal width (the body of KPCN)."""

    def __init__(self, width: int, depth: int, kernel_size: int, norm: str = "none", dropout: float = 0.0):
        super().__init__(*[ConvAct(width, width, kernel_size, norm, dropout) for _ in range(depth)])
        self.radius = radius_of(*self)


class ResBlock(nn.Module):
    """x + conv(ReLU(conv(x))): the residual block of EDSR (Lim et al. 2017), no batch norm, no
    bottleneck (He et al. 2016's identity skip with two full-width convolutions)."""

    def __init__(self, width: int, kernel_size: int, norm: str = "none", dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(ConvAct(width, width, kernel_size, norm, dropout),
                                  conv(width, width, kernel_size))
        self.radius = radius_of(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (Hu et al. 2018) as used by RCAN (Zhang et al. 2018):
    pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid -> scale the input channels.

    ``pool='global'`` averages over the whole image as in the paper: every output pixel then depends on
    the whole input, so tiled inference only approximates full-frame inference (the network declares
    at least ``GLOBAL_POOL_RADIUS``, a finite stand-in: tiles with that much overlap see similar
    means). ``pool='local'`` averages over a ``window`` x ``window`` neighbourhood instead (stride 1,
    borders averaged over the pixels inside the image), which keeps the network local and tiling exact.

    The reduce convolution runs *before* the pooling: a 1x1 convolution is affine and a normalised
    average commutes with affine maps, so the result is identical to pooling first, at 1/reduction of the
    pooling cost. The window average is separable (a 1 x window then a window x 1 pool), which with
    ``count_include_pad=False`` is exact too, because the count of a rectangle factorises.
    """

    def __init__(self, width: int, reduction: int = 16, pool: str = "local", window: int = 31):
        super().__init__()
        if pool not in ATTENTION_POOLS:
            raise ValueError(f"attention_pool must be one of {ATTENTION_POOLS}, not {pool!r}")
        if window % 2 != 1:
            raise ValueError(f"attention_window must be odd, not {window}")
        hidden = max(1, width // reduction)
        self.reduce, self.expand = nn.Conv2d(width, hidden, 1), nn.Conv2d(hidden, width, 1)
        self.pool = pool
        half = window // 2
        self.pool_x = nn.AvgPool2d((1, window), stride=1, padding=(0, half), count_include_pad=False)
        self.pool_y = nn.AvgPool2d((window, 1), stride=1, padding=(half, 0), count_include_pad=False)
        # global: every pixel sees the whole input, which no finite radius says; networks holding such a
        # block declare GLOBAL_POOL_RADIUS (``declared_radius``)
        self.radius = 0 if pool == "global" else half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.reduce(x)
        if self.pool == "global":
            squeezed = squeezed.mean(dim=(2, 3), keepdim=True)
        else:
            squeezed = self.pool_y(self.pool_x(squeezed))
        return x * torch.sigmoid(self.expand(torch.relu(squeezed)))


class RCAB(nn.Module):
    """Residual channel-attention block (Zhang et al. 2018): x + CA(conv(ReLU(conv(x))))."""

    def __init__(self, width: int, kernel_size: int, reduction: int, pool: str, window: int,
                 norm: str = "none", dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(ConvAct(width, width, kernel_size, norm, dropout),
                                  conv(width, width, kernel_size),
                                  ChannelAttention(width, reduction, pool, window))
        self.radius = radius_of(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """RCAN's residual group: ``n_blocks`` RCABs and a closing conv, with a long skip around them.

    Without the closing conv there is no skip either: the RCABs already pass their input through, and a
    skip around them would add the same identity a second time."""

    def __init__(self, width: int, n_blocks: int, kernel_size: int, reduction: int, pool: str, window: int,
                 closing_conv: bool = True, norm: str = "none", dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = [RCAB(width, kernel_size, reduction, pool, window, norm, dropout)
                                   for _ in range(n_blocks)]
        if closing_conv:
            blocks.append(conv(width, width, kernel_size))
        self.body = nn.Sequential(*blocks)
        self.skip = closing_conv
        self.radius = radius_of(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.skip else self.body(x)


def declared_radius(network: nn.Module, radius: int) -> int:
    """The receptive radius a network declares: ``radius``, or at least ``GLOBAL_POOL_RADIUS`` (a finite
    stand-in: tiles with that much overlap see similar means) when a block pools over the whole input."""
    pools_globally = any(isinstance(m, ChannelAttention) and m.pool == "global" for m in network.modules())
    return max(radius, GLOBAL_POOL_RADIUS) if pools_globally else radius
