"""Diffusion speed on this machine: latent vs waveform training steps, and sampling real-time factor.

    .venv/bin/python benchmarks/bench_diffusion.py [--quick] [--device cuda] [--threads N]

(1) Training step time (forward + backward + AdamW step, no EMA or clipping) of latent vs
    waveform diffusion on the same seconds of 44.1 kHz stereo audio: the loops-44k U-Net on
    64-channel latents (frames = samples / 2048, the ae-44k-stereo autoencoder's hop; latents
    are pre-encoded, so the autoencoder is not in the step) against a Dance Diffusion-size
    waveform U-Net (DD_UNET) on the raw samples, both at full size. On a CPU the waveform
    step takes minutes, so it is timed once, after a warm-up step on 1/8 of the length.
(2) Sampling real-time factor (audio seconds per compute second) of a 4-bar loop at 128 BPM
    (7.5 s), 50 dpmpp-2m steps, CFG 3 (conditional and unconditional passes batched): the
    default latent model through `generate` (loops-44k U-Net + ae-44k-stereo decoder), timed
    end to end, against the DD-size waveform U-Net, whose guided denoiser call on the full
    330750 samples is timed and multiplied by the evaluation count generate made.
(3) With --device cuda, the same, plus loops-44k training throughput at its
    recipe batch in fp32, bf16 autocast, and bf16 with torch.compile: audio s/s and peak memory.

Weights are untrained (initialized as for training): speed does not depend on them. Inputs are
random; sizes are what matter. Figures are medians of repeats after untimed warm-up steps.
--quick narrows every U-Net 8× and makes a 1-bar loop: a smoke run, its ratios not the real ones.
Prints the figures and writes them to the "Diffusion" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools.synth import GENRES  # noqa: E402
from wavediff.config import AERecipe, DiffusionRecipe, UNetConfig, load_recipe  # noqa: E402
from wavediff.generation.generate import generate
from wavediff.generation.loops import loop_conditions, loop_shape
from wavediff.generation.samplers import Denoiser
from wavediff.models.autoencoder import Autoencoder  # noqa: E402
from wavediff.models.blocks import count_parameters  # noqa: E402
from wavediff.models.diffusion import LoopDiffusion
from wavediff.training.engine import make_optimizer  # noqa: E402

# Dance Diffusion's DiffusionAttnUnet1D in our UNet1D: 14 levels (13 halvings), widths ×1,1,2,2
# then ×4 ten times (DD: 128,128,256,256, 512×10), attention at the 6 coarsest levels, kernel 5.
# DD runs 6 conv blocks per level and side; ours 1 residual block down and 2 up (with skip
# concatenation), so the base is 144 rather than 128 to land on DD's parameter count (221M).
DD_UNET = UNetConfig(
    base_channels=144,
    channel_mults=[1, 1, 2, 2] + [4] * 10,
    blocks_per_level=1,
    attention_levels=list(range(8, 14)),
    head_channels=64,
    kernel_size=5,
    padding="zeros",
)
TRAIN_SAMPLES = 131072  # 2.97 s at 44.1 kHz per example: 64 latent frames
BPM, BARS, GENRE = 128.0, 4, "techno"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def narrower(cfg: UNetConfig, divisor: int) -> UNetConfig:
    """The same U-Net with every width ÷ divisor (and the same head count)."""
    if divisor == 1:
        return cfg
    return dataclasses.replace(
        cfg, base_channels=cfg.base_channels // divisor, head_channels=cfg.head_channels // divisor
    )


def recipes(divisor: int) -> tuple[DiffusionRecipe, DiffusionRecipe, AERecipe]:
    """(latent loops-44k, DD-size waveform, ae-44k-stereo), U-Nets narrowed by `divisor`, resolved by hand."""
    ae = load_recipe("ae-44k-stereo", AERecipe)
    base = load_recipe("loops-44k", DiffusionRecipe)
    base = dataclasses.replace(
        base,
        sample_rate=ae.sample_rate,
        conditioning=dataclasses.replace(base.conditioning, genres=list(GENRES)),
        diffusion=dataclasses.replace(base.diffusion, sigma_data=1.0),
    )
    latent = dataclasses.replace(base, channels=ae.model.latent_dim, model=narrower(base.model, divisor))
    waveform = dataclasses.replace(base, channels=ae.model.channels, model=narrower(DD_UNET, divisor))
    return latent, waveform, ae


def train_steps(
    recipe: DiffusionRecipe,
    length: int,
    batch: int,
    warmup: int,
    steps: int,
    device: torch.device,
    bf16: bool = False,
    compile: bool = False,
    warmup_length: int | None = None,
) -> dict[str, float]:
    """Median seconds of a training step on (batch, channels, length) data; `length` in model frames.

    Warm-up steps (kernels chosen, optimizer state allocated) run on `warmup_length` frames
    (default `length`): a short warm-up spares a big model a whole untimed step.
    """
    torch.manual_seed(0)
    model = LoopDiffusion(dataclasses.replace(recipe, autoencoder="")).to(device)
    if compile:
        model.unet.compile()
    optimizer = make_optimizer(recipe.train.optimizer, model.parameters())
    cond = loop_conditions(model, GENRE, BPM, BARS, batch, device)

    def step(frames: int) -> float:
        """One step; returns the seconds of its optimizer update alone."""
        data = torch.randn(batch, recipe.channels, frames, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(data, cond).mean()
        loss.backward()
        update = timed(optimizer.step, device)
        optimizer.zero_grad(set_to_none=True)
        return update

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(warmup_length or length)
    updates: list[float] = []
    times = [timed(lambda: updates.append(step(length)), device) for _ in range(steps)]
    result = {
        "params_m": count_parameters(model.unet) / 1e6,
        "step_s": statistics.median(times),
        "optimizer_s": statistics.median(updates),
    }
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"  {result}", flush=True)
    return result


def guided_eval_s(model: LoopDiffusion, frames: int, repeats: int, device: torch.device, warm_frames: int) -> float:
    """Median seconds of the denoiser call a sampler step makes (cond + uncond batched), after a warm-up call."""
    settings = model.recipe.sampling
    circular = model.recipe.model.padding == "circular"
    denoiser = Denoiser(model, loop_conditions(model, GENRE, BPM, BARS, 1, device), settings.cfg_scale, circular)
    sigma = torch.ones(1, device=device)
    with torch.no_grad():
        timed(lambda: denoiser(torch.randn(1, model.data_channels, warm_frames, device=device), sigma), device)
        x = torch.randn(1, model.data_channels, frames, device=device)
        return statistics.median(timed(lambda: denoiser(x, sigma), device) for _ in range(repeats))


def latent_sampling(recipe: DiffusionRecipe, ae: AERecipe, bars: int, repeats: int, device: torch.device) -> dict:
    """The default model through `generate`: end-to-end seconds, and its parts (U-Net calls, decode)."""
    torch.manual_seed(0)
    recipe = dataclasses.replace(recipe, autoencoder="ae-44k-stereo (untrained)")
    model = LoopDiffusion(recipe, Autoencoder(ae.model)).to(device).eval()
    shape = loop_shape(model, BPM, bars, circular=True)
    per_eval = guided_eval_s(model, shape.frames, repeats, device, warm_frames=shape.frames)
    latent = torch.randn(1, model.data_channels, shape.frames, device=device)
    decode_s = timed(lambda: model.decode(latent, loop=True), device)
    runs = []
    for _ in range(repeats if device.type == "cuda" else 1):
        out: dict = {}
        runs.append(timed(lambda out=out: out.update(info=generate(model, genre=GENRE, bpm=BPM, bars=bars)[1]), device))
    info = out["info"]
    result = {
        "params_m": count_parameters(model.unet) / 1e6,
        "ae_params_m": sum(p.numel() for p in model.autoencoder.parameters()) / 1e6,
        "frames": shape.frames,
        "evals": info["model_evaluations"],
        "seconds": info["seconds"],
        "eval_s": per_eval,
        "decode_s": decode_s,
        "generate_s": statistics.median(runs),
    }
    result["rtf"] = result["seconds"] / result["generate_s"]
    print(f"  {result}", flush=True)
    return result


def waveform_sampling(recipe: DiffusionRecipe, bars: int, evals: int, repeats: int, device: torch.device) -> dict:
    """The DD-size waveform U-Net: one guided call on the loop's samples, × the evaluations generate makes."""
    torch.manual_seed(0)
    model = LoopDiffusion(recipe).to(device).eval()
    shape = loop_shape(model, BPM, bars, circular=False)
    per_eval = guided_eval_s(model, shape.frames, repeats, device, warm_frames=model.factor * 2)
    result = {
        "params_m": count_parameters(model.unet) / 1e6,
        "samples": shape.frames,
        "seconds": shape.samples / model.sample_rate,
        "eval_s": per_eval,
        "total_s": per_eval * evals,
    }
    result["rtf"] = result["seconds"] / result["total_s"]
    print(f"  {result}", flush=True)
    return result


def gpu_throughput(recipe: DiffusionRecipe, device: torch.device, steps: int) -> list[tuple[str, dict[str, float]]]:
    """loops-44k at its recipe batch and window: fp32, bf16, bf16 + torch.compile."""
    rows = []
    hop_s = 2048 / recipe.sample_rate
    batch, frames = recipe.data.batch_size, recipe.data.sample_size
    for name, bf16, compile in (("fp32", False, False), ("bf16", True, False), ("bf16 + torch.compile", True, True)):
        print(f"loops-44k training throughput, {name}", flush=True)
        try:
            r = train_steps(
                recipe,
                frames,
                batch,
                warmup=5 if compile else 3,
                steps=steps,
                device=device,
                bf16=bf16,
                compile=compile,
            )
        except Exception as e:  # a compile failure is a finding, not a crash of the benchmark
            print(f"  failed: {type(e).__name__}: {e}", flush=True)
            rows.append((name, {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}))
            continue
        r["audio_s_per_s"] = batch * frames * hop_s / r["step_s"]
        rows.append((name, r))
        torch.cuda.empty_cache()
    return rows


def full_waveform_params(recipe: DiffusionRecipe) -> float:
    """Parameters (millions) of the full-size DD-shaped U-Net, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = LoopDiffusion(recipe)
    return count_parameters(model.unet) / 1e6


def gpu_table(rows: list[tuple[str, dict[str, float]]], recipe: DiffusionRecipe) -> str:
    batch, frames = recipe.data.batch_size, recipe.data.sample_size
    lines = [
        f"\nloops-44k training throughput at its recipe batch ({batch} × {frames} frames = {batch * frames * 2048 / recipe.sample_rate:.0f} audio s per step):\n",
        "| precision | step | audio s/s | peak memory |",
        "|---|---|---|---|",
    ]
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | |")
        else:
            lines.append(
                f"| {name} | {r['step_s'] * 1000:.0f} ms | {r['audio_s_per_s']:.0f} | {r['peak_gb']:.1f} GiB |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run: narrower models, a 1-bar loop")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's). On a busy machine 1 avoids threads waiting on each other",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()  # before our own work loads the CPU
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        where += f"; {torch.cuda.get_device_name(device)}"
    divisor = 8 if args.quick else 1  # every U-Net alike; the autoencoder stays full size
    bars = 1 if args.quick else BARS
    steps, repeats = (10, 5) if gpu else (1, 1) if args.quick else (3, 3)

    latent, waveform, ae = recipes(divisor)
    frames = TRAIN_SAMPLES // 2048
    seconds = TRAIN_SAMPLES / ae.sample_rate
    print(f"training step, latent U-Net ÷{divisor}, {frames} frames", flush=True)
    lat = train_steps(latent, frames, 1, 3 if gpu else 1, steps, device)
    print(f"training step, waveform U-Net ÷{divisor}, {TRAIN_SAMPLES} samples", flush=True)
    # On a CPU one full-size waveform step takes minutes: one timed step after a warm-up on 1/8 of the length.
    wav = train_steps(
        waveform,
        TRAIN_SAMPLES,
        1,
        3 if gpu else 1,
        steps if gpu else 1,
        device,
        warmup_length=None if gpu else TRAIN_SAMPLES // 8,
    )
    print(f"sampling, latent model (÷{divisor}) through generate, {bars} bars", flush=True)
    ls = latent_sampling(latent, ae, bars, repeats, device)
    print(f"sampling, waveform U-Net (÷{divisor}), guided calls", flush=True)
    ws = waveform_sampling(waveform, bars, ls["evals"], repeats if gpu else 1, device)
    full_latent, full_waveform, _ = recipes(1)
    throughput = gpu_throughput(full_latent, device, steps) if gpu else []

    command = (
        "python benchmarks/bench_diffusion.py"
        + (" --quick" if args.quick else "")
        + (" --device cuda" if gpu else "")
        + (f" --threads {args.threads}" if args.threads else "")
    )
    scale = "full size" if divisor == 1 else f"÷{divisor} wide"
    note = (
        ""
        if divisor == 1
        else (
            f"\n**--quick: every U-Net ÷{divisor} wide (parameters ÷~{divisor**2}), the autoencoder full size; "
            "narrow nets are bound by per-sample work, so the ratios are not the full-size ones.**\n"
        )
    )
    text = f"""## Diffusion

`{command}` — {datetime.date.today()}, {where}, torch {torch.__version__}, CPU threads: {torch.get_num_threads()}.
Untrained weights (speed does not depend on them), random inputs, medians after untimed warm-up.
Waveform U-Net = our UNet1D shaped like Dance Diffusion (13 halvings, attention at the 6 coarsest levels, kernel 5,
base 144 so it has DD's parameter count: {full_waveform_params(full_waveform):.0f} M at full size; DD 221 M).
{note}
Training step (forward + backward + AdamW step; no EMA, no clipping) on the same audio, batch 1 × {seconds:.2f} s of
44.1 kHz stereo: pre-encoded latents ({frames} frames × 64 channels) against the raw {TRAIN_SAMPLES} × 2 samples{
        "" if gpu else " (the waveform step: one timed step, warmed up on 1/8 of the length)"
    }:

| model | scale | params | step | of it AdamW | audio s/s |
|---|---|---|---|---|---|
| latent (loops-44k U-Net) | {scale} | {lat["params_m"]:.1f} M | {lat["step_s"]:.2f} s | {lat["optimizer_s"]:.2f} s | {
        seconds / lat["step_s"]:.3f} |
| waveform (DD-size U-Net) | {scale} | {wav["params_m"]:.1f} M | {wav["step_s"]:.2f} s | {wav["optimizer_s"]:.2f} s | {
        seconds / wav["step_s"]:.4f} |
| **ratio waveform / latent** | | | **{wav["step_s"] / lat["step_s"]:.0f}×** | | |

Sampling a {bars}-bar loop at {BPM:g} BPM ({ls["seconds"]:.2f} s, 44.1 kHz stereo), {ls["evals"]} dpmpp-2m steps, CFG 3
(conditional and unconditional passes as one batch of 2). Latent: `generate` timed end to end; its parts timed apart.
Waveform: the guided denoiser call on the whole loop timed once and multiplied by the {ls["evals"]} calls generate made
(the sampler's own work is negligible; a waveform model has nothing to decode):

| model | U-Net calls | decode | total | real-time factor |
|---|---|---|---|---|
| latent ({ls["params_m"]:.0f} M U-Net on {ls["frames"]} frames + {ls["ae_params_m"]:.0f} M ae-44k-stereo decoder) | {
        ls["evals"]
    } × {ls["eval_s"]:.2f} s | {ls["decode_s"]:.1f} s | {ls["generate_s"]:.0f} s | {ls["rtf"]:.3f}× |
| waveform ({ws["params_m"]:.0f} M DD-size U-Net on {ws["samples"]} samples) | {ls["evals"]} × {
        ws["eval_s"]:.1f} s | — | {ws["total_s"]:.0f} s (extrapolated) | {ws["rtf"]:.5f}× |
| **ratio** | | | **{ws["total_s"] / ls["generate_s"]:.0f}×** | |

Reading: per second of audio, a training step on latents is {
        wav["step_s"] / lat["step_s"]:.0f}× cheaper than on raw samples and
sampling {ws["total_s"] / ls["generate_s"]:.0f}× faster: the latent U-Net sees 2048× fewer time steps, so its step is
{
        100
        * lat["optimizer_s"]
        / lat["step_s"]:.0f} % optimizer update while the waveform step is nearly all activations. Of latent sampling,
{100 * ls["decode_s"] / ls["generate_s"]:.0f} % is the one autoencoder decode. The loop path as `generate` runs it
(circular, few-step students, the decoder's memory traffic cut) is measured in "Loop speed".
"""
    if throughput:
        text += gpu_table(throughput, full_latent)
    print(text)
    print(f"wrote {write_section('Diffusion', text)}")


if __name__ == "__main__":
    main()
