"""The root ``harmonycloak`` command: global options, command registration, error policy.

Errors: a :class:`~harmonycloak.errors.HarmonyCloakError` prints one plain line on stderr
and exits with its code (2 for bad input); a usage error exits 2; Ctrl-C exits 130;
anything else is a bug: a short message, exit 1, and the traceback only when
``HARMONYCLOAK_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import typer

from harmonycloak import __version__
from harmonycloak.cli import analyze as analyze_cmd
from harmonycloak.cli import watermark as watermark_cmd
from harmonycloak.cli import audit as audit_cmd
from harmonycloak.cli import catalog as catalog_cmd
from harmonycloak.cli import evaluate as evaluate_cmd
from harmonycloak.cli import protect as protect_cmd
from harmonycloak.cli import rights as rights_cmd
from harmonycloak.cli import serve as serve_cmd
from harmonycloak.cli.options import State
from harmonycloak.config import Device
from harmonycloak.errors import HarmonyCloakError

app = typer.Typer(
    name="harmonycloak",
    help="Protect your music from unauthorized generative-AI training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"harmonycloak {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
    device: Device = typer.Option(Device.auto, "--device", case_sensitive=False,
                                  help="Where to compute: auto uses a CUDA GPU when present."),
) -> None:
    """Protect your music from unauthorized generative-AI training."""
    ctx.obj = State(device=device)


app.command("analyze")(analyze_cmd.analyze)
app.add_typer(watermark_cmd.app, name="watermark")
app.add_typer(rights_cmd.app, name="rights")
app.add_typer(catalog_cmd.app, name="catalog")
app.command("audit")(audit_cmd.audit)
app.command("protect")(protect_cmd.protect)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("serve")(serve_cmd.serve)


def _say(message: str) -> None:
    """One unwrapped message on stderr (rich would wrap long paths)."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code.

    Typer runs in standalone mode, so usage errors (exit 2), ``--help`` and ``--version``
    arrive here as ``SystemExit``; our own errors pass through it untouched.
    """
    try:
        app(args=argv, prog_name="harmonycloak")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except HarmonyCloakError as exc:
        _say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted; nothing was written")
        return 130
    except Exception as exc:  # a bug: say so plainly, keep the traceback for debugging
        if os.environ.get("HARMONYCLOAK_DEBUG") == "1":
            raise
        _say(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in harmonycloak. Run again with HARMONYCLOAK_DEBUG=1 for the "
            "traceback and report it."
        )
        return 1
    return 0


def run() -> None:
    sys.exit(main())
