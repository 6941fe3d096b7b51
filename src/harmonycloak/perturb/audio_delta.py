"""δ for audio from free parameters, inside its budget by construction (issue 10).

Two parametrizations of the perturbation δ (float32 ``[channels, samples]``, the clip's
shape, at the file's sample rate), one per budget of :mod:`harmonycloak.perturb.budget`.
Both satisfy the engine's :class:`~harmonycloak.perturb.optimize.Perturbation` protocol
(``init_params``, ``apply``, ``step_scale``) and add ``delta(params)`` and
``regularizer(params)``. Magnitudes are ``lower + (upper - lower) * sigmoid(p)`` (the
paper's sigmoid map, eq. 7 / 11), so every value of the parameters gives a δ inside the
budget and the engine needs no projection; phases are free (any real number).

* :class:`DominantTonePerturbation` (paper section 4.3): per 10 ms window ``t`` and channel,
  a sinusoid at the dominant frequency ``nu_t``. Parameters ``[2, channels, windows]``:
  amplitude logits and phase offsets (radians). Windows are joined by raised-cosine
  (Hann) cross-fades, each window's tone fading out over the next window while the next
  fades in, so amplitude and frequency never jump (no clicks). Phases are continuous: each
  window's tone is a segment of one running oscillator whose phase advances by the mean of
  two neighbouring windows' frequencies per window (trapezoidal rule), so two windows at
  the same frequency with the same phase offset give one unbroken sinusoid, and at the
  middle of every cross-fade both tones are exactly in phase. Phase offsets start at 0.
* :class:`MaskedSpectrumPerturbation`: δ is the overlap-add inverse STFT of one complex
  coefficient per (frame, bin) of the masking analysis' grid (``n_fft``, hop ``n_fft / 2``,
  periodic Hann synthesis window, which sums to one at that hop). A coefficient of
  magnitude ``a`` is a bin-centred sinusoid of peak amplitude ``a`` inside its frame's
  window, the unit of the budget. Parameters ``[2, channels, frames, bins]``: magnitude
  logits and phases; phases start uniform in [-pi, pi) from the perturbation's own seeded
  generator (equal phases would stack every bin into a click at each frame centre).

Both fade δ in over the first and out over the last window (tone) / hop (spectrum) of the
clip, so the noise never starts or stops abruptly at the file's edges.

``step_scale(params)`` is ``d(magnitude)/dp`` for the magnitude logits and the current
magnitude (``d(component)/d(phase)``) for the phases, floored at 1e-12 (never a division
by zero): the engine divides its ``pgd_step`` (in peak amplitude, full scale 1.0) by it,
so one signed step moves each sinusoidal component by about ``pgd_step``. The engine also
clips parameters to +-12, harmless for phases (a range wider than 2 pi).

``regularizer(params)`` is the paper's ``sum_c w^c ||δ^c||_2`` (eq. 5) made scale-free:
``mean_c w^c RMS(δ^c) / RMS(x^c)``, each channel's noise RMS relative to the clean
channel's RMS (``10^(-SNR_c / 20)``), with ``w^c`` from
:func:`~harmonycloak.perturb.budget.channel_weights` (mean 1; louder channels weigh
less). A silent channel has δ = 0 and contributes 0. Since the loss and the regularizer
each render δ, callers holding δ already can use :meth:`delta_regularizer` instead.

Cost (float32, one thread, 25 s stereo at 44.1 kHz, shared 2-core machine): ``apply`` +
backward 0.04-0.08 s (tone) and 0.13-0.18 s (spectrum); the regularizer costs about as
much again. Memory grows linearly with
duration, nothing is quadratic in the length: autograd keeps ~1.0 MB (tone) / ~1.9 MB
(spectrum) per channel-second of audio for the backward pass; the spectrum's parameters
and their gradient add 0.35 MB each, its budget ~0.4 MB (tone: negligible). δ is exactly
0 wherever the budget is inactive, and for silence.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from harmonycloak.config import resolve_device
from harmonycloak.errors import InputError
from harmonycloak.perturb.budget import DominantToneBudget, MaskedSpectrumBudget

__all__ = [
    "DEFAULT_INITIAL_FRACTION",
    "DominantTonePerturbation",
    "MaskedSpectrumPerturbation",
    "relative_rms_regularizer",
]

DEFAULT_INITIAL_FRACTION = 0.05
"""Where magnitudes start between their bounds (in amplitude): quiet, ~26 dB under the top."""

_SCALE_FLOOR = 1e-12
_RMS_FLOOR = 1e-12


def _initial_logit(initial_fraction: float) -> float:
    value = float(initial_fraction)
    if not 0.0 < value < 1.0:
        raise InputError(
            f"initial_fraction={initial_fraction} must lie strictly between 0 and 1 "
            f"(e.g. {DEFAULT_INITIAL_FRACTION})"
        )
    return math.log(value / (1.0 - value))


def relative_rms_regularizer(delta: Tensor, reference_rms: Tensor, weights: Tensor) -> Tensor:
    """``mean_c w_c RMS(δ_c) / RMS(x_c)``, a differentiable scalar.

    ``delta``: ``[channels, samples]``; ``reference_rms`` / ``weights``: ``[channels]``.
    A silent reference channel is floored at 1e-12 (its δ is 0, so it adds 0). The gradient
    at δ = 0 is 0 (the square root is taken of the mean square plus 1e-24).
    """
    mean_square = delta.square().mean(-1)
    rms = torch.sqrt(mean_square + _RMS_FLOOR**2) - _RMS_FLOOR
    return (weights * rms / reference_rms.clamp_min(_RMS_FLOOR)).mean()


def _edge_fade(num_samples: int, fade_samples: int) -> Tensor:
    """Envelope ``[samples]``: ``sin^2`` ramps over the first and last ``fade_samples``.

    The clip's first and last frames would otherwise start / stop the noise at full level
    at the file's edge: an abrupt step that splatters across the spectrum (measured: +16 dB
    NMR in the first frame's upper bands). Where the ramps overlap (short clips) the
    smaller value holds.
    """
    n = torch.arange(num_samples, dtype=torch.float64)
    length = max(1, int(fade_samples))
    rise = torch.sin(0.5 * math.pi * ((n + 0.5) / length).clamp(max=1.0)).square()
    fall = rise.flip(0)
    return torch.minimum(rise, fall).to(torch.float32)


class _AudioPerturbation(ABC):
    """What both parametrizations share: shape checks, apply, the regularizer."""

    _shape: tuple[int, int]
    _params_shape: tuple[int, ...]
    device: torch.device

    def _setup_common(self, budget: DominantToneBudget | MaskedSpectrumBudget, device: str,
                      initial_fraction: float, fade_samples: int) -> None:
        self.device = torch.device(resolve_device(device))
        self.initial_logit = _initial_logit(initial_fraction)
        self._shape = (budget.num_channels, budget.num_samples)
        self._reference_rms = budget.channel_rms.to(self.device)
        self._weights = budget.channel_weights.to(self.device)
        self._fade = _edge_fade(budget.num_samples, fade_samples).to(self.device)

    def _faded(self, delta: Tensor) -> Tensor:
        """δ with the raised-cosine fade-in / fade-out at the clip's edges applied."""
        return delta * self._fade

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of δ, ``(channels, samples)``."""
        return self._shape

    @property
    def params_shape(self) -> tuple[int, ...]:
        return self._params_shape

    def _check_params(self, params: Tensor) -> None:
        if not isinstance(params, Tensor) or tuple(params.shape) != self._params_shape:
            got = tuple(params.shape) if isinstance(params, Tensor) else type(params).__name__
            raise InputError(
                f"parameters of shape {got} do not fit this perturbation "
                f"{list(self._params_shape)}; start from init_params()"
            )

    @abstractmethod
    def delta(self, params: Tensor) -> Tensor:
        """δ ``[channels, samples]`` for ``params``, differentiable."""

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """``clamp(x + δ(params), -1, 1)``; ``x`` is ``[..., channels, samples]``.

        Differentiable in ``params`` (and ``x``) except where the clamp is active; ``x`` is
        not modified. Raises :class:`InputError` if ``x`` has another shape than the clip
        the budget was computed from.
        """
        if not isinstance(x, Tensor) or x.ndim < 2 or tuple(x.shape[-2:]) != self._shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(
                f"audio of shape {got} does not match the budget's clip "
                f"[channels, samples] = {list(self._shape)}; apply the perturbation to the "
                "clip it was built for"
            )
        return (x + self.delta(params).to(x.dtype)).clamp(-1.0, 1.0)

    def delta_regularizer(self, delta: Tensor) -> Tensor:
        """The regularizer of an already rendered ``delta [channels, samples]``."""
        return relative_rms_regularizer(delta, self._reference_rms, self._weights)

    def regularizer(self, params: Tensor) -> Tensor:
        """``mean_c w^c RMS(δ^c) / RMS(x^c)`` (see the module docstring); scalar."""
        return self.delta_regularizer(self.delta(params))

    @staticmethod
    def _magnitude_scale(lower: Tensor, upper: Tensor, logits: Tensor) -> Tensor:
        s = torch.sigmoid(logits.detach())
        return (upper - lower) * s * (1.0 - s)


class DominantTonePerturbation(_AudioPerturbation):
    """One cross-faded sinusoid per window and channel at the dominant frequency.

    ``budget``: a :class:`DominantToneBudget`; ``initial_fraction``: where amplitudes start
    between their bounds; ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``. Parameters are
    ``[2, channels, windows]``: ``params[0]`` amplitude logits, ``params[1]`` phase offsets
    (radians, relative to the running oscillator; 0 at the start). Deterministic (no
    randomness at all).
    """

    def __init__(self, budget: DominantToneBudget, *,
                 initial_fraction: float = DEFAULT_INITIAL_FRACTION,
                 device: str = "cpu") -> None:
        self.budget = budget
        self._setup_common(budget, device, initial_fraction, budget.window_samples)
        channels, windows = budget.num_channels, budget.num_windows
        self._params_shape = (2, channels, windows)
        self.lower = budget.lower.to(self.device)
        self.upper = budget.upper.to(self.device)
        self._plan_rendering()

    def _plan_rendering(self) -> None:
        """Constant tensors of the renderer: per-window angular frequency and the running
        oscillator's phase at each window centre (float64 accumulation, reduced mod 2 pi),
        padded with one virtual window on each side that continues the first / last."""
        b = self.budget
        w = b.window_samples
        omega = b.frequency_hz.to(torch.float64) * (2.0 * math.pi / b.sample_rate_hz)  # [C, T]
        step = 0.5 * (omega[:, 1:] + omega[:, :-1]) * w
        start = omega[:, :1] * (w // 2)
        theta = torch.cat([start, start + torch.cumsum(step, dim=1)], dim=1)
        theta = torch.cat([theta[:, :1] - omega[:, :1] * w, theta,
                           theta[:, -1:] + omega[:, -1:] * w], dim=1)
        omega = torch.cat([omega[:, :1], omega, omega[:, -1:]], dim=1)
        offset = w - w // 2  # sample n sits at position n + offset of the block grid
        blocks = -(-(b.num_samples + offset) // w)
        self._offset, self._blocks = offset, blocks
        self._omega = omega[:, : blocks + 1].to(torch.float32).to(self.device)[..., None]
        self._theta = torch.remainder(theta[:, : blocks + 1], 2.0 * math.pi).to(
            torch.float32).to(self.device)[..., None]
        m = torch.arange(w, dtype=torch.float64)
        fade = torch.cos(0.5 * math.pi * m / w).square()
        self._crossfade_out = fade.to(torch.float32).to(self.device)  # [W]
        self._crossfade_in = (1.0 - fade).to(torch.float32).to(self.device)
        self._m = m.to(torch.float32).to(self.device)
        self._m_right = (m - w).to(torch.float32).to(self.device)

    def _padded(self, per_window: Tensor) -> Tensor:
        """``[C, T]`` -> ``[C, blocks + 1, 1]`` with the virtual windows at both ends."""
        padded = torch.cat([per_window[:, :1], per_window, per_window[:, -1:]], dim=1)
        return padded[:, : self._blocks + 1, None]

    def init_params(self) -> Tensor:
        """Amplitudes at ``initial_fraction`` of their range, phase offsets 0 (deterministic)."""
        params = torch.zeros(self._params_shape, device=self.device)
        params[0] = self.initial_logit
        return params.requires_grad_(True)

    def amplitudes(self, params: Tensor) -> Tensor:
        """Peak amplitude per window ``[channels, windows]``, inside the bounds."""
        self._check_params(params)
        return self.lower + (self.upper - self.lower) * torch.sigmoid(params[0])

    def delta(self, params: Tensor) -> Tensor:
        """δ ``[channels, samples]`` (float32), differentiable in ``params``.

        Sample ``n`` between the centres of windows ``b`` and ``b + 1`` (``m = n - c_b`` in
        ``[0, W)``) is ``cos^2(pi m / 2W) a_b sin(theta_b + omega_b m + phi_b) +
        sin^2(pi m / 2W) a_{b+1} sin(theta_{b+1} + omega_{b+1} (m - W) + phi_{b+1})``.
        """
        amplitude = self._padded(self.amplitudes(params))
        phase = self._padded(params[1])
        left = amplitude[:, :-1] * torch.sin(
            self._theta[:, :-1] + phase[:, :-1] + self._omega[:, :-1] * self._m)
        right = amplitude[:, 1:] * torch.sin(
            self._theta[:, 1:] + phase[:, 1:] + self._omega[:, 1:] * self._m_right)
        blocks = left * self._crossfade_out + right * self._crossfade_in  # [C, B, W]
        flat = blocks.reshape(blocks.shape[0], -1)
        return self._faded(flat[:, self._offset : self._offset + self._shape[1]])

    def step_scale(self, params: Tensor) -> Tensor:
        """dδ/dparam per parameter ``[2, channels, windows]`` in peak amplitude per unit."""
        self._check_params(params)
        amp_scale = self._magnitude_scale(self.lower, self.upper, params[0])
        with torch.no_grad():
            amplitude = self.amplitudes(params.detach())
        return torch.stack([amp_scale, amplitude]).clamp_min(_SCALE_FLOOR)


class MaskedSpectrumPerturbation(_AudioPerturbation):
    """Noise shaped under the masking threshold: one coefficient per (frame, bin).

    ``budget``: a :class:`MaskedSpectrumBudget` (hop must be ``n_fft / 2``: the Hann
    synthesis window then sums to one); ``seed``: the initial phases come from a
    ``torch.Generator`` seeded with it; ``initial_fraction`` / ``device`` as in
    :class:`DominantTonePerturbation`. Parameters are ``[2, channels, frames, bins]``:
    ``params[0]`` magnitude logits, ``params[1]`` phases (radians).
    """

    def __init__(self, budget: MaskedSpectrumBudget, *, seed: int = 0,
                 initial_fraction: float = DEFAULT_INITIAL_FRACTION,
                 device: str = "cpu") -> None:
        if 2 * budget.hop_length != budget.n_fft:
            raise InputError(
                f"hop_length={budget.hop_length} with n_fft={budget.n_fft}: the masked-spectrum "
                "synthesis needs 50 % overlap; build the budget from a masking analysis with "
                f"the default hop ({budget.n_fft // 2})"
            )
        self.budget = budget
        self.seed = int(seed)
        self._setup_common(budget, device, initial_fraction, budget.hop_length)
        self._params_shape = (2, budget.num_channels, budget.num_frames, budget.num_bins)
        self.lower = budget.lower.to(self.device)
        self.upper = budget.upper.to(self.device)
        n = budget.n_fft
        self._window = torch.hann_window(n, periodic=True, dtype=torch.float32,
                                         device=self.device)

    def init_params(self) -> Tensor:
        """Magnitudes at ``initial_fraction`` of their range; phases uniform in [-pi, pi)
        from ``torch.Generator().manual_seed(seed)`` (same seed, same parameters)."""
        generator = torch.Generator().manual_seed(self.seed)
        shape = self._params_shape[1:]
        phases = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * math.pi
        logits = torch.full(shape, self.initial_logit, dtype=torch.float32)
        params = torch.stack([logits, phases.to(torch.float32)]).to(self.device)
        return params.requires_grad_(True)

    def magnitudes(self, params: Tensor) -> Tensor:
        """Peak amplitude per (frame, bin) ``[channels, frames, bins]``, inside the bounds."""
        self._check_params(params)
        return self.lower + (self.upper - self.lower) * torch.sigmoid(params[0])

    def delta(self, params: Tensor) -> Tensor:
        """δ ``[channels, samples]`` (float32), differentiable in ``params``.

        Frame ``f`` is ``hann(n) sum_k a_fk cos(2 pi k n / N + phi_fk)`` for ``n`` in
        ``[0, N)``, placed at ``f * hop - N / 2`` (centred like the analysis frames) and
        overlap-added; ``irfft`` of ``(N / 2) a e^{i phi}`` gives the sum of cosines.
        """
        magnitude = self.magnitudes(params)
        phase = params[1]
        n, hop = self.budget.n_fft, self.budget.hop_length
        scale = magnitude * (n / 2.0)
        spectrum = torch.complex(scale * torch.cos(phase), scale * torch.sin(phase))
        frames = torch.fft.irfft(spectrum, n=n, dim=-1) * self._window  # [C, F, N]
        channels, count = frames.shape[0], frames.shape[1]
        # overlap-add at hop N/2: output block j = first half of frame j + second half of j-1
        halves = frames.reshape(channels, count, 2, hop)
        pad = torch.nn.functional.pad
        blocks = pad(halves[:, :, 0], (0, 0, 0, 1)) + pad(halves[:, :, 1], (0, 0, 1, 0))
        flat = blocks.reshape(channels, (count + 1) * hop)
        return self._faded(flat[:, hop : hop + self._shape[1]])

    def step_scale(self, params: Tensor) -> Tensor:
        """dδ/dparam per parameter ``[2, channels, frames, bins]`` in peak amplitude per unit."""
        self._check_params(params)
        amp_scale = self._magnitude_scale(self.lower, self.upper, params[0])
        with torch.no_grad():
            magnitude = self.magnitudes(params.detach())
        return torch.stack([amp_scale, magnitude]).clamp_min(_SCALE_FLOOR)
