"""The preview decoder (`wavediff train-preview`): it trains through the shared engine and resumes,
decodes a loop as seamlessly as the full decoder does, and refuses an autoencoder it was not trained on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tiny_recipes import TINY_DENOISER

from wavediff.cli import main
from wavediff.config import AERecipe, AutoencoderConfig, DiffusionRecipe, load_recipe, to_dict
from wavediff.errors import CheckpointError
from wavediff.evaluation.loops import seam_jump
from wavediff.generation.generate import generate
from wavediff.io.audio import load
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import latest_checkpoint, read_config, save_checkpoint, weights_hash
from wavediff.models.factory import autoencoder_id, load_denoiser, load_preview
from wavediff.pipelines.preview import train_preview
from wavediff.studio.history import History
from wavediff.studio.jobs import Studio
from wavediff.training.diffusion import train_diffusion

TINY_PREVIEW = [
    "model.base_channels=2",
    "data.sample_size=1024",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "loss.fft_sizes=[256, 128, 64]",
    "loss.mel_fft_sizes=[256]",
    "loss.mel_bins=16",
    "train.steps=4",
    "train.checkpoint_every=2",
    "train.sample_every=2",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def preview(latent_pack, tmp_path_factory) -> Path:
    """A preview decoder trained 4 steps (in two runs of 2) on the latent pack's autoencoder and audio."""
    run = tmp_path_factory.mktemp("preview") / "run"
    first = train_preview(
        latent_pack["ae"], latent_pack["audio"], run, overrides=TINY_PREVIEW, max_steps=2, progress=False
    )
    assert read_config(first).step == 2
    train_preview(latent_pack["ae"], latent_pack["audio"], run, overrides=TINY_PREVIEW, progress=False)
    return run


@pytest.fixture(scope="module")
def denoiser(latent_pack, tmp_path_factory) -> Path:
    """A tiny denoiser trained on the latent pack's latents (so its autoencoder is the preview's)."""
    root = tmp_path_factory.mktemp("preview-denoiser")
    overrides = [f'data.path="{latent_pack["latents"]}"', f'autoencoder="{latent_pack["ae"]}"', *TINY_DENOISER]
    overrides += ["sampling.steps=2", "train.steps=2", "train.checkpoint_every=2", "train.sample_every=0"]
    train_diffusion(load_recipe("loops-tiny-cpu", DiffusionRecipe, overrides), root / "run", progress=False)
    return latest_checkpoint(root / "run")


def test_trains_resumes_and_records_its_autoencoder(preview: Path, latent_pack) -> None:
    last = latest_checkpoint(preview)
    config = read_config(last, "preview")
    assert config.step == 4 and (preview / "checkpoints" / "step-000002").is_dir()
    assert config.autoencoder.id == weights_hash(latent_pack["ae"])
    assert config.recipe.sample_rate == 8000
    decoder = load_preview(preview, weights_hash(latent_pack["ae"]))
    z = torch.randn(1, 4, 10)
    assert decoder.decode(z).shape == (1, 1, 80) and decoder.hop_length == 8


def test_a_loop_decoded_by_the_preview_wraps_without_a_seam(preview: Path, denoiser: Path) -> None:
    model = load_denoiser(denoiser, "cpu")
    decoder = load_preview(preview, autoencoder_id(denoiser))
    z = torch.randn(1, model.data_channels, 24)
    loop = model.decode(z, loop=True, decoder=decoder)
    shifted = model.decode(z.roll(7, -1), loop=True, decoder=decoder)
    # a loop has no start: decoding it turned is the decode turned, the wrap included
    torch.testing.assert_close(shifted, loop.roll(7 * model.hop_length, -1), atol=1e-5, rtol=1e-4)
    audio, info = generate(model, genre="techno", bpm=120.0, bars=1, seed=3, preview=decoder)
    assert info["preview"] is True and audio.shape[-1] == info["samples"]
    x = audio[0, 0].double()
    steps = x.diff().abs() / x.diff().abs().mean()
    assert seam_jump(audio[0])["wrap"] <= float(steps.quantile(0.99))


def test_an_autoencoder_it_was_not_trained_on_is_refused(preview: Path, latent_pack, tmp_path: Path, capsys) -> None:
    torch.manual_seed(1)
    cfg = AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4)
    other = tmp_path / "other-ae"
    recipe = to_dict(AERecipe(sample_rate=8000, model=cfg))
    save_checkpoint(other, 1, Autoencoder(cfg).state_dict(), {"kind": "autoencoder", "recipe": recipe})
    with pytest.raises(CheckpointError, match=f"trained on autoencoder {weights_hash(latent_pack['ae'])}"):
        load_preview(preview, autoencoder_id(other))
    with pytest.raises(CheckpointError, match="not a preview decoder"):
        load_preview(other, autoencoder_id(other))


def test_cli_trains_a_preview_and_generates_with_it(latent_pack, denoiser: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "preview"
    argv = ["train-preview", str(latent_pack["ae"]), str(latent_pack["audio"]), "--out", str(run), "--quiet"]
    assert main([*argv, *(a for o in TINY_PREVIEW[:-3] for a in ("--set", o)), "--max-steps", "1"]) == 0
    out = tmp_path / "loops"
    argv = ["generate", str(denoiser), "--genre", "techno", "--bpm", "120", "--bars", "1", "--preview", str(run)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    (written,) = out.glob("*.wav")
    assert load(written)[0].shape[-1] > 0
    capsys.readouterr()
    assert main([*argv[:-1], str(denoiser), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a preview decoder" in err


def test_the_studio_plays_the_preview_at_once_and_hands_out_the_full_decode(preview: Path, denoiser: Path, tmp_path):
    model = load_denoiser(denoiser, "cpu")
    studio = Studio(model, History(tmp_path, 10**8), {}, load_preview(preview, autoencoder_id(denoiser)))
    try:
        job = studio.submit("generate", {"genre": "techno", "bpm": 120, "bars": 1, "seed": 5, "steps": 2, "n": 1})
        assert job.done.wait(120) and job.state == "done", job.error
        (loop_id,) = job.loops
        assert studio.history.get(loop_id)["preview"] is True and studio.history.latent(loop_id) is not None
        heard = load(studio.history.wav(loop_id))[0]
        studio.full_decode(loop_id)
        record = studio.history.get(loop_id)
        assert record["preview"] is False and studio.history.latent(loop_id) is None
        assert record["seed"] == 5 and record["bpm"] == 120
        job = studio.submit("generate", {"genre": "techno", "bpm": 120, "bars": 1, "seed": 6, "steps": 2, "n": 1})
        assert job.done.wait(120) and job.state == "done", job.error
        varied = studio.submit("vary", {"source": job.loops[0], "strength": 0.5, "steps": 2, "seed": 1})
        assert varied.done.wait(120) and varied.state == "done", varied.error
        assert studio.history.get(job.loops[0])["preview"] is False  # varied from its full decode
    finally:
        studio.close()
    settings = dataclasses.replace(model.recipe.sampling, steps=2)
    full, _ = generate(model, genre="techno", bpm=120.0, bars=1, seed=5, settings=settings)
    exported = load(studio.history.wav(loop_id))[0]
    torch.testing.assert_close(exported, full[0], atol=1e-3, rtol=0)  # the loop the full decoder makes
    assert (exported - heard).abs().max() > 1e-2  # and not the preview's
