"""`protect` on audio, white-box, end to end: the audio target registry, the pipeline and
the CLI, with tiny random-init checkpoints saved to tmp_path and synthetic clips."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import music_like
from harmonycloak.cli.app import main
from harmonycloak.config import AudioPerturbConfig, EngineConfig, preset
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.pipeline import AudioTargetChoice, SharedDelta, chunk_batch, protect_audio
from harmonycloak.targets import audio_registry
from harmonycloak.targets.codec_lm import CodecLMConfig, CodecLMTarget
from harmonycloak.targets.embedding import (
    ContrastiveEncoderConfig,
    ContrastiveMusicEncoder,
    EmbeddingShiftTarget,
)
from harmonycloak.targets.latent_diffusion import LatentDiffusionConfig, LatentDiffusionTarget

FAST = replace(preset("light-v1"), engine=EngineConfig(outer_rounds=2, outer_steps=1, inner_steps=3,
                                                       batch_size=2))
REPORT_KEYS = {"harmonycloak_report", "version", "input", "output", "mode", "target", "model",
               "preset", "seed", "watermark", "config", "audio", "losses", "perturbation",
               "verification", "history", "seconds", "notes", "bag"}
CODEC_KEYS = {"mp3_128k", "mp3_64k", "aac_64k", "opus_64k"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints of the three audio targets, as their own ``save`` writes them."""
    root = tmp_path_factory.mktemp("models")
    CodecLMTarget(CodecLMConfig.tiny(), seed=0).save(root / "codec-lm")
    LatentDiffusionTarget(LatentDiffusionConfig.tiny(), seed=0).save(root / "latent-diffusion")
    ContrastiveMusicEncoder(ContrastiveEncoderConfig.tiny(), seed=0).save(root / "clap-shift")
    return {name: root / name for name in audio_registry.AUDIO_TARGET_NAMES}


def write_clip(path: Path, sample_rate_hz: int, channels: int, duration_s: float = 1.5,
               seed: int = 0) -> Path:
    """A music-like synthetic clip (notes with harmonics, a little noise): float WAV, or
    24-bit FLAC."""
    sf.write(path, music_like(sample_rate_hz, channels, duration_s, seed=seed).T, sample_rate_hz,
             subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")
    return path


def run(src: Path, dst: Path, model_dir: Path, *, name: str = "codec-lm", config=FAST, **kwargs):
    return protect_audio(src, dst, config=config, target=AudioTargetChoice(name, model_dir=str(model_dir)),
                         seed=kwargs.pop("seed", 0), **kwargs)


# ------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("name", audio_registry.AUDIO_TARGET_NAMES)
@pytest.mark.parametrize("mode", ["spectrum", "tone"])
@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 1)])
def test_protects_every_target_mode_rate_and_layout(tmp_path, models, name, mode, rate, channels):
    src = write_clip(tmp_path / "in.wav", rate, channels)
    before = src.read_bytes()
    out = tmp_path / "out.flac"
    config = replace(FAST, audio=AudioPerturbConfig(mode=mode))
    report = run(src, out, models[name], name=name, config=config)
    assert src.read_bytes() == before                       # input unchanged
    written, written_rate = sf.read(out, always_2d=True, dtype="float32")
    original, _ = sf.read(src, always_2d=True, dtype="float32")
    assert written_rate == rate and written.shape == original.shape
    assert 0 < np.abs(written - original).max() < 0.1       # changed, and only a little
    assert set(report) == REPORT_KEYS
    assert (report["mode"], report["target"], report["watermark"]) == ("whitebox", name, None)
    check = report["verification"]
    assert check["nmr"]["p95_db"] < 0.0                      # hidden under the music's masking
    assert check["snr_db"] > 10.0
    assert set(check["after_codecs"]) == CODEC_KEYS
    assert all(set(v) == {"clean", "protected", "protected_over_clean"}
               for v in check["after_codecs"].values())
    assert report["perturbation"]["mode"] == mode and report["perturbation"]["chunks"] == 1
    assert report["audio"] == {"sample_rate_hz": rate, "channels": channels, "duration_s": 1.5}
    json.dumps(report, allow_nan=False)                      # strict JSON (no NaN history)
    on_disk = json.loads((tmp_path / "out.flac.report.json").read_text())
    assert on_disk["output"]["sha256"] == report["output"]["sha256"]


def test_clap_shift_moves_the_embedding(tmp_path, models):
    src = write_clip(tmp_path / "in.wav", 44100, 2)
    report = run(src, tmp_path / "o.wav", models["clap-shift"], name="clap-shift",
                 config=replace(FAST, engine=replace(FAST.engine, inner_steps=6)))
    losses = report["verification"]["losses"]
    assert losses["clean"] == pytest.approx(1.0)
    assert losses["protected"] < 1.0 - 1e-4                  # cosine similarity went down
    assert any("cosine similarities" in note for note in report["notes"])
    view = report["verification"]["embedding_view"]          # seed 003's 2-D picture
    assert len(view["clean"]) == len(view["protected"]) == len(view["cosine_similarity"]) >= 1
    assert sum(view["cosine_similarity"]) / len(view["cosine_similarity"]) == pytest.approx(
        losses["protected"], abs=1e-3)
    assert all(d > 0 for d in view["normalized_l2"])


def test_embedding_view_only_for_the_embedding_shift(tmp_path, models):
    src = write_clip(tmp_path / "in.wav", 44100, 1, duration_s=1.0)
    report = run(src, tmp_path / "o.wav", models["codec-lm"], name="codec-lm")
    assert "embedding_view" not in report["verification"]


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, models, suffix):
    src = write_clip(tmp_path / "in.wav", 44100, 2, duration_s=1.0)
    a, b, c = (tmp_path / f"{n}{suffix}" for n in "abc")
    run(src, a, models["latent-diffusion"], name="latent-diffusion", seed=3)
    run(src, b, models["latent-diffusion"], name="latent-diffusion", seed=3)
    run(src, c, models["latent-diffusion"], name="latent-diffusion", seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_long_clips_are_cut_into_chunks_and_short_ones_kept_whole(tmp_path, models):
    src = write_clip(tmp_path / "in.wav", 48000, 1, duration_s=1.3)
    config = replace(FAST, audio=AudioPerturbConfig(chunk_s=0.5))
    report = run(src, tmp_path / "o.wav", models["codec-lm"], config=config)
    # 1.3 s in three equal windows of 0.43 s
    assert (report["perturbation"]["chunks"], report["perturbation"]["chunk_samples"]) == (3, 20800)
    assert report["perturbation"]["outer_batch_size"] == 2   # min(batch_size, chunks)
    short = write_clip(tmp_path / "short.wav", 48000, 1, duration_s=0.1)
    report = run(short, tmp_path / "s.wav", models["codec-lm"])
    assert (report["perturbation"]["chunks"], report["perturbation"]["chunk_samples"]) == (1, 4800)


def test_chunk_batch_cuts_equal_windows_and_pads_the_last_by_less_than_one_per_window():
    y = torch.arange(2 * 7, dtype=torch.float32).reshape(2, 7)
    batch = chunk_batch(y, chunk_samples=3)       # 7 samples: three windows of 3, 2 padded
    assert batch.shape == (3, 2, 3)
    assert torch.equal(batch[1], y[:, 3:6])
    assert torch.equal(batch[2], torch.tensor([[6.0, 0, 0], [13.0, 0, 0]]))
    assert chunk_batch(y, chunk_samples=100).shape == (1, 2, 7)
    z = torch.arange(25, dtype=torch.float32).reshape(1, 25)
    even = chunk_batch(z, chunk_samples=10)       # 3 × 9 (2 padded), not 3 × 10 (5 padded)
    assert even.shape == (3, 1, 9)
    assert torch.equal(even.reshape(-1)[:25], z[0])
    assert torch.equal(even[2, 0, 7:], torch.zeros(2))
    assert chunk_batch(z, chunk_samples=5).shape == (5, 1, 5)   # exact: no padding


def test_shared_delta_gives_the_same_objective_and_gradient(tmp_path):
    from harmonycloak.perturb.audio_delta import MaskedSpectrumPerturbation
    from harmonycloak.perturb.budget import masked_spectrum_budget

    x = torch.from_numpy(music_like(44100, 2, 0.5))
    perturbation = MaskedSpectrumPerturbation(masked_spectrum_budget(x, 44100), seed=1)
    shared = SharedDelta(perturbation)
    grads = []
    for p in (perturbation, shared):
        params = p.init_params()
        value = p.apply(x, params).square().sum() + 0.3 * p.regularizer(params)
        grads.append((value, torch.autograd.grad(value, params)[0]))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])
    with torch.no_grad():                                    # a no-grad render is not reused
        shared.apply(x, params := shared.init_params())
    assert shared.regularizer(params).requires_grad


def test_channel_hook_sees_the_perturbed_clip(tmp_path, models):
    src = write_clip(tmp_path / "in.wav", 44100, 2, duration_s=1.0)
    shapes = []

    def channel(y):
        shapes.append(tuple(y.shape))
        return y * 0.5

    run(src, tmp_path / "o.wav", models["codec-lm"], channel=channel)
    assert shapes and set(shapes) == {(1, 2, 44100)}


def test_refusals_come_before_any_work(tmp_path, models):
    src = write_clip(tmp_path / "in.wav", 44100, 2, duration_s=0.5)
    with pytest.raises(InputError, match="cannot be written as MIDI"):
        run(src, tmp_path / "o.mid", models["codec-lm"])
    with pytest.raises(InputError, match="names no audio format"):
        run(src, tmp_path / "o.xyz", models["codec-lm"])
    with pytest.raises(InputError, match=r"o\.opus: sample rate 44100 Hz is not supported by Opus"):
        run(src, tmp_path / "o.opus", models["codec-lm"])
    with pytest.raises(InputError, match="protects MIDI files; for audio use one of codec-lm"):
        protect_audio(src, tmp_path / "o.wav", config=FAST, target=AudioTargetChoice("musegan"))
    with pytest.raises(InputError, match="would overwrite the input"):
        run(src, src, models["codec-lm"], force=True)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((22050, 2), np.float32), 44100)
    with pytest.raises(InputError, match="nothing to protect"):
        run(silent, tmp_path / "s.wav", models["codec-lm"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "silent.wav"]


# ------------------------------------------------------------------------- registry


def test_load_audio_target_by_folder_and_rate(models):
    codec = audio_registry.load_audio_target("codec-lm", models["codec-lm"], sample_rate_hz=48000, seed=2)
    assert isinstance(codec, CodecLMTarget) and codec.sample_rate_hz == 48000
    assert isinstance(codec.optimizer, torch.optim.SGD) and codec.optimizer.defaults["lr"] == 0.025
    ldm = audio_registry.load_audio_target("latent-diffusion", models["latent-diffusion"],
                                           sample_rate_hz=44100)
    assert isinstance(ldm.optimizer, torch.optim.SGD) and ldm.sample_rate_hz == 44100
    shift = audio_registry.load_audio_target("clap-shift", models["clap-shift"], sample_rate_hz=44100)
    assert isinstance(shift, EmbeddingShiftTarget) and shift.encoder.kind == "contrastive"
    assert audio_registry.DEFAULT_ALPHA == {"codec-lm": 0.30, "latent-diffusion": 0.22,
                                            "clap-shift": 0.30}


def test_load_audio_target_names_the_right_target(models, tmp_path):
    with pytest.raises(ModelLoadError, match="holds a codec-token LM.*use --target codec-lm"):
        audio_registry.load_audio_target("latent-diffusion", models["codec-lm"], sample_rate_hz=44100)
    with pytest.raises(ModelLoadError, match="model folder not found"):
        audio_registry.load_audio_target("codec-lm", tmp_path / "nope", sample_rate_hz=44100)
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "config.json").write_text(json.dumps({"format": "harmonycloak.musegan"}))
    with pytest.raises(ModelLoadError, match="MIDI target"):
        audio_registry.load_audio_target("codec-lm", tmp_path / "gan", sample_rate_hz=44100)
    with pytest.raises(InputError, match="not an audio target"):
        audio_registry.load_audio_target("musegan", models["codec-lm"], sample_rate_hz=44100)


def test_hugging_face_checkpoints_go_through_their_loaders(tmp_path):
    transformers = pytest.importorskip("transformers")
    from harmonycloak.targets.pretrained import EncodecTarget

    config = transformers.EncodecConfig(sampling_rate=16000, hidden_size=16, num_filters=4,
                                        upsampling_ratios=[4, 4], codebook_size=32,
                                        target_bandwidths=[10.0], num_lstm_layers=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.EncodecModel(config).save_pretrained(tmp_path / "encodec")
    target = audio_registry.load_audio_target("codec-lm", tmp_path / "encodec", sample_rate_hz=44100)
    assert isinstance(target, EncodecTarget) and target.sample_rate_hz == 44100
    with pytest.raises(ModelLoadError, match="an EnCodec checkpoint, not a clap-shift model"):
        audio_registry.load_audio_target("clap-shift", tmp_path / "encodec", sample_rate_hz=44100)


TINY_CONFIGS = {"codec-lm": CodecLMConfig.tiny(), "latent-diffusion": LatentDiffusionConfig.tiny(),
                "clap-shift": ContrastiveEncoderConfig.tiny()}


@pytest.mark.parametrize("name", audio_registry.AUDIO_TARGET_NAMES)
def test_cached_audio_target_trains_once(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HARMONYCLOAK_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, (rate, channels) in enumerate([(44100, 2), (48000, 1), (22050, 1)]):
        write_clip(corpus / f"t{i}.wav", rate, channels, duration_s=1.0, seed=i)
    (corpus / "broken.wav").write_bytes(b"RIFF????WAVE")   # skipped
    stages = []
    kwargs = dict(sample_rate_hz=44100, seed=0, steps=2, config=TINY_CONFIGS[name], crop_s=0.5,
                  progress=lambda stage, i, n: stages.append(stage))
    target, key = audio_registry.cached_audio_target(name, corpus, **kwargs)
    assert stages and key.startswith(name + "-")
    assert (tmp_path / "cache" / "targets" / key / "config.json").exists()
    assert target.sample_rate_hz == 44100
    stages.clear()
    again, same = audio_registry.cached_audio_target(name, corpus, **{**kwargs, "sample_rate_hz": 48000})
    assert same == key and not stages and again.sample_rate_hz == 48000
    _, other = audio_registry.cached_audio_target(name, corpus, **{**kwargs, "seed": 1})
    assert other != key


def test_corpus_crops_never_pad_with_silence():
    ramp = torch.linspace(0.1, 0.9, 25)
    crops = audio_registry.corpus_crops([ramp, torch.full((4,), 0.5), torch.zeros(30)],
                                        crop_samples=10)
    assert crops.shape == (4, 1, 10)                          # 3 from the ramp, 1 repeated, 0 silent
    assert torch.equal(crops[2, 0], ramp[15:25])              # the last crop ends at the end
    assert torch.equal(crops[3, 0], torch.full((10,), 0.5))
    with pytest.raises(InputError, match="the corpus is silent"):
        audio_registry.corpus_crops([torch.zeros(30)], crop_samples=10)


def test_missing_corpus_says_how_to_get_one(tmp_path):
    with pytest.raises(InputError, match="get_dev_music.sh"):
        audio_registry.cached_audio_target("codec-lm", tmp_path / "none", sample_rate_hz=44100)


# ------------------------------------------------------------------------------ CLI


def test_cli_protects_audio_and_prints_a_summary(tmp_path, models, capsys):
    src = write_clip(tmp_path / "song.wav", 44100, 2, duration_s=1.0)
    out = tmp_path / "song.protected.mp3"
    code = main(["protect", str(src), "-o", str(out), "--target", "latent-diffusion",
                 "--model", str(models["latent-diffusion"]), "--preset", "light-v1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.exists() and (tmp_path / "song.protected.mp3.report.json").exists()
    line = captured.out.strip()
    assert line.startswith(str(out)) and "clean ->" in line
    assert "SNR" in line and "NMR p95" in line and "after MP3 128k" in line


def test_cli_refuses_existing_output_without_force(tmp_path, models, capsys):
    src = write_clip(tmp_path / "song.wav", 48000, 1, duration_s=0.5)
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    code = main(["protect", str(src), "-o", str(out), "--model", str(models["codec-lm"])])
    assert code == 2 and "already exists; use --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("argv,fragment", [
    (["-o", "{tmp}/o.mid"], "protected audio must be written as audio"),
    (["-o", "{tmp}/o.txt"], "protected audio must be written as audio"),
    (["-o", "{tmp}/o.wav", "--target", "musegan"], "--target musegan protects MIDI, not audio"),
    (["-o", "{tmp}/o.wav", "--watermark-key", "k.json"], "--watermark-key needs --watermark-payload"),
    (["-o", "{tmp}/o.wav", "--mode", "blackbox", "--target", "codec-lm"], "go with --mode whitebox"),
    (["-o", "{tmp}/o.wav", "--corpus", "{tmp}/none"], "bash scripts/get_dev_music.sh"),
])
def test_cli_refusals(tmp_path, capsys, argv, fragment):
    src = write_clip(tmp_path / "song.wav", 44100, 1, duration_s=0.3)
    code = main(["protect", str(src), *[a.format(tmp=tmp_path) for a in argv]])
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_cli_routes_midi_and_audio_and_keeps_their_targets_apart(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "a.wav", 44100, 1, duration_s=0.3)
    (folder / "b.mid").write_bytes(b"MThd")
    code = main(["protect", str(folder), "-o", str(tmp_path / "out"), "--model", str(tmp_path)])
    assert code == 2 and "separate calls" in capsys.readouterr().err
    code = main(["protect", str(folder), "-o", str(tmp_path / "out"), "--target", "codec-lm"])
    assert code == 2 and "--target codec-lm protects audio, not MIDI" in capsys.readouterr().err


def test_cli_folder_output_mirrors_layout(tmp_path, models, capsys):
    album = tmp_path / "in" / "album"
    album.mkdir(parents=True)
    write_clip(album / "one.flac", 48000, 1, duration_s=0.5)
    code = main(["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--target", "clap-shift",
                 "--model", str(models["clap-shift"]), "--preset", "light-v1"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "album" / "one.flac").exists()
    assert (tmp_path / "out" / "album" / "one.flac.report.json").exists()


def test_verification_round_trips_match_one_by_one_and_keep_each_codecs_refusal():
    from harmonycloak.errors import CodecError
    from harmonycloak.io import codecs
    from harmonycloak.pipeline import VERIFY_CODECS, _verify_round_trips

    rate = 96000                                  # MP3 refuses 96 kHz; AAC and Opus take it
    clean = music_like(rate, 2, 0.5, seed=1).astype(np.float32)
    written = clean + np.float32(1e-3) * music_like(rate, 2, 0.5, seed=2).astype(np.float32)
    clip = type("Clip", (), {"samples": clean, "sample_rate_hz": rate})
    pairs = list(_verify_round_trips(written, clip))
    assert len(pairs) == len(VERIFY_CODECS)
    for (codec, kbps), pair in zip(VERIFY_CODECS, pairs):
        if codec == "mp3":
            assert isinstance(pair, CodecError) and "96000" in str(pair)
            continue
        coded, reference = pair
        assert np.array_equal(coded, codecs.roundtrip(written, rate, codec=codec, bitrate_kbps=kbps))
        assert np.array_equal(reference, codecs.roundtrip(clean, rate, codec=codec, bitrate_kbps=kbps))
        assert not np.array_equal(coded, reference)


def test_a_codec_that_refuses_the_rate_is_skipped_with_a_note(tmp_path, models):
    src = write_clip(tmp_path / "in.wav", 96000, 1, duration_s=0.5)
    report = run(src, tmp_path / "o.flac", models["codec-lm"])
    after = report["verification"]["after_codecs"]
    assert after["mp3_128k"] is None and after["mp3_64k"] is None
    assert after["aac_64k"]["protected_over_clean"] is not None
    assert any(n.startswith("mp3_128k: round trip skipped") for n in report["notes"])
