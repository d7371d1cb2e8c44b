"""The 1D U-Net denoiser: Dance Diffusion's shape, modernized for latents, conditioning and loops.

Dance Diffusion's `DiffusionAttnUnet1D` is a deep 1D U-Net over raw audio: conv blocks at
every level, self-attention at the coarse levels, the timestep as Fourier features. It
carries that lineage and fixes what held it back:

- The noise level (and the pooled genre/tempo/length vector) modulates every residual block
  through adaptive group norm, instead of entering once as 16 channels at the top.
- Down/up sampling is a stride-2 conv and nearest ×2 + conv, not fixed cubic kernels, and
  any length works: the input is zero-padded to a multiple of `factor` and cropped back.
- Attention is `scaled_dot_product_attention` (flash kernels on GPUs), multi-head, with
  rotary positions so it can measure distances (a beat, a bar: what tempo is made of)
  while staying shift-equivariant, and can also attend to conditioning tokens
  (cross-attention, ready for text).
- Every conv pads explicitly and takes its padding mode per call, so the weights trained on
  zero-padded windows can also run on one period of a loop with `circular=True`: every conv
  wraps and the down/up samplings are exact on a period, so the net is equivariant to circular
  shifts by multiples of `factor` and a loop has no seam. Nothing in it knows absolute
  position (positions are relative and, on a loop, measured around it), which that
  equivariance needs. (Loops are denoised tiled by default, as the windows were trained:
  LoopDiffusion.denoise says why.)
- Residual and output convs start at zero, so an untrained net outputs exactly 0 and the
  preconditioner's skip path makes it a sensible denoiser from step one.
- Group norms run in float32 under autocast, keeping bf16 training stable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavediff.config import UNetConfig
from wavediff.errors import ConfigError
from wavediff.models.blocks import Conv1d, PaddingMode, pad_to_multiple

FOURIER_FEATURES = 256  # sin/cos features of the noise level (k-diffusion's FourierFeatures, std 1)
ROPE_BASE = 10000.0  # rotary positions: wavelengths from 2π tokens up to ~2π·ROPE_BASE


def norm_groups(channels: int) -> int:
    """The largest group count ≤ 32 that divides `channels` (GroupNorm needs an exact split)."""
    return next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias: a residual branch that starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever autocast says (statistics in bf16 drift), and
    whatever the weights' dtype (FSDP's mixed precision casts parameters to bf16)."""

    def __init__(self, channels: int) -> None:
        super().__init__(norm_groups(channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(
                x.dtype
            )


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar; the frequencies are a buffer, so a checkpoint keeps them."""

    def __init__(self, features: int, std: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(features // 2) * std)

    def forward(self, value: Tensor) -> Tensor:
        angles = 2 * math.pi * value.float()[:, None] * self.weight[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → adaptive GroupNorm (scale, shift from the embedding) → SiLU → dropout → conv."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(in_channels)
        self.conv1 = Conv1d(in_channels, out_channels, kernel_size)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = GroupNorm32(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(Conv1d(out_channels, out_channels, kernel_size))
        self.skip = Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, emb: Tensor, mode: PaddingMode) -> Tensor:
        """`emb` is the SiLU of the embedding, shared by every block."""
        h = self.conv1(F.silu(self.norm1(x)), mode)
        scale, shift = self.emb(emb)[..., None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)), mode)
        return h + (self.skip(x) if self.skip is not None else x)


def _heads(channels: int, head_channels: int) -> int:
    heads = max(1, channels // head_channels)
    if channels % heads:
        raise ConfigError(f"model.head_channels: {channels} channels do not split into {heads} equal attention heads")
    return heads


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, C, N) → (B, heads, N, C/heads)."""
    b, c, n = x.shape
    return x.reshape(b, heads, c // heads, n).transpose(-1, -2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, d) → (B, heads·d, N)."""
    b, h, n, d = x.shape
    return x.transpose(-1, -2).reshape(b, h * d, n)


def rotary(x: Tensor, circular: bool) -> Tensor:
    """Rotary position embedding of (B, heads, N, d) queries or keys (d even).

    Rotating q_i and k_j by angles θ·i and θ·j makes their dot product depend on i − j only:
    attention learns distances (a beat, a bar) and stays shift-equivariant. On a loop every
    frequency is rounded to a whole number of turns per period N, so distances are measured
    around the loop and the wrap point is like any other; wavelengths longer than the loop
    round to zero (a loop has no distance beyond its period).
    """
    n, d = x.shape[-2], x.shape[-1]
    freqs = ROPE_BASE ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float64) / d)
    if circular:
        turns = 2 * math.pi / n
        freqs = torch.round(freqs / turns) * turns
    angles = torch.arange(n, device=x.device, dtype=torch.float64)[:, None] * freqs[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the sequence with rotary positions (relative only), residual."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = _heads(channels, head_channels)
        if (channels // self.heads) % 2:
            raise ConfigError(
                f"model.head_channels: attention heads of {channels // self.heads} channels; "
                "rotary positions need an even number"
            )
        self.norm = GroupNorm32(channels)
        self.qkv = Conv1d(channels, 3 * channels, 1)
        self.out = _zero(Conv1d(channels, channels, 1))

    def forward(self, x: Tensor, circular: bool) -> Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(self.norm(x)).chunk(3, dim=1))
        q, k = rotary(q, circular), rotary(k, circular)  # rotary's outputs are new, contiguous tensors
        # v is a transposed view: a non-contiguous input sends SDPA to its math kernel (an L × L score
        # matrix per head), so it is copied into the layout the fused kernels take.
        return x + self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v.contiguous())))


class CrossAttention(nn.Module):
    """Queries from the sequence, keys and values from the conditioning tokens, residual."""

    def __init__(self, channels: int, token_dim: int, head_channels: int) -> None:
        super().__init__()
        self.heads = _heads(channels, head_channels)
        self.norm = GroupNorm32(channels)
        self.q = Conv1d(channels, channels, 1)
        self.kv = nn.Linear(token_dim, 2 * channels)
        self.out = _zero(Conv1d(channels, channels, 1))

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        q = _split_heads(self.q(self.norm(x)), self.heads).contiguous()  # views: the fused kernel needs copies
        k, v = (_split_heads(t, self.heads).contiguous() for t in self.kv(tokens).transpose(1, 2).chunk(2, dim=1))
        return x + self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class Stage(nn.Module):
    """One residual block, then self- and cross-attention where the level has them."""

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int, cfg: UNetConfig, attention: bool, token_dim: int
    ) -> None:
        super().__init__()
        self.block = ResBlock(in_channels, out_channels, emb_dim, cfg.kernel_size, cfg.dropout)
        self.attn = SelfAttention(out_channels, cfg.head_channels) if attention else None
        self.cross = CrossAttention(out_channels, token_dim, cfg.head_channels) if attention and token_dim else None

    def forward(self, x: Tensor, emb: Tensor, tokens: Tensor | None, mode: PaddingMode) -> Tensor:
        x = self.block(x, emb, mode)
        if self.attn is not None:
            x = self.attn(x, mode == "circular")
        if self.cross is not None:
            x = self.cross(x, tokens)
        return x


class Downsample(nn.Module):
    """Conv k4 stride 2 padding (1, 1): exactly T/2 frames, and exact on a loop when it wraps."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv1d(channels, channels, 4, stride=2, padding=(1, 1))

    def forward(self, x: Tensor, mode: PaddingMode) -> Tensor:
        return self.conv(x, mode)


class Upsample(nn.Module):
    """Nearest ×2 then conv k3 (no transposed-conv checkerboard)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv1d(channels, channels, 3)

    def forward(self, x: Tensor, mode: PaddingMode) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"), mode)


class Level(nn.Module):
    """The stages of one resolution and the resampling that leaves it (None at the ends)."""

    def __init__(self, stages: list[Stage], resample: Downsample | Upsample | None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.resample = resample


def _check(cfg: UNetConfig, in_channels: int) -> None:
    if in_channels < 1 or cfg.base_channels < 1:
        raise ConfigError(
            f"model: in_channels and base_channels must be positive, got {in_channels}, {cfg.base_channels}"
        )
    if not cfg.channel_mults or any(m < 1 for m in cfg.channel_mults):
        raise ConfigError(f"model.channel_mults must be a non-empty list of positive integers, got {cfg.channel_mults}")
    if cfg.blocks_per_level < 1 or cfg.kernel_size < 1 or cfg.head_channels < 1:
        raise ConfigError("model.blocks_per_level, kernel_size and head_channels must be positive")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    levels = len(cfg.channel_mults)
    for level in cfg.attention_levels:
        if not 0 <= level < levels:
            raise ConfigError(
                f"model.attention_levels: level {level} is out of range (the U-Net has levels 0–{levels - 1})"
            )


class UNet1D(nn.Module):
    """See the module docstring. `forward(x, noise, cond, tokens, circular)` → the network output: x's length,
    `out_channels` channels (default: x's; fewer when x carries extra input channels such as a tempo clock)."""

    def __init__(
        self, cfg: UNetConfig, in_channels: int, cond_dim: int = 0, token_dim: int = 0, out_channels: int | None = None
    ) -> None:
        super().__init__()
        _check(cfg, in_channels)
        self.cross_attention = cfg.cross_attention and token_dim > 0
        if self.cross_attention and not cfg.attention_levels:
            raise ConfigError("model.cross_attention needs at least one level in model.attention_levels")
        self.cfg = cfg
        self.in_channels = in_channels
        self.cond_dim = cond_dim
        self.factor = 2 ** (len(cfg.channel_mults) - 1)
        base = cfg.base_channels
        emb_dim = 4 * base
        self.fourier = FourierFeatures(FOURIER_FEATURES)
        self.noise_mlp = nn.Sequential(nn.Linear(FOURIER_FEATURES, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj = nn.Linear(cond_dim, emb_dim) if cond_dim > 0 else None
        self.stem = Conv1d(in_channels, base, 3)

        tokens = token_dim if self.cross_attention else 0
        last = len(cfg.channel_mults) - 1
        skips, ch = [base], base
        down = []
        for i, mult in enumerate(cfg.channel_mults):
            attention = i in cfg.attention_levels
            stages = []
            for _ in range(cfg.blocks_per_level):
                stages.append(Stage(ch, base * mult, emb_dim, cfg, attention, tokens))
                ch = base * mult
                skips.append(ch)
            down.append(Level(stages, Downsample(ch) if i < last else None))
            if i < last:
                skips.append(ch)
        up = []
        for i, mult in reversed(list(enumerate(cfg.channel_mults))):
            attention = i in cfg.attention_levels
            stages = []
            for _ in range(cfg.blocks_per_level + 1):
                stages.append(Stage(ch + skips.pop(), base * mult, emb_dim, cfg, attention, tokens))
                ch = base * mult
            up.append(Level(stages, Upsample(ch) if i > 0 else None))
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(up)
        self.out_norm = GroupNorm32(ch)
        self.out = _zero(Conv1d(ch, out_channels or in_channels, 3))

    def _embedding(self, noise: Tensor, cond: Tensor | None) -> Tensor:
        emb = self.noise_mlp(self.fourier(noise))
        if self.cond_proj is not None:
            emb = emb + self.cond_proj(cond)
        return F.silu(emb)

    def _check_inputs(
        self, x: Tensor, noise: Tensor, cond: Tensor | None, tokens: Tensor | None, circular: bool
    ) -> None:
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[-1] < 1:
            raise ValueError(f"U-Net input must be (batch, {self.in_channels}, length ≥ 1), got {tuple(x.shape)}")
        if noise.shape != (x.shape[0],):
            raise ValueError(
                f"U-Net noise level must be one value per item, shape ({x.shape[0]},), got {tuple(noise.shape)}"
            )
        if (cond is None) != (self.cond_proj is None):
            wanted = (
                f"a (batch, {self.cond_dim}) vector" if self.cond_proj is not None else "none (built with cond_dim=0)"
            )
            raise ValueError(f"U-Net conditioning vector: expected {wanted}")
        if (tokens is None) == self.cross_attention:
            wanted = "(batch, tokens, token_dim) tokens" if self.cross_attention else "none (it has no cross-attention)"
            raise ValueError(f"U-Net conditioning tokens: expected {wanted}")
        if circular and x.shape[-1] % self.factor:
            raise ValueError(
                f"U-Net input length {x.shape[-1]} must be a multiple of {self.factor} in circular mode "
                "(each level halves it exactly on a loop)"
            )

    def forward(
        self,
        x: Tensor,
        noise: Tensor,
        cond: Tensor | None = None,
        tokens: Tensor | None = None,
        circular: bool = False,
    ) -> Tensor:
        """x (B, C, T) already scaled by c_in; noise (B,) the c_noise input; → (B, C, T).

        Zero mode takes any T (padded to a multiple of `factor`, then cropped); circular mode
        treats x as one period of a loop.
        """
        self._check_inputs(x, noise, cond, tokens, circular)
        mode: PaddingMode = "circular" if circular else "zeros"
        length = x.shape[-1]
        emb = self._embedding(noise, cond)
        h = self.stem(pad_to_multiple(x, self.factor, "zeros"), mode)
        skips = [h]
        for level in self.down:
            for stage in level.stages:
                h = stage(h, emb, tokens, mode)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h, mode)
                skips.append(h)
        for level in self.up:
            for stage in level.stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), emb, tokens, mode)
            if level.resample is not None:
                h = level.resample(h, mode)
        return self.out(F.silu(self.out_norm(h)), mode)[..., :length]
