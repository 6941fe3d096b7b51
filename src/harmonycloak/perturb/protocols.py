"""The contracts between the engine and the models it protects against.

A :class:`Target` is one threat model: a generative model plus its training loss. The
engine never looks inside: it asks for the loss (differentiable in the input), for one
outer training step, and for per-example losses when it measures.

Symbolic targets take MuseGAN-shaped phrases: float32 ``[batch, tracks, bars, steps,
pitches]`` velocities in [0, 1] (5 tracks Bass, Drums, Guitar, Piano, Strings; 4 bars of
48 steps; 84 pitches C1–B7), see :mod:`harmonycloak.perturb.phrases`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Target", "Channel"]


@runtime_checkable
class Target(Protocol):
    """A generative model and its training loss L_gen (paper eq. 3–5)."""

    name: str

    def loss(self, x: Tensor) -> Tensor:
        """Mean L_gen over the batch ``x`` (model domain); differentiable in ``x``."""
        ...

    def example_losses(self, x: Tensor) -> Tensor:
        """L_gen per example, ``[batch]``, without gradients (for measuring)."""
        ...

    def train_step(self, x: Tensor) -> float:
        """One outer step on θ with the batch ``x``; returns the training loss."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@runtime_checkable
class Channel(Protocol):
    """What happens to the file between the artist and the scraper.

    Draw parameters apart from applying them so that runs are reproducible.
    """

    differentiable: bool

    def sample(self, generator: Any) -> dict[str, Any]: ...

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor: ...
