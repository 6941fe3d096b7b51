"""``harmonycloak audit DIR [--site-dir SITE_DIR] [--key KEY] [--json] [--html OUT.html]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out

_ICONS = {"ok": "ok  ", "gap": "GAP ", "fail": "FAIL", "n/a": "n/a ", "unavailable": "n/a "}


def _print_human(report: Any) -> None:
    out.print(f"score {report.score}/100  ({report.root})", markup=False)
    for track in report.tracks:
        out.print(f"\n{track.name}  [{track.score}/100]", markup=False)
        master = track.master_check
        out.print(f"  {_ICONS[master.status]} master     {master.detail}", markup=False)
        for copy in track.copies:
            out.print(f"  copy {copy.path}", markup=False)
            for check in copy.checks:
                out.print(f"    {_ICONS[check.status]} {check.check:<9} {check.detail}", markup=False)
    if report.site is not None:
        out.print(f"\nwebsite {report.site_dir}  [{report.site_score}/100]", markup=False)
        for check in report.site:
            out.print(f"  {_ICONS[check.status]} {check.check:<14} {check.detail}", markup=False)
    for skipped in report.skipped:
        out.print(f"skipped {skipped.path}: {skipped.reason}", markup=False)
    if report.fixes:
        out.print("\nto fix, run:", markup=False)
        for fix in report.fixes:
            out.print(f"  {fix}", markup=False)


def audit(
    folder: Path = typer.Argument(..., help="Folder that holds your music.", file_okay=False,
                                  show_default=False),
    site_dir: Optional[Path] = typer.Option(None, "--site-dir", file_okay=False,
                                            help="Your website's folder, to check its opt-out files."),
    key: Optional[Path] = typer.Option(None, "--key", dir_okay=False,
                                       help="Your watermark key, to look for your watermark."),
    as_json: bool = options.JSON,
    html_path: Optional[Path] = typer.Option(None, "--html", dir_okay=False,
                                             help="Also write a report for reading in a browser."),
    force: bool = options.FORCE,
) -> None:
    """Audit a music folder: masters archived, copies protected, watermarked, tagged, signed.

    Gives a score and, for every gap, the exact command that fixes it. Read-only: the
    music folder and its catalog are not modified.
    """
    from harmonycloak.io.files import atomic_write
    from harmonycloak.rights.audit import audit as run_audit

    with err.status("auditing", spinner="dots") as status:
        report = run_audit(folder, site_dir=site_dir, key_path=key,
                           progress=lambda name: status.update(f"checking {name}"))
    if html_path is not None:
        text = report.to_html().encode("utf-8")
        atomic_write(html_path, lambda tmp: tmp.write_bytes(text), force=force)
    if as_json:
        data = report.to_json()
        data["html"] = None if html_path is None else str(html_path)
        out.file.write(json.dumps(data) + "\n")
        return
    _print_human(report)
    if html_path is not None:
        err.print(f"report written to {html_path}", markup=False)
