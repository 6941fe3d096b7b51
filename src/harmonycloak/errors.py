"""The one exception tree of harmonycloak.

Every error a user can cause is a :class:`HarmonyCloakError` whose message names the
file or value at fault and says how to fix it. The command line turns these into one
plain line on stderr and the exit code below; anything else is a bug (exit 1).
"""

from __future__ import annotations

__all__ = ["HarmonyCloakError", "InputError", "CodecError", "ModelLoadError"]


class HarmonyCloakError(Exception):
    """Root of every error harmonycloak raises on purpose."""

    exit_code: int = 1


class InputError(HarmonyCloakError):
    """A bad file, a bad parameter, or an output that would overwrite something."""

    exit_code = 2


class CodecError(HarmonyCloakError):
    """An encoder or decoder refused the audio (unsupported rate, channels, corrupt stream)."""

    exit_code = 2


class ModelLoadError(HarmonyCloakError):
    """A model directory is missing, incomplete, or needs an optional extra."""

    exit_code = 2
