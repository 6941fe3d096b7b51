"""Real transformers checkpoints (EnCodec, MusicGen) loaded from a local folder as targets.

The checkpoints are tiny random-init configs of the real classes (``EncodecConfig``,
``MusicgenConfig`` with a tiny T5 text encoder, decoder and EnCodec), written with
``save_pretrained`` to ``tmp_path``; nothing is downloaded. Random-init EnCodec codebooks
are all zero, so the fixtures fill them with seeded random vectors before saving.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    EncodecConfig,
    EncodecModel,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)

from harmonycloak.errors import InputError, ModelLoadError  # noqa: E402
from harmonycloak.perturb.dsp import resample  # noqa: E402
from harmonycloak.perturb.protocols import Target  # noqa: E402
from harmonycloak.targets.codec_lm import delay_pattern, shift_right  # noqa: E402
from harmonycloak.targets.pretrained import (  # noqa: E402
    EncodecTarget,
    MusicgenTarget,
    _positions,
    load_pretrained,
)

VOCAB = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def _quiet_transformers():
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()   # pad id == vocab size is MusicGen's own choice
    yield
    transformers.logging.set_verbosity(verbosity)


def encodec_config(**overrides) -> EncodecConfig:
    """A 16 kHz EnCodec with hop 16 (1 kHz frames), 5-bit codebooks: 2 per 10 kbps."""
    options = dict(sampling_rate=16000, hidden_size=16, num_filters=4, upsampling_ratios=[4, 4],
                   codebook_size=VOCAB, target_bandwidths=[10.0, 20.0], num_lstm_layers=1,
                   audio_channels=1)
    return EncodecConfig(**{**options, **overrides})


def fill_codebooks(encodec: torch.nn.Module, seed: int) -> None:
    """Codebooks from the (random) encoder's own latents on seeded noise, stage by stage,
    as a data-dependent codebook init does, so that codes vary with the input."""
    gen = torch.Generator().manual_seed(seed)
    channels = encodec.config.audio_channels
    noise = 0.1 * torch.randn(4, channels, 4000, generator=gen)
    with torch.no_grad():
        residual = encodec.encoder(noise).transpose(1, 2).reshape(-1, encodec.config.hidden_size)
        for layer in encodec.quantizer.layers:
            book = layer.codebook
            pick = torch.randperm(residual.shape[0], generator=gen)[:book.embed.shape[0]]
            book.embed.copy_(residual[pick])
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
            residual = residual - book.embed[torch.cdist(residual, book.embed).argmin(-1)]


def make_encodec(**overrides) -> EncodecModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EncodecModel(encodec_config(**overrides)).eval()
    fill_codebooks(model, 1)
    return model


def make_musicgen(*, audio_channels: int = 1, num_codebooks: int = 2,
                  dropout: float = 0.1) -> MusicgenForConditionalGeneration:
    text = T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                    num_decoder_layers=1)
    decoder = MusicgenDecoderConfig(vocab_size=VOCAB, max_position_embeddings=256,
                                    num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                                    hidden_size=24, num_codebooks=num_codebooks,
                                    audio_channels=audio_channels, pad_token_id=VOCAB,
                                    bos_token_id=VOCAB, dropout=dropout)
    config = MusicgenConfig(text_encoder=text, audio_encoder=encodec_config(), decoder=decoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MusicgenForConditionalGeneration(config).eval()
    fill_codebooks(model.audio_encoder, 2)
    return model


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("encodec")
    make_encodec().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def musicgen_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("musicgen")
    make_musicgen().save_pretrained(str(path))
    return path


def chord(seconds: float = 0.2, sample_rate_hz: int = 44100, channels: int = 2, *,
          batch: int = 2) -> torch.Tensor:
    """Triads with a decaying envelope ``[batch, channels, samples]``; items and channels differ."""
    t = torch.arange(round(seconds * sample_rate_hz)) / sample_rate_hz
    items = []
    for b in range(batch):
        root = 220.0 * (1.0 + 0.25 * b)
        rows = [0.25 * torch.exp(-3 * t) * sum(torch.sin(2 * math.pi * root * r * (1 + 0.5 * c) * t)
                                               for r in (1.0, 1.25, 1.5)) / 3
                for c in range(channels)]
        items.append(torch.stack(rows))
    return torch.stack(items).float()


# ------------------------------------------------------------------------- EnCodec


def test_encodec_codes_equal_transformers_encode(encodec_dir):
    target = EncodecTarget.load(encodec_dir)
    assert isinstance(target, Target) and target.name == "encodec"
    assert target.num_quantizers == 2 and target.bandwidth_kbps == 10.0
    x = chord()
    wave = resample(x.mean(1, keepdim=True), 44100, 16000)
    expected = target.model.encode(wave, bandwidth=10.0).audio_codes[0]
    assert torch.equal(target.tokenize(x), expected)


@pytest.mark.parametrize("objective", ["reconstruction", "commitment"])
def test_encodec_loss_reaches_the_waveform_and_trains(encodec_dir, objective):
    target = EncodecTarget.load(encodec_dir, objective=objective, sample_rate_hz=48000)
    x = chord(0.1, 48000).requires_grad_(True)
    loss = target.loss(x)
    loss.backward()
    assert torch.isfinite(loss) and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in target.model.parameters())
    per_example = target.example_losses(x.detach())
    assert per_example.shape == (2,)
    assert per_example.mean().item() == pytest.approx(loss.item(), rel=1e-3)
    book = target.model.quantizer.layers[0].codebook.embed.clone()
    weight = next(target.model.encoder.parameters()).detach().clone()
    first = target.train_step(x.detach())
    assert first == pytest.approx(loss.item(), rel=1e-3)
    assert not torch.equal(book, target.model.quantizer.layers[0].codebook.embed)   # EMA
    assert not torch.equal(weight, next(target.model.encoder.parameters()))
    assert target.steps == 1


def test_encodec_chunked_stereo_checkpoint():
    model = make_encodec(audio_channels=2, normalize=True, chunk_length_s=0.05, overlap=0.1)
    target = EncodecTarget(model)
    x = chord(0.2, channels=1)                    # a mono file into a stereo codec
    wave, _ = target.front.rows(x)
    assert wave.shape[:2] == (2, 2)
    codes = target.model.encode(wave, bandwidth=10.0).audio_codes
    assert codes.shape[0] == len(target._chunks(wave.shape[-1])) > 1
    assert torch.equal(target.tokenize(x), codes[0])
    xg = x.clone().requires_grad_(True)
    target.loss(xg).backward()
    assert xg.grad.abs().sum() > 0


def test_encodec_options_are_checked():
    model = make_encodec()
    with pytest.raises(InputError, match="bandwidth_kbps=3.0.*supports"):
        EncodecTarget(model, bandwidth_kbps=3.0)
    with pytest.raises(InputError, match="'perceptual'"):
        EncodecTarget(model, objective="perceptual")
    with pytest.raises(InputError, match=r"\(1, 3, 10\)"):
        EncodecTarget(model).loss(torch.zeros(1, 3, 10))


# ------------------------------------------------------------------------ MusicGen


@pytest.mark.parametrize("audio_channels, delays", [(1, [0, 1, 2, 3]), (2, [0, 0, 1, 1])])
def test_musicgen_delay_pattern_is_transformers_own(audio_channels, delays):
    target = MusicgenTarget(make_musicgen(audio_channels=audio_channels, num_codebooks=4))
    assert target.delays == delays
    codes = target.tokenize(chord(0.05))
    batch, k, frames = codes.shape
    assert (k, frames) == (4, 50)
    prompt = torch.cat([torch.full((batch, k, 1), VOCAB), codes], -1).reshape(batch * k, -1)
    _, pattern = target.model.decoder.build_delay_pattern_mask(
        prompt, pad_token_id=VOCAB, max_length=frames + 1 + max(delays))
    labels, valid = delay_pattern(codes, delays, pad_id=VOCAB)
    assert torch.equal(pattern.reshape(batch, k, -1)[..., 1:], labels)   # minus its BOS column
    assert valid.sum() == batch * k * frames


def test_musicgen_stereo_checkpoint_interleaves_left_and_right():
    target = MusicgenTarget(make_musicgen(audio_channels=2, num_codebooks=4))
    x = chord(0.05, batch=1)
    codes = target.tokenize(x)
    left = target.tokenize(x[:, :1].expand(-1, 2, -1))       # same channel twice
    assert torch.equal(codes[:, 0::2], left[:, 0::2])
    assert torch.equal(left[:, 0::2], left[:, 1::2])
    assert not torch.equal(codes[:, 0::2], codes[:, 1::2])
    xg = x.clone().requires_grad_(True)
    target.loss(xg).backward()
    assert xg.grad.abs().sum() > 0


def test_musicgen_loss_equals_transformers_labels_loss(musicgen_dir):
    target = MusicgenTarget.load(musicgen_dir)
    assert isinstance(target, Target) and target.name == "musicgen"
    assert (target.bos_id, target.pad_id, target.delays) == (VOCAB, VOCAB, [0, 1])
    x = chord(0.1, batch=1)
    codes = target.tokenize(x)
    labels, _ = delay_pattern(codes, target.delays, pad_id=VOCAB)
    batch, k, steps = labels.shape
    states, mask = target._null_condition(batch)
    with torch.no_grad():
        out = target.model.decoder(input_ids=shift_right(labels, VOCAB).reshape(batch * k, steps),
                                   encoder_hidden_states=states, encoder_attention_mask=mask,
                                   labels=labels.transpose(1, 2), use_cache=False)
    assert target.example_losses(x).item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert target.loss(x).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_positions_hook_matches_the_input_ids_path(musicgen_dir):
    target = MusicgenTarget.load(musicgen_dir)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB + 1, (2, 2, 12), generator=gen)
    states, mask = target._null_condition(2)
    decoder = target.model.decoder
    tables = decoder.model.decoder.embed_tokens
    with torch.no_grad():
        reference = decoder(input_ids=ids.reshape(4, 12), encoder_hidden_states=states,
                            encoder_attention_mask=mask, use_cache=False).logits
        embeds = sum(tables[k](ids[:, k]) for k in range(2))
        with _positions(decoder.model.decoder.embed_positions, 12):
            hooked = decoder(inputs_embeds=embeds, encoder_hidden_states=states,
                             encoder_attention_mask=mask, use_cache=False).logits
    assert torch.allclose(hooked, reference, atol=1e-6)
    assert not decoder.model.decoder.embed_positions._forward_hooks     # removed again


def test_musicgen_gradient_reaches_the_waveform_and_training_is_isolated(musicgen_dir):
    target = MusicgenTarget.load(musicgen_dir, optimizer="adamw", lr=1e-2, seed=3)
    x = chord(0.1)
    for _ in range(3):                       # a decoder that prefers some codes: clearer gradient
        target.train_step(x)
    xg = x.clone().requires_grad_(True)
    loss = target.loss(xg)
    loss.backward()
    assert torch.isfinite(loss) and xg.grad.abs().sum() > 0 and torch.isfinite(xg.grad).all()
    assert all(p.grad is None for p in target.model.parameters())
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    text_before = {k: v.clone() for k, v in target.model.text_encoder.state_dict().items()}
    losses = [target.train_step(x) for _ in range(5)]
    assert torch.equal(torch_state, torch.get_rng_state()) and python_state == random.getstate()
    assert all(torch.equal(v, target.model.text_encoder.state_dict()[k])
               for k, v in text_before.items())
    assert losses[-1] < losses[0]
    # dropout draws from the target's seed: two fresh targets train identically
    a, b = (MusicgenTarget.load(musicgen_dir, optimizer="adamw", lr=1e-2, seed=3)
            for _ in range(2))
    assert [a.train_step(x) for _ in range(2)] == [b.train_step(x) for _ in range(2)]
    assert isinstance(MusicgenTarget.load(musicgen_dir).optimizer, torch.optim.SGD)


def test_musicgen_windows_long_inputs(musicgen_dir):
    whole = MusicgenTarget.load(musicgen_dir)
    windowed = MusicgenTarget.load(musicgen_dir, max_frames=40)
    x = chord(0.1)                                  # 100 frames at 1 kHz: 3 windows
    assert torch.equal(whole.tokenize(x), windowed.tokenize(x))
    per_example = windowed.example_losses(x)
    assert per_example.shape == (2,) and torch.isfinite(per_example).all()
    assert not torch.allclose(per_example, whole.example_losses(x))
    with pytest.raises(InputError, match="max_frames=1000"):
        MusicgenTarget.load(musicgen_dir, max_frames=1000)


def test_musicgen_generate_shape(musicgen_dir):
    target = MusicgenTarget.load(musicgen_dir, sample_rate_hz=48000)
    clips = target.generate(2, 0.01, torch.Generator().manual_seed(1))
    assert clips.shape == (2, 1, 480) and clips.abs().max() <= 1.0
    assert torch.equal(clips, target.generate(2, 0.01, torch.Generator().manual_seed(1)))


# --------------------------------------------------------------------------- files


def test_save_keeps_options_and_weights(tmp_path, musicgen_dir):
    target = MusicgenTarget.load(musicgen_dir, stereo="channels", soft_temperature=0.2, seed=4)
    x = chord(0.05)
    target.train_step(x)
    path = target.save(tmp_path / "saved")
    meta = json.loads((path / "harmonycloak.json").read_text())
    assert meta["format"] == "harmonycloak.pretrained" and meta["format_version"] == 1
    loaded = load_pretrained(path)
    assert isinstance(loaded, MusicgenTarget)
    assert loaded.stereo == "channels" and loaded.soft_temperature == 0.2 and loaded.seed == 4
    assert torch.allclose(loaded.example_losses(x), target.example_losses(x), atol=1e-6)
    assert loaded.num_parameters() == target.num_parameters()
    assert set(loaded.num_parameters()) == {"text_encoder", "audio_encoder", "decoder"}


def test_load_pretrained_picks_the_class(encodec_dir, musicgen_dir):
    assert isinstance(load_pretrained(encodec_dir), EncodecTarget)
    assert isinstance(load_pretrained(musicgen_dir, seed=1), MusicgenTarget)


def test_bad_directories_raise_model_load_error(tmp_path, encodec_dir):
    with pytest.raises(ModelLoadError,
                       match="no such model directory.*config.json.*model.safetensors"):
        MusicgenTarget.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=f"{empty}: config.json is missing"):
        EncodecTarget.load(empty)
    with pytest.raises(ModelLoadError, match="model_type 'encodec', not 'musicgen'"):
        MusicgenTarget.load(encodec_dir)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable config"):
        load_pretrained(empty)
    (empty / "config.json").write_text((encodec_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights file"):
        EncodecTarget.load(empty)
    (empty / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="could not load this EnCodec checkpoint"):
        EncodecTarget.load(empty)
    (empty / "model.safetensors").write_bytes((encodec_dir / "model.safetensors").read_bytes())
    (empty / "harmonycloak.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelLoadError, match="harmonycloak.json: not a harmonycloak options"):
        EncodecTarget.load(empty)
