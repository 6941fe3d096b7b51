"""``harmonycloak evaluate --profile quick|full [--data DIR] [--kind audio|midi] --out DIR``.

Trains attackers on clean and on protected music and writes ``results.json`` (keys in
``docs/evaluate.md``), ``report.md`` and PNG plots into ``--out``: see
:mod:`harmonycloak.evaluate.harness` for the experiment. ``--device`` is the root
option (``harmonycloak --device cuda evaluate ...``) or this command's own.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import Mode, err, out
from harmonycloak.config import Device


class Profile(str, Enum):
    smoke = "smoke"
    quick = "quick"
    full = "full"


class Kind(str, Enum):
    audio = "audio"
    midi = "midi"


def _summary(results: dict[str, Any], folder: Path) -> list[str]:
    """The lines printed on stdout when the evaluation is done."""
    scratch = results["effectiveness"]["scratch"]
    lines = [f"{folder / 'report.md'}: {results['profile']['name']} evaluation of "
             f"{results['kind']} ({results['mode']}, {results['target']}) in "
             f"{results['timing_s']['total']:.0f} s",
             f"  from scratch, all protected: loss ratio {_fmt(scratch['loss_ratio_seen'])} "
             f"(effect {_fmt(scratch['effect'])}; 1.0 / 0.0 means no protection)"]
    q = results["quality"]
    if results["kind"] == "audio":
        lines.append(f"  quality: ViSQOL median {_fmt(q['visqol']['median'], 2)}, SNR "
                     f"{_fmt(q['snr_db']['median'], 1)} dB, NMR p95 {_fmt(q['nmr_p95_db']['median'], 2)} dB")
    for attack in results["attacks"]:
        lines.append(f"  attack {attack['name']}: survival {_fmt(attack['survival'], 2)}")
    return lines


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def evaluate(
    ctx: typer.Context,
    profile: Profile = typer.Option(Profile.quick, "--profile", case_sensitive=False,
                                    help="quick: at most 10 minutes on a laptop CPU; full: the "
                                         "benchmark; smoke: a one-minute check that everything runs."),
    out_dir: Path = typer.Option(..., "--out", "-o", file_okay=False, show_default=False,
                                 help="Folder for results.json, report.md and the plots."),
    data: Path = typer.Option(None, "--data", file_okay=False, show_default=False,
                              help="Folder of music (audio or MIDI; labels from labels.csv, "
                                   "sub-folders or artist tags). Default: data/dev-music, or data/dev-midi "
                                   "with --kind midi."),
    kind: Kind = typer.Option(None, "--kind", case_sensitive=False, show_default=False,
                              help="audio or midi (default: whichever --data holds)."),
    mode: Mode = typer.Option(Mode.whitebox, "--mode", case_sensitive=False,
                              help="How the protected music is protected (as `protect --mode`)."),
    device: Device = typer.Option(None, "--device", case_sensitive=False, show_default=False,
                                  help="auto, cpu or cuda (default: the root --device)."),
    embedder: Path = typer.Option(None, "--embedder", file_okay=False, show_default=False,
                                  help="A CLAP checkpoint folder for FAD (default: a contrastive "
                                       "encoder trained on the clean data)."),
    seed: int = typer.Option(0, "--seed", help="Same data, profile and seed give the same numbers."),
    force: bool = options.FORCE,
) -> None:
    """Measure what protection does: train attackers on clean and protected music, try to
    strip the protection, and write a report with tables and plots."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harmonycloak.evaluate.harness import evaluate as run
    from harmonycloak.evaluate.profiles import get_profile
    from harmonycloak.evaluate.report import check_out_dir, write_outputs

    chosen = get_profile(profile.value)
    check_out_dir(out_dir, force=force)
    where = device if device is not None else options.state(ctx).device
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=max(1, total))
                if not err.is_terminal:  # a log file: one line per stage instead of bars
                    err.print(stage, markup=False)
            progress.update(tasks[stage], completed=done, total=max(1, total))

        results = run(chosen, data_dir=data, kind=kind.value if kind else None, mode=mode.value,
                      device=where.value if isinstance(where, Device) else str(where), seed=seed,
                      embedder_dir=str(embedder) if embedder else None, progress=report)
    write_outputs(results, out_dir, force=force)
    for line in _summary(results, out_dir):
        out.print(line, markup=False)
