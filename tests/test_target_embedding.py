"""Embedding-shift target and the contrastive music encoder, on synthetic music."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.protocols import Target
from harmonycloak.targets.embedding import (
    AudioEncoder,
    AugmentConfig,
    ContrastiveEncoderConfig,
    ContrastiveMusicEncoder,
    EmbeddingShiftTarget,
    LogMel,
    apply_augmentations,
    embedding_shift,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    nt_xent_loss,
    sample_augmentations,
    train_contrastive,
    window_starts,
)

RATE = 16_000
PROGRESSIONS = [  # four "pieces": distinct chord sequences (MIDI notes)
    [(60, 64, 67), (65, 69, 72), (67, 71, 74)],
    [(57, 60, 64), (62, 65, 69), (64, 68, 71)],
    [(48, 55, 64), (53, 60, 69), (55, 62, 71)],
    [(72, 76, 79), (77, 81, 84), (79, 83, 86)],
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chord_piece(chords: list[tuple[int, ...]], *, rate: int = RATE, seconds_per_chord: float = 1.0,
                repeats: int = 2, seed: int = 0) -> np.ndarray:
    """Plucked chords (four harmonics each) played in order ``repeats`` times, float32 [samples]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds_per_chord * rate)) / rate
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.8)
    parts = []
    for _ in range(repeats):
        for chord in chords:
            tone = np.zeros_like(t)
            for note in chord:
                f0 = 440.0 * 2 ** ((note - 69) / 12)
                for k in range(1, 5):
                    if k * f0 < 0.45 * rate:
                        tone += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
            parts.append(envelope * tone)
    wave = np.concatenate(parts)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def stereo_music(rate: int, channels: int, duration_s: float, seed: int = 0) -> torch.Tensor:
    """``[1, channels, samples]`` chord music, a different voicing per channel."""
    waves = [chord_piece(PROGRESSIONS[(seed + c) % 4], rate=rate, seconds_per_chord=0.5,
                         repeats=int(math.ceil(duration_s / 1.5)), seed=seed + c)
             for c in range(channels)]
    samples = int(duration_s * rate)
    return torch.from_numpy(np.stack([w[:samples] for w in waves]))[None]


def tiny_encoder(seed: int = 0) -> ContrastiveMusicEncoder:
    return ContrastiveMusicEncoder(ContrastiveEncoderConfig.tiny(), seed=seed)


# ------------------------------------------------------------------- mel filters


def test_mel_scales_have_their_anchor_points() -> None:
    hz = torch.tensor([0.0, 700.0, 1000.0, 6400.0], dtype=torch.float64)
    htk, slaney = hz_to_mel(hz, mel_scale="htk"), hz_to_mel(hz, mel_scale="slaney")
    assert htk[0] == 0 and abs(float(htk[1]) - 2595 * math.log10(2)) < 1e-9
    assert abs(float(htk[2]) - 1000.0) < 0.1          # the HTK scale's 1000 mel at 1 kHz
    assert abs(float(slaney[2]) - 15.0) < 1e-12 and abs(float(slaney[3]) - 42.0) < 1e-9
    for scale in ("htk", "slaney"):
        back = mel_to_hz(hz_to_mel(hz, mel_scale=scale), mel_scale=scale)  # type: ignore[arg-type]
        torch.testing.assert_close(back, hz, atol=1e-9, rtol=0)


def test_mel_filters_are_triangles_with_unit_area_when_normalized() -> None:
    bins = 4097
    common = dict(num_frequency_bins=bins, num_mels=40, min_hz=50.0, max_hz=8000.0,
                  sample_rate_hz=RATE)
    htk = mel_filterbank(**common)  # type: ignore[arg-type]
    assert htk.shape == (bins, 40) and htk.dtype == torch.float64
    assert float(htk.min()) == 0.0 and float(htk.max()) <= 1.0 + 1e-12
    assert (htk.max(dim=0).values > 0.95).all()       # every filter nearly reaches 1
    peaks = htk.argmax(dim=0)
    assert (peaks[1:] > peaks[:-1]).all()
    slaney = mel_filterbank(**common, mel_scale="slaney", norm="slaney")  # type: ignore[arg-type]
    bin_hz = (RATE / 2) / (bins - 1)
    torch.testing.assert_close(slaney.sum(dim=0) * bin_hz, torch.ones(40, dtype=torch.float64),
                               atol=0.02, rtol=0)
    with pytest.raises(InputError, match=r"band 900.0–100.0 Hz; use 0 <= min_hz < max_hz"):
        mel_filterbank(num_frequency_bins=5, num_mels=2, min_hz=900.0, max_hz=100.0,
                       sample_rate_hz=RATE)


def test_log_mel_reads_a_full_scale_sine_near_0_db_and_6_db_per_halving() -> None:
    log_mel = LogMel(sample_rate_hz=RATE, fft_samples=1024, hop_samples=320, num_mels=64,
                     min_hz=30.0, max_hz=8000.0)
    t = torch.arange(RATE) / RATE
    sine = torch.sin(2 * math.pi * 1000.0 * t)[None]
    full, half = log_mel(sine), log_mel(0.5 * sine)
    assert full.shape == (1, 64, 1 + RATE // 320)
    middle = full[0, :, 10:-10]
    assert abs(float(middle.max()) - 0.0) < 3.0
    band = int(middle.mean(dim=1).argmax())
    centres = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(30.0))),
                                       float(hz_to_mel(torch.tensor(8000.0))), 66))[1:-1]
    assert abs(float(centres[band]) - 1000.0) < 100.0
    torch.testing.assert_close(full[0, band, 10:-10] - half[0, band, 10:-10],
                               torch.full_like(full[0, band, 10:-10], 20 * math.log10(2)),
                               atol=1e-3, rtol=0)
    assert float(log_mel(torch.zeros(1, 4000)).max()) == -100.0


# -------------------------------------------------------------------- pieces


@pytest.mark.parametrize("num, window, expected", [
    (100, 100, [0]), (50, 100, [0]), (200, 100, [0, 100]), (250, 100, [0, 75, 150]),
    (101, 100, [0, 1]),
])
def test_window_starts_cover_the_clip(num: int, window: int, expected: list[int]) -> None:
    starts = window_starts(num, window)
    assert starts == expected
    if num > window:
        assert starts[-1] + window == num
        assert all(b - a <= window for a, b in zip(starts, starts[1:]))


def test_embedding_shift_matches_the_seed_definitions() -> None:
    clean = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    moved = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    shift = embedding_shift(clean, moved)
    torch.testing.assert_close(shift["cosine_similarity"], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(shift["l2"], torch.tensor([0.0, math.sqrt(5.0)]))
    torch.testing.assert_close(shift["normalized_l2"], torch.tensor([0.0, math.sqrt(5.0)]))
    scaled = embedding_shift(10 * clean, 10 * moved)
    torch.testing.assert_close(scaled["normalized_l2"], shift["normalized_l2"])


def test_nt_xent_has_its_closed_form_for_orthonormal_pairs() -> None:
    n, tau = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert abs(float(nt_xent_loss(z, z, temperature=tau)) - expected) < 1e-5
    swapped = nt_xent_loss(z, z[[1, 0, 2, 3]], temperature=tau)
    assert float(swapped) > expected + 0.5


def test_augmentations_are_drawn_apart_from_applied() -> None:
    x = torch.from_numpy(chord_piece(PROGRESSIONS[0]))[None, :8000].repeat(3, 1)
    p1 = sample_augmentations(3, 8000, generator=torch.Generator().manual_seed(0),
                              sample_rate_hz=RATE)
    p2 = sample_augmentations(3, 8000, generator=torch.Generator().manual_seed(0),
                              sample_rate_hz=RATE)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    y1 = apply_augmentations(x, p1, sample_rate_hz=RATE)
    assert torch.equal(y1, apply_augmentations(x, p2, sample_rate_hz=RATE))
    assert torch.equal(x, torch.from_numpy(chord_piece(PROGRESSIONS[0]))[None, :8000].repeat(3, 1))
    limits = AugmentConfig()
    assert (p1["gain_db"].abs() <= limits.gain_db).all()
    assert ((p1["bell_hz"] >= limits.bell_min_hz) & (p1["bell_hz"] <= limits.bell_max_hz)).all()
    # Gain alone: an exact scale; EQ alone (zero gains): the identity.
    plain = {**p1, "tilt_db_per_octave": torch.zeros(3), "bell_gain_db": torch.zeros(3),
             "snr_db": torch.full((3,), 400.0)}
    scale = 10 ** (p1["gain_db"] / 20)
    torch.testing.assert_close(apply_augmentations(x, plain, sample_rate_hz=RATE),
                               x * scale[:, None].float(), atol=1e-5, rtol=1e-5)
    noisy = apply_augmentations(x, {**plain, "gain_db": torch.zeros(3),
                                    "snr_db": torch.full((3,), 20.0)}, sample_rate_hz=RATE)
    snr = 10 * torch.log10(x.square().mean(1) / (noisy - x).square().mean(1))
    torch.testing.assert_close(snr, torch.full((3,), 20.0), atol=0.5, rtol=0)


# --------------------------------------------------------------------- the target


def test_is_a_target_with_an_audio_encoder() -> None:
    encoder = tiny_encoder()
    assert isinstance(encoder, AudioEncoder)
    target = EmbeddingShiftTarget(encoder)
    assert isinstance(target, Target)
    assert target.name == "embedding-shift" and target.sample_rate_hz == 44_100
    assert target.num_parameters() == {"encoder": 10_024}
    assert ContrastiveMusicEncoder().num_parameters() == 527_648


@pytest.mark.parametrize("rate", [44_100, 48_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_loss_is_one_at_the_reference_and_differentiable(rate: int, channels: int) -> None:
    target = EmbeddingShiftTarget(tiny_encoder(), sample_rate_hz=rate)
    x = stereo_music(rate, channels, 3.0)
    before = x.clone()
    reference = target.set_reference(x)
    assert reference.shape == (1, 2, 16)                # 3 s in 2 s windows → 2 windows
    assert abs(float(target.loss(x)) - 1.0) < 1e-5
    shifted = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    shifted.requires_grad_(True)
    loss = target.loss(shifted)
    assert float(loss.detach()) < 1.0
    loss.backward()
    assert shifted.grad is not None and torch.isfinite(shifted.grad).all()
    assert (shifted.grad.abs().sum(dim=-1) > 0).all()    # every channel gets a gradient
    assert torch.equal(x, before)
    assert not any(p.grad is not None for p in target.encoder.parameters())
    per_example = target.example_losses(shifted)
    assert per_example.shape == (1,) and not per_example.requires_grad


def test_batch_equals_single_items() -> None:
    target = EmbeddingShiftTarget(tiny_encoder(), sample_rate_hz=RATE)
    clean = torch.cat([stereo_music(RATE, 2, 2.5, seed=s) for s in (0, 1)])
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    target.set_reference(clean)
    batch = target.example_losses(noisy)
    singles = []
    for i in range(2):
        target.set_reference(clean[i:i + 1])
        singles.append(target.example_losses(noisy[i:i + 1]))
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-6, rtol=0)


def test_signed_gradient_steps_shift_the_embedding() -> None:
    """A few PGD steps of seed 003's algorithm move the embedding within ±ε."""
    target = EmbeddingShiftTarget(tiny_encoder(), sample_rate_hz=RATE)
    x = stereo_music(RATE, 2, 2.0)
    target.set_reference(x)
    metrics0 = target.shift_metrics(x)
    assert metrics0["cosine_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert metrics0["normalized_l2"] == pytest.approx(0.0, abs=1e-3)
    eps, step = 0.02, 0.005
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(8):
        (grad,) = torch.autograd.grad(target.loss(x + delta), delta)
        delta = (delta.detach() - step * grad.sign()).clamp(-eps, eps).requires_grad_(True)
    metrics = target.shift_metrics(x + delta.detach())
    assert metrics["cosine_similarity"] < 0.9
    assert metrics["normalized_l2"] > 0.1
    assert set(metrics["per_example"]) == {"cosine_similarity", "l2", "normalized_l2"}
    assert isinstance(metrics["meets_seed_targets"], bool)


def test_mean_pooling_compares_one_vector_per_piece() -> None:
    encoder = tiny_encoder()
    windows = EmbeddingShiftTarget(encoder, sample_rate_hz=RATE)
    mean = EmbeddingShiftTarget(encoder, sample_rate_hz=RATE, pooling="mean")
    x = stereo_music(RATE, 1, 5.0)
    y = x.flip(-1)
    for target in (windows, mean):
        target.set_reference(x)
    emb_x, emb_y = windows.embed(x), windows.embed(y)
    assert emb_x.shape[1] == 3
    expected = F.cosine_similarity(emb_y.mean(1), emb_x.mean(1), dim=-1)
    torch.testing.assert_close(mean.example_losses(y), expected, atol=1e-6, rtol=0)
    expected = F.cosine_similarity(emb_y, emb_x, dim=-1).mean(1)
    torch.testing.assert_close(windows.example_losses(y), expected, atol=1e-6, rtol=0)


def test_train_step_is_a_documented_no_op() -> None:
    target = EmbeddingShiftTarget(tiny_encoder(), sample_rate_hz=RATE)
    before = {k: v.clone() for k, v in target.encoder.state_dict().items()}
    assert math.isnan(target.train_step(stereo_music(RATE, 2, 1.0)))
    assert all(torch.equal(v, target.encoder.state_dict()[k]) for k, v in before.items())


def test_same_seed_same_loss() -> None:
    x = stereo_music(44_100, 2, 2.0)
    noisy = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    losses = []
    for _ in range(2):
        target = EmbeddingShiftTarget(tiny_encoder(seed=3), seed=5, device="auto")
        target.set_reference(x)
        losses.append(float(target.loss(noisy)))
    assert losses[0] == losses[1]


def test_errors_name_the_problem_and_the_fix() -> None:
    target = EmbeddingShiftTarget(tiny_encoder(), sample_rate_hz=RATE)
    x = stereo_music(RATE, 2, 1.0)
    with pytest.raises(InputError, match=r"no reference embedding; call "
                                         r"target\.set_reference\(x_clean\)"):
        target.loss(x)
    target.set_reference(x)
    with pytest.raises(InputError, match=r"input \(1, 2, 8000\) does not match the reference "
                                         r"\(batch 1, 16000 samples\)"):
        target.loss(x[..., :8000])
    with pytest.raises(InputError, match=r"input \(2, 16000\); give float waveforms "
                                         r"\[batch, channels, samples\] at 16000 Hz"):
        target.loss(x[0])
    with pytest.raises(InputError, match=r"give at least 0.25 s"):
        target.embed(x[..., :1000])
    with pytest.raises(InputError, match=r"pooling='max': use 'windows' or 'mean'"):
        EmbeddingShiftTarget(tiny_encoder(), pooling="max")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"not an AudioEncoder module"):
        EmbeddingShiftTarget(torch.nn.Linear(2, 2))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"--device cuda: no CUDA GPU"):
            EmbeddingShiftTarget(tiny_encoder(), device="cuda")


def test_state_dict_round_trip_keeps_the_reference() -> None:
    target = EmbeddingShiftTarget(tiny_encoder(seed=1), sample_rate_hz=RATE)
    x = stereo_music(RATE, 2, 1.0)
    target.set_reference(x)
    other = EmbeddingShiftTarget(tiny_encoder(seed=2), sample_rate_hz=RATE)
    other.load_state_dict(target.state_dict())
    noisy = x + 0.02
    assert float(other.loss(noisy)) == float(target.loss(noisy))


def test_save_and_load(tmp_path: Path) -> None:
    target = EmbeddingShiftTarget(tiny_encoder(seed=4), sample_rate_hz=48_000, pooling="mean",
                                  window_s=1.5, seed=9)
    target.save(tmp_path / "t")
    meta = json.loads((tmp_path / "t" / "config.json").read_text())
    assert meta["format"] == "harmonycloak.embedding_shift" and meta["version"] == 1
    assert (tmp_path / "t" / "encoder" / "model.safetensors").is_file()
    again = EmbeddingShiftTarget.load(tmp_path / "t")
    assert again.options() == target.options()
    x = stereo_music(48_000, 2, 2.0)
    torch.testing.assert_close(again.embed(x), target.embed(x), atol=0, rtol=0)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"missing: no such model directory; point it at "
                                             r"a directory written by"):
        ContrastiveMusicEncoder.load(tmp_path / "missing")
    folder = tiny_encoder().save(tmp_path / "enc")
    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "version": 7}))
    with pytest.raises(ModelLoadError, match=r"format version 7 is not 1"):
        ContrastiveMusicEncoder.load(folder)
    (folder / "config.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ModelLoadError, match=r"format 'other' is not "
                                             r"'harmonycloak.contrastive_encoder'"):
        ContrastiveMusicEncoder.load(folder)
    (folder / "config.json").write_text(json.dumps({**meta, "config": {
        **meta["config"], "widths": [4]}}))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: cannot load these weights"):
        ContrastiveMusicEncoder.load(folder)
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is missing"):
        ContrastiveMusicEncoder.load(folder)
    target_dir = EmbeddingShiftTarget(tiny_encoder()).save(tmp_path / "target")
    meta = json.loads((target_dir / "config.json").read_text())
    (target_dir / "config.json").write_text(json.dumps({**meta, "encoder": "wav2vec"}))
    with pytest.raises(ModelLoadError, match=r"unknown encoder 'wav2vec'; expected one of "
                                             r"\['clap', 'contrastive'\]"):
        EmbeddingShiftTarget.load(target_dir)


# ----------------------------------------------------------- contrastive training


@pytest.fixture(scope="module")
def pieces() -> list[np.ndarray]:
    return [chord_piece(chords, seed=i)[None] for i, chords in enumerate(PROGRESSIONS)]


def crop_similarities(encoder: ContrastiveMusicEncoder,
                      pieces: list[np.ndarray]) -> tuple[float, float]:
    """Mean cosine of same-piece and of different-piece 1 s crops (fixed, held-out draws)."""
    generator = torch.Generator().manual_seed(123)
    crops, labels = [], []
    for label, piece in enumerate(pieces):
        wave = torch.from_numpy(piece[0])
        for _ in range(4):
            start = int(torch.randint(wave.numel() - RATE, (1,), generator=generator))
            crops.append(wave[start:start + RATE])
            labels.append(label)
    with torch.no_grad():
        emb = F.normalize(encoder.embed(torch.stack(crops)), dim=1)
    sim, lab = emb @ emb.T, torch.tensor(labels)
    same = (lab[:, None] == lab[None]) & ~torch.eye(len(lab), dtype=torch.bool)
    return float(sim[same].mean()), float(sim[lab[:, None] != lab[None]].mean())


def test_training_brings_same_piece_crops_together(pieces: list[np.ndarray]) -> None:
    untrained = crop_similarities(tiny_encoder(), pieces)
    encoder = train_contrastive(pieces, steps=60, generator=torch.Generator().manual_seed(0),
                                sample_rate_hz=RATE, config=ContrastiveEncoderConfig.tiny(),
                                crop_s=1.0, lr=3e-3)
    same, different = crop_similarities(encoder, pieces)
    assert same > 0.8 and different < 0.5
    assert same - different > untrained[0] - untrained[1] + 0.5
    losses = encoder.train_losses  # type: ignore[attr-defined]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert encoder.trained_steps == 60
    assert all(p.requires_grad for p in encoder.parameters())


def test_training_is_deterministic(pieces: list[np.ndarray]) -> None:
    # One clip as a 44.1 kHz stereo AudioClip: training resamples and downmixes it.
    stereo = np.repeat(chord_piece(PROGRESSIONS[2], rate=44_100, seed=2)[None], 2, axis=0)
    clips = [pieces[0], pieces[1], AudioClip(stereo, 44_100)]

    def run(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        encoder = tiny_encoder()
        losses = encoder.train_contrastive(clips, steps=4, sample_rate_hz=RATE, crop_s=0.5,
                                           generator=torch.Generator().manual_seed(seed))
        return losses, encoder.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert a[0] == b[0] and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert a[0] != c[0]


def test_training_input_errors(pieces: list[np.ndarray]) -> None:
    encoder = tiny_encoder()
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(InputError, match=r"1 clip; contrastive training needs at least 2"):
        encoder.train_contrastive(pieces[:1], steps=1, generator=gen, sample_rate_hz=RATE)
    with pytest.raises(InputError, match=r"clip 0: a bare array has no sample rate; pass "
                                         r"sample_rate_hz"):
        encoder.train_contrastive(pieces, steps=1, generator=gen)
    bad = [pieces[0], np.full((1, 100), np.nan, dtype=np.float32)]
    with pytest.raises(InputError, match=r"clip 1: contains NaN"):
        encoder.train_contrastive(bad, steps=1, generator=gen, sample_rate_hz=RATE)


def test_embedding_view_keeps_distances_of_planar_points_and_is_deterministic():
    from harmonycloak.targets.embedding import embedding_view

    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 2, generator=gen, dtype=torch.float64))[0].T  # [2, 16]
    clean = torch.randn(5, 2, generator=gen, dtype=torch.float64) @ basis + 3.0
    protected = torch.randn(5, 2, generator=gen, dtype=torch.float64) @ basis + 3.0
    view = embedding_view(clean, protected)
    full = torch.cdist(torch.cat([clean, protected]), torch.cat([clean, protected]))
    flat = torch.tensor(view["clean"] + view["protected"], dtype=torch.float64)
    assert torch.allclose(torch.cdist(flat, flat), full, atol=1e-3)       # nothing lost in 2-D
    assert sum(view["explained_variance"]) == pytest.approx(1.0, abs=1e-3)
    cos = torch.nn.functional.cosine_similarity(clean, protected, dim=-1)
    assert view["cosine_similarity"] == pytest.approx(cos.tolist(), abs=1e-4)
    assert embedding_view(clean, protected) == view
    mirrored = embedding_view(clean.neg(), protected.neg())     # axes keep their sign: the picture mirrors
    assert np.allclose(mirrored["clean"], -np.array(view["clean"]), atol=1e-3)


def test_embedding_view_of_one_pair_and_of_nothing():
    from harmonycloak.targets.embedding import embedding_view

    one = embedding_view(torch.ones(1, 8), torch.zeros(1, 8))
    assert one["explained_variance"] == [1.0, 0.0]
    (cx, cy), (px, py) = one["clean"][0], one["protected"][0]
    assert cy == py == 0.0 and abs(cx - px) == pytest.approx(8 ** 0.5, abs=1e-3)
    empty = embedding_view(torch.zeros(0, 8), torch.zeros(0, 8))
    assert empty["clean"] == [] and empty["explained_variance"] == [0.0, 0.0]
    with pytest.raises(InputError, match="give two \\[windows, dim\\] tensors of one shape"):
        embedding_view(torch.zeros(2, 8), torch.zeros(3, 8))
