r"""The Hesse variance of the parameter of interest as a differentiable loss (INFERNO).

INFERNO (de Castro & Dorigo, arXiv:1806.04743, sec. 3, Algorithm 1) trains a summary statistic
on the expected variance of the POI: the inverse of the Hessian of the binned Poisson NLL,
auxiliary constraints included, over all free parameters, at the Asimov point,

.. math::

    \mathrm{var}(\mu) = [H^{-1}]_{\mu\mu},\qquad
    H_{ij} = \frac{\partial^2\,\mathrm{NLL}(\theta; D)}{\partial\theta_i\,\partial\theta_j}\Big|_{\hat\theta},

which on Asimov data (``n = nu``) is the Fisher information of the model (Cramer-Rao bound).
Here ``NLL`` is the full HistFactory likelihood of the session's model with the network's
histograms (and histosys templates, :mod:`nextstat.torch.inputs`) in place of the workspace's,
so every modifier type takes part.

**Value.** ``data="expected"``: ``D`` the Asimov data at ``POI = asimov_mu`` and the suggested
init for the other parameters, computed from the current histograms, with nominal auxiliary data;
then ``theta_hat`` is that point (the data are its expectation), no fit runs, and the value equals
``nextstat.fit(model_with_h_on_asimov).errors[poi] ** 2`` (Hesse: the exact Hessian over the free,
i.e. non-fixed, parameters). When the suggested init does not sit at the constraints' centres
(its EDM on the Asimov data is not ~0), a fit runs as for observed data. ``data="observed"``: the
free fit to the observed data (warm-started), then the Hessian there.

**Gradient** (implicit differentiation at the optimum; never through fit iterations). With
``v = H^{-1} e_mu``, ``d var / d h = -v^T (dH/dh) v`` where ``dH/dh`` is the total derivative of
the exact analytic Hessian (:meth:`~nextstat.engine.torch_model.TorchModel.nll_grad_hess`) at
``theta_hat``: through the rates, the Asimov data and ``theta_hat(h)``. At the Asimov point
``theta_hat`` does not depend on ``h`` (it is the Asimov point for every ``h``); elsewhere
``d theta_hat / dh = -H^{-1} d^2 NLL / (d theta d h)`` over the free parameters inside their
bounds, carried by the surrogate ``theta_hat - H^{-1} [g(theta_hat; h) - g(theta_hat; h_0)]``
(``H`` detached), whose first derivative in ``h`` is that one. Autograd through
:class:`~nextstat.engine.torch_model.TorchModel` gives the rest; the backward is first order only.

**Nuisance parameters without a constraint** (INFERNO benchmarks 1-2). A HistFactory histosys
always has a Gaussian constraint; give it a wide one in the measurement's parameter configuration,
``{"name": "r", "sigmas": [1e4]}``: its Fisher term ``1 / sigma^2 = 1e-8`` changes ``var(mu)`` by
less than ``1e-8 / H_rr`` relative (``H_rr`` the data's curvature in ``r``). The same setting
expresses any other width (INFERNO's ``r ~ N(2, 0.4)`` with templates at ``r = 2 +- 0.2`` is
``"sigmas": [2.0]``). pyhf 0.7.6 refuses ``sigmas`` for histosys (and normsys) parameters;
nextstat accepts it, so such a workspace is nextstat-only. A fixed nuisance (``"fixed": true``)
drops out of ``H``.

Example (checked against :func:`nextstat.fit` on the Asimov data):

>>> import numpy as np, torch, nextstat
>>> from nextstat.builders import build_workspace_from_histograms
>>> from nextstat.torch import ProfiledSession, profiled_poi_variance_loss
>>> ws = build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 20.0]}, data=[55.0, 30.0],
...                                      normsys={"bkg": {"bkg_norm": (0.9, 1.1)}})
>>> session = ProfiledSession(nextstat.from_pyhf(ws), device="cpu")
>>> h = torch.tensor([5.0, 10.0], dtype=torch.float64, requires_grad=True)
>>> var = profiled_poi_variance_loss(h, session)
>>> var.backward()
>>> ws_a = build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 20.0]}, data=[55.0, 30.0],
...                                        normsys={"bkg": {"bkg_norm": (0.9, 1.1)}})
>>> m = nextstat.from_pyhf(ws_a)
>>> err = nextstat.fit(m, data=m.expected_data(m.suggested_init())).errors[m.poi_index]
>>> bool(np.isclose(var.item(), err ** 2, rtol=1e-10)), bool((h.grad < 0).all())
(True, True)
"""

from __future__ import annotations

import numpy as np
import torch

from nextstat.engine.fitter import FitStatus
from nextstat.torch import backends
from nextstat.torch.inputs import layout_arrays

__all__ = ["evaluate_variance"]

#: EDM (NLL units) below which the Asimov point is taken as the optimum without a fit
_STATIONARY_EDM = 1e-18


def _poi_variance(H: torch.Tensor, free: torch.Tensor, poi: int, where: str) -> torch.Tensor:
    """``[H_ff^{-1}]_{poi, poi}`` per row of ``H`` ``[B, P, P]`` over the ``free`` ``[P]`` mask."""
    m2 = free.unsqueeze(-1) & free.unsqueeze(-2)
    Hf = torch.where(m2, H, torch.zeros_like(H)) + torch.diag_embed((~free).to(H.dtype)).expand_as(H)
    L, info = torch.linalg.cholesky_ex(Hf)
    if bool((info != 0).any()):
        raise ValueError(f"histogram: the Hessian over the free parameters is not positive definite at {where} "
                         "for these histograms (a parameter the likelihood does not constrain); the POI "
                         "variance is not defined")
    e = torch.zeros(H.shape[0], H.shape[1], 1, dtype=H.dtype, device=H.device)
    e[:, poi] = 1.0
    return torch.cholesky_solve(e, L)[:, poi, 0]


def _fit(session, layout, h, data, key, backend):
    """Free fits of the rows of ``h`` ``[B, R]`` to ``data`` ``[B, n_bins + n_aux]`` (no graph)."""
    tm = session.tmodel
    B, P = h.shape[0], session.n_params
    if backend == "numba" and B == 1:
        start = session._warm.get(key) or session._init
        A2 = layout_arrays(session.model, session._replacement(layout.samples), layout, h[0].numpy())
        th, st = backends.numba_fit(session, start, np.ascontiguousarray(data[0].numpy()), session._fixed, A2)
        if st != FitStatus.CONVERGED:
            session._fit_problem(key, int(st), int(FitStatus.CONVERGED))
        session._warm[key] = th
        return torch.from_numpy(th).unsqueeze(0)
    init = session._warm.get(key, tm.init.expand(B, P))
    theta = backends.batched_fit_checked(session, key, data, init, tm.fixed.expand(B, P),
                                         session.overrides(layout, h))
    session._warm[key] = theta
    return theta


def evaluate_variance(session, layout, h: torch.Tensor, asimov_mu: float, backend: str):
    """``(var(POI) [B], dvar/dh [B, R])`` for flat inputs ``h`` ``[B, R]`` (module doc)."""
    tm = session.tmodel
    B, P, poi = h.shape[0], session.n_params, session.model.poi_index
    free = ~tm.fixed
    expected = session.data == "expected"
    aux = tm.aux_data.expand(B, -1)
    theta0 = tm.init.clone()
    theta0[poi] = asimov_mu
    theta0 = theta0.expand(B, P)
    with torch.enable_grad():
        hg = h.detach().requires_grad_(True)
        ovg = session.overrides(layout, hg)
        main = tm.rates(theta0, ovg) if expected else tm.main_data.expand(B, -1)
        data = torch.cat([main, aux], 1)
        theta = None
        if expected:
            _, g, _, H = tm.nll_grad_hess(theta0, data, ovg, exact=True)
            inside = free & (theta0 > tm.lo) & (theta0 < tm.hi)
            gd = torch.where(inside, g.detach(), torch.zeros_like(g))
            with torch.no_grad():
                Hd = H.detach()
                sol = torch.linalg.lstsq(Hd + torch.diag_embed((~inside).to(Hd.dtype)), gd.unsqueeze(-1)).solution
                edm = 0.5 * (gd * sol.squeeze(-1)).sum(-1)
            if bool((edm < _STATIONARY_EDM).all()):
                var = _poi_variance(H, free, poi, "the Asimov point")
                (grad,) = torch.autograd.grad(var.sum(), hg, allow_unused=True)
                return var.detach(), torch.zeros_like(h) if grad is None else grad
        key = ("variance", layout.key, session.data, asimov_mu, B, backend)
        theta = _fit(session, layout, h, data.detach(), key, backend)
        with torch.no_grad():
            ov = session.overrides(layout, h)
            Hd = tm.nll_grad_hess(theta, data.detach(), ov, exact=True)[3]
        inside = free & (theta > tm.lo) & (theta < tm.hi)
        m2 = inside.unsqueeze(-1) & inside.unsqueeze(-2)
        Hinv = torch.linalg.pinv(torch.where(m2, Hd, torch.zeros_like(Hd))
                                 + torch.diag_embed((~inside).to(Hd.dtype)), hermitian=True)
        g = tm.nll_grad_hess(theta, data, ovg, exact=False)[1]
        rhs = torch.where(inside, g - g.detach(), torch.zeros_like(g))
        theta_s = theta - (Hinv @ rhs.unsqueeze(-1)).squeeze(-1)
        H = tm.nll_grad_hess(theta_s, data, ovg, exact=True)[3]
        var = _poi_variance(H, free, poi, "the best fit")
        (grad,) = torch.autograd.grad(var.sum(), hg, allow_unused=True)
    return var.detach(), torch.zeros_like(h) if grad is None else grad
