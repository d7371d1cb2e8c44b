"""`data shard`, its publish step and its walk under hostile conditions: real kills (strace fault
injection, SIGKILL), a full disk, FIFOs, symlink loops, unreadable folders, absurd levels."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_tools.inspect import inspect_shards
from data_tools.shard import ShardOptions, shard
from wavediff.cli import main as cli
from wavediff.shards.format import MANIFEST_NAME, read_manifest
from wavediff.shards.swap import recover
from wavediff.shards.writer import make_staging, publish

SR = 8000
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")


def tone(seconds: float, freq: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None]


def write_pack(root: Path, freqs: list[float], seconds: float = 0.5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for freq in freqs:
        sf.write(root / f"t{freq:g}.wav", tone(seconds, freq), SR)
    return root


def files(folder: Path) -> dict[str, bytes]:
    """The dataset as a reader sees it: every visible file's bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _options(**kw) -> ShardOptions:
    return ShardOptions(**{"sample_rate": SR, "channels": 1, "workers": 1, "val_fraction": 0.3, **kw})


# --------------------------------------------------------------------------- a kill during publish


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """An old dataset (more shards) and the new set a rerun publishes over it (other bytes,
    some of the same names), both real `data shard` output."""
    base = tmp_path_factory.mktemp("swap")
    old_src = write_pack(base / "old-src", [200 + 40 * i for i in range(5)])
    new_src = write_pack(base / "new-src", [230 + 50 * i for i in range(3)])
    shard([old_src], base / "old", _options(shard_size_mb=0.01), progress=False)
    shard([new_src], base / "new", _options(shard_size_mb=0.01), progress=False)
    old, new = files(base / "old"), files(base / "new")
    assert len(old) > len(new) > 2 and set(old) & set(new)
    return base, old, new


# Publishes the files of folder NEW into OUT the way `data shard` (no third argument) or a
# partial `encode --shard-range` (third argument: the partial manifest's name) does.
PUBLISH = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    from wavediff.shards.writer import make_staging, publish
    out, new = Path(sys.argv[1]), Path(sys.argv[2])
    staging = make_staging(out)
    for f in sorted(new.iterdir()):
        shutil.copyfile(f, staging / f.name)
    if len(sys.argv) > 3:
        publish(staging, out, manifest=sys.argv[3], stale=lambda name: False)
    else:
        publish(staging, out)
    """
)
CALLS = {"rename": "rename,renameat,renameat2", "fsync": "fsync,fdatasync"}


def _strace(args: list[str], calls: str, log: Path | None = None, kill_at: int | None = None):
    """Run `args` under strace, tracing `calls` (into `log`) or killing the process at the
    `kill_at`-th of them, before it runs."""
    inject = ["-e", f"inject={calls}:signal=KILL:when={kill_at}"] if kill_at else []
    command = [STRACE, "-f", "-qq", "-o", str(log or os.devnull), "-e", f"trace={calls}", *inject, *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc renames
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _count(args: list[str], calls: str, log: Path) -> int:
    done = _strace(args, calls, log)
    assert done.returncode == 0, done.stderr
    return len(re.findall(rf"^\d+ +(?:{calls.replace(',', '|')})\(", log.read_text(), re.MULTILINE))


def _sweep(base: Path, old: dict, new_set: Path, manifest: str | None, check) -> set[str]:
    """Kill the publishing process at each rename and each fsync in turn; after each kill,
    `check(out)` must find the old dataset or the new one whole. Returns which were seen."""
    seen = set()
    for kind, calls in CALLS.items():
        out = base / f"out-{kind}"
        args = [sys.executable, "-c", PUBLISH, str(out), str(new_set), *([manifest] if manifest else [])]
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base / "old-out", out)
        n = _count(args, calls, base / f"{kind}.log")
        assert n >= (3 if kind == "rename" else 1), f"only {n} {kind} calls: the sweep would prove little"
        for k in range(1, n + 1):
            shutil.rmtree(out)
            shutil.copytree(base / "old-out", out)
            killed = _strace(args, calls, kill_at=k)
            assert killed.returncode in (-9, 137), f"{kind} #{k} was not killed: {killed.stderr}"
            seen.add(check(out))
    return seen


@needs_strace
def test_a_kill_at_any_rename_or_fsync_of_publish_leaves_a_whole_dataset(datasets, tmp_path):
    base, old, new = datasets
    shutil.copytree(base / "old", tmp_path / "old-out")
    after = {}

    def check(out: Path) -> str:
        report = inspect_shards(out, progress=False)  # a reader: it finishes what the kill left
        assert report["ok"], report["problems"]
        assert cli(["data", "inspect", "-q", str(out)]) == 0
        now = files(out)
        assert now in (old, new), sorted(now)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".swap-")]
        # and a rerun completes
        staging = make_staging(out)
        for name, data in new.items():
            (staging / name).write_bytes(data)
        publish(staging, out)
        after[out] = files(out)
        assert after[out] == new
        return "old" if now == old else "new"

    assert _sweep(tmp_path, old, base / "new", None, check) == {"old", "new"}


@needs_strace
def test_a_kill_during_a_partial_encode_publish_keeps_the_other_parts(datasets, tmp_path):
    """`encode --shard-range` publishes its shards and a partial manifest beside other ranges'."""
    base, old, new = datasets
    out = tmp_path / "old-out"
    out.mkdir()
    for name, data in old.items():  # the old set stands for the other ranges and an earlier run of this one
        (out / (name if name != MANIFEST_NAME else "manifest.part-0-2.json")).write_bytes(data)
    new_set = tmp_path / "new-set"
    new_set.mkdir()
    for name, data in new.items():
        (new_set / (name if name != MANIFEST_NAME else "manifest.part-0-2.json")).write_bytes(data)
    before = files(out)
    whole = {**before, **files(new_set)}

    def check(out: Path) -> str:
        recover(out)  # what the next encode (make_staging) or merge does first
        now = files(out)
        assert now in (before, whole), sorted(now)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".swap-")]
        return "old" if now == before else "new"

    assert _sweep(tmp_path, before, new_set, "manifest.part-0-2.json", check) == {"old", "new"}


@needs_strace
@pytest.mark.slow
def test_a_real_data_shard_killed_at_each_rename_keeps_the_previous_dataset(datasets, tmp_path):
    base, old, new = datasets
    out = tmp_path / "out"
    args = [sys.executable, "-m", "wavediff.cli", "data", "shard", "-q", str(base / "new-src"), str(out)]
    args += ["--sample-rate", str(SR), "--channels", "1", "--workers", "1", "--val-fraction", "0.3"]
    args += ["--shard-size-mb", "0.01"]
    shutil.copytree(base / "old", out)
    n = _count(args, CALLS["rename"], tmp_path / "log")
    assert files(out) == new
    for k in range(1, n + 1):
        shutil.rmtree(out)
        shutil.copytree(base / "old", out)
        assert _strace(args, CALLS["rename"], kill_at=k).returncode in (-9, 137)
        assert read_manifest(out) in (read_manifest(base / "old"), read_manifest(base / "new"))
        assert files(out) in (old, new)
        assert inspect_shards(out, progress=False)["ok"]
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert files(out) == new
