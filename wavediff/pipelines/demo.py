"""`wavediff demo`: the whole pipeline on the built-in loop pack, sized for a laptop CPU.

Synthesize the pack → shard → inspect → train the tiny autoencoder → encode latents →
check the autoencoder → train the tiny denoiser → write one loop per genre → the eval
suite's report (Fréchet distances, tempo, genre, seam, diversity) against the pack. Each
stage writes into its own folder under OUT and is skipped when its output is already
complete, so an interrupted demo picks up where it stopped. `quality` picks the recipes and
the audio format (QUALITIES); `minutes` scales both training budgets (the quality's own by default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from wavediff.config import AERecipe, ClassifierRecipe, DiffusionRecipe, load_recipe
from wavediff.errors import UserError
from wavediff.evaluation.reconstruction import evaluate_autoencoder, reconstruct_file
from wavediff.evaluation.report import format_report
from wavediff.evaluation.suite import evaluate_model
from wavediff.generation.generate import generate
from wavediff.generation.save import save_loops
from wavediff.io.files import atomic_write_json
from wavediff.latents.encode import encode_shards
from wavediff.models.checkpoint import latest_checkpoint, read_raw_config, weights_hash
from wavediff.models.factory import load_denoiser
from wavediff.shards.format import MANIFEST_NAME, read_manifest
from wavediff.training.autoencoder import train_autoencoder
from wavediff.training.classifier import train_classifier
from wavediff.training.diffusion import train_diffusion


@dataclass(frozen=True)
class Quality:
    """What `--quality` picks: the two recipes, the format the pack is sharded to, and the
    minutes the recipes' step counts take on a 2-core CPU (what `minutes` scales)."""

    ae_recipe: str
    denoiser_recipe: str
    sample_rate: int
    channels: int
    minutes: float


MINUTES_44K = 105.0  # the 44k recipes' steps: 47 + 58 min measured (their headers)

QUALITIES = {
    "16k": Quality("ae-tiny-cpu", "loops-tiny-cpu", 16000, 1, 15.0),
    "44k": Quality("ae-44k-cpu", "loops-44k-cpu", 44100, 2, MINUTES_44K),
}
DEFAULT_QUALITY = "16k"
DEMO_LOOPS_PER_GENRE = 12
DEMO_BARS = 4
EVAL_LOOPS = 12  # the closing eval report: loops generated, and their sampler steps
EVAL_STEPS = 25
DEMO_THREADS = 4
PACK_FOLDERS = {"synth": "pack", "samples": "pack-samples"}  # --pack: where each is built under OUT


def _stage(title: str) -> None:
    """A stage's heading, stamped with the clock: how long each stage took can be read off the log."""
    print(f"\n== {time.strftime('%H:%M:%S')} {title}", flush=True)


def make_demo_shards(
    out: Path, progress: bool = True, pack: str = "synth", quality: Quality = QUALITIES[DEFAULT_QUALITY]
) -> Path:
    """Build the pack (synthesized, or recorded sounds: data_tools.sample_pack) and shard it at
    the quality's rate and channels; returns the shard folder. Both packs draw tempos from the same genre ranges
    (data_tools.synth.GENRES), so the demo's loops and eval need nothing else."""
    from data_tools.shard import ShardOptions, shard

    if pack not in PACK_FOLDERS:
        raise UserError(f"unknown pack {pack!r}; one of {', '.join(PACK_FOLDERS)}")
    folder, shards = out / PACK_FOLDERS[pack], out / "shards"
    if (shards / MANIFEST_NAME).exists():
        if not folder.is_dir():
            raise UserError(f"{out}: holds a demo on another pack than {pack!r}; give another --out")
        _stage(f"shards already in {shards}")
        return shards
    if pack == "samples":
        from data_tools.sample_pack import ROLES, build_sample_pack

        _stage(f"building the pack of recorded sounds into {folder}")
        files = build_sample_pack(folder, loops_per_cell=DEMO_LOOPS_PER_GENRE // len(ROLES), progress=progress)
    else:
        from data_tools.synth import synthesize_pack

        _stage(f"synthesizing the built-in loop pack into {folder}")
        files = synthesize_pack(
            folder, loops_per_genre=DEMO_LOOPS_PER_GENRE, sample_rate=quality.sample_rate, seed=0, progress=progress
        )
    print(f"{len(files)} loops")
    _stage(f"sharding {folder} into {shards}")
    options = ShardOptions(
        sample_rate=quality.sample_rate, channels=quality.channels, max_seconds=None, val_fraction=0.1, workers=2
    )
    shard([folder], shards, options, progress=progress)
    return shards


def _trained(run: Path, steps: int) -> Path | None:
    """The run's last checkpoint if it has reached `steps`."""
    last = latest_checkpoint(run)
    if last is not None and read_raw_config(last)["step"] >= steps:
        return last
    return None


def _steps(recipe_steps: int, minutes: float, quality: Quality) -> int:
    return max(10, round(recipe_steps * minutes / quality.minutes))


def _training_stage(what: str, recipe_name: str, run: Path, steps: int, train: Callable[[], Path]) -> Path | None:
    """Reuse, resume or start a training run; None when it stopped early (a stop signal saved a
    checkpoint: the engine returns normally then), so the demo stops instead of going on with
    a half-trained model."""
    if (last := _trained(run, steps)) is not None:
        _stage(f"{what} already trained: {last}")
        return last
    _stage(f"training the {recipe_name} {what} ({steps} steps) in {run}")
    train()
    if (last := _trained(run, steps)) is None:
        print(f"the {what} stopped before step {steps}; run the demo again to resume", flush=True)
    return last


def train_demo_autoencoder(
    out: Path, shards: Path, steps: int | None, progress: bool = True, quality: Quality = QUALITIES[DEFAULT_QUALITY]
) -> Path | None:
    """Train (or resume, or reuse) the quality's autoencoder; its last checkpoint, None if stopped early."""
    overrides = [f"data.path={json.dumps(str(shards))}"] + ([f"train.steps={steps}"] if steps is not None else [])
    recipe = load_recipe(quality.ae_recipe, AERecipe, overrides)
    run = out / "ae"
    return _training_stage(
        "autoencoder",
        quality.ae_recipe,
        run,
        recipe.train.steps,
        lambda: train_autoencoder(recipe, run, progress=progress),
    )


def labels_roles(shards: Path) -> bool:
    """Whether the pack names its loops' roles (sidecars, file names or metadata.csv), not only the
    sharder's guesses from the audio: only then are roles worth conditioning on and judging."""
    sources = read_manifest(shards, None).metadata_sources.get("role", {})
    return any(count for source, count in sources.items() if source not in ("estimated", "unknown"))


def train_demo_denoiser(
    out: Path,
    latents: Path,
    ae: Path,
    steps: int | None,
    progress: bool = True,
    roles: bool = False,
    quality: Quality = QUALITIES[DEFAULT_QUALITY],
) -> Path | None:
    """Train (or resume, or reuse) the quality's latent denoiser, conditioned on role too where `roles`
    (the pack names them: labels_roles); its last checkpoint, None if stopped early."""
    overrides = [f"data.path={json.dumps(str(latents))}", f"autoencoder={json.dumps(str(ae))}"]
    if roles:  # `generate --role bass` then works
        overrides.append("conditioning.role=true")
    name = quality.denoiser_recipe
    recipe = load_recipe(name, DiffusionRecipe, overrides + ([f"train.steps={steps}"] if steps else []))
    run = out / "denoiser"
    return _training_stage(
        "denoiser", name, run, recipe.train.steps, lambda: train_diffusion(recipe, run, progress=progress)
    )


def write_demo_loops(out: Path, denoiser: Path, progress: bool = True) -> list[Path]:
    """One 4-bar loop per genre, at the middle of the genre's tempo range in the built-in pack."""
    from data_tools.synth import GENRES

    _stage(f"writing one {DEMO_BARS}-bar loop per genre into {out / 'loops'}")
    model = load_denoiser(denoiser, "cpu")
    written = []
    for i, genre in enumerate(model.conditioner.genres):
        low, high = GENRES[genre].bpm if genre in GENRES else (120, 120)
        loops, info = generate(
            model, genre=genre, bpm=round((low + high) / 2), bars=DEMO_BARS, seed=i, progress=progress
        )
        info["checkpoint"] = str(denoiser)
        written += save_loops(loops, info, out / "loops")
        print(written[-1])
    return written


def _demo_classifier(run: Path, shards: Path, label: str, progress: bool) -> Path:
    if latest_checkpoint(run) is None:
        _stage(f"training a {label} classifier on {shards} (for the {label} column)")
        recipe = ClassifierRecipe(label=label)
        recipe.data.path, recipe.train.cpu = str(shards), True
        train_classifier(recipe, run, progress=progress)
    return run


def evaluate_demo(out: Path, shards: Path, denoiser: Path, progress: bool = True) -> dict:
    """The eval suite on the demo's model: a genre classifier (and a role classifier, where the pack
    names roles) trained on the pack first (their val accuracy says what their verdicts are worth),
    then EVAL_LOOPS loops against the pack."""
    classifier = _demo_classifier(out / "classifier", shards, "genre", progress)
    roles = _demo_classifier(out / "role-classifier", shards, "role", progress) if labels_roles(shards) else None
    _stage(f"evaluating {EVAL_LOOPS} generated loops against the pack ({EVAL_STEPS} sampler steps)")
    report = evaluate_model(
        denoiser,
        shards,
        n=EVAL_LOOPS,
        steps=EVAL_STEPS,
        classifier=classifier,
        role_classifier=roles,
        device="cpu",
        grid=out / "eval" / "spectrograms.png",
        progress=progress,
    )
    atomic_write_json(out / "eval" / "report.json", report)
    print(format_report(report))
    print(f"report: {out / 'eval' / 'report.json'}")
    return report


def run_demo(
    out: str | Path,
    ae_steps: int | None = None,
    minutes: float | None = None,
    denoiser_steps: int | None = None,
    pack: str = "synth",
    progress: bool = True,
    quality: str = DEFAULT_QUALITY,
) -> Path:
    """Run every stage of the demo into `out`; returns `out`.

    `quality` names a QUALITIES entry; `minutes` scales its recipes' step counts (None: as
    the recipes say); `ae_steps` / `denoiser_steps` set them outright (tests use a few).
    `pack`: "synth" (the built-in synthesized pack) or "samples" (recorded sounds,
    data_tools.sample_pack).
    """
    from data_tools.inspect import format_manifest, inspect_shards

    if quality not in QUALITIES:
        raise UserError(f"unknown demo quality {quality!r}: choose one of {', '.join(QUALITIES)}")
    chosen = QUALITIES[quality]
    if minutes is not None and minutes <= 0:
        raise UserError(f"minutes must be positive, got {minutes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Two threads train the tiny models 1.1–1.5× faster than one on a 2-core CPU (measured);
    # past a few threads their small convolutions gain little and pay for the hand-offs.
    torch.set_num_threads(min(torch.get_num_threads(), DEMO_THREADS))
    shards = make_demo_shards(out, progress, pack, chosen)
    _stage(f"inspecting {shards}")
    report = inspect_shards(shards, progress=progress)
    print(format_manifest(read_manifest(shards), report))
    if not report["ok"]:
        raise UserError(f"{shards}: the demo's own shards failed inspection")

    if ae_steps is None and minutes is not None:
        ae_steps = _steps(load_recipe(chosen.ae_recipe, AERecipe).train.steps, minutes, chosen)
    if denoiser_steps is None and minutes is not None:
        denoiser_steps = _steps(load_recipe(chosen.denoiser_recipe, DiffusionRecipe).train.steps, minutes, chosen)
    ae = train_demo_autoencoder(out, shards, ae_steps, progress, chosen)
    if ae is None:
        return out
    latents = out / "latents"
    if (latents / MANIFEST_NAME).exists() and read_manifest(latents, "latent").autoencoder == weights_hash(ae):
        _stage(f"latents already in {latents}")
    else:
        _stage(f"encoding {shards} into latent shards")
        manifest = encode_shards(ae, shards, latents, progress=progress)
        print(f"{latents}: {manifest.latent_dim} channels at {manifest.latent_rate:.1f} frames/s")

    _stage("autoencoder quality on the val split")
    scores = evaluate_autoencoder(ae, shards, split="val")
    atomic_write_json(out / "ae-eval.json", scores)
    print(f"MR-STFT {scores['stft']:.3f}   mel {scores['mel']:.3f}   SI-SDR {scores['si_sdr']:.2f} dB")
    loop = sorted((out / PACK_FOLDERS[pack]).rglob("*.wav"))[0]
    print(f"round trip of {loop.name}: {reconstruct_file(ae, loop, out / 'reconstructions' / loop.name)}")

    denoiser = train_demo_denoiser(out, latents, ae, denoiser_steps, progress, labels_roles(shards), chosen)
    if denoiser is None:
        return out
    write_demo_loops(out, denoiser, progress)
    evaluate_demo(out, shards, denoiser, progress)
    return out
