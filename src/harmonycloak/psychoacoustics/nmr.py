"""Noise-to-mask ratio (NMR) of a perturbation against a masking threshold.

Definition (the band-energy NMR of perceptual codecs, cf. Brandenburg's NMR measure and
PEAQ's ``NMR_tot``): for each frame ``t`` and critical band ``b``,

    NMR[t, b] = 10 log10( sum_{k in b} N(t, k) / sum_{k in b} T(t, k) )      (dB)

where ``N`` is the noise's power per bin (framed and calibrated exactly like the signal,
:mod:`.calibration`) and ``T`` the masking threshold converted to power, **summed** over
the band's bins (not the band minimum): 0 dB means the noise carries as much energy in
the band as the threshold allows, so noise shaped like the threshold and 20 dB below it
reads -20 dB in every band. Bands are :func:`critical_band_edges_hz`, the DC bin
excluded.

Silent noise: the noise's band power is floored at 1e-20 (-104 dB SPL), so a silent
noise frame reads exactly ``-104 - T_b`` dB, where ``T_b = 10 log10 sum_{k in b}
10^(T(t, k) / 10)`` is the band's summed threshold in dB SPL; never NaN or -inf. Since
the threshold in quiet bottoms out near -5 dB SPL this is always below -99 dB; measured:
-110 dB and lower over silent music, -130 to -280 dB under music (the threshold in quiet
soars near 20 kHz). Differentiable with respect to the noise; the threshold carries no
gradient.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError

from .calibration import (
    FULL_SCALE_SPL_DB,
    POWER_FLOOR,
    frame_count,
    frames_power,
    hann_window,
    padded_frames,
)
from .masking import MaskingResult, masking_threshold
from .thresholds import critical_band_matrix

__all__ = ["nmr_summary", "noise_to_mask_ratio"]


@functools.lru_cache(maxsize=16)
def _bands(sample_rate_hz: int, n_fft: int) -> Tensor:
    return critical_band_matrix(sample_rate_hz, n_fft)


def noise_to_mask_ratio(
    noise: Tensor,
    mask: MaskingResult | Tensor | np.ndarray | AudioClip,
    sample_rate_hz: int | None = None,
    *,
    temporal: bool = True,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> Tensor:
    """NMR per frame and critical band, ``[..., frames, bands]`` in dB (see module docstring).

    ``noise``: the perturbation ``[..., samples]`` (float tensor, may require grad).
    ``mask``: a :class:`MaskingResult` (its framing is used; ``temporal`` is ignored and
    ``n_fft``/``hop_length`` must be left unset or match) or the clean signal ``[..., samples]``,
    whose threshold is computed here with :func:`masking_threshold` (needs
    ``sample_rate_hz`` unless it is an AudioClip). Leading dims of noise and mask
    broadcast. Raises :class:`InputError` if the noise gives another number of frames
    than the mask (pass noise as long as the signal).
    """
    if not isinstance(mask, MaskingResult):
        mask = masking_threshold(
            mask, sample_rate_hz, temporal=temporal, n_fft=n_fft, hop_length=hop_length
        )
    elif (n_fft not in (None, mask.n_fft)) or (hop_length not in (None, mask.hop_length)):
        raise InputError(
            f"n_fft={n_fft}, hop_length={hop_length} contradict the MaskingResult's "
            f"{mask.n_fft}/{mask.hop_length}; leave them unset"
        )
    if not isinstance(noise, Tensor) or not noise.is_floating_point():
        raise InputError(f"noise must be a floating-point torch tensor, got {type(noise).__name__}")
    if noise.ndim == 0 or noise.shape[-1] < 1:
        raise InputError(f"noise of shape {tuple(noise.shape)} has no samples")
    frames = frame_count(noise.shape[-1], mask.hop_length)
    if frames != mask.num_frames:
        raise InputError(
            f"noise of {noise.shape[-1]} samples gives {frames} frames but the mask has "
            f"{mask.num_frames}; pass noise exactly as long as the signal"
        )
    dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    noise = noise.to(dtype)
    bands = _bands(mask.sample_rate_hz, mask.n_fft).to(device=noise.device, dtype=dtype)
    window = hann_window(mask.n_fft, noise.device, dtype)
    power = frames_power(padded_frames(noise, mask.n_fft, mask.hop_length), window)
    noise_db = 10.0 * torch.log10(power @ bands + POWER_FLOOR)
    with torch.no_grad():
        threshold = mask.threshold_db.to(device=noise.device, dtype=dtype)
        allowed = torch.pow(10.0, (threshold - FULL_SCALE_SPL_DB) / 10.0) @ bands
        allowed_db = 10.0 * torch.log10(allowed)
    return noise_db - allowed_db


def nmr_summary(nmr: Tensor) -> dict[str, float]:
    """Summary of an NMR tensor ``[..., frames, bands]`` (all leading dims pooled as frames).

    * ``mean_db``: energy mean, ``10 log10(mean over frames and bands of 10^(NMR/10))``
      (PEAQ's total NMR; a few loud bands dominate, silent frames do not drag it to -100);
    * ``p95_db``: 95th percentile over frames of the frame's worst band;
    * ``max_db``: worst band of the worst frame;
    * ``share_frames_above_mask``: fraction of frames with any band above 0 dB.

    Plain floats (JSON-ready). Raises :class:`InputError` for an empty tensor.
    """
    if nmr.ndim < 2 or nmr.numel() == 0:
        raise InputError(f"NMR of shape {tuple(nmr.shape)} has no frames or bands to summarize")
    with torch.no_grad():
        flat = nmr.detach().to("cpu", torch.float64).reshape(-1, nmr.shape[-1])
        worst = flat.max(dim=-1).values
        energy = torch.pow(10.0, flat / 10.0).mean()
        return {
            "mean_db": float(10.0 * torch.log10(energy)),
            "p95_db": float(np.percentile(worst.numpy(), 95.0)),
            "max_db": float(worst.max()),
            "share_frames_above_mask": float((worst > 0.0).double().mean()),
        }
