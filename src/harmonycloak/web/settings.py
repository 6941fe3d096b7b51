"""What ``harmonycloak serve`` is started with, and the plain-language texts the page shows.

Kept free of FastAPI so the command line can build and check a :class:`ServeSettings`
before the web extra is imported.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

from harmonycloak.errors import InputError

__all__ = [
    "DEFAULT_DATA_DIR_NAME",
    "DEFAULT_PORT",
    "DEFAULT_PROTECT_MODE",
    "EXPORT_FORMATS",
    "LOOPBACK_HOST",
    "PRESET_TEXT",
    "ServeSettings",
    "is_loopback",
]

DEFAULT_PROTECT_MODE = "whitebox"
"""The protection mode every web job uses unless ``--mode`` says otherwise. The black-box
mode (no pre-trained model needed) becomes the default when it lands (issue 4): flip this
one constant."""

LOOPBACK_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_DATA_DIR_NAME = ".harmonycloak/web"
"""Under the home folder: jobs database, uploaded copies, protected files, watermark key."""

PRESET_TEXT: dict[str, dict[str, str]] = {
    "light-v1": {
        "title": "Light",
        "summary": "Quickest, gentlest: about a third of the work of Standard.",
        "cost": "Adds the least sound; the protection is the weakest of the three.",
    },
    "standard-v1": {
        "title": "Standard",
        "summary": "The research paper's settings: the balance we recommend.",
        "cost": "The added sound stays hidden under your music's own masking.",
    },
    "strong-v1": {
        "title": "Strong",
        "summary": "Twice the work of Standard with bigger steps; for audio the added "
                   "sound may come 3 dB closer to what your music masks (MIDI: finer 5 ms "
                   "windows).",
        "cost": "Strongest effect; in the quietest moments the added sound can rise just "
                "above the masking, so it is the closest to audible, and it takes about "
                "twice as long.",
    },
}
"""Preset name -> what the page says about it (quality cost vs strength, plain words)."""

EXPORT_FORMATS: dict[str, dict[str, Any]] = {
    "flac": {"label": "FLAC (lossless)", "bitrates_kbps": []},
    "wav": {"label": "WAV (lossless, large)", "bitrates_kbps": []},
    "mp3": {"label": "MP3", "bitrates_kbps": [128, 192, 256, 320], "default_kbps": 192},
    "ogg": {"label": "Ogg Vorbis", "bitrates_kbps": [128, 160, 192, 256], "default_kbps": 160},
    "m4a": {"label": "M4A (AAC)", "bitrates_kbps": [128, 192, 256], "default_kbps": 192},
}
"""Download formats for protected audio (written by :func:`harmonycloak.io.audio.save_audio`)."""

_MODES = ("blackbox", "whitebox")
_KINDS = ("audio", "midi")


def is_loopback(host: str) -> bool:
    """True for addresses only this computer can reach (127.0.0.0/8, ::1, ``localhost``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How the web app protects files and what it accepts.

    ``mode``: ``whitebox`` or ``blackbox`` (see :data:`DEFAULT_PROTECT_MODE`).
    ``model_dirs``: checkpoint folder per kind of file (``"audio"``, ``"midi"``); the
    target is the one the checkpoint holds. ``corpus_dirs``: without a checkpoint, the
    folder a white-box target is trained on once (None: the pipeline's default).
    ``max_upload_mb``: largest accepted upload, in MB (10^6 bytes). ``engine_override``: an
    :class:`~harmonycloak.config.EngineConfig` that replaces every preset's engine (tests
    use a tiny one). ``watermark_issuer_id``: the 16-bit issuer part of every watermark
    payload (the 32-bit track part is a per-file counter). ``measure_visqol``: also score
    the protected audio with ViSQOL when ``visqol-python`` is installed (first
    ``visqol_excerpt_s`` seconds). ``start_worker``: run jobs in the background thread
    (tests that drive the queue by hand turn it off).
    """

    host: str = LOOPBACK_HOST
    port: int = DEFAULT_PORT
    mode: str = DEFAULT_PROTECT_MODE
    model_dirs: dict[str, str] = field(default_factory=dict)
    corpus_dirs: dict[str, str] = field(default_factory=dict)
    max_upload_mb: float = 200.0
    device: str = "auto"
    seed: int = 0
    engine_override: Any = None
    watermark_issuer_id: int = 1
    measure_visqol: bool = True
    visqol_excerpt_s: float = 10.0
    start_worker: bool = True

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InputError(f"--mode {self.mode}: use one of {', '.join(_MODES)}")
        if not (isinstance(self.max_upload_mb, (int, float)) and math.isfinite(self.max_upload_mb)
                and self.max_upload_mb > 0):
            raise InputError(f"--max-upload-mb {self.max_upload_mb!r}: give a positive number of MB, "
                             "e.g. 200")
        if not 1 <= int(self.port) <= 65535:
            raise InputError(f"--port {self.port}: give a port number between 1 and 65535, e.g. "
                             f"{DEFAULT_PORT}")
        if not 0 <= int(self.watermark_issuer_id) <= 0xFFFF:
            raise InputError(f"watermark issuer id {self.watermark_issuer_id}: must fit 16 bits "
                             "(0-65535)")
        for kind in (*self.model_dirs, *self.corpus_dirs):
            if kind not in _KINDS:
                raise InputError(f"model or corpus for {kind!r}: use 'audio' or 'midi'")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)
