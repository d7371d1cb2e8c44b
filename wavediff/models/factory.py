"""Every checkpoint kind rebuilt from its config.json alone: autoencoder, denoiser, classifier,
and LoRA adapter (applied to its base, or baked into an ordinary checkpoint).

A LoRA checkpoint (kind "lora") holds the adapter tensors and a config naming its base: the
base's path when trained and the hash of its model.safetensors, which must match the base it
is applied to (an adapter on other weights would add its deltas to the wrong thing). Its
recipe is the fine-tune's, so its genre vocabulary is the base's plus any genre the pack
added; applying it grows the base's vocabulary first (wavediff.models.genres).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from wavediff.config import AERecipe, CheckpointConfig, MergedFrom, to_dict
from wavediff.errors import CheckpointError, ConfigError, UserError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    load_checkpoint,
    load_weights,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
    weights_hash,
)
from wavediff.models.classifier import GenreClassifier
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.genres import with_genres
from wavediff.models.lora import LoraAdapters, merge_adapters
from wavediff.models.preview import PreviewDecoder


def _build_autoencoder(config: CheckpointConfig) -> nn.Module:
    return Autoencoder(config.recipe.model)


def _build_diffusion(config: CheckpointConfig) -> nn.Module:
    """The denoiser with its embedded autoencoder, if it has one."""
    embedded = config.autoencoder
    return LoopDiffusion(config.recipe, Autoencoder(embedded.recipe.model) if embedded else None)


def _build_classifier(config: CheckpointConfig) -> nn.Module:
    return GenreClassifier(config.recipe)


def _build_preview(config: CheckpointConfig) -> nn.Module:
    """A preview decoder: its autoencoder's decoder at the recipe's widths."""
    if config.autoencoder is None:
        raise ConfigError("a preview decoder's config needs 'autoencoder' (the one it matches)")
    return PreviewDecoder(config.autoencoder.recipe.model, config.recipe.model)


# kind → builder from a checkpoint's config.json; each trainable kind registers here.
BUILDERS: dict[str, Callable[[CheckpointConfig], nn.Module]] = {
    "autoencoder": _build_autoencoder,
    "diffusion": _build_diffusion,
    "classifier": _build_classifier,
    "preview": _build_preview,
}


def build_model(config: CheckpointConfig) -> nn.Module:
    """The untrained model a checkpoint config describes."""
    if config.kind not in BUILDERS:
        raise CheckpointError(f"a {config.kind} checkpoint holds no whole model (kinds: {sorted(BUILDERS)})")
    try:
        return BUILDERS[config.kind](config)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config: {e}") from None


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_device(device: str | torch.device | None) -> torch.device:
    """`device` (None: a GPU when there is one), checked before any weights move: a name torch
    does not know, or a device this machine lacks, is a UserError saying what it has."""
    if device is None:
        return torch.device(_default_device())
    try:
        found = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"device {str(device)!r}: not a device name (cpu, cuda, cuda:1, mps, …)") from None
    if found.type in ("cpu", "meta"):
        return found
    have = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    count = torch.accelerator.device_count() if have is not None and have.type == found.type else 0
    if count == 0:
        raise UserError(f"device {str(device)!r}: this machine has no {found.type} device")
    if found.index is not None and found.index >= count:
        raise UserError(
            f"device {str(device)!r}: this machine has {count} {found.type} device(s), "
            f"{found.type}:0 to {found.type}:{count - 1}"
        )
    return found


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None) -> nn.Module:
    """The exported (EMA) model of a checkpoint or run folder, rebuilt from config.json, in eval
    mode; with `kind`, a checkpoint of another kind is refused before anything is built."""
    device = usable_device(device)
    folder = resolve_checkpoint(path)
    config, state = load_checkpoint(folder, kind)
    try:
        model = build_model(config)
    except CheckpointError as e:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {e}") from None
    load_weights(model, state, folder / MODEL_FILE)
    return model.to(device).eval()


def load_autoencoder(
    checkpoint: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[Autoencoder, AERecipe, str]:
    """(model in eval mode on `device`, its recipe, its weights' hash) from a checkpoint or run
    folder; the device defaults to the GPU when there is one."""
    folder = resolve_checkpoint(checkpoint)
    model = load_model(folder, device or _default_device(), "autoencoder")
    return model, read_config(folder).recipe, weights_hash(folder)


def load_denoiser(checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> LoopDiffusion:
    """The EMA denoiser of a checkpoint or run folder, on `device` (default: a GPU when there is one)."""
    return load_model(checkpoint, device or _default_device(), "diffusion")


def load_classifier(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> GenreClassifier:
    """The genre classifier of a checkpoint or run folder (`wavediff train-classifier`)."""
    return load_model(checkpoint, device, "classifier")


def autoencoder_id(checkpoint: str | os.PathLike) -> str:
    """The weights hash of an autoencoder checkpoint, or of the autoencoder a denoiser embeds."""
    folder = resolve_checkpoint(checkpoint)
    config = read_config(folder)
    if config.kind == "autoencoder":
        return weights_hash(folder)
    if config.autoencoder is None:
        raise CheckpointError(f"{folder / CONFIG_FILE}: a {config.kind} checkpoint with no autoencoder")
    return config.autoencoder.id


def load_preview(path: str | os.PathLike, autoencoder_id: str, device: str | torch.device = "cpu") -> PreviewDecoder:
    """The preview decoder of a checkpoint or run folder (`wavediff train-preview`), refused unless it
    was trained on the autoencoder whose weights hash to `autoencoder_id`: on other latents it decodes noise."""
    folder = resolve_checkpoint(path)
    want = read_config(folder, "preview").autoencoder
    if want is None or want.id != autoencoder_id:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: preview decoder trained on autoencoder {want.id if want else '(none)'}, "
            f"but this model's autoencoder is {autoencoder_id}"
        )
    return load_model(folder, device, "preview")


# --------------------------------------------------------------------------- LoRA adapters


def load_lora(path: str | os.PathLike) -> tuple[LoraAdapters, CheckpointConfig]:
    """(adapters, config.json) of a LoRA checkpoint or run folder."""
    folder = resolve_checkpoint(path)
    config, state = load_checkpoint(folder, "lora")
    if config.lora is None or config.base is None:
        raise CheckpointError(f"{folder / CONFIG_FILE}: a LoRA checkpoint needs 'lora' and 'base'")
    adapters = LoraAdapters.from_config(config.lora)
    # the run exports its LoraModel, whose only submodule is `adapters`
    load_weights(adapters, {k.removeprefix("adapters."): v for k, v in state.items()}, folder / MODEL_FILE)
    return adapters, config


def apply_lora(
    model: LoopDiffusion, adapters: LoraAdapters, config: CheckpointConfig, scale: float = 1.0
) -> LoopDiffusion:
    """The base `model` with the adapters added at `scale` (1: as trained, 0: the base with the grown vocabulary)."""
    cond = config.recipe.conditioning  # a model without genre conditioning has no vocabulary to grow
    grown = with_genres(model, cond.genres) if cond.genre else model
    return merge_adapters(grown, adapters, scale)


def load_with_lora(
    checkpoint: str | os.PathLike, lora: str | os.PathLike, scale: float = 1.0, device: str | torch.device | None = None
) -> LoopDiffusion:
    """The denoiser of `checkpoint` with the adapter `lora` applied; refuses an adapter trained on other weights."""
    if not math.isfinite(scale):
        raise ConfigError(f"lora scale must be a finite number, got {scale:g}")
    device = usable_device(device)
    base = resolve_checkpoint(checkpoint)
    adapters, config = load_lora(lora)
    have, want = weights_hash(base), config.base.hash
    if have != want:
        raise CheckpointError(
            f"{lora}: adapter trained on base {config.base.path} (weights {want}), but {checkpoint} has weights {have}"
        )
    model = load_denoiser(base, "cpu")
    return apply_lora(model, adapters, config, scale).to(device).eval()


def merge_lora(
    checkpoint: str | os.PathLike, lora: str | os.PathLike, out: str | os.PathLike, scale: float = 1.0
) -> Path:
    """Write base + adapter as an ordinary denoiser checkpoint in run folder `out`; returns its folder."""
    model = load_with_lora(checkpoint, lora, scale, "cpu")
    base_config = read_config(checkpoint)
    _, config = load_lora(lora)
    merged = CheckpointConfig(
        kind="diffusion",
        recipe=config.recipe,
        autoencoder=base_config.autoencoder,
        merged=MergedFrom(str(resolve_checkpoint(checkpoint)), str(resolve_checkpoint(lora)), scale),
    )
    return save_checkpoint(out, config.step, model.state_dict(), to_dict(merged))
