"""The psychoacoustic model: calibration, thresholds, masking, dominant tones, NMR.

Torch throughout, batched over any leading dims (``[channels, samples]``,
``[batch, channels, samples]``) and vectorized over frames. Conventions:

* levels are dB SPL with a full-scale sine (amplitude 1.0) at 96 dB in its peak bin
  (:mod:`.calibration`);
* spectra are centred Hann frames, ``n_fft`` = smallest power of two with bins <= 50 Hz
  (1024 at 44.1/48 kHz), hop ``n_fft // 2``; ``frames = 1 + samples // hop``;
* dominant tones (:mod:`.dominant`) are one per 10 ms window, each measured on a ~46 ms
  Hann window centred on it (bass notes need about two periods);
* the masking threshold (:mod:`.masking`) is MPEG-1 psychoacoustic model 1 plus temporal
  masking, computed from the clean music without gradients; :func:`psd_db` and
  :func:`noise_to_mask_ratio` are differentiable in their signal / noise.
"""

from .calibration import (
    FULL_SCALE_SPL_DB,
    HANN_ENBW_BINS,
    amplitude_to_spl,
    default_n_fft,
    frame_count,
    frequencies_hz,
    power_spectrum,
    power_to_spl,
    psd_db,
    spl_to_amplitude,
    spl_to_power,
)
from .dominant import (
    ANALYSIS_WINDOW_MS,
    DEFAULT_WINDOW_MS,
    DominantTones,
    analysis_samples,
    dominant_tones,
)
from .masking import MaskingResult, masking_threshold, temporal_masking
from .nmr import nmr_summary, noise_to_mask_ratio
from .thresholds import (
    absolute_threshold_db,
    bark,
    critical_band_edges_hz,
    critical_band_matrix,
    critical_bandwidth_hz,
)
from .velocity import REFERENCE_LEVEL_DB, level_db_to_velocity, velocity_to_level_db

__all__ = [
    "ANALYSIS_WINDOW_MS",
    "DEFAULT_WINDOW_MS",
    "FULL_SCALE_SPL_DB",
    "HANN_ENBW_BINS",
    "REFERENCE_LEVEL_DB",
    "DominantTones",
    "MaskingResult",
    "absolute_threshold_db",
    "amplitude_to_spl",
    "analysis_samples",
    "bark",
    "critical_band_edges_hz",
    "critical_band_matrix",
    "critical_bandwidth_hz",
    "default_n_fft",
    "dominant_tones",
    "frame_count",
    "frequencies_hz",
    "level_db_to_velocity",
    "masking_threshold",
    "nmr_summary",
    "noise_to_mask_ratio",
    "power_spectrum",
    "power_to_spl",
    "psd_db",
    "spl_to_amplitude",
    "spl_to_power",
    "temporal_masking",
    "velocity_to_level_db",
]
