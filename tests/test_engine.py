"""The shared training engine, driven by a small real objective (a two-layer net) on in-memory data."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from wavediff.config import OptimizerConfig, TrainConfig
from wavediff.errors import CheckpointError, ConfigError, UserError
from wavediff.evaluation.images import spectrogram_image
from wavediff.models.checkpoint import latest_checkpoint, read_raw_config, read_weights
from wavediff.training.engine import TrainingError, lr_at, train

SR = 8000


class Toy:
    """Regress y = Σx with a tiny MLP; hooks to go non-finite or raise a signal at chosen steps."""

    kind = "toy"
    exported = "net"
    sample_rate = SR

    def __init__(
        self,
        opt: OptimizerConfig,
        nan_steps=(),
        signal_at: int | None = None,
        noise: float = 0.0,
        sig: signal.Signals = signal.SIGUSR1,
    ):
        self.opt, self.nan_steps, self.signal_at, self.noise, self.sig = opt, set(nan_steps), signal_at, noise, sig
        self.calls: list[int] = []

    def build(self) -> Toy:
        """Called by the engine after it seeds, so every run starts from the same weights."""
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        return self

    def networks(self):
        return {"net": self.net}

    def optimizers(self):
        return {"toy": ("net", self.opt)}

    def to(self, device):
        pass

    def optimizer_for(self, step):
        return "toy"

    def loss(self, optimizer, nets, batch, step):
        self.calls.append(step)
        pred = nets["net"](batch["x"]) + self.noise * torch.randn(batch["x"].shape[0], 1)
        loss = (pred - batch["y"]).pow(2).mean()
        if step in self.nan_steps:
            loss = loss * float("nan")
        if step == self.signal_at:
            os.kill(os.getpid(), self.sig)
        return loss, {"toy/mse": loss.detach()}

    def batch_seconds(self, batch):
        return 0.5 * batch["x"].shape[0]

    def examples(self, model, batch):
        tone = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(2048) / SR)
        return {"tone": torch.stack([tone, -tone])}, {"mean": float(model(batch["x"]).mean())}

    def checkpoint_config(self):
        return {"kind": "toy", "recipe": {"width": 8}}


def batches(batch_size: int):
    """An endless stream of (x, y); one sample at a time, so the stream is the same whatever the batch size."""

    def make(seed: int, rank: int, world_size: int):
        gen = torch.Generator().manual_seed(seed)
        while True:
            x = torch.stack([torch.randn(4, generator=gen) for _ in range(batch_size)])
            yield {"x": x, "y": x.sum(1, keepdim=True)}

    return make


def cfg(**kw) -> TrainConfig:
    base = dict(steps=6, checkpoint_every=3, log_every=1, sample_every=0, keep_last=5, grad_clip=1.0)
    return TrainConfig(**{**base, **kw})


def run(run_dir: Path, toy: Toy, train_cfg: TrainConfig, batch_size: int = 2, **kw) -> Path:
    return train(toy.build, batches(batch_size), train_cfg, run_dir, batch_size=batch_size, progress=False, **kw)


def opt(**kw) -> OptimizerConfig:
    return OptimizerConfig(**{"lr": 1e-2, "betas": [0.9, 0.99], "weight_decay": 0.0, **kw})


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """The trained (not EMA) weights, from the Accelerate state."""
    return load_file(str(ckpt / "accelerate" / "model.safetensors"))


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(run_dir / "logs")).Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_lr_schedule_warms_up_and_decays() -> None:
    warm = opt(lr=1.0, warmup_steps=4, schedule="cosine")
    assert [lr_at(warm, s, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(warm, 12, 20) == pytest.approx(0.5)
    assert lr_at(warm, 20, 20) == pytest.approx(0.0)
    assert lr_at(opt(lr=1.0, warmup_steps=4, schedule="inverse_sqrt"), 15, 20) == pytest.approx(0.5)
    assert lr_at(opt(lr=2.0), 999, 20) == 2.0


def test_grad_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    toy = Toy(opt(warmup_steps=8))
    ckpt = run(tmp_path / "accum", toy, cfg(steps=4, grad_accum=3, checkpoint_every=10))
    assert toy.calls == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ckpt.name == "step-000004"
    engine = json.loads((ckpt / "accelerate" / "engine.json").read_text())
    assert engine["step"] == 4 and engine["ema"]["last_epoch"] == 4
    # the warm-up advanced once per optimizer step: step 4 used lr × 4/8, not the full lr
    assert scalars(tmp_path / "accum")["lr/toy"][4] == pytest.approx(1e-2 * 4 / 8)


def test_accumulated_micro_batches_equal_one_big_batch(tmp_path: Path) -> None:
    accumulated = run(tmp_path / "a", Toy(opt()), cfg(steps=3, grad_accum=2), batch_size=2)
    whole = run(tmp_path / "b", Toy(opt()), cfg(steps=3, grad_accum=1), batch_size=4)
    a, b = weights(accumulated), weights(whole)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    first = weights(run(tmp_path / "c", Toy(opt()), cfg(steps=1, grad_accum=1), batch_size=4))
    assert not torch.allclose(first["0.weight"], b["0.weight"])  # and three steps did move the weights


def test_resume_is_exact_with_accumulation_and_noise(tmp_path: Path) -> None:
    settings = cfg(steps=6, grad_accum=2, checkpoint_every=3)
    straight = run(tmp_path / "straight", Toy(opt(warmup_steps=3, schedule="cosine"), noise=0.1), settings)
    run(tmp_path / "resumed", Toy(opt(warmup_steps=3, schedule="cosine"), noise=0.1), settings, max_steps=3)
    second = Toy(opt(warmup_steps=3, schedule="cosine"), noise=0.1)
    resumed = run(tmp_path / "resumed", second, settings)
    assert second.calls == [3, 3, 4, 4, 5, 5]
    for name in ("model.safetensors", "accelerate/model.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_signal_saves_at_end_of_step_and_resume_continues(tmp_path: Path) -> None:
    stopped = run(tmp_path, Toy(opt(), signal_at=3), cfg(steps=100, checkpoint_every=50))
    assert stopped.name == "step-000004"  # step 3 finished, then the checkpoint
    assert latest_checkpoint(tmp_path) == stopped
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored
    again = Toy(opt())
    done = run(tmp_path, again, cfg(steps=6, checkpoint_every=50))
    assert again.calls == [4, 5]
    assert done.name == "step-000006"


def test_non_finite_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    ckpt = run(tmp_path, Toy(opt(), nan_steps={2, 3}), cfg(steps=5, checkpoint_every=1))
    before, after = weights(tmp_path / "checkpoints" / "step-000002"), weights(tmp_path / "checkpoints" / "step-000004")
    assert all(torch.equal(before[k], after[k]) for k in before)  # steps 2 and 3 changed nothing
    assert all(torch.isfinite(t).all() for t in weights(ckpt).values())
    assert json.loads((ckpt / "accelerate" / "engine.json").read_text())["skipped_steps"] == 2
    logged = scalars(tmp_path)
    assert logged["train/skipped_steps"][5] == 2
    assert 3 not in logged["loss/toy"] and 5 in logged["loss/toy"]


def test_too_many_bad_steps_in_a_row_stop_with_last_checkpoint_intact(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"3 steps in a row .*step-000004, is intact"):
        run(tmp_path, Toy(opt(), nan_steps=range(3, 100)), cfg(steps=50, checkpoint_every=2, max_bad_steps=3))
    last = latest_checkpoint(tmp_path)
    assert last.name == "step-000004"
    config, state = read_raw_config(last), read_weights(last)
    assert config["step"] == 4 and all(torch.isfinite(t).all() for t in state.values())


def test_keep_last_and_latest_pointer(tmp_path: Path) -> None:
    run(tmp_path, Toy(opt()), cfg(steps=5, checkpoint_every=1, keep_last=2))
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-000004", "step-000005"]
    assert (folder / "latest").read_text().strip() == "step-000005"


def test_tensorboard_has_losses_rates_speed_memory_and_examples(tmp_path: Path) -> None:
    run(tmp_path, Toy(opt()), cfg(steps=4, log_every=2, sample_every=2))
    acc = EventAccumulator(str(tmp_path / "logs")).Reload()
    tags = acc.Tags()
    expected = {
        "loss/toy",
        "toy/mse",
        "lr/toy",
        "grad_norm/toy",
        "train/skipped_steps",
        "perf/audio_seconds_per_second",
        "perf/memory_mb",
        "eval/mean",
    }
    assert expected <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss/toy")] == [2, 4]
    assert acc.Scalars("perf/audio_seconds_per_second")[0].value > 0
    assert "audio/tone" in tags["audio"] and "spectrogram/tone" in tags["images"]
    clip = acc.Audio("audio/tone")[0]
    assert clip.sample_rate == SR and clip.length_frames == 2048
    image = acc.Images("spectrogram/tone")[0]
    assert image.width > 1 and image.height > 1


def test_spectrogram_image_puts_a_tone_in_its_row() -> None:
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(SR) / SR)[None]
    image = spectrogram_image(torch.cat([tone, tone]), n_fft=512)
    assert image.shape == (3, 257, SR // 32 + 1) and 0 <= image.min() and image.max() <= 1
    brightest = int(image.sum(0).mean(1).argmax())
    assert brightest == 256 - round(1000 / SR * 512)  # low frequencies at the bottom


def test_bad_train_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.grad_accum must be at least 1, got 0"):
        run(tmp_path, Toy(opt()), cfg(grad_accum=0))
    with pytest.raises(ConfigError, match=r"optimizer betas must be two numbers"):
        run(tmp_path, Toy(opt(betas=[0.9])), cfg())
    assert latest_checkpoint(tmp_path) is None


def test_a_signal_stop_between_checkpoints_resumes_bit_for_bit(tmp_path: Path) -> None:
    """SIGTERM at steps 2 and 3 (between the checkpoints at 4 and 8) and resuming each time
    ends where a run that never stopped ends: the data stream is not restarted at a signal."""
    settings = cfg(steps=7, grad_accum=2, checkpoint_every=4)

    def toy(**kw) -> Toy:
        return Toy(opt(warmup_steps=2, schedule="cosine"), noise=0.1, **kw)

    straight = run(tmp_path / "straight", toy(), settings)
    stopped = run(tmp_path / "resumed", toy(signal_at=1, sig=signal.SIGTERM), settings)
    assert stopped.name == "step-000002"
    again = toy(signal_at=2, sig=signal.SIGTERM)
    assert run(tmp_path / "resumed", again, settings).name == "step-000003"
    assert again.calls == [2, 2]
    last = toy()
    resumed = run(tmp_path / "resumed", last, settings)
    assert last.calls == [3, 3, 4, 4, 5, 5, 6, 6]
    assert straight.name == resumed.name == "step-000007"
    for name in ("model.safetensors", "accelerate/model.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_missing_or_corrupt_rng_state_is_named_on_resume_and_recorded(tmp_path: Path, capsys) -> None:
    settings = cfg(steps=4, checkpoint_every=1)
    run(tmp_path, Toy(opt(), noise=0.1), settings, max_steps=2)
    missing = tmp_path / "checkpoints" / "step-000002" / "accelerate" / "random_states_0.pkl"
    missing.unlink()
    capsys.readouterr()
    third = run(tmp_path, Toy(opt(), noise=0.1), settings, max_steps=3)
    err = capsys.readouterr().err
    assert f"warning: {missing}: missing" in err and "not exactly" in err
    corrupt = third / "accelerate" / "random_states_0.pkl"
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    last = run(tmp_path, Toy(opt(), noise=0.1), settings)
    assert f"warning: {corrupt}: unreadable" in capsys.readouterr().err
    engine = json.loads((last / "accelerate" / "engine.json").read_text())
    notes = engine["inexact_resumes"]
    assert [(n["step"], n["file"]) for n in notes] == [(2, "random_states_0.pkl"), (3, "random_states_0.pkl")]


def test_a_truncated_optimizer_state_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    run(tmp_path, Toy(opt()), cfg(steps=4, checkpoint_every=2), max_steps=2)
    optimizer = tmp_path / "checkpoints" / "step-000002" / "accelerate" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=rf"^{optimizer}: unreadable .*cannot resume from") as caught:
        run(tmp_path, Toy(opt()), cfg(steps=4, checkpoint_every=2))
    assert "\n" not in str(caught.value)


def test_checkpoint_files_get_the_mode_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        ckpt = run(tmp_path, Toy(opt()), cfg(steps=1))
    finally:
        os.umask(old)
    modes = {str(p.relative_to(ckpt)): p.stat().st_mode & 0o777 for p in ckpt.rglob("*") if p.is_file()}
    assert {"model.safetensors", "accelerate/model.safetensors", "accelerate/optimizer.bin"} <= modes.keys()
    assert set(modes.values()) == {0o664}, modes


_HOLDER = """
import sys, time
from wavediff.training.runlock import RunLock
lock = RunLock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_run_folder_in_use_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path: Path, capsys) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        host = socket.gethostname()
        refused = rf"^{tmp_path}: another run trains in this folder \(pid {holder.pid} on {host}, since "
        with pytest.raises(UserError, match=refused):
            run(tmp_path, Toy(opt()), cfg(steps=2))
        assert latest_checkpoint(tmp_path) is None
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    assert run(tmp_path, Toy(opt()), cfg(steps=2)).name == "step-000002"  # the lock died with its holder
    out = capsys.readouterr().out
    assert f"pid {holder.pid} on {host}" in out and "taking over" in out
    assert run(tmp_path, Toy(opt()), cfg(steps=3)).name == "step-000003"  # released at the end: no takeover
    assert "taking over" not in capsys.readouterr().out
