"""A preview decoder for the demo's autoencoder: how close it comes to the full decode, and how much faster it is.

    python benchmarks/bench_preview.py [--work DIR] [--rounds N]

The demo's first stages (the synth pack at 16 kHz mono, sharded; recipes/ae-tiny-cpu.toml trained
on it; both reused when DIR already holds them), then `train_preview` with recipes/preview-cpu.toml
(timed), then `evaluate_autoencoder(..., preview=…)` on the pack's val split: MR-STFT distance, mel
distance and SI-SDR of the full decode and of the preview against the audio, and of the preview
against the full decode. Last, the decode of a 4-bar 128 BPM loop (7.5 s, wrapped context as
generate decodes it) by each decoder at 1 thread, interleaved rounds, medians.

Writes the "Preview decoder" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_loop_speed import BARS, BPM, interleaved  # noqa: E402
from report import machine, write_section  # noqa: E402

from wavediff.config import AERecipe, PreviewRecipe, load_recipe  # noqa: E402
from wavediff.evaluation.reconstruction import evaluate_autoencoder  # noqa: E402
from wavediff.io.audio import loop_samples  # noqa: E402
from wavediff.models.blocks import count_parameters  # noqa: E402
from wavediff.models.checkpoint import latest_checkpoint, read_config  # noqa: E402
from wavediff.models.factory import load_autoencoder, load_preview  # noqa: E402
from wavediff.pipelines.demo import AE_RECIPE, make_demo_shards  # noqa: E402
from wavediff.pipelines.preview import DEFAULT_RECIPE, train_preview  # noqa: E402
from wavediff.training.autoencoder import train_autoencoder  # noqa: E402


def row(name: str, m: dict[str, float]) -> str:
    return f"| {name} | {m['stft']:.3f} | {m['mel']:.3f} | {m['si_sdr']:.2f} dB |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench-preview-out"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start_load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    header = f"{datetime.date.today()}, {machine()}, torch {torch.__version__}, 1 thread"
    shards = make_demo_shards(args.work, progress=False)
    ae_recipe = load_recipe(AE_RECIPE, AERecipe, [f"data.path={shards}"])
    ae_run = args.work / "ae"
    train_autoencoder(ae_recipe, ae_run, progress=False)
    started = time.perf_counter()
    last = train_preview(ae_run, shards, args.work / "preview", progress=False)
    train_s = time.perf_counter() - started
    recipe = load_recipe(DEFAULT_RECIPE, PreviewRecipe)
    result = evaluate_autoencoder(ae_run, shards, "val", device="cpu", preview=last)

    ae, _, ae_id = load_autoencoder(ae_run, "cpu")
    preview = load_preview(last, ae_id, "cpu")
    frames = -(-loop_samples(BPM, BARS, ae_recipe.sample_rate) // ae.hop_length)
    torch.manual_seed(0)
    z = torch.randn(1, ae.latent_dim, frames)
    with torch.inference_mode():
        times = interleaved({"full": lambda: ae.decode_loop(z), "preview": lambda: preview.decode_loop(z)}, args.rounds)
    end_load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    seconds = frames * ae.hop_length / ae_recipe.sample_rate
    full_params, preview_params = count_parameters(ae.decoder), count_parameters(preview)
    text = f"""## Preview decoder

`python benchmarks/bench_preview.py` — {header}.
`uptime` before: `{start_load}`; after: `{end_load}` (a shared machine: absolute times are noisy).

The demo's autoencoder ({AE_RECIPE}, trained {read_config(latest_checkpoint(ae_run)).step} steps on the synth pack at
16 kHz mono; decoder {full_params / 1e3:.0f} k parameters) and a preview decoder of it ({DEFAULT_RECIPE}:
base_channels {recipe.model.base_channels}, {preview_params / 1e3:.1f} k parameters) trained {recipe.train.steps} steps
to match the full decode (MR-STFT + mel + L1 waveform) in {train_s / 60:.1f} min. Reconstruction of the pack's
val split ({result["samples"]} loops; lower distances and higher SI-SDR are better):

| decode | MR-STFT | mel | SI-SDR |
|---|---|---|---|
{row("full decoder vs audio", result)}
{row("preview vs audio", result["preview"])}
{row("preview vs full decode", result["preview_vs_full"])}

Decoding a 4-bar 128 BPM loop ({seconds:.2f} s, {frames} frames, wrapped context), median of {args.rounds} interleaved
rounds: full {times["full"] * 1e3:.0f} ms, preview {times["preview"] * 1e3:.0f} ms (÷ full:
{times["preview"] / times["full"]:.2f}).
"""
    print(text)
    write_section("Preview decoder", text)


if __name__ == "__main__":
    main()
