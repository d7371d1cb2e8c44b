"""Autoencoder evaluation and the one-file round trip, with a real (tiny, untrained) model on real shards."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_tools.shard import ShardOptions, shard
from wavediff.config import AERecipe, AutoencoderConfig, to_dict
from wavediff.errors import AudioError
from wavediff.evaluation.reconstruction import evaluate_autoencoder, reconstruct_file
from wavediff.io import audio
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import save_checkpoint
from wavediff.models.losses import ReconstructionMetrics
from wavediff.shards.format import read_manifest, shard_paths

SR = 8000
LENGTHS = [4000, 4000, 4000, 3001, 5000, 4000, 2500, 1500, 4000, 6000]  # 1500: too short to measure


def tiny_ae(channels: int = 1) -> Autoencoder:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        channels=channels, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=3, padding="circular"
    )
    return Autoencoder(cfg).eval()


def save_ae(run_dir: Path, model: Autoencoder) -> Path:
    recipe = to_dict(AERecipe(sample_rate=SR, model=model.cfg))
    return save_checkpoint(run_dir, 1, model.state_dict(), {"kind": "autoencoder", "recipe": recipe})


def chirp(samples: int, seed: int, sr: int = SR, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sr
    x = 0.3 * np.sin(2 * np.pi * (rng.uniform(100, 400) + rng.uniform(100, 800) * t) * t) + 0.05 * rng.standard_normal(
        samples
    )
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval")
    src = root / "src"
    src.mkdir()
    for i, n in enumerate(LENGTHS):
        sf.write(src / f"s{i}.wav", chirp(n, i), SR)
    options = ShardOptions(
        sample_rate=SR, channels=1, max_seconds=None, min_seconds=0.1, val_fraction=0.5, workers=1, shard_size_mb=0.01
    )
    manifest = shard([src], root / "shards", options, progress=False)
    assert manifest.splits["val"].samples >= 3 and manifest.splits["train"].samples >= 3
    model = tiny_ae()
    return {"root": root, "shards": root / "shards", "model": model, "ckpt": save_ae(root / "ae", model)}


def split_audio(folder: Path, split: str) -> list[torch.Tensor]:
    """Each sample of a split, decoded straight from the tars, in order."""
    wavs = []
    for path in shard_paths(folder, read_manifest(folder), split):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".flac"):
                    wavs.append(audio.decode(tar.extractfile(member).read(), member.name)[0])
    return wavs


def test_metrics_are_the_mean_over_whole_samples(pack) -> None:
    metrics = ReconstructionMetrics(SR)
    per_sample = []
    val = [w for w in split_audio(pack["shards"], "val") if w.shape[-1] >= 2048]
    with torch.no_grad():
        for wav in val:
            recon, _ = pack["model"](wav[None])
            per_sample.append(metrics(recon, wav[None]))
    report = evaluate_autoencoder(pack["ckpt"], pack["shards"], batch_size=3)
    assert report["split"] == "val" and report["samples"] == len(val)
    for name in ("stft", "mel", "si_sdr"):
        assert np.isfinite(report[name])
        assert report[name] == pytest.approx(np.mean([m[name] for m in per_sample]), rel=1e-4, abs=1e-5)
    assert report["stft"] > 0 and report["mel"] > 0 and report["si_sdr"] < 20  # untrained: far from perfect


def test_batch_size_does_not_change_the_numbers(pack) -> None:
    one = evaluate_autoencoder(pack["ckpt"], pack["shards"], split="val", batch_size=1)
    many = evaluate_autoencoder(pack["ckpt"], pack["shards"], split="val", batch_size=8)
    for name in ("stft", "mel", "si_sdr"):
        assert one[name] == pytest.approx(many[name], rel=1e-4, abs=1e-5)
    assert one["samples"] == many["samples"]


def test_short_samples_are_counted_not_averaged_and_max_samples_caps(pack) -> None:
    reports = [evaluate_autoencoder(pack["ckpt"], pack["shards"], split=s) for s in ("train", "val")]
    assert sum(r["too_short"] for r in reports) == 1
    assert sum(r["samples"] for r in reports) == len(LENGTHS) - 1
    capped = evaluate_autoencoder(pack["ckpt"], pack["shards"], split="train", max_samples=2)
    assert capped["samples"] + capped["too_short"] == 2


def test_reconstruct_keeps_length_and_rate(pack, tmp_path) -> None:
    source = tmp_path / "in.wav"
    sf.write(source, chirp(16003, 7, sr=16000, channels=2), 16000)  # another rate and channel count
    out = reconstruct_file(pack["ckpt"], source, tmp_path / "out.flac")
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames, info.format) == (SR, 1, round(16003 * SR / 16000), "FLAC")
    wav, _ = audio.load(source, SR, 1)
    with torch.no_grad():
        expected, _ = pack["model"](wav[None])
    got, _ = audio.load(out)
    np.testing.assert_allclose(got[0].numpy(), expected[0, 0].clamp(-1, 1).numpy(), atol=1e-4)


def test_bad_inputs_fail_clearly(pack, tmp_path) -> None:
    with pytest.raises(AudioError, match=f"{tmp_path}/missing.wav: cannot open"):
        reconstruct_file(pack["ckpt"], tmp_path / "missing.wav", tmp_path / "out.wav")
    stereo = save_ae(tmp_path / "stereo", tiny_ae(channels=2))
    with pytest.raises(ValueError, match="manifest.json: shards have 1 channels, the autoencoder takes 2"):
        evaluate_autoencoder(stereo, pack["shards"])
    with pytest.raises(ValueError, match="the 'test' split has no shards"):
        evaluate_autoencoder(pack["ckpt"], pack["shards"], split="test")
    with pytest.raises(ValueError, match="max_samples must be positive"):
        evaluate_autoencoder(pack["ckpt"], pack["shards"], max_samples=0)
