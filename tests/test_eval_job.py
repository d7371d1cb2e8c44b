"""The eval job end to end on real shards: the genre classifier learns the synth genres, and
`wavediff eval` / `eval-folders` generate, measure and write their report, table and grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_recipes
import torch

from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack, synthesize_stems
from wavediff.cli import main
from wavediff.config import AERecipe, AutoencoderConfig, ClassifierRecipe, DiffusionRecipe, load_recipe, to_dict
from wavediff.errors import CheckpointError, UserError
from wavediff.evaluation.report import format_report
from wavediff.evaluation.suite import VAL_REPORT, evaluate_model
from wavediff.io.audio import save
from wavediff.io.files import atomic_write_json
from wavediff.latents.encode import encode_shards
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import read_raw_config, read_weights, save_checkpoint
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
    assert len(keys["librosa"]["estimated"]) == 8 and 0 <= keys["judges_agree"] <= 1 and "Temperley" in table
    tempo = overall["loops"]["reference"]
    assert set(tempo["librosa"]) == {"exact", "double", "half", "miss"} and 0 <= tempo["judges_agree"] <= 1
    assert "librosa gen" in table
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
    assert adherence["judged"] == ["genre"] and adherence["genre_only_because"] == "no role classifier was given"
    assert "prompt adherence (genre named by the prompt alone, 4 loops)" in format_report(report)


@pytest.fixture(scope="module")
def role_pack(tmp_path_factory):
    """House and techno loops as a producer's stems, OUT/<genre>/{drums,bass}/…: the drums (kick,
    snare, clap, hats) and the bass of each loop, with its sidecar → audio shards with roles."""
    root = tmp_path_factory.mktemp("role-pack")
    for genre in ("house", "techno"):
        for i in range(6):
            stems, meta = synthesize_stems(genre, np.random.default_rng(100 + i), SR, 1)
            parts = {"drums": sum(x for name, x in stems.items() if name != "bass"), "bass": stems["bass"]}
            for role, wav in parts.items():
                stem = root / "pack" / genre / role / f"{genre}_{role}_{i}_{meta['bpm']}bpm"
                save(stem.with_suffix(".wav"), wav, SR)
                atomic_write_json(stem.with_suffix(".json"), {**meta, "role": role})
    options = ShardOptions(sample_rate=SR, channels=1, max_seconds=None, val_fraction=0.3, workers=1)
    shard([root / "pack"], root / "audio", options, progress=False)
    return root


@pytest.fixture(scope="module")
def role_classifier(role_pack):
    recipe = ClassifierRecipe(label="role")
    recipe.data.path, recipe.data.sample_size, recipe.data.num_workers = str(role_pack / "audio"), SR, 0
    recipe.train.steps, recipe.train.cpu, recipe.train.sample_every = 60, True, 0
    return train_classifier(recipe, role_pack / "role-classifier", progress=False)


def test_a_role_classifier_learns_drums_from_bass_and_its_checkpoint_says_so(role_pack, role_classifier):
    last, report = role_classifier
    model = load_classifier(last)
    assert model.label == "role" and model.genres == ["drums", "bass"]  # ROLES order, only those the shards hold
    assert report["chance"] == 0.5 and report["accuracy"] >= 0.75
    assert read_raw_config(last)["recipe"]["label"] == "role"


def test_a_genre_classifier_from_before_roles_still_loads(classifier, tmp_path):
    config, state = read_raw_config(classifier[0]), read_weights(classifier[0])
    del config["recipe"]["label"]
    old = save_checkpoint(tmp_path / "old", config["step"], state, config)
    model = load_classifier(old)
    assert model.label == "genre" and model.genres == GENRES


def test_prompt_adherence_judges_genre_and_role_with_a_role_classifier(
    pack, role_pack, classifier, role_classifier, tmp_path
):
    text = ["conditioning.text=true", "model.cross_attention=true"]
    paths = [f'data.path="{pack / "latents"}"', f'autoencoder="{pack / "ae"}"']
    recipe = load_recipe("loops-tiny-cpu", DiffusionRecipe, paths + TINY_DENOISER + text)
    train_diffusion(recipe, tmp_path / "text-denoiser", progress=False)
    common = {"n": 2, "steps": 1, "per_condition": 1, "classifier": pack / "classifier"}
    report = evaluate_model(
        tmp_path / "text-denoiser", role_pack / "audio", role_classifier=role_pack / "role-classifier", **common
    )
    adherence = report["prompt_adherence"]
    assert adherence["judged"] == ["genre", "role"] and adherence["loops"] == 4  # house, techno × drums, bass
    assert list(adherence["per_role"]) == ["drums", "bass"]
    assert 0 <= adherence["genre_and_role"] <= min(adherence["genre"], adherence["role"])
    assert report["role_classifier"]["chance"] == 0.5
    assert "genre and role named by the prompt alone, 4 loops" in format_report(report)
    with pytest.raises(UserError, match="a role classifier, where a genre classifier is asked for"):
        evaluate_model(
            tmp_path / "text-denoiser", role_pack / "audio", **{**common, "classifier": role_pack / "role-classifier"}
        )
    # The built-in pack's loops are full mixes: no roles to name, and the report says so.
    genre_only = evaluate_model(
        tmp_path / "text-denoiser", pack / "audio", role_classifier=role_pack / "role-classifier", **common
    )
    assert genre_only["prompt_adherence"]["judged"] == ["genre"]
    assert "no reference loop is named with a role" in genre_only["prompt_adherence"]["genre_only_because"]


def test_the_commands_train_a_role_classifier_and_take_it_beside_the_genre_one(pack, role_pack, tmp_path, capsys):
    run = tmp_path / "roles"
    argv = ["train-classifier", str(role_pack / "audio"), "--label", "role", "--steps", "2", "--out", str(run), "-q"]
    assert main([*argv, "--set", "train.cpu=true", "--set", "data.num_workers=0", "--set", "train.sample_every=0"]) == 0
    assert "val accuracy" in capsys.readouterr().out and load_classifier(run).label == "role"
    out = tmp_path / "report.json"
    argv = ["eval", str(pack / "denoiser"), "--ref", str(role_pack / "audio"), "--n", "2", "--steps", "1"]
    assert main([*argv, "--per-condition", "1", "--role-classifier", str(run), "--out", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["role_classifier"]["genres"] == ["drums", "bass"]
    assert "role classifier:" in capsys.readouterr().out


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
