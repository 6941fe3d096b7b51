"""The batch driver: plan → skip what is done → run on a backend → summary.

:func:`run_batch` takes a :class:`~harmonycloak.batch.plan.Plan` (folder mode) and the
batch's :class:`~harmonycloak.batch.job.JobSettings`, and under the folder's lock:

1. queues again the files a killed run left ``running`` and removes the temporary files
   interrupted writes left next to planned outputs;
2. decides per file (its input hashed, or the recorded hash reused when size and
   modification time are unchanged):

   * **done already**: recorded ``done`` for this input path, input SHA-256 and settings
     hash, output and report still there (output size as recorded) → skipped;
   * **complete but not recorded** (a run killed between writing the report and
     recording it, or the state file lost): the report beside the output names this
     input's SHA-256, the output's SHA-256, the file's seed, the config, mode, target
     and watermark → recorded ``done`` without protecting it again;
   * **input changed** since it was protected → protected again (its old output, which
     this batch wrote, is replaced);
   * **protected with other settings** (another preset, seed, target ...) → refused for
     the whole batch before any work unless ``force``: the outputs would change;
   * an output that exists and that this batch did not write → that file fails ("use
     --force"), the others go on;
   * otherwise → queued.

3. runs the queue on the backend, recording ``running`` / ``done`` / ``failed`` as each
   file moves, and returns a :class:`BatchSummary`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harmonycloak.batch.job import Job, JobResult, JobSettings, settings_hash
from harmonycloak.batch.plan import Plan, PlannedFile, file_seed
from harmonycloak.batch.state import (
    BatchState,
    JobRecord,
    QueueEntry,
    batch_lock,
    source_digest,
    stale_temp_files,
)
from harmonycloak.errors import InputError

__all__ = ["BACKENDS", "BatchSummary", "FailedFile", "run_batch"]

BACKENDS = ("local", "ray", "inline")


@dataclass(frozen=True)
class FailedFile:
    """A file the batch could not protect: its output path relative to the folder, the
    input, why, and whether the cause is the input (``"input"``) or a bug / a dead worker
    (``"internal"``)."""

    relative: str
    source: str
    reason: str
    error: str


@dataclass
class BatchSummary:
    """What one :func:`run_batch` call did (paths relative to ``root``).

    ``protected``: written in this run; ``already_done``: skipped, done before;
    ``adopted``: found complete on disk and recorded without redoing; ``failed``: with
    reasons; ``requeued``: left ``running`` by a killed run; ``removed_temp_files``:
    stale temporary files deleted. ``audio_s``: seconds of audio protected in this run
    (from the reports); ``seconds``: wall time of the run.
    """

    root: str
    backend: str
    workers: int | None
    planned: int
    protected: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every file is done; 2 when files failed on bad input; 1 when any failure
        was internal (a bug or a dead worker)."""
        if not self.failed:
            return 0
        return 1 if any(f.error != "input" for f in self.failed) else 2

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


# ------------------------------------------------------------------------ deciding


@dataclass
class _Decision:
    file: PlannedFile
    entry: QueueEntry
    action: str  # "skip", "adopt", "run", "fail"
    force: bool = False
    reason: str = ""
    output_sha256: str | None = None  # "adopt": the hash the adoption check computed


def _report_path(output: Path) -> Path:
    from harmonycloak.rights import default_report_path

    return default_report_path(output)


def _intact(record: JobRecord, output: Path) -> bool:
    """The recorded output and its report are still there (size as recorded)."""
    try:
        size = output.stat().st_size
    except OSError:
        return False
    return size == record.output_size and _report_path(output).is_file()


def _adoptable(f: PlannedFile, entry: QueueEntry, settings: JobSettings) -> str | None:
    """The output's SHA-256 when the output and report on disk are exactly what this job
    would record as done; None otherwise."""
    from harmonycloak.config import config_dict
    from harmonycloak.io.files import sha256_file

    report_file = _report_path(f.output)
    if not (f.output.is_file() and report_file.is_file()):
        return None
    try:
        report = json.loads(report_file.read_text())
        output_sha = sha256_file(f.output)
    except (OSError, ValueError, InputError):
        return None
    if not isinstance(report, dict):
        return None
    wanted_target = settings.target_for(f.kind)
    mark = report.get("watermark")
    payload = mark.get("payload") if isinstance(mark, dict) else None
    wanted_payload = str(settings.watermark[1]).lower() if settings.watermark else None
    adoptable = ((report.get("input") or {}).get("sha256") == entry.source_sha256
                 and (report.get("output") or {}).get("sha256") == output_sha
                 and report.get("seed") == entry.seed
                 and report.get("mode") == settings.mode
                 and (wanted_target is None or report.get("target") == wanted_target)
                 and report.get("config") == config_dict(settings.config)
                 and payload == wanted_payload)
    return output_sha if adoptable else None


def _decide(f: PlannedFile, record: JobRecord | None, settings: JobSettings, *,
            force: bool) -> _Decision:
    source = str(f.source.resolve())
    try:
        sha, size, mtime_ns = source_digest(f.source, record if record and record.source == source else None)
    except (OSError, InputError) as error:
        entry = QueueEntry(f.relative, source, "", 0, 0, f.kind, settings_hash(settings, f.kind),
                           file_seed(settings.seed, f.relative))
        return _Decision(f, entry, "fail", reason=f"{f.source}: cannot be read ({error}); check the file")
    entry = QueueEntry(f.relative, source, sha, size, mtime_ns, f.kind,
                       settings_hash(settings, f.kind), file_seed(settings.seed, f.relative))
    same = record is not None and (record.source, record.source_sha256, record.settings_sha256) == (
        source, sha, entry.settings_sha256)
    if same and record.status == "done" and _intact(record, f.output):
        return _Decision(f, entry, "skip")
    exists = f.output.exists() or _report_path(f.output).exists()
    if not exists:
        return _Decision(f, entry, "run", force=force)
    adopted_sha = _adoptable(f, entry, settings)
    if adopted_sha is not None:
        return _Decision(f, entry, "adopt", output_sha256=adopted_sha)
    ours = record is not None and (record.attempts > 0 or record.status == "done")
    if ours and record.status == "done" and record.settings_sha256 != entry.settings_sha256 and not force:
        return _Decision(f, entry, "conflict")
    if ours or force:
        return _Decision(f, entry, "run", force=True)
    return _Decision(f, entry, "fail", reason=(
        f"{f.output} already exists and was not written by this batch; use --force to "
        "replace it, or choose another -o folder"))


def _refuse_conflicts(decisions: list[_Decision], root: Path) -> None:
    conflicts = [d for d in decisions if d.action == "conflict"]
    if conflicts:
        example = conflicts[0].file.output
        raise InputError(
            f"{root}: {len(conflicts)} file{'s' if len(conflicts) != 1 else ''} here "
            f"(e.g. {example}) were protected with other settings (preset, seed, mode, target, "
            "model or watermark); use --force to protect them again with these settings, or "
            "choose another -o folder")


# ------------------------------------------------------------------------ running


class _Recorder:
    """The backends' events: the state table, the summary, and the progress display."""

    def __init__(self, state: BatchState, summary: BatchSummary, total: int,
                 display: Any | None, on_done: Callable[[PlannedFile, dict[str, Any]], None] | None,
                 files: dict[str, PlannedFile]) -> None:
        self.state, self.summary, self.display = state, summary, display
        self.on_done, self.files = on_done, files
        self.tasks: dict[str, Any] = {}
        self.overall = display.add_task(f"{total} files", total=total) if display else None

    def started(self, job: Job, worker: str) -> None:
        self.state.mark_running(job.relative, worker=worker)
        if self.display is not None:
            self.tasks[job.relative] = self.display.add_task(f"  {job.relative}: starting", total=None)

    def progress(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        task = self.tasks.get(job.relative)
        if self.display is None or task is None:
            return
        if kind == "step":
            self.display.update(task, completed=data["step"], total=data["total"])
        elif kind == "stage":
            self.display.update(task, description=f"  {job.relative}: {data['message']}")

    def finished(self, job: Job, result: JobResult) -> None:
        from harmonycloak.io.files import sha256_file

        if result.ok and result.report is not None:
            output = Path(job.output)
            try:
                self.state.mark_done(job.relative, output_sha256=result.report["output"]["sha256"],
                                     output_size=output.stat().st_size,
                                     report_sha256=sha256_file(_report_path(output)),
                                     seconds=round(result.seconds, 3))
            except (OSError, InputError) as error:  # the files vanished under us
                result = JobResult(job.relative, False, reason=f"{output}: written but then not "
                                   f"found ({error}); run the same command again", error="internal")
            else:
                self.summary.protected.append(job.relative)
                self.summary.audio_s += float((result.report.get("audio") or {}).get("duration_s") or 0.0)
                if self.on_done is not None:
                    self.on_done(self.files[job.relative], result.report)
        if not result.ok:
            reason = result.reason or "unknown error"
            self.state.mark_failed(job.relative, reason=reason, error=result.error or "internal",
                                   seconds=round(result.seconds, 3))
            self.summary.failed.append(FailedFile(job.relative, job.source, reason,
                                                  result.error or "internal"))
        if self.display is not None:
            task = self.tasks.pop(job.relative, None)
            if task is not None:
                self.display.remove_task(task)
            self.display.advance(self.overall)


def run_batch(plan: Plan, settings: JobSettings, *, backend: str = "local",
              workers: int | None = None, ray_address: str | None = None, force: bool = False,
              console: Any | None = None,
              on_done: Callable[[PlannedFile, dict[str, Any]], None] | None = None,
              ray_init: dict[str, Any] | None = None) -> BatchSummary:
    """Protect every file of ``plan`` (folder mode) with ``settings``, resumably.

    ``backend``: ``"local"`` (``workers`` processes, None: one per core), ``"ray"``
    (``ray_address``: a cluster, None: a local Ray instance; ``ray_init``: extra
    ``ray.init`` arguments) or ``"inline"`` (one file at a time in this process: for
    notebooks and debugging; no isolation from a crash). ``force``: replace outputs this batch did not write, and
    re-protect files done with other settings. ``console``: a rich Console for the
    progress display (None: none). ``on_done(file, report)`` runs in this process after
    each file is recorded done. Failed files never raise: they are in the summary.
    Raises InputError for an unknown backend, a folder another run holds, settings that
    conflict with outputs already there (without ``force``), and a missing Ray.
    """
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: use one of {', '.join(BACKENDS)}")
    if plan.single:
        raise InputError(f"{plan.files[0].output}: a batch writes into a folder; give -o a folder name")
    if backend == "ray":
        from harmonycloak.batch.ray_backend import import_ray

        import_ray()  # the install hint before any work
    start = time.perf_counter()
    root = plan.root
    root.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(root=str(root), backend=backend,
                           workers=workers if backend == "local" else None, planned=len(plan.files))
    with batch_lock(root), BatchState(root) as state:
        summary.requeued = state.requeue_interrupted()
        records = state.records()
        targets = [p for f in plan.files for p in (f.output, _report_path(f.output))]
        for stale in stale_temp_files(targets):
            stale.unlink(missing_ok=True)
            summary.removed_temp_files.append(stale.relative_to(root).as_posix())
        decisions = [_decide(f, records.get(f.relative), settings, force=force) for f in plan.files]
        _refuse_conflicts(decisions, root)
        _record_decisions(state, decisions, summary)
        queue = [Job(str(d.file.source), str(d.file.output), d.file.relative, d.file.kind,
                     d.entry.seed, force=d.force) for d in decisions if d.action == "run"]
        _run_queue(queue, settings, state, summary, backend=backend, workers=workers,
                   ray_address=ray_address, ray_init=ray_init, console=console, on_done=on_done,
                   files={f.relative: f for f in plan.files})
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary


def _record_decisions(state: BatchState, decisions: list[_Decision], summary: BatchSummary) -> None:
    from harmonycloak.io.files import sha256_file

    for d in decisions:
        if d.action == "skip":
            summary.already_done.append(d.file.relative)
            state.refresh_source(d.file.relative, size=d.entry.source_size,
                                 mtime_ns=d.entry.source_mtime_ns)
    state.queue(d.entry for d in decisions if d.action != "skip")
    for d in decisions:
        if d.action == "adopt":
            state.mark_done(d.file.relative, output_sha256=d.output_sha256,
                            output_size=d.file.output.stat().st_size,
                            report_sha256=sha256_file(_report_path(d.file.output)),
                            seconds=None)
            summary.adopted.append(d.file.relative)
        elif d.action == "fail":
            state.mark_failed(d.file.relative, reason=d.reason, error="input")
            summary.failed.append(FailedFile(d.file.relative, str(d.file.source), d.reason, "input"))


def _run_queue(queue: list[Job], settings: JobSettings, state: BatchState, summary: BatchSummary,
               *, backend: str, workers: int | None, ray_address: str | None,
               ray_init: dict[str, Any] | None, console: Any | None,
               on_done: Callable[[PlannedFile, dict[str, Any]], None] | None,
               files: dict[str, PlannedFile]) -> None:
    if not queue:
        return
    display = None
    if console is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), console=console, transient=False)
    recorder = _Recorder(state, summary, len(queue), display, on_done, files)
    try:
        if display is not None:
            display.start()
        if backend == "ray":
            from harmonycloak.batch.ray_backend import run_ray

            run_ray(queue, settings, events=recorder, address=ray_address, init=ray_init)
        elif backend == "inline":
            from harmonycloak.batch.local import run_inline

            summary.workers = 1
            run_inline(queue, settings, events=recorder)
        else:
            from harmonycloak.batch.local import default_jobs, run_local

            summary.workers = workers or default_jobs()
            run_local(queue, settings, events=recorder, workers=summary.workers)
    finally:
        if display is not None:
            display.stop()
