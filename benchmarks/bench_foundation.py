"""Foundation benchmarks: masking analysis and MP3 decoding of a 3-minute track.

    .venv/bin/python benchmarks/bench_foundation.py [--track FILE] [--repeats 3]

Targets (issue 2, on a 2-core CPU): the masking analysis (MPEG-1 model 1 global
threshold with temporal masking, every channel) of a 3-minute 44.1 kHz stereo track in at
most 3 s (60x real time); decoding a 3-minute MP3 in at most 1 s.

The track is the dev music (``scripts/get_dev_music.sh``) looped or cut to exactly 180 s;
without it, a synthetic music-like signal is used and the output says so. Prints one line
per figure with the best of ``--repeats`` runs and the real-time factor, then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TRACK_S = 180.0
SAMPLE_RATE_HZ = 44_100
ROOT = Path(__file__).resolve().parent.parent


def _track(path: Path | None) -> tuple[np.ndarray, str]:
    from harmonycloak.io.audio import load_audio
    from harmonycloak.io.codecs import resample

    candidates = [path] if path else sorted((ROOT / "data" / "dev-music").glob("*.ogg"))
    for candidate in candidates:
        if candidate and candidate.exists():
            clip = load_audio(candidate)
            x = clip.samples
            if clip.sample_rate_hz != SAMPLE_RATE_HZ:
                x = resample(x, clip.sample_rate_hz, SAMPLE_RATE_HZ)
            if x.shape[0] == 1:
                x = np.repeat(x, 2, axis=0)
            n = int(TRACK_S * SAMPLE_RATE_HZ)
            reps = int(np.ceil(n / x.shape[1]))
            return np.tile(x[:2], (1, reps))[:, :n].copy(), candidate.name
    rng = np.random.default_rng(0)
    t = np.arange(int(TRACK_S * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    tones = sum(np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t * k))
                for k, f in enumerate((110, 220, 440, 660, 1320), start=1))
    x = 0.08 * tones + 0.01 * rng.standard_normal(t.size)
    return np.stack([x, np.roll(x, 441)]).astype(np.float32), "synthetic (no dev music found)"


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", type=Path, default=None, help="audio file to use instead of the dev music")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from harmonycloak.clip import AudioClip
    from harmonycloak.io.audio import load_audio, save_audio
    from harmonycloak.psychoacoustics import masking_threshold

    samples, name = _track(args.track)
    signal = torch.from_numpy(samples)
    load_before = os.getloadavg()[0]
    masking_threshold(signal[:, : SAMPLE_RATE_HZ], SAMPLE_RATE_HZ)  # warm-up
    # masking_threshold runs on one PyTorch thread (see psychoacoustics/_threads.py)
    t_mask = _best(lambda: masking_threshold(signal, SAMPLE_RATE_HZ, temporal=True), args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        mp3 = Path(tmp) / "track.mp3"
        save_audio(AudioClip(samples, SAMPLE_RATE_HZ), mp3, bitrate_kbps=192)
        t_mp3 = _best(lambda: load_audio(mp3), args.repeats)

    results = {
        "track": name,
        "track_s": TRACK_S,
        "load_average_1min": round(load_before, 2),
        "masking_s": round(t_mask, 3),
        "masking_realtime_x": round(TRACK_S / t_mask, 1),
        "masking_target_s": 3.0,
        "mp3_decode_s": round(t_mp3, 3),
        "mp3_decode_realtime_x": round(TRACK_S / t_mp3, 1),
        "mp3_decode_target_s": 1.0,
    }
    print(f"track: {name}, {TRACK_S:.0f} s, 44.1 kHz stereo; machine load {load_before:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"masking analysis: {t_mask:.3f} s  ({TRACK_S / t_mask:.0f}x real time; target <= 3 s)")
    print(f"MP3 decode:       {t_mp3:.3f} s  ({TRACK_S / t_mp3:.0f}x real time; target <= 1 s)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
