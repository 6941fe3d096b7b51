"""Baseline perturbations at equal perceptual quality, to compare protection against.

The HarmonyCloak paper compares its noise with random Gaussian noise of growing power
(appendix A.2, table 10) and with error-minimizing noise under plain L2 / L-infinity
constraints instead of psychoacoustic shaping (section 5.2.3, figure 6). A fair
comparison holds perceptual quality fixed, so every baseline here can be scaled until
ViSQOL (:func:`harmonycloak.evaluate.metrics.perceptual.visqol`) matches a target score:

* :func:`gaussian_at_visqol`: white Gaussian noise, level found by bisection;
* :func:`pgd_linf`, :func:`pgd_l2`: error-minimizing PGD on a target's loss inside an
  L-infinity or L2 ball, run by the protection engine's own loop
  (:func:`harmonycloak.perturb.optimize.min_min`, same rounds, steps and signed-gradient
  step size), so the constraint set is the only difference from protection; then
  optionally scaled to a target ViSQOL;
* :func:`harmonydagger`: the ``harmonydagger`` package from PyPI (0.4), another
  "psychoacoustically masked noise" protection tool, run on the same clips.

Every function takes the clean clip as float ``[channels, samples]`` numpy at
``sample_rate_hz`` and returns a :class:`BaselineResult` (the perturbed clip, clipped to
[-1, 1], with the ViSQOL and SNR it reached). ``np.asarray(result)`` gives the samples.
The input is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from harmonycloak.errors import HarmonyCloakError, InputError, ModelLoadError
from harmonycloak.evaluate.metrics import perceptual

__all__ = [
    "BaselineResult",
    "HARMONYDAGGER_INSTALL_HINT",
    "LinfBall",
    "L2Ball",
    "gaussian_at_visqol",
    "harmonydagger",
    "pgd_l2",
    "pgd_linf",
    "scale_to_visqol",
]

VISQOL_TOLERANCE = 0.05
"""How close to the target ViSQOL the bisection must land (MOS-LQO points)."""
HARMONYDAGGER_INSTALL_HINT = ("pip install 'harmonycloak[eval]' (or: pip install "
                              "harmonydagger==0.4.0)")


@dataclass(frozen=True)
class BaselineResult:
    """A baseline perturbation of one clip.

    ``samples``: the perturbed clip, float32 ``[channels, samples]`` in [-1, 1];
    ``method``: e.g. ``"gaussian"``, ``"pgd_linf"``; ``visqol``: its ViSQOL against the
    clean clip (None when not measured); ``snr_db``: clean vs perturbed;
    ``scale``: the factor applied to the raw perturbation to reach ``target_visqol``
    (1.0 when not scaled); ``converged``: whether ViSQOL landed within the tolerance
    (True when no target was asked); ``details``: method-specific, JSON-ready values.
    ``np.asarray(result)`` is ``result.samples``.
    """

    method: str
    samples: np.ndarray
    visqol: float | None
    snr_db: float
    scale: float = 1.0
    target_visqol: float | None = None
    converged: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.samples if dtype is None else self.samples.astype(dtype)

    def summary(self) -> dict[str, Any]:
        """Everything but the samples, JSON-ready."""
        return {"method": self.method, "visqol": self.visqol, "snr_db": self.snr_db,
                "scale": self.scale, "target_visqol": self.target_visqol,
                "converged": self.converged, "details": self.details}


def _clean(samples: Any, sample_rate_hz: Any, what: str) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{what}: audio of shape {x.shape} and dtype {x.dtype}; give float "
                         "[channels, samples] (x[None] for mono)")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: NaN or infinite samples; load audio with "
                         "harmonycloak.io.audio.load_audio, which checks this")
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer)) \
            or not 8000 <= int(sample_rate_hz) <= 192000:
        raise InputError(f"{what}: sample rate {sample_rate_hz!r}; give a whole number of Hz "
                         "from 8000 to 192000")
    return np.array(x, dtype=np.float32, copy=True)


def _require_visqol(what: str) -> None:
    if not perceptual.visqol_available():
        raise ModelLoadError(f"{what} matches a ViSQOL score, so it needs ViSQOL: "
                             f"{perceptual.VISQOL_INSTALL_HINT}")


def _mix(x: np.ndarray, delta: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(x + np.float32(scale) * delta, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Matching a ViSQOL score
# ---------------------------------------------------------------------------------------


def scale_to_visqol(samples: np.ndarray, delta: np.ndarray, sample_rate_hz: int,
                    target_visqol: float, *, tolerance: float = VISQOL_TOLERANCE,
                    low_db: float = -60.0, high_db: float = 40.0,
                    max_iterations: int = 30) -> tuple[float, float, bool]:
    """The gain for ``delta`` at which ``clip(samples + gain * delta)`` scores ``target_visqol``.

    Bisection on the gain in dB between ``low_db`` (quiet: high ViSQOL) and ``high_db``
    (loud: low ViSQOL), assuming ViSQOL falls as the perturbation grows (true on average;
    ViSQOL is not strictly monotone, which is why the search stops as soon as the score
    is within ``tolerance``). Returns ``(gain, visqol, converged)``: the gain as a linear
    factor, the score it reached, and whether that is within the tolerance (else the
    closest score seen, after ``max_iterations`` evaluations or when the bracket shrank
    below 0.01 dB). Raises InputError when even ``low_db`` scores below the target (the
    target is above what this clip can reach) or ``high_db`` still scores above it (the
    perturbation is too weak to fall that far), and ModelLoadError without ViSQOL.
    """
    _require_visqol("scale_to_visqol")
    if not 1.0 <= target_visqol <= 5.0:
        raise InputError(f"target ViSQOL {target_visqol}: must lie between 1 and 5 (MOS-LQO)")
    x = np.asarray(samples, dtype=np.float32)
    d = np.asarray(delta, dtype=np.float32)
    if x.shape != d.shape:
        raise InputError(f"scale_to_visqol: clip {x.shape} and perturbation {d.shape} differ")

    def score(gain_db: float) -> float:
        return float(perceptual.visqol(x, _mix(x, d, 10.0 ** (gain_db / 20.0)), sample_rate_hz))

    lo, hi = float(low_db), float(high_db)
    at_lo, at_hi = score(lo), score(hi)
    if at_lo < target_visqol - tolerance:
        raise InputError(f"target ViSQOL {target_visqol:.2f} is out of reach: even at "
                         f"{lo:g} dB the perturbed clip scores {at_lo:.2f}; choose a lower "
                         "target")
    if at_hi > target_visqol + tolerance:
        raise InputError(f"target ViSQOL {target_visqol:.2f} is out of reach: even at "
                         f"+{hi:g} dB the perturbed clip still scores {at_hi:.2f}; choose a "
                         "higher target")
    # the closest (gain_db, score) seen so far
    best = min([(lo, at_lo), (hi, at_hi)], key=lambda pair: abs(pair[1] - target_visqol))
    for _ in range(max_iterations - 2):
        if abs(best[1] - target_visqol) <= tolerance or hi - lo < 0.01:
            break
        mid = 0.5 * (lo + hi)
        value = score(mid)
        if abs(value - target_visqol) < abs(best[1] - target_visqol):
            best = (mid, value)
        if value > target_visqol:
            lo = mid
        else:
            hi = mid
    gain_db, value = best
    return 10.0 ** (gain_db / 20.0), value, abs(value - target_visqol) <= tolerance


def _result(method: str, x: np.ndarray, delta: np.ndarray, sample_rate_hz: int,
            target_visqol: float | None, tolerance: float,
            details: dict[str, Any]) -> BaselineResult:
    """Scale ``delta`` to ``target_visqol`` (if given) and measure the result."""
    if target_visqol is None:
        y = _mix(x, delta, 1.0)
        score = None
        if perceptual.visqol_available():
            try:
                score = perceptual.visqol(x, y, sample_rate_hz)
            except InputError as error:  # too short a clip to score: measured as None
                details = {**details, "visqol_note": str(error)}
        return BaselineResult(method, y, score, _snr(x, y), details=details)
    scale, score, converged = scale_to_visqol(x, delta, sample_rate_hz, target_visqol,
                                              tolerance=tolerance)
    y = _mix(x, delta, scale)
    return BaselineResult(method, y, score, _snr(x, y), scale=scale, target_visqol=target_visqol,
                          converged=converged, details=details)


def _snr(x: np.ndarray, y: np.ndarray) -> float:
    return perceptual.snr_db(x, y)


# ---------------------------------------------------------------------------------------
# Gaussian noise (paper appendix A.2, table 10)
# ---------------------------------------------------------------------------------------


def gaussian_at_visqol(samples: np.ndarray, sample_rate_hz: int, target_visqol: float, *,
                       seed: int, tolerance: float = VISQOL_TOLERANCE) -> BaselineResult:
    """White Gaussian noise whose level makes the clip score ``target_visqol`` (± ``tolerance``).

    One noise draw (``numpy`` with ``seed``, independent per channel) is scaled: the level
    is found by :func:`scale_to_visqol` (bisection on the SNR, from 60 dB down to -40 dB).
    ``details``: ``noise_budget`` (noise power / music power, the paper's table-10
    "noise budget") and the noise's own ``snr_db`` (before clipping to [-1, 1]).
    """
    x = _clean(samples, sample_rate_hz, "gaussian_at_visqol")
    _require_visqol("gaussian_at_visqol")
    power = float(np.mean(x.astype(np.float64) ** 2))
    if power <= 0.0:
        raise InputError("gaussian_at_visqol: the clip is silent; there is no level to match "
                         "noise to")
    noise = np.random.default_rng(seed).standard_normal(x.shape) * math.sqrt(power)
    # noise at gain g (linear) has SNR -20 log10(g): the bracket spans 60 dB to -40 dB SNR
    scale, score, converged = scale_to_visqol(x, noise.astype(np.float32), sample_rate_hz,
                                              target_visqol, tolerance=tolerance,
                                              low_db=-60.0, high_db=40.0)
    y = _mix(x, noise.astype(np.float32), scale)
    details = {"noise_budget": scale ** 2, "noise_snr_db": -20.0 * math.log10(scale),
               "seed": int(seed)}
    return BaselineResult("gaussian", y, score, _snr(x, y), scale=scale,
                          target_visqol=target_visqol, converged=converged, details=details)


# ---------------------------------------------------------------------------------------
# Plain L-p PGD (paper section 5.2.3)
# ---------------------------------------------------------------------------------------


class LinfBall:
    """δ = ε tanh(p): every sample of δ inside [-ε, ε] (an L-infinity ball), ``p`` free.

    The tanh reparametrization (Carlini and Wagner 2017) keeps δ in the ball without a
    projection step, as the sigmoid does for protection's budgets; the engine's step
    size is divided by ``dδ/dp`` so δ moves by about ``pgd_step`` per iteration.
    Implements the engine's ``Perturbation`` protocol. ``shape``: ``[channels, samples]``.
    """

    norm = "linf"

    def __init__(self, shape: tuple[int, ...], epsilon: float, *, device: Any = "cpu") -> None:
        import torch

        if not epsilon > 0:
            raise InputError(f"L-infinity ball: epsilon={epsilon}; use a positive amplitude "
                             "such as 0.01 (-40 dBFS)")
        self.shape, self.epsilon, self.device = tuple(shape), float(epsilon), device
        self._torch = torch

    def init_params(self) -> Any:
        return self._torch.zeros(self.shape, device=self.device, requires_grad=True)

    def delta(self, params: Any) -> Any:
        return self.epsilon * self._torch.tanh(params)

    def apply(self, x: Any, params: Any) -> Any:
        return (x + self.delta(params).to(x.dtype)).clamp(-1.0, 1.0)

    def step_scale(self, params: Any) -> Any:
        slope = self.epsilon * (1.0 - self._torch.tanh(params.detach()) ** 2)
        return slope.clamp_min(1e-3 * self.epsilon)


class L2Ball:
    """δ = ε_rms · p / max(1, rms(p)): RMS(δ) ≤ ε, i.e. ‖δ‖₂ ≤ ε √(channels · samples).

    The radius is given as an RMS amplitude so that it means the same for any clip
    length. Inside the ball δ = ε p; on leaving it the whole δ is rescaled onto the
    sphere (the projection, written as a differentiable map). Steps are the engine's
    signed-gradient steps of about ``pgd_step`` per sample (the same optimizer as
    protection; only the constraint set differs).
    """

    norm = "l2"

    def __init__(self, shape: tuple[int, ...], epsilon: float, *, device: Any = "cpu") -> None:
        import torch

        if not epsilon > 0:
            raise InputError(f"L2 ball: epsilon={epsilon}; use a positive RMS amplitude such "
                             "as 0.003 (-50 dBFS)")
        self.shape, self.epsilon, self.device = tuple(shape), float(epsilon), device
        self._torch = torch

    def init_params(self) -> Any:
        return self._torch.zeros(self.shape, device=self.device, requires_grad=True)

    def delta(self, params: Any) -> Any:
        # 1/max(1, rms) written without a square root at zero: sqrt's gradient there is
        # 0·inf = NaN, which made every PGD step a no-op (δ stayed 0) from p = 0.
        return self.epsilon * params * self._torch.rsqrt(params.square().mean().clamp_min(1.0))

    def apply(self, x: Any, params: Any) -> Any:
        return (x + self.delta(params).to(x.dtype)).clamp(-1.0, 1.0)

    def step_scale(self, params: Any) -> Any:
        return self._torch.full_like(params.detach(), self.epsilon)


def _pgd(norm: Literal["linf", "l2"], samples: np.ndarray, sample_rate_hz: int, target: Any, *,
         epsilon: float, seed: int, engine: Any, to_model: Callable[[Any], Any] | None,
         target_visqol: float | None, device: str, tolerance: float) -> BaselineResult:
    import torch

    from harmonycloak.config import EngineConfig, resolve_device
    from harmonycloak.perturb.optimize import EngineSettings, min_min

    what = f"pgd_{norm}"
    x_np = _clean(samples, sample_rate_hz, what)
    if target_visqol is not None:
        _require_visqol(what)
    engine = EngineConfig() if engine is None else engine
    device = resolve_device(device)
    x = torch.from_numpy(x_np).to(device)
    model_input = to_model if to_model is not None else (lambda y: y[None])
    ball = (LinfBall if norm == "linf" else L2Ball)(tuple(x.shape), epsilon, device=device)
    with torch.no_grad():
        examples = int(model_input(x).shape[0])
        loss_before = float(target.loss(model_input(x)))
    settings = EngineSettings.from_config(engine, alpha=0.0,
                                          batch_size=max(1, min(engine.batch_size, examples)))
    result = min_min(x, ball, target, to_model=model_input,
                     regularizer=lambda params: params.new_zeros(()), settings=settings,
                     generator=torch.Generator().manual_seed(int(seed)))
    with torch.no_grad():
        perturbed = ball.apply(x, result.params)
        loss_after = float(target.loss(model_input(perturbed)))
        loss_trained = float(target.loss(model_input(x)))
        delta = (perturbed - x).cpu().numpy().astype(np.float32)
    details = {"norm": norm, "epsilon": float(epsilon), "seed": int(seed),
               "loss_clean": loss_before, "loss_perturbed": loss_after,
               "loss_clean_trained": loss_trained,
               "max_abs": float(np.abs(delta).max()),
               "rms": float(np.sqrt(np.mean(delta.astype(np.float64) ** 2))),
               "engine": {"outer_rounds": settings.outer_rounds,
                          "outer_steps": settings.outer_steps,
                          "inner_steps": settings.inner_steps, "pgd_step": settings.pgd_step},
               "history": result.history}
    return _result(what, x_np, delta, int(sample_rate_hz), target_visqol, tolerance, details)


def pgd_linf(samples: np.ndarray, sample_rate_hz: int, target: Any, *, seed: int,
             epsilon: float = 0.01, engine: Any = None,
             to_model: Callable[[Any], Any] | None = None, target_visqol: float | None = None,
             device: str = "cpu", tolerance: float = VISQOL_TOLERANCE) -> BaselineResult:
    """Error-minimizing noise in an L-infinity ball, no psychoacoustic shaping.

    Runs :func:`harmonycloak.perturb.optimize.min_min` with :class:`LinfBall` (every
    sample of δ within ±``epsilon``) on ``target`` (a
    :class:`~harmonycloak.perturb.protocols.Target`), with the rounds, steps and step
    size of ``engine`` (a :class:`harmonycloak.config.EngineConfig`; default its
    defaults, i.e. what protection runs) and no regularizer: outer training steps on the
    target, then signed-gradient PGD minimizing its loss. ``target`` is trained in place,
    as protection trains its own: pass a fresh one. ``to_model`` maps the perturbed clip
    ``[channels, samples]`` (torch) to the target's batch; default ``y[None]``, one
    example. Then, with ``target_visqol``, δ is scaled (beyond the ball if need be) until
    ViSQOL matches within ``tolerance``. ``details``: the losses on the clean and the
    perturbed clip, the norms of δ and the engine history. Seeded by ``seed``.
    """
    return _pgd("linf", samples, sample_rate_hz, target, epsilon=epsilon, seed=seed,
                engine=engine, to_model=to_model, target_visqol=target_visqol, device=device,
                tolerance=tolerance)


def pgd_l2(samples: np.ndarray, sample_rate_hz: int, target: Any, *, seed: int,
           epsilon: float = 0.003, engine: Any = None,
           to_model: Callable[[Any], Any] | None = None, target_visqol: float | None = None,
           device: str = "cpu", tolerance: float = VISQOL_TOLERANCE) -> BaselineResult:
    """Error-minimizing noise in an L2 ball of RMS ``epsilon``; see :func:`pgd_linf`.

    The ball is :class:`L2Ball`: RMS(δ) ≤ ``epsilon`` over the whole clip (‖δ‖₂ ≤
    ``epsilon`` √(channels·samples)), so δ may concentrate where the gradient is largest.
    """
    return _pgd("l2", samples, sample_rate_hz, target, epsilon=epsilon, seed=seed,
                engine=engine, to_model=to_model, target_visqol=target_visqol, device=device,
                tolerance=tolerance)


# ---------------------------------------------------------------------------------------
# HarmonyDagger (PyPI)
# ---------------------------------------------------------------------------------------


def harmonydagger(samples: np.ndarray, sample_rate_hz: int, *, seed: int,
                  noise_scale: float = 0.1, window_size: int = 2048, hop_size: int = 512,
                  adaptive_scaling: bool = False, phase: bool = False,
                  target_visqol: float | None = None,
                  tolerance: float = VISQOL_TOLERANCE) -> BaselineResult:
    """Protect a clip with the ``harmonydagger`` package (PyPI, version 0.4).

    Defaults are its command line's (``harmonydagger IN``: 2048-point STFT, hop 512,
    noise scale 0.1, no adaptive scaling, dry/wet 1). What it does, per channel
    (``harmonydagger.core.generate_psychoacoustic_noise``): in every STFT frame it takes
    the loudest bin, and within one critical band around it sets a "noise" magnitude of
    ``noise_scale`` times the signal's magnitude (less 0.8 dB per Bark of distance),
    floored at its threshold of hearing and capped at 0.8 times the signal, **with the
    signal's own phase**; the inverse STFT is added to the music and the sum clipped to
    [-1, 1]. Because the phase is the music's, the change is mostly a small boost of the
    loudest partial's band, which ViSQOL (level-matched) barely sees. With ``phase=True``
    its phase perturbation (random phase offsets up to 0.3 rad where the music is above
    its hearing threshold) is added too, drawn with ``seed + channel`` (its own
    ``generate_protected_audio`` passes no seed, so it would not be reproducible).
    Without ``phase`` the tool is deterministic and ``seed`` is only recorded.

    With ``target_visqol`` the change (output minus input) is scaled to that ViSQOL.
    Raises ModelLoadError with the install hint when the package is missing, and
    HarmonyCloakError naming the package when it fails on this clip.
    """
    x = _clean(samples, sample_rate_hz, "harmonydagger")
    try:
        from harmonydagger.core import generate_psychoacoustic_noise
        from harmonydagger.phase import generate_phase_perturbation
    except ImportError:
        raise ModelLoadError("the harmonydagger baseline needs the harmonydagger package; "
                             f"{HARMONYDAGGER_INSTALL_HINT}") from None
    if target_visqol is not None:
        _require_visqol("harmonydagger")
    rate = int(sample_rate_hz)
    if x.shape[1] < window_size:
        raise InputError(f"harmonydagger: a clip of {x.shape[1]} samples is shorter than its "
                         f"STFT window of {window_size}; give at least {window_size / rate:.2f} s")
    noise = np.zeros(x.shape, dtype=np.float64)
    try:
        for channel, row in enumerate(x.astype(np.float64)):
            noise[channel] = generate_psychoacoustic_noise(
                row, rate, window_size, hop_size, noise_scale, adaptive_scaling)
            if phase:
                noise[channel] += generate_phase_perturbation(row, rate, window_size, hop_size,
                                                              seed=int(seed) + channel)
    except Exception as error:  # a third-party tool: report its failure plainly
        raise HarmonyCloakError(f"harmonydagger failed on this clip ({type(error).__name__}: "
                                f"{error})") from error
    protected = np.clip(x + noise, -1.0, 1.0)
    delta = (protected - x).astype(np.float32)
    details = {"noise_scale": noise_scale, "window_size": window_size, "hop_size": hop_size,
               "adaptive_scaling": adaptive_scaling, "phase": phase, "seed": int(seed),
               "version": _harmonydagger_version()}
    return _result("harmonydagger", x, delta, rate, target_visqol, tolerance, details)


def _harmonydagger_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("harmonydagger")
    except metadata.PackageNotFoundError:
        return None
