"""The protection report's figures as the page shows them: value, unit, one line saying
what it means, and whether it is where it should be.

All numbers come from the report ``protect`` wrote (see ``docs/architecture.md``), except
ViSQOL, which is measured here on an excerpt when ``visqol-python`` is installed (the
``bench`` extra): ViSQOL v3 audio mode, mono downmix resampled to 48 kHz, as the
watermark benchmark does.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["audio_figures", "job_figures", "midi_figures", "visqol_score"]


def _figure(key: str, label: str, value: Any, unit: str, explain: str, *,
            good: bool | None = None, digits: int = 2) -> dict[str, Any]:
    shown = "n/a" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))
    return {"key": key, "label": label, "value": value, "unit": unit,
            "display": shown + (f" {unit}" if unit and value is not None else ""),
            "explain": explain, "good": good}


def _ratio_figure(key: str, label: str, triplet: dict[str, Any] | None, explain: str) -> dict[str, Any]:
    ratio = None if not triplet else triplet.get("protected_over_clean")
    return _figure(key, label, ratio, "×", explain, good=None if ratio is None else ratio < 1.0, digits=3)


def audio_figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures of an audio report: SNR, NMR p95, loss ratios (written file, after MP3 128
    kbps), and the watermark check when there is one."""
    check = report.get("verification") or {}
    snr, nmr = check.get("snr_db"), (check.get("nmr") or {}).get("p95_db")
    clap = report.get("target") == "clap-shift"
    what = "embedding similarity" if clap else "model loss"
    goal = ("below 1 means the model's view of your music moved away from the original"
            if clap else "below 1 means the model finds less in the file to learn from")
    figures = [
        _figure("snr_db", "Signal-to-noise ratio", snr, "dB",
                "How much louder your music is than the sound that was added; higher is quieter.",
                good=None if snr is None else snr >= 10.0, digits=1),
        _figure("nmr_p95_db", "Noise-to-mask ratio (95th percentile)", nmr, "dB",
                "How close the added sound comes to being audible over your music; below 0 dB it "
                "stays masked in 95 % of moments.", good=None if nmr is None else nmr < 0.0, digits=1),
        _ratio_figure("loss_ratio", f"Protected ÷ original {what}", check.get("losses"),
                      f"On the model the protection was computed against: {goal}."),
        _ratio_figure("loss_ratio_mp3", "… after MP3 128 kbps", (check.get("after_codecs") or {}).get("mp3_128k"),
                      "The same after the file goes through MP3 at 128 kbps, as uploads and "
                      "streaming do."),
    ]
    mark = report.get("watermark")
    if mark:
        found = (mark.get("verification") or {}).get("written") or {}
        after = (mark.get("verification") or {}).get("mp3_64k") or {}
        ok = bool(found.get("detected") and found.get("payload_matches"))
        survives = bool(after.get("detected") and after.get("payload_matches"))
        figures.append(_figure(
            "watermark", "Watermark", "reads back" if ok else "NOT read back", "",
            f"Your keyed id {mark.get('payload')} is hidden in the file"
            + (" and survives MP3 at 64 kbps." if survives else
               "; it was not found after MP3 at 64 kbps." if ok else
               "; detection needs about 3 s of music."), good=ok))
    return figures


def midi_figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures of a MIDI report: loss ratio, notes raised and added, velocity change."""
    losses = report.get("losses") or {}
    ratio = losses.get("protected_over_clean_after")
    pert = report.get("perturbation") or {}
    return [
        _figure("loss_ratio", "Protected ÷ original model loss", ratio, "×",
                "On the model the protection was computed against: below 1 means it finds less "
                "in the file to learn from.", good=None if ratio is None else ratio < 1.0, digits=3),
        _figure("notes_changed", "Notes made louder", pert.get("notes_changed"), "",
                "Every original note is kept; these play slightly louder."),
        _figure("notes_added", "Quiet notes added", pert.get("notes_added"), "",
                "Very soft notes at the pitch already sounding, hidden under it."),
        _figure("mean_velocity_raise", "Average loudness change", pert.get("mean_velocity_raise"),
                "velocity steps", "Of the raised notes, on MIDI's 0-127 velocity scale.", digits=1),
    ]


def visqol_score(reference: np.ndarray, degraded: np.ndarray, sample_rate_hz: int) -> float | None:
    """ViSQOL v3 (audio mode) MOS-LQO of ``degraded`` against ``reference`` (float
    ``[channels, samples]`` at ``sample_rate_hz``; mono downmix at 48 kHz), 1-5; None when
    ``visqol-python`` is not installed or cannot score the excerpt (too short)."""
    try:
        from visqol import VisqolApi
    except ImportError:
        return None
    from harmonycloak.io import codecs

    def prep(x: np.ndarray) -> np.ndarray:
        mono = np.asarray(x, dtype=np.float32).mean(axis=0, keepdims=True)
        return codecs.resample(mono, sample_rate_hz, 48000)[0].astype(np.float64)

    logging.disable(logging.WARNING)
    try:
        api = VisqolApi()
        api.create(mode="audio")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(api.measure_from_arrays(prep(reference), prep(degraded), 48000).moslqo)
    except Exception:  # the library raises plain exceptions for excerpts it cannot align
        return None
    finally:
        logging.disable(logging.NOTSET)


def job_figures(report: dict[str, Any], files: Any, *, settings: Any,
                check: Callable[[], None]) -> dict[str, Any]:
    """What the page shows for a finished job: the figures, the report's notes, a few
    facts (target, preset, seconds), and for the embedding shift the report's 2-D view of
    clean vs protected embeddings (None otherwise)."""
    if files.protected.suffix == ".mid":
        figures = midi_figures(report)
    else:
        figures = audio_figures(report)
        if settings.measure_visqol:
            check()
            score = _visqol_of(files, settings.visqol_excerpt_s)
            if score is not None:
                figures.insert(0, _figure(
                    "visqol", f"ViSQOL (first {settings.visqol_excerpt_s:g} s)", score, "",
                    "A model of listeners' quality scores, 1-5: about 4.7 means no audible "
                    "difference; MP3 at 128 kbps scores 4.2-4.5.", good=score >= 4.5))
    return {"figures": figures, "notes": list(report.get("notes") or []),
            "target": report.get("target"), "mode": report.get("mode"),
            "preset": report.get("preset"), "seconds": report.get("seconds"),
            "watermark": (report.get("watermark") or {}).get("payload"),
            "embedding_view": (report.get("verification") or {}).get("embedding_view")}


def _visqol_of(files: Any, excerpt_s: float) -> float | None:
    from harmonycloak.io.audio import load_audio

    original, protected = load_audio(files.original), load_audio(files.protected)
    length = min(original.num_samples, protected.num_samples, int(excerpt_s * original.sample_rate_hz))
    if original.sample_rate_hz != protected.sample_rate_hz or length < original.sample_rate_hz:
        return None  # ViSQOL needs about a second of audio to align its patches
    return visqol_score(original.samples[:, :length], protected.samples[:, :length], original.sample_rate_hz)
