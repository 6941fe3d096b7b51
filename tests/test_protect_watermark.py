"""`protect --watermark-key KEY --watermark-payload HEX` on audio: the cloak and the keyed
watermark in one pass (issue 6), through the pipeline and the CLI, with a tiny codec-lm
checkpoint saved to tmp_path and a synthetic music-like clip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import music_like
from harmonycloak.cli.app import main
from harmonycloak.clip import AudioClip
from harmonycloak.config import EngineConfig, preset
from harmonycloak.errors import InputError
from harmonycloak.io.audio import load_audio
from harmonycloak.perturb import budget as budgets
from harmonycloak.perturb.budget import DEFAULT_SPECTRUM_MARGIN_DB
from harmonycloak.pipeline import (
    WATERMARK_ORDERS,
    AudioTargetChoice,
    WatermarkSplit,
    _make_room,
    protect_audio,
)
from harmonycloak.psychoacoustics import masking_threshold
from harmonycloak.psychoacoustics._threads import single_thread
from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget
from harmonycloak.watermark import WatermarkKey, detect, embed, save_key

FAST = replace(preset("light-v1"), engine=EngineConfig(outer_rounds=2, outer_steps=1, inner_steps=3,
                                                       batch_size=2))
PAYLOAD = "00000001ABCD"
MARK_KEYS = {"scheme", "payload", "key_id", "order", "strength", "extra_margin_db", "mark_room",
             "cloak_margin_db", "verification"}
CHECK_KEYS = {"detected", "payload_matches", "bit_errors", "closest_bit_errors",
              "threshold_bit_errors", "false_alarm_probability"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny codec-lm checkpoint, a key file and a 6 s music-like stereo clip at 44.1 kHz."""
    root = tmp_path_factory.mktemp("wm")
    CodecLMTarget(CodecLMConfig.tiny(), seed=0).save(root / "codec-lm")
    key = WatermarkKey(bytes(range(32)))
    save_key(key, root / "artist.key")
    sf.write(root / "song.wav", music_like(44100, 2, 6.0, seed=5).T, 44100, subtype="FLOAT")
    return {"model": root / "codec-lm", "key": root / "artist.key", "song": root / "song.wav",
            "root": root}


@pytest.fixture(scope="module")
def key(setup) -> WatermarkKey:
    return WatermarkKey(bytes(range(32)))


def run(setup, dst: Path, *, src: Path | None = None, watermark=None, split=WatermarkSplit(), **kwargs):
    # one thread here too: module fixtures are built before the per-test fixture runs, and
    # float sums differ in the last bit between thread counts (same bytes need same threads)
    with single_thread():
        return protect_audio(src or setup["song"], dst, config=kwargs.pop("config", FAST),
                             target=AudioTargetChoice("codec-lm", model_dir=str(setup["model"])),
                             seed=kwargs.pop("seed", 0), watermark=watermark,
                             watermark_split=split, **kwargs)


@pytest.fixture(scope="module")
def marked(setup, key, tmp_path_factory) -> tuple[Path, dict]:
    """The song protected and marked with the default split (written once, shared)."""
    out = tmp_path_factory.mktemp("marked") / "song.flac"
    return out, run(setup, out, watermark=(key, PAYLOAD))


# ------------------------------------------------------------------------- pipeline


def test_the_written_file_carries_the_payload(setup, key, marked):
    out, report = marked
    found = detect(load_audio(out), key)
    assert found.detected and found.payload == PAYLOAD.lower()
    clean = load_audio(setup["song"]).samples
    written = load_audio(out).samples
    snr_db = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((written - clean) ** 2.0))
    assert written.shape == clean.shape and 10.0 < snr_db < 40.0    # changed, and only a little
    assert report["verification"]["snr_db"] == pytest.approx(snr_db, abs=0.01)


def test_the_report_records_the_mark_but_never_the_key(setup, key, marked):
    out, report = marked
    mark = report["watermark"]
    assert set(mark) == MARK_KEYS
    split = WatermarkSplit()
    assert (mark["scheme"], mark["payload"], mark["key_id"]) == ("hcwm-1", PAYLOAD.lower(), key.key_id)
    assert (mark["order"], mark["strength"], mark["extra_margin_db"], mark["mark_room"]) == (
        split.order, split.strength, split.extra_margin_db, split.mark_room)
    assert mark["cloak_margin_db"] == DEFAULT_SPECTRUM_MARGIN_DB + split.extra_margin_db
    assert report["perturbation"]["margin_db"] == mark["cloak_margin_db"]
    assert set(mark["verification"]) == {"written", "mp3_64k"}
    for where, check in mark["verification"].items():
        assert set(check) == CHECK_KEYS
        assert check["detected"] and check["payload_matches"], where
        assert 0 <= check["bit_errors"] <= check["threshold_bit_errors"] == 18
        assert check["false_alarm_probability"] < 1e-6
    text = (out.parent / "song.flac.report.json").read_text()
    assert key.secret.hex() not in text                      # the secret stays in the key file
    assert json.loads(text)["watermark"] == mark
    json.dumps(report, allow_nan=False)
    assert report["verification"]["nmr"]["p95_db"] < 0.0     # mark and cloak together stay masked
    assert not any("watermark" in note for note in report["notes"])


def test_both_orders_read_back_and_differ(setup, key, marked, tmp_path):
    out = tmp_path / "cloak-first.flac"
    report = run(setup, out, watermark=(key, PAYLOAD),
                 split=WatermarkSplit(order="cloak-first", mark_room=0.0, extra_margin_db=1.0))
    assert report["watermark"]["order"] == "cloak-first"
    assert report["watermark"]["verification"]["written"]["payload_matches"]
    assert detect(load_audio(out), key).payload == PAYLOAD.lower()
    assert not np.array_equal(load_audio(out).samples, load_audio(marked[0]).samples)


def test_same_seed_same_bytes(setup, key, marked, tmp_path):
    again = tmp_path / "again.flac"
    run(setup, again, watermark=(key, PAYLOAD))
    assert again.read_bytes() == marked[0].read_bytes()


def test_mark_first_marks_the_clean_clip_and_the_margin_shrinks_the_cloak(setup, key, tmp_path):
    """With a large extra margin the cloak has little room: what is left is the mark that
    ``embed`` puts on the clean clip (mark-first), and the key file path works as the key."""
    out = tmp_path / "o.wav"
    report = run(setup, out, watermark=(setup["key"], PAYLOAD),
                 split=WatermarkSplit(order="mark-first", strength=0.6, extra_margin_db=24.0,
                                      mark_room=0.0))
    clean = load_audio(setup["song"])
    expected = embed(clean, key, PAYLOAD, strength=0.6).samples
    written = load_audio(out).samples
    mark = expected - clean.samples
    left = np.sqrt(np.mean((written - expected) ** 2)) / np.sqrt(np.mean(mark ** 2))
    assert 0.0 < left < 0.1, left                          # the cloak: small, but there
    assert report["watermark"]["cloak_margin_db"] == DEFAULT_SPECTRUM_MARGIN_DB + 24.0


def test_too_short_to_read_back_is_reported_not_hidden(setup, key, tmp_path):
    src = tmp_path / "short.wav"
    sf.write(src, music_like(44100, 1, 1.0, seed=2).T, 44100, subtype="FLOAT")
    report = run(setup, tmp_path / "o.wav", src=src, watermark=(key, PAYLOAD))
    check = report["watermark"]["verification"]["written"]
    assert not check["detected"] and not check["payload_matches"] and check["bit_errors"] is None
    assert any("could not be read back" in note for note in report["notes"])


def test_refusals_come_before_any_work(setup, key, tmp_path):
    out = tmp_path / "o.wav"
    with pytest.raises(InputError, match="must be 12 hex digits.*got '12345'"):
        run(setup, out, watermark=(key, "12345"))
    with pytest.raises(InputError, match="no such key file; create one with `harmonycloak watermark keygen"):
        run(setup, out, watermark=(tmp_path / "missing.key", PAYLOAD))
    bad = tmp_path / "bad.key"
    bad.write_text("{}")
    with pytest.raises(InputError, match="is not a harmonycloak watermark key"):
        run(setup, out, watermark=(bad, PAYLOAD))
    with pytest.raises(InputError, match="give a \\(key, payload_hex\\) pair"):
        run(setup, out, watermark=PAYLOAD)
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, music_like(44100, 2, 0.3).T, 44100)
    with pytest.raises(InputError, match=r"tiny\.wav: 0\.30 s is too short to watermark"):
        run(setup, out, src=tiny, watermark=(key, PAYLOAD))
    low = tmp_path / "low.wav"
    sf.write(low, music_like(12000, 1, 2.0).T, 12000)
    with pytest.raises(InputError, match="12000 Hz is below the 16000 Hz the watermark needs"):
        run(setup, out, src=low, watermark=(key, PAYLOAD))
    assert not out.exists() and not (tmp_path / "o.wav.report.json").exists()


@pytest.mark.parametrize("kwargs,fragment", [
    ({"order": "sideways"}, "order='sideways': use one of mark-first, cloak-first"),
    ({"strength": 0.0}, "strength=0.0: use a number in \\(0, 4\\]"),
    ({"extra_margin_db": -1.0}, "extra_margin_db=-1.0: use a number of dB >= 0"),
    ({"extra_margin_db": float("nan")}, "extra_margin_db=nan"),
    ({"mark_room": 1.5}, "mark_room=1.5: use a share in \\[0, 1\\]"),
    ({"mark_room": 0.5, "order": "cloak-first"}, "mark_room=0.5 needs order='mark-first'"),
])
def test_split_validation(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        WatermarkSplit(**kwargs)
    assert set(WATERMARK_ORDERS) == {"mark-first", "cloak-first"}


def test_making_room_lowers_the_cloak_bounds_only_where_the_mark_sits():
    x = torch.from_numpy(music_like(44100, 2, 1.0, seed=3))
    masking = masking_threshold(x, 44100)
    t = torch.arange(44100) / 44100
    reserve = (0.003 * torch.sin(2 * torch.pi * 1000.0 * t)).repeat(2, 1).numpy()
    budget = budgets.masked_spectrum_budget(x, 44100, masking=masking)
    room = _make_room(budget, reserve, masking)
    freqs = torch.fft.rfftfreq(masking.n_fft, 1 / 44100)
    near, far = (freqs > 900) & (freqs < 1100), freqs > 3000
    share = lambda b, sel: float((b.upper[..., sel] ** 2).sum() / (budget.upper[..., sel] ** 2).sum())
    assert share(room, near) < 0.9 and share(room, far) == pytest.approx(1.0, abs=1e-5)
    assert bool((room.upper <= budget.upper).all()) and bool((room.lower <= room.upper).all())
    assert torch.equal(_make_room(budget, np.zeros_like(reserve), masking).upper, budget.upper)

    tones = budgets.dominant_tone_budget(x, 44100, masking=masking)
    quiet = _make_room(tones, x.numpy() * 10 ** (-30 / 20), masking)   # the music, 30 dB down
    cut = tones.upper ** 2 - quiet.upper ** 2
    assert bool((cut[~tones.active] == 0).all()) and float((cut[tones.active] > 0).float().mean()) > 0.9
    assert bool((quiet.upper <= tones.upper).all()) and bool((quiet.lower <= quiet.upper).all())


def test_a_uniform_margin_split_reports_and_reads_back(setup, key, tmp_path):
    report = run(setup, tmp_path / "o.flac", watermark=(key, PAYLOAD),
                 split=WatermarkSplit(strength=0.6, extra_margin_db=2.0, mark_room=0.0))
    assert report["watermark"]["mark_room"] == 0.0
    assert report["perturbation"]["margin_db"] == DEFAULT_SPECTRUM_MARGIN_DB + 2.0
    assert report["watermark"]["verification"]["written"]["payload_matches"]
    assert report["verification"]["nmr"]["p95_db"] < 0.0


# ------------------------------------------------------------------------------ CLI


def test_cli_marks_while_protecting(setup, key, tmp_path, capsys):
    out = tmp_path / "song.protected.wav"
    code = main(["protect", str(setup["song"]), "-o", str(out), "--model", str(setup["model"]),
                 "--preset", "light-v1", "--watermark-key", str(setup["key"]),
                 "--watermark-payload", PAYLOAD])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    line = captured.out.strip()
    assert f"watermark {PAYLOAD.lower()}: written read back (" in line
    assert "mp3_64k read back (" in line
    report = json.loads((tmp_path / "song.protected.wav.report.json").read_text())
    assert report["watermark"]["payload"] == PAYLOAD.lower()
    assert report["watermark"]["key_id"] == key.key_id
    assert detect(AudioClip(load_audio(out).samples, 44100), key).payload == PAYLOAD.lower()


@pytest.mark.parametrize("flags,fragment", [
    (["--watermark-key", "{key}"], "--watermark-key needs --watermark-payload: give both"),
    (["--watermark-payload", PAYLOAD], "--watermark-payload needs --watermark-key: give both"),
    (["--watermark-key", "{key}", "--watermark-payload", "xyz"],
     "--watermark-payload must be 12 hex digits, e.g. 00000001abcd"),
    (["--watermark-key", "{tmp}/nope.key", "--watermark-payload", PAYLOAD], "nope.key: no such key file"),
    (["--watermark-key", "{tmp}/notes.txt", "--watermark-payload", PAYLOAD],
     "notes.txt: is not a watermark key (not JSON)"),
])
def test_cli_refuses_bad_watermark_flags(setup, tmp_path, capsys, flags, fragment):
    src = tmp_path / "song.wav"
    sf.write(src, music_like(44100, 1, 0.5).T, 44100)
    (tmp_path / "notes.txt").write_text("not a key")
    argv = [f.format(key=setup["key"], tmp=tmp_path) for f in flags]
    code = main(["protect", str(src), "-o", str(tmp_path / "o.wav"), "--model", str(setup["model"]), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "o.wav").exists()


def test_cli_refuses_the_flags_for_midi(setup, tmp_path, capsys):
    midi = tmp_path / "a.mid"
    midi.write_bytes(b"MThd")
    code = main(["protect", str(midi), "-o", str(tmp_path / "o.mid"), "--watermark-key", str(setup["key"]),
                 "--watermark-payload", PAYLOAD])
    assert code == 2
    assert "MIDI files cannot carry the audio watermark" in capsys.readouterr().err
