"""SPL calibration and the framed power spectrum (psychoacoustics.calibration)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.psychoacoustics import (
    FULL_SCALE_SPL_DB,
    HANN_ENBW_BINS,
    amplitude_to_spl,
    default_n_fft,
    frame_count,
    frequencies_hz,
    power_spectrum,
    power_to_spl,
    psd_db,
    spl_to_amplitude,
    spl_to_power,
)

RATES = (16000, 44100, 48000)


def sine(freq_hz: float, sample_rate_hz: int, amplitude: float = 1.0, seconds: float = 0.25):
    t = torch.arange(int(seconds * sample_rate_hz), dtype=torch.float64) / sample_rate_hz
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t + 0.3)).to(torch.float32)


@pytest.mark.parametrize("sr", RATES)
def test_full_scale_bin_centred_sine_reads_96_db(sr):
    n_fft = default_n_fft(sr)
    freq = 20 * sr / n_fft  # exactly on bin 20
    spec = psd_db(sine(freq, sr), sr)
    middle = spec[spec.shape[0] // 2]
    assert int(middle.argmax()) == 20
    assert float(middle[20]) == pytest.approx(FULL_SCALE_SPL_DB, abs=0.01)


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("amplitude", [1.0, 0.1, 0.003])
@pytest.mark.parametrize("offset_bins", [0.0, 0.25, 0.5])
def test_sine_level_peak_bin_and_summed(sr, amplitude, offset_bins):
    n_fft = default_n_fft(sr)
    bin_hz = sr / n_fft
    freq = (37 + offset_bins) * bin_hz
    expected = 96.0 + 20.0 * math.log10(amplitude)
    power = power_spectrum(sine(freq, sr, amplitude), sr)
    frame = power[power.shape[0] // 2].double()
    peak = int(frame.argmax())
    peak_db = 96.0 + 10.0 * math.log10(float(frame[peak]))
    # Peak bin: exact on a bin, up to the Hann scalloping loss (1.42 dB) between bins.
    assert expected - 1.5 <= peak_db <= expected + 0.01
    # Summed level: +-2 bins around the peak divided by the Hann ENBW (1.5 bins).
    summed = float(frame[peak - 2 : peak + 3].sum()) / HANN_ENBW_BINS
    assert 96.0 + 10.0 * math.log10(summed) == pytest.approx(expected, abs=0.1)


def test_amplitude_spl_round_trip_and_known_values():
    assert float(amplitude_to_spl(1.0)) == pytest.approx(96.0, abs=1e-5)
    assert float(amplitude_to_spl(0.5)) == pytest.approx(96.0 + 20 * math.log10(0.5), abs=1e-4)
    assert float(spl_to_amplitude(76.0)) == pytest.approx(0.1, rel=1e-5)
    levels = torch.linspace(-40.0, 110.0, 31, dtype=torch.float64)
    assert torch.allclose(amplitude_to_spl(spl_to_amplitude(levels)), levels, atol=1e-6)
    assert torch.allclose(power_to_spl(spl_to_power(levels)), levels, atol=1e-6)
    assert float(amplitude_to_spl(0.0)) == pytest.approx(-104.0)  # floored, not -inf


def test_psd_shape_frames_and_batch_dims():
    sr = 16000
    x = torch.randn(2, 3, 4000) * 0.1
    spec = psd_db(x, sr)
    n_fft = default_n_fft(sr)
    assert spec.shape == (2, 3, frame_count(4000, n_fft // 2), n_fft // 2 + 1)
    assert frame_count(4000, 256) == 1 + 4000 // 256
    assert torch.allclose(spec[1, 2], psd_db(x[1, 2], sr), atol=1e-4)
    assert frequencies_hz(sr, n_fft)[-1] == pytest.approx(sr / 2)


def test_psd_is_differentiable_with_finite_gradients_at_silence():
    x = torch.zeros(1, 2000, requires_grad=True)
    y = torch.zeros(1, 2000)
    y[0, 1000] = 0.5
    xs = (x + y).clone()
    spec = psd_db(xs, 16000)
    spec.sum().backward()
    assert torch.isfinite(spec).all()
    assert torch.isfinite(x.grad).all()
    assert float(spec.detach().min()) == pytest.approx(-104.0, abs=1e-3)


def test_default_n_fft_keeps_bins_near_mpeg_resolution():
    expected = {8000: 256, 16000: 512, 22050: 512, 32000: 1024, 44100: 1024, 48000: 1024,
                96000: 2048, 192000: 4096}  # fmt: skip
    for sr, n in expected.items():
        assert default_n_fft(sr) == n
        assert 25.0 < sr / n <= 50.0


def test_bad_rates_and_inputs_raise_input_error():
    with pytest.raises(InputError, match="7000 Hz"):
        psd_db(torch.zeros(100), 7000)
    with pytest.raises(InputError, match="n_fft"):
        psd_db(torch.zeros(100), 44100, n_fft=256)  # 172 Hz bins
    with pytest.raises(InputError, match="no samples"):
        psd_db(torch.zeros(2, 0), 44100)
    with pytest.raises(InputError, match="floating point"):
        psd_db(torch.zeros(10, dtype=torch.int16), 44100)


def test_audio_clip_input_and_one_sample():
    clip = AudioClip(np.zeros((2, 1), dtype=np.float32), 48000)
    spec = psd_db(clip)
    assert spec.shape == (2, 1, 513)
    assert torch.equal(spec, psd_db(torch.from_numpy(clip.samples), 48000))


def test_sample_rate_limits_are_defined_once_at_the_file_boundary():
    import re
    from pathlib import Path

    import harmonycloak
    from harmonycloak.io import audio, files
    from harmonycloak.psychoacoustics import calibration

    for name in ("MIN_SAMPLE_RATE_HZ", "MAX_SAMPLE_RATE_HZ"):
        assert getattr(calibration, name) is getattr(files, name) is getattr(audio, name)
    package = Path(harmonycloak.__file__).parent
    defining = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"^(MIN|MAX)_SAMPLE_RATE_HZ\s*[:=]", path.read_text(), re.MULTILINE)
    )
    assert defining == ["io/files.py"]
    assert (files.MIN_SAMPLE_RATE_HZ, files.MAX_SAMPLE_RATE_HZ) == (8000, 192000)
    with pytest.raises(InputError, match="outside the supported 8000-192000 Hz"):
        power_spectrum(torch.zeros(100), 7999)


def test_psychoacoustics_does_not_load_the_decoders():
    # layering: psychoacoustics -> io -> clip; the rate limits come from the light io.files
    import subprocess
    import sys

    code = (
        "import sys, harmonycloak.psychoacoustics as p; "
        "print(sorted(m for m in ('harmonycloak.io.audio', 'av', 'soundfile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_full_scale_sine_reads_96_db_in_its_peak_bin_and_97_8_as_three_bins():
    # the numbers the module docstring compares with the dist10 reference encoder
    sr, n_fft = 44100, 1024
    x = sine(93 * sr / n_fft, sr, 1.0, 0.5)
    frame = psd_db(x, sr, n_fft=n_fft)[10].double()
    peak = int(frame.argmax())
    assert peak == 93
    assert float(frame[peak]) == pytest.approx(96.0, abs=0.01)
    three = 10 * torch.log10((10 ** (frame[peak - 1 : peak + 2] / 10)).sum())
    assert float(three) == pytest.approx(96.0 + 10 * math.log10(1.5), abs=0.01)  # 97.76
