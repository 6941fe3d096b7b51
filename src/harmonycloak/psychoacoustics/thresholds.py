"""Absolute threshold of hearing, the Bark scale and critical bands.

All functions take frequencies in Hz as a tensor (or float) of any shape and return a
float32 tensor of the same shape, unless stated otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ATH_MAX_HZ",
    "ATH_MIN_HZ",
    "CLASSIC_BAND_EDGES_HZ",
    "absolute_threshold_db",
    "bark",
    "critical_band_edges_hz",
    "critical_band_index",
    "critical_band_matrix",
    "critical_bandwidth_hz",
]

ATH_MIN_HZ = 20.0
"""Frequencies below this are evaluated at 20 Hz: Terhardt's first term diverges at 0 Hz."""

ATH_MAX_HZ = 20000.0
"""Frequencies above this are evaluated at 20 kHz (~160 dB): the fitted quartic term is not
data above ~18 kHz and overflows float32 power at high rates (~85000 dB at 96 kHz)."""

CLASSIC_BAND_EDGES_HZ: tuple[float, ...] = (
    0.0, 100.0, 200.0, 300.0, 400.0, 510.0, 630.0, 770.0, 920.0, 1080.0, 1270.0, 1480.0,
    1720.0, 2000.0, 2320.0, 2700.0, 3150.0, 3700.0, 4400.0, 5300.0, 6400.0, 7700.0, 9500.0,
    12000.0, 15500.0, 20500.0,
)  # fmt: skip
"""Edges of Zwicker's 25 critical bands (Zwicker 1961; Zwicker & Fastl, Psychoacoustics,
table 6.1), the bands MPEG-1 psychoacoustic model 1 uses for its non-tonal maskers."""


def _hz(f_hz: Tensor | float) -> Tensor:
    f = torch.as_tensor(f_hz)
    return f if f.dtype in (torch.float32, torch.float64) else f.to(torch.float32)


def absolute_threshold_db(
    f_hz: Tensor | float, *, min_hz: float = ATH_MIN_HZ, max_hz: float = ATH_MAX_HZ
) -> Tensor:
    """Absolute threshold of hearing (threshold in quiet) in dB SPL, Terhardt (1979).

    ``T(f) = 3.64 (f/kHz)^-0.8 - 6.5 exp(-0.6 (f/kHz - 3.3)^2) + 1e-3 (f/kHz)^4``

    (E. Terhardt, "Calculating virtual pitch", Hearing Research 1, 1979; the form used
    by Painter & Spanias 2000 and the MPEG-1 model-1 tables.) The HarmonyCloak paper's
    eq. 2 prints only the first two terms; without the quartic term the threshold stays
    near 0 dB at high frequencies instead of rising steeply: the term adds 0.001 dB at
    1 kHz, 10 dB at 10 kHz and 65.5 dB at 16 kHz. We use all three (the standard
    formula); a budget built on eq. 2 as printed would allow ~65 dB too much noise at
    16 kHz. Known values: ~3.37 dB at 1 kHz, ~23 dB at 100 Hz, minimum ~-5 dB near 3.3 kHz.

    ``f_hz`` is clamped to ``[min_hz, max_hz]`` (20 Hz and 20 kHz by default, see
    ``ATH_MIN_HZ`` / ``ATH_MAX_HZ``): 0 Hz (the DC bin) reads T(20 Hz) ~ 83 dB and
    frequencies above 20 kHz read T(20 kHz) ~ 160 dB, i.e. effectively inaudible.
    """
    f = _hz(f_hz).clamp(min_hz, max_hz) / 1000.0
    return 3.64 * f.pow(-0.8) - 6.5 * torch.exp(-0.6 * (f - 3.3).square()) + 1e-3 * f.pow(4)


def bark(f_hz: Tensor | float) -> Tensor:
    """Critical-band rate in Bark, Zwicker & Terhardt (1980).

    ``z(f) = 13 atan(0.00076 f) + 3.5 atan((f / 7500)^2)`` (f in Hz); 1 kHz -> 8.51 Bark,
    monotone, saturating at ~25.9 Bark.
    """
    f = _hz(f_hz)
    return 13.0 * torch.atan(0.00076 * f) + 3.5 * torch.atan((f / 7500.0).square())


def critical_bandwidth_hz(f_hz: Tensor | float) -> Tensor:
    """Critical bandwidth around ``f_hz`` in Hz, Zwicker & Terhardt (1980).

    ``25 + 75 (1 + 1.4 (f/kHz)^2)^0.69``: ~100 Hz up to 500 Hz, ~20 % of f above.
    """
    f = _hz(f_hz) / 1000.0
    return 25.0 + 75.0 * (1.0 + 1.4 * f.square()).pow(0.69)


def critical_band_edges_hz(sample_rate_hz: int) -> Tensor:
    """Critical band edges up to Nyquist, float32 ``[bands + 1]`` in Hz, strictly increasing.

    Zwicker's classic edges (``CLASSIC_BAND_EDGES_HZ``) more than 100 Hz below Nyquist,
    then Nyquist closes the last band (so no band is a sliver without FFT bins). Above the
    classic top (20.5 kHz, ~24.6 Bark: nothing audible; the whole rest of the Bark scale is
    ~1.3 Bark) the remainder up to Nyquist forms one extra band.
    So 44.1 and 48 kHz give 26 bands, 32 kHz 25, 16 kHz 22, 8 kHz 18.
    """
    nyquist = sample_rate_hz / 2.0
    edges = [e for e in CLASSIC_BAND_EDGES_HZ if e < nyquist - 100.0]
    edges.append(nyquist)
    return torch.tensor(edges, dtype=torch.float32)


def critical_band_index(f_hz: Tensor, edges_hz: Tensor) -> Tensor:
    """Index of the band ``[edges[b], edges[b + 1])`` holding each frequency (int64).

    The top edge (Nyquist) belongs to the last band; frequencies outside are clamped.
    """
    idx = torch.searchsorted(edges_hz.to(f_hz.dtype), f_hz.contiguous(), right=True) - 1
    return idx.clamp(0, edges_hz.numel() - 2)


def critical_band_matrix(sample_rate_hz: int, n_fft: int) -> Tensor:
    """0/1 matrix ``[bins, bands]`` summing FFT bins into critical bands (float32).

    Bin ``k`` (at ``k * sample_rate_hz / n_fft`` Hz) belongs to the band of
    :func:`critical_band_edges_hz` that holds its frequency; the DC bin belongs to none
    (an offset is not sound). ``power[..., bins] @ matrix`` gives band powers.
    """
    k_bins = n_fft // 2 + 1
    freqs = torch.arange(k_bins, dtype=torch.float64) * (sample_rate_hz / n_fft)
    edges = critical_band_edges_hz(sample_rate_hz).double()
    band = critical_band_index(freqs, edges)
    matrix = torch.zeros(k_bins, edges.numel() - 1, dtype=torch.float32)
    matrix[torch.arange(1, k_bins), band[1:]] = 1.0
    return matrix
