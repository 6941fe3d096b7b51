"""Safe file output: every file harmonycloak writes goes through :func:`atomic_write`.

A musician's files are the one thing we must never damage. So an output is first
written to a hidden temporary file next to the target, flushed to disk, and only then
renamed onto the target in one step (``os.replace``, atomic on POSIX and Windows for
paths on the same file system). A crash, a full disk or an encoder error at any point
leaves either the old file or the new one, never half a file, and no temporary file
behind.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

from harmonycloak.errors import InputError

__all__ = ["atomic_write", "same_file", "temp_path_for"]


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
