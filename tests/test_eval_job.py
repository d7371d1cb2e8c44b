"""The eval job end to end on real shards: the genre classifier learns the synth genres, and
`wavediff eval` / `eval-folders` generate, measure and write their report, table and grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_recipes
import torch

from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack
from wavediff.cli import main
from wavediff.config import AERecipe, AutoencoderConfig, ClassifierRecipe, DiffusionRecipe, load_recipe, to_dict
from wavediff.errors import CheckpointError
from wavediff.evaluation.report import format_report
from wavediff.evaluation.suite import VAL_REPORT, evaluate_model
from wavediff.latents.encode import encode_shards
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import save_checkpoint
from wavediff.models.factory import load_classifier
from wavediff.training.classifier import train_classifier
from wavediff.training.diffusion import train_diffusion

SR = 8000
GENRES = ["dubstep", "house", "techno", "trap"]
TINY_DENOISER = [
    *tiny_recipes.TINY_DENOISER,
    "train.steps=2",
    "train.sample_every=0",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """Four genres × 8 one-bar loops at 8 kHz → audio shards (30 % val), a tiny untrained
    autoencoder, its latents and a denoiser trained for 2 steps."""
    root = tmp_path_factory.mktemp("eval-pack")
    synthesize_pack(root / "pack", genres=GENRES, loops_per_genre=8, sample_rate=SR, bars=1, seed=0, progress=False)
    shard(
        [root / "pack"],
        root / "audio",
        ShardOptions(sample_rate=SR, channels=1, max_seconds=None, val_fraction=0.3, workers=1),
        progress=False,
    )
    torch.manual_seed(0)
    cfg = AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4)
    save_checkpoint(
        root / "ae",
        1,
        Autoencoder(cfg).state_dict(),
        {"kind": "autoencoder", "recipe": to_dict(AERecipe(sample_rate=SR, model=cfg))},
    )
    encode_shards(root / "ae", root / "audio", root / "latents", batch_size=4, progress=False)
    paths = [f'data.path="{root / "latents"}"', f'autoencoder="{root / "ae"}"']
    train_diffusion(
        load_recipe("loops-tiny-cpu", DiffusionRecipe, paths + TINY_DENOISER), root / "denoiser", progress=False
    )
    return root


@pytest.fixture(scope="module")
def classifier(pack):
    recipe = ClassifierRecipe()
    recipe.data.path, recipe.data.sample_size, recipe.data.num_workers = str(pack / "audio"), SR, 0
    recipe.train.steps, recipe.train.cpu, recipe.train.sample_every = 120, True, 0
    last, report = train_classifier(recipe, pack / "classifier", progress=False)
    return last, report


def test_the_classifier_learns_the_synth_genres_well_above_chance(classifier, pack):
    last, report = classifier
    assert report["chance"] == 1 / len(GENRES) and report["samples"] >= 4
    assert report["accuracy"] >= 2 * report["chance"]
    assert json.loads((pack / "classifier" / VAL_REPORT).read_text()) == report
    model = load_classifier(pack / "classifier")
    assert model.genres == GENRES and model.sample_rate == SR
    with pytest.raises(CheckpointError, match="not a genre classifier"):
        load_classifier(pack / "denoiser")


def test_evaluate_model_reports_every_measure_per_genre(pack, classifier, tmp_path):
    report = evaluate_model(
        pack / "denoiser", pack / "audio", n=8, steps=2, classifier=pack / "classifier", grid=tmp_path / "grid.png"
    )
    json.dumps(report, allow_nan=False)
    assert report["settings"]["n"] == 8 and report["settings"]["steps"] == 2
    assert report["classifier"]["accuracy"] == classifier[1]["accuracy"]  # reported before its verdicts
    assert list(report["genres"]) == GENRES
    for block in report["genres"].values():
        assert block["clips"] == {"generated": 2, "reference": 8}
        assert block["fd"]["logmel"] > 0 and block["kid"]["mfcc"]["std"] >= 0
        assert block["loops"]["generated"]["loops"] == 2 and block["loops"]["reference"]["loops"] == 8
        assert 0 <= block["genre_adherence"] <= 1 and sum(block["classified_as"].values()) == 2
        assert block["diversity"]["generated_same_condition"] >= 0  # two seeds of one condition
    overall = report["overall"]
    assert overall["clips"] == {"generated": 8, "reference": 32}
    assert overall["genre_adherence"] == pytest.approx(
        np.mean([b["genre_adherence"] for b in report["genres"].values()])
    )
    grid = tmp_path / "grid.png"
    assert report["grid"]["rows"] == GENRES and grid.read_bytes()[:4] == b"\x89PNG"
    table = format_report(report)
    assert "overall" in table and all(g in table for g in GENRES) and "val clips" in table
    keys = report["key_accuracy"]  # the recipe conditions on key: every loop was asked for one
    assert keys["loops"] == 8 and len(keys["estimated"]) == 8 and keys["chance"] == pytest.approx(1 / 24, abs=1e-4)
    assert 0 <= keys["exact"] <= keys["tonic"] <= 1 and "key accuracy (librosa chroma, 8 loops" in table
    assert "prompt_adherence" not in report  # a model without text


def test_a_text_model_is_judged_on_loops_from_prompts_alone(pack, classifier, tmp_path):
    text = ["conditioning.text=true", "model.cross_attention=true"]
    paths = [f'data.path="{pack / "latents"}"', f'autoencoder="{pack / "ae"}"']
    recipe = load_recipe("loops-tiny-cpu", DiffusionRecipe, paths + TINY_DENOISER + text)
    train_diffusion(recipe, tmp_path / "text-denoiser", progress=False)
    report = evaluate_model(
        tmp_path / "text-denoiser", pack / "audio", n=4, steps=1, per_condition=1, classifier=pack / "classifier"
    )
    adherence = report["prompt_adherence"]
    assert adherence["loops"] == len(GENRES) and list(adherence["per_genre"]) == GENRES
    assert adherence["genre"] == pytest.approx(np.mean(list(adherence["per_genre"].values())))
    assert sum(sum(v.values()) for v in adherence["classified_as"].values()) == len(GENRES)
    assert "prompt adherence (genre named by the prompt alone, 4 loops)" in format_report(report)


def test_eval_commands_write_reports(pack, classifier, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "eval",
                str(pack / "denoiser"),
                "--ref",
                str(pack / "audio"),
                "--n",
                "4",
                "--steps",
                "2",
                "--per-condition",
                "1",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["settings"]["per_condition"] == 1 and report["overall"]["clips"]["generated"] == 4
    assert out.with_suffix(".png").is_file() and "FD mel" in capsys.readouterr().out
    assert (
        main(
            [
                "eval-folders",
                str(pack / "pack" / "techno"),
                str(pack / "pack"),
                "--classifier",
                str(pack / "classifier"),
                "-q",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "techno" in printed and "reference only: dubstep, house, trap" in printed.replace("genres in the ", "")
    assert main(["eval", str(pack / "denoiser"), "--ref", str(pack / "missing"), "-q"]) == 2
    assert "missing" in capsys.readouterr().err
