"""The shard folder contract: names, the manifest, and reading it back.

The writers (data_tools.shard, wavediff.latents.encode) and the readers (shards.loader,
shards.reader, inspection) import this, so the folder layout is spelled out in one place:

    OUT/train-000000.tar …   WebDataset shards, KEY.flac + KEY.json per sample
    OUT/val-000000.tar …
    OUT/manifest.json        written last: a folder without it is not a finished dataset
    OUT/.swap-<host>-<pid>/  only while a job swaps a new set in (wavediff.shards.swap)

Each split of the manifest lists its `shards`, its `samples` and, since the count became part
of the contract, `shard_samples`: the samples in each shard, so a reader notices a shard that
ends early (tarfile takes a damaged header for the end of the archive). Older manifests
without it still load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wavediff.config import from_dict
from wavediff.errors import ConfigError, UserError
from wavediff.io.files import read_json_object
from wavediff.shards.swap import recover, unsettled

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SPLITS = ("train", "val")
SHARD_NAME = re.compile(r"^(train|val)-(\d{6})\.tar$")
# Tar members get a fixed timestamp so the same input gives the same bytes.
TAR_MTIME = 946684800  # 2000-01-01


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


@dataclass
class Split:
    """One split of a shard folder: its shards, in order, and what they hold."""

    shards: list[str] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    frames: int | None = None  # latent frames (latent shards)
    shard_samples: list[int] | None = None  # samples in each shard; older manifests lack it


@dataclass
class LatentStats:
    """Per-channel statistics of a latent set: what the denoiser normalizes by."""

    frames: int
    mean: list[float] | None  # None (all three) for a set of no frames
    std: list[float] | None
    overall_std: float | None


@dataclass
class Manifest:
    """manifest.json: what a shard folder holds. Audio and latent folders share the first fields;
    the audio sharder adds what it found and skipped, `encode` the autoencoder and statistics."""

    kind: Literal["audio", "latent"]
    version: int
    sample_rate: int  # of the audio (for latents: of the audio they stand for)
    channels: int  # audio channels (likewise)
    splits: dict[str, Split]
    created_by: str = ""
    genres: dict[str, int] = field(default_factory=dict)  # samples per genre
    # audio shards (data_tools.shard)
    options: dict[str, Any] = field(default_factory=dict)  # the sharder's options, as run
    sources: list[str] = field(default_factory=list)
    files: int = 0
    tags: dict[str, int] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)  # samples per kind: loop, one-shot, unknown
    roles: dict[str, int] = field(default_factory=dict)  # samples per role (drums, bass, …, unknown)
    # per estimated field (bpm, bars, key, …): samples per source (name, sidecar, csv, estimated, unknown)
    metadata_sources: dict[str, dict[str, int]] = field(default_factory=dict)
    bpm: dict[str, float] | None = None  # {"min", "max"} of the known tempos
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"path", "reason"} per file left out
    duplicates: int = 0
    silent_chunks: int = 0
    ignored_files: int = 0
    warnings: list[str] = field(default_factory=list)
    part: list[int] | None = None  # [I, N]: part I of an N-task job array
    parts: int | None = None  # a merged job array: how many parts
    # latent shards (wavediff encode)
    autoencoder: str | None = None  # the weights hash of the autoencoder that made them
    latent_dim: int = 0
    latent_rate: float = 0.0
    hop_length: int = 0
    source: str = ""
    stats: LatentStats | None = None
    shard_range: list[int] | None = None  # a partial latent manifest: the input shards it encoded
    source_shards: int | None = None  # … of how many


def parse_manifest(raw: Mapping[str, Any], where: str | os.PathLike) -> Manifest:
    """A manifest's JSON object, checked key by key and type by type (`where` names it in errors)."""
    if isinstance(raw.get("version"), int) and raw["version"] > MANIFEST_VERSION:
        newer = raw["version"]
        raise UserError(f"{where}: manifest version {newer} is newer than this wavediff reads ({MANIFEST_VERSION})")
    try:
        manifest = from_dict(Manifest, raw)
    except ConfigError as e:
        raise UserError(f"{where}: manifest {e}") from None
    for split, entry in manifest.splits.items():
        counts = entry.shard_samples
        if counts is not None and (len(counts) != len(entry.shards) or not all(n >= 0 for n in counts)):
            raise UserError(f"{where}: split '{split}' has shard_samples that are not one count per shard")
    return manifest


def read_manifest(folder: str | os.PathLike, kind: str | None = None) -> Manifest:
    """The manifest of a shard folder, checked enough that a reader can trust its
    fields; `kind` ("audio", …) guards against pointing one pipeline at another's data.

    Raises FileNotFoundError when there is none and ValueError when it is unusable,
    each naming the file.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        recover(folder)  # a job was killed swapping a new set in: the previous set comes back
    except OSError:
        pass  # a folder we may not write: with a manifest its set is whole anyway, without one see below
    if not path.is_file():
        swaps = unsettled(folder)
        if swaps:
            raise FileNotFoundError(
                f"{path}: no manifest while a job swaps new shards in, or was killed doing so on another host "
                f"(the previous set is in {swaps[0]}; the next job writing into {folder} on that host restores it)"
            )
        raise FileNotFoundError(
            f"{path}: no manifest — not a finished shard folder (write one with `wavediff data shard`)"
        )
    manifest = parse_manifest(read_json_object(path, "manifest"), path)
    if kind is not None and manifest.kind != kind:
        raise UserError(f"{path}: holds {manifest.kind} shards, expected {kind}")
    return manifest


def shard_paths(folder: str | os.PathLike, manifest: Manifest, split: str) -> list[Path]:
    """The shard files of one split (empty when the split has none)."""
    entry = manifest.splits.get(split)
    return [Path(folder) / name for name in entry.shards] if entry else []


def shard_counts(manifest: Manifest, split: str) -> list[int] | None:
    """The samples in each shard of a split, as its writer counted them; None when the
    manifest predates the count and the split has several shards (one shard holds them all)."""
    entry = manifest.splits.get(split)
    if not entry:
        return []
    if entry.shard_samples is not None:
        return list(entry.shard_samples)
    return [entry.samples] if len(entry.shards) == 1 else None


def shard_samples(folder: str | os.PathLike, manifest: Manifest) -> dict[Path, int]:
    """{shard path: samples it holds} for every shard whose count the manifest knows."""
    known = {}
    for split in manifest.splits:
        counts = shard_counts(manifest, split)
        if counts is not None:
            known.update(zip(shard_paths(folder, manifest, split), counts))
    return known


def is_shard(name: str) -> bool:
    return SHARD_NAME.match(name) is not None
