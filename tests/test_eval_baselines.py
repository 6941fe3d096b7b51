"""Baselines at equal perceptual quality (evaluate/baselines.py): Gaussian noise matched to a
ViSQOL score, plain L-inf / L2 PGD through the engine's loop, and the harmonydagger tool."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from harmonycloak.config import EngineConfig
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.evaluate import baselines
from harmonycloak.evaluate.baselines import (
    BaselineResult,
    gaussian_at_visqol,
    harmonydagger,
    pgd_l2,
    pgd_linf,
)
from harmonycloak.evaluate.metrics import perceptual
from harmonycloak.perturb.protocols import Target

from conftest import music_like

pytestmark = pytest.mark.usefixtures("one_torch_thread")

visqol_required = pytest.mark.skipif(not perceptual.visqol_available(),
                                     reason="visqol-python is not installed")

RATE = 22050


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return music_like(RATE, 2, 2.0, seed=11)


class LinearPredictor:
    """A tiny autoregressive audio model: predicts each sample from the 16 before it.

    L_gen is the mean squared prediction error: error-minimizing noise makes the clip
    more predictable. A real :class:`Target` (loss, example_losses, train_step, state).
    """

    name = "linear-predictor"

    def __init__(self, order: int = 16, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = nn.Conv1d(1, 1, order, bias=False)
        self.order = order
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss_calls = 0

    def _losses(self, x: Tensor) -> Tensor:
        """Prediction error over signal power per example (scale-free), ``[batch]``."""
        flat = x.reshape(-1, 1, x.shape[-1])
        prediction = self.model(flat[..., :-1])
        error = (prediction - flat[..., self.order:]).square().mean(dim=(1, 2))
        power = flat.square().mean(dim=(1, 2)).clamp_min(1e-12)
        return (error / power).reshape(x.shape[0], -1).mean(dim=1)

    def loss(self, x: Tensor) -> Tensor:
        self.loss_calls += 1
        return self._losses(x).mean()

    def example_losses(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self._losses(x)

    def train_step(self, x: Tensor) -> float:
        self.optimizer.zero_grad()
        loss = self._losses(x.detach()).mean()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        return self.model.load_state_dict(state)


FAST = EngineConfig(outer_rounds=2, outer_steps=2, inner_steps=6, pgd_step=0.002, batch_size=2)


def test_the_toy_target_is_a_target():
    assert isinstance(LinearPredictor(), Target)


@pytest.mark.parametrize("method", [pgd_linf, pgd_l2])
def test_pgd_stays_in_its_ball_lowers_the_loss_and_runs_the_engines_steps(clip, method):
    target = LinearPredictor()
    before = clip.copy()
    result = method(clip, RATE, target, seed=0, epsilon=0.004, engine=FAST)
    np.testing.assert_array_equal(clip, before)
    assert isinstance(result, BaselineResult)
    assert result.samples.shape == clip.shape and result.samples.dtype == np.float32
    delta = result.samples - clip
    if method is pgd_linf:
        assert np.abs(delta).max() <= 0.004 + 1e-6
        assert result.details["norm"] == "linf"
    else:
        assert np.sqrt(np.mean(delta.astype(np.float64) ** 2)) <= 0.004 * (1 + 1e-5)
        assert result.details["norm"] == "l2"
    # δ moved (a NaN gradient at δ = 0 once kept the L2 ball's δ at exactly zero) ...
    assert np.sqrt(np.mean(delta.astype(np.float64) ** 2)) > 0.5 * 0.004 * (method is pgd_l2)
    assert np.abs(delta).max() > 0
    # ... and is error-minimizing: the trained target finds the perturbed clip easier
    assert result.details["loss_perturbed"] < result.details["loss_clean_trained"]
    assert result.details["loss_clean_trained"] < result.details["loss_clean"]  # it trained
    # the engine's step count: one loss per PGD iteration, plus one before and two after
    assert target.loss_calls == FAST.outer_rounds * FAST.inner_steps + 3
    assert len(result.details["history"]) == FAST.outer_rounds
    assert result.scale == 1.0 and result.target_visqol is None and result.converged
    np.testing.assert_array_equal(np.asarray(result), result.samples)
    # seeded: a fresh target and the same seed give the same samples
    again = method(clip, RATE, LinearPredictor(), seed=0, epsilon=0.004, engine=FAST)
    np.testing.assert_array_equal(again.samples, result.samples)


def test_pgd_takes_a_model_domain_mapping(clip):
    target = LinearPredictor()
    chunks = lambda y: y.reshape(y.shape[0], 4, -1).transpose(0, 1)   # noqa: E731
    result = pgd_linf(clip, RATE, target, seed=1, epsilon=0.004, engine=FAST, to_model=chunks)
    assert result.details["loss_perturbed"] < result.details["loss_clean"]


def test_bad_input_is_refused(clip):
    with pytest.raises(InputError, match=r"shape \(44100,\).*give float \[channels, samples\]"):
        pgd_linf(clip[0], RATE, LinearPredictor(), seed=0)
    with pytest.raises(InputError, match="epsilon=0"):
        pgd_l2(clip, RATE, LinearPredictor(), seed=0, epsilon=0)


@pytest.fixture(scope="module")
def gaussians(clip) -> dict[float, BaselineResult]:
    if not perceptual.visqol_available():
        pytest.skip("visqol-python is not installed")
    return {target: gaussian_at_visqol(clip, RATE, target, seed=0) for target in (3.0, 4.2)}


@pytest.mark.parametrize("target", [3.0, 4.2])
def test_gaussian_at_visqol_hits_its_target(clip, gaussians, target):
    result = gaussians[target]
    assert result.converged
    assert abs(result.visqol - target) <= 0.05
    assert result.visqol == pytest.approx(perceptual.visqol(clip, result.samples, RATE), abs=1e-9)
    assert result.method == "gaussian" and result.target_visqol == target
    # the table-10 "noise budget" is the noise power over the music power
    assert result.details["noise_budget"] == pytest.approx(result.scale ** 2)
    assert result.snr_db == pytest.approx(result.details["noise_snr_db"], abs=0.5)


def test_gaussian_level_falls_as_the_target_rises_and_unreachable_targets_fail(clip, gaussians):
    assert gaussians[4.2].details["noise_budget"] < gaussians[3.0].details["noise_budget"]
    with pytest.raises(InputError, match="out of reach"):
        gaussian_at_visqol(clip, RATE, 4.95, seed=0)


@visqol_required
def test_pgd_can_be_scaled_to_a_visqol(clip):
    result = pgd_linf(clip, RATE, LinearPredictor(), seed=0, epsilon=0.004, engine=FAST,
                      target_visqol=3.5)
    assert abs(result.visqol - 3.5) <= 0.05 and result.converged
    assert result.scale != 1.0


def test_harmonydagger_runs_deterministically(clip):
    pytest.importorskip("harmonydagger")
    result = harmonydagger(clip, RATE, seed=0)
    assert result.samples.shape == clip.shape and result.method == "harmonydagger"
    assert result.details["version"] == "0.4.0"
    np.testing.assert_array_equal(result.samples, harmonydagger(clip, RATE, seed=5).samples)
    # noise scale 0.1 of the loudest partial's band, with the music's own phase
    assert 12.0 < result.snr_db < 35.0
    delta = result.samples - clip
    correlation = float(np.sum(delta * clip) / np.sqrt(np.sum(delta ** 2) * np.sum(clip ** 2)))
    assert correlation > 0.2
    if perceptual.visqol_available():
        assert result.visqol > 4.0
    # its optional phase perturbation (slow: a Python loop per STFT cell) follows our seed
    short = clip[:1, :RATE // 2]
    a = harmonydagger(short, RATE, seed=1, phase=True)
    b = harmonydagger(short, RATE, seed=2, phase=True)
    np.testing.assert_array_equal(a.samples, harmonydagger(short, RATE, seed=1, phase=True).samples)
    assert not np.array_equal(a.samples, b.samples)


def test_harmonydagger_missing_package_says_how_to_install(clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "harmonydagger.core", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'harmonycloak\[eval\]'"):
        harmonydagger(clip, RATE, seed=0)


def test_visqol_matching_without_visqol_says_how_to_install(clip, monkeypatch):
    monkeypatch.setattr(perceptual, "visqol_available", lambda: False)
    with pytest.raises(ModelLoadError, match="needs ViSQOL: ViSQOL needs the visqol-python"):
        gaussian_at_visqol(clip, RATE, 4.0, seed=0)
    assert math.isfinite(baselines.VISQOL_TOLERANCE)
