"""Make the bundled example: a short original piece as MIDI and as rendered audio.

    python scripts/make_example.py            # writes examples/demo.mid and examples/demo.flac

The piece (8 bars of 4/4 at 112 qpm, about 17 s) has bass, drums, guitar, piano and
strings, i.e. MuseGAN's five tracks, so both the MIDI and the audio path have something
realistic to work on. The audio is rendered by simple additive synthesis in numpy (no
sound font needed), stereo 44.1 kHz. The output is deterministic: same script, same bytes.
It is our own composition, so the examples carry no third-party licence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from symusic import Note, Score, Tempo, TimeSignature, Track

SAMPLE_RATE_HZ = 44_100
QPM = 112.0
TPQ = 480
BARS = 8
# I–vi–IV–V in C, twice: (root MIDI note of the bass, chord tones)
PROGRESSION = [
    (36, (60, 64, 67)),
    (45, (57, 60, 64)),
    (41, (53, 57, 60)),
    (43, (55, 59, 62)),
] * 2
MELODY = [  # (beat offset within the bar, length in beats, pitch), one bar per chord
    [(0, 1, 72), (1, 0.5, 74), (1.5, 0.5, 76), (2, 2, 79)],
    [(0, 1.5, 76), (1.5, 0.5, 74), (2, 1, 72), (3, 1, 69)],
    [(0, 1, 69), (1, 1, 72), (2, 1.5, 77), (3.5, 0.5, 76)],
    [(0, 2, 74), (2, 1, 71), (3, 1, 67)],
    [(0, 0.5, 72), (0.5, 0.5, 76), (1, 1, 79), (2, 1, 84), (3, 1, 79)],
    [(0, 1, 81), (1, 1, 79), (2, 1, 76), (3, 1, 72)],
    [(0, 1.5, 77), (1.5, 0.5, 76), (2, 1, 74), (3, 1, 72)],
    [(0, 2, 74), (2, 2, 71)],
]
KICK, SNARE, HAT = 36, 38, 42


def score_notes() -> dict[str, list[tuple[float, float, int, int]]]:
    """The piece as (start_beat, length_beats, pitch, velocity) per track."""
    tracks: dict[str, list[tuple[float, float, int, int]]] = {
        "Bass": [], "Drums": [], "Guitar": [], "Piano": [], "Strings": []
    }
    for bar, (root, chord) in enumerate(PROGRESSION):
        b0 = 4.0 * bar
        for beat in (0, 1.5, 2, 3.5):
            tracks["Bass"].append((b0 + beat, 0.5 if beat % 1 else 1.0, root, 100))
        for step in range(8):
            tracks["Drums"].append((b0 + step / 2, 0.25, HAT, 70 if step % 2 else 90))
        for beat in (0, 2.5):
            tracks["Drums"].append((b0 + beat, 0.25, KICK, 115))
        for beat in (1, 3):
            tracks["Drums"].append((b0 + beat, 0.25, SNARE, 105))
        for i, beat in enumerate(np.arange(0, 4, 0.5)):
            pitch = chord[i % 3] + (12 if i >= 4 else 0)
            tracks["Piano"].append((b0 + float(beat), 0.5, pitch, 80))
        for pitch in chord:
            tracks["Strings"].append((b0, 4.0, pitch - 12, 70))
        for beat, length, pitch in MELODY[bar]:
            tracks["Guitar"].append((b0 + beat, length, pitch, 95))
    return tracks


PROGRAMS = {"Bass": (33, False), "Drums": (0, True), "Guitar": (25, False),
            "Piano": (0, False), "Strings": (48, False)}


def write_midi(path: Path) -> None:
    score = Score(TPQ)
    score.tempos.append(Tempo(0, QPM))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    for name, notes in score_notes().items():
        program, is_drum = PROGRAMS[name]
        track = Track(name=name, program=program, is_drum=is_drum)
        for start, length, pitch, velocity in notes:
            track.notes.append(Note(round(start * TPQ), round(length * TPQ), pitch, velocity))
        score.tracks.append(track)
    score.dump_midi(str(path))


def _hz(pitch: int) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


def _tone(freq_hz: float, dur_s: float, *, harmonics: list[float], decay_s: float,
          attack_s: float = 0.005, detune_cents: float = 0.0) -> np.ndarray:
    t = np.arange(int(dur_s * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    out = np.zeros_like(t)
    for k, amp in enumerate(harmonics, start=1):
        f = freq_hz * k * 2 ** (detune_cents / 1200)
        if f < SAMPLE_RATE_HZ / 2 - 1000:
            out += amp * np.sin(2 * np.pi * f * t) * np.exp(-t * k / (decay_s * 4 + 1e-9))
    env = np.minimum(t / attack_s, 1.0) * np.exp(-t / decay_s)
    release = np.minimum(1.0, (dur_s - t) / 0.02).clip(0, 1)
    return out * env * release


def _drum(pitch: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.3 * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    if pitch == KICK:
        phase = 2 * np.pi * np.cumsum(50 + 90 * np.exp(-t / 0.03)) / SAMPLE_RATE_HZ
        return np.sin(phase) * np.exp(-t / 0.12)
    noise = rng.standard_normal(n)
    if pitch == SNARE:
        body = 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05)
        return body + 0.6 * noise * np.exp(-t / 0.07)
    hat = np.diff(noise, prepend=0.0)  # crude high-pass
    return 0.25 * hat * np.exp(-t / 0.02)


VOICES = {  # harmonic amplitudes, decay, attack, pan (0 = left, 1 = right)
    "Bass": ([1.0, 0.5, 0.33, 0.25, 0.2, 0.12], 0.6, 0.01, 0.5),
    "Guitar": ([1.0, 0.6, 0.45, 0.3, 0.22, 0.15, 0.1, 0.07], 0.5, 0.003, 0.35),
    "Piano": ([1.0, 0.4, 0.25, 0.12, 0.08, 0.05], 0.8, 0.002, 0.65),
    "Strings": ([1.0, 0.5, 0.33, 0.25, 0.2, 0.16, 0.14, 0.12, 0.1], 4.0, 0.25, 0.5),
}


def render(seed: int = 7) -> np.ndarray:
    """Render the piece to float32 stereo [2, samples], peak -1 dBFS."""
    rng = np.random.default_rng(seed)
    sec_per_beat = 60.0 / QPM
    total = int((BARS * 4 * sec_per_beat + 1.5) * SAMPLE_RATE_HZ)
    mix = np.zeros((2, total))
    gains = {"Bass": 0.5, "Drums": 0.5, "Guitar": 0.35, "Piano": 0.2, "Strings": 0.12}
    for name, notes in score_notes().items():
        for start, length, pitch, velocity in notes:
            if name == "Drums":
                sound, pan = _drum(pitch, rng), {KICK: 0.5, SNARE: 0.45, HAT: 0.7}[pitch]
            else:
                harmonics, decay, attack, pan = VOICES[name]
                dur = length * sec_per_beat + (0.3 if name != "Strings" else 0.6)
                sound = _tone(_hz(pitch), dur, harmonics=harmonics, decay_s=decay, attack_s=attack)
                if name == "Strings":
                    sound += _tone(_hz(pitch), dur, harmonics=harmonics, decay_s=decay,
                                   attack_s=attack, detune_cents=7.0)
            i0 = int(start * sec_per_beat * SAMPLE_RATE_HZ)
            seg = sound[: total - i0] * gains[name] * (velocity / 127) ** 2
            mix[0, i0:i0 + len(seg)] += seg * np.cos(pan * np.pi / 2)
            mix[1, i0:i0 + len(seg)] += seg * np.sin(pan * np.pi / 2)
    for delay_s, amount in ((0.031, 0.25), (0.047, 0.2), (0.089, 0.12)):  # a little room
        d = int(delay_s * SAMPLE_RATE_HZ)
        mix[:, d:] += amount * mix[::-1, :-d]
    mix *= 10 ** (-1 / 20) / np.max(np.abs(mix))
    return mix.astype(np.float32)


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "examples"
    out.mkdir(exist_ok=True)
    write_midi(out / "demo.mid")
    sf.write(out / "demo.flac", render().T, SAMPLE_RATE_HZ, subtype="PCM_16")
    print(f"wrote {out / 'demo.mid'} and {out / 'demo.flac'}")


if __name__ == "__main__":
    main()
