"""The codec channel: alignment, shape, bitrate control, determinism, errors, transforms."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from harmonycloak.errors import CodecError, InputError
from harmonycloak.io import codecs

ROUNDTRIPS = {
    "mp3": codecs.mp3_roundtrip,
    "aac": codecs.aac_roundtrip,
    "opus": codecs.opus_roundtrip,
    "vorbis": codecs.vorbis_roundtrip,
}


def encoded_bytes(x: np.ndarray, rate_hz: int, codec: str, kbps: float) -> bytes:
    buffer = io.BytesIO()
    codecs.encode(x, rate_hz, buffer, codec=codec, bitrate_kbps=kbps)
    return buffer.getvalue()


# --- alignment -------------------------------------------------------------------------


@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("rate_hz", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_roundtrip_is_aligned_by_cross_correlation(make_music, lag_of, codec, rate_hz, channels):
    x = make_music(rate_hz, channels, 1.5)
    y = codecs.roundtrip(x, rate_hz, codec=codec, bitrate_kbps=128)
    assert y.shape == x.shape and y.dtype == np.float32
    for ch in range(channels):
        lag, match = lag_of(x[ch], y[ch], max_lag=4096)
        assert lag == 0, f"{codec} channel {ch} is off by {lag} samples"
        assert match > 0.9
        # the peak is sharp: one sample off already matches worse
        assert np.dot(x[ch], y[ch]) > np.dot(x[ch, 1:], y[ch, :-1])
        assert np.dot(x[ch], y[ch]) > np.dot(x[ch, :-1], y[ch, 1:])


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_named_wrappers_match_the_dispatcher(make_music, codec):
    x = make_music(48000, 2, 0.5)
    via_name = ROUNDTRIPS[codec](x, 48000, bitrate_kbps=96)
    assert np.array_equal(via_name, codecs.roundtrip(x, 48000, codec=codec, bitrate_kbps=96))


@pytest.mark.parametrize("codec", ["mp3", "aac", "opus"])
@pytest.mark.parametrize("num_samples", [1000, 44100, 44101])
def test_decoder_applies_the_stated_delay_and_padding(make_music, codec, num_samples):
    """Without any cutting of ours the decoded length already equals the input length."""
    rate_hz = 48000 if codec == "opus" else 44100
    x = make_music(rate_hz, 2, num_samples / rate_hz)
    decoded = codecs.decode(io.BytesIO(encoded_bytes(x, rate_hz, codec, 128)))
    assert decoded.samples.shape == x.shape
    assert decoded.sample_rate_hz == rate_hz


def test_mp3_lame_tag_states_delay_and_padding(make_music):
    x = make_music(44100, 2, 1.0)
    data = encoded_bytes(x, 44100, "mp3", 128)
    info = data.find(b"Info")
    assert info > 0, "LAME writes an Info (CBR Xing) frame"
    frames = struct.unpack(">I", data[info + 8:info + 12])[0]
    lame = info + 120  # 'Info', flags, frames, bytes, 100-byte TOC, quality
    packed = int.from_bytes(data[lame + 21:lame + 24], "big")
    delay, padding = packed >> 12, packed & 0xFFF
    assert delay > 0
    assert frames * 1152 - delay - padding == x.shape[1]


def test_opus_header_states_pre_skip_and_end(make_music):
    x = make_music(48000, 2, 1.0)
    data = encoded_bytes(x, 48000, "opus", 128)
    head = data.find(b"OpusHead")
    pre_skip = struct.unpack("<H", data[head + 10:head + 12])[0]
    assert pre_skip == 312
    last_page = data.rfind(b"OggS")
    granule = struct.unpack("<q", data[last_page + 6:last_page + 14])[0]
    assert granule - pre_skip == x.shape[1]


def test_aac_edit_list_states_the_priming(make_music):
    x = make_music(44100, 2, 1.0)
    data = encoded_bytes(x, 44100, "aac", 128)
    elst = data.find(b"elst")
    assert elst > 0
    version = data[elst + 4]
    offset = elst + 12 + (8 if version else 4)  # after version/flags, count, duration
    media_time = int.from_bytes(data[offset:offset + (8 if version else 4)], "big", signed=True)
    assert media_time == 1024


@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("num_samples", [1, 7, 1023, 1025, 4801])
def test_odd_lengths_keep_their_shape(make_music, codec, num_samples):
    x = make_music(48000, 2, num_samples / 48000)
    y = codecs.roundtrip(x, 48000, codec=codec, bitrate_kbps=128)
    assert y.shape == x.shape


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_empty_signal_gives_empty_output(codec):
    x = np.zeros((2, 0), dtype=np.float32)
    assert codecs.roundtrip(x, 48000, codec=codec, bitrate_kbps=128).shape == (2, 0)


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_more_than_two_channels_are_coded_in_pairs(make_music, lag_of, codec):
    x = make_music(48000, 5, 1.0)
    y = codecs.roundtrip(x, 48000, codec=codec, bitrate_kbps=128)
    assert y.shape == x.shape
    for ch in range(5):
        lag, match = lag_of(x[ch], y[ch], max_lag=2048)
        assert lag == 0 and match > 0.9
    pair = codecs.roundtrip(x[2:4], 48000, codec=codec, bitrate_kbps=128)
    assert np.array_equal(y[2:4], pair)


@pytest.mark.parametrize("rate_hz", [8000, 16000, 22050, 44100, 96000])
def test_opus_resamples_other_rates_inside(make_music, lag_of, rate_hz):
    x = make_music(rate_hz, 2, 1.0)
    y = codecs.opus_roundtrip(x, rate_hz, bitrate_kbps=96)
    assert y.shape == x.shape
    lag, match = lag_of(x[0], y[0], max_lag=2048)
    assert lag == 0 and match > 0.9


@pytest.mark.parametrize("codec", ["mp3", "aac", "vorbis"])
@pytest.mark.parametrize("rate_hz", [16000, 22050, 32000])
def test_lower_rates_stay_aligned(make_music, lag_of, codec, rate_hz):
    x = make_music(rate_hz, 2, 1.0)
    y = codecs.roundtrip(x, rate_hz, codec=codec, bitrate_kbps=64)
    lag, match = lag_of(x[1], y[1], max_lag=2048)
    assert lag == 0 and match > 0.9


# --- determinism and invariants ---------------------------------------------------------


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_roundtrip_is_deterministic_and_leaves_input_alone(make_music, codec):
    x = make_music(44100, 2, 1.0)
    before = x.copy()
    first = codecs.roundtrip(x, 44100, codec=codec, bitrate_kbps=128)
    second = codecs.roundtrip(x, 44100, codec=codec, bitrate_kbps=128)
    assert np.array_equal(first, second)
    assert np.array_equal(x, before)


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_encoded_bytes_are_deterministic(make_music, codec):
    rate_hz = 48000
    x = make_music(rate_hz, 2, 0.5)
    assert encoded_bytes(x, rate_hz, codec, 128) == encoded_bytes(x, rate_hz, codec, 128)


def test_vorbis_gets_a_fixed_ogg_serial_and_valid_crcs(make_music):
    data = encoded_bytes(make_music(44100, 2, 0.5), 44100, "vorbis", 160)
    pos, pages = 0, 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        assert struct.unpack("<I", data[pos + 14:pos + 18])[0] == 0x48434C4B
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27:pos + 27 + segments])
        page = bytearray(data[pos:end])
        stored = struct.unpack("<I", bytes(page[22:26]))[0]
        page[22:26] = bytes(4)
        assert codecs._ogg_crc(bytes(page)) == stored
        pos, pages = end, pages + 1
    assert pages >= 3


def test_ogg_crc_matches_the_reference_bitwise_crc():
    def slow_crc(data: bytes) -> int:
        crc = 0
        for byte in data:
            crc ^= byte << 24
            for _ in range(8):
                crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
                crc &= 0xFFFFFFFF
        return crc

    sample = bytes(range(256)) * 3 + b"OggS harmonycloak"
    assert codecs._ogg_crc(sample) == slow_crc(sample)


# --- bitrate control ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "rate_hz", "channels", "kbps"),
    [
        ("mp3", 44100, 2, 128), ("mp3", 44100, 2, 320), ("mp3", 22050, 1, 64),
        ("aac", 44100, 2, 128), ("aac", 48000, 2, 256), ("aac", 44100, 1, 96),
        ("opus", 48000, 2, 64), ("opus", 48000, 2, 128), ("opus", 48000, 1, 96),
    ],
)
def test_file_size_matches_the_bitrate(make_music, codec, rate_hz, channels, kbps):
    duration_s = 4.0
    data = encoded_bytes(make_music(rate_hz, channels, duration_s), rate_hz, codec, kbps)
    achieved_kbps = len(data) * 8 / duration_s / 1000
    assert achieved_kbps == pytest.approx(kbps, rel=0.10)


@pytest.mark.parametrize(("rate_hz", "channels", "kbps"), [(44100, 2, 128), (44100, 2, 160),
                                                          (48000, 2, 192), (44100, 1, 96)])
def test_vorbis_size_is_near_the_bitrate(make_music, rate_hz, channels, kbps):
    duration_s = 4.0
    data = encoded_bytes(make_music(rate_hz, channels, duration_s), rate_hz, "vorbis", kbps)
    achieved_kbps = len(data) * 8 / duration_s / 1000
    assert achieved_kbps == pytest.approx(kbps, rel=0.25)


def test_vorbis_level_falls_with_bitrate_and_stays_in_range():
    levels = [codecs.vorbis_compression_level(kbps, 44100, 2) for kbps in (70, 100, 160, 250, 380)]
    assert all(0.0 <= level <= 1.0 for level in levels)
    assert levels == sorted(levels, reverse=True)
    assert codecs.vorbis_compression_level(151.7, 44100, 2) == pytest.approx(0.5, abs=1e-6)


def test_more_bits_mean_less_error(make_music):
    x = make_music(44100, 2, 1.0)
    errors = [np.mean((codecs.mp3_roundtrip(x, 44100, bitrate_kbps=kbps) - x) ** 2)
              for kbps in (64, 128, 256)]
    assert errors[0] > errors[1] > errors[2]


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "rate_hz", "kbps", "expected"),
    [
        ("mp3", 96000, 128, "sample rate 96000 Hz is not supported by MP3; use 8/11.025/12/16/"
                            "22.05/24/32/44.1/48 kHz (resample first)"),
        ("mp3", 44100, 500, "bitrate 500 kbps is not supported by MP3 at 44100 Hz stereo; "
                            "use 32-320 kbps"),
        ("mp3", 22050, 256, "use 8-160 kbps"),
        ("aac", 44100, 1000, "bitrate 1000 kbps is not supported by AAC at 44100 Hz stereo; "
                             "use 32-308 kbps"),
        ("aac", 37800, 128, "sample rate 37800 Hz is not supported by AAC"),
        ("opus", 48000, 600, "bitrate 600 kbps is not supported by Opus at 48000 Hz stereo; "
                             "use 6-510 kbps"),
        ("vorbis", 44100, 20, "bitrate 20 kbps is not supported by Vorbis at 44100 Hz stereo; "
                              "use 63-384 kbps"),
        ("vorbis", 44100, 0, "use 63-384 kbps"),
    ],
)
def test_refused_rates_and_bitrates_raise_codec_error(make_music, codec, rate_hz, kbps, expected):
    x = make_music(rate_hz, 2, 0.1)
    with pytest.raises(CodecError) as caught:
        codecs.roundtrip(x, rate_hz, codec=codec, bitrate_kbps=kbps)
    assert expected in str(caught.value)


def test_unknown_codec_is_named():
    with pytest.raises(CodecError, match="unknown codec 'flac'; use one of mp3, aac, opus, vorbis"):
        codecs.roundtrip(np.zeros((1, 10), np.float32), 44100, codec="flac", bitrate_kbps=128)


def test_opus_file_rate_is_checked_with_the_fix():
    with pytest.raises(CodecError, match=r"sample rate 44100 Hz is not supported by Opus; "
                                         r"use 8/12/16/24/48 kHz \(resample first\)"):
        codecs.check_encodable("opus", 44100, 2, 128)


def test_encode_refuses_too_many_channels():
    with pytest.raises(CodecError, match="MP3 holds 1 to 2 channels, got 3"):
        codecs.encode(np.zeros((3, 100), np.float32), 44100, io.BytesIO(), codec="mp3",
                      bitrate_kbps=128)


def test_decode_of_garbage_is_not_decodable():
    with pytest.raises(codecs.NotDecodableError):
        codecs.decode(io.BytesIO(b"this is plain text, not audio" * 20))


def test_signal_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"\[channels, samples\]"):
        codecs.mp3_roundtrip(np.zeros(100, np.float32), 44100)


# --- resample, gain, lowpass ------------------------------------------------------------


def tone(freq_hz: float, rate_hz: int, duration_s: float = 0.5, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate_hz * duration_s)) / rate_hz
    return np.tile(0.5 * np.sin(2 * np.pi * freq_hz * t), (channels, 1)).astype(np.float32)


@pytest.mark.parametrize(("from_hz", "to_hz"), [(44100, 48000), (48000, 16000), (22050, 44100)])
def test_resample_keeps_time_and_pitch(make_music, lag_of, from_hz, to_hz):
    x = tone(1000.0, from_hz)
    y = codecs.resample(x, from_hz, to_hz)
    assert y.dtype == np.float32 and y.shape[0] == 2
    assert abs(y.shape[1] - x.shape[1] * to_hz / from_hz) <= 1
    expected = tone(1000.0, to_hz)[:, : y.shape[1]]
    middle = slice(100, y.shape[1] - 100)
    assert np.max(np.abs(y[:, middle] - expected[:, middle])) < 1e-3


def test_resample_same_rate_is_a_copy():
    x = tone(440.0, 44100)
    y = codecs.resample(x, 44100, 44100)
    assert np.array_equal(x, y) and y is not x


@pytest.mark.parametrize("via_hz", [8000, 16000, 22050])
def test_resample_roundtrip_keeps_shape_and_removes_the_top(make_music, lag_of, via_hz):
    rate_hz = 44100
    x = make_music(rate_hz, 2, 1.0)
    y = codecs.resample_roundtrip(x, rate_hz, via_hz=via_hz)
    assert y.shape == x.shape
    lag, _ = lag_of(x[0], y[0], max_lag=512)
    assert lag == 0
    high = tone(0.45 * via_hz + 0.05 * rate_hz, rate_hz)
    removed = codecs.resample_roundtrip(high, rate_hz, via_hz=via_hz)
    assert np.max(np.abs(removed[:, 2000:-2000])) < 0.01  # edges: the tone's abrupt start


def test_gain_scales_by_decibels():
    x = tone(440.0, 8000)
    assert np.allclose(codecs.gain(x, gain_db=20 * np.log10(2)), 2 * x, atol=1e-6)
    assert np.allclose(codecs.gain(x, gain_db=-6.0), x * 10 ** (-6 / 20), atol=1e-7)
    assert codecs.gain(x, gain_db=0.0).dtype == np.float32


def test_lowpass_is_zero_phase_and_cuts_high_tones(lag_of):
    rate_hz = 44100
    low, high = tone(500.0, rate_hz), tone(12000.0, rate_hz)
    filtered_low = codecs.lowpass(low, rate_hz, cutoff_hz=4000.0)
    filtered_high = codecs.lowpass(high, rate_hz, cutoff_hz=4000.0)
    assert np.max(np.abs(filtered_low - low)) < 1e-3
    assert np.max(np.abs(filtered_high[:, 500:-500])) < 1e-4
    assert lag_of(low[0], filtered_low[0], max_lag=100)[0] == 0


@pytest.mark.parametrize("num_samples", [1, 2, 10, 60])
def test_lowpass_handles_short_signals(num_samples):
    x = np.ones((2, num_samples), np.float32)
    assert codecs.lowpass(x, 44100, cutoff_hz=1000.0).shape == x.shape


@pytest.mark.parametrize("cutoff_hz", [0.0, -5.0, 22050.0, 30000.0])
def test_lowpass_rejects_cutoffs_outside_nyquist(cutoff_hz):
    with pytest.raises(InputError, match=f"low-pass cutoff {cutoff_hz} Hz must lie between 0"):
        codecs.lowpass(np.zeros((1, 100), np.float32), 44100, cutoff_hz=cutoff_hz)


def test_transforms_leave_their_input_alone(make_music):
    x = make_music(44100, 2, 0.5)
    before = x.copy()
    codecs.resample(x, 44100, 22050)
    codecs.resample_roundtrip(x, 44100, via_hz=16000)
    codecs.gain(x, gain_db=3.0)
    codecs.lowpass(x, 44100, cutoff_hz=5000.0)
    assert np.array_equal(x, before)
