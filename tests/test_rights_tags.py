"""Rights tags: every format, read back by FFmpeg (PyAV), audio untouched, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from harmonycloak.cli.app import main
from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError
from harmonycloak.io.audio import load_audio, save_audio
from harmonycloak.rights.tags import (
    RightsInfo, check_url, default_copyright, normalize_isrc, read_tags, tag_file,
)

FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "m4a")
INFO = RightsInfo(owner="Jane Doe", licence_url="https://jane.example/licence",
                  contact="mailto:jane@example.com", isrc="USRC17607839")


def _signal(rate_hz: int, seconds: float = 0.3, freq_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    x = 0.3 * np.sin(2 * np.pi * freq_hz * t) + 0.1 * np.sin(2 * np.pi * 3.1 * freq_hz * t + 1.0)
    return np.stack([x, np.roll(x, 37)]).astype(np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tag-sources")
    out = {}
    for suffix in FORMATS:
        rate = 48000 if suffix == "opus" else 44100
        out[suffix] = save_audio(AudioClip(_signal(rate), rate), folder / f"a.{suffix}")
    return out


def _ffmpeg_metadata(path: Path) -> dict[str, str]:
    """Container and stream metadata as FFmpeg (the library inside ffprobe) reads it."""
    with av.open(str(path)) as container:
        found = {k.upper(): v for k, v in container.metadata.items()}
        found.update({k.upper(): v for k, v in container.streams.audio[0].metadata.items()})
    return found


@pytest.mark.parametrize("suffix", FORMATS)
def test_tags_are_written_read_back_and_seen_by_ffmpeg(sources, tmp_path, suffix):
    src = sources[suffix]
    before = src.read_bytes()
    out, fields = tag_file(src, tmp_path / f"tagged.{suffix}", INFO)
    assert src.read_bytes() == before  # the input is never touched
    assert read_tags(out) == fields
    assert fields["owner"] == "Jane Doe" and fields["ai_training"] == "notAllowed"
    assert fields["copyright"].startswith(f"{fields['copyright'][:4]} Jane Doe")
    meta = _ffmpeg_metadata(out)
    assert meta["RIGHTS_OWNER"] == "Jane Doe"
    assert meta["AI_TRAINING"] == "notAllowed"
    assert meta["TDM_RESERVATION"] == "1"
    assert meta["LICENSE"] == "https://jane.example/licence"
    assert meta["COPYRIGHT"] == fields["copyright"]
    assert meta.get("ISRC", meta.get("TSRC")) == "USRC17607839"


@pytest.mark.parametrize("suffix", FORMATS)
def test_tagging_never_reencodes_the_audio(sources, tmp_path, suffix):
    out, _ = tag_file(sources[suffix], tmp_path / f"tagged.{suffix}", INFO)
    original, tagged = load_audio(sources[suffix]), load_audio(out)
    assert tagged.sample_rate_hz == original.sample_rate_hz
    np.testing.assert_array_equal(tagged.samples, original.samples)


def test_id3_uses_the_native_frames(sources, tmp_path):
    from mutagen.id3 import ID3

    out, _ = tag_file(sources["mp3"], tmp_path / "t.mp3", INFO)
    tags = ID3(out)
    assert tags.version[:2] == ID3(sources["mp3"]).version[:2]  # FFmpeg wrote 2.4: kept
    assert tags.getall("WCOP")[0].url == "https://jane.example/licence"
    assert tags.getall("TSRC")[0].text == ["USRC17607839"]
    assert tags.getall("TCOP")[0].text[0].endswith("text and data mining.")
    assert {f.desc for f in tags.getall("TXXX")} >= {"RIGHTS_OWNER", "AI_TRAINING", "CONTACT"}


def test_wav_carries_an_id3_chunk_and_mp4_freeform_atoms(sources, tmp_path):
    from mutagen.mp4 import MP4
    from mutagen.wave import WAVE

    wav, _ = tag_file(sources["wav"], tmp_path / "t.wav", INFO)
    assert b"id3 " in wav.read_bytes() or b"ID3 " in wav.read_bytes()
    assert WAVE(wav).tags.getall("TCOP")
    assert WAVE(wav).tags.version[:2] == (2, 3)  # new tags are ID3v2.3, which every player reads
    m4a, _ = tag_file(sources["m4a"], tmp_path / "t.m4a", INFO)
    atoms = MP4(m4a).tags
    assert atoms["cprt"][0].startswith(str(atoms["cprt"][0][:4]))
    assert bytes(atoms["----:com.apple.iTunes:AI_TRAINING"][0]) == b"notAllowed"


def test_other_tags_are_kept_and_missing_fields_keep_their_value(sources, tmp_path):
    from mutagen.flac import FLAC

    first, _ = tag_file(sources["flac"], tmp_path / "first.flac", INFO)
    audio = FLAC(first)
    audio["TITLE"] = "Song for Tests"
    audio.save()
    second, fields = tag_file(first, tmp_path / "second.flac", RightsInfo(owner="Jane Doe Music"))
    tags = read_tags(second)
    assert FLAC(second)["TITLE"] == ["Song for Tests"]
    assert tags["owner"] == "Jane Doe Music"
    assert tags["isrc"] == "USRC17607839"  # not given the second time: kept
    assert "isrc" not in fields


def test_in_place_replaces_the_file_atomically(sources, tmp_path):
    song = tmp_path / "song.ogg"
    song.write_bytes(sources["ogg"].read_bytes())
    written, _ = tag_file(song, None, INFO)
    assert written == song
    assert read_tags(song)["owner"] == "Jane Doe"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.ogg"]  # no temporary left


def test_a_failure_after_tagging_leaves_nothing_behind(sources, tmp_path):
    def boom(tmp: Path) -> None:
        raise InputError("signing failed")

    target = tmp_path / "out.flac"
    with pytest.raises(InputError, match="signing failed"):
        tag_file(sources["flac"], target, INFO, after=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("output", "message"), [
    ("out.wav", "must end in .mp3"),
    (None, "already exists; use --force"),
])
def test_bad_outputs_are_refused(sources, tmp_path, output, message):
    existing = tmp_path / "exists.mp3"
    existing.write_bytes(b"keep me")
    target = tmp_path / output if output else existing
    with pytest.raises(InputError, match=message):
        tag_file(sources["mp3"], target, INFO)
    assert existing.read_bytes() == b"keep me"


def test_output_equal_to_input_needs_in_place(sources):
    with pytest.raises(InputError, match="--in-place"):
        tag_file(sources["mp3"], sources["mp3"], INFO)


def test_files_without_a_tag_container_are_refused(tmp_path):
    text = tmp_path / "lyrics.mp3"
    text.write_text("la la la\n" * 50)
    with pytest.raises(InputError, match=str(text)):
        tag_file(text, tmp_path / "out.mp3", INFO)


def test_isrc_and_urls_are_validated():
    assert normalize_isrc("us-rc1-76-07839") == "USRC17607839"
    with pytest.raises(InputError, match="CC-XXX-YY-NNNNN"):
        normalize_isrc("US-RC1-76-0783")
    assert check_url("--contact", "jane@example.com", allow_email=True) == "jane@example.com"
    with pytest.raises(InputError, match="--licence-url"):
        check_url("--licence-url", "jane.example/licence")
    assert default_copyright("Jane", year=2025).startswith("2025 Jane. All rights reserved")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_tag_prints_one_json_object(sources, tmp_path, capsys):
    out_path = tmp_path / "song.tagged.opus"
    code, out, _ = _run(["rights", "tag", str(sources["opus"]), "-o", str(out_path),
                         "--owner", "Jane Doe", "--isrc", "US-RC1-76-07839", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["output"] == str(out_path) and data["tags"]["isrc"] == "USRC17607839"
    assert data["c2pa"] is None
    assert _ffmpeg_metadata(out_path)["RIGHTS_OWNER"] == "Jane Doe"


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give -o OUT"),
    (["--in-place", "-o", "x.mp3"], "not both"),
    (["-o", "x.mp3", "--isrc", "12"], "--isrc"),
    (["-o", "x.mp3", "--c2pa-key", "k.pem"], "go together"),
])
def test_cli_tag_bad_input_is_one_line_exit_2(sources, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / e) if e.endswith((".mp3", ".pem")) else e for e in extra]
    code, out, err = _run(["rights", "tag", str(sources["mp3"]), "--owner", "Jane", *extra], capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
