"""One file's job, and the function every batch worker runs (local process or Ray task).

A :class:`Job` is plain picklable data; :func:`run_job` protects its file through
:func:`harmonycloak.pipeline.protect` with the batch's :class:`JobSettings` and returns a
:class:`JobResult` instead of raising, so that a failed file never stops the batch.
PyTorch runs on ``settings.threads`` intra-op threads in every backend: float sums depend
on the thread count, and the same thread count is what makes a Ray worker write the same
bytes as a local one.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Job", "JobResult", "JobSettings", "run_job", "settings_hash"]


@dataclass(frozen=True)
class JobSettings:
    """What every file of one batch is protected with.

    ``config``: a :class:`~harmonycloak.config.ProtectConfig`; ``mode`` goes to
    :func:`~harmonycloak.pipeline.protect` unchanged (it decides what it supports);
    ``midi_target`` / ``audio_target``: the white-box target per kind (None: the
    pipeline's default); ``midi_model_dir`` / ``audio_model_dir``: its checkpoint
    folder per kind; ``midi_corpus_dir`` /
    ``audio_corpus_dir``: where a target without ``model_dir`` is trained once (absolute
    paths: workers may run elsewhere); ``seed``: the batch seed (each file's own seed is
    :func:`~harmonycloak.batch.plan.file_seed` of it); ``device``: ``auto``, ``cpu`` or
    ``cuda``; ``watermark``: ``(key, payload_hex)`` or None; ``threads``: PyTorch threads
    per file; ``gpus``: GPUs each Ray task requests (0: CPU only).
    """

    config: Any
    mode: str = "whitebox"
    midi_target: str | None = None
    audio_target: str | None = None
    midi_model_dir: str | None = None
    audio_model_dir: str | None = None
    midi_corpus_dir: str | None = None
    audio_corpus_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    watermark: tuple[Any, str] | None = None
    threads: int = 1
    gpus: float = 0.0

    def target_for(self, kind: str) -> str | None:
        return self.midi_target if kind == "midi" else self.audio_target

    def model_for(self, kind: str) -> str | None:
        return self.midi_model_dir if kind == "midi" else self.audio_model_dir

    def corpus_for(self, kind: str) -> str | None:
        return self.midi_corpus_dir if kind == "midi" else self.audio_corpus_dir


def settings_hash(settings: JobSettings, kind: str) -> str:
    """SHA-256 (hex) of everything in ``settings`` that decides a ``kind`` file's output:
    config, mode, target, model, corpus, batch seed and the watermark (key id and
    payload, never the key). Device, threads and GPUs are left out: they say where the
    work runs, not what is asked for."""
    from harmonycloak.config import config_dict

    mark = None
    if settings.watermark is not None:
        key, payload = settings.watermark
        mark = [str(getattr(key, "key_id", key)), str(payload).lower()]
    data = {"config": config_dict(settings.config), "mode": settings.mode, "kind": kind,
            "target": settings.target_for(kind), "model_dir": settings.model_for(kind),
            "corpus_dir": settings.corpus_for(kind), "seed": int(settings.seed), "watermark": mark}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """One file to protect: ``source`` to ``output`` (``relative`` to the output folder,
    POSIX), its ``kind``, its own ``seed``; ``force``: an existing output may be replaced
    (one this batch wrote before, or ``--force``)."""

    source: str
    output: str
    relative: str
    kind: str
    seed: int
    force: bool = False


@dataclass(frozen=True)
class JobResult:
    """What became of one job. ``ok``: the output and its report were written;
    otherwise ``reason`` says why not, and ``error`` is ``"input"`` (a problem with the
    file or the options: :class:`~harmonycloak.errors.HarmonyCloakError`) or
    ``"internal"`` (a bug, or a worker that died). ``report``: the report dict (also on
    disk), None on failure."""

    relative: str
    ok: bool
    reason: str | None = None
    error: str | None = None
    report: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[str, dict[str, Any]], None]


def run_job(job: Job, settings: JobSettings, *, output: str | Path | None = None,
            source: str | Path | None = None, on_event: ProgressFn | None = None) -> JobResult:
    """Protect ``job``'s file with ``settings``; never raises for a failed file.

    ``output`` / ``source`` override where the file is written / read (the Ray backend
    protects a copy in a task folder; default: the job's own paths). ``on_event(kind,
    data)`` gets ``("stage", {"message"})`` before each stage and ``("step", {"step",
    "total"})`` after each optimization step. KeyboardInterrupt propagates.
    """
    say = on_event or (lambda _kind, _data: None)
    start = time.perf_counter()
    _set_threads(settings.threads)
    try:
        with _blas_threads(settings.threads):
            return _protect(job, settings, source, output, say, start)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # never raise for one file (see _protect)
        return JobResult(job.relative, False, reason=f"internal error: {type(error).__name__}: "
                         f"{error}", error="internal", seconds=time.perf_counter() - start)


def _protect(job: Job, settings: JobSettings, source: str | Path | None, output: str | Path | None,
             say: ProgressFn, start: float) -> JobResult:
    from harmonycloak.errors import HarmonyCloakError
    from harmonycloak.pipeline import protect

    try:
        report = protect(
            source if source is not None else job.source,
            output if output is not None else job.output,
            mode=settings.mode, target=settings.target_for(job.kind),
            model_dir=settings.model_for(job.kind), corpus_dir=settings.corpus_for(job.kind),
            config=settings.config, seed=job.seed, device=settings.device,
            watermark=settings.watermark if job.kind == "audio" else None, force=job.force,
            progress=lambda message: say("stage", {"message": message}),
            on_iteration=lambda info: say("step", {"step": info["step"], "total": info["total"]}))
    except HarmonyCloakError as error:
        return JobResult(job.relative, False, reason=str(error), error="input",
                         seconds=time.perf_counter() - start)
    except Exception as error:  # a bug in one file must not stop the batch
        where = traceback.extract_tb(error.__traceback__)[-1:]
        place = f" at {Path(where[0].filename).name}:{where[0].lineno}" if where else ""
        return JobResult(job.relative, False, reason=f"internal error: {type(error).__name__}: "
                         f"{error}{place}", error="internal", seconds=time.perf_counter() - start)
    return JobResult(job.relative, True, report=report, seconds=time.perf_counter() - start)


def _set_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _blas_threads(threads: int) -> Any:
    """Limit the BLAS pool (numpy, scipy) to ``threads`` for one job: the same count in
    every backend, whatever the environment of the worker process says."""
    from contextlib import nullcontext

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: then the environment decides
        return nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")
