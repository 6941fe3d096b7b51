"""Black-box transfer (issue 4): does noise crafted on the surrogate bag make music
unlearnable for models that are not in the bag?

    .venv/bin/python benchmarks/transfer_blackbox.py [--clips 36] [--share 0.25]
        [--seconds 4] [--preset standard-v1] [--steps 150] [--attackers codec-lm,latent-diffusion,contrastive]
        [--warm-steps 0] [--families codec-lm,...] [--alpha A] [--json-out F]

1. Excerpts of the dev music (``scripts/get_dev_music.sh``), as
   ``benchmarks/unlearnable_audio.py`` takes them; the first ``share`` is the protected set P.
2. The cloak is crafted on P with the bag (:data:`harmonycloak.targets.bag.AUDIO_BAG`,
   random-init surrogates, :func:`harmonycloak.perturb.optimize.meta_min_min` with the
   preset's ``blackbox`` settings), under the masked-spectrum budget, then quantized to
   16 bits as a written file would be.
3. Held-out attackers, none of them in the bag (other sizes, widths and front ends): the
   default CPU configs of the codec-token LM (4 x 256 codes, d 256 x 4 layers: the bag's
   largest is 2 x 128), the latent diffusion model (0.6 M VAE + 3.2 M U-Net with attention;
   the bag's have no attention and 0.1 M U-Nets) and the contrastive encoder (4 levels
   32-128 wide, 1024-point FFT, 64 mels, 10 s windows; the bag's are 8-32 wide, 2.5 s).
   Each trains from scratch (Adam 3e-4, batch 8, same seed and batches) on the rest of the
   music with P clean, and again with P cloaked; every 25 steps its mean loss on P as it
   sees it. The transfer matrix is the ratio cloaked / clean per attacker and step.

Prints the matrix, SNR and NMR of the cloak, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unlearnable_audio import SAMPLE_RATE_HZ, as_16bit, load_excerpts  # noqa: E402


def craft_blackbox(protected: torch.Tensor, preset_name: str, seed: int = 0, warm_steps: int = 0,
                   families: tuple[str, ...] | None = None, alpha: float | None = None):
    """The bag's cloak on ``protected [n, channels, samples]`` (the clips side by side as
    one piece, its masking budget, the clips as the batch). ``warm_steps``: each surrogate
    first trains that many steps on the clean clips (batches of 8), so the loop starts
    from models that have seen the music rather than from random weights."""
    from harmonycloak.config import preset
    from harmonycloak.perturb.audio_delta import MaskedSpectrumPerturbation
    from harmonycloak.perturb.budget import masked_spectrum_budget
    from harmonycloak.perturb.dsp import resample
    from harmonycloak.perturb.optimize import MetaSettings, meta_min_min
    from harmonycloak.pipeline import SharedDelta
    from harmonycloak.psychoacoustics.nmr import nmr_summary, noise_to_mask_ratio
    from harmonycloak.targets.bag import AUDIO_BAG, AUDIO_MODEL_RATE_HZ, bag_alphas, build_bag

    bb = preset(preset_name).blackbox
    specs = tuple(m for m in AUDIO_BAG if families is None or m.family in families)
    if len(specs) < 2:
        raise SystemExit(f"--families {families}: keep at least two members of the bag")
    bb = replace(bb, sample_size=min(bb.sample_size, len(specs)))
    n = protected.shape[-1]
    long = torch.cat(list(protected), dim=1)
    perturbation = MaskedSpectrumPerturbation(masked_spectrum_budget(long, SAMPLE_RATE_HZ), seed=seed)
    shared = SharedDelta(perturbation)

    def to_model(y: torch.Tensor) -> torch.Tensor:
        return resample(torch.stack(torch.split(y, n, dim=1)), SAMPLE_RATE_HZ, AUDIO_MODEL_RATE_HZ)

    settings = replace(MetaSettings.from_config(bb, examples=min(8, len(protected))),
                       batch_size=min(8, len(protected)),
                       pgd_batch=bb.pgd_batch and max(bb.pgd_batch, len(protected) // 3))
    t0 = time.perf_counter()
    bag = build_bag(specs, seed=seed)
    warm_data = to_model(long)
    gen = torch.Generator().manual_seed(seed + 1)
    for member in bag:
        for _ in range(warm_steps):
            member.train_step(warm_data[torch.randint(len(warm_data), (min(8, len(warm_data)),), generator=gen)])
    result = meta_min_min(long, shared, bag, to_model=to_model,
                          regularizer=shared.regularizer,
                          alphas=bag_alphas(specs, alpha), settings=settings,
                          generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        cloaked_long = perturbation.apply(long, result.params)
    noise = cloaked_long - long
    nmr = nmr_summary(noise_to_mask_ratio(noise, long, SAMPLE_RATE_HZ))
    return (torch.stack(torch.split(cloaked_long, n, dim=1)),
            {"craft_s": round(time.perf_counter() - t0, 1),
             "nmr": {k: round(float(v), 3) for k, v in nmr.items()},
             "history": result.history})


def new_attacker(name: str, seed: int):
    """A held-out architecture at the file's rate, Adam 3e-4 (the attacker's optimizer)."""
    if name == "codec-lm":
        from harmonycloak.targets.codec_lm import CodecLMTarget

        return CodecLMTarget(sample_rate_hz=SAMPLE_RATE_HZ, seed=seed, optimizer="adam", lr=3e-4)
    if name == "latent-diffusion":
        from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget

        return LatentDiffusionTarget(sample_rate_hz=SAMPLE_RATE_HZ, seed=seed, optimizer="adam",
                                     lr=3e-4)
    from harmonycloak.perturb.dsp import resample
    from harmonycloak.targets.bag import AUDIO_MODEL_RATE_HZ, ContrastiveTarget
    from harmonycloak.targets.embedding import ContrastiveEncoderConfig

    class AtFileRate:  # the contrastive target takes 16 kHz; resample the file-rate batch
        def __init__(self) -> None:
            self.inner = ContrastiveTarget(ContrastiveEncoderConfig(window_s=2.0), seed=seed)
            self.inner.optimizer = torch.optim.Adam(self.inner.encoder.parameters(), lr=3e-4)

        def example_losses(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.example_losses(resample(x, SAMPLE_RATE_HZ, AUDIO_MODEL_RATE_HZ))

        def train_step(self, x: torch.Tensor) -> float:
            return self.inner.train_step(resample(x, SAMPLE_RATE_HZ, AUDIO_MODEL_RATE_HZ))

    return AtFileRate()


def attack(name: str, protected: torch.Tensor, rest: torch.Tensor, steps: int) -> list[list[float]]:
    from harmonycloak.evaluate.harness import train_attacker

    model = new_attacker(name, seed=7)
    curves = train_attacker(model, torch.cat([protected, rest]), {"seen": protected}, steps=steps,
                            batch_size=8, eval_every=25, seed=3)
    return curves["seen"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=36)
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--preset", default="standard-v1")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--attackers", default="codec-lm,latent-diffusion,contrastive")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", default=None,
                        help="comma-separated bag families to keep (codec-lm, latent-diffusion, contrastive)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="regularizer weight for every surrogate (default: each family's)")
    parser.add_argument("--warm-steps", type=int, default=0,
                        help="train each surrogate this many steps on the clean protected clips first")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clips = load_excerpts(args.clips, args.seconds)
    k = max(1, round(args.share * len(clips)))
    protected, rest = clips[:k], clips[k:]
    print(f"{len(clips)} excerpts of {args.seconds} s, protected {k}; load {os.getloadavg()[0]:.2f}")
    families = tuple(args.families.split(",")) if args.families else None
    cloaked, summary = craft_blackbox(protected, args.preset, warm_steps=args.warm_steps, families=families,
                                      alpha=args.alpha)
    cloaked = as_16bit(cloaked)
    noise = cloaked - protected
    snr_db = 10 * np.log10(float(protected.square().sum() / noise.square().sum()))
    print(f"bag cloak crafted in {summary['craft_s']} s; SNR {snr_db:.1f} dB; "
          f"NMR p95 {summary['nmr']['p95_db']} dB")
    matrix: dict[str, dict[str, object]] = {}
    for name in args.attackers.split(","):
        clean = attack(name, protected, rest, args.steps)
        cloak = attack(name, cloaked, rest, args.steps)
        ratios = [round(c / b, 3) for (_, c), (_, b) in zip(cloak, clean)]
        matrix[name] = {"steps": [int(s) for s, _ in clean], "clean": [v for _, v in clean],
                        "cloaked": [v for _, v in cloak], "ratio": ratios}
        print(f"{name:17s} ratio cloaked/clean per 25 steps: " + " ".join(f"{r:.3f}" for r in ratios))
    line = json.dumps({"preset": args.preset, "warm_steps": args.warm_steps, "families": families, "alpha": args.alpha, "clips": len(clips), "protected": k,
                       "seconds": args.seconds, "snr_db": round(snr_db, 2), "nmr": summary["nmr"],
                       "craft_s": summary["craft_s"], "matrix": matrix})
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
