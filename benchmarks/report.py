"""What every benchmark script shares: the machine's name and its section of BENCHMARKS.md."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wavediff.allocator import reuse_freed_memory
from wavediff.io.files import atomic_write_bytes

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    match = re.search(r"Model name:\s*(.+)", out)
    return match.group(1).strip() if match else "unknown CPU"


def machine() -> str:
    """The CPU, its cores and how busy it was: figures from a loaded machine are not comparable."""
    return f"{cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"


@contextmanager
def allocator(reuse: bool) -> Iterator[None]:
    """glibc's allocator with freed memory kept for reuse (as the `wavediff` command runs) or as it comes."""
    reuse_freed_memory(reuse)
    try:
        yield
    finally:
        reuse_freed_memory(False)


def training_pace(run: Path) -> tuple[int, float]:
    """(last step, median seconds a step) of a run, from the wall times of its logged steps: the median
    leaves out what a run stopped, paused or resumed hours later spent not training."""
    points = []
    for events in sorted((run / "logs").glob("events.out.tfevents.*")):
        points += EventAccumulator(str(events)).Reload().Scalars("perf/audio_seconds_per_second")
    points.sort(key=lambda e: e.wall_time)
    paces = [
        (after.wall_time - before.wall_time) / (after.step - before.step)
        for before, after in zip(points, points[1:])
        if after.step > before.step
    ]
    if not paces:
        raise ValueError(f"{run}: its event logs hold no two consecutive training steps")
    return max(e.step for e in points), statistics.median(paces)


def write_section(title: str, text: str) -> Path:
    """Replace (or add) the `## title` section of BENCHMARKS.md, leaving other sections alone."""
    old = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    section = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = text.rstrip("\n") + "\n\n"  # one blank line before the next section
    new = section.sub(lambda _: text, old) if section.search(old) else old.rstrip("\n") + "\n\n" + text
    atomic_write_bytes(BENCHMARKS_MD, new.encode())
    return BENCHMARKS_MD
