"""What decoding a loop costs on this CPU, and what makes it cheaper: settings side by side in one process.

    python benchmarks/bench_decode.py [--rounds N] [--quick] [--no-compile]

The 4-bar 128 BPM loop's decode (44.1 kHz stereo, 7.5 s; the ae-44k-stereo decoder, untrained,
    with wrapped context as LoopDiffusion.decode runs it in generate) under each setting, in
    interleaved rounds (torch.compile's first call is its compile, timed apart): the default (no_grad, weight-norm parametrizations, 2 threads), inference_mode, the
    weight norm fused into plain weights, bf16 autocast, torch.compile, 1 thread, chunked decoding
    with overlap (windows of CHUNK frames, each with decoder_context frames either side), and
    preview decoders (models.preview) at two widths. Each setting's largest difference from the
    default's audio is shown, so "exact" is a measurement.
A trained preview decoder's quality is benchmarks/bench_preview.py's ("Preview decoder").

Writes the "Decoding" section of BENCHMARKS.md. --quick: the autoencoder ÷8 wide, one round.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_loop_speed import BARS, BPM, fused_decoder, model, timed  # noqa: E402
from report import allocator, machine, write_section  # noqa: E402

from wavediff.config import PreviewConfig  # noqa: E402
from wavediff.generation.loops import loop_shape  # noqa: E402
from wavediff.models.autoencoder import Autoencoder, LatentDecoding  # noqa: E402
from wavediff.models.blocks import count_parameters  # noqa: E402
from wavediff.models.diffusion import LoopDiffusion  # noqa: E402
from wavediff.models.preview import PreviewDecoder  # noqa: E402

Tensor = torch.Tensor
CHUNK = 32  # latent frames per window of the chunked decode (~1.5 s at 44.1 kHz)
PREVIEW_WIDTHS = (32, 16)  # preview base_channels (ae-44k-stereo's is 128)


def chunked(ae: Autoencoder, z: Tensor, chunk: int) -> Tensor:
    """The decode of z (already wrapped or padded as the caller wants) in windows of `chunk` frames, each
    decoded with decoder_context frames of real neighbours either side and cut back to its own samples."""
    ctx, hop, frames = ae.decoder_context(), ae.hop_length, z.shape[-1]
    pieces = []
    for start in range(0, frames, chunk):
        lo, hi = max(0, start - ctx), min(frames, start + chunk + ctx)
        audio = ae.decode(z[..., lo:hi])
        pieces.append(audio[..., (start - lo) * hop : (min(start + chunk, frames) - lo) * hop])
    return torch.cat(pieces, dim=-1)


class ChunkedDecoder(LatentDecoding):
    """An autoencoder's decoder run in windows (chunked): decode and decode_loop as LatentDecoding's."""

    def __init__(self, ae: Autoencoder, chunk: int) -> None:
        self.cfg = ae.cfg
        self.decoder = lambda z: chunked(ae, z, chunk)


def settings(
    m: LoopDiffusion, latent: Tensor, compile_: bool, divisor: int
) -> tuple[dict[str, Callable[[], Tensor]], dict]:
    """name → a call that decodes the loop under that setting; and notes (compile time or its failure)."""
    fused = fused_decoder(m)
    notes: dict = {}

    def run(model_: LoopDiffusion, mode=torch.no_grad, threads: int = 2, autocast: bool = False, decoder=None):
        def call() -> Tensor:
            torch.set_num_threads(threads)
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with mode(), cast:
                out = model_.decode(latent, loop=True, decoder=decoder)
            torch.set_num_threads(2)
            return out.float()

        return call

    calls = {
        "default (no_grad, weight norm, 2 threads)": run(m),
        "inference_mode": run(m, torch.inference_mode),
        "inference_mode + fused weight norm": run(fused, torch.inference_mode),
        "bf16 autocast (fused, inference_mode)": run(fused, torch.inference_mode, autocast=True),
        "1 thread (fused, inference_mode)": run(fused, torch.inference_mode, threads=1),
        f"chunked, {CHUNK}-frame windows (fused, inference_mode)": run(
            fused, torch.inference_mode, decoder=ChunkedDecoder(fused.autoencoder, CHUNK)
        ),
    }
    if compile_:
        compiled = fused_decoder(m)
        compiled.autoencoder.decoder = torch.compile(compiled.autoencoder.decoder)
        call = run(compiled, torch.inference_mode)
        try:
            notes["compile_s"] = timed(call)
            calls["torch.compile (fused, inference_mode)"] = call
        except Exception as e:  # noqa: BLE001 - a compiler that fails here is a finding, not a crash
            notes["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    for width in PREVIEW_WIDTHS:
        torch.manual_seed(0)
        preview = PreviewDecoder(m.autoencoder.cfg, PreviewConfig(base_channels=max(1, width // divisor))).eval()
        notes[f"preview_{width}_params"] = count_parameters(preview)
        calls[f"preview decoder, base {width} (inference_mode)"] = run(m, torch.inference_mode, decoder=preview)
    return calls, notes


def rounds(calls: dict[str, Callable[[], Tensor]], n: int) -> tuple[dict[str, float], dict[str, list[float]], dict]:
    """(median seconds, every round's seconds, largest difference from the first call's audio) of each call
    over `n` rounds that interleave the calls, so the machine's load falls on all alike. No untimed round
    (a full-size decode costs a minute on a busy 2-core machine): the first round's audio gives the
    differences and its times carry the first calls' costs."""
    reference = None
    diffs: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(n):
        for name, call in calls.items():
            start = time.perf_counter()
            out = call()
            times[name].append(time.perf_counter() - start)
            if i == 0:
                reference = out if reference is None else reference
                diffs[name] = (out - reference).abs().max().item() if out.shape == reference.shape else float("nan")
    return {k: statistics.median(v) for k, v in times.items()}, times, diffs


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start_load = uptime()
    header = f"{datetime.date.today()}, {machine()}, torch {torch.__version__}"
    divisor = 8 if args.quick else 1
    m = model(str(ROOT / "recipes" / "loops-44k.toml"), str(ROOT / "recipes" / "ae-44k-stereo.toml"), divisor)
    shape = loop_shape(m, BPM, BARS, circular=True)
    torch.manual_seed(0)
    latent = torch.randn(1, m.data_channels, shape.frames)
    calls, notes = settings(m, latent, not args.no_compile, divisor)
    with allocator(True):  # freed memory kept for reuse, as every `wavediff` command runs
        medians, every, diffs = rounds(calls, 1 if args.quick else args.rounds)
    end_load = uptime()
    base = next(iter(medians.values()))
    seconds = shape.samples / m.sample_rate
    rows = "\n".join(
        f"| {name} | {medians[name]:.2f} s | {' / '.join(f'{t:.1f}' for t in every[name])} | "
        f"{medians[name] / base:.2f} | {medians[name] / seconds:.2f} | {diffs[name]:.1e} |"
        for name in calls
    )
    compile_note = (
        f"torch.compile's first call (the compile) took {notes['compile_s']:.0f} s."
        if "compile_s" in notes
        else f"torch.compile did not compile here: {notes['compile_error']}."
        if "compile_error" in notes
        else "torch.compile not tried (--no-compile)."
    )
    previews = ", ".join(f"base {w}: {notes[f'preview_{w}_params'] / 1e6:.2f} M" for w in PREVIEW_WIDTHS)
    full = sum(p.numel() for p in m.autoencoder.decoder.parameters())  # frozen inside LoopDiffusion
    text = f"""## Decoding

`python benchmarks/bench_decode.py{" --quick" if args.quick else ""}` — {header}.
`uptime` before: `{start_load}`; after: `{end_load}`. glibc keeps freed memory for reuse, as every `wavediff`
command has it (wavediff.allocator). Absolute times move with the machine's load; the rows ran interleaved in one process ({len(next(iter(every.values())))} rounds, no untimed
one, so the first round carries first-call costs; the median is shown), so their ratios are the comparable figures.

The 4-bar 128 BPM loop ({seconds:.2f} s, 44.1 kHz stereo, {shape.frames} latent frames decoded with
{m.autoencoder.decoder_context()} frames of wrapped context either side as generate decodes it), the ae-44k-stereo
decoder{" ÷8 wide" if args.quick else ""} ({full / 1e6:.1f} M parameters), untrained. "max |Δ|" is the largest
difference from the default's audio (peak ~1 for these weights is not guaranteed: it is absolute). Preview decoders
(untrained, same hop and reach): {previews} parameters. {compile_note}

| setting | median | rounds | ÷ default | ÷ loop length | max \\|Δ\\| |
|---|---|---|---|---|---|
{rows}
"""
    print(text)
    write_section("Decoding", text)


if __name__ == "__main__":
    main()
