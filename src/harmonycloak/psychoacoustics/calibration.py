"""Digital-to-SPL calibration and the framed, calibrated power spectrum.

Convention: **a full-scale sine (amplitude 1.0) reads 96 dB SPL** in its peak bin (96 dB
~ the dynamic range of 16-bit PCM). This is the common convention of the psychoacoustic
model literature (Painter & Spanias, "Perceptual coding of digital audio", Proc. IEEE
2000) and of the psychoacoustic adversarial-audio work that builds on it (e.g. Qin et
al., "Imperceptible, robust, and targeted adversarial examples for automatic speech
recognition", ICML 2019). It is *not* the exact normalization of the ISO 11172-3 (annex D)
reference encoder "dist10": with its window and FFT scaling, a full-scale sine reads
about 88.5 dB in its peak bin and about 90.3 dB as a three-bin tonal masker, where ours
reads 96 and 97.8 dB. The threshold in quiet is an absolute curve in both, so here
maskers sit ~6-8 dB higher relative to it than in dist10: quiet maskers rise above the
threshold in quiet (and mask) a little sooner, i.e. slightly more masking at low levels.
Where masking is far above the threshold in quiet, the offset acts only through the
level-dependent spreading function of :mod:`.masking` (per dB of level the upward slope
flattens by 0.15 dB/Bark and the downward one steepens by 0.4 dB/Bark: here ~1 dB/Bark
flatter upward and ~3 dB/Bark steeper downward than dist10 for the same music).

Concretely, with a periodic Hann window ``w`` of ``n_fft`` samples,

    P(k) = |sum_n w(n) x(n) exp(-2j pi k n / n_fft)|^2 / (sum_n w(n) / 2)^2      (relative power)
    psd_db(k) = 96 + 10 log10(P(k) + 1e-20)                                      (dB SPL)

so a sine of amplitude ``A`` centred on a bin reads ``96 + 20 log10(A)`` in that bin
(``amplitude_to_spl``). What "the level of a tone" means here:

* **peak bin**: the bin with the largest value; exact for a bin-centred sine and up to
  1.42 dB low half-way between bins (Hann scalloping loss);
* **summed level**: the power of the bins within +-2 of the peak, summed and divided by the
  Hann window's equivalent noise bandwidth (``HANN_ENBW_BINS`` = 1.5 bins); exact to
  ~0.01 dB wherever the sine sits (the main lobe holds >99.9 % of the power).

A digital signal has no absolute loudness; the 96 dB convention assumes playback where
full scale is loud (~96 dB SPL). Powers are floored at 1e-20 (-200 dB re full scale,
i.e. -104 dB SPL) so logs never give -inf and gradients stay finite.

Framing: frames are *centred* (frame ``t`` is centred on sample ``t * hop_length``), the
signal is zero-padded by ``n_fft // 2`` on both sides, so ``1 + samples // hop_length``
frames exist for any input of at least one sample. Default FFT size per rate
(``default_n_fft``): the smallest power of two whose bin width is at most 50 Hz, i.e.
1024 at 44.1/48 kHz (43/47 Hz, MPEG layer II's 1024-point FFT), 512 at 16/22.05 kHz,
256 at 8 kHz, 2048 at 88.2/96 kHz, 4096 at 176.4/192 kHz. Default hop: ``n_fft // 2``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError

# The supported rates are defined once, in io.files (a light module: importing it does not
# load the decoders) and re-exported here.
from harmonycloak.io.files import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ

__all__ = [
    "FULL_SCALE_SPL_DB",
    "HANN_ENBW_BINS",
    "MAX_SAMPLE_RATE_HZ",
    "MIN_SAMPLE_RATE_HZ",
    "POWER_FLOOR",
    "amplitude_to_spl",
    "default_n_fft",
    "frame_count",
    "frequencies_hz",
    "power_spectrum",
    "power_to_spl",
    "psd_db",
    "spl_to_amplitude",
    "spl_to_power",
]

FULL_SCALE_SPL_DB = 96.0
"""dB SPL of a full-scale sine (amplitude 1.0) in its peak bin."""

POWER_FLOOR = 1e-20
"""Relative power added before every log: -200 dB re full scale (-104 dB SPL)."""

HANN_ENBW_BINS = 1.5
"""Equivalent noise bandwidth of the Hann window in bins (sum w^2 * n / (sum w)^2)."""

_MAX_BIN_WIDTH_HZ = 50.0


def as_float_tensor(value: Tensor | float) -> Tensor:
    """``value`` as a floating tensor: float tensors as they are, anything else in float32."""
    t = torch.as_tensor(value)
    return t if t.is_floating_point() else t.to(torch.float32)


def amplitude_to_spl(amplitude: Tensor | float) -> Tensor:
    """dB SPL of a sine of peak ``amplitude`` (full scale 1.0 -> 96 dB); 0 gives -104 dB.

    Works elementwise on any shape; differentiable.
    """
    a = as_float_tensor(amplitude)
    return FULL_SCALE_SPL_DB + 10.0 * torch.log10(a * a + POWER_FLOOR)


def spl_to_amplitude(level_db: Tensor | float) -> Tensor:
    """Peak amplitude of a sine that reads ``level_db`` dB SPL; inverse of ``amplitude_to_spl``."""
    db = as_float_tensor(level_db)
    return torch.pow(10.0, (db - FULL_SCALE_SPL_DB) / 20.0)


def power_to_spl(power: Tensor | float) -> Tensor:
    """dB SPL of a relative power (1.0 = a full-scale sine's peak bin), floored at -104 dB."""
    p = as_float_tensor(power)
    return FULL_SCALE_SPL_DB + 10.0 * torch.log10(p + POWER_FLOOR)


def spl_to_power(level_db: Tensor | float) -> Tensor:
    """Relative power of a level in dB SPL; inverse of ``power_to_spl`` (above the floor)."""
    db = as_float_tensor(level_db)
    return torch.pow(10.0, (db - FULL_SCALE_SPL_DB) / 10.0)


def check_sample_rate(sample_rate_hz: int) -> int:
    """Return ``sample_rate_hz`` as int, or raise ``InputError`` outside 8-192 kHz."""
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer)):
        if isinstance(sample_rate_hz, float) and float(sample_rate_hz).is_integer():
            sample_rate_hz = int(sample_rate_hz)
        else:
            raise InputError(
                f"sample rate {sample_rate_hz!r} is not a whole number of Hz; "
                "pass an int like 44100"
            )
    sr = int(sample_rate_hz)
    if not MIN_SAMPLE_RATE_HZ <= sr <= MAX_SAMPLE_RATE_HZ:
        raise InputError(
            f"sample rate {sr} Hz is outside the supported {MIN_SAMPLE_RATE_HZ}-"
            f"{MAX_SAMPLE_RATE_HZ} Hz; resample the audio first"
        )
    return sr


def default_n_fft(sample_rate_hz: int) -> int:
    """Smallest power of two whose bin width ``sample_rate_hz / n_fft`` is <= 50 Hz."""
    sr = check_sample_rate(sample_rate_hz)
    return 1 << math.ceil(math.log2(sr / _MAX_BIN_WIDTH_HZ))


def resolve_framing(
    sample_rate_hz: int, n_fft: int | None, hop_length: int | None
) -> tuple[int, int, int]:
    """Validate and fill in ``(sample_rate_hz, n_fft, hop_length)`` with the defaults.

    ``n_fft`` must be even with a bin width below 100 Hz (so every critical band, the
    narrowest being 100 Hz wide, holds at least one bin); ``1 <= hop_length <= n_fft``.
    """
    sr = check_sample_rate(sample_rate_hz)
    n = default_n_fft(sr) if n_fft is None else int(n_fft)
    if n < 16 or n % 2 or sr / n >= 100.0:
        raise InputError(
            f"n_fft={n_fft} at {sr} Hz is not usable: it must be even, >= 16 and give bins "
            f"narrower than 100 Hz (n_fft > {sr // 100}); leave it unset for the default "
            f"{default_n_fft(sr)}"
        )
    hop = n // 2 if hop_length is None else int(hop_length)
    if not 1 <= hop <= n:
        raise InputError(f"hop_length={hop_length} must be between 1 and n_fft={n}")
    return sr, n, hop


def as_signal(x: Tensor | np.ndarray | AudioClip, sample_rate_hz: int | None) -> tuple[Tensor, int]:
    """Turn ``x`` (tensor ``[..., samples]``, array, or AudioClip) into a float tensor.

    Returns ``(tensor, sample_rate_hz)``; never copies or modifies a float tensor input.
    Raises ``InputError`` for a missing rate, a non-float tensor or zero samples.
    """
    if isinstance(x, AudioClip):
        if sample_rate_hz is None:
            sample_rate_hz = x.sample_rate_hz
        elif int(sample_rate_hz) != x.sample_rate_hz:
            raise InputError(
                f"sample_rate_hz={sample_rate_hz} contradicts the clip's {x.sample_rate_hz} Hz; "
                "leave sample_rate_hz unset for clips"
            )
        x = torch.from_numpy(x.samples)
    elif isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"expected a torch tensor [..., samples], got {type(x).__name__}")
    if sample_rate_hz is None:
        raise InputError("sample_rate_hz is required for tensor input")
    sr = check_sample_rate(sample_rate_hz)
    if not x.is_floating_point():
        raise InputError(f"audio must be floating point in [-1, 1], got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[-1] < 1:
        raise InputError(
            f"audio of shape {tuple(x.shape)} has no samples; pass at least one sample per channel"
        )
    return x, sr


def frame_count(num_samples: int, hop_length: int) -> int:
    """Number of centred frames for ``num_samples`` samples: ``1 + num_samples // hop_length``."""
    return 1 + int(num_samples) // int(hop_length)


def frequencies_hz(sample_rate_hz: int, n_fft: int) -> Tensor:
    """Centre frequency of each of the ``n_fft // 2 + 1`` bins, float32 ``[bins]`` in Hz."""
    return torch.arange(n_fft // 2 + 1, dtype=torch.float32) * (float(sample_rate_hz) / n_fft)


_WINDOWS: dict[tuple[int, str, torch.dtype], Tensor] = {}


def hann_window(n_fft: int, device: torch.device | str = "cpu", dtype=torch.float32) -> Tensor:
    """Cached periodic Hann window scaled so a bin-centred unit sine gives power 1.

    I.e. ``hann / (sum(hann) / 2)``: multiply frames by it, take ``|rfft|^2`` and the result
    is the relative power ``P(k)`` of the module docstring.
    """
    key = (n_fft, str(device), dtype)
    win = _WINDOWS.get(key)
    if win is None:
        w = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        win = (w / (w.sum() / 2.0)).to(device=device, dtype=dtype)
        _WINDOWS[key] = win
    return win


def padded_frames(x: Tensor, n_fft: int, hop_length: int) -> Tensor:
    """Centred frames ``[..., frames, n_fft]`` of ``x`` zero-padded by ``n_fft // 2`` each side.

    The result is a strided view of one padded copy (no per-frame copies).
    """
    half = n_fft // 2
    padded = torch.nn.functional.pad(x, (half, half))
    return padded.unfold(-1, n_fft, hop_length)


def frames_power(frames: Tensor, window: Tensor) -> Tensor:
    """Relative power ``[..., frames, bins]`` of frames ``[..., frames, n_fft]``; differentiable."""
    spec = torch.fft.rfft(frames * window, dim=-1)
    return spec.real.square() + spec.imag.square()


def power_spectrum(
    x: Tensor | np.ndarray | AudioClip,
    sample_rate_hz: int | None = None,
    *,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> Tensor:
    """Relative power per frame and bin, ``[..., frames, n_fft // 2 + 1]``, differentiable.

    ``x`` is ``[..., samples]`` (any leading dims; or an AudioClip, whose rate is used).
    1.0 = the peak bin of a bin-centred full-scale sine (see the module docstring for
    framing and calibration). Float64 for float64 input, float32 otherwise.
    """
    x, sr = as_signal(x, sample_rate_hz)
    sr, n, hop = resolve_framing(sr, n_fft, hop_length)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    return frames_power(padded_frames(x, n, hop), hann_window(n, x.device, dtype))


def psd_db(
    x: Tensor | np.ndarray | AudioClip,
    sample_rate_hz: int | None = None,
    *,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> Tensor:
    """Calibrated power spectral density in dB SPL, ``[..., frames, n_fft // 2 + 1]``.

    ``96 + 10 log10(P + 1e-20)`` with ``P`` from :func:`power_spectrum`: a full-scale
    bin-centred sine reads 96 dB in its peak bin; silence reads -104 dB. Differentiable in
    ``x`` with finite gradients everywhere (also at silence).
    """
    return FULL_SCALE_SPL_DB + 10.0 * torch.log10(
        power_spectrum(x, sample_rate_hz, n_fft=n_fft, hop_length=hop_length) + POWER_FLOOR
    )
