"""``harmonycloak serve``: the local web app for musicians (see ``docs/web.md``).

Binds 127.0.0.1 by default: only this computer can open the page. ``--host`` with any
other address prints a warning (anyone who can reach it can upload, protect and download
files, and the app has no login). Needs the ``web`` extra.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import Mode, err
from harmonycloak.web.settings import DEFAULT_DATA_DIR_NAME, DEFAULT_PORT, DEFAULT_PROTECT_MODE, LOOPBACK_HOST


def _models(dirs: list[Path]) -> dict[str, str]:
    """``{"audio" | "midi": folder}`` from ``--model`` folders, by the checkpoint each holds."""
    from harmonycloak.errors import InputError
    from harmonycloak.targets.audio_registry import checkpoint_kind
    from harmonycloak.targets.registry import TARGET_NAMES

    found: dict[str, str] = {}
    for folder in dirs:
        name, _ = checkpoint_kind(folder)
        kind = "midi" if name in TARGET_NAMES else "audio"
        if kind in found:
            what = "an audio" if kind == "audio" else "a MIDI"
            raise InputError(f"--model {folder}: {what} model was already given ({found[kind]}); "
                             "give at most one for audio and one for MIDI")
        found[kind] = str(folder)
    return found


def _check_port_free(host: str, port: int) -> None:
    from harmonycloak.errors import InputError

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            raise InputError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror or error}); "
                             "is harmonycloak serve already running? open it, or choose another "
                             "--port") from None


def serve(
    ctx: typer.Context,
    host: str = typer.Option(LOOPBACK_HOST, "--host",
                             help="Address to listen on; the default lets only this computer in."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on."),
    data_dir: Path = typer.Option(None, "--data-dir", file_okay=False, show_default=False,
                                  help=f"Where jobs, protected files and the watermark key are kept "
                                       f"(default ~/{DEFAULT_DATA_DIR_NAME})."),
    mode: Mode = typer.Option(Mode(DEFAULT_PROTECT_MODE), "--mode",
                                   help="whitebox: against a known model (give --model)."),
    model: Optional[list[Path]] = typer.Option(None, "--model", file_okay=False,
                                               help="A trained checkpoint folder; give one for audio "
                                                    "and/or one for MIDI (the kind is read from it)."),
    max_upload_mb: float = typer.Option(200.0, "--max-upload-mb", min=0.001,
                                        help="Largest file the page accepts, in MB."),
    open_browser: bool = typer.Option(True, "--open/--no-open",
                                      help="Open the page in your web browser."),
) -> None:
    """Start the local web app: drop songs in, hear the difference, take protected files out.

    Press Ctrl-C to stop. Jobs are kept in the data folder and carry on after a restart.
    """
    from harmonycloak.errors import ModelLoadError
    from harmonycloak.web.settings import ServeSettings, is_loopback

    try:
        import uvicorn

        from harmonycloak.web.app import create_app
    except ImportError as error:
        raise ModelLoadError(f"harmonycloak serve needs the web extra ({error.name} is missing); "
                             "install it with: pip install 'harmonycloak[web]'") from None
    settings = ServeSettings(host=host, port=port, mode=mode.value, model_dirs=_models(model or []),
                             max_upload_mb=max_upload_mb, device=options.state(ctx).device.value)
    folder = (data_dir or Path.home() / DEFAULT_DATA_DIR_NAME).expanduser()
    if not is_loopback(host):
        err.print(f"warning: --host {host} lets other computers on your network open this app. It has "
                  "no password: anyone who can reach it can upload, protect and download files. The "
                  "audit tab is switched off. Use the default (127.0.0.1) unless you trust that "
                  "network.", markup=False)
    if settings.mode == "whitebox" and not settings.model_dirs:
        err.print("note: white-box mode without --model trains a model on the dev corpus (data/) the "
                  "first time; give --model DIR with a trained checkpoint to protect against it.",
                  markup=False)
    _check_port_free(host, port)
    app = create_app(data_dir=folder, settings=settings)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    err.print(f"harmonycloak is running at {url}  (data: {folder}; Ctrl-C stops it)", markup=False)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning")
