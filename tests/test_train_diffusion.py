"""`train_diffusion` end to end on real latent shards: resolving the recipe, training, resuming,
examples in TensorBoard, and checkpoints that are enough to generate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_recipes import TINY_DENOISER

from wavediff.config import DiffusionRecipe, load_recipe
from wavediff.errors import ConfigError, DataError
from wavediff.generation.generate import generate
from wavediff.models.checkpoint import CONFIG_FILE, latest_checkpoint, load_checkpoint
from wavediff.models.factory import load_denoiser
from wavediff.shards.format import read_manifest
from wavediff.training.diffusion import resolve, train_diffusion

TINY = [
    *TINY_DENOISER,
    "sampling.steps=3",
    "sampling.example_bars=1",
    "train.log_every=1",
]


def tiny(pack: dict, *overrides: str) -> DiffusionRecipe:
    paths = [f'data.path="{pack["latents"]}"', f'autoencoder="{pack["ae"]}"']
    return load_recipe("loops-tiny-cpu", DiffusionRecipe, paths + TINY + list(overrides))


def test_resolve_fills_in_what_the_data_says(latent_pack):
    resolved, ae, info = resolve(tiny(latent_pack))
    manifest = read_manifest(latent_pack["latents"], "latent")
    assert resolved.channels == manifest.latent_dim == 4
    assert resolved.conditioning.genres == ["dubstep", "techno"]
    assert resolved.diffusion.sigma_data == pytest.approx(manifest.stats.overall_std, rel=1e-4)
    assert info["id"] == manifest.autoencoder and ae is not None
    kept = resolve(tiny(latent_pack, "diffusion.sigma_data=0.7", 'conditioning.genres=["techno"]'))[0]
    assert kept.diffusion.sigma_data == 0.7 and kept.conditioning.genres == ["techno"]


def test_waveform_model_measures_its_sigma_data(latent_pack):
    r = load_recipe("loops-tiny-cpu", DiffusionRecipe, [f'data.path="{latent_pack["audio"]}"', 'autoencoder=""', *TINY])
    resolved, ae, info = resolve(r)
    assert ae is None and info is None and resolved.channels == 1
    assert 0.01 < resolved.diffusion.sigma_data < 1.0


def test_channel_normalization_takes_each_channels_statistics_from_the_shards(latent_pack, tmp_path):
    resolved = resolve(tiny(latent_pack, 'diffusion.normalize="channel"'))[0].diffusion
    stats = read_manifest(latent_pack["latents"], "latent").stats
    assert resolved.sigma_data == 1.0
    assert resolved.channel_mean == pytest.approx(stats.mean, abs=1e-6)
    assert resolved.channel_std == pytest.approx(stats.std, abs=1e-6)
    # the checkpoint carries them: a loaded model maps the shards' latents as training did
    train_diffusion(tiny(latent_pack, 'diffusion.normalize="channel"'), tmp_path / "run", max_steps=1, progress=False)
    model = load_denoiser(tmp_path / "run", "cpu")
    torch.testing.assert_close(model.from_model(torch.zeros(1, 4, 1))[0, :, 0], torch.tensor(stats.mean))
    audio, _ = generate(model, genre="techno", bpm=140, bars=1, seed=3)
    assert torch.isfinite(audio).all()


def test_channel_normalization_is_refused_where_it_cannot_work(latent_pack):
    audio = [f'data.path="{latent_pack["audio"]}"', 'autoencoder=""', 'diffusion.normalize="channel"']
    with pytest.raises(ConfigError, match="needs latent shards"):
        resolve(load_recipe("loops-tiny-cpu", DiffusionRecipe, [*audio, *TINY]))
    with pytest.raises(ConfigError, match="need 4 values each"):
        resolve(tiny(latent_pack, 'diffusion.normalize="channel"', "diffusion.channel_mean=[0.0]"))
    with pytest.raises(ConfigError, match="channel_std must be positive"):
        resolve(tiny(latent_pack, 'diffusion.normalize="channel"', "diffusion.channel_std=[1.0, 0.0, 1.0, 1.0]"))


def test_wrong_inputs_are_refused_before_training(latent_pack, tmp_path):
    with pytest.raises(ConfigError, match="8000 Hz but sample_rate is 16000"):
        resolve(tiny(latent_pack, "sample_rate=16000"))
    with pytest.raises(ConfigError, match="channels is 3"):
        resolve(tiny(latent_pack, "channels=3"))
    with pytest.raises(ConfigError, match="data.path is empty"):
        resolve(tiny(latent_pack, 'data.path=""'))
    other = tmp_path / "other-ae"  # same config, other weights: its latents would be different
    shutil.copytree(latent_pack["ae"], other)
    ckpt = latest_checkpoint(other)
    config, state = load_checkpoint(ckpt)
    state = {k: v + 0.1 for k, v in state.items()}
    from safetensors.torch import save_file

    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(DataError, match="latents of autoencoder"):
        resolve(tiny(latent_pack, f'autoencoder="{other}"'))


@pytest.fixture(scope="module")
def run(latent_pack, tmp_path_factory) -> tuple[Path, DiffusionRecipe]:
    out = tmp_path_factory.mktemp("diffusion-run")
    recipe = tiny(latent_pack, "train.steps=6", "train.checkpoint_every=3", "train.sample_every=3")
    train_diffusion(recipe, out, max_steps=3, progress=False)
    return out, recipe


def test_training_writes_self_contained_checkpoints_and_examples(run, latent_pack):
    out, recipe = run
    last = latest_checkpoint(out)
    config = json.loads((last / CONFIG_FILE).read_text())
    assert config["kind"] == "diffusion" and config["step"] == 3
    assert config["recipe"]["channels"] == 4 and config["recipe"]["conditioning"]["genres"] == ["dubstep", "techno"]
    assert config["autoencoder"]["recipe"]["model"]["latent_dim"] == 4
    _, state = load_checkpoint(last)
    assert any(k.startswith("autoencoder.") for k in state) and any(k.startswith("unet.") for k in state)
    events = EventAccumulator(str(out / "logs"), size_guidance={"audio": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert "diffusion/loss" in tags["scalars"]
    assert {"audio/dubstep-" in t or "audio/techno-" in t for t in tags["audio"]} == {True}
    assert len(tags["audio"]) == 2 and len(tags["images"]) == 2  # one loop (and spectrogram) per genre


def test_resume_continues_to_the_end(run):
    out, recipe = run
    last = train_diffusion(recipe, out, progress=False)
    assert last.name == "step-000006"
    model = load_denoiser(out, "cpu")
    audio, info = generate(model, genre="techno", bpm=140, bars=1, seed=3)
    assert audio.shape == (1, 1, info["samples"]) and info["samples"] == round(4 * 60 / 140 * 8000)
    assert torch.isfinite(audio).all()


def test_loss_goes_down_on_a_fixed_batch(latent_pack):
    """A few dozen steps on one batch: the denoiser learns (the loss at fixed noise falls)."""
    from wavediff.models.conditioning import Conditions
    from wavediff.models.diffusion import LoopDiffusion
    from wavediff.shards.loader import make_loader

    resolved, ae, _ = resolve(tiny(latent_pack))
    torch.manual_seed(0)
    model = LoopDiffusion(resolved, ae)
    batch = next(iter(make_loader(resolved.data, "train", kind="latent", genres=resolved.conditioning.genres)))
    cond = Conditions(batch["genre"], batch["bpm"], batch["seconds_total"], batch["bars"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def fixed_loss() -> float:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(123)
            return float(model(batch["latent"], cond).mean())

    before = fixed_loss()
    for _ in range(40):
        opt.zero_grad()
        model(batch["latent"], cond).mean().backward()
        opt.step()
    assert fixed_loss() < 0.7 * before
