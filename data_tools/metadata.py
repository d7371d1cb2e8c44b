"""What a folder of loops says about each file: genre, tags, tempo, key, bars, loop, kind, role.

Sources, weakest first (a later one overrides a field an earlier one set; tags add up):
  1. folders: `SRC/techno/kicks/x.wav` → genre "techno", tags ["kicks"], role "drums";
     a folder named for a role or kind (`Drums/`, `Bass Loops/`, `One Shots/`) is not a genre;
  2. the file name: `128bpm`, `128 BPM`, `128_bpm`, `bpm128`; keys as tokens (`Am`, `F#min`,
     `C#maj`, `Ebm`, `A minor`, or a bare root with an accidental such as `F#`); role and
     kind words, also inside compound names (`bassloops`, `hihat01`, `909beat`);
  3. `metadata.csv` / `metadata.jsonl` in the file's folder or any folder above it inside
     the source (deeper tables win), rows keyed by `file_name`, `file` or `path` relative
     to the table's folder;
  4. a JSON sidecar beside the audio with the same stem (`x.json`);
  5. what the audio says (data_tools.analysis), only for what none of the above gave:
     `describe` fills those fields and records each field's source (`bpm_source` …:
     "folder", "name", "csv", "jsonl", "sidecar", "estimated" or "unknown"), an estimate's
     confidence and, for a value still unknown, the reason.

A table row or sidecar that does not parse or holds a bad value is ignored as a whole
and reported as a warning naming the file; the audio is still used with what the other
sources say, since a typo in a sidecar should not cost the user a loop.

Labels (genre, tags) are lower-cased with `_` read as a space, so `Deep_House/` and a
sidecar's "deep house" are one genre. Keys are spelled one way per pitch class (C C# D Eb
E F F# G Ab A Bb B, plus `m` for minor) so `D#m` and `Ebm` are one condition. Bars assume
4/4.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from wavediff.config import ROLES
from wavediff.errors import MetadataError
from wavediff.io.keys import MINOR_WORDS, canonical_key, parse_key

TABLE_NAMES = ("metadata.csv", "metadata.jsonl")
ROW_KEYS = ("file_name", "file", "path")
BPM_RANGE = (20.0, 999.0)
KINDS = ("loop", "one-shot")
ESTIMATED = ("bpm", "bars", "key", "kind", "role")  # the fields whose source every sample records

# A key inside a file name token: capital root, so "am" / "Ebony" / "Amen" are not keys.
_KEY_TOKEN = re.compile(r"^([A-G])([#♯b♭]?)(m|(?i:minor|major|min|maj))?$")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_MODE_WORD = re.compile(r"^(minor|major|min|maj)$", re.IGNORECASE)
_TOKEN_SPLIT = re.compile(r"[_\-\s.,()\[\]{}]+")
_BPM = (
    re.compile(r"(?<![0-9A-Za-z])(\d{2,3}(?:[.,]\d+)?)[\s_-]*bpm(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?<![A-Za-z])bpm[\s_-]*(\d{2,3}(?:[.,]\d+)?)(?![0-9])", re.IGNORECASE),
)


# Words that name a role, matched in folder and file names also inside compounds: a word of
# four letters or more anywhere in a token ("bassloops", "drumkit"), a shorter one only at a
# token's start or end ("hihat", "subs", "topsloop"), so "what" and "stop" are not drums.
ROLE_WORDS = {
    "drums": ("drum", "beat", "groove", "kick", "hat", "snare", "perc", "top", "break", "clap", "cymbal", "shaker"),
    "bass": ("bass", "303", "sub", "reese"),
    "melodic": ("synth", "lead", "pad", "chord", "keys", "arp", "piano", "pluck", "stab", "melod"),
    "fx": ("fx", "sfx", "riser", "impact", "sweep", "whoosh", "downlifter", "uplifter", "noise"),
    "vocal": ("vox", "vocal", "voice", "acapella", "choir"),
}
# Tokens that hold a role word but mean something else (or another role).
_ROLE_EXCEPTIONS = {
    "what": None,
    "that": None,
    "chat": None,
    "phat": None,
    "stop": None,
    "desktop": None,
    "laptop": None,
    "subtle": None,
    "percent": None,
    "breakdown": None,
    "topline": "vocal",
    "bassoon": "melodic",
    "bassdrum": "drums",
    "kickbass": "bass",
    "leader": None,
    "padding": None,
    "keyshift": None,
}
# Genre names that hold role words: a genre, and no role.
_GENRE_LIKE = re.compile(
    r"^(drum\s*(and|&|n|'n')?\s*bass|drumnbass|breakbeats?|breaks|(future|uk)\s+bass|bass\s+(house|music)|big\s+beat)$"
)
_WORDS = re.compile(r"[a-z]+|[0-9]+")


@dataclass(frozen=True)
class Metadata:
    """What is known about one audio file; None means unknown. `sources` says where each
    known field came from (see the module docstring); it is left out of comparisons."""

    genre: str | None = None
    tags: tuple[str, ...] = ()
    bpm: float | None = None
    key: str | None = None
    bars: int | None = None
    loop: bool | None = None
    kind: str | None = None
    role: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def merged(self, stronger: Metadata, source: str | None = None) -> Metadata:
        """Fields `stronger` knows override ours (recorded as from `source` when given); tags are
        the union, ours first."""
        tags = tuple(dict.fromkeys(self.tags + stronger.tags))
        known = {k: v for k, v in vars(stronger).items() if v is not None and k not in ("tags", "sources")}
        sources = {**self.sources, **stronger.sources, **dict.fromkeys(known if source else (), source)}
        return replace(self, tags=tags, sources=sources, **known)


# --------------------------------------------------------------------------- values


def label(text: str) -> str:
    """Normalise a genre or tag so spelling variants meet in one vocabulary entry."""
    return " ".join(text.replace("_", " ").split()).lower()


def key_from_name(stem: str) -> str | None:
    """The first key token in a file name, or None.

    Stricter than parse_key: the root must be a capital letter, and a bare natural root
    ("A", "C") only counts when followed by a mode word ("A minor", "C_major"), since
    lone capitals are common words and initials in file names.
    """
    tokens = [t for t in _TOKEN_SPLIT.split(stem) if t]
    for i, token in enumerate(tokens):
        m = _KEY_TOKEN.match(token)
        if not m:
            continue
        root, accidental, mode = m.groups()
        if mode is None and i + 1 < len(tokens) and _MODE_WORD.match(tokens[i + 1]):
            mode = tokens[i + 1]
        if mode is None and not accidental:
            continue
        return canonical_key(root, accidental, (mode or "").lower() in MINOR_WORDS)
    return None


def bpm_from_name(stem: str) -> float | None:
    """Tempo written in a file name (`128bpm`, `128 BPM`, `128_bpm`, `bpm128`, `92.5bpm`)."""
    for pattern in _BPM:
        m = pattern.search(stem)
        if m:
            bpm = float(m.group(1).replace(",", "."))
            if BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:
                return bpm
    return None


def bar_seconds(bpm: float) -> float:
    """One 4/4 bar."""
    return 240.0 / bpm


def whole_bars(duration_s: float, bpm: float | None) -> int | None:
    """The bar count when `duration_s` is a whole number of bars, within 1% of a bar.

    The tolerance is a fraction of one bar, not of the length: 1% of a two-minute file
    would call most songs whole-bar (and so loops).
    """
    if not bpm or duration_s <= 0:
        return None
    bars = duration_s / bar_seconds(bpm)
    n = round(bars)
    return n if n >= 1 and abs(bars - n) <= 0.01 else None


def _tokens(text: str) -> list[str]:
    """Lower-case words and numbers of a name: camelCase, digits and punctuation split it
    ("HiHat01" → hi, hat, 01; "909beat" → 909, beat)."""
    return _WORDS.findall(re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower())


def _token_role(token: str) -> str | None:
    if token in _ROLE_EXCEPTIONS:
        return _ROLE_EXCEPTIONS[token]
    found: list[tuple[int, str]] = []  # (where the word ends in the token, role): the last one is the head noun
    for role, words in ROLE_WORDS.items():
        for word in words:
            at = token.rfind(word)
            if at < 0:
                continue
            if len(word) >= 4 or token.isdigit() or at == 0 or at + len(word) == len(token):
                found.append((at + len(word), role))
    return max(found)[1] if found else None


def role_from_words(text: str) -> str | None:
    """The role a folder or file name names ("Bass Loops" → bass, "hihat01" → drums), or None.
    The last role word wins, as English puts the head noun last ("synth bass" is a bass)."""
    if _GENRE_LIKE.match(label(text).replace("-", " ")):
        return None
    roles = [r for r in (_token_role(t) for t in _tokens(text)) if r]
    return roles[-1] if roles else None


def kind_from_words(text: str) -> str | None:
    """ "loop" or "one-shot" when a name says so (`loops`, `drumloop`, `one shot`, `oneshots`, `hits`)."""
    tokens = _tokens(text)
    kind = None
    for i, token in enumerate(tokens):
        if token.startswith("oneshot") or (
            token == "one" and i + 1 < len(tokens) and tokens[i + 1] in ("shot", "shots")
        ):
            kind = "one-shot"
        elif token in ("hit", "hits", "shot", "shots") and (i == 0 or tokens[i - 1] != "one"):
            kind = "one-shot"
        elif token.startswith("loop") or token.endswith(("loop", "loops")):
            kind = "loop"
    return kind


# --------------------------------------------------------------------------- sources


def from_folder(relative_dir: PurePosixPath) -> Metadata:
    """Genre is the first folder below the source root that does not name a role or kind
    (`Drums/`, `Bass Loops/`); every other folder is a tag. The deepest folder naming a
    role or kind gives it."""
    parts = [p for p in relative_dir.parts if label(p)]
    role = kind = genre = None
    tags = []
    for part in parts:
        part_role, part_kind = role_from_words(part), kind_from_words(part)
        role, kind = part_role or role, part_kind or kind
        if genre is None and not (part_role or part_kind):
            genre = label(part)
        else:
            tags.append(label(part))
    return Metadata(genre=genre, tags=tuple(tags), role=role, kind=kind)


def from_name(stem: str) -> Metadata:
    return Metadata(
        bpm=bpm_from_name(stem), key=key_from_name(stem), role=role_from_words(stem), kind=kind_from_words(stem)
    )


def from_record(record: Mapping[str, Any], where: str) -> Metadata:
    """Validate one sidecar or table row. Unknown fields are ignored (sidecars often carry
    other things); a known field with a bad value raises MetadataError naming `where`."""

    def bad(field: str, why: str) -> MetadataError:
        return MetadataError(f"{where}: {field} {record[field]!r} {why}")

    def present(field: str) -> bool:
        value = record.get(field)
        return value is not None and not (isinstance(value, str) and not value.strip())

    out: dict[str, Any] = {}
    if present("genre"):
        if not isinstance(record["genre"], str) or not label(record["genre"]):
            raise bad("genre", "is not a name")
        out["genre"] = label(record["genre"])
    if present("tags"):
        tags = record["tags"]
        if isinstance(tags, str):
            tags = re.split(r"[,;|]", tags)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise bad("tags", "is not a list of names")
        out["tags"] = tuple(dict.fromkeys(label(t) for t in tags if label(t)))
    if present("bpm"):
        bpm = _number(record["bpm"])
        if bpm is None or not BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:
            raise bad("bpm", f"is not a tempo between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g}")
        out["bpm"] = bpm
    if present("key"):
        key = parse_key(record["key"]) if isinstance(record["key"], str) else None
        if key is None:
            raise bad("key", "is not a key such as Am, F#, Eb major")
        out["key"] = key
    if present("bars"):
        bars = _number(record["bars"])
        if bars is None or bars < 1 or bars != int(bars):
            raise bad("bars", "is not a whole number of bars")
        out["bars"] = int(bars)
    if present("loop"):
        loop = _boolean(record["loop"])
        if loop is None:
            raise bad("loop", "is not true or false")
        out["loop"] = loop
    if present("kind"):
        kind = label(record["kind"]).replace(" ", "-") if isinstance(record["kind"], str) else None
        if kind not in KINDS:
            raise bad("kind", f"is not one of {', '.join(KINDS)}")
        out["kind"] = kind
    if present("role"):
        role = label(record["role"]) if isinstance(record["role"], str) else None
        if role not in ROLES:
            raise bad("role", f"is not one of {', '.join(ROLES)}")
        out["role"] = role
    return Metadata(**out)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _BOOLEANS.get(value.strip().lower())
    return None


Rows = dict[str, tuple[str, dict[str, Any]]]


def read_table(path: Path) -> tuple[Rows, list[str]]:
    """Rows of a metadata.csv / metadata.jsonl as {relative posix path: (where, row)},
    and warnings for rows that were dropped. A table that cannot be read at all raises
    MetadataError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MetadataError(f"{path}: cannot read ({e})") from None
    warnings: list[str] = []
    rows: list[tuple[str, Any]] = []
    if path.suffix == ".csv":
        try:
            reader = csv.DictReader(text.splitlines())
            rows = [(f"{path} row {i}", row) for i, row in enumerate(reader, start=2)]
        except csv.Error as e:
            raise MetadataError(f"{path}: not valid CSV ({e})") from None
        if not any(k in (reader.fieldnames or []) for k in ROW_KEYS):
            raise MetadataError(f"{path}: no file column (one of {', '.join(ROW_KEYS)})")
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((f"{path} line {i}", json.loads(line)))
                except json.JSONDecodeError as e:
                    warnings.append(f"{path} line {i}: not valid JSON ({e.msg})")
    table: Rows = {}
    for where, row in rows:
        name = next((row[k] for k in ROW_KEYS if isinstance(row, dict) and row.get(k)), None)
        if not isinstance(name, str):
            warnings.append(f"{where}: no file name (one of {', '.join(ROW_KEYS)})")
            continue
        table[str(PurePosixPath(name.replace("\\", "/")))] = (where, row)
    return table, warnings


def read_sidecar(path: Path) -> Metadata:
    try:
        record = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        raise MetadataError(f"{path}: cannot read sidecar ({e})") from None
    except json.JSONDecodeError as e:
        raise MetadataError(f"{path}: invalid JSON sidecar ({e.msg} at line {e.lineno})") from None
    if not isinstance(record, dict):
        raise MetadataError(f"{path}: sidecar must hold a JSON object, got {type(record).__name__}")
    return from_record(record, str(path))


def sidecar_path(audio: Path) -> Path:
    return audio.with_suffix(".json")


def collect(root: Path, files: Iterable[Path]) -> tuple[dict[Path, Metadata], list[str]]:
    """Metadata for every audio file under `root`, and one-line warnings for metadata
    that was ignored, including table rows that match no audio file (a typo there would
    otherwise go unnoticed). Each table is read once however many files it covers."""
    tables: dict[Path, Rows] = {}
    used: set[str] = set()
    warnings: list[str] = []

    def table(folder: Path) -> Rows:
        if folder not in tables:
            tables[folder] = {}
            for name in TABLE_NAMES:
                if (folder / name).is_file():
                    try:
                        rows, dropped = read_table(folder / name)
                    except MetadataError as e:
                        warnings.append(str(e))
                        continue
                    tables[folder].update(rows)
                    warnings.extend(dropped)
        return tables[folder]

    result: dict[Path, Metadata] = {}
    for file in files:
        relative = PurePosixPath(file.relative_to(root).as_posix())
        meta = Metadata().merged(from_folder(relative.parent), "folder").merged(from_name(file.stem), "name")
        for depth in range(len(relative.parts)):
            folder = root.joinpath(*relative.parts[:depth])
            entry = table(folder).get(file.relative_to(folder).as_posix())
            if entry is not None:
                used.add(entry[0])
                try:
                    meta = meta.merged(from_record(entry[1], entry[0]), _table_source(entry[0]))
                except MetadataError as e:
                    warnings.append(str(e))
        sidecar = sidecar_path(file)
        if sidecar.is_file():
            try:
                meta = meta.merged(read_sidecar(sidecar), "sidecar")
            except MetadataError as e:
                warnings.append(str(e))
        result[file] = meta
    for folder, rows in tables.items():
        for name, (where, _) in rows.items():
            if where not in used:
                warnings.append(f"{where}: no audio file {name} in {folder}")
    return result, warnings


def _table_source(where: str) -> str:
    """ "csv" or "jsonl": the kind of table a row came from (`where` names its file)."""
    return "jsonl" if ".jsonl " in where else "csv"


# --------------------------------------------------------------------------- filling gaps


def implied_kind(meta: Metadata, duration_s: float) -> tuple[str | None, str | None]:
    """(kind, source) the metadata already settles: a stated kind, `loop: true`, or a known tempo
    at which the file is whole bars (a loop, as the sharder has always taken it)."""
    if meta.kind is not None:
        return meta.kind, meta.sources.get("kind")
    if meta.loop:
        return "loop", meta.sources.get("loop")
    if whole_bars(duration_s, meta.bpm) is not None:
        return "loop", "estimated"
    return None, None


def fill(meta: Metadata, estimates: Mapping[str, Any], duration_s: float) -> tuple[Metadata, dict[str, Any]]:
    """`meta` with its unknown fields filled from `estimates` (data_tools.analysis.Estimate by
    field name), and the JSON fields that say where each of ESTIMATED came from: `<f>_source`
    always, `<f>_confidence` for an estimate, `<f>_reason` for a value still unknown, and
    `downbeat_s` when the tempo was estimated. A value the metadata gives is never replaced."""
    values: dict[str, Any] = {}
    sources = dict(meta.sources)
    kind, kind_source = implied_kind(meta, duration_s)
    if kind is not None:
        values["kind"], sources["kind"] = kind, kind_source or "estimated"
    if meta.bpm is not None and meta.bars is None and "bars" not in estimates:
        bars = whole_bars(duration_s, meta.bpm)
        if bars is not None:
            values["bars"], sources["bars"] = bars, "estimated"
    fields: dict[str, Any] = {}
    for name in ESTIMATED:
        given = values.get(name, getattr(meta, name))
        estimate = estimates.get(name)
        if given is None and estimate is not None and estimate.value is not None:
            given = values[name] = estimate.value
            sources[name] = "estimated"
        fields[f"{name}_source"] = sources.get(name, "unknown") if given is not None else "unknown"
        if (
            estimate is not None
            and estimate.confidence is not None
            and fields[f"{name}_source"] in ("estimated", "unknown")
        ):
            fields[f"{name}_confidence"] = estimate.confidence
        if given is None:
            reason = estimate.reason if estimate is not None else None
            if name == "bars" and meta.bpm is not None and reason is None:
                reason = f"{duration_s:.3f} s is not a whole number of bars at {meta.bpm:g} BPM"
            fields[f"{name}_reason"] = reason or "not in the metadata, and not estimated"
    if estimates.get("downbeat") is not None and estimates["downbeat"].value is not None:
        fields["downbeat_s"] = estimates["downbeat"].value
    return replace(meta, sources=sources, **values), fields
