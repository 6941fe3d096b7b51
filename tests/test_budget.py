"""Budgets of the audio perturbation (perturb.budget): bounds from the masking model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.perturb.budget import (
    DEFAULT_SPECTRUM_MARGIN_DB,
    DEFAULT_TONE_MARGIN_DB,
    channel_weights,
    dominant_tone_budget,
    leak_db,
    masked_spectrum_budget,
)
from harmonycloak.psychoacoustics import (
    absolute_threshold_db,
    dominant_tones,
    masking_threshold,
    spl_to_amplitude,
)


def sine(sr: int, hz: float, seconds: float, amplitude: float = 0.3, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    rows = [amplitude * (0.8**c) * torch.sin(2 * math.pi * hz * t + c) for c in range(channels)]
    return torch.stack(rows).float()


@pytest.mark.parametrize("sr", (44100, 48000))
@pytest.mark.parametrize("channels", (1, 2))
def test_dominant_budget_follows_eq_11_capped_by_the_mask(sr, channels):
    x = sine(sr, 440.0, 0.5, channels=channels)
    mask = masking_threshold(x, sr)
    tones = dominant_tones(x, sr)
    budget = dominant_tone_budget(x, sr, masking=mask, tones=tones)
    windows = -(-x.shape[-1] // round(sr / 100))
    assert budget.frequency_hz.shape == (channels, windows) == budget.upper.shape
    assert budget.shape == tuple(x.shape) and budget.window_samples == round(sr / 100)
    inner = slice(5, -5)
    assert bool(budget.active[:, inner].all())
    assert torch.allclose(budget.frequency_hz[:, inner], torch.tensor(440.0), atol=1.0)
    expected_lower = spl_to_amplitude(absolute_threshold_db(budget.frequency_hz))
    assert torch.allclose(budget.lower[:, inner], expected_lower[:, inner], rtol=1e-5)
    # below the music's level at nu_t (eq. 11) and below the mask at nu_t minus the margin
    level = spl_to_amplitude(tones.level_db)
    assert bool((budget.upper <= level * (1 + 1e-5)).all())
    k = int(440.0 * mask.n_fft / sr)
    thr = mask.threshold_db[..., k : k + 2].amin(dim=(-1, -2))  # [channels], lowest anywhere
    cap = spl_to_amplitude(mask.threshold_db[..., k : k + 2].amax(dim=(-1, -2)) - DEFAULT_TONE_MARGIN_DB)
    assert bool((budget.upper <= cap[:, None] * (1 + 1e-5)).all())
    assert bool((budget.upper[:, inner] >= spl_to_amplitude(thr - DEFAULT_TONE_MARGIN_DB)[:, None] * 0.99).all())
    assert bool((budget.upper[:, inner] > budget.lower[:, inner]).all())
    assert budget.channel_weights.shape == (channels,)


def test_dominant_margin_lowers_the_upper_bound_by_exactly_the_margin():
    sr = 44100
    x = sine(sr, 330.0, 0.4)
    mask = masking_threshold(x, sr)
    a = dominant_tone_budget(x, sr, masking=mask, margin_db=3.0)
    b = dominant_tone_budget(x, sr, masking=mask, margin_db=9.0)
    both = a.active & b.active
    assert int(both.sum()) > 20
    ratio_db = 20 * torch.log10(a.upper[both] / b.upper[both])
    assert torch.allclose(ratio_db, torch.tensor(6.0), atol=1e-3)


def test_dominant_bound_holds_before_an_onset():
    """A window just before a loud onset may only be as loud as the quiet frame it sounds in."""
    sr = 44100
    x = torch.cat([sine(sr, 440.0, 0.3, amplitude=0.003), sine(sr, 440.0, 0.3, amplitude=0.5)], -1)
    budget = dominant_tone_budget(x, sr)
    onset = int(0.3 * sr) // budget.window_samples
    before, after = budget.upper[0, onset - 3], budget.upper[0, onset + 10]
    assert float(after) > 50 * float(before)


def test_silence_gives_an_empty_budget():
    sr = 48000
    x = torch.zeros(2, sr // 2)
    tone = dominant_tone_budget(x, sr)
    spectrum = masked_spectrum_budget(x, sr)
    for budget in (tone, spectrum):
        assert not bool(budget.active.any())
        assert float(budget.upper.abs().max()) == 0.0 and float(budget.lower.abs().max()) == 0.0
        assert torch.equal(budget.channel_weights, torch.ones(2))


@pytest.mark.parametrize("sr", (44100, 48000))
def test_masked_spectrum_bounds_sit_under_the_threshold(sr):
    gen = torch.Generator().manual_seed(0)
    x = sine(sr, 1000.0, 0.5, channels=2) + 0.01 * torch.randn(2, sr // 2, generator=gen)
    mask = masking_threshold(x, sr)
    budget = masked_spectrum_budget(x, sr, masking=mask)
    assert budget.upper.shape == mask.threshold_db.shape == budget.lower.shape
    assert (budget.n_fft, budget.hop_length) == (mask.n_fft, mask.hop_length)
    cap = spl_to_amplitude(mask.threshold_db - DEFAULT_SPECTRUM_MARGIN_DB)
    assert bool((budget.upper <= cap * (1 + 1e-5)).all())
    active = budget.active
    assert bool((budget.upper[active] > budget.lower[active]).all())
    assert bool((budget.upper[~active] == 0).all()) and bool((budget.lower[~active] == 0).all())
    ath = spl_to_amplitude(mask.ath_db).expand_as(budget.lower)
    assert torch.allclose(budget.lower[active], ath[active])
    assert not bool(active[..., 0].any()) and not bool(active[..., -1].any())
    # the bins around the tone carry noise, the empty top of the spectrum none
    k = round(1000.0 * mask.n_fft / sr)
    assert bool(active[:, 3:-3, k].all())
    top = mask.frequencies_hz > 19000.0
    assert not bool(active[..., top].any())
    no_floor = masked_spectrum_budget(x, sr, masking=mask, quiet_floor=False)
    assert float(no_floor.lower.abs().max()) == 0.0
    assert torch.equal(no_floor.upper, budget.upper)


def test_leak_table_matches_the_hann_windows():
    table = leak_db(1024)
    assert table.shape == (3, 9)
    own = table[1]
    assert float(own[4]) == pytest.approx(20 * math.log10(0.75), abs=0.01)  # sum w^2 / sum w
    assert float(own[3]) == pytest.approx(20 * math.log10(0.5), abs=0.01) == float(own[5])
    assert float(own[2]) == pytest.approx(20 * math.log10(0.125), abs=0.01)
    assert math.isinf(float(own[0])) and math.isinf(float(own[8]))  # exact zeros of Hann^2
    assert float(table[0, 4]) == pytest.approx(20 * math.log10(0.125), abs=0.01)
    assert torch.allclose(table[0], table[2]) and torch.allclose(table, leak_db(2048), atol=1e-6)


def test_masked_spectrum_leak_cap():
    """No cell's bound exceeds a neighbouring cell's threshold by more than how much weaker
    it reads there minus the headroom; before an onset the bound stays low."""
    sr = 44100
    x = torch.cat([torch.zeros(1, sr // 4), sine(sr, 700.0, 0.3, amplitude=0.5)], -1)
    mask = masking_threshold(x, sr)
    headroom = 10.0
    budget = masked_spectrum_budget(x, sr, masking=mask, margin_db=0.0, leak_headroom_db=headroom)
    upper_db = 96.0 + 20 * torch.log10(budget.upper.clamp_min(1e-30))
    t = mask.threshold_db
    act = budget.active
    assert bool((upper_db[act] <= t[act] + 1e-3).all())
    table = leak_db(mask.n_fft)
    frames, bins = t.shape[-2:]
    for i, df in enumerate((-1, 0, 1)):
        for j, dk in enumerate(range(-4, 5)):
            if (df, dk) == (0, 0) or math.isinf(float(table[i, j])):
                continue
            allowance = max(0.0, float(table[1, 4] - table[i, j]) - headroom)
            f0, f1 = max(0, -df), frames - max(0, df)
            k0, k1 = max(0, -dk), bins - max(0, dk)
            here = upper_db[..., f0:f1, k0:k1]
            there = t[..., f0 + df : f1 + df, k0 + dk : k1 + dk]
            sel = act[..., f0:f1, k0:k1]
            assert bool((here[sel] <= there[sel] + allowance + 1e-3).all()), (df, dk)
    onset = (sr // 4) // mask.hop_length
    k = round(700.0 * mask.n_fft / sr)
    assert float(budget.upper[0, onset + 2, k]) > 10 * float(budget.upper[0, onset - 1, k])
    loose = masked_spectrum_budget(x, sr, masking=mask, margin_db=0.0, leak_headroom_db=0.0)
    assert bool((loose.upper >= budget.upper).all()) and bool((loose.upper > budget.upper).any())


def test_music_cap_keeps_noise_under_noise_like_music():
    """Model 1 puts a noise band's masker at the band's summed power, so for white noise the
    per-bin threshold sits above the music's own per-bin level; the music cap (eq. 5a,
    δ <= x) holds the bound to the music's band-mean level minus the margin."""
    sr = 44100
    gen = torch.Generator().manual_seed(4)
    x = 0.3 * torch.randn(1, sr // 2, generator=gen)
    mask = masking_threshold(x, sr)
    inner = (slice(None), slice(20, -20), slice(10, 300))  # steady frames, 0.4-13 kHz
    assert float((mask.threshold_db - mask.psd_db)[inner].median()) > 4.0
    capped = masked_spectrum_budget(x, sr, masking=mask)
    free = masked_spectrum_budget(x, sr, masking=mask, music_cap=False)
    upper_db = 96.0 + 20 * torch.log10(capped.upper.clamp_min(1e-30))
    # white: every band's mean power per bin ~ the mean power of all bins
    level = 10 * torch.log10(torch.pow(10.0, mask.psd_db[inner].double() / 10).mean())
    assert float(upper_db[inner].median()) == pytest.approx(float(level) - DEFAULT_SPECTRUM_MARGIN_DB, abs=1.5)
    assert bool((capped.upper <= free.upper).all())
    gain_db = 20 * torch.log10(free.upper[inner].median() / capped.upper[inner].median())
    assert float(gain_db) > 1.5


def test_channel_weights_follow_the_paper():
    loud, quiet = torch.full((1, 100), 0.5), torch.full((1, 100), 0.1)
    w = channel_weights(torch.cat([loud, quiet]))
    assert float(w[0]) < float(w[1]) and float(w.mean()) == pytest.approx(1.0)
    share = 0.25 / 0.26
    assert float(w[0]) == pytest.approx(2 * (1 - share), rel=1e-6)
    assert torch.equal(channel_weights(loud), torch.ones(1))  # mono: weight 1, not 0
    assert torch.equal(channel_weights(torch.zeros(3, 10)), torch.ones(3))
    assert torch.allclose(channel_weights(torch.cat([loud, loud])), torch.ones(2))


def test_budgets_accept_arrays_and_clips_and_leave_the_input_alone():
    sr = 44100
    x = sine(sr, 220.0, 0.3, channels=2)
    before = x.clone()
    a = masked_spectrum_budget(x, sr)
    b = masked_spectrum_budget(x.numpy(), sr)
    c = masked_spectrum_budget(AudioClip(x.numpy().copy(), sr))
    assert torch.equal(a.upper, b.upper) and torch.equal(a.upper, c.upper)
    t1, t2 = dominant_tone_budget(x, sr), dominant_tone_budget(x.numpy(), sr)
    assert torch.equal(t1.upper, t2.upper) and torch.equal(t1.frequency_hz, t2.frequency_hz)
    assert torch.equal(x, before)
    again = masked_spectrum_budget(x, sr)
    assert torch.equal(again.upper, a.upper)  # deterministic


def test_budget_errors_name_the_value_and_the_fix():
    sr = 44100
    x = sine(sr, 440.0, 0.2)
    with pytest.raises(InputError, match=r"margin_db=-1.*>= 0"):
        masked_spectrum_budget(x, sr, margin_db=-1.0)
    with pytest.raises(InputError, match=r"leak_headroom_db=nan"):
        masked_spectrum_budget(x, sr, leak_headroom_db=float("nan"))
    with pytest.raises(InputError, match=r"margin_db=inf"):
        dominant_tone_budget(x, sr, margin_db=math.inf)
    with pytest.raises(InputError, match=r"\(8820,\) is not \[channels, samples\].*x\[None\]"):
        dominant_tone_budget(x[0], sr)
    with pytest.raises(InputError, match=r"\(1, 1, 8820\)"):
        masked_spectrum_budget(x[None], sr)
    other = masking_threshold(sine(sr, 440.0, 0.3), sr)
    with pytest.raises(InputError, match=r"does not describe this clip.*leave masking unset"):
        masked_spectrum_budget(x, sr, masking=other)
    with pytest.raises(InputError, match=r"do not describe this clip.*window_ms"):
        dominant_tone_budget(x, sr, window_ms=20.0, tones=dominant_tones(x, sr))
    bad = x.clone()
    bad[0, 5] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        masked_spectrum_budget(bad, sr)
    with pytest.raises(InputError, match="sample rate"):
        masked_spectrum_budget(x, 4000)


def test_budget_dataclasses_are_frozen():
    budget = masked_spectrum_budget(sine(44100, 440.0, 0.1), 44100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.margin_db = 0.0  # type: ignore[misc]
    assert budget.margin_db == DEFAULT_SPECTRUM_MARGIN_DB
    assert isinstance(np.asarray(budget.upper), np.ndarray)


def test_strong_preset_lets_the_spectrum_budget_sit_closer_to_the_mask():
    """strong-v1 trades quality for strength by a smaller audio margin (config.STRONG_MARGIN_DB);
    the other presets keep the budget's default. Where the upper bound is set by the mask
    (not by full scale or the music's own level), it rises by exactly the difference."""
    from harmonycloak.config import STRONG_MARGIN_DB, preset

    assert preset("light-v1").audio.margin_db is None
    assert preset("standard-v1").audio.margin_db is None
    assert preset("strong-v1").audio.margin_db == STRONG_MARGIN_DB < DEFAULT_SPECTRUM_MARGIN_DB
    x = sine(44100, 440.0, 0.5, channels=2) + sine(44100, 2500.0, 0.5, amplitude=0.05, channels=2)
    mask = masking_threshold(x, 44100)
    default = masked_spectrum_budget(x, 44100, masking=mask)
    strong = masked_spectrum_budget(x, 44100, masking=mask, margin_db=STRONG_MARGIN_DB)
    assert bool((strong.upper >= default.upper).all())
    assert bool((strong.active | ~default.active).all())   # active stays active
    both = default.active & strong.active
    gain = strong.upper[both] / default.upper[both]
    expected = 10 ** ((DEFAULT_SPECTRUM_MARGIN_DB - STRONG_MARGIN_DB) / 20)
    assert float((gain - expected).abs().lt(1e-3 * expected).float().mean()) > 0.5
    assert float(gain.max()) <= expected * (1 + 1e-4)
