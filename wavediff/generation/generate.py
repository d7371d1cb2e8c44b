"""generate, vary, interpolate and inpaint: a denoiser and k-diffusion's samplers turn noise
(or noised audio) into loops.

Determinism. Item i of a batch starts from noise drawn with seed + i on the CPU, and the
stochastic samplers draw their noise per item from seed + i too, so a loop depends only on
its own seed and the settings, not on the batch it was made in or on the device.

Audio in. vary, interpolate and inpaint run the same Denoiser and run_sampler on clips: a
clip keeps its exact length at the model's rate, and in circular mode it is one period of a
loop, resized to whole frames and back exactly as a generated loop is (generation.loops).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from wavediff.config import SamplingConfig
from wavediff.errors import UserError
from wavediff.generation.loops import (
    LoopShape,
    check_fits,
    clip_conditions,
    clip_shape,
    conform_input,
    loop_conditions,
    loop_shape,
    model_device,
    prompt_for,
    to_audio,
    to_model_space,
)
from wavediff.generation.samplers import Denoiser, check_settings, run_sampler, seeded_noise, sigmas_for
from wavediff.io.keys import KEYS, key_index
from wavediff.models.autoencoder import LatentDecoding
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.preview import PreviewDecoder
from wavediff.models.text import encode_prompts


def _settings(model: LoopDiffusion, settings: SamplingConfig | None, **numbers: float | None) -> SamplingConfig:
    """The settings to sample with (the checkpoint's by default), checked with the call's other `numbers`."""
    settings = settings or model.recipe.sampling
    check_settings(settings, **numbers)
    own, steps = model.recipe.sampling, model.recipe.sampling.distilled_steps
    learnt = ("steps", "sampler", "schedule", "rho", "cfg_scale")
    if steps and any(getattr(settings, k) != getattr(own, k) for k in learnt):
        warnings.warn(
            f"this model was distilled to sample in {steps} steps ({own.sampler}, cfg {own.cfg_scale:g}, guidance "
            f"built in); at {settings.steps} steps, {settings.sampler}, cfg {settings.cfg_scale:g} it runs off what it "
            "learnt, so expect worse loops (leave --steps, --sampler, --schedule and --cfg at the checkpoint's)",
            UserWarning,
            stacklevel=3,
        )
    return settings


def _decoded(
    model: LoopDiffusion,
    latent: Tensor,
    shape: LoopShape,
    settings: SamplingConfig,
    decoder: LatentDecoding | None = None,
) -> Tensor:
    """The audio of generated frames (float32, CPU), refused when it is not finite: written out,
    NaN becomes a full-scale DC click, and nothing downstream can tell it from audio. `decoder`:
    a preview decoder in the autoencoder's place."""
    audio = to_audio(model, latent, shape, decoder).float().cpu()
    if torch.isfinite(audio).all():
        return audio
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    bad = [name for name, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        listed = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UserError(
            f"the model made non-finite audio (NaN or infinity): its weights hold NaN or infinity ({listed}); "
            "the checkpoint is damaged or its training diverged, so use an earlier one"
        )
    raise UserError(
        f"the sampler made non-finite audio (NaN or infinity) at sampler {settings.sampler}, {settings.steps} steps, "
        f"cfg scale {settings.cfg_scale:g}: try a smaller cfg scale, more steps or another sampler"
    )


def _check_fits(
    model: LoopDiffusion,
    shape: LoopShape,
    batch: int,
    settings: SamplingConfig,
    bar: float | None = None,
    prompted: bool = False,
) -> None:
    """check_fits for a run at `settings`: guidance runs the U-Net on twice the batch, three times with a prompt."""
    guided = model.conditioner is not None and (settings.cfg_scale != 1.0 or prompted)
    check_fits(model, shape, -(-3 * batch // 2) if prompted else batch, guided, bar, settings.loops == "tile")


def _circular(model: LoopDiffusion, circular: bool | None) -> bool:
    return model.recipe.model.padding == "circular" if circular is None else circular


def _check_count(name: str, value: int, least: int) -> None:
    if value < least:
        raise UserError(f"{name} must be at least {least}, got {value}")


@dataclass(frozen=True)
class SampledLoops:
    """What the sampler made for `generate`, before decoding: the latent frames and how they were made."""

    latent: Tensor  # (n, latent channels, frames) in the model's space (model.from_model: the shards')
    seeds: list[int]  # item i's: seed + i
    shape: LoopShape
    settings: SamplingConfig
    circular: bool
    prompt_read: str | None  # the prompt as the model read it (structured controls win), None without one
    negative: str | None
    model_evaluations: int


def sample_loops(
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
    role: str | None = None,
    key: str | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
) -> SampledLoops:
    """generate's loops as the sampler leaves them, undecoded: what a study of the denoiser alone
    (its latents against the data's) needs. The arguments are generate's."""
    settings = _settings(model, settings, bpm=bpm)
    _check_count("n", n, 1)
    circular = _circular(model, circular)
    shape = loop_shape(model, bpm, bars, circular)
    _check_fits(model, shape, n, settings, shape.samples / bars, prompt is not None or negative_prompt is not None)
    device = model_device(model)
    seeds = [seed + i for i in range(n)]
    text = prompt_for(model, prompt, genre=genre, bpm=bpm, key=key, role=role)
    negative = prompt_for(model, negative_prompt, name="negative prompt")
    cond = loop_conditions(model, genre, bpm, bars, n, device, role, key, text)
    sigmas = sigmas_for(model, settings, device)
    x = seeded_noise((model.data_channels, shape.frames), seeds, device) * sigmas[0]
    denoiser = _denoiser(model, cond, settings, circular, negative)
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    return SampledLoops(latent, seeds, shape, settings, circular, text, negative, denoiser.calls)


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
    role: str | None = None,
    key: str | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    preview: PreviewDecoder | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """n loops of `bars` bars at `bpm` in `genre` (and `role`, `key` and a prompt, for a model conditioned
    on them) → ((n, channels, samples) audio, settings used). The key is recorded as stored ("Gb minor"
    → "F#m"); where the prompt contradicts a structured control, the control wins (loops.prompt_for).

    `circular` defaults to the model's padding setting (seamless loops for a circular model).
    `preview`: decode with this preview decoder (factory.load_preview) instead of the full one.
    """
    made = sample_loops(
        model,
        genre=genre,
        bpm=bpm,
        bars=bars,
        n=n,
        seed=seed,
        settings=settings,
        circular=circular,
        progress=progress,
        role=role,
        key=key,
        prompt=prompt,
        negative_prompt=negative_prompt,
    )
    shape, settings = made.shape, made.settings
    audio = _decoded(model, made.latent, shape, settings, preview)
    info = {
        "genre": genre,
        "bpm": bpm,
        "bars": bars,
        "beats_per_bar": model.recipe.conditioning.beats_per_bar,
        "seeds": made.seeds,
        "steps": settings.steps,
        "sampler": settings.sampler,
        "schedule": settings.schedule,
        "rho": settings.rho,
        "cfg_scale": settings.cfg_scale,
        "circular": made.circular,
        **({"loops": settings.loops} if made.circular else {}),
        "samples": shape.samples,
        "seconds": shape.samples / model.sample_rate,
        "sample_rate": model.sample_rate,
        "frames": shape.frames,
        "stretch_cents": round(shape.stretch_cents, 3),
        "model_evaluations": made.model_evaluations,
        **({"role": role} if role is not None else {}),
        **_key_info(key),
        **_prompt_info(prompt, made.prompt_read, made.negative, settings),
        **({"preview": True} if preview is not None else {}),
    }
    return audio, info


def _denoiser(
    model: LoopDiffusion,
    cond: Conditions | None,
    settings: SamplingConfig,
    circular: bool,
    negative: str | None,
    known: tuple[Tensor, Tensor] | None = None,
) -> Denoiser:
    """The guided denoiser of a run: the structured controls at cfg_scale, a prompt at prompt_cfg_scale."""
    device = model_device(model)
    against = encode_prompts([negative], device) if negative is not None else None
    tile = settings.loops == "tile"
    return Denoiser(model, cond, settings.cfg_scale, circular, known, settings.prompt_cfg_scale, against, tile)


def _prompt_info(prompt: str | None, read: str | None, negative: str | None, settings: SamplingConfig) -> dict:
    """The sidecar's prompt fields: the prompt as given, as read (when a structured control changed it),
    the negative prompt and the prompt's guidance scale; nothing without a prompt."""
    if prompt is None and negative is None:
        return {}
    info: dict[str, Any] = {"prompt": prompt, "prompt_cfg_scale": settings.prompt_cfg_scale}
    if read is not None and read != " ".join(str(prompt).split()):
        info["prompt_read"] = read
    if negative is not None:
        info["negative_prompt"] = negative
    return info


def _key_info(key: str | None) -> dict[str, Any]:
    """The sidecar's "key": as stored ("Gb minor" → "F#m"); nothing when none was asked for."""
    return {} if key is None else {"key": KEYS[key_index(key)]}


# --------------------------------------------------------------------------- audio in: vary, interpolate, inpaint

INPAINT_FADE_SECONDS = 0.01  # equal-power crossfade at each edge of an inpainted region


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
    key: str | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
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
    settings = _settings(model, settings, strength=strength, bpm=bpm)
    if not 0 < strength <= 1:
        raise UserError(f"strength must be in (0, 1] (1 = from pure noise), got {strength:g}")
    _check_count("n", n, 1)
    wav = conform_input(model, audio, sample_rate)
    shape = clip_shape(model, wav.shape[-1], _circular(model, circular))
    _check_fits(model, shape, n, settings, None, prompt is not None or negative_prompt is not None)
    device = model_device(model)
    seeds = [seed + i for i in range(n)]
    text = prompt_for(model, prompt, genre=genre, bpm=bpm, key=key)
    negative = prompt_for(model, negative_prompt, name="negative prompt")
    seconds = shape.samples / model.sample_rate
    cond = clip_conditions(model, genre, bpm, bars, seconds, n, device, key=key, prompt=text)
    start = min(round((1 - strength) * settings.steps), settings.steps - 1)
    sigmas = sigmas_for(model, settings, device)[start:]
    x0 = to_model_space(model, wav, shape)
    x = x0 + seeded_noise(x0.shape[1:], seeds, device) * sigmas[0]
    denoiser = _denoiser(model, cond, settings, shape.circular, negative)
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    info = _info(
        model,
        settings,
        shape,
        denoiser,
        genre=genre,
        bpm=bpm,
        bars=bars,
        seeds=seeds,
        strength=strength,
        start_step=start,
        start_sigma=float(sigmas[0]),
        **_key_info(key),
        **_prompt_info(prompt, text, negative, settings),
    )
    return _decoded(model, latent, shape, settings), info


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
    key: str | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """`frames` clips morphing from a to b (both ends included) → ((frames, channels, samples) audio, settings).

    Both clips are inverted to noise at σ_max by the probability-flow ODE (Heun, the schedule
    run upwards from σ_min), slerped, and each point sampled back down with `settings`. The
    inversion uses the same guidance as the way down: the round trip then runs one ODE both
    ways, so with a deterministic sampler the end frames come back close to a and b. Clips of
    different lengths are both cut to the shorter ("trimmed" in the info). Every frame's
    stochastic noise comes from `seed`, so neighbouring frames differ only by their start. A key and
    a prompt (as vary takes them) steer both ways of the trip.
    """
    settings = _settings(model, settings, bpm=bpm)
    _check_count("frames", frames, 2)
    clips = [conform_input(model, clip, sample_rate, name) for clip, name in ((a, "a"), (b, "b"))]
    lengths = [clip.shape[-1] for clip in clips]
    samples = min(lengths)
    shape = clip_shape(model, samples, _circular(model, circular))
    _check_fits(model, shape, max(frames, 2), settings, None, prompt is not None or negative_prompt is not None)
    device = model_device(model)
    seconds = samples / model.sample_rate
    text = prompt_for(model, prompt, genre=genre, bpm=bpm, key=key)
    negative = prompt_for(model, negative_prompt, name="negative prompt")

    def conditions(n: int) -> Conditions | None:
        return clip_conditions(model, genre, bpm, bars, seconds, n, device, key=key, prompt=text)

    x0 = torch.cat([to_model_space(model, clip[..., :samples], shape) for clip in clips])
    sigmas = sigmas_for(model, settings, device)
    upward = sigmas[:-1].flip(0)
    sigma_min = model.recipe.diffusion.sigma_min
    if upward[0] > sigma_min * 1.001:  # a 1-step schedule holds only σ_max
        upward = torch.cat([upward.new_tensor([sigma_min]), upward])
    inverter = _denoiser(model, conditions(2), settings, shape.circular, negative)
    noise = run_sampler(inverter, x0, upward, replace(settings, sampler="heun"), [seed, seed])
    positions = torch.linspace(0, 1, frames)
    x = slerp(noise[0], noise[1], positions)
    seeds = [seed] * frames
    denoiser = _denoiser(model, conditions(frames), settings, shape.circular, negative)
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    info = _info(
        model,
        settings,
        shape,
        denoiser,
        genre=genre,
        bpm=bpm,
        bars=bars,
        seeds=seeds,
        positions=[round(float(p), 6) for p in positions],
        inversion_evaluations=inverter.calls,
        trimmed=lengths[0] != lengths[1],
        input_samples=lengths,
        **_key_info(key),
        **_prompt_info(prompt, text, negative, settings),
    )
    return _decoded(model, latent, shape, settings), info


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
    key: str | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Regenerate seconds [start, end) of a clip and keep the rest → ((n, channels, samples) audio, settings).

    An `end` past the clip continues it: the output is then `end` seconds long. Frames wholly
    outside the region are clamped to the clip's latents at every step (Denoiser.known), so the
    new part is generated to fit them; then the clip's own samples are put back outside the
    region with ~10 ms equal-power crossfades at its edges, so everything outside
    [start − 10 ms, end + 10 ms] is the (conformed) input bit for bit. In circular mode (default:
    the model's) the output is a loop: a continuation is generated to lead back into the start.
    """
    settings = _settings(model, settings, start=start, end=end, bpm=bpm)
    _check_count("n", n, 1)
    wav = conform_input(model, audio, sample_rate)
    sr, length = model.sample_rate, wav.shape[-1]
    if not 0 <= start < end:
        raise UserError(f"inpaint needs 0 ≤ start < end, got start {start:g} s, end {end:g} s")
    if start >= length / sr:
        raise UserError(f"start {start:g} s is not before the input's end ({length / sr:g} s)")
    first = round(start * sr)
    last = max(first + 1, round(end * sr))
    total = max(length, last)
    shape = clip_shape(model, total, _circular(model, circular))
    _check_fits(model, shape, n, settings, None, prompt is not None or negative_prompt is not None)
    device = model_device(model)
    seeds = [seed + i for i in range(n)]
    padded = torch.nn.functional.pad(wav, (0, total - length))
    x0 = to_model_space(model, padded, shape)
    mask = known_frames(shape, model.hop_length, first, last, length).to(device)
    text = prompt_for(model, prompt, genre=genre, bpm=bpm, key=key)
    negative = prompt_for(model, negative_prompt, name="negative prompt")
    cond = clip_conditions(model, genre, bpm, bars, total / sr, n, device, key=key, prompt=text)
    sigmas = sigmas_for(model, settings, device)
    x = seeded_noise(x0.shape[1:], seeds, device) * sigmas[0]
    denoiser = _denoiser(model, cond, settings, shape.circular, negative, known=(x0.expand(n, -1, -1), mask))
    latent = run_sampler(denoiser, x, sigmas, settings, seeds, progress)
    fade = round(INPAINT_FADE_SECONDS * sr)
    out = splice(wav, _decoded(model, latent, shape, settings), first, last, fade)
    info = _info(
        model,
        settings,
        shape,
        denoiser,
        genre=genre,
        bpm=bpm,
        bars=bars,
        seeds=seeds,
        start=start,
        end=end,
        region_samples=[first, last],
        input_samples=length,
        fade_samples=fade,
        known_frames=int(mask.sum()),
        **_key_info(key),
        **_prompt_info(prompt, text, negative, settings),
    )
    return out, info
