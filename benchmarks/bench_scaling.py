"""Scaling of the tiny autoencoder recipe from 1 to 2 training processes on this machine's CPU.

    .venv/bin/python benchmarks/bench_scaling.py [--steps N] [--repeats R]

Runs `wavediff train-ae recipes/ae-tiny-cpu.toml` (as written: batch 4 per process, one loader
worker per process) on the built-in loop pack sharded at 16 kHz mono: in one process with
1 and with 2 torch threads, and under torchrun in 2 processes of 1 thread each (gloo). The
figure is the engine's own `perf/audio_seconds_per_second` (audio seconds of every process's
batches per wall second), the median over the logged intervals after the first (start-up
excluded), best of `--repeats` runs. Scaling efficiency = 2-process throughput / (2 × the
best 1-process throughput). Writes the "Distributed training" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from report import machine, write_section  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from data_tools.shard import ShardOptions, shard  # noqa: E402
from data_tools.synth import synthesize_pack  # noqa: E402

BIN = Path(sys.executable).parent
RECIPE = ROOT / "recipes" / "ae-tiny-cpu.toml"
LOG_EVERY = 10


def throughput(run_dir: Path) -> float:
    values = EventAccumulator(str(run_dir / "logs")).Reload().Scalars("perf/audio_seconds_per_second")
    return statistics.median(v.value for v in values[1:])


def train(shards: Path, run_dir: Path, steps: int, processes: int, threads: int) -> float:
    args = [
        "-m",
        "wavediff.cli",
        "train-ae",
        str(RECIPE),
        "--out",
        str(run_dir),
        "-q",
        "--set",
        f"data.path={shards}",
        "--set",
        f"train.steps={steps}",
        "--set",
        f"train.checkpoint_every={steps}",
        "--set",
        f"train.log_every={LOG_EVERY}",
        "--set",
        "train.sample_every=0",
    ]
    launcher = (
        [sys.executable]
        if processes == 1
        else [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes)]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    subprocess.run([*launcher, *args], check=True, env=env, cwd=ROOT, capture_output=True)
    return throughput(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    where = machine()
    configs = [(1, 1), (1, 2), (2, 1)]  # (processes, threads each)
    best: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize_pack(tmp / "src", loops_per_genre=4, sample_rate=16000, seed=0, progress=False)
        shard([tmp / "src"], tmp / "shards", ShardOptions(sample_rate=16000, channels=1, workers=1), progress=False)
        for repeat in range(args.repeats):  # configurations in turns, so other jobs' load falls on all alike
            for processes, threads in configs:
                run_dir = tmp / f"run-{processes}x{threads}-{repeat}"
                value = train(tmp / "shards", run_dir, args.steps, processes, threads)
                print(f"{processes} process(es) × {threads} thread(s): {value:.2f} audio s/s", flush=True)
                best[processes, threads] = max(best.get((processes, threads), 0.0), value)
    single = max(best[1, 1], best[1, 2])
    efficiency = best[2, 1] / (2 * single)
    rows = "\n".join(f"| {p} | {t} | {4 * p} | {best[p, t]:.2f} | {best[p, t] / single:.2f}× |" for p, t in configs)
    text = (
        "## Distributed training\n\n"
        f"`python benchmarks/bench_scaling.py --steps {args.steps} --repeats {args.repeats}` — "
        f"{datetime.date.today()}, {where}, torch {torch.__version__}.\n"
        f"recipes/ae-tiny-cpu.toml as written (16 kHz mono, 8192-sample crops, batch 4 per process, 1 loader worker\n"
        f"per process) for {args.steps} steps; 2 processes under torchrun with gloo. Throughput is the engine's\n"
        f"audio seconds per wall second over all processes, median of the {LOG_EVERY}-step intervals after the first,\n"
        f"best of {args.repeats} runs.\n\n"
        "| processes | torch threads each | effective batch | audio s/s | vs best 1 process |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Scaling efficiency from 1 to 2 processes: **{efficiency:.0%}** (2-process throughput / twice the best\n"
        "1-process throughput). On 2 cores the 2 processes and their 2 loader workers share the cores one\n"
        "process alone can already use, and every step adds a gloo all-reduce of the gradients, so this\n"
        "measures the overhead of the distributed path here, not what more GPUs would give.\n"
    )
    print(text)
    write_section("Distributed training", text)


if __name__ == "__main__":
    main()
