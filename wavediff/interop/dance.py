"""Dance Diffusion denoisers → wavediff waveform denoiser checkpoints (`wavediff import-dd`).

Two layouts of the same network are read: Harmonai's original Lightning `.ckpt` (the
`diffusion_ema.` weights of DiffusionAttnUnet1D: nested skip blocks, `net.3.main.7.main.7.…`)
and diffusers' `UNet1DModel` (`down_blocks.N`, `mid_block`, `up_blocks.N`, with the attention's
query, key and value as three linear layers, which become one 1×1 conv here). The network's
shape (levels, widths, attention levels, audio channels) is read from the weights; the sample
rate is not in an original checkpoint, so it comes from diffusers' config.json or the user.

The result is a waveform denoiser (`autoencoder = ""`) with Dance Diffusion's objective: v
prediction with t = atan(σ)·2/π, which is k-diffusion's VDenoiser at σ_data = 1 on raw audio.
It has no conditioning: no genre, tempo or length (see wavediff.models.dance).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from wavediff.config import (
    CheckpointConfig,
    ConditioningConfig,
    DataConfig,
    DiffusionConfig,
    DiffusionRecipe,
    SamplingConfig,
    UNetConfig,
    to_dict,
)
from wavediff.errors import CheckpointError, ConfigError
from wavediff.interop.weights import PICKLED, as_float32, read_state_dict, under_prefix
from wavediff.io.files import read_json_object
from wavediff.models.checkpoint import check_weights, latest_checkpoint, save_checkpoint
from wavediff.models.dance import FOURIER_CHANNELS
from wavediff.models.diffusion import LoopDiffusion

# Where the denoiser sits in an original checkpoint: its EMA copy first (what Harmonai sampled from).
PREFIXES = ("diffusion_ema.", "diffusion.", "")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
HEAD_CHANNELS = 32  # both layouts give a layer of c channels c // 32 heads
_CONV = {"main.0": "conv1", "main.1": "norm1", "main.3": "conv2", "main.4": "norm2", "skip": "skip"}
_ATTN = {"norm": "norm", "qkv_proj": "qkv", "out_proj": "out"}
_DIFFUSERS_CONV = {"conv_1": "conv1", "group_norm_1": "norm1", "conv_2": "conv2", "group_norm_2": "norm2"}
_DIFFUSERS_CONV["conv_skip"] = "skip"
_DIFFUSERS_KEY = re.compile(
    r"^(down_blocks\.(\d+)|mid_block|up_blocks\.(\d+))\.(resnets|attentions)\.(\d+)\.(\w+)\.(\w+)$"
)


# --------------------------------------------------------------------------- names


def _original_place(key: str) -> tuple[int, int, str]:
    """(level, position in the level's Sequential, rest of the key) of an original key: level 0's
    blocks sit in `net` at 0–2 (down) and 4–6 (up); level d ≥ 1 is `net.3` and d − 1 `main.7`s, whose
    positions are 1–6 (down: conv, attention, …) and 8–13 (up)."""
    rest = key.removeprefix("net.")
    if not rest.startswith("3."):
        position, _, leaf = rest.partition(".")
        return 0, int(position), leaf
    level, rest = 1, rest[len("3.") :]
    while rest.startswith("main.7."):
        level, rest = level + 1, rest[len("main.7.") :]
    position, _, leaf = rest.removeprefix("main.").partition(".")
    return level, int(position), leaf


def from_original(state: Mapping[str, torch.Tensor], where: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Harmonai's DiffusionAttnUnet1D state dict → DanceUNet1D's (without the `unet.` prefix)."""
    places = {}
    for key in state:
        if key.endswith("kernel") or key == "timestep_embed.weight":
            continue  # the fixed resampling kernels; the Fourier weights are renamed below
        if not key.startswith("net.") or not re.match(r"^net\.\d+\.", key):
            raise CheckpointError(f"{where}: unexpected key {key!r} for a Dance Diffusion U-Net")
        places[key] = _original_place(key)
    deepest = max(level for level, _, _ in places.values())
    out = {"timestep_embed": state["timestep_embed.weight"]} if "timestep_embed.weight" in state else {}
    for key, (level, position, leaf) in places.items():
        if level == 0:
            block = f"down.0.convs.{position}" if position < 3 else f"up.{deepest - 1}.convs.{position - 4}"
        else:
            up = position > 7
            is_attn = position % 2 == (1 if up else 0)  # down: conv, attention, … from 1; up: from 8
            index = (position - (8 if up else 1) - is_attn) // 2
            if level == deepest:
                part, index = "mid", index + 3 * up
            else:
                part = f"up.{deepest - 1 - level}" if up else f"down.{level}"
            block = f"{part}.{'attn' if is_attn else 'convs'}.{index}"
        names = _ATTN if ".attn." in block else _CONV
        head = next((n for n in names if leaf.startswith(n + ".")), None)
        if head is None:
            raise CheckpointError(f"{where}: unexpected key {key!r} for a Dance Diffusion U-Net")
        out[f"{block}.{names[head]}{leaf[len(head) :]}"] = state[key]
    return out


def from_diffusers(state: Mapping[str, torch.Tensor], where: str | os.PathLike) -> dict[str, torch.Tensor]:
    """diffusers' UNet1DModel state dict → DanceUNet1D's; query, key and value become one 1×1 conv."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("kernel"):
            continue
        if key == "time_proj.weight":
            out["timestep_embed"] = value.reshape(-1, 1)
            continue
        match = re.match(
            r"^(down_blocks\.(\d+)|mid_block|up_blocks\.(\d+))\.(resnets|attentions)\.(\d+)\.(\w+)\.(\w+)$", key
        )
        if match is None:
            raise CheckpointError(f"{where}: unexpected key {key!r} for a Dance Diffusion UNet1DModel")
        block, down, up, kind, index, layer, param = match.groups()
        part = f"down.{down}" if down is not None else f"up.{up}" if up is not None else "mid"
        if kind == "resnets" and layer in _DIFFUSERS_CONV:
            out[f"{part}.convs.{index}.{_DIFFUSERS_CONV[layer]}.{param}"] = value
        elif kind == "attentions" and layer == "group_norm":
            out[f"{part}.attn.{index}.norm.{param}"] = value
        elif kind == "attentions" and layer == "proj_attn":
            out[f"{part}.attn.{index}.out.{param}"] = value[..., None] if param == "weight" else value
        elif kind == "attentions" and layer in ("query", "key", "value"):
            qkv.setdefault(f"{part}.attn.{index}.qkv.{param}", {})[layer] = value
        else:
            raise CheckpointError(f"{where}: unexpected key {key!r} for a Dance Diffusion UNet1DModel")
    for name, parts in qkv.items():
        if len(parts) != 3:
            raise CheckpointError(f"{where}: {name} lacks one of query, key and value")
        merged = torch.cat([parts["query"], parts["key"], parts["value"]])
        out[name] = merged[..., None] if name.endswith("weight") else merged
    return out


# --------------------------------------------------------------------------- the recipe


def dance_recipe(unet: Mapping[str, torch.Tensor], sample_rate: int, sample_size: int, where: str) -> DiffusionRecipe:
    """The waveform-denoiser recipe whose DanceUNet1D has exactly these weights' shapes."""
    try:
        levels = 1 + len({k.split(".")[1] for k in unet if k.startswith("down.")})
        first = unet["down.0.convs.0.conv1.weight"]
        widths = [unet[f"down.{d}.convs.0.conv1.weight"].shape[0] for d in range(levels - 1)]
        widths.append(unet["mid.convs.0.conv1.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"{where}: not a Dance Diffusion U-Net (no {e.args[0]})") from None
    attention = [d for d in range(1, levels - 1) if f"down.{d}.attn.0.qkv.weight" in unet]
    attention += [levels - 1] if "mid.attn.0.qkv.weight" in unet else []
    base = widths[0] if all(w % widths[0] == 0 for w in widths) else 1
    model = UNetConfig(
        architecture="dance-diffusion",
        base_channels=base,
        channel_mults=[w // base for w in widths],
        blocks_per_level=3,
        attention_levels=attention,
        head_channels=HEAD_CHANNELS,
        kernel_size=first.shape[-1],
        padding="zeros",
    )
    off = ConditioningConfig(genre=False, tempo=False, tempo_clock=False, length=False, dropout=0.0, dropout_all=0.0)
    return DiffusionRecipe(
        autoencoder="",
        sample_rate=sample_rate,
        channels=first.shape[1] - FOURIER_CHANNELS,
        data=DataConfig(sample_size=sample_size),
        model=model,
        conditioning=off,
        diffusion=DiffusionConfig(objective="v", sigma_data=1.0, sigma_sampling="v-diffusion"),
        sampling=SamplingConfig(cfg_scale=1.0),
    )


# --------------------------------------------------------------------------- files


def _weights_file(src: Path) -> tuple[Path, Path | None]:
    """(weights, diffusers config.json or None) from a checkpoint file, a diffusers model folder, or
    a diffusers pipeline folder (its unet/)."""
    if src.is_file():
        config = src.parent / "config.json"
        return src, config if config.is_file() else None
    folder = src / "unet" if (src / "unet").is_dir() else src
    for name in DIFFUSERS_WEIGHTS:
        if (folder / name).is_file():
            config = folder / "config.json"
            return folder / name, config if config.is_file() else None
    found = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", *PICKLED))
    if len(found) == 1:
        return found[0], None
    names = ", ".join(p.name for p in found) or "none"
    raise CheckpointError(f"{folder}: no {' or '.join(DIFFUSERS_WEIGHTS)} and not one checkpoint (found: {names})")


def import_dance_diffusion(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    sample_size: int | None = None,
) -> Path:
    """Convert a Dance Diffusion checkpoint (original `.ckpt`, or a diffusers UNet1DModel folder or
    file) into a waveform-denoiser run folder `out`; returns its step-000000 checkpoint."""
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or folder")
    if latest_checkpoint(out) is not None:
        raise CheckpointError(f"{out}: already holds a run; import into a new folder")
    weights, config_path = _weights_file(src)
    config = read_json_object(config_path, "diffusers model config") if config_path is not None else {}
    state = read_state_dict(weights)
    if any(k.startswith(("down_blocks.", "mid_block.")) for k in state):
        unet = from_diffusers(state, weights)
    else:
        _, found = under_prefix(state, PREFIXES, "net.", weights, "Dance Diffusion U-Net (net.…)")
        unet = from_original({k: v for k, v in found.items() if k.startswith(("net.", "timestep_embed."))}, weights)
    rate = sample_rate or config.get("sample_rate")
    if not isinstance(rate, int) or rate < 1:
        raise ConfigError(
            f"{weights}: the checkpoint does not say its sample rate; pass --sample-rate "
            "(Harmonai's: 48000 for gwf, jmann; 16000 for maestro, unlocked, honk)"
        )
    size = sample_size or config.get("sample_size") or 65536
    recipe = dance_recipe(unet, rate, size, str(weights))
    model = LoopDiffusion(recipe)
    converted = {f"unet.{k}": v for k, v in as_float32(unet).items()}
    check_weights(model, converted, f"{weights} (renamed to wavediff's)")
    model.load_state_dict(converted)
    meta = CheckpointConfig(kind="diffusion", recipe=recipe, imported_from=f"dance-diffusion {weights}")
    return save_checkpoint(out, 0, model.state_dict(), to_dict(meta), keep_last=1)
