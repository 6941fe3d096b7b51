"""Embedding: scale the music's own time-frequency cells up or down by a keyed pattern.

For each 64 ms x ~0.22 octave cell between 500 Hz and 6 kHz (:mod:`.scheme`), the mark
multiplies the music's STFT in that cell by ``1 + a`` with ``|a|`` at most the cell's
*cap*. Nothing is added where there is no music, and what is added is the music itself,
a little louder or softer, so it sits exactly under the music that masks it.

Cap (psychoacoustic shaping): the difference signal ``a * X`` has ``a^2`` times the
cell's power. The MPEG-1 model-1 masking threshold of the clean music
(:func:`harmonycloak.psychoacoustics.masking_threshold`) gives the cell's masked power
``T``; the cap is ``sqrt(T / P) * 10^(NMR_ALLOWANCE_DB / 20)``, between ``ALPHA_MIN`` and
``ALPHA_MAX``, times ``strength``. The allowance is positive because the change is a level
change of a sound already there (coherent with it), not independent noise; the level
difference limen of music is ~0.5-1 dB and a +-2 dB change of one 64 ms cell among
its neighbours is far less audible than noise of the same power would be.

Informed embedding: the detector reads each cell as its whitened level (level minus the
mean of its time neighbours, :func:`.scheme.cell_values`). The music already has such
values; instead of adding a fixed step that the music may cancel, the embedder solves for
per-cell gains (in dB, within the cap) that give every cell the wanted sign with a margin
of ``MARGIN_DB`` wherever the cap allows: a few projected fixed-point iterations on the
model, then one correction measured on the actually re-synthesized signal. Cells whose
own music already has the right sign with margin get little or no change, which saves
quality for the cells that need it.

Peaks: where the mark would push a sample past full scale it is scaled down smoothly
over ~2 ms (:func:`_keep_peaks`), so marking a loud master does not make it clip.

Synthesis: the gain map (frames x bins) multiplies each channel's 16 kHz STFT, the
difference is overlap-added, resampled to the clip's rate and added to the original, so
the mark is band-limited to about 0.5-6 kHz (more than 99 % of its energy) and the rest of
the spectrum is untouched. All channels get the same gains, so the mark survives a mono
downmix exactly.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.psychoacoustics import masking_threshold

from . import scheme
from ._threads import one_blas_thread
from .coding import conv_encode, hex_to_bits
from .keys import WatermarkKey

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "DEFAULT_STRENGTH",
    "MARGIN_DB",
    "MIN_EMBED_RATE_HZ",
    "NMR_ALLOWANCE_DB",
    "embed",
    "target_signs",
]

DEFAULT_STRENGTH = 1.0
ALPHA_MAX = 0.45
ALPHA_MIN = 0.12
NMR_ALLOWANCE_DB = 8.0
MARGIN_DB = 3.0
MIN_EMBED_RATE_HZ = scheme.ANALYSIS_RATE_HZ
MIN_EMBED_S = 0.5
_MODEL_ITERATIONS = 8
_STEP = 0.6
_MEASURED_CORRECTIONS = 1


def target_signs(key: WatermarkKey, payload_hex: str, num_tiles: int) -> np.ndarray:
    """Wanted sign (+-1, float32) of every cell ``[num_tiles, NUM_BANDS]`` from tile 0 on."""
    layout = scheme.pattern(key)
    coded = conv_encode(hex_to_bits(payload_hex)) ^ layout.scramble
    signs_period = layout.chip * (1.0 - 2.0 * coded[layout.bit]).astype(np.float32)
    reps = -(-num_tiles // scheme.PERIOD_TILES)
    return np.tile(signs_period, (reps, 1))[:num_tiles]


def _resample(x: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    if from_hz == to_hz:
        return np.array(x, dtype=np.float32, copy=True)
    y = soxr.resample(np.ascontiguousarray(x.T), from_hz, to_hz, quality="MQ")
    return np.ascontiguousarray(y.reshape(-1, x.shape[0]).T, dtype=np.float32)


def _tile_sums(per_frame: np.ndarray, num_tiles: int) -> np.ndarray:
    """Sum ``[frames, bands]`` into ``[num_tiles, bands]`` tiles (last one may be partial)."""
    pad = num_tiles * scheme.TILE_FRAMES - per_frame.shape[0]
    padded = np.pad(per_frame, ((0, pad), (0, 0)))
    return padded.reshape(num_tiles, scheme.TILE_FRAMES, -1).sum(axis=1)


def _caps(mono16: np.ndarray, num_tiles: int, strength: float) -> np.ndarray:
    """Per-cell amplitude caps ``[num_tiles, NUM_BANDS]`` from the masking threshold."""
    masking = masking_threshold(mono16, scheme.ANALYSIS_RATE_HZ, n_fft=scheme.N_FFT,
                                hop_length=4 * scheme.HOP)
    bands = scheme.band_matrix()
    power = np.power(10.0, masking.psd_db.numpy() / 10.0, dtype=np.float32) @ bands
    masked = np.power(10.0, masking.threshold_db.numpy() / 10.0, dtype=np.float32) @ bands
    # masking frames are 4 hops apart: map each 8 ms frame to the nearest one
    nearest = np.minimum(np.rint(np.arange(num_tiles * scheme.TILE_FRAMES) / 4).astype(np.int64),
                         power.shape[0] - 1)
    power, masked = power[nearest], masked[nearest]
    ratio = _tile_sums(masked, num_tiles) / (_tile_sums(power, num_tiles) + 1e-20)
    cap = np.sqrt(ratio) * 10.0 ** (NMR_ALLOWANCE_DB / 20.0)
    return (np.clip(cap, ALPHA_MIN, ALPHA_MAX) * strength).astype(np.float32)


def _solve_gains(level_db: np.ndarray, signs: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Per-cell gains in dB (sign = wanted sign) that reach ``MARGIN_DB`` where possible."""
    cap = np.minimum(cap, 0.9)
    up = 20.0 * np.log10(1.0 + cap)
    down = -20.0 * np.log10(1.0 - cap)
    limit = np.where(signs > 0, up, down)
    gain = signs * np.minimum(limit, up) * 0.5
    for _ in range(_MODEL_ITERATIONS):
        margin = signs * scheme.whiten(level_db + gain)
        push = signs * gain + _STEP * (MARGIN_DB - margin)
        gain = signs * np.clip(push, 0.0, limit)
    return gain


def _gain_map(gain_db: np.ndarray, num_frames: int) -> np.ndarray:
    """``G - 1`` per frame and bin ``[num_frames, NUM_BINS]`` from cell gains in dB."""
    factor = (np.power(10.0, gain_db / 20.0) - 1.0).astype(np.float32)  # [tiles, bands]
    per_frame = np.repeat(factor, scheme.TILE_FRAMES, axis=0)[:num_frames]
    return per_frame @ scheme.band_matrix().T


def embed(
    clip: AudioClip,
    key: WatermarkKey,
    payload_hex: str,
    *,
    strength: float = DEFAULT_STRENGTH,
) -> AudioClip:
    """Mark ``clip`` with the 48-bit ``payload_hex`` (12 hex digits) under ``key``.

    ``clip``: any channel count, sample rate >= 16 kHz, at least 0.5 s (detection needs
    about 3 s of marked audio, 5 s for full robustness). ``strength`` scales the per-cell
    caps (1.0 = the calibrated default; 0.5-2). Returns a new clip of the same shape and
    rate; the input is not modified. Works on any clip in memory, e.g. right after the
    cloak. Deterministic: the same clip, key and payload give the same samples.

    Raises :class:`InputError` for a bad payload, a rate below 16 kHz, a clip that is too
    short, or a strength outside (0, 4].
    """
    hex_to_bits(payload_hex)  # validates before any work
    if not (isinstance(strength, (int, float)) and 0.0 < float(strength) <= 4.0):
        raise InputError(f"strength={strength!r} must be a number in (0, 4]; 1.0 is the default")
    sr = clip.sample_rate_hz
    if sr < MIN_EMBED_RATE_HZ:
        raise InputError(
            f"{clip.source or 'audio'}: {sr} Hz is below the {MIN_EMBED_RATE_HZ} Hz the watermark "
            "needs (it lives between 0.5 and 6 kHz); use the original, higher-rate file"
        )
    if clip.duration_s < MIN_EMBED_S or clip.channels < 1:
        raise InputError(
            f"{clip.source or 'audio'}: {clip.duration_s:.2f} s is too short to watermark; "
            f"give at least {MIN_EMBED_S} s (detection needs about 3 s)"
        )
    with one_blas_thread():
        mark = _mark(clip.samples, sr, key, payload_hex, float(strength))
    return clip.with_samples(clip.samples + _keep_peaks(clip.samples, mark, sr))


def _keep_peaks(x: np.ndarray, mark: np.ndarray, sr: int) -> np.ndarray:
    """Scale the mark down smoothly (over ~2 ms) wherever it would push a sample past
    full scale (or past the original's own level where that is already over 1.0).

    Loud masters peak at 0 dBFS; without this the file writer would hard-clip the
    marked music there. Only the mark is touched, only around those peaks.
    """
    limit = np.maximum(1.0, np.abs(x))
    over = np.abs(x + mark) > limit
    if not over.any():
        return mark
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    room = np.clip((limit - np.abs(x)) / np.maximum(np.abs(mark), 1e-12), 0.0, 1.0)
    needed = np.where(over, room, 1.0)
    radius = max(1, int(round(0.002 * sr)))
    # min over +-radius, then a mean over a window no wider: stays <= the need at peaks
    gain = uniform_filter1d(minimum_filter1d(needed, 2 * radius + 1, axis=-1),
                            radius + 1, axis=-1)
    return (mark * np.minimum(gain, needed)).astype(np.float32)


def _mark(x: np.ndarray, sr: int, key: WatermarkKey, payload_hex: str,
          strength: float) -> np.ndarray:
    """The watermark signal ``[channels, samples]`` to add to ``x``."""
    x16 = _resample(x, sr, scheme.ANALYSIS_RATE_HZ)
    spec = scheme.stft(x16)  # [ch, frames, bins]
    num_frames = spec.shape[-2]
    num_tiles = math.ceil(num_frames / scheme.TILE_FRAMES)
    mono_spec = spec.mean(axis=0)
    bands = scheme.band_matrix()

    def levels(mono_spectrum: np.ndarray) -> np.ndarray:
        power = (mono_spectrum.real ** 2 + mono_spectrum.imag ** 2) @ bands
        return 10.0 * np.log10(_tile_sums(power, num_tiles) + 1e-12)

    level_db = levels(mono_spec)
    signs = target_signs(key, payload_hex, num_tiles)
    cap = _caps(x16.mean(axis=0), num_tiles, strength)
    gain_db = _solve_gains(level_db, signs, cap)

    # Corrections measured on the re-synthesized downmix: window overlap blurs the cells,
    # so the model alone overestimates the contrast a gain map produces.
    mono16 = x16.mean(axis=0)
    cap = np.minimum(cap, 0.9)
    limit = np.where(signs > 0, 20.0 * np.log10(1.0 + cap), -20.0 * np.log10(1.0 - cap))
    for _ in range(_MEASURED_CORRECTIONS):
        trial = mono16 + scheme.istft(mono_spec * _gain_map(gain_db, num_frames),
                                      mono16.shape[-1])
        margin = signs * scheme.whiten(levels(scheme.stft(trial)))
        gain_db = signs * np.clip(signs * gain_db + _STEP * (MARGIN_DB - margin), 0.0, limit)

    mark16 = scheme.istft(spec * _gain_map(gain_db, num_frames), x16.shape[-1])
    mark = _resample(mark16, scheme.ANALYSIS_RATE_HZ, sr)
    if mark.shape[-1] >= x.shape[-1]:
        return mark[:, : x.shape[-1]]
    return np.pad(mark, ((0, 0), (0, x.shape[-1] - mark.shape[-1])))
