"""Figure-5 analogue for audio: is a protected share of the dev music unlearnable?

    .venv/bin/python benchmarks/unlearnable_audio.py --target codec-lm|latent-diffusion
        [--clips 108] [--share 0.15] [--seconds 4] [--mode spectrum|tone]
        [--stage1-steps 300] [--steps 300] [--rounds 3] [--inner-steps 20] [--eot none|proxy|mp3]
        [--visqol 4] [--per-codebook] [--objective lm|collapse] [--attacker-lm D,L]
        [--margin-db DB] [--attacker-stage1-seed N] [--tokenizer-ensemble K]
        [--crafter-lm D,L] [--json-out F]

1. Excerpts of ``--seconds`` from the dev music (``scripts/get_dev_music.sh``; 44.1 kHz
   stereo tracks, several excerpts per track, shuffled with seed 0); the first ``share``
   of them is the protected artist's set P.
2. The attacker's first stage (the codec LM's tokenizer, the diffusion model's VAE) is
   trained on all the clean excerpts and then frozen, as MusicGen uses a pre-trained
   EnCodec and MusicLDM a pre-trained VAE; the defender knows it (white-box).
3. The cloak is crafted on P with the engine (min-min of eq. 5 against a second-stage
   model trained alongside, the budget of ``--mode``, the expectation over ``--eot``).
4. Baseline: white Gaussian noise at the cloak's SNR on every clip of P (at equal SNR,
   unshaped noise sounds worse than the masked cloak, so this is generous to it).
5. The second stage trains from scratch (Adam, lr 3e-4, batch 8, same seed and batches)
   on the clean data with P clean, cloaked (as 16-bit files), cloaked after an MP3
   128 kbps round trip, and Gaussian-noised. Every 25 steps the mean loss on P *as that
   attacker sees it* is recorded; the ratio to the clean run at the same step is the
   figure-5 measure (issue 10's bar: <= 0.10).

Prints the curves, the ratios, SNR / NMR of the cloak, ViSQOL on ``--visqol`` clips, and
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE_HZ = 44_100


def load_excerpts(count: int, seconds: float) -> torch.Tensor:
    """``[count, 2, samples]`` excerpts, evenly spaced inside every usable dev track
    (44.1 kHz stereo tracks of at least four excerpts; six excerpts each; seed-0 shuffle)."""
    from harmonycloak.errors import InputError
    from harmonycloak.evaluate.harness import AUDIO_HINT, excerpts
    from harmonycloak.io.audio import load_audio

    n = int(seconds * SAMPLE_RATE_HZ)
    clips = []
    for path in sorted((ROOT / "data" / "dev-music").glob("*.ogg")):
        try:
            clip = load_audio(path)
        except InputError:
            continue
        x = clip.samples
        if clip.sample_rate_hz != SAMPLE_RATE_HZ or x.shape[0] != 2 or x.shape[1] < 4 * n:
            continue
        clips += excerpts(x, n, per=6, min_rms=0.0)
    if not clips:
        raise SystemExit(f"no dev music: {AUDIO_HINT}")
    order = np.random.default_rng(0).permutation(len(clips))[:count]
    return torch.from_numpy(np.stack([clips[i] for i in order])).float()


def new_target(name: str, *, seed: int, optimizer: str = "sgd", lr: float | None = None,
               lm: tuple[int, int] | None = None):
    """A fresh target at the excerpts' rate; ``lm = (d_model, n_layers)`` (codec LM only)
    changes the Transformer's size and keeps the tokenizer's config, so a first stage
    trained for the default still loads (``main`` refuses ``lm`` for another target)."""
    if name == "codec-lm":
        from dataclasses import replace

        from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget
        config = None if lm is None else replace(CodecLMConfig(), d_model=lm[0], n_layers=lm[1])
        return CodecLMTarget(config, sample_rate_hz=SAMPLE_RATE_HZ, seed=seed,
                             optimizer=optimizer, lr=lr)
    from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget
    return LatentDiffusionTarget(sample_rate_hz=SAMPLE_RATE_HZ, seed=seed, optimizer=optimizer, lr=lr)


def fit_stage1(target, data: torch.Tensor, steps: int) -> list[float]:
    if hasattr(target, "fit_tokenizer"):
        return target.fit_tokenizer(data, steps=steps)
    return target.fit_autoencoder(data, steps=steps)


def stage1_module(target):
    from harmonycloak.evaluate.harness import _stage1

    return _stage1(target)


def eot_channel(kind: str, generator: torch.Generator):
    """A callable ``x -> channel(x)`` drawing fresh parameters each call, or None."""
    from harmonycloak.perturb import channels

    if kind == "none":
        return None
    member = (channels.CodecProxy(sample_rate_hz=SAMPLE_RATE_HZ) if kind == "proxy"
              else channels.StraightThroughCodec("mp3", 128, sample_rate_hz=SAMPLE_RATE_HZ))
    mix = channels.Expectation((channels.Identity(), member), (1.0, 1.0))
    return lambda x: mix.apply(x, mix.sample(generator))


class CollapseObjective:
    """Experiment: a "target" whose loss is how far the frozen tokenizer's latents of the
    batch sit from one anchor latent (P's mean latent, residual-quantized), relative to
    the anchor's energy. Frames pulled into the anchor's cells get the same codes, and a
    token stream that repeats is the easiest thing an LM trained from scratch learns.
    Nothing to train: ``train_step`` only reports the loss."""

    name = "codec-lm-collapse"

    def __init__(self, base, protected: torch.Tensor) -> None:
        self.base = base
        with torch.no_grad():
            wave, _ = base.to_model_rate(protected)
            mean = base._encode(wave).mean(dim=(0, 1), keepdim=True)
            self.anchor = base._assign(mean, soft=False).quantized
            self.energy = float(self.anchor.square().sum())

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        from harmonycloak.targets.codec_lm import frozen

        with frozen(self.base.tokenizer):
            wave, _ = self.base.to_model_rate(x)
            latent = self.base._encode(wave)
        return (latent - self.anchor).square().sum(-1).mean() / self.energy

    @torch.no_grad()
    def example_losses(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.loss(row[None]) for row in x])

    def train_step(self, x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.loss(x))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def craft(name: str, protected: torch.Tensor, stage1: dict, args: argparse.Namespace,
          clips: torch.Tensor):
    """The cloak on P (:func:`harmonycloak.evaluate.harness.craft_audio`) against a target
    trained alongside from scratch over the frozen first stage (``--objective lm``), or
    against :class:`CollapseObjective` (``--objective collapse``, codec LM only)."""
    from harmonycloak.evaluate.harness import craft_audio
    from harmonycloak.perturb.optimize import EngineSettings

    crafter = new_target(name, seed=2, lm=args.crafter_lm)
    stage1_module(crafter).load_state_dict(stage1)
    if args.tokenizer_ensemble > 1:
        crafter = Ensemble([crafter] + [own_stage1(name, 100 + k, clips, args.stage1_steps)
                                        for k in range(1, args.tokenizer_ensemble)])
    if args.objective == "collapse":
        crafter = CollapseObjective(crafter, protected)
    channel = eot_channel(args.eot, torch.Generator().manual_seed(5))
    cloaked, summary = craft_audio(protected, crafter, sample_rate_hz=SAMPLE_RATE_HZ,
                                   settings=EngineSettings(args.rounds, 5, args.inner_steps,
                                                           args.pgd_step, args.alpha, 8),
                                   mode=args.mode, channel=channel, seed=0,
                                   margin_db=args.margin_db)
    return cloaked, summary


class Ensemble:
    """Experiment (``--tokenizer-ensemble K``): K crafting models, each over its own first
    stage; the loss is their mean and each outer step trains them all."""

    name = "ensemble"

    def __init__(self, members: list) -> None:
        self.members = members

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.loss(x) for m in self.members]).mean()

    def train_step(self, x: torch.Tensor) -> float:
        return sum(m.train_step(x) for m in self.members) / len(self.members)


def own_stage1(name: str, seed: int, clips: torch.Tensor, steps: int):
    """A fresh target from ``seed`` over a first stage of its own, fitted for ``steps``
    on ``clips`` (0: the seeded random one, frozen)."""
    model = new_target(name, seed=seed)
    fit_stage1(model, clips, steps)
    return model


def lm_size(text: str | None) -> tuple[int, int] | None:
    """``"D,L"`` → ``(d_model, n_layers)``; None stays None (the default size). Used as an
    argparse type, so a malformed size stops the run before any work."""
    if not text:
        return None
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1 or size[0] % 4:
        raise argparse.ArgumentTypeError(f"{text!r}: give width,depth as two positive whole "
                                         "numbers, the width a multiple of 4 (e.g. 128,2)")
    return size


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: use a whole number >= 1")
    return value


def as_16bit(x: torch.Tensor) -> torch.Tensor:
    from harmonycloak.evaluate.harness import as_16bit as quantize

    return quantize(x)


def mp3(x: torch.Tensor) -> torch.Tensor:
    from harmonycloak.evaluate.attacks import ATTACKS

    return torch.stack([torch.from_numpy(ATTACKS["mp3_128k"].apply(c.numpy(), SAMPLE_RATE_HZ, seed=0))
                        for c in x])


def attack(name: str, stage1: dict, protected: torch.Tensor, rest: torch.Tensor, steps: int,
           *, per_codebook: bool = False, lm: tuple[int, int] | None = None):
    """An attacker from scratch (Adam 3e-4) over the frozen first stage; its mean loss on
    ``protected`` every 25 steps (:func:`harmonycloak.evaluate.harness.train_attacker`),
    and with ``per_codebook`` (codec LM) the trained attacker's NLL per codebook on it.
    ``lm``: the attacker's Transformer size, when it is not the crafter's."""
    from harmonycloak.evaluate.harness import train_attacker

    target = new_target(name, seed=7, optimizer="adam", lr=3e-4, lm=lm)
    stage1_module(target).load_state_dict(stage1)
    curves = train_attacker(target, torch.cat([protected, rest]), {"seen": protected},
                            steps=steps, batch_size=8, eval_every=25, seed=3)
    split = codebook_nll(target, protected) if per_codebook else None
    return [(int(s), v) for s, v in curves["seen"]], split


@torch.no_grad()
def tokens(target, clips: torch.Tensor) -> torch.Tensor:
    """The codec LM's hard codes of ``clips``, ``[rows, codebooks, frames]``."""
    wave, _ = target.to_model_rate(clips)
    return target._assign(target._encode(wave), soft=False).codes


@torch.no_grad()
def codebook_nll(target, clips: torch.Tensor) -> list[float]:
    """The codec LM's mean NLL per predicted token of each codebook on ``clips`` (nats):
    where its loss on the protected clips sits (the coarse first codebook carries what the
    music is; the later ones refine the residual, where a masked δ weighs most)."""
    nll, valid, _ = target._sequence_nll(tokens(target, clips), None)
    return [round(float(nll[:, k].sum() / valid[:, k].sum().clamp_min(1)), 4)
            for k in range(nll.shape[1])]


@torch.no_grad()
def codes_changed(target, clean: torch.Tensor, cloaked: torch.Tensor) -> list[float]:
    """Share of tokens per codebook that the cloak changes (same frozen tokenizer)."""
    a, b = tokens(target, clean), tokens(target, cloaked)
    return [round(float((a[:, k] != b[:, k]).float().mean()), 4) for k in range(a.shape[1])]


def visqol_median(reference: torch.Tensor, degraded: torch.Tensor, clips: int) -> float | None:
    if clips <= 0:
        return None
    from harmonycloak.evaluate.metrics.perceptual import visqol, visqol_available

    if not visqol_available():
        return None
    scores = [visqol(reference[i].numpy(), degraded[i].numpy(), SAMPLE_RATE_HZ)
              for i in range(min(clips, len(reference)))]
    return round(float(np.median(scores)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="codec-lm", choices=("codec-lm", "latent-diffusion"))
    parser.add_argument("--clips", type=int, default=108)
    parser.add_argument("--share", type=float, default=0.15)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--mode", default="spectrum", choices=("spectrum", "tone"))
    parser.add_argument("--stage1-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inner-steps", type=positive, default=20,
                        help="PGD iterations per round (light-v1 uses 10, standard-v1 20)")
    parser.add_argument("--pgd-step", type=float, default=0.001)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--eot", default="none", choices=("none", "proxy", "mp3"))
    parser.add_argument("--visqol", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-codebook", action="store_true",
                        help="codec-lm: NLL per codebook of each trained attacker on the "
                             "protected clips, and the share of tokens the cloak changes")
    parser.add_argument("--objective", default="lm", choices=("lm", "collapse"),
                        help="what the cloak minimizes: the LM's loss (the paper's eq. 5) or, "
                             "as an experiment, the distance of every frame's latent to one "
                             "anchor (codec-lm)")
    parser.add_argument("--margin-db", type=float, default=None,
                        help="how far below the masking threshold the cloak's bounds sit "
                             "(default: the budget's, 6 dB spectrum / 3 dB tone); smaller is "
                             "louder")
    parser.add_argument("--tokenizer-ensemble", type=int, default=1, metavar="K",
                        help="experiment: craft against K models, each over its own first "
                             "stage (seeds 1, 101, 102, ...), to see whether a cloak that "
                             "moves several tokenizers at once reaches an unseen one "
                             "(with --attacker-stage1-seed)")
    parser.add_argument("--attacker-stage1-seed", type=int, default=None, metavar="N",
                        help="the attacker's first stage (tokenizer / VAE) is not the one the "
                             "cloak was crafted with but its own, built (and fitted for "
                             "--stage1-steps) from seed N: does the cloak carry over to "
                             "another tokenizer?")
    parser.add_argument("--attacker-lm", type=lm_size, default=None, metavar="D,L",
                        help="codec-lm: the attacker's Transformer width and depth (e.g. 128,2 "
                             "or 384,6) when it is not the crafter's (256,4); the tokenizer "
                             "stays the one the defender knows (a public codec, as EnCodec is "
                             "for MusicGen): does the cloak transfer to an unseen LM?")
    parser.add_argument("--crafter-lm", type=lm_size, default=None, metavar="D,L",
                        help="codec-lm: the crafting model's Transformer width and depth when "
                             "it is not the default (256,4): can a smaller, faster surrogate "
                             "craft a cloak that the default-size attacker still learns from?")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if (args.attacker_lm or args.crafter_lm) and args.target != "codec-lm":
        parser.error("--attacker-lm / --crafter-lm: only for --target codec-lm")
    torch.set_num_threads(args.threads)

    clips = load_excerpts(args.clips, args.seconds)
    n_protected = max(1, round(args.share * len(clips)))
    protected, rest = clips[:n_protected], clips[n_protected:]
    print(f"{len(clips)} excerpts of {args.seconds} s, protected {n_protected}; "
          f"load average {os.getloadavg()[0]:.2f}")
    base = new_target(args.target, seed=1)
    losses = fit_stage1(base, clips, args.stage1_steps)
    stage1 = {k: v.clone() for k, v in stage1_module(base).state_dict().items()}
    if losses:
        print(f"stage 1 ({args.stage1_steps} steps): loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    else:
        print("stage 1: not trained (a seeded random tokenizer / VAE, frozen)")
    cloaked, summary = craft(args.target, protected, stage1, args, clips)
    craft_s = summary["craft_s"]
    cloaked = as_16bit(cloaked)
    noise = cloaked - protected
    snr_db = 10 * np.log10(float(protected.square().sum() / noise.square().sum()))
    nmr = summary["nmr"]
    gen = torch.Generator().manual_seed(9)
    gaussian = torch.randn(protected.shape, generator=gen)
    scale = protected.square().mean(dim=(1, 2), keepdim=True).sqrt() / 10 ** (snr_db / 20)
    gaussian = as_16bit(protected + gaussian * scale / gaussian.square().mean(dim=(1, 2), keepdim=True).sqrt())
    print(f"cloak crafted in {craft_s:.0f} s; SNR {snr_db:.1f} dB; NMR p95 {nmr['p95_db']:.1f} dB, "
          f"max {nmr['max_db']:.1f} dB")
    quality = {"cloak": visqol_median(protected, cloaked, args.visqol),
               "gaussian": visqol_median(protected, gaussian, args.visqol)}
    if args.visqol:
        print(f"ViSQOL median on {args.visqol} clips: cloak {quality['cloak']}, "
              f"Gaussian at the same SNR {quality['gaussian']}")
    runs = {"clean": protected, "cloaked": cloaked, "cloaked+mp3-128k": mp3(cloaked),
            "gaussian": gaussian}
    if args.attacker_stage1_seed is not None:   # the attacker's own tokenizer / VAE
        other = own_stage1(args.target, args.attacker_stage1_seed, clips, args.stage1_steps)
        stage1 = {k: v.clone() for k, v in stage1_module(other).state_dict().items()}
        print(f"attacker's first stage: its own, from seed {args.attacker_stage1_seed}")
    per_codebook = args.per_codebook and args.target == "codec-lm"
    lm = args.attacker_lm
    attacked = {label: attack(args.target, stage1, data, rest, args.steps,
                              per_codebook=per_codebook, lm=lm)
                for label, data in runs.items()}
    curves = {label: curve for label, (curve, _) in attacked.items()}
    splits = {label: split for label, (_, split) in attacked.items() if split is not None}
    changed = codes_changed(base, protected, cloaked) if per_codebook else None
    if per_codebook:
        print("share of tokens the cloak changes, per codebook: " + " ".join(f"{v:.3f}" for v in changed))
        for label, split in splits.items():
            print(f"NLL per codebook at step {args.steps}, {label:17s}: "
                  + " ".join(f"{v:.3f}" for v in split))
    steps = [s for s, _ in curves["clean"]]
    print("step              " + " ".join(f"{s:>7d}" for s in steps))
    for label, curve in curves.items():
        print(f"{label:17s} " + " ".join(f"{v:7.3f}" for _, v in curve))
    ratios = {label: [round(v / c, 3) for (_, v), (_, c) in zip(curve, curves["clean"])]
              for label, curve in curves.items() if label != "clean"}
    for label, values in ratios.items():
        print(f"ratio {label:11s} " + " ".join(f"{v:7.3f}" for v in values))
    line = json.dumps({"target": args.target, "mode": args.mode, "eot": args.eot,
                       "objective": args.objective, "attacker_lm": args.attacker_lm,
                       "crafter_lm": args.crafter_lm, "rounds": args.rounds,
                       "inner_steps": args.inner_steps,
                       "margin_db": args.margin_db,
                       "attacker_stage1_seed": args.attacker_stage1_seed,
                       "tokenizer_ensemble": args.tokenizer_ensemble,
                       "clips": len(clips), "protected": n_protected, "seconds": args.seconds,
                       "snr_db": round(snr_db, 2), "nmr": nmr, "visqol": quality,
                       "craft_s": round(craft_s, 1), "curves": curves, "ratios": ratios,
                       "codebook_nll": splits or None,
                       "codes_changed": changed})
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
