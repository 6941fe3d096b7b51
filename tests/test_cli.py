"""The command line: version, exit codes, the error policy, and analyze end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harmonycloak import __version__
from harmonycloak.cli.app import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"harmonycloak {__version__}"


def test_usage_error_exits_2(capsys):
    code, _, err = run(["analyze"], capsys)
    assert code == 2
    assert "Missing argument" in err


def test_unknown_device_exits_2(capsys):
    code, _, err = run(["--device", "tpu", "analyze", "x.wav"], capsys)
    assert code == 2
    assert "--device" in err


def test_missing_file_is_one_plain_line(capsys, tmp_path):
    missing = tmp_path / "nope.wav"
    code, out, err = run(["analyze", str(missing)], capsys)
    assert code == 2
    assert out == ""
    assert str(missing) in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("these are my lyrics, not audio\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harmonycloak", "analyze", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- analyze end to end

def _tone_file(path: Path, *, sample_rate_hz: int = 44_100, seconds: float = 2.0,
               channels: int = 2, freq_hz: float = 440.0, amplitude: float = 0.1,
               subtype: str = "PCM_24") -> Path:
    t = np.arange(int(seconds * sample_rate_hz)) / sample_rate_hz
    tone = amplitude * np.sin(2 * np.pi * freq_hz * t)
    sf.write(path, np.stack([tone] * channels, axis=1), sample_rate_hz, subtype=subtype)
    return path


def _analyze_json(argv: list[str], capsys) -> dict:
    code, out, err = run(["analyze", *argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("sample_rate_hz,channels", [(44_100, 2), (48_000, 1), (16_000, 2)])
def test_analyze_json_reports_the_file(tmp_path, capsys, sample_rate_hz, channels):
    # BS.1770's reference: a 997 Hz sine reads its RMS level (-0.691 dB offset = K gain)
    wav = _tone_file(tmp_path / "a.wav", sample_rate_hz=sample_rate_hz, channels=channels, freq_hz=997.0)
    data = _analyze_json([str(wav)], capsys)
    assert data["duration_s"] == pytest.approx(2.0)
    assert data["sample_rate_hz"] == sample_rate_hz
    assert data["channels"] == channels
    assert data["dominant_hz_median"] == pytest.approx(997.0, rel=0.01)
    assert data["dominant_note_median"] == "B5"
    assert data["peak_dbfs"] == pytest.approx(-20.0, abs=0.01)
    expected = -20.0 - 3.01 + 10 * np.log10(channels)
    assert data["lufs"] == pytest.approx(expected, abs=0.3)
    assert set(data["masking"]) == {"median_headroom_db", "p10_headroom_db", "median_smr_db", "quiet_share"}
    assert data["masking"]["median_headroom_db"] > 3.0


def test_analyze_json_prints_only_json(tmp_path, capsys):
    wav = _tone_file(tmp_path / "a.wav")
    code, out, _ = run(["analyze", str(wav), "--json"], capsys)
    assert code == 0
    assert out.count("\n") == 1 and json.loads(out)["channels"] == 2


def test_analyze_human_output(tmp_path, capsys):
    wav = _tone_file(tmp_path / "a.wav", freq_hz=997.0)
    code, out, _ = run(["analyze", str(wav)], capsys)
    assert code == 0
    assert "2.00 s" in out and "44100 Hz" in out
    assert "-20.0 LUFS" in out and "-20.00 dBFS" in out
    assert "median 997 Hz (B5)" in out
    assert "masking headroom" in out and "nothing can hide" in out


def test_analyze_leaves_the_input_untouched(tmp_path, capsys):
    wav = _tone_file(tmp_path / "a.wav")
    before = wav.read_bytes()
    assert run(["analyze", str(wav), "--plot", str(tmp_path / "p.png")], capsys)[0] == 0
    assert wav.read_bytes() == before


def test_plot_never_overwrites_the_input_even_with_force(tmp_path, capsys):
    disguised = _tone_file(tmp_path / "song.wav")
    png_named = tmp_path / "song.png"
    disguised.rename(png_named)  # a WAV file whose name ends in .png
    before = png_named.read_bytes()
    code, _, err = run(["analyze", str(png_named), "--plot", str(png_named), "--force"], capsys)
    assert code == 2 and "would overwrite the input" in err
    assert png_named.read_bytes() == before


def test_dominant_track_groups_windows_by_time(tmp_path, capsys):
    sr = 22_050  # 220-sample windows are 9.98 ms: counting windows would drift
    t = np.arange(2 * sr) / sr
    x = np.concatenate([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 880 * t)])
    wav = tmp_path / "two.wav"
    sf.write(wav, x, sr, subtype="PCM_24")
    data = _analyze_json([str(wav)], capsys)
    assert data["dominant_hz_per_second"] == pytest.approx([440, 440, 880, 880], rel=0.01)
    data = _analyze_json([str(wav), "--window-ms", "700"], capsys)
    assert data["dominant_hz_per_second"] == pytest.approx([440, 440, 880, 880], rel=0.01)


def test_plot_is_written_and_not_overwritten_without_force(tmp_path, capsys):
    wav = _tone_file(tmp_path / "a.wav")
    png = tmp_path / "plot.png"
    data = _analyze_json([str(wav), "--plot", str(png)], capsys)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["plot"] == str(png)
    png.write_bytes(b"mine")
    code, _, err = run(["analyze", str(wav), "--plot", str(png)], capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert png.read_bytes() == b"mine"
    code, _, _ = run(["analyze", str(wav), "--plot", str(png), "--force"], capsys)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_plot_needs_png_suffix(tmp_path, capsys):
    wav = _tone_file(tmp_path / "a.wav")
    code, _, err = run(["analyze", str(wav), "--plot", str(tmp_path / "p.jpg")], capsys)
    assert code == 2 and ".png" in err


def test_silent_audio_is_reported_not_an_error(tmp_path, capsys):
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros((44_100, 2)), 44_100, subtype="PCM_16")
    data = _analyze_json([str(wav)], capsys)
    assert data["lufs"] is None and data["peak_dbfs"] is None
    assert data["dominant_hz_median"] is None and data["dominant_active_share"] == 0.0
    assert any("silence" in note for note in data["notes"])


def test_sixteen_channels(tmp_path, capsys):
    wav = _tone_file(tmp_path / "many.wav", channels=16, seconds=1.0, freq_hz=997.0)
    data = _analyze_json([str(wav)], capsys)
    assert data["channels"] == 16
    # 16 channels of a -20 dBFS 997 Hz sine, each weighted 1.0: 10 log10(16 * 0.005)
    assert data["lufs"] == pytest.approx(10 * np.log10(16 * 0.005), abs=0.1)
    assert data["dominant_hz_median"] == pytest.approx(997.0, rel=0.01)
    assert data["dominant_active_share"] > 0.95


def _bad_input(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A bad file and a fragment its error message must contain."""
    if kind == "empty":
        p = tmp_path / "empty.wav"
        p.write_bytes(b"")
        return p, "empty"
    if kind == "text":
        p = tmp_path / "lyrics.wav"
        p.write_text("verse one\n")
        return p, "not a readable audio file"
    if kind == "nan":
        p = tmp_path / "nan.wav"
        x = np.zeros((4410, 1), np.float32)
        x[100] = np.nan
        sf.write(p, x, 44_100, subtype="FLOAT")
        return p, "NaN"
    if kind == "inf":
        p = tmp_path / "inf.wav"
        x = np.zeros((4410, 2), np.float32)
        x[5, 1] = np.inf
        sf.write(p, x, 44_100, subtype="FLOAT")
        return p, "infinite"
    if kind == "one-sample":
        p = tmp_path / "one.wav"
        sf.write(p, np.array([[0.5]]), 44_100, subtype="PCM_16")
        return p, "shorter than one 10 ms analysis window"
    if kind == "directory":
        return tmp_path, "folder"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty", "text", "nan", "inf", "one-sample", "directory"])
def test_bad_input_exits_2_with_a_plain_message(tmp_path, capsys, kind):
    path, fragment = _bad_input(tmp_path, kind)
    code, out, err = run(["analyze", str(path)], capsys)
    assert code == 2, err
    assert out == ""
    assert str(path) in err
    assert fragment.lower() in err.lower()
    assert "Traceback" not in err


def test_truncated_flac_and_mp3_do_not_crash(tmp_path, capsys):
    for suffix, fmt in ((".flac", "FLAC"), (".mp3", "MP3")):
        whole = _tone_file(tmp_path / f"whole{suffix}", subtype="PCM_16" if fmt == "FLAC" else "MPEG_LAYER_III")
        cut = tmp_path / f"cut{suffix}"
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) // 2 + 7])
        code, _, err = run(["analyze", str(cut), "--json"], capsys)
        # Both formats state their length, so a cut file is refused rather than half-read.
        assert code == 2, err
        assert str(cut) in err and "truncated or damaged" in err
        assert "Traceback" not in err and "internal error" not in err


# ---------------------------------------------------------------- analyze on MIDI

def _midi_file(path: Path, channels: list[int], *, notes_per_channel: int = 4) -> Path:
    """A type-1 MIDI file with one track per channel (channel 9 = drums)."""
    mido = pytest.importorskip("mido")
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)])
    mid.tracks.append(conductor)
    for channel in channels:
        track = mido.MidiTrack()
        if channel != 9:
            track.append(mido.Message("program_change", channel=channel, program=(channel * 7) % 96, time=0))
        for i in range(notes_per_channel):
            pitch = 36 + channel * 3 + i if channel != 9 else 36 + (i % 3) * 2
            track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=90, time=0))
            track.append(mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=480))
        mid.tracks.append(track)
    mid.save(path)
    return path


def test_analyze_midi_json(tmp_path, capsys):
    mid = _midi_file(tmp_path / "song.mid", [0, 9])
    data = _analyze_json([str(mid)], capsys)
    assert data["kind"] == "midi"
    assert data["duration_s"] == pytest.approx(2.0)  # 4 quarter notes at 120 qpm
    assert data["tempo_qpm"] == pytest.approx(120.0, abs=0.01)
    assert [t["name"] for t in data["tracks"]] == ["Bass", "Drums", "Guitar", "Piano", "Strings"]
    piano = data["tracks"][3]
    assert piano["notes"] == 4 and piano["dominant_note_median"] == "C#2"  # pitches 36..39
    assert data["sample_rate_hz"] is None and data["lufs"] is None


def test_analyze_midi_with_drums_and_fifteen_other_channels(tmp_path, capsys):
    mid = _midi_file(tmp_path / "band.mid", list(range(16)))
    data = _analyze_json([str(mid)], capsys)
    assert len(data["tracks"]) == 5
    assert data["tracks"][1]["is_drum"] and data["tracks"][1]["notes"] == 4
    assert sum(t["notes"] for t in data["tracks"]) == 64


def test_analyze_midi_without_notes_exits_2(tmp_path, capsys):
    mid = _midi_file(tmp_path / "empty.mid", [0], notes_per_channel=0)
    code, out, err = run(["analyze", str(mid)], capsys)
    assert code == 2 and out == ""
    assert str(mid) in err and "no notes" in err


def test_analyze_midi_refuses_plot(tmp_path, capsys):
    mid = _midi_file(tmp_path / "song.mid", [0])
    code, _, err = run(["analyze", str(mid), "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2 and "render the MIDI to audio" in err


def test_truncated_mp3_error_is_one_line_even_from_c_decoders(tmp_path):
    """mpg123 (inside libsndfile) prints warnings on fd 2; the user sees only our line."""
    whole = _tone_file(tmp_path / "whole.mp3", subtype="MPEG_LAYER_III")
    cut = tmp_path / "cut.mp3"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    proc = subprocess.run([sys.executable, "-m", "harmonycloak", "analyze", str(cut)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {cut}: ") and "truncated or damaged" in proc.stderr
