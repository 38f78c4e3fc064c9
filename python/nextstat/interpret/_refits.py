"""Refits of the ranking: the POI with one nuisance parameter held at a shifted value, by the
compiled engine's :meth:`~nextstat.engine.fitter.Fitter.refits` (its algorithm:
:mod:`nextstat.engine.compiled.refit`), in ``n_jobs`` threads over chunks of refits (the kernel
releases the GIL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nextstat.engine.compiled.codes import SC_LINEAR
from nextstat.engine.fitter import FitStatus, resolve_fitter
from nextstat.engine.layout import named
from nextstat.engine.threads import single_threaded_blas
from nextstat.model import Model
from nextstat.results import FitResult
from nextstat.progress import resolve as progress_rule


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
                if sc_kind[t] == SC_LINEAR or sc_lhi[t] != 0.0 or sc_llo[t] != 0.0:
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
            np.ascontiguousarray(nominal.fixed, dtype=np.bool_))
    poi = model.poi_index
    refits = resolve_fitter("compiled").refits

    def run(sl: slice) -> int:
        out = refits(model, *args, pars[sl], values[sl], maxiter, tol, chord_max)
        mu[sl] = out.theta[:, poi]
        conv[sl] = out.status == FitStatus.CONVERGED
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
