"""MuseGAN target: shapes, parameter counts, L_gen readings, training, determinism, I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.protocols import Target
from harmonycloak.targets import MuseGANConfig, MuseGANTarget
from harmonycloak.targets.musegan import MuseGANDiscriminator, MuseGANGenerator, _PatchConv2d

SHAPE = (5, 4, 48, 84)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pattern(n: int) -> torch.Tensor:
    """A fixed toy 'song': each track repeats one pitch on every beat."""
    x = torch.zeros(n, *SHAPE)
    for track in range(5):
        x[:, track, :, ::12, 36 + 5 * track] = 1.0
    return x


def tiny(**kwargs: object) -> MuseGANTarget:
    return MuseGANTarget(MuseGANConfig.tiny(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained_run() -> tuple[MuseGANTarget, list[float]]:
    """A tiny target whose D has learned the pattern (Adam: a smooth, monotone run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    target = tiny(seed=0, optimizer="adam", lr=3e-3)
    losses = [target.train_step(pattern(8)) for _ in range(20)]
    torch.set_num_threads(before)
    return target, losses


@pytest.fixture
def trained(trained_run: tuple[MuseGANTarget, list[float]]) -> MuseGANTarget:
    return trained_run[0]


def test_is_a_target() -> None:
    target = tiny()
    assert isinstance(target, Target)
    assert target.name == "musegan"


def test_default_parameter_counts_match_paper_table_2() -> None:
    counts = MuseGANTarget().num_parameters()
    assert 600_000 <= counts["generator"] <= 800_000  # table 2: MuseGAN 720k
    assert counts == {"generator": 713_641, "discriminator": 1_362_065}  # module docstring
    assert tiny().num_parameters() == {"generator": 6_177, "discriminator": 5_465}


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("kernel", [(1, 12), (3, 1), (2, 2)])
def test_patch_layer_equals_torch_grouped_conv(transposed: bool, kernel: tuple[int, int]) -> None:
    groups, cin, cout = 5, 10, 15
    patch = _PatchConv2d(cin, cout, kernel, groups=groups, transposed=transposed)
    cls = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    ref = cls(cin, cout, kernel, stride=kernel, groups=groups)
    with torch.no_grad():
        ref.weight.copy_(patch.weight.reshape(ref.weight.shape))
        ref.bias.copy_(patch.bias)
    x = torch.randn(3, cin, 6, 24)
    assert torch.allclose(patch(x), ref(x), atol=1e-5)


def test_networks_shapes_and_range() -> None:
    config = MuseGANConfig.tiny()
    g, d = MuseGANGenerator(config), MuseGANDiscriminator(config)
    with torch.no_grad():
        out = g(torch.randn(3, g.noise_dims()))
    assert out.shape == (3, *SHAPE)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert d(out).shape == (3,)


def test_generate_is_seeded_and_batch_independent() -> None:
    target = tiny(seed=1)
    a = target.generate(5, torch.Generator().manual_seed(7))
    b = target.generate(5, torch.Generator().manual_seed(7), batch_size=2)
    assert a.shape == (5, *SHAPE) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6)  # eval-mode batch norm: no batch statistics
    assert torch.equal(a, target.generate(5, torch.Generator().manual_seed(7)))
    assert not torch.allclose(a, target.generate(5, torch.Generator().manual_seed(8)))
    assert target.generate(0, torch.Generator()).shape == (0, *SHAPE)
    assert torch.equal(target.generate(2), target.generate(2, torch.Generator().manual_seed(0)))
    assert target.generator.training  # generate() restores train mode


def test_loss_is_differentiable_in_x_only() -> None:
    target = tiny()
    x = torch.rand(4, *SHAPE, requires_grad=True)
    loss = target.loss(x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in target.discriminator.parameters())


def test_example_losses_match_loss_and_do_not_mix_the_batch() -> None:
    target = tiny()
    x = torch.rand(4, *SHAPE)
    x_before = x.clone()
    per = target.example_losses(x)
    assert per.shape == (4,) and not per.requires_grad
    assert torch.allclose(per.mean(), target.loss(x).detach())
    assert torch.allclose(per[2:3], target.example_losses(x[2:3]), atol=1e-6)
    assert torch.equal(x, x_before)


def test_train_step_reduces_discriminator_loss() -> None:
    # The paper's outer loop: SGD, momentum 0.9, lr 0.025. A GAN game is not monotone
    # (G catches up and D's loss jumps again), so look at the best D reached.
    target = tiny(seed=0)
    losses = [target.train_step(pattern(8)) for _ in range(30)]
    assert losses[0] == pytest.approx(2 * 0.6931, abs=0.05)  # chance: 2 ln 2
    assert min(losses) < 0.5 * losses[0]
    assert all(isinstance(v, float) for v in losses)


def test_adam_attacker_defaults_and_training(
        trained_run: tuple[MuseGANTarget, list[float]]) -> None:
    target = tiny(optimizer="adam")
    assert target.lr == 1e-4
    assert isinstance(target.d_optimizer, torch.optim.Adam)
    assert target.d_optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    sgd = tiny()
    assert sgd.lr == 0.025 and sgd.d_optimizer.param_groups[0]["momentum"] == 0.9
    trained, losses = trained_run
    assert trained.steps == 20
    assert losses[-1] < 0.1 * losses[0]  # from 2 ln 2 (chance) to a D that knows the pattern


def test_objectives_signs(trained: MuseGANTarget) -> None:
    real, noise = pattern(4), torch.rand(4, *SHAPE)
    min_min = trained.example_losses(real)
    # min-min: -log D(x); D has learned the pattern, so real data already scores low ...
    assert float(min_min.max()) < float(trained.example_losses(noise).min())
    # ... and descending the loss in x makes it lower still (the shortcut δ exploits).
    x = real.clone().requires_grad_()
    trained.loss(x).backward()
    assert float(trained.loss(real - 0.01 * x.grad.sign())) < float(min_min.mean())

    printed = MuseGANTarget(trained.config, objective="as-printed")
    printed.load_state_dict(trained.state_dict())
    # as-printed: -log(1 - D(x)), high on what D calls real, low on what it calls fake.
    assert float(printed.example_losses(real).min()) > float(printed.example_losses(noise).max())
    # Both are softplus(∓logit): per example, their gradients in x point opposite ways.
    y = torch.rand(1, *SHAPE)
    grads = []
    for t in (trained, printed):
        yy = y.clone().requires_grad_()
        t.loss(yy).backward()
        grads.append(yy.grad.flatten())
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert float(cos) == pytest.approx(-1.0, abs=1e-5)


def test_same_seed_same_weights_and_steps_without_touching_global_rng() -> None:
    rng_before = torch.get_rng_state()
    a, b, c = tiny(seed=5), tiny(seed=5), tiny(seed=6)
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.discriminator.parameters()),
                           next(c.discriminator.parameters()))
    x = pattern(4)
    la = [a.train_step(x) for _ in range(3)]
    lb = [b.train_step(x) for _ in range(3)]
    assert la == lb
    assert la != [c.train_step(x) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_save_load_round_trip(tmp_path: Path) -> None:
    target = tiny(seed=2, optimizer="adam", lr=1e-3, objective="as-printed")
    for _ in range(2):
        target.train_step(pattern(4))
    out = target.save(tmp_path / "model")
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "harmonycloak.musegan" and meta["version"] == 1
    assert (out / "model.safetensors").is_file() or (out / "model.pt").is_file()

    loaded = MuseGANTarget.load(out)
    assert loaded.config == target.config and loaded.objective == "as-printed"
    assert loaded.optimizer_name == "adam" and loaded.lr == 1e-3 and loaded.steps == 2
    x = torch.rand(3, *SHAPE)
    assert torch.equal(loaded.example_losses(x), target.example_losses(x))
    assert torch.equal(loaded.generate(2, torch.Generator().manual_seed(0)),
                       target.generate(2, torch.Generator().manual_seed(0)))
    # Optimizer state and noise RNG travel too: training resumes identically.
    assert loaded.train_step(pattern(4)) == target.train_step(pattern(4))
    assert MuseGANTarget.load(out, objective="min-min").objective == "min-min"


def test_load_with_the_defenders_optimizer(tmp_path: Path) -> None:
    # The registry trains an attacker's checkpoint with Adam, then reloads it for the
    # defender's outer loop with SGD: same weights, fresh SGD state, seed-driven noise.
    attacker = tiny(seed=2, optimizer="adam", lr=1e-3)
    attacker.train_step(pattern(4))
    out = attacker.save(tmp_path / "m")
    a = MuseGANTarget.load(out, optimizer="sgd", seed=9)
    b = MuseGANTarget.load(out, optimizer="sgd", lr=0.025, seed=9)
    assert isinstance(a.d_optimizer, torch.optim.SGD) and a.lr == 0.025 and a.seed == 9
    x = torch.rand(2, *SHAPE)
    assert torch.equal(a.example_losses(x), attacker.example_losses(x))
    assert a.train_step(pattern(4)) == b.train_step(pattern(4))
    assert MuseGANTarget.load(out, lr=5e-4).d_optimizer.param_groups[0]["lr"] == 5e-4


def test_save_uses_safetensors_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    out = tiny().save(tmp_path / "m")
    assert (out / "model.safetensors").is_file() and not (out / "model.pt").exists()


def test_load_errors_name_the_directory_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="nowhere.*no such model directory.*save"):
        MuseGANTarget.load(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        MuseGANTarget.load(empty)
    out = tiny().save(tmp_path / "m")
    for weights in ("model.pt", "model.safetensors"):
        (out / weights).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="no weights"):
        MuseGANTarget.load(out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a usable MuseGAN config"):
        MuseGANTarget.load(out)
    # Weights of another architecture do not load silently.
    other = MuseGANTarget(MuseGANConfig.tiny()).save(tmp_path / "other")
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["z_dim"] = 5
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="cannot load these weights"):
        MuseGANTarget.load(other)


def test_bad_inputs_raise_input_error() -> None:
    target = tiny()
    with pytest.raises(InputError, match=r"expected \[batch, 5, 4, 48, 84\]"):
        target.loss(torch.rand(2, 5, 4, 48, 12))
    with pytest.raises(InputError, match="objective"):
        tiny(objective="max-min")
    with pytest.raises(InputError, match="optimizer"):
        tiny(optimizer="rmsprop")
    with pytest.raises(InputError, match="at least 2"):
        target.train_step(pattern(1))
    with pytest.raises(InputError, match="positive integer"):
        MuseGANTarget(MuseGANConfig(z_dim=0))
