"""Pictures for the page: spectrograms of the original, the protected audio and the
added sound (amplified so it can be seen), and the same view of a MIDI file's notes.

matplotlib (a core dependency) through its object-oriented ``Figure`` (Agg), without
pyplot's global state, so pictures can be drawn in server threads.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

__all__ = ["NOISE_GAIN", "piano_roll_png", "spectrogram_db", "spectrograms_png"]

NOISE_GAIN = 20.0
"""The added sound is drawn this many times louder (+26 dB) so that it shows."""
_MAX_FRAMES = 1600  # columns in the picture: enough for a 1600-pixel-wide image
_FLOOR_DB = -100.0


def spectrogram_db(samples: np.ndarray, sample_rate_hz: int, *, n_fft: int = 2048,
                   max_frames: int = _MAX_FRAMES) -> tuple[np.ndarray, float, float]:
    """Power spectrogram of the mono mix of ``samples`` (float ``[channels, samples]``,
    full scale 1.0) in dB re full scale, ``[bins, frames]``, Hann window of ``n_fft``;
    the hop grows with the length so there are at most ``max_frames`` frames. Returns
    (dB, seconds per frame, Hz per bin). A full-scale sine reads about 0 dB; silence
    reads -100 dB (the floor)."""
    mono = np.asarray(samples, dtype=np.float64).mean(axis=0)
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    hop = max(n_fft // 4, math.ceil((mono.size - n_fft) / max(1, max_frames - 1)))
    count = 1 + (mono.size - n_fft) // hop
    window = np.hanning(n_fft)
    frames = np.lib.stride_tricks.as_strided(
        mono, shape=(count, n_fft), strides=(mono.strides[0] * hop, mono.strides[0]))
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = (np.abs(spectrum) * 2.0 / window.sum()) ** 2  # a full-scale sine: 1.0 -> 0 dB
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (_FLOOR_DB / 10.0)))
    return db.T.astype(np.float32), hop / sample_rate_hz, sample_rate_hz / n_fft


def spectrograms_png(original: np.ndarray, protected: np.ndarray, sample_rate_hz: int, *,
                     noise_gain: float = NOISE_GAIN, title: str = "") -> bytes:
    """PNG of three spectrograms on one colour scale: original, protected, and
    ``noise_gain`` × (protected − original). Inputs: float ``[channels, samples]``, same
    shape and rate."""
    from matplotlib.figure import Figure

    length = min(original.shape[-1], protected.shape[-1])
    a = np.asarray(original)[..., :length]
    b = np.asarray(protected)[..., :length]
    panels = [("Original", a), ("Protected", b),
              (f"Added sound ×{noise_gain:g} (+{20 * math.log10(noise_gain):.0f} dB, to make it visible)",
               (b - a) * noise_gain)]
    specs = [spectrogram_db(x, sample_rate_hz) for _, x in panels]
    top = float(max(s[0].max() for s in specs))
    vmax, vmin = top, top - 90.0
    fig = Figure(figsize=(10, 7.5), layout="constrained")  # no pyplot: safe in server threads
    axes = fig.subplots(3, 1, sharex=True)
    image = None
    for ax, (name, _), (db, s_per_frame, hz_per_bin) in zip(axes, panels, specs):
        extent = (0.0, db.shape[1] * s_per_frame, 0.0, db.shape[0] * hz_per_bin / 1000.0)
        image = ax.imshow(db, origin="lower", aspect="auto", extent=extent, vmin=vmin, vmax=vmax,
                          cmap="magma", interpolation="nearest")
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="dB (full scale)", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def piano_roll_png(original: Path, protected: Path, *, title: str = "") -> bytes:
    """PNG of a MIDI file's notes before and after protection (all tracks together, the
    loudest velocity per step and pitch) and the velocity change."""
    from matplotlib.figure import Figure

    from harmonycloak.io.midi import load_midi

    rolls = []
    for path in (original, protected):
        roll = load_midi(path, grouping="musegan")
        rolls.append((roll.velocities.max(axis=0).T * 127.0, roll.lowest_pitch))  # [pitches, steps]
    (a, low), (b, _) = rolls
    steps = min(a.shape[1], b.shape[1])
    a, b = a[:, :steps], b[:, :steps]
    change = b - a
    fig = Figure(figsize=(10, 7.5), layout="constrained")  # no pyplot: safe in server threads
    axes = fig.subplots(3, 1, sharex=True)
    extent = (0, steps, low, low + a.shape[0])
    for ax, name, data, cmap, limits in (
            (axes[0], "Original notes (velocity)", a, "viridis", (0, 127)),
            (axes[1], "Protected notes (velocity)", b, "viridis", (0, 127)),
            (axes[2], "Velocity change (louder notes and added quiet notes)", change, "magma",
             (0, max(1.0, float(change.max()))))):
        shown = ax.imshow(np.where(data > 0, data, np.nan), origin="lower", aspect="auto",
                          extent=extent, cmap=cmap, vmin=limits[0], vmax=limits[1],
                          interpolation="nearest")
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_ylabel("MIDI pitch")
        fig.colorbar(shown, ax=ax, shrink=0.9)
    axes[-1].set_xlabel("time steps")
    if title:
        fig.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
