"""C2PA: a local chain, signed manifests in WAV/MP3/FLAC/M4A, validation, tampering."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import av
import numpy as np
import pytest

from harmonycloak.cli.app import main
from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.io.audio import load_audio, save_audio
from harmonycloak.rights import c2pa as hc_c2pa
from harmonycloak.rights import load_report
from harmonycloak.rights.tags import RightsInfo, read_tags, tag_file

c2pa = pytest.importorskip("c2pa")

SIGNABLE = ("wav", "mp3", "flac", "m4a")


def _signal(rate_hz: int, seconds: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    x = 0.3 * np.sin(2 * np.pi * 523.25 * t) + 0.05 * np.sin(2 * np.pi * 1800 * t)
    return np.stack([x, -x]).astype(np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("c2pa-sources")
    out = {}
    for suffix in (*SIGNABLE, "ogg", "opus"):
        rate = 48000 if suffix == "opus" else 44100
        out[suffix] = save_audio(AudioClip(_signal(rate), rate), folder / f"song.{suffix}")
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> hc_c2pa.SigningFiles:
    return hc_c2pa.init_signing_chain(tmp_path_factory.mktemp("keys"), owner="Jane Doe")


@pytest.fixture(scope="module")
def credentials(keys) -> hc_c2pa.SigningCredentials:
    return hc_c2pa.load_credentials(keys.key, keys.chain)


def _sign_copy(src: Path, out: Path, credentials, report=None) -> Path:
    info = RightsInfo(owner="Jane Doe", licence_url="https://jane.example/licence")
    plan = hc_c2pa.plan_manifest(title=out.name, rights=info.fields(), protection=report)
    written, _ = tag_file(src, out, info, after=lambda tmp: hc_c2pa.sign_in_place(
        tmp, credentials=credentials, plan=plan, parent_title=src.name))
    return written


def test_init_writes_a_chain_c2pa_accepts(keys):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    assert stat.S_IMODE(os.stat(keys.key).st_mode) == 0o600
    leaf, intermediate = x509.load_pem_x509_certificates(keys.chain.read_bytes())
    root = x509.load_pem_x509_certificate(keys.root.read_bytes())
    assert leaf.issuer == intermediate.subject and intermediate.issuer == root.subject
    assert leaf.issuer != leaf.subject  # C2PA refuses self-signed signers
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in usages
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    with pytest.raises(InputError, match="already exists; use --force"):
        hc_c2pa.init_signing_chain(keys.key.parent)


@pytest.mark.parametrize("suffix", SIGNABLE)
def test_signed_copy_validates_and_keeps_audio_and_tags(sources, credentials, keys, tmp_path, suffix):
    out = _sign_copy(sources[suffix], tmp_path / f"signed.{suffix}", credentials)
    status = hc_c2pa.read_manifest(out)
    assert status.state == "valid", status.failures
    assert status.expected == ["signingCredential.untrusted"]  # local root: not on a trust list
    assert status.reserves_training
    assert status.rights["xmpRights:Owner"] == ["Jane Doe"]
    assert hc_c2pa.read_manifest(out, trust_anchor=keys.root).state == "trusted"
    np.testing.assert_array_equal(load_audio(out).samples, load_audio(sources[suffix]).samples)
    assert read_tags(out)["owner"] == "Jane Doe"
    with av.open(str(out)) as container:  # FFmpeg still reads the file and its tags
        assert {k.upper() for k in container.metadata} >= {"RIGHTS_OWNER", "AI_TRAINING"}


@pytest.mark.parametrize("suffix", SIGNABLE)
def test_c2pa_reader_sees_the_training_mining_assertion(sources, credentials, tmp_path, suffix):
    out = _sign_copy(sources[suffix], tmp_path / f"signed.{suffix}", credentials)
    with c2pa.Reader(str(out)) as reader:  # the library itself, not our wrapper
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    manifest = store["manifests"][store["active_manifest"]]
    entries = next(a["data"]["entries"] for a in manifest["assertions"]
                   if a["label"] == "cawg.training-mining")
    assert {k: v["use"] for k, v in entries.items()} == {
        "cawg.ai_training": "notAllowed", "cawg.ai_generative_training": "notAllowed",
        "cawg.data_mining": "notAllowed"}
    assert state == "Valid"


@pytest.mark.parametrize("suffix", SIGNABLE)
def test_a_changed_byte_after_signing_is_tampering(sources, credentials, tmp_path, suffix):
    out = _sign_copy(sources[suffix], tmp_path / f"signed.{suffix}", credentials)
    data = bytearray(out.read_bytes())
    data[_audio_offset(bytes(data), suffix)] ^= 0x01  # one bit of the audio data
    out.write_bytes(bytes(data))
    status = hc_c2pa.read_manifest(out)
    assert status.state == "tampered"
    assert any(f["code"].endswith("Hash.mismatch") for f in status.failures)


def _audio_offset(data: bytes, suffix: str) -> int:
    """A byte inside the coded audio, away from the metadata where the manifest lives."""
    if suffix == "wav":
        return data.index(b"data") + 1000
    if suffix == "m4a":
        return data.index(b"mdat") + 1000
    return len(data) - 300  # MP3 and FLAC: frames run to the end of the file


def test_the_protection_is_recorded_as_an_action(sources, credentials, tmp_path):
    protected = sources["mp3"]
    report_path = tmp_path / "song.mp3.report.json"
    sha = hashlib.sha256(protected.read_bytes()).hexdigest()
    report_path.write_text(json.dumps({
        "harmonycloak_report": 1, "version": "0.1.0",
        "input": {"path": "song.wav", "sha256": "ab" * 32},
        "output": {"path": str(protected), "sha256": sha},
        "mode": "blackbox", "target": "musicgen", "preset": "standard-v1", "seed": 7,
        "watermark": {"payload": "c0ffee"}}))
    report = load_report(report_path)
    out = _sign_copy(protected, tmp_path / "final.mp3", credentials, report=report)
    status = hc_c2pa.read_manifest(out)
    assert [a["action"] for a in status.actions] == ["c2pa.opened", "c2pa.edited", "c2pa.edited.metadata"]
    assert status.protection["report_sha256"] == report.sha256
    assert status.protection["protected_sha256"] == sha
    assert status.protection["preset"] == "standard-v1" and status.protection["watermarked"] is True


def test_signing_a_signed_file_again_chains_the_manifests(sources, credentials, tmp_path):
    first = _sign_copy(sources["flac"], tmp_path / "first.flac", credentials)
    second = _sign_copy(first, tmp_path / "second.flac", credentials)
    status = hc_c2pa.read_manifest(second)
    assert status.state == "valid" and status.manifests == 2


@pytest.mark.parametrize("suffix", ["ogg", "opus"])
def test_ogg_and_opus_cannot_carry_c2pa(sources, suffix):
    with pytest.raises(InputError, match="WAV, MP3, FLAC and M4A"):
        hc_c2pa.check_signable(sources[suffix])
    assert hc_c2pa.read_manifest(sources[suffix]).state == "unsupported"
    assert hc_c2pa.read_manifest(sources["wav"]).state == "none"


def test_bad_credentials_are_refused(keys, tmp_path):
    other = hc_c2pa.init_signing_chain(tmp_path / "other")
    with pytest.raises(InputError, match="does not belong"):
        hc_c2pa.load_credentials(other.key, keys.chain)
    with pytest.raises(InputError, match="rights init"):
        hc_c2pa.load_credentials(tmp_path / "missing.key", keys.chain)
    with pytest.raises(InputError, match="self-signed"):
        _self_signed(tmp_path)


def _self_signed(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "me.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "me.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    hc_c2pa.load_credentials(tmp_path / "me.key", tmp_path / "me.pem")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_init_tag_and_verify(sources, tmp_path, capsys):
    keydir = tmp_path / "keys"
    code, out, _ = _run(["rights", "init", "-o", str(keydir), "--owner", "Jane Doe", "--json"], capsys)
    assert code == 0
    files = json.loads(out)
    signed = tmp_path / "song.signed.m4a"
    code, out, _ = _run(["rights", "tag", str(sources["m4a"]), "-o", str(signed), "--owner", "Jane Doe",
                         "--contact", "https://jane.example", "--c2pa-key", files["key"],
                         "--c2pa-cert", files["cert"], "--json"], capsys)
    assert code == 0
    assert json.loads(out)["c2pa"]["state"] == "valid"
    code, out, _ = _run(["rights", "verify", str(signed), "--json"], capsys)
    verified = json.loads(out)
    assert code == 0 and verified["state"] == "valid" and verified["reserves_training"]
    assert verified["tags"]["contact"] == "https://jane.example"
    code, out, _ = _run(["rights", "verify", str(signed), "--trust", files["root"], "--json"], capsys)
    assert json.loads(out)["state"] == "trusted"
    code, out, _ = _run(["rights", "verify", str(signed)], capsys)
    assert code == 0 and "notAllowed" in out


def test_cli_refuses_c2pa_for_ogg_with_one_line(sources, keys, tmp_path, capsys):
    code, out, err = _run(["rights", "tag", str(sources["ogg"]), "-o", str(tmp_path / "x.ogg"),
                           "--owner", "Jane", "--c2pa-key", str(keys.key), "--c2pa-cert",
                           str(keys.chain)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "C2PA" in err and not (tmp_path / "x.ogg").exists()


def test_without_c2pa_python_reading_is_unavailable_and_signing_says_how_to_install(
        sources, credentials, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "c2pa", None)  # as if the package were not installed
    assert hc_c2pa.read_manifest(sources["mp3"]).state == "unavailable"
    with pytest.raises(InputError, match="pip install"):
        _sign_copy(sources["mp3"], tmp_path / "x.mp3", credentials)
    assert not (tmp_path / "x.mp3").exists()
