"""The `wavediff` command end to end through `main()`: the same functions the CLI calls."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wavediff.cli import main
from wavediff.shards.format import read_manifest


def test_synth_shard_inspect_round_trip(tmp_path, capsys):
    pack, shards = tmp_path / "pack", tmp_path / "shards"
    assert (
        main(
            [
                "data",
                "synth",
                str(pack),
                "--genres",
                "techno",
                "house",
                "--loops-per-genre",
                "2",
                "--sample-rate",
                "8000",
                "--bars",
                "1",
                "-q",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in pack.iterdir()) == ["house", "techno"]
    assert (
        main(
            [
                "data",
                "shard",
                str(pack),
                str(shards),
                "--sample-rate",
                "8000",
                "--channels",
                "1",
                "--workers",
                "1",
                "--val-fraction",
                "0",
                "-q",
            ]
        )
        == 0
    )
    manifest = read_manifest(shards)
    assert manifest.splits["train"].samples == 4
    assert manifest.genres == {"house": 2, "techno": 2}
    assert main(["data", "inspect", str(shards), "-q"]) == 0
    out = capsys.readouterr().out
    assert "house (2)" in out and "OK" in out


def test_inspect_fails_on_a_damaged_shard(tmp_path, capsys):
    pack, shards = tmp_path / "pack", tmp_path / "shards"
    main(
        [
            "data",
            "synth",
            str(pack),
            "--genres",
            "trap",
            "--loops-per-genre",
            "2",
            "--sample-rate",
            "8000",
            "--bars",
            "1",
            "-q",
        ]
    )
    main(
        [
            "data",
            "shard",
            str(pack),
            str(shards),
            "--sample-rate",
            "8000",
            "--workers",
            "1",
            "--val-fraction",
            "0",
            "-q",
        ]
    )
    tar = shards / "train-000000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    assert main(["data", "inspect", str(shards), "-q"]) == 1
    assert "train-000000.tar" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["data", "shard", "{missing}", "{out}", "-q"], "missing"),
        (["data", "shard", "{empty}", "{out}", "-q"], "empty"),
        (["data", "inspect", "{empty}", "-q"], "manifest"),
        (["data", "synth", "{out}", "--genres", "polka", "-q"], "polka"),
        (
            ["train", "loops-tiny-cpu", "--set", "train.optimizer.lr=nan", "--out", "{out}", "-q"],
            "'train.optimizer.lr' must be a finite number, got nan",
        ),
        (
            ["train-ae", "ae-tiny-cpu", "--set", "loss.kl_weight=inf", "--out", "{out}", "-q"],
            "'loss.kl_weight' must be a finite number, got inf",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path, capsys, argv, expected):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "out": tmp_path / "out"}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavediff: error:") and "\n" not in err
    assert expected in err


@pytest.mark.parametrize("option", [["--max-seconds", "inf"], ["--loudness", "nan"], ["--shard-size-mb", "inf"]])
def test_shard_options_must_be_finite(tmp_path, capsys, option):
    """The manifest records the options, and JSON has no NaN or infinity: refused before any work."""
    with pytest.raises(SystemExit) as exit:
        main(["data", "shard", str(tmp_path), str(tmp_path / "out"), *option, "-q"])
    assert exit.value.code == 2 and "must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "wavediff.cli", "data", "shard", "--help"], capture_output=True, text=True, check=True
    )
    assert "--val-fraction" in result.stdout


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """A user's mistake is one line and exit 2; anything else is a bug and must surface whole."""
    from wavediff import cli
    from wavediff.errors import ConfigError

    def mistake(args):
        raise ConfigError("demo.minutes: must be positive")

    def bug(args):
        raise ValueError("math domain error")  # a plain ValueError from our own code

    monkeypatch.setattr(cli, "cmd_demo", mistake)
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == "wavediff: error: demo.minutes: must be positive\n"
    monkeypatch.setattr(cli, "cmd_demo", bug)
    with pytest.raises(ValueError, match="math domain error"):
        cli.main(["demo"])


@pytest.mark.parametrize("command", ["reconstruct", "generate", "encode", "eval-ae"])
def test_an_unavailable_device_is_one_line(tmp_path, capsys, command):
    import torch

    from wavediff.config import AERecipe, AutoencoderConfig, to_dict
    from wavediff.models.autoencoder import Autoencoder
    from wavediff.models.checkpoint import save_checkpoint

    cfg = AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4)
    recipe = {"kind": "autoencoder", "recipe": to_dict(AERecipe(sample_rate=8000, model=cfg))}
    ckpt = save_checkpoint(tmp_path / "ae", 1, Autoencoder(cfg).state_dict(), recipe)
    missing = "cuda:7" if torch.cuda.device_count() < 8 else "cuda:99"
    argv = {
        "reconstruct": [str(ckpt), str(tmp_path / "in.wav"), str(tmp_path / "out.wav")],
        "generate": [str(ckpt), "--bpm", "120"],
        "encode": [str(ckpt), str(tmp_path), str(tmp_path / "latents")],
        "eval-ae": [str(ckpt), str(tmp_path)],
    }[command]
    assert main([command, *argv, "--device", missing, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wavediff: error: device {missing!r}: ") and "\n" not in err
