"""The eval report as a table to read in a terminal (the JSON holds every number; this, the ones
that decide). Plain data in, text out: cheap to import at the end of any job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLUMNS = (
    ("genre", 14),
    ("loops", 9),
    ("FD mel", 8),
    ("FD mfcc", 8),
    ("KID mel", 8),
    ("KID mfcc", 9),
    ("tempo gen", 10),
    ("tempo ref", 10),
    ("librosa gen", 11),
    ("librosa ref", 11),
    ("agree", 9),
    ("seam gen", 9),
    ("seam ref", 9),
    ("div cond", 9),
    ("div gen", 8),
    ("div ref", 8),
    ("genre ok", 8),
)
LEGEND = (
    "FD, KID: distance of generated from reference frame statistics (lower is closer; 0 = same distribution).\n"
    "tempo: share of loops within 4% of the asked tempo / share at double or half of it, by our estimator;\n"
    "     librosa: the same by librosa's beat tracker; agree: share where the two estimates agree (gen/ref).\n"
    "seam: wrap jump over the median bar-line jump inside the loop (1 = the wrap is as smooth as a bar line).\n"
    "div: RMS dB between loops' log-mel profiles: generated for the same condition, generated and reference\n"
    "     of the same genre (a generated set far below the reference has collapsed).\n"
    "genre ok: share of generated loops the genre classifier assigns to the asked genre."
)


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _tempo(loops: Mapping[str, Any] | None) -> str:
    if not loops:
        return "—"
    return f"{loops['exact']:.0%}/{loops['double'] + loops['half']:.0%}"


def _librosa(loops: Mapping[str, Any] | None) -> str:
    return "—" if not loops else _tempo(loops["librosa"])


def _agree(loops: Mapping[str, Any]) -> str:
    return "/".join("—" if not side else f"{side['judges_agree']:.0%}" for side in loops.values())


def _seam(loops: Mapping[str, Any] | None) -> str:
    return "—" if not loops else _num(loops["seam_ratio"], 2)


def _row(name: str, m: Mapping[str, Any]) -> list[str]:
    kid = {k: None if v is None else v["mean"] for k, v in m["kid"].items()}
    loops, div = m["loops"], m["diversity"]
    return [
        name,
        f"{m['clips']['generated']}/{m['clips']['reference']}",
        _num(m["fd"]["logmel"]),
        _num(m["fd"]["mfcc"]),
        _num(kid["logmel"]),
        _num(kid["mfcc"]),
        _tempo(loops["generated"]),
        _tempo(loops["reference"]),
        _librosa(loops["generated"]),
        _librosa(loops["reference"]),
        _agree(loops),
        _seam(loops["generated"]),
        _seam(loops["reference"]),
        _num(div["generated_same_condition"]),
        _num(div["generated_same_genre"]),
        _num(div["reference_same_genre"]),
        _percent(m.get("genre_adherence")),
    ]


def _header(report: Mapping[str, Any]) -> list[str]:
    lines = []
    if "checkpoint" in report:
        s = report["settings"]
        lines.append(
            f"{report['checkpoint']}: {s['n']} loops ({s['per_condition']} per condition), {s['steps']} steps "
            f"{s['sampler']} ({s['schedule']}), cfg {s['cfg_scale']:g}"
        )
        lines.append(f"reference: {report['reference']} (split {report['split']})")
    else:
        lines.append(f"generated: {report['generated']}")
        lines.append(f"reference: {report['reference']}")
    judge = report.get("classifier")
    if judge is not None:
        if judge.get("accuracy") is None:
            lines.append(
                f"genre classifier {judge['checkpoint']}: its val accuracy is unknown, so read 'genre ok' with care"
            )
        else:
            lines.append(
                f"genre classifier: {judge['accuracy']:.0%} right on {judge['samples']} val clips "
                f"(chance {judge['chance']:.0%}): 'genre ok' is its verdict"
            )
    roles = report.get("role_classifier")
    if roles is not None:
        known = "unknown" if roles.get("accuracy") is None else f"{roles['accuracy']:.0%} right on {roles['samples']}"
        lines.append(f"role classifier: {known} val clips: prompt adherence's role verdict")
    return lines


def format_report(report: Mapping[str, Any]) -> str:
    """A readable table of an evaluate_model / evaluate_folders report: overall, then each genre."""
    rows = [_row("overall", report["overall"])] + [_row(g, m) for g, m in report["genres"].items()]
    table = [[name for name, _ in COLUMNS]] + rows
    widths = [max(width, *(len(r[i]) for r in table)) for i, (_, width) in enumerate(COLUMNS)]
    text = [
        " ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in table
    ]
    lines = _header(report) + [""] + text + [""] + LEGEND.splitlines()
    for key, label in (("genres_only_generated", "generated only"), ("genres_only_reference", "reference only")):
        if report.get(key):
            lines.append(f"genres in the {label}: {', '.join(report[key])}")
    if report.get("key_accuracy", {}).get("loops"):
        k = report["key_accuracy"]
        lines.append(
            f"key accuracy (librosa chroma, {k['loops']} loops asked for a key): exact {k['exact']:.0%}, "
            f"tonic {k['tonic']:.0%}, mode {k['mode']:.0%}, relative key {k['relative']:.0%} (chance {k['chance']:.0%})"
        )
        lib = k["librosa"]
        lines.append(
            f"key accuracy (independent judge: librosa CENS chroma, Temperley profiles): exact {lib['exact']:.0%}, "
            f"tonic {lib['tonic']:.0%}, mode {lib['mode']:.0%}, relative key {lib['relative']:.0%}; "
            f"the two judges agree on {k['judges_agree']:.0%}"
        )
    if "prompt_adherence" in report:
        p = report["prompt_adherence"]
        if "role" in p:
            lines.append(
                f"prompt adherence (genre and role named by the prompt alone, {p['loops']} loops): genre "
                f"{p['genre']:.0%}, role {p['role']:.0%}, both {p['genre_and_role']:.0%}"
            )
        else:
            lines.append(
                f"prompt adherence (genre named by the prompt alone, {p['loops']} loops): {p['genre']:.0%} "
                f"(genre only: {p['genre_only_because']})"
            )
    if "grid" in report:
        grid = report["grid"]
        lines.append(f"spectrograms: {grid['path']} (rows {', '.join(grid['rows'])}; {grid['columns']})")
    return "\n".join(lines)
