"""Checkpoint folders: atomic publishing, keep-last-K, the latest pointer, finding, and loading models back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavediff.config import AERecipe, AutoencoderConfig, to_dict
from wavediff.errors import CheckpointError, UserError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
    stage_checkpoint,
)
from wavediff.models.factory import load_model

MODEL = AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4)


def recipe(**model) -> AERecipe:
    return AERecipe(sample_rate=8000, model=AutoencoderConfig(**{**vars(MODEL), **model}))


def save(run_dir: Path, step: int, model: Autoencoder, r: AERecipe, **kw) -> Path:
    config = {"kind": "autoencoder", "recipe": to_dict(r)}
    return save_checkpoint(run_dir, step, model.state_dict(), config, **kw)


@pytest.fixture
def model() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(MODEL)


def test_folder_layout_config_and_latest(tmp_path: Path, model: Autoencoder) -> None:
    ckpt = save(tmp_path, 100, model, recipe())
    assert ckpt == tmp_path / "checkpoints" / "step-000100"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]
    config, state = load_checkpoint(ckpt)
    assert config.kind == "autoencoder" and config.step == 100
    assert config.recipe == recipe()
    assert state.keys() == model.state_dict().keys()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-000100\n"


def test_keep_last_k(tmp_path: Path, model: Autoencoder) -> None:
    for step in (1, 2, 3, 4):
        save(tmp_path, step, model, recipe(), keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000003", "step-000004"]
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_failed_save_publishes_nothing_and_debris_is_cleared(tmp_path: Path, model: Autoencoder) -> None:
    first = save(tmp_path, 1, model, recipe())

    def crash(folder: Path) -> None:
        (folder / "accelerate").mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2, model, recipe(), write_state=crash)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000001"]
    assert latest_checkpoint(tmp_path) == first

    debris = stage_checkpoint(tmp_path, 3, "12345")  # a save killed half-way
    (debris / "config.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == first
    save(tmp_path, 4, model, recipe(), write_state=lambda folder: (folder / "accelerate").mkdir())
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-000001", "step-000004"]
    assert (tmp_path / "checkpoints" / "step-000004" / "accelerate").is_dir()


def test_latest_falls_back_to_highest_complete_step(tmp_path: Path, model: Autoencoder) -> None:
    save(tmp_path, 5, model, recipe())
    newest = save(tmp_path, 7, model, recipe())
    pointer = tmp_path / "checkpoints" / "latest"
    pointer.write_text("step-000099\n")  # stale
    assert latest_checkpoint(tmp_path) == newest
    pointer.unlink()
    assert latest_checkpoint(tmp_path) == newest
    (newest / "model.safetensors").unlink()  # incomplete folders never count
    assert latest_checkpoint(tmp_path).name == "step-000005"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_resolve_checkpoint_from_any_level(tmp_path: Path, model: Autoencoder) -> None:
    ckpt = save(tmp_path / "run", 3, model, recipe())
    for path in (ckpt, tmp_path / "run", tmp_path / "run" / "checkpoints"):
        assert resolve_checkpoint(path) == ckpt
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: not a checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def test_load_model_in_a_fresh_process(tmp_path: Path, model: Autoencoder) -> None:
    save(tmp_path / "run", 10, model, recipe())
    x = torch.sin(torch.arange(512) / 7.0).reshape(1, 1, 512)
    with torch.no_grad():
        expected = model.eval()(x)[0]
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch\n"
        "from wavediff.models.factory import load_model\n"
        "model = load_model(sys.argv[1])\n"
        "assert not model.training\n"
        "with torch.no_grad():\n"
        "    torch.save(model(torch.load(sys.argv[2]))[0], sys.argv[3])\n"
        "print(type(model).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Autoencoder"
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_mismatch_names_keys_and_shapes(tmp_path: Path, model: Autoencoder) -> None:
    ckpt = save(tmp_path, 1, model, recipe(base_channels=8))  # config says 8, weights are 4 wide
    fits = r"model.safetensors: weights do not fit .*shape mismatch: decoder\."
    with pytest.raises(CheckpointError, match=fits) as e:
        load_model(ckpt)
    assert "log_alpha (checkpoint (8,), model (16,))" in str(e.value)

    config = {"kind": "autoencoder", "recipe": to_dict(recipe())}
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    state["extra.weight"] = torch.zeros(1)
    ckpt = save_checkpoint(tmp_path / "b", 1, state, config)
    listed = r"missing keys: decoder\..*\(\+\d+ more\); unexpected keys: extra\.weight"
    with pytest.raises(CheckpointError, match=listed):
        load_model(ckpt)


def test_bad_configs_are_named(tmp_path: Path, model: Autoencoder) -> None:
    ckpt = save(tmp_path, 1, model, recipe())
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "kind": "vocoder"}))
    with pytest.raises(CheckpointError, match=r"config.json: checkpoint kind 'vocoder' is not one of"):
        load_model(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**config, "recipe": {**config["recipe"], "typo": 1}}))
    with pytest.raises(CheckpointError, match=r"config.json: unknown key 'recipe.typo'"):
        load_model(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: unreadable"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=r"model.safetensors: unreadable"):
        load_checkpoint(ckpt)


def test_a_config_reads_typed_and_its_recipe_must_match_its_kind(tmp_path: Path, model: Autoencoder) -> None:
    ckpt = save(tmp_path, 7, model, recipe())
    config = read_config(ckpt)
    assert isinstance(config.recipe, AERecipe) and config.recipe.model == MODEL and config.autoencoder is None
    raw = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**raw, "kind": "diffusion"}))
    with pytest.raises(
        CheckpointError, match=r"config.json: a diffusion checkpoint whose recipe is of kind 'autoencoder'"
    ):
        read_config(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**raw, "step": "seven"}))
    with pytest.raises(CheckpointError, match=r"config.json: 'step' must be an integer"):
        read_config(ckpt)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_every_checkpoint_file_gets_the_mode_the_umask_gives(tmp_path: Path, model: Autoencoder, umask, mode) -> None:
    """Another user of a shared run folder can read the weights, as every other file."""
    old = os.umask(umask)
    try:
        ckpt = save(tmp_path, 1, model, recipe())
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in ckpt.iterdir()}
    assert modes == {"config.json": mode, "model.safetensors": mode}


@pytest.mark.parametrize("device", ["cuda:7", "gpu"])
def test_an_unavailable_device_is_named(tmp_path: Path, model: Autoencoder, device: str) -> None:
    save(tmp_path, 1, model, recipe())
    with pytest.raises(UserError, match=rf"^device {device!r}: "):
        load_model(tmp_path, device=device)
