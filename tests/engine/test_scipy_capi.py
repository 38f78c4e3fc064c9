"""What a first fit loads: SciPy's BLAS/LAPACK C-API modules without ``scipy.linalg``
(nextstat.engine.scipy_capi), and no Numba extension entry points for the engine's own kernels
(nextstat.engine.jit), while user code compiled afterwards still gets them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nextstat

FIRST_FIT = """import json, sys
import nextstat
m = nextstat.from_pyhf(nextstat.examples.simple_workspace())
r = nextstat.fit(m)
from numba.core import entrypoints
seen = {"linalg": "scipy.linalg" in sys.modules, "awkward": "awkward" in sys.modules,
        "extensions_loaded": entrypoints._already_initialized,
        "bestfit": [float.hex(float(x)) for x in r.bestfit],
        "errors": [float.hex(float(x)) for x in r.errors], "nll": float.hex(float(r.nll))}
from threadpoolctl import ThreadpoolController
import os
seen["scipy_blas_threads"] = sorted({c.num_threads for c in ThreadpoolController().lib_controllers
                                     if "scipy" in os.path.basename(c.filepath) and "64_" not in os.path.basename(c.filepath)})
import scipy.linalg
import scipy.linalg.cython_blas as cb
from numba.extending import get_cython_function_address
seen["same_module"] = cb is sys.modules["scipy.linalg.cython_blas"]
seen["scipy_linalg_works"] = bool(abs(scipy.linalg.det([[2.0, 1.0], [1.0, 3.0]]) - 5.0) < 1e-12)
seen["dsyrk"] = get_cython_function_address("scipy.linalg.cython_blas", "dsyrk") > 0
import numba
numba.njit(lambda x: x + 1)(1)  # user code: Numba's extensions load now
seen["extensions_after_user_compile"] = entrypoints._already_initialized
seen["awkward_after_user_compile"] = "awkward" in sys.modules
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def first_fit() -> dict:
    env = dict(os.environ, NEXTSTAT_QUIET_COMPILE="1", NEXTSTAT_FITTER="compiled")
    env.pop("NEXTSTAT_BLAS_THREADS", None)
    out = subprocess.run([sys.executable, "-c", FIRST_FIT], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_first_fit_does_not_import_scipy_linalg(first_fit):
    assert first_fit["linalg"] is False
    assert first_fit["scipy_blas_threads"] == [1]  # SciPy's OpenBLAS found and pinned all the same
    assert first_fit["same_module"] and first_fit["scipy_linalg_works"] and first_fit["dsyrk"]


def test_first_fit_numbers_equal_those_with_scipy_linalg_imported(first_fit):
    import scipy.linalg  # noqa: F401 - this process: the usual import path

    r = nextstat.fit(nextstat.from_pyhf(nextstat.examples.simple_workspace()), fitter="compiled")
    assert first_fit["bestfit"] == [float.hex(float(x)) for x in r.bestfit]
    assert first_fit["errors"] == [float.hex(float(x)) for x in r.errors]
    assert first_fit["nll"] == float.hex(float(r.nll))
    assert np.all(np.isfinite(r.errors))


def test_engine_kernels_leave_numba_extensions_to_user_code(first_fit):
    assert first_fit["extensions_loaded"] is False
    assert first_fit["extensions_after_user_compile"] is True
    if importlib.util.find_spec("awkward") is not None:  # awkward registers a Numba extension
        assert first_fit["awkward"] is False
        assert first_fit["awkward_after_user_compile"] is True
