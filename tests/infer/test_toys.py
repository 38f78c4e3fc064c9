"""Pseudo-experiments: toy generation, batched toy fits and toy-based CLs.

pyhf 0.7.6's toy calculator fits every toy with SciPy, far too slow here at the toy counts a
sharp comparison needs; its results are precomputed by ``tests/reference/make_toy_reference.py``
(``pyhf_toys_reference.json``). Monte Carlo comparisons use ``Z_MAX`` standard errors, with
errors from the binomial counts of both sides.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import nextstat
from nextstat.errors import ConvergenceWarning
from conftest import all_modifiers_workspace
from nextstat.engine import numba_core as core
from nextstat.infer import test_statistics as ts
from nextstat.infer import toys
from nextstat.infer.toys import expected_band, fit_toys, hypotest_toys, sample_toys, toy_pvalues

REFERENCE = json.loads((Path(__file__).parents[1] / "reference" / "pyhf_toys_reference.json").read_text())
Z_MAX = 4.0


def simple_workspace(signal, bkg, bkg_unc, observed) -> dict:
    """``pyhf.simplemodels.uncorrelated_background`` with observations, as a workspace."""
    return {
        "channels": [{"name": "singlechannel", "samples": [
            {"name": "signal", "data": list(signal), "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": list(bkg), "modifiers": [
                {"name": "uncorr_bkguncrt", "type": "shapesys", "data": list(bkg_unc)}]}]}],
        "observations": [{"name": "singlechannel", "data": list(observed)}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


@pytest.fixture(scope="module")
def all_mods():
    model = nextstat.from_pyhf(all_modifiers_workspace())
    return model, nextstat.fit(model, hesse=False).bestfit


@pytest.fixture(scope="module")
def simple():
    return nextstat.from_pyhf(simple_workspace([5.0], [10.0], [3.5], [12.0]))


def _binom_sigma(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)  # floor: one toy's worth when p is 0 or 1


# ------------------------------------------------------------------------------ toy data


def test_reproducible_for_a_seed_whatever_threads_and_chunks(all_mods):
    model, pars = all_mods
    a = fit_toys(model, pars, n_toys=40, seed=5, progress=False, n_threads=1, chunk_size=7, return_data=True)
    b = fit_toys(model, pars, n_toys=40, seed=5, progress=False, n_threads=2, return_data=True)
    longer = fit_toys(model, pars, n_toys=300, seed=5, progress=False, return_data=True)
    other = fit_toys(model, pars, n_toys=40, seed=6, progress=False, return_data=True)
    for r in (b, longer):
        np.testing.assert_array_equal(r.toy_data[:40], a.toy_data)
        np.testing.assert_array_equal(r.bestfit[:40], a.bestfit)
        np.testing.assert_array_equal(r.nll[:40], a.nll)
        np.testing.assert_array_equal(r.converged[:40], a.converged)
        np.testing.assert_array_equal(r.n_iter[:40], a.n_iter)
    assert not np.any(np.all(other.toy_data == a.toy_data, axis=1))
    np.testing.assert_array_equal(sample_toys(model, pars, 40, seed=5), a.toy_data)
    assert (a.seed, a.device, a.n_toys, a.n_failed) == (5, "cpu", 40, 0)
    assert a.parameter_names == tuple(model.parameter_names)
    assert fit_toys(model, pars, n_toys=3, progress=False).toy_data is None


def test_toy_fits_equal_single_fits(all_mods):
    model, pars = all_mods
    res = fit_toys(model, pars, n_toys=24, seed=11, progress=False, return_data=True)
    assert res.converged.all()
    for i in range(0, 24, 3):
        same_start = nextstat.fit(model, data=res.toy_data[i], init_pars=pars, hesse=False)
        assert same_start.nll == res.nll[i]
        np.testing.assert_array_equal(same_start.bestfit, res.bestfit[i])
        assert same_start.n_iter == res.n_iter[i]
        default_start = nextstat.fit(model, data=res.toy_data[i], hesse=False)
        assert default_start.nll == pytest.approx(res.nll[i], rel=1e-8)
        np.testing.assert_allclose(default_start.bestfit, res.bestfit[i], atol=1e-4)
        assert res.nll[i] == pytest.approx(model.nll(res.bestfit[i], res.toy_data[i]), rel=1e-13)


def test_fit_given_datasets(all_mods):
    model, pars = all_mods
    data = sample_toys(model, pars, 5, seed=3)
    full = fit_toys(model, pars, data=data, progress=False)
    main_only = fit_toys(model, pars, data=data[:, :model.n_bins], progress=False, return_data=True)
    observed_aux = np.concatenate([data[:, :model.n_bins], np.tile(model.aux_data, (5, 1))], axis=1)
    np.testing.assert_array_equal(main_only.toy_data, observed_aux)
    assert main_only.nll[0] == nextstat.fit(model, data=observed_aux[0], init_pars=pars, hesse=False).nll
    assert full.nll[2] == nextstat.fit(model, data=data[2], init_pars=pars, hesse=False).nll
    with pytest.raises(ValueError, match="n_toys"):
        fit_toys(model, pars, data=data, n_toys=4, progress=False)
    with pytest.raises(ValueError, match=r"data: expected shape \(n, "):
        fit_toys(model, pars, data=data[:, :3], progress=False)


def test_toy_data_distribution(all_mods):
    """Main ~ Poisson(nu), Gaussian aux ~ Normal(theta, sigma), shapesys aux ~ Poisson(tau gamma),
    all at the generating parameters (pyhf ``make_pdf(pars).sample()``)."""
    model, pars = all_mods
    pars = pars.copy()
    names = model.parameter_names
    pars[names.index("jes")] = 0.7
    pars[names.index("staterror_SR[1]")] = 1.04
    pars[names.index("bkg2_shape[0]")] = 1.2
    n = 20000
    sample = sample_toys(model, pars, n, seed=1)
    mean_exp = model.expected_data(pars)
    par, kind, sigma, tau = model.aux_arrays
    gauss = np.concatenate([np.zeros(model.n_bins, bool), kind == core.AUX_GAUSS])
    var_exp = mean_exp.copy()  # Poisson: variance = mean
    var_exp[gauss] = np.concatenate([np.zeros(model.n_bins), sigma])[gauss] ** 2
    assert np.any(kind == core.AUX_POISSON) and np.any(kind == core.AUX_GAUSS)
    np.testing.assert_allclose(mean_exp[model.n_bins:][kind == core.AUX_GAUSS], pars[par[kind == core.AUX_GAUSS]])
    np.testing.assert_allclose(mean_exp[model.n_bins:][kind == core.AUX_POISSON],
                               (pars[par] * tau)[kind == core.AUX_POISSON])
    mean, var = sample.mean(0), sample.var(0, ddof=1)
    assert np.all(np.abs(mean - mean_exp) < 5 * np.sqrt(var_exp / n))
    # var(s^2) = 2 sigma^4 / (n - 1) (normal), about (lambda + 2 lambda^2) / n (Poisson)
    sd_var = np.where(gauss, np.sqrt(2.0 / n) * var_exp, np.sqrt((var_exp + 2 * var_exp**2) / n))
    assert np.all(np.abs(var - var_exp) < 5 * sd_var)
    # counts are integers; Gaussian aux data are not
    assert np.all(sample[:, ~gauss] == np.round(sample[:, ~gauss]))
    assert np.all(sample[:, :model.n_bins] >= 0)


def test_memory_grows_only_by_the_results(all_mods):
    """Pseudo-data are held a chunk at a time: the peak grows with n_toys by the per-toy results."""
    import tracemalloc

    model, pars = all_mods
    peaks = {}
    for n in (500, 2500):
        tracemalloc.start()
        fit_toys(model, pars, n_toys=n, seed=1, chunk_size=250, progress=False)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_toy_results = 8 * (model.n_params + 3)  # bestfit row, nll, n_iter, converged (<= 8 B)
    per_toy_data = 8 * (model.n_bins + model.n_aux)
    growth = peaks[2500] - peaks[500]
    assert growth < 2000 * (per_toy_results + 0.5 * per_toy_data), (growth, per_toy_results, per_toy_data)


def test_non_converged_toys_are_kept_and_counted(simple):
    with pytest.warns(ConvergenceWarning, match="toy fits did not converge"):
        res = fit_toys(simple, simple.suggested_init(), n_toys=300, seed=2, progress=False, maxiter=5)
    assert res.n_toys == 300 and 0 < res.n_failed < 300
    assert res.n_failed == np.count_nonzero(~res.converged)
    assert np.all(res.n_iter[~res.converged] == 5)
    assert np.all(np.isfinite(res.nll))
    assert repr(res).startswith(f"ToyFitResults(n_toys=300, n_failed={res.n_failed},")


def test_torch_fitter_matches_cpu_fits(all_mods):
    """The batched PyTorch fitter behind device="cuda", run on the CPU."""
    model, pars = all_mods
    res = fit_toys(model, pars, n_toys=12, seed=4, progress=False, return_data=True)
    fitter = toys._TorchFitter(model, model.suggested_bounds(), device="cpu", **toys._FIT_DEFAULTS)
    done = []
    theta, nll, conv, n_iter = fitter.fit(res.toy_data, np.tile(pars, (12, 1)), model.fixed_params, done.append)
    assert conv.all() and sum(done) == 12 and n_iter.dtype == np.int64
    np.testing.assert_allclose(nll, res.nll, rtol=1e-10)
    # both stop at EDM < 1e-10, which pins each parameter to ~1e-5 of its error (the CPU fit
    # may certify convergence with the Gauss-Newton EDM before a last exact step)
    np.testing.assert_allclose(theta, res.bestfit, atol=5e-5)


def test_background_chunks_same_data(all_mods):
    """Toy chunks made in a background thread are the same rows, in the same order."""
    model, pars = all_mods
    sampler = toys._ToySampler(model, pars, 3, toys._STREAM_FIT)
    plain = [(a, b, d.copy()) for a, b, d in toys._chunks(1000, 300, sampler.rows, False)]
    ahead = list(toys._chunks(1000, 300, toys._ToySampler(model, pars, 3, toys._STREAM_FIT).rows, True))
    assert [(a, b) for a, b, _ in ahead] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    for (_, _, x), (_, _, y) in zip(plain, ahead):
        np.testing.assert_array_equal(x, y)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_fits_same_toys(all_mods):  # pragma: no cover - no GPU in CI
    model, pars = all_mods
    cpu = fit_toys(model, pars, n_toys=200, seed=9, progress=False, return_data=True)
    # several chunks: the next chunk's toys are generated in the background while one is fitted
    gpu = fit_toys(model, pars, n_toys=200, seed=9, progress=False, return_data=True, device="cuda", chunk_size=64)
    np.testing.assert_array_equal(gpu.toy_data, cpu.toy_data)
    assert gpu.device.startswith("cuda") and np.array_equal(gpu.converged, cpu.converged)
    np.testing.assert_allclose(gpu.nll, cpu.nll, rtol=1e-9)


def test_devices_and_arguments(simple):
    pars = simple.suggested_init()
    assert fit_toys(simple, pars, n_toys=2, device="auto", progress=False).device in ("cpu", "cuda", "cuda:0")
    with pytest.raises(ValueError, match="device"):
        fit_toys(simple, pars, n_toys=2, device="tpu", progress=False)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            fit_toys(simple, pars, n_toys=2, seed=bad, progress=False)
    with pytest.raises(ValueError, match="n_toys"):
        fit_toys(simple, pars, n_toys=0, progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        fit_toys(simple, pars, n_toys=2, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match="n_threads"):
        fit_toys(simple, pars, n_toys=2, n_threads=0, progress=False)
    with pytest.raises(ValueError, match=r"pars: expected shape \(2,\)"):
        fit_toys(simple, [1.0], n_toys=2, progress=False)
    with pytest.raises(ValueError, match="test_stat"):
        hypotest_toys(simple, 1.0, test_stat="bogus", n_toys=2, progress=False)


def test_progress_bar(simple, capsys):
    fit_toys(simple, simple.suggested_init(), n_toys=20, progress=False)
    assert capsys.readouterr().err == ""
    fit_toys(simple, simple.suggested_init(), n_toys=20, progress=True)
    assert "Toy fits" in capsys.readouterr().err


# ------------------------------------------------------------------------------ hypothesis tests


def test_toy_pvalues_count_ties():
    clsb, clb = toy_pvalues([3.0, 0.0, 2.0, 1.0], [5.0, 1.0], [1.0, 4.0, 6.0])
    np.testing.assert_allclose(clsb, [0.75, 0.0, 0.0])
    np.testing.assert_allclose(clb, [1.0, 0.5, 0.0])


@pytest.mark.parametrize("test_stat, mu", [("qtilde", 1.5), ("q0", 0.0), ("tmu", 1.0)])
def test_toy_statistics_match_fit_by_fit(all_mods, test_stat, mu):
    """Twin check of the batched statistic: one nextstat.fit pair per toy, as pyhf does it."""
    model, pars = all_mods
    poi = model.poi_index
    bounds, fixed = model.suggested_bounds(), model.fixed_params
    sampler = toys._ToySampler(model, pars, 8, toys._STREAM_SB)
    with toys._fitter(model, bounds, "cpu", None, None, None) as fitter, toys._bar(1, False, "", "fit") as bar:
        q, ok = toys._toy_statistics(fitter, sampler, 16, 5, pars, fixed, poi, mu, test_stat, bar)
    assert ok.all()
    data = sampler.rows(0, 16)
    for i in range(16):
        free = nextstat.fit(model, data=data[i], hesse=False)
        cond = nextstat.fixed_poi_fit(model, mu, data=data[i])
        expected = ts.statistic(test_stat, mu, cond.nll, free.nll, free.mu)
        assert q[i] == pytest.approx(expected, abs=1e-7)


def _mc_close(ours: float, ours_n: int, ref: float, ref_n: int) -> bool:
    sigma = math.hypot(_binom_sigma(ours, ours_n), _binom_sigma(ref, ref_n))
    return abs(ours - ref) <= Z_MAX * sigma


def _cls_sigma(clsb: float, n_sb: int, clb: float, n_b: int) -> float:
    return clsb / clb * math.hypot(_binom_sigma(clsb, n_sb) / max(clsb, 1e-12), _binom_sigma(clb, n_b) / clb)


@pytest.mark.parametrize("key", ["simple_qtilde", "twobin_qtilde", "twobin_q0"])
def test_cls_matches_pyhf_toy_calculator(key):
    ref = REFERENCE[key]
    model = nextstat.from_pyhf(ref["workspace"])
    n, n_ref = 4000, ref["ntoys"]
    res = hypotest_toys(model, ref["mu"], test_stat=ref["test_stat"], n_toys=n, seed=3, progress=False)
    assert res.calculator == "toybased" and res.n_toys == (n, n) and res.n_failed_toys == 0
    assert res.q_obs == pytest.approx(ref["q_obs"], rel=1e-5, abs=1e-7)
    assert _mc_close(res.clsb, n, ref["clsb"], n_ref), (res.clsb, ref["clsb"])
    assert _mc_close(res.clb, n, ref["clb"], n_ref), (res.clb, ref["clb"])
    assert res.clsb_error == pytest.approx(math.sqrt(res.clsb * (1 - res.clsb) / n))
    assert res.clb_error == pytest.approx(math.sqrt(res.clb * (1 - res.clb) / n))
    if ref["test_stat"] == "q0":
        assert res.cls is None and res.cls_expected is None and res.p0 == res.clsb
        assert res.significance == pytest.approx(norm.isf(res.p0))
        assert _mc_close(res.p0_expected, n, ref["clsb_expected"][2], n_ref), (res.p0_expected, ref["clsb_expected"])
        assert res.significance_expected == pytest.approx(norm.isf(res.p0_expected))
        return
    sigma = math.hypot(res.cls_error, _cls_sigma(ref["clsb"], n_ref, ref["clb"], n_ref))
    assert abs(res.cls - ref["cls"]) <= Z_MAX * sigma, (res.cls, ref["cls"], sigma)
    assert res.cls_error == pytest.approx(_cls_sigma(res.clsb, n, res.clb, n), rel=1e-9)
    assert res.cls_expected.shape == (5,) and np.all(np.diff(res.cls_expected) >= 0)
    if key == "twobin_qtilde":
        np.testing.assert_allclose(res.cls_expected, ref["cls_expected"], atol=0.05)
    # simple_qtilde's band is not compared: with one bin the statistic takes few values and 15%
    # of the background-only toys have q = 0 (CLs = 1), so the +1 sigma percentile jumps between
    # 0.58 and 1 with the Monte Carlo noise. The band's convention is tested exactly below.


def test_cls_matches_live_pyhf_toys(pyhf_numpy, monkeypatch):
    """A small live run of ``pyhf.infer.hypotest(calctype="toybased")`` (pyhf fits ~60 toys/s).

    pyhf 0.7.6 computes the expected set with ``np.percentile(..., interpolation=...)``, a
    keyword NumPy 2 removed (renamed ``method``): every toy-based pyhf hypotest raises TypeError
    there, so the keyword is routed to ``method`` for this test."""
    if int(np.__version__.split(".")[0]) >= 2:
        def percentile(self, tensor_in, q, axis=None, interpolation="linear"):
            return np.percentile(tensor_in, q, axis=axis, method=interpolation)

        monkeypatch.setattr(pyhf_numpy.tensor.numpy_backend, "percentile", percentile)
    ws = simple_workspace([5.0], [10.0], [3.5], [12.0])
    workspace = pyhf_numpy.Workspace(ws)
    pmodel = workspace.model()
    state = np.random.get_state()
    np.random.seed(17)
    try:
        cls, (clsb, clb), band = pyhf_numpy.infer.hypotest(
            1.0, workspace.data(pmodel), pmodel, calctype="toybased", ntoys=150, return_tail_probs=True,
            return_expected_set=True, track_progress=False)
    finally:
        np.random.set_state(state)
    res = hypotest_toys(nextstat.from_pyhf(ws), 1.0, n_toys=4000, seed=17, progress=False)
    assert _mc_close(res.clsb, 4000, float(clsb), 150) and _mc_close(res.clb, 4000, float(clb), 150)
    sigma = math.hypot(res.cls_error, _cls_sigma(float(clsb), 150, float(clb), 150))
    assert abs(res.cls - float(cls)) <= Z_MAX * sigma
    assert np.shape(band) == (5,) and float(band[4]) == res.cls_expected[4] == 1.0


@pytest.mark.parametrize("key", ["simple_qtilde", "twobin_qtilde", "twobin_q0"])
def test_pvalue_conventions_reproduce_pyhf_exactly(key):
    """pyhf's own sampled distributions through our p-value and band code give pyhf's numbers
    (``>=`` with ties, CLb as the background-only tail, percentile band)."""
    ref = REFERENCE[key]
    q_sb, q_b = np.asarray(ref["q_sb"]), np.asarray(ref["q_b"])
    clsb, clb = toy_pvalues(q_sb, q_b, ref["q_obs"])
    assert (clsb, clb) == (ref["clsb"], ref["clb"])
    clsb_band, _, cls_band = expected_band(q_sb, q_b)
    np.testing.assert_allclose(clsb_band, ref["clsb_expected"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cls_band, ref["cls_expected"], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("key", ["simple_qtilde", "twobin_qtilde", "twobin_q0"])
def test_toy_distributions_match_pyhf(key):
    """Tail fractions of both sampled test-statistic distributions at pyhf's quantiles."""
    ref = REFERENCE[key]
    model = nextstat.from_pyhf(ref["workspace"])
    n, n_ref = 3000, ref["ntoys"]
    d = toys._toy_distributions(model, ref["mu"], model.data, n, n, 12, "cpu", ref["test_stat"],
                                model.suggested_init(), model.fixed_params, model.suggested_bounds(),
                                progress=False, chunk_size=None, n_threads=None, maxiter=None, tol=None)
    assert d.ok_sb.all() and d.ok_b.all() and d.observed_converged
    for ours, theirs in ((d.q_sb, np.asarray(ref["q_sb"])), (d.q_b, np.asarray(ref["q_b"]))):
        # "zero": pyhf's SciPy fits leave q ~ 1e-9 .. 1e-6 where the POI ends on its bound
        assert _mc_close(np.mean(ours < 1e-6), n, np.mean(theirs < 1e-6), n_ref)
        for level in np.quantile(theirs[theirs > 1e-3], [0.1, 0.25, 0.5, 0.75, 0.9, 0.97]):
            assert _mc_close(np.mean(ours >= level), n, np.mean(theirs >= level), n_ref), level


def test_cls_matches_asymptotics_at_high_counts():
    model = nextstat.from_pyhf(simple_workspace([20.0, 15.0], [400.0, 300.0], [10.0, 8.0], [410.0, 295.0]))
    mu = 1.5
    res = hypotest_toys(model, mu, n_toys=3000, seed=21, progress=False)
    asy = nextstat.hypotest(model, mu)
    assert res.q_obs == pytest.approx(asy.q_obs, rel=1e-9)
    assert res.mu_hat == pytest.approx(asy.mu_hat, abs=1e-9)
    # asymptotic formulae hold to about 0.01 here; the rest is Monte Carlo error
    assert abs(res.cls - asy.cls) <= Z_MAX * res.cls_error + 0.01, (res.cls, asy.cls, res.cls_error)
    assert abs(res.clsb - asy.clsb) <= Z_MAX * res.clsb_error + 0.01
    assert abs(res.clb - asy.clb) <= Z_MAX * res.clb_error + 0.01
    np.testing.assert_allclose(res.cls_expected[1:4], asy.cls_expected[1:4], atol=0.03)


def test_failed_toys_are_excluded_and_counted(simple):
    with pytest.warns(RuntimeWarning, match="excluded from the p-values"):
        res = hypotest_toys(simple, 1.0, n_toys=300, seed=4, progress=False, maxiter=5)
    assert res.n_failed_toys > 0
    assert sum(res.n_toys) + res.n_failed_toys == 600
    with pytest.raises(ValueError, match="every"):
        hypotest_toys(simple, 1.0, n_toys=20, progress=False, maxiter=1)


def test_hypotest_forwards_to_toys_and_options(simple):
    a = nextstat.hypotest(simple, 1.0, calctype="toybased", n_toys_sb=300, n_toys_b=200, seed=8, progress=False)
    b = hypotest_toys(simple, 1.0, n_toys_sb=300, n_toys_b=200, seed=8, progress=False, n_threads=1,
                      chunk_size=50, return_expected=False)
    assert a.calculator == "toybased" and a.n_toys == (300, 200)
    assert (a.cls, a.clsb, a.clb, a.q_obs) == (b.cls, b.clsb, b.clb, b.q_obs)
    assert b.cls_expected is None and a.cls_expected.shape == (5,)
    assert "calculator='toybased'" in repr(a)


@pytest.mark.parametrize("device, match", [("tpu", "device: expected"), ("mps", "device: expected"),
                                           (3, "device: expected"), ("cuda:x", "device: expected")])
def test_unknown_devices_are_refused_by_name(simple, device, match):
    with pytest.raises(ValueError, match=match):
        fit_toys(simple, simple.suggested_init(), n_toys=2, device=device, progress=False)


def test_device_resolution_is_the_sessions():
    import torch

    from nextstat.engine.devices import resolve_device
    from nextstat.infer.toy_fitters import _resolve_device

    assert _resolve_device("cpu") == resolve_device(torch.device("cpu")) == "cpu"
    assert _resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        for resolve in (_resolve_device, resolve_device):
            with pytest.raises(ValueError, match="CUDA is not available"):
                resolve("cuda")
