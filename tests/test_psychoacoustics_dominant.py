"""Dominant tone per 10 ms window and the eq. 11 bounds (psychoacoustics.dominant)."""

from __future__ import annotations

import math

import pytest
import torch

from harmonycloak.errors import InputError
from harmonycloak.psychoacoustics import (
    DominantTones,
    absolute_threshold_db,
    amplitude_to_spl,
    dominant_tones,
)

RATES = (16000, 44100, 48000)


def sine(freq_hz, sample_rate_hz, amplitude, seconds):
    t = torch.arange(int(seconds * sample_rate_hz), dtype=torch.float64) / sample_rate_hz
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t + 1.0)).to(torch.float32)


@pytest.mark.parametrize("sr", RATES)
def test_stereo_tones_found_per_channel_with_calibrated_level(sr):
    x = torch.stack([sine(440.0, sr, 0.3, 0.5), sine(1000.0, sr, 0.05, 0.5)])
    before = x.clone()
    tones = dominant_tones(x, sr)
    assert torch.equal(x, before)
    assert isinstance(tones, DominantTones)
    assert tones.window_samples == round(0.01 * sr)
    assert tones.frequency_hz.shape == (2, math.ceil(x.shape[-1] / tones.window_samples))
    inner = slice(5, -5)  # windows whose analysis frame lies inside the signal
    freq, level = tones.frequency_hz[:, inner], tones.level_db[:, inner]
    assert (freq[0] - 440.0).abs().max() < 2.0
    assert (freq[1] - 1000.0).abs().max() < 2.0
    assert (level[0] - float(amplitude_to_spl(0.3))).abs().max() < 0.5
    assert (level[1] - float(amplitude_to_spl(0.05))).abs().max() < 0.5
    assert tones.active[:, inner].all()
    assert torch.allclose(tones.lower_db, absolute_threshold_db(tones.frequency_hz))
    assert torch.equal(tones.upper_db, tones.level_db)


@pytest.mark.parametrize("sr", RATES)
def test_without_interpolation_within_one_bin(sr):
    x = sine(1234.5, sr, 0.5, 0.3)
    tones = dominant_tones(x, sr, interpolate=False)
    bin_hz = sr / (2 * 1024 if sr > 40000 else 2 * 512)
    assert (tones.frequency_hz[5:-5] - 1234.5).abs().max() <= bin_hz / 2 + 1e-3
    # Bin level: at most the (zero-padded) scalloping loss below the true level.
    assert (tones.level_db[5:-5] - float(amplitude_to_spl(0.5))).abs().max() < 0.5


@pytest.mark.parametrize("channels", [1, 2])
def test_silent_windows_are_inactive(channels):
    sr = 44100
    x = torch.zeros(channels, sr // 2)
    x[:, : sr // 4] = sine(660.0, sr, 0.2, 0.25)
    tones = dominant_tones(x, sr)
    n = tones.num_windows
    assert tones.active.shape == (channels, n)
    assert tones.active[:, 2:20].all()
    assert not tones.active[:, n // 2 + 5 :].any()
    assert torch.isfinite(tones.level_db).all()


def test_quiet_tone_below_hearing_threshold_is_inactive():
    sr = 44100
    quiet = sine(100.0, sr, 10 ** ((15 - 96) / 20), 0.2)  # 15 dB SPL at 100 Hz, ATH ~23 dB
    assert not dominant_tones(quiet, sr).active[3:-3].any()


def test_ignores_dc_and_batches_and_short_input():
    sr = 16000
    x = 0.5 + sine(2000.0, sr, 0.01, 0.1)  # large DC offset, small tone
    assert (dominant_tones(x, sr).frequency_hz[3:-3] - 2000.0).abs().max() < 5.0
    batch = torch.stack([torch.stack([x, x]), torch.stack([x, x])])
    assert dominant_tones(batch, sr).frequency_hz.shape == (2, 2, 10)
    one = dominant_tones(torch.full((1,), 0.3), sr)
    assert one.frequency_hz.shape == (1,)
    assert one.window_s == pytest.approx(0.01)


def test_bad_parameters_raise():
    with pytest.raises(InputError, match="window_ms"):
        dominant_tones(torch.zeros(100), 16000, window_ms=0.0)
    with pytest.raises(InputError, match="min_hz"):
        dominant_tones(torch.zeros(100), 16000, min_hz=9000.0)
