"""Shared, generic test fixtures: synthetic music-like signals (no files, no network)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def music_like(
    sample_rate_hz: int,
    channels: int = 2,
    duration_s: float = 1.0,
    *,
    seed: int = 0,
    peak: float = 0.5,
) -> np.ndarray:
    """A deterministic music-like test signal, float32 ``[channels, samples]``.

    Each channel is a sequence of overlapping notes (a fundamental drawn from a
    pentatonic scale, six harmonics with 1/k amplitudes, attack/decay envelopes)
    plus white noise 40 dB below the notes. Channels get different notes, so a
    swapped or duplicated channel is detectable. Harmonics above 0.45 * rate are
    dropped. The result is scaled so its absolute peak equals ``peak``.
    """
    rng = np.random.default_rng(seed)
    num_samples = max(1, int(round(duration_s * sample_rate_hz)))
    scale_midi = np.array([57, 60, 62, 64, 67, 69, 72, 74, 76, 79])
    out = np.zeros((channels, num_samples))
    note_s = 0.25
    note_len = int(round(1.5 * sample_rate_hz))  # the envelope is ~-40 dB after 1.5 s
    for ch in range(channels):
        start = -int(rng.integers(0, int(note_s * sample_rate_hz) + 1))
        while start < num_samples:
            f0_hz = 440.0 * 2.0 ** ((rng.choice(scale_midi) - 69) / 12.0)
            phase = rng.uniform(0, 2 * np.pi)
            lo, hi = max(start, 0), min(start + note_len, num_samples)
            local = (np.arange(lo, hi) - start) / sample_rate_hz
            env = (1 - np.exp(-local / 0.005)) * np.exp(-local / 0.3)
            tone = np.zeros(hi - lo)
            for k in range(1, 7):
                if k * f0_hz < 0.45 * sample_rate_hz:
                    tone += np.sin(2 * np.pi * k * f0_hz * local + k * phase) / k
            out[ch, lo:hi] += env * tone
            start += int(note_s * sample_rate_hz) * int(rng.integers(1, 3))
        rms = np.sqrt(np.mean(out[ch] ** 2))
        out[ch] += 0.01 * rms * rng.standard_normal(num_samples)
    max_abs = np.max(np.abs(out))
    if max_abs > 0:
        out *= peak / max_abs
    return out.astype(np.float32)


@pytest.fixture
def make_music() -> Callable[..., np.ndarray]:
    """The :func:`music_like` factory, as a fixture."""
    return music_like


def best_lag(reference: np.ndarray, test: np.ndarray, max_lag: int = 4096) -> tuple[int, float]:
    """Lag (in samples) at which 1-D ``test`` best matches ``reference``, and the match.

    Positive lag: ``test`` is late. The match is the normalized cross-correlation at that
    lag (1.0 for a delayed copy). Searches ``-max_lag..max_lag`` via FFT.
    """
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(tst))))
    corr = np.fft.irfft(np.conj(np.fft.rfft(ref, size)) * np.fft.rfft(tst, size), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = corr[lags % size]
    best = int(np.argmax(values))
    norm = np.sqrt(np.sum(ref**2) * np.sum(tst**2)) or 1.0
    return int(lags[best]), float(values[best] / norm)


@pytest.fixture
def lag_of() -> Callable[..., tuple[int, float]]:
    """The :func:`best_lag` helper, as a fixture."""
    return best_lag


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a test (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    models on a shared 2-core machine run several times faster without thread hand-offs,
    and float sums depend on the thread count (same bytes need the same threads)."""
    from harmonycloak.psychoacoustics._threads import single_thread

    with single_thread():
        yield


def load_script(name: str) -> Iterator[ModuleType]:
    """Import ``scripts/NAME.py`` as a module for the length of a fixture; it is registered
    in ``sys.modules`` while in use because its dataclasses look their module up there."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def midi_file_bytes(parts: list[tuple[int, int, list[tuple[int, int, int, int]]]]) -> bytes:
    """A type-1 Standard MIDI File at 120 bpm, 480 ticks per beat: one track per
    ``(channel, program, notes)``, each note ``(pitch, start_tick, length_ticks, velocity)``
    (note-offs sort before note-ons at the same tick)."""
    import io

    mido = pytest.importorskip("mido")
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)]))
    for channel, program, notes in parts:
        track = mido.MidiTrack([mido.Message("program_change", channel=channel, program=program, time=0)])
        events = []
        for pitch, start, length, velocity in notes:
            events += [(start, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)),
                       (start + length, 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0))]
        now = 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    buffer = io.BytesIO()
    mid.save(file=buffer)
    return buffer.getvalue()
