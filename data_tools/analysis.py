"""Estimates of what a file's metadata leaves out: kind, role, tempo, bars, downbeat and key.

Producers' packs seldom write everything down, so the sharder (and `wavediff data tag`)
fills the gaps from the audio. Each estimate carries a confidence in [0, 1]; below
`THRESHOLD` the value stays None with a reason, since a wrong tempo teaches the model a
wrong clock while a null tempo only teaches it less.

- **Kind**: a one-shot is a single event that decays: its level peaks early, never rises
  sharply again to near that peak, and ends well below it; anything else is a loop.
- **Tempo and bars** of a loop: its length is the strongest clue, since a loop is a whole
  number of bars (1, 2, 4, 8 or 16), so every candidate tempo is 240·n / length for one of
  those n in 60–200 BPM. The onsets (librosa's onset strength of the percussive part) settle
  which: a candidate fits when its hits fall on its sixteenth-note grid (TEMPO_THRESHOLD), or
  fall on it more loosely (triplets, rolls) but better than at any tempo a few percent away
  (WEAK_TEMPO_THRESHOLD, SWEEP), and of the fitting ones (double and half often both fit) the
  fit weighed by a log-normal prior around 135 BPM wins. A length no candidate fits leaves the
  tempo unknown, and says so; when the two halves of the file have different tempos
  (librosa.feature.tempo on each), it says that.
- **Downbeat**: how far from the start the sixteenth grid of the onsets lies (about 0 for
  loops cut on the beat, as packs cut them).
- **Role** (drums, bass, melodic) from harmonic/percussive separation and where the energy
  lies; fx and vocal come only from names and tables.
- **Key** from chroma matched against the Krumhansl–Kessler key profiles; drum and fx parts
  get none.

librosa (spectrograms, onsets, tempo, chroma) is imported inside the estimators, never at
module level: with numba loading its kernels it takes seconds (0.5 s for `import librosa`,
several more for its spectral modules), paid only by a job that estimates. `preload` pays it
once in a parent before it forks workers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import median_filter

from wavediff.io import audio, keys

RATE = keys.CHROMA_RATE  # analysis sample rate: estimates do not depend on the shard rate
HOP = 256  # onset envelope hop: 11.6 ms frames
BAR_COUNTS = (1, 2, 4, 8, 16)
TEMPO_RANGE = (60.0, 200.0)  # BPM a loop's tempo is looked for in
# The prior that settles double against half: log-normal in BPM, centred where dance music
# sits. librosa's own (120 BPM, one octave) halves drum-and-bass and trap.
PRIOR_BPM, PRIOR_OCTAVES = 135.0, 0.7
MAX_LOOP_SECONDS = 64.0  # 16 bars at 60 BPM: anything longer is a song or a mix, not a loop
MAX_ANALYSIS_SECONDS = MAX_LOOP_SECONDS  # no estimate looks at more audio than this
HIGH_SHARE = 0.005  # role: the share of energy above 2 kHz that hats and snares bring…
PERCUSSIVE_SHARE = 0.15  # …with at least this share of percussive energy: drums
BASS_SHARE = 0.5  # role: without those, a part with this share of its tonal energy below 250 Hz is bass
REATTACK_DB = 8.0  # a rise this large after the first peak is a new event…
LOUD_DB = 10.0  # …when it comes within this much of the loudest point
DECAY_DB = 10.0  # a one-shot's last fifth is at least this far below its peak
TWO_TEMPO_SECONDS = 6.0  # files at least this long have each half's tempo compared
SILENCE_DB = -60.0
MIN_SECONDS = 0.01  # shorter than this nothing is estimated (the shortest recorded hits last 17 ms)
THRESHOLD = 0.5  # confidence below which an estimate stays None
KEY_THRESHOLD = 0.4  # a chroma that matches no key profile better than this has no clear key
TEMPO_THRESHOLD = 0.6  # the sixteenth-grid fit that makes a tempo (loops cut 0.1 s short or long stay below it)
WEAK_TEMPO_THRESHOLD = 0.5  # a fit from here to TEMPO_THRESHOLD counts only at the best-fitting tempo nearby…
SWEEP = 0.08  # …within ±8 % of it (a mis-cut loop's hits line up best at the tempo it was played at)…
SWEEP_SLACK = 0.02  # …give or take this much fit
ROLE_SECONDS = 20.0  # the role looks at no more than this much audio
KEY_SECONDS = 30.0  # and the key at no more than this
ROLE_WORDS_ONLY = ("fx", "vocal")  # roles the audio estimator never returns
KEYED_ROLES = ("bass", "melodic", "vocal")  # roles that get a key estimate


@dataclass(frozen=True)
class Estimate:
    """One estimated value: None (with the reason) when not confident enough."""

    value: Any = None
    confidence: float | None = None
    reason: str | None = None


def _librosa():
    import librosa

    return librosa


def preload() -> None:
    """Import the parts of librosa the estimators use (seconds: numba loads its compiled
    kernels), so that worker processes forked afterwards start with them loaded."""
    librosa = _librosa()
    # Attribute access is what loads a lazy librosa module.
    for used in (librosa.stft, librosa.feature.melspectrogram, librosa.onset.onset_strength, librosa.util.softmask):
        assert callable(used)


def _mono(wav: torch.Tensor, sr: int, seconds: float | None = None) -> np.ndarray:
    """(channels, samples) at sr → float32 mono at RATE, at most `seconds` long."""
    if seconds is not None:
        wav = wav[:, : int(seconds * sr)]
    return audio.conform(wav.float(), sr, RATE, 1)[0].numpy().astype(np.float32)


def _db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-10))


def _spectra(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(harmonic, percussive) magnitude spectrograms (n_fft 1024, HOP): Fitzgerald's median-filtering
    HPSS with soft masks, as librosa.decompose.hpss does (that module imports scikit-learn, seconds)."""
    librosa = _librosa()
    spec = np.abs(librosa.stft(y, n_fft=1024, hop_length=HOP))
    along_time = median_filter(spec, size=(1, 17), mode="reflect")
    along_freq = median_filter(spec, size=(17, 1), mode="reflect")
    harmonic = librosa.util.softmask(along_time, along_freq, power=2.0, split_zeros=False)
    percussive = librosa.util.softmask(along_freq, along_time, power=2.0, split_zeros=False)
    return spec * harmonic, spec * percussive


def _onsets(percussive: np.ndarray, sr: int = RATE) -> np.ndarray:
    """Onset strength of the percussive part, the median over mel bands: a wobbling bass or a
    pad's swell moves a few bands, a hit moves them all. Only bands below the source's Nyquist
    count (`sr`: the file's rate): an 8 kHz file's empty upper bands would make the median zero."""
    librosa = _librosa()
    mel = librosa.power_to_db(librosa.feature.melspectrogram(S=percussive**2, sr=RATE, fmax=min(sr, RATE) / 2))
    return librosa.onset.onset_strength(S=mel, sr=RATE, aggregate=np.median).astype(np.float64)


# --------------------------------------------------------------------------- kind


def estimate_kind(y: np.ndarray, duration: float) -> Estimate:
    """ "loop" or "one-shot" (see the module docstring): a one-shot reaches its peak early and,
    after it, never rises sharply (REATTACK_DB within ~17 ms) to within LOUD_DB of that peak
    again, and its last fifth lies DECAY_DB or more below the peak."""
    if duration > MAX_LOOP_SECONDS:
        return Estimate(reason=f"{duration:.0f} s long: a song or a mix, not a loop or a one-shot")
    hop = 128
    rms = _librosa().feature.rms(y=y, frame_length=512, hop_length=hop)[0]
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    loudest = float(level.max())
    attack = int(np.argmax(level >= loudest - 3.0))  # the first frame near the peak
    reattack = 0.0
    for t in range(attack + 1, len(level)):
        if level[t] >= loudest - LOUD_DB:
            reattack = max(reattack, float(level[t] - level[max(attack, t - 3) : t].min()))
    tail = level[int(len(level) * 0.8) :]
    decay = loudest - float(tail.mean()) if tail.size else 0.0
    early = attack * hop / RATE <= max(0.1, 0.3 * duration)
    if early and reattack < REATTACK_DB and decay >= DECAY_DB:
        return Estimate("one-shot", round(min(1.0, 0.5 + (REATTACK_DB - reattack) / (2 * REATTACK_DB)), 3))
    margin = max(reattack - REATTACK_DB, DECAY_DB - decay, 0.0 if early else REATTACK_DB)
    return Estimate("loop", round(min(1.0, 0.5 + margin / (2 * REATTACK_DB)), 3))


def _peaks(env: np.ndarray, fraction: float) -> list[int]:
    """Local maxima of the onset envelope above `fraction` of its largest."""
    if env.size < 3 or env.max() <= 0:
        return []
    limit = fraction * env.max()
    inner = (env[1:-1] >= env[:-2]) & (env[1:-1] > env[2:]) & (env[1:-1] >= limit)
    return [int(i) + 1 for i in np.flatnonzero(inner)]


# --------------------------------------------------------------------------- tempo


def _lag(bpm: float) -> float:
    """Frames per beat."""
    return 60.0 * RATE / HOP / bpm


def _onset_peaks(env: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in frames, sub-frame by parabolic interpolation; heights) of the envelope's peaks
    above 10 % of its largest: where the hits are, and how strong."""
    idx = np.array(_peaks(env, 0.1), dtype=np.int64)
    if idx.size == 0:
        return np.zeros(0), np.zeros(0)
    left, mid, right = env[idx - 1], env[idx], env[idx + 1]
    curve = left - 2 * mid + right
    shift = np.where(curve < 0, 0.5 * (left - right) / np.where(curve < 0, curve, -1.0), 0.0)
    return idx + np.clip(shift, -0.5, 0.5), mid


def _grid(peaks: np.ndarray, heights: np.ndarray, step: float) -> tuple[float, float]:
    """(fit, phase) of the grid of period `step` frames that the hits fall on best: fit is the
    height-weighted mean closeness, 1 when every hit is on the grid, about 0.3 for hits at random."""
    tolerance = max(1.0, 0.2 * step)
    phases = np.arange(0.0, step, 0.5)
    distance = (peaks[None, :] - phases[:, None]) % step
    distance = np.minimum(distance, step - distance)
    closeness = np.clip(1.0 - distance / tolerance, 0.0, 1.0)
    fits = (closeness * heights).sum(axis=1) / heights.sum()
    best = int(fits.argmax())
    return float(fits[best]), float(phases[best])


def _grid_fit(peaks: np.ndarray, heights: np.ndarray, bpm: float) -> float:
    """How well the hits fall on a sixteenth-note grid at `bpm`."""
    return _grid(peaks, heights, _lag(bpm) / 4)[0]


def _onset_tempo(env: np.ndarray) -> float:
    """librosa's tempo estimate (tempogram with a log-normal prior around 120 BPM)."""
    return float(_librosa().feature.tempo(onset_envelope=env, sr=RATE, hop_length=HOP)[0])


def _prior(bpm: float) -> float:
    return math.exp(-0.5 * (math.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)


def _same_tempo(a: float, b: float, tolerance: float = 0.04) -> bool:
    """Equal within `tolerance`, or an octave apart (halves of one loop often count differently)."""
    return any(abs(math.log2(a * k / b)) <= math.log2(1 + tolerance) for k in (0.5, 1.0, 2.0))


def _weak_fit(peaks: np.ndarray, heights: np.ndarray, fit: float, n: int, bpm: float) -> bool:
    """Whether a weak sixteenth-grid fit (hits partly off it: triplets, rolls, swing) still counts:
    it does when no tempo within ±SWEEP fits better, so the whole-bar tempo of the file's length
    is where its hits line up best. A loop cut a little short or long lines up best at the tempo
    it was played at, a few percent from every whole-bar tempo of its length."""
    return fit >= WEAK_TEMPO_THRESHOLD and fit >= _best_nearby(peaks, heights, bpm) - SWEEP_SLACK


def _best_nearby(peaks: np.ndarray, heights: np.ndarray, bpm: float) -> float:
    """The best sixteenth-grid fit at tempos within ±SWEEP of `bpm`."""
    return max(_grid_fit(peaks, heights, bpm * r) for r in np.linspace(1 - SWEEP, 1 + SWEEP, 33))


def estimate_tempo(env: np.ndarray, duration: float) -> tuple[Estimate, Estimate]:
    """(bpm, bars) of a loop; see the module docstring."""
    if duration > MAX_LOOP_SECONDS:
        reason = f"{duration:.0f} s long: a song or a mix; its tempo is not estimated from its length"
        return Estimate(reason=reason), Estimate(reason=reason)
    candidates = [(n, 240.0 * n / duration) for n in BAR_COUNTS]
    candidates = [(n, bpm) for n, bpm in candidates if TEMPO_RANGE[0] <= bpm <= TEMPO_RANGE[1]]
    if not candidates:
        reason = (
            f"{duration:.3f} s is no whole number of bars ({', '.join(map(str, BAR_COUNTS))})"
            f" at a tempo between {TEMPO_RANGE[0]:g} and {TEMPO_RANGE[1]:g} BPM"
        )
        return Estimate(reason=reason), Estimate(reason=reason)
    env = env[: max(3, round(min(duration, MAX_ANALYSIS_SECONDS) * RATE / HOP))]
    peaks, heights = _onset_peaks(env)
    if peaks.size < 3:
        reason = "too few onsets to check a tempo against"
        return Estimate(reason=reason), Estimate(reason=reason)
    onset_tempo = _onset_tempo(env)
    fits = [(_grid_fit(peaks, heights, bpm), n, bpm) for n, bpm in candidates]
    good = [fit for fit in fits if fit[0] >= TEMPO_THRESHOLD or _weak_fit(peaks, heights, *fit)]
    if not good:
        best = max(fits)
        tempos = ", ".join(f"{b:.1f}" for _, b in candidates)
        reason = (
            f"{duration:.3f} s is no whole number of bars at the onsets' tempo"
            f" (about {onset_tempo:.0f} BPM; {tempos} BPM do not fit)"
        )
        if max(_best_nearby(peaks, heights, b) for _, b in candidates) < TEMPO_THRESHOLD:
            # No sixteenth grid near any candidate (a drone, sparse or swung hits, free time): the
            # length alone leaves double against half open, so nothing is guessed.
            reason = f"no steady sixteenth grid in its onsets to check its length's tempos ({tempos} BPM) against"
        if duration >= TWO_TEMPO_SECONDS:
            half = len(env) // 2
            first, second = _onset_tempo(env[:half]), _onset_tempo(env[half:])
            if not _same_tempo(first, second):
                reason = f"two tempos: about {first:.0f} BPM in the first half, {second:.0f} BPM in the second"
        return Estimate(confidence=round(best[0], 3), reason=reason), Estimate(reason=reason)
    # Double and half often both fit; the fit weighed by the prior decides.
    fit, n, bpm = max(good, key=lambda g: g[0] * _prior(g[2]))
    return Estimate(round(bpm, 2), round(fit, 3)), Estimate(n, round(fit, 3))


def estimate_downbeat(env: np.ndarray, bpm: float) -> float:
    """Seconds from the start to the sixteenth-note grid the hits fall on, in (−½, ½] of a
    sixteenth: about 0 for a loop cut on the beat, as packs cut them (which sixteenth is the
    bar's first is not told)."""
    peaks, heights = _onset_peaks(env)
    step = _lag(bpm) / 4
    _, phase = _grid(peaks, heights, step) if peaks.size else (0.0, 0.0)
    if phase > step / 2:
        phase -= step
    return round(phase * HOP / RATE, 4)


# --------------------------------------------------------------------------- role and key


def estimate_role(harmonic: np.ndarray, percussive: np.ndarray) -> Estimate:
    """ "drums", "bass" or "melodic" from the HPSS spectrograms: a part with energy above 2 kHz
    (hats, snares, cymbals) and a fair percussive share is drums; one without, whose tonal
    energy lies mostly below 250 Hz, is bass; anything else is melodic. Kick-only parts read as bass."""
    total = (harmonic**2 + percussive**2).sum(axis=1)
    if total.sum() <= 0:
        return Estimate(reason="silent")
    freqs = _librosa().fft_frequencies(sr=RATE, n_fft=1024)
    high = float(total[freqs > 2000.0].sum() / total.sum())
    share = float((percussive**2).sum() / total.sum())
    tonal = (harmonic**2).sum(axis=1)
    low = float(tonal[freqs < 250.0].sum() / max(tonal.sum(), 1e-12))
    if high >= HIGH_SHARE and share >= PERCUSSIVE_SHARE:
        margin = min(math.log10(high / HIGH_SHARE), (share - PERCUSSIVE_SHARE) * 4)
        return Estimate("drums", round(min(1.0, 0.5 + margin), 3))
    if high < HIGH_SHARE and low >= BASS_SHARE:
        return Estimate("bass", round(min(1.0, 0.5 + (low - BASS_SHARE)), 3))
    return Estimate("melodic", 0.5)


def estimate_key(y: np.ndarray) -> Estimate:
    """The best of the 24 Krumhansl–Kessler keys for the loop's chroma; the confidence is the
    profile's correlation with it (tuning is taken as A440: packs are)."""
    best = keys.best_key(keys.chroma_of(y))  # the eval suite judges generated loops with the same estimator
    if best is None:
        return Estimate(reason="no pitched content")
    confidence = round(max(best[1], 0.0), 3)
    name = keys.KEYS[best[0]]
    if confidence < KEY_THRESHOLD:
        return Estimate(confidence=confidence, reason=f"no clear key (best {name}, correlation {confidence:.2f})")
    return Estimate(name, confidence)


# --------------------------------------------------------------------------- everything


def is_silent(wav: torch.Tensor) -> bool:
    """Below SILENCE_DB once any DC offset is taken away: a constant is no sound."""
    return audio.is_silent(wav - wav.mean(dim=-1, keepdim=True), SILENCE_DB)


def estimate(
    wav: torch.Tensor,
    sr: int,
    *,
    kind: str | None = None,
    role: str | None = None,
    bpm: float | None = None,
    bars_known: bool = False,
    key: str | None = None,
) -> dict[str, Estimate]:
    """Estimates of the fields not given (None): "kind", "role", "bpm", "bars", "downbeat",
    "key". Given values steer the rest: a one-shot gets no tempo, drums get no key. Never
    raises on odd audio; a value that cannot be had is None with its reason."""
    duration = wav.shape[-1] / sr
    given = {"kind": kind, "role": role, "bpm": bpm, "bars": bars_known or bpm or None, "key": key}
    missing = [name for name, value in given.items() if value is None]
    if not missing:
        return {}
    if duration < MIN_SECONDS:
        return dict.fromkeys(missing, Estimate(reason=f"{duration * 1000:.0f} ms long: too short to analyse"))
    if is_silent(wav):
        return dict.fromkeys(missing, Estimate(reason=f"silent (RMS below {SILENCE_DB:g} dBFS)"))
    with warnings.catch_warnings():  # librosa notes short inputs (a 0.2 s hit) that it handles
        warnings.simplefilter("ignore", UserWarning)
        return _estimate(wav, sr, duration, kind, role, bpm, key)


def _estimate(
    wav: torch.Tensor, sr: int, duration: float, kind: str | None, role: str | None, bpm: float | None, key: str | None
) -> dict[str, Estimate]:
    # A file too long to be a loop only gets a role and a key: a stretch from its start will do.
    y = _mono(wav, sr, MAX_ANALYSIS_SECONDS if duration <= MAX_LOOP_SECONDS else ROLE_SECONDS)
    harmonic, percussive = _spectra(y)
    env = _onsets(percussive, sr)
    out: dict[str, Estimate] = {}
    if kind is None:
        out["kind"] = estimate_kind(y, duration)
        kind = out["kind"].value
    if role is None:
        frames = int(ROLE_SECONDS * RATE / HOP)
        out["role"] = estimate_role(harmonic[:, :frames], percussive[:, :frames])
        role = out["role"].value
    if bpm is None:
        if kind == "one-shot":
            out["bpm"] = out["bars"] = Estimate(reason="a one-shot has no tempo")
        else:
            out["bpm"], out["bars"] = estimate_tempo(env, duration)
            if out["bpm"].value is not None:
                out["downbeat"] = Estimate(estimate_downbeat(env, out["bpm"].value), out["bpm"].confidence)
    if key is None:
        if role in KEYED_ROLES:
            out["key"] = estimate_key(y[: int(KEY_SECONDS * RATE)])
        else:
            out["key"] = Estimate(reason=f"a {role} part has no key" if role else "no key for a part of unknown role")
    return out
