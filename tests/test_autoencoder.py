"""The waveform autoencoder: exact lengths, bottlenecks, circular (seamless) loops, size, gradients."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from wavediff.config import AutoencoderConfig
from wavediff.errors import ConfigError
from wavediff.models.autoencoder import Autoencoder, VAEBottleneck
from wavediff.models.blocks import Conv1d, SnakeBeta, _Snake, count_parameters


def tiny(strides: list[int], **overrides) -> AutoencoderConfig:
    fields = dict(channels=2, base_channels=8, channel_mults=[1] * len(strides), strides=strides, latent_dim=4)
    return AutoencoderConfig(**{**fields, **overrides})


def loop(samples: int, channels: int = 1, periods: tuple[int, ...] = (3, 17, 40)) -> torch.Tensor:
    """A signal that repeats exactly every `samples` samples (whole periods only)."""
    t = torch.arange(samples) / samples
    wave = sum(torch.sin(2 * math.pi * p * t + p) / (i + 1) for i, p in enumerate(periods))
    return wave.expand(1, channels, samples).clone()


def same_weights(model: Autoencoder, padding: str) -> Autoencoder:
    other = Autoencoder(dataclasses.replace(model.cfg, padding=padding)).eval()
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("strides", [[2, 2], [4, 4], [2, 4, 8], [2, 4, 4, 8, 8]], ids=["4x", "16x", "64x", "2048x"])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_any_length_comes_back_exactly(strides: list[int], padding: str) -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny(strides, padding=padding)).eval()
    assert model.hop_length == math.prod(strides)
    for samples in (1, 37, 1001, model.hop_length + 5):
        x = torch.randn(2, 2, samples)
        with torch.no_grad():
            recon, info = model(x)
        assert recon.shape == x.shape
        assert info["latents"].shape == (2, 4, model.latent_length(samples))
        assert model.latent_length(samples) == math.ceil(samples / model.hop_length)
        assert torch.isfinite(recon).all()


def test_decode_default_length_and_bad_shapes() -> None:
    model = Autoencoder(tiny([4, 4])).eval()
    z = torch.randn(1, 4, 5)
    assert model.decode(z).shape == (1, 2, 80)
    assert model.decode(z, 71).shape == (1, 2, 71)
    with pytest.raises(ValueError, match="cannot decode 81 samples from 5 frames"):
        model.decode(z, 81)
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        model.encode(torch.randn(1, 1, 64))
    with pytest.raises(ValueError, match=r"\(batch, 4, frames\)"):
        model.decode(torch.randn(1, 3, 5))


def test_vae_samples_in_training_and_gives_the_mean_in_eval() -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny([4, 4]))
    x = torch.randn(1, 2, 256)
    model.train()
    assert not torch.equal(model.encode(x), model.encode(x))
    model.eval()
    mean = model.encode(x)
    assert torch.equal(mean, model.encode(x))
    h = model.encoder(x)
    assert torch.allclose(mean, h.chunk(2, dim=1)[0])
    _, info = model(x)
    assert info["kl"].ndim == 0 and info["kl"] > 0


def test_plain_bottleneck_is_deterministic_with_zero_kl() -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny([4, 4], bottleneck="plain")).train()
    x = torch.randn(1, 2, 256)
    z, kl = model.encode_with_kl(x)
    assert torch.equal(z, model.encode(x))
    assert torch.equal(z, model.encoder(x))
    assert kl.item() == 0.0


def test_kl_is_zero_for_a_standard_normal_posterior_and_positive_otherwise() -> None:
    vae = VAEBottleneck()
    std_one = math.log(math.expm1(1 - 1e-4))  # softplus⁻¹ so that std = softplus + 1e-4 = 1
    h = torch.cat([torch.zeros(2, 4, 10), torch.full((2, 4, 10), std_one)], dim=1)
    assert vae(h)[1].abs().item() < 1e-5
    shifted = h.clone()
    shifted[:, :4] = 0.5
    assert vae(shifted)[1].item() == pytest.approx(4 * 0.25, rel=1e-3)  # Σ μ² over 4 channels
    extreme = torch.cat([torch.full((1, 4, 3), 1e3), torch.full((1, 4, 3), -1e3)], dim=1)
    assert torch.isfinite(vae(extreme)[1])


@pytest.mark.parametrize("strides", [[4, 4], [2, 4, 8]], ids=["16x", "64x"])
def test_circular_mode_is_shift_equivariant(strides: list[int]) -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny(strides, channels=1, padding="circular")).eval()
    hop = model.hop_length
    x = loop(8 * hop)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
        for k in (1, 3):
            zr = model.encode(torch.roll(x, k * hop, -1))
            assert torch.allclose(zr, torch.roll(z, k, -1), atol=1e-5)
            assert torch.allclose(model.decode(zr), torch.roll(y, k * hop, -1), atol=1e-5)
        # The same weights with zero padding are not equivariant: the test can tell the difference.
        zeros = same_weights(model, "zeros")
        yz = zeros(x)[0]
        assert not torch.allclose(zeros(torch.roll(x, hop, -1))[0], torch.roll(yz, hop, -1), atol=1e-3)


def test_circular_loop_has_no_seam() -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny([4, 4], channels=1, channel_mults=[1, 2], padding="circular")).eval()
    x = loop(512)
    zeros = same_weights(model, "zeros")
    with torch.no_grad():
        y = model(x)[0]
        # Played back-to-back forever, a zero-padded model reaches a steady state in the middle of the
        # repeats; the circular model's output for one loop is exactly that steady state.
        steady = zeros(x.repeat(1, 1, 5))[0][..., 2 * 512 : 3 * 512]
        assert torch.allclose(y, steady, atol=1e-5)
        assert not torch.allclose(zeros(x)[0], steady, atol=1e-3)
    # And the wrap point is as smooth as the inside of the loop.
    typical = y.diff(dim=-1).abs().mean()
    assert (y[..., 0] - y[..., -1]).abs().item() < 3 * typical


def test_odd_lengths_in_circular_mode_tile_rather_than_pad_with_silence() -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny([4, 4], channels=1, padding="circular")).eval()
    x = loop(16 * 7 + 3)
    with torch.no_grad():
        z = model.encode(x)
        tiled = torch.cat([x, x[..., :13]], dim=-1)  # 115 samples tiled up to 128
        assert torch.equal(z, model.encode(tiled))


def test_default_config_is_the_stable_audio_open_vae() -> None:
    with torch.device("meta"):
        model = Autoencoder(AutoencoderConfig())
    assert model.hop_length == 2048
    assert model.latent_dim == 64
    assert 150e6 < count_parameters(model) < 162e6  # Oobleck: ~156M


def test_mismatched_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="model.channel_mults has 2 entries but model.strides has 3"):
        Autoencoder(tiny([2, 2, 2], channel_mults=[1, 2]))
    with pytest.raises(ConfigError, match="model.strides must be positive"):
        Autoencoder(tiny([2, 0]))


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_gradients_reach_every_parameter(padding: str) -> None:
    torch.manual_seed(0)
    model = Autoencoder(tiny([2, 4], channel_mults=[2, 4], padding=padding)).train()
    x = torch.randn(2, 2, 301)
    recon, info = model(x)
    (F.l1_loss(recon, x) + 1e-4 * info["kl"]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def snake_formula(x: torch.Tensor, module: SnakeBeta) -> torch.Tensor:
    """SnakeBeta as Oobleck writes it, through autograd's generic graph."""
    alpha, beta = module.log_alpha.exp()[:, None], module.log_beta.exp()[:, None]
    return x + 1.0 / (beta + 1e-9) * torch.sin(alpha * x).pow(2)


def test_snake_derivatives_match_the_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 19, dtype=torch.double, requires_grad=True)
    alpha = (torch.rand(3, 1, dtype=torch.double) + 0.5).requires_grad_()
    inv_beta = (torch.rand(3, 1, dtype=torch.double) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(_Snake.apply, (x, alpha, inv_beta))

    module = SnakeBeta(3).double()
    with torch.no_grad():
        module.log_alpha.copy_(torch.tensor([-1.0, 0.0, 0.7]))
        module.log_beta.copy_(torch.tensor([0.4, -0.3, 0.0]))
    ours, theirs = module(x), snake_formula(x, module)
    assert torch.allclose(ours, theirs)
    grads = torch.autograd.grad((ours * theirs.detach()).sum(), [x, module.log_alpha, module.log_beta])
    expected = torch.autograd.grad((theirs * theirs.detach()).sum(), [x, module.log_alpha, module.log_beta])
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want)
    with torch.no_grad():  # the inference path: one buffer, the same values
        assert torch.allclose(module(x), theirs)
        assert not torch.equal(module(x), x)  # it does something


@pytest.mark.parametrize("kernel, stride, dilation, padding", [(7, 1, 3, None), (8, 4, 1, (2, 2)), (3, 1, 1, (2, 0))])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_conv_pads_as_its_explicit_pads_say(kernel: int, stride: int, dilation: int, padding, mode: str) -> None:
    torch.manual_seed(0)
    conv = Conv1d(3, 5, kernel, stride=stride, dilation=dilation, padding=padding, padding_mode=mode)
    x = torch.randn(2, 3, 64)
    left, right = conv.pads
    wrapped = torch.cat([x[..., x.shape[-1] - left :], x, x[..., :right]], -1)
    padded = F.pad(x, (left, right)) if mode == "zeros" else wrapped
    want = F.conv1d(padded, conv.weight, conv.bias, stride, 0, dilation)
    assert torch.allclose(conv(x), want, atol=1e-6)
    other = "circular" if mode == "zeros" else "zeros"  # the per-call override
    padded = wrapped if other == "circular" else F.pad(x, (left, right))
    assert torch.allclose(conv(x, other), F.conv1d(padded, conv.weight, conv.bias, stride, 0, dilation), atol=1e-6)
