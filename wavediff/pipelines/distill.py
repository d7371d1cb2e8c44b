"""`wavediff distill`: a teacher denoiser checkpoint → a student that samples in 4 or 8 steps without guidance.

The recipe (recipes/distill-*.toml, a DistillRecipe) gives the step count, the teacher's substeps, the data
and the training settings; the model, conditioning, diffusion settings and the embedded
autoencoder are the teacher's, and the student starts from the teacher's weights. The data
is the teacher's own training shards unless `data` names others (latent shards of the same
autoencoder). Training is the shared engine's (wavediff.training.distill): resumable, locked,
stopped cleanly by SIGTERM. The result is an ordinary denoiser checkpoint whose sampling
settings are the student's (steps, sampler, cfg 1) and whose config names its teacher, so
`wavediff generate STUDENT` samples in few steps with no flags.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from wavediff.config import DISTILL_STEPS, DistillRecipe, load_recipe
from wavediff.errors import CheckpointError, ConfigError, DataError
from wavediff.models.checkpoint import CONFIG_FILE, read_config, resolve_checkpoint, weights_hash
from wavediff.models.factory import load_denoiser
from wavediff.shards.format import MANIFEST_NAME, read_manifest
from wavediff.training.batches import shard_batches
from wavediff.training.distill import DistillObjective, student_sampling
from wavediff.training.engine import train

DEFAULT_RECIPE = "distill-cpu"


def distill_recipe(recipe: str | os.PathLike, overrides: Sequence[str], steps: int | None) -> DistillRecipe:
    """The distill recipe with `--set` overrides and --steps on top, checked."""
    dr = load_recipe(recipe, DistillRecipe, list(overrides))
    settings = dr.distill
    if steps is not None:
        settings = dataclasses.replace(settings, steps=steps)
    if settings.steps not in DISTILL_STEPS:
        raise ConfigError(f"--steps must be one of {', '.join(map(str, DISTILL_STEPS))}, got {settings.steps}")
    if settings.teacher_substeps < 1:
        raise ConfigError(f"distill.teacher_substeps must be at least 1, got {settings.teacher_substeps}")
    if settings.teacher_cfg_scale < 0 or settings.circular_every < 0:
        raise ConfigError("distill.teacher_cfg_scale and distill.circular_every must not be negative")
    return dataclasses.replace(dr, distill=settings)


def distill(
    teacher_ckpt: str | os.PathLike,
    *,
    steps: int | None = None,
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    recipe: str | os.PathLike = DEFAULT_RECIPE,
    overrides: Sequence[str] = (),
    max_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Distill `teacher_ckpt` into a few-step student in run folder `out`; returns its last checkpoint."""
    dr = distill_recipe(recipe, overrides, steps)
    settings = dr.distill
    folder = resolve_checkpoint(teacher_ckpt)
    config = read_config(folder, "diffusion")  # an autoencoder, a classifier, an adapter: refused, named
    if config.distilled is not None:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: already a {config.distilled.steps}-step student; distill its teacher instead"
        )
    teacher = load_denoiser(folder, "cpu")
    base = teacher.recipe
    path = Path(data or dr.data.path or base.data.path)
    if not (path / MANIFEST_NAME).is_file():
        raise DataError(
            f"{path}: no shards here ({'as --data' if data else 'the teacher trained on them'}; "
            f"pass --data with the {base.data_kind} shards the teacher learnt)"
        )
    manifest = read_manifest(path, base.data_kind)
    if manifest.sample_rate != base.sample_rate:
        raise DataError(f"{path / MANIFEST_NAME}: shards are {manifest.sample_rate} Hz, the teacher {base.sample_rate}")
    if config.autoencoder is not None and manifest.autoencoder != config.autoencoder.id:
        raise DataError(
            f"{path / MANIFEST_NAME}: latents of autoencoder {manifest.autoencoder!r}, "
            f"but the teacher's is {config.autoencoder.id!r}"
        )
    cfg_scale = settings.teacher_cfg_scale or base.sampling.cfg_scale
    student = dataclasses.replace(
        base,
        data=dataclasses.replace(dr.data, path=str(path)),
        train=dr.train,
        sampling=student_sampling(base.sampling, settings),
    )
    extra = {
        "autoencoder": dataclasses.asdict(config.autoencoder) if config.autoencoder is not None else None,
        "distilled": {
            "teacher": str(folder.resolve()),
            "hash": weights_hash(folder),
            "method": "progressive",
            "steps": settings.steps,
            "cfg_scale": cfg_scale,
        },
    }
    name = folder.parent.parent.name if folder.parent.name == "checkpoints" else folder.name
    run_dir = Path(out) if out is not None else Path("runs") / f"distill-{settings.steps}-{name}"
    return train(
        lambda: DistillObjective(student, teacher, settings, cfg_scale, extra),
        shard_batches(student.data, student.data_kind, student.sample_rate, student.conditioning.genres),
        student.train,
        run_dir,
        batch_size=student.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
