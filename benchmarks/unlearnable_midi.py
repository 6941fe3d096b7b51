"""Figure-5 and table-3 analogue for MIDI: does the cloak make a protected subset unlearnable?

    .venv/bin/python benchmarks/unlearnable_midi.py --target symbolic-lm|musegan
        [--corpus data/dev-midi] [--files 120] [--phrases 667] [--share 0.15] [--steps 150]
        [--generate 64] [--rounds 5] [--pgd-step 0.001] [--alpha paper-default] [--json-out F]

1. Phrases from a MIDI corpus (``--corpus``: the music21 dev corpus of
   ``scripts/make_dev_midi.py`` by default, or the mma groove corpus of
   ``scripts/make_dev_grooves.py``, data/dev-grooves; every ``files``-th
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
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def load_phrases(corpus: Path, files_every: int, count: int) -> np.ndarray:
    from harmonycloak.targets.registry import corpus_files, corpus_phrases

    files = corpus_files(corpus)[::files_every]
    phrases = corpus_phrases(files)
    order = np.random.default_rng(0).permutation(len(phrases))
    return phrases[order[:count]]


def as_roll(phrases: np.ndarray):
    """Phrases side by side as one long five-track roll at 120 qpm (12 steps per beat)."""
    from harmonycloak.evaluate.harness import as_roll as roll

    return roll(phrases)


def craft(name: str, protected: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """The cloaked copy of ``protected`` and a summary of the perturbation
    (:func:`harmonycloak.evaluate.harness.craft_midi` against a target from scratch)."""
    from harmonycloak.evaluate.harness import craft_midi
    from harmonycloak.perturb.optimize import EngineSettings
    from harmonycloak.targets.registry import DEFAULT_ALPHA, new_target

    alpha = DEFAULT_ALPHA[name] if args.alpha is None else args.alpha
    settings = EngineSettings(args.rounds, args.outer_steps, args.inner_steps, args.pgd_step,
                              alpha, 16)
    return craft_midi(protected, new_target(name, seed=1), settings=settings, seed=0)


def attack(name: str, protected: np.ndarray, rest: np.ndarray, steps: int):
    """Train an attacker from scratch; loss on ``protected`` every 25 steps
    (:func:`harmonycloak.evaluate.harness.train_attacker`)."""
    from harmonycloak.evaluate.harness import train_attacker
    from harmonycloak.targets.registry import ATTACKER_OPTIMIZER, new_target

    optimizer, lr = ATTACKER_OPTIMIZER[name]
    target = new_target(name, seed=7, optimizer=optimizer, lr=lr)
    data = torch.from_numpy(np.concatenate([protected, rest]))
    curves = train_attacker(target, data, {"seen": torch.from_numpy(protected)}, steps=steps,
                            batch_size=16, eval_every=25, seed=3)
    return target, [(int(s), v) for s, v in curves["seen"]]


def metrics(phrases: np.ndarray) -> dict[str, float]:
    """Mean EB, UPC, QN over pitched tracks, DP of the drums and mean TD, phrases as one
    roll (:func:`harmonycloak.evaluate.harness.midi_metrics`)."""
    from harmonycloak.evaluate.harness import midi_metrics

    return midi_metrics(phrases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="symbolic-lm", choices=("musegan", "symbolic-lm"))
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "dev-midi",
                        help="MIDI corpus folder (default data/dev-midi, the music21 corpus; "
                             "data/dev-grooves is the mma corpus with performed velocities)")
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

    phrases = load_phrases(args.corpus, args.files, args.phrases)
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
    result = {"target": args.target, "corpus": str(args.corpus), "share": args.share,
              "phrases": len(phrases), "steps": args.steps, "cloak": summary, "clean": clean,
              "cloaked": cloak,
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
