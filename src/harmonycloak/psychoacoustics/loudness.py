"""Programme loudness (ITU-R BS.1770-4) and peak levels of a clip.

Plain numpy functions on float32 ``[channels, samples]`` at ``sample_rate_hz``; they are
reported by ``analyze`` and are not part of any gradient path. Vectorized over blocks
(cumulative sums), any channel count; 5- and 6-channel audio is weighted as 5.0 / 5.1
surround (:func:`channel_weights`: surrounds +1.5 dB, the 5.1 LFE channel left out).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter, resample_poly

__all__ = [
    "MIN_LOUDNESS_S",
    "channel_weights",
    "integrated_loudness_lufs",
    "k_weighting_coefficients",
    "sample_peak_dbfs",
    "true_peak_dbtp",
]

MIN_LOUDNESS_S = 0.4
"""BS.1770 gates 400 ms blocks: shorter audio has no integrated loudness."""

_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
# BS.1770-4 channel weights G_i by channel count, in the WAV/SMPTE channel order
# (WAVE_FORMAT_EXTENSIBLE default masks): 5.0 is L R C Ls Rs, 5.1 is L R C LFE Ls Rs and
# the LFE is left out of the measurement (weight 0); the surrounds weigh 1.41 (+1.5 dB).
_SURROUND_WEIGHTS: dict[int, tuple[float, ...]] = {
    5: (1.0, 1.0, 1.0, 1.41, 1.41),
    6: (1.0, 1.0, 1.0, 0.0, 1.41, 1.41),
}


def channel_weights(channels: int) -> tuple[float, ...]:
    """BS.1770-4 weight ``G_i`` of each channel, by channel count (WAV channel order).

    * 5 channels (5.0: L R C Ls Rs): ``(1, 1, 1, 1.41, 1.41)``;
    * 6 channels (5.1: L R C LFE Ls Rs): ``(1, 1, 1, 0, 1.41, 1.41)``, the LFE left out;
    * any other count (mono, stereo, 3/4-channel, 7.1, ...): 1.0 each. The standard
      weighs every front channel 1.0; layouts whose surround positions a bare channel
      count does not tell are measured as if all channels were front channels.
    """
    return _SURROUND_WEIGHTS.get(int(channels), (1.0,) * int(channels))


def k_weighting_coefficients(sample_rate_hz: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads (high shelf, then high pass) as ``(b, a)`` pairs.

    BS.1770 tabulates them at 48 kHz only; these analog prototypes (the parametrization
    used by libebur128) reproduce those coefficients to ~1e-8 at 48 kHz and give the same
    response at other rates.
    """
    k = math.tan(math.pi * 1681.974450955533 / sample_rate_hz)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    k = math.tan(math.pi * 38.13547087602444 / sample_rate_hz)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


def _block_powers(weighted: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Mean square per channel of 400 ms blocks with 75 % overlap: ``[channels, blocks]``."""
    block = int(round(MIN_LOUDNESS_S * sample_rate_hz))
    step = int(round(MIN_LOUDNESS_S * 0.25 * sample_rate_hz))
    n = weighted.shape[1]
    starts = np.arange(0, n - block + 1, step)
    csum = np.concatenate(
        [np.zeros((weighted.shape[0], 1)), np.cumsum(weighted**2, axis=1)], axis=1
    )
    return (csum[:, starts + block] - csum[:, starts]) / block


def integrated_loudness_lufs(samples: np.ndarray, sample_rate_hz: int) -> float | None:
    """Gated integrated loudness in LUFS (BS.1770-4: K-weighting, 400 ms blocks with 75 %
    overlap, -70 LUFS absolute gate, -10 LU relative gate).

    Channels are weighted by :func:`channel_weights` (5.0 / 5.1 surround for 5 / 6
    channels). Returns None when the clip is shorter than 400 ms or silent (nothing
    above the absolute gate, e.g. a 5.1 file with sound only in its LFE channel), where
    the standard defines no value.
    """
    channels, n = samples.shape
    if n < MIN_LOUDNESS_S * sample_rate_hz:
        return None
    weighted = samples.astype(np.float64)
    for b, a in k_weighting_coefficients(sample_rate_hz):
        weighted = lfilter(b, a, weighted, axis=1)
    weights = np.asarray(channel_weights(channels))
    powers = weights @ _block_powers(weighted, sample_rate_hz)  # [blocks]
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(powers)
    gated = powers[block_lufs > _ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return None
    relative_gate = -0.691 + 10.0 * math.log10(gated.mean()) + _RELATIVE_GATE_LU
    gated = powers[block_lufs > max(relative_gate, _ABSOLUTE_GATE_LUFS)]
    return -0.691 + 10.0 * math.log10(gated.mean())


def sample_peak_dbfs(samples: np.ndarray) -> float | None:
    """Largest absolute sample in dB full scale (1.0 = 0 dBFS); None for digital silence."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else None


_TRUE_PEAK_BLOCK = 1 << 16
_TRUE_PEAK_OVERLAP = 64  # input samples either side; the polyphase FIR spans +-10 of them


def true_peak_dbtp(samples: np.ndarray, sample_rate_hz: int) -> float | None:
    """Inter-sample ("true") peak in dBTP per BS.1770-4 annex 2.

    The signal is oversampled to at least 176.4 kHz (4x at 44.1/48 kHz, 2x at 88.2/96 kHz,
    none from 176.4 kHz up) with a polyphase FIR, and the largest absolute value is taken.
    Blocks of 65536 samples (with overlap wider than the filter) keep memory flat on long
    files and give the same value as one pass. The result is never below the sample peak.
    None for digital silence.
    """
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        return None
    factor = max(1, math.ceil(176_400 / sample_rate_hz))
    n = samples.shape[1]
    if factor > 1 and n > 1:
        for start in range(0, n, _TRUE_PEAK_BLOCK):
            lo = max(0, start - _TRUE_PEAK_OVERLAP)
            hi = min(n, start + _TRUE_PEAK_BLOCK + _TRUE_PEAK_OVERLAP)
            up = resample_poly(samples[:, lo:hi].astype(np.float32), factor, 1, axis=1)
            core = up[:, (start - lo) * factor:(min(n, start + _TRUE_PEAK_BLOCK) - lo) * factor]
            peak = max(peak, float(np.max(np.abs(core))))
    return 20.0 * math.log10(peak)
