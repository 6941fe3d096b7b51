"""MIDI velocity <-> level in dB SPL (the paper's eq. 6, DLS Level 1 reading)."""

from __future__ import annotations

import math

import pytest
import torch

from harmonycloak.psychoacoustics import (
    REFERENCE_LEVEL_DB,
    level_db_to_velocity,
    velocity_to_level_db,
)


def test_dls_values():
    assert REFERENCE_LEVEL_DB == 94.0
    assert float(velocity_to_level_db(1.0)) == pytest.approx(94.0)
    assert float(velocity_to_level_db(64 / 127)) == pytest.approx(94.0 - 11.91, abs=0.01)
    assert float(velocity_to_level_db(1 / 127)) == pytest.approx(94.0 - 40 * math.log10(127))
    assert float(velocity_to_level_db(0.5, reference_db=80.0)) == pytest.approx(
        80.0 - 12.04, abs=0.01
    )


def test_round_trip_both_ways():
    v = torch.linspace(1.001e-3, 1.0, 1001, dtype=torch.float64)
    assert torch.allclose(level_db_to_velocity(velocity_to_level_db(v)), v, rtol=1e-9)
    levels = torch.linspace(94.0 - 119.0, 94.0, 200, dtype=torch.float64)
    assert torch.allclose(velocity_to_level_db(level_db_to_velocity(levels)), levels, atol=1e-9)
    midi = torch.arange(0, 128, dtype=torch.float64) / 127
    assert torch.allclose(level_db_to_velocity(velocity_to_level_db(midi)), midi, atol=1e-12)


def test_zero_velocity_and_out_of_range_levels():
    floor = float(velocity_to_level_db(0.0))
    assert math.isfinite(floor) and floor == pytest.approx(94.0 - 120.0)
    assert float(level_db_to_velocity(floor)) == 0.0
    assert float(level_db_to_velocity(-500.0)) == 0.0
    assert float(level_db_to_velocity(130.0)) == 1.0
    assert float(level_db_to_velocity(torch.tensor(-float("inf")))) == 0.0


def test_mapping_is_differentiable():
    v = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    level = velocity_to_level_db(v)
    back = level_db_to_velocity(level.detach().requires_grad_(True))
    level.sum().backward()
    assert torch.isfinite(v.grad).all() and (v.grad > 0).all()
    assert back.shape == v.shape
