"""Dance Diffusion checkpoints in wavediff: diffusers' UNet1DModel and Harmonai's original layout
(as stable-audio-tools carries it) give the same denoiser outputs after `wavediff import-dd`, and
the imported waveform denoiser generates, varies, interpolates and fine-tunes through the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference_packages import diffusers_fixture, stable_audio_tools_fixture  # noqa: F401 (fixtures)

from data_tools.synth import synthesize_pack
from wavediff.cli import main
from wavediff.errors import ConfigError
from wavediff.evaluation.loops import seam_jump
from wavediff.interop.dance import import_dance_diffusion
from wavediff.io.audio import load, save
from wavediff.models.checkpoint import read_config
from wavediff.models.factory import load_denoiser

# Dance Diffusion's shape (14 levels, 13 halvings, attention at the 6 deepest), at 1/16 of its widths.
TINY = [8, 8, 16, 16] + [32] * 10
FULL = [128, 128, 256, 256] + [512] * 10
DOWN = ["DownBlock1DNoSkip"] + ["DownBlock1D"] * 7 + ["AttnDownBlock1D"] * 5
UP = ["AttnUpBlock1D"] * 5 + ["UpBlock1D"] * 7 + ["UpBlock1DNoSkip"]


def unet1d(widths: list[int], seed: int = 0):
    """diffusers' UNet1DModel at a Dance Diffusion configuration, random weights (norms moved off 1/0)."""
    from diffusers import UNet1DModel

    torch.manual_seed(seed)
    model = UNet1DModel(
        sample_size=65536,
        sample_rate=16000,
        in_channels=2,
        out_channels=2,
        extra_in_channels=16,
        time_embedding_type="fourier",
        time_embedding_dim=16,
        flip_sin_to_cos=True,
        use_timestep_embedding=False,
        down_block_types=DOWN,
        up_block_types=UP,
        mid_block_type="UNetMidBlock1D",
        block_out_channels=widths[:13],
    ).eval()
    _move_norms(model)
    return model


def original(widths: list[int], seed: int):
    """Harmonai's DiffusionAttnUnet1D as stable-audio-tools 0.0.19 ships it (its own `use_snake`
    argument, which that release's ResConvBlock does not take, dropped); n_attn_layers=5 there is
    Dance Diffusion's 4 (stable-audio-tools counts from one level deeper)."""
    import stable_audio_tools.models.diffusion as sat

    block = sat.ResConvBlock
    torch.manual_seed(seed)
    saved, sat.ResConvBlock = sat.ResConvBlock, lambda *a, use_snake=False, **k: block(*a, **k)
    try:
        model = sat.DiffusionAttnUnet1D(io_channels=2, depth=14, n_attn_layers=5, channels=widths).eval()
    finally:
        sat.ResConvBlock = saved
    _move_norms(model)
    return model


def _move_norms(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)


def v_denoised(net, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Dance Diffusion's denoised estimate: x_t = cos·x0 + sin·ε is the input scaled by 1/√(σ²+1),
    t = atan(σ)·2/π, and x0 = cos·x_t − sin·v."""
    alpha, s = 1 / (sigma**2 + 1).sqrt(), sigma / (sigma**2 + 1).sqrt()
    x_t = x * alpha[:, None, None]
    v = net(x_t, torch.atan(sigma) * 2 / torch.pi)
    v = v.sample if hasattr(v, "sample") else v
    return alpha[:, None, None] * x_t - s[:, None, None] * v


def agreement(ref, run: Path, length: int, sigmas: tuple[float, ...] = (0.4, 3.0)) -> float:
    ours = load_denoiser(run, "cpu")
    x, sigma = torch.randn(len(sigmas), 2, length), torch.tensor(sigmas)
    with torch.no_grad():
        expected, got = v_denoised(ref, x, sigma), ours.denoise(x, sigma)
    assert expected.abs().max() > 0.1  # not vacuous
    return (got - expected).abs().max().item()


def test_diffusers_unet1d_gives_the_same_denoised_audio(diffusers, tmp_path):
    ref = unet1d(TINY)
    ref.save_pretrained(tmp_path / "dd" / "unet")  # a pipeline folder's unet/: config.json + safetensors
    import_dance_diffusion(tmp_path / "dd", tmp_path / "run")
    config = read_config(tmp_path / "run")
    assert config.recipe.sample_rate == 16000 and config.recipe.autoencoder == "" and config.recipe.channels == 2
    assert config.recipe.model.attention_levels == [8, 9, 10, 11, 12, 13] and config.recipe.diffusion.objective == "v"
    assert agreement(ref, tmp_path / "run", 3 * 8192, (3.0,)) <= 1e-4


def test_original_checkpoint_imports_its_ema_weights(stable_audio_tools, tmp_path, capsys):
    live, ema = original(TINY, seed=1), original(TINY, seed=2)
    state = {f"diffusion.{k}": v for k, v in live.state_dict().items()}
    state |= {f"diffusion_ema.{k}": v for k, v in ema.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 150000}, tmp_path / "honk-140k.ckpt")
    assert main(["import-dd", str(tmp_path / "honk-140k.ckpt"), str(tmp_path / "none")]) == 2
    assert "pass --sample-rate" in capsys.readouterr().err
    assert main(["import-dd", str(tmp_path / "honk-140k.ckpt"), str(tmp_path / "run"), "--sample-rate", "16000"]) == 0
    assert agreement(ema, tmp_path / "run", 3 * 8192, (0.5,)) <= 1e-5


@pytest.mark.slow  # minutes on 2 shared cores: two fine-tunes and six sampling runs at 16 kHz
def test_an_imported_dance_diffusion_model_runs_through_the_commands(diffusers, tmp_path, capsys):
    """generate, vary, interpolate and finetune (full and LoRA) on an imported (random) DD model."""
    unet1d(TINY).save_pretrained(tmp_path / "dd")
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["import-dd", str(tmp_path / "dd"), str(run), "-q"]) == 0
    capsys.readouterr()
    common = ["--steps", "2", "--out", str(out), "-q"]
    assert main(["generate", str(run), "--bpm", "120", "--bars", "1", *common]) == 0
    loop = Path(capsys.readouterr().out.split()[0])
    wav, sr = load(loop)
    assert sr == 16000 and wav.shape == (2, 32000) and wav.abs().max() > 0
    clip = save(tmp_path / "clip.wav", 0.1 * torch.randn(2, 20000), 16000)
    assert main(["vary", str(run), str(clip), "--strength", "0.5", *common]) == 0
    assert main(["interpolate", str(run), str(clip), str(loop), "--frames", "3", *common]) == 0
    assert main(["inpaint", str(run), str(clip), "--start", "0.5", "--end", "1", *common]) == 0
    capsys.readouterr()
    # its network cannot wrap, but a loop denoised tiled never asks it to: a seamless loop either way but wrap
    assert main(["generate", str(run), "--bpm", "120", "--bars", "1", "--circular", *common]) == 0
    looped, _ = load(Path(capsys.readouterr().out.split()[0]))
    steps = looped.mean(0).diff().abs()
    assert looped.shape == (2, 32000) and seam_jump(looped)["wrap"] <= float(steps.quantile(0.99) / steps.mean())
    assert main(["generate", str(run), "--bpm", "120", "--bars", "1", "--circular", "--loops", "wrap", *common]) == 2
    assert "cannot wrap" in capsys.readouterr().err
    synthesize_pack(tmp_path / "pack", genres=["house"], loops_per_genre=4, sample_rate=16000, bars=1, seed=1)
    small = ["data.sample_size=8192", "data.batch_size=2", "data.num_workers=0", "train.sample_every=0"]
    small += ["finetune.val_examples=2", "finetune.val_repeats=1", "finetune.val_fraction=0.5"]
    for extra in ([], ["--lora", "4"]):
        tuned = tmp_path / f"tuned{len(extra)}"
        args = ["finetune", str(run), str(tmp_path / "pack"), "--steps", "2", "--out", str(tuned), "-q"]
        assert main([*args, *extra, *(a for s in small for a in ("--set", s))]) == 0
    merged = tmp_path / "merged"
    assert main(["merge-lora", str(run), str(tmp_path / "tuned2"), str(merged), "-q"]) == 0
    assert main(["generate", str(merged), "--bpm", "120", "--bars", "1", *common]) == 0
    assert json.loads(next(out.glob("*.json")).read_text())


def test_a_dance_diffusion_network_refuses_what_it_cannot_do():
    from wavediff.config import UNetConfig
    from wavediff.models.dance import DanceUNet1D

    cfg = UNetConfig(architecture="dance-diffusion", base_channels=8, channel_mults=[1, 1, 2], attention_levels=[])
    cfg.padding = "zeros"
    with pytest.raises(ConfigError, match="takes no conditioning"):
        DanceUNet1D(cfg, 2, cond_dim=16)
    with pytest.raises(ConfigError, match="cannot wrap"):
        DanceUNet1D(cfg, 2)(torch.zeros(1, 2, 64), torch.zeros(1), circular=True)
    cfg.dropout = 0.1
    with pytest.raises(ConfigError, match="model.dropout"):
        DanceUNet1D(cfg, 2)


@pytest.mark.slow
def test_dance_diffusion_at_its_published_size_agrees_with_diffusers(diffusers, tmp_path):
    ref = unet1d(FULL)
    ref.save_pretrained(tmp_path / "dd")
    import_dance_diffusion(tmp_path / "dd", tmp_path / "run")
    assert agreement(ref, tmp_path / "run", 3 * 8192, (1.0,)) <= 1e-4  # the shortest input it takes
