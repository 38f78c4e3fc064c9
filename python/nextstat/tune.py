"""Hyperparameter search over analysis choices (binning, cuts) with Optuna or Ray Tune.

A binning study asks: which analysis choice gives the best expected sensitivity? Write a function
that turns the choice into a pyhf workspace (e.g. with :mod:`nextstat.builders`) and score the
workspace with :func:`score_workspace`; for Optuna, :func:`significance_objective` does both::

    import optuna
    from nextstat.builders import binning, build_workspace_from_events
    from nextstat.tune import significance_objective

    def build(trial):
        edges = binning(trial.suggest_int("n_bins", 3, 40),
                        trial.suggest_float("lo", 0.0, 0.3), trial.suggest_float("hi", 0.7, 1.0))
        return build_workspace_from_events(signal, {"bkg": background}, edges, staterror=True)

    objective = significance_objective(build)          # expected (Asimov) Z0
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=200)

What is scored (``metric`` x ``data``), each from the asymptotic formulae of arXiv:1007.1727 as
implemented by :func:`nextstat.hypotest` and :func:`nextstat.upper_limit`:

=================  ====================================  =====================================
``metric``         ``data="asimov"`` (default)           ``data="observed"``
=================  ====================================  =====================================
``"z0"``           median discovery significance Z0 of   Z0 of the workspace's observations
(maximise)         a signal of strength ``mu``: Z0 on
                   the Asimov data set at POI = ``mu``
``"cls"``          median CLs of POI = ``mu`` under      observed CLs of POI = ``mu``
(minimise)         background only: CLs on the Asimov
                   data set at POI = 0
``"upper_limit"``  median expected 95% CL upper limit    observed 95% CL CLs upper limit
(minimise)         on the POI: the limit set by the
                   Asimov data set at POI = 0
=================  ====================================  =====================================

"Asimov data set" here is the *pre-fit* Asimov data (arXiv:1007.1727 sec. 3.8): the expected
main and auxiliary data at the model's nominal parameters (``model.suggested_init()``) with the
POI replaced, so the score depends only on the model, never on the workspace's observations.
That is what a binning study wants: the builders' default observations are the total background
(a background-only Asimov data set), on which the *observed* Z0 is 0 for every binning. For a
workspace with real data this differs slightly from pyhf's ``return_expected`` numbers, which
profile the nuisance parameters on the observed data before building the Asimov data; use
:func:`nextstat.hypotest` directly for those.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from nextstat.infer.hypotest import hypotest
from nextstat.infer.limits import upper_limit
from nextstat.mlops import significance_metrics
from nextstat.model import Model, from_pyhf

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "METRICS",
    "SignificanceObjective",
    "SortedEvents",
    "direction",
    "score_workspace",
    "significance_objective",
]

Metric = Literal["z0", "cls", "upper_limit"]
DataKind = Literal["asimov", "observed"]

#: Metric name -> Optuna / Ray Tune optimisation direction.
METRICS: dict[str, str] = {"z0": "maximize", "cls": "minimize", "upper_limit": "minimize"}
_DATA = ("asimov", "observed")


def direction(metric: Metric) -> Literal["maximize", "minimize"]:
    """Optimisation direction of ``metric``: ``"maximize"`` for Z0, ``"minimize"`` otherwise.

    Ray Tune spells these ``mode="max"`` / ``"min"``: use ``direction(metric)[:3]``.

    >>> direction("z0"), direction("cls")[:3]
    ('maximize', 'min')
    """
    _check_metric(metric)
    return METRICS[metric]  # type: ignore[return-value]


def score_workspace(
    workspace: Mapping[str, Any] | Model,
    *,
    metric: Metric = "z0",
    mu: float = 1.0,
    data: DataKind = "asimov",
) -> float:
    """Score one workspace for a hyperparameter search (see the module docstring's table).

    Framework-free: use it in a Ray Tune trainable, a plain loop, or through
    :func:`significance_objective` in Optuna.

    Args:
        workspace: pyhf workspace ``dict`` (e.g. from :mod:`nextstat.builders`) or a compiled
            :class:`~nextstat.Model` (saves the ~1 ms of compiling it).
        metric: ``"z0"`` (discovery significance, in standard deviations), ``"cls"`` (CLs of
            POI = ``mu``, ``qtilde`` test statistic) or ``"upper_limit"`` (95% CL CLs upper
            limit on the POI, root-finding mode of :func:`nextstat.upper_limit`; about 20x the
            cost of the other two).
        mu: for ``"z0"`` the signal strength of the Asimov data set (the expected Z0 of a
            signal ``mu`` times the nominal one); for ``"cls"`` the tested POI value (> 0);
            not used by ``"upper_limit"``.
        data: ``"asimov"`` for the expected (median) value on the pre-fit Asimov data set,
            ``"observed"`` for the value on the workspace's observations.

    Returns:
        The score as a finite Python float.

    Raises:
        ValueError: unknown ``metric`` or ``data``, a non-finite ``mu``, or ``mu <= 0`` for
            ``"cls"``; a score that is undefined (Z0 of a bin with signal but no background,
            where q0 is infinite; a limit whose CLs crossing no POI range brackets):
            :func:`significance_objective` prunes such trials.
        WorkspaceError: malformed workspace.

    Example (2 bins; Z0 on the Asimov data set is the observed Z0 of data = s + b):

    >>> from nextstat.builders import build_workspace_from_histograms
    >>> ws = build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 10.0]})
    >>> z_asimov = score_workspace(ws)
    >>> s_plus_b = build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 10.0]},
    ...                                            data=[55.0, 20.0])
    >>> bool(np.isclose(z_asimov, score_workspace(s_plus_b, data="observed")))
    True
    >>> score_workspace(ws, data="observed")  # the default data are the background total
    0.0
    """
    _check_metric(metric)
    if data not in _DATA:
        raise ValueError(f"data: expected one of {_DATA}, got {data!r}")
    mu = _check_mu(metric, mu)
    model = workspace if isinstance(workspace, Model) else from_pyhf(workspace)
    observations = None if data == "observed" else _asimov(model, mu if metric == "z0" else 0.0)
    if metric == "z0":
        return float(hypotest(model, 0.0, data=observations, test_stat="q0").significance)
    if metric == "cls":
        return float(hypotest(model, mu, data=observations, test_stat="qtilde").cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an unbracketed limit is refused below
        limit = upper_limit(model, data=observations)
    if not limit.found[0]:
        raise ValueError(f"upper_limit: {limit.message}")
    return float(limit.observed)


def _asimov(model: Model, poi: float) -> np.ndarray:
    """Pre-fit Asimov data: expected main + auxiliary data at the nominal parameters, POI = ``poi``."""
    pars = model.suggested_init()
    pars[model.poi_index] = poi
    return model.expected_data(pars)


def _check_metric(metric: object) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {tuple(METRICS)}, got {metric!r}")


def _check_mu(metric: str, mu: object) -> float:
    if isinstance(mu, bool) or not isinstance(mu, (int, float, np.number)) or not math.isfinite(mu):
        raise ValueError(f"mu: expected a finite float, got {mu!r}")
    if metric == "cls" and not mu > 0:
        raise ValueError(f"mu: CLs needs a tested POI value > 0, got {mu!r}")
    return float(mu)


def _import_optuna(what: str) -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ImportError(
            f"{what} needs Optuna, an optional dependency of nextstat: "
            "pip install 'nextstat-hep[tune]' (or pip install optuna)"
        ) from exc
    return optuna


@dataclass(frozen=True)
class SignificanceObjective:
    """An Optuna objective: ``trial -> build(trial) -> score_workspace(...)``.

    Create it with :func:`significance_objective`, which documents the arguments. Calling it
    with an ``optuna.Trial`` returns the score as a float, or raises ``optuna.TrialPruned``
    when the score is not finite (so TPE learns to avoid the region instead of maximising an
    infinite Z0). Stateless, so one instance serves ``study.optimize(..., n_jobs=k)`` threads.

    Attributes:
        build, metric, mu, data, log_to, log_prefix: as given.
    """

    build: Callable[[optuna.Trial], Mapping[str, Any] | Model]
    metric: Metric = "z0"
    mu: float = 1.0
    data: DataKind = "asimov"
    log_to: Callable[[dict[str, float]], object] | None = None
    log_prefix: str = "tune/"

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise TypeError(f"build: expected a callable trial -> workspace, got {type(self.build).__name__}")
        _check_metric(self.metric)
        if self.data not in _DATA:
            raise ValueError(f"data: expected one of {_DATA}, got {self.data!r}")
        object.__setattr__(self, "mu", _check_mu(self.metric, self.mu))
        if self.log_to is not None and not callable(self.log_to):
            raise TypeError("log_to: expected a callable taking a dict (e.g. wandb.log), "
                            f"got {type(self.log_to).__name__}")
        if not isinstance(self.log_prefix, str):
            raise TypeError(f"log_prefix: expected a str, got {type(self.log_prefix).__name__}")

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """``"maximize"`` for Z0, ``"minimize"`` for CLs and the upper limit."""
        return direction(self.metric)

    def __call__(self, trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        workspace = self.build(trial)
        try:
            value: float | None = score_workspace(workspace, metric=self.metric, mu=self.mu, data=self.data)
            why = ""
        except ValueError as exc:  # an undefined score (see score_workspace): prune the trial
            value, why = None, str(exc)
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        if self.log_to is not None:
            self.log_to(self.metrics(trial, value, elapsed_ms))
        if value is None:
            import optuna

            raise optuna.TrialPruned(f"{self.metric} is undefined for this trial: {why}")
        return value

    def metrics(self, trial: optuna.Trial, value: float | None, step_time_ms: float) -> dict[str, float]:
        """The dict handed to ``log_to`` for one trial (keys preceded by ``log_prefix``).

        ``z0`` and ``q0`` (:func:`nextstat.mlops.significance_metrics`) for ``metric="z0"``,
        else the metric under its own name; for a pruned trial (``value`` None: the score is
        undefined) ``pruned`` = 1.0 instead; ``step_time_ms`` (build + score); ``trial`` (the
        trial number); ``param/<name>`` for every numeric trial parameter.
        """
        p = self.log_prefix
        if value is None:
            out = {f"{p}pruned": 1.0, f"{p}step_time_ms": float(step_time_ms)}
        elif self.metric == "z0":
            out = significance_metrics(value, prefix=p, step_time_ms=step_time_ms)
        else:
            out = {f"{p}{self.metric}": float(value), f"{p}step_time_ms": float(step_time_ms)}
        out[f"{p}trial"] = float(trial.number)
        for name, v in trial.params.items():
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                out[f"{p}param/{name}"] = float(v)
        return out


def significance_objective(
    build: Callable[[optuna.Trial], Mapping[str, Any] | Model],
    *,
    metric: Metric = "z0",
    mu: float = 1.0,
    data: DataKind = "asimov",
    log_to: Callable[[dict[str, float]], object] | None = None,
    log_prefix: str = "tune/",
) -> SignificanceObjective:
    """Turn a workspace-producing function into an Optuna objective.

    Args:
        build: ``trial -> workspace``: suggests the hyperparameters with ``trial.suggest_*``
            and returns a pyhf workspace ``dict`` or a compiled :class:`~nextstat.Model`. It
            may raise ``optuna.TrialPruned`` itself to reject a choice (e.g. a bin with too
            few simulated background events).
        metric, mu, data: what to score, see :func:`score_workspace`. The default is the
            expected (pre-fit Asimov) discovery significance Z0 of the nominal signal.
        log_to: called once per trial with a ``dict[str, float]`` (see
            :meth:`SignificanceObjective.metrics`), e.g. ``wandb.log`` or ``run.log``;
            pruned trials are logged too. ``None`` (default) logs nothing.
        log_prefix: prefix of the logged keys.

    Returns:
        A :class:`SignificanceObjective`; create the study with
        ``optuna.create_study(direction=objective.direction)``.

    Raises:
        ImportError: Optuna is not installed (``pip install 'nextstat-hep[tune]'``).
        ValueError, TypeError: invalid arguments (checked here, not at the first trial).
    """
    _import_optuna("significance_objective")
    return SignificanceObjective(build, metric, mu, data, log_to, log_prefix)


class SortedEvents:
    """Weighted events prepared for repeated histogramming, e.g. one binning per trial.

    ``numpy.histogram`` visits every event for every binning; here the events are sorted once
    (O(N log N)) and each histogram costs O(B log N) with cumulative sums, so a 200-trial
    binning study over 10^5-10^6 simulated events is not dominated by histogramming.

    Args:
        values: event scores, shape ``[N]``, finite.
        weights: event weights, shape ``[N]``, finite and non-negative; ``None`` for unit
            weights. (Negative weights: use ``numpy.histogram``; differences of cumulative
            sums could then round to tiny negative yields.)

    Example:
        >>> events = SortedEvents([0.1, 0.4, 0.4, 0.9, 1.0], [1.0, 2.0, 0.5, 1.0, 3.0])
        >>> sumw, sumw2 = events.histogram([0.0, 0.4, 1.0])
        >>> sumw.tolist(), sumw2.tolist()
        ([1.0, 6.5], [1.0, 14.25])
    """

    def __init__(self, values: ArrayLike, weights: ArrayLike | None = None) -> None:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"values: expected shape [N], got {list(v.shape)}")
        if not np.all(np.isfinite(v)):
            raise ValueError("values: expected finite values, got NaN or inf")
        w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != v.shape:
            raise ValueError(f"weights: expected shape {list(v.shape)} (same as values), got {list(w.shape)}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights: expected finite, non-negative values")
        order = np.argsort(v, kind="stable")
        self.values = v[order]
        """Sorted scores, shape ``[N]``."""
        self._cw = np.concatenate(([0.0], np.cumsum(w[order])))
        self._cw2 = np.concatenate(([0.0], np.cumsum(w[order] ** 2)))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def histogram(self, bin_edges: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(sum w, sum w^2)`` per bin, each shape ``[B]``, for strictly increasing edges ``[B + 1]``.

        Bins are those of ``numpy.histogram``: half-open ``[e_i, e_i+1)`` except the last, which
        includes its upper edge; events outside ``[e_0, e_B]`` are dropped. The counts are
        identical to ``numpy.histogram``; the sums are differences of cumulative sums, equal to
        ``numpy.histogram``'s up to rounding (absolute error ~ N * 1e-16 * total weight; exactly 0
        for an empty bin).
        """
        edges = np.asarray(bin_edges, dtype=np.float64)
        if edges.ndim != 1 or edges.shape[0] < 2 or not np.all(np.diff(edges) > 0):
            raise ValueError("bin_edges: expected a strictly increasing array [B + 1] with B >= 1, "
                             f"got {edges.tolist()}")
        idx = np.searchsorted(self.values, edges, side="left")
        idx[-1] = np.searchsorted(self.values, edges[-1], side="right")
        return np.diff(self._cw[idx]), np.diff(self._cw2[idx])
