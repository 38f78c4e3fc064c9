"""Numba-compiled CPU core: expected rates, NLL, analytic gradient and Hessian, bounded Newton fit.

The kernels live in :mod:`nextstat.engine.compiled`, one job per module, in this order of
dependence: ``codes`` and ``externals`` (SciPy's BLAS/LAPACK/gammaln), ``rates``, ``likelihood``,
``linalg``, ``hessian``, ``newton``, ``hesse``, ``profiled``, ``refit`` (the ranking's refits) and ``calls`` (the entry points on packed
buffers); the model arrays' layout and packing are :mod:`nextstat.engine.layout`. This module
gathers their names for the Python layers.

All kernels take the flat model arrays built once by :class:`nextstat.model.Model` (a tuple ``A``
of the rate arrays and a tuple ``AUX`` of the constraint arrays), never Python objects, so they
compile once per process type signature and are cached on disk (``cache=True``).

Layout of ``A`` and ``AUX``: :mod:`nextstat.engine.layout` (the only code that knows the offsets).

The likelihood is pyhf's (arXiv:1007.1727 eq. 5; pyhf ``Model.logpdf``): Poisson terms with
``xlogy(n, nu) - nu - lgamma(n + 1)`` for the main bins, Gaussian constraints
``N(a | theta, sigma)`` and Poisson constraints ``Pois(a | tau * gamma)`` for the auxiliary data.
"""

# ruff: noqa: F401 (a gathering of names)
from __future__ import annotations

from nextstat.engine.compiled.codes import (AUX_GAUSS, AUX_POISSON, FIT_CONVERGED, FIT_LINESEARCH,
    FIT_MAXITER, FIT_NONFINITE, FIT_NONFINITE_RESULT, HS_CODE0, HS_CODE2, HS_CODE4P, MODE_BLOCKS, MODE_HESS2,
    MODE_JAC, MODE_RATES, SC_CODE1, SC_CODE4, SC_LINEAR, _EXACT_EDM, _SMALL_DENSE, _SMALL_GRAM, _SQRT2,
    _SQRT2PI)
from nextstat.engine.compiled.externals import (_after, _dpotrf, _dpotri, _dsyrk, _gammaln, _lapack_spd,
    _potrf, _potri, _syrk_lower)
from nextstat.engine.compiled.rates import (_block_sizes, _excl1, _excl2, _point_buffers, _rates_jac,
    _sym_add, expected_blocks, expected_main, histo_coeffs, model_pass, pass_scratch, scalar_factor)
from nextstat.engine.compiled.likelihood import (_constraint_terms, _eval, _expected_data, _grad_parts,
    _poisson_nll, _pyhf_nll, constraint_dev, constraint_nll, dev_term, nll, nll_dev, nll_grad)
from nextstat.engine.compiled.linalg import (_chol, _chol_inplace, _chol_solve, _gn_dense, _gn_dense_into,
    _gn_direction, _gn_solve, _gram_into, _gram_lower, _lower_solve, _mask_lower, _row_residual, _spd_inverse,
    _spd_inverse_small, _upper_solve, submatrix)
from nextstat.engine.compiled.hessian import (_exact_factor, _factor_inplace, _hess_lower, _hessian,
    nll_grad_hess)
from nextstat.engine.compiled.newton import (_final_status, _newton_ws, _workspace, newton_fit)
from nextstat.engine.compiled.hesse import (_hesse_degenerate, hesse_cov)
from nextstat.engine.compiled.profiled import (_conditional, profile_start)
from nextstat.engine.compiled.rates import _rates_jac as rates_jacobian  # (nu (B,), d nu / d theta (B, P))
from nextstat.engine.compiled.refit import refit_batch
from nextstat.engine.layout import (flat_layout, model_arrays, pack, unpack, with_nominal)
from nextstat.engine.compiled.calls import (asymptotic_fits, expected_data, fit_dev, fit_dev_conditional,
    fit_with_errors)
