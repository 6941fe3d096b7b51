"""Figure-5 analogue for audio: is a protected share of the dev music unlearnable?

    .venv/bin/python benchmarks/unlearnable_audio.py --target codec-lm|latent-diffusion
        [--clips 108] [--share 0.15] [--seconds 4] [--mode spectrum|tone]
        [--stage1-steps 300] [--steps 300] [--rounds 3] [--eot none|proxy|mp3]
        [--visqol 4] [--json-out F]

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
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE_HZ = 44_100


def load_excerpts(count: int, seconds: float) -> torch.Tensor:
    """``[count, 2, samples]`` excerpts, evenly spaced inside every usable dev track."""
    from harmonycloak.errors import InputError
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
        per = 6
        for k in range(per):
            start = int(x.shape[1] * (k + 1) / (per + 1)) - n // 2
            clips.append(x[:, start:start + n])
    if not clips:
        raise SystemExit("no dev music: run `bash scripts/get_dev_music.sh` first")
    order = np.random.default_rng(0).permutation(len(clips))[:count]
    return torch.from_numpy(np.stack([clips[i] for i in order])).float()


def new_target(name: str, *, seed: int, optimizer: str = "sgd", lr: float | None = None):
    if name == "codec-lm":
        from harmonycloak.targets.codec_lm import CodecLMTarget
        return CodecLMTarget(sample_rate_hz=SAMPLE_RATE_HZ, seed=seed, optimizer=optimizer, lr=lr)
    from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget
    return LatentDiffusionTarget(sample_rate_hz=SAMPLE_RATE_HZ, seed=seed, optimizer=optimizer, lr=lr)


def fit_stage1(target, data: torch.Tensor, steps: int) -> list[float]:
    if hasattr(target, "fit_tokenizer"):
        return target.fit_tokenizer(data, steps=steps)
    return target.fit_autoencoder(data, steps=steps)


def stage1_module(target):
    return target.tokenizer if hasattr(target, "tokenizer") else target.vae


def eot_channel(kind: str, generator: torch.Generator):
    """A callable ``x -> channel(x)`` drawing fresh parameters each call, or None."""
    from harmonycloak.perturb import channels

    if kind == "none":
        return None
    member = (channels.CodecProxy(sample_rate_hz=SAMPLE_RATE_HZ) if kind == "proxy"
              else channels.StraightThroughCodec("mp3", 128, sample_rate_hz=SAMPLE_RATE_HZ))
    mix = channels.Expectation((channels.Identity(), member), (1.0, 1.0))
    return lambda x: mix.apply(x, mix.sample(generator))


def craft(name: str, protected: torch.Tensor, stage1: dict, args: argparse.Namespace):
    from harmonycloak.perturb.audio_delta import DominantTonePerturbation, MaskedSpectrumPerturbation
    from harmonycloak.perturb.budget import dominant_tone_budget, masked_spectrum_budget
    from harmonycloak.perturb.optimize import EngineSettings, min_min

    n = protected.shape[-1]
    long = torch.cat(list(protected), dim=1)                      # [2, clips * n]
    if args.mode == "spectrum":
        perturbation = MaskedSpectrumPerturbation(masked_spectrum_budget(long, SAMPLE_RATE_HZ))
    else:
        perturbation = DominantTonePerturbation(dominant_tone_budget(long, SAMPLE_RATE_HZ))
    crafter = new_target(name, seed=2)
    stage1_module(crafter).load_state_dict(stage1)
    channel = eot_channel(args.eot, torch.Generator().manual_seed(5))

    def to_model(y: torch.Tensor) -> torch.Tensor:
        batch = torch.stack(torch.split(y, n, dim=1))
        return channel(batch) if channel is not None else batch

    t0 = time.perf_counter()
    result = min_min(long, perturbation, crafter, to_model=to_model,
                     regularizer=perturbation.regularizer,
                     settings=EngineSettings(args.rounds, 5, 20, args.pgd_step, args.alpha, 8),
                     generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cloaked = torch.stack(torch.split(perturbation.apply(long, result.params), n, dim=1))
    return cloaked, long, perturbation.apply(long, result.params).detach(), time.perf_counter() - t0


def as_16bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(-1, 1 - 2 ** -15) * 32768.0) / 32768.0


def mp3(x: torch.Tensor) -> torch.Tensor:
    from harmonycloak.io.codecs import roundtrip

    return torch.stack([torch.from_numpy(roundtrip(c.numpy(), SAMPLE_RATE_HZ, codec="mp3",
                                                   bitrate_kbps=128)) for c in x])


def attack(name: str, stage1: dict, protected: torch.Tensor, rest: torch.Tensor, steps: int):
    target = new_target(name, seed=7, optimizer="adam", lr=3e-4)
    stage1_module(target).load_state_dict(stage1)
    data = torch.cat([protected, rest])
    generator = torch.Generator().manual_seed(3)
    curve = []
    for step in range(steps + 1):
        if step % 25 == 0:
            curve.append((step, float(target.example_losses(protected).mean())))
        if step < steps:
            target.train_step(data[torch.randint(len(data), (8,), generator=generator)])
    return curve


def visqol_median(reference: torch.Tensor, degraded: torch.Tensor, clips: int) -> float | None:
    if clips <= 0:
        return None
    import importlib.util

    if importlib.util.find_spec("visqol") is None:
        return None
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_watermark import visqol_or_none

    scorer = visqol_or_none()
    if scorer is None:
        return None
    from harmonycloak.clip import AudioClip

    scores = [scorer(AudioClip(reference[i].numpy(), SAMPLE_RATE_HZ), degraded[i].numpy())
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
    parser.add_argument("--pgd-step", type=float, default=0.001)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--eot", default="none", choices=("none", "proxy", "mp3"))
    parser.add_argument("--visqol", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from harmonycloak.psychoacoustics.nmr import nmr_summary, noise_to_mask_ratio

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
    cloaked, long, long_cloaked, craft_s = craft(args.target, protected, stage1, args)
    cloaked = as_16bit(cloaked)
    noise = cloaked - protected
    snr_db = 10 * np.log10(float(protected.square().sum() / noise.square().sum()))
    nmr = nmr_summary(noise_to_mask_ratio(long_cloaked - long, long, SAMPLE_RATE_HZ))
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
    curves = {label: attack(args.target, stage1, data, rest, args.steps) for label, data in runs.items()}
    steps = [s for s, _ in curves["clean"]]
    print("step              " + " ".join(f"{s:>7d}" for s in steps))
    for label, curve in curves.items():
        print(f"{label:17s} " + " ".join(f"{v:7.3f}" for _, v in curve))
    ratios = {label: [round(v / c, 3) for (_, v), (_, c) in zip(curve, curves["clean"])]
              for label, curve in curves.items() if label != "clean"}
    for label, values in ratios.items():
        print(f"ratio {label:11s} " + " ".join(f"{v:7.3f}" for v in values))
    line = json.dumps({"target": args.target, "mode": args.mode, "eot": args.eot,
                       "clips": len(clips), "protected": n_protected, "seconds": args.seconds,
                       "snr_db": round(snr_db, 2), "nmr": nmr, "visqol": quality,
                       "craft_s": round(craft_s, 1), "curves": curves, "ratios": ratios})
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
