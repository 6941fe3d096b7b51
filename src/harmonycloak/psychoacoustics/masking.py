"""Global masking threshold: MPEG-1 psychoacoustic model 1, plus temporal masking.

Per frame (centred Hann frames, see :mod:`.calibration`), following ISO/IEC 11172-3
annex D, psychoacoustic model 1 (layer II variant), vectorized over all frames at once:

1. **Calibrated spectrum** ``X(k)`` in dB SPL (full-scale sine = 96 dB in its peak bin).
2. **Tonal maskers**: local maxima (``X(k) > X(k-1)``, ``X(k) >= X(k+1)``, ``k >= 2``) that
   exceed ``X(k +- j)`` by at least 7 dB for every ``j`` from 2 up to ``j_max(f)``. The
   standard's layer-II neighbourhood (in 1024-point bins at 44.1 kHz, 43.07 Hz wide):
   ``j_max`` = 2 below bin 63 (2.71 kHz), 3 below bin 127 (5.47 kHz), 6 below bin 255
   (10.98 kHz), 12 above. We keep those boundaries in Hz and convert the distances to
   this analysis' bins (``max(2, round(j * 43.07 Hz / bin_width))``), so 44.1 kHz with the
   default 1024-point FFT reproduces the standard exactly and other rates scale with it.
   Masker power = the power sum of bins ``k-1, k, k+1``.
3. **Non-tonal maskers**: in each critical band (:func:`critical_band_edges_hz`), the power
   of all bins except the DC bin and the bins within ``+-j_max`` of a tonal masker, summed,
   placed at the band's geometric-mean frequency ``sqrt(f_first * f_last)`` of its bins
   (the standard's fixed "geometric mean" position, not a power-weighted one).
4. **Decimation**: maskers below the threshold in quiet at their frequency are dropped; of
   tonal maskers closer than 0.5 Bark only the strongest is kept (evaluated on the grid
   below: cells less than 0.5 Bark apart).
5. **Individual thresholds** ``LT = X_m + av(z_m) + vf(dz, X_m)`` with the masking index
   ``av_tonal = -1.525 - 0.275 z - 4.5`` and ``av_noise = -1.525 - 0.175 z - 0.5`` (dB)
   and the spreading function (``dz = z_maskee - z_masker`` in Bark, ``X`` in dB SPL)::

       -3 <= dz < -1:  17 (dz + 1) - (0.4 X + 6)
       -1 <= dz <  0:  (0.4 X + 6) dz
        0 <= dz <  1:  -17 dz
        1 <= dz <  8:  -(dz - 1) (17 - 0.15 X) - 17
       elsewhere:      no masking

   The slope below the masker is steeper than above (upward spread of masking).
   Masker levels are capped at 110 dB SPL (14 dB over full scale) so the upper slope
   ``17 - 0.15 X`` stays positive for out-of-range input.
6. **Global threshold** = power sum of all individual thresholds and the absolute
   threshold of hearing (:func:`absolute_threshold_db`).

Reduced grid (what keeps it fast and memory-bounded): maskers and their spread live on a
grid uniform in Bark (``bark_step``, default 0.125 Bark: ~200 cells at 44.1 kHz; the
standard's own subsampled threshold grid is ~0.2 Bark); each masker sits in the cell
nearest its frequency (<= 0.0625 Bark off) and several in one cell are power-summed
(tonal: the strongest kept). The spread is then a banded operation over the 88 offsets
from -3 to +7.875 Bark, ``O(frames x cells x 88)`` multiply-adds and never a
``[frames, bins, bins]`` tensor: along the offsets the exponent ``1 + b(dz)`` of
``P^(1 + b(dz))`` grows in equal steps, so one multiplication per offset replaces an exp.
The grid threshold is interpolated linearly in dB back to every FFT bin (exact for a lone
masker: the spreading function is piecewise linear in Bark with its breakpoints on the
grid) and only then power-added to the exact per-bin threshold in quiet. Against a naive
full-resolution implementation of the same model on music the difference is ~0.1 dB
median, <1 dB at the 95th percentile, ~2 dB at worst (0.25 Bark: 0.2 / 1.8 / 4.5 dB).
Frames are processed in chunks (``chunk_frames``), so memory is the output (two float32
``[..., frames, bins]`` tensors: ~0.4 GB for 10 minutes of 44.1 kHz stereo) plus a few
tens of MB.

Temporal masking (:func:`temporal_masking`), applied to the per-frame global threshold:
post-masking as a peak-hold envelope that decays ``10 log10(e) / tau(f)`` dB per ms with
the time constants of PEAQ's forward-masking "time domain spreading" (ITU-R BS.1387-1,
FFT ear model: ``tau = 8 ms + (100 Hz / f)(30 ms - 8 ms)``, f clamped to >= 100 Hz) for up
to 200 ms; pre-masking decays 3 dB per ms backwards in time for up to 20 ms (premasking
lasts ~20 ms, postmasking ~200 ms: Zwicker & Fastl, Psychoacoustics, ch. 4, temporal
masking). PEAQ smooths with a first-order filter; the peak-hold form used here is the
upper envelope of that filter's decay and needs no sequential loop:
``T'(t) = max(max_k T(t-k) - k hop slope_post, max_k T(t+k) - k hop slope_pre)``.

The threshold describes the clean music: it is computed without gradients.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError

from ._threads import single_thread
from .calibration import (
    FULL_SCALE_SPL_DB,
    POWER_FLOOR,
    as_signal,
    frame_count,
    frames_power,
    frequencies_hz,
    hann_window,
    padded_frames,
    resolve_framing,
)
from .thresholds import absolute_threshold_db, bark, critical_band_matrix

__all__ = [
    "DEFAULT_BARK_STEP",
    "MaskingResult",
    "masking_threshold",
    "temporal_masking",
]

DEFAULT_BARK_STEP = 0.125
"""Spacing in Bark of the grid the maskers and spreading live on."""

POST_MASKING_MS = 200.0
PRE_MASKING_MS = 20.0
POST_TAU_100HZ_MS = 30.0
POST_TAU_MIN_MS = 8.0
PRE_MASKING_DB_PER_MS = 3.0

_LN10_OVER_10 = math.log(10.0) / 10.0
_TONAL_REF_BIN_HZ = 44100.0 / 1024.0
# (upper edge in reference bins, max neighbour distance in reference bins), layer II table.
_TONAL_NEIGHBOURHOOD = ((63, 2), (127, 3), (255, 6), (math.inf, 12))
_MAX_MASKER_DB = 110.0


@dataclass(frozen=True)
class MaskingResult:
    """The masking analysis of a signal ``[..., samples]``.

    * ``threshold_db``: global masking threshold, float32 ``[..., frames, bins]`` in dB SPL
      (never below ``ath_db``); with temporal masking unless it was turned off;
    * ``psd_db``: the calibrated spectrum it was computed from, same shape, dB SPL;
    * ``ath_db``: absolute threshold of hearing per bin, ``[bins]``;
    * ``frequencies_hz``: bin centres ``[bins]``; ``frame_times_s``: frame centres ``[frames]``;
    * ``sample_rate_hz``, ``n_fft``, ``hop_length``, ``temporal``: how it was computed
      (NMR must frame the noise the same way).
    """

    threshold_db: Tensor
    psd_db: Tensor
    ath_db: Tensor
    frequencies_hz: Tensor
    frame_times_s: Tensor
    sample_rate_hz: int
    n_fft: int
    hop_length: int
    temporal: bool

    @property
    def hop_s(self) -> float:
        """Time between frames in seconds."""
        return self.hop_length / self.sample_rate_hz

    @property
    def num_frames(self) -> int:
        return int(self.threshold_db.shape[-2])


@dataclass(frozen=True)
class _Plan:
    """Constant tables for one (rate, n_fft, grid, device); built once, cached."""

    num_bins: int
    ath_db: Tensor  # [K]
    ath_pow: Tensor  # [K] SPL power (0 dB SPL = 1)
    regions: tuple[tuple[int, int, int], ...]  # (first bin, end bin, j_max) for tonal search
    max_j: int
    band_matrix: Tensor  # [K, B] 0/1, DC excluded
    band_ath_pow: Tensor  # [B] ATH at each band's non-tonal masker
    band_to_cell: Tensor  # [B, G] 0/1
    cell_of_bin: Tensor  # [K] int64
    num_cells: int
    decimation_cells: int
    av_pow: Tensor  # [2, 1, G] 10^(av/10) of tonal / non-tonal maskers per cell
    first_exponent: float  # 1 + b(dz) at the lowest offset
    offsets: tuple[tuple[int, float, float], ...]  # (s, 10^(a_s/10), exponent step to s)
    interp_lo: Tensor  # [K]
    interp_hi: Tensor  # [K]
    interp_w: Tensor  # [K]


def _spreading_coefficients(dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``vf(dz, X) = a(dz) + b(dz) X`` for ``-3 <= dz < 8`` (model 1 spreading function)."""
    a = np.where(dz < -1, 17.0 * dz + 11.0, np.where(dz < 0, 6.0 * dz, -17.0 * dz))
    b = np.where(dz < -1, -0.4, np.where(dz < 0, 0.4 * dz, np.where(dz < 1, 0.0, 0.15 * (dz - 1))))
    return a, b


@functools.lru_cache(maxsize=32)
def _plan(sample_rate_hz: int, n_fft: int, bark_step: float, device: str) -> _Plan:
    eps = 1e-9
    freqs = frequencies_hz(sample_rate_hz, n_fft).double()
    f_np = freqs.numpy()
    k_bins = freqs.numel()
    bin_hz = sample_rate_hz / n_fft
    ath = absolute_threshold_db(freqs).numpy()
    z = bark(freqs).numpy()

    # Tonal neighbourhoods: j_max per bin, grouped into runs of equal j_max.
    jmax = np.zeros(k_bins, dtype=np.int64)
    lower_hz = 0.0
    for upper_ref, j_ref in _TONAL_NEIGHBOURHOOD:
        upper_hz = upper_ref * _TONAL_REF_BIN_HZ
        j = max(2, round(j_ref * _TONAL_REF_BIN_HZ / bin_hz))
        jmax[(f_np >= lower_hz) & (f_np < upper_hz)] = j
        lower_hz = upper_hz
    regions = []
    k = 2
    while k < k_bins - 1:
        end = k
        while end < k_bins - 1 and jmax[end] == jmax[k]:
            end += 1
        regions.append((k, end, int(jmax[k])))
        k = end

    # Critical bands (DC bin excluded) and their non-tonal masker positions.
    band_matrix = critical_band_matrix(sample_rate_hz, n_fft).double().numpy()
    n_bands = band_matrix.shape[1]
    geo_hz = np.empty(n_bands)
    for b in range(n_bands):
        fb = f_np[band_matrix[:, b] > 0]
        geo_hz[b] = math.sqrt(fb[0] * fb[-1])
    band_ath = absolute_threshold_db(torch.from_numpy(geo_hz)).numpy()

    # Bark grid.
    step = float(bark_step)
    n_cells = round(float(z[-1]) / step) + 1
    z_grid = np.arange(n_cells) * step
    cell_of_bin = np.clip(np.round(z / step).astype(np.int64), 0, n_cells - 1)
    band_cell = np.clip(np.round(bark(torch.from_numpy(geo_hz)).numpy() / step), 0, n_cells - 1)
    band_to_cell = np.zeros((n_bands, n_cells))
    band_to_cell[np.arange(n_bands), band_cell.astype(np.int64)] = 1.0
    decimation_cells = math.floor((0.5 - eps) / step)
    av = np.stack([-6.025 - 0.275 * z_grid, -2.025 - 0.175 * z_grid])

    # Spreading offsets s (maskee cell - masker cell), dz = s * step in [-3, 8).
    s_all = np.arange(math.ceil(-3.0 / step - eps), math.ceil(8.0 / step - eps))
    a_s, b_s = _spreading_coefficients(s_all * step)
    exponents = 1.0 + b_s
    steps = np.diff(exponents, prepend=exponents[0])
    offsets = tuple(
        (int(si), float(10.0 ** (ai / 10.0)), round(float(di), 9))
        for si, ai, di in zip(s_all, a_s, steps, strict=True)
    )

    pos = z / step
    lo = np.clip(np.floor(pos).astype(np.int64), 0, n_cells - 1)
    hi = np.minimum(lo + 1, n_cells - 1)
    w = np.clip(pos - lo, 0.0, 1.0)

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

    return _Plan(
        num_bins=k_bins,
        ath_db=t(ath),
        ath_pow=t(np.power(10.0, ath / 10.0)),
        regions=tuple(regions),
        max_j=int(jmax.max()),
        band_matrix=t(band_matrix),
        band_ath_pow=t(np.power(10.0, band_ath / 10.0)),
        band_to_cell=t(band_to_cell),
        cell_of_bin=t(cell_of_bin, torch.int64),
        num_cells=n_cells,
        decimation_cells=decimation_cells,
        av_pow=t(np.power(10.0, av / 10.0)[:, None, :]),
        first_exponent=float(exponents[0]),
        offsets=offsets,
        interp_lo=t(lo, torch.int64),
        interp_hi=t(hi, torch.int64),
        interp_w=t(w),
    )


def _sparse_table(x: Tensor, levels: int, op) -> list[Tensor]:
    """``table[p][:, i] = op`` over ``x[:, i : i + 2**p]`` for ``p <= levels`` (range queries)."""
    table = [x]
    for p in range(1, levels + 1):
        prev, h = table[-1], 1 << (p - 1)
        table.append(op(prev[:, :-h], prev[:, h:]))
    return table


def _range(table: list[Tensor], op, first: int, length: int, count: int) -> Tensor:
    """``op`` over ``x[:, i : i + length]`` for ``i`` in ``first .. first + count - 1``."""
    p = math.floor(math.log2(length))
    m, w = table[p], 1 << p
    return op(m[:, first : first + count], m[:, first + length - w : first + length - w + count])


def _tonal_maskers(x_db: Tensor, p: Tensor, plan: _Plan) -> tuple[Tensor, Tensor]:
    """Tonal flags ``[n, K]`` (before decimation) and tonal masker power (after the ATH test).

    A bin is tonal if it is a local maximum and exceeds every bin at distance 2..j_max by
    >= 7 dB; the neighbourhood maxima come from a sparse table (O(log j_max) passes).
    """
    jm = plan.max_j
    padded = torch.nn.functional.pad(x_db, (jm, jm), value=-math.inf)  # bin k at k + jm
    table = _sparse_table(padded, math.floor(math.log2(max(jm - 1, 1))), torch.maximum)
    flags = torch.zeros_like(x_db, dtype=torch.bool)
    mid = x_db[:, 1:-1]
    flags[:, 1:-1] = (mid > x_db[:, :-2]) & (mid >= x_db[:, 2:])
    flags[:, :2] = False
    for k0, k1, j in plan.regions:
        count = k1 - k0
        right = _range(table, torch.maximum, k0 + 2 + jm, j - 1, count)
        left = _range(table, torch.maximum, k0 - j + jm, j - 1, count)
        flags[:, k0:k1] &= (x_db[:, k0:k1] - 7.0) >= torch.maximum(left, right)
    power = torch.zeros_like(p)
    power[:, 1:-1] = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    keep = flags & (power >= plan.ath_pow)
    return flags, torch.where(keep, power, torch.zeros((), dtype=p.dtype))


def _non_tonal_maskers(p: Tensor, flags: Tensor, plan: _Plan) -> Tensor:
    """Non-tonal masker power per grid cell ``[n, G]``: band power outside tonal neighbourhoods.

    Bands whose masker lies below the threshold in quiet contribute nothing.
    """
    k_bins = p.shape[1]
    excluded = torch.zeros_like(flags)
    for k0, k1, j in plan.regions:  # dilate the tonal flags of each region by its j_max
        padded = torch.nn.functional.pad(flags[:, k0:k1], (2 * j, 2 * j))
        table = _sparse_table(padded, math.floor(math.log2(2 * j + 1)), torch.logical_or)
        lo, hi = max(0, k0 - j), min(k_bins, k1 + j)
        # excluded[k] |= any(flags[k - j .. k + j] within the region), for k in [lo, hi)
        excluded[:, lo:hi] |= _range(table, torch.logical_or, lo - k0 + j, 2 * j + 1, hi - lo)
    residual = torch.where(excluded, torch.zeros((), dtype=p.dtype), p)
    bands = residual @ plan.band_matrix
    bands = torch.where(bands >= plan.band_ath_pow, bands, torch.zeros((), dtype=p.dtype))
    return bands @ plan.band_to_cell


def _to_grid(tonal_power: Tensor, plan: _Plan) -> Tensor:
    """Tonal masker power per Bark cell ``[n, G]`` (strongest per cell, 0.5-Bark decimation)."""
    n = tonal_power.shape[0]
    grid = torch.zeros(n, plan.num_cells, dtype=tonal_power.dtype, device=tonal_power.device)
    grid.scatter_reduce_(
        1, plan.cell_of_bin.expand(n, -1), tonal_power, reduce="amax", include_self=True
    )
    keep = torch.ones_like(grid, dtype=torch.bool)
    for s in range(1, plan.decimation_cells + 1):
        keep[:, s:] &= grid[:, s:] >= grid[:, :-s]
        keep[:, :-s] &= grid[:, :-s] >= grid[:, s:]
    return torch.where(keep, grid, torch.zeros((), dtype=grid.dtype))


def _spread(maskers: Tensor, plan: _Plan) -> Tensor:
    """Power sum of all individual masking thresholds per grid cell, ``[n, G]`` (SPL power).

    ``maskers``: ``[2, n, G]`` tonal / non-tonal masker power per cell (0 = none). Each
    masker of level X contributes ``10^((X + av + a(dz) + b(dz) X) / 10)
    = P^(1 + b(dz)) 10^(av/10) 10^(a(dz)/10)`` at ``dz = s * bark_step``; along the offsets
    ``1 + b`` grows in equal steps, so ``P^(1+b)`` is updated by one multiplication per
    offset (no exp per masker and offset).
    """
    g = plan.num_cells
    power = maskers.clamp_max(10.0 ** (_MAX_MASKER_DB / 10.0))
    term = power.pow(plan.first_exponent) * plan.av_pow
    factors: dict[float, Tensor] = {}
    out = torch.zeros_like(term)
    for s, kappa, exponent_step in plan.offsets:
        if exponent_step:
            if exponent_step not in factors:
                factors[exponent_step] = power.pow(exponent_step)
            term.mul_(factors[exponent_step])
        if s >= 0:
            out[..., s:].add_(term[..., : g - s], alpha=kappa)
        else:
            out[..., : g + s].add_(term[..., -s:], alpha=kappa)
    return out.sum(0)


def _simultaneous(power: Tensor, plan: _Plan) -> tuple[Tensor, Tensor]:
    """``(psd_db, threshold_db)``, both ``[n, K]``, from relative power ``[n, K]``."""
    x_db = FULL_SCALE_SPL_DB + 10.0 * torch.log10(power + POWER_FLOOR)
    p = power * (10.0 ** (FULL_SCALE_SPL_DB / 10.0))
    flags, tonal_power = _tonal_maskers(x_db, p, plan)
    maskers = torch.stack([_to_grid(tonal_power, plan), _non_tonal_maskers(p, flags, plan)])
    spread_db = 10.0 * torch.log10(_spread(maskers, plan).clamp_min(1e-30))
    at_bins = torch.lerp(
        spread_db.index_select(1, plan.interp_lo),
        spread_db.index_select(1, plan.interp_hi),
        plan.interp_w,
    )
    # ATH (+) spread as ATH + 10 log10(1 + 10^((S - ATH)/10)): exactly the ATH where no masker.
    excess = torch.nn.functional.softplus(_LN10_OVER_10 * (at_bins - plan.ath_db)) / _LN10_OVER_10
    return x_db, plan.ath_db + excess


def _post_slopes_db_per_frame(
    freqs_hz: Tensor, hop_ms: float, tau_100_ms: float, tau_min_ms: float
) -> Tensor:
    f = freqs_hz.clamp_min(100.0)
    tau_ms = tau_min_ms + (100.0 / f) * (tau_100_ms - tau_min_ms)
    return (10.0 * math.log10(math.e)) * hop_ms / tau_ms


def _decaying_max(t: Tensor, slope: Tensor | float, frames: int, backwards: bool) -> Tensor:
    """``max_{0<=k<=frames} t[..., f -+ k, :] - k * slope`` along dim -2, by doubling steps."""
    y = t.clone()
    covered = 0
    while covered < frames:
        d = min(covered + 1, frames - covered)
        if d >= y.shape[-2]:
            break
        if backwards:
            torch.maximum(y[..., :-d, :], y[..., d:, :] - slope * d, out=y[..., :-d, :])
        else:
            torch.maximum(y[..., d:, :], y[..., :-d, :] - slope * d, out=y[..., d:, :])
        covered += d
    return y


def _temporal_frames(hop_s: float, post_ms: float, pre_ms: float) -> tuple[int, int]:
    hop_ms = 1000.0 * hop_s
    return math.floor(post_ms / hop_ms + 1e-9), math.floor(pre_ms / hop_ms + 1e-9)


def temporal_masking(
    threshold_db: Tensor,
    frequencies_hz: Tensor,
    hop_s: float,
    *,
    post_ms: float = POST_MASKING_MS,
    pre_ms: float = PRE_MASKING_MS,
    post_tau_100hz_ms: float = POST_TAU_100HZ_MS,
    post_tau_min_ms: float = POST_TAU_MIN_MS,
    pre_db_per_ms: float = PRE_MASKING_DB_PER_MS,
) -> Tensor:
    """Spread a per-frame threshold ``[..., frames, bins]`` (dB) over time; same shape out.

    ``T'(t, k) = max( max_{0<=i<=post} T(t-i, k) - i hop 4.343/tau(f_k),
    max_{0<=i<=pre} T(t+i, k) - i hop pre_db_per_ms )`` with ``post``/``pre`` the whole
    frames within ``post_ms``/``pre_ms``. ``tau(f) = tau_min + (100 Hz/f)(tau_100 - tau_min)``
    (PEAQ, ITU-R BS.1387-1; f clamped to >= 100 Hz): a loud frame's threshold decays by
    ~0.43 dB/ms at 1 kHz and ~0.54 dB/ms at high frequencies; pre-masking is short and steep
    (3 dB/ms, <= 20 ms). Result >= input everywhere. Vectorized: O(log frames) passes.
    """
    hop_ms = 1000.0 * hop_s
    post, pre = _temporal_frames(hop_s, post_ms, pre_ms)
    slopes = _post_slopes_db_per_frame(
        frequencies_hz.to(threshold_db.device, threshold_db.dtype),
        hop_ms,
        post_tau_100hz_ms,
        post_tau_min_ms,
    )
    out = _decaying_max(threshold_db, slopes, post, backwards=False)
    if pre > 0:
        out = torch.maximum(out, _decaying_max(threshold_db, pre_db_per_ms * hop_ms, pre, True))
    return out


def masking_threshold(
    x: Tensor | np.ndarray | AudioClip,
    sample_rate_hz: int | None = None,
    *,
    temporal: bool = True,
    n_fft: int | None = None,
    hop_length: int | None = None,
    bark_step: float = DEFAULT_BARK_STEP,
    chunk_frames: int = 1024,
) -> MaskingResult:
    """Global masking threshold of ``x`` per frame and bin (MPEG-1 model 1 + temporal masking).

    ``x``: audio ``[..., samples]`` in [-1, 1] (tensor or array; any leading dims such as
    ``[channels]`` or ``[batch, channels]``; each row analysed on its own) or an
    :class:`AudioClip`; ``sample_rate_hz``: 8000-192000 (taken from the clip if omitted).
    ``n_fft`` / ``hop_length``: see :mod:`.calibration` (default: <= 50 Hz bins, 50 %
    overlap: 1024 / 512 at 44.1 kHz). ``bark_step``: spacing of the masker grid (0.05-0.5).
    ``temporal``: add pre-/post-masking (:func:`temporal_masking`).

    Returns a :class:`MaskingResult` with ``threshold_db`` ``[..., frames, bins]`` where
    ``frames = 1 + samples // hop_length`` (centred frames; any input with >= 1 sample has
    >= 1 frame). Silence gives exactly the threshold in quiet. Not differentiable (computed
    under ``no_grad``); the input is never modified. Raises :class:`InputError` for an
    unsupported rate, non-float data, non-finite samples or zero samples.
    """
    x, sr = as_signal(x, sample_rate_hz)
    sr, n, hop = resolve_framing(sr, n_fft, hop_length)
    if not 0.05 <= float(bark_step) <= 0.5:
        raise InputError(f"bark_step={bark_step} must be between 0.05 and 0.5 Bark")
    if chunk_frames < 1:
        raise InputError(f"chunk_frames={chunk_frames} must be >= 1")
    with torch.no_grad(), single_thread():
        if not bool(torch.isfinite(x).all()):
            raise InputError("audio contains NaN or infinite samples; clean or re-decode it")
        lead = x.shape[:-1]
        rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
        plan = _plan(sr, n, float(bark_step), str(rows.device))
        window = hann_window(n, rows.device)
        frames = padded_frames(rows, n, hop)  # [R, F, n_fft] view
        n_frames = frame_count(x.shape[-1], hop)
        k_bins = plan.num_bins
        threshold = torch.empty(rows.shape[0], n_frames, k_bins, device=rows.device)
        psd = torch.empty_like(threshold)
        freqs = frequencies_hz(sr, n).to(rows.device)
        post, pre = (
            _temporal_frames(hop / sr, POST_MASKING_MS, PRE_MASKING_MS) if temporal else (0, 0)
        )
        for f0 in range(0, n_frames, chunk_frames):
            f1 = min(n_frames, f0 + chunk_frames)
            h0, h1 = max(0, f0 - post), min(n_frames, f1 + pre)
            power = frames_power(frames[:, h0:h1], window)
            x_db, thr = _simultaneous(power.reshape(-1, k_bins), plan)
            thr = thr.reshape(rows.shape[0], h1 - h0, k_bins)
            if temporal:
                thr = temporal_masking(thr, freqs, hop / sr)
            threshold[:, f0:f1] = thr[:, f0 - h0 : f1 - h0]
            psd[:, f0:f1] = x_db.reshape(rows.shape[0], h1 - h0, k_bins)[:, f0 - h0 : f1 - h0]
    return MaskingResult(
        threshold_db=threshold.reshape(*lead, n_frames, k_bins),
        psd_db=psd.reshape(*lead, n_frames, k_bins),
        ath_db=plan.ath_db.clone(),
        frequencies_hz=freqs,
        frame_times_s=torch.arange(n_frames, dtype=torch.float64, device=rows.device) * (hop / sr),
        sample_rate_hz=sr,
        n_fft=n,
        hop_length=hop,
        temporal=bool(temporal),
    )
