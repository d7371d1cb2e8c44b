"""The reference implementations the interop tests compare against, installed from PyPI with
`--no-deps` into a folder of their own (never into the project's environment), so their heavy
pins (gradio, lightning, wandb, transformers, …) stay out. What each needs beyond its own
package was found by importing it until it stopped asking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# stable-audio-tools' autoencoders module imports these two besides what wavediff already has
# (k-diffusion, huggingface_hub through accelerate, einops, torchaudio).
STABLE_AUDIO_TOOLS = ["stable-audio-tools==0.0.19", "alias-free-torch==0.0.6", "einops-exts==0.0.4"]
# diffusers' own dependencies (huggingface_hub, safetensors, requests, filelock, Pillow, regex)
# are all in wavediff's environment already.
DIFFUSERS = ["diffusers==0.42.1"]
# torchaudio (2.9 on) decodes through torchcodec, which loads FFmpeg's shared libraries
# (Debian: the ffmpeg package; .ci/run installs it).
TORCHCODEC = ["torchcodec==0.17.0"]

_OFFLINE = (
    "No matching distribution",
    "Could not find a version",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectionError",
    "Read timed out",
)


def install(target: Path, requirements: list[str]) -> None:
    """pip install `requirements` (no dependencies) into `target` and put it on sys.path; skip the
    test only when PyPI cannot be reached, fail on anything else."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check"]
    done = subprocess.run([*cmd, "--target", str(target), *requirements], capture_output=True, text=True)
    if done.returncode != 0:
        if any(marker in done.stdout + done.stderr for marker in _OFFLINE):
            pytest.skip(f"PyPI unreachable, cannot install {' '.join(requirements)}")
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{done.stdout}{done.stderr}")
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))


@pytest.fixture(scope="session", name="stable_audio_tools")
def stable_audio_tools_fixture(tmp_path_factory):
    """stable-audio-tools, importable for the session."""
    install(tmp_path_factory.mktemp("stable-audio-tools"), STABLE_AUDIO_TOOLS)


@pytest.fixture(scope="session", name="diffusers")
def diffusers_fixture(tmp_path_factory):
    """diffusers, importable for the session."""
    install(tmp_path_factory.mktemp("diffusers"), DIFFUSERS)


@pytest.fixture(scope="session", name="torchcodec")
def torchcodec_fixture(tmp_path_factory):
    """torchcodec, importable for the session, when FFmpeg's libraries are installed."""
    import ctypes.util

    if ctypes.util.find_library("avcodec") is None:
        pytest.skip("FFmpeg's libraries are not installed (apt-get install ffmpeg; CI's .ci/run does)")
    install(tmp_path_factory.mktemp("torchcodec"), TORCHCODEC)
