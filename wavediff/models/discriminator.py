"""EnCodec-style multi-scale STFT discriminator: the adversary of the autoencoder objective.

Each scale looks at a complex STFT (real and imaginary parts as channels, so phase counts too)
through weight-normed 2D convs that stride along frequency only; its feature maps feed the
feature-matching loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from wavediff.config import AELossConfig


def _same(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTDiscriminator(nn.Module):
    """One scale: STFT with window n_fft and hop n_fft/4, then 2D convs over (frames, frequency)."""

    def __init__(self, channels: int, filters: int, n_fft: int, dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft = n_fft
        window = torch.hann_window(n_fft)
        self.register_buffer("window", window / window.pow(2).sum().sqrt(), persistent=False)
        kernel = (3, 9)
        convs = [nn.Conv2d(2 * channels, filters, kernel, padding=_same(kernel))]
        convs += [
            nn.Conv2d(filters, filters, kernel, stride=(1, 2), dilation=(d, 1), padding=_same(kernel, (d, 1)))
            for d in dilations
        ]
        convs.append(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.post = weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, c, t = x.shape
        if t < self.n_fft:
            raise ValueError(f"discriminator FFT size {self.n_fft} needs at least {self.n_fft} samples, got {t}")
        spec = torch.stft(
            x.reshape(b * c, t).float(),
            self.n_fft,
            self.n_fft // 4,
            window=self.window,
            center=False,
            return_complex=True,
        )
        spec = spec.view(b, c, *spec.shape[-2:])
        z = torch.cat([spec.real, spec.imag], dim=1).transpose(-1, -2)  # (b, 2c, frames, freq)
        features = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            features.append(z)
        return self.post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One STFTDiscriminator per FFT size; returns logits and feature maps per scale."""

    def __init__(
        self, channels: int, filters: int = 32, fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128)
    ) -> None:
        super().__init__()
        if not fft_sizes or any(n < 4 for n in fft_sizes):
            raise ValueError(f"discriminator FFT sizes must be a non-empty list of sizes ≥ 4, got {list(fft_sizes)}")
        self.scales = nn.ModuleList(STFTDiscriminator(channels, filters, n) for n in fft_sizes)

    @classmethod
    def from_config(cls, cfg: AELossConfig, channels: int) -> MultiScaleSTFTDiscriminator:
        return cls(channels, cfg.disc_channels, cfg.disc_fft_sizes)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Audio (batch, channels, samples) → ([logits per scale], [[feature maps] per scale])."""
        outputs = [scale(x) for scale in self.scales]
        return [logits for logits, _ in outputs], [features for _, features in outputs]
