"""``harmonycloak rights tag | init | policy | verify``: rights tags, C2PA, website opt-out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out
from harmonycloak.errors import InputError

app = typer.Typer(
    help="State your rights: tags and signed C2PA manifests in files, opt-out files for your website.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _emit_json(data: dict[str, Any]) -> None:
    out.file.write(json.dumps(data) + "\n")


def _rows(rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


# ---------------------------------------------------------------------------------------
# tag
# ---------------------------------------------------------------------------------------


def _protection_report(path: Path, report: Optional[Path], in_sha: str, existing: dict[str, str]) -> Any:
    """The protection report that belongs to ``path``, or None.

    ``--report`` must describe ``path`` (its output hash is the file's, or the file's
    source tag); without it, ``path.report.json`` is used when it matches.
    """
    from harmonycloak.rights import default_report_path, load_report, read_report

    known = {in_sha, existing.get("source_sha256")}
    if report is not None:
        found = load_report(report)
        if found.output_sha256 not in known:
            raise InputError(
                f"{report}: this report describes another file (output SHA-256 "
                f"{found.output_sha256[:12]}…, {path.name} has {in_sha[:12]}…); give the report "
                "harmonycloak protect wrote for this file, or leave out --report"
            )
        return found
    candidate = default_report_path(path)
    if candidate.is_file():
        try:
            found = read_report(candidate)
        except InputError:
            return None
        if found is not None and found.output_sha256 in known:
            return found
    return None


def _rights_info(owner: str, copyright_text: Optional[str], licence_url: Optional[str],
                 contact: Optional[str], isrc: Optional[str]) -> Any:
    from harmonycloak.rights.tags import RightsInfo, check_url, normalize_isrc

    name = owner.strip()
    if not name or "\n" in name:
        raise InputError("--owner: give your name or your label's name (one line)")
    return RightsInfo(
        owner=name,
        copyright=copyright_text.strip() if copyright_text else None,
        licence_url=check_url("--licence-url", licence_url) if licence_url else None,
        contact=check_url("--contact", contact, allow_email=True) if contact else None,
        isrc=normalize_isrc(isrc) if isrc else None,
    )


def _target(path: Path, output: Optional[Path], in_place: bool) -> Optional[Path]:
    if in_place and output is not None:
        raise InputError(f"{output}: give either -o OUT or --in-place, not both")
    if not in_place and output is None:
        raise InputError(
            f"{path}: give -o OUT for a tagged copy, or --in-place to tag {path.name} itself"
        )
    return None if in_place else output


@app.command("tag")
def tag(
    path: Path = options.input_path("Audio file to tag: WAV, FLAC, MP3, OGG, Opus or M4A."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", dir_okay=False,
                                          help="The tagged copy to write (same format as IN)."),
    owner: str = typer.Option(..., "--owner", help="Who holds the rights: your name or your label."),
    contact: Optional[str] = typer.Option(None, "--contact",
                                          help="Where to ask for a licence: a URL or an e-mail."),
    copyright_text: Optional[str] = typer.Option(
        None, "--copyright",
        help="Copyright notice; default 'YEAR OWNER. All rights reserved, including AI training ...'."),
    licence_url: Optional[str] = typer.Option(None, "--licence-url", "--license-url",
                                              help="Web page with your licence terms."),
    isrc: Optional[str] = typer.Option(None, "--isrc", help="The recording's ISRC, e.g. US-RC1-76-07839."),
    c2pa_key: Optional[Path] = typer.Option(None, "--c2pa-key", dir_okay=False,
                                            help="Signing key from 'harmonycloak rights init'."),
    c2pa_cert: Optional[Path] = typer.Option(None, "--c2pa-cert", dir_okay=False,
                                             help="Certificate chain from 'harmonycloak rights init'."),
    report: Optional[Path] = typer.Option(
        None, "--report", dir_okay=False,
        help="Protection report of IN (default: IN.report.json when it matches)."),
    in_place: bool = typer.Option(False, "--in-place", help="Tag IN itself (replaced atomically)."),
    force: bool = options.FORCE,
    as_json: bool = options.JSON,
) -> None:
    """Write rights tags (owner, copyright, licence, ISRC, AI-training reservation) into a file.

    Only the metadata changes; the audio is copied byte for byte, never re-encoded. With
    --c2pa-key and --c2pa-cert the copy is also signed with a C2PA manifest saying that AI
    training is not allowed, and recording the protection when a report is known.
    """
    from harmonycloak.rights import c2pa, sha256_file
    from harmonycloak.rights.tags import read_tags, tag_file

    target = _target(path, output, in_place)
    info = _rights_info(owner, copyright_text, licence_url, contact, isrc)
    if (c2pa_key is None) != (c2pa_cert is None):
        raise InputError("--c2pa-key and --c2pa-cert go together; give both (from harmonycloak rights init)")
    existing = read_tags(path)
    credentials = None
    if c2pa_key is not None and c2pa_cert is not None:
        c2pa.check_signable(target or path)
        credentials = c2pa.load_credentials(c2pa_key, c2pa_cert)
    in_sha = sha256_file(path)
    found = _protection_report(path, report, in_sha, existing)
    source = in_sha if (found and found.output_sha256 == in_sha) else existing.get("source_sha256", in_sha)
    info = replace(info, source_sha256=source, report_sha256=found.sha256 if found else None)
    notes = _tag_notes(path, credentials)
    after = None
    if credentials is not None:
        plan = c2pa.plan_manifest(title=(target or path).name, rights=info.fields(), protection=found)
        after = lambda tmp: c2pa.sign_in_place(  # noqa: E731
            tmp, credentials=credentials, plan=plan, parent_title=path.name)
    written, fields = tag_file(path, target, info, force=force, after=after)
    manifest = c2pa.read_manifest(written) if credentials is not None else None
    _report_tag(path, written, fields, found, manifest, notes, as_json=as_json)


def _tag_notes(path: Path, credentials: Any) -> list[str]:
    from harmonycloak.rights import c2pa

    if credentials is not None or path.suffix.lower() not in c2pa.SIGNABLE_MIME_TYPES:
        return []
    if c2pa.read_manifest(path).state != c2pa.NONE:
        return [f"{path.name} carries a C2PA manifest; new tags break its signature: sign again "
                "with --c2pa-key and --c2pa-cert"]
    return []


def _report_tag(path: Path, written: Path, fields: dict[str, str], found: Any, manifest: Any,
                notes: list[str], *, as_json: bool) -> None:
    if as_json:
        _emit_json({"input": str(path), "output": str(written), "tags": fields,
                    "report": found.path if found else None,
                    "c2pa": manifest.to_json() if manifest else None, "notes": notes})
        return
    rows = [("written", str(written))] + [(k.replace("_", " "), _short(v)) for k, v in fields.items()]
    rows.append(("protection report", found.path if found else "none found (the copy is not linked to one)"))
    if manifest is not None:
        rows.append(("C2PA", f"{manifest.state}: {manifest.message}"))
    _rows(rows)
    for note in notes:
        err.print(f"note: {note}", markup=False)


# ---------------------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------------------


@app.command("init")
def init(
    out_dir: Path = typer.Option(..., "-o", "--out", file_okay=False,
                                 help="Folder for the key and certificates, e.g. ~/.harmonycloak/c2pa."),
    owner: str = typer.Option("harmonycloak user", "--owner",
                              help="Your name or label, written into the certificates."),
    force: bool = options.FORCE,
    as_json: bool = options.JSON,
) -> None:
    """Create a local C2PA signing key and certificate chain (root, intermediate, signer).

    Keep the .key file private and backed up. Give --c2pa-key and --c2pa-cert to
    'rights tag'; give the root certificate to anyone who wants to verify your files.
    """
    from harmonycloak.rights.c2pa import init_signing_chain

    files = init_signing_chain(out_dir, owner=owner.strip() or "harmonycloak user", force=force)
    if as_json:
        _emit_json({"key": str(files.key), "cert": str(files.chain), "root": str(files.root)})
        return
    _rows([("signing key", f"{files.key}  (private: keep it safe, back it up)"),
           ("certificate chain", str(files.chain)),
           ("root certificate", f"{files.root}  (share it: verifiers trust your files with it)")])
    err.print(f"next: harmonycloak rights tag SONG -o OUT --owner NAME --c2pa-key {files.key} "
              f"--c2pa-cert {files.chain}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------
# policy
# ---------------------------------------------------------------------------------------


@app.command("policy")
def policy(
    site_dir: Path = typer.Option(..., "--out", file_okay=False,
                                  help="Your website's folder (what you upload to the server)."),
    policy_url: Optional[str] = typer.Option(None, "--policy-url",
                                             help="Web page with your licence / AI policy (absolute URL)."),
    owner: Optional[str] = typer.Option(None, "--owner", help="Your name or label."),
    contact: Optional[str] = typer.Option(None, "--contact",
                                          help="Where to ask for a licence (URL or e-mail)."),
    force: bool = options.FORCE,
    as_json: bool = options.JSON,
) -> None:
    """Write robots.txt, ai.txt, .well-known/tdmrep.json and server/HTML snippets into SITE_DIR.

    robots.txt keeps your own lines: only the harmonycloak block is replaced (with --force).
    """
    from harmonycloak.rights.policy import SitePolicy, load_crawlers, write_site_policy

    rules = SitePolicy(owner=owner.strip() if owner else None, contact=contact, policy_url=policy_url)
    written = write_site_policy(site_dir, rules, force=force)
    if as_json:
        _emit_json({"site_dir": str(site_dir), "written": [str(p) for p in written],
                    "crawlers": len(load_crawlers())})
        return
    _rows([("written", str(p)) for p in written])
    err.print(f"robots.txt now asks {len(load_crawlers())} AI crawlers to stay away. Upload the folder; "
              "add the header snippet for your web server from harmonycloak-snippets/.", markup=False)


# ---------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------


@app.command("verify")
def verify(
    path: Path = options.input_path("Audio file to check."),
    trust: Optional[Path] = typer.Option(
        None, "--trust", dir_okay=False,
        help="Root certificate to trust (c2pa-root-ca.pem from rights init)."),
    as_json: bool = options.JSON,
) -> None:
    """Show a file's C2PA manifest and whether it validates, and its rights tags.

    States: valid (signature and content intact; a local signer is not on a trust list),
    trusted (valid and signed under --trust), tampered (changed after signing), invalid,
    none (no manifest), unsupported (Ogg/Opus cannot carry C2PA).
    """
    from harmonycloak.rights import c2pa
    from harmonycloak.rights.tags import read_tags

    status = c2pa.read_manifest(path, trust_anchor=trust)
    try:
        found_tags = read_tags(path)
    except InputError:
        found_tags = {}
    if as_json:
        _emit_json({**status.to_json(), "tags": found_tags})
        return
    _print_manifest(status, found_tags)


def _short(value: Any) -> str:
    """SHA-256 digests shortened to 12 hex digits for reading."""
    text = str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def _print_manifest(status: Any, found_tags: dict[str, str]) -> None:
    rows = [("file", status.path), ("C2PA", f"{status.state}: {status.message}")]
    if status.state not in ("none", "unsupported"):
        rows += [("title", status.title or "-"), ("made with", status.claim_generator or "-"),
                 ("signed by", ", ".join(f"{k} {v}" for k, v in status.signer.items()) or "-"),
                 ("AI training", ", ".join(f"{k}: {v}" for k, v in status.training_mining.items()) or
                  "no training-mining assertion")]
        rows += [("action", " ".join(str(v) for v in a.values() if v)) for a in status.actions]
        if status.protection:
            rows.append(("protection", ", ".join(
                f"{k} {_short(v)}" for k, v in status.protection.items())))
        if status.expected:
            rows.append(("expected", ", ".join(status.expected) + " (local signer)"))
    rows += [(f"tag {k.replace('_', ' ')}", _short(v)) for k, v in found_tags.items()]
    _rows(rows)
