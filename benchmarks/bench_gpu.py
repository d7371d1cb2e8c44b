"""GPU speed of the real recipes, in one run of under 8 minutes on one H100.

    python benchmarks/bench_gpu.py [--device cuda] [--smoke]

On recipes/loops-44k.toml and recipes/ae-44k-stereo.toml as written (untrained weights: speed does
not depend on them; random inputs: sizes are what matter):

(1) loops-44k training throughput at its recipe batch and window, bf16 autocast, eager and with
    torch.compile: step time, audio seconds per second, peak memory, and MFU, the model FLOPs of one
    step (forward + backward, counted by torch.utils.flop_counter.FlopCounterMode) per second against
    the card's dense bf16 peak (looked up by name in PEAK_TFLOPS; none for an unknown card or a CPU).
(2) One ae-44k-stereo training step at its recipe batch and crop, bf16 autocast, the full objective
    (reconstruction, KL, hinge and feature matching against the discriminator): generator and
    discriminator steps.
(3) The latency of a 4-bar loop at 128 BPM through the real `generate` (guided, loops-44k with the
    ae-44k-stereo decoder) at 8, 25 and 50 steps, decode included.
(4) Encode throughput of the autoencoder (fp32 and bf16 autocast), in audio seconds per second.

Prints the figures as they come, then a markdown table to paste into BENCHMARKS.md ("GPU").
--smoke: the same code on tiny sizes (narrow nets, a 1-bar loop, 1 and 2 steps) that runs on a CPU
in seconds, so the script cannot rot (tests/test_benchmarks.py runs it); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_diffusion import timed  # noqa: E402
from report import machine  # noqa: E402

from data_tools.synth import GENRES  # noqa: E402
from wavediff.config import AERecipe, DiffusionRecipe, load_recipe  # noqa: E402
from wavediff.generation.generate import generate  # noqa: E402
from wavediff.generation.loops import loop_conditions  # noqa: E402
from wavediff.models.autoencoder import Autoencoder  # noqa: E402
from wavediff.models.blocks import count_parameters  # noqa: E402
from wavediff.models.diffusion import LoopDiffusion  # noqa: E402
from wavediff.training.autoencoder import AutoencoderObjective  # noqa: E402
from wavediff.training.engine import make_optimizer  # noqa: E402

# Dense bf16 peak (TFLOPS, no sparsity) by a substring of torch.cuda.get_device_name; first match wins.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]
BPM, GENRE = 128.0, "techno"


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def recipes(smoke: bool) -> tuple[DiffusionRecipe, AERecipe]:
    """(loops-44k, ae-44k-stereo) as written, resolved by hand (σ_data 1, the synth pack's genres); --smoke: tiny."""
    ae = load_recipe("ae-44k-stereo", AERecipe)
    diffusion = load_recipe("loops-44k", DiffusionRecipe)
    diffusion = dataclasses.replace(
        diffusion,
        autoencoder="ae-44k-stereo (untrained)",
        sample_rate=ae.sample_rate,
        channels=ae.model.latent_dim,
        conditioning=dataclasses.replace(diffusion.conditioning, genres=list(GENRES)),
        diffusion=dataclasses.replace(diffusion.diffusion, sigma_data=1.0),
    )
    if smoke:  # the hop (2048) stays, so loop shapes are the real ones; every width and batch shrinks
        model = dataclasses.replace(
            diffusion.model,
            base_channels=16,
            head_channels=16,
            channel_mults=[1, 2],
            blocks_per_level=1,
            attention_levels=[1],
        )
        data = dataclasses.replace(diffusion.data, batch_size=2, sample_size=32)
        diffusion = dataclasses.replace(diffusion, model=model, data=data)
        ae_model = dataclasses.replace(ae.model, base_channels=2)
        ae_data = dataclasses.replace(ae.data, batch_size=1, sample_size=4096)
        ae_loss = dataclasses.replace(ae.loss, disc_channels=4)
        ae = dataclasses.replace(ae, model=ae_model, data=ae_data, loss=ae_loss)
    return diffusion, ae


def diffusion_training(
    recipe: DiffusionRecipe, device: torch.device, compile: bool, warmup: int, steps: int, smoke: bool = False
) -> dict[str, float | None]:
    """loops-44k training steps (forward, backward, AdamW) under bf16 autocast at the recipe's batch and window."""
    torch.manual_seed(0)
    model = LoopDiffusion(dataclasses.replace(recipe, autoencoder="")).to(device).train()
    optimizer = make_optimizer(recipe.train.optimizer, model.parameters())
    batch, frames = recipe.data.batch_size, recipe.data.sample_size
    cond = loop_conditions(model, GENRE, BPM, 4, batch, device)
    data = torch.randn(batch, recipe.channels, frames, device=device)
    with FlopCounterMode(display=False) as counter:  # one eager step: the model's own FLOPs
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(data, cond).mean().backward()
    optimizer.zero_grad(set_to_none=True)
    if compile:  # --smoke: dynamo's eager backend checks the tracing without inductor's minutes of codegen
        model.unet.compile(backend="eager" if smoke else "inductor")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(data, cond).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    for _ in range(warmup):
        step()
    times = [timed(step, device) for _ in range(steps)]
    step_s = statistics.median(times)
    flops = counter.get_total_flops()
    peak = peak_tflops(device)
    return {
        "params_m": count_parameters(model.unet) / 1e6,
        "step_s": step_s,
        "audio_s_per_s": batch * frames * 2048 / recipe.sample_rate / step_s,
        "tflops_per_step": flops / 1e12,
        "mfu": flops / step_s / (peak * 1e12) if peak else None,
        "peak_gib": peak_gib(device),
    }


def ae_training(recipe: AERecipe, device: torch.device, warmup: int, steps: int) -> dict[str, float | None]:
    """ae-44k-stereo training steps with the full objective under bf16 autocast, generator and
    discriminator alternating (the adversarial terms on from the first step)."""
    torch.manual_seed(0)
    objective = AutoencoderObjective(recipe)
    objective.to(device)
    nets = {name: net.to(device).train() for name, net in objective.networks().items()}
    optimizers = {
        name: make_optimizer(cfg, nets[target].parameters()) for name, (target, cfg) in objective.optimizers().items()
    }
    b, c, n = recipe.data.batch_size, recipe.model.channels, recipe.data.sample_size
    x = 0.3 * torch.randn(b, c, n, device=device)
    start = recipe.loss.adversarial_start
    times: dict[str, list[float]] = {}

    def step(i: int) -> None:
        name = objective.optimizer_for(start + i)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = objective.loss(name, nets, {"audio": x}, start + i)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    reset_peak(device)
    for i in range(2 * warmup):
        step(i)
    for i in range(2 * warmup, 2 * (warmup + steps)):
        times.setdefault(objective.optimizer_for(start + i), []).append(timed(lambda i=i: step(i), device))
    return {
        "params_m": count_parameters(objective.model) / 1e6,
        "generator_s": statistics.median(times["generator"]),
        "discriminator_s": statistics.median(times["discriminator"]) if "discriminator" in times else None,
        "audio_s": b * n / recipe.sample_rate,
        "peak_gib": peak_gib(device),
    }


def loop_latency(
    diffusion: DiffusionRecipe, ae: AERecipe, device: torch.device, bars: int, step_counts: list[int]
) -> dict[int, float]:
    """Seconds for one guided loop through `generate` (decode included), per step count, after a warm-up."""
    torch.manual_seed(0)
    model = LoopDiffusion(diffusion, Autoencoder(ae.model)).to(device).eval()
    result = {}
    for i, steps in enumerate([step_counts[0], *step_counts]):
        settings = dataclasses.replace(model.recipe.sampling, steps=steps)
        seconds = timed(
            lambda settings=settings: generate(model, genre=GENRE, bpm=BPM, bars=bars, settings=settings), device
        )
        if i:  # the first run warms up
            result[steps] = seconds
    return result


def encode_throughput(ae: AERecipe, device: torch.device, seconds: float, batch: int) -> dict[str, float]:
    """Audio seconds per second encoded (posterior mean) by the autoencoder, fp32 and bf16 autocast."""
    torch.manual_seed(0)
    model = Autoencoder(ae.model).to(device).eval()
    samples = round(seconds * ae.sample_rate) // model.hop_length * model.hop_length
    audio = 0.3 * torch.randn(batch, ae.model.channels, samples, device=device)
    result = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model.encode(audio)  # warm-up
            result[name] = batch * samples / ae.sample_rate / timed(lambda: model.encode(audio), device)
    return result


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes that run on a CPU in seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":  # on a shared CPU, threads that wait on each other make small ops 10-40× slower
        torch.set_num_threads(1)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    where = machine() + (f"; {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    diffusion, ae = recipes(args.smoke)
    warmup, steps = (0, 1) if args.smoke else (3, 10)
    step_counts, bars = ([1, 2], 1) if args.smoke else ([8, 25, 50], 4)

    rows: list[tuple[str, str]] = []
    for compile in (False, True):
        name = "bf16 + torch.compile" if compile else "bf16"
        print(f"loops-44k training, {name}", flush=True)
        try:
            r = diffusion_training(
                diffusion, device, compile, warmup + (0 if args.smoke else 2) * compile, steps, args.smoke
            )
        except Exception as e:  # a compile failure is a finding, not a crash of the benchmark
            print(f"  failed: {type(e).__name__}: {e}", flush=True)
            rows.append((f"loops-44k training, {name}", f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"))
            continue
        print(f"  {r}", flush=True)
        rows.append(
            (
                f"loops-44k training, {name} ({r['params_m']:.3g} M, batch {diffusion.data.batch_size} × "
                f"{diffusion.data.sample_size} frames)",
                f"{r['step_s'] * 1000:.0f} ms/step, {r['audio_s_per_s']:.3g} audio s/s, "
                f"{r['tflops_per_step']:.3g} TFLOP/step, MFU {fmt(r['mfu'], '.1%')}, peak {fmt(r['peak_gib'], '.1f', ' GiB')}",
            )
        )
    print("ae-44k-stereo training step", flush=True)
    r = ae_training(ae, device, warmup, steps)
    print(f"  {r}", flush=True)
    rows.append(
        (
            f"ae-44k-stereo training, bf16 ({r['params_m']:.3g} M, batch {ae.data.batch_size} × {ae.data.sample_size})",
            f"generator {r['generator_s'] * 1000:.0f} ms, discriminator {fmt(r['discriminator_s'], '.3f', ' s')}, "
            f"{r['audio_s'] / (r['generator_s'] + (r['discriminator_s'] or 0)) * 2:.3g} audio s/s, "
            f"peak {fmt(r['peak_gib'], '.1f', ' GiB')}",
        )
    )
    print(f"generate, {bars}-bar loop at {BPM:g} BPM", flush=True)
    latency = loop_latency(diffusion, ae, device, bars, step_counts)
    print(f"  {latency}", flush=True)
    loop_s = bars * 4 * 60 / BPM
    for count, seconds in latency.items():
        rows.append((f"{bars}-bar loop ({loop_s:.2f} s) through generate, {count} steps, CFG", f"{seconds:.2f} s"))
    print("encode", flush=True)
    enc = encode_throughput(ae, device, seconds=1.0 if args.smoke else 30.0, batch=1 if args.smoke else 8)
    print(f"  {enc}", flush=True)
    rows.append(("ae-44k-stereo encode", ", ".join(f"{k} {v:.3g} audio s/s" for k, v in enc.items())))

    print(
        f"\n`python benchmarks/bench_gpu.py{' --smoke' if args.smoke else ''}` — {where}, torch {torch.__version__}\n"
    )
    print("| measurement | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
