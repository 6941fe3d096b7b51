"""MIDI note velocity <-> level in dB SPL: the paper's eq. 6 (H), for the MIDI path.

The paper's ``H(T_H(nu))`` turns a level in dB SPL into a note velocity "as per the
guidelines provided in the DLS Level 1 standard" (via Dannenberg, "The interpretation of
MIDI velocity", ICMC 2006). Its eq. 6 is garbled in print
(``127 * 10^((1/4) log10(T_H) - L_U + 94)``); what DLS Level 1 specifies is the
attenuation of a note of velocity ``v`` (1..127): ``40 log10(127 / v)`` dB, i.e. amplitude
proportional to ``(v / 127)^2``. Our reading of eq. 6, with normalized velocity
``u = v / 127`` in [0, 1] (the unit of :class:`~harmonycloak.clip.PianoRoll`):

    L(u) = L_ref + 40 log10(u)            u(L) = clip(10^((L - L_ref) / 40), 0, 1)

where ``L_ref`` is the level of a full-velocity note: the paper's "+94", i.e. 94 dB SPL
(1 Pa) by default. So velocity 64 sits 11.9 dB and velocity 1 sits 84.1 dB below
``L_ref``. Velocity 0 (no note) would be -inf dB; it maps to ``L_ref - 120`` dB
(``FLOOR_DB_BELOW_REFERENCE``) and every level at or below that floor maps back to 0.
Both functions are torch, elementwise, differentiable, and inverse of each other on
``(1e-3, 1]`` and at 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .calibration import as_float_tensor

__all__ = [
    "FLOOR_DB_BELOW_REFERENCE",
    "REFERENCE_LEVEL_DB",
    "level_db_to_velocity",
    "velocity_to_level_db",
]

REFERENCE_LEVEL_DB = 94.0
"""Level in dB SPL of a full-velocity (127) note: the "+94" of the paper's eq. 6."""

FLOOR_DB_BELOW_REFERENCE = 120.0
"""Velocity 0 maps to ``reference_db - 120`` dB (normalized velocity 1e-3 and below)."""

_MIN_VELOCITY = 10.0 ** (-FLOOR_DB_BELOW_REFERENCE / 40.0)


def velocity_to_level_db(
    velocity: Tensor | float, *, reference_db: float = REFERENCE_LEVEL_DB
) -> Tensor:
    """Level in dB SPL of a note with normalized velocity ``velocity`` (= MIDI velocity / 127).

    ``reference_db + 40 log10(velocity)``, with velocities below 1e-3 (and 0) floored to
    ``reference_db - 120``. Any shape; differentiable above the floor.
    """
    v = as_float_tensor(velocity)
    return reference_db + 40.0 * torch.log10(v.clamp_min(_MIN_VELOCITY))


def level_db_to_velocity(
    level_db: Tensor | float, *, reference_db: float = REFERENCE_LEVEL_DB
) -> Tensor:
    """Normalized velocity in [0, 1] of a note at ``level_db`` dB SPL (inverse of the above).

    ``10^((level_db - reference_db) / 40)`` clipped to 1 above the reference; 0 at or
    below the floor ``reference_db - 120``. Any shape; differentiable in between.
    """
    db = as_float_tensor(level_db)
    floor = reference_db - FLOOR_DB_BELOW_REFERENCE
    u = torch.pow(10.0, (db.clamp_max(reference_db) - reference_db) / 40.0)
    return torch.where(db <= floor, torch.zeros_like(u), u)
