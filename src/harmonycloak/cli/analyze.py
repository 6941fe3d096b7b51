"""``harmonycloak analyze IN [--json] [--plot OUT.png]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _print_human(report: Any) -> None:
    from rich.table import Table

    m = report.masking
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("file", report.file),
        ("duration", f"{report.duration_s:.2f} s"),
        ("sample rate", f"{report.sample_rate_hz} Hz"),
        ("channels", str(report.channels)),
        ("loudness", _fmt(report.lufs, "LUFS")),
        ("peak", f"{_fmt(report.peak_dbfs, 'dBFS', 2)} (true peak {_fmt(report.true_peak_dbtp, 'dBTP', 2)})"),
        ("dominant tone", "none" if report.dominant_hz_median is None else
         f"median {report.dominant_hz_median:.0f} Hz ({report.dominant_note_median}); "
         f"present in {report.dominant_active_share:.0%} of the {report.config['window_ms']:g} ms windows"),
        ("masking headroom", f"median {m.median_headroom_db:.1f} dB above the threshold of hearing "
         f"(10th percentile {m.p10_headroom_db:.1f} dB)"),
        ("signal-to-mask", _fmt(m.median_smr_db, "dB (median)")),
        ("nothing can hide", f"{m.quiet_share:.0%} of the time"),
    ]
    if report.plot:
        rows.append(("plot", report.plot))
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    for note in report.notes:
        err.print(f"note: {note}", markup=False)


def _print_human_midi(report: Any) -> None:
    from rich.table import Table

    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("file", report.file)
    head.add_row("duration", f"{report.duration_s:.2f} s")
    head.add_row("tempo", f"{report.tempo_qpm:.1f} quarter notes per minute"
                 + (f" ({report.tempo_changes} tempo changes)" if report.tempo_changes else ""))
    head.add_row("meter", ", ".join(report.time_signatures))
    head.add_row("dominant note", report.dominant_note_median or "none")
    out.print(head)
    tracks = Table(title=None, box=None)
    for column in ("track", "program", "notes", "dominant note", "playing"):
        tracks.add_column(column, justify="left" if column == "track" else "right")
    for t in report.tracks:
        tracks.add_row(t.name + (" (drums)" if t.is_drum else ""), str(t.program), str(t.notes),
                       t.dominant_note_median or "-", f"{t.active_share:.0%}")
    out.print(tracks)
    for note in report.notes:
        err.print(f"note: {note}", markup=False)


def analyze(
    ctx: typer.Context,
    path: Path = options.input_path("Audio (WAV, FLAC, OGG, Opus, MP3, M4A) or MIDI file to analyze."),
    as_json: bool = options.JSON,
    plot: Path = options.PLOT,
    window_ms: float = options.WINDOW_MS,
    force: bool = options.FORCE,
) -> None:
    """Measure a track: loudness, peaks, dominant tones and how much the music masks.

    The masking threshold (MPEG-1 psychoacoustic model 1 with temporal masking) tells how
    loud added sound may be and stay hidden under the music; this is where harmonycloak
    puts its protective noise. For a MIDI file: tracks (MuseGAN's five), notes, tempo,
    meter and each track's dominant note.
    """
    from harmonycloak.config import AnalysisConfig, resolve_device
    from harmonycloak.pipeline import analyze as run_analysis

    device = resolve_device(options.state(ctx).device)
    with err.status("reading", spinner="dots") as status:
        report = run_analysis(
            path,
            config=AnalysisConfig(window_ms=window_ms),
            device=device,
            plot=plot,
            force=force,
            progress=lambda msg: status.update(f"{msg} {path.name}"),
        )
    if as_json:
        out.file.write(json.dumps(report.to_json()) + "\n")
    elif hasattr(report, "tracks"):
        _print_human_midi(report)
    else:
        _print_human(report)
