"""Black-box protection (issue 4): the surrogate bags, the meta-learning loop, and
`protect` without a named model, on tiny bags and synthetic music."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import music_like
from harmonycloak.config import BlackBoxConfig, preset
from harmonycloak.errors import InputError
from harmonycloak.perturb.optimize import MetaSettings, meta_min_min
from harmonycloak.pipeline import BlackBoxChoice, blackbox_iterations, protect, protect_audio, protect_midi
from harmonycloak.targets.bag import (
    AUDIO_BAG,
    AUDIO_MODEL_RATE_HZ,
    MIDI_BAG,
    ContrastiveTarget,
    SurrogateSpec,
    build_bag,
)
from harmonycloak.targets.codec_lm import CodecLMConfig
from harmonycloak.targets.embedding import ContrastiveEncoderConfig
from harmonycloak.targets.latent_diffusion import LatentDiffusionConfig
from harmonycloak.targets.musegan import MuseGANConfig
from harmonycloak.targets.symbolic_lm import SymbolicLMConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_AUDIO_BAG = (
    SurrogateSpec("codec-lm", "tiny codec a", CodecLMConfig.tiny()),
    SurrogateSpec("codec-lm", "tiny codec b", replace(CodecLMConfig.tiny(), d_model=16, n_heads=2)),
    SurrogateSpec("latent-diffusion", "tiny diffusion", LatentDiffusionConfig.tiny()),
    SurrogateSpec("contrastive", "tiny encoder", replace(ContrastiveEncoderConfig.tiny(), window_s=0.5)),
)
TINY_MIDI_BAG = (
    SurrogateSpec("musegan", "tiny gan", MuseGANConfig.tiny()),
    SurrogateSpec("symbolic-lm", "tiny lm", SymbolicLMConfig.tiny()),
    SurrogateSpec("symbolic-lm", "tiny lm 1 layer", replace(SymbolicLMConfig.tiny(), n_layers=1)),
)
FAST = replace(preset("light-v1"), blackbox=BlackBoxConfig(rounds=2, sample_size=3, meta_train_steps=2,
                                                           meta_test_steps=1, batch_size=2))


def test_the_default_bags_have_ten_diverse_members():
    for bag, families in ((AUDIO_BAG, {"codec-lm", "latent-diffusion", "contrastive"}),
                          (MIDI_BAG, {"musegan", "symbolic-lm"})):
        assert len(bag) == 10 and {s.family for s in bag} == families
        assert len({s.label for s in bag}) == 10 and len({repr(s.config) for s in bag}) == 10


def _flat(state, prefix=""):
    """Tensors of a (nested) state dict by dotted key."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[prefix + key] = value
    return out


def test_build_bag_is_seeded_and_every_member_gives_gradients():
    first, again = build_bag(TINY_AUDIO_BAG, seed=3), build_bag(TINY_AUDIO_BAG, seed=3)
    other = build_bag(TINY_AUDIO_BAG, seed=4)
    x = (0.1 * torch.randn(2, 1, AUDIO_MODEL_RATE_HZ, generator=torch.Generator().manual_seed(0)))
    for a, b, c in zip(first, again, other):
        sa, sb, sc = _flat(a.state_dict()), _flat(b.state_dict()), _flat(c.state_dict())
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].dtype.is_floating_point)
        probe = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(a.loss(probe), probe)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_build_bag_refuses_an_unknown_family_and_an_empty_bag():
    with pytest.raises(InputError, match="surrogate family 'vae'"):
        build_bag((SurrogateSpec("vae", "x", None),), seed=0)
    with pytest.raises(InputError, match="bag is empty"):
        build_bag((), seed=0)


def test_contrastive_target_loss_falls_when_it_trains_and_leaves_theta_frozen_in_loss():
    target = ContrastiveTarget(replace(ContrastiveEncoderConfig.tiny(), window_s=0.5), seed=0)
    x = torch.from_numpy(music_like(AUDIO_MODEL_RATE_HZ, 1, 4.0, seed=1))[None].repeat(2, 1, 1)
    probe = x.clone().requires_grad_(True)
    target.loss(probe).backward()
    assert probe.grad is not None and all(p.grad is None for p in target.encoder.parameters())
    losses = [target.train_step(x) for _ in range(30)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def _quadratic_members(n: int):
    """Members whose loss is ||x - c_i||²: the meta loop must move x toward the centres."""
    class Member:
        def __init__(self, centre):
            self.centre, self.trained = centre, 0

        def loss(self, x):
            return ((x - self.centre) ** 2).mean()

        def example_losses(self, x):
            return ((x - self.centre) ** 2).flatten(1).mean(1)

        def train_step(self, x):
            self.trained += 1
            return float(self.loss(x))

    return [Member(torch.full((1, 4), 0.5 + 0.01 * i)) for i in range(n)]


class _Box:
    """δ = 0.8 · sigmoid(p) - 0.4 in a 4-vector (a stand-in perturbation)."""

    def init_params(self):
        return torch.zeros(1, 4, requires_grad=True)

    def apply(self, x, p):
        return x + 0.8 * torch.sigmoid(p) - 0.4

    def step_scale(self, p):
        s = torch.sigmoid(p.detach())
        return (0.8 * s * (1 - s)).clamp_min(1e-6)


def test_meta_min_min_lowers_every_members_loss_samples_q_and_reports_phases():
    members = _quadratic_members(5)
    settings = MetaSettings(rounds=4, sample_size=3, outer_steps=1, meta_train_steps=3,
                            meta_test_steps=2, pgd_step=0.02, batch_size=1)
    seen = []
    x = torch.zeros(1, 4)
    result = meta_min_min(x, _Box(), members, to_model=lambda y: y,
                          regularizer=lambda p: torch.zeros(()), alphas=[0.3] * 5,
                          settings=settings, generator=torch.Generator().manual_seed(0),
                          on_iteration=seen.append)
    with torch.no_grad():
        before = [float(m.loss(_Box().apply(x, _Box().init_params()))) for m in members]
    after = [float(m.loss(_Box().apply(x, result.params))) for m in members]
    assert all(a < b for a, b in zip(after, before))
    assert len(seen) == 4 * 5 and [s["phase"] for s in seen[:5]] == ["meta-train"] * 3 + ["meta-test"] * 2
    assert all(len(row["members"]) == 3 and row["held_out"] == row["members"][-1] for row in result.history)
    assert sum(m.trained for m in members) == 4 * 3  # every sampled member trains once a round


def test_meta_min_min_is_deterministic_for_a_seed():
    settings = MetaSettings(rounds=3, sample_size=3, outer_steps=1, meta_train_steps=2,
                            meta_test_steps=1, pgd_step=0.02, batch_size=1)

    def run(seed):
        return meta_min_min(torch.zeros(1, 4), _Box(), _quadratic_members(5), to_model=lambda y: y,
                            regularizer=lambda p: torch.zeros(()), alphas=[0.3] * 5, settings=settings,
                            generator=torch.Generator().manual_seed(seed)).history

    assert run(1) == run(1)
    assert [r["members"] for r in run(1)] != [r["members"] for r in run(2)]


def test_blackbox_config_rejects_bad_values():
    with pytest.raises(InputError, match="sample_size=1"):
        BlackBoxConfig(sample_size=1)
    with pytest.raises(InputError, match="pgd_batch=0"):
        BlackBoxConfig(pgd_batch=0)
    with pytest.raises(InputError, match="pgd_step=-1"):
        BlackBoxConfig(pgd_step=-1.0)


def test_presets_differ_in_blackbox_strength():
    rounds = [preset(name).blackbox.rounds for name in ("light-v1", "standard-v1", "strong-v1")]
    assert rounds == sorted(rounds) and len(set(rounds)) == 3


def _wav(tmp_path: Path, seconds: float = 1.5, channels: int = 2) -> Path:
    path = tmp_path / "song.wav"
    sf.write(path, music_like(44100, channels, seconds, seed=2).T, 44100, subtype="FLOAT")
    return path


def test_protect_audio_blackbox_writes_a_quiet_cloak_and_a_bag_report(tmp_path):
    src = _wav(tmp_path)
    before = src.read_bytes()
    seen = []
    report = protect_audio(src, tmp_path / "out.flac", config=FAST, device="cpu",
                           target=BlackBoxChoice(specs=TINY_AUDIO_BAG), on_iteration=seen.append)
    assert src.read_bytes() == before
    written, _ = sf.read(tmp_path / "out.flac", always_2d=True, dtype="float32")
    original, _ = sf.read(src, always_2d=True, dtype="float32")
    assert written.shape == original.shape and 0 < np.abs(written - original).max() < 0.1
    assert report["mode"] == "blackbox" and report["target"] == "bag-v1"
    assert [m["label"] for m in report["bag"]["members"]] == [s.label for s in TINY_AUDIO_BAG]
    assert {p["label"] for p in report["bag"]["panel"]} <= {s.label for s in TINY_AUDIO_BAG}
    assert len(report["history"]) == 2 and len(seen) == blackbox_iterations(FAST)
    assert report["verification"]["nmr"]["p95_db"] < 0
    saved = json.loads((tmp_path / "out.flac.report.json").read_text())
    assert saved["bag"] == json.loads(json.dumps(report["bag"]))


def test_protect_audio_blackbox_is_reproducible(tmp_path):
    src = _wav(tmp_path, seconds=1.0, channels=1)
    for name in ("a.wav", "b.wav"):
        protect_audio(src, tmp_path / name, config=FAST, device="cpu", seed=5,
                      target=BlackBoxChoice(specs=TINY_AUDIO_BAG))
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_protect_midi_blackbox_keeps_every_note_and_reports_the_bag(tmp_path):
    from harmonycloak.io.midi_edit import note_cells

    src = Path(__file__).resolve().parents[1] / "examples" / "demo.mid"
    report = protect_midi(src, tmp_path / "out.mid", config=FAST, device="cpu",
                          target=BlackBoxChoice(specs=TINY_MIDI_BAG))
    assert report["mode"] == "blackbox" and len(report["bag"]["members"]) == 3
    def timing(cells):
        return {(c.file_track, c.channel, c.pitch, c.start_tick, c.end_tick) for c in cells}

    original, protected = note_cells(src), note_cells(tmp_path / "out.mid")
    assert timing(original) <= timing(protected)
    raised = {(c.file_track, c.pitch, c.start_tick): c.velocity for c in protected}
    assert all(raised[(c.file_track, c.pitch, c.start_tick)] >= c.velocity for c in original)


def test_protect_entry_point_blackbox_refuses_a_named_model(tmp_path):
    src = _wav(tmp_path)
    with pytest.raises(InputError, match="go with --mode whitebox"):
        protect(src, tmp_path / "o.wav", mode="blackbox", target="codec-lm")
