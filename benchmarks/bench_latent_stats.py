"""The denoiser alone: are the latents it makes the kind its autoencoder was trained to decode?

    .venv/bin/python benchmarks/bench_latent_stats.py --demo DEMO [--per-genre 2] [--steps 25] [--cfg 1]

Generates loops of every genre (the role `drums` where the model knows roles) with `sample_loops`,
undecoded, in both loop modes (SamplingConfig.loops), and sets their latents' per-channel mean,
standard deviation and frame-to-frame change beside the data's: mean and std from the latent shards' manifest (`wavediff encode` writes them),
the change measured on the shards. A decoder handed latents wider or rougher than any it was
trained on makes noise however good it is; latents narrower than the data's make muted,
alike loops. Writes the section "Latent statistics (DEMO's name)" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

import torch
import webdataset as wds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from wavediff.generation.generate import sample_loops  # noqa: E402
from wavediff.models.checkpoint import latest_checkpoint  # noqa: E402
from wavediff.models.factory import load_denoiser  # noqa: E402
from wavediff.shards.format import SPLITS, read_manifest, shard_paths  # noqa: E402

BPM, BARS = 128, 4


def data_change(latents: Path) -> torch.Tensor:
    """Per-channel std of the frame-to-frame change over every latent sample of the shards."""
    manifest = read_manifest(latents, "latent")
    steps = [
        torch.from_numpy(sample["latent.npy"]).float().diff(dim=-1)
        for split in SPLITS
        for path in shard_paths(latents, manifest, split)
        for sample in wds.WebDataset(str(path), shardshuffle=False).decode()
    ]
    return torch.cat(steps, -1).std(-1)


def rows(data_mean, data_std, data_rough, made: torch.Tensor) -> tuple[str, dict[str, float]]:
    """The table's rows, channels in order of the data's std, and the whole-set ratios."""
    flat = made.permute(1, 0, 2).reshape(made.shape[1], -1)
    mean, std, rough = flat.mean(-1), flat.std(-1), flat.diff(dim=-1).std(-1)
    lines = [
        f"| {c} | {data_mean[c]:.2f} | {mean[c]:.2f} | {data_std[c]:.2f} | {std[c]:.2f} | "
        f"{data_rough[c]:.2f} | {rough[c]:.2f} |"
        for c in data_std.argsort().tolist()
    ]
    summary = {
        "mean_gap": (mean - data_mean).abs().mean().item(),
        "std_ratio": (std / data_std).median().item(),
        "rough_ratio": (rough / data_rough).median().item(),
    }
    return "\n".join(lines), summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, required=True, help="a demo folder: its denoiser and latents")
    p.add_argument("--per-genre", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=1.0, help="guidance (1 = off: the model's own distribution)")
    args = p.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    started = machine()
    model = load_denoiser(latest_checkpoint(args.demo / "denoiser"), "cpu")
    stats = read_manifest(args.demo / "latents", "latent").stats
    data_mean, data_std = torch.tensor(stats.mean), torch.tensor(stats.std)
    data_rough = data_change(args.demo / "latents")
    role = "drums" if model.conditioner.cfg.role else None
    summaries = {}
    for loops in ("wrap", "tile"):  # tile last: its table is the one written
        settings = dataclasses.replace(model.recipe.sampling, steps=args.steps, cfg_scale=args.cfg, loops=loops)
        made = torch.cat(
            [
                sample_loops(
                    model, genre=g, bpm=BPM, bars=BARS, n=args.per_genre, seed=i, settings=settings, role=role
                ).latent
                for i, g in enumerate(model.conditioner.genres)
            ]
        )
        made = model.from_model(made)  # the shards' scale, where the data's statistics are
        table, summaries[loops] = rows(data_mean, data_std, data_rough, made)
    modes = "\n".join(
        f"| {loops} | {m['mean_gap']:.2f} | {m['std_ratio']:.2f} | {m['rough_ratio']:.2f} |"
        for loops, m in summaries.items()
    )
    text = f"""## Latent statistics ({args.demo.name})

`python benchmarks/bench_latent_stats.py --demo DEMO --per-genre {args.per_genre} --steps {args.steps} --cfg {args.cfg:g}` —
{datetime.date.today().isoformat()}, {started}. DEMO's denoiser ({model.recipe.autoencoder or "waveform"}
latents, {model.data_channels} channels) made {made.shape[0]} loops ({args.per_genre} per genre,
{BARS} bars at {BPM} BPM{", role drums" if role else ""}, {args.steps} {settings.sampler} steps, cfg {args.cfg:g}), undecoded,
the loops denoised tiled (`sampling.loops = "tile"`, the default) and wrapped ("wrap"). Over the channels: mean
|gen − data| of the means, median std ratio gen ÷ data, median frame-to-frame change ratio (1 and 1 where
the denoiser makes latents like its data):

| loops | mean gap | std ratio | change ratio |
| --- | --- | --- | --- |
{modes}

Per channel, tiled (in order of the data's std): mean, std and the std of the frame-to-frame change,
of the encoded pack (data) and of the generated latents (gen).

| channel | mean data | mean gen | std data | std gen | change data | change gen |
| --- | --- | --- | --- | --- | --- | --- |
{table}
"""
    print(text)
    write_section(f"Latent statistics ({args.demo.name})", text)


if __name__ == "__main__":
    main()
