"""`wavediff demo`: the whole pipeline on the built-in loop pack, sized for a laptop CPU.

Each stage writes into its own folder under OUT and is skipped when its output is
already complete, so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from data_tools.inspect import format_manifest, inspect_shards
from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack
from wavediff.shards import MANIFEST_NAME, read_manifest

DEMO_SAMPLE_RATE = 16000
DEMO_CHANNELS = 1
DEMO_LOOPS_PER_GENRE = 12


def _stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def make_demo_shards(out: Path, progress: bool = True) -> Path:
    """Synthesize the pack and shard it; returns the shard folder."""
    pack, shards = out / "pack", out / "shards"
    if (shards / MANIFEST_NAME).exists():
        _stage(f"shards already in {shards}")
        return shards
    _stage(f"synthesizing the built-in loop pack into {pack}")
    files = synthesize_pack(
        pack, loops_per_genre=DEMO_LOOPS_PER_GENRE, sample_rate=DEMO_SAMPLE_RATE, seed=0, progress=progress
    )
    print(f"{len(files)} loops")
    _stage(f"sharding {pack} into {shards}")
    options = ShardOptions(
        sample_rate=DEMO_SAMPLE_RATE, channels=DEMO_CHANNELS, max_seconds=None, val_fraction=0.1, workers=2
    )
    shard([pack], shards, options, progress=progress)
    return shards


def run_demo(out: str | Path, minutes: float = 15.0, progress: bool = True) -> Path:
    """Run every stage of the demo into `out`; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards = make_demo_shards(out, progress)
    _stage(f"inspecting {shards}")
    report = inspect_shards(shards, progress=progress)
    print(format_manifest(read_manifest(shards), report))
    if not report["ok"]:
        raise ValueError(f"{shards}: the demo's own shards failed inspection")
    return out
