"""Systematic-impact ranking: which nuisance parameters move the parameter of interest most.

The ranking ("impact plot") is the physicist's feature importance. For every constrained
nuisance parameter (NP) ``theta_i`` the POI is re-fitted with ``theta_i`` held fixed at a
shifted value while every other free parameter is profiled; the impact is the change of the
POI against the nominal best fit ``mu_hat``. The definitions are cabinetry 0.6.0's
(``cabinetry.fit.ranking``)::

    post-fit:  delta_mu_up/down        = mu_hat(theta_i = theta_hat_i +- sigma_hat_i) - mu_hat
    pre-fit:   prefit_delta_mu_up/down = mu_hat(theta_i = theta_hat_i +- sigma_i)     - mu_hat
    total_impact = |delta_mu_up| + |delta_mu_down|
    pull       = (theta_hat_i - theta0_i) / sigma_i
    constraint = sigma_hat_i / sigma_i

with ``theta_hat``, ``sigma_hat`` the nominal best fit and its Hesse errors, ``sigma_i`` the
width of the NP's constraint term (Gaussian: its sigma; Poisson/shapesys: ``1/sqrt(tau)``, as
pyhf's ``param_set.width()``), and ``theta0_i`` the centre of the constraint: the auxiliary
datum (Gaussian) or ``aux / tau`` (Poisson) of the data that are fitted (0 for a normsys or
histosys, 1 for a staterror gamma, with the model's own auxiliary data).

Differences from cabinetry:

* only constrained, non-fixed parameters are ranked by default; normfactors and shapefactors
  (no constraint, so no pre-fit width or pull) are left out unless ``include_unconstrained=True``,
  which gives them post-fit impacts and ``None`` for the pre-fit impacts, pull and constraint
  (cabinetry reports 0 there). The POI and fixed parameters are never ranked;
* a shifted value beyond a parameter's bounds is clipped to the bound and the row says so
  (``clipped``); cabinetry passes it to the minimiser unclipped, where e.g. a staterror gamma
  shifted below 0 makes a negative rate;
* re-fits are warm-started (below) instead of starting from the suggested initial values, and
  are converged to ``tol`` on the EDM (default 1e-10, as :func:`nextstat.fit`; the POI is then
  within about ``sqrt(2 tol) sigma_mu``) rather than Minuit's EDM < 2e-4 (cabinetry's default
  tolerance 0.1), which leaves cabinetry's refits short of the minimum: on the sbottom
  RegionA Asimov data its impacts are off by up to 0.016 (1% of sigma_mu) and agree with ours
  to 1e-3 once run with tolerance 1e-4;
* ``sigma_hat`` is the exact Hesse error in the parameter's own units. cabinetry takes Minuit's,
  which for a bounded parameter is mapped through Minuit's sine transformation (a normsys in
  [-5, 5] with exact error 1 gets ``5 sin(1/5) = 0.9933``), so its post-fit shifts are smaller
  by up to 0.7% and its post-fit impacts differ in proportion;
* parameters that cannot change the expected rates (a normsys with ``hi = lo = 1``, a histosys
  with identical variations, or modifiers only on empty samples) have exactly zero impact and
  are not refitted.

Speed: the refits start from the linear response of the nominal fit, ``theta_hat + C[:, i] /
C[i, i] * (value - theta_hat_i)`` (``C`` the Hesse covariance), and iterate Newton steps with
the fixed Hessian of the nominal fit restricted to the other free parameters, whose inverse is
the Schur complement ``C_FF - C_Fi C_iF / C_ii`` (no factorisation per refit). A refit that
leaves the bounds, stops contracting or does not converge in ``chord_max`` steps is finished by
the full bounded Newton fit (:func:`nextstat.engine.numba_core.newton_fit`). The compiled
kernel releases the GIL; refits run in ``n_jobs`` threads.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numba import njit

from nextstat.engine import numba_core as core
from nextstat.errors import ConvergenceWarning
from nextstat.infer.fit import _bounds, _fixed_mask, fit
from nextstat.model import Model
from nextstat.results import FitResult

__all__ = [
    "COLUMNS",
    "draw_rank_impact",
    "format_ranking",
    "plot_rank_impact",
    "rank_impact",
    "rank_impact_df",
]

#: keys of each ranking row, in this order (also the columns of :func:`rank_impact_df`)
COLUMNS = (
    "rank",
    "name",
    "total_impact",
    "delta_mu_up",
    "delta_mu_down",
    "prefit_delta_mu_up",
    "prefit_delta_mu_down",
    "pull",
    "constraint",
    "bestfit",
    "error",
    "prior_width",
    "theta0",
    "constrained",
    "clipped",
    "clipped_shifts",
    "converged",
)

SORT_KEYS = ("total", "postfit", "prefit", "name")

# order of the four shifted fits of one parameter
_SHIFTS = ("postfit_up", "postfit_down", "prefit_up", "prefit_down")


# ---------------------------------------------------------------------------------------------
# compiled refits
# ---------------------------------------------------------------------------------------------


# Numba's on-disk cache is keyed on this file only: after editing numba_core (whose nll_grad and
# newton_fit are compiled into this kernel) delete __pycache__/interpret._refit_batch-* .
@njit(cache=True, nogil=True, error_model="numpy")
def _refit_batch(theta_hat, cov, data, lo, hi, fixed, A, AUX, pars, values, maxiter, tol, chord_max):
    """Fits with parameter ``pars[k]`` fixed at ``values[k]``, all other free parameters profiled.

    ``theta_hat``: nominal best fit (P,); ``cov``: its covariance (P, P), zero rows/columns for
    ``fixed`` parameters. Returns (theta (K, P), status (K,) FIT_*, iterations (K,), used the
    full Newton fit (K,)).
    """
    K = pars.shape[0]
    P = theta_hat.shape[0]
    out = np.empty((K, P))
    status = np.empty(K, dtype=np.int64)
    iters = np.zeros(K, dtype=np.int64)
    newton = np.zeros(K, dtype=np.bool_)
    free0 = np.flatnonzero(~fixed)
    g0 = np.zeros(P)
    for k in range(K):
        i = pars[k]
        v = values[k]
        cii = cov[i, i]
        theta = theta_hat.copy()
        theta[i] = v
        ok = cii > 0.0 and np.isfinite(cii)
        st = core.FIT_MAXITER
        it = 0
        if ok:
            # linear response of the other parameters to the shift of parameter i
            s = (v - theta_hat[i]) / cii
            for a in range(free0.shape[0]):
                p = free0[a]
                if p != i:
                    theta[p] = theta_hat[p] + cov[p, i] * s
                    if not lo[p] <= theta[p] <= hi[p]:
                        ok = False
        if ok:
            prev = np.inf
            g0[:] = 0.0
            while it < chord_max:
                it += 1
                f, g = core.nll_grad(theta, data, A, AUX)
                if not np.isfinite(f):
                    ok = False
                    break
                for a in range(free0.shape[0]):
                    g0[free0[a]] = g[free0[a]]
                g0[i] = 0.0
                # step = -(C_FF - C_Fi C_iF / C_ii) g_F
                step = cov @ g0
                cig = step[i] / cii
                edm = 0.0
                for a in range(free0.shape[0]):
                    p = free0[a]
                    if p != i:
                        d = cov[p, i] * cig - step[p]
                        step[p] = d
                        edm -= 0.5 * g0[p] * d
                if edm < tol:
                    # take this last step too when it stays inside the bounds: it costs no
                    # gradient and leaves the fit another contraction factor closer
                    inside = True
                    for a in range(free0.shape[0]):
                        p = free0[a]
                        if p != i and not lo[p] <= theta[p] + step[p] <= hi[p]:
                            inside = False
                    if inside:
                        for a in range(free0.shape[0]):
                            p = free0[a]
                            if p != i:
                                theta[p] += step[p]
                    st = core.FIT_CONVERGED
                    break
                if edm > 0.5 * prev:
                    ok = False  # not contracting: leave it to the full Newton fit
                    break
                prev = edm
                for a in range(free0.shape[0]):
                    p = free0[a]
                    if p != i:
                        x = theta[p] + step[p]
                        if not lo[p] <= x <= hi[p]:
                            ok = False
                        theta[p] = x
                if not ok:
                    break
        if st != core.FIT_CONVERGED:
            newton[k] = True
            fx = fixed.copy()
            fx[i] = True
            start = theta if ok else theta_hat.copy()
            start[i] = v
            theta, _, _, it2, st, _ = core.newton_fit(start, data, lo, hi, fx, A, AUX, maxiter, tol)
            it += it2
        out[k] = theta
        status[k] = st
        iters[k] = it
    return out, status, iters, newton


def _affects_rates(model: Model) -> np.ndarray:
    """Boolean mask (n_params,): parameters on which the expected main rates can depend.

    False for a parameter whose only modifiers are normsys with ``hi == lo == 1`` (factor 1 for
    every code), histosys with zero variations, or any modifier on a block whose nominal yields
    and histosys variations are all zero. Per-bin factors (staterror, shapesys, shapefactor)
    always count as effective.
    """
    (blk_b0, blk_nb, blk_off, nom, sc_ptr, sc_par, sc_kind, sc_lhi, sc_llo, _,
     hs_ptr, hs_par, _, hs_doff, hs_up, hs_dn, _, pb_par, _) = model.arrays
    eff = np.zeros(model.n_params, dtype=bool)
    eff[pb_par] = True
    for blk in range(blk_b0.shape[0]):
        nb, off = int(blk_nb[blk]), int(blk_off[blk])
        active = bool(np.any(nom[off:off + nb] != 0.0))
        for h in range(hs_ptr[blk], hs_ptr[blk + 1]):
            d = slice(int(hs_doff[h]), int(hs_doff[h]) + nb)
            if np.any(hs_up[d] != 0.0) or np.any(hs_dn[d] != 0.0):
                eff[hs_par[h]] = True
                active = True
        if active:
            for t in range(sc_ptr[blk], sc_ptr[blk + 1]):
                if sc_kind[t] == core.SC_LINEAR or sc_lhi[t] != 0.0 or sc_llo[t] != 0.0:
                    eff[sc_par[t]] = True
    return eff


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_BLAS_CONTROLLER: list[Any] = []


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Hold BLAS to one thread: OpenBLAS threads oversubscribe the cores when the refits already
    run in threads, and on a loaded machine they made one Hesse step of a 249-parameter model
    seconds slow. The controller (a scan of the loaded libraries, ~10 ms) is made once."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    if not _BLAS_CONTROLLER:
        _BLAS_CONTROLLER.append(ThreadpoolController())
    with _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas"):
        yield


def _run_refits(model: Model, nominal: FitResult, data: np.ndarray, bounds: np.ndarray,
                pars: np.ndarray, values: np.ndarray, *, n_jobs: int, progress: bool,
                maxiter: int, tol: float, chord_max: int) -> tuple[np.ndarray, np.ndarray]:
    """POI of each refit (K,) and its convergence flag (K,)."""
    from tqdm.auto import tqdm

    K = pars.shape[0]
    mu = np.empty(K)
    conv = np.empty(K, dtype=bool)
    if K == 0:
        return mu, conv
    args = (np.ascontiguousarray(nominal.bestfit), np.ascontiguousarray(nominal.covariance), data,
            np.ascontiguousarray(bounds[:, 0]), np.ascontiguousarray(bounds[:, 1]),
            np.ascontiguousarray(nominal.fixed, dtype=np.bool_), model.arrays, model.aux_arrays)
    poi = model.poi_index

    def run(sl: slice) -> int:
        theta, status, _, _ = _refit_batch(*args, pars[sl], values[sl], maxiter, tol, chord_max)
        mu[sl] = theta[:, poi]
        conv[sl] = status == core.FIT_CONVERGED
        return sl.stop - sl.start

    n_chunks = min(K, max(4 * n_jobs, 8 if progress else 1))
    edges = np.linspace(0, K, n_chunks + 1).astype(int)
    chunks = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    with _single_threaded_blas(), tqdm(total=K, desc="ranking refits", disable=not progress, leave=False) as bar:
        if n_jobs == 1:
            for sl in chunks:
                bar.update(run(sl))
        else:
            with ThreadPoolExecutor(n_jobs, thread_name_prefix="nextstat-rank") as pool:
                for done in pool.map(run, chunks):
                    bar.update(done)
    return mu, conv


# ---------------------------------------------------------------------------------------------
# ranking
# ---------------------------------------------------------------------------------------------


def _check_int(value: Any, what: str, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}: expected an integer >= 1{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _sort_key(sort_by: str):
    def none_last(x: float | None) -> float:
        return -math.inf if x is None else x

    if sort_by == "total":
        return lambda r: -r["total_impact"]
    if sort_by == "postfit":
        return lambda r: -max(abs(r["delta_mu_up"]), abs(r["delta_mu_down"]))
    if sort_by == "prefit":
        return lambda r: -none_last(None if r["prefit_delta_mu_up"] is None else
                                    abs(r["prefit_delta_mu_up"]) + abs(r["prefit_delta_mu_down"]))
    return lambda r: r["name"]


def rank_impact(
    model: Model,
    *,
    top_n: int | None = None,
    sort_by: str = "total",
    data: Any = None,
    progress: bool = False,
    n_jobs: int | None = None,
    include_unconstrained: bool = False,
    fit_result: FitResult | None = None,
    init_pars: Any = None,
    fixed_params: Any = None,
    par_bounds: Any = None,
    maxiter: int = 200,
    tol: float = 1e-10,
    chord_max: int = 30,
) -> list[dict[str, Any]]:
    """Rank nuisance parameters by their impact on the POI (definitions in the module docstring).

    Args:
        model: compiled model; its POI must be free.
        top_n: keep the ``top_n`` highest-ranked rows (all parameters are fitted regardless).
        sort_by: ``"total"`` (``|delta_mu_up| + |delta_mu_down|``), ``"postfit"``
            (``max(|delta_mu_up|, |delta_mu_down|)``, cabinetry's plot order), ``"prefit"``
            (``|prefit_delta_mu_up| + |prefit_delta_mu_down|``; unconstrained parameters last)
            or ``"name"`` (alphabetical). Ties keep the model's parameter order.
        data: main + auxiliary data, or main only; default observed.
        progress: show a progress bar over the refits.
        n_jobs: threads for the refits; default: the CPUs this process may use.
        include_unconstrained: also rank free normfactors/shapefactors (post-fit impacts only).
        fit_result: the nominal fit of ``model`` to ``data`` with Hesse errors (from
            :func:`nextstat.fit` with the same ``data``, ``fixed_params`` and ``par_bounds``);
            default: fitted here.
        init_pars, fixed_params, par_bounds: as in :func:`nextstat.fit`, for the nominal fit and
            the refits. Fixed parameters are neither ranked nor refitted.
        maxiter, tol: iteration limit and EDM tolerance of each refit (the POI is then within
            about ``sqrt(2 tol)`` times its error of the conditional minimum).
        chord_max: fixed-Hessian Newton steps tried before the full Newton fit takes over.

    Returns:
        One dict per ranked parameter, sorted, with the keys of :data:`COLUMNS`:

        - ``rank`` (1-based), ``name``;
        - ``total_impact``, ``delta_mu_up``, ``delta_mu_down``: post-fit impacts;
        - ``prefit_delta_mu_up``, ``prefit_delta_mu_down``: pre-fit impacts (None if unconstrained);
        - ``pull``, ``constraint``: ``(theta_hat - theta0) / sigma`` and ``sigma_hat / sigma``
          (None if unconstrained);
        - ``bestfit`` (theta_hat), ``error`` (sigma_hat), ``prior_width`` (sigma), ``theta0``;
        - ``constrained``: whether the parameter has a constraint term;
        - ``clipped``: whether a shifted value was clipped to a bound; ``clipped_shifts`` lists
          which of ``"postfit_up"``, ``"postfit_down"``, ``"prefit_up"``, ``"prefit_down"``;
        - ``converged``: all refits of this parameter converged.

        Values are plain Python floats/bools/strings (JSON-serialisable).

    Raises:
        ValueError: bad arguments, a model without a POI, a fixed POI, or a nominal fit that did
            not converge.

    Example::

        table = rank_impact(model, top_n=10)
        for row in table:
            print(f"{row['rank']:2d}. {row['name']:30s}  impact={row['total_impact']:.4f}")
    """
    top_n = _check_int(top_n, "top_n")
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by: expected one of {SORT_KEYS}, got {sort_by!r}")
    n_jobs = _check_int(n_jobs, "n_jobs")
    chord_max = _check_int(chord_max, "chord_max", allow_none=False)
    if model.poi_index is None:
        raise ValueError("model: a POI is required for a ranking")
    poi = model.poi_index
    d = model._data(data)
    fixed = _fixed_mask(model, fixed_params)
    if fixed[poi]:
        raise ValueError(f"the POI {model.poi_name!r} is fixed: its impacts are undefined")
    bounds = _bounds(model, par_bounds)

    if fit_result is None:
        with _single_threaded_blas():
            fit_result = fit(model, data=d, init_pars=init_pars, fixed_params=fixed, par_bounds=bounds, hesse=True)
    elif fit_result.bestfit.shape != (model.n_params,) or not np.array_equal(fit_result.fixed, fixed):
        raise ValueError("fit_result: not a fit of this model with these fixed parameters")
    if not fit_result.converged:
        raise ValueError(f"the nominal fit did not converge ({fit_result.message}); no ranking")
    if not np.any(fit_result.covariance):
        raise ValueError("fit_result: has no covariance (fit with hesse=True)")

    theta_hat = fit_result.bestfit
    sigma_hat = fit_result.errors
    mu_hat = float(theta_hat[poi])
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = model.prior_widths()
        theta0 = np.full(model.n_params, np.nan)
        aux_par, aux_kind, _, aux_tau = model.aux_arrays
        aux = d[model.n_bins:]
        theta0[aux_par] = np.where(aux_kind == core.AUX_GAUSS, aux, aux / aux_tau)
    # a constraint that does not constrain (a Poisson constraint with tau = 0, as pyhf builds for
    # a shapesys on a yield whose square underflows) ranks as an unconstrained parameter
    constrained = model.constrained & np.isfinite(prior) & (prior > 0) & np.isfinite(theta0)

    ranked = ~fixed & (constrained | include_unconstrained)
    ranked[poi] = False
    idx = np.flatnonzero(ranked)

    # four shifted values per parameter, clipped to the bounds; equal to theta_hat: no fit
    lo, hi = bounds[idx, 0], bounds[idx, 1]
    th = theta_hat[idx]
    pw = np.where(constrained[idx], prior[idx], 0.0)
    raw = np.stack([th + sigma_hat[idx], th - sigma_hat[idx], th + pw, th - pw], axis=1)
    shifted = np.clip(raw, lo[:, None], hi[:, None])
    clipped = shifted != raw
    need = (shifted != th[:, None]) & _affects_rates(model)[idx, None]
    need[:, 2:] &= constrained[idx, None]
    rows, cols = np.nonzero(need)
    pars = idx[rows].astype(np.int64)
    values = np.ascontiguousarray(shifted[rows, cols])

    n_jobs = min(n_jobs or _usable_cpus(), max(1, len(pars)))
    mu, conv = _run_refits(model, fit_result, d, bounds, pars, values, n_jobs=n_jobs, progress=progress,
                           maxiter=maxiter, tol=tol, chord_max=chord_max)
    impact = np.zeros(raw.shape)
    converged = np.ones(raw.shape, dtype=bool)
    impact[rows, cols] = mu - mu_hat
    converged[rows, cols] = conv

    names = model.parameter_names
    table: list[dict[str, Any]] = []
    for r, i in enumerate(idx):
        con = bool(constrained[i])
        up, dn = float(impact[r, 0]), float(impact[r, 1])
        table.append({
            "rank": 0,
            "name": names[i],
            "total_impact": abs(up) + abs(dn),
            "delta_mu_up": up,
            "delta_mu_down": dn,
            "prefit_delta_mu_up": float(impact[r, 2]) if con else None,
            "prefit_delta_mu_down": float(impact[r, 3]) if con else None,
            "pull": float((theta_hat[i] - theta0[i]) / prior[i]) if con else None,
            "constraint": float(sigma_hat[i] / prior[i]) if con else None,
            "bestfit": float(theta_hat[i]),
            "error": float(sigma_hat[i]),
            "prior_width": float(prior[i]) if con else None,
            "theta0": float(theta0[i]) if con else None,
            "constrained": con,
            "clipped": bool(clipped[r].any()),
            "clipped_shifts": [s for s, c in zip(_SHIFTS, clipped[r]) if c],
            "converged": bool(converged[r].all()),
        })
    failed = [row["name"] for row in table if not row["converged"]]
    if failed:
        warnings.warn(f"rank_impact: refits of {len(failed)} parameters did not converge ({', '.join(failed[:5])}"
                      f"{' ...' if len(failed) > 5 else ''}; see the rows' 'converged')", ConvergenceWarning, stacklevel=2)
    table.sort(key=_sort_key(sort_by))
    if top_n is not None:
        table = table[:top_n]
    for k, row in enumerate(table, 1):
        row["rank"] = k
    return table


def rank_impact_df(
    model: Model,
    *,
    top_n: int | None = None,
    sort_by: str = "total",
    data: Any = None,
    progress: bool = False,
    n_jobs: int | None = None,
    include_unconstrained: bool = False,
    fit_result: FitResult | None = None,
    init_pars: Any = None,
    fixed_params: Any = None,
    par_bounds: Any = None,
    maxiter: int = 200,
    tol: float = 1e-10,
    chord_max: int = 30,
):
    """:func:`rank_impact` as a ``pandas.DataFrame``, one row per parameter, columns :data:`COLUMNS`.

    Arguments as in :func:`rank_impact`. Missing values (pre-fit impacts, pull and constraint of
    unconstrained parameters) are NaN.
    """
    import pandas as pd

    table = rank_impact(model, top_n=top_n, sort_by=sort_by, data=data, progress=progress, n_jobs=n_jobs,
                        include_unconstrained=include_unconstrained, fit_result=fit_result, init_pars=init_pars,
                        fixed_params=fixed_params, par_bounds=par_bounds, maxiter=maxiter, tol=tol,
                        chord_max=chord_max)
    return pd.DataFrame.from_records(table, columns=list(COLUMNS))


# ---------------------------------------------------------------------------------------------
# text and plots
# ---------------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_ranking(table: Sequence[dict[str, Any]]) -> str:
    """A text table of :func:`rank_impact` rows, one line per parameter.

    Columns: rank, parameter, total impact, post-fit impacts (NP at ``theta_hat +- sigma_hat``),
    pre-fit impacts (NP at ``theta_hat +- sigma``), pull and constraint, and notes
    (``clipped: <shifts>``, ``not converged``).
    """
    if not table:
        return "no nuisance parameters to rank"
    width = max(9, *(len(r["name"]) for r in table))
    head = (f"{'rank':>4}  {'parameter':<{width}}  {'impact':>9}  {'post +1s':>9}  {'post -1s':>9}  "
            f"{'pre +1s':>9}  {'pre -1s':>9}  {'pull':>7}  {'constr':>6}  notes")
    lines = [head, "-" * len(head)]
    for r in table:
        notes = []
        if r["clipped"]:
            notes.append("clipped: " + ",".join(r["clipped_shifts"]))
        if not r["converged"]:
            notes.append("not converged")
        lines.append(
            f"{r['rank']:>4}  {r['name']:<{width}}  {r['total_impact']:>9.4f}  {r['delta_mu_up']:>+9.4f}  "
            f"{r['delta_mu_down']:>+9.4f}  {_num(r['prefit_delta_mu_up'], '+9.4f'):>9}  "
            f"{_num(r['prefit_delta_mu_down'], '+9.4f'):>9}  {_num(r['pull'], '+7.3f'):>7}  "
            f"{_num(r['constraint'], '6.3f'):>6}  {'; '.join(notes)}".rstrip()
        )
    return "\n".join(lines)


UP_COLOR = "#3b75af"
DOWN_COLOR = "#5fbcd3"


def draw_rank_impact(
    names: Sequence[str],
    postfit_up: Any,
    postfit_down: Any,
    prefit_up: Any,
    prefit_down: Any,
    pulls: Any,
    constraints: Any,
    *,
    impact_label: str = r"$\Delta\hat{\mu}$",
    ax: Any = None,
):
    """Draw a ranking plot (cabinetry / ROOT layout), first parameter on top.

    Impacts on the POI are horizontal bars against the upper x axis: pre-fit impacts as
    outlines, post-fit impacts filled (dark: NP shifted up, light: down). Pulls
    ``(theta_hat - theta0) / sigma`` with error bars equal to the constraint
    ``sigma_hat / sigma`` are black points against the lower x axis (a ``twiny`` pair), with
    dashed lines at -1, 0 and +1.

    Args:
        names: parameter names, length ``n``.
        postfit_up, postfit_down, prefit_up, prefit_down: POI shifts, shape ``(n,)``; NaN (or
            None) draws no bar (e.g. no pre-fit impact for an unconstrained parameter).
        pulls, constraints: shape ``(n,)``; NaN/None draws no point.
        impact_label: label of the impact (upper) axis.
        ax: Axes for the pulls (the impact axis is its ``twiny``); None creates a ``Figure``.

    Returns:
        The Figure holding the axes.

    Raises:
        ValueError: on mismatched shapes or an empty ``names``.
    """
    from nextstat.plots._common import as_1d, new_axes

    n = len(names)
    if n == 0:
        raise ValueError("names: nothing to draw")

    def arr(x: Any, what: str) -> np.ndarray:
        return as_1d([np.nan if v is None else v for v in x], what, n)

    post_up, post_dn = arr(postfit_up, "postfit_up"), arr(postfit_down, "postfit_down")
    pre_up, pre_dn = arr(prefit_up, "prefit_up"), arr(prefit_down, "prefit_down")
    pull, constr = arr(pulls, "pulls"), arr(constraints, "constraints")

    own = ax is None
    longest = max(len(str(name)) for name in names)
    ax_pull = new_axes(ax, (5.6 + 0.075 * max(longest, 32), 1.9 + 0.36 * n))  # room for the labels
    fig = ax_pull.figure
    ax_imp = ax_pull.twiny()
    ax_pull.set_zorder(ax_imp.get_zorder() + 1)  # points above the bars
    ax_pull.patch.set_visible(False)

    y = np.arange(n)[::-1].astype(float)
    h = 0.7
    for k in range(n):  # light bands on every other row guide the eye along long rows
        if k % 2 == 0:
            ax_imp.axhspan(y[k] - 0.5, y[k] + 0.5, color="0.94", linewidth=0, zorder=0)
    # post-fit bars: the longer of the two behind, so that both stay visible when they point
    # the same way; pre-fit outlines on top
    pu, pd = np.nan_to_num(post_up), np.nan_to_num(post_dn)
    up_behind = np.abs(pu) >= np.abs(pd)
    for behind in (True, False):
        val = np.where(up_behind == behind, pu, pd)
        col = np.where(up_behind == behind, UP_COLOR, DOWN_COLOR)
        ax_imp.barh(y, val, height=h, color=list(col), linewidth=0, zorder=2)
    ax_imp.barh(y, np.nan_to_num(pre_up), height=h, fill=False, edgecolor=UP_COLOR, linewidth=1.3, zorder=3)
    ax_imp.barh(y, np.nan_to_num(pre_dn), height=h, fill=False, edgecolor=DOWN_COLOR, linewidth=1.3, zorder=3)
    ax_imp.axvline(0.0, color="black", linewidth=0.6, zorder=1)
    reach = np.nanmax(np.abs(np.r_[post_up, post_dn, pre_up, pre_dn, 0.0]))
    reach = reach if np.isfinite(reach) and reach > 0 else 1.0
    ax_imp.set_xlim(-1.15 * reach, 1.15 * reach)
    ax_imp.set_xlabel(impact_label)

    for x in (-1.0, 1.0):
        ax_pull.axvline(x, color="dimgray", linestyle="--", linewidth=0.8, zorder=1)
    ax_pull.axvline(0.0, color="dimgray", linestyle=":", linewidth=0.8, zorder=1)
    ok = np.isfinite(pull)
    ax_pull.errorbar(pull[ok], y[ok], xerr=np.nan_to_num(constr[ok]), fmt="o", color="black",
                     markersize=4, elinewidth=1.2, capsize=0, zorder=4)
    span = np.nanmax(np.abs(np.r_[pull[ok] + np.nan_to_num(constr[ok]), pull[ok] - np.nan_to_num(constr[ok]), 0.0]))
    lim = max(2.0, math.ceil(1.1 * span * 2) / 2)
    ax_pull.set_xlim(-lim, lim)
    ax_pull.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
    ax_pull.set_yticks(y, list(names))
    ax_pull.set_ylim(-0.6, n - 0.4)
    ax_pull.tick_params(axis="y", length=0)
    for a in (ax_pull, ax_imp):
        a.tick_params(axis="x", direction="in", which="both")
        a.minorticks_on()
        a.tick_params(axis="y", which="minor", left=False, right=False)

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="none", edgecolor=UP_COLOR, linewidth=1.3),
        Patch(facecolor="none", edgecolor=DOWN_COLOR, linewidth=1.3),
        Patch(facecolor=UP_COLOR),
        Patch(facecolor=DOWN_COLOR),
        Line2D([], [], color="black", marker="o", markersize=4, linewidth=1.2),
    ]
    labels = [
        r"pre-fit impact, $\theta = \hat{\theta} + \Delta\theta$",
        r"pre-fit impact, $\theta = \hat{\theta} - \Delta\theta$",
        r"post-fit impact, $\theta = \hat{\theta} + \Delta\hat{\theta}$",
        r"post-fit impact, $\theta = \hat{\theta} - \Delta\hat{\theta}$",
        "pull (constraint as error bar)",
    ]
    if own:
        fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False, fontsize="small",
                   columnspacing=1.2, handlelength=1.6)
    else:
        ax_pull.legend(handles, labels, loc="lower right", fontsize="x-small", framealpha=0.9)
    return fig


def plot_rank_impact(
    model: Model,
    *,
    top_n: int | None = 20,
    ax: Any = None,
    table: Sequence[dict[str, Any]] | None = None,
    sort_by: str = "total",
    data: Any = None,
    n_jobs: int | None = None,
    progress: bool = False,
    include_unconstrained: bool = False,
):
    """Ranking plot of the ``top_n`` leading parameters (see :func:`draw_rank_impact`).

    Args:
        model: the model (its POI names the impact axis).
        top_n: number of parameters drawn (None: all).
        ax: Axes to draw on; None creates a new ``Figure``.
        table: rows of :func:`rank_impact` (already sorted) to draw instead of computing them;
            the first ``top_n`` are drawn.
        sort_by, data, n_jobs, progress, include_unconstrained: passed to :func:`rank_impact`
            when ``table`` is None.

    Returns:
        The Figure; saving is left to the caller (``fig.savefig("ranking.png", dpi=150)``).
    """
    top_n = _check_int(top_n, "top_n")
    if table is None:
        table = rank_impact(model, top_n=top_n, sort_by=sort_by, data=data, n_jobs=n_jobs,
                            progress=progress, include_unconstrained=include_unconstrained)
    rows = list(table)[:top_n] if top_n is not None else list(table)
    if not rows:
        raise ValueError("table: no ranked parameter to draw")
    label = rf"$\Delta\hat{{\mu}}$ ({model.poi_name})"
    col = {k: [r[k] for r in rows] for k in ("name", "delta_mu_up", "delta_mu_down", "prefit_delta_mu_up",
                                             "prefit_delta_mu_down", "pull", "constraint")}
    return draw_rank_impact(col["name"], col["delta_mu_up"], col["delta_mu_down"], col["prefit_delta_mu_up"],
                            col["prefit_delta_mu_down"], col["pull"], col["constraint"], impact_label=label, ax=ax)
