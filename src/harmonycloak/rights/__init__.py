"""Rights: say who owns a recording and that it may not train AI, in ways machines read.

* :mod:`~harmonycloak.rights.tags` — rights tags inside the audio file (ID3, Vorbis
  comments, MP4 atoms), written without re-encoding the audio;
* :mod:`~harmonycloak.rights.c2pa` — a signed C2PA manifest (Content Credentials) with a
  ``cawg.training-mining`` "not allowed" assertion and the protection history;
* :mod:`~harmonycloak.rights.policy` — the website opt-out files (robots.txt, ai.txt,
  TDMRep, header snippets, HTML meta tags);
* :mod:`~harmonycloak.rights.catalog` — a local SQLite catalog of masters and copies;
* :mod:`~harmonycloak.rights.audit` — the catalog audit with a fix for every gap.

This module holds the two small things they all share: file hashing and reading the
protection reports that ``harmonycloak protect`` writes. Heavy imports (mutagen,
c2pa-python, cryptography) stay inside the submodules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonycloak.errors import InputError
from harmonycloak.io.files import sha256_file

__all__ = [
    "REPORT_FORMAT_VERSION",
    "ProtectionReport",
    "default_report_path",
    "load_report",
    "read_report",
    "sha256_file",
]

#: The ``harmonycloak_report`` format version this code reads.
REPORT_FORMAT_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ProtectionReport:
    """The parts of a ``harmonycloak protect`` report the rights tools use.

    The report (JSON, ``"harmonycloak_report": 1``) is written next to each protected
    file as ``OUT.report.json`` unless ``--report`` names another path. ``input_sha256``
    is the master the copy was made from, ``output_sha256`` the protected file as
    ``protect`` wrote it; ``watermark_payload`` is the hex provenance id or None.
    ``sha256`` is the hash of the report file itself (recorded in tags and C2PA so that a
    copy points at exactly this report).
    """

    path: str
    sha256: str
    version: str
    input_path: str | None
    input_sha256: str | None
    output_path: str | None
    output_sha256: str
    mode: str | None
    target: str | None
    preset: str | None
    seed: int | None
    watermark_payload: str | None


def default_report_path(audio_path: str | os.PathLike[str]) -> Path:
    """Where ``protect`` puts the report of ``audio_path`` by default: ``OUT.report.json``."""
    path = Path(audio_path)
    return path.with_name(path.name + ".report.json")


def read_report(path: str | os.PathLike[str]) -> ProtectionReport | None:
    """The report at ``path``, or None when the file is not a harmonycloak report at all.

    Raises :class:`InputError` when it says it is one (``harmonycloak_report`` key) but a
    required field is missing or malformed, or has a newer format version.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
        data = json.loads(raw)
    except OSError as error:
        raise InputError(f"{file}: cannot be read ({error.strerror or error}); check the path") from error
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or "harmonycloak_report" not in data:
        return None
    return _parse_report(file, data, hashlib.sha256(raw).hexdigest())


def load_report(path: str | os.PathLike[str]) -> ProtectionReport:
    """Like :func:`read_report`, but a file that is not a report is an :class:`InputError`."""
    report = read_report(path)
    if report is None:
        raise InputError(
            f"{path}: is not a harmonycloak protection report (no \"harmonycloak_report\" key); "
            "give the .report.json file that harmonycloak protect wrote"
        )
    return report


def _parse_report(file: Path, data: dict[str, Any], sha256: str) -> ProtectionReport:
    version = data.get("harmonycloak_report")
    if version != REPORT_FORMAT_VERSION:
        raise InputError(
            f"{file}: report format {version!r} is not supported (this harmonycloak reads "
            f"format {REPORT_FORMAT_VERSION}); update harmonycloak"
        )
    output = _section(file, data, "output")
    inp = data.get("input") if isinstance(data.get("input"), dict) else {}
    watermark = data.get("watermark")
    payload = watermark.get("payload") if isinstance(watermark, dict) else None
    seed = data.get("seed")
    return ProtectionReport(
        path=str(file),
        sha256=sha256,
        version=str(data.get("version", "")),
        input_path=_opt_str(inp.get("path")),
        input_sha256=_opt_sha(inp.get("sha256")),
        output_path=_opt_str(output.get("path")),
        output_sha256=_required_sha(file, output.get("sha256"), "output.sha256"),
        mode=_opt_str(data.get("mode")),
        target=_opt_str(data.get("target")),
        preset=_opt_str(data.get("preset")),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        watermark_payload=_opt_str(payload),
    )


def _section(file: Path, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise InputError(
            f"{file}: the report has no \"{key}\" object; write it again with harmonycloak protect"
        )
    return value


def _required_sha(file: Path, value: Any, field: str) -> str:
    sha = _opt_sha(value)
    if sha is None:
        raise InputError(
            f"{file}: the report's {field} is not a SHA-256 hex digest ({value!r}); "
            "write it again with harmonycloak protect"
        )
    return sha


def _opt_sha(value: Any) -> str | None:
    if isinstance(value, str) and _SHA256.match(value.lower()):
        return value.lower()
    return None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
