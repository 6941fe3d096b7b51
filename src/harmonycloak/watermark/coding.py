"""Payload coding: 48-bit payloads, a rate-1/3 convolutional code, keyed scrambling,
soft-decision Viterbi decoding and the false-alarm bound.

Code: the constraint-length-7, rate-1/3 convolutional code with generators 133, 171, 165
(octal; the LTE / 3GPP code, free distance 15), zero-terminated: 48 payload bits + 6
tail bits give ``CODED_BITS`` = 162 coded bits. The coded bits are XORed with keyed
scrambling bits before they are written into the audio, which makes every received bit a
fair coin under the "no watermark of this key" hypothesis (see :func:`false_alarm_bound`).

Soft input convention: a positive soft value votes for coded bit 0, a negative one for 1.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

from harmonycloak.errors import InputError

__all__ = [
    "CODED_BITS",
    "CONSTRAINT_LENGTH",
    "PAYLOAD_BITS",
    "PAYLOAD_HEX_DIGITS",
    "bits_to_hex",
    "conv_encode",
    "false_alarm_bound",
    "hamming_ball_log2",
    "hex_to_bits",
    "max_bit_errors",
    "parse_payload",
    "viterbi_decode",
]

PAYLOAD_BITS = 48
PAYLOAD_HEX_DIGITS = PAYLOAD_BITS // 4
CONSTRAINT_LENGTH = 7
GENERATORS_OCTAL = (0o133, 0o171, 0o165)
RATE_INV = len(GENERATORS_OCTAL)
CODED_BITS = (PAYLOAD_BITS + CONSTRAINT_LENGTH - 1) * RATE_INV

_HEX = re.compile(r"[0-9a-fA-F]{%d}" % PAYLOAD_HEX_DIGITS)


def parse_payload(payload_hex: str) -> str:
    """Validate a payload given as 12 hex digits; returns it in lower case.

    Raises :class:`InputError` with the expected form for anything else.
    """
    text = payload_hex.strip() if isinstance(payload_hex, str) else ""
    if not _HEX.fullmatch(text):
        raise InputError(
            f"--payload must be {PAYLOAD_HEX_DIGITS} hex digits, e.g. 00000001abcd "
            f"(32-bit track id + 16-bit issuer id); got {payload_hex!r}"
        )
    return text.lower()


def hex_to_bits(payload_hex: str) -> np.ndarray:
    """48 bits (uint8 0/1, most significant first) of a validated 12-hex-digit payload."""
    value = int(parse_payload(payload_hex), 16)
    return np.array([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)],
                    dtype=np.uint8)


def bits_to_hex(bits: np.ndarray) -> str:
    """Inverse of :func:`hex_to_bits`."""
    value = 0
    for bit in np.asarray(bits, dtype=np.uint8)[:PAYLOAD_BITS]:
        value = (value << 1) | int(bit)
    return f"{value:0{PAYLOAD_HEX_DIGITS}x}"


@lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """``outputs[state, input]`` -> the RATE_INV coded bits, ``next_state[state, input]``.

    State = the last K-1 input bits, newest in the most significant position.
    """
    memory = CONSTRAINT_LENGTH - 1
    states = 1 << memory
    outputs = np.zeros((states, 2, RATE_INV), dtype=np.uint8)
    next_state = np.zeros((states, 2), dtype=np.int64)
    for state in range(states):
        for bit in (0, 1):
            register = (bit << memory) | state  # newest bit at the top (generator MSB)
            for j, gen in enumerate(GENERATORS_OCTAL):
                outputs[state, bit, j] = bin(register & gen).count("1") & 1
            next_state[state, bit] = register >> 1
    return outputs, next_state


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Encode payload bits (0/1) and 6 zero tail bits: ``3 * (len + 6)`` coded bits."""
    outputs, next_state = _trellis()
    state = 0
    coded = []
    for bit in list(np.asarray(bits, dtype=np.uint8)) + [0] * (CONSTRAINT_LENGTH - 1):
        coded.append(outputs[state, int(bit)])
        state = int(next_state[state, int(bit)])
    return np.concatenate(coded).astype(np.uint8)


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Maximum-likelihood payload bits for soft values ``[CODED_BITS]`` (positive = bit 0).

    Maximizes the correlation ``sum soft_i * (1 - 2 c_i)`` over all zero-terminated
    codewords ``c``; exact for Gaussian noise. Returns ``PAYLOAD_BITS`` bits (uint8).
    """
    outputs, next_state = _trellis()
    soft = np.asarray(soft, dtype=np.float64).reshape(-1, RATE_INV)
    steps = soft.shape[0]
    states = outputs.shape[0]
    signs = 1.0 - 2.0 * outputs.astype(np.float64)  # [S, 2, R]
    # Predecessor table: each state has two (prev_state, input) arrivals.
    prev = np.zeros((states, 2), dtype=np.int64)
    prev_bit = np.zeros((states, 2), dtype=np.int64)
    filled = np.zeros(states, dtype=np.int64)
    for s in range(states):
        for b in (0, 1):
            t = next_state[s, b]
            prev[t, filled[t]] = s
            prev_bit[t, filled[t]] = b
            filled[t] += 1
    metric = np.full(states, -np.inf)
    metric[0] = 0.0
    choice = np.zeros((steps, states), dtype=np.int64)
    branch_signs = signs[prev, prev_bit]  # [S, 2, R]
    for step in range(steps):
        candidates = metric[prev] + branch_signs @ soft[step]  # [S, 2]
        if step >= PAYLOAD_BITS:  # tail: only input 0 is allowed
            candidates = np.where(prev_bit == 0, candidates, -np.inf)
        best = np.argmax(candidates, axis=1)
        choice[step] = best
        metric = candidates[np.arange(states), best]
    state = 0
    decoded = np.zeros(steps, dtype=np.uint8)
    for step in range(steps - 1, -1, -1):
        arrival = choice[step, state]
        decoded[step] = prev_bit[state, arrival]
        state = prev[state, arrival]
    return decoded[:PAYLOAD_BITS]


def hamming_ball_log2(n: int, radius: int) -> float:
    """log2 of the number of n-bit words within Hamming distance ``radius`` of a word."""
    total = sum(math.comb(n, k) for k in range(0, max(radius, -1) + 1))
    return math.log2(total) if total else -math.inf


def false_alarm_bound(bit_errors: int, *, hypotheses: int, n: int = CODED_BITS,
                      payload_bits: int = PAYLOAD_BITS) -> float:
    """Upper bound on P(some payload decodes with <= ``bit_errors`` errors | no mark).

    Under "no watermark of this key" the keyed scrambling bits are independent of the
    received hard bits, so for any one synchronization hypothesis and any one payload the
    received word agrees with the scrambled codeword like ``n`` fair coins. A union bound
    over the ``2**payload_bits`` payloads and the ``hypotheses`` tested gives
    ``hypotheses * 2**payload_bits * V(n, bit_errors) / 2**n`` (``V`` = Hamming ball
    volume), capped at 1.
    """
    log2_p = math.log2(hypotheses) + payload_bits + hamming_ball_log2(n, bit_errors) - n
    return float(min(1.0, 2.0 ** log2_p))


def max_bit_errors(target: float, *, hypotheses: int, n: int = CODED_BITS,
                   payload_bits: int = PAYLOAD_BITS) -> int:
    """Largest error count whose :func:`false_alarm_bound` is at most ``target`` (-1: none)."""
    radius = -1
    while radius + 1 <= n and false_alarm_bound(
        radius + 1, hypotheses=hypotheses, n=n, payload_bits=payload_bits
    ) <= target:
        radius += 1
    return radius
