"""Fits, hypothesis tests, limits and scans against pyhf 0.7.6 computed live on small models."""

from __future__ import annotations

import numpy as np
import pytest

import nextstat
from conftest import pyhf_model_and_data


@pytest.fixture(scope="module")
def tight_pyhf():
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    yield pyhf
    pyhf.set_backend("numpy")


@pytest.fixture(params=["example", "all_mods"])
def case(request, example_ws, all_mods_ws):
    ws = example_ws if request.param == "example" else all_mods_ws
    return ws, nextstat.from_pyhf(ws)


def test_fit_matches_pyhf(tight_pyhf, case):
    ws, m = case
    pm, data = pyhf_model_and_data(ws)
    bestfit, twice_nll = tight_pyhf.infer.mle.fit(data, pm, return_fitted_val=True)
    r = nextstat.fit(m)
    assert r.converged, r.message
    assert r.nll <= twice_nll / 2 + 1e-6
    assert r.nll == pytest.approx(twice_nll / 2, rel=1e-8)
    np.testing.assert_allclose(r.bestfit, bestfit, atol=2e-4, rtol=2e-4)
    assert r.mu == r.bestfit[m.poi_index] and r.twice_nll == 2 * r.nll
    assert r.nll == pytest.approx(m.nll(r.bestfit), rel=1e-14)


def test_singular_start_converges(tight_pyhf):
    """One bin, two free parameters and a Poisson constraint with auxiliary count 0: the
    Hessian is singular at the start (Newton's step runs along its null space) and gamma's
    minimum is its lower bound. The fit must still reach pyhf's minimum (damped steps)."""
    ws = {"channels": [{"name": "c", "samples": [
        {"name": "signal", "data": [5.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "background", "data": [10.0], "modifiers": [{"name": "u", "type": "shapesys", "data": [3.5]}]}]}],
        "observations": [{"name": "c", "data": [18.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}
    m = nextstat.from_pyhf(ws)
    data = [18.0, 0.0]
    pm, _ = pyhf_model_and_data(ws)
    _, twice_nll = tight_pyhf.infer.mle.fit(data, pm, return_fitted_val=True)
    r = nextstat.fit(m, data=data, init_pars=[1.0, 0.86877444])
    assert r.converged, r.message
    assert r.nll <= twice_nll / 2 + 1e-6
    assert r.bestfit[1] == pytest.approx(1e-10) and r.mu == pytest.approx(3.6, rel=1e-6)


def test_hesse_errors_are_inverse_hessian(case):
    _, m = case
    r = nextstat.fit(m)
    free = ~r.fixed
    h = 1e-5
    H = np.array([(m.grad_nll(r.bestfit + h * e) - m.grad_nll(r.bestfit - h * e)) / (2 * h)
                  for e in np.eye(m.n_params)])
    cov = np.linalg.inv(H[np.ix_(free, free)])
    np.testing.assert_allclose(r.covariance[np.ix_(free, free)], cov, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(r.errors[free], np.sqrt(np.diag(cov)), rtol=1e-4)
    np.testing.assert_allclose(np.diag(r.correlation), 1.0)
    assert r.posdef


def test_fixed_params_init_and_failure_is_reported(case):
    _, m = case
    init = m.suggested_init()
    i = m.parameter_names.index("lumi")
    init[i] = 1.01
    fixed = m.fixed_params.copy()
    fixed[i] = True
    r = nextstat.fit(m, init_pars=init, fixed_params=fixed)
    assert r.bestfit[i] == 1.01 and r.errors[i] == 0.0 and r.converged
    short = nextstat.fit(m, maxiter=1)
    assert not short.converged and "iteration limit" in short.message
    with pytest.raises(ValueError, match="fixed_params"):
        nextstat.fit(m, fixed_params=[True])


def test_fit_to_asimov_recovers_generating_point(case):
    _, m = case
    p = m.suggested_init()
    p[m.poi_index] = 1.3
    r = nextstat.fit(m, data=m.expected_data(p))
    assert r.converged
    assert r.mu == pytest.approx(1.3, abs=1e-6)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_cls_matches_pyhf(tight_pyhf, case, mu):
    ws, m = case
    pm, data = pyhf_model_and_data(ws)
    cls, tails, band = tight_pyhf.infer.hypotest(mu, data, pm, return_tail_probs=True, return_expected_set=True)
    r = nextstat.hypotest(m, mu)
    assert r.test_stat == "qtilde" and r.calculator == "asymptotics"
    assert r.cls == pytest.approx(float(cls), rel=1e-5)
    assert r.clsb == pytest.approx(float(tails[0]), rel=1e-5)
    assert r.clb == pytest.approx(float(tails[1]), rel=1e-5)
    np.testing.assert_allclose(r.cls_expected, np.asarray(band, float), rtol=1e-5)


@pytest.mark.parametrize("test_stat, mu", [("qtilde", 1.3), ("q", 0.7), ("q0", 0.0)])
def test_first_test_in_one_call_equals_fits_one_by_one(case, test_stat, mu):
    """A calculator's first test runs its five fits in one compiled call; the same fits from
    the same starts one at a time (caches filled first) give identical numbers."""
    from nextstat.infer.hypotest import AsymptoticCalculator

    _, m = case
    fused = AsymptoticCalculator(m, test_stat=test_stat)
    q_fused = fused.teststatistics(mu)
    single = AsymptoticCalculator(m, test_stat=test_stat)
    single.observed_fits()
    single.asimov_fits()
    assert single.teststatistics(mu) == q_fused
    np.testing.assert_array_equal(single.asimov_data(), fused.asimov_data())
    for a, b in [(single.observed_fits(), fused.observed_fits()), (single.asimov_fits(), fused.asimov_fits())]:
        np.testing.assert_array_equal(a.free.bestfit, b.free.bestfit)
        assert (a.nll_free, a.mu_hat, a.free.nll, a.free.status, a.free.n_iter) == (
            b.nll_free, b.mu_hat, b.free.nll, b.free.status, b.free.n_iter)
    assert single.generating_fit().nll_dev == fused.generating_fit().nll_dev
    # later tests reuse the cached fits
    assert fused.teststatistics(mu) == q_fused


def test_q_statistic_matches_pyhf(tight_pyhf, example_ws):
    pm, data = pyhf_model_and_data(example_ws)
    bounds = pm.config.suggested_bounds()
    bounds[pm.config.poi_index] = (-5.0, 10.0)
    cls, band = tight_pyhf.infer.hypotest(1.2, data, pm, par_bounds=bounds, test_stat="q",
                                          return_expected_set=True)
    r = nextstat.hypotest(nextstat.from_pyhf(example_ws), 1.2, test_stat="q", par_bounds=bounds)
    assert r.cls == pytest.approx(float(cls), rel=1e-5)
    np.testing.assert_allclose(r.cls_expected, np.asarray(band, float), rtol=1e-5)
    with pytest.raises(ValueError, match="test_stat"):
        nextstat.hypotest(nextstat.from_pyhf(example_ws), 1.0, test_stat="tmu")


@pytest.mark.parametrize("name", ["tmu", "tmu_tilde", "qtilde", "q0"])
def test_test_statistic_values_match_pyhf(tight_pyhf, example_ws, name):
    from nextstat.infer import test_statistics as ts
    from nextstat.infer.fit import fixed_poi_fit

    pm, data = pyhf_model_and_data(example_ws)
    m = nextstat.from_pyhf(example_ws)
    mu = 0.0 if name == "q0" else 0.3
    bounds = pm.config.suggested_bounds()
    if name == "tmu":
        bounds[pm.config.poi_index] = (-5.0, 10.0)
    ref = getattr(tight_pyhf.infer.test_statistics, {"q0": "q0", "qtilde": "qmu_tilde"}.get(name, name))(
        mu, data, pm, pm.config.suggested_init(), bounds, pm.config.suggested_fixed())
    free = nextstat.fit(m, par_bounds=bounds, hesse=False)
    cond = fixed_poi_fit(m, mu, par_bounds=bounds)
    assert ts.statistic(name, mu, cond.nll, free.nll, free.mu) == pytest.approx(float(ref), abs=2e-6)


def test_discovery_matches_pyhf(tight_pyhf, case):
    ws, m = case
    pm, data = pyhf_model_and_data(ws)
    p0, tails, p0_exp = tight_pyhf.infer.hypotest(0.0, data, pm, test_stat="q0", return_tail_probs=True,
                                                  return_expected=True)
    r = nextstat.hypotest(m, 0.0)
    assert r.test_stat == "q0" and r.cls is None
    assert r.p0 == pytest.approx(float(p0), rel=1e-5)
    assert r.clb == pytest.approx(float(tails[0]), rel=1e-5)
    from scipy.stats import norm

    assert r.significance == pytest.approx(norm.isf(float(p0)), abs=1e-4)
    assert r.significance == pytest.approx(np.sqrt(r.q_obs), rel=1e-12)
    assert r.p0_expected == pytest.approx(float(p0_exp), rel=1e-5)


def test_upper_limit_matches_pyhf(tight_pyhf, example_ws):
    pm, data = pyhf_model_and_data(example_ws)
    m = nextstat.from_pyhf(example_ws)
    obs, exp = tight_pyhf.infer.intervals.upper_limits.upper_limit(data, pm, rtol=1e-5)
    r = nextstat.upper_limit(m)
    assert r.method == "root"
    assert r.observed == pytest.approx(float(obs), rel=5e-4)
    np.testing.assert_allclose(r.expected, np.asarray(exp, float), rtol=5e-4)
    # at the limit, CLs equals alpha
    assert nextstat.hypotest(m, r.observed).cls == pytest.approx(0.05, rel=1e-5)
    scan = np.linspace(0, 3, 16)
    obs_s, exp_s = tight_pyhf.infer.intervals.upper_limits.upper_limit(data, pm, scan=scan)
    rs = nextstat.upper_limit(m, scan=scan)
    assert rs.observed == pytest.approx(float(obs_s), rel=5e-4)
    np.testing.assert_allclose(rs.expected, np.asarray(exp_s, float), rtol=5e-4)
    assert rs.cls_expected.shape == (16, 5)


def test_upper_limit_rejects_bad_arguments(example_ws):
    m = nextstat.from_pyhf(example_ws)
    with pytest.raises(ValueError, match="alpha"):
        nextstat.upper_limit(m, alpha=1.5)
    with pytest.raises(ValueError, match="scan"):
        nextstat.upper_limit(m, scan=[1.0])


def test_profile_scan_matches_pyhf(tight_pyhf, example_ws):
    pm, data = pyhf_model_and_data(example_ws)
    m = nextstat.from_pyhf(example_ws)
    mus = np.array([0.0, 0.5, 1.0, 1.5])
    scan = nextstat.profile_scan(m, mus)
    _, free = tight_pyhf.infer.mle.fit(data, pm, return_fitted_val=True)
    for mu, val in zip(mus, scan.twice_delta_nll):
        _, cond = tight_pyhf.infer.mle.fixed_poi_fit(mu, data, pm, return_fitted_val=True)
        assert val == pytest.approx(float(cond - free), abs=1e-6)
    assert scan.converged.all() and scan.mu_hat == pytest.approx(nextstat.fit(m).mu, abs=1e-8)


def test_asimov_data_matches_pyhf(tight_pyhf, example_ws):
    from pyhf.infer.calculators import generate_asimov_data

    pm, data = pyhf_model_and_data(example_ws)
    m = nextstat.from_pyhf(example_ws)
    ref = generate_asimov_data(0.0, data, pm, pm.config.suggested_init(), pm.config.suggested_bounds(),
                               pm.config.suggested_fixed())
    # pyhf's conditional fit is converged to ~1e-5 in the example's flat 'jes' direction
    np.testing.assert_allclose(nextstat.asimov_data(m, 0.0), ref, rtol=1e-5, atol=1e-4)


def test_results_serialise(example_ws):
    import json

    m = nextstat.from_pyhf(example_ws)
    for res in (nextstat.fit(m), nextstat.hypotest(m, 1.0), nextstat.hypotest(m, 0.0),
                nextstat.upper_limit(m), nextstat.profile_scan(m, [0.0, 1.0])):
        d = json.loads(json.dumps(res.to_dict()))
        assert d and repr(res)
    assert "mu" in str(nextstat.fit(m))
