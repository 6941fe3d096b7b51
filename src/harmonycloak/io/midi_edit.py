"""Edit a musician's MIDI file in place of re-rendering it: the protected MIDI output.

The perturbation of a MIDI piece is defined on its :class:`~harmonycloak.clip.PianoRoll`
(see :func:`~harmonycloak.io.midi.load_midi`), but a musician's file holds much more
than the roll: unquantized note timings, controllers, pitch bends, program changes,
sysex, markers, lyrics, key signatures, track names, the order of tracks and their
channels. So the protected file is the *original* file with only two kinds of change:

* **velocity changes**: the note-on velocity of every file note that lands on a given
  roll cell ``(roll_track, onset_step, pitch)`` is replaced (its note-off velocity is
  left alone). The velocity byte is patched where it lies, so the file keeps its
  length and every other byte;
* **added notes** (:class:`AddedNote`): note-on/note-off pairs inserted into one file
  track, see "Where added notes go" below.

Everything else keeps its meaning: read back with mido, the output has the same
messages (type, channel, data, absolute tick) in the same order, except the edited
note-on velocities, the added note-on/note-off messages (and, for a new part, one track
name and one program change), and an End of Track that moves later when an added note
ends after it. Tracks without added notes keep every byte; in a track with added notes
only the delta times around them change, plus a status byte written out where an
event used running status and now follows an added note. With no changes, the output
is the input, byte for byte.

Mapping file notes to roll cells
    Exactly as :func:`~harmonycloak.io.midi.load_midi` sees the file: our own event
    parser pairs note-ons with note-offs the way symusic does (per MIDI track, first in
    first out per channel and pitch, a note-on of velocity 0 is a note-off, a note-on
    without a note-off is dropped, the program is the channel's latest program change
    in the same MIDI track, 0 before any), splits each MIDI track into instrument
    tracks by channel and program, and rounds ticks to steps with load_midi's rule
    (nearest step, halves up). The result is checked against symusic's own reading of
    the file every time; symusic releases that pair differently (the program at the
    note-off, or no zero-length notes) are recognised by that check, and a file that
    still reads differently is refused rather than edited wrongly. After editing, the
    output is parsed again and must hold exactly the original notes (with the new
    velocities) plus the added ones, or nothing is written.

Ticks of added notes
    A step ``s`` is written at tick ``round(s * ticks_per_beat / steps_per_beat)``
    (halves up, :func:`~harmonycloak.io.midi.save_midi`'s rule), which load_midi rounds
    back to ``s``. When that would make the added note overlap a note of the same pitch
    on the same channel (in any MIDI track: a synthesizer shares the channel), which is
    common in played, unquantized music (a note ending at tick 1010 leaves step 25 =
    tick 1000 silent in the roll on a 40-tick grid), the added note starts at that
    note's end instead, or ends at its start, as long as the tick still rounds to the
    same step. Otherwise the track cannot take the note (MIDI cannot sound two notes of
    one pitch on one channel without one cutting the other) and the next one is tried.
    A file with fewer ticks per beat than ``steps_per_beat`` cannot hold every step;
    an added note on such a step is refused.

Where added notes go
    Into the first instrument track (in load_midi's order) that belongs to the roll
    track and can take the note: in ``"musegan"`` grouping the first MIDI track and
    channel whose program at the note's time maps to that MuseGAN track (drums: a
    channel-10 track), in ``"instrument"`` grouping that instrument track itself
    (same MIDI track, channel and program). If none can take it (no such track, or
    the same pitch sounds there on every candidate), in ``"musegan"`` grouping a
    new part is made: a new MIDI track appended after the last one, named e.g.
    ``"Bass (harmonycloak)"``, on the lowest MIDI channel no event of the file uses
    (drums: channel 10), with a program change at tick 0 to MuseGAN's program for that
    track (none for drums). In a type-0 file, which holds one track by definition, the
    new part's events go into that track instead. In ``"instrument"`` grouping a note
    that no track can take is an :class:`~harmonycloak.errors.InputError`.

Events at one tick keep the file's order; added note-offs come before them and added
note-ons after them, so an added note never cuts an existing one that ends or starts
at the same tick.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from symusic.core import ScoreTick

from harmonycloak.errors import InputError
from harmonycloak.io.files import atomic_write
from harmonycloak.io.midi import (
    _DRUM_CHANNEL,
    _MELODIC_CHANNELS,
    MUSEGAN_PROGRAMS,
    MUSEGAN_TRACKS,
    Grouping,
    _check_load_options,
    _is_int,
    _read_score,
    _steps_to_ticks,
    _ticks_to_steps,
    _vlq,
    musegan_track,
)

__all__ = ["AddedNote", "NoteCell", "edit_midi", "note_cells"]

_MAX_TICK = (1 << 28) - 1  # largest delta time a 4-byte variable-length quantity holds
_NEVER = 1 << 62  # "until the end": the end of a note-on that is never switched off

_CHANNEL_DATA_BYTES = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
# System common and real-time bytes do not belong in a Standard MIDI File; mido and
# symusic's parser both read them with these lengths and let them set running status.
_SYSTEM_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0,
                      0xFC: 0, 0xFE: 0}  # fmt: skip

# Order of events at one tick in an edited track: added note-offs, the file's own
# events (in file order), an added program change, added note-ons.
_BEFORE, _ORIGINAL, _PROGRAM, _AFTER = 0, 1, 2, 3


# ------------------------------------------------------------------------ public types


@dataclass(frozen=True)
class AddedNote:
    """A note to add, on the piano-roll grid.

    ``track`` is the roll track index of the grouping used (musegan: Bass 0, Drums 1,
    Guitar 2, Piano 3, Strings 4); the note sounds on steps ``start_step`` to
    ``end_step - 1``; ``pitch`` is the MIDI note number (60 = C4); ``velocity`` 1-127.
    Checked by :func:`edit_midi`, which names the file in its errors.
    """

    track: int
    start_step: int
    end_step: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class NoteCell:
    """One note of a MIDI file and the roll cell where load_midi puts its onset.

    ``file_track`` is the 0-based MIDI track (MTrk chunk) holding its note-on,
    ``channel`` 0-based (9 = channel 10, drums), ``program`` the 0-based GM program it
    plays with; ``roll_track`` its track in the roll (None: a musegan-grouping program
    that LPD-5 leaves out); ``onset_step`` the rounded start; ``pitch`` the MIDI note;
    ``velocity`` its note-on velocity (1-127); ``start_tick``/``end_tick`` its note-on
    and note-off ticks. A note outside load_midi's pitch range is listed too (the roll
    leaves it out).
    """

    file_track: int
    channel: int
    program: int
    roll_track: int | None
    onset_step: int
    pitch: int
    velocity: int
    start_tick: int
    end_tick: int


# ------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class _Event:
    """One event of a track: absolute ``tick``; byte offsets of its delta time
    (``start``), of its status or first data byte (``body``) and one past its end;
    its effective ``status`` byte; ``running``: the file leaves the status byte out."""

    tick: int
    start: int
    body: int
    end: int
    status: int
    running: bool

    @property
    def data(self) -> int:
        """Offset of the first data byte (channel messages)."""
        return self.body if self.running else self.body + 1


@dataclass(frozen=True)
class _Track:
    """One MTrk chunk: its events up to and including the first End of Track (symusic
    reads no further), then what follows it: parsed ``tail`` events, or ``raw_tail``
    bytes when they do not parse. ``eot``: whether events[-1] is that End of Track."""

    chunk: int  # index into _Midi.chunks
    events: tuple[_Event, ...]
    eot: bool
    tail: tuple[_Event, ...]
    raw_tail: bytes


@dataclass(frozen=True)
class _Chunk:
    kind: bytes
    start: int  # offset of the 4-byte chunk type
    end: int  # one past its payload


@dataclass(frozen=True)
class _Midi:
    data: bytes
    midi_format: int
    ticks_per_beat: int
    header_end: int
    chunks: tuple[_Chunk, ...]
    tracks: tuple[_Track, ...]  # the MTrk chunks the header declares, in file order
    chunks_end: int  # where trailing bytes (an incomplete chunk) start


class _Damaged(Exception):
    """A parse failure at a byte offset (turned into an InputError naming the file)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def _read_vlq(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= end:
            raise _Damaged(pos, "a length or delta time runs past the end of the track")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos
    raise _Damaged(pos, "a length or delta time is longer than 4 bytes")


def _scan(
    data: bytes, pos: int, end: int, tick: int, running: int | None, *, stop_at_eot: bool
) -> tuple[list[_Event], int]:
    """Events from ``pos`` up to ``end`` (or just past the first End of Track when
    ``stop_at_eot``); returns them and the offset where scanning stopped."""
    events: list[_Event] = []
    while pos < end:
        start = pos
        delta, pos = _read_vlq(data, pos, end)
        tick += delta
        if pos >= end:
            raise _Damaged(pos, "an event is cut off after its delta time")
        body = pos
        status = data[pos]
        is_running = status < 0x80
        if is_running:
            if running is None:
                raise _Damaged(pos, "a data byte comes where a status byte is needed")
            status = running
        else:
            pos += 1
        if status == 0xFF:  # meta: leaves running status alone (as mido and symusic)
            if pos >= end:
                raise _Damaged(pos, "a meta event is cut off")
            kind = data[pos]
            length, pos = _read_vlq(data, pos + 1, end)
            pos += length
        elif status in (0xF0, 0xF7):  # sysex: cancels running status
            kind = -1
            length, pos = _read_vlq(data, pos, end)
            pos += length
            running = None
        else:
            kind = -1
            if status >= 0xF0:
                if status not in _SYSTEM_DATA_BYTES:
                    raise _Damaged(body, f"undefined status byte 0x{status:02X}")
                count = _SYSTEM_DATA_BYTES[status]
            else:
                count = _CHANNEL_DATA_BYTES[status >> 4]
            first = body if is_running else body + 1
            pos = first + count
            if pos > end or any(b >= 0x80 for b in data[first:pos]):
                raise _Damaged(first, f"a message with status 0x{status:02X} lacks data bytes")
            running = status
        if pos > end:
            raise _Damaged(end, "an event runs past the end of the track")
        events.append(_Event(tick, start, body, pos, status, is_running))
        if stop_at_eot and kind == 0x2F:
            break
    return events, pos


def _parse_track(data: bytes, chunk_index: int, begin: int, end: int) -> _Track:
    events, pos = _scan(data, begin, end, 0, None, stop_at_eot=True)
    eot = bool(events) and data[events[-1].body] == 0xFF and data[events[-1].body + 1] == 0x2F
    tail: list[_Event] = []
    raw_tail = b""
    if pos < end:
        running = None
        for event in events:  # running status at the End of Track
            if event.status in (0xF0, 0xF7):
                running = None
            elif event.status != 0xFF:
                running = event.status
        try:
            tail, _ = _scan(data, pos, end, events[-1].tick, running, stop_at_eot=False)
        except _Damaged:  # symusic ignores what follows End of Track; keep its bytes
            tail, raw_tail = [], data[pos:end]
    return _Track(chunk_index, tuple(events), eot, tuple(tail), raw_tail)


def _parse_midi(path: Path, data: bytes) -> _Midi:
    """Chunks and track events of a file symusic has already accepted."""
    header_length = int.from_bytes(data[4:8], "big")
    midi_format = int.from_bytes(data[8:10], "big")
    declared = int.from_bytes(data[10:12], "big")
    ticks_per_beat = int.from_bytes(data[12:14], "big")
    header_end = 8 + header_length
    chunks: list[_Chunk] = []
    tracks: list[_Track] = []
    pos = header_end
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if pos + 8 + length > len(data):
            break
        kind = bytes(data[pos : pos + 4])
        chunks.append(_Chunk(kind, pos, pos + 8 + length))
        if kind == b"MTrk" and len(tracks) < declared:
            try:
                tracks.append(_parse_track(data, len(chunks) - 1, pos + 8, pos + 8 + length))
            except _Damaged as exc:
                raise InputError(
                    f"{path} is a damaged MIDI file (track {len(tracks) + 1}, byte "
                    f"{exc.offset}: {exc.reason}); export it again from your sequencer "
                    "or notation program"
                ) from exc
        pos += 8 + length
    return _Midi(data, midi_format, ticks_per_beat, header_end, tuple(chunks), tuple(tracks), pos)


# ------------------------------------------------------------------------ note pairing


@dataclass(frozen=True)
class _Semantics:
    """How a symusic release pairs notes: the program of a note is the channel's
    program at its note-off (else at its note-on); a note-off at the note-on's own
    tick ends it (zero length; else it is ignored and a later note-off ends it)."""

    program_at_off: bool
    zero_length: bool


# symusic 0.6's rules first; the others are how other releases pair (the source of a
# later one takes the program at the note-off; an earlier one drops zero-length notes)
_SEMANTICS = (
    _Semantics(program_at_off=False, zero_length=True),
    _Semantics(program_at_off=True, zero_length=True),
    _Semantics(program_at_off=False, zero_length=False),
    _Semantics(program_at_off=True, zero_length=False),
)


@dataclass(frozen=True)
class _Note:
    file_track: int
    channel: int
    program: int
    start: int  # tick
    end: int  # tick
    pitch: int
    velocity: int
    event: int  # index of the note-on in its track's events
    velocity_offset: int  # byte offset of the note-on velocity in the file


@dataclass
class _Pairing:
    notes: list[_Note]  # in file order (track, then note-on position)
    # (channel, pitch) -> (file track, first tick, last tick) of what an added note must
    # not overlap: notes, note-offs that end nothing (first == last), note-ons never
    # switched off (last _NEVER)
    blockers: dict[tuple[int, int], list[tuple[int, int, int]]]
    # (file track, channel) -> [(tick, program)] of its program changes, in file order
    programs: dict[tuple[int, int], list[tuple[int, int]]]


def _pair(midi: _Midi, semantics: _Semantics) -> _Pairing:
    data = midi.data
    notes: list[_Note] = []
    blockers: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    programs: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for index, track in enumerate(midi.tracks):
        program = [0] * 16
        queues: dict[tuple[int, int], deque[tuple[int, int, int, int, int]]] = defaultdict(deque)
        for position, event in enumerate(track.events):
            kind = event.status & 0xF0
            if kind == 0x90 or kind == 0x80:
                channel = event.status & 0x0F
                first = event.data
                pitch, velocity = data[first], data[first + 1]
                if kind == 0x90 and velocity > 0:
                    queues[channel, pitch].append(
                        (event.tick, velocity, position, program[channel], first + 1)
                    )
                    continue
                queue = queues.get((channel, pitch))
                ends = queue and (
                    event.tick > queue[0][0]
                    or (semantics.zero_length and event.tick == queue[0][0])
                )
                if ends:
                    start, velocity, on_position, on_program, offset = queue.popleft()
                    played = program[channel] if semantics.program_at_off else on_program
                    notes.append(
                        _Note(index, channel, played, start, event.tick, pitch, velocity,
                              on_position, offset)  # fmt: skip
                    )
                    blockers[channel, pitch].append((index, start, event.tick))
                else:
                    blockers[channel, pitch].append((index, event.tick, event.tick))
            elif kind == 0xC0:
                channel = event.status & 0x0F
                program[channel] = data[event.data]
                programs[index, channel].append((event.tick, program[channel]))
        for (channel, pitch), queue in queues.items():
            for start, *_ in queue:
                blockers[channel, pitch].append((index, start, _NEVER))
    notes.sort(key=lambda n: (n.file_track, n.event))
    return _Pairing(notes, dict(blockers), dict(programs))


def _instrument_keys(notes: Sequence[_Note]) -> list[tuple[int, int, int]]:
    """symusic's instrument tracks that hold notes, in its order: MIDI track, then
    channel, then program."""
    return sorted({(n.file_track, n.channel, n.program) for n in notes})


def _note_counter(notes: Sequence[_Note]) -> dict[tuple[int, int, int], Counter]:
    by_key: dict[tuple[int, int, int], Counter] = defaultdict(Counter)
    for n in notes:
        key = (n.file_track, n.channel, n.program)
        by_key[key][n.start, n.end - n.start, n.pitch, n.velocity] += 1
    return dict(by_key)


def _agrees_with_symusic(notes: Sequence[_Note], score: ScoreTick) -> bool:
    """Whether our pairing gives symusic's instrument tracks (those with notes)."""
    theirs = [t for t in score.tracks if t.note_num() > 0]
    keys = _instrument_keys(notes)
    if len(theirs) != len(keys):
        return False
    ours = _note_counter(notes)
    for key, track in zip(keys, theirs):
        _, channel, program = key
        if int(track.program) != program or bool(track.is_drum) != (channel == _DRUM_CHANNEL):
            return False
        arrays = track.notes.numpy()
        counted = Counter(
            zip(
                arrays["time"].tolist(),
                arrays["duration"].tolist(),
                arrays["pitch"].tolist(),
                arrays["velocity"].tolist(),
            )
        )
        if counted != ours[key]:
            return False
    return True


# ------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class _Analysis:
    """A parsed source file, its notes as load_midi pairs them, and the options."""

    path: Path
    midi: _Midi
    semantics: _Semantics
    pairing: _Pairing
    # (MIDI track, channel, program) of each instrument-grouping roll track, in order
    keys: tuple[tuple[int, int, int], ...]
    grouping: str
    steps_per_beat: int

    @property
    def ticks_per_beat(self) -> int:
        return self.midi.ticks_per_beat

    @property
    def roll_tracks(self) -> int:
        return len(MUSEGAN_TRACKS) if self.grouping == "musegan" else len(self.keys)

    def roll_track(self, file_track: int, channel: int, program: int) -> int | None:
        if self.grouping == "musegan":
            return musegan_track(program, channel == _DRUM_CHANNEL)
        return self._key_index[file_track, channel, program]

    @functools.cached_property
    def _key_index(self) -> dict[tuple[int, int, int], int]:
        return {key: index for index, key in enumerate(self.keys)}

    def step(self, tick: int) -> int:
        return int(_ticks_to_steps(tick, self.ticks_per_beat, self.steps_per_beat))


def _analyse(path: Path, grouping: str, steps_per_beat: int) -> _Analysis:
    """Read ``path``, parse its events and pair its notes exactly as load_midi does."""
    _check_load_options(path, grouping, steps_per_beat, 24, 84)
    score = _read_score(path)  # every unreadable file becomes an InputError here
    if int(score.tpq) <= 0:
        raise InputError(
            f"{path} is a damaged MIDI file (0 ticks per quarter note); "
            "export it again from your sequencer or notation program"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror}); check its permissions") from exc
    midi = _parse_midi(path, data)
    for semantics in _SEMANTICS:
        pairing = _pair(midi, semantics)
        if _agrees_with_symusic(pairing.notes, score):
            keys = tuple(_instrument_keys(pairing.notes))
            return _Analysis(path, midi, semantics, pairing, keys, grouping, steps_per_beat)
    raise InputError(
        f"{path}: its notes read differently in symusic and in harmonycloak's MIDI editor, "
        "so it cannot be edited safely; export it again from your sequencer or notation "
        "program (and please report the file)"
    )


def _cells(analysis: _Analysis) -> list[NoteCell]:
    cells = []
    for n in analysis.pairing.notes:
        cells.append(
            NoteCell(
                file_track=n.file_track,
                channel=n.channel,
                program=n.program,
                roll_track=analysis.roll_track(n.file_track, n.channel, n.program),
                onset_step=analysis.step(n.start),
                pitch=n.pitch,
                velocity=n.velocity,
                start_tick=n.start,
                end_tick=n.end,
            )
        )
    return cells


def note_cells(
    path: str | os.PathLike[str], *, grouping: Grouping = "musegan", steps_per_beat: int = 12
) -> list[NoteCell]:
    """Every note of a MIDI file with the roll cell of its onset, in file order.

    The notes are those :func:`~harmonycloak.io.midi.load_midi` reads (note-ons never
    switched off are not notes), grouped and rounded exactly as it does with the same
    ``grouping`` and ``steps_per_beat``, so ``(roll_track, onset_step, pitch)`` is the
    onset cell in its roll (pitch index ``pitch - lowest_pitch``). Several notes can
    share one cell (overlapping tracks in musegan grouping, notes rounded together).
    File order: MIDI track by MIDI track, notes by their note-on position.

    Raises:
        InputError: the file is missing, not MIDI or damaged; an option is out of range.
    """
    path = Path(path)
    return _cells(_analyse(path, grouping, steps_per_beat))


# ------------------------------------------------------------------------ validation


def _check_changes(
    analysis: _Analysis, velocity_changes: Mapping[tuple[int, int, int], int]
) -> dict[int, int]:
    """Byte offset -> new velocity for each change; errors name the file."""
    path = analysis.path
    index: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for cell, note in zip(_cells(analysis), analysis.pairing.notes):
        if cell.roll_track is not None:
            index[cell.roll_track, cell.onset_step, cell.pitch].append(note.velocity_offset)
    patches: dict[int, int] = {}
    missing = []
    for key, velocity in velocity_changes.items():
        if not (isinstance(key, tuple) and len(key) == 3 and all(_is_int(k) for k in key)):
            raise InputError(
                f"{path}: velocity change key {key!r} is not (roll_track, onset_step, pitch) "
                "in whole numbers"
            )
        track, _, _ = key
        _check_track(analysis, int(track), "velocity change")
        _check_velocity(path, velocity, f"velocity change at {key}")
        offsets = index.get((int(key[0]), int(key[1]), int(key[2])))
        if not offsets:
            missing.append(key)
            continue
        for offset in offsets:
            patches[offset] = int(velocity)
    if missing:
        shown = ", ".join(str(tuple(int(k) for k in key)) for key in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(
            f"{path}: no note starts at (roll_track, onset_step, pitch) {shown}{more} "
            f"({analysis.grouping} grouping, {analysis.steps_per_beat} steps per beat); "
            "velocity changes must name note onsets, see note_cells()"
        )
    return patches


def _check_track(analysis: _Analysis, track: int, what: str) -> None:
    if not 0 <= track < analysis.roll_tracks:
        raise InputError(
            f"{analysis.path}: {what} names roll track {track}, but the "
            f"{analysis.grouping} grouping of this file has tracks 0 to "
            f"{analysis.roll_tracks - 1}"
        )


def _check_velocity(path: Path, velocity: object, what: str) -> None:
    if not (_is_int(velocity) and 1 <= velocity <= 127):  # type: ignore[operator]
        raise InputError(
            f"{path}: {what}: velocity {velocity!r} is not a MIDI velocity; use 1 to 127"
        )


def _check_added(analysis: _Analysis, note: AddedNote) -> None:
    path = analysis.path
    fields = (note.track, note.start_step, note.end_step, note.pitch, note.velocity)
    if not all(_is_int(v) for v in fields):
        raise InputError(f"{path}: added note {note} has a value that is not a whole number")
    _check_track(analysis, int(note.track), f"added note {note}")
    if note.start_step < 0 or note.end_step <= note.start_step:
        raise InputError(
            f"{path}: added note {note} ends at step {note.end_step}, not after its start "
            f"{note.start_step}; give 0 <= start_step < end_step"
        )
    if not 0 <= note.pitch <= 127:
        raise InputError(
            f"{path}: added note {note}: pitch {note.pitch} is not a MIDI note; use 0 to 127"
        )
    _check_velocity(path, note.velocity, f"added note {note}")


# ------------------------------------------------------------------------ placement


@dataclass(frozen=True)
class _Target:
    """Where added notes go: a MIDI track and channel; ``new_program`` is set for a new
    part (a program change goes first; None: drums, none written)."""

    file_track: int
    channel: int
    new: bool
    new_program: int | None = None
    roll_track: int | None = None  # of a new part: names its track


@dataclass(frozen=True)
class _Placed:
    target: _Target
    start: int  # tick
    end: int
    pitch: int
    velocity: int
    program: int  # the program symusic will give it


def _window(analysis: _Analysis, step: int, note: AddedNote) -> tuple[int, int, int]:
    """Nominal tick of ``step`` and the ticks [lo, hi] that load_midi rounds to it."""
    tpq, spb = analysis.ticks_per_beat, analysis.steps_per_beat
    nominal = int(_steps_to_ticks(step, tpq, spb))
    if analysis.step(nominal) != step:
        raise InputError(
            f"{analysis.path}: added note {note}: step {step} cannot be written exactly, the "
            f"file has {tpq} ticks per beat, fewer than {spb} steps per beat; use at most "
            f"{tpq} steps per beat for this file"
        )
    if nominal > _MAX_TICK:
        raise InputError(
            f"{analysis.path}: added note {note} lies at tick {nominal}, beyond what a MIDI "
            f"file can hold ({_MAX_TICK}); add notes within the piece"
        )
    lo = max(0, -((-(2 * step - 1) * tpq) // (2 * spb)))
    hi = -((-(2 * step + 1) * tpq) // (2 * spb)) - 1
    return nominal, lo, hi


def _fit(
    start: tuple[int, int, int], end: tuple[int, int, int], blockers: Sequence[tuple[int, int]]
) -> tuple[int, int] | None:
    """Ticks (s, e) nearest the nominal ones, inside the windows, that overlap no
    blocker span (touching is fine: at one tick added offs go first, added ons last)."""
    (s0, s_lo, s_hi), (e0, e_lo, e_hi) = start, end
    near = [(a, b) for a, b in blockers if a < e_hi and b > s_lo]
    s_options = sorted({s0} | {b for _, b in near if s_lo <= b <= s_hi}, key=lambda t: abs(t - s0))
    e_options = sorted({e0} | {a for a, _ in near if e_lo <= a <= e_hi}, key=lambda t: abs(t - e0))
    best: tuple[int, int, int] | None = None
    for s in s_options:
        for e in e_options:
            if s < e and all(e <= a or b <= s for a, b in near):
                cost = abs(s - s0) + abs(e - e0)
                if best is None or cost < best[0]:
                    best = (cost, s, e)
    return None if best is None else (best[1], best[2])


def _program_at(analysis: _Analysis, file_track: int, channel: int, start: int, end: int) -> int:
    """The program symusic gives a note added at ticks [start, end] on this channel."""
    changes = analysis.pairing.programs.get((file_track, channel), [])
    ticks = [t for t, _ in changes]
    if analysis.semantics.program_at_off:  # added offs come before the file's events
        count = bisect.bisect_left(ticks, end)
    else:  # added ons come after the file's events
        count = bisect.bisect_right(ticks, start)
    return changes[count - 1][1] if count else 0


def _used_channels(midi: _Midi) -> set[int]:
    return {
        e.status & 0x0F
        for track in midi.tracks
        for e in (*track.events, *track.tail)
        if 0x80 <= e.status < 0xF0
    }


def _place(analysis: _Analysis, added_notes: Sequence[AddedNote]) -> list[_Placed]:
    """Choose a MIDI track, channel and exact ticks for every added note.

    First choice: a place where the pitch does not sound on that channel in any MIDI
    track (a synthesizer shares the channel across tracks), an existing track before a
    new part. Files that put several parts on one channel (notation programs often do)
    may leave none; then a place where only other MIDI tracks sound the pitch there,
    which load_midi reads correctly and the file itself already does with its unisons.
    """
    placed: list[_Placed] = []
    # (channel, pitch) -> (file track, start, end) of the notes added so far
    taken: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    new_targets: dict[int, _Target] = {}  # roll track -> its new part, once used
    used = _used_channels(analysis.midi)
    for note in added_notes:
        start = _window(analysis, int(note.start_step), note)
        end = _window(analysis, int(note.end_step), note)
        track, pitch = int(note.track), int(note.pitch)
        result = None
        for whole_channel in (True, False):
            options = list(_candidates(analysis, track))
            if analysis.grouping == "musegan":
                new = new_targets.get(track) or _new_target(analysis, track, used, new_targets)
                if new is not None:
                    options.append((new, lambda program: True))
            for target, accepts in options:
                spans = [
                    (a, b)
                    for f, a, b in (
                        *analysis.pairing.blockers.get((target.channel, pitch), ()),
                        *taken[target.channel, pitch],
                    )
                    if whole_channel or f == target.file_track
                ]
                ticks = _fit(start, end, spans)
                if ticks is None:
                    continue
                program = _program_for(analysis, target, *ticks)
                if accepts(program):
                    result = (target, ticks, program)
                    break
            if result is not None:
                break
        if result is None:
            no_channel = analysis.grouping == "musegan" and track not in new_targets and (
                _new_target(analysis, track, used, new_targets) is None
            )
            raise InputError(
                f"{analysis.path}: added note {note} cannot be placed: on every MIDI track "
                f"of roll track {track}, MIDI note {pitch} already sounds then (a note of the "
                "file or another added note) or another instrument plays"
                + (", and no MIDI channel is free for a new part" if no_channel else "")
                + "; MIDI cannot hold two notes of one pitch on one channel and track; "
                "leave this note out or move it"
            )
        target, (s, e), program = result
        if target.new:
            new_targets[track] = target
            used.add(target.channel)
        taken[target.channel, pitch].append((target.file_track, s, e))
        placed.append(_Placed(target, s, e, pitch, int(note.velocity), program))
    return placed


def _program_for(analysis: _Analysis, target: _Target, start: int, end: int) -> int:
    """The program symusic will give a note added at ticks [start, end] to ``target``."""
    if target.new_program is not None:
        return target.new_program
    if target.new and target.file_track >= len(analysis.midi.tracks):
        return 0  # a new drum track: symusic starts every channel at program 0
    return _program_at(analysis, target.file_track, target.channel, start, end)


def _candidates(
    analysis: _Analysis, track: int
) -> Iterator[tuple[_Target, Callable[[int], bool]]]:
    """(target, accepts(program)) for the existing instrument tracks of a roll track, in
    load_midi's order; a MIDI track and channel come once."""
    if analysis.grouping == "instrument":
        file_track, channel, program = analysis.keys[track]
        yield _Target(file_track, channel, False), (lambda p: p == program)
        return
    seen = set()
    for file_track, channel, program in analysis.keys:
        drum = channel == _DRUM_CHANNEL
        if (file_track, channel) in seen or musegan_track(program, drum) != track:
            continue
        seen.add((file_track, channel))
        yield _Target(file_track, channel, False), (
            lambda p, drum=drum: musegan_track(p, drum) == track
        )


def _new_target(
    analysis: _Analysis, track: int, used: set[int], earlier: Mapping[int, _Target]
) -> _Target | None:
    """A new part for musegan track ``track``, after the ``earlier`` ones: a new MIDI
    track after the last, or in a type-0 file its one track, on a free channel (None
    when all 15 melodic channels are taken)."""
    midi = analysis.midi
    if midi.midi_format == 0 and midi.tracks:
        file_track = 0
    else:
        file_track = len(midi.tracks) + sum(
            t.file_track >= len(midi.tracks) for t in earlier.values()
        )
    if MUSEGAN_TRACKS[track] == "Drums":
        return _Target(file_track, _DRUM_CHANNEL, True, None, track)
    free = [c for c in _MELODIC_CHANNELS if c not in used]
    if not free:
        return None
    return _Target(file_track, free[0], True, MUSEGAN_PROGRAMS[track], track)


# ------------------------------------------------------------------------ writing


def _note_bytes(placed: _Placed) -> list[tuple[int, int, bytes]]:
    channel = placed.target.channel
    return [
        (placed.start, _AFTER, bytes([0x90 | channel, placed.pitch, placed.velocity])),
        (placed.end, _BEFORE, bytes([0x80 | channel, placed.pitch, 0])),
    ]


def _track_body(
    data: bytes, track: _Track | None, inserts: list[tuple[int, int, bytes]]
) -> bytes:
    """A track's events with ``inserts`` (tick, order, status+data) merged in."""
    events = track.events if track else ()
    eot = events[-1] if track and track.eot else None
    body_events = events[:-1] if eot else events
    merged: list[tuple[int, int, int, _Event | bytes]] = [
        (e.tick, _ORIGINAL, i, e) for i, e in enumerate(body_events)
    ]
    merged += [(tick, order, i, raw) for i, (tick, order, raw) in enumerate(inserts)]
    merged.sort(key=lambda m: (m[0], m[1], m[2]))
    out = bytearray()
    now = 0
    running: int | None = None

    def emit(tick: int, item: _Event | bytes) -> None:
        nonlocal now, running
        if isinstance(item, _Event):
            raw = data[item.body : item.end]
            if item.running and running != item.status:
                raw = bytes([item.status]) + raw  # its running status no longer holds
            status = item.status
        else:
            raw, status = item, item[0]
        out.extend(_vlq(tick - now))
        out.extend(raw)
        now = tick
        if status in (0xF0, 0xF7):
            running = None
        elif status != 0xFF:
            running = status

    for tick, _, _, item in merged:
        emit(tick, item)
    if track is None:
        out.extend(_vlq(0) + b"\xff\x2f\x00")
        return bytes(out)
    if eot is not None:
        shift = max(now - eot.tick, 0)  # End of Track moves after the last added note
        emit(eot.tick + shift, eot)
        for event in track.tail:
            emit(event.tick + shift, event)
        out.extend(track.raw_tail)
    return bytes(out)


def _render(
    analysis: _Analysis, patches: Mapping[int, int], placed: Sequence[_Placed]
) -> bytes:
    """The edited file: velocity bytes patched in place, added notes merged into their
    tracks, one new track per new part right after the last declared track."""
    midi = analysis.midi
    buffer = bytearray(midi.data)
    for offset, velocity in patches.items():
        buffer[offset] = velocity
    data = bytes(buffer)
    inserts: dict[int, list[tuple[int, int, bytes]]] = defaultdict(list)
    parts: dict[_Target, None] = {}  # new parts, in order of first use
    for p in placed:
        inserts[p.target.file_track] += _note_bytes(p)
        if p.target.new:
            parts[p.target] = None
    new_tracks: dict[int, _Target] = {}
    for part in parts:
        if part.new_program is not None:  # sorts before the notes at tick 0
            program_change = bytes([0xC0 | part.channel, part.new_program])
            inserts[part.file_track].append((0, _PROGRAM, program_change))
        if part.file_track >= len(midi.tracks):
            new_tracks[part.file_track] = part
    out = bytearray(data[: midi.header_end])
    if new_tracks:
        count = len(midi.tracks) + len(new_tracks)
        if count > 0xFFFF:
            raise InputError(
                f"{analysis.path}: a new track would pass the MIDI limit of 65535 tracks"
            )
        out[10:12] = count.to_bytes(2, "big")
    extra = b"".join(
        _chunk_bytes(_new_track_body(part, inserts[index]))
        for index, part in sorted(new_tracks.items())
    )
    if not midi.tracks:
        out += extra
    track_of_chunk = {t.chunk: i for i, t in enumerate(midi.tracks)}
    for position, chunk in enumerate(midi.chunks):
        index = track_of_chunk.get(position)
        if index is not None and inserts.get(index):
            out += _chunk_bytes(_track_body(data, midi.tracks[index], inserts[index]))
        else:
            out += data[chunk.start : chunk.end]
        if midi.tracks and position == midi.tracks[-1].chunk:
            out += extra
    out += data[midi.chunks_end :]
    return bytes(out)


def _new_track_body(part: _Target, inserts: list[tuple[int, int, bytes]]) -> bytes:
    name = f"{MUSEGAN_TRACKS[part.roll_track or 0]} (harmonycloak)".encode()
    return b"\x00\xff\x03" + _vlq(len(name)) + name + _track_body(b"", None, inserts)


def _chunk_bytes(body: bytes) -> bytes:
    return b"MTrk" + len(body).to_bytes(4, "big") + body


def _verify(
    analysis: _Analysis, output: bytes, patches: Mapping[int, int], placed: Sequence[_Placed]
) -> None:
    """The output must hold the original notes (new velocities) plus the added ones,
    as both our pairing and symusic read it; otherwise nothing is written."""
    expected: dict[tuple[int, int, int], Counter] = defaultdict(Counter)
    for n in analysis.pairing.notes:
        velocity = patches.get(n.velocity_offset, n.velocity)
        key = (n.file_track, n.channel, n.program)
        expected[key][n.start, n.end - n.start, n.pitch, velocity] += 1
    for p in placed:
        key = (p.target.file_track, p.target.channel, p.program)
        expected[key][p.start, p.end - p.start, p.pitch, p.velocity] += 1
    pairing = _pair(_parse_midi(analysis.path, output), analysis.semantics)
    try:
        score = ScoreTick.from_midi(output)
    except Exception as exc:  # any parser failure means: do not write
        raise InputError(
            f"{analysis.path}: the edited file would not read back ({exc}); nothing was "
            "written; please report this file"
        ) from exc
    if _note_counter(pairing.notes) != expected or not _agrees_with_symusic(pairing.notes, score):
        raise InputError(
            f"{analysis.path}: the added notes cannot be merged without changing the file's "
            "own notes (it holds note-ons or note-offs that do not pair up); nothing was "
            "written; please report this file"
        )


def edit_midi(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    velocity_changes: Mapping[tuple[int, int, int], int],
    added_notes: Sequence[AddedNote],
    grouping: Grouping = "musegan",
    steps_per_beat: int = 12,
    force: bool = False,
) -> Path:
    """Write ``src`` to ``dst`` with new note velocities and added notes; nothing else
    changes (see the module docstring). Returns ``dst``.

    Args:
        src: the musician's MIDI file; never modified.
        dst: the output path; written atomically.
        velocity_changes: ``{(roll_track, onset_step, pitch): velocity}``, velocity
            1-127, pitch a MIDI note number: every file note whose onset load_midi puts
            in that cell (same ``grouping`` and ``steps_per_beat``) gets that note-on
            velocity. :func:`note_cells` lists the cells.
        added_notes: notes to insert (see "Where added notes go" in the module docs).
        grouping: ``"musegan"`` or ``"instrument"``, as in load_midi.
        steps_per_beat: steps per quarter note, as in load_midi.
        force: replace an existing ``dst``.

    Raises:
        InputError: ``src`` is missing, not MIDI or damaged; a velocity is outside
            1-127; an added note ends at or before its start, has a pitch outside
            0-127 or a step the file's resolution cannot hold; a roll track index is out
            of range; an added note has no place (see the module docs); ``dst`` exists
            and ``force`` is false, or ``dst`` is ``src``.
        ValueError: a velocity change names a cell where no note starts (a bug in the
            caller: it must address note onsets, not held cells).
    """
    src = Path(src)
    added_notes = tuple(added_notes)
    analysis = _analyse(src, grouping, steps_per_beat)
    patches = _check_changes(analysis, velocity_changes)
    for note in added_notes:
        _check_added(analysis, note)
    placed = _place(analysis, added_notes)
    if not patches and not placed:
        output = analysis.midi.data
    else:
        output = _render(analysis, patches, placed)
        _verify(analysis, output, patches, placed)

    def writer(tmp_path: Path) -> None:
        Path(tmp_path).write_bytes(output)

    return atomic_write(dst, writer, force=force, inputs=[src])
