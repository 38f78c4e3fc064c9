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

from nextstat._html import html_summary as _html_summary
from nextstat._html import html_table as _html_table
from nextstat._html import pdg_round as _pdg_round


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
            parameters; None when not computed (``fit(hesse=False)``).
        covariance: inverse Hessian of the NLL over the free parameters, shape
            ``(n_params, n_params)``; rows and columns of fixed parameters are 0; None when not
            computed.
        correlation: correlation matrix from ``covariance`` (1 on the diagonal of fixed
            parameters); None when not computed.
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
        posdef: whether the Hessian was positive definite over the free parameters.
        fitter: the engine that ran the fit, ``"compiled"`` or ``"torch"``
            (:mod:`nextstat.engine.fitter`).
    """

    _derived = ("mu", "twice_nll")

    bestfit: np.ndarray
    errors: np.ndarray | None
    covariance: np.ndarray | None
    correlation: np.ndarray | None
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
    fitter: str = "compiled"

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
        """Hesse error of the parameter of interest (None without a POI or without Hesse)."""
        if self.poi_index is None or self.errors is None:
            return None
        return float(self.errors[self.poi_index])

    def index(self, name: str) -> int:
        """Position of parameter ``name``; raises ``KeyError`` naming the unknown parameter."""
        try:
            return self.parameter_names.index(name)
        except ValueError:
            raise KeyError(f"no parameter named {name!r}") from None

    def value(self, name: str) -> float:
        """Best-fit value of parameter ``name``."""
        return float(self.bestfit[self.index(name)])

    def error(self, name: str) -> float | None:
        """Hesse error of parameter ``name`` (None when the fit computed no errors)."""
        i = self.index(name)
        return None if self.errors is None else float(self.errors[i])

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
            err = "-" if self.errors is None else format(self.errors[i], ">10.4g")
            lines.append(f"  {name:<{width}}  {self.bestfit[i]:>12.6g}  {err:>10}{flag}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for i, name in enumerate(self.parameter_names):
            value, err = _pdg_round(float(self.bestfit[i]), None if self.errors is None or self.fixed[i]
                                    else float(self.errors[i]))
            note = "fixed" if self.fixed[i] else ("at limit" if self.at_limit[i] else "")
            rows.append((name, value, err, note))
        summary = {"converged": self.converged, "message": self.message, "NLL": self.nll, "EDM": self.edm,
                   "iterations": self.n_iter, "time (ms)": self.time_ms}
        if self.errors is not None:
            summary["covariance positive definite"] = self.posdef
        table = _html_table(rows, ["parameter", "value", "error", ""], bad=self.at_limit & ~self.fixed)
        return _html_summary("FitResult", summary, table, ok=self.converged)

    def to_dataframe(self):
        """One row per parameter (index: name): ``value``, ``error`` (NaN without Hesse),
        ``fixed``, ``at_limit``. Needs pandas."""
        import pandas as pd

        err = np.full(len(self.bestfit), np.nan) if self.errors is None else self.errors
        return pd.DataFrame({"value": self.bestfit, "error": err, "fixed": self.fixed, "at_limit": self.at_limit},
                            index=pd.Index(self.parameter_names, name="parameter"))


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

    def _repr_html_(self) -> str:
        def pm(value: float | None, error: float | None) -> Any:
            if value is None or error is None:
                return value
            v, e = _pdg_round(value, error)
            return f"{v} \u00b1 {e}"

        items: dict[str, Any] = {"test statistic": self.test_stat, "mu tested": self.mu_test,
                                 "q observed": self.q_obs, "q Asimov": self.q_asimov, "mu hat": self.mu_hat}
        tables = []
        if self.test_stat == "q0":
            items.update({"p0": pm(self.p0, self.clsb_error), "Z0": self.significance,
                          "p0 expected": self.p0_expected, "Z0 expected": self.significance_expected})
        else:
            items.update({"CLs": pm(self.cls, self.cls_error), "CLsb": pm(self.clsb, self.clsb_error),
                          "CLb": pm(self.clb, self.clb_error)})
            if self.cls_expected is not None:
                tables.append(_html_table([[float(v) for v in self.cls_expected]],
                                          ["-2\u03c3", "-1\u03c3", "median", "+1\u03c3", "+2\u03c3"],
                                          caption="expected CLs"))
        items["calculator"] = self.calculator
        if self.n_toys is not None:
            items["toys (s+b, b)"] = self.n_toys
            items["failed toys"] = self.n_failed_toys
        items["converged"] = self.converged
        if self.failed_fits:
            items["failed fits"] = self.failed_fits
        return _html_summary("HypotestResult", items, *tables, ok=self.converged)


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

    def _repr_html_(self) -> str:
        names = ["observed", "expected -2\u03c3", "expected -1\u03c3", "expected median", "expected +1\u03c3",
                 "expected +2\u03c3"]
        values = np.r_[self.observed, np.asarray(self.expected, dtype=float)]
        found = np.asarray(self.found, dtype=bool)
        beyond = np.asarray(self.beyond_bound, dtype=bool)
        rows = [(n, float(v), "" if f else "not bracketed", "above the POI bound" if b else "")
                for n, v, f, b in zip(names, values, found, beyond)]
        table = _html_table(rows, ["", "upper limit", "", ""], bad=~found)
        items = {"CL": 1 - self.alpha, "method": self.method, "points evaluated": len(self.mu_values),
                 "POI bound": self.poi_bound, "converged": self.converged, "message": self.message}
        return _html_summary(f"UpperLimitResult ({100 * (1 - self.alpha):g}% CL)", items, table,
                             ok=self.converged and bool(found.all()))

    def to_dataframe(self):
        """The CLs evaluations, one row per POI value (sorted): ``mu``, ``cls_observed`` and
        ``cls_exp_m2`` ... ``cls_exp_p2`` (the band at -2 ... +2 sigma). Needs pandas."""
        import pandas as pd

        order = np.argsort(np.asarray(self.mu_values), kind="stable")
        exp = np.asarray(self.cls_expected, dtype=float).reshape(-1, 5)[order]
        table = {"mu": np.asarray(self.mu_values, dtype=float)[order],
                 "cls_observed": np.asarray(self.cls_observed, dtype=float)[order]}
        table.update({f"cls_exp_{k}": exp[:, j] for j, k in enumerate(("m2", "m1", "median", "p1", "p2"))})
        return pd.DataFrame(table)


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

    def _repr_html_(self) -> str:
        rows = zip(self.mu_values.tolist(), self.twice_delta_nll.tolist(), self.converged.tolist())
        table = _html_table(rows, [self.poi_name, "2 \u0394NLL", "converged"], bad=~np.asarray(self.converged))
        items = {"points": len(self.mu_values), f"{self.poi_name} hat": self.mu_hat, "NLL min": self.nll_min,
                 "all converged": self.all_converged}
        return _html_summary("ProfileScanResult", items, table, ok=self.all_converged)

    def to_dataframe(self):
        """One row per scan point: the POI value (column named after the POI), ``nll``,
        ``twice_delta_nll``, ``converged``. Needs pandas."""
        import pandas as pd

        return pd.DataFrame({self.poi_name: self.mu_values, "nll": self.nll, "twice_delta_nll": self.twice_delta_nll,
                             "converged": self.converged})


@dataclass(frozen=True, repr=False)
class ToyFitResults(_ToDict):
    """Fits of pseudo-experiments.

    Attributes:
        bestfit: shape (n_toys, n_params).
        nll: shape (n_toys,).
        converged: shape (n_toys,), bool.
        toy_data: shape (n_toys, n_main + n_aux) when asked for, else None.
        seed, device: what generated them (same seed and device -> same toys).
        n_iter: Newton iterations per toy, shape (n_toys,).
        toy_index: position of each toy in its seed's sequence, shape (n_toys,) int64 (toy
            ``i`` is the same pseudo-data in every run with this seed: ``first_toy`` of
            :func:`nextstat.infer.toys.fit_toys`); None for fits of given datasets.
        pars: the parameters the toys were generated at, shape (n_params,); None for given
            datasets.

    Runs split over jobs merge with :meth:`concatenate` and travel as files with :meth:`save`
    / :meth:`load` (format: :mod:`nextstat.resultfile`).
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
    toy_index: np.ndarray | None = None
    pars: np.ndarray | None = None

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

    @classmethod
    def concatenate(cls, parts: Any) -> ToyFitResults:
        """One result from runs of the same toys' sequence (e.g. jobs with the same ``seed``
        and disjoint ``first_toy`` ranges), ordered by ``toy_index``: equal, array by array,
        to one run over the union of the ranges. Fits of given datasets are appended in order.

        Raises:
            TypeError: ``parts`` is not a non-empty sequence of ToyFitResults.
            ValueError: parts of different models, seeds or generating parameters, toys present
                twice, generated toys mixed with given datasets, or ``toy_data`` / ``n_iter``
                kept by some parts only.
        """
        from nextstat import toyio

        return toyio.concatenate(cls, parts)

    def save(self, path: Any) -> None:
        """Write to ``path`` (a ``.npz`` archive with JSON metadata, written atomically; format:
        :mod:`nextstat.resultfile`)."""
        from nextstat import toyio

        toyio.save(self, path)

    @classmethod
    def load(cls, path: Any) -> ToyFitResults:
        """Read a file written by :meth:`save`; ValueError if it holds anything else."""
        from nextstat import toyio

        return toyio.load(cls, path)

    def to_dataframe(self):
        """One row per toy (index ``toy``: ``toy_index``, else the row number): the best-fit
        parameters (one column per parameter), ``nll``, ``converged`` and ``n_iter``. Needs
        pandas."""
        import pandas as pd

        index = np.arange(self.n_toys) if self.toy_index is None else self.toy_index
        df = pd.DataFrame(self.bestfit, columns=list(self.parameter_names), index=pd.Index(index, name="toy"))
        df["nll"] = self.nll
        df["converged"] = self.converged
        if self.n_iter is not None:
            df["n_iter"] = self.n_iter
        return df

    def _repr_html_(self) -> str:
        ok = self.converged
        mean = self.bestfit[ok].mean(axis=0) if ok.any() else np.full(len(self.parameter_names), np.nan)
        std = self.bestfit[ok].std(axis=0) if ok.any() else mean
        rows = [(n, float(m), float(sd)) for n, m, sd in zip(self.parameter_names, mean, std)]
        table = _html_table(rows, ["parameter", "mean", "std. dev."], caption="best fits of the converged toys")
        items = {"toys": self.n_toys, "failed fits": self.n_failed, "seed": self.seed,
                 "toys of the sequence": _index_range(self.toy_index), "device": self.device,
                 "time (s)": self.time_s}
        return _html_summary("ToyFitResults", items, table, ok=self.n_failed == 0)


def _index_range(index: np.ndarray | None) -> str:
    """``"a ... b-1"`` for contiguous toy indices, else their count and extremes."""
    if index is None:
        return "given datasets"
    if index.size == 0:
        return "none"
    lo, hi = int(index.min()), int(index.max())
    return f"{lo} ... {hi}" if hi - lo + 1 == index.size else f"{index.size} of {lo} ... {hi}"


@dataclass(frozen=True, repr=False)
class ToyDistributions(_ToDict):
    """Sampled test-statistic distributions of a toy-based hypothesis test (pyhf 0.7.6
    ``ToyCalculator.distributions``), mergeable across jobs.

    :func:`nextstat.infer.toys.toy_distributions` makes them, and
    :func:`nextstat.infer.toys.hypotest_from_toys` turns them into CLs (what
    :func:`nextstat.infer.toys.hypotest_toys` returns). Toy ``i`` of a hypothesis is the same
    pseudo-experiment in every run with the same ``seed``, so jobs with disjoint ``first_toy``
    ranges merged by :meth:`concatenate` equal one run over the union of the ranges.

    Attributes:
        mu_test, test_stat: the hypothesis tested and the statistic.
        q_obs, mu_hat: observed test statistic and best-fit POI on the observed data.
        observed_converged: the fits to the observed data (free, conditional at ``mu_test``,
            and the background-only conditional fit that generates the b toys) converged.
        q_sb, ok_sb, index_sb: signal+background toys: statistic, whether its fits converged
            (failed toys are kept here and excluded from the p-values), position in the
            sequence; shape (n_sb,) each.
        q_b, ok_b, index_b: the same for the background-only toys (for ``q0``: the toys at
            POI = 1), shape (n_b,).
        pars_sb, pars_b: parameters the two sets were generated at, shape (n_params,).
        parameter_names, seed, device, time_s: the model's names and what generated them.
    """

    mu_test: float
    test_stat: str
    q_obs: float
    mu_hat: float
    observed_converged: bool
    q_sb: np.ndarray
    ok_sb: np.ndarray
    index_sb: np.ndarray
    q_b: np.ndarray
    ok_b: np.ndarray
    index_b: np.ndarray
    pars_sb: np.ndarray
    pars_b: np.ndarray
    parameter_names: tuple[str, ...]
    seed: int
    device: str = "cpu"
    time_s: float = 0.0

    @property
    def n_toys(self) -> tuple[int, int]:
        """Toys generated (signal+background, background-only), failed ones included."""
        return int(self.q_sb.size), int(self.q_b.size)

    @property
    def n_failed(self) -> int:
        """Toys whose fits did not converge (both hypotheses)."""
        return int(np.count_nonzero(~self.ok_sb) + np.count_nonzero(~self.ok_b))

    def __repr__(self) -> str:
        return (f"ToyDistributions(mu_test={_fmt(self.mu_test)}, test_stat={self.test_stat!r}, "
                f"q_obs={_fmt(self.q_obs)}, n_toys={self.n_toys}, n_failed={self.n_failed}, seed={self.seed})")

    @classmethod
    def concatenate(cls, parts: Any) -> ToyDistributions:
        """One set of distributions from runs of the same test (same model, ``mu_test``,
        ``test_stat``, ``seed`` and observed data), each hypothesis ordered by toy index.

        Raises:
            TypeError: ``parts`` is not a non-empty sequence of ToyDistributions.
            ValueError: parts of different tests, seeds or observed fits, or toys present twice.
        """
        from nextstat import toyio

        return toyio.concatenate(cls, parts)

    def save(self, path: Any) -> None:
        """Write to ``path`` (``.npz`` with JSON metadata, atomically; :mod:`nextstat.resultfile`)."""
        from nextstat import toyio

        toyio.save(self, path)

    @classmethod
    def load(cls, path: Any) -> ToyDistributions:
        """Read a file written by :meth:`save`; ValueError if it holds anything else."""
        from nextstat import toyio

        return toyio.load(cls, path)

    def to_dataframe(self):
        """One row per toy: ``hypothesis`` (``"s+b"`` or ``"b"``), ``toy`` (index in the
        sequence), ``q`` and ``converged``. Needs pandas."""
        import pandas as pd

        return pd.DataFrame({
            "hypothesis": ["s+b"] * self.q_sb.size + ["b"] * self.q_b.size,
            "toy": np.r_[self.index_sb, self.index_b].astype(np.int64),
            "q": np.r_[self.q_sb, self.q_b],
            "converged": np.r_[self.ok_sb, self.ok_b].astype(bool),
        })

    def _repr_html_(self) -> str:
        rows = []
        for name, q, ok, index, pars in (("s+b", self.q_sb, self.ok_sb, self.index_sb, self.pars_sb),
                                         ("b", self.q_b, self.ok_b, self.index_b, self.pars_b)):
            good = q[ok]
            tail = float(np.mean(good >= self.q_obs)) if good.size else None
            rows.append((name, int(q.size), int(np.count_nonzero(~ok)), _index_range(index), tail))
        table = _html_table(rows, ["toys", "generated", "failed", "toys of the sequence", "P(q \u2265 q_obs)"])
        items = {"mu tested": self.mu_test, "test statistic": self.test_stat, "q observed": self.q_obs,
                 "mu hat": self.mu_hat, "observed fits converged": self.observed_converged, "seed": self.seed,
                 "device": self.device, "time (s)": self.time_s}
        return _html_summary("ToyDistributions", items, table, ok=self.observed_converged and self.n_failed == 0)
