"""The shard folder contract: names, the manifest, and reading it back.

The writers (data_tools.shard, wavediff.latents.encode) and the readers (shards.loader,
shards.reader, inspection) import this, so the folder layout is spelled out in one place:

    OUT/train-000000.tar …   WebDataset shards, KEY.flac + KEY.json per sample
    OUT/val-000000.tar …
    OUT/manifest.json        written last: a folder without it is not a finished dataset
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from wavediff.errors import UserError
from wavediff.io.files import read_json_object

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
    if not path.is_file():
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
    return manifest


def shard_paths(folder: str | os.PathLike, manifest: dict[str, Any], split: str) -> list[Path]:
    """The shard files of one split (empty when the split has none)."""
    entry = manifest["splits"].get(split)
    return [Path(folder) / name for name in entry["shards"]] if entry else []


def is_shard(name: str) -> bool:
    return SHARD_NAME.match(name) is not None
