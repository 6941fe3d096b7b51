"""MIDI files ⇄ :class:`~harmonycloak.clip.PianoRoll`.

Reading uses symusic (C++ parser: fast on large files, pairs note-on/off robustly, and
splits every MIDI track into one instrument track per channel and program). Writing is
our own small Standard MIDI File writer (numpy, no dependency): it must choose MIDI
channels itself, the drum track on channel 10 and the other tracks on distinct channels,
which symusic's writer does not guarantee (it numbers channels by track index), and
mido's per-message objects make a long song take seconds.

Time is quantized to ``steps_per_beat`` steps per quarter note (12 gives MuseGAN's 48
steps per 4/4 bar; a 3/4 bar or a 6/8 bar is 36 steps). Note starts and ends are rounded
to the nearest step and every note lasts at least one step. Velocities are MIDI
velocity / 127 as float32. ``onsets`` marks the first step of every note, so repeated
notes of one pitch stay apart. Within one note (from its onset to the next onset or the
next silent step) the velocity is constant: the velocity of the onset cell, which is the
loudest note sounding there. That is exactly what :func:`save_midi` writes, so
``load_midi(save_midi(load_midi(f)))`` gives back the same roll.

Two groupings of the file's instrument tracks:

``"musegan"``
    The five tracks of MuseGAN (Dong et al., AAAI 2018) in the order Bass, Drums,
    Guitar, Piano, Strings. Programs are merged the way the Lakh Pianoroll Dataset made
    LPD-5 (``src/merger_5.py`` of salu133445/lakh-pianoroll-dataset), with 0-based
    General MIDI program numbers:

    ==========  ==============================================================
    Drums       every drum track (MIDI channel 10), whatever its program
    Piano       programs 0-7 (piano family)
    Guitar      programs 24-31 (guitar family)
    Bass        programs 32-39 (bass family)
    Strings     every other program below 96 (chromatic percussion, organ,
                strings, ensemble, brass, reed, pipe, synth lead, synth pad:
                8-23 and 40-95) and 104-111 (ethnic)
    left out    96-103 (synth effects) and 112-127 (percussive, sound effects)
    ==========  ==============================================================

    The LPD documentation says instruments outside the five families "are considered as
    part of the strings"; its merge script in fact leaves out the synth-effect,
    percussive and sound-effect programs, and that is the data MuseGAN trained on, so we
    do the same and say so in ``PianoRoll.warnings`` (the quote is from the LPD docs,
    ``docs/dataset.md``). Notes that overlap after merging keep the largest velocity
    per cell (then the one-velocity-per-note rule above); onsets are OR-ed. Each track
    gets a representative program (MuseGAN's sample writer: Bass 33, Drums 0, Guitar 25,
    Piano 0, Strings 48). LPD-5 files themselves store the tracks as Drums, Piano,
    Guitar, Bass, Strings; we use the paper's B, D, G, P, S order.

``"instrument"``
    One track per instrument track of the file, in file order: each MIDI track is split
    by channel (then by program, when a program change switches instruments), with its
    name, program and drum flag (channel 10). Tracks that have no notes are skipped, so
    an all-silent roll track does not come back from a file.

Notes outside ``[lowest_pitch, lowest_pitch + n_pitches)`` (C1-B7 by default) are left
out; :attr:`PianoRoll.warnings` then says how many, in words a musician can act on.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from symusic.core import ScoreTick, TrackTick

from harmonycloak.clip import PianoRoll, TempoChange, TimeSignature
from harmonycloak.errors import InputError
from harmonycloak.io.files import check_input_file

__all__ = [
    "GROUPINGS",
    "MIDI_SUFFIXES",
    "MUSEGAN_PROGRAMS",
    "MUSEGAN_TRACKS",
    "load_midi",
    "midi_bytes",
    "musegan_track",
    "pitch_name",
    "save_midi",
]

MIDI_SUFFIXES: tuple[str, ...] = (".mid", ".midi")
"""File name endings read as MIDI (compared lower-case)."""

Grouping = Literal["musegan", "instrument"]
GROUPINGS: tuple[str, ...] = ("musegan", "instrument")

MUSEGAN_TRACKS: tuple[str, ...] = ("Bass", "Drums", "Guitar", "Piano", "Strings")
"""Track names of the musegan grouping, in track order (the paper's B, D, G, P, S)."""

MUSEGAN_PROGRAMS: tuple[int, ...] = (33, 0, 25, 0, 48)
"""Representative 0-based GM program of each musegan track (MuseGAN's sample writer)."""

_MUSEGAN_IS_DRUM: tuple[bool, ...] = (False, True, False, False, False)

_DRUM_CHANNEL = 9  # 0-based; "channel 10" to musicians
_MELODIC_CHANNELS: tuple[int, ...] = tuple(c for c in range(16) if c != _DRUM_CHANNEL)

_MAX_STEPS_PER_BEAT = 960
_MAX_CELLS = 100_000_000  # ~2 GB peak while loading; ~5x a 10-minute 16-track song
_MAX_TICKS_PER_BEAT = 0x7FFF  # 15 bits in the MIDI header
_MAX_MSPQ = 0xFFFFFF  # 24 bits in a set-tempo event
_MAX_DELTA = 1 << 28  # 4-byte variable-length delta times

_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_EXPORT_MIDI_HINT = "export your music as a Standard MIDI File (.mid)"
_GM_FAMILIES = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble",
    "Brass", "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic",
    "Percussive", "Sound Effects",
)  # fmt: skip


@dataclass(frozen=True)
class _Notes:
    """Notes of one instrument track on the step grid (all int64 arrays of one length)."""

    start: np.ndarray  # first step
    end: np.ndarray  # one past the last step, > start
    pitch: np.ndarray  # MIDI note number
    velocity: np.ndarray  # 1..127


# ---------------------------------------------------------------------------- helpers


def pitch_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI note number, with 60 = C4 and sharps.

    The whole MIDI range 0-127: 0 = "C-1", 24 = "C1", 61 = "C#4", 107 = "B7",
    127 = "G9". Numbers outside it continue the same notation (-1 = "B-2", 128 = "G#9",
    135 = "D#10"), so a frequency rounded to a note number always has a name. Any
    integer type (``int``, numpy integers); raises ``TypeError`` for anything else.
    """
    number = operator.index(pitch)
    return f"{_NOTE_NAMES[number % 12]}{number // 12 - 1}"


def musegan_track(program: int, is_drum: bool) -> int | None:
    """Index into :data:`MUSEGAN_TRACKS` for a 0-based GM program, or None if left out.

    The LPD-5 rule (see the module docstring): drums first, then piano 0-7, guitar 24-31,
    bass 32-39, and strings for every other program below 96 or in 104-111.
    """
    if is_drum:
        return 1
    family = program // 8
    if family == 0:
        return 3
    if family == 3:
        return 2
    if family == 4:
        return 0
    if program < 96 or 104 <= program < 112:
        return 4
    return None


def _default_track_name(program: int, is_drum: bool) -> str:
    if is_drum:
        return "Drums"
    return f"{_GM_FAMILIES[program // 8]} (program {program})"


def _ticks_to_steps(ticks: npt.ArrayLike, ticks_per_beat: int, steps_per_beat: int) -> np.ndarray:
    """Nearest step of each tick (halves round up), exact in integers."""
    ticks = np.asarray(ticks, dtype=np.int64)
    return (2 * ticks * steps_per_beat + ticks_per_beat) // (2 * ticks_per_beat)


def _steps_to_ticks(steps: npt.ArrayLike, ticks_per_beat: int, steps_per_beat: int) -> np.ndarray:
    """Nearest tick of each step; inverted exactly by :func:`_ticks_to_steps` when
    ``ticks_per_beat >= steps_per_beat``."""
    steps = np.asarray(steps, dtype=np.int64)
    return (2 * steps * ticks_per_beat + steps_per_beat) // (2 * steps_per_beat)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------ load


def _check_load_options(
    path: Path, grouping: str, steps_per_beat: int, lowest_pitch: int, n_pitches: int
) -> None:
    if grouping not in GROUPINGS:
        raise InputError(
            f"{path}: grouping {grouping!r} is not supported; use 'musegan' or 'instrument'"
        )
    if not _is_int(steps_per_beat) or not 1 <= steps_per_beat <= _MAX_STEPS_PER_BEAT:
        raise InputError(
            f"{path}: steps per beat {steps_per_beat!r} is not supported; use a whole number "
            f"from 1 to {_MAX_STEPS_PER_BEAT} (12 gives 48 steps per 4/4 bar)"
        )
    if not _is_int(lowest_pitch) or not 0 <= lowest_pitch <= 127:
        raise InputError(
            f"{path}: lowest pitch {lowest_pitch!r} is not a MIDI note; use 0 to 127 (24 = C1)"
        )
    if not _is_int(n_pitches) or not 1 <= n_pitches <= 128 - lowest_pitch:
        raise InputError(
            f"{path}: {n_pitches!r} pitches from MIDI note {lowest_pitch} run past note 127; "
            f"use 1 to {128 - lowest_pitch} pitches"
        )


def _read_score(path: Path) -> ScoreTick:
    """Parse ``path`` with symusic; every failure becomes an :class:`InputError`."""
    check_input_file(path, what="a MIDI file", export_hint=_EXPORT_MIDI_HINT)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror}); check its permissions") from exc
    if not data.startswith(b"MThd"):
        raise InputError(
            f"{path} is not a MIDI file (it does not start with a MIDI header); "
            f"{_EXPORT_MIDI_HINT}"
        )
    if len(data) >= 14 and data[12] & 0x80:
        raise InputError(
            f"{path} counts time in SMPTE frames instead of beats, which is not supported; "
            "export it with a tempo and ticks per quarter note"
        )
    try:
        _check_chunks(data)
        return ScoreTick.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError (and others) on damaged files
        raise InputError(
            f"{path} is a damaged or truncated MIDI file ({exc}); "
            "export it again from your sequencer or notation program"
        ) from exc


def _check_chunks(data: bytes) -> None:
    """Raise ValueError unless every chunk is complete and the header's track count of
    MTrk chunks is present (symusic accepts a file cut right after its header)."""
    if len(data) < 14:
        raise ValueError("the header is cut short")
    header_length = int.from_bytes(data[4:8], "big")
    declared_tracks = int.from_bytes(data[10:12], "big")
    position, tracks = 8 + header_length, 0
    while position + 8 <= len(data) and tracks < declared_tracks:
        length = int.from_bytes(data[position + 4 : position + 8], "big")
        if position + 8 + length > len(data):
            raise ValueError(
                f"chunk {tracks + 1} ends {position + 8 + length - len(data)} bytes early"
            )
        tracks += data[position : position + 4] == b"MTrk"
        position += 8 + length
    if tracks < declared_tracks:
        raise ValueError(f"the header announces {declared_tracks} tracks, the file holds {tracks}")


def _quantized_notes(track: TrackTick, tpq: int, steps_per_beat: int) -> _Notes:
    """The notes of one symusic track on the step grid; each note at least one step."""
    arrays = track.notes.numpy()
    start_tick = arrays["time"].astype(np.int64)
    end_tick = start_tick + np.maximum(arrays["duration"].astype(np.int64), 0)
    start = _ticks_to_steps(start_tick, tpq, steps_per_beat)
    end = np.maximum(_ticks_to_steps(end_tick, tpq, steps_per_beat), start + 1)
    velocity = np.clip(arrays["velocity"].astype(np.int64), 1, 127)
    return _Notes(start, end, arrays["pitch"].astype(np.int64), velocity)


def _tempos(score: ScoreTick, steps_per_beat: int) -> tuple[TempoChange, ...]:
    """Tempo changes at their steps; 120 qpm at step 0 unless the file sets one there.

    qpm is computed from the file's microseconds per quarter note, so saving it again
    writes the same integer. Of several changes that land on one step the last wins.
    """
    by_step: dict[int, float] = {0: 120.0}
    for tempo in sorted(score.tempos, key=lambda t: t.time):
        step = int(_ticks_to_steps(tempo.time, score.tpq, steps_per_beat))
        if tempo.mspq > 0:
            by_step[step] = 60_000_000.0 / tempo.mspq
    return tuple(TempoChange(step, qpm) for step, qpm in sorted(by_step.items()))


def _time_signatures(score: ScoreTick, steps_per_beat: int) -> tuple[TimeSignature, ...]:
    """Meter changes at their steps; 4/4 at step 0 unless the file sets one there."""
    by_step: dict[int, tuple[int, int]] = {0: (4, 4)}
    for sig in sorted(score.time_signatures, key=lambda s: s.time):
        step = int(_ticks_to_steps(sig.time, score.tpq, steps_per_beat))
        if sig.numerator > 0 and sig.denominator > 0:
            by_step[step] = (int(sig.numerator), int(sig.denominator))
    return tuple(TimeSignature(step, n, d) for step, (n, d) in sorted(by_step.items()))


def _paint(
    groups: list[list[_Notes]], steps: int, lowest_pitch: int, n_pitches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Velocities float32 ``[tracks, steps, pitches]`` and onsets bool of the same shape.

    ``groups[t]`` holds the notes (already inside the pitch range) merged into track t.
    Overlaps keep the largest velocity; then every note segment (onset up to the next
    onset or silence) takes its onset cell's velocity, the rule :func:`save_midi` uses.
    """
    shape = (len(groups), steps, n_pitches)
    velocity = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    onsets = np.zeros(velocity.shape, dtype=bool)
    for index, notes_list in enumerate(groups):
        for notes in notes_list:
            lengths = notes.end - notes.start
            which = np.repeat(np.arange(lengths.size), lengths)
            first = np.repeat(np.cumsum(lengths) - lengths, lengths)
            step = notes.start[which] + np.arange(which.size) - first
            row = (index * steps + step) * n_pitches + (notes.pitch[which] - lowest_pitch)
            np.maximum.at(velocity, row, notes.velocity[which].astype(np.uint8))
            onsets[(index * steps + notes.start) * n_pitches + notes.pitch - lowest_pitch] = True
    velocity = velocity.reshape(shape)
    onsets = onsets.reshape(shape)
    velocity = _hold_onset_velocity(velocity, onsets)
    return (velocity / np.float32(127)).astype(np.float32), onsets


def _hold_onset_velocity(velocity: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """Give every sounding cell the velocity of the onset that starts its note."""
    active = velocity > 0
    time_index = np.arange(velocity.shape[1], dtype=np.int32)[None, :, None]
    source = np.where(onsets & active, time_index, 0).astype(np.int32)
    np.maximum.accumulate(source, axis=1, out=source)
    held = np.take_along_axis(velocity, source, axis=1)
    return np.where(active, held, 0)


def _in_range(notes: _Notes, lowest_pitch: int, n_pitches: int) -> tuple[_Notes, int]:
    """The notes inside the pitch range, and how many were outside."""
    keep = (notes.pitch >= lowest_pitch) & (notes.pitch < lowest_pitch + n_pitches)
    kept = _Notes(notes.start[keep], notes.end[keep], notes.pitch[keep], notes.velocity[keep])
    return kept, int(keep.size - keep.sum())


def _layout(
    tracks: list[TrackTick], grouping: str
) -> tuple[list[int | None], tuple[str, ...], tuple[int, ...], tuple[bool, ...]]:
    """Output track of each file track (None: left out), and the output tracks' names,
    programs and drum flags, for ``grouping``."""
    if grouping == "musegan":
        slots = [musegan_track(int(t.program), bool(t.is_drum)) for t in tracks]
        return slots, MUSEGAN_TRACKS, MUSEGAN_PROGRAMS, _MUSEGAN_IS_DRUM
    names = tuple(t.name.strip() or _default_track_name(t.program, t.is_drum) for t in tracks)
    programs = tuple(int(t.program) for t in tracks)
    is_drum = tuple(bool(t.is_drum) for t in tracks)
    return list(range(len(tracks))), names, programs, is_drum


def _group_notes(
    notes: list[_Notes], slots: list[int | None], n_tracks: int, lowest_pitch: int, n_pitches: int
) -> tuple[list[list[_Notes]], int, int]:
    """Notes per output track (inside the pitch range), the number of notes of left-out
    instruments, and the number of notes outside the pitch range."""
    groups: list[list[_Notes]] = [[] for _ in range(n_tracks)]
    left_out_programs = out_of_range = 0
    for slot, track_notes in zip(slots, notes, strict=True):
        if slot is None:
            left_out_programs += track_notes.pitch.size
            continue
        kept, outside = _in_range(track_notes, lowest_pitch, n_pitches)
        out_of_range += outside
        groups[slot].append(kept)
    return groups, left_out_programs, out_of_range


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def load_midi(
    path: str | os.PathLike[str],
    *,
    grouping: Grouping = "musegan",
    steps_per_beat: int = 12,
    lowest_pitch: int = 24,
    n_pitches: int = 84,
) -> PianoRoll:
    """Read a Standard MIDI File into a multi-track :class:`PianoRoll`.

    Args:
        path: the .mid file (type 0, 1 or 2).
        grouping: ``"musegan"`` (five tracks Bass, Drums, Guitar, Piano, Strings, merged
            by the LPD-5 rule in the module docstring) or ``"instrument"`` (one track per
            instrument track of the file: MIDI track x channel x program, file order).
        steps_per_beat: steps per quarter note (1-960); 12 gives 48 steps per 4/4 bar.
        lowest_pitch: MIDI note of pitch index 0 (24 = C1).
        n_pitches: pitch bins (84 covers C1-B7).

    Returns:
        velocities float32 ``[tracks, steps, n_pitches]`` in [0, 1] (MIDI velocity / 127)
        with ``steps`` = the end of the last kept note; onsets bool of the same shape;
        programs (0-based GM), drum flags, track names; tempos and time signatures at
        their steps, always with an entry at step 0 (MIDI defaults 120 qpm and 4/4 when
        the file sets none there); the file's ``ticks_per_beat``; ``source`` = the path;
        ``warnings`` saying how many notes were left out and why (outside the pitch
        range; in musegan grouping, instruments LPD-5 leaves out).

    Raises:
        InputError: the path is missing, a folder, not a regular file (a named pipe is
            refused at once, never read), empty or unreadable (all checked by
            :func:`~harmonycloak.io.files.check_input_file`); not MIDI, damaged or
            truncated; the file has no notes or none that can be kept; an option is out of range; the
            roll would be too large to hold in memory.
    """
    path = Path(path)
    _check_load_options(path, grouping, steps_per_beat, lowest_pitch, n_pitches)
    score = _read_score(path)
    tpq = int(score.tpq)
    if tpq <= 0:
        raise InputError(
            f"{path} is a damaged MIDI file (0 ticks per quarter note); "
            "export it again from your sequencer or notation program"
        )
    tracks = [t for t in score.tracks if t.note_num() > 0]
    if not tracks:
        raise InputError(
            f"{path} has no notes; nothing to protect. Export the MIDI with its note tracks"
        )
    notes = [_quantized_notes(t, tpq, steps_per_beat) for t in tracks]
    total = sum(n.pitch.size for n in notes)
    slots, names, programs, is_drum = _layout(tracks, grouping)
    groups, left_out_programs, out_of_range = _group_notes(
        notes, slots, len(names), lowest_pitch, n_pitches
    )
    warnings = _load_warnings(left_out_programs, out_of_range, lowest_pitch, n_pitches)
    kept_ends = [n.end for group in groups for n in group if n.end.size]
    if not kept_ends:
        raise InputError(
            f"{path}: none of its {_plural(total, 'note')} can be kept "
            f"({'; '.join(warnings)}); nothing to protect. "
            "Choose another grouping or pitch range, or check the file"
        )
    steps = int(max(int(e.max()) for e in kept_ends))
    if len(names) * steps * n_pitches > _MAX_CELLS:
        raise InputError(
            f"{path}: the piano roll would need {len(names)} tracks x {steps} steps x "
            f"{n_pitches} pitches, too large to hold in memory; use fewer steps per beat "
            "or split the file into shorter parts"
        )
    velocities, onsets = _paint(groups, steps, lowest_pitch, n_pitches)
    return PianoRoll(
        velocities=velocities,
        steps_per_beat=steps_per_beat,
        lowest_pitch=lowest_pitch,
        programs=programs,
        is_drum=is_drum,
        track_names=names,
        tempos=_tempos(score, steps_per_beat),
        time_signatures=_time_signatures(score, steps_per_beat),
        onsets=onsets,
        source=str(path),
        ticks_per_beat=tpq,
        warnings=tuple(warnings),
    )


def _load_warnings(
    left_out_programs: int, out_of_range: int, lowest_pitch: int, n_pitches: int
) -> list[str]:
    """Plain-language notes on what loading left out (empty when nothing)."""
    warnings = []
    if out_of_range:
        top = lowest_pitch + n_pitches - 1
        warnings.append(
            f"{_plural(out_of_range, 'note')} outside {pitch_name(lowest_pitch)}–"
            f"{pitch_name(top)} (MIDI {lowest_pitch}–{top}) "
            f"{'was' if out_of_range == 1 else 'were'} left out"
        )
    if left_out_programs:
        warnings.append(
            f"{_plural(left_out_programs, 'note')} of synth-effect, percussive or "
            "sound-effect instruments (GM instruments 97–104 and 113–128, counted from 1) "
            f"{'was' if left_out_programs == 1 else 'were'} left out, as in MuseGAN's "
            "five-track data"
        )
    return warnings


# ------------------------------------------------------------------------------ save


def _check_roll(roll: PianoRoll) -> None:
    """Programmer errors in a roll about to be written (ValueError)."""
    if not np.all(np.isfinite(roll.velocities)):
        raise ValueError("PianoRoll velocities contain NaN or infinity")
    if not _is_int(roll.steps_per_beat) or roll.steps_per_beat < 1:
        raise ValueError(f"steps_per_beat must be a positive integer, got {roll.steps_per_beat}")
    if roll.lowest_pitch < 0 or roll.lowest_pitch + roll.pitches > 128:
        raise ValueError(
            f"pitches {roll.lowest_pitch}..{roll.lowest_pitch + roll.pitches - 1} "
            "are not all MIDI notes (0-127)"
        )
    for program in roll.programs:
        if not 0 <= program <= 127:
            raise ValueError(f"GM program {program} is outside 0-127")
    for tempo in roll.tempos:
        if not (tempo.qpm > 0 and 1 <= round(60_000_000 / tempo.qpm) <= _MAX_MSPQ):
            raise ValueError(
                f"tempo {tempo.qpm} qpm cannot be written to MIDI (3.58 to 60 million qpm)"
            )
    for sig in roll.time_signatures:
        d = sig.denominator
        if not (1 <= sig.numerator <= 255 and d >= 1 and d & (d - 1) == 0 and d <= 2**30):
            raise ValueError(
                f"time signature {sig.numerator}/{d} cannot be written to MIDI "
                "(numerator 1-255, denominator a power of two)"
            )


def _roll_notes(velocity: np.ndarray, onsets: np.ndarray | None) -> _Notes:
    """Notes of one track ``[steps, pitches]``; pitch is the pitch *index* here.

    A note starts at an onset on a sounding cell, or at a sounding cell after silence,
    and lasts until the next silent cell or the next onset. Its velocity is that of
    its first cell: round(v * 127) clamped to 1..127.
    """
    steps = velocity.shape[0]
    active = velocity.T > 0  # [pitches, steps]
    after_silence = np.ones_like(active)
    after_silence[:, 1:] = ~active[:, :-1]
    starts = active & (after_silence if onsets is None else (after_silence | onsets.T))
    boundary = np.ones((active.shape[0], steps + 1), dtype=bool)  # last column: the end
    boundary[:, :steps] = ~active | starts
    padded_starts = np.zeros_like(boundary)
    padded_starts[:, :steps] = starts
    start_flat = np.flatnonzero(padded_starts)
    boundary_flat = np.flatnonzero(boundary)
    end_flat = boundary_flat[np.searchsorted(boundary_flat, start_flat, side="right")]
    pitch, start = np.divmod(start_flat, steps + 1)
    end = end_flat - pitch * (steps + 1)
    level = np.floor(velocity[start, pitch].astype(np.float64) * 127 + 0.5).astype(np.int64)
    return _Notes(start, end, pitch, np.clip(level, 1, 127))


def _channels(is_drum: tuple[bool, ...]) -> list[int]:
    """Channel per track: drums on 9 (channel 10), the others on 0-8, 10-15 in turn.

    Beyond 15 melodic tracks channels are reused; each track still gets its own MIDI
    track and program change, so the file reads back track by track.
    """
    channels, melodic = [], 0
    for drum in is_drum:
        if drum:
            channels.append(_DRUM_CHANNEL)
        else:
            channels.append(_MELODIC_CHANNELS[melodic % len(_MELODIC_CHANNELS)])
            melodic += 1
    return channels


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity: 7 bits a byte, high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _meta(delta: int, kind: int, payload: bytes) -> bytes:
    return _vlq(delta) + bytes([0xFF, kind]) + _vlq(len(payload)) + payload


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def _channel_events(delta: np.ndarray, status: np.ndarray, data: np.ndarray) -> bytes:
    """Channel messages as bytes, vectorized: ``delta`` ticks (< 2**28) before each,
    ``status`` bytes, ``data`` ``[events, 2]`` data bytes."""
    delta = delta.astype(np.int64)
    shifts = np.array([21, 14, 7, 0])
    vlq = ((delta[:, None] >> shifts) & 0x7F) | np.array([0x80, 0x80, 0x80, 0])
    used = 1 + (delta >= 1 << 7).astype(int) + (delta >= 1 << 14) + (delta >= 1 << 21)
    rows = np.concatenate([vlq, status[:, None], data], axis=1).astype(np.uint8)
    keep = np.concatenate(
        [used[:, None] > np.array([3, 2, 1, 0]), np.ones((delta.size, 3), dtype=bool)], axis=1
    )
    return rows[keep].tobytes()


def _conductor_track(roll: PianoRoll, tpq: int, end_tick: int) -> bytes:
    """Track 0: time signatures, then tempos, at their steps (stable order at one tick)."""
    events = []
    for order, sig in enumerate(roll.time_signatures):
        tick = int(_steps_to_ticks(sig.step, tpq, roll.steps_per_beat))
        power = sig.denominator.bit_length() - 1
        # 24 MIDI clocks per metronome click, 8 32nd notes per quarter: the usual values
        events.append((tick, order, 0x58, bytes([sig.numerator, power, 24, 8])))
    for order, tempo in enumerate(roll.tempos):
        tick = int(_steps_to_ticks(tempo.step, tpq, roll.steps_per_beat))
        mspq = int(round(60_000_000 / tempo.qpm))
        events.append((tick, len(roll.time_signatures) + order, 0x51, mspq.to_bytes(3, "big")))
    out, now = bytearray(), 0
    for tick, _, kind, payload in sorted(events, key=lambda e: (e[0], e[1])):
        out += _meta(tick - now, kind, payload)
        now = tick
    out += _meta(max(end_tick - now, 0), 0x2F, b"")
    return _chunk(b"MTrk", bytes(out))


def _instrument_track(roll: PianoRoll, index: int, channel: int, tpq: int, end_tick: int) -> bytes:
    """One roll track as a MIDI track: name, program change, then its notes sorted by
    tick with note-offs first (a repeated note ends before it starts again)."""
    onsets = None if roll.onsets is None else roll.onsets[index]
    notes = _roll_notes(np.clip(roll.velocities[index], 0.0, 1.0), onsets)
    start = _steps_to_ticks(notes.start, tpq, roll.steps_per_beat)
    end = _steps_to_ticks(notes.end, tpq, roll.steps_per_beat)
    pitch = np.concatenate([notes.pitch, notes.pitch]) + roll.lowest_pitch
    tick = np.concatenate([end, start])
    is_on = np.repeat([False, True], notes.pitch.size)
    order = np.lexsort((pitch, is_on, tick))
    status = np.where(is_on, 0x90, 0x80) | channel
    level = np.concatenate([np.zeros_like(notes.velocity), notes.velocity])
    name = roll.track_names[index].encode("utf-8")  # symusic reads names as UTF-8
    out = _meta(0, 0x03, name) + bytes([0, 0xC0 | channel, roll.programs[index]])
    out += _channel_events(
        np.diff(tick[order], prepend=0), status[order], np.stack([pitch, level], 1)[order]
    )
    last = int(tick.max()) if tick.size else 0
    out += _meta(max(end_tick - last, 0), 0x2F, b"")
    return _chunk(b"MTrk", out)


def midi_bytes(roll: PianoRoll) -> bytes:
    """The type-1 Standard MIDI File for ``roll`` (see :func:`save_midi`), as bytes."""
    _check_roll(roll)
    tpq = max(int(roll.ticks_per_beat), roll.steps_per_beat)  # below that, steps collide
    if tpq > _MAX_TICKS_PER_BEAT:
        raise ValueError(f"ticks_per_beat {tpq} exceeds the MIDI maximum {_MAX_TICKS_PER_BEAT}")
    end_tick = int(_steps_to_ticks(roll.steps, tpq, roll.steps_per_beat))
    if end_tick >= _MAX_DELTA:
        raise ValueError(f"the roll is {end_tick} ticks long; MIDI holds below {_MAX_DELTA}")
    if roll.tracks + 1 > 0xFFFF:
        raise ValueError(f"{roll.tracks} tracks do not fit in one MIDI file")
    header = (1).to_bytes(2, "big") + (roll.tracks + 1).to_bytes(2, "big") + tpq.to_bytes(2, "big")
    tracks = [_conductor_track(roll, tpq, end_tick)]
    for index, channel in enumerate(_channels(roll.is_drum)):
        tracks.append(_instrument_track(roll, index, channel, tpq, end_tick))
    return _chunk(b"MThd", header) + b"".join(tracks)


def save_midi(roll: PianoRoll, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write ``roll`` as a type-1 Standard MIDI File; returns the path written.

    Track 0 holds the time-signature and tempo changes at their steps; then one MIDI
    track per roll track with its name (UTF-8) and program change. Drum tracks play on
    channel 10, the others on distinct channels 1-9, 11-16 (reused past 15 melodic
    tracks). A note starts at each onset of a sounding cell (or at sound after silence)
    and runs to the next onset or silent step; its velocity is round(v * 127) of its
    first cell, at least 1 (cells are clipped to [0, 1] first). Ticks per beat are the
    roll's, raised to ``steps_per_beat`` if smaller so that steps stay apart; every
    track ends at the roll's last step. The same roll always gives the same bytes.

    The write is atomic (a temporary file renamed into place).

    Raises:
        InputError: ``path`` exists and ``force`` is False.
        ValueError: the roll holds values MIDI cannot store (NaN, tempo, meter, length).
    """
    from harmonycloak.io.files import atomic_write

    data = midi_bytes(roll)
    path = Path(path)

    def writer(tmp_path: Path) -> None:
        Path(tmp_path).write_bytes(data)

    atomic_write(path, writer, force=force)
    return path
