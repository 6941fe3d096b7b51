"""Evaluation metrics. :mod:`.symbolic`: MuseGAN's EB, UPC, QN, DP and TD on piano rolls."""

from .symbolic import (
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
