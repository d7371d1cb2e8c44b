"""WebDataset pipelines that turn audio or latent shards into training and evaluation batches.

Shards are read sequentially (big reads, no per-file open), split so no two processes read
the same sample: shards are dealt out by rank, then by DataLoader worker; where there are
fewer shards than takers, every taker reads them all and keeps every n-th sample instead.

Training streams forever: each epoch reshuffles the shard order (the same order on every
rank, so ranks stay disjoint), then samples pass a shuffle buffer, random crops and
augmentations, all drawn from one generator seeded by (seed, epoch, rank, worker).
Evaluation is exactly one pass in file order, cropped from the start, unaugmented.

A loop is cut circularly: a window longer than the loop holds the loop repeated, and a
random start (the `roll` augmentation) is a rotation, so the window is still that loop.
Other audio is cropped and zero-padded; `frames` says how much of the window is real.
Only the window is decoded (decoding is most of a loader's work): the start is drawn from
the length in the FLAC header, and a rotation that wraps is two reads.
Timing follows Stable Audio: `seconds_start` is where the window starts in the source
file, `seconds_total` is that file's length (`source_duration_s` in the json; without it,
the end of the sample), `seconds` the real audio in the window. `bpm` and `bars` describe
the source loop (its period), not the window.
Transposition (audio only) reads a window `r` times longer and resamples it to the window's
length: it plays r times faster, so its pitch moves by 12·log2(r) semitones and its tempo by
×r, and the labels move with it (key class, bpm, and the times ÷ r): they stay true.
Latent shards go through the same windowing in latent frames, so timing stays right for
crops of pre-encoded latents (the stable-audio-tools #210/#216 bug).
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import count, islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander, url_opener
from webdataset.utils import make_seed, pytorch_worker_info

from wavediff.config import ROLES, AugmentConfig, DataConfig
from wavediff.errors import AudioError, ConfigError, DataError, UserError
from wavediff.io.audio import EncodedAudio, convert_channels, resample
from wavediff.io.keys import key_index, transpose
from wavediff.io.prompts import compose_prompt
from wavediff.shards.format import Manifest, read_manifest, shard_paths, shard_samples

Kind = Literal["audio", "latent"]
_MEMBER = {"audio": "flac", "latent": "latent.npy"}
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_META_MEMBER = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata members, not samples


class CorruptSample(ValueError):
    """One unusable sample; the pipeline skips it with a warning naming shard and key."""


class GenreVocab:
    """Genre names ↔ ids. A manifest's genres are sorted by name, so the same shards always
    give the same ids; a checkpoint keeps `names` to map them back."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self._ids = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> GenreVocab:
        return cls(sorted(manifest.genres))

    def id(self, name: Any) -> int:
        """-1 for no genre or one outside the vocabulary."""
        return self._ids.get(name, -1) if isinstance(name, str) else -1

    def __len__(self) -> int:
        return len(self.names)


# --------------------------------------------------------------------------- shard lists


def resolve_urls(cfg: DataConfig, split: str) -> list[str]:
    """The shard URLs of a split: `cfg.train`/`cfg.val` when set (brace patterns, `::`
    lists, `pipe:` URLs; plain relative paths are taken inside `cfg.path`), else the
    manifest's list. Local shards must exist, so a typo fails here, not mid-training."""
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {split!r}")
    explicit = cfg.train if split == "train" else cfg.val
    if explicit:
        urls = [_inside(cfg.path, url) for url in expand_urls(explicit)]
        where = f"data.{split} = {explicit!r}"
    else:
        folder = _folder(cfg)
        urls = [str(p) for p in shard_paths(folder, read_manifest(folder), split)]
        where = f"{folder / 'manifest.json'}: split '{split}'"
    if not urls:
        raise DataError(f"{where} lists no shards")
    for url in urls:
        if not _URL_SCHEME.match(url) and not Path(url).is_file():
            raise DataError(f"{url}: shard not found ({where})")
    return urls


def _folder(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise DataError("data.path is empty: point it at a shard folder (or set data.train / data.val)")
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise DataError(f"{folder}: shard folder does not exist")
    return folder


def _inside(folder: str, url: str) -> str:
    if not folder or _URL_SCHEME.match(url) or Path(url).is_absolute():
        return url
    return str(Path(folder) / url)


def _assign(shards: list[str], takers: Sequence[tuple[int, int]]) -> tuple[list[str], int, int]:
    """Deal shards to one taker at each level ((rank, world), (worker, workers)).

    A level with fewer shards than takers splits samples instead: every taker reads the
    same shards and keeps samples offset, offset+stride, … — still disjoint and complete.
    """
    offset, stride = 0, 1
    for index, total in takers:
        if len(shards) >= total:
            shards = shards[index::total]
        else:
            offset, stride = offset + index * stride, stride * total
    return shards, offset, stride


def _skip_shard(exn: Exception) -> bool:
    """webdataset handler for a shard that cannot be read on: warn, go to the next one."""
    shard = next((a for a in reversed(exn.args) if isinstance(a, str)), "a shard")  # webdataset appends the URL
    reason = " ".join(next((a for a in exn.args if isinstance(a, str) and a != shard), str(exn)).split())
    warnings.warn(f"skipped the rest of {shard}: {type(exn).__name__}: {reason}", RuntimeWarning, stacklevel=2)
    return True


def _tar_samples(urls: list[str], expected: Mapping[str, int]) -> Iterator[dict[str, Any]]:
    """webdataset's samples of the shards, in order (members grouped by key, `__url__`
    set); a shard that breaks, or ends before the samples `expected` counts in it, is warned
    about and left.

    Local shards (plain or compressed) are read with tarfile's random access, each member
    in one read: webdataset's stream mode pulls every member through Python in 10 KB
    pieces and took ~70 % longer. Other URLs (`pipe:`, `http:`) stream through webdataset."""
    return group_by_keys(_tar_files(urls, expected), handler=_skip_shard)


def _tar_files(urls: list[str], expected: Mapping[str, int]) -> Iterator[dict[str, Any]]:
    for url in urls:
        if _URL_SCHEME.match(url):
            yield from tar_file_expander(url_opener([{"url": url}], handler=_skip_shard), handler=_skip_shard)
            continue
        read, last, reason = 0, None, None
        try:
            with tarfile.open(url, "r:*") as tar:
                for info in iter(tar.next, None):
                    tar.members = []  # read once, in order: keep no index
                    if info.isreg() and not _META_MEMBER.match(info.name):
                        tar.fileobj.seek(info.offset_data)
                        data = tar.fileobj.read(info.size)
                        if len(data) != info.size:
                            raise tarfile.ReadError("unexpected end of data")
                        key = base_plus_ext(info.name)[0]
                        read, last = read + (key != last), key
                        yield {"fname": info.name, "data": data, "__url__": url}
                _check_end(tar)
            yield {}  # webdataset's end-of-shard marker: no sample spans two shards
        except Exception as exn:  # whatever breaks a shard
            reason = f"{type(exn).__name__}: {' '.join(str(exn).split())}"
        if read < expected.get(url, 0):
            counted = f"read {read} of the {expected[url]} samples the manifest counts"
            reason = f"{counted} ({reason})" if reason else counted
        if reason:
            warnings.warn(f"skipped the rest of {url}: {reason}", RuntimeWarning, stacklevel=2)


def _check_end(tar: tarfile.TarFile) -> None:
    """tarfile ends an archive quietly at a damaged header; a real end is zeros or nothing."""
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(tarfile.BLOCKSIZE).strip(b"\0"):
        raise tarfile.ReadError(f"damaged tar header at byte {tar.offset}")


# --------------------------------------------------------------------------- samples


def _number(meta: Mapping[str, Any], field: str, default: float, where: str) -> float:
    value = meta.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CorruptSample(f"{where}: json field '{field}' is {value!r}, not a number")
    return float(value)


_Read = Callable[[int, torch.Tensor], None]  # (start, out): fills out's (count, channels) rows from step start


def _window(read: _Read, n: int, channels: int, size: int, loop: bool, start: int) -> tuple[torch.Tensor, int]:
    """`size` steps from `start` of a signal of `n` steps, of which `read(start, out)` fills
    any span: circular for loops (tiling when the loop is shorter), else cropped and
    zero-padded. Only spans inside the window are read (a loop shorter than the window
    once), so audio decodes only what it trains on. Spans land in place in one (steps,
    channels) buffer, the decoder's layout, so a wrap costs no joining copy. Returns the
    (channels, size) window, a transposed view, and its real length."""
    out = torch.empty(size, channels)
    if start + size <= n:
        read(start, out)
        return out.T, size
    if not loop:
        valid = n - start
        read(start, out[:valid])
        out[valid:] = 0
        return out.T, valid
    if n >= size:  # wraps around once; the part from the start is read first, where no seek is needed
        head = n - start
        read(0, out[head:])
        read(start, out[:head])
        return out.T, size
    x = torch.empty(n, channels)
    read(0, x)
    out[: n - start] = x[start:]
    have = n - start
    while have < size:
        part = min(n, size - have)
        out[have : have + part] = x[:part]
        have += part
    return out.T, size


class ShardDataset(IterableDataset):
    """Samples (dicts of tensors and numbers) from shards; see the module docstring."""

    def __init__(
        self,
        urls: list[str],
        *,
        kind: Kind,
        sample_size: int,
        sample_rate: int | None,
        channels: int | None,
        genres: GenreVocab,
        augment: AugmentConfig | None,
        training: bool,
        seed: int,
        shuffle_buffer: int,
        autoencoder: str | None,
        rank: int,
        world_size: int,
        expected: Mapping[str, int],
        one_shots: bool = True,
    ):
        super().__init__()
        self.one_shots = one_shots
        self.urls, self.kind, self.sample_size = urls, kind, sample_size
        self.sample_rate, self.channels, self.genres = sample_rate, channels, genres
        self.augment = augment if training else None
        self.training, self.seed, self.shuffle_buffer = training, seed, shuffle_buffer
        self.autoencoder, self.rank, self.world_size = autoencoder, rank, world_size
        self.expected = dict(expected)  # url → samples its manifest counts
        self.epoch = 0  # the next epoch to start; persistent workers carry it across passes

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for epoch in count(self.epoch) if self.training else [0]:
            self.epoch = epoch + 1
            produced = False
            for sample in self._epoch(epoch, worker, workers):
                produced = True
                yield sample
            if not produced:  # nothing to read: stop rather than spin forever
                return

    def _epoch(self, epoch: int, worker: int, workers: int) -> Iterator[dict[str, Any]]:
        shards = list(self.urls)
        if self.training:
            random.Random(make_seed(self.seed, epoch)).shuffle(shards)
        mine, offset, stride = _assign(shards, [(self.rank, self.world_size), (worker, workers)])
        rng = random.Random(make_seed(self.seed, epoch, self.rank, worker))
        words = random.Random(make_seed(self.seed, epoch, self.rank, worker, 1))  # prompts: rng's stream stays
        samples = _tar_samples(mine, self.expected)
        if stride > 1:
            samples = islice(samples, offset, None, stride)
        if self.training:
            samples = wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng)(samples)
        for sample in samples:
            try:
                prepared = self._prepare(sample, rng, words)
            except CorruptSample as e:
                warnings.warn(f"skipped {e}", RuntimeWarning, stacklevel=2)
                continue
            if prepared is not None:
                yield prepared

    def _prepare(self, sample: dict[str, Any], rng: random.Random, words: random.Random) -> dict[str, Any] | None:
        """The sample as tensors, numbers and its prompt (composed with `words`); None for a one-shot left out."""
        key, where = sample["__key__"], f"{sample['__url__']}: sample {sample['__key__']}"
        try:
            meta = json.loads(sample["json"])
        except KeyError:
            raise CorruptSample(f"{where}: no .json member") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptSample(f"{where}: json member does not parse ({e})") from None
        if not isinstance(meta, dict):
            raise CorruptSample(f"{where}: json member is not an object")
        if not self.one_shots and meta.get("kind") == "one-shot":
            return None
        member = _MEMBER[self.kind]
        if member not in sample:
            raise CorruptSample(f"{where}: no .{member} member")
        loop = meta.get("loop") is True
        semitones, (source, target) = _transposition(self.augment, rng)
        size = math.ceil(self.sample_size * source / target)  # the source steps the window is resampled from
        with self._signal(sample[member], meta, where) as (read, n, channels, rate):
            start = self._start(n, loop, rng, size)
            window, valid = _window(read, n, channels, size, loop, start)
        if self.kind == "audio":
            if self.channels and channels != self.channels:
                window = convert_channels(window.contiguous(), self.channels)
            if semitones:
                window = resample(window.contiguous(), source, target)[..., : self.sample_size]
                valid = min(self.sample_size, valid * target // source)
            if self.augment is not None:
                window = _augment(window, self.augment, rng)

        offset = _number(meta, "offset_s", 0.0, where)
        total = _number(meta, "source_duration_s", offset + n / rate, where)
        stretch = source / target  # played faster by this: tempo ×, times ÷
        key_class = key_index(meta.get("key"))
        key_class = transpose(key_class, semitones) if key_class >= 0 else -1
        bpm = _number(meta, "bpm", 0.0, where) * stretch
        return {
            self.kind: window,
            "frames": valid,
            "genre": self.genres.id(meta.get("genre")),
            "role": ROLES.index(meta["role"]) if meta.get("role") in ROLES else -1,
            "key_class": key_class,
            "bpm": bpm,
            "bars": _number(meta, "bars", 0.0, where),
            "loop": loop,
            "seconds": valid / rate,
            "seconds_start": (offset + start / rate) / stretch,
            "seconds_total": total / stretch,
            "key": key,
            "prompt": compose_prompt(meta, bpm, key_class, words if self.training else None) or "",
        }

    def _start(self, n: int, loop: bool, rng: random.Random, size: int) -> int:
        """Where a window of `size` steps starts in a sample of n steps: a random rotation of a
        loop (the `roll` augmentation), a random crop of anything else, the start in evaluation."""
        if not self.training:
            return 0
        if loop and self.augment is not None and self.augment.roll:
            return rng.randrange(n)
        return rng.randrange(max(n - size, 0) + 1)

    @contextmanager
    def _signal(self, data: bytes, meta: dict[str, Any], where: str) -> Iterator[tuple[_Read, int, int, float]]:
        """The sample, open while in use, as (read, length, channels, steps per second):
        `read(start, out)` fills any span as float32. Audio decodes only what is read."""
        declared = meta.get("sample_rate")
        if self.sample_rate is not None and declared is not None and declared != self.sample_rate:
            raise DataError(f"{where}: sample rate {declared} Hz, expected {self.sample_rate} Hz")
        if self.kind == "audio":
            try:
                with EncodedAudio(data, where) as clip:
                    if self.sample_rate is not None and clip.sample_rate != self.sample_rate:
                        raise DataError(f"{where}: audio at {clip.sample_rate} Hz, expected {self.sample_rate} Hz")
                    yield clip.read_into, clip.frames, clip.channels, float(clip.sample_rate)
            except AudioError as e:
                raise CorruptSample(str(e)) from None
            return
        if self.autoencoder is not None and meta.get("autoencoder") != self.autoencoder:
            have = meta.get("autoencoder")
            raise DataError(f"{where}: latents of autoencoder {have!r}, expected {self.autoencoder!r}")
        try:
            latent = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CorruptSample(f"{where}: latent .npy does not load ({e})") from None
        if latent.ndim != 2 or latent.shape[1] == 0 or not np.isfinite(latent).all():
            raise CorruptSample(f"{where}: latent must be finite (channels, frames), got shape {latent.shape}")
        hop, sr = meta.get("hop_length"), meta.get("sample_rate")
        if not isinstance(hop, int) or not isinstance(sr, int) or hop <= 0 or sr <= 0:
            raise CorruptSample(f"{where}: latent json needs positive integer 'hop_length' and 'sample_rate'")
        x = torch.from_numpy(latent)
        yield (
            (lambda start, out: out.copy_(x[:, start : start + len(out)].T)),
            latent.shape[1],
            latent.shape[0],
            sr / hop,
        )


TRANSPOSE_DENOMINATOR = 200  # resampling ratios are n/200: a short sinc kernel, within 4.3 cents of 2^(s/12)


def _transposition(augment: AugmentConfig | None, rng: random.Random) -> tuple[int, tuple[int, int]]:
    """(semitones, (source, target) steps): a window of `source` steps resampled to `target` plays
    source/target times faster, so its pitch moves by 12·log2 of that (≈ the semitones drawn) and
    its tempo by that factor. The ratio is exact, and it is what the labels are moved by."""
    if augment is None or not augment.transpose:
        return 0, (1, 1)
    semitones = rng.randint(-augment.transpose, augment.transpose)
    return semitones, (round(TRANSPOSE_DENOMINATOR * 2 ** (semitones / 12)), TRANSPOSE_DENOMINATOR)


def _augment(wav: torch.Tensor, augment: AugmentConfig, rng: random.Random) -> torch.Tensor:
    """Gain, polarity and channel swap: each leaves a loop a loop and keeps the shape."""
    if augment.gain_db:
        wav = wav * 10 ** (rng.uniform(-augment.gain_db, augment.gain_db) / 20)
    if augment.polarity and rng.random() < 0.5:
        wav = -wav
    if augment.channel_swap and wav.shape[0] == 2 and rng.random() < 0.5:
        wav = wav.flip(0)
    return wav


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, list strings, and put numbers in numpy arrays: those are pickled inline
    from a worker, where a small tensor would cost a shared-memory segment each (≈20 % of
    throughput for nine fields). ShardLoader turns them into tensors on arrival. Tensors are
    stacked the way default_collate does, straight into shared memory in a worker, which
    saves copying each batch there on its way out (5–10 % of a worker's time)."""
    batch: dict[str, Any] = {}
    for name, first in samples[0].items():
        values = [s[name] for s in samples]
        if isinstance(first, torch.Tensor):
            batch[name] = default_collate(values)
        elif isinstance(first, str):
            batch[name] = values
        else:
            dtype = np.bool_ if isinstance(first, bool) else np.int64 if isinstance(first, int) else np.float32
            batch[name] = np.array(values, dtype=dtype)
    return batch


class ShardLoader(DataLoader):
    """A DataLoader of batch dicts: `audio` (B, C, T) float32 or `latent` (B, C, F), `frames`,
    `genre`, `role` (an index into config.ROLES) and `key_class` (the musical key, an index into
    io.keys.KEYS) LongTensors (−1 unknown), `loop` BoolTensor,
    `bpm`, `bars`, `seconds`, `seconds_start`,
    `seconds_total` float32 tensors, and `key` (the sample's name in its shard) and `prompt` (words
    composed from its labels, io.prompts; "" when it has none) lists of str."""

    def __iter__(self) -> _Batches:
        return _Batches(super().__iter__())


class _Batches:
    """A ShardLoader's iterator. Made at once by iter() (its workers start there, not at the first
    batch), and close() stops its workers at once, also workers that ignore SIGTERM (training's
    do), which DataLoader's own shutdown would leave for the interpreter's exit to wait on forever."""

    def __init__(self, batches: Iterator[dict[str, Any]]) -> None:
        self._batches = batches

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self._batches)
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}

    def close(self) -> None:
        shutdown = getattr(self._batches, "_shutdown_workers", None)  # a multi-process DataLoader iterator
        if shutdown is None:
            return
        shutdown()  # asks each worker to exit, waits a moment, then SIGTERM (which training's workers ignore)
        for worker in getattr(self._batches, "_workers", []):
            if worker.is_alive():
                worker.kill()
            worker.join()


# --------------------------------------------------------------------------- public builders


def build_dataset(
    urls: str | Sequence[str],
    *,
    kind: Kind = "audio",
    sample_size: int,
    sample_rate: int | None = None,
    channels: int | None = None,
    genres: Sequence[str] = (),
    augment: AugmentConfig | None = None,
    training: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    autoencoder: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    expected_samples: Mapping[str, int] | None = None,
    one_shots: bool = True,
) -> ShardDataset:
    """A dataset of single samples over shard URLs (a brace pattern, `::` list or list).

    sample_size counts audio samples, or latent frames for kind="latent". sample_rate,
    when given, must match every sample (a mismatch is a DataError naming shard and key);
    channels converts audio to that many channels; one_shots=False leaves out samples whose
    kind is "one-shot". rank/world_size default to the
    torch.distributed (or RANK/WORLD_SIZE) values; tests pass them to simulate ranks.
    expected_samples ({url: samples}, from the manifest) makes a shard that ends early a warning.
    """
    if kind not in _MEMBER:
        raise UserError(f"kind must be 'audio' or 'latent', got {kind!r}")
    if augment is not None and augment.transpose:
        if augment.transpose < 0 or augment.transpose > 12:
            raise ConfigError(f"data.augment.transpose must be 0–12 semitones, got {augment.transpose}")
        if kind == "latent":
            raise ConfigError(
                "data.augment.transpose works on audio shards only: latents cannot be resampled "
                "(set it to 0, or train on audio shards)"
            )
    if sample_size <= 0 or shuffle_buffer <= 0:
        raise UserError(f"sample_size and shuffle_buffer must be positive, got {sample_size}, {shuffle_buffer}")
    urls = expand_urls(urls) if isinstance(urls, str) else list(urls)
    if not urls:
        raise DataError("no shard URLs given")
    if rank is None or world_size is None:
        rank, world_size, _, _ = pytorch_worker_info()
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside world size {world_size}")
    return ShardDataset(
        urls,
        kind=kind,
        sample_size=sample_size,
        sample_rate=sample_rate,
        channels=channels,
        genres=GenreVocab(genres),
        augment=augment,
        training=training,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        autoencoder=autoencoder,
        rank=rank,
        world_size=world_size,
        expected=expected_samples or {},
        one_shots=one_shots,
    )


def make_loader(
    cfg: DataConfig,
    split: str = "train",
    *,
    training: bool = True,
    seed: int = 0,
    kind: Kind = "audio",
    expect_sample_rate: int | None = None,
    genres: Sequence[str] | None = None,
    autoencoder: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> ShardLoader:
    """Batches from `cfg`'s shards (see ShardLoader for the batch dict).

    The manifest in `cfg.path` gives the sample rate, channels, genre vocabulary and (for
    latents) the autoencoder id; `genres` overrides the vocabulary (a checkpoint's, when
    fine-tuning) and `expect_sample_rate` must agree with the manifest; with explicit URLs
    and no `cfg.path` there is no manifest, so pass both. The loader is already split by
    rank: do not pass it through accelerate's `prepare`.
    """
    manifest: Manifest | None = None
    if cfg.path:
        folder = _folder(cfg)
        manifest = read_manifest(folder, kind)
        where, have = folder / "manifest.json", manifest.sample_rate
        if expect_sample_rate is not None and have != expect_sample_rate:
            raise DataError(f"{where}: shards are {have} Hz, the recipe expects {expect_sample_rate} Hz")
        if autoencoder is not None and manifest.autoencoder not in (None, autoencoder):
            raise DataError(f"{where}: latents of autoencoder {manifest.autoencoder!r}, expected {autoencoder!r}")
    dataset = build_dataset(
        resolve_urls(cfg, split),
        kind=kind,
        sample_size=cfg.sample_size,
        sample_rate=expect_sample_rate or (manifest.sample_rate if manifest else None),
        channels=manifest.channels if manifest and kind == "audio" else None,
        genres=(GenreVocab.from_manifest(manifest).names if manifest else []) if genres is None else genres,
        augment=cfg.augment,
        training=training,
        seed=seed,
        shuffle_buffer=cfg.shuffle_buffer,
        autoencoder=autoencoder or (manifest.autoencoder if manifest else None),
        rank=rank,
        world_size=world_size,
        expected_samples={str(path): n for path, n in shard_samples(cfg.path, manifest).items()} if manifest else None,
        one_shots=cfg.one_shots,
    )
    return ShardLoader(
        dataset,
        batch_size=cfg.batch_size,
        collate_fn=_collate,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        # its own generator: a DataLoader draws its workers' base seed from the global one otherwise,
        # and where in a run a stream starts would then change the training noise after it
        generator=torch.Generator().manual_seed(seed),
    )
