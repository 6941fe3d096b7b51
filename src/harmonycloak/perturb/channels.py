"""The publishing channel: what happens to a file between the artist and the scraper.

Protection must survive what happens after publishing (issue 10): gain changes, added
noise, resampling by a platform, low-pass filtering and, above all, lossy coding (the
paper's section 3.2 and 5.2.3: MP3). The engine optimizes the *expectation over
transformations* (EOT): every inner step draws one transformation and descends
``L_gen(channel(x + δ))``, so δ ends up where the channel keeps it.

Each transformation is a small object behind the
:class:`~harmonycloak.perturb.protocols.Channel` protocol:

* ``differentiable``: whether ``apply`` has the transformation's true gradient (the
  straight-through codec has the identity instead);
* ``sample(generator) -> dict``: draws the random parameters from the caller's
  ``torch.Generator`` (never the global RNG); the dict holds only ``int``, ``float`` and
  ``str`` values (and, for :class:`Expectation`, one nested dict), so it can go into a
  report as it is;
* ``apply(x, params) -> Tensor``: applies those parameters to ``x``, a float waveform
  ``[batch, channels, samples]`` at the ``sample_rate_hz`` given to the constructor;
  returns the same shape, dtype and device and never modifies ``x``. One draw applies to
  the whole batch (draw once per item and apply to slices for per-item parameters).

Drawing apart from applying (STYLE.md 7) makes a run reproducible and lets the engine
record, replay or average exactly the transformations it used. Big random tensors
(noise) are not drawn in ``sample``: it draws an integer ``seed`` and ``apply`` makes
the noise from a fresh generator seeded with it, on ``x``'s device, so the same params
give the same output on the same device (CPU and CUDA streams differ).

Differentiability (checked by ``tests/test_channels.py``):

=================================  ===============  =====================================
channel                            differentiable   gradient
=================================  ===============  =====================================
:class:`Identity`                  yes              identity
:class:`Gain`                      yes              the gain factor
:class:`AddedNoise`                yes              identity (the noise level is detached)
:class:`Resample`                  yes              through :func:`.dsp.resample`
:class:`Lowpass`                   yes              the zero-phase, real response
:class:`CodecProxy`                yes              STFT, dead-zone gain, band limit
:class:`StraightThroughCodec`      no               identity (BPDA; forward = real codec)
:class:`Expectation`               if all members   the drawn member's
=================================  ===============  =====================================

Calibration of :class:`CodecProxy` against LAME (through
:func:`harmonycloak.io.codecs.mp3_roundtrip`) is described in its docstring.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.fft
import torch
from torch import Tensor

from harmonycloak.errors import CodecError, InputError
from harmonycloak.io import codecs
from harmonycloak.perturb import dsp
from harmonycloak.perturb.protocols import Channel
from harmonycloak.psychoacoustics.calibration import (
    FULL_SCALE_SPL_DB,
    check_sample_rate,
    default_n_fft,
)
from harmonycloak.psychoacoustics.masking import masking_threshold

__all__ = [
    "AddedNoise",
    "CodecProxy",
    "Expectation",
    "Gain",
    "Identity",
    "Lowpass",
    "Resample",
    "StraightThroughCodec",
    "lowpass_fft",
    "mp3_cutoff_hz",
    "mp3_noise_to_mask_db",
]

_SEED_LIMIT = 2**62


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------


def _check_signal(x: Tensor, channel: str) -> None:
    """``x`` must be a floating tensor ``[batch, channels, samples]``."""
    if not isinstance(x, Tensor):
        raise InputError(f"{channel}: expected a torch tensor, got {type(x).__name__}")
    if x.ndim != 3 or not x.is_floating_point():
        raise InputError(
            f"{channel}: audio must be a float tensor [batch, channels, samples], got "
            f"shape {tuple(x.shape)} and dtype {x.dtype}; add the missing dimensions with "
            "x.reshape(1, channels, samples)"
        )


def _param(params: dict[str, Any], key: str, channel: str) -> Any:
    """``params[key]``, or an InputError that says where params come from."""
    if not isinstance(params, dict) or key not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise InputError(
            f"{channel}: params {got} lack {key!r}; pass the dict that "
            f"{channel}.sample(generator) returned"
        )
    return params[key]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(channel: str, low_name: str, low: float, high_name: str, high: float,
                 *, lowest: float, highest: float, unit: str) -> None:
    """``lowest <= low <= high <= highest``, all finite numbers, or an InputError."""
    for name, value in ((low_name, low), (high_name, high)):
        if not _is_real(value) or not lowest <= value <= highest:
            raise InputError(
                f"{channel}: {name}={value!r} is not usable; pass a number from "
                f"{lowest:g} to {highest:g} {unit}"
            )
    if low > high:
        raise InputError(
            f"{channel}: {low_name}={low:g} is above {high_name}={high:g}; "
            f"pass {low_name} <= {high_name}"
        )


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One number uniform in ``[low, high]`` from ``generator`` (float64 draw)."""
    u = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device)
    return float(low + (high - low) * float(u))


def _seed(generator: torch.Generator) -> int:
    """A seed for a noise generator, drawn from ``generator``."""
    return int(torch.randint(0, _SEED_LIMIT, (), generator=generator, device=generator.device))


def _choice(generator: torch.Generator, count: int) -> int:
    """An index uniform in ``range(count)``."""
    return int(torch.randint(0, count, (), generator=generator, device=generator.device))


def _noise_generator(seed: Any, device: torch.device, channel: str) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(
            f"{channel}: noise seed {seed!r} must be a non-negative int; pass the params "
            f"that {channel}.sample(generator) returned"
        )
    return torch.Generator(device=device).manual_seed(int(seed))


def _rate(sample_rate_hz: Any, channel: str) -> int:
    try:
        return check_sample_rate(sample_rate_hz)
    except InputError as error:
        raise InputError(f"{channel}: {error}") from None


# ---------------------------------------------------------------------------------------
# Simple channels
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """No change: the file reaches the scraper as published. ``params`` is ``{}``."""

    differentiable: ClassVar[bool] = True
    name: ClassVar[str] = "identity"

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        return {}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "Identity")
        return x


@dataclass(frozen=True, kw_only=True)
class Gain:
    """A level change of ``gain_db`` drawn uniformly in ``[min_db, max_db]`` (dB).

    ``y = x * 10^(gain_db / 20)``, unclipped (a real chain may clip after a positive
    gain; clipping would cut the gradient where it acts). Params: ``{"gain_db": float}``.
    Range: -60 to +40 dB.
    """

    min_db: float = -6.0
    max_db: float = 6.0

    differentiable: ClassVar[bool] = True
    name: ClassVar[str] = "gain"

    def __post_init__(self) -> None:
        _check_range("Gain", "min_db", self.min_db, "max_db", self.max_db,
                     lowest=-60.0, highest=40.0, unit="dB")

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        return {"gain_db": _uniform(generator, self.min_db, self.max_db)}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "Gain")
        gain_db = float(_param(params, "gain_db", "Gain"))
        return x * (10.0 ** (gain_db / 20.0))


@dataclass(frozen=True, kw_only=True)
class AddedNoise:
    """White Gaussian noise at an SNR drawn uniformly in ``[min_snr_db, max_snr_db]``.

    The noise power of batch item ``b`` is ``mean(x[b]^2) / 10^(snr_db / 10)`` (one level
    for all of an item's channels; a silent item gets no noise). The level is computed
    from ``x`` without gradient, so ``d y / d x`` is the identity.

    Params: ``{"snr_db": float, "seed": int}``. The noise tensor itself (as big as ``x``)
    is not drawn in :meth:`sample`: :meth:`apply` draws it from a new generator seeded
    with ``seed`` on ``x``'s device, so the same params give the same noise there.
    SNR range: -20 to 120 dB.
    """

    min_snr_db: float = 30.0
    max_snr_db: float = 50.0

    differentiable: ClassVar[bool] = True
    name: ClassVar[str] = "noise"

    def __post_init__(self) -> None:
        _check_range("AddedNoise", "min_snr_db", self.min_snr_db, "max_snr_db",
                     self.max_snr_db, lowest=-20.0, highest=120.0, unit="dB")

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        return {"snr_db": _uniform(generator, self.min_snr_db, self.max_snr_db),
                "seed": _seed(generator)}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "AddedNoise")
        snr_db = float(_param(params, "snr_db", "AddedNoise"))
        noise_gen = _noise_generator(_param(params, "seed", "AddedNoise"), x.device, "AddedNoise")
        noise = torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
        power = x.detach().square().mean(dim=(1, 2), keepdim=True)
        return x + noise * torch.sqrt(power / (10.0 ** (snr_db / 10.0)))


@dataclass(frozen=True, kw_only=True)
class Resample:
    """A round trip through another sample rate, ``via_hz`` drawn from ``via_hz_choices``.

    Models a platform that stores audio at e.g. 16, 22.05 or 32 kHz: content above
    ``0.945 * min(rate, via) / 2`` is removed (the roll-off of
    :func:`harmonycloak.perturb.dsp.resample`, windowed sinc, differentiable). The length
    is preserved (the way back is cut to the input length). Params: ``{"via_hz": int}``.
    """

    sample_rate_hz: int
    via_hz_choices: tuple[int, ...] = (16000, 22050, 32000)

    differentiable: ClassVar[bool] = True
    name: ClassVar[str] = "resample"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_rate_hz", _rate(self.sample_rate_hz, "Resample"))
        choices = tuple(self.via_hz_choices) if isinstance(self.via_hz_choices, Sequence) else ()
        if not choices:
            raise InputError(
                f"Resample: via_hz_choices={self.via_hz_choices!r} must be a non-empty "
                "sequence of rates such as (16000, 22050, 32000)"
            )
        object.__setattr__(self, "via_hz_choices", tuple(_via_rate(v) for v in choices))

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        return {"via_hz": self.via_hz_choices[_choice(generator, len(self.via_hz_choices))]}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "Resample")
        via_hz = _via_rate(_param(params, "via_hz", "Resample"))
        down = dsp.resample(x, self.sample_rate_hz, via_hz)
        back = dsp.resample(down, via_hz, self.sample_rate_hz)
        num_samples = x.shape[-1]
        if back.shape[-1] < num_samples:  # cannot happen with ceil lengths; kept for safety
            back = torch.nn.functional.pad(back, (0, num_samples - back.shape[-1]))
        return back[..., :num_samples]


def _via_rate(via_hz: Any) -> int:
    try:
        return check_sample_rate(via_hz)
    except InputError:
        raise InputError(
            f"Resample: via_hz {via_hz!r} must be a whole number of Hz from 8000 to 192000, "
            "e.g. 16000 or 22050"
        ) from None


@dataclass(frozen=True, kw_only=True)
class Lowpass:
    """A zero-phase low-pass with cutoff drawn log-uniformly in ``[min_cutoff_hz, max_cutoff_hz]``.

    Magnitude response: the squared digital Butterworth response of order ``order``
    (bilinear transform), ``|H(f)| = 1 / (1 + (tan(pi f / rate) / tan(pi cutoff / rate))^(2
    order))`` — what :func:`harmonycloak.io.codecs.lowpass` (``sosfiltfilt``) has: -6 dB
    at ``cutoff_hz``, order 8: ~-48 dB one octave above. Applied in the FFT domain to
    the zero-extended signal (padding of 16 cutoff periods each side, where the impulse
    response has decayed to ~1e-8), so there is no delay, no wrap-around, and the
    gradient is the same real response. At the ends it differs from ``sosfiltfilt``
    (odd extension there, zeros here). Params: ``{"cutoff_hz": float}``.
    """

    sample_rate_hz: int
    min_cutoff_hz: float = 4000.0
    max_cutoff_hz: float = 16000.0
    order: int = 8

    differentiable: ClassVar[bool] = True
    name: ClassVar[str] = "lowpass"

    def __post_init__(self) -> None:
        rate = _rate(self.sample_rate_hz, "Lowpass")
        object.__setattr__(self, "sample_rate_hz", rate)
        _check_range("Lowpass", "min_cutoff_hz", self.min_cutoff_hz, "max_cutoff_hz",
                     self.max_cutoff_hz, lowest=20.0, highest=0.49 * rate,
                     unit=f"Hz (below the Nyquist frequency of {rate} Hz audio)")
        order = self.order
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 16:
            raise InputError(f"Lowpass: order={self.order!r} must be an int from 1 to 16")

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        low, high = math.log(self.min_cutoff_hz), math.log(self.max_cutoff_hz)
        return {"cutoff_hz": math.exp(_uniform(generator, low, high))}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "Lowpass")
        cutoff_hz = float(_param(params, "cutoff_hz", "Lowpass"))
        if not 0.0 < cutoff_hz < self.sample_rate_hz / 2:
            raise InputError(
                f"Lowpass: cutoff {cutoff_hz:g} Hz must lie between 0 and the Nyquist "
                f"frequency {self.sample_rate_hz / 2:g} Hz; pass sampled params"
            )
        return lowpass_fft(x, self.sample_rate_hz, cutoff_hz=cutoff_hz, order=self.order)


def lowpass_fft(x: Tensor, sample_rate_hz: int, *, cutoff_hz: float, order: int = 8) -> Tensor:
    """Zero-phase low-pass of ``x [..., samples]``: the squared digital Butterworth response.

    See :class:`Lowpass`. Differentiable; same shape, dtype and device as ``x``.
    """
    num_samples = x.shape[-1]
    pad = min(num_samples, math.ceil(16.0 * sample_rate_hz / cutoff_hz))
    length = scipy.fft.next_fast_len(num_samples + 2 * pad, real=True)
    padded = torch.nn.functional.pad(x, (pad, pad))
    freqs = torch.fft.rfftfreq(length, d=1.0 / sample_rate_hz, device=x.device,
                               dtype=torch.float64)
    warped = torch.tan(math.pi * freqs.clamp_max(0.499999 * sample_rate_hz) / sample_rate_hz)
    ratio = warped / math.tan(math.pi * cutoff_hz / sample_rate_hz)
    response = (1.0 / (1.0 + ratio ** (2 * order))).to(x.dtype)
    spectrum = torch.fft.rfft(padded, n=length) * response
    return torch.fft.irfft(spectrum, n=length)[..., pad:pad + num_samples]



# ---------------------------------------------------------------------------------------
# Lossy coding
# ---------------------------------------------------------------------------------------

#: LAME's CBR low-pass per bitrate (``optimum_bandwidth`` in LAME 3.100 ``lame.c``): the
#: total bitrate of the stream in kbps -> low-pass in Hz; the nearest listed bitrate wins.
_LAME_LOWPASS_HZ: tuple[tuple[int, int], ...] = (
    (8, 2000), (16, 3700), (24, 3900), (32, 5500), (40, 7000), (48, 7500), (56, 10000),
    (64, 11000), (80, 13500), (96, 15100), (112, 15600), (128, 17000), (160, 17500),
    (192, 18600), (224, 19400), (256, 19700), (320, 20500),
)
_LAME_MAX_LOWPASS_HZ = 20500.0

#: The proxy's noise-to-mask ratio for MP3, fitted to LAME (see :class:`CodecProxy`):
#: stream channels -> ((bitrate kbps, NMR at 1 kHz in dB, rise in dB per octave), ...).
#: Interpolated linearly in log2(bitrate) within a layout, held constant beyond the ends.
_MP3_NMR: dict[int, tuple[tuple[float, float, float], ...]] = {
    1: ((64.0, -16.0, 2.0), (128.0, -20.0, 0.0), (192.0, -27.0, 0.0), (320.0, -50.0, 1.0)),
    2: ((64.0, -12.0, 4.0), (96.0, -15.0, 4.0), (128.0, -17.0, 3.0), (192.0, -22.0, 2.0),
        (320.0, -38.0, 4.0)),
}
#: dB by which the proxy lowers the threshold in quiet inside the masking threshold. With
#: the full Terhardt curve (at the 96 dB calibration) the proxy's band edge on pink noise
#: fell 0.6-0.7 kHz short of LAME's at 128 kbps stereo and 64 kbps mono (it dropped the
#: quiet top octave); 10 dB brings it within 0.2 kHz without changing the in-band fit.
_ATH_RELIEF_DB = 10.0

#: The tilt acts on log2(f / 1 kHz) clamped to this range (500 Hz to ~11 kHz).
_TILT_OCTAVES = (-1.0, 3.5)


def _stream_channels(channels: int) -> int:
    """Channels in one coded stream: MP3 codes pairs (see :mod:`harmonycloak.io.codecs`)."""
    return 1 if channels == 1 else 2


def mp3_cutoff_hz(bitrate_kbps: float, sample_rate_hz: int, channels: int) -> float:
    """Where LAME (CBR, as in :func:`harmonycloak.io.codecs.mp3_roundtrip`) band-limits.

    LAME picks a low-pass from its bitrate table (``_LAME_LOWPASS_HZ``, the nearest listed
    bitrate; times 1.5 for mono; at most 20.5 kHz and the Nyquist frequency), then zeroes
    every polyphase subband (32 bands of ``rate / 64`` Hz; LAME indexes them as
    ``band / 31`` of Nyquist) from the first one whose index reaches it:
    ``cutoff = ceil(31 * 2 * lowpass / rate) * rate / 64``. E.g. 44.1 kHz stereo:
    64 kbps -> 11.0 kHz, 96 -> 15.2, 128 -> 16.5, 192 -> 18.6, 320 -> 20.0 kHz; mono
    64 kbps -> 16.5 kHz, >= 96 kbps -> 20.0 kHz. Measured on pink noise through the real
    round trip: -3 dB within 100 Hz of these values (stereo below 128 kbps: the top 2-4
    kHz below the cutoff are attenuated further where bits run out).
    ``channels``: of the input (more than 2 are coded as pairs).
    """
    stream_kbps = float(bitrate_kbps)
    nearest = min(_LAME_LOWPASS_HZ, key=lambda row: abs(row[0] - stream_kbps))
    lowpass = float(nearest[1]) * (1.5 if _stream_channels(channels) == 1 else 1.0)
    lowpass = min(lowpass, _LAME_MAX_LOWPASS_HZ, sample_rate_hz / 2.0)
    band = min(32, math.ceil(31.0 * 2.0 * lowpass / sample_rate_hz - 1e-9))
    return band * sample_rate_hz / 64.0


def mp3_noise_to_mask_db(bitrate_kbps: float, channels: int, frequencies_hz: Tensor) -> Tensor:
    """The proxy's noise level relative to the masking threshold (dB) per frequency, MP3.

    ``NMR(f) = a + b * clamp(log2(f / 1 kHz), -1, 3.5)`` with ``a`` (dB at 1 kHz) and ``b``
    (dB per octave) interpolated from ``_MP3_NMR`` for this bitrate and stream layout
    (mono, or stereo pairs). E.g. stereo 64 kbps: -12 dB at 1 kHz rising 4 dB per octave
    (LAME's joint stereo starves the highs first); stereo 128: -17 dB, +3 dB/octave;
    mono 128: -20 dB, flat. Returns a tensor shaped like ``frequencies_hz``.
    """
    rows = _MP3_NMR[_stream_channels(channels)]
    xs = np.log2([row[0] for row in rows])
    where = math.log2(float(bitrate_kbps))
    at_1khz = float(np.interp(where, xs, [row[1] for row in rows]))
    per_octave = float(np.interp(where, xs, [row[2] for row in rows]))
    octaves = torch.log2(frequencies_hz.clamp_min(1.0) / 1000.0).clamp(*_TILT_OCTAVES)
    return at_1khz + per_octave * octaves


@dataclass(frozen=True, kw_only=True)
class CodecProxy:
    """A differentiable stand-in for a perceptual coder (calibrated on LAME MP3, CBR).

    A perceptual coder spends its bits where the ear would hear the error: it quantizes
    each spectral component with noise just under the masking threshold, components below
    that noise level are quantized to zero, and everything above a bitrate-dependent
    cutoff is dropped. The proxy does the same in the STFT domain (Hann, ``n_fft`` =
    1024 at 44.1/48 kHz, hop ``n_fft / 4``, zero-padded centred frames):

    1. ``T``: the global masking threshold of ``x`` per frame and bin
       (:func:`harmonycloak.psychoacoustics.masking.masking_threshold`, MPEG-1 model 1 +
       temporal masking), computed without gradient, its threshold-in-quiet part lowered
       by 10 dB (``_ATH_RELIEF_DB``); the allowed noise ``N = T * 10^(NMR(f) / 10)`` in
       the STFT's power units (:meth:`allowed_noise`), ``NMR(f)`` from
       :func:`mp3_noise_to_mask_db` plus ``nmr_offset_db``;
    2. a soft dead zone: each component ``X`` is scaled by ``g = |X|^2 / (|X|^2 + N)``
       (Wiener-like: ~0 for components well under the noise level, ~1 well above);
    3. quantization-like noise: complex Gaussian of power ``N g^2`` per bin (coded
       components carry noise at the allowed level, dropped ones almost none), drawn
       from the params' ``seed``, its level detached from the graph; scaled by
       ``n_fft / hop`` because the inverse STFT of independent frames keeps
       ``hop / n_fft`` of their power;
    4. the band limit of LAME at this bitrate (:func:`mp3_cutoff_hz`), a raised-cosine
       edge ``rate / 256`` Hz wide;
    5. inverse STFT to the input length.

    Calibration (``NMR`` table fitted by grid search on 2 s excerpts at 44.1 kHz of two
    synthetic signals: dense chords with harmonics to 18 kHz plus hi-hats, and the
    sparse ``music_like`` test signal; compared per band of error power over signal
    power, 150 Hz up to the band limit). Against the real round trip, at 44.1 and 48
    kHz: band edge on pink noise within 0.35 kHz of LAME's at 64 and 128 kbps (stereo)
    and 64 kbps (mono); error-to-signal ratio per band (RMS over the bands of the
    difference in dB) 1.0-1.6 dB at 128 kbps stereo and 64 kbps mono and 1.9-2.8 dB at
    64 kbps stereo on dense music; 1.7-2.3 dB and 1.9-3.4 dB on the sparse signal, where
    LAME spends more bits per component than a fixed NMR says (the proxy errs on the
    noisy side there, by up to 4 dB at 1-5 kHz). Mono at >= 128 kbps (3-4 dB): LAME
    keeps 16-20 kHz content that lies under the threshold in quiet and the proxy drops
    it. Not modelled: block switching and pre-echo,
    joint-stereo coding, the bit reservoir and per-frame bit starvation, and the
    signal dependence of the achieved NMR.

    Params: ``{"bitrate_kbps": float, "seed": int}``; ``bitrate_kbps`` is drawn uniformly
    from ``bitrates_kbps``. Gradients reach ``x`` through the STFT, the dead-zone gain
    (it depends on ``|X|``: components pushed above the noise level survive) and the band
    limit; nothing above the band limit passes a gradient. One masking analysis per call
    (about a third of the forward time).
    """

    sample_rate_hz: int
    bitrates_kbps: tuple[float, ...] = (64.0, 128.0)
    nmr_offset_db: float = 0.0
    n_fft: int | None = None
    hop_length: int | None = None

    differentiable: ClassVar[bool] = True
    name: ClassVar[str] = "mp3-proxy"

    def __post_init__(self) -> None:
        rate = _rate(self.sample_rate_hz, "CodecProxy")
        object.__setattr__(self, "sample_rate_hz", rate)
        rates = tuple(self.bitrates_kbps) if isinstance(self.bitrates_kbps, Sequence) else ()
        if not rates or not all(_is_real(b) and 8 <= b <= 320 for b in rates):
            raise InputError(
                f"CodecProxy: bitrates_kbps={self.bitrates_kbps!r} must be a non-empty "
                "sequence of bitrates from 8 to 320 kbps, e.g. (64, 128)"
            )
        object.__setattr__(self, "bitrates_kbps", tuple(float(b) for b in rates))
        if not _is_real(self.nmr_offset_db) or abs(self.nmr_offset_db) > 40:
            raise InputError(
                f"CodecProxy: nmr_offset_db={self.nmr_offset_db!r} must be a number from "
                "-40 to 40 dB (0 keeps the calibration)"
            )
        n_fft = default_n_fft(rate) if self.n_fft is None else self.n_fft
        if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 16 or n_fft % 2 \
                or rate / n_fft >= 100.0:
            raise InputError(
                f"CodecProxy: n_fft={self.n_fft!r} must be an even int with bins narrower "
                f"than 100 Hz (> {rate // 100} at {rate} Hz); leave it unset for "
                f"{default_n_fft(rate)}"
            )
        hop = n_fft // 4 if self.hop_length is None else self.hop_length
        if isinstance(hop, bool) or not isinstance(hop, int) or not 1 <= hop <= n_fft // 2:
            raise InputError(
                f"CodecProxy: hop_length={self.hop_length!r} must be an int from 1 to "
                f"n_fft / 2 = {n_fft // 2} (the inverse STFT needs overlap); leave it unset "
                f"for {n_fft // 4}"
            )
        object.__setattr__(self, "n_fft", n_fft)
        object.__setattr__(self, "hop_length", hop)

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        bitrate = self.bitrates_kbps[_choice(generator, len(self.bitrates_kbps))]
        return {"bitrate_kbps": bitrate, "seed": _seed(generator)}

    def noise_to_mask_db(self, bitrate_kbps: float, channels: int) -> Tensor:
        """The allowed noise relative to the masking threshold (dB) per STFT bin, ``[bins]``."""
        freqs = torch.fft.rfftfreq(self.n_fft, d=1.0 / self.sample_rate_hz)
        return mp3_noise_to_mask_db(bitrate_kbps, channels, freqs) + float(self.nmr_offset_db)

    def band_limit(self, bitrate_kbps: float, channels: int, *, device: Any = "cpu",
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """The band-limit gain per STFT bin, ``[n_fft // 2 + 1]`` in [0, 1]."""
        rate = self.sample_rate_hz
        cutoff = mp3_cutoff_hz(bitrate_kbps, rate, channels)
        width = rate / 256.0
        freqs = torch.fft.rfftfreq(self.n_fft, d=1.0 / rate, dtype=torch.float64)
        ramp = ((freqs - (cutoff - width / 2)) / width).clamp(0.0, 1.0)
        return torch.cos(0.5 * math.pi * ramp).square().to(device=device, dtype=dtype)

    def allowed_noise(self, x: Tensor, bitrate_kbps: float) -> Tensor:
        """``N``: allowed noise power per bin, ``[batch * channels, bins, frames]``.

        In the units of ``|torch.stft(x, window=hann)|^2`` (no gradient).
        """
        _check_signal(x, "CodecProxy")
        rows = x.detach().reshape(-1, x.shape[-1])
        result = masking_threshold(rows, self.sample_rate_hz, n_fft=self.n_fft,
                                   hop_length=self.hop_length)
        # N = (T - (1 - r) ATH) * 10^((NMR - 96) / 10) * window gain, with T >= ATH and the
        # ATH share scaled by r = 10^(-relief / 10); per-bin constants folded into offset_db.
        window_gain = float(self._window(x).double().sum() / 2.0) ** 2  # relative -> |stft|^2
        nmr_db = self.noise_to_mask_db(bitrate_kbps, x.shape[1]).to(result.threshold_db.device)
        offset_db = nmr_db - FULL_SCALE_SPL_DB + 10.0 * math.log10(window_gain)
        quiet = torch.pow(10.0, (result.ath_db + offset_db) / 10.0)
        relief = 10.0 ** (-_ATH_RELIEF_DB / 10.0)
        allowed = torch.pow(10.0, (result.threshold_db + offset_db) / 10.0)
        allowed = (allowed - (1.0 - relief) * quiet).clamp_min(relief * quiet)
        return allowed.transpose(-1, -2).to(x.dtype)

    def _window(self, x: Tensor) -> Tensor:
        return torch.hann_window(self.n_fft, periodic=True, dtype=x.dtype, device=x.device)

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "CodecProxy")
        bitrate = _param(params, "bitrate_kbps", "CodecProxy")
        if not _is_real(bitrate) or not 8 <= bitrate <= 320:
            raise InputError(
                f"CodecProxy: bitrate {bitrate!r} kbps must lie from 8 to 320; pass the "
                "params that CodecProxy.sample(generator) returned"
            )
        noise_gen = _noise_generator(_param(params, "seed", "CodecProxy"), x.device, "CodecProxy")
        batch, channels, num_samples = x.shape
        window = self._window(x)
        spec = torch.stft(x.reshape(-1, num_samples), self.n_fft, self.hop_length,
                          window=window, center=True, pad_mode="constant",
                          return_complex=True)  # [rows, bins, frames]
        allowed = self.allowed_noise(x, float(bitrate))
        power = spec.real.square() + spec.imag.square()
        gain = power / (power + allowed)
        # istft of independent frames keeps hop / n_fft of their power: compensate.
        noise_power = allowed * gain.detach().square() * (self.n_fft / self.hop_length)
        complex_dtype = spec.dtype
        noise = torch.randn(spec.shape, generator=noise_gen, device=x.device, dtype=complex_dtype)
        band = self.band_limit(float(bitrate), channels, device=x.device, dtype=x.dtype)
        coded = band[:, None] * (gain * spec + noise * noise_power.sqrt())
        y = torch.istft(coded, self.n_fft, self.hop_length, window=window, center=True,
                        length=num_samples)
        return y.reshape(batch, channels, num_samples)


@dataclass(frozen=True)
class StraightThroughCodec:
    """The real codec round trip in the forward pass, the identity in the backward pass.

    Forward: :func:`harmonycloak.io.codecs.roundtrip` (in-process, sample-aligned, same
    shape) of each batch item, on a detached float32 CPU copy; backward: the identity,
    ``y = x + (codec(x) - x).detach()`` (BPDA: Athalye, Carlini and Wagner, "Obfuscated
    gradients give a false sense of security", ICML 2018; advertorch ``bpda.py``).
    ``differentiable`` is False: the gradient is the identity, not the codec's.

    ``codec``: mp3, aac, opus or vorbis; ``bitrate_kbps``: checked against the codec's
    range for a stereo stream at this rate (:func:`harmonycloak.io.codecs.check_encodable`;
    a mono input outside the mono range raises :class:`CodecError` when applied). Opus
    codes at 48 kHz only: for other rates the round trip resamples to 48 kHz and back
    with soxr (:func:`harmonycloak.io.codecs.resample`, linear phase, delay compensated)
    inside :func:`~harmonycloak.io.codecs.roundtrip`; the gradient is the identity
    either way, so a differentiable resampler would add nothing. Params: ``{}`` (the
    codecs are deterministic). Values outside [-1, 1] reach the encoder unclipped.
    """

    codec: str
    bitrate_kbps: float
    sample_rate_hz: int = field(kw_only=True)

    differentiable: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.codec not in codecs.CODECS:
            raise InputError(
                f"StraightThroughCodec: unknown codec {self.codec!r}; use one of "
                f"{', '.join(codecs.CODECS)}"
            )
        rate = _rate(self.sample_rate_hz, "StraightThroughCodec")
        object.__setattr__(self, "sample_rate_hz", rate)
        coded_rate = 48000 if self.codec == "opus" else rate
        try:
            codecs.check_encodable(self.codec, coded_rate, 2, self.bitrate_kbps)
        except CodecError as error:
            raise InputError(f"StraightThroughCodec: {error}") from None

    @property
    def name(self) -> str:
        return f"{self.codec}-{self.bitrate_kbps:g}k"

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        return {}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        _check_signal(x, "StraightThroughCodec")
        source = x.detach().to(device="cpu", dtype=torch.float32).numpy()
        coded = np.stack([
            codecs.roundtrip(item, self.sample_rate_hz, codec=self.codec,
                             bitrate_kbps=self.bitrate_kbps)
            for item in source
        ])
        y = torch.from_numpy(coded).to(device=x.device, dtype=x.dtype)
        return _StraightThrough.apply(x, y)


class _StraightThrough(torch.autograd.Function):
    """``forward(x, y) = y`` exactly, ``d/dx`` = identity: ``x + (y - x).detach()`` without
    the float rounding of the sum, so the forward pass is bit-identical to the codec's."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor) -> Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


# ---------------------------------------------------------------------------------------
# Expectation over transformations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """A weighted mixture of channels: each draw picks one member, then its parameters.

    The expectation over transformations the engine averages over (Athalye et al.,
    "Synthesizing robust adversarial examples", ICML 2018): averaging the loss over
    draws estimates ``E_{t ~ mixture} L(t(x))``. ``weights`` (default: equal) need not
    sum to 1; zero excludes a member. Params:
    ``{"index": int, "channel": member name, "params": the member's params}``.
    ``differentiable`` is True when every member with positive weight is.
    """

    channels: tuple[Any, ...]
    weights: tuple[float, ...] | None = None
    differentiable: bool = field(init=False)

    name: ClassVar[str] = "expectation"

    def __post_init__(self) -> None:
        members = tuple(self.channels) if isinstance(self.channels, Sequence) else ()
        if not members:
            raise InputError(
                f"Expectation: channels={self.channels!r} must be a non-empty sequence of "
                "channels, e.g. (Identity(), Gain())"
            )
        for i, member in enumerate(members):
            if not isinstance(member, Channel):
                raise InputError(
                    f"Expectation: member {i} ({type(member).__name__}) is not a channel; "
                    "it needs differentiable, sample(generator) and apply(x, params)"
                )
        weights = (1.0,) * len(members) if self.weights is None else tuple(self.weights)
        if len(weights) != len(members) or not all(_is_real(w) and w >= 0 for w in weights) \
                or sum(weights) <= 0:
            raise InputError(
                f"Expectation: weights={self.weights!r} must be {len(members)} finite, "
                "non-negative numbers (one per channel) with a positive sum"
            )
        object.__setattr__(self, "channels", members)
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        object.__setattr__(self, "differentiable", all(
            bool(m.differentiable) for m, w in zip(members, weights, strict=True) if w > 0))

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        probabilities = torch.tensor(self.weights, dtype=torch.float64, device=generator.device)
        index = int(torch.multinomial(probabilities, 1, generator=generator))
        member = self.channels[index]
        return {"index": index, "channel": str(getattr(member, "name", type(member).__name__)),
                "params": member.sample(generator)}

    def apply(self, x: Tensor, params: dict[str, Any]) -> Tensor:
        index = _param(params, "index", "Expectation")
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 0 <= index < len(self.channels):
            raise InputError(
                f"Expectation: member index {index!r} is out of range for "
                f"{len(self.channels)} channels; pass sampled params"
            )
        return self.channels[index].apply(x, _param(params, "params", "Expectation"))
