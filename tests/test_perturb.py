"""The cloak engine: MIDI window strategy and bounds, the sigmoid parametrization, the
min-min loop (on a small quadratic target), phrases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonycloak.clip import PianoRoll, TempoChange
from harmonycloak.perturb.optimize import EngineSettings, min_min, track_weights
from harmonycloak.perturb.parametrize import MidiVelocityPerturbation, round_to_midi
from harmonycloak.perturb.phrases import phrases_from_roll, phrases_tensor, roll_from_phrases
from harmonycloak.perturb.windows import MIN_MIDI_VELOCITY, note_slots, step_start_times_s
from harmonycloak.psychoacoustics import absolute_threshold_db, level_db_to_velocity

C4, E4, G4 = 60 - 24, 64 - 24, 67 - 24  # pitch indices (lowest pitch 24 = C1)


def _roll(tracks: int = 2, steps: int = 96, *, qpm: float = 120.0, drums: tuple[bool, ...] = ()) -> PianoRoll:
    is_drum = drums or tuple(False for _ in range(tracks))
    return PianoRoll(
        velocities=np.zeros((tracks, steps, 84), np.float32), steps_per_beat=12, lowest_pitch=24,
        programs=tuple(0 for _ in range(tracks)), is_drum=is_drum,
        track_names=tuple(f"t{i}" for i in range(tracks)), tempos=(TempoChange(0, qpm),),
        onsets=np.zeros((tracks, steps, 84), bool),
    )


def _note(roll: PianoRoll, track: int, pitch: int, start: int, end: int, velocity: int) -> None:
    roll.velocities[track, start:end, pitch] = velocity / 127
    roll.onsets[track, start, pitch] = True


def _h(pitch_index: int) -> float:
    hz = 440.0 * 2 ** ((pitch_index + 24 - 69) / 12)
    return float(level_db_to_velocity(absolute_threshold_db(torch.tensor(hz))))


def test_step_times_follow_tempo_changes():
    roll = _roll(steps=24)
    roll = PianoRoll(**{**roll.__dict__, "tempos": (TempoChange(0, 120.0), TempoChange(12, 60.0))})
    times = step_start_times_s(roll)
    assert times[12] == pytest.approx(0.5)          # 12 steps of 1/24 s
    assert times[13] - times[12] == pytest.approx(1 / 12)


def test_dominant_note_slot_and_its_bounds():
    roll = _roll()
    _note(roll, 0, C4, 0, 12, 100)
    _note(roll, 0, E4, 0, 6, 50)
    slots = note_slots(roll, window_ms=10.0)
    # 10 ms windows are shorter than a 41.7 ms step: each step is a window, C4 dominates
    assert slots.count == 1 and slots.existing.all()
    assert (slots.track[0], slots.pitch_index[0], slots.start_step[0], slots.end_step[0]) == (0, C4, 0, 12)
    assert slots.lower[0] == pytest.approx(_h(C4), rel=1e-5)
    assert slots.upper[0] == pytest.approx(min(100 / 127, 1 - 100 / 127))
    assert slots.cells_per_slot()[0] == 12


def test_long_windows_add_quiet_notes_at_the_dominant_pitch():
    roll = _roll(steps=48)
    _note(roll, 0, G4, 0, 1, 90)   # sounds one step; a 100 ms window spans 3 steps at 120 qpm
    slots = note_slots(roll, window_ms=100.0)
    added = ~slots.existing
    assert added.sum() == 1
    k = int(np.flatnonzero(added)[0])
    assert (slots.pitch_index[k], slots.start_step[k], slots.end_step[k]) == (G4, 1, 3)
    assert slots.upper[k] == pytest.approx(90 / 127)
    assert slots.lower[k] >= MIN_MIDI_VELOCITY


def test_quiet_windows_and_drums_get_nothing():
    roll = _roll(drums=(False, True))
    _note(roll, 0, C4, 0, 12, 5)        # below min_velocity 8
    _note(roll, 1, C4, 0, 12, 100)      # a drum track
    assert note_slots(roll, window_ms=10.0, include_drums=False).count == 0
    assert note_slots(roll, window_ms=10.0).count == 1


def test_perturbation_stays_inside_bounds_and_is_midi_quantized():
    roll = _roll()
    _note(roll, 0, C4, 0, 12, 60)
    _note(roll, 1, E4, 12, 24, 80)
    slots = note_slots(roll)
    x = torch.from_numpy(roll.velocities)
    pert = MidiVelocityPerturbation(slots, tuple(x.shape))
    for value in (-12.0, 0.0, 12.0):
        params = torch.full((slots.count,), value)
        delta = pert.slot_delta(params)
        assert torch.all(delta >= torch.as_tensor(slots.lower, dtype=torch.float32) - 0.5 / 127)
        assert torch.all(delta <= torch.as_tensor(slots.upper, dtype=torch.float32) + 0.5 / 127)
        assert torch.allclose(delta * 127, torch.round(delta * 127), atol=1e-4)
    y = pert.apply(x, pert.init_params())
    untouched = torch.ones_like(x, dtype=torch.bool)
    untouched[slots.cell_track, slots.cell_step, slots.cell_pitch] = False
    assert torch.equal(y[untouched], x[untouched])
    assert torch.all(y[~untouched] >= x[~untouched])


def test_track_rms_does_not_grow_with_the_piece():
    short, long = _roll(steps=96), _roll(steps=960)
    for roll, repeats in ((short, 1), (long, 10)):
        for r in range(repeats):
            _note(roll, 0, C4, 96 * r, 96 * r + 12, 60)
            _note(roll, 0, E4, 96 * r + 24, 96 * r + 48, 60)
    rms = []
    for roll in (short, long):
        slots = note_slots(roll)
        pert = MidiVelocityPerturbation(slots, roll.velocities.shape, quantize=False)
        params = torch.zeros(slots.count)
        delta = pert.roll_delta(params)
        cells = delta[0] > 0
        expected = float(delta[0][cells].square().mean().sqrt())
        got = pert.track_rms(params, 2)
        assert got[0] == pytest.approx(expected, rel=1e-5) and float(got[1]) < 1e-5
        rms.append(float(got[0]))
    assert rms[0] == pytest.approx(rms[1], rel=1e-5)


def test_straight_through_rounding_keeps_gradients():
    v = torch.tensor([0.1234, 0.5], requires_grad=True)
    (round_to_midi(v) * torch.tensor([1.0, 2.0])).sum().backward()
    assert torch.equal(v.grad, torch.tensor([1.0, 2.0]))


def test_track_weights():
    vel = torch.zeros(3, 4, 5)
    vel[0] += 0.3
    vel[1, :2] += 0.3
    w = track_weights(vel)
    assert w[2] == 1.0 and w[0] < w[1] < w[2]
    assert torch.allclose(w, torch.tensor([1 - 2 / 3, 1 - 1 / 3, 1.0]))
    assert torch.equal(track_weights(torch.zeros(2, 3, 4)), torch.ones(2))


def test_phrases_tensor_matches_numpy_and_carries_gradients():
    rng = np.random.default_rng(0)
    roll = rng.random((5, 200, 84)).astype(np.float32)
    x = torch.from_numpy(roll).requires_grad_(True)
    phrases = phrases_tensor(x)
    np.testing.assert_array_equal(phrases.detach().numpy(), phrases_from_roll(roll))
    np.testing.assert_array_equal(roll_from_phrases(phrases_from_roll(roll), 200), roll)
    phrases.sum().backward()
    assert torch.all(x.grad == 1.0)


class _Quadratic:
    """A stand-in target: L = mean((x − goal)²) over phrases; train_step counts calls."""

    name = "quadratic"

    def __init__(self, goal: torch.Tensor) -> None:
        self.goal = goal
        self.steps = 0

    def loss(self, x):
        return ((x - self.goal) ** 2).mean() * 1000.0

    def example_losses(self, x):
        return ((x - self.goal) ** 2).flatten(1).mean(1).detach()

    def train_step(self, x):
        self.steps += 1
        return float(self.loss(x))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return None


def _engine_case(seed: int = 0):
    roll = _roll(tracks=5, steps=192)
    for i, p in enumerate((C4, E4, G4)):
        _note(roll, i, p, 0, 96, 60)
        _note(roll, i, p + 2, 96, 192, 70)
    slots = note_slots(roll)
    x = torch.from_numpy(roll.velocities)
    pert = MidiVelocityPerturbation(slots, tuple(x.shape))
    goal_delta = torch.as_tensor(slots.lower + 0.8 * (slots.upper - slots.lower), dtype=torch.float32)
    goal = phrases_tensor(x + torch.zeros_like(x).index_put(
        tuple(torch.as_tensor(a) for a in (slots.cell_track, slots.cell_step, slots.cell_pitch)),
        goal_delta[torch.as_tensor(slots.cell_slot)]))
    target = _Quadratic(goal)
    settings = EngineSettings(outer_rounds=4, outer_steps=2, inner_steps=20, pgd_step=0.01,
                              alpha=0.0, batch_size=2)
    result = min_min(x, pert, target, to_model=phrases_tensor, regularizer=lambda p: p.sum() * 0,
                     settings=settings, generator=torch.Generator().manual_seed(seed))
    return result, target, pert, slots


def test_min_min_lowers_the_generative_loss_and_respects_bounds():
    result, target, pert, slots = _engine_case()
    first, last = result.history[0]["generative"], result.history[-1]["generative"]
    assert last < 0.2 * first
    assert target.steps == 4 * 2
    delta = pert.slot_delta(result.params)
    assert torch.all(delta <= torch.as_tensor(slots.upper, dtype=torch.float32) + 0.5 / 127)


def test_min_min_is_deterministic():
    a, *_ = _engine_case(seed=3)
    b, *_ = _engine_case(seed=3)
    assert torch.equal(a.params, b.params)
    assert a.history == b.history


class _Shift:
    """x + params, with the step scale of a plain additive perturbation."""

    def init_params(self):
        return torch.zeros(7, 12, requires_grad=True)

    def apply(self, x, params):
        return x + params

    def step_scale(self, params):
        return torch.ones(())


class _PerExample:
    """L = mean over examples of a nonlinear per-example loss (no cross-example terms)."""

    def __init__(self) -> None:
        self.weights = torch.linspace(0.5, 2.0, 4)

    def loss(self, x):
        return (torch.tanh(x * self.weights).square().sum(dim=(1, 2)) + x[:, 0, 0].exp()).mean()


@pytest.mark.parametrize("group", [1, 2, 3, 4])
def test_grouped_pgd_loss_gives_the_whole_batch_gradient(group):
    from harmonycloak.perturb.optimize import _loss_and_grad

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 12, generator=gen)
    params = (0.3 * torch.randn(7, 12, generator=gen)).requires_grad_(True)
    to_model = lambda y: y.reshape(7, 3, 4)  # noqa: E731  7 examples of [3, 4]
    regularizer = lambda p: p.square().sum().sqrt()  # noqa: E731
    args = (x, params, _Shift(), _PerExample(), to_model, regularizer, 0.3)
    whole = _loss_and_grad(*args, None)
    grouped = _loss_and_grad(*args, group)
    for a, b in zip(whole, grouped):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert grouped[2].abs().sum() > 0 and params.grad is None   # gradient returned, not accumulated


def test_meta_phase_weighs_noise_against_loss_as_the_white_box_loop_does():
    """With every member the same model, a meta-learning PGD step is the white-box step:
    the regularizer is counted in the members' loss units like their losses (when it was
    not, a loss scale of ~5 made it outweigh the losses and pinned δ at its lower bound)."""
    from harmonycloak.perturb.optimize import MetaSettings, _loss_and_grad, _meta_phase, _pgd_step

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 12, generator=gen)
    params = (0.3 * torch.randn(7, 12, generator=gen)).requires_grad_(True)
    member, shift = _PerExample(), _Shift()
    to_model = lambda y: y.reshape(7, 3, 4)  # noqa: E731
    regularizer = lambda p: p.square().sum().sqrt()  # noqa: E731
    alpha = 2.0                       # large enough that its balance with L decides signs
    _, _, grad = _loss_and_grad(x, params, shift, member, to_model, regularizer, alpha, None)
    white = _pgd_step(params, grad, shift, 0.01)
    settings = MetaSettings(rounds=1, sample_size=2, outer_steps=0, meta_train_steps=1,
                            meta_test_steps=1, pgd_step=0.01, batch_size=2)
    meta = _meta_phase(x, params, shift, [member, member], [5.0, 5.0], weight=0.5, steps=1,
                       to_model=to_model, regularizer=regularizer, alphas=[alpha, alpha],
                       settings=settings, generator=torch.Generator().manual_seed(0),
                       report=lambda *_: None)
    assert torch.equal(meta, white)
