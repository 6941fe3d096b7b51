"""Editing a musician's MIDI file: only the named velocities and the added notes change.

Files are built here with mido: unquantized timings, controllers, pitch bends, sysex,
lyrics, markers, a key signature, a tempo change, two piano tracks (one MuseGAN group),
drums on channel 10 and a strings track written with running status.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from harmonycloak.errors import InputError
from harmonycloak.io.midi import load_midi
from harmonycloak.io.midi_edit import AddedNote, NoteCell, edit_midi, note_cells

TPQ = 480
TICKS_PER_STEP = TPQ // 12  # 40
PIANO, DRUMS, BASS, STRINGS = 3, 1, 0, 4  # musegan track indices
M, Meta = mido.Message, mido.MetaMessage


def _write(path: Path, tracks: list[list[tuple[int, mido.Message]]], midi_type: int = 1) -> Path:
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=TPQ)
    for events in tracks:
        track, now = mido.MidiTrack(), 0
        for tick, message in events:  # already in file order
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(path)
    return path


def _notes(channel: int, notes: list[tuple[int, int, int, int]], *, vel0_off: bool = False):
    """(tick, message) pairs for notes (start, duration, pitch, velocity)."""
    events = []
    for start, duration, pitch, velocity in notes:
        events.append((start, 1, M("note_on", channel=channel, note=pitch, velocity=velocity)))
        off = (M("note_on", channel=channel, note=pitch, velocity=0) if vel0_off
               else M("note_off", channel=channel, note=pitch, velocity=64))  # fmt: skip
        events.append((start + duration, 0, off))
    return events


def song_tracks() -> list[list[tuple[int, mido.Message]]]:
    conductor = [
        (0, Meta("track_name", name="Song")),
        (0, Meta("set_tempo", tempo=500_000)),
        (0, Meta("time_signature", numerator=4, denominator=4)),
        (0, Meta("key_signature", key="D")),
        (0, Meta("marker", text="Verse")),
        (1927, Meta("set_tempo", tempo=400_000)),
        (3840, Meta("marker", text="Chorus")),
    ]
    piano_l = [(0, 0, Meta("track_name", name="Piano L")),
               (0, 0, M("program_change", channel=0, program=0)),
               (5, 0, M("control_change", channel=0, control=64, value=127)),
               (7, 0, Meta("lyrics", text="la")),
               (300, 0, M("pitchwheel", channel=0, pitch=1200)),
               (900, 0, M("pitchwheel", channel=0, pitch=0)),
               (1900, 0, M("control_change", channel=0, control=64, value=0))]  # fmt: skip
    # 963 and Piano R's 958 both round to step 24: one roll cell (Piano, 24, C4)
    piano_l += _notes(0, [(7, 233, 60, 80), (487, 523, 64, 70), (963, 400, 60, 90),
                          (2410, 300, 65, 33)])  # fmt: skip
    piano_r = [(0, 0, Meta("track_name", name="Piano R")),
               (0, 0, M("program_change", channel=1, program=2))]  # fmt: skip
    piano_r += _notes(1, [(958, 300, 60, 50), (1447, 200, 67, 60), (1920, 480, 48, 100)])
    kit = [(0, 0, Meta("track_name", name="Kit")),
           (0, 0, M("control_change", channel=9, control=7, value=100))]  # fmt: skip
    kit += _notes(9, [(0, 60, 36, 100), (481, 60, 38, 90), (962, 60, 42, 70), (1443, 30, 36, 95)])
    strings = [(0, 0, Meta("track_name", name="Strings")),
               (0, 0, M("sysex", data=[0x7E, 0x7F, 0x09, 0x01])),
               (0, 0, M("program_change", channel=2, program=48))]  # fmt: skip
    # note-offs as velocity-0 note-ons: mido writes them with running status
    strings += _notes(2, [(13, 1000, 72, 40), (1013, 900, 74, 45), (1913, 700, 76, 50)],
                      vel0_off=True)  # fmt: skip
    tracks = [[(t, m) for t, m in conductor]]
    for events in (piano_l, piano_r, kit, strings):
        tracks.append([(t, m) for t, _, m in sorted(events, key=lambda e: (e[0], e[1]))])
    return tracks


@pytest.fixture
def song(tmp_path: Path) -> Path:
    return _write(tmp_path / "song.mid", song_tracks())


def messages(path_or_bytes) -> list[list[tuple[int, object]]]:
    """Per track: (absolute tick, message without delta time), in file order."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        midi = mido.MidiFile(file=io.BytesIO(path_or_bytes))
    else:
        midi = mido.MidiFile(path_or_bytes)
    out = []
    for track in midi.tracks:
        now, events = 0, []
        for message in track:
            now += message.time
            events.append((now, message.copy(time=0)))
        out.append(events)
    return out


def without(track: list, removed: list) -> list:
    """``track`` with each of ``removed`` taken out once (asserting it was there)."""
    rest = list(track)
    for item in removed:
        rest.remove(item)
    return rest


def levels(velocities: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(velocities, dtype=np.float64) * 127 + 0.5).astype(int)


# ------------------------------------------------------------------------- note_cells


@pytest.mark.parametrize("grouping", ["musegan", "instrument"])
def test_note_cells_are_the_onsets_load_midi_sees(song: Path, grouping: str) -> None:
    roll = load_midi(song, grouping=grouping)
    cells = note_cells(song, grouping=grouping)
    assert all(isinstance(c, NoteCell) for c in cells)
    assert len(cells) == 4 + 3 + 4 + 3
    level = levels(roll.velocities)
    covered = np.zeros(roll.onsets.shape, dtype=bool)
    for c in cells:
        index = (c.roll_track, c.onset_step, c.pitch - roll.lowest_pitch)
        assert roll.onsets[index]
        assert level[index] >= c.velocity
        covered[index] = True
    np.testing.assert_array_equal(covered, roll.onsets & (roll.velocities > 0))
    merged = [c for c in cells if (c.onset_step, c.pitch) == (24, 60) and c.channel in (0, 1)]
    found = [(c.file_track, c.start_tick, c.velocity) for c in merged]
    assert found == [(1, 963, 90), (2, 958, 50)]
    if grouping == "musegan":
        assert {c.roll_track for c in merged} == {PIANO}
        assert {c.roll_track for c in cells if c.channel == 9} == {DRUMS}
    else:
        assert [c.roll_track for c in merged] == [0, 1]  # Piano L, Piano R
    # file order: MIDI track by MIDI track, notes by note-on position
    assert [c.file_track for c in cells] == sorted(c.file_track for c in cells)
    assert [c.start_tick for c in cells if c.file_track == 1] == [7, 487, 963, 2410]


# ------------------------------------------------------------------------- (1) identity


@pytest.mark.parametrize("grouping", ["musegan", "instrument"])
def test_no_changes_give_the_same_file(song: Path, tmp_path: Path, grouping: str) -> None:
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes={}, added_notes=[],
                    grouping=grouping)  # fmt: skip
    assert out == tmp_path / "out.mid"
    assert out.read_bytes() == song.read_bytes()
    assert messages(out) == messages(song)


# ------------------------------------------------------------------------- (2) velocities


def test_velocity_change_hits_every_note_of_the_cell_and_nothing_else(
    song: Path, tmp_path: Path
) -> None:
    before = song.read_bytes()
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes={(PIANO, 24, 60): 120},
                    added_notes=[])  # fmt: skip
    after = out.read_bytes()
    assert len(after) == len(before)
    assert sum(a != b for a, b in zip(before, after)) == 2  # two velocity bytes
    old, new = messages(song), messages(out)
    for index, (old_track, new_track) in enumerate(zip(old, new, strict=True)):
        for (t0, m0), (t1, m1) in zip(old_track, new_track, strict=True):
            assert t0 == t1
            hit = m0.type == "note_on" and m0.note == 60 and (index, t0) in {(1, 963), (2, 958)}
            assert m1 == (m0.copy(velocity=120) if hit else m0), (index, t0, m0)
    cells = [c for c in note_cells(out) if (c.roll_track, c.onset_step, c.pitch) == (PIANO, 24, 60)]
    assert [c.velocity for c in cells] == [120, 120]


def test_velocity_change_in_instrument_grouping_is_per_instrument(
    song: Path, tmp_path: Path
) -> None:
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes={(1, 24, 60): 7},
                    added_notes=[], grouping="instrument")  # fmt: skip
    changed = [(c.file_track, c.start_tick, c.velocity) for c in note_cells(out)
               if (c.onset_step, c.pitch) == (24, 60) and c.channel in (0, 1)]  # fmt: skip
    assert changed == [(1, 963, 90), (2, 958, 7)]


# ------------------------------------------------------------------------- (3) added notes


ADDED = [
    AddedNote(PIANO, 30, 36, 62, 20),  # -> Piano L (first piano track), MIDI channel 1
    AddedNote(DRUMS, 10, 12, 40, 15),  # -> Kit, channel 10
    AddedNote(BASS, 6, 18, 40, 25),  # no bass in the file: a new track
    AddedNote(STRINGS, 30, 40, 80, 10),  # between running-status events of Strings
    AddedNote(STRINGS, 100, 104, 81, 11),  # past the end: End of Track moves
]


def test_added_notes_land_in_the_right_tracks_ticks_and_channels(
    song: Path, tmp_path: Path
) -> None:
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes={}, added_notes=ADDED)
    old, new = messages(song), messages(out)
    assert len(new) == len(old) + 1

    def pair(channel: int, note: AddedNote) -> list:
        on = M("note_on", channel=channel, note=note.pitch, velocity=note.velocity)
        off = M("note_off", channel=channel, note=note.pitch, velocity=0)
        return [(note.start_step * TICKS_PER_STEP, on), (note.end_step * TICKS_PER_STEP, off)]

    assert without(new[1], pair(0, ADDED[0])) == old[1]
    assert without(new[3], pair(9, ADDED[1])) == old[3]
    strings = without(new[4], pair(2, ADDED[3]) + pair(2, ADDED[4]))
    end_of_track = strings.pop()
    assert end_of_track == (104 * 40, Meta("end_of_track"))
    assert strings == old[4][:-1]
    assert old[4][-1][1] == Meta("end_of_track") and old[4][-1][0] < 104 * 40
    assert new[0] == old[0] and new[2] == old[2]
    # the new part: free channel 4 (0-based 3), MuseGAN's bass program 33
    assert new[5] == [
        (0, Meta("track_name", name="Bass (harmonycloak)")),
        (0, M("program_change", channel=3, program=33)),
        *pair(3, ADDED[2]),
        (18 * 40, Meta("end_of_track")),
    ]
    roll = load_midi(out)
    level = levels(roll.velocities)
    for note in ADDED:
        p = note.pitch - roll.lowest_pitch
        assert roll.onsets[note.track, note.start_step, p]
        assert (level[note.track, note.start_step : note.end_step, p] == note.velocity).all()
        assert level[note.track, note.end_step :, p][:1].sum() == 0
    assert roll.steps == 104


def test_added_note_moves_off_a_sounding_note_within_its_step(song: Path, tmp_path: Path) -> None:
    # Piano L holds E4 over ticks 487-1010: step 25 (tick 1000) is silent in the roll,
    # yet the note still sounds at tick 1000 on MIDI channel 1
    roll = load_midi(song)
    assert roll.velocities[PIANO, 25, 64 - 24] == 0
    note = AddedNote(PIANO, 25, 27, 64, 12)
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes={}, added_notes=[note])
    new = messages(out)
    added = [(1010, M("note_on", channel=0, note=64, velocity=12)),
             (1080, M("note_off", channel=0, note=64, velocity=0))]  # fmt: skip
    assert without(new[1], added) == messages(song)[1]
    cells = [c for c in note_cells(out) if c.pitch == 64]
    found = [(c.start_tick, c.end_tick, c.velocity) for c in cells]
    assert found == [(487, 1010, 70), (1010, 1080, 12)]
    assert load_midi(out).onsets[PIANO, 25, 64 - 24]


def test_added_note_goes_to_the_next_track_of_its_group_when_the_first_sounds_it(
    song: Path, tmp_path: Path
) -> None:
    # Piano L holds C4 over steps 0-5; Piano R is free there
    note = AddedNote(PIANO, 1, 3, 60, 9)
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes={}, added_notes=[note])
    new, old = messages(out), messages(song)
    assert new[1] == old[1]
    added = [(40, M("note_on", channel=1, note=60, velocity=9)),
             (120, M("note_off", channel=1, note=60, velocity=0))]  # fmt: skip
    assert without(new[2], added) == old[2]
    with pytest.raises(InputError, match=r"cannot be placed.*MIDI note 60"):
        edit_midi(song, tmp_path / "inst.mid", velocity_changes={}, grouping="instrument",
                  added_notes=[AddedNote(0, 1, 3, 60, 9)])  # fmt: skip
    assert not (tmp_path / "inst.mid").exists()


def test_added_note_follows_the_program_playing_at_its_time(tmp_path: Path) -> None:
    # MIDI channel 1 plays piano, then bass from tick 960: a bass note at step 30 goes
    # there, a piano note at step 30 needs a new part (on MIDI channel 2)
    events = [(0, M("program_change", channel=0, program=0))]
    events += [(t, m) for t, _, m in _notes(0, [(0, 480, 60, 80)])]
    events += [(960, M("program_change", channel=0, program=33))]
    events += [(t, m) for t, _, m in _notes(0, [(960, 480, 40, 80)])]
    src = _write(tmp_path / "switch.mid", [events])
    added = [AddedNote(BASS, 30, 32, 45, 5), AddedNote(PIANO, 30, 32, 72, 6)]
    out = edit_midi(src, tmp_path / "out.mid", velocity_changes={}, added_notes=added)
    new = messages(out)
    assert (1200, M("note_on", channel=0, note=45, velocity=5)) in new[0]
    assert (0, M("program_change", channel=1, program=0)) in new[1]
    assert (1200, M("note_on", channel=1, note=72, velocity=6)) in new[1]
    roll = load_midi(out)
    assert roll.onsets[BASS, 30, 45 - 24] and roll.onsets[PIANO, 30, 72 - 24]


def test_type_0_file_stays_one_track(tmp_path: Path) -> None:
    merged = sorted((e for track in song_tracks() for e in track), key=lambda e: e[0])
    src = _write(tmp_path / "type0.mid", [merged], midi_type=0)
    roll = load_midi(src)
    out = edit_midi(src, tmp_path / "out.mid", velocity_changes={(PIANO, 24, 60): 99},
                    added_notes=[AddedNote(BASS, 6, 18, 40, 25)])  # fmt: skip
    midi = mido.MidiFile(out)
    assert midi.type == 0 and len(midi.tracks) == 1
    old, new = messages(src)[0], messages(out)[0]
    added = [(0, M("program_change", channel=3, program=33)),
             (240, M("note_on", channel=3, note=40, velocity=25)),
             (720, M("note_off", channel=3, note=40, velocity=0))]  # fmt: skip
    rest = without(new, added)
    assert [t for t, _ in rest] == [t for t, _ in old]
    assert sum(a != b for a, b in zip(rest, old)) == 2
    result = load_midi(out)
    assert result.onsets[BASS, 6, 40 - 24] and levels(result.velocities)[PIANO, 24, 60 - 24] == 99
    changed = np.argwhere(levels(result.velocities) != levels(roll.velocities))
    assert {(t, p) for t, _, p in changed.tolist()} == {(PIANO, 60 - 24), (BASS, 40 - 24)}


# ------------------------------------------------------------------------- (4)-(5) files


def test_source_is_left_byte_identical(song: Path, tmp_path: Path) -> None:
    before = song.read_bytes()
    edit_midi(song, tmp_path / "out.mid", velocity_changes={(PIANO, 24, 60): 1}, added_notes=ADDED)
    assert song.read_bytes() == before


def test_no_overwrite_without_force(song: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.mid"
    dst.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"):
        edit_midi(song, dst, velocity_changes={}, added_notes=ADDED)
    assert dst.read_bytes() == b"keep"
    edit_midi(song, dst, velocity_changes={}, added_notes=ADDED, force=True)
    assert load_midi(dst).onsets[BASS, 6, 40 - 24]
    before = song.read_bytes()
    with pytest.raises(InputError, match="would overwrite the input"):
        edit_midi(song, song, velocity_changes={}, added_notes=ADDED, force=True)
    assert song.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mid", "song.mid"]


# ------------------------------------------------------------------------- (6) errors


@pytest.mark.parametrize(
    ("changes", "added", "grouping", "message"),
    [
        ({(PIANO, 24, 60): 0}, [], "musegan", r"velocity 0 is not a MIDI velocity"),
        ({(PIANO, 24, 60): 128}, [], "musegan", r"velocity 128 is not a MIDI velocity"),
        ({(PIANO, 24, 60): 1.5}, [], "musegan", r"velocity 1.5 is not a MIDI velocity"),
        ({(5, 24, 60): 64}, [], "musegan", r"roll track 5.*tracks 0 to 4"),
        ({(PIANO, 24): 64}, [], "musegan", r"not \(roll_track, onset_step, pitch\)"),
        ({}, [AddedNote(PIANO, 5, 5, 60, 10)], "musegan", r"ends at step 5, not after"),
        ({}, [AddedNote(PIANO, 6, 5, 60, 10)], "musegan", r"ends at step 5, not after"),
        ({}, [AddedNote(PIANO, -1, 5, 60, 10)], "musegan", r"not after its start -1"),
        ({}, [AddedNote(PIANO, 5, 6, 128, 10)], "musegan", r"pitch 128 is not a MIDI note"),
        ({}, [AddedNote(PIANO, 5, 6, -1, 10)], "musegan", r"pitch -1 is not a MIDI note"),
        ({}, [AddedNote(PIANO, 5, 6, 60, 0)], "musegan", r"velocity 0 is not a MIDI velocity"),
        ({}, [AddedNote(5, 5, 6, 60, 10)], "musegan", r"roll track 5"),
        ({}, [AddedNote(4, 5, 6, 60, 10)], "instrument", r"roll track 4.*tracks 0 to 3"),
        ({}, [AddedNote(PIANO, 5.0, 6, 60, 10)], "musegan", r"not a whole number"),
        ({}, [], "lpd17", r"grouping 'lpd17' is not supported"),
    ],
)
def test_bad_edits_are_input_errors_naming_the_file(
    song: Path, tmp_path: Path, changes, added, grouping, message
) -> None:
    dst = tmp_path / "out.mid"
    with pytest.raises(InputError, match=message) as info:
        edit_midi(song, dst, velocity_changes=changes, added_notes=added, grouping=grouping)
    assert str(song) in str(info.value)
    assert not dst.exists()


def test_a_change_at_a_cell_without_an_onset_is_a_value_error(song: Path, tmp_path: Path) -> None:
    # step 25 of Piano L's C4 (onset at 24) is held, not an onset; D4 never plays
    with pytest.raises(ValueError, match=r"no note starts at .*\(3, 25, 60\), \(3, 24, 62\)"):
        edit_midi(song, tmp_path / "out.mid", added_notes=[],
                  velocity_changes={(PIANO, 25, 60): 5, (PIANO, 24, 62): 5})  # fmt: skip
    assert not (tmp_path / "out.mid").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"RIFF....", "is not a MIDI file"),
     (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x00\x10\x00\x90", "damaged")],
)  # fmt: skip
def test_unreadable_input(tmp_path: Path, content, message) -> None:
    src = tmp_path / "in.mid"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        edit_midi(src, tmp_path / "out.mid", velocity_changes={}, added_notes=[])
    assert str(src) in str(info.value)
    with pytest.raises(InputError, match=message):
        note_cells(src)


def test_steps_finer_than_the_file_ticks_are_refused(tmp_path: Path) -> None:
    midi = mido.MidiFile(type=1, ticks_per_beat=4)
    midi.tracks.append(mido.MidiTrack([M("note_on", note=60, velocity=9, time=0),
                                       M("note_off", note=60, time=4)]))  # fmt: skip
    midi.save(tmp_path / "coarse.mid")
    with pytest.raises(InputError, match=r"step 1 cannot be written exactly.*4 ticks per beat"):
        edit_midi(tmp_path / "coarse.mid", tmp_path / "out.mid", velocity_changes={},
                  added_notes=[AddedNote(PIANO, 1, 2, 62, 9)])  # fmt: skip


# ------------------------------------------------------------------------- (7) round trip


@pytest.mark.parametrize("grouping", ["musegan", "instrument"])
def test_roll_changes_only_at_the_edited_cells(song: Path, tmp_path: Path, grouping: str) -> None:
    roll = load_midi(song, grouping=grouping)
    cells = note_cells(song, grouping=grouping)
    piano = PIANO if grouping == "musegan" else 0
    strings = STRINGS if grouping == "musegan" else 3
    drums = DRUMS if grouping == "musegan" else 2
    # Piano's F4 at step 60 (ticks 2410-2710: steps 60-67); Kit's D2 at step 12
    changes = {(piano, 60, 65): 127, (drums, 12, 38): 3}
    added = [AddedNote(piano, 30, 36, 62, 20), AddedNote(drums, 10, 12, 40, 15),
             AddedNote(strings, 30, 40, 80, 10)]  # fmt: skip
    out = edit_midi(song, tmp_path / "out.mid", velocity_changes=changes, added_notes=added,
                    grouping=grouping)  # fmt: skip
    result = load_midi(out, grouping=grouping)
    expected = levels(roll.velocities)
    onsets = roll.onsets.copy()
    low = roll.lowest_pitch
    expected[piano, 60:68, 65 - low] = 127
    expected[drums, 12:14, 38 - low] = 3
    for note in added:
        assert (expected[note.track, note.start_step : note.end_step, note.pitch - low] == 0).all()
        expected[note.track, note.start_step : note.end_step, note.pitch - low] = note.velocity
        onsets[note.track, note.start_step, note.pitch - low] = True
    np.testing.assert_array_equal(levels(result.velocities), expected)
    np.testing.assert_array_equal(result.onsets, onsets)
    assert (result.programs, result.is_drum, result.track_names) == (
        roll.programs, roll.is_drum, roll.track_names)  # fmt: skip
    assert (result.tempos, result.time_signatures) == (roll.tempos, roll.time_signatures)
    assert len(note_cells(out, grouping=grouping)) == len(cells) + len(added)


# ------------------------------------------------------------------------- raw bytes


def _raw_file(*tracks: bytes, midi_type: int = 1) -> bytes:
    header = b"MThd\x00\x00\x00\x06" + bytes([0, midi_type, 0, len(tracks)])
    header += TPQ.to_bytes(2, "big")
    return header + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks)


def test_running_status_across_meta_events_survives_an_insertion(tmp_path: Path) -> None:
    # C4 on, a text event, then running-status D4 on, C4 off, D4 off (status 0x90 implied)
    body = (b"\x00\xc0\x00" b"\x00\x90\x3c\x40" b"\x81\x70\xff\x01\x02hi" b"\x00\x3e\x41"
            b"\x83\x60\x3c\x00" b"\x83\x60\x3e\x00" b"\x00\xff\x2f\x00")  # fmt: skip
    src = tmp_path / "raw.mid"
    src.write_bytes(_raw_file(body))
    old = messages(src)
    assert [t for t, _ in old[0]] == [0, 0, 240, 240, 720, 1200, 1200]
    # an added E4 from step 3 to 9 (ticks 120-360): its note-off lands before the
    # running-status D4 events' neighbours and its note-on between C4 on and the text
    notes = [AddedNote(PIANO, 3, 9, 64, 8), AddedNote(PIANO, 15, 17, 67, 8)]
    out = edit_midi(src, tmp_path / "out.mid", velocity_changes={(PIANO, 6, 62): 100},
                    added_notes=notes)  # fmt: skip
    new = messages(out)[0]
    on, off = M("note_on", velocity=8), M("note_off", velocity=0)
    added = [(120, on.copy(note=64)), (360, off.copy(note=64)),
             (600, on.copy(note=67)), (680, off.copy(note=67))]  # fmt: skip
    rest = without(new, added)
    assert rest == [(t, m.copy(velocity=100) if m.type == "note_on" and m.note == 62 and m.velocity
                     else m) for t, m in old[0]]  # fmt: skip
    roll = load_midi(out)
    assert roll.onsets[PIANO, 3, 64 - 24] and roll.onsets[PIANO, 15, 67 - 24]
    assert levels(roll.velocities)[PIANO, 6, 62 - 24] == 100


def test_bytes_after_end_of_track_are_kept(tmp_path: Path) -> None:
    body = b"\x00\x90\x3c\x40\x83\x60\x80\x3c\x00\x00\xff\x2f\x00" + b"\x00\x91\x40"  # junk
    src = tmp_path / "tail.mid"
    src.write_bytes(_raw_file(body))
    out = edit_midi(src, tmp_path / "out.mid", velocity_changes={},
                    added_notes=[AddedNote(PIANO, 30, 32, 64, 8)])  # fmt: skip
    data = out.read_bytes()
    assert data.endswith(b"\x00\xff\x2f\x00\x00\x91\x40")
    assert load_midi(out).onsets[PIANO, 30, 64 - 24]


# ------------------------------------------------------------------------- scale


def test_a_three_minute_five_track_song_edits_quickly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    beats = 360  # 3 minutes at 120 qpm
    tracks: list[list[tuple[int, mido.Message]]] = [[(0, Meta("set_tempo", tempo=500_000))]]
    for channel, program in [(0, 33), (9, 0), (1, 25), (2, 0), (3, 48)]:
        events = [(0, 0, M("program_change", channel=channel, program=program))]
        for sixteenth in range(beats * 4):
            start = sixteenth * 120 + int(rng.integers(0, 7))
            events.append((start, 0, M("control_change", channel=channel, control=11, value=64)))
            pitch, velocity = int(rng.integers(36, 90)), int(rng.integers(20, 100))
            events += _notes(channel, [(start, 100, pitch, velocity)])
        tracks.append([(t, m) for t, _, m in sorted(events, key=lambda e: (e[0], e[1]))])
    src = _write(tmp_path / "long.mid", tracks)
    cells = note_cells(src)
    changes = {(c.roll_track, c.onset_step, c.pitch): 127 for c in cells[::10]}
    roll = load_midi(src)
    free = np.argwhere(roll.velocities[PIANO, : roll.steps - 3, 20:60] == 0)[::200]
    added = [AddedNote(PIANO, int(s), int(s) + 2, int(p) + 44, 5) for s, p in free
             if not roll.velocities[PIANO, s : s + 2, p + 20].any()]  # fmt: skip
    begin = time.perf_counter()
    edit_midi(src, tmp_path / "out.mid", velocity_changes=changes, added_notes=added)
    elapsed = time.perf_counter() - begin
    assert len(cells) == 5 * beats * 4 and len(added) > 50
    assert elapsed < 15.0
    result = load_midi(tmp_path / "out.mid")
    counts = Counter(map(tuple, np.argwhere(result.onsets != roll.onsets)[:, :1].tolist()))
    assert counts == Counter({(PIANO,): len(added)})


# ------------------------------------------------------------------------- awkward files


def awkward_tracks() -> list[list[tuple[int, mido.Message]]]:
    """Pairing corner cases: a program change while a note sounds, overlapping notes
    of one pitch (first in, first out), a zero-length note, a note-off that ends
    nothing, a note-on never switched off."""
    events = [
        (0, M("program_change", channel=0, program=0)),
        (0, M("note_on", channel=0, note=60, velocity=80)),
        (240, M("program_change", channel=0, program=33)),  # C4 stays a piano note
        (300, M("note_on", channel=0, note=40, velocity=70)),
        (330, M("note_on", channel=0, note=40, velocity=71)),  # overlaps the first E2
        (480, M("note_off", channel=0, note=60)),
        (500, M("note_off", channel=0, note=40)),
        (520, M("note_off", channel=0, note=40)),
        (600, M("note_off", channel=0, note=41)),  # ends nothing
        (700, M("note_on", channel=0, note=43, velocity=50)),
        (700, M("note_on", channel=0, note=43, velocity=0)),  # zero length
        (800, M("note_on", channel=0, note=45, velocity=60)),  # never switched off
        (1000, M("note_on", channel=0, note=47, velocity=61)),
        (1100, M("note_off", channel=0, note=47)),
    ]
    return [events]


@pytest.mark.parametrize("grouping", ["musegan", "instrument"])
def test_awkward_pairing_matches_load_midi(tmp_path: Path, grouping: str) -> None:
    src = _write(tmp_path / "awkward.mid", awkward_tracks())
    roll = load_midi(src, grouping=grouping)
    cells = note_cells(src, grouping=grouping)
    assert [(c.program, c.pitch, c.start_tick, c.end_tick, c.velocity) for c in cells] == [
        (0, 60, 0, 480, 80), (33, 40, 300, 500, 70), (33, 40, 330, 520, 71),
        (33, 43, 700, 700, 50), (33, 47, 1000, 1100, 61),
    ]  # fmt: skip
    covered = np.zeros(roll.onsets.shape, dtype=bool)
    for c in cells:
        covered[c.roll_track, c.onset_step, c.pitch - roll.lowest_pitch] = True
    np.testing.assert_array_equal(covered, roll.onsets & (roll.velocities > 0))
    # A2 (45) never ends on channel 1: an added bass A2 after it cannot go there
    bass = BASS if grouping == "musegan" else 1
    added = [AddedNote(bass, 24, 26, 45, 5), AddedNote(bass, 12, 14, 47, 6)]
    if grouping == "instrument":
        with pytest.raises(InputError, match="cannot be placed"):
            edit_midi(src, tmp_path / "out.mid", velocity_changes={}, added_notes=added,
                      grouping=grouping)  # fmt: skip
        return
    out = edit_midi(src, tmp_path / "out.mid", velocity_changes={(bass, 8, 40): 99},
                    added_notes=added)  # fmt: skip
    new, old = messages(out), messages(src)
    assert without(new[0], [(480, M("note_on", channel=0, note=47, velocity=6)),
                            (560, M("note_off", channel=0, note=47, velocity=0))]) == [
        # both E2s start on step 8 (ticks 300 and 330): one cell
        (t, m.copy(velocity=99) if t in (300, 330) and m.type == "note_on" else m)
        for t, m in old[0]
    ]  # fmt: skip
    assert new[1][1:3] == [(0, M("program_change", channel=1, program=33)),
                           (960, M("note_on", channel=1, note=45, velocity=5))]  # fmt: skip
    result = load_midi(out)
    assert result.onsets[BASS, 24, 45 - 24] and result.onsets[BASS, 12, 47 - 24]
    assert levels(result.velocities)[BASS, 8, 40 - 24] == 99


def test_nothing_is_written_when_the_result_would_change_other_notes(
    song: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harmonycloak.io.midi_edit as midi_edit

    # pretend placement ignored Piano L's C4 sounding over ticks 7-240: an added C4 at
    # ticks 80-160 inside it would pair with its note-on and cut it short
    monkeypatch.setattr(midi_edit, "_fit", lambda start, end, blockers: (start[0], end[0]))
    with pytest.raises(InputError, match="without changing the file's own notes"):
        edit_midi(song, tmp_path / "out.mid", velocity_changes={},
                  added_notes=[AddedNote(PIANO, 2, 4, 60, 12)])  # fmt: skip
    assert list(tmp_path.iterdir()) == [song]


@pytest.mark.parametrize(
    ("tpq", "steps_per_beat"), [(480, 12), (96, 12), (100, 12), (25, 24), (7, 4)]
)
def test_step_windows_are_exactly_the_ticks_that_round_to_the_step(
    tmp_path: Path, tpq: int, steps_per_beat: int
) -> None:
    from harmonycloak.io.midi import _ticks_to_steps
    from harmonycloak.io.midi_edit import _window

    class Probe:
        ticks_per_beat, path = tpq, tmp_path

        def __init__(self) -> None:
            self.steps_per_beat = steps_per_beat

        def step(self, tick: int) -> int:
            return int(_ticks_to_steps(tick, tpq, steps_per_beat))

    for step in range(0, 3 * steps_per_beat):
        nominal, lo, hi = _window(Probe(), step, None)  # type: ignore[arg-type]
        assert lo <= nominal <= hi
        assert {int(_ticks_to_steps(t, tpq, steps_per_beat)) for t in range(lo, hi + 1)} == {step}
        if lo > 0:
            assert int(_ticks_to_steps(lo - 1, tpq, steps_per_beat)) == step - 1
        assert int(_ticks_to_steps(hi + 1, tpq, steps_per_beat)) == step + 1


def test_parts_sharing_a_channel(tmp_path: Path) -> None:
    # two MIDI tracks on MIDI channel 1 (as notation programs often write them); an
    # added C4 for the second part would sound while the first part's C4 does
    first = [(t, m) for t, _, m in _notes(0, [(0, 960, 60, 80)])]
    second = [(t, m) for t, _, m in _notes(0, [(960, 480, 64, 80)])]
    src = _write(tmp_path / "shared.mid", [first, second])
    old = messages(src)
    # musegan: a new piano part on a free channel keeps the channel clear
    out = edit_midi(src, tmp_path / "musegan.mid", velocity_changes={},
                    added_notes=[AddedNote(PIANO, 4, 8, 60, 10)])  # fmt: skip
    new = messages(out)
    assert new[:2] == old
    assert new[2][:4] == [(0, Meta("track_name", name="Piano (harmonycloak)")),
                          (0, M("program_change", channel=1, program=0)),
                          (160, M("note_on", channel=1, note=60, velocity=10)),
                          (320, M("note_off", channel=1, note=60, velocity=0))]  # fmt: skip
    # instrument: the second part itself is the only place; load_midi reads it right
    out = edit_midi(src, tmp_path / "instrument.mid", velocity_changes={}, grouping="instrument",
                    added_notes=[AddedNote(1, 4, 8, 60, 10)])  # fmt: skip
    new = messages(out)
    assert new[0] == old[0]
    added = [(160, M("note_on", channel=0, note=60, velocity=10)),
             (320, M("note_off", channel=0, note=60, velocity=0))]  # fmt: skip
    assert without(new[1], added) == old[1]
    roll = load_midi(out, grouping="instrument")
    level = levels(roll.velocities)[:, :, 60 - 24]
    assert roll.onsets[1, 4, 60 - 24] and level[1, 4:8].tolist() == [10] * 4
    assert roll.onsets[0, 0, 60 - 24] and level[0, 0:24].min() == 80
