"""End to end in a real headless Chromium (Debian's ``/usr/bin/chromium`` driven by Python
Playwright; no browser is downloaded): upload a WAV and a MIDI file, protect them, play
A/B (the position must carry over the switch without a restart), look at the
spectrograms, download one file and all as a zip, reload the page, upload a bad file and
see the command line's message, run an audit. Screenshots go to ``tests/artifacts/web/``.

Skips when Chromium or Playwright is missing, except with ``CI=true``, where it fails:
CI must run it.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from conftest import music_like

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts" / "web"
JOB_TIMEOUT_MS = 180_000


def _need(available: bool, reason: str) -> None:
    """Skip without ``available``; under CI (``CI=true``) fail instead."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the browser test must run (install it, see docs/web.md)")
    pytest.skip(reason, allow_module_level=True)


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


_need(_importable("playwright.sync_api"), "Python Playwright is not installed (pip install playwright; "
      "never `playwright install`: the test uses /usr/bin/chromium)")
_need(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK),
      f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
_need(_importable("fastapi") and _importable("uvicorn"), "the web extra is not installed (pip install -e .[web])")

import uvicorn  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from harmonycloak.config import EngineConfig  # noqa: E402
from harmonycloak.io.audio import load_audio  # noqa: E402
from harmonycloak.web import ServeSettings  # noqa: E402
from harmonycloak.web.app import create_app  # noqa: E402
from test_web_api import midi_bytes, models  # noqa: E402,F401  (models: the API tests' module fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_settings(model_dirs: dict[str, str]) -> ServeSettings:
    """The app's settings for these tests: the given checkpoints, a four-step engine."""
    return ServeSettings(model_dirs=model_dirs, device="cpu", measure_visqol=False,
                         engine_override=EngineConfig(outer_rounds=1, outer_steps=1, inner_steps=4,
                                                      batch_size=2))


class Server:
    """uvicorn serving the app in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "from-the-musician"
    folder.mkdir()
    wav = folder / "clip.wav"
    sf.write(wav, music_like(44100, 2, 5.0, seed=4).T, 44100, subtype="FLOAT")
    mid = folder / "song.mid"
    mid.write_bytes(midi_bytes())
    bad = folder / "bad.wav"
    bad.write_text("this is a text file, renamed .wav\n")
    return {"wav": wav, "mid": mid, "bad": bad}


def shot(page, name: str, *, locator=None) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (locator or page).screenshot(path=str(ARTIFACTS / name), **({} if locator else {"full_page": True}))


def test_musician_flow_in_chromium(tmp_path, models, files):
    from harmonycloak.rights.tags import read_tags

    originals = {k: p.read_bytes() for k, p in files.items()}
    app = create_app(data_dir=tmp_path / "data", settings=tiny_settings(models))
    with Server(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            errors: list[str] = []
            failed: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
                    and not msg.text.startswith("Failed to load resource") else None)  # e.g. CSP
            page.on("response", lambda r: failed.append(f"{r.request.method} {r.url.split('/', 3)[-1]} "
                                                        f"{r.status}") if r.status >= 400 else None)
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            shot(page, "01-start.png")

            # ---- upload two files, choose options, protect
            page.set_input_files("#picker", [str(files["wav"]), str(files["mid"])])
            expect(page.locator("#staged li")).to_have_count(2)
            page.locator("label.preset", has_text="Light").click()
            page.check("#opt-tags")
            page.fill("#opt-owner", "Test Artist")
            expect(page.locator("#protect")).to_have_text("Protect 2 files")
            shot(page, "02-staged.png")
            page.click("#protect")
            cards = page.locator("#jobs li.job")
            expect(cards).to_have_count(2)
            expect(page.locator("#staged li")).to_have_count(0)
            shot(page, "03-working.png")
            audio = page.locator("li.job[data-name='clip.wav']")
            midi = page.locator("li.job[data-name='song.mid']")
            for card in (audio, midi):
                expect(card).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
            expect(audio.locator(".figure[data-key='nmr_p95_db'] .value")).to_contain_text("dB")
            expect(audio.locator(".figure[data-key='nmr_p95_db'] .explain")).to_contain_text("masked")
            expect(audio.locator(".badge", has_text="mark 000000010001")).to_be_visible()
            expect(midi.locator(".figure[data-key='notes_changed']")).to_be_visible()
            expect(midi.locator(".player")).to_have_count(0)              # MIDI: the report, no player
            shot(page, "04-done.png")

            # ---- A/B: start, switch while playing, the position carries on
            job_id = audio.get_attribute("data-id")
            audio.locator("button.play").click()
            page.wait_for_function(
                "id => { const p = window.harmonycloak.players[id]; return p && p.playing && p.position() > 0.6; }",
                arg=job_id, timeout=30_000)
            before = page.evaluate("id => { const p = window.harmonycloak.players[id];"
                                   " return {pos: p.position(), clock: window.harmonycloak.context().currentTime,"
                                   " starts: p.starts}; }",
                                   job_id)
            audio.locator("button[data-which='protected']").click()
            after = page.evaluate("id => { const p = window.harmonycloak.players[id];"
                                  " return {pos: p.position(), clock: window.harmonycloak.context().currentTime, starts: p.starts,"
                                  " which: p.which, playing: p.playing}; }", job_id)
            assert after["which"] == "protected" and after["playing"]
            assert after["starts"] == before["starts"] == 1                 # nothing restarted
            moved, ticked = after["pos"] - before["pos"], after["clock"] - before["clock"]
            assert before["pos"] > 0.6 and abs(moved - ticked) < 0.005      # same position, no jump
            page.wait_for_timeout(150)
            gains = page.evaluate("id => { const g = window.harmonycloak.players[id].gains;"
                                  " return [g.original.gain.value, g.protected.gain.value]; }", job_id)
            assert gains[0] < 0.01 and gains[1] > 0.99                      # B is what is heard
            expect(audio.locator("button[data-which='protected']")).to_have_attribute("aria-pressed", "true")
            expect(audio.locator(".player .time")).not_to_have_text("0:00 / 0:05")
            shot(page, "05-ab-player.png", locator=audio)
            audio.locator("button[data-which='original']").click()
            assert page.evaluate("id => window.harmonycloak.players[id].starts", job_id) == 1
            audio.locator("button.play").click()                            # pause

            # ---- spectrograms
            audio.locator("details.pictures summary").click()
            page.wait_for_function("el => el.complete && el.naturalWidth > 500",
                                   arg=audio.locator("details.pictures img").element_handle())
            shot(page, "06-spectrograms.png", locator=audio)

            # ---- download one file as MP3, then everything as a zip
            page.select_option("#fmt", "mp3")
            page.select_option("#bitrate", "128")
            with page.expect_download() as one:
                audio.locator("button.download").click()
            assert one.value.suggested_filename == "clip.protected.mp3"
            mp3 = tmp_path / "got.mp3"
            one.value.save_as(mp3)
            clip = load_audio(mp3)
            assert abs(clip.duration_s - 5.0) < 0.05 and clip.channels == 2
            assert read_tags(mp3)["owner"] == "Test Artist"
            with page.expect_download() as everything:
                page.click("#zip")
            archive = tmp_path / "all.zip"
            everything.value.save_as(archive)
            assert {"clip.protected.mp3", "song.protected.mid"} <= set(zipfile.ZipFile(archive).namelist())

            # ---- the jobs survive a reload
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            expect(page.locator("#jobs li.job[data-status='done']")).to_have_count(2)

            # ---- a bad file shows the command line's message
            page.set_input_files("#picker", [str(files["bad"])])
            page.click("#protect")
            message = page.locator("#staged li.failed .msg")
            expect(message).to_have_text("bad.wav: is not a readable audio file (no decoder recognised its "
                                         "contents); export it again as WAV, FLAC or MP3")
            shot(page, "07-bad-upload.png")

            # ---- audit a folder: the master, and the zip unpacked (copies and their reports)
            music = tmp_path / "music"
            music.mkdir()
            shutil.copy(files["wav"], music / "clip.wav")
            zipfile.ZipFile(archive).extractall(music)
            page.click("#tab-audit-btn")
            page.fill("#audit-folder", str(music))
            page.uncheck("#audit-key")
            page.click("#audit-run")
            expect(page.locator("#audit-score")).to_be_visible(timeout=60_000)
            copy_row = page.locator("#audit-result tr", has_text="clip.protected.mp3")
            expect(copy_row.locator("td").nth(3)).to_contain_text("ok")      # linked to its report by the tags
            expect(copy_row.locator("td").nth(5)).to_contain_text("owner Test Artist")
            expect(page.locator("#audit-result")).not_to_contain_text("null")
            shot(page, "08-audit.png")
            assert errors == [], errors                                     # no script or CSP errors
            assert failed == ["POST api/jobs 400"], failed                  # only the bad upload
        finally:
            browser.close()
    assert {k: p.read_bytes() for k, p in files.items()} == originals     # the musician's files untouched


def test_embedding_shift_view_in_chromium(tmp_path, files):
    from harmonycloak.targets.embedding import ContrastiveEncoderConfig, ContrastiveMusicEncoder

    ContrastiveMusicEncoder(ContrastiveEncoderConfig.tiny(), seed=0).save(tmp_path / "clap-shift")
    app = create_app(data_dir=tmp_path / "data", settings=tiny_settings({"audio": str(tmp_path / "clap-shift")}))
    with Server(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#picker", [str(files["wav"])])
            page.click("#protect")
            card = page.locator("#jobs li.job").first
            expect(card).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
            view = card.locator(".embedding-view")
            expect(view).to_be_visible()
            windows = view.locator("circle.clean").count()                 # one pair per encoder window
            assert windows >= 1
            expect(view.locator("circle.protected")).to_have_count(windows)
            expect(view.locator("line.shift")).to_have_count(windows)
            expect(view).to_contain_text("Average similarity")
            shot(page, "09-embedding-view.png", locator=card)
            assert errors == [], errors
        finally:
            browser.close()
