"""LoRA checkpoints: load one, apply it to its base denoiser, or bake it into an ordinary checkpoint.

A LoRA checkpoint (kind "lora") holds the adapter tensors and a config naming its base: the
base's path when trained and the hash of its model.safetensors, which must match the base it
is applied to (an adapter on other weights would add its deltas to the wrong thing). Its
recipe is the fine-tune's, so its genre vocabulary is the base's plus any genre the pack
added; applying it grows the base's vocabulary first (wavediff.genres).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wavediff.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from wavediff.diffusion import LoopDiffusion
from wavediff.encode import autoencoder_id
from wavediff.genres import with_genres
from wavediff.models.lora import LoraAdapters, merge_adapters
from wavediff.sampling import load_denoiser


def load_lora(path: str | os.PathLike) -> tuple[LoraAdapters, dict[str, Any]]:
    """(adapters, config.json) of a LoRA checkpoint or run folder."""
    folder = resolve_checkpoint(path)
    config, state = load_checkpoint(folder)
    if config["kind"] != "lora" or "lora" not in config or "base" not in config:
        raise CheckpointError(f"{folder}: a {config['kind']} checkpoint, not a LoRA adapter (wavediff finetune --lora)")
    adapters = LoraAdapters.from_config(config["lora"])
    # the run exports its LoraModel, whose only submodule is `adapters`
    load_weights(adapters, {k.removeprefix("adapters."): v for k, v in state.items()}, folder / MODEL_FILE)
    return adapters, config


def apply_lora(model: LoopDiffusion, adapters: LoraAdapters, config: dict[str, Any], scale: float = 1.0) -> LoopDiffusion:
    """The base `model` with the adapters added at `scale` (1: as trained, 0: the base with the grown vocabulary)."""
    grown = with_genres(model, config["recipe"]["conditioning"]["genres"])
    return merge_adapters(grown, adapters, scale)


def load_with_lora(
    checkpoint: str | os.PathLike, lora: str | os.PathLike, scale: float = 1.0, device: str | torch.device | None = None
) -> LoopDiffusion:
    """The denoiser of `checkpoint` with the adapter `lora` applied; refuses an adapter trained on other weights."""
    base = resolve_checkpoint(checkpoint)
    adapters, config = load_lora(lora)
    have, want = autoencoder_id(base), config["base"]["hash"]
    if have != want:
        raise CheckpointError(
            f"{lora}: adapter trained on base {config['base']['path']} (weights {want}), "
            f"but {checkpoint} has weights {have}"
        )
    model = load_denoiser(base, "cpu")
    return apply_lora(model, adapters, config, scale).to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def merge_lora(
    checkpoint: str | os.PathLike, lora: str | os.PathLike, out: str | os.PathLike, scale: float = 1.0
) -> Path:
    """Write base + adapter as an ordinary denoiser checkpoint in run folder `out`; returns its folder."""
    model = load_with_lora(checkpoint, lora, scale, "cpu")
    base_config, _ = load_checkpoint(checkpoint)
    _, config = load_lora(lora)
    merged = {
        "kind": "diffusion",
        "recipe": config["recipe"],
        "autoencoder": base_config.get("autoencoder"),
        "merged": {"base": str(resolve_checkpoint(checkpoint)), "lora": str(resolve_checkpoint(lora)), "scale": scale},
    }
    return save_checkpoint(out, int(config.get("step", 0)), model.state_dict(), merged)
