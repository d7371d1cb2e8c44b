"""`train_autoencoder` end to end: the real objective on real shards of the synthesized loop pack."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_recipes import tiny_ae_recipe

from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack
from wavediff.config import AELossConfig, AERecipe, AutoencoderConfig, DataConfig, TrainConfig, load_recipe, to_dict
from wavediff.errors import ConfigError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.models.factory import load_model
from wavediff.training.autoencoder import AutoencoderObjective, train_autoencoder

SR = 8000
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ae")
    synthesize_pack(root / "src", genres=["techno", "house"], loops_per_genre=1, sample_rate=SR, bars=1, seed=3)
    options = ShardOptions(sample_rate=SR, channels=1, workers=1, val_fraction=0.0)
    shard([root / "src"], root / "shards", options, progress=False)
    return root / "shards"


def tiny(shards: Path, **train) -> AERecipe:
    """A few-thousand-parameter autoencoder with every loss term on, the discriminator from step 2."""
    return AERecipe(
        sample_rate=SR,
        data=DataConfig(path=str(shards), sample_size=2048, batch_size=2, num_workers=0, shuffle_buffer=4),
        model=AutoencoderConfig(channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=4),
        loss=AELossConfig(
            fft_sizes=[512, 128, 32],
            mel_fft_sizes=[512],
            mel_bins=16,
            disc_channels=4,
            disc_fft_sizes=[256, 64],
            adversarial_start=2,
        ),
        train=TrainConfig(**{"steps": 10, "checkpoint_every": 5, "log_every": 5, "sample_every": 5, **train}),
    )


def test_resume_from_checkpoint_is_exact_and_logs_everything(shards: Path, tmp_path: Path) -> None:
    recipe = tiny(shards)
    straight = train_autoencoder(recipe, tmp_path / "straight", progress=False)
    half = train_autoencoder(recipe, tmp_path / "resumed", max_steps=5, progress=False)
    assert half.name == "step-000005"
    resumed = train_autoencoder(recipe, tmp_path / "resumed", progress=False)
    assert straight.name == resumed.name == "step-000010"
    # EMA export, and the trained autoencoder and discriminator in the Accelerate state
    for name in ("model.safetensors", "accelerate/model.safetensors", "accelerate/model_1.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    early, late = load_file(str(half / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert any(not torch.equal(early[k], late[k]) for k in early)  # the second half did train

    model = load_model(tmp_path / "resumed")
    assert isinstance(model, Autoencoder) and model.hop_length == 8
    assert json.loads((resumed / "config.json").read_text())["recipe"] == to_dict(recipe)

    events = EventAccumulator(str(tmp_path / "straight" / "logs")).Reload()
    tags = events.Tags()
    expected = {
        "loss/generator",
        "loss/discriminator",
        "ae/stft",
        "ae/mel",
        "ae/kl",
        "ae/adversarial",
        "ae/feature_matching",
        "ae/discriminator",
        "grad_norm/generator",
        "lr/discriminator",
        "eval/stft",
        "eval/mel",
        "eval/si_sdr",
        "perf/audio_seconds_per_second",
    }
    assert expected <= set(tags["scalars"])
    assert {"audio/input", "audio/reconstruction"} <= set(tags["audio"])
    assert {"spectrogram/input", "spectrogram/reconstruction"} <= set(tags["images"])
    assert [e.step for e in events.Scalars("ae/stft")] == [5, 10]


_CHILD = """
import sys, json
from wavediff.config import AERecipe, from_dict
from wavediff.training.autoencoder import train_autoencoder
print(train_autoencoder(from_dict(AERecipe, json.loads(sys.argv[1])), sys.argv[2], progress=False), flush=True)
"""


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_there(shards: Path, tmp_path: Path, capsys) -> None:
    recipe = tiny(shards, steps=10_000, checkpoint_every=3, sample_every=0)
    recipe = replace(recipe, data=replace(recipe.data, num_workers=1))  # the signal reaches a loader worker too
    run_dir = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(to_dict(recipe)), str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(run_dir) is None:
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
        os.killpg(child.pid, signal.SIGTERM)  # as SLURM does: the whole process group
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 0, err
    stopped = latest_checkpoint(run_dir)
    step = int(stopped.name.split("-")[1])
    # step 3 when the signal lands as the loader restarts after the first checkpoint (its worker
    # may die of the group signal before it can ignore it: the run still stops cleanly)
    assert step >= 3 and f"SIGTERM: saved the checkpoint at step {step}, stopping" in out
    assert out.strip().endswith(str(stopped))
    assert isinstance(load_model(stopped), Autoencoder)

    capsys.readouterr()
    done = train_autoencoder(recipe, run_dir, max_steps=step + 2, progress=False)
    assert done.name == f"step-{step + 2:06d}"
    assert f"resuming {stopped} at step {step}" in capsys.readouterr().out


def test_recipes_load_and_fit_their_models() -> None:
    tiny_cpu = load_recipe(RECIPES / "ae-tiny-cpu.toml", AERecipe)
    assert tiny_cpu.sample_rate == 16000 and tiny_cpu.train.cpu and tiny_cpu.train.mixed_precision == "no"
    AutoencoderObjective(tiny_cpu)  # the sample size fits every FFT size, the mel bins fit the filterbank

    big = load_recipe(RECIPES / "ae-44k-stereo.toml", AERecipe, ["data.path=/data/shards"])
    assert big.data.path == "/data/shards"
    assert (big.sample_rate, big.model.channels, big.model.latent_dim) == (44100, 2, 64)
    assert big.model.strides == [2, 4, 4, 8, 8] and big.model.base_channels == 128
    assert big.train.mixed_precision == "bf16" and big.loss.adversarial_start > 0
    assert big.train.optimizer.betas == [0.8, 0.99] and big.train.disc_optimizer.lr == 2 * big.train.optimizer.lr


def test_bad_settings_fail_before_training(shards: Path, tmp_path: Path) -> None:
    recipe = tiny(shards)
    stereo = replace(recipe, model=replace(recipe.model, channels=2))
    with pytest.raises(ConfigError, match=r"manifest.json: shards hold 1-channel audio but model.channels is 2"):
        train_autoencoder(stereo, tmp_path, progress=False)
    short = replace(recipe, data=replace(recipe.data, sample_size=256))
    with pytest.raises(ConfigError, match=r"data.sample_size 256 is shorter than the largest of loss.fft_sizes"):
        train_autoencoder(short, tmp_path, progress=False)
    assert latest_checkpoint(tmp_path) is None


def test_a_run_that_cannot_go_on_is_one_line_and_exit_1(shards: Path, tmp_path: Path, capsys) -> None:
    """Diverging training (non-finite losses step after step) ends the command with one line,
    not a traceback, and the checkpoints before it stay."""
    from wavediff.cli import main

    recipe = tmp_path / "diverge.toml"
    recipe.write_text(
        "\n".join(
            [
                'kind = "autoencoder"',
                f"sample_rate = {SR}",
                "[data]",
                f'path = "{shards}"',
                "sample_size = 2048",
                "batch_size = 2",
                "num_workers = 0",
                "[model]",
                "channels = 1",
                "base_channels = 4",
                "channel_mults = [1, 2]",
                "strides = [2, 4]",
                "latent_dim = 4",
                "[loss]",
                "fft_sizes = [512, 128]",
                "mel_fft_sizes = [512]",
                "mel_bins = 16",
                "adversarial_weight = 0.0",
                "feature_weight = 0.0",
                "[train]",
                "steps = 30",
                "cpu = true",
                "grad_clip = 0.0",
                "max_bad_steps = 2",
                "checkpoint_every = 1",
                "[train.optimizer]",
                "lr = 1e30",
            ]
        )
    )
    assert main(["train-ae", str(recipe), "--out", str(tmp_path / "run"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wavediff: training stopped:") and "Traceback" not in err
    assert latest_checkpoint(tmp_path / "run") is not None


def cli(recipe: Path, run_dir: Path, *args: str, preexec_fn=None) -> subprocess.Popen:
    """`wavediff train-ae RECIPE --out RUN` as a user starts it, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "wavediff.cli", "train-ae", str(recipe), "--out", str(run_dir), "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=preexec_fn,
    )


def wait_for_checkpoint(child: subprocess.Popen, run_dir: Path) -> Path:
    deadline = time.monotonic() + 120
    while (found := latest_checkpoint(run_dir)) is None:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    return found


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def recipe_file(shards: Path, tmp_path: Path) -> Path:
    """The shared tiny autoencoder recipe with a loader worker (6 steps, checkpoints at 3 and 6)."""
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_ae_recipe(SR, shards, num_workers=1))
    return path


def _small_files(limit: int):
    """A preexec_fn: files may not grow past `limit` bytes, so a save fails for real (EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an EFBIG error instead of the signal's core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_failed_save_with_loader_workers_alive_ends_the_run_at_once_in_one_line(recipe_file, tmp_path) -> None:
    """The checkpoint cannot be written (as on a full disk) while a loader worker, which ignores
    stop signals, runs: the command says so in one line and exits, its workers with it."""
    child = cli(recipe_file, tmp_path / "run", "--set", "train.steps=1000", preexec_fn=_small_files(64 * 1024))
    try:
        out, err = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"wavediff: error: {tmp_path / 'run' / 'checkpoints' / 'step-000003.tmp-'}")
    assert "could not save the checkpoint of step 3" in err and "no checkpoint was saved yet" in err
    assert group_gone(child.pid)  # no loader worker outlived the run
    assert not list((tmp_path / "run" / "checkpoints").iterdir())  # the staging folder was cleared


def handles(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler installed for `sig` (the SigCgt mask Linux shows)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_a_stop_signal_while_the_command_starts_stops_it_cleanly(recipe_file: Path, tmp_path: Path) -> None:
    """SIGUSR1 as soon as the command can take it, before torch has loaded (about 0.1 s here): a
    checkpoint at step 0 and exit 0, and the run resumes there."""
    child = cli(recipe_file, tmp_path / "run")
    started = time.monotonic()
    try:
        while not handles(child.pid, signal.SIGUSR1):
            assert time.monotonic() - started < 2, "no SIGUSR1 handler 2 s after the command started"
            time.sleep(0.002)
        assert "libtorch" not in Path(f"/proc/{child.pid}/maps").read_text()  # torch is still to load
        os.kill(child.pid, signal.SIGUSR1)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 0, err
    assert "SIGUSR1: saved the checkpoint at step 0, stopping" in out
    stopped = latest_checkpoint(tmp_path / "run")
    assert stopped.name == "step-000000" and isinstance(load_model(stopped), Autoencoder)
    resumed = train_autoencoder(load_recipe(recipe_file, AERecipe), tmp_path / "run", max_steps=1, progress=False)
    assert resumed.name == "step-000001"


@pytest.mark.slow
def test_a_second_run_on_a_run_folder_is_refused_and_a_killed_runs_folder_is_taken_over(
    recipe_file: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    first = cli(recipe_file, run_dir, "--set", "train.steps=100000")
    second = None
    try:
        wait_for_checkpoint(first, run_dir)
        second = cli(recipe_file, run_dir)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith(f"wavediff: error: {run_dir}: another run trains in this folder")
        assert f"(pid {first.pid} on {socket.gethostname()}" in err
        assert first.poll() is None  # the first run goes on
        # SLURM requeue after a node failure: the first run dies without a word (its loader
        # worker may outlive it a moment); the run started again takes the folder over
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        step = int(latest_checkpoint(run_dir).name.split("-")[1])
        again = cli(recipe_file, run_dir, "--set", "train.steps=100000", "--max-steps", str(step + 1))
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert f"pid {first.pid} on {socket.gethostname()}" in out and "taking over" in out
        assert latest_checkpoint(run_dir).name == f"step-{step + 1:06d}"
    finally:
        for child in (first, second):
            if child is not None and not group_gone(child.pid):
                os.killpg(child.pid, signal.SIGKILL)


def test_a_sigterm_between_checkpoints_resumes_bit_for_bit_with_loader_workers(
    shards: Path, tmp_path: Path, monkeypatch
) -> None:
    """SIGTERM while step 1 fetches (checkpoints at 4 and 6): stop at 2, resume, and end with the
    weights of the run that never stopped; a loader worker feeds both."""
    from wavediff.training import autoencoder

    recipe = tiny(shards, steps=6, checkpoint_every=4, sample_every=0)
    recipe = replace(recipe, data=replace(recipe.data, num_workers=1))
    straight = train_autoencoder(recipe, tmp_path / "straight", progress=False)

    real = autoencoder.shard_batches

    def signalling(*args, **kwargs):
        source = real(*args, **kwargs)

        def batches(seed, rank, world_size):
            for fetched, batch in enumerate(source(seed, rank, world_size)):
                if fetched == 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

        return batches

    monkeypatch.setattr(autoencoder, "shard_batches", signalling)
    assert train_autoencoder(recipe, tmp_path / "resumed", progress=False).name == "step-000002"
    monkeypatch.setattr(autoencoder, "shard_batches", real)
    resumed = train_autoencoder(recipe, tmp_path / "resumed", progress=False)
    assert straight.name == resumed.name == "step-000006"
    for name in ("model.safetensors", "accelerate/model.safetensors", "accelerate/model_1.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
