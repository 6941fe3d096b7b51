"""A differentiable log-mel front end in PyTorch, with our own mel filterbank.

The audio targets that model spectrograms (latent diffusion on mels: MusicLDM, AudioLDM,
Riffusion; vocoders; CLAP's audio branch) all start from the same chain:

    waveform ─▶ STFT (Hann, centred frames) ─▶ |X|^power ─▶ mel filterbank ─▶ log

This module builds that chain from ``torch.stft`` and a filterbank computed here (no
torchaudio), differentiable in the waveform, and inverts it approximately (pseudo-inverse
of the filterbank, then Griffin-Lim) for listening to generated mels.

Defaults are MusicLDM's / AudioLDM's front end (Chen et al. 2023, "MusicLDM: Enhancing
novelty in text-to-music generation using beat-synchronous mixup strategies", section 4.1;
Liu et al. 2023, AudioLDM, whose STFT settings MusicLDM keeps): 16 kHz, 1024-point FFT
and window, hop 160 samples (10 ms), 64 Slaney mel bands from 0 to 8 kHz, magnitude
(power 1), natural log with a floor of 1e-5.

Mel scales (:func:`hz_to_mel`):

- ``"htk"``: ``mel = 2595 log10(1 + f / 700)`` (O'Shaughnessy 1987, as HTK uses it);
- ``"slaney"``: linear below 1 kHz (``mel = 3 f / 200``), logarithmic above
  (``mel = 15 + 27 ln(f / 1000) / ln 6.4``), Slaney's Auditory Toolbox; librosa's default.

Filterbank (:func:`mel_filterbank`): ``n_mels`` triangles whose corner frequencies are
``n_mels + 2`` points evenly spaced on the mel scale from ``f_min_hz`` to ``f_max_hz``;
band ``m`` rises from corner ``m`` to a peak of 1 at corner ``m + 1`` (its centre) and
falls to 0 at corner ``m + 2``, evaluated at the FFT bin frequencies
``k · sample_rate_hz / n_fft``. With ``norm=None`` the rows peak at 1 and, between the
first and last centre frequency, the columns sum to exactly 1 (neighbouring triangles
cross-fade). With ``norm="slaney"`` row ``m`` is scaled by ``2 / (f_{m+2} - f_m)`` so that
each triangle has unit area in Hz (``Σ_k w[m, k] · Δf ≈ 1``), which keeps the energy per
band roughly constant across bands for white noise. Same convention and numbers as
``librosa.filters.mel`` (cross-checked in the tests).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn

from harmonycloak.errors import InputError

__all__ = ["MelConfig", "MelFrontEnd", "MelScale", "MelNorm", "hz_to_mel", "mel_to_hz",
           "mel_filterbank", "mel_band_centers_hz"]

MelScale = Literal["slaney", "htk"]
MelNorm = Literal["slaney"] | None

_SLANEY_BREAK_HZ = 1000.0
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


# ------------------------------------------------------------------------ mel scales


def hz_to_mel(frequency_hz: Tensor | float, *, scale: MelScale = "slaney") -> Tensor:
    """Frequency in Hz → mel (tensor of the same shape, float64 for float input).

    See the module docstring for both scales; 1000 Hz is 15 mel (Slaney) or 999.99 mel (HTK).
    """
    f = torch.as_tensor(frequency_hz, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise InputError(f"mel scale {scale!r} is not known; use 'slaney' or 'htk'")
    linear = f / _SLANEY_HZ_PER_MEL
    log_part = (_SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
                + torch.log(f.clamp_min(_SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP)
    return torch.where(f >= _SLANEY_BREAK_HZ, log_part, linear)


def mel_to_hz(mel: Tensor | float, *, scale: MelScale = "slaney") -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    m = torch.as_tensor(mel, dtype=torch.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise InputError(f"mel scale {scale!r} is not known; use 'slaney' or 'htk'")
    break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    linear = m * _SLANEY_HZ_PER_MEL
    log_part = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (m.clamp_min(break_mel)
                                                                 - break_mel))
    return torch.where(m >= break_mel, log_part, linear)


def _corners_hz(n_mels: int, f_min_hz: float, f_max_hz: float, scale: MelScale) -> Tensor:
    """The ``n_mels + 2`` triangle corners in Hz, evenly spaced in mel (float64)."""
    lo, hi = hz_to_mel(f_min_hz, scale=scale), hz_to_mel(f_max_hz, scale=scale)
    return mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64),
                     scale=scale)


def mel_band_centers_hz(*, n_mels: int, f_min_hz: float, f_max_hz: float,
                        scale: MelScale = "slaney") -> Tensor:
    """Peak frequency of each band of :func:`mel_filterbank`, ``[n_mels]`` float64 Hz."""
    return _corners_hz(n_mels, f_min_hz, f_max_hz, scale)[1:-1]


def mel_filterbank(*, sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float = 0.0,
                   f_max_hz: float | None = None, scale: MelScale = "slaney",
                   norm: MelNorm = "slaney") -> Tensor:
    """Triangular mel filterbank, float32 ``[n_mels, n_fft // 2 + 1]`` (rows: bands).

    Multiply a magnitude or power spectrum ``[..., n_fft // 2 + 1, frames]`` from the left
    to get mel energies. ``f_max_hz`` None means Nyquist. Row shapes and sums: see the
    module docstring (``norm=None``: peaks 1, columns sum to 1 between the first and last
    centre; ``"slaney"``: unit area in Hz per row). A band narrower than the FFT bin
    spacing can come out all zero (too many mels for ``n_fft``); that is not an error, as
    in librosa, but the front end below refuses such a configuration.
    """
    _check_filterbank_args(sample_rate_hz, n_fft, n_mels, f_min_hz, f_max_hz)
    f_max = sample_rate_hz / 2.0 if f_max_hz is None else float(f_max_hz)
    bins_hz = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate_hz / n_fft
    corners = _corners_hz(n_mels, float(f_min_hz), f_max, scale)
    widths = corners.diff()                                          # [n_mels + 1]
    offsets = corners[:, None] - bins_hz[None, :]                    # [n_mels + 2, bins]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (corners[2:] - corners[:-2]))[:, None]
    elif norm is not None:
        raise InputError(f"mel filterbank norm {norm!r} is not known; use 'slaney' or None")
    return weights.to(torch.float32)


def _check_filterbank_args(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float,
                           f_max_hz: float | None) -> None:
    if not (isinstance(sample_rate_hz, int) and sample_rate_hz > 0):
        raise InputError(f"mel: sample_rate_hz={sample_rate_hz!r}; use a positive integer "
                         "rate in Hz, e.g. 16000")
    if not (isinstance(n_fft, int) and n_fft >= 2):
        raise InputError(f"mel: n_fft={n_fft!r}; use an integer of at least 2 (e.g. 1024)")
    if not (isinstance(n_mels, int) and n_mels >= 1):
        raise InputError(f"mel: n_mels={n_mels!r}; use a positive integer (e.g. 64)")
    f_max = sample_rate_hz / 2.0 if f_max_hz is None else f_max_hz
    if not 0.0 <= f_min_hz < f_max <= sample_rate_hz / 2.0:
        raise InputError(f"mel: f_min_hz={f_min_hz}, f_max_hz={f_max_hz}: need "
                         f"0 <= f_min_hz < f_max_hz <= {sample_rate_hz / 2:g} (Nyquist)")


# ------------------------------------------------------------------------ front end


@dataclass(frozen=True)
class MelConfig:
    """One log-mel front end. Defaults: MusicLDM / AudioLDM (see the module docstring).

    ``hop`` and ``n_fft`` (also the Hann window length) are in samples at
    ``sample_rate_hz``; ``power`` 1 takes magnitudes, 2 power; the log is natural,
    ``log(mel + log_floor)``.
    """

    sample_rate_hz: int = 16000
    n_fft: int = 1024
    hop: int = 160
    n_mels: int = 64
    f_min_hz: float = 0.0
    f_max_hz: float | None = 8000.0
    scale: MelScale = "slaney"
    norm: MelNorm = "slaney"
    power: float = 1.0
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        _check_filterbank_args(self.sample_rate_hz, self.n_fft, self.n_mels, self.f_min_hz,
                               self.f_max_hz)
        if not (isinstance(self.hop, int) and 1 <= self.hop <= self.n_fft):
            raise InputError(f"mel: hop={self.hop!r} samples; use an integer in 1..n_fft "
                             f"({self.n_fft})")
        if self.scale not in ("slaney", "htk"):
            raise InputError(f"mel: scale={self.scale!r}; use 'slaney' or 'htk'")
        if self.norm not in ("slaney", None):
            raise InputError(f"mel: norm={self.norm!r}; use 'slaney' or None")
        if not self.power > 0:
            raise InputError(f"mel: power={self.power!r}; use 1 (magnitude) or 2 (power)")
        if not self.log_floor > 0:
            raise InputError(f"mel: log_floor={self.log_floor!r}; use a small positive "
                             "number such as 1e-5")
        # A triangle narrower than the bin spacing can fall between bins: empty forever.
        fb = mel_filterbank(sample_rate_hz=self.sample_rate_hz, n_fft=self.n_fft,
                            n_mels=self.n_mels, f_min_hz=self.f_min_hz, f_max_hz=self.f_max,
                            scale=self.scale, norm=None)
        empty = int((fb.sum(dim=1) == 0).sum())
        if empty:
            raise InputError(f"mel: {empty} of n_mels={self.n_mels} bands are empty at "
                             f"n_fft={self.n_fft}; use fewer mels or a longer FFT")

    @property
    def f_max(self) -> float:
        """Upper edge in Hz (Nyquist when ``f_max_hz`` is None)."""
        return self.sample_rate_hz / 2.0 if self.f_max_hz is None else float(self.f_max_hz)

    @property
    def bins(self) -> int:
        """FFT bins ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames of a ``num_samples`` signal (centred frames: ``1 + num_samples // hop``)."""
        return 1 + int(num_samples) // self.hop

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelConfig:
        """Inverse of :meth:`to_dict`; unknown keys fail with InputError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"MelConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**data)


class MelFrontEnd(nn.Module):
    """Waveform ``[..., samples]`` at ``sample_rate_hz`` → log-mel ``[..., n_mels, frames]``.

    ``frames = 1 + samples // hop``: frame ``k`` is centred on sample ``k · hop`` and the
    signal is reflect-padded by ``n_fft // 2`` at both ends (``torch.stft(center=True)``),
    so a signal must be longer than ``n_fft // 2`` samples. Differentiable in the waveform
    everywhere: magnitudes are ``sqrt(re² + im² + 1e-20)`` and the log is
    ``log(mel + log_floor)`` rather than MusicLDM's ``log(clamp(mel, min=log_floor))``;
    the two agree to within ``log 2`` at the floor and to 1 % of a nat once the mel energy
    is 100 times the floor, and ours never has a zero gradient.

    The window and filterbank are non-persistent buffers (rebuilt from the config, never
    saved). Options as :class:`MelConfig`; ``MelFrontEnd.from_config(config)`` also works.
    """

    def __init__(self, sample_rate_hz: int = 16000, *, n_fft: int = 1024, hop: int = 160,
                 n_mels: int = 64, f_min_hz: float = 0.0, f_max_hz: float | None = 8000.0,
                 scale: MelScale = "slaney", norm: MelNorm = "slaney", power: float = 1.0,
                 log_floor: float = 1e-5) -> None:
        super().__init__()
        self.config = MelConfig(sample_rate_hz=sample_rate_hz, n_fft=n_fft, hop=hop,
                                n_mels=n_mels, f_min_hz=f_min_hz, f_max_hz=f_max_hz,
                                scale=scale, norm=norm, power=power, log_floor=log_floor)
        c = self.config
        self.register_buffer("window", torch.hann_window(c.n_fft, periodic=True),
                             persistent=False)
        self.register_buffer("filterbank", mel_filterbank(
            sample_rate_hz=c.sample_rate_hz, n_fft=c.n_fft, n_mels=c.n_mels,
            f_min_hz=c.f_min_hz, f_max_hz=c.f_max, scale=c.scale, norm=c.norm),
            persistent=False)

    @classmethod
    def from_config(cls, config: MelConfig) -> MelFrontEnd:
        return cls(**config.to_dict())

    @property
    def sample_rate_hz(self) -> int:
        return self.config.sample_rate_hz

    def num_frames(self, num_samples: int) -> int:
        """``1 + num_samples // hop``."""
        return self.config.num_frames(num_samples)

    def stft(self, x: Tensor) -> Tensor:
        """Complex STFT ``[..., n_fft // 2 + 1, frames]`` of ``x [..., samples]``."""
        c = self.config
        if x.shape[-1] <= c.n_fft // 2:
            raise InputError(f"mel: a signal of {x.shape[-1]} samples is too short for "
                             f"n_fft={c.n_fft} centred frames; pad it to more than "
                             f"{c.n_fft // 2} samples")
        lead = x.shape[:-1]
        spec = torch.stft(x.reshape(-1, x.shape[-1]), c.n_fft, hop_length=c.hop,
                          window=self.window.to(dtype=x.dtype), center=True,
                          pad_mode="reflect", return_complex=True)
        return spec.reshape(*lead, *spec.shape[-2:])

    def spectrogram(self, x: Tensor) -> Tensor:
        """``|STFT|^power`` ``[..., bins, frames]``, differentiable (smoothed at 0)."""
        spec = torch.view_as_real(self.stft(x))
        energy = spec.square().sum(-1) + 1e-20     # |X| stays > 0: no 0/0 in the gradient
        return energy.sqrt() if self.config.power == 1.0 else energy.pow(self.config.power / 2)

    def mel(self, x: Tensor) -> Tensor:
        """Linear mel energies ``[..., n_mels, frames]``."""
        return torch.matmul(self.filterbank.to(dtype=x.dtype), self.spectrogram(x))

    def forward(self, x: Tensor) -> Tensor:
        """Log-mel ``log(mel + log_floor)`` ``[..., n_mels, frames]`` (natural log)."""
        return torch.log(self.mel(x) + self.config.log_floor)

    @property
    def silence_value(self) -> float:
        """The log-mel of digital silence, ``log(log_floor)`` (about -11.5 for 1e-5)."""
        return math.log(self.config.log_floor)

    def griffin_lim(self, log_mel: Tensor, *, iterations: int = 32, momentum: float = 0.99,
                    generator: torch.Generator | None = None,
                    length: int | None = None) -> Tensor:
        """Approximate waveform ``[..., length]`` for a log-mel ``[..., n_mels, frames]``.

        ``length`` defaults to ``(frames - 1) · hop`` samples (the shortest signal with
        that many frames); anything up to ``frames · hop - 1`` keeps the same frames.

        Mel energies → linear spectrum by the filterbank's pseudo-inverse (negative values
        set to 0), then fast Griffin-Lim (Perraudin, Balazs and Søndergaard 2013; momentum
        0.99 as librosa) from random phases drawn from ``generator`` (seed 0 if None).
        Cost: ``iterations`` STFT/iSTFT pairs, about 1 s for 10 s of 16 kHz audio at 32
        iterations on one CPU thread. Quality is a rough preview, not a vocoder.
        """
        c = self.config
        if iterations < 1:
            raise InputError(f"griffin_lim: iterations={iterations}; use 1 or more")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            mel = (log_mel.to(torch.float32).exp() - c.log_floor).clamp_min(0.0)
            fb = self.filterbank.to(device=mel.device)
            inverse = torch.linalg.pinv(fb.double()).to(mel.dtype)        # [bins, n_mels]
            magnitude = torch.matmul(inverse, mel).clamp_min(0.0)
            if c.power != 1.0:
                magnitude = magnitude.pow(1.0 / c.power)
            lead, frames = magnitude.shape[:-2], magnitude.shape[-1]
            magnitude = magnitude.reshape(-1, c.bins, frames)
            length = (frames - 1) * c.hop if length is None else int(length)
            if not 0 < length < frames * c.hop:
                raise InputError(f"griffin_lim: length={length} samples does not have "
                                 f"{frames} frames; use 1..{frames * c.hop - 1}")
            if magnitude.shape[0] == 0:
                return log_mel.new_zeros((*lead, length))
            phase = torch.rand(magnitude.shape, generator=gen, device=gen.device)
            angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase.to(mel.device))
            window = self.window.to(mel.device)
            previous = torch.zeros_like(angles)
            for _ in range(iterations):
                wave = torch.istft(magnitude * angles, c.n_fft, hop_length=c.hop,
                                   window=window, center=True, length=length)
                # Zero padding (not reflect) so any length works; iSTFT ignores the pad.
                rebuilt = torch.stft(wave, c.n_fft, hop_length=c.hop, window=window,
                                     center=True, pad_mode="constant", return_complex=True)
                accelerated = rebuilt - (momentum / (1 + momentum)) * previous
                angles = accelerated / accelerated.abs().clamp_min(1e-16)
                previous = rebuilt
            wave = torch.istft(magnitude * angles, c.n_fft, hop_length=c.hop, window=window,
                               center=True, length=length)
        return wave.reshape(*lead, length)
