"""Symbolic-music metrics of MuseGAN: EB, UPC, QN, DP and TD (HarmonyCloak paper, 5.1).

The HarmonyCloak paper measures music from generative models trained on clean and on
unlearnable data with the intra-track and inter-track metrics of MuseGAN (Dong, Hsiao,
Yang and Yang, "MuseGAN: Multi-track sequential generative adversarial networks for
symbolic music generation and accompaniment", AAAI 2018, section "Objective metrics"):

* EB, :func:`empty_bar_rate`: fraction of bars without any note;
* UPC, :func:`used_pitch_classes`: distinct pitch classes per non-empty bar (0-12);
* QN, :func:`qualified_note_rate`: fraction of notes lasting at least ``min_steps``;
* DP, :func:`drum_pattern_rate`: fraction of drum onsets on the sixteenth-note grid;
* TD, :func:`tonal_distance`: mean distance of two tracks' tonal centroids per beat.

The single-track functions take one track's piano roll, ``[steps, pitches]``
(velocities, counts or bools: every metric sees only *whether* a cell sounds, ``x > 0``,
as MuseGAN's binarized rolls do, so velocities never change a value) plus its layout as
keyword arguments: ``steps_per_bar`` (an int for a fixed meter, or the length of every
bar in steps, see :func:`bar_lengths`) and ``lowest_pitch`` (the MIDI note of pitch
index 0; 24 = C1 as in MuseGAN). A bar that the roll cuts short at its end still counts
as a bar. Rates are fractions in [0, 1]; the papers' tables print them x 100 (%).
Every metric returns NaN when it has nothing to measure (no bars, no notes, no
overlapping windows), so callers can average with :func:`numpy.nanmean`.

:func:`track_metrics`, :func:`tonal_distances` and :func:`roll_metrics` apply them to
every track of a :class:`~harmonycloak.clip.PianoRoll`, with the bar layout read from
its time signatures.

We follow the paper's definitions; where they leave a choice open we follow MuseGAN's
AAAI 2018 evaluation code (``v1/musegan/eval/metrics.py`` of salu133445/musegan) and
say so in each function, but not its slips: it builds chroma with
``reshape(steps, 12, -1)``, which sums runs of 7 adjacent pitches instead of the pitch
classes; pypianoroll 1.0.4 carries similar ones (noted in each function).

muspy (Dong et al., ISMIR 2020) has twins for EB (``empty_measure_rate``), UPC on a
single bar (``n_pitch_classes_used``) and DP in 4/4 (``drum_in_pattern_rate(music,
"duple")``); QN and TD have none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from harmonycloak.clip import PianoRoll

__all__ = [
    "METRIC_ABBREVIATIONS",
    "bar_lengths",
    "drum_pattern_rate",
    "empty_bar_rate",
    "pitch_class_counts",
    "qualified_note_rate",
    "roll_metrics",
    "tonal_centroid",
    "tonal_distance",
    "tonal_distances",
    "track_metrics",
    "used_pitch_classes",
]

METRIC_ABBREVIATIONS: dict[str, str] = {
    "empty_bar_rate": "EB",
    "used_pitch_classes": "UPC",
    "qualified_note_rate": "QN",
    "drum_pattern_rate": "DP",
    "tonal_distance": "TD",
}
"""The papers' short names of the keys that :func:`track_metrics` and
:func:`roll_metrics` return."""

BarLayout = int | Sequence[int] | np.ndarray

# Harte, Sandler & Gasser (2006), eq. 2: radii of the circle of fifths, the circle of
# minor thirds and the circle of major thirds.
_R_FIFTHS, _R_MINOR_THIRDS, _R_MAJOR_THIRDS = 1.0, 1.0, 0.5


# ---------------------------------------------------------------------------- helpers


def _active(x: npt.ArrayLike, name: str = "x") -> np.ndarray:
    """``x > 0`` as bool ``[steps, pitches]``."""
    array = np.asarray(x)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be one track's piano roll [steps, pitches], got shape {array.shape}; "
            "pass roll.velocities[track] for a PianoRoll"
        )
    return array > 0


def _bar_starts(n_steps: int, steps_per_bar: BarLayout) -> np.ndarray:
    """First step of every bar (int64); empty when ``n_steps`` is 0."""
    if isinstance(steps_per_bar, (int, np.integer)) and not isinstance(steps_per_bar, bool):
        if steps_per_bar < 1:
            raise ValueError(f"steps_per_bar must be at least 1, got {steps_per_bar}")
        return np.arange(0, n_steps, int(steps_per_bar), dtype=np.int64)
    lengths = np.asarray(steps_per_bar, dtype=np.int64)
    if lengths.ndim != 1 or (lengths.size and lengths.min() < 1):
        raise ValueError(
            "steps_per_bar must be an int or a sequence of positive bar lengths in steps, "
            f"got {steps_per_bar!r}"
        )
    if int(lengths.sum()) != n_steps:
        raise ValueError(
            f"the bar lengths add up to {int(lengths.sum())} steps but the roll has "
            f"{n_steps}; use bar_lengths(roll) for a PianoRoll"
        )
    if lengths.size == 0:
        return lengths
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)


def _per_bar_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of ``values`` (first axis = steps) over every bar."""
    return np.add.reduceat(values, starts, axis=0)


def _notes(active: np.ndarray, onsets: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """First step and length in steps of every note (each int64 ``[notes]``).

    A note starts where a pitch begins to sound, or where ``onsets`` marks a new note
    while it sounds (a repeated note), and lasts until its pitch falls silent or the
    next onset; onsets on silent cells are ignored.
    """
    n_steps, n_pitches = active.shape
    sounding = np.zeros((n_pitches, n_steps + 1), dtype=bool)  # a silent step ends each row
    sounding[:, :n_steps] = active.T
    start = sounding.copy()
    start[:, 1:] &= ~sounding[:, :-1]
    if onsets is not None:
        marks = np.asarray(onsets, dtype=bool)
        if marks.shape != active.shape:
            raise ValueError(f"onsets must have the shape of x {active.shape}, got {marks.shape}")
        start[:, :n_steps] |= marks.T & active.T
    boundaries = np.flatnonzero((start | ~sounding).ravel())
    first = np.flatnonzero(start.ravel())
    ends = boundaries[np.searchsorted(boundaries, first, side="right")]
    return first % (n_steps + 1), ends - first


def pitch_class_counts(x: npt.ArrayLike, *, lowest_pitch: int = 24) -> np.ndarray:
    """Sounding cells per step and pitch class: int64 ``[steps, 12]``, column 0 = C.

    Pitch index ``i`` of ``x`` is MIDI note ``lowest_pitch + i``, of pitch class
    ``(lowest_pitch + i) % 12``; a roll of 0 steps gives shape ``[0, 12]``. This is the
    unnormalized chroma that :func:`used_pitch_classes` and :func:`tonal_distance` use.
    (pypianoroll 1.0.4 and the MuseGAN code reshape the pitch axis to ``(12, -1)``
    instead, which adds up runs of neighbouring pitches.)
    """
    active = _active(x)
    classes = (lowest_pitch + np.arange(active.shape[1])) % 12
    one_hot = (classes[:, None] == np.arange(12)[None, :]).astype(np.int64)
    return active.astype(np.int64) @ one_hot


# ---------------------------------------------------------------------- intra-track


def empty_bar_rate(x: npt.ArrayLike, *, steps_per_bar: BarLayout) -> float:
    """EB: fraction of bars in which no note sounds.

    .. math:: EB = \\frac{\\#\\{\\text{bars without a sounding cell}\\}}{\\#\\text{bars}}

    A note held over from the bar before counts as sounding (the bar is not empty).

    Args:
        x: one track, ``[steps, pitches]``; cells ``> 0`` sound.
        steps_per_bar: steps per bar (48 = a 4/4 bar at 12 steps per beat), or every
            bar's length in steps (summing to ``steps``).

    Returns:
        A fraction in [0, 1] (x 100 for the paper's %); NaN for a roll of 0 steps.

    Source: MuseGAN (Dong et al., AAAI 2018): EB, the ratio of empty bars in %. muspy's
    ``empty_measure_rate`` is the twin on a fixed meter (it counts a note ending on a bar
    line as sounding in the next bar); pypianoroll 1.0.4's ``empty_beat_rate`` returns
    the rate of *non-empty* beats.
    """
    active = _active(x)
    starts = _bar_starts(active.shape[0], steps_per_bar)
    if starts.size == 0:
        return math.nan
    sounding = _per_bar_sum(active.any(axis=1).astype(np.int64), starts) > 0
    return float(1.0 - sounding.mean())


def used_pitch_classes(
    x: npt.ArrayLike, *, steps_per_bar: BarLayout, lowest_pitch: int = 24
) -> float:
    """UPC: mean number of distinct pitch classes per non-empty bar (0-12).

    .. math:: UPC = \\frac{1}{|B|} \\sum_{b \\in B} \\#\\{c : \\text{class } c
        \\text{ sounds in bar } b\\},\\quad B = \\text{non-empty bars}

    Empty bars are left out of the mean (they are EB's business), as the MuseGAN
    AAAI 2018 evaluation code does (it scores an empty bar NaN and takes the nanmean);
    the later MuseGAN code (``src/musegan/metrics.py``) averages over all bars, which
    mixes the two metrics.

    Args:
        x: one track, ``[steps, pitches]``; cells ``> 0`` sound.
        steps_per_bar: steps per bar, or every bar's length in steps.
        lowest_pitch: MIDI note of pitch index 0 (24 = C1).

    Returns:
        Pitch classes per bar, in [1, 12]; NaN when every bar is empty (or no steps).

    Source: MuseGAN (Dong et al., AAAI 2018): UPC, the number of used pitch classes per
    bar, 0 to 12. muspy's ``n_pitch_classes_used`` is the twin on one bar (it
    counts over the whole piece).
    """
    counts = pitch_class_counts(x, lowest_pitch=lowest_pitch)
    starts = _bar_starts(counts.shape[0], steps_per_bar)
    if starts.size == 0:
        return math.nan
    per_bar = _per_bar_sum(counts, starts) > 0
    used = per_bar.sum(axis=1)
    non_empty = used > 0
    if not non_empty.any():
        return math.nan
    return float(used[non_empty].mean())


def qualified_note_rate(
    x: npt.ArrayLike, *, onsets: npt.ArrayLike | None = None, min_steps: int = 3
) -> float:
    """QN: fraction of notes that last at least ``min_steps`` steps.

    .. math:: QN = \\frac{\\#\\{\\text{notes with duration} \\ge \\text{min\\_steps}\\}}
        {\\#\\text{notes}}

    Notes are the runs of sounding cells of each pitch, split at ``onsets`` (bool, like
    ``x``) when given, so repeated notes stay apart. A note held across a bar line is one
    note (the AAAI 2018 MuseGAN code cut notes at bar lines, since it scored single
    bars). The rate is over all notes of the track, not a mean of per-bar rates.

    Args:
        x: one track, ``[steps, pitches]``; cells ``> 0`` sound.
        onsets: bool ``[steps, pitches]``, True on the first step of every note, or None
            to take every run of sounding steps as one note.
        min_steps: shortest qualified duration in steps. The default 3 is the papers'
            "three time steps"; at 12 steps per beat (48 per 4/4 bar) that is a
            sixteenth note. MuseGAN meant a 32nd note at 24 steps per beat, which is
            ``min_steps=2`` at 12 steps per beat (its later code's threshold).

    Returns:
        A fraction in [0, 1] (x 100 for the paper's %); NaN when there is no note.

    Source: MuseGAN (Dong et al., AAAI 2018): QN, the ratio in % of qualified notes,
    notes no shorter than three time steps (a 32nd note at its 24 steps per beat); it
    shows whether the music is overly fragmented. No muspy twin. (pypianoroll 1.0.4's
    ``qualified_note_rate`` fails on uint8 rolls: its padded diff wraps around.)
    """
    if min_steps < 1:
        raise ValueError(f"min_steps must be at least 1, got {min_steps}")
    _, lengths = _notes(_active(x), onsets)
    if lengths.size == 0:
        return math.nan
    return float(np.mean(lengths >= min_steps))


def drum_pattern_rate(
    x: npt.ArrayLike,
    *,
    steps_per_bar: BarLayout,
    onsets: npt.ArrayLike | None = None,
    grid_steps: float | None = None,
    near_weight: float = 0.0,
) -> float:
    """DP: fraction of drum notes that start on the 8- or 16-beat grid.

    .. math:: DP = \\frac{\\#\\{\\text{onsets on the grid}\\} + w \\cdot
        \\#\\{\\text{onsets one step off it}\\}}{\\#\\text{onsets}}

    The grid is every sixteenth note from the start of each bar: step offsets within
    the bar that are multiples of ``grid_steps`` (``steps_per_bar / 16`` in 4/4, i.e.
    3 at 48 steps per bar); an "8-beat" pattern (eighth notes) lies on it too. Every
    note counts once, at its onset (see :func:`qualified_note_rate` for how notes are
    found); all pitches (drum keys) count.

    Args:
        x: the drum track, ``[steps, pitches]``; cells ``> 0`` sound.
        steps_per_bar: steps per bar, or every bar's length in steps.
        onsets: bool ``[steps, pitches]`` first steps of notes, or None (runs).
        grid_steps: grid spacing in steps (may be fractional; an onset is on the grid
            when its offset in the bar is a whole multiple of it). None:
            ``steps_per_bar / 16``, which needs an int ``steps_per_bar`` divisible by 16.
        near_weight: credit ``w`` for an onset one step before or after a grid point.
            0 (the default) is the paper's definition; the MuseGAN code credited 0.3
            (at 96 steps per bar) or 0.1 (at 48).

    Returns:
        A fraction in [0, 1] (x 100 for the paper's %); NaN when there is no note.

    Source: MuseGAN (Dong et al., AAAI 2018): DP, the ratio in % of drum notes in 8- or
    16-beat patterns, the common ones of rock songs in 4/4 time. In 4/4 with bars starting
    on beats it equals muspy's ``drum_in_pattern_rate(music, "duple")``, which marks the
    sixteenth-note positions of one beat. (pypianoroll 1.0.4's version multiplies a
    one-beat mask with the whole roll's onsets, so it only works on a one-beat roll.)
    """
    active = _active(x)
    starts = _bar_starts(active.shape[0], steps_per_bar)
    if grid_steps is None:
        if not isinstance(steps_per_bar, (int, np.integer)) or steps_per_bar % 16:
            raise ValueError(
                f"cannot place a sixteenth-note grid in bars of {steps_per_bar!r} steps; "
                "pass grid_steps (steps per sixteenth note: steps_per_beat / 4)"
            )
        grid_steps = int(steps_per_bar) // 16
    if not grid_steps > 0:
        raise ValueError(f"grid_steps must be positive, got {grid_steps}")
    step, _ = _notes(active, onsets)
    if step.size == 0:
        return math.nan
    bar = np.searchsorted(starts, step, side="right") - 1
    offset = (step - starts[bar]).astype(np.float64)

    def on_grid(position: np.ndarray) -> np.ndarray:
        quotient = position / grid_steps
        return np.abs(quotient - np.round(quotient)) < 1e-9

    hit = on_grid(offset)
    near = ~hit & (on_grid(offset - 1) | on_grid(offset + 1))
    return float((hit.sum() + near_weight * near.sum()) / step.size)


# ---------------------------------------------------------------------- inter-track


def tonal_centroid(chroma: npt.ArrayLike) -> np.ndarray:
    """The 6-D tonal centroid of 12-bin chroma vectors: ``[..., 12]`` -> ``[..., 6]``.

    .. math:: \\zeta_d = \\frac{1}{\\lVert c \\rVert_1} \\sum_{l=0}^{11} \\Phi_{d,l}\\, c_l

    with :math:`\\Phi` the rows :math:`r_1 \\sin(l \\tfrac{7\\pi}{6})`,
    :math:`r_1 \\cos(l \\tfrac{7\\pi}{6})` (circle of fifths),
    :math:`r_2 \\sin(l \\tfrac{3\\pi}{2})`, :math:`r_2 \\cos(l \\tfrac{3\\pi}{2})` (minor
    thirds), :math:`r_3 \\sin(l \\tfrac{2\\pi}{3})`, :math:`r_3 \\cos(l \\tfrac{2\\pi}{3})`
    (major thirds), :math:`r_1 = r_2 = 1, r_3 = 0.5`, chroma bin ``l`` = pitch class
    (0 = C). A centroid lies within 1.5 of the origin, so two are at most 3 apart.
    All-zero chroma gives NaN. Unitless.

    Source: Harte, Sandler & Gasser, "Detecting harmonic change in musical audio",
    ACM MM Workshop on Audio and Music Computing Multimedia 2006, eq. 1-2.
    """
    chroma = np.asarray(chroma, dtype=np.float64)
    if chroma.shape[-1:] != (12,):
        raise ValueError(f"chroma needs 12 bins on its last axis, got shape {chroma.shape}")
    angle = np.arange(12) * np.pi
    phi = np.stack(
        [
            _R_FIFTHS * np.sin(angle * 7 / 6),
            _R_FIFTHS * np.cos(angle * 7 / 6),
            _R_MINOR_THIRDS * np.sin(angle * 3 / 2),
            _R_MINOR_THIRDS * np.cos(angle * 3 / 2),
            _R_MAJOR_THIRDS * np.sin(angle * 2 / 3),
            _R_MAJOR_THIRDS * np.cos(angle * 2 / 3),
        ]
    )
    total = np.abs(chroma).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (chroma / np.where(total > 0, total, np.nan)) @ phi.T


def tonal_distance(
    x: npt.ArrayLike, y: npt.ArrayLike, *, window_steps: int, lowest_pitch: int = 24
) -> float:
    """TD: mean Euclidean distance between two tracks' tonal centroids, window by window.

    .. math:: TD = \\frac{1}{|W|} \\sum_{w \\in W} \\lVert \\zeta(c^x_w) - \\zeta(c^y_w)
        \\rVert_2

    Each window of ``window_steps`` steps (MuseGAN: one beat) gets the chroma of each
    track, ``c_w[l]`` = number of sounding (step, pitch) cells of pitch class ``l``, so
    longer notes weigh more; :func:`tonal_centroid` L1-normalizes it and projects it.
    ``W`` holds the windows where both tracks sound (a last window cut short by the roll's
    end included). The MuseGAN code divided by zero on a silent beat and so dropped every
    bar with one; we drop only the silent windows. The value does not change when both
    tracks are transposed by the same interval.

    Args:
        x, y: two tracks of one piece, ``[steps, pitches]`` each, same shape, same
            ``lowest_pitch``; cells ``> 0`` sound.
        window_steps: window length in steps (``steps_per_beat`` for MuseGAN's per-beat
            distance; a bar's steps for a per-bar one).
        lowest_pitch: MIDI note of pitch index 0 (24 = C1).

    Returns:
        Unitless distance in [0, 3] (0: same tonal content); NaN when no window has notes
        in both tracks. (The HarmonyCloak paper's "0-5" range is loose.)

    Source: MuseGAN (Dong et al., AAAI 2018): TD between a pair of tracks, after Harte,
    Sandler & Gasser (2006); a larger TD means weaker inter-track harmonic relations.
    No muspy twin; pypianoroll 1.0.4's ``tonal_distance`` builds its chroma with a
    wrong reshape and only works at 12 steps per beat.
    """
    if window_steps < 1:
        raise ValueError(f"window_steps must be at least 1, got {window_steps}")
    if np.shape(x) != np.shape(y):
        raise ValueError(
            f"the two tracks need the same [steps, pitches] shape, got {np.shape(x)} and "
            f"{np.shape(y)}"
        )
    cx = pitch_class_counts(x, lowest_pitch=lowest_pitch)
    cy = pitch_class_counts(y, lowest_pitch=lowest_pitch)
    if cx.shape[0] == 0:
        return math.nan
    starts = np.arange(0, cx.shape[0], window_steps)
    wx, wy = _per_bar_sum(cx, starts), _per_bar_sum(cy, starts)
    both = (wx.sum(axis=1) > 0) & (wy.sum(axis=1) > 0)
    if not both.any():
        return math.nan
    distance = np.linalg.norm(tonal_centroid(wx[both]) - tonal_centroid(wy[both]), axis=1)
    return float(distance.mean())


# ----------------------------------------------------------------------- PianoRoll


def bar_lengths(roll: PianoRoll) -> np.ndarray:
    """Length in steps of every bar of ``roll`` from its time signatures (int64 ``[bars]``).

    A bar of ``n/d`` lasts ``n * 4/d`` beats (rounded to whole steps, at least one);
    a time signature starts a new bar at its step, before the first one the meter is
    4/4 (the MIDI default). The last bar is cut at the end of the roll. The lengths
    add up to ``roll.steps`` (no bars for a roll of 0 steps).
    """
    n_steps = roll.steps
    signatures = sorted(
        (ts for ts in roll.time_signatures if 0 < ts.step < n_steps), key=lambda ts: ts.step
    )
    at_zero = [ts for ts in roll.time_signatures if ts.step <= 0]
    first = at_zero[-1] if at_zero else None
    segments = [(0, first.numerator if first else 4, first.denominator if first else 4)]
    segments += [(ts.step, ts.numerator, ts.denominator) for ts in signatures]
    lengths: list[int] = []
    for index, (start, numerator, denominator) in enumerate(segments):
        end = segments[index + 1][0] if index + 1 < len(segments) else n_steps
        if end <= start:
            continue
        bar = max(1, round(numerator * 4 / denominator * roll.steps_per_beat))
        full, rest = divmod(end - start, bar)
        lengths += [bar] * full + ([rest] if rest else [])
    return np.asarray(lengths, dtype=np.int64)


def _unique_names(names: Sequence[str]) -> list[str]:
    """Track names made unique by numbering repeats: "Piano", "Piano (2)"."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def _qn_min_steps(steps_per_beat: int, qn_min_beats: float) -> int:
    return max(1, math.ceil(qn_min_beats * steps_per_beat - 1e-9))


def track_metrics(
    roll: PianoRoll, *, qn_min_beats: float = 0.25, dp_near_weight: float = 0.0
) -> dict[str, dict[str, float]]:
    """EB, UPC, QN (pitched tracks) and EB, DP (drum tracks) of every track of ``roll``.

    Keys are the track names (repeats numbered: "Piano (2)"), in track order; each value
    maps metric names (``"empty_bar_rate"``, ``"used_pitch_classes"``,
    ``"qualified_note_rate"``; ``"drum_pattern_rate"`` for drums; see
    :data:`METRIC_ABBREVIATIONS`) to floats, NaN where there is nothing to measure (an
    all-silent track has EB 1.0 and NaN for the rest). Bars come from
    :func:`bar_lengths`; QN counts notes from ``roll.onsets``; the DP grid is the
    sixteenth note (``steps_per_beat / 4`` steps).

    Args:
        roll: the piano roll.
        qn_min_beats: shortest qualified note in beats, converted to whole steps (rounded
            up). 0.25, a sixteenth note, is 3 steps at 12 steps per beat (the papers'
            "three time steps" at 48 steps per bar); MuseGAN's 32nd note is 0.125.
        dp_near_weight: ``near_weight`` of :func:`drum_pattern_rate`.
    """
    bars = bar_lengths(roll)
    min_steps = _qn_min_steps(roll.steps_per_beat, qn_min_beats)
    result: dict[str, dict[str, float]] = {}
    for index, name in enumerate(_unique_names(roll.track_names)):
        x = roll.velocities[index]
        onsets = None if roll.onsets is None else roll.onsets[index]
        values = {"empty_bar_rate": empty_bar_rate(x, steps_per_bar=bars)}
        if roll.is_drum[index]:
            values["drum_pattern_rate"] = drum_pattern_rate(
                x,
                steps_per_bar=bars,
                onsets=onsets,
                grid_steps=roll.steps_per_beat / 4,
                near_weight=dp_near_weight,
            )
        else:
            values["used_pitch_classes"] = used_pitch_classes(
                x, steps_per_bar=bars, lowest_pitch=roll.lowest_pitch
            )
            values["qualified_note_rate"] = qualified_note_rate(
                x, onsets=onsets, min_steps=min_steps
            )
        result[name] = values
    return result


def tonal_distances(roll: PianoRoll) -> dict[str, float]:
    """TD per beat between every pair of pitched (non-drum) tracks of ``roll``.

    Keys are ``"<first>-<second>"`` track names in track order (the paper's "B-G" for
    Bass-Guitar; repeats numbered as in :func:`track_metrics`); values as
    :func:`tonal_distance` with ``window_steps = roll.steps_per_beat``, NaN for a pair
    that never sounds in the same beat.
    """
    names = _unique_names(roll.track_names)
    pitched = [i for i in range(roll.tracks) if not roll.is_drum[i]]
    return {
        f"{names[i]}-{names[j]}": tonal_distance(
            roll.velocities[i],
            roll.velocities[j],
            window_steps=roll.steps_per_beat,
            lowest_pitch=roll.lowest_pitch,
        )
        for i, j in combinations(pitched, 2)
    }


def roll_metrics(
    roll: PianoRoll, *, qn_min_beats: float = 0.25, dp_near_weight: float = 0.0
) -> dict[str, dict[str, dict[str, float]] | dict[str, float]]:
    """All symbolic metrics of ``roll``: ``{"tracks": ..., "tonal_distance": ...}``.

    ``"tracks"`` is :func:`track_metrics` (per track name), ``"tonal_distance"`` is
    :func:`tonal_distances` (per track pair). Plain floats (NaN where undefined), ready
    for a report; options as in :func:`track_metrics`.
    """
    return {
        "tracks": track_metrics(roll, qn_min_beats=qn_min_beats, dp_near_weight=dp_near_weight),
        "tonal_distance": tonal_distances(roll),
    }
