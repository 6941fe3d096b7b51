"""Figure-5 and table-3 analogue for MIDI: does the cloak make a protected subset unlearnable?

    .venv/bin/python benchmarks/unlearnable_midi.py --target symbolic-lm|musegan
        [--files 120] [--phrases 667] [--share 0.15] [--steps 150] [--generate 64]
        [--rounds 5] [--pgd-step 0.001] [--alpha paper-default] [--json-out F]

1. Phrases from the dev MIDI corpus (``scripts/make_dev_midi.py``; every ``files``-th
   file is read); ``--phrases`` of them are drawn (seed 0); the first ``share`` of those
   (15 %, the paper's default, or 1.0 for all) is the protected artist's set P.
2. The cloak is crafted on P with the engine (``perturb.optimize.min_min``) against a
   white-box copy of the target trained from scratch alongside (the min-min of eq. 5 with
   the settings given; the regularizer is the RMS form protect uses).
3. Two attackers of that architecture train from scratch (the paper's attacker optimizer:
   Adam 1e-4 for the GAN, AdamW 3e-4 for the LM) with the same seed and the same batches,
   one on clean data, one with P replaced by its cloaked version. Every 25 steps the
   mean loss on P *as that attacker sees it* is recorded (the GAN: the discriminator's
   loss on those real phrases, -log D(x); the LM: NLL nats per token).
4. With ``--generate N``, each attacker samples N phrases and the EB/UPC/QN/DP of
   ``evaluate.metrics.symbolic`` are compared with P's (table 3: the cloaked attacker
   should be further from P than the clean one). GAN outputs are binarized at 0.5.

Issue 3's bar: the loss on the cloaked P falls to <= 10 % of the clean P's loss at the
same step. Prints per-step losses, their ratio, the perturbation's size, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
TRACKS = ("Bass", "Drums", "Guitar", "Piano", "Strings")


def load_phrases(files_every: int, count: int) -> np.ndarray:
    from harmonycloak.targets.registry import corpus_files, corpus_phrases

    files = corpus_files(ROOT / "data" / "dev-midi")[::files_every]
    phrases = corpus_phrases(files)
    order = np.random.default_rng(0).permutation(len(phrases))
    return phrases[order[:count]]


def as_roll(phrases: np.ndarray):
    """Phrases side by side as one long five-track roll at 120 qpm (12 steps per beat)."""
    from harmonycloak.clip import PianoRoll

    velocities = np.concatenate(list(phrases.reshape(len(phrases), 5, -1, 84)), axis=1)
    return PianoRoll(velocities=velocities, steps_per_beat=12, lowest_pitch=24,
                     programs=(33, 0, 25, 0, 48), is_drum=(False, True, False, False, False),
                     track_names=TRACKS)


def craft(name: str, protected: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """The cloaked copy of ``protected`` and a summary of the perturbation."""
    from harmonycloak.perturb.optimize import EngineSettings, min_min, track_weights
    from harmonycloak.perturb.parametrize import MidiVelocityPerturbation
    from harmonycloak.perturb.phrases import phrases_tensor
    from harmonycloak.perturb.windows import note_slots
    from harmonycloak.targets.registry import DEFAULT_ALPHA, new_target

    roll = as_roll(protected)
    slots = note_slots(roll)
    x = torch.from_numpy(roll.velocities)
    perturbation = MidiVelocityPerturbation(slots, tuple(x.shape))
    weights = track_weights(x)
    alpha = DEFAULT_ALPHA[name] if args.alpha is None else args.alpha
    settings = EngineSettings(args.rounds, args.outer_steps, args.inner_steps, args.pgd_step,
                              alpha, 16)
    crafter = new_target(name, seed=1)
    t0 = time.perf_counter()
    result = min_min(x, perturbation, crafter, to_model=phrases_tensor,
                     regularizer=lambda p: (weights * perturbation.track_rms(p, 5)).sum(),
                     settings=settings, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cloaked = phrases_tensor(perturbation.apply(x, result.params)).numpy()
    delta = perturbation.slot_delta(result.params).detach().numpy() * 127.0
    return cloaked, {"slots": slots.count, "craft_s": round(time.perf_counter() - t0, 1),
                     "velocity_raise_mean": round(float(delta.mean()), 2),
                     "velocity_raise_max": round(float(delta.max()), 1), "alpha": alpha,
                     "history": result.history}


def attack(name: str, protected: np.ndarray, rest: np.ndarray, steps: int):
    """Train an attacker from scratch; loss on ``protected`` every 25 steps."""
    from harmonycloak.targets.registry import ATTACKER_OPTIMIZER, new_target

    optimizer, lr = ATTACKER_OPTIMIZER[name]
    target = new_target(name, seed=7, optimizer=optimizer, lr=lr)
    data = torch.from_numpy(np.concatenate([protected, rest]))
    probe = torch.from_numpy(protected)
    generator = torch.Generator().manual_seed(3)
    curve = []
    for step in range(steps + 1):
        if step % 25 == 0:
            curve.append((step, float(target.example_losses(probe).mean())))
        if step < steps:
            index = torch.randint(len(data), (16,), generator=generator)
            target.train_step(data[index])
    return target, curve


def metrics(phrases: np.ndarray) -> dict[str, float]:
    """Mean EB, UPC, QN over pitched tracks and DP of the drums, phrases as one roll."""
    from harmonycloak.evaluate.metrics.symbolic import track_metrics

    per_track = track_metrics(as_roll(phrases))
    out = {}
    for key in ("empty_bar_rate", "used_pitch_classes", "qualified_note_rate", "drum_pattern_rate"):
        values = [v[key] for v in per_track.values() if key in v and np.isfinite(v[key])]
        out[key] = round(float(np.mean(values)), 4) if values else None  # JSON has no NaN
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="symbolic-lm", choices=("musegan", "symbolic-lm"))
    parser.add_argument("--files", type=int, default=10, help="read every Nth corpus file")
    parser.add_argument("--phrases", type=int, default=667)
    parser.add_argument("--share", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--outer-steps", type=int, default=5)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--pgd-step", type=float, default=0.001)
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--generate", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    phrases = load_phrases(args.files, args.phrases)
    n_protected = max(1, round(args.share * len(phrases)))
    protected, rest = phrases[:n_protected], phrases[n_protected:]
    print(f"{len(phrases)} phrases, protected {n_protected} ({args.share:.0%}); "
          f"load average {os.getloadavg()[0]:.2f}")
    cloaked, summary = craft(args.target, protected, args)
    print(f"cloak: {summary['slots']} note slots, velocity raise mean "
          f"{summary['velocity_raise_mean']} max {summary['velocity_raise_max']} "
          f"(MIDI steps), crafted in {summary['craft_s']} s")
    clean_model, clean = attack(args.target, protected, rest, args.steps)
    cloaked_model, cloak = attack(args.target, cloaked, rest, args.steps)
    ratio = [(s, round(b / a, 3)) for (s, a), (_, b) in zip(clean, cloak)]
    print("step    " + " ".join(f"{s:>7d}" for s, _ in clean))
    print("clean   " + " ".join(f"{v:7.3f}" for _, v in clean))
    print("cloaked " + " ".join(f"{v:7.3f}" for _, v in cloak))
    print("ratio   " + " ".join(f"{r:7.3f}" for _, r in ratio) + "   (target <= 0.10)")
    result = {"target": args.target, "share": args.share, "phrases": len(phrases),
              "steps": args.steps, "cloak": summary, "clean": clean, "cloaked": cloak,
              "ratio": ratio}
    if args.generate:
        rows = {"protected data": metrics(protected)}
        for label, model in (("clean-trained", clean_model), ("cloak-trained", cloaked_model)):
            sample = model.generate(args.generate, torch.Generator().manual_seed(11)).numpy()
            if args.target == "musegan":
                sample = (sample > 0.5).astype(np.float32)
            rows[label] = metrics(sample)
        for label, row in rows.items():
            print(f"{label:15s} " + " ".join(f"{k}={v}" for k, v in row.items()))
        result["table3"] = rows
    line = json.dumps(result)
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
