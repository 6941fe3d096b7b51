"""The SymphonyNet-like symbolic LM target: encoding, differentiability, training, files.

All models here use ``SymbolicLMConfig.tiny()`` and synthetic phrases (no files, no network).
"""

from __future__ import annotations

import math

import pytest
import torch

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.protocols import Target
from harmonycloak.targets.symbolic_lm import (
    DURATION_STEPS,
    SymbolicLMConfig,
    SymbolicLMTarget,
    encode_phrases,
)

BASS, DRUMS, GUITAR, PIANO, STRINGS = range(5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def empty(batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 5, 4, 48, 84)


def put(x: torch.Tensor, track: int, start: int, stop: int, pitch: int, velocity: float,
        item: int = 0) -> None:
    """Paint cells ``start..stop-1`` of the 192-step timeline (bars are crossed)."""
    flat = x[item, track].view(192, 84)  # a view: writes land in x
    flat[start:stop, pitch] = velocity


def groove(shift: int = 0) -> torch.Tensor:
    """A repeating 4-bar pop groove, 44 notes: kick/hat, a bass line, piano dyads."""
    x = empty()
    for bar in range(4):
        b = bar * 48
        for beat in range(4):
            put(x, DRUMS, b + beat * 12, b + beat * 12 + 3, 12, 0.9)
            put(x, DRUMS, b + beat * 12 + 6, b + beat * 12 + 9, 18, 0.5)
        put(x, BASS, b, b + 24, 10 + 2 * bar + shift, 0.7)
        put(x, PIANO, b, b + 48, 40 + bar + shift, 0.6)
        put(x, PIANO, b, b + 48, 44 + bar + shift, 0.6)
    return x


def tiny(**kwargs) -> SymbolicLMTarget:
    return SymbolicLMTarget(SymbolicLMConfig.tiny(), **kwargs)


def test_encoding_of_a_hand_made_phrase():
    x = empty()
    put(x, PIANO, 40, 56, 30, 0.5)  # bar 0 step 40 → bar 1 step 7: crosses the bar line
    put(x, PIANO, 60, 64, 30, 0.7)  # the same pitch again after a 4-step gap
    put(x, DRUMS, 40, 41, 5, 0.9)  # same onset as the first piano note, lower track
    put(x, BASS, 0, 7, 2, 0.25)  # duration 7: tie between buckets 6 and 8 → 6
    x[0, BASS, 0, 3, 2] = 0.8  # a louder sustained cell is still the same note
    tokens = encode_phrases(x)
    assert tokens.mask.tolist() == [[True] * 5]
    assert tokens.num_notes.tolist() == [4] and tokens.truncated.tolist() == [False]
    # BOS first, then (time, track, pitch) order
    assert tokens.time[0].tolist() == [0, 0, 40, 40, 60]
    assert tokens.track[0].tolist() == [0, BASS, DRUMS, PIANO, PIANO]
    assert tokens.pitch[0].tolist() == [0, 2, 5, 30, 30]
    assert tokens.duration_steps[0].tolist() == [0, 7, 1, 16, 4]
    reps = [DURATION_STEPS[i] for i in tokens.duration[0, 1:].tolist()]
    assert reps == [6, 1, 16, 4]
    assert tokens.velocity[0].tolist() == pytest.approx([0.0, 0.25, 0.9, 0.5, 0.7])


def test_empty_phrase_is_bos_only_with_a_finite_loss():
    x = torch.cat([empty(), groove()])
    tokens = encode_phrases(x)
    assert tokens.lengths.tolist() == [1, 45]
    target = tiny()
    losses = target.example_losses(x)
    assert torch.isfinite(losses).all()
    # an empty phrase predicts END only: one time-field NLL, at most log(193) at init-ish
    assert 0 < losses[0] < math.log(193) + 1
    xe = empty().requires_grad_(True)
    loss = target.loss(xe)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.count_nonzero(xe.grad) == 0


def test_gradient_is_nonzero_exactly_at_note_onsets():
    x = groove()
    put(x, GUITAR, 100, 120, 50, 0.3)
    x[0, GUITAR].view(192, 84)[110, 50] = 0.9  # a louder sustain cell: no gradient there
    xr = x.clone().requires_grad_(True)
    loss = tiny().loss(xr)
    loss.backward()
    grad = xr.grad.view(5, 192, 84)
    active = x.view(5, 192, 84) > 0
    previous = torch.zeros_like(active)
    previous[:, 1:] = active[:, :-1]
    onsets = active & ~previous
    assert torch.isfinite(grad).all()
    assert (grad[onsets] != 0).all()
    assert (grad[~onsets] == 0).all()
    assert torch.equal(x, xr.detach())  # input left unchanged


def test_training_lowers_the_loss_on_a_repeated_dataset():
    x = torch.cat([groove(0), groove(1)])
    target = tiny(seed=3)  # SGD, lr 0.025, momentum 0.9: the defender's outer loop
    before = target.loss(x).item()
    losses = [target.train_step(x) for _ in range(40)]
    after = target.loss(x).item()
    assert losses[0] == pytest.approx(before, rel=1e-5)
    assert after < before - 4.0, (before, after)


def test_adamw_option_uses_the_attackers_defaults():
    target = tiny(optimizer="adamw")
    assert isinstance(target.optimizer, torch.optim.AdamW) and target.lr == 3e-4
    x = groove()
    first = target.train_step(x)
    assert target.train_step(x) < first
    with pytest.raises(InputError, match="'adam'"):
        tiny(optimizer="adam")


def test_same_seed_same_model_and_training_and_global_rng_untouched():
    x = torch.cat([groove(0), groove(2)])
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a, b = tiny(seed=7), tiny(seed=7)
    assert torch.equal(torch.rand(3), expected_draw)
    config = SymbolicLMConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.2,
                              max_tokens=64)
    c, d = SymbolicLMTarget(config, seed=7), SymbolicLMTarget(config, seed=7)
    assert [a.train_step(x) for _ in range(3)] == [b.train_step(x) for _ in range(3)]
    assert [c.train_step(x) for _ in range(3)] == [d.train_step(x) for _ in range(3)]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert tiny(seed=8).loss(x).item() != tiny(seed=7).loss(x).item()


def test_batch_equals_single_items():
    x = torch.cat([groove(0), empty(), groove(3)])
    x[1, PIANO, 0, 0, 40] = 0.5
    target = tiny()
    batched = target.example_losses(x)
    single = torch.cat([target.example_losses(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)
    weights = torch.tensor([45.0, 2.0, 45.0])  # predicted tokens: notes + END
    assert target.loss(x).item() == pytest.approx(
        float((batched * weights).sum() / weights.sum()), rel=1e-5
    )


def test_save_load_round_trip_gives_identical_losses(tmp_path):
    x = torch.cat([groove(0), groove(1)])
    target = tiny(seed=5)
    target.train_step(x)
    path = target.save(tmp_path / "model")
    assert (path / "config.json").is_file()
    loaded = SymbolicLMTarget.load(path)
    assert loaded.config == target.config
    assert torch.equal(loaded.example_losses(x), target.example_losses(x))


def test_load_errors_name_the_directory_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="nowhere.*SymbolicLMTarget.save"):
        SymbolicLMTarget.load(missing)
    path = tiny().save(tmp_path / "model")
    for weights in path.glob("model.*"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="weights file .* is missing"):
        SymbolicLMTarget.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json"):
        SymbolicLMTarget.load(path)
    for not_an_object in ("[1, 2]", '"text"', "3"):   # valid JSON, but not a config
        (path / "config.json").write_text(not_an_object)
        with pytest.raises(ModelLoadError, match="not a symbolic-LM config .format None"):
            SymbolicLMTarget.load(path)


def test_generate_returns_valid_reproducible_phrases():
    target = tiny()
    target.train_step(groove())
    out = target.generate(3, torch.Generator().manual_seed(1), max_tokens=48)
    again = target.generate(3, torch.Generator().manual_seed(1), max_tokens=48)
    assert out.shape == (3, 5, 4, 48, 84) and out.dtype == torch.float32
    assert torch.equal(out, again)
    assert out.min() >= 0 and out.max() <= 1
    assert (out > 0).any()
    assert (encode_phrases(out).num_notes <= 47).all()
    with pytest.raises(InputError, match="max_tokens 129"):
        target.generate(1, max_tokens=129)


def test_truncation_at_max_tokens():
    config = SymbolicLMConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_tokens=20)
    x = groove()  # 44 notes > 19
    tokens = encode_phrases(x, max_tokens=20)
    full = encode_phrases(x)
    assert tokens.lengths.tolist() == [20] and tokens.truncated.tolist() == [True]
    assert tokens.num_notes.tolist() == [44]
    assert torch.equal(tokens.time, full.time[:, :20])  # the earliest notes are kept
    xr = x.clone().requires_grad_(True)
    loss = SymbolicLMTarget(config).loss(xr)
    loss.backward()
    assert torch.isfinite(loss)
    # 19 input notes, each also a target: exactly their onsets carry gradient
    assert torch.count_nonzero(xr.grad) == 19


def test_bad_input_and_config_raise_input_error():
    target = tiny()
    with pytest.raises(InputError, match=r"shape \(1, 5, 4, 48, 12\)"):
        target.loss(torch.zeros(1, 5, 4, 48, 12))
    with pytest.raises(InputError, match="n_heads"):
        SymbolicLMConfig(d_model=30, n_heads=4)
    with pytest.raises(InputError, match="max_tokens 1"):
        SymbolicLMConfig(max_tokens=1)


def test_is_a_target_and_configs_have_the_documented_sizes():
    target = tiny()
    assert isinstance(target, Target) and target.name == "symbolic-lm"
    assert target.num_parameters() == 53_562
    paper = SymbolicLMConfig.paper()
    assert (paper.d_model, paper.n_layers, paper.n_heads) == (512, 12, 16)
    assert SymbolicLMConfig.cpu() == SymbolicLMConfig()
    assert SymbolicLMConfig.from_dict(paper.to_dict()) == paper
