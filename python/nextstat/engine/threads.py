"""The engine's one thread policy: CPUs usable by this process, SciPy's BLAS pinned for the
compiled kernels' small matrices, BLAS held to one thread while fits run in threads."""

from __future__ import annotations

import contextlib
import functools
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


@functools.cache
def pin_scipy_blas() -> None:
    """Compiled kernels call SciPy's BLAS/LAPACK on small matrices (at most a few hundred rows),
    where OpenBLAS threads only add synchronisation: on a loaded 2-core machine they made a
    249-parameter fit 100x slower. Pin SciPy's OpenBLAS (not NumPy's) to
    ``$NEXTSTAT_BLAS_THREADS`` threads (default 1), once per process (:class:`nextstat.model.Model`
    calls it when it compiles a model; nothing happens at import)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    n = int(os.environ.get("NEXTSTAT_BLAS_THREADS", "1"))
    from nextstat.engine.scipy_capi import load_scipy_blas

    load_scipy_blas()  # SciPy's OpenBLAS, so that it can be found (without importing scipy.linalg)

    scipy_blas = [lib for lib in ThreadpoolController().lib_controllers
                  if "scipy" in os.path.basename(lib.filepath) and "64_" not in os.path.basename(lib.filepath)]
    for lib in scipy_blas:
        lib.set_num_threads(n)
