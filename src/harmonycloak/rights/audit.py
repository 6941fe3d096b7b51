"""The catalog audit: how well is each track protected, and what exactly fixes each gap.

Per track (a master and the copies made from it, see :mod:`harmonycloak.rights.catalog`):

``master``
    A lossless master (WAV, FLAC or ALAC) is archived: it is in the folder, recorded in
    the catalog, and its SHA-256 still matches the record (no bit rot).
Per published copy (every file that is not the master):

``cloaked``
    The copy went through ``harmonycloak protect``: a protection report whose
    ``output.sha256`` is the copy's hash, or rights tags linking the copy to such a
    report, or a valid C2PA manifest recording the protection action.
``watermark``
    With ``--key``: the artist's keyed watermark is detected in the decoded audio.
``tags``
    Rights tags carry an owner and the AI-training reservation (``AI_TRAINING =
    notAllowed``).
``c2pa``
    A C2PA manifest is embedded, validates (signature and content hashes), and its
    ``cawg.training-mining`` assertion says ``notAllowed``. A hash mismatch means the
    file was changed after signing (tampered). Ogg and Opus cannot carry C2PA: n/a.
For the website folder (``--site-dir``): robots.txt covers every known AI crawler,
ai.txt disallows audio, ``.well-known/tdmrep.json`` reserves TDM rights, and the HTML
pages carry the TDMRep meta tag (see :func:`harmonycloak.rights.policy.check_site`).

Every check ends ``ok``, ``gap`` (something is missing), ``fail`` (something is damaged:
bit rot, tampering, an invalid file), ``n/a`` or ``unavailable`` (cannot be checked here);
every gap and failure carries the command that fixes it.

Score (0-100): a track scores the weighted share of its applicable checks that are ok
(weights: cloaked 3, master 2, watermark 2, C2PA 2, tags 1; each copy check is averaged
over the track's copies). The catalog score is the mean over tracks. The site scores the
same way (robots.txt 2, TDMRep 2, ai.txt 1, meta tags 1). With a site, the overall score
is 80 % catalog + 20 % site. ``n/a`` and ``unavailable`` checks do not count.

Read-only: the audit writes nothing into the music folder (only the ``--html`` file
where it is asked to).
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from harmonycloak import __version__
from harmonycloak.errors import HarmonyCloakError, InputError
from harmonycloak.rights.catalog import (
    AudioFile, CatalogRecord, FolderState, Skipped, catalog_path, inspect_folder, load_catalog,
)

__all__ = ["Check", "CopyAudit", "TrackAudit", "AuditReport", "audit", "WEIGHTS", "SITE_WEIGHTS"]

OK, GAP, FAIL, NA, UNAVAILABLE = "ok", "gap", "fail", "n/a", "unavailable"
WEIGHTS: dict[str, int] = {"master": 2, "cloaked": 3, "watermark": 2, "tags": 1, "c2pa": 2}
SITE_WEIGHTS: dict[str, int] = {"robots.txt": 2, "ai.txt": 1, "tdmrep.json": 2, "html meta tags": 1}
CATALOG_SHARE = 0.8
_COUNTED = (OK, GAP, FAIL)


@dataclass
class Check:
    """One check: its name, status, a plain-language detail, and the fix for a gap."""

    check: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class CopyAudit:
    """The checks of one published copy."""

    path: str
    format: str
    checks: list[Check]


@dataclass
class TrackAudit:
    """A track: its master check, its copies, its score (0-100)."""

    name: str
    master: str | None
    master_check: Check
    copies: list[CopyAudit]
    score: int


@dataclass
class AuditReport:
    """The audit of a folder; :meth:`to_json` and :meth:`to_html` render it."""

    root: str
    generated_at: str
    catalog: str | None
    tracks: list[TrackAudit]
    site_dir: str | None
    site: list[Check] | None
    skipped: list[Skipped]
    watermark: str
    catalog_score: int | None
    site_score: int | None
    score: int
    version: str = __version__
    fixes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data = {"harmonycloak_audit": 1, **data}
        data["summary"] = self.summary()
        return data

    def summary(self) -> dict[str, int]:
        """How many checks are in each status."""
        counts = Counter(c.status for c in self._all_checks())
        return {status: counts.get(status, 0) for status in (OK, GAP, FAIL, NA, UNAVAILABLE)}

    def _all_checks(self) -> list[Check]:
        checks = [t.master_check for t in self.tracks]
        checks += [c for t in self.tracks for copy in t.copies for c in copy.checks]
        return checks + list(self.site or [])

    def to_html(self) -> str:
        return _render_html(self)


# ---------------------------------------------------------------------------------------
# Building the audit
# ---------------------------------------------------------------------------------------


def _q(path: str | os.PathLike[str]) -> str:
    return shlex.quote(str(path))


@dataclass
class _Context:
    root: Path
    state: FolderState
    records: dict[str, CatalogRecord] | None
    owner: str
    detector: Callable[[Path], Any] | None
    watermark_note: str
    key_path: str | None
    reported_missing: set[str] = field(default_factory=set)

    @property
    def root_arg(self) -> str:
        return _q(self.root)

    def path_arg(self, rel: str) -> str:
        return _q(self.root / rel)


def audit(root: str | os.PathLike[str], *, site_dir: str | os.PathLike[str] | None = None,
          key_path: str | os.PathLike[str] | None = None,
          progress: Callable[[str], None] | None = None) -> AuditReport:
    """Audit the music folder ``root`` (and the website folder ``site_dir``), read-only.

    ``key_path``: the artist's watermark key; when the watermark module is not installed
    the watermark checks are ``unavailable``. Raises :class:`InputError` for a missing
    folder or key file.
    """
    from harmonycloak.rights import policy

    base = Path(root)
    if key_path is not None and not Path(key_path).is_file():
        raise InputError(f"--key {key_path}: file not found; give the key from harmonycloak watermark keygen")
    site = policy.check_site(site_dir) if site_dir is not None else None
    state = inspect_folder(base, progress=progress)
    detector, note = _watermark_detector(key_path)
    ctx = _Context(base, state, load_catalog(base), _owner(state), detector, note,
                   None if key_path is None else str(key_path))
    tracks = _audit_tracks(ctx, progress)
    site_checks = [Check(f.check, f.status, f.detail, f.fix) for f in site] if site is not None else None
    return _finish(ctx, tracks, site_dir, site_checks)


def _owner(state: FolderState) -> str:
    owners = Counter(f.tags["owner"] for f in state.files if f.tags.get("owner"))
    return owners.most_common(1)[0][0] if owners else "YOUR NAME"


def _watermark_detector(key_path: str | os.PathLike[str] | None) -> tuple[Callable[[Path], Any] | None, str]:
    if key_path is None:
        return None, "not checked: give --key KEY to look for your watermark"
    try:
        from harmonycloak.watermark import detect, load_key
    except ImportError as error:
        return None, f"watermark detection is not available in this installation ({error})"
    key = load_key(key_path)

    def run(path: Path) -> Any:
        from harmonycloak.io.audio import load_audio

        return detect(load_audio(path), key)

    return run, ""


def _audit_tracks(ctx: _Context, progress: Callable[[str], None] | None) -> list[TrackAudit]:
    groups: dict[str, list[AudioFile]] = {}
    for f in ctx.state.files:
        groups.setdefault(f.track, []).append(f)
    tracks = []
    for name in sorted(groups):
        if progress:
            progress(name)
        tracks.append(_audit_track(ctx, name, groups[name]))
    tracks += _missing_masters(ctx)
    return tracks


def _audit_track(ctx: _Context, name: str, files: list[AudioFile]) -> TrackAudit:
    masters = sorted((f for f in files if f.role == "master"), key=lambda f: (not f.lossless, f.path))
    master = masters[0] if masters else None
    copies = [f for f in files if f is not master and f.role == "copy"]
    master_check = _master_check(ctx, master, copies)
    copy_audits = [CopyAudit(c.path, c.format, _copy_checks(ctx, c, master)) for c in copies]
    return TrackAudit(name, master.path if master else None, master_check, copy_audits,
                      _track_score(master_check, copy_audits))


def _master_check(ctx: _Context, master: AudioFile | None, copies: list[AudioFile]) -> Check:
    scan_fix = f"harmonycloak catalog scan {ctx.root_arg}"
    if master is None or not master.lossless:
        return _no_lossless_master(ctx, master, copies, scan_fix)
    label = f"{master.path} ({master.format.upper()})"
    if ctx.records is None:
        return Check("master", GAP, f"{label} is here but no catalog records it yet", scan_fix)
    record = ctx.records.get(master.path)
    if record is None:
        return Check("master", GAP, f"{label} is not in the catalog yet", scan_fix)
    if record.sha256 != master.sha256:
        return Check("master", FAIL,
                     f"{label} changed since it was catalogued on {record.first_seen[:10]} "
                     "(bit rot, or an edit)",
                     f"restore {ctx.path_arg(master.path)} from your backup; if you edited it on "
                     f"purpose: harmonycloak catalog scan {ctx.root_arg} --accept-changes")
    return Check("master", OK, f"{label} archived and unchanged since {record.first_seen[:10]}")


def _no_lossless_master(ctx: _Context, master: AudioFile | None, copies: list[AudioFile],
                        scan_fix: str) -> Check:
    wanted = {c.master_sha256 for c in copies if c.master_sha256}
    if ctx.records:
        tracks = {ctx.records[c.path].track for c in copies if c.path in ctx.records}
        for record in ctx.records.values():
            linked = record.sha256 in wanted or (record.role == "master" and record.track in tracks)
            if linked and not (ctx.root / record.path).is_file():
                ctx.reported_missing.add(record.path)
                return Check("master", FAIL, f"the master {record.path} is missing from the folder",
                             f"restore {ctx.path_arg(record.path)} from your backup, then run: "
                             f"harmonycloak catalog verify {ctx.root_arg}")
    named = next((c.report.input_path for c in copies if c.report and c.report.input_path), None)
    what = (f"only a lossy master ({master.path})" if master is not None
            else "no lossless master (WAV or FLAC) of this track")
    if named:
        what += f"; the protection report names {named}"
    return Check("master", GAP, f"{what} in the folder",
                 f"copy the lossless WAV/FLAC export of this track into {ctx.root_arg}, then run: "
                 f"{scan_fix}")


def _missing_masters(ctx: _Context) -> list[TrackAudit]:
    """Catalogued masters that are gone and were not reported within a track."""
    if not ctx.records:
        return []
    tracks = []
    for record in ctx.records.values():
        if (record.role == "master" and record.path not in ctx.reported_missing
                and not (ctx.root / record.path).exists()):
            check = Check("master", FAIL, f"the master {record.path} is missing from the folder",
                          f"restore {ctx.path_arg(record.path)} from your backup, then run: "
                          f"harmonycloak catalog verify {ctx.root_arg}")
            tracks.append(TrackAudit(record.path, record.path, check, [], 0))
    return tracks


def _copy_checks(ctx: _Context, copy: AudioFile, master: AudioFile | None) -> list[Check]:
    # an unprotected copy is replaced by its protected version: tag and sign that one
    target = copy.path if copy.protected else _protected_name(copy.path)
    tags, c2pa = _tags_check(ctx, copy, target), _c2pa_check(ctx, copy, target)
    if tags.status == GAP and c2pa.status in (GAP, FAIL) and copy.c2pa_state == "none":
        tags.fix = c2pa.fix  # one command writes the tags and signs them
    return [_cloak_check(ctx, copy, master), _watermark_check(ctx, copy), tags, c2pa]


def _protected_name(rel: str) -> str:
    folder, _, name = rel.rpartition("/")
    stem, dot, suffix = name.partition(".")
    out = f"{stem}.protected.{suffix.rsplit('.', 1)[-1]}" if dot else f"{name}.protected"
    return f"{folder}/{out}" if folder else out


def _cloak_check(ctx: _Context, copy: AudioFile, master: AudioFile | None) -> Check:
    if copy.protected:
        how = {"report": "protection report", "tags": "rights tags linked to a protection report",
               "c2pa": "the C2PA manifest's protection record"}[copy.protection_evidence or "report"]
        preset = copy.report.preset if copy.report else (copy.c2pa_protection or {}).get("preset")
        return Check("cloaked", OK, f"protected (evidence: {how}"
                     + (f"; preset {preset}" if preset else "") + ")")
    source = master.path if master is not None else copy.path
    return Check("cloaked", GAP,
                 "no protection report or C2PA protection record matches this file: "
                 "it can be used to train AI as it is",
                 f"harmonycloak protect {ctx.path_arg(source)} -o "
                 f"{ctx.path_arg(_protected_name(copy.path))}")


def _watermark_check(ctx: _Context, copy: AudioFile) -> Check:
    if ctx.detector is None:
        status = NA if ctx.key_path is None else UNAVAILABLE
        return Check("watermark", status, ctx.watermark_note)
    try:
        found = ctx.detector(ctx.root / copy.path)
    except HarmonyCloakError as error:
        return Check("watermark", FAIL, f"could not be checked: {error}")
    payload = copy.watermark_payload or "YOUR_ID_HEX"
    if getattr(found, "detected", False):
        got = getattr(found, "payload", None)
        if copy.watermark_payload and got and got.lower() != copy.watermark_payload.lower():
            return Check("watermark", FAIL,
                         f"a watermark was found with id {got}, but the report says {copy.watermark_payload}")
        chance = getattr(found, "false_alarm_probability", None)
        return Check("watermark", OK, f"your watermark is present (id {got or 'unknown'}"
                     + (f", false-alarm probability {chance:.1e}" if isinstance(chance, float) else "") + ")")
    return Check("watermark", GAP, "your watermark was not found in this file",
                 f"harmonycloak watermark embed {ctx.path_arg(copy.path)} -o "
                 f"{ctx.path_arg(_marked_name(copy.path))} --key {_q(ctx.key_path or 'KEY')} "
                 f"--payload {payload}")


def _marked_name(rel: str) -> str:
    return _protected_name(rel).replace(".protected.", ".marked.")


def _tags_check(ctx: _Context, copy: AudioFile, target: str) -> Check:
    if copy.format == "aac":
        return Check("tags", NA, "raw AAC (.aac) has no place for tags; publish an .m4a instead")
    missing = []
    if not copy.tags.get("owner"):
        missing.append("owner")
    if copy.tags.get("ai_training") != "notAllowed":
        missing.append("AI-training reservation")
    fix = f"harmonycloak rights tag {ctx.path_arg(target)} --in-place --owner {_q(ctx.owner)}"
    if missing:
        return Check("tags", GAP, "rights tags missing: " + ", ".join(missing), fix)
    return Check("tags", OK, f"owner {copy.tags['owner']}, AI training notAllowed"
                 + (f", ISRC {copy.tags['isrc']}" if copy.tags.get("isrc") else ""))


def _sign_fix(ctx: _Context, rel: str) -> str:
    from harmonycloak.rights.c2pa import CHAIN_FILE, DEFAULT_KEY_DIR, KEY_FILE

    key = f"{DEFAULT_KEY_DIR}/{KEY_FILE}"
    command = (f"harmonycloak rights tag {ctx.path_arg(rel)} --in-place --owner {_q(ctx.owner)} "
               f"--c2pa-key {key} --c2pa-cert {DEFAULT_KEY_DIR}/{CHAIN_FILE}")
    if not Path(os.path.expanduser(key)).is_file():
        command = f"harmonycloak rights init -o {DEFAULT_KEY_DIR} && " + command
    return command


def _c2pa_check(ctx: _Context, copy: AudioFile, target: str) -> Check:
    state = copy.c2pa_state
    if state == "unavailable":
        return Check("c2pa", UNAVAILABLE, copy.c2pa_message)
    if state == "unsupported":
        return Check("c2pa", NA, f"C2PA cannot be embedded in .{copy.format} files "
                     "(WAV, MP3, FLAC and M4A can carry it)")
    if state == "none":
        return Check("c2pa", GAP, "no C2PA manifest (Content Credentials)", _sign_fix(ctx, target))
    if state == "tampered":
        return Check("c2pa", FAIL, f"tampered: {copy.c2pa_message}",
                     f"if you did not change it, restore {ctx.path_arg(copy.path)} from your backup; "
                     f"otherwise sign it again: {_sign_fix(ctx, copy.path)}")
    if state == "invalid":
        return Check("c2pa", FAIL, f"invalid manifest: {copy.c2pa_message}", _sign_fix(ctx, target))
    if not copy.c2pa_reserves_training:
        return Check("c2pa", GAP, "the manifest is valid but does not say notAllowed for AI training",
                     _sign_fix(ctx, target))
    signer = "trusted signer" if state == "trusted" else "signature and content intact"
    return Check("c2pa", OK, f"valid manifest ({signer}), AI training and data mining notAllowed")


# ---------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------


def _value(check: Check) -> float | None:
    return None if check.status not in _COUNTED else (1.0 if check.status == OK else 0.0)


def _track_score(master: Check, copies: list[CopyAudit]) -> int:
    points = maximum = 0.0
    weighted = [(master, float(WEIGHTS["master"]))]
    weighted += [(c, WEIGHTS[c.check] / len(copies)) for copy in copies for c in copy.checks]
    for check, weight in weighted:
        value = _value(check)
        if value is not None:
            points, maximum = points + weight * value, maximum + weight
    return round(100 * points / maximum) if maximum else 100


def _site_score(checks: list[Check]) -> int | None:
    pairs = [(_value(c), SITE_WEIGHTS.get(c.check, 1)) for c in checks]
    counted = [(v, w) for v, w in pairs if v is not None]
    if not counted:
        return None
    return round(100 * sum(v * w for v, w in counted) / sum(w for _, w in counted))


def _finish(ctx: _Context, tracks: list[TrackAudit], site_dir: Any,
            site: list[Check] | None) -> AuditReport:
    catalog_score = round(sum(t.score for t in tracks) / len(tracks)) if tracks else None
    site_score = _site_score(site) if site is not None else None
    if catalog_score is not None and site_score is not None:
        score = round(CATALOG_SHARE * catalog_score + (1 - CATALOG_SHARE) * site_score)
    else:
        score = catalog_score if catalog_score is not None else (site_score or 0)
    db = catalog_path(ctx.root)
    report = AuditReport(
        root=str(ctx.root), generated_at=_dt.datetime.now().replace(microsecond=0).isoformat(),
        catalog=str(db) if ctx.records is not None else None, tracks=tracks,
        site_dir=None if site_dir is None else str(site_dir), site=site,
        skipped=ctx.state.skipped, watermark=ctx.watermark_note or "checked with the given key",
        catalog_score=catalog_score, site_score=site_score, score=score)
    report.fixes = _ordered_fixes(report)
    return report


def _ordered_fixes(report: AuditReport) -> list[str]:
    order = {"master": 0, "cloaked": 1, "watermark": 2, "tags": 3, "c2pa": 4}
    found: list[tuple[int, str]] = []
    for check in report._all_checks():
        if check.fix and check.status in (GAP, FAIL):
            found.append((order.get(check.check, 5), check.fix))
    unique: dict[str, None] = {}
    for _, fix in sorted(found, key=lambda item: item[0]):
        unique.setdefault(fix, None)
    return list(unique)


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------

_LABELS = {OK: ("✔", "good"), GAP: ("✘", "missing"), FAIL: ("⚠", "damaged"),
           NA: ("–", "does not apply"), UNAVAILABLE: ("?", "cannot check")}
_CHECK_TITLES = {
    "master": "Lossless master archived",
    "cloaked": "Protected against AI training",
    "watermark": "Your watermark",
    "tags": "Rights tags",
    "c2pa": "Signed Content Credentials (C2PA)",
    "robots.txt": "robots.txt blocks AI crawlers",
    "ai.txt": "ai.txt reserves your audio",
    "tdmrep.json": "TDMRep reservation (EU opt-out)",
    "html meta tags": "Pages carry the TDMRep tag",
}
_EXPLAIN = [
    ("Lossless master archived", "Your original WAV or FLAC is in the folder, recorded in the "
     "catalog, and has not changed by a single bit since (storage can silently damage files)."),
    ("Protected against AI training", "The published copy went through harmonycloak protect: "
     "inaudible changes under the music make it useless for training generative AI."),
    ("Your watermark", "An inaudible mark, found only with your key, that proves the copy is "
     "yours even after it was converted or trimmed."),
    ("Rights tags", "Text inside the file (like the song title) saying who owns it and that it "
     "may not be used for AI training. Players and tools such as ffprobe show it."),
    ("Signed Content Credentials (C2PA)", "A signed record inside the file: who made it, that AI "
     "training is not allowed, and that it was protected. If anyone changes the file, the "
     "signature breaks and this audit shows it as damaged."),
    ("Website files", "robots.txt, ai.txt and TDMRep tell AI crawlers and dataset builders that "
     "your music is reserved. They are requests, not locks — that is why the files themselves "
     "are protected too."),
]
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:70rem;
padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem}.muted{color:#6e6e73}.score{font-size:3rem;font-weight:700}
.ok{color:#1a7f37}.gap{color:#b35900}.fail{color:#c62828}.na,.unavailable{color:#8e8e93}
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{border-bottom:1px solid #e5e5ea;
padding:.45rem .5rem;text-align:left;vertical-align:top}th{background:#f5f5f7}
td .why{display:block;font-size:.85rem;color:#6e6e73}pre{background:#f5f5f7;padding:.6rem;
border-radius:6px;white-space:pre-wrap;word-break:break-all}li{margin-bottom:.6rem}
.bar{height:.6rem;background:#e5e5ea;border-radius:.3rem;overflow:hidden;max-width:20rem}
.bar>span{display:block;height:100%}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _color(score: int) -> str:
    return "ok" if score >= 80 else ("gap" if score >= 50 else "fail")


def _cell(check: Check) -> str:
    icon, word = _LABELS.get(check.status, ("?", check.status))
    css = check.status.replace("/", "")
    return (f'<td class="{css}" title="{_e(check.detail)}"><b>{icon} {word}</b>'
            f'<span class="why">{_e(check.detail)}</span></td>')


def _headline(report: AuditReport) -> str:
    counts = report.summary()
    todo = counts[GAP] + counts[FAIL]
    if not report.tracks and report.site is None:
        return "No audio files were found in this folder."
    if todo == 0:
        return "Everything we checked is in place."
    return (f"{todo} thing{'s' if todo != 1 else ''} to fix"
            + (f", {counts[FAIL]} of them damaged or tampered files" if counts[FAIL] else "") + ".")


def _tracks_table(report: AuditReport) -> str:
    head = ["Track", "Lossless master", "Published copy", "Protected", "Watermark", "Rights tags",
            "C2PA"]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for track in report.tracks:
        copies = track.copies or [None]
        span = len(copies)
        for index, copy in enumerate(copies):
            cells = ""
            if index == 0:
                title = track.name.rsplit("/", 1)[-1].split(".", 1)[0]
                cells += (f'<td rowspan="{span}"><b>{_e(title)}</b>'
                          f'<span class="why">{_e(track.name)} · score {track.score}/100</span></td>')
                cells += _cell(track.master_check).replace("<td ", f'<td rowspan="{span}" ', 1)
            if copy is None:
                cells += '<td class="na" colspan="5">no published copy in this folder</td>'
            else:
                cells += f"<td>{_e(copy.path)}</td>" + "".join(_cell(c) for c in copy.checks)
            rows.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _site_table(report: AuditReport) -> str:
    if report.site is None:
        return ("<p class=\"muted\">Not checked. Run the audit with <code>--site-dir</code> and your "
                "website folder, and make the files with <code>harmonycloak rights policy</code>.</p>")
    rows = ["<tr><th>What</th><th>State</th></tr>"]
    rows += [f"<tr><td>{_e(_CHECK_TITLES.get(c.check, c.check))}</td>{_cell(c)}</tr>" for c in report.site]
    return (f"<p class=\"muted\">{_e(report.site_dir)} — score {report.site_score}/100</p>"
            "<table>" + "".join(rows) + "</table>")


def _fix_list(report: AuditReport) -> str:
    if not report.fixes:
        return "<p class=\"ok\">Nothing to do.</p>"
    items = "".join(f"<li><pre>{_e(fix)}</pre></li>" for fix in report.fixes)
    return ("<p>Run these in a terminal, from top to bottom (masters first, then protection, "
            "then tags and signatures):</p><ol>" + items + "</ol>")


def _render_html(report: AuditReport) -> str:
    color = _color(report.score)
    skipped = "".join(f"<li>{_e(s.path)} — {_e(s.reason)}</li>" for s in report.skipped)
    explain = "".join(f"<dt><b>{_e(t)}</b></dt><dd>{_e(d)}</dd>" for t, d in _EXPLAIN)
    parts_score = []
    if report.catalog_score is not None:
        parts_score.append(f"music {report.catalog_score}/100")
    if report.site_score is not None:
        parts_score.append(f"website {report.site_score}/100")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>harmonycloak audit — {_e(report.root)}</title><style>{_CSS}</style></head>
<body>
<h1>How well is your music protected?</h1>
<p class="muted">Folder {_e(report.root)} · checked {_e(report.generated_at)} ·
harmonycloak {_e(report.version)}
{'' if report.catalog else ' · no catalog yet'}</p>
<p class="score {color}">{report.score}<span class="muted" style="font-size:1.2rem">/100</span></p>
<div class="bar"><span class="{color}" style="width:{report.score}%;background:currentColor"></span></div>
<p><b>{_e(_headline(report))}</b> <span class="muted">{_e(' · '.join(parts_score))}</span></p>
<h2>What to do next</h2>
{_fix_list(report)}
<h2>Your tracks</h2>
<p class="muted">Watermark: {_e(report.watermark)}</p>
{_tracks_table(report) if report.tracks else '<p>No audio files found.</p>'}
<h2>Your website</h2>
{_site_table(report)}
{f'<h2>Files we could not read</h2><ul>{skipped}</ul>' if skipped else ''}
<h2>What each check means</h2>
<dl>{explain}</dl>
<p class="muted">Score: each track counts the checks that are good, weighted (protected 3, master 2,
watermark 2, C2PA 2, tags 1); the website counts robots.txt 2, TDMRep 2, ai.txt 1, meta tags 1; the total
is 80 % music and 20 % website. Checks that do not apply are left out.</p>
</body></html>
"""
