"""The one Accelerate training loop every model shares; an Objective says what a step computes.

A step is one optimizer update made of `grad_accum` micro-batches: the step counter, the
learning-rate schedule, EMA and checkpoints all count these, never micro-batches (the
k-diffusion quirk). Each step updates the one optimizer the objective names, so a
generator and a discriminator can alternate.

Exact resume. A checkpoint holds the EMA weights (model.safetensors), Accelerate's state
(training weights, optimizers, scaler, every process's RNG) and the engine's counters. The
data stream is restarted at every checkpoint_every-th step from a seed derived from (seed,
step), in a straight run as in a resumed one, and every checkpoint records where the stream
stands (the step it was seeded at, the batches trained on since). A resume restarts that
stream and skips those batches, so a run stopped at any checkpoint, a signal's or max_steps'
between two intervals included, and resumed sees the same batches, noise and weights as one
that never stopped. The skip costs reading again up to checkpoint_every × grad_accum batches
(nothing for a checkpoint at an interval's start). An RNG state that is missing or unreadable
is said in a warning and noted in engine.json (inexact_resumes): the run goes on, not exactly.

The run folder. The main process holds an OS lock on RUN/run.lock while it trains (runlock.py):
a second run in the same folder is refused at once, and a dead run's lock is taken over. A
checkpoint that cannot be written (a full disk) ends the run with an OSError naming it; the
data stream's loader workers are stopped on every way out (a BatchSource's iterator may have
a close() for it), since they ignore stop signals and would otherwise keep the process alive.

Stopping. SIGTERM or SIGUSR1 (SLURM pre-emption) sets a flag; at the end of the current step
the processes agree (a signal seen by any one stops them all at the same step), every process
saves its part of a checkpoint and `train` returns normally (the CLI exits 0; running it
again resumes). The CLI records these signals from its first moment (signals.py), and a signal
that came before the first step stops the run before it, with a checkpoint of its step. SLURM
signals the whole process group, and PyTorch's DataLoader workers die on SIGTERM, so data
sources make their workers ignore these signals (`ignore_stop_signals` as worker_init_fn) and
leave the decision to the training process.
A step whose loss is not finite (or, without fp16's loss scaler, whose gradient norm is
not) updates nothing and is counted; `max_bad_steps` of them in a row raise TrainingError
and leave the last checkpoint as it was.

Many processes (torchrun, accelerate launch, srun). Every process builds the same initial
weights, reads its own part of the data (the BatchSource gets rank and world size), and
fetches a step's micro-batches before any of them computes; the processes then agree whether
all have them, so one whose loader ran out, failed or died of the stop signal makes them all
stop together instead of leaving the others waiting in a gradient sync. Only the main process
writes logs and publishes checkpoints; all resume from the checkpoint it found. The effective
batch and the learning rate (`train.lr_scaling` with the process count) are printed at start,
and every process says at the end which steps it trained.

FSDP (an accelerate config with `distributed_type: FSDP`, `fsdp_version: 2`). Each network is
prepared alone with its optimizers (FSDP2 shards one model per `prepare`), and the EMA copy
is sharded the same way, so it costs 1/N of the model per process and its update is
elementwise on each process's own shards, with no communication. The exported
model.safetensors is gathered from those shards (a collective, so every process takes part)
into the same full, unsharded weights a DDP run writes. Accelerate's state is sharded
(torch.distributed.checkpoint): an FSDP checkpoint resumes under FSDP with any process count,
and the engine refuses to resume it without FSDP (or a DDP checkpoint under FSDP) with a
one-line reason. Audio examples are skipped: the sharded EMA runs only with every process in
step, and an example's forward calls are not guaranteed to be.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedType,
    broadcast_object_list,
    fsdp2_apply_ac,
    fsdp2_prepare_model,
    load,
    parse_flag_from_env,
    set_seed,
)
from safetensors import SafetensorError
from tqdm import tqdm

from wavediff.config import OptimizerConfig, TrainConfig
from wavediff.errors import CheckpointError, ConfigError, UserError
from wavediff.io.files import read_json_object
from wavediff.models.checkpoint import (
    MODEL_FILE,
    STATE_DIR,
    check_weights,
    latest_checkpoint,
    load_weights,
    publish_checkpoint,
    read_raw_config,
    read_weights,
    stage_checkpoint,
    unreadable_state_file,
    write_model,
)
from wavediff.training.logging import TrainLogger, memory_mb
from wavediff.training.objective import Batch, Objective
from wavediff.training.runlock import RunLock
from wavediff.training.signals import stop_signals_blocked, stop_signals_recorded

ENGINE_STATE = "engine.json"  # in a checkpoint's accelerate/ folder
RNG_STATE = "random_states_{}.pkl"  # Accelerate's RNG state of process i, in the same folder
# what a failed checkpoint write raises: torch.save reports one as a RuntimeError, safetensors as its own
_WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)

# (seed, rank, world_size) → this process's batches; called again at every checkpoint interval.
# The engine calls close() on the iterator, if it has one, when it is done with it.
BatchSource = Callable[[int, int, int], Iterable[Batch]]


class _StoppedInStep(Exception):
    """A stop signal arrived and the data loader died of it before the step could run."""


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite losses, data exhausted); the message says why and where."""


# --------------------------------------------------------------------------- pure helpers


def lr_at(cfg: OptimizerConfig, step: int, total_steps: int) -> float:
    """Learning rate for the update made at 0-based step `step`."""
    warmup = cfg.warmup_steps
    factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if cfg.schedule == "cosine":
        progress = min(1.0, max(0.0, (step - warmup) / max(1, total_steps - warmup)))
        factor *= 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.schedule == "inverse_sqrt":
        factor *= min(1.0, math.sqrt(max(1, warmup) / (step + 1)))
    elif cfg.schedule != "constant":
        raise ConfigError(f"optimizer schedule must be constant, cosine or inverse_sqrt, got {cfg.schedule!r}")
    return cfg.lr * factor


def lr_scale(scaling: str, processes: int) -> float:
    """The factor on every optimizer's lr: recipes give the lr of one process (train.lr_scaling)."""
    factors = {"none": 1.0, "linear": float(processes), "sqrt": math.sqrt(processes)}
    if scaling not in factors:
        raise ConfigError(f"train.lr_scaling must be none, linear or sqrt, got {scaling!r}")
    return factors[scaling]


def make_optimizer(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if len(cfg.betas) != 2:
        raise ConfigError(f"optimizer betas must be two numbers, got {cfg.betas}")
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    if cfg.name not in kinds:
        raise ConfigError(f"optimizer name must be one of {sorted(kinds)}, got {cfg.name!r}")
    return kinds[cfg.name](list(params), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def data_seed(seed: int, step: int) -> int:
    """The data stream's seed from `step` on: distinct per (seed, step), the same in every run."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def _check(cfg: TrainConfig) -> None:
    positive = ("grad_accum", "checkpoint_every", "keep_last", "log_every", "max_bad_steps")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {getattr(cfg, key)}")
    for key in ("steps", "sample_every"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"train.{key} must not be negative, got {getattr(cfg, key)}")
    if cfg.grad_clip < 0:
        raise ConfigError(f"train.grad_clip must not be negative (0 turns it off), got {cfg.grad_clip}")


def _k_diffusion_utils() -> types.ModuleType:
    """k_diffusion.utils on first use: the package takes seconds to import, and its dependencies warn about theirs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import k_diffusion.utils
    return k_diffusion.utils


def _uses_fsdp(acc: Accelerator) -> bool:
    """Whether accelerate shards the networks with FSDP2: the engine's one test for it.

    accelerate applies an FSDP config on accelerator devices only; on CPUs it runs plain data
    parallelism, which is said here rather than left to surprise.
    """
    if acc.distributed_type != DistributedType.FSDP:
        if parse_flag_from_env("ACCELERATE_USE_FSDP"):
            acc.print(
                f"an FSDP config was given, but accelerate runs {acc.distributed_type.value} on {acc.device.type} "
                "(it applies FSDP on accelerator devices only): the model is not sharded"
            )
        return False
    if not acc.is_fsdp2:
        raise ConfigError(
            "FSDP version 1 is not supported (its flattened parameters do not fit the EMA): "
            "set fsdp_version: 2 in the accelerate config"
        )
    return True


def _shard_like_trained(acc: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """`model` sharded in the units and on the mesh accelerate gives the trained copy of it, so the
    two have the same local shards (FSDP cannot deepcopy a sharded model, hence a copy made before)."""
    if acc.state.fsdp_plugin.activation_checkpointing:
        model = fsdp2_apply_ac(acc, model)  # as accelerate does: the same parameter names
    return fsdp2_prepare_model(acc, model)


def _plain(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm as a plain tensor: under FSDP it is a replicated DTensor (full_tensor gathers nothing)."""
    full = getattr(norm, "full_tensor", None)
    return full() if full is not None else norm


def _why(error: BaseException) -> str:
    """An exception in a few words: the first line of its message, for one-line reports."""
    text = str(error).strip().splitlines()
    return (text[0][:160] if text else "") or type(error).__name__


def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# --------------------------------------------------------------------------- the run


class _Run:
    """One invocation of `train`: the accelerator, prepared networks and optimizers, EMA, counters."""

    def __init__(self, build: Callable[[], Objective], batches: BatchSource, cfg: TrainConfig, run_dir: Path) -> None:
        _check(cfg)
        self.cfg, self.run_dir, self.batches = cfg, run_dir, batches
        self.acc = Accelerator(
            cpu=cfg.cpu, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum
        )
        self._stream: Iterator[Batch] | None = None
        self.lock = self._lock()
        try:
            self._build(build)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> RunLock | None:
        """The main process's lock on the run folder (see runlock.py); all processes fail alike when it is taken."""
        lock, refused = None, None
        if self.acc.is_main_process:
            try:
                lock = RunLock(self.run_dir)
            except UserError as e:
                refused = str(e)
        if self.acc.num_processes > 1:
            refused = broadcast_object_list([refused])[0]
        if refused is not None:
            raise UserError(refused)
        if lock is not None and (note := lock.takeover()) is not None:
            self.acc.print(note)
        return lock

    def _build(self, build: Callable[[], Objective]) -> None:
        acc, cfg = self.acc, self.cfg
        self.kd = _k_diffusion_utils()
        self.fsdp = _uses_fsdp(acc)
        self.lr_scale = lr_scale(cfg.lr_scaling, acc.num_processes)
        set_seed(cfg.seed)  # the same initial weights in every process
        self.objective = build()
        self.objective.to(acc.device)
        nets = self.objective.networks()
        specs = self.objective.optimizers()
        self.targets = {name: net for name, (net, _) in specs.items()}
        self.opt_cfgs = {name: opt for name, (_, opt) in specs.items()}
        optimizers = {name: make_optimizer(opt, nets[net].parameters()) for name, (net, opt) in specs.items()}
        ema = copy.deepcopy(nets[self.objective.exported]).eval().requires_grad_(False)
        self.ema_schedule = self.kd.EMAWarmup(power=cfg.ema_power, max_value=cfg.ema_max)
        self.nets, self.optimizers = self._prepare(nets, optimizers)
        self.ema = _shard_like_trained(acc, ema) if self.fsdp else ema.to(acc.device)
        set_seed(cfg.seed, device_specific=True)  # different noise in every process
        self.step = 0
        self.skipped = 0  # bad steps in the whole run
        self.bad_in_a_row = 0
        self.saved: tuple[int, Path] | None = None  # (step, folder) of the newest checkpoint
        # the data stream: the step it was seeded at and the batches trained on since (module docstring)
        self.stream_start, self.stream_batches = 0, 0
        self.inexact: list[dict[str, Any]] = []  # resumes that could not restore everything
        self._resume()

    def close(self) -> None:
        """Stop the data stream's workers and release the run folder; every way out of a run calls it."""
        self._close_stream()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def any_process(self, received: Mapping[str, str]) -> bool:
        """Whether any process has seen a stop signal (a collective: all call it at the same point)."""
        seen = torch.tensor(float("signal" in received), device=self.acc.device)
        if self.acc.num_processes > 1:
            seen = self.acc.reduce(seen, "sum")
        return seen.item() > 0

    def _prepare(
        self, nets: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[dict[str, torch.nn.Module], dict[str, torch.optim.Optimizer]]:
        """(prepared networks, prepared optimizers) by name; FSDP2 takes one network per `prepare`,
        together with the optimizers over its parameters."""
        acc = self.acc
        if not self.fsdp:
            prepared = acc.prepare(*nets.values(), *optimizers.values())
            return dict(zip(nets, prepared[: len(nets)])), dict(zip(optimizers, prepared[len(nets) :]))
        done_nets, done_opts = {}, {}
        for name, net in nets.items():
            own = [opt for opt, target in self.targets.items() if target == name]
            done_nets[name], *done = acc.prepare(net, *(optimizers[opt] for opt in own))
            done_opts.update(zip(own, done))
        return done_nets, {name: done_opts[name] for name in optimizers}

    # ----------------------------------------------------------------- checkpoints

    def _resume(self) -> None:
        found = latest_checkpoint(self.run_dir) if self.acc.is_main_process else None
        if self.acc.num_processes > 1:
            found = broadcast_object_list([found])[0]  # every process resumes from the same one
        if found is None:
            return
        config = read_raw_config(found)  # the objective's own config: the engine trains any kind
        if config["kind"] != self.objective.kind:
            raise TrainingError(f"{found}: a {config['kind']} checkpoint, but this run trains a {self.objective.kind}")
        if not (found / STATE_DIR / ENGINE_STATE).is_file():
            raise TrainingError(f"{found}: no {STATE_DIR}/{ENGINE_STATE}, so training cannot resume from it")
        engine = read_json_object(found / STATE_DIR / ENGINE_STATE, "engine state")
        if engine.get("fsdp", False) != self.fsdp:
            raise TrainingError(
                f"{found}: its training state is sharded by FSDP, so it resumes only under FSDP "
                "(an accelerate config with distributed_type FSDP, any number of processes)"
                if engine.get("fsdp")
                else f"{found}: written without FSDP, so it cannot resume under FSDP: resume it as it was trained"
            )
        self._report_changes(config["recipe"], self.objective.checkpoint_config()["recipe"])
        self._load_ema(read_weights(found), found / MODEL_FILE)
        self._load_state(found)
        self.step, self.skipped = engine["step"], engine["skipped_steps"]
        self.ema_schedule.load_state_dict(engine["ema"])
        # a checkpoint from before the stream was recorded: its stream restarts at its step, as it did then
        stream = engine.get("stream", {"start": self.step, "batches": 0})
        self.stream_start, self.stream_batches = stream["start"], stream["batches"]
        self.inexact = engine.get("inexact_resumes", []) + self._unrestored_rng(found)
        self.saved = (self.step, found)
        self.acc.print(f"resuming {found} at step {self.step}")

    def _load_state(self, found: Path) -> None:
        """Accelerate's state; a file of it that does not read back is a one-line CheckpointError naming it."""
        folder = found / STATE_DIR
        try:
            self.acc.load_state(str(folder))
        except Exception:
            broken = unreadable_state_file(folder)
            if broken is None:
                raise
            raise CheckpointError(
                f"{broken[0]}: unreadable ({broken[1]}), so training cannot resume from {found}: "
                "move that folder away to resume from the checkpoint before it"
            ) from None

    def _unrestored_rng(self, found: Path) -> list[dict[str, Any]]:
        """Notes on the processes whose RNG state cannot be restored, each said in a warning.

        Accelerate skips a missing or unreadable RNG state without a word; the process then goes on
        with the random state train.seed gave it, so the run continues, but not as it would have
        without the stop. The notes go into engine.json of every later checkpoint.
        """
        if not self.acc.is_main_process:
            return []
        notes = []
        for index in range(self.acc.num_processes):
            path = found / STATE_DIR / RNG_STATE.format(index)
            try:
                states = load(path)  # as Accelerate reads it
                problem = None if isinstance(states, dict) and "torch_manual_seed" in states else "not an RNG state"
            except FileNotFoundError:
                problem = "missing"
            except Exception as e:  # whatever a damaged pickle raises, as Accelerate catches it
                problem = f"unreadable ({_why(e)})"
            if problem is not None:
                print(
                    f"warning: {path}: {problem}: process {index} resumes at step {self.step} with the random state "
                    "train.seed gives, so the run goes on, but not exactly as it would have without the stop "
                    f"(noted in {STATE_DIR}/{ENGINE_STATE} as inexact_resumes)",
                    file=sys.stderr,
                    flush=True,
                )
                notes.append({"step": self.step, "file": path.name, "problem": problem})
        return notes

    def _report_changes(self, before: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> None:
        for key in sorted(before.keys() | now.keys()):
            old, new = before.get(key), now.get(key)
            if isinstance(old, Mapping) and isinstance(new, Mapping):
                self._report_changes(old, new, f"{prefix}{key}.")
            elif old != new:
                self.acc.print(f"resuming with a changed setting: {prefix}{key} = {new!r} (was {old!r})")

    def _load_ema(self, state: Mapping[str, torch.Tensor], where: Path) -> None:
        """Full weights into the EMA; under FSDP each process keeps its shard of them (all must call it)."""
        if not self.fsdp:
            load_weights(self.ema, state, where)
            return
        # imported here: torch.distributed.checkpoint adds most of a second to every other run's start
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        check_weights(self.ema, state, where)
        set_model_state_dict(self.ema, dict(state), options=StateDictOptions(full_state_dict=True))

    def _ema_weights(self) -> Mapping[str, torch.Tensor]:
        """The EMA's full weights; under FSDP gathered from the shards to the main process's CPU
        (a collective: every process calls it, the others get nothing)."""
        if not self.fsdp:
            return self.ema.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.ema, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save(self) -> Path:
        """Every process writes its part of the Accelerate state; the main one the rest, then publishes.

        A write that fails (a full disk, a quota) ends the run with one line, an OSError that names
        the checkpoint, after clearing its staging folder; the checkpoints before it are untouched.
        """
        acc = self.acc
        staging = stage_checkpoint(self.run_dir, self.step, str(os.getpid())) if acc.is_main_process else None
        if acc.num_processes > 1:
            staging = broadcast_object_list([staging])[0]
        try:
            acc.save_state(str(staging / STATE_DIR))
        except _WRITE_ERRORS as e:
            self._save_failed(staging, e)
        ema = self._ema_weights()
        acc.wait_for_everyone()
        if acc.is_main_process:
            engine = {
                "step": self.step,
                "skipped_steps": self.skipped,
                "ema": self.ema_schedule.state_dict(),
                "fsdp": self.fsdp,
                "stream": {"start": self.stream_start, "batches": self.stream_batches},
                "inexact_resumes": self.inexact,
            }
            config = {**self.objective.checkpoint_config(), "step": self.step}
            try:
                (staging / STATE_DIR / ENGINE_STATE).write_text(json.dumps(engine, indent=2) + "\n", encoding="utf-8")
                write_model(staging, ema, config)
                publish_checkpoint(staging, self.cfg.keep_last)
            except _WRITE_ERRORS as e:
                self._save_failed(staging, e)
        acc.wait_for_everyone()
        self.saved = (self.step, staging.with_name(staging.name.partition(".tmp-")[0]))
        return self.saved[1]

    def _save_failed(self, staging: Path, error: Exception) -> NoReturn:
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(
            f"{staging}: could not save the checkpoint of step {self.step} ({_why(error)}); {self._intact()}"
        ) from error

    def _intact(self) -> str:
        return f"the last checkpoint, {self.saved[1]}, is intact" if self.saved else "no checkpoint was saved yet"

    def checkpoint(self) -> Path:
        """The checkpoint of the current step, saved now unless it already is."""
        return self.saved[1] if self.saved is not None and self.saved[0] == self.step else self.save()

    # ----------------------------------------------------------------- one step

    def _batches(self) -> Iterator[Batch]:
        """This process's data stream: opened on first use, seeded at `stream_start` and moved past
        the `stream_batches` already trained on (see the module docstring)."""
        if self._stream is None:
            acc = self.acc
            seed = data_seed(self.cfg.seed, self.stream_start)
            # Loader workers start here; they must not die of a stop signal before their
            # worker_init_fn can ignore it, so they are born with the signals blocked.
            with stop_signals_blocked():
                self._stream = iter(self.batches(seed, acc.process_index, acc.num_processes))
            for _ in range(self.stream_batches):
                next(self._stream)
        return self._stream

    def new_interval(self) -> None:
        """A checkpoint interval starts at this step: the data stream restarts, seeded by it."""
        self._close_stream()
        self.stream_start, self.stream_batches = self.step, 0

    def _close_stream(self) -> None:
        """Stop the stream's loader workers now (its close()), not whenever it is garbage-collected:
        they ignore stop signals, so at exit nothing else could end them."""
        stream, self._stream = self._stream, None
        close = getattr(stream, "close", None)
        if close is not None:
            close()

    def train_step(self, received: Mapping[str, str]) -> tuple[dict[str, torch.Tensor], float, Batch, bool]:
        """One update (or a skipped one). Returns (logged terms, audio seconds, last batch, stop agreed)."""
        acc, obj, step = self.acc, self.objective, self.step
        name = obj.optimizer_for(step)
        optimizer = self.optimizers[name]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(self.opt_cfgs[name], step, self.cfg.steps) * self.lr_scale
        bad = torch.zeros((), device=acc.device, dtype=torch.bool)
        terms: dict[str, torch.Tensor] = {}
        seconds = 0.0
        fetched = self._fetch(received)
        self.stream_batches += len(fetched)
        for cpu_batch in fetched:
            seconds += obj.batch_seconds(cpu_batch)
            batch = _to_device(cpu_batch, acc.device)
            with acc.accumulate(*self.nets.values()):
                with acc.autocast():
                    loss, logs = obj.loss(name, self.nets, batch, step)
                bad |= ~torch.isfinite(loss.detach())
                acc.backward(loss)  # even when not finite: every process must take part in the gradient sync
            for key, value in {f"loss/{name}": loss, **logs}.items():
                terms[key] = terms.get(key, 0) + value.detach().float() / self.cfg.grad_accum
        stop = float("signal" in received)  # a signal during this step stops the run at its end
        flags = torch.stack([bad.float(), torch.tensor(stop, device=acc.device)])
        if acc.num_processes > 1:
            flags = acc.reduce(flags, "sum")
        bad_anywhere, stop_anywhere = (v > 0 for v in flags.tolist())
        if not bad_anywhere:
            bad_anywhere = not self._update(name, optimizer, terms)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._count(bad_anywhere)
        self.step += 1
        return ({} if bad_anywhere else terms), seconds, batch, stop_anywhere

    def _fetch(self, received: Mapping[str, str]) -> list[Batch]:
        """This step's micro-batches, once every process has all of its own (see the module docstring)."""
        batches: list[Batch] = []
        error: RuntimeError | None = None
        ran_out = False
        try:
            stream = self._batches()
            for _ in range(self.cfg.grad_accum):
                batches.append(next(stream))
        except StopIteration:
            ran_out = True
        except RuntimeError as e:  # after a stop signal: a loader worker caught the group's signal first
            error = e
        stopped = error is not None and "signal" in received
        flags = [float(ran_out), float(stopped), float(error is not None and not stopped)]
        if self.acc.num_processes > 1:
            flags = self.acc.reduce(torch.tensor(flags, device=self.acc.device), "sum").tolist()
        ran_out_anywhere, stopped_anywhere, failed_anywhere = (v > 0 for v in flags)
        if error is not None and not stopped:
            raise error
        if failed_anywhere:
            raise TrainingError(f"the data loader of another process failed at step {self.step}: see its log")
        if ran_out_anywhere:
            raise TrainingError(f"the training data ran out at step {self.step}: no samples to read")
        if stopped_anywhere:
            raise _StoppedInStep
        return batches

    def _update(self, name: str, optimizer: torch.optim.Optimizer, terms: dict[str, torch.Tensor]) -> bool:
        """Clip, step, update the EMA; False when the gradient norm is not finite (and fp16 is off)."""
        params = list(self.nets[self.targets[name]].parameters())
        norm = _plain(self.acc.clip_grad_norm_(params, self.cfg.grad_clip or math.inf))
        if not torch.isfinite(norm) and self.cfg.mixed_precision != "fp16":
            return False  # fp16: the loss scaler skips this update and lowers its scale itself
        terms[f"grad_norm/{name}"] = norm.detach().float()
        optimizer.step()
        if self.targets[name] == self.objective.exported and not self.acc.optimizer_step_was_skipped:
            trained = self.acc.unwrap_model(self.nets[self.targets[name]], keep_fp32_wrapper=True)
            self.kd.ema_update(trained, self.ema, self.ema_schedule.get_value())
            self.ema_schedule.step()
        return True

    def _count(self, bad: bool) -> None:
        if not bad:
            self.bad_in_a_row = 0
            return
        self.skipped += 1
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.max_bad_steps:
            raise TrainingError(
                f"{self.bad_in_a_row} steps in a row (up to step {self.step}) had a non-finite loss or gradient: "
                f"stopped; {self._intact()}. Lower the learning rate or check the data"
            )


# --------------------------------------------------------------------------- the loop


class _Meter:
    """Running means of logged terms between two log steps, and audio seconds per wall second."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.seconds = 0.0
        self.since = time.perf_counter()

    def add(self, terms: Mapping[str, torch.Tensor], seconds: float) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.seconds += seconds

    def flush(self, acc: Accelerator) -> dict[str, float]:
        """Means over steps and processes (every process must call it at the same step)."""
        keys = sorted(self.sums)
        means = [self.sums[k] / self.counts[k] for k in keys]
        values = torch.stack(means + [torch.tensor(self.seconds, device=acc.device)])
        if acc.num_processes > 1:
            values = acc.reduce(values, "sum")
            values[:-1] /= acc.num_processes
        out = dict(zip(keys, values[:-1].tolist()))
        elapsed = time.perf_counter() - self.since
        out["perf/audio_seconds_per_second"] = values[-1].item() / max(elapsed, 1e-9)
        self._reset()
        return out


def train(
    build: Callable[[], Objective],
    batches: BatchSource,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    batch_size: int,
    max_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Train the objective `build()` makes until step min(cfg.steps, max_steps); returns the last checkpoint.

    A run folder that holds checkpoints is resumed. `batch_size` (per process and micro-batch)
    is only reported. `max_steps` stops early without changing the schedule (which ends at
    cfg.steps). Logs go to RUN/logs, checkpoints to RUN/checkpoints.
    """
    run_dir = Path(run_dir)
    with stop_signals_recorded() as received, _Run(build, batches, cfg, run_dir) as run:
        acc = run.acc
        last = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
        acc.print(
            f"effective batch size {batch_size * cfg.grad_accum * acc.num_processes} = {batch_size} per batch "
            f"× {cfg.grad_accum} accumulated × {acc.num_processes} process(es); device {acc.device}, "
            f"precision {cfg.mixed_precision}"
        )
        rates = ", ".join(f"{name} {opt.lr:g} → {opt.lr * run.lr_scale:g}" for name, opt in run.opt_cfgs.items())
        scaling = f"lr_scaling {cfg.lr_scaling}, {acc.num_processes} process(es)"
        acc.print(f"learning rate × {run.lr_scale:g} ({scaling}): {rates}")
        if run.fsdp and cfg.sample_every:
            acc.print(
                "FSDP: no audio examples during training (train.sample_every); generate from a checkpoint instead"
            )
        started = run.step
        logger = TrainLogger(run_dir / "logs", acc.is_main_process, purge_step=run.step or None)
        show = progress and acc.is_main_process
        bar = tqdm(total=last, initial=run.step, desc="train", unit="step", disable=not show)
        try:
            saved = _loop(run, logger, bar, received, last)
        finally:
            bar.close()
            logger.close()
    # every process, so a multi-node log shows that each one took part
    where = f"process {acc.process_index} of {acc.num_processes} on {acc.device}"
    print(f"{where}: trained from step {started} to step {run.step}", flush=True)
    return saved


def _stopped(run: _Run, received: Mapping[str, str]) -> Path:
    """The checkpoint of a run a stop signal ends, said in one line."""
    saved = run.checkpoint()
    run.acc.print(f"{received.get('signal', 'a stop signal')}: saved the checkpoint at step {run.step}, stopping")
    return saved


def _loop(run: _Run, logger: TrainLogger, bar: tqdm, received: dict[str, str], last: int) -> Path:
    acc, cfg, obj = run.acc, run.cfg, run.objective
    if run.any_process(received):  # a signal before the first step (the CLI records them from its start)
        return _stopped(run, received)
    meter = _Meter()
    while run.step < last:
        try:
            terms, seconds, batch, stop = run.train_step(received)
        except _StoppedInStep:
            return _stopped(run, received)  # no update was made in this step: the last state is whole
        meter.add(terms, seconds)
        step = run.step
        if step % cfg.log_every == 0 or step == last or stop:
            values = meter.flush(acc)
            values["train/skipped_steps"] = run.skipped
            values["perf/memory_mb"] = memory_mb(acc.device)
            values.update({f"lr/{n}": o.param_groups[0]["lr"] for n, o in run.optimizers.items()})
            logger.scalars(values, step)
            losses = {k.partition("/")[2]: f"{v:.3g}" for k, v in values.items() if k.startswith("loss/")}
            bar.set_postfix(**losses, audio_s_per_s=f"{values['perf/audio_seconds_per_second']:.1f}")
        if cfg.sample_every and step % cfg.sample_every == 0 and acc.is_main_process and not run.fsdp:
            with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []), torch.no_grad():
                audio, metrics = obj.examples(run.ema, batch)
            for name, wav in audio.items():
                logger.audio(name, wav, obj.sample_rate, step)
            logger.scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
        bar.update(1)
        if step % cfg.checkpoint_every == 0:
            run.new_interval()
        if step % cfg.checkpoint_every == 0 or step == last or stop:
            if stop:
                return _stopped(run, received)
            run.save()
            logger.flush()
    return run.checkpoint()
