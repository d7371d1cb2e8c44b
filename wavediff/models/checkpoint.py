"""Checkpoint folders: save, find and read them (models/factory rebuilds the model).

    RUN/checkpoints/step-000100/
        model.safetensors   the exported (EMA) weights, for inference: never pickled
        config.json         {"kind", "step", "recipe": the whole resolved recipe, ...extras}
        accelerate/         Accelerate's state plus the engine's counters, for exact resume
    RUN/checkpoints/latest  a text file naming the newest complete folder

A folder is written as `step-000100.tmp-<id>` and renamed into place once complete, so a
folder named `step-NNNNNN` is always whole; a crash mid-save leaves only a staging folder,
which the next save clears. The `latest` pointer is written atomically after the rename, and
readers that find it missing or stale fall back to the highest complete step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from wavediff.config import CheckpointConfig, from_dict
from wavediff.errors import CheckpointError, ConfigError
from wavediff.io.files import atomic_write_bytes, atomic_write_json, plain_file_mode

CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_DIR = "accelerate"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
_STAGING = re.compile(r"^step-\d{6,}\.(tmp|old)-")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _folder(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS


def _step_of(path: Path) -> int | None:
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match else None


def _complete(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / CONFIG_FILE).is_file()


# --------------------------------------------------------------------------- saving


def stage_checkpoint(run_dir: str | os.PathLike, step: int, tag: str) -> Path:
    """Make the empty staging folder of a save and clear staging left by an interrupted one.

    One run writes to a run folder at a time (training holds a lock on it: training/runlock.py),
    so any other staging folder there is debris.
    """
    folder = _folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if _STAGING.match(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    staging = folder / f"{checkpoint_name(step)}.tmp-{tag}"
    staging.mkdir()
    return staging


def write_model(folder: Path, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> None:
    """model.safetensors and config.json into a (staging) folder; a failed write is an OSError naming the file."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    try:
        save_file(tensors, str(folder / MODEL_FILE), metadata={"kind": str(config.get("kind", ""))})
    except SafetensorError as e:  # a full disk, a quota: safetensors reports them as its own error
        raise OSError(f"{folder / MODEL_FILE}: cannot write ({e})") from None
    atomic_write_json(folder / CONFIG_FILE, dict(config))


def publish_checkpoint(staging: Path, keep_last: int) -> Path:
    """Rename a staged folder into place, point `latest` at it, and drop all but the newest `keep_last`."""
    if keep_last < 1:
        raise ConfigError(f"train.keep_last must be at least 1, got {keep_last}")
    name, _, tag = staging.name.partition(".tmp-")
    target = staging.with_name(name)
    mode = plain_file_mode()  # safetensors (ours and Accelerate's) writes through 0600 temporary files
    for path in staging.rglob("*"):
        if path.is_file():
            path.chmod(mode)
    if target.exists():  # the same step saved again (a resumed run stopped before its first step)
        old = target.with_name(f"{name}.old-{tag}")
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)
    atomic_write_bytes(target.parent / LATEST, f"{name}\n".encode())
    for stale in _complete_steps(target.parent)[:-keep_last]:
        if stale != target:
            shutil.rmtree(stale)
    return target


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    keep_last: int = 3,
    write_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write RUN/checkpoints/step-NNNNNN atomically; `write_state(folder)` adds resume state before it goes live.

    `config` must hold "kind" and "recipe"; "step" is added. Returns the published folder.
    """
    if "kind" not in config or "recipe" not in config:
        raise ValueError("a checkpoint config needs 'kind' and 'recipe'")
    staging = stage_checkpoint(run_dir, step, str(os.getpid()))
    try:
        write_model(staging, state_dict, {**config, "step": step})
        if write_state is not None:
            write_state(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish_checkpoint(staging, keep_last)


# --------------------------------------------------------------------------- finding


def _complete_steps(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if _step_of(p) is not None and _complete(p)] if folder.is_dir() else []
    return sorted(found, key=_step_of)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run (the `latest` pointer, else the highest step), or None."""
    folder = _folder(run_dir)
    pointer = folder / LATEST
    if pointer.is_file():
        named = folder / pointer.read_text(encoding="utf-8").strip()
        if _step_of(named) is not None and _complete(named):
            return named
    steps = _complete_steps(folder)
    return steps[-1] if steps else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder, or a run's checkpoints folder."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        if not (path / MODEL_FILE).is_file():
            raise CheckpointError(f"{path}: checkpoint has no {MODEL_FILE}")
        return path
    for run_dir in (path, path.parent):
        if (run_dir / CHECKPOINTS).is_dir() and (found := latest_checkpoint(run_dir)) is not None:
            return found
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    raise CheckpointError(
        f"{path}: not a checkpoint (no {CONFIG_FILE}) and no complete checkpoint under {CHECKPOINTS}/"
    )


# --------------------------------------------------------------------------- loading


# The kinds a config.json may name, and the recipe kind each carries (an adapter carries the
# fine-tune's denoiser recipe).
RECIPE_KINDS = {
    "autoencoder": "autoencoder",
    "diffusion": "diffusion",
    "classifier": "classifier",
    "lora": "diffusion",
    "preview": "preview",
}
# What each kind is, for the error that names a checkpoint of the wrong kind.
KIND_NAMES = {
    "autoencoder": "an autoencoder (wavediff train-ae)",
    "diffusion": "a denoiser (wavediff train)",
    "classifier": "a genre classifier (wavediff train-classifier)",
    "lora": "a LoRA adapter (wavediff finetune --lora)",
    "preview": "a preview decoder (wavediff train-preview)",
}


def read_raw_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json as the objective that wrote it made it ({"kind", "recipe", ...}): what the
    engine, which trains any objective, compares on resume. Everything else reads read_config."""
    where = resolve_checkpoint(path) / CONFIG_FILE
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: unreadable ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str) or "recipe" not in raw:
        raise CheckpointError(f"{where}: not a wavediff checkpoint config (needs 'kind' and 'recipe')")
    return raw


def read_config(path: str | os.PathLike, kind: str | None = None) -> CheckpointConfig:
    """The typed config.json of a checkpoint (`path` as for resolve_checkpoint); with `kind`, a
    checkpoint of another kind is refused first, with an error that says what it is."""
    where = resolve_checkpoint(path) / CONFIG_FILE
    raw = read_raw_config(where.parent)
    if kind is not None and raw["kind"] != kind:
        article = KIND_NAMES[raw["kind"]].split()[0] if raw["kind"] in KIND_NAMES else "a"
        raise CheckpointError(f"{where}: {article} {raw['kind']} checkpoint, not {KIND_NAMES.get(kind, kind)}")
    if raw["kind"] not in RECIPE_KINDS:
        raise CheckpointError(f"{where}: checkpoint kind {raw['kind']!r} is not one of {sorted(RECIPE_KINDS)}")
    try:
        config = from_dict(CheckpointConfig, raw)
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None
    if config.recipe.kind != RECIPE_KINDS[config.kind]:
        raise CheckpointError(f"{where}: a {config.kind} checkpoint whose recipe is of kind {config.recipe.kind!r}")
    return config


def load_checkpoint(
    path: str | os.PathLike, kind: str | None = None
) -> tuple[CheckpointConfig, dict[str, torch.Tensor]]:
    """(config.json, EMA state dict) of a checkpoint; `path` and `kind` as for read_config."""
    folder = resolve_checkpoint(path)
    return read_config(folder, kind), read_weights(folder)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The exported (EMA) state dict of a checkpoint; `path` as for resolve_checkpoint."""
    where = resolve_checkpoint(path) / MODEL_FILE
    try:
        return load_file(str(where))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{where}: unreadable ({e})") from None


def unreadable_state_file(folder: Path) -> tuple[Path, str] | None:
    """(file, why) for the first file of a checkpoint's Accelerate state that does not read back
    whole, or None: what a failed resume is reported by, since torch's errors name no file.

    torch.save files are zip archives, checked entry by entry against their CRCs; safetensors
    files are opened, which checks that the header's tensors fit the file.
    """
    for path in sorted(folder.rglob("*")):
        try:
            if path.suffix in (".bin", ".pkl", ".pt", ".pth"):
                with zipfile.ZipFile(path) as archive:
                    if (bad := archive.testzip()) is not None:
                        return path, f"entry {bad} is damaged"
            elif path.suffix == ".safetensors":
                with safe_open(str(path), "pt"):
                    pass
        except (OSError, zipfile.BadZipFile, SafetensorError) as e:
            return path, str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown


def check_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Raise one error that lists the missing, unexpected and misshapen keys, if any (shapes are
    the full ones, also for a sharded model), so every way of loading fails the same way."""
    own = model.state_dict()
    missing = sorted(own.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - own.keys())
    shapes = sorted(
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
        for k in own.keys() & state_dict.keys()
        if own[k].shape != state_dict[k].shape
    )
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the model in its config: " + "; ".join(problems))


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Load strictly, or raise check_weights' error."""
    check_weights(model, state_dict, where)
    model.load_state_dict(state_dict)


def weights_hash(checkpoint: str | os.PathLike) -> str:
    """A checkpoint's model.safetensors, hashed: latents record it of the autoencoder that made
    them and a LoRA adapter of its base, so two checkpoints with the same config are told apart."""
    digest = hashlib.sha256()
    with open(resolve_checkpoint(checkpoint) / MODEL_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
