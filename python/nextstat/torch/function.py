"""The one autograd Function of the profiled statistics, and the maps from a statistic to the
returned value (``Z``, expected and observed CLs).

:class:`_ProfiledStatistic` wraps any evaluation ``h -> (q [B], dq/dh [B, R])`` (fits and
gradient by the envelope theorem or implicit differentiation, :mod:`nextstat.torch.backends`)
into a differentiable node; its backward is ``once_differentiable``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.special import log_ndtr, ndtr
from torch.autograd.function import once_differentiable

from nextstat.infer.hypotest import _TAIL_SERIES_T, _log_mills_sum, _series_log_ratio

_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_SQRT2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class _Transform:
    """Maps q (array or tensor [B]) to the returned value and its derivative d value / d q."""

    kind: Literal["q", "z", "cls"]
    sign: float
    eps: float

    def __call__(self, q):
        xp = np if isinstance(q, np.ndarray) else torch
        if self.kind == "q":
            return self.sign * q, xp.full_like(q, self.sign)
        z = xp.sqrt(q)
        dz = 0.5 / xp.sqrt(q + self.eps)
        if self.kind == "z":
            return self.sign * z, self.sign * dz
        # asymptotic CLs with q_obs = q_A (expected data): CLs = Phi(-z) / Phi(0)
        # torch's ndtr is 0 below -8.3 (1 + erf cancels): Phi from its logarithm there
        phi = ndtr(-z) if xp is np else torch.exp(torch.special.log_ndtr(-z))
        dens = _INV_SQRT2PI * xp.exp(-0.5 * q)
        return self.sign * 2.0 * phi, self.sign * (-2.0 * dens * dz)


def _observed_cls(q, qa, eps: float):
    r"""Observed asymptotic CLs from ``q~_mu`` on the data (``q``) and on the Asimov data (``qa``),
    arrays or tensors ``[B]``, and its partial derivatives: ``(cls, dcls/dq, dcls/dqa)``.

    The value is :func:`nextstat.infer.hypotest.asymptotic_pvalues` (``qtilde``; pyhf 0.7.6,
    arXiv:1007.1727 eqs. 65-66): with ``s = sqrt(q)``, ``a = sqrt(qa)``, ``t = s - a`` if
    ``s <= a`` or ``a = 0``, else ``t = (q - qa) / (2 a)``; ``CLsb = Phi(-(t + a))``,
    ``CLb = Phi(-t)``, ``CLs = CLsb / CLb``. Derivatives from
    ``d ln Phi(-x) / dx = -phi(x) / Phi(-x)`` (via ``log_ndtr``, finite in the tails; beyond
    t = 30, where CLb underflows, CLs and these ratios come from the tails' asymptotic series), with
    ``ds/dq = 1 / (2 sqrt(q + eps))`` and ``da/dqa = 1 / (2 sqrt(qa + eps))`` in the first branch
    (finite at ``q = 0``; the second branch has ``a > 0``). The function is C^1 across the branches.
    """
    if isinstance(q, np.ndarray):
        xp, log_phi_c = np, log_ndtr

        def where(c, x, y):
            return np.where(c, x, y)
    else:
        xp, log_phi_c = torch, torch.special.log_ndtr

        def where(c, x, y):
            if not isinstance(x, torch.Tensor):
                x = torch.full_like(y, x)
            return torch.where(c, x, y)
    # NumPy: overflow far beyond any tail (q ~ 1e300) gives inf / NaN derivatives, which the
    # session refuses (_require_finite_result), without warnings on the way
    with np.errstate(all="ignore"):
        return _observed_cls_parts(q, qa, eps, xp, log_phi_c, where)


def _observed_cls_parts(q, qa, eps, xp, log_phi_c, where):
    """The body of :func:`_observed_cls` on the array module ``xp``."""
    s, a = xp.sqrt(q), xp.sqrt(qa)
    low = (s <= a) | (a == 0)
    a1 = where(low, xp.ones_like(a), a)
    t = where(low, s - a, (s * s - a * a) / (2.0 * a1))
    # beyond t = 30 (CLb underflows past 37.5) both tails from their asymptotic series, as
    # nextstat.infer.hypotest._log_tail_ratio; each branch on values valid for it
    tail = t > _TAIL_SERIES_T
    tt = where(tail, t, xp.full_like(t, _TAIL_SERIES_T))
    xt = tt + a
    lt, lx = _log_mills_sum(tt, xp.log1p), _log_mills_sum(xt, xp.log1p)
    tp = where(tail, xp.zeros_like(t), t)
    x1 = tp + a
    # (logarithms below 30 too: torch's ndtr is 0 below -8.3, ndtr(-x1) / ndtr(-t) was 0 / 0)
    cls = xp.exp(where(tail, _series_log_ratio(tt, a, lt, lx, xp.log1p), log_phi_c(-x1) - log_phi_c(-tp)))
    # -d ln Phi(-x)/dx = phi(x) / Phi(-x); x / sum(x) from the series in the tail
    m1 = where(tail, xt * xp.exp(-lx), xp.exp(-0.5 * x1 * x1 - _LOG_SQRT2PI - log_phi_c(-x1)))
    m2 = where(tail, tt * xp.exp(-lt), xp.exp(-0.5 * tp * tp - _LOG_SQRT2PI - log_phi_c(-tp)))
    ds = 0.5 / xp.sqrt(q + eps)
    da = 0.5 / xp.sqrt(qa + eps)
    inv = 0.5 / a1
    dx_dq = where(low, ds, inv)  # the same for x1 and t
    r = q * inv / a1  # q / (2 a^2)
    dx1_dqa = where(low, 0.0, (0.5 - r) * inv)
    dt_dqa = where(low, -da, (-0.5 - r) * inv)
    dq = cls * (m2 - m1) * dx_dq
    dqa = cls * (m2 * dt_dqa - m1 * dx1_dqa)
    return cls, dq, dqa


class _ProfiledStatistic(torch.autograd.Function):
    """value = transform(q(h)); backward = grad_out * transform'(q) * dq/dh (envelope theorem).

    ``h`` is ``[R]`` (0-d output) or ``[B, R]`` (output ``[B]``) in the session's dtype and
    device; ``evaluate(h_detached) -> (q [B], dq/dh [B, R])`` (NumPy or tensors) runs the fits.
    """

    @staticmethod
    def forward(ctx, h, evaluate, transform):
        q, grad = evaluate(h.detach())
        value, dvdq = transform(q)
        if isinstance(value, np.ndarray):
            g = grad * dvdq[:, None]
            if h.ndim == 1:
                value, g = value[0], g[0]
            value = torch.from_numpy(np.asarray(value))
            g = torch.from_numpy(g)
            if h.dtype != torch.float64 or h.device.type != "cpu":
                value = value.to(device=h.device, dtype=h.dtype)
                g = g.to(device=h.device, dtype=h.dtype)
        else:
            g = grad * dvdq.unsqueeze(1)
            if h.ndim == 1:
                value, g = value[0], g[0]
        ctx.save_for_backward(g)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return (grad_out * g if g.ndim == 1 else grad_out.unsqueeze(1) * g), None, None


def apply_statistic(session, histogram, transform: _Transform, stat: int, mu_test: float,
                    batched: bool | None, backend: str | None = None) -> torch.Tensor:
    """``transform(statistic(histogram))`` as a differentiable tensor with the input's dtype and
    device (``[B]`` for a batch, 0-d otherwise); ``session`` a
    :class:`~nextstat.torch.session.ProfiledSession`, ``stat`` one of its statistic codes."""
    layout, h, _, (dtype, device) = session.prepare(histogram, batched=batched)
    if not h.is_contiguous():
        h = h.contiguous()

    def evaluate(hd):
        return session.evaluate(layout, hd, stat, mu_test, backend)

    out = _ProfiledStatistic.apply(h, evaluate, transform)
    if out.dtype != dtype or out.device != device:
        out = out.to(device=device, dtype=dtype)
    return out
