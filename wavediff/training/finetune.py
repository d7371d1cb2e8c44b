"""The fine-tuning objective: a base denoiser trained further on one pack, watched for over-fitting.

What trains (FinetuneConfig.method): everything ("full"); the conditioning and attention
layers only ("frozen", the rest keeps the base's weights); or low-rank adapters on every
U-Net convolution and attention projection plus the genre table at full rank ("lora": the
checkpoint, kind "lora", holds the adapters alone and names its base by weights hash).

Every pack loop gets the run's genre label, whatever its metadata says. At each
`train.sample_every` step the EMA model is scored on the held-out loops and on as many
training windows, with the same noise every time (a fixed seed), so the numbers are
comparable between checks: logged as eval/val_loss and eval/train_loss, appended to
RUN/finetune.json, and printed; when val loss climbs above its best while train loss
keeps falling, a warning says the run is over-fitting and which step was best.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from wavediff.config import DiffusionRecipe, FinetuneConfig
from wavediff.errors import UserError
from wavediff.generation.generate import generate
from wavediff.io.files import atomic_write_json
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.lora import LoraAdapters, LoraModel, lora_shapes
from wavediff.training.diffusion import EXAMPLE_STEPS, batch_conditions
from wavediff.training.objective import Batch, ObjectiveBase

HISTORY_FILE = "finetune.json"
SCORE_SEED = 1234  # the fixed noise of every validation check


def trains_when_frozen(name: str) -> bool:
    """Method "frozen": the conditioning (what a new genre needs) and attention (how far apart events relate)."""
    return name.startswith(("conditioner.", "unet.cond_proj.")) or ".attn." in name or ".cross." in name


def labelled(batch: Batch, genre_id: int) -> Conditions:
    """A batch's conditions with every loop given the run's genre (−1: none)."""
    cond = batch_conditions(batch)
    return dataclasses.replace(cond, genre=torch.full_like(cond.genre, genre_id))


@torch.no_grad()
def score(model: nn.Module, batches: Sequence[Batch], genre_id: int, member: str, repeats: int) -> float:
    """Mean training loss of `model` over fixed batches, with fixed noise (σ, noise and condition drops)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(SCORE_SEED)
        for batch in batches:
            data = batch[member].to(device)
            cond = labelled(batch, genre_id).to(device)
            frames = batch["frames"].to(device)
            for _ in range(repeats):
                total += float(model(data, cond, frames).sum())
                count += data.shape[0]
    return total / max(count, 1)


def overfit_warning(history: Sequence[Mapping[str, float]], tolerance: float) -> str | None:
    """A warning when the latest val loss is above its best by `tolerance` while train loss fell since that best."""
    if len(history) < 2:
        return None
    best = min(history, key=lambda h: h["val_loss"])
    last = history[-1]
    if last["val_loss"] > best["val_loss"] * (1 + tolerance) and last["train_loss"] < best["train_loss"]:
        return (
            f"over-fitting: val loss rose from {best['val_loss']:.4g} (step {best['step']}) to "
            f"{last['val_loss']:.4g} (step {last['step']}) while train loss fell from {best['train_loss']:.4g} "
            f"to {last['train_loss']:.4g}; fewer steps (or LoRA, or a lower lr) would generalise better"
        )
    return None


class FinetuneObjective(ObjectiveBase):
    """The Objective of a fine-tune; see the module docstring."""

    exported = "denoiser"

    def __init__(
        self,
        recipe: DiffusionRecipe,
        base: LoopDiffusion,
        settings: FinetuneConfig,
        genre: str | None,
        checkpoint_extra: Mapping[str, Any],
        val: Sequence[Batch],
        probe: Sequence[Batch],
        run_dir: Path,
    ) -> None:
        self.base = base.train()
        model: nn.Module = base
        if settings.method == "lora":
            low, full = lora_shapes(base)
            model = LoraModel(base, LoraAdapters(low, full, settings.lora_rank, settings.lora_alpha))
        elif settings.method == "frozen":
            for name, param in base.named_parameters():
                param.requires_grad_(trains_when_frozen(name))
        elif settings.method != "full":
            raise UserError(f"finetune.method must be full, frozen or lora, got {settings.method!r}")
        super().__init__(recipe, model)
        self.kind = "lora" if settings.method == "lora" else "diffusion"
        self.settings, self.genre = settings, genre
        self.member = recipe.data_kind
        self.genre_id = recipe.conditioning.genres.index(genre) if genre is not None else -1
        self.extra, self.val, self.probe, self.run_dir = dict(checkpoint_extra), val, probe, run_dir
        self.step = 0

    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def to(self, device: torch.device) -> None:
        """The frozen base of a LoRA run is outside the trained module."""
        self.base.to(device)

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        self.step = step
        losses = nets["denoiser"](batch[self.member], labelled(batch, self.genre_id), batch["frames"])
        loss = losses.mean()
        return loss, {"diffusion/loss": loss.detach()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Val and train-side loss with fixed noise, the over-fitting check, and one loop of the pack's genre."""
        step = self.step + 1
        metrics = {"train_loss": score(model, self.probe, self.genre_id, self.member, self.settings.val_repeats)}
        if self.val:
            metrics["val_loss"] = score(model, self.val, self.genre_id, self.member, self.settings.val_repeats)
        self.record(step, metrics)
        denoiser = model.merged() if isinstance(model, LoraModel) else model
        settings = dataclasses.replace(self.recipe.sampling, steps=min(self.recipe.sampling.steps, EXAMPLE_STEPS))
        bpm = batch["bpm"].float().cpu()
        tempo = float(bpm[bpm > 0].median()) if (bpm > 0).any() else 120.0
        loops, _ = generate(
            denoiser, genre=self.genre, bpm=tempo, bars=settings.example_bars, seed=0, settings=settings
        )
        return {f"{self.genre or 'loop'}-{tempo:.0f}bpm": loops[0]}, metrics

    def record(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append a check to RUN/finetune.json (dropping checks a resumed run will redo) and print it."""
        path = self.run_dir / HISTORY_FILE
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"history": []}
        history = [h for h in state["history"] if h["step"] < step] + [{"step": step, **metrics}]
        atomic_write_json(path, {**state, "history": history})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        tqdm.write(f"step {step}: {shown}")
        if "val_loss" in metrics and (
            warning := overfit_warning([h for h in history if "val_loss" in h], self.settings.overfit_tolerance)
        ):
            tqdm.write(f"warning: {warning}")

    def checkpoint_config(self) -> dict[str, Any]:
        config = {**super().checkpoint_config(), **self.extra}
        if isinstance(self.model, LoraModel):
            config["lora"] = self.model.adapters.config()
        return config
