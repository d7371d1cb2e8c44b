"""Fine-tuning on a new genre: how validation loss on the pack moves for full, frozen and LoRA, for one budget.

    .venv/bin/python benchmarks/bench_finetune.py [--quick] [--ae demo-out/ae] [--base-steps N] [--steps N]

(1) A base denoiser (recipes/loops-tiny-cpu.toml as written but for its step budget and warm-up) trained with
    `train_diffusion` on five genres of the built-in pack (data_tools.synth, 16 kHz mono), encoded
    with the demo's autoencoder (`wavediff demo` writes demo-out/ae; the benchmark trains no
    autoencoder of its own, and the demo AE never conditions on genre, so the held-back genre
    stays unseen by the denoiser).
(2) A "producer's pack" of the sixth genre (house, never seen by the base), fine-tuned with
    `wavediff.pipelines.finetune.finetune` five ways on the same steps and batch: full (recipes/finetune-cpu),
    frozen (the same with finetune.method=frozen), LoRA rank 4 and 16 (recipes/finetune-lora-cpu),
    and full again at the base recipe's lr (1e-3) to check the recipe's lower one.
    Each run gets the same pack shards and latents (sharded and encoded once, then copied into
    every run folder, where finetune's cache finds them), so wall time is step-0 scoring, training,
    validation checks and their example loops. The validation losses are RUN/finetune.json's:
    fixed-noise denoising loss of the EMA model on the held-out loops, step 0 being the base.
(3) Trainable parameters, and the size of each run's model.safetensors against the full run's
    (a denoiser checkpoint embeds its autoencoder; a LoRA checkpoint holds the adapters alone).

torch runs on one thread (the machine is shared). Prints the figures and writes them to the
"Fine-tuning" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools.shard import ShardOptions, shard  # noqa: E402
from data_tools.synth import GENRES, synthesize_pack  # noqa: E402
from wavediff.config import DiffusionRecipe, FinetuneRecipe, load_recipe  # noqa: E402
from wavediff.latents.encode import encode_shards
from wavediff.models.checkpoint import MODEL_FILE, load_checkpoint, resolve_checkpoint
from wavediff.models.factory import load_denoiser
from wavediff.models.genres import with_genres
from wavediff.models.lora import LoraAdapters, lora_shapes  # noqa: E402
from wavediff.pipelines.finetune import finetune, prepare_data
from wavediff.shards.format import read_manifest
from wavediff.training.diffusion import train_diffusion  # noqa: E402
from wavediff.training.finetune import HISTORY_FILE, trains_when_frozen  # noqa: E402

HELD_BACK = "house"
SAMPLE_RATE = 16000  # the demo autoencoder's rate
VAL_FRACTION = 0.25  # of the pack held out: ~6 of 24 loops, so the val loss is not one loop's
# (name, recipe, LoRA rank or None, overrides): every method on the recipe a user would run.
METHODS = [
    ("full", "finetune-cpu", None, []),
    ("frozen", "finetune-cpu", None, ["finetune.method=frozen"]),
    ("LoRA r4", "finetune-lora-cpu", 4, []),
    ("LoRA r16", "finetune-lora-cpu", 16, []),
    ("full, lr 2e-4", "finetune-cpu", None, ["train.optimizer.lr=2e-4"]),  # a gentler rate: is the recipe's right?
]


def train_base(ae: Path, loops_per_genre: int, steps: int, tmp: Path) -> Path:
    """The loops-tiny-cpu denoiser trained `steps` steps on every genre but the held-back one."""
    genres = [g for g in GENRES if g != HELD_BACK]
    synthesize_pack(tmp / "base-pack", genres=genres, loops_per_genre=loops_per_genre, sample_rate=SAMPLE_RATE, seed=0)
    options = ShardOptions(sample_rate=SAMPLE_RATE, channels=1, val_fraction=0.1, workers=2)
    shard([tmp / "base-pack"], tmp / "base-audio", options, progress=False)
    encode_shards(ae, tmp / "base-audio", tmp / "base-latents", device="cpu", progress=False)
    recipe = load_recipe(
        "loops-tiny-cpu",
        DiffusionRecipe,
        [
            f'data.path="{tmp / "base-latents"}"',
            f'autoencoder="{ae}"',
            "data.num_workers=1",
            f"train.steps={steps}",
            f"train.checkpoint_every={steps}",
            "train.sample_every=0",
            f"train.log_every={max(steps // 10, 1)}",
            f"train.optimizer.warmup_steps={max(steps // 10, 1)}",
        ],
    )
    start = time.perf_counter()
    ckpt = train_diffusion(recipe, tmp / "base", progress=True)
    print(f"base: {steps} steps on {', '.join(genres)} in {time.perf_counter() - start:.0f} s", flush=True)
    return ckpt


def trainable(base: Path, rank: int | None, method: str) -> int:
    """Parameters a run trains: the base grown by the held-back genre, then what the method leaves free."""
    model = load_denoiser(base, "cpu")
    grown = with_genres(model, [*model.recipe.conditioning.genres, HELD_BACK])
    if rank is not None:
        low, full = lora_shapes(grown)
        return sum(p.numel() for p in LoraAdapters(low, full, rank, float(rank)).parameters())
    free = [p for n, p in grown.named_parameters() if p.requires_grad and (method == "full" or trains_when_frozen(n))]
    return sum(p.numel() for p in free)


def run_overrides(steps: int, checks: int) -> list[str]:
    """The recipe settings every benchmarked fine-tuning run shares: the held-out share, one loader
    worker, `checks` validations, one checkpoint at the end."""
    return [
        f"finetune.val_fraction={VAL_FRACTION}",
        "data.num_workers=1",
        f"train.sample_every={steps // checks}",
        f"train.checkpoint_every={steps}",
        f"train.log_every={max(steps // 10, 1)}",
    ]


def run_method(
    base: Path,
    pack: Path,
    data: Path,
    name: str,
    recipe: str,
    rank: int | None,
    extra: list[str],
    steps: int,
    checks: int,
    tmp: Path,
) -> dict[str, object]:
    out = tmp / name.replace(" ", "-")
    shutil.copytree(data, out / "data")  # the pack's shards and latents, found by finetune's cache
    overrides = [*extra, *run_overrides(steps, checks)]
    print(f"{name}: {steps} steps", flush=True)
    start = time.perf_counter()
    ckpt = finetune(
        base, pack, genre=HELD_BACK, steps=steps, out=out, lora=rank, recipe=recipe, overrides=overrides, progress=True
    )
    wall = time.perf_counter() - start
    history = json.loads((out / HISTORY_FILE).read_text())["history"]
    method = "lora" if rank is not None else ("frozen" if "finetune.method=frozen" in extra else "full")
    return {
        "name": name,
        "recipe": recipe,
        "wall_s": wall,
        "history": history,
        "lr": load_recipe(recipe, FinetuneRecipe, extra).train.optimizer.lr,
        "params": trainable(base, rank, method),
        "bytes": (ckpt / MODEL_FILE).stat().st_size,
    }


def reading(results: list[dict[str, object]], steps: int) -> str:
    """Two to four lines read off the figures: how far each method moved val loss, the best, the cheapest."""

    def drop(r: dict[str, object]) -> float:
        h = r["history"]
        return 100 * (1 - h[-1]["val_loss"] / h[0]["val_loss"])

    def best_step(r: dict[str, object]) -> int:
        return min(r["history"], key=lambda h: h["val_loss"])["step"]

    moved = ", ".join(f"{r['name']} {drop(r):.1f} %" for r in results)
    best = max(results, key=drop)
    peaked = [f"{r['name']} (best at step {best_step(r)})" for r in results if best_step(r) < steps]
    late = (
        f"val loss had turned up before the end for {', '.join(peaked)}"
        if peaked
        else "every run's val loss was still at its lowest at the last check: the budget does not over-fit"
    )
    full, lora = results[0], min((r for r in results if r["name"].startswith("LoRA")), key=lambda r: r["bytes"])
    return (
        f"Reading: in {steps} steps val loss on the unseen genre fell by {moved} from the base's;\n"
        f"{best['name']} moved it furthest, and {late}.\nThe smallest adapter ({lora['name']}) is "
        f"{lora['bytes'] / full['bytes']:.1%} of the full checkpoint and trains "
        f"{full['params'] / lora['params']:.0f}× fewer parameters, in {lora['wall_s'] / full['wall_s']:.0%} of the "
        f"full run's wall time.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewest steps and loops (a smoke test, ~2 min)")
    parser.add_argument("--ae", default=str(ROOT / "demo-out" / "ae"), help="autoencoder run (16 kHz mono)")
    parser.add_argument("--base-steps", type=int, default=None, help="base denoiser training steps")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps of every method")
    parser.add_argument("--loops", type=int, default=24, help="loops in the producer's pack")
    args = parser.parse_args()
    where = machine()  # before our own work loads the CPU
    torch.set_num_threads(1)
    ae = resolve_checkpoint(args.ae)  # a clear error when the demo has not been run
    ae_config, _ = load_checkpoint(ae)
    if ae_config.recipe.sample_rate != SAMPLE_RATE or ae_config.recipe.model.channels != 1:
        raise SystemExit(f"{args.ae}: the benchmark needs a {SAMPLE_RATE} Hz mono autoencoder (the demo's)")
    base_steps = args.base_steps or (30 if args.quick else 800)
    steps = args.steps or (20 if args.quick else 200)
    checks = 2 if args.quick else 4
    base_loops = 3 if args.quick else 8

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = train_base(ae, base_loops, base_steps, tmp)
        synthesize_pack(tmp / "pack", genres=[HELD_BACK], loops_per_genre=args.loops, sample_rate=SAMPLE_RATE, seed=1)
        config, state = load_checkpoint(base)
        ft = load_recipe("finetune-cpu", FinetuneRecipe, [f"finetune.val_fraction={VAL_FRACTION}"])
        start = time.perf_counter()
        prepare_data(base, config, state, tmp / "pack", tmp / "prep", ft, progress=False)
        prep_s = time.perf_counter() - start
        manifest = read_manifest(next((tmp / "prep" / "data").glob("pack-*/audio")))
        split = {k: v.samples for k, v in manifest.splits.items()}
        results = [
            run_method(base, tmp / "pack", tmp / "prep" / "data", name, recipe, rank, extra, steps, checks, tmp)
            for name, recipe, rank, extra in METHODS
        ]

    full_bytes = results[0]["bytes"]
    check_steps = [h["step"] for h in results[0]["history"]]
    rows = []
    for r in results:
        losses = {h["step"]: h.get("val_loss", float("nan")) for h in r["history"]}
        cells = " | ".join(f"{losses.get(s, float('nan')):.4f}" for s in check_steps)
        train_last = r["history"][-1].get("train_loss", float("nan"))
        rows.append(
            f"| {r['name']} (`{r['recipe']}`, lr {r['lr']:g}) | {cells} | {train_last:.4f} | "
            f"{r['wall_s']:.0f} s | {r['params'] / 1e3:.1f} k | {r['bytes'] / 1e6:.2f} MB "
            f"({r['bytes'] / full_bytes:.1%}) |"
        )
        print(f"{r['name']}: {json.dumps(r['history'])}", flush=True)

    command = (
        "python benchmarks/bench_finetune.py"
        + (" --quick" if args.quick else "")
        + "".join(
            f" --{k.replace('_', '-')} {v}"
            for k, v in (("base_steps", args.base_steps), ("steps", args.steps))
            if v is not None
        )
        + (f" --loops {args.loops}" if args.loops != 24 else "")
    )
    header = " | ".join(f"val @ {s}" for s in check_steps)
    base_data = load_recipe("loops-tiny-cpu", DiffusionRecipe).data
    tune_data = load_recipe("finetune-cpu", FinetuneRecipe).data
    text = f"""## Fine-tuning

`{command}` — {datetime.date.today()}, {where}, torch {torch.__version__}, 1 thread.
Base: recipes/loops-tiny-cpu.toml trained {base_steps} steps (batch {base_data.batch_size} × {base_data.sample_size} latent frames) on
{base_loops} loops each of {", ".join(g for g in GENRES if g != HELD_BACK)} (16 kHz mono, the demo autoencoder's latents).
Pack: {args.loops} loops of {HELD_BACK}, a genre the base never saw ({split.get("train", 0)} train / {split.get("val", 0)} val
files with finetune.val_fraction={VAL_FRACTION}; sharding + encoding it, with the recipe's augmented copies of
the train loops, took {prep_s:.0f} s, once). Every method: {steps} steps, batch {tune_data.batch_size} × {tune_data.sample_size},
its recipe as written otherwise. val @ 0 is the base (the new genre's embedding at the mean of the old
ones); losses are RUN/finetune.json's fixed-noise denoising loss of the EMA weights on the held-out loops
(lower is better); wall time includes those checks and an example loop at each. Size: the run's
model.safetensors against the full run's (which embeds the autoencoder, as every denoiser checkpoint does).

| method | {header} | train loss at end | wall | trainable | checkpoint |
|---|{"---|" * len(check_steps)}---|---|---|---|
{chr(10).join(rows)}

{reading(results, steps)}"""
    print(text)
    print(f"wrote {write_section('Fine-tuning', text)}")


if __name__ == "__main__":
    main()
