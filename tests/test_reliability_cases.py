"""Regression tests for the inputs in ``shared/reliability-cases/`` on which the engine once broke
its contract (a right, finite result, flagged where fits did not converge, or a clean
``WorkspaceError`` / ``ValueError`` / ``TypeError``), and for the classes they stand for.

Input handling (cases 05-07, 13-16, 28) is tested in ``test_input_handling.py`` and the CLI
(19-27) in ``test_cli.py``; this file covers fits, Hesse, hypothesis tests, limits, rankings,
toys and memory safety.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import nextstat
from nextstat.errors import ConvergenceWarning

REPO = Path(__file__).resolve().parents[1]
CASES = Path(os.environ.get("NEXTSTAT_RELIABILITY_CASES", REPO.parent / "shared" / "reliability-cases"))
needs_cases = pytest.mark.skipif(not CASES.is_dir(), reason=f"reliability cases not found at {CASES}")


@pytest.fixture(scope="module")
def example_model() -> nextstat.Model:
    return nextstat.from_pyhf(str(REPO / "python" / "nextstat" / "data" / "simple.json"))


def load_case(prefix: str) -> dict:
    (path,) = CASES.glob(f"{prefix}-*.json")
    return json.loads(path.read_text())


def case_model(prefix: str) -> nextstat.Model:
    c = load_case(prefix)
    return nextstat.from_pyhf(c["workspace"], patches=c.get("patches"), **c.get("kwargs", {}))


def pyhf_model(prefix: str):
    pyhf = pytest.importorskip("pyhf")
    c = load_case(prefix)
    ws = pyhf.Workspace({"version": "1.0.0", **c["workspace"]})
    model = ws.model(**c.get("kwargs", {}))
    return pyhf, model, ws.data(model)


def quiet(func, *args, **kwargs):
    """Call ``func`` and return (result, warnings issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    return out, caught


def assert_fit_contract(r: nextstat.FitResult, caught=()) -> None:
    if r.converged:
        assert np.isfinite(r.nll) and np.all(np.isfinite(r.bestfit)) and np.all(np.isfinite(r.errors)), r
    else:
        assert r.message != "converged"


def assert_hypotest_contract(h: nextstat.HypotestResult, caught) -> None:
    values = [h.q_obs, h.clsb, h.clb] + ([h.p0, h.significance] if h.test_stat == "q0" else
                                         [h.cls, *h.cls_expected])
    assert all(math.isfinite(v) for v in values), h
    assert all(0.0 <= v <= 1.0 for v in [h.clsb, h.clb] + ([h.p0] if h.test_stat == "q0" else [h.cls, *h.cls_expected]))
    assert h.converged == (not h.failed_fits)
    assert (not h.converged) == any(issubclass(w.category, ConvergenceWarning) for w in caught)


# ------------------------------------------------------------------------------------------ fits
@needs_cases
def test_00_ranking_with_an_unconstraining_shapesys_is_finite():
    from nextstat.interpret import rank_impact

    m = case_model("00")
    table, _ = quiet(rank_impact, m)
    for row in table:
        for k, v in row.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, row)
        assert row["converged"]


@needs_cases
def test_02_tiny_yield_fit_is_finite_or_flagged_or_refused():
    """A 1e-300 background with a staterror of 3: refused at build (the relative uncertainty
    squared overflows, the field named), or a finite / flagged fit; never converged with inf."""
    try:
        m = case_model("02")
    except nextstat.WorkspaceError as exc:
        assert "modifiers" in exc.path
        return
    r, caught = quiet(nextstat.fit, m)
    assert_fit_contract(r, caught)


@needs_cases
def test_11_signal_only_empty_bin_hesse_on_the_free_subspace():
    """One bin, signal only, 0 observed: mu_hat = 0 on its bound, where the NLL is linear
    (2.4067 mu): no curvature, so Hesse has no information. The fit converges, says so, and
    the error is 0 with posdef False (never a LinAlgError, NaN or 1e150)."""
    r = nextstat.fit(case_model("11"))
    assert r.converged and r.mu == 0.0 and r.nll == 0.0 and r.at_limit[0]
    assert not r.posdef and r.errors[0] == 0.0 and "no curvature in mu" in r.message


@needs_cases
@pytest.mark.slow
def test_12_two_thousand_bins_staterror_shapesys_fit():
    r = nextstat.fit(case_model("12"))
    assert r.converged and np.all(np.isfinite(r.errors)) and len(r.bestfit) == 4001


def test_empty_bins_give_finite_weights_and_pyhf_minimum():
    """A bin with 0 expected (signal only at mu = 0 and no background) and 0 observed next to
    ordinary bins: the Gauss-Newton weights there were 0/0 (NaN) and the fit stalled; it must
    reach pyhf's minimum."""
    pyhf = pytest.importorskip("pyhf")
    ws = {"version": "1.0.0",
          "channels": [{"name": "SR", "samples": [
              {"name": "signal", "data": [0.0, 3.0, 1.0, 2.0], "modifiers": [
                  {"name": "mu", "type": "normfactor", "data": None}]},
              {"name": "bkg", "data": [0.0, 10.0, 0.0, 5.0], "modifiers": [
                  {"name": "unc", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                  {"name": "stat", "type": "staterror", "data": [0.0, 1.0, 0.0, 1.0]}]}]}],
          "observations": [{"name": "SR", "data": [0.0, 14.0, 0.0, 6.0]}],
          "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]}
    r = nextstat.fit(nextstat.from_pyhf(ws))
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    pm = pyhf.Workspace(ws).model()
    _, twice = pyhf.infer.mle.fit(pyhf.Workspace(ws).data(pm), pm, return_fitted_val=True)
    assert r.converged and r.nll <= float(twice) / 2 + 1e-8
    assert np.all(np.isfinite(r.errors))


@needs_cases
def test_29_hypotest_equals_pyhf_and_fits_converge():
    """The fits of this model stalled on NaN weights of an empty bin and the hypotest returned
    an unflagged number 0.38 off; now the fits converge and CLs equals pyhf's."""
    pyhf, pm, data = pyhf_model("29")
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    cls, (clsb, clb), band = pyhf.infer.hypotest(1.0, data, pm, test_stat="qtilde", return_tail_probs=True,
                                                 return_expected_set=True)
    m = case_model("29")
    assert nextstat.fit(m).converged
    h, caught = quiet(nextstat.hypotest, m, 1.0)
    assert_hypotest_contract(h, caught)
    assert h.converged
    np.testing.assert_allclose([h.cls, h.clsb, h.clb], [cls, clsb, clb], rtol=1e-6)
    np.testing.assert_allclose(h.cls_expected, np.ravel(band), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- hypothesis tests
@needs_cases
def test_03_discovery_without_background_is_refused():
    """Signal only, 9 observed: the background-only hypothesis predicts 0 events where 9 were
    seen, so q0 is infinite: refused with a message, not Z0 = inf and p0 = NaN."""
    m = case_model("03")
    with pytest.raises(ValueError, match="not finite"):
        nextstat.hypotest(m, 0.0)
    h, caught = quiet(nextstat.hypotest, m, 1.0)
    assert_hypotest_contract(h, caught)


@needs_cases
def test_04_yields_near_overflow_are_refused_or_finite_and_flagged():
    """Every number scaled by 1e300 (NLL terms ~7e303): refused, or finite p-values in [0, 1]
    with the convergence of every fit stated (the fits lose precision there)."""
    try:
        m = case_model("04")
        h, caught = quiet(nextstat.hypotest, m, 1.0)
    except ValueError as exc:
        assert str(exc)
        return
    assert_hypotest_contract(h, caught)


@needs_cases
@pytest.mark.parametrize("prefix,mu", [("17", 0.0), ("18", 1.0)])
def test_underflowing_tail_probabilities_stay_finite(prefix, mu):
    h, caught = quiet(nextstat.hypotest, case_model(prefix), mu)
    assert_hypotest_contract(h, caught)


@needs_cases
def test_18_cls_from_log_tails_matches_the_asymptotic_formula():
    """1e15 background, 2 signal, 95 observed: q_obs = 2 (2 - 95 ln(1 + 2e-15)) ~ 4 exactly, the
    Asimov q_A ~ 0, CLsb and CLb underflow (t ~ 3e7); CLs from the log tails is
    Phi(-(t + sqrt(qA))) / Phi(-t) by the Mills ratio (~ exp(-q_obs / 2)), exact to 1e-9 against
    80-digit arithmetic (the difference of SciPy's two log_ndtr, each ~ -t^2/2 ~ -5e14, is 6%
    off there), and the expected band is 1."""
    mpmath = pytest.importorskip("mpmath")
    h, caught = quiet(nextstat.hypotest, case_model("18"), 1.0)
    assert_hypotest_contract(h, caught)
    assert h.q_obs == pytest.approx(4.0, rel=1e-9)
    sqa = math.sqrt(h.q_asimov)
    t = (h.q_obs - h.q_asimov) / (2 * sqa)
    assert t > 1e7
    with mpmath.workdps(80):
        T, S = mpmath.mpf(t), mpmath.mpf(sqa)
        exact = float(mpmath.ncdf(-(T + S)) / mpmath.ncdf(-T))
    assert h.cls == pytest.approx(exact, rel=1e-9)
    assert h.cls == pytest.approx(math.exp(-h.q_obs / 2), rel=1e-6)
    np.testing.assert_allclose(h.cls_expected, 1.0, atol=1e-6)


def test_18_observed_cls_loss_equals_the_hypotest_far_in_the_tails():
    """The differentiable observed CLs (``nextstat.torch.profiled_cls_loss``) of case 18, where
    CLb underflows (t ~ 3e7): the hypotest's CLs (~exp(-2)) with a finite gradient (it divided
    Phi(-(t + a)) by Phi(-t) = 0, and the NaN was refused as an overflow)."""
    torch = pytest.importorskip("torch")
    from nextstat.torch import ProfiledSession, profiled_cls_loss

    m = case_model("18")
    ref, caught = quiet(nextstat.hypotest, m, 1.0)
    session = ProfiledSession(m, device="cpu", data="observed")
    sig = next(smp for smp in load_case("18")["workspace"]["channels"][0]["samples"]
               if any(mod["type"] == "normfactor" and mod["name"] == m.poi_name for mod in smp["modifiers"]))
    h = torch.tensor(sig["data"], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nextstat.ConvergenceWarning)
        cls = profiled_cls_loss(h, session, 1.0)
    cls.backward()
    assert cls.item() == pytest.approx(ref.cls, rel=1e-9) and bool(torch.isfinite(h.grad).all())


def test_observed_cls_parts_are_exact_far_in_the_tails():
    """The torch layer's observed CLs and its partial derivatives in q and q_A (NumPy and torch)
    against 80-digit arithmetic where t = (q - q_A) / (2 sqrt(q_A)) runs from below the series'
    switch (30) to 1e6 (0 where CLs underflows): relative 1e-12 on CLs, 1e-10 on dCLs/dq, 1e-7
    on dCLs/dq_A (its two terms, each ~ q / q_A times the other, cancel: 2e-8 seen at t = 1e3).
    Torch's ndtr is 0 below -8.3, so the torch path gave 0 / 0 = NaN from t ~ 8 on."""
    mpmath = pytest.importorskip("mpmath")
    torch = pytest.importorskip("torch")
    from nextstat.torch.function import _observed_cls

    def exact(q, qa):
        s, a = mpmath.sqrt(q), mpmath.sqrt(qa)
        t = s - a if s <= a else (q - qa) / (2 * a)
        return mpmath.ncdf(-(t + a)) / mpmath.ncdf(-t)

    with mpmath.workdps(80):
        for qa in (0.25, 1.0, 4.0):
            for t in (5.0, 20.0, 29.9, 30.1, 40.0, 1e3, 1e6):
                q = qa + 2.0 * t * math.sqrt(qa)
                Q, QA = mpmath.mpf(q), mpmath.mpf(qa)
                want = [float(exact(Q, QA)), float(mpmath.diff(lambda x: exact(x, QA), Q)),
                        float(mpmath.diff(lambda x: exact(Q, x), QA))]
                for got in (_observed_cls(np.array([q]), np.array([qa]), 1e-12),
                            _observed_cls(torch.tensor([q], dtype=torch.float64),
                                          torch.tensor([qa], dtype=torch.float64), 1e-12)):
                    got = [float(g[0]) for g in got]
                    if want[0] == 0.0:
                        assert got[0] == 0.0
                        continue
                    for g, w, rtol in zip(got, want, (1e-12, 1e-10, 1e-7)):
                        assert g == pytest.approx(w, rel=rtol), (q, qa, got, want)


def test_log_tail_ratio_is_exact_far_in_the_tails():
    """log(CLsb / CLb) = log Phi(-(t + s)) - log Phi(-t) against 80-digit arithmetic for t from
    the series' switch (30) to 1e10: error below 1e-13 (absolute in the logarithm, i.e. relative
    in CLs), where the plain difference of the two logarithms loses ~t^2 eps."""
    mpmath = pytest.importorskip("mpmath")
    from nextstat.infer.hypotest import _log_phi, _log_tail_ratio

    with mpmath.workdps(80):
        for t in (30.0001, 31.0, 37.0, 40.0, 100.0, 1e3, 1e5, 3e7, 1e10):
            for s in (1e-8, 0.01, 0.5, 1.0, 3.0, 10.0):
                T, S = mpmath.mpf(t), mpmath.mpf(s)
                exact = float(mpmath.log(mpmath.ncdf(-(T + S))) - mpmath.log(mpmath.ncdf(-T)))
                got = _log_tail_ratio(_log_phi(-(t + s)), _log_phi(-t), t, s)
                assert abs(got - exact) <= 1e-13 * max(1.0, abs(exact)), (t, s, got, exact)


def test_asymptotic_pvalues_far_tail():
    from scipy.special import log_ndtr

    from nextstat.infer.hypotest import asymptotic_pvalues, expected_cls

    clsb, clb, cls = asymptotic_pvalues(45.0, 40.0, "q")
    assert clsb == 0.0 and 0.0 < clb
    assert cls == pytest.approx(math.exp(log_ndtr(-45.0) - log_ndtr(-5.0)), rel=1e-12)
    band = expected_cls(30.0)  # Phi(-(n + 30)) underflows below ~Phi(-38)
    ref = [math.exp(log_ndtr(-(n + 30.0)) - log_ndtr(-n)) for n in (2.0, 1.0, 0.0, -1.0, -2.0)]
    np.testing.assert_allclose(band, ref, rtol=1e-12)
    assert np.all(band > 0)


def test_asymptotic_pvalues_where_both_log_tails_overflow():
    """q ~ 1e300 (yields ~1e300): log Phi of both tails is -inf in float64; CLs is the limit of
    the tails' ratio, 0 with sensitivity (qA > 0) and 1 without, never NaN."""
    import mpmath

    from nextstat.infer.hypotest import _log_tail_ratio, asymptotic_pvalues

    for sqrt_q, sqrt_qa, ref in ((1e150, 1.0, 0.0), (1e150, 0.0, 1.0), (math.inf, 2.0, 0.0)):
        clsb, clb, cls = asymptotic_pvalues(sqrt_q, sqrt_qa, "qtilde")
        assert (clsb, clb, cls) == (0.0, 0.0, ref)
    # the expansion against mpmath where it is checkable (t = 1e3, s = 0.5: log Phi(-1000.5) - log Phi(-1000))
    with mpmath.workdps(50):
        exact = float(mpmath.log(mpmath.ncdf(-1000.5)) - mpmath.log(mpmath.ncdf(-1000)))
    assert _log_tail_ratio(-math.inf, -math.inf, 1000.0, 0.5) == pytest.approx(exact, rel=1e-6)


def test_q0_at_nonzero_mu_tests_mu_zero_as_pyhf(example_model):
    ref = nextstat.hypotest(example_model, 0.0)
    with pytest.warns(UserWarning, match="tests mu = 0"):
        h = nextstat.hypotest(example_model, 1.0, test_stat="q0")
    assert h.mu_test == 0.0 and h.significance == ref.significance


@pytest.mark.parametrize("mu", [float("nan"), float("inf"), -1.0, 11.0])
def test_tested_mu_outside_the_poi_bounds_is_refused(example_model, mu):
    with pytest.raises(ValueError, match="mu"):
        nextstat.hypotest(example_model, mu)


@pytest.mark.parametrize("func", ["fit", "hypotest", "upper_limit"])
def test_nan_init_pars_are_refused(example_model, func):
    init = example_model.suggested_init()
    init[1] = np.nan
    with pytest.raises(ValueError, match="init_pars"):
        getattr(nextstat, func)(example_model, init_pars=init)


def test_nonconverged_fits_are_flagged_and_warned(example_model):
    """A hypotest whose fits are cut short (maxiter) carries converged=False, names them and
    warns; asking for 1 iteration is honoured (no silent retry with more)."""
    from nextstat.infer.hypotest import AsymptoticCalculator

    calc = AsymptoticCalculator(example_model)
    calc._first_fits = lambda mu: False
    orig = calc._fit_once
    calc._fit_once = lambda data, init, mu, profiled: orig(data, init, mu, profiled)._replace(status=1)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        h = calc.hypotest(1.0)
    assert not h.converged and set(h.failed_fits) == {"free", "conditional", "generating", "asimov_free",
                                                       "asimov_conditional"}
    short = nextstat.fit(example_model, maxiter=1)
    assert not short.converged and short.n_iter == 1


def test_free_fit_stuck_above_a_conditional_fit_is_refitted(example_model):
    """The free fit can never lie above a conditional one; where it does (a local minimum), the
    calculator refits it from the conditional optimum and the statistic is not clipped noise."""
    from nextstat.infer.hypotest import AsymptoticCalculator, _Fits

    ref = nextstat.hypotest(example_model, 1.0)
    calc = AsymptoticCalculator(example_model)
    obs = calc.observed_fits()
    bad = obs.free._replace(nll_dev=obs.free.nll_dev + 5.0, bestfit=example_model.suggested_init())
    calc._obs = _Fits.of(bad, example_model.poi_index)
    h = calc.hypotest(1.0)
    assert h.cls == pytest.approx(ref.cls, rel=1e-8) and h.converged


# --------------------------------------------------------------------------------------- limits
@needs_cases
def test_01_limit_beyond_the_poi_bound_is_found_and_flagged():
    """Observed CLs stays above 0.05 up to the POI's bound 10: root mode widens the bound and
    reports the finite limit with ``beyond_bound``; a scan ending at 10 says it did not bracket
    the crossing (pyhf 0.7.6 silently returns 10). Expected limits inside the range equal
    pyhf's scan."""
    m = case_model("01")
    r, caught = quiet(nextstat.upper_limit, m)
    assert np.all(np.isfinite(np.r_[r.observed, r.expected])) and np.all(r.found)
    assert r.beyond_bound[0] and r.observed > 10 and r.poi_bound == 10
    assert any("above the POI's upper bound" in str(w.message) for w in caught)
    # the root is a root: CLs(limit) = alpha, with the fits of the widened range
    bounds = m.suggested_bounds()
    bounds[m.poi_index, 1] = 2 * r.observed
    h = nextstat.hypotest(m, r.observed, par_bounds=bounds)
    assert h.cls == pytest.approx(0.05, rel=1e-4)

    scan = np.linspace(0, 10, 101)
    with pytest.warns(UserWarning, match="above the largest"):
        s = nextstat.upper_limit(m, scan=scan)
    assert not s.found[0] and s.observed == 10.0 and s.found[1:4].all()
    pyhf, pm, data = pyhf_model("01")
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, pm, scan, level=0.05)
    np.testing.assert_allclose(s.expected[:4], np.ravel(exp)[:4], rtol=1e-5)


@needs_cases
def test_10_limit_with_underflowing_clb_is_finite():
    """0 observed on 6.8 background with the POI bounded below at -5: CLb underflows (the old
    ZeroDivisionError); the expected limits equal pyhf's scan."""
    m = case_model("10")
    r, caught = quiet(nextstat.upper_limit, m)
    assert np.all(np.isfinite(np.r_[r.observed, r.expected])) and np.all(r.found)
    scan = np.linspace(0, 3, 201)
    s, _ = quiet(nextstat.upper_limit, m, scan=scan)
    pyhf, pm, data = pyhf_model("10")
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, pm, scan, level=0.05)
    np.testing.assert_allclose(s.expected, np.ravel(exp), rtol=1e-5)
    np.testing.assert_allclose(r.expected, s.expected, rtol=2e-3)


def test_limit_that_no_range_brackets_is_flagged_not_nan():
    """A signal that does not change the expected rates (0 yield): CLs = 1 everywhere; the
    limit cannot be found in any range: reported as the end tested with found=False, never NaN."""
    ws = {"channels": [{"name": "SR", "samples": [
              {"name": "signal", "data": [0.0, 0.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
              {"name": "bkg", "data": [10.0, 5.0], "modifiers": []}]}],
          "observations": [{"name": "SR", "data": [10.0, 5.0]}],
          "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]}
    m = nextstat.from_pyhf(ws)
    r, caught = quiet(nextstat.upper_limit, m)
    assert not r.found.any() and np.all(np.isfinite(np.r_[r.observed, r.expected]))
    assert r.observed == 10.0 * 2 ** nextstat.infer.limits.MAX_WIDENINGS
    assert "above the largest" in r.message and caught


# ----------------------------------------------------------------------------------------- toys
@needs_cases
@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["08", "09"])
def test_toys_on_degenerate_models_finite_or_refused(prefix):
    m = case_model(prefix)
    try:
        h, caught = quiet(nextstat.hypotest_toys, m, 1.0, n_toys=100, seed=0, progress=False)
    except ValueError as exc:
        assert str(exc)
        return
    vals = [h.cls, h.clsb, h.clb, *h.cls_expected]
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in vals)
    assert h.converged == (not h.failed_fits)


# ------------------------------------------------------------------------------- memory safety
_BIG = """
import math, sys, nextstat
N = int(sys.argv[1])
ws = {"channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [1.0] * N, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [50.0] * N, "modifiers": [{"name": "st", "type": "staterror", "data": [2.0] * N}]}]}],
      "observations": [{"name": "SR", "data": [52.0] * N}],
      "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]}
m = nextstat.from_pyhf(ws)
for _ in range(3):
    r = nextstat.fit(m)
    print(r.converged, float(r.bestfit[m.poi_index]), float(r.errors[m.poi_index]))
"""


@pytest.mark.parametrize("n_bins", [60, 2050])
def test_hessian_buffers_outlive_blas_calls_under_malloc_perturb(n_bins):
    """The Gram step passed the address of a local buffer to BLAS dsyrk after the buffer's last
    use, so Numba freed it first: with MALLOC_PERTURB_ the 60-bin mu error became 5e125 and
    2,050 bins (a 33.6 MB Jacobian, freed by munmap) crashed. By symmetry all gammas are 1 and
    mu = 2; the mu error is analytic: var = 1 / (N (1/52 - (50/52)^2 / (2500/52 + 1/0.04^2)))."""
    nextstat.fit(nextstat.from_pyhf(str(REPO / "python" / "nextstat" / "data" / "simple.json")))  # compile here
    env = {**os.environ, "MALLOC_PERTURB_": "165", "MALLOC_CHECK_": "3"}
    out = subprocess.run([sys.executable, "-c", _BIG, str(n_bins)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = 1.0 / math.sqrt(n_bins * (1 / 52 - (50 / 52) ** 2 / (2500 / 52 + 1 / 0.04 ** 2)))
    for line in out.stdout.split("\n")[:3]:
        conv, mu, err = line.split()
        assert conv == "True" and float(mu) == pytest.approx(2.0, abs=1e-4)
        assert float(err) == pytest.approx(expected, rel=1e-6)


@needs_cases
def test_99_case_file_under_malloc_perturb():
    m = case_model("99")
    r = nextstat.fit(m)
    env = {**os.environ, "MALLOC_PERTURB_": "165"}
    code = ("import json, sys, nextstat; c = json.load(open(sys.argv[1])); m = nextstat.from_pyhf(c['workspace']);"
            "r = nextstat.fit(m); print(float(r.errors[m.poi_index]), r.converged)")
    path = next(CASES.glob("99-*.json"))
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    err, conv = out.stdout.split()
    assert conv == "True" and float(err) == pytest.approx(r.errors[m.poi_index], rel=1e-12)
    assert float(err) == pytest.approx(0.9660916603861429, rel=1e-9)


@needs_cases
def test_05_code1_kink_fit_converges_at_the_kink_and_hypotest_equals_pyhf():
    """code1 normsys with hi and lo on the same side of 1: the NLL has a kink at alpha = 0 where
    the optimum sits; Newton zig-zagged across it until the iteration limit (fit and hypotest
    unconverged). The kink retry holds alpha at 0, checks both one-sided slopes and converges;
    the minimum is not above pyhf's (tight tolerance) and CLs equals pyhf's."""
    pyhf, pm, data = pyhf_model("05")
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    _, twice = pyhf.infer.mle.fit(data, pm, return_fitted_val=True)
    cls, (clsb, clb), band = pyhf.infer.hypotest(1.0, data, pm, test_stat="qtilde", return_tail_probs=True,
                                                 return_expected_set=True)
    m = case_model("05")
    r = nextstat.fit(m)
    assert r.converged and "kink of eff" in r.message and r.value("eff") == 0.0
    assert r.nll <= float(twice) / 2 + 1e-10 and np.all(np.isfinite(r.errors)) and r.error("mu") > 0
    h, caught = quiet(nextstat.hypotest, m, 1.0)
    assert_hypotest_contract(h, caught)
    assert h.converged
    np.testing.assert_allclose([h.cls, h.clsb, h.clb], [cls, clsb, clb], rtol=1e-6)
    np.testing.assert_allclose(h.cls_expected, np.ravel(band), rtol=1e-6)
