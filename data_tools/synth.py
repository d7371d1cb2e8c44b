"""The built-in loop pack: procedurally synthesized, genre-labelled electronic loops.

It is the dataset the demo and the tests train on, so it has to be small, deterministic
and still sound like music: each genre has its own tempo range, drum patterns, bass
riffs, kit and mix, and every loop draws its own variations (pattern variants, a fill
bar, velocities, swing, timbre, key) from a generator seeded by (seed, genre, index).
Loops are whole bars long and truly loop: every note's tail is folded back onto the
start, so a sampler can play the file end-to-start without a click.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_tools.instruments import BassPatch, Note, bass_line, clap, fold, hat, kick, snare
from wavediff.errors import UserError
from wavediff.io.audio import loop_samples, save
from wavediff.io.files import atomic_write_json

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCALES = {"minor": (0, 2, 3, 5, 7, 8, 10), "major": (0, 2, 4, 5, 7, 9, 11)}
STEPS = 16  # pattern steps per 4/4 bar: sixteenth notes
VELOCITY = {"X": 1.0, "x": 0.8, "o": 0.45}  # pattern letters; "." is a rest
PEAK = 10 ** (-1 / 20)  # -1 dBFS
MIN_SAMPLE_RATE = 8000
VOICES = ("kick", "snare", "clap", "hat", "open_hat", "bass")

Range = tuple[float, float]


@dataclass(frozen=True)
class Kit:
    """Timbre ranges; each loop draws one kit from them."""

    kick_start_hz: Range = (170.0, 240.0)
    kick_end_hz: Range = (46.0, 56.0)
    kick_sweep_s: Range = (0.025, 0.045)
    kick_decay_s: Range = (0.12, 0.18)
    kick_click: Range = (0.3, 0.6)
    kick_drive: Range = (1.5, 2.5)
    snare_hz: Range = (170.0, 230.0)
    snare_decay_s: Range = (0.1, 0.18)
    clap_decay_s: Range = (0.1, 0.2)
    hat_decay_s: Range = (0.015, 0.035)
    open_decay_s: Range = (0.1, 0.22)
    metallic: Range = (0.15, 0.5)


@dataclass(frozen=True)
class GenreStyle:
    """What makes a genre recognisable: tempo, patterns, bass riffs, kit and mix.

    Patterns are 16-step bars ("X" accent, "x" hit, "o" ghost, "." rest); a loop picks
    one variant per voice and may swap in another for its last bar (a fill). Bass riffs
    hold scale degrees ("0"-"6", "7" the octave), "-" to hold a note and "." to rest.
    """

    bpm: tuple[int, int]
    kick: tuple[str, ...]
    snare: tuple[str, ...]
    clap: tuple[str, ...]
    hat: tuple[str, ...]
    open_hat: tuple[str, ...]
    bass: tuple[str, ...]
    patch: BassPatch
    mix: dict[str, float]  # gain in dB for kick, snare, clap, hat, open_hat and bass
    gate: float = 0.9  # bass note length as a fraction of its written length
    swing: Range = (0.0, 0.0)  # delay of off-16ths, as a fraction of a 16th
    ghosts: float = 0.0  # chance of an extra ghost snare on each empty off-16th
    hat_rolls: bool = False  # trap: hats roll in triplets and 32nds instead of a pattern
    wobble_beats: tuple[float, ...] = ()  # wobble LFO periods, one drawn per bass note
    modes: tuple[str, ...] = ("minor",)
    kit: Kit = field(default_factory=Kit)

    def __post_init__(self) -> None:
        for voice in VOICES:
            for pattern in getattr(self, voice):
                if len(pattern) != STEPS:
                    raise UserError(f"{voice} pattern {pattern!r} has {len(pattern)} steps, not {STEPS}")
        if set(self.mix) != set(VOICES):
            raise UserError(f"mix must give a level for each of {', '.join(VOICES)}")


GENRES: dict[str, GenreStyle] = {
    "techno": GenreStyle(
        bpm=(125, 135),
        kick=("X...X...X...X...",) * 3 + ("X...X...X...X..o",),
        snare=("." * 16,),
        clap=("....x.......x...", "....x.......x...", "." * 16, "....x.......x..o"),
        hat=("xo.oxo.oxo.oxo.o", "x...x...x...x...", "." * 16, "xo.oxo.oxo.oxo.x"),
        open_hat=("..X...X...X...X.",),
        bass=(".000.000.000.000", ".070.000.070.000", ".000.000.000.040", ".000.006.000.004"),
        patch=BassPatch(
            wave="saw",
            sub=0.5,
            cutoff_hz=220.0,
            resonance=2.0,
            env_octaves=2.5,
            env_decay_s=0.06,
            decay_s=0.12,
            release_s=0.015,
            drive=1.5,
        ),
        gate=0.8,
        kit=Kit(
            kick_start_hz=(180.0, 260.0),
            kick_end_hz=(44.0, 52.0),
            kick_decay_s=(0.14, 0.2),
            kick_drive=(2.0, 3.0),
            clap_decay_s=(0.12, 0.25),
            metallic=(0.3, 0.6),
        ),
        mix={"kick": 0.0, "snare": 0.0, "clap": -1.0, "hat": -5.0, "open_hat": -3.0, "bass": -1.0},
    ),
    "house": GenreStyle(
        bpm=(118, 126),
        kick=("X...X...X...X...",) * 3 + ("X...X...X...X.o.",),
        snare=("." * 16,),
        clap=("....X.......X...", "....X.......X...", "....X.......X..o"),
        hat=("xoxoxoxoxoxoxoxo", "x.oox.oox.oox.oo", "xoxoxoxoxoxoxoxo"),
        open_hat=("..x...x...x...x.", "..x...x...x...x.", "." * 16),
        bass=("..0...0...0...0.", "..0..00...0..070", "..0...7...0..4.6", "0..0..0...3..4..", "..0..0.4..0..5.6"),
        patch=BassPatch(
            wave="square",
            sub=0.7,
            cutoff_hz=350.0,
            resonance=1.2,
            env_octaves=1.5,
            env_decay_s=0.12,
            decay_s=0.3,
            release_s=0.03,
            drive=1.3,
        ),
        gate=0.7,
        swing=(0.12, 0.35),
        modes=("minor", "minor", "major"),
        kit=Kit(
            kick_start_hz=(150.0, 220.0),
            kick_end_hz=(48.0, 58.0),
            kick_click=(0.2, 0.45),
            kick_drive=(1.2, 2.0),
            clap_decay_s=(0.12, 0.22),
            metallic=(0.1, 0.35),
        ),
        mix={"kick": 0.0, "snare": 0.0, "clap": -0.5, "hat": -3.0, "open_hat": -3.0, "bass": 0.0},
    ),
    "drum-and-bass": GenreStyle(
        bpm=(165, 178),
        kick=("X.........X.....", "X.........X.....", "X.X.......X.....", "X.........X..o.."),
        snare=("....X.......X...", "....X..o....X...", "....X.......X..o", "....X..o.o..X..."),
        clap=("." * 16,),
        hat=("x.x.x.x.x.x.x.x.", "xoxoxoxoxoxoxoxo", "x.xox.x.x.xox.xo"),
        open_hat=("." * 16, "......x.........", "..............x."),
        bass=("0---------------", "0-------4-------", "0-------5---4---", "0-----------6---", "0-------2-------"),
        patch=BassPatch(
            wave="saw",
            voices=3,
            detune_cents=35.0,
            sub=0.9,
            cutoff_hz=500.0,
            resonance=1.0,
            env_octaves=0.5,
            env_decay_s=0.3,
            attack_s=0.01,
            release_s=0.06,
            drive=2.0,
        ),
        gate=0.95,
        ghosts=0.08,
        kit=Kit(
            kick_start_hz=(200.0, 300.0),
            kick_end_hz=(50.0, 60.0),
            kick_sweep_s=(0.02, 0.035),
            kick_decay_s=(0.08, 0.12),
            kick_click=(0.5, 0.8),
            snare_hz=(190.0, 250.0),
            snare_decay_s=(0.09, 0.15),
            hat_decay_s=(0.012, 0.025),
        ),
        mix={"kick": -1.0, "snare": 2.5, "clap": 0.0, "hat": -1.5, "open_hat": -2.0, "bass": -4.5},
    ),
    "dubstep": GenreStyle(
        bpm=(138, 142),
        kick=("X...............", "X.........X.....", "X.....X.........", "X.........X....."),
        snare=("........X.......", "........X.......", "........X.....o."),
        clap=("........x.......",),
        hat=("x.x.x.x.x.x.x.x.", "x...x...x...x...", "x.xxx.x.x.xxx.x."),
        open_hat=("." * 16, "..............x."),
        bass=("0-------0-------", "0-------0---3---", "0---------------", "0-------5---4---", "0---0---0-------"),
        patch=BassPatch(
            wave="saw",
            voices=2,
            detune_cents=12.0,
            sub=0.8,
            cutoff_hz=140.0,
            resonance=3.0,
            lfo_octaves=4.0,
            attack_s=0.005,
            release_s=0.03,
            drive=2.5,
        ),
        gate=0.95,
        wobble_beats=(1.0, 0.5, 0.5, 1 / 3, 0.25),
        kit=Kit(
            kick_decay_s=(0.12, 0.18),
            kick_click=(0.4, 0.7),
            kick_drive=(2.0, 3.0),
            snare_hz=(180.0, 220.0),
            snare_decay_s=(0.14, 0.22),
        ),
        mix={"kick": -1.0, "snare": 5.0, "clap": -1.0, "hat": -2.0, "open_hat": -3.0, "bass": -3.0},
    ),
    "trap": GenreStyle(
        bpm=(130, 150),
        kick=("X......X..X.....", "X.........X.....", "X.....X...X..X..", "X..X......X....."),
        snare=("........X.......",),
        clap=("........X.......",),
        hat=("." * 16,),
        open_hat=("." * 16,),
        bass=("0------0--7-----", "0---------0-4---", "0-----0---7--5--", "0---------6-----", "0--0------0-----"),
        patch=BassPatch(wave="sine", decay_s=0.7, attack_s=0.002, release_s=0.05, glide_s=0.06, drive=3.0),
        gate=1.0,
        hat_rolls=True,
        kit=Kit(
            kick_start_hz=(160.0, 220.0),
            kick_end_hz=(50.0, 60.0),
            kick_sweep_s=(0.02, 0.03),
            kick_decay_s=(0.06, 0.1),
            kick_click=(0.4, 0.7),
            kick_drive=(2.0, 3.0),
            clap_decay_s=(0.15, 0.3),
            hat_decay_s=(0.01, 0.025),
            metallic=(0.4, 0.7),
        ),
        mix={"kick": -3.0, "snare": -2.0, "clap": 0.0, "hat": 1.5, "open_hat": 0.0, "bass": -2.5},
    ),
    "breakbeat": GenreStyle(
        bpm=(125, 140),
        kick=("X.X.......XX....", "X.X.......X.....", "X......X.XX.....", "X.....X...X..X.."),
        snare=("....X..o.o..X..o", "....X.......X...", "....X..o....X.o.", ".o..X..o.o..X..."),
        clap=("." * 16,),
        hat=("x.x.x.x.x.x.x.x.", "xoxoxoxoxoxoxoxo", "x.xox.x.x.xox.x."),
        open_hat=("." * 16, "..............x.", "......x........."),
        bass=("0..0..7.0..3.5..", "0.....0...3.4...", "0..0....0..6.7..", "0.0...0...4...3."),
        patch=BassPatch(
            wave="saw",
            sub=0.6,
            cutoff_hz=300.0,
            resonance=1.5,
            env_octaves=2.0,
            env_decay_s=0.1,
            decay_s=0.25,
            release_s=0.03,
            drive=1.5,
        ),
        gate=0.6,
        swing=(0.0, 0.15),
        ghosts=0.06,
        kit=Kit(kick_decay_s=(0.09, 0.14), kick_click=(0.4, 0.7), snare_decay_s=(0.12, 0.2)),
        mix={"kick": -1.0, "snare": 2.0, "clap": 0.0, "hat": -1.0, "open_hat": -3.0, "bass": 1.5},
    ),
}


def _draw(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(*r))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def bar_patterns(rng: np.random.Generator, options: Sequence[str], bars: int) -> list[str]:
    """One variant for the loop, and maybe another for its last bar: a fill, or an answer."""
    main = _pick(rng, options)
    fill = _pick(rng, options) if bars > 1 and rng.random() < 0.5 else main
    return [main] * (bars - 1) + [fill]


def _step_beat(step: int, swing: float) -> float:
    """Beat position of a 16th step; off-16ths are late by `swing` of a 16th."""
    return step / 4 + (swing / 4 if step % 2 else 0.0)


def pattern_hits(
    rng: np.random.Generator, patterns: list[str], swing: float, jitter: float, ghosts: float = 0.0
) -> list[tuple[float, float]]:
    """(beat, velocity) for every hit of a bar-by-bar pattern list, velocities humanized."""
    hits = []
    for bar, pattern in enumerate(patterns):
        for step, ch in enumerate(pattern):
            if ch in VELOCITY:
                velocity = VELOCITY[ch]
            elif ghosts and step % 2 and rng.random() < ghosts:
                velocity = 0.3
            else:
                continue
            hits.append((bar * 4 + _step_beat(step, swing), velocity * rng.uniform(1 - jitter, 1)))
    return hits


def hat_rolls(rng: np.random.Generator, bars: int) -> list[tuple[float, float]]:
    """Trap hats: eighths and sixteenths that break into triplet and 32nd-note rolls."""
    divisions, weights = (2, 4, 3, 6, 8), (0.35, 0.35, 0.06, 0.14, 0.10)
    hits = []
    for beat in range(bars * 4):
        d = int(rng.choice(divisions, p=weights))
        for k in range(d):
            velocity = 0.5 + 0.4 * k / d if d >= 6 else (0.9 if k == 0 else 0.65)
            hits.append((beat + k / d, velocity * rng.uniform(0.85, 1.0)))
    return hits


def place(
    hit: np.ndarray, hits: list[tuple[float, float]], spb: float, n: int, sr: int, choke: list[float] | None = None
) -> np.ndarray:
    """Copy a one-shot onto its hits (beats → samples) and fold the tails into a loop of n.

    With `choke`, each hit is cut at the next choke beat, as a closed hat cuts an open one.
    """
    out = np.zeros((2, n + hit.shape[-1]))
    stops = sorted(int(round(b * spb)) for b in choke or [])
    stops += [s + n for s in stops]  # the first chokes of the next pass around the loop
    for beat, velocity in hits:
        start = int(round(beat * spb))
        length = min([hit.shape[-1]] + [s - start for s in stops if s > start][:1])
        piece = hit[:, :length] * velocity
        if length < hit.shape[-1]:
            fade = min(length, int(0.004 * sr) + 1)
            piece[:, length - fade :] *= np.linspace(1.0, 0.0, fade)
        out[:, start : start + length] += piece
    return fold(out, n)


def _stereo(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 2 else np.stack([x, x])


def bass_notes(
    rng: np.random.Generator,
    style: GenreStyle,
    riffs: list[str],
    root: int,
    scale: Sequence[int],
    spb: float,
    swing: float,
) -> list[Note]:
    """Parse riff bars into notes: degrees to pitches, holds to lengths, legato changes to glides."""
    notes: list[Note] = []
    line = "".join(riffs)
    for step, ch in enumerate(line):
        if not ch.isdigit():
            continue
        held = 1
        while step + held < len(line) and line[step + held] == "-":
            held += 1
        degree = int(ch)
        midi = root + scale[degree % 7] + 12 * (degree // 7)
        start = int(round(_step_beat(step, swing) * spb))
        end = int(round(_step_beat(step + held, swing) * spb))
        previous = notes[-1] if notes else None
        legato = previous is not None and style.gate >= 1.0 and previous.start + previous.length >= start
        glide = previous.midi if legato and previous.midi != midi else None
        period = int(round(float(rng.choice(style.wobble_beats)) * spb)) if style.wobble_beats else 0
        velocity = (1.0 if step % 4 == 0 else 0.85) * rng.uniform(0.9, 1.0)
        notes.append(Note(start, max(1, int((end - start) * style.gate)), midi, velocity, glide, period))
    return notes


def _vary_patch(rng: np.random.Generator, patch: BassPatch) -> BassPatch:
    """Small timbre changes per loop, in ratios, so every patch keeps its character."""
    return replace(
        patch,
        cutoff_hz=None if patch.cutoff_hz is None else patch.cutoff_hz * 2 ** rng.uniform(-0.4, 0.4),
        resonance=patch.resonance * rng.uniform(0.8, 1.2),
        env_decay_s=patch.env_decay_s * rng.uniform(0.8, 1.25),
        detune_cents=patch.detune_cents * rng.uniform(0.8, 1.2),
        decay_s=None if patch.decay_s is None else patch.decay_s * rng.uniform(0.8, 1.25),
        drive=patch.drive * rng.uniform(0.8, 1.2),
    )


def _check_genre(genre: str) -> GenreStyle:
    if genre not in GENRES:
        raise UserError(f"unknown genre {genre!r}; known genres: {', '.join(GENRES)}")
    return GENRES[genre]


def synthesize_stems(
    genre: str,
    rng: np.random.Generator,
    sample_rate: int,
    bars: int,
    bpm: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Render one loop as stems (kick, snare, clap, hats, bass), each (2, samples) float32.

    The stems are already mixed and levelled: they sum to the loop, whose peak is -1 dBFS.
    `bpm` overrides the genre's random tempo. Returns (stems, metadata).
    """
    style = _check_genre(genre)
    if bars < 1:
        raise UserError(f"bars must be at least 1, got {bars}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise UserError(f"sample_rate must be at least {MIN_SAMPLE_RATE} Hz, got {sample_rate}")
    sr = sample_rate
    bpm = int(rng.integers(style.bpm[0], style.bpm[1] + 1)) if bpm is None else int(bpm)
    if bpm <= 0:
        raise UserError(f"bpm must be positive, got {bpm}")
    n = loop_samples(bpm, bars, sr)
    spb = 60.0 / bpm * sr  # samples per beat
    mode = _pick(rng, style.modes)
    pitch_class = int(rng.integers(12))
    root = 28 + (pitch_class - 4) % 12  # E1..D#2: the bass's fundamental stays in 41-78 Hz
    swing = _draw(rng, style.swing)
    kit = style.kit

    kick_hit = kick(
        sr,
        rng,
        start_hz=_draw(rng, kit.kick_start_hz),
        end_hz=_draw(rng, kit.kick_end_hz),
        sweep_s=_draw(rng, kit.kick_sweep_s),
        decay_s=_draw(rng, kit.kick_decay_s),
        click=_draw(rng, kit.kick_click),
        drive=_draw(rng, kit.kick_drive),
    )
    snare_hit = snare(
        sr,
        rng,
        tone_hz=_draw(rng, kit.snare_hz),
        tone_decay_s=rng.uniform(0.03, 0.06),
        noise_decay_s=_draw(rng, kit.snare_decay_s),
        noise_level=rng.uniform(0.8, 1.4),
        width=rng.uniform(0.1, 0.3),
    )
    clap_hit = clap(
        sr,
        rng,
        bursts=int(rng.integers(3, 5)),
        spacing_s=rng.uniform(0.008, 0.013),
        decay_s=_draw(rng, kit.clap_decay_s),
        center_hz=rng.uniform(1000.0, 1800.0),
        width=rng.uniform(0.3, 0.6),
    )
    tune, metallic = rng.uniform(0.9, 1.6), _draw(rng, kit.metallic)
    hat_hit = hat(
        sr, rng, decay_s=_draw(rng, kit.hat_decay_s), metallic=metallic, tune=tune, width=rng.uniform(0.3, 0.6)
    )
    open_hit = hat(
        sr, rng, decay_s=_draw(rng, kit.open_decay_s), metallic=metallic, tune=tune, width=rng.uniform(0.4, 0.7)
    )

    kick_hits = pattern_hits(rng, bar_patterns(rng, style.kick, bars), swing, 0.05)
    snare_hits = pattern_hits(rng, bar_patterns(rng, style.snare, bars), swing, 0.1, style.ghosts)
    clap_hits = pattern_hits(rng, bar_patterns(rng, style.clap, bars), swing, 0.1)
    if style.hat_rolls:
        hat_hits = hat_rolls(rng, bars)
    else:
        hat_hits = pattern_hits(rng, bar_patterns(rng, style.hat, bars), swing, 0.2)
    open_hits = pattern_hits(rng, bar_patterns(rng, style.open_hat, bars), swing, 0.1)
    notes = bass_notes(rng, style, bar_patterns(rng, style.bass, bars), root, SCALES[mode], spb, swing)

    gain = {name: 10 ** ((db + rng.uniform(-1.0, 1.0)) / 20) for name, db in style.mix.items()}
    stems = {
        "kick": gain["kick"] * place(_stereo(kick_hit), kick_hits, spb, n, sr),
        "snare": gain["snare"] * place(snare_hit, snare_hits, spb, n, sr),
        "clap": gain["clap"] * place(clap_hit, clap_hits, spb, n, sr),
        "hats": gain["hat"] * place(hat_hit, hat_hits, spb, n, sr)
        + gain["open_hat"] * place(open_hit, open_hits, spb, n, sr, choke=[b for b, _ in hat_hits]),
        "bass": gain["bass"] * _stereo(bass_line(notes, n, sr, _vary_patch(rng, style.patch))),
    }
    stems = {name: x - x.mean(axis=1, keepdims=True) for name, x in stems.items()}  # no DC, still seamless
    peak = np.abs(sum(stems.values())).max()
    level = PEAK / peak if peak > 0 else 1.0
    meta = {
        "genre": genre,
        "bpm": bpm,
        "key": NOTE_NAMES[pitch_class] + ("m" if mode == "minor" else ""),
        "bars": bars,
        "beats_per_bar": 4,
        "sample_rate": sr,
        "loop": True,
        "source": "wavediff-synth",
    }
    return {name: torch.from_numpy((x * level).astype(np.float32)) for name, x in stems.items()}, meta


def synthesize_loop(
    genre: str,
    rng: np.random.Generator,
    sample_rate: int,
    bars: int,
    bpm: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """One stereo loop of `bars` bars, peak -1 dBFS, and its metadata (genre, bpm, key, ...)."""
    stems, meta = synthesize_stems(genre, rng, sample_rate, bars, bpm)
    return sum(stems.values()), meta


def loop_seed(seed: int, genre: str, index: int) -> int:
    """The seed of one loop of a pack: independent of which other genres are asked for."""
    state = np.random.SeedSequence([seed, zlib.crc32(genre.encode()), index]).generate_state(1)
    return int(state[0])


def synthesize_pack(
    out: str | Path,
    genres: Sequence[str] | None = None,
    loops_per_genre: int = 8,
    sample_rate: int = 44100,
    bars: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[Path]:
    """Write OUT/<genre>/<genre>_<index>_<bpm>bpm_<key>.wav with a .json sidecar per loop.

    The sidecar's `seed` regenerates that loop alone: synthesize_loop(genre,
    np.random.default_rng(seed), sample_rate, bars). bars=None gives each loop 1, 2 or 4
    bars (mostly 2). Same arguments, byte-identical files. Returns the audio paths.
    """
    genres = list(GENRES) if genres is None else list(genres)
    for genre in genres:
        _check_genre(genre)
    if seed < 0:
        raise UserError(f"seed must be ≥ 0, got {seed}")
    if loops_per_genre < 0:
        raise UserError(f"loops_per_genre must be ≥ 0, got {loops_per_genre}")
    if bars is not None and bars < 1:
        raise UserError(f"bars must be at least 1, got {bars}")
    out = Path(out)
    jobs = [(genre, i) for genre in genres for i in range(loops_per_genre)]
    paths = []
    for genre, i in tqdm(jobs, desc="synth", unit="loop", disable=not progress):
        s = loop_seed(seed, genre, i)
        loop_bars = bars if bars is not None else (1, 2, 2, 4)[s % 4]
        wav, meta = synthesize_loop(genre, np.random.default_rng(s), sample_rate, loop_bars)
        meta["seed"] = s
        stem = out / genre / f"{genre}_{i:03d}_{meta['bpm']}bpm_{meta['key']}"
        paths.append(save(stem.with_suffix(".wav"), wav, sample_rate))
        atomic_write_json(stem.with_suffix(".json"), meta)
    return paths
