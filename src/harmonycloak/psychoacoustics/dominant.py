"""Dominant tone per short window and the bounds of the paper's eq. 10-11.

HarmonyCloak (section 4.3) cuts the music into non-overlapping windows of ``l_w`` = 10 ms,
finds the dominant frequency ``nu_t`` of each window by STFT and bounds the noise at that
frequency by ``T_H(nu_t) <= delta_t <= M_t`` (eq. 11): the threshold in quiet below, the
music's own level at ``nu_t`` above. Eq. 10 prints ``M_t = -20 log(M(nu_t) / 20^-6)``; it
means the level in dB SPL, ``20 log10(p / 20 uPa)``. A digital file carries no pressure,
so here the level is the calibrated SPL of :mod:`.calibration` (full-scale sine = 96 dB):
the level of the strongest spectral peak in the window.

Time/frequency trade-off: the windows' *positions* are ``window_ms`` = 10 ms apart (one
result per window), but the frequency of each is measured on a longer Hann window
centred on it, ``ANALYSIS_WINDOW_MS`` ~46.4 ms (2048 samples at 44.1 kHz; the same
duration at every rate: 744 samples at 16 kHz, 2230 at 48 kHz, 8918 at 192 kHz; the
``window_ms`` window itself if that is longer). 10 ms alone (441 samples at 44.1 kHz,
100 Hz resolution) cannot tell A4 from B4, and a Hann window needs about two periods of
a tone to keep it apart from its own negative-frequency image: a 23 ms window read E1
(41.2 Hz) as ~52 Hz (up to 7.7 semitones off) and up to 4 dB low. 46 ms holds two
periods of 43 Hz. Measured on sines (any phase, 16-192 kHz alike): E1 (41.2 Hz) within
0.1 semitone and 0.05 dB, 55 Hz and up within 0.05 semitone; below ~38 Hz accuracy
falls off again (D1 = 36.7 Hz: 0.4 semitone; B0 = 30.9 Hz, a 5-string bass's lowest
note: up to 2 semitones, 0.6 dB low). The price is time resolution: each result
describes the ~46 ms of music around its 10 ms window, so a note change shows up in the
windows within ~23 ms of it. ``n_fft`` overrides the analysis length in samples.

Each analysis frame is zero-padded ``zero_pad`` times (default 2; the FFT size is the
next 2-3-5-smooth length: ~10.7 Hz bins at every rate) and the peak refined by
parabolic interpolation of the dB spectrum (typically within a fraction of a Hz; the
level is read at the vertex, which also removes most of the scalloping loss). Each
analysis frame's window-weighted mean (DC offset) is removed first, and frequencies
below ``min_hz`` (20 Hz: rumble) and above ``max_hz`` (20 kHz) are ignored. In inactive
windows (silence) ``frequency_hz`` and ``level_db`` describe the noise floor only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
import torch
from torch import Tensor

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError

from ._threads import single_thread
from .calibration import FULL_SCALE_SPL_DB, POWER_FLOOR, as_signal, hann_window
from .thresholds import absolute_threshold_db

__all__ = [
    "ANALYSIS_WINDOW_MS",
    "DEFAULT_WINDOW_MS",
    "DominantTones",
    "analysis_samples",
    "dominant_tones",
]

DEFAULT_WINDOW_MS = 10.0
"""The paper's window length l_w (the spacing of the results)."""

ANALYSIS_WINDOW_MS = 1000.0 * 2048 / 44100
"""Default duration of the Hann window each window's frequency is measured on (~46.4 ms:
2048 samples at 44.1 kHz, two periods of 43 Hz)."""

# Spectrum values (complex) computed at once, ~32 MB: bounds memory at any rate and length
# (one pass over a 3-minute stereo track at 192 kHz would need gigabytes, and is slower)
# while keeping the number of (multi-threaded) steps small.
_CHUNK_BINS = 1 << 22


def analysis_samples(sample_rate_hz: int, window_ms: float = DEFAULT_WINDOW_MS) -> int:
    """Default analysis window length in samples: the even length of at least
    :data:`ANALYSIS_WINDOW_MS` (or of the ``window_ms`` window itself, if longer).

    2048 at 44.1 kHz, 744 at 16 kHz, 2230 at 48 kHz, 8918 at 192 kHz.
    """
    # integer arithmetic: exactly 2048 at 44.1 kHz (and 1024 / 4096 / 8192 at 22.05 / 88.2 /
    # 176.4 kHz), never one more from float rounding
    n = 2 * (-(-int(sample_rate_hz) * 1024 // 44100))
    hop = max(1, round(sample_rate_hz * window_ms / 1000.0))
    return max(n, hop + hop % 2)


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
    last window may be partial. Its tone is measured on the ``analysis_samples`` Hann
    window centred on it (see the module docstring), with an FFT of ``fft_size`` points.
    """

    frequency_hz: Tensor
    level_db: Tensor
    lower_db: Tensor
    upper_db: Tensor
    active: Tensor
    window_samples: int
    sample_rate_hz: int
    analysis_samples: int
    fft_size: int

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate_hz

    @property
    def analysis_s(self) -> float:
        """Duration of the analysis window each window's tone is measured on."""
        return self.analysis_samples / self.sample_rate_hz

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
    ``n_fft``: analysis window length in samples (default :func:`analysis_samples`:
    ~46.4 ms, at least one window long); ``zero_pad``: the FFT size is the smallest
    2-3-5-smooth length ``>= zero_pad * n_fft``; ``interpolate``: parabolic peak
    interpolation (else bin centre and bin level).
    ``windows = ceil(samples / window_samples)``. Computed without gradients; the input is
    left unchanged. Raises :class:`InputError` for bad parameters or empty audio.
    """
    x, sr = as_signal(x, sample_rate_hz)
    if not window_ms > 0:
        raise InputError(f"window_ms={window_ms} must be positive (the paper uses 10 ms)")
    hop = max(1, round(sr * window_ms / 1000.0))
    n = int(n_fft) if n_fft is not None else analysis_samples(sr, window_ms)
    if n < hop or n < 16:
        raise InputError(
            f"n_fft={n_fft} must be >= 16 and cover a window ({hop} samples); "
            f"leave it unset for the default {analysis_samples(sr, window_ms)}"
        )
    if int(zero_pad) < 1:
        raise InputError(f"zero_pad={zero_pad} must be >= 1")
    size = scipy.fft.next_fast_len(n * int(zero_pad), real=True)
    nyquist = sr / 2.0
    hi_hz = min(float(max_hz), nyquist)
    if not 0.0 <= min_hz < hi_hz:
        raise InputError(f"min_hz={min_hz} must be >= 0 and below max_hz={hi_hz}")
    bin_hz = sr / size
    k_lo = max(1, math.ceil(min_hz / bin_hz))
    k_hi = max(k_lo, min(size // 2 - 1, math.floor(hi_hz / bin_hz)))

    with torch.no_grad(), single_thread():
        lead = x.shape[:-1]
        samples = x.shape[-1]
        rows = x.detach().reshape(-1, samples).to(torch.float32)
        windows = -(-samples // hop)
        left = n // 2 - hop // 2
        right = max(0, (windows - 1) * hop + n - (samples + left))
        padded = torch.nn.functional.pad(rows, (left, right))
        frames = padded.unfold(-1, n, hop)[:, :windows]  # [R, W, n] view, centred on each window
        window = hann_window(n, rows.device)
        weight = window.sum()
        step = min(windows, max(1, _CHUNK_BINS // (rows.shape[0] * (size // 2 + 1))))
        # One zero-padded buffer for all chunks: only its first n samples are ever written.
        buffer = rows.new_zeros(rows.shape[0], step, size)
        around = torch.arange(-1, 2, device=rows.device)
        peaks, nears = [], []
        for start in range(0, windows, step):
            chunk = frames[:, start : start + step]
            count = chunk.shape[1]
            # Remove each frame's window-weighted mean: a DC offset is no note, and its
            # leakage would otherwise outshine quiet low notes.
            offset = (chunk @ window).unsqueeze(-1) / weight
            torch.mul(chunk - offset, window, out=buffer[:, :count, :n])
            spec = torch.fft.rfft(buffer[:, :count], dim=-1)
            # |X| over the search band and one bin either side; its argmax is the power's
            magnitude = spec[..., k_lo - 1 : k_hi + 2].abs()
            peak = magnitude[..., 1:-1].argmax(-1, keepdim=True) + 1
            peaks.append(peak.squeeze(-1))
            nears.append(magnitude.gather(-1, peak + around))  # [R, count, 3]: k-1, k, k+1
        peak = torch.cat(peaks, dim=-1)
        ym, y0, yp = (10.0 * torch.log10(torch.cat(nears, 1).square() + POWER_FLOOR)).unbind(-1)
        if interpolate:
            curvature = ym - 2.0 * y0 + yp
            ok = curvature < 0
            delta = torch.where(ok, 0.5 * (ym - yp) / torch.where(ok, curvature, -1.0), 0.0)
            delta = delta.clamp(-0.5, 0.5)
            level = y0 - 0.25 * (ym - yp) * delta
        else:
            level, delta = y0, torch.zeros_like(y0)
        freq = (peak.to(torch.float32) + (k_lo - 1) + delta) * bin_hz
        level = FULL_SCALE_SPL_DB + level
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
        analysis_samples=n,
        fft_size=size,
    )
