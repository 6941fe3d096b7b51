"""Audio protection speed and effect: a 25 s stereo 44.1 kHz excerpt, white-box.

    .venv/bin/python benchmarks/bench_protect_audio.py [--targets codec-lm,latent-diffusion,clap-shift]
        [--preset standard-v1] [--track data/dev-music/battle-epic.ogg] [--start-s 20]
        [--seconds 25] [--threads 1]

Target (issue 10, on a 2-core CPU): a 25 s stereo 44.1 kHz clip protected white-box in at
most 25 s. The excerpt is cut from a dev track (``scripts/get_dev_music.sh``) and written
as 16-bit WAV to a temporary folder; each target is ``protect``'s own default (trained
once on the dev music and cached, which is not timed). Prints, per target, the protection
time and its real-time factor, the loss ratio protected / clean on the written file and
after MP3 128 kbps, SNR and NMR p95 from the report, the load average, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="codec-lm,latent-diffusion,clap-shift")
    parser.add_argument("--preset", default="standard-v1")
    parser.add_argument("--track", default=str(ROOT / "data" / "dev-music" / "battle-epic.ogg"))
    parser.add_argument("--start-s", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from harmonycloak.config import preset
    from harmonycloak.io.audio import load_audio
    from harmonycloak.pipeline import AudioTargetChoice, protect_audio
    from harmonycloak.targets.audio_registry import cached_audio_target

    torch.set_num_threads(args.threads)
    clip = load_audio(args.track)
    sr = clip.sample_rate_hz
    start = int(args.start_s * sr)
    excerpt = clip.samples[:, start:start + int(args.seconds * sr)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "excerpt.wav"
        sf.write(source, excerpt.T, sr, subtype="PCM_16")
        for name in args.targets.split(","):
            cached_audio_target(name, ROOT / "data" / "dev-music", sample_rate_hz=sr, seed=0)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            report = protect_audio(source, Path(tmp) / f"{name}.flac", config=preset(args.preset),
                                   target=AudioTargetChoice(name=name), seed=0)
            took = time.perf_counter() - t0
            verify = report["verification"]
            mp3 = verify["after_codecs"].get("mp3_128k") or {}
            row = {"target": name, "seconds": round(took, 1),
                   "realtime_factor": round(args.seconds / took, 3),
                   "ratio_written": verify["losses"]["protected_over_clean"],
                   "ratio_mp3_128k": mp3.get("protected_over_clean"),
                   "snr_db": verify.get("snr_db"), "nmr_p95_db": (verify.get("nmr") or {}).get("p95_db"),
                   "load_average": round(load, 2)}
            rows.append(row)
            print(f"{name:17s} {took:6.1f} s ({args.seconds / took:.2f}x real time; target <= "
                  f"{args.seconds:.0f} s), loss ratio {row['ratio_written']} written, "
                  f"{row['ratio_mp3_128k']} after MP3 128k, SNR {row['snr_db']} dB, "
                  f"NMR p95 {row['nmr_p95_db']} dB, load {load:.2f}")
    print(json.dumps({"track": Path(args.track).name, "start_s": args.start_s,
                      "seconds": args.seconds, "preset": args.preset, "threads": args.threads,
                      "rows": rows}))


if __name__ == "__main__":
    main()
