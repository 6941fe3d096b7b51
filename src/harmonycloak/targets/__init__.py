"""Threat models: generative models and their training losses behind one ``Target`` protocol.

Each module wraps one model family (see :class:`harmonycloak.perturb.protocols.Target`):
the loss L_gen the perturbation minimizes, one outer training step, and generation for
evaluation.
"""

from __future__ import annotations

from .musegan import MuseGANConfig, MuseGANTarget
from .symbolic_lm import SymbolicLMConfig, SymbolicLMTarget

__all__ = ["MuseGANConfig", "MuseGANTarget", "SymbolicLMConfig", "SymbolicLMTarget"]
