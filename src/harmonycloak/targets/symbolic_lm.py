"""A SymphonyNet-like symbolic Transformer language model as a HarmonyCloak target.

The paper (section 5.1, appendix A.1) protects against SymphonyNet (Liu et al. 2022): a
12-layer, 16-head linear-attention Transformer decoder over multi-track MIDI events, with
512-wide embeddings for events, durations, instruments and a 3-D position, trained with
AdamW at lr 3e-4. This module is a faithful-in-spirit, trainable stand-in that works on
the same MuseGAN-shaped phrases as every other symbolic target.

Encoding (compound note tokens, after MusicBERT's OctupleMIDI and the CP word)
--------------------------------------------------------------------------------
A phrase ``x`` is float32 ``[batch, 5 tracks, 4 bars, 48 steps, 84 pitches]`` of
velocities in [0, 1] (see :mod:`harmonycloak.perturb.phrases`). The four bars are read as
one 192-step timeline, so notes may cross bar lines. A *note* is a maximal run of
non-zero cells of one (track, pitch); its *onset* is a non-zero cell whose previous step
is zero (or step 0). Each note becomes one token with five fields:

* ``time`` = bar * 48 + position of the onset, 0..191 (192 values);
* ``track`` 0..4 (Bass, Drums, Guitar, Piano, Strings);
* ``pitch`` 0..83 (C1..B7);
* ``duration``: the run length in steps (1..192) bucketed to the nearest of 32
  representative lengths (:data:`DURATION_STEPS`: exact up to 6 steps so that the
  "qualified note" threshold of 3 steps is kept, then roughly logarithmic to 192);
* ``velocity``: continuous, the value of ``x`` at the onset cell.

Tokens are sorted by (time, track, pitch) and prefixed by a BOS token. After the last note
the model is asked to predict END (an extra class of the time field), so an empty phrase
is "BOS, then END" and has a finite loss. A sequence is capped at ``max_tokens`` tokens
(BOS included): longer phrases keep their earliest ``max_tokens - 1`` notes and lose the
rest, and their last kept token predicts nothing (the cut is not an END). Sequences are
right-padded in a batch; :class:`TokenBatch` carries the mask.

The note *structure* (which cells are onsets, durations, order) is read from
``x.detach() > 0`` and is discrete; the *velocity* of each token is gathered from ``x``
with its gradient. So ``loss(x)`` is differentiable in the velocity of every note onset
(inside the ``max_tokens`` window) and has zero gradient everywhere else: changing a
sustained cell's value or a silent cell by an infinitesimal amount does not change the
token sequence. A perturbation that *adds* a quiet note changes the structure discretely;
the engine sees that through the loss value, not the gradient.

Velocity in and out, differentiably: the velocity axis [0, 1] carries ``velocity_bins``
evenly spaced bin centres ``k / (bins - 1)``. A velocity ``v`` is the pair of its two
nearest centres with linear interpolation weights (a soft one-hot). The input embedding
is the same interpolation of the two bins' embeddings, and the velocity head's NLL is the
cross-entropy against that soft target, ``-(1 - f) log p[k] - f log p[k + 1]``, so it is
differentiable in the target velocity too.

Model
-----
Input embedding = bar + position-in-bar + track + pitch + duration + soft velocity
embeddings (BOS has its own vector) + a learned absolute position embedding; then a
causal pre-norm Transformer decoder (GELU MLPs, softmax attention via
``torch.nn.functional.scaled_dot_product_attention``) and a final LayerNorm. The next
token is predicted field by field, one head per field, each head a two-layer GELU MLP
whose input is the hidden state plus the embeddings of the next token's earlier fields
(teacher-forced in training, sampled in generation), as in the CP Transformer:

    p(next) = p(time) p(track | time) p(pitch | time, track)
              p(duration | time, track, pitch) p(velocity | time, track, pitch)

so the loss is a true NLL of the compound token. The blocks are written out rather than
taken from ``torch.nn.TransformerEncoder`` so that generation can use a key/value cache
(``TransformerEncoder`` cannot decode incrementally, which makes sampling 512-token
phrases quadratic in full forward passes); the layer is the same pre-norm layer.

Right padding plus the causal mask means a real token only ever attends to real tokens, so
no key-padding mask is needed inside attention; the mask is used in the loss.

Loss: the paper's eq. 3
------------------------
Eq. 3 is ``min_θ min_δ -log Π_t f(x_t | x_{t-1} + δ_{t-1}, ..., x_{t-p} + δ_{t-p}; θ)``.
Printed, it perturbs only the context. We read it as the loss of a model that trains on
the *perturbed file*: the attacker scrapes ``x + δ`` and never sees the clean targets, so
both the context and the predicted tokens come from the perturbed phrase, i.e. ``loss``
is the ordinary teacher-forced NLL of the phrase it is given. The engine passes
``x + δ`` and minimizes this over δ (inner loop) and over θ via :meth:`train_step`
(outer loop).

``loss(x)`` is the mean over all predicted tokens of the batch (token-weighted) of the
sum of the field NLLs (time, track, pitch, duration, velocity; END targets contribute the
time NLL only), in nats per token. ``example_losses(x)`` is the same mean per phrase.

Configs and sizes (parameters, counted by :meth:`SymbolicLMTarget.num_parameters`):

* ``SymbolicLMConfig.tiny()``: d 32, 2 layers, 2 heads, 128 tokens: 53.6 k (tests);
* ``SymbolicLMConfig.cpu()`` (the default): d 192, 4 layers, 4 heads, 512 tokens: 2.22 M;
* ``SymbolicLMConfig.paper()``: SymphonyNet's d 512, 12 layers, 16 heads, FF 2048,
  dropout 0.1: 39.8 M. SymphonyNet's linear attention is replaced by softmax attention and
  its music-BPE event vocabulary (1,000 tokens) by our compound note tokens; the phrase
  length (4 bars, ``max_tokens`` 512) is ours.

Randomness: ``seed`` fixes the initial weights and the dropout masks of every
``train_step`` (on CPU, bit for bit); the global torch RNG is left alone.
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

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.targets.checkpoint import (
    CONFIG_FILE,
    open_checkpoint,
    read_weights,
    weights_file_choice,
    write_checkpoint,
)

__all__ = [
    "DURATION_STEPS",
    "END_TIME",
    "SymbolicLMConfig",
    "SymbolicLMTarget",
    "TokenBatch",
    "encode_phrases",
    "paint_tokens",
]

N_TRACKS = 5
N_BARS = 4
STEPS_PER_BAR = 48
N_PITCHES = 84
N_TIMES = N_BARS * STEPS_PER_BAR  # 192
END_TIME = N_TIMES
"""Class index of END in the time field (one past the last step)."""

DURATION_STEPS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 14, 16, 18, 21, 24, 28,
    32, 36, 42, 48, 56, 64, 72, 84, 96, 108, 120, 132, 144, 160, 176, 192,
)
"""Representative note lengths in steps (12 per quarter note) of the 32 duration buckets.

A run of ``d`` steps goes to the bucket whose representative is nearest on the linear
axis (ties to the shorter one); generation paints the representative length."""

FORMAT_NAME = "harmonycloak.symbolic-lm"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SymbolicLMConfig:
    """Size of the symbolic LM. Use the named constructors; all fields are validated.

    ``d_ff`` 0 means ``4 * d_model``. ``max_tokens`` counts BOS and caps both the training
    sequences and generation (the learned position table has that many rows).
    """

    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 0
    dropout: float = 0.0
    max_tokens: int = 512
    velocity_bins: int = 32
    duration_steps: tuple[int, ...] = field(default=DURATION_STEPS)

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable.
        object.__setattr__(self, "duration_steps", tuple(int(d) for d in self.duration_steps))
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise InputError(
                f"symbolic LM: d_model {self.d_model} must be a positive multiple of "
                f"n_heads {self.n_heads}"
            )
        if self.n_layers < 1 or self.d_ff < 0:
            raise InputError(
                f"symbolic LM: n_layers {self.n_layers} must be >= 1 and d_ff {self.d_ff} >= 0"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"symbolic LM: dropout {self.dropout} must be in [0, 1)")
        if self.max_tokens < 2:
            raise InputError(
                f"symbolic LM: max_tokens {self.max_tokens} must be >= 2 (BOS and one note)"
            )
        if self.velocity_bins < 2:
            raise InputError(f"symbolic LM: velocity_bins {self.velocity_bins} must be >= 2")
        steps = self.duration_steps
        if not steps or steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise InputError(
                f"symbolic LM: duration_steps {steps} must be increasing positive step counts"
            )

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    @classmethod
    def cpu(cls) -> SymbolicLMConfig:
        """Default: d 192, 4 layers, 4 heads, 512 tokens, 2.22 M parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> SymbolicLMConfig:
        """For tests: d 32, 2 layers, 2 heads, 128 tokens, 53.6 k parameters."""
        return cls(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_tokens=128)

    @classmethod
    def paper(cls) -> SymbolicLMConfig:
        """SymphonyNet's size (appendix A.1): d 512, 12 layers, 16 heads, 39.8 M parameters."""
        return cls(d_model=512, n_layers=12, n_heads=16, d_ff=2048, dropout=0.1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration_steps"] = list(self.duration_steps)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolicLMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"symbolic LM config: unknown keys {unknown}; expected {sorted(known)}"
            )
        return cls(**data)


# --------------------------------------------------------------------------- encoding


@dataclass
class TokenBatch:
    """Compound note tokens of a batch of phrases, right-padded to ``length``.

    Every field is ``[batch, length]``; position 0 is BOS, positions ``1..n`` the notes in
    (time, track, pitch) order. BOS and padding positions hold 0 in every field.

    * ``time`` long 0..191 (bar * 48 + step), ``track`` long 0..4, ``pitch`` long 0..83;
    * ``duration`` long bucket index into ``duration_steps``; ``duration_steps`` long, the
      exact run length in steps;
    * ``velocity`` float, gathered from ``x`` at the onset with gradient;
    * ``mask`` bool, True at BOS and notes;
    * ``num_notes`` long ``[batch]``: notes in the phrase before truncation;
    * ``truncated`` bool ``[batch]``: True when notes were cut at ``max_tokens``.
    """

    time: Tensor
    track: Tensor
    pitch: Tensor
    duration: Tensor
    duration_steps: Tensor
    velocity: Tensor
    mask: Tensor
    num_notes: Tensor
    truncated: Tensor

    @property
    def lengths(self) -> Tensor:
        """Tokens per phrase, BOS included, ``[batch]``."""
        return self.mask.sum(1)


def _check_phrases(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 5 or tuple(x.shape[1:]) != (
        N_TRACKS, N_BARS, STEPS_PER_BAR, N_PITCHES
    ):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(
            f"symbolic LM: phrases have shape {shape}; expected [batch, {N_TRACKS}, {N_BARS}, "
            f"{STEPS_PER_BAR}, {N_PITCHES}] (see harmonycloak.perturb.phrases)"
        )
    if not x.is_floating_point():
        raise InputError(f"symbolic LM: phrases have dtype {x.dtype}; expected a float tensor")


def _duration_bucket(steps: Tensor, duration_steps: tuple[int, ...]) -> Tensor:
    reps = torch.tensor(duration_steps, dtype=torch.float32, device=steps.device)
    edges = (reps[1:] + reps[:-1]) / 2  # nearest representative; ties go to the shorter
    return torch.bucketize(steps.float(), edges, right=False)


def encode_phrases(
    x: Tensor,
    *,
    max_tokens: int = 512,
    duration_steps: tuple[int, ...] = DURATION_STEPS,
) -> TokenBatch:
    """Phrases ``[batch, 5, 4, 48, 84]`` → :class:`TokenBatch` (see the module docstring).

    The structure comes from ``x.detach() > 0``; ``velocity`` is ``x`` at each onset and
    keeps the autograd graph. A batch of empty phrases gives BOS-only sequences
    (``length`` 1). ``max_tokens`` (>= 1) counts BOS.
    """
    _check_phrases(x)
    if max_tokens < 1:
        raise InputError(f"symbolic LM: max_tokens {max_tokens} must be >= 1")
    batch = x.shape[0]
    device = x.device
    # [B, time, track, pitch]: row-major nonzero order is then (time, track, pitch).
    roll = x.reshape(batch, N_TRACKS, N_TIMES, N_PITCHES).permute(0, 2, 1, 3)
    active = roll.detach() > 0
    previous = F.pad(active[:, :-1], (0, 0, 0, 0, 1, 0))
    onset = active & ~previous
    # Run length from t: the first inactive step at or after t, minus t.
    steps = torch.arange(N_TIMES, device=device).view(1, N_TIMES, 1, 1)
    off_at = torch.where(active, torch.full_like(steps, N_TIMES), steps)
    next_off = off_at.flip(1).cummin(1).values.flip(1)
    run_length = next_off - steps

    b, t, k, p = onset.nonzero(as_tuple=True)
    num_notes = torch.bincount(b, minlength=batch)
    starts = torch.cumsum(num_notes, 0) - num_notes
    rank = torch.arange(b.numel(), device=device) - starts[b]
    keep = rank < max_tokens - 1
    b, t, k, p, rank = b[keep], t[keep], k[keep], p[keep], rank[keep]
    pos = rank + 1  # after BOS
    kept = torch.clamp(num_notes, max=max_tokens - 1)
    length = int(kept.max().item()) + 1 if batch else 1

    def scatter(values: Tensor, dtype: torch.dtype) -> Tensor:
        out = torch.zeros(batch, length, dtype=dtype, device=device)
        return out.index_put((b, pos), values.to(dtype))

    dur_steps = run_length[b, t, k, p]
    velocity = torch.zeros(batch, length, dtype=x.dtype, device=device).index_put(
        (b, pos), roll[b, t, k, p]
    )
    mask = torch.arange(length, device=device).unsqueeze(0) <= kept.unsqueeze(1)
    return TokenBatch(
        time=scatter(t, torch.long),
        track=scatter(k, torch.long),
        pitch=scatter(p, torch.long),
        duration=scatter(_duration_bucket(dur_steps, duration_steps), torch.long),
        duration_steps=scatter(dur_steps, torch.long),
        velocity=velocity,
        mask=mask,
        num_notes=num_notes,
        truncated=num_notes > max_tokens - 1,
    )


def paint_tokens(
    time: Tensor,
    track: Tensor,
    pitch: Tensor,
    duration_steps: Tensor,
    velocity: Tensor,
    valid: Tensor,
) -> Tensor:
    """Notes ``[n, length]`` (only where ``valid``) → phrases ``[n, 5, 4, 48, 84]``.

    Each note fills ``duration_steps`` cells from its onset (cut at the phrase end) with
    its velocity; later notes overwrite earlier ones. Two notes of one pitch that touch
    become one run, as in any piano roll (there is no note-off between them).
    """
    n = time.shape[0]
    roll = torch.zeros(n, N_TRACKS, N_TIMES, N_PITCHES, dtype=torch.float32)
    rows, cols = valid.nonzero(as_tuple=True)
    for r, c in zip(rows.tolist(), cols.tolist()):
        start = int(time[r, c])
        stop = min(N_TIMES, start + max(1, int(duration_steps[r, c])))
        roll[r, int(track[r, c]), start:stop, int(pitch[r, c])] = float(velocity[r, c])
    return roll.reshape(n, N_TRACKS, N_BARS, STEPS_PER_BAR, N_PITCHES)


# --------------------------------------------------------------------------- model


def _soft_bins(velocity: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Lower bin index (long) and weight of the upper bin for velocities in [0, 1]."""
    position = velocity.clamp(0.0, 1.0) * (bins - 1)
    lower = position.detach().floor().clamp(0, bins - 2).long()
    return lower, position - lower.to(position.dtype)


class _Block(nn.Module):
    """Pre-norm causal self-attention + GELU MLP, with an optional key/value cache."""

    def __init__(self, config: SymbolicLMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, config.ff_width), nn.GELU(), nn.Linear(config.ff_width, d)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, h: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        batch, length, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(d, dim=2)
        heads = lambda z: z.view(batch, length, self.n_heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        if cache is not None:
            if cache:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        # One new query against a full cache needs no mask; otherwise causal.
        causal = cache is None or length > 1
        a = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        a = a.transpose(1, 2).reshape(batch, length, d)
        h = h + self.drop(self.proj(a))
        return h + self.drop(self.ff(self.norm2(h)))


def _head(d: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, classes))


class _SymbolicLM(nn.Module):
    def __init__(self, config: SymbolicLMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        n_dur = len(config.duration_steps)
        # inputs
        self.bos = nn.Parameter(torch.zeros(d))
        self.bar = nn.Embedding(N_BARS, d)
        self.step = nn.Embedding(STEPS_PER_BAR, d)
        self.track = nn.Embedding(N_TRACKS, d)
        self.pitch = nn.Embedding(N_PITCHES, d)
        self.duration = nn.Embedding(n_dur, d)
        self.velocity = nn.Embedding(config.velocity_bins, d)
        self.position = nn.Embedding(config.max_tokens, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        # outputs, chained: each head also sees the next token's earlier fields
        self.time_head = _head(d, N_TIMES + 1)
        self.cond_time = nn.Embedding(N_TIMES + 1, d)
        self.track_head = _head(d, N_TRACKS)
        self.cond_track = nn.Embedding(N_TRACKS, d)
        self.pitch_head = _head(d, N_PITCHES)
        self.cond_pitch = nn.Embedding(N_PITCHES, d)
        self.duration_head = _head(d, n_dur)
        self.velocity_head = _head(d, config.velocity_bins)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), zero biases, residual projections scaled by depth.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        scale = 0.02 / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.proj.weight, std=scale)
            nn.init.normal_(block.ff[2].weight, std=scale)
        nn.init.normal_(self.bos, std=0.02)

    def embed(self, tokens: TokenBatch, offset: int = 0) -> Tensor:
        """Input embeddings ``[batch, length, d]``; position 0 is BOS when ``offset`` is 0."""
        lower, upper_w = _soft_bins(tokens.velocity, self.config.velocity_bins)
        w = upper_w.unsqueeze(-1).to(self.velocity.weight.dtype)
        e = (
            self.bar(tokens.time // STEPS_PER_BAR)
            + self.step(tokens.time % STEPS_PER_BAR)
            + self.track(tokens.track)
            + self.pitch(tokens.pitch)
            + self.duration(tokens.duration)
            + (1 - w) * self.velocity(lower)
            + w * self.velocity(lower + 1)
        )
        length = e.shape[1]
        if offset == 0:
            is_bos = torch.zeros(length, dtype=torch.bool, device=e.device)
            is_bos[0] = True
            e = torch.where(is_bos.view(1, length, 1), self.bos.view(1, 1, -1), e)
        positions = torch.arange(offset, offset + length, device=e.device)
        return self.drop(e + self.position(positions))

    def hidden(self, e: Tensor, caches: list[list[Tensor]] | None = None) -> Tensor:
        for i, block in enumerate(self.blocks):
            e = block(e, None if caches is None else caches[i])
        return self.norm(e)

    def field_inputs(
        self, h: Tensor, time: Tensor, track: Tensor, pitch: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Head inputs given the next token's (teacher-forced or sampled) earlier fields."""
        h_track = h + self.cond_time(time)
        h_pitch = h_track + self.cond_track(track)
        h_rest = h_pitch + self.cond_pitch(pitch)
        return h_track, h_pitch, h_rest


def _targets(tokens: TokenBatch) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Next-token fields for every input position, and where a note / END is predicted."""
    mask = tokens.mask
    batch, length = mask.shape
    shift = lambda z: F.pad(z[:, 1:], (0, 1))  # noqa: E731
    note = shift(mask.long()).bool()
    last = tokens.lengths - 1
    end = torch.zeros_like(mask)
    end[torch.arange(batch, device=mask.device), last] = ~tokens.truncated
    target = {
        "time": torch.where(end, torch.full_like(tokens.time, END_TIME), shift(tokens.time)),
        "track": shift(tokens.track),
        "pitch": shift(tokens.pitch),
        "duration": shift(tokens.duration),
        "velocity": F.pad(tokens.velocity[:, 1:], (0, 1)),
    }
    return target, note, end


# --------------------------------------------------------------------------- target


class SymbolicLMTarget:
    """A SymphonyNet-like compound-token Transformer LM behind the ``Target`` protocol.

    Args:
        config: model size; ``SymbolicLMConfig.cpu()`` when None.
        seed: fixes the initial weights and the dropout of every training step (CPU).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or any torch device.
        optimizer: ``"sgd"`` (momentum, the defender's outer loop, paper section 5.1) or
            ``"adamw"`` (how SymphonyNet is trained; the evaluation's attackers).
        lr: learning rate; None means 0.025 for SGD and 3e-4 for AdamW (section 5.1).
        momentum: SGD momentum (0.9).
        weight_decay: AdamW decoupled weight decay (0.01); unused by SGD.
        grad_clip: global gradient-norm clip of every ``train_step`` (1.0; 0 disables).

    Inputs of ``loss``/``example_losses``/``train_step`` are phrases
    ``[batch, 5, 4, 48, 84]`` in [0, 1] on any device (moved to the model's device).
    """

    name = "symbolic-lm"

    def __init__(
        self,
        config: SymbolicLMConfig | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.01,
        grad_clip: float = 1.0,
    ) -> None:
        self.config = config if config is not None else SymbolicLMConfig.cpu()
        self.seed = int(seed)
        self.device = _resolve_device(device)
        if optimizer not in ("sgd", "adamw"):
            raise InputError(
                f"symbolic LM: optimizer {optimizer!r} is not known; use 'sgd' or 'adamw'"
            )
        self.optimizer_name = optimizer
        self.lr = float(lr) if lr is not None else (0.025 if optimizer == "sgd" else 3e-4)
        if not self.lr > 0:
            raise InputError(f"symbolic LM: lr {self.lr} must be > 0")
        self.grad_clip = float(grad_clip)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = _SymbolicLM(self.config)
        self.model.to(self.device)
        params = self.model.parameters()
        if optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=self.lr, momentum=momentum
            )
        else:
            self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=weight_decay)
        self._dropout_rng = torch.Generator().manual_seed(self.seed + 1)

    # ----------------------------------------------------------------- protocol

    def encode(self, x: Tensor) -> TokenBatch:
        """:func:`encode_phrases` with this model's ``max_tokens`` and duration buckets."""
        _check_phrases(x)
        return encode_phrases(
            x.to(self.device),
            max_tokens=self.config.max_tokens,
            duration_steps=self.config.duration_steps,
        )

    def token_losses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """NLL of every predicted token ``[batch, length]`` (nats) and the 0/1 weights.

        Uses the model in whatever mode it is in (``loss`` and ``example_losses`` switch to
        eval mode; ``train_step`` to train mode).
        """
        tokens = self.encode(x)
        target, note, end = _targets(tokens)
        m = self.model
        h = m.hidden(m.embed(tokens))
        time_in = target["time"]
        h_track, h_pitch, h_rest = m.field_inputs(h, time_in, target["track"], target["pitch"])
        nll_time = F.cross_entropy(m.time_head(h).transpose(1, 2), time_in, reduction="none")
        nll_track = F.cross_entropy(
            m.track_head(h_track).transpose(1, 2), target["track"], reduction="none"
        )
        nll_pitch = F.cross_entropy(
            m.pitch_head(h_pitch).transpose(1, 2), target["pitch"], reduction="none"
        )
        nll_duration = F.cross_entropy(
            m.duration_head(h_rest).transpose(1, 2), target["duration"], reduction="none"
        )
        log_p_vel = F.log_softmax(m.velocity_head(h_rest), dim=-1)
        lower, upper_w = _soft_bins(target["velocity"], self.config.velocity_bins)
        lp_lower = log_p_vel.gather(-1, lower.unsqueeze(-1)).squeeze(-1)
        lp_upper = log_p_vel.gather(-1, (lower + 1).unsqueeze(-1)).squeeze(-1)
        nll_velocity = -((1 - upper_w) * lp_lower + upper_w * lp_upper)
        note_nll = nll_track + nll_pitch + nll_duration + nll_velocity
        nll = nll_time + torch.where(note, note_nll, torch.zeros_like(note_nll))
        weight = (note | end).to(nll.dtype)
        return nll * weight, weight

    def loss(self, x: Tensor) -> Tensor:
        """Mean NLL per predicted token over the whole batch (nats), differentiable in ``x``.

        Evaluated in eval mode (no dropout), so the engine's inner loop sees a deterministic
        function of ``x``; gradients reach only the velocities of note onsets.
        """
        with _mode(self.model, training=False):
            nll, weight = self.token_losses(x)
        return nll.sum() / weight.sum().clamp_min(1.0)

    @torch.no_grad()
    def example_losses(self, x: Tensor) -> Tensor:
        """Mean NLL per predicted token of each phrase, ``[batch]`` (no gradient, eval mode)."""
        with _mode(self.model, training=False):
            nll, weight = self.token_losses(x)
        return nll.sum(1) / weight.sum(1).clamp_min(1.0)

    def train_step(self, x: Tensor) -> float:
        """One optimizer step on θ with the batch ``x`` (detached); returns the loss before it."""
        x = x.detach()
        seed = int(torch.randint(0, 2**62, (1,), generator=self._dropout_rng))
        with _mode(self.model, training=True), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.optimizer.zero_grad(set_to_none=True)
            nll, weight = self.token_losses(x)
            loss = nll.sum() / weight.sum().clamp_min(1.0)
            loss.backward()
            if self.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        """The model weights (a torch ``state_dict``)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        return self.model.load_state_dict(state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # ----------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Sample ``n`` phrases ``[n, 5, 4, 48, 84]`` (float32 velocities in [0, 1], on CPU).

        Tokens are sampled field by field (time, track, pitch, duration, velocity) from BOS
        until END or ``max_tokens`` tokens (BOS included; at most ``config.max_tokens``).
        Time is kept non-decreasing (the order of the training data); a velocity is its
        bin's centre, at least 1/127 so that every note is audible in the roll; a duration
        is its bucket's representative length, cut at the phrase end. ``generator`` (a CPU
        ``torch.Generator``) makes the draw reproducible; None means seed 0.
        """
        limit = self.config.max_tokens if max_tokens is None else int(max_tokens)
        if not 1 <= limit <= self.config.max_tokens:
            raise InputError(
                f"symbolic LM: max_tokens {limit} must be in 1..{self.config.max_tokens} "
                "(the model's position table)"
            )
        if n < 0 or temperature <= 0:
            raise InputError(f"symbolic LM: n {n} must be >= 0 and temperature {temperature} > 0")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        m = self.model
        cfg = self.config
        dev = self.device
        centres = torch.linspace(0.0, 1.0, cfg.velocity_bins).clamp_min(1.0 / 127.0)
        reps = torch.tensor(cfg.duration_steps)
        fields_ = {k: torch.zeros(n, limit, dtype=torch.long) for k in
                   ("time", "track", "pitch", "duration")}
        velocity = torch.zeros(n, limit)
        valid = torch.zeros(n, limit, dtype=torch.bool)
        alive = torch.ones(n, dtype=torch.bool)
        last_time = torch.zeros(n, dtype=torch.long)

        def sample(logits: Tensor, forbid: Tensor | None = None) -> Tensor:
            logits = logits.float().cpu() / temperature
            if forbid is not None:
                logits = logits.masked_fill(forbid, float("-inf"))
            return torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)

        with _mode(m, training=False):
            caches: list[list[Tensor]] = [[] for _ in m.blocks]
            step_tokens = TokenBatch(*(torch.zeros(n, 1, dtype=torch.long, device=dev)
                                       for _ in range(5)),
                                     velocity=torch.zeros(n, 1, device=dev),
                                     mask=torch.ones(n, 1, dtype=torch.bool, device=dev),
                                     num_notes=torch.zeros(n, dtype=torch.long),
                                     truncated=torch.zeros(n, dtype=torch.bool))
            for pos in range(1, limit):
                if n == 0 or not alive.any():
                    break
                h = m.hidden(m.embed(step_tokens, offset=pos - 1), caches)[:, -1]
                times = torch.arange(N_TIMES + 1)
                forbid = (times.unsqueeze(0) < last_time.unsqueeze(1)) & (times < END_TIME)
                t = sample(m.time_head(h), forbid)
                t_in = t.to(dev)
                h_track = h + m.cond_time(t_in)
                k = sample(m.track_head(h_track))
                h_pitch = h_track + m.cond_track(k.to(dev))
                p = sample(m.pitch_head(h_pitch))
                h_rest = h_pitch + m.cond_pitch(p.to(dev))
                d = sample(m.duration_head(h_rest))
                v = centres[sample(m.velocity_head(h_rest))]
                ended = t == END_TIME
                alive &= ~ended
                t = t.clamp(max=N_TIMES - 1)
                for name, value in (("time", t), ("track", k), ("pitch", p), ("duration", d)):
                    fields_[name][:, pos] = value
                velocity[:, pos] = v
                valid[:, pos] = alive
                last_time = torch.where(alive, t, last_time)
                step_tokens = TokenBatch(
                    time=t.view(n, 1).to(dev), track=k.view(n, 1).to(dev),
                    pitch=p.view(n, 1).to(dev), duration=d.view(n, 1).to(dev),
                    duration_steps=reps[d].view(n, 1).to(dev), velocity=v.view(n, 1).to(dev),
                    mask=step_tokens.mask, num_notes=step_tokens.num_notes,
                    truncated=step_tokens.truncated,
                )
        return paint_tokens(
            fields_["time"], fields_["track"], fields_["pitch"], reps[fields_["duration"]],
            velocity, valid,
        )

    # ----------------------------------------------------------------- files

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and the weights (safetensors if installed, else a torch
        tensor file) into ``directory`` (created), each file atomically. Returns the path."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        weights, stale = weights_file_choice()
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "target": self.name,
            "weights": weights,
            "config": self.config.to_dict(),
        }
        return write_checkpoint(directory, meta, state, weights_file=weights, stale=stale)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **kwargs: Any) -> SymbolicLMTarget:
        """A target from a directory written by :meth:`save`; ``kwargs`` go to the
        constructor (device, optimizer, lr, ...). Raises ModelLoadError naming the
        directory when it is missing, incomplete or not a symbolic-LM model."""
        hint = "write one with SymbolicLMTarget.save(DIR) (or point --model at such a directory)"
        path, config_path = open_checkpoint(directory, fix=hint)
        try:
            # Not check_format: older versions load, and only a newer one is refused.
            meta = json.loads(config_path.read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise ValueError(f"format {found!r} is not {FORMAT_NAME!r}")
            if int(meta.get("format_version", -1)) > FORMAT_VERSION:
                raise ValueError(
                    f"format_version {meta['format_version']} is newer than this harmonycloak "
                    f"reads ({FORMAT_VERSION}); upgrade harmonycloak"
                )
            config = SymbolicLMConfig.from_dict(meta["config"])
            weights = str(meta["weights"])
        except (ValueError, KeyError, TypeError, InputError) as err:
            raise ModelLoadError(
                f"{config_path}: not a symbolic-LM config ({err}); {hint}"
            ) from err
        weights_path = path / Path(weights).name
        if not weights_path.is_file():
            raise ModelLoadError(f"{path}: weights file {weights_path.name} is missing; {hint}")
        try:
            state = read_weights(weights_path)
        except ImportError as err:  # a .safetensors file without the package
            raise ModelLoadError(
                f"{weights_path}: reading safetensors needs the 'safetensors' package; "
                "pip install safetensors"
            ) from err
        except Exception as err:  # corrupt or truncated file
            raise ModelLoadError(
                f"{weights_path}: cannot read the weights ({err}); {hint}"
            ) from err
        target = cls(config, **kwargs)
        try:
            target.load_state_dict(state)
        except (RuntimeError, KeyError) as err:
            raise ModelLoadError(
                f"{weights_path}: weights do not match {CONFIG_FILE} ({err}); {hint}"
            ) from err
        return target


# --------------------------------------------------------------------------- helpers


class _mode:
    """Context manager: put a module in train/eval mode and restore the previous mode."""

    def __init__(self, module: nn.Module, *, training: bool) -> None:
        self.module, self.training, self.before = module, training, module.training

    def __enter__(self) -> None:
        self.module.train(self.training)

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.before)


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
        from harmonycloak.config import resolve_device

        return torch.device(resolve_device(device))
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(
            f"symbolic LM: device {device!r} is not a torch device; use auto, cpu or cuda"
        ) from err

