"""The eval suite (`wavediff eval`, `wavediff eval-folders`): a generated set against a
reference set, genre by genre, on the loop measures (tempo, seam), distribution distances
(FD and KID on log-mel and MFCC frames), diversity and genre adherence (a small classifier
trained on the reference shards). No pretrained network is needed, so nothing is downloaded.
A model conditioned on key is asked for keys and judged by librosa's chroma (evaluation.keys);
one conditioned on text also makes loops from a genre's name (and a role's) alone, which the
classifiers judge (prompt adherence). Tempo and key verdicts of librosa stand beside ours
(evaluation.independent), so a metric is not graded only by the code it grades.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from wavediff.config import SamplingConfig
from wavediff.errors import UserError
from wavediff.evaluation.clips import Clip, folder_clips, shard_clips
from wavediff.evaluation.images import spectrogram_grid, write_png
from wavediff.evaluation.keys import key_report
from wavediff.evaluation.loops import loop_report
from wavediff.evaluation.sets import diversity, frechet_distance, kernel_inception_distance
from wavediff.generation.generate import generate
from wavediff.generation.samplers import check_settings
from wavediff.generation.save import loop_name
from wavediff.io.keys import KEYS
from wavediff.io.prompts import ROLE_WORDS
from wavediff.models.checkpoint import resolve_checkpoint
from wavediff.models.classifier import GenreClassifier, genre_accuracy
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.factory import load_classifier, load_denoiser
from wavediff.models.features import ANALYSIS_RATE, HOP, N_FFT, N_MELS, N_MFCC, ClipFeatures, clip_features
from wavediff.shards.format import read_manifest

FEATURE_KINDS = ("logmel", "mfcc")
VAL_REPORT = "val-accuracy.json"  # a classifier run's val accuracy, written by train-classifier
GRID_PER_SIDE = 2  # loops per genre drawn on each side of the spectrogram grid


def _frames(features: Sequence[ClipFeatures], kind: str) -> np.ndarray:
    return torch.cat([getattr(f, kind) for f in features]).numpy()


def _or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an undefined number (or a ratio over a zero) is null."""
    return None if value is None or not math.isfinite(value) else value


def _loop_summary(clips: Sequence[Clip]) -> dict[str, Any] | None:
    """Tempo fractions (ours, and librosa's with the share where the two agree) and seam of the
    clips that are loops (loop_report), None when there are none."""
    items = [(c.audio, c.sample_rate, c.bpm, c.bars) for c in clips if c.loop]
    if not items:
        return None
    r = loop_report(items)
    seam = {"seam_ratio": _or_none(r["seam_ratio"]), "seam_wrap": r["seam_wrap"]}
    library = {"librosa": r["tempo_librosa_fraction"], "judges_agree": r["tempo_agree"]}
    return {"loops": r["loops"], **r["tempo_fraction"], **library, **seam}


def _compare(
    gen: Sequence[Clip],
    gen_features: Sequence[ClipFeatures],
    ref: Sequence[Clip],
    ref_features: Sequence[ClipFeatures],
    predicted: Sequence[str] | None,
    seed: int,
) -> dict[str, Any]:
    """Every metric between one generated and one reference set."""
    out: dict[str, Any] = {"clips": {"generated": len(gen), "reference": len(ref)}, "fd": {}, "kid": {}}
    for kind in FEATURE_KINDS:
        a, b = _frames(gen_features, kind), _frames(ref_features, kind)
        measurable = len(a) >= 2 and len(b) >= 2
        out["fd"][kind] = frechet_distance(a, b) if measurable else None
        out["kid"][kind] = kernel_inception_distance(a, b, seed=seed) if measurable else None
    out["loops"] = {"generated": _loop_summary(gen), "reference": _loop_summary(ref)}
    gen_emb = torch.stack([f.embedding() for f in gen_features]).numpy()
    ref_emb = torch.stack([f.embedding() for f in ref_features]).numpy()
    out["diversity"] = {
        "generated_same_condition": _or_none(diversity(gen_emb, [(c.genre, c.bpm, c.bars) for c in gen])),
        "generated_same_genre": _or_none(diversity(gen_emb, [c.genre for c in gen])),
        "reference_same_genre": _or_none(diversity(ref_emb, [c.genre for c in ref])),
    }
    if predicted is not None:
        out["genre_adherence"] = sum(p == c.genre for p, c in zip(predicted, gen)) / len(gen)
        out["classified_as"] = dict(sorted(Counter(predicted).items()))
    return out


def compare_sets(
    generated: Sequence[Clip],
    reference: Sequence[Clip],
    classifier: GenreClassifier | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Generated against reference clips, overall and per genre both sets hold.

    FD and KID on log-mel and MFCC frames; tempo hits and seam ratio of the loops of each
    set; diversity (RMS dB between loops' log-mel profiles) among generated loops of the same
    condition and of the same genre, and among reference loops of the same genre; with a
    classifier, the share of generated clips it assigns to their genre (genre adherence).
    """
    if not generated or not reference:
        raise UserError(f"comparing sets needs clips on both sides, got {len(generated)} and {len(reference)}")
    gen_features = [clip_features(c.audio, c.sample_rate, c.loop) for c in generated]
    ref_features = [clip_features(c.audio, c.sample_rate, c.loop) for c in reference]
    predicted = None
    if classifier is not None:
        predicted = [classifier.classify(c.audio, c.sample_rate) for c in generated]
    report: dict[str, Any] = {
        "analysis": {"sample_rate": ANALYSIS_RATE, "n_fft": N_FFT, "hop": HOP, "mels": N_MELS, "mfccs": N_MFCC},
        "overall": _compare(generated, gen_features, reference, ref_features, predicted, seed),
        "genres": {},
    }
    gen_genres = {c.genre for c in generated} - {None}
    ref_genres = {c.genre for c in reference} - {None}
    for genre in sorted(gen_genres & ref_genres):
        g = [i for i, c in enumerate(generated) if c.genre == genre]
        r = [i for i, c in enumerate(reference) if c.genre == genre]
        report["genres"][genre] = _compare(
            [generated[i] for i in g],
            [gen_features[i] for i in g],
            [reference[i] for i in r],
            [ref_features[i] for i in r],
            None if predicted is None else [predicted[i] for i in g],
            seed,
        )
    report["genres_only_generated"] = sorted(gen_genres - ref_genres)
    report["genres_only_reference"] = sorted(ref_genres - gen_genres)
    return report


def classifier_report(classifier: GenreClassifier, shards: str | os.PathLike) -> dict[str, Any]:
    """How far the classifier's verdicts can be trusted: its accuracy on the whole clips of the
    shards' val split (None when the shards have no val split, or none of its clips is labelled
    with a class it knows: a role classifier on a pack of full mixes)."""
    manifest = read_manifest(shards, "audio")
    unknown = {"shards": str(shards), "split": "val", "accuracy": None, "genres": classifier.genres}
    if "val" not in manifest.splits or not manifest.splits["val"].samples:
        return unknown
    labelled = [(c.audio, c.sample_rate, getattr(c, classifier.label)) for c in shard_clips(shards, "val")]
    if not any(label in classifier.genres for *_, label in labelled):
        return unknown
    accuracy = genre_accuracy(classifier, labelled)
    return {"shards": str(shards), "split": "val", **accuracy, "genres": classifier.genres}


def stored_classifier_report(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The val accuracy train-classifier wrote beside the run (RUN/val-accuracy.json), when it is
    of this very checkpoint; else only the checkpoint (accuracy None)."""
    folder = resolve_checkpoint(checkpoint)
    path = folder.parent.parent / VAL_REPORT
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        stored = None
    if (
        isinstance(stored, dict)
        and stored.get("checkpoint")
        and Path(stored["checkpoint"]).resolve() == folder.resolve()
    ):
        return stored
    return {"checkpoint": str(folder), "accuracy": None}


def plan_conditions(
    reference: Sequence[Clip], genres: Sequence[str | None], n: int, per_condition: int, seed: int = 0
) -> list[tuple[str | None, float, int, int]]:
    """(genre, bpm, bars, how many) to generate: n loops split evenly over `genres` (None: any),
    at the tempos and lengths of that genre's reference loops, drawn in a seeded order (cycled
    when n asks for more), `per_condition` seeds each, so both sets share one condition mix."""
    if n < 1 or per_condition < 1:
        raise UserError(f"n and loops per condition must be at least 1, got {n} and {per_condition}")
    rng = np.random.default_rng(seed)
    plan: list[tuple[str | None, float, int, int]] = []
    for i, genre in enumerate(genres):
        wanted = n // len(genres) + (i < n % len(genres))
        pool = [c for c in reference if c.loop and (genre is None or c.genre == genre)]
        if not pool or not wanted:
            continue
        order = rng.permutation(len(pool))
        for k in range(math.ceil(wanted / per_condition)):
            clip = pool[order[k % len(pool)]]
            plan.append((genre, float(clip.bpm), int(clip.bars), min(per_condition, wanted - k * per_condition)))
    if not plan:
        raise UserError("no reference loop of the model's genres has a tempo and bar count to generate at")
    return plan


def _grid_rows(generated: Sequence[Clip], reference: Sequence[Clip]) -> tuple[list[str], list]:
    genres = sorted({c.genre for c in generated} & {c.genre for c in reference} - {None}) or [None]
    rows = []
    for genre in genres:
        sides = [
            [(c.audio, c.sample_rate) for c in clips if genre is None or c.genre == genre][:GRID_PER_SIDE]
            for clips in (generated, reference)
        ]
        rows.append(tuple(sides))
    return [g or "all" for g in genres], rows


def write_grid(path: str | os.PathLike, generated: Sequence[Clip], reference: Sequence[Clip]) -> dict[str, Any]:
    """The spectrogram grid PNG (see wavediff.evaluation.images) and its legend."""
    names, rows = _grid_rows(generated, reference)
    written = write_png(path, spectrogram_grid(rows, GRID_PER_SIDE))
    return {"path": str(written), "rows": names, "columns": f"{GRID_PER_SIDE} generated | {GRID_PER_SIDE} reference"}


def _role_plan(judge: GenreClassifier | None, reference: Sequence[Clip], genre: str) -> list[str | None]:
    """The roles the prompts of `genre` name: each role the role judge knows that the reference has
    loops of in that genre; [None] (genre only) without a role judge or roles in the reference."""
    if judge is None:
        return [None]
    held = {c.role for c in reference if c.genre == genre and c.loop and c.bpm and c.bars}
    return [r for r in judge.genres if r in held] or [None]


def prompt_adherence(
    model: LoopDiffusion,
    judge: GenreClassifier,
    reference: Sequence[Clip],
    genres: Sequence[str],
    per_genre: int,
    settings: SamplingConfig,
    seed: int,
    role_judge: GenreClassifier | None = None,
) -> dict[str, Any]:
    """How often the classifiers assign loops made from a prompt alone (no structured control but
    the tempo and length of a reference loop of that genre and role: a loop needs a length) to the
    genre and role the prompt names: "<genre> loop", or "<genre> <role> loop" for each role the role
    judge knows and the reference holds in that genre. Without a role judge or roles in the
    reference (the built-in pack's loops are full mixes), "judged" says genre only. Genres without
    a reference loop are left out."""
    rows: list[tuple[str, str | None, str, str | None]] = []  # (genre, role) asked, (genre, role) heard
    for genre in genres:
        for role in _role_plan(role_judge, reference, genre):
            candidates = (c for c in reference if c.genre == genre and c.loop and c.bpm and c.bars)
            clip = next((c for c in candidates if role in (None, c.role)), None)
            if clip is None:
                continue
            prompt = f"{genre} {ROLE_WORDS[role][0]} loop" if role else f"{genre} loop"
            audio, _ = generate(
                model,
                genre=None,
                bpm=clip.bpm,
                bars=clip.bars,
                n=per_genre,
                seed=seed,
                settings=settings,
                prompt=prompt,
            )
            for wav in audio:
                heard_role = role_judge.classify(wav, model.sample_rate) if role and role_judge else None
                rows.append((genre, role, judge.classify(wav, model.sample_rate), heard_role))
            seed += per_genre

    def share(hits: Sequence[bool]) -> float | None:
        return round(sum(hits) / len(hits), 4) if hits else None

    by_genre: dict[str, list[str]] = {}
    for genre, _, heard, _ in rows:
        by_genre.setdefault(genre, []).append(heard)
    report: dict[str, Any] = {
        "loops": len(rows),
        "judged": ["genre", "role"] if any(r[1] for r in rows) else ["genre"],
        "genre": share([g == h for g, _, h, _ in rows]),
        "per_genre": {g: share([v == g for v in vs]) for g, vs in by_genre.items()},
        "classified_as": {g: dict(sorted(Counter(vs).items())) for g, vs in by_genre.items()},
    }
    if report["judged"] == ["genre"]:
        report["genre_only_because"] = (
            "no role classifier was given" if role_judge is None else "no reference loop is named with a role it knows"
        )
        return report
    with_role = [r for r in rows if r[1]]
    report["role"] = share([r == h for _, r, _, h in with_role])
    report["genre_and_role"] = share([g == hg and r == hr for g, r, hg, hr in with_role])
    report["per_role"] = {
        role: share([h == role for _, r, _, h in with_role if r == role])
        for role in dict.fromkeys(r[1] for r in with_role)
    }
    return report


def evaluate_model(
    checkpoint: str | os.PathLike,
    ref_shards: str | os.PathLike,
    *,
    n: int = 64,
    steps: int | None = None,
    cfg_scale: float | None = None,
    sampler: str | None = None,
    per_condition: int = 2,
    classifier: str | os.PathLike | None = None,
    role_classifier: str | os.PathLike | None = None,
    split: str = "all",
    seed: int = 0,
    device: str | torch.device | None = None,
    grid: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate n loops at the reference shards' genres, tempos and lengths, and compare (compare_sets).

    Loops are split evenly over the model's genres; each condition (genre, bpm, bars) is
    taken from a reference loop and made with `per_condition` seeds, so "diversity among
    loops of the same condition" catches a model that ignores its noise. Reference clips
    of genres the model does not know are left out. `steps`, `cfg_scale` and `sampler`
    default to the checkpoint's (a distilled student's: its few steps without guidance);
    `grid` writes the spectrogram PNG there. A text model's prompt adherence is judged by the
    genre `classifier`, and by the `role_classifier` (train-classifier --label role) when given.
    """
    model = load_denoiser(checkpoint, device)
    given = {"steps": steps, "cfg_scale": cfg_scale, "sampler": sampler}
    settings = replace(model.recipe.sampling, **{k: v for k, v in given.items() if v is not None})
    check_settings(settings)
    judge = load_classifier(classifier) if classifier is not None else None
    role_judge = load_classifier(role_classifier) if role_classifier is not None else None
    for given, loaded, label in ((classifier, judge, "genre"), (role_classifier, role_judge, "role")):
        if loaded is not None and loaded.label != label:
            raise UserError(f"{given}: a {loaded.label} classifier, where a {label} classifier is asked for")
    reference = shard_clips(ref_shards, split)
    known = model.conditioner.genres if model.conditioner is not None and model.recipe.conditioning.genre else []
    if known:
        reference = [c for c in reference if c.genre in known]
        if not reference:
            raise UserError(f"{ref_shards}: no reference clip of the model's genres ({', '.join(known)})")
    plan = plan_conditions(reference, known or [None], n, per_condition, seed)
    keyed = model.conditioner is not None and model.recipe.conditioning.key
    keys = np.random.default_rng(seed).permutation(len(KEYS))  # each condition asks for the next key
    generated: list[Clip] = []
    asked: list[tuple[int, Tensor, int]] = []
    started, next_seed = time.perf_counter(), seed
    for i, (genre, bpm, bars, count) in enumerate(tqdm(plan, desc="generate", unit="condition", disable=not progress)):
        key = KEYS[keys[i % len(KEYS)]] if keyed else None
        audio, info = generate(
            model, genre=genre, bpm=bpm, bars=bars, n=count, seed=next_seed, settings=settings, key=key
        )
        generated += [
            Clip(wav, model.sample_rate, loop_name(info, s), genre, bpm, bars, loop=True)
            for wav, s in zip(audio, info["seeds"])
        ]
        asked += [(KEYS.index(key), wav, model.sample_rate) for wav in audio] if key else []
        next_seed += count
    prompted = None
    if judge is not None and model.conditioner is not None and model.recipe.conditioning.text and known:
        prompted = prompt_adherence(model, judge, reference, known, per_condition, settings, next_seed, role_judge)
    generating = time.perf_counter() - started
    report: dict[str, Any] = {
        "checkpoint": str(resolve_checkpoint(checkpoint)),
        "reference": str(ref_shards),
        "split": split,
        "settings": {
            "n": len(generated),
            "per_condition": per_condition,
            "seed": seed,
            "steps": settings.steps,
            "sampler": settings.sampler,
            "schedule": settings.schedule,
            "cfg_scale": settings.cfg_scale,
        },
        "classifier": None
        if judge is None
        else {"checkpoint": str(resolve_checkpoint(classifier)), **classifier_report(judge, ref_shards)},
    }
    if role_judge is not None:
        report["role_classifier"] = {
            "checkpoint": str(resolve_checkpoint(role_classifier)),
            **classifier_report(role_judge, ref_shards),
        }
    started = time.perf_counter()
    report.update(compare_sets(generated, reference, judge, seed))
    if keyed:
        report["key_accuracy"] = key_report(asked)
    if prompted is not None:
        report["prompt_adherence"] = prompted
    if grid is not None:
        report["grid"] = write_grid(grid, generated, reference)
    report["seconds"] = {"generating": round(generating, 2), "measuring": round(time.perf_counter() - started, 2)}
    return report


def evaluate_folders(
    generated: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    classifier: str | os.PathLike | None = None,
    seed: int = 0,
    grid: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """compare_sets between two folders of audio (see wavediff.evaluation.clips for what sidecars add):
    loops from another system can be scored against the same reference."""
    judge = load_classifier(classifier) if classifier is not None else None
    gen, ref = folder_clips(generated), folder_clips(reference)
    report: dict[str, Any] = {
        "generated": str(generated),
        "reference": str(reference),
        "classifier": None if judge is None else stored_classifier_report(classifier),
        **compare_sets(gen, ref, judge, seed),
    }
    if grid is not None:
        report["grid"] = write_grid(grid, gen, ref)
    return report
