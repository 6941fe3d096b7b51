"""Mel front end: scales, filterbank shape and sums, a sine lands in its band, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonycloak.errors import InputError
from harmonycloak.targets.mel import (MelConfig, MelFrontEnd, hz_to_mel, mel_band_centers_hz,
                                      mel_filterbank, mel_to_hz)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sine(frequency_hz: float, *, sample_rate_hz: int = 16000, seconds: float = 0.5,
         amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate_hz), dtype=torch.float64) / sample_rate_hz
    return (amplitude * torch.sin(2 * math.pi * frequency_hz * t)).to(torch.float32)


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_scale_known_values_and_round_trip(scale: str) -> None:
    f = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0])
    assert torch.allclose(mel_to_hz(hz_to_mel(f, scale=scale), scale=scale),
                          f.double(), atol=1e-6)
    expected_1k = 15.0 if scale == "slaney" else 2595.0 * math.log10(1 + 1000 / 700)
    assert float(hz_to_mel(1000.0, scale=scale)) == pytest.approx(expected_1k)
    assert bool((hz_to_mel(f, scale=scale).diff() > 0).all())     # monotone


def test_slaney_scale_is_linear_below_1khz() -> None:
    assert float(hz_to_mel(600.0)) == pytest.approx(600.0 * 3 / 200)


@pytest.mark.parametrize(("scale", "norm"), [("slaney", "slaney"), ("htk", None),
                                             ("htk", "slaney"), ("slaney", None)])
def test_filterbank_matches_librosa(scale: str, norm: str | None) -> None:
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(sample_rate_hz=16000, n_fft=1024, n_mels=64, f_min_hz=0.0,
                          f_max_hz=8000.0, scale=scale, norm=norm)  # type: ignore[arg-type]
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0,
                              htk=scale == "htk", norm=norm)
    assert ours.shape == (64, 513) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-7, rtol=1e-5)


def test_unnormalized_rows_peak_at_one_and_columns_sum_to_one() -> None:
    fb = mel_filterbank(sample_rate_hz=16000, n_fft=2048, n_mels=40, f_min_hz=50.0,
                        f_max_hz=7000.0, scale="htk", norm=None).double()
    assert fb.shape == (40, 1025)
    assert float(fb.min()) == 0.0 and float(fb.max()) <= 1.0
    assert bool((fb.max(dim=1).values > 0.9).all())              # every band has a peak bin
    centres = mel_band_centers_hz(n_mels=40, f_min_hz=50.0, f_max_hz=7000.0, scale="htk")
    bins_hz = torch.arange(1025, dtype=torch.float64) * 16000 / 2048
    inside = (bins_hz >= centres[0]) & (bins_hz <= centres[-1])
    assert torch.allclose(fb[:, inside].sum(0), torch.ones(int(inside.sum()),
                                                           dtype=torch.float64), atol=1e-5)
    assert float(fb[:, bins_hz > 7000.0].abs().sum()) == 0.0     # nothing above f_max


def test_slaney_rows_have_unit_area_in_hz() -> None:
    fb = mel_filterbank(sample_rate_hz=16000, n_fft=4096, n_mels=32, f_max_hz=8000.0)
    area = fb.double().sum(dim=1) * (16000 / 4096)
    assert torch.allclose(area, torch.ones(32, dtype=torch.float64), atol=0.02)


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("band", [4, 17, 33, 58])
def test_a_sine_lands_in_its_band(scale: str, band: int) -> None:
    front = MelFrontEnd(scale=scale)  # type: ignore[arg-type]
    centre = float(mel_band_centers_hz(n_mels=64, f_min_hz=0.0, f_max_hz=8000.0,
                                       scale=scale)[band])  # type: ignore[arg-type]
    log_mel = front(sine(centre))
    assert log_mel.shape == (64, 1 + 8000 // 160)
    profile = log_mel[:, 5:-5].mean(dim=1)                        # away from the edges
    assert int(profile.argmax()) == band
    # Bands two or more away see only the window's side lobes (well below the peak).
    far = torch.cat([profile[:max(band - 1, 0)], profile[band + 2:]])
    assert float(profile[band] - far.max()) > math.log(30.0)


def test_magnitude_of_a_bin_centred_sine() -> None:
    # A sine exactly on FFT bin k has |X[k]| = A · sum(window) / 2 = A · n_fft / 4 (Hann).
    front = MelFrontEnd(norm=None, scale="htk")
    k = 100
    spec = front.spectrogram(sine(k * 16000 / 1024, amplitude=0.25))
    assert float(spec[k, 10]) == pytest.approx(0.25 * 1024 / 4, rel=1e-3)


def test_front_end_matches_librosa_melspectrogram() -> None:
    librosa = pytest.importorskip("librosa")
    x = sine(440.0) + sine(3000.0, amplitude=0.2)
    ours = MelFrontEnd().mel(x).numpy()
    ref = librosa.feature.melspectrogram(y=x.numpy(), sr=16000, n_fft=1024, hop_length=160,
                                         n_mels=64, fmin=0.0, fmax=8000.0, power=1.0,
                                         center=True, pad_mode="reflect")
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-3)


def test_shapes_batched_and_frame_count() -> None:
    front = MelFrontEnd(n_fft=512, hop=128, n_mels=32)
    x = torch.randn(3, 2, 4000)
    out = front(x)
    assert out.shape == (3, 2, 32, front.num_frames(4000)) == (3, 2, 32, 1 + 4000 // 128)
    assert torch.allclose(out[1, 0], front(x[1, 0]), atol=1e-5)    # batch equals single


def test_silence_is_the_floor_and_gradients_are_finite_everywhere() -> None:
    front = MelFrontEnd()
    x = torch.zeros(1, 2000)
    x[0, 1000:] = sine(500.0)[:1000]
    x.requires_grad_(True)
    out = front(x)
    assert float(out.detach()[0, :, 0].max()) == pytest.approx(front.silence_value, abs=1e-3)
    out.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert float(x.grad[0, 1000:].abs().sum()) > 0


def test_griffin_lim_rebuilds_the_spectrum_of_a_chord() -> None:
    front = MelFrontEnd()
    x = sine(261.63) + sine(329.63) + sine(392.0)
    log_mel = front(x)
    wave = front.griffin_lim(log_mel, iterations=32, generator=torch.Generator().manual_seed(1),
                             length=x.shape[-1])
    assert wave.shape == x.shape
    rebuilt = front(wave)
    loud = log_mel > log_mel.max() - 4.0                          # within ~35 dB of the peak
    assert float((rebuilt - log_mel)[loud].abs().mean()) < 0.5
    again = front.griffin_lim(log_mel, iterations=32, length=x.shape[-1],
                              generator=torch.Generator().manual_seed(1))
    assert torch.equal(wave, again)                               # seeded


def test_bad_settings_fail_with_the_value_and_the_fix() -> None:
    with pytest.raises(InputError, match=r"n_mels=256 bands are empty.*fewer mels"):
        MelConfig(n_fft=256, n_mels=256)
    with pytest.raises(InputError, match=r"f_max_hz=9000.*Nyquist"):
        MelConfig(f_max_hz=9000.0)
    with pytest.raises(InputError, match=r"hop=0"):
        MelConfig(hop=0)
    with pytest.raises(InputError, match=r"scale='bark'"):
        MelConfig(scale="bark")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"100 samples is too short.*pad it"):
        MelFrontEnd()(torch.zeros(100))
    assert MelConfig.from_dict(MelConfig().to_dict()) == MelConfig()
    with pytest.raises(InputError, match="unknown fields"):
        MelConfig.from_dict({"hop_ms": 10})
