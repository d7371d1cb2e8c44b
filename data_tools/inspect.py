"""Check a shard folder against its manifest, and summarise it for people.

Inspection decodes every sample, so it finds what a training run would otherwise hit
hours in: a cut-off tar, a sample missing its JSON, audio at the wrong rate, a latent that
does not load or holds NaN, counts that disagree with the manifest, or shards left over
that the manifest does not list. Audio shards (`data shard`) and latent shards (`encode`)
are both understood.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wavediff.errors import AudioError, UserError
from wavediff.io import audio
from wavediff.shards.format import MANIFEST_NAME, SHARD_NAME, Manifest, read_manifest, shard_paths

# The members of one sample, by shard kind.
_EXTENSIONS = {"audio": ("flac", "json"), "latent": ("latent.npy", "json")}
LATENT_DTYPE = np.float16  # what `encode` writes


def inspect_shards(out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Verify every listed shard; returns {"ok", "problems": [one-line str], "splits":
    {split: {"shards", "samples", "seconds"(, "frames" for latents)}} as found}. A folder
    without a readable manifest, or of a kind not inspected here, raises UserError."""
    manifest = read_manifest(out)
    kind = manifest.kind
    if kind not in _EXTENSIONS:
        raise UserError(f"{Path(out) / MANIFEST_NAME}: cannot inspect {kind} shards (only audio and latent)")
    extensions = _EXTENSIONS[kind]
    check = _check_audio if kind == "audio" else _check_latent
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    keys_seen: dict[str, str] = {}
    listed = {name for entry in manifest.splits.values() for name in entry.shards}
    total = sum(len(entry.shards) for entry in manifest.splits.values())
    bar = tqdm(total=total, unit="shard", desc="inspect", disable=not progress)
    for split, entry in manifest.splits.items():
        samples, seconds, frames = 0, 0.0, 0
        for path in shard_paths(out, manifest, split):
            bar.update()
            try:
                members = _members(path)
            except (OSError, tarfile.TarError, EOFError) as e:
                problems.append(f"{path.name}: unreadable tar ({' '.join(str(e).split())})")
                continue
            for key, parts in members.items():
                where = f"{path.name}: {key}"
                if key in keys_seen:
                    problems.append(f"{where}: key also in {keys_seen[key]}")
                keys_seen[key] = path.name
                missing = [ext for ext in extensions if ext not in parts]
                if missing:
                    problems.append(f"{where}: no .{' or .'.join(missing)} member")
                    continue
                measured = check(where, parts, manifest, problems)
                if measured is not None:
                    samples += 1
                    seconds += measured[0]
                    frames += measured[1]
        found[split] = {"shards": len(entry.shards), "samples": samples, "seconds": round(seconds, 3)}
        if kind == "latent":
            found[split]["frames"] = frames
        if samples != entry.samples:
            problems.append(f"{split}: manifest says {entry.samples} samples, the shards hold {samples} good ones")
        elif abs(seconds - entry.seconds) > 0.01 + 1e-6 * samples:
            problems.append(f"{split}: manifest says {entry.seconds} s, the shards hold {seconds:.3f} s")
        elif kind == "latent" and frames != entry.frames:
            problems.append(f"{split}: manifest says {entry.frames} frames, the shards hold {frames}")
    bar.close()
    for path in sorted(os.listdir(out)):
        if SHARD_NAME.match(path) and path not in listed:
            problems.append(f"{path}: shard not listed in the manifest (left from another run?)")
    return {"ok": not problems, "problems": problems, "splits": found}


def _members(path: os.PathLike) -> dict[str, dict[str, bytes]]:
    """Members grouped by WebDataset key (the basename up to its first dot)."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition("/")[2].partition(".")
            samples[key][ext] = tar.extractfile(member).read()
    return samples


def _sample_json(where: str, parts: dict[str, bytes], problems: list[str]) -> dict[str, Any] | None:
    try:
        info = json.loads(parts["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{where}.json: invalid JSON ({e})")
        return None
    if not isinstance(info, dict):
        problems.append(f"{where}.json: not a JSON object")
        return None
    return info


def _check_audio(
    where: str, parts: dict[str, bytes], manifest: Manifest, problems: list[str]
) -> tuple[float, int] | None:
    """(seconds, samples) of an audio sample when it is sound, else None with the problem recorded."""
    rate, channels = manifest.sample_rate, manifest.channels
    info = _sample_json(where, parts, problems)
    if info is None:
        return None
    try:
        wav, sr = audio.decode(parts["flac"], f"{where}.flac")
    except AudioError as e:
        problems.append(str(e))
        return None
    if sr != rate or wav.shape[0] != channels:
        problems.append(f"{where}.flac: {sr} Hz × {wav.shape[0]} channels, the manifest says {rate} Hz × {channels}")
        return None
    duration = wav.shape[-1] / sr
    if (info.get("sample_rate"), info.get("channels")) != (rate, channels):
        problems.append(f"{where}.json: sample_rate/channels disagree with the manifest")
    if not isinstance(info.get("duration_s"), (int, float)) or abs(info["duration_s"] - duration) > 1.5 / sr:
        problems.append(f"{where}.json: duration_s {info.get('duration_s')} but the audio lasts {duration:.6f} s")
    return duration, wav.shape[-1]


def _check_latent(
    where: str, parts: dict[str, bytes], manifest: Manifest, problems: list[str]
) -> tuple[float, int] | None:
    """(seconds, frames) of a latent sample when it loads as the loader will read it (a float16
    (channels, frames ≥ 1) .npy, finite, never unpickled), else None with the problem recorded."""
    info = _sample_json(where, parts, problems)
    if info is None:
        return None
    name = f"{where}.latent.npy"
    try:
        latent = np.load(io.BytesIO(parts["latent.npy"]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        problems.append(f"{name}: does not load as a .npy array ({' '.join(str(e).split())})")
        return None
    if not isinstance(latent, np.ndarray):
        problems.append(f"{name}: does not load as a .npy array (an .npz archive)")
        return None
    channels = manifest.latent_dim
    if latent.dtype != LATENT_DTYPE:
        problems.append(f"{name}: {latent.dtype}, expected {np.dtype(LATENT_DTYPE)}")
        return None
    if latent.ndim != 2 or latent.shape[0] != channels or latent.shape[1] < 1:
        problems.append(f"{name}: shape {latent.shape}, expected ({channels}, frames ≥ 1)")
        return None
    if not np.isfinite(latent).all():
        problems.append(f"{name}: {int((~np.isfinite(latent)).sum())} non-finite value(s) (NaN or infinity)")
        return None
    frames = latent.shape[1]
    for field in ("autoencoder", "hop_length", "sample_rate"):
        if info.get(field) != getattr(manifest, field):
            problems.append(
                f"{where}.json: {field} {info.get(field)!r}, the manifest says {getattr(manifest, field)!r}"
            )
    duration = info.get("duration_s")
    rate = manifest.latent_rate
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration):
        problems.append(f"{where}.json: duration_s {duration!r} is not a number")
        duration = 0.0
    elif isinstance(rate, (int, float)) and abs(frames - duration * rate) > 1:
        problems.append(f"{where}.json: duration_s {duration} is {duration * rate:.1f} frames, the latent has {frames}")
    return float(duration), frames


def format_manifest(manifest: Manifest, report: dict[str, Any] | None = None) -> str:
    """A readable summary of a shard folder (and of its inspection, when given)."""
    lines = _latent_summary(manifest) if manifest.kind == "latent" else _audio_summary(manifest)
    if report is not None:
        if report["ok"]:
            lines.append("check: OK — every shard opens and every sample decodes")
        else:
            lines.append(f"check: {len(report['problems'])} problem(s)")
            lines += [f"  {p}" for p in report["problems"]]
    return "\n".join(lines)


def _shards(count: int) -> str:
    return f"{count} shard{'s' if count != 1 else ''}"


def _latent_summary(manifest: Manifest) -> list[str]:
    rate = manifest.latent_rate
    rate = rate if isinstance(rate, (int, float)) and rate > 0 else None  # frames per second, when known
    lines = [
        f"latent shards of autoencoder {manifest.autoencoder or '?'} — {manifest.created_by or 'unknown writer'}",
        f"  {manifest.latent_dim} channels at {'?' if rate is None else f'{rate:g}'} frames/s"
        f" (hop {manifest.hop_length} of {manifest.sample_rate} Hz audio,"
        f" {manifest.channels} channel(s)), from {manifest.source or '?'}",
    ]
    for split, entry in manifest.splits.items():
        frames = entry.frames
        length = f"{frames if frames is not None else '?':>10} frames"
        if isinstance(frames, int) and rate is not None:
            length += f" = {frames / rate:>9.2f} s"
        lines.append(f"  {split:<6}{entry.samples:>8} samples {length} in {_shards(len(entry.shards))}")
    genres = manifest.genres
    if genres:
        lines.append("genres: " + ", ".join(f"{name} ({n})" for name, n in genres.items()))
    stats = manifest.stats
    if stats is not None and stats.mean and stats.std:
        mean, std = stats.mean, stats.std
        lines.append(
            f"statistics (train, {stats.frames} frames):"
            f" mean per channel {min(mean):.3g} … {max(mean):.3g}, std per channel {min(std):.3g} … {max(std):.3g},"
            f" overall std {stats.overall_std if stats.overall_std is not None else math.nan:.3g}"
        )
    else:
        lines.append("statistics: none (no train frames)")
    return lines


def _audio_summary(manifest: Manifest) -> list[str]:
    lines = [
        f"{manifest.kind} shards at {manifest.sample_rate} Hz, {manifest.channels} channel(s)"
        f" — {manifest.created_by or 'unknown writer'}"
    ]
    for split, entry in manifest.splits.items():
        lines.append(
            f"  {split:<6}{entry.samples:>8} samples {entry.seconds / 3600:>9.2f} h in {_shards(len(entry.shards))}"
        )
    skipped = manifest.skipped
    lines.append(
        f"files: {manifest.files} sharded, {len(skipped)} skipped"
        f" ({manifest.duplicates} duplicates), {manifest.ignored_files} not audio (ignored)"
    )
    for field in ("genres", "tags", "keys", "kinds", "roles"):
        counts = getattr(manifest, field)
        if counts:
            lines.append(f"{field}: " + ", ".join(f"{name} ({n})" for name, n in counts.items()))
    if manifest.metadata_sources:
        lines.append("where values came from (samples):")
        lines += [
            f"  {field:<5} " + ", ".join(f"{source} ({n})" for source, n in counts.items())
            for field, counts in manifest.metadata_sources.items()
        ]
    if manifest.bpm:
        lines.append(f"bpm: {manifest.bpm['min']:g}–{manifest.bpm['max']:g}")
    if skipped:
        lines.append("skipped:")
        lines += [f"  {s['path']}: {s['reason']}" for s in skipped]
    if manifest.warnings:
        lines.append("metadata warnings:")
        lines += [f"  {w}" for w in manifest.warnings]
    return lines
