"""Training prompts composed from what a sample's JSON knows, and prompts reconciled with the
structured controls at generation.

Packs carry no captions, but they carry words: the genre, the role, tags and a description
from metadata tables, the folder and file names, the tempo and the key. A prompt is those
words as a producer would write them ("techno, bass, acid, 132 bpm, F minor"). In training a
random number of them is kept, in a random order, so the model meets both a bare
"techno" and the long form, and learns each word from the audio rather than from its place.
Evaluation gets every part, in a fixed order. Tempo and key words are written from the labels
the loader hands on (after transposition), so they stay true.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from wavediff.io.keys import PITCHES, is_minor, key_index, parse_key, tonic

MAX_PARTS_CHARS = 240  # a composed prompt stays well inside the encoder's token budget
ROLE_WORDS = {
    "drums": ("drums", "drum loop", "beat", "percussion"),
    "bass": ("bass", "bassline", "bass loop"),
    "melodic": ("melody", "synth", "chords", "melodic loop"),
    "fx": ("fx", "effect"),
    "vocal": ("vocal", "vocals", "voice"),
}
_WORD = re.compile(r"[a-z][a-z']+")
_BPM_WORD = re.compile(r"^\d+(\.\d+)?\s*bpm$|^bpm$")
_FILLER = {"loop", "loops", "sample", "samples", "wav", "flac", "mp3", "aiff", "the", "and", "wavediff", "synth"}


def key_words(index: int, rng: random.Random | None = None) -> str:
    """A key class as words: "F minor" (or, in training, at random also "Fm", "F min")."""
    name = PITCHES[tonic(index)]
    mode = ("minor", "min", "m") if is_minor(index) else ("major", "maj", "")
    if rng is None:
        return f"{name} {mode[0]}"
    written = rng.choice(mode)
    return f"{name}{written}" if len(written) <= 1 else f"{name} {written}"


def _name_words(source: object) -> list[str]:
    """Words of a sample's folder and file names, without numbers, tempos, keys and filler."""
    if not isinstance(source, str):
        return []
    words = []
    for token in re.split(r"[/_\-\s.]+", source.lower()):
        if _BPM_WORD.match(token) or token in _FILLER or parse_key(token) is not None:
            continue
        words.extend(w for w in _WORD.findall(token) if w not in _FILLER and len(w) > 2)
    return list(dict.fromkeys(words))


def compose_prompt(meta: Mapping[str, Any], bpm: float, key_class: int, rng: random.Random | None) -> str | None:
    """The prompt of a sample (None when its JSON says nothing a prompt could hold); `bpm` and
    `key_class` are its labels as the loader hands them on. `rng` None: every part, in order."""
    genre = meta.get("genre") if isinstance(meta.get("genre"), str) else None
    role = meta.get("role") if meta.get("role") in ROLE_WORDS else None
    tags = [t for t in meta.get("tags") or [] if isinstance(t, str) and t and t != genre]
    description = meta.get("description") if isinstance(meta.get("description"), str) else None
    said = {genre, *tags, *(w for words in ROLE_WORDS.values() for w in words)}
    names = [w for w in _name_words(meta.get("source")) if w not in said]
    parts: list[str] = []
    if genre:
        parts.append(genre)
    if role:
        parts.append(ROLE_WORDS[role][0] if rng is None else rng.choice(ROLE_WORDS[role]))
    parts += tags
    if description:
        parts.append(" ".join(description.split()))
    parts += names
    if bpm > 0:
        parts.append(f"{bpm:.0f} bpm")
    if key_class >= 0:
        parts.append(key_words(key_class, rng))
    if rng is not None and parts:  # as many parts as a uniform draw says, in a random order
        parts = rng.sample(parts, rng.randint(1, len(parts)))
    prompt, used = [], 0
    for part in parts:
        if used + len(part) > MAX_PARTS_CHARS:
            break
        prompt.append(part)
        used += len(part) + 2
    return ", ".join(prompt) or None


_KEY_WORDS = re.compile(r"(?<![\w#♯♭])([A-G][#♯b♭]?)\s*(minor|major|min|maj|m)(?![\w#])")
_TEMPO_WORDS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)


def reconcile(
    prompt: str,
    *,
    genres: Sequence[str] = (),
    genre: str | None = None,
    bpm: float | None = None,
    key: str | None = None,
    role: str | None = None,
) -> str:
    """The prompt with every mention that contradicts a structured control replaced by that
    control's value, so the structured value wins: "dark techno, 128 bpm, A minor" with genre
    house, bpm 140 and key F#m reads "dark house, 140 bpm, F# minor". Agreeing mentions stay."""

    def words(pattern: str, text: str, value: str) -> str:
        return re.sub(rf"(?<![\w-]){re.escape(pattern)}(?![\w-])", value, text, flags=re.IGNORECASE)

    if genre is not None:
        for other in sorted(genres, key=len, reverse=True):
            if other.lower() != genre.lower():
                prompt = words(other, prompt, genre)
    if role is not None:
        for other, said in ROLE_WORDS.items():
            for word in sorted(said, key=len, reverse=True) if other != role else ():
                prompt = words(word, prompt, ROLE_WORDS[role][0])
    if bpm is not None:
        prompt = _TEMPO_WORDS.sub(lambda m: m[0] if float(m[1]) == bpm else f"{bpm:g} bpm", prompt)
    if key is not None:
        wanted = key_index(key)
        prompt = _KEY_WORDS.sub(lambda m: m[0] if key_index(m[0]) == wanted else key_words(wanted), prompt)
    return prompt
