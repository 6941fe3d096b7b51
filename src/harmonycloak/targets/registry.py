"""Find, load, train and cache the white-box targets by name.

``--model DIR`` loads a checkpoint written by the target's ``save``. Without it, the
target is trained from scratch on a MIDI corpus (the dev corpus by default) as an
attacker would (Adam/AdamW), once, and cached under the user's cache folder keyed by the
target, its config, the corpus contents, the steps and the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harmonycloak.errors import InputError, ModelLoadError

__all__ = [
    "DEFAULT_ALPHA",
    "TARGET_NAMES",
    "cache_dir",
    "cached_target",
    "corpus_files",
    "corpus_phrases",
    "load_target",
    "new_target",
    "train_target",
]

TARGET_NAMES = ("musegan", "symbolic-lm")
DEFAULT_ALPHA = {"musegan": 0.22, "symbolic-lm": 0.30}
"""The paper's α (section 5.1): 0.22 for the GAN, 0.30 for autoregressive models."""
ATTACKER_OPTIMIZER = {"musegan": ("adam", 1e-4), "symbolic-lm": ("adamw", 3e-4)}
"""How an attacker trains each model from scratch (paper section 5.1)."""

_CORPUS_HINT = ("give --model DIR (a trained checkpoint) or --corpus DIR (a folder of MIDI "
                "files), or create the dev corpus with `python scripts/make_dev_midi.py`")


def _classes() -> dict[str, Any]:
    from harmonycloak.targets.musegan import MuseGANTarget
    from harmonycloak.targets.symbolic_lm import SymbolicLMTarget

    return {"musegan": MuseGANTarget, "symbolic-lm": SymbolicLMTarget}


def _check_name(name: str) -> None:
    if name not in TARGET_NAMES:
        raise InputError(f"--target {name}: unknown target; use one of {', '.join(TARGET_NAMES)}")


def new_target(name: str, *, seed: int, device: str = "cpu", optimizer: str = "sgd",
               lr: float = 0.025, config: Any = None) -> Any:
    """A freshly initialized target (default config unless ``config`` is given)."""
    _check_name(name)
    cls = _classes()[name]
    kwargs: dict[str, Any] = {"seed": seed, "device": device, "optimizer": optimizer, "lr": lr}
    if config is not None:
        kwargs["config"] = config
    return cls(**kwargs)


def load_target(name: str, model_dir: str | os.PathLike[str], *, device: str = "cpu",
                optimizer: str = "sgd", lr: float = 0.025, seed: int = 0) -> Any:
    """Load a checkpoint directory written by the target's ``save``."""
    _check_name(name)
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model folder not found; give the folder a "
                             f"`{name}` checkpoint was saved to")
    return _classes()[name].load(path, device=device, optimizer=optimizer, lr=lr, seed=seed)


def corpus_files(corpus_dir: str | os.PathLike[str]) -> list[Path]:
    """MIDI files under ``corpus_dir``, sorted; InputError when there are none."""
    from harmonycloak.io.midi import MIDI_SUFFIXES

    root = Path(corpus_dir)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES) if root.is_dir() else []
    if not files:
        raise InputError(f"{root}: no MIDI files to train the white-box target on; {_CORPUS_HINT}")
    return files


def corpus_phrases(files: list[Path], *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Every non-empty four-bar phrase of the corpus (MuseGAN grouping), ``[N, 5, 4, 48, 84]``.

    Files that fail to load are skipped (a corpus is allowed a few bad files).
    """
    from harmonycloak.io.midi import load_midi
    from harmonycloak.perturb.phrases import phrases_from_roll

    chunks = []
    for i, path in enumerate(files):
        try:
            roll = load_midi(path)
        except InputError:
            continue
        phrases = phrases_from_roll(roll.velocities)
        chunks.append(phrases[phrases.reshape(len(phrases), -1).max(axis=1) > 0])
        if progress:
            progress(i + 1, len(files))
    if not chunks:
        raise InputError(f"none of the {len(files)} corpus files could be read; {_CORPUS_HINT}")
    return np.concatenate(chunks).astype(np.float32)


def train_target(name: str, phrases: np.ndarray, *, steps: int, batch_size: int, seed: int,
                 device: str = "cpu", progress: Callable[[int, int, float], None] | None = None) -> Any:
    """Train a target from scratch on ``phrases`` the way an attacker would."""
    optimizer, lr = ATTACKER_OPTIMIZER[name]
    target = new_target(name, seed=seed, device=device, optimizer=optimizer, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(phrases)
    for step in range(steps):
        index = torch.randint(len(data), (min(batch_size, len(data)),), generator=generator)
        loss = target.train_step(data[index].to(device))
        if progress:
            progress(step + 1, steps, loss)
    return target


def cache_dir() -> Path:
    """Where trained targets are cached: ``$HARMONYCLOAK_CACHE`` or the XDG cache folder."""
    base = os.environ.get("HARMONYCLOAK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "harmonycloak")
    return Path(base) / "targets"


def _cache_key(name: str, files: list[Path], steps: int, seed: int) -> str:
    from harmonycloak import __version__

    h = hashlib.sha256(json.dumps([name, steps, seed, __version__]).encode())
    for f in files:
        stat = f.stat()
        h.update(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return f"{name}-{h.hexdigest()[:16]}"


def _publish(target: Any, folder: Path) -> None:
    """Save into a temporary folder and rename it into place (another process may have
    published the same entry meanwhile: keep theirs)."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    target.save(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_target(name: str, corpus_dir: str | os.PathLike[str], *, steps: int, batch_size: int,
                  seed: int, device: str = "cpu",
                  progress: Callable[[str, int, int], None] | None = None) -> tuple[Any, str]:
    """The target trained on ``corpus_dir`` (from the cache, or trained now and cached).

    Returns the target (with the defender's outer-loop optimizer: SGD, momentum 0.9,
    lr 0.025) and the cache entry's name.
    """
    _check_name(name)
    files = corpus_files(corpus_dir)
    key = _cache_key(name, files, steps, seed)
    folder = cache_dir() / key
    if not (folder / "config.json").exists():
        say = progress or (lambda *_: None)
        phrases = corpus_phrases(files, progress=lambda i, n: say("reading corpus", i, n))
        target = train_target(name, phrases, steps=steps, batch_size=batch_size, seed=seed,
                              device=device, progress=lambda i, n, _l: say("training", i, n))
        _publish(target, folder)
    return load_target(name, folder, device=device, seed=seed), key
