"""Website opt-out files: robots.txt (checked with Python's robotparser), ai.txt, TDMRep."""

from __future__ import annotations

import json
import re
import urllib.robotparser
import pytest

from harmonycloak.cli.app import main
from harmonycloak.errors import InputError
from harmonycloak.rights.policy import (
    ROBOTS_BEGIN, SitePolicy, check_site, load_crawlers, parse_robots, parse_tdmrep,
    robots_allows, tdm_reservation_for, write_site_policy,
)

POLICY = SitePolicy(owner="Jane Doe", contact="jane@example.com",
                    policy_url="https://jane.example/ai-policy")
REQUIRED = ("GPTBot", "ClaudeBot", "anthropic-ai", "CCBot", "Google-Extended", "Applebot-Extended",
            "Bytespider", "PerplexityBot", "Meta-ExternalAgent", "Amazonbot", "cohere-ai", "Diffbot")


def test_the_crawler_list_is_complete_and_well_formed():
    crawlers = load_crawlers()
    agents = [c.user_agent for c in crawlers]
    assert set(REQUIRED) <= set(agents)
    assert len(agents) == len({a.lower() for a in agents})
    for crawler in crawlers:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", crawler.user_agent)  # RFC 9309 product token
        assert crawler.operator and crawler.source.startswith("https://")
        assert crawler.purpose in {"training", "dataset", "ai-search", "ai-assistant", "control-token"}


def _robotparser(text: str) -> urllib.robotparser.RobotFileParser:
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(text.splitlines())
    return parser


def test_written_files_keep_ai_crawlers_out_and_search_engines_in(tmp_path):
    written = write_site_policy(tmp_path, POLICY)
    assert {p.relative_to(tmp_path).as_posix() for p in written} >= {
        "robots.txt", "ai.txt", ".well-known/tdmrep.json", "harmonycloak-snippets/nginx.conf",
        "harmonycloak-snippets/apache.conf", "harmonycloak-snippets/Caddyfile",
        "harmonycloak-snippets/meta-tags.html"}
    text = (tmp_path / "robots.txt").read_text()
    parser, groups = _robotparser(text), parse_robots(text)
    for crawler in load_crawlers():
        for path in ("/", "/music/song.mp3"):
            assert not parser.can_fetch(crawler.user_agent, f"https://jane.example{path}")
            assert not robots_allows(groups, crawler.user_agent, path)
    assert parser.can_fetch("Googlebot", "https://jane.example/music/song.mp3")
    assert robots_allows(groups, "Googlebot", "/")


def test_tdmrep_json_follows_the_spec(tmp_path):
    write_site_policy(tmp_path, POLICY)
    rules = parse_tdmrep((tmp_path / ".well-known" / "tdmrep.json").read_text())
    assert rules == [{"location": "/", "tdm-reservation": 1,
                      "tdm-policy": "https://jane.example/ai-policy"}]
    assert tdm_reservation_for(rules, "/music/song.flac") == 1
    no_policy = tmp_path / "plain"
    write_site_policy(no_policy, SitePolicy())
    assert parse_tdmrep((no_policy / ".well-known" / "tdmrep.json").read_text()) == [
        {"location": "/", "tdm-reservation": 1}]


def test_tdmrep_parser_on_the_spec_style_examples():
    rules = parse_tdmrep(json.dumps([
        {"location": "/images/*", "tdm-reservation": 1, "tdm-policy": "https://provider.com/policies/p1.json"},
        {"location": "/blog/$", "tdm-reservation": 0},
        {"location": "/", "tdm-reservation": 0}]))
    assert tdm_reservation_for(rules, "/images/cover.jpg") == 1  # the first matching rule wins
    assert tdm_reservation_for(rules, "/blog/") == 0
    assert tdm_reservation_for(rules, "/about") == 0
    assert tdm_reservation_for([], "/about") is None
    for bad, reason in [('{"location": "/"}', "array"), ('[{"tdm-reservation": 1}]', "location"),
                        ('[{"location": "/", "tdm-reservation": 2}]', "0 or 1"),
                        ('[{"location": "/", "tdm-reservation": 1, "tdm-policy": "/p"}]', "absolute"),
                        ("[{", "not valid JSON")]:
        with pytest.raises(ValueError, match=reason):
            parse_tdmrep(bad)


def test_header_snippets_and_meta_tags_carry_the_reservation(tmp_path):
    write_site_policy(tmp_path, POLICY)
    snippets = tmp_path / "harmonycloak-snippets"
    nginx = (snippets / "nginx.conf").read_text()
    assert 'add_header tdm-reservation "1" always;' in nginx
    assert 'add_header tdm-policy "https://jane.example/ai-policy" always;' in nginx
    assert 'Header set tdm-reservation "1"' in (snippets / "apache.conf").read_text()
    caddy = (snippets / "Caddyfile").read_text()
    assert "header @harmonycloak_audio" in caddy and 'tdm-reservation "1"' in caddy
    for snippet in ("nginx.conf", "apache.conf", "Caddyfile"):
        assert "mp3|wav|flac|ogg|opus|m4a" in (snippets / snippet).read_text()
    meta = (snippets / "meta-tags.html").read_text()
    assert '<meta name="tdm-reservation" content="1">' in meta
    assert '<meta name="tdm-policy" content="https://jane.example/ai-policy">' in meta
    assert "Disallow: *.mp3" in (tmp_path / "ai.txt").read_text()


def test_existing_robots_txt_keeps_its_lines_and_needs_force(tmp_path):
    own = "User-agent: *\nDisallow: /private/\n\nSitemap: https://jane.example/sitemap.xml\n"
    (tmp_path / "robots.txt").write_text(own)
    with pytest.raises(InputError, match="robots.txt already exists; use --force"):
        write_site_policy(tmp_path, POLICY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["robots.txt"]  # nothing half-written
    write_site_policy(tmp_path, POLICY, force=True)
    write_site_policy(tmp_path, POLICY, force=True)
    text = (tmp_path / "robots.txt").read_text()
    assert text.count(ROBOTS_BEGIN) == 1 and text.endswith(own)
    groups = parse_robots(text)
    assert not robots_allows(groups, "GPTBot", "/")
    assert not robots_allows(groups, "Googlebot", "/private/x") and robots_allows(groups, "Googlebot", "/")


def test_robots_rules_follow_rfc_9309():
    groups = parse_robots("User-agent: gptbot\nUser-Agent: CCBot\nDisallow: /\nAllow: /public/\n"
                          "User-agent: *\nDisallow: /*.mp3$\nAllow: /free.mp3\nDisallow:\n")
    assert not robots_allows(groups, "GPTBot", "/music/a.mp3")  # case-insensitive token
    assert robots_allows(groups, "GPTBot", "/public/x")  # the longer rule wins
    assert not robots_allows(groups, "Bingbot", "/song.mp3")
    assert robots_allows(groups, "Bingbot", "/song.mp3x")  # $ anchors the end
    assert robots_allows(groups, "Bingbot", "/free.mp3")
    tie = parse_robots("User-agent: a\nDisallow: /x\nAllow: /x\n")
    assert robots_allows(tie, "a", "/x")  # Allow wins ties


def test_check_site_reports_gaps_with_the_fix(tmp_path):
    findings = {f.check: f for f in check_site(tmp_path)}
    assert [f.status for f in findings.values()] == ["gap", "gap", "gap", "n/a"]
    assert findings["robots.txt"].fix == f"harmonycloak rights policy --out {tmp_path} --force"
    write_site_policy(tmp_path, POLICY)
    (tmp_path / "index.html").write_text('<head><meta name="tdm-reservation" content="1"></head>')
    (tmp_path / "about.html").write_text("<html><head><title>About</title></head></html>")
    findings = {f.check: f for f in check_site(tmp_path)}
    assert [findings[k].status for k in ("robots.txt", "ai.txt", "tdmrep.json")] == ["ok"] * 3
    assert findings["html meta tags"].status == "gap" and "about.html" in findings["html meta tags"].detail


def test_check_site_names_uncovered_crawlers_and_invalid_tdmrep(tmp_path):
    (tmp_path / "robots.txt").write_text("User-agent: GPTBot\nDisallow: /\n")
    (tmp_path / ".well-known").mkdir()
    (tmp_path / ".well-known" / "tdmrep.json").write_text('{"tdm-reservation": 1}')
    findings = {f.check: f for f in check_site(tmp_path)}
    assert findings["robots.txt"].status == "gap" and "ClaudeBot" in findings["robots.txt"].detail
    assert findings["tdmrep.json"].status == "fail" and "array" in findings["tdmrep.json"].detail


def test_policy_options_are_validated():
    with pytest.raises(InputError, match="--policy-url"):
        SitePolicy(policy_url="jane.example/ai")
    with pytest.raises(InputError, match="--contact"):
        SitePolicy(contact="call me")


def test_cli_policy(tmp_path, capsys):
    site = tmp_path / "site"
    code = main(["rights", "policy", "--out", str(site), "--owner", "Jane Doe",
                 "--policy-url", "https://jane.example/ai", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    assert str(site / "robots.txt") in data["written"] and data["crawlers"] == len(load_crawlers())
    code = main(["rights", "policy", "--out", str(site)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "--force" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
