"""Where files meet the math: ``analyze()`` (and, with the cloak engine, ``protect()``).

Functions here load through ``harmonycloak.io`` (which validates), run the
psychoacoustic model, and return plain report dataclasses that the CLI prints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonycloak import __version__
from harmonycloak.clip import AudioClip
from harmonycloak.config import WATERMARK_ORDERS, AnalysisConfig, WatermarkSplit, config_dict
from harmonycloak.errors import InputError

__all__ = [
    "AnalysisReport",
    "AudioTargetChoice",
    "BagPanel",
    "BlackBoxChoice",
    "MaskingSummary",
    "MidiAnalysisReport",
    "MidiTrackSummary",
    "SharedDelta",
    "TargetChoice",
    "VERIFY_CODECS",
    "WATERMARK_ORDERS",
    "WatermarkSplit",
    "analyze",
    "analyze_clip",
    "analyze_roll",
    "blackbox_iterations",
    "PROTECT_MODES",
    "chunk_batch",
    "file_kind",
    "iterations_total",
    "note_name",
    "protect",
    "protect_audio",
    "protect_midi",
]

# The band where the masking summary is taken: below 50 Hz little is audible anyway and
# above 16 kHz the threshold in quiet dominates (and lossy codecs cut it).
_SUMMARY_LOW_HZ = 50.0
_SUMMARY_HIGH_HZ = 16_000.0
_QUIET_HEADROOM_DB = 3.0


@dataclass(frozen=True)
class MaskingSummary:
    """How much room the music's masking leaves for hidden sound, per critical band
    (each about 1 Bark wide, so equal weights are equal weights on the Bark scale) between
    50 Hz and 16 kHz.

    * ``median_headroom_db`` / ``p10_headroom_db``: per frame, the mean over bands of
      (masking-threshold power − threshold-in-quiet power) in dB; median and 10th
      percentile over frames and channels. Sound this far above the threshold of hearing
      in quiet stays hidden under the music.
    * ``median_smr_db``: signal-to-mask ratio per band and frame (music power over
      masking-threshold power, dB); median over the bands where the music is audible
      (above the threshold in quiet); None if it never is.
    * ``quiet_share``: share of frames whose headroom is below 3 dB: passages where
      nothing can hide.
    """

    median_headroom_db: float
    p10_headroom_db: float
    median_smr_db: float | None
    quiet_share: float


@dataclass(frozen=True)
class AnalysisReport:
    """What ``harmonycloak analyze`` reports for one file (see docs/analyze.md)."""

    file: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    lufs: float | None
    peak_dbfs: float | None
    true_peak_dbtp: float | None
    dominant_hz_median: float | None
    dominant_note_median: str | None
    dominant_active_share: float
    dominant_hz_per_second: list[float | None]
    masking: MaskingSummary
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    plot: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys (floats rounded for reading)."""
        data = {
            "file": self.file,
            "kind": "audio",
            "duration_s": _round(self.duration_s, 4),
            "sample_rate_hz": self.sample_rate_hz,
            "channels": self.channels,
            "lufs": _round(self.lufs),
            "peak_dbfs": _round(self.peak_dbfs),
            "true_peak_dbtp": _round(self.true_peak_dbtp),
            "dominant_hz_median": _round(self.dominant_hz_median, 1),
            "dominant_note_median": self.dominant_note_median,
            "dominant_active_share": _round(self.dominant_active_share, 4),
            "dominant_hz_per_second": [_round(v, 1) for v in self.dominant_hz_per_second],
            "masking": {k: _round(v) for k, v in self.masking.__dict__.items()},
            "config": self.config,
            "notes": self.notes,
            "plot": self.plot,
            "version": __version__,
        }
        return data


@dataclass(frozen=True)
class MidiTrackSummary:
    """One piano-roll track: its notes and its dominant note (the loudest sounding note
    of each step, the paper's MIDI window strategy; None for drums and empty tracks)."""

    name: str
    program: int
    is_drum: bool
    notes: int
    dominant_note_median: str | None
    active_share: float


@dataclass(frozen=True)
class MidiAnalysisReport:
    """What ``harmonycloak analyze`` reports for a MIDI file (see docs/analyze.md)."""

    file: str
    duration_s: float
    steps_per_beat: int
    tempo_qpm: float
    tempo_changes: int
    time_signatures: list[str]
    tracks: list[MidiTrackSummary]
    dominant_hz_median: float | None
    dominant_note_median: str | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; the audio-only keys are present and null."""
        return {
            "file": self.file,
            "kind": "midi",
            "duration_s": _round(self.duration_s, 4),
            "sample_rate_hz": None,
            "channels": None,
            "lufs": None,
            "peak_dbfs": None,
            "dominant_hz_median": _round(self.dominant_hz_median, 1),
            "dominant_note_median": self.dominant_note_median,
            "steps_per_beat": self.steps_per_beat,
            "tempo_qpm": _round(self.tempo_qpm),
            "tempo_changes": self.tempo_changes,
            "time_signatures": self.time_signatures,
            "tracks": [{**t.__dict__, "active_share": _round(t.active_share, 4)} for t in self.tracks],
            "notes": self.notes,
            "version": __version__,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def note_name(frequency_hz: float) -> str:
    """Nearest equal-tempered note name (A4 = 440 Hz), e.g. ``"A4"``, ``"C#3"``."""
    from harmonycloak.io.midi import pitch_name

    return pitch_name(int(round(69 + 12 * math.log2(frequency_hz / 440.0))))


_SUMMARY_CHUNK_FRAMES = 4096


def _summary_bands(sample_rate_hz: int, n_fft: int) -> Any:
    """``[bins, bands]`` 0/1 matrix of the critical bands overlapping 50 Hz–16 kHz."""
    from harmonycloak.psychoacoustics import critical_band_edges_hz, critical_band_matrix

    edges = critical_band_edges_hz(sample_rate_hz)
    keep = (edges[1:] > _SUMMARY_LOW_HZ) & (edges[:-1] < _SUMMARY_HIGH_HZ)
    return critical_band_matrix(sample_rate_hz, n_fft)[:, keep]


def _masking_summary(masking: Any) -> MaskingSummary:
    """Summarize a :class:`~harmonycloak.psychoacoustics.MaskingResult` band by band,
    in float32 chunks of frames (bounded memory on long files)."""
    import torch

    bands = _summary_bands(masking.sample_rate_hz, masking.n_fft).to(masking.threshold_db.device)
    quiet_power = torch.pow(10.0, masking.ath_db / 10.0) @ bands  # [bands]
    thr = masking.threshold_db.reshape(-1, *masking.threshold_db.shape[-2:])
    psd = masking.psd_db.reshape(thr.shape)
    headroom, smr = [], []
    for c in range(thr.shape[0]):
        for f0 in range(0, thr.shape[1], _SUMMARY_CHUNK_FRAMES):
            mask_power = torch.pow(10.0, thr[c, f0:f0 + _SUMMARY_CHUNK_FRAMES] / 10.0) @ bands
            music_power = torch.pow(10.0, psd[c, f0:f0 + _SUMMARY_CHUNK_FRAMES] / 10.0) @ bands
            headroom.append((10.0 * torch.log10(mask_power / quiet_power)).mean(dim=1))
            audible = music_power > quiet_power
            smr.append(10.0 * torch.log10(music_power[audible] / mask_power[audible]))
    per_frame = torch.cat(headroom).cpu().numpy()
    ratios = torch.cat(smr).cpu().numpy()
    return MaskingSummary(
        median_headroom_db=float(np.median(per_frame)),
        p10_headroom_db=float(np.percentile(per_frame, 10)),
        median_smr_db=float(np.median(ratios)) if ratios.size else None,
        quiet_share=float(np.mean(per_frame < _QUIET_HEADROOM_DB)),
    )


def _per_second(freq_hz: np.ndarray, active: np.ndarray, window_s: float, duration_s: float) -> list[float | None]:
    """Median dominant frequency of each second over all channels' active windows; a
    window belongs to the second that holds its centre."""
    seconds = max(1, math.ceil(duration_s))
    second_of_window = np.floor((np.arange(freq_hz.shape[-1]) + 0.5) * window_s).astype(int)
    out: list[float | None] = []
    for s in range(seconds):
        in_second = second_of_window == s
        f, a = freq_hz[:, in_second], active[:, in_second]
        out.append(float(np.median(f[a])) if a.any() else None)
    return out


def analyze_clip(clip: AudioClip, *, config: AnalysisConfig = AnalysisConfig(),
                 device: str = "cpu") -> tuple[AnalysisReport, Any, Any]:
    """Analyze an in-memory clip. Returns the report plus the masking result and the
    dominant tones (tensors, for plotting)."""
    import torch

    from harmonycloak.psychoacoustics import dominant_tones, masking_threshold
    from harmonycloak.psychoacoustics.loudness import (
        integrated_loudness_lufs,
        sample_peak_dbfs,
        true_peak_dbtp,
    )

    notes: list[str] = []
    x = torch.from_numpy(clip.samples).to(device)
    masking = masking_threshold(x, clip.sample_rate_hz, temporal=config.temporal_masking)
    tones = dominant_tones(x, clip.sample_rate_hz, window_ms=config.window_ms)
    summary = _masking_summary(masking)
    tone_hz = tones.frequency_hz.cpu().numpy()
    active = tones.active.cpu().numpy()
    median_hz = float(np.median(tone_hz[active])) if active.any() else None
    peak = sample_peak_dbfs(clip.samples)
    if peak is None:
        notes.append("the file is digital silence: there is no music to analyze or protect")
    lufs = integrated_loudness_lufs(clip.samples, clip.sample_rate_hz)
    if lufs is None and peak is not None:
        notes.append("loudness needs at least 0.4 s of sound above -70 LUFS")
    report = AnalysisReport(
        file=clip.source or "<memory>",
        duration_s=clip.duration_s,
        sample_rate_hz=clip.sample_rate_hz,
        channels=clip.channels,
        lufs=lufs,
        peak_dbfs=peak,
        true_peak_dbtp=true_peak_dbtp(clip.samples, clip.sample_rate_hz),
        dominant_hz_median=median_hz,
        dominant_note_median=note_name(median_hz) if median_hz else None,
        dominant_active_share=float(active.mean()) if active.size else 0.0,
        dominant_hz_per_second=_per_second(tone_hz.reshape(-1, tone_hz.shape[-1]),
                                           active.reshape(-1, active.shape[-1]), tones.window_s,
                                           clip.duration_s),
        masking=summary,
        config=config_dict(config),
        notes=notes,
    )
    return report, masking, tones


def _roll_duration_s(roll: Any) -> float:
    """Length of the roll in seconds, following its tempo changes."""
    bounds = [t.step for t in roll.tempos] + [roll.steps]
    seconds = 0.0
    for tempo, start, end in zip(roll.tempos, bounds[:-1], bounds[1:]):
        seconds += max(0, min(end, roll.steps) - start) / roll.steps_per_beat * 60.0 / tempo.qpm
    return seconds


def _played_median(pitches: np.ndarray) -> int:
    """The lower median: always a pitch that was actually played."""
    return int(np.quantile(pitches, 0.5, method="lower"))


def _pitch_hz(pitch: int) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _midi_track_summary(roll: Any, index: int) -> tuple[MidiTrackSummary, np.ndarray]:
    """Summary of one track, and its dominant MIDI pitch per active step."""
    velocities = roll.velocities[index]  # [steps, pitches]
    onsets = roll.onsets[index] if roll.onsets is not None else None
    notes = int(onsets.sum()) if onsets is not None else int((np.diff(
        (velocities > 0).astype(np.int8), axis=0, prepend=0) > 0).sum())
    active = velocities.max(axis=1) > 0
    pitches = velocities.argmax(axis=1)[active] + roll.lowest_pitch
    dominant = None
    if pitches.size and not roll.is_drum[index]:
        dominant = note_name(_pitch_hz(_played_median(pitches)))
    summary = MidiTrackSummary(
        name=roll.track_names[index], program=int(roll.programs[index]),
        is_drum=bool(roll.is_drum[index]), notes=notes, dominant_note_median=dominant,
        active_share=float(active.mean()) if active.size else 0.0,
    )
    return summary, (pitches if not roll.is_drum[index] else pitches[:0])


def analyze_roll(roll: Any) -> MidiAnalysisReport:
    """Analyze an in-memory :class:`~harmonycloak.clip.PianoRoll`."""
    summaries, melodic = [], []
    for index in range(roll.tracks):
        summary, pitches = _midi_track_summary(roll, index)
        summaries.append(summary)
        melodic.append(pitches)
    all_pitches = np.concatenate(melodic) if melodic else np.array([])
    median_hz = _pitch_hz(_played_median(all_pitches)) if all_pitches.size else None
    return MidiAnalysisReport(
        file=roll.source or "<memory>",
        duration_s=_roll_duration_s(roll),
        steps_per_beat=roll.steps_per_beat,
        tempo_qpm=float(roll.tempos[0].qpm),
        tempo_changes=len(roll.tempos) - 1,
        time_signatures=[f"{t.numerator}/{t.denominator} at step {t.step}" for t in roll.time_signatures],
        tracks=summaries,
        dominant_hz_median=median_hz,
        dominant_note_median=note_name(median_hz) if median_hz else None,
        notes=list(roll.warnings),
    )


def analyze(path: str | os.PathLike[str], *, config: AnalysisConfig = AnalysisConfig(),
            device: str = "cpu", plot: str | os.PathLike[str] | None = None,
            force: bool = False,
            progress: Callable[[str], None] | None = None) -> AnalysisReport | MidiAnalysisReport:
    """Load ``path`` (any supported audio format, or MIDI), analyze it, optionally draw
    the plot (audio only).

    ``progress`` is called with a short description before each stage. Raises
    :class:`InputError` for unreadable files, a plot path that exists without ``force``,
    a plot asked for a MIDI file, or audio too short for one analysis window.
    """
    from harmonycloak.io.audio import load_audio
    from harmonycloak.io.midi import MIDI_SUFFIXES

    say = progress or (lambda _msg: None)
    if plot is not None:
        from harmonycloak.plots import check_plot_path

        check_plot_path(Path(plot), source=str(path), force=force)
    say("reading")
    if Path(path).suffix.lower() in MIDI_SUFFIXES:
        from harmonycloak.io.midi import load_midi

        if plot is not None:
            raise InputError(f"{path}: --plot draws audio spectra; render the MIDI to audio first")
        return analyze_roll(load_midi(path))
    clip = load_audio(path)
    if clip.duration_s * 1000.0 < config.window_ms:
        samples = f"{clip.num_samples} sample{'s' if clip.num_samples != 1 else ''}"
        raise InputError(
            f"{path}: {samples} ({clip.duration_s * 1000:.2f} ms) is shorter than one "
            f"{config.window_ms:g} ms analysis window; use a longer file or a smaller --window-ms"
        )
    say("analyzing masking")
    report, masking, tones = analyze_clip(clip, config=config, device=device)
    if plot is not None:
        from harmonycloak.plots import save_analysis_plot

        say("drawing")
        written = save_analysis_plot(clip, masking, tones, Path(plot), force=force)
        report = AnalysisReport(**{**report.__dict__, "plot": str(written)})
    return report


# ---------------------------------------------------------------------------- protect

@dataclass(frozen=True)
class TargetChoice:
    """Which white-box model to protect against, and where it comes from.

    ``model_dir``: a checkpoint folder; otherwise the target is trained on ``corpus_dir``
    (``train_steps`` attacker steps) and cached.
    """

    name: str = "musegan"
    model_dir: str | None = None
    corpus_dir: str = "data/dev-midi"
    train_steps: int = 500  # ~2 s a step for the GAN on a 2-core CPU: ~15 min, once
    train_batch_size: int = 16


def _load_white_box_target(choice: TargetChoice, *, seed: int, device: str,
                           say: Callable[[str], None]) -> tuple[Any, str]:
    from harmonycloak.targets import registry

    if choice.model_dir:
        return registry.load_target(choice.name, choice.model_dir, device=device, seed=seed), choice.model_dir
    return registry.cached_target(
        choice.name, choice.corpus_dir, steps=choice.train_steps,
        batch_size=choice.train_batch_size, seed=seed, device=device,
        progress=lambda stage, i, n: say(f"{stage} the {choice.name} target ({i}/{n}); done once, then cached"),
    )


def _midi_edits(roll: Any, slots: Any, slot_delta: np.ndarray) -> tuple[dict[tuple[int, int, int], int], list[Any]]:
    """Velocity changes for existing notes and the added notes, as MIDI integers."""
    from harmonycloak.io.midi_edit import AddedNote

    changes: dict[tuple[int, int, int], int] = {}
    added: list[Any] = []
    delta_midi = np.rint(slot_delta * 127.0).astype(int)
    for k in range(slots.count):
        track, start, pitch = int(slots.track[k]), int(slots.start_step[k]), int(slots.pitch_index[k])
        midi_pitch = pitch + roll.lowest_pitch
        if slots.existing[k]:
            base = int(round(float(roll.velocities[track, start, pitch]) * 127.0))
            if delta_midi[k] > 0:
                changes[(track, start, midi_pitch)] = int(min(127, base + delta_midi[k]))
        elif delta_midi[k] >= 1:
            added.append(AddedNote(track=track, start_step=start, end_step=int(slots.end_step[k]),
                                   pitch=midi_pitch, velocity=int(min(127, delta_midi[k]))))
    return changes, added


def protect_midi(path: str | os.PathLike[str], output: str | os.PathLike[str], *,
                 config: Any, target: TargetChoice = TargetChoice(), seed: int = 0,
                 device: str = "cpu", report_path: str | os.PathLike[str] | None = None,
                 force: bool = False, progress: Callable[[str], None] | None = None,
                 on_iteration: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Protection of one MIDI file against ``target`` (a :class:`TargetChoice`: white-box;
    a :class:`BlackBoxChoice`: the MIDI surrogate bag); writes the protected MIDI and its
    report (both atomically) and returns the report dict."""
    import time

    import torch

    from harmonycloak.config import config_dict
    from harmonycloak.io.files import atomic_write, sha256_file
    from harmonycloak.io.midi import load_midi
    from harmonycloak.io.midi_edit import edit_midi
    from harmonycloak.perturb.optimize import track_weights
    from harmonycloak.perturb.parametrize import MidiVelocityPerturbation
    from harmonycloak.perturb.windows import note_slots
    from harmonycloak.rights import REPORT_FORMAT_VERSION, default_report_path

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    out, report_file = Path(output), Path(report_path) if report_path else default_report_path(output)
    _refuse_existing([out, report_file], force=force)
    say("reading")
    roll = load_midi(path, grouping="musegan")
    slots = note_slots(roll, window_ms=config.midi.window_ms, min_velocity=config.midi.min_velocity,
                       include_drums=config.midi.include_drums)
    if slots.count == 0:
        raise InputError(f"{path}: no note is loud enough to hide a perturbation under "
                         f"(all below velocity {round(config.midi.min_velocity * 127)}); nothing to protect")
    torch.manual_seed(seed)
    x = torch.from_numpy(roll.velocities).to(device)
    perturbation = MidiVelocityPerturbation(slots, tuple(x.shape), device=device,
                                            initial_fraction=config.midi.initial_fraction)
    weights = track_weights(x)
    craft = _craft_midi_blackbox if isinstance(target, BlackBoxChoice) else _craft_midi_whitebox
    crafted = craft(target, x, perturbation,
                    regularizer=lambda p: (weights * perturbation.track_rms(p, x.shape[0])).sum(),
                    config=config, seed=seed, device=device, say=say, on_iteration=on_iteration)
    result = crafted.result
    slot_delta = perturbation.slot_delta(result.params).detach().cpu().numpy().astype(np.float64)
    changes, added = _midi_edits(roll, slots, slot_delta)
    say("writing")
    edit_midi(path, out, velocity_changes=changes, added_notes=added, force=force)
    report = {
        "harmonycloak_report": REPORT_FORMAT_VERSION,
        "version": __version__,
        "input": {"path": str(path), "sha256": sha256_file(path)},
        "output": {"path": str(out), "sha256": sha256_file(out)},
        "mode": crafted.mode, "target": crafted.name, "model": crafted.source,
        "preset": config.preset, "seed": seed, "watermark": None,
        "config": config_dict(config),
        "losses": {"before": crafted.losses_before, "after": crafted.losses_after,
                   "protected_over_clean_after": _ratio(crafted.losses_after)},
        "perturbation": _perturbation_summary(slots, slot_delta, changes, added),
        "bag": crafted.bag,
        "history": result.history,
        "seconds": round(time.perf_counter() - start, 3),
        "notes": list(roll.warnings),
    }
    atomic_write(report_file, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"),
                 force=force)
    return report


def _craft_midi_whitebox(target: TargetChoice, x: Any, perturbation: Any, *,
                         regularizer: Callable[[Any], Any], config: Any, seed: int, device: str,
                         say: Callable[[str], None],
                         on_iteration: Callable[[dict[str, Any]], None] | None) -> _Crafted:
    import torch

    from harmonycloak.perturb.optimize import EngineSettings, min_min
    from harmonycloak.perturb.phrases import phrases_tensor
    from harmonycloak.targets.registry import DEFAULT_ALPHA

    model, source = _load_white_box_target(target, seed=seed, device=device, say=say)
    engine = config.engine
    alpha = engine.alpha if engine.alpha is not None else DEFAULT_ALPHA[target.name]
    settings = EngineSettings.from_config(engine, alpha=alpha, batch_size=engine.batch_size)
    before = _loss_pair(model, x, perturbation, perturbation.init_params())
    say("optimizing")
    result = min_min(x, perturbation, model, to_model=phrases_tensor, regularizer=regularizer,
                     settings=settings, generator=torch.Generator().manual_seed(seed),
                     on_iteration=on_iteration)
    after = _loss_pair(model, x, perturbation, result.params)
    return _Crafted(result, model, "whitebox", target.name, source, alpha, settings.batch_size,
                    None, before, after)


def _craft_midi_blackbox(choice: Any, x: Any, perturbation: Any, *,
                         regularizer: Callable[[Any], Any], config: Any, seed: int, device: str,
                         say: Callable[[str], None],
                         on_iteration: Callable[[dict[str, Any]], None] | None) -> _Crafted:
    import torch

    from harmonycloak.perturb.optimize import MetaSettings, meta_min_min
    from harmonycloak.perturb.phrases import phrases_tensor
    from harmonycloak.targets.bag import MIDI_BAG, bag_alphas, build_bag

    say("building the surrogate bag")
    specs = choice.specs or MIDI_BAG
    bag = build_bag(specs, seed=seed, device=device)
    alphas = bag_alphas(specs, config.blackbox.alpha)
    settings = MetaSettings.from_config(config.blackbox, examples=config.blackbox.batch_size)
    say("optimizing against the surrogate bag")
    result = meta_min_min(x, perturbation, bag, to_model=phrases_tensor, regularizer=regularizer,
                          alphas=alphas, settings=settings,
                          generator=torch.Generator().manual_seed(seed), on_iteration=on_iteration)
    trained = {i for row in result.history for i in row["members"]}
    ids = _panel_ids(specs, trained)
    panel = BagPanel([bag[i] for i in ids], [specs[i].label for i in ids], lambda y: y,
                     phrases_tensor(x))
    before = _loss_pair(panel, x, perturbation, perturbation.init_params())
    after = _loss_pair(panel, x, perturbation, result.params)
    with torch.no_grad():
        protected = phrases_tensor(perturbation.apply(x, result.params))
    bag_report = _bag_report(choice, specs, panel, ids, result, protected)
    return _Crafted(result, panel, "blackbox", choice.name, [s.label for s in specs],
                    sum(alphas) / len(alphas), settings.batch_size, None, before, after, bag_report)


def _refuse_existing(paths: list[Path], *, force: bool) -> None:
    """Fail before any work when an output exists and ``force`` is off."""
    for p in paths:
        if p.exists() and not force:
            raise InputError(f"{p} already exists; use --force to replace it")


def _loss_pair(model: Any, x: Any, perturbation: Any, params: Any) -> dict[str, float]:
    """The target's mean L_gen on the clean and on the perturbed piece."""
    import torch

    from harmonycloak.perturb.phrases import phrases_tensor

    with torch.no_grad():
        clean = float(model.example_losses(phrases_tensor(x)).mean())
        protected = float(model.example_losses(phrases_tensor(perturbation.apply(x, params))).mean())
    return {"clean": float(f"{clean:.6g}"), "protected": float(f"{protected:.6g}")}


def _ratio(pair: dict[str, float]) -> float | None:
    return float(f"{pair['protected'] / pair['clean']:.6g}") if pair["clean"] > 0 else None


def _perturbation_summary(slots: Any, slot_delta: np.ndarray, changes: dict, added: list) -> dict[str, Any]:
    raised = np.rint(slot_delta[slots.existing] * 127.0)
    return {
        "slots": int(slots.count),
        "notes_changed": len(changes),
        "notes_added": len(added),
        "mean_velocity_raise": round(float(raised[raised > 0].mean()), 3) if (raised > 0).any() else 0.0,
        "max_velocity_raise": int(raised.max()) if raised.size else 0,
        "max_added_velocity": max((a.velocity for a in added), default=0),
    }


# ---------------------------------------------------------------------- protect audio

VERIFY_CODECS: tuple[tuple[str, int], ...] = (("mp3", 128), ("mp3", 64), ("aac", 64), ("opus", 64))
"""The lossy round trips every audio report measures the protection after: (codec, kbps)."""


@dataclass(frozen=True)
class AudioTargetChoice:
    """Which white-box audio model to protect against, and where it comes from.

    ``name``: ``codec-lm`` (default: the paper's MusicLM family), ``latent-diffusion`` or
    ``clap-shift``. ``model_dir``: a checkpoint folder
    (:func:`~harmonycloak.targets.audio_registry.load_audio_target`); otherwise the target
    is trained on ``corpus_dir`` once and cached, ``train_steps`` per stage (None: the
    registry's default) with ``train_seed``, which is kept apart from the protection seed
    so that another ``--seed`` reuses the cached model.
    """

    name: str = "codec-lm"
    model_dir: str | None = None
    corpus_dir: str = "data/dev-music"
    train_steps: int | None = None
    train_seed: int = 0


_MARK_CHECKS = ("mp3", 64)
"""Besides the written file, the round trip after which the report checks the mark."""


def protect_audio(path: str | os.PathLike[str], output: str | os.PathLike[str], *,
                  config: Any, target: AudioTargetChoice = AudioTargetChoice(), seed: int = 0,
                  device: str = "cpu", report_path: str | os.PathLike[str] | None = None,
                  force: bool = False, progress: Callable[[str], None] | None = None,
                  on_iteration: Callable[[dict[str, Any]], None] | None = None,
                  channel: Callable[[Any], Any] | None = None,
                  watermark: tuple[Any, str] | None = None,
                  watermark_split: WatermarkSplit = WatermarkSplit()) -> dict[str, Any]:
    """White-box protection of one audio file against ``target``; writes the protected
    audio (format by ``output``'s suffix) and its report, both atomically, and returns
    the report dict.

    The clip (any length, channels and rate) gets a perturbation δ inside its masking
    budget (``config.audio``: mode, margin), cut into equal windows of at most
    ``config.audio.chunk_s`` that form the target's batch ``[chunks, channels, samples]``
    (:func:`chunk_batch`; a clip shorter than one window is one chunk of its own length), and δ is
    optimized by the bi-level loop (α from ``config.engine.alpha`` or the target's default;
    the outer steps train on ``min(config.engine.batch_size, chunks)`` chunks at a time:
    the file's chunks are all the data there is). The written file is then decoded again
    and verified: SNR and NMR of what it really carries, the target's loss protected /
    clean on it and after the round trips of :data:`VERIFY_CODECS`; for ``clap-shift``
    also ``verification.embedding_view``, seed 003's 2-D picture of the written file's
    window embeddings against the clean ones. ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    ``channel``: a hook for the expectation over transformations: a callable applied to
    x + δ (float ``[1, channels, samples]`` at the file's rate, same shape back) inside
    the loop, e.g. ``lambda y: ch.apply(y, ch.sample(generator))``; the measurements
    never go through it.

    ``watermark``: ``(key, payload_hex)`` also hides the keyed provenance mark ``hcwm-1``
    (:mod:`harmonycloak.watermark`; ``key`` a :class:`~harmonycloak.watermark.WatermarkKey`
    or the path of a key file, ``payload_hex`` 12 hex digits), combined with the cloak as
    ``watermark_split`` says (order, mark strength, extra cloak margin; the defaults are
    the measured choice). With ``mark-first`` the in-memory ``losses`` are those of the
    cloak's own input, the marked clip; the ``verification`` always compares the written
    file with the original input (so its NMR is that of mark and cloak together) and the
    report's ``watermark`` entry records the scheme, payload, key fingerprint (never the
    key), the split and whether the payload reads back from the written file and after
    MP3 64 kbps.

    Raises :class:`InputError` for a MIDI or unknown output suffix, an output format that
    cannot hold this audio, existing outputs without ``force``, a bad key file or payload
    (all before any work), unreadable input, silence, audio the watermark cannot hold
    (below 16 kHz, under 0.5 s), and a MIDI target name.
    """
    import time

    import torch

    from harmonycloak.clip import AudioClip
    from harmonycloak.config import resolve_device
    from harmonycloak.io.audio import load_audio, save_audio
    from harmonycloak.io.files import atomic_write, sha256_file
    from harmonycloak.psychoacoustics import masking_threshold
    from harmonycloak.rights import REPORT_FORMAT_VERSION, default_report_path
    from harmonycloak.targets.audio_registry import AUDIO_TARGET_NAMES

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    device = resolve_device(device)
    if not isinstance(target, BlackBoxChoice) and target.name not in AUDIO_TARGET_NAMES:
        raise InputError(f"--target {target.name}: protects MIDI files; for audio use one of "
                         f"{', '.join(AUDIO_TARGET_NAMES)}")
    out, report_file = Path(output), Path(report_path) if report_path else default_report_path(output)
    _check_audio_output(Path(path), out)
    _refuse_existing([out, report_file], force=force)
    mark = _resolve_watermark(watermark)
    say("reading")
    clip = load_audio(path)
    _probe_output_format(clip, out)
    if mark is not None:
        _check_markable(clip, Path(path))
    source = clip
    if mark is not None and watermark_split.order == "mark-first":
        say("watermarking")
        source = _embed_mark(clip, mark, watermark_split)
    say("analyzing masking")
    clean = torch.from_numpy(source.samples)
    masking = masking_threshold(clean, clip.sample_rate_hz)
    audio_config = config.audio if mark is None else _split_margin(config.audio, watermark_split)
    reserve = None
    if mark is not None and watermark_split.mark_room > 0:  # mark-first: the mark is source - clip
        reserve = (source.samples - clip.samples) * math.sqrt(float(watermark_split.mark_room))
    budget, perturbation = _audio_perturbation(clean, clip.sample_rate_hz, masking, audio_config,
                                               seed=seed, device=device, reserve=reserve)
    if not bool(budget.active.any()):
        raise InputError(f"{path}: no sound loud enough to hide a perturbation under (silence, "
                         "or too quiet to mask anything); nothing to protect")
    x = clean.to(device)
    chunk_samples = max(1, round(config.audio.chunk_s * clip.sample_rate_hz))

    def to_clips(y: Any) -> Any:
        return chunk_batch(y, chunk_samples=chunk_samples)

    to_model = to_clips if channel is None else (lambda y: to_clips(channel(y[None])[0]))
    craft = _craft_audio_blackbox if isinstance(target, BlackBoxChoice) else _craft_audio_whitebox
    crafted = craft(target, x, perturbation, to_clips=to_clips, to_model=to_model, config=config,
                    sample_rate_hz=clip.sample_rate_hz, seed=seed, device=device, say=say,
                    on_iteration=on_iteration)
    model, result = crafted.model, crafted.result
    with torch.no_grad():
        protected = perturbation.apply(x, result.params).cpu().numpy().astype(np.float32)
    if mark is not None and watermark_split.order == "cloak-first":
        say("watermarking")
        protected = _embed_mark(AudioClip(protected, clip.sample_rate_hz), mark,
                                watermark_split).samples
    say("writing")
    save_audio(AudioClip(protected, clip.sample_rate_hz, source=str(path)), out, force=force)
    say("verifying the written file")
    if source is not clip:  # the NMR of mark and cloak together, against the original
        masking = masking_threshold(torch.from_numpy(clip.samples), clip.sample_rate_hz)
    verification, notes, marks = _verify_audio(out, clip, model, to_clips, masking, device=device,
                                               mark=mark)
    if crafted.name == "clap-shift":
        notes.append("clap-shift: the losses are cosine similarities to the clean clip's "
                     "embedding (1 = no shift; seed 003 aims below 0.3)")
    report = {
        "harmonycloak_report": REPORT_FORMAT_VERSION,
        "version": __version__,
        "input": {"path": str(path), "sha256": sha256_file(path)},
        "output": {"path": str(out), "sha256": sha256_file(out)},
        "mode": crafted.mode, "target": crafted.name, "model": crafted.source,
        "preset": config.preset, "seed": seed,
        "watermark": None if mark is None else _watermark_report(mark, watermark_split, budget, marks,
                                                                 notes),
        "config": config_dict(config),
        "audio": {"sample_rate_hz": clip.sample_rate_hz, "channels": clip.channels,
                  "duration_s": round(clip.duration_s, 4)},
        "losses": {"before": crafted.losses_before, "after": crafted.losses_after,
                   "protected_over_clean_after": _ratio(crafted.losses_after)},
        "perturbation": {"mode": config.audio.mode, "margin_db": budget.margin_db,
                         "active_share": round(float(budget.active.float().mean()), 6),
                         "chunks": int(to_clips(x).shape[0]),
                         "chunk_samples": int(to_clips(x).shape[-1]),
                         "alpha": crafted.alpha, "outer_batch_size": crafted.batch_size,
                         "model_parameters": crafted.parameters},
        "bag": crafted.bag,
        "verification": verification,
        "history": [{k: _json_number(v) for k, v in row.items()} for row in result.history],
        "seconds": round(time.perf_counter() - start, 3),
        "notes": notes,
    }
    atomic_write(report_file, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"),
                 force=force)
    return report


@dataclass(frozen=True)
class BlackBoxChoice:
    """Protect against models nobody named (paper section 4.2): the file's domain's bag of
    random-init surrogates (:mod:`harmonycloak.targets.bag`), crafted by meta-learning
    (:func:`~harmonycloak.perturb.optimize.meta_min_min`) with ``config.blackbox``.
    ``specs``: another bag (a tuple of :class:`~harmonycloak.targets.bag.SurrogateSpec`;
    tests use tiny ones); None takes :data:`~harmonycloak.targets.bag.AUDIO_BAG` or
    :data:`~harmonycloak.targets.bag.MIDI_BAG`."""

    name: str = "bag-v1"
    specs: tuple[Any, ...] | None = None


@dataclass
class _Crafted:
    """What crafting hands the rest of ``protect``: the optimized parameters and history
    (``result``), the model the report measures with, and the report's fields."""

    result: Any
    model: Any
    mode: str
    name: str
    source: Any
    alpha: float
    batch_size: int
    parameters: Any
    losses_before: dict[str, float]
    losses_after: dict[str, float]
    bag: dict[str, Any] | None = None


def _craft_audio_whitebox(target: AudioTargetChoice, x: Any, perturbation: Any, *,
                          to_clips: Callable[[Any], Any], to_model: Callable[[Any], Any],
                          config: Any, sample_rate_hz: int, seed: int, device: str,
                          say: Callable[[str], None],
                          on_iteration: Callable[[dict[str, Any]], None] | None) -> _Crafted:
    import torch

    from harmonycloak.perturb.optimize import EngineSettings, min_min
    from harmonycloak.targets.audio_registry import DEFAULT_ALPHA

    model, source = _load_audio_target(target, sample_rate_hz=sample_rate_hz, seed=seed,
                                       device=device, say=say)
    chunks = to_clips(x)
    if hasattr(model, "set_reference"):  # clap-shift: the clean embedding to move away from
        model.set_reference(chunks)
    engine = config.engine
    alpha = engine.alpha if engine.alpha is not None else DEFAULT_ALPHA[target.name]
    batch = min(engine.batch_size, chunks.shape[0])
    # PGD sees the chunks in groups of the outer batch: memory stays that of one batch
    settings = EngineSettings.from_config(engine, alpha=alpha, batch_size=batch, loss_group=batch)
    before = _audio_loss_pair(model, to_clips, x, perturbation, perturbation.init_params())
    say("optimizing")
    shared = SharedDelta(perturbation)
    result = min_min(x, shared, model, to_model=to_model, regularizer=shared.regularizer,
                     settings=settings, generator=torch.Generator().manual_seed(seed),
                     on_iteration=on_iteration)
    after = _audio_loss_pair(model, to_clips, x, perturbation, result.params)
    return _Crafted(result, model, "whitebox", target.name, source, alpha, settings.batch_size,
                    model.num_parameters(), before, after)


class BagPanel:
    """The black-box report's measuring model: the mean over ``members`` (bag surrogates
    after crafting) of each one's loss in units of its loss on the clean clip, so a clean
    file reads 1 and the protected/clean ratio is the members' mean ratio.

    ``example_losses(x)`` takes the file's chunks ``[chunks, channels, samples]`` at the
    file's rate; ``to_model`` maps them to the members' input (resampling for audio).
    """

    def __init__(self, members: list[Any], labels: list[str], to_model: Callable[[Any], Any],
                 clean: Any) -> None:
        from harmonycloak.perturb.optimize import loss_scales

        self.members, self.labels, self.to_model = members, labels, to_model
        self.scales = loss_scales(to_model(clean), members, floor=1e-9)

    def member_losses(self, x: Any) -> list[float]:
        """Each member's mean loss on ``x`` in units of its clean loss."""
        import torch

        with torch.no_grad():
            data = self.to_model(x)
            return [float(m.example_losses(data).mean()) / s for m, s in zip(self.members, self.scales)]

    def example_losses(self, x: Any) -> Any:
        import torch

        with torch.no_grad():
            data = self.to_model(x)
            per = [m.example_losses(data) / s for m, s in zip(self.members, self.scales)]
            return torch.stack(per).mean(dim=0)


def _panel_ids(specs: tuple[Any, ...], trained: set[int]) -> list[int]:
    """One trained member per family (the first in the bag): who measures the report."""
    chosen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if i in trained and spec.family not in chosen:
            chosen[spec.family] = i
    return sorted(chosen.values())


def _bag_report(choice: BlackBoxChoice, specs: tuple[Any, ...], panel: BagPanel, ids: list[int],
                result: Any, protected: Any) -> dict[str, Any]:
    from harmonycloak.targets.bag import describe_bag

    ratios = panel.member_losses(protected)
    return {"name": choice.name, "members": describe_bag(specs),
            "sample_size": None if not result.history else len(result.history[0]["members"]),
            "panel": [{"member": i, "label": specs[i].label,
                       "protected_over_clean": round(r, 6)} for i, r in zip(ids, ratios)]}


def blackbox_iterations(config: Any) -> int:
    """How many PGD iterations (both phases) a black-box run of ``config`` reports."""
    bb = config.blackbox
    return int(bb.rounds * (bb.meta_train_steps + bb.meta_test_steps))


def _craft_audio_blackbox(choice: BlackBoxChoice, x: Any, perturbation: Any, *,
                          to_clips: Callable[[Any], Any], to_model: Callable[[Any], Any],
                          config: Any, sample_rate_hz: int, seed: int, device: str,
                          say: Callable[[str], None],
                          on_iteration: Callable[[dict[str, Any]], None] | None) -> _Crafted:
    import torch

    from harmonycloak.perturb.dsp import resample
    from harmonycloak.perturb.optimize import MetaSettings, meta_min_min
    from harmonycloak.targets.bag import AUDIO_BAG, AUDIO_MODEL_RATE_HZ, bag_alphas, build_bag

    def at_model_rate(chunks: Any) -> Any:
        return resample(chunks, sample_rate_hz, AUDIO_MODEL_RATE_HZ)

    say("building the surrogate bag")
    specs = choice.specs or AUDIO_BAG
    bag = build_bag(specs, seed=seed, device=device)
    alphas = bag_alphas(specs, config.blackbox.alpha)
    settings = MetaSettings.from_config(config.blackbox, examples=to_clips(x).shape[0])
    say("optimizing against the surrogate bag")
    shared = SharedDelta(perturbation)
    result = meta_min_min(x, shared, bag, to_model=lambda y: at_model_rate(to_model(y)),
                          regularizer=shared.regularizer, alphas=alphas, settings=settings,
                          generator=torch.Generator().manual_seed(seed), on_iteration=on_iteration)
    trained = {i for row in result.history for i in row["members"]}
    ids = _panel_ids(specs, trained)
    panel = BagPanel([bag[i] for i in ids], [specs[i].label for i in ids],
                     lambda y: at_model_rate(y), to_clips(x))
    before = _audio_loss_pair(panel, to_clips, x, perturbation, perturbation.init_params())
    after = _audio_loss_pair(panel, to_clips, x, perturbation, result.params)
    with torch.no_grad():
        protected = to_clips(perturbation.apply(x, result.params))
    bag_report = _bag_report(choice, specs, panel, ids, result, protected)
    alpha = sum(alphas) / len(alphas)
    parameters = {s.label: bag[i].num_parameters() for i, s in enumerate(specs)}
    return _Crafted(result, panel, "blackbox", choice.name, [s.label for s in specs], alpha,
                    settings.batch_size, parameters, before, after, bag_report)


def chunk_batch(y: Any, *, chunk_samples: int) -> Any:
    """Cut ``y [channels, samples]`` into a batch ``[chunks, channels, length]`` (torch).

    ``count = ceil(samples / chunk_samples)`` windows of equal ``length = ceil(samples /
    count)`` (at most ``chunk_samples``); the last one is zero-padded by fewer than
    ``count`` samples. A clip shorter than one window is one chunk of its own length.
    Equal windows rather than full ones and a mostly silent last one: a 25 s clip in
    10 s windows is 3 × 8.3 s, not 30 s of which 5 s are padding that the model would
    spend a sixth of its time on and that would pull every measured loss towards the
    loss of silence. Differentiable (a pad and a reshape).
    """
    import torch.nn.functional as F

    channels, samples = y.shape[-2:]
    count = -(-int(samples) // max(1, int(chunk_samples)))
    length = -(-int(samples) // count)
    padded = F.pad(y, (0, count * length - samples))
    return padded.reshape(channels, count, length).transpose(0, 1).contiguous()


class SharedDelta:
    """A perturbation whose δ is rendered once per parameter tensor (and grad mode), so the
    engine's ``apply`` and the regularizer share it (each would render δ otherwise).

    Wraps :class:`~harmonycloak.perturb.audio_delta.DominantTonePerturbation` or
    :class:`~harmonycloak.perturb.audio_delta.MaskedSpectrumPerturbation`; satisfies the
    engine's ``Perturbation`` protocol. ``regularizer(params)`` is the wrapped one's.
    """

    def __init__(self, perturbation: Any) -> None:
        self.perturbation = perturbation
        self._last: tuple[Any, bool, Any] | None = None

    def init_params(self) -> Any:
        return self.perturbation.init_params()

    def step_scale(self, params: Any) -> Any:
        return self.perturbation.step_scale(params)

    def delta(self, params: Any) -> Any:
        import torch

        grad = torch.is_grad_enabled()
        if self._last is None or self._last[0] is not params or self._last[1] != grad:
            self._last = (params, grad, self.perturbation.delta(params))
        return self._last[2]

    def apply(self, x: Any, params: Any) -> Any:
        """``clamp(x + δ, -1, 1)`` as the wrapped perturbation's ``apply`` (same checks)."""
        if tuple(x.shape[-2:]) != tuple(self.perturbation.shape):
            return self.perturbation.apply(x, params)  # raises its InputError
        return (x + self.delta(params).to(x.dtype)).clamp(-1.0, 1.0)

    def regularizer(self, params: Any) -> Any:
        return self.perturbation.delta_regularizer(self.delta(params))


def _check_audio_output(source: Path, out: Path) -> None:
    from harmonycloak.io.audio import WRITABLE_AUDIO_SUFFIXES
    from harmonycloak.io.midi import MIDI_SUFFIXES

    suffix = out.suffix.lower()
    allowed = ", ".join(WRITABLE_AUDIO_SUFFIXES)
    if suffix in MIDI_SUFFIXES:
        raise InputError(f"{out}: {source.name} is audio, and protected audio cannot be written "
                         f"as MIDI; name the output with an audio suffix ({allowed})")
    if suffix not in WRITABLE_AUDIO_SUFFIXES:
        what = f"the suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise InputError(f"{out}: {what} names no audio format harmonycloak writes; use one of "
                         f"{allowed}")
    if out.resolve() == source.resolve():
        raise InputError(f"{out}: would overwrite the input; choose another output name")


def _probe_output_format(clip: Any, out: Path) -> None:
    """Fail before the optimization when ``out``'s format cannot hold this audio (channels,
    sample rate): encode its first 0.1 s to a temporary file with the same suffix."""
    import tempfile

    from harmonycloak.clip import AudioClip
    from harmonycloak.io.audio import save_audio

    length = max(1, min(clip.num_samples, clip.sample_rate_hz // 10))
    probe_clip = AudioClip(np.ascontiguousarray(clip.samples[:, :length]), clip.sample_rate_hz)
    with tempfile.TemporaryDirectory(prefix="harmonycloak-probe-") as folder:
        probe = Path(folder) / f"probe{out.suffix.lower()}"
        try:
            save_audio(probe_clip, probe)
        except InputError as err:
            raise InputError(str(err).replace(str(probe), str(out))) from None


def _audio_perturbation(clean: Any, sample_rate_hz: int, masking: Any, audio: Any, *, seed: int,
                        device: str, reserve: np.ndarray | None = None) -> tuple[Any, Any]:
    """The budget of the clean clip and the perturbation of ``audio.mode`` inside it
    (``reserve``: see :func:`_make_room`)."""
    from harmonycloak.perturb import budget as budgets
    from harmonycloak.perturb.audio_delta import DominantTonePerturbation, MaskedSpectrumPerturbation

    if audio.mode == "tone":
        margin = budgets.DEFAULT_TONE_MARGIN_DB if audio.margin_db is None else audio.margin_db
        budget = budgets.dominant_tone_budget(clean, sample_rate_hz, margin_db=margin, masking=masking)
        budget = budget if reserve is None else _make_room(budget, reserve, masking)
        return budget, DominantTonePerturbation(budget, initial_fraction=audio.initial_fraction,
                                                device=device)
    margin = budgets.DEFAULT_SPECTRUM_MARGIN_DB if audio.margin_db is None else audio.margin_db
    budget = budgets.masked_spectrum_budget(clean, sample_rate_hz, margin_db=margin, masking=masking)
    budget = budget if reserve is None else _make_room(budget, reserve, masking)
    return budget, MaskedSpectrumPerturbation(budget, seed=seed, device=device,
                                              initial_fraction=audio.initial_fraction)


def _make_room(budget: Any, reserve: np.ndarray, masking: Any) -> Any:
    """``budget`` with the power of ``reserve`` (float ``[channels, samples]``, e.g. a
    share of the watermark) taken off its upper bounds where that signal sits:
    ``upper' = sqrt(max(0, upper^2 - A_r^2))``, ``lower' = min(lower, upper')``, where
    ``A_r`` is ``reserve``'s level read like the bounds are (the peak amplitude of a sine
    reading its calibrated level, :func:`~harmonycloak.psychoacoustics.psd_db` on the
    masking analysis' grid): per (frame, bin) for the masked-spectrum budget, at each
    window's dominant frequency in the frame nearest its centre for the dominant-tone
    budget. Powers of independent signals add, so cloak and reserve together stay within
    the cloak's own bound wherever the cloak may still go."""
    import dataclasses

    import torch

    from harmonycloak.psychoacoustics import psd_db, spl_to_amplitude
    with torch.no_grad():
        level = psd_db(torch.from_numpy(np.ascontiguousarray(reserve, dtype=np.float32)),
                       budget.sample_rate_hz, n_fft=masking.n_fft, hop_length=masking.hop_length)
        amplitude = spl_to_amplitude(level).to(torch.float32)  # [channels, frames, bins]
        if hasattr(budget, "frequency_hz"):  # dominant tones: one value per window
            centre = (torch.arange(budget.num_windows) * budget.window_samples
                      + budget.window_samples // 2)
            frame = torch.round(centre / masking.hop_length).long().clamp(max=amplitude.shape[1] - 1)
            bins = torch.round(budget.frequency_hz * masking.n_fft / budget.sample_rate_hz).long()
            bins = bins.clamp(max=amplitude.shape[2] - 1)
            channel = torch.arange(budget.num_channels)[:, None]
            amplitude = amplitude[channel, frame[None, :], bins]
        upper = torch.sqrt(torch.clamp(budget.upper ** 2 - amplitude ** 2, min=0.0))
        upper = torch.where(budget.active, upper, torch.zeros_like(upper))
        return dataclasses.replace(budget, upper=upper, lower=torch.minimum(budget.lower, upper))


def _load_audio_target(choice: AudioTargetChoice, *, sample_rate_hz: int, seed: int, device: str,
                       say: Callable[[str], None]) -> tuple[Any, str]:
    from harmonycloak.targets import audio_registry

    if choice.model_dir:
        return audio_registry.load_audio_target(choice.name, choice.model_dir,
                                                sample_rate_hz=sample_rate_hz, seed=seed,
                                                device=device), choice.model_dir
    return audio_registry.cached_audio_target(
        choice.name, choice.corpus_dir, sample_rate_hz=sample_rate_hz, seed=choice.train_seed,
        target_seed=seed, steps=choice.train_steps, device=device,
        progress=lambda stage, i, n: say(f"{stage} the {choice.name} target ({i}/{n}); "
                                         "done once, then cached"))


#: Chunks per forward pass when measuring a file's loss (verification, report).
_EVAL_CHUNKS = 4


def _mean_loss(model: Any, to_clips: Callable[[Any], Any], y: Any) -> float:
    import torch

    with torch.no_grad():  # a few chunks at a time: a long file's activations never all at once
        return float(torch.cat([model.example_losses(part) for part in to_clips(y).split(_EVAL_CHUNKS)]).mean())


def _audio_loss_pair(model: Any, to_clips: Callable[[Any], Any], x: Any, perturbation: Any,
                     params: Any) -> dict[str, float]:
    """The target's mean L_gen on the clean and the perturbed clip (in memory)."""
    import torch

    with torch.no_grad():
        protected = perturbation.apply(x, params.detach())
    return {"clean": round(_mean_loss(model, to_clips, x), 6),
            "protected": round(_mean_loss(model, to_clips, protected), 6)}


def _loss_triplet(model: Any, to_clips: Callable[[Any], Any], clean: np.ndarray,
                  protected: np.ndarray, device: str) -> dict[str, float | None]:
    import torch

    pair = {"clean": round(_mean_loss(model, to_clips, torch.from_numpy(clean).to(device)), 6),
            "protected": round(_mean_loss(model, to_clips, torch.from_numpy(protected).to(device)), 6)}
    return {**pair, "protected_over_clean": _ratio(pair)}


def _snr_db(clean: np.ndarray, noise: np.ndarray) -> float | None:
    """10 log10(signal energy / noise energy) over all channels; None for no noise or silence."""
    signal = float(np.sum(clean.astype(np.float64) ** 2))
    error = float(np.sum(noise.astype(np.float64) ** 2))
    return round(10.0 * math.log10(signal / error), 3) if signal > 0 and error > 0 else None


def _aligned(decoded: Any, clip: Any, notes: list[str]) -> np.ndarray:
    """The decoded output as ``clip``'s shape and rate (noting any difference)."""
    from harmonycloak.io import codecs

    y = decoded.samples
    if decoded.sample_rate_hz != clip.sample_rate_hz:
        notes.append(f"the written file decodes at {decoded.sample_rate_hz} Hz; resampled to "
                     f"{clip.sample_rate_hz} Hz to compare")
        y = codecs.resample(y, decoded.sample_rate_hz, clip.sample_rate_hz)
    if y.shape[1] != clip.num_samples:
        notes.append(f"the written file decodes to {y.shape[1]} samples for {clip.num_samples}; "
                     "compared over the input's length (cut or zero-padded)")
        y = y[:, :clip.num_samples]
        y = np.pad(y, ((0, 0), (0, clip.num_samples - y.shape[1])))
    return np.ascontiguousarray(y, dtype=np.float32)


def _verify_round_trips(written: np.ndarray, clip: Any) -> Iterator[Any]:
    """For each of :data:`VERIFY_CODECS` in turn, the round trips ``(written, clean)`` of
    the written file and of the original, or the CodecError / InputError that refused one.

    The two encodes of a codec run side by side on up to two threads (at most torch's
    thread count, which a batch job sets to its share of the machine; FFmpeg's encoders
    release the GIL while they work, and each call has its own codec context), one codec
    at a time, so the memory held does not grow with the number of codecs. On a 25 s clip
    on two cores the eight round trips took 3.2–3.6 s instead of 6.0–6.8 s one by one;
    the results are the same bytes either way.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from harmonycloak.errors import CodecError
    from harmonycloak.io import codecs

    def trip(x: np.ndarray, codec: str, kbps: int) -> Any:
        try:
            return codecs.roundtrip(x, clip.sample_rate_hz, codec=codec, bitrate_kbps=kbps)
        except (CodecError, InputError) as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, min(2, torch.get_num_threads()))) as pool:
        for codec, kbps in VERIFY_CODECS:
            coded = pool.submit(trip, written, codec, kbps)
            reference = pool.submit(trip, clip.samples, codec, kbps)
            pair = (coded.result(), reference.result())
            coded = reference = None            # the futures would keep the arrays alive
            yield next((r for r in pair if isinstance(r, Exception)), pair)
            pair = None


def _verify_audio(out: Path, clip: Any, model: Any, to_clips: Callable[[Any], Any], masking: Any, *,
                  device: str, mark: tuple[Any, str] | None = None
                  ) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """Decode the written file and measure what it really carries (see :func:`protect_audio`).

    Returns the verification, notes, and with ``mark`` (key, payload) the watermark checks
    of the written file and after :data:`_MARK_CHECKS` (None otherwise)."""
    import torch

    from harmonycloak.errors import CodecError
    from harmonycloak.io.audio import load_audio
    from harmonycloak.psychoacoustics import nmr_summary, noise_to_mask_ratio

    notes: list[str] = []
    written = _aligned(load_audio(out), clip, notes)
    noise = written - clip.samples
    nmr = nmr_summary(noise_to_mask_ratio(torch.from_numpy(noise), masking))
    after: dict[str, Any] = {}
    mark_key = "{}_{}k".format(*_MARK_CHECKS)
    marks = None if mark is None else {"written": _mark_check(written, clip.sample_rate_hz, mark),
                                       mark_key: None}
    for (codec, kbps), pair in zip(VERIFY_CODECS, _verify_round_trips(written, clip), strict=True):
        key = f"{codec}_{kbps}k"
        if isinstance(pair, (CodecError, InputError)):
            after[key] = None
            notes.append(f"{key}: round trip skipped ({pair})")
            continue
        coded, reference = pair
        after[key] = _loss_triplet(model, to_clips, reference, coded, device)
        if marks is not None and key == mark_key:
            marks[key] = _mark_check(coded, clip.sample_rate_hz, mark)
        del pair, coded, reference          # before the next codec's round trips
    verification = {
        "snr_db": _snr_db(clip.samples, noise),
        "nmr": {k: round(v, 3) for k, v in nmr.items()},
        "losses": _loss_triplet(model, to_clips, clip.samples, written, device),
        "after_codecs": after,
    }
    if hasattr(model, "embed") and hasattr(model, "set_reference"):  # clap-shift
        verification["embedding_view"] = _embedding_view(model, to_clips, clip.samples, written, device)
    return verification, notes, marks


def _embedding_view(model: Any, to_clips: Callable[[Any], Any], clean: np.ndarray,
                    written: np.ndarray, device: str) -> dict[str, Any]:
    """Seed 003's 2-D view of the written file's window embeddings against the clean
    ones (:func:`~harmonycloak.targets.embedding.embedding_view`)."""
    import torch

    from harmonycloak.targets.embedding import embedding_view

    with torch.no_grad():
        e, e_written = (model.embed(to_clips(torch.from_numpy(y).to(device))) for y in (clean, written))
    return embedding_view(e.reshape(-1, e.shape[-1]), e_written.reshape(-1, e.shape[-1]))


def _resolve_watermark(watermark: tuple[Any, str] | None) -> tuple[Any, str] | None:
    """``(WatermarkKey, payload)`` from ``(key or key file path, payload hex)``, validated
    by the watermark module (its own errors for a bad key file or payload); None for None."""
    if watermark is None:
        return None
    from harmonycloak.watermark import WatermarkKey, load_key, parse_payload

    if not (isinstance(watermark, tuple) and len(watermark) == 2):
        raise InputError(f"watermark={watermark!r}: give a (key, payload_hex) pair, e.g. "
                         "(load_key('artist.key'), '00000001abcd')")
    key, payload = watermark
    payload = parse_payload(payload)
    return (key if isinstance(key, WatermarkKey) else load_key(key)), payload


def _check_markable(clip: Any, path: Path) -> None:
    """Refuse, before the optimization, audio that the watermark cannot hold."""
    from harmonycloak.watermark.embed import MIN_EMBED_RATE_HZ, MIN_EMBED_S

    if clip.sample_rate_hz < MIN_EMBED_RATE_HZ:
        raise InputError(f"{path}: {clip.sample_rate_hz} Hz is below the {MIN_EMBED_RATE_HZ} Hz "
                         "the watermark needs (it lives between 0.5 and 6 kHz); protect the "
                         "original, higher-rate file, or leave out --watermark-key/--watermark-payload")
    if clip.duration_s < MIN_EMBED_S:
        raise InputError(f"{path}: {clip.duration_s:.2f} s is too short to watermark; give at least "
                         f"{MIN_EMBED_S} s (detection needs about 3 s), or leave out "
                         "--watermark-key/--watermark-payload")


def _embed_mark(clip: Any, mark: tuple[Any, str], split: WatermarkSplit) -> Any:
    from harmonycloak.watermark import embed

    key, payload = mark
    return embed(clip, key, payload, strength=float(split.strength))


def _split_margin(audio: Any, split: WatermarkSplit) -> Any:
    """``audio`` with the cloak's margin raised by the split's ``extra_margin_db``."""
    from dataclasses import replace

    from harmonycloak.perturb import budget as budgets

    default = budgets.DEFAULT_TONE_MARGIN_DB if audio.mode == "tone" else budgets.DEFAULT_SPECTRUM_MARGIN_DB
    base = default if audio.margin_db is None else audio.margin_db
    return replace(audio, margin_db=float(base) + float(split.extra_margin_db))


def _mark_check(samples: np.ndarray, sample_rate_hz: int, mark: tuple[Any, str]) -> dict[str, Any]:
    """Whether ``mark``'s payload reads back from ``samples [channels, samples]``."""
    from harmonycloak.clip import AudioClip
    from harmonycloak.watermark import detect

    key, payload = mark
    found = detect(AudioClip(np.ascontiguousarray(samples, dtype=np.float32), sample_rate_hz), key)
    return {"detected": bool(found.detected), "payload_matches": found.payload == payload,
            "bit_errors": found.bit_errors, "closest_bit_errors": found.closest_bit_errors,
            "threshold_bit_errors": found.threshold_bit_errors,
            "false_alarm_probability": float(f"{found.false_alarm_probability:.3g}")}


def _watermark_report(mark: tuple[Any, str], split: WatermarkSplit, budget: Any,
                      marks: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """The report's ``watermark`` entry (no key material: ``key_id`` is a fingerprint)."""
    key, payload = mark
    written = (marks or {}).get("written")
    if not (written and written["detected"] and written["payload_matches"]):
        notes.append("watermark: the payload could not be read back from the written file "
                     "(too short, too quiet, or too low a bitrate?); detection needs about 3 s")
    return {"scheme": key.scheme, "payload": payload, "key_id": key.key_id,
            "order": split.order, "strength": float(split.strength),
            "extra_margin_db": float(split.extra_margin_db), "mark_room": float(split.mark_room),
            "cloak_margin_db": budget.margin_db, "verification": marks}


def _json_number(value: Any) -> Any:
    """Floats that JSON can hold (NaN and infinities become null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------- one entry point

PROTECT_MODES = ("blackbox", "whitebox")
"""``blackbox``: against models the artist does not know (a bag of surrogates, the
default); ``whitebox``: against one known ``target``."""


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """``"midi"``, ``"audio"`` or None, by the file name's suffix."""
    from harmonycloak.io.audio import SUPPORTED_AUDIO_SUFFIXES
    from harmonycloak.io.midi import MIDI_SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return "midi"
    return "audio" if suffix in SUPPORTED_AUDIO_SUFFIXES else None


def iterations_total(config: Any) -> int:
    """How many inner (PGD) iterations a white-box run of ``config`` reports
    (:func:`blackbox_iterations` for black-box)."""
    return int(config.engine.outer_rounds * config.engine.inner_steps)


def _check_checkpoint_fits(kind: str, target: str, what: str, model_dir: Any) -> None:
    """InputError when ``model_dir`` holds a model for the other kind of file."""
    from harmonycloak.targets.audio_registry import AUDIO_TARGET_NAMES

    if (kind == "audio") != (target in AUDIO_TARGET_NAMES):
        needed = "an audio model (codec-lm, latent-diffusion, clap-shift)" if kind == "audio" \
            else "a MIDI model (musegan, symbolic-lm)"
        label = "an audio" if kind == "audio" else "a MIDI"
        raise InputError(f"--model {model_dir}: holds {what}; {label} file needs {needed}; "
                         "give a checkpoint for this kind of file")


def protect(path: str | os.PathLike[str], output: str | os.PathLike[str], *,
            mode: str = "whitebox", target: str | None = None, model_dir: str | None = None,
            corpus_dir: str | None = None, config: Any = None, seed: int = 0,
            device: str = "auto", watermark: tuple[Any, str] | None = None,
            report_path: str | os.PathLike[str] | None = None, force: bool = False,
            progress: Callable[[str], None] | None = None,
            on_iteration: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Protect one MIDI or audio file (routed by ``path``'s suffix); the one function the
    command line, the web app and batch jobs call.

    ``mode``: one of :data:`PROTECT_MODES`. ``target``: the white-box model's name (None:
    the one ``model_dir``'s checkpoint holds, or without one ``musegan`` for MIDI and
    ``codec-lm`` for audio); ``model_dir``: its checkpoint, else it
    is trained once on ``corpus_dir`` (None: ``data/dev-midi`` / ``data/dev-music``) and
    cached. ``config``: a :class:`~harmonycloak.config.ProtectConfig` (None: the
    ``standard-v1`` preset). ``watermark``: ``(key, payload_hex)``, audio only.
    ``on_iteration`` gets the engine's dict with ``step`` (1-based) and ``total`` added,
    for progress bars; raising from it stops the run before anything is written.
    Returns the report dict (also written beside the output). Raises
    :class:`~harmonycloak.errors.InputError` for anything the user can fix.
    """
    from harmonycloak.config import preset as get_preset
    from harmonycloak.config import resolve_device

    kind = file_kind(path)
    if kind is None:
        raise InputError(f"{path}: not a file harmonycloak protects; give MIDI (.mid, .midi) or "
                         "audio (.wav .flac .mp3 .ogg .opus .m4a .aac .mp4)")
    if mode not in PROTECT_MODES:
        raise InputError(f"mode {mode!r}: use one of {', '.join(PROTECT_MODES)}")
    if mode == "blackbox" and (target is not None or model_dir is not None):
        raise InputError("--target and --model name a known model: they go with --mode whitebox; "
                         "--mode blackbox protects against models nobody named")
    if kind == "midi" and watermark is not None:
        raise InputError(f"{path}: MIDI files cannot carry the audio watermark; protect MIDI "
                         "files without --watermark-key/--watermark-payload")
    if mode == "whitebox" and target is None and model_dir is not None:
        from harmonycloak.targets.audio_registry import checkpoint_kind

        target, what = checkpoint_kind(model_dir)  # the model the folder holds
        _check_checkpoint_fits(kind, target, what, model_dir)
    config = config if config is not None else get_preset("standard-v1")
    total = blackbox_iterations(config) if mode == "blackbox" else iterations_total(config)
    step = 0

    def counted(info: dict[str, Any]) -> None:
        nonlocal step
        step += 1
        if on_iteration is not None:
            on_iteration({"step": step, "total": total, **info})

    common = {"config": config, "seed": seed, "device": resolve_device(device),
              "report_path": report_path, "force": force, "progress": progress,
              "on_iteration": counted}
    if kind == "midi":
        choice: Any = BlackBoxChoice() if mode == "blackbox" else TargetChoice(
            name=target or "musegan", model_dir=model_dir, corpus_dir=corpus_dir or "data/dev-midi")
        return protect_midi(path, output, target=choice, **common)
    choice = BlackBoxChoice() if mode == "blackbox" else AudioTargetChoice(
        name=target or "codec-lm", model_dir=model_dir, corpus_dir=corpus_dir or "data/dev-music")
    return protect_audio(path, output, target=choice, watermark=watermark, **common)
