"""Latent-diffusion target: shapes for any length, gradients, determinism, training, I/O.

Tiny configs only (under 20 s on one thread); timings of the default config are in the
module docstring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.protocols import Target
from harmonycloak.targets.latent_diffusion import (DiffusionConfig, LatentDiffusionConfig,
                                                   LatentDiffusionTarget, UNetConfig,
                                                   VAEConfig, beta_schedule)

SR = 44100


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kwargs: object) -> LatentDiffusionTarget:
    return LatentDiffusionTarget(LatentDiffusionConfig.tiny(), **kwargs)  # type: ignore[arg-type]


def chord(midi: tuple[int, ...], *, seconds: float = 0.5, sample_rate_hz: int = SR,
          channels: int = 2) -> torch.Tensor:
    """A held chord with three harmonics per note and a decay, ``[channels, samples]``.

    Channel c is detuned by c cents, so the channels differ."""
    t = torch.arange(int(seconds * sample_rate_hz), dtype=torch.float64) / sample_rate_hz
    out = []
    for c in range(channels):
        wave = torch.zeros_like(t)
        for note in midi:
            f0 = 440.0 * 2 ** ((note - 69 + c / 100) / 12)
            for k in (1, 2, 3):
                wave += torch.sin(2 * math.pi * k * f0 * t) / k
        out.append(wave * torch.exp(-t / 0.4))
    x = torch.stack(out)
    return (0.4 * x / x.abs().max()).to(torch.float32)


def chords_batch() -> torch.Tensor:
    """Four different chords, stereo, 0.5 s: ``[4, 2, samples]``."""
    return torch.stack([chord(c) for c in ((60, 64, 67), (57, 60, 64), (62, 65, 69),
                                           (55, 59, 62))])


# --------------------------------------------------------------------- protocol, configs


def test_is_an_audio_target_with_the_documented_sizes() -> None:
    target = tiny()
    assert isinstance(target, Target)
    assert target.name == "latent-diffusion" and target.sample_rate_hz == SR
    assert target.num_parameters() == {"vae": 6_633, "unet": 32_762}
    assert target.config.latent_shape == (2, 8, 16)
    assert LatentDiffusionConfig.cpu().latent_shape == (8, 16, 64)
    assert LatentDiffusionConfig.large().patch_frames == 1024           # MusicLDM's 10.24 s


def test_default_optimizer_is_the_papers_outer_loop() -> None:
    opt = tiny().optimizer
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["lr"] == 0.025 and opt.param_groups[0]["momentum"] == 0.9
    assert isinstance(tiny(optimizer="adam").optimizer, torch.optim.Adam)
    assert isinstance(tiny(optimizer="adamw").optimizer, torch.optim.AdamW)


@pytest.mark.parametrize("kind", ["scaled-linear", "linear", "cosine"])
def test_beta_schedules(kind: str) -> None:
    betas = beta_schedule(kind, 1000, beta_start=0.0015, beta_end=0.0195)  # type: ignore[arg-type]
    assert betas.shape == (1000,)
    assert bool((betas > 0).all() and (betas < 1).all())
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert bool((alpha_bar.diff() < 0).all())
    assert float(alpha_bar[-1]) < 0.01 and float(alpha_bar[0]) > 0.99
    if kind != "cosine":
        assert float(betas[0]) == pytest.approx(0.0015)
        assert float(betas[-1]) == pytest.approx(0.0195)


def test_config_round_trip_and_bad_configs() -> None:
    for config in (LatentDiffusionConfig.tiny(), LatentDiffusionConfig.cpu(),
                   LatentDiffusionConfig.large()):
        data = json.loads(json.dumps(config.to_dict()))
        assert LatentDiffusionConfig.from_dict(data) == config
    with pytest.raises(InputError, match=r"patch_frames=30: must be a multiple of 4"):
        LatentDiffusionConfig(patch_frames=30, vae=VAEConfig(channels=(4, 8)),
                              unet=UNetConfig(channels=(8, 16), heads=2))
    with pytest.raises(InputError, match=r"heads=3 must divide"):
        UNetConfig(channels=(8, 16), heads=3)
    with pytest.raises(InputError, match=r"schedule='sigmoid'"):
        DiffusionConfig(schedule="sigmoid")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"unknown fields \['depth'\]"):
        LatentDiffusionConfig.from_dict({"unet": {"depth": 3}})


def test_bad_options_and_inputs_say_the_fix() -> None:
    with pytest.raises(InputError, match=r"stereo='side'.*'mid' or 'channels'"):
        tiny(stereo="side")
    with pytest.raises(InputError, match=r"optimizer='rmsprop'"):
        tiny(optimizer="rmsprop")
    with pytest.raises(InputError, match=r"sample_rate_hz=100"):
        tiny(sample_rate_hz=100)
    with pytest.raises(InputError, match=r"shape \(2, 4410\).*\[batch, channels, samples\]"):
        tiny().loss(torch.zeros(2, 4410))
    with pytest.raises(InputError, match=r"generate: n=-1"):
        tiny().generate(-1, 1.0)


# ---------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("sample_rate_hz", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("samples", [1, 700, 11025, 22050 + 17])
def test_any_length_gives_whole_patches_and_finite_losses(sample_rate_hz: int, channels: int,
                                                          samples: int) -> None:
    target = tiny(sample_rate_hz=sample_rate_hz, stereo="channels")
    x = 0.1 * torch.randn(2, channels, samples, generator=torch.Generator().manual_seed(0))
    z0, mask = target.latents(x)
    cfg = target.config
    s16 = -(-samples * 16000 // sample_rate_hz)                   # resampled length (ceil)
    valid = -(-s16 // cfg.mel.hop)                                # frames centred inside
    patches = -(-valid // cfg.patch_frames)
    assert z0.shape == (2 * channels * patches, *cfg.latent_shape)
    latent_valid = -(-valid // cfg.vae.factor)                    # latent frames j·f < valid
    assert mask.shape == (2 * channels * patches, cfg.latent_shape[2])
    assert int(mask.sum()) == 2 * channels * latent_valid
    assert bool((mask.view(2 * channels, -1)[:, :latent_valid] == 1).all())
    loss = target.loss(x)
    assert loss.shape == () and math.isfinite(float(loss))
    per = target.example_losses(x)
    assert per.shape == (2,) and bool(torch.isfinite(per).all())


def test_log_mel_covers_the_clip() -> None:
    target = tiny()
    out = target.log_mel(torch.zeros(3, 2, SR))
    assert out.shape == (3, 1, 16, 1 + 16000 // 128)
    assert tiny(stereo="channels").log_mel(torch.zeros(3, 2, SR)).shape[1] == 2


# ------------------------------------------------------------------------- gradients


def test_gradient_reaches_the_waveform_and_not_the_weights() -> None:
    target = tiny()
    x = chords_batch()[:2].requires_grad_(True)
    target.loss(x).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in target.unet.parameters())
    assert all(p.grad is None for p in target.vae.parameters())
    # Mid: the mono mix is the example, so both channels get the same gradient.
    assert torch.equal(x.grad[:, 0], x.grad[:, 1])


def test_channels_mode_gives_each_channel_its_own_gradient() -> None:
    x = chords_batch()[:1].requires_grad_(True)
    tiny(stereo="channels").loss(x).backward()
    assert x.grad is not None
    assert float(x.grad[:, 0].abs().sum()) > 0 and float(x.grad[:, 1].abs().sum()) > 0
    assert not torch.allclose(x.grad[:, 0], x.grad[:, 1])


# ---------------------------------------------------------------------- determinism


def test_loss_is_deterministic_given_seed_and_call_sequence() -> None:
    x = chords_batch()[:2]
    a, b, c = tiny(seed=3), tiny(seed=3), tiny(seed=4)
    seq_a = [float(a.loss(x)) for _ in range(3)]
    seq_b = [float(b.loss(x)) for _ in range(3)]
    assert seq_a == seq_b
    assert len(set(seq_a)) == 3                                   # fresh t and ε per call
    assert float(c.loss(x)) != seq_a[0]
    before = torch.random.get_rng_state()
    a.loss(x)
    assert torch.equal(before, torch.random.get_rng_state())      # global RNG untouched


def test_example_losses_are_reproducible_batch_independent_and_leave_input() -> None:
    target = tiny(seed=1)
    x = chords_batch()
    copy = x.clone()
    first = target.example_losses(x)
    assert torch.equal(first, target.example_losses(x))           # fixed t_k and ε
    assert torch.equal(x, copy)
    singles = torch.cat([target.example_losses(x[i:i + 1]) for i in range(4)])
    assert torch.allclose(first, singles, rtol=1e-5, atol=1e-6)
    assert torch.allclose(first, target.example_losses(x, chunk=3), rtol=1e-5, atol=1e-6)
    # The measurement does not advance the training generator.
    ref = tiny(seed=1)
    assert float(target.loss(x)) == float(ref.loss(x))


def test_mid_of_identical_channels_equals_mono() -> None:
    target = tiny()
    mono = chord((60, 64, 67), channels=1).unsqueeze(0)
    stereo = mono.expand(1, 2, -1).contiguous()
    assert torch.allclose(target.example_losses(mono), target.example_losses(stereo),
                          rtol=1e-6)


# ------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained() -> tuple[LatentDiffusionTarget, list[float], float, float]:
    """VAE fitted on the chords, then 30 Adam steps of the denoiser on the same batch."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    target = tiny(seed=0, optimizer="adam", lr=3e-3)
    x = chords_batch()
    vae_losses = target.fit_autoencoder(x, steps=60, batch_size=8, lr=1e-2)
    start = float(target.example_losses(x).mean())
    for _ in range(30):
        target.train_step(x)
    end = float(target.example_losses(x).mean())
    torch.set_num_threads(before)
    return target, vae_losses, start, end


def test_training_lowers_the_loss_on_a_fixed_batch(
        trained: tuple[LatentDiffusionTarget, list[float], float, float]) -> None:
    target, _, start, end = trained
    assert end < 0.7 * start
    assert target.steps == 30


def test_fit_autoencoder_learns_and_normalizes_the_latents(
        trained: tuple[LatentDiffusionTarget, list[float], float, float]) -> None:
    target, vae_losses, _, _ = trained
    assert len(vae_losses) == 60
    assert sum(vae_losses[-10:]) / 10 < 0.5 * sum(vae_losses[:10]) / 10
    z0, _ = target.latents(chords_batch())
    assert float(z0.std()) == pytest.approx(1.0, rel=0.05)        # scale by std
    assert all(not p.requires_grad for p in target.vae.parameters())


def test_train_step_leaves_the_vae_alone() -> None:
    target = tiny()
    vae_before = {k: v.clone() for k, v in target.vae.state_dict().items()}
    unet_before = {k: v.clone() for k, v in target.unet.state_dict().items()}
    loss = target.train_step(chords_batch()[:2])
    assert math.isfinite(loss)
    assert all(torch.equal(v, target.vae.state_dict()[k]) for k, v in vae_before.items())
    assert any(not torch.equal(v, target.unet.state_dict()[k]) for k, v in unet_before.items())


# ------------------------------------------------------------------------ generation


def test_generate_log_mels_and_audio() -> None:
    target = tiny()
    mel = target.generate(2, 0.3, torch.Generator().manual_seed(5), steps=4)
    assert mel.shape == (2, 16, 1 + round(0.3 * 16000) // 128)
    assert bool(torch.isfinite(mel).all())
    again = target.generate(2, 0.3, torch.Generator().manual_seed(5), steps=4)
    assert torch.equal(mel, again)
    other = target.generate(2, 0.3, torch.Generator().manual_seed(6), steps=4)
    assert not torch.equal(mel, other)
    audio = target.generate_audio(1, 0.3, torch.Generator().manual_seed(5), steps=4,
                                  iterations=4)
    assert audio.shape == (1, 1, -(-round(0.3 * 16000) * SR // 16000))
    assert float(audio.abs().max()) <= 1.0
    assert math.isfinite(float(target.loss(audio)))               # back into the model
    assert target.generate(0, 1.0, steps=2).shape == (0, 16, 126)
    assert target.generate_audio(0, 0.1, steps=2).shape == (0, 1, 4410)
    assert target.generate_audio(1, 0.001, steps=2, iterations=2).shape == (1, 1, 45)


# -------------------------------------------------------------------------- save/load


def test_save_load_round_trip_gives_identical_losses(tmp_path: Path) -> None:
    target = tiny(seed=2, optimizer="adam", lr=3e-3)
    x = chords_batch()[:2]
    target.fit_autoencoder(x, steps=3, batch_size=4)
    for _ in range(2):
        target.train_step(x)
    measured = target.example_losses(x)
    target.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json",
                                                                      "model.safetensors"]
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["format"] == "harmonycloak.latent_diffusion" and meta["version"] == 1
    loaded = LatentDiffusionTarget.load(tmp_path / "model")
    assert loaded.latent_scale == target.latent_scale != 1.0 and loaded.steps == 2
    assert loaded.options() == target.options()
    assert torch.equal(loaded.example_losses(x), measured)
    assert float(loaded.loss(x)) == float(target.loss(x))         # generator resumed
    assert loaded.train_step(x) == target.train_step(x)           # Adam state resumed
    assert float(loaded.loss(x)) == float(target.loss(x))
    sgd = LatentDiffusionTarget.load(tmp_path / "model", optimizer="sgd", seed=9)
    assert isinstance(sgd.optimizer, torch.optim.SGD) and sgd.seed == 9
    assert sgd.optimizer.param_groups[0]["lr"] == 0.025            # fresh, with SGD's default
    assert torch.equal(sgd.example_losses(x), measured)            # weights only
    again = LatentDiffusionTarget.load(tmp_path / "model", optimizer="sgd", seed=9)
    assert float(sgd.loss(x)) == float(again.loss(x))              # reseeded generator
    in_memory = tiny(optimizer="adam")
    in_memory.load_state_dict(loaded.state_dict())                # the protocol's pair
    assert torch.equal(in_memory.example_losses(x), loaded.example_losses(x))
    assert float(in_memory.loss(x)) == float(loaded.loss(x))


def test_bad_directories_fail_with_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no such model directory.*LatentDiffusionTarget"):
        LatentDiffusionTarget.load(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"config.json is missing"):
        LatentDiffusionTarget.load(empty)
    good = tiny().save(tmp_path / "good")
    meta = json.loads((good / "config.json").read_text())

    def variant(name: str, change: dict[str, object]) -> Path:
        where = tmp_path / name
        where.mkdir()
        (where / "config.json").write_text(json.dumps({**meta, **change}))
        (where / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
        return where

    with pytest.raises(ModelLoadError, match=r"format 'harmonycloak.musegan' is not"):
        LatentDiffusionTarget.load(variant("fmt", {"format": "harmonycloak.musegan"}))
    with pytest.raises(ModelLoadError, match=r"format version 99 is not 1"):
        LatentDiffusionTarget.load(variant("ver", {"version": 99}))
    other = LatentDiffusionConfig.tiny().to_dict()
    other["unet"]["channels"] = [8, 32]
    with pytest.raises(ModelLoadError,
                       match=r"cannot load these weights.*54 mis-shaped.*down_blocks.1.conv1"):
        LatentDiffusionTarget.load(variant("shape", {"config": other}))
    corrupt = variant("corrupt", {})
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"model.safetensors: cannot load"):
        LatentDiffusionTarget.load(corrupt)
    (corrupt / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model.safetensors is missing"):
        LatentDiffusionTarget.load(corrupt)
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"not a usable latent-diffusion config"):
        LatentDiffusionTarget.load(corrupt)
