"""Run the watermark's small matrix products on one BLAS thread.

The products here are tiny (a few million multiply-adds); OpenBLAS' thread hand-offs cost
more than they save, and on a busy machine its spinning worker threads made embedding
and detection 3-6 times slower (measured on 2 shared cores). ``threadpoolctl`` limits
the BLAS pool for the duration of one call only; without it this is a no-op.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

_controller = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: slower on busy machines, same results
        yield
        return
    if _controller is None:
        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield
