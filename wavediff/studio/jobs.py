"""The studio's work: requests checked and priced up front, queued, run one at a time by a worker
thread that owns the model, with progress, cancellation and a history of what they made.

A request is a JSON object (the page and the HTTP API send the same ones): `generate`, `vary`,
`inpaint` (one bar, or seconds), `extend` (by bars), and `regenerate` (a loop's own request
again with a new seed). Values are checked before anything is queued, so a bad one is refused at
once with a message naming it. Each request gets an estimate of its time from a cost model of this
machine (the U-Net call of a default request timed when the studio starts, then corrected by every
job that finishes), so a request that would take minutes says so before it starts.
"""

from __future__ import annotations

import math
import secrets
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from wavediff.config import SamplingConfig
from wavediff.errors import UserError
from wavediff.generation.generate import generate, inpaint, vary
from wavediff.generation.loops import (
    MAX_BPM,
    MIN_BPM,
    LoopShape,
    clip_shape,
    conform_input,
    loop_shape,
    model_device,
    to_audio,
)
from wavediff.generation.samplers import SAMPLERS, SCHEDULES, check_settings
from wavediff.io.audio import decode, load, loop_samples, read_loop_info
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.preview import PreviewDecoder
from wavediff.studio.history import History

MAX_VARIATIONS = 8
MAX_BARS = 32
MAX_STEPS = 500
MAX_CFG = 20.0
MAX_SEED = 2**31 - 1
MAX_UPLOAD_SECONDS = 120.0
SLOW_SECONDS = 60.0  # a request estimated past this says so before it starts
KEPT_JOBS = 200  # finished jobs remembered for their status

KINDS = ("generate", "vary", "inpaint", "extend", "regenerate")
# Samplers that call the denoiser twice per step (once on the last step, which goes to σ = 0).
TWO_CALLS_PER_STEP = {"heun", "dpm2", "dpm2-ancestral", "dpmpp-2s-ancestral", "dpmpp-sde"}


class Cancelled(Exception):
    """Raised inside the sampler (from the U-Net hook) to stop a cancelled job."""


class UnknownJob(UserError):
    """An id that names no job (the API answers 404)."""


def denoiser_calls(sampler: str, steps: int) -> int:
    """U-Net calls a run of `steps` steps makes (dpm-adaptive's own step control makes it a guess)."""
    return 2 * steps - 1 if sampler in TWO_CALLS_PER_STEP else steps


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


# --------------------------------------------------------------------------- checking requests

_REQUIRED = object()


class Fields:
    """Typed reads of a request's JSON object; every refusal names the field and the value.

    `values` keeps what each read resolved to (defaults included): the request as it ran, which
    the history records so that `regenerate` can run it again.
    """

    def __init__(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise UserError(f"a request must be a JSON object, got {type(body).__name__}")
        self.body = body
        self.values: dict[str, Any] = {}

    def get(self, name: str, default: Any = None) -> Any:
        value = self.body.get(name)
        value = default if value is None or value == "" else value
        self.values[name] = value
        return value

    def number(self, name: str, lo: float, hi: float, default: Any = _REQUIRED, whole: bool = False) -> Any:
        value = self.get(name, default)
        if value is _REQUIRED:
            raise UserError(f"{name} is required")
        if value is None or value is default:
            return value
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a number, got {value!r}") from None
        if whole and not (math.isfinite(number) and number == int(number)):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        if not lo <= number <= hi:
            raise UserError(f"{name} must be between {lo:g} and {hi:g}, got {number:g}")
        self.values[name] = int(number) if whole else number
        return self.values[name]

    def choice(self, name: str, options: Any, default: Any) -> Any:
        value = self.get(name, default)
        if value not in options:
            raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, options))}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.body) - set(self.values))
        if unknown:
            raise UserError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")


@dataclass
class Plan:
    """A checked request: what to run, and what it costs."""

    kind: str
    request: dict[str, Any]  # the request with every default filled in: what `regenerate` runs again
    params: dict[str, Any]  # everything the run needs
    samples: int  # length of each loop it makes, at the model's rate
    frames: int  # latent frames the sampler integrates
    unet_frames: int  # frames the U-Net runs per clip and call (LoopDiffusion.network_frames)
    calls: int  # U-Net calls expected


@dataclass(eq=False)
class Job:
    id: str
    plan: Plan
    estimate_s: float
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued, running, done, failed, cancelled
    calls: int = 0
    started: float | None = None
    finished: float | None = None
    loops: list[str] = field(default_factory=list)
    error: str | None = None
    cancel: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class CostModel:
    """Seconds of one U-Net call on a batch of loops of L frames (L = the plan's unet_frames): batch × L ×
    per_frame, times a correction learnt from the jobs that finished (the decoding, the attention's
    quadratic part, what the machine is busy with)."""

    per_frame: float
    correction: float = 1.0

    def seconds(self, plan: Plan, guided: bool) -> float:
        batch = plan.params["n"] * (2 if guided else 1)
        return plan.calls * batch * plan.unet_frames * self.per_frame * self.correction

    def learn(self, predicted: float, took: float) -> None:
        """Move the correction most of the way (in log scale) to what a job took against its estimate."""
        if predicted > 0 and took > 0:
            self.correction *= (took / predicted) ** LEARNING_RATE


LEARNING_RATE = 0.7
CLOSE_WAIT_SECONDS = 10.0  # Ctrl-C waits this long at most for a job's uncancellable stretch
CALIBRATION_MAX_FRAMES = 2048  # the demo model's 4-bar loop; a model of finer frames is timed on 2048


def _timed(fn: Any, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def calibrate(model: LoopDiffusion) -> CostModel:
    """Time the U-Net call a default request makes (a 4-bar loop at 120 BPM, a guided batch of 2): once to
    warm up, then the median of three. Timing tiny calls instead and scaling up misleads badly on a busy CPU,
    where threads wait on each other for every small operation."""
    device = model_device(model)
    circular = model.recipe.model.padding == "circular"
    frames = min(loop_shape(model, 120.0, 4, circular).frames, CALIBRATION_MAX_FRAMES)
    x = torch.randn(2, model.data_channels, frames, device=device)
    sigma = torch.ones(2, device=device)
    with torch.no_grad():
        tile = model.recipe.sampling.loops == "tile"
        call = lambda: model.denoise(x, sigma, None, None, circular, tile)
        call()
        times = sorted(_timed(call, device) for _ in range(3))
    return CostModel(per_frame=times[1] / (2 * model.network_frames(frames, circular, tile)))


def describe_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"


class Studio:
    """The model, its queue and worker thread, and the history: what the HTTP server calls."""

    def __init__(
        self, model: LoopDiffusion, history: History, source: dict[str, Any], preview: PreviewDecoder | None = None
    ) -> None:
        self.model = model.eval()
        self.preview = preview  # generate decodes with it at once; a download decodes fully (full_decode)
        self.history = history
        self.source = source  # checkpoint, lora, lora_scale: recorded with every loop
        self.device = model_device(model)
        self.circular = model.recipe.model.padding == "circular"
        self._cost: CostModel | None = None
        self._calibrated = threading.Event()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None
        self._stopping = False
        model.unet.register_forward_pre_hook(self._on_unet_call)
        self._worker = threading.Thread(target=self._work, name="studio-worker", daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------- what the page shows

    def info(self) -> dict[str, Any]:
        cond = self.model.recipe.conditioning
        sampling = self.model.recipe.sampling
        return {
            **self.source,
            "genres": list(cond.genres) if self.model.conditioner is not None and cond.genre else [],
            "sample_rate": self.model.sample_rate,
            "channels": self.model.audio_channels,
            "beats_per_bar": cond.beats_per_bar,
            "device": str(self.device),
            "samplers": list(SAMPLERS),
            "schedules": list(SCHEDULES),
            "defaults": {
                "bpm": 120,
                "bars": 4,
                "n": 2,
                "sampler": sampling.sampler,
                "schedule": sampling.schedule,
                "steps": sampling.steps,
                "cfg": sampling.cfg_scale,
                "strength": 0.5,
            },
            "limits": {
                "bpm": [MIN_BPM, MAX_BPM],
                "bars": [1, MAX_BARS],
                "n": [1, MAX_VARIATIONS],
                "steps": [1, MAX_STEPS],
                "cfg": [0, MAX_CFG],
                "seed": [0, MAX_SEED],
            },
            "slow_seconds": SLOW_SECONDS,
            "history": str(self.history.folder),
            "preview": self.preview is not None,
        }

    # ----------------------------------------------------------------- checking and pricing

    def _settings(self, f: Fields, base: SamplingConfig) -> SamplingConfig:
        settings = replace(
            base,
            sampler=f.choice("sampler", list(SAMPLERS), base.sampler),
            schedule=f.choice("schedule", list(SCHEDULES), base.schedule),
            steps=f.number("steps", 1, MAX_STEPS, base.steps, whole=True),
            cfg_scale=f.number("cfg", 0, MAX_CFG, base.cfg_scale),
        )
        check_settings(settings)
        return settings

    def genre(self, f: Fields, default: str | None) -> str | None:
        genre = f.get("genre", default)
        if genre is not None:
            if self.model.conditioner is None or not self.model.recipe.conditioning.genre:
                raise UserError(f"this model has no genres, got genre {genre!r}")
            self.model.conditioner.genre_id(str(genre))  # refuses an unknown name, listing the known ones
        return genre

    def key(self, f: Fields) -> str | None:
        """The asked key (None: not asked); refused when it is not a key or the model has no key conditioning."""
        key = f.get("key")
        if key is not None:
            if self.model.conditioner is None:
                raise UserError(f"key {key!r}: this model is unconditional")
            self.model.conditioner.key_id(str(key))
        return None if key is None else str(key)

    def _source(self, f: Fields) -> dict[str, Any]:
        source = f.get("source")
        if source is None:
            raise UserError("source is required: the id of a loop in the history")
        return self.history.get(str(source))

    def plan(self, kind: str, body: Any) -> Plan:
        """Check a request and price it; a UserError names the first bad value."""
        if kind not in KINDS:
            raise UserError(f"unknown request {kind!r}; choose one of {', '.join(KINDS)}")
        f = Fields(body)
        f.get("wait")  # the server's: answer when the job is done
        if kind == "regenerate":
            record = self._source(f)
            request = record.get("request")
            if not request:
                raise UserError(f"loop {record['id']} was uploaded, not made here: vary it instead")
            seed = f.number("seed", 0, MAX_SEED, random_seed(), whole=True)
            f.finish()
            again = {k: v for k, v in request.items() if k != "kind"}
            return self.plan(request["kind"], again | {"n": 1, "seed": seed})
        params: dict[str, Any] = {
            "n": f.number("n", 1, MAX_VARIATIONS, 1, whole=True),
            "seed": f.number("seed", 0, MAX_SEED, random_seed(), whole=True),
        }
        sampling = self.model.recipe.sampling
        if kind == "generate":
            params |= {
                "genre": self.genre(f, None),
                "key": self.key(f),
                "bpm": f.number("bpm", MIN_BPM, MAX_BPM),
                "bars": f.number("bars", 1, MAX_BARS, 4, whole=True),
            }
            settings = self._settings(f, sampling)
            f.finish()
            shape = loop_shape(self.model, params["bpm"], params["bars"], self.circular)
            calls = denoiser_calls(settings.sampler, settings.steps)
        else:
            record = self._source(f)
            params["source"] = record["id"]
            params["genre"] = self.genre(f, record.get("genre"))
            params["bpm"], params["bars"] = record.get("bpm"), record.get("bars")
            total = int(record["samples"])  # the output's length: the source's, unless inpaint goes past it
            if kind == "vary":
                params["strength"] = f.number("strength", 0.01, 1.0, 0.5)
            elif kind == "inpaint":
                total = self._inpaint_region(f, record, params)
            else:
                total = self._extension(f, record, params)
            settings = self._settings(f, sampling)
            f.finish()
            shape = clip_shape(self.model, total, self.circular)
            steps = settings.steps
            if kind == "vary":  # vary starts part-way down the schedule, as generation.vary does
                steps -= min(round((1 - params["strength"]) * steps), steps - 1)
            calls = denoiser_calls(settings.sampler, steps)
        params |= {"sampler": settings.sampler, "schedule": settings.schedule, "steps": settings.steps}
        params["cfg"] = settings.cfg_scale
        unet_frames = self.model.network_frames(shape.frames, shape.circular, settings.loops == "tile")
        request = {"kind": kind} | {k: v for k, v in f.values.items() if k != "wait"}
        return Plan(kind, request, params, shape.samples, shape.frames, unet_frames, calls)

    def _bar_seconds(self, record: dict[str, Any], bars: int) -> float:
        beats = int(record.get("beats_per_bar") or self.model.recipe.conditioning.beats_per_bar)
        return loop_samples(float(record["bpm"]), bars, self.model.sample_rate, beats) / self.model.sample_rate

    def _inpaint_region(self, f: Fields, record: dict[str, Any], params: dict[str, Any]) -> int:
        """Sets params start/end (seconds) from `bar` (1-based) or from `start`/`end`; → the output's samples."""
        seconds = int(record["samples"]) / self.model.sample_rate
        bar = f.get("bar")
        if bar is not None:
            if not (record.get("bpm") and record.get("bars")):
                raise UserError(f"loop {record['id']} has no known tempo and bars: give start and end in seconds")
            bar = f.number("bar", 1, int(record["bars"]), whole=True)
            params["bar"] = bar
            params["start"], params["end"] = self._bar_seconds(record, bar - 1), self._bar_seconds(record, bar)
        else:
            start = f.number("start", 0, seconds)
            end = f.number("end", 0, seconds + MAX_BARS * 4 * 60 / MIN_BPM)
            if not start < end:
                raise UserError(f"inpaint needs start < end, got start {start:g} s, end {end:g} s")
            if start >= seconds:
                raise UserError(f"start {start:g} s is not before the loop's end ({seconds:g} s)")
            params["start"], params["end"] = start, end
        return max(int(record["samples"]), round(params["end"] * self.model.sample_rate))

    def _extension(self, f: Fields, record: dict[str, Any], params: dict[str, Any]) -> int:
        """Sets params start/end/bars for continuing a loop by `bars` bars; → the output's samples."""
        if not (record.get("bpm") and record.get("bars")):
            raise UserError(f"loop {record['id']} has no known tempo and bars: it cannot be extended by bars")
        have = int(record["bars"])
        if have >= MAX_BARS:
            raise UserError(f"loop {record['id']} already has {have} bars, the most the studio makes")
        more = f.number("bars", 1, MAX_BARS - have, whole=True)
        params["added_bars"] = more
        params["bars"] = have + more  # the output's length condition
        # inpaint continues a clip from a start inside it: the last sample, so the loop is kept whole but
        # for the ~10 ms crossfade into its continuation
        params["start"] = (int(record["samples"]) - 1) / self.model.sample_rate
        params["end"] = self._bar_seconds(record, have + more)
        return round(params["end"] * self.model.sample_rate)

    @property
    def cost(self) -> CostModel:
        """The cost model, once the worker has timed the model (it does so first, in its own thread: the
        main thread's calls measured up to 20× slower on a busy CPU, in the same process)."""
        self._calibrated.wait()
        assert self._cost is not None
        return self._cost

    def _guided(self, plan: Plan) -> bool:
        return self.model.conditioner is not None and plan.params["cfg"] != 1.0

    def estimate(self, plan: Plan) -> dict[str, Any]:
        seconds = self.cost.seconds(plan, self._guided(plan))
        slow = seconds > SLOW_SECONDS
        text = f"about {describe_seconds(seconds)} on {self.device.type}"
        if slow:
            text += ": slow. Fewer steps, bars or variations go faster"
        return {"seconds": round(seconds, 3), "slow": slow, "text": text}

    def upload(self, data: bytes, name: str, query: dict[str, Any]) -> dict[str, Any]:
        """Keep an uploaded audio file in the history (kind "upload"), conformed to the model, to vary or
        inpaint. Its tempo comes from the query (`bpm`), else a WAV's acid chunk (as samplers read it), else
        its file name (`kick_128bpm.wav`, as the sharder reads it); its bars from the query, the acid
        chunk, or its length when that is a whole number of bars."""
        from data_tools.metadata import bpm_from_name, whole_bars

        wav, sr = decode(data, name)
        if wav.shape[-1] / sr > MAX_UPLOAD_SECONDS:
            seconds = wav.shape[-1] / sr
            raise UserError(f"{name}: {seconds:.0f} s long; the studio takes loops of at most {MAX_UPLOAD_SECONDS:g} s")
        f = Fields(query)
        bpm = f.number("bpm", MIN_BPM, MAX_BPM, None)
        bars = f.number("bars", 1, MAX_BARS, None, whole=True)
        genre = self.genre(f, None)
        f.finish()
        beats_per_bar = self.model.recipe.conditioning.beats_per_bar
        if bpm is None:
            with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as tmp:
                tmp.write(data)
                tmp.flush()
                loop = read_loop_info(tmp.name)
            if loop is not None:
                bpm, beats_per_bar = loop.bpm, loop.beats_per_bar
                whole = loop.beats % loop.beats_per_bar == 0
                bars = bars or (loop.beats // loop.beats_per_bar if whole else None)
            else:
                bpm = bpm_from_name(Path(name).stem)
        audio = conform_input(self.model, wav, sr, name)
        seconds = audio.shape[-1] / self.model.sample_rate
        if bpm is not None and bars is None:
            bars = whole_bars(seconds * 4 / beats_per_bar, bpm)  # whole_bars counts 4-beat bars
        info = {
            "kind": "upload",
            "upload": name,
            "genre": genre,
            "bpm": bpm,
            "bars": bars,
            "beats_per_bar": beats_per_bar,
            "samples": audio.shape[-1],
            "seconds": seconds,
            "sample_rate": self.model.sample_rate,
            "seeds": [None],
        }
        (record,) = self.history.add(audio[None], info)
        return record

    # ----------------------------------------------------------------- the queue

    def submit(self, kind: str, body: Any) -> Job:
        plan = self.plan(kind, body)
        job = Job(id=secrets.token_hex(4), plan=plan, estimate_s=self.cost.seconds(plan, self._guided(plan)))
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job)
            self._forget_old_jobs()
            self._wake.notify()
        return job

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if j.done.is_set()]
        for job in finished[: max(0, len(finished) - KEPT_JOBS)]:
            del self._jobs[job.id]

    def job(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        """A queued job is dropped; a running one stops at its next U-Net call."""
        job = self.job(job_id)
        with self._lock:
            job.cancel = True
            if job in self._queue:
                self._queue.remove(job)
                self._end(job, "cancelled")
        return job

    def view(self, job: Job) -> dict[str, Any]:
        """A job as the API shows it: state, queue position, progress, estimate, and its loops when done."""
        with self._lock:
            ahead = list(self._queue).index(job) + (self._current is not None) if job in self._queue else 0
            state, calls = job.state, job.calls
        progress = {"done": 1.0, "running": min(calls / max(job.plan.calls, 1), 0.99)}.get(state, 0.0)
        view = {
            "id": job.id,
            "kind": job.plan.kind,
            "state": state,
            "position": ahead,
            "progress": round(progress, 3),
            "estimate_s": round(job.estimate_s, 3),
            "remaining_s": round(job.estimate_s * (1 - progress), 3),
            "slow": job.estimate_s > SLOW_SECONDS,
            "params": job.plan.params,
            "error": job.error,
            "loops": self.history.records(job.loops) if state == "done" else [],
        }
        if job.started is not None:
            view["elapsed_s"] = round((job.finished or time.monotonic()) - job.started, 3)
        return view

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self._jobs.values())
        return [self.view(j) for j in found]

    def close(self) -> None:
        """Stop the worker after the U-Net call it is in (queued jobs are cancelled). A stretch that cannot
        be cancelled (a decode, the start-up calibration) is waited for up to CLOSE_WAIT_SECONDS, then
        left to die with the process: a cancelled job writes nothing, so nothing half-written is lost."""
        with self._lock:
            self._stopping = True
            for job in self._queue:
                self._end(job, "cancelled")
            self._queue.clear()
            if self._current is not None:
                self._current.cancel = True
            self._wake.notify()
        self._worker.join(timeout=CLOSE_WAIT_SECONDS)
        if self._worker.is_alive():
            print("wavediff studio: stopped without waiting for the running job to finish", file=sys.stderr)

    # ----------------------------------------------------------------- the worker

    def _end(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.monotonic()
        job.done.set()

    def _on_unet_call(self, module: Any, args: Any) -> None:
        job = self._current
        if job is not None:
            if job.cancel:
                raise Cancelled
            job.calls += 1

    def _work(self) -> None:
        try:
            self._cost = calibrate(self.model)
        except Exception:  # a bug (the jobs will say so too); the server still answers, with no estimates
            traceback.print_exc()
            self._cost = CostModel(per_frame=0.0)
        finally:
            self._calibrated.set()
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.state, job.started = "running", time.monotonic()
                self._current = job
            try:
                with torch.no_grad():
                    audio, info, latents = self._run(job.plan)
                job.loops = [r["id"] for r in self.history.add(audio, info, latents)]
                outcome: tuple[str, str | None] = ("done", None)
            except Cancelled:
                outcome = ("cancelled", None)
            except (UserError, OSError) as e:
                outcome = ("failed", str(e))
            except Exception as e:  # a bug: keep its traceback on the console, keep serving
                traceback.print_exc()
                outcome = ("failed", f"internal error: {e!r}")
            with self._lock:
                self._current = None
                self._end(job, *outcome)
                if outcome[0] == "done":
                    self.cost.learn(self.cost.seconds(job.plan, self._guided(job.plan)), job.finished - job.started)

    def _run(self, plan: Plan) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor | None]:
        """(audio, settings, the latents a preview decoded, or None when the audio is the full decode)."""
        p = plan.params
        kept = _Kept(self.preview) if self.preview is not None and plan.kind == "generate" else None
        chosen = {"sampler": p["sampler"], "schedule": p["schedule"], "steps": p["steps"], "cfg_scale": p["cfg"]}
        settings = replace(self.model.recipe.sampling, **chosen)
        common = {"genre": p["genre"], "bpm": p["bpm"], "bars": p["bars"], "n": p["n"], "seed": p["seed"]}
        if plan.kind == "generate":
            audio, info = generate(self.model, **common, settings=settings, key=p["key"], preview=kept)
        else:
            self.full_decode(p["source"])  # vary and inpaint work on the loop itself, not its preview
            wav, sr = load(self.history.wav(p["source"]))
            if plan.kind == "vary":
                audio, info = vary(self.model, wav, sr, strength=p["strength"], **common, settings=settings)
            else:
                audio, info = inpaint(self.model, wav, sr, start=p["start"], end=p["end"], **common, settings=settings)
        info = info | self.source | {"kind": plan.kind, "parent": p.get("source"), "request": plan.request}
        return audio, info, kept.latents if kept is not None else None

    def full_decode(self, loop_id: str) -> None:
        """Replace a loop the preview decoded by the full decoder's audio of its latents (what a
        download hands out); a loop already fully decoded is left alone."""
        record = self.history.get(loop_id)
        latent = self.history.latent(loop_id)
        if not record.get("preview") or latent is None:
            return
        shape = LoopShape(record["samples"], record["frames"], record["circular"], record["stretch_cents"])
        with torch.inference_mode():
            audio = to_audio(self.model, self.model.to_model(latent[None].to(self.device)), shape).float().cpu()
        self.history.replace(loop_id, audio[0], {"preview": False})


class _Kept:
    """A preview decoder that keeps the latents it decodes, so a download can decode them fully."""

    def __init__(self, preview: PreviewDecoder) -> None:
        self.preview, self.cfg = preview, preview.cfg
        self.latents: torch.Tensor | None = None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.latents = z.cpu()
        return self.preview.decode(z)

    def decode_loop(self, z: torch.Tensor) -> torch.Tensor:
        self.latents = z.cpu()
        return self.preview.decode_loop(z)
