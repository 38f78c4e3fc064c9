"""Analytic derivatives of :class:`~nextstat.engine.torch_model.TorchModel`'s NLL without
autograd: gradient, Gauss-Newton matrix and exact Hessian, batched over ``N`` parameter points
(the PyTorch twin of :func:`nextstat.engine.numba_core.nll_grad_hess`), for
:mod:`nextstat.engine.torch_fit` and :mod:`nextstat.torch.variance`.

The rates are ``nu_b = sum_f base_f F_f G_f`` (flat bins ``f`` of bin ``b``) with ``F`` the
product of a block's scalar factors (normfactor, normsys, lumi, ...), ``G`` the product of a
flat bin's per-bin factors (shapesys, staterror, shapefactor) and ``base`` the nominal plus the
histosys deltas; derivatives of the products use the products excluding one or two factors
(:func:`excluded_products`, exact where factors vanish).
"""

from __future__ import annotations

import torch

__all__ = ["excluded_products", "nll_grad_hess"]


def excluded_products(vals: torch.Tensor, pair: bool):
    """Product over the last axis, and the products excluding one (and two) entries,
    exact when entries vanish (count of zeros and product of the non-zero ones)."""
    z = vals == 0
    nz = z.sum(-1)
    safe = torch.where(z, torch.ones_like(vals), vals)
    pnz = safe.prod(-1)
    zero = torch.zeros_like(pnz)
    prod = torch.where(nz == 0, pnz, zero)
    ex1 = torch.where(z, torch.where(nz == 1, pnz, zero).unsqueeze(-1),
                      torch.where(nz == 0, pnz, zero).unsqueeze(-1) / safe)
    ex2 = None
    if pair:
        rest = nz[..., None, None] - z[..., :, None].long() - z[..., None, :].long()
        ex2 = torch.where(rest == 0, pnz[..., None, None] / (safe[..., :, None] * safe[..., None, :]),
                          torch.zeros_like(pnz)[..., None, None])
        k = vals.shape[-1]
        ex2 = ex2 * (1 - torch.eye(k, device=vals.device, dtype=vals.dtype))  # k x k, tiny
    return prod, ex1, ex2


def nll_grad_hess(tm, theta: torch.Tensor, data: torch.Tensor, nominal_overrides=None, *,
                  exact: bool = True, deviance: bool = False):
    """:meth:`TorchModel.nll_grad_hess <nextstat.engine.torch_model.TorchModel.nll_grad_hess>`
    of ``tm``, a :class:`~nextstat.engine.torch_model.TorchModel` (its docstring gives the shapes)."""
    theta = tm._theta(theta)
    N = theta.shape[0]
    data = tm._data(data, N)
    ov = tm.overrides(nominal_overrides, N)
    P, P1, nb = tm.n_params, tm.n_params + 1, tm.n_bins
    dev, dt = tm.device, tm.dtype
    zcol = torch.zeros(N, 1, device=dev, dtype=dt)
    ocol = torch.ones(N, 1, device=dev, dtype=dt)
    phi, phi1, phi2 = tm._scalar(theta[:, tm._sc_par], True)
    bt = tm._blk_terms
    P0 = torch.cat([phi, ocol], 1)[:, bt]  # [N, NB, Ks]
    Pd1 = torch.cat([phi1, zcol], 1)[:, bt]
    Pd2 = torch.cat([phi2, zcol], 1)[:, bt]
    F, exF1, exF2 = excluded_products(P0, exact)
    base = ov.nom.expand(N, -1)
    has_h = tm._e_f.numel() > 0
    if has_h:
        d, d1, d2 = tm._delta(theta[:, tm._e_par], ov.up, ov.dn, True)
        base = base.index_add(1, tm._e_f, d)
    Q0 = torch.cat([theta, ocol], 1)[:, tm._pb_pad]  # [N, NF, Kq]
    G, exG1, exG2 = excluded_products(Q0, exact and tm._kq > 1)
    Ff = F[:, tm._f_blk]
    FG = Ff * G
    rate = base * FG
    nu = torch.zeros(N, nb, device=dev, dtype=dt).index_add(1, tm._f_gb, rate)
    n = data[:, :nb]
    aux = data[:, nb:]
    if deviance:
        f = tm._dev(nu, n).sum(-1) + tm._constraint_dev(theta, aux)
    else:
        f = tm._main_nll(nu, n) + tm._constraint(theta, aux)

    # Jacobian of the rates, [N, n_bins, P]
    exP1 = exF1 * Pd1  # d F / d theta_k per block term
    vals = [((base * G).unsqueeze(-1) * exP1[:, tm._f_blk, :]).reshape(N, -1)]
    if has_h:
        vals.append(d1 * FG[:, tm._e_f])
    vals.append(((base * Ff).unsqueeze(-1) * exG1).reshape(N, -1))
    Jf = torch.zeros(N, nb * P1, device=dev, dtype=dt).index_add(1, tm._idx_j, torch.cat(vals, 1))
    J = Jf.view(N, nb, P1)[:, :, :P]
    safe_nu = torch.where(nu > 0, nu, torch.ones_like(nu))
    r = 1.0 - n / safe_nu
    w = n / (safe_nu * safe_nu)
    g = (r.unsqueeze(1) @ J).squeeze(1)
    Jw = J * w.sqrt().unsqueeze(-1)
    Hgn = Jw.transpose(1, 2) @ Jw
    # constraints: gradient and (diagonal) curvature
    if tm.n_aux:
        x = theta[:, tm._aux_par]
        gs = tm._aux_gauss
        sig2 = tm._aux_sigma * tm._aux_sigma
        xs = torch.where(gs, torch.ones_like(x), x)
        tau = tm._aux_tau.expand_as(x)
        cg = torch.where(gs, (x - aux) / sig2, torch.where(aux == 0, tau, tau - aux / xs))
        cc = torch.where(gs, (1.0 / sig2).expand_as(x), torch.where(aux == 0, torch.zeros_like(x), aux / (xs * xs)))
        g = g.index_add(1, tm._aux_par, cg)
        dcon = torch.zeros(N, P, device=dev, dtype=dt).index_add(1, tm._aux_par, cc)
        Hgn = Hgn + torch.diag_embed(dcon)
    if not exact:
        return f, g, Hgn, None

    # second-order term sum_b r_b d^2 nu_b, scattered into [N, (P+1)^2]
    rf = r[:, tm._f_gb]  # [N, NF]
    NB = F.shape[1]
    R1 = torch.zeros(N, NB, device=dev, dtype=dt).index_add(1, tm._f_blk, rf * base * G)
    diag = torch.diag_embed(R1.unsqueeze(-1) * exF1 * Pd2)
    v_ss = R1[..., None, None] * exF2 * Pd1[..., :, None] * Pd1[..., None, :] + diag
    parts = [v_ss.reshape(N, -1)]
    if has_h:
        eG = G[:, tm._e_f]
        re = rf[:, tm._e_f]
        nh = tm._h_blk.shape[0]
        S1 = torch.zeros(N, nh, device=dev, dtype=dt).index_add(1, tm._e_term, re * d1 * eG)
        S2 = torch.zeros(N, nh, device=dev, dtype=dt).index_add(1, tm._e_term, re * d2 * eG)
        v_hs = (S1.unsqueeze(-1) * exP1[:, tm._h_blk, :]).reshape(N, -1)
        parts += [v_hs, v_hs, S2 * F[:, tm._h_blk]]
    else:
        parts += [theta.new_zeros(N, 0)] * 3
    v_qs = ((rf * base)[..., None, None] * exG1[..., :, None] * exP1[:, tm._f_blk, None, :]).reshape(N, -1)
    parts += [v_qs, v_qs]
    if has_h:
        v_qh = ((rf[:, tm._e_f] * d1 * Ff[:, tm._e_f]).unsqueeze(-1) * exG1[:, tm._e_f, :]).reshape(N, -1)
        parts += [v_qh, v_qh]
    else:
        parts += [theta.new_zeros(N, 0)] * 2
    if exG2 is not None:
        parts.append(((rf * base * Ff)[..., None, None] * exG2).reshape(N, -1))
    else:
        parts.append(theta.new_zeros(N, tm._idx_h2.numel() - sum(p.shape[1] for p in parts)))
    H2 = torch.zeros(N, P1 * P1, device=dev, dtype=dt).index_add(1, tm._idx_h2, torch.cat(parts, 1))
    H = Hgn + H2.view(N, P1, P1)[:, :P, :P]
    return f, g, Hgn, H
