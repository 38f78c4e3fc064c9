"""The one fitter interface of the inference layer: fit status, default settings, named fit outputs,
and which engine runs a fit.

:mod:`nextstat.infer` (fits, hypothesis tests, their retries) calls a :class:`Fitter`; two engines
implement it over the same model and the same formulas:

* :class:`CompiledFitter`: the Numba core (:mod:`nextstat.engine.compiled.calls`), the default;
* :class:`~nextstat.engine.torch_fitter.TorchFitter`: the batched PyTorch Newton fit
  (:func:`nextstat.engine.torch_fit.batched_fit`) on one problem, with nothing to compile. It runs
  while the compiled engine is not yet in the compiled cache (a first use: compiling takes about a
  minute per entry point on one core), and the compiled kernels are built meanwhile in a background
  process (:class:`nextstat.engine.background.BackgroundWarmup`); once they are cached, fits move to
  them. Its algorithm and its differences from the compiled one are documented in
  :mod:`nextstat.engine.torch_fitter`; both stop at the same EDM criterion, so their minima agree
  to the fit tolerance (tests/engine/test_fitter.py checks both against the same numbers).

:func:`resolve_fitter` is the one policy that picks the engine: ``"compiled"``, ``"torch"`` or
``"auto"`` (the default; ``$NEXTSTAT_FITTER`` overrides it): the compiled engine where its entry
point is cached or compiled in this process, else the torch fitter while a background process
compiles. Every result says which engine computed it (``FitResult.fitter``).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np

from nextstat.engine.fit_outputs import (DEFAULT_MAXITER, DEFAULT_TOL, AsymptoticFits, DevFit, FitOutput, FitStatus,
                                         NewtonFit, Refits, errors_and_correlation)

__all__ = ["FitStatus", "FitOutput", "DevFit", "NewtonFit", "AsymptoticFits", "Refits", "Fitter", "CompiledFitter", "FirstUseFitter",
           "DEFAULT_MAXITER", "DEFAULT_TOL", "FITTERS", "resolve_fitter", "compiled_ready",
           "background_compile", "background_job", "errors_and_correlation"]

logger = logging.getLogger("nextstat")

FITTERS = ("auto", "compiled", "torch")
"""The names :func:`resolve_fitter` takes."""


class Fitter(Protocol):
    """What :mod:`nextstat.infer` needs of a fit engine. Arrays are NumPy float64 (masks bool), C
    contiguous; ``lo``/``hi`` (P,) bounds; ``fixed`` (P,) mask (``fixed_poi`` also holds the
    POI); ``data`` main + auxiliary (n_bins + n_aux,). Fixed parameters keep their start values."""

    name: str

    def fit(self, model: Any, start: np.ndarray, data: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            fixed: np.ndarray, maxiter: int, tol: float, hesse: bool) -> FitOutput:
        """Bounded Newton fit from ``start``, with Hesse errors when ``hesse``."""

    def fit_dev(self, model: Any, start: np.ndarray, data: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                fixed: np.ndarray, maxiter: int, tol: float) -> DevFit:
        """Fit without Hesse, also returning the deviance form of the NLL."""

    def newton(self, model: Any, start: np.ndarray, data: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               fixed: np.ndarray, maxiter: int, tol: float, precise: bool = False) -> NewtonFit:
        """Fit without Hesse on ``model.arrays`` and ``model.aux_arrays`` (any object with the two:
        the torch session's fits of replaced histograms pass a
        :class:`~nextstat.engine.layout.ModelArrays`), ending with the gradient. ``precise``: the
        compiled fit does not stop on the cheaper Gauss-Newton EDM once it takes exact-Hessian
        steps (parameters ~tol rather than ~sqrt(tol) from the optimum: for gradients through the
        optimum). The compiled engine releases the GIL (toys run it in threads)."""

    def refits(self, model: Any, theta_hat: np.ndarray, cov: np.ndarray, data: np.ndarray, lo: np.ndarray,
               hi: np.ndarray, fixed: np.ndarray, pars: np.ndarray, values: np.ndarray, maxiter: int, tol: float,
               chord_max: int) -> Refits:
        """The ranking's refits: for each k, the fit with parameter ``pars[k]`` held at ``values[k]``,
        started on the linear response of the nominal fit ``theta_hat`` (covariance ``cov``), at
        most ``chord_max`` steps with its fixed Hessian, then the full Newton fit
        (:mod:`nextstat.engine.compiled.refit`)."""

    def fit_conditional(self, model: Any, theta_hat: np.ndarray, mu: float, data: np.ndarray, lo: np.ndarray,
                        hi: np.ndarray, fixed_poi: np.ndarray, maxiter: int, tol: float,
                        par: int | None = None) -> DevFit:
        """The fit at POI = ``mu`` started on the profile's tangent at the free optimum ``theta_hat``
        (``par``: the index of another parameter held at ``mu`` instead, MINOS's case;
        ``fixed_poi`` then holds that one)."""

    def asymptotic_fits(self, model: Any, init: np.ndarray, mu: float, data: np.ndarray, lo: np.ndarray,
                        hi: np.ndarray, fixed: np.ndarray, fixed_poi: np.ndarray, asimov_mu: float,
                        maxiter: int, tol: float) -> AsymptoticFits:
        """The five fits of a first asymptotic test at ``mu`` (see ``compiled.calls.asymptotic_fits``)."""

    def expected_data(self, model: Any, theta: np.ndarray) -> np.ndarray:
        """Expected main rates then auxiliary data at ``theta``."""

    def expected_main(self, model: Any, theta: np.ndarray) -> np.ndarray:
        """Expected main rates (n_bins,) at ``theta``."""

    def nll(self, model: Any, theta: np.ndarray, data: np.ndarray) -> float:
        """pyhf's NLL."""

    def nll_dev(self, model: Any, theta: np.ndarray, data: np.ndarray) -> float:
        """The NLL minus the saturated NLL (cancellation-free differences)."""

    def nll_grad(self, model: Any, theta: np.ndarray, data: np.ndarray) -> tuple[float, np.ndarray]:
        """``(nll, gradient (P,))``."""

    def hesse(self, model: Any, theta: np.ndarray, data: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, bool]:
        """``(covariance (P, P), posdef)``: the inverse exact Hessian over the free parameters."""


_tuple_new = tuple.__new__  # a named tuple from a tuple, without NamedTuple._make's Python frame


class CompiledFitter:
    """:class:`Fitter` on the Numba core (the compiled entry points of :mod:`nextstat.engine.compiled`)."""

    name = "compiled"

    def __init__(self) -> None:
        from nextstat.engine import numba_core

        self._core = numba_core
        self._fit_with_errors = numba_core.fit_with_errors  # bound once: a small fit costs ~8 us
        self._newton_fit = numba_core.newton_fit  # a toy's fit: ~10 us on a small model
        self._no_factor = np.empty((0, 0))

    def __repr__(self) -> str:
        return "CompiledFitter()"

    def fit(self, model, start, data, lo, hi, fixed, maxiter, tol, hesse) -> FitOutput:
        return _tuple_new(FitOutput, self._fit_with_errors(start, data, lo, hi, fixed, *model.packed, maxiter, tol,
                                                           hesse))

    def fit_dev(self, model, start, data, lo, hi, fixed, maxiter, tol) -> DevFit:
        return DevFit._make(self._core.fit_dev(start, data, lo, hi, fixed, *model.packed, maxiter, tol))

    def newton(self, model, start, data, lo, hi, fixed, maxiter, tol, precise=False) -> NewtonFit:
        return _tuple_new(NewtonFit, self._newton_fit(start, data, lo, hi, fixed, model.arrays, model.aux_arrays,
                                                      maxiter, tol, not precise))

    def refits(self, model, theta_hat, cov, data, lo, hi, fixed, pars, values, maxiter, tol, chord_max) -> Refits:
        return Refits._make(self._core.refit_batch(theta_hat, cov, data, lo, hi, fixed, model.arrays,
                                                   model.aux_arrays, pars, values, maxiter, tol, chord_max))

    def fit_conditional(self, model, theta_hat, mu, data, lo, hi, fixed_poi, maxiter, tol, par=None) -> DevFit:
        return DevFit._make(self._core.fit_dev_conditional(theta_hat, float(mu), data, lo, hi, fixed_poi,
                                                           model.poi_index if par is None else par, *model.packed,
                                                           maxiter, tol))

    def asymptotic_fits(self, model, init, mu, data, lo, hi, fixed, fixed_poi, asimov_mu, maxiter,
                        tol) -> AsymptoticFits:
        return AsymptoticFits._make(self._core.asymptotic_fits(init, mu, data, lo, hi, fixed, fixed_poi,
                                                               model.poi_index, asimov_mu, *model.packed, maxiter,
                                                               tol))

    def expected_data(self, model, theta) -> np.ndarray:
        return self._core.expected_data(theta, *model.packed)

    def expected_main(self, model, theta) -> np.ndarray:
        return self._core.expected_main(theta, model.arrays)

    def nll(self, model, theta, data) -> float:
        return float(self._core.nll(theta, data, model.arrays, model.aux_arrays))

    def nll_dev(self, model, theta, data) -> float:
        return float(self._core.nll_dev(theta, data, model.arrays, model.aux_arrays))

    def nll_grad(self, model, theta, data) -> tuple[float, np.ndarray]:
        f, g = self._core.nll_grad(theta, data, model.arrays, model.aux_arrays)[:2]
        return float(f), g

    def hesse(self, model, theta, data, fixed) -> tuple[np.ndarray, bool]:
        return self._core.hesse_cov(np.ascontiguousarray(theta, dtype=np.float64), data,
                                    np.ascontiguousarray(fixed, dtype=bool), model.arrays, model.aux_arrays,
                                    self._no_factor)


class FirstUseFitter:
    """The ``auto`` engine during a first use: the strict torch fitter
    (:class:`~nextstat.engine.torch_fitter.TorchFitter` with ``strict=True``) for clean fits; at
    the first fit that does not end cleanly (``NotClean``), the compiled engine from then on, that
    call included (compiling it here if the background process has not yet). So the numbers of the
    edge cases (non-convergence, saddle points, kinks, flat directions) and their retries always
    come from the compiled engine; a clean fit has one minimum, which both engines find."""

    def __init__(self) -> None:
        from nextstat.engine.torch_fitter import NotClean, TorchFitter

        self._torch = TorchFitter(strict=True)
        self._not_clean = NotClean
        self._current: Fitter = self._torch

    @property
    def name(self) -> str:
        return self._current.name

    def __repr__(self) -> str:
        return f"FirstUseFitter(now={self._current.name!r})"

    def _call(self, method: str, *args):
        if self._current is self._torch:
            try:
                return getattr(self._torch, method)(*args)
            except self._not_clean as exc:
                logger.info("first use: a torch fit did not end cleanly (%s); the compiled engine takes over", exc)
                self._current = _engine("compiled")
        return getattr(self._current, method)(*args)

    def fit(self, *args) -> FitOutput:
        return self._call("fit", *args)

    def fit_dev(self, *args) -> DevFit:
        return self._call("fit_dev", *args)

    def fit_conditional(self, *args) -> DevFit:
        return self._call("fit_conditional", *args)

    def newton(self, *args) -> NewtonFit:
        return self._call("newton", *args)

    def refits(self, *args) -> Refits:
        return self._call("refits", *args)

    def asymptotic_fits(self, *args) -> AsymptoticFits:
        return self._call("asymptotic_fits", *args)

    def expected_data(self, *args) -> np.ndarray:
        return self._call("expected_data", *args)

    def expected_main(self, *args) -> np.ndarray:
        return self._call("expected_main", *args)

    def nll(self, *args) -> float:
        return self._call("nll", *args)

    def nll_dev(self, *args) -> float:
        return self._call("nll_dev", *args)

    def nll_grad(self, *args) -> tuple[float, np.ndarray]:
        return self._call("nll_grad", *args)

    def hesse(self, *args) -> tuple[np.ndarray, bool]:
        return self._call("hesse", *args)


# --- which engine runs a fit --------------------------------------------------------------------

_ENGINES: dict[str, Fitter] = {}
_READY: set[str] = set()  # compiled entry points known to be cached or compiled in this process
READY: dict[str, Fitter] = {}
"""entry point -> the compiled engine, for the entry points of :data:`_READY`: a hot path's
``READY.get(name)`` (one C call) before :func:`resolve_fitter`."""


class _Background:
    """The one background compilation of this process (started by the first uncached call)."""

    job = None  # a nextstat.engine.background.BackgroundWarmup, once started
    finished = False


def _engine(name: str) -> Fitter:
    if name not in _ENGINES:
        if name == "compiled":
            _ENGINES[name] = CompiledFitter()
        else:
            from nextstat.engine.torch_fitter import TorchFitter

            _ENGINES[name] = TorchFitter()
    return _ENGINES[name]


#: the warmup parts compiled in the background on a first use (the first fit, test and loss step)
BACKGROUND_PARTS = ("fit", "hypotest", "loss")


def background_compile(parts: tuple[str, ...] = BACKGROUND_PARTS):
    """The process's one background compilation (:class:`~nextstat.engine.background.BackgroundWarmup`
    of ``parts``), started at the first call (later calls return it, whatever their ``parts``);
    parts already cached start no child. :func:`compiled_ready` and ``nextstat demo`` share it."""
    if _Background.job is None:
        from nextstat.engine.background import BackgroundWarmup

        _Background.job = BackgroundWarmup(parts, note="; fits run on the PyTorch fitter until then")
    return _Background.job


def background_job():
    """The background compilation started in this process (:func:`background_compile`), or None."""
    return _Background.job


def _ready(entry_point: str) -> bool:
    READY[entry_point] = _engine("compiled")  # resolve_fitter's hot path finds it
    _READY.add(entry_point)
    return True


def compiled_ready(entry_point: str) -> bool:
    """Whether calls of the compiled ``entry_point`` (a name in :mod:`nextstat.engine.numba_core`)
    should run now (``auto`` policy): it is in the compiled cache, or was compiled in this process,
    or the background compilation ended without caching it (then the call compiles it: nothing
    waits for ever). Otherwise a background process compiles :data:`BACKGROUND_PARTS` (once)."""
    if entry_point in _READY:
        return True
    choice = os.environ.get("NEXTSTAT_FITTER", "auto")
    if choice == "compiled":
        return _ready(entry_point)
    if choice == "torch":
        return False
    from nextstat.engine import numba_core
    from nextstat.engine.jit import is_cached

    dispatcher = getattr(numba_core, entry_point)
    if dispatcher.signatures or is_cached(dispatcher):
        return _ready(entry_point)
    if not _Background.finished and background_compile().running():
        return False
    _Background.finished = True
    if not is_cached(dispatcher):
        logger.info("the background compilation did not cache %s; compiling it in this process", entry_point)
    return _ready(entry_point)


def resolve_fitter(fitter: Any = None, entry_point: str = "fit_with_errors") -> Fitter:
    """The engine for a call: a :class:`Fitter` as given; ``"compiled"`` or ``"torch"``; ``None`` or
    ``"auto"`` (``$NEXTSTAT_FITTER`` where set): compiled once ``entry_point`` is ready
    (:func:`compiled_ready`), else torch. ``ValueError`` names an unknown name, ``TypeError`` any
    other type."""
    if fitter is None and entry_point in _READY:  # the hot path: one set lookup
        return _ENGINES["compiled"]
    if fitter is None or fitter == "auto":
        if entry_point in _READY:
            return _engine("compiled")
        env = os.environ.get("NEXTSTAT_FITTER", "auto")
        if env not in FITTERS:
            raise ValueError(f"NEXTSTAT_FITTER: expected one of {FITTERS}, got {env!r}")
        if env == "torch":
            return _engine("torch")
        return _engine("compiled") if compiled_ready(entry_point) else FirstUseFitter()
    if isinstance(fitter, str):
        if fitter not in FITTERS:
            raise ValueError(f"fitter: expected one of {FITTERS} or a Fitter, got {fitter!r}")
        return _engine(fitter)
    if all(hasattr(fitter, m) for m in ("fit", "fit_dev", "fit_conditional", "asymptotic_fits", "name")):
        return fitter
    raise TypeError(f"fitter: expected one of {FITTERS} or a Fitter, got {type(fitter).__name__}")
