"""A MuseGAN-style multi-track GAN as a :class:`~harmonycloak.perturb.protocols.Target`.

The threat model of the paper's section 3.2 / eq. 4: a GAN trained on four-bar,
five-track phrases ``[batch, 5 tracks, 4 bars, 48 steps, 84 pitches]`` (velocities in
[0, 1]; tracks Bass, Drums, Guitar, Piano, Strings), after MuseGAN (Dong, Hsiao, Yang and
Yang, "MuseGAN: Multi-track sequential generative adversarial networks for symbolic music
generation and accompaniment", AAAI 2018). The paper's table 2 gives MuseGAN 720k
parameters; our default generator has 0.71 M.

Generator (the "hybrid" model with both temporal inputs, MuseGAN section "MuseGAN"):
four kinds of noise,

- ``z``        inter-track, time-independent   ``[n, z_dim]``
- ``z_t``      inter-track, time-dependent     ``[n, z_dim]``  → shared temporal generator
- ``z_i``      intra-track, time-independent   ``[n, tracks, z_dim]``
- ``z_{i,t}``  intra-track, time-dependent     ``[n, tracks, z_dim]`` → private temporal
  generators, one per track

The temporal generators (transposed 1-D convs, 1 → 2 → 4 steps) turn the time-dependent
noise into one latent per bar. For each track and bar the four latents are concatenated
(``4 * z_dim``) and fed to the *shared* bar generator (dense → ``[4 steps, 3 pitches]`` →
transposed conv → ``[16, 7]``; weights shared by all tracks), then to the *private*
per-track generators, which grow time and pitch in two orders, as MuseGAN's reference
generator does: pitch-then-time (``[16, 7] → [16, 84] → [48, 84]``) and time-then-pitch
(``[16, 7] → [48, 7] → [48, 84]``). Each stream ends in one logit map per track (MuseGAN
keeps 16 hidden channels at ``[48, 84]``; dropping that full-resolution layer makes a CPU
step several times cheaper, and the parameters sit in the low-resolution layers instead);
a per-track 1x1 conv merges the two streams, then a sigmoid. Batch norm and ReLU after
every hidden layer. Bars are folded into the batch: every generator kernel spans one bar,
i.e. the reference code's 3-D transposed convolutions with bar-kernel 1.

Discriminator (MuseGAN's reference discriminator, without normalization so that each
phrase is judged alone): tracks are channels; every layer up to the last has bar-kernel 1,
so bars are folded into the batch and those are 2-D convs over ``[steps, pitches]``.
Private per-track layers (grouped convs) in two orders, pitch-then-time (``(1,12)`` then
``(3,1)``) and time-then-pitch, merged by a 1x1 conv; then shared layers over all tracks
down to one vector per bar; two side streams see the chroma per beat and the
onsets/offsets summed over pitch; a last conv over pairs of adjacent bars and a dense
layer give one logit per phrase. LeakyReLU (0.2) everywhere.

Every private layer has stride equal to its kernel; :class:`_PatchConv2d` computes those
as batched matmuls (several times faster than PyTorch's grouped CPU convolutions).

Parameter counts (``MuseGANTarget(...).num_parameters()``):

=============  ===========  ===============
config         generator    discriminator
=============  ===========  ===============
default        713,641      1,362,065
``tiny()``     6,177        5,465
=============  ===========  ===============

Objective (eq. 4): a standard GAN with BCE-with-logits; D maximizes
``log D(x) + log(1 - D(G(z)))``, G is trained non-saturating (minimizes ``-log D(G(z))``).
See :class:`MuseGANTarget` for the two readings of the loss δ minimizes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.config import resolve_device
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.phrases import BARS_PER_PHRASE, STEPS_PER_BAR
from harmonycloak.targets.checkpoint import (
    CONFIG_FILE,
    SAFETENSORS_FILE,
    TORCH_FILE,
    check_format,
    have_safetensors,
    open_checkpoint,
    read_weights,
    weights_file_choice,
    write_checkpoint,
)

__all__ = ["MuseGANConfig", "MuseGANTarget", "MuseGANGenerator", "MuseGANDiscriminator",
           "PITCHES", "Objective", "OptimizerName"]

PITCHES = 84
"""Pitch rows of a phrase: C1–B7, 7 octaves of 12."""

Objective = Literal["min-min", "as-printed"]
OptimizerName = Literal["sgd", "adam"]

_FORMAT = "harmonycloak.musegan"
_FORMAT_VERSION = 1
_STEPS_PER_BEAT = STEPS_PER_BAR // 4


@dataclass(frozen=True)
class MuseGANConfig:
    """Architecture of the generator and the discriminator (widths only).

    Phrases are always ``[tracks, 4 bars, 48 steps, 84 pitches]``: the kernels factor 48 as
    16·3 and 84 as 7·12. The default gives 713,641 generator parameters (the paper's table 2:
    720k) and 1,362,065 discriminator parameters; :meth:`tiny` 6,177 and 5,465.

    ``z_dim``: size of each of the four noise vectors. ``temporal_hidden``: channels in the
    shared temporal generator; ``private_temporal_hidden``: in each track's. ``bar_hidden``:
    channels of the shared bar generator at ``[4, 3]`` and ``[16, 7]``. ``private_hidden``:
    channels of each track's private streams at ``[16, 84]`` and ``[48, 7]``.
    ``d_private``: the discriminator's per-track channels (first layer, second layer, merged);
    ``d_shared``: its shared layers; ``d_stream``: chroma and onset streams (base width);
    ``d_merged``: the last conv over adjacent bars.
    """

    tracks: int = 5
    z_dim: int = 32
    temporal_hidden: int = 256
    private_temporal_hidden: int = 160
    bar_hidden: tuple[int, int] = (256, 32)
    private_hidden: int = 16
    d_private: tuple[int, int, int] = (16, 32, 64)
    d_shared: tuple[int, int] = (128, 256)
    d_stream: int = 32
    d_merged: int = 512

    @classmethod
    def tiny(cls) -> MuseGANConfig:
        """A few thousand parameters per network: for tests, still every layer."""
        return cls(z_dim=4, temporal_hidden=8, private_temporal_hidden=4, bar_hidden=(8, 8),
                   private_hidden=4, d_private=(4, 4, 4), d_shared=(8, 8), d_stream=4,
                   d_merged=8)

    @property
    def phrase_shape(self) -> tuple[int, int, int, int]:
        """``(tracks, bars, steps, pitches)`` of one phrase."""
        return (self.tracks, BARS_PER_PHRASE, STEPS_PER_BAR, PITCHES)

    def validate(self) -> None:
        """Raise InputError on a width that cannot build the networks."""
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                       for v in values):
                raise InputError(f"MuseGANConfig.{f.name}={value!r}: every width must be a "
                                 "positive integer")
        if self.d_stream < 2:
            raise InputError(f"MuseGANConfig.d_stream={self.d_stream}: must be at least 2 "
                             "(the onset stream starts at d_stream // 2 channels)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MuseGANConfig:
        """Inverse of :func:`dataclasses.asdict` (lists back to tuples); unknown keys fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"MuseGANConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ------------------------------------------------------------------------ layers


class _PatchConv2d(nn.Module):
    """Grouped 2-D conv (or transposed conv) whose stride equals its kernel.

    The same layer as ``nn.Conv2d(cin, cout, k, stride=k, groups=groups)`` (or
    ``nn.ConvTranspose2d``): non-overlapping patches make it one batched matmul per group,
    several times faster than the grouped convolutions of PyTorch's CPU backend. Every
    private (per-track) layer of MuseGAN is of this kind. Weights
    ``[groups, cout/groups, cin/groups·kh·kw]`` (conv) or ``[groups, cin/groups,
    cout/groups·kh·kw]`` (transposed); init uniform ±1/sqrt(fan-in) like PyTorch's.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], *, groups: int = 1,
                 transposed: bool = False) -> None:
        super().__init__()
        self.groups, self.kernel, self.transposed = groups, kernel, transposed
        self.cin, self.cout = cin // groups, cout // groups
        area = kernel[0] * kernel[1]
        shape = ((groups, self.cin, self.cout * area) if transposed
                 else (groups, self.cout, self.cin * area))
        fan_in = self.cin if transposed else self.cin * area
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(cout).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        g, (kh, kw) = self.groups, self.kernel
        if self.transposed:
            cols = x.view(n, g, self.cin, h * w).permute(1, 0, 3, 2).reshape(g, n * h * w, -1)
            y = torch.bmm(cols, self.weight).view(g, n, h, w, self.cout, kh, kw)
            y = y.permute(1, 0, 4, 2, 5, 3, 6).reshape(n, g * self.cout, h * kh, w * kw)
        else:
            h, w = h // kh, w // kw
            cols = x.view(n, g, self.cin, h, kh, w, kw).permute(1, 0, 3, 5, 2, 4, 6)
            y = torch.bmm(cols.reshape(g, n * h * w, -1), self.weight.transpose(1, 2))
            y = y.view(g, n, h, w, self.cout).permute(1, 0, 4, 2, 3).reshape(n, -1, h, w)
        return y + self.bias.view(1, -1, 1, 1)


# --------------------------------------------------------------------------- generator


class _TemporalGenerator(nn.Module):
    """``groups`` independent temporal generators: ``[n, groups·z] → [n, groups·z, 4 bars]``.

    1 → 2 → 4 steps by transposed 1-D convs (kernel 2 stride 2, then kernel 3 stride 1), as
    MuseGAN's temporal structure generator; grouped so each track owns its weights.
    """

    def __init__(self, z_dim: int, hidden: int, groups: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose1d(groups * z_dim, groups * hidden, 2, stride=2, groups=groups),
            nn.BatchNorm1d(groups * hidden),
            nn.ReLU(),
            nn.ConvTranspose1d(groups * hidden, groups * z_dim, 3, stride=1, groups=groups),
            nn.BatchNorm1d(groups * z_dim),
            nn.ReLU(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.unsqueeze(-1))


class MuseGANGenerator(nn.Module):
    """G: noise ``[n, noise_dims()]`` → phrases ``[n, tracks, 4, 48, 84]`` in [0, 1]."""

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        self.config = config
        t, zd = config.tracks, config.z_dim
        c1, c2 = config.bar_hidden
        p = config.private_hidden
        self.temporal_shared = _TemporalGenerator(zd, config.temporal_hidden, 1)
        self.temporal_private = _TemporalGenerator(zd, config.private_temporal_hidden, t)
        # Shared bar generator: one latent (4·z_dim) per (track, bar) → [c2, 16 steps, 7].
        self.bar_dense = nn.Sequential(nn.Linear(4 * zd, c1 * 4 * 3), nn.BatchNorm1d(c1 * 12),
                                       nn.ReLU())
        self.bar_conv = nn.Sequential(
            nn.ConvTranspose2d(c1, c2, (4, 3), stride=(4, 2)), nn.BatchNorm2d(c2), nn.ReLU())
        # Private per-track generators (grouped: track m owns channel group m). Each stream
        # ends in one logit map per track at full resolution; no hidden layer runs at
        # [48, 84], which keeps a CPU step affordable.
        def tconv(cin: int, cout: int, k: tuple[int, int]) -> _PatchConv2d:
            return _PatchConv2d(cin, cout, k, groups=t, transposed=True)

        self.pitch_time = nn.Sequential(                                # [16, 84] → [48, 84]
            tconv(t * c2, t * p, (1, 12)), nn.BatchNorm2d(t * p), nn.ReLU(),
            tconv(t * p, t, (3, 1)))
        self.time_pitch = nn.Sequential(                                # [48, 7] → [48, 84]
            tconv(t * c2, t * p, (3, 1)), nn.BatchNorm2d(t * p), nn.ReLU(),
            tconv(t * p, t, (1, 12)))
        self.merge = nn.Conv2d(2 * t, t, 1, groups=t)

    def noise_dims(self) -> int:
        """Numbers drawn per phrase: z, z_t, and z_i, z_{i,t} for every track."""
        return (2 + 2 * self.config.tracks) * self.config.z_dim

    def forward(self, noise: Tensor) -> Tensor:
        """``noise [n, noise_dims()]`` (standard normal) → phrases ``[n, tracks, 4, 48, 84]``."""
        n = noise.shape[0]
        t, zd = self.config.tracks, self.config.z_dim
        z, z_t, z_i, z_it = torch.split(noise, [zd, zd, t * zd, t * zd], dim=1)
        bars = BARS_PER_PHRASE
        shared_t = self.temporal_shared(z_t)                          # [n, zd, bars]
        private_t = self.temporal_private(z_it).view(n, t, zd, bars)  # [n, t, zd, bars]
        latent = torch.cat([
            z.view(n, 1, 1, zd).expand(n, t, bars, zd),
            shared_t.transpose(1, 2).unsqueeze(1).expand(n, t, bars, zd),
            z_i.view(n, t, 1, zd).expand(n, t, bars, zd),
            private_t.transpose(2, 3),
        ], dim=-1)                                                    # [n, t, bars, 4zd]
        c1, c2 = self.config.bar_hidden
        h = self.bar_dense(latent.reshape(n * t * bars, 4 * zd)).view(-1, c1, 4, 3)
        h = self.bar_conv(h)                                          # [n·t·bars, c2, 16, 7]
        # Tracks into channel groups for the private generators: [n·bars, t·c2, 16, 7].
        h = h.view(n, t, bars, c2, 16, 7).transpose(1, 2).reshape(n * bars, t * c2, 16, 7)
        s1 = self.pitch_time(h)                                       # [n·bars, t, 48, 84]
        s2 = self.time_pitch(h)                                       # [n·bars, t, 48, 84]
        logits = self.merge(torch.stack([s1, s2], dim=2).view(n * bars, 2 * t,
                                                               STEPS_PER_BAR, PITCHES))
        out = torch.sigmoid(logits).view(n, bars, t, STEPS_PER_BAR, PITCHES)
        return out.transpose(1, 2)


# ----------------------------------------------------------------------- discriminator


class MuseGANDiscriminator(nn.Module):
    """D: phrases ``[n, tracks, 4, 48, 84]`` → one logit per phrase ``[n]``.

    MuseGAN's 3-D convs have a bar-kernel of 1 up to the last layer, so bars are folded
    into the batch and those layers are 2-D convs over ``[steps, pitches]``; the last layer
    is a conv over pairs of adjacent bars. No normalization layer, so a phrase's logit does
    not depend on the rest of the batch.
    """

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        self.config = config
        t = config.tracks
        a, b, m = config.d_private
        s1, s2 = config.d_shared
        c = config.d_stream

        def conv(cin: int, cout: int, k: tuple[int, int], groups: int = 1,
                 stride: tuple[int, int] | None = None) -> nn.Sequential:
            layer = (nn.Conv2d(cin, cout, k, stride=stride) if stride is not None
                     else _PatchConv2d(cin, cout, k, groups=groups))
            return nn.Sequential(layer, nn.LeakyReLU(0.2))

        # Private per-track layers: pitch structure then time structure, and the reverse.
        self.pitch_time = nn.Sequential(conv(t, t * a, (1, 12), t),      # [48, 7]
                                        conv(t * a, t * b, (3, 1), t))   # [16, 7]
        self.time_pitch = nn.Sequential(conv(t, t * a, (3, 1), t),       # [16, 84]
                                        conv(t * a, t * b, (1, 12), t))  # [16, 7]
        self.private_merge = conv(t * 2 * b, t * m, (1, 1), t)
        # Shared layers over all tracks: [16, 7] → [4, 3] → [1, 1] per bar.
        self.shared = nn.Sequential(conv(t * m, s1, (4, 3), stride=(4, 2)),
                                    conv(s1, s2, (4, 3), stride=(4, 3)))
        # Chroma per beat [4 beats, 12] → [1, 1]; onsets/offsets [48, 1] → [1, 1].
        self.chroma = nn.Sequential(conv(t, c, (1, 12)), conv(c, 2 * c, (4, 1)))
        self.onset = nn.Sequential(conv(t, c // 2, (3, 1)), conv(c // 2, c, (4, 1)),
                                   conv(c, 2 * c, (4, 1)))
        # Adjacent bars: 4 → 3 vectors, then one logit.
        self.merged = nn.Sequential(nn.Conv1d(s2 + 4 * c, config.d_merged, 2),
                                    nn.LeakyReLU(0.2))
        self.dense = nn.Linear((BARS_PER_PHRASE - 1) * config.d_merged, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, t, bars, steps, pitches = x.shape
        b = self.config.d_private[1]
        bars_x = x.transpose(1, 2).reshape(n * bars, t, steps, pitches)
        s1 = self.pitch_time(bars_x).view(n * bars, t, b, 16, 7)
        s2 = self.time_pitch(bars_x).view(n * bars, t, b, 16, 7)
        h = self.private_merge(torch.cat([s1, s2], dim=2).view(n * bars, t * 2 * b, 16, 7))
        h = self.shared(h)                                            # [n·bars, s2, 1, 1]
        beats = bars_x.view(n * bars, t, steps // _STEPS_PER_BEAT, _STEPS_PER_BEAT,
                            pitches // 12, 12)
        chroma = self.chroma(beats.mean(dim=(3, 4)))                  # [n·bars, 2c, 1, 1]
        onset = torch.diff(bars_x, dim=2, prepend=torch.zeros_like(bars_x[:, :, :1]))
        onset = self.onset(onset.sum(dim=3, keepdim=True))            # [n·bars, 2c, 1, 1]
        h = torch.cat([h, chroma, onset], dim=1).view(n, bars, -1).transpose(1, 2)
        h = self.merged(h)                                            # [n, d_merged, 3]
        return self.dense(h.flatten(1)).squeeze(1)


# ------------------------------------------------------------------------------ target


class MuseGANTarget:
    """MuseGAN as a threat model: L_gen, one outer training step, generation, save/load.

    The loss δ minimizes, ``objective``:

    - ``"min-min"`` (default): the discriminator's loss on these real examples,
      ``BCE(D(x), 1) = -log D(x)``. HarmonyCloak's noise is *error-minimizing* ("employs
      imperceptible error-minimizing noise to make the model's generative loss approach
      zero", abstract; "Error-minimizing (Min-min)", table 1; the *min-min* objective of
      section 3.2): δ makes real data trivially recognisable as real, a shortcut that
      leaves nothing to learn — "the GAN loss reaches a minimum value during the initial
      training rounds, effectively suppressing the informative knowledge of the data to be
      learned by the generator".
    - ``"as-printed"``: eq. 4 as printed, ``min_δ E[log D(x+δ)]``, which pushes ``D(x+δ)``
      toward "fake" ("to discourage the discriminator from accurately classifying the
      sample"). We minimize its non-negative form ``BCE(D(x), 0) = -log(1 - D(x))``: the
      same minimizer (``D(x+δ) → 0``), zero at the goal, like the other reading.

    Both are ``softplus(∓ logit)``; per example their gradients in ``x`` point in exactly
    opposite directions. Gradients flow to ``x`` only, never into D's parameters (which
    also makes ``loss`` cheaper to differentiate).

    ``train_step`` is one outer step on θ: one D step (``BCE(D(x), 1) + BCE(D(G(z)), 0)``)
    then one non-saturating G step (``BCE(D(G(z)), 1)``) with the same ``z``; it returns
    D's loss. Optimizers: ``"sgd"`` (the paper's outer loop: momentum 0.9, lr 0.025) or
    ``"adam"`` (the paper's attackers: betas (0.5, 0.9), lr 1e-4); ``lr=None`` picks that
    default for the optimizer.

    Deterministic given ``seed``: the initial weights and every noise draw of
    ``train_step`` come from it (noise is drawn on the CPU, then moved, so the same seed
    gives the same z on every device); the global torch RNG is left alone. ``device``:
    ``"cpu"``, ``"cuda"`` or ``"auto"``; ``generate`` returns CPU tensors.
    """

    name = "musegan"

    def __init__(self, config: MuseGANConfig | None = None, *, seed: int = 0,
                 objective: Objective = "min-min", optimizer: OptimizerName = "sgd",
                 lr: float | None = None, momentum: float = 0.9,
                 betas: tuple[float, float] = (0.5, 0.9), device: str = "cpu") -> None:
        self.config = config if config is not None else MuseGANConfig()
        self.config.validate()
        if objective not in ("min-min", "as-printed"):
            raise InputError(f"objective={objective!r}: use 'min-min' or 'as-printed'")
        if optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer={optimizer!r}: use 'sgd' or 'adam'")
        if lr is None:
            lr = 0.025 if optimizer == "sgd" else 1e-4
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise InputError(f"lr={lr!r}: must be a positive finite number")
        self.seed = int(seed)
        self.objective: Objective = objective
        self.optimizer_name: OptimizerName = optimizer
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.betas = (float(betas[0]), float(betas[1]))
        self.device = torch.device(resolve_device(device))
        self.steps = 0
        # Weights from the seed without touching the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.generator = MuseGANGenerator(self.config)
            self.discriminator = MuseGANDiscriminator(self.config)
        self.generator.to(self.device).train()
        self.discriminator.to(self.device).train()
        self.g_optimizer = self._make_optimizer(self.generator)
        self.d_optimizer = self._make_optimizer(self.discriminator)
        self._rng = torch.Generator(device="cpu").manual_seed(self.seed)

    def _make_optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(module.parameters(), lr=self.lr, momentum=self.momentum)
        return torch.optim.Adam(module.parameters(), lr=self.lr, betas=self.betas)

    # ------------------------------------------------------------------ introspection

    def num_parameters(self) -> dict[str, int]:
        """Trainable parameters: ``{"generator": ..., "discriminator": ...}``."""
        return {"generator": sum(p.numel() for p in self.generator.parameters()),
                "discriminator": sum(p.numel() for p in self.discriminator.parameters())}

    def options(self) -> dict[str, Any]:
        """Everything but the weights, JSON-ready (what ``config.json`` holds)."""
        return {"config": asdict(self.config), "seed": self.seed, "objective": self.objective,
                "optimizer": self.optimizer_name, "lr": self.lr, "momentum": self.momentum,
                "betas": list(self.betas)}

    def _phrases(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or tuple(x.shape[1:]) != self.config.phrase_shape:
            raise InputError(
                f"musegan: phrases of shape {tuple(x.shape)}; expected [batch, "
                f"{', '.join(map(str, self.config.phrase_shape))}] (tracks, bars, steps, "
                "pitches), see harmonycloak.perturb.phrases.phrases_from_roll")
        return x.to(device=self.device, dtype=torch.float32)

    # ------------------------------------------------------------------- L_gen

    def discriminate(self, x: Tensor) -> Tensor:
        """D's logits ``[batch]`` for phrases ``x``; differentiable in ``x`` only."""
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, params, (self._phrases(x),))

    def _example_losses(self, x: Tensor) -> Tensor:
        logits = self.discriminate(x)
        # min-min: BCE(l, 1) = softplus(-l) = -log D(x); as-printed: BCE(l, 0) = softplus(l).
        return F.softplus(-logits if self.objective == "min-min" else logits)

    def loss(self, x: Tensor) -> Tensor:
        """Mean L_gen over the batch ``x [batch, tracks, 4, 48, 84]``; differentiable in ``x``."""
        return self._example_losses(x).mean()

    def example_losses(self, x: Tensor) -> Tensor:
        """L_gen per example ``[batch]``, without gradients."""
        with torch.no_grad():
            return self._example_losses(x)

    # --------------------------------------------------------------- training

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal G input ``[n, noise_dims]`` on the model's device.

        Drawn from ``generator`` (on its own device), else from the target's seeded CPU RNG.
        """
        gen = generator if generator is not None else self._rng
        noise = torch.randn(n, self.generator.noise_dims(), generator=gen, device=gen.device)
        return noise.to(self.device)

    def train_step(self, x: Tensor) -> float:
        """One D step on real ``x`` vs ``G(z)``, then one G step; returns D's loss."""
        real = self._phrases(x).detach()
        n = real.shape[0]
        if n < 2:
            raise InputError(f"musegan train_step: batch of {n} phrase; batch norm needs at "
                             "least 2 per step")
        fake = self.generator(self.sample_noise(n))
        ones = torch.ones(n, device=self.device)
        zeros = torch.zeros(n, device=self.device)

        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss = (F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
                  + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros))
        d_loss.backward()
        self.d_optimizer.step()

        # Non-saturating G step against the updated D; D's grads from it are discarded.
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        g_loss.backward()
        self.g_optimizer.step()
        self.discriminator.zero_grad(set_to_none=True)
        self.steps += 1
        return float(d_loss.detach())

    def generate(self, n: int, generator: torch.Generator | None = None, *,
                 batch_size: int = 64) -> Tensor:
        """``n`` phrases ``[n, tracks, 4, 48, 84]``: float32 velocities in [0, 1], on CPU.

        G runs in eval mode (batch-norm running statistics), so a phrase does not depend on
        its batch. Noise comes from ``generator`` (a seeded ``torch.Generator``; None means
        seed 0), never from the training RNG.
        """
        if n < 0:
            raise InputError(f"generate: n={n}; ask for zero or more phrases")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        was_training = self.generator.training
        self.generator.eval()
        try:
            with torch.no_grad():
                noise = self.sample_noise(n, gen)
                parts = [self.generator(noise[i:i + batch_size]).cpu()
                         for i in range(0, n, batch_size)]
        finally:
            self.generator.train(was_training)
        if not parts:
            return torch.zeros((0, *self.config.phrase_shape))
        return torch.cat(parts)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Weights, batch-norm buffers, both optimizers, the noise RNG and the step count."""
        return {"generator": self.generator.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "g_optimizer": self.g_optimizer.state_dict(),
                "d_optimizer": self.d_optimizer.state_dict(),
                "rng_state": self._rng.get_state(),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (strict: every weight must be there)."""
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        if "g_optimizer" in state:
            self.g_optimizer.load_state_dict(state["g_optimizer"])
        if "d_optimizer" in state:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        if "rng_state" in state:
            self._rng.set_state(state["rng_state"].to("cpu", torch.uint8))
        self.steps = int(state.get("steps", 0))

    def _flat_tensors(self) -> dict[str, Tensor]:
        """:meth:`state_dict` as flat ``name → tensor`` (safetensors-compatible)."""
        flat: dict[str, Tensor] = {}
        for prefix, module in (("generator", self.generator),
                               ("discriminator", self.discriminator)):
            for k, v in module.state_dict().items():
                flat[f"{prefix}.{k}"] = v
        for prefix, opt in (("g_optimizer", self.g_optimizer),
                            ("d_optimizer", self.d_optimizer)):
            for idx, entry in opt.state_dict()["state"].items():
                for k, v in entry.items():
                    if v is None:
                        continue
                    flat[f"{prefix}.state.{idx}.{k}"] = torch.as_tensor(v)
        flat["rng_state"] = self._rng.get_state()
        flat["steps"] = torch.tensor(self.steps, dtype=torch.int64)
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in flat.items()}

    def _load_flat_tensors(self, flat: dict[str, Tensor], *, optimizers: bool = True,
                           rng: bool = True) -> None:
        """Inverse of :meth:`_flat_tensors`; ``optimizers``/``rng``: restore those too."""
        state: dict[str, Any] = {"generator": {}, "discriminator": {}}
        optim: dict[str, dict[int, dict[str, Tensor]]] = {"g_optimizer": {}, "d_optimizer": {}}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in ("generator", "discriminator"):
                state[head][rest] = value
            elif head in optim:
                _, idx, name = rest.split(".", 2)
                optim[head].setdefault(int(idx), {})[name] = value
            elif key == "rng_state" and rng:
                state["rng_state"] = value
            elif key == "steps":
                state["steps"] = int(value)
        if optimizers:
            for name, opt in (("g_optimizer", self.g_optimizer),
                              ("d_optimizer", self.d_optimizer)):
                # The constructor's hyper-parameters (lr may be overridden) with the saved state.
                state[name] = {"state": optim[name],
                               "param_groups": opt.state_dict()["param_groups"]}
        self.load_state_dict(state)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and the weights (``model.safetensors`` when the
        ``safetensors`` package is installed, else ``model.pt``, tensors only) to
        ``directory`` (created if missing). Returns the directory."""
        weights, stale = weights_file_choice()
        meta = {"format": _FORMAT, "version": _FORMAT_VERSION, **self.options()}
        return write_checkpoint(directory, meta, self._flat_tensors(), weights_file=weights,
                                stale=stale)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "cpu",
             objective: Objective | None = None, optimizer: OptimizerName | None = None,
             lr: float | None = None, momentum: float | None = None,
             betas: tuple[float, float] | None = None,
             seed: int | None = None) -> MuseGANTarget:
        """A target saved by :meth:`save`; never unpickles anything.

        Options left at None keep the saved values. A different ``optimizer`` (say, the
        defender's SGD on a checkpoint an attacker trained with Adam) starts with fresh
        optimizer state; the same one resumes its state with the ``lr`` given (else the
        saved one). A ``seed`` reseeds the noise of ``train_step``; without one the saved
        noise RNG resumes. Raises ModelLoadError when the directory, its ``config.json`` or
        its weights are missing, unreadable or do not match.
        """
        fix = ("point it at a directory written by MuseGANTarget.save() holding "
               f"{CONFIG_FILE} and {SAFETENSORS_FILE} (or {TORCH_FILE})")
        where, config_path = open_checkpoint(directory, fix=fix)
        try:
            meta = check_format(json.loads(config_path.read_text()), name=_FORMAT,
                                version=_FORMAT_VERSION)
            same_optimizer = optimizer is None or optimizer == meta["optimizer"]
            target = cls(
                MuseGANConfig.from_dict(meta["config"]),
                seed=meta["seed"] if seed is None else seed,
                objective=objective or meta["objective"],
                optimizer=optimizer or meta["optimizer"],
                lr=lr if lr is not None else (meta["lr"] if same_optimizer else None),
                momentum=meta["momentum"] if momentum is None else momentum,
                betas=tuple(meta["betas"]) if betas is None else betas,  # type: ignore[arg-type]
                device=device)
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
            raise ModelLoadError(f"{config_path}: not a usable MuseGAN config ({exc}); "
                                 f"{fix}") from exc
        if (where / SAFETENSORS_FILE).is_file():
            weights = where / SAFETENSORS_FILE
            if not have_safetensors():
                raise ModelLoadError(f"{weights}: reading it needs the safetensors package; "
                                     "pip install safetensors")
        elif (where / TORCH_FILE).is_file():
            weights = where / TORCH_FILE
        else:
            raise ModelLoadError(f"{where}: no weights ({SAFETENSORS_FILE} or {TORCH_FILE}); "
                                 f"{fix}")
        try:
            flat = read_weights(weights)
            if not isinstance(flat, dict) or not all(isinstance(v, Tensor)
                                                     for v in flat.values()):
                raise ValueError("it does not hold a flat name → tensor mapping")
            target._load_flat_tensors(flat, optimizers=same_optimizer, rng=seed is None)
        except Exception as exc:  # corrupt file, missing or mis-shaped weights
            raise ModelLoadError(f"{weights}: cannot load these weights into the model of "
                                 f"{config_path} ({type(exc).__name__}: {exc}); {fix}") from exc
        return target

