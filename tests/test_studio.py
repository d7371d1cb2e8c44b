"""`wavediff studio`: the real server in its own process, on a tiny trained checkpoint, driven through
its HTTP JSON API (as a script or a DAW plugin would) and in a real headless browser (Debian's
chromium, driven by Playwright)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_recipes import TINY_DENOISER

from wavediff.cli import main
from wavediff.config import DiffusionRecipe, load_recipe
from wavediff.io.audio import LoopInfo, load, loop_samples, read_loop_info, save
from wavediff.studio.history import History, download_name
from wavediff.training.diffusion import train_diffusion

SR = 8000


@pytest.fixture(scope="module")
def ckpt(latent_pack, tmp_path_factory) -> Path:
    """A tiny denoiser (genres techno and dubstep, 8 kHz mono, 2 sampler steps) in its run folder."""
    root = tmp_path_factory.mktemp("studio")
    overrides = [
        f'data.path="{latent_pack["latents"]}"',
        f'autoencoder="{latent_pack["ae"]}"',
        *TINY_DENOISER,
        "sampling.steps=2",
        "train.steps=4",
        "train.checkpoint_every=4",
        "train.sample_every=0",
    ]
    train_diffusion(load_recipe("loops-tiny-cpu", DiffusionRecipe, overrides), root / "run", progress=False)
    return root / "run"


@contextmanager
def running_studio(ckpt: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen, list[str]]]:
    """`wavediff studio CKPT --port 0 ARGS` in a new process → (its URL, the process, its stderr lines so
    far); stopped with Ctrl-C."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "wavediff.cli", "studio", str(ckpt), "--port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    errors: list[str] = []  # drained as it runs: a full stderr pipe would block the server
    threading.Thread(target=read, daemon=True).start()
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    try:
        line = lines.get(timeout=120)
        if line is None:
            proc.wait(timeout=30)
            drain.join(timeout=10)
            raise AssertionError(f"the studio exited {proc.returncode}: {''.join(errors)}")
        yield re.search(r"(http://\S+)", line).group(1).rstrip("/"), proc, errors
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
            drain.join(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the studio did not stop on Ctrl-C within 60 s; it said: {''.join(errors)}") from None


def call(url: str, path: str, body: Any = None, method: str | None = None, headers: dict | None = None):
    """(status, JSON answer or raw bytes, response headers) of one HTTP request to the studio."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if body is not None and not isinstance(body, bytes) else {}
    request = urllib.request.Request(url + path, data=data, method=method, headers=sent | (headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, raw, got = e.code, e.read(), e.headers
    is_json = got.get("Content-Type", "").startswith("application/json")
    return status, json.loads(raw) if is_json else raw, got


def generate(url: str, **body: Any) -> list[dict]:
    status, job, _ = call(url, "/api/generate", {"bpm": 240, "bars": 1, "wait": True, **body})
    assert status == 200 and job["state"] == "done", job
    return job["loops"]


@pytest.fixture(scope="module")
def studio(ckpt, tmp_path_factory) -> Iterator[str]:
    with running_studio(ckpt, "--history", str(tmp_path_factory.mktemp("history"))) as (url, _, _):
        yield url


# --------------------------------------------------------------------------- the JSON API


def test_the_api_takes_a_key(studio):
    [record] = generate(studio, genre="techno", bpm=120, bars=1, seed=0, key="Gb minor")
    assert record["key"] == "F#m" and record["name"] == "techno-120bpm-F_m-1bars-seed0"  # safe ASCII


def test_the_api_generates_loops_and_serves_them_as_wav_flac_and_mp3(studio, tmp_path):
    loops = generate(studio, genre="techno", bpm=197.3, bars=2, n=2, seed=7, cfg=2.5)
    assert [r["seed"] for r in loops] == [7, 8]
    assert [r["name"] for r in loops] == ["techno-197.3bpm-2bars-seed7", "techno-197.3bpm-2bars-seed8"]
    record = loops[0]
    assert (record["genre"], record["bpm"], record["bars"], record["cfg_scale"], record["steps"]) == (
        "techno",
        197.3,
        2,
        2.5,
        2,
    )
    samples = loop_samples(197.3, 2, SR)
    status, data, headers = call(studio, f"/api/loops/{record['id']}/audio?format=wav&download=1")
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    assert headers["Content-Disposition"] == 'attachment; filename="techno-197.3bpm-2bars-seed7.wav"'
    path = tmp_path / "loop.wav"
    path.write_bytes(data)
    assert load(path)[0].shape == (1, samples)
    loop = read_loop_info(path)
    assert (
        loop is not None
        and loop.bpm == pytest.approx(197.3)
        and loop.beats == 8
        and (loop.start, loop.end) == (0, samples)
    )
    for fmt in ("flac", "mp3"):
        status, data, headers = call(studio, f"/api/loops/{record['id']}/audio?format={fmt}&download=1")
        assert status == 200 and headers["Content-Disposition"].endswith(f'seed7.{fmt}"')
        (tmp_path / f"loop.{fmt}").write_bytes(data)
        wav, sr = load(tmp_path / f"loop.{fmt}")
        assert sr == SR and abs(wav.shape[-1] - samples) <= (0 if fmt == "flac" else 1152)  # mp3 pads frames
    status, listed, _ = call(studio, "/api/loops")
    assert {r["id"] for r in loops} <= {r["id"] for r in listed}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/generate", {"bpm": 1000}, "bpm must be between 20 and 400, got 1000"),
        ("/api/generate", {}, "bpm is required"),
        ("/api/generate", {"bpm": 120, "n": 9}, "n must be between 1 and 8, got 9"),
        ("/api/generate", {"bpm": 120, "steps": "many"}, "steps must be a number, got 'many'"),
        ("/api/generate", {"bpm": 120, "bars": 1.5}, "bars must be a whole number, got 1.5"),
        ("/api/generate", {"bpm": 120, "genre": "polka"}, "polka"),
        ("/api/generate", {"bpm": 120, "key": "H minor"}, "unknown key 'H minor'"),
        ("/api/generate", {"bpm": 120, "sampler": "magic"}, "unknown sampler 'magic'"),
        ("/api/generate", {"bpm": 120, "bmp": 120}, "unknown field 'bmp'"),
        ("/api/vary", {"strength": 0.5}, "source is required"),
        ("/api/teleport", {}, "unknown request 'teleport'"),
    ],
)
def test_bad_values_are_refused_at_once_with_a_message(studio, path, body, message):
    status, answer, _ = call(studio, path, body)
    assert status == 400 and message in answer["error"], answer


def test_it_answers_on_localhost_only_and_refuses_unknown_ids(studio):
    assert studio.startswith("http://127.0.0.1:")  # the default address
    status, answer, _ = call(studio, "/api/loops/nope/audio")
    assert status == 404 and "no loop 'nope'" in answer["error"]
    status, answer, _ = call(studio, "/api/jobs/nope")
    assert status == 404
    # DNS rebinding: a page from another site that resolves its name to 127.0.0.1
    status, answer, _ = call(studio, "/api/info", headers={"Host": "evil.example:7860"})
    assert status == 403 and "loopback" in answer["error"]
    # a cross-site form can post text/plain without asking first: refused
    status, answer, _ = call(studio, "/api/generate", b'{"bpm": 120}', headers={"Content-Type": "text/plain"})
    assert status == 415


def test_regenerate_vary_inpaint_and_extend_a_loop(studio, tmp_path):
    (source,) = generate(studio, genre="dubstep", bars=2, seed=3)
    status, again, _ = call(studio, "/api/regenerate", {"source": source["id"], "wait": True})
    (regenerated,) = again["loops"]
    assert regenerated["seed"] != 3 and regenerated["kind"] == "generate"
    assert {k: regenerated[k] for k in ("genre", "bpm", "bars", "steps", "cfg_scale", "sampler")} == {
        k: source[k] for k in ("genre", "bpm", "bars", "steps", "cfg_scale", "sampler")
    }
    original = load(Path(call(studio, "/api/info")[1]["history"]) / f"{source['id']}.wav")[0]

    status, job, _ = call(studio, "/api/inpaint", {"source": source["id"], "bar": 2, "seed": 5, "wait": True})
    (inpainted,) = job["loops"]
    bar = loop_samples(240, 1, SR)
    wav = load(Path(call(studio, "/api/info")[1]["history"]) / f"{inpainted['id']}.wav")[0]
    assert wav.shape == original.shape and inpainted["name"] == "dubstep-240bpm-2bars-seed5-inpaint"
    fade = round(0.01 * SR)
    torch.testing.assert_close(wav[:, : bar - fade], original[:, : bar - fade], atol=1e-4, rtol=0)
    assert inpainted["start"] == pytest.approx(1.0) and inpainted["end"] == pytest.approx(2.0)

    status, job, _ = call(studio, "/api/extend", {"source": source["id"], "bars": 1, "wait": True})
    (extended,) = job["loops"]
    assert extended["bars"] == 3 and extended["samples"] == loop_samples(240, 3, SR)
    status, data, _ = call(studio, f"/api/loops/{extended['id']}/audio")
    (tmp_path / "extended.wav").write_bytes(data)
    assert read_loop_info(tmp_path / "extended.wav").beats == 12

    status, job, _ = call(studio, "/api/vary", {"source": extended["id"], "strength": 0.3, "n": 2, "wait": True})
    assert [r["kind"] for r in job["loops"]] == ["vary", "vary"] and job["loops"][0]["strength"] == 0.3
    assert job["loops"][0]["parent"] == extended["id"] and job["loops"][0]["samples"] == extended["samples"]
    status, job, _ = call(studio, "/api/regenerate", {"source": job["loops"][0]["id"], "seed": 11, "wait": True})
    assert job["loops"][0]["kind"] == "vary" and job["loops"][0]["seed"] == 11 and job["loops"][0]["strength"] == 0.3


def test_an_uploaded_loop_keeps_its_tempo_and_can_be_varied_and_inpainted(studio, tmp_path):
    t = torch.arange(32000) / 16000  # 2 bars at 240 bpm, stereo at 16 kHz: conformed to the model's 8 kHz mono
    kick = torch.sin(2 * torch.pi * 60 * t) * torch.exp(-(t % 0.25) * 12) * 0.5
    path = save(tmp_path / "my-drums.wav", torch.stack([kick, kick]), 16000, loop=LoopInfo(bpm=240, beats=8))
    status, record, _ = call(
        studio, "/api/upload?name=my-drums.wav", path.read_bytes(), headers={"Content-Type": "audio/wav"}
    )
    assert status == 201, record
    assert (record["kind"], record["bpm"], record["bars"], record["samples"]) == ("upload", 240, 2, 16000)
    assert record["name"] == "my-drums"
    status, job, _ = call(studio, "/api/inpaint", {"source": record["id"], "bar": 1, "wait": True})
    assert job["state"] == "done" and job["loops"][0]["samples"] == 16000
    status, job, _ = call(studio, "/api/vary", {"source": record["id"], "strength": 0.5, "wait": True})
    assert job["loops"][0]["name"].startswith("loop-240bpm-2bars-seed")
    status, answer, _ = call(studio, "/api/regenerate", {"source": record["id"]})
    assert status == 400 and "uploaded" in answer["error"]
    # no acid chunk (a FLAC): the tempo from the file name, as the sharder reads it; the bars from the length
    flac = save(tmp_path / "hats_240bpm.flac", torch.randn(1, 8000 * 3) * 0.1, 8000)
    status, record, _ = call(
        studio, f"/api/upload?name={flac.name}", flac.read_bytes(), headers={"Content-Type": "audio/flac"}
    )
    assert status == 201 and (record["bpm"], record["bars"], record["name"]) == (240, 3, "hats_240bpm")
    status, answer, _ = call(studio, "/api/upload?name=x.wav", b"not audio", headers={"Content-Type": "audio/wav"})
    assert status == 400 and "x.wav" in answer["error"]


def test_slow_requests_say_so_before_they_start(studio):
    status, quick, _ = call(studio, "/api/estimate", {"kind": "generate", "bpm": 240, "bars": 1, "steps": 2})
    assert status == 200 and not quick["slow"] and quick["seconds"] < 5
    big = {"bpm": 20, "bars": 32, "n": 8, "steps": 500, "sampler": "heun"}
    status, slow, _ = call(studio, "/api/estimate", {"kind": "generate", **big})
    assert slow["slow"] and slow["seconds"] > 60 and re.search(r"about [\d.]+ (min|h) on cpu", slow["text"]), slow
    assert "slow" in slow["text"]
    status, answer, _ = call(studio, "/api/estimate", {"kind": "generate", "bpm": 0})
    assert status == 400 and "bpm" in answer["error"]


def test_requests_queue_show_progress_and_can_be_cancelled(studio):
    long = {"bpm": 240, "bars": 1, "steps": 500, "sampler": "euler"}  # seconds of 500 short calls
    status, first, _ = call(studio, "/api/generate", long)
    assert status == 202 and first["state"] in ("queued", "running")
    status, second, _ = call(studio, "/api/generate", {"bpm": 240, "bars": 1})
    deadline = time.monotonic() + 60
    while (first := call(studio, f"/api/jobs/{first['id']}")[1])["progress"] == 0:
        assert time.monotonic() < deadline and first["state"] in ("queued", "running"), first
        time.sleep(0.05)
    second = call(studio, f"/api/jobs/{second['id']}")[1]
    assert first["state"] == "running" and 0 < first["progress"] < 1 and first["remaining_s"] < first["estimate_s"]
    assert second["state"] == "queued" and second["position"] == 1
    assert call(studio, f"/api/jobs/{second['id']}", method="DELETE")[1]["state"] == "cancelled"
    call(studio, f"/api/jobs/{first['id']}", method="DELETE")
    while (first := call(studio, f"/api/jobs/{first['id']}")[1])["state"] == "running":
        time.sleep(0.05)
    assert first["state"] == "cancelled" and first["loops"] == []
    assert generate(studio)  # the worker goes on


# --------------------------------------------------------------------------- the history and the command


def test_the_history_survives_a_restart_and_is_capped(tmp_path):
    audio = torch.randn(2, 1, 4000) * 0.1
    info = {"genre": "techno", "bpm": 480, "bars": 1, "seeds": [0, 1], "sample_rate": SR, "samples": 4000}
    history = History(tmp_path, cap_bytes=50_000)  # room for about 5 loops of 8 kB
    made = [r["id"] for _ in range(5) for r in history.add(audio, info)]
    kept = [r["id"] for r in History(tmp_path, cap_bytes=50_000).records()]
    assert kept == [r["id"] for r in history.records()]
    assert kept and len(kept) < len(made) and kept == made[::-1][: len(kept)]  # the newest, newest first
    assert sorted(p.stem for p in tmp_path.glob("*.wav")) == sorted(kept)
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 50_000
    assert read_loop_info(history.wav(kept[0])).bpm == 480
    (tmp_path / "garbled.json").write_text("{")
    (tmp_path / "garbled.wav").write_bytes(b"")
    reopened = History(tmp_path, cap_bytes=50_000)
    assert len(reopened.records()) == len(kept) and "garbled.json" in reopened.skipped[0]


def test_download_names_are_the_settings_in_safe_ascii():
    assert download_name({"genre": "techno", "bpm": 128, "bars": 4, "seed": 7}) == "techno-128bpm-4bars-seed7"
    assert download_name({"kind": "inpaint", "bpm": 92.5, "bars": 2, "seed": 1}) == "loop-92.5bpm-2bars-seed1-inpaint"
    assert download_name({"kind": "upload", "upload": 'my "drums"\r\nX: 1.wav'}) == "my__drums___X__1"


@pytest.mark.slow  # a second server process: ~25 s on the busy 2-core machine
def test_bound_elsewhere_it_warns_and_by_default_keeps_the_history_in_the_run_folder(ckpt):
    with running_studio(ckpt, "--host", "0.0.0.0") as (url, proc, errors):
        (record,) = generate(url)
    assert proc.returncode == 0  # Ctrl-C stops it cleanly
    assert "warning: listening on 0.0.0.0, not localhost" in "".join(errors)
    assert (ckpt / "studio" / f"{record['id']}.wav").is_file()
    assert json.loads((ckpt / "studio" / f"{record['id']}.json").read_text())["checkpoint"] == str(ckpt)
    shutil.rmtree(ckpt / "studio")


def test_ctrl_c_waits_only_so_long_for_what_cannot_be_cancelled(ckpt, tmp_path, monkeypatch, capsys):
    """The start-up calibration (like a decode) checks no cancel flag: closing waits for it at most
    CLOSE_WAIT_SECONDS, then leaves the daemon worker to die with the process."""
    from wavediff.models.factory import load_denoiser
    from wavediff.studio import jobs

    stuck = threading.Event()
    monkeypatch.setattr(jobs, "calibrate", lambda model: stuck.wait(60) or jobs.CostModel(per_frame=0.0))
    monkeypatch.setattr(jobs, "CLOSE_WAIT_SECONDS", 0.5)
    studio = jobs.Studio(load_denoiser(ckpt, "cpu"), History(tmp_path / "history", 10**8), {"checkpoint": str(ckpt)})
    started = time.monotonic()
    studio.close()
    assert time.monotonic() - started < 5
    assert "stopped without waiting for the running job" in capsys.readouterr().err
    stuck.set()


@pytest.mark.slow  # a server process per signal
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_it_cleanly_even_started_in_the_background(ckpt, tmp_path, number):
    """`wavediff studio … &` in a script starts with SIGINT ignored (POSIX shells do that to background
    jobs): Ctrl-C must still stop it, and so must a plain `kill`."""
    command = [sys.executable, "-m", "wavediff.cli", "studio", str(ckpt), "--port", "0"]
    command += ["--history", str(tmp_path / "history")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ignored = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731 (as the shell leaves it)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, preexec_fn=ignored
    )
    try:
        assert "http://" in proc.stdout.readline()
        proc.send_signal(number)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["studio", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"wavediff: error: {tmp_path / 'nope'}: no such checkpoint or run folder"
    ]


# --------------------------------------------------------------------------- in a real browser


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's chromium (.ci/run installs it), driven by Playwright (the dev extra); else a skip naming the gap
NO_BROWSER = (
    "the playwright package is not installed: pip install -e '.[dev]'"
    if importlib.util.find_spec("playwright") is None
    else "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)"
    if CHROMIUM is None
    else None
)


@pytest.mark.slow
@pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))
def test_the_page_in_a_real_browser(ckpt, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    with running_studio(ckpt, "--history", str(tmp_path / "history")) as (url, _, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # 1. open the page
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#estimate")).to_contain_text("Generate takes about")
        # 2. generate 2 variations
        page.select_option("#genre", "techno")
        page.fill("#bpm", "240")
        page.fill("#bars", "2")
        page.fill("#n", "2")
        page.fill("#seed", "42")
        page.click("#generate")
        cards = page.locator(".card")
        expect(cards).to_have_count(2, timeout=60_000)
        expect(cards.nth(0).locator(".title")).to_have_text("techno-240bpm-2bars-seed42")
        expect(cards.nth(1).locator(".title")).to_have_text("techno-240bpm-2bars-seed43")
        # 3. play one: the first new loop plays at once, on loop, and its position advances; play switches
        expect(cards.nth(0)).to_have_class(re.compile("playing"))
        page.wait_for_function("window.studio.player.ctx.state === 'running' && window.studio.position() > 0")
        before = page.evaluate("window.studio.position()")
        page.wait_for_timeout(400)
        after = page.evaluate("window.studio.position()")
        assert after != before and page.evaluate("window.studio.player.node.loop") is True
        assert page.evaluate("window.studio.player.duration") == pytest.approx(2.0, abs=1e-3)
        cards.nth(1).locator(".play").click()
        expect(cards.nth(1)).to_have_class(re.compile("playing"))
        expect(cards.nth(0)).not_to_have_class(re.compile("playing"))
        assert page.evaluate("window.studio.player.id") == cards.nth(1).get_attribute("data-id")
        # 4. regenerate one: a third card, beside its source, with a new seed, playing
        cards.nth(0).locator(".regen").click()
        expect(cards).to_have_count(3, timeout=60_000)
        title = cards.nth(1).locator(".title").inner_text()
        assert title.startswith("techno-240bpm-2bars-seed") and title != "techno-240bpm-2bars-seed42"
        expect(cards.nth(1)).to_have_class(re.compile("playing"))
        # 5. download a WAV: its name, length and loop chunks
        with page.expect_download() as download:
            cards.nth(0).locator("a.download").click()
        assert download.value.suggested_filename == "techno-240bpm-2bars-seed42.wav"
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        assert load(path)[0].shape == (1, loop_samples(240, 2, SR))
        loop = read_loop_info(path)
        assert loop is not None and loop.bpm == 240 and loop.beats == 8 and loop.end == loop_samples(240, 2, SR)
        # a bad value is refused with a message on the page
        page.fill("#bpm", "1000")
        expect(page.locator("#estimate")).to_contain_text("bpm must be between 20 and 400")
        page.click("#generate")
        expect(page.locator("#message")).to_contain_text("bpm must be between 20 and 400, got 1000")
        # 6. the JSON API: a loop made by a script shows in the page's history
        (made,) = generate(url, genre="dubstep", seed=99)
        page.reload()
        expect(page.locator(f'#history tr[data-id="{made["id"]}"]')).to_contain_text("dubstep-240bpm-1bars-seed99")
        expect(page.locator("#history tr")).to_have_count(4)
        page.locator(f'#history tr[data-id="{made["id"]}"] button').click()
        expect(page.locator(f'.card[data-id="{made["id"]}"]')).to_be_visible()
        # and a screenshot that is not blank
        page.fill("#bpm", "240")
        page.locator("#history tr button").nth(1).click()
        page.wait_for_timeout(300)
        shot = page.screenshot(full_page=True)
        browser.close()
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert image.size[0] == 1280 and colors is not None and len(colors) > 50, "a blank screenshot"
    assert max(count for count, _ in colors) < 0.9 * image.size[0] * image.size[1]
    assert not errors, errors
    if os.environ.get("STUDIO_SCREENSHOT"):  # how wavediff/studio/screenshot.png is made
        Path(os.environ["STUDIO_SCREENSHOT"]).write_bytes(shot)
