"""Options as nested frozen dataclasses; every report carries the whole config.

Protection presets are named and versioned (``light-v1``, ``standard-v1``,
``strong-v1``): a preset's numbers never change once released; a better setting is a new
version. The paper's hyper-parameters (section 5.1) are the defaults of
:class:`EngineConfig`: PGD step 0.001 for 20 iterations, SGD momentum 0.9 and lr 0.025
for the outer loop, α = 0.22 for GANs and 0.30 for autoregressive models, 10 ms windows.
Audio protection adds :class:`AudioPerturbConfig` (where δ goes in a waveform):
``light-v1`` and ``standard-v1`` use its defaults; ``strong-v1`` lets the cloak's bounds
sit 3 dB closer to the masking threshold (:data:`STRONG_MARGIN_DB`), the one setting
measured to trade quality for strength (see the constant). The MIDI numbers of the
presets do not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

__all__ = [
    "AnalysisConfig",
    "AudioPerturbConfig",
    "BlackBoxConfig",
    "Device",
    "EngineConfig",
    "MidiPerturbConfig",
    "PRESETS",
    "STRONG_MARGIN_DB",
    "ProtectConfig",
    "WATERMARK_ORDERS",
    "WatermarkSplit",
    "config_dict",
    "preset",
    "resolve_device",
]


class Device(str, Enum):
    """Where tensors live: ``auto`` picks CUDA when a GPU is present, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass(frozen=True)
class AnalysisConfig:
    """What ``analyze`` measures.

    ``window_ms`` is the dominant-tone window of the paper (section 4.1: 10 ms);
    ``temporal_masking`` adds pre/post-masking across frames to the global threshold.
    """

    window_ms: float = 10.0
    temporal_masking: bool = True


@dataclass(frozen=True)
class EngineConfig:
    """The bi-level loop (paper eq. 5).

    ``outer_rounds`` rounds, each with ``outer_steps`` SGD steps on θ (momentum
    ``outer_momentum``, lr ``outer_lr``) and then ``inner_steps`` PGD iterations moving δ
    by about ``pgd_step`` each (normalized velocity for MIDI). ``alpha`` is the
    regularizer's weight; None takes the target's own default (0.22 GAN, 0.30
    autoregressive).
    """

    outer_rounds: int = 5
    outer_steps: int = 5
    outer_lr: float = 0.025
    outer_momentum: float = 0.9
    inner_steps: int = 20
    pgd_step: float = 0.001
    alpha: float | None = None
    batch_size: int = 16


@dataclass(frozen=True)
class MidiPerturbConfig:
    """Where δ goes in a MIDI file (paper section 4.1, window strategy).

    ``window_ms``: window length on the piece's own clock (the paper's ablation spans
    5–100 ms); ``min_velocity``: a window whose dominant note is quieter than this
    (normalized velocity) gets no perturbation; ``initial_fraction``: where δ starts
    between its bounds.
    """

    window_ms: float = 10.0
    min_velocity: float = 8 / 127
    include_drums: bool = True
    initial_fraction: float = 0.05


@dataclass(frozen=True)
class AudioPerturbConfig:
    """Where δ goes in a waveform (issue 10; paper section 4.3).

    ``mode``: ``"spectrum"`` (noise shaped under the global masking threshold, one
    coefficient per STFT cell: :class:`~harmonycloak.perturb.audio_delta.MaskedSpectrumPerturbation`)
    or ``"tone"`` (the paper's one sinusoid per 10 ms window at the dominant frequency:
    :class:`~harmonycloak.perturb.audio_delta.DominantTonePerturbation`).
    ``margin_db``: how far below the masking threshold the bounds sit; None takes the
    budget's measured default (6 dB spectrum, 3 dB tone: the smallest whole margins that
    keep the NMR p95 below 0 dB at the largest δ). ``chunk_s``: the file is cut into
    equal windows of at most this many seconds (as few as fit; the last one padded by a
    few samples) that form the target's batch (10 s: MusicGen / CLAP input lengths).
    ``initial_fraction``: where magnitudes start between their bounds.
    """

    mode: str = "spectrum"
    margin_db: float | None = None
    chunk_s: float = 10.0
    initial_fraction: float = 0.05

    def __post_init__(self) -> None:
        from harmonycloak.errors import InputError

        if self.mode not in ("spectrum", "tone"):
            raise InputError(f"AudioPerturbConfig.mode={self.mode!r}: use 'spectrum' or 'tone'")
        if self.margin_db is not None and not (math.isfinite(self.margin_db) and self.margin_db >= 0):
            raise InputError(f"AudioPerturbConfig.margin_db={self.margin_db!r}: use a number of "
                             "dB >= 0, or None for the budget's default")
        if not (math.isfinite(self.chunk_s) and self.chunk_s > 0):
            raise InputError(f"AudioPerturbConfig.chunk_s={self.chunk_s!r}: use a positive "
                             "number of seconds (e.g. 10.0)")
        if not 0.0 < self.initial_fraction < 1.0:
            raise InputError(f"AudioPerturbConfig.initial_fraction={self.initial_fraction!r}: "
                             "use a number strictly between 0 and 1 (e.g. 0.05)")


@dataclass(frozen=True)
class BlackBoxConfig:
    """The black-box loop (paper section 4.2, eq. 8–9; the default mode of ``protect``).

    ``rounds`` rounds; each samples ``sample_size`` (Q, the paper's 7) members of the
    surrogate bag (:mod:`harmonycloak.targets.bag`, 10 members), trains each on x + δ for
    ``outer_steps`` steps (minibatches of ``batch_size``), then ``meta_train_steps`` PGD
    iterations on the first Q − 1 members and ``meta_test_steps`` on the held-out one.
    ``pgd_step``: how far δ moves per iteration (as :class:`EngineConfig`); ``pgd_batch``:
    examples (audio chunks of ``AudioPerturbConfig.chunk_s``, MIDI phrases) per PGD
    iteration, drawn at random (None: all), so an iteration costs the same on a long file
    as on a short one. ``alpha``: None takes each family's own (0.22 GAN / diffusion, 0.30
    autoregressive / contrastive; a phase uses the mean over its members).
    """

    rounds: int = 6
    sample_size: int = 7
    outer_steps: int = 1
    meta_train_steps: int = 4
    meta_test_steps: int = 2
    pgd_step: float = 0.002
    batch_size: int = 2
    pgd_batch: int | None = 1
    alpha: float | None = None

    def __post_init__(self) -> None:
        from harmonycloak.errors import InputError

        for name in ("rounds", "sample_size", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= (2 if name == "sample_size" else 1)):
                raise InputError(f"BlackBoxConfig.{name}={value!r}: use a whole number >= "
                                 f"{2 if name == 'sample_size' else 1}")
        for name in ("outer_steps", "meta_train_steps", "meta_test_steps"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise InputError(f"BlackBoxConfig.{name}={value!r}: use a whole number >= 0")
        if self.pgd_batch is not None and not (isinstance(self.pgd_batch, int) and self.pgd_batch >= 1):
            raise InputError(f"BlackBoxConfig.pgd_batch={self.pgd_batch!r}: use a whole number "
                             ">= 1, or None for every example at each iteration")
        if not (math.isfinite(self.pgd_step) and self.pgd_step > 0):
            raise InputError(f"BlackBoxConfig.pgd_step={self.pgd_step!r}: use a positive number")


@dataclass(frozen=True)
class ProtectConfig:
    """Everything that decides the protected output (besides input, model and seed)."""

    preset: str
    engine: EngineConfig
    midi: MidiPerturbConfig
    audio: AudioPerturbConfig = AudioPerturbConfig()
    blackbox: BlackBoxConfig = BlackBoxConfig()


STRONG_MARGIN_DB = 3.0
"""``strong-v1``'s audio margin below the masking threshold (the default is 6 dB for the
masked spectrum). Measured with ``benchmarks/unlearnable_audio.py --target codec-lm --clips
108 --stage1-steps 0 --steps 300 --rounds 3 [--margin-db 3]``: an attacker trained from
scratch ends at 0.866 of its clean loss instead of 0.900 (0.861 / 0.894 after MP3
128 kbps), at SNR 15.4 instead of 18.1 dB, ViSQOL 4.66 instead of 4.69, and NMR p95
+0.9 instead of −2.1 dB (the worst band of more than 5 % of the frames is above its
masking threshold). More rounds and larger steps, by contrast, left the quality and the
strength where they were."""

PRESETS: dict[str, ProtectConfig] = {
    "light-v1": ProtectConfig("light-v1", EngineConfig(outer_rounds=3, inner_steps=10),
                              MidiPerturbConfig(), blackbox=BlackBoxConfig(rounds=3)),
    "standard-v1": ProtectConfig("standard-v1", EngineConfig(), MidiPerturbConfig()),
    "strong-v1": ProtectConfig("strong-v1", EngineConfig(outer_rounds=10, pgd_step=0.002),
                               MidiPerturbConfig(window_ms=5.0),
                               AudioPerturbConfig(margin_db=STRONG_MARGIN_DB),
                               blackbox=BlackBoxConfig(rounds=12, meta_train_steps=6)),
}


def preset(name: str) -> ProtectConfig:
    """The named preset; InputError listing the known ones otherwise."""
    from harmonycloak.errors import InputError

    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"--preset {name}: unknown preset; use one of {', '.join(PRESETS)}") from None


def resolve_device(device: Device | str) -> str:
    """The torch device name for a ``--device`` choice.

    Raises InputError when CUDA is asked for and no GPU is visible.
    """
    import torch

    from harmonycloak.errors import InputError

    choice = Device(device)
    if choice is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice is Device.cuda and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: no CUDA GPU is visible to PyTorch on this machine; "
            "use --device auto or --device cpu"
        )
    return choice.value


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass (enums as their values)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(asdict(config))


WATERMARK_ORDERS = ("mark-first", "cloak-first")
"""How ``protect`` combines the keyed watermark with the cloak: ``mark-first`` marks the
clean clip and computes the cloak on the marked audio (the mark is part of x, the budget
comes from the marked audio); ``cloak-first`` marks the cloaked audio."""


@dataclass(frozen=True)
class WatermarkSplit:
    """How the keyed watermark (``hcwm-1``) and the cloak share the masking budget when
    ``protect`` does both (issue 6).

    Alone, each fills the room under the music's masking: the mark at its own default
    strength reads NMR p95 ~ +0.2 dB (its caps allow +8 dB over the threshold for a
    coherent level change), the cloak at its default margin -1.5 to -3.8 dB; together they
    reach +1.4 to +3.3 dB on the dev music. So both give way:

    * ``strength`` scales the mark's caps (:func:`harmonycloak.watermark.embed`); 0.5 puts
      the mark alone at NMR p95 ~ -5.5 dB and still reads back with at most 9 of the 18
      tolerated bit errors after MP3 / AAC at 64 kbps;
    * ``mark_room`` (``mark-first`` only): that share of the mark's power is taken off the
      cloak's upper bound in every cell where the mark sits (``sqrt(upper^2 - A_mark^2)``,
      ``harmonycloak.pipeline._make_room``), so the two together stay within the cloak's
      own bound there and the cloak keeps its full budget where the mark is weak or absent;
    * ``extra_margin_db``: the cloak's bounds sit that much further below the masking
      threshold everywhere (on top of ``config.audio.margin_db`` or the budget's default).

    ``order``: one of :data:`WATERMARK_ORDERS`. The defaults are the measured choice
    (``benchmarks/bench_protect_watermark.py``, 6 ten-second dev-music excerpts, codec-lm,
    light-v1, two trainings of the target): mark first, strength 0.5, the cloak making
    room for all of the mark's power, no uniform margin. NMR p95 of mark and cloak
    together at most -1.08 / -1.16 dB (the cloak's own design keeps p95 below -1 dB), the
    cloak's loss ratio protected/clean within +6.6 % / +5.7 % of the cloak alone (seed
    noise 1 %), the payload read back on all excerpts, written and after MP3 and AAC at 64
    kbps. At the same split, marking first gave lower NMR and smaller changes of the
    cloak's effect than marking last (0.5 strength, 1 dB margin: worst change 3.0 / 4.5 %
    against 4.5 / 7.7 %), and only it can make room cell by cell; a uniform margin costs
    the cloak more for the same NMR (0.6 strength, 2 dB: NMR p95 up to -0.20 dB, changes
    up to 8.5 %).
    """

    order: str = "mark-first"
    strength: float = 0.5
    extra_margin_db: float = 0.0
    mark_room: float = 1.0

    def __post_init__(self) -> None:
        from harmonycloak.errors import InputError as _input_error

        if self.order not in WATERMARK_ORDERS:
            raise _input_error(f"WatermarkSplit.order={self.order!r}: use one of "
                             f"{', '.join(WATERMARK_ORDERS)}")
        if not (isinstance(self.strength, (int, float)) and 0.0 < float(self.strength) <= 4.0):
            raise _input_error(f"WatermarkSplit.strength={self.strength!r}: use a number in (0, 4] "
                             "(the watermark's cap scale; 0.5 is the measured split)")
        if not (isinstance(self.extra_margin_db, (int, float)) and math.isfinite(self.extra_margin_db)
                and self.extra_margin_db >= 0):
            raise _input_error(f"WatermarkSplit.extra_margin_db={self.extra_margin_db!r}: use a "
                             "number of dB >= 0 (how much further below the mask the cloak stays)")
        if not (isinstance(self.mark_room, (int, float)) and 0.0 <= float(self.mark_room) <= 1.0):
            raise _input_error(f"WatermarkSplit.mark_room={self.mark_room!r}: use a share in [0, 1] "
                             "of the mark's power to take off the cloak's bounds")
        if self.mark_room > 0 and self.order != "mark-first":
            raise _input_error(f"WatermarkSplit.mark_room={self.mark_room!r} needs order='mark-first' "
                             "(the cloak can only make room for a mark that is already there); "
                             "with order='cloak-first' set mark_room=0 and use extra_margin_db")
