"""Audio metrics (FAD, embedding shift, embedders) and perceptual metrics (ViSQOL, NMR, SNR)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.evaluate.metrics import perceptual
from harmonycloak.evaluate.metrics.audio import (
    AudioEmbedder,
    ClapEmbedder,
    ContrastiveEmbedder,
    embedding_shift,
    embedding_stats,
    fad,
    frechet_distance,
)
from harmonycloak.evaluate.metrics.perceptual import nmr_p95_db, snr_db, visqol, visqol_median
from harmonycloak.targets.embedding import (
    ContrastiveEncoderConfig,
    ContrastiveMusicEncoder,
    EmbeddingShiftTarget,
)

from conftest import music_like

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ FAD


def test_frechet_distance_matches_the_1d_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    for m1, s1, m2, s2 in [(0.0, 1.0, 3.0, 1.0), (1.0, 2.0, -1.0, 0.5), (0.5, 0.1, 0.5, 3.0)]:
        value = frechet_distance(np.array([m1]), np.array([[s1 ** 2]]),
                                 np.array([m2]), np.array([[s2 ** 2]]))
        assert value == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-9)
    assert frechet_distance(2.0, 4.0, 0.0, 1.0) == pytest.approx(4.0 + 1.0)   # scalars: 1-D


def test_frechet_distance_matches_commuting_covariances():
    # diagonal covariances commute: tr(sqrt(C1 C2)) = sum sqrt(c1 c2)
    c1, c2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + np.sum(c1 + c2 - 2 * np.sqrt(c1 * c2))
    assert frechet_distance(mu1, np.diag(c1), mu2, np.diag(c2)) == pytest.approx(expected)


def test_fad_of_identical_sets_is_zero_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 8)) @ rng.standard_normal((8, 8))
    assert fad(a, a) == pytest.approx(0.0, abs=1e-8)
    values = [fad(a + shift, a) for shift in (0.5, 1.0, 2.0)]
    # a pure mean shift adds exactly ||shift||^2 = 8 shift^2
    assert values == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)
    # a different spread counts too
    assert fad(2.0 * a, a) > 1.0


def test_fad_with_fewer_rows_than_dimensions_stays_finite():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 16)), rng.standard_normal((5, 16)) + 1.0
    value = fad(a, b)
    assert math.isfinite(value) and value > 10.0


def test_embedding_stats_and_errors():
    e = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    mu, cov = embedding_stats(e)
    np.testing.assert_allclose(mu, [2.0, 3.0])
    np.testing.assert_allclose(cov, np.full((2, 2), 4.0))
    with pytest.raises(InputError, match=r"shape \(1, 2\); give \[n, dim\] with at least 2 rows"):
        embedding_stats(e[:1])
    with pytest.raises(InputError, match="8 dimensions and the reference 4"):
        fad(np.zeros((3, 8)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="do not fit one dimension"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------ embedding shift


def test_embedding_shift_reuses_the_targets_measure():
    clean = np.array([[1.0, 0.0], [0.0, 2.0]])
    protected = np.array([[0.0, 1.0], [0.0, 2.0]])
    shift = embedding_shift(clean, protected)
    assert shift["cosine"] == pytest.approx(0.5)                  # (0 + 1) / 2
    assert shift["normalized_l2"] == pytest.approx(math.sqrt(2) / 2)
    assert shift["l2"] == pytest.approx(math.sqrt(2) / 2)
    assert shift["per_example"]["cosine"] == pytest.approx([0.0, 1.0])
    assert not shift["meets_seed_targets"]
    far = embedding_shift(clean, -clean)
    assert far["cosine"] == pytest.approx(-1.0) and far["normalized_l2"] == pytest.approx(2.0)
    assert far["meets_seed_targets"]
    one = embedding_shift(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0]))
    assert one["cosine"] == pytest.approx(1.0) and one["normalized_l2"] == 0.0
    with pytest.raises(InputError, match="must have one shape"):
        embedding_shift(np.zeros((2, 3)), np.zeros((3, 3)))


# ------------------------------------------------------------------------ embedders


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    encoder = ContrastiveMusicEncoder(ContrastiveEncoderConfig.tiny(), seed=3)
    return encoder.save(tmp_path_factory.mktemp("encoder"))


def test_contrastive_embedder_averages_the_targets_windows(encoder_dir):
    embedder = ContrastiveEmbedder.load(encoder_dir)
    assert isinstance(embedder, AudioEmbedder)
    clips = torch.from_numpy(np.stack([music_like(22050, 2, 3.0, seed=s) for s in range(3)]))
    out = embedder.embed(clips, 22050)
    assert out.shape == (3, embedder.embedding_dim) and out.dtype == np.float64
    target = EmbeddingShiftTarget(ContrastiveMusicEncoder.load(encoder_dir), sample_rate_hz=22050)
    with torch.no_grad():
        expected = target.embed(clips).mean(dim=1).double().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # batch-independent, numpy accepted, one clip at a time gives the same rows
    np.testing.assert_allclose(embedder.embed(clips.numpy()[1:2], 22050), out[1:2], atol=1e-6)
    # different music, different embeddings: FAD of a set against itself 0, against others > 0
    assert fad(out, out) == pytest.approx(0.0, abs=1e-9)


def test_embedder_refuses_bad_input(encoder_dir):
    embedder = ContrastiveEmbedder.load(encoder_dir)
    with pytest.raises(InputError, match=r"give float audio \[n, channels, samples\]"):
        embedder.embed(torch.zeros(100), 16000)
    with pytest.raises(InputError, match="give at least 0.25 s"):
        embedder.embed(torch.zeros(1, 1, 100), 16000)
    with pytest.raises(ModelLoadError, match="no such model directory"):
        ContrastiveEmbedder.load(encoder_dir / "missing")
    with pytest.raises(ModelLoadError, match="CLAP"):
        ClapEmbedder.load(encoder_dir)


def test_clap_embedder_over_a_tiny_local_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    audio = dict(window_size=8, num_mel_bins=64, spec_size=256, hidden_size=16,
                 patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2])
    text = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=16, max_position_embeddings=40)
    torch.manual_seed(0)
    config = transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.ClapModel(config).save_pretrained(tmp_path)
        transformers.ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(tmp_path)
    embedder = ClapEmbedder.load(tmp_path)
    clips = torch.from_numpy(np.stack([music_like(48000, 1, 1.0, seed=s) for s in range(2)]))
    out = embedder.embed(clips, 48000)
    assert out.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # one window: unit
    assert embedder.name == "clap-8d"


# ------------------------------------------------------------------------ perceptual


def test_snr_db():
    x = music_like(16000, 2, 0.5)
    assert snr_db(x, x) == math.inf
    assert snr_db(x, 1.1 * x) == pytest.approx(20.0, abs=1e-4)      # error = 0.1 x
    assert math.isnan(snr_db(np.zeros((1, 10)), np.ones((1, 10))))
    with pytest.raises(InputError, match="must be arrays of one shape"):
        snr_db(x, x[:, :-1])


def test_nmr_p95_orders_noise_levels():
    x = music_like(44100, 1, 1.0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2))
    quiet = nmr_p95_db(x, x + noise * 10 ** (-60 / 20), 44100)
    loud = nmr_p95_db(x, x + noise * 10 ** (-10 / 20), 44100)
    assert loud > 0.0 > quiet
    assert loud - quiet == pytest.approx(50.0, abs=0.5)      # NMR scales with the noise level
    assert nmr_p95_db(x, x, 44100) < -99.0


visqol_required = pytest.mark.skipif(not perceptual.visqol_available(),
                                     reason="visqol-python is not installed")


@visqol_required
def test_visqol_identical_high_and_noise_lower():
    x = music_like(44100, 2, 3.0, seed=2)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2))
    same = visqol(x, x, 44100)
    slight = visqol(x, x + noise * 10 ** (-40 / 20), 44100)
    heavy = visqol(x, x + noise * 10 ** (-10 / 20), 44100)
    assert same >= 4.6
    assert same > slight > heavy
    assert heavy < 3.0
    assert visqol(x, 0.5 * x, 44100) >= 4.6          # levels are matched first
    assert visqol_median([x, x], [x, x + noise * 10 ** (-10 / 20)], 44100) == pytest.approx(
        (same + heavy) / 2, abs=1e-6)
    assert visqol_median([x], [x], 44100, max_clips=0) is None


def test_visqol_without_the_package_returns_none_with_a_note(monkeypatch):
    monkeypatch.setattr(perceptual, "_visqol_api", lambda: None)
    perceptual._warn_missing.cache_clear()
    x = music_like(44100, 1, 1.0)
    with pytest.warns(RuntimeWarning, match="pip install"):
        assert visqol(x, x, 44100) is None
    assert not perceptual.visqol_available()
    perceptual._warn_missing.cache_clear()
