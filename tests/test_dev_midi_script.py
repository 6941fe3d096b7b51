"""scripts/make_dev_midi.py on two tiny pieces (skipped without music21)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

from harmonycloak.io.midi import load_midi

pytest.importorskip("music21")



@pytest.fixture(scope="module")
def script():
    yield from load_script("make_dev_midi")


def test_converts_one_chorale_and_one_folk_song(script, tmp_path: Path, capsys) -> None:
    out = tmp_path / "midi"
    assert script.main(["--limit", "1", "--collections", "bach", "essen", "--out", str(out)]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mid"))
    assert files == ["bach/bwv1.6.mid", "essen/altdeu10/0001.mid"]
    chorale = load_midi(out / files[0], grouping="instrument")
    assert chorale.tracks == 5 and chorale.onsets.sum() > 100  # bwv1.6 has five parts
    printed = capsys.readouterr().out
    assert "total" in printed and "As MuseGAN's five tracks" in printed and "Piano" in printed


def test_output_is_deterministic(script, tmp_path: Path) -> None:
    for run in ("a", "b"):
        script.main(["--limit", "1", "--collections", "essen", "--out", str(tmp_path / run)])
    first = tmp_path / "a" / "essen" / "altdeu10" / "0001.mid"
    assert first.read_bytes() == (tmp_path / "b" / "essen" / "altdeu10" / "0001.mid").read_bytes()


def test_rejects_a_negative_limit(script) -> None:
    with pytest.raises(SystemExit):
        script.main(["--limit", "-1"])
