"""The keyed watermark: keys, payload coding, embed/detect behaviour on synthetic music."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.io import codecs
from harmonycloak.watermark import (
    FALSE_ALARM_TARGET,
    Detection,
    WatermarkKey,
    detect,
    embed,
    generate_key,
    load_key,
    parse_payload,
    save_key,
)
from harmonycloak.watermark import coding, scheme
from harmonycloak.watermark.detect import hypothesis_count

PAYLOAD = "00000001abcd"
KEY = WatermarkKey(bytes(range(32)))
OTHER_KEY = WatermarkKey(bytes(range(100, 132)))


@pytest.fixture(scope="module")
def music_44k():
    from conftest import music_like

    return AudioClip(music_like(44100, 2, 8.0, seed=3), 44100)


@pytest.fixture(scope="module")
def marked_44k(music_44k):
    return embed(music_44k, KEY, PAYLOAD)


# --------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------


def test_key_file_round_trip_and_mode_0600(tmp_path):
    key = generate_key()
    path = save_key(key, tmp_path / "my.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["format"] == "harmonycloak-watermark-key"
    assert document["version"] == 1
    assert document["key_id"] == key.key_id
    assert load_key(path) == key
    assert key.secret.hex() not in repr(key)


def test_save_key_refuses_to_overwrite_without_force(tmp_path):
    path = save_key(generate_key(), tmp_path / "k.json")
    with pytest.raises(InputError, match="already exists"):
        save_key(generate_key(), path)
    replacement = generate_key()
    save_key(replacement, path, force=True)
    assert load_key(path) == replacement
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all", "not JSON"),
        ('{"format": "something-else"}', "not a harmonycloak watermark key"),
        ('{"format": "harmonycloak-watermark-key", "version": 99, "secret": "00"}', "version 99"),
        ('{"format": "harmonycloak-watermark-key", "version": 1, "secret": "abcd"}', "64 hex"),
        ('{"format": "harmonycloak-watermark-key", "version": 1, "key_id": "0000000000000000", '
         '"secret": "' + "11" * 32 + '"}', "does not match"),
    ],
)
def test_load_key_rejects_bad_files_naming_them(tmp_path, content, message):
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_key(path)
    assert str(path) in str(info.value)


def test_load_key_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such key file") as info:
        load_key(tmp_path / "nope.key")
    assert "keygen" in str(info.value)


def test_keyed_pattern_is_deterministic_and_key_dependent():
    a, b = scheme.pattern(KEY), scheme.pattern(WatermarkKey(bytes(range(32))))
    c = scheme.pattern(OTHER_KEY)
    assert np.array_equal(a.chip, b.chip) and np.array_equal(a.bit, b.bit)
    assert not np.array_equal(a.chip, c.chip)
    # every coded bit gets 3 or 4 cells per period, chips are balanced
    assert set(np.unique(a.cell_count)) <= {3, 4}
    assert abs(a.chip.mean()) < 0.15


# --------------------------------------------------------------------------------------
# payload coding and the false-alarm bound
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["00000001abcd", "FFFFFFFFFFFF", " 0123456789ab "])
def test_parse_payload_accepts_12_hex_digits(text):
    assert parse_payload(text) == text.strip().lower()


@pytest.mark.parametrize("text", ["", "123", "00000001abcde", "0x000001abcd", "00000001abcg"])
def test_parse_payload_rejects_with_the_expected_form(text):
    with pytest.raises(InputError, match="12 hex digits, e.g. 00000001abcd"):
        parse_payload(text)


def test_viterbi_corrects_noisy_soft_bits():
    rng = np.random.default_rng(0)
    for _ in range(5):
        bits = rng.integers(0, 2, coding.PAYLOAD_BITS).astype(np.uint8)
        code = coding.conv_encode(bits)
        assert code.size == coding.CODED_BITS
        soft = (1.0 - 2.0 * code) + rng.normal(0.0, 0.7, code.size)
        assert np.array_equal(coding.viterbi_decode(soft), bits)
    assert coding.bits_to_hex(coding.hex_to_bits(PAYLOAD)) == PAYLOAD


def test_false_alarm_threshold_meets_the_target():
    hyps = hypothesis_count()
    limit = coding.max_bit_errors(FALSE_ALARM_TARGET, hypotheses=hyps)
    assert 10 <= limit < coding.CODED_BITS // 4
    assert coding.false_alarm_bound(limit, hypotheses=hyps) <= FALSE_ALARM_TARGET
    assert coding.false_alarm_bound(limit + 1, hypotheses=hyps) > FALSE_ALARM_TARGET
    # exact value of the union bound for one hypothesis and no errors: 2^48 / 2^162
    assert math.isclose(coding.false_alarm_bound(0, hypotheses=1), 2.0 ** (48 - 162))


# --------------------------------------------------------------------------------------
# embed / detect
# --------------------------------------------------------------------------------------


def _circular_distance_s(a: float, b: float, period_s: float = scheme.PERIOD_S) -> float:
    d = (a - b) % period_s
    return min(d, period_s - d)


def _assert_found(found: Detection) -> None:
    assert found.detected, found
    assert found.payload == PAYLOAD
    assert found.false_alarm_probability <= FALSE_ALARM_TARGET
    assert found.bit_errors is not None and found.bit_errors <= found.threshold_bit_errors


def test_embed_keeps_shape_rate_and_input(music_44k, marked_44k):
    before = music_44k.samples.copy()
    again = embed(music_44k, KEY, PAYLOAD)
    assert np.array_equal(music_44k.samples, before)
    assert marked_44k.samples.shape == music_44k.samples.shape
    assert marked_44k.samples.dtype == np.float32
    assert marked_44k.sample_rate_hz == 44100
    assert np.array_equal(again.samples, marked_44k.samples)  # deterministic


def test_mark_is_small_and_stays_between_0_5_and_6_khz(music_44k, marked_44k):
    diff = (marked_44k.samples - music_44k.samples).astype(np.float64)
    snr_db = 10 * np.log10(np.sum(music_44k.samples.astype(np.float64) ** 2) / np.sum(diff**2))
    assert snr_db > 10.0
    spectrum = np.abs(np.fft.rfft(diff[0])) ** 2
    freqs = np.fft.rfftfreq(diff.shape[1], 1 / 44100)
    inside = spectrum[(freqs > 400) & (freqs < 7000)].sum()
    assert inside > 0.99 * spectrum.sum()


def test_detects_payload_in_marked_clip(marked_44k):
    found = detect(marked_44k, KEY)
    _assert_found(found)
    assert abs(found.speed - 1.0) <= 0.003
    assert found.offset_s is not None and _circular_distance_s(found.offset_s, 0.0) < 0.02


def test_payload_survives_mp3_64k(marked_44k):
    coded = codecs.mp3_roundtrip(marked_44k.samples, 44100, bitrate_kbps=64)
    _assert_found(detect(AudioClip(coded, 44100), KEY))


def test_crop_is_found_with_its_offset(marked_44k):
    start_s = 1.3
    crop = marked_44k.samples[:, int(start_s * 44100):int((start_s + 5.0) * 44100)]
    found = detect(AudioClip(np.ascontiguousarray(crop), 44100), KEY)
    _assert_found(found)
    expected = (-start_s) % scheme.PERIOD_S  # where the next period begins in the crop
    assert _circular_distance_s(found.offset_s, expected) < 0.02


def test_speed_change_mono_downmix_and_gain(marked_44k):
    faster = codecs.resample(marked_44k.samples, 44100, round(44100 / 1.04))
    found = detect(AudioClip(faster, 44100), KEY)
    _assert_found(found)
    assert abs(found.speed - 1.04) <= 0.004
    mono = (marked_44k.samples.mean(axis=0, keepdims=True) * 0.5).astype(np.float32)
    _assert_found(detect(AudioClip(mono, 44100), KEY))


def test_wrong_key_and_unmarked_audio_are_not_detected(music_44k, marked_44k):
    for clip, key in [(marked_44k, OTHER_KEY), (music_44k, KEY)]:
        found = detect(clip, key)
        assert not found.detected
        assert found.payload is None and found.offset_s is None
        assert found.false_alarm_probability > FALSE_ALARM_TARGET


@pytest.mark.parametrize("kind", ["silence", "white", "sine"])
def test_non_music_is_not_detected(kind):
    rng = np.random.default_rng(7)
    n = 6 * 16000
    if kind == "silence":
        x = np.zeros((1, n), np.float32)
    elif kind == "white":
        x = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    else:
        x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / 16000))[None].astype(np.float32)
    assert not detect(AudioClip(x, 16000), KEY).detected


def test_mono_48k_clip(make_music):
    clip = AudioClip(make_music(48000, 1, 6.0, seed=5), 48000)
    _assert_found(detect(embed(clip, KEY, PAYLOAD), KEY))


@pytest.mark.parametrize(
    ("clip", "kwargs", "message"),
    [
        (AudioClip(np.zeros((1, 8000 * 4), np.float32), 8000), {}, "below the 16000 Hz"),
        (AudioClip(np.zeros((2, 4410), np.float32), 44100), {}, "too short"),
        (AudioClip(np.zeros((2, 44100), np.float32), 44100), {"strength": 0.0}, "strength"),
    ],
)
def test_embed_rejects_bad_input(clip, kwargs, message):
    with pytest.raises(InputError, match=message):
        embed(clip, KEY, PAYLOAD, **kwargs)


def test_embed_rejects_bad_payload(music_44k):
    with pytest.raises(InputError, match="12 hex digits"):
        embed(music_44k, KEY, "xyz")


def test_detect_rejects_non_finite_audio():
    x = np.zeros((1, 16000), np.float32)
    x[0, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        detect(AudioClip(x, 16000), KEY)


def test_marking_a_loud_master_does_not_make_it_clip(make_music):
    loud = make_music(44100, 2, 6.0, seed=9, peak=0.999)
    clip = AudioClip(loud, 44100)
    marked = embed(clip, KEY, PAYLOAD)
    assert np.max(np.abs(marked.samples)) <= 1.0
    _assert_found(detect(marked, KEY))
