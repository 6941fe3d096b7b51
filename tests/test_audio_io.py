"""load_audio / save_audio / atomic_write: formats, validation messages, atomicity."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from harmonycloak.clip import AudioClip
from harmonycloak.errors import CodecError, InputError
from harmonycloak.io import audio, codecs
from harmonycloak.io.audio import (
    SUPPORTED_AUDIO_SUFFIXES,
    WRITABLE_AUDIO_SUFFIXES,
    load_audio,
    save_audio,
)
from harmonycloak.io.files import atomic_write, check_input_file

LOSSY_RATES = {".mp3": [22050, 44100, 48000], ".ogg": [22050, 44100, 48000],
               ".m4a": [22050, 44100, 48000], ".opus": [16000, 24000, 48000]}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantized(x: np.ndarray, bits: int) -> np.ndarray:
    scale = 2.0 ** (bits - 1)
    codes = np.clip(np.round(x.astype(np.float64) * scale), -scale, scale - 1)
    return (codes / scale).astype(np.float32)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture
def song(make_music) -> AudioClip:
    return AudioClip(make_music(44100, 2, 1.0), 44100)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("rate_hz", [8000, 22050, 44100, 48000, 192000])
@pytest.mark.parametrize("channels", [1, 2, 16])
def test_wav_roundtrip_is_exact_to_the_24_bit_step(tmp_path, make_music, rate_hz, channels):
    x = make_music(rate_hz, channels, 0.2)
    path = save_audio(AudioClip(x, rate_hz), tmp_path / "out.wav")
    clip = load_audio(path)
    assert clip.samples.shape == x.shape and clip.samples.dtype == np.float32
    assert clip.sample_rate_hz == rate_hz
    assert clip.source == str(path)
    assert np.array_equal(clip.samples, quantized(x, 24))
    assert sf.info(str(path)).subtype == "PCM_24"


@pytest.mark.parametrize("rate_hz", [8000, 22050, 44100, 48000, 192000])
@pytest.mark.parametrize("channels", [1, 2, 8])
@pytest.mark.parametrize(("subtype", "bits"), [("PCM_16", 16), ("PCM_24", 24)])
def test_flac_roundtrip_is_exact(tmp_path, make_music, rate_hz, channels, subtype, bits):
    x = make_music(rate_hz, channels, 0.2)
    path = save_audio(AudioClip(x, rate_hz), tmp_path / "out.flac", subtype=subtype)
    clip = load_audio(path)
    assert clip.samples.shape == x.shape and clip.sample_rate_hz == rate_hz
    assert np.array_equal(clip.samples, quantized(x, bits))


def test_flac_refuses_more_than_8_channels(tmp_path, make_music):
    clip = AudioClip(make_music(44100, 16, 0.1), 44100)
    target = tmp_path / "many.flac"
    with pytest.raises(InputError) as caught:
        save_audio(clip, target)
    assert str(caught.value) == (
        f"{target}: FLAC holds at most 8 channels, this audio has 16; "
        "save as .wav (or .flac up to 8 channels) or mix down first"
    )
    assert not target.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", sorted(LOSSY_RATES))
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate_index", [0, 1, 2])
def test_lossy_roundtrip_is_aligned_and_close(tmp_path, make_music, lag_of, suffix, channels,
                                              rate_index):
    rate_hz = LOSSY_RATES[suffix][rate_index]
    x = make_music(rate_hz, channels, 1.0)
    path = save_audio(AudioClip(x, rate_hz), tmp_path / f"out{suffix}")
    clip = load_audio(path)
    assert clip.samples.shape == x.shape, "encoder delay/padding must be removed"
    assert clip.sample_rate_hz == rate_hz
    for ch in range(channels):
        lag, match = lag_of(x[ch], clip.samples[ch], max_lag=4096)
        assert lag == 0 and match > 0.9


@pytest.mark.parametrize("suffix", [".mp3", ".m4a", ".opus", ".ogg"])
def test_lossy_file_equals_the_in_memory_roundtrip(tmp_path, make_music, suffix):
    """save+load goes through the same codec as codecs.roundtrip (after clipping)."""
    x = make_music(48000, 2, 0.5)
    codec = {".mp3": "mp3", ".m4a": "aac", ".opus": "opus", ".ogg": "vorbis"}[suffix]
    clip = load_audio(save_audio(AudioClip(x, 48000), tmp_path / f"a{suffix}", bitrate_kbps=128))
    expected = codecs.roundtrip(x, 48000, codec=codec, bitrate_kbps=128)
    assert np.allclose(clip.samples, expected, atol=1e-4)


def test_opus_in_an_ogg_named_file_loads(tmp_path, make_music):
    x = make_music(48000, 2, 0.5)
    opus = save_audio(AudioClip(x, 48000), tmp_path / "a.opus")
    renamed = tmp_path / "a.ogg"
    renamed.write_bytes(opus.read_bytes())
    assert load_audio(renamed).samples.shape == x.shape


def test_adts_aac_loads_with_its_priming(tmp_path, make_music):
    """Raw ADTS states no encoder delay, so the 1024 priming samples stay (documented)."""
    x = make_music(44100, 2, 0.5)
    path = tmp_path / "a.aac"
    with av.open(str(path), "w", format="adts") as container:
        stream = container.add_stream("aac", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    clip = load_audio(path)
    assert clip.channels == 2 and clip.num_samples >= x.shape[1] + 1024


def test_mono_option_averages_channels(tmp_path, make_music):
    x = make_music(44100, 2, 0.2)
    path = save_audio(AudioClip(x, 44100), tmp_path / "s.wav", subtype="FLOAT")
    clip = load_audio(path, mono=True)
    assert clip.samples.shape == (1, x.shape[1])
    assert np.allclose(clip.samples[0], x.mean(axis=0), atol=1e-7)


def test_one_sample_and_silence_are_valid(tmp_path):
    one = save_audio(AudioClip(np.full((2, 1), 0.25, np.float32), 44100), tmp_path / "one.wav")
    assert load_audio(one).samples.shape == (2, 1)
    silent = save_audio(AudioClip(np.zeros((1, 4410), np.float32), 22050), tmp_path / "z.flac")
    assert not load_audio(silent).samples.any()


def test_load_and_save_leave_the_input_byte_identical(tmp_path, song):
    source = save_audio(song, tmp_path / "in.flac")
    before = digest(source)
    clip = load_audio(source)
    for suffix in WRITABLE_AUDIO_SUFFIXES:
        out = clip
        if suffix == ".opus":
            out = clip.with_samples(codecs.resample(clip.samples, 44100, 48000), 48000)
        save_audio(out, tmp_path / f"out{suffix}")
    assert digest(source) == before


def test_supported_suffixes():
    assert set(WRITABLE_AUDIO_SUFFIXES) <= set(SUPPORTED_AUDIO_SUFFIXES)
    assert {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4"} == set(
        SUPPORTED_AUDIO_SUFFIXES
    )


# --- WAV sample formats ----------------------------------------------------------------------


@pytest.mark.parametrize(("subtype", "bits"), [("PCM_16", 16), ("PCM_24", 24), ("PCM_32", 32)])
def test_integer_wav_codes_are_what_we_wrote(tmp_path, make_music, subtype, bits):
    x = make_music(44100, 3, 0.2)
    path = save_audio(AudioClip(x, 44100), tmp_path / "i.wav", subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    codes, _ = sf.read(str(path), dtype="int32", always_2d=True)  # left-aligned in 32 bits
    expected = np.round(x.T.astype(np.float64) * 2.0 ** (bits - 1)).astype(np.int64)
    assert np.array_equal(codes.astype(np.int64) >> (32 - bits), expected)
    step = 2.0 ** -(bits - 1)
    assert np.max(np.abs(load_audio(path).samples - x)) <= step / 2 + 1e-7


@pytest.mark.parametrize(("subtype", "dtype"), [("FLOAT", np.float32), ("DOUBLE", np.float64)])
def test_float_wav_reads_back_exactly_and_keeps_overs(tmp_path, make_music, subtype, dtype):
    x = make_music(44100, 2, 0.2) * 3  # peaks at 1.5: float formats do not clip
    path = save_audio(AudioClip(x, 44100), tmp_path / "f.wav", subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    assert np.array_equal(load_audio(path).samples, x)


@pytest.mark.parametrize(
    ("subtype", "dtype", "scale"),
    [("PCM_16", np.int16, 2.0**15), ("PCM_24", np.int32, 2.0**31), ("PCM_32", np.int32, 2.0**31),
     ("FLOAT", np.float32, 1.0), ("DOUBLE", np.float64, 1.0)],
)
def test_reads_wavs_written_by_other_tools(tmp_path, subtype, dtype, scale):
    rng = np.random.default_rng(1)
    if scale == 1.0:
        frames = rng.uniform(-1, 1, (500, 4)).astype(dtype)
    else:
        frames = rng.integers(-(2**15), 2**15, (500, 4)).astype(dtype) * int(scale // 2**15)
    path = tmp_path / "other.wav"
    sf.write(str(path), frames, 32000, subtype=subtype)
    clip = load_audio(path)
    assert clip.samples.shape == (4, 500) and clip.sample_rate_hz == 32000
    assert np.array_equal(clip.samples, (frames.T / scale).astype(np.float32))


def test_integer_load_then_save_is_lossless(tmp_path, make_music):
    first = save_audio(AudioClip(make_music(48000, 2, 0.3), 48000), tmp_path / "a.wav",
                       subtype="PCM_16")
    second = save_audio(load_audio(first), tmp_path / "b.wav", subtype="PCM_16")
    first_codes, _ = sf.read(str(first), dtype="int16")
    second_codes, _ = sf.read(str(second), dtype="int16")
    assert np.array_equal(first_codes, second_codes)


def test_integer_and_lossy_formats_clip(tmp_path):
    x = np.array([[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]], np.float32)
    codes, _ = sf.read(str(save_audio(AudioClip(x, 8000), tmp_path / "c.wav", subtype="PCM_16")),
                       dtype="int16")
    assert codes.tolist() == [-32768, -32768, -16384, 0, 16384, 32767, 32767]
    loud = AudioClip(np.full((1, 48000), 3.0, np.float32) * np.sin(np.arange(48000) / 10.0)
                     .astype(np.float32), 48000)
    decoded = load_audio(save_audio(loud, tmp_path / "c.opus"))
    assert np.max(np.abs(decoded.samples)) < 1.3  # clipped to +-1 before encoding


@pytest.mark.parametrize("suffix", WRITABLE_AUDIO_SUFFIXES)
def test_saved_bytes_are_deterministic(tmp_path, make_music, suffix):
    clip = AudioClip(make_music(48000, 2, 0.3), 48000)
    first = save_audio(clip, tmp_path / f"a{suffix}")
    second = save_audio(clip, tmp_path / f"b{suffix}")
    assert first.read_bytes() == second.read_bytes()


def test_float_wav_bytes_do_not_depend_on_the_clock(tmp_path, song):
    first = save_audio(song, tmp_path / "a.wav", subtype="FLOAT")
    time.sleep(1.05)  # libsndfile stamps the PEAK chunk with the time in seconds
    second = save_audio(song, tmp_path / "b.wav", subtype="FLOAT")
    assert first.read_bytes() == second.read_bytes()


def test_default_bitrates_and_bitrate_choice(tmp_path, make_music):
    duration_s = 3.0
    clip = AudioClip(make_music(48000, 2, duration_s), 48000)
    for suffix, kbps in [(".mp3", 192), (".m4a", 192), (".opus", 128)]:
        size = save_audio(clip, tmp_path / f"d{suffix}").stat().st_size
        assert size * 8 / duration_s / 1000 == pytest.approx(kbps, rel=0.10)
    size = save_audio(clip, tmp_path / "d.ogg").stat().st_size
    assert size * 8 / duration_s / 1000 == pytest.approx(160, rel=0.25)
    size = save_audio(clip, tmp_path / "e.mp3", bitrate_kbps=96).stat().st_size
    assert size * 8 / duration_s / 1000 == pytest.approx(96, rel=0.10)


def test_default_bitrate_is_clamped_to_what_the_rate_allows(tmp_path, make_music):
    clip = AudioClip(make_music(8000, 1, 1.0), 8000)
    assert load_audio(save_audio(clip, tmp_path / "low.mp3")).num_samples == 8000
    assert load_audio(save_audio(clip, tmp_path / "low.ogg")).num_samples == 8000


# --- bad inputs ----------------------------------------------------------------------------


def assert_input_error(path: Path, *fragments: str) -> str:
    with pytest.raises(InputError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    assert caught.value.exit_code == 2
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    assert assert_input_error(path) == (
        f"{path}: does not exist; check the path and the file name"
    )


def test_folder_given(tmp_path):
    assert assert_input_error(tmp_path) == (
        f"{tmp_path}: is a folder, not an audio file; give the path of a file"
    )


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert assert_input_error(path) == (
        f"{path}: file is empty (0 bytes); export it again as WAV, FLAC or MP3"
    )


@pytest.mark.parametrize("name", ["notes.wav", "notes.mp3", "notes.m4a", "notes.flac"])
def test_text_file_named_like_audio(tmp_path, name):
    path = tmp_path / name
    path.write_text("these are my lyrics, not audio\n" * 40)
    assert_input_error(
        path, "is not a readable audio file (", "); export it again as WAV, FLAC or MP3"
    )


NOT_RECOGNISED = (
    "is not a readable audio file (no decoder recognised its contents); "
    "export it again as WAV, FLAC or MP3"
)


def test_text_file_message_says_no_decoder_recognised_it(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("plain text\n" * 40)
    assert assert_input_error(path) == f"{path}: {NOT_RECOGNISED}"


@pytest.mark.parametrize("suffix", [".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac"])
def test_random_bytes_are_not_blamed_on_a_missing_file(tmp_path, suffix):
    # libsndfile's MP3 reader used to answer "File does not exist or is not a regular file
    # (possibly a pipe?)" for an existing regular file it cannot parse.
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    message = assert_input_error(path, "is not a readable audio file (")
    assert "does not exist" not in message and "regular file" not in message
    if suffix in (".mp3", ".wav", ".m4a"):  # FFmpeg may guess a format by name for the rest
        assert message == f"{path}: {NOT_RECOGNISED}"


def test_informative_decoder_reasons_are_kept(tmp_path):
    path = tmp_path / "header-only.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 10)  # a WAV header, no data chunk
    assert assert_input_error(path) == (
        f"{path}: is not a readable audio file (Error in WAV file. No 'data' chunk marker); "
        "export it again as WAV, FLAC or MP3"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    path = tmp_path / "song.wav"
    os.mkfifo(path)
    assert assert_input_error(path) == (
        f"{path}: is not a regular file (a pipe, socket or device); "
        "save its content to a file and give that file"
    )


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_flac_is_refused(tmp_path, make_music, keep):
    whole = save_audio(AudioClip(make_music(44100, 2, 1.0), 44100), tmp_path / "whole.flac")
    data = whole.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: int(len(data) * keep)])  # mid-frame
    assert_input_error(cut, "is truncated or damaged (",
                       "); export it again or restore it from a backup")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.999])
def test_truncated_mp3_is_refused(tmp_path, make_music, keep):
    whole = save_audio(AudioClip(make_music(44100, 2, 1.0), 44100), tmp_path / "whole.mp3")
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: int(len(data) * keep)])
    message = assert_input_error(cut, "is truncated or damaged (decoded ",
                                 " samples its header promises)")
    assert "of the 44100 samples" in message


def test_truncated_m4a_is_refused(tmp_path, make_music):
    whole = save_audio(AudioClip(make_music(44100, 2, 1.0), 44100), tmp_path / "whole.m4a")
    data = whole.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert_input_error(cut, "is truncated or damaged (")


def test_truncated_opus_is_refused(tmp_path, make_music):
    whole = save_audio(AudioClip(make_music(48000, 2, 1.0), 48000), tmp_path / "whole.opus")
    data = whole.read_bytes()
    cut = tmp_path / "cut.opus"
    cut.write_bytes(data[: len(data) // 2])
    assert_input_error(cut, "is truncated or damaged (")


def test_vorbis_cut_between_pages_loads_what_it_has(tmp_path, make_music):
    """Ogg states no total length up front (documented): the pages present load."""
    whole = save_audio(AudioClip(make_music(44100, 2, 1.0), 44100), tmp_path / "whole.ogg")
    data = whole.read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(data[: len(data) // 2])
    assert 0 < load_audio(cut).num_samples < 44100


def test_mp3_without_length_header_loads_what_it_has(tmp_path, make_music):
    """No Xing/Info header: a cut file is indistinguishable from a shorter song."""
    x = make_music(44100, 2, 1.0)
    path = tmp_path / "plain.mp3"
    with av.open(str(path), "w", format="mp3", options={"write_xing": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=44100, layout="stereo")
        stream.bit_rate = 128000
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    clip = load_audio(path)
    assert 0.3 * 44100 < clip.num_samples < 0.7 * 44100


def test_wav_cut_inside_its_data_loads_the_whole_samples(tmp_path, make_music):
    whole = save_audio(AudioClip(make_music(44100, 2, 1.0), 44100), tmp_path / "w.wav",
                       subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) - 1001])  # 250 frames and a half gone
    assert load_audio(cut).num_samples == 44100 - 251


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_samples(tmp_path, bad):
    frames = np.zeros((1000, 2), np.float32)
    frames[441, 1] = bad
    frames[900, 0] = bad
    path = tmp_path / "bad.wav"
    sf.write(str(path), frames, 44100, subtype="FLOAT")
    assert assert_input_error(path) == (
        f"{path}: contains NaN/infinite samples at 0.010 s (sample 441, channel 1; "
        "2 bad samples in all); re-export it"
    )


def write_wav_header(path: Path, channels: int, rate_hz: int, data: bytes = b"") -> None:
    bits = 16
    fmt = struct.pack("<HHIIHH", 1, channels, rate_hz, rate_hz * channels * bits // 8,
                      channels * bits // 8, bits)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_zero_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    write_wav_header(path, 2, 44100)
    assert assert_input_error(path) == (
        f"{path}: contains no audio (2 channels, 0 samples); export it again as WAV, FLAC or MP3"
    )


def test_zero_channels(tmp_path):
    path = tmp_path / "nochannels.wav"
    write_wav_header(path, 0, 44100, bytes(100))
    assert_input_error(path, "contains no audio (0 channels")


@pytest.mark.parametrize("rate_hz", [4000, 7999, 192001, 384000])
def test_sample_rate_out_of_range(tmp_path, rate_hz):
    path = tmp_path / "rate.wav"
    write_wav_header(path, 1, rate_hz, bytes(200))
    assert assert_input_error(path) == (
        f"{path}: sample rate {rate_hz} Hz is outside the supported 8000-192000 Hz; "
        "resample it (e.g. to 44100 Hz) first"
    )


@pytest.mark.parametrize("rate_hz", [8000, 192000])
def test_sample_rate_limits_are_inclusive(tmp_path, rate_hz):
    path = tmp_path / "edge.wav"
    write_wav_header(path, 1, rate_hz, bytes(200))
    assert load_audio(path).sample_rate_hz == rate_hz


# --- bad outputs ----------------------------------------------------------------------------


def assert_save_error(clip: AudioClip, target: Path, expected: str, **options) -> None:
    with pytest.raises(InputError) as caught:
        save_audio(clip, target, **options)
    assert str(caught.value) == expected
    assert not target.exists()
    assert leftovers(target.parent if target.parent.exists() else Path(".")) == []


def test_unknown_suffix_lists_the_supported(tmp_path, song):
    target = tmp_path / "song.aiff"
    assert_save_error(song, target, f"{target}: unknown audio format '.aiff'; "
                      "use one of .wav, .flac, .mp3, .ogg, .opus, .m4a")
    bare = tmp_path / "song"
    assert_save_error(song, bare, f"{bare}: no file extension; "
                      "use one of .wav, .flac, .mp3, .ogg, .opus, .m4a")


def test_mp3_holds_two_channels(tmp_path, make_music):
    target = tmp_path / "wide.mp3"
    assert_save_error(AudioClip(make_music(44100, 16, 0.1), 44100), target,
                      f"{target}: MP3 holds at most 2 channels, this audio has 16; "
                      "save as .wav (or .flac up to 8 channels) or mix down first")


def test_opus_rate_message(tmp_path, song):
    target = tmp_path / "song.opus"
    assert_save_error(song, target, f"{target}: sample rate 44100 Hz is not supported by Opus; "
                      "use 8/12/16/24/48 kHz (resample first)")


def test_mp3_rate_message(tmp_path, make_music):
    target = tmp_path / "hi.mp3"
    assert_save_error(AudioClip(make_music(96000, 2, 0.1), 96000), target,
                      f"{target}: sample rate 96000 Hz is not supported by MP3; "
                      "use 8/11.025/12/16/22.05/24/32/44.1/48 kHz (resample first)")


def test_bitrate_out_of_range(tmp_path, song):
    target = tmp_path / "song.mp3"
    assert_save_error(song, target, f"{target}: bitrate 400 kbps is not supported by MP3 at "
                      "44100 Hz stereo; use 32-320 kbps", bitrate_kbps=400)


def test_options_that_do_not_apply(tmp_path, song):
    wav = tmp_path / "song.wav"
    assert_save_error(song, wav, f"{wav}: a bitrate only applies to lossy formats (.mp3, .ogg, "
                      ".opus, .m4a); leave it out for .wav", bitrate_kbps=128)
    mp3 = tmp_path / "song.mp3"
    assert_save_error(song, mp3, f"{mp3}: a subtype only applies to .wav and .flac; leave it out "
                      "for .mp3 (choose a bitrate instead)", subtype="PCM_16")
    flac = tmp_path / "song.flac"
    assert_save_error(song, flac, f"{flac}: sample format 'FLOAT' is not available for FLAC; "
                      "use one of PCM_16, PCM_24", subtype="FLOAT")


def test_lowercase_subtype_is_accepted(tmp_path, song):
    path = save_audio(song, tmp_path / "s.wav", subtype="pcm_16")
    assert sf.info(str(path)).subtype == "PCM_16"


def test_empty_or_non_finite_clip_is_not_written(tmp_path):
    target = tmp_path / "x.wav"
    assert_save_error(AudioClip(np.zeros((2, 0), np.float32), 44100), target,
                      f"{target}: the audio to write is empty (0 samples); nothing was written")
    samples = np.zeros((1, 100), np.float32)
    samples[0, 50] = np.nan
    assert_save_error(AudioClip(samples, 1000), target,
                      f"{target}: the audio to write contains NaN/infinite samples at 0.050 s "
                      "(sample 50, channel 0; 1 bad samples in all); nothing was written")


# --- atomic writes ------------------------------------------------------------------------


def test_existing_output_needs_force(tmp_path, song):
    target = tmp_path / "out.wav"
    target.write_bytes(b"precious")
    with pytest.raises(InputError) as caught:
        save_audio(song, target)
    assert str(caught.value) == f"{target} already exists; use --force to replace it"
    assert target.read_bytes() == b"precious"
    save_audio(song, target, force=True)
    assert load_audio(target).samples.shape == song.samples.shape
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("force", [False, True])
def test_refuses_to_overwrite_its_own_source(tmp_path, song, force):
    source = save_audio(song, tmp_path / "in.wav")
    before = digest(source)
    clip = load_audio(source)
    for spelling in [source, tmp_path / "sub" / ".." / "in.wav"]:
        with pytest.raises(InputError) as caught:
            save_audio(clip, spelling, force=force)
        assert str(caught.value) == (
            f"{spelling}: would overwrite the input; choose another output name"
        )
    link = tmp_path / "link.wav"
    link.symlink_to(source)
    with pytest.raises(InputError, match="would overwrite the input"):
        save_audio(clip, link, force=force)
    assert digest(source) == before


def test_creates_missing_folders(tmp_path, song):
    target = tmp_path / "out" / "deeper" / "song.flac"
    assert save_audio(song, target) == target
    assert target.exists()


def test_folder_as_output(tmp_path, song):
    folder = tmp_path / "song.wav"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder; give a file name for the output"):
        save_audio(song, folder, force=True)


def test_failing_writer_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half of the new conten")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, half_then_fail, force=True)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_failing_encoder_leaves_old_file_and_no_temp(tmp_path, song, monkeypatch):
    target = tmp_path / "song.mp3"
    target.write_bytes(b"old mp3")

    def broken_encode(x, rate, tmp, **options):
        Path(tmp).write_bytes(b"partial")
        raise CodecError("the MP3 encoder failed (simulated)")

    monkeypatch.setattr(audio.codecs, "encode", broken_encode)
    with pytest.raises(CodecError, match=f"{target}: the MP3 encoder failed"):
        save_audio(song, target, force=True)
    assert target.read_bytes() == b"old mp3"
    assert leftovers(tmp_path) == []


def test_atomic_write_uses_a_hidden_sibling_with_the_suffix(tmp_path):
    seen: list[Path] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("new")

    result = atomic_write(tmp_path / "a.mid", writer)
    assert result == tmp_path / "a.mid" and result.read_text() == "new"
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".a.mid.tmp-") and seen[0].suffix == ".mid"
    assert not seen[0].exists()


def test_atomic_write_turns_os_errors_into_input_errors(tmp_path):
    def denied(tmp: Path) -> None:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(InputError, match=r"cannot write the file \(Permission denied\); check"):
        atomic_write(tmp_path / "x.txt", denied)
    assert leftovers(tmp_path) == []


def test_atomic_write_protects_named_inputs(tmp_path):
    source = tmp_path / "in.mid"
    source.write_text("midi")
    with pytest.raises(InputError, match="would overwrite the input"):
        atomic_write(source, lambda tmp: tmp.write_text("x"), force=True, inputs=[None, source])
    assert source.read_text() == "midi"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions")
def test_unreadable_file(tmp_path, song):
    path = save_audio(song, tmp_path / "locked.wav")
    path.chmod(0)
    try:
        expected = f"{path}: permission denied; check the file's permissions"
        assert assert_input_error(path) == expected
    finally:
        path.chmod(0o644)


def test_check_input_file_is_the_one_input_check(tmp_path):
    good = tmp_path / "take.bin"
    good.write_bytes(b"x")
    assert check_input_file(str(good)) == good
    cases = {
        tmp_path / "nope.wav": "does not exist; check the path and the file name",
        tmp_path: "is a folder, not a file; give the path of a file",
    }
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    cases[empty] = "file is empty (0 bytes); export it again"
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.mp3"
        os.mkfifo(fifo)
        cases[fifo] = "is not a regular file (a pipe, socket or device)"
    for path, fragment in cases.items():
        with pytest.raises(InputError) as caught:
            check_input_file(path)
        assert str(caught.value).startswith(f"{path}: {fragment}")
    with pytest.raises(InputError, match="is a folder, not a MIDI file"):
        check_input_file(tmp_path, what="a MIDI file")
    with pytest.raises(InputError, match=r"\(0 bytes\); record it again$"):
        check_input_file(empty, export_hint="record it again")
