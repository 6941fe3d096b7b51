"""Piano rolls ⇄ MuseGAN-shaped phrases.

MuseGAN (Dong et al. 2018) trains on four-bar phrases of 48 steps per bar (12 per quarter
note) over 84 pitches. We cut the timeline into 4-beat units of ``steps_per_bar`` steps
regardless of the meter, so a 3/4 piece is seen in 4-beat windows too: the models learn
from contiguous music either way, and every step of the piece belongs to exactly one
phrase (the last one padded with silence).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BARS_PER_PHRASE",
    "STEPS_PER_BAR",
    "phrases_from_roll",
    "phrases_tensor",
    "roll_from_phrases",
]

BARS_PER_PHRASE = 4
STEPS_PER_BAR = 48


def phrases_from_roll(velocities: np.ndarray, *, steps_per_bar: int = STEPS_PER_BAR,
                      bars: int = BARS_PER_PHRASE) -> np.ndarray:
    """``[tracks, steps, pitches]`` → ``[phrases, tracks, bars, steps_per_bar, pitches]``.

    The end is padded with zeros to a whole phrase; an empty roll gives zero phrases.
    """
    tracks, steps, pitches = velocities.shape
    span = steps_per_bar * bars
    n = -(-steps // span)
    padded = np.zeros((tracks, n * span, pitches), dtype=np.float32)
    padded[:, :steps] = velocities
    return padded.reshape(tracks, n, bars, steps_per_bar, pitches).transpose(1, 0, 2, 3, 4).copy()


def roll_from_phrases(phrases: np.ndarray, steps: int) -> np.ndarray:
    """Inverse of :func:`phrases_from_roll`, cut back to ``steps`` steps."""
    n, tracks, bars, steps_per_bar, pitches = phrases.shape
    flat = phrases.transpose(1, 0, 2, 3, 4).reshape(tracks, n * bars * steps_per_bar, pitches)
    return flat[:, :steps].copy()


def phrases_tensor(roll: Tensor, *, steps_per_bar: int = STEPS_PER_BAR,
                   bars: int = BARS_PER_PHRASE) -> Tensor:
    """Torch twin of :func:`phrases_from_roll` (differentiable): ``[tracks, steps,
    pitches]`` → ``[phrases, tracks, bars, steps_per_bar, pitches]``."""
    tracks, steps, pitches = roll.shape
    span = steps_per_bar * bars
    n = max(1, -(-steps // span))
    padded = torch.nn.functional.pad(roll, (0, 0, 0, n * span - steps))
    return padded.reshape(tracks, n, bars, steps_per_bar, pitches).permute(1, 0, 2, 3, 4)
