"""A loop pack made of recorded sounds, with labels true by construction.

Where data_tools.synth synthesizes every sound, this pack plays recordings that Debian
installs (nothing is downloaded):

- drums: hydrogen-drumkits' multi-velocity hits, sequenced into each genre's patterns
  (data_tools.synth.GENRES: the same kick/clap/hat patterns, swing and tempo range), each
  hit's layer chosen by its velocity as Hydrogen does, timing humanised by a few ms;
- bass: a genre's bass riffs (GENRES again) in a drawn key, played by a General MIDI bass
  program of the FluidR3 soundfont (fluid-soundfont-gm) through fluidsynth;
- melodic: a chord progression or an arpeggio on it, in a drawn key, played by GM keys,
  pads, strings or plucks the same way;
- sonic-pi-samples' recorded breaks and loops, with the tempo and bars measured once
  (SONIC_PI), filed under the genre whose tempo range holds them (SONIC_PI_GENRES).

Every loop is exactly bars·4·60/bpm seconds (wavediff.io.audio.loop_samples); the tails of
hits and notes are folded onto the start, so each file loops seamlessly. Layout as
`data synth`: OUT/<genre>/<stem>.wav with a JSON sidecar that `data shard` reads.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_tools.instruments import fold
from data_tools.synth import (
    GENRES,
    NOTE_NAMES,
    PEAK,
    SCALES,
    bar_patterns,
    bass_notes,
    hat_rolls,
    loop_seed,
    pattern_hits,
    place,
)
from wavediff.errors import UserError
from wavediff.io import audio
from wavediff.io.files import atomic_write_json

SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
HYDROGEN_DIR = Path("/usr/share/hydrogen/data/drumkits")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
APT_PACKAGES = "hydrogen-drumkits fluidsynth fluid-soundfont-gm sonic-pi-samples"
ROLES = ("drums", "bass", "melodic")
TPQ = 480  # MIDI ticks per quarter note

# Tempo and bars of sonic-pi-samples' loops, measured once. Every tempo is 240·bars / length
# (the lengths are exact: 2.4742 s is one bar at 97.00 BPM); what was measured is the bar count,
# by plotting each loop's onset envelope against the beat grid of each candidate count and
# keeping the one its hits fall on, then settling the octave as noted. None: no tempo to know.
SONIC_PI = {
    "loop_amen": (136.88, 1, "the only count in 60–200 BPM; the Amen break's known ~137 BPM"),
    "loop_amen_full": (140.0, 4, "70 or 140: the Amen break's tempo"),
    "loop_breakbeat": (126.0, 1, "the only count in 60–200 BPM"),
    "loop_compus": (148.0, 4, "74 or 148: librosa.beat.beat_track says 152"),
    "loop_drone_g_97": (97.0, 2, "a drone with no beat; its name says 97"),
    "loop_electric": (97.0, 1, "97 or 194: the 97 BPM family (loop_drone_g_97, same lengths)"),
    "loop_garzul": (120.0, 4, "60 or 120: the 8.000 s family (loop_safari has only 120 in range)"),
    "loop_mehackit1": (97.0, 1, "97 BPM family"),
    "loop_mehackit2": (97.0, 1, "97 BPM family"),
    "loop_mika": (120.0, 4, "8.000 s family; beat_track says 117"),
    "loop_perc1": (97.0, 1, "97 BPM family (its hits fall on no sixteenth grid)"),
    "loop_perc2": (97.0, 1, "97 BPM family (three sparse hits)"),
    "loop_safari": (119.92, 4, "the only count in 60–200 BPM"),
    "loop_tabla": (89.94, 4, "90 or 180: librosa.beat.beat_track says 89"),
    "loop_weirdo": (97.0, 2, "97 BPM family (its hits fall on no sixteenth grid)"),
    "loop_industrial": (None, None, "half a bar (two beats at 136 BPM): no whole number of bars"),
    "loop_3d_printer": (None, None, "printer noise, no beat"),
}
# The sonic-pi loops the pack files, by genre: those whose tempo lies in (or at the edge of) a
# genre's range and whose sound fits it; (name, role). The 97 BPM family, the tabla (90) and
# the untimed loops fit no genre's tempo and are left out.
SONIC_PI_GENRES = {
    "breakbeat": (("loop_amen", "drums"), ("loop_amen_full", "drums"), ("loop_breakbeat", "drums")),
    "house": (("loop_safari", "drums"), ("loop_garzul", "drums"), ("loop_mika", "melodic")),
    "trap": (("loop_compus", "drums"),),
}

# Kits per genre: electronic kits for the machine genres, acoustic and break kits for the
# break-based ones. Each needs a kick, a snare or clap and a closed hat (kit_parts).
GENRE_KITS = {
    "techno": ("HardElectro1", "ElectricEmpireKit", "rumpf_kit_z01_h2"),
    "house": ("ElectricEmpireKit", "HardElectro1", "Millo_MultiLayered2"),
    "drum-and-bass": ("Millo_MultiLayered2", "The Black Pearl 1.0", "BJA_Pacific", "VariBreaks"),
    "dubstep": ("ElectricEmpireKit", "HardElectro1", "The Black Pearl 1.0"),
    "trap": ("ElectricEmpireKit", "HardElectro1", "rumpf_kit_z01_h2"),
    "breakbeat": ("VariBreaks", "Millo_MultiLayered3", "ColomboAcousticDrumkit", "ForzeeStereo"),
}
# General MIDI programs (0-based) per genre: basses, and keys/pads/strings/plucks.
BASS_PROGRAMS = {
    "techno": (38, 39),  # synth bass 1, 2
    "house": (38, 33, 36),  # synth bass 1, fingered, slap
    "drum-and-bass": (38, 35, 33),  # synth bass 1, fretless, fingered
    "dubstep": (39, 38),
    "trap": (38, 39),
    "breakbeat": (33, 34, 38),  # fingered, picked, synth bass 1
}
MELODIC_PROGRAMS = {
    "techno": (81, 89, 90),  # saw lead, warm pad, polysynth pad
    "house": (4, 0, 89, 16),  # e-piano, piano, warm pad, organ
    "drum-and-bass": (89, 48, 4, 91),  # warm pad, strings, e-piano, choir pad
    "dubstep": (90, 81, 48),
    "trap": (0, 46, 11, 48),  # piano, harp, vibraphone, strings
    "breakbeat": (4, 16, 24, 0),  # e-piano, organ, nylon guitar, piano
}
# Chord progressions as scale degrees of the drawn mode; each starts and ends on the tonic.
PROGRESSIONS = {"minor": ((0, 3, 4, 0), (0, 5, 3, 0), (0, 3, 6, 0)), "major": ((0, 3, 4, 0), (0, 4, 3, 0))}
PART_GAIN_DB = {"kick": 0.0, "snare": -2.0, "clap": -2.0, "hat": -7.0, "open_hat": -6.0}
PART_PAN = {"kick": 0.0, "snare": 0.05, "clap": -0.05, "hat": 0.2, "open_hat": 0.25}  # -1 left, 1 right
TIMING_MS = 3.0  # sd of the humanised timing of each hit


@dataclass(frozen=True)
class Layer:
    """One recording of a drum instrument, played for velocities in [low, high]."""

    path: Path
    low: float
    high: float
    gain: float


def missing_packages() -> str | None:
    """What is not installed of what the pack needs, as an apt-get hint; None when all is there."""
    gone = [
        what
        for what, ok in (
            ("hydrogen-drumkits", HYDROGEN_DIR.is_dir()),
            ("fluidsynth", shutil.which("fluidsynth") is not None),
            ("fluid-soundfont-gm", SOUNDFONT.is_file()),
            ("sonic-pi-samples", SONIC_PI_DIR.is_dir()),
        )
        if not ok
    ]
    return " ".join(gone) or None


def _part(name: str) -> str | None:
    """The pattern voice an instrument of a kit plays, by its name."""
    words = name.lower()
    if "kick" in words or "bass drum" in words or "bassdrum" in words:
        return "kick"
    if "clap" in words:
        return "clap"
    if "snare" in words and not any(w in words for w in ("rim", "roll", "jazz")):
        return "snare"
    if "hat" in words or "hh" in words.split():
        if "open" in words and "semi" not in words:
            return "open_hat"
        if "closed" in words or words.endswith(" cl"):
            return "hat"
    return None


def kit_parts(kit: Path) -> dict[str, list[Layer]]:
    """The first instrument of each voice in a Hydrogen drumkit.xml, as its velocity layers."""
    root = ET.parse(kit / "drumkit.xml").getroot()
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    parts: dict[str, list[Layer]] = {}
    for instrument in root.iter(f"{ns}instrument"):
        part = _part(instrument.findtext(f"{ns}name") or "")
        if part is None or part in parts:
            continue
        layers = [
            Layer(
                kit / (layer.findtext(f"{ns}filename") or ""),
                float(layer.findtext(f"{ns}min") or 0.0),
                float(layer.findtext(f"{ns}max") or 1.0),
                float(layer.findtext(f"{ns}gain") or 1.0),
            )
            for layer in instrument.findall(f"{ns}layer")
        ]
        if not layers and instrument.findtext(f"{ns}filename"):
            layers = [Layer(kit / instrument.findtext(f"{ns}filename"), 0.0, 1.0, 1.0)]
        layers = [layer for layer in layers if layer.path.is_file()]
        if layers:
            parts[part] = layers
    return parts


def layer_for(layers: list[Layer], velocity: float) -> Layer:
    """The layer Hydrogen plays at this velocity (the nearest when none covers it)."""
    return min(layers, key=lambda layer: max(layer.low - velocity, velocity - layer.high, 0.0))


def _hit(path: Path, sr: int) -> np.ndarray:
    wav, rate = audio.load(path)
    return audio.conform(wav, rate, sr, 2).numpy().astype(np.float64)


def _pan(x: np.ndarray, pan: float) -> np.ndarray:
    return x * np.array([[min(1.0, 1.0 - pan)], [min(1.0, 1.0 + pan)]])


def sequence_drums(genre: str, kit: Path, rng: np.random.Generator, bpm: int, bars: int, sr: int) -> np.ndarray:
    """A drum loop from a kit's recorded hits: the genre's patterns (synth.GENRES), each hit's
    layer picked by its velocity, hits late or early by a few ms, tails folded onto the start."""
    style = GENRES[genre]
    parts = kit_parts(kit)
    n = audio.loop_samples(bpm, bars, sr)
    spb = 60.0 / bpm * sr
    swing = float(rng.uniform(*style.swing))
    hits = {
        "kick": pattern_hits(rng, bar_patterns(rng, style.kick, bars), swing, 0.15),
        "snare": pattern_hits(rng, bar_patterns(rng, style.snare, bars), swing, 0.2, style.ghosts),
        "clap": pattern_hits(rng, bar_patterns(rng, style.clap, bars), swing, 0.2),
        "hat": hat_rolls(rng, bars)
        if style.hat_rolls
        else pattern_hits(rng, bar_patterns(rng, style.hat, bars), swing, 0.3),
        "open_hat": pattern_hits(rng, bar_patterns(rng, style.open_hat, bars), swing, 0.2),
    }
    if "clap" not in parts:  # a kit without a clap plays the clap pattern on its snare
        hits["snare"] += hits.pop("clap")
    beats = bars * 4
    jitter = TIMING_MS / 1000 * bpm / 60  # in beats
    loop = np.zeros((2, n))
    for part, part_hits in hits.items():
        if part not in parts or not part_hits:
            continue
        placed = [((beat + rng.normal(0, jitter)) % beats, velocity) for beat, velocity in part_hits]
        choke = [b for b, _ in hits["hat"]] if part == "open_hat" else None
        by_layer: dict[Layer, list[tuple[float, float]]] = {}
        for beat, velocity in placed:
            by_layer.setdefault(layer_for(parts[part], velocity), []).append((beat, velocity))
        gain = 10 ** (PART_GAIN_DB[part] / 20)
        for layer, layer_hits in by_layer.items():
            sound = _pan(_hit(layer.path, sr), PART_PAN[part]) * layer.gain * gain
            loop += place(sound, layer_hits, spb, n, sr, choke=choke)
    return loop


Notes = list[tuple[float, float, int, int]]  # (start beat, beats, MIDI pitch, velocity)


def midi_file(notes: Notes, path: Path, program: int, bpm: float, end: float = 0.0) -> None:
    """A one-track standard MIDI file: notes as (start beat, beats, pitch, velocity); the track
    ends at beat `end` when that is later than the last note (fluidsynth renders until then)."""
    events = sorted(
        [(round(s * TPQ), 0x90, p, v) for s, d, p, v in notes]
        + [(round((s + d) * TPQ), 0x80, p, 0) for s, d, p, v in notes],
        key=lambda e: (e[0], e[1] == 0x90),
    )
    data = b"\x00\xff\x51\x03" + round(60_000_000 / bpm).to_bytes(3, "big") + bytes([0, 0xC0, program])
    now = 0

    def varlen(delta: int) -> bytes:
        out = [delta & 0x7F]
        while delta > 0x7F:
            delta >>= 7
            out.insert(0, (delta & 0x7F) | 0x80)
        return bytes(out)

    for tick, status, pitch, velocity in events:
        delta, now = tick - now, tick
        data += varlen(delta) + bytes([status, pitch, velocity])
    data += varlen(max(0, round(end * TPQ) - now)) + b"\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, TPQ) + b"MTrk" + struct.pack(">I", len(data)) + data)


def render_midi(notes: Notes, program: int, bpm: float, bars: int, sr: int) -> np.ndarray:
    """Notes played by a GM program of FluidR3 through fluidsynth, stereo, folded to exactly `bars`
    bars: what rings past the end (releases, reverb) plays over the start, as it would on repeat."""
    n = audio.loop_samples(bpm, bars, sr)
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "loop.mid", Path(tmp) / "loop.wav"
        midi_file(notes, mid, program, bpm, end=bars * 4 + 8)  # 8 beats of tail to fold back
        subprocess.run(
            ["fluidsynth", "-ni", "-g", "0.6", "-r", str(sr), "-F", str(wav), str(SOUNDFONT), str(mid)],
            check=True,
            capture_output=True,
        )
        rendered, rate = audio.load(wav)
    return fold(audio.conform(rendered, rate, sr, 2).numpy().astype(np.float64), n)


def _key(rng: np.random.Generator, genre: str) -> tuple[int, str]:
    """A drawn pitch class and mode, the modes weighted as the genre's (synth.GENRES)."""
    modes = GENRES[genre].modes
    return int(rng.integers(12)), modes[int(rng.integers(len(modes)))]


def _key_name(pitch_class: int, mode: str) -> str:
    return NOTE_NAMES[pitch_class] + ("m" if mode == "minor" else "")


def bass_loop(genre: str, rng: np.random.Generator, bpm: int, bars: int, sr: int) -> tuple[np.ndarray, dict]:
    """One of the genre's bass riffs (synth.GENRES) in a drawn key on a GM bass program."""
    style = GENRES[genre]
    pitch_class, mode = _key(rng, genre)
    program = int(rng.choice(BASS_PROGRAMS[genre]))
    root = 28 + (pitch_class - 4) % 12  # E1..D#2, as the synth's bass
    line = bass_notes(rng, style, bar_patterns(rng, style.bass, bars), root, SCALES[mode], TPQ, 0.0)
    notes = [(note.start / TPQ, note.length / TPQ, int(note.midi), round(100 * note.velocity)) for note in line]
    meta = {"key": _key_name(pitch_class, mode), "program": program}
    return render_midi(notes, program, bpm, bars, sr), meta


def melodic_loop(genre: str, rng: np.random.Generator, bpm: int, bars: int, sr: int) -> tuple[np.ndarray, dict]:
    """A progression from the tonic back to it in a drawn key, as held chords or as an
    eighth-note arpeggio over a held root, on a GM keys/pad/string/pluck program."""
    pitch_class, mode = _key(rng, genre)
    scale = SCALES[mode]
    options = PROGRESSIONS[mode]
    progression = options[int(rng.integers(len(options)))]
    program = int(rng.choice(MELODIC_PROGRAMS[genre]))
    pattern = "chords" if rng.random() < 0.5 else "arp"
    span = bars * 4 / len(progression)  # beats per chord
    tonic = 48 + pitch_class
    notes = []
    for i, degree in enumerate(progression):
        chord = [tonic + scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
        start = i * span
        notes.append((start, span, chord[0] - 12, 70))  # the root below
        if pattern == "chords":
            notes += [(start, span, p, int(rng.integers(70, 90))) for p in chord]
        else:
            tones = chord + [p + 12 for p in chord]
            for k in range(int(span * 2)):
                notes.append((start + k / 2, 0.5, tones[k % len(tones)], int(rng.integers(70, 100))))
    meta = {"key": _key_name(pitch_class, mode), "program": program, "pattern": pattern}
    return render_midi(notes, program, bpm, bars, sr), meta


def _level(loop: np.ndarray) -> torch.Tensor:
    """No DC (still seamless: the mean is constant), peak at -1 dBFS."""
    loop = loop - loop.mean(axis=1, keepdims=True)
    peak = float(np.abs(loop).max())
    return torch.from_numpy((loop * (PEAK / peak if peak > 0 else 1.0)).astype(np.float32))


def sonic_pi_loop(name: str, sr: int) -> tuple[torch.Tensor, float, int]:
    """A sonic-pi loop at `sr`, stereo, cut or padded by the few samples that make it exactly
    its bars at its written tempo (SONIC_PI); returns (audio, bpm, bars)."""
    bpm, bars, _ = SONIC_PI[name]
    if bpm is None or bars is None:
        raise UserError(f"{name}: sonic-pi loop has no tempo to file it by")
    wav, rate = audio.load(SONIC_PI_DIR / f"{name}.flac")
    wav = audio.conform(wav, rate, sr, 2)
    n = audio.loop_samples(bpm, bars, sr)
    return torch.nn.functional.pad(wav, (0, max(0, n - wav.shape[-1])))[:, :n].contiguous(), bpm, bars


def _drum_kit(genre: str, index: int) -> Path:
    kits = [HYDROGEN_DIR / name for name in GENRE_KITS[genre] if (HYDROGEN_DIR / name / "drumkit.xml").is_file()]
    if not kits:
        raise UserError(f"{HYDROGEN_DIR}: none of the kits {', '.join(GENRE_KITS[genre])} is installed")
    return kits[index % len(kits)]


def make_loop(genre: str, role: str, index: int, seed: int, sr: int) -> tuple[torch.Tensor, dict]:
    """One loop of the pack and its labels; the same (genre, role, index, seed, sr), the same loop."""
    s = loop_seed(seed, f"{genre}/{role}", index)
    rng = np.random.default_rng(s)
    low, high = GENRES[genre].bpm
    bpm, bars = int(rng.integers(low, high + 1)), int(rng.choice((1, 2, 2, 4)))
    meta: dict = {"genre": genre, "role": role, "kind": "loop", "bpm": bpm, "bars": bars}
    if role == "drums":
        kit = _drum_kit(genre, index)
        loop = sequence_drums(genre, kit, rng, bpm, bars, sr)
        meta |= {"key": None, "source": "hydrogen-drumkits", "kit": kit.name}
    else:
        loop, extra = (bass_loop if role == "bass" else melodic_loop)(genre, rng, bpm, bars, sr)
        meta |= extra | {"source": "fluid-soundfont-gm"}
    meta |= {"beats_per_bar": 4, "sample_rate": sr, "loop": True, "seed": s}
    return _level(loop), meta


def build_sample_pack(
    out: str | Path, loops_per_cell: int = 4, sample_rate: int = 44100, seed: int = 0, progress: bool = False
) -> list[Path]:
    """Write OUT/<genre>/<genre>_<role>_<index>_<bpm>bpm[_<key>].wav and a .json sidecar each:
    `loops_per_cell` loops per genre and role (drums, bass, melodic), plus the sonic-pi loops
    of SONIC_PI_GENRES. Same arguments, same files. Returns the audio paths."""
    if (gone := missing_packages()) is not None:
        raise UserError(f"the sample pack needs Debian packages that are not installed: apt-get install {gone}")
    if loops_per_cell < 0:
        raise UserError(f"loops per genre and role must be ≥ 0, got {loops_per_cell}")
    if seed < 0:
        raise UserError(f"seed must be ≥ 0, got {seed}")
    if sample_rate < 8000:
        raise UserError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    out = Path(out)
    jobs = [(genre, role, i) for genre in GENRES for role in ROLES for i in range(loops_per_cell)]
    jobs += [(genre, name, -1) for genre, loops in SONIC_PI_GENRES.items() for name, _ in loops]
    paths = []
    for genre, what, i in tqdm(jobs, desc="sample pack", unit="loop", disable=not progress):
        if i < 0:
            wav, bpm, bars = sonic_pi_loop(what, sample_rate)
            role = dict(SONIC_PI_GENRES[genre])[what]
            meta = {"genre": genre, "role": role, "kind": "loop", "bpm": bpm, "bars": bars, "key": None}
            meta |= {"source": "sonic-pi-samples", "file": f"{what}.flac", "beats_per_bar": 4}
            meta |= {"sample_rate": sample_rate, "loop": True}
            stem = out / genre / f"{genre}_sonic-pi_{what}"  # its tempo may have decimals: in the sidecar
        else:
            wav, meta = make_loop(genre, what, i, seed, sample_rate)
            key = f"_{meta['key']}" if meta["key"] else ""
            stem = out / genre / f"{genre}_{what}_{i:03d}_{meta['bpm']}bpm{key}"
        paths.append(audio.save(stem.with_suffix(".wav"), wav, sample_rate))
        atomic_write_json(stem.with_suffix(".json"), meta)
    return paths
