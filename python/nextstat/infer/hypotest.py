"""Asymptotic hypothesis tests: CLs, discovery significance (arXiv:1007.1727; pyhf 0.7.6).

The asymptotic calculator fits, as pyhf's ``AsymptoticCalculator`` does: the free and the
conditional fit on the data, the background-only Asimov data (POI fixed at 0, or at 1 for the
discovery test, nuisance parameters profiled on the data; sec. 3.8), and the free and conditional
fits on the Asimov data. Fits that do not depend on the tested mu are done once and reused across
mu values (limits, CLs scans), with warm starts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr  # noqa: F401 - ndtr: the docstring example compares with it

from nextstat.engine.fitter import DEFAULT_MAXITER, DEFAULT_TOL, DevFit, Fitter, resolve_fitter
from nextstat.infer import test_statistics as ts
from nextstat.errors import ConvergenceWarning
from nextstat.infer.fit import (_bounds, _fixed_mask, better, kink_fit, kink_parameters, lower, other_side_starts,
                                retry_starts, stalled_start)
from nextstat.model import Model, require_model
from nextstat.results import HypotestResult

#: test statistics with asymptotic p-values (as pyhf 0.7.6); t_mu values are available from
#: :meth:`AsymptoticCalculator.teststatistics` via ``nextstat.infer.test_statistics``.
ASYMPTOTIC_TEST_STATS = ("q0", "q", "qtilde")

#: the expected band is quoted at these background-only test-statistic values (pyhf order):
#: +2, +1, 0, -1, -2 sigma of the test statistic = -2 ... +2 sigma of the limit.
_BAND = (2.0, 1.0, 0.0, -1.0, -2.0)


_SQRT_HALF = math.sqrt(0.5)


def _phi(x: float) -> float:
    """Standard normal CDF (as ``scipy.special.ndtr``, via ``erfc``; a plain float call)."""
    return 0.5 * math.erfc(-x * _SQRT_HALF)


def _log_phi(x: float) -> float:
    """log Phi(x), without underflow far in the lower tail (``scipy.special.log_ndtr`` there)."""
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x * _SQRT_HALF))
    return float(log_ndtr(x))


def asymptotic_pvalues(sqrt_q: float, sqrt_qA: float, test_stat: str) -> tuple[float, float, float]:
    """(CLsb, CLb, CLs) from the observed and Asimov sqrt test statistics.

    The statistic is shifted as in pyhf: ``t = sqrt(q) - sqrt(qA)`` (for q~ above the Asimov
    value ``(q - qA) / (2 sqrt(qA))``, arXiv:1007.1727 eq. 66); then CLsb = Phi(-(t + sqrt(qA)))
    and CLb = Phi(-t). CLs = CLsb / CLb is formed from the logarithms, so it stays finite (and
    exact) where both tails underflow.

    >>> clsb, clb, cls = asymptotic_pvalues(1.0, 1.0, "qtilde")
    >>> bool(np.isclose(clsb, ndtr(-1.0)) and np.isclose(clb, 0.5))
    True
    >>> clsb, clb, cls = asymptotic_pvalues(41.0, 1.0, "q")   # CLb = Phi(-40): underflows
    >>> bool(np.isclose(cls, np.exp(log_ndtr(-41.0) - log_ndtr(-40.0))) and cls > 0)
    True
    """
    if test_stat in ("q", "q0") or sqrt_q <= sqrt_qA or sqrt_qA == 0.0:
        t = sqrt_q - sqrt_qA
    else:
        t = (sqrt_q * sqrt_q - sqrt_qA * sqrt_qA) / (2.0 * sqrt_qA)
    log_clsb = _log_phi(-(t + sqrt_qA))
    log_clb = _log_phi(-t)
    return math.exp(log_clsb), math.exp(log_clb), math.exp(_log_tail_ratio(log_clsb, log_clb, t, sqrt_qA))


#: above this t, :func:`_log_tail_ratio` takes both tails from their asymptotic series: the
#: difference of two logarithms of ~ -t^2/2 loses ~t^2 eps (6% of CLs at t = 3e7)
_TAIL_SERIES_T = 30.0


def _log_mills_sum(x, log1p=math.log1p):
    """log sum_k (-1)^k (2k-1)!! / x^(2k), the asymptotic series of Mills' ratio
    (Phi(-x) = phi(x) / x * sum, Abramowitz & Stegun 26.2.12) for x >= 30, where its terms fall
    below 1e-17 of the sum by k = 8; ``x`` a float, or an array / tensor with its module's
    ``log1p`` (the torch layer's observed CLs)."""
    inv = 1.0 / (x * x)
    term, correction = 1.0, 0.0
    for k in range(1, 10):
        term = term * (-(2 * k - 1)) * inv
        correction = correction + term
    return log1p(correction)


def _series_log_ratio(t, s, log_sum_t, log_sum_ts, log1p=math.log1p):
    """log Phi(-(t + s)) - log Phi(-t) for t > 30 from the tails' series, given the
    :func:`_log_mills_sum` at t and at t + s: -s (2t + s)/2 - log(1 + s/t) + their difference
    (floats, or arrays / tensors with their module's ``log1p``)."""
    return -0.5 * s * (2.0 * t + s) - log1p(s / t) + log_sum_ts - log_sum_t


def _log_tail_ratio(log_clsb: float, log_clb: float, t: float, s: float) -> float:
    """log(CLsb / CLb) = log Phi(-(t + s)) - log Phi(-t). For t > 30 from the tails' series,
    log Phi(-x) = -x^2/2 - log x - log(2 pi)/2 + log(sum) (:func:`_log_mills_sum`), so that
    the leading terms cancel exactly: -s (2t + s)/2 - log(1 + s/t) + log(sum(t + s) / sum(t))
    (-inf for t = inf and s > 0, CLs = 0; also where both logarithms overflow to -inf, t beyond
    ~1e154, e.g. q ~ 1e300 from yields near 1e300); 0 for s = 0."""
    if s == 0.0:
        return 0.0
    if not math.isfinite(t):
        return -math.inf
    if t > _TAIL_SERIES_T:
        return _series_log_ratio(t, s, _log_mills_sum(t), _log_mills_sum(t + s))
    return log_clsb - log_clb


_LOG_CLB_BAND = tuple(_log_phi(-n) for n in _BAND)


def expected_cls(sqrt_qA: float) -> np.ndarray:
    """Expected CLs band (5,) at the background-only quantiles -2..+2 sigma of the limit."""
    return np.array([math.exp(_log_phi(-(n + sqrt_qA)) - lb) for n, lb in zip(_BAND, _LOG_CLB_BAND)])


#: the fits of an asymptotic test, as named in ``HypotestResult.failed_fits``
_FIT_NAMES = ("free", "conditional", "generating", "asimov_free", "asimov_conditional")


#: one fit of the calculator (no Hesse)
_Fit = DevFit


@dataclass
class _Fits:
    free: _Fit
    nll_free: float
    mu_hat: float

    @classmethod
    def of(cls, free: _Fit, poi: int) -> _Fits:
        return cls(free, free.nll_dev, float(free.bestfit[poi]))


class AsymptoticCalculator:
    """Caches the mu-independent fits of an asymptotic test on one dataset.

    Each fit is one call of the fitter (compiled: :func:`nextstat.engine.compiled.calls.fit_dev`), so a test on a
    small model costs tens of microseconds.

    Args:
        model: the model. data: observed data (default ``model.data``).
        test_stat: one of ``q0``, ``q``, ``qtilde``.
        init_pars, par_bounds, fixed_params, fitter: as in :func:`nextstat.fit`.
    """

    def __init__(self, model: Model, *, data: Any = None, test_stat: str = "qtilde",
                 init_pars: Any = None, par_bounds: Any = None, fixed_params: Any = None,
                 fitter: Fitter | str | None = None):
        if model.poi_index is None:
            raise ValueError("model: a POI is required for hypothesis tests")
        if test_stat not in ASYMPTOTIC_TEST_STATS:
            raise ValueError(f"test_stat: expected one of {ASYMPTOTIC_TEST_STATS} for asymptotic "
                             f"p-values, got {test_stat!r}")
        self.model = model
        self.fitter = resolve_fitter(fitter, "asymptotic_fits")
        self.test_stat = test_stat
        self.data = model.data if data is None else model._data(data)
        self.init = model._init if init_pars is None else model._pars(init_pars, "init_pars").copy()
        self.bounds = model._bounds if par_bounds is None else _bounds(model, par_bounds)
        self._lo = np.ascontiguousarray(self.bounds[:, 0])
        self._hi = np.ascontiguousarray(self.bounds[:, 1])
        self.fixed = model.fixed_params if fixed_params is None else _fixed_mask(model, fixed_params)
        self._fixed_poi = self.fixed.copy()
        self._fixed_poi[model.poi_index] = True
        self._obs: _Fits | None = None
        self._generating: _Fit | None = None
        self._asimov_data: np.ndarray | None = None
        self._asimov: _Fits | None = None
        self._cond_first: tuple[_Fit, _Fit] | None = None  # conditional fits of _first_fits
        self._poi_range = (float(self._lo[model.poi_index]), float(self._hi[model.poi_index]))
        self.asimov_mu = 1.0 if test_stat == "q0" else 0.0

    def _fit_once(self, data: np.ndarray, init: np.ndarray, mu: float | None, profiled: bool) -> _Fit:
        """One fit: free (``mu=None``) from ``init``, or conditional at POI = ``mu``; with
        ``profiled`` the conditional fit starts from the free optimum ``init`` moved along the
        profile (:func:`nextstat.engine.compiled.profiled.profile_start`), else from ``init``."""
        if mu is None:
            return self.fitter.fit_dev(self.model, init, data, self._lo, self._hi, self.fixed, DEFAULT_MAXITER,
                                       DEFAULT_TOL)
        if profiled:
            return self.fitter.fit_conditional(self.model, init, float(mu), data, self._lo, self._hi,
                                               self._fixed_poi, DEFAULT_MAXITER, DEFAULT_TOL)
        start = init.copy()
        start[self.model.poi_index] = mu
        return self.fitter.fit_dev(self.model, start, data, self._lo, self._hi, self._fixed_poi, DEFAULT_MAXITER,
                                   DEFAULT_TOL)

    def _runner(self, data: np.ndarray) -> Any:
        """``run(start, fixed, lo, hi) -> (theta, status, fit)`` on ``data``, for the retry policy's
        restricted fits (:func:`nextstat.infer.fit.kink_fit`, :func:`~nextstat.infer.fit.other_side_starts`)."""

        def run(s: np.ndarray, fx: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
            f = self.fitter.fit_dev(self.model, s, data, lo, hi, fx, DEFAULT_MAXITER, DEFAULT_TOL)
            return f.bestfit, f.status, f

        return run

    def _beyond_kinks(self, data: np.ndarray, theta: np.ndarray, fixed: np.ndarray) -> list[np.ndarray]:
        """:func:`nextstat.infer.fit.other_side_starts` of a converged fit at ``theta``."""
        return other_side_starts(self.model, data, theta, fixed, self._lo, self._hi, self._runner(data),
                                 self.fitter)

    def _fit(self, data: np.ndarray, init: np.ndarray, mu: float | None) -> _Fit:
        """Free fit (``mu=None``) from ``init``, or conditional fit at POI = ``mu`` from the free
        optimum ``init``; a fit that does not converge is retried from the starts of
        :func:`nextstat.infer.fit.retry_starts` (bounded), one that converged on a stationary
        point of :func:`nextstat.infer.fit.stalled_start` from that restart and, beyond a concave
        interpolation kink, from the starts of :func:`nextstat.infer.fit.other_side_starts`;
        the best one is kept."""
        fit = self._fit_once(data, init, mu, True)
        fixed = self.fixed if mu is None else self._fixed_poi
        if fit.converged:
            restart = stalled_start(self.model, fit.bestfit, data, fixed, self._lo, self._hi, self.fitter)
            if restart is not None:
                alt = self._fit_once(data, restart, mu, False)
                if better(alt.status, alt.nll_dev, fit.status, fit.nll_dev):
                    fit = alt
            if kink_parameters(self.model).size:
                for s in self._beyond_kinks(data, fit.bestfit, fixed):
                    alt = self._fit_once(data, s, mu, False)
                    if lower(alt.status, alt.nll_dev, fit.status, fit.nll_dev):
                        fit = alt
            return fit
        start = init.copy()
        if mu is not None:
            start[self.model.poi_index] = mu
        for alt_start in [start, *retry_starts(self.model, start, fixed, self._lo, self._hi)]:
            alt = self._fit_once(data, alt_start, mu, False)
            if better(alt.status, alt.nll_dev, fit.status, fit.nll_dev):
                fit = alt
            if fit.converged:
                return fit

        kinked = kink_fit(self.model, data, fit.bestfit, fixed, self._lo, self._hi, self._runner(data), self.fitter)
        if kinked is not None and better(kinked[1], kinked[2].nll_dev, fit.status, fit.nll_dev):
            fit = kinked[2]
        return fit

    def observed_fits(self) -> _Fits:
        if self._obs is None:
            free = self._fit(self.data, self.init, None)
            self._obs = _Fits.of(free, self.model.poi_index)
        return self._obs

    def generating_fit(self) -> _Fit:
        """The conditional fit (POI = ``asimov_mu``) to the observed data behind the Asimov data."""
        if self._generating is None:
            self._generating = self._fit(self.data, self.observed_fits().free.bestfit, self.asimov_mu)
        return self._generating

    def asimov_data(self) -> np.ndarray:
        """Background-only (signal for q0) Asimov data, profiled on the observed data."""
        if self._asimov_data is None:
            self._asimov_data = self.fitter.expected_data(self.model, self.generating_fit().bestfit)
        return self._asimov_data

    def asimov_fits(self) -> _Fits:
        if self._asimov is None:
            data = self.asimov_data()
            free = self._fit(data, self.generating_fit().bestfit, None)
            self._asimov = _Fits.of(free, self.model.poi_index)
        return self._asimov

    def _q(self, mu: float, fits: _Fits, data: np.ndarray) -> tuple[_Fits, _Fit]:
        """The conditional fit at ``mu`` on ``data`` and the free fits, the free fit refitted
        from the conditional optimum where that lies below it (the free fit then stopped in a
        local minimum: its NLL can never exceed a conditional one)."""
        cond = self._fit(data, fits.free.bestfit, mu)
        if cond.nll_dev < fits.nll_free - 1e-9 * max(1.0, abs(fits.nll_free)):
            free = self._fit(data, cond.bestfit, None)
            if better(free.status, free.nll_dev, fits.free.status, fits.nll_free):
                fits = _Fits.of(free, self.model.poi_index)
        return fits, cond

    def _tested(self, mu: float) -> tuple[_Fit, _Fit]:
        """(conditional fit on the observed data, on the Asimov data) at ``mu``; updates the
        cached free fits where :meth:`_q` improved them."""
        if self._obs is None and self._first_fits(mu):
            return self._cond_first
        self._obs, cond_obs = self._q(mu, self.observed_fits(), self.data)
        self._asimov, cond_a = self._q(mu, self.asimov_fits(), self.asimov_data())
        return cond_obs, cond_a

    def teststatistics(self, mu: float) -> tuple[float, float]:
        """(q_obs, q_asimov) at ``mu``."""
        cond_obs, cond_a = self._tested(float(mu))
        return self._statistic(mu, cond_obs, self._obs), self._statistic(mu, cond_a, self._asimov)

    def _first_fits(self, mu: float) -> bool:
        """All five fits of a first test in one compiled call
        (:func:`nextstat.engine.compiled.calls.asymptotic_fits`, the same fits from the same starts
        as one by one), which fills the caches of the mu-independent fits. Returns False (and
        caches nothing) where a fit did not converge or a conditional fit lies below its free
        fit: the fits are then done one by one, with retries."""
        model = self.model
        thetas, stats, asimov = self.fitter.asymptotic_fits(
            model, self.init, mu, self.data, self._lo, self._hi, self.fixed, self._fixed_poi, self.asimov_mu,
            DEFAULT_MAXITER, DEFAULT_TOL)
        fits = [_Fit(thetas[k], float(st[0]), float(st[1]), int(st[2]), int(st[3]), float(st[4]))
                for k, st in enumerate(stats)]
        tol = 1e-9 * max(1.0, abs(fits[0].nll_dev), abs(fits[3].nll_dev))
        if stats[:, 2].any() or fits[1].nll_dev < fits[0].nll_dev - tol or fits[4].nll_dev < fits[3].nll_dev - tol:
            return False  # a fit did not converge (status != FIT_CONVERGED = 0), or a free fit is not global
        if stats[:, 5].max() >= 2:  # two free parameters on a bound (counted by the kernel): maybe a stall
            for k, fx in enumerate((self.fixed, self._fixed_poi, self._fixed_poi, self.fixed, self._fixed_poi)):
                if stats[k, 5] >= 2 and stalled_start(model, fits[k].bestfit, asimov if k > 2 else self.data, fx,
                                                      self._lo, self._hi, self.fitter) is not None:
                    return False  # a fit stopped on a stationary point it cannot leave: refitted one by one
        if kink_parameters(model).size:
            for k, fx in enumerate((self.fixed, self._fixed_poi, self._fixed_poi, self.fixed, self._fixed_poi)):
                if self._beyond_kinks(asimov if k > 2 else self.data, fits[k].bestfit, fx):
                    return False  # a lower minimum lies beyond a kink: refitted one by one
        poi = model.poi_index
        self._obs = _Fits.of(fits[0], poi)
        self._generating = fits[2]
        self._asimov_data = asimov
        self._asimov = _Fits.of(fits[3], poi)
        self._cond_first = (fits[1], fits[4])
        return True

    def _statistic(self, mu: float, cond: _Fit, fits: _Fits) -> float:
        return ts.statistic(self.test_stat, mu, cond.nll_dev, fits.nll_free, fits.mu_hat)

    def _check_mu(self, mu: float) -> float:
        """The tested POI value: finite and inside the POI's bounds, else ValueError; for q0,
        0 (as pyhf: the discovery test tests mu = 0, with a warning for another mu)."""
        mu = float(mu)
        if self.test_stat == "q0" and mu != 0.0:
            warnings.warn(f"hypotest: the q0 test statistic tests mu = 0 (discovery); mu = {mu!r} is ignored",
                          UserWarning, stacklevel=4)
            mu = 0.0
        lo, hi = self._poi_range
        if not lo <= mu <= hi:  # False for NaN; the bounds are not NaN
            raise ValueError(f"mu: expected a finite value within the bounds [{lo:g}, {hi:g}] of the POI "
                             f"{self.model.poi_name!r}, got {mu!r}")
        return mu

    def hypotest(self, mu: float) -> HypotestResult:
        """The test at POI = ``mu`` (asymptotic formulae of arXiv:1007.1727)."""
        mu = self._check_mu(mu)
        cond_obs, cond_a = self._tested(mu)
        obs, asi = self._obs, self._asimov
        q_obs, q_a = self._statistic(mu, cond_obs, obs), self._statistic(mu, cond_a, asi)
        if not (math.isfinite(q_obs) and math.isfinite(q_a)):
            which = "observed" if not math.isfinite(q_obs) else "Asimov"
            raise ValueError(
                f"hypotest: the {which} test statistic at {self.model.poi_name} = {mu:g} is not finite (its "
                f"conditional fit: {'NLL ' + format(cond_obs.nll_dev if which == 'observed' else cond_a.nll_dev, 'g')}): "
                "the hypothesis predicts no events in a bin with observed events, or the yields overflow "
                "double precision; the p-values are undefined")
        failed: tuple[str, ...] = ()
        if obs.free.status or cond_obs.status or self._generating.status or asi.free.status or cond_a.status:
            fits = (obs.free, cond_obs, self._generating, asi.free, cond_a)  # FIT_CONVERGED is 0
            failed = tuple(name for name, f in zip(_FIT_NAMES, fits) if not f.converged)
            warnings.warn(f"hypotest at {self.model.poi_name} = {mu:g}: the fits {', '.join(failed)} did not "
                          "converge (HypotestResult.converged is False)", ConvergenceWarning, stacklevel=3)
        sq, sqa = math.sqrt(q_obs), math.sqrt(q_a)
        clsb, clb, cls = asymptotic_pvalues(sq, sqa, self.test_stat)
        common = dict(mu_test=mu, test_stat=self.test_stat, q_obs=q_obs, q_asimov=q_a, mu_hat=obs.mu_hat,
                      clsb=clsb, clb=clb, converged=not failed, failed_fits=failed)
        if self.test_stat == "q0":
            return HypotestResult._build(**common, p0=clsb, significance=sq,
                                         p0_expected=_phi(-sqa), significance_expected=sqa)
        return HypotestResult._build(**common, cls=cls, cls_expected=expected_cls(sqa))


def hypotest(model: Model, mu: float = 1.0, *, data: Any = None, test_stat: str | None = None,
             init_pars: Any = None, par_bounds: Any = None, fixed_params: Any = None,
             calctype: str = "asymptotics", fitter: Fitter | str | None = None,
             **toy_options: Any) -> HypotestResult:
    """Test the hypothesis POI = ``mu``.

    At ``mu = 0`` the default is the discovery test (``q0``): ``p0`` and ``significance``
    (Z0 = sqrt(q0) = Phi^-1(1 - p0)) are set, with the expected (Asimov, mu = 1) ``p0_expected``
    and ``significance_expected``. Otherwise the default is ``qtilde`` and the result carries
    CLs, CLsb, CLb and the expected CLs band at -2..+2 sigma (``cls_expected``, shape (5,)).

    Args:
        model: compiled model. mu: tested POI value.
        data: main + auxiliary data (default observed).
        test_stat: "q0", "q" or "qtilde".
        init_pars, par_bounds, fixed_params: as in :func:`nextstat.fit`.
        calctype: "asymptotics" (arXiv:1007.1727) or "toybased" (pseudo-experiments; see
            :func:`nextstat.hypotest_toys`, which receives ``toy_options``).
        fitter: the engine of the asymptotic test's fits, as in :func:`nextstat.fit`.
    """
    require_model(model)
    if test_stat is None:
        test_stat = "q0" if mu == 0 else "qtilde"
    if calctype == "toybased":
        from nextstat.infer.toys import hypotest_toys

        if fitter is not None:
            raise TypeError("fitter: applies to calctype='asymptotics' only (toys run on the compiled toy fitters)")

        return hypotest_toys(model, mu, data=data, test_stat=test_stat, init_pars=init_pars,
                             par_bounds=par_bounds, fixed_params=fixed_params, **toy_options)
    if calctype != "asymptotics":
        raise ValueError(f"calctype: expected 'asymptotics' or 'toybased', got {calctype!r}")
    if toy_options:
        raise TypeError(f"hypotest: unexpected arguments {sorted(toy_options)} for asymptotics")
    calc = AsymptoticCalculator(model, data=data, test_stat=test_stat, init_pars=init_pars,
                                par_bounds=par_bounds, fixed_params=fixed_params, fitter=fitter)
    return calc.hypotest(mu)
