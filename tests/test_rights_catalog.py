"""Catalog and audit on a test library that mixes protected, unprotected, tampered,
bit-rotted, untagged and unreadable files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from harmonycloak.cli.app import main
from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.io.audio import save_audio
from harmonycloak.rights import catalog
from harmonycloak.rights.audit import SITE_WEIGHTS, WEIGHTS, Check, CopyAudit, _track_score, audit
from harmonycloak.rights.c2pa import init_signing_chain
from harmonycloak.rights.policy import SitePolicy, write_site_policy

pytest.importorskip("c2pa")


def _clip(freq_hz: float, rate_hz: int = 44100, seconds: float = 0.3) -> AudioClip:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    x = 0.25 * np.sin(2 * np.pi * freq_hz * t) + 0.05 * np.sin(2 * np.pi * 2.7 * freq_hz * t)
    return AudioClip(np.stack([x, np.roll(x, 11)]).astype(np.float32), rate_hz)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _report(master: Path, output: Path, payload: str | None) -> None:
    """A protection report in the format ``harmonycloak protect`` writes (OUT.report.json)."""
    Path(f"{output}.report.json").write_text(json.dumps({
        "harmonycloak_report": 1, "version": "0.1.0",
        "input": {"path": str(master), "sha256": _sha(master)},
        "output": {"path": str(output), "sha256": _sha(output)},
        "mode": "blackbox", "target": "musicgen", "preset": "standard-v1", "seed": 0,
        "watermark": None if payload is None else {"payload": payload}}))


def _flip_audio_byte(path: Path, *, keep_mtime: bool) -> None:
    info = path.stat()
    data = bytearray(path.read_bytes())
    offset = data.index(b"mdat") + 800 if path.suffix == ".m4a" else len(data) - 300
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:  # what bit rot looks like: same size, same time, other bytes
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _cli(argv: list[str]) -> int:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """music/ with its catalog scanned, then one copy tampered and one master bit-rotted."""
    base = tmp_path_factory.mktemp("library")
    keys = init_signing_chain(base / "keys", owner="Jane Doe")
    root = base / "music"
    m, p = root / "masters", root / "public"
    for name, freq in (("song.wav", 440), ("ballad.flac", 330), ("demo.wav", 550), ("lonely.flac", 620)):
        save_audio(_clip(freq), m / name)
    save_audio(_clip(441), p / "song.protected.mp3")  # stands in for protect's output
    _report(m / "song.wav", p / "song.protected.mp3", payload="c0ffee")
    save_audio(_clip(330), p / "ballad.ogg")
    save_audio(_clip(550), p / "demo.m4a")
    sign = ["--c2pa-key", str(keys.key), "--c2pa-cert", str(keys.chain)]
    assert _cli(["rights", "tag", str(p / "song.protected.mp3"), "-o", str(p / "song.final.mp3"),
                 "--owner", "Jane Doe", "--isrc", "USRC17607839", *sign]) == 0
    assert _cli(["rights", "tag", str(p / "demo.m4a"), "--in-place", "--owner", "Jane Doe", *sign]) == 0
    (p / "broken.mp3").write_text("this is not audio\n" * 40)
    (m / "old.aiff").write_bytes(b"FORM" + bytes(100))
    (root / "notes.txt").write_text("cover art goes here")
    catalog.scan(root)
    _flip_audio_byte(p / "demo.m4a", keep_mtime=False)  # tampered after signing
    _flip_audio_byte(m / "lonely.flac", keep_mtime=True)  # bit rot
    return base


@pytest.fixture
def library(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "lib")  # copy2 keeps modification times
    return tmp_path / "lib" / "music"


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, _sha(p))
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------


def test_catalog_lives_next_to_the_music_and_records_each_file(library):
    assert catalog.catalog_path(library) == library / ".harmonycloak" / "catalog.sqlite"
    records = catalog.load_catalog(library)
    assert set(records) == {"masters/song.wav", "masters/ballad.flac", "masters/demo.wav",
                            "masters/lonely.flac", "public/song.protected.mp3",
                            "public/song.final.mp3", "public/ballad.ogg", "public/demo.m4a"}
    song, final = records["masters/song.wav"], records["public/song.final.mp3"]
    assert song.role == "master" and song.lossless and song.format == "wav"
    assert final.role == "copy" and not final.lossless and final.protected
    assert final.protection_evidence == "tags" and final.master_sha256 == song.sha256
    assert final.watermark_payload == "c0ffee" and final.preset == "standard-v1"
    assert final.tags["owner"] == "Jane Doe" and final.c2pa_state == "valid"
    assert records["public/song.protected.mp3"].protection_evidence == "report"
    assert records["public/ballad.ogg"].protected is False
    assert records["public/ballad.ogg"].c2pa_state == "unsupported"
    assert records["public/ballad.ogg"].track == "masters/ballad.flac"
    assert records["public/demo.m4a"].track == "masters/demo.wav"


def test_scan_lists_unreadable_and_unsupported_files_with_the_reason(library):
    result = catalog.scan(library)
    skipped = {s.path: s.reason for s in result.skipped}
    assert set(skipped) == {"public/broken.mp3", "masters/old.aiff"}
    assert "not a readable audio file" in skipped["public/broken.mp3"]
    assert "not supported" in skipped["masters/old.aiff"]


def test_verify_finds_missing_changed_and_untracked_files(library):
    (library / "public" / "ballad.ogg").unlink()
    save_audio(_clip(700), library / "public" / "new.flac")
    result = catalog.verify(library)
    assert not result.ok
    assert result.missing == ["public/ballad.ogg"]
    changes = {c.path: c.reason for c in result.changed}
    assert changes == {"masters/lonely.flac": "bit rot", "public/demo.m4a": "edited"}
    assert result.untracked == ["public/new.flac"]  # broken.mp3 is skipped, not untracked
    assert "public/broken.mp3" in {s.path for s in result.skipped}


def test_verify_and_audit_modify_nothing_in_the_folder(library, tmp_path):
    before = _snapshot(library)
    catalog.verify(library)
    audit(library, site_dir=None)
    assert _cli(["audit", str(library), "--json", "--html", str(tmp_path / "report.html")]) == 0
    assert _cli(["catalog", "verify", str(library), "--json"]) == 0
    assert _snapshot(library) == before


def test_rescan_keeps_a_changed_master_unless_changes_are_accepted(library):
    old_sha = catalog.load_catalog(library)["masters/lonely.flac"].sha256
    (library / "public" / "ballad.ogg").unlink()
    result = catalog.scan(library)
    assert result.changed_masters_kept == ["masters/lonely.flac"]
    assert result.updated == ["public/demo.m4a"] and result.missing == ["public/ballad.ogg"]
    assert catalog.load_catalog(library)["masters/lonely.flac"].sha256 == old_sha
    result = catalog.scan(library, accept_changes=True)
    assert result.updated == ["masters/lonely.flac"] and result.removed == ["public/ballad.ogg"]
    assert catalog.verify(library).ok


def test_verify_needs_a_catalog(tmp_path):
    with pytest.raises(InputError, match="catalog scan"):
        catalog.verify(tmp_path)


def test_cli_catalog_scan_and_verify_print_one_json_object(library, capsys):
    assert main(["catalog", "scan", str(library), "--json"]) == 0
    scanned = json.loads(capsys.readouterr().out)
    assert scanned["files"] == 8 and scanned["changed_masters_kept"] == ["masters/lonely.flac"]
    assert main(["catalog", "verify", str(library), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["ok"] is False and verified["missing"] == []
    assert main(["catalog", "verify", str(library / "nowhere")]) == 2
    assert "folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------------------


def _states(report: dict) -> dict[str, dict[str, str]]:
    """{file: {check: status}} over masters and copies of the JSON report."""
    states: dict[str, dict[str, str]] = {}
    for track in report["tracks"]:
        states.setdefault(track["master"] or track["name"], {})["master"] = track["master_check"]["status"]
        for copy in track["copies"]:
            states[copy["path"]] = {c["check"]: c["status"] for c in copy["checks"]}
    return states


def test_audit_json_shows_each_state(library, tmp_path, capsys):
    html_path = tmp_path / "audit.html"
    assert main(["audit", str(library), "--json", "--html", str(html_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    states = _states(report)
    assert states["masters/song.wav"] == {"master": "ok"}
    def copy(cloaked: str, tags: str, c2pa: str) -> dict[str, str]:
        return {"cloaked": cloaked, "watermark": "n/a", "tags": tags, "c2pa": c2pa}

    assert states["public/song.final.mp3"] == copy("ok", "ok", "ok")  # protected, tagged, signed
    assert states["public/song.protected.mp3"] == copy("ok", "gap", "gap")  # protected, untagged
    assert states["public/ballad.ogg"] == copy("gap", "gap", "n/a")  # unprotected, untagged
    assert states["public/demo.m4a"] == copy("gap", "ok", "fail")  # tampered after signing
    assert states["masters/lonely.flac"] == {"master": "fail"}
    assert {s["path"] for s in report["skipped"]} == {"public/broken.mp3", "masters/old.aiff"}
    assert report["html"] == str(html_path) and html_path.is_file()
    assert 0 < report["score"] < 100 and report["site"] is None


def test_every_gap_and_failure_comes_with_its_fix(library):
    report = audit(library)
    checks = [t.master_check for t in report.tracks] + [
        c for t in report.tracks for copy in t.copies for c in copy.checks]
    problems = [c for c in checks if c.status in ("gap", "fail")]
    assert problems and all(c.fix for c in problems)
    assert f"harmonycloak protect {library}/masters/ballad.flac -o " \
           f"{library}/public/ballad.protected.ogg" in [c.fix for c in problems]
    tampered = next(c for t in report.tracks for copy in t.copies for c in copy.checks
                    if copy.path == "public/demo.m4a" and c.check == "c2pa")
    assert "mismatch" in tampered.detail and "restore" in tampered.fix
    rotted = next(t.master_check for t in report.tracks if t.master == "masters/lonely.flac")
    assert "restore" in rotted.fix and "--accept-changes" in rotted.fix
    assert report.fixes[0].startswith("restore")  # masters first


def test_audit_without_a_catalog_asks_for_a_scan(library):
    catalog.catalog_path(library).unlink()
    report = audit(library)
    masters = {t.master: t.master_check for t in report.tracks}
    assert masters["masters/song.wav"].status == "gap"
    assert masters["masters/song.wav"].fix == f"harmonycloak catalog scan {library}"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_readable_and_shows_each_state(library, tmp_path):
    report = audit(library, site_dir=_site(tmp_path))
    page = report.to_html()
    parser = _Collect()
    parser.feed(page)
    text = " ".join(parser.text)
    for words in ("How well is your music protected?", "What to do next", "✔ good", "✘ missing",
                  "⚠ damaged", "– does not apply", "song", "ballad", "Files we could not read",
                  "public/broken.mp3", "robots.txt blocks AI crawlers", f"{report.score}"):
        assert words in text
    assert "--owner 'Jane Doe'" in text  # commands come out unescaped to the reader
    assert "<script" not in page


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_site_policy(site, SitePolicy(owner="Jane Doe", policy_url="https://jane.example/ai"))
    return site


def test_site_checks_and_the_score_formula(library, tmp_path):
    report = audit(library, site_dir=_site(tmp_path))
    assert [c.status for c in report.site] == ["ok", "ok", "ok", "n/a"]
    assert report.site_score == 100
    assert report.catalog_score == round(sum(t.score for t in report.tracks) / len(report.tracks))
    assert report.score == round(0.8 * report.catalog_score + 0.2 * report.site_score)
    empty_site = tmp_path / "empty-site"
    empty_site.mkdir()
    bare = audit(library, site_dir=empty_site)
    assert [c.status for c in bare.site] == ["gap", "gap", "gap", "n/a"] and bare.site_score == 0


def test_track_score_weights():
    master = Check("master", "ok", "")
    copies = [CopyAudit("a.mp3", "mp3", [Check("cloaked", "ok", ""), Check("watermark", "n/a", ""),
                                         Check("tags", "gap", ""), Check("c2pa", "ok", "")]),
              CopyAudit("b.ogg", "ogg", [Check("cloaked", "gap", ""), Check("watermark", "n/a", ""),
                                         Check("tags", "gap", ""), Check("c2pa", "n/a", "")])]
    points = WEIGHTS["master"] + WEIGHTS["cloaked"] / 2 + WEIGHTS["c2pa"] / 2
    maximum = WEIGHTS["master"] + WEIGHTS["cloaked"] + WEIGHTS["tags"] + WEIGHTS["c2pa"] / 2
    assert _track_score(master, copies) == round(100 * points / maximum)
    assert set(SITE_WEIGHTS) == {"robots.txt", "ai.txt", "tdmrep.json", "html meta tags"}


def _fake_watermark(detected_in: str) -> types.ModuleType:
    module = types.ModuleType("harmonycloak.watermark")

    class Detection:
        def __init__(self, detected: bool) -> None:
            self.detected, self.payload = detected, "c0ffee" if detected else None
            self.false_alarm_probability, self.bit_errors, self.offset_s = 1e-9, 0, 0.0

    module.load_key = lambda path: {"key": Path(path).read_text()}
    module.detect = lambda clip, key: Detection(detected_in in (clip.source or ""))
    return module


def test_watermark_checked_with_the_artist_key(library, tmp_path, monkeypatch):
    key = tmp_path / "artist.key"
    key.write_text("secret")
    monkeypatch.setitem(sys.modules, "harmonycloak.watermark", _fake_watermark("song.final"))
    states = _states(audit(library, key_path=key).to_json())
    assert states["public/song.final.mp3"]["watermark"] == "ok"
    assert states["public/ballad.ogg"]["watermark"] == "gap"
    fixes = audit(library, key_path=key).fixes
    assert any("watermark embed" in f and "--payload" in f for f in fixes)


def test_watermark_unavailable_when_the_module_is_missing(library, tmp_path, monkeypatch):
    key = tmp_path / "artist.key"
    key.write_text("secret")
    monkeypatch.setitem(sys.modules, "harmonycloak.watermark", None)  # import fails
    report = audit(library, key_path=key)
    assert {c.status for t in report.tracks for copy in t.copies for c in copy.checks
            if c.check == "watermark"} == {"unavailable"}
    assert "not available" in report.watermark


def test_cli_audit_bad_input_is_exit_2(library, tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nowhere")]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert main(["audit", str(library), "--key", str(tmp_path / "missing.key")]) == 2
    err = capsys.readouterr().err
    assert "--key" in err and len(err.strip().splitlines()) == 1


def test_a_missing_master_is_a_failure_with_the_restore_command(library):
    (library / "masters" / "song.wav").unlink()
    (library / "masters" / "ballad.flac").unlink()
    report = audit(library)
    checks = {t.master_check.detail: t.master_check for t in report.tracks
              if t.master_check.status == "fail" and "missing" in t.master_check.detail}
    assert set(checks) == {"the master masters/song.wav is missing from the folder",
                           "the master masters/ballad.flac is missing from the folder"}
    assert all(c.fix.startswith("restore ") for c in checks.values())
    song = next(t for t in report.tracks if any(c.path == "public/song.final.mp3" for c in t.copies))
    assert song.master_check.status == "fail"  # reported with its copies, not twice


def test_midi_in_the_folder_is_skipped_with_a_midi_reason(library):
    (library / "masters" / "sketch.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0")
    skipped = {s.path: s.reason for s in catalog.scan(library).skipped}
    assert "not supported" not in skipped["masters/sketch.mid"]
    assert skipped["masters/sketch.mid"].startswith("MIDI files are not catalogued")
    assert "harmonycloak protect" in skipped["masters/sketch.mid"]
