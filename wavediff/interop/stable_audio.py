"""stable-audio-tools' Oobleck autoencoders ↔ wavediff autoencoder checkpoints.

Their Oobleck VAE and wavediff's Autoencoder are the same network: the same layers in the same
order, the same SnakeBeta (α, β stored as logs), the same paddings. A renaming maps one state
dict onto the other:

    encoder.layers.N.layers.M.layers.K.…   ↔  encoder.N.M.block.K.…   (a residual unit's layers)
    encoder.layers.N.layers.M.…            ↔  encoder.N.M.…
    ….alpha / ….beta                       ↔  ….log_alpha / ….log_beta
    ….weight_g / ….weight_v                ↔  ….parametrizations.weight.original0 / original1

What differs is behaviour outside the weights: their bottleneck samples even in eval mode where
wavediff's encode takes the posterior mean (what encoding a dataset wants), and a whole model's
`pretransform.scale`, which divides the latents they hand their denoiser. wavediff's denoisers
divide by the latents' measured standard deviation instead, so the scale is not carried over.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from wavediff.config import AERecipe, AutoencoderConfig, CheckpointConfig, to_dict
from wavediff.errors import CheckpointError, ConfigError
from wavediff.interop.weights import PICKLED, WEIGHT_NORM, as_float32, read_state_dict, under_prefix
from wavediff.io.files import atomic_write_json, read_json_object
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import (
    MODEL_FILE,
    check_weights,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

CONFIG_NAME = "model_config.json"  # their published models: this beside model.safetensors or a .ckpt
WEIGHTS_NAMES = ("model.safetensors", "model.ckpt")
# Where an autoencoder's weights sit: a whole diffusion model's pretransform, a training
# checkpoint's EMA copy or live model, or a bare autoencoder.
PREFIXES = ("pretransform.model.", "autoencoder_ema.ema_model.", "autoencoder.", "")
_LEAVES = {"alpha": "log_alpha", "beta": "log_beta", **WEIGHT_NORM}
_LEAVES_BACK = {v: k for k, v in _LEAVES.items()}


# --------------------------------------------------------------------------- names


def to_wavediff_key(key: str) -> str:
    """`encoder.layers.1.layers.0.layers.1.weight_g` → `encoder.1.0.block.1.parametrizations.weight.original0`."""
    parts = key.split(".")
    out, i, depth = [parts[0]], 1, 0
    while i + 1 < len(parts) and parts[i] == "layers" and parts[i + 1].isdigit():
        depth += 1
        out += ["block", parts[i + 1]] if depth == 3 else [parts[i + 1]]
        i += 2
    leaf = ".".join(parts[i:])
    return ".".join([*out, _LEAVES.get(leaf, leaf)])


def to_stable_audio_key(key: str) -> str:
    """The inverse of to_wavediff_key, in the weight_g/weight_v style their code builds."""
    parts = key.split(".")
    out, i = [parts[0]], 1
    while i < len(parts) and (parts[i].isdigit() or parts[i] == "block"):
        if parts[i].isdigit():
            out += ["layers", parts[i]]
        i += 1
    leaf = ".".join(parts[i:])
    return ".".join([*out, _LEAVES_BACK.get(leaf, leaf)])


# --------------------------------------------------------------------------- configs


def _get(table: Mapping[str, Any], key: str, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value is None and default is not None:
        raise ConfigError(f"{where}{key} is missing")
    return value


def _oobleck(part: Any, where: str) -> dict[str, Any]:
    """An encoder or decoder table, with stable-audio-tools' defaults filled in; anything wavediff's
    network cannot express exactly is refused, naming the key."""
    if not isinstance(part, Mapping) or part.get("type") != "oobleck":
        kind = part.get("type") if isinstance(part, Mapping) else part
        raise ConfigError(f"{where}type is {kind!r}: only 'oobleck' encoders and decoders can be imported")
    cfg = dict(part.get("config", {}))
    inner = f"{where}config."
    if not cfg.get("use_snake", False):
        raise ConfigError(f"{inner}use_snake is false: ELU activations are not wavediff's (SnakeBeta only)")
    for key in ("antialias_activation", "use_nearest_upsample"):
        if cfg.get(key, False):
            raise ConfigError(f"{inner}{key} is true: not expressible in wavediff's autoencoder")
    return {
        "channels": _get(cfg, "channels", 128, inner),
        "c_mults": list(_get(cfg, "c_mults", [1, 2, 4, 8], inner)),
        "strides": list(_get(cfg, "strides", [2, 4, 8, 8], inner)),
        "latent_dim": _get(cfg, "latent_dim", 32, inner),
        "io": cfg.get("in_channels", cfg.get("out_channels", 2)),
        "final_tanh": cfg.get("final_tanh", True),
    }


def autoencoder_recipe(config: Mapping[str, Any], where: str | os.PathLike) -> AERecipe:
    """The wavediff recipe of a stable-audio-tools model config: an autoencoder's, or the
    autoencoder pretransform of a whole model (Stable Audio Open's model_config.json)."""
    kind = config.get("model_type")
    try:
        if kind == "autoencoder":
            ae, at = config.get("model"), "model."
        else:
            pre = (config.get("model") or {}).get("pretransform")
            if not isinstance(pre, Mapping) or pre.get("type") != "autoencoder":
                raise ConfigError(
                    f"model_type is {kind!r} and model.pretransform is not an autoencoder: nothing to import"
                )
            ae, at = pre.get("config"), "model.pretransform.config."
        if not isinstance(ae, Mapping):
            raise ConfigError(f"{at.rstrip('.')} is missing")
        if ae.get("pretransform") is not None:
            raise ConfigError(f"{at}pretransform is set: an autoencoder inside another transform is not importable")
        enc = _oobleck(ae.get("encoder"), f"{at}encoder.")
        dec = _oobleck(ae.get("decoder"), f"{at}decoder.")
        for key in ("channels", "c_mults", "strides"):
            if enc[key] != dec[key]:
                raise ConfigError(f"{at}encoder and decoder differ in {key} ({enc[key]} vs {dec[key]})")
        latent = _get(ae, "latent_dim", None, at)
        bottleneck = (ae.get("bottleneck") or {}).get("type")
        if bottleneck not in ("vae", None):
            raise ConfigError(f"{at}bottleneck.type is {bottleneck!r}: only 'vae' or no bottleneck can be imported")
        factor = 2 if bottleneck == "vae" else 1
        if enc["latent_dim"] != factor * latent or dec["latent_dim"] != latent:
            raise ConfigError(
                f"{at}latent_dim is {latent} but the encoder gives {enc['latent_dim']} and the decoder takes "
                f"{dec['latent_dim']} channels"
            )
        io = _get(ae, "io_channels", None, at)
        if {enc["io"], dec["io"], ae.get("in_channels", io), ae.get("out_channels", io)} != {io}:
            raise ConfigError(f"{at}io_channels is {io} but the encoder or decoder has other audio channels")
        ratio = ae.get("downsampling_ratio")
        if ratio != math.prod(enc["strides"]):
            raise ConfigError(f"{at}downsampling_ratio is {ratio}, not the product of the strides {enc['strides']}")
        soft_clip = bool(ae["decoder"].get("soft_clip", False))
        if soft_clip and dec["final_tanh"]:
            raise ConfigError(f"{at}decoder has both final_tanh and soft_clip (tanh twice): not expressible")
        sample_rate = config.get("sample_rate")
        if not isinstance(sample_rate, int) or sample_rate < 1:
            raise ConfigError(f"sample_rate is {sample_rate!r}: a positive integer is needed")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    model = AutoencoderConfig(
        channels=io,
        base_channels=enc["channels"],
        channel_mults=enc["c_mults"],
        strides=enc["strides"],
        latent_dim=latent,
        bottleneck="vae" if bottleneck == "vae" else "plain",
        padding="zeros",
        output_tanh=dec["final_tanh"] or soft_clip,
    )
    return AERecipe(sample_rate=sample_rate, model=model)


def stable_audio_config(recipe: AERecipe) -> dict[str, Any]:
    """The model_config.json stable-audio-tools builds `recipe`'s autoencoder from."""
    cfg = recipe.model
    vae = cfg.bottleneck == "vae"
    common = {"channels": cfg.base_channels, "c_mults": list(cfg.channel_mults), "strides": list(cfg.strides)}
    model: dict[str, Any] = {
        "encoder": {
            "type": "oobleck",
            "config": {"in_channels": cfg.channels, **common, "latent_dim": cfg.latent_dim * (2 if vae else 1)}
            | {"use_snake": True},
        },
        "decoder": {
            "type": "oobleck",
            "config": {"out_channels": cfg.channels, **common, "latent_dim": cfg.latent_dim}
            | {"use_snake": True, "final_tanh": cfg.output_tanh},
        },
        **({"bottleneck": {"type": "vae"}} if vae else {}),
        "latent_dim": cfg.latent_dim,
        "downsampling_ratio": math.prod(cfg.strides),
        "io_channels": cfg.channels,
    }
    return {
        "model_type": "autoencoder",
        "sample_size": recipe.data.sample_size,
        "sample_rate": recipe.sample_rate,
        "audio_channels": cfg.channels,
        "model": model,
    }


# --------------------------------------------------------------------------- files


def find_files(
    src: str | os.PathLike, config: str | os.PathLike | None = None, weights: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """(model_config.json, weights) from a folder laid out as their published models are, or from
    either file, the other found beside it; `config`/`weights` name a file explicitly."""
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such folder or file")
    folder = src if src.is_dir() else src.parent
    if config is None:
        config = src if src.is_file() and src.suffix == ".json" else folder / CONFIG_NAME
    if weights is None:
        if src.is_file() and src.suffix != ".json":
            weights = src
        else:
            named = [folder / n for n in WEIGHTS_NAMES if (folder / n).is_file()]
            others = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", *PICKLED))
            if not (named or len(others) == 1):
                found = ", ".join(p.name for p in others) or "none"
                raise CheckpointError(
                    f"{folder}: expected {' or '.join(WEIGHTS_NAMES)} (weight files found: {found}); "
                    "name the file with --weights"
                )
            weights = (named or others)[0]
    config, weights = Path(config), Path(weights)
    for path, what in ((config, "model config"), (weights, "weights")):
        if not path.is_file():
            raise CheckpointError(f"{path}: no such {what} file")
    return config, weights


def import_autoencoder(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
) -> Path:
    """Convert a stable-audio-tools autoencoder (see find_files for `src`) into a wavediff
    autoencoder run folder `out` (its step-000000 checkpoint, returned)."""
    config_path, weights_path = find_files(src, config, weights)
    if latest_checkpoint(out) is not None:
        raise CheckpointError(f"{out}: already holds a run; import into a new folder")
    recipe = autoencoder_recipe(read_json_object(config_path, "stable-audio-tools model config"), config_path)
    prefix, state = under_prefix(
        read_state_dict(weights_path), PREFIXES, "encoder.", weights_path, "autoencoder (encoder.…)"
    )
    converted = {to_wavediff_key(k): v for k, v in as_float32(state).items() if k.startswith(("encoder.", "decoder."))}
    model = Autoencoder(recipe.model)
    check_weights(model, converted, f"{weights_path} ({f'under {prefix!r}, ' if prefix else ''}renamed to wavediff's)")
    model.load_state_dict(converted)
    meta = CheckpointConfig(kind="autoencoder", recipe=recipe, imported_from=f"stable-audio-tools {weights_path}")
    return save_checkpoint(out, 0, model.state_dict(), to_dict(meta), keep_last=1)


def export_autoencoder(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a wavediff autoencoder checkpoint as stable-audio-tools' layout in folder `out`
    (model_config.json and model.safetensors): their `create_model_from_config` and
    `load_ckpt_state_dict` load it as it is. Returns `out`."""
    folder = resolve_checkpoint(ckpt)
    meta, state = load_checkpoint(folder, "autoencoder")
    if meta.recipe.model.padding != "zeros":
        raise ConfigError(
            f"{folder}: model.padding is {meta.recipe.model.padding!r}; stable-audio-tools' Oobleck pads with "
            "zeros only, so its outputs would differ"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {to_stable_audio_key(k): v.contiguous() for k, v in state.items()}
    tmp = out / f".{MODEL_FILE}.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt", "exported_from": str(folder)})
    tmp.replace(out / MODEL_FILE)
    atomic_write_json(out / CONFIG_NAME, stable_audio_config(meta.recipe))
    return out
