"""CLAP encoder: front-end parity with ClapFeatureExtractor, gradients, loading, I/O.

Tiny random-init CLAP models of the real architecture are saved to tmp folders; nothing
is downloaded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import ClapConfig, ClapFeatureExtractor, ClapModel  # noqa: E402

from harmonycloak.errors import ModelLoadError  # noqa: E402
from harmonycloak.perturb.protocols import Target  # noqa: E402
from harmonycloak.targets.clap import ClapEncoder, ClapFrontEnd, ClapFrontEndConfig  # noqa: E402
from harmonycloak.targets.embedding import AudioEncoder, EmbeddingShiftTarget  # noqa: E402

RATE = 48_000
TINY_AUDIO = dict(window_size=8, num_mel_bins=64, spec_size=256, hidden_size=16,
                  patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2])
TINY_TEXT = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=40)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_clap_dir(path: Path, *, fusion: bool = False, truncation: str = "rand_trunc",
                  padding: str = "repeatpad", seed: int = 0) -> Path:
    """A tiny random ClapModel (text tower included, as real checkpoints) plus extractor."""
    audio = dict(TINY_AUDIO, enable_fusion=fusion, fusion_type="aff_2d" if fusion else None)
    config = ClapConfig(text_config=TINY_TEXT, audio_config=audio, projection_dim=8)
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(path)
    ClapFeatureExtractor(truncation=truncation, padding=padding).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def unfused_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clap_dir(tmp_path_factory.mktemp("clap_unfused"))


@pytest.fixture(scope="module")
def fused_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clap_dir(tmp_path_factory.mktemp("clap_fused"), fusion=True,
                         truncation="fusion", seed=1)


def tone_clip(duration_s: float, *, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Two partials and a little noise, float32 ``[samples]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(duration_s * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 661 * t)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def extractor_features(extractor: ClapFeatureExtractor, wave: np.ndarray,
                       seed: int = 1) -> tuple[np.ndarray, dict]:
    """The extractor's features for one clip, and the random choices it made."""
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = extractor(wave, sampling_rate=RATE, return_tensors="np")
    # Replay numpy's draws (same seed, same calls) to give the torch front end the same crops.
    np.random.seed(seed)
    choices: dict = {}
    max_samples = extractor.nb_max_samples
    if wave.size > max_samples:
        if extractor.truncation == "rand_trunc":
            choices["crop_starts"] = [np.random.randint(0, wave.size - max_samples + 1)]
        else:
            total = 1 + wave.size // extractor.hop_length
            chunk = max_samples // extractor.hop_length + 1
            if total != chunk:
                ranges = np.array_split(list(range(0, total - chunk + 1)), 3)
                ranges = [r if len(r) else [0] for r in ranges]
                choices["chunk_starts"] = [tuple(int(np.random.choice(r)) for r in ranges)]
    return out["input_features"][0], choices


# ------------------------------------------------------------------------- front end


def test_mel_filterbanks_equal_the_extractors() -> None:
    extractor = ClapFeatureExtractor(frequency_min=50)
    front = ClapFrontEnd(ClapFrontEndConfig.from_feature_extractor(extractor))
    np.testing.assert_allclose(front.filters_htk.numpy(), extractor.mel_filters, atol=1e-12)
    np.testing.assert_allclose(front.filters_slaney.numpy(), extractor.mel_filters_slaney,
                               atol=1e-12)


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
@pytest.mark.parametrize("duration_s", [3.3, 10.0, 10.005, 12.5])
def test_features_equal_the_extractors(truncation: str, padding: str, duration_s: float) -> None:
    extractor = ClapFeatureExtractor(truncation=truncation, padding=padding)
    front = ClapFrontEnd(ClapFrontEndConfig.from_feature_extractor(extractor))
    wave = tone_clip(duration_s)
    expected, choices = extractor_features(extractor, wave)
    got64, longer = front(torch.from_numpy(wave).double()[None], **choices)
    got32, _ = front(torch.from_numpy(wave)[None], **choices)
    assert got64.shape == (1, *expected.shape)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got64[0].numpy(), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got32[0].numpy(), expected, atol=5e-3, rtol=0)
    # is_longer: really longer, except the extractor's "one hop longer" case in fusion mode.
    whole = truncation == "fusion" and duration_s == 10.005
    assert bool(longer) == (wave.size > extractor.nb_max_samples and not whole)


def test_padding_modes_fill_the_window_as_documented() -> None:
    ones = torch.ones(1, 200_000, dtype=torch.float64)       # 200k samples into 480k
    y = ClapFrontEnd(ClapFrontEndConfig(padding="repeatpad")).pad(ones)
    assert y.shape[-1] == 480_000
    assert float(y[0, :400_000].sum()) == 400_000 and float(y[0, 400_000:].abs().sum()) == 0
    y = ClapFrontEnd(ClapFrontEndConfig(padding="repeat")).pad(ones)
    assert y.shape[-1] == 480_000 and float(y.sum()) == 480_000
    y = ClapFrontEnd(ClapFrontEndConfig(padding="pad")).pad(ones)
    assert y.shape[-1] == 480_000 and float(y.sum()) == 200_000


def test_random_crops_come_from_the_generator() -> None:
    front = ClapFrontEnd(ClapFrontEndConfig(truncation="rand_trunc"))
    x = torch.from_numpy(tone_clip(12.0, seed=3))[None]
    a, _ = front(x, generator=torch.Generator().manual_seed(5))
    b, _ = front(x, generator=torch.Generator().manual_seed(5))
    c, _ = front(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ------------------------------------------------------------------- the encoder


def test_load_reads_only_the_audio_tower_quietly(unfused_dir: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    encoder = ClapEncoder.load(unfused_dir)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert isinstance(encoder, AudioEncoder)
    assert encoder.sample_rate_hz == 48_000 and encoder.window_samples == 480_000
    assert encoder.embedding_dim == 8
    full = ClapModel.from_pretrained(unfused_dir)
    audio = sum(p.numel() for n, p in full.named_parameters() if n.startswith("audio_"))
    assert encoder.num_parameters() == audio


def test_embedding_equals_transformers(unfused_dir: Path) -> None:
    encoder = ClapEncoder.load(unfused_dir)
    extractor = ClapFeatureExtractor.from_pretrained(unfused_dir)
    model = ClapModel.from_pretrained(unfused_dir).eval()
    wave = tone_clip(4.0, seed=2)
    expected_features, _ = extractor_features(extractor, wave)
    with torch.no_grad():
        expected = model.get_audio_features(
            input_features=torch.from_numpy(expected_features)[None].float(),
            is_longer=torch.tensor([[False]])).pooler_output
        got = encoder.embed(torch.from_numpy(wave)[None])
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-3)
    assert torch.allclose(got.norm(dim=-1), torch.ones(1))


def test_fused_long_input_equals_transformers_and_has_gradients(fused_dir: Path) -> None:
    encoder = ClapEncoder.load(fused_dir)
    extractor = ClapFeatureExtractor.from_pretrained(fused_dir)
    model = ClapModel.from_pretrained(fused_dir).eval()
    wave = tone_clip(11.0, seed=4)
    expected_features, choices = extractor_features(extractor, wave)
    with torch.no_grad():
        expected = model.get_audio_features(
            input_features=torch.from_numpy(expected_features)[None].float(),
            is_longer=torch.tensor([[True]])).pooler_output
    x = torch.from_numpy(wave)[None].requires_grad_(True)
    features, longer = encoder.front_end(x, **choices)
    assert bool(longer)
    got = encoder.embed_features(features, longer)
    torch.testing.assert_close(got.detach(), expected, atol=2e-4, rtol=1e-3)
    got.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradient_reaches_the_waveform_through_the_target(unfused_dir: Path) -> None:
    encoder = ClapEncoder.load(unfused_dir)
    target = EmbeddingShiftTarget(encoder, sample_rate_hz=44_100)
    assert isinstance(target, Target)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.stack([tone_clip(1.5, rate=44_100, seed=s) for s in (0, 1)]))[None]
    x = x + 0.01 * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    target.set_reference(x)
    loss = target.loss(x)
    assert abs(float(loss) - 1.0) < 1e-5
    # At x itself the cosine is at its maximum (gradient ~0): differentiate at a shifted point.
    shifted = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    xs = shifted.requires_grad_(True)
    target.loss(xs).backward()
    assert xs.grad is not None and torch.isfinite(xs.grad).all()
    assert (xs.grad.abs().sum(dim=-1) > 0).all()      # both channels
    assert not any(p.requires_grad for p in encoder.parameters())
    assert target.train_step(x) != target.train_step(x)  # NaN


def test_encoder_stays_in_eval_mode(unfused_dir: Path) -> None:
    encoder = ClapEncoder.load(unfused_dir)
    encoder.train()
    assert not encoder.training and not encoder.model.training
    x = torch.from_numpy(tone_clip(1.0))[None]
    assert torch.equal(encoder.embed(x), encoder.embed(x))


def test_save_and_load_round_trip(unfused_dir: Path, tmp_path: Path) -> None:
    encoder = ClapEncoder.load(unfused_dir)
    target = EmbeddingShiftTarget(encoder, sample_rate_hz=48_000, seed=3)
    target.save(tmp_path / "target")
    again = EmbeddingShiftTarget.load(tmp_path / "target")
    assert again.options() == target.options()
    assert isinstance(again.encoder, ClapEncoder)
    x = torch.from_numpy(tone_clip(2.0, seed=7))[None, None]
    torch.testing.assert_close(again.embed(x), target.embed(x))
    assert (tmp_path / "target" / "encoder" / "preprocessor_config.json").is_file()


# ------------------------------------------------------------------------- errors


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nope: no such CLAP model directory.*"
                                             r"preprocessor_config\.json.*laion/clap-htsat"):
        ClapEncoder.load(tmp_path / "nope")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "preprocessor_config.json"])
def test_missing_file_is_named(unfused_dir: Path, tmp_path: Path, name: str) -> None:
    for file in unfused_dir.iterdir():
        if file.name != name:
            (tmp_path / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ModelLoadError, match=rf"{tmp_path}: {name} missing; a CLAP model "
                                             r"directory holds config\.json"):
        ClapEncoder.load(tmp_path)


def test_other_model_type_is_refused(unfused_dir: Path, tmp_path: Path) -> None:
    for file in unfused_dir.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "bert"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model_type 'bert' is not a CLAP model"):
        ClapEncoder.load(tmp_path)


def test_corrupt_weights_are_refused(unfused_dir: Path, tmp_path: Path) -> None:
    for file in unfused_dir.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"cannot load the CLAP audio model"):
        ClapEncoder.load(tmp_path)


def test_weights_without_the_audio_tower_are_refused(unfused_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    for file in unfused_dir.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    weights = load_file(str(unfused_dir / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if not k.startswith("audio_projection")}
    save_file(kept, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"do not cover the CLAP audio tower.*"
                                             r"audio_projection"):
        ClapEncoder.load(tmp_path)


def test_extractor_that_does_not_fit_the_model(unfused_dir: Path, tmp_path: Path) -> None:
    for file in unfused_dir.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    ClapFeatureExtractor(feature_size=32).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"preprocessor_config\.json does not fit "
                                             r"config\.json.*32 mel bands.*num_mel_bins=64"):
        ClapEncoder.load(tmp_path)


def test_a_model_that_is_not_clap_audio_is_refused() -> None:
    from harmonycloak.errors import InputError

    with pytest.raises(InputError, match=r"Linear is not a CLAP audio model; give a "
                                         r"transformers ClapAudioModelWithProjection"):
        ClapEncoder(torch.nn.Linear(2, 2))
