"""Named evaluation profiles: how much data, how many training steps, which attacks.

A profile is a frozen dataclass; ``harmonycloak evaluate --profile NAME`` picks one and
``results.json`` carries it whole (``profile``), so every figure can be traced to its
settings. Profiles are versioned by name like the protection presets: the numbers of a
released profile do not change.

* ``smoke``: the CI check, about a minute on a 2-core CPU with tiny models on a few
  seconds of audio (or a handful of MIDI phrases). Its numbers say nothing about the
  protection; it proves that every stage runs and writes its table.
* ``quick``: at most 10 minutes on the 2-core CPU this project is developed on (measured:
  see ``docs/evaluate.md``), on real dev music: small models (0.1 M parameters), short
  training, four removal attacks and the adaptive attacker, every baseline matched on
  two clips.
* ``full``: the benchmark. Default model sizes, the paper's shares, every attack, longer
  training; 105 min (audio) and 16 min (MIDI) on the project's 2-core CPU, less on a
  GPU (``--device cuda``); the measured reports are in ``docs/results/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harmonycloak.config import EngineConfig
from harmonycloak.errors import InputError

__all__ = ["PROFILES", "EvalProfile", "get_profile"]

PAPER_SHARES = (0.0, 0.05, 0.10, 0.15, 1.0)
"""Shares of the protected artist's set that carry the cloak (paper table 7)."""


@dataclass(frozen=True)
class EvalProfile:
    """Everything that decides the numbers of one evaluation (besides data, mode and seed).

    Data: up to ``artists`` labels (artists, genres or, for a flat folder of tracks, one
    track each), ``clips_per_artist`` excerpts of ``clip_s`` seconds each (audio, resampled
    to ``sample_rate_hz`` and made stereo) or four-bar phrases (MIDI); the first label in
    sorted order (or ``protected_label``) is the protected artist.

    Models: ``audio_target`` / ``midi_target`` (the attacker's architecture, also the
    white-box model the cloak is crafted against), of size ``model_size`` (``"tiny"``,
    ``"small"`` or ``"default"``); the pre-trained model is trained once with
    ``pretrain_steps`` (cached like ``protect``'s targets).

    Training: every attacker takes ``train_steps`` steps of ``batch_size`` from scratch
    (``finetune_steps`` when fine-tuning the pre-trained model), its loss on the
    protected set recorded every ``eval_every`` steps; the removal attacks and the
    baselines are measured over the first ``attack_steps`` steps.

    Protection: ``engine`` (the bi-level loop) and ``audio_mode`` (``"spectrum"`` or
    ``"tone"``). Shares of the protected set to protect: ``shares``.

    Measurements: ``generate`` samples per attacker; ``embedder_steps`` contrastive
    steps for the self-trained FAD encoder; ViSQOL on ``visqol_clips`` clips;
    ``attacks`` (names in :data:`harmonycloak.evaluate.attacks.ATTACKS`), ``adaptive``
    (the attacker that augments every batch); ``baselines`` (names of
    :mod:`harmonycloak.evaluate.baselines`); ``classifier_steps`` for the who-is-it
    classifier.
    """

    name: str
    artists: int
    clips_per_artist: int
    clip_s: float
    model_size: str
    pretrain_steps: int
    train_steps: int
    attack_steps: int
    finetune_steps: int
    eval_every: int
    batch_size: int
    engine: EngineConfig
    generate: int
    embedder_steps: int
    visqol_clips: int
    attacks: tuple[str, ...]
    baselines: tuple[str, ...]
    classifier_steps: int
    shares: tuple[float, ...] = PAPER_SHARES
    adaptive: bool = True
    sample_rate_hz: int = 44_100
    audio_target: str = "codec-lm"
    midi_target: str = "symbolic-lm"
    audio_mode: str = "spectrum"
    protected_label: str | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InputError:
            return InputError(f"profile {self.name!r}: {name}={getattr(self, name)!r}: {why}")

        for name in ("artists", "clips_per_artist", "train_steps", "attack_steps",
                     "finetune_steps", "eval_every", "batch_size", "generate"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise bad(name, "use a whole number >= 1")
        if self.artists < 2:
            raise bad("artists", "the who-is-it test needs at least 2 labels")
        if self.attack_steps > self.train_steps:
            raise bad("attack_steps", f"use at most train_steps={self.train_steps}")
        if self.attack_steps < self.eval_every:
            raise bad("attack_steps", f"use at least eval_every={self.eval_every}")
        if not self.shares or any(not 0.0 <= s <= 1.0 for s in self.shares) or 0.0 not in self.shares \
                or 1.0 not in self.shares:
            raise bad("shares", "give shares in [0, 1] including 0 (the clean run) and 1")
        if self.model_size not in ("tiny", "small", "default"):
            raise bad("model_size", "use 'tiny', 'small' or 'default'")
        if not self.clip_s > 0:
            raise bad("clip_s", "use a positive number of seconds")


PROFILES: dict[str, EvalProfile] = {
    "smoke": EvalProfile(
        name="smoke", artists=3, clips_per_artist=4, clip_s=1.0, model_size="tiny",
        pretrain_steps=4, train_steps=8, attack_steps=4, finetune_steps=4, eval_every=4,
        batch_size=4, engine=EngineConfig(outer_rounds=1, outer_steps=1, inner_steps=2, batch_size=4),
        generate=4, embedder_steps=4, visqol_clips=1, attacks=("mp3_128k",),
        baselines=("gaussian", "pgd-linf"), classifier_steps=20, shares=(0.0, 0.5, 1.0),
        notes=("smoke: tiny models and a few steps; the numbers only show that every stage runs",)),
    "quick": EvalProfile(
        name="quick", artists=3, clips_per_artist=8, clip_s=3.0, model_size="small",
        pretrain_steps=60, train_steps=100, attack_steps=50, finetune_steps=30, eval_every=25,
        batch_size=8, engine=EngineConfig(outer_rounds=2, outer_steps=5, inner_steps=10, batch_size=8),
        generate=8, embedder_steps=40, visqol_clips=2,
        attacks=("mp3_64k", "resample_16k", "spectral_gate", "gaussian_noise_40db"),
        baselines=("gaussian", "pgd-l2", "pgd-linf", "harmonydagger"), classifier_steps=100,
        notes=("quick: small models and short training on a few clips; a first look, not the "
               "benchmark (use --profile full for that)",)),
    "full": EvalProfile(
        name="full", artists=5, clips_per_artist=24, clip_s=4.0, model_size="default",
        pretrain_steps=150, train_steps=300, attack_steps=150, finetune_steps=100, eval_every=25,
        batch_size=8, engine=EngineConfig(outer_rounds=3, outer_steps=5, inner_steps=20, batch_size=8),
        generate=32, embedder_steps=300, visqol_clips=8,
        attacks=("mp3_64k", "mp3_128k", "aac_64k", "opus_32k", "resample_16k", "lowpass_8k",
                 "spectral_subtraction", "nmf_denoise", "spectral_gate", "spectral_gate_stationary",
                 "gaussian_noise_40db"),
        baselines=("gaussian", "pgd-l2", "pgd-linf", "harmonydagger"), classifier_steps=400),
}
"""The named profiles (see the module docstring)."""


def get_profile(name: str) -> EvalProfile:
    """The named profile; InputError listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"--profile {name}: unknown profile; use one of "
                         f"{', '.join(PROFILES)}") from None
