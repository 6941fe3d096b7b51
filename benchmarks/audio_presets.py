"""The three presets measured on dev music: quality, strength, and plain noise at the same quality.

    .venv/bin/python benchmarks/audio_presets.py [--modes whitebox:codec-lm,blackbox]
        [--presets light-v1,standard-v1,strong-v1] [--excerpts 4] [--seconds 10]
        [--measure codec-lm,clap-shift] [--threads 1] [--json-out F]

Issue 10 asks for the presets' measured ViSQOL in the README and, at the default preset, a
ViSQOL median of at least 4.5 and an NMR p95 below 0 dB on the dev music; issue 4 asks for
the black-box presets measured (quality and strength). For each excerpt, mode and preset
this runs ``protect`` exactly as the command line does (a 16-bit WAV in, FLAC out) and reads:

* the time ``protect`` took, and from its report the SNR and NMR p95 of the *written* file
  and the crafting model's loss ratio protected / clean on it and after MP3 128 kbps (for
  black-box: the report's panel of bag members);
* ViSQOL v3 (audio mode) of the written file against the excerpt;
* the *measuring models*: protect's own cached white-box targets (trained once on the dev
  music, loaded fresh, so none has seen the cloak): for ``codec-lm`` and
  ``latent-diffusion`` the loss ratio protected / clean on the written file, for
  ``clap-shift`` the cosine similarity and normalized L2 distance Δe between the window
  embeddings of the written file and the excerpt (seed 003 aims at < 0.3 and > 0.5);
* the same measures for white Gaussian noise scaled so that the excerpt scores the
  cloak's ViSQOL (the baseline of issue 10: "against plain Gaussian noise at the same
  ViSQOL").

A measuring model is a fixed model: this says how the cloak moves a model that was
already trained, not how a model learns from protected music (that is the evaluation's
figure 5, ``harmonycloak evaluate``). For the white-box rows the measuring model of the
same name has the crafting model's weights before crafting; for black-box every measuring
model is outside the bag.

Excerpts: ``--seconds`` from the middle of ``--excerpts`` dev tracks spread over the sorted
track list (``scripts/get_dev_music.sh``). Prints one table row per mode and preset
(medians over excerpts; worst ViSQOL and NMR), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "dev-music"


def pick_excerpts(count: int, seconds: float) -> list[tuple[str, np.ndarray, int]]:
    """``count`` excerpts ``(track name, [channels, samples], rate)`` from the middle of
    dev tracks spread evenly over the sorted list (stereo kept; mono made stereo)."""
    from harmonycloak.evaluate.harness import excerpts
    from harmonycloak.io.audio import load_audio
    from harmonycloak.targets.audio_registry import audio_corpus_files

    files = sorted(audio_corpus_files(CORPUS))
    if not files:
        raise SystemExit(f"no dev music under {CORPUS}: run `bash scripts/get_dev_music.sh` first")
    chosen = [files[round(i * (len(files) - 1) / max(1, count - 1))] for i in range(count)]
    out = []
    for path in dict.fromkeys(chosen):
        clip = load_audio(path)
        x = clip.samples if clip.channels == 2 else np.repeat(clip.samples[:1], 2, axis=0)
        pieces = excerpts(x, round(seconds * clip.sample_rate_hz), per=1)
        if pieces:
            out.append((path.name, np.ascontiguousarray(pieces[0]), clip.sample_rate_hz))
    return out


class Measures:
    """protect's cached white-box targets as fixed measuring models (see the module doc)."""

    def __init__(self, names: list[str], sample_rate_hz: int) -> None:
        from harmonycloak.targets.audio_registry import cached_audio_target

        self.models = {name: cached_audio_target(name, CORPUS, sample_rate_hz=sample_rate_hz,
                                                 seed=0)[0] for name in names}

    def __call__(self, clean: np.ndarray, other: np.ndarray) -> dict[str, float]:
        import torch

        from harmonycloak.evaluate.metrics.audio import embedding_shift

        x, y = torch.from_numpy(clean)[None], torch.from_numpy(other)[None]
        out = {}
        with torch.no_grad():
            for name, model in self.models.items():
                if hasattr(model, "set_reference"):
                    shift = embedding_shift(model.embed(x)[0], model.embed(y)[0])
                    out[f"{name}:cosine"] = shift["cosine"]
                    out[f"{name}:normalized_l2"] = shift["normalized_l2"]
                else:
                    out[f"{name}:ratio"] = float(model.example_losses(y).mean()
                                                 / model.example_losses(x).mean())
        return out


def protect_once(source: Path, out: Path, mode: str, preset_name: str) -> tuple[dict, float]:
    """``protect`` as the CLI runs it; returns the report and the seconds it took."""
    from harmonycloak.config import preset
    from harmonycloak.pipeline import AudioTargetChoice, BlackBoxChoice, protect_audio

    kind, _, name = mode.partition(":")
    target = BlackBoxChoice() if kind == "blackbox" else AudioTargetChoice(name=name)
    t0 = time.perf_counter()
    report = protect_audio(source, out, config=preset(preset_name), target=target, seed=0,
                           force=True)
    return report, time.perf_counter() - t0


def measure_row(report: dict, seconds: float, clean: np.ndarray, written: np.ndarray, rate: int,
                measures: Measures) -> dict:
    """One excerpt's figures for one mode and preset, with its Gaussian baseline."""
    from harmonycloak.evaluate.baselines import gaussian_at_visqol
    from harmonycloak.evaluate.metrics.perceptual import visqol

    verify = report["verification"]
    mp3 = verify["after_codecs"].get("mp3_128k") or {}
    score = visqol(clean, written, rate)
    noise = gaussian_at_visqol(clean, rate, score, seed=0)
    return {"seconds": round(seconds, 2), "visqol": score, "snr_db": verify["snr_db"],
            "nmr_p95_db": verify["nmr"]["p95_db"],
            "own_ratio": verify["losses"]["protected_over_clean"],
            "own_ratio_mp3_128k": mp3.get("protected_over_clean"),
            "cloak": measures(clean, written),
            "gaussian": {"visqol": noise.visqol, "snr_db": noise.snr_db,
                         **measures(clean, noise.samples)}}


def summarize(rows: list[dict]) -> dict:
    """Medians over excerpts (and the worst ViSQOL and NMR p95)."""
    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 4) if values else None

    out = {key: med([r[key] for r in rows]) for key in
           ("seconds", "visqol", "snr_db", "nmr_p95_db", "own_ratio", "own_ratio_mp3_128k")}
    out["visqol_worst"] = min(r["visqol"] for r in rows)
    out["nmr_p95_db_worst"] = max(r["nmr_p95_db"] for r in rows)
    for side in ("cloak", "gaussian"):
        out[side] = {key: med([r[side][key] for r in rows]) for key in rows[0][side]}
    return out


def print_row(mode: str, preset_name: str, s: dict) -> None:
    cloak, noise = s["cloak"], s["gaussian"]
    measured = "; ".join(f"{k} {cloak[k]} (noise {noise[k]})" for k in cloak
                         if k not in ("visqol", "snr_db"))
    print(f"{mode:26s} {preset_name:12s} {s['seconds']:6.1f} s  ViSQOL {s['visqol']:.3f} "
          f"(worst {s['visqol_worst']:.3f})  SNR {s['snr_db']} dB  NMR p95 {s['nmr_p95_db']} dB "
          f"(worst {s['nmr_p95_db_worst']})  own ratio {s['own_ratio']} (MP3 128k "
          f"{s['own_ratio_mp3_128k']})  |  {measured}  | noise SNR {noise['snr_db']} dB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="whitebox:codec-lm,whitebox:clap-shift,blackbox",
                        help="comma-separated: whitebox:TARGET (codec-lm, latent-diffusion, "
                             "clap-shift) or blackbox")
    parser.add_argument("--presets", default="light-v1,standard-v1,strong-v1")
    parser.add_argument("--excerpts", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--measure", default="codec-lm,clap-shift",
                        help="measuring models (protect's cached white-box targets)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from harmonycloak.io.audio import load_audio

    torch.set_num_threads(args.threads)
    chosen = pick_excerpts(args.excerpts, args.seconds)
    print(f"{len(chosen)} excerpts of {args.seconds} s: {', '.join(n for n, _, _ in chosen)}; "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}", flush=True)
    measures = Measures(args.measure.split(","), chosen[0][2])
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            for preset_name in args.presets.split(","):
                rows = []
                for i, (_, clean, rate) in enumerate(chosen):
                    source, out = Path(tmp) / f"x{i}.wav", Path(tmp) / f"x{i}.flac"
                    sf.write(source, clean.T, rate, subtype="PCM_16")
                    clean16 = load_audio(source).samples   # what protect reads
                    report, took = protect_once(source, out, mode, preset_name)
                    written = load_audio(out).samples
                    rows.append(measure_row(report, took, clean16, written, rate, measures))
                summary = summarize(rows)
                print_row(mode, preset_name, summary)
                table.append({"mode": mode, "preset": preset_name, "summary": summary,
                              "excerpts": rows})
    result = {"excerpts": [n for n, _, _ in chosen], "seconds": args.seconds,
              "threads": args.threads, "rows": table}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"rows": [{"mode": r["mode"], "preset": r["preset"], **r["summary"]}
                               for r in table]}))


if __name__ == "__main__":
    main()
