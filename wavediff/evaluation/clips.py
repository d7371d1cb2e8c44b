"""Sets of clips to evaluate, with what is known about each: from audio shards or from a folder.

A clip is a loop when its metadata says so and gives its tempo and bar count: then its
tempo and seam can be measured against them. Metadata comes from the shard's json member,
or in a folder from a json sidecar beside the audio file (what `wavediff generate` and the
built-in pack write: `genre`, `bpm`, `bars`, and `role` where known); a folder of bare audio files is still a set
whose spectra can be compared.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from wavediff.config import ROLES
from wavediff.errors import UserError
from wavediff.io import audio
from wavediff.io.files import read_json_object
from wavediff.shards.format import MANIFEST_NAME, SPLITS, read_manifest, shard_paths
from wavediff.shards.reader import audio_samples

SPLIT_CHOICES = (*SPLITS, "all")


@dataclass
class Clip:
    audio: Tensor  # (channels, samples)
    sample_rate: int
    name: str  # where it came from: a shard key or a file path
    genre: str | None = None
    bpm: float | None = None
    bars: int | None = None
    loop: bool = False  # a whole number of bars that wraps: framed circularly, tempo and seam measured
    # drums, bass, … (config.ROLES) where a name, folder or table says: a role the sharder only
    # estimated from the audio (a full mix read as "drums") is no ground truth to judge against.
    role: str | None = None


def _positive(meta: Mapping[str, Any], field: str) -> float | None:
    value = meta.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def from_metadata(wav: Tensor, sample_rate: int, name: str, meta: Mapping[str, Any]) -> Clip:
    """A clip described by shard json or a sidecar; a loop needs positive `bpm` and `bars` and no
    `"loop": false`."""
    bpm, bars = _positive(meta, "bpm"), _positive(meta, "bars")
    genre = meta.get("genre") if isinstance(meta.get("genre"), str) else None
    role = meta.get("role") if meta.get("role") in ROLES and meta.get("role_source") != "estimated" else None
    loop = bpm is not None and bars is not None and bars == int(bars) and meta.get("loop") is not False
    return Clip(wav, sample_rate, name, genre, bpm, int(bars) if bars else None, loop, role)


def shard_clips(folder: str | os.PathLike, split: str = "all") -> list[Clip]:
    """Every sample of an audio shard folder's split ("train", "val" or "all"), in file order."""
    if split not in SPLIT_CHOICES:
        raise UserError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    manifest = read_manifest(folder, "audio")
    rate = manifest.sample_rate
    clips = [
        from_metadata(wav, rate, f"{path.name}:{key}", meta)
        for s in (SPLITS if split == "all" else (split,))
        for path in shard_paths(folder, manifest, s)
        for key, meta, wav in audio_samples(path, rate)
    ]
    if not clips:
        raise UserError(f"{Path(folder) / MANIFEST_NAME}: no samples in split {split!r}")
    return clips


def folder_clips(folder: str | os.PathLike) -> list[Clip]:
    """Every audio file under `folder` (recursively, sorted), each with its json sidecar if it has one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of audio files")
    clips = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and audio.is_audio_file(p)):
        wav, sr = audio.load(path)
        sidecar = path.with_suffix(".json")
        meta: Any = {}
        if sidecar.is_file():
            meta = read_json_object(sidecar, "sidecar")
        clips.append(from_metadata(wav, sr, str(path), meta))
    if not clips:
        raise UserError(f"{folder}: no audio files ({', '.join(sorted(audio.AUDIO_EXTENSIONS))})")
    return clips
