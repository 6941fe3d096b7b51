"""Latent diffusion on log-mel spectrograms (the MusicLDM / Riffusion family) as a Target.

The threat model: a text-to-music latent diffusion model that an attacker trains on
scraped audio. MusicLDM (Chen et al. 2023) and AudioLDM (Liu et al. 2023) turn 16 kHz audio
into a log-mel "image", compress it with a KL-regularized convolutional VAE (trained first,
then frozen) to a latent 4x smaller on both axes, and train a U-Net to predict the noise
added to those latents (DDPM, Ho et al. 2020; latent diffusion, Rombach et al. 2022).
Riffusion fine-tunes Stable Diffusion on mel images: the same recipe. The protection
minimizes that model's training loss on the protected clip (error-minimizing noise,
HarmonyCloak section 3.2; Zhao et al. 2023, "Unlearnable examples for diffusion models").

The graph, all differentiable in the waveform ``x``:

    x [batch, channels, samples] at ``sample_rate_hz`` (the file's rate, e.g. 44.1 kHz)
      ─▶ resample to the mel rate (16 kHz; :func:`harmonycloak.perturb.dsp.resample`)
      ─▶ stereo: "mid" (mean of the channels; MusicLDM trains on mono mixes, default) or
         "channels" (each channel is its own training example; the clip's loss is the
         mean over its channels: twice the cost, and δ must work on each side alone)
      ─▶ log-mel (:class:`~harmonycloak.targets.mel.MelFrontEnd`), normalized as
         ``(log_mel - log_mel_mean) / log_mel_std``
      ─▶ cut into patches of ``patch_frames`` frames (the model's training segment; MusicLDM
         trains on 10.24 s = 1024 frames)
      ─▶ VAE encoder, posterior *mean* (deterministic), times ``latent_scale``
      ─▶ z₀ ``[patches, latent_channels, n_mels / f, patch_frames / f]`` (f = VAE factor)
      ─▶ ε-prediction loss ``‖ε − ε_θ(√ᾱ_t z₀ + √(1 − ᾱ_t) ε, t)‖²``

Lengths: a clip of any length (≥ 1 sample) works. At the mel rate it has ``S`` samples and
``V = ceil(S / hop)`` *valid* frames (frames centred inside the signal). It is padded with
digital silence to ``P = ceil(V / patch_frames)`` whole patches (``P · patch_frames · hop``
samples; the one extra centred frame at the very end is dropped), so nothing is ever
cropped. The padding is seen by the VAE and the U-Net (as silence at the end of the last
segment), but the loss is a masked mean over the latent frames that hold valid mel
frames only (latent frame ``j`` of a patch is valid when mel frame ``j · f`` is).

L_gen (``loss``): for each patch one timestep ``t ~ U{0..T-1}`` and one noise ``ε ~ N(0, I)``,
drawn from the target's own CPU generator (seeded; so the loss is deterministic given the
seed and the call sequence, identical on every device); per example the masked mean
squared error over its patches (and channels), then the mean over the batch. Gradients
reach ``x`` only, never the weights.

``example_losses`` is a lower-variance, *reproducible* measurement: ``K = eval_timesteps``
fixed timesteps ``t_k = floor((k + ½) T / K)`` per patch and one fixed noise tensor (from a
generator with a constant seed, redrawn identically on every call and shared by all
examples), averaged: a function of the weights and ``x`` only. It does not advance the
training generator, and an example's value does not depend on the rest of the batch.

``train_step``: one step of the denoiser on the same loss (VAE frozen; the latents are
detached), with its own optimizer: SGD momentum 0.9 lr 0.025 (the paper's outer loop) or
Adam / AdamW (lr 1e-4; attackers). ``fit_autoencoder`` trains the VAE first (L1
reconstruction of the normalized log-mel + ``kl_weight`` · KL, Adam, reparameterized samples
from the target's generator), then sets ``latent_scale`` to 1 / std of the posterior means
(LDM's "scale by std"). Fit it before training the denoiser: a refit changes the latents.

Unconditional: MusicLDM conditions on a CLAP text/audio embedding; the protection targets
the denoising loss itself, which every conditioning shares, so the stand-in drops it.

Generation (``generate``): DDIM (η = 0, Song et al. 2021) from noise drawn from the
caller's generator, decoded to log-mels; ``generate_audio`` adds Griffin-Lim (32 iterations,
about 1 s per 10 s of audio on one thread) and resamples to ``sample_rate_hz``: a rough
preview, not a vocoder (MusicLDM uses HiFi-GAN).

Configs (``LatentDiffusionTarget(config).num_parameters()``):

===========  ==========  ==========  =======================================
config       VAE         U-Net       mel / patch / latent
===========  ==========  ==========  =======================================
``tiny()``   6,633       32,762      16 mels, 32 frames (0.26 s), [2, 8, 16]
``cpu()``    611,633     3,172,424   64 mels, 256 frames (2.56 s), [8, 16, 64]
``large()``  6,342,097   31,668,360  64 mels, 1024 frames (10.24 s), [8, 16, 256]
===========  ==========  ==========  =======================================

``cpu()`` is the default. Measured on one CPU thread (a shared 2-core machine, so the
range is load), 10 s stereo 44.1 kHz clip = 4 patches: ``loss`` + backward 0.36-0.9 s,
``train_step`` 0.43 s, ``example_losses`` (K = 8) 1.2 s; ``generate`` of 10 s with 50
DDIM steps 9 s.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.config import resolve_device
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.dsp import resample, resampled_length
from harmonycloak.targets import checkpoint
from harmonycloak.targets.checkpoint import CONFIG_FILE, SAFETENSORS_FILE

from .mel import MelConfig, MelFrontEnd

__all__ = ["LatentDiffusionConfig", "LatentDiffusionTarget", "VAEConfig", "UNetConfig",
           "DiffusionConfig", "MelVAE", "LatentUNet", "beta_schedule", "StereoMode",
           "ScheduleName", "OptimizerName"]

StereoMode = Literal["mid", "channels"]
ScheduleName = Literal["scaled-linear", "linear", "cosine"]
OptimizerName = Literal["sgd", "adam", "adamw"]

_FORMAT = "harmonycloak.latent_diffusion"
_FORMAT_VERSION = 1
_EVAL_SEED = 0x5EED


# --------------------------------------------------------------------------- configs


def _positive_ints(owner: str, name: str, values: Any) -> None:
    items = values if isinstance(values, tuple) else (values,)
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                            for v in items):
        raise InputError(f"{owner}.{name}={values!r}: every width must be a positive integer")


@dataclass(frozen=True)
class VAEConfig:
    """The KL autoencoder on normalized log-mel patches ``[1, n_mels, patch_frames]``.

    ``channels``: width per level; every level after the first halves both axes, so the
    latent is ``2^(len(channels) - 1)`` times smaller per axis (AudioLDM/MusicLDM: 4).
    ``latent_channels``: 8 in AudioLDM/MusicLDM. ``kl_weight``: weight of the KL term
    (mean per latent element) against the mean L1 reconstruction error.
    """

    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 8
    kl_weight: float = 1e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        _positive_ints("VAEConfig", "channels", self.channels)
        _positive_ints("VAEConfig", "latent_channels", self.latent_channels)
        if not self.kl_weight >= 0:
            raise InputError(f"VAEConfig.kl_weight={self.kl_weight!r}: use a number >= 0 "
                             "(e.g. 1e-4)")

    @property
    def factor(self) -> int:
        """Downsampling per axis, ``2^(levels - 1)``."""
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class UNetConfig:
    """The denoiser ε_θ(z_t, t) on latents.

    ``channels``: width per level (each later level halves both axes); ``attention``:
    multi-head self-attention (``heads``) over all positions at the lowest resolution.
    """

    channels: tuple[int, ...] = (64, 128, 128)
    attention: bool = True
    heads: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        _positive_ints("UNetConfig", "channels", self.channels)
        _positive_ints("UNetConfig", "heads", self.heads)
        if self.attention and self.channels[-1] % self.heads:
            raise InputError(f"UNetConfig: heads={self.heads} must divide the lowest level's "
                             f"width {self.channels[-1]}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and measurement.

    ``schedule``: ``"scaled-linear"`` (LDM and MusicLDM: β linear in √β from ``beta_start``
    to ``beta_end``, MusicLDM's 0.0015 → 0.0195), ``"linear"`` (DDPM: β linear between the
    same two numbers; DDPM used 1e-4 → 0.02) or ``"cosine"`` (Nichol and Dhariwal 2021,
    s = 0.008, β ≤ 0.999; ignores the two numbers). ``timesteps``: T = 1000.
    ``eval_timesteps``: K of :meth:`LatentDiffusionTarget.example_losses`.
    """

    timesteps: int = 1000
    schedule: ScheduleName = "scaled-linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    eval_timesteps: int = 8

    def __post_init__(self) -> None:
        _positive_ints("DiffusionConfig", "timesteps", self.timesteps)
        _positive_ints("DiffusionConfig", "eval_timesteps", self.eval_timesteps)
        if self.schedule not in ("scaled-linear", "linear", "cosine"):
            raise InputError(f"DiffusionConfig.schedule={self.schedule!r}: use "
                             "'scaled-linear', 'linear' or 'cosine'")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise InputError(f"DiffusionConfig: beta_start={self.beta_start}, beta_end="
                             f"{self.beta_end}: need 0 < beta_start <= beta_end < 1")


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """Everything that fixes the model's shape. Use :meth:`tiny`, :meth:`cpu`, :meth:`large`.

    ``mel``: the front end (at its own rate, 16 kHz); ``patch_frames``: mel frames per
    training segment; ``log_mel_mean`` / ``log_mel_std``: the fixed affine normalization
    of the log-mel before the VAE (the floor, silence, maps to about -2.2 with the
    defaults; loud music peaks near +2).
    """

    mel: MelConfig = field(default_factory=MelConfig)
    patch_frames: int = 256
    log_mel_mean: float = -5.0
    log_mel_std: float = 3.0
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        _positive_ints("LatentDiffusionConfig", "patch_frames", self.patch_frames)
        if not self.log_mel_std > 0:
            raise InputError(f"LatentDiffusionConfig.log_mel_std={self.log_mel_std!r}: use a "
                             "positive number (e.g. 3.0)")
        factor = self.vae.factor * self.unet.factor
        for name, size in (("mel.n_mels", self.mel.n_mels), ("patch_frames", self.patch_frames)):
            if size % factor:
                raise InputError(
                    f"LatentDiffusionConfig.{name}={size}: must be a multiple of {factor} "
                    f"(the VAE's {self.vae.factor}x times the U-Net's {self.unet.factor}x "
                    "downsampling); change it or use fewer levels")
        if self.patch_frames * self.mel.hop <= self.mel.n_fft // 2:
            raise InputError(f"LatentDiffusionConfig.patch_frames={self.patch_frames}: a patch "
                             f"of {self.patch_frames * self.mel.hop} samples is too short for "
                             f"n_fft={self.mel.n_fft}; use more frames")

    @classmethod
    def cpu(cls) -> LatentDiffusionConfig:
        """Default: MusicLDM's front end, 2.56 s patches, 0.61 M VAE + 3.2 M U-Net."""
        return cls()

    @classmethod
    def tiny(cls) -> LatentDiffusionConfig:
        """For tests: 16 mels, n_fft 256, hop 128 (8 ms), 32-frame patches, 39 k parameters."""
        return cls(mel=MelConfig(n_fft=256, hop=128, n_mels=16),
                   patch_frames=32, vae=VAEConfig(channels=(4, 8), latent_channels=2),
                   unet=UNetConfig(channels=(8, 16), heads=2),
                   diffusion=DiffusionConfig(eval_timesteps=4))

    @classmethod
    def large(cls) -> LatentDiffusionConfig:
        """MusicLDM-like segments (10.24 s) and widths nearer a real model: 38 M parameters."""
        return cls(patch_frames=1024, vae=VAEConfig(channels=(64, 128, 256)),
                   unet=UNetConfig(channels=(128, 256, 512), heads=8))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(channels, mel rows, frames)`` of one patch's latent."""
        f = self.vae.factor
        return (self.vae.latent_channels, self.mel.n_mels // f, self.patch_frames // f)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentDiffusionConfig:
        """Inverse of :meth:`to_dict`; unknown keys fail with InputError."""
        parts = {"mel": MelConfig, "vae": VAEConfig, "unet": UNetConfig,
                 "diffusion": DiffusionConfig}
        _check_keys(cls, data)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                if not isinstance(value, dict):
                    raise InputError(f"LatentDiffusionConfig.{key}: expected an object, got "
                                     f"{value!r}")
                _check_keys(parts[key], value)
                kwargs[key] = parts[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _check_keys(cls: type, data: dict[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")


def beta_schedule(kind: ScheduleName, timesteps: int, *, beta_start: float = 0.0015,
                  beta_end: float = 0.0195) -> Tensor:
    """β_t for ``t = 0..timesteps-1``, float64 ``[timesteps]`` (see :class:`DiffusionConfig`)."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if kind == "scaled-linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps,
                              dtype=torch.float64) ** 2
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise InputError(f"beta schedule {kind!r}: use 'scaled-linear', 'linear' or 'cosine'")


# ---------------------------------------------------------------------------- layers


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (per-example statistics: batch-independent)."""
    return nn.GroupNorm(math.gcd(channels, 32), channels)


class _ResBlock(nn.Module):
    """GroupNorm → SiLU → 3x3 conv, twice, plus a (1x1-projected) skip; optional time bias."""

    def __init__(self, cin: int, cout: int, time_dim: int | None = None) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, cout) if time_dim else None
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time is not None and temb is not None:
            h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over all ``H·W`` positions, residual (LDM's mid block)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w) \
            .transpose(-1, -2).unbind(1)                             # [n, heads, hw, d]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


def _down(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class _Up(nn.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 conv (no checkerboard artefacts)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MelVAE(nn.Module):
    """KL autoencoder: log-mel ``[n, 1, mels, frames]`` ⇄ latent ``[n, C, mels/f, frames/f]``.

    Encoder: 3x3 conv in, a residual block per level with a stride-2 conv between levels,
    a middle block, GroupNorm/SiLU, 3x3 conv to ``2C`` (posterior mean and log-variance,
    clamped to [-30, 20] as LDM's). The decoder mirrors it with nearest-neighbour upsampling.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        chs, lat = config.channels, config.latent_channels
        enc: list[nn.Module] = [nn.Conv2d(1, chs[0], 3, padding=1)]
        prev = chs[0]
        for i, c in enumerate(chs):
            enc.append(_ResBlock(prev, c))
            prev = c
            if i < len(chs) - 1:
                enc.append(_down(c))
        enc += [_ResBlock(prev, prev), _norm(prev), nn.SiLU(), nn.Conv2d(prev, 2 * lat, 3,
                                                                           padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(lat, chs[-1], 3, padding=1), _ResBlock(chs[-1], chs[-1])]
        prev = chs[-1]
        for i in reversed(range(len(chs))):
            dec.append(_ResBlock(prev, chs[i]))
            prev = chs[i]
            if i > 0:
                dec.append(_Up(prev))
        dec += [_norm(prev), nn.SiLU(), nn.Conv2d(prev, 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance, each ``[n, C, mels/f, frames/f]``."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """Normalized log-mel ``[n, 1, mels, frames]`` from a latent."""
        return self.decoder(z)


def _timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``[n, dim]`` of integer timesteps ``[n]`` (Transformer/DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device,
                                                        dtype=torch.float32) / max(half, 1))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class LatentUNet(nn.Module):
    """ε_θ(z_t, t): latent ``[n, C, H, W]`` and timesteps ``[n]`` → noise ``[n, C, H, W]``.

    Sinusoidal timestep embedding → 2-layer SiLU MLP (4x the first width), added to every
    residual block. Down path: a residual block per level (its output is the skip), a
    stride-2 conv between levels; middle: block, optional self-attention, block; up path:
    concatenate the level's skip, residual block, nearest-neighbour upsampling. ``H`` and
    ``W`` must be multiples of ``2^(levels - 1)``; any ``W`` works (fully convolutional
    apart from the global attention), which :meth:`LatentDiffusionTarget.generate` uses.
    """

    def __init__(self, config: UNetConfig, latent_channels: int) -> None:
        super().__init__()
        chs = config.channels
        self.base = chs[0]
        tdim = 4 * chs[0]
        self.time_mlp = nn.Sequential(nn.Linear(chs[0], tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(latent_channels, chs[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        prev = chs[0]
        for i, c in enumerate(chs):
            self.down_blocks.append(_ResBlock(prev, c, tdim))
            prev = c
            self.downsamples.append(_down(c) if i < len(chs) - 1 else nn.Identity())
        self.mid1 = _ResBlock(prev, prev, tdim)
        self.attention = _Attention(prev, config.heads) if config.attention else None
        self.mid2 = _ResBlock(prev, prev, tdim)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(chs))):
            self.up_blocks.append(_ResBlock(prev + chs[i], chs[i], tdim))
            prev = chs[i]
            self.upsamples.append(_Up(prev) if i > 0 else nn.Identity())
        self.out = nn.Sequential(_norm(prev), nn.SiLU(), nn.Conv2d(prev, latent_channels, 3,
                                                                   padding=1))

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        temb = self.time_mlp(_timestep_embedding(t, self.base))
        h = self.conv_in(z)
        skips = []
        for block, down in zip(self.down_blocks, self.downsamples):
            h = block(h, temb)
            skips.append(h)
            h = down(h)
        h = self.mid1(h, temb)
        if self.attention is not None:
            h = self.attention(h)
        h = self.mid2(h, temb)
        for block, up in zip(self.up_blocks, self.upsamples):
            h = up(block(torch.cat([h, skips.pop()], dim=1), temb))
        return self.out(h)


# ---------------------------------------------------------------------------- target


@dataclass
class _Patches:
    """Normalized log-mel patches of a batch and the bookkeeping to fold them back."""

    mels: Tensor        # [batch · examples · patches, 1, n_mels, patch_frames]
    mask: Tensor        # [batch · examples · patches, latent frames], 1 = valid
    batch: int
    per_clip: int       # patches per clip (channels-or-1 · patches)


class LatentDiffusionTarget:
    """A MusicLDM-style latent diffusion model as a threat model (see the module docstring).

    Args:
        config: the model's shape; ``LatentDiffusionConfig.cpu()`` when None.
        sample_rate_hz: the rate of the waveforms it will be given (the file's rate).
        stereo: ``"mid"`` (default) or ``"channels"`` (see the module docstring).
        seed: fixes the initial weights and the training generator (timesteps, noise,
            autoencoder minibatches); the global torch RNG is left alone.
        optimizer: ``"sgd"`` (outer loop: momentum 0.9, lr 0.025), ``"adam"`` or ``"adamw"``
            (lr 1e-4; the attacker's choice); ``lr`` None picks that default.
        betas, weight_decay: Adam(W) options (weight decay for AdamW only).
        grad_clip: global gradient-norm clip of each ``train_step`` (0 disables).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Inputs: float32 waveforms ``[batch, channels, samples]`` at ``sample_rate_hz`` in
    [-1, 1] on any device (moved to the model's device).
    """

    name = "latent-diffusion"

    def __init__(self, config: LatentDiffusionConfig | None = None, *,
                 sample_rate_hz: int = 44100, stereo: StereoMode = "mid", seed: int = 0,
                 optimizer: OptimizerName = "sgd", lr: float | None = None,
                 momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.01, grad_clip: float = 1.0,
                 device: str = "cpu") -> None:
        self.config = config if config is not None else LatentDiffusionConfig.cpu()
        if not (isinstance(sample_rate_hz, int) and 8000 <= sample_rate_hz <= 192000):
            raise InputError(f"latent-diffusion: sample_rate_hz={sample_rate_hz!r}; use the "
                             "file's rate in Hz, an integer in 8000..192000")
        if stereo not in ("mid", "channels"):
            raise InputError(f"latent-diffusion: stereo={stereo!r}; use 'mid' or 'channels'")
        if optimizer not in ("sgd", "adam", "adamw"):
            raise InputError(f"latent-diffusion: optimizer={optimizer!r}; use 'sgd', 'adam' "
                             "or 'adamw'")
        lr = (0.025 if optimizer == "sgd" else 1e-4) if lr is None else lr
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise InputError(f"latent-diffusion: lr={lr!r}; use a positive finite number")
        if not grad_clip >= 0:
            raise InputError(f"latent-diffusion: grad_clip={grad_clip!r}; use >= 0 (0: off)")
        self.sample_rate_hz = sample_rate_hz
        self.stereo: StereoMode = stereo
        self.seed = int(seed)
        self.optimizer_name: OptimizerName = optimizer
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)
        self.grad_clip = float(grad_clip)
        self.device = torch.device(resolve_device(device))
        self.steps = 0
        self.latent_scale = 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.vae = MelVAE(self.config.vae)
            self.unet = LatentUNet(self.config.unet, self.config.vae.latent_channels)
        self.front = MelFrontEnd.from_config(self.config.mel)
        for module in (self.front, self.vae, self.unet):
            module.to(self.device).eval()      # no dropout or batch norm: modes do not matter
        self.vae.requires_grad_(False)
        self.optimizer = self._make_optimizer()
        self._rng = torch.Generator(device="cpu").manual_seed(self.seed)
        d = self.config.diffusion
        betas_t = beta_schedule(d.schedule, d.timesteps, beta_start=d.beta_start,
                                beta_end=d.beta_end)
        self.alphas_cumprod = torch.cumprod(1 - betas_t, 0).to(torch.float32).to(self.device)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.unet.parameters()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas)
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas,
                                 weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ introspection

    def num_parameters(self) -> dict[str, int]:
        """Trainable parameters: ``{"vae": ..., "unet": ...}``."""
        return {"vae": sum(p.numel() for p in self.vae.parameters()),
                "unet": sum(p.numel() for p in self.unet.parameters())}

    def options(self) -> dict[str, Any]:
        """Everything but the weights, JSON-ready (what ``config.json`` holds)."""
        return {"config": self.config.to_dict(), "sample_rate_hz": self.sample_rate_hz,
                "stereo": self.stereo, "seed": self.seed, "optimizer": self.optimizer_name,
                "lr": self.lr, "momentum": self.momentum, "betas": list(self.betas),
                "weight_decay": self.weight_decay, "grad_clip": self.grad_clip}

    # ----------------------------------------------------------------- front end

    def _audio(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3 or min(x.shape) < 1 \
                or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(
                f"latent-diffusion: audio of shape {shape}; expected a float tensor [batch, "
                f"channels, samples] at {self.sample_rate_hz} Hz with at least one of each")
        return x.to(device=self.device, dtype=torch.float32)

    def log_mel(self, x: Tensor) -> Tensor:
        """Log-mel of the model's examples, ``[batch, examples, n_mels, frames]``.

        ``examples`` is 1 (``stereo="mid"``) or the channel count; ``frames`` covers the
        whole clip (``1 + samples // hop`` at the mel rate, unpadded). Differentiable.
        """
        return self.front(self._examples(self._audio(x)))

    def _examples(self, x: Tensor) -> Tensor:
        """Waveforms at the mel rate, ``[batch, examples, samples]``."""
        wave = resample(x, self.sample_rate_hz, self.config.mel.sample_rate_hz)
        return wave.mean(dim=1, keepdim=True) if self.stereo == "mid" else wave

    def _patches(self, x: Tensor) -> _Patches:
        """Pad to whole patches, log-mel, normalize, cut (see the module docstring)."""
        c = self.config
        hop, frames = c.mel.hop, c.patch_frames
        wave = self._examples(self._audio(x))
        batch, examples, samples = wave.shape
        valid = -(-samples // hop)
        patches = -(-valid // frames)
        wave = F.pad(wave, (0, patches * frames * hop - samples))
        mel = self.front(wave)[..., :patches * frames]                 # drop the extra frame
        mel = (mel - c.log_mel_mean) / c.log_mel_std
        mel = mel.reshape(batch, examples, c.mel.n_mels, patches, frames)
        mel = mel.permute(0, 1, 3, 2, 4).reshape(-1, 1, c.mel.n_mels, frames)
        f = c.vae.factor
        start = torch.arange(patches, device=self.device)[:, None] * frames
        latent_frame = torch.arange(frames // f, device=self.device)[None, :] * f
        mask = (start + latent_frame < valid).to(torch.float32)        # [patches, frames/f]
        mask = mask.repeat(batch * examples, 1)
        return _Patches(mel, mask, batch, examples * patches)

    def _latents(self, mels: Tensor) -> Tensor:
        """Scaled posterior means ``z₀`` of normalized log-mel patches."""
        return self.vae.encode(mels)[0] * self.latent_scale

    def latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``z₀ [batch·examples·patches, C, H, W]`` and the valid-frame mask ``[.., W]``."""
        p = self._patches(x)
        return self._latents(p.mels), p.mask

    # ------------------------------------------------------------------- L_gen

    def _draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Timesteps ``[n]`` and noise ``[n, C, H, W]`` from ``generator`` (CPU) on the device."""
        t = torch.randint(0, self.config.diffusion.timesteps, (n,), generator=generator)
        noise = torch.randn((n, *self.config.latent_shape), generator=generator)
        return t.to(self.device), noise.to(self.device)

    def _errors(self, unet: Any, z0: Tensor, t: Tensor, noise: Tensor, mask: Tensor) -> Tensor:
        """Masked squared-error sums per patch ``[n]`` (mean over channels and rows)."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        se = (unet(zt, t) - noise).square().mean(dim=(1, 2))            # [n, W]
        return (se * mask).sum(dim=1)

    def _per_clip(self, sums: Tensor, mask: Tensor, patches: _Patches) -> Tensor:
        """Masked mean per clip ``[batch]`` from per-patch sums and masks."""
        total = sums.view(patches.batch, patches.per_clip).sum(1)
        count = mask.sum(1).view(patches.batch, patches.per_clip).sum(1)
        return total / count

    def _frozen_unet(self) -> Any:
        params = {k: v.detach() for k, v in self.unet.named_parameters()}
        buffers = dict(self.unet.named_buffers())
        return lambda z, t: torch.func.functional_call(self.unet, {**params, **buffers}, (z, t))

    def loss(self, x: Tensor) -> Tensor:
        """Mean L_gen over the batch (random t and ε per patch); differentiable in ``x`` only.

        Advances the target's generator by one draw per patch.
        """
        p = self._patches(x)
        z0 = self._latents(p.mels)
        t, noise = self._draw(z0.shape[0], self._rng)
        return self._per_clip(self._errors(self._frozen_unet(), z0, t, noise, p.mask),
                              p.mask, p).mean()

    @torch.no_grad()
    def example_losses(self, x: Tensor, *, chunk: int = 64) -> Tensor:
        """L_gen per clip ``[batch]`` at K fixed timesteps with fixed noise (no gradient).

        See the module docstring; ``chunk`` bounds how many patch·timestep rows go through
        the U-Net at once (memory only; the values do not depend on it).
        """
        p = self._patches(x)
        z0 = self._latents(p.mels)
        d = self.config.diffusion
        k = d.eval_timesteps
        t = ((torch.arange(k, dtype=torch.float64) + 0.5) * d.timesteps / k).floor().long()
        gen = torch.Generator().manual_seed(_EVAL_SEED)
        noise = torch.randn((p.per_clip, k, *self.config.latent_shape), generator=gen)
        noise = noise.to(self.device).expand(p.batch, -1, -1, -1, -1, -1).reshape(
            -1, *self.config.latent_shape)                               # [n·K, C, H, W]
        z_rep = z0.repeat_interleave(k, dim=0)
        t_rep = t.to(self.device).repeat(z0.shape[0])
        mask_rep = p.mask.repeat_interleave(k, dim=0)
        sums = torch.cat([self._errors(self.unet, z_rep[i:i + chunk], t_rep[i:i + chunk],
                                       noise[i:i + chunk], mask_rep[i:i + chunk])
                          for i in range(0, z_rep.shape[0], chunk)])
        sums = sums.view(-1, k).mean(1)
        return self._per_clip(sums, p.mask, p)

    # ---------------------------------------------------------------- training

    def train_step(self, x: Tensor) -> float:
        """One denoiser step on the batch ``x`` (VAE frozen); returns the loss before it."""
        with torch.no_grad():
            p = self._patches(x.detach())
            z0 = self._latents(p.mels)
        t, noise = self._draw(z0.shape[0], self._rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._per_clip(self._errors(self.unet, z0, t, noise, p.mask), p.mask, p).mean()
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.unet.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return float(loss.detach())

    def fit_autoencoder(self, data: Tensor, *, steps: int = 1000, batch_size: int = 16,
                        lr: float = 1e-3) -> list[float]:
        """Train the VAE on the log-mel patches of ``data [clips, channels, samples]``.

        Each step: ``batch_size`` patches drawn (with replacement) from the target's
        generator, reparameterized posterior samples (generator noise), loss = mean L1
        reconstruction error + ``kl_weight`` · mean KL to N(0, I); Adam (lr ``lr``, a fresh
        optimizer per call). Then ``latent_scale`` = 1 / std of the posterior means over
        all patches. Returns the loss of every step. The VAE is frozen again afterwards.
        All patches of ``data`` are computed once up front (``n_mels · patch_frames``
        floats each, 64 KiB at the default), so pass a corpus that fits in memory.
        """
        if not (isinstance(steps, int) and steps >= 1):
            raise InputError(f"fit_autoencoder: steps={steps!r}; use a positive integer")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise InputError(f"fit_autoencoder: batch_size={batch_size!r}; use a positive "
                             "integer")
        with torch.no_grad():
            mels = self._patches(data.detach()).mels
        kl_weight = self.config.vae.kl_weight
        self.vae.requires_grad_(True)
        optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr)
        losses = []
        try:
            for _ in range(steps):
                idx = torch.randint(0, mels.shape[0], (batch_size,), generator=self._rng)
                batch = mels[idx.to(self.device)]
                mean, logvar = self.vae.encode(batch)
                eps = torch.randn(mean.shape, generator=self._rng).to(self.device)
                z = mean + (0.5 * logvar).exp() * eps
                rec = (self.vae.decode(z) - batch).abs().mean()
                kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
                loss = rec + kl_weight * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        finally:
            self.vae.requires_grad_(False)
            self.vae.zero_grad(set_to_none=True)
        with torch.no_grad():
            means = torch.cat([self.vae.encode(mels[i:i + 64])[0]
                               for i in range(0, mels.shape[0], 64)])
            std = float(means.std())
        self.latent_scale = 1.0 / std if std > 0 else 1.0
        return losses

    # -------------------------------------------------------------- generation

    def _latent_frames(self, seconds: float) -> tuple[int, int]:
        """Mel frames of ``seconds`` (as the front end counts them) and the latent width
        covering them (a multiple of the U-Net's downsampling)."""
        m = self.config.mel
        frames = m.num_frames(self._mel_samples(seconds))
        f, u = self.config.vae.factor, self.config.unet.factor
        width = -(-frames // f)
        return frames, -(-width // u) * u

    def _mel_samples(self, seconds: float) -> int:
        return max(1, round(seconds * self.config.mel.sample_rate_hz))

    @torch.no_grad()
    def generate(self, n: int, seconds: float, generator: torch.Generator | None = None, *,
                 steps: int = 50) -> Tensor:
        """``n`` log-mels ``[n, n_mels, frames]`` (CPU, natural log) by DDIM (η = 0) in
        ``steps`` evenly spaced timesteps; ``frames = 1 + round(seconds · mel rate) // hop``,
        as the front end frames a clip of that length.

        The initial noise comes from ``generator`` (seed 0 if None), so the result is a
        function of the weights, the generator state and the arguments.
        """
        if not (isinstance(n, int) and n >= 0):
            raise InputError(f"generate: n={n!r}; ask for zero or more clips")
        if not (isinstance(seconds, (int, float)) and 0 < seconds <= 3600):
            raise InputError(f"generate: seconds={seconds!r}; use a duration in (0, 3600]")
        timesteps = self.config.diffusion.timesteps
        if not (isinstance(steps, int) and 1 <= steps <= timesteps):
            raise InputError(f"generate: steps={steps!r}; use 1..{timesteps}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        frames, width = self._latent_frames(seconds)
        c, h, _ = self.config.latent_shape
        z = torch.randn((n, c, h, width), generator=gen, device=gen.device).to(self.device)
        schedule = torch.linspace(timesteps - 1, 0, steps).round().long().tolist()
        for i, t in enumerate(schedule):
            a = self.alphas_cumprod[t]
            a_prev = (self.alphas_cumprod[schedule[i + 1]] if i + 1 < len(schedule)
                      else torch.ones((), device=self.device))
            eps = self.unet(z, torch.full((n,), t, device=self.device, dtype=torch.long))
            z0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
            z = a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * eps
        mel = self.vae.decode(z / self.latent_scale)[:, 0, :, :frames]
        return (mel * self.config.log_mel_std + self.config.log_mel_mean).cpu()

    @torch.no_grad()
    def generate_audio(self, n: int, seconds: float,
                       generator: torch.Generator | None = None, *, steps: int = 50,
                       iterations: int = 32) -> Tensor:
        """``n`` mono waveforms ``[n, 1, samples]`` (``samples`` ≈ ``seconds ·
        sample_rate_hz``) at ``sample_rate_hz`` (CPU), clipped to
        [-1, 1]: :meth:`generate`, then Griffin-Lim (``iterations``) at the mel rate, then
        resampling. A preview: Griffin-Lim is phasey where a vocoder would not be."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        mel = self.generate(n, seconds, gen, steps=steps).to(self.device)
        wave = self.front.griffin_lim(mel, iterations=iterations, generator=gen,
                                      length=self._mel_samples(seconds))
        if n == 0:      # dsp.resample cannot reshape an empty batch
            samples = resampled_length(wave.shape[-1], self.config.mel.sample_rate_hz,
                                       self.sample_rate_hz)
            return torch.zeros((0, 1, samples))
        wave = resample(wave, self.config.mel.sample_rate_hz, self.sample_rate_hz)
        return wave.clamp(-1.0, 1.0).unsqueeze(1).cpu()

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Weights, ``latent_scale``, the denoiser's optimizer, the generator and step count."""
        return {"vae": self.vae.state_dict(), "unet": self.unet.state_dict(),
                "latent_scale": self.latent_scale, "optimizer": self.optimizer.state_dict(),
                "rng_state": self._rng.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (strict for the weights; the rest optional)."""
        self.vae.load_state_dict(state["vae"])
        self.unet.load_state_dict(state["unet"])
        self.latent_scale = float(state.get("latent_scale", 1.0))
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "rng_state" in state:
            self._rng.set_state(torch.as_tensor(state["rng_state"]).to("cpu", torch.uint8))
        self.steps = int(state.get("steps", 0))

    def _flat_tensors(self) -> dict[str, Tensor]:
        """Everything of :meth:`state_dict` as flat ``name → tensor`` (safetensors)."""
        flat: dict[str, Tensor] = {}
        for prefix, module in (("vae", self.vae), ("unet", self.unet)):
            for k, v in module.state_dict().items():
                flat[f"{prefix}.{k}"] = v
        for idx, entry in self.optimizer.state_dict()["state"].items():
            for k, v in entry.items():
                if v is not None:
                    flat[f"optimizer.state.{idx}.{k}"] = torch.as_tensor(v)
        flat["latent_scale"] = torch.tensor(self.latent_scale, dtype=torch.float64)
        flat["rng_state"] = self._rng.get_state()
        flat["steps"] = torch.tensor(self.steps, dtype=torch.int64)
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in flat.items()}

    def _check_shapes(self, flat: dict[str, Tensor]) -> None:
        """Raise ValueError naming the first missing, extra or mis-shaped weight (short)."""
        expected = {f"{prefix}.{k}": tuple(v.shape)
                    for prefix, module in (("vae", self.vae), ("unet", self.unet))
                    for k, v in module.state_dict().items()}
        saved = {k: tuple(v.shape) for k, v in flat.items() if k.split(".")[0] in
                 ("vae", "unet")}
        missing = sorted(set(expected) - set(saved))
        extra = sorted(set(saved) - set(expected))
        wrong = [k for k in expected if k in saved and saved[k] != expected[k]]
        if missing or extra or wrong:
            first = (f"{wrong[0]} is {list(saved[wrong[0]])} in the file but "
                     f"{list(expected[wrong[0]])} in the model" if wrong else
                     f"first missing: {missing[0]}" if missing else f"first extra: {extra[0]}")
            raise ValueError(f"{len(missing)} missing, {len(extra)} unexpected and "
                             f"{len(wrong)} mis-shaped weights ({first})")

    def _load_flat_tensors(self, flat: dict[str, Tensor], *, optimizer: bool,
                           rng: bool) -> None:
        self._check_shapes(flat)
        state: dict[str, Any] = {"vae": {}, "unet": {}}
        optim: dict[int, dict[str, Tensor]] = {}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in ("vae", "unet"):
                state[head][rest] = value
            elif head == "optimizer":
                _, idx, name = rest.split(".", 2)
                optim.setdefault(int(idx), {})[name] = value
            elif key == "latent_scale":
                state["latent_scale"] = float(value)
            elif key == "rng_state":
                if rng:
                    state["rng_state"] = value
            elif key == "steps":
                state["steps"] = int(value)
            else:
                raise ValueError(f"unexpected tensor {key!r}")
        if optimizer:
            state["optimizer"] = {"state": optim,
                                  "param_groups": self.optimizer.state_dict()["param_groups"]}
        self.load_state_dict(state)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created),
        each atomically. Returns the directory."""
        meta = {"format": _FORMAT, "version": _FORMAT_VERSION, "target": self.name,
                **self.options()}
        return checkpoint.write_checkpoint(directory, meta, self._flat_tensors())

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "cpu",
             optimizer: OptimizerName | None = None, lr: float | None = None,
             seed: int | None = None, sample_rate_hz: int | None = None,
             stereo: StereoMode | None = None) -> LatentDiffusionTarget:
        """A target saved by :meth:`save`; never unpickles anything.

        Options left at None keep the saved values. A different ``optimizer`` starts with
        fresh optimizer state (and its default lr unless ``lr`` is given); the same one
        resumes. A ``seed`` reseeds the training generator; without one it resumes. A
        different ``sample_rate_hz`` or ``stereo`` reuses the weights for other input.
        Raises ModelLoadError when the directory, ``config.json`` or the weights are
        missing, unreadable or do not match.
        """
        fix = ("point it at a directory written by LatentDiffusionTarget.save() holding "
               f"{CONFIG_FILE} and {SAFETENSORS_FILE}")
        where, config_path = checkpoint.open_checkpoint(directory, fix=fix)
        try:
            meta = checkpoint.check_format(json.loads(config_path.read_text()), name=_FORMAT,
                                           version=_FORMAT_VERSION)
            same_optimizer = optimizer is None or optimizer == meta["optimizer"]
            target = cls(
                LatentDiffusionConfig.from_dict(meta["config"]),
                sample_rate_hz=sample_rate_hz or meta["sample_rate_hz"],
                stereo=stereo or meta["stereo"],
                seed=meta["seed"] if seed is None else seed,
                optimizer=optimizer or meta["optimizer"],
                lr=lr if lr is not None else (meta["lr"] if same_optimizer else None),
                momentum=meta["momentum"], betas=tuple(meta["betas"]),  # type: ignore[arg-type]
                weight_decay=meta["weight_decay"], grad_clip=meta["grad_clip"],
                device=device)
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
            raise ModelLoadError(f"{config_path}: not a usable latent-diffusion config "
                                 f"({exc}); {fix}") from exc
        weights = checkpoint.require_weights(where, fix=fix)
        try:
            target._load_flat_tensors(checkpoint.read_weights(weights), optimizer=same_optimizer,
                                      rng=seed is None)
        except Exception as exc:  # corrupt file, missing or mis-shaped weights
            raise ModelLoadError(f"{weights}: cannot load these weights into the model of "
                                 f"{config_path} ({type(exc).__name__}: {exc}); {fix}") from exc
        return target

