"""`wavediff data inspect` on latent shards made by `encode`: every sample checked as the
loader will read it, manifest statistics printed, and damage reported sample by sample."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np

from data_tools.inspect import inspect_shards
from wavediff.cli import main
from wavediff.shards.format import read_manifest


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def rewrite(tar_path: Path, change) -> list[str]:
    """Rewrite a shard in place, each member's bytes passed through change(key index, name, bytes); the keys."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    keys = list(dict.fromkeys(m.name.partition(".")[0] for m, _ in members))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member, data in members:
            data = change(keys.index(member.name.partition(".")[0]), member.name, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    tar_path.write_bytes(buffer.getvalue())
    return keys


def test_inspect_passes_real_latent_shards_and_prints_their_statistics(latent_pack, capsys):
    folder = latent_pack["latents"]
    manifest = read_manifest(folder)
    report = inspect_shards(folder, progress=False)
    assert report["ok"], report["problems"]
    for split, entry in manifest.splits.items():
        found = report["splits"][split]
        assert (found["samples"], found["frames"]) == (entry.samples, entry.frames) and entry.samples > 0
    assert main(["data", "inspect", str(folder), "-q"]) == 0
    out = capsys.readouterr().out
    assert "latent shards" in out and manifest.autoencoder in out and "no .flac" not in out
    assert f"{manifest.latent_dim} channels at 1000 frames/s" in out
    train = manifest.splits["train"]
    assert f"{train.frames} frames" in out and f"{train.frames / 1000:.2f} s" in out
    stats = manifest.stats
    assert f"overall std {stats.overall_std:.3g}" in out
    assert f"{min(stats.std):.3g}" in out and f"{max(stats.mean):.3g}" in out
    assert "check: OK" in out


def test_inspect_reports_each_broken_latent_sample(latent_pack, tmp_path, capsys):
    folder = shutil.copytree(latent_pack["latents"], tmp_path / "latents")
    channels = read_manifest(folder).latent_dim
    good = np.zeros((channels, 100), np.float16)
    nan = good.copy()
    nan[1, 7] = np.nan
    broken = {
        0: (b"\x93NUMPY garbage", "does not load"),
        1: (npy(nan), "non-finite"),
        2: (npy(good.astype(np.float32)), "float32, expected float16"),
        3: (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "does not load"),
        4: (npy(good[:, :0]), f"shape ({channels}, 0)"),
        5: (npy(good[:-1]), f"shape ({channels - 1}, 100), expected ({channels}, frames ≥ 1)"),
    }

    def change(index: int, name: str, data: bytes) -> bytes:
        if name.endswith(".latent.npy") and index in broken:
            return broken[index][0]
        if name.endswith(".json") and index == 6:
            return b"{not json"
        return data

    def other_latents(index: int, name: str, data: bytes) -> bytes:
        if name.endswith(".latent.npy"):
            return npy(good)  # sound, but not the length its JSON says
        return json.dumps({**json.loads(data), "autoencoder": "another-ae"}).encode()

    keys = rewrite(folder / "train-000000.tar", change)
    assert len(keys) >= 7
    (val_key,) = rewrite(folder / "val-000000.tar", other_latents)
    report = inspect_shards(folder, progress=False)
    assert not report["ok"]
    problems = report["problems"]
    for index, (_, reason) in broken.items():
        where = f"train-000000.tar: {keys[index]}.latent.npy: "
        assert any(p.startswith(where) and reason in p for p in problems), (reason, problems)
    assert any(p.startswith(f"train-000000.tar: {keys[6]}.json: invalid JSON") for p in problems), problems
    assert any(p.startswith("train: manifest says") for p in problems), problems
    assert f"val-000000.tar: {val_key}.json: autoencoder 'another-ae', the manifest says" in "\n".join(problems)
    assert any(p.startswith(f"val-000000.tar: {val_key}.json: duration_s") and "has 100" in p for p in problems)
    assert any(p.startswith("val: manifest says") and "frames, the shards hold 100" in p for p in problems), problems
    assert main(["data", "inspect", str(folder), "-q"]) == 1
    out = capsys.readouterr().out
    assert f"check: {len(problems)} problem(s)" in out and keys[1] in out
