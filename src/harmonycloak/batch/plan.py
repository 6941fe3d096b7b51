"""Which files a ``protect`` call protects, and where each protected copy goes.

The rule (the command line's since issue 1): one input file and an output name with a
suffix write that one file; anything else writes into the folder ``OUT`` with the
inputs' layout mirrored: ``IN/album/song.flac`` becomes ``OUT/album/song.flac`` (a file
named directly keeps only its name). Audio that cannot be written in its own format
(``.aac``, ``.mp4``) becomes ``.m4a``. Files are recognized by suffix
(:func:`harmonycloak.pipeline.file_kind`): MIDI and audio; everything else is left
alone. Hidden files and folders (``.harmonycloak``, ``.git``, the temporary
``.name.tmp-*`` files of interrupted writes) are never inputs, and neither is anything
inside the output folder when it lies within an input folder.

Per-file seeds: a batch has one ``--seed``; each file's protection seed is derived from it
and the file's output path relative to ``OUT`` (:func:`file_seed`), so every backend, any
order and any number of workers give every file the same seed, and two files never share
their random draws.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from harmonycloak.errors import InputError

__all__ = [
    "AUDIO_OUTPUT_FOR",
    "Plan",
    "PlannedFile",
    "check_pair",
    "expand_inputs",
    "file_seed",
    "plan_files",
]

AUDIO_OUTPUT_FOR = {".aac": ".m4a", ".mp4": ".m4a"}
"""Readable audio that ``save_audio`` cannot write: a mirrored output becomes AAC in M4A."""


@dataclass(frozen=True)
class PlannedFile:
    """One input and where its protected copy goes.

    ``relative``: the output's path relative to the output folder (POSIX separators; the
    output's own name for a single file), the file's key in the batch state and the
    source of its seed.
    """

    source: Path
    output: Path
    kind: str
    relative: str


@dataclass(frozen=True)
class Plan:
    """Everything one ``protect`` call will write.

    ``single``: one file to an output *file* name (no batch state); otherwise ``root`` is
    the output folder the layout is mirrored into.
    """

    files: tuple[PlannedFile, ...]
    root: Path
    single: bool

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.files}


def _kind(path: Path) -> str | None:
    from harmonycloak.pipeline import file_kind

    return file_kind(path)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _walk(root: Path, skip: Path | None) -> list[Path]:
    """Every non-hidden file under ``root`` (hidden folders and ``skip`` pruned), sorted."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (skip is not None and _inside(here / d, skip)))
        found += [here / name for name in sorted(files) if not name.startswith(".")]
    return found


def expand_inputs(inputs: list[Path], *, skip: Path | None = None) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every file named or inside a folder.

    Folders contribute their MIDI and audio files (hidden ones and anything under
    ``skip``, the output folder, excluded); named files are kept whatever their suffix
    (:func:`check_pair` refuses them with a message). InputError when an input does not
    exist or nothing is found.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = _walk(item, skip)
            found += [(p, p.relative_to(item)) for p in files if _kind(p) is not None]
        elif item.exists():
            found.append((item, Path(item.name)))
        else:
            raise InputError(f"{item}: file not found; check the path")
    if not found:
        raise InputError(f"{', '.join(map(str, inputs))}: no MIDI or audio files found to protect")
    return found


def check_pair(src: Path, dst: Path) -> str:
    """The input's kind; InputError when it or its output name cannot be protected."""
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


def _mirrored(rel: Path) -> Path:
    return rel.with_suffix(AUDIO_OUTPUT_FOR.get(rel.suffix.lower(), rel.suffix))


def plan_files(inputs: list[Path], output: Path) -> Plan:
    """The :class:`Plan` for ``protect INPUTS -o OUTPUT``.

    One input file and an ``output`` with a suffix: that file to ``output`` itself.
    Otherwise everything into the folder ``output``, the layout mirrored. InputError
    (before anything is written) for missing inputs, files that cannot be protected, an
    output name for the wrong kind, an output that would overwrite its input, an output
    folder that is an existing file, and two inputs that would share one output (e.g.
    ``a/song.aac`` and ``a/song.mp4``, or ``x.wav`` in two input folders).
    """
    single_file = len(inputs) == 1 and not inputs[0].is_dir() and output.suffix != ""
    files = expand_inputs(inputs, skip=None if single_file else output)
    if single_file:
        src = files[0][0]
        return Plan(files=(PlannedFile(src, output, check_pair(src, output), output.name),),
                    root=output.parent, single=True)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file; with several inputs or a folder, -o names the "
                         "folder the protected copies go to")
    planned: list[PlannedFile] = []
    owner: dict[str, Path] = {}
    for src, rel in files:
        out_rel = _mirrored(rel)
        key = out_rel.as_posix()
        if key.lower() in owner:  # case-insensitive file systems would merge them too
            raise InputError(f"{src} and {owner[key.lower()]} would both be written to "
                             f"{output / out_rel}; rename one of them or protect them separately")
        owner[key.lower()] = src
        dst = output / out_rel
        planned.append(PlannedFile(src, dst, check_pair(src, dst), key))
    return Plan(files=tuple(planned), root=output, single=False)


def file_seed(batch_seed: int, relative: str) -> int:
    """The protection seed of the file at ``relative`` (POSIX, relative to the output
    folder) in a batch run with ``--seed batch_seed``: the first 31 bits of
    SHA-256(``"harmonycloak-batch:{batch_seed}:{relative}"``), an int in [0, 2**31)."""
    digest = hashlib.sha256(f"harmonycloak-batch:{int(batch_seed)}:{relative}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF
