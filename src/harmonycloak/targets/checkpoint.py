"""The checkpoint folder the trainable targets save and load: ``config.json`` + weights.

A folder holds ``config.json`` (the module's format name, its version and its options,
``json.dumps(meta, indent=2)`` plus a newline) and the weights as a flat name → tensor
mapping in ``model.safetensors`` (``model.pt``, tensors only, where a module falls back
to ``torch.save``). Each file is written next to its final name and renamed onto it.
Reading never unpickles: safetensors, or ``torch.load(weights_only=True)``.

The pieces are small steps rather than one ``read_checkpoint`` because each module checks
its config (and builds its model) between finding ``config.json`` and reading the
weights, and which error a broken folder reports depends on that order. The messages
that every module shares are made here; the module-specific ones stay in the modules.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from harmonycloak.errors import ModelLoadError

__all__ = ["CONFIG_FILE", "SAFETENSORS_FILE", "TORCH_FILE", "atomic_replace",
           "check_format", "have_safetensors", "open_checkpoint", "read_weights",
           "require_weights", "weights_file_choice", "write_checkpoint", "write_config"]

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "model.pt"

Replace = Callable[[Path, Callable[[Path], Any]], Any]
"""How a file is written atomically: ``replace(path, write)`` with ``write(tmp_path)``."""


def have_safetensors() -> bool:
    """True when the ``safetensors`` package is installed (found, not imported)."""
    return importlib.util.find_spec("safetensors") is not None


def weights_file_choice() -> tuple[str, str]:
    """``(file to write, stale file to delete)`` for a module that falls back to
    ``torch.save``: ``model.safetensors`` when safetensors is installed, else ``model.pt``."""
    if have_safetensors():
        return SAFETENSORS_FILE, TORCH_FILE
    return TORCH_FILE, SAFETENSORS_FILE


def atomic_replace(destination: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into a new hidden file next to ``destination``, then rename it over.

    The temporary file comes from :func:`tempfile.mkstemp` (``.<name>.<random>``, mode
    0600, which the written file keeps). Any exception from ``write`` or the rename
    (``OSError`` included, unchanged) removes the temporary file and propagates; an
    existing ``destination`` is then untouched. No fsync: for files that must survive a
    power cut use :func:`harmonycloak.io.files.atomic_write` as ``replace``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(path: Path, meta: dict[str, Any], *, replace: Replace = atomic_replace) -> None:
    """Write ``meta`` to ``path`` as ``json.dumps(meta, indent=2)`` plus a newline, via
    ``replace``. Raises what ``replace`` raises (``TypeError`` for a value JSON cannot
    hold)."""
    replace(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))


def write_checkpoint(directory: str | os.PathLike[str], meta: dict[str, Any],
                     state: dict[str, Tensor], *, weights_file: str = SAFETENSORS_FILE,
                     stale: str | None = None, replace: Replace = atomic_replace) -> Path:
    """Create ``directory`` (and parents) and write ``weights_file`` then ``config.json``.

    ``state`` (flat name → tensor, contiguous CPU tensors) goes to ``weights_file`` with
    safetensors when its name ends in ``.safetensors`` (the import happens before the
    folder is made, so a missing package raises ``ImportError`` and creates nothing),
    else with ``torch.save``. ``meta`` goes to ``config.json`` (:func:`write_config`).
    Once both are written, ``stale`` (a weights file of the other kind from an earlier
    save) is deleted if present. Each file is written atomically by ``replace``.
    Raises ``FileExistsError`` when ``directory`` is a file, and whatever ``replace`` or
    the writers raise (``OSError``, ``safetensors`` errors). Returns the directory.
    """
    if weights_file.endswith(".safetensors"):
        from safetensors.torch import save_file

        def write_weights(tmp: Path) -> None:
            save_file(state, str(tmp))
    else:
        def write_weights(tmp: Path) -> None:
            torch.save(state, tmp)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    replace(out / weights_file, write_weights)
    write_config(out / CONFIG_FILE, meta, replace=replace)
    if stale is not None:
        (out / stale).unlink(missing_ok=True)
    return out


def open_checkpoint(directory: str | os.PathLike[str], *, fix: str) -> tuple[Path, Path]:
    """``(folder, folder / "config.json")`` once both exist; reads nothing.

    Raises :class:`ModelLoadError` ``"<folder>: no such model directory; <fix>"`` when the
    folder is missing (or not a folder), and ``"<folder>: config.json is missing; <fix>"``
    when it has no ``config.json`` file.
    """
    where = Path(directory)
    if not where.is_dir():
        raise ModelLoadError(f"{where}: no such model directory; {fix}")
    config_path = where / CONFIG_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{where}: {CONFIG_FILE} is missing; {fix}")
    return where, config_path


def check_format(meta: Any, *, name: str, version: int,
                 version_key: Literal["version", "format_version"] = "version") -> dict[str, Any]:
    """``meta`` (parsed ``config.json``) when it is a dict of format ``name``, ``version``.

    Raises ``ValueError`` (the caller wraps it in its own :class:`ModelLoadError`):
    ``"format <found!r> is not <name!r>"`` (``found`` is None when ``meta`` is not a
    dict), then ``"format version <v!r> is not <version> (written by another
    harmonycloak)"``; with ``version_key="format_version"`` the text says
    ``format_version`` instead of ``format version``.
    """
    if not isinstance(meta, dict) or meta.get("format") != name:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"format {found!r} is not {name!r}")
    if meta.get(version_key) != version:
        label = "format version" if version_key == "version" else version_key
        raise ValueError(f"{label} {meta.get(version_key)!r} is not {version} "
                         "(written by another harmonycloak)")
    return meta


def require_weights(where: Path, *, fix: str, name: str = SAFETENSORS_FILE) -> Path:
    """``where / name`` when it is a file; else :class:`ModelLoadError`
    ``"<where>: <name> is missing; <fix>"``."""
    weights = where / name
    if not weights.is_file():
        raise ModelLoadError(f"{where}: {name} is missing; {fix}")
    return weights


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file, never unpickling: ``safetensors`` for a
    ``.safetensors`` name, else ``torch.load(map_location="cpu", weights_only=True)``.

    Raises ``ImportError`` when ``safetensors`` is needed and missing, and the reader's
    own exception (``SafetensorError``, ``UnpicklingError``, ``OSError``, ...) for a
    corrupt, truncated or unreadable file; callers wrap these in their messages.
    """
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
