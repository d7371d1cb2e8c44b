"""The studio on a CPU: time from pressing Generate to hearing a 4-bar loop.

    .venv/bin/python benchmarks/bench_studio.py [--demo demo-out] [--runs 4] [--bpm 120] [--bars 4] [--threads 1 2]

Starts `wavediff studio` (once per --threads value: its torch threads) on the demo's denoiser (DEMO/denoiser, after `wavediff demo`; without
one, the demo's own recipes trained STAND_IN_STEPS steps each into --work: the time depends on
the architecture and the sampler settings, not on the weights). Opens the page in Debian's
chromium through Playwright, as a person would, and for each run rolls a new seed, presses
Generate (one variation, genre techno, the checkpoint's sampler settings) and waits until the new
loop is playing (the page plays each new loop; the Web Audio position has moved past 0). The first
run is cold (the first sampling of the process); the figure is the median of the others. Beside it:
the server's own time for the job (queue to saved WAV) and the estimate the page showed before the
press. Writes the "Studio" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from wavediff.latents.encode import encode_shards
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.pipelines.demo import make_demo_shards, train_demo_autoencoder, train_demo_denoiser
from wavediff.shards.format import MANIFEST_NAME

STAND_IN_STEPS = 10


def demo_checkpoint(demo: Path, work: Path) -> tuple[Path, str]:
    """(the denoiser checkpoint, how it was made): the demo's, else a stand-in with the demo's recipes."""
    found = latest_checkpoint(demo / "denoiser")
    if found is not None:
        return found, f"the demo's denoiser, `{found}`"
    shards = make_demo_shards(work, progress=False)
    ae = train_demo_autoencoder(work, shards, STAND_IN_STEPS, progress=False)
    if not (work / "latents" / MANIFEST_NAME).exists():
        encode_shards(ae, shards, work / "latents", progress=False)
    denoiser = train_demo_denoiser(work, work / "latents", ae, STAND_IN_STEPS, progress=False)
    how = (
        f"no demo checkpoint here, so a stand-in with the demo's architecture: its recipes (ae-tiny-cpu, "
        f"loops-tiny-cpu, 16 kHz mono) on its pack, trained {STAND_IN_STEPS} steps each"
    )
    return denoiser, how


def measure(ckpt: Path, work: Path, runs: int, bpm: float, bars: int, threads: int) -> tuple[list[dict], dict]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or sys.exit("needs Debian's chromium: apt-get install -y chromium")
    command = [sys.executable, "-m", "wavediff.cli", "studio", str(ckpt), "--port", "0", "--history", str(work / "h")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = re.search(r"(http://\S+)", server.stdout.readline()).group(1).rstrip("/")
        with urllib.request.urlopen(f"{url}/api/info") as response:
            info = json.load(response)
        results = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            page.select_option("#genre", "techno")
            page.fill("#bpm", f"{bpm:g}")
            page.fill("#bars", str(bars))
            page.fill("#n", "1")
            for _ in range(runs):
                page.click("#dice")
                page.fill("#steps", str(info["defaults"]["steps"]))  # an input event: the estimate is asked again
                page.wait_for_function("document.getElementById('estimate').textContent.startsWith('Generate takes')")
                page.wait_for_timeout(500)
                estimate = page.inner_text("#estimate")
                cards = page.locator(".card").count()
                started = time.perf_counter()
                page.click("#generate")
                page.wait_for_function(
                    f"document.querySelectorAll('.card').length > {cards} && window.studio.player.id === "
                    "document.querySelector('.card').dataset.id && window.studio.position() > 0",
                    timeout=600_000,
                    polling=10,
                )
                heard = time.perf_counter() - started
                with urllib.request.urlopen(f"{url}/api/jobs") as response:
                    job = json.load(response)[-1]
                results.append({"heard_s": heard, "job_s": job["elapsed_s"], "estimate": estimate})
                print(f"pressed → heard {heard:.2f} s (job {job['elapsed_s']:.2f} s; the page said: {estimate})")
            browser.close()
        return results, info
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-studio"))
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--bars", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="the server's torch threads (OMP_NUM_THREADS), each"
    )
    args = parser.parse_args()
    load = machine()
    ckpt, how = demo_checkpoint(args.demo, args.work)
    rows, lines = [], []
    for threads in args.threads:
        results, info = measure(ckpt, args.work, args.runs, args.bpm, args.bars, threads)
        warm = results[1:] or results
        heard = statistics.median(r["heard_s"] for r in warm)
        job = statistics.median(r["job_s"] for r in warm)
        lines.append(f"{threads} thread{'s' * (threads > 1)}: **{heard:.1f} s** (the server's job {job:.1f} s of it)")
        rows += [
            f"| {threads} | {i + 1}{' (cold)' * (i == 0)} | {r['heard_s']:.2f} s | {r['job_s']:.2f} s | {r['estimate']} |"
            for i, r in enumerate(results)
        ]
    seconds = args.bars * 4 * 60 / args.bpm
    d = info["defaults"]
    table = "\n".join(rows)
    text = f"""## Studio

{datetime.date.today()}, {load}. `python benchmarks/bench_studio.py --runs {args.runs}`: {how}.
`wavediff studio` on the CPU ({info["device"]}), its page in Debian's chromium (headless, through
Playwright); each run rolls a seed and presses Generate for one {args.bars}-bar techno loop at
{args.bpm:g} BPM ({seconds:g} s of audio) with the checkpoint's settings ({d["sampler"]}, {d["steps"]} steps,
CFG {d["cfg"]:g}) and waits until the page plays it.

Pressing Generate to hearing the loop, median of the warm runs: {"; ".join(lines)}. The rest is
the page's polling (every 0.2 s), fetching and decoding the WAV and starting playback. The last
column is the estimate the page showed before each press: timed at start-up, then corrected by
each finished job.

| torch threads | run | pressed → heard | job on the server | what the page said before the press |
| --- | --- | --- | --- | --- |
{table}
"""
    print(f"wrote {write_section('Studio', text)}")


if __name__ == "__main__":
    main()
