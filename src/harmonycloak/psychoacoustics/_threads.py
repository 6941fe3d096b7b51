"""Run the analysis on one PyTorch thread.

The masking and dominant-tone analyses are long sequences of small tensor operations.
PyTorch's intra-op threads help little there (0.5 s vs ~0.7 s for a 3-minute stereo track
on an idle 2-core machine), and when another process keeps a core busy their spinning
hand-offs make the same analysis 10x slower (10.5 s measured on 2 shared cores, against
1.1 s on one thread). One thread is the robust choice on a musician's busy laptop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Limit PyTorch to one intra-op thread for the duration of the block."""
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
