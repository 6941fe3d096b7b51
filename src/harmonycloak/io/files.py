"""The file boundary: input-file checks, safe output, and the supported sample rates.

:func:`check_input_file` is the one check every loader runs before opening a user's file
(missing, a folder, a pipe or device, empty, unreadable), so each gets the same plain
message and none hangs on a FIFO. :data:`MIN_SAMPLE_RATE_HZ` / :data:`MAX_SAMPLE_RATE_HZ`
are the one definition of the sample rates harmonycloak accepts (kept in this small
module so that :mod:`harmonycloak.psychoacoustics` can share them without importing the
decoders).

A musician's files are the one thing we must never damage. So every file harmonycloak
writes goes through :func:`atomic_write`: an output is first written to a hidden
temporary file next to the target, flushed to disk, and only then renamed onto the
target in one step (``os.replace``, atomic on POSIX and Windows for paths on the same
file system). A crash, a full disk or an encoder error at any point leaves either the
old file or the new one, never half a file, and no temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Callable, Iterable

from harmonycloak.errors import InputError

__all__ = [
    "MAX_SAMPLE_RATE_HZ",
    "MIN_SAMPLE_RATE_HZ",
    "atomic_write",
    "check_input_file",
    "same_file",
    "sha256_file",
    "temp_path_for",
]

MIN_SAMPLE_RATE_HZ = 8_000
"""Lowest sample rate harmonycloak loads or analyses (Hz)."""

MAX_SAMPLE_RATE_HZ = 192_000
"""Highest sample rate harmonycloak loads or analyses (Hz)."""


def check_input_file(
    path: str | os.PathLike[str],
    *,
    what: str = "a file",
    export_hint: str = "export it again",
) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` if it is a readable, non-empty regular file.

    Raises :class:`InputError` (message: the path, the problem, the fix) when it does
    not exist (or is a broken link), is a folder, is not a regular file (a FIFO, socket
    or device: reading one could block forever or never end), is empty (0 bytes), or
    cannot be read (permissions). ``what`` names the expected file in the folder
    message ("is a folder, not an audio file"); ``export_hint`` is the fix for an empty
    file. Symbolic links are followed. Reads no content.
    """
    file = Path(path)
    try:
        info = file.stat()
    except FileNotFoundError:
        raise InputError(f"{file}: does not exist; check the path and the file name") from None
    except PermissionError:
        raise InputError(f"{file}: permission denied; check the file's permissions") from None
    except OSError as error:
        reason = error.strerror or error
        raise InputError(f"{file}: cannot be read ({reason}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{file}: is a folder, not {what}; give the path of a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"{file}: is not a regular file (a pipe, socket or device); "
            "save its content to a file and give that file"
        )
    if info.st_size == 0:
        raise InputError(f"{file}: file is empty (0 bytes); {export_hint}")
    if not os.access(file, os.R_OK):
        raise InputError(f"{file}: permission denied; check the file's permissions")
    return file


def temp_path_for(path: Path) -> Path:
    """The hidden temporary sibling used while writing ``path``.

    ``.<name>.tmp-<8 hex digits><suffix>``: same folder (so the final rename stays on one
    file system), hidden, and with the target's suffix kept last because some encoders
    pick the container from it.
    """
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{path.suffix}")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name the same file (symlinks, ``..`` and hard links included).

    Paths that do not exist are compared by their resolved absolute form.
    """
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def atomic_write(
    path: str | os.PathLike[str],
    writer: Callable[[Path], None],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Create or replace ``path`` atomically, with the content ``writer`` produces.

    ``writer(tmp_path)`` must create and fill ``tmp_path`` (a hidden sibling of ``path``,
    see :func:`temp_path_for`). Afterwards the temporary file is fsynced and renamed onto
    ``path``; missing parent folders are created first.

    Raises :class:`InputError` (nothing is written) when ``path`` is a folder, when it is
    one of ``inputs`` (the files the output was made from; ``None`` entries are skipped),
    even with ``force``, or when it exists and ``force`` is false. An ``OSError`` while
    writing (permissions, full disk) becomes an :class:`InputError` naming the path.
    If ``writer`` raises, the temporary file is removed, an existing ``path`` is left
    byte-for-byte untouched, and the writer's exception propagates unchanged.

    The existence check and the rename are two steps: a file that another program creates
    in between is replaced. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    _check_target(target, force=force, inputs=inputs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"{target}: cannot create the folder {target.parent} ({error.strerror or error}); "
            "check the path and its permissions"
        ) from error
    tmp = temp_path_for(target)
    try:
        writer(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except OSError as error:
        _remove_quietly(tmp)
        raise InputError(
            f"{target}: cannot write the file ({error.strerror or error}); "
            "check the folder's permissions and the free disk space"
        ) from error
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def _check_target(
    target: Path, *, force: bool, inputs: Iterable[str | os.PathLike[str] | None]
) -> None:
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give a file name for the output")
    for source in inputs:
        if source is not None and same_file(target, source):
            raise InputError(
                f"{target}: would overwrite the input; choose another output name"
            )
    if target.exists() and not force:
        raise InputError(f"{target} already exists; use --force to replace it")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself; best effort (not possible on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # already gone, or not ours to remove: nothing more to do
        pass


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes as 64 lower-case hex digits (read in 1 MiB chunks).

    Raises :class:`InputError` naming the file when it cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise InputError(
            f"{path}: cannot be read ({error.strerror or error}); check the path and permissions"
        ) from error
    return digest.hexdigest()
