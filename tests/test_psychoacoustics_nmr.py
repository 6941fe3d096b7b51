"""Noise-to-mask ratio per frame and critical band (psychoacoustics.nmr)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harmonycloak.errors import InputError
from harmonycloak.psychoacoustics import (
    critical_band_edges_hz,
    critical_band_matrix,
    masking_threshold,
    nmr_summary,
    noise_to_mask_ratio,
)

RATES = (16000, 44100, 48000)


def shaped_noise(mask, offset_db: float, samples: int, top_hz: float, seed: int = 0):
    """Stationary Gaussian noise whose expected calibrated PSD is the mask's mean threshold
    plus ``offset_db`` up to ``top_hz`` (held at that level above, where the threshold in
    quiet soars and Hann leakage from a 150 dB target would swamp its neighbours; likewise
    the DC bin copies bin 1).

    Built from first principles, not from the code under test: for unit white noise a
    Hann frame's calibrated power is E[P] = 4 sum(w^2) / sum(w)^2 = 6 / n_fft per bin.
    """
    gen = torch.Generator().manual_seed(seed)
    f_bins = mask.frequencies_hz.double()
    target_db = mask.threshold_db.reshape(-1, f_bins.numel()).mean(0).double() + offset_db
    top = int((f_bins <= top_hz).nonzero().max())
    target_db[top:] = target_db[top]
    target_db[0] = target_db[1]  # no 63 dB DC component leaking into the lowest band
    gain2 = 10 ** ((target_db - 96.0) / 10.0) * mask.n_fft / 6.0
    f_fine = torch.fft.rfftfreq(samples, 1.0 / mask.sample_rate_hz, dtype=torch.float64)
    log_gain = np.interp(f_fine.numpy(), f_bins.numpy(), torch.log(gain2).numpy())
    spectrum = torch.fft.rfft(torch.randn(samples, generator=gen, dtype=torch.float64))
    return torch.fft.irfft(spectrum * torch.exp(0.5 * torch.from_numpy(log_gain)), n=samples)


@pytest.mark.parametrize("sr", RATES)
def test_noise_20_db_under_the_threshold_reads_minus_20(sr):
    gen = torch.Generator().manual_seed(1)
    music = 0.05 * torch.randn(1, 2 * sr, generator=gen)  # stationary, so the mask is steady
    mask = masking_threshold(music, sr)
    top_hz = min(12000.0, sr / 2 - 1000.0)
    noise = shaped_noise(mask, -20.0, music.shape[-1], top_hz).float()[None]
    nmr = noise_to_mask_ratio(noise, mask)
    edges = critical_band_edges_hz(sr)
    assert nmr.shape == (1, mask.num_frames, edges.numel() - 1)
    inner = nmr[:, 4:-4, : int((edges[1:] <= top_hz).sum())]  # bands below top_hz
    summary = nmr_summary(inner)
    assert summary["mean_db"] == pytest.approx(-20.0, abs=1.0)
    per_band = 10 * torch.log10((10 ** (inner / 10)).mean(dim=(0, 1)))
    assert per_band.sub(-20.0).abs().max() < 2.0
    assert summary["share_frames_above_mask"] == 0.0
    loud = noise_to_mask_ratio(noise * 10 ** (30 / 20), mask)  # 10 dB above the mask
    assert nmr_summary(loud[:, 4:-4])["share_frames_above_mask"] == 1.0
    assert torch.allclose(loud, nmr + 30.0, atol=1e-3)


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_gradient_is_finite_and_nonzero(sr, channels, make_music):
    music = torch.from_numpy(make_music(sr, channels, 0.3))
    noise = (1e-3 * torch.randn_like(music)).requires_grad_(True)
    nmr = noise_to_mask_ratio(noise, music, sr)
    hop = (512 if sr < 40000 else 1024) // 2
    bands = critical_band_edges_hz(sr).numel() - 1
    assert nmr.shape == (channels, 1 + music.shape[-1] // hop, bands)
    nmr.mean().backward()
    assert torch.isfinite(noise.grad).all()
    assert float(noise.grad.abs().sum()) > 0.0


def test_silent_noise_is_very_negative_not_nan(make_music):
    sr = 44100
    music = torch.from_numpy(make_music(sr, 2, 0.2))
    noise = torch.zeros_like(music, requires_grad=True)
    nmr = noise_to_mask_ratio(noise, music, sr)
    assert torch.isfinite(nmr).all()
    assert float(nmr.detach().max()) < -80.0
    nmr.sum().backward()
    assert torch.isfinite(noise.grad).all()


@pytest.mark.parametrize("sr", RATES)
def test_silent_noise_reads_the_documented_floor(sr, make_music):
    # -104 dB SPL (the power floor) minus the band's summed threshold: below -99 dB always
    for music in (torch.zeros(1, sr), torch.from_numpy(make_music(sr, 1, 1.0))):
        mask = masking_threshold(music, sr)
        nmr = noise_to_mask_ratio(torch.zeros_like(music), mask)
        bands = critical_band_matrix(sr, mask.n_fft).double()
        summed_db = 10 * torch.log10(10 ** (mask.threshold_db.double() / 10) @ bands)
        assert torch.allclose(nmr.double(), -104.0 - summed_db, atol=0.01)
        assert float(nmr.max()) < -99.0


def test_mask_as_signal_equals_mask_as_result_and_broadcasts(make_music):
    sr = 16000
    music = torch.from_numpy(make_music(sr, 2, 0.3))
    mask = masking_threshold(music, sr)
    noise = 0.01 * torch.randn(3, 2, music.shape[-1])
    direct = noise_to_mask_ratio(noise[0], music, sr)
    assert torch.allclose(direct, noise_to_mask_ratio(noise[0], mask), atol=1e-5)
    batched = noise_to_mask_ratio(noise, mask)
    assert batched.shape == (3, 2, mask.num_frames, 22)
    assert torch.allclose(batched[0], direct, atol=1e-4)


def test_summary_keys_and_values():
    nmr = torch.tensor([[[-30.0, -10.0], [5.0, -40.0], [-20.0, -25.0], [1.0, 2.0]]])
    summary = nmr_summary(nmr)
    assert set(summary) == {"mean_db", "p95_db", "max_db", "share_frames_above_mask"}
    json.dumps(summary)
    assert summary["max_db"] == 5.0
    assert summary["share_frames_above_mask"] == 0.5
    assert -20.0 <= summary["p95_db"] <= 5.0
    energy = (10 ** (nmr.double() / 10)).mean()
    assert summary["mean_db"] == pytest.approx(float(10 * torch.log10(energy)))


def test_errors():
    sr = 16000
    mask = masking_threshold(torch.zeros(1, 4000), sr)
    with pytest.raises(InputError, match="frames"):
        noise_to_mask_ratio(torch.zeros(1, 8000), mask)
    with pytest.raises(InputError, match="contradict"):
        noise_to_mask_ratio(torch.zeros(1, 4000), mask, n_fft=1024)
    with pytest.raises(InputError, match="no frames"):
        nmr_summary(torch.zeros(0, 3))
    assert math.isfinite(nmr_summary(noise_to_mask_ratio(torch.zeros(1, 4000), mask))["mean_db"])
