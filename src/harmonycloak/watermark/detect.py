"""Detection: find the keyed pattern (offset and speed), decode the payload, bound the risk.

1. Downmix to mono, resample to 16 kHz, STFT (:mod:`.scheme`); at most ``WINDOW_S`` of
   audio per analysis window (longer inputs: up to ``MAX_WINDOWS`` windows spread over the
   file, the first one that decodes wins).
2. Synchronization search over every hypothesis ``(speed s, frame phase o, period shift
   k)``: speeds on a grid of ``SPEED_STEP`` from ``SPEED_MIN`` to ``SPEED_MAX`` (a speed
   change by ``s`` moves frequencies by ``s`` and shortens time by ``1/s``: band edges are
   multiplied by ``s`` and tiles are ``8/s`` frames long), all frame phases within a tile
   and all 40 tile shifts within the period. For each hypothesis the cells are read
   (:func:`.scheme.cell_values`), folded over the repeated periods and correlated with
   the keyed chips of each coded bit (all 40 shifts at once by FFT), giving 162
   normalized soft bits ``z``. The sync score is ``mean |z|`` (0.80 for noise, larger when
   the pattern lines up): no pilot cells are needed, every cell carries payload.
   Coarse-to-fine: every ``COARSE_STEP`` first, then the fine grid around the two best.
3. The best hypotheses (``DECODE_CANDIDATES`` of distinct alignments) are descrambled
   and Viterbi-decoded; the decoded payload is
   re-encoded and its hard-decision distance to the received bits is ``bit_errors``.
4. Decision: ``detected`` iff ``bit_errors <= threshold``, with the threshold chosen so
   that the false-alarm bound (:func:`.coding.false_alarm_bound`, union over all payloads
   and *all* hypotheses of the search grid, not only those decoded) is at most
   ``FALSE_ALARM_TARGET`` per input. ``false_alarm_probability`` is that bound at the
   observed ``bit_errors``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import soxr

from harmonycloak.clip import AudioClip
from harmonycloak.errors import InputError

from . import scheme
from ._threads import one_blas_thread
from .coding import (
    CODED_BITS,
    bits_to_hex,
    conv_encode,
    false_alarm_bound,
    max_bit_errors,
    viterbi_decode,
)
from .keys import WatermarkKey

__all__ = [
    "FALSE_ALARM_TARGET",
    "MAX_WINDOWS",
    "SPEED_MAX",
    "SPEED_MIN",
    "SPEED_STEP",
    "WINDOW_S",
    "Detection",
    "detect",
    "hypothesis_count",
]

FALSE_ALARM_TARGET = 1e-6
SPEED_MIN = 0.94
SPEED_MAX = 1.06
SPEED_STEP = 0.001
COARSE_STEP = 0.005
REFINE_AROUND = 1
DECODE_CANDIDATES = 4
WINDOW_S = 4 * scheme.PERIOD_S  # 10.24 s
SINGLE_WINDOW_MAX_S = 12.0
MAX_WINDOWS = 3
_MAX_PHASES = math.ceil(scheme.TILE_FRAMES / SPEED_MIN)


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found.

    ``detected``: the payload decoded with at most ``threshold_bit_errors`` errors;
    ``payload``: 12 hex digits or None; ``false_alarm_probability``: upper bound on the
    chance that an input without this key's mark scores as well as this one (1.0 when
    nothing was found); ``bit_errors``: coded-bit errors of the decoded payload (None when
    nothing decoded); ``offset_s``: where a watermark period starts in the input
    (seconds, None when not detected); ``speed``: the speed factor found (1.05 = played 5 %
    fast); ``score``: the sync score (mean |z|, ~0.8 without a mark); ``hypotheses``: the
    size of the synchronization search per window; ``windows``: windows analysed;
    ``closest_bit_errors``: errors of the best decoded candidate, also when it was not
    good enough (for diagnostics and the false-alarm experiment).
    """

    detected: bool
    payload: str | None
    false_alarm_probability: float
    bit_errors: int | None
    offset_s: float | None
    speed: float | None = None
    score: float = 0.0
    threshold_bit_errors: int = 0
    coded_bits: int = CODED_BITS
    hypotheses: int = 0
    windows: int = 0
    key_id: str = ""
    closest_bit_errors: int | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict of all fields."""
        return asdict(self)


def hypothesis_count() -> int:
    """Synchronization hypotheses per window: speeds x frame phases x period shifts."""
    return len(_speed_grid()) * _MAX_PHASES * scheme.PERIOD_TILES


@lru_cache(maxsize=1)
def _speed_grid() -> tuple[float, ...]:
    count = int(round((SPEED_MAX - SPEED_MIN) / SPEED_STEP)) + 1
    return tuple(round(SPEED_MIN + i * SPEED_STEP, 6) for i in range(count))


@lru_cache(maxsize=16)
def _chip_spectra(secret: bytes, scheme_name: str) -> tuple[np.ndarray, np.ndarray]:
    """FFT over the period axis of the per-bit chip patterns, and of the per-bit cell counts.

    Returns ``W_hat [21, NUM_BANDS, CODED_BITS]`` (complex) and ``M_hat [21, CODED_BITS]``.
    """
    layout = scheme.pattern(WatermarkKey(secret, scheme_name))
    onehot = np.zeros((scheme.PERIOD_TILES, scheme.NUM_BANDS, CODED_BITS), dtype=np.float32)
    tiles, bands = np.meshgrid(np.arange(scheme.PERIOD_TILES), np.arange(scheme.NUM_BANDS),
                               indexing="ij")
    onehot[tiles, bands, layout.bit] = 1.0
    weights = onehot * layout.chip[:, :, None]
    w_hat = np.fft.rfft(weights, axis=0).astype(np.complex64)
    m_hat = np.fft.rfft(onehot.sum(axis=1), axis=0)
    return w_hat, m_hat


@lru_cache(maxsize=1)
def _bin_range() -> tuple[int, int]:
    """FFT bins that any speed hypothesis can use (the others are skipped)."""
    used = (scheme.band_matrix(SPEED_MIN).sum(axis=1) > 0) | (
        scheme.band_matrix(SPEED_MAX).sum(axis=1) > 0)
    idx = np.nonzero(used)[0]
    return int(idx[0]), int(idx[-1]) + 1


@dataclass
class _Hypothesis:
    speed: float
    phase: int
    shift: int
    score: float
    z: np.ndarray
    tile_frames: float


class _Window:
    """One analysis window: its frame power and the evaluation of speed hypotheses."""

    def __init__(self, power: np.ndarray, key: WatermarkKey, start_s: float) -> None:
        lo, hi = _bin_range()
        self.power = np.ascontiguousarray(power[:, lo:hi])
        self.lo, self.hi = lo, hi
        self.start_s = start_s
        self.w_hat, self.m_hat = _chip_spectra(key.secret, key.scheme)
        self.frames = power.shape[0]

    def evaluate(self, speed: float) -> _Hypothesis | None:
        tile = scheme.TILE_FRAMES / speed
        phases = math.ceil(tile)
        tiles = int((self.frames - phases) // tile)
        if tiles < 3:
            return None
        bands = scheme.band_matrix(speed)[self.lo:self.hi]
        energy = self.power @ bands  # [frames, bands]
        cumulative = np.concatenate([np.zeros((1, energy.shape[1]), np.float64),
                                     np.cumsum(energy, axis=0, dtype=np.float64)])
        edges = np.arange(phases)[:, None] + tile * np.arange(tiles + 1)[None, :]
        base = np.minimum(np.floor(edges).astype(np.int64), self.frames - 1)
        frac = (edges - base)[..., None]
        at_edges = cumulative[base] + frac * energy[base]  # [phases, tiles+1, bands]
        tile_energy = np.maximum(np.diff(at_edges, axis=1), 0.0)
        values = scheme.cell_values(10.0 * np.log10(tile_energy + 1e-12)).astype(np.float32)
        reps = -(-tiles // scheme.PERIOD_TILES)
        padded = np.zeros((phases, reps * scheme.PERIOD_TILES, scheme.NUM_BANDS), np.float32)
        padded[:, :tiles] = values
        folded = padded.reshape(phases, reps, scheme.PERIOD_TILES, -1).sum(axis=1)
        a_hat = np.conj(np.fft.rfft(folded, axis=1))  # [phases, 21, bands]
        correlated = np.matmul(a_hat.transpose(1, 0, 2), self.w_hat)  # [21, phases, bits]
        soft = np.fft.irfft(correlated, n=scheme.PERIOD_TILES, axis=0).transpose(1, 0, 2)
        counts = np.zeros(scheme.PERIOD_TILES)
        np.add.at(counts, np.arange(tiles) % scheme.PERIOD_TILES, 1.0)
        cells = np.fft.irfft(np.conj(np.fft.rfft(counts))[:, None] * self.m_hat,
                             n=scheme.PERIOD_TILES, axis=0)  # [shifts, bits]
        rms = np.sqrt(np.mean(values.astype(np.float64) ** 2, axis=(1, 2)))  # [phases]
        norm = rms[:, None, None] * np.sqrt(np.maximum(cells, 0.5))[None] + 1e-9
        z = soft / norm
        score = np.abs(z).mean(axis=2)  # [phases, shifts]
        phase, shift = np.unravel_index(int(np.argmax(score)), score.shape)
        return _Hypothesis(speed, int(phase), int(shift), float(score[phase, shift]),
                           z[phase, shift].astype(np.float64), tile)

    def offset_s(self, hyp: _Hypothesis) -> float:
        first = (-hyp.shift) % scheme.PERIOD_TILES
        frame = hyp.phase + first * hyp.tile_frames
        return self.start_s + frame * scheme.HOP / scheme.ANALYSIS_RATE_HZ


def _search(window: _Window) -> list[_Hypothesis]:
    """Coarse-to-fine search over speeds; the best hypotheses first."""
    grid = np.array(_speed_grid())
    stride = max(1, int(round(COARSE_STEP / SPEED_STEP)))
    coarse_idx = list(range(0, len(grid), stride))
    if coarse_idx[-1] != len(grid) - 1:
        coarse_idx.append(len(grid) - 1)
    found: dict[int, _Hypothesis | None] = {i: window.evaluate(float(grid[i])) for i in coarse_idx}
    ranked = sorted((i for i in coarse_idx if found[i] is not None),
                    key=lambda i: -found[i].score)
    for centre in ranked[:REFINE_AROUND]:
        for i in range(max(0, centre - stride + 1), min(len(grid), centre + stride)):
            if i not in found:
                found[i] = window.evaluate(float(grid[i]))
    hyps = sorted((h for h in found.values() if h is not None), key=lambda h: -h.score)
    return hyps


def _distinct(hyps: list[_Hypothesis], count: int) -> list[_Hypothesis]:
    """The best ``count`` hypotheses with different (phase, shift): neighbouring speeds of
    one alignment score alike, and decoding them twice would waste a candidate."""
    chosen: list[_Hypothesis] = []
    seen: set[tuple[int, int]] = set()
    for hyp in hyps:
        if (hyp.phase, hyp.shift) not in seen:
            seen.add((hyp.phase, hyp.shift))
            chosen.append(hyp)
            if len(chosen) == count:
                break
    return chosen


def _windows(clip: AudioClip) -> list[tuple[float, np.ndarray]]:
    """(start in seconds, mono 16 kHz samples) of each analysis window."""
    mono = clip.samples.mean(axis=0).astype(np.float32)
    sr = clip.sample_rate_hz
    if clip.duration_s <= SINGLE_WINDOW_MAX_S:
        starts = [0.0]
        length = clip.num_samples
    else:
        length = int(round(WINDOW_S * sr))
        last = clip.num_samples - length
        count = min(MAX_WINDOWS, 1 + int(last // length))
        starts = [round(last * i / max(1, count - 1)) / sr for i in range(count)]
        if count == 1:
            starts = [0.0]
    out = []
    for start_s in starts:
        first = int(round(start_s * sr))
        piece = mono[first:first + length]
        if sr != scheme.ANALYSIS_RATE_HZ:
            piece = soxr.resample(piece, sr, scheme.ANALYSIS_RATE_HZ, quality="HQ")
        out.append((start_s, np.asarray(piece, dtype=np.float32)))
    return out


def detect(clip: AudioClip, key: WatermarkKey) -> Detection:
    """Look for ``key``'s watermark in ``clip`` and read its payload.

    ``clip``: any rate (8-192 kHz), any channel count (the downmix is analysed), any
    length (about 3 s or more is needed; inputs longer than 12 s are read in up to 3
    windows of 10.24 s). Survives crops, gain, codecs, resampling and speed changes of up
    to +-6 %. The decision keeps the false-alarm probability per input at most
    :data:`FALSE_ALARM_TARGET` (see the module notes). Raises :class:`InputError` for an
    empty clip or non-finite samples.
    """
    if clip.num_samples == 0 or clip.channels == 0:
        raise InputError(f"{clip.source or 'audio'}: has no samples; nothing to detect")
    if not np.isfinite(clip.samples).all():
        raise InputError(f"{clip.source or 'audio'}: contains NaN or infinite samples")
    with one_blas_thread():
        return _detect(clip, key)


def _detect(clip: AudioClip, key: WatermarkKey) -> Detection:
    windows = _windows(clip)
    per_window = hypothesis_count()
    total = per_window * len(windows)
    threshold = max_bit_errors(FALSE_ALARM_TARGET, hypotheses=total)
    layout = scheme.pattern(key)
    descramble = 1.0 - 2.0 * layout.scramble.astype(np.float64)
    best: tuple[int, _Hypothesis, _Window, str] | None = None
    best_score = 0.0
    for start_s, mono16 in windows:
        spec = scheme.stft(mono16)
        window = _Window(spec.real ** 2 + spec.imag ** 2, key, start_s)
        hyps = _search(window)
        if hyps:
            best_score = max(best_score, hyps[0].score)
        for hyp in _distinct(hyps, DECODE_CANDIDATES):
            soft = hyp.z * descramble
            payload_bits = viterbi_decode(soft)
            coded = conv_encode(payload_bits)
            # a soft value of exactly 0 (e.g. digital silence) agrees with neither bit:
            # it counts as an error, so the fair-coin argument of the bound still holds
            agrees = np.where(coded == 1, soft < 0, soft > 0)
            errors = int(np.count_nonzero(~agrees))
            if best is None or errors < best[0]:
                best = (errors, hyp, window, bits_to_hex(payload_bits))
        if best is not None and best[0] <= threshold:
            break
    common = dict(threshold_bit_errors=threshold, hypotheses=per_window,
                  windows=len(windows), key_id=key.key_id, score=round(best_score, 4),
                  closest_bit_errors=None if best is None else best[0])
    if best is None or best[0] > threshold:
        bound = 1.0 if best is None else false_alarm_bound(best[0], hypotheses=total)
        return Detection(False, None, bound, None, None, None, **common)
    errors, hyp, window, payload = best
    return Detection(
        True, payload, false_alarm_bound(errors, hypotheses=total), errors,
        round(window.offset_s(hyp), 4), hyp.speed, **common,
    )
