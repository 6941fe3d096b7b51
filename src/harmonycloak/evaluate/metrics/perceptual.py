"""Perceptual quality of a perturbed clip against its original: ViSQOL, NMR and SNR.

The HarmonyCloak paper rates imperceptibility with listeners (table 5); we measure it
three ways, each a plain function of the reference and the degraded clip:

* :func:`visqol`: ViSQOL v3 in audio mode (Chinen, Lim, Skoglund, Gureev, O'Gorman and
  Hines 2020, "ViSQOL v3: An open source production ready objective speech and audio
  metric"), a MOS-LQO from 1 to about 4.75, through the ``visqol-python`` package (which
  ships its model; the ``eval`` extra). Known scale on 10 s music excerpts (DESIGN.md):
  identical 4.73; MP3 128 kbps 4.2-4.5; white noise at 40 dB SNR 3.9-4.0; resampling to
  16 kHz 1.8. It is unreliable on pure sine tones; use music.
* :func:`nmr_p95_db`: the noise-to-mask ratio of the difference against the original's
  masking threshold (:mod:`harmonycloak.psychoacoustics.nmr`), 95th percentile over
  frames of each frame's worst critical band: below 0 dB the change hides under the
  masking threshold in 95 % of frames.
* :func:`snr_db`: plain signal-to-noise ratio of the difference.

All take numpy arrays ``[channels, samples]`` (or ``[samples]``) of equal shape at one
sample rate; the clean/reference clip comes first.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from harmonycloak.errors import InputError

__all__ = [
    "VISQOL_INSTALL_HINT",
    "VISQOL_SAMPLE_RATE_HZ",
    "nmr_p95_db",
    "nmr_stats",
    "snr_db",
    "visqol",
    "visqol_available",
    "visqol_median",
]

VISQOL_SAMPLE_RATE_HZ = 48000
"""ViSQOL's audio mode works at 48 kHz only; everything is resampled to it (soxr)."""
VISQOL_INSTALL_HINT = ("ViSQOL needs the visqol-python package: pip install "
                       "'harmonycloak[eval]' (or: pip install visqol-python==3.8.0)")


def _pair(reference: Any, degraded: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``[channels, samples]`` of one shape, finite, or InputError."""
    ref = np.asarray(reference, dtype=np.float64)
    deg = np.asarray(degraded, dtype=np.float64)
    if ref.ndim == 1:
        ref = ref[None]
    if deg.ndim == 1:
        deg = deg[None]
    if ref.ndim != 2 or ref.shape != deg.shape:
        raise InputError(f"{what}: reference {np.shape(reference)} and degraded "
                         f"{np.shape(degraded)} must be arrays of one shape [channels, samples] "
                         "(cut or align them first)")
    if ref.shape[1] == 0:
        raise InputError(f"{what}: the clips hold no samples")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(deg))):
        raise InputError(f"{what}: NaN or infinite samples; load audio with "
                         "harmonycloak.io.audio.load_audio, which checks this")
    return ref, deg


def _check_rate(sample_rate_hz: Any, what: str) -> int:
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer)) \
            or not 8000 <= int(sample_rate_hz) <= 192000:
        raise InputError(f"{what}: sample rate {sample_rate_hz!r}; give a whole number of Hz "
                         "from 8000 to 192000")
    return int(sample_rate_hz)


# ---------------------------------------------------------------------------------------
# SNR
# ---------------------------------------------------------------------------------------


def snr_db(reference: np.ndarray, degraded: np.ndarray) -> float:
    """``10 log10(sum(ref^2) / sum((deg - ref)^2))`` over all channels, in dB.

    ``math.inf`` when the clips are identical; ``nan`` when the reference is silent (no
    signal to compare the change with). Shapes must match (see the module docstring).
    """
    ref, deg = _pair(reference, degraded, "snr_db")
    signal = float(np.sum(ref ** 2))
    error = float(np.sum((deg - ref) ** 2))
    if signal <= 0.0:
        return float("nan")
    if error <= 0.0:
        return math.inf
    return 10.0 * math.log10(signal / error)


# ---------------------------------------------------------------------------------------
# NMR
# ---------------------------------------------------------------------------------------


def nmr_stats(reference: np.ndarray, degraded: np.ndarray, sample_rate_hz: int) -> dict[str, float]:
    """The NMR summary of ``degraded - reference`` against ``reference``'s masking threshold.

    Keys as :func:`harmonycloak.psychoacoustics.nmr_summary`: ``mean_db`` (PEAQ's total
    NMR), ``p95_db``, ``max_db``, ``share_frames_above_mask``. The threshold is MPEG-1
    model 1 plus temporal masking, per channel, of the reference; the noise is framed the
    same way (:func:`harmonycloak.psychoacoustics.noise_to_mask_ratio`). An identical clip
    reads far below -99 dB (the noise floor, see that module).
    """
    import torch

    from harmonycloak.psychoacoustics import nmr_summary, noise_to_mask_ratio

    rate = _check_rate(sample_rate_hz, "nmr")
    ref, deg = _pair(reference, degraded, "nmr")
    clean = torch.from_numpy(ref.astype(np.float32))
    noise = torch.from_numpy((deg - ref).astype(np.float32))
    return nmr_summary(noise_to_mask_ratio(noise, clean, rate))


def nmr_p95_db(reference: np.ndarray, degraded: np.ndarray, sample_rate_hz: int) -> float:
    """95th percentile over frames of the worst band's NMR of the change, in dB.

    See :func:`nmr_stats`; below 0 dB: the change sits under the masking threshold in at
    least 95 % of the frames (what protection aims for).
    """
    return nmr_stats(reference, degraded, sample_rate_hz)["p95_db"]


# ---------------------------------------------------------------------------------------
# ViSQOL
# ---------------------------------------------------------------------------------------


def visqol_available() -> bool:
    """Whether ``visqol-python`` can be imported."""
    return _visqol_api() is not None


@functools.lru_cache(maxsize=1)
def _visqol_api() -> Any | None:
    """One ViSQOL audio-mode scorer per process (creating it loads the model), or None."""
    try:
        from visqol import VisqolApi
    except ImportError:
        return None
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the package logs every call at INFO/WARNING
    try:
        api = VisqolApi()
        api.create(mode="audio")
    finally:
        logging.disable(previous)
    return api


def _visqol_input(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Mono downmix at 48 kHz, float64 ``[samples]``."""
    from harmonycloak.io import codecs

    mono = x.mean(axis=0, keepdims=True).astype(np.float32)
    return codecs.resample(mono, sample_rate_hz, VISQOL_SAMPLE_RATE_HZ)[0].astype(np.float64)


def visqol(reference: np.ndarray, degraded: np.ndarray, sample_rate_hz: int) -> float | None:
    """ViSQOL v3 audio-mode MOS-LQO of ``degraded`` against ``reference`` (1 to ~4.75).

    Both clips are mixed to mono and resampled to 48 kHz with soxr (ViSQOL's audio mode
    requires 48 kHz; it compares the mono signals), as the benchmarks have always done.
    ViSQOL aligns and level-matches the pair itself, so a pure gain change scores as
    identical. Returns None, with a one-time ``RuntimeWarning`` giving the install hint
    (:data:`VISQOL_INSTALL_HINT`), when ``visqol-python`` is not installed. Raises
    :class:`InputError` for mismatched shapes or clips ViSQOL cannot score (it needs
    about half a second at least). Deterministic; about 0.1 s of CPU per second of audio.
    """
    rate = _check_rate(sample_rate_hz, "visqol")
    ref, deg = _pair(reference, degraded, "visqol")
    api = _visqol_api()
    if api is None:
        _warn_missing()
        return None
    a, b = _visqol_input(ref, rate), _visqol_input(deg, rate)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = api.measure_from_arrays(a, b, VISQOL_SAMPLE_RATE_HZ)
    except Exception as error:  # the package raises bare errors on clips it cannot frame
        raise InputError(f"visqol: cannot score a {ref.shape[1] / rate:.2f} s clip "
                         f"({type(error).__name__}: {error}); give at least 1 s of music") from None
    finally:
        logging.disable(previous)
    return float(result.moslqo)


@functools.lru_cache(maxsize=1)
def _warn_missing() -> None:
    warnings.warn(f"ViSQOL scores are skipped (None): {VISQOL_INSTALL_HINT}", RuntimeWarning,
                  stacklevel=3)


def visqol_median(references: Sequence[np.ndarray], degradeds: Sequence[np.ndarray],
                  sample_rate_hz: int, *, max_clips: int | None = None) -> float | None:
    """Median :func:`visqol` over pairs of clips (the first ``max_clips`` pairs if given).

    ``references`` and ``degradeds``: sequences (or batches ``[n, channels, samples]``,
    numpy or torch) of equal length. None when ViSQOL is not installed or no pair is
    scored (``max_clips`` 0 or empty input).
    """
    if len(references) != len(degradeds):
        raise InputError(f"visqol_median: {len(references)} references but {len(degradeds)} "
                         "degraded clips; give one degraded clip per reference")
    count = len(references) if max_clips is None else min(max_clips, len(references))
    if count <= 0 or not visqol_available():
        if count > 0:
            _warn_missing()
        return None
    scores = [visqol(_as_numpy(references[i]), _as_numpy(degradeds[i]), sample_rate_hz)
              for i in range(count)]
    return float(np.median([s for s in scores if s is not None]))


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
