"""The bi-level min-min optimization (paper eq. 5), as plain functions.

    min_θ E[ min_δ L_gen(f_θ(x + δ)) + α Σ_m w^m ‖δ^m‖₂ ]   s.t. δ inside its bounds

Each *round* first takes ``outer_steps`` training steps on θ with minibatches of the
defender's perturbed data x + δ (the target's own optimizer: SGD with momentum 0.9 and
lr 0.025 by default), then ``inner_steps`` PGD iterations on the perturbation's free
parameters. PGD moves by signed gradients, scaled so that δ itself moves by about
``pgd_step`` per iteration (0.001 in the paper), and the sigmoid parametrization keeps δ
inside its bounds, so no separate projection is needed.

Everything random is drawn from the one ``torch.Generator`` passed in: same inputs,
config and seed give the same result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from harmonycloak.perturb.protocols import Target

__all__ = ["EngineSettings", "MinMinResult", "Perturbation", "min_min", "track_weights"]

_MAX_PARAM_STEP = 2.0
_PARAM_LIMIT = 12.0


class Perturbation(Protocol):
    """What :func:`min_min` needs from a parametrized perturbation."""

    def init_params(self) -> Tensor: ...

    def apply(self, x: Tensor, params: Tensor) -> Tensor: ...

    def step_scale(self, params: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class EngineSettings:
    """The loop's knobs (see :class:`harmonycloak.config.EngineConfig` for the user side)."""

    outer_rounds: int
    outer_steps: int
    inner_steps: int
    pgd_step: float
    alpha: float
    batch_size: int


@dataclass
class MinMinResult:
    """Final parameters, the loss history per round, and the time taken."""

    params: Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def track_weights(velocities: Tensor) -> Tensor:
    """w^m = 1 − (track m's cumulative velocity / all tracks' cumulative velocity), ``[tracks]``.

    ``velocities`` is ``[tracks, steps, pitches]``; louder tracks get smaller weights, so
    they may carry more of the perturbation (paper section 4.1). All ones for silence.
    """
    per_track = velocities.sum(dim=tuple(range(1, velocities.dim())))
    total = per_track.sum()
    return torch.ones_like(per_track) if total <= 0 else 1.0 - per_track / total


def _objective(x: Tensor, params: Tensor, perturbation: Perturbation, target: Target,
               to_model: Callable[[Tensor], Tensor], regularizer: Callable[[Tensor], Tensor],
               alpha: float) -> tuple[Tensor, Tensor]:
    generative = target.loss(to_model(perturbation.apply(x, params)))
    return generative + alpha * regularizer(params), generative


def _pgd_step(params: Tensor, grad: Tensor, perturbation: Perturbation, pgd_step: float) -> Tensor:
    step = (pgd_step / perturbation.step_scale(params)).clamp_max(_MAX_PARAM_STEP)
    updated = params.detach() - step * grad.sign()
    return updated.clamp(-_PARAM_LIMIT, _PARAM_LIMIT).requires_grad_(True)


def _outer_steps(x: Tensor, params: Tensor, perturbation: Perturbation, target: Target,
                 to_model: Callable[[Tensor], Tensor], settings: EngineSettings,
                 generator: torch.Generator) -> float:
    with torch.no_grad():
        data = to_model(perturbation.apply(x, params))
    losses = []
    for _ in range(settings.outer_steps):
        # minibatches are drawn with replacement, so a one-phrase piece still gives a
        # full batch (batch-normalized models need at least two examples)
        index = torch.randint(data.shape[0], (settings.batch_size,), generator=generator)
        losses.append(target.train_step(data[index.to(data.device)]))
    return float(sum(losses) / len(losses)) if losses else float("nan")


def min_min(x: Tensor, perturbation: Perturbation, target: Target, *,
            to_model: Callable[[Tensor], Tensor], regularizer: Callable[[Tensor], Tensor],
            settings: EngineSettings, generator: torch.Generator,
            on_iteration: Callable[[dict[str, Any]], None] | None = None) -> MinMinResult:
    """Run the bi-level loop on one piece ``x`` (the perturbation's domain).

    ``to_model`` maps x + δ to the target's input batch (e.g. a roll to phrases);
    ``regularizer`` is Σ_m w^m ‖δ^m‖₂ as a function of the parameters. ``on_iteration``
    receives ``{"round", "iteration", "loss", "generative"}`` after every PGD iteration
    (for progress bars). Returns the final parameters and per-round history.
    """
    start = time.perf_counter()
    params = perturbation.init_params()
    result = MinMinResult(params=params)
    for round_index in range(settings.outer_rounds):
        train_loss = _outer_steps(x, params, perturbation, target, to_model, settings, generator)
        for iteration in range(settings.inner_steps):
            loss, generative = _objective(x, params, perturbation, target, to_model,
                                          regularizer, settings.alpha)
            (grad,) = torch.autograd.grad(loss, params)
            params = _pgd_step(params, grad, perturbation, settings.pgd_step)
            values = {"loss": float(loss.detach()), "generative": float(generative.detach())}
            if on_iteration is not None:
                on_iteration({"round": round_index, "iteration": iteration, **values})
        result.history.append({"round": round_index, "train_loss": train_loss,
                               "objective": values["loss"], "generative": values["generative"]})
    result.params = params.detach()
    result.seconds = time.perf_counter() - start
    return result
