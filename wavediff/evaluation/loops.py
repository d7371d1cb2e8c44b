"""How well loops loop: the estimated tempo against the asked one (double and half counted
apart), by our estimator and by librosa's beside it, and the click at the wrap against the
jumps at the loop's own bar lines."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from wavediff.errors import UserError
from wavediff.evaluation.independent import librosa_tempo
from wavediff.evaluation.tempo import estimate_tempo
from wavediff.io import audio
from wavediff.io.audio import loop_samples

TEMPO_MATCHES = ("exact", "double", "half", "miss")
# Loops are measured as they are played, tiled to at least this long: the tempo estimator
# needs several beats, and a one-bar loop at 170 BPM is 1.4 s. It is told the period, so the
# repetition tiling creates (any audio, noise too, repeats at the loop's length) is not
# read as a beat.
TEMPO_SECONDS = 10.0


def seam_jump(wav: torch.Tensor, boundaries: Sequence[int] | None = None) -> dict[str, float | None]:
    """How much the wrap of a loop jumps, compared with its bar boundaries.

    Each jump is one sample step |x[b] - x[b-1]| of the mono mix, in units of the mean
    step |Δx| over the whole loop; "wrap" is the step from the last sample to the first.
    Spectral flux would mislead here: a loop starts on a downbeat, so its wrap has an onset
    by design, and so do its bar lines, which is why the wrap is judged against them.
    Returns {"wrap", "bars" (median over `boundaries`, sample indices), "ratio" (wrap /
    bars)}; "bars" and "ratio" are None without boundaries. Silence measures 0, and a
    ratio over bar steps of exactly 0 is 0 for a wrap of 0, else infinite.
    """
    if wav.dim() not in (1, 2) or wav.shape[-1] < 2:
        raise UserError(f"seam_jump needs (samples,) or (channels, samples), ≥ 2 samples; got {tuple(wav.shape)}")
    x = (wav if wav.dim() == 1 else audio.convert_channels(wav, 1)[0]).double()
    n = x.shape[-1]
    bad = [b for b in boundaries or () if not 0 < b < n]
    if bad:
        raise UserError(f"bar boundaries must lie inside the loop (0 < b < {n}), got {bad}")
    scale = float(x.diff().abs().mean())

    def jump(b: int) -> float:  # the step into sample b; b = 0 is the wrap
        step = abs(float(x[b] - x[b - 1]))
        return step / scale if scale > 0 else 0.0

    wrap = jump(0)
    if not boundaries:
        return {"wrap": wrap, "bars": None, "ratio": None}
    bars = statistics.median(jump(b) for b in boundaries)
    ratio = wrap / bars if bars > 0 else (0.0 if wrap == 0 else math.inf)
    return {"wrap": wrap, "bars": bars, "ratio": ratio}


def tempo_match(estimated: float, asked: float, tolerance: float = 0.04) -> str:
    """One of "exact", "double", "half", "miss": the estimate within a relative `tolerance`
    of the asked tempo, of twice it or of half it. Octave errors are counted apart because an
    onset-periodicity estimator makes them on loops that are right (a half-time groove
    repeats every two beats). NaN (no onsets found) is a miss."""
    if not asked > 0:
        raise UserError(f"asked tempo must be positive, got {asked}")
    if not 0 <= tolerance < 1 / 3:
        raise UserError(f"tolerance must be in [0, 1/3), or exact, double and half overlap; got {tolerance}")
    for name, factor in (("exact", 1.0), ("double", 2.0), ("half", 0.5)):
        if abs(estimated / (asked * factor) - 1) <= tolerance:
            return name
    return "miss"


def loop_report(items: Iterable[tuple[torch.Tensor, int, float, int]], beats_per_bar: int = 4) -> dict[str, Any]:
    """Tempo hits and seam quality over (wav, sample_rate, asked_bpm, bars) loops.

    Tempo is estimated blind, with estimate_tempo's fixed default prior and never the
    asked tempo (a prior centred on the answer would turn misses into hits), from the
    loop tiled as it is played, with its period given (see TEMPO_SECONDS). Seams are
    measured against the bar lines of the asked grid that fall inside the loop; one-bar
    loops have none and count in "seam_unmeasured".
    "seam_wrap" is the median wrap jump itself, in mean steps: about 1 where the wrap is as
    smooth as an average sample step, more where it clicks (or lands on an onset).
    The same tiled audio goes to librosa's beat tracker (evaluation.independent), judged by the
    same rule: "tempo_librosa" counts its verdicts, "tempo_agree" is the share of loops whose
    two estimates lie within tempo_match's tolerance of each other.
    """
    counts = dict.fromkeys(TEMPO_MATCHES, 0)
    library = dict.fromkeys(TEMPO_MATCHES, 0)
    agree = 0
    ratios: list[float] = []
    wraps: list[float] = []
    total = 0
    for wav, sr, bpm, bars in items:
        n = wav.shape[-1]
        tiled = wav.repeat(*(1,) * (wav.dim() - 1), math.ceil(TEMPO_SECONDS * sr / n))
        ours, theirs = estimate_tempo(tiled, sr, period=n / sr), librosa_tempo(tiled, sr)
        counts[tempo_match(ours, bpm)] += 1
        library[tempo_match(theirs, bpm)] += 1
        agree += math.isfinite(ours) and math.isfinite(theirs) and tempo_match(theirs, ours) == "exact"
        lines = [b for b in (loop_samples(bpm, k, sr, beats_per_bar) for k in range(1, bars)) if b < n]
        seam = seam_jump(wav, lines)
        wraps.append(seam["wrap"])
        if seam["ratio"] is not None:
            ratios.append(seam["ratio"])
        total += 1
    if not total:
        raise UserError("loop_report needs at least one loop")
    return {
        "loops": total,
        "tempo": counts,
        "tempo_fraction": {name: count / total for name, count in counts.items()},
        "tempo_librosa": library,
        "tempo_librosa_fraction": {name: count / total for name, count in library.items()},
        "tempo_agree": agree / total,
        "seam_wrap": statistics.median(wraps),
        "seam_ratio": statistics.median(ratios) if ratios else None,
        "seam_unmeasured": total - len(ratios),
    }
