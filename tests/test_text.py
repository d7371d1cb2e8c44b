"""Text conditioning: the packaged MiniLM encoder (offline), training prompts composed from labels,
prompts on a real (tiny, briefly trained) denoiser, and guidance per condition kind."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_recipes import TINY_DENOISER

from wavediff.cli import main
from wavediff.config import DiffusionRecipe, SamplingConfig, load_recipe
from wavediff.errors import UserError
from wavediff.generation.generate import generate
from wavediff.generation.loops import loop_conditions
from wavediff.generation.samplers import Denoiser
from wavediff.io.audio import load
from wavediff.io.keys import KEYS
from wavediff.io.prompts import compose_prompt, reconcile
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.models.factory import load_denoiser
from wavediff.models.text import MAX_PROMPT_CHARS, TEXT_DIM, TEXT_TOKENS, check_prompt, encode_prompts
from wavediff.training.diffusion import train_diffusion

TEXT = ["conditioning.text=true", "model.cross_attention=true", "conditioning.key=true"]


def test_the_encoder_loads_with_no_network(tmp_path):
    """A fresh process with the hub offline and every proxy pointing at a closed port: any download fails."""
    dead = "http://127.0.0.1:9"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("HF_")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HTTP_PROXY": dead, "HTTPS_PROXY": dead}
    env |= {"http_proxy": dead, "https_proxy": dead, "OMP_NUM_THREADS": "1"}
    code = (
        "from wavediff.models.text import encode_prompts\n"
        "e, m = encode_prompts(['dark rolling techno, 303 bass, 132 bpm, F minor', None], 'cpu')\n"
        "print('x'.join(map(str, e.shape)), int(m[0].sum()), int(m[1].sum()), float(e[0, 0].abs().sum()) > 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    shape, real, none, nonzero = result.stdout.split()
    assert shape == f"2x{TEXT_TOKENS}x{TEXT_DIM}" and 10 < int(real) < 30 and none == "0"
    assert nonzero == "True"
    assert not (tmp_path / "hf").exists()  # nothing was fetched or cached


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "prompt is empty"),
        ("   \n ", "prompt is empty"),
        (42, "prompt must be text, got int"),
        (["techno"], "prompt must be text, got list"),
        ("techno\x00", "control characters"),
        ("techno " * 60, f"at most {MAX_PROMPT_CHARS} are read"),
        ("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3, "tokens long; at most 64"),
    ],
)
def test_a_malformed_prompt_is_a_one_line_error(prompt, message):
    with pytest.raises(UserError, match=message) as caught:
        check_prompt(prompt)
    assert "\n" not in str(caught.value)


def test_training_prompts_vary_and_keep_the_labels_true():
    meta = {
        "genre": "techno",
        "role": "bass",
        "tags": ["acid"],
        "source": "Techno/Acid Lines/squelch_line_128bpm_Am.wav",
    }
    full = compose_prompt(meta, 135.0, KEYS.index("Bbm"), None)  # labels as the loader hands them, transposed
    assert full == "techno, bass, acid, lines, squelch, line, 135 bpm, Bb minor"  # not the file name's 128 bpm or Am
    rng = random.Random(0)
    drawn = [compose_prompt(meta, 135.0, KEYS.index("Bbm"), rng) for _ in range(200)]
    assert len(set(drawn)) > 50  # orders and subsets
    lengths = {len(p.split(", ")) for p in drawn}
    assert 1 in lengths and max(lengths) >= 6  # short and long prompts
    assert all("128" not in p and "A minor" not in p for p in drawn)
    assert compose_prompt({}, 0.0, -1, rng) is None


def test_the_structured_value_wins_where_the_prompt_disagrees():
    genres = ["house", "techno"]
    prompt = "dark rolling techno, 303 bass, 132 bpm, F minor"
    assert (
        reconcile(prompt, genres=genres, genre="house", bpm=140, key="Gb minor", role="drums")
        == "dark rolling house, 303 drums, 140 bpm, F# minor"
    )
    assert reconcile(prompt, genres=genres, genre="techno", bpm=132, key="Fm", role="bass") == prompt  # agreeing


@pytest.fixture(scope="module")
def text_ckpt(latent_pack, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text-ckpt")
    overrides = [f'data.path="{latent_pack["latents"]}"', f'autoencoder="{latent_pack["ae"]}"', *TINY_DENOISER, *TEXT]
    overrides += ["sampling.steps=2", "train.steps=4", "train.checkpoint_every=4", "train.sample_every=0"]
    train_diffusion(load_recipe("loops-tiny-cpu", DiffusionRecipe, overrides), root / "run", progress=False)
    return shutil.copytree(latest_checkpoint(root / "run"), root / "denoiser")


def test_a_prompt_changes_the_output_deterministically_per_seed(text_ckpt):
    model = load_denoiser(text_ckpt, "cpu")

    def make(prompt, seed=0):
        return generate(model, genre="techno", bpm=120, bars=1, seed=seed, prompt=prompt)[0]

    a = make("acid techno, 303 bass")
    torch.testing.assert_close(make("acid techno, 303 bass"), a, rtol=0, atol=0)
    assert not torch.equal(make("warm pads, slow chords"), a)
    assert not torch.equal(make(None), a)
    assert not torch.equal(make("acid techno, 303 bass", seed=1), a)


def test_the_structured_genre_and_tempo_win_over_the_prompt_in_the_audio(text_ckpt):
    """`--genre techno --bpm 120 --prompt "dubstep loop, 140 bpm"` makes the very loop that the
    prompt "techno loop, 120 bpm" makes: the contradicting words never reach the encoder."""
    model = load_denoiser(text_ckpt, "cpu")

    def make(prompt):
        return generate(model, genre="techno", bpm=120, bars=1, seed=0, prompt=prompt)

    contradicting, info = make("dubstep loop, 140 bpm")
    agreeing, _ = make("techno loop, 120 bpm")
    torch.testing.assert_close(contradicting, agreeing, rtol=0, atol=0)
    assert info["prompt_read"] == "techno loop, 120 bpm"
    assert not torch.equal(make("dubstep loop")[0], contradicting)  # the words do steer where they do not contradict


def test_guidance_per_condition_composes_three_passes(text_ckpt):
    model = load_denoiser(text_ckpt, "cpu")
    cond = loop_conditions(model, "techno", 120.0, 1, 2, "cpu", key="Am", prompt="acid techno")
    x, sigma = torch.randn(2, model.data_channels, 32), torch.full((2,), 2.0)
    names = model.conditioner.names
    none, words = torch.ones(2, len(names), dtype=torch.bool), torch.zeros(2, len(names), dtype=torch.bool)
    words[:, names.index("text")] = True
    u = model.denoise(x, sigma, cond, none)
    s = model.denoise(x, sigma, cond, words)
    f = model.denoise(x, sigma, cond)
    for cfg, prompt_cfg in ((1.0, 1.0), (3.0, 1.0), (1.0, 5.0), (2.0, 4.0)):
        guided = Denoiser(model, cond, cfg, prompt_scale=prompt_cfg)(x, sigma)
        torch.testing.assert_close(guided, u + cfg * (s - u) + prompt_cfg * (f - s), atol=1e-5, rtol=1e-5)
    # A negative prompt stands in for "no prompt": f − s then points away from it.
    negative = encode_prompts(["noisy drums"], "cpu")
    with_negative = Denoiser(model, cond, 1.0, prompt_scale=3.0, negative=negative)(x, sigma)
    assert not torch.allclose(with_negative, Denoiser(model, cond, 1.0, prompt_scale=3.0)(x, sigma))


def test_prompt_commands_record_the_prompt(text_ckpt, tmp_path, capsys):
    argv = ["generate", str(text_ckpt), "--genre", "dubstep", "--bpm", "120", "--bars", "1", "--steps", "2", "-q"]
    argv += ["--prompt", "acid techno,  303 bass", "--negative-prompt", "vocals", "--prompt-cfg", "4"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    path = Path(capsys.readouterr().out.strip())
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["prompt"] == "acid techno,  303 bass" and sidecar["prompt_read"] == "acid dubstep, 303 bass"
    assert sidecar["negative_prompt"] == "vocals" and sidecar["prompt_cfg_scale"] == 4.0
    assert torch.isfinite(load(path)[0]).all()
    assert main(["generate", str(text_ckpt), "--bpm", "120", "--prompt", "", "--out", str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "wavediff: error: prompt is empty: describe the loop in words, or leave the prompt out"


def test_interpolate_takes_a_prompt_and_a_negative_prompt(text_ckpt, tmp_path, capsys):
    from wavediff.io.audio import save

    a = save(tmp_path / "a.wav", torch.randn(1, 8000) * 0.1, 8000)
    b = save(tmp_path / "b.wav", torch.randn(1, 8000) * 0.1, 8000)
    argv = ["interpolate", str(text_ckpt), str(a), str(b), "--frames", "2", "--genre", "dubstep", "--steps", "2", "-q"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    plain = [Path(p) for p in capsys.readouterr().out.split()]
    steered = [*argv, "--prompt", "techno, 303 bass", "--negative-prompt", "vocals", "--out", str(tmp_path / "steered")]
    assert main(steered) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    sidecar = json.loads(paths[0].with_suffix(".json").read_text())
    assert sidecar["prompt"] == "techno, 303 bass" and sidecar["negative_prompt"] == "vocals"
    assert sidecar["prompt_read"] == "dubstep, 303 bass"  # the structured genre wins
    assert not torch.equal(load(paths[1])[0], load(plain[1])[0])


def test_text_needs_cross_attention():
    from wavediff.errors import ConfigError
    from wavediff.models.diffusion import LoopDiffusion

    recipe = load_recipe(
        "loops-tiny-cpu", DiffusionRecipe, [*TINY_DENOISER, "conditioning.text=true", 'autoencoder=""']
    )
    recipe.channels, recipe.diffusion.sigma_data = 1, 1.0
    with pytest.raises(ConfigError, match="conditioning.text needs model.cross_attention"):
        LoopDiffusion(recipe)
    assert SamplingConfig().prompt_cfg_scale == 3.0
