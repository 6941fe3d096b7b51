"""harmonycloak: protect music from unauthorized generative-AI training.

The package is layered (see docs/architecture.md): ``cli -> pipeline -> perturb ->
psychoacoustics -> io -> clip``; nothing below imports from above.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
