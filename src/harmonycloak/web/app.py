"""The FastAPI app behind ``harmonycloak serve``: one page (``static/``) and a small JSON API.

Everything the page does goes through the same functions as the command line:
:func:`harmonycloak.pipeline.protect` (in the job queue, :mod:`harmonycloak.web.jobs`),
:func:`harmonycloak.io.audio.save_audio` for downloads, :mod:`harmonycloak.rights.tags`,
:mod:`harmonycloak.rights.policy` and :func:`harmonycloak.rights.audit.audit`. Every
:class:`~harmonycloak.errors.HarmonyCloakError` becomes HTTP 400 with ``{"detail": str(error)}``
(the command line's message, with the app's internal paths replaced by the file's name).

Safety (see ``docs/web.md``): bound to 127.0.0.1 by default; with a loopback address the
``Host`` header must name this computer (no DNS rebinding); requests that change
anything must carry ``X-HarmonyCloak: 1`` and, when the browser sends an ``Origin``, come
from this app's own origin (no cross-site requests); uploads larger than the limit are
refused from their ``Content-Length`` before they are read (413); stored files have
generated names; the uploaded copy is never modified; the audit (which reads folders on
this computer) only answers on a loopback address.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
import zipfile
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask

from harmonycloak import __version__
from harmonycloak.errors import HarmonyCloakError, InputError
from harmonycloak.web import storage
from harmonycloak.web.jobs import ACTIVE, Job, JobStore, Worker, run_job
from harmonycloak.web.settings import EXPORT_FORMATS, PRESET_TEXT, ServeSettings

__all__ = ["create_app", "CSRF_HEADER", "UPLOAD_SLACK_BYTES"]

STATIC_DIR = Path(__file__).parent / "static"
CSRF_HEADER = "x-harmonycloak"
UPLOAD_SLACK_BYTES = 64 * 1024
"""Room for the multipart envelope and form fields above the file-size limit."""
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "media-src 'self'; connect-src 'self'; object-src 'none'; frame-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_AUDIT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def too_large_message(name: str, size_bytes: int | None, limit_mb: float) -> str:
    """What the page says about a file over the upload limit."""
    size = "" if size_bytes is None else f" ({size_bytes / 1e6:.0f} MB)"
    return (f"{name}{size} is larger than this app's upload limit of {limit_mb:g} MB; protect it "
            f"with the command line (harmonycloak protect), or start the app with a higher "
            f"--max-upload-mb")


def create_app(*, data_dir: Path, settings: ServeSettings) -> FastAPI:
    """The web app, keeping its jobs and files in ``data_dir`` (created if missing).

    Jobs left running by a crash are recovered when the app is created (see
    :meth:`JobStore.recover`); the worker thread starts with the app's lifespan (and
    stops with it) when ``settings.start_worker``.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(data_dir)
    store.recover(on_requeue=lambda job: _files(data_dir, job).clear_outputs())
    cache_lock = threading.Lock()

    def describe(job: Job, error: BaseException) -> str:
        files = _files(data_dir, job)
        return storage.public_message(error, {
            str(files.original): job.name,
            str(files.protected): storage.download_name(job.name, files.protected.suffix),
            str(files.report): storage.download_name(job.name, files.protected.suffix) + ".report.json",
            str(data_dir / storage.KEY_FILE): "the app's watermark key"})

    worker = Worker(
        store,
        lambda job, check: run_job(job, store=store, data_dir=data_dir, settings=settings, check=check),
        describe_error=describe,
        on_cancel=lambda job: _files(data_dir, job).clear_outputs())

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        if settings.start_worker:
            worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="harmonycloak", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.worker, app.state.settings, app.state.data_dir = store, worker, settings, data_dir
    app.state.last_audit_html = None

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        refusal = _refusal(request, settings)
        if refusal is not None:
            return refusal
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(HarmonyCloakError)
    async def harmonycloak_error(_: Request, error: HarmonyCloakError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    # ------------------------------------------------------------------ the page

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        key = data_dir / storage.KEY_FILE
        key_id = None
        if key.exists():
            try:
                key_id = storage.ensure_watermark_key(data_dir).key_id
            except HarmonyCloakError:
                key_id = None
        from harmonycloak.config import PRESETS
        from harmonycloak.pipeline import iterations_total

        return {
            "version": __version__, "mode": settings.mode, "loopback": settings.loopback,
            "max_upload_mb": settings.max_upload_mb, "data_dir": str(data_dir),
            "presets": [{"name": name, **PRESET_TEXT.get(name, {"title": name, "summary": "", "cost": ""}),
                         "iterations": iterations_total(config)} for name, config in PRESETS.items()],
            "default_preset": "standard-v1",
            "formats": [{"name": k, **v} for k, v in EXPORT_FORMATS.items()],
            "watermark_key": {"path": str(key), "key_id": key_id},
            "models": {kind: str(path) for kind, path in settings.model_dirs.items()},
            "audit_enabled": settings.loopback,
        }

    # ------------------------------------------------------------------ jobs

    @app.post("/api/jobs", status_code=201)
    def add_job(file: UploadFile = File(...), preset: str = Form("standard-v1"),
                watermark: bool = Form(True), tags: bool = Form(False), owner: str = Form(""),
                contact: str = Form("")) -> dict[str, Any]:
        from harmonycloak.config import preset as get_preset

        name = storage.display_name(file.filename)
        get_preset(preset)
        rights = _rights(tags, owner, contact)
        kind = storage.kind_of(name)
        if kind is None:
            raise InputError(storage.not_protectable_message(name))
        job_id = storage.new_job_id()
        files = storage.JobFiles(data_dir, job_id, Path(name).suffix.lower(), kind)
        try:
            size = _store_upload(file, files.original, settings.max_upload_bytes)
            if size is None:
                raise HTTPException(413, too_large_message(name, None, settings.max_upload_mb))
            details = storage.validate_upload(files.original, name, kind)
            payload = None
            if kind == "audio" and watermark:
                storage.ensure_watermark_key(data_dir)
                payload = f"{store.next_watermark_track_id():08x}{settings.watermark_issuer_id:04x}"
            options = {"preset": preset, "watermark": bool(watermark and kind == "audio"),
                       "tags": rights is not None and kind == "audio", "rights": rights}
            details["bytes"] = size
            notes = []
            if kind == "midi" and watermark:
                notes.append("MIDI files cannot carry the audio watermark; protected without it")
            if kind == "midi" and rights is not None:
                notes.append("MIDI files have no rights tags; use the website opt-out files instead")
            details["notes"] = notes
            job = store.add(job_id=job_id, name=name, kind=kind, suffix=files.original.suffix,
                            options=options, info=details, payload=payload)
        except BaseException:
            files.remove()
            raise
        worker.wake()
        return _job_json(job)

    @app.get("/api/jobs")
    def list_jobs() -> dict[str, Any]:
        now = time.time()
        return {"jobs": [_job_json(job, now=now) for job in store.all()]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return _job_json(_job(store, job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        job = _job(store, job_id)
        if job.status == "running":
            worker.cancel(job.id)
        return _job_json(store.request_cancel(job.id) or job)

    @app.delete("/api/jobs/{job_id}")
    def delete_job(job_id: str) -> dict[str, Any]:
        job = _job(store, job_id)
        if job.status in ACTIVE:
            raise HTTPException(409, f"{job.name}: still {job.status}; cancel it first")
        store.delete(job.id)
        _files(data_dir, job).remove()
        return {"deleted": job.id}

    @app.get("/api/jobs/{job_id}/report.json")
    def job_report(job_id: str) -> FileResponse:
        job, files = _done(store, data_dir, job_id)
        return FileResponse(files.report, media_type="application/json",
                            filename=storage.download_name(job.name, files.protected.suffix) + ".report.json")

    @app.get("/api/jobs/{job_id}/audio/{which}")
    def job_audio(job_id: str, which: str) -> FileResponse:
        """Original or protected audio as FLAC decoded the same way, so both have exactly
        the same length and the A/B player can switch at the same sample."""
        job, files = _done(store, data_dir, job_id)
        if job.kind != "audio" or which not in ("original", "protected"):
            raise HTTPException(404, "no such audio")
        if which == "protected":
            return FileResponse(files.protected, media_type="audio/flac")
        preview = files.cache / "original-preview.flac"
        with cache_lock:
            if not preview.exists():
                from harmonycloak.io.audio import load_audio, save_audio

                clip = load_audio(files.original)
                save_audio(clip, preview)
        return FileResponse(preview, media_type="audio/flac")

    @app.get("/api/jobs/{job_id}/picture.png")
    def job_picture(job_id: str) -> FileResponse:
        job, files = _done(store, data_dir, job_id)
        picture = files.cache / "picture.png"
        with cache_lock:
            if not picture.exists():
                from harmonycloak.io.files import atomic_write
                from harmonycloak.web.spectrogram import piano_roll_png, spectrograms_png

                if job.kind == "midi":
                    data = piano_roll_png(files.original, files.protected, title=job.name)
                else:
                    from harmonycloak.io.audio import load_audio

                    a, b = load_audio(files.original), load_audio(files.protected)
                    data = spectrograms_png(a.samples, b.samples, a.sample_rate_hz, title=job.name)
                atomic_write(picture, lambda tmp: tmp.write_bytes(data))
        return FileResponse(picture, media_type="image/png")

    @app.get("/api/jobs/{job_id}/download")
    def download(job_id: str, format: str = Query("flac"),
                 bitrate_kbps: int | None = Query(None)) -> FileResponse:
        job, files = _done(store, data_dir, job_id)
        with cache_lock:
            path = _export(job, files, format, bitrate_kbps)
        return FileResponse(path, filename=storage.download_name(job.name, path.suffix),
                            media_type="application/octet-stream")

    @app.get("/api/download.zip")
    def download_zip(format: str = Query("flac"), bitrate_kbps: int | None = Query(None),
                     ids: str | None = Query(None)) -> FileResponse:
        wanted = None if not ids else set(ids.split(","))
        jobs = [j for j in store.all() if j.status == "done" and (wanted is None or j.id in wanted)]
        if not jobs:
            raise HTTPException(404, "no protected files yet: protect a file first, then download")
        handle = tempfile.NamedTemporaryFile(prefix="harmonycloak-", suffix=".zip", delete=False,
                                             dir=data_dir)
        handle.close()
        try:
            used: set[str] = set()
            with zipfile.ZipFile(handle.name, "w") as archive:
                for job in jobs:
                    files = _files(data_dir, job)
                    with cache_lock:
                        path = _export(job, files, format, bitrate_kbps)
                    arcname = _unique(storage.download_name(job.name, path.suffix), used)
                    lossless = path.suffix in (".wav", ".mid")
                    archive.write(path, arcname, zipfile.ZIP_DEFLATED if lossless else zipfile.ZIP_STORED)
                    archive.write(files.report, f"reports/{arcname}.report.json", zipfile.ZIP_DEFLATED)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        return FileResponse(handle.name, filename="harmonycloak-protected.zip",
                            media_type="application/zip",
                            background=BackgroundTask(Path(handle.name).unlink, missing_ok=True))

    def _export(job: Job, files: storage.JobFiles, fmt: str, bitrate_kbps: int | None) -> Path:
        if job.kind == "midi":
            return files.protected
        spec = EXPORT_FORMATS.get(fmt)
        if spec is None:
            raise InputError(f"format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
        if not spec["bitrates_kbps"]:
            bitrate_kbps = None
        elif bitrate_kbps is not None and bitrate_kbps not in spec["bitrates_kbps"]:
            raise InputError(f"bitrate {bitrate_kbps} kbps: for {fmt} choose one of "
                             f"{', '.join(map(str, spec['bitrates_kbps']))}")
        rights = job.options.get("rights") if job.options.get("tags") else None
        try:
            return storage.export_audio(files, fmt, bitrate_kbps, rights=rights)
        except HarmonyCloakError as error:
            raise type(error)(describe(job, error)) from None

    # ------------------------------------------------------------------ take out: website

    @app.post("/api/policy.zip")
    def policy_zip(body: dict[str, Any]) -> Response:
        from harmonycloak.rights.policy import SitePolicy, render_site_files

        policy = SitePolicy(owner=_text(body.get("owner")), contact=_text(body.get("contact")),
                            policy_url=_text(body.get("policy_url")))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for rel, text in render_site_files(policy).items():
                archive.writestr(rel, text)
        return Response(buffer.getvalue(), media_type="application/zip", headers={
            "Content-Disposition": 'attachment; filename="harmonycloak-website-opt-out.zip"'})

    # ------------------------------------------------------------------ audit

    @app.post("/api/audit")
    def run_audit(body: dict[str, Any]) -> dict[str, Any]:
        if not settings.loopback:
            raise HTTPException(403, "the audit reads folders on this computer, so it only runs when "
                                     "the app listens on this computer alone (start it without --host)")
        from harmonycloak.rights.audit import audit

        folder = _text(body.get("folder"))
        if not folder:
            raise InputError("folder: give the path of the folder that holds your music, e.g. "
                             "/home/you/Music")
        site = _text(body.get("site_dir"))
        key = data_dir / storage.KEY_FILE if body.get("use_key") else None
        if key is not None and not key.exists():
            raise InputError("this app has no watermark key yet: protect a file with the watermark "
                             "on first, or untick the watermark check")
        report = audit(Path(folder).expanduser(), site_dir=Path(site).expanduser() if site else None,
                       key_path=key)
        app.state.last_audit_html = report.to_html()
        data = report.to_json()
        data["headline"] = _audit_headline(data)
        return data

    @app.get("/api/audit/report.html")
    def audit_html() -> Response:
        if app.state.last_audit_html is None:
            raise HTTPException(404, "run an audit first")
        return Response(app.state.last_audit_html, media_type="text/html", headers={
            "Content-Security-Policy": _AUDIT_CSP,
            "Content-Disposition": 'attachment; filename="harmonycloak-audit.html"'})

    return app


# ---------------------------------------------------------------------- helpers


def _refusal(request: Request, settings: ServeSettings) -> Response | None:
    """A response refusing the request, or None to let it through (see the module doc)."""
    host = (request.headers.get("host") or "").lower()
    if settings.loopback and _host_name(host) not in _LOOPBACK_NAMES:
        return JSONResponse({"detail": f"this app only answers as 127.0.0.1 or localhost, not {host!r}"},
                            status_code=421)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1].lower() != host:
            return JSONResponse({"detail": "requests from other web sites are refused"}, status_code=403)
        if request.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"detail": f"missing the {CSRF_HEADER} header: use the app's page"},
                                status_code=403)
        if request.url.path == "/api/jobs" and request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "send the file with its length (Content-Length)"},
                                    status_code=411)
            if int(length) > settings.max_upload_bytes + UPLOAD_SLACK_BYTES:
                sent = request.headers.get("x-file-name")  # the page names the file (URL-encoded)
                name = storage.display_name(unquote(sent)) if sent else "This file"
                return JSONResponse({"detail": too_large_message(name, int(length), settings.max_upload_mb)},
                                    status_code=413)
    return None


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _store_upload(upload: UploadFile, target: Path, limit_bytes: int) -> int | None:
    """Copy the upload to ``target`` (atomically); its size, or None when over the limit
    (nothing kept)."""
    from harmonycloak.io.files import atomic_write

    size = 0

    def writer(tmp: Path) -> None:
        nonlocal size
        with open(tmp, "wb") as out:
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > limit_bytes:
                    raise _TooLarge()
                out.write(chunk)

    try:
        atomic_write(target, writer)
    except _TooLarge:
        return None
    return size


class _TooLarge(Exception):
    pass


def _rights(tags: bool, owner: str, contact: str) -> dict[str, str] | None:
    if not tags:
        return None
    name = owner.strip()
    if not name or "\n" in name or "\r" in name:
        raise InputError("owner: give your name or your label's name (one line) for the rights tags, "
                         "or turn rights tags off")
    rights = {"owner": name}
    if contact.strip():
        from harmonycloak.rights.tags import check_url

        rights["contact"] = check_url("contact", contact.strip(), allow_email=True)
    return rights


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _files(data_dir: Path, job: Job) -> storage.JobFiles:
    return storage.JobFiles(data_dir, job.id, job.suffix, job.kind)


def _job(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id) if storage.is_job_id(job_id) else None
    if job is None:
        raise HTTPException(404, "no such job (it may have been removed)")
    return job


def _done(store: JobStore, data_dir: Path, job_id: str) -> tuple[Job, storage.JobFiles]:
    job = _job(store, job_id)
    if job.status != "done":
        raise HTTPException(409, f"{job.name}: not protected yet ({job.status})")
    return job, _files(data_dir, job)


def _job_json(job: Job, *, now: float | None = None) -> dict[str, Any]:
    data = job.to_json(now=now)
    base = f"/api/jobs/{job.id}"
    data["urls"] = {} if job.status != "done" else {
        "report": f"{base}/report.json", "picture": f"{base}/picture.png",
        "download": f"{base}/download",
        **({"original": f"{base}/audio/original", "protected": f"{base}/audio/protected"}
           if job.kind == "audio" else {})}
    return data


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate.lower() in used:
        n += 1
        stem, dot, suffix = name.partition(".")
        candidate = f"{stem} ({n}){dot}{suffix}"
    used.add(candidate.lower())
    return candidate


def _audit_headline(data: dict[str, Any]) -> str:
    counts = data.get("summary") or {}
    todo = int(counts.get("gap", 0)) + int(counts.get("fail", 0))
    if not data.get("tracks") and data.get("site") is None:
        return "No audio files were found in this folder."
    if todo == 0:
        return "Everything we checked is in place."
    return f"{todo} thing{'s' if todo != 1 else ''} to fix."
