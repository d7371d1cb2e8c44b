"""Turning noise into loops with k-diffusion's samplers: generate (and, below it, the shared machinery).

Length. A loop of `bars` bars at `bpm` is exactly N = bars · beats_per_bar · 60/bpm seconds
of samples (wavediff.tempo.loop_samples). A circular model generates one period of F
frames, F within STRETCH_CENTS of N / hop (LoopDiffusion.denoise wraps any period); the
decoded period (F · hop samples) is then resized to exactly N samples by band-limited
periodic resampling (wavediff.audio.resize_loop), which keeps the loop seamless at a pitch
change the sidecar records in cents. A non-circular model generates ⌈N / hop⌉ frames and
the audio is cut to N.

Determinism. Item i of a batch starts from noise drawn with seed + i on the CPU, and the
stochastic samplers draw their noise per item from seed + i too, so a loop depends only on
its own seed and the settings, not on the batch it was made in or on the device.

Audio in. vary, interpolate and inpaint run the same Denoiser and run_sampler on clips: a
clip keeps its exact length at the model's rate, and in circular mode it is one period of a
loop, resized to whole frames and back exactly as a generated loop is.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wavediff.audio import LoopInfo, conform, resize_loop, save
from wavediff.checkpoint import CheckpointError, load_model, resolve_checkpoint
from wavediff.conditioning import Conditions
from wavediff.config import SamplingConfig
from wavediff.diffusion import LoopDiffusion
from wavediff.files import atomic_write_json
from wavediff.tempo import loop_samples

# Readable name → k-diffusion sampler function name.
SAMPLERS = {
    "euler": "sample_euler",
    "euler-ancestral": "sample_euler_ancestral",
    "heun": "sample_heun",
    "dpm2": "sample_dpm_2",
    "dpm2-ancestral": "sample_dpm_2_ancestral",
    "lms": "sample_lms",
    "dpmpp-2s-ancestral": "sample_dpmpp_2s_ancestral",
    "dpmpp-sde": "sample_dpmpp_sde",
    "dpmpp-2m": "sample_dpmpp_2m",
    "dpmpp-2m-sde": "sample_dpmpp_2m_sde",
    "dpmpp-3m-sde": "sample_dpmpp_3m_sde",
    "dpm-fast": "sample_dpm_fast",
    "dpm-adaptive": "sample_dpm_adaptive",
}
_BROWNIAN = {"dpmpp-sde", "dpmpp-2m-sde", "dpmpp-3m-sde"}  # draw correlated noise from a Brownian tree
_ANCESTRAL = {"euler-ancestral", "dpm2-ancestral", "dpmpp-2s-ancestral", "dpm-fast", "dpm-adaptive"}
_ADAPTIVE = {"dpm-fast", "dpm-adaptive"}  # take (σ_min, σ_max, steps), not a list of σ
SCHEDULES = ("karras", "exponential", "polyexponential")
MIN_BPM, MAX_BPM = 20.0, 400.0
# A loop period is a whole number of frames, so it is resized to the exact length; the
# frame count is chosen to keep that pitch change under this (a few cents is below what
# ears notice on tonal parts; drums do not care).
STRETCH_CENTS = 6.0


def _k_sampling() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import k_diffusion.sampling
    return k_diffusion.sampling


def check_settings(settings: SamplingConfig) -> None:
    """Refuse unknown names and impossible numbers before any work is done."""
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {settings.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if settings.steps < 1:
        raise ValueError(f"steps must be at least 1, got {settings.steps}")
    if settings.cfg_scale < 0:
        raise ValueError(f"cfg scale must not be negative, got {settings.cfg_scale}")


def sigmas_for(model: LoopDiffusion, settings: SamplingConfig, device: torch.device | str) -> Tensor:
    """The noise levels a run of `settings.steps` steps visits, high to low, ending at 0."""
    k = _k_sampling()
    lo, hi, n = model.recipe.diffusion.sigma_min, model.recipe.diffusion.sigma_max, settings.steps
    if settings.schedule == "karras":
        return k.get_sigmas_karras(n, lo, hi, settings.rho, device=device)
    if settings.schedule == "exponential":
        return k.get_sigmas_exponential(n, lo, hi, device=device)
    return k.get_sigmas_polyexponential(n, lo, hi, settings.rho, device=device)


def seeded_noise(shape: Sequence[int], seeds: Sequence[int], device: torch.device | str) -> Tensor:
    """(len(seeds), *shape) standard normal noise, item i from seeds[i], drawn on the CPU (device-independent)."""
    items = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(items).to(device)


class _ItemNoise:
    """A k-diffusion noise sampler drawing each item's noise from its own generator."""

    def __init__(self, x: Tensor, seeds: Sequence[int]) -> None:
        self.shape, self.device, self.dtype = x.shape[1:], x.device, x.dtype
        self.generators = [torch.Generator().manual_seed(s + 1_000_003) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        items = [torch.randn(tuple(self.shape), generator=g) for g in self.generators]
        return torch.stack(items).to(self.device, self.dtype)


@dataclass
class Denoiser:
    """D(x, σ) as a k-diffusion sampler sees it: conditions, guidance and the loop switch bound in.

    With cfg_scale ≠ 1 the conditional and unconditional passes run as one batch of 2B;
    `known` (x0, mask) clamps the denoised estimate to known frames (inpainting).
    """

    model: LoopDiffusion
    cond: Conditions | None
    cfg_scale: float = 1.0
    circular: bool = False
    known: tuple[Tensor, Tensor] | None = None
    calls: int = field(default=0, init=False)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        guided = self.model.conditioner is not None and self.cond is not None and self.cfg_scale != 1.0
        if guided:
            b = x.shape[0]
            drop = torch.zeros(2 * b, len(self.model.conditioner.names), dtype=torch.bool, device=x.device)
            drop[b:] = True
            both = self.model.denoise(
                torch.cat([x, x]), torch.cat([sigma, sigma]), self.cond.repeat(2), drop, self.circular
            )
            cond, uncond = both.chunk(2)
            denoised = uncond + (cond - uncond) * self.cfg_scale
        else:
            denoised = self.model.denoise(x, sigma, self.cond, None, self.circular)
        if self.known is not None:
            x0, mask = self.known
            denoised = torch.where(mask, x0, denoised)
        return denoised


def run_sampler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    settings: SamplingConfig,
    seeds: Sequence[int],
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Integrate from x at sigmas[0] down the schedule with the named sampler."""
    k = _k_sampling()
    fn = getattr(k, SAMPLERS[settings.sampler])
    kwargs: dict[str, Any] = {"disable": not progress, "callback": callback}
    positive = sigmas[sigmas > 0]
    if settings.sampler in _BROWNIAN:  # bounds a hair wider than the schedule: float32 σ must fall inside
        lo, hi = float(positive.min()) * (1 - 1e-4), float(positive.max()) * (1 + 1e-4)
        kwargs["noise_sampler"] = k.BrownianTreeNoiseSampler(x, lo, hi, seed=list(seeds))
    elif settings.sampler in _ANCESTRAL:
        kwargs["noise_sampler"] = _ItemNoise(x, seeds)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seeds[0] if seeds else 0)  # samplers that draw unused noise stay deterministic
        if settings.sampler in _ADAPTIVE:
            lo, hi = float(positive.min()), float(positive.max())
            if settings.sampler == "dpm-fast":
                return fn(denoiser, x, lo, hi, max(1, len(positive)), **kwargs)
            return fn(denoiser, x, lo, hi, **kwargs)
        return fn(denoiser, x, sigmas, **kwargs)


# --------------------------------------------------------------------------- loops


@dataclass(frozen=True)
class LoopShape:
    """How many frames to generate for a loop, and how they become exactly `samples` samples."""

    samples: int  # the loop's exact length
    frames: int  # frames generated
    circular: bool
    stretch_cents: float  # pitch change of the final resize (0 when cut instead)


def check_tempo(bpm: float | None, bars: int | None) -> None:
    """Refuse a tempo or bar count no loop can have (None: not given)."""
    if bpm is not None and not MIN_BPM <= bpm <= MAX_BPM:
        raise ValueError(f"bpm must be between {MIN_BPM:g} and {MAX_BPM:g}, got {bpm:g}")
    if bars is not None and bars < 1:
        raise ValueError(f"bars must be at least 1, got {bars}")


def _cents(samples: int, frames: int, hop: int) -> float:
    return 1200 * math.log2(samples / (frames * hop))


def clip_shape(model: LoopDiffusion, samples: int, circular: bool) -> LoopShape:
    """Frames for exactly `samples` samples of audio (see the module docstring).

    A loop period of F frames costs the denoiser loop_tiles(F) × F frames per call: among
    the frame counts near samples / hop whose resize stays within STRETCH_CENTS (or the
    nearest, when none does), the cheapest is taken, the nearest of equal cost.
    """
    hop = model.hop_length
    if not circular:
        return LoopShape(samples, math.ceil(samples / hop), False, 0.0)
    exact = samples / hop
    near = range(max(1, math.floor(exact) - model.factor), math.ceil(exact) + model.factor + 1)
    tolerance = max(STRETCH_CENTS, min(abs(_cents(samples, f, hop)) for f in near))
    fits = [f for f in near if abs(_cents(samples, f, hop)) <= tolerance + 1e-9]
    frames = min(fits, key=lambda f: (model.loop_tiles(f) * f, abs(f - exact)))
    return LoopShape(samples, frames, True, _cents(samples, frames, hop))


def loop_shape(model: LoopDiffusion, bpm: float, bars: int, circular: bool) -> LoopShape:
    """Frames for `bars` bars at `bpm` (see the module docstring)."""
    check_tempo(bpm, bars)
    beats = model.recipe.conditioning.beats_per_bar
    return clip_shape(model, loop_samples(bpm, bars, model.sample_rate, beats), circular)


def clip_conditions(
    model: LoopDiffusion,
    genre: str | None,
    bpm: float | None,
    bars: int | None,
    seconds: float,
    n: int,
    device: torch.device | str,
) -> Conditions | None:
    """The conditions of n clips of `seconds`; a genre, tempo or bar count not given stays unknown (null).
    None for an unconditional model."""
    check_tempo(bpm, bars)
    if model.conditioner is None:
        return None
    genre_id = model.conditioner.genre_id(genre)

    def full(value: float, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.full((n,), value, dtype=dtype, device=device)

    return Conditions(full(genre_id, torch.long), full(bpm or 0.0), full(seconds), full(float(bars or 0)))


def loop_conditions(
    model: LoopDiffusion, genre: str | None, bpm: float, bars: int, n: int, device: torch.device | str
) -> Conditions | None:
    """The conditions of n loops of one genre, tempo and length (None for an unconditional model)."""
    check_tempo(bpm, bars)
    seconds = bars * model.recipe.conditioning.beats_per_bar * 60.0 / bpm
    return clip_conditions(model, genre, bpm, bars, seconds, n, device)


def model_device(model: LoopDiffusion) -> torch.device:
    return next(model.unet.parameters()).device


def to_audio(model: LoopDiffusion, latent: Tensor, shape: LoopShape) -> Tensor:
    """Decode generated frames to exactly shape.samples: a circular period is resized, anything else cut."""
    if shape.circular:
        return resize_loop(model.decode(latent, loop=True), shape.samples)
    return model.decode(latent, shape.samples)


def generate(
    model: LoopDiffusion,
    *,
    genre: str | None,
    bpm: float,
    bars: int,
    n: int = 1,
    seed: int = 0,
    settings: SamplingConfig | None = None,
    circular: bool | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """n loops of `bars` bars at `bpm` in `genre` → ((n, channels, samples) audio, settings used).

    `circular` defaults to the model's padding setting (seamless loops for a circular model).
    """
    settings = settings or model.recipe.sampling
    check_settings(settings)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    circular = model.recipe.model.padding == "circular" if circular is None else circular
    shape = loop_shape(model, bpm, bars, circular)
    device = model_device(model)
    seeds = [seed + i for i in range(n)]
    cond = loop_conditions(model, genre, bpm, bars, n, device)
    sigmas = sigmas_for(model, settings, device)
    x = seeded_noise((model.data_channels, shape.frames), seeds, device) * sigmas[0]
    denoiser = Denoiser(model, cond, settings.cfg_scale, circular)
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    audio = to_audio(model, latent, shape)
    info = {
        "genre": genre,
        "bpm": bpm,
        "bars": bars,
        "beats_per_bar": model.recipe.conditioning.beats_per_bar,
        "seeds": seeds,
        "steps": settings.steps,
        "sampler": settings.sampler,
        "schedule": settings.schedule,
        "rho": settings.rho,
        "cfg_scale": settings.cfg_scale,
        "circular": circular,
        "samples": shape.samples,
        "seconds": shape.samples / model.sample_rate,
        "sample_rate": model.sample_rate,
        "frames": shape.frames,
        "stretch_cents": round(shape.stretch_cents, 3),
        "model_evaluations": denoiser.calls,
    }
    return audio.float().cpu(), info


# --------------------------------------------------------------------------- audio in: vary, interpolate, inpaint

INPAINT_FADE_SECONDS = 0.01  # equal-power crossfade at each edge of an inpainted region


def _settings(model: LoopDiffusion, settings: SamplingConfig | None) -> SamplingConfig:
    settings = settings or model.recipe.sampling
    check_settings(settings)
    return settings


def _circular(model: LoopDiffusion, circular: bool | None) -> bool:
    return model.recipe.model.padding == "circular" if circular is None else circular


def _check_count(name: str, value: int, least: int) -> None:
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")


def conform_input(model: LoopDiffusion, audio: Tensor, sample_rate: int, name: str = "audio") -> Tensor:
    """(channels, samples) or (samples,) audio → float32 (channels, samples) at the model's rate and channels."""
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2 or audio.shape[-1] == 0:
        raise ValueError(f"{name} must be (channels, samples) with at least one sample, got shape {tuple(audio.shape)}")
    return conform(audio.float().cpu(), sample_rate, model.sample_rate, model.audio_channels)


def to_model_space(model: LoopDiffusion, audio: Tensor, shape: LoopShape) -> Tensor:
    """(channels, shape.samples) audio → (1, data_channels, shape.frames) in model space.

    In circular mode the clip is one period of a loop: it is resized to frames · hop samples
    (the inverse of to_audio's resize) and encoded with wrapped context, as decode(loop=True)
    decodes, so its first and last frames see each other and not silence.
    """
    x = audio[None].to(model_device(model))
    if not shape.circular:
        return model.encode(x)
    return model.encode(resize_loop(x, shape.frames * model.hop_length), loop=True)


def _info(
    model: LoopDiffusion, settings: SamplingConfig, shape: LoopShape, denoiser: Denoiser, **fields: Any
) -> dict[str, Any]:
    """The sidecar settings of an audio-to-audio run (the shape of generate's info, plus `fields`)."""
    return {
        **fields,
        "beats_per_bar": model.recipe.conditioning.beats_per_bar,
        "steps": settings.steps,
        "sampler": settings.sampler,
        "schedule": settings.schedule,
        "rho": settings.rho,
        "cfg_scale": settings.cfg_scale,
        "circular": shape.circular,
        "samples": shape.samples,
        "seconds": shape.samples / model.sample_rate,
        "sample_rate": model.sample_rate,
        "frames": shape.frames,
        "stretch_cents": round(shape.stretch_cents, 3),
        "model_evaluations": denoiser.calls,
    }


def vary(
    model: LoopDiffusion,
    audio: Tensor,
    sample_rate: int,
    *,
    strength: float,
    genre: str | None = None,
    bpm: float | None = None,
    bars: int | None = None,
    n: int = 1,
    seed: int = 0,
    settings: SamplingConfig | None = None,
    circular: bool | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """n variations of a clip → ((n, channels, samples) audio, settings used): Dance Diffusion's
    "style transfer" at a noise level.

    The clip is encoded, noised to the σ at step round((1 − strength) · steps) of the full
    schedule and denoised down the rest of it: strength 1 starts from pure noise, a small one
    stays close to the clip (at least the last step always runs). The output has the clip's
    length at the model's rate, exactly. Circular mode (default: the model's) treats the clip as
    one period of a loop, resized to whole U-Net frames and back as generate does. The clip's
    length is its `seconds` condition; genre, tempo and bars are unknown unless given.
    """
    settings = _settings(model, settings)
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (1 = from pure noise), got {strength:g}")
    _check_count("n", n, 1)
    wav = conform_input(model, audio, sample_rate)
    shape = clip_shape(model, wav.shape[-1], _circular(model, circular))
    device = model_device(model)
    seeds = [seed + i for i in range(n)]
    cond = clip_conditions(model, genre, bpm, bars, shape.samples / model.sample_rate, n, device)
    start = min(round((1 - strength) * settings.steps), settings.steps - 1)
    sigmas = sigmas_for(model, settings, device)[start:]
    x0 = to_model_space(model, wav, shape)
    x = x0 + seeded_noise(x0.shape[1:], seeds, device) * sigmas[0]
    denoiser = Denoiser(model, cond, settings.cfg_scale, shape.circular)
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    info = _info(
        model, settings, shape, denoiser, genre=genre, bpm=bpm, bars=bars, seeds=seeds, strength=strength,
        start_step=start, start_sigma=float(sigmas[0]),
    )
    return to_audio(model, latent, shape).float().cpu(), info


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between a and b over all their elements, at each t in `t` → (len(t), *a.shape).

    Noise at σ_max lies near a sphere; a straight line between two points of it passes
    inside, at noise too quiet for its σ, and samples to mush in the middle.
    """
    flat_a, flat_b = a.flatten().double(), b.flatten().double()
    cos = (flat_a @ flat_b / (flat_a.norm() * flat_b.norm()).clamp_min(1e-30)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    t = t.double().to(a.device)[:, None]
    if float(omega.sin()) < 1e-6:  # (anti)parallel: the sphere's arc is undefined, the line is fine
        mixed = (1 - t) * flat_a + t * flat_b
    else:
        mixed = (torch.sin((1 - t) * omega) * flat_a + torch.sin(t * omega) * flat_b) / omega.sin()
    return mixed.to(a.dtype).reshape(len(t), *a.shape)


def interpolate(
    model: LoopDiffusion,
    a: Tensor,
    b: Tensor,
    sample_rate: int,
    *,
    frames: int,
    genre: str | None = None,
    bpm: float | None = None,
    bars: int | None = None,
    seed: int = 0,
    settings: SamplingConfig | None = None,
    circular: bool | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """`frames` clips morphing from a to b (both ends included) → ((frames, channels, samples) audio, settings).

    Both clips are inverted to noise at σ_max by the probability-flow ODE (Heun, the schedule
    run upwards from σ_min), slerped, and each point sampled back down with `settings`. The
    inversion uses the same guidance as the way down: the round trip then runs one ODE both
    ways, so with a deterministic sampler the end frames come back close to a and b. Clips of
    different lengths are both cut to the shorter ("trimmed" in the info). Every frame's
    stochastic noise comes from `seed`, so neighbouring frames differ only by their start.
    """
    settings = _settings(model, settings)
    _check_count("frames", frames, 2)
    clips = [conform_input(model, clip, sample_rate, name) for clip, name in ((a, "a"), (b, "b"))]
    lengths = [clip.shape[-1] for clip in clips]
    samples = min(lengths)
    shape = clip_shape(model, samples, _circular(model, circular))
    device = model_device(model)
    seconds = samples / model.sample_rate
    x0 = torch.cat([to_model_space(model, clip[..., :samples], shape) for clip in clips])
    sigmas = sigmas_for(model, settings, device)
    upward = sigmas[:-1].flip(0)
    sigma_min = model.recipe.diffusion.sigma_min
    if upward[0] > sigma_min * 1.001:  # a 1-step schedule holds only σ_max
        upward = torch.cat([upward.new_tensor([sigma_min]), upward])
    inverter = Denoiser(model, clip_conditions(model, genre, bpm, bars, seconds, 2, device), settings.cfg_scale,
                        shape.circular)
    noise = run_sampler(inverter, x0, upward, replace(settings, sampler="heun"), [seed, seed])
    positions = torch.linspace(0, 1, frames)
    x = slerp(noise[0], noise[1], positions)
    seeds = [seed] * frames
    denoiser = Denoiser(model, clip_conditions(model, genre, bpm, bars, seconds, frames, device), settings.cfg_scale,
                        shape.circular)
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    info = _info(
        model, settings, shape, denoiser, genre=genre, bpm=bpm, bars=bars, seeds=seeds,
        positions=[round(float(p), 6) for p in positions], inversion_evaluations=inverter.calls,
        trimmed=lengths[0] != lengths[1], input_samples=lengths,
    )
    return to_audio(model, latent, shape).float().cpu(), info


def known_frames(shape: LoopShape, hop: int, start: int, end: int, length: int) -> Tensor:
    """(1, 1, frames) bool: True for frames whose samples lie wholly in the kept input, [0, start) or [end, length).

    Frame f covers samples [f · step, (f + 1) · step), step = hop (or samples / frames for a
    resized loop period).
    """
    step = shape.samples / shape.frames if shape.circular else hop
    lo = torch.arange(shape.frames, dtype=torch.float64) * step
    hi = lo + step
    return ((hi <= start) | ((lo >= end) & (hi <= length)))[None, None]


def splice(original: Tensor, generated: Tensor, start: int, end: int, fade: int) -> Tensor:
    """`generated` inside [start, end), `original` (C, L) elsewhere, with equal-power crossfades of up to
    `fade` samples just outside the region; samples outside [start − fade, end + fade) are the original's
    bit for bit, and samples past the original's end are generated."""
    length, total = original.shape[-1], generated.shape[-1]
    t = torch.zeros(total, dtype=torch.float64)  # how much of the generated audio each sample takes
    t[start:end] = 1.0
    t[length:] = 1.0
    left, right = min(fade, start), min(fade, max(0, length - end))
    t[start - left : start] = torch.arange(1, left + 1, dtype=torch.float64) / (left + 1)
    t[end : end + right] = 1 - torch.arange(1, right + 1, dtype=torch.float64) / (right + 1)
    kept = torch.nn.functional.pad(original, (0, total - length)).expand_as(generated)
    angle = (t * math.pi / 2).to(generated.dtype)
    mixed = kept * angle.cos() + generated * angle.sin()
    return torch.where(t == 0, kept, torch.where(t == 1, generated, mixed))


def inpaint(
    model: LoopDiffusion,
    audio: Tensor,
    sample_rate: int,
    *,
    start: float,
    end: float,
    genre: str | None = None,
    bpm: float | None = None,
    bars: int | None = None,
    n: int = 1,
    seed: int = 0,
    settings: SamplingConfig | None = None,
    circular: bool | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """Regenerate seconds [start, end) of a clip and keep the rest → ((n, channels, samples) audio, settings).

    An `end` past the clip continues it: the output is then `end` seconds long. Frames wholly
    outside the region are clamped to the clip's latents at every step (Denoiser.known), so the
    new part is generated to fit them; then the clip's own samples are put back outside the
    region with ~10 ms equal-power crossfades at its edges, so everything outside
    [start − 10 ms, end + 10 ms] is the (conformed) input bit for bit. In circular mode (default:
    the model's) the output is a loop: a continuation is generated to lead back into the start.
    """
    settings = _settings(model, settings)
    _check_count("n", n, 1)
    wav = conform_input(model, audio, sample_rate)
    sr, length = model.sample_rate, wav.shape[-1]
    if not 0 <= start < end:
        raise ValueError(f"inpaint needs 0 ≤ start < end, got start {start:g} s, end {end:g} s")
    if start >= length / sr:
        raise ValueError(f"start {start:g} s is not before the input's end ({length / sr:g} s)")
    first = round(start * sr)
    last = max(first + 1, round(end * sr))
    total = max(length, last)
    shape = clip_shape(model, total, _circular(model, circular))
    device = model_device(model)
    seeds = [seed + i for i in range(n)]
    padded = torch.nn.functional.pad(wav, (0, total - length))
    x0 = to_model_space(model, padded, shape)
    mask = known_frames(shape, model.hop_length, first, last, length).to(device)
    cond = clip_conditions(model, genre, bpm, bars, total / sr, n, device)
    sigmas = sigmas_for(model, settings, device)
    x = seeded_noise(x0.shape[1:], seeds, device) * sigmas[0]
    denoiser = Denoiser(model, cond, settings.cfg_scale, shape.circular, known=(x0.expand(n, -1, -1), mask))
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    fade = round(INPAINT_FADE_SECONDS * sr)
    out = splice(wav, to_audio(model, latent, shape).float().cpu(), first, last, fade)
    info = _info(
        model, settings, shape, denoiser, genre=genre, bpm=bpm, bars=bars, seeds=seeds, start=start, end=end,
        region_samples=[first, last], input_samples=length, fade_samples=fade, known_frames=int(mask.sum()),
    )
    return out, info


# --------------------------------------------------------------------------- checkpoints and files


def load_denoiser(checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> LoopDiffusion:
    """The EMA denoiser of a checkpoint or run folder, on `device` (default: a GPU when there is one)."""
    folder = resolve_checkpoint(checkpoint)
    model = load_model(folder, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not isinstance(model, LoopDiffusion):
        raise CheckpointError(f"{folder}: a {type(model).__name__.lower()} checkpoint, not a denoiser (wavediff train)")
    return model


def loop_name(info: Mapping[str, Any], seed: int) -> str:
    """`techno-128bpm-4bars-seed0`: what a producer sees in a file browser."""
    return f"{info.get('genre') or 'loop'}-{info['bpm']:g}bpm-{info['bars']}bars-seed{seed}"


def save_loops(
    audio: Tensor, info: Mapping[str, Any], out: str | os.PathLike, *, format: str = "wav", names: Sequence[str] | None = None
) -> list[Path]:
    """Write each loop and a JSON sidecar of every setting beside it; WAV files carry smpl/acid loop chunks.

    `info` is what generate (or vary, inpaint, …) returned, plus anything the caller adds
    (the checkpoint); `names` default to loop_name of each item's seed. Each file is atomic.
    """
    out = Path(out)
    seeds = info.get("seeds") or list(range(audio.shape[0]))
    names = list(names) if names is not None else [loop_name(info, s) for s in seeds]
    loop = None
    if info.get("bpm") and info.get("bars"):
        beats = int(info["bars"]) * int(info.get("beats_per_bar", 4))
        loop = LoopInfo(bpm=float(info["bpm"]), beats=beats, beats_per_bar=int(info.get("beats_per_bar", 4)))
    written = []
    for wav, seed, name in zip(audio, seeds, names):
        path = save(out / f"{name}.{format}", wav, int(info["sample_rate"]), loop=loop)
        sidecar = {k: v for k, v in info.items() if k != "seeds"} | {"seed": seed, "file": path.name}
        atomic_write_json(path.with_suffix(".json"), sidecar)
        written.append(path)
    return written
