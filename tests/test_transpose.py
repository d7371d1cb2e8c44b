"""Transposition augmentation: the loader resamples audio windows and moves the key and tempo
labels with them, so the labels stay true (checked on a real tone through real shards)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from data_tools.shard import ShardOptions, shard
from wavediff.config import AugmentConfig
from wavediff.errors import ConfigError
from wavediff.io.audio import save
from wavediff.io.keys import KEYS
from wavediff.shards.format import read_manifest, shard_paths
from wavediff.shards.loader import build_dataset

SR = 8000
TONE = 440.0  # A4: the file's key is A, at 120 BPM


def _pitch(wav: torch.Tensor, frames: int) -> float:
    """The frequency of the strongest partial: the peak of a zero-padded Hann-windowed spectrum."""
    x = wav[0, :frames].double()
    spectrum = torch.fft.rfft(x * torch.hann_window(frames, dtype=torch.float64), n=16 * frames).abs()
    return float(spectrum.argmax()) * SR / (16 * frames)


@pytest.fixture(scope="module")
def tone_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tone")
    t = torch.arange(2 * SR) / SR  # one bar at 120 BPM: a loop of a whole number of cycles
    path = save(root / "src" / "tone.wav", 0.5 * torch.sin(2 * math.pi * TONE * t)[None], SR)
    path.with_suffix(".json").write_text(json.dumps({"loop": True, "bpm": 120, "bars": 1, "key": "A"}))
    shard([root / "src"], root / "shards", ShardOptions(sample_rate=SR, channels=1, workers=1, val_fraction=0.0))
    return [str(p) for p in shard_paths(root / "shards", read_manifest(root / "shards"), "train")]


def _samples(urls, transpose: int, count: int, kind: str = "audio"):
    augment = AugmentConfig(roll=True, transpose=transpose)
    ds = build_dataset(urls, kind=kind, sample_size=4096, augment=augment, shuffle_buffer=1, rank=0, world_size=1)
    it = iter(ds)
    return [next(it) for _ in range(count)]


def test_a_transposed_tone_moves_by_the_semitones_its_labels_say(tone_shards):
    shifts = set()
    for s in _samples(tone_shards, transpose=2, count=24):
        stretch = s["bpm"] / 120.0
        semitones = (s["key_class"] - KEYS.index("A") + 6) % 12 - 6
        heard = 12 * math.log2(_pitch(s["audio"], s["frames"]) / TONE)
        assert heard == pytest.approx(12 * math.log2(stretch), abs=0.03)  # the tempo label moved with the pitch
        assert heard == pytest.approx(semitones, abs=0.1)  # and so did the key label (within 4.3 cents)
        assert s["audio"].shape == (1, 4096) and s["frames"] == 4096
        assert s["seconds_total"] == pytest.approx(2.0 / stretch)  # the loop is shorter when played faster
        if "bpm" in s["prompt"]:  # the training prompt's words are written from the moved labels
            assert f"{s['bpm']:.0f} bpm" in s["prompt"].split(", ")
        shifts.add(semitones)
    assert shifts == {-2, -1, 0, 1, 2}


def test_off_by_default_and_never_in_evaluation(tone_shards):
    assert AugmentConfig().transpose == 0
    for s in _samples(tone_shards, transpose=0, count=4):
        assert s["bpm"] == 120.0 and KEYS[s["key_class"]] == "A"
        assert _pitch(s["audio"], s["frames"]) == pytest.approx(TONE, abs=0.5)
    evaluation = build_dataset(
        tone_shards, sample_size=4096, augment=AugmentConfig(transpose=2), training=False, rank=0, world_size=1
    )
    assert [(s["bpm"], s["prompt"]) for s in evaluation] == [(120.0, "melody, tone, 120 bpm, A major")]


def test_latent_shards_cannot_be_transposed(tone_shards):
    with pytest.raises(ConfigError, match="transpose works on audio shards only: latents cannot be resampled"):
        _samples(tone_shards, transpose=2, count=1, kind="latent")
    with pytest.raises(ConfigError, match="0–12 semitones"):
        _samples(tone_shards, transpose=13, count=1)
