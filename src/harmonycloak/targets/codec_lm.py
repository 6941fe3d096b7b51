"""A codec-token autoregressive LM (the MusicLM / MusicGen family) as a HarmonyCloak target.

The paper protects against MusicLM (section 5.1), whose acoustic stage is an autoregressive
Transformer over the tokens of a neural audio codec (SoundStream); MusicGen (Copet et al.
2023, "Simple and controllable music generation") does the same over EnCodec tokens with
one decoder and a *delay pattern*. This module is a small, CPU-trainable member of that
family: a learned tokenizer and a causal Transformer over its codes.

Tokenizer (SoundStream / EnCodec in miniature)
-----------------------------------------------
Input audio ``[batch, channels, samples]`` at the file's rate ``sample_rate_hz`` is turned
into one mono signal per example at ``config.model_rate_hz`` (16 or 24 kHz) *inside* the
graph: stereo is folded to the mid channel ``(L + R) / 2`` (``stereo="mid"``, the default:
mono models are trained on the downmix, as MusicGen's mono checkpoints and the paper's
16 kHz mono MusicLM data are) or each channel becomes its own example
(``stereo="channels"``; per-example losses then average the channels). Resampling is
:func:`harmonycloak.perturb.dsp.resample`, differentiable. The signal is right-padded with
zeros to a whole number of frames, ``frames = ceil(samples / hop)``.

* Encoder: a SEANet-style 1-D conv net: a 7-tap conv, then per level a residual unit
  (ELU, dilated 3-tap conv to half width, ELU, 1x1 conv, skip) and a strided conv (kernel
  2r, stride r) that doubles the width, down to ``latent_dim`` channels at
  ``model_rate_hz / hop`` frames per second (``hop`` = product of ``ratios``; 50 Hz by
  default, MusicGen's frame rate). Conv weights start at N(0, 1/fan_in) with zero
  biases (variance-preserving; see "Codebook health" below).
* Residual vector quantizer: ``num_codebooks`` codebooks of ``codebook_size`` vectors;
  codebook k quantizes what codebooks < k left over (nearest codeword, Euclidean). The
  codebooks are buffers updated by exponential moving averages of their assigned vectors
  (decay ``ema_decay``, Laplace-smoothed counts, as in SoundStream / EnCodec); a codeword
  whose EMA count falls below ``dead_code_threshold`` times the uniform share (vectors
  per step / ``codebook_size``) is restarted, every step, at a distinct random vector of
  the batch. The encoder trains through the quantizer by the straight-through estimator,
  with the commitment loss ``Σ_k ‖r_k − sg(q_k)‖²`` (weight ``commitment_weight``).
* Decoder: the mirror image (transposed convs), used to train the tokenizer as an
  autoencoder and to turn generated codes back into audio.

:meth:`CodecLMTarget.fit_tokenizer` trains it on random crops with time-domain L1 plus a
multi-resolution STFT loss (spectral convergence + log-magnitude L1 at ``stft_sizes``)
plus the commitment loss, Adam(β = 0.5, 0.9) as in EnCodec. An attacker does this first;
the LM then trains with the tokenizer frozen. Until it is fitted the tokenizer is a seeded
random encoder whose codebooks are the k-means centroids of its own outputs on 16 s of
seeded :func:`music_like_noise`, so every method works (and is deterministic) from
construction on; on dev music this random tokenizer uses 130–240 of 256 codes per
codebook (entropy 4–5.3 nats). The first :meth:`~CodecLMTarget.fit_tokenizer` step of a
fresh tokenizer replaces those codebooks by k-means (10 Lloyd iterations, stage by stage on
the residuals) of the encoder's outputs on 16 batches of training crops.

Codebook health. With PyTorch's default conv init (uniform weights *and* biases of
±1/√fan_in) the signal shrank at every layer while the biases did not: the random
encoder's latents were a constant vector with ~0.4 % of their spread varying in time and
the random decoder's output depended on its input by ~0.1 %. Fitting then had nothing to
start from: the codes collapsed onto a few codewords near that constant (2–12 of 256 codes
on 16 dev-music excerpts after 200 steps, 0.03–0.33 nats), the EMA codebooks (decay 0.99,
counts started at 1 and a restart threshold of 0.1, reached only after 229 idle steps)
never recovered, and an LM over those codes reached ~0.1 nats/token in a few dozen steps.
Now: variance-preserving init, k-means init, decay 0.95 (a 20-step memory: the encoder
moves quickly early in a fit) and a restart threshold relative to the uniform share. At the
default config on 60 four-second dev-music excerpts, 200 fit steps (batch 8 × 1 s) leave
208–221 of 256 codes in use per codebook on 16 excerpts (4.35–4.6 nats), 218–237 after 400.

Language model (MusicGen's delay pattern)
-----------------------------------------
Codes ``[K, T]`` are laid out with codebook k delayed by k steps: label ``[k, s]`` is
``code[k, s − k]`` for ``k <= s < T + k`` and the special token ``V = codebook_size``
elsewhere, ``S = T + K − 1`` steps; the input at step s is the labels of step s − 1 (BOS =
the special token at step 0). This is exactly the layout of transformers'
``MusicgenForCausalLM.build_delay_pattern_mask`` + ``shift_tokens_right`` and of
audiocraft's ``DelayedPatternProvider``: one Transformer step predicts all K codebooks,
codebook k conditioned on codebooks < k of the same frame. Input embedding = sum of the K
per-codebook embeddings (each with V + 1 rows) + MusicGen's sinusoidal positions; a causal
pre-norm Transformer (GELU MLP, softmax attention); one linear head per codebook.
Sequences longer than ``context_frames`` frames are cut into windows of that many frames,
each starting from BOS (training crops, as MusicGen trains on 30 s segments); the last
window is padded and its padding masked.

L_gen = next-token NLL in nats per (codebook) token, averaged over every predicted token
of the batch (the special tokens of the delay pattern are not predicted).

Differentiable in the waveform
------------------------------
The codes are discrete, so the gradient reaches ``x`` through *soft assignments*: for each
codebook, ``p_v = softmax_v(−d²_v / (τ · d²_min))`` over its codewords ``c_v``, where
``d²_v = ‖r − c_v‖²``, r is the residual (the quantized part of earlier codebooks is
subtracted as a constant), d²_min the distance to the nearest codeword (detached) and τ =
``soft_temperature`` (0.1: a codeword 10 % farther than the nearest keeps e⁻¹ of its
weight). Relative distances keep τ scale-free and robust to near-duplicate codewords (a
global scale such as the codebooks' nearest-neighbour spacing made the assignments
one-hot on fresh codebooks). Then

* targets: ``soft_targets="straight-through"`` (default): the cross-entropy target is
  ``onehot(code) + p − sg(p)``, so the *value* is exactly the hard-code NLL the attacker
  trains on and the gradient flows through p; ``"soft"``: the target is p itself (value
  and gradient of the soft cross-entropy);
* inputs: straight-through quantized embeddings ``E[code] + p·E − sg(p·E)`` (the value of
  the hard code's embedding, the gradient of the soft one).

``loss`` therefore has a non-zero gradient in ``x`` (tested), and no gradient into θ
(parameters are frozen while the graph is built, which also halves the backward cost).

Configs (``num_parameters()``: tokenizer / LM; one CPU thread, loss + backward of a
10 s stereo 44.1 kHz clip, measured on a shared machine):

* :meth:`CodecLMConfig.tiny`: 16 kHz, hop 32, 2 codebooks of 16, d 32, 2 layers;
  6.4 k / 19.3 k (tests);
* :meth:`CodecLMConfig.cpu` (the default): 16 kHz, hop 320 (50 Hz), widths 8–128,
  4 codebooks of 256, d 256, 4 layers, 10 s windows; 0.42 M / 3.68 M; about 0.3–0.4 s;
* :meth:`CodecLMConfig.large`: 24 kHz, hop 480 (50 Hz), widths 32–512, 4 codebooks of
  1024, d 512, 8 layers, dropout 0.1, 30 s windows (MusicGen's segment length);
  6.0 M / 29.4 M; about 1.7–2 s.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.dsp import resample
from harmonycloak.targets import checkpoint
from harmonycloak.targets.checkpoint import CONFIG_FILE, SAFETENSORS_FILE

__all__ = [
    "CodecLMConfig",
    "CodecLMTarget",
    "RVQAssignment",
    "SoftTargets",
    "StereoMode",
    "code_nll",
    "delay_pattern",
    "delay_soft",
    "check_audio",
    "ema_codebook_update",
    "fold_channels",
    "frozen",
    "kmeans",
    "multi_resolution_stft_loss",
    "music_like_noise",
    "seeded_rng",
    "shift_right",
    "sinusoidal_positions",
    "soft_rvq",
    "undelay",
    "window_frames",
]

StereoMode = Literal["mid", "channels"]
SoftTargets = Literal["straight-through", "soft"]
OptimizerName = Literal["sgd", "adam", "adamw"]

FORMAT_NAME = "harmonycloak.codec-lm"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CodecLMConfig:
    """Sizes of the tokenizer and the LM. Use the named constructors; fields are validated.

    Tokenizer: ``model_rate_hz`` (16000 or 24000), ``widths`` (channels at each encoder
    level, before its downsampling; the last level's strided conv doubles it),
    ``ratios`` (downsampling per level; ``hop`` is their product), ``latent_dim``,
    ``num_codebooks`` × ``codebook_size``, ``ema_decay``, ``dead_code_threshold`` (a
    codeword whose EMA count falls below this fraction of the uniform share, vectors per
    step / ``codebook_size``, is restarted), ``commitment_weight``, ``stft_sizes``
    (FFT sizes of the multi-resolution STFT loss, hop a quarter of each).

    LM: ``d_model``, ``n_layers``, ``n_heads``, ``d_ff`` (0 means 4·d_model), ``dropout``,
    ``context_frames`` (window length in frames). Differentiability:
    ``soft_temperature`` τ and ``soft_targets`` (see the module docstring).
    """

    model_rate_hz: int = 16000
    widths: tuple[int, ...] = (8, 16, 32, 64)
    ratios: tuple[int, ...] = (2, 4, 5, 8)
    latent_dim: int = 64
    num_codebooks: int = 4
    codebook_size: int = 256
    ema_decay: float = 0.95
    dead_code_threshold: float = 0.5
    commitment_weight: float = 0.25
    stft_sizes: tuple[int, ...] = (256, 512, 1024)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 0
    dropout: float = 0.0
    context_frames: int = 500
    soft_temperature: float = 0.1
    soft_targets: SoftTargets = "straight-through"

    def __post_init__(self) -> None:
        for name in ("widths", "ratios", "stft_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise InputError naming the first field that cannot build the model."""
        def bad(name: str, why: str) -> InputError:
            return InputError(f"CodecLMConfig.{name}={getattr(self, name)!r}: {why}")

        if self.model_rate_hz not in (16000, 24000):
            raise bad("model_rate_hz", "use 16000 or 24000 (the tokenizer's internal rate)")
        if not self.widths or len(self.widths) != len(self.ratios):
            raise bad("widths", f"needs one width per ratio ({len(self.ratios)} ratios)")
        if any(w < 1 for w in self.widths) or any(r < 1 for r in self.ratios):
            raise bad("widths", "widths and ratios must be positive integers")
        for name in ("latent_dim", "num_codebooks", "n_layers", "context_frames"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be a positive integer")
        if self.codebook_size < 2:
            raise bad("codebook_size", "must be at least 2")
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise bad("d_model", f"must be a positive multiple of n_heads={self.n_heads}")
        if self.d_ff < 0:
            raise bad("d_ff", "must be >= 0 (0 means 4 * d_model)")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if not 0.0 < self.ema_decay < 1.0:
            raise bad("ema_decay", "must be in (0, 1)")
        if self.dead_code_threshold < 0 or self.commitment_weight < 0:
            raise bad("dead_code_threshold", "thresholds and weights must be >= 0")
        if not self.stft_sizes or any(n < 16 for n in self.stft_sizes):
            raise bad("stft_sizes", "give one or more FFT sizes of at least 16 samples")
        if not (math.isfinite(self.soft_temperature) and self.soft_temperature > 0):
            raise bad("soft_temperature", "must be a positive finite number")
        if self.soft_targets not in ("straight-through", "soft"):
            raise bad("soft_targets", "use 'straight-through' or 'soft'")

    @property
    def hop(self) -> int:
        """Samples at ``model_rate_hz`` per frame (product of ``ratios``)."""
        return math.prod(self.ratios)

    @property
    def frame_rate_hz(self) -> float:
        """Frames (tokens per codebook) per second."""
        return self.model_rate_hz / self.hop

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    @classmethod
    def tiny(cls) -> CodecLMConfig:
        """For tests: 16 kHz, hop 32 (500 Hz frames), 2 codebooks of 16, d 32, 2 layers."""
        return cls(widths=(4, 8), ratios=(4, 8), latent_dim=8, num_codebooks=2,
                   codebook_size=16, stft_sizes=(64, 128), d_model=32, n_layers=2,
                   n_heads=2, d_ff=64, context_frames=64)

    @classmethod
    def cpu(cls) -> CodecLMConfig:
        """The default: 16 kHz, 50 Hz frames, 4 codebooks of 256, d 256, 4 layers, 10 s."""
        return cls()

    @classmethod
    def large(cls) -> CodecLMConfig:
        """24 kHz, 50 Hz frames, 4 codebooks of 1024, d 512, 8 layers, 30 s windows."""
        return cls(model_rate_hz=24000, widths=(32, 64, 128, 256), ratios=(3, 4, 5, 8),
                   latent_dim=128, codebook_size=1024, stft_sizes=(512, 1024, 2048),
                   d_model=512, n_layers=8, n_heads=8, dropout=0.1, context_frames=1500)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("widths", "ratios", "stft_sizes"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecLMConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise InputError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"CodecLMConfig: unknown keys {unknown}; expected {sorted(known)}")
        return cls(**data)


# ------------------------------------------------------------- shared token helpers


def check_audio(x: Any, *, sample_rate_hz: int) -> None:
    """Raise InputError unless ``x`` is a float tensor ``[batch, 1 or 2, samples >= 1]``."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] not in (1, 2) or x.shape[2] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"audio of shape {shape} at {sample_rate_hz} Hz; expected a float "
                         "tensor [batch, channels (1 or 2), samples >= 1]")
    if not x.is_floating_point():
        raise InputError(f"audio of dtype {x.dtype}; expected float32 samples in [-1, 1]")


def fold_channels(x: Tensor, *, stereo: StereoMode, sample_rate_hz: int) -> tuple[Tensor, Tensor]:
    """Audio ``[batch, channels, samples]`` → mono rows ``[rows, samples]`` and their owner.

    ``stereo="mid"``: one row per example, the channel mean (a mono input is itself);
    ``"channels"``: one row per channel. ``owner [rows]`` (long) is each row's example.
    Raises InputError (via :func:`check_audio`) on anything but ``[batch, 1|2, samples]``.
    """
    check_audio(x, sample_rate_hz=sample_rate_hz)
    batch, channels, _ = x.shape
    owner = torch.arange(batch, device=x.device)
    if stereo == "mid" or channels == 1:
        return x.mean(dim=1), owner
    return x.reshape(batch * channels, -1), owner.repeat_interleave(channels)


@dataclass
class RVQAssignment:
    """Residual-VQ assignment of latents ``[rows, frames, dim]``.

    ``codes`` long ``[rows, K, frames]`` (nearest codeword per stage); ``soft``
    ``[rows, K, frames, V]`` soft assignments (None when not asked for); ``quantized``
    ``[rows, frames, dim]`` the sum of the chosen codewords; ``residuals`` the input of
    every stage ``[K, rows, frames, dim]`` (stage k quantizes ``residuals[k]``).
    """

    codes: Tensor
    soft: Tensor | None
    quantized: Tensor
    residuals: Tensor


def soft_rvq(latent: Tensor, codebooks: Tensor, *, temperature: float,
             soft: bool = True) -> RVQAssignment:
    """Residual vector quantization of ``latent [rows, frames, dim]`` by ``codebooks [K, V, dim]``.

    Hard codes are the nearest codewords (EnCodec's ``EncodecEuclideanCodebook.quantize``).
    With ``soft``, also the soft assignments of every stage,
    ``p_v = softmax_v(−d²_v / (temperature · d²_min))``: squared distances relative to the
    nearest one (detached, floored at 1e-6 of the codebook's mean energy), so the
    temperature is scale-free — at 0.1 a codeword 10 % farther (in d²) than the nearest
    gets e⁻¹ of its weight. The residual of stage k + 1 is the residual of stage k minus
    the chosen codeword, a constant, so gradients pass through unchanged.
    """
    residual = latent
    codes, softs, residuals = [], [], []
    quantized = torch.zeros_like(latent)
    for k in range(codebooks.shape[0]):
        cb = codebooks[k].to(latent.dtype)
        residuals.append(residual)
        d2 = ((residual * residual).sum(-1, keepdim=True) - 2 * residual @ cb.t()
              + (cb * cb).sum(-1)).clamp_min(0)                      # [rows, frames, V]
        nearest = d2.detach().min(-1, keepdim=True)
        codes.append(nearest.indices.squeeze(-1))
        if soft:
            floor = 1e-6 * (cb * cb).sum(-1).mean().detach().clamp_min(1e-12)
            scale = float(temperature) * nearest.values.clamp_min(floor)
            softs.append(torch.softmax(-(d2 - nearest.values) / scale, -1))
        chosen = F.embedding(codes[-1], cb).detach()
        quantized = quantized + chosen
        residual = residual - chosen
    return RVQAssignment(codes=torch.stack(codes, 1),
                         soft=torch.stack(softs, 1) if soft else None,
                         quantized=quantized, residuals=torch.stack(residuals))


def window_frames(codes: Tensor, soft: Tensor | None, *, frames: int
                  ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Cut ``codes [rows, K, T]`` (and ``soft [rows, K, T, V]``) into windows of ``frames``.

    Returns ``(codes [rows·n, K, frames], soft or None, valid [rows·n, K, frames] bool,
    row [rows·n] long)`` with ``n = ceil(T / frames)``; the last window is padded (code 0,
    soft 0, valid False). A clip no longer than ``frames`` is one window of its own length.
    """
    rows, k_count, total = codes.shape
    if total <= frames:
        valid = torch.ones_like(codes, dtype=torch.bool)
        return codes, soft, valid, torch.arange(rows, device=codes.device)
    n = -(-total // frames)
    pad = n * frames - total
    valid = F.pad(torch.ones_like(codes, dtype=torch.bool), (0, pad))
    codes = F.pad(codes, (0, pad))
    def fold(z: Tensor) -> Tensor:
        tail = z.shape[3:]
        return z.reshape(rows, k_count, n, frames, *tail).transpose(1, 2).reshape(
            rows * n, k_count, frames, *tail)

    if soft is not None:
        soft = fold(F.pad(soft, (0, 0, 0, pad)))
    row = torch.arange(rows, device=codes.device).repeat_interleave(n)
    return fold(codes), soft, fold(valid), row


def delay_pattern(codes: Tensor, delays: Sequence[int], *, pad_id: int,
                  valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """MusicGen's delay pattern: ``codes [B, K, T]`` → ``(labels [B, K, S], valid [B, K, S])``.

    ``S = T + max(delays)``; ``labels[:, k, s] = codes[:, k, s − delays[k]]`` where that
    frame exists (and ``valid`` says it is real), ``pad_id`` elsewhere — transformers'
    ``build_delay_pattern_mask`` without its leading BOS column.
    """
    batch, k_count, total = codes.shape
    span = total + max(delays)
    labels = torch.full((batch, k_count, span), pad_id, dtype=torch.long, device=codes.device)
    mask = torch.zeros((batch, k_count, span), dtype=torch.bool, device=codes.device)
    frame_valid = torch.ones_like(codes, dtype=torch.bool) if valid is None else valid
    for k, d in enumerate(delays):
        labels[:, k, d:d + total] = torch.where(frame_valid[:, k], codes[:, k],
                                                torch.full_like(codes[:, k], pad_id))
        mask[:, k, d:d + total] = frame_valid[:, k]
    return labels, mask


def delay_soft(soft: Tensor, delays: Sequence[int]) -> Tensor:
    """``soft [B, K, T, V]`` laid out like :func:`delay_pattern` (zeros where padded)."""
    span = soft.shape[2] + max(delays)
    return torch.stack([F.pad(soft[:, k], (0, 0, d, span - soft.shape[2] - d))
                        for k, d in enumerate(delays)], 1)


def undelay(labels: Tensor, delays: Sequence[int], frames: int) -> Tensor:
    """Inverse of :func:`delay_pattern`: ``labels [B, K, S]`` → ``codes [B, K, frames]``."""
    return torch.stack([labels[:, k, d:d + frames] for k, d in enumerate(delays)], 1)


def shift_right(labels: Tensor, bos: int | float) -> Tensor:
    """Inputs for next-token prediction: ``bos`` at step 0, then ``labels[..., :-1]``.

    Works for ids ``[B, K, S]`` and (with ``bos`` 0) soft targets ``[B, K, S, V]`` along S
    (transformers' musicgen ``shift_tokens_right``).
    """
    if labels.dim() == 3:
        return F.pad(labels[..., :-1], (1, 0), value=bos)
    return F.pad(labels[:, :, :-1], (0, 0, 1, 0), value=bos)


def code_nll(logits: Tensor, labels: Tensor, valid: Tensor, *, soft: Tensor | None = None,
             mode: SoftTargets = "straight-through") -> Tensor:
    """Per-token NLL ``[B, K, S]`` in nats (0 where not ``valid``).

    ``logits [B, K, S, V]``, ``labels [B, K, S]``. With ``soft [B, K, S, V]``:
    ``"straight-through"`` adds ``−Σ_v (p_v − sg(p_v)) log q_v`` (value unchanged, the
    gradient of the soft cross-entropy in p); ``"soft"`` returns ``−Σ_v p_v log q_v``.
    """
    vocab = logits.shape[-1]
    logp = F.log_softmax(logits.float(), dim=-1)
    safe = torch.where(valid, labels, torch.zeros_like(labels)).clamp(0, vocab - 1)
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    if soft is not None:
        soft = soft.to(logp.dtype)
        if mode == "soft":
            nll = -(soft * logp).sum(-1)
        else:
            nll = nll - ((soft - soft.detach()) * logp).sum(-1)
    return torch.where(valid, nll, torch.zeros_like(nll))


def multi_resolution_stft_loss(estimate: Tensor, reference: Tensor, *,
                               n_ffts: Sequence[int]) -> Tensor:
    """Σ over FFT sizes of spectral convergence + mean |log |X̂| − log |X||, per signal.

    ``estimate, reference [..., samples]`` → ``[...]`` (take ``.mean()`` for a batch loss).
    Hann windows, hop n_fft / 4 (Yamamoto et al. 2020, Parallel WaveGAN, eq. 4–6;
    SoundStream and EnCodec use the same kind of multi-scale spectral reconstruction
    term). Signals shorter than an FFT are zero-padded to it.
    """
    lead = estimate.shape[:-1]
    est = estimate.reshape(-1, estimate.shape[-1])
    ref = reference.reshape(-1, reference.shape[-1])
    total = est.new_zeros(est.shape[0])
    for n_fft in n_ffts:
        pad = max(0, n_fft - est.shape[-1])
        est_, ref_ = F.pad(est, (0, pad)), F.pad(ref, (0, pad))
        window = torch.hann_window(n_fft, device=est.device, dtype=est.dtype)
        spec = lambda z: torch.stft(z, n_fft, hop_length=n_fft // 4, window=window,  # noqa: E731
                                    return_complex=True).abs()
        s_est, s_ref = spec(est_), spec(ref_)
        convergence = ((s_ref - s_est).square().sum((1, 2)).sqrt()
                       / s_ref.square().sum((1, 2)).sqrt().clamp_min(1e-7))
        log_mag = (torch.log(s_est.clamp_min(1e-7))
                   - torch.log(s_ref.clamp_min(1e-7))).abs().mean((1, 2))
        total = total + convergence + log_mag
    return total.reshape(lead)


def ema_codebook_update(embed: Tensor, embed_avg: Tensor, cluster_size: Tensor, vectors: Tensor,
                        codes: Tensor, *, decay: float, eps: float = 1e-5) -> None:
    """One EMA step of a codebook in place (SoundStream / EnCodec / audiocraft).

    ``embed, embed_avg [V, D]``, ``cluster_size [V]``, ``vectors [N, D]``, ``codes [N]``:
    counts and sums of the assigned vectors are averaged with ``decay``; codewords are the
    averaged sums over Laplace-smoothed averaged counts.
    """
    vocab = embed.shape[0]
    vectors = vectors.detach().to(embed.dtype)
    counts = torch.bincount(codes, minlength=vocab).to(embed.dtype)
    sums = torch.zeros_like(embed).index_add_(0, codes, vectors)
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + vocab * eps) * n
    embed.copy_(embed_avg / smoothed.unsqueeze(1))


NOISE_INIT_SECONDS = 16.0
NOISE_ROW_SECONDS = 2.0


def music_like_noise(rows: int, samples: int, *, sample_rate_hz: int,
                     generator: torch.Generator) -> Tensor:
    """Seeded noise with music's range of spectra and loudness, ``[rows, samples]`` in [-1, 1].

    Each row is Gaussian noise shaped to a power spectrum ∝ f^−α (α uniform in [0, 2]:
    white to brown noise; long-term music spectra lie mostly between pink, α = 1, and
    brown), under a piecewise-constant gain that changes every 50–250 ms and spans 40 dB
    (−46 to −6 dBFS RMS, then clipped to [-1, 1]), so the random encoder sees loud and
    quiet, bright and dark frames. Used to initialize the codebooks of a fresh tokenizer.
    """
    spectrum = torch.fft.rfft(torch.randn(rows, samples, generator=generator))
    freq_hz = torch.fft.rfftfreq(samples, 1.0 / sample_rate_hz).clamp_min(20.0)
    alpha = 2.0 * torch.rand(rows, 1, generator=generator)
    shaped = torch.fft.irfft(spectrum * (freq_hz / 1000.0) ** (-alpha / 2), n=samples)
    shaped = shaped / shaped.std(-1, keepdim=True).clamp_min(1e-12)
    segment = max(1, round(0.05 * sample_rate_hz))
    pieces = -(-samples // segment)
    hold = torch.randint(1, 6, (rows, pieces), generator=generator)    # 1–5 segments each,
    # so each row's held levels cover at least ``pieces`` segments
    level_db = -46.0 + 40.0 * torch.rand(rows, pieces, generator=generator)
    gains = torch.stack([torch.repeat_interleave(level_db[r], hold[r])[:pieces]
                         for r in range(rows)])
    gain = (10.0 ** (gains / 20.0)).repeat_interleave(segment, dim=1)[:, :samples]
    return (shaped * gain).clamp(-1.0, 1.0)


KMEANS_ITERS = 10
INIT_BATCHES = 16


def _random_rows(n: int, count: int, *, generator: torch.Generator) -> Tensor:
    """``count`` row indices in ``[0, n)``: distinct when ``count <= n``, else with repeats."""
    if count <= n:
        return torch.randperm(n, generator=generator)[:count]
    return torch.randint(n, (count,), generator=generator)


@torch.no_grad()
def kmeans(vectors: Tensor, k: int, *, iters: int, generator: torch.Generator
           ) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means of ``vectors [N, D]`` → ``(centroids [k, D], counts [k])``.

    Starts from ``k`` distinct random vectors (with repeats when ``k > N``); a cluster
    left empty is re-seeded at a random vector. ``counts`` are the cluster sizes of the
    final centroids. The codebook init of audiocraft / EnCodec (``kmeans`` in
    ``core_vq.py``), which keeps empty clusters where they were instead.
    """
    n = vectors.shape[0]
    centroids = vectors[_random_rows(n, k, generator=generator).to(vectors.device)].clone()
    for _ in range(max(1, iters)):
        assign = torch.cdist(vectors, centroids).argmin(-1)
        counts = torch.bincount(assign, minlength=k).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        empty = (~filled).nonzero().squeeze(1)
        if empty.numel():
            centroids[empty] = vectors[_random_rows(n, empty.numel(), generator=generator)
                                       .to(vectors.device)]
    assign = torch.cdist(vectors, centroids).argmin(-1)
    return centroids, torch.bincount(assign, minlength=k).to(vectors.dtype)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Build graphs without parameter gradients (restores ``requires_grad`` afterwards).

    Autograd records requires_grad when an op runs, so a graph built inside this block
    never reaches the parameters, even when its backward runs later.
    """
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's RNG (CPU, and ``device``'s when it is a GPU) and Python's
    ``random`` seeded from ``seed``; all of them are restored afterwards. For dropout and
    transformers' layer-drop inside a target's training step: the caller's global RNG
    state is left exactly as it was."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    python_state = random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


def sinusoidal_positions(length: int, dim: int, *, offset: int = 0,
                         device: torch.device | None = None) -> Tensor:
    """MusicGen's sinusoidal position table ``[length, dim]`` (cos half, then sin half)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=device)
                     * -(math.log(10000.0) / max(half - 1, 1)))
    pos = torch.arange(offset, offset + length, dtype=torch.float32, device=device).unsqueeze(1)
    table = torch.cat([torch.cos(pos * freq), torch.sin(pos * freq)], dim=1)
    return F.pad(table, (0, dim - 2 * half))


# ----------------------------------------------------------------------- tokenizer


class _ResUnit(nn.Module):
    """SEANet residual unit: x + conv1x1(ELU(conv3(ELU(x)))), half width inside."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.conv1 = nn.Conv1d(channels, hidden, 3, dilation=dilation, padding=dilation)
        self.conv2 = nn.Conv1d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


class _Encoder(nn.Module):
    """Waveform ``[rows, 1, frames·hop]`` → latents ``[rows, latent_dim, frames]``."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        widths = list(config.widths) + [2 * config.widths[-1]]
        self.ratios = config.ratios
        self.stem = nn.Conv1d(1, widths[0], 7, padding=3)
        self.units = nn.ModuleList(_ResUnit(w) for w in widths[:-1])
        self.downs = nn.ModuleList(nn.Conv1d(widths[i], widths[i + 1], 2 * r, stride=r)
                                   for i, r in enumerate(config.ratios))
        self.out = nn.Conv1d(widths[-1], config.latent_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for unit, down, r in zip(self.units, self.downs, self.ratios):
            h = F.pad(F.elu(unit(h)), ((r + 1) // 2, r // 2))   # kernel 2r, stride r: L → L/r
            h = down(h)
        return self.out(F.elu(h))


class _Decoder(nn.Module):
    """Latents ``[rows, latent_dim, frames]`` → waveform ``[rows, 1, frames·hop]``."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        widths = list(config.widths) + [2 * config.widths[-1]]
        self.ratios = config.ratios
        self.stem = nn.Conv1d(config.latent_dim, widths[-1], 7, padding=3)
        self.ups = nn.ModuleList(nn.ConvTranspose1d(widths[i + 1], widths[i], 2 * r, stride=r)
                                 for i, r in enumerate(config.ratios))
        self.units = nn.ModuleList(_ResUnit(w) for w in widths[:-1])
        self.out = nn.Conv1d(widths[0], 1, 7, padding=3)

    def forward(self, z: Tensor) -> Tensor:
        h = self.stem(z)
        for i in reversed(range(len(self.ratios))):
            r, length = self.ratios[i], h.shape[-1]
            h = self.ups[i](F.elu(h))[..., (r + 1) // 2:(r + 1) // 2 + length * r]
            h = self.units[i](h)
        return self.out(F.elu(h))


class _Quantizer(nn.Module):
    """Codebooks as EMA buffers: ``embed``, ``embed_avg`` ``[K, V, D]``, ``cluster_size [K, V]``."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        k, v, d = config.num_codebooks, config.codebook_size, config.latent_dim
        self.register_buffer("embed", torch.zeros(k, v, d))
        self.register_buffer("embed_avg", torch.zeros(k, v, d))
        self.register_buffer("cluster_size", torch.zeros(k, v))


def _variance_preserving_init_(module: nn.Module, generator: torch.Generator) -> None:
    """Conv weights ~ N(0, 1 / fan_in), biases 0, in place.

    ``fan_in`` is in_channels · kernel for a conv and in_channels · kernel / stride for a
    transposed conv (the taps that reach one output sample). PyTorch's default (uniform
    ±1/√fan_in weights *and* biases, a third of this variance) shrinks the signal at every
    layer while the biases do not shrink: the random encoder's latents were a constant
    vector with ~0.4 % of their spread varying in time, and the random decoder's output
    depended on its input by ~0.1 %, so training had no signal to start from and the
    codebooks collapsed onto that constant.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)):
            weight = layer.weight
            if isinstance(layer, nn.ConvTranspose1d):
                fan_in = weight.shape[0] * weight.shape[2] / layer.stride[0]
            else:
                fan_in = weight.shape[1] * weight.shape[2]
            with torch.no_grad():
                weight.copy_(torch.randn(weight.shape, generator=generator) / math.sqrt(fan_in))
                if layer.bias is not None:
                    layer.bias.zero_()


class _Tokenizer(nn.Module):
    def __init__(self, config: CodecLMConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        self.quantizer = _Quantizer(config)
        _variance_preserving_init_(self, generator)


# ----------------------------------------------------------------------------- LM


class _Block(nn.Module):
    """Pre-norm causal self-attention + GELU MLP, with an optional key/value cache."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, config.ff_width), nn.GELU(),
                                nn.Linear(config.ff_width, d))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, h: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        batch, length, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(d, dim=2)
        heads = lambda z: z.view(batch, length, self.n_heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        causal = cache is None or length > 1
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        h = h + self.drop(self.proj(a.transpose(1, 2).reshape(batch, length, d)))
        return h + self.drop(self.ff(self.norm2(h)))


class _CodecLM(nn.Module):
    """K embeddings of V + 1 rows (the last is BOS/pad), causal blocks, K linear heads."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        k, v, d = config.num_codebooks, config.codebook_size, config.d_model
        self.embed = nn.Parameter(torch.randn(k, v + 1, d) * 0.02)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        self.heads = nn.Parameter(torch.randn(k, d, v) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        for block in self.blocks:   # GPT-2 init: residual projections scaled by depth
            for layer in (block.qkv, block.proj, block.ff[0], block.ff[2]):
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * config.n_layers))
            nn.init.normal_(block.ff[2].weight, std=0.02 / math.sqrt(2 * config.n_layers))

    def embed_inputs(self, ids: Tensor, soft: Tensor | None = None) -> Tensor:
        """``ids [B, K, S]`` (and soft inputs ``[B, K, S, V]``) → embeddings ``[B, S, d]``,
        summed over codebooks (straight-through soft part when ``soft`` is given)."""
        k_count = self.embed.shape[0]
        e = sum(F.embedding(ids[:, k], self.embed[k]) for k in range(k_count))
        if soft is not None:
            s = torch.einsum("bksv,kvd->bsd", soft.to(self.embed.dtype), self.embed[:, :-1])
            e = e + s - s.detach()
        return e

    def forward(self, e: Tensor, *, offset: int = 0,
                caches: list[list[Tensor]] | None = None) -> Tensor:
        """Embeddings ``[B, S, d]`` → logits ``[B, K, S, V]``."""
        pos = sinusoidal_positions(e.shape[1], e.shape[2], offset=offset, device=e.device)
        h = self.drop(e + pos.to(e.dtype))
        for i, block in enumerate(self.blocks):
            h = block(h, None if caches is None else caches[i])
        return torch.einsum("bsd,kdv->bksv", self.norm(h), self.heads)


# --------------------------------------------------------------------------- target


class CodecLMTarget:
    """A MusicGen-style codec-token LM behind the ``Target`` protocol (see the module doc).

    ``x`` everywhere is float32 audio ``[batch, channels, samples]`` at ``sample_rate_hz``.
    ``loss(x)``: mean next-token NLL (nats per codebook token) over the batch,
    differentiable in ``x`` through soft assignments; ``example_losses(x)``: per example;
    ``train_step(x)``: one LM step (tokenizer frozen) with the target's optimizer:
    ``"sgd"`` (momentum 0.9, lr 0.025: the paper's outer loop), ``"adam"`` or ``"adamw"``
    (an attacker's, lr 1e-4 as the paper trains MusicLM); ``lr=None`` picks the default.
    ``grad_clip`` (1.0, MusicGen's) clips the LM's gradient norm.

    Deterministic: ``seed`` fixes the initial weights, the initial codebooks, the crops of
    :meth:`fit_tokenizer`, its dead-code restarts and the dropout of :meth:`train_step`;
    ``loss`` has no randomness. The global torch RNG is left alone. ``device``: ``"cpu"``,
    ``"cuda"`` or ``"auto"``.
    """

    name = "codec-lm"

    def __init__(self, config: CodecLMConfig | None = None, *, sample_rate_hz: int = 44100,
                 seed: int = 0, optimizer: OptimizerName = "sgd", lr: float | None = None,
                 momentum: float = 0.9, weight_decay: float = 0.01, grad_clip: float = 1.0,
                 stereo: StereoMode = "mid", device: str = "cpu") -> None:
        self.config = config if config is not None else CodecLMConfig()
        if not isinstance(sample_rate_hz, int) or not 8000 <= sample_rate_hz <= 192000:
            raise InputError(f"codec-lm: sample_rate_hz={sample_rate_hz!r}; give the file's "
                             "rate as an integer between 8000 and 192000 Hz")
        if stereo not in ("mid", "channels"):
            raise InputError(f"codec-lm: stereo={stereo!r}; use 'mid' or 'channels'")
        if optimizer not in ("sgd", "adam", "adamw"):
            raise InputError(f"codec-lm: optimizer={optimizer!r}; use 'sgd', 'adam' or 'adamw'")
        lr = (0.025 if optimizer == "sgd" else 1e-4) if lr is None else lr
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise InputError(f"codec-lm: lr={lr!r}; must be a positive finite number")
        self.sample_rate_hz = sample_rate_hz
        self.seed = int(seed)
        self.optimizer_name: OptimizerName = optimizer
        self.lr, self.momentum = float(lr), float(momentum)
        self.weight_decay, self.grad_clip = float(weight_decay), float(grad_clip)
        self.stereo: StereoMode = stereo
        self.device = _resolve_device(device)
        self.tokenizer_steps = 0
        self.lm_steps = 0
        self._rng = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(self.seed)   # CPU only, restored
            self.tokenizer = _Tokenizer(self.config,
                                        torch.Generator().manual_seed(self.seed + 1))
            self.lm = _CodecLM(self.config)
        self.tokenizer.to(self.device).eval()
        self.lm.to(self.device).eval()
        self._init_codebooks_from_noise()
        self.optimizer = self._make_optimizer()
        self._tokenizer_optimizer: torch.optim.Optimizer | None = None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.lm.parameters()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------ introspection

    def num_parameters(self) -> dict[str, int]:
        """Trainable parameters: ``{"tokenizer": ..., "lm": ...}`` (codebooks not counted)."""
        return {"tokenizer": sum(p.numel() for p in self.tokenizer.parameters()),
                "lm": sum(p.numel() for p in self.lm.parameters())}

    def options(self) -> dict[str, Any]:
        """Everything but the weights and the config, JSON-ready."""
        return {"sample_rate_hz": self.sample_rate_hz, "seed": self.seed,
                "optimizer": self.optimizer_name, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
                "stereo": self.stereo}

    @property
    def delays(self) -> list[int]:
        return list(range(self.config.num_codebooks))

    @property
    def special_token(self) -> int:
        """The BOS / pad id of the delay pattern (one past the last code)."""
        return self.config.codebook_size

    # --------------------------------------------------------------- tokenizer

    def to_model_rate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Audio ``[batch, channels, samples]`` → mono rows ``[rows, samples']`` at
        ``model_rate_hz`` (differentiable) and each row's example ``[rows]``."""
        check_audio(x, sample_rate_hz=self.sample_rate_hz)
        rows, owner = fold_channels(x.to(self.device, torch.float32), stereo=self.stereo,
                                    sample_rate_hz=self.sample_rate_hz)
        return resample(rows, self.sample_rate_hz, self.config.model_rate_hz), owner

    def _encode(self, wave: Tensor) -> Tensor:
        """Mono ``[rows, samples]`` at the model rate → latents ``[rows, frames, D]``."""
        hop = self.config.hop
        pad = -wave.shape[-1] % hop
        return self.tokenizer.encoder(F.pad(wave, (0, pad)).unsqueeze(1)).transpose(1, 2)

    def _assign(self, latent: Tensor, *, soft: bool) -> RVQAssignment:
        return soft_rvq(latent, self.tokenizer.quantizer.embed,
                        temperature=self.config.soft_temperature, soft=soft)

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> Tensor:
        """Codes ``[rows, K, frames]`` (long) of ``x``; rows as :meth:`to_model_rate`."""
        wave, _ = self.to_model_rate(x)
        return self._assign(self._encode(wave), soft=False).codes

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """Codes ``[rows, K, frames]`` → mono waveform ``[rows, 1, frames·hop]`` at the
        model rate (sum of the codewords through the decoder)."""
        embed = self.tokenizer.quantizer.embed
        z = sum(F.embedding(codes[:, k].to(self.device), embed[k])
                for k in range(codes.shape[1]))
        return self.tokenizer.decoder(z.transpose(1, 2))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Tokenize and decode ``x``: ``[rows, 1, samples]`` at ``sample_rate_hz`` (CPU)."""
        wave, _ = self.to_model_rate(x)
        audio = self.decode_codes(self._assign(self._encode(wave), soft=False).codes)
        audio = resample(audio[..., :wave.shape[-1]], self.config.model_rate_hz,
                         self.sample_rate_hz)[..., :x.shape[-1]]
        return audio.cpu()

    def _init_codebooks_from_noise(self) -> None:
        """Seeded codebooks for the random encoder: k-means of its outputs on
        ``NOISE_INIT_SECONDS`` of :func:`music_like_noise` (800 frames at 50 Hz; the
        large config's 1024 codewords then include repeats: encoding more noise would cost
        its constructor ~0.5 s per extra second)."""
        gen = torch.Generator().manual_seed(self.seed + 2)
        cfg = self.config
        rows = max(1, round(NOISE_INIT_SECONDS / NOISE_ROW_SECONDS))
        noise = music_like_noise(rows, round(NOISE_ROW_SECONDS * cfg.model_rate_hz),
                                 sample_rate_hz=cfg.model_rate_hz, generator=gen)
        with torch.no_grad():
            latent = self._encode(noise.to(self.device)).reshape(-1, cfg.latent_dim)
        self._init_codebooks(latent, gen)

    @torch.no_grad()
    def _init_codebooks(self, latent: Tensor, gen: torch.Generator, *,
                        per_step: int | None = None) -> None:
        """Data-dependent init, stage by stage: k-means of the residual vectors ``latent
        [N, D]``. EMA counts start at the cluster sizes scaled to ``per_step`` vectors (one
        fit step's worth; all N when None), so a codeword that k-means gave few vectors
        is restarted soon if the batches do not use it either."""
        q = self.tokenizer.quantizer
        residual = latent.detach().float()
        share = (per_step or residual.shape[0]) / residual.shape[0]
        for k in range(self.config.num_codebooks):
            words, counts = kmeans(residual, self.config.codebook_size, iters=KMEANS_ITERS,
                                   generator=gen)
            q.embed[k].copy_(words)
            q.cluster_size[k].copy_(counts * share)
            q.embed_avg[k].copy_(words * q.cluster_size[k].unsqueeze(1))
            residual = residual - words[torch.cdist(residual, words).argmin(-1)]

    @torch.no_grad()
    def _update_codebooks(self, assignment: RVQAssignment, gen: torch.Generator) -> None:
        """EMA step of every codebook, then restart codewords whose count fell too low."""
        q, cfg = self.tokenizer.quantizer, self.config
        for k in range(cfg.num_codebooks):
            vectors = assignment.residuals[k].reshape(-1, cfg.latent_dim).detach()
            codes = assignment.codes[:, k].reshape(-1)
            ema_codebook_update(q.embed[k], q.embed_avg[k], q.cluster_size[k], vectors, codes,
                                decay=cfg.ema_decay)
            uniform = vectors.shape[0] / cfg.codebook_size
            dead = (q.cluster_size[k] < cfg.dead_code_threshold * uniform).nonzero().squeeze(1)
            if dead.numel():
                pick = _random_rows(vectors.shape[0], dead.numel(), generator=gen)
                words = vectors[pick.to(vectors.device)]
                q.embed[k, dead] = words
                q.cluster_size[k, dead] = uniform
                q.embed_avg[k, dead] = words * uniform

    @torch.no_grad()
    def _init_codebooks_from_data(self, rows: Tensor, *, batch_size: int, length: int) -> None:
        """k-means codebooks (stage by stage) from the encoder's outputs on
        ``INIT_BATCHES · batch_size`` random crops of ``rows [rows, samples]``; the counts
        are scaled to one step's ``batch_size`` crops, the unit of the EMA counts."""
        cfg = self.config
        crops = torch.cat([self._crops(rows, batch_size=batch_size, length=length)
                           for _ in range(INIT_BATCHES)])
        latent = torch.cat([self._encode(c) for c in crops.split(batch_size)])
        self._init_codebooks(latent.reshape(-1, cfg.latent_dim), self._rng,
                             per_step=batch_size * (length // cfg.hop))

    def _training_rows(self, data: Any) -> Iterator[Tensor]:
        """Mono model-rate rows ``[rows, samples]`` per batch of ``data`` (no gradient)."""
        if isinstance(data, Tensor):
            with torch.no_grad():
                rows, _ = self.to_model_rate(data.detach())
            while True:
                yield rows
        if not isinstance(data, Iterable):
            raise InputError(f"fit_tokenizer: data of type {type(data).__name__}; give a "
                             "tensor [clips, channels, samples] or an iterable of such batches")
        while True:
            produced = False
            for batch in data:
                with torch.no_grad():
                    rows, _ = self.to_model_rate(torch.as_tensor(batch).detach())
                produced = True
                yield rows
            if not produced or iter(data) is data:   # empty, or a one-shot iterator: done
                return

    def _crops(self, rows: Tensor, *, batch_size: int, length: int) -> Tensor:
        """``batch_size`` random crops ``[batch_size, length]`` (zero-padded when short)."""
        if rows.shape[-1] < length:
            rows = F.pad(rows, (0, length - rows.shape[-1]))
        which = torch.randint(rows.shape[0], (batch_size,), generator=self._rng)
        start = torch.randint(rows.shape[-1] - length + 1, (batch_size,), generator=self._rng)
        index = start.unsqueeze(1) + torch.arange(length).unsqueeze(0)
        return rows[which.to(rows.device).unsqueeze(1), index.to(rows.device)]

    def fit_tokenizer(self, data: Tensor | Iterable[Tensor], *, steps: int,
                      batch_size: int = 8, segment_seconds: float = 1.0,
                      lr: float = 1e-3) -> list[float]:
        """Train the tokenizer as an autoencoder for ``steps`` steps; returns the losses.

        ``data``: a tensor ``[clips, channels, samples]`` at ``sample_rate_hz`` (every step
        draws ``batch_size`` random crops of ``segment_seconds`` from it), or an iterable
        of such batches (one batch per step, crops from it; a re-iterable such as a list is
        cycled, a one-shot iterator ends the fit when it runs out). Loss per step: L1 +
        multi-resolution STFT loss of the reconstruction through the straight-through
        quantizer + ``commitment_weight`` · commitment; codebooks follow by EMA, dead
        codewords restart at batch vectors. Before the first step of a fresh tokenizer the
        codebooks are re-initialized by k-means of the encoder's outputs on
        ``INIT_BATCHES`` (16) batches of crops of the first batch of ``data`` (about 1.5 s
        at the default config).
        Adam (lr ``lr``, β 0.5/0.9, as EnCodec), gradient norm clipped at 1.
        """
        if not isinstance(steps, int) or steps < 0:
            raise InputError(f"fit_tokenizer: steps={steps!r}; give a whole number >= 0")
        if batch_size < 1 or not segment_seconds > 0:
            raise InputError(f"fit_tokenizer: batch_size={batch_size}, segment_seconds="
                             f"{segment_seconds}; both must be positive")
        cfg = self.config
        length = max(cfg.hop, round(segment_seconds * cfg.model_rate_hz / cfg.hop) * cfg.hop)
        if self._tokenizer_optimizer is None:
            params = list(self.tokenizer.encoder.parameters()) + list(
                self.tokenizer.decoder.parameters())
            self._tokenizer_optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
        for group in self._tokenizer_optimizer.param_groups:
            group["lr"] = lr
        history: list[float] = []
        batches = self._training_rows(data)
        if self.tokenizer_steps == 0 and steps > 0:
            first = next(batches, None)
            if first is None:
                return history
            self._init_codebooks_from_data(first, batch_size=batch_size, length=length)
            batches = itertools.chain([first], batches)
        self.tokenizer.train()
        try:
            for _ in range(steps):
                try:
                    rows = next(batches)
                except StopIteration:
                    break
                history.append(self._tokenizer_step(self._crops(rows, batch_size=batch_size,
                                                                length=length)))
        finally:
            self.tokenizer.eval()
        return history

    def _tokenizer_step(self, wave: Tensor) -> float:
        cfg, opt = self.config, self._tokenizer_optimizer
        assert opt is not None
        latent = self._encode(wave)
        assignment = self._assign(latent, soft=False)
        quantized_st = latent + (assignment.quantized - latent).detach()
        recon = self.tokenizer.decoder(quantized_st.transpose(1, 2)).squeeze(1)
        commitment = sum(F.mse_loss(assignment.residuals[k],
                                    F.embedding(assignment.codes[:, k],
                                                self.tokenizer.quantizer.embed[k]).detach())
                         for k in range(cfg.num_codebooks))
        loss = (F.l1_loss(recon, wave)
                + multi_resolution_stft_loss(recon, wave, n_ffts=cfg.stft_sizes).mean()
                + cfg.commitment_weight * commitment)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self._update_codebooks(assignment, self._rng)
        self.tokenizer_steps += 1
        return float(loss.detach())

    # ------------------------------------------------------------------ L_gen

    def _sequence_nll(self, codes: Tensor, soft: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """NLL per token of codes ``[rows, K, T]`` → ``(nll [W, K, S], valid, row [W])``."""
        cfg = self.config
        codes, soft, frame_valid, row = window_frames(codes, soft, frames=cfg.context_frames)
        labels, valid = delay_pattern(codes, self.delays, pad_id=self.special_token,
                                      valid=frame_valid)
        inputs = shift_right(labels, self.special_token)
        soft_labels = None if soft is None else delay_soft(soft, self.delays) * valid.unsqueeze(-1)
        soft_inputs = None if soft_labels is None else shift_right(soft_labels, 0.0)
        logits = self.lm(self.lm.embed_inputs(inputs, soft_inputs))
        nll = code_nll(logits, labels, valid, soft=soft_labels, mode=cfg.soft_targets)
        return nll, valid, row

    def _example_nll(self, x: Tensor, *, soft: bool) -> tuple[Tensor, Tensor]:
        """Summed NLL and predicted-token count per example ``[batch]`` each."""
        wave, owner = self.to_model_rate(x)
        assignment = self._assign(self._encode(wave), soft=soft)
        nll, valid, row = self._sequence_nll(assignment.codes, assignment.soft)
        batch = x.shape[0]
        per_row = nll.sum(dim=(1, 2))
        count_row = valid.sum(dim=(1, 2)).to(per_row.dtype)
        example = owner[row]
        total = per_row.new_zeros(batch).index_add(0, example, per_row)
        count = count_row.new_zeros(batch).index_add(0, example, count_row)
        return total, count

    def loss(self, x: Tensor) -> Tensor:
        """Mean next-token NLL per predicted token over the batch (nats); differentiable in
        ``x`` (soft assignments, see the module docstring), never in θ."""
        with _mode(self.lm, False), frozen(self.tokenizer, self.lm):
            total, count = self._example_nll(x, soft=True)
        return total.sum() / count.sum().clamp_min(1.0)

    @torch.no_grad()
    def example_losses(self, x: Tensor) -> Tensor:
        """Mean NLL per predicted token of each example, ``[batch]`` (no gradient)."""
        with _mode(self.lm, False):
            total, count = self._example_nll(x, soft=False)
        return total / count.clamp_min(1.0)

    def train_step(self, x: Tensor) -> float:
        """One optimizer step of the LM on the hard codes of ``x`` (tokenizer frozen);
        returns the batch's NLL per token before the step."""
        codes = self.tokenize(x.detach())
        seed = int(torch.randint(0, 2**62, (1,), generator=self._rng))
        with _mode(self.lm, True), seeded_rng(seed, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            nll, valid, _ = self._sequence_nll(codes, None)
            loss = nll.sum() / valid.sum().clamp_min(1)
            loss.backward()
            if self.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.lm.parameters(), self.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lm_steps += 1
        return float(loss.detach())

    # --------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(self, n: int, seconds: float, generator: torch.Generator | None = None, *,
                 temperature: float = 1.0, top_k: int = 0) -> Tensor:
        """Sample ``n`` clips of ``seconds``: float32 ``[n, 1, samples]`` at
        ``sample_rate_hz`` in [-1, 1], on the CPU.

        Tokens are sampled step by step in the delay pattern (all K codebooks per step,
        special tokens where the pattern has them), with a key/value cache; ``top_k`` > 0
        keeps the k most likely codes (MusicGen samples with top-k 250). The codes go
        through the tokenizer's decoder and are resampled to ``sample_rate_hz``.
        ``generator`` (CPU) makes it reproducible; None means seed 0. At most
        ``context_frames`` frames (the window the LM is trained on).
        """
        cfg = self.config
        frames = math.ceil(seconds * cfg.frame_rate_hz) if seconds > 0 else 0
        if n < 0 or not 0 <= frames <= cfg.context_frames:
            limit = cfg.context_frames / cfg.frame_rate_hz
            raise InputError(f"codec-lm generate: n={n}, seconds={seconds}; ask for n >= 0 "
                             f"clips of at most {limit:g} s (the LM's window), and concatenate "
                             "clips for longer audio")
        if temperature <= 0 or top_k < 0:
            raise InputError(f"codec-lm generate: temperature={temperature}, top_k={top_k}; "
                             "temperature must be > 0 and top_k >= 0")
        samples = round(seconds * self.sample_rate_hz)
        if n == 0 or frames == 0:
            return torch.zeros(n, 1, samples)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        k_count, special = cfg.num_codebooks, self.special_token
        span = frames + max(self.delays)
        out = torch.full((n, k_count, span), special, dtype=torch.long)
        step_ids = torch.full((n, k_count, 1), special, dtype=torch.long, device=self.device)
        caches: list[list[Tensor]] = [[] for _ in self.lm.blocks]
        with _mode(self.lm, False):
            for s in range(span):
                logits = self.lm(self.lm.embed_inputs(step_ids), offset=s, caches=caches)
                logits = logits[:, :, -1].float().cpu() / temperature      # [n, K, V]
                if top_k:
                    kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, -1).reshape(n * k_count, -1)
                tok = torch.multinomial(probs, 1, generator=gen).view(n, k_count)
                live = torch.tensor([0 <= s - d < frames for d in self.delays])
                tok = torch.where(live.unsqueeze(0), tok, torch.full_like(tok, special))
                out[:, :, s] = tok
                step_ids = tok.unsqueeze(-1).to(self.device)
        audio = self.decode_codes(undelay(out, self.delays, frames)).float()
        audio = resample(audio, cfg.model_rate_hz, self.sample_rate_hz)
        audio = F.pad(audio, (0, max(0, samples - audio.shape[-1])))[..., :samples]
        return audio.clamp(-1.0, 1.0).cpu()

    # -------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Tensor]:
        """Tokenizer (with codebook buffers) and LM weights, flat ``name → tensor``."""
        state = {f"tokenizer.{k}": v for k, v in self.tokenizer.state_dict().items()}
        state.update({f"lm.{k}": v for k, v in self.lm.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_dict` (strict)."""
        tok = {k[len("tokenizer."):]: v for k, v in state.items() if k.startswith("tokenizer.")}
        lm = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
        extra = sorted(k for k in state if not k.startswith(("tokenizer.", "lm.")))
        if extra:
            raise KeyError(f"unexpected keys {extra[:5]}")
        self.tokenizer.load_state_dict(tok)
        self.lm.load_state_dict(lm)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (created), each
        atomically. Optimizer state is not saved. Returns the directory."""
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "target": self.name,
                "config": self.config.to_dict(), "options": self.options(),
                "tokenizer_steps": self.tokenizer_steps, "lm_steps": self.lm_steps}
        return checkpoint.write_checkpoint(directory, meta, state)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **kwargs: Any) -> CodecLMTarget:
        """A target saved by :meth:`save`; ``kwargs`` override the saved options (device,
        optimizer, lr, seed, stereo, sample_rate_hz, ...). Never unpickles anything.
        Raises ModelLoadError naming the directory when it is missing, incomplete, of
        another format or its weights do not match."""
        hint = (f"point it at a directory written by CodecLMTarget.save() holding "
                f"{CONFIG_FILE} and {SAFETENSORS_FILE}")
        path, config_path = checkpoint.open_checkpoint(directory, fix=hint)
        try:
            meta = checkpoint.check_format(json.loads(config_path.read_text()),
                                           name=FORMAT_NAME, version=FORMAT_VERSION,
                                           version_key="format_version")
            config = CodecLMConfig.from_dict(meta["config"])
            options = {**meta["options"], **kwargs}
        except (ValueError, KeyError, TypeError, InputError) as err:
            raise ModelLoadError(f"{config_path}: not a codec-LM config ({err}); {hint}") from err
        weights_path = checkpoint.require_weights(path, fix=hint)
        try:
            state = checkpoint.read_weights(weights_path)
        except Exception as err:  # corrupt or truncated file
            raise ModelLoadError(f"{weights_path}: cannot read the weights ({err}); "
                                 f"{hint}") from err
        target = cls(config, **options)
        try:
            target.load_state_dict(state)
        except (RuntimeError, KeyError) as err:
            raise ModelLoadError(f"{weights_path}: weights do not match {CONFIG_FILE} "
                                 f"({err}); {hint}") from err
        target.tokenizer_steps = int(meta.get("tokenizer_steps", 0))
        target.lm_steps = int(meta.get("lm_steps", 0))
        return target


# ---------------------------------------------------------------------- helpers


class _mode:
    """Context manager: put a module in train/eval mode and restore the previous mode."""

    def __init__(self, module: nn.Module, training: bool) -> None:
        self.module, self.training, self.before = module, training, module.training

    def __enter__(self) -> None:
        self.module.train(self.training)

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.before)


def _resolve_device(device: str | torch.device) -> torch.device:
    from harmonycloak.config import resolve_device

    if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
        return torch.device(resolve_device(device))
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device {device!r} is not a torch device; use auto, cpu or cuda") from err

