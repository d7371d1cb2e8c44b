"""`data shard`, its publish step and its walk under hostile conditions: real kills (strace fault
injection, SIGKILL), a full disk, FIFOs, symlink loops, unreadable folders, absurd levels."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_tools.inspect import inspect_shards
from data_tools.shard import ShardOptions, shard
from wavediff.cli import main as cli
from wavediff.errors import AudioError
from wavediff.io import audio
from wavediff.shards.format import MANIFEST_NAME, read_manifest
from wavediff.shards.swap import recover
from wavediff.shards.writer import make_staging, publish

SR = 8000
STRACE = shutil.which("strace")
TRACES = STRACE is not None and subprocess.run([STRACE, "-qq", "-o", os.devnull, "true"]).returncode == 0
needs_strace = pytest.mark.skipif(
    not TRACES, reason="strace is not installed (apt-get install strace) or may not trace"
)


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


# --------------------------------------------------------------------------- what the walk meets


def _shard_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "wavediff.cli", "data", "shard", "-q", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_a_fifo_named_like_audio_is_skipped_not_waited_on(tmp_path):
    src = write_pack(tmp_path / "src", [300, 400])
    os.mkfifo(src / "pipe.wav")  # nothing ever writes to it: reading it waits forever
    (src / "sub").mkdir()
    os.symlink(src / "pipe.wav", src / "sub" / "link.flac")
    done = _shard_cli(str(src), str(tmp_path / "out"), "--sample-rate", str(SR), "--workers", "1", timeout=60)
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(tmp_path / "out")
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest.skipped}
    assert reasons == {"pipe.wav": "not a regular file (a FIFO)", "link.flac": "not a regular file (a FIFO)"}
    assert manifest.files == 2


def test_symlinked_folders_are_followed_and_a_symlink_loop_ends(tmp_path):
    write_pack(tmp_path / "src" / "own", [300, 400])
    elsewhere = write_pack(tmp_path / "elsewhere" / "drums", [500, 600])
    os.symlink(elsewhere, tmp_path / "src" / "linked")
    os.symlink(tmp_path / "src", tmp_path / "src" / "own" / "loop")  # back up to the source: a loop
    os.symlink(elsewhere, tmp_path / "src" / "own" / "again")  # the same folder a second time
    manifest = shard([tmp_path / "src"], tmp_path / "out", _options(val_fraction=0.0), progress=False)
    sources = sorted(p["source"] for p in _infos(tmp_path / "out"))
    assert sources == ["linked/t500.wav", "linked/t600.wav", "own/t300.wav", "own/t400.wav"]
    assert manifest.files == 4 and manifest.duplicates == 0
    reasons = {Path(s["path"]).relative_to(tmp_path / "src").as_posix(): s["reason"] for s in manifest.skipped}
    assert reasons == {
        "own/again": f"folder walked already (as {tmp_path / 'src' / 'linked'})",
        "own/loop": f"folder walked already (as {tmp_path / 'src'}): a symlink loop",
    }


def _infos(out: Path) -> list[dict]:
    import json
    import tarfile

    manifest = read_manifest(out)
    found = []
    for split in manifest.splits:
        for name in manifest.splits[split].shards:
            with tarfile.open(out / name) as tar:
                found += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    return found


# Shards as the unprivileged user `nobody` (root reads any folder, so the test cannot use root),
# after importing as root: the interpreter may live in a folder nobody cannot enter.
AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys
    from data_tools import analysis
    from data_tools.shard import ShardOptions, shard
    analysis.preload()  # librosa imports lazily, from where nobody cannot read
    os.setgid(65534)
    os.setuid(65534)
    options = ShardOptions(sample_rate=8000, channels=1, workers=1, val_fraction=0.0)
    print(json.dumps(shard([sys.argv[1]], sys.argv[2], options, progress=False).skipped))
    """
)


def test_an_unreadable_folder_is_listed_with_its_reason(tmp_path):
    import json
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="wavediff-unreadable-"))  # outside root's private pytest folder
    try:
        base.chmod(0o777)
        src = write_pack(base / "src", [300])
        write_pack(base / "src" / "locked", [400])
        (base / "src" / "locked").chmod(0)
        for path in (src, src / "t300.wav"):
            path.chmod(0o755)
        if os.geteuid() == 0:
            done = subprocess.run(
                [sys.executable, "-c", AS_NOBODY, str(src), str(base / "out")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            skipped = json.loads(done.stdout)
        else:
            skipped = shard([src], base / "out", _options(val_fraction=0.0), progress=False).skipped
        assert skipped == [{"path": str(src / "locked"), "reason": "cannot read folder (Permission denied)"}]
    finally:
        (base / "src" / "locked").chmod(0o755)
        shutil.rmtree(base)


# --------------------------------------------------------------------------- levels


def test_float_audio_far_over_full_scale_is_skipped_and_clipping_is_reported(tmp_path):
    src = write_pack(tmp_path / "src", [300])
    sf.write(src / "absurd.wav", tone(0.5, 440, amp=1e30), SR, subtype="FLOAT")
    sf.write(src / "hot.wav", tone(0.5, 550, amp=2.0), SR, subtype="FLOAT")  # +6 dBFS
    manifest = shard([src], tmp_path / "out", _options(val_fraction=0.0), progress=False)
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest.skipped}
    assert reasons == {"absurd.wav": "peaks at +600 dBFS: not audio (float samples far beyond full scale)"}
    assert manifest.files == 2
    assert manifest.warnings == [f"{src / 'hot.wav'}: peaks at +6.0 dBFS; clipped to full scale in the shards"]
    levelled = shard([src], tmp_path / "levelled", _options(val_fraction=0.0, loudness=-20.0), progress=False)
    assert levelled.warnings == [] and levelled.files == 2  # levelling brings it under full scale


# --------------------------------------------------------------------------- a killed job's workers


def _children(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not yet reaped


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_workers_die_with_a_killed_job(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):  # work for a few seconds: the kill comes as soon as both workers are up
        sf.write(src / f"n{i:02d}.wav", 0.1 * rng.standard_normal((2 * 48000, 2)).astype(np.float32), 48000)
    command = [sys.executable, "-m", "wavediff.cli", "data", "shard", "-q", str(src), str(tmp_path / "out")]
    job = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        for _ in range(1200):  # up to 60 s for the job to start its workers
            workers = _children(job.pid)
            if len(workers) >= 2 or job.poll() is not None:
                break
            time.sleep(0.05)
        assert job.poll() is None and len(workers) >= 2, "the job ended before its workers could be seen"
        job.kill()
        job.wait()
        for _ in range(50):
            if not any(_running(w) for w in workers):
                break
            time.sleep(0.1)
        assert not [w for w in workers if _running(w)], "workers outlived their killed job"
    finally:  # whatever happened, leave no process behind
        job.kill()
        for w in workers:
            if _running(w):
                os.kill(w, signal.SIGKILL)


# --------------------------------------------------------------------------- one-line errors

# Runs `data shard` into a copy of the old dataset on a small tmpfs of its own (a private mount
# namespace: nothing leaks), then copies what it left there back out for the test to look at.
FULL_DISK = textwrap.dedent(
    """
    set -u
    mount -t tmpfs -o size=160k tmpfs "$MNT" || exit 77
    cp -a "$OLD" "$MNT/out"
    "$PYTHON" -m wavediff.cli data shard -q "$SRC" "$MNT/out" --sample-rate 8000 --workers 1 2>"$RES/stderr"
    echo $? >"$RES/rc"
    cp -a "$MNT/out" "$RES/out"
    """
)


def test_a_full_disk_is_one_line_and_keeps_the_previous_dataset(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs")
    old = tmp_path / "old"
    shard([write_pack(tmp_path / "old-src", [300, 400])], old, _options(val_fraction=0.0), progress=False)
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # noise compresses badly: far more than the disk holds
        sf.write(src / f"n{i:02d}.wav", 0.3 * rng.standard_normal(SR).astype(np.float32), SR)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "res").mkdir()
    env = {**os.environ, "MNT": str(tmp_path / "mnt"), "OLD": str(old), "SRC": str(src), "RES": str(tmp_path / "res")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", FULL_DISK], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode == 77 or (done.returncode != 0 and "unshare" in done.stderr):
        pytest.skip(f"may not mount a tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    stderr = (tmp_path / "res" / "stderr").read_text()
    assert (tmp_path / "res" / "rc").read_text().strip() == "2"
    assert len(stderr.splitlines()) == 1 and "No space left on device" in stderr, stderr
    assert ".tar" in stderr  # names the file it could not write
    out = tmp_path / "res" / "out"
    assert files(out) == files(old)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # staging and swap folders gone
    assert inspect_shards(out, progress=False)["ok"]


def test_out_being_a_file_is_a_one_line_error(tmp_path, capsys):
    src = write_pack(tmp_path / "src", [300])
    (tmp_path / "out").write_text("mine")
    assert cli(["data", "shard", "-q", str(src), str(tmp_path / "out")]) == 2
    assert (
        capsys.readouterr().err
        == f"wavediff: error: {tmp_path / 'out'}: exists and is not a folder; give a folder for the shards\n"
    )
    assert (tmp_path / "out").read_text() == "mine"


def test_max_seconds_zero_or_below_the_shortest_chunk_is_refused(tmp_path, capsys):
    src = write_pack(tmp_path / "src", [300])
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        cli(["data", "shard", "-q", str(src), out, "--max-seconds", "0"])
    assert e.value.code == 2 and "--max-seconds: must be positive or 'none', got 0" in capsys.readouterr().err
    assert cli(["data", "shard", "-q", str(src), out, "--max-seconds", "0.1"]) == 2
    assert "max_seconds 0.1 is shorter than min_seconds 0.2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli(["data", "shard", "-q", str(src), out, "--max-seconds", "none", "--sample-rate", str(SR)]) == 0


def test_a_text_file_named_mp3_says_it_is_not_decodable(tmp_path):
    src = write_pack(tmp_path / "src", [300])
    (src / "notes.mp3").write_text("these are my notes, not audio\n" * 20)
    manifest = shard([src], tmp_path / "out", _options(), progress=False)
    (skip,) = manifest.skipped
    reason = "cannot decode audio (format not recognised: no audio header or MPEG frames found)"
    assert skip["reason"] == reason
    with pytest.raises(AudioError) as e:  # read by path, libsndfile blamed a pipe
        audio.load(src / "notes.mp3")
    assert e.value.reason == reason


def test_a_swap_left_by_another_host_is_named_when_the_manifest_is_missing(tmp_path):
    (tmp_path / ".swap-elsewhere-123").mkdir()  # this host cannot tell whether that job still runs
    with pytest.raises(FileNotFoundError, match=r"no manifest while a job swaps .*\.swap-elsewhere-123"):
        read_manifest(tmp_path)
    assert (tmp_path / ".swap-elsewhere-123").is_dir()
