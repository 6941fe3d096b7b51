"""Dominant tone per short window and the bounds of the paper's eq. 10-11.

HarmonyCloak (section 4.3) cuts the music into non-overlapping windows of ``l_w`` = 10 ms,
finds the dominant frequency ``nu_t`` of each window by STFT and bounds the noise at that
frequency by ``T_H(nu_t) <= delta_t <= M_t`` (eq. 11): the threshold in quiet below, the
music's own level at ``nu_t`` above. Eq. 10 prints ``M_t = -20 log(M(nu_t) / 20^-6)``; it
means the level in dB SPL, ``20 log10(p / 20 uPa)``. A digital file carries no pressure,
so here the level is the calibrated SPL of :mod:`.calibration` (full-scale sine = 96 dB):
the level of the strongest spectral peak in the window.

Analysis: 10 ms at 44.1 kHz is 441 samples, a 100 Hz resolution that cannot tell A4 from
B4. Each window is therefore analysed with a longer Hann window centred on it (the
default analysis FFT size of the rate, ~23 ms: 1024 samples at 44.1 kHz, or the window
itself if longer), zero-padded ``zero_pad`` times (default 2, ~21.5 Hz bins at 44.1 kHz),
and the peak refined by parabolic interpolation of the dB spectrum (typically within a
few Hz; the level is read at the vertex, which also removes most of the scalloping loss).
Each analysis frame's window-weighted mean (DC offset) is removed first, and frequencies
below ``min_hz`` (20 Hz: rumble) and above ``max_hz`` (20 kHz) are ignored. In inactive
windows (silence) ``frequency_hz`` and ``level_db`` describe the noise floor only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError

from .calibration import FULL_SCALE_SPL_DB, POWER_FLOOR, as_signal, default_n_fft, hann_window
from .thresholds import absolute_threshold_db

__all__ = ["DEFAULT_WINDOW_MS", "DominantTones", "dominant_tones"]

DEFAULT_WINDOW_MS = 10.0
"""The paper's window length l_w."""


@dataclass(frozen=True)
class DominantTones:
    """Dominant tone of each window, all tensors ``[..., windows]`` (leading dims of the input).

    * ``frequency_hz``: dominant frequency (float32, Hz);
    * ``level_db``: its level in dB SPL (calibrated, eq. 10);
    * ``lower_db``: threshold in quiet at that frequency (eq. 11 lower bound);
    * ``upper_db``: the music's level there (eq. 11 upper bound; equals ``level_db``);
    * ``active``: bool, ``level_db >= lower_db + margin_db``; inactive windows (silence, no
      audible tone) get no noise.

    Window ``t`` covers samples ``[t * window_samples, (t + 1) * window_samples)``; the
    last window may be partial.
    """

    frequency_hz: Tensor
    level_db: Tensor
    lower_db: Tensor
    upper_db: Tensor
    active: Tensor
    window_samples: int
    sample_rate_hz: int

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate_hz

    @property
    def num_windows(self) -> int:
        return int(self.frequency_hz.shape[-1])


def dominant_tones(
    x: Tensor | np.ndarray | AudioClip,
    sample_rate_hz: int | None = None,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    n_fft: int | None = None,
    zero_pad: int = 2,
    min_hz: float = 20.0,
    max_hz: float = 20000.0,
    margin_db: float = 6.0,
    interpolate: bool = True,
) -> DominantTones:
    """Dominant frequency, its level and the eq. 11 bounds per ``window_ms`` window.

    ``x``: audio ``[..., samples]`` (each channel / track on its own) or an AudioClip.
    ``n_fft``: analysis window length in samples (default: the rate's default FFT size,
    at least one window long); ``zero_pad``: FFT size = ``zero_pad * n_fft``;
    ``interpolate``: parabolic peak interpolation (else bin centre and bin level).
    ``windows = ceil(samples / window_samples)``. Computed without gradients; the input is
    left unchanged. Raises :class:`InputError` for bad parameters or empty audio.
    """
    x, sr = as_signal(x, sample_rate_hz)
    if not window_ms > 0:
        raise InputError(f"window_ms={window_ms} must be positive (the paper uses 10 ms)")
    hop = max(1, round(sr * window_ms / 1000.0))
    n = int(n_fft) if n_fft is not None else max(default_n_fft(sr), 1 << math.ceil(math.log2(hop)))
    if n < hop or n < 16:
        raise InputError(f"n_fft={n_fft} must be >= 16 and cover a window ({hop} samples)")
    if int(zero_pad) < 1:
        raise InputError(f"zero_pad={zero_pad} must be >= 1")
    size = n * int(zero_pad)
    nyquist = sr / 2.0
    hi_hz = min(float(max_hz), nyquist)
    if not 0.0 <= min_hz < hi_hz:
        raise InputError(f"min_hz={min_hz} must be >= 0 and below max_hz={hi_hz}")

    with torch.no_grad():
        lead = x.shape[:-1]
        samples = x.shape[-1]
        rows = x.detach().reshape(-1, samples).to(torch.float32)
        windows = -(-samples // hop)
        left = n // 2 - hop // 2
        right = max(0, (windows - 1) * hop + n - (samples + left))
        padded = torch.nn.functional.pad(rows, (left, right))
        frames = padded.unfold(-1, n, hop)[:, :windows]  # [R, W, n], centred on each window
        window = hann_window(n, rows.device)
        # Remove each frame's window-weighted mean: a DC offset is no note, and its leakage
        # would otherwise outshine quiet low notes.
        offset = (frames * window).sum(-1, keepdim=True) / window.sum()
        spec = torch.fft.rfft((frames - offset) * window, n=size, dim=-1)
        power_db = 10.0 * torch.log10(spec.real.square() + spec.imag.square() + POWER_FLOOR)

        bin_hz = sr / size
        k_lo = max(1, math.ceil(min_hz / bin_hz))
        k_hi = min(size // 2 - 1, math.floor(hi_hz / bin_hz))
        k_hi = max(k_hi, k_lo)
        peak = power_db[..., k_lo : k_hi + 1].argmax(-1, keepdim=True) + k_lo
        y0 = power_db.gather(-1, peak)
        if interpolate:
            ym = power_db.gather(-1, peak - 1)
            yp = power_db.gather(-1, peak + 1)
            curvature = ym - 2.0 * y0 + yp
            ok = curvature < 0
            delta = torch.where(ok, 0.5 * (ym - yp) / torch.where(ok, curvature, -1.0), 0.0)
            delta = delta.clamp(-0.5, 0.5)
            level = y0 - 0.25 * (ym - yp) * delta
            freq = (peak.to(torch.float32) + delta) * bin_hz
        else:
            level, freq = y0, peak.to(torch.float32) * bin_hz
        freq = freq.squeeze(-1)
        level = FULL_SCALE_SPL_DB + level.squeeze(-1)
        lower = absolute_threshold_db(freq)
        active = level >= lower + float(margin_db)

    def shaped(t: Tensor) -> Tensor:
        return t.reshape(*lead, windows)

    return DominantTones(
        frequency_hz=shaped(freq),
        level_db=shaped(level),
        lower_db=shaped(lower),
        upper_db=shaped(level.clone()),
        active=shaped(active),
        window_samples=hop,
        sample_rate_hz=sr,
    )
