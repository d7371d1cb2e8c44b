"""Loop shaping: how many latent frames a loop of so many bars gets, and back to exact audio.

A loop of `bars` bars at `bpm` is exactly N = bars · beats_per_bar · 60/bpm seconds of
samples (wavediff.io.audio.loop_samples). A circular model generates one period of F
frames, F within STRETCH_CENTS of N / hop (LoopDiffusion.denoise wraps any period); the
decoded period (F · hop samples) is then resized to exactly N samples by band-limited
periodic resampling (wavediff.io.audio.resize_loop), which keeps the loop seamless at a pitch
change the sidecar records in cents. A non-circular model generates ⌈N / hop⌉ frames and
the audio is cut to N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from wavediff.errors import UserError
from wavediff.io.audio import conform, loop_samples, resize_loop
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion

MIN_BPM, MAX_BPM = 20.0, 400.0

# A loop period is a whole number of frames, so it is resized to the exact length; the
# frame count is chosen to keep that pitch change under this (a few cents is below what
# ears notice on tonal parts; drums do not care).
STRETCH_CENTS = 6.0


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
        raise UserError(f"bpm must be between {MIN_BPM:g} and {MAX_BPM:g}, got {bpm:g}")
    if bars is not None and bars < 1:
        raise UserError(f"bars must be at least 1, got {bars}")


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
    role: str | None = None,
) -> Conditions | None:
    """The conditions of n clips of `seconds`; a genre, tempo, bar count or role not given stays unknown
    (null). None for an unconditional model."""
    check_tempo(bpm, bars)
    if model.conditioner is None:
        if role is not None:
            raise UserError(f"role {role!r}: this model is unconditional")
        return None
    genre_id = model.conditioner.genre_id(genre)
    role_id = model.conditioner.role_id(role)

    def full(value: float, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.full((n,), value, dtype=dtype, device=device)

    roles = full(role_id, torch.long) if role is not None else None
    return Conditions(full(genre_id, torch.long), full(bpm or 0.0), full(seconds), full(float(bars or 0)), role=roles)


def loop_conditions(
    model: LoopDiffusion,
    genre: str | None,
    bpm: float,
    bars: int,
    n: int,
    device: torch.device | str,
    role: str | None = None,
) -> Conditions | None:
    """The conditions of n loops of one genre, tempo, length and role (None for an unconditional model)."""
    check_tempo(bpm, bars)
    seconds = bars * model.recipe.conditioning.beats_per_bar * 60.0 / bpm
    return clip_conditions(model, genre, bpm, bars, seconds, n, device, role)


def model_device(model: LoopDiffusion) -> torch.device:
    return next(model.unet.parameters()).device


def to_audio(model: LoopDiffusion, latent: Tensor, shape: LoopShape) -> Tensor:
    """Decode generated frames to exactly shape.samples: a circular period is resized, anything else cut."""
    if shape.circular:
        return resize_loop(model.decode(latent, loop=True), shape.samples)
    return model.decode(latent, shape.samples)


def conform_input(model: LoopDiffusion, audio: Tensor, sample_rate: int, name: str = "audio") -> Tensor:
    """(channels, samples) or (samples,) audio → float32 (channels, samples) at the model's rate and channels."""
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2 or audio.shape[-1] == 0:
        raise UserError(f"{name} must be (channels, samples) with at least one sample, got shape {tuple(audio.shape)}")
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
