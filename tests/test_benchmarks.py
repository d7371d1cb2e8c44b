"""The benchmark scripts run: their smoke modes, so a script cannot rot between the runs that fill BENCHMARKS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_benchmark_runs_its_smoke_mode_on_a_cpu():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].removeprefix("| ") for line in table[1:]}
    assert any(row.startswith("loops-44k training, bf16 (") for row in rows), table
    assert any(row.startswith("loops-44k training, bf16 + torch.compile") for row in rows), table
    assert any(row.startswith("ae-44k-stereo training") for row in rows), table
    assert sum(row.startswith("1-bar loop") for row in rows) == 2, table
    assert "ae-44k-stereo encode" in rows, table
    assert "MFU —" in result.stdout  # no bf16 peak to measure against on a CPU
