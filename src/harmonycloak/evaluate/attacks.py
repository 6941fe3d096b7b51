"""Removal attacks: what a scraper can do to a protected file before training on it.

The HarmonyCloak paper tests its noise against MP3 compression (section 5.2.3 and 7);
issue 5 asks for more: other codecs, resampling, filtering, classic denoisers and an
*adaptive* attacker who trains with random codec / resample / filter augmentation. Each
attack is a small object behind the :class:`Attack` protocol, registered by name in
:data:`ATTACKS`:

=========================  ==============================================================
name                       what it does
=========================  ==============================================================
``mp3_64k``, ``mp3_128k``  LAME MP3 round trip (CBR), in process, sample-aligned
``aac_64k``                FFmpeg AAC-LC round trip (MP4), sample-aligned
``opus_32k``               libopus round trip (coded at 48 kHz), sample-aligned
``resample_16k``           soxr down to 16 kHz and back: nothing above ~8 kHz survives
``lowpass_8k``             zero-phase 8th-order Butterworth, -6 dB at 8 kHz
``spectral_subtraction``   power spectral subtraction of the floor of the quietest frames
``nmf_denoise``            NMF of the magnitude STFT, keep the components with most energy
``spectral_gate``          ``noisereduce`` spectral gating, non-stationary (its default)
``spectral_gate_stationary`` ``noisereduce`` spectral gating, stationary noise model
``gaussian_noise_40db``    white Gaussian noise added at 40 dB SNR
=========================  ==============================================================

Contract (every attack): ``apply(samples, sample_rate_hz, *, seed)`` takes float32
``[channels, samples]`` and returns float32 of the same shape at the same rate,
sample-aligned with the input (no delay: a feature at time t stays at time t; checked by
cross-correlation in ``tests/test_eval_attacks.py``); the input is never modified;
``seed`` drives the attack's randomness (the deterministic ones ignore it), so the same
input and seed give the same output. ``name`` is the registry key and ``description``
one plain line for reports. The codec round trips come from
:mod:`harmonycloak.io.codecs`.

:class:`AugmentationPolicy` is the adaptive attacker's side: a torch
:class:`~harmonycloak.perturb.protocols.Channel` that draws one random codec, resampling
or low-pass per training step from a ``torch.Generator``, built from the publishing
channels of :mod:`harmonycloak.perturb.channels` (the same transformations protection is
optimized through).

:func:`survival` turns a metric gap before and after an attack into the share of the
protection effect that survives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from scipy import signal as sp_signal

from harmonycloak.errors import CodecError, InputError, ModelLoadError
from harmonycloak.io import codecs

__all__ = [
    "ATTACKS",
    "Attack",
    "AugmentationPolicy",
    "CodecAttack",
    "GaussianNoiseAttack",
    "LowpassAttack",
    "NmfDenoiseAttack",
    "ResampleAttack",
    "SpectralGateAttack",
    "SpectralSubtractionAttack",
    "survival",
]

_NOISEREDUCE_HINT = "pip install 'harmonycloak[eval]' (or: pip install noisereduce)"


@runtime_checkable
class Attack(Protocol):
    """One removal attack on a waveform (see the module docstring for the contract)."""

    name: str
    description: str

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------


def _check(samples: Any, sample_rate_hz: Any, name: str) -> np.ndarray:
    """A float32 C-contiguous copy of ``samples`` ``[channels, samples]``, or InputError."""
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"attack {name}: audio of shape {x.shape}; give a float array "
                         "[channels, samples] (add a channel axis with x[None] for mono)")
    if not np.all(np.isfinite(x)):
        raise InputError(f"attack {name}: the audio holds NaN or infinite samples; load it "
                         "with harmonycloak.io.audio.load_audio, which checks this")
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer)) \
            or not 8000 <= int(sample_rate_hz) <= 192000:
        raise InputError(f"attack {name}: sample rate {sample_rate_hz!r}; give a whole number "
                         "of Hz from 8000 to 192000")
    return np.array(x, dtype=np.float32, order="C", copy=True)


def _n_fft(sample_rate_hz: int) -> int:
    """The power of two nearest to 46 ms (2048 at 44.1/48 kHz): music-friendly resolution."""
    return int(2 ** round(math.log2(0.0464 * sample_rate_hz)))


def _stft(x: np.ndarray, n_fft: int) -> np.ndarray:
    """Complex STFT ``[channels, bins, frames]``: Hann, hop ``n_fft // 4``, zero-padded ends.

    With :func:`_istft` this is an exact, delay-free round trip (Hann at 75 % overlap is
    COLA), so any change comes from what the attack does to the coefficients.
    """
    _, _, spec = sp_signal.stft(x, nperseg=n_fft, noverlap=n_fft - n_fft // 4, window="hann",
                                boundary="zeros", padded=True, axis=-1)
    return spec


def _istft(spec: np.ndarray, n_fft: int, num_samples: int) -> np.ndarray:
    _, y = sp_signal.istft(spec, nperseg=n_fft, noverlap=n_fft - n_fft // 4, window="hann",
                           boundary=True, time_axis=-1, freq_axis=-2)
    y = y[..., :num_samples]
    if y.shape[-1] < num_samples:
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, num_samples - y.shape[-1])])
    return np.ascontiguousarray(y, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Codecs and plain signal transformations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecAttack:
    """A lossy codec round trip (:func:`harmonycloak.io.codecs.roundtrip`), sample-aligned.

    ``codec``: mp3, aac, opus or vorbis; ``bitrate_kbps``: per stereo pair (more than 2
    channels are coded as pairs). Where the codec refuses the file's rate at this bitrate
    (MP3 above 48 kHz, AAC at 64 kHz and up, low rates with high bitrates), the audio is
    coded at 48 kHz and resampled back with soxr (linear phase, delay compensated); Opus
    always codes at 48 kHz this way. Deterministic: ``seed`` is unused.
    """

    codec: str
    bitrate_kbps: float
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.codec not in codecs.CODECS:
            raise InputError(f"CodecAttack: unknown codec {self.codec!r}; use one of "
                             f"{', '.join(codecs.CODECS)}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.codec}_{self.bitrate_kbps:g}k")
        if not self.description:
            label = {"mp3": "MP3 (LAME, CBR)", "aac": "AAC-LC (FFmpeg)", "opus": "Opus",
                     "vorbis": "Ogg Vorbis"}[self.codec]
            object.__setattr__(self, "description",
                               f"{label} at {self.bitrate_kbps:g} kbps, encoded and decoded again")

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        rate = int(sample_rate_hz)
        coding_rate = self._coding_rate(rate, x.shape[0])
        coded = codecs.resample(x, rate, coding_rate) if coding_rate != rate else x
        try:
            y = codecs.roundtrip(coded, coding_rate, codec=self.codec,
                                 bitrate_kbps=self.bitrate_kbps)
        except CodecError as error:
            raise InputError(f"attack {self.name}: {error}") from None
        if coding_rate != rate:
            y = codecs.resample(y, coding_rate, rate)
            y = y[:, :x.shape[1]]
            y = np.pad(y, ((0, 0), (0, x.shape[1] - y.shape[1])))
        return np.ascontiguousarray(y, dtype=np.float32)

    def _coding_rate(self, rate: int, channels: int) -> int:
        if self.codec == "opus":
            return rate  # codecs.roundtrip resamples to 48 kHz itself
        try:
            codecs.check_encodable(self.codec, rate, min(channels, 2), self.bitrate_kbps)
            return rate
        except CodecError:
            return 48000


@dataclass(frozen=True)
class ResampleAttack:
    """Resampling to ``via_hz`` and back with soxr (:func:`codecs.resample_roundtrip`).

    Removes everything above about ``0.91 * via_hz / 2`` (soxr VHQ's pass band edge); a
    file already at or below ``via_hz`` comes back unchanged. Deterministic.
    """

    via_hz: int = 16000
    name: str = "resample_16k"
    description: str = "resampled to 16 kHz and back (removes everything above 8 kHz)"

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        if int(sample_rate_hz) <= self.via_hz:
            return x
        return codecs.resample_roundtrip(x, int(sample_rate_hz), via_hz=self.via_hz)


@dataclass(frozen=True)
class LowpassAttack:
    """Zero-phase Butterworth low-pass (:func:`codecs.lowpass`, ``sosfiltfilt``).

    Order ``order`` run forwards and backwards: -6 dB at ``cutoff_hz``, about -35 dB at
    1.125 x the cutoff for order 8, no delay. A file whose Nyquist frequency is at or
    below the cutoff comes back unchanged. Deterministic.
    """

    cutoff_hz: float = 8000.0
    order: int = 8
    name: str = "lowpass_8k"
    description: str = "8th-order low-pass filter at 8 kHz (zero phase)"

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        if self.cutoff_hz >= int(sample_rate_hz) / 2:
            return x
        return codecs.lowpass(x, int(sample_rate_hz), cutoff_hz=self.cutoff_hz, order=self.order)


@dataclass(frozen=True)
class GaussianNoiseAttack:
    """White Gaussian noise at ``snr_db`` below the clip's power (all channels together).

    Noise power = ``mean(x^2) / 10^(snr_db / 10)``, drawn from ``numpy`` with ``seed``.
    A silent clip comes back unchanged (0 dB relative to nothing is nothing).
    """

    snr_db: float = 40.0
    name: str = "gaussian_noise_40db"
    description: str = "white Gaussian noise added at 40 dB SNR"

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        power = float(np.mean(x.astype(np.float64) ** 2)) if x.size else 0.0
        if power <= 0.0:
            return x
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(x.shape) * math.sqrt(power / 10.0 ** (self.snr_db / 10.0))
        return (x + noise).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Denoisers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralSubtractionAttack:
    """Power spectral subtraction with over-subtraction and a spectral floor.

    Boll (1979), "Suppression of acoustic noise in speech using spectral subtraction", with
    the over-subtraction factor and floor of Berouti, Schwartz and Makhoul (1979),
    "Enhancement of speech corrupted by acoustic noise". Per channel: Hann STFT of about
    46 ms (2048 samples at 44.1/48 kHz), hop a quarter of it. The noise power spectrum
    ``N(f)`` is the mean power of the quietest ``noise_share`` of frames (by frame energy;
    at least one frame), so a perturbation spread evenly in time is estimated from the
    pauses and quiet passages. Each cell becomes

        |Y|^2 = max(|X|^2 - alpha * N(f),  beta * |X|^2)

    with the noisy phase kept. ``alpha`` = ``over_subtraction`` = 2 (Berouti et al. use
    3-6 at low SNR and ~1 at high SNR; 2 is a fixed middle for music, which is not noise-
    dominated); ``beta`` = ``floor`` = 0.01 (-20 dB: each cell loses at most 20 dB, which
    avoids "musical noise" holes). Deterministic; delay-free (exact STFT round trip).
    """

    over_subtraction: float = 2.0
    floor: float = 0.01
    noise_share: float = 0.1
    name: str = "spectral_subtraction"
    description: str = ("spectral subtraction of the noise floor of the quietest 10 % of "
                        "frames (over-subtraction 2, floor -20 dB)")

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        n_fft = _n_fft(int(sample_rate_hz))
        if x.shape[1] < n_fft:
            return x
        spec = _stft(x.astype(np.float64), n_fft)                 # [ch, bins, frames]
        power = spec.real ** 2 + spec.imag ** 2
        frame_energy = power.sum(axis=1)                           # [ch, frames]
        count = max(1, int(round(self.noise_share * power.shape[-1])))
        quiet = np.argsort(frame_energy, axis=-1)[:, :count]       # [ch, count]
        noise = np.take_along_axis(power, quiet[:, None, :], axis=-1).mean(axis=-1)
        cleaned = np.maximum(power - self.over_subtraction * noise[..., None],
                             self.floor * power)
        gain = np.sqrt(cleaned / np.maximum(power, 1e-30))
        return _istft(spec * gain, n_fft, x.shape[1])


@dataclass(frozen=True)
class NmfDenoiseAttack:
    """Keep the NMF components of the magnitude spectrogram that carry most of the energy.

    Per channel: ``V = |STFT(x)|`` (as :class:`SpectralSubtractionAttack`), factorized as
    ``V ~ W H`` with ``components`` non-negative components by Lee and Seung's
    multiplicative updates for the generalized Kullback-Leibler divergence (Lee and Seung
    2001, "Algorithms for non-negative matrix factorization"; the usual cost for audio
    magnitudes, Smaragdis and Brown 2003), ``iterations`` updates from a random start drawn
    with ``seed``. KL weighs relative errors, so weak texture gets components of its own;
    the Euclidean cost spreads it over the loud components instead (measured on music
    with white noise 30 dB down: 2 dB of the noise removed against 9 dB with KL). Component k's energy is ``||W_k||^2 ||H_k||^2`` (its rank-1
    spectrogram's); the strongest components are kept until they hold ``keep_energy`` of
    the total (at least one). The kept part becomes a soft mask
    ``V_keep / (W H)`` on the complex STFT (noisy phase kept), so what the weak components
    explain (low-level texture such as added noise) is removed. Seeded; delay-free.
    """

    components: int = 16
    iterations: int = 80
    keep_energy: float = 0.9
    name: str = "nmf_denoise"
    description: str = ("NMF of the magnitude spectrogram (16 components); only the "
                        "components with 90 % of the energy are kept")

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        n_fft = _n_fft(int(sample_rate_hz))
        if x.shape[1] < n_fft:
            return x
        spec = _stft(x.astype(np.float64), n_fft)
        rng = np.random.default_rng(seed)
        # float32 halves the cost of the updates; the mask needs no more precision
        masks = np.stack([self._mask(np.abs(spec[c]).astype(np.float32), rng)
                          for c in range(spec.shape[0])])
        return _istft(spec * masks, n_fft, x.shape[1])

    def _mask(self, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Soft mask ``[bins, frames]`` in [0, 1] keeping the strong components of ``v``."""
        if not np.any(v > 0):
            return np.ones_like(v)
        k = max(1, min(self.components, *v.shape))
        scale = math.sqrt(float(v.mean()) / k)
        w = (rng.uniform(0.5, 1.5, (v.shape[0], k)) * scale).astype(v.dtype)
        h = (rng.uniform(0.5, 1.5, (k, v.shape[1])) * scale).astype(v.dtype)
        tiny = np.float32(1e-12)
        for _ in range(self.iterations):
            h *= (w.T @ (v / (w @ h + tiny))) / (w.sum(axis=0)[:, None] + tiny)
            w *= ((v / (w @ h + tiny)) @ h.T) / (h.sum(axis=1)[None, :] + tiny)
        energy = (w.astype(np.float64) ** 2).sum(axis=0) * (h.astype(np.float64) ** 2).sum(axis=1)
        order = np.argsort(energy)[::-1]
        cumulative = np.cumsum(energy[order]) / max(float(energy.sum()), tiny)
        keep = order[:int(np.searchsorted(cumulative, self.keep_energy) + 1)]
        full = w @ h
        return np.clip((w[:, keep] @ h[keep]) / (full + tiny), 0.0, 1.0)


@dataclass(frozen=True)
class SpectralGateAttack:
    """Spectral gating with the ``noisereduce`` package (Sainburg 2020; noisereduce 3).

    ``stationary=False`` (noisereduce's default): the noise floor of each frequency is a
    running estimate over ``time_constant_s`` (2 s) and cells less than 2x above it are
    gated through a smooth sigmoid mask; ``stationary=True``: one noise floor per
    frequency (mean + 1.5 standard deviations of the clip's own dB spectrum). Both with
    noisereduce's defaults otherwise (``prop_decrease`` 1, 1024-point FFT, mask smoothed
    over 500 Hz and 50 ms). Each channel is gated on its own. Deterministic; delay-free.
    Needs ``pip install noisereduce`` (the ``eval`` extra); raises
    :class:`~harmonycloak.errors.ModelLoadError` with that hint when it is missing.
    """

    stationary: bool = False
    name: str = "spectral_gate"
    description: str = "noisereduce spectral gating, non-stationary noise estimate"

    def apply(self, samples: np.ndarray, sample_rate_hz: int, *, seed: int) -> np.ndarray:
        x = _check(samples, sample_rate_hz, self.name)
        try:
            import noisereduce
        except ImportError:
            raise ModelLoadError(f"attack {self.name} needs the noisereduce package; "
                                 f"{_NOISEREDUCE_HINT}") from None
        if x.shape[1] < 2048:
            return x
        rows = [noisereduce.reduce_noise(y=row.astype(np.float64), sr=int(sample_rate_hz),
                                         stationary=self.stationary, n_jobs=1, use_tqdm=False)
                for row in x]
        y = np.stack([np.asarray(r)[:x.shape[1]] for r in rows])
        if y.shape[1] < x.shape[1]:
            y = np.pad(y, ((0, 0), (0, x.shape[1] - y.shape[1])))
        return np.ascontiguousarray(y, dtype=np.float32)


def _registry() -> dict[str, Attack]:
    attacks: list[Attack] = [
        CodecAttack("mp3", 64, description="MP3 at 64 kbps (LAME, CBR), encoded and decoded again"),
        CodecAttack("mp3", 128,
                    description="MP3 at 128 kbps (LAME, CBR), encoded and decoded again"),
        CodecAttack("aac", 64, description="AAC-LC at 64 kbps (FFmpeg), encoded and decoded again"),
        CodecAttack("opus", 32, description="Opus at 32 kbps, encoded and decoded again"),
        ResampleAttack(),
        LowpassAttack(),
        SpectralSubtractionAttack(),
        NmfDenoiseAttack(),
        SpectralGateAttack(),
        SpectralGateAttack(stationary=True, name="spectral_gate_stationary",
                           description="noisereduce spectral gating, stationary noise estimate"),
        GaussianNoiseAttack(),
    ]
    return {attack.name: attack for attack in attacks}


ATTACKS: dict[str, Attack] = _registry()
"""Every removal attack by name (the order of the table in the module docstring)."""


# ---------------------------------------------------------------------------------------
# The adaptive attacker
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentationPolicy:
    """Random codec / resample / filter augmentation for an adaptive attacker (torch).

    The attacker knows that protection hides in what lossy channels may remove, so every
    training step it feeds its model a randomly transformed batch: one transformation per
    step, drawn from ``generator`` (``sample``) apart from applying it (``apply``), like
    every :class:`~harmonycloak.perturb.protocols.Channel`. Built from
    :mod:`harmonycloak.perturb.channels`, the transformations the protection engine
    optimizes through, so attacker and defender see the same channel family:

    * a real codec round trip (:class:`~harmonycloak.perturb.channels.StraightThroughCodec`)
      drawn from ``codec_choices`` (codecs this rate cannot use are left out);
    * a resampling round trip via one of ``resample_hz_choices``
      (:class:`~harmonycloak.perturb.channels.Resample`, differentiable windowed sinc;
      rates at or above the file's are left out);
    * a zero-phase low-pass with cutoff log-uniform in ``lowpass_hz``
      (:class:`~harmonycloak.perturb.channels.Lowpass`), capped at 0.45 of the rate.

    The three families get equal probability, split evenly inside each family; with
    ``identity_weight`` > 0 the unchanged batch is drawn with that weight relative to one
    family. ``sample(generator)`` returns the params dict of
    :class:`~harmonycloak.perturb.channels.Expectation` (member index, name, its params);
    ``apply(x, params)`` takes ``[batch, channels, samples]`` at ``sample_rate_hz`` and
    returns the same shape. ``differentiable`` is False because the real codecs pass the
    identity as gradient (the attacker does not need gradients through it).
    """

    sample_rate_hz: int
    codec_choices: tuple[tuple[str, float], ...] = (("mp3", 64.0), ("mp3", 128.0),
                                                    ("aac", 64.0), ("opus", 32.0))
    resample_hz_choices: tuple[int, ...] = (16000, 22050, 32000)
    lowpass_hz: tuple[float, float] = (4000.0, 16000.0)
    identity_weight: float = 0.0
    _mixture: Any = field(init=False, repr=False, compare=False)

    name: ClassVar[str] = "augmentation"

    def __post_init__(self) -> None:
        from harmonycloak.perturb import channels

        rate = int(self.sample_rate_hz)
        if not 8000 <= rate <= 192000:
            raise InputError(f"AugmentationPolicy: sample rate {self.sample_rate_hz!r}; give a "
                             "whole number of Hz from 8000 to 192000")
        families: list[list[Any]] = []
        coders = []
        for codec, kbps in self.codec_choices:
            try:
                coders.append(channels.StraightThroughCodec(codec, kbps, sample_rate_hz=rate))
            except InputError:
                continue  # this codec cannot take this rate at this bitrate
        families.append(coders)
        families.append([channels.Resample(sample_rate_hz=rate, via_hz_choices=(via,))
                         for via in self.resample_hz_choices if via < rate])
        low, high = self.lowpass_hz
        high = min(float(high), 0.45 * rate)
        if low < high:
            families.append([channels.Lowpass(sample_rate_hz=rate, min_cutoff_hz=low,
                                              max_cutoff_hz=high)])
        members: list[Any] = []
        weights: list[float] = []
        for family in families:
            for member in family:
                members.append(member)
                weights.append(1.0 / len(family))
        if self.identity_weight > 0 or not members:
            members.append(channels.Identity())
            weights.append(float(self.identity_weight) if members[:-1] else 1.0)
        object.__setattr__(self, "_mixture", channels.Expectation(tuple(members), tuple(weights)))

    @property
    def differentiable(self) -> bool:
        return bool(self._mixture.differentiable)

    @property
    def members(self) -> tuple[Any, ...]:
        """The transformations it draws from (channel objects), in order."""
        return tuple(self._mixture.channels)

    def sample(self, generator: Any) -> dict[str, Any]:
        """Draw one transformation and its parameters (JSON-ready dict)."""
        return self._mixture.sample(generator)

    def apply(self, x: Any, params: dict[str, Any]) -> Any:
        """Apply drawn ``params`` to ``x`` ``[batch, channels, samples]``; same shape back."""
        return self._mixture.apply(x, params)


# ---------------------------------------------------------------------------------------
# Survival of the protection effect
# ---------------------------------------------------------------------------------------


def survival(gap_before: float, gap_after: float) -> float:
    """Share of the protection effect that survives an attack: ``gap_after / gap_before``.

    A *gap* is how much worse the attacker does with protected data than with clean data
    on one metric, signed so that positive means protection works (e.g. FAD of the
    protected-trained model minus FAD of the clean-trained one, or a loss ratio minus 1).
    ``gap_before`` is measured without the attack, ``gap_after`` with the attack applied to
    the protected training data (and, for a fair comparison, to the clean data too).

    1.0: the attack removes nothing; 0.0: protection is gone; values are not clipped, so
    below 0 means the attack turned the effect around and above 1 that it made protection
    stronger. Edge cases: NaN when either gap is not finite, or when ``gap_before`` is not
    positive (<= 1e-12: there was no protection effect whose share could survive).
    """
    before, after = float(gap_before), float(gap_after)
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 1e-12:
        return float("nan")
    return after / before
