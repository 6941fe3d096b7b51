"""The audio white-box targets by name: load a checkpoint folder, or train once on a corpus and cache.

Names (``protect --target``) and what each loads from ``--model DIR`` (decided by the
folder's ``config.json``):

====================  =========================================================
``codec-lm``          a folder written by :meth:`CodecLMTarget.save`; or a
                      Hugging Face MusicGen / EnCodec checkpoint (``model_type``
                      ``musicgen`` / ``encodec``) through
                      :func:`~harmonycloak.targets.pretrained.load_pretrained`
``latent-diffusion``  a folder written by :meth:`LatentDiffusionTarget.save`
``clap-shift``        a CLAP checkpoint (``model_type`` ``clap`` /
                      ``clap_audio_model``, :meth:`ClapEncoder.load`), a
                      :class:`ContrastiveMusicEncoder` folder, or a folder written
                      by :meth:`EmbeddingShiftTarget.save`
====================  =========================================================

A folder of another kind fails with :class:`ModelLoadError` naming the ``--target`` it
belongs to. Every loaded target is built for the *file's* sample rate and carries the
defender's outer-loop optimizer (SGD, momentum 0.9, lr 0.025: paper section 5.1).

α (the regularizer's weight, eq. 5) per target, :data:`DEFAULT_ALPHA`:

* ``codec-lm`` 0.30: the paper's value for autoregressive models (MusicLM, SymphonyNet);
* ``latent-diffusion`` 0.22: the paper gives no α for diffusion models. We take the value
  it uses for its other non-autoregressive generator (the GAN): both are trained on a
  per-example regression-type loss (MSE of the predicted noise; the GAN's generator loss)
  rather than a per-token NLL, whose scale (nats per token) the 0.30 was tuned for;
* ``clap-shift`` 0.30: seed 003 has no regularizer at all (it only bounds δ). Its loss is a
  cosine similarity in [-1, 1] and the regularizer ``mean_c w^c RMS(δ^c) / RMS(x^c)`` is
  0.1–0.2 at the largest δ the budget allows (SNR 13–19 dB), so α = 0.30 lets the noise
  grow wherever it buys at least ~0.03–0.06 of similarity: the autoregressive value, kept
  because the budget, not α, is what keeps this noise inaudible.

Without ``--model`` the target is trained as an attacker would, once, on the audio files
under ``corpus_dir`` (by default ``data/dev-music``: the 41 Ogg tracks that
``bash scripts/get_dev_music.sh`` installs) and cached under
:func:`~harmonycloak.targets.registry.cache_dir` (``$HARMONYCLOAK_CACHE``), keyed by the
target, its config, the corpus files (names, sizes, modification times), the steps, the
crop length, the training seed, the training recipe's version and the harmonycloak
version; a new entry is written to a
temporary folder and renamed into place (atomic publish).

Training data: one random segment of up to ``4 · crop_s`` seconds per file (unreadable
files are skipped), mixed to mono (the targets' own ``stereo="mid"``) and resampled once
with soxr to the model's rate (16 kHz for the three default configs), then cut into
``crop_s`` crops (10 s: the longest chunk protection feeds the targets) without padding
(a short file is repeated); crops below -60 dBFS RMS are left out (:func:`corpus_crops`).
Then, with ``steps`` steps per stage (:data:`DEFAULT_TRAIN_STEPS`):

* ``codec-lm``: the tokenizer first (:meth:`CodecLMTarget.fit_tokenizer`,
  :data:`STAGE1_STEPS` steps: k-means-initialized codebooks with dead-code restarts use
  208–221 of 256 codes per codebook after 200 steps on the dev music), then the LM on 4
  random crops a step, Adam lr 1e-3, the tokenizer frozen (MusicGen, too, trains its LM
  over a frozen codec). For a real codec, give ``--model`` a MusicGen / EnCodec folder;
* ``latent-diffusion``: the VAE (:meth:`LatentDiffusionTarget.fit_autoencoder`,
  :data:`STAGE1_STEPS` steps: 100 left a log-mel error of 11 dB, worse than each band's
  mean level; 400 give 4.1 dB; 4 patches a step, on up to 32 crops held in memory), then the U-Net on 4 crops a step, AdamW lr
  1e-3;
* ``clap-shift``: the contrastive encoder on the per-file segments
  (:meth:`ContrastiveMusicEncoder.train_contrastive`, 16 files a step, two 4 s views
  each, AdamW lr 1e-3).

The paper's attacker lr (1e-4, section 5.1) is for runs of many thousand steps; these
few-minute CPU runs take 10x larger steps to get anywhere. Measured once each on the
shared 2-core machine (one thread, load average 2.5–3), default configs and steps, dev
corpus (40 of its 41 tracks readable): reading the corpus ~20 s, then codec-lm 155 s in
all (peak memory 0.9 GB), latent-diffusion 311 s (VAE 89 s, U-Net 199 s; 1.6 GB),
clap-shift 242 s (1.0 GB); those runs fitted no tokenizer and 100 VAE steps: the first
stages above add about 1 min (tokenizer) and 4–6 min (VAE).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harmonycloak.errors import InputError, ModelLoadError

__all__ = [
    "ATTACKER_OPTIMIZER",
    "AUDIO_TARGET_NAMES",
    "DEFAULT_ALPHA",
    "DEFAULT_TRAIN_STEPS",
    "SILENT_RMS",
    "TRAIN_CROP_S",
    "audio_corpus_files",
    "cached_audio_target",
    "checkpoint_kind",
    "corpus_crops",
    "corpus_segments",
    "default_config",
    "load_audio_target",
    "train_audio_model",
]

AUDIO_TARGET_NAMES = ("codec-lm", "latent-diffusion", "clap-shift")

DEFAULT_ALPHA = {"codec-lm": 0.30, "latent-diffusion": 0.22, "clap-shift": 0.30}
"""α of eq. 5 per audio target (see the module docstring for the two that the paper does
not give)."""

DEFAULT_TRAIN_STEPS = {"codec-lm": 150, "latent-diffusion": 100, "clap-shift": 300}
STAGE1_STEPS = {"codec-lm": 200, "latent-diffusion": 400}
"""Steps of the first stage (tokenizer, VAE) when the target is trained on the corpus."""
"""Steps per training stage of a cached target (a few minutes each on one CPU thread)."""

ATTACKER_OPTIMIZER = {"codec-lm": ("adam", 1e-3), "latent-diffusion": ("adamw", 1e-3),
                      "clap-shift": ("adamw", 1e-3)}
"""How the cached targets are trained (the model stage; see the module docstring)."""

TRAIN_CROP_S = 10.0
"""Length of the training crops (s): the chunk length protection feeds the targets."""

SILENT_RMS = 1e-3
"""Training crops quieter than this RMS (-60 dBFS) are left out (see :func:`corpus_crops`)."""

_RECIPE_VERSION = 2  # part of the cache key: bump it when the training recipe changes
_CROPS_PER_FILE = 4
_MODEL_BATCH = 4
_VAE_BATCH = 4
_VAE_CLIPS = 32
_CONTRASTIVE_BATCH = 16
_OUTER_LR = 0.025

_CORPUS_HINT = ("give --model DIR (a trained checkpoint) or --corpus DIR (a folder of audio "
                "files), or fetch the dev music with `bash scripts/get_dev_music.sh`")

# config.json "format" of the folders our own targets write → (target name, description)
_FORMATS = {
    "harmonycloak.codec-lm": ("codec-lm", "a codec-token LM (CodecLMTarget.save)"),
    "harmonycloak.latent_diffusion": ("latent-diffusion",
                                      "a latent diffusion model (LatentDiffusionTarget.save)"),
    "harmonycloak.contrastive_encoder": ("clap-shift", "a contrastive music encoder"),
    "harmonycloak.embedding_shift": ("clap-shift", "an embedding-shift target"),
    "harmonycloak.musegan": ("musegan", "a MuseGAN checkpoint (a MIDI target)"),
    "harmonycloak.symbolic_lm": ("symbolic-lm", "a symbolic LM checkpoint (a MIDI target)"),
}
# config.json "model_type" of Hugging Face checkpoints → (target name, description)
_MODEL_TYPES = {
    "musicgen": ("codec-lm", "a MusicGen checkpoint"),
    "encodec": ("codec-lm", "an EnCodec checkpoint"),
    "clap": ("clap-shift", "a CLAP checkpoint"),
    "clap_audio_model": ("clap-shift", "a CLAP audio checkpoint"),
}


def _check_name(name: str) -> None:
    if name not in AUDIO_TARGET_NAMES:
        raise InputError(f"--target {name}: not an audio target; use one of "
                         f"{', '.join(AUDIO_TARGET_NAMES)}")


# ---------------------------------------------------------------------------- loading


def checkpoint_kind(model_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(target name, description)`` of a checkpoint folder, from its ``config.json``.

    Raises ModelLoadError when the folder or its ``config.json`` is missing or unreadable,
    or names no model this package knows.
    """
    path = Path(model_dir)
    known = ("a folder written by CodecLMTarget / LatentDiffusionTarget / "
             "ContrastiveMusicEncoder / EmbeddingShiftTarget .save(), or a Hugging Face "
             "MusicGen, EnCodec or CLAP checkpoint folder")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model folder not found; give {known}")
    config_path = path / "config.json"
    try:
        meta = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: config.json is missing; give {known}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path}: unreadable ({exc}); give {known}") from exc
    if isinstance(meta, dict):
        if meta.get("format") in _FORMATS:
            return _FORMATS[meta["format"]]
        if meta.get("model_type") in _MODEL_TYPES:
            return _MODEL_TYPES[meta["model_type"]]
    found = meta.get("format") or meta.get("model_type") if isinstance(meta, dict) else None
    raise ModelLoadError(f"{config_path}: {found!r} is not a model harmonycloak can protect "
                         f"against; give {known}")


def load_audio_target(name: str, model_dir: str | os.PathLike[str], *, sample_rate_hz: int,
                      seed: int = 0, device: str = "cpu") -> Any:
    """The audio target ``name`` from the checkpoint folder ``model_dir``.

    ``sample_rate_hz``: the rate of the files it will be given (the targets resample inside
    the graph); ``seed`` seeds the target's own generator; ``device``: ``"cpu"``,
    ``"cuda"`` or ``"auto"``. The outer-loop optimizer is SGD (momentum 0.9, lr 0.025).
    Raises :class:`InputError` for an unknown name and :class:`ModelLoadError` when the
    folder is missing, unreadable, or holds a model of another target (the message names
    the ``--target`` it belongs to).
    """
    _check_name(name)
    kind, what = checkpoint_kind(model_dir)
    path = Path(model_dir)
    if kind != name:
        fix = (f"use --target {kind}" if kind in AUDIO_TARGET_NAMES
               else "protect MIDI files with it")
        raise ModelLoadError(f"{path}: holds {what}, not a {name} model; {fix}, or give a "
                             f"{name} checkpoint folder")
    fmt = json.loads((path / "config.json").read_text()).get("format")
    if name == "codec-lm":
        return _load_codec_lm(path, fmt, sample_rate_hz=sample_rate_hz, seed=seed, device=device)
    if name == "latent-diffusion":
        from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget

        return LatentDiffusionTarget.load(path, device=device, optimizer="sgd", lr=_OUTER_LR,
                                          seed=seed, sample_rate_hz=sample_rate_hz)
    return _load_clap_shift(path, fmt, sample_rate_hz=sample_rate_hz, seed=seed, device=device)


def _load_codec_lm(path: Path, fmt: str | None, *, sample_rate_hz: int, seed: int,
                   device: str) -> Any:
    options = {"sample_rate_hz": sample_rate_hz, "seed": seed, "device": device,
               "optimizer": "sgd", "lr": _OUTER_LR}
    if fmt is None:  # a Hugging Face checkpoint
        from harmonycloak.targets.pretrained import load_pretrained

        return load_pretrained(path, **options)
    from harmonycloak.targets.codec_lm import CodecLMTarget

    return CodecLMTarget.load(path, **options)


def _load_clap_shift(path: Path, fmt: str | None, *, sample_rate_hz: int, seed: int,
                     device: str) -> Any:
    from harmonycloak.targets.embedding import ContrastiveMusicEncoder, EmbeddingShiftTarget

    if fmt == "harmonycloak.embedding_shift":
        return EmbeddingShiftTarget.load(path, device=device, seed=seed,
                                         sample_rate_hz=sample_rate_hz)
    if fmt == "harmonycloak.contrastive_encoder":
        encoder = ContrastiveMusicEncoder.load(path, device=device)
    else:
        from harmonycloak.targets.clap import ClapEncoder

        encoder = ClapEncoder.load(path, device=device)
    return EmbeddingShiftTarget(encoder, sample_rate_hz=sample_rate_hz, seed=seed, device=device)


# ----------------------------------------------------------------------------- corpus


def audio_corpus_files(corpus_dir: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``corpus_dir`` (by suffix, hidden files skipped), sorted.

    Raises InputError saying how to get a corpus when there are none.
    """
    from harmonycloak.io.audio import SUPPORTED_AUDIO_SUFFIXES

    root = Path(corpus_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in SUPPORTED_AUDIO_SUFFIXES) if root.is_dir() else []
    if not files:
        raise InputError(f"{root}: no audio files to train the white-box target on; {_CORPUS_HINT}")
    return files


def corpus_segments(files: list[Path], *, rate_hz: int, segment_s: float,
                    generator: torch.Generator,
                    progress: Callable[[int, int], None] | None = None) -> list[Tensor]:
    """One random segment of at most ``segment_s`` seconds per readable file: mono float32
    ``[samples]`` at ``rate_hz`` (channel mean, soxr resampling), CPU.

    Files that fail to load are skipped (a corpus may hold a few damaged files); the start
    of each segment is drawn from ``generator``. Raises InputError when none can be read.
    """
    from harmonycloak.io import codecs
    from harmonycloak.io.audio import load_audio

    segments = []
    for i, path in enumerate(files):
        try:
            clip = load_audio(path, mono=True)
        except InputError:
            continue
        finally:
            if progress:
                progress(i + 1, len(files))
        length = min(clip.num_samples, max(1, round(segment_s * clip.sample_rate_hz)))
        start = int(torch.randint(clip.num_samples - length + 1, (1,), generator=generator))
        piece = clip.samples[:, start:start + length]
        segments.append(torch.from_numpy(codecs.resample(piece, clip.sample_rate_hz, rate_hz)[0]))
    if not segments:
        raise InputError(f"none of the {len(files)} corpus files could be read; {_CORPUS_HINT}")
    return segments


def corpus_crops(segments: list[Tensor], *, crop_samples: int,
                 min_rms: float = SILENT_RMS) -> Tensor:
    """Crops ``[n, 1, crop_samples]`` covering each segment, without padding: consecutive
    crops, the last one ending at the segment's end (so it may overlap the one before); a
    segment shorter than a crop is repeated to fill one. Crops whose RMS is below
    ``min_rms`` (digital silence, fades: -60 dBFS by default) are dropped: silence teaches
    a model nothing, and spectral-convergence losses divide by the reference's energy.

    Raises InputError when every crop is silent.
    """
    crops = []
    for wave in segments:
        if wave.numel() == 0:
            continue
        if wave.numel() < crop_samples:
            wave = wave.repeat(-(-crop_samples // wave.numel()))[:crop_samples]
        starts = list(range(0, wave.numel() - crop_samples + 1, crop_samples))
        if starts[-1] + crop_samples < wave.numel():
            starts.append(wave.numel() - crop_samples)
        crops += [wave[s:s + crop_samples] for s in starts]
    batch = torch.stack(crops).unsqueeze(1) if crops else torch.zeros(0, 1, crop_samples)
    loud = batch.square().mean(dim=(1, 2)).sqrt() >= min_rms
    if not bool(loud.any()):
        raise InputError(f"the corpus is silent (every {crop_samples}-sample crop is below "
                         f"{min_rms:g} RMS); {_CORPUS_HINT}")
    return batch[loud]


# --------------------------------------------------------------------------- training


def default_config(name: str) -> Any:
    """The default (CPU-sized) config of the model behind ``name``."""
    _check_name(name)
    if name == "codec-lm":
        from harmonycloak.targets.codec_lm import CodecLMConfig

        return CodecLMConfig.cpu()
    if name == "latent-diffusion":
        from harmonycloak.targets.latent_diffusion import LatentDiffusionConfig

        return LatentDiffusionConfig.cpu()
    from harmonycloak.targets.embedding import ContrastiveEncoderConfig

    return ContrastiveEncoderConfig()


def _model_rate_hz(name: str, config: Any) -> int:
    if name == "codec-lm":
        return int(config.model_rate_hz)
    if name == "latent-diffusion":
        return int(config.mel.sample_rate_hz)
    return int(config.sample_rate_hz)


def train_audio_model(name: str, segments: list[Tensor], *, config: Any, steps: int, seed: int,
                      crop_s: float = TRAIN_CROP_S, device: str = "cpu",
                      progress: Callable[[str, int, int], None] | None = None) -> Any:
    """Train the model behind ``name`` from scratch on mono ``segments`` at the model's rate
    (see the module docstring); returns the object whose ``save`` writes the checkpoint
    (a :class:`CodecLMTarget`, :class:`LatentDiffusionTarget` or
    :class:`ContrastiveMusicEncoder`). Every random draw comes from generators seeded with
    ``seed``."""
    _check_name(name)
    if not (isinstance(steps, int) and steps >= 1):
        raise InputError(f"training steps={steps!r}: use a whole number >= 1")
    say = progress or (lambda *_: None)
    generator = torch.Generator().manual_seed(seed)
    rate = _model_rate_hz(name, config)
    if name == "clap-shift":
        return _train_contrastive(segments, config=config, steps=steps, seed=seed, rate_hz=rate,
                                  generator=generator, device=device, say=say)
    crops = corpus_crops(segments, crop_samples=max(1, round(crop_s * rate)))
    if name == "codec-lm":
        return _train_codec_lm(crops, config=config, steps=steps, seed=seed, rate_hz=rate,
                               generator=generator, device=device, say=say)
    return _train_latent_diffusion(crops, config=config, steps=steps, seed=seed, rate_hz=rate,
                                   generator=generator, device=device, say=say)


def _train_codec_lm(crops: Tensor, *, config: Any, steps: int, seed: int, rate_hz: int,
                    generator: torch.Generator, device: str, say: Callable) -> Any:
    """The tokenizer (:data:`STAGE1_STEPS`), then the LM on 4 random crops a step over it."""
    from harmonycloak.targets.codec_lm import CodecLMTarget

    optimizer, lr = ATTACKER_OPTIMIZER["codec-lm"]
    target = CodecLMTarget(config, sample_rate_hz=rate_hz, seed=seed, optimizer=optimizer,
                           lr=lr, device=device)
    say("training the tokenizer of", 0, STAGE1_STEPS["codec-lm"])
    target.fit_tokenizer(crops, steps=STAGE1_STEPS["codec-lm"])
    for step in range(steps):
        index = torch.randint(crops.shape[0], (min(_MODEL_BATCH, crops.shape[0]),),
                              generator=generator)
        target.train_step(crops[index])
        say("training the LM of", step + 1, steps)
    return target


def _train_latent_diffusion(crops: Tensor, *, config: Any, steps: int, seed: int, rate_hz: int,
                            generator: torch.Generator, device: str, say: Callable) -> Any:
    from harmonycloak.targets.latent_diffusion import LatentDiffusionTarget

    optimizer, lr = ATTACKER_OPTIMIZER["latent-diffusion"]
    target = LatentDiffusionTarget(config, sample_rate_hz=rate_hz, seed=seed, optimizer=optimizer,
                                   lr=lr, device=device)
    # the VAE computes the log-mels of everything it is given up front: bound the memory
    subset = torch.randperm(crops.shape[0], generator=generator)[:_VAE_CLIPS]
    vae_steps = STAGE1_STEPS["latent-diffusion"]
    say("training the VAE of", 0, vae_steps)
    target.fit_autoencoder(crops[subset], steps=vae_steps, batch_size=_VAE_BATCH)
    say("training the VAE of", vae_steps, vae_steps)
    for step in range(steps):
        index = torch.randint(crops.shape[0], (min(_MODEL_BATCH, crops.shape[0]),),
                              generator=generator)
        target.train_step(crops[index])
        say("training the U-Net of", step + 1, steps)
    return target


def _train_contrastive(segments: list[Tensor], *, config: Any, steps: int, seed: int,
                       rate_hz: int, generator: torch.Generator, device: str,
                       say: Callable) -> Any:
    from harmonycloak.config import resolve_device
    from harmonycloak.targets.embedding import ContrastiveMusicEncoder

    encoder = ContrastiveMusicEncoder(config, seed=seed).to(resolve_device(device))
    say("training the encoder of", 0, steps)
    encoder.train_contrastive(segments, steps=steps, generator=generator,
                              sample_rate_hz=rate_hz, batch_size=_CONTRASTIVE_BATCH,
                              lr=ATTACKER_OPTIMIZER["clap-shift"][1])
    say("training the encoder of", steps, steps)
    return encoder


# ------------------------------------------------------------------------------ cache


def _cache_key(name: str, root: Path, files: list[Path], *, config: Any, steps: int, seed: int,
               crop_s: float) -> str:
    from harmonycloak import __version__

    h = hashlib.sha256(json.dumps([name, asdict(config), steps, seed, crop_s, _RECIPE_VERSION,
                                   __version__], sort_keys=True, default=str).encode())
    for f in files:
        stat = f.stat()
        h.update(f"{f.relative_to(root)}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
    return f"{name}-{h.hexdigest()[:16]}"


def cached_audio_target(name: str, corpus_dir: str | os.PathLike[str] = "data/dev-music", *,
                        sample_rate_hz: int, seed: int = 0, steps: int | None = None,
                        device: str = "cpu",
                        progress: Callable[[str, int, int], None] | None = None,
                        config: Any = None, crop_s: float = TRAIN_CROP_S,
                        target_seed: int | None = None) -> tuple[Any, str]:
    """The target ``name`` trained on the audio under ``corpus_dir``: from the cache, or
    trained now (see the module docstring) and cached.

    ``sample_rate_hz``: the rate of the files to protect (the cached weights serve any
    rate); ``seed``: the training seed (part of the cache key); ``target_seed``: the seed
    of the loaded target's own generator (None: ``seed``), so that protecting with
    another seed reuses the cached model; ``steps``: per stage (None:
    :data:`DEFAULT_TRAIN_STEPS`); ``config``: the model's config (None:
    :func:`default_config`); ``crop_s``: training crop length; ``progress(stage, i, n)``
    is called while reading and training. Returns the loaded target (SGD outer optimizer)
    and the cache entry's name. Raises InputError when the corpus has no readable audio.
    """
    from harmonycloak.targets.registry import _publish, cache_dir

    _check_name(name)
    config = default_config(name) if config is None else config
    steps = DEFAULT_TRAIN_STEPS[name] if steps is None else steps
    root = Path(corpus_dir)
    files = audio_corpus_files(root)
    key = _cache_key(name, root, files, config=config, steps=steps, seed=seed, crop_s=crop_s)
    folder = cache_dir() / key
    if not (folder / "config.json").exists():
        say = progress or (lambda *_: None)
        segments = corpus_segments(files, rate_hz=_model_rate_hz(name, config),
                                   segment_s=_CROPS_PER_FILE * crop_s,
                                   generator=torch.Generator().manual_seed(seed),
                                   progress=lambda i, n: say("reading the corpus for", i, n))
        model = train_audio_model(name, segments, config=config, steps=steps, seed=seed,
                                  crop_s=crop_s, device=device,
                                  progress=lambda stage, i, n: say(stage, i, n))
        folder.parent.mkdir(parents=True, exist_ok=True)
        _publish(model, folder)
    loaded = load_audio_target(name, folder, sample_rate_hz=sample_rate_hz,
                               seed=seed if target_seed is None else target_seed, device=device)
    return loaded, key
