"""Keyed, inaudible watermark with a 48-bit provenance payload (scheme ``hcwm-1``).

``embed(clip, key, "00000001abcd")`` scales the music's own 64 ms x 0.22-octave cells
between 0.5 and 6 kHz up or down by a keyed pattern, within caps from the psychoacoustic
masking threshold; ``detect(clip, key)`` finds the pattern again (offset and speed
search), decodes the payload with a convolutional code and reports a proven bound on the
false-alarm probability. See ``docs/watermark.md`` for the scheme and its measurements.
"""

from .coding import PAYLOAD_BITS, PAYLOAD_HEX_DIGITS, parse_payload
from .detect import FALSE_ALARM_TARGET, Detection, detect
from .embed import DEFAULT_STRENGTH, embed
from .keys import WatermarkKey, generate_key, load_key, save_key

__all__ = [
    "DEFAULT_STRENGTH",
    "FALSE_ALARM_TARGET",
    "PAYLOAD_BITS",
    "PAYLOAD_HEX_DIGITS",
    "Detection",
    "WatermarkKey",
    "detect",
    "embed",
    "generate_key",
    "load_key",
    "parse_payload",
    "save_key",
]
