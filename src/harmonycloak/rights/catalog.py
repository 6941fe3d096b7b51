"""A local-first catalog of a music folder: masters, their protected copies, and their state.

The catalog is one SQLite file inside the folder it describes::

    MUSIC_DIR/.harmonycloak/catalog.sqlite

so it travels with the music (backups, external drives) and needs no server. It records,
per audio file (path relative to ``MUSIC_DIR``, POSIX separators): SHA-256, size,
modification time, format, lossless or not, role (``master`` or ``copy``), the track it
belongs to, the master it was made from, whether it is protected and how we know
(``report``, ``tags`` or ``c2pa``), its protection report, watermark id and preset, its
rights tags and its C2PA state.

How files are understood (:func:`inspect_folder`):

* A protection report (any ``*.json`` with ``"harmonycloak_report": 1``) whose
  ``output.sha256`` equals a file's SHA-256 makes that file a protected copy of the
  master whose SHA-256 is ``input.sha256``.
* A file tagged by ``harmonycloak rights tag`` names the file it was tagged from
  (``HARMONYCLOAK_SOURCE_SHA256``); when that is a report's output, the tagged copy is
  protected too (the tags changed its bytes, not its audio).
* A C2PA manifest that validates and records a harmonycloak protection action makes the
  file protected as well.
* Files without any of these links: lossless files (WAV, FLAC, ALAC in M4A) are
  masters, lossy ones copies; a copy joins the track of the master with the same name
  stem (``song.wav`` / ``song.protected.mp3``: stem ``song``) in its folder, or anywhere
  when exactly one master in the tree has that stem.

Hidden files and folders (``.harmonycloak``, ``.git``, temporary ``.name.tmp-*`` files)
are not scanned. Files that cannot be read, or whose format is not supported, are listed
with the reason and skipped. :func:`verify` and :func:`load_catalog` open the database
read-only and modify nothing in the folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

from harmonycloak.errors import InputError
from harmonycloak.io.audio import SUPPORTED_AUDIO_SUFFIXES
from harmonycloak.rights import ProtectionReport, read_report, sha256_file

__all__ = [
    "CATALOG_DIR",
    "CATALOG_FILE",
    "AudioFile",
    "CatalogRecord",
    "FolderState",
    "ScanResult",
    "Skipped",
    "VerifyResult",
    "catalog_path",
    "ensure_catalog_schema",
    "inspect_folder",
    "load_catalog",
    "scan",
    "verify",
]

CATALOG_DIR = ".harmonycloak"
CATALOG_FILE = "catalog.sqlite"
SCHEMA_VERSION = 1
#: Suffixes of audio formats harmonycloak does not handle: listed as skipped, not ignored.
UNSUPPORTED_AUDIO_SUFFIXES: tuple[str, ...] = (
    ".aif", ".aiff", ".aifc", ".wma", ".ape", ".wv", ".caf", ".dsf", ".dff", ".mka",
    ".mid", ".midi", ".alac", ".amr", ".ac3",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    format TEXT NOT NULL,
    lossless INTEGER NOT NULL,
    role TEXT NOT NULL,
    track TEXT NOT NULL,
    master_sha256 TEXT,
    protected INTEGER NOT NULL,
    protection_evidence TEXT,
    report_path TEXT,
    report_sha256 TEXT,
    watermark_payload TEXT,
    preset TEXT,
    tags_json TEXT NOT NULL,
    c2pa_state TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    scanned_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    input_sha256 TEXT,
    output_sha256 TEXT NOT NULL,
    preset TEXT,
    watermark_payload TEXT,
    scanned_at TEXT NOT NULL
);
"""


def catalog_path(root: str | os.PathLike[str]) -> Path:
    """Where the catalog of ``root`` lives: ``root/.harmonycloak/catalog.sqlite``."""
    return Path(root) / CATALOG_DIR / CATALOG_FILE


def ensure_catalog_schema(conn: sqlite3.Connection) -> None:
    """Create the catalog's tables (if missing) and record the schema version, on an
    open connection: for other tables kept in the same database file (the batch jobs of
    :mod:`harmonycloak.batch.state`), so that :func:`load_catalog` reads the file too."""
    conn.executescript(_SCHEMA)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


# ---------------------------------------------------------------------------------------
# Looking at the folder as it is now
# ---------------------------------------------------------------------------------------


@dataclass
class Skipped:
    """A file that was not catalogued, and why."""

    path: str
    reason: str


@dataclass
class AudioFile:
    """One audio file as found on disk now (paths relative to the folder, POSIX)."""

    path: str
    sha256: str
    size_bytes: int
    mtime_ns: int
    format: str
    lossless: bool
    tags: dict[str, str]
    c2pa_state: str
    c2pa_reserves_training: bool = False
    c2pa_protection: dict[str, Any] | None = None
    c2pa_message: str = ""
    role: str = "copy"
    track: str = ""
    master_sha256: str | None = None
    protected: bool = False
    protection_evidence: str | None = None
    report: ProtectionReport | None = None

    @property
    def watermark_payload(self) -> str | None:
        return self.report.watermark_payload if self.report else None


@dataclass
class FolderState:
    """Everything :func:`inspect_folder` found."""

    root: Path
    files: list[AudioFile]
    reports: list[ProtectionReport]
    skipped: list[Skipped]

    def by_path(self) -> dict[str, AudioFile]:
        return {f.path: f for f in self.files}


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _walk(root: Path) -> Iterator[Path]:
    """Every non-hidden file under ``root``, in a stable order, hidden folders skipped."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _probe(path: Path) -> tuple[str, bool]:
    """(format, lossless) of an audio file from its headers; InputError when unreadable."""
    import mutagen

    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError) as error:
        raise InputError(f"not a readable audio file ({error})") from error
    if audio is None:
        raise InputError("not a readable audio file (no known audio header)")
    name = type(audio).__name__
    formats = {"WAVE": ("wav", True), "FLAC": ("flac", True), "MP3": ("mp3", False),
               "OggVorbis": ("ogg", False), "OggOpus": ("opus", False), "AAC": ("aac", False)}
    if name in formats:
        return formats[name]
    if name == "MP4":
        codec = str(getattr(audio.info, "codec", "") or "")
        return ("m4a", codec.startswith("alac"))
    raise InputError(f"{name} audio is not supported; convert it to WAV or FLAC")


def _inspect_audio(root: Path, path: Path) -> AudioFile:
    from harmonycloak.rights import c2pa, tags

    fmt, lossless = _probe(path)
    info = path.stat()
    try:
        found_tags = tags.read_tags(path)
    except InputError:
        found_tags = {}  # raw ADTS AAC: no tag container
    manifest = c2pa.read_manifest(path)
    return AudioFile(
        path=_rel(root, path), sha256=sha256_file(path), size_bytes=info.st_size,
        mtime_ns=info.st_mtime_ns, format=fmt, lossless=lossless, tags=found_tags,
        c2pa_state=manifest.state, c2pa_reserves_training=manifest.reserves_training,
        c2pa_protection=manifest.protection if manifest.holds else None,
        c2pa_message=manifest.message,
    )


def inspect_folder(root: str | os.PathLike[str], *,
                   progress: Callable[[str], None] | None = None) -> FolderState:
    """Read every audio file and protection report under ``root`` and link them (read-only).

    Raises :class:`InputError` when ``root`` is not a folder; problems with single files
    end up in ``skipped``.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"{base}: folder not found; give the folder that holds your music")
    files: list[AudioFile] = []
    reports: list[ProtectionReport] = []
    skipped: list[Skipped] = []
    for path in _walk(base):
        suffix = path.suffix.lower()
        rel = _rel(base, path)
        if suffix in SUPPORTED_AUDIO_SUFFIXES:
            if progress:
                progress(rel)
            try:
                files.append(_inspect_audio(base, path))
            except (InputError, OSError) as error:
                skipped.append(Skipped(rel, _reason(error)))
        elif suffix in UNSUPPORTED_AUDIO_SUFFIXES:
            skipped.append(Skipped(rel, _unsupported_reason(suffix)))
        elif suffix == ".json":
            _add_report(path, rel, reports, skipped)
    _link(files, reports)
    return FolderState(base, files, reports, skipped)


def _unsupported_reason(suffix: str) -> str:
    """Why a file of a known but uncatalogued kind is skipped, and what to do."""
    if suffix in (".mid", ".midi"):
        return ("MIDI files are not catalogued (the catalog, tags and watermark are for audio "
                "masters); protect MIDI with `harmonycloak protect`, then catalog its rendered audio")
    return f"{suffix} files are not supported; convert to WAV or FLAC"


def _reason(error: Exception) -> str:
    if isinstance(error, OSError):
        return f"cannot be read ({error.strerror or error})"
    return str(error)


def _add_report(path: Path, rel: str, reports: list[ProtectionReport], skipped: list[Skipped]) -> None:
    try:
        report = read_report(path)
    except InputError as error:
        skipped.append(Skipped(rel, f"protection report not usable: {error}"))
        return
    if report is not None:
        reports.append(report)


def _link(files: list[AudioFile], reports: list[ProtectionReport]) -> None:
    """Fill role, protection, master and track of every file."""
    by_output = {r.output_sha256: r for r in reports}
    report_inputs = {r.input_sha256 for r in reports if r.input_sha256}
    for f in files:
        _find_protection(f, by_output)
    for f in files:
        derived = f.protected or bool(f.tags.get("source_sha256"))
        is_master = not derived and (f.lossless or f.sha256 in report_inputs)
        f.role = "master" if is_master else "copy"
    _group_tracks(files)


def _find_protection(f: AudioFile, by_output: dict[str, ProtectionReport]) -> None:
    source = f.tags.get("source_sha256")
    if f.sha256 in by_output:
        f.protected, f.protection_evidence, f.report = True, "report", by_output[f.sha256]
    elif source and source in by_output:
        f.protected, f.protection_evidence, f.report = True, "tags", by_output[source]
    elif f.c2pa_protection:
        f.protected, f.protection_evidence = True, "c2pa"
        f.report = by_output.get(str(f.c2pa_protection.get("protected_sha256", "")))
    if f.report is not None:
        f.master_sha256 = f.report.input_sha256
    elif f.c2pa_protection and f.c2pa_protection.get("master_sha256"):
        f.master_sha256 = str(f.c2pa_protection["master_sha256"])


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".", 1)[0].lower()


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _group_tracks(files: list[AudioFile]) -> None:
    parent = list(range(len(files)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    by_sha: dict[str, list[int]] = {}
    by_place: dict[tuple[str, str], list[int]] = {}
    for i, f in enumerate(files):
        by_sha.setdefault(f.sha256, []).append(i)
        by_place.setdefault((_folder(f.path), _stem(f.path)), []).append(i)
    for group in [*by_sha.values(), *by_place.values()]:
        for j in group[1:]:
            union(group[0], j)
    for i, f in enumerate(files):
        for sha in (f.master_sha256, f.tags.get("source_sha256")):
            for j in by_sha.get(sha or "", []):
                union(i, j)
    _link_by_unique_stem(files, find, union)
    _name_tracks(files, find)


def _link_by_unique_stem(files: list[AudioFile], find: Callable[[int], int],
                         union: Callable[[int, int], None]) -> None:
    masters_by_stem: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        if f.role == "master":
            masters_by_stem.setdefault(_stem(f.path), []).append(i)
    groups_with_master = {find(i) for i, f in enumerate(files) if f.role == "master"}
    for i, f in enumerate(files):
        candidates = masters_by_stem.get(_stem(f.path), [])
        if f.role == "copy" and find(i) not in groups_with_master and len(candidates) == 1:
            union(i, candidates[0])


def _name_tracks(files: list[AudioFile], find: Callable[[int], int]) -> None:
    members: dict[int, list[int]] = {}
    for i in range(len(files)):
        members.setdefault(find(i), []).append(i)
    for group in members.values():
        masters = [files[i].path for i in group if files[i].role == "master"]
        name = min(masters) if masters else min(files[i].path for i in group)
        for i in group:
            files[i].track = name


# ---------------------------------------------------------------------------------------
# The database
# ---------------------------------------------------------------------------------------


@dataclass
class CatalogRecord:
    """One row of the ``files`` table."""

    path: str
    sha256: str
    size_bytes: int
    mtime_ns: int
    format: str
    lossless: bool
    role: str
    track: str
    master_sha256: str | None
    protected: bool
    protection_evidence: str | None
    report_path: str | None
    report_sha256: str | None
    watermark_payload: str | None
    preset: str | None
    tags: dict[str, str]
    c2pa_state: str
    first_seen: str
    scanned_at: str


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _connect_readonly(db: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(db.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        conn.execute("PRAGMA query_only = 1")
        conn.execute("SELECT 1 FROM files LIMIT 1")
    except sqlite3.Error as error:
        raise InputError(
            f"{db}: not a readable harmonycloak catalog ({error}); move it away and run "
            "harmonycloak catalog scan again"
        ) from error
    return conn


def load_catalog(root: str | os.PathLike[str]) -> dict[str, CatalogRecord] | None:
    """The catalog of ``root`` by path, or None when there is none (opened read-only)."""
    db = catalog_path(root)
    if not db.is_file():
        return None
    conn = _connect_readonly(db)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM files ORDER BY path").fetchall()
    finally:
        conn.close()
    return {row["path"]: _record(row) for row in rows}


def _record(row: sqlite3.Row) -> CatalogRecord:
    data = dict(row)
    data["tags"] = json.loads(data.pop("tags_json") or "{}")
    data["lossless"] = bool(data["lossless"])
    data["protected"] = bool(data["protected"])
    return CatalogRecord(**data)


def _row(f: AudioFile, first_seen: str, now: str) -> dict[str, Any]:
    return {
        "path": f.path, "sha256": f.sha256, "size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns,
        "format": f.format, "lossless": int(f.lossless), "role": f.role, "track": f.track,
        "master_sha256": f.master_sha256, "protected": int(f.protected),
        "protection_evidence": f.protection_evidence,
        "report_path": f.report.path if f.report else None,
        "report_sha256": f.report.sha256 if f.report else None,
        "watermark_payload": f.watermark_payload,
        "preset": f.report.preset if f.report else None,
        "tags_json": json.dumps(f.tags, sort_keys=True), "c2pa_state": f.c2pa_state,
        "first_seen": first_seen, "scanned_at": now,
    }


@dataclass
class ScanResult:
    """What :func:`scan` did. Paths are relative to the folder."""

    catalog: str
    files: int
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    changed_masters_kept: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scan(root: str | os.PathLike[str], *, accept_changes: bool = False,
         progress: Callable[[str], None] | None = None) -> ScanResult:
    """Create or update the catalog of ``root`` from the files there now.

    New files are added; copies whose bytes changed are updated. A master (lossless
    original) whose bytes changed since the last scan keeps its old record — that is
    what bit rot looks like — unless ``accept_changes`` (you edited it on purpose).
    Records of missing files stay (so :func:`verify` keeps reporting them) unless
    ``accept_changes``. The update is one SQLite transaction.
    """
    state = inspect_folder(root, progress=progress)
    db = catalog_path(state.root)
    try:
        db.parent.mkdir(exist_ok=True)
        conn = sqlite3.connect(db)
    except (OSError, sqlite3.Error) as error:
        raise InputError(
            f"{db}: cannot create the catalog ({error}); check the folder's permissions"
        ) from error
    result = ScanResult(catalog=str(db), files=len(state.files), skipped=state.skipped)
    try:
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            _apply_scan(conn, state, result, accept_changes=accept_changes)
    except sqlite3.Error as error:
        raise InputError(f"{db}: cannot update the catalog ({error}); nothing was changed") from error
    finally:
        conn.close()
    return result


def _apply_scan(conn: sqlite3.Connection, state: FolderState, result: ScanResult, *,
                accept_changes: bool) -> None:
    now = _now()
    old = {row[0]: (row[1], row[2], row[3]) for row in
           conn.execute("SELECT path, sha256, role, first_seen FROM files")}
    columns = ("path, sha256, size_bytes, mtime_ns, format, lossless, role, track, master_sha256, "
               "protected, protection_evidence, report_path, report_sha256, watermark_payload, "
               "preset, tags_json, c2pa_state, first_seen, scanned_at")
    names = ", ".join(":" + c.strip() for c in columns.split(","))
    insert = f"INSERT OR REPLACE INTO files ({columns}) VALUES ({names})"
    for f in state.files:
        previous = old.get(f.path)
        if previous is None:
            result.added.append(f.path)
        elif previous[0] == f.sha256:
            result.unchanged.append(f.path)
        elif previous[1] == "master" and not accept_changes:
            result.changed_masters_kept.append(f.path)
            continue
        else:
            result.updated.append(f.path)
        conn.execute(insert, _row(f, previous[2] if previous else now, now))
    present = {f.path for f in state.files}
    for path in sorted(set(old) - present):
        if accept_changes:
            conn.execute("DELETE FROM files WHERE path = ?", (path,))
            result.removed.append(path)
        else:
            result.missing.append(path)
    conn.execute("DELETE FROM reports")
    for r in state.reports:
        conn.execute("INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (_rel_report(state.root, r.path), r.sha256, r.input_sha256, r.output_sha256,
                      r.preset, r.watermark_payload, now))


def _rel_report(root: Path, path: str) -> str:
    try:
        return _rel(root, Path(path))
    except ValueError:
        return path


# ---------------------------------------------------------------------------------------
# Verification (read-only)
# ---------------------------------------------------------------------------------------


@dataclass
class Change:
    """A catalogued file whose bytes differ from the record."""

    path: str
    role: str
    reason: str  # "bit rot" or "edited"
    detail: str


@dataclass
class VerifyResult:
    """What :func:`verify` found. ``ok`` is true when nothing is missing, changed or untracked."""

    catalog: str
    checked: int
    intact: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.untracked)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def verify(root: str | os.PathLike[str], *,
           progress: Callable[[str], None] | None = None) -> VerifyResult:
    """Compare the folder with its catalog: missing, changed (bit rot) and untracked files.

    Every catalogued file is hashed again. A changed file whose size and modification
    time are the same as recorded is "bit rot" (the storage changed it silently); one
    whose modification time changed was "edited". Read-only: the database is opened in
    SQLite's read-only mode and no file in the folder is written.
    Raises :class:`InputError` when the folder has no catalog.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"{base}: folder not found; give the folder you scanned")
    records = load_catalog(base)
    if records is None:
        raise InputError(
            f"{base}: no catalog here (looked for {catalog_path(base)}); "
            f"run harmonycloak catalog scan {base} first"
        )
    result = VerifyResult(catalog=str(catalog_path(base)), checked=len(records))
    for rel, record in records.items():
        if progress:
            progress(rel)
        _verify_one(base, record, result)
    _find_untracked(base, records, result)
    return result


def _verify_one(base: Path, record: CatalogRecord, result: VerifyResult) -> None:
    path = base / record.path
    if not path.is_file():
        result.missing.append(record.path)
        return
    try:
        sha = sha256_file(path)
        info = path.stat()
    except (InputError, OSError) as error:
        result.skipped.append(Skipped(record.path, _reason(error)))
        return
    if sha == record.sha256:
        result.intact.append(record.path)
        return
    same_stamp = info.st_size == record.size_bytes and info.st_mtime_ns == record.mtime_ns
    reason = "bit rot" if same_stamp else "edited"
    detail = ("content changed although size and modification time did not: the storage "
              "altered it" if same_stamp else
              f"modified {_dt.datetime.fromtimestamp(info.st_mtime_ns / 1e9):%Y-%m-%d %H:%M} "
              "after the catalog scan")
    result.changed.append(Change(record.path, record.role, reason, detail))


def _find_untracked(base: Path, records: dict[str, CatalogRecord], result: VerifyResult) -> None:
    for path in _walk(base):
        suffix = path.suffix.lower()
        rel = _rel(base, path)
        if suffix in SUPPORTED_AUDIO_SUFFIXES and rel not in records:
            try:
                _probe(path)
            except InputError as error:
                result.skipped.append(Skipped(rel, str(error)))
                continue
            result.untracked.append(rel)
        elif suffix in UNSUPPORTED_AUDIO_SUFFIXES:
            result.skipped.append(Skipped(rel, _unsupported_reason(suffix)))
