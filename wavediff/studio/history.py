"""The studio's history: every loop it made or was given, with its full settings, kept on disk.

One folder (by default RUN/studio/) holds ID.wav (with smpl/acid loop chunks when the tempo is
known) and ID.json (every setting, written by generation.save.save_loops) per loop, and ID.latent.safetensors
while a loop is a preview decoder's (the latents its download decodes fully). A server
started again on the same folder finds them all. The folder is capped in size: past the cap the
oldest loops are deleted, never those of the job just finished.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from wavediff.errors import UserError
from wavediff.generation.save import loop_name, save_loops
from wavediff.io.files import atomic_write_bytes, read_json_object
from wavediff.models.checkpoint import CHECKPOINTS, resolve_checkpoint

FOLDER_NAME = "studio"


class UnknownLoop(UserError):
    """An id that names no loop in the history (the API answers 404)."""


def default_folder(checkpoint: str | os.PathLike) -> Path:
    """RUN/studio for a checkpoint inside a run folder; CKPT/studio for a checkpoint folder on its own."""
    folder = resolve_checkpoint(checkpoint)
    run = folder.parent.parent if folder.parent.name == CHECKPOINTS else folder
    return run / FOLDER_NAME


def download_name(record: Mapping[str, Any]) -> str:
    """`techno-128bpm-4bars-seed7` (loop_name), `-vary`/`-inpaint`/`-extend` added for a loop made from
    another, an upload's own name; in safe ASCII, since it travels in an HTTP header."""
    kind = record.get("kind")
    seed = record.get("seed")
    if kind == "upload":
        name = Path(str(record.get("upload") or "upload")).stem
    elif record.get("bpm") and record.get("bars"):
        name = loop_name(record, seed)
    else:
        name = f"loop-seed{seed}"
    if kind not in (None, "generate", "upload"):
        name = f"{name}-{kind}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


class History:
    """The loops of a studio folder, indexed in memory; safe to use from several threads."""

    def __init__(self, folder: str | os.PathLike, cap_bytes: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cap_bytes = cap_bytes
        self.skipped: list[str] = []  # sidecars that could not be read back, with the reason
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        for sidecar in sorted(self.folder.glob("*.json")):
            if not sidecar.with_suffix(".wav").is_file():
                self.skipped.append(f"{sidecar}: no {sidecar.stem}.wav beside it")
                continue
            try:
                self._records[sidecar.stem] = self._record(sidecar)
            except UserError as e:
                self.skipped.append(str(e))

    def _record(self, sidecar: Path) -> dict[str, Any]:
        record = read_json_object(sidecar, "studio history record")
        return record | {"id": sidecar.stem, "name": download_name(record)}

    def add(self, audio: Tensor, info: Mapping[str, Any], latents: Tensor | None = None) -> list[dict[str, Any]]:
        """Save each loop of `audio` (n, channels, samples) with `info` (as save_loops takes it); → their records.
        `latents` (n, channels, frames): what a preview decoder made `audio` of, kept for the full decode.

        The history is then trimmed to its cap, oldest first, sparing these loops.
        """
        batch = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        ids = [f"{batch}-{i}" for i in range(len(audio))]
        for loop_id, latent in zip(ids, latents if latents is not None else ()):
            atomic_write_bytes(self._latent_path(loop_id), save_tensors({"latent": latent.contiguous()}))
        paths = save_loops(audio, {**info, "created": time.time()}, self.folder, names=ids)
        records = [self._record(path.with_suffix(".json")) for path in paths]
        with self._lock:
            self._records.update((r["id"], r) for r in records)
            self._trim(keep={r["id"] for r in records})
        return records

    def replace(self, loop_id: str, audio: Tensor, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Overwrite a loop's audio (channels, samples) and update its record with `changes`; its kept
        latents go (they served the decode that replaced it)."""
        record = {k: v for k, v in self.get(loop_id).items() if k not in ("id", "name", "file", "seed")}
        seed = self.get(loop_id).get("seed")
        (path,) = save_loops(audio[None], {**record, **changes, "seeds": [seed]}, self.folder, names=[loop_id])
        self._latent_path(loop_id).unlink(missing_ok=True)
        updated = self._record(path.with_suffix(".json"))
        with self._lock:
            self._records[loop_id] = updated
        return updated

    def latent(self, loop_id: str) -> Tensor | None:
        """The latents a preview decoded this loop from, or None (fully decoded, or an older loop)."""
        path = self._latent_path(loop_id)
        return load_tensors(path.read_bytes())["latent"] if path.is_file() else None

    def _latent_path(self, loop_id: str) -> Path:
        return self.folder / f"{loop_id}.latent.safetensors"

    def _size(self, loop_id: str) -> int:
        paths = (self.wav(loop_id), self.folder / f"{loop_id}.json", self._latent_path(loop_id))
        return sum(p.stat().st_size for p in paths if p.exists())

    def _trim(self, keep: set[str]) -> None:
        sizes = {loop_id: self._size(loop_id) for loop_id in self._records}
        total = sum(sizes.values())
        for record in sorted(self._records.values(), key=lambda r: (r.get("created", 0), r["id"])):
            if total <= self.cap_bytes:
                break
            if record["id"] in keep:
                continue
            self.wav(record["id"]).unlink(missing_ok=True)
            self._latent_path(record["id"]).unlink(missing_ok=True)
            (self.folder / f"{record['id']}.json").unlink(missing_ok=True)
            del self._records[record["id"]]
            total -= sizes[record["id"]]

    def get(self, loop_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._records.get(loop_id)
        if record is None:
            raise UnknownLoop(f"no loop {loop_id!r} in the studio history {self.folder}")
        return record

    def wav(self, loop_id: str) -> Path:
        return self.folder / f"{loop_id}.wav"

    def records(self, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every record, newest first (or those of `ids` still kept, in that order)."""
        with self._lock:
            if ids is not None:  # those the cap has not deleted since
                return [self._records[i] for i in ids if i in self._records]
            found = list(self._records.values())
        return sorted(found, key=lambda r: (r.get("created", 0), r["id"]), reverse=True)
