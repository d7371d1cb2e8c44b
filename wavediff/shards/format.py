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
from pathlib import Path
from typing import Any

from wavediff.errors import UserError
from wavediff.io.files import read_json_object
from wavediff.shards.swap import recover, unsettled

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SPLITS = ("train", "val")
SHARD_NAME = re.compile(r"^(train|val)-(\d{6})\.tar$")
_REQUIRED = {"version": int, "kind": str, "sample_rate": int, "channels": int, "splits": dict}
# Tar members get a fixed timestamp so the same input gives the same bytes.
TAR_MTIME = 946684800  # 2000-01-01


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def read_manifest(folder: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
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
    manifest = read_json_object(path, "manifest")
    for field, kind_of in _REQUIRED.items():
        if not isinstance(manifest.get(field), kind_of):
            raise UserError(f"{path}: manifest field '{field}' is missing or not {kind_of.__name__}")
    if manifest["version"] > MANIFEST_VERSION:
        raise UserError(
            f"{path}: manifest version {manifest['version']} is newer than this wavediff reads ({MANIFEST_VERSION})"
        )
    if kind is not None and manifest["kind"] != kind:
        raise UserError(f"{path}: holds {manifest['kind']} shards, expected {kind}")
    for split, entry in manifest["splits"].items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
            raise UserError(f"{path}: split '{split}' has no list of shard names")
        counts = entry.get("shard_samples", [0] * len(shards))
        if not (isinstance(counts, list) and len(counts) == len(shards) and all(_count(n) for n in counts)):
            raise UserError(f"{path}: split '{split}' has shard_samples that are not one count per shard")
    return manifest


def _count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def shard_paths(folder: str | os.PathLike, manifest: dict[str, Any], split: str) -> list[Path]:
    """The shard files of one split (empty when the split has none)."""
    entry = manifest["splits"].get(split)
    return [Path(folder) / name for name in entry["shards"]] if entry else []


def shard_counts(manifest: dict[str, Any], split: str) -> list[int] | None:
    """The samples in each shard of a split, as its writer counted them; None when the
    manifest predates the count and the split has several shards (one shard holds them all)."""
    entry = manifest["splits"].get(split)
    if not entry:
        return []
    if "shard_samples" in entry:
        return list(entry["shard_samples"])
    samples = entry.get("samples")
    return [samples] if len(entry["shards"]) == 1 and _count(samples) else None


def shard_samples(folder: str | os.PathLike, manifest: dict[str, Any]) -> dict[Path, int]:
    """{shard path: samples it holds} for every shard whose count the manifest knows."""
    known = {}
    for split in manifest["splits"]:
        counts = shard_counts(manifest, split)
        if counts is not None:
            known.update(zip(shard_paths(folder, manifest, split), counts))
    return known


def is_shard(name: str) -> bool:
    return SHARD_NAME.match(name) is not None
