"""The evaluation harness: train attackers on clean and on protected music, and measure
what they learned, how the protected music sounds, and what survives removal attacks.

One call, :func:`run_evaluation`, does the whole experiment of issue 5 on a folder of
music (audio or MIDI) and returns the ``results.json`` dict (keys documented in
``docs/evaluate.md``); ``harmonycloak evaluate`` and the figure-5 benchmarks
(``benchmarks/unlearnable_audio.py``, ``benchmarks/unlearnable_midi.py``) are thin
wrappers over the functions here.

The experiment (paper section 5; every random draw from ``seed``):

1. **Data** (:func:`load_dataset`): excerpts (audio) or four-bar phrases (MIDI) of up to
   ``profile.artists`` labels: ``labels.csv`` (columns ``file``/``path`` and
   ``label``/``genre``/``artist``), else the sub-folders, else the files' artist tags
   (the artists with the most files first), else one label per file. The
   first label is the protected artist, set P; the others are the rest R.
2. **Pre-trained model**: the attacker's architecture trained once on the whole folder
   as ``protect`` trains its white-box targets (the registry's cache), so the
   white-box cloak is crafted against exactly the model ``protect`` uses.
3. **Protection** (:func:`protect_set`): the cloak on all of P, crafted with the engine
   against the pre-trained model (``mode="whitebox"``; P as one batch, the
   unlearnable-examples setting), or file by file through
   :func:`harmonycloak.pipeline.protect` (``mode="blackbox"``). Stored as 16-bit audio
   would be. A share p of P (paper table 7) means its first ``ceil(p·|P|)`` clips.
4. **Attackers** (:func:`train_attacker`): for each share, a model trained from scratch
   (audio: over the pre-trained, frozen tokenizer or VAE, as MusicGen trains over a
   frozen EnCodec) on P (shared part protected) + R, with the same seed and the same
   batches in every run; and the pre-trained model fine-tuned on P clean vs protected
   (appendix A.3). Every ``eval_every`` steps: the mean loss on P as that attacker sees
   it (figure 5) and on the clean P (what it learned about the real music).
5. **Generated music** (table 3): ``generate`` samples per attacker; audio: FAD to P in
   the embedding of a contrastive encoder trained on the clean data (or a CLAP checkpoint
   given as ``embedder_dir``); MIDI: EB, UPC, QN, DP and TD.
6. **Quality of the protected music** (table 5): SNR, NMR p95, ViSQOL (audio); tonal
   distance and velocity change (MIDI).
7. **Removal attacks** (table 9): each attack of ``profile.attacks`` applied to P, clean
   and protected, two attackers trained over ``attack_steps``; the share of the effect
   that survives. The adaptive attacker augments every batch at random.
8. **Baselines at equal ViSQOL** (table 10): Gaussian noise, L2 and L∞ PGD, and
   harmonydagger on the same clips, trained on like the cloak.
9. **Who is it** (figure 8): a classifier trained on clean data labels the music of the
   pre-trained model fine-tuned on each artist; the protected artist's row with and
   without the cloak.

The *effect* of a protection on a pair of training runs is ``1 - mean(loss on P as the
protected run sees it) / mean(loss on P in the clean run)`` over the evaluation steps
after step 0 (up to a limit): 0 when the cloak changes nothing, toward 1 as the loss on
the protected music collapses (the paper's figure 5 shows losses near 0, an effect near 1).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harmonycloak.errors import HarmonyCloakError, InputError
from harmonycloak.evaluate.profiles import EvalProfile

__all__ = [
    "AUDIO_HINT",
    "Dataset",
    "KINDS",
    "MIDI_HINT",
    "MODES",
    "RESULTS_FORMAT",
    "RESULTS_FORMAT_VERSION",
    "TRACKS",
    "as_16bit",
    "as_roll",
    "craft_audio",
    "craft_midi",
    "effect",
    "evaluate",
    "excerpts",
    "load_dataset",
    "loss_ratio",
    "midi_metrics",
    "protect_set",
    "share_count",
    "train_attacker",
]

RESULTS_FORMAT = "harmonycloak.evaluate"
RESULTS_FORMAT_VERSION = 1
KINDS = ("audio", "midi")
MODES = ("whitebox", "blackbox")
TRACKS = ("Bass", "Drums", "Guitar", "Piano", "Strings")
AUDIO_HINT = "fetch the dev music with `bash scripts/get_dev_music.sh` (data/dev-music)"
MIDI_HINT = "create the dev MIDI corpus with `.venv/bin/python scripts/make_dev_midi.py` (data/dev-midi)"
DEFAULT_DATA = {"audio": Path("data/dev-music"), "midi": Path("data/dev-midi")}

_EXCERPTS_PER_FILE = 6          # evenly spaced excerpts per audio file
_SILENT_RMS = 1e-3              # excerpts quieter than -60 dBFS RMS are skipped
_ATTACKER_SEED = 7              # every attacker starts from the same weights
_BATCH_SEED = 3                 # ... and draws the same batches
_GENERATE_SEED = 11

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as each stage advances."""


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Dataset:
    """The evaluation data. ``clips``: audio float32 ``[n, 2, samples]`` at
    ``sample_rate_hz`` or MIDI phrases ``[n, 5, 4, 48, 84]`` (velocities in [0, 1]);
    ``labels[i]`` indexes ``label_names``; ``protected_label`` is the protected artist's
    index (label 0). ``sources[i]``: the file clip i comes from (relative to the folder)."""

    kind: str
    clips: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    sources: tuple[str, ...]
    sample_rate_hz: int | None
    root: str
    notes: tuple[str, ...] = ()
    protected_label: int = 0

    @property
    def protected_index(self) -> np.ndarray:
        return np.flatnonzero(self.labels == self.protected_label)

    @property
    def rest_index(self) -> np.ndarray:
        return np.flatnonzero(self.labels != self.protected_label)


def _data_files(root: Path, kind: str) -> list[Path]:
    from harmonycloak.io.audio import SUPPORTED_AUDIO_SUFFIXES
    from harmonycloak.io.midi import MIDI_SUFFIXES

    suffixes = SUPPORTED_AUDIO_SUFFIXES if kind == "audio" else MIDI_SUFFIXES
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in suffixes)


def detect_kind(root: Path) -> str:
    """``"audio"`` or ``"midi"``: whichever the folder holds (audio when both)."""
    for kind in KINDS:
        if _data_files(root, kind):
            return kind
    raise InputError(f"{root}: no audio or MIDI files to evaluate on; give --data DIR with "
                     f"music in it, or {AUDIO_HINT}, or {MIDI_HINT}")


def _labels_csv(root: Path) -> dict[str, str] | None:
    """``relative path → label`` from ``root/labels.csv``, or None when there is none."""
    path = root / "labels.csv"
    if not path.is_file():
        return None
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable ({exc}); give a CSV with a header "
                         "'file,label' (or path/genre/artist)") from exc
    if not rows:
        raise InputError(f"{path}: no rows; give one 'file,label' row per file")
    header = {k.strip().lower(): k for k in rows[0] if k}
    file_key = next((header[k] for k in ("file", "path", "filename") if k in header), None)
    label_key = next((header[k] for k in ("label", "genre", "artist", "style") if k in header), None)
    if file_key is None or label_key is None:
        raise InputError(f"{path}: header {list(rows[0])} has no file/path and label/genre/"
                         "artist column; use 'file,label'")
    return {row[file_key].strip(): row[label_key].strip() for row in rows
            if row.get(file_key) and row.get(label_key)}


def _file_labels(root: Path, files: list[Path]) -> tuple[dict[Path, str], str]:
    """Each file's label and where the labels came from."""
    table = _labels_csv(root)
    if table is not None:
        labels = {}
        for f in files:
            rel = f.relative_to(root).as_posix()
            label = table.get(rel, table.get(f.name))
            if label is not None:
                labels[f] = label
        if len({*labels.values()}) >= 2:
            return labels, "labels.csv"
    folders = {f: f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
    if len(set(folders.values())) >= 2:
        return folders, "sub-folders"
    artists = _artist_labels(files)
    if len(set(artists.values())) >= 2:
        return artists, ARTIST_TAGS
    return {f: f.stem for f in files}, "one label per file"


ARTIST_TAGS = "artist tags"


def _artist_labels(files: list[Path]) -> dict[Path, str]:
    """``file → artist`` for the files whose metadata names an artist (untagged files
    are left out): a flat folder of tagged tracks is then grouped by real artist."""
    from harmonycloak.rights.tags import read_artist

    found = {f: read_artist(f) for f in files}
    return {f: a for f, a in found.items() if a}


def _pick_labels(labels: dict[Path, str], profile: EvalProfile, root: Path,
                 origin: str = "") -> list[str]:
    """The labels in the order they are used: sorted by name; for artist tags, the
    artists with the most files first (ties by name), so the evaluation picks the
    artists with the most music. ``profile.protected_label`` goes first when given."""
    names = sorted(set(labels.values()))
    if origin == ARTIST_TAGS:
        count = Counter(labels.values())
        names.sort(key=lambda name: -count[name])
    if profile.protected_label is not None:
        if profile.protected_label not in names:
            raise InputError(f"{root}: no label {profile.protected_label!r}; the labels are "
                             f"{', '.join(names[:20])}")
        names.remove(profile.protected_label)
        names.insert(0, profile.protected_label)
    return names


def load_dataset(root: str | os.PathLike[str], *, kind: str | None, profile: EvalProfile,
                 seed: int = 0, progress: Progress | None = None) -> Dataset:
    """Read the evaluation data from ``root`` (see the module docstring, step 1).

    Raises :class:`InputError` naming the folder and the script that makes the dev data
    when the folder is missing or holds no usable music, or fewer than two labels with
    music long enough for a ``clip_s`` excerpt.
    """
    path = Path(root)
    if not path.is_dir():
        hint = {"audio": AUDIO_HINT, "midi": MIDI_HINT}.get(kind or "", f"{AUDIO_HINT}, or {MIDI_HINT}")
        raise InputError(f"{path}: data folder not found; {hint}, or give --data DIR")
    kind = kind or detect_kind(path)
    if kind not in KINDS:
        raise InputError(f"--kind {kind}: use audio or midi")
    files = _data_files(path, kind)
    if not files:
        hint = AUDIO_HINT if kind == "audio" else MIDI_HINT
        raise InputError(f"{path}: no {kind} files to evaluate on; {hint}, or give --data DIR")
    labels, origin = _file_labels(path, files)
    names = _pick_labels(labels, profile, path, origin)
    reader = _audio_clips if kind == "audio" else _midi_phrases
    clips, label_of, sources, notes, kept = reader(path, labels, names, profile, seed, progress)
    if len(kept) < 2:
        raise InputError(f"{path}: music for {len(kept)} label(s) only ({origin}); the evaluation "
                         "needs at least two (the protected artist and the rest): add music, a "
                         "labels.csv, or one sub-folder per artist")
    notes.insert(0, f"labels from {origin}; protected: {kept[0]!r}")
    return Dataset(kind=kind, clips=clips, labels=np.asarray(label_of, dtype=np.int64),
                   label_names=tuple(kept), sources=tuple(sources),
                   sample_rate_hz=profile.sample_rate_hz if kind == "audio" else None,
                   root=str(path), notes=tuple(notes))


def excerpts(samples: np.ndarray, n: int, *, per: int = _EXCERPTS_PER_FILE,
             min_rms: float = _SILENT_RMS) -> list[np.ndarray]:
    """Up to ``per`` excerpts of ``n`` samples from ``samples [channels, samples]``, centred
    at ``(k + 1) / (per + 1)`` of its length (one in the middle when it holds fewer than
    ``2n`` samples, none when fewer than ``n``); excerpts below ``min_rms`` are left out."""
    total = samples.shape[1]
    if total < n:
        return []
    per = per if total >= 2 * n else 1
    out = []
    for k in range(per):
        start = min(max(0, int(total * (k + 1) / (per + 1)) - n // 2), total - n)
        piece = samples[:, start:start + n]
        if min_rms <= 0 or float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) >= min_rms:
            out.append(piece)
    return out


def _audio_clips(root: Path, labels: dict[Path, str], names: list[str], profile: EvalProfile,
                 seed: int, progress: Progress | None):
    from harmonycloak.io import codecs
    from harmonycloak.io.audio import load_audio

    rate, n = profile.sample_rate_hz, round(profile.clip_s * profile.sample_rate_hz)
    clips: list[np.ndarray] = []
    label_of: list[int] = []
    sources: list[str] = []
    notes: list[str] = []
    kept: list[str] = []
    skipped = 0
    for name in names:
        if len(kept) == profile.artists:
            break
        pool: list[tuple[np.ndarray, str]] = []
        for f in (f for f in sorted(labels) if labels[f] == name):
            try:
                clip = load_audio(f)
            except InputError:
                skipped += 1
                continue
            x = clip.samples
            if clip.sample_rate_hz != rate:
                x = codecs.resample(x, clip.sample_rate_hz, rate)
            x = np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x[:2]
            pool += [(e, f.relative_to(root).as_posix()) for e in excerpts(x, n)]
            if len(pool) >= profile.clips_per_artist:
                break
        if len(pool) < 2:
            continue
        order = np.random.default_rng(seed).permutation(len(pool))[:profile.clips_per_artist]
        label = len(kept)
        kept.append(name)
        for i in sorted(order):
            clips.append(np.ascontiguousarray(pool[i][0], dtype=np.float32))
            label_of.append(label)
            sources.append(pool[i][1])
        if progress:
            progress("reading the music", len(kept), profile.artists)
    if skipped:
        notes.append(f"{skipped} unreadable audio file(s) skipped")
    array = np.stack(clips) if clips else np.zeros((0, 2, n), np.float32)
    return array, label_of, sources, notes, kept


def _midi_phrases(root: Path, labels: dict[Path, str], names: list[str], profile: EvalProfile,
                  seed: int, progress: Progress | None):
    from harmonycloak.targets.registry import corpus_phrases

    chunks, label_of, sources, kept = [], [], [], []
    for name in names:
        if len(kept) == profile.artists:
            break
        files = [f for f in sorted(labels) if labels[f] == name]
        # read files until there are enough phrases (a corpus label may hold thousands)
        phrases, used = [], []
        for f in files:
            try:
                p = corpus_phrases([f])
            except InputError:
                continue
            phrases.append(p)
            used += [f.relative_to(root).as_posix()] * len(p)
            if sum(len(a) for a in phrases) >= 4 * profile.clips_per_artist:
                break
        if not phrases or sum(len(a) for a in phrases) < 2:
            continue
        pool = np.concatenate(phrases)
        order = np.sort(np.random.default_rng(seed).permutation(len(pool))[:profile.clips_per_artist])
        label = len(kept)
        kept.append(name)
        chunks.append(pool[order])
        label_of += [label] * len(order)
        sources += [used[i] for i in order]
        if progress:
            progress("reading the music", len(kept), profile.artists)
    array = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 5, 4, 48, 84), np.float32)
    return array, label_of, sources, [], kept


# ---------------------------------------------------------------------------- models


def _audio_config(name: str, size: str, clip_s: float) -> Any:
    """The attacker's config for a model size; the LM's context holds a whole clip."""
    if name == "codec-lm":
        from harmonycloak.targets.codec_lm import CodecLMConfig

        if size == "tiny":
            tiny = CodecLMConfig.tiny()
            return replace(tiny, context_frames=max(tiny.context_frames,
                                                    math.ceil(clip_s * tiny.frame_rate_hz)))
        if size == "small":  # 50 frames/s, 2 codebooks of 64, 0.1 M tokenizer + 0.1 M LM
            return CodecLMConfig(widths=(4, 8, 16, 32), latent_dim=32, num_codebooks=2,
                                 codebook_size=64, stft_sizes=(256, 512), d_model=64, n_layers=2,
                                 n_heads=2, context_frames=max(50, math.ceil(clip_s * 50)))
        return CodecLMConfig()
    if name == "latent-diffusion":
        from harmonycloak.targets.latent_diffusion import LatentDiffusionConfig

        return LatentDiffusionConfig.tiny() if size == "tiny" else LatentDiffusionConfig()
    raise InputError(f"evaluate: audio target {name!r}; use codec-lm or latent-diffusion "
                     "(the attackers must be able to generate music)")


def _midi_config(name: str, size: str) -> Any:
    if size == "default":
        return None
    if name == "symbolic-lm":
        from harmonycloak.targets.symbolic_lm import SymbolicLMConfig

        return SymbolicLMConfig.tiny() if size == "tiny" else SymbolicLMConfig(
            d_model=128, n_layers=2, n_heads=4, d_ff=256)
    if name == "musegan":
        from harmonycloak.targets.musegan import MuseGANConfig

        return MuseGANConfig.tiny() if size == "tiny" else None
    raise InputError(f"evaluate: MIDI target {name!r}; use symbolic-lm or musegan")


def _stage1(model: Any) -> Any:
    """The first stage of a two-stage audio model (tokenizer, VAE)."""
    return model.tokenizer if hasattr(model, "tokenizer") else model.vae


class _AttackerModels:
    """What the audio and MIDI model builders share: the fine-tuned attacker is the
    pre-trained model trained on with the attacker's optimizer."""

    def pretrained(self, *, seed: int, optimizer: str = "sgd", lr: float | None = None) -> Any:
        raise NotImplementedError

    def attacker_optimizer(self) -> tuple[str, float]:
        raise NotImplementedError

    def finetuned(self, *, seed: int = _ATTACKER_SEED) -> Any:
        optimizer, lr = self.attacker_optimizer()
        return self.pretrained(seed=seed, optimizer=optimizer, lr=lr)


class AudioModels(_AttackerModels):
    """Builds the audio attackers: the pre-trained model from the registry's cache (trained
    once on the data folder, as ``protect`` trains its white-box target), fresh copies of
    it for fine-tuning and crafting, and models from scratch over its frozen first stage."""

    def __init__(self, name: str, data: Dataset, profile: EvalProfile, *, seed: int,
                 device: str, progress: Progress | None = None) -> None:
        from harmonycloak.targets import audio_registry
        from harmonycloak.targets.registry import cache_dir

        self.name, self.rate, self.device = name, int(data.sample_rate_hz or 44100), device
        self.config = _audio_config(name, profile.model_size, profile.clip_s)
        say = progress or (lambda *_: None)
        _, key = audio_registry.cached_audio_target(
            name, data.root, sample_rate_hz=self.rate, seed=seed, steps=profile.pretrain_steps,
            device=device, config=self.config, crop_s=profile.clip_s,
            progress=lambda stage, i, n: say(f"pre-training: {stage} the {name} model", i, n))
        self.folder = cache_dir() / key
        self.key = key
        self.stage1 = {k: v.detach().clone() for k, v in
                       _stage1(self.pretrained(seed=seed)).state_dict().items()}

    def _cls(self) -> Any:
        if self.name == "codec-lm":
            from harmonycloak.targets.codec_lm import CodecLMTarget

            return CodecLMTarget
        from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget

        return LatentDiffusionTarget

    def pretrained(self, *, seed: int, optimizer: str = "sgd", lr: float | None = None) -> Any:
        """A fresh copy of the pre-trained model (SGD lr 0.025 by default: the defender's)."""
        lr = 0.025 if optimizer == "sgd" and lr is None else lr
        return self._cls().load(self.folder, sample_rate_hz=self.rate, seed=seed,
                                device=self.device, optimizer=optimizer, lr=lr)

    def attacker_optimizer(self) -> tuple[str, float]:
        from harmonycloak.targets.audio_registry import ATTACKER_OPTIMIZER

        return ATTACKER_OPTIMIZER[self.name]

    def scratch(self, *, seed: int = _ATTACKER_SEED) -> Any:
        """A model from scratch over the pre-trained model's frozen first stage."""
        optimizer, lr = self.attacker_optimizer()
        model = self._cls()(self.config, sample_rate_hz=self.rate, seed=seed,
                            optimizer=optimizer, lr=lr, device=self.device)
        _stage1(model).load_state_dict(self.stage1)
        return model

    def generate(self, model: Any, n: int, seconds: float, *, seed: int = _GENERATE_SEED) -> np.ndarray:
        """``n`` clips ``[n, 1, samples]`` (mono, at the data's rate)."""
        gen = torch.Generator().manual_seed(seed)
        if hasattr(model, "generate_audio"):
            return model.generate_audio(n, seconds, gen).numpy()
        frames = model.config.context_frames / model.config.frame_rate_hz
        return model.generate(n, min(seconds, frames), gen).numpy()


class MidiModels(_AttackerModels):
    """Builds the MIDI attackers: the pre-trained model (the registry's cache for the
    default size, else trained here on all the clean phrases and saved under
    ``workdir``), fresh copies of it, and models from scratch."""

    def __init__(self, name: str, data: Dataset, profile: EvalProfile, *, seed: int,
                 device: str, workdir: Path, progress: Progress | None = None) -> None:
        from harmonycloak.targets import registry

        self.name, self.device = name, device
        self.config = _midi_config(name, profile.model_size)
        say = progress or (lambda *_: None)
        if profile.model_size == "default":
            _, key = registry.cached_target(
                name, data.root, steps=profile.pretrain_steps, batch_size=profile.batch_size,
                seed=seed, device=device,
                progress=lambda stage, i, n: say(f"pre-training: {stage} the {name} model", i, n))
            self.folder, self.key = registry.cache_dir() / key, key
            return
        # not the registry's size: trained here on every clean phrase, not cached
        model = self.scratch(seed=seed)
        train_attacker(model, torch.from_numpy(data.clips), {}, steps=profile.pretrain_steps,
                       batch_size=profile.batch_size, eval_every=profile.pretrain_steps, seed=seed,
                       progress=lambda i, n: say(f"pre-training the {name} model", i, n))
        self.folder, self.key = Path(workdir) / f"pretrained-{name}", f"{name}-{profile.model_size}"
        model.save(self.folder)

    def _new(self, *, seed: int, optimizer: str, lr: float) -> Any:
        from harmonycloak.targets.registry import new_target

        return new_target(self.name, seed=seed, device=self.device, optimizer=optimizer, lr=lr,
                          config=self.config)

    def pretrained(self, *, seed: int, optimizer: str = "sgd", lr: float | None = None) -> Any:
        """A fresh copy of the pre-trained model (SGD lr 0.025 by default: the defender's)."""
        from harmonycloak.targets.registry import load_target

        return load_target(self.name, self.folder, device=self.device, optimizer=optimizer,
                           lr=0.025 if lr is None else lr, seed=seed)

    def attacker_optimizer(self) -> tuple[str, float]:
        from harmonycloak.targets.registry import ATTACKER_OPTIMIZER

        return ATTACKER_OPTIMIZER[self.name]

    def scratch(self, *, seed: int = _ATTACKER_SEED) -> Any:
        optimizer, lr = self.attacker_optimizer()
        return self._new(seed=seed, optimizer=optimizer, lr=lr)

    def generate(self, model: Any, n: int, seconds: float, *, seed: int = _GENERATE_SEED) -> np.ndarray:
        """``n`` phrases ``[n, 5, 4, 48, 84]``; GAN outputs binarized at 0.5 (as MuseGAN)."""
        sample = model.generate(n, torch.Generator().manual_seed(seed)).numpy()
        if self.name == "musegan":
            sample = (sample > 0.5).astype(np.float32)
        return sample


# ------------------------------------------------------------------------ protection


def as_16bit(x: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Audio quantized to 16 bits, as a WAV/FLAC file would carry it."""
    if isinstance(x, np.ndarray):
        return (np.round(np.clip(x, -1, 1 - 2 ** -15) * 32768.0) / 32768.0).astype(np.float32)
    return torch.round(x.clamp(-1, 1 - 2 ** -15) * 32768.0) / 32768.0


def share_count(share: float, size: int) -> int:
    """How many of ``size`` clips a share protects: ``ceil(share · size)`` (0 for 0)."""
    return 0 if share <= 0 else min(size, math.ceil(share * size - 1e-9))


def craft_audio(protected: Tensor, crafter: Any, *, sample_rate_hz: int, settings: Any,
                mode: str = "spectrum", channel: Callable[[Tensor], Tensor] | None = None,
                seed: int = 0, device: str = "cpu", margin_db: float | None = None,
                on_iteration: Callable[[dict[str, Any]], None] | None = None
                ) -> tuple[Tensor, dict[str, Any]]:
    """The white-box cloak on a set of clips ``[n, channels, samples]``: the clips side by
    side as one piece, its masking budget (``mode``: ``"spectrum"`` or ``"tone"``; bounds
    ``margin_db`` below the masking threshold, None: the budget's default), the
    bi-level loop of eq. 5 against ``crafter`` (which trains on the cloaked clips in its
    outer steps) with the clips as its batch; ``channel`` (optional) maps the batch
    through the expectation over transformations; ``device`` holds the perturbation (the
    budget is computed on the CPU). Returns the cloaked clips (float32, on the CPU,
    not yet quantized) and a summary (``craft_s``, ``history``, ``snr_db``, ``nmr_p95_db``
    and the whole NMR summary ``nmr`` of the piece)."""
    from harmonycloak.perturb.audio_delta import DominantTonePerturbation, MaskedSpectrumPerturbation
    from harmonycloak.perturb.budget import dominant_tone_budget, masked_spectrum_budget
    from harmonycloak.perturb.optimize import min_min
    from harmonycloak.pipeline import SharedDelta
    from harmonycloak.psychoacoustics.nmr import nmr_summary, noise_to_mask_ratio

    n = protected.shape[-1]
    long = torch.cat(list(protected), dim=1)                      # [channels, clips * n]
    margin = {} if margin_db is None else {"margin_db": float(margin_db)}
    if mode == "spectrum":
        perturbation = MaskedSpectrumPerturbation(
            masked_spectrum_budget(long, sample_rate_hz, **margin), device=device)
    else:
        perturbation = DominantTonePerturbation(
            dominant_tone_budget(long, sample_rate_hz, **margin), device=device)
    long = long.to(device)
    shared = SharedDelta(perturbation)

    def to_model(y: Tensor) -> Tensor:
        batch = torch.stack(torch.split(y, n, dim=1))
        return channel(batch) if channel is not None else batch

    t0 = time.perf_counter()
    result = min_min(long, shared, crafter, to_model=to_model, regularizer=shared.regularizer,
                     settings=settings, generator=torch.Generator().manual_seed(seed),
                     on_iteration=on_iteration)
    with torch.no_grad():
        long_cloaked = perturbation.apply(long, result.params).detach()
    long, long_cloaked = long.cpu(), long_cloaked.cpu()
    cloaked = torch.stack(torch.split(long_cloaked, n, dim=1))
    noise = long_cloaked - long
    nmr = nmr_summary(noise_to_mask_ratio(noise, long, sample_rate_hz))
    summary = {"craft_s": round(time.perf_counter() - t0, 2),
               "snr_db": _snr(long.numpy(), noise.numpy()),
               "nmr_p95_db": round(float(nmr["p95_db"]), 3),
               "nmr": {k: round(float(v), 3) for k, v in nmr.items()},
               "history": [{k: _num(v) for k, v in row.items()} for row in result.history]}
    return cloaked, summary


def craft_midi(protected: np.ndarray, crafter: Any, *, settings: Any, seed: int = 0,
               on_iteration: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """The white-box cloak on phrases ``[n, 5, 4, 48, 84]``: the phrases side by side as
    one five-track roll, its note slots (eq. 5a, 6, 7), the bi-level loop against
    ``crafter`` with the regularizer protect uses. Returns the cloaked phrases and a
    summary of the velocity change (MIDI steps)."""
    from harmonycloak.perturb.optimize import min_min, track_weights
    from harmonycloak.perturb.parametrize import MidiVelocityPerturbation
    from harmonycloak.perturb.phrases import phrases_tensor
    from harmonycloak.perturb.windows import note_slots

    roll = as_roll(protected)
    slots = note_slots(roll)
    x = torch.from_numpy(roll.velocities)
    perturbation = MidiVelocityPerturbation(slots, tuple(x.shape))
    weights = track_weights(x)
    t0 = time.perf_counter()
    result = min_min(x, perturbation, crafter, to_model=phrases_tensor,
                     regularizer=lambda p: (weights * perturbation.track_rms(p, 5)).sum(),
                     settings=settings, generator=torch.Generator().manual_seed(seed),
                     on_iteration=on_iteration)
    with torch.no_grad():
        cloaked = phrases_tensor(perturbation.apply(x, result.params)).numpy()
    delta = perturbation.slot_delta(result.params).detach().numpy() * 127.0
    return cloaked, {"slots": int(slots.count), "craft_s": round(time.perf_counter() - t0, 2),
                     "velocity_raise_mean": round(float(delta.mean()), 3) if delta.size else 0.0,
                     "velocity_raise_max": round(float(delta.max()), 2) if delta.size else 0.0,
                     "alpha": settings.alpha,
                     "history": [{k: _num(v) for k, v in row.items()} for row in result.history]}


def as_roll(phrases: np.ndarray) -> Any:
    """Phrases ``[n, 5, 4, 48, 84]`` side by side as one five-track roll at 12 steps per beat."""
    from harmonycloak.clip import PianoRoll

    velocities = np.concatenate(list(phrases.reshape(len(phrases), 5, -1, 84)), axis=1)
    return PianoRoll(velocities=np.ascontiguousarray(velocities, dtype=np.float32),
                     steps_per_beat=12, lowest_pitch=24, programs=(33, 0, 25, 0, 48),
                     is_drum=(False, True, False, False, False), track_names=TRACKS)


def _engine_settings(profile: EvalProfile, target: str, kind: str, batch: int) -> Any:
    from harmonycloak.perturb.optimize import EngineSettings

    if kind == "audio":
        from harmonycloak.targets.audio_registry import DEFAULT_ALPHA
    else:
        from harmonycloak.targets.registry import DEFAULT_ALPHA
    e = profile.engine
    alpha = e.alpha if e.alpha is not None else DEFAULT_ALPHA[target]
    return EngineSettings.from_config(e, alpha=alpha, batch_size=min(e.batch_size, batch))


def protect_set(data: Dataset, models: Any, profile: EvalProfile, *, mode: str, target: str,
                seed: int, device: str, workdir: Path,
                progress: Progress | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The protected artist's clips, all of them protected (see the module docstring,
    step 3): ``mode="whitebox"`` crafts with the engine against a fresh copy of the
    pre-trained model; ``mode="blackbox"`` protects clip by clip through
    :func:`harmonycloak.pipeline.protect` (files in ``workdir``). Audio comes back
    quantized to 16 bits. Raises InputError for an unknown mode (and whatever
    ``protect`` raises for a mode it does not offer)."""
    if mode not in MODES:
        raise InputError(f"--mode {mode}: use one of {', '.join(MODES)}")
    say = progress or (lambda *_: None)
    clean = data.clips[data.protected_index]
    if mode == "blackbox":
        return _protect_with_pipeline(data, clean, profile, mode=mode, seed=seed, device=device,
                                      workdir=workdir, say=say)
    crafter = models.pretrained(seed=seed)
    settings = _engine_settings(profile, target, data.kind, len(clean))
    total = settings.outer_rounds * settings.inner_steps
    count = {"i": 0}

    def tick(_info: dict[str, Any]) -> None:
        count["i"] += 1
        say("crafting the cloak (white-box)", count["i"], total)

    if data.kind == "audio":
        cloaked, summary = craft_audio(torch.from_numpy(clean), crafter,
                                       sample_rate_hz=int(data.sample_rate_hz), settings=settings,
                                       mode=profile.audio_mode, seed=seed, device=device,
                                       on_iteration=tick)
        return as_16bit(cloaked.numpy()), {"mode": mode, **summary}
    cloaked, summary = craft_midi(clean, crafter, settings=settings, seed=seed, on_iteration=tick)
    return cloaked.astype(np.float32), {"mode": mode, **summary}


def _protect_with_pipeline(data: Dataset, clean: np.ndarray, profile: EvalProfile, *, mode: str,
                           seed: int, device: str, workdir: Path,
                           say: Callable[..., None]) -> tuple[np.ndarray, dict[str, Any]]:
    """Each clip written to a file, protected by ``pipeline.protect(mode=...)``, read back."""
    from harmonycloak.clip import AudioClip
    from harmonycloak.config import preset
    from harmonycloak.pipeline import protect

    config = replace(preset("standard-v1"), engine=profile.engine)
    folder = Path(workdir) / f"protect-{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    out, seconds = [], []
    for i, x in enumerate(clean):
        if data.kind == "audio":
            from harmonycloak.io.audio import load_audio, save_audio

            src, dst = folder / f"clip{i:03d}.wav", folder / f"clip{i:03d}.protected.wav"
            save_audio(AudioClip(np.ascontiguousarray(x), int(data.sample_rate_hz)), src, force=True)
        else:
            from harmonycloak.io.midi import load_midi, save_midi

            src, dst = folder / f"phrase{i:03d}.mid", folder / f"phrase{i:03d}.protected.mid"
            save_midi(as_roll(x[None]), src, force=True)
        report = protect(src, dst, mode=mode, config=config, seed=seed, device=device,
                         corpus_dir=data.root, force=True)
        seconds.append(float(report.get("seconds", 0.0)))
        if data.kind == "audio":
            y = load_audio(dst).samples
            out.append(np.ascontiguousarray(y[:, :x.shape[-1]], dtype=np.float32))
        else:
            from harmonycloak.perturb.phrases import phrases_from_roll

            out.append(phrases_from_roll(load_midi(dst, grouping="musegan").velocities)[0])
        say(f"protecting clip by clip ({mode})", i + 1, len(clean))
    return np.stack(out).astype(np.float32), {"mode": mode, "craft_s": round(sum(seconds), 2)}


# -------------------------------------------------------------------------- training


def train_attacker(model: Any, data: Tensor, probes: dict[str, Tensor], *, steps: int,
                   batch_size: int, eval_every: int, seed: int = _BATCH_SEED,
                   augment: Any = None, augment_seed: int = 0,
                   progress: Callable[[int, int], None] | None = None
                   ) -> dict[str, list[list[float]]]:
    """Train ``model`` for ``steps`` steps on random batches of ``data`` (drawn from
    ``seed``: the same batches for every model given the same ``seed`` and data size);
    every ``eval_every`` steps (and at 0 and at the end) record the mean
    ``model.example_losses`` on each probe set. ``augment`` (an
    :class:`~harmonycloak.evaluate.attacks.AugmentationPolicy`) transforms every batch
    before the step, its draws from ``augment_seed``. Returns ``{probe: [[step, loss],
    ...]}``."""
    generator = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(augment_seed)
    device = getattr(model, "device", "cpu")
    probes = {name: probe.to(device) for name, probe in probes.items()}
    curves: dict[str, list[list[float]]] = {name: [] for name in probes}

    def record(step: int) -> None:
        for name, probe in probes.items():
            with torch.no_grad():
                curves[name].append([step, _num(float(model.example_losses(probe).mean()))])

    for step in range(steps + 1):
        if probes and (step % eval_every == 0 or step == steps):
            record(step)
        if step < steps:
            index = torch.randint(len(data), (min(batch_size, len(data)),), generator=generator)
            batch = data[index]
            if augment is not None:  # on the CPU: the real codecs run there
                batch = augment.apply(batch, augment.sample(aug_gen))
            model.train_step(batch.to(device))
            if progress:
                progress(step + 1, steps)
    return curves


def _mean_after_zero(curve: Sequence[Sequence[float]], upto: int | None) -> float:
    values = [v for s, v in curve if s > 0 and (upto is None or s <= upto)]
    return float(np.mean(values)) if values else float("nan")


def loss_ratio(protected: Sequence[Sequence[float]], clean: Sequence[Sequence[float]], *,
               upto: int | None = None) -> float | None:
    """Mean loss of the protected run over the mean loss of the clean run, over their
    evaluation steps after 0 (up to ``upto``); None when undefined."""
    a, b = _mean_after_zero(protected, upto), _mean_after_zero(clean, upto)
    return _num(a / b) if b > 0 and math.isfinite(a) else None


def effect(protected: Sequence[Sequence[float]], clean: Sequence[Sequence[float]], *,
           upto: int | None = None) -> float | None:
    """``1 - loss_ratio``: 0 when the cloak changes nothing, toward 1 as the loss on the
    protected music collapses (see the module docstring)."""
    ratio = loss_ratio(protected, clean, upto=upto)
    return None if ratio is None else _num(1.0 - ratio)


# --------------------------------------------------------------------------- metrics


def midi_metrics(phrases: np.ndarray) -> dict[str, float | None]:
    """Table-3 metrics of phrases as one roll: mean EB, UPC, QN over the pitched tracks,
    EB and DP of the drums folded in as :func:`track_metrics` gives them, and the mean
    tonal distance over the pitched track pairs. None where nothing is measured."""
    from harmonycloak.evaluate.metrics.symbolic import tonal_distances, track_metrics

    if len(phrases) == 0:
        return {k: None for k in ("empty_bar_rate", "used_pitch_classes", "qualified_note_rate",
                                  "drum_pattern_rate", "tonal_distance")}
    roll = as_roll(phrases)
    per_track = track_metrics(roll)
    out: dict[str, float | None] = {}
    for key in ("empty_bar_rate", "used_pitch_classes", "qualified_note_rate", "drum_pattern_rate"):
        values = [v[key] for v in per_track.values() if key in v and np.isfinite(v[key])]
        out[key] = _num(float(np.mean(values))) if values else None
    td = [v for v in tonal_distances(roll).values() if np.isfinite(v)]
    out["tonal_distance"] = _num(float(np.mean(td))) if td else None
    return out


class AudioMeasures:
    """FAD to the protected set in an embedding: a contrastive encoder trained here on the
    clean data, or a CLAP checkpoint (``embedder_dir``)."""

    def __init__(self, data: Dataset, profile: EvalProfile, *, seed: int, device: str,
                 embedder_dir: str | None, progress: Progress | None = None) -> None:
        from harmonycloak.evaluate.metrics import audio as audio_metrics

        self.rate = int(data.sample_rate_hz or 44100)
        self.embedder, self.embedder_name = _embedder(audio_metrics, data, profile, seed=seed,
                                                      device=device, embedder_dir=embedder_dir,
                                                      progress=progress)
        self.reference = self.embed(data.clips[data.protected_index])

    def embed(self, clips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(clips.mean(axis=1, keepdims=True), dtype=np.float32))
        return np.asarray(self.embedder.embed(x, self.rate), dtype=np.float64)

    def generated(self, samples: np.ndarray) -> dict[str, float | None]:
        from harmonycloak.evaluate.metrics.audio import fad

        return {"fad": _num(fad(self.embed(samples), self.reference))}


def _embedder(audio_metrics: Any, data: Dataset, profile: EvalProfile, *, seed: int, device: str,
              embedder_dir: str | None, progress: Progress | None) -> tuple[Any, str]:
    """The FAD embedding: a CLAP checkpoint folder, or a contrastive encoder trained on
    the clean data for ``profile.embedder_steps`` steps."""
    if embedder_dir is not None:
        return audio_metrics.ClapEmbedder.load(embedder_dir, device=device), f"clap:{embedder_dir}"
    from harmonycloak.targets.embedding import ContrastiveEncoderConfig, ContrastiveMusicEncoder

    config = ContrastiveEncoderConfig() if profile.model_size == "default" else ContrastiveEncoderConfig.tiny()
    encoder = ContrastiveMusicEncoder(config, seed=seed)
    clips = [torch.from_numpy(c.mean(axis=0)) for c in data.clips]
    say = progress or (lambda *_: None)
    say("training the FAD encoder", 0, profile.embedder_steps)
    encoder.train_contrastive(clips, steps=profile.embedder_steps,
                              generator=torch.Generator().manual_seed(seed),
                              sample_rate_hz=int(data.sample_rate_hz or 44100),
                              batch_size=min(16, len(clips)))
    say("training the FAD encoder", profile.embedder_steps, profile.embedder_steps)
    return audio_metrics.ContrastiveEmbedder(encoder, device=device), "contrastive (trained on the clean data)"


def _audio_quality(clean: np.ndarray, protected: np.ndarray, rate: int, profile: EvalProfile,
                   measures: AudioMeasures | None) -> dict[str, Any]:
    """Table 5 for audio: SNR, NMR p95 (per clip, median and worst), ViSQOL on the first
    ``visqol_clips`` clips, and the embedding shift and FAD of the protected set to the
    clean one."""
    from harmonycloak.evaluate.metrics.perceptual import nmr_p95_db, snr_db, visqol

    snr = [snr_db(c, p) for c, p in zip(clean, protected)]
    nmr = [nmr_p95_db(c, p, rate) for c, p in zip(clean, protected)]
    scores = [visqol(c, p, rate) for c, p in zip(clean[:profile.visqol_clips],
                                                  protected[:profile.visqol_clips])]
    out = {"snr_db": _stats(snr, worst="min"), "nmr_p95_db": _stats(nmr, worst="max"),
           "visqol": _stats([s for s in scores if s is not None], worst="min")}
    if measures is not None:
        from harmonycloak.evaluate.metrics.audio import embedding_shift, fad

        clean_emb, prot_emb = measures.embed(clean), measures.embed(protected)
        shift = embedding_shift(clean_emb, prot_emb)   # the summary, not the per-clip lists
        out["embedding_shift"] = {k: _plain(v) for k, v in shift.items()
                                  if isinstance(v, (int, float, bool, np.floating))}
        out["fad_protected_to_clean"] = _num(fad(prot_emb, clean_emb))
    return out


def _midi_quality(clean: np.ndarray, protected: np.ndarray, summary: dict[str, Any]) -> dict[str, Any]:
    """Table 5 for MIDI: the paper's tonal distance between track pairs, clean and
    protected, and the velocity change."""
    from harmonycloak.evaluate.metrics.symbolic import tonal_distances

    changed = np.abs(protected - clean) * 127.0
    return {"tonal_distance": {"clean": _plain(tonal_distances(as_roll(clean))),
                               "protected": _plain(tonal_distances(as_roll(protected)))},
            "velocity_change_mean": _num(float(changed[changed > 0.5].mean())) if (changed > 0.5).any() else 0.0,
            "velocity_change_max": _num(float(changed.max())),
            "cells_changed_share": _num(float((changed > 0.5).mean())),
            "velocity_raise_mean": summary.get("velocity_raise_mean")}


def _stats(values: Sequence[float | None], *, worst: str) -> dict[str, Any]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"median": None, "worst": None, "clips": 0}
    return {"median": _num(float(np.median(v))),
            "worst": _num(min(v) if worst == "min" else max(v)), "clips": len(v)}


# ------------------------------------------------------------------------------ utils


def _num(value: Any, digits: int = 6) -> float | None:
    """A float JSON can hold (6 significant digits), None for NaN/inf/None."""
    if value is None:
        return None
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy/tensor scalars and arrays to lists and floats, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor):
        return _plain(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _num(value)
    return value


def _snr(clean: np.ndarray, noise: np.ndarray) -> float | None:
    s, e = float(np.sum(clean.astype(np.float64) ** 2)), float(np.sum(noise.astype(np.float64) ** 2))
    return _num(10.0 * math.log10(s / e), 5) if s > 0 and e > 0 else None


# ----------------------------------------------------------------------- orchestration


MIDI_ATTACKS = {
    "binarize": "every sounding cell set to full velocity (MuseGAN trains on binary rolls): "
                "removes any velocity-only change",
}
"""Removal attacks on MIDI phrases (the audio attacks of :mod:`.attacks` act on audio)."""


def _midi_attack(name: str, phrases: np.ndarray) -> np.ndarray:
    if name == "binarize":
        return (phrases > 0).astype(np.float32)
    raise InputError(f"MIDI attack {name!r}: use one of {', '.join(MIDI_ATTACKS)}")


class _Clock:
    """Seconds per stage, for ``results["timing_s"]``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.last
        self.last = now

    def summary(self) -> dict[str, float]:
        """Rounded to milliseconds: a stage with nothing to do reads 0.0."""
        laps = {k: round(v, 3) for k, v in self.stages.items()}
        return {**laps, "total": round(time.perf_counter() - self.start, 3)}


@dataclass
class _Context:
    """What every stage of one evaluation needs."""

    data: Dataset
    profile: EvalProfile
    models: Any
    measures: AudioMeasures | None
    clean: np.ndarray            # P, clean
    protected: np.ndarray        # P, all protected
    rest: np.ndarray             # R
    seed: int
    say: Callable[..., None]
    rate: int | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def generated_metrics(self, samples: np.ndarray) -> dict[str, Any]:
        if self.measures is not None:
            return self.measures.generated(samples)
        return midi_metrics(samples)

    def run(self, run_id: str, view: np.ndarray, *, setting: str = "scratch",
            steps: int | None = None, extra: np.ndarray | None = None, augment: Any = None,
            generate: bool = True) -> dict[str, Any]:
        """Train one attacker on ``view`` (what it gets of P) plus ``extra`` (default R;
        fine-tuning: nothing), record its curves on ``view`` ("seen") and the clean P
        ("clean"), and measure its generated music."""
        p = self.profile
        steps = steps or (p.train_steps if setting == "scratch" else p.finetune_steps)
        model = self.models.scratch() if setting == "scratch" else self.models.finetuned()
        rest = self.rest if (extra is None and setting == "scratch") else extra
        parts = [view] if rest is None or len(rest) == 0 else [view, rest]
        data = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))
        probes = {"seen": torch.from_numpy(np.ascontiguousarray(view)),
                  "clean": torch.from_numpy(np.ascontiguousarray(self.clean))}
        curves = train_attacker(model, data, probes, steps=steps, batch_size=p.batch_size,
                                eval_every=p.eval_every, augment=augment,
                                augment_seed=self.seed,
                                progress=lambda i, n: self.say(f"training attacker {run_id}", i, n))
        out: dict[str, Any] = {"setting": setting, "steps": steps, "curves": curves}
        if generate:
            samples = self.models.generate(model, p.generate, p.clip_s)
            out["generated"] = self.generated_metrics(samples)
            out["_samples"] = samples
        self.runs[run_id] = out
        return out


def _view(clean: np.ndarray, protected: np.ndarray, count: int) -> np.ndarray:
    view = clean.copy()
    view[:count] = protected[:count]
    return view


def _share_table(ctx: _Context) -> list[dict[str, Any]]:
    """Table 7: one scratch attacker per distinct protected count."""
    rows, done = [], {}
    for share in ctx.profile.shares:
        count = share_count(share, len(ctx.clean))
        if count not in done:
            run_id = f"scratch-{count}of{len(ctx.clean)}"
            done[count] = ctx.run(run_id, _view(ctx.clean, ctx.protected, count))
            done[count]["id"] = run_id
        rows.append({"share": share, "protected_clips": count, "run": done[count]["id"]})
    clean = ctx.runs[rows[0]["run"]]["curves"]
    for row in rows:
        curves = ctx.runs[row["run"]]["curves"]
        row["loss_ratio_seen"] = loss_ratio(curves["seen"], clean["seen"])
        row["loss_ratio_clean"] = loss_ratio(curves["clean"], clean["clean"])
        row["effect"] = effect(curves["seen"], clean["seen"])
        row["generated"] = ctx.runs[row["run"]].get("generated")
    return rows


def _pair(ctx: _Context, clean_id: str, protected_id: str, *, upto: int | None = None) -> dict[str, Any]:
    a, b = ctx.runs[clean_id]["curves"], ctx.runs[protected_id]["curves"]
    return {"clean_run": clean_id, "protected_run": protected_id,
            "loss_ratio_seen": loss_ratio(b["seen"], a["seen"], upto=upto),
            "loss_ratio_clean": loss_ratio(b["clean"], a["clean"], upto=upto),
            "effect": effect(b["seen"], a["seen"], upto=upto),
            "final_loss": {"clean": a["seen"][-1][1], "protected": b["seen"][-1][1]},
            "generated": {"clean": ctx.runs[clean_id].get("generated"),
                          "protected": ctx.runs[protected_id].get("generated")}}


def _attacks(ctx: _Context, gap_before: float | None) -> list[dict[str, Any]]:
    """Table 9: each removal attack on P (clean and protected), two attackers each."""
    from harmonycloak.evaluate.attacks import ATTACKS, survival

    p, rows = ctx.profile, []
    names = p.attacks if ctx.data.kind == "audio" else tuple(MIDI_ATTACKS)
    for name in names:
        if ctx.data.kind == "audio":
            attack = ATTACKS[name]
            apply = lambda x, i, a=attack: a.apply(x, int(ctx.rate), seed=ctx.seed + i)  # noqa: E731
            clean = np.stack([apply(x, i) for i, x in enumerate(ctx.clean)])
            prot = np.stack([apply(x, i) for i, x in enumerate(ctx.protected)])
            description = attack.description
        else:
            clean, prot = _midi_attack(name, ctx.clean), _midi_attack(name, ctx.protected)
            description = MIDI_ATTACKS[name]
        ctx.run(f"attack-{name}-clean", clean, steps=p.attack_steps)
        ctx.run(f"attack-{name}-protected", prot, steps=p.attack_steps)
        rows.append(_attack_row(ctx, name, description, gap_before, survival))
    if ctx.data.kind == "audio" and p.adaptive:
        from harmonycloak.evaluate.attacks import AugmentationPolicy

        policy = AugmentationPolicy(sample_rate_hz=int(ctx.rate))
        ctx.run("attack-adaptive-clean", ctx.clean, steps=p.attack_steps, augment=policy)
        ctx.run("attack-adaptive-protected", ctx.protected, steps=p.attack_steps, augment=policy)
        rows.append(_attack_row(ctx, "adaptive", "an attacker that trains on every batch through "
                                "a random codec, resampling or low-pass (AugmentationPolicy)",
                                gap_before, survival))
    return rows


def _attack_row(ctx: _Context, name: str, description: str, gap_before: float | None,
                survival: Callable[[float, float], float]) -> dict[str, Any]:
    pair = _pair(ctx, f"attack-{name}-clean", f"attack-{name}-protected")
    after = pair["effect"]
    kept = None if gap_before is None or after is None else _num(survival(gap_before, after))
    return {"name": name, "description": description, "effect_before": gap_before,
            "effect_after": after, "survival": kept, "loss_ratio_seen": pair["loss_ratio_seen"],
            "loss_ratio_clean": pair["loss_ratio_clean"], "generated": pair["generated"]}


def _who_is_it(ctx: _Context) -> dict[str, Any]:
    """Figure 8: a classifier trained on clean data labels the music of the pre-trained
    model fine-tuned on each artist; the protected artist's row clean and protected."""
    from harmonycloak.evaluate.classifier import ClassifierConfig, confusion_matrix, train_classifier

    data, p = ctx.data, ctx.profile
    # crops of one clip (tiling a short clip to the default 4 s only repeats it)
    config = ClassifierConfig(crop_s=min(ClassifierConfig.crop_s, p.clip_s))
    if p.model_size != "default":
        config = replace(config, widths=(8, 16), batch_size=8)
    holdout = np.zeros(len(data.labels), dtype=bool)
    for label in range(len(data.label_names)):
        idx = np.flatnonzero(data.labels == label)
        holdout[idx[3::4]] = True
    examples = _classifier_view(data.clips)
    rate = {"sample_rate_hz": int(data.sample_rate_hz)} if data.kind == "audio" else {}
    ctx.say("who is it: training the classifier", 0, 1)
    classifier = train_classifier(examples[~holdout], data.labels[~holdout],
                                  steps=p.classifier_steps, seed=ctx.seed, config=config,
                                  device=ctx.models.device, **rate)
    ctx.say("who is it: training the classifier", 1, 1)
    real = confusion_matrix(classifier, examples[holdout], data.labels[holdout], **rate)
    generated, labels = {"clean": [], "protected": []}, {"clean": [], "protected": []}
    for label in range(len(data.label_names)):
        if label == data.protected_label:
            pairs = (("clean", ctx.runs["finetune-clean"]["_samples"]),
                     ("protected", ctx.runs["finetune-protected"]["_samples"]))
        else:
            run = ctx.run(f"finetune-artist{label}", data.clips[data.labels == label],
                          setting="finetune", extra=None)
            pairs = (("clean", run["_samples"]), ("protected", run["_samples"]))
        for condition, samples in pairs:
            generated[condition].append(_classifier_view(samples))
            labels[condition].append(np.full(len(samples), label))
    out: dict[str, Any] = {"labels": list(data.label_names),
                           "protected_label": int(data.protected_label),
                           "real_holdout": _plain(np.asarray(real)), "protected_recognized": {}}
    for condition in ("clean", "protected"):
        matrix = np.asarray(confusion_matrix(classifier, np.concatenate(generated[condition]),
                                             np.concatenate(labels[condition]), **rate),
                            dtype=np.float64)
        out[condition] = _plain(matrix)
        row = matrix[data.protected_label]
        out["protected_recognized"][condition] = (
            _num(row[data.protected_label] / row.sum()) if row.sum() > 0 else None)
    return out


def _classifier_view(clips: np.ndarray) -> np.ndarray:
    """What the classifier sees: audio as mono ``[n, 1, samples]``; phrases unchanged."""
    if clips.ndim == 3:
        return np.ascontiguousarray(clips.mean(axis=1, keepdims=True), dtype=np.float32)
    return clips


def evaluate(profile: EvalProfile, *, data_dir: str | os.PathLike[str] | None = None,
             kind: str | None = None, mode: str = "whitebox", device: str = "cpu", seed: int = 0,
             embedder_dir: str | None = None, workdir: str | os.PathLike[str] | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run the whole evaluation (module docstring) and return the results dict (keys in
    ``docs/evaluate.md``). ``data_dir`` None: ``data/dev-music`` (or ``data/dev-midi``
    for ``kind="midi"``). ``mode``: how the protected set is protected (one of
    :data:`MODES`). ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``. ``embedder_dir``:
    a CLAP checkpoint folder for FAD (audio; None trains a contrastive encoder).
    ``workdir``: where intermediate files go (None: a temporary folder). Raises
    InputError for anything the user can fix (missing data with the script that makes it,
    unknown mode or kind, an attack name the profile gives that does not exist)."""
    from harmonycloak.config import resolve_device

    if mode not in MODES:
        raise InputError(f"--mode {mode}: use one of {', '.join(MODES)}")
    if kind is not None and kind not in KINDS:
        raise InputError(f"--kind {kind}: use audio or midi")
    device = resolve_device(device)
    say = progress or (lambda *_: None)
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA[kind or "audio"]
    if data_dir is None and not root.is_dir():
        hint = AUDIO_HINT + "; or evaluate on MIDI with --kind midi" if kind != "midi" else MIDI_HINT
        raise InputError(f"{root}: the dev {kind or 'audio'} data is missing; {hint}, or give "
                         "--data DIR")
    _check_attacks(profile)
    from harmonycloak.psychoacoustics._threads import single_thread

    # one PyTorch thread on the CPU: small models gain little from a second thread, and on
    # a shared machine its spinning hand-offs made a run several times slower (see
    # harmonycloak.psychoacoustics._threads); the same thread count also keeps the numbers
    # bit-identical from run to run
    threads = single_thread() if device == "cpu" else contextlib.nullcontext()
    with threads:
        return _evaluate(profile, root=root, kind=kind, mode=mode, device=device, seed=seed,
                         embedder_dir=embedder_dir, workdir=workdir, say=say)


def _evaluate(profile: EvalProfile, *, root: Path, kind: str | None, mode: str, device: str,
              seed: int, embedder_dir: str | None, workdir: str | os.PathLike[str] | None,
              say: Callable[..., None]) -> dict[str, Any]:
    from harmonycloak import __version__

    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="harmonycloak-eval-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        data = load_dataset(root, kind=kind, profile=profile, seed=seed, progress=say)
        clock.lap("data")
        target = profile.audio_target if data.kind == "audio" else profile.midi_target
        if data.kind == "audio":
            models: Any = AudioModels(target, data, profile, seed=seed, device=device, progress=say)
        else:
            models = MidiModels(target, data, profile, seed=seed, device=device, workdir=work,
                                progress=say)
        clock.lap("pretrain")
        protected, protection = protect_set(data, models, profile, mode=mode, target=target,
                                            seed=seed, device=device, workdir=work, progress=say)
        clock.lap("protect")
        measures = (AudioMeasures(data, profile, seed=seed, device=device,
                                  embedder_dir=embedder_dir, progress=say)
                    if data.kind == "audio" else None)
        clean = data.clips[data.protected_index]
        ctx = _Context(data=data, profile=profile, models=models, measures=measures, clean=clean,
                       protected=protected, rest=data.clips[data.rest_index], seed=seed, say=say,
                       rate=data.sample_rate_hz)
        quality = (_audio_quality(clean, protected, int(data.sample_rate_hz), profile, measures)
                   if data.kind == "audio" else _midi_quality(clean, protected, protection))
        clock.lap("quality")
        shares = _share_table(ctx)
        full = next(r["run"] for r in shares if r["share"] == 1.0)
        clean_id = next(r["run"] for r in shares if r["share"] == 0.0)
        scratch = _pair(ctx, clean_id, full)
        clock.lap("train_scratch")
        ctx.run("finetune-clean", clean, setting="finetune")
        ctx.run("finetune-protected", protected, setting="finetune")
        finetune = _pair(ctx, "finetune-clean", "finetune-protected")
        clock.lap("finetune")
        gap_before = effect(ctx.runs[full]["curves"]["seen"], ctx.runs[clean_id]["curves"]["seen"],
                            upto=profile.attack_steps)
        attacks = _attacks(ctx, gap_before)
        clock.lap("attacks")
        baselines = _baselines(ctx, quality) if data.kind == "audio" else []
        clock.lap("baselines")
        who = _who_is_it(ctx)
        clock.lap("who_is_it")
    # audio: how far other artists' real music is from P (a scale for the FAD column);
    # MIDI: the protected artist's own phrases (the paper's "training data" row)
    reference = (measures.generated(ctx.rest) if measures is not None else midi_metrics(clean))
    return {
        "format": RESULTS_FORMAT, "format_version": RESULTS_FORMAT_VERSION, "version": __version__,
        "profile": _plain(asdict(profile)), "kind": data.kind, "mode": mode, "target": target,
        "device": device, "seed": seed,
        "data": {"dir": data.root, "labels": list(data.label_names),
                 "protected_label": data.label_names[data.protected_label],
                 "clips": int(len(data.clips)), "protected_clips": int(len(clean)),
                 "rest_clips": int(len(ctx.rest)), "clip_s": profile.clip_s if data.kind == "audio" else None,
                 "sample_rate_hz": data.sample_rate_hz, "sources": sorted(set(data.sources)),
                 "notes": list(data.notes)},
        "pretrained": {"model": models.key,
                       "embedder": measures.embedder_name if measures is not None else None},
        "protection": protection, "quality": quality,
        "effectiveness": {"scratch": scratch, "finetune": finetune},
        "generated": {"reference": reference,
                      "scratch_clean": ctx.runs[clean_id].get("generated"),
                      "scratch_protected": ctx.runs[full].get("generated"),
                      "finetune_clean": ctx.runs["finetune-clean"].get("generated"),
                      "finetune_protected": ctx.runs["finetune-protected"].get("generated")},
        "shares": shares, "attacks": attacks, "baselines": baselines, "who_is_it": who,
        "curves": {k: v["curves"] for k, v in ctx.runs.items()},
        "runs": {k: {"setting": v["setting"], "steps": v["steps"]} for k, v in ctx.runs.items()},
        "timing_s": clock.summary(),
        "notes": list(profile.notes),
    }


def _check_attacks(profile: EvalProfile) -> None:
    from harmonycloak.evaluate.attacks import ATTACKS

    unknown = [a for a in profile.attacks if a not in ATTACKS]
    if unknown:
        raise InputError(f"profile {profile.name!r}: unknown attack(s) {', '.join(unknown)}; "
                         f"use names from {', '.join(ATTACKS)}")


VISQOL_MATCH_TOLERANCE = 0.01
"""How close a baseline's ViSQOL must come to the cloak's (MOS-LQO points)."""

BASELINE_NAMES = ("gaussian", "pgd-l2", "pgd-linf", "harmonydagger")
"""The baselines of table 10 (see :mod:`harmonycloak.evaluate.baselines`)."""


def _baseline_deltas(name: str, ctx: _Context) -> np.ndarray:
    """The raw (unscaled) change baseline ``name`` makes to each clip of P, ``[n, ch, samples]``."""
    from harmonycloak.evaluate import baselines

    rate, clean = int(ctx.rate), ctx.clean
    if name == "gaussian":  # white noise at each clip's own power (as gaussian_at_visqol draws it)
        deltas = []
        for i, x in enumerate(clean):
            power = float(np.mean(x.astype(np.float64) ** 2))
            noise = np.random.default_rng(ctx.seed + i).standard_normal(x.shape) * math.sqrt(power)
            deltas.append(noise.astype(np.float32))
        return np.stack(deltas)
    if name in ("pgd-l2", "pgd-linf"):  # P as one piece, the clips as the batch (as the cloak)
        pgd = baselines.pgd_l2 if name == "pgd-l2" else baselines.pgd_linf
        n = clean.shape[-1]
        long = np.ascontiguousarray(np.concatenate(list(clean), axis=1))
        result = pgd(long, rate, ctx.models.pretrained(seed=ctx.seed), seed=ctx.seed,
                     engine=ctx.profile.engine, device=ctx.models.device,
                     to_model=lambda y: torch.stack(torch.split(y, n, dim=1)))
        delta = np.asarray(result) - long
        return np.stack(np.split(delta, len(clean), axis=1)).astype(np.float32)
    if name == "harmonydagger":
        return np.stack([np.asarray(baselines.harmonydagger(x, rate, seed=ctx.seed + i)) - x
                         for i, x in enumerate(clean)]).astype(np.float32)
    raise InputError(f"baseline {name!r}: use one of {', '.join(BASELINE_NAMES)}")


def _baseline_clips(name: str, ctx: _Context, target_visqol: float | None) -> tuple[np.ndarray, list[str]]:
    """P perturbed by baseline ``name``: its change scaled by one gain so that the first
    ``visqol_clips`` clips (side by side) score the cloak's median ViSQOL
    (:func:`~harmonycloak.evaluate.baselines.scale_to_visqol`); unscaled without ViSQOL."""
    from harmonycloak.evaluate import baselines

    deltas = _baseline_deltas(name, ctx)
    notes: list[str] = []
    gain = 1.0
    k = max(1, ctx.profile.visqol_clips)
    if target_visqol is None:
        notes.append("not matched: ViSQOL unavailable; the baseline's own default strength")
    else:
        ref = np.concatenate(list(ctx.clean[:k]), axis=1)
        # a tight tolerance: near the top of its scale ViSQOL is flat, and the default 0.05
        # lets the bisection stop at a level far quieter than the cloak's
        gain, score, converged = baselines.scale_to_visqol(
            ref, np.concatenate(list(deltas[:k]), axis=1), int(ctx.rate), float(target_visqol),
            tolerance=VISQOL_MATCH_TOLERANCE)
        if not converged:
            notes.append(f"ViSQOL matched to {score:.2f} only (target {target_visqol:.2f})")
    perturbed = np.clip(ctx.clean + np.float32(gain) * deltas, -1.0, 1.0).astype(np.float32)
    return perturbed, notes


def _baselines(ctx: _Context, quality: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 10: the cloak and each baseline at the cloak's ViSQOL, trained on over
    ``attack_steps`` steps from scratch; the effect against the clean run."""
    p = ctx.profile
    target_visqol = quality["visqol"]["median"]
    clean_id = next(k for k in ctx.runs if k == f"scratch-0of{len(ctx.clean)}")
    full_id = f"scratch-{len(ctx.clean)}of{len(ctx.clean)}"
    clean_curve = ctx.runs[clean_id]["curves"]["seen"]
    rows = [{"name": "harmonycloak", "visqol": quality["visqol"]["median"],
             "snr_db": quality["snr_db"]["median"], "nmr_p95_db": quality["nmr_p95_db"]["median"],
             "effect": effect(ctx.runs[full_id]["curves"]["seen"], clean_curve, upto=p.attack_steps),
             "generated": ctx.runs[full_id].get("generated"), "notes": []}]
    for name in p.baselines:
        row: dict[str, Any] = {"name": name, "notes": []}
        try:
            perturbed, row["notes"] = _baseline_clips(name, ctx, target_visqol)
            perturbed = as_16bit(perturbed)
        except HarmonyCloakError as exc:  # e.g. harmonydagger not installed, target out of reach
            row.update({"visqol": None, "snr_db": None, "nmr_p95_db": None, "effect": None,
                        "generated": None, "notes": [f"not run: {exc}"]})
            rows.append(row)
            continue
        q = _audio_quality(ctx.clean, perturbed, int(ctx.rate), p, None)
        run = ctx.run(f"baseline-{name}", perturbed, steps=p.attack_steps)
        row.update({"visqol": q["visqol"]["median"], "snr_db": q["snr_db"]["median"],
                    "nmr_p95_db": q["nmr_p95_db"]["median"],
                    "effect": effect(run["curves"]["seen"], clean_curve, upto=p.attack_steps),
                    "generated": run.get("generated")})
        rows.append(row)
    return rows
