"""The :class:`~nextstat.engine.fitter.Fitter` on PyTorch: single fits with nothing to compile.

Each fit is :func:`nextstat.engine.torch_fit.batched_fit` on one problem (CPU, float64), over the
model's :class:`~nextstat.engine.torch_model.TorchModel` (the same rates, NLL and analytic
derivatives as the compiled core; tests/engine/test_torch_model.py checks them against it).

The algorithm is the compiled core's (:func:`nextstat.engine.compiled.newton.newton_fit`):
Gauss-Newton steps switching to the exact Hessian near the minimum, an active set plus projection
for bounds, a backtracking Armijo line search on the deviance form of the NLL, and the same
convergence test (EDM ``g^T H^-1 g / 2 < tol`` over the free parameters). Its differences, each
covered by the retries of :mod:`nextstat.infer.fit` (alternative starts, stalled-start restarts,
kink fits) that run on either engine:

* no bound snapping: a step that crosses a bound is projected onto it rather than the parameter
  being moved there first (the compiled fit gets there in fewer iterations);
* no Levenberg-Marquardt damping: where no step decreases the NLL on the exact Hessian, the fit
  ends (``FitStatus.LINESEARCH``) where the compiled one first retries with a damped matrix;
* a matrix that is not positive definite gets a growing ridge on the Gauss-Newton matrix;
* the EDM reported is recomputed at the end on the exact Hessian (Gauss-Newton where that is
  not positive definite), and Hesse is :func:`hesse_from_hessian` (the NumPy twin of
  ``compiled.hesse.hesse_cov``).

Numbers agree with the compiled engine to the fit tolerance (tests/engine/test_fitter.py), not
bit for bit; every result records its engine (``FitResult.fitter``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nextstat.engine.compiled.codes import (_SQRT2, _SQRT2PI, AUX_GAUSS, FIT_CONVERGED, FIT_LINESEARCH,
                                            FIT_MAXITER, FIT_NONFINITE, FIT_NONFINITE_RESULT)
from nextstat.engine.layout import AUX_KIND, AUX_PAR, AUX_SIGMA, AUX_TAU
from nextstat.engine.fit_outputs import AsymptoticFits, DevFit, FitOutput, NewtonFit, Refits, errors_and_correlation
from nextstat.engine.torch_fit import batched_fit
from nextstat.engine.torch_model import TorchModel

__all__ = ["TorchFitter", "NotClean", "hesse_from_hessian", "pyhf_nll"]

#: a strict fit's Hessian (diagonally scaled) must have eigenvalues above this fraction of the largest
CONDITION_FLOOR = 1e-5


def pyhf_nll(model, theta: np.ndarray, nu: np.ndarray, data: np.ndarray) -> float:
    """pyhf's NLL from the main rates ``nu`` (n_bins,) at ``theta``: the terms of
    ``compiled.likelihood._poisson_nll`` and ``constraint_nll`` in their order, with ``math.log``
    and SciPy's ``gammaln`` (the functions the compiled core calls), so that huge terms (e.g.
    ``gammaln(1.9e11)`` ~ 5e12 of a shapesys constraint, one ulp 1e-3) cancel as they do there and
    in pyhf; ``inf`` where undefined."""
    from scipy.special import gammaln

    nb = nu.shape[0]
    n = data[:nb]
    s = 0.0
    lg = gammaln(n + 1.0)
    for b in range(nb):
        if n[b] == 0.0:
            s += float(nu[b])
        elif nu[b] <= 0.0:
            return math.inf
        else:
            s -= float(n[b]) * math.log(float(nu[b])) - float(nu[b]) - float(lg[b])
    if not s < math.inf:
        return math.inf
    par, kind, sigma, tau = (model.aux_arrays[k] for k in (AUX_PAR, AUX_KIND, AUX_SIGMA, AUX_TAU))
    aux = data[nb:]
    lga = gammaln(aux + 1.0)
    c = 0.0
    for i in range(par.shape[0]):
        x, a = float(theta[par[i]]), float(aux[i])
        if kind[i] == AUX_GAUSS:
            y = (a - x) / (_SQRT2 * float(sigma[i]))
            c -= -math.log(float(sigma[i]) * _SQRT2PI) - y * y
        else:
            rate = x * float(tau[i])
            if a == 0.0:
                c += rate
            elif rate <= 0.0:
                return math.inf
            else:
                c -= a * math.log(rate) - rate - float(lga[i])
    return s + c


class NotClean(Exception):
    """A strict :class:`TorchFitter` fit did not end cleanly (module doc): the caller refits on the
    compiled engine."""


def hesse_from_hessian(H: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, bool]:
    """Covariance from the exact Hessian ``H`` (P, P) over the free parameters (``~fixed``).

    Returns ``(cov (P, P), posdef)``: the inverse of ``H`` on the free parameters (zero rows and
    columns for fixed ones) where it is positive definite; else, as ``compiled.hesse``:
    parameters without curvature (``|H_ii| <= 1e-12`` of the largest) get zeros, and on the others
    the eigenvalues of ``D^-1/2 H D^-1/2`` (``D = |diag H|``) are replaced by their absolute values
    (floored at 1e-12 of the largest) before inverting, and ``posdef`` is False; all zero where
    that is not finite.

    >>> hesse_from_hessian(np.array([[4.0, 0.0], [0.0, 1.0]]), np.array([False, True]))
    (array([[0.25, 0.  ],
           [0.  , 0.  ]]), True)
    """
    P = H.shape[0]
    free = np.flatnonzero(~fixed)
    cov = np.zeros((P, P))
    if free.size == 0:
        return cov, True
    Hf = H[np.ix_(free, free)]
    if np.all(np.isfinite(Hf)):
        try:
            L = np.linalg.cholesky(Hf)
            inv = np.linalg.inv(L)
            cov[np.ix_(free, free)] = inv.T @ inv
            if np.all(np.isfinite(cov)):
                return cov, True
        except np.linalg.LinAlgError:
            pass
    cov[:] = 0.0
    d = np.abs(np.diag(H)[free])
    if not np.all(np.isfinite(d)):
        return cov, False
    keep = free[d > 1e-12 * d.max()] if d.max() > 0 else free[:0]
    if keep.size == 0:
        return cov, False
    Hk = H[np.ix_(keep, keep)]
    if not np.all(np.isfinite(Hk)):
        return cov, False
    s = 1.0 / np.sqrt(np.abs(np.diag(Hk)))
    try:
        ev, V = np.linalg.eigh(Hk * np.outer(s, s))
    except np.linalg.LinAlgError:
        return cov, False
    floor = 1e-12 * np.max(np.abs(ev))
    if not floor > 0.0:
        return cov, False
    inv = (V / np.maximum(np.abs(ev), floor)) @ V.T * np.outer(s, s)
    if not np.all(np.isfinite(inv)):
        return cov, False
    cov[np.ix_(keep, keep)] = inv
    return cov, False


class TorchFitter:
    """:class:`~nextstat.engine.fitter.Fitter` on :func:`~nextstat.engine.torch_fit.batched_fit`
    (CPU, float64; module doc). One :class:`TorchModel` per model is kept on the model."""

    name = "torch"

    def __init__(self, strict: bool = False):
        self.strict = strict

    def __repr__(self) -> str:
        return f"TorchFitter(strict={self.strict})"

    def _require_clean(self, status: int, theta, g, H, lo, hi, fixed) -> None:
        """With ``strict``: :class:`NotClean` unless the fit converged on finite numbers where the
        exact Hessian over the free parameters is positive definite and well conditioned (the
        edge cases, e.g. saddle points, flat directions, interpolation kinks, yields near the
        float range, are left to the compiled engine and its retries)."""
        if not self.strict:
            return
        if status != FIT_CONVERGED or not (np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
            raise NotClean(f"status {status}")
        free = ~fixed & ~((theta <= lo) & (g > 0)) & ~((theta >= hi) & (g < 0))
        if not free.any():
            return
        Hf = H[np.ix_(free, free)]
        d = np.abs(np.diag(Hf))
        if not np.all(d > 0):
            raise NotClean("no curvature")
        s = 1.0 / np.sqrt(d)
        ev = np.linalg.eigvalsh(Hf * np.outer(s, s))
        if not ev[0] > CONDITION_FLOOR * ev[-1]:
            raise NotClean("Hessian not positive definite or ill conditioned")

    @staticmethod
    def _tm(model) -> TorchModel:
        tm = model.__dict__.get("_torch_fitter_model")
        if tm is None:
            tm = TorchModel(model)
            model.__dict__["_torch_fitter_model"] = tm
        return tm

    @staticmethod
    def _t(a) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64))

    def _run(self, model, start, data, lo, hi, fixed, maxiter, tol):
        """``(theta (P,), nll, status, n_iter, tm, data tensor)`` of one batched fit."""
        tm = self._tm(model)
        d = self._t(data)
        res = batched_fit(tm, d, self._t(start).unsqueeze(0), torch.as_tensor(np.asarray(fixed, dtype=bool)),
                          torch.stack([self._t(lo), self._t(hi)], -1), maxiter=int(maxiter), tol=float(tol))
        theta = res.theta[0].numpy().copy()
        nll = float(res.nll[0])
        if math.isfinite(nll):
            nll = self._pyhf_nll(model, tm, theta, data)
        n_iter = int(res.n_iter[0])
        if not math.isfinite(nll):
            status = FIT_NONFINITE
        elif bool(res.converged[0]):
            status = FIT_CONVERGED if np.all(np.isfinite(theta)) else FIT_NONFINITE_RESULT
        elif n_iter >= maxiter:
            status = FIT_MAXITER
        else:
            status = FIT_LINESEARCH
        return theta, nll, status, n_iter, tm, d

    @staticmethod
    def _derivatives(tm: TorchModel, theta: np.ndarray, d: torch.Tensor):
        """``(nll_dev, gradient (P,), exact Hessian (P, P), Gauss-Newton matrix (P, P))`` at ``theta``."""
        f, g, Hgn, H = tm.nll_grad_hess(torch.as_tensor(theta).unsqueeze(0), d, exact=True, deviance=True)
        return float(f[0]), g[0].numpy(), H[0].numpy(), Hgn[0].numpy()

    @staticmethod
    def _edm(g, H, Hgn, theta, lo, hi, fixed) -> float:
        free = ~fixed & ~((theta <= lo) & (g > 0)) & ~((theta >= hi) & (g < 0))
        if not free.any():
            return 0.0
        gf = g[free]
        for M in (H, Hgn):
            try:
                L = np.linalg.cholesky(M[np.ix_(free, free)])
                y = np.linalg.solve(L, gf)
                return float(0.5 * y @ y)
            except np.linalg.LinAlgError:
                continue
        return math.inf

    def fit(self, model, start, data, lo, hi, fixed, maxiter, tol, hesse) -> FitOutput:
        theta, nll, status, n_iter, tm, d = self._run(model, start, data, lo, hi, fixed, maxiter, tol)
        P = theta.shape[0]
        cov, posdef, edm = np.zeros((P, P)), True, math.inf
        if self.strict and not math.isfinite(nll):
            raise NotClean("non-finite NLL")
        if math.isfinite(nll):
            _, g, H, Hgn = self._derivatives(tm, theta, d)
            self._require_clean(status, theta, g, H, lo, hi, fixed)
            edm = self._edm(g, H, Hgn, theta, lo, hi, fixed)
            if hesse:
                cov, posdef = hesse_from_hessian(H, fixed)
        err, corr = errors_and_correlation(cov)
        if status == FIT_CONVERGED and not np.all(np.isfinite(err)):
            status = FIT_NONFINITE_RESULT
        at_limit = ~fixed & ((theta <= lo) | (theta >= hi))
        return FitOutput(theta, nll, n_iter, status, edm, cov, err, corr, posdef, np.array(fixed, dtype=bool),
                         at_limit)

    def _fit_no_hesse(self, model, start, data, lo, hi, fixed, maxiter, tol):
        """``(theta, nll, nll_dev, gradient, status, n_iter, edm)`` of one fit without Hesse (inf
        and a NaN gradient where the NLL is not finite; ``NotClean`` as :meth:`_require_clean`)."""
        theta, nll, status, n_iter, tm, d = self._run(model, start, data, lo, hi, fixed, maxiter, tol)
        if not math.isfinite(nll):
            if self.strict:
                raise NotClean("non-finite NLL")
            return theta, math.inf, math.inf, np.full(theta.shape[0], np.nan), status, n_iter, math.inf
        dev, g, H, Hgn = self._derivatives(tm, theta, d)
        self._require_clean(status, theta, g, H, lo, hi, fixed)
        return theta, nll, dev, g, status, n_iter, self._edm(g, H, Hgn, theta, lo, hi, fixed)

    def fit_dev(self, model, start, data, lo, hi, fixed, maxiter, tol) -> DevFit:
        theta, nll, dev, _, status, n_iter, edm = self._fit_no_hesse(model, start, data, lo, hi, fixed, maxiter, tol)
        return DevFit(theta, nll, dev, status, n_iter, edm)

    def newton(self, model, start, data, lo, hi, fixed, maxiter, tol, precise=False) -> NewtonFit:
        """The batched fit of one problem (``precise`` has no effect: the batched fit has one
        stopping rule, the EDM of its last step)."""
        theta, nll, _, g, status, n_iter, edm = self._fit_no_hesse(model, start, data, lo, hi, fixed, maxiter, tol)
        return NewtonFit(theta, nll, g, n_iter, status, edm)

    def refits(self, model, theta_hat, cov, data, lo, hi, fixed, pars, values, maxiter, tol, chord_max) -> Refits:
        """The full Newton fit of each refit from the nominal fit's linear response (the compiled
        engine first tries ``chord_max`` steps with the nominal Hessian; both end at the same EDM
        criterion)."""
        K, P = len(pars), theta_hat.shape[0]
        theta, status = np.empty((K, P)), np.empty(K, dtype=np.int64)
        n_iter, newton = np.zeros(K, dtype=np.int64), np.ones(K, dtype=bool)
        for k, (i, v) in enumerate(zip(pars, values)):
            start = np.array(theta_hat, dtype=np.float64)
            if cov[i, i] > 0.0 and math.isfinite(cov[i, i]):
                start = np.clip(theta_hat + cov[:, i] * ((v - theta_hat[i]) / cov[i, i]), lo, hi)
                start[fixed] = theta_hat[fixed]
            start[i] = v
            fx = np.array(fixed, dtype=bool)
            fx[i] = True
            out = self.newton(model, start, data, lo, hi, fx, maxiter, tol)
            theta[k], status[k], n_iter[k] = out.theta, out.status, out.n_iter
        return Refits(theta, status, n_iter, newton)

    def profile_start(self, model, theta_hat, mu, data, lo, hi, fixed_poi, par=None) -> np.ndarray:
        """``compiled.profiled.profile_start``: the nuisance parameters moved along the profile's
        tangent, ``theta - G_tt^-1 G_tm (mu - mu_hat)`` (Gauss-Newton matrix ``G`` at
        ``theta_hat``), clipped to the bounds, where its NLL is below that of ``theta_hat`` with
        the POI (or parameter ``par``) set to ``mu``."""
        poi = model.poi_index if par is None else par
        plain = np.array(theta_hat, dtype=np.float64)
        plain[poi] = mu
        dmu = mu - theta_hat[poi]
        sel = np.flatnonzero(~fixed_poi)
        if dmu == 0.0 or sel.size == 0:
            return plain
        tm = self._tm(model)
        d = self._t(data)
        f, _, Hgn, _ = tm.nll_grad_hess(self._t(theta_hat).unsqueeze(0), d, exact=False, deviance=True)
        if not math.isfinite(float(f[0])):
            return plain
        G = Hgn[0].numpy()
        try:
            L = np.linalg.cholesky(G[np.ix_(sel, sel)])
            step = -np.linalg.solve(L.T, np.linalg.solve(L, G[sel, poi] * dmu))
        except np.linalg.LinAlgError:
            return plain
        start = plain.copy()
        start[sel] = np.clip(start[sel] + step, lo[sel], hi[sel])
        both = tm.nll_dev(torch.as_tensor(np.stack([start, plain])), d)
        return start if float(both[0]) < float(both[1]) else plain

    def fit_conditional(self, model, theta_hat, mu, data, lo, hi, fixed_poi, maxiter, tol, par=None) -> DevFit:
        start = self.profile_start(model, theta_hat, float(mu), data, lo, hi, fixed_poi, par)
        return self.fit_dev(model, start, data, lo, hi, fixed_poi, maxiter, tol)

    def asymptotic_fits(self, model, init, mu, data, lo, hi, fixed, fixed_poi, asimov_mu, maxiter,
                        tol) -> AsymptoticFits:
        P = init.shape[0]
        thetas, stats = np.empty((5, P)), np.empty((5, 6))
        fits = [self.fit_dev(model, init, data, lo, hi, fixed, maxiter, tol)]
        fits.append(self.fit_conditional(model, fits[0].bestfit, mu, data, lo, hi, fixed_poi, maxiter, tol))
        fits.append(self.fit_conditional(model, fits[0].bestfit, asimov_mu, data, lo, hi, fixed_poi, maxiter, tol))
        asimov = self.expected_data(model, fits[2].bestfit)
        fits.append(self.fit_dev(model, fits[2].bestfit, asimov, lo, hi, fixed, maxiter, tol))
        fits.append(self.fit_conditional(model, fits[3].bestfit, mu, asimov, lo, hi, fixed_poi, maxiter, tol))
        for k, f in enumerate(fits):
            fx = fixed if k in (0, 3) else fixed_poi
            thetas[k] = f.bestfit
            stats[k] = (f.nll, f.nll_dev, f.status, f.n_iter, f.edm,
                        int(np.count_nonzero(~fx & ((f.bestfit <= lo) | (f.bestfit >= hi)))))
        return AsymptoticFits(thetas, stats, asimov)

    def expected_data(self, model, theta) -> np.ndarray:
        return np.concatenate([self.expected_main(model, theta), model.expected_auxdata(theta)])

    def expected_main(self, model, theta) -> np.ndarray:
        return self._tm(model).rates(self._t(theta).unsqueeze(0))[0].numpy()

    def _pyhf_nll(self, model, tm: TorchModel, theta, data) -> float:
        nu = tm.rates(self._t(theta).unsqueeze(0))[0].numpy()
        return pyhf_nll(model, np.asarray(theta, dtype=np.float64), nu, np.asarray(data, dtype=np.float64))

    def nll(self, model, theta, data) -> float:
        return self._pyhf_nll(model, self._tm(model), theta, data)

    def nll_dev(self, model, theta, data) -> float:
        return float(self._tm(model).nll_dev(self._t(theta), self._t(data))[0])

    def nll_grad(self, model, theta, data) -> tuple[float, np.ndarray]:
        tm = self._tm(model)
        f, g, _, _ = tm.nll_grad_hess(self._t(theta), self._t(data), exact=False)
        f = self._pyhf_nll(model, tm, theta, data) if math.isfinite(float(f[0])) else math.inf
        return f, g[0].numpy().copy()

    def hesse(self, model, theta, data, fixed) -> tuple[np.ndarray, bool]:
        _, _, H, _ = self._derivatives(self._tm(model), np.asarray(theta, dtype=np.float64), self._t(data))
        return hesse_from_hessian(H, np.asarray(fixed, dtype=bool))
