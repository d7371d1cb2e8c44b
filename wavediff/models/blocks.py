"""Building blocks shared by the waveform models: SnakeBeta, padded (optionally circular) convs, residual units.

Every conv pads explicitly instead of relying on nn.Conv1d's own padding, so one switch
(`padding_mode="circular"`) makes a whole network treat its input as a loop: the signal
wraps around at its ends and a loop encodes and decodes with no seam at its wrap point.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

PaddingMode = Literal["zeros", "circular"]


def pad1d(x: Tensor, left: int, right: int, mode: PaddingMode) -> Tensor:
    """Pad the last axis; circular padding wraps as often as needed, since deep latents can be shorter than a kernel."""
    if left == right == 0:
        return x
    if mode == "zeros":
        return F.pad(x, (left, right))
    if mode != "circular":
        raise ValueError(f"padding mode must be 'zeros' or 'circular', got {mode!r}")
    n = x.shape[-1]
    index = torch.arange(-left, n + right, device=x.device) % n
    return x.index_select(-1, index)


def pad_to_multiple(x: Tensor, multiple: int, mode: PaddingMode) -> Tensor:
    """Pad the end of the last axis up to a multiple (circular mode tiles the loop instead of adding silence)."""
    return pad1d(x, 0, -x.shape[-1] % multiple, mode)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (weight-normed weights count as their magnitude and direction)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class _Snake(torch.autograd.Function):
    """SnakeBeta's formula with its derivatives written out, so the forward pass works in one buffer
    and saves only its input (autograd's generic graph keeps αx, sin αx and sin² αx besides)."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, inv_beta: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, alpha, inv_beta)
        return snake(x, alpha, inv_beta)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        # y = x + b·sin²(αx): ∂y/∂x = 1 + b·α·sin 2αx, ∂y/∂α = b·x·sin 2αx, ∂y/∂b = sin² αx
        x, alpha, inv_beta = ctx.saved_tensors  # x: (batch, channels, time)
        phase = x * alpha
        sin = torch.sin(phase)
        half = phase.cos_().mul_(sin).mul_(grad)  # grad·sin αx·cos αx = grad·½ sin 2αx
        grad_inv_beta = (grad * sin.square_()).sum((0, 2))[:, None]
        grad_alpha = 2 * inv_beta * (half * x).sum((0, 2))[:, None]
        return torch.addcmul(grad, half, 2 * inv_beta * alpha), grad_alpha, grad_inv_beta


def snake(x: Tensor, alpha: Tensor, inv_beta: Tensor) -> Tensor:
    """x + inv_beta·sin²(αx) in one new buffer (α, inv_beta shaped (channels, 1)): the activation is
    memory-bound on a CPU, so each temporary it skips is time."""
    return torch.mul(x, alpha).sin_().square_().mul_(inv_beta).add_(x)


class SnakeBeta(nn.Module):
    """x + 1/β·sin²(αx): a periodic activation that suits audio (BigVGAN/Oobleck); α, β per channel, stored as logs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(channels))
        self.log_beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.log_alpha.exp()[:, None]
        inv_beta = 1.0 / (self.log_beta.exp()[:, None] + 1e-9)
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad or inv_beta.requires_grad):
            return _Snake.apply(x, alpha, inv_beta)
        return snake(x, alpha, inv_beta)


class Conv1d(nn.Conv1d):
    """A conv with explicit (left, right) padding, zero or circular; by default 'same' for stride 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        padding: tuple[int, int] | None = None,
        padding_mode: PaddingMode = "zeros",
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias)
        total = dilation * (kernel_size - 1)
        self.pads = padding if padding is not None else (total // 2, total - total // 2)
        self.wrap = padding_mode

    def forward(self, x: Tensor, padding_mode: PaddingMode | None = None) -> Tensor:
        """`padding_mode` overrides the conv's own mode for this call: the same weights train on
        zero-padded windows and generate loops that wrap."""
        left, right = self.pads
        if left == right and (padding_mode or self.wrap) == "zeros":  # the conv pads as it goes: no padded copy
            return F.conv1d(x, self.weight, self.bias, self.stride, left, self.dilation)
        x = pad1d(x, left, right, padding_mode or self.wrap)
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pads={self.pads}, mode={self.wrap}"


def downsample_conv(in_channels: int, out_channels: int, stride: int, padding_mode: PaddingMode) -> Conv1d:
    """Strided conv of kernel 2·stride mapping T samples to exactly T/stride (T a multiple of stride)."""
    return Conv1d(
        in_channels,
        out_channels,
        2 * stride,
        stride=stride,
        padding=(math.ceil(stride / 2), stride // 2),
        padding_mode=padding_mode,
    )


class UpsampleConv1d(nn.ConvTranspose1d):
    """Transposed conv of kernel 2·stride mapping N frames to exactly N·stride samples.

    Circular mode folds the overlap that spills past the end back onto the start, which is the
    transposed conv of a periodic signal: shifting the input by one frame shifts the output by
    `stride` samples, everywhere including the wrap point.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding_mode: PaddingMode = "zeros") -> None:
        super().__init__(in_channels, out_channels, 2 * stride, stride=stride)
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding mode must be 'zeros' or 'circular', got {padding_mode!r}")
        self.wrap = padding_mode
        self.offset = math.ceil(stride / 2)

    def forward(self, x: Tensor) -> Tensor:
        stride = self.stride[0]
        n = x.shape[-1] * stride
        y = F.conv_transpose1d(x, self.weight, None, stride)  # length n + stride
        if self.wrap == "circular":
            y = y[..., :n] + F.pad(y[..., n:], (0, n - stride))
            y = torch.roll(y, -self.offset, dims=-1)
        else:
            y = y[..., self.offset : self.offset + n]
        return y + self.bias[:, None] if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.wrap}"


class ResidualUnit(nn.Module):
    """Oobleck/DAC residual unit: SnakeBeta → dilated k7 conv → SnakeBeta → 1×1 conv, added to the input."""

    def __init__(self, channels: int, dilation: int, padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        self.block = nn.Sequential(
            SnakeBeta(channels),
            weight_norm(Conv1d(channels, channels, 7, dilation=dilation, padding_mode=padding_mode)),
            SnakeBeta(channels),
            weight_norm(Conv1d(channels, channels, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)
