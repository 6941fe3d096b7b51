"""``harmonycloak protect IN... -o OUT``: make music unlearnable.

White-box protection against a known model, routed by each input's suffix: MIDI files
(.mid, .midi) against ``--target musegan`` (default) or ``symbolic-lm``; audio files
(.wav .flac .mp3 .ogg .opus .m4a .aac .mp4) against ``--target codec-lm`` (default),
``latent-diffusion`` or ``clap-shift``. One call may mix both kinds; ``--target`` then
applies to the kind it belongs to and must not be given for the other.

``--watermark-key KEY --watermark-payload HEX`` (both or neither) also hides the keyed
provenance watermark in each protected audio file, combined with the cloak as
:class:`harmonycloak.pipeline.WatermarkSplit` says (measured order and budget split), and
the report records whether it reads back; MIDI files cannot carry the audio mark and are
refused with the flags. The black-box mode (which will become the default) arrives with a
later version and is refused with a plain message until then.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out

MIDI_TARGETS = ("musegan", "symbolic-lm")
AUDIO_TARGETS = ("codec-lm", "latent-diffusion", "clap-shift")
DEFAULT_TARGET = {"midi": "musegan", "audio": "codec-lm"}
DEFAULT_CORPUS = {"midi": Path("data/dev-midi"), "audio": Path("data/dev-music")}
# readable audio that save_audio cannot write: a mirrored output becomes AAC in M4A
_AUDIO_OUTPUT_FOR = {".aac": ".m4a", ".mp4": ".m4a"}


class Mode(str, Enum):
    whitebox = "whitebox"
    blackbox = "blackbox"


class TargetName(str, Enum):
    musegan = "musegan"
    symbolic_lm = "symbolic-lm"
    codec_lm = "codec-lm"
    latent_diffusion = "latent-diffusion"
    clap_shift = "clap-shift"


def _kind(path: Path) -> str | None:
    """``"midi"``, ``"audio"`` or None, by suffix."""
    from harmonycloak.pipeline import file_kind

    return file_kind(path)


def _expand(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every file named or inside a folder."""
    from harmonycloak.errors import InputError

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith("."))
            found += [(p, p.relative_to(item)) for p in files if _kind(p) is not None]
        elif item.exists():
            found.append((item, Path(item.name)))
        else:
            raise InputError(f"{item}: file not found; check the path")
    if not found:
        raise InputError(f"{', '.join(map(str, inputs))}: no MIDI or audio files found to protect")
    return found


def _check_pair(src: Path, dst: Path) -> str:
    """The input's kind; InputError when it or its output name cannot be protected."""
    from harmonycloak.errors import InputError
    from harmonycloak.io.audio import SUPPORTED_AUDIO_SUFFIXES, WRITABLE_AUDIO_SUFFIXES

    kind = _kind(src)
    if kind is None:
        raise InputError(f"{src}: not a file harmonycloak protects; give MIDI (.mid, .midi) or "
                         f"audio ({' '.join(SUPPORTED_AUDIO_SUFFIXES)})")
    if kind == "midi" and _kind(dst) != "midi":
        raise InputError(f"{dst}: a protected MIDI file must be written as .mid or .midi")
    if kind == "audio" and dst.suffix.lower() not in WRITABLE_AUDIO_SUFFIXES:
        raise InputError(f"{dst}: protected audio must be written as audio; use one of "
                         f"{', '.join(WRITABLE_AUDIO_SUFFIXES)}")
    if dst.resolve() == src.resolve():
        raise InputError(f"{dst}: would overwrite the input; choose another output name")
    return kind


def _plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path, str]]:
    """(input, output, kind) triples: one file to ``output`` itself when it has a suffix,
    else everything into the folder ``output`` with the inputs' layout mirrored (audio
    that cannot be written in its own format, .aac / .mp4, becomes .m4a)."""
    files = _expand(inputs)
    single = len(files) == 1 and not inputs[0].is_dir() and output.suffix != ""
    if single:
        pairs = [(files[0][0], output)]
    else:
        pairs = [(f, output / rel.with_suffix(_AUDIO_OUTPUT_FOR.get(rel.suffix.lower(), rel.suffix)))
                 for f, rel in files]
    return [(src, dst, _check_pair(src, dst)) for src, dst in pairs]


def _target_for(kind: str, target: TargetName | None, example: Path) -> str:
    """The target's name for inputs of ``kind``; InputError when ``--target`` is for the
    other kind (``example``: a file of this kind, for the message)."""
    from harmonycloak.errors import InputError

    if target is None:
        return DEFAULT_TARGET[kind]
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


def _run_one(src: Path, dst: Path, kind: str, progress: Any, **kwargs: Any) -> dict[str, Any]:
    from harmonycloak.pipeline import protect_audio, protect_midi

    engine = kwargs["config"].engine
    total = engine.outer_rounds * engine.inner_steps
    task = progress.add_task(f"{src.name}: starting", total=total)

    def on_iteration(info: dict[str, Any]) -> None:
        progress.update(task, advance=1, description=(
            f"{src.name}: round {info['round'] + 1}/{engine.outer_rounds}, loss {info['generative']:.4f}"))

    run = protect_midi if kind == "midi" else protect_audio
    report = run(src, dst, progress=lambda msg: progress.update(task, description=f"{src.name}: {msg}"),
                 on_iteration=on_iteration, **kwargs)
    progress.update(task, completed=total)
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
    mode: Mode = typer.Option(Mode.whitebox, "--mode", help="whitebox: against a known model."),
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
    seed: int = typer.Option(0, "--seed", help="Same input, preset and seed give the same output."),
    watermark_key: Path = typer.Option(None, "--watermark-key", dir_okay=False,
                                       help="Watermark key file (`harmonycloak watermark keygen`); "
                                            "audio only, with --watermark-payload."),
    watermark_payload: str = typer.Option(None, "--watermark-payload",
                                          help="Watermark payload: 12 hex digits (32-bit track "
                                               "id + 16-bit issuer id), with --watermark-key."),
    report: Path = typer.Option(None, "--report", help="Report JSON path (one input only; "
                                "default: OUT.report.json beside each output).", dir_okay=False),
    force: bool = options.FORCE,
) -> None:
    """Make MIDI or audio unlearnable for a generative model while it sounds the same.

    MIDI: raises the velocities of the dominant notes (and may add quiet notes at the
    dominant pitch) within the masking bounds. Audio: adds noise shaped under the music's
    masking threshold. Either way the model's training loss on the file collapses: it
    believes there is nothing left to learn. With --watermark-key and --watermark-payload,
    audio files also carry your keyed watermark, under the same masking budget.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harmonycloak.config import preset as get_preset
    from harmonycloak.config import resolve_device
    from harmonycloak.errors import InputError
    from harmonycloak.pipeline import AudioTargetChoice, TargetChoice

    if mode is Mode.blackbox:
        raise InputError("--mode blackbox is not in this version yet; use --mode whitebox "
                         "--target musegan|symbolic-lm (MIDI) or codec-lm|latent-diffusion|"
                         "clap-shift (audio)")
    config = get_preset(preset)
    plan = _plan(inputs, output)
    kinds = {kind for _, _, kind in plan}
    mark = _watermark(kinds, watermark_key, watermark_payload)
    if report is not None and len(plan) > 1:
        raise InputError("--report names one file; with several inputs each report goes beside its output")
    if model is not None and len(kinds) > 1:
        raise InputError("--model names one checkpoint, for MIDI or for audio; protect the MIDI "
                         "and the audio files in separate calls")
    choices = {}
    for kind in sorted(kinds):
        name = _target_for(kind, target, next(src for src, _, k in plan if k == kind))
        corpus_dir = str(corpus if corpus is not None else DEFAULT_CORPUS[kind])
        model_dir = str(model) if model else None
        choices[kind] = (TargetChoice if kind == "midi" else AudioTargetChoice)(
            name=name, model_dir=model_dir, corpus_dir=corpus_dir)
    device = resolve_device(options.state(ctx).device)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        for src, dst, kind in plan:
            extra = {"watermark": mark} if mark is not None else {}
            result = _run_one(src, dst, kind, progress, config=config, target=choices[kind],
                              seed=seed, device=device, report_path=report, force=force, **extra)
            out.print(_summary(dst, kind, result), markup=False)
