"""scripts/make_dev_grooves.py: genre mapping, progressions, naming, labels.csv.

The pure-Python parts run everywhere on synthetic inputs; the one test that renders
with Debian's mma is skipped where mma is not installed.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from harmonycloak.clip import PianoRoll
from harmonycloak.io.midi import load_midi, save_midi



@pytest.fixture(scope="module")
def script():
    yield from load_script("make_dev_grooves")


# ---------------------------------------------------------------------------- genres


@pytest.mark.parametrize(("library_file", "genre"), [
    ("50srock", "rock"), ("K50s_rock", "rock"), ("heavymetal", "rock"), ("twi", "rock"),
    ("rockballad", "ballad"), ("rb-ballad", "ballad"), ("arpeggio44", "ballad"),
    ("bossanova", "latin"), ("latinwaltz", "latin"), ("jazzrhumba", "latin"), ("son", "latin"),
    ("quando-g.s280", "latin"), ("boggiewoggie", "blues"), ("countryblues", "blues"),
    ("countryswing", "country"), ("westernswing", "country"), ("jazzcountry", "country"),
    ("bluefolk", "country"), ("jazzwaltz", "jazz"), ("folkyjazz", "jazz"), ("bebop", "jazz"),
    ("r+b", "rnb"), ("rb", "rnb"), ("8beatmotown", "rnb"), ("hip-hop", "rnb"),
    ("boneym", "dance"), ("latinhouse", "latin"), ("techno", "dance"),
    ("popwaltz", "traditional"), ("hymn", "traditional"), ("vienesewaltz", "traditional"),
    ("8beatpop1", "pop"), ("16shuffle1", "pop"), ("2beatp", "pop"),
])  # fmt: skip
def test_genre_of_known_library_files(script, library_file: str, genre: str) -> None:
    assert script.genre_of(library_file) == genre


def test_genre_of_unknown_name_is_none(script) -> None:
    assert script.genre_of("xyzzy") is None


def test_every_genre_has_a_tempo_range_and_existing_progressions(script) -> None:
    assert {genre for genre, _ in script.GENRE_RULES} == set(script.GENRES)
    assert set(script.TEMPO_RANGE_QPM) == set(script.GENRES) == set(script.GENRE_PROGRESSIONS)
    for genre, names in script.GENRE_PROGRESSIONS.items():
        assert len(set(names)) == len(names) >= 3, genre
        assert set(names) <= set(script.PROGRESSIONS), genre
    for low, high in script.TEMPO_RANGE_QPM.values():
        assert 40 <= low < high <= 240


# ------------------------------------------------------------------- library parsing

LIBRARY_TEXT = """// a library file
Begin Doc
  A test style.
End
DefGroove Rock   The basic beat.
  defgroove RockSus  With strings.
DefGroove RockIntro   Four bars of intro.
DefGroove RockEnd   Ending.
DefGroove RockFill   A fill.
DefGroove Rock   Defined again (overwrites).
DefGroove 8beat1FA  pflib fill
DefGroove 8beat1E   pflib ending
DefGroove 8beat1A   pflib section A
DefGroove DANCE   zoom style, not an ending
"""


def test_groove_names_in_order_once_each(script) -> None:
    assert script.groove_names(LIBRARY_TEXT) == [
        "Rock", "RockSus", "RockIntro", "RockEnd", "RockFill", "8beat1FA", "8beat1E", "8beat1A",
        "DANCE",
    ]  # fmt: skip


def test_intros_endings_fills_are_not_playable(script) -> None:
    playable = [n for n in script.groove_names(LIBRARY_TEXT) if script.is_playable(n)]
    assert playable == ["Rock", "RockSus", "8beat1A", "DANCE"]
    assert not script.is_playable("68MarchMetronome")
    assert not script.is_playable("MamboBreakAA")


def _library(root: Path) -> Path:
    (root / "stdlib").mkdir(parents=True)
    (root / "casio").mkdir()
    (root / "stdlib" / "rock.mma").write_text(LIBRARY_TEXT)
    (root / "stdlib" / "bossanova.mma").write_text("DefGroove BossaNova\nDefGroove BossaNovaEnd\n")
    (root / "stdlib" / "metronome.mma").write_text("DefGroove Metronome2 x\n")
    (root / "stdlib" / "xyzzy.mma").write_text("DefGroove Xyzzy x\n")
    (root / "stdlib" / "introballad.mma").write_text("DefGroove BalladIntro x\n")
    (root / "casio" / "8beatpop1.mma").write_text("DefGroove 8BeatPop1 x\nDefGroove 8BeatPop1End\n")
    return root


def test_discover_keeps_playable_grooves_and_counts_the_rest(script, tmp_path: Path) -> None:
    files, skipped = script.discover(_library(tmp_path), ["stdlib", "casio"])
    found = [[(g.library, g.library_file, g.name, g.genre) for g in grooves] for grooves in files]
    assert found == [
        [("stdlib", "bossanova", "BossaNova", "latin")],
        [("stdlib", "rock", name, "rock") for name in ("Rock", "RockSus", "8beat1A", "DANCE")],
        [("casio", "8beatpop1", "8BeatPop1", "pop")],
    ]  # fmt: skip
    assert skipped == {"not music (metronome/none)": 1, "no genre rule": 1,
                       "no playable groove": 1}  # fmt: skip
    limited, _ = script.discover(tmp_path, ["stdlib"], limit=1)
    assert [g[0].library_file for g in limited] == ["bossanova"]


def test_discover_names_a_missing_library(script, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="zoomz"):
        script.discover(_library(tmp_path), ["zoomz"])


# ---------------------------------------------------------------------- progressions


def test_chord_symbols(script) -> None:
    assert script.progression_chords("axis", 0, 4) == ["C", "G", "Am", "F"]
    assert script.progression_chords("andalusian", 9, 4) == ["Am", "G", "F", "E7"]
    assert script.progression_chords("iivi", 3, 4) == ["Fm7", "Bb7", "Ebmaj7", "Ebmaj7"]
    assert script.progression_chords("minoriivi", 0, 2) == ["Dm7b5", "G7"]
    assert script.progression_chords("mixolydian", 7, 2) == ["G", "F"]


def test_progression_repeats_to_fill_the_bars(script) -> None:
    chords = script.progression_chords("blues12", 5, 16)
    assert len(chords) == 16 and chords[:4] == ["F7", "Bb7", "F7", "F7"]
    assert chords[12:] == chords[:4]


def test_every_progression_parses_in_every_key(script) -> None:
    for name, numerals in script.PROGRESSIONS.items():
        for key in range(12):
            chords = script.progression_chords(name, key, len(numerals))
            assert all(c[0] in "ABCDEFG" for c in chords), (name, key, chords)


def test_bad_numeral_is_refused(script) -> None:
    with pytest.raises(ValueError, match="'VIII'"):
        script.chord_symbol("VIII", 0)


# ------------------------------------------------------------------- naming and plan


def test_file_names(script) -> None:
    stdlib = script.Groove("stdlib", "afro-cuban", "Afro-CubanSus", "latin")
    casio = script.Groove("casio", "r+b", "R&B", "rnb")
    assert stdlib.file_stem == "afro_cubansus"
    assert stdlib.reference == "stdlib/afro-cuban:Afro-CubanSus"
    assert casio.file_stem == "casio_r_b" and casio.reference == "casio/r+b:R&B"
    job = script.Job(casio, "axis", 2, key=10, tempo_qpm=99, bars=16, seed=5)
    assert job.relative_path == "rnb/casio_r_b-axis-2.mid"


def _plan(script, files, **kwargs):
    options = {"grooves_per_file": 2, "progressions": 3, "takes": 2, "bars": 16, "seed": 0}
    return script.plan(files, **{**options, **kwargs})


def test_plan_is_seeded_varied_and_names_are_unique(script, tmp_path: Path) -> None:
    files, _ = script.discover(_library(tmp_path), ["stdlib", "casio"])
    jobs = _plan(script, files)
    assert jobs == _plan(script, files)
    assert len(jobs) == (1 + 2 + 1) * 3 * 2  # bossa and casio have one groove each
    assert len({j.relative_path for j in jobs}) == len(jobs)
    assert {j.groove.name for j in jobs if j.groove.library_file == "rock"} >= {"Rock"}
    for job in jobs:
        low, high = script.TEMPO_RANGE_QPM[job.groove.genre]
        assert low <= job.tempo_qpm <= high and 0 <= job.key < 12
        assert job.progression in script.GENRE_PROGRESSIONS[job.groove.genre]
    assert len({j.tempo_qpm for j in jobs}) > 5 and len({j.key for j in jobs}) > 4
    assert len({j.seed for j in jobs}) == len(jobs)
    assert _plan(script, files, seed=1) != jobs


def test_a_file_does_not_change_when_others_are_added(script, tmp_path: Path) -> None:
    files, _ = script.discover(_library(tmp_path), ["stdlib", "casio"])
    alone = _plan(script, files[2:])
    together = _plan(script, files)
    assert alone == [j for j in together if j.groove.library == "casio"]


def test_mma_source(script) -> None:
    groove = script.Groove("stdlib", "bossanova", "BossaNova", "latin")
    job = script.Job(groove, "axis", 1, key=2, tempo_qpm=117, bars=6, seed=42)
    lines = script.mma_source(job).splitlines()
    assert lines[1:4] == ["Tempo 117", "RndSeed 42", "Groove stdlib/bossanova:BossaNova"]
    assert lines[4:] == ["1 D", "2 A", "3 Bm", "4 G", "5 D", "6 A"]


# ------------------------------------------------------------------------- run, labels


def _fake_render(source: str, out: Path, work: Path) -> None:
    """Stands in for mma: a two-track roll whose velocities depend on the song's tempo."""
    tempo = int(source.splitlines()[1].split()[1])
    velocities = np.zeros((2, 96, 84), np.float32)
    velocities[0, :12, 36] = tempo / 200
    velocities[1, 24:36, 40] = 0.5
    roll = PianoRoll(velocities=velocities, steps_per_beat=12, lowest_pitch=24,
                     programs=(33, 0), is_drum=(False, False), track_names=("bass", "piano"))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_midi(roll, out, force=True)


def test_run_writes_files_and_labels(script, tmp_path: Path, capsys) -> None:
    files, _ = script.discover(_library(tmp_path / "lib"), ["stdlib", "casio"])
    jobs = _plan(script, files, takes=1, progressions=2)
    out = tmp_path / "out"
    stats = script.run(out, jobs, _fake_render)
    with open(out / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(script.LABEL_FIELDS)
    assert [r["path"] for r in rows] == sorted(j.relative_path for j in jobs)
    by_path = {r["path"]: r for r in rows}
    for job in jobs:
        row = by_path[job.relative_path]
        assert (row["genre"], row["groove"], row["tempo_qpm"], row["key"]) == (
            job.groove.genre, job.groove.name, str(job.tempo_qpm), script.KEY_NAMES[job.key])
        roll = load_midi(out / job.relative_path, grouping="musegan")
        assert roll.tracks == 5 and roll.onsets[0].sum() == 1 and roll.onsets[3].sum() == 1
    assert stats.genres == {"latin": 2, "rock": 4, "pop": 2}
    assert stats.velocities[64] == len(jobs)  # the piano note at 0.5
    assert list(stats.track_notes) == [len(jobs), 0, 0, len(jobs), 0]
    printed = capsys.readouterr().out
    assert "Note-on velocities" in printed
    assert "files by number of non-empty tracks: 2: 8" in printed


def test_run_counts_failures_and_leaves_them_out_of_labels(script, tmp_path: Path) -> None:
    files, _ = script.discover(_library(tmp_path / "lib"), ["stdlib"])
    jobs = _plan(script, files, takes=1, progressions=1, grooves_per_file=1)

    def render(source: str, out: Path, work: Path) -> None:
        if "BossaNova" in source:
            raise script.RenderError("Groove 'BOSSANOVA' could not be found")
        _fake_render(source, out, work)

    stats = script.run(tmp_path / "out", jobs, render)
    rows = list(csv.DictReader(open(tmp_path / "out" / "labels.csv", newline="")))
    assert [r["genre"] for r in rows] == ["rock"]
    assert sum(stats.failed.values()) == 1
    assert "stdlib/bossanova:BossaNova" in next(iter(stats.failed))


def test_velocity_histogram_bins(script) -> None:
    counts = np.zeros(128, np.int64)
    counts[[1, 8, 9, 127]] = [2, 3, 4, 5]
    bins = script.velocity_histogram(counts)
    assert bins[0] == (1, 8, 5) and bins[1] == (9, 16, 4) and bins[-1] == (121, 127, 5)
    assert sum(n for *_, n in bins) == 14


def test_main_without_mma_says_how_to_install(script, tmp_path: Path, capsys) -> None:
    assert script.main(["--mma", "no-such-mma-program", "--out", str(tmp_path)]) == 2
    assert "scripts/get_dev_grooves.sh" in capsys.readouterr().err


def test_main_rejects_zero_progressions(script) -> None:
    with pytest.raises(SystemExit):
        script.main(["--progressions", "0"])


# ------------------------------------------------------------------ real mma rendering


@pytest.mark.skipif(shutil.which("mma") is None or not Path("/usr/share/mma/lib/stdlib").is_dir(),
                    reason="Debian's mma is not installed (bash scripts/get_dev_grooves.sh)")
def test_mma_renders_a_five_track_groove_with_varied_velocities(script, tmp_path: Path) -> None:
    args = ["--libraries", "stdlib", "--limit", "1", "--grooves-per-file", "1",
            "--progressions", "1", "--bars", "8"]  # fmt: skip
    assert script.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert script.main([*args, "--out", str(tmp_path / "b")]) == 0
    (written,) = sorted((tmp_path / "a").rglob("*.mid"))
    assert written.relative_to(tmp_path / "a").as_posix().startswith("rock/50srock-")
    twin = tmp_path / "b" / written.relative_to(tmp_path / "a")
    assert written.read_bytes() == twin.read_bytes()
    roll = load_midi(written, grouping="musegan")
    assert roll.tracks == 5 and roll.track_names == ("Bass", "Drums", "Guitar", "Piano", "Strings")
    assert (roll.onsets.sum(axis=(1, 2)) > 0).sum() >= 3
    velocities = np.round(roll.velocities[roll.onsets] * 127)
    assert len(np.unique(velocities)) > 10
