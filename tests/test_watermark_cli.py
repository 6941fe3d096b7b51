"""``harmonycloak watermark keygen | embed | detect`` end to end on a synthetic file."""

from __future__ import annotations

import json
import os
import stat

import pytest
import soundfile as sf

from harmonycloak.cli.app import main


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    from conftest import music_like

    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, music_like(44100, 2, 7.0, seed=11).T, 44100, subtype="PCM_16")
    return path


def test_keygen_embed_detect_json(tmp_path, song, capsys):
    key = tmp_path / "artist.key"
    code, out, err = run(["watermark", "keygen", "-o", str(key), "--json"], capsys)
    assert code == 0
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert json.loads(out)["key_id"] in err

    marked = tmp_path / "marked.mp3"
    code, out, _ = run(["watermark", "embed", str(song), "-o", str(marked), "--key", str(key),
                        "--payload", "00000001ABCD", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["verified"] is True and report["payload"] == "00000001abcd"

    code, out, _ = run(["watermark", "detect", str(marked), "--key", str(key), "--json"], capsys)
    assert code == 0
    found = json.loads(out)
    assert out.count("\n") == 1
    for field in ("detected", "payload", "false_alarm_probability", "bit_errors", "offset_s"):
        assert field in found
    assert found["detected"] is True
    assert found["payload"] == "00000001abcd"
    assert found["track_id"] == "00000001" and found["issuer_id"] == "abcd"
    assert found["false_alarm_probability"] <= 1e-6
    assert isinstance(found["bit_errors"], int)

    # the original carries no mark: detected false, exit code still 0
    code, out, _ = run(["watermark", "detect", str(song), "--key", str(key), "--json"], capsys)
    assert code == 0
    found = json.loads(out)
    assert found["detected"] is False and found["payload"] is None


def test_keygen_refuses_to_overwrite(tmp_path, capsys):
    key = tmp_path / "k.json"
    assert run(["watermark", "keygen", "-o", str(key)], capsys)[0] == 0
    before = key.read_bytes()
    code, out, err = run(["watermark", "keygen", "-o", str(key)], capsys)
    assert code == 2 and "--force" in err and out == ""
    assert key.read_bytes() == before
    assert run(["watermark", "keygen", "-o", str(key), "--force"], capsys)[0] == 0
    assert key.read_bytes() != before


@pytest.mark.parametrize("payload", ["123", "00000001abcdef", "zzzzzzzzzzzz"])
def test_bad_payload_exits_2_with_one_line(tmp_path, song, payload, capsys):
    key = tmp_path / "k.json"
    run(["watermark", "keygen", "-o", str(key)], capsys)
    code, out, err = run(["watermark", "embed", str(song), "-o", str(tmp_path / "o.wav"),
                          "--key", str(key), "--payload", payload], capsys)
    assert code == 2 and out == ""
    assert "--payload must be 12 hex digits, e.g. 00000001abcd" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.wav").exists()


def test_missing_or_bad_key_exits_2(tmp_path, song, capsys):
    missing = tmp_path / "nope.key"
    code, out, err = run(["watermark", "detect", str(song), "--key", str(missing)], capsys)
    assert code == 2 and out == "" and str(missing) in err and "Traceback" not in err
    bad = tmp_path / "bad.key"
    bad.write_text("{}")
    code, _, err = run(["watermark", "detect", str(song), "--key", str(bad)], capsys)
    assert code == 2 and str(bad) in err


def test_detect_human_output(tmp_path, song, capsys):
    key = tmp_path / "k.json"
    run(["watermark", "keygen", "-o", str(key)], capsys)
    code, out, _ = run(["watermark", "detect", str(song), "--key", str(key)], capsys)
    assert code == 0 and "not found" in out
