"""Drum and bass voices for the loop synthesizer, in vectorized numpy.

A drum voice renders one hit, which the sequencer copies onto its grid; the bass voice
renders a whole line at once, because glides, filter envelopes and wobbles belong to
notes. Filters work in the frequency domain (a magnitude response on an FFT or STFT), so
a sweeping resonant filter costs a few FFTs rather than a per-sample Python loop, and a
loop's audio is filtered circularly: what leaves the end comes back at the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Square-wave partials of the TR-808 cymbal/hat circuit (Hz): the metallic clang.
_HAT_PARTIALS = np.array([205.3, 304.4, 369.6, 522.7, 540.0, 800.0])


def _seconds(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _fade_tail(x: np.ndarray, sr: int, seconds: float = 0.005) -> np.ndarray:
    """Ramp the last few ms to zero, so a truncated decay never ends in a step."""
    k = min(x.shape[-1], max(1, int(seconds * sr)))
    x[..., -k:] *= np.linspace(1.0, 0.0, k)
    return x


def band(
    x: np.ndarray, sr: int, low_hz: float | None = None, high_hz: float | None = None, order: int = 2
) -> np.ndarray:
    """Butterworth-magnitude band limit along the last axis (zero phase, circular)."""
    n = x.shape[-1]
    f = np.fft.rfftfreq(n, 1.0 / sr)
    gain = np.ones_like(f)
    if low_hz is not None:
        gain /= np.sqrt(1.0 + (low_hz / np.maximum(f, 1e-3)) ** (2 * order))
    if high_hz is not None:
        gain /= np.sqrt(1.0 + (f / high_hz) ** (2 * order))
    return np.fft.irfft(np.fft.rfft(x, axis=-1) * gain, n, axis=-1)


def _noise(
    rng: np.random.Generator, n: int, sr: int, low_hz: float | None, high_hz: float | None, width: float
) -> np.ndarray:
    """Stereo band-limited noise of unit RMS: a shared mid plus an independent side of `width`."""
    mid, side = band(rng.standard_normal((2, n)), sr, low_hz, high_hz)
    mid /= np.sqrt(np.mean(mid**2)) + 1e-12
    side /= np.sqrt(np.mean(side**2)) + 1e-12
    return np.stack([mid + width * side, mid - width * side]) / (1.0 + width)


def _top(sr: int, hz: float) -> float:
    """A high corner that stays under Nyquist at low sample rates."""
    return min(hz, 0.45 * sr)


def kick(
    sr: int,
    rng: np.random.Generator,
    *,
    start_hz: float,
    end_hz: float,
    sweep_s: float,
    decay_s: float,
    click: float,
    drive: float,
) -> np.ndarray:
    """A pitch-swept sine (the 909/808 body) with a short noise click; mono, peak 1."""
    n = int(decay_s * 7 * sr)
    t = _seconds(n, sr)
    freq = end_hz + (start_hz - end_hz) * np.exp(-t / sweep_s)
    body = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / decay_s)
    k = min(n, int(0.02 * sr))
    tick = np.zeros(n)
    tick[:k] = band(rng.standard_normal(k), sr, 1500.0, _top(sr, 9000.0)) * np.exp(-t[:k] / 0.0015)
    x = np.tanh(drive * (body + click * tick / (np.abs(tick).max() + 1e-12)))
    return _fade_tail(x / np.abs(x).max(), sr)


def snare(
    sr: int,
    rng: np.random.Generator,
    *,
    tone_hz: float,
    tone_decay_s: float,
    noise_decay_s: float,
    noise_level: float,
    width: float,
) -> np.ndarray:
    """Two drum-head modes with a small pitch drop, plus band-passed noise (the wires); stereo."""
    n = int(max(tone_decay_s, noise_decay_s) * 7 * sr)
    t = _seconds(n, sr)
    bend = 1.0 + 0.25 * np.exp(-t / 0.008)
    phase = 2 * np.pi * tone_hz * np.cumsum(bend) / sr
    tone = (np.sin(phase) + 0.45 * np.sin(1.47 * phase)) * np.exp(-t / tone_decay_s)
    wires = _noise(rng, n, sr, 1200.0, _top(sr, 10000.0), width) * np.exp(-t / noise_decay_s)
    x = tone / np.abs(tone).max() + noise_level * wires / np.abs(wires).max()
    x = np.tanh(1.5 * x / np.abs(x).max())
    return _fade_tail(x / np.abs(x).max(), sr)


def clap(
    sr: int, rng: np.random.Generator, *, bursts: int, spacing_s: float, decay_s: float, center_hz: float, width: float
) -> np.ndarray:
    """Several hands a few ms apart, then the room: noise bursts and a longer tail; stereo."""
    last = (bursts - 1) * spacing_s
    n = int((last + decay_s * 7) * sr)
    t = _seconds(n, sr)
    env = sum(np.where(t >= k * spacing_s, np.exp(-(t - k * spacing_s) / 0.0035), 0.0) for k in range(bursts))
    env = env + 0.45 * np.where(t >= last, np.exp(-(t - last) / decay_s), 0.0)
    x = _noise(rng, n, sr, center_hz / 1.7, _top(sr, center_hz * 2.5), width) * env
    x = np.tanh(2.5 * x / np.abs(x).max())  # tame the noise's crest, as a drum machine's circuit does
    return _fade_tail(x / np.abs(x).max(), sr)


def hat(sr: int, rng: np.random.Generator, *, decay_s: float, metallic: float, tune: float, width: float) -> np.ndarray:
    """High-passed noise blended with 808-style square partials; stereo. Long decay = open hat."""
    n = int(decay_s * 7 * sr) + int(0.002 * sr)
    t = _seconds(n, sr)
    metal = np.sign(np.sin(2 * np.pi * tune * _HAT_PARTIALS[:, None] * t)).sum(0) / len(_HAT_PARTIALS)
    low = min(7000.0, 0.3 * sr)
    metal = band(metal, sr, low, order=4)
    metal /= np.sqrt(np.mean(metal**2)) + 1e-12
    x = (1 - metallic) * _noise(rng, n, sr, low, None, width) + metallic * metal
    env = np.exp(-t / decay_s) * np.minimum(1.0, t / 0.0005 + 1e-3)
    x = x * env
    return _fade_tail(x / np.abs(x).max(), sr)


@dataclass(frozen=True)
class BassPatch:
    """A subtractive bass voice; one patch covers rolling, reese, wobble and 808 basses."""

    wave: str = "saw"  # "saw", "square" or "sine"
    voices: int = 1  # detuned oscillators (a reese stacks several)
    detune_cents: float = 0.0  # spread between the outermost voices
    sub: float = 0.0  # level of a sine at the fundamental, added after the filter
    cutoff_hz: float | None = None  # None: no filter
    resonance: float = 0.8  # filter Q
    env_octaves: float = 0.0  # filter-envelope depth above the cutoff
    env_decay_s: float = 0.1
    lfo_octaves: float = 0.0  # wobble depth above the cutoff
    attack_s: float = 0.003
    decay_s: float | None = None  # amplitude decay (plucks, 808s); None sustains
    release_s: float = 0.02
    glide_s: float = 0.05  # pitch glide time for notes with glide_from
    drive: float = 1.0  # tanh saturation (adds harmonics a phone speaker can play)


@dataclass(frozen=True)
class Note:
    start: int  # sample
    length: int  # samples before release
    midi: float
    velocity: float = 1.0
    glide_from: float | None = None  # slide in from this pitch (808)
    lfo_period: int = 0  # wobble period in samples; 0: no wobble


def _saw(cycles: np.ndarray, step: np.ndarray) -> np.ndarray:
    """PolyBLEP sawtooth: the naive ramp with its jump smoothed, so bass notes do not alias."""
    p = cycles % 1.0
    y = 2.0 * p - 1.0
    head = p < step
    x = p[head] / step[head]
    y[head] -= 2 * x - x * x - 1
    tail = p > 1.0 - step
    x = (p[tail] - 1.0) / step[tail]
    y[tail] -= x * x + 2 * x + 1
    return y


def _oscillator(wave: str, cycles: np.ndarray, step: np.ndarray) -> np.ndarray:
    if wave == "saw":
        return _saw(cycles, step)
    if wave == "square":
        return 0.5 * (_saw(cycles, step) - _saw(cycles + 0.5, step))
    if wave == "sine":
        return np.sin(2 * np.pi * cycles)
    raise ValueError(f"unknown bass wave {wave!r}; choose saw, square or sine")


def fold(x: np.ndarray, n: int) -> np.ndarray:
    """Wrap everything past sample n back onto the start: the tail of a loop plays over its head."""
    pad = -x.shape[-1] % n
    x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    return x.reshape(*x.shape[:-1], -1, n).sum(-2)


def spectral_lowpass(x: np.ndarray, sr: int, cutoff_hz: np.ndarray, q: float) -> np.ndarray:
    """Resonant 24 dB/oct low-pass whose cutoff moves per sample, applied to a periodic signal.

    Each STFT frame is multiplied by the response at that frame's cutoff; the signal is
    padded circularly, so the filtered loop still wraps seamlessly.
    """
    n = x.shape[-1]
    n_fft = 2 ** round(math.log2(sr * 0.04))
    hop = n_fft // 8
    padded = np.pad(x, n_fft, mode="wrap")
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(torch.from_numpy(padded), n_fft, hop, window=window, return_complex=True)
    centers = np.arange(spec.shape[-1]) * hop - n_fft
    fc = cutoff_hz[np.mod(centers, n)]
    r = np.fft.rfftfreq(n_fft, 1.0 / sr)[:, None] / fc[None, :]
    response = 1.0 / ((1.0 - r**2) ** 2 + (r / q) ** 2)
    y = torch.istft(spec * torch.from_numpy(response), n_fft, hop, window=window, length=len(padded))
    return y.numpy()[n_fft : n_fft + n]


def bass_line(notes: list[Note], n: int, sr: int, patch: BassPatch) -> np.ndarray:
    """Render notes into a mono loop of n samples (tails folded onto the start), peak 1."""
    release = int(patch.release_s * sr)
    end = max([note.start + note.length + release for note in notes] + [n])
    osc, sub, bright = np.zeros(end), np.zeros(end), np.zeros(end)
    spread = np.linspace(-0.5, 0.5, patch.voices) * patch.detune_cents if patch.voices > 1 else np.zeros(1)
    for note in notes:
        m = note.length + release
        t = _seconds(m, sr)
        pitch = np.full(m, float(note.midi))
        if note.glide_from is not None:
            pitch += (note.glide_from - note.midi) * np.exp(-t / patch.glide_s)
        freq = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
        note_off = np.clip(1.0 - (np.arange(m) - note.length) / max(release, 1), 0.0, 1.0)
        amp = note.velocity * np.minimum(1.0, t / patch.attack_s) * note_off
        if patch.decay_s is not None:
            amp *= np.exp(-t / patch.decay_s)
        cycles = np.cumsum(freq) / sr
        wave = sum(
            _oscillator(patch.wave, cycles * 2 ** (c / 1200) + k / len(spread), freq * 2 ** (c / 1200) / sr)
            for k, c in enumerate(spread)
        ) / len(spread)
        span = slice(note.start, note.start + m)
        osc[span] += amp * wave
        sub[span] += amp * np.sin(2 * np.pi * cycles)
        lift = patch.env_octaves * np.exp(-t / patch.env_decay_s)
        if note.lfo_period:
            lift = lift + patch.lfo_octaves * 0.5 * (1 - np.cos(2 * np.pi * np.arange(m) / note.lfo_period))
        bright[span] = np.maximum(bright[span], lift)
    osc = fold(osc, n)
    if patch.cutoff_hz is not None:  # where notes overlap across the wrap, the brighter one sets the filter
        bright = np.max(np.pad(bright, (0, -end % n)).reshape(-1, n), axis=0)
        cutoff = np.minimum(patch.cutoff_hz * 2.0**bright, 0.45 * sr)
        osc = spectral_lowpass(osc, sr, cutoff, patch.resonance)
    x = osc + patch.sub * fold(sub, n)
    peak = np.abs(x).max()
    if peak == 0:
        return x
    x = np.tanh(patch.drive * x / peak)
    return x / np.abs(x).max()
