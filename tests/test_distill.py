"""`wavediff distill` end to end on a tiny teacher: a loadable few-step student whose checkpoint says
so, generate / vary / inpaint on it with no flags, seamless loops of exact length, resume after
SIGTERM, one-line errors for bad inputs, and (slow) a student that gets closer to its teacher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from test_train_diffusion import tiny

from wavediff.cli import main
from wavediff.evaluation.loops import seam_jump
from wavediff.evaluation.suite import evaluate_model
from wavediff.generation.generate import generate, inpaint, vary
from wavediff.generation.loops import loop_conditions
from wavediff.generation.samplers import Denoiser, run_sampler, seeded_noise, sigmas_for
from wavediff.models.checkpoint import latest_checkpoint, read_config, read_weights, weights_hash
from wavediff.models.factory import load_denoiser
from wavediff.pipelines.distill import distill
from wavediff.training.diffusion import train_diffusion

# The recipe by path: the shared environment's `wavediff.recipes` is another checkout's folder.
RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "distill-cpu.toml")
SMALL = [
    "data.sample_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "train.checkpoint_every=2",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def setup(latent_pack, tmp_path_factory):
    """A teacher trained a few steps on the latent pack, and a 4-step student distilled from it for 4 steps."""
    root = tmp_path_factory.mktemp("distill")
    train_diffusion(
        tiny(latent_pack, "train.steps=3", "train.checkpoint_every=3", "train.sample_every=0"),
        root / "teacher",
        progress=False,
    )
    student = distill(
        root / "teacher",
        steps=4,
        out=root / "student",
        overrides=[*SMALL, "train.steps=4"],
        recipe=RECIPE,
        progress=False,
    )
    return {"root": root, "teacher": root / "teacher", "student": student, "pack": latent_pack}


def test_the_student_is_a_loadable_denoiser_whose_config_says_few_step(setup):
    teacher, student = latest_checkpoint(setup["teacher"]), setup["student"]
    assert student.name == "step-000004"
    config = read_config(student, "diffusion")
    sampling = config.recipe.sampling
    assert (sampling.steps, sampling.distilled_steps, sampling.cfg_scale, sampling.sampler) == (4, 4, 1.0, "euler")
    assert config.distilled.hash == weights_hash(teacher) and config.distilled.steps == 4
    assert config.distilled.method == "progressive" and config.distilled.cfg_scale == 3.0
    assert config.autoencoder.id == read_config(teacher).autoencoder.id  # the teacher's, embedded
    assert config.recipe.data.path == str(setup["pack"]["latents"])  # the teacher's own shards by default
    model = load_denoiser(student, "cpu")
    assert model.recipe.conditioning == read_config(teacher).recipe.conditioning
    trained, start = read_weights(student), read_weights(teacher)
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith("unet."))


def test_generate_uses_the_students_steps_and_no_guidance_without_flags(setup, tmp_path, capsys):
    out = tmp_path / "loops"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the student's own settings warn about nothing
        assert main(["generate", str(setup["student"]), "--bpm", "140", "--bars", "1", "--out", str(out), "-q"]) == 0
    info = json.loads(next(out.glob("*.json")).read_text())
    assert (info["steps"], info["cfg_scale"], info["sampler"]) == (4, 1.0, "euler")
    assert info["model_evaluations"] == 4  # one pass of batch 1 per step: no guidance pass
    teacher = load_denoiser(setup["teacher"], "cpu")
    _, teacher_info = generate(teacher, genre="techno", bpm=140, bars=1)
    assert teacher_info["cfg_scale"] == 3.0 and teacher_info["steps"] == teacher.recipe.sampling.steps
    with pytest.warns(UserWarning, match="distilled to sample in 4 steps"):
        main(["generate", str(setup["student"]), "--bpm", "140", "--bars", "1", "--steps", "6", "--out", str(out)])


def test_eval_judges_the_student_at_its_own_settings(setup):
    report = evaluate_model(setup["student"], setup["pack"]["audio"], n=2)
    assert (report["settings"]["steps"], report["settings"]["cfg_scale"]) == (4, 1.0)


@pytest.mark.parametrize("bpm,bars", [(140, 1), (97.5, 2)])
def test_the_students_loops_are_seamless_and_exactly_their_bars_long(setup, bpm, bars):
    model = load_denoiser(setup["student"], "cpu")
    audio, info = generate(model, genre="dubstep", bpm=bpm, bars=bars, n=2, seed=5)
    assert info["circular"] and info["steps"] == 4
    assert audio.shape[-1] == info["samples"] == round(bars * 4 * 60 / bpm * model.sample_rate)
    assert torch.isfinite(audio).all()
    for loop in audio:
        assert seam_jump(loop)["wrap"] <= float(loop.mean(0).diff().abs().max() / loop.mean(0).diff().abs().mean())


def test_a_students_loop_has_no_special_wrap_point(setup):
    """Rolling the start noise by whole U-Net factors rolls the student's loop: the wrap is like any other point."""
    m = load_denoiser(setup["student"], "cpu")
    settings = m.recipe.sampling
    sigmas = sigmas_for(m, settings, "cpu")
    k, frames = 3 * m.factor, 8 * m.factor
    x = seeded_noise((m.data_channels, frames), [0], "cpu") * sigmas[0]
    latent, rolled = (  # unconditional: a tempo clock starts at frame 0, so it moves with no roll
        run_sampler(Denoiser(m, None, 1.0, circular=True, tile=False), start, sigmas, settings, [0])
        for start in (x, x.roll(k, -1))
    )
    torch.testing.assert_close(rolled, latent.roll(k, -1), rtol=1e-4, atol=1e-4)


def test_vary_and_inpaint_run_on_the_student(setup):
    model = load_denoiser(setup["student"], "cpu")
    clip, _ = generate(model, genre="techno", bpm=120, bars=1, seed=1)
    varied, info = vary(model, clip[0], model.sample_rate, strength=0.5)
    assert varied.shape == clip.shape and info["steps"] == 4 and info["cfg_scale"] == 1.0
    assert info["model_evaluations"] == 2  # the last half of the 4-step schedule
    filled, info = inpaint(model, clip[0], model.sample_rate, start=0.5, end=1.0)
    assert filled.shape == clip.shape and info["model_evaluations"] == 4
    assert torch.equal(filled[0, :, : round(0.49 * model.sample_rate)], clip[0, :, : round(0.49 * model.sample_rate)])


def test_distillation_resumes_where_it_stopped(setup, capsys):
    run = setup["root"] / "resumed"
    overrides = [*SMALL, "train.steps=4"]
    distill(setup["teacher"], steps=8, out=run, overrides=overrides, max_steps=2, recipe=RECIPE, progress=False)
    assert latest_checkpoint(run).name == "step-000002"
    last = distill(setup["teacher"], steps=8, out=run, overrides=overrides, recipe=RECIPE, progress=False)
    assert last.name == "step-000004" and "resuming" in capsys.readouterr().out
    assert read_config(last).recipe.sampling.steps == 8


_CHILD = """
import sys
from wavediff.pipelines.distill import distill
print(distill(sys.argv[1], steps=4, out=sys.argv[2], recipe=sys.argv[3], overrides=sys.argv[4:], progress=False))
"""


def test_sigterm_saves_a_checkpoint_and_the_distillation_resumes_there(setup, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [*SMALL, "train.steps=10000", "train.checkpoint_every=1000"]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(setup["teacher"]), str(run), RECIPE, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not list(run.glob("logs/events.*")):  # the logger opens as training starts
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "no training within 120 s"
            time.sleep(0.1)
        time.sleep(1.0)  # a few steps in
        os.killpg(child.pid, signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 0, err
    stopped = latest_checkpoint(run)
    step = int(stopped.name.split("-")[1])
    assert step >= 1 and f"SIGTERM: saved the checkpoint at step {step}, stopping" in out
    assert read_config(stopped).distilled.steps == 4
    capsys.readouterr()
    done = distill(
        setup["teacher"], steps=4, out=run, overrides=overrides, max_steps=step + 2, recipe=RECIPE, progress=False
    )
    assert done.name == f"step-{step + 2:06d}" and f"resuming {stopped} at step {step}" in capsys.readouterr().out


def test_bad_inputs_give_one_line_errors(setup, tmp_path, capsys):
    teacher, student = str(setup["teacher"]), str(setup["student"])
    out = str(tmp_path / "x")
    recipe = ["--recipe", RECIPE]
    cases = [
        (["distill", str(setup["pack"]["ae"]), "--out", out], "an autoencoder checkpoint, not a denoiser"),
        (["distill", teacher, "--steps", "5", "--out", out], "--steps must be one of 4, 8, got 5"),
        (["distill", teacher, "--data", str(tmp_path / "nowhere"), "--out", out], "nowhere: no shards here"),
        (["distill", student, "--out", out], "already a 4-step student"),
        (["distill", str(tmp_path / "missing"), "--out", out], "missing: no such checkpoint"),
        (["distill", teacher, "--data", str(setup["pack"]["audio"]), "--out", out], "manifest.json"),
    ]
    for argv, expected in cases:
        assert main([*argv, *recipe]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("wavediff: error: ") and len(err.splitlines()) == 1, err
        assert expected in err, (expected, err)
    assert not (tmp_path / "x").exists()


def _few_step_error(model, teacher, cond, noise, steps: int) -> float:
    """Mean squared distance of a one-pass `steps`-step Euler sample from the guided teacher's 50-step one."""
    settings = model.recipe.sampling
    sigmas = sigmas_for(model, settings, "cpu")
    fast = run_sampler(Denoiser(model, cond, 1.0, True), noise * sigmas[0], sigmas, settings, [0])
    slow_settings = teacher.recipe.sampling
    slow_sigmas = sigmas_for(teacher, slow_settings, "cpu")
    slow = run_sampler(Denoiser(teacher, cond, 3.0, True), noise * slow_sigmas[0], slow_sigmas, slow_settings, [0])
    assert steps == len(sigmas) - 1
    return float((fast - slow).pow(2).mean())


@pytest.mark.slow
def test_distillation_brings_the_few_step_student_closer_to_the_guided_teacher(setup, tmp_path):
    """The undistilled start (the teacher at 4 Euler steps without guidance) against the student after
    training, both measured against the teacher's own 50-step guided loops from the same noise."""
    root = tmp_path
    train_diffusion(
        tiny(setup["pack"], "train.steps=60", "train.checkpoint_every=60", "train.sample_every=0", "sampling.steps=50"),
        root / "teacher",
        progress=False,
    )
    teacher = load_denoiser(root / "teacher", "cpu")
    overrides = [*SMALL, "train.steps=150", "train.checkpoint_every=150", "train.optimizer.lr=1e-3"]
    student = load_denoiser(
        distill(root / "teacher", steps=4, out=root / "s", overrides=overrides, recipe=RECIPE, progress=False)
    )
    start = load_denoiser(root / "teacher", "cpu")
    start.recipe = student.recipe  # the undistilled initialisation, sampled as the student is
    frames, seeds = 64, list(range(8))
    noise = seeded_noise((teacher.data_channels, frames), seeds, "cpu")
    cond = loop_conditions(teacher, "techno", 140.0, 1, len(seeds), "cpu")
    before = _few_step_error(start, teacher, cond, noise, 4)
    after = _few_step_error(student, teacher, cond, noise, 4)
    assert after < 0.7 * before, (before, after)
