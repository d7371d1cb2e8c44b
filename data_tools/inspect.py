"""Check a shard folder against its manifest, and summarise it for people.

Inspection decodes every sample, so it finds what a training run would otherwise hit
hours in: a cut-off tar, a sample missing its JSON, audio at the wrong rate, counts
that disagree with the manifest, or shards left over that the manifest does not list.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import defaultdict
from typing import Any

from tqdm import tqdm

from wavediff.errors import AudioError
from wavediff.io import audio
from wavediff.shards.format import SHARD_NAME, read_manifest, shard_paths

_EXTENSIONS = ("flac", "json")


def inspect_shards(out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Verify every listed shard; returns {"ok", "problems": [one-line str], "splits":
    {split: {"shards", "samples", "seconds"}} as found}. A folder without a readable
    manifest raises (see wavediff.shards.format.read_manifest)."""
    manifest = read_manifest(out)
    rate, channels = manifest["sample_rate"], manifest["channels"]
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    keys_seen: dict[str, str] = {}
    listed = {name for entry in manifest["splits"].values() for name in entry["shards"]}
    total = sum(len(entry["shards"]) for entry in manifest["splits"].values())
    bar = tqdm(total=total, unit="shard", desc="inspect", disable=not progress)
    for split, entry in manifest["splits"].items():
        samples, seconds = 0, 0.0
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
                missing = [ext for ext in _EXTENSIONS if ext not in parts]
                if missing:
                    problems.append(f"{where}: no .{' or .'.join(missing)} member")
                    continue
                duration = _check_sample(where, parts, rate, channels, problems)
                if duration is not None:
                    samples += 1
                    seconds += duration
        found[split] = {"shards": len(entry["shards"]), "samples": samples, "seconds": round(seconds, 3)}
        if samples != entry.get("samples"):
            problems.append(
                f"{split}: manifest says {entry.get('samples')} samples, the shards hold {samples} good ones"
            )
        elif abs(seconds - entry.get("seconds", 0.0)) > 0.01 + 1e-6 * samples:
            problems.append(f"{split}: manifest says {entry.get('seconds')} s, the shards hold {seconds:.3f} s")
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


def _check_sample(where: str, parts: dict[str, bytes], rate: int, channels: int, problems: list[str]) -> float | None:
    """The sample's duration when it is sound, else None with the problem recorded."""
    try:
        info = json.loads(parts["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{where}.json: invalid JSON ({e})")
        return None
    if not isinstance(info, dict):
        problems.append(f"{where}.json: not a JSON object")
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
    return duration


def format_manifest(manifest: dict[str, Any], report: dict[str, Any] | None = None) -> str:
    """A readable summary of a shard folder (and of its inspection, when given)."""
    lines = [
        f"{manifest.get('kind', '?')} shards at {manifest['sample_rate']} Hz, {manifest['channels']} channel(s)"
        f" — {manifest.get('created_by', 'unknown writer')}"
    ]
    for split, entry in manifest["splits"].items():
        shards = len(entry["shards"])
        lines.append(
            f"  {split:<6}{entry.get('samples', '?'):>8} samples {entry.get('seconds', 0) / 3600:>9.2f} h"
            f" in {shards} shard{'s' if shards != 1 else ''}"
        )
    skipped = manifest.get("skipped", [])
    lines.append(
        f"files: {manifest.get('files', '?')} sharded, {len(skipped)} skipped"
        f" ({manifest.get('duplicates', 0)} duplicates), {manifest.get('ignored_files', 0)} not audio (ignored)"
    )
    for field in ("genres", "tags", "keys", "kinds", "roles"):
        counts = manifest.get(field) or {}
        if counts:
            lines.append(f"{field}: " + ", ".join(f"{name} ({n})" for name, n in counts.items()))
    if manifest.get("metadata_sources"):
        lines.append("where values came from (samples):")
        lines += [
            f"  {field:<5} " + ", ".join(f"{source} ({n})" for source, n in counts.items())
            for field, counts in manifest["metadata_sources"].items()
        ]
    if manifest.get("bpm"):
        lines.append(f"bpm: {manifest['bpm']['min']:g}–{manifest['bpm']['max']:g}")
    if skipped:
        lines.append("skipped:")
        lines += [f"  {s['path']}: {s['reason']}" for s in skipped]
    if manifest.get("warnings"):
        lines.append("metadata warnings:")
        lines += [f"  {w}" for w in manifest["warnings"]]
    if report is not None:
        if report["ok"]:
            lines.append("check: OK — every shard opens and every sample decodes")
        else:
            lines.append(f"check: {len(report['problems'])} problem(s)")
            lines += [f"  {p}" for p in report["problems"]]
    return "\n".join(lines)
