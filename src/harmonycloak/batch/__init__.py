"""Protect a whole catalog: resumable batch jobs on one machine or on a Ray cluster.

``harmonycloak protect DIR -o OUT_DIR`` walks the folder, mirrors its layout in OUT_DIR,
protects every audio and MIDI file through :func:`harmonycloak.pipeline.protect` and
records each file's state in the folder's SQLite catalog, so that a run killed at any
moment finishes the rest when started again (see ``docs/batch.md``).

* :mod:`~harmonycloak.batch.plan` — which files, where their outputs go, per-file seeds;
* :mod:`~harmonycloak.batch.state` — the job table (queued / running / done / failed)
  in ``OUT_DIR/.harmonycloak/catalog.sqlite``, the lock, stale temporary files;
* :mod:`~harmonycloak.batch.job` — one file's job and the function every worker runs;
* :mod:`~harmonycloak.batch.local` — a process pool on this machine (default);
* :mod:`~harmonycloak.batch.ray_backend` — the same jobs as Ray tasks (``harmonycloak[ray]``);
* :mod:`~harmonycloak.batch.run` — the driver: plan, skip what is done, run, summarize.

Importing this package is cheap: torch, rich and ray are imported where they are used.
"""

from __future__ import annotations

from harmonycloak.batch.job import Job, JobResult, JobSettings
from harmonycloak.batch.plan import Plan, PlannedFile, file_seed, plan_files
from harmonycloak.batch.run import BatchSummary, run_batch

__all__ = [
    "BatchSummary",
    "Job",
    "JobResult",
    "JobSettings",
    "Plan",
    "PlannedFile",
    "file_seed",
    "plan_files",
    "run_batch",
]
