"""`wavediff data tag SRC...`: what the sharder would infer, written down for people to correct.

Every folder holding audio gets a `metadata.csv` draft: one row per file with its genre,
role, kind, bpm, bars and key as the sharder would record them (what the metadata says,
estimated where it says nothing), the confidence of each estimate and, for a value left
empty, why. The sharder reads that table (data_tools.metadata), so a value corrected there
wins over any estimate, and a kept draft saves the estimating on the next run.

A folder that already has a metadata.csv keeps it: the draft goes beside it as
`metadata.draft.csv`, to compare and merge by hand.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_tools import analysis
from data_tools import metadata as md
from data_tools.shard import describe, in_order, walk_source
from wavediff.errors import AudioError
from wavediff.io import audio
from wavediff.io.files import atomic_write_bytes

DRAFT_NAME = "metadata.draft.csv"
COLUMNS = ("file_name", "genre", "role", "kind", "bpm", "bars", "key")
CONFIDENCES = ("role", "kind", "bpm", "key")


@dataclass(frozen=True)
class _File:
    path: Path
    meta: md.Metadata


def _row(job: _File) -> dict[str, Any]:
    """One file's draft row; a file that does not decode keeps what its metadata says, with the reason."""
    row: dict[str, Any] = {"file_name": job.path.name}
    try:
        wav, sr = audio.decode(job.path.read_bytes(), str(job.path))
    except (OSError, AudioError) as e:
        meta, fields = job.meta, {"notes": f"not analysed: {getattr(e, 'reason', None) or e}"}
    else:
        meta, fields = describe(job.meta, wav, sr)
    for name in COLUMNS[1:]:
        value = getattr(meta, name)
        row[name] = f"{value:g}" if isinstance(value, float) else "" if value is None else value
    for name in CONFIDENCES:
        if f"{name}_confidence" in fields and getattr(meta, name) is not None:
            row[f"{name}_confidence"] = f"{fields[f'{name}_confidence']:.2f}"
    notes = [f"{name}: {fields[f'{name}_reason']}" for name in md.ESTIMATED if f"{name}_reason" in fields]
    row["notes"] = "; ".join(filter(None, [fields.get("notes"), *notes]))
    return row


def tag(sources: Sequence[str | os.PathLike], workers: int | None = None, progress: bool = True) -> dict[Path, int]:
    """Write a draft table into every folder under `sources` that holds audio; returns
    {table written: rows}. Files are analysed in `workers` processes (default: all cores)."""
    jobs: list[_File] = []
    for source in sources:
        root, files, _, _ = walk_source(Path(source))
        metas, _ = md.collect(root, files)
        jobs += [_File(f, metas[f]) for f in files]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers > 1:
        analysis.preload()
    rows: dict[Path, list[dict[str, Any]]] = defaultdict(list)
    bar = tqdm(total=len(jobs), unit="file", desc="tag", disable=not progress)
    for job, row in zip(jobs, in_order(_row, jobs, workers)):
        rows[job.path.parent].append(row)
        bar.update()
    bar.close()
    written = {}
    header = [*COLUMNS, *(f"{name}_confidence" for name in CONFIDENCES), "notes"]
    for folder, folder_rows in rows.items():
        text = io.StringIO()
        writer = csv.DictWriter(text, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(folder_rows)
        path = folder / (DRAFT_NAME if (folder / md.TABLE_NAMES[0]).exists() else md.TABLE_NAMES[0])
        atomic_write_bytes(path, text.getvalue().encode())
        written[path] = len(folder_rows)
    return written
