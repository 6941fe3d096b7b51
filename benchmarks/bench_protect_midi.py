"""MIDI protection speed: a 3-minute, five-track piece against a trained white-box target.

    .venv/bin/python benchmarks/bench_protect_midi.py [--target musegan|symbolic-lm]
        [--model DIR] [--preset standard-v1] [--threads 1]

Target (issue 3, on a 2-core CPU): protecting a 3-minute 5-track MIDI file takes at most
60 s. The piece is the bundled example's 8 bars (bass, drums, guitar, piano, strings at
112 qpm; ``scripts/make_example.py``) repeated to 88 bars, 189 s, written to a temporary
folder. The target is ``--model DIR`` when given; otherwise the cached dev-corpus target
(``protect``'s own default, trained once); otherwise, when no corpus is present, a target
trained for ``--train-steps`` steps on the piece itself (the timing of protection does
not depend on how well the target was trained, only on its architecture).

Prints the protection time, its real-time factor, the machine load, and one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 11


def _example_module():
    spec = importlib.util.spec_from_file_location("make_example", ROOT / "scripts" / "make_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_long_piece(path: Path, repeats: int = REPEATS) -> float:
    """The example's 8 bars ``repeats`` times as one MIDI file; returns its length in seconds."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    ex = _example_module()
    score = Score(ex.TPQ)
    score.tempos.append(Tempo(0, ex.QPM))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    bar_beats = 4.0 * ex.BARS
    for name, notes in ex.score_notes().items():
        program, is_drum = ex.PROGRAMS[name]
        track = Track(name=name, program=program, is_drum=is_drum)
        for r in range(repeats):
            for start, length, pitch, velocity in notes:
                track.notes.append(Note(round((start + r * bar_beats) * ex.TPQ),
                                        round(length * ex.TPQ), pitch, velocity))
        score.tracks.append(track)
    score.dump_midi(str(path))
    return repeats * bar_beats * 60.0 / ex.QPM


def _model_dir(args: argparse.Namespace, piece: Path, work: Path) -> tuple[str, str]:
    """A checkpoint folder for the target and where it came from."""
    import numpy as np
    import torch

    from harmonycloak.io.midi import load_midi
    from harmonycloak.perturb.phrases import phrases_from_roll
    from harmonycloak.targets import registry

    if args.model:
        return args.model, "given"
    corpus = ROOT / "data" / "dev-midi"
    if corpus.is_dir():
        target, source = registry.cached_target(args.target, corpus, steps=500, batch_size=16,
                                                seed=0)
        folder = work / "model"
        target.save(folder)
        return str(folder), f"dev-corpus target ({source})"
    phrases = phrases_from_roll(load_midi(piece).velocities).astype(np.float32)
    torch.manual_seed(0)
    target = registry.train_target(args.target, phrases, steps=args.train_steps, batch_size=16, seed=0)
    folder = work / "model"
    target.save(folder)
    return str(folder), f"trained {args.train_steps} steps on the piece"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="musegan", choices=("musegan", "symbolic-lm"))
    parser.add_argument("--model", help="a trained checkpoint folder of that target")
    parser.add_argument("--preset", default="standard-v1")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from harmonycloak.config import preset
    from harmonycloak.pipeline import TargetChoice, protect_midi

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        piece = work / "three-minutes.mid"
        seconds = write_long_piece(piece)
        model_dir, source = _model_dir(args, piece, work)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        report = protect_midi(piece, work / "out.mid", config=preset(args.preset),
                              target=TargetChoice(name=args.target, model_dir=model_dir), seed=0)
        took = time.perf_counter() - t0
    ratio = report["losses"]["protected_over_clean_after"]
    print(f"piece: {seconds:.0f} s, 5 tracks; target {args.target} ({source}); preset {args.preset}")
    print(f"protect: {took:.1f} s ({seconds / took:.1f}x real time; target <= 60 s), "
          f"{args.threads} thread(s), load average {load_before:.2f} before")
    print(f"loss protected/clean on the piece after optimization: {ratio}")
    print(json.dumps({"target": args.target, "preset": args.preset, "piece_s": seconds,
                      "protect_s": round(took, 2), "realtime_factor": round(seconds / took, 2),
                      "threads": args.threads, "load_average": round(load_before, 2),
                      "loss_ratio": ratio, "model": source}))


if __name__ == "__main__":
    main()
