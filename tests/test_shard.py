"""The shard job, shard inspection and the manifest, on real files and real tars."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from data_tools import shard as shard_module
from data_tools.inspect import format_manifest, inspect_shards
from data_tools.shard import ShardOptions, chunk_spans, shard, split_of
from wavediff.io import audio
from wavediff.shards.format import MANIFEST_NAME, read_manifest, shard_paths

SR = 8000
FIELDS = {
    "source",
    "genre",
    "tags",
    "bpm",
    "key",
    "bars",
    "sample_rate",
    "channels",
    "offset_s",
    "duration_s",
    "loop",
    "sha1",
    "kind",
    "role",
    *(f"{name}_source" for name in ("bpm", "bars", "key", "kind", "role")),
}
# Present when a value was estimated (confidence, downbeat) or is still unknown (reason).
OPTIONAL = {f"{name}_{what}" for name in ("bpm", "bars", "key", "kind", "role") for what in ("confidence", "reason")}
OPTIONAL.add("downbeat_s")


def tone(seconds: float, sr: int = SR, channels: int = 1, freq: float = 330.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    x = amp * np.sin(2 * np.pi * freq * t) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    return np.stack([x] * channels, axis=1).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, **kw)
    return path


def make_pack(root: Path) -> dict[str, Path]:
    """A sample folder with one of every odd thing users' folders hold."""
    odd = root / "odd"
    files = {
        "eight": write(odd / "eight.wav", tone(0.5, channels=2), subtype="PCM_U8"),
        "hires": write(odd / "hires.flac", tone(0.5, sr=96000, channels=2), sr=96000, subtype="PCM_24"),
        "ogg": write(odd / "mono.ogg", tone(0.5, sr=22050), sr=22050, format="OGG", subtype="VORBIS"),
        "aiff": write(odd / "x.aiff", tone(0.5, channels=2, freq=500), format="AIFF", subtype="PCM_16"),
        "blip": write(odd / "blip.wav", tone(0.1)),
        "silence": write(odd / "silence.wav", np.zeros((4000, 1), np.float32)),
        "cut_wav": write(odd / "cut.wav", tone(1.0, freq=200)),
        "cut_flac": write(odd / "cut.flac", tone(1.0, freq=250)),
        "techno": write(root / "techno" / "kick_160bpm_Am.wav", tone(1.5, channels=2, freq=60)),
        "chords": write(root / "house" / "chords.wav", tone(1.0, freq=440)),
        "pad": write(root / "house" / "pad.flac", tone(1.0, freq=220)),
        "broken": write(root / "house" / "broken_side.wav", tone(0.6, freq=880)),
        "drone": write(root / "ambient" / "drone.wav", tone(0.8, freq=110)),
    }
    files["mp3"] = audio.save(odd / "loop.mp3", audio.load(files["eight"])[0], SR)
    for key in ("cut_wav", "cut_flac"):
        data = files[key].read_bytes()
        files[key].write_bytes(data[: len(data) // 2])
    files["noise"] = odd / "noise.wav"
    files["noise"].write_bytes(np.random.default_rng(0).bytes(3000))
    files["empty"] = odd / "empty.wav"
    files["empty"].touch()
    files["copy"] = odd / "x_copy.aiff"
    files["copy"].write_bytes(files["aiff"].read_bytes())
    (odd / "readme.txt").write_text("not audio")
    (odd / "cover.jpg").write_bytes(b"\xff\xd8")
    (odd / ".DS_Store").write_bytes(b"\0")
    (root / "house" / "chords.json").write_text(
        json.dumps({"bpm": 120, "key": "F# minor", "tags": ["Rhodes"], "loop": False})
    )
    (root / "house" / "broken_side.json").write_text("{oops")
    (root / "house" / "metadata.csv").write_text("file_name,genre,bpm,bars\npad.flac,Deep House,90,\n")
    (root / "ambient" / "metadata.jsonl").write_text(json.dumps({"file_name": "drone.wav", "tags": "dark;slow"}) + "\n")
    return files


def read_shards(out: Path) -> dict[str, list[tuple[str, dict, bytes]]]:
    """Every sample of every split, read back with plain tarfile."""
    manifest = read_manifest(out)
    result = {}
    for split in manifest.splits:
        samples = []
        for path in shard_paths(out, manifest, split):
            with tarfile.open(path) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar}
            for name in members:
                if name.endswith(".json"):
                    key = name[: -len(".json")]
                    samples.append((key, json.loads(members[name]), members[f"{key}.flac"]))
        result[split] = samples
    return result


def by_source(samples: dict[str, list]) -> dict[str, tuple[str, dict, bytes]]:
    return {info["source"]: (split, info, flac) for split, items in samples.items() for _, info, flac in items}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack")
    files = make_pack(root)
    out = tmp_path_factory.mktemp("out")
    manifest = shard([root], out, ShardOptions(sample_rate=SR, workers=1, val_fraction=0.3), progress=False)
    return root, files, out, manifest


# --------------------------------------------------------------------------- what gets in, what is skipped


def test_odd_formats_are_sharded_and_bad_files_skipped_with_reasons(pack):
    root, files, out, manifest = pack
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest.skipped}
    assert set(reasons) == {"blip.wav", "silence.wav", "cut.wav", "cut.flac", "noise.wav", "empty.wav", "x_copy.aiff"}
    assert reasons["blip.wav"].startswith("too short (0.100 s")
    assert reasons["silence.wav"].startswith("silent")
    assert reasons["cut.wav"].startswith("truncated")
    assert reasons["cut.flac"].startswith("cannot decode")
    assert reasons["noise.wav"].startswith("cannot decode")
    assert reasons["empty.wav"].startswith("empty")
    assert reasons["x_copy.aiff"] == f"duplicate of {files['aiff']}"
    assert manifest.duplicates == 1
    assert manifest.ignored_files == 2  # readme.txt, cover.jpg; not sidecars, tables or dotfiles

    sharded = by_source(read_shards(out))
    assert set(sharded) == {
        "odd/eight.wav",
        "odd/hires.flac",
        "odd/mono.ogg",
        "odd/loop.mp3",
        "odd/x.aiff",
        "techno/kick_160bpm_Am.wav",
        "house/chords.wav",
        "house/pad.flac",
        "house/broken_side.wav",
        "ambient/drone.wav",
    }
    assert manifest.files == len(sharded)
    for source, (_, info, flac) in sharded.items():
        wav, sr = audio.decode(flac, source)
        assert (sr, wav.shape[0]) == (SR, 2)
        assert FIELDS <= set(info) <= FIELDS | OPTIONAL
        assert info["duration_s"] == pytest.approx(wav.shape[1] / SR)
    assert sharded["odd/hires.flac"][1]["duration_s"] == pytest.approx(0.5)  # 96 kHz → 8 kHz
    assert sharded["odd/mono.ogg"][1]["channels"] == 2
    assert sharded["odd/eight.wav"][1]["sha1"] != sharded["odd/loop.mp3"][1]["sha1"]


def test_metadata_from_folders_names_tables_and_sidecars(pack):
    _, files, _, manifest = pack
    sharded = {source: info for source, (_, info, _) in by_source(read_shards(pack[2])).items()}
    kick = sharded["techno/kick_160bpm_Am.wav"]
    assert (kick["genre"], kick["bpm"], kick["key"]) == ("techno", 160.0, "Am")
    assert kick["bars"] == 1 and kick["loop"] is True  # 1.5 s is one bar at 160 bpm
    chords = sharded["house/chords.wav"]  # sidecar
    assert (chords["genre"], chords["bpm"], chords["key"], chords["tags"]) == ("house", 120.0, "F#m", ["rhodes"])
    assert chords["bars"] is None and chords["loop"] is False  # half a bar
    pad = sharded["house/pad.flac"]  # metadata.csv
    assert (pad["genre"], pad["bpm"]) == ("deep house", 90.0)
    assert sharded["ambient/drone.wav"]["tags"] == ["dark", "slow"]  # metadata.jsonl
    assert sharded["odd/eight.wav"]["genre"] == "odd" and sharded["odd/eight.wav"]["bpm"] is None
    # the bad sidecar is reported, the audio kept with what else is known
    assert sharded["house/broken_side.wav"]["genre"] == "house"
    assert manifest.warnings == [
        f"{files['broken'].with_suffix('.json')}: invalid JSON sidecar (Expecting property"
        " name enclosed in double quotes at line 1)"
    ]
    assert manifest.genres == {"ambient": 1, "deep house": 1, "house": 2, "odd": 5, "techno": 1}
    assert list(manifest.genres) == sorted(manifest.genres)
    assert manifest.bpm == {"min": 90.0, "max": 160.0}


def test_keys_are_unique_dot_free_and_split_by_content_hash(pack):
    samples = read_shards(pack[2])
    keys = [key for items in samples.values() for key, _, _ in items]
    assert len(keys) == len(set(keys)) and all("." not in k and "/" not in k for k in keys)
    for split, items in samples.items():
        for key, info, _ in items:
            assert key.startswith(info["sha1"][:16])
            assert split_of(info["sha1"], 0.3) == split
    assert samples["train"] and samples["val"]  # 0.3 of ten files lands some in each


def test_manifest_counts_and_read_back(pack):
    _, _, out, manifest = pack
    assert read_manifest(out, kind="audio") == manifest
    samples = read_shards(out)
    for split, items in samples.items():
        entry = manifest.splits[split]
        assert entry.samples == len(items)
        paths = shard_paths(out, manifest, split)
        assert entry.shard_samples == [sum(m.name.endswith(".json") for m in tarfile.open(p)) for p in paths]
        assert entry.seconds == pytest.approx(sum(info["duration_s"] for _, info, _ in items), abs=1e-3)
    assert (manifest.sample_rate, manifest.channels, manifest.kind) == (SR, 2, "audio")
    assert "workers" not in manifest.options
    assert sorted(os.listdir(out)) == sorted(
        [MANIFEST_NAME, *manifest.splits["train"].shards, *manifest.splits["val"].shards]
    )


def test_webdataset_reads_the_shards(pack):
    _, _, out, manifest = pack
    urls = [str(p) for split in ("train", "val") for p in shard_paths(out, manifest, split)]
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None)
    seen = 0
    for sample in dataset:
        assert set(sample) >= {"__key__", "flac", "json"}
        info = json.loads(sample["json"])
        wav, sr = audio.decode(sample["flac"], sample["__key__"])
        assert sr == info["sample_rate"] == SR
        seen += 1
    assert seen == sum(e.samples for e in manifest.splits.values())


def test_inspect_passes_and_summary_reads_well(pack):
    _, _, out, manifest = pack
    report = inspect_shards(out, progress=False)
    assert report["ok"], report["problems"]
    assert report["splits"]["train"]["samples"] == manifest.splits["train"].samples
    text = format_manifest(manifest, report)
    assert "house (2)" in text and "odd (5)" in text and "bpm: 90–160" in text
    assert "blip.wav: too short" in text and "check: OK" in text
    assert f"{manifest.splits['train'].samples} samples" in text


# --------------------------------------------------------------------------- determinism, splits, re-runs


def test_two_workers_write_the_same_shards(tmp_path):
    root = tmp_path / "src"
    for i in range(5):
        write(root / f"g{i % 2}" / f"f{i}_{100 + i}bpm.wav", tone(0.4 + 0.1 * i, freq=100 + 50 * i))
    (root / "bad.wav").write_bytes(b"RIFF garbage")
    options = dict(sample_rate=SR, val_fraction=0.4, shard_size_mb=0.01)
    one = shard([root], tmp_path / "one", ShardOptions(workers=1, **options), progress=False)
    two = shard([root], tmp_path / "two", ShardOptions(workers=2, **options), progress=False)
    assert dataclasses.replace(one, sources=[]) == dataclasses.replace(two, sources=[])
    names = sorted(os.listdir(tmp_path / "one"))
    assert len(names) > 2 and names == sorted(os.listdir(tmp_path / "two"))
    for name in names:
        if name != MANIFEST_NAME:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


@pytest.mark.timeout(120, method="thread")  # a worker stuck in an inherited OpenMP pool hangs rather than fails
def test_workers_forked_after_threaded_torch_work_in_the_parent(tmp_path):
    root = tmp_path / "src"
    for i in range(4):
        write(root / f"f{i}.wav", tone(0.5, sr=16000, channels=2, freq=200 + 100 * i), sr=16000)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        audio.resample(torch.randn(2, 16000), 16000, SR)  # an OpenMP team the forked workers inherit
        shard([root], tmp_path / "two", ShardOptions(sample_rate=SR, workers=2, val_fraction=0.0), progress=False)
    finally:
        torch.set_num_threads(threads)
    shard([root], tmp_path / "one", ShardOptions(sample_rate=SR, workers=1, val_fraction=0.0), progress=False)
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == sorted(os.listdir(tmp_path / "two"))
    for name in names:
        if name != MANIFEST_NAME:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_adding_files_never_moves_old_ones_between_splits(tmp_path):
    root = tmp_path / "src"
    for i in range(8):
        write(root / f"a{i}.wav", tone(0.3, freq=100 + 37 * i))
    first = by_source(read_shards(_run(root, tmp_path / "out", val_fraction=0.5)))
    for i in range(8):
        write(root / f"b{i}.wav", tone(0.3, freq=90 + 41 * i))
    second = by_source(read_shards(_run(root, tmp_path / "out", val_fraction=0.5)))
    assert len(second) == 16
    assert {s: first[s][0] for s in first} == {s: second[s][0] for s in first}
    assert {split for split, _, _ in first.values()} == {"train", "val"}


def _run(root: Path, out: Path, **options) -> Path:
    shard([root], out, ShardOptions(sample_rate=SR, workers=1, **options), progress=False)
    return out


def test_rerun_replaces_the_old_dataset_without_stale_shards(tmp_path):
    root = tmp_path / "src"
    for i in range(6):
        write(root / f"f{i}.wav", tone(1.0, freq=100 + 60 * i))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "notes.md").write_text("mine")  # files that are not ours are left alone
    many = _run(root, out, val_fraction=0.0, shard_size_mb=0.01)
    assert len(read_manifest(many).splits["train"].shards) >= 3
    for path in list(root.iterdir())[2:]:
        path.unlink()
    _run(root, out, val_fraction=0.0)
    manifest = read_manifest(out)
    assert manifest.splits["train"].shards == ["train-000000.tar"]
    assert sorted(os.listdir(out)) == ["manifest.json", "notes.md", "train-000000.tar"]
    assert manifest.splits["train"].samples == 2
    assert inspect_shards(out, progress=False)["ok"]


def test_a_job_that_dies_leaves_the_previous_dataset_intact(tmp_path, monkeypatch):
    root = tmp_path / "src"
    for i in range(4):
        write(root / f"f{i}.wav", tone(0.5, freq=100 + 60 * i))
    out = _run(root, tmp_path / "out", val_fraction=0.0)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    write(root / "new.wav", tone(0.5, freq=999))

    added = []

    def dies_after_two(self, sample):
        if len(added) == 2:
            raise KeyboardInterrupt
        added.append(sample.key)
        real_add(self, sample)

    real_add = shard_module._SplitWriter.add
    monkeypatch.setattr(shard_module._SplitWriter, "add", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(root, out, val_fraction=0.0)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_staging_left_by_a_killed_job_is_cleared(tmp_path):
    root = tmp_path / "src"
    write(root / "a.wav", tone(0.5))
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname().replace("-", "_")
    stale = out / f".staging-{host}-{int(dead.stdout)}"
    stale.mkdir(parents=True)
    (stale / "train-000000.tar").write_bytes(b"half a tar")
    alive = out / f".staging-{host}-{os.getppid()}"  # a job still running: not ours to touch
    alive.mkdir()
    _run(root, out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [alive.name]


# --------------------------------------------------------------------------- chunking, loudness, options


def test_chunk_spans_are_bar_aligned():
    # 160 bpm → 1.5 s bars; 3.2 s holds two bars
    assert chunk_spans(7.5, 160, 3.2) == [(0.0, 3.0), (3.0, 6.0), (6.0, 7.5)]  # tail: one bar ≥ half a chunk
    assert chunk_spans(7.0, 160, 3.2) == [(0.0, 3.0), (3.0, 6.0)]  # tail < one bar: dropped
    assert chunk_spans(8.0, 160, 3.2) == [(0.0, 3.0), (3.0, 6.0), (6.0, 7.5)]  # tail cut to whole bars
    assert chunk_spans(2.0, 160, 3.2) == [(0.0, 2.0)]  # short files stay whole
    assert chunk_spans(5.0, None, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]  # tail is half a chunk: kept
    assert chunk_spans(4.9, None, 2.0) == [(0.0, 2.0), (2.0, 4.0)]  # tail under half a chunk: dropped
    assert chunk_spans(5.2, None, 2.0, min_seconds=1.5) == [(0.0, 2.0), (2.0, 4.0)]  # tail under min_seconds
    assert chunk_spans(9.0, 40, 3.0) == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]  # a bar longer than a chunk
    assert chunk_spans(100.0, 120, None) == [(0.0, 100.0)]


def test_long_file_is_cut_into_bar_chunks(tmp_path):
    root = tmp_path / "src"
    write(root / "acid" / "line_160bpm.wav", tone(7.5, freq=150))  # five bars
    write(root / "acid" / "jam_160bpm.wav", tone(7.0, freq=180))  # four bars and two thirds
    out = _run(root, tmp_path / "out", max_seconds=3.2, val_fraction=0.0)
    chunks = sorted(
        ((info["source"], info["offset_s"], info["duration_s"], info["bars"], info["loop"]), key)
        for key, info, _ in read_shards(out)["train"]
    )
    assert [c for c, _ in chunks] == [
        ("acid/jam_160bpm.wav", 0.0, 3.0, 2, False),
        ("acid/jam_160bpm.wav", 3.0, 3.0, 2, False),
        ("acid/line_160bpm.wav", 0.0, 3.0, 2, True),
        ("acid/line_160bpm.wav", 3.0, 3.0, 2, True),
        ("acid/line_160bpm.wav", 6.0, 1.5, 1, True),
    ]
    assert [key[-4:] for _, key in chunks] == ["_000", "_001", "_000", "_001", "_002"]
    original = audio.load(root / "acid" / "line_160bpm.wav", channels=2)[0]
    shard_bytes = {key: flac for key, _, flac in read_shards(out)["train"]}
    second = audio.decode(shard_bytes[chunks[3][1]])[0]
    assert np.allclose(second.numpy(), original[:, 3 * SR : 6 * SR].numpy(), atol=2 / 2**15)


def test_loudness_option_levels_every_file(tmp_path):
    root = tmp_path / "src"
    write(root / "quiet.wav", tone(1.0, amp=0.02))
    write(root / "loud.wav", tone(1.0, amp=0.5, freq=500))
    out = _run(root, tmp_path / "out", loudness=-20.0, channels=1, val_fraction=0.0)
    for _, _, flac in read_shards(out)["train"]:
        wav, sr = audio.decode(flac)
        assert wav.shape[0] == 1
        assert audio.loudness(wav, sr) == pytest.approx(-20.0, abs=0.1)


def test_min_seconds_is_an_option(tmp_path):
    root = tmp_path / "src"
    write(root / "blip.wav", tone(0.1))
    manifest = shard(
        [root], tmp_path / "out", ShardOptions(sample_rate=SR, workers=1, min_seconds=0.05), progress=False
    )
    assert manifest.files == 1 and manifest.skipped == []


def test_missing_or_empty_sources_fail_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nope"):
        shard([tmp_path / "nope"], out, progress=False)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"texts: no audio files"):
        shard([tmp_path / "texts"], out, progress=False)
    with pytest.raises(ValueError, match="channels must be 1 or 2"):
        shard([tmp_path / "texts"], out, ShardOptions(channels=6), progress=False)
    assert not out.exists()


def test_single_file_sources(tmp_path):
    path = write(tmp_path / "one_128bpm.wav", tone(0.5))
    manifest = shard([path], tmp_path / "out", ShardOptions(sample_rate=SR, workers=1), progress=False)
    ((_, info, _),) = [s for items in read_shards(tmp_path / "out").values() for s in items]
    assert manifest.files == 1 and info["source"] == "one_128bpm.wav" and info["bpm"] == 128.0


# --------------------------------------------------------------------------- inspection finds damage


def _member_offset(tar_path: Path, suffix: str) -> tuple[int, int]:
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar if m.name.endswith(suffix))
        return member.offset_data, member.size


@pytest.fixture
def small_dataset(tmp_path):
    root = tmp_path / "src"
    for i in range(3):
        write(root / f"f{i}.wav", tone(0.5, freq=200 + 100 * i))
    return _run(root, tmp_path / "out", val_fraction=0.0)


def test_inspect_finds_a_corrupted_flac(small_dataset):
    tar = small_dataset / "train-000000.tar"
    offset, size = _member_offset(tar, ".flac")
    data = bytearray(tar.read_bytes())
    data[offset + size // 3 : offset + size] = bytes(size - size // 3)
    tar.write_bytes(bytes(data))
    report = inspect_shards(small_dataset, progress=False)
    assert not report["ok"]
    assert any(p.startswith("train-000000.tar: ") and ".flac" in p for p in report["problems"]), report["problems"]
    assert any("manifest says 3 samples" in p for p in report["problems"])
    assert "check: 2 problem(s)" in format_manifest(read_manifest(small_dataset), report)


def test_inspect_finds_a_truncated_tar_a_missing_member_and_stray_shards(small_dataset):
    tar = small_dataset / "train-000000.tar"
    offset, _ = _member_offset(tar, ".json")
    tar.write_bytes(tar.read_bytes()[: offset + 5])  # cut inside the first sample's json
    (small_dataset / "train-000007.tar").write_bytes(b"")
    problems = inspect_shards(small_dataset, progress=False)["problems"]
    assert any(p.startswith("train-000000.tar: unreadable tar") for p in problems), problems
    assert any(p.startswith("train-000007.tar: shard not listed") for p in problems), problems

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("abc_000.flac")
        info.size = 3
        t.addfile(info, io.BytesIO(b"fLa"))
    tar.write_bytes(buf.getvalue())
    problems = inspect_shards(small_dataset, progress=False)["problems"]
    assert any("abc_000: no .json member" in p for p in problems), problems


def test_read_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/manifest.json: no manifest"):
        read_manifest(tmp_path)
    path = tmp_path / MANIFEST_NAME
    for text, match in [
        ("{not json", "unreadable manifest"),
        ("[]", "JSON object"),
        (json.dumps({"version": 1, "kind": "audio", "sample_rate": 8000, "channels": 2}), "'splits'"),
        (json.dumps({"version": 9, "kind": "audio", "sample_rate": 8000, "channels": 2, "splits": {}}), "newer"),
        (
            json.dumps(
                {
                    "version": 1,
                    "kind": "audio",
                    "sample_rate": 8000,
                    "channels": 2,
                    "splits": {"train": {"shards": "x.tar"}},
                }
            ),
            "'splits.train.shards' must be a list",
        ),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=match) as e:
            read_manifest(tmp_path)
        assert str(path) in str(e.value)
    path.write_text(json.dumps({"version": 1, "kind": "latent", "sample_rate": 8000, "channels": 2, "splits": {}}))
    assert read_manifest(tmp_path).kind == "latent"
    with pytest.raises(ValueError, match="holds latent shards, expected audio"):
        read_manifest(tmp_path, kind="audio")
