"""``harmonycloak protect IN... -o OUT``: make music unlearnable.

White-box protection against a known model, routed by each input's suffix: MIDI files
(.mid, .midi) against ``--target musegan`` (default) or ``symbolic-lm``; audio files
(.wav .flac .mp3 .ogg .opus .m4a .aac .mp4) against ``--target codec-lm`` (default),
``latent-diffusion`` or ``clap-shift``. One call may mix both kinds; ``--target`` then
applies to the kind it belongs to and must not be given for the other.

``--watermark-key KEY --watermark-payload HEX`` (both or neither) also hides the keyed
provenance watermark in each protected audio file, combined with the cloak as
:class:`harmonycloak.config.WatermarkSplit` says (measured order and budget split), and
the report records whether it reads back; MIDI files cannot carry the audio mark and are
refused with the flags. ``--mode`` goes to :func:`harmonycloak.pipeline.protect` unchanged:
the pipeline decides which modes it supports.

One input file goes straight to the pipeline. A folder, or several files, is a batch
(:mod:`harmonycloak.batch`): the layout mirrored into the output folder, each file's
state in that folder's catalog database, resumable after any interruption (run the same
command again), ``--jobs N`` worker processes (default: one per core) or ``--backend
ray`` (``--ray-address`` of a cluster; none starts Ray here). A file that fails does not
stop the batch; the summary lists it with the reason and the exit code is 2 (1 if the
cause was internal). See docs/batch.md.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import Mode, err, out

MIDI_TARGETS = ("musegan", "symbolic-lm")
AUDIO_TARGETS = ("codec-lm", "latent-diffusion", "clap-shift")


class Backend(str, Enum):
    local = "local"
    ray = "ray"


class TargetName(str, Enum):
    musegan = "musegan"
    symbolic_lm = "symbolic-lm"
    codec_lm = "codec-lm"
    latent_diffusion = "latent-diffusion"
    clap_shift = "clap-shift"


def _target_for(kind: str, target: TargetName, example: Path) -> str:
    """``--target``'s name for inputs of ``kind``; InputError when it is for the other
    kind (``example``: a file of this kind, for the message)."""
    from harmonycloak.errors import InputError

    if kind == "midi" and target.value not in MIDI_TARGETS:
        raise InputError(f"{example}: --target {target.value} protects audio, not MIDI; for MIDI "
                         f"files use --target {' or '.join(MIDI_TARGETS)}")
    if kind == "audio" and target.value not in AUDIO_TARGETS:
        raise InputError(f"{example}: --target {target.value} protects MIDI, not audio; for audio "
                         f"files use --target {', '.join(AUDIO_TARGETS[:-1])} or {AUDIO_TARGETS[-1]}")
    return target.value


def _watermark(kinds: set[str], key_path: Path | None, payload: str | None) -> tuple[Any, str] | None:
    """``(WatermarkKey, payload)`` for the watermark flags, or None without them.

    InputError, before any work: the flags with MIDI inputs, one flag without the other,
    and (from the watermark module) a bad key file or payload."""
    from harmonycloak.errors import InputError

    if key_path is None and payload is None:
        return None
    if "midi" in kinds:
        raise InputError("--watermark-key/--watermark-payload mark audio; MIDI files cannot carry "
                         "the audio watermark; protect MIDI files without these flags")
    if key_path is None or payload is None:
        given, missing = (("--watermark-key", "--watermark-payload") if payload is None
                          else ("--watermark-payload", "--watermark-key"))
        raise InputError(f"{given} needs {missing}: give both (the key file from `harmonycloak "
                         "watermark keygen` and 12 hex digits, e.g. 00000001abcd) or neither")
    from harmonycloak.watermark import load_key, parse_payload

    try:
        payload = parse_payload(payload)
    except InputError as error:  # the module names its own flag, --payload
        raise InputError(str(error).replace("--payload", "--watermark-payload", 1)) from None
    return load_key(key_path), payload


def _default_mode() -> str:
    """``pipeline.protect``'s own default mode: the command follows the pipeline."""
    import inspect

    from harmonycloak.pipeline import protect

    return str(inspect.signature(protect).parameters["mode"].default)


def _run_one(src: Path, dst: Path, progress: Any, **kwargs: Any) -> dict[str, Any]:
    """Protect one file through :func:`harmonycloak.pipeline.protect`, with a progress bar."""
    from harmonycloak.pipeline import iterations_total, protect

    total = [iterations_total(kwargs["config"])]
    task = progress.add_task(f"{src.name}: starting", total=total[0])

    def on_iteration(info: dict[str, Any]) -> None:
        total[0] = info["total"]
        progress.update(task, completed=info["step"], total=info["total"],
                        description=f"{src.name}: step {info['step']}/{info['total']}")

    report = protect(src, dst, progress=lambda msg: progress.update(task, description=f"{src.name}: {msg}"),
                     on_iteration=on_iteration, **kwargs)
    progress.update(task, completed=total[0])
    return report


def _summary(dst: Path, kind: str, report: dict[str, Any]) -> str:
    """The one line printed per protected file."""
    if kind == "midi":
        losses = report["losses"]["after"]
        return (f"{dst}: loss {losses['clean']:.4f} clean -> {losses['protected']:.4f} protected; "
                f"{report['perturbation']['notes_changed']} notes raised, "
                f"{report['perturbation']['notes_added']} added")
    check = report["verification"]
    losses, mp3 = check["losses"], check["after_codecs"].get("mp3_128k")
    snr = "n/a" if check["snr_db"] is None else f"{check['snr_db']:.1f} dB"
    ratio = "n/a" if not mp3 or mp3["protected_over_clean"] is None else f"{mp3['protected_over_clean']:.3f}"
    line = (f"{dst}: loss {losses['clean']:.4f} clean -> {losses['protected']:.4f} protected; "
            f"SNR {snr}, NMR p95 {check['nmr']['p95_db']:.1f} dB; "
            f"protected/clean after MP3 128k {ratio}")
    mark = report.get("watermark")
    if mark is not None:
        line += f"; watermark {mark['payload']}: " + ", ".join(
            f"{where} {_mark_word(found)}" for where, found in mark["verification"].items())
    return line


def _mark_word(found: dict[str, Any] | None) -> str:
    if found is None:
        return "not checked"
    if found["detected"] and found["payload_matches"]:
        return f"read back ({found['bit_errors']} bit errors)"
    return "NOT read back"


def protect(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., help="MIDI or audio files, or folders, to protect.",
                                        show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (one input) or folder.",
                                show_default=False),
    mode: Mode = typer.Option(None, "--mode", show_default=False,
                              help="whitebox: against a known model (--target); blackbox: "
                                   "against models nobody named. Default: the pipeline's."),
    target: TargetName = typer.Option(None, "--target", show_default=False,
                                      help="The model to protect against: musegan (MIDI default), "
                                           "symbolic-lm; codec-lm (audio default), "
                                           "latent-diffusion, clap-shift."),
    model: Path = typer.Option(None, "--model", help="Folder of a trained checkpoint of the target.",
                               file_okay=False),
    corpus: Path = typer.Option(None, "--corpus", show_default=False,
                                help="Without --model: the folder to train the target on, once "
                                     "(cached); default data/dev-midi for MIDI, data/dev-music "
                                     "for audio."),
    preset: str = typer.Option("standard-v1", "--preset", help="light-v1, standard-v1 or strong-v1."),
    seed: int = typer.Option(0, "--seed", help="Same input, preset and seed give the same output "
                             "(in a batch each file's seed is derived from this and its path)."),
    watermark_key: Path = typer.Option(None, "--watermark-key", dir_okay=False,
                                       help="Watermark key file (`harmonycloak watermark keygen`); "
                                            "audio only, with --watermark-payload."),
    watermark_payload: str = typer.Option(None, "--watermark-payload",
                                          help="Watermark payload: 12 hex digits (32-bit track "
                                               "id + 16-bit issuer id), with --watermark-key."),
    report: Path = typer.Option(None, "--report", help="Report JSON path (one input only; "
                                "default: OUT.report.json beside each output).", dir_okay=False),
    jobs: int = typer.Option(None, "--jobs", "-j", min=1, show_default=False,
                             help="Folders / several files: files protected at once on this "
                                  "machine (default: one per CPU core)."),
    backend: Backend = typer.Option(Backend.local, "--backend",
                                    help="Folders / several files: local worker processes, or "
                                         "ray tasks (pip install 'harmonycloak[ray]')."),
    ray_address: str = typer.Option(None, "--ray-address", show_default=False,
                                    help="With --backend ray: the cluster (e.g. ray://head:10001); "
                                         "default: start Ray on this machine."),
    ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0,
                                   help="With --backend ray: GPUs each file's task requests "
                                        "(e.g. 1, or 0.5 for two files per GPU)."),
    force: bool = options.FORCE,
) -> None:
    """Make MIDI or audio unlearnable for a generative model while it sounds the same.

    MIDI: raises the velocities of the dominant notes (and may add quiet notes at the
    dominant pitch) within the masking bounds. Audio: adds noise shaped under the music's
    masking threshold. Either way the model's training loss on the file collapses: it
    believes there is nothing left to learn. With --watermark-key and --watermark-payload,
    audio files also carry your keyed watermark, under the same masking budget.

    A folder (or several files) is a resumable batch: interrupted, run the same command
    again and it finishes the rest; each file's state is kept in OUT/.harmonycloak/.
    """
    from harmonycloak.batch.plan import plan_files
    from harmonycloak.config import preset as get_preset
    from harmonycloak.errors import InputError

    config = get_preset(preset)
    mode_name = mode.value if mode is not None else _default_mode()
    plan = plan_files(inputs, output)
    kinds = plan.kinds
    mark = _watermark(kinds, watermark_key, watermark_payload)
    batch = not plan.single and (len(plan.files) > 1 or any(item.is_dir() for item in inputs))
    if report is not None and len(plan.files) > 1:
        raise InputError("--report names one file; with several inputs each report goes beside its output")
    if model is not None and len(kinds) > 1:
        raise InputError("--model names one checkpoint, for MIDI or for audio; protect the MIDI "
                         "and the audio files in separate calls")
    # None: the pipeline's default for the mode (a --target for the wrong kind is refused here)
    targets = {kind: _target_for(kind, target, next(f.source for f in plan.files if f.kind == kind))
               if target is not None else None for kind in sorted(kinds)}
    device = options.state(ctx).device.value
    if batch:
        _run_batch(plan, mark=mark, config=config, mode=mode_name, targets=targets, model=model,
                   corpus=corpus, seed=seed, device=device, jobs=jobs, backend=backend.value,
                   ray_address=ray_address, ray_gpus=ray_gpus, force=force)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        for f in plan.files:
            extra = {"watermark": mark} if mark is not None else {}
            result = _run_one(f.source, f.output, progress, mode=mode_name, target=targets[f.kind],
                              model_dir=str(model) if model else None,
                              corpus_dir=str(corpus) if corpus else None, config=config, seed=seed,
                              device=device, report_path=report, force=force, **extra)
            out.print(_summary(f.output, f.kind, result), markup=False)


def _run_batch(plan: Any, *, mark: tuple[Any, str] | None, config: Any, mode: str,
               targets: dict[str, str | None], model: Path | None, corpus: Path | None, seed: int,
               device: str, jobs: int | None, backend: str, ray_address: str | None,
               ray_gpus: float, force: bool) -> None:
    """A folder or several files: the resumable batch driver, then its summary."""
    from harmonycloak.batch import JobSettings, run_batch

    settings = JobSettings(
        config=config, mode=mode, midi_target=targets.get("midi"), audio_target=targets.get("audio"),
        midi_model_dir=str(model.resolve()) if model and "midi" in targets else None,
        audio_model_dir=str(model.resolve()) if model and "audio" in targets else None,
        midi_corpus_dir=str(corpus.resolve()) if corpus else None,
        audio_corpus_dir=str(corpus.resolve()) if corpus else None,
        seed=seed, device=device, watermark=mark, gpus=ray_gpus)
    try:
        summary = run_batch(plan, settings, backend=backend, workers=jobs, ray_address=ray_address,
                            force=force, console=err,
                            on_done=lambda f, report: out.print(_summary(f.output, f.kind, report),
                                                                markup=False))
    except KeyboardInterrupt:
        err.print(f"interrupted: what was written is complete; run the same command again to "
                  f"protect the rest into {plan.root}", markup=False)
        raise typer.Exit(130) from None
    _print_batch_summary(summary)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _print_batch_summary(summary: Any) -> None:
    """The end of a batch on stderr: counts, then every failed file with its reason."""
    parts = [f"{len(summary.protected)} protected"]
    if summary.already_done:
        parts.append(f"{len(summary.already_done)} already done")
    if summary.adopted:
        parts.append(f"{len(summary.adopted)} found complete")
    parts.append(f"{len(summary.failed)} failed")
    files = f"{summary.planned} file{'s' if summary.planned != 1 else ''}"
    err.print(f"{summary.root}: {files}: {', '.join(parts)} "
              f"({summary.seconds:.1f} s)", markup=False)
    if summary.removed_temp_files or summary.requeued:
        err.print(f"resumed after an interruption: {len(summary.requeued)} unfinished files queued "
                  f"again, {len(summary.removed_temp_files)} partial files removed", markup=False)
    for failed in summary.failed:
        err.print(f"failed: {failed.source}: {failed.reason}", markup=False)
    if summary.failed:
        err.print("fix these files (or the options) and run the same command again: the "
                  "done files are skipped", markup=False)
