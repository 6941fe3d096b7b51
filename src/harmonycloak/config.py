"""Options as nested frozen dataclasses; every report carries the whole config.

Protection presets are named and versioned (``light-v1``, ``standard-v1``,
``strong-v1``): a preset's numbers never change once released; a better setting is a new
version. The paper's hyper-parameters (section 5.1) are the defaults of
:class:`EngineConfig`: PGD step 0.001 for 20 iterations, SGD momentum 0.9 and lr 0.025
for the outer loop, α = 0.22 for GANs and 0.30 for autoregressive models, 10 ms windows.
Audio protection adds :class:`AudioPerturbConfig` (where δ goes in a waveform); every
preset uses its defaults, so the MIDI numbers of the presets are unchanged.
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
    "ProtectConfig",
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
    windows of this many seconds (the last one zero-padded) that form the target's batch
    (10 s: MusicGen / CLAP input lengths). ``initial_fraction``: where magnitudes start
    between their bounds.
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


PRESETS: dict[str, ProtectConfig] = {
    "light-v1": ProtectConfig("light-v1", EngineConfig(outer_rounds=3, inner_steps=10),
                              MidiPerturbConfig(), blackbox=BlackBoxConfig(rounds=3)),
    "standard-v1": ProtectConfig("standard-v1", EngineConfig(), MidiPerturbConfig()),
    "strong-v1": ProtectConfig("strong-v1", EngineConfig(outer_rounds=10, pgd_step=0.002),
                               MidiPerturbConfig(window_ms=5.0),
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
