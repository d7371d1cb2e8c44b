"""Reading audio shards whole, sample by sample (encode, eval-ae, the eval suite's reference
clips), and batching samples of equal length so none is padded by its neighbours."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
import webdataset as wds

from wavediff.errors import UserError
from wavediff.io import audio
from wavediff.shards.format import MANIFEST_NAME, Manifest, read_manifest

T = TypeVar("T")
_PENDING_BATCHES = 4  # samples waiting for a full batch are bounded to this many batches


def check_audio_shards(folder: str | os.PathLike, sample_rate: int, channels: int) -> Manifest:
    """The audio manifest of `folder`, refused when its audio is not what the model takes."""
    manifest = read_manifest(folder, "audio")
    path = Path(folder) / MANIFEST_NAME
    if manifest.sample_rate != sample_rate:
        raise UserError(f"{path}: shards are {manifest.sample_rate} Hz, the autoencoder takes {sample_rate} Hz")
    if manifest.channels != channels:
        raise UserError(f"{path}: shards have {manifest.channels} channels, the autoencoder takes {channels}")
    return manifest


def audio_samples(
    shard: Path, sample_rate: int, expected: int | None = None
) -> Iterator[tuple[str, dict[str, Any], torch.Tensor]]:
    """(key, json, audio) of each sample of an audio shard, in file order; a sample that is
    not usable is an error naming shard and key (an audio shard we wrote never has one), and
    so is a shard that ends before the `expected` samples its manifest counts (tarfile takes
    a damaged header for the end of the archive)."""
    read = 0
    for sample in _tar_samples(shard):
        read += 1
        where = f"{shard}: sample {sample['__key__']}"
        if "flac" not in sample or "json" not in sample:
            raise UserError(f"{where}: not an audio shard sample (needs .flac and .json members)")
        try:
            info = json.loads(sample["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{where}: json member does not parse ({e})") from None
        wav, sr = audio.decode(sample["flac"], where)
        if sr != sample_rate:
            raise UserError(f"{where}: audio at {sr} Hz, the autoencoder takes {sample_rate} Hz")
        yield sample["__key__"], info, wav
    if expected is not None and read < expected:
        raise UserError(f"{shard}: read {read} of the {expected} samples the manifest counts: the shard is damaged")


def _tar_samples(shard: Path) -> Iterator[dict[str, Any]]:
    """webdataset's samples of one shard; a tar that breaks off is a UserError naming it."""
    samples = wds.tarfile_samples([{"url": str(shard)}])
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return
        except tarfile.TarError as e:
            raise UserError(f"{shard}: damaged tar ({e.args[0] if e.args else type(e).__name__})") from None
        yield sample


def equal_length_batches(
    items: Iterable[tuple[T, torch.Tensor]], batch_size: int
) -> Iterator[tuple[list[T], torch.Tensor]]:
    """Stack (tag, audio) items into batches of one length, so every sample is processed
    whole; at most `_PENDING_BATCHES` batches' worth wait (the biggest group goes first)."""
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    pending: dict[int, list[tuple[T, torch.Tensor]]] = {}
    waiting = 0
    for tag, wav in items:
        group = pending.setdefault(wav.shape[-1], [])
        group.append((tag, wav))
        waiting += 1
        if len(group) == batch_size or waiting >= _PENDING_BATCHES * batch_size:
            length = wav.shape[-1] if len(group) == batch_size else max(pending, key=lambda n: len(pending[n]))
            batch = pending.pop(length)
            waiting -= len(batch)
            yield [t for t, _ in batch], torch.stack([w for _, w in batch])
    for batch in pending.values():
        yield [t for t, _ in batch], torch.stack([w for _, w in batch])
