"""Options shared by several commands, and the consoles they print to.

Human output goes to stderr through ``err``; stdout carries only results (with ``--json``,
exactly one JSON object).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from harmonycloak.config import Device

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class Mode(str, Enum):
    """Protection mode choices (``--mode``) of protect, evaluate and serve."""

    whitebox = "whitebox"
    blackbox = "blackbox"


@dataclass
class State:
    """What the root callback collects for every command."""

    device: Device = Device.auto


JSON = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there.")
FORCE = typer.Option(False, "--force", help="Replace output files that already exist.")
PLOT = typer.Option(None, "--plot", help="Also draw a picture of the analysis to this PNG file.",
                    dir_okay=False)
WINDOW_MS = typer.Option(10.0, "--window-ms", min=1.0, max=1000.0,
                         help="Length of the dominant-tone windows in milliseconds (paper: 10).")


def input_path(help_text: str) -> typer.models.ArgumentInfo:
    return typer.Argument(..., help=help_text, show_default=False)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def as_path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
