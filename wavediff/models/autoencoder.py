"""The waveform autoencoder (Oobleck/DAC family) that turns audio into the latents the denoiser learns.

Encoder: k7 conv, then per stride a block of 3 residual units (dilations 1, 3, 9) and a strided
conv of kernel 2·stride, then SnakeBeta and a k3 conv to the bottleneck. The decoder mirrors it
with transposed convs. Any input length comes back exactly: the input is padded to a multiple
of the hop internally and the output cropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from wavediff.config import AutoencoderConfig
from wavediff.errors import ConfigError
from wavediff.models.blocks import (
    Conv1d,
    PaddingMode,
    ResidualUnit,
    SnakeBeta,
    UpsampleConv1d,
    downsample_conv,
    pad1d,
    pad_to_multiple,
)

DILATIONS = (1, 3, 9)


class EncoderBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int, padding_mode: PaddingMode) -> None:
        super().__init__(
            *(ResidualUnit(in_channels, d, padding_mode) for d in DILATIONS),
            SnakeBeta(in_channels),
            weight_norm(downsample_conv(in_channels, out_channels, stride, padding_mode)),
        )


class DecoderBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int, padding_mode: PaddingMode) -> None:
        super().__init__(
            SnakeBeta(in_channels),
            weight_norm(UpsampleConv1d(in_channels, out_channels, stride, padding_mode)),
            *(ResidualUnit(out_channels, d, padding_mode) for d in DILATIONS),
        )


class VAEBottleneck(nn.Module):
    """Diagonal Gaussian posterior; std = softplus(scale) + 1e-4 (Oobleck) so it never collapses to zero.

    The KL term is Σ_channels(μ² + σ² − log σ² − 1) averaged over batch and frames: twice the textbook
    KL, the scaling stable-audio-tools uses, so its KL weight (1e-4) carries over unchanged.
    """

    factor = 2  # encoder channels per latent channel (mean and scale)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, scale = h.chunk(2, dim=1)
        std = F.softplus(scale) + 1e-4
        var = std * std
        kl = (mean * mean + var - var.log() - 1).sum(1).mean()
        z = mean + std * torch.randn_like(mean) if self.training else mean
        return z, kl


class PlainBottleneck(nn.Module):
    """No regularisation: the encoder output is the latent and the KL term is zero."""

    factor = 1

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return h, h.new_zeros(())


def check_config(cfg: AutoencoderConfig) -> None:
    """Refuse an autoencoder shape that cannot be built, naming the setting."""
    if len(cfg.channel_mults) != len(cfg.strides):
        raise ConfigError(
            f"model.channel_mults has {len(cfg.channel_mults)} entries but model.strides has "
            f"{len(cfg.strides)}: give one channel multiplier per stride"
        )
    for key in ("strides", "channel_mults"):
        if any(v < 1 for v in getattr(cfg, key)):
            raise ConfigError(f"model.{key} must be positive integers, got {getattr(cfg, key)}")
    for key in ("channels", "base_channels", "latent_dim"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"model.{key} must be a positive integer, got {getattr(cfg, key)}")
    if cfg.bottleneck not in ("vae", "plain"):
        raise ConfigError(f"model.bottleneck must be 'vae' or 'plain', got {cfg.bottleneck!r}")
    if cfg.padding not in ("zeros", "circular"):
        raise ConfigError(f"model.padding must be 'zeros' or 'circular', got {cfg.padding!r}")


def build_decoder(cfg: AutoencoderConfig) -> nn.Sequential:
    """Latents → audio: the decoder half of the autoencoder `cfg` describes."""
    mode = cfg.padding
    widths = [cfg.base_channels * m for m in [1, *cfg.channel_mults]]
    return nn.Sequential(
        weight_norm(Conv1d(cfg.latent_dim, widths[-1], 7, padding_mode=mode)),
        *(DecoderBlock(widths[i + 1], widths[i], cfg.strides[i], mode) for i in reversed(range(len(cfg.strides)))),
        SnakeBeta(widths[0]),
        weight_norm(Conv1d(widths[0], cfg.channels, 7, padding_mode=mode, bias=False)),
        *([nn.Tanh()] if cfg.output_tanh else []),
    )


class LatentDecoding:
    """Decoding for a module with `cfg` (AutoencoderConfig) and `decoder` (build_decoder's): the
    full autoencoder and its preview decoder (models.preview) decode, and reach, the same way."""

    cfg: AutoencoderConfig
    decoder: nn.Module

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the strides)."""
        return math.prod(self.cfg.strides)

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def decoder_context(self) -> int:
        """Latent frames either side of a frame that reach its decoded samples (half the decoder's
        receptive field, rounded up): how much wrapped context decodes a loop as if it never ended."""
        reach = 3.0  # the first k7 conv, at the latent rate
        rate = 1  # audio samples per step at the current level
        for stride in reversed(self.cfg.strides):
            rate *= stride
            reach += (stride + 3 * sum(DILATIONS)) * (self.hop_length // rate) / self.hop_length
        reach += 3 / self.hop_length  # the last k7 conv, at the audio rate
        return math.ceil(reach)

    def decode(self, z: Tensor, length: int | None = None) -> Tensor:
        """Latents (batch, latent_dim, frames) → audio cropped to `length` samples (default frames·hop)."""
        if z.dim() != 3 or z.shape[1] != self.cfg.latent_dim:
            raise ValueError(
                f"decoder expects latents shaped (batch, {self.cfg.latent_dim}, frames), got {tuple(z.shape)}"
            )
        full = z.shape[-1] * self.hop_length
        if length is not None and not 0 < length <= full:
            raise ValueError(f"cannot decode {length} samples from {z.shape[-1]} frames (at most {full})")
        y = self.decoder(z)
        return y if length is None else y[..., :length]

    def decode_loop(self, z: Tensor) -> Tensor:
        """Latents that are one period of a loop → that period's audio (frames·hop samples), seamless:
        a circular decoder wraps by itself; any other gets decoder_context frames wrapped around each end,
        and the middle is kept, so the wrap point sees the same neighbours as every other point."""
        if self.cfg.padding == "circular":
            return self.decode(z)
        ctx, hop, frames = self.decoder_context(), self.hop_length, z.shape[-1]
        return self.decode(pad1d(z, ctx, ctx, "circular"))[..., ctx * hop : (ctx + frames) * hop]


class Autoencoder(LatentDecoding, nn.Module):
    """Waveform ↔ latent at `hop_length`× compression; circular padding makes it loop-aware."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        mode = cfg.padding
        widths = [cfg.base_channels * m for m in [1, *cfg.channel_mults]]
        self.bottleneck = VAEBottleneck() if cfg.bottleneck == "vae" else PlainBottleneck()
        self.encoder = nn.Sequential(
            weight_norm(Conv1d(cfg.channels, widths[0], 7, padding_mode=mode)),
            *(EncoderBlock(widths[i], widths[i + 1], s, mode) for i, s in enumerate(cfg.strides)),
            SnakeBeta(widths[-1]),
            weight_norm(Conv1d(widths[-1], cfg.latent_dim * self.bottleneck.factor, 3, padding_mode=mode)),
        )
        self.decoder = build_decoder(cfg)

    def latent_length(self, samples: int) -> int:
        """Latent frames for `samples` audio samples (the input is padded up to a whole frame)."""
        return -(-samples // self.hop_length)

    def encode_with_kl(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Audio (batch, channels, samples) → (latents, KL term); what a training objective calls."""
        if x.dim() != 3 or x.shape[1] != self.cfg.channels:
            raise ValueError(
                f"autoencoder expects audio shaped (batch, {self.cfg.channels}, samples), got {tuple(x.shape)}"
            )
        h = self.encoder(pad_to_multiple(x, self.hop_length, self.cfg.padding))
        return self.bottleneck(h)

    def encode(self, x: Tensor) -> Tensor:
        """Audio → latents: a posterior sample in training mode, its mean in eval mode (VAE)."""
        return self.encode_with_kl(x)[0]

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Reconstruct `x` at its exact length; info holds 'kl' and 'latents' for the objective."""
        z, kl = self.encode_with_kl(x)
        return self.decode(z, x.shape[-1]), {"kl": kl, "latents": z}
