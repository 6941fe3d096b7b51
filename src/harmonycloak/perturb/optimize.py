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

__all__ = ["EngineSettings", "MetaSettings", "MinMinResult", "Perturbation", "loss_scales",
           "meta_min_min", "min_min", "track_weights"]

_MAX_PARAM_STEP = 2.0
_PARAM_LIMIT = 12.0


class Perturbation(Protocol):
    """What :func:`min_min` needs from a parametrized perturbation."""

    def init_params(self) -> Tensor: ...

    def apply(self, x: Tensor, params: Tensor) -> Tensor: ...

    def step_scale(self, params: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class EngineSettings:
    """The loop's knobs (see :class:`harmonycloak.config.EngineConfig` for the user side).

    ``loss_group``: when set, each PGD iteration evaluates the target's loss on groups of
    at most this many examples (audio chunks) and adds up their gradients, so the model's
    activations for a long file never exist all at once; the gradient is the full batch's
    (for targets whose ``loss`` is a mean over independent examples; see
    :func:`_loss_and_grad`). None evaluates the whole batch at once (MIDI phrases).
    """

    outer_rounds: int
    outer_steps: int
    inner_steps: int
    pgd_step: float
    alpha: float
    batch_size: int
    loss_group: int | None = None

    @classmethod
    def from_config(cls, engine: Any, *, alpha: float, batch_size: int,
                    loss_group: int | None = None) -> EngineSettings:
        """The loop's settings from an :class:`~harmonycloak.config.EngineConfig`, with the
        resolved α, the outer minibatch size (at most the examples there are) and the
        PGD loss group (None: all at once)."""
        return cls(outer_rounds=engine.outer_rounds, outer_steps=engine.outer_steps,
                   inner_steps=engine.inner_steps, pgd_step=engine.pgd_step, alpha=alpha,
                   batch_size=batch_size, loss_group=loss_group)


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


def _loss_and_grad(x: Tensor, params: Tensor, perturbation: Perturbation, target: Target,
                   to_model: Callable[[Tensor], Tensor], regularizer: Callable[[Tensor], Tensor],
                   alpha: float, group: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The objective of eq. 5 (detached), its generative part, and its gradient in ``params``.

    With ``group``, x + δ is rendered once, then the target's loss is evaluated on groups
    of ``group`` examples, each weighted by its share of the batch, and the gradients
    with respect to the model's input are joined before one backward pass through the
    rendering: the same gradient as the whole batch's for a loss that is the mean of
    per-example losses, with the model's activations held for one group at a time.
    """
    batch = to_model(perturbation.apply(x, params))
    count = batch.shape[0]
    if group is None or count <= group:
        generative = target.loss(batch)
        loss = generative + alpha * regularizer(params)
        (grad,) = torch.autograd.grad(loss, params)
        return loss.detach(), generative.detach(), grad
    parts, grads = [], []
    for piece in batch.detach().split(group):
        piece.requires_grad_(True)
        part = target.loss(piece) * (piece.shape[0] / count)
        (g,) = torch.autograd.grad(part, piece)
        parts.append(part.detach())
        grads.append(g)
    penalty = alpha * regularizer(params)
    (grad,) = torch.autograd.grad((batch, penalty), params,
                                  grad_outputs=(torch.cat(grads), torch.ones_like(penalty)))
    generative = torch.stack(parts).sum()
    return (generative + penalty).detach(), generative, grad


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
            loss, generative, grad = _loss_and_grad(x, params, perturbation, target, to_model,
                                                    regularizer, settings.alpha, settings.loss_group)
            params = _pgd_step(params, grad, perturbation, settings.pgd_step)
            values = {"loss": float(loss.detach()), "generative": float(generative.detach())}
            if on_iteration is not None:
                on_iteration({"round": round_index, "iteration": iteration, **values})
        result.history.append({"round": round_index, "train_loss": train_loss,
                               "objective": values["loss"], "generative": values["generative"]})
    result.params = params.detach()
    result.seconds = time.perf_counter() - start
    return result


# ------------------------------------------------------------- black-box: meta-learning


@dataclass(frozen=True)
class MetaSettings:
    """The black-box loop's knobs (paper section 4.2; :class:`harmonycloak.config.BlackBoxConfig`
    is the user side).

    Each of ``rounds`` rounds samples ``sample_size`` (Q) members of the bag; every sampled
    member takes ``outer_steps`` training steps on x + δ (minibatches of ``batch_size``);
    then ``meta_train_steps`` PGD iterations on the mean of the first Q − 1 members'
    normalized losses (eq. 8–9) and ``meta_test_steps`` on the held-out Q-th member's.
    ``pgd_batch``: examples (chunks, phrases) per PGD iteration, drawn at random (None:
    all of them); the long files' iterations then cost the same as a short file's.
    """

    rounds: int
    sample_size: int
    outer_steps: int
    meta_train_steps: int
    meta_test_steps: int
    pgd_step: float
    batch_size: int
    pgd_batch: int | None = None

    @classmethod
    def from_config(cls, blackbox: Any, *, examples: int) -> MetaSettings:
        """The loop's settings from a :class:`~harmonycloak.config.BlackBoxConfig`; the
        outer minibatch is at most ``examples`` (the piece's chunks or phrases)."""
        return cls(rounds=blackbox.rounds, sample_size=blackbox.sample_size,
                   outer_steps=blackbox.outer_steps, meta_train_steps=blackbox.meta_train_steps,
                   meta_test_steps=blackbox.meta_test_steps, pgd_step=blackbox.pgd_step,
                   batch_size=min(blackbox.batch_size, examples), pgd_batch=blackbox.pgd_batch)


def loss_scales(data: Tensor, members: list[Any], *, floor: float = 1e-6) -> list[float]:
    """Each member's mean loss on ``data`` (no gradient), at least ``floor``: the unit its
    loss is counted in by :func:`meta_min_min` (1e-6 keeps a step's weight bounded) and by
    the black-box report's panel (which passes 1e-9: it only guards a division)."""
    with torch.no_grad():
        return [max(float(m.example_losses(data).mean()), floor) for m in members]


def _pgd_subset(count: int, size: int | None, generator: torch.Generator) -> Tensor | None:
    if size is None or size >= count:
        return None
    return torch.randperm(count, generator=generator)[:size]


def _meta_phase(x: Tensor, params: Tensor, perturbation: Perturbation, members: list[Any],
                scales: list[float], *, weight: float, steps: int, to_model: Callable[[Tensor], Tensor],
                regularizer: Callable[[Tensor], Tensor], alphas: list[float], settings: MetaSettings,
                generator: torch.Generator, report: Callable[[float, float], None]) -> Tensor:
    """``steps`` PGD iterations on ``weight · Σ_q (L_q(x + δ) + α_q · R(δ)) / scale_q``.

    The regularizer is counted in each member's units like its loss, so α weighs noise
    against loss exactly as in the white-box loop (eq. 5); unscaled, it outweighed the
    normalized losses several-fold (a codec LM's loss is ~5 nats, so the loss's share fell
    to about 1/5). Measured on four codec-LM surrogates (``benchmarks/transfer_blackbox.py
    --families codec-lm``): cloak SNR 46.7 dB unscaled, 43.2 dB scaled, 16.8 dB with
    α = 0 — random-init surrogates' loss gradients are weak either way (see issue 4)."""
    for _ in range(steps):
        data = to_model(perturbation.apply(x, params))
        subset = _pgd_subset(data.shape[0], settings.pgd_batch, generator)
        if subset is not None:
            data = data[subset.to(data.device)]
        generative = weight * sum(m.loss(data) / s for m, s in zip(members, scales))
        loss = generative + weight * sum(a / s for a, s in zip(alphas, scales)) * regularizer(params)
        (grad,) = torch.autograd.grad(loss, params)
        params = _pgd_step(params, grad, perturbation, settings.pgd_step)
        report(float(loss.detach()), float(generative.detach()))
    return params


def _train_members(x: Tensor, params: Tensor, perturbation: Perturbation, members: list[Any],
                   to_model: Callable[[Tensor], Tensor], settings: MetaSettings,
                   generator: torch.Generator) -> tuple[Tensor, float]:
    with torch.no_grad():
        data = to_model(perturbation.apply(x, params))
    losses = []
    for member in members:
        for _ in range(settings.outer_steps):
            index = torch.randint(data.shape[0], (settings.batch_size,), generator=generator)
            losses.append(member.train_step(data[index.to(data.device)]))
    return data, float(sum(losses) / len(losses)) if losses else float("nan")


def meta_min_min(x: Tensor, perturbation: Perturbation, bag: list[Any], *,
                 to_model: Callable[[Tensor], Tensor], regularizer: Callable[[Tensor], Tensor],
                 alphas: list[float], settings: MetaSettings, generator: torch.Generator,
                 on_iteration: Callable[[dict[str, Any]], None] | None = None) -> MinMinResult:
    """Black-box crafting by meta-learning over a bag of surrogates (paper eq. 8–9).

    Every round draws Q = ``settings.sample_size`` members of ``bag`` (random order from
    ``generator``). All Q take their outer training steps on x + δ (they learn from the
    protected music, as the unknown model will). **Meta-training**: PGD on
    ``(1/Q) Σ_{q<Q} (L_q(x + δ) + α R(δ)) / c_q`` — eq. 9's average of the first Q − 1
    members' gradients, each loss counted in units of its own current value ``c_q`` so
    that a family whose loss happens to be larger (nats per token against a denoising MSE)
    does not decide the sign of every step alone. **Meta-testing**: PGD on the held-out
    Q-th member's ``(L_Q(x + δ) + α R(δ)) / c_Q``. The paper calls this term a divergence
    between the model's output distribution and the music's; ours is that divergence
    read for each family: KL(data ‖ model) of the next-token distributions for an LM (its
    NLL less the data's entropy, a constant), of the Gaussian noise predictions for a
    diffusion model (its MSE up to scale), of the positive-pair distribution for a
    contrastive encoder (its NT-Xent), of the "real" label for a GAN's discriminator.
    ``alphas``: α per bag member, each in its member's units like its loss.

    ``on_iteration`` receives ``{"round", "iteration", "phase" ("meta-train" or
    "meta-test"), "held_out" (the Q-th member's index), "loss", "generative"}`` after each
    PGD iteration. Returns the parameters, per-round history (members, losses) and time.
    """
    if len(bag) < 2:
        raise ValueError("meta_min_min needs a bag of at least two members")
    start = time.perf_counter()
    q = max(2, min(settings.sample_size, len(bag)))
    params = perturbation.init_params()
    result = MinMinResult(params=params)
    for round_index in range(settings.rounds):
        order = torch.randperm(len(bag), generator=generator)[:q].tolist()
        train_ids, test_id = order[:-1], order[-1]
        data, train_loss = _train_members(x, params, perturbation, [bag[i] for i in order],
                                          to_model, settings, generator)
        scales = loss_scales(data, [bag[i] for i in order])
        counter = {"i": 0}
        last: dict[str, float] = {}

        def report(phase: str) -> Callable[[float, float], None]:
            def emit(loss: float, generative: float) -> None:
                last[phase] = generative
                if on_iteration is not None:
                    on_iteration({"round": round_index, "iteration": counter["i"], "phase": phase,
                                  "held_out": test_id, "loss": loss, "generative": generative})
                counter["i"] += 1
            return emit

        common = {"to_model": to_model, "regularizer": regularizer, "settings": settings,
                  "generator": generator}
        params = _meta_phase(x, params, perturbation, [bag[i] for i in train_ids], scales[:-1],
                             weight=1.0 / q, steps=settings.meta_train_steps,
                             alphas=[alphas[i] for i in train_ids],
                             report=report("meta-train"), **common)
        params = _meta_phase(x, params, perturbation, [bag[test_id]], scales[-1:], weight=1.0,
                             steps=settings.meta_test_steps, alphas=[alphas[test_id]],
                             report=report("meta-test"), **common)
        result.history.append({"round": round_index, "members": order, "held_out": test_id,
                               "train_loss": train_loss,
                               "meta_train": last.get("meta-train", float("nan")),
                               "meta_test": last.get("meta-test", float("nan"))})
    result.params = params.detach()
    result.seconds = time.perf_counter() - start
    return result
