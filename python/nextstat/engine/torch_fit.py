"""Batched bounded Newton fits in PyTorch: ``N`` independent problems advanced together.

The algorithm is :func:`nextstat.engine.numba_core.newton_fit`, vectorised over problems:

* steps start as Gauss-Newton (Fisher scoring: ``J^T diag(n / nu^2) J`` plus the exact
  constraint curvature, positive semi-definite); a problem switches to the exact analytic
  Hessian once its EDM falls by less than 10x per step, for quadratic convergence;
* bounds by an active set (a parameter on a bound whose gradient points outward is held) plus
  projection; fixed parameters never move;
* one batched ``torch.linalg.cholesky_ex`` / ``cholesky_solve`` per iteration for all active
  problems; problems whose matrix is not positive definite retry with the Gauss-Newton matrix
  plus a growing ridge (``1e-10 * 100^k``);
* a backtracking Armijo line search per problem (step halved until the NLL decreases by
  ``1e-4 * g.step``; at most 40 halvings), all pending problems evaluated in one NLL call;
  values are compared in the deviance form (:meth:`TorchModel.nll_dev`, the NLL minus the
  saturated likelihood), which keeps full precision where pyhf's form carries the rounding
  noise of huge lgamma terms (shapesys with ``tau`` ~ 1e11); the returned NLL is pyhf's;
* per-problem convergence: EDM ``g^T H^-1 g / 2 < tol`` over the free parameters, or no
  free parameter left, or no decrease possible at machine precision with EDM < 1e-6.

Converged problems drop out of the batch (compaction), so stragglers cost only their own
rows. Everything stays on the model's device; the host only reads a few booleans per
iteration (whether any problem is still active, whether a line search is pending).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from nextstat.engine.torch_model import NominalOverrides, TorchModel

__all__ = ["BatchedFitResult", "batched_fit"]


class BatchedFitResult(NamedTuple):
    """Result of :func:`batched_fit` (unpacks as ``theta, nll, converged, n_iter``).

    Attributes:
        theta: ``[N, P]`` best-fit parameters (fixed ones at their initial values).
        nll: ``[N]`` NLL at ``theta`` (``+inf`` where the rates are invalid).
        converged: ``[N]`` bool. False: iteration limit, no decrease possible away from the
            minimum, or a non-finite NLL at the start (rate <= 0 in a bin with data).
        n_iter: ``[N]`` int64 Newton iterations taken.
    """

    theta: torch.Tensor
    nll: torch.Tensor
    converged: torch.Tensor
    n_iter: torch.Tensor


_RIDGES = tuple(1e-10 * 100.0**k for k in range(12))


def _check(name: str, t, shape: tuple, tm: TorchModel, *, boolean: bool = False) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) not in shape:
        raise ValueError(f"{name}: expected shape {' or '.join(str(list(s)) for s in shape)}, got {list(t.shape)}")
    if t.device != tm.device:
        raise ValueError(f"{name}: expected device {tm.device}, got {t.device}")
    if boolean:
        if t.dtype != torch.bool:
            raise ValueError(f"{name}: expected dtype torch.bool, got {t.dtype}")
    elif t.dtype != tm.dtype:
        raise ValueError(f"{name}: expected dtype {tm.dtype}, got {t.dtype}")
    return t


def _direction(H: torch.Tensor, Hgn: torch.Tensor, g: torch.Tensor, free: torch.Tensor):
    """Newton direction on the free parameters: ``(d [M, P], ok [M])``."""
    m2 = free.unsqueeze(-1) & free.unsqueeze(-2)
    fixed_eye = torch.diag_embed((~free).to(H.dtype))
    gm = torch.where(free, g, torch.zeros_like(g)).unsqueeze(-1)
    L, info = torch.linalg.cholesky_ex(torch.where(m2, H, torch.zeros_like(H)) + fixed_eye)
    bad = info > 0
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        Hg = torch.where(m2[idx], Hgn[idx], torch.zeros_like(Hgn[idx])) + fixed_eye[idx]
        free_eye = torch.diag_embed(free[idx].to(H.dtype))
        Lb = L[idx]
        pend = torch.ones(idx.shape[0], dtype=torch.bool, device=H.device)
        for ridge in _RIDGES:
            Lr, info_r = torch.linalg.cholesky_ex(Hg + ridge * free_eye)
            ok_r = pend & (info_r == 0)
            Lb = torch.where(ok_r[:, None, None], Lr, Lb)
            pend = pend & ~ok_r
            if not bool(pend.any()):
                break
        L = L.index_copy(0, idx, Lb)
        bad = bad.index_copy(0, idx, pend)
    d = -torch.cholesky_solve(gm, L).squeeze(-1)
    d = torch.where(free & ~bad.unsqueeze(-1), d, torch.zeros_like(d))
    return d, ~bad


def batched_fit(tmodel: TorchModel, data: torch.Tensor, init: torch.Tensor, fixed: torch.Tensor,
                bounds: torch.Tensor, *, nominal_overrides=None, maxiter: int = 200,
                tol: float | None = None) -> BatchedFitResult:
    """Minimise the NLL of ``N`` independent problems at once (bounded Newton; module doc).

    Used by the differentiable significance (:mod:`nextstat.torch.significance`) and meant for
    toy fits on a GPU: put the toys' data in ``data`` and call once.

    Args:
        tmodel: the model on the target device and dtype (all tensors must match both).
        data: ``[N, n_bins + n_aux]`` main then auxiliary data (``[n_bins + n_aux]`` is
            broadcast when ``init`` is ``[N, P]``).
        init: ``[N, P]`` starting points (``[P]`` for N = 1); fixed parameters stay here.
        fixed: ``[P]`` or ``[N, P]`` bool mask of fixed parameters.
        bounds: ``[P, 2]`` or ``[N, P, 2]`` low and high bounds.
        nominal_overrides: replaced sample nominals ``{sample: [N or 1, n_s]}`` or a
            :class:`~nextstat.engine.torch_model.NominalOverrides` (see
            :mod:`nextstat.engine.torch_model`).
        maxiter: iteration limit per problem.
        tol: EDM threshold; default ``1e-12`` in float64, ``1e-5`` in float32.

    Returns:
        :class:`BatchedFitResult` ``(theta [N, P], nll [N], converged [N], n_iter [N])``.

    Raises:
        ValueError: an argument of the wrong type, shape, dtype or device (the message names it).

    Example:
        >>> import torch, nextstat
        >>> from nextstat.builders import build_workspace_from_histograms
        >>> from nextstat.engine.torch_model import TorchModel
        >>> model = nextstat.from_pyhf(build_workspace_from_histograms([5.0, 10.0], {"b": [50.0, 20.0]}))
        >>> tm = TorchModel(model)
        >>> toys = torch.tensor([[55.0, 30.0], [50.0, 20.0]], dtype=torch.float64)
        >>> res = batched_fit(tm, toys, tm.init.expand(2, -1), tm.fixed, torch.stack([tm.lo, tm.hi], -1))
        >>> [round(x, 6) for x in res.theta[:, 0].tolist()], res.converged.tolist()
        ([1.0, 0.0], [True, True])
    """
    P = tmodel.n_params
    width = tmodel.n_bins + tmodel.n_aux
    if not isinstance(init, torch.Tensor):
        raise ValueError(f"init: expected a torch.Tensor, got {type(init).__name__}")
    if init.ndim == 1:
        init = init.unsqueeze(0)
    N = init.shape[0]
    _check("init", init, ((N, P),), tmodel)
    data = _check("data", data, ((N, width), (width,)), tmodel).expand(N, width)
    fixed = _check("fixed", fixed, ((P,), (N, P)), tmodel, boolean=True).expand(N, P)
    bounds = _check("bounds", bounds, ((P, 2), (N, P, 2)), tmodel).expand(N, P, 2)
    if maxiter < 1:
        raise ValueError(f"maxiter: expected an integer >= 1, got {maxiter}")
    if tol is None:
        tol = 1e-12 if tmodel.dtype == torch.float64 else 1e-5
    ov = tmodel.overrides(nominal_overrides, N)
    if not isinstance(nominal_overrides, NominalOverrides) and ov.batch not in (1, N):
        raise ValueError(f"nominal_overrides: expected batch 1 or {N}, got {ov.batch}")
    lo_all, hi_all = bounds[..., 0], bounds[..., 1]
    dev, dt = tmodel.device, tmodel.dtype

    theta = torch.where(fixed, init, torch.minimum(torch.maximum(init, lo_all), hi_all)).clone()
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    conv = torch.zeros(N, dtype=torch.bool, device=dev)
    exact = torch.zeros(N, dtype=torch.bool, device=dev)
    prev_edm = torch.full((N,), math.inf, dtype=dt, device=dev)
    n_iter = torch.zeros(N, dtype=torch.int64, device=dev)

    for it in range(1, maxiter + 1):
        act = (~done).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        n_iter[act] = it
        th, dat, o = theta[act], data[act], ov.select(act)
        lo, hi, fx, ex = lo_all[act], hi_all[act], fixed[act], exact[act]
        want_exact = bool(ex.any())
        f, g, Hgn, Hex = tmodel.nll_grad_hess(th, dat, o, exact=want_exact, deviance=True)
        H = torch.where(ex[:, None, None], Hex, Hgn) if want_exact else Hgn
        finite = torch.isfinite(f)
        free = ~fx & ~((th <= lo) & (g > 0)) & ~((th >= hi) & (g < 0))
        d, ok = _direction(H, Hgn, g, free)
        edm = -0.5 * (g * d).sum(1)
        no_free = ~free.any(1)
        c_now = finite & ok & (no_free | (edm < tol))
        fail_now = ~finite | ~ok
        step = ~c_now & ~fail_now
        switch = step & ~ex & (edm > 0.1 * prev_edm[act])
        exact[act] = ex | switch
        prev_edm[act] = torch.where(step, edm, prev_edm[act])

        # batched backtracking line search over the stepping problems
        M = th.shape[0]
        t = torch.ones(M, dtype=dt, device=dev)
        new_th = th.clone()
        new_f = f.clone()
        accepted = torch.zeros(M, dtype=torch.bool, device=dev)
        pend = step.clone()
        for _ in range(40):
            pidx = pend.nonzero().squeeze(1)
            if pidx.numel() == 0:
                break
            thp = th[pidx]
            moved = torch.minimum(torch.maximum(thp + t[pidx, None] * d[pidx], lo[pidx]), hi[pidx])
            trial = torch.where(free[pidx], moved, thp)
            dec = (g[pidx] * (trial - thp)).sum(1)
            ft = tmodel.nll_dev(trial, dat[pidx], o.select(pidx))
            okp = torch.isfinite(ft) & (ft <= f[pidx] + 1e-4 * dec)
            new_th[pidx] = torch.where(okp[:, None], trial, new_th[pidx])
            new_f[pidx] = torch.where(okp, ft, new_f[pidx])
            accepted[pidx] = okp
            pend[pidx] = ~okp
            t[pidx] = torch.where(okp, t[pidx], 0.5 * t[pidx])
        not_acc = step & ~accepted
        # no decrease possible: at the minimum if the EDM is tiny; else retry with the exact
        # Hessian (problems already on it fail)
        c_flat = not_acc & (edm < 1e-6)
        retry = not_acc & ~c_flat & ~(ex | switch)
        exact[act] = exact[act] | retry
        fail_ls = not_acc & ~c_flat & ~retry
        tiny = accepted & ((f - new_f) < 1e-15 * torch.clamp(f.abs(), min=1.0)) & (edm < 1e-8)
        theta[act] = new_th
        conv[act] = c_now | c_flat | tiny
        done[act] = c_now | fail_now | c_flat | fail_ls | tiny
    nll = tmodel.nll(theta, data, ov)
    return BatchedFitResult(theta, nll, conv & torch.isfinite(nll), n_iter)
