"""`wavediff generate / vary / interpolate / inpaint` on a real (tiny, briefly trained) denoiser checkpoint.

The checkpoint is copied out of its run and the autoencoder it was trained on is deleted, so
a run that works proves the checkpoint folder alone is enough.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_recipes import TINY_DENOISER

from wavediff.cli import main
from wavediff.config import DiffusionRecipe, load_recipe
from wavediff.io.audio import load, loop_samples, read_loop_info, save
from wavediff.models.checkpoint import latest_checkpoint, read_raw_config, read_weights, save_checkpoint
from wavediff.training.diffusion import train_diffusion

TINY = [
    *TINY_DENOISER,
    "sampling.steps=2",
    "train.steps=4",
    "train.checkpoint_every=4",
    "train.sample_every=0",
]
SETTINGS = {
    "genre",
    "bpm",
    "bars",
    "beats_per_bar",
    "seed",
    "steps",
    "sampler",
    "schedule",
    "rho",
    "cfg_scale",
    "circular",
    "samples",
    "seconds",
    "sample_rate",
    "frames",
    "stretch_cents",
    "checkpoint",
    "file",
}


@pytest.fixture(scope="module")
def ckpt(latent_pack, tmp_path_factory) -> Path:
    """A trained denoiser checkpoint folder, alone: its run and its autoencoder are gone."""
    root = tmp_path_factory.mktemp("generate-cli")
    ae = shutil.copytree(latent_pack["ae"], root / "ae")
    overrides = [f'data.path="{latent_pack["latents"]}"', f'autoencoder="{ae}"', *TINY]
    train_diffusion(load_recipe("loops-tiny-cpu", DiffusionRecipe, overrides), root / "run", progress=False)
    alone = shutil.copytree(latest_checkpoint(root / "run"), root / "elsewhere" / "my-denoiser")
    shutil.rmtree(root / "run")
    shutil.rmtree(ae)
    return alone


def test_generate_in_a_new_process_from_the_checkpoint_alone(ckpt, tmp_path):
    out = tmp_path / "loops"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wavediff.cli",
            "generate",
            str(ckpt),
            "--genre",
            "techno",
            "--bpm",
            "97.3",
            "--bars",
            "1",
            "--n",
            "2",
            "--seed",
            "7",
            "--cfg",
            "2.5",
            "--out",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in paths] == ["techno-97.3bpm-1bars-seed7.wav", "techno-97.3bpm-1bars-seed8.wav"]
    samples = loop_samples(97.3, 1, 8000)
    for path, seed in zip(paths, (7, 8)):
        wav, sr = load(path)
        assert sr == 8000 and wav.shape == (1, samples)
        loop = read_loop_info(path)
        assert loop is not None and loop.bpm == pytest.approx(97.3) and loop.beats == 4
        assert (loop.start, loop.end) == (0, samples)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert SETTINGS <= set(sidecar)
        assert sidecar["seed"] == seed and sidecar["cfg_scale"] == 2.5 and sidecar["steps"] == 2
        assert sidecar["samples"] == samples and sidecar["checkpoint"] == str(ckpt)


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_generate_writes_other_formats(ckpt, tmp_path, capsys, fmt):
    assert (
        main(
            [
                "generate",
                str(ckpt),
                "--bpm",
                "140",
                "--bars",
                "1",
                "--steps",
                "1",
                "--format",
                fmt,
                "--out",
                str(tmp_path),
                "-q",
            ]
        )
        == 0
    )
    path = Path(capsys.readouterr().out.strip())
    assert path.name == f"loop-140bpm-1bars-seed0.{fmt}"
    wav, sr = load(path)
    assert sr == 8000 and wav.shape == (1, loop_samples(140, 1, 8000))
    assert json.loads(path.with_suffix(".json").read_text())["file"] == path.name


def test_the_loop_mode_is_chosen_on_the_command_line_and_recorded(ckpt, tmp_path, capsys):
    made = {}
    for loops in (None, "wrap"):
        out = tmp_path / str(loops)
        flag = ["--loops", loops] if loops else []
        assert (
            main(["generate", str(ckpt), "--bpm", "140", "--bars", "1", "--steps", "2", *flag, "--out", str(out), "-q"])
            == 0
        )
        path = Path(capsys.readouterr().out.strip())
        made[loops] = (json.loads(path.with_suffix(".json").read_text())["loops"], load(path)[0])
    assert made[None][0] == "tile" and made["wrap"][0] == "wrap"
    assert made[None][1].shape == made["wrap"][1].shape and not torch.equal(made[None][1], made["wrap"][1])


@pytest.fixture()
def drums(ckpt, tmp_path) -> Path:
    """A 1-bar loop at 120 BPM, stereo at 16 kHz: the commands conform it to the model's 8 kHz mono."""
    t = torch.arange(32000) / 16000
    kick = torch.sin(2 * torch.pi * 60 * t) * torch.exp(-(t % 0.5) * 12)
    return save(tmp_path / "drums.wav", torch.stack([kick, kick * 0.8]) * 0.5, 16000)


def run(argv: list[str], capsys) -> list[Path]:
    assert main([*argv, "--steps", "2", "-q"]) == 0
    return [Path(line) for line in capsys.readouterr().out.split()]


def test_vary_command(ckpt, drums, tmp_path, capsys):
    paths = run(
        [
            "vary",
            str(ckpt),
            str(drums),
            "--strength",
            "0.5",
            "--n",
            "2",
            "--bpm",
            "120",
            "--bars",
            "1",
            "--genre",
            "dubstep",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert [p.name for p in paths] == ["drums-var-seed0.wav", "drums-var-seed1.wav"]
    assert load(paths[0])[0].shape == (1, 16000)
    assert read_loop_info(paths[0]).bpm == 120
    sidecar = json.loads(paths[1].with_suffix(".json").read_text())
    assert sidecar["strength"] == 0.5 and sidecar["input"] == str(drums) and sidecar["seed"] == 1


def test_interpolate_command(ckpt, drums, tmp_path, capsys):
    other = save(tmp_path / "hats.flac", torch.randn(1, 12000) * 0.1, 8000)
    paths = run(["interpolate", str(ckpt), str(drums), str(other), "--frames", "3", "--out", str(tmp_path)], capsys)
    assert [p.name for p in paths] == ["drums-to-hats-00.wav", "drums-to-hats-01.wav", "drums-to-hats-02.wav"]
    assert load(paths[1])[0].shape == (1, 12000)  # the shorter clip's length
    assert json.loads(paths[0].with_suffix(".json").read_text())["trimmed"] is True


def test_inpaint_command_continues_a_loop(ckpt, drums, tmp_path, capsys):
    paths = run(["inpaint", str(ckpt), str(drums), "--start", "1.5", "--end", "3", "--out", str(tmp_path)], capsys)
    assert [p.name for p in paths] == ["drums-inpaint-seed0.wav"]
    wav, _ = load(paths[0])
    original, _ = load(drums, 8000, 1)
    assert wav.shape == (1, 24000)
    torch.testing.assert_close(wav[:, :11000], original[:, :11000], atol=1e-4, rtol=0)  # 16-bit file: to a quantum


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["generate", "{ae}", "--bpm", "120"], "autoencoder checkpoint, not a denoiser"),
        (["generate", "{missing}", "--bpm", "120"], "missing"),
        (["generate", "{ckpt}", "--bpm", "0"], "bpm must be between"),
        (["generate", "{ckpt}", "--bpm", "120", "--sampler", "ddim"], "unknown sampler 'ddim'"),
        (["generate", "{ckpt}", "--bpm", "120", "--cfg", "nan"], "cfg scale must be a finite number, got nan"),
        (["generate", "{ckpt}", "--bpm", "120", "--cfg", "inf"], "cfg scale must be a finite number, got inf"),
        (["generate", "{ckpt}", "--bpm", "nan"], "bpm must be a finite number, got nan"),
        (["vary", "{ckpt}", "{drums}", "--strength", "nan"], "strength must be a finite number, got nan"),
        (["vary", "{ckpt}", "{drums}", "--strength", "0.5", "--bpm", "inf"], "bpm must be a finite number"),
        (["inpaint", "{ckpt}", "{drums}", "--start", "0.5", "--end", "inf"], "end must be a finite number, got inf"),
        (["inpaint", "{ckpt}", "{drums}", "--start", "nan", "--end", "1"], "start must be a finite number, got nan"),
        (["interpolate", "{ckpt}", "{drums}", "{drums}", "--frames", "2", "--cfg=-inf"], "cfg scale must be a finite"),
        (["generate", "{ckpt}", "--bpm", "120", "--lora", "{missing}", "--lora-scale", "nan"], "lora scale must be a"),
        (["generate", "{ckpt}", "--bpm", "120", "--bars", "1000"], "2000.0 s (1000 bars) is longer than one run"),
        (["generate", "{ckpt}", "--bpm", "120", "--bars", "1", "--n", "100000000"], "fit at once, so ask for fewer"),
        (["inpaint", "{ckpt}", "{drums}", "--start", "1", "--end", "100000"], "100000.0 s is longer than one run"),
        (["interpolate", "{ckpt}", "{drums}", "{drums}", "--frames", "1000000000"], "fit at once"),
        (["generate", "{ckpt}", "--bpm", "120", "--role", "bass"], "trained without role conditioning"),
        (["generate", "{ckpt}", "--bpm", "120", "--key", "H"], "unknown key 'H'; write a tonic"),
        (["vary", "{ckpt}", "{drums}", "--strength", "0.5", "--key", "A dorian"], "unknown key 'A dorian'"),
        (["inpaint", "{ckpt}", "{drums}", "--start", "0.5", "--end", "1", "--key", "X"], "unknown key 'X'"),
        (["interpolate", "{ckpt}", "{drums}", "{drums}", "--frames", "2", "--key", "H"], "unknown key 'H'"),
        (["generate", "{old}", "--bpm", "120", "--key", "Am"], "key 'Am': this model was trained without key"),
        (["generate", "{old}", "--bpm", "120", "--prompt", "techno"], "prompt: this model was trained without text"),
        (["generate", "{ckpt}", "--bpm", "120", "--prompt-cfg", "-1"], "prompt cfg scale must not be negative"),
        (["vary", "{ckpt}", "{garbage}", "--strength", "0.5"], "garbage.wav"),
        (["vary", "{ckpt}", "{drums}", "--strength", "0"], "strength must be in (0, 1]"),
        (["inpaint", "{ckpt}", "{drums}", "--start", "1", "--end", "0.5"], "0 ≤ start < end"),
        (["interpolate", "{ckpt}", "{drums}", "{drums}", "--frames", "1"], "frames must be at least 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ckpt, old_ckpt, latent_pack, drums, tmp_path, capsys, argv, expected):
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("not audio")
    paths = {"ckpt": ckpt, "ae": latent_pack["ae"], "missing": tmp_path / "missing", "garbage": garbage, "drums": drums}
    paths["old"] = old_ckpt
    assert main([a.format(**paths) for a in argv] + ["--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavediff: error:") and "\n" not in err
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_a_loop_too_large_for_free_memory_is_refused_naming_the_longest_that_fits(ckpt, tmp_path, capsys, monkeypatch):
    """On a machine with 64 MB free (the tiny model's 200 bars fit a real one), the refusal names
    the longest loop whose estimated peak fits, in whole bars, and one bar more would not."""
    from wavediff.generation import loops
    from wavediff.models.factory import load_denoiser

    free = 64 * 2**20
    monkeypatch.setattr(loops, "free_bytes", lambda device: free)
    assert main(["generate", str(ckpt), "--bpm", "120", "--bars", "200", "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavediff: error:") and "\n" not in err and not (tmp_path / "out").exists()
    bars = int(err.split("the longest that fits is ")[1].split("(")[1].split(" bar")[0])
    model = load_denoiser(ckpt)
    guided = model.recipe.sampling.cfg_scale != 1
    assert 1 <= bars < 200
    assert loops.peak_bytes(model, loops.loop_shape(model, 120, bars, True), 1, guided) <= free
    assert loops.peak_bytes(model, loops.loop_shape(model, 120, bars + 1, True), 1, guided) > free


@pytest.fixture(scope="module")
def old_ckpt(ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint as a checkpoint made before key and text conditioning: no `conditioning.key`,
    `conditioning.text` or `sampling.prompt_cfg_scale` in its config.json, no key embedding or key null
    in its weights."""
    config, state = read_raw_config(ckpt), read_weights(ckpt)
    for table, name in (("conditioning", "key"), ("conditioning", "text"), ("sampling", "prompt_cfg_scale")):
        del config["recipe"][table][name]
    del state["conditioner.key.weight"]
    state["conditioner.null"] = state["conditioner.null"][:3]  # genre, tempo, length
    return save_checkpoint(tmp_path_factory.mktemp("old-ckpt"), config["step"], state, config)


def test_generate_with_a_key_names_the_file_and_records_it(ckpt, tmp_path, capsys):
    argv = ["generate", str(ckpt), "--genre", "techno", "--bpm", "120", "--bars", "1", "--out", str(tmp_path)]
    [path] = run([*argv, "--key", "Gb minor"], capsys)
    assert path.name == "techno-120bpm-F#m-1bars-seed0.wav"
    assert json.loads(path.with_suffix(".json").read_text())["key"] == "F#m"
    [other] = run([*argv, "--key", "C"], capsys)
    [again] = run([*argv, "--key", "F#m"], capsys)  # the same key written otherwise: the same file, the same loop
    assert other.name == "techno-120bpm-C-1bars-seed0.wav" and again == path
    assert not torch.equal(load(other)[0], load(path)[0])


def test_vary_and_inpaint_take_a_key(ckpt, drums, tmp_path, capsys):
    [varied] = run(["vary", str(ckpt), str(drums), "--strength", "0.5", "--key", "Am", "--out", str(tmp_path)], capsys)
    [painted] = run(
        ["inpaint", str(ckpt), str(drums), "--start", "0.5", "--end", "1", "--key", "eb", "--out", str(tmp_path)],
        capsys,
    )
    assert json.loads(varied.with_suffix(".json").read_text())["key"] == "Am"
    assert json.loads(painted.with_suffix(".json").read_text())["key"] == "Eb"


def test_interpolate_takes_a_key(ckpt, drums, tmp_path, capsys):
    other = save(tmp_path / "hats.flac", torch.randn(1, 12000) * 0.1, 8000)
    argv = ["interpolate", str(ckpt), str(drums), str(other), "--frames", "2", "--genre", "techno"]
    plain = run([*argv, "--out", str(tmp_path / "plain")], capsys)
    keyed = run([*argv, "--key", "gb minor", "--out", str(tmp_path / "keyed")], capsys)
    assert json.loads(keyed[0].with_suffix(".json").read_text())["key"] == "F#m"
    assert not torch.equal(load(keyed[1])[0], load(plain[1])[0])


def test_a_checkpoint_from_before_key_conditioning_still_generates(old_ckpt, tmp_path, capsys):
    [path] = run(["generate", str(old_ckpt), "--bpm", "120", "--bars", "1", "--out", str(tmp_path)], capsys)
    assert path.name == "loop-120bpm-1bars-seed0.wav" and "key" not in json.loads(path.with_suffix(".json").read_text())
    assert torch.isfinite(load(path)[0]).all()


@pytest.fixture(scope="module")
def nan_ckpt(ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint with one U-Net weight set to NaN (as a diverged run leaves it), saved as a checkpoint."""
    config, state = read_raw_config(ckpt), read_weights(ckpt)
    state["unet.stem.weight"] = torch.full_like(state["unet.stem.weight"], float("nan"))
    return save_checkpoint(tmp_path_factory.mktemp("nan-ckpt"), config["step"], state, config)


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "{ckpt}", "--bpm", "120", "--bars", "1"],
        ["vary", "{ckpt}", "{drums}", "--strength", "0.5"],
        ["inpaint", "{ckpt}", "{drums}", "--start", "0.5", "--end", "1"],
    ],
)
def test_a_checkpoint_with_nan_weights_writes_nothing(nan_ckpt, drums, tmp_path, capsys, argv):
    out = tmp_path / "out"
    argv = [a.format(ckpt=nan_ckpt, drums=drums) for a in argv]
    assert main([*argv, "--steps", "1", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavediff: error:") and "\n" not in err
    assert "non-finite" in err and "unet.stem.weight" in err, err
    assert not out.exists()
