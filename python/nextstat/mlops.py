"""Experiment-tracking hooks: fit and training metrics as plain ``dict[str, float]``.

This module depends on no logging framework. Its functions return dictionaries of plain Python
floats that any tracker accepts as they are::

    wandb.log(metrics_dict(result, prefix="fit/"))
    mlflow.log_metrics(metrics_dict(result))

Key names are fixed (see :func:`metrics_dict` and :func:`significance_metrics`) so that dashboards
built on them keep working across releases.
"""

from __future__ import annotations

import math
import re
import time
from types import TracebackType
from typing import Any

from nextstat.results import FitResult

__all__ = ["StepTimer", "metrics_dict", "significance_metrics"]


def _to_float(value: Any, what: str) -> float:
    """Convert a Python/NumPy scalar or a one-element NumPy array/torch tensor to a ``float``.

    Raises ``TypeError`` naming ``what`` for anything with more than one element.
    """
    if type(value) is float:
        return value
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} must be a real scalar, got {type(value).__name__}")
    size = getattr(value, "size", None)
    n = size() if callable(size) else size  # torch: .size() is a method; numpy: .size an int
    if n is not None and not isinstance(n, int):
        n = math.prod(n)  # torch.Size
    if n is not None and n != 1:
        raise TypeError(f"{what} must be a scalar, got an array with {n} elements")
    if hasattr(value, "item"):
        value = value.item()  # numpy scalar/0-d array, torch tensor (detaches, moves to CPU)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a real scalar, got {type(value).__name__}") from None


def metrics_dict(result: FitResult, *, prefix: str = "") -> dict[str, float]:
    """Summarise a fit as a flat ``{name: float}`` dict for any experiment tracker.

    Keys (each preceded by ``prefix``):

    ============== ======================================================================
    ``mu``         best-fit parameter of interest. **Omitted** when the model has no POI
                   (``result.poi_index is None``); never NaN.
    ``nll``        negative log-likelihood at the minimum (all constants included).
    ``edm``        estimated distance to the minimum.
    ``converged``  ``1.0`` if the fit converged, ``0.0`` otherwise.
    ``time_ms``    wall-clock time of the fit, milliseconds.
    ``param/<n>``  best-fit value of parameter ``<n>``, for **every** parameter in
                   ``result.parameter_names`` order, the POI and fixed parameters included
                   (so ``param/<poi name>`` duplicates ``mu``).
    ``error/<n>``  Hesse error of parameter ``<n>``, for every parameter (0 for fixed ones).
    ============== ======================================================================

    Parameter names are made safe for every tracker (MLflow accepts only alphanumerics and
    ``_ - . : /`` and space in metric names): an element index ``[i]`` becomes ``_i``
    (``staterror_SR[0]`` -> ``param/staterror_SR_0``) and any other character outside that set
    becomes ``_``. Names already in the set are kept as they are. ``prefix`` is used verbatim.

    Raises:
        TypeError: if ``result`` is not a :class:`~nextstat.results.FitResult`.
        ValueError: if two parameter names become the same key (e.g. ``a[0]`` and ``a_0``);
            the message names both.

    Args:
        result: the fit to summarise.
        prefix: string prepended to every key, e.g. ``"fit/"``.

    Returns:
        ``dict[str, float]`` with plain Python floats, in the order listed above.

    Example:
        >>> import numpy as np
        >>> from nextstat.results import FitResult
        >>> r = FitResult(bestfit=np.array([1.2, 0.9]), errors=np.array([0.3, 0.1]),
        ...     covariance=np.diag([0.09, 0.01]), correlation=np.eye(2),
        ...     parameter_names=("mu", "bkg"), poi_index=0, nll=10.5, edm=1e-9,
        ...     converged=True, n_iter=5, time_ms=2.0, message="ok",
        ...     fixed=np.zeros(2, bool), at_limit=np.zeros(2, bool))
        >>> metrics_dict(r, prefix="fit/")["fit/mu"]
        1.2
        >>> sorted(k for k in metrics_dict(r) if k.startswith("error/"))
        ['error/bkg', 'error/mu']
    """
    if not isinstance(result, FitResult):
        raise TypeError(f"result must be a nextstat FitResult, got {type(result).__name__}")
    out: dict[str, float] = {}
    if result.poi_index is not None:
        out[f"{prefix}mu"] = float(result.bestfit[result.poi_index])
    out[f"{prefix}nll"] = float(result.nll)
    out[f"{prefix}edm"] = float(result.edm)
    out[f"{prefix}converged"] = 1.0 if result.converged else 0.0
    out[f"{prefix}time_ms"] = float(result.time_ms)
    keys = _safe_names(result.parameter_names)
    for key, value in zip(keys, result.bestfit, strict=True):
        out[f"{prefix}param/{key}"] = float(value)
    if result.errors is not None:  # None after fit(hesse=False)
        for key, value in zip(keys, result.errors, strict=True):
            out[f"{prefix}error/{key}"] = float(value)
    return out


_INDEX = re.compile(r"\[(\d+)\]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _safe_names(names: tuple[str, ...]) -> list[str]:
    """Tracker-safe versions of parameter names (see :func:`metrics_dict`); unique or ValueError."""
    keys = [_UNSAFE.sub("_", _INDEX.sub(r"_\1", name)) for name in names]
    seen: dict[str, str] = {}
    for name, key in zip(names, keys, strict=True):
        if key in seen:
            raise ValueError(
                f"parameters {seen[key]!r} and {name!r} both become the metric key {key!r}"
            )
        seen[key] = name
    return keys


def significance_metrics(
    z0: Any, *, prefix: str = "", step_time_ms: float | None = None
) -> dict[str, float]:
    """Per-step discovery significance as a flat dict, for logging inside a training loop.

    Keys (each preceded by ``prefix``):

    ================ =====================================================================
    ``z0``           the discovery significance as given, in standard deviations.
    ``q0``           the discovery test statistic ``q0 = z0**2`` (asymptotically,
                     ``Z0 = sqrt(q0)``, arXiv:1007.1727 Eq. 53). ``q0`` is by definition
                     ``>= 0`` and is 0 for a downward fluctuation (``mu_hat < 0``,
                     Eq. 12), so a negative ``z0`` gives ``q0 = 0.0``.
    ``step_time_ms`` the given step time in milliseconds; present only when
                     ``step_time_ms`` is not None.
    ================ =====================================================================

    Args:
        z0: significance; a Python float or int, a NumPy scalar or one-element array, or a
            one-element torch tensor (its value is read with ``.item()``, so it may need
            grad and live on any device).
        prefix: string prepended to every key, e.g. ``"train/"``.
        step_time_ms: wall-clock time of the step in milliseconds (e.g. from
            :meth:`StepTimer.stop`), same accepted types as ``z0``.

    Returns:
        ``dict[str, float]`` of plain Python floats.

    Example:
        >>> significance_metrics(2.0, prefix="train/", step_time_ms=48.2)
        {'train/z0': 2.0, 'train/q0': 4.0, 'train/step_time_ms': 48.2}
        >>> significance_metrics(-1.5)
        {'z0': -1.5, 'q0': 0.0}
    """
    z = _to_float(z0, "z0")
    q0 = 0.0 if z <= 0.0 else z * z  # NaN stays NaN (NaN <= 0 is False)
    out = {f"{prefix}z0": z, f"{prefix}q0": q0}
    if step_time_ms is not None:
        out[f"{prefix}step_time_ms"] = _to_float(step_time_ms, "step_time_ms")
    return out


class StepTimer:
    """Wall-clock timer for training steps, based on :func:`time.perf_counter`.

    Use ``start()``/``stop()`` or ``with timer: ...``; after either, ``last_ms`` holds the last
    elapsed time in milliseconds. A timer can be restarted any number of times.

    Example:
        >>> timer = StepTimer()
        >>> timer.start()
        >>> elapsed = timer.stop()      # milliseconds, float
        >>> with timer:
        ...     pass
        >>> timer.last_ms >= 0.0
        True

    Note that GPU work is asynchronous: to time a CUDA step, synchronise (e.g.
    ``torch.cuda.synchronize()``) before ``stop()``.
    """

    def __init__(self) -> None:
        self._t0: float | None = None
        self.last_ms: float | None = None
        """Elapsed milliseconds of the last completed start/stop pair; None before the first."""

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._t0 is not None

    def start(self) -> None:
        """Start (or restart) timing."""
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Stop timing and return the elapsed time in milliseconds (also stored as ``last_ms``).

        Raises:
            RuntimeError: if the timer was not started.
        """
        t1 = time.perf_counter()
        if self._t0 is None:
            raise RuntimeError("StepTimer.stop() called before start()")
        self.last_ms = (t1 - self._t0) * 1e3
        self._t0 = None
        return self.last_ms

    def __enter__(self) -> StepTimer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        last = "None" if self.last_ms is None else f"{self.last_ms:.3g}"
        return f"StepTimer(last_ms={last}, running={self.running})"
