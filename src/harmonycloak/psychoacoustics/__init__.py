"""The psychoacoustic model: calibration, thresholds, masking, dominant tones, NMR."""
