"""The web app's API (``harmonycloak serve``) through FastAPI's TestClient, with tiny
random-init checkpoints and a tiny engine: upload, job lifecycle, cancel, restart
survival, file names, size limit, error messages, downloads, zips, audit, safety."""

from __future__ import annotations

import io
import json
import socket
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e .[web]")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import midi_file_bytes, music_like  # noqa: E402
from harmonycloak.cli.app import main  # noqa: E402
from harmonycloak.config import EngineConfig  # noqa: E402
from harmonycloak.io.audio import load_audio  # noqa: E402
from harmonycloak.web import ServeSettings  # noqa: E402
from harmonycloak.web.app import create_app  # noqa: E402
from harmonycloak.web.storage import display_name  # noqa: E402

TINY = EngineConfig(outer_rounds=1, outer_steps=1, inner_steps=2, batch_size=2)
SLOW = EngineConfig(outer_rounds=1, outer_steps=1, inner_steps=100_000, batch_size=2)
BASE_URL = "http://127.0.0.1:8765"
HEADERS = {"X-HarmonyCloak": "1"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Tiny checkpoints: a codec-token LM for audio, a MuseGAN for MIDI."""
    from harmonycloak.targets import MuseGANConfig, MuseGANTarget
    from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget

    root = tmp_path_factory.mktemp("models")
    CodecLMTarget(CodecLMConfig.tiny(), seed=0).save(root / "codec-lm")
    MuseGANTarget(MuseGANConfig.tiny(), seed=0).save(root / "gan")
    return {"audio": str(root / "codec-lm"), "midi": str(root / "gan")}


def settings_for(models: dict[str, str], **overrides) -> ServeSettings:
    values = dict(model_dirs=models, engine_override=TINY, device="cpu", measure_visqol=False)
    values.update(overrides)
    return ServeSettings(**values)


def client_for(data_dir: Path, settings: ServeSettings) -> TestClient:
    return TestClient(create_app(data_dir=data_dir, settings=settings), base_url=BASE_URL, headers=HEADERS)


@pytest.fixture()
def client(tmp_path, models):
    with client_for(tmp_path / "data", settings_for(models)) as c:
        yield c


def wav_bytes(duration_s: float = 1.5, *, seed: int = 0, rate: int = 44100) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, music_like(rate, 2, duration_s, seed=seed).T, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def midi_bytes() -> bytes:
    """Two bars of bass, piano and drums (a Standard MIDI File)."""
    return midi_file_bytes([(0, 33, [(36, 0, 960, 100), (43, 960, 960, 90)]),
                            (1, 0, [(60, 0, 1920, 80), (64, 0, 1920, 70), (67, 1920, 1920, 85)]),
                            (9, 0, [(36, t, 120, 110) for t in range(0, 3840, 480)])])


def upload(client: TestClient, name: str, data: bytes, **form):
    fields = {"preset": "light-v1", "watermark": "false"}
    fields.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()})
    return client.post("/api/jobs", files={"file": (name, data, "application/octet-stream")}, data=fields)


def wait_for(client: TestClient, job_id: str, states=("done", "failed", "cancelled"), *,
             timeout_s: float = 90.0, until=None) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in states and (until is None or until(job)):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s} s: {job}")


def job_folder(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


# ------------------------------------------------------------------ lifecycle


def test_audio_job_runs_to_done_and_keeps_the_original(client, tmp_path):
    data = wav_bytes()
    created = upload(client, "take 1.wav", data)
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["name"], job["kind"], job["status"]) == ("take 1.wav", "audio", "queued")
    assert job["info"]["duration_s"] == pytest.approx(1.5) and job["info"]["bytes"] == len(data)
    seen_running = wait_for(client, job["id"], ("running", "done"))
    done = wait_for(client, job["id"])
    assert done["status"] == "done", done["message"]
    assert seen_running["status"] in ("running", "done")
    assert (done["step"], done["total"], done["progress"]) == (2, 2, 1.0)
    keys = [f["key"] for f in done["figures"]["figures"]]
    assert keys == ["snr_db", "nmr_p95_db", "loss_ratio", "loss_ratio_mp3"]
    nmr = next(f for f in done["figures"]["figures"] if f["key"] == "nmr_p95_db")
    assert nmr["value"] < 0 and nmr["good"] is True and nmr["explain"]
    folder = job_folder(tmp_path / "data", job["id"])
    assert (folder / "original.wav").read_bytes() == data              # the copy is untouched
    report = client.get(done["urls"]["report"]).json()
    assert report["harmonycloak_report"] == 1 and report["mode"] == "whitebox"
    assert report["config"]["engine"]["inner_steps"] == 2               # the override was used
    written, rate = sf.read(io.BytesIO(client.get(done["urls"]["protected"]).content), always_2d=True)
    original, _ = sf.read(io.BytesIO(client.get(done["urls"]["original"]).content), always_2d=True)
    assert rate == 44100 and written.shape == original.shape            # A/B: same length
    assert 0 < np.abs(written - original).max() < 0.1
    listed = client.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_midi_job_has_a_report_and_a_picture_but_no_audio(client):
    job = upload(client, "song.mid", midi_bytes(), watermark=True, tags=True, owner="Ada").json()
    assert job["kind"] == "midi" and job["payload"] is None
    assert job["options"]["watermark"] is False and job["options"]["tags"] is False
    assert any("cannot carry the audio watermark" in n for n in job["info"]["notes"])
    done = wait_for(client, job["id"])
    assert done["status"] == "done", done["message"]
    assert [f["key"] for f in done["figures"]["figures"]] == [
        "loss_ratio", "notes_changed", "notes_added", "mean_velocity_raise"]
    assert "original" not in done["urls"]
    assert client.get(f"/api/jobs/{job['id']}/audio/original").status_code == 404
    picture = client.get(done["urls"]["picture"])
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    download = client.get(done["urls"]["download"], params={"format": "mp3", "bitrate_kbps": 192})
    assert download.status_code == 200 and download.content[:4] == b"MThd"
    assert 'filename="song.protected.mid"' in download.headers["content-disposition"]


def test_watermark_payloads_count_up_and_survive_restarts(tmp_path, models):
    from harmonycloak.watermark import load_key

    data_dir = tmp_path / "data"
    with client_for(data_dir, settings_for(models)) as c:
        first = upload(c, "a.wav", wav_bytes(), watermark=True).json()
        second = upload(c, "b.mid", midi_bytes(), watermark=True).json()   # MIDI: no payload used
        third = upload(c, "c.wav", wav_bytes(0.5, seed=1), watermark=True).json()
        assert (first["payload"], second["payload"], third["payload"]) == ("000000010001", None, "000000020001")
        done = wait_for(c, first["id"])
        assert done["status"] == "done", done["message"]
        mark = c.get(done["urls"]["report"]).json()["watermark"]
        assert any(f["key"] == "watermark" for f in done["figures"]["figures"])
        c.post(f"/api/jobs/{second['id']}/cancel")
        c.post(f"/api/jobs/{third['id']}/cancel")
    key_file = data_dir / "watermark.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (mark["payload"], mark["key_id"]) == ("000000010001", load_key(key_file).key_id)
    with client_for(data_dir, settings_for(models, watermark_issuer_id=0xABCD, start_worker=False)) as c:
        fourth = upload(c, "d.wav", wav_bytes(0.5, seed=2), watermark=True).json()
        assert fourth["payload"] == "00000003abcd"                    # never reused
        assert c.get("/api/info").json()["watermark_key"]["key_id"] == load_key(key_file).key_id


def _saved(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_rights_tags_go_into_every_download_format(client, tmp_path):
    from harmonycloak.rights.tags import read_tags

    job = upload(client, "tagged.wav", wav_bytes(), tags=True, owner="Ada Lovelace",
                 contact="https://ada.example/licence").json()
    done = wait_for(client, job["id"])
    report = client.get(done["urls"]["report"]).json()
    for fmt in ("flac", "mp3", "m4a"):
        response = client.get(done["urls"]["download"], params={"format": fmt})
        assert response.status_code == 200, response.text
        tags = read_tags(_saved(tmp_path / f"tagged.{fmt}", response.content))
        assert tags["owner"] == "Ada Lovelace" and tags["ai_training"] == "notAllowed"
        assert tags["contact"] == "https://ada.example/licence"
        assert tags["source_sha256"] == report["output"]["sha256"]    # linked to the protection


def test_rights_tags_need_an_owner(client, tmp_path):
    response = upload(client, "x.wav", wav_bytes(), tags=True, owner="  ")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("owner: give your name")
    assert not (tmp_path / "data" / "jobs").exists() or not any((tmp_path / "data" / "jobs").iterdir())


# ------------------------------------------------------------------ cancel and restart


def test_cancel_a_queued_job(tmp_path, models):
    with client_for(tmp_path / "data", settings_for(models, start_worker=False)) as c:
        job = upload(c, "a.wav", wav_bytes()).json()
        cancelled = c.post(f"/api/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["message"] == "cancelled before it started"
        assert c.delete(f"/api/jobs/{job['id']}").status_code == 200
        assert not job_folder(tmp_path / "data", job["id"]).exists()
        assert c.get(f"/api/jobs/{job['id']}").status_code == 404


def test_cancel_a_running_job_writes_nothing(tmp_path, models):
    data_dir = tmp_path / "data"
    with client_for(data_dir, settings_for(models, engine_override=SLOW)) as c:
        job = upload(c, "long.wav", wav_bytes()).json()
        running = wait_for(c, job["id"], ("running",), until=lambda j: j["step"] >= 2)
        assert running["eta_s"] is not None and running["eta_s"] > 0   # time left from the steps so far
        assert c.delete(f"/api/jobs/{job['id']}").status_code == 409    # cancel first
        assert c.post(f"/api/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
        done = wait_for(c, job["id"], timeout_s=30)
        assert done["status"] == "cancelled" and done["step"] < SLOW.inner_steps
    folder = job_folder(data_dir, job["id"])
    assert sorted(p.name for p in folder.iterdir()) == ["original.wav"]


def test_jobs_survive_a_restart_and_a_crashed_job_is_run_again(tmp_path, models):
    data_dir = tmp_path / "data"
    app = create_app(data_dir=data_dir, settings=settings_for(models, start_worker=False))
    with TestClient(app, base_url=BASE_URL, headers=HEADERS) as c:
        job = upload(c, "crash.wav", wav_bytes()).json()
    claimed = app.state.store.claim_next()                             # running when the server "dies"
    assert claimed.status == "running"
    (job_folder(data_dir, job["id"]) / "protected.flac").write_bytes(b"partial")
    del app
    restarted = create_app(data_dir=data_dir, settings=settings_for(models))
    again = restarted.state.store.get(job["id"])
    assert again.status == "queued" and again.message.startswith("restarted")
    assert not (job_folder(data_dir, job["id"]) / "protected.flac").exists()
    with TestClient(restarted, base_url=BASE_URL, headers=HEADERS) as c:
        assert wait_for(c, job["id"])["status"] == "done"
    with client_for(data_dir, settings_for(models)) as c:               # and after a clean restart
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "done"


def test_a_job_that_keeps_crashing_the_server_is_failed_with_the_reason(tmp_path, models):
    data_dir = tmp_path / "data"
    settings = settings_for(models, start_worker=False)
    app = create_app(data_dir=data_dir, settings=settings)
    with TestClient(app, base_url=BASE_URL, headers=HEADERS) as c:
        job_id = upload(c, "heavy.wav", wav_bytes()).json()["id"]
    for _ in range(2):
        assert app.state.store.claim_next().id == job_id
        app = create_app(data_dir=data_dir, settings=settings)
    job = app.state.store.get(job_id)
    assert job.status == "failed"
    assert job.message.startswith("heavy.wav: the app stopped 2 times while protecting this file")


# ------------------------------------------------------------------ names, limits, errors


@pytest.mark.parametrize("raw,shown", [
    ("../../evil.wav", "evil.wav"), ("..\\..\\evil.wav", "evil.wav"), ("/etc/passwd.wav", "passwd.wav"),
    ("C:\\Users\\me\\song.flac", "song.flac"), (".hidden.wav", "hidden.wav"), ("", "upload"),
    ("a<b>:c|d?.mid", "a_b__c_d_.mid"), ("tab\there.wav", "tab_here.wav"), ("Café.wav", "Café.wav"),
])
def test_display_names_are_safe(raw, shown):
    assert display_name(raw) == shown


def test_long_names_keep_their_suffix():
    name = display_name("x" * 500 + ".flac")
    assert len(name) == 120 and name.endswith(".flac")


@pytest.mark.parametrize("raw", ["../../../../evil.wav", "..%2F..%2Fevil.wav", "/tmp/evil.wav"])
def test_uploads_with_traversal_names_stay_in_the_data_folder(client, tmp_path, raw):
    response = upload(client, raw, wav_bytes(0.5))
    assert response.status_code == 201, response.text
    job = response.json()
    name = job["name"]
    assert "/" not in name and "\\" not in name and not name.startswith(".")  # one harmless component
    stored = [p for p in tmp_path.rglob("*.wav")]
    assert stored == [job_folder(tmp_path / "data", job["id"]) / "original.wav"]


def test_job_ids_in_urls_cannot_escape(client):
    for path in ("/api/jobs/..%2F..%2Fjobs.sqlite", "/api/jobs/../../etc/passwd/download",
                 "/api/jobs/0123456789abcdef/download"):
        assert client.get(path).status_code == 404


def test_uploads_over_the_limit_are_refused_with_413(tmp_path, models):
    with client_for(tmp_path / "data", settings_for(models, max_upload_mb=0.05, start_worker=False)) as c:
        big = wav_bytes(3.0)                                            # ~530 kB > 50 kB + slack
        response = c.post("/api/jobs", files={"file": ("big.wav", big, "audio/wav")},
                          headers={"X-File-Name": "big.wav"})
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert detail.startswith("big.wav (1 MB) is larger than this app's upload limit of 0.05 MB")
        assert "--max-upload-mb" in detail
        just_over = wav_bytes(0.6)                                      # ~106 kB: past the header check
        response = c.post("/api/jobs", files={"file": ("mid.wav", just_over, "audio/wav")})
        assert response.status_code == 413 and "mid.wav is larger than" in response.json()["detail"]
        assert c.get("/api/jobs").json()["jobs"] == []
    assert not (tmp_path / "data" / "jobs").exists() or not any((tmp_path / "data" / "jobs").iterdir())


def test_bad_files_get_the_command_lines_message(client, tmp_path, models, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = {"bad.wav": b"this is a text file, not audio\n", "notes.txt": b"hello\n",
             "broken.mid": b"MThd\x00\x00\x00\x06garbage", "empty.flac": b""}
    for name, data in cases.items():
        Path(name).write_bytes(data)
        code = main(["protect", name, "-o", f"out-{name}{'.mid' if name.endswith('.mid') else '.flac'}",
                     "--model", models["midi" if name.endswith(".mid") else "audio"]])
        cli_message = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
        assert code == 2 and cli_message.startswith(f"error: {name}")
        response = upload(client, name, data)
        assert response.status_code == 400
        assert response.json()["detail"] == cli_message.removeprefix("error: ")
    assert client.get("/api/jobs").json()["jobs"] == []
    assert not (tmp_path / "data" / "jobs").exists() or not any((tmp_path / "data" / "jobs").iterdir())


def test_a_failing_job_shows_the_pipeline_message_with_the_file_name(client):
    silent = io.BytesIO()
    sf.write(silent, np.zeros((44100, 2), dtype=np.float32), 44100, format="WAV", subtype="PCM_16")
    job = upload(client, "silence.wav", silent.getvalue()).json()
    done = wait_for(client, job["id"])
    assert done["status"] == "failed"
    assert done["message"].startswith("silence.wav: no sound loud enough to hide a perturbation under")
    assert "/jobs/" not in done["message"]                              # no internal paths


def test_unknown_preset_is_refused(client):
    response = upload(client, "a.wav", wav_bytes(0.5), preset="extreme-v9")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("--preset extreme-v9: unknown preset; use one of light-v1")


# ------------------------------------------------------------------ downloads


@pytest.fixture()
def two_done(client):
    audio = upload(client, "clip.wav", wav_bytes()).json()
    midi = upload(client, "song.mid", midi_bytes()).json()
    return [wait_for(client, audio["id"]), wait_for(client, midi["id"])]


def test_download_formats(client, two_done, tmp_path):
    audio = two_done[0]
    expected = {"flac": None, "wav": None, "mp3": 192, "ogg": 128, "m4a": 256}
    original = load_audio(_saved(tmp_path / "orig.flac", client.get(audio["urls"]["original"]).content))
    for fmt, kbps in expected.items():
        params = {"format": fmt} | ({"bitrate_kbps": kbps} if kbps else {})
        response = client.get(audio["urls"]["download"], params=params)
        assert response.status_code == 200, response.text
        assert f'filename="clip.protected.{fmt}"' in response.headers["content-disposition"]
        clip = load_audio(_saved(tmp_path / f"d.{fmt}", response.content))
        assert clip.sample_rate_hz == 44100 and clip.channels == 2
        assert abs(clip.num_samples - original.num_samples) <= 2048, fmt
    bad = client.get(audio["urls"]["download"], params={"format": "mp3", "bitrate_kbps": 17})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("bitrate 17 kbps: for mp3 choose one of 128")
    assert client.get(audio["urls"]["download"], params={"format": "aiff"}).status_code == 400


def test_download_all_as_zip(client, two_done):
    extra = upload(client, "clip.wav", wav_bytes(seed=3)).json()      # the same name again
    wait_for(client, extra["id"])
    response = client.get("/api/download.zip", params={"format": "mp3", "bitrate_kbps": 128})
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    names = sorted(zipfile.ZipFile(io.BytesIO(response.content)).namelist())
    assert names == ["clip (2).protected.mp3", "clip.protected.mp3", "reports/clip (2).protected.mp3.report.json",
                     "reports/clip.protected.mp3.report.json", "reports/song.protected.mid.report.json",
                     "song.protected.mid"]
    only = client.get("/api/download.zip", params={"format": "flac", "ids": two_done[1]["id"]})
    assert sorted(zipfile.ZipFile(io.BytesIO(only.content)).namelist()) == [
        "reports/song.protected.mid.report.json", "song.protected.mid"]


def test_zip_without_protected_files_says_so(client):
    response = client.get("/api/download.zip")
    assert response.status_code == 404 and "no protected files yet" in response.json()["detail"]


# ------------------------------------------------------------------ website files and audit


def test_policy_zip_has_the_opt_out_files(client):
    response = client.post("/api/policy.zip", json={"owner": "Ada", "policy_url": "https://ada.example/licence"})
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert {"robots.txt", "ai.txt", ".well-known/tdmrep.json"} <= set(archive.namelist())
    assert "User-agent: GPTBot" in archive.read("robots.txt").decode()
    assert json.loads(archive.read(".well-known/tdmrep.json")) == [
        {"location": "/", "tdm-reservation": 1, "tdm-policy": "https://ada.example/licence"}]
    bad = client.post("/api/policy.zip", json={"policy_url": "ftp://nope"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("--policy-url 'ftp://nope': give an http(s) URL")


def test_audit_of_a_folder(client, tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    (music / "song.wav").write_bytes(wav_bytes(0.5))
    response = client.post("/api/audit", json={"folder": str(music), "use_key": False})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["harmonycloak_audit"] == 1 and 0 <= report["score"] <= 100
    assert [t["name"] for t in report["tracks"]] and report["fixes"] and report["headline"]
    html = client.get("/api/audit/report.html")
    assert html.status_code == 200 and "How well is your music protected?" in html.text
    missing = client.post("/api/audit", json={"folder": str(tmp_path / "nope")})
    assert missing.status_code == 400 and missing.json()["detail"].endswith(
        "folder not found; give the folder that holds your music")
    no_key = client.post("/api/audit", json={"folder": str(music), "use_key": True})
    assert no_key.status_code == 400 and "no watermark key yet" in no_key.json()["detail"]


def test_audit_is_off_when_other_computers_can_connect(tmp_path, models):
    with TestClient(create_app(data_dir=tmp_path / "d", settings=settings_for(models, host="0.0.0.0")),
                    base_url="http://192.168.1.5:8765", headers=HEADERS) as c:
        assert c.get("/api/info").json()["audit_enabled"] is False
        assert c.post("/api/audit", json={"folder": str(tmp_path)}).status_code == 403


# ------------------------------------------------------------------ safety


def test_requests_from_other_sites_and_hosts_are_refused(client, tmp_path, models):
    page = client.get("/")
    assert page.status_code == 200 and "harmonycloak" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1
    assert client.get("/api/jobs", headers={"Host": "evil.example:8765"}).status_code == 421
    # cross-site requests: no custom header (a plain form post), or a foreign Origin
    plain = TestClient(client.app, base_url=BASE_URL)
    assert plain.post("/api/policy.zip", json={}).status_code == 403
    foreign = client.post("/api/policy.zip", json={}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    same = client.post("/api/policy.zip", json={}, headers={"Origin": BASE_URL})
    assert same.status_code == 200
    assert client.get("/api/jobs", headers={"Host": "localhost:8765"}).status_code == 200


def test_info_describes_presets_formats_and_limits(client):
    info = client.get("/api/info").json()
    assert [p["name"] for p in info["presets"]] == ["light-v1", "standard-v1", "strong-v1"]
    assert [p["iterations"] for p in info["presets"]] == [30, 100, 200]
    assert all(p["summary"] and p["cost"] for p in info["presets"])
    assert [f["name"] for f in info["formats"]] == ["flac", "wav", "mp3", "ogg", "m4a"]
    assert info["max_upload_mb"] == 200.0 and info["loopback"] is True and info["mode"] == "whitebox"


# ------------------------------------------------------------------ the command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host,warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_binds_loopback_and_warns_otherwise(tmp_path, models, monkeypatch, capsys, host, warned):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    port = _free_port()
    code = main(["serve", "--host", host, "--port", str(port), "--no-open", "--data-dir",
                 str(tmp_path / "d"), "--model", models["audio"], "--model", models["midi"],
                 "--max-upload-mb", "12"])
    err = capsys.readouterr().err
    assert code == 0, err
    app, kwargs = calls[0]
    assert (kwargs["host"], kwargs["port"]) == (host, port)
    assert app.state.settings.model_dirs == models and app.state.settings.max_upload_mb == 12
    assert ("warning: --host" in err) is warned
    assert f"http://127.0.0.1:{port}/" in err


def test_serve_refuses_a_busy_port_and_two_models_of_one_kind(tmp_path, models, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--port", str(port), "--no-open", "--data-dir", str(tmp_path / "d")])
        assert code == 2 and f"--port {port}: cannot listen" in capsys.readouterr().err
    code = main(["serve", "--no-open", "--model", models["audio"], "--model", models["audio"]])
    assert code == 2 and "an audio model was already given" in capsys.readouterr().err


# ------------------------------------------------------------------ the queue itself


def _queued(store, name="a.wav"):
    from harmonycloak.web.storage import new_job_id

    return store.add(job_id=new_job_id(), name=name, kind="audio", suffix=".wav",
                     options={"preset": "light-v1"}, info={})


def test_time_left_comes_from_the_steps_so_far(tmp_path):
    from harmonycloak.web.jobs import JobStore

    store = JobStore(tmp_path)
    job = _queued(store)
    assert store.claim_next().id == job.id
    store.set_stage(job.id, "optimizing")
    store.set_progress(job.id, 1, 5)
    assert store.get(job.id).eta_s is None               # one step is not enough to tell
    time.sleep(0.2)
    store.set_progress(job.id, 2, 5)
    running = store.get(job.id)
    assert 0.25 <= running.eta_s <= 2.0                  # 3 steps to go at ~0.1 s a step
    assert running.progress == pytest.approx(0.05 + 0.85 * 2 / 5)
    store.set_progress(job.id, 5, 5)
    assert store.get(job.id).eta_s == 0
    store.set_stage(job.id, "verifying the written file")
    assert store.get(job.id).progress == pytest.approx(0.95)


def test_worker_outcomes(tmp_path):
    from harmonycloak.errors import InputError
    from harmonycloak.web.jobs import JobStore, Worker

    store = JobStore(tmp_path)
    cleaned = []

    def runner(job, check):
        if job.name == "late-cancel.wav":
            store.request_cancel(job.id)                 # cancelled after its last step
        if job.name == "bad.wav":
            raise InputError("/internal/original.wav: too quiet")
        if job.name == "bug.wav":
            raise ZeroDivisionError("oops")
        return {"figures": []}

    worker = Worker(store, runner, describe_error=lambda job, e: str(e).replace("/internal/original.wav", job.name),
                    on_cancel=lambda job: cleaned.append(job.name))
    expected = {"ok.wav": "done", "late-cancel.wav": "cancelled", "bad.wav": "failed", "bug.wav": "failed"}
    for name in expected:
        _queued(store, name)
    results = {}
    while (job := store.claim_next()) is not None:
        results[job.name] = (worker.run_one(job), store.get(job.id))
    assert {name: r[0] for name, r in results.items()} == expected
    assert results["bad.wav"][1].message == "bad.wav: too quiet"
    assert results["bug.wav"][1].message.startswith("bug.wav: internal error (ZeroDivisionError: oops)")
    assert results["late-cancel.wav"][1].figures is None
    assert sorted(cleaned) == ["bad.wav", "bug.wav", "late-cancel.wav"]   # outputs removed


def test_spectrogram_levels_are_calibrated():
    from harmonycloak.web.spectrogram import spectrogram_db, spectrograms_png

    rate = 16000
    t = np.arange(rate) / rate
    sine = np.sin(2 * np.pi * 1000.0 * t)[None].astype(np.float32)
    db, s_per_frame, hz_per_bin = spectrogram_db(sine, rate, n_fft=1024)
    peak_bin = int(np.argmax(db[:, db.shape[1] // 2]))
    assert peak_bin * hz_per_bin == pytest.approx(1000.0, abs=hz_per_bin)
    assert db[peak_bin, db.shape[1] // 2] == pytest.approx(0.0, abs=1.5)   # full-scale sine ~ 0 dB
    assert spectrogram_db(np.zeros((1, rate)), rate)[0].max() == pytest.approx(-100.0)
    assert spectrograms_png(sine, sine * 1.01, rate)[:8] == b"\x89PNG\r\n\x1a\n"


def test_visqol_figure_ranks_added_noise_below_a_clean_copy():
    pytest.importorskip("visqol", reason="visqol-python (the bench extra) is not installed")
    from harmonycloak.web.figures import visqol_score

    rate = 48000
    music = music_like(rate, 1, 3.0, seed=5)
    noisy = music + 0.05 * np.random.default_rng(0).standard_normal(music.shape).astype(np.float32)
    same, worse = visqol_score(music, music.copy(), rate), visqol_score(music, noisy, rate)
    assert same > 4.5 and worse < same - 0.3


def test_embedding_shift_job_carries_the_2d_view(tmp_path, models):
    from harmonycloak.targets.embedding import ContrastiveEncoderConfig, ContrastiveMusicEncoder

    ContrastiveMusicEncoder(ContrastiveEncoderConfig.tiny(), seed=0).save(tmp_path / "clap-shift")
    with client_for(tmp_path / "data", settings_for({**models, "audio": str(tmp_path / "clap-shift")})) as c:
        done = wait_for(c, upload(c, "take.wav", wav_bytes()).json()["id"])
        assert done["status"] == "done", done["message"]
        view = done["figures"]["embedding_view"]
        report = c.get(done["urls"]["report"]).json()
        assert report["target"] == "clap-shift"
        assert view == report["verification"]["embedding_view"]
        assert len(view["clean"]) == len(view["protected"]) >= 1 and view["clean"] != view["protected"]
        ratio = next(f for f in done["figures"]["figures"] if f["key"] == "loss_ratio")
        assert "embedding similarity" in ratio["label"]


def test_other_targets_have_no_embedding_view(client):
    done = wait_for(client, upload(client, "take.wav", wav_bytes()).json()["id"])
    assert done["figures"]["embedding_view"] is None
