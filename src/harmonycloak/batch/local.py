"""The local backend: a pool of worker processes on this machine, one file per worker.

Each worker is a fresh ``spawn``-ed Python process (no forked PyTorch state) that
protects one file at a time: :func:`~harmonycloak.batch.job.run_job` writes the output
and its report atomically in place. The driver talks to each worker over its own
``multiprocessing`` pipe: it sends one :class:`~harmonycloak.batch.job.Job`, and the
worker sends back progress events (stage, optimization step) and then the result. A
worker gets its next file only when it has returned the last, so memory holds at most
one file per worker (long audio is processed by the pipeline in chunks).

Why a pipe per worker and not one shared queue: a shared ``multiprocessing.Queue``
guards its pipe with one lock across processes, and a worker killed (out of memory,
SIGKILL) while holding it hangs every other worker. A private pipe has no shared lock;
the driver waits on all pipes and on every process's sentinel at once
(``multiprocessing.connection.wait``), so a worker that dies is noticed at once, its
file is reported failed with the signal, a new worker takes its place and the batch
goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from harmonycloak.batch.job import Job, JobResult, JobSettings, run_job

__all__ = ["BatchEvents", "default_jobs", "run_inline", "run_local"]

_STEP_EVENT_S = 0.1  # at most ten progress messages a second per worker


class BatchEvents(Protocol):
    """What a backend tells the driver, always in the driver's process and thread."""

    def started(self, job: Job, worker: str) -> None: ...
    def progress(self, job: Job, kind: str, data: dict[str, Any]) -> None: ...
    def finished(self, job: Job, result: JobResult) -> None: ...


def default_jobs() -> int:
    """Workers by default: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _die_with(parent_pid: int) -> None:
    """End this worker when the driver dies, however it dies (SIGKILL included): a
    worker left running would go on writing into a folder that a resumed run now owns.
    Linux: the kernel's parent-death signal; elsewhere (and as a back-up) a thread that
    watches the parent's pid."""
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="harmonycloak-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, settings: JobSettings, parent_pid: int) -> None:
    """A worker process: protect the jobs the driver sends until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _die_with(parent_pid)
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the driver is gone
            return
        if job is None:
            return
        last = [0.0]

        def send(kind: str, data: dict[str, Any], job: Job = job) -> None:
            now = time.monotonic()
            if kind == "step" and data["step"] < data["total"] and now - last[0] < _STEP_EVENT_S:
                return
            last[0] = now
            conn.send(("event", job.relative, kind, data))

        result = run_job(job, settings, on_event=send)
        conn.send(("result", job.relative, result))


@dataclass
class _Worker:
    name: str
    process: Any
    conn: Connection
    job: Job | None = None
    messages: deque = field(default_factory=deque)


def _start_worker(ctx: Any, settings: JobSettings, name: str) -> _Worker:
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(target=_worker_main, args=(child, settings, os.getpid()), name=f"harmonycloak-{name}",
                          daemon=True)
    process.start()
    child.close()
    return _Worker(name=name, process=process, conn=parent)


def _death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint} while protecting this file"
    return f"the worker process exited (code {code}) while protecting this file"


def run_local(jobs: Iterable[Job], settings: JobSettings, *, events: BatchEvents,
              workers: int | None = None) -> None:
    """Protect ``jobs`` on ``workers`` processes (None: :func:`default_jobs`), reporting
    to ``events``; returns when every job has a result. A worker that dies fails only
    its current file and is replaced. Ctrl-C stops the workers and raises
    KeyboardInterrupt (what was written stays complete; the state says what is left)."""
    pending = deque(jobs)
    if not pending:
        return
    count = max(1, min(workers or default_jobs(), len(pending)))
    ctx = mp.get_context("spawn")
    pool = [_start_worker(ctx, settings, f"worker {i + 1}") for i in range(count)]
    try:
        _drive(ctx, settings, pool, pending, events)
    except BaseException:
        for w in pool:
            if w.process.is_alive():
                w.process.terminate()
        for w in pool:
            w.process.join(timeout=5)
        raise
    for w in pool:
        try:
            w.conn.send(None)
        except OSError:
            pass
    for w in pool:
        w.process.join(timeout=10)
        if w.process.is_alive():
            w.process.terminate()


def _drive(ctx: Any, settings: JobSettings, pool: list[_Worker], pending: deque,
           events: BatchEvents) -> None:
    while pending or any(w.job is not None for w in pool):
        for w in pool:
            if w.job is None and pending and w.process.is_alive():
                w.job = pending.popleft()
                events.started(w.job, w.name)
                w.conn.send(w.job)
        busy = [w for w in pool if w.job is not None]
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        for w in busy:
            if w.conn in ready or w.process.sentinel in ready:
                _service(ctx, settings, pool, w, events, dead=w.process.sentinel in ready)


def _service(ctx: Any, settings: JobSettings, pool: list[_Worker], w: _Worker,
             events: BatchEvents, *, dead: bool) -> None:
    """Read what ``w`` sent; on its death fail its job and put a new worker in its place."""
    try:
        while w.job is not None and w.conn.poll():
            message = w.conn.recv()
            if message[0] == "event":
                events.progress(w.job, message[2], message[3])
            else:
                job, w.job = w.job, None
                events.finished(job, message[2])
    except (EOFError, OSError):
        dead = True
    if not dead:
        return
    w.process.join(timeout=5)
    if w.job is not None:
        job, w.job = w.job, None
        events.finished(job, JobResult(job.relative, False, reason=_death_reason(w.process.exitcode),
                                       error="internal"))
    w.conn.close()
    pool[pool.index(w)] = _start_worker(ctx, settings, w.name)


def run_inline(jobs: Iterable[Job], settings: JobSettings, *, events: BatchEvents) -> None:
    """Protect ``jobs`` one after the other in this process (notebooks, debugging): the
    same :func:`~harmonycloak.batch.job.run_job` as the workers, no isolation from a
    crash. PyTorch's thread count is put back afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        for job in jobs:
            events.started(job, "inline")
            events.finished(job, run_job(job, settings, on_event=lambda kind, data, job=job:
                                         events.progress(job, kind, data)))
    finally:
        torch.set_num_threads(threads)
