"""The web app's job queue: kept in SQLite so jobs survive a page reload and a restart.

One :class:`Worker` thread runs the queued jobs one at a time, oldest first, through
:func:`harmonycloak.pipeline.protect` (the same entry point as the command line). Its
``on_iteration`` hook writes the progress (step / total and an estimate of the time left
from the time the optimization has taken so far) into the database, and raises
:class:`Cancelled` once the job is cancelled: ``protect`` then writes nothing.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A job found
``running`` when the app starts was cut off by a crash or a kill: it is queued again (its
partial outputs removed), or marked failed with the reason after
:data:`MAX_ATTEMPTS` such starts, so one file that brings the server down cannot do it
forever.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonycloak.errors import HarmonyCloakError

__all__ = ["Cancelled", "JobStore", "MAX_ATTEMPTS", "STATES", "Worker", "run_job"]

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
MAX_ATTEMPTS = 2
DB_FILE = "jobs.sqlite"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    suffix TEXT NOT NULL,
    options TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    eta_s REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    optimizing_at REAL,
    updated_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    payload TEXT,
    figures TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Share of the progress bar each phase fills: reading/model loading, the optimization,
# writing and verifying the written file.
_BEFORE, _OPTIMIZE = 0.05, 0.85


class Cancelled(Exception):
    """Raised inside ``protect``'s callbacks to stop a job; nothing is written."""


class _Stopping(Exception):
    """Raised inside ``protect``'s callbacks when the server shuts down: the job is queued
    again, not cancelled."""


@dataclass(frozen=True)
class Job:
    """One row of the queue, as the API returns it (see :meth:`to_json`)."""

    id: str
    name: str
    kind: str
    suffix: str
    options: dict[str, Any]
    info: dict[str, Any]
    status: str
    stage: str
    step: int
    total: int
    eta_s: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    cancel_requested: bool
    message: str | None
    payload: str | None
    figures: dict[str, Any] | None

    @property
    def progress(self) -> float:
        """0..1 for the progress bar (phases weighted as :data:`_BEFORE`, :data:`_OPTIMIZE`)."""
        if self.status == "done":
            return 1.0
        if self.status != "running":
            return 0.0
        if self.total <= 0 or self.step <= 0:
            return _BEFORE if self.stage else 0.0
        share = min(1.0, self.step / self.total)
        if share >= 1.0 and self.stage not in ("optimizing", ""):
            return _BEFORE + _OPTIMIZE + 0.05
        return _BEFORE + _OPTIMIZE * share

    def to_json(self, *, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        elapsed = None
        if self.started_at is not None:
            elapsed = (self.finished_at or now) - self.started_at
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "status": self.status,
            "stage": self.stage, "step": self.step, "total": self.total,
            "progress": round(self.progress, 4),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "elapsed_s": None if elapsed is None else round(elapsed, 1),
            "options": self.options, "info": self.info, "message": self.message,
            "payload": self.payload, "figures": self.figures,
            "cancel_requested": self.cancel_requested, "created_at": self.created_at,
        }


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], name=row["name"], kind=row["kind"], suffix=row["suffix"],
        options=json.loads(row["options"]), info=json.loads(row["info"] or "{}"),
        status=row["status"], stage=row["stage"], step=row["step"], total=row["total"],
        eta_s=row["eta_s"], created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], attempts=row["attempts"],
        cancel_requested=bool(row["cancel_requested"]), message=row["message"],
        payload=row["payload"], figures=json.loads(row["figures"]) if row["figures"] else None,
    )


class JobStore:
    """The queue in ``data_dir/jobs.sqlite``. Every method opens its own connection, so
    the store is safe to share between the request threads and the worker."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILE
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('schema', ?)", (str(_SCHEMA_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('watermark_counter', '0')")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=10000")
            yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ writes

    def add(self, *, job_id: str, name: str, kind: str, suffix: str, options: dict[str, Any],
            info: dict[str, Any], payload: str | None = None) -> Job:
        with self._connect() as db:
            db.execute(
                "INSERT INTO jobs(id, name, kind, suffix, options, info, status, created_at, payload) "
                "VALUES(?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (job_id, name, kind, suffix, json.dumps(options), json.dumps(info), time.time(), payload))
        job = self.get(job_id)
        if job is None:  # only if another process deleted the row in between
            raise HarmonyCloakError(f"{name}: the job could not be saved; try again")
        return job

    def next_watermark_track_id(self) -> int:
        """A new 32-bit track id for a watermark payload (a counter kept in the database;
        never reused, also across restarts)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            value = int(db.execute("SELECT value FROM meta WHERE key='watermark_counter'").fetchone()[0]) + 1
            db.execute("UPDATE meta SET value=? WHERE key='watermark_counter'", (str(value),))
            db.execute("COMMIT")
        if value > 0xFFFFFFFF:
            raise HarmonyCloakError("the watermark track counter is exhausted (2^32 files); "
                                    "start a new data folder with --data-dir and a new key")
        return value

    def claim_next(self) -> Job | None:
        """The oldest queued job, now ``running`` (attempts + 1), or None."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            now = time.time()
            db.execute("UPDATE jobs SET status='running', stage='starting', step=0, total=0, eta_s=NULL, "
                       "started_at=?, optimizing_at=NULL, updated_at=?, attempts=attempts+1, message=NULL "
                       "WHERE id=?", (now, now, row["id"]))
            db.execute("COMMIT")
        return self.get(row["id"])

    def set_stage(self, job_id: str, stage: str) -> None:
        now = time.time()
        with self._connect() as db:
            if stage == "optimizing":
                db.execute("UPDATE jobs SET stage=?, optimizing_at=COALESCE(optimizing_at, ?), updated_at=? "
                           "WHERE id=?", (stage, now, now, job_id))
            else:
                db.execute("UPDATE jobs SET stage=?, updated_at=? WHERE id=?", (stage, now, job_id))

    def set_progress(self, job_id: str, step: int, total: int) -> None:
        """Record step / total; the time left is the optimization's time per step so far
        times the steps still to go, from the second step on (the first one also carries
        the first round's training steps on the model, so alone it overestimates)."""
        now = time.time()
        with self._connect() as db:
            row = db.execute("SELECT optimizing_at, started_at FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return
            since = row["optimizing_at"] or row["started_at"] or now
            eta = (now - since) / step * max(0, total - step) if step >= 2 else None
            db.execute("UPDATE jobs SET step=?, total=?, eta_s=?, stage='optimizing', "
                       "optimizing_at=COALESCE(optimizing_at, ?), updated_at=? WHERE id=?",
                       (step, total, eta, since, now, job_id))

    def finish(self, job_id: str, status: str, *, message: str | None = None,
               figures: dict[str, Any] | None = None) -> None:
        if status not in ("done", "failed", "cancelled", "queued"):
            raise ValueError(status)
        now = time.time()
        with self._connect() as db:
            if status == "queued":  # a clean shutdown: back in the queue, the try not counted
                db.execute("UPDATE jobs SET status='queued', stage='', step=0, total=0, eta_s=NULL, "
                           "started_at=NULL, attempts=MAX(0, attempts-1), updated_at=? WHERE id=?",
                           (now, job_id))
                return
            db.execute("UPDATE jobs SET status=?, message=?, figures=?, eta_s=NULL, finished_at=?, "
                       "updated_at=?, stage=? WHERE id=?",
                       (status, message, json.dumps(figures) if figures is not None else None, now, now,
                        "" if status != "done" else "done", job_id))

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; flag a running one (the worker stops it). Finished
        jobs are left as they are. Returns the job after the change (None: no such job)."""
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE jobs SET status='cancelled', finished_at=?, updated_at=?, stage='', "
                       "message='cancelled before it started' WHERE id=? AND status='queued'",
                       (now, now, job_id))
            db.execute("UPDATE jobs SET cancel_requested=1, updated_at=? WHERE id=? AND status='running'",
                       (now, job_id))
            db.execute("COMMIT")
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM jobs WHERE id=? AND status NOT IN ('running')",
                              (job_id,)).rowcount > 0

    def recover(self, on_requeue: Callable[[Job], None] | None = None) -> list[Job]:
        """After a start: jobs left ``running`` by a crash are queued again, or failed with
        the reason after :data:`MAX_ATTEMPTS` starts, or cancelled when that was asked.
        ``on_requeue(job)`` runs for each (to remove partial outputs). Returns them."""
        now = time.time()
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status='running'").fetchall()
            for row in rows:
                if row["cancel_requested"]:
                    db.execute("UPDATE jobs SET status='cancelled', stage='', finished_at=?, updated_at=?, "
                               "message='cancelled (the app stopped before the job ended)' WHERE id=?",
                               (now, now, row["id"]))
                elif row["attempts"] >= MAX_ATTEMPTS:
                    db.execute(
                        "UPDATE jobs SET status='failed', stage='', finished_at=?, updated_at=?, message=? "
                        "WHERE id=?",
                        (now, now, f"{row['name']}: the app stopped {row['attempts']} times while "
                                   "protecting this file, so it was not tried again; if the computer "
                                   "ran out of memory, try a shorter file, or use the command line "
                                   "(harmonycloak protect)", row["id"]))
                else:
                    db.execute("UPDATE jobs SET status='queued', stage='', step=0, total=0, eta_s=NULL, "
                               "started_at=NULL, optimizing_at=NULL, updated_at=?, "
                               "message='restarted: the app stopped while this file was being protected' "
                               "WHERE id=?", (now, row["id"]))
        recovered = [job for job in (self.get(r["id"]) for r in rows) if job is not None]
        for job in recovered:
            if on_requeue is not None:
                on_requeue(job)
        return recovered

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def all(self) -> list[Job]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
        return [_row_to_job(r) for r in rows]

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is None or bool(row[0])  # a deleted job is cancelled too


def run_job(job: Job, *, store: JobStore, data_dir: Path, settings: Any,
            check: Callable[[], None]) -> dict[str, Any]:
    """Protect one job's uploaded copy into its folder; returns the figures for the page.

    ``check()`` raises :class:`Cancelled` (or a stop) when the job must end; it runs at
    every stage and every optimization step. Errors the user can fix propagate as
    :class:`~harmonycloak.errors.HarmonyCloakError`.
    """
    from dataclasses import replace

    from harmonycloak.config import preset
    from harmonycloak.pipeline import protect
    from harmonycloak.web.figures import job_figures
    from harmonycloak.web.storage import JobFiles, ensure_watermark_key

    files = JobFiles(data_dir, job.id, job.suffix, job.kind)
    files.clear_outputs()
    config = preset(job.options["preset"])
    if settings.engine_override is not None:
        config = replace(config, engine=settings.engine_override)
    watermark = None
    if job.kind == "audio" and job.options.get("watermark") and job.payload:
        watermark = (ensure_watermark_key(data_dir), job.payload)

    def progress(stage: str) -> None:
        check()
        store.set_stage(job.id, stage)

    def on_iteration(info: dict[str, Any]) -> None:
        check()
        store.set_progress(job.id, int(info["step"]), int(info["total"]))

    check()
    report = protect(files.original, files.protected, mode=settings.mode, model_dir=settings.model_dirs.get(job.kind),
                     corpus_dir=settings.corpus_dirs.get(job.kind), config=config, seed=settings.seed,
                     device=settings.device, watermark=watermark, report_path=files.report,
                     progress=progress, on_iteration=on_iteration)
    progress("measuring")
    return job_figures(report, files, settings=settings, check=check)


class Worker:
    """The one background thread that runs queued jobs, one at a time."""

    def __init__(self, store: JobStore, runner: Callable[[Job, Callable[[], None]], dict[str, Any]],
                 *, describe_error: Callable[[Job, BaseException], str],
                 on_cancel: Callable[[Job], None], poll_s: float = 0.5) -> None:
        self.store = store
        self.runner = runner
        self.describe_error = describe_error
        self.on_cancel = on_cancel
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="harmonycloak-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the current step; a running job goes back to the queue."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancel.add(job_id)

    def _check(self, job_id: str) -> Callable[[], None]:
        def check() -> None:
            if self._stop.is_set():
                raise _Stopping()
            with self._lock:
                flagged = job_id in self._cancel
            if flagged or self.store.cancel_requested(job_id):
                raise Cancelled()
        return check

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next()
            except sqlite3.Error:  # e.g. locked for longer than the busy timeout: try again
                job = None
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            self.run_one(job)

    def run_one(self, job: Job) -> str:
        """Run a claimed job to its end state; returns that state."""
        self.current = job.id
        check = self._check(job.id)
        try:
            figures = self.runner(job, check)
            try:
                check()  # cancelled after the last step: Cancelled drops the result below
            except _Stopping:
                pass  # finished anyway: keep it
            self.store.finish(job.id, "done", figures=figures)
            return "done"
        except Cancelled:
            self.on_cancel(job)
            self.store.finish(job.id, "cancelled", message="cancelled; nothing was kept")
            return "cancelled"
        except _Stopping:
            self.on_cancel(job)
            self.store.finish(job.id, "queued")
            return "queued"
        except HarmonyCloakError as error:
            self.on_cancel(job)
            self.store.finish(job.id, "failed", message=self.describe_error(job, error))
            return "failed"
        except Exception as error:  # a bug: keep the app alive, say so plainly
            self.on_cancel(job)
            self.store.finish(job.id, "failed", message=(
                f"{job.name}: internal error ({type(error).__name__}: {error}); this is a bug in "
                "harmonycloak, please report it"))
            return "failed"
        finally:
            with self._lock:
                self._cancel.discard(job.id)
            self.current = None
