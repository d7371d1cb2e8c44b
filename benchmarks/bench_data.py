"""Data pipeline speed: the sharder against a bare loop, the shard loader against per-file loading.

    .venv/bin/python benchmarks/bench_data.py [--quick]

Data: the synthesized loop pack (data_tools.synth) at 44.1 kHz stereo WAV, as a producer's
folder would hold it, plus copies of each loop rotated by whole beats (distinct files, so
the sharder's duplicate check keeps them) to give the sharder minutes of audio to chew on.
"Takes" are one-minute files made by chaining a genre's loops: the long-file case.

(1) Sharding: audio seconds per wall second of `data_tools.shard` with 2 workers against the
    bare limit, one process decoding, resampling to 16 kHz and FLAC-encoding the same files
    in a plain loop (no hashing, metadata, tars or manifest). Reported end to end and in the
    steady state (less the fixed cost of starting the worker processes, timed on 2 files).
(2) Loading: training samples per second of the shard loader against a Dance-Diffusion style
    loader that opens a random source file for every sample, decodes it, resamples it and
    crops it; same window, batch size and workers. Two windows: the demo autoencoder's (mono,
    from mono shards: what `wavediff demo` trains on, the issue's measure) and a long stereo
    one. A third loader reads per-file FLACs already at 16 kHz, which separates the cost of
    per-file reads from that of resampling.

Prints the figures and writes them to the "Data" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools.shard import ShardOptions, shard  # noqa: E402
from data_tools.synth import synthesize_pack  # noqa: E402
from wavediff.config import AERecipe, AugmentConfig, DataConfig, load_recipe  # noqa: E402
from wavediff.io import audio
from wavediff.io.files import atomic_write_json
from wavediff.pipelines.demo import DEFAULT_QUALITY, QUALITIES
from wavediff.shards.loader import make_loader

SOURCE_RATE = 44100
RATE = 16000  # the demo's training rate
WINDOW = 32768  # samples per training example (2.05 s at 16 kHz, stereo): a long window
DEMO = QUALITIES[DEFAULT_QUALITY]
DEMO_WINDOW = load_recipe(DEMO.ae_recipe, AERecipe).data.sample_size  # what the demo's autoencoder trains on (mono)
BATCH = 8
WORKERS = 2
SHARD_MB = 16.0  # small enough that even the quick pack spans several shards
TAKE_SECONDS = 60.0


def rotated_copies(files: list[Path], copies: int) -> list[Path]:
    """Each loop again, rotated by 1..copies beats: still a loop, but new bytes."""
    out = list(files)
    for path in files:
        meta = json.loads(path.with_suffix(".json").read_text())
        wav, sr = audio.load(path)
        beat = round(60 / meta["bpm"] * sr)
        for k in range(1, copies + 1):
            copy = path.with_name(f"{path.stem}_rot{k}.wav")
            out.append(audio.save(copy, torch.roll(wav, k * beat, dims=-1), sr))
            atomic_write_json(copy.with_suffix(".json"), meta)
    return out


def takes(files: list[Path], folder: Path, per_genre: int) -> list[Path]:
    """One-minute non-loop files, each chaining one genre's loops from a different first loop."""
    by_genre: dict[str, list[torch.Tensor]] = {}
    for path in files:
        by_genre.setdefault(path.parent.name, []).append(audio.load(path)[0])
    out = []
    length = int(TAKE_SECONDS * SOURCE_RATE)
    for genre, wavs in sorted(by_genre.items()):
        for first in range(min(per_genre, len(wavs))):
            chain = wavs[first:] + wavs[:first]
            wav = torch.cat(chain * -(-length // sum(w.shape[-1] for w in chain)), -1)[:, :length]
            take = audio.save(folder / genre / f"take_{first}.wav", wav, SOURCE_RATE)
            atomic_write_json(take.with_suffix(".json"), {"loop": False})
            out.append(take)
    return out


def bare_shard_loop(files: list[Path], threads: int) -> float:
    """The floor the sharder is measured against: decode, resample, encode, nothing else.
    With torch's default threads, resampling already spreads over both cores."""
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        for path in files:
            wav, sr = audio.decode(path.read_bytes(), str(path))
            audio.encode(audio.conform(wav, sr, RATE, 2), RATE, "flac")
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(default)


def shard_seconds(sources: list[Path], out: Path, channels: int = 2) -> float:
    start = time.perf_counter()
    shard(
        sources,
        out,
        ShardOptions(sample_rate=RATE, channels=channels, workers=WORKERS, val_fraction=0.0, shard_size_mb=SHARD_MB),
        progress=False,
    )
    return time.perf_counter() - start


class PerFileDataset(Dataset):
    """Dance Diffusion's loader: every sample opens a random file, decodes, resamples, crops."""

    def __init__(self, files: list[Path], window: int, channels: int, length: int = 10**6):
        self.files, self.window, self.channels, self.length = files, window, channels, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = random.Random(index)  # the random file and crop come from the index: no sampler needed
        wav, _ = audio.load(rng.choice(self.files), RATE, self.channels)
        if wav.shape[-1] < self.window:
            wav = wav.repeat(1, -(-self.window // wav.shape[-1]))
        start = rng.randrange(wav.shape[-1] - self.window + 1)
        return wav[:, start : start + self.window]


def per_file_loader(files: list[Path], window: int = WINDOW, channels: int = 2) -> DataLoader:
    return DataLoader(PerFileDataset(files, window, channels), BATCH, num_workers=WORKERS, persistent_workers=True)


def shard_loader(folder: Path, window: int = WINDOW) -> DataLoader:
    cfg = DataConfig(
        path=str(folder),
        sample_size=window,
        batch_size=BATCH,
        num_workers=WORKERS,
        shuffle_buffer=100,
        augment=AugmentConfig(roll=True),
    )
    return make_loader(cfg, training=True, seed=0, expect_sample_rate=RATE)


def loader_rates(make: dict, batches: int, rounds: int) -> dict:
    """Median samples/s of each loader. Rounds take the loaders in turns, so load from other
    jobs on this shared machine falls on all of them alike; each run gets a fresh loader,
    warmed up, and shut down after, so no worker still fills its prefetch queue during the
    next loader's run."""
    runs: dict = {name: [] for name in make}
    for _ in range(rounds):
        for name, factory in make.items():
            loader = factory()
            it = iter(loader)
            for _ in range(2 * WORKERS):
                next(it)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            runs[name].append(batches * BATCH / (time.perf_counter() - start))
            del it, loader
    return {name: statistics.median(r) for name, r in runs.items()}


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended: a shard job joins its
    workers, so their work counts too."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def best_of(repeats: int, *jobs) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each job's fastest run, running them in turns (same reason as
    above). CPU time, all processes together, shows the work done apart from how the
    machine's cores were shared."""
    runs = [[] for _ in jobs]
    for _ in range(repeats):
        for i, job in enumerate(jobs):
            start = cpu_seconds()
            wall = job()
            runs[i].append((wall, cpu_seconds() - start))
    return [min(r) for r in runs]


def seconds_of(files: list[Path]) -> float:
    return sum(audio.load(f)[0].shape[-1] / SOURCE_RATE for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small pack and short runs (a smoke test)")
    args = parser.parse_args()
    where = machine()  # before our own work loads the CPU
    loops_per_genre, copies, repeats, batches, rounds = (2, 2, 1, 10, 1) if args.quick else (8, 12, 3, 30, 5)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loops = synthesize_pack(tmp / "loops", loops_per_genre=loops_per_genre, sample_rate=SOURCE_RATE)
        long = takes(loops, tmp / "takes", per_genre=2 if args.quick else 4)
        loops = rotated_copies(loops, copies)
        seconds = seconds_of(loops)
        print(
            f"loops: {len(loops)} files, {seconds / 60:.1f} min; takes: {len(long)} × {TAKE_SECONDS:g} s "
            f"({SOURCE_RATE} Hz stereo WAV)"
        )

        # (1) sharding
        threads = torch.get_num_threads()
        (bare, _), (bare_1, bare_1_cpu), (end_to_end, shard_cpu), (two, _) = best_of(
            repeats,
            lambda: bare_shard_loop(loops, threads),
            lambda: bare_shard_loop(loops, 1),
            lambda: shard_seconds([tmp / "loops"], tmp / "shards"),
            lambda: shard_seconds(loops[:2], tmp / "two"),
        )
        cpu_ratio = shard_cpu / bare_1_cpu
        startup = two - bare_1 * 2 / len(loops)
        bare_rate, bare_1_rate, e2e_rate = seconds / bare, seconds / bare_1, seconds / end_to_end
        steady_rate = seconds / (end_to_end - startup)
        print(
            f"sharding, {WORKERS} workers: {e2e_rate:.0f} audio s/s end to end, {steady_rate:.0f} steady "
            f"(worker start-up {startup:.2f} s); bare loop: {bare_rate:.0f} audio s/s ({threads} torch threads), "
            f"{bare_1_rate:.0f} (1 thread); CPU, all processes: {shard_cpu:.1f} s against the 1-thread bare "
            f"loop's {bare_1_cpu:.1f} s ({cpu_ratio:.2f}×)"
        )

        # (2) loading
        shard_seconds([tmp / "takes"], tmp / "take_shards")
        shard_seconds([tmp / "loops"], tmp / "demo_shards", channels=DEMO.channels)
        flat = [audio.save(tmp / "flat" / f"{i}.flac", audio.load(f, RATE, 2)[0], RATE) for i, f in enumerate(loops)]
        loaders = {
            ("demo", "shards"): lambda: shard_loader(tmp / "demo_shards", DEMO_WINDOW),
            ("demo", "dd"): lambda: per_file_loader(loops, DEMO_WINDOW, DEMO.channels),
            ("loops", "shards"): lambda: shard_loader(tmp / "shards"),
            ("loops", "dd"): lambda: per_file_loader(loops),
            ("loops", "flat"): lambda: per_file_loader(flat),
            ("takes", "shards"): lambda: shard_loader(tmp / "take_shards"),
            ("takes", "dd"): lambda: per_file_loader(long),
        }
        rates = loader_rates(loaders, batches, rounds)
        for (workload, loader), rate in rates.items():
            print(f"{workload}, {loader}: {rate:.0f} samples/s")

    def ratio(workload: str, other: str) -> str:
        return f"{rates[workload, 'shards'] / rates[workload, other]:.2f}×"

    command = "python benchmarks/bench_data.py" + (" --quick" if args.quick else "")
    text = f"""## Data

`{command}` — {datetime.date.today()}, {where}, torch {torch.__version__}.
Source: {len(loops)} synthesized loops ({seconds / 60:.1f} min; each loop plus {copies} copies rotated by whole beats) and
{len(long)} one-minute takes chained from them, all {SOURCE_RATE} Hz stereo WAV. Target: {RATE} Hz stereo FLAC
shards of ≤ {SHARD_MB:g} MB; loading: the demo's autoencoder window ({DEMO_WINDOW} samples, {DEMO.channels} channel, from
{RATE} Hz mono shards of the same loops) and a long one ({WINDOW} samples, stereo), batch {BATCH}, {WORKERS} workers. Figures are the best of
{repeats} (sharding) or the median of {rounds} (loading) runs, taken in turns so other jobs' load falls on all alike.

| measurement | shards | baseline | ratio | target |
|---|---|---|---|---|
| sharding, end to end | {e2e_rate:.0f} audio s/s | bare decode+resample+FLAC loop, 1 process, {threads} torch threads: {bare_rate:.0f} audio s/s | {e2e_rate / bare_rate:.2f}× | ≥ 1.5× |
| (same) | | bare loop, 1 process, 1 thread: {bare_1_rate:.0f} audio s/s | {e2e_rate / bare_1_rate:.2f}× | ≥ 1.5× |
| sharding, steady state (less {startup:.1f} s worker start-up) | {steady_rate:.0f} audio s/s | bare loop, {threads} torch threads | {steady_rate / bare_rate:.2f}× | ≥ 1.5× |
| (same) | | bare loop, 1 thread | {steady_rate / bare_1_rate:.2f}× | ≥ 1.5× |
| sharding CPU, all processes | {shard_cpu:.1f} s | bare loop, 1 thread: {bare_1_cpu:.1f} s | {cpu_ratio:.2f}× | — |
| loading loops, the demo's window | {rates["demo", "shards"]:.0f} samples/s | per-file, DD way (open, decode, resample, crop): {rates["demo", "dd"]:.0f} samples/s | {ratio("demo", "dd")} | ≥ 3× |
| loading loops, {WINDOW}-sample stereo window | {rates["loops", "shards"]:.0f} samples/s | per-file, DD way: {rates["loops", "dd"]:.0f} samples/s | {ratio("loops", "dd")} | ≥ 3× |
| (same) | (same) | per-file, files already {RATE} Hz FLAC: {rates["loops", "flat"]:.0f} samples/s | {ratio("loops", "flat")} | — |
| loading one-minute takes | {rates["takes", "shards"]:.0f} samples/s | per-file, DD way: {rates["takes", "dd"]:.0f} samples/s | {ratio("takes", "dd")} | ≥ 3× |

Where the time goes (profiled with cProfile, CPU time of the pieces in one process):
- Sharding: workers are forked, so they start in ~{startup:.2f} s with the parent's modules
  imported (spawned ones each imported torch: ~1.9 s, more than the work on this pack). All
  processes together use {cpu_ratio:.2f}× the 1-thread bare loop's CPU: the SHA-1 of every source
  (~5 %), each file's FLAC bytes pickled from its worker to the parent, the parent writing and
  fsyncing the tars, and two workers sharing the caches; so two workers on two cores reach at
  most ~{2 / cpu_ratio:.2f}× the 1-thread bare loop, while the bare loop with torch's default
  threads already runs its resampling on both cores ({bare_rate / bare_1_rate:.2f}× its 1-thread rate).
- Loading loops: only the window is decoded (wavediff.io.audio.EncodedAudio: the length from the
  FLAC header, a seek, a read; a rotation that wraps is two reads, each decoded in place into
  the window). Per sample that leaves FLAC decoding ~60 %, seeking ~13 % and opening ~8 % of
  the member, reading the tar ~12 % (local shards through tarfile's random access, a member
  per read: webdataset's stream mode, 10 KB pieces through Python, took ~70 % longer);
  moving a batch to the main process through shared memory costs about a quarter more, most
  of it the kernel creating and faulting in a fresh 2 MB segment per batch (batches are
  stacked straight into it, as default_collate does; their numbers go as numpy arrays: one
  shared-memory tensor per field cost ~20 %).
- The demo's window is half a second of mono audio out of loops of ~4 s: a per-file
  loader decodes and resamples the whole file for it, the shard loader decodes the window.
- One-minute takes: a per-file loader decodes and resamples a whole file per 2 s sample, while
  shards hold ≤ 30 s chunks already at 16 kHz, of which the window alone is decoded.

"""
    print(f"wrote {write_section('Data', text)}")


if __name__ == "__main__":
    main()
