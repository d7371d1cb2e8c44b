"""The `wavediff` command: parse arguments, call the library, report errors in one line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

from wavediff.allocator import reuse_freed_memory
from wavediff.errors import UserError
from wavediff.training.signals import stop_signals_recorded

T = TypeVar("T")

# One line, no traceback: the user's mistakes, and what the machine refused (a missing path,
# no permission, a full disk: OSError names the file). Anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError, OSError)
KEY_HELP = "the loop's key, such as Am, F#m, Gb minor, Eb (a model trained with conditioning.key)"
PROMPT_HELP = "words, such as 'dark rolling techno, 303 bass' (a model trained with conditioning.text); "
PROMPT_HELP += "where they contradict --genre, --bpm, --key or --role, those win"


def _prompt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default=None, help=PROMPT_HELP)
    p.add_argument("--negative-prompt", default=None, help="words the loop should move away from")


def _finite(text: str) -> float:
    """A float option of a job whose manifest records it: NaN and infinity mean nothing there, and JSON has neither."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _optional_seconds(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive or 'none', got {text}")
    return value


def _optional_lufs(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else _finite(text)


# --------------------------------------------------------------------------- data


def cmd_data_synth(args: argparse.Namespace) -> int:
    from data_tools.synth import synthesize_pack

    files = synthesize_pack(
        args.out,
        genres=args.genres,
        loops_per_genre=args.loops_per_genre,
        sample_rate=args.sample_rate,
        bars=args.bars,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(f"wrote {len(files)} loops to {args.out}")
    return 0


def cmd_data_sample_pack(args: argparse.Namespace) -> int:
    from data_tools.sample_pack import build_sample_pack

    files = build_sample_pack(
        args.out, loops_per_cell=args.loops, sample_rate=args.sample_rate, seed=args.seed, progress=not args.quiet
    )
    print(f"wrote {len(files)} loops to {args.out}")
    return 0


def _shard_options(args: argparse.Namespace):
    from data_tools.shard import ShardOptions

    kwargs = dict(
        sample_rate=args.sample_rate,
        channels=args.channels,
        max_seconds=args.max_seconds,
        val_fraction=args.val_fraction,
        shard_size_mb=args.shard_size_mb,
        loudness=args.loudness,
    )
    if args.workers is not None:
        kwargs["workers"] = args.workers
    return ShardOptions(**kwargs)


def cmd_data_shard(args: argparse.Namespace) -> int:
    from data_tools.inspect import format_manifest
    from data_tools.shard import shard

    manifest = shard(args.sources, args.out, _shard_options(args), progress=not args.quiet, part=args.part)
    print(format_manifest(manifest))
    return 0


def cmd_data_merge(args: argparse.Namespace) -> int:
    from data_tools.inspect import format_manifest
    from data_tools.shard import merge_parts

    print(format_manifest(merge_parts(args.out)))
    return 0


def _part(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (task I of an N-task job array), got {text!r}") from None


def cmd_data_tag(args: argparse.Namespace) -> int:
    from data_tools.tag import tag

    for path, rows in tag(args.sources, workers=args.workers, progress=not args.quiet).items():
        print(f"{path}: {rows} file(s)")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from data_tools.inspect import format_manifest, inspect_shards
    from wavediff.shards.format import read_manifest

    report = inspect_shards(args.folder, progress=not args.quiet)
    print(format_manifest(read_manifest(args.folder), report))
    return 0 if report["ok"] else 1


# --------------------------------------------------------------------------- autoencoder


def _training(run: Callable[[], T]) -> T | None:
    """Run a training call; a run that cannot go on (TrainingError) is reported in one line: None."""
    from wavediff.training.engine import TrainingError

    try:
        return run()
    except TrainingError as e:
        print(f"wavediff: training stopped: {e}", file=sys.stderr)
        return None


def _checkpoint_command(run: Callable[[], Path]) -> int:
    """A command that trains and ends with a checkpoint: print where it is (exit 0), or exit 1."""
    last = _training(run)
    if last is None:
        return 1
    print(f"checkpoint: {last}")
    return 0


def _train(args: argparse.Namespace, recipe_class: type, train: Callable[..., Path]) -> int:
    """Every recipe-driven training command: load the recipe with its overrides, train (or resume)."""
    from wavediff.config import load_recipe

    recipe = load_recipe(args.recipe, recipe_class, args.set)
    out = args.out or Path("runs") / args.recipe.stem
    return _checkpoint_command(lambda: train(recipe, out, max_steps=args.max_steps, progress=not args.quiet))


def cmd_train_ae(args: argparse.Namespace) -> int:
    from wavediff.config import AERecipe
    from wavediff.training.autoencoder import train_autoencoder

    return _train(args, AERecipe, train_autoencoder)


def _shard_range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    try:
        return int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (shard indices), got {text!r}") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from wavediff.latents.encode import encode_shards

    manifest = encode_shards(
        args.ae_ckpt,
        args.shards,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        shard_range=args.shard_range,
        part=args.part,
        progress=not args.quiet,
    )
    for split, info in manifest.splits.items():
        print(f"{split}: {info.samples} samples in {len(info.shards)} shard(s)")
    print(f"latents: {manifest.latent_dim} channels at {manifest.latent_rate:.2f} frames/s → {args.out}")
    return 0


def cmd_merge_latents(args: argparse.Namespace) -> int:
    from wavediff.latents.encode import merge_latent_manifests

    manifest = merge_latent_manifests(args.folder)
    print(f"merged: {sum(s.samples for s in manifest.splits.values())} samples")
    return 0


def cmd_eval_ae(args: argparse.Namespace) -> int:
    from wavediff.evaluation.reconstruction import evaluate_autoencoder
    from wavediff.io.files import atomic_write_json

    report = evaluate_autoencoder(
        args.ae_ckpt,
        args.shards,
        split=args.split,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_json(args.out, report)
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from wavediff.evaluation.reconstruction import reconstruct_file

    print(reconstruct_file(args.ae_ckpt, args.input, args.output, device=args.device))
    return 0


def cmd_import_ae(args: argparse.Namespace) -> int:
    from wavediff.interop.stable_audio import import_autoencoder

    print(f"autoencoder: {import_autoencoder(args.src, args.out, config=args.config, weights=args.weights)}")
    return 0


def cmd_export_ae(args: argparse.Namespace) -> int:
    from wavediff.interop.stable_audio import export_autoencoder

    print(f"stable-audio-tools autoencoder: {export_autoencoder(args.ae_ckpt, args.out)}")
    return 0


def cmd_import_dd(args: argparse.Namespace) -> int:
    from wavediff.interop.dance import import_dance_diffusion

    folder = import_dance_diffusion(args.src, args.out, sample_rate=args.sample_rate, sample_size=args.sample_size)
    print(f"waveform denoiser: {folder}")
    return 0


# --------------------------------------------------------------------------- denoiser


def cmd_train(args: argparse.Namespace) -> int:
    from wavediff.config import DiffusionRecipe
    from wavediff.training.diffusion import train_diffusion

    return _train(args, DiffusionRecipe, train_diffusion)


def cmd_finetune(args: argparse.Namespace) -> int:
    from wavediff.pipelines.finetune import finetune

    return _checkpoint_command(
        lambda: finetune(
            args.base,
            args.pack,
            genre=args.genre,
            steps=args.steps,
            out=args.out,
            lora=args.lora,
            recipe=args.recipe,
            overrides=args.set,
            max_steps=args.max_steps,
            progress=not args.quiet,
        )
    )


def cmd_distill(args: argparse.Namespace) -> int:
    from wavediff.pipelines.distill import distill

    return _checkpoint_command(
        lambda: distill(
            args.teacher,
            steps=args.steps,
            out=args.out,
            data=args.data,
            recipe=args.recipe,
            overrides=args.set,
            max_steps=args.max_steps,
            progress=not args.quiet,
        )
    )


def cmd_train_preview(args: argparse.Namespace) -> int:
    from wavediff.pipelines.preview import train_preview

    return _checkpoint_command(
        lambda: train_preview(
            args.autoencoder,
            args.shards,
            args.out,
            recipe=args.recipe,
            overrides=args.set,
            max_steps=args.max_steps,
            progress=not args.quiet,
        )
    )


def _preview(args: argparse.Namespace, model):
    """The --preview decoder for CKPT's autoencoder, on the model's device; None without --preview."""
    from wavediff.generation.loops import model_device
    from wavediff.models.factory import autoencoder_id, load_preview

    if args.preview is None:
        return None
    return load_preview(args.preview, autoencoder_id(args.ckpt), model_device(model))


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from wavediff.models.factory import merge_lora

    print(f"checkpoint: {merge_lora(args.base, args.lora, args.out, args.scale)}")
    return 0


def _denoiser(args: argparse.Namespace):
    """The checkpoint's denoiser, with --lora applied at --lora-scale when given."""
    from wavediff.models.factory import load_denoiser, load_with_lora

    if args.lora is None:
        return load_denoiser(args.ckpt, args.device)
    return load_with_lora(args.ckpt, args.lora, args.lora_scale, args.device)


def _sampling_settings(args: argparse.Namespace, model):
    """The checkpoint's sampling settings with the command line's on top."""
    from dataclasses import replace

    given = {
        "steps": args.steps,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "cfg_scale": args.cfg,
        "prompt_cfg_scale": args.prompt_cfg,
        "loops": args.loops,
    }
    return replace(model.recipe.sampling, **{k: v for k, v in given.items() if v is not None})


def cmd_generate(args: argparse.Namespace) -> int:
    from wavediff.generation.generate import generate
    from wavediff.generation.save import save_loops

    model = _denoiser(args)
    audio, info = generate(
        model,
        genre=args.genre,
        bpm=args.bpm,
        bars=args.bars,
        n=args.n,
        seed=args.seed,
        settings=_sampling_settings(args, model),
        circular=args.circular,
        progress=not args.quiet,
        role=args.role,
        key=args.key,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        preview=_preview(args, model),
    )
    info["checkpoint"] = str(args.ckpt)
    for path in save_loops(audio, info, args.out, format=args.format):
        print(path)
    return 0


def _save_clips(args: argparse.Namespace, audio, info: dict, names: list[str]) -> int:
    from wavediff.generation.save import save_loops

    info["checkpoint"] = str(args.ckpt)
    for path in save_loops(audio, info, args.out, format=args.format, names=names):
        print(path)
    return 0


def _clip_options(args: argparse.Namespace, model) -> dict:
    """The keyword arguments vary, interpolate and inpaint share."""
    return {
        **{n: getattr(args, n) for n in ("key", "prompt", "negative_prompt") if getattr(args, n, None) is not None},
        "genre": args.genre,
        "bpm": args.bpm,
        "bars": args.bars,
        "seed": args.seed,
        "settings": _sampling_settings(args, model),
        "circular": args.circular,
        "progress": not args.quiet,
    }


def cmd_vary(args: argparse.Namespace) -> int:
    from wavediff.generation.generate import vary
    from wavediff.io.audio import load

    wav, sr = load(args.input)
    model = _denoiser(args)
    audio, info = vary(model, wav, sr, strength=args.strength, n=args.n, **_clip_options(args, model))
    info["input"] = str(args.input)
    return _save_clips(args, audio, info, [f"{args.input.stem}-var-seed{s}" for s in info["seeds"]])


def cmd_interpolate(args: argparse.Namespace) -> int:
    from wavediff.generation.generate import interpolate
    from wavediff.io.audio import conform, load

    (a, sr_a), (b, sr_b) = load(args.a), load(args.b)
    model = _denoiser(args)
    sr = model.sample_rate  # interpolate takes one rate for both clips
    a, b = conform(a, sr_a, sr), conform(b, sr_b, sr)
    audio, info = interpolate(model, a, b, sr, frames=args.frames, **_clip_options(args, model))
    info["inputs"] = [str(args.a), str(args.b)]
    names = [f"{args.a.stem}-to-{args.b.stem}-{i:02d}" for i in range(len(audio))]
    return _save_clips(args, audio, info, names)


def cmd_inpaint(args: argparse.Namespace) -> int:
    from wavediff.generation.generate import inpaint
    from wavediff.io.audio import load

    wav, sr = load(args.input)
    model = _denoiser(args)
    audio, info = inpaint(model, wav, sr, start=args.start, end=args.end, n=args.n, **_clip_options(args, model))
    info["input"] = str(args.input)
    return _save_clips(args, audio, info, [f"{args.input.stem}-inpaint-seed{s}" for s in info["seeds"]])


def cmd_studio(args: argparse.Namespace) -> int:
    from wavediff.studio.history import History, default_folder
    from wavediff.studio.jobs import Studio
    from wavediff.studio.server import serve

    model = _denoiser(args)
    history = History(args.history or default_folder(args.lora or args.ckpt), round(args.history_mb * 2**20))
    source = {"checkpoint": str(args.ckpt), "lora": args.lora and str(args.lora), "lora_scale": args.lora_scale}
    return serve(Studio(model, history, source, _preview(args, model)), args.host, args.port)


# --------------------------------------------------------------------------- evaluation


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from wavediff.config import ClassifierRecipe, apply_overrides, from_dict, to_dict
    from wavediff.training.classifier import train_classifier

    overrides = [f"data.path={json.dumps(str(args.shards))}", f'label="{args.label}"', *args.set]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    recipe = from_dict(ClassifierRecipe, apply_overrides(to_dict(ClassifierRecipe()), overrides))
    prefix = "classifier" if recipe.label == "genre" else f"{recipe.label}-classifier"
    out = args.out or Path("runs") / f"{prefix}-{args.shards.name}"
    trained = _training(lambda: train_classifier(recipe, out, progress=not args.quiet))
    if trained is None:
        return 1
    last, report = trained
    print(f"checkpoint: {last}")
    if report["accuracy"] is None:
        print(f"{args.shards}: no val split, so the classifier's accuracy is unknown")
        return 0
    per_class = ", ".join(f"{g} {a:.0%}" for g, a in report["per_genre"].items())
    print(
        f"val accuracy {report['accuracy']:.0%} on {report['samples']} clips "
        f"(chance {report['chance']:.0%}): {per_class}"
    )
    return 0


def _write_report(report: dict, out: Path | None) -> None:
    from wavediff.evaluation.report import format_report
    from wavediff.io.files import atomic_write_json

    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, report)
    print(format_report(report))
    if out is not None:
        print(f"report: {out}")


def _grid_path(args: argparse.Namespace) -> Path | None:
    return args.grid or (args.out.with_suffix(".png") if args.out is not None else None)


def cmd_eval(args: argparse.Namespace) -> int:
    from wavediff.evaluation.suite import evaluate_model

    report = evaluate_model(
        args.ckpt,
        args.ref,
        n=args.n,
        steps=args.steps,
        cfg_scale=args.cfg,
        sampler=args.sampler,
        per_condition=args.per_condition,
        classifier=args.classifier,
        role_classifier=args.role_classifier,
        split=args.split,
        seed=args.seed,
        device=args.device,
        grid=_grid_path(args),
        progress=not args.quiet,
    )
    _write_report(report, args.out)
    return 0


def cmd_eval_folders(args: argparse.Namespace) -> int:
    from wavediff.evaluation.suite import evaluate_folders

    report = evaluate_folders(args.a, args.b, classifier=args.classifier, seed=args.seed, grid=_grid_path(args))
    _write_report(report, args.out)
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from wavediff.pipelines.demo import run_demo

    run_demo(
        args.out,
        ae_steps=args.ae_steps,
        minutes=args.minutes,
        denoiser_steps=args.denoiser_steps,
        pack=args.pack,
        progress=not args.quiet,
        quality=args.quality,
    )
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavediff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def command(parent, name: str, fn: Callable[[argparse.Namespace], int], help: str):
        p = parent.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(fn=fn)
        return p

    def recipe_command(p: argparse.ArgumentParser) -> None:
        """The arguments of a command that trains from a recipe into a run folder (train-ae, train)."""
        p.add_argument("recipe", type=Path)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
        p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<recipe name>)")
        p.add_argument("--max-steps", type=int, default=None, help="stop at this step without changing the schedule")

    data = sub.add_parser("data", help="make and check datasets").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )
    p = command(data, "synth", cmd_data_synth, "synthesize the built-in loop pack")
    p.add_argument("out", type=Path)
    p.add_argument("--genres", nargs="+", default=None, help="genre names (default: all)")
    p.add_argument("--loops-per-genre", type=int, default=8)
    p.add_argument("--sample-rate", type=int, default=44100)
    p.add_argument("--bars", type=int, default=None, help="bars per loop (default: 1, 2 or 4)")
    p.add_argument("--seed", type=int, default=0)

    p = command(data, "sample-pack", cmd_data_sample_pack, "build a loop pack from recorded sounds Debian installs")
    p.add_argument("out", type=Path)
    p.add_argument("--loops", type=int, default=4, help="loops per genre and role (drums, bass, melodic)")
    p.add_argument("--sample-rate", type=int, default=44100)
    p.add_argument("--seed", type=int, default=0)

    p = command(data, "shard", cmd_data_shard, "turn folders of audio into WebDataset shards")
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--sample-rate", type=int, default=44100)
    p.add_argument("--channels", type=int, default=2, choices=(1, 2))
    p.add_argument(
        "--max-seconds", type=_optional_seconds, default=30.0, help="chunk longer files ('none' keeps them whole)"
    )
    p.add_argument("--val-fraction", type=_finite, default=0.05)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard-size-mb", type=_finite, default=256.0)
    p.add_argument("--loudness", type=_optional_lufs, default=None, help="target LUFS (default: leave levels)")
    p.add_argument(
        "--part",
        type=_part,
        default=None,
        metavar="I/N",
        help="job array task I of N: shard every N-th file into OUT/parts/ (then `data merge OUT`)",
    )

    p = command(data, "merge", cmd_data_merge, "join the parts written by `data shard --part I/N` into one dataset")
    p.add_argument("out", type=Path, metavar="OUT")

    p = command(
        data,
        "tag",
        cmd_data_tag,
        "write what the sharder would infer (role, kind, tempo, bars, key) as a metadata.csv draft per folder",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    p = command(data, "inspect", cmd_data_inspect, "summarize a shard folder and verify every sample decodes")
    p.add_argument("folder", type=Path)

    recipe_command(command(sub, "train-ae", cmd_train_ae, "train (or resume) an autoencoder from a TOML recipe"))

    p = command(sub, "encode", cmd_encode, "encode audio shards into latent shards")
    p.add_argument("ae_ckpt", type=Path, metavar="AE_CKPT")
    p.add_argument("shards", type=Path, metavar="SHARDS")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: a GPU when there is one)")
    p.add_argument(
        "--shard-range",
        type=_shard_range,
        default=None,
        metavar="START:STOP",
        help="encode only these input shards and write a partial manifest",
    )
    p.add_argument(
        "--part",
        type=_part,
        default=None,
        metavar="I/N",
        help="job array task I of N: encode its share of the shards as a --shard-range",
    )

    p = command(sub, "merge-latents", cmd_merge_latents, "join the partial manifests of --shard-range encodes")
    p.add_argument("folder", type=Path)

    p = command(sub, "eval-ae", cmd_eval_ae, "STFT distance, mel distance and SI-SDR of an autoencoder")
    p.add_argument("ae_ckpt", type=Path, metavar="AE_CKPT")
    p.add_argument("shards", type=Path, metavar="SHARDS")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")

    p = command(sub, "reconstruct", cmd_reconstruct, "round-trip one audio file through an autoencoder")
    p.add_argument("ae_ckpt", type=Path, metavar="AE_CKPT")
    p.add_argument("input", type=Path, metavar="IN")
    p.add_argument("output", type=Path, metavar="OUT")
    p.add_argument("--device", default=None)

    p = command(sub, "import-ae", cmd_import_ae, "convert a stable-audio-tools autoencoder into a wavediff run")
    p.add_argument("src", type=Path, metavar="SRC", help="a folder with model_config.json and model.safetensors/.ckpt")
    p.add_argument("out", type=Path, metavar="OUT", help="a new run folder")
    p.add_argument("--config", type=Path, default=None, help="the model_config.json (default: in SRC)")
    p.add_argument("--weights", type=Path, default=None, help="the .safetensors or .ckpt (default: in SRC)")

    p = command(sub, "export-ae", cmd_export_ae, "write an autoencoder in stable-audio-tools' layout")
    p.add_argument("ae_ckpt", type=Path, metavar="AE_CKPT")
    p.add_argument("out", type=Path, metavar="OUT", help="folder for model_config.json and model.safetensors")

    p = command(sub, "import-dd", cmd_import_dd, "convert a Dance Diffusion checkpoint into a waveform denoiser run")
    p.add_argument(
        "src", type=Path, metavar="SRC", help="Harmonai's .ckpt, or a diffusers UNet1DModel (or pipeline) folder"
    )
    p.add_argument("out", type=Path, metavar="OUT", help="a new run folder")
    p.add_argument("--sample-rate", type=int, default=None, help="the model's rate (default: diffusers' config.json)")
    p.add_argument("--sample-size", type=int, default=None, help="training window in samples (default: 65536)")

    recipe_command(
        command(sub, "train", cmd_train, "train (or resume) a latent (or waveform) denoiser from a TOML recipe")
    )

    p = command(sub, "finetune", cmd_finetune, "fine-tune a denoiser checkpoint on a folder of your loops")
    p.add_argument("base", type=Path, metavar="BASE_CKPT", help="a denoiser checkpoint or run folder")
    p.add_argument("pack", type=Path, metavar="PACK_DIR", help="a folder of loops (tempo in names or sidecars)")
    p.add_argument(
        "--genre",
        default=None,
        help="the pack's genre: one of the base's, or a new name to add "
        "(default: the one genre the pack's metadata names)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/finetune-<pack name>)")
    p.add_argument(
        "--lora",
        type=int,
        default=None,
        metavar="RANK",
        help="train LoRA adapters of this rank (a small adapter checkpoint) instead of the whole model",
    )
    p.add_argument(
        "--recipe",
        default="finetune-cpu",
        help="a finetune recipe (default finetune-cpu; finetune-gpu, finetune-lora-cpu, finetune-lora-gpu)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step without changing the schedule")

    p = command(sub, "distill", cmd_distill, "distill a denoiser into a student that samples in 4 or 8 steps")
    p.add_argument("teacher", type=Path, metavar="CKPT", help="the teacher: a denoiser checkpoint or run folder")
    p.add_argument("--steps", type=int, default=None, help="the student's sampler steps: 4 or 8 (default 8)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/distill-<steps>-<teacher run>)")
    p.add_argument("--data", type=Path, default=None, help="shards to distill on (default: the teacher's own)")
    p.add_argument("--recipe", default="distill-cpu", help="a distill recipe (default distill-cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step without changing the schedule")

    p = command(
        sub, "train-preview", cmd_train_preview, "train a fast preview decoder that matches an autoencoder's decoder"
    )
    p.add_argument("autoencoder", type=Path, metavar="AE_RUN", help="an autoencoder checkpoint or run folder")
    p.add_argument("shards", type=Path, metavar="SHARDS", help="audio shards at the autoencoder's rate and channels")
    p.add_argument("--out", type=Path, required=True, help="run folder for the preview decoder")
    p.add_argument("--recipe", default="preview-cpu", help="a preview recipe (default preview-cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step without changing the schedule")

    p = command(sub, "merge-lora", cmd_merge_lora, "bake a LoRA adapter into its base: an ordinary checkpoint")
    p.add_argument("base", type=Path, metavar="BASE")
    p.add_argument("lora", type=Path, metavar="LORA")
    p.add_argument("out", type=Path, metavar="OUT", help="run folder for the merged checkpoint")
    p.add_argument("--scale", type=float, default=1.0, help="adapter strength (default 1)")

    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument("--seed", type=int, default=0, help="noise seed (loop i of --n uses seed + i)")
    sampling.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's, 50)")
    sampling.add_argument(
        "--sampler",
        default=None,
        help="euler, euler-ancestral, heun, dpm2, lms, dpmpp-2m, "
        "dpmpp-2m-sde, dpmpp-3m-sde, dpm-fast, dpm-adaptive, … (default dpmpp-2m)",
    )
    sampling.add_argument("--schedule", default=None, choices=("karras", "exponential", "polyexponential"))
    sampling.add_argument(
        "--cfg", type=float, default=None, help="classifier-free guidance of genre, tempo, key… (1 = off; default 3)"
    )
    sampling.add_argument(
        "--prompt-cfg", type=float, default=None, help="guidance of the prompt, on top of --cfg's (default 3)"
    )
    sampling.add_argument(
        "--loops",
        default=None,
        choices=("tile", "wrap"),
        help="how a loop is denoised: tile (default; its period repeated as the training windows held it) "
        "or wrap (one period, every conv wrapping: about half the U-Net's work, wider and noisier loops)",
    )
    sampling.add_argument("--out", type=Path, default=Path("loops"), help="output folder")
    sampling.add_argument("--format", default="wav", choices=("wav", "flac", "mp3"))
    sampling.add_argument("--device", default=None, help="cpu, cuda, … (default: a GPU when there is one)")
    sampling.add_argument(
        "--lora",
        type=Path,
        default=None,
        metavar="PATH",
        help="a LoRA adapter (wavediff finetune --lora) to apply on top of CKPT",
    )
    sampling.add_argument(
        "--lora-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="strength of the adapter (1: as trained, 0: the base)",
    )

    p = sub.add_parser(
        "generate",
        parents=[common, sampling],
        help="make loops at a genre, tempo and length",
        description="make loops at a genre, tempo and length",
    )
    p.set_defaults(fn=cmd_generate)
    p.add_argument("ckpt", type=Path, metavar="CKPT", help="a denoiser checkpoint or run folder")
    p.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="RUN",
        help="decode with this preview decoder (wavediff train-preview)",
    )
    p.add_argument("--genre", default=None, help="one of the model's genres (default: unconditional)")
    p.add_argument(
        "--role", default=None, help="drums, bass, melodic, fx or vocal (a model trained with conditioning.role)"
    )
    p.add_argument("--key", default=None, help=KEY_HELP)
    _prompt_options(p)
    p.add_argument("--bpm", type=float, required=True)
    p.add_argument("--bars", type=int, default=4)
    p.add_argument("--n", type=int, default=1, help="how many loops")
    p.add_argument(
        "--circular",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="seamless loop generation (default: on for a circular model)",
    )

    clip = argparse.ArgumentParser(add_help=False)
    clip.add_argument("--genre", default=None, help="one of the model's genres (default: unknown)")
    clip.add_argument("--bpm", type=float, default=None, help="the clip's tempo (default: unknown)")
    clip.add_argument("--bars", type=int, default=None, help="the clip's length in bars (default: unknown)")
    clip.add_argument(
        "--circular",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="treat the clip as a loop (default: on for a circular model)",
    )

    def audio_command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common, sampling, clip], help=help, description=help)
        p.set_defaults(fn=fn)
        p.add_argument("ckpt", type=Path, metavar="CKPT", help="a denoiser checkpoint or run folder")
        return p

    p = audio_command("vary", cmd_vary, "variations of an audio clip: noise it to a strength, denoise it")
    p.add_argument("input", type=Path, metavar="IN")
    p.add_argument("--strength", type=float, required=True, help="in (0, 1]: 1 starts from pure noise")
    p.add_argument("--n", type=int, default=1, help="how many variations")
    p.add_argument("--key", default=None, help=KEY_HELP)
    _prompt_options(p)

    p = audio_command("interpolate", cmd_interpolate, "morph between two clips through the noise they invert to")
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--frames", type=int, required=True, help="clips from A to B, both ends included (≥ 2)")
    p.add_argument("--key", default=None, help=KEY_HELP)
    _prompt_options(p)

    p = audio_command("inpaint", cmd_inpaint, "regenerate seconds [START, END) of a clip, or continue it past its end")
    p.add_argument("input", type=Path, metavar="IN")
    p.add_argument("--start", type=float, required=True, help="seconds")
    p.add_argument("--end", type=float, required=True, help="seconds (past the clip's end: continue it)")
    p.add_argument("--key", default=None, help=KEY_HELP)
    _prompt_options(p)
    p.add_argument("--n", type=int, default=1, help="how many versions")

    p = command(sub, "studio", cmd_studio, "a local web page to audition, regenerate and download loops")
    p.add_argument("ckpt", type=Path, metavar="CKPT", help="a denoiser checkpoint or run folder")
    p.add_argument("--lora", type=Path, default=None, metavar="RUN", help="a LoRA adapter to apply on top of CKPT")
    p.add_argument("--lora-scale", type=float, default=1.0, metavar="S", help="strength of the adapter (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--history", type=Path, default=None, help="history folder (default: RUN/studio beside CKPT)")
    p.add_argument("--history-mb", type=float, default=1000.0, help="history size cap; oldest loops go first")
    p.add_argument("--device", default=None, help="cpu, cuda, … (default: a GPU when there is one)")
    p.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="RUN",
        help="play loops decoded by this preview decoder at once; downloads are decoded fully",
    )

    p = command(
        sub,
        "train-classifier",
        cmd_train_classifier,
        "train the eval suite's genre (or role) classifier on audio shards; reports its val accuracy",
    )
    p.add_argument("shards", type=Path, metavar="SHARDS")
    p.add_argument(
        "--label", choices=("genre", "role"), default="genre", help="what it learns to tell apart (default genre)"
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/[role-]classifier-<shards name>)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 400)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a classifier recipe value (data.sample_size=…, model.width=…, train.cpu=true)",
    )

    report = argparse.ArgumentParser(add_help=False)
    report.add_argument(
        "--classifier",
        type=Path,
        default=None,
        metavar="RUN",
        help="a genre classifier (train-classifier) to score genre adherence",
    )
    report.add_argument("--seed", type=int, default=0)
    report.add_argument(
        "--out", type=Path, default=None, help="write the report here (JSON) and the spectrogram grid beside it (.png)"
    )
    report.add_argument("--grid", type=Path, default=None, help="the spectrogram grid PNG (default: beside --out)")

    p = sub.add_parser(
        "eval",
        parents=[common, report],
        help="score a denoiser against reference shards",
        description="generate loops at the reference's genres, tempos and lengths and compare: "
        "FD/KID on log-mel and MFCC, tempo, seam, diversity, genre adherence",
    )
    p.set_defaults(fn=cmd_eval)
    p.add_argument("ckpt", type=Path, metavar="CKPT", help="a denoiser checkpoint or run folder")
    p.add_argument(
        "--role-classifier",
        type=Path,
        default=None,
        metavar="RUN",
        help="a role classifier (train-classifier --label role): a text model's prompts then name roles too",
    )
    p.add_argument("--ref", type=Path, required=True, metavar="SHARDS", help="reference audio shards")
    p.add_argument("--split", default="all", choices=("train", "val", "all"), help="reference clips to use")
    p.add_argument("--n", type=int, default=64, help="loops to generate, split evenly over genres")
    p.add_argument("--per-condition", type=int, default=2, help="seeds per (genre, bpm, bars) condition")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--sampler", default=None, help="sampler name (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, … (default: a GPU when there is one)")

    p = sub.add_parser(
        "eval-folders",
        parents=[common, report],
        help="compare two folders of audio (A against reference B)",
        description="compare two folders of audio: A is scored against reference B",
    )
    p.set_defaults(fn=cmd_eval_folders)
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")

    p = command(sub, "demo", cmd_demo, "the CPU demo: synthesize a loop pack, shard it, train, write loops")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument(
        "--quality",
        default="16k",
        help="16k: 16 kHz mono, tiny models (~15 min); 44k: 44.1 kHz stereo (recipes ae-44k-cpu, loops-44k-cpu)",
    )
    p.add_argument(
        "--minutes",
        type=_finite,
        default=None,
        help="training budget: scales both recipes' steps (default: as the recipes say, ~15 min on 2 CPU cores at 16k)",
    )
    p.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps (overrides --minutes)")
    p.add_argument("--denoiser-steps", type=int, default=None, help="denoiser steps (overrides --minutes)")
    p.add_argument(
        "--pack",
        choices=("synth", "samples"),
        default="synth",
        help="the loops it trains on: synthesized (fast) or recorded sounds (data sample-pack)",
    )
    return parser


# The commands that train: they record stop signals from their first moment (see main).
TRAINING_COMMANDS = ("train-ae", "train", "finetune", "distill", "train-classifier", "train-preview")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # A training command records SIGTERM/SIGUSR1 before it parses or loads anything (torch takes
    # seconds), so an early pre-emption still ends in a checkpoint instead of killing it. The
    # command is argv[0]: the top-level parser has no options but --help.
    early = stop_signals_recorded() if argv[:1] and argv[0] in TRAINING_COMMANDS else nullcontext()
    reuse_freed_memory()  # big CPU tensors cost page faults otherwise (wavediff.allocator)
    with early:
        args = build_parser().parse_args(argv)
        try:
            return args.fn(args)
        except USER_ERRORS as e:
            print(f"wavediff: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("wavediff: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
