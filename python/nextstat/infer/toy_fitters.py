"""Toy fitters: many independent fits of one model to many datasets, on the CPU or CUDA.

Every fitter maps (data [N, D], init [N, P], fixed [P]) to (theta [N, P], nll [N], converged
[N], n_iter [N]); each row is fitted independently of the others, so a toy's fit does not
depend on the batch it is in, the thread count or the process it runs in.

CPU fits
    Each toy is one call of the compiled engine's bounded Newton fit
    (:meth:`CompiledFitter.newton <nextstat.engine.fitter.Fitter.newton>`, ``nogil``: the GIL is
    released while it runs), by a pool of threads over contiguous slices of toys. With ``n_threads=None`` the
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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nextstat.engine.threads import single_threaded_blas, usable_cpus
from nextstat.engine.devices import resolve_device
from nextstat.engine.fitter import FitStatus, resolve_fitter
from nextstat.infer.fit import fit
from nextstat.infer.toy_sampler import _n_toys
from nextstat.model import Model
from nextstat.progress import resolve as progress_rule

_CPU_CHUNK = 4096

#: toy fits use nextstat.fit's iteration limit and tolerance unless told otherwise
_FIT_DEFAULTS = {k: inspect.signature(fit).parameters[k].default for k in ("maxiter", "tol")}
#: with n_threads=None, toys are fitted on several threads only when one fit takes longer
_THREADS_MIN_FIT_S = 1e-3


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
        self.n_threads = usable_cpus() if n_threads is None else int(n_threads)
        # None: decided from the first fits' duration (threads cost more than they bring for
        # fits of ~0.1 ms, where the GIL-held call overhead dominates); explicit n_threads > 1: always
        self._threaded: bool | None = None if n_threads is None else self.n_threads > 1
        self._pool: ThreadPoolExecutor | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _CpuFitter:
        self._stack.enter_context(single_threaded_blas())
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
        model, lo, hi, maxiter, tol = self.model, self.lo, self.hi, self.maxiter, self.tol
        newton = resolve_fitter("compiled").newton

        def run(start: int, stop: int) -> int:
            for i in range(start, stop):
                out = newton(model, init[i], data[i], lo, hi, fixed, maxiter, tol)
                theta[i] = out.theta
                nll[i] = out.nll
                status[i] = out.status
                n_iter[i] = out.n_iter
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
        return theta, nll, status == FitStatus.CONVERGED, n_iter


def _refit_cpu(model: Model, row: np.ndarray, start: np.ndarray, lo: np.ndarray, hi: np.ndarray, fixed: np.ndarray,
               maxiter: int, tol: float, i: int, theta: np.ndarray, nll: np.ndarray, converged: np.ndarray,
               n_iter: np.ndarray) -> None:
    """Refit toy ``i`` with the compiled CPU fit from ``start``; row ``i`` of the outputs is
    replaced when that converges (``n_iter`` adds its iterations)."""
    out = resolve_fitter("compiled").newton(model, np.ascontiguousarray(start), row, lo, hi, fixed, maxiter, tol)
    n_iter[i] += out.n_iter
    if out.status == FitStatus.CONVERGED:
        theta[i], nll[i], converged[i] = out.theta, out.nll, True


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
    """``"cpu"`` or ``"cuda:N"`` (:func:`nextstat.engine.devices.resolve_device`)."""
    return resolve_device(device, kinds=("cpu", "cuda"))


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
    return tqdm(total=total, disable=not progress_rule(progress), desc=desc, unit=unit, leave=False, dynamic_ncols=True)
