"""Options as nested frozen dataclasses; every report carries the whole config.

Protection presets (``light-v1``, ``standard-v1``, ``strong-v1``) join here with the
cloak engine; the foundation holds the analysis options and device choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

__all__ = ["AnalysisConfig", "Device", "resolve_device", "config_dict"]


class Device(str, Enum):
    """Where tensors live: ``auto`` picks CUDA when a GPU is present, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass(frozen=True)
class AnalysisConfig:
    """What ``analyze`` measures.

    ``window_ms`` is the dominant-tone window of the paper (section 4.1: 10 ms);
    ``temporal_masking`` adds pre/post-masking across frames to the global threshold.
    """

    window_ms: float = 10.0
    temporal_masking: bool = True


def resolve_device(device: Device | str) -> str:
    """The torch device name for a ``--device`` choice.

    Raises InputError when CUDA is asked for and no GPU is visible.
    """
    import torch

    from harmonycloak.errors import InputError

    choice = Device(device)
    if choice is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice is Device.cuda and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: no CUDA GPU is visible to PyTorch on this machine; "
            "use --device auto or --device cpu"
        )
    return choice.value


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (enums as their values)."""
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(config).items()}
