"""Differentiable resampling: agrees with soxr in the pass band, rejects aliases, has gradients."""

import numpy as np
import pytest
import soxr
import torch

from harmonycloak.perturb.dsp import resample, resampled_length


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (48000, 24000), (16000, 44100),
                                           (44100, 48000)])
def test_matches_soxr_in_pass_band(orig, new):
    t = np.arange(orig) / orig
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    ours = resample(torch.from_numpy(x), orig, new).numpy()
    ref = soxr.resample(x, orig, new)
    assert len(ours) == resampled_length(len(x), orig, new) == len(ref)
    edge = new // 20
    assert np.abs(ours[edge:-edge] - ref[edge:-edge]).max() < 1e-3


def test_rejects_aliases_above_the_new_nyquist():
    sr = 44100
    x = np.sin(2 * np.pi * 9000 * np.arange(sr) / sr).astype(np.float32)
    y = resample(torch.from_numpy(x), sr, 16000).numpy()
    assert np.abs(y[800:-800]).max() < 0.01


def test_batched_shapes_and_gradient():
    x = torch.randn(3, 2, 4410, requires_grad=True)
    y = resample(x, 44100, 16000)
    assert y.shape == (3, 2, 1600)
    y.square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    single = resample(x[1, 0].detach(), 44100, 16000)
    assert torch.allclose(single, y[1, 0].detach(), atol=1e-6)


def test_same_rate_is_identity_and_bad_rate_fails():
    x = torch.randn(100)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16000)


def test_empty_batch_keeps_its_shape():
    assert resample(torch.zeros(0, 2, 441), 44100, 16000).shape == (0, 2, 160)
