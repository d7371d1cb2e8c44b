"""What every benchmark script shares: the machine's name and its section of BENCHMARKS.md."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def write_section(title: str, text: str) -> Path:
    """Replace (or add) the `## title` section of BENCHMARKS.md, leaving other sections alone."""
    old = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    section = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = text.rstrip("\n") + "\n\n"  # one blank line before the next section
    new = section.sub(lambda _: text, old) if section.search(old) else old.rstrip("\n") + "\n\n" + text
    atomic_write_bytes(BENCHMARKS_MD, new.encode())
    return BENCHMARKS_MD
