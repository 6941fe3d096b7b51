"""The Ray backend: the same jobs as Ray tasks, so a cluster protects a catalog in parallel.

Install with ``pip install 'harmonycloak[ray]'``. Each file is one task that requests
``num_cpus = settings.threads`` and ``num_gpus = settings.gpus`` (so a GPU cluster runs
one file per GPU, or several per GPU with a fraction). The task gets the input's *bytes*
through Ray's object store, protects a copy in a task folder with
:func:`~harmonycloak.batch.job.run_job` (the very function local workers run, with the
same seed and thread count, hence the same bytes) and returns the protected bytes and the
report. The driver, on the machine that holds ``OUT_DIR``, writes both atomically, with
the report's paths set to the real input and output, and records the state: workers need
no shared file system for the music. What they do need at the same absolute path on every
node: ``--model DIR`` (or the training corpus and ``$HARMONYCLOAK_CACHE``), and the
harmonycloak package itself (install it on every node, or ship it in Ray's
``runtime_env``). A watermark key travels to the workers inside the task arguments:
keep the cluster's network private.

At most ``2 x`` (the slots the cluster has for one task) files are in flight at once, so
the object store holds a bounded number of inputs and outputs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harmonycloak.batch.job import Job, JobResult, JobSettings, run_job
from harmonycloak.batch.local import BatchEvents
from harmonycloak.errors import HarmonyCloakError, InputError

__all__ = ["RAY_INSTALL_HINT", "import_ray", "protect_bytes", "run_ray"]

RAY_INSTALL_HINT = ("--backend ray needs Ray: pip install 'harmonycloak[ray]' (or pip install "
                    "'ray>=2.9'), or use --backend local")


def import_ray() -> Any:
    """The ``ray`` module; InputError with the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_INSTALL_HINT) from None
    return ray


def protect_bytes(job: Job, settings: JobSettings, data: bytes) -> tuple[JobResult, bytes | None]:
    """Protect ``data`` (the bytes of ``job.source``) in a private folder; the result and
    the protected file's bytes (None on failure). The report inside the result still
    names the task folder's paths; :func:`run_ray`'s driver sets the real ones. A failure's
    reason names the job's own paths."""
    with tempfile.TemporaryDirectory(prefix="harmonycloak-task-") as folder:
        source = Path(folder) / "in" / Path(job.source).name
        output = Path(folder) / "out" / Path(job.output).name
        source.parent.mkdir()
        source.write_bytes(data)
        result = run_job(replace(job, force=False), settings, source=source, output=output)
        if not result.ok:  # the message names the file the user knows, not the task's copy
            reason = (result.reason or "").replace(str(source), job.source).replace(str(output), job.output)
            return replace(result, reason=reason), None
        return result, output.read_bytes()


def _slots(ray: Any, settings: JobSettings) -> int:
    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 1) // max(1, settings.threads))
    if settings.gpus > 0:
        slots = min(slots, int(resources.get("GPU", 0) // settings.gpus))
        if slots < 1:
            raise InputError(f"--ray-gpus {settings.gpus:g}: the Ray cluster has "
                             f"{resources.get('GPU', 0):g} GPUs; use --ray-gpus 0 or add GPU nodes")
    return max(1, slots)


def run_ray(jobs: Iterable[Job], settings: JobSettings, *, events: BatchEvents,
            address: str | None = None, init: dict[str, Any] | None = None) -> None:
    """Protect ``jobs`` as Ray tasks, writing results into place from this process.

    ``address``: a running cluster (``ray://host:10001`` or ``host:6379``; None starts a
    local Ray instance, or uses the one already initialized in this process); ``init``:
    extra keyword arguments for ``ray.init``. Raises InputError when Ray is missing or
    the cluster cannot be reached.
    """
    ray = import_ray()
    pending = list(jobs)
    if not pending:
        return
    started_here = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("HARMONYCLOAK_CACHE",) if k in os.environ}
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "runtime_env": {"env_vars": env} if env else None}
        kwargs.update(init or {})
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise InputError(f"--ray-address {address}: cannot connect to the Ray cluster "
                             f"({error}); check the address, or leave it out to start Ray "
                             "on this machine") from error
        started_here = True
    try:
        _drive(ray, pending, settings, events)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray: Any, pending: list[Job], settings: JobSettings, events: BatchEvents) -> None:
    task = ray.remote(num_cpus=settings.threads, num_gpus=settings.gpus, max_retries=1)(protect_bytes)
    window = 2 * _slots(ray, settings)
    queue = list(reversed(pending))
    in_flight: dict[Any, Job] = {}
    while queue or in_flight:
        while queue and len(in_flight) < window:
            job = queue.pop()
            try:
                data = Path(job.source).read_bytes()
            except OSError as error:
                events.finished(job, JobResult(job.relative, False, error="input", reason=(
                    f"{job.source}: cannot be read ({error.strerror or error}); check the file")))
                continue
            events.started(job, "ray")
            in_flight[task.remote(job, settings, data)] = job
        if not in_flight:
            continue
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            job = in_flight.pop(ref)
            events.finished(job, _collect(ray, ref, job))


def _collect(ray: Any, ref: Any, job: Job) -> JobResult:
    """The task's result, with its output and report written into place."""
    try:
        result, data = ray.get(ref)
    except Exception as error:  # the task's worker died, or Ray failed it
        return JobResult(job.relative, False, error="internal",
                         reason=f"the Ray task failed: {type(error).__name__}: {error}")
    if not result.ok or data is None:
        return result
    try:
        report = _write_outputs(job, data, result.report or {})
    except HarmonyCloakError as error:
        return JobResult(job.relative, False, reason=str(error), error="input",
                         seconds=result.seconds)
    return replace(result, report=report)


def _write_outputs(job: Job, data: bytes, report: dict[str, Any]) -> dict[str, Any]:
    """Write the protected bytes and the report (real paths) atomically; the report."""
    from harmonycloak.io.files import atomic_write, sha256_file
    from harmonycloak.rights import default_report_path

    output = Path(job.output)
    report = {**report, "input": {**report.get("input", {}), "path": job.source},
              "output": {**report.get("output", {}), "path": job.output}}
    atomic_write(output, lambda tmp: Path(tmp).write_bytes(data), force=job.force,
                 inputs=(job.source,))
    if sha256_file(output) != report["output"].get("sha256"):
        raise InputError(f"{output}: the written bytes differ from the task's report; "
                         "check the disk and run the same command again")
    atomic_write(default_report_path(output),
                 lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"),
                 force=job.force)
    return report
