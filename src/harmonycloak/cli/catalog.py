"""``harmonycloak catalog scan DIR`` and ``harmonycloak catalog verify [DIR]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out

app = typer.Typer(
    help="Keep a local catalog of your masters and copies, and check them for bit rot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _list(title: str, items: list[str], *, limit: int = 20) -> None:
    if not items:
        return
    out.print(f"{title} ({len(items)}):", markup=False)
    for item in items[:limit]:
        out.print(f"  {item}", markup=False)
    if len(items) > limit:
        out.print(f"  ... and {len(items) - limit} more", markup=False)


@app.command("scan")
def scan(
    folder: Path = typer.Argument(..., help="Folder that holds your music (masters and copies).",
                                  file_okay=False, show_default=False),
    accept_changes: bool = typer.Option(
        False, "--accept-changes",
        help="Record masters whose bytes changed (you edited them) and forget missing files."),
    as_json: bool = options.JSON,
) -> None:
    """Create or update DIR/.harmonycloak/catalog.sqlite from the files in DIR.

    Records each audio file's SHA-256, format, whether it is a lossless master, and for
    copies their protection report, watermark id, rights tags and C2PA state. A master
    that changed since the last scan keeps its old record (that is what bit rot looks
    like) unless --accept-changes.
    """
    from harmonycloak.rights.catalog import scan as run_scan

    with err.status("scanning", spinner="dots") as status:
        result = run_scan(folder, accept_changes=accept_changes,
                          progress=lambda rel: status.update(f"reading {rel}"))
    if as_json:
        out.file.write(json.dumps(result.to_json()) + "\n")
        return
    out.print(f"catalog {result.catalog}: {result.files} audio files "
              f"({len(result.added)} new, {len(result.updated)} updated, "
              f"{len(result.unchanged)} unchanged)", markup=False)
    _list("masters changed since the last scan, old record kept (bit rot? run catalog verify)",
          result.changed_masters_kept)
    _list("catalogued but missing (restore them, or scan with --accept-changes)", result.missing)
    _list("removed from the catalog", result.removed)
    _list("skipped", [f"{s.path}: {s.reason}" for s in result.skipped])


@app.command("verify")
def verify(
    folder: Path = typer.Argument(Path("."), help="Folder you scanned (default: the current folder).",
                                  file_okay=False),
    as_json: bool = options.JSON,
) -> None:
    """Check every catalogued file: missing, changed (bit rot or edit) and untracked files.

    Read-only: nothing in the folder or its catalog is modified.
    """
    from harmonycloak.rights.catalog import verify as run_verify

    with err.status("verifying", spinner="dots") as status:
        result = run_verify(folder, progress=lambda rel: status.update(f"hashing {rel}"))
    if as_json:
        out.file.write(json.dumps(result.to_json()) + "\n")
        return
    verdict = "all intact" if result.ok else "problems found"
    out.print(f"{result.catalog}: {len(result.intact)} of {result.checked} catalogued files intact; "
              f"{verdict}", markup=False)
    _list("missing", result.missing)
    _list("changed", [f"{c.path} ({c.role}): {c.reason}: {c.detail}" for c in result.changed])
    _list("untracked (run catalog scan to add them)", result.untracked)
    _list("skipped", [f"{s.path}: {s.reason}" for s in result.skipped])
