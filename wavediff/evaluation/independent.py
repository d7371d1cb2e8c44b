"""Judges that are not our own: tempo and key verdicts from librosa, reported beside ours so that
a metric is not graded only by the code it grades.

Tempo: librosa's beat tracker (`librosa.beat.beat_track`, dynamic programming over its own
onset envelope, prior at 120 BPM), scored by the same rule as ours (loops.tempo_match).

Key: our key judge (evaluation.keys) is also the estimator the sharder tags untagged packs with
(io.keys: constant-Q chroma, Krumhansl–Kessler profiles), so a model trained on those tags and
judged by it could agree with its teacher's mistakes. The second verdict shares none of that
code: librosa's CENS chroma (each frame normalised, quantised and smoothed over time, so a loud
hit weighs no more than a quiet bar) matched by correlation against Temperley's profiles
(Temperley 1999, "What's key for key?", the revised Krumhansl–Schmuckler set: weights set from
music theory, where Krumhansl–Kessler's come from listeners' probe-tone ratings, and the leading
tone weighs more). Two estimators built differently that agree on a loop make its key verdict
worth more; where they part, neither is taken as the truth (BENCHMARKS.md, "Evaluation judges",
gives both against the built-in pack's true keys).

librosa is imported inside the functions: it takes seconds to load.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from torch import Tensor

# Temperley (1999) major and minor profiles, tonic first.
TEMPERLEY_MAJOR = np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0])
TEMPERLEY_MINOR = np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0])
LIBROSA_RATE = 22050  # librosa's own default analysis rate


def _mono(audio: Tensor, sample_rate: int) -> np.ndarray:
    """(channels, samples) or (samples,) audio → mono float32 at LIBROSA_RATE, by librosa's resampler."""
    import librosa

    y = audio.float().cpu().numpy()
    y = y.mean(0) if y.ndim == 2 else y
    return librosa.resample(y, orig_sr=sample_rate, target_sr=LIBROSA_RATE) if sample_rate != LIBROSA_RATE else y


def librosa_tempo(audio: Tensor, sample_rate: int) -> float:
    """librosa's beat-tracker tempo in BPM of (channels, samples) audio; NaN when it hears no beat."""
    import librosa

    tempo, _ = librosa.beat.beat_track(y=_mono(audio, sample_rate), sr=LIBROSA_RATE)
    value = float(np.atleast_1d(tempo)[0])
    return value if value > 0 and math.isfinite(value) else math.nan


def librosa_key(audio: Tensor, sample_rate: int) -> int | None:
    """The key class (io.keys.KEYS order: majors C… B, then minors) whose Temperley profile best
    correlates with the audio's CENS chroma summed over time (tuning taken as A440, as packs are);
    None without pitched content."""
    import librosa

    with warnings.catch_warnings():  # as io.keys.short_loops_padded, not imported: this judge shares no code with it
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        chroma = librosa.feature.chroma_cens(y=_mono(audio, sample_rate), sr=LIBROSA_RATE, tuning=0.0).sum(axis=1)
    if not np.isfinite(chroma).all() or np.ptp(chroma) <= 1e-9:
        return None
    profiles = np.stack([np.roll(p, t) for p in (TEMPERLEY_MAJOR, TEMPERLEY_MINOR) for t in range(12)])
    centred = profiles - profiles.mean(1, keepdims=True)
    c = chroma - chroma.mean()
    scores = centred @ c / (np.linalg.norm(centred, axis=1) * np.linalg.norm(c))
    return int(np.argmax(scores))
