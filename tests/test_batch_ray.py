"""The Ray backend (issue 9) on a local Ray instance: the same folder gives the same bytes
as the local process pool, the driver writes outputs and reports into place and records
the state; failed files are reported the same way.

Ray is optional (``harmonycloak[ray]``): without it this module is skipped, except in CI
(``CI=true``), where a missing Ray is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import soundfile as sf

try:
    import ray
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("ray is not installed: pip install 'harmonycloak[ray]' to test the Ray backend",
                allow_module_level=True)

from conftest import music_like
from test_batch import FAST, album, files_under

from harmonycloak.batch import JobSettings, plan_files, run_batch
from harmonycloak.batch.state import load_jobs
from harmonycloak.io.files import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from harmonycloak.targets import MuseGANConfig, MuseGANTarget
    from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget

    root = tmp_path_factory.mktemp("models")
    MuseGANTarget(MuseGANConfig.tiny(), seed=0).save(root / "gan")
    CodecLMTarget(CodecLMConfig.tiny(), seed=0).save(root / "codec")
    return {"midi": root / "gan", "audio": root / "codec"}


def _comparable(report: dict) -> dict:
    """A report without what differs between two runs by nature: timing and the output
    folder's name."""
    return {k: v for k, v in report.items() if k not in ("seconds", "output")} | {
        "output_sha256": report["output"]["sha256"]}


def test_ray_gives_the_local_backends_bytes(tmp_path, local_ray, models):
    src = album(tmp_path, 2)  # two MIDI files and a corrupt one
    sf.write(src / "disc2" / "take.flac", music_like(44100, 2, 0.6, seed=4).T, 44100,
             subtype="PCM_24")
    settings = JobSettings(config=FAST, mode="whitebox", midi_model_dir=str(models["midi"]),
                           audio_model_dir=str(models["audio"]), seed=11, device="cpu")
    local = run_batch(plan_files([src], tmp_path / "local"), settings, backend="local", workers=1)
    remote = run_batch(plan_files([src], tmp_path / "ray"), settings, backend="ray")

    good = ["disc1/song0.mid", "disc2/song1.mid", "disc2/take.flac"]
    assert sorted(local.protected) == sorted(remote.protected) == good
    assert [f.relative for f in remote.failed] == ["bad.mid"]
    assert remote.failed[0].reason == local.failed[0].reason   # the same message, from the task
    assert files_under(tmp_path / "ray") == files_under(tmp_path / "local")
    for rel in good:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel
        ours = json.loads((tmp_path / "ray" / f"{rel}.report.json").read_text())
        theirs = json.loads((tmp_path / "local" / f"{rel}.report.json").read_text())
        assert _comparable(ours) == _comparable(theirs)
        assert ours["output"]["path"] == str(tmp_path / "ray" / rel)   # real paths, not the task's
        assert ours["input"]["path"] == str(src / rel)
        assert ours["output"]["sha256"] == sha256_file(tmp_path / "ray" / rel)
    jobs = load_jobs(tmp_path / "ray")
    assert {p: r.status for p, r in jobs.items()} == {**{p: "done" for p in good}, "bad.mid": "failed"}
    assert remote.audio_s == pytest.approx(0.6, abs=1e-3)

    again = run_batch(plan_files([src], tmp_path / "ray"), settings, backend="ray")
    assert again.protected == [] and sorted(again.already_done) == good
