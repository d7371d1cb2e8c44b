"""The shard folder contract: names, the manifest, and reading it back.

Both the writer (data_tools.shard) and the readers (wavediff.data, inspection) import
this, so the folder layout is spelled out in one place:

    OUT/train-000000.tar …   WebDataset shards, KEY.flac + KEY.json per sample
    OUT/val-000000.tar …
    OUT/manifest.json        written last: a folder without it is not a finished dataset

The writing pieces (deterministic tars, staging, publishing) live here too, so every job
that writes shards (data_tools.shard, wavediff.encode) gives the same guarantees.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import tarfile
from pathlib import Path
from typing import Any, Callable

from wavediff.files import read_json_object

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
            raise ValueError(f"{path}: manifest field '{field}' is missing or not {kind_of.__name__}")
    if manifest["version"] > MANIFEST_VERSION:
        raise ValueError(
            f"{path}: manifest version {manifest['version']} is newer than this wavediff reads"
            f" ({MANIFEST_VERSION})"
        )
    if kind is not None and manifest["kind"] != kind:
        raise ValueError(f"{path}: holds {manifest['kind']} shards, expected {kind}")
    for split, entry in manifest["splits"].items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
            raise ValueError(f"{path}: split '{split}' has no list of shard names")
    return manifest


def shard_paths(folder: str | os.PathLike, manifest: dict[str, Any], split: str) -> list[Path]:
    """The shard files of one split (empty when the split has none)."""
    entry = manifest["splits"].get(split)
    return [Path(folder) / name for name in entry["shards"]] if entry else []


# --------------------------------------------------------------------------- writing


def json_bytes(obj: Any) -> bytes:
    """A sample's json member: sorted keys, so the same metadata gives the same bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()


class TarWriter:
    """One shard file being written; members carry fixed metadata, and close() fsyncs."""

    def __init__(self, path: str | os.PathLike):
        self._file = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = len(data), TAR_MTIME, 0o644
        self._tar.addfile(member, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def make_staging(out: str | os.PathLike) -> Path:
    """A fresh `OUT/.staging-<host>-<pid>` folder (creating OUT), after removing the staging
    folders that killed jobs on this host left; jobs still running keep theirs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("-", "_")
    for folder in out.glob(f".staging-{host}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    staging = out / f".staging-{host}-{os.getpid()}"
    staging.mkdir()
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_shard(name: str) -> bool:
    return SHARD_NAME.match(name) is not None


def publish(
    staging: Path, out: Path, manifest: str = MANIFEST_NAME, stale: Callable[[str], bool] = is_shard
) -> None:
    """Swap the finished staging folder in: the old manifest goes first, then the files
    `stale` names, and the staging folder's `manifest` comes last, so at no moment does a
    manifest sit beside shards it does not describe."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for old in out.iterdir():
        if old.is_file() and stale(old.name):
            old.unlink()
    for new in sorted(staging.iterdir()):
        if new.name != manifest:
            os.replace(new, out / new.name)
    os.replace(staging / manifest, out / manifest)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
