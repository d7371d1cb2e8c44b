"""The one way shards are written (audio shards by data_tools.shard, latent shards by
wavediff.latents.encode): deterministic tar members, a staging folder, and a publish step that
swaps the finished set in, so every job that writes shards gives the same guarantees."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wavediff.shards.format import MANIFEST_NAME, TAR_MTIME, is_shard


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


def publish(staging: Path, out: Path, manifest: str = MANIFEST_NAME, stale: Callable[[str], bool] = is_shard) -> None:
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
