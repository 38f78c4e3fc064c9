"""The compiled core's linear algebra against exact maths (NumPy's dense solves and inverses), and
its large-model paths (bin-space Gauss-Newton, BLAS Gram, LAPACK factorisation with masked
parameters) end to end against pyhf 0.7.6 on a generated model big enough to take them."""

from __future__ import annotations

import numpy as np
import pytest

import nextstat
from conftest import all_modifiers_workspace, pyhf_model_and_data
from nextstat.engine import numba_core as core
from nextstat.infer.fit import hesse


@pytest.mark.parametrize("ridge", [0.0, 1e-3])
@pytest.mark.parametrize("n_unconstrained", [0, 1, 3])
def test_bin_space_gauss_newton_solve(ridge, n_unconstrained):
    """(diag(D) + U^T U + ridge I) x = rhs via Woodbury and the bin-space Schur complement."""
    rng = np.random.default_rng(n_unconstrained)
    m, B = 40, 9
    Ut = rng.normal(size=(m, B)) * (rng.random((m, B)) < 0.4)  # sparse rows, as per-bin parameters
    Ut[:n_unconstrained] = rng.normal(size=(n_unconstrained, B))  # unconstrained: dense rows
    D = rng.uniform(0.5, 2.0, m)
    D[:n_unconstrained] = 0.0
    rhs = rng.normal(size=m)
    ok, x = core._gn_solve(np.ascontiguousarray(Ut), D, rhs, ridge)
    assert ok
    expected = np.linalg.solve(np.diag(D + ridge) + Ut @ Ut.T, rhs)
    np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-12)


def test_bin_space_solve_reports_singular_schur_block():
    """Two unconstrained parameters with the same bin response: the system is singular."""
    Ut = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, 0.0]])
    ok, _ = core._gn_solve(Ut, np.array([0.0, 0.0, 1.0]), np.ones(3), 0.0)
    assert not ok


@pytest.mark.parametrize("n", [1, 3, 24, 25, 60])  # loops up to 24, LAPACK above
@pytest.mark.parametrize("factored", [False, True])
def test_spd_inverse(n, factored):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, n))
    M = X @ X.T + n * np.eye(n)
    lower = np.linalg.cholesky(M) if factored else np.tril(M)
    a = np.ascontiguousarray(lower + np.triu(rng.normal(size=(n, n)), 1))  # upper: only scratch
    assert core._spd_inverse(a, factored)
    np.testing.assert_allclose(a, np.linalg.inv(M), rtol=1e-9, atol=1e-13)


@pytest.fixture(scope="module")
def big_ws():
    """43 parameters, 18 bins, 8 of them unconstrained: more parameters than bins (bin-space
    Gauss-Newton), bins x params^2 above the loop Gram's limit (BLAS dsyrk), more than 24
    parameters (LAPACK Cholesky and inverse)."""
    return all_modifiers_workspace(seed=3, n_sr=12, n_cr=6)


def test_big_model_takes_the_large_paths(big_ws):
    m = nextstat.from_pyhf(big_ws)
    B = m.arrays[18]
    assert m.n_params == 43 and B == 18
    assert B * m.n_params ** 2 > core._SMALL_GRAM and m.n_params > core._SMALL_DENSE


def test_big_model_fit_matches_pyhf(big_ws):
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    try:
        pm, data = pyhf_model_and_data(big_ws)
        bestfit, twice_nll = pyhf.infer.mle.fit(data, pm, return_fitted_val=True)
    finally:
        pyhf.set_backend("numpy")
    r = nextstat.fit(nextstat.from_pyhf(big_ws))
    assert r.converged, r.message
    assert r.nll <= twice_nll / 2 + 1e-6
    assert r.nll == pytest.approx(twice_nll / 2, rel=1e-8)
    np.testing.assert_allclose(r.bestfit, bestfit, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("fix", [None, "lumi", "bkg2_shape[3]"])
def test_big_model_hesse_is_inverse_hessian(big_ws, fix):
    """Covariance = inverse of the Hessian (central differences of the analytic gradient) over
    the free parameters, zero rows and columns for fixed ones (masked in the factorisation)."""
    m = nextstat.from_pyhf(big_ws)
    fixed = m.fixed_params.copy()
    if fix is not None:
        fixed[m.parameter_names.index(fix)] = True
    r = nextstat.fit(m, fixed_params=fixed)
    assert r.converged and r.posdef, r.message
    free = ~fixed
    h = 1e-5
    H = np.array([(m.grad_nll(r.bestfit + h * e) - m.grad_nll(r.bestfit - h * e)) / (2 * h)
                  for e in np.eye(m.n_params)])
    cov = np.linalg.inv(H[np.ix_(free, free)])
    np.testing.assert_allclose(r.covariance[np.ix_(free, free)], cov, rtol=1e-4, atol=1e-10)
    assert np.all(r.covariance[fixed] == 0) and np.all(r.covariance[:, fixed] == 0)
    np.testing.assert_allclose(r.covariance, r.covariance.T, rtol=0, atol=0)
    np.testing.assert_allclose(r.errors[free], np.sqrt(np.diag(cov)), rtol=1e-4)
    # the same covariance from the standalone Hesse (no factor from the fit)
    cov2, posdef = hesse(m, r.bestfit, m.data, fixed)
    assert posdef
    np.testing.assert_allclose(cov2, r.covariance, rtol=1e-10, atol=1e-14)
