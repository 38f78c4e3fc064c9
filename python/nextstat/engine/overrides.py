"""Replaced sample nominals on the flat model arrays, and the compiled profiled test statistic.

A *nominal replacement* swaps the nominal yields of chosen samples for new histograms (a
network's output) without recompiling the workspace. How the replaced nominal carries the
sample's modifiers (the convention of :mod:`nextstat.torch.significance`):

* scalar factors (normfactor, lumi, normsys) multiply the new nominal unchanged;
* histosys deltas scale with the nominal, bin by bin:
  ``delta_new = delta * h / nom_old`` (0 where ``nom_old == 0``), i.e. the relative variation
  of each bin is kept (for every interpolation code the delta is linear in ``(up, dn)``);
* per-bin factors (staterror, shapesys, shapefactor) multiply the new nominal, and the
  constraint widths of staterror and shapesys stay at their workspace values (frozen).

The histogram of a sample is its nominal yields over all channels where it exists,
concatenated in the model's channel order (channels sorted by name).

Everything here is NumPy/Numba; :mod:`nextstat.engine.torch_model` builds its device index
tensors from :class:`NominalReplacement`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nextstat.engine import numba_core as core
from nextstat.engine.jit import kernel
from nextstat.engine.layout import (AUX_KIND, AUX_PAR, AUX_SIGMA, AUX_TAU, BLK_B0, BLK_NB, BLK_OFF, HS_DN,
    HS_DOFF, HS_PTR, HS_UP, NOM, N_BINS, flat_layout, with_nominal)
from nextstat.engine.statistic_rules import STAT_Q0, STAT_QMU, keeps  # noqa: F401 - STAT_Q0: ovr.STAT_Q0


#: statistic codes of :func:`profiled_statistic`: STAT_Q0, STAT_QMU (nextstat.engine.statistic_rules)
#: fit status returned by :func:`profiled_statistic` for a histogram with NaN or inf entries
STATUS_NONFINITE_INPUT = -1


@dataclass(frozen=True, eq=False)
class NominalReplacement:
    """Index arrays for replacing the nominals of ``samples`` (built by :func:`nominal_replacement`).

    Attributes:
        samples: replaced sample names, in the order their histograms are concatenated.
        sizes: histogram length of each sample (its bins over the channels where it exists).
        rep_flat: (R,) position of each replaced bin in the flat per-block storage (``nom``).
        rep_gb: (R,) global main bin of each replaced bin.
        nom_old: (R,) workspace nominal of each replaced bin.
        hs_pos: (S,) positions in the histosys delta storage (``hs_up``/``hs_dn``) that belong
            to replaced bins; ``hs_rix`` (S,) the replaced bin (0..R-1) of each.
        unit_up, unit_dn: (S,) the deltas there divided by the old nominal (0 where it is 0).
        unit_arrays: the model arrays with nominal 1 and unit deltas on the replaced bins: the
            block yields they give at ``theta`` are ``d rate / d h`` on replaced bins and the
            unchanged yields elsewhere.
    """

    samples: tuple[str, ...]
    sizes: tuple[int, ...]
    rep_flat: np.ndarray
    rep_gb: np.ndarray
    nom_old: np.ndarray
    hs_pos: np.ndarray
    hs_rix: np.ndarray
    unit_up: np.ndarray
    unit_dn: np.ndarray
    unit_arrays: tuple

    @property
    def n_replaced(self) -> int:
        return int(self.rep_flat.shape[0])


def sample_flat_bins(model, sample: str) -> np.ndarray:
    """Flat (per-block storage) positions of ``sample``'s bins, in histogram order."""
    blk_nb, blk_off = model.arrays[BLK_NB], model.arrays[BLK_OFF]
    pos = [np.arange(blk_off[i], blk_off[i] + blk_nb[i]) for i, s in enumerate(model.block_sample) if s == sample]
    if not pos:
        raise ValueError(f"sample: expected one of {model.samples}, got {sample!r}")
    return np.concatenate(pos).astype(np.int64)


def nominal_replacement(model, samples: Sequence[str]) -> NominalReplacement:
    """Precompute the index arrays replacing the nominals of ``samples`` (distinct names)."""
    samples = tuple(samples)
    if len(set(samples)) != len(samples):
        raise ValueError(f"samples: expected distinct names, got {list(samples)}")
    A = model.arrays
    blk_b0, blk_nb, blk_off = A[BLK_B0], A[BLK_NB], A[BLK_OFF]
    nom = A[NOM]
    hs_ptr, hs_doff, hs_up, hs_dn = A[HS_PTR], A[HS_DOFF], A[HS_UP], A[HS_DN]
    NF = nom.shape[0]
    flat_gb = np.empty(NF, np.int64)
    for i in range(blk_b0.shape[0]):
        flat_gb[blk_off[i]:blk_off[i] + blk_nb[i]] = blk_b0[i] + np.arange(blk_nb[i])
    parts = [sample_flat_bins(model, s) for s in samples]
    rep_flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    rix = np.full(NF, -1, np.int64)
    rix[rep_flat] = np.arange(rep_flat.shape[0])
    nom_old = nom[rep_flat].copy()

    # histosys storage positions of replaced bins
    pos, owner = [], []
    for blk in range(blk_b0.shape[0]):
        for h in range(hs_ptr[blk], hs_ptr[blk + 1]):
            for j in range(blk_nb[blk]):
                r = rix[blk_off[blk] + j]
                if r >= 0:
                    pos.append(hs_doff[h] + j)
                    owner.append(r)
    hs_pos = np.asarray(pos, np.int64)
    hs_rix = np.asarray(owner, np.int64)
    inv = np.divide(1.0, nom_old, out=np.zeros_like(nom_old), where=nom_old != 0)
    unit_up = hs_up[hs_pos] * inv[hs_rix]
    unit_dn = hs_dn[hs_pos] * inv[hs_rix]
    unit_arrays = replaced_arrays(A, rep_flat, hs_pos, hs_rix, unit_up, unit_dn, np.ones(rep_flat.shape[0]))
    return NominalReplacement(samples, tuple(int(p.shape[0]) for p in parts), rep_flat, flat_gb[rep_flat],
                              nom_old, hs_pos, hs_rix, unit_up, unit_dn, unit_arrays)


@kernel
def replaced_arrays(A, rep_flat, hs_pos, hs_rix, unit_up, unit_dn, h):
    """The model arrays ``A`` with nominal ``h`` (R,) on the replaced bins (see module doc)."""
    nom = A[NOM].copy()
    for i in range(rep_flat.shape[0]):
        nom[rep_flat[i]] = h[i]
    up = A[HS_UP].copy()
    dn = A[HS_DN].copy()
    for i in range(hs_pos.shape[0]):
        up[hs_pos[i]] = unit_up[i] * h[hs_rix[i]]
        dn[hs_pos[i]] = unit_dn[i] * h[hs_rix[i]]
    return with_nominal(A, nom, up, dn)


@kernel
def _rep_coefficients(theta, A_unit, rep_flat):
    """d rate / d h of each replaced bin at theta, (R,)."""
    blocks = core.expected_blocks(theta, A_unit)
    return blocks[rep_flat]


@kernel
def profiled_statistic(h, rep_flat, rep_gb, hs_pos, hs_rix, unit_up, unit_dn, A, A_unit, AUX, aux_data,
                       main_obs, use_obs, theta_asimov, init_free, init_cond, lo, hi, fixed_free, fixed_cond,
                       poi, mu_test, stat, maxiter, tol):
    """Profiled test statistic and its envelope-theorem gradient for one replaced histogram.

    Main data: the observed ``main_obs`` (``use_obs``) or the expected rates at
    ``theta_asimov`` for nominal ``h``. Fits: free (from ``init_free``) and conditional at
    POI = ``mu_test`` (from ``init_cond``), both with :func:`core.newton_fit`. With
    ``t = 2 (NLL(mu_test, theta_hat_hat) - NLL(mu_hat, theta_hat))`` (differenced term by term:
    the lgamma terms cancel; constraints via :func:`constraint_dev`) the statistic is ``t`` where
    :func:`~nextstat.engine.statistic_rules.keeps` says so (``q0``: mu_hat > 0, ``q_mu``:
    mu_hat <= mu_test), else 0; negative ``t`` (rounding) gives 0.

    Gradient (envelope theorem: the NLL is stationary in the free parameters at both optima):
    rates are linear in ``h`` with coefficients ``k_j = d nu / d h`` at each fixed point, so
    ``dt/dh_r = 2 [(k2 - k1) - n_b (k2 / nu2_b - k1 / nu1_b)] - 2 ln(nu2_b / nu1_b) kA`` (last
    term only for expected data, n_b = nu_A,b(h)); ``b`` = the global bin of ``r``.

    Returns:
        q, grad (R,), theta_free, theta_cond, status_free, status_cond, n_iter_free, n_iter_cond
        (statuses ``core.FIT_*``, or :data:`STATUS_NONFINITE_INPUT` for both when ``h`` has a
        NaN or inf entry).
    """
    R = rep_flat.shape[0]
    for r in range(R):
        if not np.isfinite(h[r]):
            return np.nan, np.zeros(R), init_free.copy(), init_cond.copy(), -1, -1, 0, 0
    A2 = replaced_arrays(A, rep_flat, hs_pos, hs_rix, unit_up, unit_dn, h)
    nb = A[N_BINS]
    if use_obs:
        main = main_obs.copy()
    else:
        main = core.expected_main(theta_asimov, A2)
    data = np.concatenate((main, aux_data))
    start = init_cond.copy()
    start[poi] = mu_test
    tf, _, _, itf, sf, _ = core.newton_fit(init_free, data, lo, hi, fixed_free, A2, AUX, maxiter, tol, False)
    tc, _, _, itc, sc, _ = core.newton_fit(start, data, lo, hi, fixed_cond, A2, AUX, maxiter, tol, False)
    grad = np.zeros(R)
    if sf == core.FIT_NONFINITE or sc == core.FIT_NONFINITE:
        return np.nan, grad, tf, tc, sf, sc, itf, itc
    nu1 = core.expected_main(tf, A2)
    nu2 = core.expected_main(tc, A2)
    t = 0.0
    lr = np.zeros(nb)
    for b in range(nb):
        t += nu2[b] - nu1[b]
        if nu1[b] > 0.0 and nu2[b] > 0.0:
            lr[b] = math.log1p((nu2[b] - nu1[b]) / nu1[b])
        if main[b] != 0.0:
            t -= main[b] * lr[b]
    t = 2.0 * (t + core.constraint_dev(tc, aux_data, AUX) - core.constraint_dev(tf, aux_data, AUX))
    mu_hat = tf[poi]
    keep = keeps(stat, mu_hat, mu_test)
    if not keep or not t > 0.0:
        return 0.0, grad, tf, tc, sf, sc, itf, itc
    k1 = _rep_coefficients(tf, A_unit, rep_flat)
    k2 = _rep_coefficients(tc, A_unit, rep_flat)
    for r in range(R):
        b = rep_gb[r]
        v = k2[r] - k1[r]
        if main[b] != 0.0:
            v -= main[b] * (k2[r] / nu2[b] - k1[r] / nu1[b])
        grad[r] = 2.0 * v
    if not use_obs:
        kA = _rep_coefficients(theta_asimov, A_unit, rep_flat)
        for r in range(R):
            grad[r] -= 2.0 * lr[rep_gb[r]] * kA[r]
    return t, grad, tf, tc, sf, sc, itf, itc


@kernel
def expected_auxdata(theta, AUX):
    """Expected auxiliary data at ``theta`` (as ``Model.expected_auxdata``): the parameter for a
    Gaussian constraint, ``tau * gamma`` for a Poisson one."""
    par, kind, tau = AUX[AUX_PAR], AUX[AUX_KIND], AUX[AUX_TAU]
    out = np.empty(par.shape[0])
    for i in range(par.shape[0]):
        x = theta[par[i]]
        out[i] = x if kind[i] == core.AUX_GAUSS else x * tau[i]
    return out


@kernel
def _interior(theta, fixed, lo, hi):
    """Indices of the free parameters strictly inside their bounds."""
    P = theta.shape[0]
    idx = np.empty(P, np.int64)
    m = 0
    for i in range(P):
        if not fixed[i] and lo[i] < theta[i] < hi[i]:
            idx[m] = i
            m += 1
    return idx[:m]


@kernel
def newton_polish(theta, data, lo, hi, fixed, A, AUX):
    """One exact Newton step from a converged fit over the free parameters (not fixed, not on a
    bound), taken when it stays inside the bounds and the EDM is below 1e-8 (the quadratic
    region): a fit stopped at EDM < tol is off by ~sqrt(tol) in the parameters, and one step
    squares that. For a statistic that depends on the fitted parameters at first order
    (the Asimov data), not only through a stationary NLL."""
    _, g, H = core.nll_grad_hess(theta, data, A, AUX, True)
    sel = _interior(theta, fixed, lo, hi)
    m = sel.shape[0]
    out = theta.copy()
    if m == 0:
        return out
    gs = g[sel]
    ok, L = core._chol(core.submatrix(H, sel))
    if not ok:
        return out
    d = core._chol_solve(L, gs)
    edm = 0.0
    for a in range(m):
        edm += 0.5 * gs[a] * d[a]
        out[sel[a]] -= d[a]
        if not lo[sel[a]] < out[sel[a]] < hi[sel[a]]:
            return theta.copy()
    if not edm < 1e-8:
        return theta.copy()
    return out


@kernel
def observed_cls_statistics(h, rep_flat, rep_gb, hs_pos, hs_rix, unit_up, unit_dn, A, A_unit, AUX, aux_obs,
                            main_obs, init_free, init_cond, init_asimov, init_acond, lo, hi, fixed_free,
                            fixed_cond, poi, mu_test, maxiter, tol):
    """Observed and Asimov ``q~_mu`` of the observed asymptotic CLs, and their gradients in ``h``.

    As :class:`nextstat.infer.hypotest.AsymptoticCalculator` (pyhf's ``AsymptoticCalculator``,
    arXiv:1007.1727 sec. 3.8) for the model whose replaced nominals are ``h``:

    1. ``q_obs``: :func:`profiled_statistic` (``STAT_QMU``) on the observed data
       ``(main_obs, aux_obs)``; gradient by the envelope theorem (the data do not depend on h).
    2. ``theta_A``: the conditional fit at POI = 0 on the observed data (from ``init_asimov``),
       refined by :func:`newton_polish` (``q_A`` depends on ``theta_A`` at first order); the
       Asimov data are ``D_A = (nu(theta_A; h), expected_auxdata(theta_A))``.
    3. ``q_A``: :func:`profiled_statistic` on ``D_A`` (free fit from ``theta_A``, conditional
       fit at ``mu_test`` from ``init_acond``). Its gradient is the envelope part at fixed data
       plus ``2 w . dD_A/dh``, with ``w = d[NLL(theta_c) - NLL(theta_f)]/dD`` (main bins
       ``-ln(nu_c / nu_f)``; Gaussian aux ``-(x_c - x_f) / sigma^2``; Poisson aux
       ``-ln(x_c / x_f)``) and ``dD_A/dh = d nu/dh|_theta_A + Jext dtheta_A/dh``, where ``Jext``
       is the Jacobian of ``(nu, expected_auxdata)`` at ``theta_A`` and (implicit function
       theorem at the optimum) ``dtheta_A/dh = -H^-1 d^2 NLL_obs / (d theta d h)`` over the free
       parameters (not fixed, POI fixed, not on a bound; the others do not move), ``H`` the exact
       Hessian there. With the adjoint ``z = H^-1 Jext^T w``:
       ``-z^T d^2 NLL_obs/(d theta d h_r) = -[(1 - n_b/nu_b) (dk_r/dtheta . z)
       + (n_b / nu_b^2) k_r (J z)_b]`` (``k_r = d nu_b / d h_r`` at theta_A, ``J`` the rate
       Jacobian, ``n`` the observed main data, ``b`` the main bin of ``r``).

    Returns:
        q_obs, grad_obs (R,), q_A, grad_A (R,), thetas (5, P) (observed free, observed
        conditional at mu_test, theta_A, Asimov free, Asimov conditional), statuses (5,)
        (``core.FIT_*``; :data:`STATUS_NONFINITE_INPUT` for all when ``h`` has a NaN or inf).
        Gradients are 0 where the statistic is clipped to 0; q values are NaN after a fit with a
        non-finite NLL.
    """
    R = rep_flat.shape[0]
    P = init_free.shape[0]
    thetas = np.empty((5, P))
    thetas[0] = init_free
    thetas[1] = init_cond
    thetas[2] = init_asimov
    thetas[3] = init_asimov
    thetas[4] = init_acond
    status = np.full(5, core.FIT_MAXITER, np.int64)
    g_a = np.zeros(R)
    q, g_q, tf, tc, sf, sc, _, _ = profiled_statistic(
        h, rep_flat, rep_gb, hs_pos, hs_rix, unit_up, unit_dn, A, A_unit, AUX, aux_obs, main_obs, True,
        init_free, init_free, init_cond, lo, hi, fixed_free, fixed_cond, poi, mu_test, STAT_QMU, maxiter, tol)
    status[0] = sf
    status[1] = sc
    if sf == STATUS_NONFINITE_INPUT:
        status[:] = STATUS_NONFINITE_INPUT
        return np.nan, g_q, np.nan, g_a, thetas, status
    thetas[0] = tf
    thetas[1] = tc
    if sf == core.FIT_NONFINITE or sc == core.FIT_NONFINITE:
        return np.nan, g_q, np.nan, g_a, thetas, status
    A2 = replaced_arrays(A, rep_flat, hs_pos, hs_rix, unit_up, unit_dn, h)
    nb = A[N_BINS]
    data_obs = np.concatenate((main_obs, aux_obs))
    start = init_asimov.copy()
    start[poi] = 0.0
    t_a, _, _, _, s_a, _ = core.newton_fit(start, data_obs, lo, hi, fixed_cond, A2, AUX, maxiter, tol, False)
    if s_a == core.FIT_CONVERGED:
        t_a = newton_polish(t_a, data_obs, lo, hi, fixed_cond, A2, AUX)
    thetas[2] = t_a
    status[2] = s_a
    if s_a == core.FIT_NONFINITE:
        return q, g_q, np.nan, g_a, thetas, status
    main_a = core.expected_main(t_a, A2)
    aux_a = expected_auxdata(t_a, AUX)
    qa, g_a, t_af, t_ac, s_af, s_ac, _, _ = profiled_statistic(
        h, rep_flat, rep_gb, hs_pos, hs_rix, unit_up, unit_dn, A, A_unit, AUX, aux_a, main_a, True,
        t_a, t_a, init_acond, lo, hi, fixed_free, fixed_cond, poi, mu_test, STAT_QMU, maxiter, tol)
    thetas[3] = t_af
    thetas[4] = t_ac
    status[3] = s_af
    status[4] = s_ac
    if not qa > 0.0:
        return q, g_q, qa, g_a, thetas, status
    # --- dependence of the Asimov data on h
    nu_f = core.expected_main(t_af, A2)
    nu_c = core.expected_main(t_ac, A2)
    w = np.zeros(nb)
    for b in range(nb):
        if nu_f[b] > 0.0 and nu_c[b] > 0.0:
            w[b] = -math.log1p((nu_c[b] - nu_f[b]) / nu_f[b])
    k_a = _rep_coefficients(t_a, A_unit, rep_flat)
    for r in range(R):
        g_a[r] += 2.0 * w[rep_gb[r]] * k_a[r]
    nu_a, J = core._rates_jac(t_a, A2)
    u = np.ascontiguousarray(J.T) @ w
    par, kind, sigma, tau = AUX[AUX_PAR], AUX[AUX_KIND], AUX[AUX_SIGMA], AUX[AUX_TAU]
    for i in range(par.shape[0]):
        p = par[i]
        xc = t_ac[p]
        xf = t_af[p]
        if kind[i] == core.AUX_GAUSS:
            u[p] -= (xc - xf) / (sigma[i] * sigma[i])
        elif xc > 0.0 and xf > 0.0:
            u[p] -= math.log(xc / xf) * tau[i]
    sel = _interior(t_a, fixed_cond, lo, hi)
    m = sel.shape[0]
    nonzero = False
    for a in range(m):
        if u[sel[a]] != 0.0:
            nonzero = True
    if not nonzero:
        return q, g_q, qa, g_a, thetas, status
    _, _, H = core.nll_grad_hess(t_a, data_obs, A2, AUX, True)
    Hs = core.submatrix(H, sel)
    us = u[sel]
    ok, L = core._chol(Hs)
    if ok:
        zs = core._chol_solve(L, us)
    else:  # singular (a direction the likelihood does not constrain): minimum-norm solution
        zs = np.linalg.pinv(Hs) @ us
    z = np.zeros(P)
    for a in range(m):
        z[sel[a]] = zs[a]
    jz = J @ z
    _, Jf = core._rates_jac(t_a, flat_layout(A_unit))
    for r in range(R):
        f = rep_flat[r]
        b = rep_gb[r]
        dk = 0.0
        for p in range(P):
            dk += Jf[f, p] * z[p]
        n = main_obs[b]
        if n != 0.0:
            v = (1.0 - n / nu_a[b]) * dk + n / (nu_a[b] * nu_a[b]) * k_a[r] * jz[b]
        else:
            v = dk
        g_a[r] -= 2.0 * v
    return q, g_q, qa, g_a, thetas, status
