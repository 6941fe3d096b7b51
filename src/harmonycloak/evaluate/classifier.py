"""A genre (or artist) classifier for the who-is-it test (HarmonyCloak paper, figure 8).

The paper trains a classifier on clean music and asks it to label music *generated* by
models that were trained with one artist or genre protected: if protection works, the
protected class's generated samples are no longer recognized as that class (they spread
over the others or collapse onto one), which a confusion matrix shows.

Two small CNNs behind one wrapper, :class:`GenreClassifier`:

* audio (:class:`AudioGenreNet`): clips are mixed to mono and resampled to 16 kHz
  (:func:`harmonycloak.perturb.dsp.resample`), turned into a log-mel spectrogram with
  our own filterbank (:class:`harmonycloak.targets.mel.MelFrontEnd`: 1024-point FFT, hop
  256 (16 ms), 64 Slaney mel bands up to 8 kHz), standardized per example (mean 0, unit
  variance: the level of a clip says nothing about its genre), then conv blocks;
* MIDI (:class:`PianoRollGenreNet`): piano rolls ``[tracks, steps, pitches]`` (velocities
  in [0, 1]; MuseGAN phrases ``[tracks, bars, steps, pitches]`` are joined bar after
  bar) with the tracks as input channels, then the same conv blocks.

Conv block: 3x3 convolution, GroupNorm over the whole map, ReLU, 2x2 average pooling
(all but the last block); then mean and max over both axes and one linear layer to the
classes. No batch-dependent layer, so a clip's prediction does not depend on its batch.

Training (:func:`train_classifier`): AdamW on cross-entropy over random crops
(``crop_s`` of audio, ``crop_steps`` of a roll; shorter examples are tiled), classes
drawn uniformly per batch item so that an unbalanced set does not bias the classifier.
Prediction: the mean of the logits over consecutive crops covering the whole example.
Everything random comes from ``seed``; the global RNG is not touched.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.errors import InputError

__all__ = [
    "AudioGenreNet",
    "ClassifierConfig",
    "GenreClassifier",
    "PianoRollGenreNet",
    "accuracy",
    "confusion_matrix",
    "train_classifier",
]

Kind = Literal["audio", "midi"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training of the genre classifier (see the module docstring).

    ``widths``: channels of each conv block; ``sample_rate_hz``, ``n_fft``, ``hop``,
    ``n_mels``, ``f_max_hz``: the audio front end; ``crop_s`` (audio) and ``crop_steps``
    (MIDI; 192 = four 4/4 bars at 12 steps per beat) the training and prediction window;
    ``batch_size``, ``lr``, ``weight_decay``: AdamW.
    """

    widths: tuple[int, ...] = (16, 32, 48)
    sample_rate_hz: int = 16000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 64
    f_max_hz: float = 8000.0
    crop_s: float = 4.0
    crop_steps: int = 192
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4

    def validate(self) -> None:
        if not self.widths or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise InputError(f"ClassifierConfig.widths={self.widths!r}: give positive integers")
        if not (self.crop_s > 0 and self.crop_steps > 0 and self.batch_size > 0 and self.lr > 0):
            raise InputError(f"ClassifierConfig: crop_s={self.crop_s}, crop_steps="
                             f"{self.crop_steps}, batch_size={self.batch_size}, lr={self.lr}; "
                             "all must be positive")

    @property
    def crop_samples(self) -> int:
        return max(int(round(self.crop_s * self.sample_rate_hz)), self.n_fft)


class _ConvBody(nn.Module):
    """Conv blocks and the classification head: ``[n, c, h, w] -> [n, classes]``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], classes: int) -> None:
        super().__init__()
        blocks = []
        cin = in_channels
        for width in widths:
            blocks.append(nn.Sequential(nn.Conv2d(cin, width, 3, padding=1, bias=False),
                                        nn.GroupNorm(1, width), nn.ReLU()))
            cin = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(2 * cin, classes)

    def forward(self, h: Tensor) -> Tensor:
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index < len(self.blocks) - 1:
                kernel = (2 if h.shape[2] > 1 else 1, 2 if h.shape[3] > 1 else 1)
                h = F.avg_pool2d(h, kernel, ceil_mode=True)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class AudioGenreNet(nn.Module):
    """Log-mel CNN: mono waveforms ``[n, samples]`` at ``config.sample_rate_hz`` -> logits."""

    def __init__(self, config: ClassifierConfig, classes: int) -> None:
        super().__init__()
        from harmonycloak.targets.mel import MelFrontEnd

        self.front_end = MelFrontEnd(config.sample_rate_hz, n_fft=config.n_fft, hop=config.hop,
                                     n_mels=config.n_mels, f_max_hz=config.f_max_hz)
        self.body = _ConvBody(1, config.widths, classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.front_end(x)                                   # [n, mels, frames]
        mean = features.mean(dim=(1, 2), keepdim=True)
        std = features.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
        return self.body(((features - mean) / std).unsqueeze(1))


class PianoRollGenreNet(nn.Module):
    """Piano-roll CNN: ``[n, tracks, steps, pitches]`` velocities -> logits."""

    def __init__(self, config: ClassifierConfig, classes: int, tracks: int) -> None:
        super().__init__()
        self.body = _ConvBody(tracks, config.widths, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@dataclass
class GenreClassifier:
    """A trained classifier: ``predict`` labels examples, ``classes`` names the labels.

    ``kind``: "audio" or "midi"; ``classes``: the label values, in the order of the
    logits and of :func:`confusion_matrix`'s rows and columns; ``sample_rate_hz``: the
    rate of the audio it was given at training (bare arrays without a rate are taken at
    this rate); ``tracks``/``pitches``: the roll layout it expects (MIDI);
    ``train_losses``: the cross-entropy of every training step.
    """

    kind: Kind
    model: nn.Module
    classes: tuple[Hashable, ...]
    config: ClassifierConfig
    sample_rate_hz: int | None = None
    tracks: int | None = None
    pitches: int | None = None
    seed: int = 0
    train_losses: list[float] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _window(self) -> int:
        return self.config.crop_samples if self.kind == "audio" else self.config.crop_steps

    def logits(self, examples: Any, *, sample_rate_hz: int | None = None) -> Tensor:
        """Mean logits over each example's crops, ``[n, classes]`` (no gradients)."""
        items = _prepare(examples, self.kind, sample_rate_hz or self.sample_rate_hz,
                         self.config, what="predict")
        self._check_layout(items)
        window = self._window()
        self.model.eval()
        out = []
        with torch.no_grad():
            for item in items:
                crops = torch.stack(_covering_crops(item, window)).to(self.device)
                out.append(self.model(crops).mean(dim=0))
        return torch.stack(out).cpu()

    def predict(self, examples: Any, *, sample_rate_hz: int | None = None) -> np.ndarray:
        """Class indices ``[n]`` (into :attr:`classes`) of the examples."""
        return self.logits(examples, sample_rate_hz=sample_rate_hz).argmax(dim=1).numpy()

    def predict_labels(self, examples: Any, *, sample_rate_hz: int | None = None) -> list[Hashable]:
        """The predicted label values (from :attr:`classes`)."""
        return [self.classes[i] for i in self.predict(examples, sample_rate_hz=sample_rate_hz)]

    def _check_layout(self, items: list[Tensor]) -> None:
        if self.kind != "midi":
            return
        for index, item in enumerate(items):
            if item.shape[0] != self.tracks or item.shape[2] != self.pitches:
                raise InputError(f"example {index}: a roll of {item.shape[0]} tracks and "
                                 f"{item.shape[2]} pitches; this classifier was trained on "
                                 f"{self.tracks} tracks and {self.pitches} pitches")


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


def _infer_kind(examples: Any) -> Kind:
    from harmonycloak.clip import AudioClip, PianoRoll

    first = examples[0] if isinstance(examples, Sequence) and len(examples) else None
    if isinstance(first, AudioClip):
        return "audio"
    if isinstance(first, PianoRoll):
        return "midi"
    if isinstance(examples, (np.ndarray, Tensor)):
        return "audio" if examples.ndim == 3 else "midi"
    if first is not None:
        return "audio" if np.ndim(first) == 2 else "midi"
    raise InputError("no examples given; pass a batch [n, channels, samples] of audio, "
                     "[n, tracks, steps, pitches] of piano rolls, or a list of clips")


def _prepare(examples: Any, kind: Kind, sample_rate_hz: int | None, config: ClassifierConfig,
             *, what: str) -> list[Tensor]:
    """Examples as model-ready CPU tensors: mono 16 kHz waves ``[samples]`` (audio) or
    rolls ``[tracks, steps, pitches]`` (MIDI)."""
    from harmonycloak.clip import AudioClip, PianoRoll
    from harmonycloak.perturb.dsp import resample

    if isinstance(examples, (np.ndarray, Tensor)):
        examples = list(examples)
    if not isinstance(examples, Sequence) or len(examples) == 0:
        raise InputError(f"{what}: no examples given")
    items = []
    for index, example in enumerate(examples):
        if kind == "audio":
            if isinstance(example, AudioClip):
                data, rate = example.samples, example.sample_rate_hz
            else:
                if sample_rate_hz is None:
                    raise InputError(f"{what}: example {index} is a bare array with no sample "
                                     "rate; pass sample_rate_hz=... or AudioClip objects")
                data, rate = example, sample_rate_hz
            wave = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
            wave = wave.detach().to("cpu", torch.float32)
            if wave.dim() != 2 or wave.shape[1] == 0:
                raise InputError(f"{what}: audio example {index} has shape {tuple(wave.shape)}; "
                                 "give [channels, samples]")
            with torch.no_grad():
                mono = resample(wave.mean(dim=0), int(rate), config.sample_rate_hz)
            if mono.shape[0] <= config.n_fft // 2:
                raise InputError(f"{what}: audio example {index} lasts {wave.shape[1] / rate:.3f}"
                                 f" s; give at least {config.n_fft / config.sample_rate_hz:.3f} s")
            items.append(mono)
        else:
            data = example.velocities if isinstance(example, PianoRoll) else example
            roll = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
            roll = roll.detach().to("cpu", torch.float32)
            if roll.dim() == 4:  # MuseGAN phrase [tracks, bars, steps, pitches]
                roll = roll.reshape(roll.shape[0], -1, roll.shape[-1])
            if roll.dim() != 3 or roll.shape[1] == 0:
                raise InputError(f"{what}: MIDI example {index} has shape {tuple(roll.shape)}; "
                                 "give a piano roll [tracks, steps, pitches]")
            items.append(roll)
    if not all(torch.isfinite(item).all() for item in items):
        raise InputError(f"{what}: the examples hold NaN or infinite values")
    return items


def _tile(item: Tensor, length: int) -> Tensor:
    """``item`` repeated along time (dim -1 for audio, 1 for rolls) to at least ``length``."""
    axis = 0 if item.dim() == 1 else 1
    size = item.shape[axis]
    if size >= length:
        return item
    reps = -(-length // size)
    return item.repeat(reps) if axis == 0 else item.repeat(1, reps, 1)


def _crop(item: Tensor, start: int, length: int) -> Tensor:
    return item[start:start + length] if item.dim() == 1 else item[:, start:start + length]


def _covering_crops(item: Tensor, length: int) -> list[Tensor]:
    """Consecutive crops of ``length`` covering ``item`` (the last one ends at its end)."""
    item = _tile(item, length)
    size = item.shape[0] if item.dim() == 1 else item.shape[1]
    starts = list(range(0, size - length + 1, length))
    if starts[-1] + length < size:
        starts.append(size - length)
    return [_crop(item, s, length) for s in starts]


def _class_indices(labels: Sequence[Hashable], classes: tuple[Hashable, ...] | None,
                   count: int, what: str) -> tuple[tuple[Hashable, ...], list[int]]:
    labels = list(labels.tolist() if isinstance(labels, (np.ndarray, Tensor)) else labels)
    if len(labels) != count:
        raise InputError(f"{what}: {count} examples but {len(labels)} labels; give one label "
                         "per example")
    if classes is None:
        classes = tuple(sorted(set(labels), key=lambda v: (str(type(v)), v)))
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(label) for label in labels if label not in lookup})
    if unknown:
        raise InputError(f"{what}: labels {unknown} are not among the classifier's classes "
                         f"{list(classes)}")
    return classes, [lookup[label] for label in labels]


# ---------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------


def train_classifier(examples: Any, labels: Sequence[Hashable], *, steps: int, seed: int,
                     kind: Kind | None = None, sample_rate_hz: int | None = None,
                     config: ClassifierConfig | None = None,
                     device: str = "cpu") -> GenreClassifier:
    """Train a genre classifier from scratch on labelled examples.

    ``examples``: audio as a batch ``[n, channels, samples]`` (numpy or torch) at
    ``sample_rate_hz``, a list of such ``[channels, samples]`` arrays (any lengths) or of
    :class:`~harmonycloak.clip.AudioClip`; or piano rolls as a batch ``[n, tracks, steps,
    pitches]`` (or MuseGAN phrases ``[n, tracks, bars, steps, pitches]``), a list of
    rolls or of :class:`~harmonycloak.clip.PianoRoll` (equal tracks and pitches).
    ``kind`` ("audio"/"midi") is inferred when None. ``labels``: one hashable per example
    (genre names, artist ids); at least two classes. ``steps`` AdamW steps of
    ``config.batch_size`` random crops each, classes balanced; seeded by ``seed``.
    """
    config = config or ClassifierConfig()
    config.validate()
    if steps < 0:
        raise InputError(f"train_classifier: steps={steps}; use 0 or more")
    kind = kind or _infer_kind(examples)
    if kind not in ("audio", "midi"):
        raise InputError(f"train_classifier: kind={kind!r}; use 'audio' or 'midi'")
    items = _prepare(examples, kind, sample_rate_hz, config, what="train_classifier")
    classes, targets = _class_indices(labels, None, len(items), "train_classifier")
    if len(classes) < 2:
        raise InputError(f"train_classifier: only one class ({classes[0]!r}); a classifier "
                         "needs examples of at least two classes")
    tracks = pitches = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "audio":
            model: nn.Module = AudioGenreNet(config, len(classes))
        else:
            tracks, pitches = int(items[0].shape[0]), int(items[0].shape[2])
            model = PianoRollGenreNet(config, len(classes), tracks)
    classifier = GenreClassifier(kind, model.to(device), classes, config,
                                 sample_rate_hz=sample_rate_hz, tracks=tracks, pitches=pitches,
                                 seed=seed)
    classifier._check_layout(items)
    classifier.train_losses = _fit(classifier, items, targets, steps=steps, seed=seed)
    return classifier


def _fit(classifier: GenreClassifier, items: list[Tensor], targets: list[int], *, steps: int,
         seed: int) -> list[float]:
    config = classifier.config
    generator = torch.Generator().manual_seed(seed)
    by_class = [[i for i, t in enumerate(targets) if t == c] for c in range(len(classifier.classes))]
    by_class = [members for members in by_class if members]
    window = classifier._window()
    tiled = [_tile(item, window) for item in items]
    model = classifier.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    losses = []
    model.train()
    for _ in range(steps):
        batch, batch_targets = [], []
        for _ in range(config.batch_size):
            members = by_class[int(torch.randint(len(by_class), (), generator=generator))]
            index = members[int(torch.randint(len(members), (), generator=generator))]
            item = tiled[index]
            size = item.shape[0] if item.dim() == 1 else item.shape[1]
            start = int(torch.randint(size - window + 1, (), generator=generator))
            batch.append(_crop(item, start, window))
            batch_targets.append(targets[index])
        x = torch.stack(batch).to(classifier.device)
        y = torch.tensor(batch_targets, device=classifier.device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def confusion_matrix(classifier: GenreClassifier, examples: Any, labels: Sequence[Hashable], *,
                     sample_rate_hz: int | None = None) -> np.ndarray:
    """Counts ``[classes, classes]`` (int64): row = true label, column = predicted label.

    Rows and columns follow ``classifier.classes``. Labels must be among them (a sample
    generated by a model trained with one class protected still carries that class's
    label here: the question is whether the classifier still recognizes it). A row sums
    to the number of examples with that label (0 for a class not present).
    """
    predicted = classifier.predict(examples, sample_rate_hz=sample_rate_hz)
    _, truth = _class_indices(labels, classifier.classes, len(predicted), "confusion_matrix")
    size = len(classifier.classes)
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth), predicted), 1)
    return matrix


def accuracy(classifier: GenreClassifier, examples: Any, labels: Sequence[Hashable], *,
             sample_rate_hz: int | None = None) -> float:
    """Share of examples whose predicted label is their label (trace / total of
    :func:`confusion_matrix`), in [0, 1]."""
    matrix = confusion_matrix(classifier, examples, labels, sample_rate_hz=sample_rate_hz)
    total = int(matrix.sum())
    return float(np.trace(matrix) / total) if total else float("nan")
