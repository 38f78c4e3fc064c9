"""Evaluations of the profiled statistics: fits (compiled Numba or batched PyTorch) and the
gradient in the histograms (module doc of :mod:`nextstat.torch.significance`).

* :func:`numba_statistic`, :func:`numba_cls`: one plain histogram, everything compiled
  (:mod:`nextstat.engine.overrides`), envelope gradient in closed form.
* :func:`torch_statistic`: plain histograms ``[B, R]``, batched PyTorch fits, the same closed form.
* :func:`template_statistic`: inputs with histosys templates (:mod:`nextstat.torch.inputs`): the
  fits (Numba for one row on the CPU, else batched PyTorch), then the envelope gradient by
  autograd through :class:`~nextstat.engine.torch_model.TorchModel` at the fixed optima
  (rates stay linear in the inputs, but deltas now depend on nominal and templates together).
* :func:`torch_cls`: the observed CLs with batched fits and implicit differentiation of the
  fit behind its Asimov data (any layout).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from nextstat.engine import overrides as ovr
from nextstat.engine.fitter import FitStatus, resolve_fitter
from nextstat.engine.layout import ModelArrays
from nextstat.engine.statistic_rules import keeps
from nextstat.engine.torch_fit import batched_fit
from nextstat.torch.function import _observed_cls
from nextstat.torch.inputs import layout_arrays

def _numba_plan(session, samples, stat, mu_test):
    key = (samples, stat, mu_test)
    plan = session._plans.get(key)
    if plan is None:
        m = session.model
        rep = session._replacement(samples)
        theta_a = session._init.copy()
        theta_a[m.poi_index] = session._asimov_poi(stat)
        head = (rep.rep_flat, rep.rep_gb, rep.hs_pos, rep.hs_rix, rep.unit_up, rep.unit_dn, m.arrays,
                rep.unit_arrays, m.aux_arrays, m.aux_data, m.main_data, session.data == "observed", theta_a)
        tail = (session._lo, session._hi, session._fixed, session._fixed_cond, m.poi_index, float(mu_test), stat,
                session.maxiter, session.tol)
        plan = session._plans[key] = (head, tail)
    return plan

def numba_statistic(session, samples, h, stat, mu_test):
    """A profiled statistic of one plain histogram with the compiled fits and envelope gradient
    (:func:`nextstat.engine.overrides.profiled_statistic`): ``(q [1], dq/dh [1, R])`` NumPy."""
    head, tail = _numba_plan(session, samples, stat, mu_test)
    key = ("numba", samples, stat, mu_test)
    tf0, tc0 = session._warm.get(key) or (session._init, session._init)
    hn = h.numpy().reshape(-1)
    q, grad, tf, tc, sf, sc, _, _ = ovr.profiled_statistic(hn, *head, tf0, tc0, *tail)
    if sf != FitStatus.CONVERGED or sc != FitStatus.CONVERGED:
        session._fit_problem(key, sf, sc)
    session._warm[key] = (tf, tc)
    return np.array([q]), grad.reshape(1, -1)


def numba_cls(session, samples, h, mu_test):
    """The observed CLs of one plain histogram, compiled
    (:func:`nextstat.engine.overrides.observed_cls_statistics`): ``(CLs [1], dCLs/dh [1, R])``."""
    m = session.model
    rep = session._replacement(samples)
    key = ("numba-cls", samples, mu_test)
    warm = session._warm.get(key) or (session._init,) * 4
    q, g_q, qa, g_qa, thetas, status = ovr.observed_cls_statistics(
        h.numpy().reshape(-1), rep.rep_flat, rep.rep_gb, rep.hs_pos, rep.hs_rix, rep.unit_up, rep.unit_dn,
        m.arrays, rep.unit_arrays, m.aux_arrays, m.aux_data, m.main_data, *warm, session._lo, session._hi,
        session._fixed, session._fixed_cond, m.poi_index, float(mu_test), session.maxiter, session.tol)
    session._statuses_problem(key, status)
    session._warm[key] = (thetas[0].copy(), thetas[1].copy(), thetas[2].copy(), thetas[4].copy())
    cls, dq, dqa = _observed_cls(np.array([q]), np.array([qa]), session.eps)
    return cls, dq[:, None] * g_q.reshape(1, -1) + dqa[:, None] * g_qa.reshape(1, -1)


def expected_aux(tm, theta: torch.Tensor) -> torch.Tensor:
    """Expected auxiliary data ``[N, n_aux]`` (``Model.expected_auxdata``), differentiable."""
    x = theta[:, tm._aux_par]
    return torch.where(tm._aux_gauss, x, x * tm._aux_tau)

def t_stat(tm, theta_c, theta_f, main, aux, ov) -> torch.Tensor:
    """``2 [NLL(theta_c) - NLL(theta_f)]`` on data ``(main, aux)`` ``[N]``, differenced term
    by term (as :func:`ovr.profiled_statistic`); differentiable in the data and the nominals.
    The main-bin data enter as ``-n ln(nu_c / nu_f)`` in every bin (0 where a rate is 0)."""
    nu = tm.rates(torch.cat([theta_c, theta_f]), ov.select(torch.cat([torch.arange(main.shape[0],
                                                                                  device=main.device)] * 2)))
    nu_c, nu_f = nu[:main.shape[0]], nu[main.shape[0]:]
    ones = torch.ones_like(nu_f)
    both = (nu_f > 0) & (nu_c > 0)
    nu_fs = torch.where(both, nu_f, ones)
    lr = torch.where(both, torch.log1p((torch.where(both, nu_c, ones) - nu_fs) / nu_fs), torch.zeros_like(nu_f))
    t = (nu_c - nu_f - main * lr).sum(1)
    return 2.0 * (t + tm.constraint_dev(theta_c, aux) - tm.constraint_dev(theta_f, aux))


def batched_fit_checked(session, key, data, init, fixed, ov):
    """:func:`batched_fit` that raises on an undefined likelihood (forgetting the warm
    start ``key``) and warns where a fit did not converge; returns theta."""
    res = batched_fit(session.tmodel, data, init, fixed, session._bounds_t, nominal_overrides=ov,
                      maxiter=session.maxiter, tol=session.tol)
    if not bool(torch.isfinite(res.nll).all()):
        session._warm.pop(key, None)
        raise ValueError("histogram: the expected rate is <= 0 in a bin with data for these histograms; "
                         "the likelihood is undefined")
    if not bool(res.converged.all()):
        warnings.warn("profiled fit did not converge for some histograms; the statistic and its gradient "
                      "are approximate", RuntimeWarning, stacklevel=5)
    return res.theta

def newton_polish(tm, theta, data, ov, fixed):
    """:func:`nextstat.engine.overrides.newton_polish` for a batch ``[B, P]``."""
    _, g, _, H = tm.nll_grad_hess(theta, data, ov, exact=True)
    free = ~fixed & (theta > tm.lo) & (theta < tm.hi)
    m2 = free.unsqueeze(-1) & free.unsqueeze(-2)
    L, info = torch.linalg.cholesky_ex(torch.where(m2, H, torch.zeros_like(H))
                                       + torch.diag_embed((~free).to(H.dtype)))
    gm = torch.where(free, g, torch.zeros_like(g))
    d = torch.cholesky_solve(gm.unsqueeze(-1), L).squeeze(-1)
    new = theta - d
    inside = (~free | ((new > tm.lo) & (new < tm.hi))).all(-1)
    ok = (info == 0) & (0.5 * (gm * d).sum(-1) < 1e-8) & inside
    return torch.where(ok.unsqueeze(-1), new, theta)


def torch_cls(session, layout, h, mu_test):
    """Observed CLs on the PyTorch backend: batched fits, then the gradient by autograd
    through :class:`TorchModel` of a surrogate with the same value and first derivatives:
    the statistics at the fixed optima (envelope theorem), with ``theta_A`` replaced by
    ``theta_A - H^-1 [g(theta_A; h) - g(theta_A; h0)]`` on the free parameters (``g`` the
    analytic NLL gradient on the observed data, ``H`` the exact Hessian, detached), whose
    derivative in ``h`` is the implicit ``d theta_A / d h``."""
    tm = session.tmodel
    m = session.model
    B, P, poi = h.shape[0], session.n_params, m.poi_index
    if not bool(torch.isfinite(h).all()):
        raise ValueError("histogram: expected finite values, got NaN or inf")
    ov = session.overrides(layout, h)
    main_obs = tm.main_data.expand(B, -1)
    aux_obs = tm.aux_data.expand(B, -1)
    data_obs = torch.cat([main_obs, aux_obs], 1)
    key = ("torch-cls", layout.key, mu_test, B)
    init = tm.init.expand(B, P)
    tf0, tc0, ta0, tac0 = (t.clone() for t in session._warm.get(key, (init,) * 4))
    tc0[:, poi] = mu_test
    ta0[:, poi] = 0.0
    tac0[:, poi] = mu_test
    ar = torch.arange(B, device=session.device)
    fixed_f = tm.fixed.expand(B, P)
    fixed_c = session._fixed_cond_t.expand(B, P)
    i3 = torch.cat([ar] * 3)
    th = batched_fit_checked(session, key, data_obs[i3], torch.cat([tf0, tc0, ta0]),
                                   torch.cat([fixed_f, fixed_c, fixed_c]), ov.select(i3))
    tf, tc, ta = th[:B], th[B:2 * B], th[2 * B:]
    with torch.no_grad():
        ta = newton_polish(tm, ta, data_obs, ov, fixed_c)
    data_a = torch.cat([tm.rates(ta, ov), expected_aux(tm, ta)], 1)
    i2 = torch.cat([ar] * 2)
    th2 = batched_fit_checked(session, key, data_a[i2], torch.cat([ta, tac0]), torch.cat([fixed_f, fixed_c]),
                                    ov.select(i2))
    taf, tac = th2[:B], th2[B:]
    session._warm[key] = (tf, tc, ta, tac)
    with torch.no_grad():
        H = tm.nll_grad_hess(ta, data_obs, ov, exact=True)[3]
    free = ~fixed_c & (ta > tm.lo) & (ta < tm.hi)
    m2 = free.unsqueeze(-1) & free.unsqueeze(-2)
    Hm = torch.where(m2, H, torch.zeros_like(H)) + torch.diag_embed((~free).to(H.dtype))
    Hinv = torch.linalg.pinv(Hm, hermitian=True)
    with torch.enable_grad():
        hg = h.detach().requires_grad_(True)
        ovg = session.overrides(layout, hg)
        t_obs = t_stat(tm, tc, tf, main_obs, aux_obs, ovg)
        g = tm.nll_grad_hess(ta, data_obs, ovg, exact=False)[1]
        rhs = torch.where(free, g - g.detach(), torch.zeros_like(g))
        ta_s = ta - (Hinv @ rhs.unsqueeze(-1)).squeeze(-1)
        t_a = t_stat(tm, tac, taf, tm.rates(ta_s, ovg), expected_aux(tm, ta_s), ovg)
        keep_o = (tf[:, poi] <= mu_test) & (t_obs > 0)
        keep_a = (taf[:, poi] <= mu_test) & (t_a > 0)
        zero = torch.zeros_like(t_obs)
        q = torch.where(keep_o, t_obs, zero)
        qa = torch.where(keep_a, t_a, zero)
        cls, dq, dqa = _observed_cls(q.detach(), qa.detach(), session.eps)
        (grad,) = torch.autograd.grad((dq * q + dqa * qa).sum(), hg, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(h)
    return cls, grad


def torch_statistic(session, samples, h, stat, mu_test):
    """A profiled statistic of plain histograms ``[B, R]`` with batched PyTorch fits and the
    analytic envelope gradient (rates linear in ``h``): ``(q [B], dq/dh [B, R])`` tensors."""
    tm = session.tmodel
    m = session.model
    B, P, poi = h.shape[0], session.n_params, m.poi_index
    if not bool(torch.isfinite(h).all()):
        raise ValueError("histogram: expected finite values, got NaN or inf")
    _, d = tm.replacement(samples)
    ov = tm.replaced(samples, h)
    theta_a = tm.init.clone()
    theta_a[poi] = session._asimov_poi(stat)
    if session.data == "expected":
        main = tm.rates(theta_a.expand(B, P), ov)
    else:
        main = tm.main_data.expand(B, -1)
    data = torch.cat([main, tm.aux_data.expand(B, -1)], 1)
    key = ("torch", samples, stat, mu_test, B)
    tf0, tc0 = session._warm.get(key, (tm.init.expand(B, P), tm.init.expand(B, P)))
    tc0 = tc0.clone()
    tc0[:, poi] = mu_test
    pair = torch.cat([torch.arange(B, device=session.device)] * 2)
    ov2 = ov.select(pair)
    fixed2 = torch.cat([tm.fixed.expand(B, P), session._fixed_cond_t.expand(B, P)])
    theta = batched_fit_checked(session, key, data[pair], torch.cat([tf0, tc0]), fixed2, ov2)
    tf, tc = theta[:B], theta[B:]
    session._warm[key] = (tf, tc)
    nu = tm.rates(theta, ov2)
    nu1, nu2 = nu[:B], nu[B:]
    unit = tm.unit_overrides(samples)
    k = tm.flat_rates(torch.cat([theta, theta_a.unsqueeze(0)]), unit)[:, d["rep_flat"]]
    k1, k2, kA = k[:B], k[B:2 * B], k[2 * B:]
    ones = torch.ones_like(nu1)
    both = (nu1 > 0) & (nu2 > 0)
    nu1s = torch.where(both, nu1, ones)
    lr = torch.where(both, torch.log1p((torch.where(both, nu2, ones) - nu1s) / nu1s), torch.zeros_like(nu1))
    pos = main > 0
    t = (nu2 - nu1 - torch.where(pos, main * lr, torch.zeros_like(lr))).sum(1)
    t = 2.0 * (t + tm.constraint_dev(tc) - tm.constraint_dev(tf))
    mu_hat = tf[:, poi]
    keep = keeps(stat, mu_hat, mu_test) & (t > 0)
    q = torch.where(keep, t, torch.zeros_like(t))
    gb = d["rep_gb"]
    n_r, nu1_r, nu2_r = main[:, gb], nu1[:, gb], nu2[:, gb]
    one_r = torch.ones_like(n_r)
    pos_r = n_r > 0
    frac = torch.where(pos_r, n_r * (k2 / torch.where(pos_r, nu2_r, one_r) - k1 / torch.where(pos_r, nu1_r, one_r)),
                       torch.zeros_like(n_r))
    grad = 2.0 * (k2 - k1 - frac)
    if session.data == "expected":
        grad = grad - 2.0 * lr[:, gb] * kA
    grad = torch.where(keep.unsqueeze(1), grad, torch.zeros_like(grad))
    return q, grad


def numba_fit(session, start: np.ndarray, data: np.ndarray, fixed: np.ndarray, A2) -> tuple[np.ndarray, int]:
    """One compiled fit ``(theta [P], status)`` from ``start`` (a warm start: the previous
    histograms' optimum); where it ends non-finite (the new histograms' rates are <= 0 there, e.g.
    a histosys extrapolated far), once more from the suggested init (the fixed values kept)."""
    newton = resolve_fitter("compiled").newton
    args = (data, session._lo, session._hi, fixed, session.maxiter, session.tol, True)
    arrays = ModelArrays(A2, session.model.aux_arrays)
    out = newton(arrays, start, *args)
    if out.status == FitStatus.NONFINITE and not np.array_equal(start, session._init):
        out = newton(arrays, np.where(fixed, start, session._init), *args)
    return out.theta, int(out.status)


def _numba_fits(session, layout, x: np.ndarray, data_fn, starts, fixeds, key):
    """Compiled fits of one flat input ``x`` (arrays from :func:`layout_arrays`); ``data_fn(A2)``
    gives the data; returns the fitted parameters (statuses checked as the plain path does)."""
    m = session.model
    A2 = layout_arrays(m, session._replacement(layout.samples), layout, x)
    data = data_fn(A2)
    out, status = [], []
    for start, fixed in zip(starts, fixeds):
        th, st = numba_fit(session, start, data, fixed, A2)
        out.append(th)
        status.append(st)
    if any(s != FitStatus.CONVERGED for s in status):
        session._fit_problem(key, *status)
    return out


def template_statistic(session, layout, h, stat, mu_test, backend):
    """``q0`` or ``q~_mu`` of flat inputs ``h`` ``[B, R]`` with histosys templates: fits, then
    ``(q [B], dq/dh [B, R])`` by autograd of ``2 [NLL(theta_c) - NLL(theta_f)]`` at the fixed
    optima (envelope theorem), the Asimov data (``data="expected"``) recomputed from ``h`` in
    the graph."""
    tm = session.tmodel
    m = session.model
    B, P, poi = h.shape[0], session.n_params, m.poi_index
    expected = session.data == "expected"
    theta_a = tm.init.clone()
    theta_a[poi] = session._asimov_poi(stat)
    ov = session.overrides(layout, h)
    main = tm.rates(theta_a.expand(B, P), ov) if expected else tm.main_data.expand(B, -1)
    aux = tm.aux_data.expand(B, -1)
    if backend == "numba" and B == 1:
        key = ("numba-templates", layout.key, stat, mu_test)
        tf0, tc0 = session._warm.get(key) or (session._init, session._init)
        tc0 = tc0.copy()
        tc0[poi] = mu_test
        th_a = theta_a.numpy()
        main_obs = m.main_data
        compiled = resolve_fitter("compiled")

        def data_fn(A2):
            mn = compiled.expected_main(ModelArrays(A2, m.aux_arrays), th_a) if expected else main_obs
            return np.concatenate((mn, m.aux_data))

        tf, tc = _numba_fits(session, layout, h[0].numpy(), data_fn, (tf0, tc0),
                             (session._fixed, session._fixed_cond), key)
        session._warm[key] = (tf, tc)
        tf = torch.from_numpy(tf).unsqueeze(0)
        tc = torch.from_numpy(tc).unsqueeze(0)
    else:
        key = ("torch-templates", layout.key, stat, mu_test, B)
        tf0, tc0 = session._warm.get(key, (tm.init.expand(B, P), tm.init.expand(B, P)))
        tc0 = tc0.clone()
        tc0[:, poi] = mu_test
        pair = torch.cat([torch.arange(B, device=session.device)] * 2)
        fixed2 = torch.cat([tm.fixed.expand(B, P), session._fixed_cond_t.expand(B, P)])
        data = torch.cat([main, aux], 1)
        theta = batched_fit_checked(session, key, data[pair], torch.cat([tf0, tc0]), fixed2, ov.select(pair))
        tf, tc = theta[:B], theta[B:]
        session._warm[key] = (tf, tc)
    with torch.enable_grad():
        hg = h.detach().requires_grad_(True)
        ovg = session.overrides(layout, hg)
        main_g = tm.rates(theta_a.expand(B, P), ovg) if expected else main
        t = t_stat(tm, tc, tf, main_g, aux, ovg)
        mu_hat = tf[:, poi]
        keep = keeps(stat, mu_hat, mu_test) & (t > 0)
        q = torch.where(keep, t, torch.zeros_like(t))
        (grad,) = torch.autograd.grad(q.sum(), hg, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(h)
    return q.detach(), grad
