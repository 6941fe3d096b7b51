"""Where the perturbation may go in a piano roll, and how loud: the paper's window
strategy and bounds for MIDI (section 4.1, eq. 5a, 6 and 7).

The piece is cut into windows of ``window_ms`` (10 ms by default) on its own clock (the
tempo map). In each window and track, the *dominant note* is the pitch with the largest
cumulative velocity; windows whose dominant note is quieter than ``min_velocity`` get no
perturbation. The perturbation lives at the dominant pitch only, as *note slots*:

* an **existing** slot is a whole original note that is dominant in at least one window:
  MIDI holds one velocity per note, so the perturbation raises that note's velocity as a
  whole. Bounds: ``H(T_H(ν)) ≤ δ ≤ min(M, 1 − x)`` with M the note's own velocity
  (eq. 5a: the noise is never louder than the music it hides under);
* an **added** slot is a run of silent steps at the dominant pitch inside one window
  (possible only when a window spans several steps): a new quiet note whose velocity
  lies between ``H(T_H(ν))`` (at least MIDI velocity 1) and the dominant note's velocity.

``H(T_H(ν))`` is the threshold of hearing in quiet at the pitch's fundamental, mapped to
a velocity by eq. 6 (:func:`~harmonycloak.psychoacoustics.level_db_to_velocity`). Slots
whose lower bound exceeds their upper bound are dropped (the note is too quiet to hide
anything under it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harmonycloak.clip import PianoRoll
from harmonycloak.psychoacoustics import absolute_threshold_db, level_db_to_velocity

__all__ = ["NoteSlots", "note_slots", "step_start_times_s", "MIN_MIDI_VELOCITY"]

MIN_MIDI_VELOCITY = 1.0 / 127.0
"""The quietest note MIDI can hold (velocity 1)."""


@dataclass(frozen=True)
class NoteSlots:
    """The perturbation's degrees of freedom for one roll; arrays ``[slots]`` unless noted.

    ``cell_slot``, ``cell_track``, ``cell_step``, ``cell_pitch`` list every roll cell a
    slot covers (``[cells]``), for scattering slot values into the roll.
    """

    track: np.ndarray
    pitch_index: np.ndarray
    start_step: np.ndarray
    end_step: np.ndarray
    existing: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    cell_slot: np.ndarray
    cell_track: np.ndarray
    cell_step: np.ndarray
    cell_pitch: np.ndarray

    @property
    def count(self) -> int:
        return int(self.track.size)

    def cells_per_slot(self) -> np.ndarray:
        return np.bincount(self.cell_slot, minlength=self.count)


def step_start_times_s(roll: PianoRoll) -> np.ndarray:
    """Start time of every step in seconds, following the roll's tempo changes."""
    qpm = np.full(roll.steps, roll.tempos[0].qpm, dtype=np.float64)
    for tempo in roll.tempos[1:]:
        qpm[min(tempo.step, roll.steps):] = tempo.qpm
    step_s = 60.0 / (qpm * roll.steps_per_beat)
    return np.concatenate([[0.0], np.cumsum(step_s)[:-1]])


def _pitch_lower_bounds(roll: PianoRoll) -> np.ndarray:
    """H(T_H(ν)) per pitch index: the threshold in quiet as a normalized velocity."""
    midi = np.arange(roll.pitches) + roll.lowest_pitch
    hz = torch.as_tensor(440.0 * 2.0 ** ((midi - 69) / 12.0), dtype=torch.float32)
    return level_db_to_velocity(absolute_threshold_db(hz)).numpy().astype(np.float64)


def _window_ids(roll: PianoRoll, window_ms: float) -> np.ndarray:
    """Window index of each step (steps starting in the same window share it), 0..W-1."""
    raw = np.floor(step_start_times_s(roll) * 1000.0 / window_ms + 1e-9).astype(np.int64)
    _, ids = np.unique(raw, return_inverse=True)
    return ids


def _note_ids(roll: PianoRoll) -> np.ndarray:
    """Note id per cell ``[tracks, steps, pitches]`` (-1 where silent); a note is a run of
    non-zero cells starting at an onset (or at a silent→sounding step without onsets)."""
    sounding = roll.velocities > 0
    prev = np.zeros_like(sounding)
    prev[:, 1:] = sounding[:, :-1]
    starts = sounding & ~prev
    if roll.onsets is not None:
        starts |= roll.onsets & sounding
    # number notes along time per (track, pitch): cumulative count of starts
    order = np.moveaxis(starts, 1, 2)  # [tracks, pitches, steps]
    counts = np.cumsum(order, axis=2)
    flat_offset = np.cumsum(order.sum(axis=2).ravel()) - order.sum(axis=2).ravel()
    ids = counts - 1 + flat_offset.reshape(order.shape[:2])[..., None]
    ids = np.moveaxis(ids, 2, 1)
    return np.where(sounding, ids, -1)


def _dominant(roll: PianoRoll, windows: np.ndarray, min_velocity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (track, window): dominant pitch index, its peak velocity, and active flag."""
    starts = np.flatnonzero(np.diff(windows, prepend=-1))
    cumulative = np.add.reduceat(roll.velocities, starts, axis=1)  # [tracks, W, pitches]
    peak = np.maximum.reduceat(roll.velocities, starts, axis=1)
    pitch = cumulative.argmax(axis=2)
    loudness = np.take_along_axis(peak, pitch[..., None], axis=2)[..., 0]
    return pitch, loudness, loudness >= min_velocity


def note_slots(roll: PianoRoll, *, window_ms: float = 10.0, min_velocity: float = 8 / 127,
               include_drums: bool = True) -> NoteSlots:
    """The note slots of ``roll`` (see the module docstring). Vectorized over cells."""
    windows = _window_ids(roll, window_ms)
    pitch_w, loud_w, active_w = _dominant(roll, windows, min_velocity)
    if not include_drums:
        active_w[np.asarray(roll.is_drum, dtype=bool)] = False
    # cells at the dominant pitch of active windows: [tracks, steps] -> pitch
    dom_pitch = pitch_w[:, windows]
    dom_active = active_w[:, windows]
    dom_loud = loud_w[:, windows]
    tracks_idx, steps_idx = np.nonzero(dom_active)
    pitches_idx = dom_pitch[tracks_idx, steps_idx]
    note_id = _note_ids(roll)
    cell_note = note_id[tracks_idx, steps_idx, pitches_idx]
    lower_pitch = _pitch_lower_bounds(roll)
    existing = _existing_slots(roll, note_id, np.unique(cell_note[cell_note >= 0]), lower_pitch)
    silent = cell_note < 0
    added = _added_slots(tracks_idx[silent], steps_idx[silent], pitches_idx[silent],
                         windows, dom_loud, lower_pitch)
    return _concat_slots(existing, added)


def _existing_slots(roll: PianoRoll, note_id: np.ndarray, notes: np.ndarray,
                    lower_pitch: np.ndarray) -> dict[str, np.ndarray]:
    t, s, p = np.nonzero(note_id >= 0)
    ids = note_id[t, s, p]
    keep = np.isin(ids, notes)
    t, s, p, ids = t[keep], s[keep], p[keep], ids[keep]
    cell_slot = np.searchsorted(notes, ids).astype(np.int64)  # notes is sorted (np.unique)
    first = np.zeros(notes.size, dtype=np.int64)
    if ids.size:
        order = np.lexsort((s, cell_slot))
        first_pos = np.flatnonzero(np.diff(cell_slot[order], prepend=-1))
        first = order[first_pos]
    track, step, pitch = t[first], s[first], p[first]
    velocity = roll.velocities[track, step, pitch].astype(np.float64)
    end = np.zeros(notes.size, dtype=np.int64)
    np.maximum.at(end, cell_slot, s + 1)
    return {
        "track": track, "pitch_index": pitch, "start_step": step, "end_step": end,
        "existing": np.ones(notes.size, dtype=bool),
        "lower": lower_pitch[pitch], "upper": np.minimum(velocity, 1.0 - velocity),
        "cell_slot": cell_slot, "cell_track": t, "cell_step": s, "cell_pitch": p,
    }


def _added_slots(t: np.ndarray, s: np.ndarray, p: np.ndarray, windows: np.ndarray,
                 dom_loud: np.ndarray, lower_pitch: np.ndarray) -> dict[str, np.ndarray]:
    """Silent dominant cells grouped into runs (same track, pitch and window, consecutive
    steps); each run is one added note."""
    order = np.lexsort((s, p, t))
    t, s, p = t[order], s[order], p[order]
    w = windows[s]
    new_run = np.ones(t.size, dtype=bool)
    if t.size > 1:
        same = (t[1:] == t[:-1]) & (p[1:] == p[:-1]) & (w[1:] == w[:-1]) & (s[1:] == s[:-1] + 1)
        new_run[1:] = ~same
    cell_slot = np.cumsum(new_run) - 1
    first = np.flatnonzero(new_run)
    end = np.zeros(first.size, dtype=np.int64)
    np.maximum.at(end, cell_slot, s + 1)
    track, step, pitch = t[first], s[first], p[first]
    return {
        "track": track, "pitch_index": pitch, "start_step": step, "end_step": end,
        "existing": np.zeros(first.size, dtype=bool),
        "lower": np.maximum(lower_pitch[pitch], MIN_MIDI_VELOCITY),
        "upper": dom_loud[track, step].astype(np.float64),
        "cell_slot": cell_slot, "cell_track": t, "cell_step": s, "cell_pitch": p,
    }


def _concat_slots(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> NoteSlots:
    """Join existing and added slots, dropping those whose bounds are empty."""
    offset = a["track"].size
    merged = {k: np.concatenate([a[k], b[k] + offset if k == "cell_slot" else b[k]]) for k in a}
    keep = merged["upper"] > merged["lower"]
    new_index = np.cumsum(keep) - 1
    cell_keep = keep[merged["cell_slot"]]
    fields = {k: merged[k][keep] for k in ("track", "pitch_index", "start_step", "end_step",
                                           "existing", "lower", "upper")}
    cells = {k: merged[k][cell_keep] for k in ("cell_track", "cell_step", "cell_pitch")}
    return NoteSlots(**fields, cell_slot=new_index[merged["cell_slot"][cell_keep]], **cells)
