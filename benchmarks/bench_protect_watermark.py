"""Cloak + watermark benchmark (issue 6, last item): which order, which budget split.

Command (2 shared cores, one thread; ~25 min with the defaults, plus ~3.5 min once to
train and cache the codec-lm target if ``$HARMONYCLOAK_CACHE`` does not hold it yet)::

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_protect_watermark.py \\
        --clips 6 --splits 1.0:0,0.5:0,0.6:2,0.7:3 --json-out bench_protect_watermark.json

What it does, all seeded (``--seed``):

* Clips: ``--clips`` excerpts of ``--clip-s`` seconds (default 10 s) from different
  tracks of the dev music (``--music``, default ``data/dev-music``; 44.1 kHz stereo) at
  random positions; excerpts quieter than -40 dBFS RMS are redrawn, files that fail to
  load (or are too short) are skipped and named. Each clip gets its own random payload;
  one random key (from the seed) marks them all.
* Target: ``codec-lm`` with its default config, as ``protect`` uses it without
  ``--model``: trained once on the dev music by the audio registry (``--train-steps`` per
  stage, default the registry's) and cached; or, with ``--fresh-target``, a seeded
  random-init :class:`~harmonycloak.targets.codec_lm.CodecLMTarget` (fit nothing). Preset
  ``--preset`` (default ``light-v1``). Each run loads the target afresh (the protection
  trains it further, the outer loop of eq. 5).
* Per clip: the plain cloak (no mark; and again with the next seed, the run-to-run
  noise floor of the ratio), then for each order (``mark-first``,
  ``cloak-first``) and each split ``STRENGTH:EXTRA_MARGIN_DB`` of ``--splits`` (the
  mark's strength; how many dB further below the masking threshold the cloak stays),
  ``protect_audio(..., watermark=(key, payload), watermark_split=...)`` writes the file
  (``--suffix``, default 24-bit FLAC).
* Measured on the written file (its report): the cloak's effect, the target's loss ratio
  protected / clean (clean = the original excerpt), and its change against the plain
  cloak, ``ratio_with_mark / ratio_plain - 1``; NMR p95 of the whole change (mark and
  cloak) against the original's masking threshold (must stay < 0 dB); the payload read
  back (detected *and* exactly the embedded payload) and its bit errors (of 162; the
  decision threshold is 18) from the written file, after MP3 64 kbps (from the report)
  and after AAC 64 kbps (round trip here). The mark alone (``embed`` on the clean
  excerpt at each split's strength) is measured too, for its NMR.

Prints one table row per (order, split) and, last, one JSON line with every number; with
``--json-out`` the same JSON goes to a file.

Measured 2026-11-21 (seed 2026; 6 excerpts: vengeful, underground, the_city_falls,
wanderer, casualties_of_war, main_menu; the registry's codec-lm after commit f009876,
tokenizer fitted 200 steps + LM 150 steps; 18 min). NMR p95 in dB (median/max), the
ratio's change against the plain cloak (median/max |.|), payload recovered and bit errors
(median/max of 162, limit 18)::

    order        split     NMR p95        ratio  change       written    MP3 64k    AAC 64k
    plain cloak  -         -2.33/-1.53    0.770
    seed + 1     -         -2.29/-1.55    0.774  +0.5/0.9 %
    mark-first   1:0       +2.41/+2.91    0.763  +0.9/8.5 %  6/6 1/2    6/6 2/3    6/6 1.5/3
    mark-first   0.5:1     -1.23/-0.40    0.790  +3.8/4.5 %  6/6 4.5/6  6/6 6/8    6/6 5/7
    mark-first   0.6:2     -1.12/-0.21    0.801  +6.1/8.5 %  6/6 2/5    6/6 3/6    6/6 3.5/6
    mark-first   0.5:0:0.5 -1.47/-0.53    0.780  +2.4/5.1 %  6/6 5.5/7  6/6 5.5/6  6/6 5/8
    mark-first   0.5:0:1   -1.85/-1.16    0.784  +4.0/5.7 %  6/6 4/6    6/6 4.5/7  6/6 4.5/6
    cloak-first  1:0       +2.49/+3.24    0.781  +2.7/7.6 %  6/6 1/2    6/6 1.5/2  6/6 1/3
    cloak-first  0.5:1     -1.21/-0.29    0.788  +4.0/7.7 %  6/6 2.5/6  6/6 4/6    6/6 5.5/6
    cloak-first  0.6:2     -0.99/-0.16    0.817  +7.0/11.1%  6/6 2/5    6/6 2.5/5  6/6 3/5

The same excerpts against the registry's earlier codec-lm (random tokenizer, LM 150
steps; 24 min) gave the same ranking: plain NMR p95 max -1.48 dB; mark-first 0.5:0:1
NMR p95 max -1.08 dB, change max 6.6 %, bit errors max 9; mark-first 0.5:1 max 3.0 % /
-0.36 dB, cloak-first 0.5:1 4.5 % / -0.22 dB; cloak-first 0.6:2 9.7 % / -0.10 dB. Chosen
(``WatermarkSplit`` defaults): mark first, strength 0.5, mark room 1, no extra margin.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from harmonycloak.clip import AudioClip  # noqa: E402
from harmonycloak.config import preset  # noqa: E402
from harmonycloak.errors import HarmonyCloakError  # noqa: E402
from harmonycloak.io import codecs  # noqa: E402
from harmonycloak.io.audio import load_audio  # noqa: E402
from harmonycloak.pipeline import (  # noqa: E402
    WATERMARK_ORDERS,
    AudioTargetChoice,
    WatermarkSplit,
    protect_audio,
)
from harmonycloak.psychoacoustics import masking_threshold, nmr_summary, noise_to_mask_ratio  # noqa: E402
from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget  # noqa: E402
from harmonycloak.watermark import WatermarkKey, detect, embed  # noqa: E402

QUIET_DBFS = -40.0


def parse_splits(text: str) -> list[tuple[float, float, float]]:
    """``"0.6:2,0.5:0:1"`` -> [(0.6, 2.0, 0.0), (0.5, 0.0, 1.0)] (strength, extra margin
    in dB, mark room)."""
    out = []
    for item in text.split(","):
        parts = [float(v) for v in item.split(":")] + [0.0, 0.0]
        out.append((parts[0], parts[1], parts[2]))
    return out


def split_name(split: tuple[float, float, float]) -> str:
    strength, margin, room = split
    return f"{strength:g}:{margin:g}" + (f":{room:g}" if room else "")


def pick_excerpts(music: Path, count: int, clip_s: float,
                  rng: np.random.Generator) -> tuple[list[tuple[str, float, AudioClip]], list[str]]:
    """``count`` loud-enough excerpts from distinct tracks; and the skipped files."""
    files = sorted(music.glob("*.ogg"))
    order = rng.permutation(len(files))
    excerpts, skipped = [], []
    for index in order:
        if len(excerpts) == count:
            break
        path = files[index]
        try:
            clip = load_audio(path)
        except HarmonyCloakError as error:
            skipped.append(f"{path.name}: {error}")
            continue
        sr = clip.sample_rate_hz
        length = int(round(clip_s * sr))
        if clip.num_samples < length + sr:
            skipped.append(f"{path.name}: shorter than {clip_s + 1:g} s")
            continue
        for _ in range(20):
            start = int(rng.integers(0, clip.num_samples - length))
            piece = np.ascontiguousarray(clip.samples[:, start:start + length])
            rms = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2)))
            if rms > 0 and 20 * np.log10(rms) > QUIET_DBFS:
                excerpts.append((path.name, start / sr, AudioClip(piece, sr, source=path.name)))
                break
        else:
            skipped.append(f"{path.name}: no excerpt louder than {QUIET_DBFS:g} dBFS")
    return excerpts, skipped


def mark_read(samples: np.ndarray, sr: int, key: WatermarkKey, payload: str) -> dict:
    found = detect(AudioClip(np.ascontiguousarray(samples, dtype=np.float32), sr), key)
    return {"recovered": bool(found.detected and found.payload == payload),
            "bit_errors": found.bit_errors if found.detected else found.closest_bit_errors}


def check_from_report(entry: dict | None) -> dict:
    if entry is None:
        return {"recovered": False, "bit_errors": None}
    return {"recovered": bool(entry["detected"] and entry["payload_matches"]),
            "bit_errors": entry["bit_errors"] if entry["detected"] else entry["closest_bit_errors"]}


def nmr_p95(noise: np.ndarray, masking) -> float:
    return nmr_summary(noise_to_mask_ratio(torch.from_numpy(np.ascontiguousarray(noise, np.float32)),
                                           masking))["p95_db"]


def run_clip(work: Path, index: int, excerpt: AudioClip, *, key: WatermarkKey, payload: str,
             splits: list[tuple[float, float]], config, target: AudioTargetChoice, suffix: str,
             seed: int) -> dict:
    sr = excerpt.sample_rate_hz
    src = work / f"clip{index}.wav"
    sf.write(src, excerpt.samples.T, sr, subtype="FLOAT")
    masking = masking_threshold(torch.from_numpy(excerpt.samples), sr)
    result: dict = {"mark_alone": {}, "runs": {}}
    for strength in sorted({s[0] for s in splits}):
        marked = embed(excerpt, key, payload, strength=strength)
        result["mark_alone"][str(strength)] = round(nmr_p95(marked.samples - excerpt.samples, masking), 3)

    def protect(name: str, run_seed: int = seed, **kwargs) -> dict:
        t0 = time.perf_counter()
        out = work / f"clip{index}-{name}{suffix}"
        report = protect_audio(src, out, config=config, target=target, seed=run_seed, force=True,
                               **kwargs)
        check = report["verification"]
        row = {"ratio": check["losses"]["protected_over_clean"],
               "ratio_mp3_64k": (check["after_codecs"]["mp3_64k"] or {}).get("protected_over_clean"),
               "nmr_p95_db": check["nmr"]["p95_db"], "snr_db": check["snr_db"],
               "seconds": round(time.perf_counter() - t0, 1)}
        if report["watermark"] is not None:
            marks = report["watermark"]["verification"]
            written = load_audio(out)
            aac = codecs.roundtrip(written.samples, sr, codec="aac", bitrate_kbps=64)
            row["mark"] = {"written": check_from_report(marks["written"]),
                           "mp3_64k": check_from_report(marks["mp3_64k"]),
                           "aac_64k": mark_read(aac, sr, key, payload)}
        return row

    plain = protect("plain")
    result["runs"]["plain"] = plain
    other = protect("plain-other-seed", run_seed=seed + 1)  # the run-to-run noise floor
    other["ratio_change"] = round(other["ratio"] / plain["ratio"] - 1.0, 4)
    result["runs"]["plain, seed + 1"] = other
    for order in WATERMARK_ORDERS:
        for strength, margin, room in splits:
            if room and order != "mark-first":
                continue  # the cloak can only make room for a mark that is already there
            split = WatermarkSplit(order=order, strength=strength, extra_margin_db=margin,
                                   mark_room=room)
            name = split_name((strength, margin, room))
            row = protect(f"{order}-{name}", watermark=(key, payload), watermark_split=split)
            row["ratio_change"] = round(row["ratio"] / plain["ratio"] - 1.0, 4)
            result["runs"][f"{order} {name}"] = row
    return result


def summarize(clips: list[dict], splits: list[tuple[float, float, float]]) -> list[dict]:
    rows = []
    n = len(clips)
    plain = [c["runs"]["plain"] for c in clips]
    for name, runs in (("plain cloak", plain), ("seed + 1", [c["runs"]["plain, seed + 1"] for c in clips])):
        rows.append({"order": name, "split": "-", "n": n,
                     "ratio_median": statistics.median(r["ratio"] for r in runs),
                     "ratio_change_median": statistics.median(r.get("ratio_change", 0.0) for r in runs),
                     "ratio_change_max_abs": max(abs(r.get("ratio_change", 0.0)) for r in runs),
                     "nmr_p95_median": statistics.median(r["nmr_p95_db"] for r in runs),
                     "nmr_p95_max": max(r["nmr_p95_db"] for r in runs)})
    for order in WATERMARK_ORDERS:
        for strength, margin, room in splits:
            name = f"{order} {split_name((strength, margin, room))}"
            if name not in clips[0]["runs"]:
                continue
            runs = [c["runs"][name] for c in clips]
            row = {"order": order, "split": split_name((strength, margin, room)), "n": n,
                   "mark_alone_nmr_p95_median": statistics.median(
                       c["mark_alone"][str(strength)] for c in clips),
                   "ratio_median": statistics.median(r["ratio"] for r in runs),
                   "ratio_change_median": statistics.median(r["ratio_change"] for r in runs),
                   "ratio_change_max_abs": max(abs(r["ratio_change"]) for r in runs),
                   "nmr_p95_median": statistics.median(r["nmr_p95_db"] for r in runs),
                   "nmr_p95_max": max(r["nmr_p95_db"] for r in runs)}
            for where in ("written", "mp3_64k", "aac_64k"):
                checks = [r["mark"][where] for r in runs]
                errors = [c["bit_errors"] for c in checks if c["bit_errors"] is not None]
                row[f"{where}_recovered"] = sum(c["recovered"] for c in checks)
                row[f"{where}_bit_errors_median"] = statistics.median(errors) if errors else None
                row[f"{where}_bit_errors_max"] = max(errors) if errors else None
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'order':<12} {'split':<10} {'alone':>6} {'NMR p95 med/max':>16} "
            f"{'ratio':>6} {'change med/max':>15} {'written':>10} {'MP3 64k':>10} {'AAC 64k':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["order"] in ("plain cloak", "seed + 1"):
            print(f"{r['order']:<12} {r['split']:<10} {'':>6} "
                  f"{r['nmr_p95_median']:>7.2f}/{r['nmr_p95_max']:<8.2f} {r['ratio_median']:>6.3f} "
                  f"{100 * r['ratio_change_median']:>+6.1f}/{100 * r['ratio_change_max_abs']:<7.1f}%")
            continue
        marks = " ".join(f"{r[w + '_recovered']}/{r['n']} {r[w + '_bit_errors_median']}/"
                         f"{r[w + '_bit_errors_max']}".rjust(10)
                         for w in ("written", "mp3_64k", "aac_64k"))
        print(f"{r['order']:<12} {r['split']:<10} {r['mark_alone_nmr_p95_median']:>6.2f} "
              f"{r['nmr_p95_median']:>7.2f}/{r['nmr_p95_max']:<8.2f} {r['ratio_median']:>6.3f} "
              f"{100 * r['ratio_change_median']:>+6.1f}/{100 * r['ratio_change_max_abs']:<7.1f}% {marks}")
    print("(split: mark strength : extra cloak margin dB [: share of the mark's power taken off "
          "the cloak's bounds per cell]; alone: the mark's own NMR p95 in dB; change: ratio with "
          "mark / ratio plain - 1, median and largest |.|; marks: recovered/clips, bit errors "
          "median/max of 162, limit 18)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", type=Path, default=ROOT / "data" / "dev-music")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--clip-s", type=float, default=10.0)
    parser.add_argument("--splits", default="1:0,0.5:1,0.6:2,0.5:0:0.5,0.5:0:1",
                        help="STRENGTH:EXTRA_MARGIN_DB[:MARK_ROOM],... (mark strength, extra "
                             "cloak margin, share of the mark's power taken off the cloak's "
                             "bounds: mark-first only)")
    parser.add_argument("--preset", default="light-v1")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--fresh-target", action="store_true",
                        help="a seeded random-init codec-lm (default config, nothing fitted) "
                             "instead of the registry's cached, trained one")
    parser.add_argument("--suffix", default=".flac")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    splits = parse_splits(args.splits)
    key = WatermarkKey(rng.bytes(32))
    excerpts, skipped = pick_excerpts(args.music, args.clips, args.clip_s, rng)
    if skipped:
        print("skipped: " + "; ".join(skipped), file=sys.stderr)
    config = preset(args.preset)
    clips = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-protect-wm-") as folder:
        if args.fresh_target:
            model_dir = Path(folder) / "codec-lm"
            CodecLMTarget(CodecLMConfig(), seed=args.seed).save(model_dir)
            target = AudioTargetChoice(name="codec-lm", model_dir=str(model_dir))
        else:
            target = AudioTargetChoice(name="codec-lm", corpus_dir=str(args.music),
                                       train_steps=args.train_steps)
        for index, (track, start_s, excerpt) in enumerate(excerpts):
            payload = rng.bytes(6).hex()
            result = run_clip(Path(folder), index, excerpt, key=key, payload=payload, splits=splits,
                              config=config, target=target, suffix=args.suffix, seed=args.seed)
            clips.append({"track": track, "start_s": round(start_s, 3), "payload": payload, **result})
            print(f"[{time.perf_counter() - start:6.0f} s] {track} @ {start_s:.1f} s: "
                  + json.dumps(result["runs"]), file=sys.stderr, flush=True)
    rows = summarize(clips, splits)
    print_table(rows)
    document = {"benchmark": "protect_watermark", "seed": args.seed, "preset": args.preset,
                "target": "codec-lm, default config, " + ("random init (fit nothing)" if args.fresh_target
                                                          else "registry-trained and cached"),
                "clip_s": args.clip_s,
                "suffix": args.suffix, "splits": args.splits, "skipped": skipped,
                "key_id": key.key_id, "summary": rows, "clips": clips,
                "seconds": round(time.perf_counter() - start, 1)}
    line = json.dumps(document)
    print(line)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
