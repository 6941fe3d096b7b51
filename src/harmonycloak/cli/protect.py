"""``harmonycloak protect IN... -o OUT``: make music unlearnable.

This version protects MIDI white-box against a known model (``--target musegan`` or
``symbolic-lm``). Audio protection and the black-box mode (which will become the default)
arrive with later versions and are refused with a plain message until then.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out

class Mode(str, Enum):
    whitebox = "whitebox"
    blackbox = "blackbox"


class TargetName(str, Enum):
    musegan = "musegan"
    symbolic_lm = "symbolic-lm"


def _expand(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every file named or inside a folder."""
    from harmonycloak.errors import InputError
    from harmonycloak.io.midi import MIDI_SUFFIXES

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith("."))
            found += [(p, p.relative_to(item)) for p in files if p.suffix.lower() in MIDI_SUFFIXES]
        elif item.exists():
            found.append((item, Path(item.name)))
        else:
            raise InputError(f"{item}: file not found; check the path")
    if not found:
        raise InputError(f"{', '.join(map(str, inputs))}: no MIDI files found to protect")
    return found


def _plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file to ``output`` itself when it has a suffix, else
    everything into the folder ``output`` with the inputs' layout mirrored."""
    from harmonycloak.errors import InputError
    from harmonycloak.io.midi import MIDI_SUFFIXES

    files = _expand(inputs)
    single = len(files) == 1 and not inputs[0].is_dir() and output.suffix != ""
    pairs = [(files[0][0], output)] if single else [(f, output / rel) for f, rel in files]
    for src, dst in pairs:
        if src.suffix.lower() not in MIDI_SUFFIXES:
            raise InputError(f"{src}: audio protection is not in this version yet; it protects "
                             "MIDI files (.mid, .midi) for now")
        if dst.suffix.lower() not in MIDI_SUFFIXES:
            raise InputError(f"{dst}: a protected MIDI file must be written as .mid or .midi")
        if dst.resolve() == src.resolve():
            raise InputError(f"{dst}: would overwrite the input; choose another output name")
    return pairs


def _run_one(src: Path, dst: Path, progress: Any, **kwargs: Any) -> dict[str, Any]:
    from harmonycloak.pipeline import protect_midi

    engine = kwargs["config"].engine
    task = progress.add_task(f"{src.name}: starting", total=engine.outer_rounds * engine.inner_steps)

    def on_iteration(info: dict[str, Any]) -> None:
        progress.update(task, advance=1, description=(
            f"{src.name}: round {info['round'] + 1}/{engine.outer_rounds}, loss {info['generative']:.4f}"))

    report = protect_midi(src, dst, progress=lambda msg: progress.update(task, description=f"{src.name}: {msg}"),
                          on_iteration=on_iteration, **kwargs)
    progress.update(task, completed=engine.outer_rounds * engine.inner_steps)
    return report


def protect(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., help="MIDI files or folders to protect.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (one input) or folder.",
                                show_default=False),
    mode: Mode = typer.Option(Mode.whitebox, "--mode", help="whitebox: against a known model."),
    target: TargetName = typer.Option(TargetName.musegan, "--target", help="The model to protect against."),
    model: Path = typer.Option(None, "--model", help="Folder of a trained checkpoint of the target.",
                               file_okay=False),
    corpus: Path = typer.Option(Path("data/dev-midi"), "--corpus",
                                help="Without --model: MIDI folder to train the target on (once; cached)."),
    preset: str = typer.Option("standard-v1", "--preset", help="light-v1, standard-v1 or strong-v1."),
    seed: int = typer.Option(0, "--seed", help="Same input, preset and seed give the same output."),
    watermark_key: Path = typer.Option(None, "--watermark-key", help="Watermark key file (audio only)."),
    watermark_payload: str = typer.Option(None, "--watermark-payload", help="Watermark payload (hex)."),
    report: Path = typer.Option(None, "--report", help="Report JSON path (one input only; "
                                "default: OUT.report.json beside each output).", dir_okay=False),
    force: bool = options.FORCE,
) -> None:
    """Make MIDI unlearnable for a generative model while it sounds the same.

    Raises the velocities of the dominant notes (and may add quiet notes at the dominant
    pitch) within the masking bounds, so that the model's training loss on the file
    collapses: it believes there is nothing left to learn.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harmonycloak.config import preset as get_preset
    from harmonycloak.config import resolve_device
    from harmonycloak.errors import InputError
    from harmonycloak.pipeline import TargetChoice

    if mode is Mode.blackbox:
        raise InputError("--mode blackbox is not in this version yet; use --mode whitebox "
                         "--target musegan|symbolic-lm")
    if watermark_key or watermark_payload:
        raise InputError("--watermark-key/--watermark-payload mark audio; MIDI files cannot carry "
                         "the audio watermark")
    config = get_preset(preset)
    pairs = _plan(inputs, output)
    if report is not None and len(pairs) > 1:
        raise InputError("--report names one file; with several inputs each report goes beside its output")
    device = resolve_device(options.state(ctx).device)
    choice = TargetChoice(name=target.value, model_dir=str(model) if model else None, corpus_dir=str(corpus))
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        for src, dst in pairs:
            result = _run_one(src, dst, progress, config=config, target=choice, seed=seed,
                              device=device, report_path=report, force=force)
            losses = result["losses"]["after"]
            out.print(f"{dst}: loss {losses['clean']:.4f} clean -> {losses['protected']:.4f} protected; "
                      f"{result['perturbation']['notes_changed']} notes raised, "
                      f"{result['perturbation']['notes_added']} added", markup=False)
