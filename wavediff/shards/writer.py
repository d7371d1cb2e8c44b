"""The one way shards are written (audio shards by data_tools.shard, latent shards by
wavediff.latents.encode): deterministic tar members, a staging folder, and a publish step that
swaps the finished set in (wavediff.shards.swap: a kill at any instant leaves the previous set
or the new one, whole), so every job that writes shards gives the same guarantees."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wavediff.errors import UserError
from wavediff.shards.format import MANIFEST_NAME, TAR_MTIME, is_shard
from wavediff.shards.swap import alive, host_tag, recover, swap_in


def json_bytes(obj: Any) -> bytes:
    """A sample's json member: sorted keys, so the same metadata gives the same bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()


class TarWriter:
    """One shard file being written; members carry fixed metadata, and close() fsyncs. A
    failed write (a full disk) is an OSError naming the shard, and leaves the file closed."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = len(data), TAR_MTIME, 0o644
        with self._naming_errors():
            self._tar.addfile(member, io.BytesIO(data))

    def close(self) -> None:
        if self._file.closed:
            return
        with self._naming_errors():
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    @contextlib.contextmanager
    def _naming_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            with contextlib.suppress(OSError):  # its buffer cannot be written either
                self._file.close()
            raise OSError(e.errno, f"{e.strerror} (writing {self.path})") from None


def make_staging(out: str | os.PathLike) -> Path:
    """A fresh `OUT/.staging-<host>-<pid>` folder (creating OUT), after settling the swaps and
    removing the staging folders that killed jobs on this host left; jobs still running keep theirs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; give a folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    recover(out)
    for folder in out.glob(f".staging-{host_tag()}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    staging = out / f".staging-{host_tag()}-{os.getpid()}"
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path, manifest: str = MANIFEST_NAME, stale: Callable[[str], bool] = is_shard) -> None:
    """Swap the finished staging folder in: its files replace those of the same names and
    those `stale` names, and its `manifest` comes last, so a reader finds the old set or the
    new one, never a manifest beside shards it does not describe, and a kill loses neither."""
    swap_in(staging, out, manifest, stale)
