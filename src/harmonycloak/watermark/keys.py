"""Watermark keys: one 256-bit secret, stored as versioned JSON with file mode 0600.

Everything keyed in the watermark (the chip signs, which time-frequency cell carries
which coded bit, the scrambling of the coded bits) is derived from the secret with
HMAC-SHA256 in counter mode (:meth:`WatermarkKey.stream`), a pseudo-random function:
without the secret these values are indistinguishable from fair coin flips, so nobody
without the key can tell where the mark is, read it or write a valid one. The marked file
itself carries no key material. ``key_id`` is a public fingerprint (a hash of the secret
under its own label) that lets a musician tell keys apart; it reveals nothing usable.

Key file (UTF-8 JSON, written atomically, mode 0600)::

    {"format": "harmonycloak-watermark-key", "version": 1, "scheme": "hcwm-1",
     "key_id": "3f2a9c0d1e4b5a67", "secret": "<64 hex digits>", "created": "2026-...Z"}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonycloak.errors import InputError
from harmonycloak.io.files import atomic_write

__all__ = [
    "KEY_FORMAT",
    "KEY_VERSION",
    "SCHEME",
    "WatermarkKey",
    "generate_key",
    "load_key",
    "save_key",
]

KEY_FORMAT = "harmonycloak-watermark-key"
KEY_VERSION = 1
SCHEME = "hcwm-1"
"""Name of the embedding scheme the key is for (layout, code and parameters of v1)."""

SECRET_BYTES = 32


@dataclass(frozen=True)
class WatermarkKey:
    """A watermark secret (32 bytes). Treat it like a password: keep the file private."""

    secret: bytes
    scheme: str = SCHEME

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise ValueError(f"a watermark key needs {SECRET_BYTES} secret bytes")

    def __repr__(self) -> str:  # never print the secret by accident
        return f"WatermarkKey(key_id={self.key_id!r}, scheme={self.scheme!r})"

    @property
    def key_id(self) -> str:
        """Public 64-bit fingerprint (16 hex digits) of the secret."""
        return hmac.new(self.secret, b"harmonycloak/key-id", hashlib.sha256).hexdigest()[:16]

    def stream(self, label: str, num_bytes: int) -> bytes:
        """``num_bytes`` pseudo-random bytes for ``label``: HMAC-SHA256(secret, label | i)."""
        out = bytearray()
        counter = 0
        tag = f"{self.scheme}/{label}".encode()
        while len(out) < num_bytes:
            out += hmac.new(self.secret, tag + counter.to_bytes(4, "big"), hashlib.sha256).digest()
            counter += 1
        return bytes(out[:num_bytes])

    def bits(self, label: str, count: int) -> np.ndarray:
        """``count`` keyed pseudo-random bits as uint8 0/1."""
        raw = np.frombuffer(self.stream(label, (count + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw)[:count]

    def permutation(self, label: str, count: int) -> np.ndarray:
        """A keyed pseudo-random permutation of ``range(count)`` (argsort of 64-bit PRF values).

        Ties between 64-bit values have probability ~count^2 / 2^65 and are broken by index.
        """
        values = np.frombuffer(self.stream(label, 8 * count), dtype=">u8")
        return np.argsort(values, kind="stable")


def generate_key() -> WatermarkKey:
    """A fresh key from the operating system's cryptographic random source."""
    return WatermarkKey(secrets.token_bytes(SECRET_BYTES))


def save_key(key: WatermarkKey, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write ``key`` as JSON to ``path`` atomically, readable by the owner only (mode 0600).

    Raises :class:`InputError` when ``path`` exists and ``force`` is false, or cannot be
    written. Returns the path.
    """
    document = {
        "format": KEY_FORMAT,
        "version": KEY_VERSION,
        "scheme": key.scheme,
        "key_id": key.key_id,
        "secret": key.secret.hex(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    text = json.dumps(document, indent=2) + "\n"

    def writer(tmp: Path) -> None:
        # Created 0600 from the first byte on: the secret is never readable by others.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)  # in case a umask or ACL widened it

    return atomic_write(path, writer, force=force)


def load_key(path: str | os.PathLike[str]) -> WatermarkKey:
    """Read a key file written by :func:`save_key`.

    Raises :class:`InputError` naming the file when it is missing, unreadable, not a
    harmonycloak watermark key, of an unknown version or scheme, or damaged (secret not
    64 hex digits, fingerprint does not match).
    """
    file = Path(path)
    hint = "create one with `harmonycloak watermark keygen -o KEY`"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{file}: no such key file; {hint}") from None
    except IsADirectoryError:
        raise InputError(f"{file}: is a folder, not a key file; {hint}") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"{file}: cannot read the key file ({reason})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(f"{file}: is not a watermark key (not JSON); {hint}") from None
    if not isinstance(document, dict) or document.get("format") != KEY_FORMAT:
        raise InputError(f"{file}: is not a harmonycloak watermark key; {hint}")
    if document.get("version") != KEY_VERSION:
        raise InputError(
            f"{file}: key format version {document.get('version')!r} is not supported "
            f"(this harmonycloak reads version {KEY_VERSION}); upgrade harmonycloak"
        )
    if document.get("scheme", SCHEME) != SCHEME:
        raise InputError(
            f"{file}: key is for watermark scheme {document.get('scheme')!r}, this "
            f"harmonycloak implements {SCHEME!r}; upgrade harmonycloak"
        )
    secret_hex = document.get("secret")
    try:
        secret = bytes.fromhex(secret_hex) if isinstance(secret_hex, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise InputError(
            f"{file}: the key's secret must be {2 * SECRET_BYTES} hex digits; the file is "
            "damaged, restore it from your backup"
        )
    key = WatermarkKey(secret)
    stated_id = document.get("key_id")
    if stated_id is not None and stated_id != key.key_id:
        raise InputError(
            f"{file}: key_id {stated_id!r} does not match the secret; the file is damaged, "
            "restore it from your backup"
        )
    return key
