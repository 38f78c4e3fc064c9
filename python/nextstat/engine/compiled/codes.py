"""Integer codes shared by the compiled kernels and their Python callers: modifier kinds, interpolation
codes, constraint kinds, model-pass modes, fit statuses, and the size thresholds below which plain
loops beat a BLAS/LAPACK call.
"""

from __future__ import annotations

import math

SC_LINEAR, SC_CODE1, SC_CODE4 = 0, 1, 2
HS_CODE0, HS_CODE2, HS_CODE4P = 0, 2, 4
AUX_GAUSS, AUX_POISSON = 0, 1
MODE_RATES, MODE_JAC, MODE_HESS2, MODE_BLOCKS = 0, 1, 2, 3
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
FIT_CONVERGED, FIT_MAXITER, FIT_LINESEARCH, FIT_NONFINITE = 0, 1, 2, 3


# the fit met its convergence criteria on a non-finite NLL, parameter or error
FIT_NONFINITE_RESULT = 4


# below these sizes plain loops beat a BLAS/LAPACK call (whose fixed cost is ~1 us)
_SMALL_DENSE = 24  # Cholesky order, and dense Gauss-Newton solves
_SMALL_GRAM = 20000  # bins x params^2 for J^T diag(w) J
_EXACT_EDM = 1e-2  # EDM below which a slow Gauss-Newton fit switches to the exact Hessian
