"""File input/output: audio, MIDI, and in-process codec round trips."""
