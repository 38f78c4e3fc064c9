"""Pseudo-experiments: batched toy fits and toy-based CLs (pyhf 0.7.6 ``ToyCalculator``).

Toys
    A toy is one draw of the full HistFactory likelihood's data at parameters ``pars``, as
    pyhf's ``model.make_pdf(pars).sample()`` draws it (arXiv:1007.1727 sec. 2; pyhf
    ``pdf.Model.make_pdf``): main counts ``n_b ~ Poisson(nu_b(pars))``, then the auxiliary data
    of the Gaussian constraints ``a_p ~ Normal(theta_p, sigma_p)`` (normsys, histosys, lumi,
    staterror) and of the Poisson constraints ``a_p ~ Poisson(tau_p * gamma_p)`` (shapesys).
    The auxiliary data keep the model's order (``model.data`` layout), so a toy can be passed
    as ``data`` anywhere.

Reproducibility
    Toys are drawn on the CPU with NumPy's ``Generator(PCG64)`` on every device, in blocks of
    :data:`RNG_BLOCK` toys; block ``k`` of stream ``s`` uses ``SeedSequence(seed,
    spawn_key=(s, k))``. Toy ``i`` therefore depends only on the model, ``pars``, ``seed`` and
    ``i``: not on ``n_toys``, ``chunk_size``, the thread count or the device. Each toy is fitted
    independently of the others, so on one device a seed gives bit-identical results whatever
    the thread count or chunking; CPU and CUDA fit the same pseudo-data and agree to the fits'
    tolerance. Different NumPy versions may draw different numbers.

CPU fits
    Each toy is one call of the compiled bounded Newton fit
    (:func:`nextstat.engine.numba_core.newton_fit`, ``nogil``: the GIL is released while it
    runs), by a pool of threads over contiguous slices of toys. With ``n_threads=None`` the
    pool is used only when a fit takes more than a millisecond: below that, the GIL-held call
    overhead makes threads slower than one. While toys run, BLAS is held to one thread
    (``threadpoolctl``): OpenBLAS's own threads oversubscribe the cores and made fits up to
    20x slower in our measurements. A compiled loop over toys (``prange`` or a cached wrapper)
    was not used: it took 30-70 s to compile, and Numba's cache does not see changes to the
    core it calls.

Stalled fits
    The compiled fit handles a singular Hessian itself (e.g. a one-bin shapesys toy with
    auxiliary count 0: Levenberg-Marquardt damping after a failed line search). Fits that still
    fail, or that hit ``maxiter``, are reported as not converged.

CUDA fits
    :func:`nextstat.engine.torch_fit.batched_fit` on a whole chunk at once (float64); problems
    that stop short of ``maxiter`` without converging (a stalled line search: the batched fit
    has no damping) are refitted from the same start by the compiled CPU fit.

Memory
    Toys are generated and fitted ``chunk_size`` at a time; only the per-toy results
    (``n_toys x n_params`` best fits) are kept, and the pseudo-data only with
    ``return_data=True``. No per-toy Hessian is stored on the CPU.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri
from tqdm.auto import tqdm

from nextstat.engine import numba_core as core
from nextstat.errors import ConvergenceWarning
from nextstat.infer import test_statistics as ts
from nextstat.infer.fit import _bounds, _fixed_mask, fit
from nextstat.model import Model
from nextstat.results import FitResult, HypotestResult, ToyFitResults

__all__ = ["RNG_BLOCK", "expected_band", "fit_toys", "hypotest_toys", "sample_toys", "toy_pvalues"]

#: toys drawn from one random stream block (see the module docstring).
RNG_BLOCK = 256

#: normal-distribution percentiles of the expected band, -2 ... +2 sigma (pyhf
#: ``ToyCalculator.expected_pvalues``).
_BAND_PERCENTILES = np.array([2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681])

# random streams: fit_toys, signal+background toys, background-only toys
_STREAM_FIT, _STREAM_SB, _STREAM_B = 0, 1, 2

_CPU_CHUNK = 4096

#: toy fits use nextstat.fit's iteration limit and tolerance unless told otherwise
_FIT_DEFAULTS = {k: inspect.signature(fit).parameters[k].default for k in ("maxiter", "tol")}
#: with n_threads=None, toys are fitted on several threads only when one fit takes longer
_THREADS_MIN_FIT_S = 1e-3


# ------------------------------------------------------------------------------------------
# Pseudo-data
# ------------------------------------------------------------------------------------------


#: the largest rate numpy's Poisson sampler accepts (``numpy/random/_common.pyx``: int64 max
#: minus 10 sqrt of it); larger expected rates are refused before sampling
POISSON_LAM_MAX = float(np.iinfo(np.int64).max - np.sqrt(np.iinfo(np.int64).max) * 10)


class _ToySampler:
    """Draws toys of ``model`` at ``pars``; rows ``[start, stop)`` of an endless sequence."""

    def __init__(self, model: Model, pars: np.ndarray, seed: int, stream: int):
        lam = model.expected_main(pars)
        bad = np.flatnonzero(~np.isfinite(lam) | (lam < 0) | (lam > POISSON_LAM_MAX))
        if bad.size:
            raise ValueError(f"pars: the expected rate of main bin {int(bad[0])} at the parameters the toys are "
                             f"generated at is {float(lam[bad[0]])!r}; toys need "
                             f"finite rates in [0, {POISSON_LAM_MAX:.6g}] (numpy's Poisson sampler's limit)")
        par, kind, sigma, tau = model.aux_arrays
        gauss = kind == core.AUX_GAUSS
        self.nb = model.n_bins
        self.width = model.n_bins + model.n_aux
        self.lam = lam
        self.g_col = model.n_bins + np.flatnonzero(gauss)
        self.g_loc = pars[par[gauss]]
        self.g_scale = sigma[gauss]
        self.p_col = model.n_bins + np.flatnonzero(~gauss)
        self.p_rate = pars[par[~gauss]] * tau[~gauss]
        if np.any(~np.isfinite(self.p_rate) | (self.p_rate < 0) | (self.p_rate > POISSON_LAM_MAX)):
            raise ValueError("pars: a Poisson (shapesys) constraint rate tau * gamma is negative, not finite or "
                             f"above {POISSON_LAM_MAX:.6g} (numpy's Poisson sampler's limit)")
        self.seed = seed
        self.stream = stream
        self._cache: tuple[int, np.ndarray] | None = None

    def block(self, k: int) -> np.ndarray:
        """Toys ``k * RNG_BLOCK ... (k + 1) * RNG_BLOCK - 1``, shape (RNG_BLOCK, n_bins + n_aux)."""
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(self.stream, k))))
        out = np.empty((RNG_BLOCK, self.width))
        # the order of pyhf's Simultaneous pdf: main Poisson, Gaussian constraints, Poisson constraints
        out[:, :self.nb] = rng.poisson(self.lam, size=(RNG_BLOCK, self.nb))
        out[:, self.g_col] = rng.normal(self.g_loc, self.g_scale, size=(RNG_BLOCK, self.g_col.size))
        out[:, self.p_col] = rng.poisson(self.p_rate, size=(RNG_BLOCK, self.p_col.size))
        self._cache = (k, out)
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Toys ``start ... stop - 1``, shape (stop - start, n_bins + n_aux), C-contiguous."""
        out = np.empty((stop - start, self.width))
        i = start
        while i < stop:
            k, j = divmod(i, RNG_BLOCK)
            n = min(RNG_BLOCK - j, stop - i)
            out[i - start:i - start + n] = self.block(k)[j:j + n]
            i += n
        return out


def _seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


def sample_toys(model: Model, pars: Any, n_toys: int, *, seed: int = 0) -> np.ndarray:
    """Pseudo-data drawn at ``pars``: main and auxiliary data, shape (n_toys, n_bins + n_aux).

    The same toys as :func:`fit_toys` fits for the same ``pars`` and ``seed`` (module docstring).

    >>> import nextstat
    >>> from nextstat.builders import build_workspace_from_histograms
    >>> model = nextstat.from_pyhf(build_workspace_from_histograms([1.0, 2.0], {"b": [40.0, 30.0]}))
    >>> toys = sample_toys(model, model.suggested_init(), 20000, seed=1)
    >>> bool(np.allclose(toys.mean(0), model.expected_data(model.suggested_init()), rtol=0.02))
    True
    """
    p = model._pars(pars)
    n = _n_toys(n_toys, "n_toys")
    return _ToySampler(model, p, _seed(seed), _STREAM_FIT).rows(0, n)


def _n_toys(n: Any, name: str) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {n!r}")
    return int(n)


# ------------------------------------------------------------------------------------------
# Fitters: (data [N, D], init [N, P], fixed [P]) -> theta [N, P], nll [N], converged [N], n_iter [N]
# ------------------------------------------------------------------------------------------


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class _CpuFitter:
    """Compiled Newton fits, one toy per call, over a pool of threads."""

    device = "cpu"

    def __init__(self, model: Model, bounds: np.ndarray, *, n_threads: int | None, maxiter: int, tol: float):
        self.model = model
        self.lo = np.ascontiguousarray(bounds[:, 0], dtype=np.float64)
        self.hi = np.ascontiguousarray(bounds[:, 1], dtype=np.float64)
        self.maxiter = int(maxiter)
        self.tol = float(tol)
        if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1):
            raise ValueError(f"n_threads: expected an integer >= 1, got {n_threads!r}")
        self.n_threads = _usable_cpus() if n_threads is None else int(n_threads)
        # None: decided from the first fits' duration (threads cost more than they bring for
        # fits of ~0.1 ms, where the GIL-held call overhead dominates); explicit n_threads > 1: always
        self._threaded: bool | None = None if n_threads is None else self.n_threads > 1
        self._pool: ThreadPoolExecutor | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _CpuFitter:
        self._stack.enter_context(_single_threaded_blas())
        if self.n_threads > 1:
            self._pool = self._stack.enter_context(ThreadPoolExecutor(self.n_threads, thread_name_prefix="nextstat-toys"))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pool = None
        self._stack.close()

    def chunk_size(self) -> int:
        return _CPU_CHUNK

    def fit(self, data: np.ndarray, init: np.ndarray, fixed: np.ndarray,
            on_done: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        N, P = init.shape
        theta = np.empty((N, P))
        nll = np.empty(N)
        status = np.empty(N, dtype=np.int64)
        n_iter = np.empty(N, dtype=np.int64)
        fixed = np.ascontiguousarray(fixed, dtype=np.bool_)
        A, AUX, lo, hi, maxiter, tol = self.model.arrays, self.model.aux_arrays, self.lo, self.hi, self.maxiter, self.tol

        def run(start: int, stop: int) -> int:
            for i in range(start, stop):
                th, f, _, it, st, _ = core.newton_fit(init[i], data[i], lo, hi, fixed, A, AUX, maxiter, tol)
                theta[i] = th
                nll[i] = f
                status[i] = st
                n_iter[i] = it
            return stop - start

        a = 0
        if N and self._threaded is None:
            # time a few fits (this also compiles on first use) to decide whether threads pay
            on_done(run(0, 1))
            a = min(N, 5)
            t = time.perf_counter()
            on_done(run(1, a))
            if a > 1:
                self._threaded = (time.perf_counter() - t) / (a - 1) > _THREADS_MIN_FIT_S
        if a == N:
            pass
        elif self._pool is None or not self._threaded:
            step = max(1, min(64, (N - a) // 8))
            for s in range(a, N, step):
                on_done(run(s, min(N, s + step)))
        else:
            step = max(1, min(64, -(-(N - a) // (4 * self.n_threads))))
            futures = [self._pool.submit(run, s, min(N, s + step)) for s in range(a, N, step)]
            for fut in as_completed(futures):
                on_done(fut.result())
        return theta, nll, status == core.FIT_CONVERGED, n_iter


def _refit_cpu(model: Model, row: np.ndarray, start: np.ndarray, lo: np.ndarray, hi: np.ndarray, fixed: np.ndarray,
               maxiter: int, tol: float, i: int, theta: np.ndarray, nll: np.ndarray, converged: np.ndarray,
               n_iter: np.ndarray) -> None:
    """Refit toy ``i`` with the compiled CPU fit from ``start``; row ``i`` of the outputs is
    replaced when that converges (``n_iter`` adds its iterations)."""
    th, f, _, it, st, _ = core.newton_fit(np.ascontiguousarray(start), row, lo, hi, fixed, model.arrays,
                                          model.aux_arrays, maxiter, tol)
    n_iter[i] += it
    if st == core.FIT_CONVERGED:
        theta[i], nll[i], converged[i] = th, f, True


class _TorchFitter:
    """:func:`nextstat.engine.torch_fit.batched_fit` on a chunk of toys at once."""

    def __init__(self, model: Model, bounds: np.ndarray, *, device: Any, maxiter: int, tol: float):
        try:
            import torch

            from nextstat.engine.torch_fit import batched_fit
            from nextstat.engine.torch_model import TorchModel
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError(f"device={str(device)!r}: the batched PyTorch fitter is unavailable ({exc})") from exc
        self.torch = torch
        self.batched_fit = batched_fit
        self.tmodel = TorchModel(model, device=device, dtype=torch.float64)
        self.device = str(self.tmodel.device)
        self.model = model
        self.lo = np.ascontiguousarray(bounds[:, 0], dtype=np.float64)
        self.hi = np.ascontiguousarray(bounds[:, 1], dtype=np.float64)
        self.bounds = torch.as_tensor(np.ascontiguousarray(bounds, dtype=np.float64), device=self.tmodel.device)
        self.maxiter = int(maxiter)
        self.tol = float(tol)
        self.n_params = model.n_params
        self.width = model.n_bins + model.n_aux

    def __enter__(self) -> _TorchFitter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def chunk_size(self) -> int:
        """Toys per batch: about a quarter of the free device memory for the fitter's
        per-problem tensors (two P x P Hessians, the B x P Jacobian and their temporaries)."""
        P, W = self.n_params, self.width
        per_toy = 8 * (6 * P * P + 4 * W * P + 16 * (W + P))
        budget = 2**31
        if self.tmodel.device.type == "cuda":
            free, _ = self.torch.cuda.mem_get_info(self.tmodel.device)
            budget = free // 4
        return int(min(65536, max(64, budget // per_toy)))

    def fit(self, data: np.ndarray, init: np.ndarray, fixed: np.ndarray,
            on_done: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        torch, dev = self.torch, self.tmodel.device
        N = data.shape[0]
        if N == 0:
            P = self.n_params
            return np.empty((0, P)), np.empty(0), np.empty(0, bool), np.empty(0, np.int64)
        res = self.batched_fit(
            self.tmodel,
            torch.as_tensor(data, dtype=torch.float64, device=dev),
            torch.as_tensor(init, dtype=torch.float64, device=dev),
            torch.as_tensor(np.asarray(fixed, dtype=bool), device=dev),
            self.bounds, maxiter=self.maxiter, tol=self.tol,
        )
        theta, nll, conv, n_iter = (np.array(t.detach().cpu().numpy()) for t in res)
        theta, nll, conv, n_iter = theta.astype(np.float64), nll.astype(np.float64), conv.astype(bool), n_iter.astype(np.int64)
        # problems that stopped short of the iteration limit (a stalled line search: the batched
        # fit has no damping) get the compiled CPU fit, which handles singular Hessians
        fixed = np.ascontiguousarray(fixed, dtype=np.bool_)
        for i in np.flatnonzero(~conv & (n_iter < self.maxiter) & np.isfinite(nll)):
            _refit_cpu(self.model, np.ascontiguousarray(data[i]), np.ascontiguousarray(init[i]), self.lo, self.hi, fixed,
                    self.maxiter, self.tol, i, theta, nll, conv, n_iter)
        on_done(N)
        return theta, nll, conv, n_iter


def _resolve_device(device: Any) -> str:
    name = str(device)
    if name == "auto":
        try:
            import torch
        except ImportError:  # pragma: no cover
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"device={name!r}: CUDA is not available (torch {torch.__version__}, "
                               f"torch.cuda.is_available() is False); use device='cpu' or 'auto'")
        return name
    raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def _fitter(model: Model, bounds: np.ndarray, device: str, n_threads: int | None,
            maxiter: int | None, tol: float | None) -> _CpuFitter | _TorchFitter:
    maxiter = _FIT_DEFAULTS["maxiter"] if maxiter is None else maxiter
    tol = _FIT_DEFAULTS["tol"] if tol is None else tol
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise ValueError(f"maxiter: expected an integer >= 1, got {maxiter!r}")
    if device == "cpu":
        return _CpuFitter(model, bounds, n_threads=n_threads, maxiter=maxiter, tol=tol)
    return _TorchFitter(model, bounds, device=device, maxiter=maxiter, tol=tol)


def _chunk(chunk_size: Any, fitter: _CpuFitter | _TorchFitter) -> int:
    if chunk_size is None:
        return fitter.chunk_size()
    return _n_toys(chunk_size, "chunk_size")


def _chunks(n: int, step: int, make: Callable[[int, int], np.ndarray],
            background: bool) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(a, b, make(a, b))`` for the chunks ``[a, b)`` of ``range(n)``. With ``background``
    the next chunk's data are made in a thread while the caller fits the current one (a GPU
    fit leaves the CPU idle; NumPy's generators release the GIL); the data do not change."""
    spans = [(a, min(n, a + step)) for a in range(0, n, step)]
    if not background or len(spans) < 2:
        for a, b in spans:
            yield a, b, make(a, b)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(make, *spans[0])
        for i, (a, b) in enumerate(spans):
            d = nxt.result()
            if i + 1 < len(spans):
                nxt = pool.submit(make, *spans[i + 1])
            yield a, b, d


def _bar(total: int, progress: bool, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, disable=not progress, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------
# fit_toys
# ------------------------------------------------------------------------------------------


def fit_toys(model: Model, pars: Any, *, n_toys: int | None = None, seed: int = 0, device: str = "cpu",
             data: Any = None, return_data: bool = False, progress: bool = True,
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
        ``converged``, ``n_iter``. Toys whose fit did not converge are kept and flagged
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
    t0 = time.perf_counter()
    p = model._pars(pars)
    seed = _seed(seed)
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
        make = sampler.rows if sampler is not None else (lambda a, b: np.ascontiguousarray(given[a:b]))
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
        return ~(mu_hat > mu)  # q_mu = 0 for mu_hat > mu (arXiv:1007.1727 eq. 14)
    if test_stat == "q0":
        return ~(mu_hat < 0)  # q_0 = 0 for mu_hat < 0 (eq. 12)
    return np.ones(mu_hat.shape, dtype=bool)


def _toy_statistics(fitter: _CpuFitter | _TorchFitter, sampler: _ToySampler, n: int, step: int,
                    start: np.ndarray, fixed: np.ndarray, poi: int, mu: float, test_stat: str,
                    bar: tqdm) -> tuple[np.ndarray, np.ndarray]:
    """Test statistic of ``n`` toys (free fit from ``start``, conditional fit from the free
    fit with the POI at ``mu``). Returns (q [n], ok [n]); ok is False where a needed fit failed."""
    q = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    cfixed = fixed.copy()
    cfixed[poi] = True
    for a, b, d in _chunks(n, step, sampler.rows, isinstance(fitter, _TorchFitter)):
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


@dataclass(frozen=True)
class _Distributions:
    """Observed statistic and the sampled ones, failed toys included (``ok`` False)."""

    q_obs: float
    mu_hat: float
    observed_converged: bool
    q_sb: np.ndarray
    ok_sb: np.ndarray
    q_b: np.ndarray
    ok_b: np.ndarray


def _toy_distributions(model: Model, mu: float, obs: np.ndarray, n_sb: int, n_b: int, seed: int, device: str,
                       test_stat: str, init: np.ndarray, fixed: np.ndarray, bounds: np.ndarray, *,
                       progress: bool, chunk_size: int | None, n_threads: int | None,
                       maxiter: int | None, tol: float | None) -> _Distributions:
    """pyhf ``ToyCalculator.teststatistic`` and ``.distributions``: the statistic on the data,
    then on toys at theta_hathat(mu) (s+b) and theta_hathat(0) (b; theta_hathat(1) for q0)."""
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
    q_obs = ts.statistic(test_stat, mu, cond.nll, free.nll, mu_hat)
    mu_alt = 1.0 if test_stat == "q0" else 0.0
    pars_sb = cond.bestfit
    pars_b = cond.bestfit if mu_alt == mu else conditional(mu_alt).bestfit
    sampler_sb = _ToySampler(model, pars_sb, seed, _STREAM_SB)
    sampler_b = _ToySampler(model, pars_b, seed, _STREAM_B)
    with _fitter(model, bounds, device, n_threads, maxiter, tol) as fitter, \
            _bar(2 * (n_sb + n_b), progress, f"Toys at mu={mu:g}", "fit") as bar:
        step = _chunk(chunk_size, fitter)
        q_sb, ok_sb = _toy_statistics(fitter, sampler_sb, n_sb, step, pars_sb, fixed, poi, mu, test_stat, bar)
        q_b, ok_b = _toy_statistics(fitter, sampler_b, n_b, step, pars_b, fixed, poi, mu, test_stat, bar)
    return _Distributions(float(q_obs), mu_hat, bool(free.converged and cond.converged), q_sb, ok_sb, q_b, ok_b)


def hypotest_toys(model: Model, mu: float = 1.0, *, n_toys: int = 1000, n_toys_sb: int | None = None,
                  n_toys_b: int | None = None, seed: int = 0, device: str = "cpu", test_stat: str = "qtilde",
                  data: Any = None, init_pars: Any = None, par_bounds: Any = None, fixed_params: Any = None,
                  return_expected: bool = True, progress: bool = True, chunk_size: int | None = None,
                  n_threads: int | None = None, maxiter: int | None = None,
                  tol: float | None = None) -> HypotestResult:
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
    ``mu_hat < 0`` (q0) the statistic is 0 and the conditional fit is skipped.

    Args:
        model: compiled model. mu: tested POI value.
        n_toys: toys per hypothesis; ``n_toys_sb`` / ``n_toys_b`` override it per hypothesis.
        seed: integer >= 0; the two hypotheses use independent streams of it (module
            docstring of :mod:`nextstat.infer.toys`).
        device: "cpu", "cuda" / "cuda:N" or "auto", as in :func:`fit_toys`.
        test_stat: "qtilde", "q", "q0", "tmu" or "tmu_tilde".
        data: observed main + auxiliary data (or main only); default the model's.
        init_pars, par_bounds, fixed_params: as in :func:`nextstat.fit`, for every fit.
        return_expected: compute the expected band (``cls_expected``; ``p0_expected`` for q0).
        progress: tqdm progress bar (counts fits). chunk_size, n_threads, maxiter, tol: as in
            :func:`fit_toys`.

    Returns:
        :class:`~nextstat.results.HypotestResult` with ``calculator="toybased"``, the Monte
        Carlo errors, ``n_toys`` = (signal+background, background-only) toys used and
        ``n_failed_toys``. A toy whose free fit, or needed conditional fit, did not converge is
        excluded from the p-values and counted in ``n_failed_toys`` (a ``RuntimeWarning`` says
        how many). CLs is NaN when no background-only toy reaches ``q_obs`` (CLb = 0).

    Raises:
        ValueError: bad arguments. RuntimeError: every toy of a hypothesis failed.
    """
    if model.poi_index is None:
        raise ValueError("model: a POI is required for hypothesis tests")
    if test_stat not in ts.TEST_STATS:
        raise ValueError(f"test_stat: expected one of {ts.TEST_STATS}, got {test_stat!r}")
    mu = float(mu)
    if test_stat == "q0" and mu != 0.0:
        warnings.warn(f"hypotest_toys: the q0 test statistic tests mu = 0 (discovery); mu = {mu!r} is ignored",
                      UserWarning, stacklevel=2)
        mu = 0.0
    lo_poi, hi_poi = (model.suggested_bounds() if par_bounds is None else _bounds(model, par_bounds))[model.poi_index]
    if not (math.isfinite(mu) and lo_poi <= mu <= hi_poi):
        raise ValueError(f"mu: expected a finite value within the bounds [{lo_poi:g}, {hi_poi:g}] of the POI "
                         f"{model.poi_name!r}, got {mu!r}")
    n_sb = _n_toys(n_toys if n_toys_sb is None else n_toys_sb, "n_toys_sb")
    n_b = _n_toys(n_toys if n_toys_b is None else n_toys_b, "n_toys_b")
    seed = _seed(seed)
    obs = model._data(data)
    init = model.suggested_init() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    fixed = _fixed_mask(model, fixed_params)
    bounds = _bounds(model, par_bounds)
    dev = _resolve_device(device)

    d = _toy_distributions(model, mu, obs, n_sb, n_b, seed, dev, test_stat, init, fixed, bounds,
                           progress=progress, chunk_size=chunk_size, n_threads=n_threads, maxiter=maxiter, tol=tol)
    if not d.observed_converged:
        warnings.warn("hypotest_toys: a fit to the observed data did not converge (HypotestResult.converged is False)",
                      ConvergenceWarning, stacklevel=2)
    q_obs, mu_hat, q_sb, ok_sb, q_b, ok_b = d.q_obs, d.mu_hat, d.q_sb, d.ok_sb, d.q_b, d.ok_b
    if not (math.isfinite(q_obs) and math.isfinite(mu_hat)):
        raise ValueError(f"hypotest_toys: the observed test statistic at {model.poi_name} = {mu:g} is not finite: the "
                         "hypothesis predicts no events in a bin with observed events, or the yields overflow")
    n_failed = int(np.count_nonzero(~ok_sb) + np.count_nonzero(~ok_b))
    q_sb, q_b = q_sb[ok_sb], q_b[ok_b]
    if q_sb.size == 0 or q_b.size == 0:
        raise ValueError(f"hypotest_toys: the fits of every {'signal+background' if q_sb.size == 0 else 'background-only'} "
                         f"toy failed to converge; check the model or raise maxiter")
    if n_failed:
        warnings.warn(f"hypotest_toys: {n_failed} of {n_sb + n_b} toys had a fit that did not converge; "
                      f"they are excluded from the p-values (HypotestResult.n_failed_toys)", ConvergenceWarning, stacklevel=2)
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
