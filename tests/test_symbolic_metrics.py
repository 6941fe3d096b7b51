"""Symbolic metrics (EB, UPC, QN, DP, TD) on hand-built piano rolls, plus muspy cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import harmonycloak.evaluate as evaluate
from harmonycloak.clip import PianoRoll, TimeSignature
from harmonycloak.evaluate.metrics import symbolic
from harmonycloak.evaluate.metrics.symbolic import (
    bar_lengths,
    drum_pattern_rate,
    empty_bar_rate,
    pitch_class_counts,
    qualified_note_rate,
    roll_metrics,
    tonal_centroid,
    tonal_distance,
    tonal_distances,
    track_metrics,
    used_pitch_classes,
)

BAR = 48  # steps per 4/4 bar at 12 steps per beat
BEAT = 12
LOW = 24  # pitch index 0 = C1
C, E, G = 60, 64, 67


def track(steps: int, notes: list[tuple[int, int, int]], velocity: float = 0.8) -> np.ndarray:
    """A [steps, 84] roll with (start step, length in steps, MIDI pitch) notes."""
    x = np.zeros((steps, 84), np.float32)
    for start, length, pitch in notes:
        x[start : start + length, pitch - LOW] = velocity
    return x


def onsets_of(steps: int, notes: list[tuple[int, int, int]]) -> np.ndarray:
    marks = np.zeros((steps, 84), bool)
    for start, _, pitch in notes:
        marks[start, pitch - LOW] = True
    return marks


def chord(steps: int, pitches: tuple[int, ...]) -> np.ndarray:
    return track(steps, [(0, steps, p) for p in pitches])


def all_metrics(x: np.ndarray, y: np.ndarray | None = None) -> list[float]:
    y = x if y is None else y
    return [
        empty_bar_rate(x, steps_per_bar=BAR),
        used_pitch_classes(x, steps_per_bar=BAR),
        qualified_note_rate(x),
        drum_pattern_rate(x, steps_per_bar=BAR),
        tonal_distance(x, y, window_steps=BEAT),
    ]


# ------------------------------------------------------------------------ EB


def test_one_empty_bar_of_four_is_a_quarter() -> None:
    x = track(4 * BAR, [(0, 12, C), (BAR, 12, E), (3 * BAR, 12, G)])  # bar 3 empty
    assert empty_bar_rate(x, steps_per_bar=BAR) == pytest.approx(0.25)


def test_a_note_held_into_a_bar_fills_it() -> None:
    x = track(2 * BAR, [(40, 20, C)])  # from bar 1 into bar 2
    assert empty_bar_rate(x, steps_per_bar=BAR) == 0.0


def test_a_cut_short_last_bar_counts() -> None:
    x = track(BAR + 10, [(0, 12, C)])  # 2nd bar: 10 silent steps
    assert empty_bar_rate(x, steps_per_bar=BAR) == pytest.approx(0.5)


def test_bar_lengths_as_a_sequence() -> None:
    x = track(BAR + 36, [(BAR, 12, C)])  # a 4/4 bar (empty), then a 3/4 bar
    assert empty_bar_rate(x, steps_per_bar=[BAR, 36]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="add up to 96 steps but the roll has 84"):
        empty_bar_rate(x, steps_per_bar=[BAR, BAR])


# ----------------------------------------------------------------------- UPC


def test_c_e_g_quarters_use_three_pitch_classes() -> None:
    x = track(BAR, [(0, 12, C), (12, 12, E), (24, 12, G), (36, 12, C + 12)])
    assert used_pitch_classes(x, steps_per_bar=BAR) == 3.0


def test_upc_skips_empty_bars_and_averages_the_rest() -> None:
    chromatic = [(BAR + i * 4, 4, 60 + i) for i in range(12)]
    x = track(3 * BAR, [(0, 12, C), (12, 12, E), *chromatic])  # 2, 12 and an empty bar
    assert used_pitch_classes(x, steps_per_bar=BAR) == pytest.approx(7.0)


def test_pitch_classes_follow_lowest_pitch() -> None:
    x = np.zeros((4, 12), np.float32)
    x[:, 0] = 1  # index 0 is MIDI 21 = A0 with lowest_pitch=21
    counts = pitch_class_counts(x, lowest_pitch=21)
    assert counts[:, 9].tolist() == [1, 1, 1, 1] and counts.sum() == 4
    assert pitch_class_counts(track(2, [(0, 2, 61), (0, 2, 73)]))[:, 1].tolist() == [2, 2]


# ------------------------------------------------------------------------ QN


def test_notes_of_two_and_four_steps_give_half() -> None:
    x = track(BAR, [(0, 2, C), (10, 4, E)])
    assert qualified_note_rate(x) == pytest.approx(0.5)
    assert qualified_note_rate(x, min_steps=2) == 1.0


def test_onsets_split_repeated_notes() -> None:
    notes = [(0, 3, C), (3, 3, C), (6, 2, C)]  # one run of 8 steps, three notes
    x = track(BAR, notes)
    assert qualified_note_rate(x) == 1.0  # one note of 8 steps
    assert qualified_note_rate(x, onsets=onsets_of(BAR, notes)) == pytest.approx(2 / 3)


def test_onsets_on_silent_cells_are_ignored() -> None:
    x = track(BAR, [(0, 6, C)])
    marks = onsets_of(BAR, [(0, 6, C), (20, 1, E)])
    assert qualified_note_rate(x, onsets=marks) == 1.0


def test_notes_at_the_roll_edges_and_across_bars() -> None:
    x = track(BAR, [(0, 1, C), (BAR - 2, 2, E)])  # first and last steps of the roll
    assert qualified_note_rate(x) == 0.0
    assert qualified_note_rate(track(2 * BAR, [(40, 20, G)])) == 1.0  # one note, not cut


# ------------------------------------------------------------------------ DP


HAT = 42


def test_hi_hats_on_every_sixteenth_are_all_in_pattern() -> None:
    notes = [(s, 1, HAT) for s in range(0, 2 * BAR, 3)]
    assert drum_pattern_rate(track(2 * BAR, notes), steps_per_bar=BAR) == 1.0


def test_eighth_note_triplets_are_mostly_off_the_grid() -> None:
    notes = [(s, 1, HAT) for s in range(0, BAR, 4)]  # 12 per bar, on beats every 3rd
    x = track(BAR, notes)
    assert drum_pattern_rate(x, steps_per_bar=BAR) == pytest.approx(4 / 12)
    # steps 4, 8 (and 16, 20, ...) are one step from the grid: with MuseGAN's credit
    assert drum_pattern_rate(x, steps_per_bar=BAR, near_weight=0.1) == pytest.approx(
        (4 + 0.1 * 8) / 12
    )


def test_held_drum_notes_count_once_at_their_onset() -> None:
    x = track(BAR, [(0, 2, 36), (3, 1, HAT), (7, 5, 38)])  # kick, hat, off-grid snare
    assert drum_pattern_rate(x, steps_per_bar=BAR) == pytest.approx(2 / 3)


def test_dp_grid_is_relative_to_each_bar() -> None:
    x = track(36 + BAR, [(36, 1, 36), (39, 1, 36)])  # a 3/4 bar, then 4/4
    assert drum_pattern_rate(x, steps_per_bar=[36, BAR], grid_steps=3) == 1.0
    with pytest.raises(ValueError, match="pass grid_steps"):
        drum_pattern_rate(x, steps_per_bar=[36, BAR])
    with pytest.raises(ValueError, match="pass grid_steps"):
        drum_pattern_rate(track(36, []), steps_per_bar=36)


# ------------------------------------------------------------------------ TD


def test_identical_tracks_have_zero_distance() -> None:
    x = track(2 * BAR, [(0, 24, C), (0, 24, E), (24, 48, G), (50, 30, 72)])
    assert tonal_distance(x, x.copy(), window_steps=BEAT) == pytest.approx(0.0, abs=1e-12)


def test_c_major_against_f_sharp_major_by_hand() -> None:
    # Hand computation (Harte et al. 2006, r = 1, 1, 0.5): a transposition by a tritone
    # flips the fifths and minor-thirds planes and keeps the major-thirds plane, so the
    # distance is 2 * sqrt(|fifths|^2 + |minor thirds|^2) of the C major triad:
    # fifths: angles 0, 2pi/3, pi/6 -> |sum|^2 / 9 = (2 + sqrt3) / 9;
    # minor thirds: angles 0, 0, pi/2 -> |sum|^2 / 9 = 5 / 9.
    expected = 2 / 3 * math.sqrt(7 + math.sqrt(3))
    td = tonal_distance(chord(BAR, (C, E, G)), chord(BAR, (66, 70, 73)), window_steps=BEAT)
    assert td == pytest.approx(expected, rel=1e-9)  # 1.97
    near = tonal_distance(chord(BAR, (C, E, G)), chord(BAR, (67, 71, 74)), window_steps=BEAT)
    assert near < td  # G major is closer to C major than F# major is


def test_single_tone_centroids_by_hand() -> None:
    c = np.zeros(12)
    c[0] = 3.0  # C: angle 0 in every plane -> (0, r1, 0, r2, 0, r3)
    assert tonal_centroid(c) == pytest.approx([0, 1, 0, 1, 0, 0.5], abs=1e-12)
    assert np.isnan(tonal_centroid(np.zeros(12))).all()
    assert np.linalg.norm(tonal_centroid(np.eye(12)), axis=1) == pytest.approx([1.5] * 12)


def test_td_skips_windows_where_a_track_is_silent() -> None:
    x = track(2 * BEAT, [(0, 2 * BEAT, C)])
    y = track(2 * BEAT, [(BEAT, BEAT, C)])  # silent in the first beat
    assert tonal_distance(x, y, window_steps=BEAT) == 0.0
    assert math.isnan(tonal_distance(x, track(2 * BEAT, []), window_steps=BEAT))
    with pytest.raises(ValueError, match="same"):
        tonal_distance(x, x[:-1], window_steps=BEAT)


def test_td_is_symmetric_and_weighs_duration() -> None:
    x = track(BEAT, [(0, 12, C), (0, 12, E)])
    y = track(BEAT, [(0, 12, C), (0, 3, 66)])  # C with a short F#
    z = track(BEAT, [(0, 12, C), (0, 12, 66)])  # C with a long F#
    assert tonal_distance(x, y, window_steps=BEAT) == pytest.approx(
        tonal_distance(y, x, window_steps=BEAT)
    )
    assert tonal_distance(x, y, window_steps=BEAT) < tonal_distance(x, z, window_steps=BEAT)


# ------------------------------------------------------------- edges, invariants


def test_empty_inputs_give_nan() -> None:
    empty = np.zeros((0, 84), np.float32)
    assert all(math.isnan(v) for v in all_metrics(empty))
    silent = np.zeros((2 * BAR, 84), np.float32)
    values = all_metrics(silent)
    assert values[0] == 1.0 and all(math.isnan(v) for v in values[1:])


def test_input_must_be_one_track() -> None:
    with pytest.raises(ValueError, match=r"roll.velocities\[track\]"):
        empty_bar_rate(np.zeros((2, BAR, 84)), steps_per_bar=BAR)


def random_track(seed: int, steps: int = 4 * BAR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    notes = [
        (int(rng.integers(0, steps - 1)), int(rng.integers(1, 20)), int(rng.integers(36, 90)))
        for _ in range(25)
    ]
    return track(steps, notes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_velocities_do_not_change_any_metric(seed: int) -> None:
    x, y = random_track(seed), random_track(seed + 10)
    before = x.copy()
    reference = all_metrics(x, y)
    rng = np.random.default_rng(seed)
    for variant in (0.25 * x, x > 0, (x > 0) * rng.uniform(0.01, 1, x.shape).astype(np.float32)):
        assert all_metrics(variant, y) == pytest.approx(reference, nan_ok=True)
    np.testing.assert_array_equal(x, before)  # inputs are left unchanged


@pytest.mark.parametrize("semitones", [1, 5, 6, -7])
def test_transposing_both_tracks_keeps_td(semitones: int) -> None:
    x, y = random_track(3), random_track(4)
    reference = tonal_distance(x, y, window_steps=BEAT)
    shifted = [np.roll(t, semitones, axis=1) for t in (x, y)]  # notes stay inside C1-B7
    assert tonal_distance(*shifted, window_steps=BEAT) == pytest.approx(reference, rel=1e-9)
    assert tonal_distance(x, y, window_steps=BEAT, lowest_pitch=LOW + semitones) == pytest.approx(
        reference, rel=1e-9
    )


# ---------------------------------------------------------------- PianoRoll level


def make_roll(tracks: list[np.ndarray], names: list[str], drums: list[bool], **kw) -> PianoRoll:
    return PianoRoll(
        np.stack(tracks).astype(np.float32),
        steps_per_beat=BEAT,
        lowest_pitch=LOW,
        programs=(0,) * len(tracks),
        is_drum=tuple(drums),
        track_names=tuple(names),
        **kw,
    )


def test_bar_lengths_follow_time_signatures() -> None:
    steps = 2 * BAR + 2 * 36 + 10
    roll = make_roll(
        [np.zeros((steps, 84))],
        ["Piano"],
        [False],
        time_signatures=(TimeSignature(0, 4, 4), TimeSignature(2 * BAR, 3, 4)),
    )
    assert bar_lengths(roll).tolist() == [48, 48, 36, 36, 10]
    six_eight = make_roll(
        [np.zeros((80, 84))], ["P"], [False], time_signatures=(TimeSignature(0, 6, 8),)
    )
    assert bar_lengths(six_eight).tolist() == [36, 36, 8]
    assert bar_lengths(make_roll([np.zeros((0, 84))], ["P"], [False])).size == 0


def test_roll_metrics_per_track_and_pair() -> None:
    steps = 2 * BAR
    bass = track(steps, [(0, 24, 36), (24, 24, 43)])
    drums = track(steps, [(s, 1, HAT) for s in range(0, steps, 3)])
    piano = track(steps, [(0, BAR, C), (0, BAR, E), (0, BAR, G)])  # 2nd bar empty
    names = ["Bass", "Drums", "Piano", "Piano"]
    roll = make_roll([bass, drums, piano, piano], names, [False, True, False, False])
    result = roll_metrics(roll)
    tracks = result["tracks"]
    assert list(tracks) == ["Bass", "Drums", "Piano", "Piano (2)"]
    assert tracks["Drums"] == {"empty_bar_rate": 0.0, "drum_pattern_rate": 1.0}
    assert tracks["Piano"] == {
        "empty_bar_rate": 0.5,
        "used_pitch_classes": 3.0,
        "qualified_note_rate": 1.0,
    }
    assert tracks["Bass"]["used_pitch_classes"] == 2.0
    pairs = result["tonal_distance"]
    assert list(pairs) == ["Bass-Piano", "Bass-Piano (2)", "Piano-Piano (2)"]
    assert pairs["Piano-Piano (2)"] == 0.0 and pairs["Bass-Piano"] > 0
    assert set(symbolic.METRIC_ABBREVIATIONS) >= {k for v in tracks.values() for k in v}


def test_track_metrics_use_onsets_and_resolution() -> None:
    notes = [(0, 2, C), (2, 2, C), (4, 2, C)]  # three 2-step notes = a 16th note at 8/beat
    x = track(BAR, notes)
    roll = make_roll([x], ["Piano"], [False], onsets=onsets_of(BAR, notes)[None])
    assert track_metrics(roll)["Piano"]["qualified_note_rate"] == 0.0  # needs 3 steps
    assert track_metrics(roll, qn_min_beats=0.125)["Piano"]["qualified_note_rate"] == 1.0
    slow = PianoRoll(
        x[None], steps_per_beat=8, lowest_pitch=LOW, programs=(0,), is_drum=(False,),
        track_names=("Piano",), onsets=onsets_of(BAR, notes)[None],
    )  # fmt: skip
    assert track_metrics(slow)["Piano"]["qualified_note_rate"] == 1.0  # 16th = 2 steps


def test_drum_only_roll() -> None:
    drums = track(BAR, [(s, 1, 36) for s in range(0, BAR, 6)])
    roll = make_roll([drums], ["Drums"], [True])
    assert tonal_distances(roll) == {}
    assert track_metrics(roll) == {"Drums": {"empty_bar_rate": 0.0, "drum_pattern_rate": 1.0}}


def test_empty_roll_metrics_are_nan() -> None:
    roll = make_roll([np.zeros((0, 84)), np.zeros((0, 84))], ["Piano", "Drums"], [False, True])
    result = roll_metrics(roll)
    assert all(math.isnan(v) for values in result["tracks"].values() for v in values.values())
    assert result["tonal_distance"] == {}


def test_public_names_are_exported() -> None:
    for name in symbolic.__all__:
        assert getattr(evaluate, name) is getattr(symbolic, name)


# ------------------------------------------------------------------ muspy twins


def muspy_music(x: np.ndarray, is_drum: bool = False):
    """The notes of one track (runs of sounding steps) as a muspy Music at 12 per beat."""
    muspy = pytest.importorskip("muspy")
    notes = []
    for p, row in enumerate((x > 0).T):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        for start, end in zip(edges[::2], edges[1::2]):
            notes.append(
                muspy.Note(time=int(start), pitch=p + LOW, duration=int(end - start), velocity=64)
            )
    notes.sort(key=lambda n: (n.time, n.pitch))
    return muspy.Music(resolution=BEAT, tracks=[muspy.Track(is_drum=is_drum, notes=notes)])


def bar_confined_track(seed: int, bars: int = 6) -> np.ndarray:
    """Random notes that end before their bar line (muspy's empty_measure_rate counts a
    note ending on a bar line in the next bar), some bars left empty, last bar used."""
    rng = np.random.default_rng(seed)
    notes = []
    for bar in range(bars):
        if bar < bars - 1 and rng.random() < 0.35:
            continue
        for _ in range(int(rng.integers(1, 6))):
            start = int(rng.integers(0, BAR - 2))
            length = int(rng.integers(1, BAR - 1 - start))
            notes.append((bar * BAR + start, length, int(rng.integers(30, 100))))
    return track(bars * BAR, notes)


@pytest.mark.parametrize("seed", range(4))
def test_empty_bar_rate_matches_muspy(seed: int) -> None:
    muspy = pytest.importorskip("muspy")
    x = bar_confined_track(seed)
    assert empty_bar_rate(x, steps_per_bar=BAR) == pytest.approx(
        muspy.empty_measure_rate(muspy_music(x), BAR)
    )


@pytest.mark.parametrize("seed", range(4))
def test_used_pitch_classes_matches_muspy_bar_by_bar(seed: int) -> None:
    muspy = pytest.importorskip("muspy")
    x = bar_confined_track(seed)
    per_bar = [
        muspy.n_pitch_classes_used(muspy_music(x[b : b + BAR]))
        for b in range(0, x.shape[0], BAR)
        if x[b : b + BAR].any()
    ]
    assert used_pitch_classes(x, steps_per_bar=BAR) == pytest.approx(np.mean(per_bar))


@pytest.mark.parametrize("seed", range(4))
def test_drum_pattern_rate_matches_muspy_duple(seed: int) -> None:
    muspy = pytest.importorskip("muspy")
    rng = np.random.default_rng(seed)
    steps = 4 * BAR
    grid = [(s, 1, int(rng.choice([36, 38, 42]))) for s in range(0, steps, 3) if rng.random() < 0.6]
    off = [(int(s), 1, 46) for s in rng.integers(0, steps, 20)]
    x = track(steps, grid + off)
    ours = drum_pattern_rate(x, steps_per_bar=BAR)
    assert 0 < ours < 1
    assert ours == pytest.approx(muspy.drum_in_pattern_rate(muspy_music(x, is_drum=True), "duple"))
