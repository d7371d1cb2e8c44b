"""The README's main job, end to end, with short training budgets."""

from __future__ import annotations

import json

import pytest

from data_tools.synth import GENRES
from wavediff.config import DataConfig
from wavediff.errors import UserError
from wavediff.io.audio import load, read_loop_info
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.pipelines.demo import run_demo
from wavediff.shards.format import read_manifest
from wavediff.shards.loader import make_loader


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    out = run_demo(tmp_path / "demo", ae_steps=12, denoiser_steps=12, progress=False)
    first = capsys.readouterr().out
    assert "MR-STFT" in first
    ckpt = latest_checkpoint(out / "ae")
    assert json.loads((ckpt / "config.json").read_text())["step"] == 12
    quality = json.loads((out / "ae-eval.json").read_text())
    assert quality["samples"] > 0 and all(q == q for q in (quality["stft"], quality["mel"], quality["si_sdr"]))
    batch = next(
        iter(
            make_loader(
                DataConfig(path=str(out / "latents"), sample_size=64, batch_size=2, num_workers=0),
                "train",
                kind="latent",
            )
        )
    )
    assert batch["latent"].shape == (2, 16, 64)
    assert len(list((out / "reconstructions").iterdir())) == 1

    loops = sorted((out / "loops").glob("*.wav"))
    assert [p.name.split("-")[0] for p in loops] == ["breakbeat", "drum", "dubstep", "house", "techno", "trap"]
    for path in loops:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        wav, sr = load(path)
        assert wav.shape[-1] == round(sidecar["bars"] * 4 * 60 / sidecar["bpm"] * sr) and sr == 16000
        assert read_loop_info(path).bpm == pytest.approx(sidecar["bpm"])
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["overall"]["clips"]["generated"] == 12 and sorted(report["genres"]) == sorted(GENRES)
    assert (out / "eval" / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    assert "overall" in first and "genre" in first  # the closing table

    run_demo(out, ae_steps=12, denoiser_steps=12, progress=False)  # a second run reuses what is done
    again = capsys.readouterr().out
    assert "shards already in" in again and "autoencoder already trained" in again
    assert "latents already in" in again
    assert "denoiser already trained" in again and "training a genre classifier" not in again


@pytest.mark.slow
def test_the_44k_demo_runs_every_stage_in_stereo(tmp_path, capsys):
    out = run_demo(tmp_path / "demo", ae_steps=4, denoiser_steps=4, progress=False, quality="44k")
    first = capsys.readouterr().out
    assert "training the ae-44k-cpu autoencoder" in first and "training the loops-44k-cpu denoiser" in first
    assert read_manifest(out / "shards").sample_rate == 44100 and read_manifest(out / "shards").channels == 2
    assert read_manifest(out / "latents", "latent").latent_dim == 32
    loops = sorted((out / "loops").glob("*.wav"))
    assert len(loops) == len(GENRES)
    wav, sr = load(loops[0])
    assert sr == 44100 and wav.shape[0] == 2
    assert json.loads((out / "eval" / "report.json").read_text())["overall"]["clips"]["generated"] == 12


def test_an_unknown_quality_is_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown demo quality '8k': choose one of 16k, 44k"):
        run_demo(tmp_path / "demo", quality="8k", progress=False)


def test_a_training_stage_that_stops_early_stops_the_demo(tmp_path, capsys):
    """A stop signal makes the engine save and return normally; the demo must not go on
    to encode or generate with a half-trained model."""
    from wavediff.pipelines.demo import _training_stage

    calls = []
    assert _training_stage("autoencoder", "ae-tiny-cpu", tmp_path / "ae", 5, lambda: calls.append(1)) is None
    assert calls == [1] and "stopped before step 5; run the demo again to resume" in capsys.readouterr().out


@pytest.mark.slow
def test_the_demo_on_recorded_sounds_conditions_and_judges_roles(tmp_path):
    """The sample pack names each loop's role, so its demo trains the denoiser on role too and judges
    loops made from "<genre> <role> loop" prompts with a role classifier beside the genre one."""
    from data_tools import sample_pack

    if (missing := sample_pack.missing_packages()) is not None:
        pytest.skip(missing)
    out = run_demo(tmp_path / "demo", ae_steps=8, denoiser_steps=8, pack="samples", progress=False)
    denoiser = json.loads((latest_checkpoint(out / "denoiser") / "config.json").read_text())
    assert denoiser["recipe"]["conditioning"]["role"] is True
    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report["role_classifier"]["genres"]) <= set(sample_pack.ROLES)  # its classes are roles
    assert report["prompt_adherence"]["judged"] == ["genre", "role"]
    assert 0 <= report["prompt_adherence"]["genre_and_role"] <= 1
