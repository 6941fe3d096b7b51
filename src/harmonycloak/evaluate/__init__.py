"""Evaluation: metrics on piano rolls and audio (see :mod:`.metrics`)."""

from .metrics import *  # noqa: F403  (the public names are exactly metrics.__all__)
from .metrics import __all__
