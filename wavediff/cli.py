"""The `wavediff` command: parse arguments, call the library, report errors in one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from wavediff.audio import AudioError
from wavediff.config import ConfigError

# Errors that are the user's input, not our bug: one line, no traceback.
USER_ERRORS = (AudioError, ConfigError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def _optional_seconds(text: str) -> float | None:
    if text.lower() in ("none", "0", "off"):
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive or 'none', got {text}")
    return value


def _optional_lufs(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


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

    manifest = shard(args.sources, args.out, _shard_options(args), progress=not args.quiet)
    print(format_manifest(manifest))
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from data_tools.inspect import format_manifest, inspect_shards
    from wavediff.shards import read_manifest

    report = inspect_shards(args.folder, progress=not args.quiet)
    print(format_manifest(read_manifest(args.folder), report))
    return 0 if report["ok"] else 1


# --------------------------------------------------------------------------- autoencoder


def cmd_train_ae(args: argparse.Namespace) -> int:
    from wavediff.config import AERecipe, load_recipe
    from wavediff.training.autoencoder import train_autoencoder
    from wavediff.training.engine import TrainingError

    recipe = load_recipe(args.recipe, AERecipe, args.set)
    out = args.out or Path("runs") / args.recipe.stem
    try:
        last = train_autoencoder(recipe, out, max_steps=args.max_steps, progress=not args.quiet)
    except TrainingError as e:
        print(f"wavediff: training stopped: {e}", file=sys.stderr)
        return 1
    print(f"checkpoint: {last}")
    return 0


def _shard_range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    try:
        return int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (shard indices), got {text!r}") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from wavediff.encode import encode_shards

    manifest = encode_shards(
        args.ae_ckpt, args.shards, args.out, batch_size=args.batch_size, device=args.device,
        shard_range=args.shard_range, progress=not args.quiet,
    )
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['samples']} samples in {len(info['shards'])} shard(s)")
    print(f"latents: {manifest['latent_dim']} channels at {manifest['latent_rate']:.2f} frames/s → {args.out}")
    return 0


def cmd_merge_latents(args: argparse.Namespace) -> int:
    from wavediff.encode import merge_latent_manifests

    manifest = merge_latent_manifests(args.folder)
    print(f"merged: {sum(s['samples'] for s in manifest['splits'].values())} samples")
    return 0


def cmd_eval_ae(args: argparse.Namespace) -> int:
    from wavediff.evaluate import evaluate_autoencoder
    from wavediff.files import atomic_write_json

    report = evaluate_autoencoder(
        args.ae_ckpt, args.shards, split=args.split, max_samples=args.max_samples,
        batch_size=args.batch_size, device=args.device,
    )
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_json(args.out, report)
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from wavediff.evaluate import reconstruct_file

    print(reconstruct_file(args.ae_ckpt, args.input, args.output, device=args.device))
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from wavediff.demo import run_demo

    run_demo(args.out, ae_steps=args.ae_steps, progress=not args.quiet)
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

    p = command(data, "shard", cmd_data_shard, "turn folders of audio into WebDataset shards")
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--sample-rate", type=int, default=44100)
    p.add_argument("--channels", type=int, default=2, choices=(1, 2))
    p.add_argument("--max-seconds", type=_optional_seconds, default=30.0, help="chunk longer files ('none' keeps them whole)")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard-size-mb", type=float, default=256.0)
    p.add_argument("--loudness", type=_optional_lufs, default=None, help="target LUFS (default: leave levels)")

    p = command(data, "inspect", cmd_data_inspect, "summarize a shard folder and verify every sample decodes")
    p.add_argument("folder", type=Path)

    p = command(sub, "train-ae", cmd_train_ae, "train (or resume) an autoencoder from a TOML recipe")
    p.add_argument("recipe", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<recipe name>)")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step without changing the schedule")

    p = command(sub, "encode", cmd_encode, "encode audio shards into latent shards")
    p.add_argument("ae_ckpt", type=Path, metavar="AE_CKPT")
    p.add_argument("shards", type=Path, metavar="SHARDS")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: a GPU when there is one)")
    p.add_argument("--shard-range", type=_shard_range, default=None, metavar="START:STOP",
                   help="encode only these input shards and write a partial manifest")

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

    p = command(sub, "demo", cmd_demo, "the CPU demo: synthesize a loop pack, shard it, train, write loops")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps (default: the recipe's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
