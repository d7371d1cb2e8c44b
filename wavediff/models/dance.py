"""Dance Diffusion's waveform U-Net (Harmonai's DiffusionAttnUnet1D), so its public checkpoints run
in wavediff exactly (`wavediff import-dd`); selected by `model.architecture = "dance-diffusion"`.

Level 0 works at the audio rate; each further level first halves the length with a fixed cubic
kernel (reflect padding), and the up path doubles it back the same way. Every level holds three
residual conv blocks (k5, GroupNorm(1), GELU) on the way down and three on the way up after the
skip is concatenated; the deepest level (the middle) holds six. Levels listed in
`attention_levels` follow every conv block with multi-head self-attention. The noise level
enters once, as 16 Fourier-feature channels concatenated to the input. There is no other
conditioning (no genre, tempo or length), and the network cannot wrap (a loop is made seamless
only tiled: LoopDiffusion.denoise).

The channel widths are `base_channels × channel_mults`, one per level (Dance Diffusion: 128 ×
[1, 1, 2, 2, 4 × 10], 14 levels, attention at the 6 deepest: 13 halvings, so lengths are padded
internally to a multiple of 8192 and cropped back).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavediff.config import UNetConfig
from wavediff.errors import ConfigError
from wavediff.models.blocks import pad_to_multiple

FOURIER_CHANNELS = 16  # cos and sin of 8 random frequencies of the noise level
# The cubic resampling kernel of Dance Diffusion (and of diffusers' UNet1DModel).
CUBIC = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


class ResConvBlock(nn.Module):
    """x + conv(GELU(GN(conv(x)))), with GN and GELU after the second conv too except in the last block."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, kernel_size: int, is_last: bool = False) -> None:
        super().__init__()
        self.skip = nn.Conv1d(c_in, c_out, 1, bias=False) if c_in != c_out else None
        self.conv1 = nn.Conv1d(c_in, c_mid, kernel_size, padding=kernel_size // 2)
        self.norm1 = nn.GroupNorm(1, c_mid)
        self.conv2 = nn.Conv1d(c_mid, c_out, kernel_size, padding=kernel_size // 2)
        self.norm2 = None if is_last else nn.GroupNorm(1, c_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.gelu(self.norm1(self.conv1(x))))
        if self.norm2 is not None:
            h = F.gelu(self.norm2(h))
        return h + (self.skip(x) if self.skip is not None else x)


class SelfAttention1d(nn.Module):
    """Multi-head self-attention over time, pre-normed, added to its input."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, s = x.shape
        q, k, v = self.qkv(self.norm(x)).view(n, 3 * self.heads, c // self.heads, s).transpose(2, 3).chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(2, 3).reshape(n, c, s))


def _resample(x: Tensor, kernel: Tensor, up: bool) -> Tensor:
    """Halve (or double) the length with the fixed kernel, channel by channel."""
    channels = x.shape[1]
    weight = torch.zeros(channels, channels, kernel.shape[0], dtype=x.dtype, device=x.device)
    index = torch.arange(channels, device=x.device)
    weight[index, index] = kernel.to(x)
    pad = kernel.shape[0] // 2 - 1
    if up:
        x = F.pad(x, ((pad + 1) // 2,) * 2, "reflect")
        return F.conv_transpose1d(x, 2 * weight, stride=2, padding=2 * pad + 1)
    return F.conv1d(F.pad(x, (pad,) * 2, "reflect"), weight, stride=2)


class Level(nn.Module):
    """One level's conv blocks, each followed by its attention when the level has attention."""

    def __init__(
        self, widths: list[tuple[int, int, int]], kernel_size: int, head_channels: int, last: bool = False
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ResConvBlock(*w, kernel_size, is_last=last and i == len(widths) - 1) for i, w in enumerate(widths)
        )
        self.attn = nn.ModuleList(SelfAttention1d(w[2], w[2] // head_channels) for w in widths if head_channels)

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class DanceUNet1D(nn.Module):
    """See the module docstring. `forward(x, noise)` → x's shape; `noise` is the (B,) timestep input."""

    def __init__(
        self, cfg: UNetConfig, in_channels: int, cond_dim: int = 0, token_dim: int = 0, out_channels: int | None = None
    ) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        if len(widths) < 2 or min(widths) < 1:
            raise ConfigError(f"model.channel_mults: a Dance Diffusion U-Net needs 2 or more levels, got {widths}")
        if cond_dim or token_dim or (out_channels or in_channels) != in_channels:
            raise ConfigError(
                "a Dance Diffusion U-Net takes no conditioning: set conditioning.genre, tempo and length to false "
                "and model.cross_attention to false"
            )
        if cfg.padding != "zeros":
            raise ConfigError("model.padding must be 'zeros' for a Dance Diffusion U-Net (it cannot wrap)")
        if cfg.dropout or cfg.cross_attention:
            raise ConfigError("model.dropout and model.cross_attention are not part of a Dance Diffusion U-Net")
        attention = set(cfg.attention_levels)
        if not attention <= set(range(1, len(widths))):
            raise ConfigError(f"model.attention_levels must lie in 1–{len(widths) - 1}, got {cfg.attention_levels}")
        for level in attention:
            if widths[level] % cfg.head_channels or widths[level - 1] % cfg.head_channels:
                raise ConfigError(f"model.head_channels {cfg.head_channels} must divide the widths at level {level}")
        self.channels = in_channels
        self.factor = 2 ** (len(widths) - 1)
        self.timestep_embed = nn.Parameter(torch.randn(FOURIER_CHANNELS // 2, 1))
        self.register_buffer("kernel", torch.tensor(CUBIC), persistent=False)
        k, w, top = cfg.kernel_size, widths, in_channels
        heads = {d: cfg.head_channels if d in attention else 0 for d in range(len(w))}
        self.down = nn.ModuleList([Level([(top + FOURIER_CHANNELS, w[0], w[0]), (w[0],) * 3, (w[0],) * 3], k, 0)])
        self.down.extend(
            Level([(w[d - 1], w[d], w[d]), (w[d],) * 3, (w[d],) * 3], k, heads[d]) for d in range(1, len(w) - 1)
        )
        m, inner = w[-1], w[-2]
        self.mid = Level([(inner, m, m), *[(m,) * 3] * 4, (m, m, inner)], k, heads[len(w) - 1])
        self.up = nn.ModuleList(
            Level([(2 * w[d], w[d], w[d]), (w[d],) * 3, (w[d], w[d], w[d - 1])], k, heads[d])
            for d in reversed(range(1, len(w) - 1))
        )
        self.up.append(Level([(2 * w[0], w[0], w[0]), (w[0],) * 3, (w[0], w[0], top)], k, 0, last=True))

    def min_length(self) -> int:
        """Shortest padded input: the deepest resampling pads by reflection, which needs 3 samples there."""
        return 3 * self.factor

    def forward(
        self,
        x: Tensor,
        noise: Tensor,
        cond: Tensor | None = None,
        tokens: Tensor | None = None,
        circular: bool = False,
    ) -> Tensor:
        if circular:
            raise ConfigError(
                "a Dance Diffusion U-Net cannot wrap: loop it tiled (--loops tile, the default) "
                "or cut it (--no-circular)"
            )
        if cond is not None or tokens is not None:
            raise ValueError("a Dance Diffusion U-Net takes no conditioning")
        if x.dim() != 3 or x.shape[1] != self.channels or noise.shape != (x.shape[0],):
            raise ValueError(f"expected x (batch, {self.channels}, length) and noise (batch,), got {tuple(x.shape)}")
        length = x.shape[-1]
        h = pad_to_multiple(x, self.factor, "zeros")
        h = F.pad(h, (0, max(0, self.min_length() - h.shape[-1])))
        f = 2 * math.pi * noise[:, None].to(h.dtype) @ self.timestep_embed.T
        emb = torch.cat([f.cos(), f.sin()], dim=-1)[..., None].expand(-1, -1, h.shape[-1])
        h = torch.cat([h, emb.to(h.dtype)], dim=1)
        skips = []
        for d, level in enumerate(self.down):
            h = level(_resample(h, self.kernel, up=False) if d else h)
            skips.append(h)
        h = _resample(self.mid(_resample(h, self.kernel, up=False)), self.kernel, up=True)
        for i, level in enumerate(self.up):
            h = level(torch.cat([h, skips.pop()], dim=1))
            if i < len(self.up) - 1:
                h = _resample(h, self.kernel, up=True)
        return h[..., :length]
