"""Typed result containers, one per operation, always returned whole.

All containers are frozen dataclasses holding NumPy arrays and plain floats. Values that were not
computed are ``None`` (never ``-1`` or ``NaN``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _fmt(x: float | None) -> str:
    return "None" if x is None else f"{x:.6g}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    """Default values of a dataclass's fields (those with one)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


class _ToDict:
    @classmethod
    def _build(kind, /, **values: Any) -> Any:  # HypotestResult has a field named `cls`
        """Construct by keyword without the frozen dataclass's ``__init__`` (which sets each
        field through ``object.__setattr__``: ~5 us for a FitResult, as long as a whole
        small-model fit). For hot paths; the instance is the same. Fields left out take their
        defaults."""
        fields = kind.__dataclass_fields__
        if len(values) != len(fields):
            values = {**_defaults(kind), **values}
            if len(values) != len(fields):
                wrong = set(fields) ^ set(values)
                raise TypeError(f"{kind.__name__}._build: fields {sorted(wrong)} missing or unknown")
        obj = kind.__new__(kind)
        obj.__dict__.update(values)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python (JSON-serialisable) view: arrays become lists; derived properties included."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for name in getattr(self, "_derived", ()):
            out[name] = _jsonable(getattr(self, name))
        return out


@dataclass(frozen=True, repr=False)
class FitResult(_ToDict):
    """Maximum-likelihood fit of a model.

    Attributes:
        bestfit: best-fit parameter values, shape ``(n_params,)``, in ``parameter_names`` order.
        errors: Hesse (inverse-Hessian) standard errors, shape ``(n_params,)``; 0 for fixed
            parameters.
        covariance: inverse Hessian of the NLL over the free parameters, shape
            ``(n_params, n_params)``; rows and columns of fixed parameters are 0.
        correlation: correlation matrix from ``covariance`` (1 on the diagonal of fixed
            parameters).
        parameter_names: names in the model's parameter order.
        poi_index: index of the parameter of interest (None if the model has none).
        nll: negative log-likelihood at the minimum (all constants included, = -pyhf logpdf).
        edm: estimated distance to minimum, ``g^T H^-1 g / 2`` over free parameters.
        converged: True when the projected gradient and the step vanished within tolerance.
        n_iter: Newton iterations taken.
        time_ms: wall-clock time of the fit, milliseconds.
        message: a human-readable account of how the fit ended.
        fixed: boolean mask of parameters held fixed, shape ``(n_params,)``.
        at_limit: boolean mask of parameters that ended on a bound.
    """

    _derived = ("mu", "twice_nll")

    bestfit: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    parameter_names: tuple[str, ...]
    poi_index: int | None
    nll: float
    edm: float
    converged: bool
    n_iter: int
    time_ms: float
    message: str
    fixed: np.ndarray
    at_limit: np.ndarray
    posdef: bool = True

    @property
    def twice_nll(self) -> float:
        """``2 * nll``."""
        return 2.0 * self.nll

    @property
    def mu(self) -> float | None:
        """Best-fit value of the parameter of interest."""
        return None if self.poi_index is None else float(self.bestfit[self.poi_index])

    @property
    def mu_error(self) -> float | None:
        """Hesse error of the parameter of interest."""
        return None if self.poi_index is None else float(self.errors[self.poi_index])

    def index(self, name: str) -> int:
        """Position of parameter ``name``; raises ``KeyError`` naming the unknown parameter."""
        try:
            return self.parameter_names.index(name)
        except ValueError:
            raise KeyError(f"no parameter named {name!r}") from None

    def value(self, name: str) -> float:
        """Best-fit value of parameter ``name``."""
        return float(self.bestfit[self.index(name)])

    def error(self, name: str) -> float:
        """Hesse error of parameter ``name``."""
        return float(self.errors[self.index(name)])

    def __repr__(self) -> str:
        mu = "None" if self.mu is None else _fmt(self.mu)
        return (
            f"FitResult(converged={self.converged}, nll={_fmt(self.nll)}, mu={mu}, "
            f"edm={self.edm:.2g}, n_iter={self.n_iter}, n_params={len(self.bestfit)}, "
            f"time_ms={self.time_ms:.3g}, message={self.message!r})"
        )

    def __str__(self) -> str:
        width = max([len(n) for n in self.parameter_names] + [9])
        lines = [
            f"Fit {'converged' if self.converged else 'FAILED'}: {self.message}",
            f"  NLL = {self.nll:.10g}   EDM = {self.edm:.3g}   iterations = {self.n_iter}"
            f"   time = {self.time_ms:.3g} ms",
            f"  {'parameter':<{width}}  {'value':>12}  {'error':>10}",
        ]
        for i, name in enumerate(self.parameter_names):
            flag = " (fixed)" if self.fixed[i] else (" (at limit)" if self.at_limit[i] else "")
            lines.append(
                f"  {name:<{width}}  {self.bestfit[i]:>12.6g}  {self.errors[i]:>10.4g}{flag}"
            )
        return "\n".join(lines)


@dataclass(frozen=True, repr=False)
class HypotestResult(_ToDict):
    """Result of a hypothesis test at ``mu_test`` (asymptotic or toy-based).

    For the discovery test (``test_stat="q0"``, ``mu_test=0``) ``p0`` and ``significance``
    (Z0 = Phi^-1(1 - p0)) are set and the CLs fields are None. For ``qtilde``/``q`` (upper-limit
    tests) ``cls``, ``clsb``, ``clb`` and the expected band ``cls_expected`` (at -2, -1, 0, +1, +2
    sigma of the background-only hypothesis) are set.

    Attributes:
        mu_test: tested signal strength.
        test_stat: "q0", "qtilde", "q", "tmu" or "tmu_tilde".
        q_obs: observed test statistic.
        q_asimov: test statistic on the background-only Asimov data (asymptotic method), else None.
        mu_hat: best-fit POI on the observed data (unconstrained by the test's bounds).
        calculator: "asymptotics" or "toybased".
        cls_error / clsb_error / clb_error: Monte Carlo uncertainties (toys only).
        n_toys: (signal+background toys, background-only toys) used, toys only.
        n_failed_toys: toys whose fits did not converge (excluded and reported), toys only.
        converged: True when every fit the result was built on converged (asymptotics: the
            free and conditional fits on the observed and the Asimov data and the fit that
            generated the Asimov data; toys: the fits to the observed data, with failed toys
            counted in ``n_failed_toys``). A :class:`nextstat.errors.ConvergenceWarning` is
            issued where it is False.
        failed_fits: names of the fits that did not converge (``"free"``, ``"conditional"``,
            ``"generating"``, ``"asimov_free"``, ``"asimov_conditional"``, ``"toys"``).
    """

    mu_test: float
    test_stat: str
    q_obs: float
    mu_hat: float
    calculator: str = "asymptotics"
    q_asimov: float | None = None
    cls: float | None = None
    clsb: float | None = None
    clb: float | None = None
    cls_expected: np.ndarray | None = None
    p0: float | None = None
    significance: float | None = None
    p0_expected: float | None = None
    significance_expected: float | None = None
    cls_error: float | None = None
    clsb_error: float | None = None
    clb_error: float | None = None
    n_toys: tuple[int, int] | None = None
    n_failed_toys: int | None = None
    converged: bool = True
    failed_fits: tuple[str, ...] = ()

    @property
    def pvalue(self) -> float | None:
        """p-value of the tested hypothesis: p0 for discovery, CLs otherwise."""
        return self.p0 if self.test_stat == "q0" else self.cls

    def __repr__(self) -> str:
        if self.test_stat == "q0":
            return (
                f"HypotestResult(q0={_fmt(self.q_obs)}, p0={_fmt(self.p0)}, "
                f"Z0={_fmt(self.significance)}, mu_hat={_fmt(self.mu_hat)}, "
                f"calculator={self.calculator!r})"
            )
        exp = "None" if self.cls_expected is None else np.array2string(
            np.asarray(self.cls_expected), precision=5)
        return (
            f"HypotestResult(mu_test={_fmt(self.mu_test)}, test_stat={self.test_stat!r}, "
            f"CLs={_fmt(self.cls)}, CLsb={_fmt(self.clsb)}, CLb={_fmt(self.clb)}, "
            f"CLs_expected={exp}, q_obs={_fmt(self.q_obs)}, mu_hat={_fmt(self.mu_hat)}, "
            f"calculator={self.calculator!r})"
        )


@dataclass(frozen=True, repr=False)
class UpperLimitResult(_ToDict):
    """CLs upper limit on the POI at confidence level ``1 - alpha``.

    Attributes:
        observed: observed upper limit.
        expected: expected limits, shape (5,), at -2, -1, 0, +1, +2 sigma.
        alpha: the test size (0.05 for 95% CL).
        mu_values: scanned POI values (scan mode), else the points evaluated by the root finder.
        cls_observed: observed CLs at ``mu_values``.
        cls_expected: expected CLs band at ``mu_values``, shape (len(mu_values), 5).
        method: "root" or "scan".
        found: shape (6,) bool (observed, then the expected -2..+2 sigma): False where the
            crossing CLs = alpha was not bracketed (by the scan, ``mu_range``, or the POI range
            widened :data:`nextstat.infer.limits.MAX_WIDENINGS` times); the limit reported there
            is the nearest end of the range tested, not a limit.
        beyond_bound: shape (6,) bool: the limit lies above ``poi_bound`` (root mode widens the
            POI's bound to find it).
        poi_bound: the POI's upper bound in the model (or ``par_bounds``).
        converged: every fit of every CLs evaluation converged.
        message: "ok", or what is not a plain limit (also issued as a warning).
    """

    observed: float
    expected: np.ndarray
    alpha: float
    mu_values: np.ndarray
    cls_observed: np.ndarray
    cls_expected: np.ndarray
    method: str = "root"
    found: np.ndarray = field(default_factory=lambda: np.ones(6, dtype=bool))
    beyond_bound: np.ndarray = field(default_factory=lambda: np.zeros(6, dtype=bool))
    poi_bound: float | None = None
    converged: bool = True
    message: str = "ok"

    def __repr__(self) -> str:
        return (
            f"UpperLimitResult(observed={_fmt(self.observed)}, expected="
            f"{np.array2string(np.asarray(self.expected), precision=5)}, "
            f"CL={1 - self.alpha:.3g}, method={self.method!r})"
        )


@dataclass(frozen=True, repr=False)
class ProfileScanResult(_ToDict):
    """Profile likelihood scan of the POI.

    Attributes:
        mu_values: POI values, shape (n,).
        nll: profiled NLL at each value, shape (n,).
        twice_delta_nll: ``2 * (nll - nll_min)``, shape (n,), with ``nll_min`` from the free fit.
        mu_hat: best-fit POI; ``nll_min``: NLL of the free fit.
        bestfit: profiled parameters at each value, shape (n, n_params).
        converged: per-point convergence flags, shape (n,).
        free_converged: the free fit (behind ``mu_hat`` and ``nll_min``) converged.
    """

    mu_values: np.ndarray
    nll: np.ndarray
    twice_delta_nll: np.ndarray
    mu_hat: float
    nll_min: float
    bestfit: np.ndarray
    converged: np.ndarray
    poi_name: str = "mu"
    free_converged: bool = True

    @property
    def all_converged(self) -> bool:
        """The free fit and every conditional fit converged."""
        return bool(self.free_converged and np.all(self.converged))

    def __repr__(self) -> str:
        return (
            f"ProfileScanResult(n_points={len(self.mu_values)}, mu_hat={_fmt(self.mu_hat)}, "
            f"nll_min={_fmt(self.nll_min)}, all_converged={self.all_converged})"
        )


@dataclass(frozen=True, repr=False)
class ToyFitResults(_ToDict):
    """Fits of pseudo-experiments.

    Attributes:
        bestfit: shape (n_toys, n_params).
        nll: shape (n_toys,).
        converged: shape (n_toys,), bool.
        toy_data: shape (n_toys, n_main + n_aux) when asked for, else None.
        seed, device: what generated them (same seed and device -> same toys).
    """

    bestfit: np.ndarray
    nll: np.ndarray
    converged: np.ndarray
    parameter_names: tuple[str, ...]
    seed: int
    device: str
    time_s: float
    toy_data: np.ndarray | None = None
    n_iter: np.ndarray | None = field(default=None)

    @property
    def n_toys(self) -> int:
        return int(self.nll.shape[0])

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(~self.converged))

    def __repr__(self) -> str:
        return (
            f"ToyFitResults(n_toys={self.n_toys}, n_failed={self.n_failed}, "
            f"device={self.device!r}, seed={self.seed}, time_s={self.time_s:.3g})"
        )
