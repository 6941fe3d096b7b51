"""`protect` on MIDI, white-box, end to end with a tiny saved GAN checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import midi_file_bytes
from harmonycloak.cli.app import main
from harmonycloak.config import EngineConfig, preset
from harmonycloak.errors import InputError
from harmonycloak.io.midi import load_midi
from harmonycloak.io.midi_edit import note_cells
from harmonycloak.perturb.windows import note_slots
from harmonycloak.pipeline import TargetChoice, protect_midi
from harmonycloak.targets import MuseGANConfig, MuseGANTarget

FAST = replace(preset("light-v1"), engine=EngineConfig(outer_rounds=2, outer_steps=1, inner_steps=3,
                                                       pgd_step=0.05, batch_size=2))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gan")
    MuseGANTarget(MuseGANConfig.tiny(), seed=0).save(folder)
    return folder


@pytest.fixture()
def song(tmp_path) -> Path:
    """Two bars: bass, piano chords and drums, with off-grid timing on one note."""
    data = midi_file_bytes([(0, 33, [(36, 0, 960, 100), (43, 960, 960, 90), (41, 1923, 957, 95)]),
                            (1, 0, [(60, 0, 1920, 80), (64, 0, 1920, 70), (67, 1920, 1920, 85)]),
                            (9, 0, [(36, t, 120, 110) for t in range(0, 3840, 480)])])
    path = tmp_path / "song.mid"
    path.write_bytes(data)
    return path


def _protect(song: Path, out: Path, gan: Path, **kwargs):
    return protect_midi(song, out, config=FAST, target=TargetChoice("musegan", model_dir=str(gan)),
                        seed=kwargs.pop("seed", 0), **kwargs)


def test_protect_keeps_every_note_and_raises_velocities_inside_the_bounds(song, tmp_path, tiny_gan):
    out = tmp_path / "song.protected.mid"
    before = song.read_bytes()
    report = _protect(song, out, tiny_gan)
    assert song.read_bytes() == before
    src, dst = note_cells(song), note_cells(out)
    assert [(c.file_track, c.pitch, c.start_tick, c.end_tick) for c in src] == \
        [(c.file_track, c.pitch, c.start_tick, c.end_tick) for c in dst]
    roll = load_midi(song)
    slots = note_slots(roll, window_ms=FAST.midi.window_ms, min_velocity=FAST.midi.min_velocity)
    lower = {(int(t), int(s), int(p) + 24): lo for t, s, p, lo in
             zip(slots.track, slots.start_step, slots.pitch_index, slots.lower)}
    raised = 0
    for a, b in zip(src, dst):
        assert b.velocity >= a.velocity
        if b.velocity > a.velocity:
            raised += 1
            assert b.velocity - a.velocity <= min(a.velocity, 127 - a.velocity)
            assert (b.velocity - a.velocity) / 127 >= lower[(a.roll_track, a.onset_step, a.pitch)] - 0.5 / 127
    assert raised == report["perturbation"]["notes_changed"] > 0


def test_report_follows_the_contract(song, tmp_path, tiny_gan):
    out = tmp_path / "o.mid"
    _protect(song, out, tiny_gan)
    report = json.loads((tmp_path / "o.mid.report.json").read_text())
    assert report["harmonycloak_report"] == 1
    assert report["input"]["path"] == str(song) and len(report["input"]["sha256"]) == 64
    assert report["output"]["sha256"] != report["input"]["sha256"]
    assert (report["mode"], report["target"], report["preset"], report["seed"]) == ("whitebox", "musegan", "light-v1", 0)
    assert report["watermark"] is None
    assert report["config"]["engine"]["inner_steps"] == 3
    assert set(report["losses"]) == {"before", "after", "protected_over_clean_after"}
    assert len(report["history"]) == 2 and report["seconds"] > 0


def test_same_seed_same_bytes(song, tmp_path, tiny_gan):
    a, b = tmp_path / "a.mid", tmp_path / "b.mid"
    _protect(song, a, tiny_gan, seed=5)
    _protect(song, b, tiny_gan, seed=5)
    assert a.read_bytes() == b.read_bytes()


def test_outputs_are_not_overwritten_without_force(song, tmp_path, tiny_gan, capsys):
    out = tmp_path / "o.mid"
    out.write_bytes(b"keep me")
    code = main(["protect", str(song), "-o", str(out), "--model", str(tiny_gan), "--preset", "light-v1"])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("argv,fragment", [
    (["--mode", "blackbox", "--target", "musegan"], "go with --mode whitebox"),
    (["--preset", "loud-v9"], "unknown preset"),
    (["--target", "gpt"], "--target"),
    (["--watermark-key", "k.json"], "cannot carry"),
])
def test_cli_refusals(song, tmp_path, capsys, argv, fragment):
    code = main(["protect", str(song), "-o", str(tmp_path / "o.mid"), *argv])
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_damaged_audio_input_fails_plainly_and_writes_nothing(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    code = main(["protect", str(wav), "-o", str(tmp_path / "a.protected.wav")])
    err = capsys.readouterr().err
    assert code == 2 and str(wav) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_missing_corpus_says_how_to_get_one(song, tmp_path, capsys):
    code = main(["protect", str(song), "-o", str(tmp_path / "o.mid"), "--corpus", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "--model DIR" in err and "make_dev_midi.py" in err


def test_folder_input_mirrors_layout(song, tmp_path, tiny_gan, capsys):
    src = tmp_path / "in" / "album"
    src.mkdir(parents=True)
    (src / "one.mid").write_bytes(song.read_bytes())
    code = main(["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_gan),
                 "--preset", "light-v1"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "album" / "one.mid").exists()
    assert (tmp_path / "out" / "album" / "one.mid.report.json").exists()


# ------------------------------------------------------------- pipeline.protect()


def test_protect_entry_point_routes_midi_and_counts_steps(tmp_path, song, tiny_gan):
    from harmonycloak.pipeline import iterations_total, protect

    config = replace(preset("light-v1"), engine=EngineConfig(outer_rounds=2, outer_steps=1,
                                                             inner_steps=2, batch_size=2))
    seen = []
    report = protect(song, tmp_path / "out.mid", mode="whitebox", model_dir=str(tiny_gan),
                     config=config, device="cpu", on_iteration=seen.append)
    assert report["target"] == "musegan" and (tmp_path / "out.mid").exists()
    assert [i["step"] for i in seen] == list(range(1, iterations_total(config) + 1))
    assert {i["total"] for i in seen} == {4}


def test_protect_entry_point_refuses_unknown_kind_mode_and_midi_watermark(tmp_path, song):
    from harmonycloak.pipeline import protect

    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(InputError, match="not a file harmonycloak protects"):
        protect(text, tmp_path / "o.mid")
    with pytest.raises(InputError, match="use one of blackbox, whitebox"):
        protect(song, tmp_path / "o.mid", mode="grey")
    with pytest.raises(InputError, match="MIDI files cannot carry the audio watermark"):
        protect(song, tmp_path / "o.mid", watermark=("k", "00"))


def test_protect_entry_point_stops_when_the_callback_raises(tmp_path, song, tiny_gan):
    from harmonycloak.pipeline import protect

    class Stop(Exception):
        pass

    def stop(info):
        raise Stop

    with pytest.raises(Stop):
        protect(song, tmp_path / "out.mid", model_dir=str(tiny_gan), config=preset("light-v1"),
                device="cpu", on_iteration=stop)
    assert not (tmp_path / "out.mid").exists() and not list(tmp_path.glob("out.mid*"))


def test_an_audio_checkpoint_for_a_midi_file_is_refused_plainly(song, tmp_path, capsys):
    from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget

    CodecLMTarget(CodecLMConfig.tiny(), seed=0).save(tmp_path / "audio-model")
    code = main(["protect", str(song), "-o", str(tmp_path / "o.mid"), "--model", str(tmp_path / "audio-model")])
    err = capsys.readouterr().err
    assert code == 2 and "holds a codec-token LM" in err and "a MIDI file needs a MIDI model" in err
    assert not (tmp_path / "o.mid").exists()
