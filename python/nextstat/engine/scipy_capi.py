"""Addresses of SciPy's Cython C-API functions (BLAS, LAPACK, gammaln) for the compiled kernels.

The kernels call SciPy's BLAS ``dsyrk`` and LAPACK ``dpotrf``/``dpotri`` through the C-API
modules ``scipy.linalg.cython_blas`` and ``scipy.linalg.cython_lapack``. Importing them the usual
way imports the package ``scipy.linalg`` first (0.1-0.3 s of a first fit or loss step on the
2-core machine), of which the kernels need nothing: the two modules are self-contained
extension modules that link SciPy's OpenBLAS. So, while ``scipy.linalg`` is not imported yet,
they are loaded from their files on their own, under their own names in ``sys.modules`` (a later
``import scipy.linalg`` finds them there). ``scipy.special.cython_special`` needs the rest of
``scipy.special`` and is imported as usual.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

__all__ = ["address", "load_scipy_blas"]

_STANDALONE = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")


def _load_standalone(name: str) -> None:
    """Load the extension module ``name`` (one of ``_STANDALONE``) from its file without its
    package, unless it or its package is imported already; where its file is not found, the
    usual import (by :func:`get_cython_function_address`) does it."""
    package, _, leaf = name.rpartition(".")
    if name in sys.modules or package in sys.modules:
        return
    scipy_spec = importlib.util.find_spec("scipy")
    if scipy_spec is None or scipy_spec.origin is None:  # pragma: no cover - SciPy is a dependency
        return
    folder = Path(scipy_spec.origin).parent.joinpath(*package.split(".")[1:])
    path = next((folder / (leaf + s) for s in importlib.machinery.EXTENSION_SUFFIXES
                 if (folder / (leaf + s)).is_file()), None)
    if path is None:  # pragma: no cover - another SciPy layout: the usual import
        return
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:  # pragma: no cover - leave nothing half-registered
        sys.modules.pop(name, None)
        raise


def address(module: str, function: str) -> int:
    """Address of the C function ``function`` exported by SciPy's Cython module ``module``
    (``"scipy.linalg.cython_lapack"``, ``"dpotrf"``); the same as Numba's
    :func:`~numba.extending.get_cython_function_address`, which it calls."""
    from numba.extending import get_cython_function_address

    if module in _STANDALONE:
        _load_standalone(module)
    return get_cython_function_address(module, function)


def load_scipy_blas() -> None:
    """Load SciPy's OpenBLAS (through ``scipy.linalg.cython_blas``) so that threadpoolctl finds it."""
    _load_standalone("scipy.linalg.cython_blas")
