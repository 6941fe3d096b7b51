"""BS.1770-4 loudness and peak levels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harmonycloak.psychoacoustics.loudness import (
    channel_weights,
    integrated_loudness_lufs,
    k_weighting_coefficients,
    sample_peak_dbfs,
    true_peak_dbtp,
)


def _sine(freq_hz: float, amplitude: float, sample_rate_hz: int, seconds: float, channels: int):
    t = np.arange(int(seconds * sample_rate_hz)) / sample_rate_hz
    return np.stack([amplitude * np.sin(2 * np.pi * freq_hz * t)] * channels).astype(np.float32)


def test_k_weighting_matches_the_standard_table_at_48k():
    (shelf_b, shelf_a), (hp_b, hp_a) = k_weighting_coefficients(48_000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(hp_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(hp_a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("sample_rate_hz", [44_100, 48_000, 96_000])
def test_997_hz_sine_reads_its_level(sample_rate_hz):
    # BS.1770: a 0 dBFS 1 kHz sine in one front channel reads -3.01 LKFS; at -20 dBFS in
    # both channels of a stereo pair that is -20 + 3.01 - 3.01 = -20 LUFS.
    stereo = _sine(997, 0.1, sample_rate_hz, 5.0, 2)
    assert integrated_loudness_lufs(stereo, sample_rate_hz) == pytest.approx(-20.0, abs=0.05)
    mono_full_scale = _sine(997, 1.0, sample_rate_hz, 5.0, 1)
    assert integrated_loudness_lufs(mono_full_scale, sample_rate_hz) == pytest.approx(-3.01, abs=0.05)


def test_agrees_with_pyloudnorm_on_music_like_audio():
    pyloudnorm = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(0)
    sr = 44_100
    t = np.arange(sr * 6) / sr
    tones = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t + f)) for f in (110, 220, 330, 880))
    x = np.stack([0.1 * tones + 0.02 * rng.standard_normal(t.size), 0.08 * tones]).astype(np.float32)
    ours = integrated_loudness_lufs(x, sr)
    theirs = pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64))
    # pyloudnorm approximates the K-weighting filters; 0.1 LU is well inside meter tolerance.
    assert ours == pytest.approx(theirs, abs=0.1)


def test_gating_ignores_silence():
    sr = 48_000
    loud = _sine(997, 0.1, sr, 4.0, 2)
    with_silence = np.concatenate([loud, np.zeros((2, sr * 8), np.float32)], axis=1)
    # Without gating 8 s of silence would pull 4 s of -20 LUFS down to about -24.8; the
    # blocks straddling the end still pass the relative gate and cost ~0.2 LU.
    assert integrated_loudness_lufs(with_silence, sr) == pytest.approx(-20.0, abs=0.25)


def test_undefined_cases_return_none():
    sr = 44_100
    assert integrated_loudness_lufs(np.zeros((2, sr), np.float32), sr) is None
    assert integrated_loudness_lufs(_sine(997, 0.5, sr, 0.3, 2), sr) is None  # < 400 ms
    assert sample_peak_dbfs(np.zeros((1, 10), np.float32)) is None
    assert true_peak_dbtp(np.zeros((1, 10), np.float32), sr) is None


def test_sixteen_channels_are_measured():
    sr = 48_000
    x = _sine(997, 0.1, sr, 2.0, 16)
    # no surround layout is known for 16 channels: all weigh 1.0, like front channels
    expected = -0.691 + 10 * math.log10(0.005 * 16) + 0.691
    assert integrated_loudness_lufs(x, sr) == pytest.approx(expected, abs=0.05)


def test_channel_weights_follow_the_wav_surround_orders():
    assert channel_weights(5) == (1.0, 1.0, 1.0, 1.41, 1.41)  # L R C Ls Rs
    assert channel_weights(6) == (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)  # L R C LFE Ls Rs
    for channels in (1, 2, 3, 4, 7, 8):
        assert channel_weights(channels) == (1.0,) * channels


def _one_channel(channels: int, index: int, sr: int) -> np.ndarray:
    x = np.zeros((channels, 2 * sr), np.float32)
    x[index] = _sine(997, 0.1, sr, 2.0, 1)[0]
    return x


def test_lfe_of_5_1_is_not_measured():
    sr = 48_000
    assert integrated_loudness_lufs(_one_channel(6, 3, sr), sr) is None  # LFE only
    # but channel 3 of a 5.0 file is the left surround
    assert integrated_loudness_lufs(_one_channel(5, 3, sr), sr) is not None


@pytest.mark.parametrize(("channels", "surrounds"), [(5, (3, 4)), (6, (4, 5))])
def test_surround_channels_weigh_1_41(channels, surrounds):
    sr = 48_000
    front = integrated_loudness_lufs(_one_channel(channels, 0, sr), sr)
    centre = integrated_loudness_lufs(_one_channel(channels, 2, sr), sr)
    assert front == pytest.approx(-20.0 - 3.01, abs=0.05)
    assert centre == pytest.approx(front, abs=1e-6)
    for index in surrounds:
        surround = integrated_loudness_lufs(_one_channel(channels, index, sr), sr)
        assert surround - front == pytest.approx(10 * math.log10(1.41), abs=1e-6)  # +1.49 dB


def test_true_peak_finds_inter_sample_peaks():
    sr = 48_000
    # A sine at fs/4 sampled at 45 degrees never hits its crest: sample peak is -3 dB.
    n = np.arange(4800)
    x = np.sin(2 * np.pi * n / 4 + np.pi / 4).astype(np.float32)[None, :]
    assert sample_peak_dbfs(x) == pytest.approx(-3.01, abs=0.01)
    # The oversampling filter rings a little at the abrupt start and end; BS.1770-4 meters
    # are allowed +0.2 dB there.
    assert true_peak_dbtp(x, sr) == pytest.approx(0.0, abs=0.2)


def test_true_peak_blocks_match_one_pass_even_at_block_edges():
    from scipy.signal import resample_poly

    rng = np.random.default_rng(1)
    x = (0.2 * rng.standard_normal((2, 200_000))).astype(np.float32)
    edge = 1 << 16  # the block length
    x[1, edge - 1], x[1, edge] = 0.95, -0.95  # an inter-sample overshoot across the seam
    one_pass = 20 * np.log10(np.abs(resample_poly(x.astype(np.float64), 4, 1, axis=1)).max())
    assert true_peak_dbtp(x, 44_100) == pytest.approx(one_pass, abs=1e-4)
