"""Files the web app keeps in its data folder, and the names it shows for them.

Layout of ``data_dir``::

    jobs.sqlite                 the job queue (:mod:`harmonycloak.web.jobs`)
    watermark.key               the artist's watermark key (0600), made on first use
    jobs/<job id>/original.<ext>            the uploaded copy (never modified)
    jobs/<job id>/protected.<flac|mid>      what ``protect`` wrote
    jobs/<job id>/protected.<ext>.report.json
    jobs/<job id>/cache/...                 previews, spectrograms, downloads in other formats

Uploaded files are stored under generated ids only: the name a browser sends is shown
(after :func:`display_name`) but never used as a path.
"""

from __future__ import annotations

import re
import secrets
import shutil
import unicodedata
from pathlib import Path
from typing import Any

from harmonycloak.errors import HarmonyCloakError, InputError

__all__ = [
    "JobFiles",
    "KEY_FILE",
    "display_name",
    "download_name",
    "ensure_watermark_key",
    "export_audio",
    "kind_of",
    "new_job_id",
    "public_message",
    "validate_upload",
]

KEY_FILE = "watermark.key"
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")
_MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


def new_job_id() -> str:
    """16 random hex digits (64 bits): unguessable, safe as a folder name."""
    return secrets.token_hex(8)


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def display_name(raw: str | None) -> str:
    """A safe name to show and to offer in downloads, from what the browser sent.

    Keeps only the last path component (``../../etc/passwd`` -> ``passwd``, ``C:\\x\\y.wav``
    -> ``y.wav``), normalizes Unicode (NFC), drops control and reserved characters and
    leading dots, and shortens it to 120 characters keeping the suffix. Never empty.
    """
    text = unicodedata.normalize("NFC", str(raw or ""))
    text = re.split(r"[/\\]", text)[-1]
    text = _UNSAFE.sub("_", text).strip().lstrip(".").strip()
    if len(text) > _MAX_NAME_CHARS:
        stem, dot, suffix = text.rpartition(".")
        suffix = suffix[:10] if dot else ""
        text = (stem if dot else text)[: _MAX_NAME_CHARS - len(suffix) - 1] + (f".{suffix}" if suffix else "")
    return text or "upload"


def kind_of(name: str) -> str | None:
    """``"audio"``, ``"midi"`` or None by the name's suffix (as ``protect`` routes files)."""
    from harmonycloak.pipeline import file_kind

    return file_kind(name)


def not_protectable_message(name: str) -> str:
    """The command line's message for a file it does not protect."""
    from harmonycloak.io.audio import SUPPORTED_AUDIO_SUFFIXES

    return (f"{name}: not a file harmonycloak protects; give MIDI (.mid, .midi) or "
            f"audio ({' '.join(SUPPORTED_AUDIO_SUFFIXES)})")


class JobFiles:
    """Paths of one job's files inside ``data_dir/jobs/<id>/``."""

    def __init__(self, data_dir: Path, job_id: str, suffix: str, kind: str) -> None:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        self.folder = Path(data_dir) / "jobs" / job_id
        self.original = self.folder / f"original{suffix}"
        self.protected = self.folder / ("protected.mid" if kind == "midi" else "protected.flac")
        self.report = self.protected.with_name(self.protected.name + ".report.json")
        self.cache = self.folder / "cache"

    def clear_outputs(self) -> None:
        """Remove everything but the uploaded original (before a run, after a cancel)."""
        for path in (self.protected, self.report):
            path.unlink(missing_ok=True)
        for stray in self.folder.glob(".*"):  # atomic_write's temporary siblings
            if stray.is_file():
                stray.unlink(missing_ok=True)
        shutil.rmtree(self.cache, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def public_message(error: BaseException, replacements: dict[str, str]) -> str:
    """``str(error)`` with this app's internal paths replaced by the names the user knows."""
    text = str(error)
    for internal, shown in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(internal, shown)
    return text


def validate_upload(path: Path, name: str, kind: str) -> dict[str, Any]:
    """Open the uploaded copy as ``protect`` will, so a bad file is refused at once with
    the command line's message (naming ``name``, not the stored path).

    Returns a short description (duration, rate, channels or tracks). Raises
    :class:`InputError` with the message rewritten to name ``name``.
    """
    try:
        if kind == "midi":
            from harmonycloak.io.midi import load_midi

            roll = load_midi(path, grouping="musegan")
            return {"tracks": int(roll.tracks), "steps": int(roll.steps)}
        from harmonycloak.io.audio import load_audio

        clip = load_audio(path)
        return {"duration_s": round(clip.duration_s, 3), "sample_rate_hz": clip.sample_rate_hz,
                "channels": clip.channels}
    except HarmonyCloakError as error:
        raise type(error)(public_message(error, {str(path): name})) from None


def ensure_watermark_key(data_dir: Path) -> Any:
    """The app's :class:`~harmonycloak.watermark.WatermarkKey`, created (mode 0600) on
    first use; a damaged key file is an :class:`InputError` (never silently replaced: the
    marks already made need it)."""
    from harmonycloak.watermark import generate_key, load_key, save_key

    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        try:
            save_key(generate_key(), path)
        except InputError:
            if not path.exists():  # another thread won the race: use its key
                raise
    return load_key(path)


def download_name(name: str, suffix: str) -> str:
    """``song.wav`` -> ``song.protected.mp3``."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{stem}.protected{suffix}"


def export_audio(files: JobFiles, fmt: str, bitrate_kbps: int | None, *,
                 rights: dict[str, Any] | None) -> Path:
    """The protected audio in ``fmt`` (``flac wav mp3 ogg m4a``) at ``bitrate_kbps`` (lossy
    formats; None: the format's default), with rights tags when ``rights`` (``owner``,
    ``contact``) is given; cached in the job's folder. The FLAC master itself is returned
    untouched when no conversion or tags are needed.

    Tags link the copy to the protection: ``HARMONYCLOAK_SOURCE_SHA256`` is the master's
    hash (the report's ``output.sha256``), ``HARMONYCLOAK_REPORT_SHA256`` the report's.
    Raises :class:`InputError` when the format cannot hold this audio.
    """
    from harmonycloak.io.audio import load_audio, save_audio

    if fmt == "flac" and bitrate_kbps is None and not rights:
        return files.protected
    rate = f"-{int(bitrate_kbps)}k" if bitrate_kbps else ""
    plain = files.cache / f"export{rate}.{fmt}"
    if not plain.exists():
        if fmt == "flac" and bitrate_kbps is None:
            from harmonycloak.io.files import atomic_write

            atomic_write(plain, lambda tmp: shutil.copyfile(files.protected, tmp))
        else:
            save_audio(load_audio(files.protected), plain, bitrate_kbps=bitrate_kbps)
    if not rights:
        return plain
    tagged = files.cache / f"tagged{rate}.{fmt}"
    if not tagged.exists():
        from harmonycloak.rights import read_report, sha256_file
        from harmonycloak.rights.tags import RightsInfo, tag_file

        report = read_report(files.report)
        info = RightsInfo(owner=rights["owner"], contact=rights.get("contact") or None,
                          source_sha256=sha256_file(files.protected),
                          report_sha256=report.sha256 if report else None)
        tag_file(plain, tagged, info)
    return tagged
