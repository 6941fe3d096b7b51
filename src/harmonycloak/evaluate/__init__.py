"""Evaluation: metrics on piano rolls and audio (see :mod:`.metrics`)."""

from .metrics import (
    METRIC_ABBREVIATIONS,
    bar_lengths,
    drum_pattern_rate,
    empty_bar_rate,
    pitch_class_counts,
    qualified_note_rate,
    roll_metrics,
    tonal_centroid,
    tonal_distance,
    tonal_distances,
    track_metrics,
    used_pitch_classes,
)

__all__ = [
    "METRIC_ABBREVIATIONS",
    "bar_lengths",
    "drum_pattern_rate",
    "empty_bar_rate",
    "pitch_class_counts",
    "qualified_note_rate",
    "roll_metrics",
    "tonal_centroid",
    "tonal_distance",
    "tonal_distances",
    "track_metrics",
    "used_pitch_classes",
]
