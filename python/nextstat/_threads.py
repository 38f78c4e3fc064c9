"""CPU count and BLAS thread control shared by the threaded fitters (rankings, toys)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

_BLAS_CONTROLLER: list[Any] = []


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold BLAS to one thread: OpenBLAS threads oversubscribe the cores when the fits already
    run in threads (they made one Hesse step of a 249-parameter model seconds slow on a loaded
    machine, and toy fits up to 20x slower). The controller (a scan of the loaded libraries,
    ~10 ms) is made once."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    if not _BLAS_CONTROLLER:
        _BLAS_CONTROLLER.append(ThreadpoolController())
    with _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas"):
        yield
