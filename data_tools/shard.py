"""Turn folders of audio into WebDataset shards: the `wavediff data shard` job.

Workers decode, resample, re-channel, level and FLAC-encode each file, and estimate from the
audio what its metadata leaves out (`describe`: data_tools.analysis); the parent keeps
the sorted file order, drops duplicates, picks the split and writes the tars. So the
shards are byte-for-byte the same whatever the worker count, and one bad file only
costs itself (it is listed in the manifest with the reason).

Files longer than `max_seconds` are cut into consecutive chunks: with a known tempo the
chunk is the most whole 4/4 bars that fit, otherwise `max_seconds`. A last, shorter
chunk is kept when it is at least half a chunk (cut to whole bars when the tempo is
known); anything shorter is dropped, since a training crop would be mostly padding.

Everything is built in `OUT/.staging-<host>-<pid>` and swapped in only when complete
(wavediff.shards.swap), so a job killed at any instant leaves the previous dataset whole (or,
past the final rename, the new one).

One job can be split across the tasks of a job array: task I of N (`part=(I, N)`) takes
every N-th file of the sorted list and writes a complete shard folder of its own,
`OUT/parts/part-I-of-N/`; `merge_parts(OUT)` then links every part's shards into OUT under
one numbering and writes the manifest that sums theirs. Duplicates are found within a
part only: the same file in two parts is kept twice.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import signal
import stat
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from data_tools import analysis
from data_tools import metadata as md
from wavediff.errors import AudioError, UserError
from wavediff.io import audio
from wavediff.io.files import atomic_write_json
from wavediff.shards.format import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SPLITS,
    Manifest,
    parse_manifest,
    read_manifest,
    shard_counts,
    shard_name,
)
from wavediff.shards.writer import TarWriter, json_bytes, make_staging, publish

PARTS = "parts"  # OUT/parts/part-I-of-N: the array tasks' folders until merge_parts


@dataclass
class ShardOptions:
    """What the job makes of the audio; the manifest records them (less `workers`)."""

    sample_rate: int = 44100
    channels: int = 2
    max_seconds: float | None = 30.0  # None keeps every file whole
    min_seconds: float = 0.2  # shorter files are skipped: too little to learn a loop from
    val_fraction: float = 0.05
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    shard_size_mb: float = 256.0
    loudness: float | None = None  # target LUFS; None leaves levels as they are
    silence_db: float = -60.0  # files (and chunks) with RMS below this are dropped

    def check(self) -> None:
        """Reject option values that would make a broken dataset, before any work."""
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be positive, got {self.sample_rate}")
        if self.channels not in (1, 2):
            problems.append(f"channels must be 1 or 2, got {self.channels}")
        if self.max_seconds is not None and not self.max_seconds > 0:  # NaN too
            problems.append(f"max_seconds must be positive or None, got {self.max_seconds}")
        if self.min_seconds < 0:
            problems.append(f"min_seconds must not be negative, got {self.min_seconds}")
        elif self.max_seconds is not None and 0 < self.max_seconds < self.min_seconds:
            problems.append(
                f"max_seconds {self.max_seconds:g} is shorter than min_seconds {self.min_seconds:g}: "
                "chunks would be shorter than the shortest file kept"
            )
        if not 0.0 <= self.val_fraction <= 1.0:
            problems.append(f"val_fraction must be in [0, 1], got {self.val_fraction}")
        if self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if self.shard_size_mb <= 0:
            problems.append(f"shard_size_mb must be positive, got {self.shard_size_mb}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class _Job:
    path: Path
    source: str  # path relative to its source root, posix
    meta: md.Metadata
    options: ShardOptions


@dataclass
class _Sample:
    key: str
    flac: bytes
    info: dict[str, Any]


@dataclass
class _Outcome:
    sha1: str | None = None
    samples: list[_Sample] = field(default_factory=list)
    skipped: str | None = None  # the reason, when the file gives no samples
    silent_chunks: int = 0
    warning: str | None = None  # kept, but not as it was


# --------------------------------------------------------------------------- pure parts


def split_of(sha1: str, val_fraction: float) -> str:
    """Split by content hash: stable when files are added, and a file's chunks stay together."""
    return "val" if int(sha1[:16], 16) / 2**64 < val_fraction else "train"


def sample_key(sha1: str, chunk: int) -> str:
    """WebDataset cuts keys at the first dot, so keys are hex, underscore and digits only."""
    return f"{sha1[:16]}_{chunk:03d}"


def chunk_spans(
    duration_s: float, bpm: float | None, max_seconds: float | None, min_seconds: float = 0.0
) -> list[tuple[float, float]]:
    """(start, end) seconds of each chunk of a file, as the module docstring describes."""
    if max_seconds is None or duration_s <= max_seconds + 1e-9:
        return [(0.0, duration_s)]
    bar = md.bar_seconds(bpm) if bpm else None
    bars_per_chunk = math.floor(max_seconds / bar + 1e-9) if bar else 0
    length = bars_per_chunk * bar if bar and bars_per_chunk >= 1 else max_seconds
    whole = math.floor(duration_s / length + 1e-9)
    spans = [(i * length, (i + 1) * length) for i in range(whole)]
    tail = duration_s - whole * length
    if bars_per_chunk >= 1:
        tail = math.floor(tail / bar + 1e-9) * bar
    if tail >= length / 2 and tail >= min_seconds:
        spans.append((whole * length, whole * length + tail))
    return spans


# --------------------------------------------------------------------------- one file (in a worker)


def _process(job: _Job) -> _Outcome:
    """Everything heavy for one file; any failure becomes a skip reason, never a crash."""
    try:
        data = job.path.read_bytes()
    except OSError as e:
        return _Outcome(skipped=f"cannot read ({e.strerror or e})")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        return _cut(job, data, sha1)
    except AudioError as e:
        return _Outcome(sha1, skipped=e.reason)
    except Exception as e:  # a library choking on odd input must not stop the job
        return _Outcome(sha1, skipped=f"unexpected error ({type(e).__name__}: {' '.join(str(e).split())})")


def describe(meta: md.Metadata, wav: torch.Tensor, sr: int) -> tuple[md.Metadata, dict[str, Any]]:
    """The file's metadata with what it leaves out estimated from the audio, and the JSON fields
    that say where each value came from (data_tools.metadata.fill)."""
    duration = wav.shape[-1] / sr
    kind, _ = md.implied_kind(meta, duration)
    estimates = analysis.estimate(
        wav, sr, kind=kind, role=meta.role, bpm=meta.bpm, bars_known=meta.bars is not None, key=meta.key
    )
    return md.fill(meta, estimates, duration)


def _cut(job: _Job, data: bytes, sha1: str) -> _Outcome:
    opts = job.options
    wav, sr = audio.decode(data, str(job.path))
    peak = float(wav.abs().max())  # float files can go over full scale; FLAC shards clip at it
    clipped = peak > 1.0 and opts.loudness is None  # levelling brings the peak under full scale
    rate = opts.sample_rate
    original, wav = wav, audio.conform(wav, sr, rate, opts.channels)
    duration = wav.shape[-1] / rate
    if duration < opts.min_seconds:
        return _Outcome(sha1, skipped=f"too short ({duration:.3f} s; the minimum is {opts.min_seconds:g} s)")
    if audio.is_silent(wav, opts.silence_db):
        return _Outcome(sha1, skipped=f"silent (RMS below {opts.silence_db:g} dBFS)")
    meta, described = describe(job.meta, original, sr)
    del original
    if opts.loudness is not None:
        wav = audio.normalize_loudness(wav, rate, opts.loudness)

    spans = chunk_spans(duration, meta.bpm, opts.max_seconds, opts.min_seconds)
    whole_file = len(spans) == 1
    is_loop = (
        meta.loop if meta.loop is not None else meta.kind == "loop" and md.whole_bars(duration, meta.bpm) is not None
    )
    outcome = _Outcome(sha1)
    if clipped:
        outcome.warning = f"{job.path}: peaks at {20 * math.log10(peak):+.1f} dBFS; clipped to full scale in the shards"
    for chunk, (start_s, end_s) in enumerate(spans):
        start, end = round(start_s * rate), min(round(end_s * rate), wav.shape[-1])
        piece = wav[:, start:end]
        if not whole_file and audio.is_silent(piece, opts.silence_db):  # a whole file was checked above
            outcome.silent_chunks += 1
            continue
        seconds = piece.shape[-1] / rate
        bars = md.whole_bars(seconds, meta.bpm)
        if whole_file and meta.bars is not None:
            bars = meta.bars
        info = {
            "source": job.source,
            "genre": meta.genre,
            "tags": list(meta.tags),
            "bpm": meta.bpm,
            "key": meta.key,
            "bars": bars,
            "sample_rate": rate,
            "channels": opts.channels,
            "offset_s": round(start / rate, 6),
            "duration_s": round(seconds, 6),
            "loop": bool(is_loop and (whole_file or bars is not None)),
            "sha1": sha1,
            "kind": meta.kind,
            "role": meta.role,
            **described,
        }
        if not whole_file:  # a chunk's bars are its own, counted at the file's tempo
            info.pop("bars_reason", None)
            info.pop("bars_confidence", None)
            info["bars_source"] = "estimated" if bars is not None else "unknown"
            if bars is None:
                info["bars_reason"] = "the chunk is not a whole number of bars" if meta.bpm else info["bpm_reason"]
        outcome.samples.append(_Sample(sample_key(sha1, chunk), audio.encode(piece, rate, "flac"), info))
    if not outcome.samples:
        outcome.skipped = f"silent in every chunk (RMS below {opts.silence_db:g} dBFS)"
    return outcome


def _init_worker(job: int) -> None:
    # Parallelism comes from processes; threads would oversubscribe. One thread also keeps a
    # forked worker out of the OpenMP thread pool it inherits from the parent, unusable there.
    torch.set_num_threads(1)
    _die_with(job)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(job: int) -> None:
    """Have the kernel kill this worker when the job process `job` dies. A SIGKILLed job (the
    OOM killer, a scheduler) would otherwise leave forked workers waiting for work forever:
    each holds the task queue open for the others."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != job:  # the job died before the request took effect
            os._exit(1)


# Forked workers start in milliseconds with the parent's modules already imported; spawned
# ones import torch each (≈1.5 s, more than the work on a pack under an hour of audio).
# Fork is what PyTorch's DataLoader does on Linux too; macOS is spawn's (fork is unsafe there).
_START_METHOD = "fork" if sys.platform == "linux" else "spawn"


def in_order(fn: Callable[[_Job], _Outcome], jobs: Sequence[_Job], workers: int) -> Iterator[_Outcome]:
    """Results in job order, with a bounded number of files in flight (bounded memory)."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    context = get_context(_START_METHOD)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        todo = iter(jobs)
        pending = deque(pool.submit(fn, job) for job in islice(todo, 4 * workers))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, job) for job in islice(todo, 1))
            yield result
    finally:
        pool.shutdown(cancel_futures=True)


# --------------------------------------------------------------------------- finding files


def walk_source(source: Path) -> tuple[Path, list[Path], int, list[dict[str, str]]]:
    """(root, sorted audio files, count of ignored files, skipped entries) of one source
    folder or file.

    Hidden files and folders (`.DS_Store`, macOS `._x.wav` forks, our staging folders)
    are skipped without counting; metadata tables and sidecars are not "ignored". Symlinked
    folders are followed, each real folder once (a symlink loop ends there); folders that
    cannot be read, folders met again and audio names that are not regular files (a FIFO
    would block the read forever) are skipped, each with its reason.
    """
    if not source.exists():
        raise FileNotFoundError(f"{source}: source does not exist")
    if source.is_file():
        if not audio.is_audio_file(source):
            raise UserError(f"{source}: not an audio file ({', '.join(sorted(audio.AUDIO_EXTENSIONS))})")
        return source.parent, [source], 0, []
    if not source.is_dir():
        raise UserError(f"{source}: {_not_regular(source.stat().st_mode)}, not an audio file or a folder")
    found: list[Path] = []
    others: list[Path] = []
    skipped: list[dict[str, str]] = []
    walked = {_identity(source): source}

    def unreadable(e: OSError) -> None:
        skipped.append({"path": str(e.filename), "reason": f"cannot read folder ({e.strerror})"})

    for folder, dirs, files in os.walk(source, onerror=unreadable, followlinks=True):
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            path = Path(folder) / name
            try:
                first = walked.setdefault(_identity(path), path)
            except OSError as e:
                unreadable(e)
                continue
            if first is path:
                kept.append(name)
            else:
                loop = ": a symlink loop" if Path(folder).resolve().is_relative_to(path.resolve()) else ""
                skipped.append({"path": str(path), "reason": f"folder walked already (as {first}){loop}"})
        dirs[:] = kept
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if not audio.is_audio_file(name):
                others.append(path)
                continue
            kind = _not_regular(path.stat().st_mode) if path.exists() else None  # a broken link fails its read
            if kind is None:
                found.append(path)
            else:
                skipped.append({"path": str(path), "reason": kind})
    if not found:
        raise UserError(f"{source}: no audio files found ({', '.join(sorted(audio.AUDIO_EXTENSIONS))})")
    sidecars = {md.sidecar_path(f) for f in found}
    ignored = sum(1 for f in others if f not in sidecars and f.name not in md.TABLE_NAMES)
    return source, found, ignored, skipped


def _identity(folder: Path) -> tuple[int, int]:
    """What makes two paths one folder, links followed."""
    st = folder.stat()
    return st.st_dev, st.st_ino


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _not_regular(mode: int) -> str | None:
    """Why a path of this mode cannot be read as a file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _FILE_KINDS if test(mode)), "of an unknown kind")
    return f"not a regular file ({kind})"


# --------------------------------------------------------------------------- writing


class _SplitWriter:
    """Writes one split's samples into tars of at most `limit` bytes (a sample larger
    than that gets a tar of its own)."""

    def __init__(self, folder: Path, split: str, limit: int):
        self.folder, self.split, self.limit = folder, split, limit
        self.shards: list[str] = []
        self.counts: list[int] = []  # samples in each shard
        self.samples = 0
        self.seconds = 0.0
        self._tar: TarWriter | None = None
        self._size = 0

    def add(self, sample: _Sample) -> None:
        members = [(f"{sample.key}.flac", sample.flac), (f"{sample.key}.json", json_bytes(sample.info))]
        size = sum(512 + math.ceil(len(data) / 512) * 512 for _, data in members)
        if self._tar is None or (self._size > 0 and self._size + size > self.limit):
            self._next()
        for name, data in members:
            self._tar.add(name, data)
        self._size += size
        self.counts[-1] += 1
        self.samples += 1
        self.seconds += sample.info["duration_s"]

    def _next(self) -> None:
        self.close()
        name = shard_name(self.split, len(self.shards))
        self._tar = TarWriter(self.folder / name)
        self._size = 0
        self.shards.append(name)
        self.counts.append(0)

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


# --------------------------------------------------------------------------- the job


def part_folder(out: str | os.PathLike, index: int, count: int) -> Path:
    """Where array task `index` of `count` writes its shard folder."""
    return Path(out) / PARTS / f"part-{index:04d}-of-{count:04d}"


def shard(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    options: ShardOptions | None = None,
    progress: bool = True,
    part: tuple[int, int] | None = None,
) -> Manifest:
    """Shard every audio file under `sources` into `out`; returns the manifest.

    A missing source, a source without audio or a bad option raises before anything is
    written; bad files are skipped and listed in the manifest. With `part=(I, N)` only
    every N-th file from the I-th is sharded, into `part_folder(out, I, N)`. `options`
    defaults to ShardOptions().
    """
    options = options or ShardOptions()
    options.check()
    if part is not None and not 0 <= part[0] < part[1]:
        raise UserError(f"part {part[0]}/{part[1]}: the index must be in 0…{part[1] - 1}")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise UserError("no sources given")
    walked = [walk_source(Path(s)) for s in sources]
    jobs: list[_Job] = []
    warnings: list[str] = []
    for root, files, _, _ in walked:
        metas, found = md.collect(root, files)
        warnings += found
        jobs += [_Job(f, f.relative_to(root).as_posix(), metas[f], options) for f in files]
    ignored = sum(n for _, _, n, _ in walked)
    unusable = [entry for *_, entries in walked for entry in entries]  # folders and files the walk could not use
    if part is not None:
        jobs = jobs[part[0] :: part[1]]
        unusable = unusable if part[0] == 0 else []  # listed once when the parts are merged
        out = part_folder(out, *part)

    out = Path(out)
    if min(options.workers, len(jobs)) > 1:
        analysis.preload()  # once here, not once per forked worker
    staging = make_staging(out)
    try:
        manifest = {
            "kind": "audio",
            "version": MANIFEST_VERSION,
            "created_by": f"wavediff {_version()} data_tools.shard",
            "sample_rate": options.sample_rate,
            "channels": options.channels,
            # workers is left out: it changes the speed, never the data
            "options": {k: v for k, v in asdict(options).items() if k != "workers"},
            "sources": [str(s) for s in sources],
            **_write(jobs, staging, options, progress, unusable, warnings),
            "ignored_files": ignored,
            "warnings": warnings,
        }
        if part is not None:
            manifest["part"] = list(part)
        atomic_write_json(staging / MANIFEST_NAME, manifest)
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return parse_manifest(manifest, out / MANIFEST_NAME)


def _write(
    jobs: list[_Job],
    staging: Path,
    options: ShardOptions,
    progress: bool,
    skipped: list[dict[str, str]],
    warnings: list[str],
) -> dict[str, Any]:
    """Process the files and write the tars; returns the manifest's account of them, its
    skipped list starting with `skipped` (what the walk could not use). What a kept file lost
    (clipping) is added to `warnings`."""
    limit = int(options.shard_size_mb * 1024 * 1024)
    writers = {split: _SplitWriter(staging, split, limit) for split in SPLITS}
    kept: dict[str, str] = {}  # sha1 → path of the file that was sharded
    skipped = list(skipped)
    genres, tags, keys, kinds, roles = Counter(), Counter(), Counter(), Counter(), Counter()
    origins: dict[str, Counter] = {name: Counter() for name in md.ESTIMATED}
    bpms: list[float] = []
    duplicates = silent_chunks = 0
    bar = tqdm(total=len(jobs), unit="file", desc="shard", disable=not progress)
    try:
        for job, outcome in zip(jobs, in_order(_process, jobs, min(options.workers, len(jobs)))):
            bar.update()
            if outcome.sha1 in kept and outcome.skipped is None:
                skipped.append({"path": str(job.path), "reason": f"duplicate of {kept[outcome.sha1]}"})
                duplicates += 1
            elif outcome.skipped is not None:
                skipped.append({"path": str(job.path), "reason": outcome.skipped})
            else:
                kept[outcome.sha1] = str(job.path)
                if outcome.warning:
                    warnings.append(outcome.warning)
                writer = writers[split_of(outcome.sha1, options.val_fraction)]
                for sample in outcome.samples:
                    writer.add(sample)
                    genres.update([sample.info["genre"]] if sample.info["genre"] else [])
                    tags.update(sample.info["tags"])
                    keys.update([sample.info["key"]] if sample.info["key"] else [])
                    kinds.update([sample.info["kind"] or "unknown"])
                    roles.update([sample.info["role"] or "unknown"])
                    for name, counter in origins.items():
                        counter.update([sample.info[f"{name}_source"]])
                silent_chunks += outcome.silent_chunks
                if outcome.samples[0].info["bpm"]:
                    bpms.append(outcome.samples[0].info["bpm"])
            hours = sum(w.seconds for w in writers.values()) / 3600
            bar.set_postfix(hours=f"{hours:.2f}", skipped=len(skipped), refresh=False)
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
    return {
        "splits": {
            split: {"shards": w.shards, "samples": w.samples, "seconds": round(w.seconds, 3), "shard_samples": w.counts}
            for split, w in writers.items()
        },
        "files": len(kept),
        "genres": dict(sorted(genres.items())),
        "tags": dict(sorted(tags.items())),
        "keys": dict(sorted(keys.items())),
        "kinds": dict(sorted(kinds.items())),
        "roles": dict(sorted(roles.items())),
        "metadata_sources": {name: dict(sorted(counter.items())) for name, counter in origins.items()},
        "bpm": {"min": min(bpms), "max": max(bpms)} if bpms else None,
        "skipped": skipped,
        "duplicates": duplicates,
        "silent_chunks": silent_chunks,
    }


# --------------------------------------------------------------------------- job arrays


def merge_parts(out: str | os.PathLike) -> Manifest:
    """Join the part folders of `out` into one dataset in `out` (shards renumbered, manifests
    summed), once every part of the array has finished; returns the manifest. The parts'
    shards are hard-linked, so a merge killed midway loses nothing and can be run again;
    the parts are removed once the merged dataset is published."""
    out = Path(out)
    folders = sorted((out / PARTS).glob("part-*-of-*")) if (out / PARTS).is_dir() else []
    if not folders:
        raise FileNotFoundError(f"{out / PARTS}: no parts to merge (write them with `wavediff data shard --part I/N`)")
    count = int(folders[0].name.rpartition("-of-")[2])
    missing = [f"{i}/{count}" for i in range(count) if not (part_folder(out, i, count) / MANIFEST_NAME).is_file()]
    if missing:
        raise FileNotFoundError(f"{out / PARTS}: parts {', '.join(missing)} are not finished (no manifest.json)")
    stray = sorted(set(folders) - {part_folder(out, i, count) for i in range(count)})
    if stray:
        raise UserError(f"{stray[0]}: a part of another split of the job (this one has {count} parts)")
    parts = [read_manifest(part_folder(out, i, count), "audio") for i in range(count)]
    for i, manifest in enumerate(parts):
        for key in ("sample_rate", "channels", "options", "sources"):
            if getattr(manifest, key) != getattr(parts[0], key):
                raise UserError(f"{part_folder(out, i, count) / MANIFEST_NAME}: {key} differs from part 0's")
    staging = make_staging(out)
    try:
        splits = {}
        for split in SPLITS:
            names: list[str] = []
            for i, manifest in enumerate(parts):
                for name in manifest.splits[split].shards:
                    names.append(shard_name(split, len(names)))
                    _link(part_folder(out, i, count) / name, staging / names[-1])
            entries = [m.splits[split] for m in parts]
            counts = [shard_counts(m, split) for m in parts]
            splits[split] = {
                "shards": names,
                "samples": sum(e.samples for e in entries),
                "seconds": round(sum(e.seconds for e in entries), 3),
            }
            if None not in counts:
                splits[split]["shard_samples"] = [n for c in counts for n in c]
        bpms = [m.bpm for m in parts if m.bpm]
        merged = {
            **{
                k: getattr(parts[0], k)
                for k in (
                    "kind",
                    "version",
                    "created_by",
                    "sample_rate",
                    "channels",
                    "options",
                    "sources",
                    "ignored_files",
                    "warnings",
                )
            },
            "splits": splits,
            "files": sum(m.files for m in parts),
            **{
                k: dict(sorted(sum((Counter(getattr(m, k)) for m in parts), Counter()).items()))
                for k in ("genres", "tags", "keys", "kinds", "roles")
            },
            "metadata_sources": _sum_sources(parts),
            "bpm": {"min": min(b["min"] for b in bpms), "max": max(b["max"] for b in bpms)} if bpms else None,
            "skipped": [s for m in parts for s in m.skipped],
            "duplicates": sum(m.duplicates for m in parts),
            "silent_chunks": sum(m.silent_chunks for m in parts),
            "parts": count,
        }
        atomic_write_json(staging / MANIFEST_NAME, merged)
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(out / PARTS)
    return parse_manifest(merged, out / MANIFEST_NAME)


def _sum_sources(manifests: list[Manifest]) -> dict[str, dict[str, int]]:
    """The parts' per-field source counts, added up."""
    total: dict[str, Counter] = {}
    for manifest in manifests:
        for name, counts in manifest.metadata_sources.items():
            total.setdefault(name, Counter()).update(counts)
    return {name: dict(sorted(counter.items())) for name, counter in total.items()}


def _link(source: Path, target: Path) -> None:
    """A hard link (instant, and the part keeps its file); a copy where the filesystem has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _version() -> str:
    try:
        return version("wavediff")
    except PackageNotFoundError:
        return "(not installed)"
