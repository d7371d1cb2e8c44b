"""Metrics. How well an autoencoder reconstructs: the three numbers the field reports
(multi-resolution STFT distance, mel distance, SI-SDR), and a one-file round trip to listen
to. How well loops loop: tempo against the asked tempo, and the click at the wrap.

Reconstruction metrics are computed sample by sample and then averaged, so a number does
not depend on the batch size (auraloss's spectral convergence would otherwise pool a whole
batch). Samples go through the model whole, as `wavediff encode` sends them.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from wavediff import audio
from wavediff.encode import audio_samples, check_audio_shards, equal_length_batches, load_autoencoder
from wavediff.losses import METRIC_FFT_SIZES, ReconstructionMetrics
from wavediff.shards import MANIFEST_NAME, shard_paths
from wavediff.tempo import estimate_tempo, loop_samples

METRICS = ("stft", "mel", "si_sdr")
TEMPO_MATCHES = ("exact", "double", "half", "miss")
# Loops are measured as they are played, tiled to at least this long: the tempo estimator
# needs several beats, and a one-bar loop at 170 BPM is 1.4 s.
TEMPO_SECONDS = 10.0


@torch.inference_mode()
def evaluate_autoencoder(
    ae_ckpt: str | os.PathLike,
    shards_folder: str | os.PathLike,
    split: str = "val",
    max_samples: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Mean STFT distance, mel distance and SI-SDR (dB) over the samples of one split.

    Samples shorter than the largest metric FFT size cannot be measured; they are counted
    in 'too_short', not averaged.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be positive or None, got {max_samples}")
    model, recipe, ae_id = load_autoencoder(ae_ckpt, device)
    manifest = check_audio_shards(shards_folder, model, recipe.sample_rate)
    if split not in manifest["splits"] or not manifest["splits"][split]["shards"]:
        raise ValueError(f"{Path(shards_folder) / MANIFEST_NAME}: the '{split}' split has no shards to evaluate")
    device = next(model.parameters()).device
    metrics = ReconstructionMetrics(recipe.sample_rate).to(device)
    paths = shard_paths(shards_folder, manifest, split)
    totals = dict.fromkeys(METRICS, 0.0)
    counted = too_short = 0

    def long_enough() -> Iterator[tuple[str, torch.Tensor]]:
        nonlocal too_short
        taken = 0
        for path in paths:
            for key, _, wav in audio_samples(path, recipe.sample_rate):
                if max_samples is not None and taken >= max_samples:
                    return
                taken += 1
                if wav.shape[-1] < max(METRIC_FFT_SIZES):
                    too_short += 1
                    continue
                yield key, wav

    for _, x in equal_length_batches(long_enough(), batch_size):
        x = x.to(device)
        recon, _ = model(x)
        for i in range(x.shape[0]):
            for name, value in metrics(recon[i : i + 1], x[i : i + 1]).items():
                totals[name] += value
            counted += 1
    if not counted:
        raise ValueError(
            f"{Path(shards_folder) / MANIFEST_NAME}: no '{split}' sample is long enough to measure"
            f" (at least {max(METRIC_FFT_SIZES)} samples)"
        )
    return {
        "autoencoder": ae_id,
        "split": split,
        "samples": counted,
        "too_short": too_short,
        **{name: total / counted for name, total in totals.items()},
    }


@torch.inference_mode()
def reconstruct_file(
    ae_ckpt: str | os.PathLike,
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    device: str | torch.device | None = None,
) -> Path:
    """Encode and decode one file at the autoencoder's rate and channels, keeping its length;
    the format of `out_path` comes from its suffix."""
    model, recipe, _ = load_autoencoder(ae_ckpt, device)
    wav, sr = audio.load(in_path, recipe.sample_rate, model.cfg.channels)
    recon, _ = model(wav[None].to(next(model.parameters()).device))
    return audio.save(out_path, recon[0].float().cpu(), sr)


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
        raise ValueError(f"seam_jump needs (samples,) or (channels, samples), ≥ 2 samples; got {tuple(wav.shape)}")
    x = (wav if wav.dim() == 1 else audio.convert_channels(wav, 1)[0]).double()
    n = x.shape[-1]
    bad = [b for b in boundaries or () if not 0 < b < n]
    if bad:
        raise ValueError(f"bar boundaries must lie inside the loop (0 < b < {n}), got {bad}")
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
        raise ValueError(f"asked tempo must be positive, got {asked}")
    if not 0 <= tolerance < 1 / 3:
        raise ValueError(f"tolerance must be in [0, 1/3), or exact, double and half overlap; got {tolerance}")
    for name, factor in (("exact", 1.0), ("double", 2.0), ("half", 0.5)):
        if abs(estimated / (asked * factor) - 1) <= tolerance:
            return name
    return "miss"


def loop_report(items: Iterable[tuple[torch.Tensor, int, float, int]], beats_per_bar: int = 4) -> dict[str, Any]:
    """Tempo hits and seam quality over (wav, sample_rate, asked_bpm, bars) loops.

    Tempo is estimated blind, with estimate_tempo's fixed default prior and never the
    asked tempo (a prior centred on the answer would turn misses into hits), from the
    loop tiled as it is played. Seams are measured against the bar lines of the asked
    grid that fall inside the loop; one-bar loops have none and count in "seam_unmeasured".
    "seam_wrap" is the median wrap jump itself, in mean steps: about 1 where the wrap is as
    smooth as an average sample step, more where it clicks (or lands on an onset).
    """
    counts = dict.fromkeys(TEMPO_MATCHES, 0)
    ratios: list[float] = []
    wraps: list[float] = []
    total = 0
    for wav, sr, bpm, bars in items:
        n = wav.shape[-1]
        tiled = wav.repeat(*(1,) * (wav.dim() - 1), math.ceil(TEMPO_SECONDS * sr / n))
        counts[tempo_match(estimate_tempo(tiled, sr), bpm)] += 1
        lines = [b for b in (loop_samples(bpm, k, sr, beats_per_bar) for k in range(1, bars)) if b < n]
        seam = seam_jump(wav, lines)
        wraps.append(seam["wrap"])
        if seam["ratio"] is not None:
            ratios.append(seam["ratio"])
        total += 1
    if not total:
        raise ValueError("loop_report needs at least one loop")
    return {
        "loops": total,
        "tempo": counts,
        "tempo_fraction": {name: count / total for name, count in counts.items()},
        "seam_wrap": statistics.median(wraps),
        "seam_ratio": statistics.median(ratios) if ratios else None,
        "seam_unmeasured": total - len(ratios),
    }
