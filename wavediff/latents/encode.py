"""Audio shards → latent shards: the `wavediff encode` job, so the denoiser trains on
pre-encoded latents instead of running the encoder every step.

Each sample is encoded whole (a loop stays one loop: a circular autoencoder wraps it
itself), in batches of samples of equal length, so no sample is padded by its
neighbours. Output shards keep their input's name, which lets several processes encode
disjoint shard ranges into one folder: each publishes its shards and a partial manifest,
and `merge_latent_manifests` joins them into the manifest a full run would have written.
Everything is built in a staging folder and published only when complete (wavediff.shards.format).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from wavediff.errors import UserError
from wavediff.io.files import atomic_write_json, read_json_object
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.factory import load_autoencoder
from wavediff.shards.format import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SPLITS,
    LatentStats,
    Manifest,
    is_shard,
    parse_manifest,
    shard_counts,
    shard_paths,
    shard_samples,
)
from wavediff.shards.reader import audio_samples, check_audio_shards, equal_length_batches
from wavediff.shards.swap import recover
from wavediff.shards.writer import TarWriter, json_bytes, make_staging, publish

PART_NAME = re.compile(r"^manifest\.part-(\d+)-(\d+)\.json$")


def part_name(start: int, stop: int) -> str:
    return f"manifest.part-{start}-{stop}.json"


def part_range(index: int, count: int, shards: int) -> tuple[int, int]:
    """The shard range of array task `index` of `count`: contiguous, disjoint, together all `shards`."""
    if not 0 <= index < count:
        raise UserError(f"part {index}/{count}: the index must be in 0…{count - 1}")
    if count > shards:
        raise UserError(f"part {index}/{count}: only {shards} input shards to split, so use at most {shards} tasks")
    return index * shards // count, (index + 1) * shards // count


@dataclass(frozen=True)
class AudioVariant:
    """A changed copy of a sample that is still the same loop: a gain and/or a polarity flip.

    Latents cannot be augmented this way after encoding (the encoder is not linear: the
    latent of −x is not −z), so a small pack is augmented before it, in its train split.
    """

    gain_db: float = 0.0
    invert: bool = False

    @property
    def tag(self) -> str:
        return f"g{self.gain_db:+g}dB" + ("-inv" if self.invert else "")

    def apply(self, wav: torch.Tensor) -> torch.Tensor:
        return wav * (10 ** (self.gain_db / 20)) * (-1 if self.invert else 1)


# --------------------------------------------------------------------------- statistics


class _Moments:
    """Per-channel running sums of the latents, in float64: mean and std without a second pass."""

    def __init__(self, channels: int):
        self.frames = 0
        self.sum = np.zeros(channels)
        self.sumsq = np.zeros(channels)

    def add(self, latent: np.ndarray) -> None:
        x = latent.astype(np.float64)
        self.frames += x.shape[1]
        self.sum += x.sum(1)
        self.sumsq += (x * x).sum(1)

    def summary(self) -> dict[str, Any]:
        if not self.frames:
            return {"frames": 0, "mean": None, "std": None, "overall_std": None}
        mean = self.sum / self.frames
        second = self.sumsq / self.frames
        return _stats(self.frames, mean, second)


def _stats(frames: int, mean: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """Population statistics from the first and second moments per channel."""
    std = np.sqrt(np.maximum(second - mean**2, 0.0))
    overall = math.sqrt(max(second.mean() - mean.mean() ** 2, 0.0))
    return {"frames": frames, "mean": mean.tolist(), "std": std.tolist(), "overall_std": overall}


def _merge_stats(parts: list[LatentStats]) -> dict[str, Any]:
    """Frame-weighted combination of partial statistics (exact, up to rounding)."""
    parts = [p for p in parts if p.frames]
    if not parts:
        return {"frames": 0, "mean": None, "std": None, "overall_std": None}
    frames = sum(p.frames for p in parts)
    mean = sum(p.frames * np.array(p.mean) for p in parts) / frames
    second = sum(p.frames * (np.array(p.std) ** 2 + np.array(p.mean) ** 2) for p in parts) / frames
    return _stats(frames, mean, second)


# --------------------------------------------------------------------------- the job


def encode_shards(
    ae_ckpt: str | os.PathLike,
    shards_folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    shard_range: tuple[int, int] | None = None,
    part: tuple[int, int] | None = None,
    variants: Sequence[AudioVariant] = (),
    progress: bool = True,
) -> Manifest:
    """Encode the audio shards of `shards_folder` into latent shards in `out`; returns the manifest.

    `shard_range` (start, stop) picks a slice of the input's shards (train then val, in
    manifest order); the job then writes `manifest.part-<start>-<stop>.json` instead of
    `manifest.json`, for `merge_latent_manifests` to join. `part` (I, N) is the range of array
    task I of N (`part_range`). `variants` add, for every train sample, one more sample per
    variant encoded from the changed audio (see AudioVariant); val samples stay as they are.
    """
    model, recipe, ae_id = load_autoencoder(ae_ckpt, device)
    source = check_audio_shards(shards_folder, recipe.sample_rate, model.cfg.channels)
    shards = [(split, path) for split in SPLITS for path in shard_paths(shards_folder, source, split)]
    if part is not None:
        if shard_range is not None:
            raise UserError("give a shard range or a part, not both")
        shard_range = part_range(*part, len(shards))
    start, stop = _check_range(shard_range, len(shards), Path(shards_folder) / MANIFEST_NAME)
    hop = model.hop_length
    extra = {"autoencoder": ae_id, "latent_rate": recipe.sample_rate / hop, "hop_length": hop}

    out = Path(out)
    staging = make_staging(out)
    try:
        expected = shard_samples(shards_folder, source)
        splits, moments = _encode_all(
            model, shards[start:stop], expected, staging, recipe.sample_rate, extra, batch_size, variants, progress
        )
        for entry in splits.values():
            entry["seconds"] = round(entry["seconds"], 3)
        manifest = {
            "kind": "latent",
            "version": MANIFEST_VERSION,
            "created_by": "wavediff encode",
            "autoencoder": ae_id,
            "latent_dim": model.latent_dim,
            "latent_rate": extra["latent_rate"],
            "hop_length": hop,
            "sample_rate": recipe.sample_rate,
            "channels": model.cfg.channels,  # of the audio the latents stand for
            "source": str(shards_folder),
            "genres": source.genres,
            "splits": splits,
            "stats": moments.summary(),
        }
        if shard_range is None:
            atomic_write_json(staging / MANIFEST_NAME, manifest)
            publish(staging, out, stale=lambda name: is_shard(name) or PART_NAME.match(name) is not None)
        else:
            manifest.update(shard_range=[start, stop], source_shards=len(shards))
            atomic_write_json(staging / part_name(start, stop), manifest)
            publish(staging, out, manifest=part_name(start, stop), stale=lambda name: False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return parse_manifest(manifest, out / MANIFEST_NAME)


def _check_range(shard_range: tuple[int, int] | None, count: int, manifest: Path) -> tuple[int, int]:
    if count == 0:
        raise UserError(f"{manifest}: lists no shards to encode")
    if shard_range is None:
        return 0, count
    start, stop = shard_range
    if not 0 <= start < stop <= count:
        raise UserError(f"{manifest}: shard range {start}:{stop} is outside its {count} shards (0:{count})")
    return start, stop


def _encode_all(
    model: Autoencoder,
    shards: list[tuple[str, Path]],
    expected: dict[Path, int],
    staging: Path,
    sample_rate: int,
    extra: dict[str, Any],
    batch_size: int,
    variants: Sequence[AudioVariant],
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], _Moments]:
    """Write one latent shard per (split, audio shard) into `staging`; returns the splits' account
    and train moments. `expected` holds the samples the source manifest counts in each shard."""
    splits = {split: {"shards": [], "samples": 0, "seconds": 0.0, "frames": 0, "shard_samples": []} for split in SPLITS}
    moments = _Moments(model.latent_dim)
    device = next(model.parameters()).device
    with tqdm(shards, unit="shard", desc="encode", disable=not progress) as bar:
        for split, path in bar:
            entry = splits[split]
            writer = TarWriter(staging / path.name)
            entry["shard_samples"].append(0)
            try:
                changes = variants if split == "train" else ()
                found = _encode_shard(model, path, sample_rate, batch_size, device, changes, expected.get(path))
                for key, info, latent in found:
                    writer.add(f"{key}.latent.npy", _npy_bytes(latent))
                    writer.add(f"{key}.json", json_bytes({**info, **extra}))
                    entry["samples"] += 1
                    entry["shard_samples"][-1] += 1
                    entry["seconds"] += info.get("duration_s", 0.0)
                    entry["frames"] += latent.shape[1]
                    if split == "train":
                        moments.add(latent)
            finally:
                writer.close()
            entry["shards"].append(path.name)
            bar.set_postfix(samples=sum(s["samples"] for s in splits.values()), refresh=False)
    return splits, moments


@torch.inference_mode()
def _encode_shard(
    model: Autoencoder,
    path: Path,
    sample_rate: int,
    batch_size: int,
    device: torch.device,
    variants: Sequence[AudioVariant] = (),
    expected: int | None = None,
) -> list[tuple[str, dict[str, Any], np.ndarray]]:
    """(key, json, float16 latent) of each sample of one shard, in the shard's order, each
    followed by its variants; a shard holding fewer than `expected` samples is a UserError."""
    infos: list[tuple[str, dict[str, Any]]] = []
    latents: dict[int, np.ndarray] = {}

    def tagged() -> Iterator[tuple[int, torch.Tensor]]:
        for key, info, wav in audio_samples(path, sample_rate, expected):
            infos.append((key, info))
            yield len(infos) - 1, wav
            for variant in variants:
                infos.append((f"{key}-{variant.tag}", {**info, "variant": dataclasses.asdict(variant)}))
                yield len(infos) - 1, variant.apply(wav)

    for tags, x in equal_length_batches(tagged(), batch_size):
        z = model.encode(x.to(device)).float().cpu().numpy().astype(np.float16)  # eval mode: the VAE mean
        if not np.isfinite(z).all():
            raise UserError(f"{path}: the autoencoder gave non-finite latents (or they overflow float16)")
        latents.update(zip(tags, z))
    return [(key, info, latents[i]) for i, (key, info) in enumerate(infos)]


def _npy_bytes(latent: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(latent), allow_pickle=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- partial manifests


def merge_latent_manifests(out: str | os.PathLike) -> Manifest:
    """Join the partial manifests of `out` into manifest.json (shards, counts and
    frame-weighted statistics), once they cover every input shard exactly once."""
    out = Path(out)
    recover(out)  # a part killed while publishing: its previous files come back first
    paths = sorted((p for p in out.iterdir() if PART_NAME.match(p.name)), key=lambda p: _range_of(p)[0])
    if not paths:
        raise FileNotFoundError(f"{out}: no partial manifests (manifest.part-<start>-<stop>.json) to merge")
    raws = [read_json_object(p, "partial manifest") for p in paths]
    parts = [_read_part(raw, path) for raw, path in zip(raws, paths)]
    first = parts[0]
    covered = 0
    for path, part in zip(paths, parts):
        start, stop = _range_of(path)
        if start != covered:
            what = "overlaps the previous part" if start < covered else f"leaves shards {covered}:{start} unencoded"
            raise UserError(f"{path}: shard range {start}:{stop} {what}")
        for field in ("autoencoder", "source", "source_shards", "sample_rate", "latent_dim", "hop_length"):
            if getattr(part, field) != getattr(first, field):
                raise UserError(
                    f"{path}: {field} {getattr(part, field)!r} differs from {paths[0].name}'s {getattr(first, field)!r}"
                )
        covered = stop
    if covered != first.source_shards:
        raise UserError(f"{out}: shards {covered}:{first.source_shards} are not encoded yet")
    merged = {k: v for k, v in raws[0].items() if k not in ("shard_range", "source_shards", "splits", "stats")}
    merged["splits"] = {}
    for split in SPLITS:
        entries = [part.splits[split] for part in parts]
        merged["splits"][split] = {
            "shards": [name for entry in entries for name in entry.shards],
            "samples": sum(entry.samples for entry in entries),
            "seconds": round(sum(entry.seconds for entry in entries), 3),
            "frames": sum(entry.frames or 0 for entry in entries),
        }
        counts = [shard_counts(part, split) for part in parts]
        if None not in counts:
            merged["splits"][split]["shard_samples"] = [n for c in counts for n in c]
    merged["stats"] = _merge_stats([part.stats for part in parts])
    atomic_write_json(out / MANIFEST_NAME, merged)
    return parse_manifest(merged, out / MANIFEST_NAME)


def _read_part(raw: dict[str, Any], path: Path) -> Manifest:
    part = parse_manifest(raw, path)
    if part.kind != "latent" or part.source_shards is None or part.stats is None:
        raise UserError(f"{path}: not a partial latent manifest")
    return part


def _range_of(path: Path) -> tuple[int, int]:
    start, stop = PART_NAME.match(path.name).groups()
    return int(start), int(stop)
