"""Removal attacks (evaluate/attacks.py): shape, alignment, determinism, and that each one
changes the signal the way it claims to (on synthetic music, no files)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.evaluate.attacks import (
    ATTACKS,
    Attack,
    AugmentationPolicy,
    GaussianNoiseAttack,
    SpectralGateAttack,
    survival,
)
from harmonycloak.perturb.channels import Lowpass, Resample, StraightThroughCodec

from conftest import best_lag, music_like

HAS_NOISEREDUCE = importlib.util.find_spec("noisereduce") is not None
GATES = ("spectral_gate", "spectral_gate_stationary")

EXPECTED = ["mp3_64k", "mp3_128k", "aac_64k", "opus_32k", "resample_16k", "lowpass_8k",
            "spectral_subtraction", "nmf_denoise", "spectral_gate", "spectral_gate_stationary",
            "gaussian_noise_40db"]


def band_power_db(x: np.ndarray, sample_rate_hz: int, low_hz: float, high_hz: float) -> float:
    """Power in a band (dB), Hann-windowed over the clip so that the cut at its ends does
    not leak broadband energy into every band."""
    window = np.hanning(x.shape[-1])
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * window, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate_hz)
    band = (freqs >= low_hz) & (freqs < high_hz)
    return 10.0 * math.log10(spectrum[..., band].sum() + 1e-30)


def noisy_music(sample_rate_hz: int, *, snr_db: float = 30.0, seed: int = 0) -> np.ndarray:
    """Music (harmonics below 5 kHz) plus stationary white noise: the noise alone fills
    everything above 5 kHz, so its floor there is measurable."""
    x = music_like(sample_rate_hz, 2, 2.0, seed=seed).astype(np.float64)
    rng = np.random.default_rng(seed + 100)
    noise = rng.standard_normal(x.shape) * math.sqrt(np.mean(x ** 2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def test_registry_names_and_descriptions():
    assert list(ATTACKS) == EXPECTED
    for name, attack in ATTACKS.items():
        assert isinstance(attack, Attack)
        assert attack.name == name
        assert attack.description and "\n" not in attack.description


@pytest.mark.parametrize("name", EXPECTED)
@pytest.mark.parametrize("sample_rate_hz,channels", [(44100, 1), (48000, 2)])
def test_shape_alignment_and_determinism(name, sample_rate_hz, channels):
    if name in GATES and not HAS_NOISEREDUCE:
        pytest.skip("noisereduce is not installed (the eval extra)")
    x = music_like(sample_rate_hz, channels, 1.5, seed=7)
    before = x.copy()
    attack = ATTACKS[name]
    y = attack.apply(x, sample_rate_hz, seed=1)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(x, before)           # input untouched
    assert np.all(np.isfinite(y))
    for channel in range(channels):
        lag, match = best_lag(x[channel], y[channel], max_lag=512)
        # Opus below 64 kbps codes the low band with SILK, whose path runs ~3 samples
        # (48 kHz) early after FFmpeg's pre-skip; every other attack is exact.
        assert abs(lag) <= (4 if name == "opus_32k" else 0), (name, lag)
        # the stationary gate mutes the decays of these clean notes (its threshold is the
        # clip's own mean + 1.5 std per frequency): little is left to correlate
        assert match > (0.3 if name == "spectral_gate_stationary" else 0.9), (name, match)
    np.testing.assert_array_equal(y, attack.apply(x, sample_rate_hz, seed=1))


def test_codecs_change_the_signal_by_plausible_amounts():
    x = music_like(44100, 2, 2.0, seed=3)

    def error_db(name: str) -> float:
        y = ATTACKS[name].apply(x, 44100, seed=0)
        return 10 * math.log10(np.sum((y - x) ** 2) / np.sum(x ** 2))

    errors = {name: error_db(name) for name in ("mp3_64k", "mp3_128k", "aac_64k", "opus_32k")}
    for name, value in errors.items():
        assert -35.0 < value < -5.0, (name, value)
    assert errors["mp3_128k"] < errors["mp3_64k"] - 1.0


def test_lowpass_removes_more_than_20_db_above_9_khz():
    x = noisy_music(44100)
    y = ATTACKS["lowpass_8k"].apply(x, 44100, seed=0)
    drop = band_power_db(x, 44100, 9000, 22050) - band_power_db(y, 44100, 9000, 22050)
    assert drop > 20.0
    # the music below 4 kHz passes
    assert abs(band_power_db(x, 44100, 50, 4000) - band_power_db(y, 44100, 50, 4000)) < 0.2


def test_resample_16k_removes_content_above_8_khz():
    x = noisy_music(48000)
    y = ATTACKS["resample_16k"].apply(x, 48000, seed=0)
    drop = band_power_db(x, 48000, 8200, 24000) - band_power_db(y, 48000, 8200, 24000)
    assert drop > 40.0
    assert abs(band_power_db(x, 48000, 50, 6000) - band_power_db(y, 48000, 50, 6000)) < 0.2
    # a file already at 16 kHz has nothing above 8 kHz to lose
    low = music_like(16000, 1, 1.0)
    np.testing.assert_array_equal(ATTACKS["resample_16k"].apply(low, 16000, seed=0), low)


@pytest.mark.parametrize("name,min_drop_db,max_music_loss_db", [
    ("spectral_subtraction", 6.0, 2.0),
    ("nmf_denoise", 6.0, 4.0),
    # noisereduce's gates also eat the quiet decays of these sparse notes
    ("spectral_gate", 10.0, 10.0),
    ("spectral_gate_stationary", 20.0, 20.0),
])
def test_denoisers_lower_a_stationary_noise_floor(name, min_drop_db, max_music_loss_db):
    if name in GATES and not HAS_NOISEREDUCE:
        pytest.skip("noisereduce is not installed (the eval extra)")
    x = noisy_music(44100, snr_db=30.0)
    y = ATTACKS[name].apply(x, 44100, seed=0)
    # above 8 kHz there is only the white noise
    drop = band_power_db(x, 44100, 8000, 20000) - band_power_db(y, 44100, 8000, 20000)
    assert drop > min_drop_db, drop
    # and they do not just mute the file: the music band keeps most of its energy
    kept = band_power_db(y, 44100, 100, 4000) - band_power_db(x, 44100, 100, 4000)
    assert kept > -max_music_loss_db, kept


def test_spectral_subtraction_leaves_music_with_silent_pauses_alone():
    # the quietest frames are digital silence: the noise estimate is 0, nothing is removed
    sr = 44100
    x = music_like(sr, 2, 2.0, seed=4)
    x[:, sr // 2:sr] = 0.0
    y = ATTACKS["spectral_subtraction"].apply(x, sr, seed=0)
    assert 10 * math.log10(np.sum((y - x) ** 2) / np.sum(x ** 2)) < -60.0


def test_nmf_denoise_is_seeded():
    x = noisy_music(22050)
    attack = ATTACKS["nmf_denoise"]
    a, b = attack.apply(x, 22050, seed=0), attack.apply(x, 22050, seed=1)
    np.testing.assert_array_equal(a, attack.apply(x, 22050, seed=0))
    assert not np.array_equal(a, b)


def test_gaussian_noise_hits_its_snr_and_follows_the_seed():
    x = music_like(44100, 2, 2.0)
    attack = ATTACKS["gaussian_noise_40db"]
    y1, y2 = attack.apply(x, 44100, seed=1), attack.apply(x, 44100, seed=2)
    snr = 10 * math.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y1 - x) ** 2.0))
    assert abs(snr - 40.0) < 0.3
    assert not np.array_equal(y1, y2)
    silent = np.zeros((1, 4410), np.float32)
    np.testing.assert_array_equal(GaussianNoiseAttack().apply(silent, 44100, seed=0), silent)


@pytest.mark.parametrize("bad,message", [
    (np.zeros(100, np.float32), r"shape \(100,\); give a float array \[channels, samples\]"),
    (np.full((1, 100), np.nan, np.float32), "NaN or infinite"),
])
def test_bad_input_is_refused_with_the_fix(bad, message):
    with pytest.raises(InputError, match=message):
        ATTACKS["lowpass_8k"].apply(bad, 44100, seed=0)


def test_spectral_gate_without_noisereduce_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "noisereduce", None)
    with pytest.raises(ModelLoadError, match=r"needs the noisereduce package; pip install"):
        SpectralGateAttack().apply(music_like(16000, 1, 0.5), 16000, seed=0)


def test_bad_rate_is_refused():
    with pytest.raises(InputError, match="sample rate 44100.0; give a whole number of Hz"):
        ATTACKS["mp3_64k"].apply(np.zeros((1, 100), np.float32), 44100.0, seed=0)


def test_mp3_at_a_rate_lame_refuses_is_coded_at_48_khz():
    x = music_like(96000, 1, 0.5)
    y = ATTACKS["mp3_128k"].apply(x, 96000, seed=0)
    assert y.shape == x.shape
    assert best_lag(x[0], y[0], 256)[0] == 0
    # LAME's band limit at 128 kbps lies near 17 kHz: nothing near 30 kHz survives
    assert band_power_db(y, 96000, 25000, 40000) < band_power_db(x, 96000, 25000, 40000) - 30


def test_survival():
    assert survival(2.0, 1.0) == 0.5
    assert survival(2.0, 2.0) == 1.0
    assert survival(2.0, 0.0) == 0.0
    assert survival(1.0, -0.5) == -0.5          # the attack turned the effect around
    assert survival(1.0, 1.5) == 1.5            # not clipped
    for before, after in [(0.0, 1.0), (-1.0, -0.5), (float("nan"), 1.0), (1.0, float("inf"))]:
        assert math.isnan(survival(before, after))


def test_augmentation_policy_draws_every_family_reproducibly():
    policy = AugmentationPolicy(44100)
    kinds = {type(m) for m in policy.members}
    assert kinds == {StraightThroughCodec, Resample, Lowpass}
    assert not policy.differentiable
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws = [policy.sample(g1) for _ in range(60)]
    assert draws == [policy.sample(g2) for _ in range(60)]
    json.dumps(draws)                                   # reportable as is
    picked = {type(policy.members[d["index"]]) for d in draws}
    assert picked == kinds
    x = torch.from_numpy(music_like(44100, 2, 0.5))[None].repeat(2, 1, 1)
    for params in draws[:6]:
        y = policy.apply(x, params)
        assert y.shape == x.shape and torch.isfinite(y).all()
        member = policy.members[params["index"]]
        torch.testing.assert_close(y, member.apply(x, params["params"]))


def test_augmentation_policy_leaves_out_what_the_rate_cannot_use():
    policy = AugmentationPolicy(16000, identity_weight=0.5)
    names = [getattr(m, "name", "") for m in policy.members]
    assert not any(isinstance(m, Resample) for m in policy.members)   # nothing below 16 kHz
    assert "identity" in names
    lowpass = next(m for m in policy.members if isinstance(m, Lowpass))
    assert lowpass.max_cutoff_hz == pytest.approx(0.45 * 16000)
    with pytest.raises(InputError, match="sample rate 100"):
        AugmentationPolicy(100)
