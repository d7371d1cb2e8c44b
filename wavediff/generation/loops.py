"""Loop shaping: how many latent frames a loop of so many bars gets, and back to exact audio.

A loop of `bars` bars at `bpm` is exactly N = bars · beats_per_bar · 60/bpm seconds of
samples (wavediff.io.audio.loop_samples). A circular model generates one period of F
frames, F within STRETCH_CENTS of N / hop (LoopDiffusion.denoise wraps any period, at the
cost of one plain call); the
decoded period (F · hop samples) is then resized to exactly N samples by band-limited
periodic resampling (wavediff.io.audio.resize_loop), which keeps the loop seamless at a pitch
change the sidecar records in cents. A non-circular model generates ⌈N / hop⌉ frames and
the audio is cut to N.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from wavediff.errors import UserError
from wavediff.io.audio import conform, loop_samples, resize_loop
from wavediff.io.prompts import reconcile
from wavediff.models.autoencoder import LatentDecoding
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.text import check_prompt, encode_prompts

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

    Among the frame counts near samples / hop whose resize stays within STRETCH_CENTS (or the
    nearest, when none does), a multiple of the U-Net's factor is taken if there is one (the
    U-Net then runs the period as it is, not resampled to loop_frames), then the nearest.
    """
    hop = model.hop_length
    if not circular:
        return LoopShape(samples, math.ceil(samples / hop), False, 0.0)
    exact = samples / hop
    near = range(max(1, math.floor(exact) - model.factor), math.ceil(exact) + model.factor + 1)
    tolerance = max(STRETCH_CENTS, min(abs(_cents(samples, f, hop)) for f in near))
    fits = [f for f in near if abs(_cents(samples, f, hop)) <= tolerance + 1e-9]
    frames = min(fits, key=lambda f: (f % model.factor != 0, abs(f - exact)))
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
    key: str | None = None,
    prompt: str | None = None,
) -> Conditions | None:
    """The conditions of n clips of `seconds`; a genre, tempo, bar count, role, key or prompt not given
    stays unknown (null). None for an unconditional model. `prompt` as prompt_for returns it."""
    check_tempo(bpm, bars)
    if model.conditioner is None:
        for name, value in (("role", role), ("key", key), ("prompt", prompt)):
            if value is not None:
                raise UserError(f"{name} {value!r}: this model is unconditional")
        return None
    genre_id = model.conditioner.genre_id(genre)
    role_id = model.conditioner.role_id(role)
    key_id = model.conditioner.key_id(key)
    text = mask = None
    if prompt is not None:
        text, mask = encode_prompts([prompt] * n, device)

    def full(value: float, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.full((n,), value, dtype=dtype, device=device)

    roles = full(role_id, torch.long) if role is not None else None
    keys = full(key_id, torch.long) if key is not None else None
    genres, timing = full(genre_id, torch.long), (full(bpm or 0.0), full(seconds), full(float(bars or 0)))
    return Conditions(genres, *timing, role=roles, key=keys, text=text, text_mask=mask)


def prompt_for(
    model: LoopDiffusion,
    prompt: str | None,
    *,
    genre: str | None = None,
    bpm: float | None = None,
    key: str | None = None,
    role: str | None = None,
    name: str = "prompt",
) -> str | None:
    """A prompt as the model will read it: refused by a model trained without text, checked (text, not
    empty, not too long), and for the prompt (not the negative one) with any mention that contradicts a
    structured control replaced by that control's value (io.prompts.reconcile): the structured value wins."""
    if prompt is None:
        return None
    if model.conditioner is None or not model.conditioner.cfg.text:
        raise UserError(f"{name}: this model was trained without text conditioning")
    text = check_prompt(prompt, name)
    if name != "prompt":
        return text
    return reconcile(text, genres=model.conditioner.genres, genre=genre, bpm=bpm, key=key, role=role)


def loop_conditions(
    model: LoopDiffusion,
    genre: str | None,
    bpm: float,
    bars: int,
    n: int,
    device: torch.device | str,
    role: str | None = None,
    key: str | None = None,
    prompt: str | None = None,
) -> Conditions | None:
    """The conditions of n loops of one genre, tempo, length, role, key and prompt (None for an unconditional model)."""
    check_tempo(bpm, bars)
    seconds = bars * model.recipe.conditioning.beats_per_bar * 60.0 / bpm
    return clip_conditions(model, genre, bpm, bars, seconds, n, device, role, key, prompt)


def model_device(model: LoopDiffusion) -> torch.device:
    return next(model.unet.parameters()).device


def to_audio(model: LoopDiffusion, latent: Tensor, shape: LoopShape, decoder: LatentDecoding | None = None) -> Tensor:
    """Decode generated frames to exactly shape.samples: a circular period is resized, anything else cut;
    `decoder` in the autoencoder's place (a preview decoder), as LoopDiffusion.decode takes it."""
    if shape.circular:
        return resize_loop(model.decode(latent, loop=True, decoder=decoder), shape.samples)
    return model.decode(latent, shape.samples, decoder=decoder)


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


# --------------------------------------------------------------------------- what fits

# One run's longest output. Past it sampling takes hours and the model is far outside the
# windows it was trained on; longer material is made in pieces (inpaint continues a clip).
MAX_SECONDS = 600.0


# The scratch of one head in a fused attention kernel, in elements: a block of scores and their
# exponentials, at most 256 queries × 512 keys (PyTorch's CPU flash kernel; GPU kernels keep less).
FLASH_BLOCK = 2 * 256 * 512


def _unet_bytes(model: LoopDiffusion, length: int, batch: int) -> int:
    """Peak bytes of one U-Net call on (batch, channels, length), weights aside: the skips it keeps,
    plus the largest stage's working tensors. Attention runs in SDPA's fused kernels (unet.SelfAttention
    hands them contiguous inputs), which never hold an (L × L) score matrix: their scratch is a few
    query-by-key blocks (FLASH_BLOCK), so attention is linear in L like the rest."""
    cfg = model.recipe.model
    factor = model.factor
    length = -(-length // factor) * factor
    widths = [cfg.base_channels * m for m in cfg.channel_mults]
    lengths = [length // 2**i for i in range(len(widths))]
    skips = cfg.base_channels * length + sum(
        cfg.blocks_per_level * c * n + (c * n // 2 if i < len(widths) - 1 else 0)
        for i, (c, n) in enumerate(zip(widths, lengths))
    )
    working = 0
    for i, (c, n) in enumerate(zip(widths, lengths)):
        inputs = c + max(c, widths[min(i + 1, len(widths) - 1)])  # an up stage: its input and a skip
        level = (4 * inputs + 6 * c) * n
        if i in cfg.attention_levels:  # 12 c·n: q, k, v, their rotations and products; 8 d·n: float64 angles
            heads = max(1, c // cfg.head_channels)
            level = max(level, 12 * c * n + 8 * (c // heads) * n + heads * FLASH_BLOCK)
        working = max(working, level)
    data = 12 * (model.data_channels + 4) * length  # the sampler's state, the tempo clock, guidance copies
    return batch * (skips + working + data) * _element_bytes(model)


def _codec_bytes(model: LoopDiffusion, frames: int, batch: int) -> int:
    """Peak bytes of encoding or decoding `frames` latent frames (the decoder mirrors the encoder):
    the widest level's working tensors, the resize of a loop period and the audio itself."""
    samples = frames * model.hop_length
    audio = 8 * model.audio_channels * samples  # the audio and its loop resize (a spectrum, twice)
    ae = model.autoencoder
    if ae is None:
        return batch * audio * _element_bytes(model)
    widths = [ae.cfg.base_channels * m for m in [1, *ae.cfg.channel_mults]]
    lengths = [samples]
    for stride in ae.cfg.strides:
        lengths.append(lengths[-1] // stride)
    # a level: its input, SnakeBeta's temporaries, a padded copy, the conv's output and the residual sum
    level = max(
        12 * c * n + 4 * widths[min(i + 1, len(widths) - 1)] * lengths[min(i + 1, len(lengths) - 1)]
        for i, (c, n) in enumerate(zip(widths, lengths))
    )
    return batch * (level + audio) * _element_bytes(model)


def _element_bytes(model: LoopDiffusion) -> int:
    return next(model.unet.parameters()).element_size()


def peak_bytes(model: LoopDiffusion, shape: LoopShape, batch: int, guided: bool, tile: bool = True) -> int:
    """An upper estimate of the memory a run of `batch` clips of `shape` needs beyond the weights:
    the larger of the U-Net's (a batch twice as big under guidance; a loop as `tile` has it run,
    LoopDiffusion.network_frames) and the autoencoder's.

    Measured on real runs it lies between the peak of the live tensors and three times it
    (tests/test_sampling.py); the margin is room for the allocator's fragmentation.
    """
    frames = model.network_frames(shape.frames, shape.circular, tile)
    context = 2 * model.autoencoder.decoder_context() if model.autoencoder is not None else 0
    denoise = _unet_bytes(model, max(frames, shape.frames), batch * (2 if guided else 1))
    codec = _codec_bytes(model, shape.frames + context, batch)
    return max(denoise, codec)


def free_bytes(device: torch.device) -> int:
    """Memory this process can still take on `device`: a GPU's free memory plus what PyTorch
    holds cached there, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    import psutil  # an accelerate dependency

    return psutil.virtual_memory().available


def check_fits(
    model: LoopDiffusion, shape: LoopShape, batch: int, guided: bool, bar: float | None = None, tile: bool = True
) -> None:
    """Refuse, before anything is allocated, a run longer than MAX_SECONDS or one whose estimated peak
    memory (peak_bytes) exceeds what the model's device has free, naming the longest (or the most) that fits.

    `bar`: samples per bar, when the request is in bars (the answers are then in whole bars); `tile` as
    for peak_bytes.
    """
    rate, step = model.sample_rate, bar or model.hop_length

    def length(samples: int) -> str:
        bars = round(samples / bar) if bar else 0
        return f"{samples / rate:.1f} s" + (f" ({bars} bar{'s' if bars != 1 else ''})" if bar else "")

    advice = "ask for less, or make a shorter clip and continue it with `wavediff inpaint` (an --end past its end)"
    if shape.samples > MAX_SECONDS * rate:
        longest = round(math.floor(MAX_SECONDS * rate / step) * step)
        raise UserError(f"{length(shape.samples)} is longer than one run makes, {length(longest)}: {advice}")
    device = model_device(model)
    need, free = peak_bytes(model, shape, batch, guided, tile), free_bytes(device)
    if need <= free:
        return
    noun = "loop" if bar else "clip"
    what = (f"{batch} {noun}s" if batch > 1 else f"a {noun}") + f" of {length(shape.samples)}"
    short = f"{what} would need about {_size(need)} of memory on {device.type}, which has {_size(free)} free"
    if batch > 1 and peak_bytes(model, shape, 1, guided, tile) <= free:
        most = _largest(1, batch - 1, lambda k: peak_bytes(model, shape, k, guided, tile) <= free)
        raise UserError(f"{short}: at most {most} fit at once, so ask for fewer")

    def fits(steps: int) -> bool:
        return peak_bytes(model, clip_shape(model, round(steps * step), shape.circular), batch, guided, tile) <= free

    most = _largest(1, math.floor(shape.samples / step), fits)
    longest = f"the longest that fits is {length(round(most * step))}" if most else "not even the shortest fits"
    raise UserError(f"{short}: {longest}; {advice}")


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The largest k in [lo, hi] with ok(k), for ok true up to some point and false after; 0 if none."""
    if not ok(lo):
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _size(count: int) -> str:
    """Bytes in binary units, for people."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    exponent = min(len(units) - 1, int(math.log(max(count, 1), 1024)))
    return f"{count / 1024**exponent:,.1f} {units[exponent]}"
