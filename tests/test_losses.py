"""Autoencoder losses, the STFT discriminator and the reconstruction metrics, on short real-sized signals."""

from __future__ import annotations

import math

import pytest
import torch

from wavediff.config import AELossConfig, AERecipe, AutoencoderConfig, load_recipe
from wavediff.errors import ConfigError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.discriminator import MultiScaleSTFTDiscriminator
from wavediff.models.losses import (
    MelDistance,
    ReconstructionLoss,
    ReconstructionMetrics,
    STFTDistance,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    mel_filterbank,
    si_sdr,
)

SR = 16000
SMALL = dict(fft_sizes=[1024, 256, 64], mel_fft_sizes=[1024, 512], mel_bins=32, disc_fft_sizes=[512, 128])


def music(channels: int = 2, samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """A stereo chord with a decaying envelope and a little noise: spectrally rich, different per channel."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    notes = [220.0, 277.2, 329.6, 440.0]
    wave = sum(torch.sin(2 * math.pi * f * t) for f in notes) * torch.exp(-3 * t)
    out = torch.stack([wave * (0.6 + 0.2 * c) for c in range(channels)])
    return (0.2 * out + 0.01 * torch.randn(channels, samples, generator=g))[None]


@pytest.fixture(scope="module")
def loss() -> ReconstructionLoss:
    return ReconstructionLoss(AELossConfig(**SMALL), SR)


def test_reconstruction_loss_is_zero_for_identical_and_grows_with_error(loss: ReconstructionLoss) -> None:
    x = music()
    total, terms = loss(x, x)
    assert set(terms) == {"stft", "mel"}
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    small, _ = loss(x + 0.01 * noise, x)
    large, _ = loss(x + 0.1 * noise, x)
    assert 0 < small < large
    assert torch.isfinite(total)


@pytest.mark.parametrize("recipe", ["ae-tiny-cpu", "ae-44k-cpu"])
def test_cpu_recipes_losses_see_what_magnitude_spectra_cannot(recipe: str) -> None:
    """Magnitude spectra are blind to polarity and nearly blind to a delay shorter than a frame, so a
    spectral-only loss lets each run settle on its own delay: val SI-SDR from −17 to +7 dB across seeds
    of ae-tiny-cpu (BENCHMARKS.md, "Autoencoder"). The recipes' waveform term sees both."""
    cfg = load_recipe(recipe, AERecipe)
    loss = ReconstructionLoss(cfg.loss, cfg.sample_rate)
    x = music(cfg.model.channels, max(cfg.loss.fft_sizes) * 4)
    spectral = sum(term for name, term in loss(-x, x)[1].items() if name != "waveform")
    assert spectral.item() == pytest.approx(0.0, abs=1e-5)  # what the spectral terms alone would give
    total, terms = loss(-x, x)
    assert terms["waveform"] > 0.5 * x.abs().mean() and total > 0.1
    late = torch.roll(x, cfg.sample_rate * 3 // 1000, -1)  # 3 ms late: what seed 0 learned
    assert loss(late, x)[1]["waveform"] > 0.5 * x.abs().mean()


def test_losses_are_finite_on_silence(loss: ReconstructionLoss) -> None:
    silence = torch.zeros(1, 2, 4096)
    for recon, target in [(silence, silence), (music(), silence), (silence, music())]:
        total, terms = loss(recon, target)
        assert torch.isfinite(total), terms
    assert loss(silence, silence)[0].item() == 0.0


def test_stereo_compares_mid_and_side_too() -> None:
    x = music()
    flipped = x * torch.tensor([1.0, -1.0])[None, :, None]  # same |STFT| per channel, different mid/side
    lr_only = STFTDistance([512, 128], SR, mid_side=False)
    with_ms = STFTDistance([512, 128], SR, mid_side=True)
    assert lr_only(flipped, x).item() == pytest.approx(0.0, abs=1e-6)
    assert with_ms(flipped, x) > 0.1
    # The mid/side part is weighted 0.5 each, on top of the mean over left and right.
    y = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    mono = lr_only.mrstft
    mid = mono(y.sum(1, keepdim=True), x.sum(1, keepdim=True))
    side = mono(y[:, :1] - y[:, 1:], x[:, :1] - x[:, 1:])
    assert with_ms(y, x).item() == pytest.approx((lr_only(y, x) + 0.5 * (mid + side)).item(), rel=1e-5)


def test_perceptual_weighting_discounts_errors_the_ear_barely_hears() -> None:
    x = music()
    t = torch.arange(x.shape[-1]) / SR
    hum = x + 0.05 * torch.sin(2 * math.pi * 60 * t)  # A-weighting: about −26 dB at 60 Hz
    whine = x + 0.05 * torch.sin(2 * math.pi * 3000 * t)  # and about +1 dB at 3 kHz
    plain = STFTDistance([512, 128], SR, perceptual_weighting=False)
    weighted = STFTDistance([512, 128], SR, perceptual_weighting=True)
    assert weighted(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert plain(hum, x) > 0.5 * plain(whine, x)
    assert weighted(hum, x) < 0.2 * weighted(whine, x)


def test_spectral_losses_give_gradients_in_float32_under_autocast(loss: ReconstructionLoss) -> None:
    x = music()
    recon = (x + 0.05 * torch.randn_like(x)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = loss(recon, x)
    assert all(t.dtype == torch.float32 for t in terms.values())
    total.backward()
    assert torch.isfinite(recon.grad).all() and recon.grad.abs().sum() > 0


def test_too_many_mel_bins_for_an_fft_size_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match=r"128 mel bins at FFT size 512 and 44100 Hz leave \d+ mel filters empty"):
        ReconstructionLoss(AELossConfig(mel_bins=128), 44100)
    with pytest.raises(ConfigError, match="loss.mel_bins"):
        MelDistance([256], 64, 44100)
    # The largest count the message suggests really has no empty filter, and stays finite on silence.
    fb = mel_filterbank(512, 91, 44100)
    assert fb.shape == (91, 257) and (fb.sum(1) > 0).all()
    silence = torch.zeros(1, 1, 1024)
    assert torch.isfinite(MelDistance([512], 91, 44100)(silence, music(1, 1024)))


def test_signals_shorter_than_the_largest_fft_error_clearly(loss: ReconstructionLoss) -> None:
    short = torch.zeros(1, 2, 1000)
    with pytest.raises(ValueError, match="needs at least 1024 samples"):
        loss(short, short)
    with pytest.raises(ValueError, match="one shape"):
        loss(music(), music(1))
    with pytest.raises(ConfigError, match="loss.fft_sizes"):
        STFTDistance([], SR)


def test_discriminator_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator.from_config(AELossConfig(**SMALL, disc_channels=8), channels=2)
    x = music(samples=2048).repeat(3, 1, 1).requires_grad_()
    logits, features = disc(x)
    assert len(logits) == len(features) == 2
    for n_fft, scale_logits, scale_features in zip([512, 128], logits, features):
        frames, bins = (2048 - n_fft) // (n_fft // 4) + 1, n_fft // 2 + 1
        assert scale_logits.shape == (3, 1, frames, math.ceil(bins / 8))  # 3 convs stride 2 in frequency
        assert len(scale_features) == 5
        assert scale_features[0].shape == (3, 8, frames, bins)
    sum(logit.mean() for logit in logits).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs at least 512 samples"):
        disc(torch.zeros(1, 2, 400))


def test_hinge_losses() -> None:
    confident = [torch.full((2, 1, 4, 4), 2.0)] * 3
    unsure = [torch.zeros(2, 1, 4, 4)] * 3
    assert discriminator_hinge_loss(confident, [-c for c in confident]).item() == 0.0
    assert discriminator_hinge_loss(unsure, unsure).item() == pytest.approx(3 * 2.0)  # summed over scales
    fooled = [-c for c in confident]
    assert generator_hinge_loss(confident) < generator_hinge_loss(unsure) < generator_hinge_loss(fooled)


def test_feature_matching_is_relative_and_trains_only_the_fake_side() -> None:
    real = [[torch.randn(2, 4, 5, 6) * 100, torch.randn(2, 4, 5, 3)] for _ in range(2)]
    assert feature_matching_loss(real, real).item() == 0.0
    fake = [[(f * 1.1).requires_grad_() for f in scale] for scale in real]
    for scale in real:
        for f in scale:
            f.requires_grad_()
    value = feature_matching_loss(real, fake)
    assert value.item() == pytest.approx(2 * 0.1, rel=1e-4)  # 10% off at every layer, independent of scale
    value.backward()
    assert all(f.grad is not None for scale in fake for f in scale)
    assert all(f.grad is None for scale in real for f in scale)
    silent = [[torch.zeros(1, 2, 3, 3)]]
    assert torch.isfinite(feature_matching_loss(silent, [[torch.ones(1, 2, 3, 3)]]))


def test_si_sdr_is_high_for_identical_low_for_noise_and_scale_invariant() -> None:
    x = music()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    same = si_sdr(x, x)
    assert same.shape == (1, 2) and (same > 60).all()
    assert (si_sdr(0.3 * x, x) > 60).all()
    assert (si_sdr(noise, x) < 0).all()
    assert (si_sdr(x + 0.1 * x.std(-1, keepdim=True) * noise, x) - 20).abs().max() < 1.0  # 10% noise ≈ 20 dB


def test_reconstruction_metrics() -> None:
    metrics = ReconstructionMetrics(SR)
    x = music()
    perfect = metrics(x, x)
    assert set(perfect) == {"stft", "mel", "si_sdr"}
    assert perfect["stft"] == pytest.approx(0.0, abs=1e-6) and perfect["mel"] == pytest.approx(0.0, abs=1e-6)
    noisy = metrics(x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5)), x)
    assert noisy["stft"] > 0.1 and noisy["mel"] > 0.01 and noisy["si_sdr"] < perfect["si_sdr"]


def test_one_autoencoder_training_step_through_every_loss() -> None:
    """The pieces fit as a training objective will use them: recon + KL + adversarial + feature matching."""
    torch.manual_seed(0)
    cfg = AELossConfig(**SMALL, disc_channels=8)
    model = Autoencoder(AutoencoderConfig(base_channels=8, channel_mults=[1, 2], strides=[4, 4], latent_dim=4))
    disc = MultiScaleSTFTDiscriminator.from_config(cfg, channels=2)
    recon_loss = ReconstructionLoss(cfg, SR)
    x = music(samples=2048 + 7)
    recon, info = model(x)
    real_logits, real_features = disc(x)
    fake_logits, fake_features = disc(recon)
    spectral, _ = recon_loss(recon, x)
    total = (
        spectral
        + cfg.kl_weight * info["kl"]
        + cfg.adversarial_weight * generator_hinge_loss(fake_logits)
        + cfg.feature_weight * feature_matching_loss(real_features, fake_features)
    )
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    disc.zero_grad()
    fake_logits, _ = disc(recon.detach())
    discriminator_hinge_loss(real_logits, fake_logits).backward()
    assert all(p.grad is not None for p in disc.parameters())
