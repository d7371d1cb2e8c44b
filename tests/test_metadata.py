"""Metadata discovery: folder names, file names, tables and sidecars, in that priority."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from data_tools import metadata as md
from data_tools.metadata import Metadata
from wavediff.errors import MetadataError


@pytest.mark.parametrize(
    "stem, bpm",
    [
        ("loop_128bpm", 128.0),
        ("Loop 128 BPM", 128.0),
        ("loop_128_bpm", 128.0),
        ("loop-128-Bpm-Am", 128.0),
        ("BPM140 break", 140.0),
        ("(92.5bpm) keys", 92.5),
        ("take_1128bpm", None),  # not a token: digits run on
        ("loop128 bpms", None),
        ("kick_3bpm", None),
        ("no tempo here", None),
    ],
)
def test_bpm_from_name(stem, bpm):
    assert md.bpm_from_name(stem) == bpm


@pytest.mark.parametrize(
    "stem, key",
    [
        ("bass_Am_128bpm", "Am"),
        ("lead-F#min-loop", "F#m"),
        ("pad C#maj", "C#"),
        ("stab.Ebm", "Ebm"),
        ("chords A minor 90bpm", "Am"),
        ("chords_C_Major", "C"),
        ("arp_D#m", "Ebm"),  # one spelling per pitch class
        ("lead_Gb", "F#"),
        ("Amen_break_170bpm", None),  # "Am" inside a word
        ("Ebony_keys", None),
        ("Take A Chance", None),  # a bare capital is a word, not a key
        ("kick_am_hard", None),  # lower-case roots are words in file names
        ("Dm7_chord", None),
    ],
)
def test_key_from_name(stem, key):
    assert md.key_from_name(stem) == key


@pytest.mark.parametrize(
    "text, key",
    [
        ("Am", "Am"),
        ("a minor", "Am"),
        ("F# major", "F#"),
        ("Bbm", "Bbm"),
        ("C", "C"),
        ("d#min", "Ebm"),
        ("E#", "F"),
        ("CM", None),
        ("H", None),
        ("", None),
    ],
)
def test_parse_key_field(text, key):
    assert md.parse_key(text) == key


def test_whole_bars_tolerance_is_a_fraction_of_a_bar():
    bar = md.bar_seconds(120)  # 2 s
    assert bar == 2.0
    assert md.whole_bars(8.0, 120) == 4
    assert md.whole_bars(8.0 + 0.015, 120) == 4  # 0.75% of a bar
    assert md.whole_bars(8.0 + 0.03, 120) is None  # 1.5% of a bar
    assert md.whole_bars(128.5, 120) is None  # within 1% of the length, but half a bar off
    assert md.whole_bars(0.5, 120) is None  # under one bar
    assert md.whole_bars(8.0, None) is None


def test_folder_gives_genre_then_tags():
    assert md.from_folder(PurePosixPath("")) == Metadata()
    assert md.from_folder(PurePosixPath("Techno")) == Metadata(genre="techno")
    assert md.from_folder(PurePosixPath("Deep_House/Kicks/Dry")) == Metadata(
        genre="deep house", tags=("kicks", "dry"), role="drums"
    )
    # a folder named for a role or kind is not a genre, wherever it sits
    assert md.from_folder(PurePosixPath("Bass Loops/Techno")) == Metadata(
        genre="techno", tags=("bass loops",), role="bass", kind="loop"
    )
    assert md.from_folder(PurePosixPath("Drum_and_Bass/One Shots")) == Metadata(
        genre="drum and bass", tags=("one shots",), kind="one-shot"
    )


@pytest.mark.parametrize(
    "name, role",
    [
        ("bassloops", "bass"),
        ("hihat01", "drums"),
        ("909beat01", "drums"),
        ("HiHat_Open", "drums"),
        ("Drums", "drums"),
        ("break01", "drums"),
        ("SubBass", "bass"),
        ("acid_303_line", "bass"),
        ("synth_bass", "bass"),  # the last role word is the head noun
        ("BassDrum", "drums"),
        ("padloop", "melodic"),
        ("Chords", "melodic"),
        ("arp", "melodic"),
        ("Riser_FX", "fx"),
        ("vox_chop", "vocal"),
        ("Vocals", "vocal"),
        ("topline", "vocal"),
        ("what_a_night", None),  # "hat" inside a word is not drums
        ("stop", None),
        ("subtle", None),
        ("drum-and-bass", None),  # a genre, not a role
        ("techno", None),
    ],
)
def test_role_words_match_inside_compound_names(name, role):
    assert md.role_from_words(name) == role


@pytest.mark.parametrize(
    "name, kind",
    [
        ("drumloop_01", "loop"),
        ("Bass Loops", "loop"),
        ("One Shots", "one-shot"),
        ("oneshot_kick", "one-shot"),
        ("snare_hits", "one-shot"),
        ("kick_01", None),
    ],
)
def test_kind_words(name, kind):
    assert md.kind_from_words(name) == kind


def test_merge_overrides_fields_and_unions_tags():
    weak = Metadata(genre="techno", tags=("kicks",), bpm=120.0, key="Am")
    strong = Metadata(genre="house", tags=("dry", "kicks"), bars=4)
    assert weak.merged(strong) == Metadata(genre="house", tags=("kicks", "dry"), bpm=120.0, key="Am", bars=4)


def test_record_validation_names_the_file_and_field():
    record = {
        "genre": "Acid_Techno",
        "tags": "dark; 303 ,",
        "bpm": "133",
        "key": "g minor",
        "bars": "8",
        "loop": "yes",
        "author": "ignored",
    }
    assert md.from_record(record, "x.json") == Metadata(
        genre="acid techno", tags=("dark", "303"), bpm=133.0, key="Gm", bars=8, loop=True
    )
    assert md.from_record({"bpm": "", "key": None}, "x.json") == Metadata()  # empty cells mean unknown
    assert md.from_record({"kind": "One Shot", "role": "Bass"}, "x.json") == Metadata(kind="one-shot", role="bass")
    for bad, field in [
        ({"kind": "phrase"}, "kind"),
        ({"role": "guitar"}, "role"),
        ({"bpm": "fast"}, "bpm"),
        ({"bpm": 5}, "bpm"),
        ({"key": "Q"}, "key"),
        ({"bars": 2.5}, "bars"),
        ({"loop": "maybe"}, "loop"),
        ({"tags": [1, 2]}, "tags"),
        ({"genre": 7}, "genre"),
    ]:
        with pytest.raises(MetadataError, match=rf"^x\.json: {field} "):
            md.from_record(bad, "x.json")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by collect")
    return path


def test_collect_applies_sources_in_priority_order(tmp_path):
    root = tmp_path / "pack"
    a = touch(root / "techno" / "kicks" / "kick_130bpm_Am.wav")
    b = touch(root / "techno" / "bass_125bpm.wav")
    c = touch(root / "loose.flac")
    d = touch(root / "house" / "chords C minor.wav")
    # root table (shallow) sets bpm for a and b; the techno table (deeper) overrides b
    (root / "metadata.csv").write_text(
        "file_name,genre,bpm,key,tags\n"
        "techno/kicks/kick_130bpm_Am.wav,,131,,punchy\n"
        "techno/bass_125bpm.wav,,100,,\n"
        'loose.flac,ambient,,F# major,"pad, wide"\n'
    )
    (root / "techno" / "metadata.jsonl").write_text(
        json.dumps({"file": "bass_125bpm.wav", "bpm": 126, "bars": 4})
        + "\n\n"
        + json.dumps({"path": "kicks/kick_130bpm_Am.wav", "tags": ["909"]})
        + "\n"
    )
    (a.with_suffix(".json")).write_text(json.dumps({"key": "Ebm", "loop": True, "genre": "Hard Techno"}))
    metas, warnings = md.collect(root, [a, b, c, d])
    assert warnings == []
    assert metas[a] == Metadata(
        genre="hard techno", tags=("kicks", "punchy", "909"), bpm=131.0, key="Ebm", loop=True, role="drums"
    )
    assert metas[b] == Metadata(genre="techno", bpm=126.0, bars=4, role="bass")
    assert metas[c] == Metadata(genre="ambient", tags=("pad", "wide"), key="F#")
    assert metas[d] == Metadata(genre="house", key="Cm", role="melodic")
    # where each value came from: the strongest source that gave it
    assert metas[a].sources == {
        "genre": "sidecar",
        "role": "name",
        "bpm": "csv",
        "key": "sidecar",
        "loop": "sidecar",
    }
    assert metas[b].sources == {"genre": "folder", "bpm": "jsonl", "bars": "jsonl", "role": "name"}
    assert metas[c].sources == {"genre": "csv", "key": "csv"}


def test_collect_reports_bad_metadata_and_keeps_the_rest(tmp_path):
    root = tmp_path / "pack"
    a = touch(root / "dnb" / "break_174bpm.wav")
    b = touch(root / "dnb" / "reese.wav")
    c = touch(root / "dnb" / "sub.wav")
    a.with_suffix(".json").write_text("{not json")
    (root / "dnb" / "metadata.jsonl").write_text(
        '{"file_name": "reese.wav", "bpm": "fast"}\n{broken\n{"bpm": 100}\n{"file_name": "sub.wav", "key": "Fm"}\n'
    )
    (root / "metadata.csv").write_text("name,genre\nx.wav,rock\n")
    (root / "dnb" / "metadata.csv").write_text("file,genre\nreeses.wav,jungle\n")
    metas, warnings = md.collect(root, [a, b, c])
    assert metas[a] == Metadata(genre="dnb", bpm=174.0, role="drums")  # folder and name still apply
    assert metas[b] == Metadata(genre="dnb", role="bass")  # the bad row is dropped as a whole
    assert metas[c] == Metadata(genre="dnb", key="Fm", role="bass")
    text = "\n".join(warnings)
    assert len(warnings) == 6, text
    assert f"{a.with_suffix('.json')}: invalid JSON sidecar" in text
    assert f"{root / 'dnb' / 'metadata.jsonl'} line 1: bpm 'fast'" in text
    assert f"{root / 'dnb' / 'metadata.jsonl'} line 2: not valid JSON" in text
    assert f"{root / 'dnb' / 'metadata.jsonl'} line 3: no file name" in text
    assert f"{root / 'metadata.csv'}: no file column" in text
    assert f"{root / 'dnb' / 'metadata.csv'} row 2: no audio file reeses.wav in {root / 'dnb'}" in text


def test_sidecar_must_be_an_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(MetadataError, match="JSON object"):
        md.read_sidecar(path)


class _Guess:
    """An estimate as data_tools.analysis makes them."""

    def __init__(self, value=None, confidence=None, reason=None):
        self.value, self.confidence, self.reason = value, confidence, reason


def test_fill_takes_estimates_only_where_the_metadata_says_nothing():
    meta = Metadata(genre="house", role="bass", sources={"genre": "folder", "role": "csv"})
    estimates = {
        "kind": _Guess("loop", 0.9),
        "bpm": _Guess(124.0, 0.8),
        "bars": _Guess(2, 0.8),
        "key": _Guess(confidence=0.3, reason="no clear key (best Am, correlation 0.30)"),
        "downbeat": _Guess(0.01, 0.8),
    }
    filled, fields = md.fill(meta, estimates, duration_s=240 * 2 / 124)
    assert (filled.bpm, filled.bars, filled.kind, filled.role, filled.key) == (124.0, 2, "loop", "bass", None)
    assert fields == {
        "bpm_source": "estimated",
        "bpm_confidence": 0.8,
        "bars_source": "estimated",
        "bars_confidence": 0.8,
        "key_source": "unknown",
        "key_confidence": 0.3,
        "key_reason": "no clear key (best Am, correlation 0.30)",
        "kind_source": "estimated",
        "kind_confidence": 0.9,
        "role_source": "csv",
        "downbeat_s": 0.01,
    }
    # a tempo the metadata gives is kept, and makes a whole-bar file a loop without estimating
    tagged = Metadata(bpm=120.0, sources={"bpm": "name"})
    filled, fields = md.fill(tagged, {"role": _Guess("drums", 0.7)}, duration_s=4.0)
    assert (filled.bpm, filled.bars, filled.kind) == (120.0, 2, "loop")
    assert fields["bpm_source"] == "name" and "bpm_confidence" not in fields
    assert fields["bars_source"] == fields["kind_source"] == "estimated"
    filled, fields = md.fill(tagged, {}, duration_s=4.3)
    assert filled.bars is None and fields["bars_reason"] == "4.300 s is not a whole number of bars at 120 BPM"
