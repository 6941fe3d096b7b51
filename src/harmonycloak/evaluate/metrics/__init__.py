"""Evaluation metrics. :mod:`.symbolic`: MuseGAN's EB, UPC, QN, DP and TD on piano rolls."""

from .symbolic import *  # noqa: F403  (the public names are exactly symbolic.__all__)
from .symbolic import __all__
