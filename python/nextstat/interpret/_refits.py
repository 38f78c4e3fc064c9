"""Compiled refits of the ranking: the POI with one nuisance parameter held at a shifted value.

Speed: the refits start from the linear response of the nominal fit, ``theta_hat + C[:, i] /
C[i, i] * (value - theta_hat_i)`` (``C`` the Hesse covariance), and iterate Newton steps with
the fixed Hessian of the nominal fit restricted to the other free parameters, whose inverse is
the Schur complement ``C_FF - C_Fi C_iF / C_ii`` (no factorisation per refit). A refit that
leaves the bounds, stops contracting or does not converge in ``chord_max`` steps is finished by
the full bounded Newton fit (:func:`nextstat.engine.numba_core.newton_fit`). The compiled
kernel releases the GIL; refits run in ``n_jobs`` threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nextstat.engine import numba_core as core
from nextstat.engine.jit import kernel
from nextstat.engine.layout import named
from nextstat.engine.threads import single_threaded_blas
from nextstat.model import Model
from nextstat.results import FitResult
from nextstat.progress import resolve as progress_rule


# an engine kernel (nextstat.engine.jit): its cache is keyed on the text of every kernel module,
# numba_core's nll_grad and newton_fit (compiled into it) included
@kernel
def _refit_batch(theta_hat, cov, data, lo, hi, fixed, A, AUX, pars, values, maxiter, tol, chord_max):
    """Fits with parameter ``pars[k]`` fixed at ``values[k]``, all other free parameters profiled.

    ``theta_hat``: nominal best fit (P,); ``cov``: its covariance (P, P), zero rows/columns for
    ``fixed`` parameters. Returns (theta (K, P), status (K,) FIT_*, iterations (K,), used the
    full Newton fit (K,)).
    """
    K = pars.shape[0]
    P = theta_hat.shape[0]
    out = np.empty((K, P))
    status = np.empty(K, dtype=np.int64)
    iters = np.zeros(K, dtype=np.int64)
    newton = np.zeros(K, dtype=np.bool_)
    free0 = np.flatnonzero(~fixed)
    g0 = np.zeros(P)
    for k in range(K):
        i = pars[k]
        v = values[k]
        cii = cov[i, i]
        theta = theta_hat.copy()
        theta[i] = v
        ok = cii > 0.0 and np.isfinite(cii)
        st = core.FIT_MAXITER
        it = 0
        if ok:
            # linear response of the other parameters to the shift of parameter i
            s = (v - theta_hat[i]) / cii
            for a in range(free0.shape[0]):
                p = free0[a]
                if p != i:
                    theta[p] = theta_hat[p] + cov[p, i] * s
                    if not lo[p] <= theta[p] <= hi[p]:
                        ok = False
        if ok:
            prev = np.inf
            g0[:] = 0.0
            while it < chord_max:
                it += 1
                f, g = core.nll_grad(theta, data, A, AUX)
                if not np.isfinite(f):
                    ok = False
                    break
                for a in range(free0.shape[0]):
                    g0[free0[a]] = g[free0[a]]
                g0[i] = 0.0
                # step = -(C_FF - C_Fi C_iF / C_ii) g_F
                step = cov @ g0
                cig = step[i] / cii
                edm = 0.0
                for a in range(free0.shape[0]):
                    p = free0[a]
                    if p != i:
                        d = cov[p, i] * cig - step[p]
                        step[p] = d
                        edm -= 0.5 * g0[p] * d
                if edm < tol:
                    # take this last step too when it stays inside the bounds: it costs no
                    # gradient and leaves the fit another contraction factor closer
                    inside = True
                    for a in range(free0.shape[0]):
                        p = free0[a]
                        if p != i and not lo[p] <= theta[p] + step[p] <= hi[p]:
                            inside = False
                    if inside:
                        for a in range(free0.shape[0]):
                            p = free0[a]
                            if p != i:
                                theta[p] += step[p]
                    st = core.FIT_CONVERGED
                    break
                if edm > 0.5 * prev:
                    ok = False  # not contracting: leave it to the full Newton fit
                    break
                prev = edm
                for a in range(free0.shape[0]):
                    p = free0[a]
                    if p != i:
                        x = theta[p] + step[p]
                        if not lo[p] <= x <= hi[p]:
                            ok = False
                        theta[p] = x
                if not ok:
                    break
        if st != core.FIT_CONVERGED:
            newton[k] = True
            fx = fixed.copy()
            fx[i] = True
            start = theta if ok else theta_hat.copy()
            start[i] = v
            theta, _, _, it2, st, _ = core.newton_fit(start, data, lo, hi, fx, A, AUX, maxiter, tol, True)
            it += it2
        out[k] = theta
        status[k] = st
        iters[k] = it
    return out, status, iters, newton


def _affects_rates(model: Model) -> np.ndarray:
    """Boolean mask (n_params,): parameters on which the expected main rates can depend.

    False for a parameter whose only modifiers are normsys with ``hi == lo == 1`` (factor 1 for
    every code), histosys with zero variations, or any modifier on a block whose nominal yields
    and histosys variations are all zero. Per-bin factors (staterror, shapesys, shapefactor)
    always count as effective.
    """
    F = named(model.arrays)
    blk_b0, blk_nb, blk_off, nom = F.blk_b0, F.blk_nb, F.blk_off, F.nom
    sc_ptr, sc_par, sc_kind, sc_lhi, sc_llo = F.sc_ptr, F.sc_par, F.sc_kind, F.sc_lhi, F.sc_llo
    hs_ptr, hs_par, hs_doff, hs_up, hs_dn, pb_par = F.hs_ptr, F.hs_par, F.hs_doff, F.hs_up, F.hs_dn, F.pb_par
    eff = np.zeros(model.n_params, dtype=bool)
    eff[pb_par] = True
    for blk in range(blk_b0.shape[0]):
        nb, off = int(blk_nb[blk]), int(blk_off[blk])
        active = bool(np.any(nom[off:off + nb] != 0.0))
        for h in range(hs_ptr[blk], hs_ptr[blk + 1]):
            d = slice(int(hs_doff[h]), int(hs_doff[h]) + nb)
            if np.any(hs_up[d] != 0.0) or np.any(hs_dn[d] != 0.0):
                eff[hs_par[h]] = True
                active = True
        if active:
            for t in range(sc_ptr[blk], sc_ptr[blk + 1]):
                if sc_kind[t] == core.SC_LINEAR or sc_lhi[t] != 0.0 or sc_llo[t] != 0.0:
                    eff[sc_par[t]] = True
    return eff

def _run_refits(model: Model, nominal: FitResult, data: np.ndarray, bounds: np.ndarray,
                pars: np.ndarray, values: np.ndarray, *, n_jobs: int, progress: bool,
                maxiter: int, tol: float, chord_max: int) -> tuple[np.ndarray, np.ndarray]:
    """POI of each refit (K,) and its convergence flag (K,)."""
    from tqdm.auto import tqdm

    K = pars.shape[0]
    mu = np.empty(K)
    conv = np.empty(K, dtype=bool)
    if K == 0:
        return mu, conv
    args = (np.ascontiguousarray(nominal.bestfit), np.ascontiguousarray(nominal.covariance), data,
            np.ascontiguousarray(bounds[:, 0]), np.ascontiguousarray(bounds[:, 1]),
            np.ascontiguousarray(nominal.fixed, dtype=np.bool_), model.arrays, model.aux_arrays)
    poi = model.poi_index

    def run(sl: slice) -> int:
        theta, status, _, _ = _refit_batch(*args, pars[sl], values[sl], maxiter, tol, chord_max)
        mu[sl] = theta[:, poi]
        conv[sl] = status == core.FIT_CONVERGED
        return sl.stop - sl.start

    n_chunks = min(K, max(4 * n_jobs, 8 if progress else 1))
    edges = np.linspace(0, K, n_chunks + 1).astype(int)
    chunks = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    with single_threaded_blas(), tqdm(total=K, desc="ranking refits", disable=not progress_rule(progress), leave=False) as bar:
        if n_jobs == 1:
            for sl in chunks:
                bar.update(run(sl))
        else:
            with ThreadPoolExecutor(n_jobs, thread_name_prefix="nextstat-rank") as pool:
                for done in pool.map(run, chunks):
                    bar.update(done)
    return mu, conv
