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

Two methods (``method=``):

* ``"refit"`` (default): the shifted fits themselves (speed: :mod:`nextstat.interpret._refits`);
* ``"hesse"``: the linear approximation from the covariance ``C`` of the nominal fit, at the
  cost of that one fit (CMS Combine's ``combineTool.py -M Impacts --approx hesse``): holding
  ``theta_i`` at ``theta_hat_i + s`` moves the profiled POI by ``C[mu, i] / C[i, i] * s``, the
  regression of ``mu`` on ``theta_i`` of the Gaussian approximation of the likelihood, so::

      delta_mu_up/down        = +- C[mu, i] / sigma_hat_i        (s = +- sigma_hat_i)
      prefit_delta_mu_up/down = +- C[mu, i] / C[i, i] * sigma_i  (s = +- sigma_i)

  (with ``s`` clipped to the bounds as for the refits). Exact for a likelihood quadratic in the
  parameters; otherwise the refits show the non-linearity (asymmetric impacts, a constraint
  pulled far from the best fit).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nextstat._html import html_summary, html_table, pdg_round
from nextstat.engine.threads import single_threaded_blas, usable_cpus
from nextstat.engine.compiled.codes import AUX_GAUSS
from nextstat.engine.layout import AUX_KIND, AUX_PAR, AUX_TAU
from nextstat.errors import ConvergenceWarning
from nextstat.infer.fit import _bounds, _fixed_mask, fit
from nextstat.interpret._refits import _affects_rates, _run_refits
from nextstat.model import Model, require_model
from nextstat.results import FitResult

__all__ = ["COLUMNS", "METHODS", "RankingResult", "format_ranking", "rank_impact", "rank_impact_df"]

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

#: ranking methods (module docstring)
METHODS = ("refit", "hesse")


class RankingResult(list):
    """The rows of a ranking (a ``list`` of dicts with the keys of :data:`COLUMNS`, sorted) and
    what they were computed from.

    It is the list :func:`rank_impact` always returned (indexing, iteration, ``json.dumps``
    work as before; slices are plain lists) with, in addition:

    Attributes:
        method: ``"refit"`` or ``"hesse"``.
        sort_by: the sort order of the rows.
        poi_name, mu_hat, mu_error: the POI and its nominal best fit with Hesse error.
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), *, method: str = "refit", sort_by: str = "total",
                 poi_name: str = "mu", mu_hat: float | None = None, mu_error: float | None = None):
        super().__init__(rows)
        self.method = method
        self.sort_by = sort_by
        self.poi_name = poi_name
        self.mu_hat = mu_hat
        self.mu_error = mu_error

    def to_dataframe(self):
        """One row per parameter, columns :data:`COLUMNS` (missing values NaN). Needs pandas."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self), columns=list(COLUMNS))

    def __str__(self) -> str:
        return format_ranking(self)

    def _repr_html_(self) -> str:
        rows = [(r["rank"], r["name"], r["total_impact"], r["delta_mu_up"], r["delta_mu_down"],
                 r["prefit_delta_mu_up"], r["prefit_delta_mu_down"], r["pull"], r["constraint"], _notes(r))
                for r in self]
        table = html_table(rows, ["rank", "parameter", "impact", "post +1\u03c3", "post -1\u03c3", "pre +1\u03c3",
                                  "pre -1\u03c3", "pull", "constraint", "notes"], bad=[not r["converged"] for r in self])
        mu = None
        if self.mu_hat is not None:
            v, e = pdg_round(self.mu_hat, self.mu_error)
            mu = f"{v} \u00b1 {e}" if self.mu_error is not None else v
        items = {"POI": self.poi_name, "best fit": mu, "method": self.method, "sorted by": self.sort_by,
                 "parameters": len(self)}
        return html_summary("Ranking of the impacts on the POI", items, table, ok=all(r["converged"] for r in self))


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



@dataclass(frozen=True)
class NominalFit:
    """What an impact computation starts from: the POI index, the data, the fixed mask, the
    bounds and the converged nominal fit with Hesse errors."""

    poi: int
    data: np.ndarray
    fixed: np.ndarray
    bounds: np.ndarray
    fit: FitResult


def nominal_fit(model: Model, *, data: Any, fit_result: FitResult | None, init_pars: Any, fixed_params: Any,
                par_bounds: Any, what: str) -> NominalFit:
    """The checked inputs and the converged nominal fit (``fit_result`` checked, or fitted here)
    of the impact computation ``what``; ValueError (TypeError for a wrong type) naming what is wrong."""
    if require_model(model).poi_index is None:
        raise ValueError(f"model: a POI is required for {what}")
    poi = model.poi_index
    d = model._data(data)
    fixed = _fixed_mask(model, fixed_params)
    if fixed[poi]:
        raise ValueError(f"the POI {model.poi_name!r} is fixed: cannot compute {what}")
    bounds = _bounds(model, par_bounds)
    if fit_result is None:
        with single_threaded_blas():
            fit_result = fit(model, data=d, init_pars=init_pars, fixed_params=fixed, par_bounds=bounds, hesse=True)
    elif not isinstance(fit_result, FitResult):
        raise TypeError(f"fit_result: expected a nextstat FitResult, got {type(fit_result).__name__}")
    elif fit_result.bestfit.shape != (model.n_params,) or not np.array_equal(fit_result.fixed, fixed):
        raise ValueError("fit_result: not a fit of this model with these fixed parameters")
    if not fit_result.converged:
        raise ValueError(f"the nominal fit did not converge ({fit_result.message}): cannot compute {what}")
    if fit_result.covariance is None or not np.any(fit_result.covariance):
        raise ValueError("fit_result: has no covariance (fit with hesse=True)")
    return NominalFit(poi, d, fixed, bounds, fit_result)


def rank_impact(
    model: Model,
    *,
    method: str = "refit",
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
) -> RankingResult:
    """Rank nuisance parameters by their impact on the POI (definitions in the module docstring).

    Args:
        model: compiled model; its POI must be free.
        method: ``"refit"`` (fits with each parameter held at its shifted values) or
            ``"hesse"`` (the linear approximation ``C[mu, i] / C[i, i] * shift`` from the nominal
            fit's covariance: one fit in all; ``progress``, ``n_jobs``, ``maxiter``, ``tol``
            and ``chord_max`` are then unused).
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
        :class:`RankingResult`: a list of one dict per ranked parameter, sorted, with the
        keys of :data:`COLUMNS` (the same for both methods; with ``"hesse"`` every row is
        ``converged`` as the nominal fit is):

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
        TypeError: ``model`` not a Model or ``fit_result`` not a FitResult.

    Example::

        table = rank_impact(model, top_n=10)
        for row in table:
            print(f"{row['rank']:2d}. {row['name']:30s}  impact={row['total_impact']:.4f}")
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    top_n = _check_int(top_n, "top_n")
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by: expected one of {SORT_KEYS}, got {sort_by!r}")
    n_jobs = _check_int(n_jobs, "n_jobs")
    chord_max = _check_int(chord_max, "chord_max", allow_none=False)
    nominal = nominal_fit(model, data=data, fit_result=fit_result, init_pars=init_pars, fixed_params=fixed_params,
                          par_bounds=par_bounds, what="a ranking")
    poi, d, fixed, bounds, fit_result = nominal.poi, nominal.data, nominal.fixed, nominal.bounds, nominal.fit

    theta_hat = fit_result.bestfit
    sigma_hat = fit_result.errors
    mu_hat = float(theta_hat[poi])
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = model.prior_widths()
        theta0 = np.full(model.n_params, np.nan)
        aux_par = model.aux_arrays[AUX_PAR]
        aux_kind = model.aux_arrays[AUX_KIND]
        aux_tau = model.aux_arrays[AUX_TAU]
        aux = d[model.n_bins:]
        theta0[aux_par] = np.where(aux_kind == AUX_GAUSS, aux, aux / aux_tau)
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

    impact = np.zeros(raw.shape)
    converged = np.ones(raw.shape, dtype=bool)
    if method == "hesse":
        cov = fit_result.covariance
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(np.diag(cov)[pars] > 0, cov[poi, pars] / np.diag(cov)[pars], 0.0)
        impact[rows, cols] = slope * (values - theta_hat[pars])
    else:
        n_jobs = min(n_jobs or usable_cpus(), max(1, len(pars)))
        mu, conv = _run_refits(model, fit_result, d, bounds, pars, values, n_jobs=n_jobs, progress=progress,
                               maxiter=maxiter, tol=tol, chord_max=chord_max)
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
    return RankingResult(table, method=method, sort_by=sort_by, poi_name=model.poi_name, mu_hat=mu_hat,
                         mu_error=float(sigma_hat[poi]))



def rank_impact_df(
    model: Model,
    *,
    method: str = "refit",
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
    table = rank_impact(model, method=method, top_n=top_n, sort_by=sort_by, data=data, progress=progress, n_jobs=n_jobs,
                        include_unconstrained=include_unconstrained, fit_result=fit_result, init_pars=init_pars,
                        fixed_params=fixed_params, par_bounds=par_bounds, maxiter=maxiter, tol=tol,
                        chord_max=chord_max)
    return table.to_dataframe()


# ---------------------------------------------------------------------------------------------
# text
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
        lines.append(
            f"{r['rank']:>4}  {r['name']:<{width}}  {r['total_impact']:>9.4f}  {r['delta_mu_up']:>+9.4f}  "
            f"{r['delta_mu_down']:>+9.4f}  {_num(r['prefit_delta_mu_up'], '+9.4f'):>9}  "
            f"{_num(r['prefit_delta_mu_down'], '+9.4f'):>9}  {_num(r['pull'], '+7.3f'):>7}  "
            f"{_num(r['constraint'], '6.3f'):>6}  {_notes(r)}".rstrip()
        )
    return "\n".join(lines)


def _notes(row: dict[str, Any]) -> str:
    """``clipped: <shifts>`` and ``not converged`` notes of a ranking row."""
    notes = []
    if row["clipped"]:
        notes.append("clipped: " + ",".join(row["clipped_shifts"]))
    if not row["converged"]:
        notes.append("not converged")
    return "; ".join(notes)
