"""The who-is-it genre classifier (evaluate/classifier.py) on synthetic "genres"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonycloak.clip import AudioClip, PianoRoll
from harmonycloak.errors import InputError
from harmonycloak.evaluate.classifier import (
    ClassifierConfig,
    accuracy,
    confusion_matrix,
    train_classifier,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 16000
SMALL = ClassifierConfig(widths=(8, 16), crop_s=1.0, crop_steps=48, batch_size=12)


def genre_clip(genre: str, seed: int, *, duration_s: float = 2.0,
               rate: int = RATE) -> np.ndarray:
    """Two synthetic genres with random notes: "ballad" (slow, low, dark sine-like notes)
    and "dance" (fast, higher, bright notes with hi-hat noise). Levels vary at random,
    so loudness cannot tell them apart. ``[1, samples]`` float32."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate)
    out = np.zeros(n)
    slow = genre == "ballad"
    step = int((0.5 if slow else 0.125) * rate)
    harmonics = 2 if slow else 8
    low, high = (45, 57) if slow else (57, 76)
    for start in range(-int(rng.integers(0, step)), n, step):
        f0 = 440.0 * 2 ** ((rng.integers(low, high) - 69) / 12)
        lo, hi = max(start, 0), min(start + 2 * step, n)
        t = (np.arange(lo, hi) - start) / rate
        env = (1 - np.exp(-t / 0.005)) * np.exp(-t / (0.4 if slow else 0.06))
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1)
                   if k * f0 < 0.45 * rate)
        out[lo:hi] += env * tone
        if not slow:   # hi-hat: a short noise burst
            burst = min(hi, lo + int(0.02 * rate)) - lo
            out[lo:lo + burst] += 0.3 * rng.standard_normal(burst) * np.exp(-np.arange(burst) / 80)
    out *= rng.uniform(0.1, 0.9) / np.max(np.abs(out))
    return out[None].astype(np.float32)


def genre_roll(genre: str, seed: int, *, steps: int = 96) -> np.ndarray:
    """Two synthetic MIDI genres on two tracks: "chorale" (long low chords, no drums)
    and "dance" (short high notes every step pair, drum hits). ``[2, steps, 84]``."""
    rng = np.random.default_rng(seed)
    roll = np.zeros((2, steps, 84), np.float32)
    if genre == "chorale":
        for start in range(0, steps, 24):
            root = int(rng.integers(12, 30))
            for interval in (0, 4, 7):
                roll[0, start:start + 22, root + interval] = rng.uniform(0.4, 0.8)
    else:
        for start in range(0, steps, 3):
            roll[0, start:start + 2, int(rng.integers(40, 70))] = rng.uniform(0.5, 1.0)
        for start in range(0, steps, 12):
            roll[1, start, 12 if (start // 12) % 2 == 0 else 14] = 1.0
    return roll


def audio_set(count: int, offset: int) -> tuple[np.ndarray, list[str]]:
    clips, labels = [], []
    for i in range(count):
        for genre in ("ballad", "dance"):
            clips.append(genre_clip(genre, offset + 2 * i + (genre == "dance")))
            labels.append(genre)
    return np.stack(clips), labels


@pytest.fixture(scope="module")
def audio_classifier():
    clips, labels = audio_set(8, 0)
    return train_classifier(clips, labels, steps=40, seed=0, sample_rate_hz=RATE, config=SMALL)


def test_audio_classifier_separates_two_genres(audio_classifier):
    clips, labels = audio_set(8, 1000)                    # unseen clips
    matrix = confusion_matrix(audio_classifier, clips, labels)
    assert audio_classifier.classes == ("ballad", "dance")
    assert matrix.shape == (2, 2) and matrix.sum() == 16
    assert matrix.sum(axis=1).tolist() == [8, 8]          # rows: true labels
    assert np.trace(matrix) / matrix.sum() > 0.9
    assert audio_classifier.train_losses[-1] < audio_classifier.train_losses[0]


def test_audio_prediction_takes_any_length_rate_and_clip_type(audio_classifier):
    ballad = genre_clip("ballad", 77, duration_s=3.3, rate=22050)
    dance = genre_clip("dance", 78, duration_s=0.7, rate=22050)   # shorter than a crop: tiled
    clips = [AudioClip(ballad, 22050), AudioClip(np.repeat(dance, 2, axis=0), 22050)]
    assert audio_classifier.predict_labels(clips) == ["ballad", "dance"]
    # batch-independent: one at a time gives the same logits
    both = audio_classifier.logits(clips)
    torch.testing.assert_close(both[1:], audio_classifier.logits(clips[1:]))


def test_training_is_seeded():
    clips, labels = audio_set(2, 50)
    a = train_classifier(clips, labels, steps=3, seed=4, sample_rate_hz=RATE, config=SMALL)
    b = train_classifier(clips, labels, steps=3, seed=4, sample_rate_hz=RATE, config=SMALL)
    c = train_classifier(clips, labels, steps=3, seed=5, sample_rate_hz=RATE, config=SMALL)
    assert a.train_losses == b.train_losses != c.train_losses
    torch.testing.assert_close(a.logits(clips), b.logits(clips))


def test_piano_roll_classifier_separates_two_genres():
    train = [(genre_roll(g, s), g) for s in range(6) for g in ("chorale", "dance")]
    test = [(genre_roll(g, 100 + s), g) for s in range(6) for g in ("chorale", "dance")]
    rolls, labels = zip(*train)
    classifier = train_classifier(np.stack(rolls), list(labels), steps=25, seed=0, config=SMALL)
    assert classifier.kind == "midi" and classifier.tracks == 2 and classifier.pitches == 84
    test_rolls, test_labels = zip(*test)
    assert accuracy(classifier, list(test_rolls), list(test_labels)) > 0.9
    # PianoRoll objects and MuseGAN-style phrases [tracks, bars, steps, pitches] work too
    roll = PianoRoll(genre_roll("dance", 7), steps_per_beat=12, lowest_pitch=24,
                     programs=(0, 0), is_drum=(False, True), track_names=("lead", "drums"))
    phrase = genre_roll("chorale", 8).reshape(2, 2, 48, 84)
    assert classifier.predict_labels([roll, phrase]) == ["dance", "chorale"]
    with pytest.raises(InputError, match="trained on 2 tracks and 84 pitches"):
        classifier.predict([np.zeros((5, 96, 84), np.float32)])


def test_confusion_matrix_counts_by_hand(audio_classifier):
    clips, labels = audio_set(2, 2000)
    predicted = audio_classifier.predict(clips)
    matrix = confusion_matrix(audio_classifier, clips, labels)
    expected = np.zeros((2, 2), np.int64)
    for truth, guess in zip(labels, predicted):
        expected[audio_classifier.classes.index(truth), guess] += 1
    np.testing.assert_array_equal(matrix, expected)
    # a set with only one genre present (e.g. samples of the protected artist) keeps rows
    only = confusion_matrix(audio_classifier, clips[:1], labels[:1])
    assert only.sum(axis=1).tolist() == [1, 0]


@pytest.mark.parametrize("call,message", [
    (lambda c, l: train_classifier(c, l[:-1], steps=1, seed=0, sample_rate_hz=RATE),
     "4 examples but 3 labels"),
    (lambda c, l: train_classifier(c, ["x"] * 4, steps=1, seed=0, sample_rate_hz=RATE),
     "only one class"),
    (lambda c, l: train_classifier(list(c), l, steps=1, seed=0),
     "bare array with no sample rate; pass sample_rate_hz"),
    (lambda c, l: train_classifier(c[:, :, :100], l, steps=1, seed=0, sample_rate_hz=RATE),
     "lasts 0.006 s; give at least 0.064 s"),
])
def test_bad_training_input_is_refused(call, message):
    clips, labels = audio_set(2, 3000)
    with pytest.raises(InputError, match=message):
        call(clips, labels)


def test_unknown_labels_in_the_confusion_matrix_are_refused(audio_classifier):
    clips, _ = audio_set(1, 4000)
    with pytest.raises(InputError, match=r"labels \['jazz'\] are not among"):
        confusion_matrix(audio_classifier, clips, ["ballad", "jazz"])
