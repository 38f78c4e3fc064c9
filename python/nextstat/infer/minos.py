"""MINOS: profile-likelihood intervals of single parameters.

The interval of parameter ``x`` is where the profile likelihood ratio stays within one unit,

    2 (NLL(x, theta_hat_hat(x)) - NLL(x_hat, theta_hat)) <= 1

(F. James, *MINUIT Reference Manual*, CERN D506, "MINOS"; the 68.3% interval of
arXiv:1007.1727 sec. 3 for one parameter), with every other free parameter profiled. Each end
is found by bracketing the crossing of ``2 delta NLL = 1`` with conditional fits stepping out
from the best fit (steps of the Hesse error, doubling), then by Brent's method
(``scipy.optimize.brentq``) on the conditional fits; both loops are bounded. The NLL is
differenced in its cancellation-free form (:meth:`Fitter.nll_dev <nextstat.engine.fitter.Fitter.nll_dev>`). An end
beyond the parameter's bound is reported at the bound and flagged (``lower_at_bound`` /
``upper_at_bound``), as Minuit's ``at_lower_limit`` / ``at_upper_limit``.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nextstat._html import html_summary, html_table
from nextstat.errors import ConvergenceWarning
from nextstat.engine.fitter import DevFit, resolve_fitter
from nextstat.infer.fit import _bounds, better, fit, kink_fit, retry_starts
from nextstat.model import Model, require_model
from nextstat.results import FitResult, _ToDict

__all__ = ["MinosInterval", "MinosResult", "minos"]

#: doublings of the step while bracketing a crossing
MAX_BRACKET_STEPS = 40
#: iterations of Brent's method per crossing
MAX_ROOT_ITERATIONS = 100
#: refits of the free fit when a conditional fit lies below it (a better minimum found)
MAX_FREE_REFITS = 2


@dataclass(frozen=True, repr=False)
class MinosInterval(_ToDict):
    """The MINOS interval of one parameter.

    Attributes:
        name: the parameter. value: its best-fit value.
        minus, plus: the errors, ``lower - value`` (<= 0) and ``upper - value`` (>= 0), in
            Minuit's sign convention.
        lower_at_bound, upper_at_bound: the crossing lies beyond the parameter's bound; the
            end is the bound itself (the interval is cut there).
        lower_converged, upper_converged: the crossing was bracketed and found (Brent's method
            converged), and the conditional fits it was built on converged.
        n_fits: conditional fits made for this parameter.
    """

    name: str
    value: float
    minus: float
    plus: float
    lower_at_bound: bool
    upper_at_bound: bool
    lower_converged: bool
    upper_converged: bool
    n_fits: int

    @property
    def lower(self) -> float:
        return self.value + self.minus

    @property
    def upper(self) -> float:
        return self.value + self.plus

    @property
    def converged(self) -> bool:
        return self.lower_converged and self.upper_converged

    def __repr__(self) -> str:
        flags = [f for f, on in (("lower at bound", self.lower_at_bound), ("upper at bound", self.upper_at_bound),
                                 ("not converged", not self.converged)) if on]
        return (f"MinosInterval({self.name!r}: {self.value:.6g} {self.minus:+.4g} {self.plus:+.4g}"
                f"{'; ' + ', '.join(flags) if flags else ''})")


@dataclass(frozen=True, repr=False)
class MinosResult(_ToDict):
    """MINOS intervals of one or more parameters (:func:`minos`).

    Attributes:
        intervals: one :class:`MinosInterval` per parameter, in the order asked for.
        fit_result: the free fit the intervals are measured from.
        converged: the free fit and every crossing converged (a
            :class:`nextstat.errors.ConvergenceWarning` is issued otherwise).
    """

    intervals: tuple[MinosInterval, ...]
    fit_result: FitResult
    converged: bool

    @property
    def errors(self) -> Mapping[str, tuple[float, float]]:
        """``{name: (minus, plus)}`` (read-only), ``minus <= 0 <= plus``."""
        return types.MappingProxyType({iv.name: (iv.minus, iv.plus) for iv in self.intervals})

    def __getitem__(self, name: str) -> MinosInterval:
        for iv in self.intervals:
            if iv.name == name:
                return iv
        raise KeyError(f"no MINOS interval for {name!r}; have {[iv.name for iv in self.intervals]}")

    def to_dict(self) -> dict[str, Any]:
        return {"errors": {k: list(v) for k, v in self.errors.items()},
                "intervals": [iv.to_dict() for iv in self.intervals],
                "converged": self.converged, "fit": self.fit_result.to_dict()}

    def to_dataframe(self):
        """One row per interval (index: parameter), columns the :class:`MinosInterval` fields
        after ``name`` and ``lower``, ``upper``. Needs pandas."""
        import pandas as pd

        rows = [{**{k: v for k, v in iv.to_dict().items() if k != "name"}, "lower": iv.lower, "upper": iv.upper}
                for iv in self.intervals]
        return pd.DataFrame(rows, index=pd.Index([iv.name for iv in self.intervals], name="parameter"))

    def __repr__(self) -> str:
        return f"MinosResult(converged={self.converged}, intervals={list(self.intervals)!r})"

    def _repr_html_(self) -> str:
        rows = [(iv.name, iv.value, iv.minus, iv.plus, iv.lower_at_bound, iv.upper_at_bound, iv.n_fits)
                for iv in self.intervals]
        table = html_table(rows, ["parameter", "value", "minus", "plus", "lower at bound", "upper at bound", "fits"],
                           bad=[not iv.converged for iv in self.intervals])
        return html_summary("MinosResult", {"converged": self.converged, "free fit NLL": self.fit_result.nll},
                            table, ok=self.converged)

    def __str__(self) -> str:
        width = max([len(iv.name) for iv in self.intervals] + [9])
        lines = [f"MINOS intervals (2 delta NLL = 1){'' if self.converged else ' -- NOT all converged'}",
                 f"  {'parameter':<{width}}  {'value':>12}  {'minus':>10}  {'plus':>10}"]
        for iv in self.intervals:
            flags = [f for f, on in (("lower at bound", iv.lower_at_bound), ("upper at bound", iv.upper_at_bound),
                                     ("not converged", not iv.converged)) if on]
            lines.append(f"  {iv.name:<{width}}  {iv.value:>12.6g}  {iv.minus:>+10.4g}  {iv.plus:>+10.4g}"
                         + (f"  ({', '.join(flags)})" if flags else ""))
        return "\n".join(lines)


class _Profile:
    """Conditional fits of parameter ``i`` held at ``x``, the others profiled; remembers the fits
    made so that each starts from the nearest one (moved along the profile's tangent)."""

    def __init__(self, model: Model, data: np.ndarray, theta_hat: np.ndarray, dev_min: float, i: int,
                 fixed: np.ndarray, lo: np.ndarray, hi: np.ndarray, maxiter: int, tol: float):
        self.model, self.data, self.i = model, data, i
        self.lo, self.hi, self.maxiter, self.tol = lo, hi, maxiter, tol
        self.fixed = fixed.copy()
        self.fixed[i] = True
        self.fitter = resolve_fitter("compiled")
        self.dev_min = dev_min
        self.points: list[tuple[float, np.ndarray]] = [(float(theta_hat[i]), theta_hat)]
        self.n_fits = 0
        self.failed = 0
        self.lowest: tuple[float, np.ndarray] | None = None  # a conditional fit below the free one

    def _fit(self, start_from: np.ndarray, x: float) -> DevFit:
        """The fit at parameter ``i`` = ``x`` (held there), started on the tangent of the profile
        at ``start_from``; where it ends unconverged, the retries of :func:`fit` (plain starts,
        then the kink fit) and the best of them (:func:`better`)."""
        m, fitter = self.model, self.fitter
        out = fitter.fit_conditional(m, start_from, x, self.data, self.lo, self.hi, self.fixed, self.maxiter,
                                     self.tol, self.i)
        if out.converged:
            return out
        plain = start_from.copy()
        plain[self.i] = x
        for start in [plain, *retry_starts(m, plain, self.fixed, self.lo, self.hi)]:
            alt = fitter.fit_dev(m, start, self.data, self.lo, self.hi, self.fixed, self.maxiter, self.tol)
            if better(alt.status, alt.nll_dev, out.status, out.nll_dev):
                out = alt
            if out.converged:
                return out

        def run(s: np.ndarray, fx: np.ndarray, blo: np.ndarray, bhi: np.ndarray) -> tuple:
            r = fitter.fit_dev(m, s, self.data, blo, bhi, fx, self.maxiter, self.tol)
            return r.bestfit, r.status, r

        kinked = kink_fit(m, self.data, out.bestfit, self.fixed, self.lo, self.hi, run, fitter)
        if kinked is not None and better(kinked[1], kinked[2].nll_dev, out.status, out.nll_dev):
            out = kinked[2]
        return out

    def __call__(self, x: float) -> float:
        """``2 (NLL(x) - NLL_min) - 1`` (negative inside the interval)."""
        near = min(self.points, key=lambda p: abs(p[0] - x))[1]
        fitted = self._fit(near, x)
        theta, dev = fitted.bestfit, fitted.nll_dev
        self.n_fits += 1
        if not fitted.converged:
            self.failed += 1
        else:
            self.points.append((x, theta))
        if not math.isfinite(dev):
            return math.inf
        if dev < self.dev_min - 1e-9 * max(1.0, abs(self.dev_min)) and (self.lowest is None or dev < self.lowest[0]):
            self.lowest = (dev, theta)
        return 2.0 * (dev - self.dev_min) - 1.0


class _Restart(Exception):
    """A conditional fit found a lower NLL than the free fit (at ``theta``): refit and start over."""

    def __init__(self, theta: np.ndarray):
        super().__init__("a conditional fit below the free fit")
        self.theta = theta


def _crossing(f: _Profile, x_hat: float, step: float, side: float, bound: float) -> tuple[float, bool, bool]:
    """One end of the interval: ``(x, at_bound, converged)``."""
    from scipy.optimize import brentq

    if x_hat == bound:
        return x_hat, True, True
    inner = x_hat
    for _ in range(MAX_BRACKET_STEPS):
        x = x_hat + side * step
        if (x - bound) * side >= 0.0:
            x = bound
        fx = f(x)
        if f.lowest is not None:
            raise _Restart(f.lowest[1])
        if fx >= 0.0:
            break
        if x == bound:
            return bound, True, True
        inner = x
        # next trial: the crossing of the parabola through (x_hat, -1) and (x, fx), with margin,
        # and at least twice the step
        reach = abs(x - x_hat) / math.sqrt(max(fx + 1.0, 1e-12))
        step = max(2.0 * step, min(1.2 * reach, 1e3 * step))
    else:
        return inner, False, False
    if fx == 0.0:
        return x, False, True
    if not math.isfinite(fx):  # the NLL is undefined at x: bisect towards it on the finite side
        lo_x, hi_x = inner, x
        for _ in range(60):
            mid = 0.5 * (lo_x + hi_x)
            fm = f(mid)
            if f.lowest is not None:
                raise _Restart(f.lowest[1])
            if math.isfinite(fm) and fm >= 0.0:
                x, fx = mid, fm
                break
            if math.isfinite(fm):
                lo_x = mid
            else:
                hi_x = mid
        else:
            return inner, False, False
    xtol = 1e-6 * max(step, 1e-12)
    root, info = brentq(f, inner, x, xtol=xtol, rtol=4 * np.finfo(float).eps, maxiter=MAX_ROOT_ITERATIONS,
                        full_output=True, disp=False)
    if f.lowest is not None:
        raise _Restart(f.lowest[1])
    return float(root), False, bool(info.converged)


def _interval(prof: _Profile, theta_hat: np.ndarray, errors: np.ndarray | None, lo: np.ndarray,
              hi: np.ndarray) -> MinosInterval:
    i = prof.i
    x_hat = float(theta_hat[i])
    sigma = None if errors is None else float(errors[i])
    if sigma is None or not (math.isfinite(sigma) and sigma > 0):  # no Hesse error: a tenth of the range
        span = hi[i] - lo[i]
        sigma = 0.1 * span if math.isfinite(span) and span > 0 else 1.0
    x_lo, lo_bound, lo_conv = _crossing(prof, x_hat, sigma, -1.0, float(lo[i]))
    x_hi, hi_bound, hi_conv = _crossing(prof, x_hat, sigma, 1.0, float(hi[i]))
    ok = prof.failed == 0
    return MinosInterval(prof.model.parameter_names[i], x_hat, x_lo - x_hat, x_hi - x_hat, lo_bound, hi_bound,
                         lo_conv and ok, hi_conv and ok, prof.n_fits)


def _parameter_list(model: Model, parameters: Sequence[str] | str | None) -> list[int]:
    if parameters is None:
        if model.poi_index is None:
            raise ValueError("parameters: the model has no POI (the default); name the parameters")
        return [model.poi_index]
    if isinstance(parameters, str):
        parameters = [parameters]
    if not isinstance(parameters, Sequence):
        raise TypeError(f"parameters: expected a parameter name or a list of names, got {type(parameters).__name__}")
    out = []
    for name in parameters:
        if not isinstance(name, str) or name not in model.parameter_names:
            raise ValueError(f"parameters: {name!r} is not a parameter of the model")
        out.append(model.parameter_names.index(name))
    if len(set(out)) != len(out):
        raise ValueError(f"parameters: expected distinct names, got {list(parameters)}")
    return out


def minos(model: Model, parameters: Sequence[str] | str | None = None, *, fit_result: FitResult | None = None,
          data: Any = None, par_bounds: Any = None, maxiter: int = 200, tol: float = 1e-10,
          progress: bool = False) -> MinosResult:
    """MINOS intervals (``2 delta NLL = 1``, the other parameters profiled) of ``parameters``.

    Args:
        model: the model.
        parameters: parameter names (or one name); default the POI (required without one).
        fit_result: the free fit to start from (:func:`nextstat.fit` of ``model`` on ``data``;
            its fixed parameters stay fixed); default: fitted here.
        data: main + auxiliary (or main only) data; default observed.
        par_bounds: shape (n_params, 2); default ``model.suggested_bounds()``.
        maxiter, tol: of each fit, as in :func:`nextstat.fit`.
        progress: show a progress bar over the parameters.

    Returns:
        MinosResult; ``result.errors[name] == (minus, plus)``.

    Raises:
        ValueError: an unknown or fixed parameter, or a ``fit_result`` of another model.
        TypeError: ``model`` not a Model, ``parameters`` not names, ``fit_result`` not a FitResult.

    >>> import nextstat
    >>> m = nextstat.from_pyhf(nextstat.examples.simple_workspace())
    >>> r = nextstat.minos(m)
    >>> minus, plus = r.errors[m.poi_name]
    >>> bool(minus < 0 < plus)
    True
    """
    from tqdm.auto import tqdm

    idx = _parameter_list(require_model(model), parameters)
    d = model.data if data is None else model._data(data)
    bounds = model.suggested_bounds() if par_bounds is None else _bounds(model, par_bounds)
    lo, hi = np.ascontiguousarray(bounds[:, 0]), np.ascontiguousarray(bounds[:, 1])
    if fit_result is None:
        fit_result = fit(model, data=d, par_bounds=bounds, maxiter=maxiter, tol=tol)
    elif not isinstance(fit_result, FitResult):
        raise TypeError(f"fit_result: expected a nextstat FitResult, got {type(fit_result).__name__}")
    elif tuple(fit_result.parameter_names) != tuple(model.parameter_names):
        raise ValueError("fit_result: its parameter names differ from the model's (a fit of another model?)")
    fixed = np.asarray(fit_result.fixed, dtype=bool).copy()
    for i in idx:
        if fixed[i]:
            raise ValueError(f"parameters: {model.parameter_names[i]!r} is fixed; it has no interval")
    intervals: list[MinosInterval] = []
    with tqdm(total=len(idx), desc="MINOS", disable=not progress, leave=False) as bar:
        for attempt in range(MAX_FREE_REFITS + 1):
            theta_hat = np.ascontiguousarray(np.clip(fit_result.bestfit, lo, hi), dtype=np.float64)
            dev_min = resolve_fitter("compiled").nll_dev(model, theta_hat, d)
            if not math.isfinite(dev_min):
                raise ValueError("fit_result: the NLL is not finite at its best fit (a fit of other data?)")
            bar.reset()
            intervals = []
            try:
                for i in idx:
                    prof = _Profile(model, d, theta_hat, dev_min, i, fixed, lo, hi, maxiter, tol)
                    intervals.append(_interval(prof, theta_hat, fit_result.errors, lo, hi))
                    bar.update()
                break
            except _Restart as restart:
                if attempt == MAX_FREE_REFITS:
                    raise ValueError(f"minos: conditional fits keep finding a lower NLL than the free fit (refitted "
                                     f"{attempt} times): the likelihood has several minima") from None
                # a better minimum: refit from it, and measure every interval from the new one
                fit_result = fit(model, data=d, init_pars=restart.theta, fixed_params=fixed, par_bounds=bounds,
                                 maxiter=maxiter, tol=tol)
    free_converged = bool(fit_result.converged)
    converged = free_converged and all(iv.converged for iv in intervals)
    if not converged:
        bad = [iv.name for iv in intervals if not iv.converged]
        warnings.warn(f"minos: {'the free fit and ' if not free_converged else ''}{len(bad)} intervals did not "
                      f"converge{' (' + ', '.join(bad[:5]) + ')' if bad else ''}; see MinosInterval.lower_converged / "
                      "upper_converged", ConvergenceWarning, stacklevel=2)
    return MinosResult(tuple(intervals), fit_result, converged)
