"""Dominant tone per 10 ms window and the eq. 11 bounds (psychoacoustics.dominant)."""

from __future__ import annotations

import math

import pytest
import torch

from harmonycloak.errors import InputError
from harmonycloak.psychoacoustics import (
    ANALYSIS_WINDOW_MS,
    DominantTones,
    absolute_threshold_db,
    amplitude_to_spl,
    analysis_samples,
    dominant_tones,
)
from harmonycloak.psychoacoustics import dominant as dominant_module

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
    bin_hz = sr / tones.fft_size
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


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("freq_hz", [41.2, 55.0, 65.4, 82.4, 1318.5])  # E1, A1, C2, E2, E6
@pytest.mark.parametrize("phase", [0.0, 1.0])
def test_bass_notes_within_a_quarter_semitone(sr, freq_hz, phase):
    # A ~23 ms analysis window (1024 samples at 44.1 kHz) read E1 as ~52 Hz, 4 dB low.
    t = torch.arange(sr, dtype=torch.float64) / sr
    x = (0.5 * torch.sin(2 * math.pi * freq_hz * t + phase)).to(torch.float32)
    tones = dominant_tones(x, sr)
    inner = slice(5, -5)  # windows whose analysis frame lies inside the signal
    semitones = 12.0 * torch.log2(tones.frequency_hz[inner] / freq_hz)
    assert semitones.abs().max() < 0.25
    assert (tones.level_db[inner] - float(amplitude_to_spl(0.5))).abs().max() < 1.5
    assert tones.active[inner].all()


@pytest.mark.parametrize(
    ("sr", "expected"),
    [(8000, 372), (16000, 744), (22050, 1024), (44100, 2048), (48000, 2230),
     (96000, 4460), (192000, 8918)],
)  # fmt: skip
def test_analysis_window_is_about_46_ms_at_every_rate(sr, expected):
    assert analysis_samples(sr) == expected
    assert expected / sr * 1000.0 == pytest.approx(ANALYSIS_WINDOW_MS, abs=0.1)
    tones = dominant_tones(torch.zeros(sr // 10), sr)
    assert tones.analysis_samples == expected
    assert tones.analysis_s == pytest.approx(ANALYSIS_WINDOW_MS / 1000.0, abs=1e-4)
    assert tones.fft_size >= 2 * expected
    # a window longer than 46 ms is analysed whole
    assert analysis_samples(sr, 100.0) == sr // 10 + (sr // 10) % 2


def test_explicit_n_fft_overrides_the_analysis_length():
    sr = 44100
    tones = dominant_tones(sine(440.0, sr, 0.5, 0.2), sr, n_fft=4096, zero_pad=1)
    assert (tones.analysis_samples, tones.fft_size) == (4096, 4096)
    assert (tones.frequency_hz[5:-5] - 440.0).abs().max() < 1.0
    with pytest.raises(InputError, match="n_fft=256 must be >= 16 and cover a window"):
        dominant_tones(torch.zeros(1000), sr, n_fft=256)


def test_windows_are_10_ms_apart_but_see_46_ms_of_music():
    # A note change is seen by the windows within about half the analysis window of it.
    sr = 44100
    low, high = sine(110.0, sr, 0.5, 0.25), sine(220.0, sr, 0.5, 0.25)
    tones = dominant_tones(torch.cat([low, high]), sr)
    assert tones.num_windows == 50
    centre_s = (torch.arange(50) + 0.5) * tones.window_s
    far = (centre_s - 0.25).abs() > tones.analysis_s / 2
    freq = tones.frequency_hz
    before = far & (centre_s < 0.25)
    after = far & (centre_s > 0.25)
    assert ((freq[before] - 110.0).abs() < 1.0).all()
    assert ((freq[after] - 220.0).abs() < 1.0).all()
    assert int(before.sum()) == int(after.sum()) == 23


def test_chunked_analysis_equals_one_pass(monkeypatch):
    sr = 16000
    generator = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, 3, sr // 2, generator=generator) + sine(300.0, sr, 0.3, 0.5)
    whole = dominant_tones(x, sr)
    monkeypatch.setattr(dominant_module, "_CHUNK_BINS", 1000)  # one window per chunk
    chunked = dominant_tones(x, sr)
    # the same frames; only the FFT batch size differs (float rounding)
    assert torch.allclose(whole.frequency_hz, chunked.frequency_hz, rtol=0, atol=1e-3)
    assert torch.allclose(whole.level_db, chunked.level_db, rtol=0, atol=1e-3)
