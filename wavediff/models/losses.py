"""Autoencoder losses (spectral, mel, adversarial, feature matching) and the reconstruction metrics.

Spectral distances come from auraloss, as in stable-audio-tools. Two choices of ours:
- a signal shorter than the largest FFT size is an error, not a silently skipped resolution,
  so a loss value always means the same thing from one step to the next;
- spectral terms always run in float32, even under bf16/fp16 autocast (log-magnitudes of
  near-silent bins need the range).
The VAE's KL term is computed by the bottleneck itself (`Autoencoder.forward` → info["kl"]).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import auraloss
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchaudio.functional import melscale_fbanks

from wavediff.config import AELossConfig, PreviewLossConfig
from wavediff.errors import ConfigError

# Fixed settings for the reported metrics, so numbers compare across runs whatever the training loss was.
METRIC_FFT_SIZES = (2048, 1024, 512, 256, 128, 64, 32)
METRIC_MEL_FFT_SIZES = (2048, 1024, 512)
METRIC_MEL_BINS = 64


def _float32(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    @functools.wraps(forward)
    def wrapped(self: nn.Module, recon: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(recon.device.type, enabled=False):
            return forward(self, recon.float(), target.float())

    return wrapped


def _check_pair(recon: Tensor, target: Tensor, min_length: int, what: str) -> None:
    if recon.dim() != 3 or recon.shape != target.shape:
        raise ValueError(
            f"{what} compares two (batch, channels, samples) tensors of one shape, "
            f"got {tuple(recon.shape)} and {tuple(target.shape)}"
        )
    if recon.shape[-1] < min_length:
        raise ValueError(
            f"{what} needs at least {min_length} samples (its largest FFT size), got {recon.shape[-1]}: "
            "use longer clips or smaller FFT sizes"
        )


def _check_fft_sizes(fft_sizes: Sequence[int], key: str) -> None:
    if not fft_sizes or any(n < 4 for n in fft_sizes):
        raise ConfigError(
            f"{key} must be a non-empty list of FFT sizes ≥ 4 (the hop is a quarter), got {list(fft_sizes)}"
        )


class STFTDistance(nn.Module):
    """auraloss multi-resolution STFT distance (spectral convergence + log magnitude), hop = FFT/4.

    Channels are compared one by one and averaged; stereo with `mid_side` adds the sum and difference
    signals, each channel and each of mid/side weighted 0.5 as in stable-audio-tools. Perceptual
    (A-)weighting filters both signals once, before every resolution.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int],
        sample_rate: int,
        mid_side: bool = True,
        perceptual_weighting: bool = False,
    ) -> None:
        super().__init__()
        _check_fft_sizes(fft_sizes, "loss.fft_sizes")
        self.max_fft = max(fft_sizes)
        self.mid_side = mid_side
        self.weighting = auraloss.perceptual.FIRFilter("aw", fs=sample_rate) if perceptual_weighting else None
        self.mrstft = auraloss.freq.MultiResolutionSTFTLoss(
            list(fft_sizes), [n // 4 for n in fft_sizes], list(fft_sizes)
        )

    @_float32
    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        _check_pair(recon, target, self.max_fft, "STFT distance")
        b, c, t = recon.shape
        if self.weighting is not None:
            recon, target = self.weighting(recon.reshape(b * c, 1, t), target.reshape(b * c, 1, t))
            recon, target = recon.view(b, c, t), target.view(b, c, t)
        loss = sum(self.mrstft(recon[:, i : i + 1], target[:, i : i + 1]) for i in range(c)) / c
        if self.mid_side and c == 2:
            mid = self.mrstft(recon.sum(1, keepdim=True), target.sum(1, keepdim=True))
            side = self.mrstft(recon[:, :1] - recon[:, 1:], target[:, :1] - target[:, 1:])
            loss = loss + 0.5 * (mid + side)
        return loss


def mel_filterbank(fft_size: int, n_mels: int, sample_rate: int) -> Tensor:
    """librosa's default (Slaney) mel filterbank, (n_mels, fft_size//2 + 1), built with torchaudio.

    A filter narrower than one FFT bin is empty; its band's log-magnitude is then log(0) in both
    signals and the loss NaN (auraloss with 128 bins at FFT 512, 44.1 kHz), so that is refused here.
    """
    fb = _slaney_filters(fft_size, n_mels, sample_rate)
    empty = int((fb.sum(1) == 0).sum())
    if empty:
        fits = max((m for m in range(1, n_mels) if _slaney_filters(fft_size, m, sample_rate).sum(1).all()), default=0)
        raise ConfigError(
            f"{n_mels} mel bins at FFT size {fft_size} and {sample_rate} Hz leave {empty} mel filters empty, "
            f"which makes the mel loss NaN: use at most {fits} bins (loss.mel_bins) or only FFT sizes "
            f"above {fft_size} (loss.mel_fft_sizes)"
        )
    return fb


def _slaney_filters(fft_size: int, n_mels: int, sample_rate: int) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchaudio warns about empty filters; mel_filterbank raises instead
        fb = melscale_fbanks(
            fft_size // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
        )
    return fb.T.contiguous()


class _MelSTFTLoss(auraloss.freq.STFTLoss):
    """auraloss's mel-scale STFT loss with a torchaudio filterbank (auraloss would need librosa)."""

    def __init__(self, fft_size: int, n_mels: int, sample_rate: int) -> None:
        super().__init__(fft_size, fft_size // 4, fft_size, sample_rate=sample_rate)
        self.scale = "mel"
        self.register_buffer("fb", mel_filterbank(fft_size, n_mels, sample_rate)[None])


class MelDistance(nn.Module):
    """Multi-resolution mel-scale STFT distance (auraloss), averaged over FFT sizes; hop = FFT/4."""

    def __init__(self, fft_sizes: Sequence[int], n_mels: int, sample_rate: int) -> None:
        super().__init__()
        _check_fft_sizes(fft_sizes, "loss.mel_fft_sizes")
        if n_mels < 1:
            raise ConfigError(f"loss.mel_bins must be a positive integer, got {n_mels}")
        self.max_fft = max(fft_sizes)
        self.resolutions = nn.ModuleList(_MelSTFTLoss(n, n_mels, sample_rate) for n in fft_sizes)

    @_float32
    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        _check_pair(recon, target, self.max_fft, "mel distance")
        return sum(loss(recon, target) for loss in self.resolutions) / len(self.resolutions)


def waveform_distance(recon: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of the waveforms, in float32: the term that pins time alignment and polarity."""
    with torch.autocast(recon.device.type, enabled=False):
        return F.l1_loss(recon.float(), target.float())


class ReconstructionLoss(nn.Module):
    """The reconstruction part of the autoencoder (and preview decoder) objective: spectral, mel and
    waveform terms; terms with weight 0 are skipped."""

    def __init__(self, cfg: AELossConfig | PreviewLossConfig, sample_rate: int) -> None:
        super().__init__()
        self.stft_weight = cfg.stft_weight
        self.mel_weight = cfg.mel_weight
        self.waveform_weight = cfg.waveform_weight
        self.stft = (
            STFTDistance(cfg.fft_sizes, sample_rate, cfg.mid_side, cfg.perceptual_weighting)
            if cfg.stft_weight
            else None
        )
        self.mel = MelDistance(cfg.mel_fft_sizes, cfg.mel_bins, sample_rate) if cfg.mel_weight else None

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """→ (weighted total, unweighted terms by name: 'stft', 'mel', 'waveform')."""
        terms: dict[str, Tensor] = {}
        total = recon.new_zeros((), dtype=torch.float32)
        if self.stft is not None:
            terms["stft"] = self.stft(recon, target)
            total = total + self.stft_weight * terms["stft"]
        if self.mel is not None:
            terms["mel"] = self.mel(recon, target)
            total = total + self.mel_weight * terms["mel"]
        if self.waveform_weight:
            terms["waveform"] = waveform_distance(recon, target)
            total = total + self.waveform_weight * terms["waveform"]
        return total, terms


# ----------------------------------------------------------------------------- adversarial
# Summed over discriminator scales, as stable-audio-tools does, so its loss weights carry over.


def discriminator_hinge_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor]) -> Tensor:
    """Hinge loss for the discriminator: push real logits above 1 and fake ones below −1."""
    return torch.stack(
        [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True)]
    ).sum()


def generator_hinge_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Hinge loss for the generator: raise the discriminator's logits on reconstructions."""
    return torch.stack([-f.mean() for f in fake_logits]).sum()


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]], fake_features: Sequence[Sequence[Tensor]]
) -> Tensor:
    """Relative L1 between discriminator feature maps (EnCodec): |D(x) − D(x̂)|₁ / |D(x)|₁, mean over layers.

    Real features are detached: this loss trains the autoencoder, never the discriminator.
    """
    per_scale = []
    for real, fake in zip(real_features, fake_features, strict=True):
        layers = [
            (f - r.detach()).abs().mean() / (r.detach().abs().mean() + 1e-8) for r, f in zip(real, fake, strict=True)
        ]
        per_scale.append(torch.stack(layers).mean())
    return torch.stack(per_scale).sum()


# ----------------------------------------------------------------------------- metrics


def si_sdr(estimate: Tensor, reference: Tensor) -> Tensor:
    """Scale-invariant SDR in dB per (batch, channel), zero-mean (auraloss); higher is better."""
    if estimate.dim() != 3 or estimate.shape != reference.shape:
        raise ValueError(
            f"SI-SDR compares two (batch, channels, samples) tensors of one shape, "
            f"got {tuple(estimate.shape)} and {tuple(reference.shape)}"
        )
    return -auraloss.time.SISDRLoss(reduction="none")(estimate.float(), reference.float())


class ReconstructionMetrics(nn.Module):
    """The autoencoder numbers the field reports: MR-STFT distance, mel distance, SI-SDR (dB).

    Settings are fixed (METRIC_*; left/right only, no perceptual weighting) so values compare
    across runs; clips need at least 2048 samples.
    """

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.stft = STFTDistance(METRIC_FFT_SIZES, sample_rate, mid_side=False)
        self.mel = MelDistance(METRIC_MEL_FFT_SIZES, METRIC_MEL_BINS, sample_rate)

    @torch.no_grad()
    def forward(self, recon: Tensor, target: Tensor) -> dict[str, float]:
        """Batch means: {'stft': …, 'mel': …, 'si_sdr': …}."""
        return {
            "stft": self.stft(recon, target).item(),
            "mel": self.mel(recon, target).item(),
            "si_sdr": si_sdr(recon, target).mean().item(),
        }
