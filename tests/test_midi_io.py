"""MIDI ⇄ PianoRoll: groupings, quantization, round trips, and errors a user can cause.

Rendered files are built here with mido (and symusic); "real" files are music21 corpus
pieces converted to MIDI, skipped when music21 is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import sys
import types
from dataclasses import replace
from pathlib import Path

import mido
import numpy as np
import pytest
import symusic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harmonycloak.clip import PianoRoll, TempoChange, TimeSignature
from harmonycloak.errors import InputError
from harmonycloak.io.midi import (
    MUSEGAN_PROGRAMS,
    MUSEGAN_TRACKS,
    load_midi,
    midi_bytes,
    musegan_track,
    pitch_name,
    save_midi,
)

STEPS_PER_BEAT = (12, 24, 4)
GROUPINGS = ("musegan", "instrument")


# --------------------------------------------------------------------- fixtures, helpers


def _stub_atomic_write(path, writer, *, force):  # the contract of harmonycloak.io.files
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} already exists; use --force to replace it")
    tmp = path.with_name(f".{path.name}.tmp")
    writer(tmp)
    os.replace(tmp, path)
    return path


@pytest.fixture(autouse=True)
def _files_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the real ``harmonycloak.io.files`` when present; a stub of its contract if not."""
    if importlib.util.find_spec("harmonycloak.io.files") is None:
        stub = types.ModuleType("harmonycloak.io.files")
        stub.atomic_write = _stub_atomic_write  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "harmonycloak.io.files", stub)


def render_midi(
    path: Path,
    parts: list[dict],
    *,
    tpq: int = 480,
    tempos: tuple[tuple[int, float], ...] = ((0, 120.0),),
    meters: tuple[tuple[int, int, int], ...] = ((0, 4, 4),),
    midi_type: int = 1,
) -> Path:
    """Write a MIDI file with mido. ``parts``: dicts with channel, program, name and
    notes as (start_tick, duration_ticks, pitch, velocity); tempos (tick, qpm); meters
    (tick, numerator, denominator). Type 1: a conductor track then one track per part;
    type 0: everything in one track."""
    conductor = [(t, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(q))) for t, q in tempos]
    conductor += [
        (t, 0, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for t, n, d in meters
    ]
    tracks = [conductor]
    for part in parts:
        ch = part["channel"]
        events = [
            (0, -2, mido.MetaMessage("track_name", name=part.get("name", ""))),
            (0, -1, mido.Message("program_change", channel=ch, program=part.get("program", 0))),
        ]
        for start, dur, pitch, vel in part["notes"]:
            events.append((start, 1, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            events.append((start + dur, 0, mido.Message("note_off", channel=ch, note=pitch)))
        tracks.append(events)
    if midi_type == 0:
        tracks = [[e for track in tracks for e in track]]
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=tpq)
    for events in tracks:
        track, now = mido.MidiTrack(), 0
        for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(path)
    return path


def band_parts(tpq: int, steps_per_beat: int, seed: int = 0) -> list[dict]:
    """Six instruments (bass, drums on channel 10, guitar, piano, strings, trumpet),
    notes on the step grid with random velocities, some repeated pitches."""
    rng = np.random.default_rng(seed)
    step = tpq // steps_per_beat
    specs = [
        ("Bass", 0, 33, (28, 52)),
        ("Kit", 9, 0, (35, 60)),
        ("Jazz Guitar", 1, 26, (45, 76)),
        ("Bright Piano", 2, 1, (48, 96)),
        ("Strings", 3, 49, (55, 90)),
        ("Trumpet", 4, 56, (58, 84)),
    ]
    parts = []
    for name, channel, program, (low, high) in specs:
        notes, t = [], 0
        for _ in range(12):
            length = int(rng.integers(1, 2 * steps_per_beat + 1))
            pitch = int(rng.integers(low, high))
            notes.append((t * step, length * step, pitch, int(rng.integers(1, 128))))
            if rng.random() < 0.3:  # the same pitch again right away
                notes.append(((t + length) * step, step, pitch, int(rng.integers(1, 128))))
                length += 1
            t += length + int(rng.integers(0, 3))
        parts.append({"name": name, "channel": channel, "program": program, "notes": notes})
    return parts


def random_roll(
    *,
    tracks: int = 4,
    steps: int = 96,
    pitches: int = 84,
    steps_per_beat: int = 12,
    seed: int = 0,
    drum_track: int | None = 1,
    tempos: tuple[TempoChange, ...] = (TempoChange(0, 120.0),),
    meters: tuple[TimeSignature, ...] = (TimeSignature(0, 4, 4),),
    ticks_per_beat: int = 480,
) -> PianoRoll:
    """A roll of notes (velocity constant per note, multiples of 1/127) with onsets;
    includes repeated notes of one pitch and a note on the last step of track 0."""
    rng = np.random.default_rng(seed)
    velocities = np.zeros((tracks, steps, pitches), dtype=np.float32)
    onsets = np.zeros(velocities.shape, dtype=bool)
    for track in range(tracks):
        for _ in range(steps // 3):
            start = int(rng.integers(0, steps))
            end = min(steps, start + int(rng.integers(1, 3 * steps_per_beat + 1)))
            pitch = int(rng.integers(0, pitches))
            if velocities[track, start:end, pitch].any():
                continue
            # a note that abuts another keeps its own onset (a repeated note)
            velocities[track, start:end, pitch] = rng.integers(1, 128) / np.float32(127)
            onsets[track, start, pitch] = True
    velocities[0, -1, 0] = 1.0
    onsets[0, -1, 0] = True
    is_drum = tuple(t == drum_track for t in range(tracks))
    return PianoRoll(
        velocities=velocities,
        steps_per_beat=steps_per_beat,
        lowest_pitch=24,
        programs=tuple(int(p) for p in rng.integers(0, 128, tracks)),
        is_drum=is_drum,
        track_names=tuple(f"Track {t}" for t in range(tracks)),
        tempos=tempos,
        time_signatures=meters,
        onsets=onsets,
        ticks_per_beat=ticks_per_beat,
    )


def levels(velocities: np.ndarray) -> np.ndarray:
    """MIDI velocity (0-127) of each cell."""
    return np.floor(np.asarray(velocities, dtype=np.float64) * 127 + 0.5).astype(int)


def assert_same_roll(a: PianoRoll, b: PianoRoll, *, tempo_rel: float = 0.0) -> None:
    """Equal to 1/127 in velocities; equal onsets, track info, tempos and meters."""
    assert a.velocities.shape == b.velocities.shape
    np.testing.assert_array_equal(levels(a.velocities), levels(b.velocities))
    np.testing.assert_array_equal(a.onsets, b.onsets)
    assert (a.programs, a.is_drum, a.track_names) == (b.programs, b.is_drum, b.track_names)
    assert (a.steps_per_beat, a.lowest_pitch) == (b.steps_per_beat, b.lowest_pitch)
    assert a.time_signatures == b.time_signatures
    assert [t.step for t in a.tempos] == [t.step for t in b.tempos]
    np.testing.assert_allclose(
        [t.qpm for t in a.tempos], [t.qpm for t in b.tempos], rtol=tempo_rel, atol=0
    )


def onset_count(roll: PianoRoll) -> int:
    return int((roll.onsets & (roll.velocities > 0)).sum())


CHANGING_TEMPOS = (TempoChange(0, 120.0), TempoChange(48, 90.0), TempoChange(120, 140.0))


def changing_meters(steps_per_beat: int) -> tuple[TimeSignature, ...]:
    """4/4 bar, 3/4 bar, 6/8 bar, then 4/4 (bar lengths 4, 3 and 3 quarter notes)."""
    spb = steps_per_beat
    return (
        TimeSignature(0, 4, 4),
        TimeSignature(4 * spb, 3, 4),
        TimeSignature(7 * spb, 6, 8),
        TimeSignature(10 * spb, 4, 4),
    )


# ---------------------------------------------------------------- roll -> file -> roll


@pytest.mark.parametrize("steps_per_beat", STEPS_PER_BEAT)
def test_roll_round_trip_with_tempo_and_meter_changes(tmp_path: Path, steps_per_beat: int) -> None:
    roll = random_roll(
        steps=16 * steps_per_beat,
        steps_per_beat=steps_per_beat,
        tempos=tuple(replace(t, step=t.step * steps_per_beat // 12) for t in CHANGING_TEMPOS),
        meters=changing_meters(steps_per_beat),
        seed=steps_per_beat,
    )
    before = roll.velocities.copy()
    out = save_midi(roll, tmp_path / "roll.mid")
    assert out == tmp_path / "roll.mid"
    np.testing.assert_array_equal(roll.velocities, before)  # input left unchanged

    back = load_midi(out, grouping="instrument", steps_per_beat=steps_per_beat)
    assert_same_roll(roll, back, tempo_rel=1e-5)
    assert back.ticks_per_beat == roll.ticks_per_beat
    assert back.warnings == ()
    assert [t.qpm for t in back.tempos] == pytest.approx([120.0, 90.0, 140.0], rel=1e-5)
    # a second trip is exact: qpm comes from the integer microseconds per beat
    again = load_midi(
        save_midi(back, tmp_path / "again.mid"),
        grouping="instrument",
        steps_per_beat=steps_per_beat,
    )
    assert_same_roll(back, again)


def test_roll_without_onsets_reads_runs_as_notes(tmp_path: Path) -> None:
    roll = random_roll(tracks=2, seed=3)
    plain = replace(roll, onsets=None)
    back = load_midi(save_midi(plain, tmp_path / "plain.mid"), grouping="instrument")
    np.testing.assert_array_equal(levels(back.velocities) > 0, roll.velocities > 0)
    active = roll.velocities > 0
    run_starts = active & ~np.concatenate([np.zeros_like(active[:, :1]), active[:, :-1]], axis=1)
    np.testing.assert_array_equal(back.onsets, run_starts)


def test_velocity_levels_are_clamped_to_1_127(tmp_path: Path) -> None:
    velocities = np.zeros((1, 8, 84), dtype=np.float32)
    velocities[0, 0:2, 10] = 0.001  # audible cell rounding to 0 -> 1
    velocities[0, 2:4, 11] = 1.7  # above 1 -> 127
    velocities[0, 4:8, 12] = 64 / 127
    roll = PianoRoll(velocities, 12, 24, (0,), (False,), ("Keys",))
    back = load_midi(save_midi(roll, tmp_path / "v.mid"), grouping="instrument")
    assert levels(back.velocities[0, 0, 10]) == 1
    assert levels(back.velocities[0, 2, 11]) == 127
    assert levels(back.velocities[0, 4, 12]) == 64


def test_track_names_in_any_script_survive(tmp_path: Path) -> None:
    roll = replace(random_roll(tracks=3, seed=4), track_names=("Flügel", "鋼琴", "Ударные"))
    back = load_midi(save_midi(roll, tmp_path / "names.mid"), grouping="instrument")
    assert back.track_names == roll.track_names


def test_saved_file_layout(tmp_path: Path) -> None:
    roll = random_roll(tracks=4, drum_track=2, seed=5)
    path = save_midi(roll, tmp_path / "layout.mid")
    midi = mido.MidiFile(path)
    assert midi.type == 1 and midi.ticks_per_beat == roll.ticks_per_beat
    assert len(midi.tracks) == 1 + roll.tracks  # conductor + one per roll track
    assert {m.type for m in midi.tracks[0]} >= {"set_tempo", "time_signature"}
    channels, programs = [], []
    for track in midi.tracks[1:]:
        channels.append({m.channel for m in track if hasattr(m, "channel")})
        programs.append([m.program for m in track if m.type == "program_change"])
    assert channels == [{0}, {1}, {9}, {2}]  # drums on channel 10, the others distinct
    assert programs == [[p] for p in roll.programs]
    assert [t.name for t in midi.tracks[1:]] == list(roll.track_names)


def test_long_gaps_use_multi_byte_delta_times(tmp_path: Path) -> None:
    """Delta times of 1, 2, 3 and 4 bytes (7, 14, 21, 28 bits), checked with mido too."""
    starts = [0, 1, 11, 1400, 180_000]  # x 40 ticks: 0, 40, 440, 56_000, 7_200_000
    velocities = np.zeros((1, starts[-1] + 2, 12), dtype=np.float32)
    for i, step in enumerate(starts):
        velocities[0, step, i] = (20 + i) / 127
    roll = PianoRoll(velocities, 12, 60, (5,), (False,), ("Gaps",))
    path = save_midi(roll, tmp_path / "gaps.mid")
    ticks, now = [], 0
    for message in mido.MidiFile(path).tracks[1]:
        now += message.time
        if message.type == "note_on":
            ticks.append((now, message.note, message.velocity))
    assert ticks == [(s * 40, 60 + i, 20 + i) for i, s in enumerate(starts)]
    back = load_midi(path, grouping="instrument", lowest_pitch=60, n_pitches=12)
    assert back.steps == starts[-1] + 1
    np.testing.assert_array_equal(levels(back.velocities), levels(velocities[:, :-1]))


def test_the_same_roll_gives_the_same_bytes(tmp_path: Path) -> None:
    roll = random_roll(tracks=3, seed=11, tempos=CHANGING_TEMPOS, meters=changing_meters(12))
    first = save_midi(roll, tmp_path / "a.mid").read_bytes()
    assert first == midi_bytes(roll) == save_midi(roll, tmp_path / "b.mid").read_bytes()


def test_more_than_15_melodic_tracks_share_channels_but_read_back(tmp_path: Path) -> None:
    roll = random_roll(tracks=18, steps=24, drum_track=9, seed=7)
    path = save_midi(roll, tmp_path / "many.mid")
    used = [{m.channel for m in t if hasattr(m, "channel")} for t in mido.MidiFile(path).tracks[1:]]
    assert used[9] == {9} and all(9 not in c for i, c in enumerate(used) if i != 9)
    assert [min(c) for c in used[:9] + used[10:16]] == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        10,
        11,
        12,
        13,
        14,
        15,
    ]
    back = load_midi(path, grouping="instrument")
    assert_same_roll(roll, back)


def test_small_ticks_per_beat_is_raised_to_keep_steps_apart(tmp_path: Path) -> None:
    roll = random_roll(tracks=2, steps=48, steps_per_beat=24, ticks_per_beat=8, seed=2)
    back = load_midi(
        save_midi(roll, tmp_path / "tpq.mid"), grouping="instrument", steps_per_beat=24
    )
    assert back.ticks_per_beat == 24
    assert_same_roll(roll, back)


def test_save_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    roll = random_roll(tracks=1, steps=12, drum_track=None)
    target = tmp_path / "out.mid"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError) as info:
        save_midi(roll, target)
    assert str(info.value) == f"{target} already exists; use --force to replace it"
    assert target.read_bytes() == b"keep me"
    save_midi(roll, target, force=True)
    assert target.read_bytes().startswith(b"MThd")
    assert [p.name for p in tmp_path.iterdir()] == ["out.mid"]  # no temporary left behind


@pytest.mark.parametrize(
    "change",
    [
        {"velocities": np.full((1, 4, 84), np.nan, dtype=np.float32)},
        {"time_signatures": (TimeSignature(0, 4, 3),)},
        {"tempos": (TempoChange(0, 0.0),)},
        {"programs": (128,)},
    ],
    ids=["nan", "meter-denominator", "tempo-zero", "program"],
)
def test_save_rejects_what_midi_cannot_hold(tmp_path: Path, change: dict) -> None:
    roll = replace(random_roll(tracks=1, steps=4, drum_track=None), onsets=None, **change)
    with pytest.raises(ValueError):
        save_midi(roll, tmp_path / "bad.mid")
    assert not (tmp_path / "bad.mid").exists()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31 - 1),
    tracks=st.integers(1, 5),
    steps=st.integers(1, 60),
    steps_per_beat=st.sampled_from(STEPS_PER_BEAT),
    ticks_per_beat=st.sampled_from([96, 100, 480, 960]),
)
def test_any_roll_round_trips(
    tmp_path: Path, seed: int, tracks: int, steps: int, steps_per_beat: int, ticks_per_beat: int
) -> None:
    """Arbitrary velocities (also varying inside a run) and onsets: one trip through a
    file canonicalizes the roll (a note's velocity is its onset cell's), the next is exact."""
    rng = np.random.default_rng(seed)
    velocities = (rng.random((tracks, steps, 12)) < 0.4) * rng.random((tracks, steps, 12))
    onsets = rng.random(velocities.shape) < 0.3
    velocities[0, -1, 0] = 0.5
    roll = PianoRoll(
        velocities.astype(np.float32),
        steps_per_beat,
        60,
        tuple(int(p) for p in rng.integers(0, 128, tracks)),
        tuple(bool(d) for d in rng.random(tracks) < 0.3),
        tuple(f"t{i}" for i in range(tracks)),
        onsets=onsets,
        ticks_per_beat=ticks_per_beat,
    )
    path = tmp_path / "any.mid"
    load = dict(grouping="instrument", steps_per_beat=steps_per_beat, lowest_pitch=60, n_pitches=12)
    first = load_midi(save_midi(roll, path, force=True), **load)
    kept = roll.velocities.any(axis=(1, 2))  # tracks without notes are not read back
    active = roll.velocities[kept] > 0
    np.testing.assert_array_equal(first.velocities > 0, active)
    starts = active & (onsets[kept] | ~np.pad(active, ((0, 0), (1, 0), (0, 0)))[:, :-1])
    np.testing.assert_array_equal(first.onsets, starts)
    np.testing.assert_array_equal(
        levels(first.velocities)[starts], np.clip(levels(roll.velocities[kept])[starts], 1, 127)
    )
    second = load_midi(save_midi(first, path, force=True), **load)
    assert_same_roll(first, second)


# ------------------------------------------------------------- rendered files (mido, symusic)


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("steps_per_beat", STEPS_PER_BEAT)
def test_rendered_file_is_a_fixed_point(tmp_path: Path, grouping: str, steps_per_beat: int) -> None:
    tpq = 480
    src = render_midi(
        tmp_path / "band.mid",
        band_parts(tpq, steps_per_beat, seed=steps_per_beat),
        tpq=tpq,
        tempos=((0, 120.0), (8 * tpq, 90.0), (20 * tpq, 140.0)),
        meters=((0, 4, 4), (4 * tpq, 3, 4), (7 * tpq, 6, 8), (10 * tpq, 4, 4)),
    )
    first = load_midi(src, grouping=grouping, steps_per_beat=steps_per_beat)
    second = load_midi(
        save_midi(first, tmp_path / "copy.mid"), grouping=grouping, steps_per_beat=steps_per_beat
    )
    assert_same_roll(first, second)
    spb = steps_per_beat
    assert [(t.step, round(t.qpm, 3)) for t in first.tempos] == [
        (0, 120.0),
        (8 * spb, 90.0),
        (20 * spb, 140.0),
    ]
    assert first.time_signatures == changing_meters(spb)
    assert first.ticks_per_beat == tpq


@pytest.mark.parametrize("steps_per_beat", STEPS_PER_BEAT)
def test_rendered_notes_land_on_their_cells(tmp_path: Path, steps_per_beat: int) -> None:
    tpq = 480
    parts = band_parts(tpq, steps_per_beat, seed=1)
    roll = load_midi(
        render_midi(tmp_path / "band.mid", parts, tpq=tpq),
        grouping="instrument",
        steps_per_beat=steps_per_beat,
    )
    assert roll.track_names == tuple(p["name"] for p in parts)
    assert roll.programs == tuple(p["program"] for p in parts)
    assert roll.is_drum == (False, True, False, False, False, False)
    expected_vel = np.zeros(roll.velocities.shape, dtype=int)
    expected_on = np.zeros(roll.velocities.shape, dtype=bool)
    step = tpq // steps_per_beat
    for track, part in enumerate(parts):
        for start, dur, pitch, vel in part["notes"]:
            expected_vel[track, start // step : (start + dur) // step, pitch - 24] = vel
            expected_on[track, start // step, pitch - 24] = True
    np.testing.assert_array_equal(levels(roll.velocities), expected_vel)
    np.testing.assert_array_equal(roll.onsets, expected_on)
    assert roll.velocities.dtype == np.float32 and roll.onsets.dtype == bool


def test_score_built_with_symusic_round_trips(tmp_path: Path) -> None:
    score = symusic.Score(96)
    for name, program, drum, pitches in [
        ("Organ", 19, False, (60, 64, 67)),
        ("Toms", 0, True, (45, 47)),
    ]:
        track = symusic.Track(name, program, drum)
        for i, pitch in enumerate(pitches * 4):
            track.notes.append(symusic.Note(i * 24, 24 + 24 * (i % 2), pitch, 30 + 7 * i))
        score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, 75.0))
    score.time_signatures.append(symusic.TimeSignature(0, 5, 4))
    src = tmp_path / "sym.mid"
    score.dump_midi(str(src))
    first = load_midi(src, grouping="instrument", steps_per_beat=4)
    assert first.track_names == ("Organ", "Toms") and first.is_drum == (False, True)
    assert first.time_signatures == (TimeSignature(0, 5, 4),)
    assert onset_count(first) == score.note_num()
    assert_same_roll(
        first,
        load_midi(save_midi(first, tmp_path / "c.mid"), grouping="instrument", steps_per_beat=4),
    )


# ------------------------------------------------------------------------- musegan grouping


@pytest.mark.parametrize(
    ("program", "is_drum", "expected"),
    [
        (33, False, "Bass"),
        (32, False, "Bass"),
        (39, False, "Bass"),
        (26, False, "Guitar"),
        (24, False, "Guitar"),
        (31, False, "Guitar"),
        (1, False, "Piano"),
        (0, False, "Piano"),
        (7, False, "Piano"),
        (49, False, "Strings"),
        (40, False, "Strings"),
        (56, False, "Strings"),  # trumpet: outside the five families -> strings (LPD-5)
        (73, False, "Strings"),  # flute
        (11, False, "Strings"),  # vibraphone (chromatic percussion)
        (16, False, "Strings"),  # organ
        (81, False, "Strings"),
        (95, False, "Strings"),
        (104, False, "Strings"),
        (111, False, "Strings"),
        (96, False, None),
        (103, False, None),  # synth effects: left out by LPD-5
        (112, False, None),
        (118, False, None),
        (127, False, None),  # percussive, sound effects
        (0, True, "Drums"),
        (33, True, "Drums"),
        (120, True, "Drums"),  # channel 10 wins
    ],
)
def test_musegan_track_rule(program: int, is_drum: bool, expected: str | None) -> None:
    index = musegan_track(program, is_drum)
    assert (None if index is None else MUSEGAN_TRACKS[index]) == expected


def test_musegan_grouping_of_a_file(tmp_path: Path) -> None:
    programs = {
        "Bass": 33,
        "Guitar": 26,
        "Piano": 1,
        "Strings": 49,
        "Trumpet": 56,
        "Flute": 73,
        "FX": 98,
        "Gunshot": 127,
    }
    parts = [
        {
            "name": name,
            "channel": ch if ch < 9 else ch + 1,
            "program": program,
            "notes": [(0, 480, 40 + ch, 100)],
        }
        for ch, (name, program) in enumerate(programs.items())
    ]
    parts.append({"name": "Kit", "channel": 9, "program": 5, "notes": [(0, 120, 36, 90)]})
    roll = load_midi(render_midi(tmp_path / "gm.mid", parts), grouping="musegan")
    assert roll.track_names == ("Bass", "Drums", "Guitar", "Piano", "Strings")
    assert roll.programs == MUSEGAN_PROGRAMS == (33, 0, 25, 0, 48)
    assert roll.is_drum == (False, True, False, False, False)
    sounding = {
        roll.track_names[t]: sorted(int(p) + 24 for p in np.flatnonzero(roll.onsets[t].any(0)))
        for t in range(5)
    }
    assert sounding == {
        "Bass": [40],
        "Drums": [36],
        "Guitar": [41],
        "Piano": [42],
        "Strings": [43, 44, 45],
    }
    assert any("2 notes of synth-effect, percussive or sound-effect" in w for w in roll.warnings)


def test_musegan_merge_keeps_max_velocity_and_ors_onsets(tmp_path: Path) -> None:
    parts = [
        {"channel": 0, "program": 0, "notes": [(0, 960, 60, 50), (960, 480, 62, 30)]},
        {"channel": 1, "program": 4, "notes": [(480, 960, 60, 100), (960, 480, 62, 90)]},
    ]
    roll = load_midi(render_midi(tmp_path / "pianos.mid", parts), grouping="musegan")
    piano = MUSEGAN_TRACKS.index("Piano")
    assert roll.steps == 12 * 3
    np.testing.assert_array_equal(
        levels(roll.velocities[piano, :, 60 - 24]), [50] * 12 + [100] * 24
    )
    np.testing.assert_array_equal(np.flatnonzero(roll.onsets[piano, :, 60 - 24]), [0, 12])
    np.testing.assert_array_equal(levels(roll.velocities[piano, :, 62 - 24]), [0] * 24 + [90] * 12)
    np.testing.assert_array_equal(np.flatnonzero(roll.onsets[piano, :, 62 - 24]), [24])
    assert not roll.velocities[[0, 1, 2, 4]].any()  # the other four tracks stay empty
    assert roll.warnings == ()


def test_a_quieter_note_inside_a_louder_one_keeps_the_louder_velocity(tmp_path: Path) -> None:
    """Segment velocity = its onset cell (as save_midi writes it), so the roll is a fixed point."""
    parts = [
        {"channel": 0, "program": 0, "notes": [(0, 1920, 60, 50)]},
        {"channel": 1, "program": 2, "notes": [(480, 480, 60, 100)]},
    ]
    roll = load_midi(render_midi(tmp_path / "inner.mid", parts), grouping="musegan")
    piano = MUSEGAN_TRACKS.index("Piano")
    np.testing.assert_array_equal(levels(roll.velocities[piano, :, 36]), [50] * 12 + [100] * 36)
    again = load_midi(save_midi(roll, tmp_path / "c.mid"), grouping="musegan")
    assert_same_roll(roll, again)


# -------------------------------------------------------------------------- quantization


def test_quantization_rounds_starts_and_ends_and_keeps_short_notes(tmp_path: Path) -> None:
    parts = [
        {
            "channel": 0,
            "program": 0,
            "notes": [
                (19, 40, 60, 80),  # 19/40 -> step 0 .. 59/40 -> step 1
                (21, 40, 62, 80),  # 21/40 -> step 1 .. 61/40 -> step 2
                (400, 3, 64, 80),  # shorter than a step: still one step, at step 10
                (480, 480, 65, 80),  # a quarter note: 12 steps
                (960, 480, 65, 81),  # the same pitch again: its own onset
            ],
        }
    ]
    roll = load_midi(render_midi(tmp_path / "q.mid", parts), grouping="instrument")
    cells = {
        int(p) + 24: np.flatnonzero(roll.velocities[0, :, p]).tolist()
        for p in np.flatnonzero(roll.velocities[0].any(0))
    }
    assert cells == {60: [0], 62: [1], 64: [10], 65: list(range(12, 36))}
    assert np.flatnonzero(roll.onsets[0, :, 65 - 24]).tolist() == [12, 24]
    assert roll.steps == 36


@pytest.mark.parametrize("steps_per_beat", STEPS_PER_BEAT)
def test_bar_lengths_follow_the_meter(tmp_path: Path, steps_per_beat: int) -> None:
    tpq = 96
    bars = [(4, 4), (3, 4), (6, 8), (2, 2), (7, 8)]
    ticks, meters, notes = 0, [], []
    for n, d in bars:
        meters.append((ticks, n, d))
        notes.append((ticks, 10, 60, 64))
        ticks += n * tpq * 4 // d
    parts = [{"channel": 0, "program": 0, "notes": notes}]
    roll = load_midi(
        render_midi(tmp_path / "m.mid", parts, tpq=tpq, meters=tuple(meters)),
        steps_per_beat=steps_per_beat,
    )
    spb = steps_per_beat
    bar_steps = [b.step for b in roll.time_signatures]
    # 4/4 is 4 beats, 3/4 and 6/8 are 3, 2/2 is 4: at 12 steps a beat 48, 36, 36, 48 steps
    assert np.diff(bar_steps).tolist() == [4 * spb, 3 * spb, 3 * spb, 4 * spb]
    piano = MUSEGAN_TRACKS.index("Piano")
    assert np.flatnonzero(roll.onsets[piano, :, 60 - 24]).tolist() == bar_steps


def test_tempo_and_meter_defaults_when_the_file_sets_none(tmp_path: Path) -> None:
    src = render_midi(
        tmp_path / "bare.mid",
        [{"channel": 0, "notes": [(0, 480, 60, 90)]}],
        tempos=(),
        meters=((960, 3, 4),),
    )
    roll = load_midi(src)
    assert roll.tempos == (TempoChange(0, 120.0),)
    assert roll.time_signatures == (TimeSignature(0, 4, 4), TimeSignature(24, 3, 4))


# ---------------------------------------------------------------------- dropped pitches


def test_notes_outside_the_pitch_range_are_left_out_and_reported(tmp_path: Path) -> None:
    notes = [(0, 480, p, 90) for p in (10, 23, 24, 60, 107, 108, 127)]
    src = render_midi(tmp_path / "wide.mid", [{"channel": 0, "program": 0, "notes": notes}])
    roll = load_midi(src, grouping="instrument")
    assert sorted(np.flatnonzero(roll.onsets[0].any(0)) + 24) == [24, 60, 107]
    assert roll.warnings == ("4 notes outside C1–B7 (MIDI 24–107) were left out",)
    narrow = load_midi(src, grouping="instrument", lowest_pitch=60, n_pitches=12)
    assert narrow.pitches == 12 and narrow.lowest_pitch == 60
    assert narrow.warnings == ("6 notes outside C4–B4 (MIDI 60–71) were left out",)


def test_pitch_names() -> None:
    assert [pitch_name(p) for p in (24, 60, 61, 107, 0, 127)] == [
        "C1",
        "C4",
        "C#4",
        "B7",
        "C-1",
        "G9",
    ]


def test_pitch_names_cover_the_whole_midi_range() -> None:
    names = [pitch_name(p) for p in range(128)]
    assert len(set(names)) == 128
    assert names[:13] == ["C-1", "C#-1", "D-1", "D#-1", "E-1", "F-1", "F#-1", "G-1", "G#-1",
                          "A-1", "A#-1", "B-1", "C0"]  # fmt: skip
    assert names[69] == "A4" and names[21] == "A0" and names[108] == "C8"
    assert pitch_name(np.int64(60)) == "C4"
    assert (pitch_name(-1), pitch_name(128), pitch_name(135)) == ("B-2", "G#9", "D#10")
    with pytest.raises(TypeError):
        pitch_name(60.0)


# -------------------------------------------------------------------- sixteen channels


def sixteen_channel_parts() -> list[dict]:
    """Drums on channel 10 plus 15 other channels, two of them with one program."""
    programs = [33, 0, 26, 1, 49, 56, 73, 40, 4, 36, 30, 19, 81, 110, 34]
    parts, melodic = [], iter(range(16))
    for i in range(16):
        if i == 9:
            parts.append(
                {"name": "Drums", "channel": 9, "program": 0, "notes": [(0, 120, 36, 100)]}
            )
            continue
        ch = next(c for c in melodic if c != 9)
        parts.append(
            {
                "name": f"Ch{ch + 1}",
                "channel": ch,
                "program": programs[ch if ch < 9 else ch - 1],
                "notes": [(i * 120, 240, 40 + i, 60 + i)],
            }
        )
    return parts


@pytest.mark.parametrize("midi_type", [0, 1])
@pytest.mark.parametrize("steps_per_beat", STEPS_PER_BEAT)
def test_drums_on_channel_10_plus_15_channels(
    tmp_path: Path, midi_type: int, steps_per_beat: int
) -> None:
    parts = sixteen_channel_parts()
    src = render_midi(tmp_path / "sixteen.mid", parts, midi_type=midi_type)
    used = {m.channel for t in mido.MidiFile(src).tracks for m in t if hasattr(m, "channel")}
    assert used == set(range(16))

    inst = load_midi(src, grouping="instrument", steps_per_beat=steps_per_beat)
    assert inst.tracks == 16
    assert sum(inst.is_drum) == 1
    assert sorted(inst.programs[i] for i in range(16) if not inst.is_drum[i]) == sorted(
        p["program"] for p in parts if p["channel"] != 9
    )
    if midi_type == 1:
        assert inst.track_names == tuple(p["name"] for p in parts)
        assert inst.is_drum[9]
    assert_same_roll(
        inst,
        load_midi(
            save_midi(inst, tmp_path / "i.mid"),
            grouping="instrument",
            steps_per_beat=steps_per_beat,
        ),
    )

    muse = load_midi(src, grouping="musegan", steps_per_beat=steps_per_beat)
    pitches = {
        MUSEGAN_TRACKS[t]: sorted(np.flatnonzero(muse.onsets[t].any(0)) + 24) for t in range(5)
    }
    expected: dict[str, list[int]] = {name: [] for name in MUSEGAN_TRACKS}
    for part in parts:
        pitch = part["notes"][0][2]
        expected[MUSEGAN_TRACKS[musegan_track(part["program"], part["channel"] == 9)]].append(pitch)
    assert pitches == {k: sorted(v) for k, v in expected.items()}
    assert pitches["Drums"] == [36]
    assert_same_roll(
        muse,
        load_midi(
            save_midi(muse, tmp_path / "m.mid"), grouping="musegan", steps_per_beat=steps_per_beat
        ),
    )


def test_type0_file_is_split_by_channel_and_program(tmp_path: Path) -> None:
    parts = [
        {"name": "A", "channel": 0, "program": 33, "notes": [(0, 480, 40, 90)]},
        {"name": "B", "channel": 3, "program": 33, "notes": [(0, 480, 43, 90)]},
        {"name": "C", "channel": 9, "program": 0, "notes": [(0, 480, 38, 90)]},
    ]
    roll = load_midi(render_midi(tmp_path / "t0.mid", parts, midi_type=0), grouping="instrument")
    assert roll.tracks == 3
    assert sorted(zip(roll.programs, roll.is_drum, strict=True)) == [
        (0, True),
        (33, False),
        (33, False),
    ]


# ------------------------------------------------------------------------------- errors


def _valid_midi(tmp_path: Path) -> Path:
    return render_midi(tmp_path / "ok.mid", band_parts(480, 12))


def _assert_input_error(path: Path, *words: str, **options) -> InputError:
    with pytest.raises(InputError) as info:
        load_midi(path, **options)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, message
    assert info.value.exit_code == 2
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    _assert_input_error(tmp_path / "nope.mid", "does not exist", "check the path")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    _assert_input_error(tmp_path, "is a folder, not a MIDI file", "give the path of a file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "song.mid"
    path.write_bytes(b"")
    _assert_input_error(path, "file is empty (0 bytes)", "Standard MIDI File")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_at_once(tmp_path: Path) -> None:
    # Reading a FIFO blocks until something writes to it: without the regular-file check
    # load_midi hung forever. The alarm turns a hang into a failure.
    path = tmp_path / "song.mid"
    os.mkfifo(path)

    def hung(signum, frame):
        pytest.fail("load_midi blocked on a named pipe")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        _assert_input_error(path, "is not a regular file")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("content", [b"hello, this is text\n", b"RIFF\x00\x00WAVEfmt "])
def test_not_a_midi_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "song.mid"
    path.write_bytes(content)
    _assert_input_error(path, "is not a MIDI file", "Standard MIDI File")


def test_smpte_timed_file(tmp_path: Path) -> None:
    data = bytearray(_valid_midi(tmp_path).read_bytes())
    data[12:14] = bytes([0xE8, 40])  # -24 frames per second, 40 ticks per frame
    path = tmp_path / "smpte.mid"
    path.write_bytes(bytes(data))
    _assert_input_error(path, "SMPTE", "ticks per quarter note")


@pytest.mark.parametrize("keep", [14, 20, 0.5, -3])
def test_truncated_midi(tmp_path: Path, keep: float) -> None:
    data = _valid_midi(tmp_path).read_bytes()
    cut = (
        int(len(data) * keep)
        if isinstance(keep, float)
        else (keep if keep > 0 else len(data) + keep)
    )
    path = tmp_path / "cut.mid"
    path.write_bytes(data[:cut])
    _assert_input_error(path, "damaged or truncated", "export it again")


def test_corrupt_bytes_never_escape_as_other_exceptions(tmp_path: Path) -> None:
    data = _valid_midi(tmp_path).read_bytes()
    rng = random.Random(1)
    path = tmp_path / "fuzz.mid"
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(4, len(mutated))] = rng.randrange(256)
        if rng.random() < 0.3:
            mutated = mutated[: rng.randrange(4, len(mutated))]
        path.write_bytes(bytes(mutated))
        try:
            roll = load_midi(path)
        except InputError as error:
            assert str(error).startswith(str(path))
        else:
            assert roll.velocities.min() >= 0 and roll.velocities.max() <= 1


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_file_without_notes(tmp_path: Path, grouping: str) -> None:
    src = render_midi(
        tmp_path / "silent.mid",
        [{"channel": 0, "program": 5, "notes": []}],
        tempos=((0, 100.0),),
        meters=((0, 3, 4),),
    )
    _assert_input_error(src, "has no notes; nothing to protect", grouping=grouping)


def test_file_whose_notes_all_fall_outside(tmp_path: Path) -> None:
    src = render_midi(tmp_path / "high.mid", [{"channel": 0, "notes": [(0, 480, 120, 90)] * 3}])
    _assert_input_error(
        src, "none of its 3 notes can be kept", "outside C1–B7", "nothing to protect"
    )
    fx = render_midi(
        tmp_path / "fx.mid", [{"channel": 0, "program": 120, "notes": [(0, 480, 60, 90)]}]
    )
    _assert_input_error(fx, "sound-effect", "another grouping", grouping="musegan")
    assert load_midi(fx, grouping="instrument").programs == (120,)


def test_roll_too_large_for_memory(tmp_path: Path) -> None:
    notes = [(0, 480, 60, 90), (480 * 500_000, 480, 62, 90)]  # a note ~3 days in
    src = render_midi(tmp_path / "long.mid", [{"channel": 0, "notes": notes}])
    _assert_input_error(src, "too large to hold in memory", "split the file")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"grouping": "lpd17"}, ["'lpd17' is not supported", "'musegan' or 'instrument'"]),
        ({"steps_per_beat": 0}, ["steps per beat 0", "from 1 to"]),
        ({"steps_per_beat": -12}, ["steps per beat -12"]),
        ({"steps_per_beat": 1.5}, ["steps per beat 1.5"]),
        ({"steps_per_beat": True}, ["steps per beat True"]),
        ({"steps_per_beat": "12"}, ["steps per beat '12'"]),
        ({"lowest_pitch": 128}, ["lowest pitch 128", "0 to 127"]),
        ({"lowest_pitch": 100, "n_pitches": 84}, ["run past note 127", "use 1 to 28"]),
        ({"n_pitches": 0}, ["0 pitches"]),
    ],
)
def test_invalid_options(tmp_path: Path, options: dict, words: list[str]) -> None:
    _assert_input_error(_valid_midi(tmp_path), *words, **options)


# ---------------------------------------------------------------- real files (music21)

# (corpus name, tune number in a multi-tune file): two Bach chorales (4 voices), an Essen
# folk song, a piano trio by Clara Schumann (violin, cello, piano with chords)
CORPUS_PIECES = (
    ("bach/bwv66.6", None),
    ("bach/bwv7.7", None),
    ("essenFolksong/han1", 5),
    ("schumann_clara/opus17", None),
)


@pytest.fixture(scope="module")
def corpus_midis(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few music21 corpus pieces written to MIDI by music21 (skipped without it)."""
    music21 = pytest.importorskip("music21")
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for name, number in CORPUS_PIECES:
        try:
            score = music21.corpus.parse(name, number=number)
        except Exception:  # a corpus piece missing from this music21 version
            continue
        if hasattr(score, "scores"):  # an opus: take its first score
            score = score.scores[0]
        path = folder / (name.replace("/", "_") + ".mid")
        score.write("midi", fp=str(path))
        paths.append(path)
    if not paths:
        pytest.skip("no music21 corpus piece could be converted")
    return paths


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("steps_per_beat", STEPS_PER_BEAT)
def test_real_files_are_fixed_points(
    corpus_midis: list[Path], tmp_path: Path, grouping: str, steps_per_beat: int
) -> None:
    for src in corpus_midis:
        first = load_midi(src, grouping=grouping, steps_per_beat=steps_per_beat)
        out = save_midi(first, tmp_path / src.name)
        second = load_midi(out, grouping=grouping, steps_per_beat=steps_per_beat)
        assert_same_roll(first, second)
        score = symusic.Score(str(src))
        source_notes = score.note_num()
        # the source itself doubles a few notes (two voices of one staff on one key)
        doubled = sum(
            len(t.notes) - len({(n.time, n.pitch) for n in t.notes}) for t in score.tracks
        )
        dropped = sum(int(w.split()[0]) for w in first.warnings)
        if grouping == "instrument" and steps_per_beat >= 12:
            # each voice keeps every note (at 4 steps a beat, triplets may collide)
            assert onset_count(first) + dropped + doubled == source_notes, src.name
        else:  # merged voices may share a pitch and start
            assert onset_count(first) + dropped <= source_notes
            assert onset_count(first) >= 0.5 * (source_notes - dropped)
        assert onset_count(second) == onset_count(first)
