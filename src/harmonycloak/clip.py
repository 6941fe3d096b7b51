"""Value types that flow between the layers: :class:`AudioClip` and :class:`PianoRoll`.

Both are frozen; the arrays inside are not copied on construction, so treat them as
read-only. Validation of user files happens once, in ``harmonycloak.io``; these types
only check their own shape invariants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["AudioClip", "PianoRoll", "TempoChange", "TimeSignature"]


@dataclass(frozen=True)
class AudioClip:
    """Audio as float32 ``[channels, samples]`` in [-1, 1] (full scale = 1.0).

    ``source`` is the file it came from (None for synthesized audio).
    """

    samples: np.ndarray
    sample_rate_hz: int
    source: str | None = None

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise ValueError(f"AudioClip needs [channels, samples], got shape {self.samples.shape}")
        if self.samples.dtype != np.float32:
            raise ValueError(f"AudioClip needs float32 samples, got {self.samples.dtype}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate_hz}")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz

    def with_samples(self, samples: np.ndarray, sample_rate_hz: int | None = None) -> "AudioClip":
        """A new clip with other samples (and optionally another rate), same source."""
        return AudioClip(
            np.ascontiguousarray(samples, dtype=np.float32),
            sample_rate_hz or self.sample_rate_hz,
            self.source,
        )


@dataclass(frozen=True)
class TempoChange:
    """Tempo from ``step`` on, in quarter notes per minute."""

    step: int
    qpm: float


@dataclass(frozen=True)
class TimeSignature:
    """Meter from ``step`` on (``numerator``/``denominator``)."""

    step: int
    numerator: int
    denominator: int


@dataclass(frozen=True)
class PianoRoll:
    """Multi-track piano roll: velocities in [0, 1] as float32 ``[tracks, steps, pitches]``.

    Time is quantized to ``steps_per_beat`` steps per quarter note (12 gives MuseGAN's 48
    steps per 4/4 bar). Pitch index ``i`` is MIDI note ``lowest_pitch + i`` (MuseGAN: 24 =
    C1 with 84 pitches up to B7). ``onsets`` (bool, same shape) marks the step where each
    note starts, so repeated notes of one pitch stay apart; when None, every run of
    non-zero steps is one note. Tempo and meter changes are kept at their steps.
    ``warnings`` holds plain-language notes for the musician about what loading left
    out or changed (e.g. notes outside the pitch range); empty when nothing was lost.
    """

    velocities: np.ndarray
    steps_per_beat: int
    lowest_pitch: int
    programs: tuple[int, ...]
    is_drum: tuple[bool, ...]
    track_names: tuple[str, ...]
    tempos: tuple[TempoChange, ...] = (TempoChange(0, 120.0),)
    time_signatures: tuple[TimeSignature, ...] = (TimeSignature(0, 4, 4),)
    onsets: np.ndarray | None = None
    source: str | None = None
    ticks_per_beat: int = field(default=480)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.velocities.ndim != 3:
            raise ValueError(f"PianoRoll needs [tracks, steps, pitches], got {self.velocities.shape}")
        tracks = self.velocities.shape[0]
        if not (len(self.programs) == len(self.is_drum) == len(self.track_names) == tracks):
            raise ValueError("programs, is_drum and track_names need one entry per track")
        if self.onsets is not None and self.onsets.shape != self.velocities.shape:
            raise ValueError("onsets must have the shape of velocities")

    @property
    def tracks(self) -> int:
        return int(self.velocities.shape[0])

    @property
    def steps(self) -> int:
        return int(self.velocities.shape[1])

    @property
    def pitches(self) -> int:
        return int(self.velocities.shape[2])
