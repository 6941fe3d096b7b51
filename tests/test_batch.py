"""Batch protection of a folder (issue 9): planning, the job state in the catalog
database, resuming after SIGKILL, changed inputs, failed files, the CLI.

Protection runs white-box against a tiny random-init GAN with a one-step config; most
driver tests use the in-process ``inline`` backend (the same ``run_job`` the workers run),
the crash test and the CLI test the real process pool.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harmonycloak.batch import JobSettings, file_seed, plan_files, run_batch
from harmonycloak.batch.state import (
    BatchState,
    QueueEntry,
    batch_lock,
    load_jobs,
    stale_temp_files,
)
from harmonycloak.cli.app import main
from harmonycloak.config import EngineConfig, preset
from harmonycloak.errors import InputError
from harmonycloak.rights import catalog

FAST = replace(preset("light-v1"), engine=EngineConfig(outer_rounds=1, outer_steps=1, inner_steps=2,
                                                       batch_size=2))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gan(tmp_path_factory) -> Path:
    from harmonycloak.targets import MuseGANConfig, MuseGANTarget

    folder = tmp_path_factory.mktemp("gan")
    MuseGANTarget(MuseGANConfig.tiny(), seed=0).save(folder)
    return folder


def write_midi(path: Path, seed: int = 0) -> Path:
    """Two bars of a random melody (16 eighth notes) on a piano."""
    mido = pytest.importorskip("mido")
    rng = np.random.default_rng(seed)
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack([mido.Message("program_change", channel=0, program=0, time=0)])
    for _ in range(16):
        pitch = int(rng.integers(55, 76))
        track.append(mido.Message("note_on", note=pitch, velocity=int(rng.integers(60, 110)), time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=240))
    mid.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)
    return path


def settings_for(gan: Path, **kwargs) -> JobSettings:
    return JobSettings(config=FAST, mode="whitebox", midi_model_dir=str(gan), device="cpu", **kwargs)


def album(root: Path, count: int = 3, *, corrupt: bool = True) -> Path:
    """``root/in``: ``count`` MIDI files in two folders, and a corrupt one."""
    src = root / "in"
    for i in range(count):
        write_midi(src / ("disc1" if i % 2 == 0 else "disc2") / f"song{i}.mid", seed=i)
    if corrupt:
        (src / "bad.mid").write_bytes(b"MThd this is not a MIDI file")
    return src


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
            and ".harmonycloak" not in p.parts}


# ------------------------------------------------------------------------------ plan


def test_plan_mirrors_layout_skips_hidden_and_unknown_files(tmp_path):
    src = tmp_path / "in"
    write_midi(src / "a" / "one.mid")
    (src / "a" / "two.aac").write_bytes(b"x")
    (src / "b").mkdir()
    (src / "b" / "three.FLAC").write_bytes(b"x")
    (src / "b" / "notes.txt").write_text("x")
    (src / ".git").mkdir()
    (src / ".git" / "x.wav").write_bytes(b"x")
    (src / "a" / ".one.mid.tmp-0123abcd.mid").write_bytes(b"half")
    plan = plan_files([src], tmp_path / "out")
    assert not plan.single and plan.root == tmp_path / "out"
    assert [(f.relative, f.kind) for f in plan.files] == [
        ("a/one.mid", "midi"), ("a/two.m4a", "audio"), ("b/three.FLAC", "audio")]
    assert plan.files[1].output == tmp_path / "out" / "a" / "two.m4a"
    assert plan.files[1].source == src / "a" / "two.aac"


def test_plan_single_file_and_named_files(tmp_path):
    song = write_midi(tmp_path / "song.mid")
    single = plan_files([song], tmp_path / "protected.mid")
    assert single.single and single.files[0].output == tmp_path / "protected.mid"
    other = write_midi(tmp_path / "x" / "other.mid")
    several = plan_files([song, other], tmp_path / "out")
    assert [f.relative for f in several.files] == ["song.mid", "other.mid"]


def test_plan_refuses_two_inputs_for_one_output(tmp_path):
    for name in ("song.aac", "song.mp4"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    with pytest.raises(InputError, match="would both be written to .*song.m4a"):
        plan_files([tmp_path / "in"], tmp_path / "out")


def test_plan_never_walks_into_its_own_output_folder(tmp_path):
    src = tmp_path / "music"
    write_midi(src / "a.mid")
    write_midi(src / "protected" / "a.mid")  # an earlier run's output inside the input
    plan = plan_files([src], src / "protected")
    assert [f.relative for f in plan.files] == ["a.mid"]


def test_plan_refuses_a_file_as_output_folder(tmp_path):
    src = album(tmp_path, 2, corrupt=False)
    (tmp_path / "out").write_text("x")
    with pytest.raises(InputError, match="is a file; with several inputs or a folder"):
        plan_files([src], tmp_path / "out")


def test_file_seeds_are_stable_distinct_and_in_range():
    seeds = {file_seed(7, f"disc/song{i}.wav") for i in range(200)}
    assert len(seeds) == 200 and all(0 <= s < 2**31 for s in seeds)
    assert file_seed(7, "a.wav") == file_seed(7, "a.wav") != file_seed(8, "a.wav")
    assert file_seed(0, "a.wav") == 914285120  # pinned: a new formula would re-protect catalogs


# ----------------------------------------------------------------------------- state


def _entry(output: str, sha: str = "a" * 64, settings: str = "s" * 64) -> QueueEntry:
    return QueueEntry(output, f"/music/{output}", sha, 10, 1, "midi", settings, 5)


def test_state_transitions_and_requeue_after_a_crash(tmp_path):
    with BatchState(tmp_path) as state:
        state.queue([_entry("a.mid"), _entry("b.mid")])
        assert {r.status for r in state.records().values()} == {"queued"}
        state.mark_running("a.mid", worker="w1")
        state.mark_done("a.mid", output_sha256="b" * 64, output_size=3, report_sha256="c" * 64,
                        seconds=1.5)
        state.mark_running("b.mid", worker="w2")
        a, b = state.get("a.mid"), state.get("b.mid")
        assert (a.status, a.attempts, a.done_count, a.output_size) == ("done", 1, 1, 3)
        assert (b.status, b.attempts, b.worker) == ("running", 1, "w2")
    with BatchState(tmp_path) as state:  # a new run after a kill: b was left running
        assert state.requeue_interrupted() == ["b.mid"]
        b = state.get("b.mid")
        assert (b.status, b.reason, b.attempts) == ("queued", "interrupted", 1)
        state.mark_running("b.mid", worker="w1")
        state.mark_failed("b.mid", reason="b.mid: broken", error="input")
        state.queue([_entry("a.mid")])                 # same identity: history kept
        assert (state.get("a.mid").attempts, state.get("a.mid").done_count) == (1, 1)
        state.queue([_entry("a.mid", sha="d" * 64)])   # input changed: counters start again
        assert (state.get("a.mid").attempts, state.get("a.mid").done_count) == (0, 0)
    jobs = load_jobs(tmp_path)
    assert jobs["b.mid"].status == "failed" and jobs["b.mid"].reason == "b.mid: broken"
    assert jobs["b.mid"].attempts == 2


def test_state_lives_in_the_catalog_database_and_both_keep_working(tmp_path):
    sf.write(tmp_path / "master.wav", np.zeros((4410, 1), np.float32) + 0.1, 44100)
    with BatchState(tmp_path) as state:
        state.queue([_entry("x.mid")])
    assert catalog.load_catalog(tmp_path) == {}     # a readable, empty catalog
    result = catalog.scan(tmp_path)                  # the catalog's own scan leaves the jobs alone
    assert result.added == ["master.wav"]
    assert list(load_jobs(tmp_path)) == ["x.mid"]
    assert set(catalog.load_catalog(tmp_path)) == {"master.wav"}
    with sqlite3.connect(catalog.catalog_path(tmp_path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"files", "reports", "meta", "batch_jobs"} <= tables


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    with batch_lock(tmp_path):
        with pytest.raises(InputError, match="another harmonycloak batch is writing to this folder"):
            with batch_lock(tmp_path):
                pass
    with batch_lock(tmp_path):  # released when the first run ends
        pass


def test_stale_temp_files_are_those_of_planned_targets_only(tmp_path):
    (tmp_path / "a").mkdir()
    names = [".x.mid.tmp-0123abcd.mid", ".x.mid.report.json.tmp-89abcdef.json",
             ".x.mid.tmp-0123abcd.wav",      # wrong suffix: not ours
             ".y.mid.tmp-0123abcd.mid",      # not a planned target
             ".x.mid.tmp-XYZ.mid", "x.mid"]
    for name in names:
        (tmp_path / "a" / name).write_bytes(b"half")
    found = stale_temp_files([tmp_path / "a" / "x.mid", tmp_path / "a" / "x.mid.report.json",
                              tmp_path / "missing" / "z.mid"])
    assert sorted(p.name for p in found) == [".x.mid.report.json.tmp-89abcdef.json",
                                             ".x.mid.tmp-0123abcd.mid"]


# ---------------------------------------------------------------------- the driver


def test_batch_protects_skips_done_files_and_reprotects_changed_inputs(tmp_path, gan):
    src = album(tmp_path, 3)
    out = tmp_path / "out"
    settings = settings_for(gan, seed=3)
    first = run_batch(plan_files([src], out), settings, backend="inline")
    assert sorted(first.protected) == ["disc1/song0.mid", "disc1/song2.mid", "disc2/song1.mid"]
    assert [(f.relative, f.error) for f in first.failed] == [("bad.mid", "input")]
    assert str(src / "bad.mid") in first.failed[0].reason and first.exit_code == 2
    assert files_under(out) == {f"{p}{s}" for p in first.protected for s in ("", ".report.json")}
    report = json.loads((out / "disc2" / "song1.mid.report.json").read_text())
    assert report["seed"] == file_seed(3, "disc2/song1.mid")
    jobs = load_jobs(out)
    assert jobs["bad.mid"].status == "failed" and "not" in jobs["bad.mid"].reason
    assert all(jobs[p].status == "done" and jobs[p].done_count == 1 for p in first.protected)
    stamps = {p: (out / p).stat().st_mtime_ns for p in first.protected}

    again = run_batch(plan_files([src], out), settings, backend="inline")
    assert again.protected == [] and sorted(again.already_done) == sorted(first.protected)
    assert [f.relative for f in again.failed] == ["bad.mid"]   # still reported
    assert {p: (out / p).stat().st_mtime_ns for p in first.protected} == stamps

    write_midi(src / "disc1" / "song0.mid", seed=99)          # the master changed
    changed = run_batch(plan_files([src], out), settings, backend="inline")
    assert changed.protected == ["disc1/song0.mid"]
    report = json.loads((out / "disc1" / "song0.mid.report.json").read_text())
    assert report["input"]["sha256"] == load_jobs(out)["disc1/song0.mid"].source_sha256
    assert (out / "disc2" / "song1.mid").stat().st_mtime_ns == stamps["disc2/song1.mid"]


def test_other_settings_are_refused_without_force(tmp_path, gan):
    src = album(tmp_path, 1, corrupt=False)
    out = tmp_path / "out"
    run_batch(plan_files([src], out), settings_for(gan), backend="inline")
    before = (out / "disc1" / "song0.mid").read_bytes()
    with pytest.raises(InputError, match="1 file here .* protected with other settings"):
        run_batch(plan_files([src], out), settings_for(gan, seed=1), backend="inline")
    assert (out / "disc1" / "song0.mid").read_bytes() == before
    redone = run_batch(plan_files([src], out), settings_for(gan, seed=1), backend="inline", force=True)
    assert redone.protected == ["disc1/song0.mid"]


def test_an_output_this_batch_did_not_write_fails_only_that_file(tmp_path, gan):
    src = album(tmp_path, 2, corrupt=False)
    out = tmp_path / "out"
    (out / "disc1").mkdir(parents=True)
    (out / "disc1" / "song0.mid").write_bytes(b"keep me")
    summary = run_batch(plan_files([src], out), settings_for(gan), backend="inline")
    assert summary.protected == ["disc2/song1.mid"]
    assert "already exists and was not written by this batch; use --force" in summary.failed[0].reason
    assert (out / "disc1" / "song0.mid").read_bytes() == b"keep me"


def test_outputs_complete_but_unrecorded_are_adopted_not_redone(tmp_path, gan):
    """A run killed between writing the report and recording it."""
    src = album(tmp_path, 2, corrupt=False)
    out = tmp_path / "out"
    run_batch(plan_files([src], out), settings_for(gan), backend="inline")
    with BatchState(out) as state:
        state.mark_running("disc1/song0.mid", worker="killed")
    catalog.catalog_path(out).unlink()           # even with the state file lost altogether
    stamp = (out / "disc1" / "song0.mid").stat().st_mtime_ns
    summary = run_batch(plan_files([src], out), settings_for(gan), backend="inline")
    assert sorted(summary.adopted) == ["disc1/song0.mid", "disc2/song1.mid"]
    assert summary.protected == [] and summary.failed == []
    assert (out / "disc1" / "song0.mid").stat().st_mtime_ns == stamp
    assert {r.done_count for r in load_jobs(out).values()} == {1}


# ------------------------------------------------------------ crash and resume (pool)

_DRIVER = textwrap.dedent('''
    import sys
    from dataclasses import replace
    from pathlib import Path

    from harmonycloak.batch import JobSettings, plan_files, run_batch
    from harmonycloak.config import EngineConfig, preset

    if __name__ == "__main__":
        src, out, gan = map(Path, sys.argv[1:4])
        config = replace(preset("light-v1"), engine=EngineConfig(outer_rounds=1, outer_steps=1,
                                                                 inner_steps=2, batch_size=2))
        settings = JobSettings(config=config, midi_model_dir=str(gan), device="cpu")
        summary = run_batch(plan_files([src], out), settings, workers=int(sys.argv[4]))
        print("SUMMARY", len(summary.protected), len(summary.already_done), len(summary.failed))
''')


def _driver(tmp_path: Path, src: Path, out: Path, gan: Path, workers: int) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(src), str(out), str(gan), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_sigkill_mid_batch_then_resume_finishes_every_file_exactly_once(tmp_path, gan):
    src = album(tmp_path, 6)
    out = tmp_path / "out"
    (out / "disc1").mkdir(parents=True)
    half = out / "disc1" / ".song4.mid.tmp-0badc0de.mid"   # what a writer killed mid-file leaves
    half.write_bytes(b"MThd half")
    driver = _driver(tmp_path, src, out, gan, workers=1)
    deadline = time.monotonic() + 120
    done_before: dict[str, int] = {}
    while time.monotonic() < deadline and driver.poll() is None:
        jobs = load_jobs(out) if catalog.catalog_path(out).exists() else {}
        done = [p for p, r in jobs.items() if r.status == "done"]
        if len(done) >= 2 and any(r.status == "running" for r in jobs.values()):
            os.kill(driver.pid, signal.SIGKILL)     # the driver only: its worker must go too
            break
        time.sleep(0.05)
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read()
    jobs = load_jobs(out)
    done_before = {p: (out / p).stat().st_mtime_ns for p, r in jobs.items() if r.status == "done"}
    interrupted = [p for p, r in jobs.items() if r.status == "running"]
    assert len(done_before) >= 2 and len(interrupted) == 1

    resumed = _driver(tmp_path, src, out, gan, workers=1)
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr
    good = {f"disc{1 + i % 2}/song{i}.mid" for i in range(6)}
    assert f"SUMMARY {len(good) - len(done_before)} {len(done_before)} 1" in stdout
    jobs = load_jobs(out)
    assert {p for p, r in jobs.items() if r.status == "done"} == good
    assert all(jobs[p].done_count == 1 for p in good)           # each protected exactly once
    assert jobs["bad.mid"].status == "failed" and "bad.mid" in jobs["bad.mid"].reason
    assert jobs[interrupted[0]].attempts == 2
    assert {p: (out / p).stat().st_mtime_ns for p in done_before} == done_before  # not redone
    assert files_under(out) == {f"{p}{s}" for p in good for s in ("", ".report.json")}
    assert not any(".tmp-" in p.name for p in out.rglob("*"))   # stale temp files removed
    for p in good:
        report = json.loads((out / f"{p}.report.json").read_text())
        from harmonycloak.io.files import sha256_file
        assert report["output"]["sha256"] == sha256_file(out / p) == jobs[p].output_sha256


# ------------------------------------------------------------------------------- CLI


def test_cli_folder_batch_lists_failed_files_and_resumes(tmp_path, gan, capsys):
    src = album(tmp_path, 1)
    out = tmp_path / "out"
    argv = ["protect", str(src), "-o", str(out), "--model", str(gan), "--preset", "light-v1",
            "--jobs", "1"]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert f"failed: {src / 'bad.mid'}: " in captured.err
    assert "2 files: 1 protected, 1 failed" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(out / "disc1" / "song0.mid") + ": loss")
    (src / "bad.mid").unlink()
    assert main(argv) == 0
    assert "1 file: 0 protected, 1 already done, 0 failed" in capsys.readouterr().err


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, gan, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    src = album(tmp_path, 1, corrupt=False)
    with pytest.raises(InputError, match=r"pip install 'harmonycloak\[ray\]'"):
        run_batch(plan_files([src], tmp_path / "out"), settings_for(gan), backend="ray")
    assert not (tmp_path / "out").exists()              # refused before any work
