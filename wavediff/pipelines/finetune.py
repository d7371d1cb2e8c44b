"""`wavediff finetune`: a base denoiser checkpoint + a folder of loops → a model of those loops, in one call.

The steps, all under the run folder so a second run (or a resumed one) redoes none of them:

    RUN/data/pack-<hash>/audio     the pack sharded (the hash covers every file's bytes and the
                                   shard options, so an edited pack is sharded again, an unchanged
                                   one never)
    RUN/data/autoencoder           the base's embedded autoencoder as an AE checkpoint (its weights
                                   file hashes to the id the base recorded, so latents match)
    RUN/data/pack-<hash>/latents   the pack encoded with it
    RUN/checkpoints/, RUN/logs/    the training run (resumed when present)
    RUN/finetune.json              validation checks (wavediff.training.finetune)

The recipe (recipes/finetune-*.toml, a FinetuneRecipe) gives the data, training and
fine-tuning settings; everything else (architecture, conditioning, diffusion, sampling)
is the base's. The result is an ordinary denoiser checkpoint, or for LoRA an adapter
checkpoint that `--lora` and `wavediff merge-lora` apply to the base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wavediff.config import CheckpointConfig, DiffusionRecipe, FinetuneRecipe, load_recipe, to_dict
from wavediff.errors import ConfigError, UserError
from wavediff.io.audio import is_audio_file
from wavediff.io.files import atomic_write_json
from wavediff.latents.encode import AudioVariant, encode_shards
from wavediff.models.checkpoint import (
    latest_checkpoint,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
    weights_hash,
)
from wavediff.models.factory import load_denoiser
from wavediff.models.genres import with_genres
from wavediff.shards.format import MANIFEST_NAME, read_manifest, shard_paths
from wavediff.shards.loader import make_loader
from wavediff.training.batches import shard_batches
from wavediff.training.diffusion import resolve
from wavediff.training.engine import train
from wavediff.training.finetune import HISTORY_FILE, FinetuneObjective, score
from wavediff.training.objective import Batch

DEFAULT_RECIPE = "finetune-cpu"

if TYPE_CHECKING:  # data_tools imports wavediff at module level, so its commands import it late
    from data_tools.shard import ShardOptions


def pack_hash(pack: Path, options: ShardOptions) -> str:
    """Hash of every file under the pack (path and bytes, metadata sidecars included) and the shard options."""
    digest = hashlib.sha256(repr(sorted(dataclasses.asdict(options).items())).encode())
    for path in sorted(p for p in pack.rglob("*") if p.is_file()):
        digest.update(path.relative_to(pack).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def export_autoencoder(base: Path, config: CheckpointConfig, state: dict[str, Any], out: Path) -> Path:
    """The base's embedded autoencoder as an AE checkpoint in `out` (written once); returns `out`."""
    if latest_checkpoint(out) is None:
        weights = {k.removeprefix("autoencoder."): v for k, v in state.items() if k.startswith("autoencoder.")}
        save_checkpoint(
            out,
            config.step,
            weights,
            to_dict(CheckpointConfig(kind="autoencoder", recipe=config.autoencoder.recipe, exported_from=str(base))),
        )
    return out


def pick_genre(genre: str | None, known: Sequence[str], pack_genres: Iterable[str], pack: Path) -> str:
    """The pack's genre: the one asked for, else the one genre its metadata names; see the finetune docstring."""
    if genre is not None:
        if not genre.strip():
            raise UserError("--genre is empty: name an existing genre or a new one")
        return genre
    named = sorted(set(pack_genres))
    if len(named) == 1:
        return named[0]
    found = f"its loops name {', '.join(named)}" if named else "its loops name no genre"
    raise UserError(
        f"{pack}: {found}; pass --genre NAME (one of the base's: {', '.join(known) or 'none'}; or a new name)"
    )


def _probe(recipe: DiffusionRecipe, split: str, genres: Sequence[str], limit: int) -> list[Batch]:
    """Up to `limit` windows of a split, in file order, unaugmented: what the validation checks score."""
    data = dataclasses.replace(recipe.data, num_workers=0)
    if not shard_paths(data.path, read_manifest(data.path), split):
        return []
    kind = recipe.data_kind
    loader = make_loader(data, split, training=False, kind=kind, expect_sample_rate=recipe.sample_rate, genres=genres)
    batches, count = [], 0
    for batch in loader:
        if count >= limit:
            break
        batches.append(batch)
        count += batch["frames"].shape[0]
    return batches


def prepare_data(
    base: Path,
    config: CheckpointConfig,
    state: dict[str, Any],
    pack: Path,
    run_dir: Path,
    ft: FinetuneRecipe,
    progress: bool,
) -> tuple[Path, Path | None]:
    """(shard folder the denoiser trains on, exported autoencoder or None): cached, see the module docstring."""
    from data_tools.shard import ShardOptions, shard

    if not pack.is_dir():
        raise FileNotFoundError(f"{pack}: no such pack folder")
    if not any(is_audio_file(p) for p in pack.rglob("*")):
        raise UserError(f"{pack}: the pack folder holds no audio files")
    recipe = config.recipe
    embedded = config.autoencoder
    channels = embedded.recipe.model.channels if embedded else recipe.channels
    options = ShardOptions(
        sample_rate=recipe.sample_rate,
        channels=channels,
        max_seconds=ft.finetune.max_seconds,
        val_fraction=ft.finetune.val_fraction,
        workers=max(1, min(4, os.cpu_count() or 1)),
    )
    key = pack_hash(pack, dataclasses.replace(options, workers=1))
    folder = run_dir / "data" / f"pack-{key}"
    audio = folder / "audio"
    if not (audio / MANIFEST_NAME).is_file():
        print(f"sharding {pack} into {audio}")
        shard([pack], audio, options, progress=progress)
    if not embedded:
        return audio, None
    ae = export_autoencoder(base, config, state, run_dir / "data" / "autoencoder")
    variants = [AudioVariant(gain_db=g) for g in ft.finetune.augment_gains_db if g]
    variants += [AudioVariant(invert=True)] if ft.finetune.augment_polarity else []
    tags = "".join(f"-{v.tag}" for v in variants)
    latents = folder / f"latents-{weights_hash(ae)}{tags}"
    if not (latents / MANIFEST_NAME).is_file():
        print(f"encoding the pack (and {len(variants)} augmented copies of its train loops) into {latents}")
        encode_shards(ae, audio, latents, variants=variants, progress=progress)
    return latents, ae


def finetune(
    base_ckpt: str | os.PathLike,
    pack_dir: str | os.PathLike,
    *,
    genre: str | None = None,
    steps: int | None = None,
    out: str | os.PathLike | None = None,
    lora: int | None = None,
    recipe: str | os.PathLike = DEFAULT_RECIPE,
    overrides: Sequence[str] = (),
    max_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune `base_ckpt` on the loops in `pack_dir`; returns the last checkpoint (a LoRA one with `lora`=rank).

    `genre`: an existing genre of the base, or a new name that grows its vocabulary (default:
    the one genre the pack's metadata names). `steps` sets train.steps; `overrides` are
    `key=value` settings on the recipe.
    """
    pack = Path(pack_dir)
    run_dir = Path(out) if out is not None else Path("runs") / f"finetune-{pack.resolve().name}"
    ft = load_recipe(recipe, FinetuneRecipe, list(overrides))
    if lora is not None:
        if lora < 1:
            raise ConfigError(f"--lora: the adapter rank must be at least 1, got {lora}")
        ft = dataclasses.replace(ft, finetune=dataclasses.replace(ft.finetune, method="lora", lora_rank=lora))
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {steps}")
        ft = dataclasses.replace(ft, train=dataclasses.replace(ft.train, steps=steps))
    settings = ft.finetune
    if settings.method == "lora" and settings.lora_rank < 1:
        raise ConfigError(f"finetune.lora_rank must be at least 1, got {settings.lora_rank}")
    if not 0.0 <= settings.val_fraction < 1.0:
        raise ConfigError(f"finetune.val_fraction must be in [0, 1), got {settings.val_fraction}")

    base = resolve_checkpoint(base_ckpt)
    config = read_config(base, "diffusion")
    model = load_denoiser(base, "cpu")  # a base whose weights do not fit its config fails here, naming the keys
    # its weights as loaded (strictly: the file's, read once), for the embedded autoencoder's export
    data_path, ae = prepare_data(base, config, model.state_dict(), pack, run_dir, ft, progress)
    base_recipe = model.recipe
    known = base_recipe.conditioning.genres
    name = None
    if base_recipe.conditioning.genre:
        name = pick_genre(genre, known, read_manifest(data_path).genres, pack)
        if name not in known:
            print(f"new genre {name!r}: added to {known}, its embedding starting from their mean")
    elif genre is not None:
        raise UserError(f"{base}: the base model is not conditioned on genre, so --genre {genre} cannot apply")
    genres = list(known) + ([name] if name is not None and name not in known else [])
    recipe_in = dataclasses.replace(
        base_recipe,
        autoencoder=str(ae) if ae is not None else "",
        data=dataclasses.replace(ft.data, path=str(data_path)),
        train=ft.train,
        conditioning=dataclasses.replace(base_recipe.conditioning, genres=genres),
    )
    resolved, _, ae_info = resolve(recipe_in)
    val = _probe(resolved, "val", genres, settings.val_examples)
    probe = _probe(resolved, "train", genres, settings.val_examples)
    if not val:
        print(
            f"warning: no loop of {pack} landed in the held-out part; validation loss is not measured "
            f"(raise finetune.val_fraction or add loops)"
        )
    grown = with_genres(model, genres)
    member = resolved.data_kind
    genre_id = genres.index(name) if name is not None else -1
    extra = {
        "autoencoder": ae_info,
        "base": {"path": str(base.resolve()), "hash": weights_hash(base), "genres": list(known)},
        "finetune": {**dataclasses.asdict(settings), "genre": name, "pack": str(pack.resolve())},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / HISTORY_FILE).is_file():  # the base's own scores are the first check
        first = {"step": 0, "train_loss": score(grown, probe, genre_id, member, settings.val_repeats)}
        if val:
            first["val_loss"] = score(grown, val, genre_id, member, settings.val_repeats)
        atomic_write_json(
            run_dir / HISTORY_FILE,
            {"base": extra["base"], "genre": name, "method": settings.method, "history": [first]},
        )
    return train(
        lambda: FinetuneObjective(resolved, grown, settings, name, extra, val, probe, run_dir),
        shard_batches(resolved.data, member, resolved.sample_rate, resolved.conditioning.genres),
        resolved.train,
        run_dir,
        batch_size=resolved.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
