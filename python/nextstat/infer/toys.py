"""Pseudo-experiments: batched toy fits and toy-based CLs (pyhf 0.7.6 ``ToyCalculator``).

The pieces:

* :mod:`nextstat.infer.toy_sampler`: the pseudo-data. Toy ``i`` of a seed depends only on the
  model, the generating parameters, the seed and ``i``, so a run of toys ``[a, b)``
  (``first_toy=a``) is the slice ``[a, b)`` of one long run: jobs with the same seed and
  disjoint ranges split a run, and their results merge into that run's
  (:meth:`~nextstat.results.ToyFitResults.concatenate`,
  :meth:`~nextstat.results.ToyDistributions.concatenate`; files: ``save`` / ``load``).
* :mod:`nextstat.infer.toy_fitters`: many independent fits on the CPU (compiled Newton, a
  pool of threads) or CUDA (batched PyTorch); a toy's fit does not depend on the batch, thread
  or process it runs in, so on one machine type a seed gives bit-identical results.
* this module: :func:`fit_toys`, the toy-based test (:func:`toy_distributions` then
  :func:`hypotest_from_toys`, both in one call: :func:`hypotest_toys`) and their p-values.

Splitting a toy-based test over jobs::

    # job k of K (the same seed everywhere)
    part = toy_distributions(model, 1.0, n_toys=1000, first_toy=1000 * k, seed=7)
    part.save(f"toys_{k}.npz")
    # afterwards
    parts = [ToyDistributions.load(f"toys_{k}.npz") for k in range(K)]
    result = hypotest_from_toys(ToyDistributions.concatenate(parts))
    # the same numbers as hypotest_toys(model, 1.0, n_toys=1000 * K, seed=7)

or over a Ray cluster in one call: ``hypotest_toys(model, 1.0, executor="ray")``.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
from scipy.special import ndtri

from nextstat.engine.statistic_rules import STAT_Q0, STAT_QMU, keeps
from nextstat.errors import ConvergenceWarning
from nextstat.infer import test_statistics as ts
from nextstat.infer.fit import _bounds, _fixed_mask, fit
from nextstat.infer.toy_fitters import (  # noqa: F401 - _FIT_DEFAULTS: used by the tests
    _FIT_DEFAULTS,
    _bar,
    _chunk,
    _chunks,
    _CpuFitter,
    _fitter,
    _resolve_device,
    _TorchFitter,
)
from nextstat.infer.toy_sampler import (  # noqa: F401 - re-exported
    _STREAM_B,
    _STREAM_FIT,
    _STREAM_SB,
    POISSON_LAM_MAX,
    RNG_BLOCK,
    _first_toy,
    _n_toys,
    _seed,
    _ToySampler,
    sample_toys,
)
from nextstat.model import Model, require_model
from nextstat.results import FitResult, HypotestResult, ToyDistributions, ToyFitResults

__all__ = ["RNG_BLOCK", "expected_band", "fit_toys", "hypotest_from_toys", "hypotest_toys", "sample_toys",
           "toy_distributions", "toy_pvalues"]

#: normal-distribution percentiles of the expected band, -2 ... +2 sigma (pyhf
#: ``ToyCalculator.expected_pvalues``).
_BAND_PERCENTILES = np.array([2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681])

_EXECUTORS = (None, "serial", "ray")
#: with executor="ray", each hypothesis's toys are cut into at most about this many tasks
#: (whole RNG blocks each)
_RAY_TASKS_PER_SET = 32


# ------------------------------------------------------------------------------------------
# fit_toys
# ------------------------------------------------------------------------------------------


def fit_toys(model: Model, pars: Any, *, n_toys: int | None = None, seed: int = 0, first_toy: int = 0,
             device: str = "cpu", data: Any = None, return_data: bool = False, progress: bool | None = None,
             chunk_size: int | None = None, fixed_params: Any = None, init_pars: Any = None,
             par_bounds: Any = None, n_threads: int | None = None, maxiter: int | None = None,
             tol: float | None = None) -> ToyFitResults:
    """Generate pseudo-experiments at ``pars`` and fit each one (maximum likelihood).

    Toys are drawn as pyhf's ``model.make_pdf(pars).sample()`` draws them (main counts and
    auxiliary data; module docstring) and fitted with the same bounded Newton method as
    :func:`nextstat.fit` (without Hesse errors).

    Args:
        model: compiled model.
        pars: parameters the toys are generated at, shape (n_params,).
        n_toys: number of toys; default 1000 (or the number of rows of ``data``).
        seed: integer >= 0. The same seed gives the same toys and, on one device, the same fits
            (module docstring).
        first_toy: fit toys ``first_toy ... first_toy + n_toys - 1`` of the seed's sequence
            (jobs with one seed and disjoint ranges split a run; merge them with
            :meth:`ToyFitResults.concatenate <nextstat.results.ToyFitResults.concatenate>`).
        device: "cpu" (compiled core, all cores), "cuda" / "cuda:N" (batched PyTorch fitter),
            or "auto" (CUDA when available, else CPU).
        data: fit these datasets instead of generated toys: shape (n, n_bins + n_aux), or
            (n, n_bins) with the observed auxiliary data appended.
        return_data: keep the fitted pseudo-data in ``toy_data`` (n_toys x (n_bins + n_aux)).
        progress: show a tqdm progress bar (stderr).
        chunk_size: toys generated and fitted at a time (bounds the memory); default 4096 on
            the CPU, sized from the free device memory on CUDA.
        fixed_params, par_bounds: as in :func:`nextstat.fit` (defaults: the model's).
        init_pars: starting point of every fit, shape (n_params,); default ``pars``. Fixed
            parameters stay at these values.
        n_threads: CPU threads (default: the usable cores).
        maxiter, tol: Newton iteration limit and EDM threshold; default :func:`nextstat.fit`'s.

    Returns:
        :class:`~nextstat.results.ToyFitResults`: ``bestfit`` (n_toys, n_params), ``nll``,
        ``converged``, ``n_iter``, ``toy_index`` (positions in the sequence; None with
        ``data``), ``pars``. Toys whose fit did not converge are kept and flagged
        (``converged`` False, counted by ``n_failed``); their ``bestfit`` and ``nll`` are where
        the fit stopped.

    >>> import nextstat
    >>> from nextstat.builders import build_workspace_from_histograms
    >>> model = nextstat.from_pyhf(build_workspace_from_histograms([5.0, 10.0], {"b": [50.0, 60.0]}))
    >>> toys = fit_toys(model, model.suggested_init(), n_toys=200, seed=7, progress=False)
    >>> toys.bestfit.shape, toys.n_failed
    ((200, 1), 0)
    >>> bool(np.isclose(toys.bestfit[:, model.poi_index].mean(), 1.0, atol=0.3))
    True
    """
    require_model(model)
    t0 = time.perf_counter()
    p = model._pars(pars)
    seed = _seed(seed)
    first = _first_toy(first_toy)
    width = model.n_bins + model.n_aux
    sampler = None
    given = None
    if data is None:
        n = 1000 if n_toys is None else _n_toys(n_toys, "n_toys")
        sampler = _ToySampler(model, p, seed, _STREAM_FIT)
    else:
        given = _datasets(model, data)
        n = given.shape[0]
        if n_toys is not None and _n_toys(n_toys, "n_toys") != n:
            raise ValueError(f"n_toys: {n_toys} given with data of {n} rows; leave n_toys out")
        if first:
            raise ValueError(f"first_toy: {first_toy} given with data (the datasets are fitted as given)")
    init = p.copy() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    fixed = _fixed_mask(model, fixed_params)
    bounds = _bounds(model, par_bounds)
    dev = _resolve_device(device)
    P = model.n_params
    bestfit = np.empty((n, P))
    nll = np.empty(n)
    converged = np.empty(n, dtype=bool)
    n_iter = np.empty(n, dtype=np.int64)
    toy_data = np.empty((n, width)) if return_data else None
    with _fitter(model, bounds, dev, n_threads, maxiter, tol) as fitter, _bar(n, progress, "Toy fits", "toy") as bar:
        step = _chunk(chunk_size, fitter)
        if sampler is not None:
            def make(a: int, b: int) -> np.ndarray:
                return sampler.rows(first + a, first + b)
        else:
            def make(a: int, b: int) -> np.ndarray:
                return np.ascontiguousarray(given[a:b])
        for a, b, d in _chunks(n, step, make, isinstance(fitter, _TorchFitter) and sampler is not None):
            th, f, c, it = fitter.fit(d, np.tile(init, (b - a, 1)), fixed, bar.update)
            bestfit[a:b], nll[a:b], converged[a:b], n_iter[a:b] = th, f, c, it
            if toy_data is not None:
                toy_data[a:b] = d
    converged &= np.isfinite(nll) & np.all(np.isfinite(bestfit), axis=1)  # never converged with inf/NaN
    if not converged.all():
        warnings.warn(f"fit_toys: {int(np.count_nonzero(~converged))} of {n} toy fits did not converge "
                      "(ToyFitResults.converged)", ConvergenceWarning, stacklevel=2)
    return ToyFitResults(
        bestfit=bestfit, nll=nll, converged=converged, parameter_names=tuple(model.parameter_names),
        seed=seed, device=fitter.device, time_s=time.perf_counter() - t0, toy_data=toy_data, n_iter=n_iter,
        toy_index=None if sampler is None else first + np.arange(n, dtype=np.int64),
        pars=None if sampler is None else p.copy(),
    )


def _datasets(model: Model, data: Any) -> np.ndarray:
    d = np.asarray(data, dtype=np.float64)
    width = model.n_bins + model.n_aux
    if d.ndim == 2 and d.shape[1] == model.n_bins and model.n_aux:
        d = np.concatenate([d, np.broadcast_to(model.aux_data, (d.shape[0], model.n_aux))], axis=1)
    if d.ndim != 2 or d.shape[1] != width or d.shape[0] < 1:
        raise ValueError(f"data: expected shape (n, {width}) (main + auxiliary) or (n, {model.n_bins}) "
                         f"(main only), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("data: contains non-finite values")
    if np.any(d[:, :model.n_bins] < 0):
        raise ValueError("data: main-bin counts must be >= 0")
    return np.ascontiguousarray(d)
# ------------------------------------------------------------------------------------------
# Toy-based hypothesis test
# ------------------------------------------------------------------------------------------


def toy_pvalues(q_sb: np.ndarray, q_b: np.ndarray, q: Any) -> tuple[np.ndarray, np.ndarray]:
    """Tail fractions of the two toy distributions at ``q``: (P(q_sb >= q), P(q_b >= q)).

    pyhf 0.7.6 ``EmpiricalDistribution.pvalue``: the fraction of toys whose statistic is at
    least ``q`` (ties count).

    >>> clsb, clb = toy_pvalues(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 5.0]), [1.0, 3.0])
    >>> clsb.tolist(), clb.tolist()
    ([0.75, 0.25], [1.0, 0.5])
    """
    sb = np.sort(np.asarray(q_sb, dtype=np.float64))
    b = np.sort(np.asarray(q_b, dtype=np.float64))
    q = np.asarray(q, dtype=np.float64)
    return ((sb.size - np.searchsorted(sb, q, side="left")) / sb.size,
            (b.size - np.searchsorted(b, q, side="left")) / b.size)


def expected_band(q_sb: np.ndarray, q_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected (CLsb, CLb, CLs) bands, each shape (5,), from the two toy distributions.

    pyhf 0.7.6 ``ToyCalculator.expected_pvalues``: the three p-values are evaluated at every
    background-only toy's statistic (:func:`toy_pvalues`) and each is summarised by its 2.3, 15.9,
    50, 84.1 and 97.7 percentiles (linear interpolation), i.e. -2 ... +2 sigma. For ``q0`` the
    "background-only" toys are the signal (``mu = 1``) ones and the CLsb band is the expected p0.

    >>> clsb, clb, cls = expected_band(np.array([0.0, 0.0, 1.0, 3.0]), np.array([0.5, 2.0, 4.0]))
    >>> cls.round(4).tolist()
    [0.0171, 0.119, 0.375, 0.4603, 0.4943]
    """
    q_b = np.asarray(q_b, dtype=np.float64)
    p_sb, p_b = toy_pvalues(q_sb, q_b, q_b)  # p_b >= 1 / n_b: each value is one of the samples
    bands = np.percentile(np.stack([p_sb, p_b, p_sb / p_b]), _BAND_PERCENTILES, axis=1, method="linear")
    return bands[:, 0], bands[:, 1], bands[:, 2]


def _binomial_error(p: float, n: int) -> float:
    return math.sqrt(p * (1.0 - p) / n)


def _needs_conditional(test_stat: str, mu: float, mu_hat: np.ndarray) -> np.ndarray:
    """Toys whose statistic depends on the conditional fit (the others are 0 by definition)."""
    if test_stat in ("q", "qtilde"):
        return keeps(STAT_QMU, mu_hat, mu)  # q_mu = 0 for mu_hat > mu (arXiv:1007.1727 eq. 14)
    if test_stat == "q0":
        return keeps(STAT_Q0, mu_hat, 0.0)  # q_0 = 0 for mu_hat <= 0 (eq. 12)
    return np.ones(mu_hat.shape, dtype=bool)



def _toy_statistics(fitter: _CpuFitter | _TorchFitter, sampler: _ToySampler, n: int, step: int,
                    start: np.ndarray, fixed: np.ndarray, poi: int, mu: float, test_stat: str,
                    bar: Any, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Test statistic of toys ``first ... first + n - 1`` (free fit from ``start``, conditional
    fit from the free fit with the POI at ``mu``). Returns (q [n], ok [n]); ok is False where a
    needed fit failed."""
    q = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    cfixed = fixed.copy()
    cfixed[poi] = True

    def make(a: int, b: int) -> np.ndarray:
        return sampler.rows(first + a, first + b)

    for a, b, d in _chunks(n, step, make, isinstance(fitter, _TorchFitter)):
        th, f_free, c_free, _ = fitter.fit(d, np.tile(start, (b - a, 1)), fixed, bar.update)
        mu_hat = th[:, poi]
        need = c_free & _needs_conditional(test_stat, mu, mu_hat)
        bar.update(int(np.count_nonzero(~need)))
        idx = np.flatnonzero(need)
        init = np.ascontiguousarray(th[idx])
        init[:, poi] = mu
        _, f_cond, c_cond, _ = fitter.fit(np.ascontiguousarray(d[idx]), init, cfixed, bar.update)
        nll_cond = np.full(b - a, np.nan)
        nll_cond[idx] = f_cond
        good = c_free.copy()
        good[idx] &= c_cond
        for i in np.flatnonzero(good):
            q[a + i] = ts.statistic(test_stat, mu, nll_cond[i], f_free[i], mu_hat[i])
        ok[a:b] = good
    return q, ok


def _toy_task(model: Model, fixed: np.ndarray, bounds: np.ndarray, mu: float, test_stat: str, maxiter: int | None,
              tol: float | None, chunk_size: int | None, seed: int, stream: int, pars: np.ndarray, start: int,
              stop: int) -> tuple[np.ndarray, np.ndarray]:
    """One Ray task: the statistics of toys ``[start, stop)`` of a stream, fitted on one CPU
    thread exactly as :func:`_toy_statistics` fits them in the serial run."""
    sampler = _ToySampler(model, pars, seed, stream)
    with _fitter(model, bounds, "cpu", 1, maxiter, tol) as fitter, _bar(0, False, "", "fit") as bar:
        return _toy_statistics(fitter, sampler, stop - start, _chunk(chunk_size, fitter), pars, fixed,
                               model.poi_index, mu, test_stat, bar, first=start)


def _ray_statistics(model: Model, sets: list[tuple[int, np.ndarray, int]], first: int, seed: int,
                    fixed: np.ndarray, bounds: np.ndarray, mu: float, test_stat: str, maxiter: int | None,
                    tol: float | None, chunk_size: int | None, n_workers: int | None,
                    bar: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(q, ok) of each (stream, pars, n) set, its toys cut into Ray tasks of whole RNG blocks."""
    from nextstat.infer.executors import ray_map

    with _fitter(model, bounds, "cpu", 1, maxiter, tol) as fitter:  # bad maxiter / chunk_size: refused here
        _chunk(chunk_size, fitter)
    owner, tasks = [], []
    for k, (stream, pars, n) in enumerate(sets):
        span = RNG_BLOCK * max(1, -(-n // (RNG_BLOCK * _RAY_TASKS_PER_SET)))
        for a in range(0, n, span):
            owner.append(k)
            tasks.append((stream, pars, first + a, first + min(n, a + span)))
    shared = (model, fixed, bounds, mu, test_stat, maxiter, tol, chunk_size, seed)
    results = ray_map(_toy_task, shared, tasks, n_workers=n_workers,
                      on_done=lambda i, r: bar.update(2 * r[0].size))
    out = []
    for k in range(len(sets)):
        parts = [r for r, o in zip(results, owner) if o == k]
        out.append((np.concatenate([q for q, _ in parts]), np.concatenate([ok for _, ok in parts])))
    return out


def _toy_distributions(model: Model, mu: float, obs: np.ndarray, n_sb: int, n_b: int, seed: int, device: str,
                       test_stat: str, init: np.ndarray, fixed: np.ndarray, bounds: np.ndarray, *,
                       progress: bool, chunk_size: int | None, n_threads: int | None,
                       maxiter: int | None, tol: float | None, first_toy: int = 0, executor: str | None = None,
                       n_workers: int | None = None) -> ToyDistributions:
    """pyhf ``ToyCalculator.teststatistic`` and ``.distributions``: the statistic on the data,
    then on toys at theta_hathat(mu) (s+b) and theta_hathat(0) (b; theta_hathat(1) for q0)."""
    t0 = time.perf_counter()
    poi = model.poi_index
    free = fit(model, data=obs, init_pars=init, fixed_params=fixed, par_bounds=bounds, hesse=False)
    mu_hat = float(free.bestfit[poi])

    def conditional(mu_c: float) -> FitResult:
        start = free.bestfit.copy()
        start[poi] = mu_c
        cfixed = fixed.copy()
        cfixed[poi] = True
        return fit(model, data=obs, init_pars=start, fixed_params=cfixed, par_bounds=bounds, hesse=False)

    cond = conditional(mu)
    q_obs = float(ts.statistic(test_stat, mu, cond.nll, free.nll, mu_hat))
    _check_observed(model.poi_name, mu, q_obs, mu_hat)
    mu_alt = 1.0 if test_stat == "q0" else 0.0
    cond_b = cond if mu_alt == mu else conditional(mu_alt)
    pars_sb, pars_b = cond.bestfit, cond_b.bestfit
    sets = [(_STREAM_SB, pars_sb, n_sb), (_STREAM_B, pars_b, n_b)]
    samplers = [_ToySampler(model, pars, seed, stream) for stream, pars, _ in sets]  # checks the rates
    with _bar(2 * (n_sb + n_b), progress, f"Toys at mu={mu:g}", "fit") as bar:
        if executor == "ray":
            (q_sb, ok_sb), (q_b, ok_b) = _ray_statistics(model, sets, first_toy, seed, fixed, bounds, mu, test_stat,
                                                         maxiter, tol, chunk_size, n_workers, bar)
            dev = "cpu"
        else:
            with _fitter(model, bounds, device, n_threads, maxiter, tol) as fitter:
                step = _chunk(chunk_size, fitter)
                (q_sb, ok_sb), (q_b, ok_b) = [
                    _toy_statistics(fitter, sampler, n, step, pars, fixed, poi, mu, test_stat, bar, first=first_toy)
                    for sampler, (_, pars, n) in zip(samplers, sets)]
                dev = fitter.device
    return ToyDistributions(
        mu_test=mu, test_stat=test_stat, q_obs=q_obs, mu_hat=mu_hat,
        observed_converged=bool(free.converged and cond.converged and cond_b.converged),
        q_sb=q_sb, ok_sb=ok_sb, index_sb=first_toy + np.arange(n_sb, dtype=np.int64),
        q_b=q_b, ok_b=ok_b, index_b=first_toy + np.arange(n_b, dtype=np.int64),
        pars_sb=pars_sb.copy(), pars_b=pars_b.copy(), parameter_names=tuple(model.parameter_names), seed=seed,
        device=dev, time_s=time.perf_counter() - t0,
    )


def _check_observed(poi_name: str, mu: float, q_obs: float, mu_hat: float) -> None:
    if not (math.isfinite(q_obs) and math.isfinite(mu_hat)):
        raise ValueError(f"hypotest_toys: the observed test statistic at {poi_name} = {mu:g} is not finite: the "
                         "hypothesis predicts no events in a bin with observed events, or the yields overflow")


def toy_distributions(model: Model, mu: float = 1.0, *, n_toys: int = 1000, n_toys_sb: int | None = None,
                      n_toys_b: int | None = None, seed: int = 0, first_toy: int = 0, device: str = "cpu",
                      test_stat: str = "qtilde", data: Any = None, init_pars: Any = None, par_bounds: Any = None,
                      fixed_params: Any = None, progress: bool | None = None, chunk_size: int | None = None,
                      n_threads: int | None = None, maxiter: int | None = None, tol: float | None = None,
                      executor: str | None = None, n_workers: int | None = None) -> ToyDistributions:
    """The sampled test-statistic distributions of a toy-based test of POI = ``mu``.

    The first half of :func:`hypotest_toys` (arguments as there): the observed statistic and
    the statistics of ``n_toys_sb`` signal+background and ``n_toys_b`` background-only toys,
    toys ``first_toy ...`` of each hypothesis's sequence for ``seed``. Turn them into CLs with
    :func:`hypotest_from_toys`. The parts of a run split over jobs (same seed and arguments,
    disjoint ``first_toy`` ranges) merged with :meth:`ToyDistributions.concatenate
    <nextstat.results.ToyDistributions.concatenate>` give the CLs of one run over the union
    of the ranges, exactly.

    Returns:
        :class:`~nextstat.results.ToyDistributions` (failed toys included and flagged).

    >>> import nextstat
    >>> from nextstat.builders import build_workspace_from_histograms
    >>> model = nextstat.from_pyhf(build_workspace_from_histograms([5.0], {"b": [50.0]}))
    >>> whole = toy_distributions(model, 1.0, n_toys=60, seed=3, progress=False)
    >>> parts = [toy_distributions(model, 1.0, n_toys=30, first_toy=a, seed=3, progress=False) for a in (30, 0)]
    >>> merged = ToyDistributions.concatenate(parts)
    >>> bool(np.array_equal(merged.q_b, whole.q_b)), hypotest_from_toys(merged).cls == hypotest_from_toys(whole).cls
    (True, True)
    """
    if model.poi_index is None:
        raise ValueError("model: a POI is required for hypothesis tests")
    if test_stat not in ts.TEST_STATS:
        raise ValueError(f"test_stat: expected one of {ts.TEST_STATS}, got {test_stat!r}")
    if executor not in _EXECUTORS:
        raise ValueError(f"executor: expected None, 'serial' or 'ray', got {executor!r}")
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer))
                                  or n_workers < 1):
        raise ValueError(f"n_workers: expected an integer >= 1 or None, got {n_workers!r}")
    mu = float(mu)
    if test_stat == "q0" and mu != 0.0:
        warnings.warn(f"hypotest_toys: the q0 test statistic tests mu = 0 (discovery); mu = {mu!r} is ignored",
                      UserWarning, stacklevel=3)
        mu = 0.0
    lo_poi, hi_poi = (model.suggested_bounds() if par_bounds is None else _bounds(model, par_bounds))[model.poi_index]
    if not (math.isfinite(mu) and lo_poi <= mu <= hi_poi):
        raise ValueError(f"mu: expected a finite value within the bounds [{lo_poi:g}, {hi_poi:g}] of the POI "
                         f"{model.poi_name!r}, got {mu!r}")
    n_sb = _n_toys(n_toys if n_toys_sb is None else n_toys_sb, "n_toys_sb")
    n_b = _n_toys(n_toys if n_toys_b is None else n_toys_b, "n_toys_b")
    seed = _seed(seed)
    first = _first_toy(first_toy)
    obs = model._data(data)
    init = model.suggested_init() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    fixed = _fixed_mask(model, fixed_params)
    bounds = _bounds(model, par_bounds)
    dev = _resolve_device(device)
    if executor == "ray" and dev != "cpu":
        raise ValueError(f"device: executor='ray' fits the toys on the workers' CPUs; got device={device!r}")
    return _toy_distributions(model, mu, obs, n_sb, n_b, seed, dev, test_stat, init, fixed, bounds,
                              progress=progress, chunk_size=chunk_size, n_threads=n_threads, maxiter=maxiter,
                              tol=tol, first_toy=first, executor=executor, n_workers=n_workers)


def hypotest_toys(model: Model, mu: float = 1.0, *, n_toys: int = 1000, n_toys_sb: int | None = None,
                  n_toys_b: int | None = None, seed: int = 0, first_toy: int = 0, device: str = "cpu",
                  test_stat: str = "qtilde", data: Any = None, init_pars: Any = None, par_bounds: Any = None,
                  fixed_params: Any = None, return_expected: bool = True, progress: bool | None = None,
                  chunk_size: int | None = None, n_threads: int | None = None, maxiter: int | None = None,
                  tol: float | None = None, executor: str | None = None,
                  n_workers: int | None = None) -> HypotestResult:
    """Hypothesis test of POI = ``mu`` with pseudo-experiments (pyhf 0.7.6 ``ToyCalculator``).

    As pyhf (following the LHC Higgs combination procedure, ATL-PHYS-PUB-2011-011): the test
    statistic ``q_obs`` on the data (free fit, then the conditional fit at ``mu``);
    signal+background toys generated at ``(mu, theta_hathat(mu))`` and background-only toys at
    ``(0, theta_hathat(0))`` (``(1, theta_hathat(1))`` for ``q0``), both profiled on the data;
    the statistic of each toy from its own free and conditional fits
    (:func:`nextstat.infer.test_statistics.statistic`), and::

        CLsb = P(q >= q_obs | s+b),   CLb = P(q >= q_obs | b),   CLs = CLsb / CLb

    (ties count, pyhf ``EmpiricalDistribution.pvalue``). The expected band is the 2.3, 15.9,
    50, 84.1 and 97.7 percentiles (linear interpolation) of CLs evaluated at each
    background-only toy's statistic, -2 ... +2 sigma, the order of the asymptotic band.
    Monte Carlo errors are binomial, ``sqrt(p (1 - p) / n)``, propagated to CLs as independent
    (they are 0 when a tail fraction is 0 or 1: add toys). For ``q0`` the result holds the
    discovery ``p0 = CLsb``, ``significance = Phi^-1(1 - p0)`` (inf when ``p0 = 0``) and the median expected ``p0``
    over the signal (``mu = 1``) toys.

    Toy fits start from the generating parameters (free fit) and from the free fit with the POI
    at ``mu`` (conditional fit); where the free fit gives ``mu_hat > mu`` (q, qtilde) or
    ``mu_hat <= 0`` (q0) the statistic is 0 and the conditional fit is skipped.

    Args:
        model: compiled model. mu: tested POI value.
        n_toys: toys per hypothesis; ``n_toys_sb`` / ``n_toys_b`` override it per hypothesis.
        seed: integer >= 0; the two hypotheses use independent streams of it (module
            docstring of :mod:`nextstat.infer.toy_sampler`).
        first_toy: use toys ``first_toy ... first_toy + n - 1`` of each hypothesis's sequence
            (a job's share of a run split over jobs; see :func:`toy_distributions`).
        device: "cpu", "cuda" / "cuda:N" or "auto", as in :func:`fit_toys`.
        test_stat: "qtilde", "q", "q0", "tmu" or "tmu_tilde".
        data: observed main + auxiliary data (or main only); default the model's.
        init_pars, par_bounds, fixed_params: as in :func:`nextstat.fit`, for every fit.
        return_expected: compute the expected band (``cls_expected``; ``p0_expected`` for q0).
        progress: tqdm progress bar (counts fits). chunk_size, n_threads, maxiter, tol: as in
            :func:`fit_toys`.
        executor: where the toys are fitted: ``None`` / ``"serial"``: in this process
            (``n_threads`` threads); ``"ray"``: Ray tasks of whole random-number blocks, one CPU
            each, by the policy of :func:`nextstat.infer.executors.ray_map` (a running Ray is
            used and left running, else a local one with ``n_workers`` CPUs is started and
            shut down). Each toy is fitted as in the serial run, so the result is identical.
            The fits to the observed data run here. Needs ``device="cpu"``.
        n_workers: Ray CPUs to start, or tasks in flight on a running Ray (``executor="ray"``).

    Returns:
        :class:`~nextstat.results.HypotestResult` with ``calculator="toybased"``, the Monte
        Carlo errors, ``n_toys`` = (signal+background, background-only) toys used and
        ``n_failed_toys``. A toy whose free fit, or needed conditional fit, did not converge is
        excluded from the p-values and counted in ``n_failed_toys`` (a ``RuntimeWarning`` says
        how many).

    Raises:
        ValueError: bad arguments; every toy of a hypothesis failed; no background-only toy
        reaches ``q_obs`` (CLb = 0, CLs undefined) or, for q0, no signal toy does (p0 = 0):
        generate more toys. ImportError: ``executor="ray"`` without Ray.
    """
    require_model(model)
    d = toy_distributions(model, mu, n_toys=n_toys, n_toys_sb=n_toys_sb, n_toys_b=n_toys_b, seed=seed,
                          first_toy=first_toy, device=device, test_stat=test_stat, data=data, init_pars=init_pars,
                          par_bounds=par_bounds, fixed_params=fixed_params, progress=progress, chunk_size=chunk_size,
                          n_threads=n_threads, maxiter=maxiter, tol=tol, executor=executor, n_workers=n_workers)
    return _hypotest(d, return_expected, stacklevel=3)


def hypotest_from_toys(distributions: ToyDistributions, *, return_expected: bool = True) -> HypotestResult:
    """CLs (or p0 for ``q0``) from sampled distributions: the second half of :func:`hypotest_toys`
    (formulae there); toys whose fits failed are excluded and counted.

    Raises:
        TypeError: not a ToyDistributions. ValueError: every toy of a hypothesis failed, or the
        tail fraction the result needs is 0 (add toys).
    """
    if not isinstance(distributions, ToyDistributions):
        raise TypeError(f"distributions: expected a ToyDistributions, got {type(distributions).__name__}")
    return _hypotest(distributions, return_expected, stacklevel=3)


def _hypotest(d: ToyDistributions, return_expected: bool, stacklevel: int) -> HypotestResult:
    if not d.observed_converged:
        warnings.warn("hypotest_toys: a fit to the observed data did not converge (HypotestResult.converged is False)",
                      ConvergenceWarning, stacklevel=stacklevel)
    q_obs, mu_hat, mu, test_stat = d.q_obs, d.mu_hat, d.mu_test, d.test_stat
    _check_observed("the POI", mu, q_obs, mu_hat)
    n_sb, n_b = d.n_toys
    n_failed = d.n_failed
    q_sb, q_b = d.q_sb[d.ok_sb], d.q_b[d.ok_b]
    if q_sb.size == 0 or q_b.size == 0:
        raise ValueError(f"hypotest_toys: the fits of every {'signal+background' if q_sb.size == 0 else 'background-only'} "
                         f"toy failed to converge; check the model or raise maxiter")
    if n_failed:
        warnings.warn(f"hypotest_toys: {n_failed} of {n_sb + n_b} toys had a fit that did not converge; "
                      f"they are excluded from the p-values (HypotestResult.n_failed_toys)", ConvergenceWarning,
                      stacklevel=stacklevel)
    failed_fits = (("observed",) if not d.observed_converged else ()) + (("toys",) if n_failed else ())
    clsb_a, clb_a = toy_pvalues(q_sb, q_b, q_obs)
    clsb, clb = float(clsb_a), float(clb_a)
    clsb_err = _binomial_error(clsb, q_sb.size)
    clb_err = _binomial_error(clb, q_b.size)
    common = dict(mu_test=mu, test_stat=test_stat, q_obs=float(q_obs), mu_hat=mu_hat, calculator="toybased",
                  clsb=clsb, clb=clb, clsb_error=clsb_err, clb_error=clb_err,
                  n_toys=(int(q_sb.size), int(q_b.size)), n_failed_toys=n_failed,
                  converged=not failed_fits, failed_fits=failed_fits)
    if test_stat == "q0":
        if clsb == 0.0:
            raise ValueError(f"hypotest_toys: no signal+background toy of {q_sb.size} reaches q_obs = {q_obs:.4g}: "
                             f"p0 < {1.0 / q_sb.size:.2g} cannot be resolved; generate more toys")
        p0_exp = None
        if return_expected:
            p0_exp = float(expected_band(q_sb, q_b)[0][2])
        return HypotestResult(**common, p0=clsb, significance=float(-ndtri(clsb)),
                              p0_expected=p0_exp,
                              significance_expected=float(-ndtri(p0_exp)) if p0_exp else None)
    if clb == 0.0:
        raise ValueError(f"hypotest_toys: no background-only toy of {q_b.size} reaches q_obs = {q_obs:.4g} (CLb = 0): "
                         "CLs is undefined; generate more toys")
    cls = clsb / clb
    cls_err = cls * math.hypot(clsb_err / clsb, clb_err / clb) if clsb > 0 else 0.0
    band = expected_band(q_sb, q_b)[2] if return_expected else None
    return HypotestResult(**common, cls=cls, cls_error=cls_err, cls_expected=band)
