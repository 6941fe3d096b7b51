"""The embedding-shift threat model, and a small contrastive music encoder to run it with.

Latent diffusion models for music (MusicLDM) are conditioned on CLAP audio embeddings:
during training they learn the pair (x, e = E(x)). The defence of seed 003 ("Music
Unlearnable for MusicLDM") perturbs the audio so that the encoder's embedding moves,
``x' = x + δ`` with ``e' = E(x')`` far from ``e``, and the model learns the wrong pair
(x', e'). Its objective is ``max_δ ‖E(x + δ) − E(x)‖₂`` under a perceptual budget; its
evaluation targets are a similarity below 0.3 and a shift ``Δe`` above 0.5.

:class:`EmbeddingShiftTarget` puts that objective behind the engine's ``Target`` protocol.
The engine *minimizes* ``loss``, so the loss is the cosine similarity between ``E(x)`` and
the clean reference embedding (stored once by :meth:`~EmbeddingShiftTarget.set_reference`):
minimizing it pushes the embedding away in direction, which, unlike the raw L2 distance,
cannot be met by merely scaling an unnormalized embedding. The encoder is fixed (the
threat model trains the diffusion model, never the encoder), so ``train_step`` is a no-op.

Encoders (the :class:`AudioEncoder` protocol):

- :class:`harmonycloak.targets.clap.ClapEncoder`: LAION-CLAP's audio tower from a local
  ``transformers`` checkpoint, with a differentiable front end (see that module);
- :class:`ContrastiveMusicEncoder`: a small convolutional encoder on log-mel spectrograms
  trained SimCLR-style (NT-Xent, Chen et al. 2020, "A Simple Framework for Contrastive
  Learning of Visual Representations") on the user's own music, for people with no CLAP
  weights: two augmented random crops of the same clip are a positive pair, crops of the
  other clips in the batch are negatives (:func:`train_contrastive`).

Also here, because both encoders need it: :func:`mel_filterbank`, the triangular mel
filters of ``transformers.audio_utils.mel_filter_bank`` (HTK or Slaney scale, optional
Slaney area normalization), computed in float64 torch.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.clip import AudioClip
from harmonycloak.config import resolve_device
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.io.files import atomic_write
from harmonycloak.perturb.dsp import resample
from harmonycloak.targets import checkpoint
from harmonycloak.targets.checkpoint import CONFIG_FILE, SAFETENSORS_FILE

__all__ = [
    "AudioEncoder",
    "AugmentConfig",
    "ContrastiveEncoderConfig",
    "ContrastiveMusicEncoder",
    "EmbeddingShiftTarget",
    "embedding_view",
    "LogMel",
    "Pooling",
    "SEED_SHIFT_TARGET",
    "SEED_SIMILARITY_TARGET",
    "apply_augmentations",
    "embedding_shift",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "nt_xent_loss",
    "power_spectrogram",
    "sample_augmentations",
    "train_contrastive",
    "window_starts",
]

SEED_SIMILARITY_TARGET = 0.3
"""Seed 003's evaluation target: cosine similarity of protected vs clean embedding below this."""
SEED_SHIFT_TARGET = 0.5
"""Seed 003's evaluation target: embedding shift ``Δe`` above this."""

Pooling = Literal["windows", "mean"]
MelScale = Literal["htk", "slaney"]

_TARGET_FORMAT = "harmonycloak.embedding_shift"
_ENCODER_FORMAT = "harmonycloak.contrastive_encoder"
_FORMAT_VERSION = 1
_ENCODER_DIR = "encoder"
_ENCODER_CLASSES = {
    "contrastive": ("harmonycloak.targets.embedding", "ContrastiveMusicEncoder"),
    "clap": ("harmonycloak.targets.clap", "ClapEncoder"),
}
_DB_FLOOR = -100.0


# ------------------------------------------------------------------------ mel filters


def hz_to_mel(freq_hz: Tensor, *, mel_scale: MelScale = "htk") -> Tensor:
    """Hz → mel: HTK ``2595·log10(1 + f/700)``, or Slaney (linear below 1 kHz, log above).

    Same formulas as ``transformers.audio_utils.hertz_to_mel`` (librosa's for Slaney).
    """
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq_hz / 700.0)
    logstep = 27.0 / math.log(6.4)
    linear = 3.0 * freq_hz / 200.0
    log = 15.0 + torch.log(freq_hz.clamp_min(1e-10) / 1000.0) * logstep
    return torch.where(freq_hz >= 1000.0, log, linear)


def mel_to_hz(mels: Tensor, *, mel_scale: MelScale = "htk") -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    if mel_scale == "htk":
        return 700.0 * (torch.pow(10.0, mels / 2595.0) - 1.0)
    logstep = math.log(6.4) / 27.0
    linear = 200.0 * mels / 3.0
    log = 1000.0 * torch.exp(logstep * (mels - 15.0))
    return torch.where(mels >= 15.0, log, linear)


def mel_filterbank(*, num_frequency_bins: int, num_mels: int, min_hz: float, max_hz: float,
                   sample_rate_hz: int, mel_scale: MelScale = "htk",
                   norm: Literal["slaney"] | None = None) -> Tensor:
    """Triangular mel filters, float64 ``[num_frequency_bins, num_mels]``.

    ``num_mels + 2`` points evenly spaced on the mel scale between ``min_hz`` and
    ``max_hz`` give the edges and centres; filter ``m`` rises linearly (in Hz) from point
    ``m`` to 1 at point ``m + 1`` and falls to 0 at point ``m + 2``. The FFT bins sit at
    ``linspace(0, sample_rate_hz // 2, num_frequency_bins)`` Hz. ``norm="slaney"`` divides
    each filter by half its width in Hz (constant energy per band). Source:
    ``transformers.audio_utils.mel_filter_bank`` (itself after torchaudio and librosa),
    which ``ClapFeatureExtractor`` uses: HTK without norm for its "fusion" mode, Slaney
    with norm otherwise.
    """
    if num_frequency_bins < 2 or num_mels < 1:
        raise InputError(f"mel_filterbank: {num_frequency_bins} frequency bins and {num_mels} "
                         "mels; use at least 2 bins and 1 mel")
    if not 0 <= min_hz < max_hz:
        raise InputError(f"mel_filterbank: band {min_hz}–{max_hz} Hz; use 0 <= min_hz < max_hz")
    if mel_scale not in ("htk", "slaney") or norm not in (None, "slaney"):
        raise InputError(f"mel_filterbank: mel_scale={mel_scale!r}, norm={norm!r}; use mel_scale "
                         "'htk' or 'slaney' and norm None or 'slaney'")
    f64 = torch.float64
    edges = torch.tensor([float(min_hz), float(max_hz)], dtype=f64)
    mel_lo, mel_hi = hz_to_mel(edges, mel_scale=mel_scale).tolist()
    points_hz = mel_to_hz(torch.from_numpy(np.linspace(mel_lo, mel_hi, num_mels + 2)),
                          mel_scale=mel_scale)
    fft_hz = torch.from_numpy(np.linspace(0, sample_rate_hz // 2, num_frequency_bins))
    widths = points_hz[1:] - points_hz[:-1]
    slopes = points_hz[None, :] - fft_hz[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (points_hz[2:] - points_hz[:-2]))[None, :]
    return filters


def power_spectrogram(x: Tensor, *, fft_samples: int, hop_samples: int, window: Tensor) -> Tensor:
    """|STFT|² ``[n, fft_samples // 2 + 1, frames]`` of ``x [n, samples]``.

    Centred frames (reflect padding of ``fft_samples // 2`` each side), so frame ``t``
    is centred on sample ``t·hop_samples`` and there are ``1 + samples // hop_samples``
    frames. Computed in ``x``'s dtype; differentiable (no square root, so no NaN gradient
    at silent bins).
    """
    spec = torch.stft(x, fft_samples, hop_length=hop_samples, win_length=fft_samples,
                      window=window.to(device=x.device, dtype=x.dtype), center=True,
                      pad_mode="reflect", return_complex=True)
    return torch.view_as_real(spec).square().sum(-1)


class LogMel(nn.Module):
    """Log-mel spectrogram in dB re a full-scale sine: ``[n, samples] → [n, mels, frames]``.

    Hann window of ``fft_samples``, hop ``hop_samples``, HTK mel filters (no area norm)
    between ``min_hz`` and ``max_hz``. The power is divided by that of a full-scale sine
    centred on a bin (``(Σ window / 2)²``), so a 0 dBFS tone reads about 0 dB in its band;
    values are floored at −100 dB. Differentiable in the waveform.
    """

    def __init__(self, *, sample_rate_hz: int, fft_samples: int, hop_samples: int, num_mels: int,
                 min_hz: float, max_hz: float) -> None:
        super().__init__()
        self.fft_samples, self.hop_samples = fft_samples, hop_samples
        window = torch.hann_window(fft_samples, periodic=True, dtype=torch.float64)
        filters = mel_filterbank(num_frequency_bins=fft_samples // 2 + 1, num_mels=num_mels,
                                 min_hz=min_hz, max_hz=max_hz, sample_rate_hz=sample_rate_hz)
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("filters", filters.float(), persistent=False)
        self.reference_power = float((window.sum() / 2) ** 2)

    def forward(self, x: Tensor) -> Tensor:
        power = power_spectrogram(x, fft_samples=self.fft_samples, hop_samples=self.hop_samples,
                                  window=self.window)
        mel = torch.einsum("nbt,bm->nmt", power, self.filters.to(power.dtype))
        floor = 10.0 ** (_DB_FLOOR / 10.0)
        return 10.0 * torch.log10((mel / self.reference_power).clamp_min(floor))


# ------------------------------------------------------------------------ encoders


@runtime_checkable
class AudioEncoder(Protocol):
    """A fixed audio encoder E for the embedding-shift target (an ``nn.Module``).

    ``embed(x)`` maps mono waveforms ``[n, samples]`` at ``sample_rate_hz`` (float, in
    [-1, 1]) to embeddings ``[n, embedding_dim]``, differentiably in ``x``; randomness the
    encoder needs (CLAP's random crops of over-long inputs) comes from ``generator``.
    ``window_samples`` is the input length the encoder was trained on (10 s for CLAP).
    ``kind`` names the class for :meth:`EmbeddingShiftTarget.load`.
    """

    kind: str
    sample_rate_hz: int
    window_samples: int
    embedding_dim: int

    def embed(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor: ...

    def save(self, directory: str | os.PathLike[str]) -> Path: ...

    def num_parameters(self) -> int: ...


@dataclass(frozen=True)
class ContrastiveEncoderConfig:
    """Architecture and front end of :class:`ContrastiveMusicEncoder`.

    Front end: mono audio at ``sample_rate_hz``, Hann STFT of ``fft_samples`` every
    ``hop_samples`` (64 ms / 20 ms at 16 kHz), ``num_mels`` HTK mel bands between
    ``min_hz`` and ``max_hz``, dB (see :class:`LogMel`). Body: one 3x3 conv block per entry
    of ``widths`` (conv, GroupNorm over the whole map, ReLU, 2x2 average pooling after all
    but the last); the remaining mel bands are kept apart (pitch matters for music: a
    mean over frequency would make transposed pieces look alike) and each (channel, band)
    is pooled by mean and max over time; a linear layer gives the ``hidden_dim``
    representation. Projection (as CLAP's audio projection): ReLU, then a two-layer MLP
    ``hidden_dim → hidden_dim → embedding_dim``, the embedding E on which NT-Xent measures
    cosines at ``temperature``. ``window_s``: the length the target embeds at a time. The
    default has 527,648 parameters; :meth:`tiny` 10,024.
    """

    sample_rate_hz: int = 16_000
    fft_samples: int = 1024
    hop_samples: int = 320
    num_mels: int = 64
    min_hz: float = 30.0
    max_hz: float = 8000.0
    widths: tuple[int, ...] = (32, 64, 128, 128)
    hidden_dim: int = 128
    embedding_dim: int = 64
    temperature: float = 0.1
    window_s: float = 10.0

    @classmethod
    def tiny(cls) -> ContrastiveEncoderConfig:
        """A couple of thousand parameters: for tests, still every layer."""
        return cls(fft_samples=512, hop_samples=256, num_mels=32, widths=(8, 16),
                   hidden_dim=16, embedding_dim=16, window_s=2.0)

    @property
    def window_samples(self) -> int:
        """``window_s`` in samples at ``sample_rate_hz``."""
        return int(round(self.window_s * self.sample_rate_hz))

    def validate(self) -> None:
        """Raise InputError on a value that cannot build the encoder."""
        ints = ("sample_rate_hz", "fft_samples", "hop_samples", "num_mels", "hidden_dim",
                "embedding_dim")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"ContrastiveEncoderConfig.{name}={value!r}: must be a positive "
                                 "integer")
        if not self.widths or not all(isinstance(w, int) and w >= 1 for w in self.widths):
            raise InputError(f"ContrastiveEncoderConfig.widths={self.widths!r}: give one or more "
                             "positive integers")
        if not 0 <= self.min_hz < self.max_hz <= self.sample_rate_hz / 2:
            raise InputError(f"ContrastiveEncoderConfig: band {self.min_hz}–{self.max_hz} Hz; "
                             f"use 0 <= min_hz < max_hz <= {self.sample_rate_hz / 2} (Nyquist)")
        if not (self.temperature > 0 and self.window_s > 0):
            raise InputError(f"ContrastiveEncoderConfig: temperature={self.temperature}, "
                             f"window_s={self.window_s}; both must be positive")
        if self.window_samples < self.fft_samples:
            raise InputError(f"ContrastiveEncoderConfig.window_s={self.window_s}: shorter than "
                             f"one FFT frame ({self.fft_samples} samples); use a longer window")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContrastiveEncoderConfig:
        """Inverse of :func:`dataclasses.asdict` (lists back to tuples); unknown keys fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"ContrastiveEncoderConfig: unknown fields {unknown}; known: "
                             f"{sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class AugmentConfig:
    """The views of contrastive training (each drawn independently per crop).

    Gain uniform in ±``gain_db``. EQ: a spectral tilt uniform in ±``tilt_db_per_octave``
    pivoting at 1 kHz, plus one bell (Gaussian over log-frequency, one octave standard
    deviation) of gain uniform in ±``bell_gain_db`` at a log-uniform centre in
    ``bell_min_hz``–``bell_max_hz`` (capped at 0.45 of the sample rate). Then white noise
    at an SNR uniform in ``snr_db`` (relative to the equalized crop).
    """

    gain_db: float = 6.0
    tilt_db_per_octave: float = 3.0
    bell_gain_db: float = 6.0
    bell_min_hz: float = 100.0
    bell_max_hz: float = 6000.0
    snr_db: tuple[float, float] = (20.0, 40.0)


def sample_augmentations(n: int, num_samples: int, *, generator: torch.Generator,
                         config: AugmentConfig = AugmentConfig(),
                         sample_rate_hz: int) -> dict[str, Tensor]:
    """Draw the parameters of ``n`` views of ``num_samples`` samples (CPU tensors).

    Returns ``gain_db``, ``tilt_db_per_octave``, ``bell_hz``, ``bell_gain_db``, ``snr_db``
    (each ``[n]``) and ``noise`` (standard normal ``[n, num_samples]``). Apply them with
    :func:`apply_augmentations`.
    """
    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    top = min(config.bell_max_hz, 0.45 * sample_rate_hz)
    low = min(config.bell_min_hz, top)
    return {
        "gain_db": uniform(-config.gain_db, config.gain_db),
        "tilt_db_per_octave": uniform(-config.tilt_db_per_octave, config.tilt_db_per_octave),
        "bell_hz": torch.exp(uniform(math.log(low), math.log(top))),
        "bell_gain_db": uniform(-config.bell_gain_db, config.bell_gain_db),
        "snr_db": uniform(*config.snr_db),
        "noise": torch.randn(n, num_samples, generator=generator),
    }


def apply_augmentations(x: Tensor, params: dict[str, Tensor], *, sample_rate_hz: int) -> Tensor:
    """Equalize, scale and add noise to ``x [n, samples]`` with drawn ``params``.

    The EQ is a zero-phase filter applied in the FFT domain (its response is smooth, so
    the circular wrap at the crop edges is negligible). Returns a new tensor.
    """
    n, num_samples = x.shape
    dev, dtype = x.device, x.dtype
    p = {k: v.to(device=dev, dtype=dtype) for k, v in params.items()}
    freq_hz = torch.fft.rfftfreq(num_samples, 1.0 / sample_rate_hz, device=dev).to(dtype)
    freq_hz = freq_hz.clamp_min(20.0)
    octaves = torch.log2(freq_hz / 1000.0)[None, :]
    from_bell = torch.log2(freq_hz[None, :] / p["bell_hz"][:, None])
    eq_db = (p["tilt_db_per_octave"][:, None] * octaves
             + p["bell_gain_db"][:, None] * torch.exp(-0.5 * from_bell ** 2))
    y = torch.fft.irfft(torch.fft.rfft(x) * 10.0 ** (eq_db / 20.0), n=num_samples)
    y = y * 10.0 ** (p["gain_db"][:, None] / 20.0)
    power = y.square().mean(dim=1, keepdim=True)
    noise_rms = torch.sqrt(power / 10.0 ** (p["snr_db"][:, None] / 10.0))
    return y + noise_rms * p["noise"][:, :num_samples]


def nt_xent_loss(z1: Tensor, z2: Tensor, *, temperature: float) -> Tensor:
    """NT-Xent (SimCLR eq. 1): mean over the ``2n`` views of ``[n, d]`` pairs.

    Each view's positive is its partner; the other ``2n − 2`` views are negatives;
    similarities are cosines divided by ``temperature``. For orthonormal pairs with
    ``z1 == z2`` it is ``−log(e^{1/τ} / (e^{1/τ} + 2n − 2))``.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class ContrastiveMusicEncoder(nn.Module):
    """A small conv encoder on log-mel, trained contrastively on the user's own music.

    ``embed(x [n, samples]) → [n, embedding_dim]`` (mono at ``config.sample_rate_hz``; any
    length of at least one FFT frame: the body is convolutional and pools over time).
    Weights are seeded by ``seed`` without touching the global RNG. No batch-dependent
    layer: an example's embedding does not depend on its batch.
    """

    kind = "contrastive"

    def __init__(self, config: ContrastiveEncoderConfig | None = None, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config if config is not None else ContrastiveEncoderConfig()
        self.config.validate()
        self.seed = int(seed)
        self.trained_steps = 0
        c = self.config
        self.sample_rate_hz = c.sample_rate_hz
        self.window_samples = c.window_samples
        self.embedding_dim = c.embedding_dim
        self.front_end = LogMel(sample_rate_hz=c.sample_rate_hz, fft_samples=c.fft_samples,
                                hop_samples=c.hop_samples, num_mels=c.num_mels, min_hz=c.min_hz,
                                max_hz=c.max_hz)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            blocks: list[nn.Module] = []
            cin = 1
            for width in c.widths:
                blocks.append(nn.Sequential(nn.Conv2d(cin, width, 3, padding=1, bias=False),
                                            nn.GroupNorm(1, width), nn.ReLU()))
                cin = width
            self.blocks = nn.ModuleList(blocks)
            self.to_hidden = nn.Linear(2 * cin * self._pooled_bands(), c.hidden_dim)
            self.projection = nn.Sequential(nn.ReLU(), nn.Linear(c.hidden_dim, c.hidden_dim),
                                            nn.ReLU(), nn.Linear(c.hidden_dim, c.embedding_dim))

    @property
    def device(self) -> torch.device:
        return self.to_hidden.weight.device

    def num_parameters(self) -> int:
        """All parameters (representation and projection)."""
        return sum(p.numel() for p in self.parameters())

    def features(self, x: Tensor) -> Tensor:
        """Network input ``[n, 1, mels, frames]``: log-mel dB mapped to roughly [−2, 2]."""
        return ((self.front_end(x) + 50.0) / 25.0).unsqueeze(1)

    def represent(self, x: Tensor) -> Tensor:
        """The representation before the projection, ``[n, hidden_dim]``; differentiable."""
        if x.dim() != 2 or x.shape[-1] < self.config.fft_samples:
            raise InputError(f"{self.kind} encoder: input of shape {tuple(x.shape)}; give mono "
                             f"[n, samples] with at least {self.config.fft_samples} samples at "
                             f"{self.sample_rate_hz} Hz")
        h = self.features(x.to(self.device, torch.float32))
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index < len(self.blocks) - 1:
                kernel = (2 if h.shape[2] > 1 else 1, 2 if h.shape[3] > 1 else 1)
                h = F.avg_pool2d(h, kernel, ceil_mode=True)
        h = h.flatten(1, 2)                                        # [n, C·bands, frames']
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # [n, 2·C·bands]
        return self.to_hidden(pooled)

    def embed(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Embeddings ``[n, embedding_dim]`` of mono ``x [n, samples]``; differentiable.

        The projection output, the space in which training compares cosines (as CLAP's
        embedding is its projection output). ``generator`` is accepted for the
        :class:`AudioEncoder` protocol and unused: the encoder is deterministic.
        """
        return self.projection(self.represent(x))

    def _pooled_bands(self) -> int:
        """Mel bands left after the poolings (ceil-halved once per block but the last)."""
        bands = self.config.num_mels
        for _ in range(len(self.config.widths) - 1):
            bands = -(-bands // 2)
        return bands

    # --------------------------------------------------------------------- training

    def train_contrastive(self, clips: Sequence[AudioClip | Tensor | np.ndarray], *, steps: int,
                          generator: torch.Generator, sample_rate_hz: int | None = None,
                          batch_size: int = 16, crop_s: float = 4.0, lr: float = 1e-3,
                          weight_decay: float = 1e-4,
                          augment: AugmentConfig = AugmentConfig()) -> list[float]:
        """SimCLR training on ``clips``; returns the NT-Xent loss of every step.

        ``clips``: :class:`~harmonycloak.clip.AudioClip` (its own rate) or arrays
        ``[channels, samples]`` / ``[samples]`` at ``sample_rate_hz``; each is mixed to
        mono and resampled to the encoder's rate once. Each step draws
        ``min(batch_size, len(clips))`` distinct clips, two random ``crop_s`` crops of each
        (a clip shorter than a crop is repeated), augments every crop (gain, EQ, noise:
        :class:`AugmentConfig`), and takes one AdamW step (``lr``, ``weight_decay``) on
        NT-Xent. Every draw comes from ``generator`` (a CPU ``torch.Generator``), so the
        same encoder seed, clips and generator state give the same weights. Optimizer
        state is not kept between calls.
        """
        if steps < 0 or batch_size < 2 or crop_s <= 0 or lr <= 0:
            raise InputError(f"train_contrastive: steps={steps}, batch_size={batch_size}, "
                             f"crop_s={crop_s}, lr={lr}; use steps >= 0, batch_size >= 2 and "
                             "positive crop_s and lr")
        waves = _prepare_clips(clips, sample_rate_hz=sample_rate_hz,
                               encoder_rate_hz=self.sample_rate_hz)
        if len(waves) < 2:
            raise InputError(f"train_contrastive: {len(waves)} clip; contrastive training needs "
                             "at least 2 different clips (the others are the negatives)")
        crop = max(int(round(crop_s * self.sample_rate_hz)), self.config.fft_samples)
        per_step = min(batch_size, len(waves))
        optimizer = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        flags = [p.requires_grad for p in self.parameters()]
        self.requires_grad_(True)
        self.train()
        losses: list[float] = []
        try:
            for _ in range(steps):
                chosen = torch.randperm(len(waves), generator=generator)[:per_step].tolist()
                views = torch.stack([_random_crop(waves[i], crop, generator)
                                     for _ in range(2) for i in chosen])
                params = sample_augmentations(2 * per_step, crop, generator=generator,
                                              config=augment, sample_rate_hz=self.sample_rate_hz)
                views = apply_augmentations(views.to(self.device), params,
                                            sample_rate_hz=self.sample_rate_hz)
                z = self.embed(views)
                loss = nt_xent_loss(z[:per_step], z[per_step:],
                                    temperature=self.config.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                self.trained_steps += 1
        finally:
            for p, flag in zip(self.parameters(), flags):
                p.requires_grad_(flag)
                p.grad = None
            self.eval()
        return losses

    # ------------------------------------------------------------------------ I/O

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (format, version, config, seed, steps) and
        ``model.safetensors`` to ``directory`` (created if missing), each atomically."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": _ENCODER_FORMAT, "version": _FORMAT_VERSION,
                "config": asdict(self.config), "seed": self.seed,
                "trained_steps": self.trained_steps}
        return checkpoint.write_checkpoint(directory, meta, tensors, replace=_replace)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *,
             device: str = "cpu") -> ContrastiveMusicEncoder:
        """An encoder saved by :meth:`save`; never unpickles anything.

        Raises ModelLoadError when the directory, ``config.json`` or ``model.safetensors``
        is missing, unreadable, of another format or version, or does not match.
        """
        where = Path(directory)
        fix = (f"point it at a directory written by ContrastiveMusicEncoder.save() holding "
               f"{CONFIG_FILE} and {SAFETENSORS_FILE}")
        meta = _read_meta(where, _ENCODER_FORMAT, fix)
        config_path = where / CONFIG_FILE
        try:
            encoder = cls(ContrastiveEncoderConfig.from_dict(meta["config"]), seed=meta["seed"])
            encoder.trained_steps = int(meta.get("trained_steps", 0))
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise ModelLoadError(f"{config_path}: not a usable encoder config ({exc}); "
                                 f"{fix}") from exc
        weights = checkpoint.require_weights(where, fix=fix)
        try:
            encoder.load_state_dict(checkpoint.read_weights(weights))
        except Exception as exc:  # corrupt file, missing or mis-shaped weights
            raise ModelLoadError(f"{weights}: cannot load these weights into the encoder of "
                                 f"{config_path} ({type(exc).__name__}: {exc}); {fix}") from exc
        return encoder.to(resolve_device(device)).eval()


def train_contrastive(clips: Sequence[AudioClip | Tensor | np.ndarray], *, steps: int,
                      generator: torch.Generator, sample_rate_hz: int | None = None,
                      config: ContrastiveEncoderConfig | None = None, seed: int = 0,
                      device: str = "cpu", **options: Any) -> ContrastiveMusicEncoder:
    """A new :class:`ContrastiveMusicEncoder` (weights from ``seed``) trained on ``clips``.

    ``options`` go to :meth:`ContrastiveMusicEncoder.train_contrastive` (``batch_size``,
    ``crop_s``, ``lr``, ``weight_decay``, ``augment``); the per-step losses are kept in
    the encoder's ``train_losses``.
    """
    encoder = ContrastiveMusicEncoder(config, seed=seed).to(resolve_device(device))
    encoder.train_losses = encoder.train_contrastive(  # type: ignore[attr-defined]
        clips, steps=steps, generator=generator, sample_rate_hz=sample_rate_hz, **options)
    return encoder


def _prepare_clips(clips: Sequence[AudioClip | Tensor | np.ndarray], *,
                   sample_rate_hz: int | None, encoder_rate_hz: int) -> list[Tensor]:
    """Mono float32 1-D waves at ``encoder_rate_hz`` (CPU), one per clip."""
    waves = []
    for index, clip in enumerate(clips):
        if isinstance(clip, AudioClip):
            data, rate = torch.from_numpy(clip.samples), clip.sample_rate_hz
        else:
            if sample_rate_hz is None:
                raise InputError(f"clip {index}: a bare array has no sample rate; pass "
                                 "sample_rate_hz=... or give AudioClip objects")
            data, rate = torch.as_tensor(clip), sample_rate_hz
        data = data.detach().to("cpu", torch.float32)
        if data.dim() == 2:
            data = data.mean(dim=0)
        if data.dim() != 1 or data.numel() == 0:
            raise InputError(f"clip {index}: shape {tuple(data.shape)}; give [channels, samples] "
                             "or [samples] with at least one sample")
        if not torch.isfinite(data).all():
            raise InputError(f"clip {index}: contains NaN or infinite samples; load it with "
                             "harmonycloak.io.audio.load_audio, which checks this")
        with torch.no_grad():
            waves.append(resample(data, int(rate), encoder_rate_hz))
    return waves


def _random_crop(wave: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """``length`` samples from a uniform random start (the wave repeated if shorter)."""
    if wave.numel() < length:
        wave = wave.repeat(-(-length // wave.numel()) + 1)
    start = int(torch.randint(wave.numel() - length + 1, (1,), generator=generator))
    return wave[start:start + length]


# ---------------------------------------------------------------------- the target


def window_starts(num_samples: int, window_samples: int) -> list[int]:
    """Starts of the windows that cover ``num_samples`` with windows of ``window_samples``.

    ``ceil(num_samples / window_samples)`` full windows spread evenly from the first
    sample to the last (so they overlap a little unless the length divides evenly); one
    window at 0 when the clip is no longer than a window (the encoder handles the short
    input its own way: CLAP pads it, the contrastive encoder takes any length).
    """
    if num_samples <= window_samples:
        return [0]
    count = -(-num_samples // window_samples)
    span = num_samples - window_samples
    return [round(i * span / (count - 1)) for i in range(count)]


def embedding_shift(clean: Tensor, perturbed: Tensor) -> dict[str, Tensor]:
    """Per-row shift between embeddings ``[..., d]``: seed 003's metrics.

    ``cosine_similarity`` = cos(e, e'); ``l2`` = Δe = ‖e' − e‖₂; ``normalized_l2`` =
    ‖e' − e‖₂ / ‖e‖₂ (equal to ``l2`` for unit embeddings such as CLAP's). Each ``[...]``.
    """
    diff = torch.linalg.vector_norm(perturbed - clean, dim=-1)
    return {"cosine_similarity": F.cosine_similarity(perturbed, clean, dim=-1, eps=1e-12),
            "l2": diff,
            "normalized_l2": diff / torch.linalg.vector_norm(clean, dim=-1).clamp_min(1e-12)}


def embedding_view(clean: Tensor, protected: Tensor, *, digits: int = 4) -> dict[str, Any]:
    """The 2-D picture of seed 003's shift: clean and protected embeddings ``[n, d]``
    (row i of each from the same window), projected together onto their first two
    principal components (PCA of the ``2n`` points, centred on their mean).

    Returns JSON-ready lists: ``clean`` and ``protected`` (``n`` points ``[x, y]`` each),
    ``explained_variance`` (share of the points' variance on each axis, 0 for an axis the
    points do not span, e.g. the second one of a single pair), ``cosine_similarity`` and
    ``normalized_l2`` per window (:func:`embedding_shift`, in the full space: the picture
    may shorten a shift, these numbers do not). Each axis's sign is fixed so that its
    largest loading is positive, so the same embeddings always give the same picture.
    Distances between points equal the full-space ones whenever the points span at most
    two dimensions. Empty input gives empty lists.
    """
    if clean.shape != protected.shape or clean.dim() != 2:
        raise InputError(f"embedding_view: clean {tuple(clean.shape)} and protected "
                         f"{tuple(protected.shape)}; give two [windows, dim] tensors of one shape")
    n = clean.shape[0]
    if n == 0:
        return {"method": _VIEW_METHOD, "clean": [], "protected": [], "explained_variance": [0.0, 0.0],
                "cosine_similarity": [], "normalized_l2": []}
    points = torch.cat([clean, protected]).detach().to("cpu", torch.float64)
    centred = points - points.mean(dim=0)
    _, singular, axes = torch.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    coords = centred @ (axes * torch.where(signs == 0, 1.0, signs)).T
    coords = F.pad(coords, (0, 2 - coords.shape[1]))
    variance = singular.square()
    total = float(variance.sum())
    shares = [round(float(v) / total, digits) if total > 0 else 0.0 for v in variance[:2]]
    shift = embedding_shift(clean.detach().cpu().double(), protected.detach().cpu().double())

    def rows(t: Tensor) -> list[list[float]]:
        return [[round(float(v), digits) for v in row] for row in t]

    return {"method": _VIEW_METHOD, "clean": rows(coords[:n]), "protected": rows(coords[n:]),
            "explained_variance": shares + [0.0] * (2 - len(shares)),
            "cosine_similarity": [round(float(v), digits) for v in shift["cosine_similarity"]],
            "normalized_l2": [round(float(v), digits) for v in shift["normalized_l2"]]}


_VIEW_METHOD = "PCA of the clean and protected window embeddings together (first two components)"


class EmbeddingShiftTarget:
    """Seed 003's defence against latent diffusion: shift the encoder's embedding.

    Input ``x``: float waveforms ``[batch, channels, samples]`` at ``sample_rate_hz`` (the
    file's rate). Each example is mixed to mono (what CLAP/MusicLDM pipelines feed the
    encoder), resampled to the encoder's rate with the differentiable
    :func:`harmonycloak.perturb.dsp.resample`, and cut into fixed windows of
    ``window_s`` (default: the encoder's own input length, 10 s for CLAP; see
    :func:`window_starts`). The windows of all examples form the encoder's batch.

    ``loss(x)``: the mean over the batch of the cosine similarity between ``E(x)`` and the
    reference ``E(x_clean)`` stored by :meth:`set_reference` (no gradient); minimizing it
    maximizes the shift. ``pooling="windows"`` (default) compares window by window and
    averages the similarities, so every part of a long piece must move;
    ``pooling="mean"`` compares the window-averaged embeddings (one vector per piece).
    Values lie in [−1, 1]; 1 means no shift. ``x`` must have the batch size and length
    of the reference.

    ``train_step`` does nothing and returns NaN: the encoder is fixed (the attacker trains
    the diffusion model on top of it, never the encoder), so the outer step of the
    min-min loop has nothing to train and the problem reduces to the inner maximization.

    ``seed`` seeds the target's own ``torch.Generator``, used only by encoders that draw
    random crops (CLAP with windows longer than its input length); the global RNG is
    never touched. ``device``: "cpu", "cuda" or "auto"; the encoder is moved there and
    frozen (``requires_grad_(False)``), so gradients reach ``x`` only.
    """

    name = "embedding-shift"

    def __init__(self, encoder: nn.Module, *, sample_rate_hz: int = 44_100,
                 pooling: Pooling = "windows", window_s: float | None = None, seed: int = 0,
                 device: str = "cpu") -> None:
        if not isinstance(encoder, AudioEncoder) or not isinstance(encoder, nn.Module):
            raise InputError(f"encoder {type(encoder).__name__}: not an AudioEncoder module; use "
                             "ContrastiveMusicEncoder or harmonycloak.targets.clap.ClapEncoder")
        if pooling not in ("windows", "mean"):
            raise InputError(f"pooling={pooling!r}: use 'windows' or 'mean'")
        if not (isinstance(sample_rate_hz, int) and sample_rate_hz > 0):
            raise InputError(f"sample_rate_hz={sample_rate_hz!r}: give the file's rate in Hz, "
                             "e.g. 44100 or 48000")
        if window_s is not None and not window_s > 0:
            raise InputError(f"window_s={window_s!r}: must be positive, or None for the "
                             "encoder's input length")
        self.sample_rate_hz = sample_rate_hz
        self.pooling: Pooling = pooling
        self.window_s = None if window_s is None else float(window_s)
        self.seed = int(seed)
        self.device = torch.device(resolve_device(device))
        self.encoder = encoder.to(self.device).eval()
        self.encoder.requires_grad_(False)
        self._rng = torch.Generator(device="cpu").manual_seed(self.seed)
        self._reference: Tensor | None = None
        self._reference_shape: tuple[int, int] | None = None

    @property
    def window_samples(self) -> int:
        """Window length in samples at the encoder's rate."""
        if self.window_s is None:
            return int(self.encoder.window_samples)
        return int(round(self.window_s * self.encoder.sample_rate_hz))

    def num_parameters(self) -> dict[str, int]:
        """``{"encoder": ...}`` (all fixed)."""
        return {"encoder": int(self.encoder.num_parameters())}

    def options(self) -> dict[str, Any]:
        """Everything but the encoder's weights, JSON-ready."""
        return {"encoder": self.encoder.kind, "sample_rate_hz": self.sample_rate_hz,
                "pooling": self.pooling, "window_s": self.window_s, "seed": self.seed}

    # ------------------------------------------------------------------ embedding

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point() \
                or x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"{self.name}: input {shape}; give float waveforms [batch, channels, "
                             f"samples] at {self.sample_rate_hz} Hz")
        return x.to(device=self.device, dtype=torch.float32)

    def embed(self, x: Tensor) -> Tensor:
        """Window embeddings ``[batch, windows, dim]`` of ``x [batch, channels, samples]``.

        Differentiable in ``x``. Windows of at least 1/4 s at the encoder's rate; shorter
        clips are rejected with an InputError.
        """
        x = self._check(x)
        mono = resample(x.mean(dim=1), self.sample_rate_hz, int(self.encoder.sample_rate_hz))
        window = self.window_samples
        if mono.shape[-1] < self.encoder.sample_rate_hz // 4:
            raise InputError(f"{self.name}: clip of {x.shape[-1]} samples "
                             f"({x.shape[-1] / self.sample_rate_hz:.3f} s); give at least 0.25 s")
        starts = window_starts(mono.shape[-1], window)
        pieces = torch.stack([mono[:, s:s + window] for s in starts], dim=1)  # [b, w, len]
        batch, count = pieces.shape[:2]
        flat = self.encoder.embed(pieces.reshape(batch * count, -1), generator=self._rng)
        return flat.reshape(batch, count, -1)

    def set_reference(self, x_clean: Tensor) -> Tensor:
        """Store (and return) the clean window embeddings ``[batch, windows, dim]``."""
        with torch.no_grad():
            reference = self.embed(x_clean).detach()
        self._reference = reference
        self._reference_shape = (int(x_clean.shape[0]), int(x_clean.shape[-1]))
        return reference

    @property
    def reference(self) -> Tensor | None:
        """The stored clean embeddings, or None before :meth:`set_reference`."""
        return self._reference

    def _reference_for(self, x: Tensor) -> Tensor:
        if self._reference is None or self._reference_shape is None:
            raise InputError(f"{self.name}: no reference embedding; call "
                             "target.set_reference(x_clean) with the clean batch first")
        batch, samples = self._reference_shape
        if x.shape[0] != batch or x.shape[-1] != samples:
            raise InputError(f"{self.name}: input {tuple(x.shape)} does not match the reference "
                             f"(batch {batch}, {samples} samples); call "
                             "set_reference(x_clean) with the clean version of this batch")
        return self._reference

    def _pooled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        reference = self._reference_for(self._check(x))
        embedded = self.embed(x)
        if self.pooling == "mean":
            return embedded.mean(dim=1), reference.mean(dim=1)
        return embedded, reference

    def _example_losses(self, x: Tensor) -> Tensor:
        embedded, reference = self._pooled(x)
        cosine = F.cosine_similarity(embedded, reference, dim=-1, eps=1e-12)
        return cosine.mean(dim=1) if cosine.dim() == 2 else cosine

    def loss(self, x: Tensor) -> Tensor:
        """Mean cosine similarity to the reference over the batch; differentiable in ``x``."""
        return self._example_losses(x).mean()

    def example_losses(self, x: Tensor) -> Tensor:
        """Cosine similarity to the reference per example ``[batch]``, without gradients."""
        with torch.no_grad():
            return self._example_losses(x)

    def shift_metrics(self, x: Tensor) -> dict[str, Any]:
        """Seed 003's measures of ``x`` (perturbed) against the stored reference.

        ``cosine_similarity``, ``l2`` (Δe = ‖E(x+δ) − E(x)‖₂) and ``normalized_l2``
        (‖E(x+δ) − E(x)‖₂ / ‖E(x)‖₂), each the mean over the batch (and over windows with
        ``pooling="windows"``), plus ``per_example`` lists of the same three and
        ``meets_seed_targets`` (similarity < 0.3 and Δe > 0.5 on average, with Δe taken
        as ``normalized_l2`` so that it does not depend on the embedding's scale).
        """
        with torch.no_grad():
            embedded, reference = self._pooled(x)
            shift = embedding_shift(reference, embedded)
        per_example = {k: (v.mean(dim=1) if v.dim() == 2 else v) for k, v in shift.items()}
        means = {k: float(v.mean()) for k, v in per_example.items()}
        return {**means,
                "per_example": {k: v.tolist() for k, v in per_example.items()},
                "meets_seed_targets": bool(means["cosine_similarity"] < SEED_SIMILARITY_TARGET
                                           and means["normalized_l2"] > SEED_SHIFT_TARGET)}

    def train_step(self, x: Tensor) -> float:
        """No-op (the encoder is fixed; see the class docstring); returns NaN."""
        self._check(x)
        return float("nan")

    # ------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Encoder weights, the generator state and the reference (None when unset)."""
        return {"encoder": self.encoder.state_dict(), "rng_state": self._rng.get_state(),
                "reference": self._reference, "reference_shape": self._reference_shape}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.encoder.load_state_dict(state["encoder"])
        if "rng_state" in state:
            self._rng.set_state(state["rng_state"].to("cpu", torch.uint8))
        reference = state.get("reference")
        self._reference = None if reference is None else reference.to(self.device)
        shape = state.get("reference_shape")
        self._reference_shape = None if shape is None else (int(shape[0]), int(shape[1]))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (the target's options) and the encoder under ``encoder/``.

        The reference embedding is data of one piece, not part of the model, and is not
        saved. Returns the directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.encoder.save(out / _ENCODER_DIR)
        meta = {"format": _TARGET_FORMAT, "version": _FORMAT_VERSION, **self.options()}
        checkpoint.write_config(out / CONFIG_FILE, meta, replace=_replace)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "cpu",
             seed: int | None = None, sample_rate_hz: int | None = None) -> EmbeddingShiftTarget:
        """A target saved by :meth:`save`; options left at None keep the saved values.

        Raises ModelLoadError when the directory or its files are missing or do not match.
        """
        where = Path(directory)
        fix = (f"point it at a directory written by EmbeddingShiftTarget.save() holding "
               f"{CONFIG_FILE} and {_ENCODER_DIR}/")
        meta = _read_meta(where, _TARGET_FORMAT, fix)
        try:
            module, name = _ENCODER_CLASSES[meta["encoder"]]
        except (KeyError, TypeError):
            raise ModelLoadError(f"{where / CONFIG_FILE}: unknown encoder "
                                 f"{meta.get('encoder')!r}; expected one of "
                                 f"{sorted(_ENCODER_CLASSES)}; {fix}") from None
        encoder_cls = getattr(importlib.import_module(module), name)
        encoder = encoder_cls.load(where / _ENCODER_DIR, device=device)
        try:
            return cls(encoder, sample_rate_hz=meta["sample_rate_hz"] if sample_rate_hz is None
                       else sample_rate_hz, pooling=meta["pooling"], window_s=meta["window_s"],
                       seed=meta["seed"] if seed is None else seed, device=device)
        except (KeyError, TypeError, InputError) as exc:
            raise ModelLoadError(f"{where / CONFIG_FILE}: not a usable target config ({exc}); "
                                 f"{fix}") from exc


def _read_meta(where: Path, expected_format: str, fix: str) -> dict[str, Any]:
    """``config.json`` of a harmonycloak model directory, format and version checked."""
    _, config_path = checkpoint.open_checkpoint(where, fix=fix)
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path}: unreadable ({exc}); {fix}") from exc
    try:
        return checkpoint.check_format(meta, name=expected_format, version=_FORMAT_VERSION)
    except ValueError as exc:
        raise ModelLoadError(f"{config_path}: {exc}; {fix}") from None


def _replace(path: Path, write: Any) -> None:
    """The encoder and target files go through :func:`atomic_write` (fsynced), overwriting."""
    atomic_write(path, write, force=True)
