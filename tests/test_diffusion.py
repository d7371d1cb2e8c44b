"""LoopDiffusion: preconditioning, the training loss, noise levels, and decoding loops."""

from __future__ import annotations

import math

import pytest
import torch

from wavediff.config import AutoencoderConfig, ConditioningConfig, DiffusionConfig, DiffusionRecipe, UNetConfig
from wavediff.errors import ConfigError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import CLOCK_CHANNELS, LoopDiffusion, tempo_clock, unconditional


def recipe(**diffusion) -> DiffusionRecipe:
    return DiffusionRecipe(
        sample_rate=8000,
        channels=4,
        model=UNetConfig(base_channels=8, channel_mults=[1, 2], attention_levels=[1], head_channels=8),
        conditioning=ConditioningConfig(dim=8, genres=["a", "b"]),
        diffusion=DiffusionConfig(**{"sigma_data": 0.5, **diffusion}),
    )


def model(**diffusion) -> LoopDiffusion:
    torch.manual_seed(0)
    return LoopDiffusion(recipe(**diffusion))


def conds(n: int = 2) -> Conditions:
    return Conditions(torch.tensor([0, 1] * (n // 2)), torch.full((n,), 128.0), torch.full((n,), 1.875), torch.ones(n))


def test_untrained_model_is_the_karras_skip_path():
    m = model()
    x, sigma = torch.randn(2, 4, 24), torch.tensor([0.5, 3.0])
    expected = x / (sigma[:, None, None] ** 2 + 1)  # c_skip with σ_data = 1 (the data is normalized)
    torch.testing.assert_close(m.denoise(x, sigma, conds()), expected)


def test_v_objective_uses_k_diffusion_v_scalings():
    m = model(objective="v", sigma_sampling="v-diffusion")
    c_skip, c_out, c_in = m.precond.get_scalings(torch.tensor([1.0]))
    assert c_out.item() < 0 and c_skip.item() == pytest.approx(0.5)
    loss = m(torch.randn(2, 4, 24), conds())
    assert loss.shape == (2,) and torch.isfinite(loss).all()


@pytest.mark.parametrize("weighting", ["karras", "soft-min-snr", "snr"])
def test_loss_is_finite_and_reaches_every_parameter(weighting):
    m = model(weighting=weighting)
    for p in m.unet.parameters():  # leave the zero init so gradients reach every layer
        p.data.add_(torch.randn_like(p) * 0.01)
    loss = m(torch.randn(4, 4, 24), conds(4))
    loss.mean().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert torch.isfinite(loss).all()


def test_padding_after_frames_is_not_scored():
    m = model()  # untrained: the network outputs 0 whatever its input, so only the target matters
    data = torch.randn(2, 4, 24)
    garbage = data.clone()
    garbage[..., 16:] = 1e3
    frames = torch.tensor([16, 16])
    torch.manual_seed(1)
    clean = m(data, conds(), frames)
    torch.manual_seed(1)
    dirty = m(garbage, conds(), frames)
    torch.testing.assert_close(clean, dirty)
    torch.manual_seed(1)
    assert not torch.allclose(m(garbage, conds()), clean)


@pytest.mark.parametrize(
    "sampling,check",
    [
        (
            "log-normal",
            lambda s: abs(s.log().median().item() - (-0.5)) < 0.05 and abs(s.log().std().item() - 1.2) < 0.05,
        ),
        (
            "log-uniform",
            lambda s: (
                s.min() >= 0.01 and s.max() <= 80.0 and abs(s.log().mean().item() - math.log(math.sqrt(0.8))) < 0.1
            ),
        ),
        ("v-diffusion", lambda s: s.min() >= 0.01 and s.max() <= 80.0),
    ],
)
def test_noise_level_distributions(sampling, check):
    torch.manual_seed(0)
    assert check(model(sigma_sampling=sampling).sample_sigmas(20000, "cpu"))


def test_conditioning_steers_the_output_and_unknown_means_null():
    m = model()
    for p in m.unet.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    x, sigma = torch.randn(2, 4, 24), torch.tensor([1.0, 1.0])
    a = m.denoise(x, sigma, conds())
    b = m.denoise(
        x, sigma, Conditions(torch.tensor([1, 0]), torch.full((2,), 90.0), torch.full((2,), 4.0), torch.ones(2))
    )
    assert not torch.allclose(a, b)
    all_dropped = torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(m.denoise(x, sigma, conds(), all_dropped), m.denoise(x, sigma, unconditional(2, "cpu")))


def test_data_is_normalized_by_sigma_data():
    m = model()
    torch.testing.assert_close(m.to_model(torch.ones(1, 4, 3)), torch.full((1, 4, 3), 2.0))
    torch.testing.assert_close(m.decode(torch.ones(1, 4, 8)), torch.full((1, 4, 8), 0.5))  # a waveform model


MEAN, STD = [0.0, 1.2, -0.5, 0.1], [0.7, 3.0, 1.0, 2.5]


def test_channel_normalization_centres_and_scales_each_channel():
    m = model(normalize="channel", channel_mean=MEAN, channel_std=STD, sigma_data=1.0)
    data = torch.randn(8, 4, 500) * torch.tensor(STD)[:, None] + torch.tensor(MEAN)[:, None]
    x = m.to_model(data)
    assert x.mean(dim=(0, 2)).abs().max() < 0.05 and (x.std(dim=(0, 2)) - 1).abs().max() < 0.05
    torch.testing.assert_close(m.from_model(x), data)
    torch.testing.assert_close(m.decode(torch.zeros(1, 4, 3)), torch.tensor(MEAN)[None, :, None].expand(1, 4, 3))
    with pytest.raises(ConfigError, match="channel_mean/channel_std must be resolved"):
        model(normalize="channel", channel_mean=MEAN[:2], channel_std=STD[:2])


def test_the_padding_reaches_the_network_as_zero_in_the_models_space():
    """A shifted channel's zero padding is −mean/std in the model's space: it would feed the network a
    step the data never has. It is set back to zero, so what pads a window does not matter."""
    m = model(normalize="channel", channel_mean=MEAN, channel_std=STD, sigma_data=1.0)
    for p in m.unet.parameters():  # a network whose output depends on its whole input
        p.data.add_(torch.randn_like(p) * 0.05)
    data, frames = torch.randn(2, 4, 24), torch.tensor([16, 16])
    padded = [data.clone(), data.clone()]
    padded[0][..., 16:] = 0.0
    padded[1][..., 16:] = torch.tensor(MEAN)[:, None]
    losses = []
    for x in padded:
        torch.manual_seed(1)
        losses.append(m(x, conds(), frames))
    torch.testing.assert_close(losses[0], losses[1])


def test_loop_decoding_with_a_non_circular_decoder_matches_an_endless_loop():
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4))
    r = recipe()
    r.autoencoder = "ae"
    m = LoopDiffusion(r, ae)
    z = torch.randn(1, 4, 40)
    looped = m.decode(z, loop=True)
    endless = m.decode(torch.cat([z] * 5, dim=-1))[..., 2 * 40 * 8 : 3 * 40 * 8]  # the middle copy of many
    torch.testing.assert_close(looped, endless, atol=1e-5, rtol=1e-4)
    plain = m.decode(z)
    assert (plain[..., :8] - endless[..., :8]).abs().max() > 1e-4  # zero padding differs at the ends


def test_the_autoencoder_stays_frozen():
    ae = Autoencoder(AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4))
    r = recipe()
    r.autoencoder = "ae"
    m = LoopDiffusion(r, ae).train()
    assert not m.autoencoder.training
    assert not any(p.requires_grad for p in m.autoencoder.parameters())


def test_unresolved_or_inconsistent_recipes_are_refused():
    with pytest.raises(ConfigError, match="sigma_data"):
        LoopDiffusion(recipe(sigma_data=0.0))
    r = recipe()
    r.autoencoder = "somewhere"
    with pytest.raises(ConfigError, match="autoencoder"):
        LoopDiffusion(r)
    ae = Autoencoder(AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=3))
    with pytest.raises(ConfigError, match="channels is 4"):
        LoopDiffusion(r, ae)


def fourier_shift(x: torch.Tensor, shift: float) -> torch.Tensor:
    """x (..., N) moved `shift` frames later around its period, by band-limited interpolation (N odd)."""
    n = x.shape[-1]
    phase = torch.exp(-2j * math.pi * torch.arange(n // 2 + 1) * shift / n)
    return torch.fft.irfft(torch.fft.rfft(x.double()) * phase, n=n).to(x.dtype)


def circular_model(clock: bool = False) -> LoopDiffusion:
    r = recipe()
    r.model = UNetConfig(base_channels=8, channel_mults=[1, 2, 2], attention_levels=[2], head_channels=8)
    r.conditioning.tempo_clock = clock  # the clock fixes a phase origin: rotations of the loop then differ
    torch.manual_seed(0)
    m = LoopDiffusion(r)
    for p in m.unet.parameters():  # leave the zero init: the output must depend on the input
        p.data.add_(torch.randn_like(p) * 0.05)
    return m


def test_circular_denoising_wraps_a_period_of_any_length():
    """A period the U-Net cannot halve exactly runs resampled to the nearest length it can: the result
    is a function on the loop, rotated with it by every shift that is a whole U-Net grid step there."""
    m = circular_model()
    assert m.factor == 4 and [m.loop_frames(t) for t in (37, 38, 39, 40, 2)] == [36, 40, 40, 40, 4]
    x, sigma = torch.randn(2, 4, 37), torch.tensor([1.0, 0.3])
    out = m.denoise(x, sigma, conds(), circular=True, tile=False)
    assert out.shape == x.shape
    for grid_steps in (1, 2, 8):  # a grid step of the 36-frame run is 37/36 frames of the loop
        shift = grid_steps * m.factor * 37 / 36
        torch.testing.assert_close(
            m.denoise(fourier_shift(x, shift), sigma, conds(), circular=True, tile=False),
            fourier_shift(out, shift),
            atol=1e-4,
            rtol=1e-4,
        )
    x = torch.randn(2, 4, 40)  # a period the U-Net halves exactly runs as it is: whole-frame rotations
    out = m.denoise(x, sigma, conds(), circular=True, tile=False)
    torch.testing.assert_close(m.denoise(x.roll(8, -1), sigma, conds(), circular=True, tile=False), out.roll(8, -1))
    plain = m.denoise(x, sigma, conds())
    assert not torch.allclose(plain.roll(8, -1), m.denoise(x.roll(8, -1), sigma, conds()), atol=1e-4)


def test_a_wrapped_loop_call_costs_one_plain_call():
    """A loop period of any length runs once through the U-Net, at most factor/2 frames longer than
    itself (not as copies tiled up to a multiple of the factor: up to factor× the work)."""
    m = circular_model()
    seen: list[tuple[int, ...]] = []
    hook = m.unet.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    try:
        for period in (37, 38, 39, 41):
            m.denoise(torch.randn(2, 4, period), torch.ones(2), conds(), circular=True, tile=False)
    finally:
        hook.remove()
    assert [s[0] for s in seen] == [2] * 4
    assert [s[-1] for s in seen] == [36, 40, 40, 40]


def test_a_resampled_loop_period_is_conditioned_on_the_tempo_and_length_the_network_sees():
    """A 37-frame period runs as 36 frames: 37/36 times faster and 36/37 as long, and the network is told
    so; an unknown tempo stays unknown, and a period the U-Net halves exactly keeps its values."""
    m = circular_model()
    told: list = []
    network = m._network
    m._network = lambda x, sigma, cond, drop, circular: told.append(cond) or network(x, sigma, cond, drop, circular)
    c = conds()
    c.bpm = torch.tensor([120.0, 0.0])
    m.denoise(torch.randn(2, 4, 37), torch.ones(2), c, circular=True, tile=False)
    torch.testing.assert_close(told[-1].bpm, torch.tensor([120.0 * 37 / 36, 0.0]))
    torch.testing.assert_close(told[-1].seconds, c.seconds * 36 / 37)
    m.denoise(torch.randn(2, 4, 40), torch.ones(2), c, circular=True, tile=False)
    assert told[-1] is c


def test_a_tiled_loop_runs_as_the_training_windows_ran():
    """The period repeated to at least the training window and two periods, a multiple of the factor,
    zero-padded at the ends as in training, with the loop's own tempo clock (beats fitted to the period) tiled."""
    m = circular_model(clock=True)
    m.recipe.data.sample_size = 48
    seen: list = []
    hook = m.unet.register_forward_pre_hook(lambda _, a, kw: seen.append((a[0], kw["circular"])), with_kwargs=True)
    try:
        for period in (20, 37, 60):
            m.denoise(torch.randn(2, 4, period), torch.ones(2), conds(), circular=True)
    finally:
        hook.remove()
    assert [(x.shape[-1], circular) for x, circular in seen] == [(48, False), (76, False), (120, False)]
    for (x, _), period in zip(seen, (20, 37, 60)):
        clock = x[:, -CLOCK_CHANNELS:]
        torch.testing.assert_close(clock[..., period : 2 * period], clock[..., :period])
        torch.testing.assert_close(clock[..., :period], tempo_clock(period, conds().bpm, 8000.0, 4, True))
    assert m.network_frames(37, True) == 76 and m.network_frames(37, True, tile=False) == 36


@torch.no_grad()
def test_a_tiled_loop_is_denoised_as_amid_its_own_repetition():
    """Training windows hold a loop repeated, so that is where the network's estimate of a loop is
    trusted: a tiled loop's comes within a few percent of what it makes of the loop amid many copies of
    itself (closer the longer the window), where one zero-padded period is far off."""
    m = circular_model()
    x, sigma = torch.randn(2, 4, 40), torch.tensor([1.0, 0.3])
    skip = x / (sigma[:, None, None] ** 2 + 1)  # the network's part of D is D − c_skip·x
    amid = m.denoise(x.repeat(1, 1, 7), sigma, conds())[..., 120:160] - skip

    def error(d: torch.Tensor) -> float:
        return float((d - skip - amid).norm() / amid.norm())

    single = error(m.denoise(x, sigma, conds()))
    errors = []
    for window in (48, 120):
        m.recipe.data.sample_size = window
        errors.append(error(m.denoise(x, sigma, conds(), circular=True)))
    assert errors[1] < errors[0] < 0.25 * single, (errors, single)


def test_the_tempo_clock_ticks_at_the_beat_and_wraps_on_a_loop():
    bpm = torch.tensor([120.0, 97.0])
    clock = tempo_clock(400, bpm, 100.0, 4, circular=False)  # 100 frames/s: a beat is 50 frames at 120 BPM
    assert clock.shape == (2, 4, 400)
    torch.testing.assert_close(clock[0, :2, 50], clock[0, :2, 0], atol=1e-5, rtol=0)  # a beat later
    torch.testing.assert_close(clock[0, 2:, 200], clock[0, 2:, 0], atol=1e-5, rtol=0)  # a bar later
    assert not torch.allclose(clock[0, 2:, 50], clock[0, 2:, 0], atol=1e-3)
    loop = tempo_clock(397, bpm, 100.0, 4, circular=True)  # a period that is not a whole number of beats
    step = (loop[..., 1:] - loop[..., :-1]).norm(dim=1)  # each channel pair turns at a constant rate,
    wrap = (loop[..., 0] - loop[..., -1]).norm(dim=1)  # the wrap included: the clock goes round the loop
    torch.testing.assert_close(wrap, step[..., 0], atol=1e-5, rtol=0)
    assert (step - step[..., :1]).abs().max() < 1e-5
    plain = tempo_clock(397, bpm, 100.0, 4, circular=False)
    assert (plain[..., 0] - plain[..., -1]).norm(dim=1).max() > 2 * step.max()  # without stretching it would jump


def test_a_window_later_in_its_loop_gets_the_clock_of_that_position():
    """Phase 0 is the loop's downbeat whatever the crop: a window starting 1.3 s into a loop
    sees the clock a window at 0 sees 130 frames in (100 frames/s)."""
    bpm = torch.tensor([120.0, 97.0])
    whole = tempo_clock(530, bpm, 100.0, 4, circular=False)
    later = tempo_clock(400, bpm, 100.0, 4, circular=False, start=torch.tensor([1.3, 1.3]))
    torch.testing.assert_close(later, whole[..., 130:], atol=1e-5, rtol=0)
    at_zero = tempo_clock(400, bpm, 100.0, 4, circular=False, start=torch.zeros(2))
    torch.testing.assert_close(at_zero, whole[..., :400])


def test_the_training_loss_sees_where_each_window_starts():
    m = model()
    for p in m.unet.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    x, sigma = torch.randn(2, 4, 24), torch.tensor([1.0, 1.0])
    c = conds()
    moved = Conditions(c.genre, c.bpm, c.seconds, c.bars, torch.tensor([0.25, 0.5]))
    assert not torch.allclose(m.denoise(x, sigma, c), m.denoise(x, sigma, moved), atol=1e-5)
    assert moved.repeat(2).start.tolist() == [0.25, 0.5, 0.25, 0.5]


def test_the_clock_reaches_the_network_only_when_the_tempo_is_known():
    m = model()
    assert m.unet.in_channels == 4 + CLOCK_CHANNELS
    for p in m.unet.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    x, sigma = torch.randn(2, 4, 24), torch.tensor([1.0, 1.0])
    unknown = Conditions(torch.tensor([0, 1]), torch.zeros(2), torch.full((2,), 1.875), torch.ones(2))
    shifted = Conditions(torch.tensor([0, 1]), torch.zeros(2) - 5, torch.full((2,), 1.875), torch.ones(2))
    torch.testing.assert_close(m.denoise(x, sigma, unknown), m.denoise(x, sigma, shifted))
    drop_tempo = torch.tensor([[False, True, False]] * 2)
    dropped = m.denoise(x, sigma, conds(), drop_tempo)
    assert not torch.allclose(dropped, m.denoise(x, sigma, conds()))
