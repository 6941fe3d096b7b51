"""δ from free parameters, kept inside its bounds by a sigmoid (paper eq. 7).

MIDI velocity mode: one parameter per note slot (:mod:`.windows`);
``δ_k = lower_k + (upper_k − lower_k) · sigmoid(p_k)``. What reaches the attacker is a
MIDI file, which holds integer velocities: δ is rounded to whole MIDI velocity steps
(1/127) with a straight-through estimator, so the optimization sees exactly what the
file will carry while gradients flow as if unrounded.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from harmonycloak.perturb.windows import NoteSlots

__all__ = ["MidiVelocityPerturbation", "round_to_midi"]


def round_to_midi(velocity: Tensor) -> Tensor:
    """Round normalized velocities to multiples of 1/127, straight-through."""
    rounded = torch.round(velocity * 127.0) / 127.0
    return velocity + (rounded - velocity).detach()


class MidiVelocityPerturbation:
    """The perturbation of one piano roll ``[tracks, steps, pitches]`` in velocity units.

    ``initial_fraction`` places every slot that far between its bounds at the start
    (small: start nearly inaudible). ``apply(x, params)`` returns ``x + δ`` (clamped to
    [0, 1]), differentiable in ``params``.
    """

    def __init__(self, slots: NoteSlots, shape: tuple[int, int, int], *,
                 initial_fraction: float = 0.05, quantize: bool = True,
                 device: str | torch.device = "cpu") -> None:
        self.slots = slots
        self.shape = shape
        self.quantize = quantize
        self.device = torch.device(device)
        self.lower = torch.as_tensor(slots.lower, dtype=torch.float32, device=self.device)
        self.upper = torch.as_tensor(slots.upper, dtype=torch.float32, device=self.device)
        self._cells = tuple(torch.as_tensor(a, dtype=torch.long, device=self.device)
                            for a in (slots.cell_track, slots.cell_step, slots.cell_pitch))
        self._cell_slot = torch.as_tensor(slots.cell_slot, dtype=torch.long, device=self.device)
        self._track = torch.as_tensor(slots.track, dtype=torch.long, device=self.device)
        self._cells_per_slot = torch.as_tensor(slots.cells_per_slot(), dtype=torch.float32,
                                               device=self.device)
        logit = math.log(initial_fraction / (1.0 - initial_fraction))
        self.initial_logit = logit

    def init_params(self) -> Tensor:
        """Parameters at ``initial_fraction`` of every slot's range (deterministic)."""
        return torch.full((self.slots.count,), self.initial_logit, device=self.device,
                          requires_grad=True)

    def slot_delta(self, params: Tensor) -> Tensor:
        """δ per slot ``[slots]`` in normalized velocity, inside the bounds."""
        delta = self.lower + (self.upper - self.lower) * torch.sigmoid(params)
        return round_to_midi(delta) if self.quantize else delta

    def roll_delta(self, params: Tensor) -> Tensor:
        """δ scattered into the roll, ``[tracks, steps, pitches]``."""
        out = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        return out.index_put(self._cells, self.slot_delta(params)[self._cell_slot], accumulate=True)

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """``clamp(x + δ, 0, 1)`` for a roll ``x`` of this perturbation's shape."""
        return (x + self.roll_delta(params)).clamp(0.0, 1.0)

    def track_norms(self, params: Tensor, tracks: int) -> Tensor:
        """‖δ^m‖₂ per track ``[tracks]`` over the roll cells (for eq. 5's regularizer)."""
        delta = self.slot_delta(params)
        sq = torch.zeros(tracks, device=self.device).index_add(0, self._track, delta.square() * self._cells_per_slot)
        return (sq + 1e-12).sqrt()

    def track_rms(self, params: Tensor, tracks: int) -> Tensor:
        """‖δ^m‖₂ / √(cells of track m) per track ``[tracks]``: eq. 5's norm made length-free.

        The plain L2 norm grows with the piece (√cells), while L_gen is a mean over the
        batch, so with the paper's α its gradient outweighed L_gen's ~10⁴-fold on a
        17 s piece and pinned every δ to its lower bound. The RMS keeps α's meaning the
        same for a 10 s sketch and a 10 min suite. Tracks without slots give ~0 (1e-6).
        """
        cells = torch.zeros(tracks, device=self.device).index_add(0, self._track, self._cells_per_slot)
        return self.track_norms(params, tracks) / cells.clamp_min(1.0).sqrt()

    def step_scale(self, params: Tensor) -> Tensor:
        """d(δ)/d(p) per slot: converts a step in δ units into parameter units."""
        s = torch.sigmoid(params.detach())
        return ((self.upper - self.lower) * s * (1 - s)).clamp_min(1e-6)
