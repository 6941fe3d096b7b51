"""MPEG-1 model 1 global masking threshold and temporal masking (psychoacoustics.masking)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.psychoacoustics import (
    absolute_threshold_db,
    bark,
    default_n_fft,
    masking_threshold,
    temporal_masking,
)
from harmonycloak.psychoacoustics.masking import (
    DEFAULT_BARK_STEP,
    _decaying_max,
    _non_tonal_maskers,
    _plan,
    _tonal_maskers,
)

RATES = (16000, 44100, 48000)


def sine(freq_hz, sample_rate_hz, amplitude=0.5, seconds=0.5):
    t = torch.arange(int(seconds * sample_rate_hz), dtype=torch.float64) / sample_rate_hz
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t)).to(torch.float32)


def bin_at(result, freq_hz):
    return int((result.frequencies_hz - freq_hz).abs().argmin())


def bin_at_bark(result, z):
    return int((bark(result.frequencies_hz) - z).abs().argmin())


# --- a naive, loop-based reference of the same model (exact positions, every bin) ---------

_EDGES = (0, 100, 200, 300, 400, 510, 630, 770, 920, 1080, 1270, 1480, 1720, 2000, 2320, 2700,
          3150, 3700, 4400, 5300, 6400, 7700, 9500, 12000, 15500, 20500)  # fmt: skip


def _ath(f):
    f = np.clip(f, 20.0, 20000.0) / 1000.0
    return 3.64 * f**-0.8 - 6.5 * np.exp(-0.6 * (f - 3.3) ** 2) + 1e-3 * f**4


def _bark(f):
    return 13 * np.arctan(0.00076 * f) + 3.5 * np.arctan((f / 7500.0) ** 2)


def _vf(dz, x):
    if -3 <= dz < -1:
        return 17 * (dz + 1) - (0.4 * x + 6)
    if -1 <= dz < 0:
        return (0.4 * x + 6) * dz
    if 0 <= dz < 1:
        return -17 * dz
    if 1 <= dz < 8:
        return -(dz - 1) * (17 - 0.15 * x) - 17
    return None


def reference_tonal(x_db: np.ndarray, sr: int, n_fft: int) -> tuple[list[int], np.ndarray]:
    """Tonal bins and the bins their neighbourhoods exclude from the non-tonal sums."""
    k_bins = len(x_db)
    f = np.arange(k_bins) * sr / n_fft
    ref_bin = 44100 / 1024

    def jmax(k):
        for upper, j in ((63, 2), (127, 3), (255, 6), (math.inf, 12)):
            if f[k] < upper * ref_bin:
                return max(2, round(j * ref_bin / (sr / n_fft)))

    tonal = []
    for k in range(2, k_bins - 1):
        if x_db[k] > x_db[k - 1] and x_db[k] >= x_db[k + 1]:
            near = [kk for j in range(2, jmax(k) + 1) for kk in (k - j, k + j) if 0 <= kk < k_bins]
            if all(x_db[k] - x_db[kk] >= 7 for kk in near):
                tonal.append(k)
    excluded = np.zeros(k_bins, bool)
    for k in tonal:
        excluded[max(0, k - jmax(k)) : k + jmax(k) + 1] = True
    return tonal, excluded


def reference_threshold(x_db: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    k_bins = len(x_db)
    f = np.arange(k_bins) * sr / n_fft
    z, ath, p = _bark(f), _ath(f), 10 ** (x_db / 10)
    tonal, excluded = reference_tonal(x_db, sr, n_fft)
    edges = [e for e in _EDGES if e < sr / 2 - 100] + [sr / 2]
    maskers = []
    for k in tonal:
        level = 10 * math.log10(p[k - 1] + p[k] + p[k + 1])
        if level >= ath[k]:
            maskers.append((z[k], level, "tonal"))
    decimated = [
        m for m in maskers if not any(abs(o[0] - m[0]) < 0.5 and o[1] > m[1] for o in maskers)
    ]
    for b in range(len(edges) - 1):
        last = b == len(edges) - 2
        idx = [
            k
            for k in range(1, k_bins)
            if edges[b] <= f[k] < edges[b + 1] or (last and f[k] == sr / 2)
        ]
        power = sum(p[k] for k in idx if not excluded[k])
        f_geo = math.sqrt(f[idx[0]] * f[idx[-1]])
        if power > 0 and 10 * math.log10(power) >= _ath(f_geo):
            decimated.append((_bark(f_geo), 10 * math.log10(power), "noise"))
    out = np.empty(k_bins)
    for i in range(k_bins):
        total = 10 ** (ath[i] / 10)
        for zm, level, kind in decimated:
            v = _vf(z[i] - zm, min(level, 110.0))
            if v is not None:
                av = -6.025 - 0.275 * zm if kind == "tonal" else -2.025 - 0.175 * zm
                total += 10 ** ((level + av + v) / 10)
        out[i] = 10 * math.log10(total)
    return out


@pytest.mark.parametrize("sr", RATES)
def test_matches_naive_reference_implementation_on_music(sr, make_music):
    x = torch.from_numpy(make_music(sr, 1, 0.6, seed=3))
    result = masking_threshold(x, sr, temporal=False)
    diffs = []
    for t in range(4, result.num_frames - 2, 8):
        ref = reference_threshold(result.psd_db[0, t].double().numpy(), sr, result.n_fft)
        diffs.append(result.threshold_db[0, t].double().numpy() - ref)
    d = np.abs(np.concatenate(diffs))
    # Only the Bark-grid quantization (<= 1/16 Bark) separates the two.
    assert np.median(d) < 0.5
    assert np.percentile(d, 95) < 1.5
    assert d.max() < 3.0


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 96000])
def test_tonal_search_and_exclusion_match_the_per_bin_rule(sr):
    """The vectorized (sparse-table) tonal search equals the loop over bins, on spectra
    full of peaks of all sizes, at rates where the neighbourhoods differ."""
    n_fft = default_n_fft(sr)
    plan = _plan(sr, n_fft, DEFAULT_BARK_STEP, "cpu")
    gen = torch.Generator().manual_seed(sr)
    x_db = 40.0 + 12.0 * torch.randn(6, n_fft // 2 + 1, generator=gen)
    x_db[:, ::37] += 30.0  # strong isolated peaks
    p = 10 ** (x_db / 10)
    flags, _ = _tonal_maskers(x_db, p, plan)
    noise = _non_tonal_maskers(p, flags, plan)
    for row in range(x_db.shape[0]):
        tonal, excluded = reference_tonal(x_db[row].double().numpy(), sr, n_fft)
        assert torch.nonzero(flags[row]).flatten().tolist() == tonal
        bands = (
            torch.where(torch.from_numpy(excluded), 0.0, p[row].double())
            @ plan.band_matrix.double()
        )
        kept = bands >= plan.band_ath_pow.double()
        expected = (torch.where(kept, bands, 0.0) @ plan.band_to_cell.double()).float()
        assert torch.allclose(noise[row], expected, rtol=1e-4)


# --- frequency masking --------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
def test_loud_tone_raises_threshold_near_it_with_upward_spread(sr):
    result = masking_threshold(sine(1000.0, sr, 0.5), sr, temporal=False)
    thr = result.threshold_db[result.num_frames // 2]
    ath = result.ath_db
    z0 = float(bark(1000.0))
    k0 = bin_at(result, 1000.0)
    assert float(thr[k0] - ath[k0]) > 60.0
    # 3 Bark away the threshold is much lower ...
    above, below = bin_at_bark(result, z0 + 3), bin_at_bark(result, z0 - 3)
    assert float(thr[k0] - thr[above]) > 12.0
    assert float(thr[k0] - thr[below]) > 40.0
    # ... and it falls off more steeply below the masker than above (upward spread).
    for dz in (1.0, 2.0):
        up, down = bin_at_bark(result, z0 + dz), bin_at_bark(result, z0 - dz)
        assert float(thr[up] - thr[down]) > 10.0
    # Far away only the threshold in quiet remains.
    far = bin_at(result, min(6000.0, sr / 2 - 1000))
    assert float(thr[far]) == pytest.approx(float(ath[far]), abs=0.5)


@pytest.mark.parametrize("sr", RATES)
def test_threshold_never_below_ath_and_silence_gives_exactly_ath(sr, make_music):
    music = masking_threshold(torch.from_numpy(make_music(sr, 2, 0.5)), sr)
    assert (music.threshold_db >= music.ath_db).all()
    silence = masking_threshold(torch.zeros(2, sr // 4), sr)
    assert torch.equal(silence.threshold_db, silence.ath_db.expand_as(silence.threshold_db))
    assert torch.allclose(silence.ath_db, absolute_threshold_db(silence.frequencies_hz), atol=1e-4)


@pytest.mark.parametrize("sr", RATES)
def test_white_noise_gives_a_smooth_steady_threshold(sr):
    gen = torch.Generator().manual_seed(0)
    x = 0.05 * torch.randn(1, sr, generator=gen)
    result = masking_threshold(x, sr, temporal=False)
    f = result.frequencies_hz
    sel = (f > 500) & (f < min(12000.0, sr / 2 - 1000))
    thr = result.threshold_db[0, 3:-3][:, sel]
    psd = result.psd_db[0, 3:-3][:, sel]
    # Steady over time: per bin, the threshold varies little from frame to frame ...
    assert float(thr.std(dim=0).median()) < 2.0
    # ... and follows the flat noise spectrum smoothly (no tonal spikes, no holes).
    gap = thr.mean(0) - psd.mean(0)
    assert float(gap.std()) < 5.0
    assert float(thr.mean(0).diff().abs().max()) < 7.0
    # A pure tone, by contrast, gives a threshold that varies over ~60 dB.
    tone = masking_threshold(sine(1000.0, sr), sr, temporal=False).threshold_db[10][sel]
    assert float(tone.max() - tone.min()) > 40.0


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_batch_equals_singles_and_input_unchanged(sr, channels, make_music):
    x = torch.from_numpy(make_music(sr, channels, 0.4, seed=5))
    before = x.clone()
    result = masking_threshold(x, sr)
    assert torch.equal(x, before)
    frames = 1 + x.shape[-1] // result.hop_length
    assert result.threshold_db.shape == (channels, frames, result.n_fft // 2 + 1)
    assert result.psd_db.shape == result.threshold_db.shape
    assert result.frame_times_s.shape == (frames,)
    for c in range(channels):
        single = masking_threshold(x[c], sr)
        assert torch.allclose(result.threshold_db[c], single.threshold_db, atol=1e-3)
        assert torch.allclose(result.psd_db[c], single.psd_db, atol=1e-4)


def test_three_dims_and_chunking_do_not_change_the_result(make_music):
    sr = 16000
    x = torch.from_numpy(make_music(sr, 2, 0.7, seed=9))
    stacked = torch.stack([x, 0.5 * x])  # [batch, channels, samples]
    result = masking_threshold(stacked, sr)
    assert result.threshold_db.shape[:2] == (2, 2)
    chunked = masking_threshold(stacked, sr, chunk_frames=5)
    assert torch.allclose(result.threshold_db, chunked.threshold_db, atol=1e-3)
    assert torch.allclose(
        result.threshold_db[1], masking_threshold(0.5 * x, sr).threshold_db, atol=1e-3
    )


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 96000, 192000])
def test_edge_inputs_are_finite(sr):
    gen = torch.Generator().manual_seed(1)
    cases = {
        "silence": torch.zeros(1, sr // 10),
        "full-scale noise": torch.rand(1, sr // 10, generator=gen) * 2 - 1,
        "full-scale square": torch.sign(sine(440.0, sr, 1.0, 0.1))[None],
        "one sample": torch.full((1, 1), 0.9),
        "short": 0.9 * torch.randn(2, 37, generator=gen),
    }
    for name, x in cases.items():
        result = masking_threshold(x, sr)
        assert result.num_frames == 1 + x.shape[-1] // result.hop_length, name
        assert torch.isfinite(result.threshold_db).all(), name
        assert torch.isfinite(result.psd_db).all(), name
        assert (result.threshold_db >= result.ath_db).all(), name


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="no samples"):
        masking_threshold(torch.zeros(2, 0), 44100)
    with pytest.raises(InputError, match="NaN"):
        masking_threshold(torch.tensor([0.0, float("nan"), 0.0]), 44100)
    with pytest.raises(InputError, match="sample rate"):
        masking_threshold(torch.zeros(100), 4000)
    with pytest.raises(InputError, match="sample_rate_hz is required"):
        masking_threshold(torch.zeros(100))
    with pytest.raises(InputError, match="bark_step"):
        masking_threshold(torch.zeros(100), 44100, bark_step=2.0)


def test_accepts_audio_clip_and_numpy(make_music):
    samples = make_music(22050, 2, 0.3)
    from_clip = masking_threshold(AudioClip(samples, 22050))
    from_numpy = masking_threshold(samples, 22050)
    assert from_clip.sample_rate_hz == 22050
    assert torch.equal(from_clip.threshold_db, from_numpy.threshold_db)


# --- temporal masking ---------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
def test_tone_burst_masks_after_and_a_little_before(sr):
    x = torch.zeros(sr)
    start, stop = int(0.4 * sr), int(0.5 * sr)
    x[start:stop] = sine(1000.0, sr, 0.5, 1.0)[start:stop]
    with_t = masking_threshold(x, sr)
    without = masking_threshold(x, sr, temporal=False)
    hop, half = with_t.hop_length, with_t.n_fft // 2
    k = bin_at(with_t, 1000.0)
    ath = float(with_t.ath_db[k])
    thr = with_t.threshold_db[:, k]
    first_clear_after = (stop + half) // hop + 1  # first frame whose window misses the burst
    last_clear_before = (start - half) // hop  # last frame whose window misses the burst
    assert float(without.threshold_db[first_clear_after, k]) == pytest.approx(ath, abs=1e-3)
    # Post-masking: raised right after the burst, decaying monotonically to the ATH.
    post = thr[first_clear_after : first_clear_after + int(0.3 * sr / hop)]
    assert float(post[0]) > ath + 20.0
    assert (post.diff() <= 1e-4).all()
    assert float(post[-1]) == pytest.approx(ath, abs=1e-3)
    ms_to_ath = 1000.0 * hop / sr * int(torch.nonzero(post <= ath + 1e-3)[0])
    assert 50.0 < ms_to_ath <= 210.0
    # Pre-masking: a little (short and steep) before the burst.
    assert float(thr[last_clear_before]) > ath + 5.0
    assert float(thr[last_clear_before]) < float(post[0])
    assert float(thr[last_clear_before - 2]) == pytest.approx(ath, abs=1e-3)


def test_temporal_masking_matches_brute_force_and_never_lowers():
    gen = torch.Generator().manual_seed(2)
    t = 60.0 * torch.rand(2, 40, 7, generator=gen)
    freqs = torch.tensor([50.0, 100.0, 300.0, 1000.0, 4000.0, 10000.0, 20000.0])
    hop_s = 0.010
    out = temporal_masking(t, freqs, hop_s)
    assert (out >= t).all()
    tau = 8.0 + (100.0 / freqs.clamp_min(100.0)) * 22.0
    post_slope = 10 * math.log10(math.e) * 10.0 / tau
    expected = t.clone()
    for i in range(1, 21):  # 200 ms of post-masking at 10 ms hops
        expected[:, i:] = torch.maximum(expected[:, i:], t[:, :-i] - i * post_slope)
    for i in range(1, 3):  # 20 ms of pre-masking at 3 dB/ms
        expected[:, :-i] = torch.maximum(expected[:, :-i], t[:, i:] - i * 30.0)
    assert torch.allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("frames", [0, 1, 2, 3, 5, 17, 31])
def test_decaying_max_doubling_is_exact(frames):
    gen = torch.Generator().manual_seed(frames)
    t = 10.0 * torch.randn(3, 50, 4, generator=gen)
    slope = torch.tensor([0.5, 1.0, 2.0, 7.0])
    expected = t.clone()
    for i in range(1, frames + 1):
        expected[:, i:] = torch.maximum(expected[:, i:], t[:, :-i] - i * slope)
    assert torch.allclose(_decaying_max(t, slope, frames, backwards=False), expected)
    flipped = _decaying_max(t.flip(1), slope, frames, backwards=False).flip(1)
    assert torch.allclose(_decaying_max(t, slope, frames, backwards=True), flipped)
