"""`wavediff finetune` end to end: a tiny base trained on two genres learns a third from a pack of its
loops (full and LoRA), the CLI generates with the new genre and with --lora, merge-lora matches
base + adapter, the pack's shards are cached, and bad inputs get one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_train_diffusion import tiny

from data_tools.synth import synthesize_pack
from wavediff.cli import main
from wavediff.errors import CheckpointError
from wavediff.generation.generate import generate
from wavediff.models.checkpoint import CONFIG_FILE, MODEL_FILE, latest_checkpoint, load_checkpoint
from wavediff.models.factory import load_denoiser, load_with_lora
from wavediff.models.genres import with_genres
from wavediff.models.lora import LoraAdapters, LoraModel, lora_shapes, merge_adapters
from wavediff.pipelines.finetune import finetune
from wavediff.training.diffusion import train_diffusion
from wavediff.training.finetune import overfit_warning

SMALL = [
    "data.sample_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "train.checkpoint_every=2",
    "train.sample_every=2",
    "train.log_every=1",
    "finetune.val_examples=8",
    "finetune.val_repeats=1",
    "finetune.val_fraction=0.4",
]


@pytest.fixture(scope="module")
def setup(latent_pack, tmp_path_factory):
    """A base trained a few steps on techno + dubstep, a pack of the held-back genre, full and LoRA fine-tunes."""
    root = tmp_path_factory.mktemp("finetune")
    train_diffusion(
        tiny(latent_pack, "train.steps=3", "train.checkpoint_every=3", "train.sample_every=0"),
        root / "base",
        progress=False,
    )
    synthesize_pack(root / "pack", genres=["house"], loops_per_genre=6, sample_rate=8000, bars=1, seed=1)
    full = finetune(
        root / "base", root / "pack", genre="house", steps=4, out=root / "full", overrides=SMALL, progress=False
    )
    lora = finetune(
        root / "base",
        root / "pack",
        genre="house",
        steps=4,
        out=root / "lora",
        lora=2,
        overrides=[*SMALL, "train.optimizer.lr=0.05"],
        progress=False,
    )
    return {"root": root, "base": root / "base", "pack": root / "pack", "full": full, "lora": lora}


def test_new_genre_is_learnt_and_old_ones_still_work(setup, tmp_path):
    model = load_denoiser(setup["full"], "cpu")
    assert model.conditioner.genres == ["dubstep", "techno", "house"]
    base = load_denoiser(setup["base"], "cpu")
    table, base_table = model.conditioner.genre.weight, base.conditioner.genre.weight
    assert not torch.allclose(table[2], base_table.mean(0))  # the new row trained away from its mean start
    history = json.loads((setup["root"] / "full" / "finetune.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 2, 4] and all("val_loss" in h and "train_loss" in h for h in history)
    for genre in ("house", "techno"):
        code = main(
            [
                "generate",
                str(setup["full"]),
                "--genre",
                genre,
                "--bpm",
                "120",
                "--bars",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
                "-q",
            ]
        )
        assert code == 0
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.wav")) == ["house", "techno"]


def test_embedded_autoencoder_is_exported_with_the_same_id(setup, latent_pack):
    base_config, _ = load_checkpoint(setup["base"])
    config, _ = load_checkpoint(setup["full"])
    assert config.autoencoder.id == base_config.autoencoder.id
    assert config.base.genres == ["dubstep", "techno"] and config.finetune["genre"] == "house"


def test_second_run_reuses_the_shard_cache(setup, capsys):
    folders = sorted((setup["root"] / "full" / "data").glob("pack-*/audio"))
    assert len(folders) == 1
    stamp = (folders[0] / "manifest.json").stat().st_mtime_ns
    finetune(
        setup["base"],
        setup["pack"],
        genre="house",
        steps=4,
        out=setup["root"] / "full",
        overrides=SMALL,
        progress=False,
    )  # already at its last step: resumes, trains nothing
    assert "sharding" not in capsys.readouterr().out
    assert (folders[0] / "manifest.json").stat().st_mtime_ns == stamp


def test_lora_saves_a_small_adapter_that_changes_and_merges(setup, tmp_path):
    lora, base = setup["lora"], latest_checkpoint(setup["base"])
    config = json.loads((lora / CONFIG_FILE).read_text())
    assert config["kind"] == "lora" and config["lora"]["rank"] == 2
    assert all(not k.startswith(("unet.", "autoencoder.")) for k in load_file(str(lora / MODEL_FILE)))
    adapter, whole = (lora / MODEL_FILE).stat().st_size, (setup["full"] / MODEL_FILE).stat().st_size
    assert adapter < whole / 3, (adapter, whole)

    def loop(model):
        return generate(model, genre="techno", bpm=120, bars=1, seed=3, settings=model.recipe.sampling)[0]

    plain, adapted = loop(load_denoiser(base, "cpu")), loop(load_with_lora(base, lora, 1.0, "cpu"))
    assert not torch.allclose(plain, adapted, atol=1e-4)
    assert torch.allclose(loop(load_with_lora(base, lora, 0.0, "cpu")), plain, atol=1e-5)
    assert main(["merge-lora", str(base), str(lora), str(tmp_path / "merged"), "-q"]) == 0
    assert torch.allclose(loop(load_denoiser(tmp_path / "merged", "cpu")), adapted, atol=1e-5)
    out = tmp_path / "loops"
    assert (
        main(
            [
                "generate",
                str(base),
                "--lora",
                str(lora),
                "--genre",
                "house",
                "--bpm",
                "120",
                "--bars",
                "1",
                "--steps",
                "2",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    assert len(list(out.glob("house-*.wav"))) == 1


def test_adapter_on_other_weights_is_refused(setup, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(setup["base"], other)
    ckpt = latest_checkpoint(other)
    state = {k: v + 0.01 for k, v in load_file(str(ckpt / MODEL_FILE)).items()}
    save_file(state, str(ckpt / MODEL_FILE), metadata={"kind": "diffusion"})
    with pytest.raises(CheckpointError, match="adapter trained on base"):
        load_with_lora(other, setup["lora"])


def test_mismatched_base_gives_the_key_and_shape_error(setup, tmp_path):
    other = tmp_path / "bad"
    shutil.copytree(setup["base"], other)
    ckpt = latest_checkpoint(other)
    config = json.loads((ckpt / CONFIG_FILE).read_text())
    config["recipe"]["model"]["base_channels"] = 16
    (ckpt / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        finetune(other, setup["pack"], genre="house", steps=1, out=tmp_path / "run", overrides=SMALL, progress=False)


def test_bad_inputs_give_one_line_errors(setup, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(setup["base"]), "--out", str(tmp_path / "run"), "-q"]
    assert main(["finetune", args[0], str(empty), *args[1:]]) == 2
    assert main(["finetune", args[0], str(tmp_path / "missing"), *args[1:]]) == 2
    assert main(["finetune", args[0], str(setup["pack"]), "--lora", "0", *args[1:]]) == 2
    mixed = tmp_path / "mixed"
    synthesize_pack(mixed, genres=["house", "techno"], loops_per_genre=1, sample_rate=8000, bars=1)
    assert main(["finetune", args[0], str(mixed), *args[1:]]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wavediff: error")]
    assert len(lines) == 4
    assert "holds no audio" in lines[0] and "no such pack" in lines[1] and "rank must be at least 1" in lines[2]
    assert "pass --genre NAME" in lines[3] and "dubstep, techno" in lines[3]


def test_grown_vocabulary_keeps_old_rows_and_lora_starts_as_identity(setup):
    base = load_denoiser(setup["base"], "cpu")
    grown = with_genres(base, ["dubstep", "techno", "garage"])
    old, new = base.conditioner.genre.weight, grown.conditioner.genre.weight
    assert torch.equal(new[:2], old) and torch.allclose(new[2], old.mean(0))
    with pytest.raises(ValueError, match="must start with"):
        with_genres(base, ["techno"])
    low, full = lora_shapes(grown)
    assert (
        any(".attn." in n for n in low)
        and any(".block.conv1" in n for n in low)
        and list(full) == ["conditioner.genre.weight"]
    )
    adapters = LoraAdapters(low, full, rank=2, alpha=2.0)
    wrapped = LoraModel(grown, adapters)
    assert {n for n, _ in wrapped.named_parameters()} == {f"adapters.{n}" for n, _ in adapters.named_parameters()}
    data = torch.randn(2, grown.data_channels, 16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = wrapped(data)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        b = grown(data)
    assert torch.allclose(a, b)
    with torch.no_grad():
        for p in adapters.up.values():
            p.normal_()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            a = wrapped(data)
        merged = merge_adapters(wrapped.merged(0.0), adapters, 1.0)  # scale 0 then 1: the same as scale 1
        with torch.random.fork_rng():
            torch.manual_seed(0)
            b = merged(data)
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, grown(data))
    with pytest.raises(ValueError, match="rank must be at least 1"):
        LoraAdapters(low, full, rank=0, alpha=1.0)


def test_overfit_warning_needs_val_up_and_train_down():
    history = [{"step": 0, "val_loss": 1.0, "train_loss": 1.0}, {"step": 50, "val_loss": 0.8, "train_loss": 0.8}]
    assert overfit_warning(history, 0.02) is None
    rising = history + [{"step": 100, "val_loss": 0.9, "train_loss": 0.6}]
    assert "step 50" in overfit_warning(rising, 0.02)
    assert overfit_warning(history + [{"step": 100, "val_loss": 0.9, "train_loss": 0.85}], 0.02) is None
