"""Batch protection of a mixed folder: killed twice and resumed, Ray = local bytes, throughput.

    nice -n 10 .venv/bin/python benchmarks/bench_batch.py [--files 200] [--mode whitebox]
        [--preset light-v1] [--engine fast|preset] [--min-s 1 --max-s 6] [--jobs 2]
        [--throughput-files 40] [--no-ray] [--seed 0] [--workdir DIR] [--json OUT.json]

Issue 9's acceptance run. It builds a folder of ``--files`` files in nested album folders:
synthetic music (harmonic notes with decays and a little noise, 44.1 / 48 kHz, mono and
stereo, ``--min-s``..``--max-s`` seconds) as WAV, FLAC, MP3 and OGG, small MIDI files
(melody and bass, 2-4 bars) and five corrupt files (garbage MP3, bad WAV header, empty
FLAC, broken MIDI, text named .ogg). Then:

1. **local, killed twice**: ``run_batch`` with ``--jobs`` workers in a child process;
   SIGKILL at two random moments (seeded: after a random share of the files is done,
   plus a random delay): the first time the driver alone (its workers must die with it),
   the second time its whole process group. Each time it is started again; the third
   run finishes. Checked: every good file done exactly once (``done_count`` = 1 and the
   files done before a kill untouched), every corrupt one failed with its reason, the
   output tree holds exactly the outputs and reports (no temporary file), every output
   decodes and matches its report's SHA-256.
2. **Ray**: the same folder through the Ray backend on a local Ray instance (``--jobs``
   CPUs) into another folder; every output compared byte for byte with the local one.
3. **throughput**: ``--throughput-files`` good files (every k-th, keeping the mix)
   protected from scratch with ``--jobs 1`` and with ``--jobs`` workers: files per
   minute and real-time factor (seconds of music per wall-clock second, worker start-up
   included), and the per-file protection time from the state table.

Models: ``--mode whitebox`` (default) protects against tiny random-init checkpoints
(MuseGAN for MIDI, codec-LM for audio) built in the work folder; ``--mode blackbox``
needs none. ``--engine fast`` (default) replaces the preset's engine by one outer round
of one step and two PGD steps, so the run measures the batch machinery (load, budget,
optimize, encode, verify, write, record) rather than the optimizer; ``--engine preset``
keeps the preset's own. Prints a line per stage and one JSON object at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = (".wav", ".flac", ".mp3", ".ogg")
CORRUPT = {
    "corrupt/garbage.mp3": b"this is not an mp3 file\n" * 40,
    "corrupt/bad-header.wav": b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 64,
    "corrupt/empty.flac": b"",
    "corrupt/broken.mid": b"MThd\x00\x00\x00\x06\x00\x01\x00\x09\x01\xe0MTrk\xff\xff\xff\xff",
    "corrupt/notes.ogg": b"OggS? no: a text file somebody renamed\n" * 20,
}


# ------------------------------------------------------------------------ the folder


def _music(rng: np.random.Generator, sample_rate_hz: int, channels: int, seconds: float) -> np.ndarray:
    """Harmonic notes (pentatonic, 1/k partials, decaying) plus noise 40 dB down."""
    n = int(round(seconds * sample_rate_hz))
    out = np.zeros((channels, n))
    t_note = int(0.25 * sample_rate_hz)
    for ch in range(channels):
        start = 0
        while start < n:
            f0 = 440.0 * 2 ** ((rng.choice([57, 60, 62, 64, 67, 69, 72, 74]) - 69) / 12)
            length = min(n - start, int(1.2 * sample_rate_hz))
            t = np.arange(length) / sample_rate_hz
            env = (1 - np.exp(-t / 0.005)) * np.exp(-t / 0.3)
            tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 7) if k * f0 < 0.45 * sample_rate_hz)
            out[ch, start:start + length] += env * tone
            start += t_note * int(rng.integers(1, 3))
        out[ch] += 0.01 * np.sqrt(np.mean(out[ch] ** 2)) * rng.standard_normal(n)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def _midi(path: Path, rng: np.random.Generator, bars: int) -> float:
    """Melody (eighths) and bass (halves) at 120 bpm; returns the length in seconds."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)]))
    for channel, program, step, low, high in ((0, 0, 240, 60, 80), (1, 33, 960, 36, 48)):
        track = mido.MidiTrack([mido.Message("program_change", channel=channel, program=program, time=0)])
        for _ in range(bars * 1920 // step):
            pitch = int(rng.integers(low, high))
            track.append(mido.Message("note_on", channel=channel, note=pitch,
                                      velocity=int(rng.integers(60, 110)), time=0))
            track.append(mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=step))
        mid.tracks.append(track)
    mid.save(path)
    return bars * 2.0


def build_folder(root: Path, *, files: int, min_s: float, max_s: float, seed: int) -> dict[str, Any]:
    """The input folder; returns {relative path: {"kind", "seconds", "corrupt"}}."""
    from harmonycloak.clip import AudioClip
    from harmonycloak.io.audio import save_audio

    rng = np.random.default_rng(seed)
    manifest: dict[str, Any] = {}
    for rel, data in CORRUPT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        manifest[rel] = {"kind": "corrupt", "seconds": 0.0, "corrupt": True}
    good = max(0, files - len(CORRUPT))
    midi_count = good // 6
    for i in range(good):
        folder = root / f"artist-{i % 4}" / f"album-{i % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i < midi_count:
            rel = (folder / f"tune-{i:03d}.mid").relative_to(root).as_posix()
            seconds = _midi(root / rel, rng, bars=int(rng.integers(2, 5)))
            manifest[rel] = {"kind": "midi", "seconds": seconds, "corrupt": False}
            continue
        suffix = FORMATS[i % len(FORMATS)]
        rate = 44100 if i % 3 else 48000
        channels = 2 if i % 2 else 1
        seconds = float(np.round(rng.uniform(min_s, max_s), 2))
        rel = (folder / f"track-{i:03d}{suffix}").relative_to(root).as_posix()
        clip = AudioClip(_music(rng, rate, channels, seconds), rate)
        save_audio(clip, root / rel, **({"subtype": "PCM_16"} if suffix == ".wav" else {}))
        manifest[rel] = {"kind": "audio", "seconds": seconds, "corrupt": False}
    return manifest


# ------------------------------------------------------------------------ settings


def make_settings(spec: dict[str, Any]) -> Any:
    """The batch's JobSettings from a JSON-able spec (shared with the child drivers)."""
    from harmonycloak.batch import JobSettings
    from harmonycloak.config import EngineConfig, preset

    config = preset(spec["preset"])
    if spec["engine"] == "fast":
        config = replace(config, engine=EngineConfig(outer_rounds=1, outer_steps=1, inner_steps=2,
                                                     batch_size=2))
    return JobSettings(config=config, mode=spec["mode"], midi_model_dir=spec.get("midi_model"),
                       audio_model_dir=spec.get("audio_model"), seed=spec["seed"], device="cpu")


def build_models(folder: Path) -> dict[str, str]:
    from harmonycloak.targets import MuseGANConfig, MuseGANTarget
    from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget

    MuseGANTarget(MuseGANConfig.tiny(), seed=0).save(folder / "musegan")
    CodecLMTarget(CodecLMConfig.tiny(), seed=0).save(folder / "codec-lm")
    return {"midi_model": str(folder / "musegan"), "audio_model": str(folder / "codec-lm")}


def drive(spec_path: Path, src: Path, out: Path, workers: int) -> None:
    """The child process: one ``run_batch`` call (what ``harmonycloak protect`` runs)."""
    from harmonycloak.batch import plan_files, run_batch

    spec = json.loads(spec_path.read_text())
    summary = run_batch(plan_files([src], out), make_settings(spec), workers=workers)
    print(json.dumps({k: len(v) if isinstance(v, list) else v for k, v in summary.to_json().items()}))


# ------------------------------------------------------------------------ stages


def _counts(out: Path) -> dict[str, int]:
    from harmonycloak.batch.state import load_jobs
    from harmonycloak.rights.catalog import catalog_path

    if not catalog_path(out).exists():
        return {}
    try:
        jobs = load_jobs(out)
    except Exception:  # the database is being created right now
        return {}
    counts: dict[str, int] = {}
    for record in jobs.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def _group_alive(pgid: int) -> list[int]:
    """Pids still alive in process group ``pgid`` (Linux /proc)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


def _start(spec_path: Path, src: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--drive", str(spec_path), str(src), str(out),
                             str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def local_with_kills(spec_path: Path, src: Path, out: Path, *, workers: int, good: int,
                     rng: np.random.Generator) -> dict[str, Any]:
    """Run, SIGKILL twice at random moments, resume; what happened at each kill."""
    kills = []
    t0 = time.perf_counter()
    for number, (low, high, whole_group) in enumerate(((0.10, 0.35, False), (0.50, 0.80, True)), 1):
        threshold = int(rng.integers(int(low * good), int(high * good) + 1))
        delay_s = float(rng.uniform(0.0, 2.0))
        child = _start(spec_path, src, out, workers)
        while child.poll() is None and _counts(out).get("done", 0) < threshold:
            time.sleep(0.2)
        time.sleep(delay_s)
        if child.poll() is not None:
            raise SystemExit(f"the batch finished before kill {number}; use more --files")
        counts = _counts(out)
        (os.killpg if whole_group else os.kill)(child.pid, signal.SIGKILL)
        child.wait()
        time.sleep(1.5)  # the kernel's parent-death signal reaches the workers at once
        orphans = _group_alive(child.pid)
        temps = [p.name for p in out.rglob(".*.tmp-*")]
        kills.append({"kill": number, "target": "process group" if whole_group else "driver only",
                      "done_at_kill": counts.get("done", 0), "running_at_kill": counts.get("running", 0),
                      "workers_left_alive": len(orphans), "temp_files_left": len(temps)})
        print(f"kill {number} ({kills[-1]['target']}): {counts.get('done', 0)} done, "
              f"{counts.get('running', 0)} running; workers left alive {len(orphans)}; "
              f"temporary files left {len(temps)}", flush=True)
        for pid in orphans:  # never leave anything behind, even if the check failed
            os.kill(pid, signal.SIGKILL)
    child = _start(spec_path, src, out, workers)
    stdout, stderr = child.communicate()
    if child.returncode not in (0, 2):
        raise SystemExit(f"the resumed batch failed ({child.returncode}):\n{stderr[-3000:]}")
    final = json.loads(stdout.strip().splitlines()[-1])
    print(f"resumed run: {final['protected']} protected, {final['already_done']} already done, "
          f"{final['adopted']} found complete, {final['failed']} failed, "
          f"{final['requeued']} interrupted files queued again, "
          f"{final['removed_temp_files']} temporary files removed", flush=True)
    return {"kills": kills, "final_run": final, "wall_s": round(time.perf_counter() - t0, 1)}


def check_outputs(src: Path, out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every good file done exactly once and intact; every corrupt one failed."""
    from harmonycloak.batch.state import load_jobs
    from harmonycloak.io.audio import load_audio
    from harmonycloak.io.files import sha256_file
    from harmonycloak.io.midi import load_midi
    from harmonycloak.pipeline import file_kind

    jobs = load_jobs(out)
    good = sorted(r for r, m in manifest.items() if not m["corrupt"])
    corrupt = sorted(r for r, m in manifest.items() if m["corrupt"] and file_kind(r) is not None)
    problems = []
    expected = set()
    for rel in good:
        record = jobs.get(rel)
        if record is None or record.status != "done" or record.done_count != 1:
            problems.append(f"{rel}: {record and (record.status, record.done_count)}")
            continue
        output = out / rel
        expected |= {rel, f"{rel}.report.json"}
        report = json.loads((out / f"{rel}.report.json").read_text())
        sha = sha256_file(output)
        if not sha == report["output"]["sha256"] == record.output_sha256:
            problems.append(f"{rel}: SHA-256 differs from the report")
        (load_midi if rel.endswith(".mid") else load_audio)(output)  # decodes completely
    failed = {rel: jobs[rel].reason for rel in corrupt if rel in jobs and jobs[rel].status == "failed"}
    problems += [f"{rel}: not reported failed" for rel in corrupt if rel not in failed]
    present = {p.relative_to(out).as_posix() for p in out.rglob("*")
               if p.is_file() and ".harmonycloak" not in p.parts}
    problems += [f"unexpected file {p}" for p in sorted(present - expected)]
    problems += [f"missing file {p}" for p in sorted(expected - present)]
    return {"good": len(good), "done_once": sum(1 for r in good if jobs.get(r) and jobs[r].done_count == 1),
            "corrupt": len(corrupt), "corrupt_reported": len(failed),
            "corrupt_reasons": failed, "problems": problems}


def ray_stage(src: Path, out: Path, reference: Path, settings: Any, *, cpus: int,
              manifest: dict[str, Any]) -> dict[str, Any]:
    import ray

    from harmonycloak.batch import plan_files, run_batch

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        t0 = time.perf_counter()
        summary = run_batch(plan_files([src], out), settings, backend="ray")
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    good = [r for r, m in manifest.items() if not m["corrupt"]]
    same = sum(1 for r in good if (out / r).is_file() and (reference / r).is_file()
               and (out / r).read_bytes() == (reference / r).read_bytes())
    return {"protected": len(summary.protected), "failed": len(summary.failed),
            "identical_to_local": same, "good": len(good), "wall_s": round(wall, 1),
            "files_per_min": round(60 * (len(summary.protected) + len(summary.failed)) / wall, 1)}


def throughput(src: Path, work: Path, settings: Any, manifest: dict[str, Any], *, count: int,
               jobs: list[int]) -> list[dict[str, Any]]:
    from harmonycloak.batch import plan_files, run_batch
    from harmonycloak.batch.state import load_jobs

    good = sorted(r for r, m in manifest.items() if not m["corrupt"])
    step = max(1, len(good) // max(1, count))
    chosen = good[::step][:count]
    subset = work / "subset"
    for rel in chosen:
        (subset / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, subset / rel)
    music_s = sum(manifest[r]["seconds"] for r in chosen)
    audio_s = sum(manifest[r]["seconds"] for r in chosen if manifest[r]["kind"] == "audio")
    rows = []
    for n in jobs:
        out = work / f"throughput-jobs{n}"
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        summary = run_batch(plan_files([subset], out), settings, workers=n)
        wall = time.perf_counter() - t0
        per_file = [r.seconds for r in load_jobs(out).values() if r.seconds is not None]
        row = {"jobs": n, "files": len(chosen), "protected": len(summary.protected),
               "wall_s": round(wall, 1), "files_per_min": round(60 * len(chosen) / wall, 1),
               "realtime_factor": round(music_s / wall, 3),
               "audio_realtime_factor": round(audio_s / wall, 3),
               "music_s": round(music_s, 1), "median_file_s": round(statistics.median(per_file), 2),
               "load_average_before": round(load, 2)}
        rows.append(row)
        print(f"--jobs {n}: {len(chosen)} files ({music_s:.0f} s of music) in {wall:.1f} s: "
              f"{row['files_per_min']} files/min, {row['realtime_factor']}x real time "
              f"(median {row['median_file_s']} s per file in a worker; load {load:.1f})", flush=True)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mode", default="whitebox", choices=("whitebox", "blackbox"))
    parser.add_argument("--preset", default="light-v1")
    parser.add_argument("--engine", default="fast", choices=("fast", "preset"))
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=6.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--throughput-files", type=int, default=40)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="harmonycloak-bench-batch-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work}: not empty; give an empty or new --workdir")
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    src = work / "in"
    manifest = build_folder(src, files=args.files, min_s=args.min_s, max_s=args.max_s, seed=args.seed)
    kinds = {k: sum(1 for m in manifest.values() if m["kind"] == k) for k in ("audio", "midi", "corrupt")}
    by_suffix = {s: sum(1 for r in manifest if r.endswith(s)) for s in (*FORMATS, ".mid")}
    print(f"{work}: {len(manifest)} files ({kinds}; {by_suffix}), "
          f"{sum(m['seconds'] for m in manifest.values()):.0f} s of music", flush=True)
    spec = {"mode": args.mode, "preset": args.preset, "engine": args.engine, "seed": args.seed}
    if args.mode == "whitebox":
        spec |= build_models(work / "models")
    spec_path = work / "settings.json"
    spec_path.write_text(json.dumps(spec))
    settings = make_settings(spec)

    good = sum(1 for m in manifest.values() if not m["corrupt"])
    local = local_with_kills(spec_path, src, work / "out-local", workers=args.jobs, good=good, rng=rng)
    checks = check_outputs(src, work / "out-local", manifest)
    print(f"checks: {checks['done_once']}/{checks['good']} good files done exactly once, "
          f"{checks['corrupt_reported']}/{checks['corrupt']} corrupt files reported, "
          f"problems: {checks['problems'] or 'none'}", flush=True)
    for rel, reason in checks["corrupt_reasons"].items():
        print(f"  failed as expected: {reason}", flush=True)
    ray_row = None
    if not args.no_ray:
        ray_row = ray_stage(src, work / "out-ray", work / "out-local", settings, cpus=args.jobs,
                            manifest=manifest)
        print(f"ray ({args.jobs} CPUs): {ray_row['protected']} protected, {ray_row['failed']} failed "
              f"in {ray_row['wall_s']} s ({ray_row['files_per_min']} files/min); "
              f"{ray_row['identical_to_local']}/{ray_row['good']} outputs byte-identical to local",
              flush=True)
    rows = throughput(src, work, settings, manifest, count=args.throughput_files,
                      jobs=sorted({1, args.jobs}))
    result = {"files": len(manifest), "kinds": kinds, "formats": by_suffix, "spec": spec,
              "local": local, "checks": {k: v for k, v in checks.items() if k != "corrupt_reasons"},
              "ray": ray_row, "throughput": rows, "load_average_start": round(load_start, 2),
              "load_average_end": round(os.getloadavg()[0], 2),
              "total_s": round(time.perf_counter() - started, 1), "cpus": os.cpu_count()}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = not checks["problems"] and (ray_row is None or ray_row["identical_to_local"] == ray_row["good"])
    if not ok:
        raise SystemExit("FAILED: see the problems above")


if __name__ == "__main__":
    main()
