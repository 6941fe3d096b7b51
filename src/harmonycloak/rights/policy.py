"""Website opt-out files: tell AI crawlers, in every way they read, that the music is reserved.

:func:`write_site_policy` writes into a website folder (what is uploaded to the server):

``robots.txt``
    One group (RFC 9309) naming every crawler of ``data/ai_crawlers.json`` with
    ``Disallow: /``. It lives between ``# BEGIN harmonycloak`` / ``# END harmonycloak``
    lines: an existing robots.txt keeps its own lines, only the block is replaced.
``ai.txt``
    Spawning's ai.txt (robots.txt syntax, read by dataset tools): ``User-Agent: *`` with
    every audio suffix and ``/`` disallowed.
``.well-known/tdmrep.json``
    W3C TDM Reservation Protocol (TDMRep, Community Group final report, 2024): a JSON
    array of rules ``{"location": "/", "tdm-reservation": 1, "tdm-policy": URL}`` —
    text-and-data-mining rights reserved on the whole site (the machine-readable
    opt-out of EU Directive 2019/790 article 4(3)); ``tdm-policy`` is written only when
    a policy URL is given (it must be absolute).
``harmonycloak-snippets/``
    Server configuration to paste: ``nginx.conf``, ``apache.conf`` (``.htaccess`` or
    VirtualHost, mod_headers) and ``Caddyfile`` add the TDMRep HTTP headers
    ``tdm-reservation: 1`` and ``tdm-policy`` (and ``X-Robots-Tag: noai, noimageai``) to
    audio files, because HTML meta tags cannot reach an ``<audio>`` file fetched on its
    own; ``meta-tags.html`` holds the TDMRep HTML technique ``<meta name="tdm-reservation"
    content="1">`` (and the informal ``<meta name="robots" content="noai, noimageai">``)
    for the ``<head>`` of every page.

:func:`check_site` reads such a folder back for the audit, with a robots.txt parser
that follows RFC 9309 (exact, case-insensitive product-token groups; longest match
wins; Allow wins ties) and a TDMRep parser (first matching rule wins, robots-style
``*`` and ``$`` patterns).
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from harmonycloak import __version__
from harmonycloak.errors import InputError
from harmonycloak.io.files import atomic_write
from harmonycloak.rights.tags import check_url

__all__ = [
    "AUDIO_EXTENSIONS",
    "Crawler",
    "RobotsGroup",
    "SiteFinding",
    "SitePolicy",
    "check_site",
    "load_crawlers",
    "merge_robots",
    "parse_robots",
    "parse_tdmrep",
    "render_site_files",
    "robots_allows",
    "tdm_reservation_for",
    "write_site_policy",
]

#: Audio suffixes the opt-out files name (published files, not only what we write).
AUDIO_EXTENSIONS: tuple[str, ...] = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac",
                                     "aif", "aiff", "wma")
ROBOTS_BEGIN = "# BEGIN harmonycloak AI-training opt-out"
ROBOTS_END = "# END harmonycloak AI-training opt-out"
SNIPPETS_DIR = "harmonycloak-snippets"
_CHECKED_AUDIO = ("mp3", "wav", "flac", "ogg", "opus", "m4a")


@dataclass(frozen=True)
class Crawler:
    """One AI crawler: its robots.txt token, who runs it and what for (see the data file)."""

    name: str
    user_agent: str
    operator: str
    purpose: str  # training, dataset, ai-search, ai-assistant, control-token
    source: str


@lru_cache(maxsize=1)
def load_crawlers() -> tuple[Crawler, ...]:
    """The crawlers of ``harmonycloak/data/ai_crawlers.json``, in file order."""
    text = resources.files("harmonycloak").joinpath("data/ai_crawlers.json").read_text("utf-8")
    return tuple(Crawler(**entry) for entry in json.loads(text)["crawlers"])


@dataclass(frozen=True)
class SitePolicy:
    """Who reserves the rights and where to ask for a licence (all optional)."""

    owner: str | None = None
    contact: str | None = None
    policy_url: str | None = None

    def __post_init__(self) -> None:
        if self.policy_url is not None:
            check_url("--policy-url", self.policy_url)
            if '"' in self.policy_url:
                raise InputError(f"--policy-url {self.policy_url!r}: must not contain quotes")
        if self.contact is not None:
            check_url("--contact", self.contact, allow_email=True)
        for name, value in (("--owner", self.owner), ("--contact", self.contact)):
            if value is not None and ("\n" in value or "\r" in value):
                raise InputError(f"{name} {value!r}: must be one line")


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _statement(policy: SitePolicy) -> list[str]:
    who = policy.owner or "The owner of this site"
    lines = [f"{who} reserves all rights in the music and other content of this site,",
             "including for text and data mining and AI training (EU Directive 2019/790",
             "art. 4(3); W3C TDMRep).",]
    if policy.policy_url:
        lines.append(f"Licence policy: {policy.policy_url}")
    if policy.contact:
        lines.append(f"Contact for a licence: {policy.contact}")
    return lines


def robots_block(policy: SitePolicy, crawlers: tuple[Crawler, ...] | None = None) -> str:
    """The harmonycloak group of robots.txt, between its BEGIN/END marker lines."""
    crawlers = load_crawlers() if crawlers is None else crawlers
    lines = [f"{ROBOTS_BEGIN} (harmonycloak {__version__}; edit outside this block)"]
    lines += [f"# {line}" for line in _statement(policy)]
    lines.append("# Crawlers for AI training, AI datasets, AI search and AI assistants:")
    lines += [f"User-agent: {c.user_agent}" for c in crawlers]
    lines += ["Disallow: /", ROBOTS_END]
    return "\n".join(lines) + "\n"


def merge_robots(existing: str | None, block: str) -> str:
    """``existing`` robots.txt with the harmonycloak block replaced, or put first.

    Lines outside the BEGIN/END markers are kept as they are. The block goes first so
    that parsers that take the first matching group (Python's urllib.robotparser) see it.
    """
    if not existing:
        return block
    pattern = re.compile(re.escape(ROBOTS_BEGIN) + r".*?" + re.escape(ROBOTS_END) + r"[^\n]*\n?",
                         re.DOTALL)
    if pattern.search(existing):
        return pattern.sub(lambda _: block, existing, count=1)
    return block + "\n" + existing.lstrip("\n")


def ai_txt(policy: SitePolicy) -> str:
    """Spawning's ai.txt: every audio suffix and the whole site disallowed for AI datasets."""
    lines = ["# ai.txt: AI-training permissions for this site (Spawning ai.txt, robots.txt syntax)",
             f"# Written by harmonycloak {__version__}."]
    lines += [f"# {line}" for line in _statement(policy)]
    lines.append("User-Agent: *")
    lines += [f"Disallow: *.{ext}" for ext in AUDIO_EXTENSIONS]
    lines += ["Disallow: /", "Disallow: *"]
    return "\n".join(lines) + "\n"


def tdmrep_json(policy: SitePolicy) -> str:
    """``/.well-known/tdmrep.json``: one rule reserving TDM rights on the whole site."""
    rule: dict[str, Any] = {"location": "/", "tdm-reservation": 1}
    if policy.policy_url:
        rule["tdm-policy"] = policy.policy_url
    return json.dumps([rule], indent=2) + "\n"


def _header_values(policy: SitePolicy) -> list[tuple[str, str]]:
    values = [("tdm-reservation", "1")]
    if policy.policy_url:
        values.append(("tdm-policy", policy.policy_url))
    values.append(("X-Robots-Tag", "noai, noimageai"))
    return values


_EXT_GROUP = "|".join(AUDIO_EXTENSIONS)


def nginx_snippet(policy: SitePolicy) -> str:
    """nginx: TDMRep headers on audio files (paste into the ``server { }`` block)."""
    lines = ["# harmonycloak: TDMRep headers on audio files, for nginx.",
             "# Paste inside your server { } block and reload nginx (nginx -s reload).",
             "# add_header inside a location replaces the add_header lines the location would",
             "# inherit from the server block: repeat those here if you have any.",
             f"location ~* \\.({_EXT_GROUP})$ {{"]
    lines += [f'    add_header {name} "{value}" always;' for name, value in _header_values(policy)]
    lines += ["}", "# Whole site instead: put the add_header lines in the server block."]
    return "\n".join(lines) + "\n"


def apache_snippet(policy: SitePolicy) -> str:
    """Apache (``.htaccess`` or VirtualHost, needs mod_headers): TDMRep headers on audio."""
    lines = ["# harmonycloak: TDMRep headers on audio files, for Apache (needs mod_headers).",
             "# Append to the .htaccess at the root of your site, or to its <VirtualHost>.",
             "<IfModule mod_headers.c>",
             f'  <FilesMatch "\\.(?i:{_EXT_GROUP})$">']
    lines += [f'    Header set {name} "{value}"' for name, value in _header_values(policy)]
    lines += ["  </FilesMatch>", "</IfModule>"]
    return "\n".join(lines) + "\n"


def caddy_snippet(policy: SitePolicy) -> str:
    """Caddy: TDMRep headers on audio files (paste into the site block of the Caddyfile)."""
    lines = ["# harmonycloak: TDMRep headers on audio files, for Caddy.",
             "# Paste inside your site block in the Caddyfile and reload Caddy.",
             f"@harmonycloak_audio path_regexp (?i)\\.({_EXT_GROUP})$",
             "header @harmonycloak_audio {"]
    lines += [f'    {name} "{value}"' for name, value in _header_values(policy)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def meta_tags(policy: SitePolicy) -> str:
    """HTML for the ``<head>`` of every page: TDMRep meta tags and the noai robots hint."""
    lines = ["<!-- harmonycloak: put these lines in the <head> of every page of your site. -->",
             "<!-- W3C TDMRep: text and data mining rights are reserved on this page -->",
             '<meta name="tdm-reservation" content="1">']
    if policy.policy_url:
        lines.append(f'<meta name="tdm-policy" content="{html.escape(policy.policy_url)}">')
    lines += ["<!-- informal but widely read: no AI training on this page -->",
              '<meta name="robots" content="noai, noimageai">']
    return "\n".join(lines) + "\n"


def _snippets_readme(policy: SitePolicy) -> str:
    return "\n".join([
        "These files are for you, not for visitors (you may leave them out of the upload).",
        "",
        "nginx.conf     TDMRep headers (tdm-reservation: 1) on audio files, for nginx",
        "apache.conf    the same for Apache (.htaccess or VirtualHost; needs mod_headers)",
        "Caddyfile      the same for Caddy",
        "meta-tags.html the TDMRep <meta> tags for the <head> of every HTML page",
        "",
        "HTML meta tags only speak for the page they are on: a crawler that downloads",
        "song.mp3 directly never sees them. The HTTP headers travel with the audio file",
        "itself, so add the snippet for your web server (or ask your host to).",
        "",
        *_statement(policy),
    ]) + "\n"


def render_site_files(policy: SitePolicy, existing_robots: str | None = None) -> dict[str, str]:
    """Relative path -> content of every file :func:`write_site_policy` writes."""
    return {
        "robots.txt": merge_robots(existing_robots, robots_block(policy)),
        "ai.txt": ai_txt(policy),
        ".well-known/tdmrep.json": tdmrep_json(policy),
        f"{SNIPPETS_DIR}/nginx.conf": nginx_snippet(policy),
        f"{SNIPPETS_DIR}/apache.conf": apache_snippet(policy),
        f"{SNIPPETS_DIR}/Caddyfile": caddy_snippet(policy),
        f"{SNIPPETS_DIR}/meta-tags.html": meta_tags(policy),
        f"{SNIPPETS_DIR}/README.txt": _snippets_readme(policy),
    }


def write_site_policy(site_dir: str | os.PathLike[str], policy: SitePolicy, *,
                      force: bool = False) -> list[Path]:
    """Write the opt-out files into ``site_dir`` (created if missing); returns their paths.

    Nothing is written when any target exists and ``force`` is false (InputError naming
    it). With ``force``, robots.txt keeps its lines outside the harmonycloak block; the
    other files are replaced. Every file is written atomically.
    """
    root = Path(site_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: is a file; give the folder of your website")
    robots = root / "robots.txt"
    existing = _read_text(robots) if robots.is_file() else None
    files = render_site_files(policy, existing)
    if not force:
        for rel in files:
            if (root / rel).exists():
                extra = " (your own robots.txt lines are kept)" if rel == "robots.txt" else ""
                raise InputError(f"{root / rel} already exists; use --force to update it{extra}")
    written = []
    for rel, text in files.items():
        data = text.encode("utf-8")
        written.append(atomic_write(root / rel, lambda tmp, d=data: tmp.write_bytes(d), force=True))
    return written


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from error


# ---------------------------------------------------------------------------------------
# Parsing (for the audit)
# ---------------------------------------------------------------------------------------


@dataclass
class RobotsGroup:
    """One robots.txt group: its user agents and (allow, path pattern) rules in order."""

    agents: list[str]
    rules: list[tuple[bool, str]]


def parse_robots(text: str) -> list[RobotsGroup]:
    """Groups of a robots.txt (or ai.txt), as RFC 9309 section 2.1 defines them.

    Consecutive ``user-agent`` lines open one group; a ``user-agent`` line after a rule
    opens the next. Comments, unknown keys (sitemap, crawl-delay) and rules outside any
    group are ignored; keys are case-insensitive.
    """
    groups: list[RobotsGroup] = []
    current: RobotsGroup | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        key = key.lower()
        if key == "user-agent":
            if current is None or current.rules:
                current = RobotsGroup([], [])
                groups.append(current)
            current.agents.append(value)
        elif key in ("allow", "disallow") and current is not None:
            current.rules.append((key == "allow", value))
    return groups


def _pattern(path_pattern: str) -> re.Pattern[str]:
    anchored = path_pattern.endswith("$")
    body = path_pattern[:-1] if anchored else path_pattern
    regex = ".*".join(re.escape(part) for part in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""))


def robots_allows(groups: list[RobotsGroup], agent: str, path: str) -> bool:
    """Whether a crawler whose product token is ``agent`` may fetch ``path`` (RFC 9309).

    The groups naming ``agent`` (case-insensitive, exact) are merged; when none does,
    the ``*`` groups apply. Among the rules matching ``path`` the longest pattern wins,
    Allow winning a tie; no matching rule (or no group) means allowed. Patterns may use
    ``*`` and a final ``$``; an empty Disallow allows everything.
    """
    token = agent.lower()
    chosen = [g for g in groups if any(a.lower() == token for a in g.agents)]
    if not chosen:
        chosen = [g for g in groups if "*" in g.agents]
    best: tuple[int, bool] | None = None
    for group in chosen:
        for allow, rule in group.rules:
            if rule and _pattern(rule).match(path):
                candidate = (len(rule), allow)
                if best is None or candidate > best:
                    best = candidate
    return True if best is None else best[1]


def parse_tdmrep(text: str) -> list[dict[str, Any]]:
    """The rules of a ``tdmrep.json`` (W3C TDMRep); ValueError with the reason if invalid.

    The file is a JSON array of objects with a ``location`` path pattern (starting with
    ``/``), ``tdm-reservation`` 0 or 1, and optionally ``tdm-policy`` (an absolute URL).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, list):
        raise ValueError("the file must be a JSON array of rules")
    for index, rule in enumerate(data):
        where = f"rule {index + 1}"
        if not isinstance(rule, dict):
            raise ValueError(f"{where} is not a JSON object")
        location = rule.get("location")
        if not isinstance(location, str) or not location.startswith("/"):
            raise ValueError(f"{where}: \"location\" must be a path pattern starting with /")
        if rule.get("tdm-reservation") not in (0, 1) or isinstance(rule.get("tdm-reservation"), bool):
            raise ValueError(f"{where}: \"tdm-reservation\" must be 0 or 1")
        policy = rule.get("tdm-policy")
        if policy is not None and not (isinstance(policy, str) and re.match(r"^https?://", policy)):
            raise ValueError(f"{where}: \"tdm-policy\" must be an absolute http(s) URL")
    return data


def tdm_reservation_for(rules: list[dict[str, Any]], path: str) -> int | None:
    """``tdm-reservation`` of the first rule whose location matches ``path`` (None: no rule)."""
    for rule in rules:
        if _pattern(rule["location"]).match(path):
            return int(rule["tdm-reservation"])
    return None


@dataclass
class SiteFinding:
    """One check of the website folder: ``ok``, ``gap``, ``fail`` or ``n/a``."""

    check: str
    status: str
    detail: str
    fix: str | None = None


def check_site(site_dir: str | os.PathLike[str]) -> list[SiteFinding]:
    """Check robots.txt, ai.txt, tdmrep.json and the pages' TDMRep meta tags (read-only)."""
    root = Path(site_dir)
    if not root.is_dir():
        raise InputError(f"--site-dir {root}: folder not found; give the folder of your website")
    fix = f"harmonycloak rights policy --out {_quote(root)} --force"
    checks: list[Callable[[Path, str], SiteFinding]] = [
        _check_robots, _check_ai_txt, _check_tdmrep, _check_meta]
    return [check(root, fix) for check in checks]


def _check_robots(root: Path, fix: str) -> SiteFinding:
    path = root / "robots.txt"
    if not path.is_file():
        return SiteFinding("robots.txt", "gap", "no robots.txt: AI crawlers are not told to stay away", fix)
    groups = parse_robots(_read_text(path))
    crawlers = load_crawlers()
    open_to = [c.user_agent for c in crawlers
               if robots_allows(groups, c.user_agent, "/") or
               robots_allows(groups, c.user_agent, "/music/song.mp3")]
    if open_to:
        shown = ", ".join(open_to[:8]) + (f" and {len(open_to) - 8} more" if len(open_to) > 8 else "")
        return SiteFinding("robots.txt", "gap",
                           f"{len(open_to)} of {len(crawlers)} AI crawlers may still crawl the site: {shown}",
                           fix)
    return SiteFinding("robots.txt", "ok", f"all {len(crawlers)} known AI crawlers are disallowed")


def _check_ai_txt(root: Path, fix: str) -> SiteFinding:
    path = root / "ai.txt"
    if not path.is_file():
        return SiteFinding("ai.txt", "gap", "no ai.txt: dataset tools that read it see no reservation", fix)
    groups = parse_robots(_read_text(path))
    allowed = [ext for ext in _CHECKED_AUDIO
               if robots_allows(groups, "harmonycloak-audit", f"/music/song.{ext}")]
    if allowed:
        return SiteFinding("ai.txt", "gap", "ai.txt does not disallow audio files: "
                           + ", ".join(f".{e}" for e in allowed), fix)
    return SiteFinding("ai.txt", "ok", "ai.txt disallows audio files for AI training")


def _check_tdmrep(root: Path, fix: str) -> SiteFinding:
    path = root / ".well-known" / "tdmrep.json"
    if not path.is_file():
        return SiteFinding("tdmrep.json", "gap",
                           "no .well-known/tdmrep.json: no TDMRep reservation (EU opt-out)", fix)
    try:
        rules = parse_tdmrep(_read_text(path))
    except ValueError as error:
        return SiteFinding("tdmrep.json", "fail", f".well-known/tdmrep.json is invalid: {error}", fix)
    values = {p: tdm_reservation_for(rules, p) for p in ("/", "/music/song.mp3")}
    if all(v == 1 for v in values.values()):
        policy = next((r.get("tdm-policy") for r in rules if r.get("tdm-policy")), None)
        return SiteFinding("tdmrep.json", "ok", "TDM rights reserved (tdm-reservation 1)"
                           + (f", policy {policy}" if policy else ", no policy URL"))
    return SiteFinding("tdmrep.json", "gap",
                       "tdmrep.json does not reserve TDM rights on the whole site and its audio", fix)


class _MetaFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.reserved = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            values = {k.lower(): (v or "") for k, v in attrs}
            name, content = values.get("name", "").lower(), values.get("content", "").strip()
            if name == "tdm-reservation" and content == "1":
                self.reserved = True


def _check_meta(root: Path, fix: str) -> SiteFinding:
    pages = sorted(p for p in root.rglob("*.htm*") if p.suffix.lower() in (".html", ".htm")
                   and SNIPPETS_DIR not in p.parts)[:2000]
    if not pages:
        return SiteFinding("html meta tags", "n/a", "no HTML pages in the folder")
    missing = []
    for page in pages:
        finder = _MetaFinder()
        finder.feed(_read_text(page))
        if not finder.reserved:
            missing.append(page.relative_to(root).as_posix())
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return SiteFinding(
            "html meta tags", "gap",
            f"{len(missing)} of {len(pages)} pages lack "
            f"<meta name=\"tdm-reservation\" content=\"1\">: {shown}",
            f"{fix}  # then paste {SNIPPETS_DIR}/meta-tags.html into the <head> of each page")
    return SiteFinding("html meta tags", "ok", f"all {len(pages)} pages carry the TDMRep meta tag")


def _quote(path: Path | str) -> str:
    return shlex.quote(str(path))
