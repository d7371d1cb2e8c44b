"""What a generated loop costs on this CPU: a circular sampler step against a plain one, the decode, and the demo model.

    python benchmarks/bench_loop_speed.py [--threads N] [--quick]

(1) The denoiser call one guided sampler step makes (conditional and unconditional passes as one
    batch of 2) on a 4-bar loop at 128 BPM for the loops-44k U-Net with the ae-44k-stereo hop (full
    size, untrained): plain (zero padding), circular tiled as `generate` runs it by default, circular
    wrapped (`sampling.loops = "wrap"`: the period resampled to the nearest multiple of the U-Net's
    factor, one call), and circular as it ran before issue 18 (the period tiled up to a multiple of the
    factor, wrapped: the same call on loop_tiles copies). Interleaved
    repeats, medians: the ratios are side by side in one process.
(2) The loop's decode (wrapped context, the ae-44k-stereo decoder): as LoopDiffusion.decode runs it
    (no_grad, weight-norm parametrizations) against inference_mode with the weight norm fused into
    plain weights, and against the other thread count (1, or 2 when --threads 1), interleaved.
(3) A whole loop through `generate` (sampling and decoding), full size and demo size
    (recipes/loops-tiny-cpu.toml on recipes/ae-tiny-cpu.toml's autoencoder): at the recipe's 50
    guided steps and at a 4- and an 8-step student's settings (training.distill.student_sampling: Euler, no
    guidance), each with glibc's allocator as it comes and with freed memory kept for reuse as the
    `wavediff` command runs (wavediff.allocator), interleaved.

Writes the "Loop speed" section of BENCHMARKS.md. --quick: every U-Net and the autoencoder ÷8 wide.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.utils import parametrize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import allocator, machine, write_section  # noqa: E402

from data_tools.synth import GENRES  # noqa: E402
from wavediff.config import DISTILL_STEPS, AERecipe, DiffusionRecipe, DistillConfig, load_recipe  # noqa: E402
from wavediff.generation.generate import generate  # noqa: E402
from wavediff.generation.loops import STRETCH_CENTS, loop_conditions, loop_shape  # noqa: E402
from wavediff.generation.samplers import Denoiser  # noqa: E402
from wavediff.models.autoencoder import Autoencoder  # noqa: E402
from wavediff.models.diffusion import LoopDiffusion  # noqa: E402
from wavediff.training.distill import student_sampling  # noqa: E402

BPM, BARS, GENRE = 128.0, 4, "techno"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Median seconds of each call, run in turns (a busy machine's load hits all alike), after one untimed round."""
    for call in calls.values() if warm_up else ():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(call))
    return {name: statistics.median(t) for name, t in times.items()}


def with_allocator(reuse: bool, call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with allocator(reuse):
            return call()

    return run


def model(diffusion: str, ae: str, divisor: int) -> LoopDiffusion:
    """The recipe pair as written (σ_data 1, the synth pack's genres), widths ÷ divisor, untrained."""
    ae_recipe = load_recipe(ae, AERecipe)
    recipe = load_recipe(diffusion, DiffusionRecipe)
    unet = dataclasses.replace(
        recipe.model,
        base_channels=recipe.model.base_channels // divisor,
        head_channels=max(2, recipe.model.head_channels // divisor),
    )
    recipe = dataclasses.replace(
        recipe,
        autoencoder=f"{ae} (untrained)",
        sample_rate=ae_recipe.sample_rate,
        channels=ae_recipe.model.latent_dim,
        model=unet,
        conditioning=dataclasses.replace(recipe.conditioning, genres=list(GENRES)),
        diffusion=dataclasses.replace(recipe.diffusion, sigma_data=1.0),
    )
    ae_model = dataclasses.replace(ae_recipe.model, base_channels=max(1, ae_recipe.model.base_channels // divisor))
    torch.manual_seed(0)
    return LoopDiffusion(recipe, Autoencoder(ae_model)).eval()


def fused_decoder(model: LoopDiffusion) -> LoopDiffusion:
    """A copy of the model whose autoencoder has its weight norm folded into plain weights."""
    copy = LoopDiffusion(model.recipe, Autoencoder(model.autoencoder.cfg)).eval()
    copy.load_state_dict(model.state_dict())
    for module in copy.autoencoder.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return copy


def tiled_period(model: LoopDiffusion, samples: int) -> tuple[int, int]:
    """(frames, tiles) the loop ran at before: the period within STRETCH_CENTS that cost the fewest tiled frames."""
    hop, factor, exact = model.hop_length, model.factor, samples / model.hop_length

    def cents(f: int) -> float:
        return abs(1200 * math.log2(samples / (f * hop)))

    def tiles(f: int) -> int:
        return factor // math.gcd(f, factor)

    near = range(max(1, math.floor(exact) - factor), math.ceil(exact) + factor + 1)
    tolerance = max(STRETCH_CENTS, min(cents(f) for f in near))
    frames = min((f for f in near if cents(f) <= tolerance + 1e-9), key=lambda f: (tiles(f) * f, abs(f - exact)))
    return frames, tiles(frames)


def step_costs(model: LoopDiffusion, repeats: int) -> dict[str, float]:
    shape = loop_shape(model, BPM, BARS, circular=True)
    frames = shape.frames
    old_frames, tiles = tiled_period(model, shape.samples)
    cond = loop_conditions(model, GENRE, BPM, BARS, 1, "cpu")
    plain, wrap, tile = (
        Denoiser(model, cond, 3.0, c, tile=t) for c, t in ((False, False), (True, False), (True, True))
    )
    x, sigma = torch.randn(1, model.data_channels, frames), torch.ones(1)
    tiled = torch.randn(1, model.data_channels, old_frames).repeat(1, 1, tiles)  # as denoise ran it before
    with torch.no_grad():
        times = interleaved(
            {
                "plain": lambda: plain(x, sigma),
                "wrap": lambda: wrap(x, sigma),
                "tile": lambda: tile(x, sigma),
                "tiled": lambda: wrap(tiled, sigma),
            },
            repeats,
        )
    return times | {
        "frames": frames,
        "wrap_frames": model.network_frames(frames, True, tile=False),
        "tile_frames": model.network_frames(frames, True),
        "old_frames": old_frames,
        "tiles": tiles,
    }


def decode_costs(model: LoopDiffusion, repeats: int) -> dict[str, float]:
    frames = loop_shape(model, BPM, BARS, circular=True).frames
    latent = torch.randn(1, model.data_channels, frames)
    fused = fused_decoder(model)
    with torch.no_grad():
        difference = (fused.decode(latent, loop=True) - model.decode(latent, loop=True)).abs().max().item()

    def inference(m: LoopDiffusion) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return m.decode(latent, loop=True)

        return call

    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2

    def other_threads() -> object:
        torch.set_num_threads(other)
        try:
            return model.decode(latent, loop=True)
        finally:
            torch.set_num_threads(threads)

    times = interleaved(
        {
            "default": lambda: model.decode(latent, loop=True),
            "freed memory reused (wavediff.allocator)": with_allocator(True, lambda: model.decode(latent, loop=True)),
            "inference_mode + fused weight norm": inference(fused),
            f"{other} thread{'s' if other > 1 else ''}": other_threads,
        },
        repeats,
        warm_up=False,  # a decode is long enough that its first-call costs are noise
    )
    return times | {"max_difference": difference}


def loop_costs(m: LoopDiffusion, repeats: int) -> dict[str, float]:
    """Seconds for one loop through `generate` at the recipe's settings and at each student step count's
    (DISTILL_STEPS), with and without freed memory kept (interleaved, after a warm-up round of each)."""
    teacher = m.recipe.sampling
    students = [(f"student {n}", student_sampling(teacher, DistillConfig(steps=n))) for n in DISTILL_STEPS]
    calls = {}
    for name, settings in [("teacher", teacher), *students]:
        for reuse in (False, True):
            run = functools.partial(generate, m, genre=GENRE, bpm=BPM, bars=BARS, settings=settings)
            calls[f"{name} {'reuse' if reuse else 'system'}"] = with_allocator(reuse, run)
    shape = loop_shape(m, BPM, BARS, circular=True)
    times = interleaved(calls, repeats)
    return times | {"frames": shape.frames, "steps": teacher.steps}


def whole_loops_text(full: dict[str, float], demo: dict[str, float], step: dict[str, float], dec: dict) -> str:
    seconds = BARS * 4 * 60 / BPM
    before = full["steps"] * step["tiled"] + dec["default"]  # the path before issue 18, from its measured parts
    rows = []
    students = [(f"student {n}", f"{n} steps, no guidance") for n in DISTILL_STEPS]
    for size, t in (("full size (loops-44k, ae-44k-stereo)", full), ("demo size (loops-tiny-cpu, ae-tiny-cpu)", demo)):
        for name, label in [("teacher", f"{t['steps']:.0f} guided steps"), *students]:
            for alloc, alloc_label in (("system", "as it comes"), ("reuse", "freed memory reused")):
                sec = t[f"{name} {alloc}"]
                vs = f"{before / sec:.1f}" if t is full else "—"
                rows.append(f"| {size} | {label} | {alloc_label} | {sec:.2f} s | {seconds / sec:.2f}× | {vs} |")
    return (
        f"One whole {BARS}-bar loop at {BPM:g} BPM ({seconds:.1f} s of audio) through `generate`, sampling and "
        "decoding, median of the rounds taken in turns. The few-step rows use a distilled student's settings\n"
        '(Euler, CFG 1) on the same untrained weights: a student costs what these rows cost. "× before" divides\n'
        f"the path before issue 18 as measured above in parts ({full['steps']:.0f} tiled guided steps and the "
        f"default decode: {before:.0f} s) by the row; that decode already has the conv padding and SnakeBeta of\n"
        "models/blocks.py (2026-12-07), before which the same decode took 9.8–10.6 s on this Xeon, so the old\n"
        "path was slower than the estimate.\n\n"
        "| model | sampling | allocator | s per loop | × real time | × before |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="every network ÷8 wide: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the step costs and the demo loop")
    parser.add_argument("--decode-repeats", type=int, default=1, help="timed rounds of the decodes")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed rounds of the full-size whole loops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()
    divisor = 8 if args.quick else 1
    big = model("loops-44k", "ae-44k-stereo", divisor)
    print("step costs", flush=True)
    step = step_costs(big, args.repeats)
    print(f"  {step}", flush=True)
    print("decode costs", flush=True)
    dec = decode_costs(big, args.decode_repeats)
    print(f"  {dec}", flush=True)
    print("whole loops, full size", flush=True)
    full = loop_costs(big, args.loop_repeats)
    print(f"  {full}", flush=True)
    print("whole loops, demo size", flush=True)
    demo = loop_costs(model("loops-tiny-cpu", "ae-tiny-cpu", 1), args.repeats)
    print(f"  {demo}", flush=True)

    command = "python benchmarks/bench_loop_speed.py" + (" --quick" if args.quick else "")
    command += f" --threads {args.threads}" if args.threads else ""
    scale = "full size" if divisor == 1 else f"÷{divisor} wide (a smoke run: not the real ratios)"
    text = (
        f"""## Loop speed

`{command}` — {datetime.date.today()}, {where}, torch {torch.__version__}, CPU threads: {torch.get_num_threads()}.
Each table's rows ran interleaved in one process, so their ratios are comparable; absolute times move with
the machine's load (above). Untrained weights, {scale}.

One guided sampler step (a batch of 2: conditional and unconditional) on a {BARS}-bar loop at {BPM:g} BPM,
loops-44k U-Net on ae-44k-stereo latents: the period is {step["frames"]} frames, not a multiple of the
U-Net's factor ({big.factor}), and no multiple of it is within the 6-cent stretch rule (STRETCH_CENTS):

| denoiser call | frames the U-Net runs | time | ÷ plain |
|---|---|---|---|
| plain (zero padding, not a loop) | {step["frames"]} | {step["plain"]:.2f} s | 1.00 |
| circular, before: a {step["old_frames"]}-frame period, {step["tiles"]} tiles averaged | {
            step["old_frames"] * step["tiles"]
        } | {step["tiled"]:.2f} s | {step["tiled"] / step["plain"]:.2f} |
| circular, wrapped (`sampling.loops = "wrap"`): resampled to a multiple of {big.factor} | {step["wrap_frames"]} | {
            step["wrap"]:.2f} s | {step["wrap"] / step["plain"]:.2f} |
| circular, tiled (`"tile"`, the default): two periods or the {big.recipe.data.sample_size}-frame training window | {
            step["tile_frames"]
        } | {step["tile"]:.2f} s | {step["tile"] / step["plain"]:.2f} |

The loop's decode ({step["frames"]} frames with wrapped context, ae-44k-stereo decoder; fused and unfused
differ by at most {dec["max_difference"]:.1e}); one round each in this order, no warm-up, so the first row also
carries the first call's costs and the load moved under all of them: a difference under 2× is not established:

| decode | time | ÷ default |
|---|---|---|
"""
        + "\n".join(
            f"| {name} | {dec[name]:.1f} s | {dec[name] / dec['default']:.2f} |"
            for name in dec
            if name != "max_difference"
        )
        + "\n\n"
        + whole_loops_text(full, demo, step, dec)
    )
    print(text)
    print(f"wrote {write_section('Loop speed', text)}")


if __name__ == "__main__":
    main()
