"""The batch's memory: one row per output file in the output folder's catalog database.

The state lives in the same SQLite file as the rights catalog of the output folder
(``OUT_DIR/.harmonycloak/catalog.sqlite``, :mod:`harmonycloak.rights.catalog`), in its own
table ``batch_jobs``; the catalog's tables are created too, so ``harmonycloak catalog``
reads the file. One row per output (path relative to ``OUT_DIR``, POSIX), keyed for
resuming by what decides the output: the input's path and SHA-256 and a hash of the
settings (config, mode, target, model, seed, watermark;
:func:`~harmonycloak.batch.job.settings_hash`).

Life of a row: ``queued`` (planned) → ``running`` (a worker has it; ``attempts`` + 1) →
``done`` (output and report written; their hashes recorded; ``done_count`` + 1) or
``failed`` (with the reason). Every change is its own committed transaction, so a run
killed at any moment (SIGKILL included) leaves at worst rows in ``running``: the next run
queues them again (:meth:`BatchState.requeue_interrupted`).

While a run works on a folder it holds ``OUT_DIR/.harmonycloak/batch.lock`` (an OS file
lock, released by the kernel when the process dies, however it dies), so two runs never
write the same folder at once. :func:`stale_temp_files` finds the hidden temporary files
(``.NAME.tmp-XXXXXXXX.SUFFIX``, :func:`harmonycloak.io.files.temp_path_for`) that a killed
writer left next to planned outputs; they are removed before work starts and are never
outputs.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonycloak.errors import InputError

__all__ = [
    "JOB_STATUSES",
    "BatchState",
    "JobRecord",
    "QueueEntry",
    "batch_lock",
    "load_jobs",
    "source_digest",
    "stale_temp_files",
]

JOB_STATUSES = ("queued", "running", "done", "failed")
LOCK_FILE = "batch.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    output TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    source_size INTEGER NOT NULL,
    source_mtime_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    settings_sha256 TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    reason TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    done_count INTEGER NOT NULL DEFAULT 0,
    output_sha256 TEXT,
    output_size INTEGER,
    report_sha256 TEXT,
    seconds REAL,
    worker TEXT,
    updated_at TEXT NOT NULL
);
"""
_COLUMNS = ("output", "source", "source_sha256", "source_size", "source_mtime_ns", "kind",
            "settings_sha256", "seed", "status", "reason", "error", "attempts", "done_count",
            "output_sha256", "output_size", "report_sha256", "seconds", "worker", "updated_at")


@dataclass(frozen=True)
class QueueEntry:
    """What the driver knows about a file before it runs: the row's identity."""

    output: str
    source: str
    source_sha256: str
    source_size: int
    source_mtime_ns: int
    kind: str
    settings_sha256: str
    seed: int


@dataclass(frozen=True)
class JobRecord(QueueEntry):
    """One row of ``batch_jobs`` (see the module docstring): the identity, then the state."""

    status: str
    reason: str | None
    error: str | None
    attempts: int
    done_count: int
    output_sha256: str | None
    output_size: int | None
    report_sha256: str | None
    seconds: float | None
    worker: str | None
    updated_at: str


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _db_path(root: Path) -> Path:
    from harmonycloak.rights.catalog import catalog_path

    return catalog_path(root)


class BatchState:
    """The ``batch_jobs`` table of ``root``'s catalog, open for writing.

    Use as a context manager (or call :meth:`close`). Raises :class:`InputError` when
    the database cannot be created or is not a catalog.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from harmonycloak.rights.catalog import ensure_catalog_schema

        self.root = Path(root)
        self.path = _db_path(self.root)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=60.0)
            self._conn.row_factory = sqlite3.Row
            with self._conn:
                ensure_catalog_schema(self._conn)
                self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise InputError(f"{self.path}: cannot open the batch state ({error}); check the "
                             "output folder's permissions, or move the file away if it is "
                             "not a harmonycloak catalog") from error

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> BatchState:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------------- reading

    def records(self) -> dict[str, JobRecord]:
        """Every row by output path."""
        rows = self._conn.execute("SELECT * FROM batch_jobs ORDER BY output").fetchall()
        return {row["output"]: JobRecord(**dict(row)) for row in rows}

    def get(self, output: str) -> JobRecord | None:
        row = self._conn.execute("SELECT * FROM batch_jobs WHERE output = ?", (output,)).fetchone()
        return None if row is None else JobRecord(**dict(row))

    # -------------------------------------------------------------------- writing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._conn:
                yield self._conn
        except sqlite3.Error as error:
            raise InputError(f"{self.path}: cannot update the batch state ({error}); check "
                             "the free disk space and run the same command again") from error

    def queue(self, entries: Iterable[QueueEntry]) -> None:
        """Insert or re-queue rows (one transaction). A row whose identity (input path,
        input hash, settings) changed starts its counters again; one that kept it keeps
        ``attempts`` and ``done_count`` (the record of what was done before)."""
        now = _now()
        with self._tx() as conn:
            for e in entries:
                old = conn.execute("SELECT source, source_sha256, settings_sha256, attempts, done_count "
                                   "FROM batch_jobs WHERE output = ?", (e.output,)).fetchone()
                same = old is not None and (old[0], old[1], old[2]) == (
                    e.source, e.source_sha256, e.settings_sha256)
                attempts, done = (old[3], old[4]) if same else (0, 0)
                conn.execute(
                    "INSERT OR REPLACE INTO batch_jobs (output, source, source_sha256, source_size, "
                    "source_mtime_ns, kind, settings_sha256, seed, status, reason, error, attempts, "
                    "done_count, output_sha256, output_size, report_sha256, seconds, worker, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', NULL, NULL, ?, ?, "
                    "NULL, NULL, NULL, NULL, NULL, ?)",
                    (e.output, e.source, e.source_sha256, e.source_size, e.source_mtime_ns, e.kind,
                     e.settings_sha256, e.seed, attempts, done, now))

    def refresh_source(self, output: str, *, size: int, mtime_ns: int) -> None:
        """Record a new size / modification time for an input whose bytes are unchanged
        (touched or copied), so the next run need not hash it again."""
        with self._tx() as conn:
            conn.execute("UPDATE batch_jobs SET source_size = ?, source_mtime_ns = ? WHERE output = ?",
                         (size, mtime_ns, output))

    def mark_done(self, output: str, *, output_sha256: str, output_size: int, report_sha256: str,
                  seconds: float | None) -> None:
        """The output and its report are on disk (just written, or found complete after an
        interrupted run that wrote them but could not record it): ``done_count`` + 1."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE batch_jobs SET status = 'done', reason = NULL, error = NULL, "
                "output_sha256 = ?, output_size = ?, report_sha256 = ?, seconds = ?, "
                "done_count = done_count + 1, updated_at = ? WHERE output = ?",
                (output_sha256, output_size, report_sha256, seconds, _now(), output))

    def mark_running(self, output: str, *, worker: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE batch_jobs SET status = 'running', attempts = attempts + 1, "
                         "worker = ?, reason = NULL, error = NULL, updated_at = ? WHERE output = ?",
                         (worker, _now(), output))

    def mark_failed(self, output: str, *, reason: str, error: str = "input",
                    seconds: float | None = None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE batch_jobs SET status = 'failed', reason = ?, error = ?, "
                         "seconds = ?, updated_at = ? WHERE output = ?",
                         (reason, error, seconds, _now(), output))

    def requeue_interrupted(self) -> list[str]:
        """Rows left ``running`` by a run that died: back to ``queued``; their paths."""
        with self._tx() as conn:
            rows = [r[0] for r in conn.execute(
                "SELECT output FROM batch_jobs WHERE status = 'running' ORDER BY output")]
            conn.execute("UPDATE batch_jobs SET status = 'queued', reason = 'interrupted', "
                         "updated_at = ? WHERE status = 'running'", (_now(),))
        return rows


def load_jobs(root: str | os.PathLike[str]) -> dict[str, JobRecord]:
    """The batch rows of ``root``'s catalog, read-only ({} when there are none)."""
    from urllib.parse import quote

    db = _db_path(Path(root))
    if not db.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise InputError(f"{db}: cannot be read ({error})") from error
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM batch_jobs ORDER BY output").fetchall()
    except sqlite3.OperationalError:
        return {}  # a catalog without batch jobs
    finally:
        conn.close()
    return {row["output"]: JobRecord(**dict(row)) for row in rows}


def source_digest(path: Path, record: JobRecord | None) -> tuple[str, int, int]:
    """(SHA-256, size, mtime_ns) of an input. The hash is taken from ``record`` when the
    file's size and modification time are the ones recorded with it (so resuming a
    catalog does not read every master again), else computed."""
    from harmonycloak.io.files import sha256_file

    info = path.stat()
    if record is not None and (record.source_size, record.source_mtime_ns) == (info.st_size, info.st_mtime_ns):
        return record.source_sha256, info.st_size, info.st_mtime_ns
    return sha256_file(path), info.st_size, info.st_mtime_ns


@contextmanager
def batch_lock(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``root/.harmonycloak/batch.lock`` for the block; InputError right away when
    another run holds it. The kernel releases the lock when the holder dies (SIGKILL
    included), so a killed run never blocks the next one. Without POSIX ``fcntl``
    (Windows) the block runs unlocked."""
    from harmonycloak.rights.catalog import CATALOG_DIR

    path = Path(root) / CATALOG_DIR / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as error:
        raise InputError(f"{path}: cannot create the batch lock ({error.strerror or error}); "
                         "check the output folder's permissions") from error
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks through fcntl
            yield path
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{root}: another harmonycloak batch is writing to this folder "
                             f"(lock held on {path}); wait for it to finish or choose another "
                             "-o folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


_TEMP = re.compile(r"^\.(?P<target>.+)\.tmp-[0-9a-f]{8}(?P<suffix>.*)$")


def stale_temp_files(targets: Iterable[Path]) -> list[Path]:
    """The temporary files of interrupted atomic writes to ``targets``: hidden siblings
    named ``.NAME.tmp-XXXXXXXX.SUFFIX`` (:func:`~harmonycloak.io.files.temp_path_for`)
    for a target ``NAME`` with suffix ``SUFFIX``. Each folder is listed once."""
    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        by_folder.setdefault(target.parent, set()).add(target.name)
    found: list[Path] = []
    for folder, names in sorted(by_folder.items()):
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue  # not created yet: nothing stale in it
        for entry in entries:
            match = _TEMP.match(entry)
            if match and match["target"] in names and match["suffix"] == Path(match["target"]).suffix:
                found.append(folder / entry)
    return found
