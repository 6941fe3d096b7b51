"""The black-box bag: randomly initialized surrogate models of several families and sizes
(paper section 4.2, figure 4; settings in section 5.1: a bag of 10, Q = 7 sampled a round).

An artist does not know which model will be trained on their music, so the noise is
crafted against many small models at once, none of them trained beforehand: each starts
from its own random initialization and learns only from the artist's own file during the
bi-level loop (:func:`harmonycloak.perturb.optimize.meta_min_min`), exactly as an attacker's
model would start. Diversity is what transfers: the bags below mix the families of each
domain and, within a family, widths, depths, front ends and token rates.

Audio (:data:`AUDIO_BAG`), every surrogate at :data:`AUDIO_MODEL_RATE_HZ` (the file is
resampled once, inside the differentiable graph, not once per model):

* codec-token LMs (MusicLM / MusicGen family, :class:`~harmonycloak.targets.codec_lm.CodecLMTarget`):
  convolutional tokenizers with hops of 256–400 samples (40–62.5 tokens/s) and 2–4
  residual codebooks, Transformer decoders of 1–3 layers;
* latent diffusion on mel spectrograms (MusicLDM / Riffusion family,
  :class:`~harmonycloak.targets.latent_diffusion.LatentDiffusionTarget`): 32–64 mel bands,
  hops of 10–20 ms, VAEs and U-Nets of several widths;
* contrastive audio encoders (CLAP / MusicLDM's conditioning family,
  :class:`ContrastiveTarget`): conv encoders on log-mel of several FFT sizes, band counts
  and depths, trained with NT-Xent between two augmented views of the file's windows.

MIDI (:data:`MIDI_BAG`): MuseGAN-style GANs and symbolic Transformer LMs of several sizes.

Every surrogate carries the defender's outer-loop optimizer (SGD, momentum 0.9, lr 0.025:
section 5.1). :func:`build_bag` seeds each member from the protection seed and its place
in the bag, so the same seed gives the same bag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harmonycloak.errors import InputError

__all__ = [
    "AUDIO_BAG",
    "AUDIO_MODEL_RATE_HZ",
    "BAG_ALPHA",
    "MIDI_BAG",
    "ContrastiveTarget",
    "SurrogateSpec",
    "bag_alphas",
    "build_bag",
    "describe_bag",
]

AUDIO_MODEL_RATE_HZ = 16_000
"""The rate every audio surrogate works at (MusicGen's EnCodec 32 kHz, MusicLM's
SoundStream, MusicLDM and CLAP work at 16–48 kHz; 16 kHz keeps a CPU round affordable and
the band above 8 kHz is where codecs cut first anyway)."""

BAG_ALPHA = {"codec-lm": 0.30, "latent-diffusion": 0.22, "contrastive": 0.30,
             "musegan": 0.22, "symbolic-lm": 0.30}
"""α per family (paper section 5.1: 0.22 GANs, 0.30 autoregressive; see
:mod:`harmonycloak.targets.audio_registry` for the two the paper does not give); a round
uses the mean over its meta-training members."""


@dataclass(frozen=True)
class SurrogateSpec:
    """One member of a bag: its ``family`` (the target class), a short ``label`` for
    reports, and the model ``config`` (a family config dataclass)."""

    family: str
    label: str
    config: Any


def _codec(label: str, *, widths: tuple[int, ...], ratios: tuple[int, ...], codebooks: int,
           size: int, d_model: int, layers: int) -> SurrogateSpec:
    from harmonycloak.targets.codec_lm import CodecLMConfig

    config = CodecLMConfig(widths=widths, ratios=ratios, latent_dim=32, num_codebooks=codebooks,
                           codebook_size=size, stft_sizes=(256, 512), d_model=d_model,
                           n_layers=layers, n_heads=4, context_frames=400)
    return SurrogateSpec("codec-lm", label, config)


def _diffusion(label: str, *, n_mels: int, n_fft: int, hop: int, vae: tuple[int, ...],
               unet: tuple[int, ...], patch_frames: int = 128) -> SurrogateSpec:
    from harmonycloak.targets.latent_diffusion import (
        DiffusionConfig,
        LatentDiffusionConfig,
        UNetConfig,
        VAEConfig,
    )
    from harmonycloak.targets.mel import MelConfig

    config = LatentDiffusionConfig(mel=MelConfig(n_fft=n_fft, hop=hop, n_mels=n_mels),
                                   patch_frames=patch_frames,
                                   vae=VAEConfig(channels=vae, latent_channels=4),
                                   unet=UNetConfig(channels=unet, attention=False),
                                   diffusion=DiffusionConfig(eval_timesteps=4))
    return SurrogateSpec("latent-diffusion", label, config)


def _encoder(label: str, *, fft: int, hop: int, mels: int, widths: tuple[int, ...]) -> SurrogateSpec:
    from harmonycloak.targets.embedding import ContrastiveEncoderConfig

    config = ContrastiveEncoderConfig(fft_samples=fft, hop_samples=hop, num_mels=mels,
                                      widths=widths, hidden_dim=64, embedding_dim=32,
                                      window_s=2.5)
    return SurrogateSpec("contrastive", label, config)


def _audio_bag() -> tuple[SurrogateSpec, ...]:
    return (
        _codec("codec-lm hop 320, 4x64 codes, 2x64", widths=(8, 16, 24), ratios=(4, 8, 10),
               codebooks=4, size=64, d_model=64, layers=2),
        _codec("codec-lm hop 256, 2x128 codes, 1x96", widths=(12, 24), ratios=(16, 16),
               codebooks=2, size=128, d_model=96, layers=1),
        _codec("codec-lm hop 400, 3x32 codes, 3x48", widths=(8, 8, 16), ratios=(5, 8, 10),
               codebooks=3, size=32, d_model=48, layers=3),
        _codec("codec-lm hop 320, 2x256 codes, 2x128", widths=(16, 32), ratios=(16, 20),
               codebooks=2, size=256, d_model=128, layers=2),
        _diffusion("latent diffusion 64 mels, 10 ms", n_mels=64, n_fft=1024, hop=160,
                   vae=(8, 16), unet=(16, 32)),
        _diffusion("latent diffusion 32 mels, 16 ms", n_mels=32, n_fft=512, hop=256,
                   vae=(8, 16, 16), unet=(16, 32), patch_frames=64),
        _diffusion("latent diffusion 48 mels, 20 ms", n_mels=48, n_fft=1024, hop=320,
                   vae=(12, 24), unet=(24,), patch_frames=64),
        _encoder("encoder 64 mels, 4 levels", fft=1024, hop=320, mels=64, widths=(8, 16, 32, 32)),
        _encoder("encoder 40 mels, 2 levels", fft=512, hop=160, mels=40, widths=(16, 32)),
        _encoder("encoder 96 mels, 3 levels", fft=2048, hop=480, mels=96, widths=(12, 24, 24)),
    )


def _midi_bag() -> tuple[SurrogateSpec, ...]:
    from harmonycloak.targets.musegan import MuseGANConfig
    from harmonycloak.targets.symbolic_lm import SymbolicLMConfig

    def gan(label: str, **kw: Any) -> SurrogateSpec:
        return SurrogateSpec("musegan", label, MuseGANConfig(**kw))

    def lm(label: str, **kw: Any) -> SurrogateSpec:
        return SurrogateSpec("symbolic-lm", label, SymbolicLMConfig(**kw))

    return (
        gan("musegan z16, narrow", z_dim=16, temporal_hidden=64, private_temporal_hidden=32,
            bar_hidden=(64, 16), private_hidden=8, d_private=(8, 16, 32), d_shared=(32, 64),
            d_stream=16, d_merged=128),
        gan("musegan z8, tiny D", z_dim=8, temporal_hidden=32, private_temporal_hidden=16,
            bar_hidden=(32, 8), private_hidden=4, d_private=(4, 8, 16), d_shared=(16, 32),
            d_stream=8, d_merged=64),
        gan("musegan z32, wide G", z_dim=32, temporal_hidden=128, private_temporal_hidden=64,
            bar_hidden=(128, 16), private_hidden=8, d_private=(8, 16, 32), d_shared=(64, 64),
            d_stream=16, d_merged=128),
        gan("musegan z16, wide D", z_dim=16, temporal_hidden=64, private_temporal_hidden=32,
            bar_hidden=(64, 16), private_hidden=8, d_private=(16, 32, 64), d_shared=(64, 128),
            d_stream=32, d_merged=256),
        gan("musegan z24", z_dim=24, temporal_hidden=96, private_temporal_hidden=48,
            bar_hidden=(96, 16), private_hidden=8, d_private=(8, 16, 32), d_shared=(32, 64),
            d_stream=16, d_merged=128),
        lm("symbolic-lm 1x64", d_model=64, n_layers=1, n_heads=4, max_tokens=512),
        lm("symbolic-lm 2x64", d_model=64, n_layers=2, n_heads=4, max_tokens=512),
        lm("symbolic-lm 2x96", d_model=96, n_layers=2, n_heads=4, max_tokens=512),
        lm("symbolic-lm 3x48", d_model=48, n_layers=3, n_heads=4, max_tokens=512),
        lm("symbolic-lm 1x128", d_model=128, n_layers=1, n_heads=8, max_tokens=512),
    )


AUDIO_BAG: tuple[SurrogateSpec, ...] = _audio_bag()
MIDI_BAG: tuple[SurrogateSpec, ...] = _midi_bag()


def bag_alphas(specs: tuple[SurrogateSpec, ...], alpha: float | None = None) -> list[float]:
    """α per member: ``alpha`` for all when given, else each family's :data:`BAG_ALPHA`."""
    return [alpha if alpha is not None else BAG_ALPHA[s.family] for s in specs]


def describe_bag(specs: tuple[SurrogateSpec, ...]) -> list[dict[str, str]]:
    """``[{"family", "label"}]`` for a report."""
    return [{"family": s.family, "label": s.label} for s in specs]


def build_bag(specs: tuple[SurrogateSpec, ...], *, seed: int, device: str = "cpu") -> list[Any]:
    """Fresh random-init targets, one per spec, member ``i`` seeded ``seed * 1000 + i``.

    Audio members take input at :data:`AUDIO_MODEL_RATE_HZ`; MIDI members take phrases.
    Every member trains with the defender's outer optimizer (SGD momentum 0.9, lr 0.025).
    """
    if not specs:
        raise InputError("the surrogate bag is empty; give at least two members")
    return [_build(spec, seed=seed * 1000 + i, device=device) for i, spec in enumerate(specs)]


def _build(spec: SurrogateSpec, *, seed: int, device: str) -> Any:
    if spec.family == "codec-lm":
        from harmonycloak.targets.codec_lm import CodecLMTarget

        return CodecLMTarget(spec.config, sample_rate_hz=AUDIO_MODEL_RATE_HZ, seed=seed,
                             device=device)
    if spec.family == "latent-diffusion":
        from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget

        return LatentDiffusionTarget(spec.config, sample_rate_hz=AUDIO_MODEL_RATE_HZ, seed=seed,
                                     device=device)
    if spec.family == "contrastive":
        return ContrastiveTarget(spec.config, seed=seed, device=device)
    if spec.family in ("musegan", "symbolic-lm"):
        from harmonycloak.targets.registry import new_target

        return new_target(spec.family, seed=seed, device=device, config=spec.config)
    raise InputError(f"surrogate family {spec.family!r}: use codec-lm, latent-diffusion, "
                     "contrastive, musegan or symbolic-lm")


class ContrastiveTarget:
    """A contrastive audio encoder as a Target: L_gen is its own training loss.

    Models of the CLAP family learn by telling an example's two views apart from the rest
    of the batch (NT-Xent); error-minimizing noise makes that trivially easy. ``loss(x)``
    cuts each example of ``x [batch, channels, samples]`` (at :data:`AUDIO_MODEL_RATE_HZ`)
    into ``config.window_s`` windows (mid of the channels), draws two random augmentations
    per window from the target's own generator (gain, time shift, noise, EQ:
    :func:`~harmonycloak.targets.embedding.sample_augmentations`) and returns the NT-Xent
    loss between the two views' embeddings over all windows (at least 2 are needed).
    """

    name = "contrastive"

    def __init__(self, config: Any, *, seed: int = 0, device: str = "cpu", lr: float = 0.025,
                 momentum: float = 0.9) -> None:
        from harmonycloak.targets.embedding import ContrastiveMusicEncoder

        self.config = config
        self.sample_rate_hz = AUDIO_MODEL_RATE_HZ
        self.encoder = ContrastiveMusicEncoder(config, seed=seed).to(device)
        self.optimizer = torch.optim.SGD(self.encoder.parameters(), lr=lr, momentum=momentum)
        self._rng = torch.Generator().manual_seed(seed + 7)

    def num_parameters(self) -> dict[str, int]:
        return {"encoder": self.encoder.num_parameters()}

    def _windows(self, x: Tensor) -> Tensor:
        mono = x.mean(dim=1)                                   # [batch, samples]
        size = self.encoder.window_samples
        if mono.shape[-1] < size:
            mono = torch.nn.functional.pad(mono, (0, size - mono.shape[-1]))
        count = mono.shape[-1] // size
        return mono[:, :count * size].reshape(-1, size)        # [batch * count, size]

    def _views_loss(self, x: Tensor) -> Tensor:
        from harmonycloak.targets.embedding import (
            apply_augmentations,
            nt_xent_loss,
            sample_augmentations,
        )

        windows = self._windows(x)
        if windows.shape[0] < 2:
            windows = torch.cat([windows, windows.flip(-1)])
        views = []
        for _ in range(2):
            params = sample_augmentations(windows.shape[0], windows.shape[-1], generator=self._rng,
                                          sample_rate_hz=self.sample_rate_hz)
            views.append(self.encoder.embed(apply_augmentations(windows, params,
                                                                sample_rate_hz=self.sample_rate_hz)))
        return nt_xent_loss(views[0], views[1], temperature=self.config.temperature)

    def loss(self, x: Tensor) -> Tensor:
        """NT-Xent of the batch's windows (differentiable in ``x``, θ frozen)."""
        self.encoder.requires_grad_(False)
        try:
            return self._views_loss(x)
        finally:
            self.encoder.requires_grad_(True)

    @torch.no_grad()
    def example_losses(self, x: Tensor) -> Tensor:
        """The batch's NT-Xent, once per example (a contrastive loss is a batch property)."""
        return self._views_loss(x).expand(x.shape[0]).clone()

    def train_step(self, x: Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._views_loss(x.detach())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return self.encoder.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        return self.encoder.load_state_dict(state)
