"""`harmonycloak evaluate`: the smoke profile end to end on synthetic music in tmp_path
(results.json keys, report tables, PNG plots, same seed same numbers), the CLI's error
messages, and the harness's small pieces (labels, shares, effect)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import music_like
from harmonycloak.cli.app import main
from harmonycloak.errors import InputError
from harmonycloak.evaluate import harness
from harmonycloak.evaluate.profiles import PROFILES, get_profile
from harmonycloak.evaluate.report import PLOT_FILES, render_markdown, write_outputs
from harmonycloak.targets import audio_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESULT_KEYS = {"format", "format_version", "version", "profile", "kind", "mode", "target",
               "device", "seed", "data", "pretrained", "protection", "quality", "effectiveness",
               "generated", "shares", "attacks", "baselines", "who_is_it", "curves", "runs",
               "timing_s", "notes", "plots"}
TABLE_HEADINGS = ("## Training losses (figure 5 analogue)", "## Generated music (table 3 analogue)",
                  "## Quality of the protected music (table 5 analogue)",
                  "## Protected share (table 7 analogue)", "## Removal attacks (table 9 analogue)",
                  "## Baselines at equal quality (table 10 analogue)",
                  "## Who is it (figure 8 analogue)")


def write_artists(root: Path, artists: int = 3, files: int = 2, seconds: float = 2.5) -> Path:
    """One sub-folder of float WAV files per artist; each artist's own seeds and loudness."""
    for a in range(artists):
        folder = root / f"artist{a}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            x = music_like(44100, 2, seconds, seed=100 * a + f, peak=0.3 + 0.2 * a)
            sf.write(folder / f"track{f}.wav", x.T, 44100, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Synthetic data, a private model cache, and a 2-step tokenizer stage for the tiny
    pre-trained model (the registry's 200 steps are for real music)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("evaluate")
    mp.setenv("HARMONYCLOAK_CACHE", str(root / "cache"))
    mp.setitem(audio_registry.STAGE1_STEPS, "codec-lm", 2)
    data = write_artists(root / "music")
    yield root, data
    mp.undo()


@pytest.fixture(scope="module")
def smoke(env):
    """The smoke profile through the command line, once for the module."""
    root, data = env
    out = root / "out"
    before = {p: p.read_bytes() for p in data.rglob("*.wav")}
    code = main(["--device", "cpu", "evaluate", "--profile", "smoke", "--data", str(data),
                 "--out", str(out)])
    return code, out, before, data


def test_smoke_profile_writes_results_report_and_plots(smoke):
    code, out, before, data = smoke
    assert code == 0
    assert {p: p.read_bytes() for p in data.rglob("*.wav")} == before      # inputs untouched
    results = json.loads((out / "results.json").read_text())
    assert set(results) == RESULT_KEYS
    assert results["format"] == "harmonycloak.evaluate" and results["kind"] == "audio"
    assert results["data"]["labels"] == ["artist0", "artist1", "artist2"]
    assert results["data"]["protected_clips"] == 4 and results["data"]["rest_clips"] == 8
    for plot in PLOT_FILES:
        blob = (out / plot).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
    assert results["plots"] == list(PLOT_FILES)
    report = (out / "report.md").read_text()
    for heading in TABLE_HEADINGS:
        assert heading in report
    assert "| 50 % | 2 |" in report and "| mp3_128k |" in report


def test_smoke_numbers_are_consistent(smoke):
    results = json.loads((smoke[1] / "results.json").read_text())
    profile = PROFILES["smoke"]
    shares = results["shares"]
    assert [r["share"] for r in shares] == list(profile.shares)
    assert [r["protected_clips"] for r in shares] == [0, 2, 4]
    assert shares[0]["effect"] == 0.0 and shares[0]["loss_ratio_seen"] == 1.0
    curves = results["curves"]
    full = curves["scratch-4of4"]
    assert [s for s, _ in full["seen"]] == [0, 4, 8]
    # the same seed and weights: every scratch run starts from the same loss on clean P
    assert len({c["clean"][0][1] for k, c in curves.items() if k.startswith("scratch")}) == 1
    scratch = results["effectiveness"]["scratch"]
    assert scratch["effect"] == pytest.approx(
        1 - harness.loss_ratio(full["seen"], curves["scratch-0of4"]["seen"]), abs=1e-6)
    quality = results["quality"]
    assert quality["snr_db"]["clips"] == 4 and quality["snr_db"]["median"] > 10
    assert quality["nmr_p95_db"]["median"] < 0          # the cloak stays under the mask
    assert [a["name"] for a in results["attacks"]] == ["mp3_128k", "adaptive"]
    assert [b["name"] for b in results["baselines"]] == ["harmonycloak", "gaussian", "pgd-linf"]
    who = results["who_is_it"]
    for key in ("clean", "protected"):
        matrix = np.asarray(who[key])
        assert matrix.shape == (3, 3) and (matrix.sum(axis=1) == profile.generate).all()
    # the rows of artists that were not protected are the same music in both conditions
    assert who["clean"][1:] == who["protected"][1:]
    assert all(v >= 0 for v in results["timing_s"].values()) and results["timing_s"]["total"] > 0


def test_same_seed_gives_the_same_numbers(env, tmp_path):
    _, data = env
    profile = replace(PROFILES["smoke"], attacks=(), adaptive=False, baselines=(),
                      shares=(0.0, 1.0))
    first = harness.evaluate(profile, data_dir=data, device="cpu", seed=3)
    second = harness.evaluate(profile, data_dir=data, device="cpu", seed=3)

    def numbers(results: dict) -> str:
        kept = {k: v for k, v in results.items() if k != "timing_s"}
        kept["protection"] = {k: v for k, v in results["protection"].items() if k != "craft_s"}
        return json.dumps(kept, sort_keys=True)

    assert numbers(first) == numbers(second)
    write_outputs(first, tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text().count("| 100 % | 4 |") == 1


# --------------------------------------------------------------------------- CLI errors


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["--device", "cpu", "evaluate", *args])
    return code, capsys.readouterr().err


def test_missing_dev_music_names_the_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["--profile", "smoke", "--out", "out"], capsys)
    assert code == 2
    assert "data/dev-music" in err and "bash scripts/get_dev_music.sh" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_missing_dev_midi_names_the_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["--profile", "smoke", "--kind", "midi", "--out", "out"], capsys)
    assert code == 2 and "scripts/make_dev_midi.py" in err


def test_existing_report_is_not_replaced_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code, err = run_cli(["--profile", "smoke", "--data", str(tmp_path), "--out", str(out)], capsys)
    assert code == 2 and "--force" in err and "results.json" in err
    assert (out / "results.json").read_text() == "{}"


def test_a_folder_without_music_says_what_to_give(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no music here")
    code, err = run_cli(["--profile", "smoke", "--data", str(tmp_path), "--out",
                         str(tmp_path / "out")], capsys)
    assert code == 2 and "no audio or MIDI files" in err and "--data" in err


def test_one_artist_is_not_enough(tmp_path, capsys):
    sf.write(tmp_path / "only.wav", music_like(44100, 2, 2.5).T, 44100, subtype="FLOAT")
    code, err = run_cli(["--profile", "smoke", "--data", str(tmp_path), "--out",
                         str(tmp_path / "out")], capsys)
    assert code == 2 and "at least two" in err and "labels.csv" in err


def test_unknown_profile_is_a_usage_error(tmp_path, capsys):
    code, err = run_cli(["--profile", "huge", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "huge" in err


# ------------------------------------------------------------------------- small pieces


def test_labels_come_from_labels_csv_then_folders_then_files(tmp_path):
    files = [tmp_path / "a" / "x.mid", tmp_path / "a" / "y.mid", tmp_path / "b" / "z.mid"]
    labels, origin = harness._file_labels(tmp_path, files)
    assert origin == "sub-folders" and labels[files[2]] == "b"
    (tmp_path / "labels.csv").write_text("path,genre\na/x.mid,rock\na/y.mid,jazz\nz.mid,rock\n")
    labels, origin = harness._file_labels(tmp_path, files)
    assert origin == "labels.csv" and [labels[f] for f in files] == ["rock", "jazz", "rock"]
    (tmp_path / "labels.csv").write_text("name,colour\nx,red\n")
    with pytest.raises(InputError, match="labels.csv.*file,label"):
        harness._file_labels(tmp_path, files)
    flat = [tmp_path / "p.wav", tmp_path / "q.wav"]
    (tmp_path / "labels.csv").unlink()
    assert harness._file_labels(tmp_path, flat) == ({flat[0]: "p", flat[1]: "q"}, "one label per file")


def test_a_flat_folder_of_tagged_tracks_is_grouped_by_artist(tmp_path):
    from mutagen.flac import FLAC
    from mutagen.id3 import TPE1
    from mutagen.wave import WAVE

    artists = {"a1.flac": "Zed", "a2.flac": "Zed", "a3.wav": "Zed", "b1.flac": "Amy",
               "c1.flac": "Bob", "c2.flac": "Bob", "none.flac": None}
    files = []
    for name, artist in artists.items():
        path = tmp_path / name
        sf.write(path, music_like(8000, 1, 0.3).T, 8000)
        if artist and path.suffix == ".flac":
            tags = FLAC(path)
            tags["artist"] = f" {artist} "
            tags.save()
        elif artist:
            wave = WAVE(path)
            wave.add_tags()
            wave.tags.add(TPE1(encoding=3, text=[artist]))
            wave.save()
        files.append(path)
    labels, origin = harness._file_labels(tmp_path, sorted(files))
    assert origin == "artist tags"
    assert labels == {tmp_path / n: a for n, a in artists.items() if a}  # untagged left out
    # most files first, ties by name; a given protected label still goes first
    assert harness._pick_labels(labels, PROFILES["smoke"], tmp_path, origin) == ["Zed", "Bob", "Amy"]
    chosen = replace(PROFILES["smoke"], protected_label="Amy")
    assert harness._pick_labels(labels, chosen, tmp_path, origin) == ["Amy", "Zed", "Bob"]
    # one artist only: the files are their own labels
    for f in files[3:]:
        f.unlink()
    labels, origin = harness._file_labels(tmp_path, files[:3])
    assert origin == "one label per file"


@pytest.mark.parametrize("share,size,count", [(0.0, 8, 0), (0.05, 8, 1), (0.10, 8, 1),
                                              (0.15, 8, 2), (1.0, 8, 8), (0.15, 20, 3)])
def test_share_count_rounds_up_and_keeps_zero(share, size, count):
    assert harness.share_count(share, size) == count


def test_effect_compares_the_steps_after_zero():
    clean = [[0, 5.0], [25, 4.0], [50, 2.0]]
    assert harness.effect(clean, clean) == 0.0
    assert harness.loss_ratio([[0, 5.0], [25, 0.4], [50, 0.2]], clean) == pytest.approx(0.1)
    assert harness.effect([[0, 5.0], [25, 0.4], [50, 0.2]], clean, upto=25) == pytest.approx(0.9)
    assert harness.effect(clean, [[0, 0.0], [25, 0.0]]) is None


def test_excerpts_are_evenly_spaced_and_skip_silence():
    x = np.zeros((2, 1000), np.float32)
    x[:, 500:] = 0.5
    pieces = harness.excerpts(x, 100, per=3)
    assert len(pieces) == 2 and all(p.shape == (2, 100) for p in pieces)  # the first is silent
    assert len(harness.excerpts(x, 100, per=3, min_rms=0.0)) == 3
    assert harness.excerpts(x, 2000) == []


def test_profiles_are_valid_and_quick_is_smaller_than_full():
    assert set(PROFILES) == {"smoke", "quick", "full"}
    quick, full = get_profile("quick"), get_profile("full")
    assert quick.train_steps < full.train_steps and quick.clips_per_artist < full.clips_per_artist
    with pytest.raises(InputError, match="huge.*smoke, quick, full"):
        get_profile("huge")
    with pytest.raises(InputError, match="attack_steps"):
        replace(quick, attack_steps=quick.train_steps + 1)


# ------------------------------------------------------------------------------- MIDI


def write_midi_artists(root: Path, artists: int = 3, files: int = 2, bars: int = 8) -> Path:
    """Five-track MIDI files per artist: a bass line, drums and chords in each artist's own
    key, rhythm and velocity."""
    from harmonycloak.evaluate.harness import as_roll
    from harmonycloak.io.midi import save_midi

    steps = bars * 48
    for a in range(artists):
        folder = root / f"style{a}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(a)
        for f in range(files):
            roll = np.zeros((5, steps, 84), np.float32)
            key = 24 + 5 * a
            beat = 12 * (a + 1)
            for start in range(0, steps, beat):
                pitch = key + int(rng.choice([0, 4, 7, 12]))
                roll[0, start:start + beat - 2, pitch - 12] = 0.5 + 0.1 * a   # bass
                roll[3, start:start + beat - 2, [pitch, pitch + 4, pitch + 7]] = 0.6  # piano
                roll[1, start:start + 2, 12] = 0.9                              # kick
            phrases = roll.reshape(5, bars // 4, 4, 48, 84).transpose(1, 0, 2, 3, 4)
            save_midi(as_roll(phrases), folder / f"piece{f}.mid")
    return root


def test_midi_evaluation_runs_every_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMONYCLOAK_CACHE", str(tmp_path / "cache"))
    data = write_midi_artists(tmp_path / "midi")
    profile = replace(PROFILES["smoke"], shares=(0.0, 1.0))
    results = harness.evaluate(profile, data_dir=data, device="cpu", seed=0)
    assert results["kind"] == "midi" and results["target"] == "symbolic-lm"
    assert results["data"]["labels"] == ["style0", "style1", "style2"]
    assert results["data"]["protected_clips"] == 4
    assert results["protection"]["slots"] > 0
    assert set(results["quality"]["tonal_distance"]["clean"]) == {
        "Bass-Guitar", "Bass-Piano", "Bass-Strings", "Guitar-Piano", "Guitar-Strings", "Piano-Strings"}
    assert set(results["generated"]["reference"]) == {
        "empty_bar_rate", "used_pitch_classes", "qualified_note_rate", "drum_pattern_rate",
        "tonal_distance"}
    assert [a["name"] for a in results["attacks"]] == ["binarize"] and results["baselines"] == []
    written = write_outputs(results, tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Not measured for MIDI" in report and "EB %" in report
    long_run = {**results, "timing_s": {**results["timing_s"], "total": 6295.2}}
    assert "; 6295 s in all." in render_markdown(long_run)   # not "6e+03 s"
    assert len(written) == 2 + len(PLOT_FILES)
