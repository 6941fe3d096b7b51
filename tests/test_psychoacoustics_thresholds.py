"""Threshold in quiet, Bark scale and critical bands (psychoacoustics.thresholds)."""

from __future__ import annotations

import math

import pytest
import torch

from harmonycloak.psychoacoustics import (
    absolute_threshold_db,
    bark,
    critical_band_edges_hz,
    critical_band_matrix,
    critical_bandwidth_hz,
    default_n_fft,
)
from harmonycloak.psychoacoustics.thresholds import CLASSIC_BAND_EDGES_HZ


def terhardt(f_hz: float) -> float:
    """Independent scalar arithmetic of the three-term formula."""
    k = f_hz / 1000.0
    return 3.64 * k**-0.8 - 6.5 * math.exp(-0.6 * (k - 3.3) ** 2) + 0.001 * k**4


@pytest.mark.parametrize("f_hz", [20.0, 100.0, 440.0, 1000.0, 3300.0, 4000.0, 10000.0, 16000.0])
def test_ath_matches_terhardt(f_hz):
    assert float(absolute_threshold_db(f_hz)) == pytest.approx(terhardt(f_hz), abs=1e-3)


def test_ath_known_values():
    assert float(absolute_threshold_db(1000.0)) == pytest.approx(3.37, abs=0.01)
    assert float(absolute_threshold_db(100.0)) == pytest.approx(22.96, abs=0.02)
    f = torch.linspace(20.0, 20000.0, 200001, dtype=torch.float64)
    ath = absolute_threshold_db(f)
    f_min = float(f[ath.argmin()])
    assert 3000.0 < f_min < 3600.0
    assert float(ath.min()) == pytest.approx(-5.0, abs=0.1)


def test_ath_differs_from_papers_two_term_eq2_by_the_quartic_term():
    def eq2(f_hz):  # the paper's eq. 2 as printed
        k = f_hz / 1000.0
        return 3.64 * k**-0.8 - 6.5 * math.exp(-0.6 * (k - 3.3) ** 2)

    assert float(absolute_threshold_db(16000.0)) - eq2(16000.0) == pytest.approx(65.536, abs=1e-3)
    assert float(absolute_threshold_db(1000.0)) - eq2(1000.0) == pytest.approx(0.001, abs=1e-4)


def test_ath_clamps_frequency_range():
    low = absolute_threshold_db(torch.tensor([0.0, 5.0, 20.0]))
    assert torch.isfinite(low).all()
    assert torch.allclose(low, low[2].expand(3))
    high = absolute_threshold_db(torch.tensor([20000.0, 48000.0, 96000.0]))
    assert torch.isfinite(high).all() and torch.allclose(high, high[0].expand(3))
    assert float(high[0]) == pytest.approx(terhardt(20000.0), abs=1e-2)


def test_bark_known_values_and_monotone():
    assert float(bark(1000.0)) == pytest.approx(
        13 * math.atan(0.76) + 3.5 * math.atan((1000 / 7500) ** 2), abs=1e-5
    )
    assert float(bark(1000.0)) == pytest.approx(8.5, abs=0.05)
    assert float(bark(0.0)) == 0.0
    z = bark(torch.linspace(0.0, 96000.0, 10000))
    assert (z.diff() > 0).all()
    assert float(z[-1]) < 26.0


def test_critical_bandwidth_known_values():
    assert float(critical_bandwidth_hz(100.0)) == pytest.approx(25 + 75 * 1.014**0.69, abs=1e-3)
    assert float(critical_bandwidth_hz(1000.0)) == pytest.approx(162.2, abs=0.2)
    assert float(critical_bandwidth_hz(10000.0)) == pytest.approx(2317, rel=0.01)


@pytest.mark.parametrize(
    "sr,bands", [(8000, 18), (16000, 22), (32000, 25), (44100, 26), (48000, 26), (96000, 26)]
)
def test_band_edges_monotone_up_to_nyquist(sr, bands):
    edges = critical_band_edges_hz(sr)
    assert edges.numel() == bands + 1
    assert float(edges[0]) == 0.0 and float(edges[-1]) == sr / 2
    assert (edges.diff() > 0).all()
    classic = [e for e in CLASSIC_BAND_EDGES_HZ if e < sr / 2 - 100]
    assert edges[:-1].tolist() == pytest.approx(classic)


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 41100, 44100, 48000, 96000, 192000])
def test_band_matrix_puts_every_bin_but_dc_in_exactly_one_band(sr):
    n_fft = default_n_fft(sr)
    m = critical_band_matrix(sr, n_fft)
    assert m.shape == (n_fft // 2 + 1, critical_band_edges_hz(sr).numel() - 1)
    assert float(m[0].sum()) == 0.0
    assert torch.equal(m[1:].sum(1), torch.ones(n_fft // 2))
    assert (m.sum(0) >= 1).all()  # no empty band
