r"""The profiled discovery significance (and CLs) as a PyTorch loss, on CPU and CUDA.

A network's histogram ``h`` (the nominal yields of a sample, usually the signal) replaces that
sample's nominal in a HistFactory model; the loss is the profile-likelihood discovery
significance of the resulting model (arXiv:1007.1727):

.. math::

    q_0 = 2\,[\mathrm{NLL}(0, \hat{\hat\theta}) - \mathrm{NLL}(\hat\mu, \hat\theta)]
    \ \text{if}\ \hat\mu > 0\ \text{else}\ 0 \quad\text{(eq. 12)},\qquad Z_0 = \sqrt{q_0}.

**Data.** ``data="expected"`` (default): the Asimov data of the signal-plus-background
hypothesis, i.e. the expected main counts at ``mu = 1`` and the model's suggested init for the
other parameters, computed from the *current* histograms, with nominal auxiliary data; ``Z0``
is then the median expected significance, and it depends on ``h`` through the data too.
``data="observed"``: the workspace's observations (fixed). The *observed* CLs
(:func:`profiled_cls_loss` with ``data="observed"``) needs, besides the observed data, the
Asimov data of the asymptotic formulae (arXiv:1007.1727 sec. 3.8, eqs. 65-66), built as pyhf and
:func:`nextstat.hypotest` build them: the nuisance parameters ``theta_A`` of the conditional fit
at POI = 0 *to the observed data*, and the main and auxiliary data expected at ``theta_A``. Those
depend on ``h`` directly and through ``theta_A``; the gradient includes both (implicit
differentiation of the fit, see :func:`profiled_cls_loss`). The value equals
``nextstat.hypotest(model_with_h, mu, test_stat="qtilde").cls``; ``theta_A`` enters it at first
order (not through a stationary NLL), so it gets one extra exact Newton step after its fit:
with fits stopped at EDM ``1e-10`` (``hypotest``'s default) CLs moves by ~1e-8 relative.

**Fits and bounds.** Both fits (free, and conditional at ``mu = 0``) use the model's bounds and
fixed parameters, exactly as :func:`nextstat.hypotest` and pyhf do, so ``Z0`` equals
``nextstat.hypotest(model_with_h, 0.0).significance`` and pyhf's ``q0`` significance on the same
data. With pyhf's default POI bounds ``[0, 10]``, ``mu_hat >= 0``; where it lands on 0 both fits
coincide and ``q0 = 0`` (with zero gradient). A model whose POI lower bound is negative gets
``q0 = 0`` for ``mu_hat < 0`` as in eq. 12.

**Gradient (envelope theorem).** The fits run without autograd: with NumPy/Numba
(:func:`nextstat.engine.numba_core.newton_fit`) on the CPU, with the batched PyTorch Newton fit
(:func:`nextstat.engine.torch_fit.batched_fit`) on a GPU or for batches. At both optima the NLL
is stationary in the free parameters (parameters on a bound stay there), so
``dq0/dh = 2 [dNLL/dh (0, theta_hat_hat) - dNLL/dh (mu_hat, theta_hat)]`` at fixed parameters,
including the data's dependence on ``h`` for expected data. The rates are linear in ``h`` at fixed
parameters (``nu = other + sum_r h_r k_r``), so this is exact and cheap:
``dq0/dh_r = 2 [(k2 - k1) - n_b (k2/nu2_b - k1/nu1_b)] - 2 ln(nu2_b/nu1_b) kA`` with
``b`` the main bin of ``h_r``; tests check it against autograd through
:class:`~nextstat.engine.torch_model.TorchModel` and against finite differences. One
module-level ``autograd.Function`` carries it; its backward is ``once_differentiable`` (the
envelope theorem gives first derivatives only: second derivatives would need ``d theta / d h``).
The observed CLs adds ``d theta_A / d h = -H^{-1} d^2 NLL / (d theta d h)`` for the fit behind
its Asimov data (:func:`profiled_cls_loss`).

**Replaced nominals carry the sample's modifiers** (:mod:`nextstat.engine.overrides`): normsys,
lumi and normfactor factors unchanged; histosys deltas scaled with the nominal
(``delta_new = delta * h / nom_old``, 0 where ``nom_old = 0``); staterror and shapesys constraint
widths frozen at their workspace values.

**Z0 and eps.** ``Z0 = sqrt(q0)`` exactly; its gradient is ``dq0/dh / (2 sqrt(q0 + eps))``, finite
everywhere (no NaN at ``q0 = 0``, e.g. for a zero histogram).

**Warm starts.** The session keeps the last optima and starts the next fits there (per statistic,
set of replaced samples and batch size), so a training step usually costs 1-3 Newton iterations
per fit. Results do not depend on it beyond the fit tolerance; :meth:`ProfiledSession.reset`
forgets them.

**Devices.** ``"cpu"``: float64, Numba fits. ``"cuda"``: float64, everything on the GPU (the
histogram never leaves it; the host reads a few booleans per Newton iteration). ``"metal"`` /
``"mps"``: float32 (MPS has no float64), fits on the GPU with ``tol = 1e-5``: NLL differences
resolve to ~1e-7 of the NLL, so ``q0`` is good to about 1e-3 absolute and gradients are noisier;
untested (no Apple hardware in CI). ``"auto"``: CUDA when available, else CPU.

Example (2-bin model; checked against :func:`nextstat.hypotest` in CI):

>>> import numpy as np, torch, nextstat
>>> from nextstat.builders import build_workspace_from_histograms
>>> ws = build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 20.0]},
...                                      data=[55.0, 30.0])
>>> loss_fn = SignificanceLoss(nextstat.from_pyhf(ws), device="cpu")
>>> h = torch.tensor([5.0, 10.0], dtype=torch.float64, requires_grad=True)
>>> loss = loss_fn(h)
>>> loss.backward()
>>> z = nextstat.hypotest(nextstat.from_pyhf(ws), 0.0).significance
>>> bool(np.isclose(-loss.item(), z, rtol=1e-8)), bool((h.grad < 0).all())
(True, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import log_ndtr, ndtr
from torch import nn
from torch.autograd.function import once_differentiable

from nextstat.engine import numba_core as core
from nextstat.engine import overrides as ovr
from nextstat.engine.torch_fit import batched_fit
from nextstat.engine.torch_model import TorchModel

__all__ = [
    "ProfiledSession",
    "SignificanceLoss",
    "batch_profiled_q0_loss",
    "profiled_cls_loss",
    "profiled_q0_loss",
    "profiled_qmu_loss",
    "signal_jacobian",
    "signal_jacobian_numpy",
]

_DATA = ("expected", "observed")
_BACKENDS = ("auto", "numba", "torch")
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_SQRT2PI = 0.5 * math.log(2.0 * math.pi)
#: statistic code of :meth:`ProfiledSession.evaluate` for the observed CLs (q~_mu, observed data)
_STAT_CLS_OBS = 2


def _resolve_device(device: Any) -> torch.device:
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = device.lower()
        if name == "auto":
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        elif name in ("metal", "mps"):
            dev = torch.device("mps")
        else:
            try:
                dev = torch.device(name)
            except RuntimeError as err:
                raise ValueError(f'device: expected "auto", "cpu", "cuda", "metal" or "mps", got {device!r}') from err
    else:
        raise ValueError(f'device: expected "auto", "cpu", "cuda", "metal", "mps" or a torch.device, got {device!r}')
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError('device: "cuda" requested but torch.cuda.is_available() is False')
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError('device: "metal"/"mps" requested but torch.backends.mps.is_available() is False')
    elif dev.type != "cpu":
        raise ValueError(f'device: expected a CPU, CUDA or MPS device, got {dev}')
    return dev


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
        phi = (ndtr if xp is np else torch.special.ndtr)(-z)
        dens = _INV_SQRT2PI * xp.exp(-0.5 * q)
        return self.sign * 2.0 * phi, self.sign * (-2.0 * dens * dz)


def _observed_cls(q, qa, eps: float):
    r"""Observed asymptotic CLs from ``q~_mu`` on the data (``q``) and on the Asimov data (``qa``),
    arrays or tensors ``[B]``, and its partial derivatives: ``(cls, dcls/dq, dcls/dqa)``.

    The value is :func:`nextstat.infer.hypotest.asymptotic_pvalues` (``qtilde``; pyhf 0.7.6,
    arXiv:1007.1727 eqs. 65-66): with ``s = sqrt(q)``, ``a = sqrt(qa)``, ``t = s - a`` if
    ``s <= a`` or ``a = 0``, else ``t = (q - qa) / (2 a)``; ``CLsb = Phi(-(t + a))``,
    ``CLb = Phi(-t)``, ``CLs = CLsb / CLb``. Derivatives from
    ``d ln Phi(-x) / dx = -phi(x) / Phi(-x)`` (via ``log_ndtr``, finite in the tails), with
    ``ds/dq = 1 / (2 sqrt(q + eps))`` and ``da/dqa = 1 / (2 sqrt(qa + eps))`` in the first branch
    (finite at ``q = 0``; the second branch has ``a > 0``). The function is C^1 across the branches.
    """
    if isinstance(q, np.ndarray):
        xp, phi_c, log_phi_c = np, ndtr, log_ndtr

        def where(c, x, y):
            return np.where(c, x, y)
    else:
        xp, phi_c, log_phi_c = torch, torch.special.ndtr, torch.special.log_ndtr

        def where(c, x, y):
            if not isinstance(x, torch.Tensor):
                x = torch.full_like(y, x)
            return torch.where(c, x, y)
    s, a = xp.sqrt(q), xp.sqrt(qa)
    low = (s <= a) | (a == 0)
    a1 = where(low, xp.ones_like(a), a)
    t = where(low, s - a, (s * s - a * a) / (2.0 * a1))
    x1 = t + a
    cls = phi_c(-x1) / phi_c(-t)
    # -d ln Phi(-x)/dx = phi(x) / Phi(-x)
    m1 = xp.exp(-0.5 * x1 * x1 - _LOG_SQRT2PI - log_phi_c(-x1))
    m2 = xp.exp(-0.5 * t * t - _LOG_SQRT2PI - log_phi_c(-t))
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


class ProfiledSession:
    """Compiled model, device, fit settings and warm starts shared by the loss functions.

    Created by :class:`SignificanceLoss` (``loss_fn.session``); build one directly to use the
    functional API (:func:`batch_profiled_q0_loss`, :func:`signal_jacobian`, ...).

    Args:
        model: the compiled :class:`nextstat.Model`.
        signal_sample_name: the sample a plain tensor histogram replaces.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), ``"metal"``/``"mps"``, or a
            ``torch.device`` (module doc).
        data: ``"expected"`` (Asimov, from the current histograms) or ``"observed"``.
        eps: gradient guard of ``sqrt(q)`` (module doc).
        fit_backend: ``"auto"`` (Numba on the CPU for single histograms, else PyTorch),
            ``"numba"`` (CPU only) or ``"torch"`` (the GPU code path, also on the CPU).
        maxiter, tol: Newton iteration limit and EDM tolerance of each fit (tol default
            ``1e-12``; ``1e-5`` in float32).

    Attributes:
        model, device, dtype, tmodel (:class:`~nextstat.engine.torch_model.TorchModel`),
        signal_sample_name, data, n_bins (signal histogram length), n_params.
    """

    def __init__(self, model, signal_sample_name: str = "signal", *, device: Any = "auto",
                 data: Literal["expected", "observed"] = "expected", eps: float = 1e-12,
                 fit_backend: Literal["auto", "numba", "torch"] = "auto", maxiter: int = 200,
                 tol: float | None = None):
        from nextstat.model import Model

        if not isinstance(model, Model):
            raise ValueError(f"model: expected a nextstat.Model (nextstat.from_pyhf), got {type(model).__name__}")
        if model.poi_index is None:
            raise ValueError("model: a parameter of interest is required")
        if signal_sample_name not in model.samples:
            raise ValueError(f"signal_sample_name: expected one of {model.samples}, got {signal_sample_name!r}")
        if data not in _DATA:
            raise ValueError(f'data: expected "expected" or "observed", got {data!r}')
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps: expected a finite float > 0, got {eps!r}")
        if fit_backend not in _BACKENDS:
            raise ValueError(f"fit_backend: expected one of {_BACKENDS}, got {fit_backend!r}")
        if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
            raise ValueError(f"maxiter: expected an integer >= 1, got {maxiter!r}")
        self.device = _resolve_device(device)
        if fit_backend == "numba" and self.device.type != "cpu":
            raise ValueError(f'fit_backend: "numba" runs on the CPU only, but device is {self.device}')
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.model = model
        self.signal_sample_name = signal_sample_name
        self.data = data
        self.eps = float(eps)
        self.fit_backend = ("numba" if self.device.type == "cpu" else "torch") if fit_backend == "auto" else fit_backend
        self.maxiter = maxiter
        self.tol = (1e-12 if self.dtype == torch.float64 else 1e-5) if tol is None else float(tol)
        self.tmodel = TorchModel(model, device=self.device, dtype=self.dtype)
        self.n_params = model.n_params
        self.n_bins = int(ovr.sample_flat_bins(model, signal_sample_name).shape[0])
        # NumPy side (Numba backend)
        b = model.suggested_bounds()
        self._lo = np.ascontiguousarray(b[:, 0])
        self._hi = np.ascontiguousarray(b[:, 1])
        self._fixed = model.fixed_params.copy()
        self._fixed_cond = self._fixed.copy()
        self._fixed_cond[model.poi_index] = True
        self._init = model.suggested_init()
        self._bounds_t = torch.stack([self.tmodel.lo, self.tmodel.hi], -1)
        self._fixed_cond_t = self._fixed_cond_tensor()
        self._replacements: dict[tuple[str, ...], ovr.NominalReplacement] = {}
        self._plans: dict[tuple, tuple] = {}
        self._sizes: dict[str, int] = {}
        self._warm: dict[tuple, tuple] = {}

    def _fixed_cond_tensor(self) -> torch.Tensor:
        f = self.tmodel.fixed.clone()
        f[self.model.poi_index] = True
        return f

    def __repr__(self) -> str:
        return (f"ProfiledSession({self.model!r}, signal_sample_name={self.signal_sample_name!r}, "
                f"device={self.device}, dtype={self.dtype}, data={self.data!r}, fit_backend={self.fit_backend!r})")

    def reset(self) -> None:
        """Forget the warm starts (the next fits start at the model's suggested init)."""
        self._warm.clear()

    def sample_size(self, sample: str) -> int:
        """Histogram length of ``sample`` (its bins over the channels where it exists)."""
        size = self._sizes.get(sample)
        if size is None:
            size = self._sizes[sample] = int(ovr.sample_flat_bins(self.model, sample).shape[0])
        return size

    def _replacement(self, samples: tuple[str, ...]) -> ovr.NominalReplacement:
        if samples not in self._replacements:
            self._replacements[samples] = ovr.nominal_replacement(self.model, samples)
        return self._replacements[samples]

    def _asimov_poi(self, stat: int) -> float:
        return 1.0 if stat == ovr.STAT_Q0 else 0.0

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, samples: tuple[str, ...], h: torch.Tensor, stat: int = ovr.STAT_Q0,
                 mu_test: float = 0.0, backend: str | None = None):
        """Run the fits for the concatenated histograms ``h`` (``[R]`` or ``[B, R]``, session
        dtype and device, no graph) of ``samples`` (model order).

        Returns ``(q [B], dq/dh [B, R])`` (B = 1 for ``[R]``): NumPy arrays from the Numba
        backend (single histograms), tensors on the device from the PyTorch backend. For the
        observed CLs (``stat = _STAT_CLS_OBS``, observed data): ``(CLs [B], dCLs/dh [B, R])``.
        ``backend`` overrides the session's ``fit_backend`` (``"torch"`` for batches).
        """
        backend = backend or self.fit_backend
        single = h.ndim == 1 or h.shape[0] == 1
        hb = h if h.ndim == 2 else h.unsqueeze(0)
        # float64 overflow for huge yields surfaces as a non-finite result, refused below
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if stat == _STAT_CLS_OBS:
                out = (self._evaluate_cls_numba(samples, h, mu_test) if backend == "numba" and single
                       else self._evaluate_cls_torch(samples, hb, mu_test))
            elif backend == "numba" and single:
                out = self._evaluate_numba(samples, h, stat, mu_test)
            else:
                out = self._evaluate_torch(samples, hb, stat, mu_test)
        return _require_finite_result(*out)

    def _numba_plan(self, samples, stat, mu_test):
        key = (samples, stat, mu_test)
        plan = self._plans.get(key)
        if plan is None:
            m = self.model
            rep = self._replacement(samples)
            theta_a = self._init.copy()
            theta_a[m.poi_index] = self._asimov_poi(stat)
            head = (rep.rep_flat, rep.rep_gb, rep.hs_pos, rep.hs_rix, rep.unit_up, rep.unit_dn, m.arrays,
                    rep.unit_arrays, m.aux_arrays, m.aux_data, m.main_data, self.data == "observed", theta_a)
            tail = (self._lo, self._hi, self._fixed, self._fixed_cond, m.poi_index, float(mu_test), stat,
                    self.maxiter, self.tol)
            plan = self._plans[key] = (head, tail)
        return plan

    def _evaluate_numba(self, samples, h, stat, mu_test):
        head, tail = self._numba_plan(samples, stat, mu_test)
        key = ("numba", samples, stat, mu_test)
        tf0, tc0 = self._warm.get(key) or (self._init, self._init)
        hn = h.numpy().reshape(-1)
        q, grad, tf, tc, sf, sc, _, _ = ovr.profiled_statistic(hn, *head, tf0, tc0, *tail)
        if sf != core.FIT_CONVERGED or sc != core.FIT_CONVERGED:
            self._fit_problem(key, sf, sc)
        self._warm[key] = (tf, tc)
        return np.array([q]), grad.reshape(1, -1)

    def _fit_problem(self, key, sf, sc):
        if sf == ovr.STATUS_NONFINITE_INPUT:
            raise ValueError("histogram: expected finite values, got NaN or inf")
        if sf == core.FIT_NONFINITE or sc == core.FIT_NONFINITE:
            self._warm.pop(key, None)
            raise ValueError("histogram: the expected rate is <= 0 in a bin with data for these histograms; "
                             "the likelihood is undefined")
        warnings.warn(f"profiled fit did not converge (status free={sf}, conditional={sc}); the statistic "
                      "and its gradient are approximate", RuntimeWarning, stacklevel=5)

    # ------------------------------------------------------------------ observed CLs
    def _statuses_problem(self, key, status):
        """Raise or warn for the fit statuses of the observed CLs (:func:`ovr.observed_cls_statistics`)."""
        status = [int(x) for x in status]
        if ovr.STATUS_NONFINITE_INPUT in status:
            raise ValueError("histogram: expected finite values, got NaN or inf")
        if core.FIT_NONFINITE in status:
            self._warm.pop(key, None)
            raise ValueError("histogram: the expected rate is <= 0 in a bin with data for these histograms; "
                             "the likelihood is undefined")
        if any(x != core.FIT_CONVERGED for x in status):
            names = ("free", "conditional", "asimov", "asimov free", "asimov conditional")
            warnings.warn("profiled fit did not converge (status " + ", ".join(f"{n}={x}" for n, x in zip(names, status))
                          + "); the statistic and its gradient are approximate", RuntimeWarning, stacklevel=5)

    def _evaluate_cls_numba(self, samples, h, mu_test):
        m = self.model
        rep = self._replacement(samples)
        key = ("numba-cls", samples, mu_test)
        warm = self._warm.get(key) or (self._init,) * 4
        q, g_q, qa, g_qa, thetas, status = ovr.observed_cls_statistics(
            h.numpy().reshape(-1), rep.rep_flat, rep.rep_gb, rep.hs_pos, rep.hs_rix, rep.unit_up, rep.unit_dn,
            m.arrays, rep.unit_arrays, m.aux_arrays, m.aux_data, m.main_data, *warm, self._lo, self._hi,
            self._fixed, self._fixed_cond, m.poi_index, float(mu_test), self.maxiter, self.tol)
        self._statuses_problem(key, status)
        self._warm[key] = (thetas[0].copy(), thetas[1].copy(), thetas[2].copy(), thetas[4].copy())
        cls, dq, dqa = _observed_cls(np.array([q]), np.array([qa]), self.eps)
        return cls, dq[:, None] * g_q.reshape(1, -1) + dqa[:, None] * g_qa.reshape(1, -1)

    def _expected_aux(self, theta: torch.Tensor) -> torch.Tensor:
        """Expected auxiliary data ``[N, n_aux]`` (``Model.expected_auxdata``), differentiable."""
        tm = self.tmodel
        x = theta[:, tm._aux_par]
        return torch.where(tm._aux_gauss, x, x * tm._aux_tau)

    @staticmethod
    def _t_stat(tm, theta_c, theta_f, main, aux, ov) -> torch.Tensor:
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

    def _batched_fit_checked(self, key, data, init, fixed, ov):
        """:func:`batched_fit` that raises on an undefined likelihood (forgetting the warm
        start ``key``) and warns where a fit did not converge; returns theta."""
        res = batched_fit(self.tmodel, data, init, fixed, self._bounds_t, nominal_overrides=ov,
                          maxiter=self.maxiter, tol=self.tol)
        if not bool(torch.isfinite(res.nll).all()):
            self._warm.pop(key, None)
            raise ValueError("histogram: the expected rate is <= 0 in a bin with data for these histograms; "
                             "the likelihood is undefined")
        if not bool(res.converged.all()):
            warnings.warn("profiled fit did not converge for some histograms; the statistic and its gradient "
                          "are approximate", RuntimeWarning, stacklevel=5)
        return res.theta

    def _newton_polish(self, theta, data, ov, fixed):
        """:func:`nextstat.engine.overrides.newton_polish` for a batch ``[B, P]``."""
        tm = self.tmodel
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

    def _evaluate_cls_torch(self, samples, h, mu_test):
        """Observed CLs on the PyTorch backend: batched fits, then the gradient by autograd
        through :class:`TorchModel` of a surrogate with the same value and first derivatives:
        the statistics at the fixed optima (envelope theorem), with ``theta_A`` replaced by
        ``theta_A - H^-1 [g(theta_A; h) - g(theta_A; h0)]`` on the free parameters (``g`` the
        analytic NLL gradient on the observed data, ``H`` the exact Hessian, detached), whose
        derivative in ``h`` is the implicit ``d theta_A / d h``."""
        tm = self.tmodel
        m = self.model
        B, P, poi = h.shape[0], self.n_params, m.poi_index
        if not bool(torch.isfinite(h).all()):
            raise ValueError("histogram: expected finite values, got NaN or inf")
        ov = tm.replaced(samples, h)
        main_obs = tm.main_data.expand(B, -1)
        aux_obs = tm.aux_data.expand(B, -1)
        data_obs = torch.cat([main_obs, aux_obs], 1)
        key = ("torch-cls", samples, mu_test, B)
        init = tm.init.expand(B, P)
        tf0, tc0, ta0, tac0 = (t.clone() for t in self._warm.get(key, (init,) * 4))
        tc0[:, poi] = mu_test
        ta0[:, poi] = 0.0
        tac0[:, poi] = mu_test
        ar = torch.arange(B, device=self.device)
        fixed_f = tm.fixed.expand(B, P)
        fixed_c = self._fixed_cond_t.expand(B, P)
        i3 = torch.cat([ar] * 3)
        th = self._batched_fit_checked(key, data_obs[i3], torch.cat([tf0, tc0, ta0]),
                                       torch.cat([fixed_f, fixed_c, fixed_c]), ov.select(i3))
        tf, tc, ta = th[:B], th[B:2 * B], th[2 * B:]
        with torch.no_grad():
            ta = self._newton_polish(ta, data_obs, ov, fixed_c)
        data_a = torch.cat([tm.rates(ta, ov), self._expected_aux(ta)], 1)
        i2 = torch.cat([ar] * 2)
        th2 = self._batched_fit_checked(key, data_a[i2], torch.cat([ta, tac0]), torch.cat([fixed_f, fixed_c]),
                                        ov.select(i2))
        taf, tac = th2[:B], th2[B:]
        self._warm[key] = (tf, tc, ta, tac)
        with torch.no_grad():
            H = tm.nll_grad_hess(ta, data_obs, ov, exact=True)[3]
        free = ~fixed_c & (ta > tm.lo) & (ta < tm.hi)
        m2 = free.unsqueeze(-1) & free.unsqueeze(-2)
        Hm = torch.where(m2, H, torch.zeros_like(H)) + torch.diag_embed((~free).to(H.dtype))
        Hinv = torch.linalg.pinv(Hm, hermitian=True)
        with torch.enable_grad():
            hg = h.detach().requires_grad_(True)
            ovg = tm.replaced(samples, hg)
            t_obs = self._t_stat(tm, tc, tf, main_obs, aux_obs, ovg)
            g = tm.nll_grad_hess(ta, data_obs, ovg, exact=False)[1]
            rhs = torch.where(free, g - g.detach(), torch.zeros_like(g))
            ta_s = ta - (Hinv @ rhs.unsqueeze(-1)).squeeze(-1)
            t_a = self._t_stat(tm, tac, taf, tm.rates(ta_s, ovg), self._expected_aux(ta_s), ovg)
            keep_o = (tf[:, poi] <= mu_test) & (t_obs > 0)
            keep_a = (taf[:, poi] <= mu_test) & (t_a > 0)
            zero = torch.zeros_like(t_obs)
            q = torch.where(keep_o, t_obs, zero)
            qa = torch.where(keep_a, t_a, zero)
            cls, dq, dqa = _observed_cls(q.detach(), qa.detach(), self.eps)
            (grad,) = torch.autograd.grad((dq * q + dqa * qa).sum(), hg, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(h)
        return cls, grad

    def _evaluate_torch(self, samples, h, stat, mu_test):
        tm = self.tmodel
        m = self.model
        B, P, poi = h.shape[0], self.n_params, m.poi_index
        if not bool(torch.isfinite(h).all()):
            raise ValueError("histogram: expected finite values, got NaN or inf")
        _, d = tm.replacement(samples)
        ov = tm.replaced(samples, h)
        theta_a = tm.init.clone()
        theta_a[poi] = self._asimov_poi(stat)
        if self.data == "expected":
            main = tm.rates(theta_a.expand(B, P), ov)
        else:
            main = tm.main_data.expand(B, -1)
        data = torch.cat([main, tm.aux_data.expand(B, -1)], 1)
        key = ("torch", samples, stat, mu_test, B)
        tf0, tc0 = self._warm.get(key, (tm.init.expand(B, P), tm.init.expand(B, P)))
        tc0 = tc0.clone()
        tc0[:, poi] = mu_test
        pair = torch.cat([torch.arange(B, device=self.device)] * 2)
        ov2 = ov.select(pair)
        fixed2 = torch.cat([tm.fixed.expand(B, P), self._fixed_cond_t.expand(B, P)])
        theta = self._batched_fit_checked(key, data[pair], torch.cat([tf0, tc0]), fixed2, ov2)
        tf, tc = theta[:B], theta[B:]
        self._warm[key] = (tf, tc)
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
        keep = (mu_hat > 0) if stat == ovr.STAT_Q0 else (mu_hat <= mu_test)
        keep = keep & (t > 0)
        q = torch.where(keep, t, torch.zeros_like(t))
        gb = d["rep_gb"]
        n_r, nu1_r, nu2_r = main[:, gb], nu1[:, gb], nu2[:, gb]
        one_r = torch.ones_like(n_r)
        pos_r = n_r > 0
        frac = torch.where(pos_r, n_r * (k2 / torch.where(pos_r, nu2_r, one_r) - k1 / torch.where(pos_r, nu1_r, one_r)),
                           torch.zeros_like(n_r))
        grad = 2.0 * (k2 - k1 - frac)
        if self.data == "expected":
            grad = grad - 2.0 * lr[:, gb] * kA
        grad = torch.where(keep.unsqueeze(1), grad, torch.zeros_like(grad))
        return q, grad

    # ------------------------------------------------------------------ inputs
    def prepare(self, histogram, *, batched: bool | None = None):
        """Validate a histogram input and concatenate it for :meth:`evaluate`.

        Args:
            histogram: the signal histogram ``[n_bins]`` / ``[B, n_bins]``, or a mapping
                ``{sample: [n_s] or [B, n_s]}`` (replacing those samples' nominals).
            batched: require a batch axis (True), forbid it (False) or accept both (None).

        Returns:
            ``(samples, h, batched, (dtype, device) of the input)`` with ``h`` ``[R]`` or
            ``[B, R]`` in the session's dtype and device (differentiable w.r.t. the input).
        """
        if isinstance(histogram, Mapping):
            if not histogram:
                raise ValueError("histogram: expected a tensor or a non-empty mapping sample -> tensor, got {}")
            items = {}
            for s, t in histogram.items():
                if s not in self.model.samples:
                    raise ValueError(f"histogram: unknown sample {s!r}; expected names among {self.model.samples}")
                items[s] = self._check(f"histogram[{s!r}]", t, self.sample_size(s))
            samples = tuple(s for s in self.model.samples if s in items)
        else:
            samples = (self.signal_sample_name,)
            items = {samples[0]: self._check("histogram", histogram, self.n_bins)}
        ndims = {t.ndim for t in items.values()}
        if len(ndims) != 1:
            raise ValueError("histogram: mix of batched ([B, n]) and unbatched ([n]) tensors in the mapping")
        is_batched = ndims.pop() == 2
        first = items[samples[0]]
        if batched is True and not is_batched:
            raise ValueError(f"histograms: expected a batch [B, n], got shape {list(first.shape)}")
        if batched is False and is_batched:
            raise ValueError(f"histogram: expected an unbatched shape [n], got {list(first.shape)}")
        if is_batched and len({t.shape[0] for t in items.values()}) != 1:
            raise ValueError(f"histogram: batch sizes differ across samples: {[t.shape[0] for t in items.values()]}")
        io = (first.dtype, first.device)
        if len(samples) == 1:
            h = first
        else:
            h = torch.cat([items[s].to(self.dtype) for s in samples], -1)
        if h.dtype != self.dtype or h.device != self.device:
            h = h.to(device=self.device, dtype=self.dtype)
        return samples, h, is_batched, io

    def _check(self, where: str, t, size: int) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: expected a torch.Tensor, got {type(t).__name__} "
                             "(convert with nextstat.torch.as_tensor)")
        if not t.is_floating_point():
            raise ValueError(f"{where}: expected a floating dtype (float64), got {t.dtype}")
        if t.device != self.device and not (self.device.type == "mps" and t.device.type == "cpu"):
            raise ValueError(f"{where}: expected device {self.device} (the session's), got {t.device}")
        if t.ndim not in (1, 2) or t.shape[-1] != size:
            raise ValueError(f"{where}: expected shape [{size}] or [B, {size}], got {list(t.shape)}")
        _require_yields(where, t)
        return t


def _require_yields(where: str, t: torch.Tensor) -> None:
    """Refuse histogram values that are not yields: NaN, inf or < 0 (one device sync)."""
    d = t.detach()
    ok = (d >= 0) & (d < math.inf)  # False for NaN
    if not bool(ok.all()):
        idx = tuple(int(i) for i in torch.nonzero(~ok)[0])
        raise ValueError(f"{where}: expected finite yields >= 0, got {float(d[idx])!r} at index {list(idx)}")


def _require_finite_result(q, grad):
    """``(q, grad)`` of :meth:`ProfiledSession.evaluate`, or ValueError where either is not finite
    (float64 overflow: yields too large)."""
    xp = np if isinstance(q, np.ndarray) else torch
    if not bool(xp.isfinite(q).all() & xp.isfinite(grad).all()):
        raise ValueError("histogram: the statistic or its gradient is not finite (float64 overflow) for these "
                         "histograms; their yields are too large")
    return q, grad


def _apply(session: ProfiledSession, histogram, transform: _Transform, stat: int, mu_test: float,
           batched: bool | None, backend: str | None = None):
    samples, h, _, (dtype, device) = session.prepare(histogram, batched=batched)
    if not h.is_contiguous():
        h = h.contiguous()

    def evaluate(hd):
        return session.evaluate(samples, hd, stat, mu_test, backend)

    out = _ProfiledStatistic.apply(h, evaluate, transform)
    if out.dtype != dtype or out.device != device:
        out = out.to(device=device, dtype=dtype)
    return out


class SignificanceLoss(nn.Module):
    r"""Profiled discovery significance as a loss: ``loss_fn(histogram) = -Z0`` (module doc).

    Args:
        model: compiled HistFactory model (:func:`nextstat.from_pyhf`).
        signal_sample_name: the sample whose nominal the histogram replaces.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"metal"`` /
            ``"mps"`` (float32; see the module doc for the cost), or a ``torch.device``.
        negate: return ``-Z0`` (for minimisation; default) or ``Z0``.
        eps: guard of the ``sqrt`` gradient: ``dZ0/dq0 = 1 / (2 sqrt(q0 + eps))``.
        data: ``"expected"`` (Asimov data at mu = 1 from the current histograms; default) or
            ``"observed"``.
        fit_backend, maxiter, tol: see :class:`ProfiledSession`.

    Shapes:
        * input: the signal histogram ``[n_bins]`` (float64 recommended; float32 is computed
          in float64 and returned as float32), on the session's device; or ``[B, n_bins]``
          (a batch, fitted together); or a mapping ``{sample: [n_s] or [B, n_s]}``
          replacing several samples' nominals (backgrounds produced by the network are then
          differentiated too); ``n_s`` = the sample's bins over the channels where it exists,
          concatenated in channel order (channels sorted by name).
        * output: 0-d tensor (``[B]`` for a batch), with the input's dtype and device.

    Attributes:
        n_bins: length of the signal histogram. n_params: number of model parameters (POI
        included). session: the :class:`ProfiledSession` (compiled model, device, warm starts).
        The device is fixed at construction (the module has no parameters or buffers, so
        ``.to(...)`` does not move the session: build a new loss for another device).

    Raises:
        ValueError: invalid arguments (in ``__init__``), or a histogram of the wrong type,
            dtype, shape or device, with values that are not yields (NaN, inf or < 0), giving
            an undefined likelihood, or so large that the statistic or its gradient overflows
            float64 (in ``forward``).
    """

    def __init__(self, model, signal_sample_name: str = "signal", device: Any = "auto", negate: bool = True,
                 eps: float = 1e-12, *, data: Literal["expected", "observed"] = "expected",
                 fit_backend: Literal["auto", "numba", "torch"] = "auto", maxiter: int = 200,
                 tol: float | None = None):
        super().__init__()
        if not isinstance(negate, bool):
            raise ValueError(f"negate: expected a bool, got {negate!r}")
        self.session = ProfiledSession(model, signal_sample_name, device=device, data=data, eps=eps,
                                       fit_backend=fit_backend, maxiter=maxiter, tol=tol)
        self.negate = negate
        self.eps = self.session.eps
        self._loss = _Transform("z", -1.0 if negate else 1.0, self.session.eps)
        self._z = _Transform("z", 1.0, self.session.eps)
        self._q = _Transform("q", 1.0, self.session.eps)

    @property
    def n_bins(self) -> int:
        return self.session.n_bins

    @property
    def n_params(self) -> int:
        return self.session.n_params

    def extra_repr(self) -> str:
        s = self.session
        return (f"signal_sample_name={s.signal_sample_name!r}, n_bins={s.n_bins}, n_params={s.n_params}, "
                f"device={s.device}, data={s.data!r}, negate={self.negate}, eps={self.eps:g}")

    def forward(self, histogram) -> torch.Tensor:
        """``-Z0`` (``Z0`` with ``negate=False``) of the model with ``histogram`` as nominal."""
        return _apply(self.session, histogram, self._loss, ovr.STAT_Q0, 0.0, None)

    def z0(self, histogram) -> torch.Tensor:
        """Discovery significance ``Z0 = sqrt(q0)`` (differentiable, never negated)."""
        return _apply(self.session, histogram, self._z, ovr.STAT_Q0, 0.0, None)

    def q0(self, histogram) -> torch.Tensor:
        """Discovery test statistic ``q0`` (differentiable)."""
        return _apply(self.session, histogram, self._q, ovr.STAT_Q0, 0.0, None)


def profiled_q0_loss(histogram, session: ProfiledSession) -> torch.Tensor:
    """``q0`` of one histogram (or mapping; see :class:`SignificanceLoss`), differentiable."""
    return _apply(session, histogram, _Transform("q", 1.0, session.eps), ovr.STAT_Q0, 0.0, None)


def batch_profiled_q0_loss(histograms, session: ProfiledSession) -> list[torch.Tensor]:
    """``q0`` of ``B`` histograms, fitted together in one batched PyTorch Newton fit.

    Args:
        histograms: ``[B, n_bins]`` signal histograms, or a mapping ``{sample: [B, n_s]}``.
        session: e.g. ``loss_fn.session``.

    Returns:
        list of ``B`` 0-d tensors (``q0``, not negated), each differentiable w.r.t. its
        histogram (they share one graph node).
    """
    out = _apply(session, histograms, _Transform("q", 1.0, session.eps), ovr.STAT_Q0, 0.0, True, "torch")
    return list(out.unbind(0))


def profiled_qmu_loss(histogram, session: ProfiledSession, mu_test: float = 1.0) -> torch.Tensor:
    r"""The upper-limit statistic ``q~_mu`` at ``mu_test`` (arXiv:1007.1727 eq. 16), differentiable.

    ``q~_mu = 2 [NLL(mu_test, theta_hat_hat) - NLL(mu_hat, theta_hat)]`` if ``mu_hat <= mu_test``
    else 0, with the model's bounds (POI >= 0, as pyhf's ``qtilde``). With
    ``data="expected"`` the data are the background-only Asimov data (POI = 0, suggested init
    for the rest, from the current histograms), so this is the median expected ``q~_mu``.
    Same machinery (fits, envelope gradient, warm starts) as :class:`SignificanceLoss`.
    """
    mu_test = _mu(mu_test)
    return _apply(session, histogram, _Transform("q", 1.0, session.eps), ovr.STAT_QMU, mu_test, None)


def profiled_cls_loss(histogram, session: ProfiledSession, mu_test: float = 1.0) -> torch.Tensor:
    r"""Asymptotic ``CLs`` at ``mu_test`` with the ``qtilde`` statistic, differentiable.

    The value is ``nextstat.hypotest(model_with_h, mu_test, test_stat="qtilde").cls`` on the
    session's data (``histogram``: a tensor ``[n_bins]`` / ``[B, n_bins]`` or a mapping
    ``{sample: histogram}``, as for :class:`SignificanceLoss`), up to the fits' tolerance (for
    observed data ~1e-8 relative with ``hypotest``'s default EDM tolerance of 1e-10, ~1e-10 with
    its fits run to convergence; tests check both, and pyhf to 1e-6). Minimise it to maximise
    the exclusion power.

    * ``data="expected"``: the median expected CLs. On the background-only Asimov data (POI = 0,
      suggested init for the rest, from the current histograms) the observed statistic equals the
      Asimov one, so with ``z = sqrt(q~_mu)`` (:func:`profiled_qmu_loss`)
      ``CLs = Phi(-z) / Phi(0) = 2 Phi(-z)``
      (:func:`nextstat.infer.hypotest.asymptotic_pvalues` with ``t = 0``).
    * ``data="observed"``: the observed CLs of pyhf's / nextstat's asymptotic calculator
      (arXiv:1007.1727 sec. 3.8 and eqs. 65-66; :mod:`nextstat.infer.hypotest`): ``q_obs = q~_mu``
      on the observed data; ``q_A = q~_mu`` on the Asimov data ``D_A = (nu(theta_A; h),
      expected auxdata(theta_A))`` with ``theta_A`` the conditional fit at POI = 0 on the observed
      data; then ``CLs = CLsb / CLb`` from ``sqrt(q_obs)`` and ``sqrt(q_A)``
      (:func:`nextstat.infer.hypotest.asymptotic_pvalues`, ``qtilde`` branch). Five fits per
      evaluation (observed free and conditional, ``theta_A``, Asimov free and conditional),
      warm-started across calls.

    Gradient (observed data): ``dq_obs/dh`` by the envelope theorem (the observed data do not
    depend on ``h``); ``dq_A/dh`` by the envelope theorem at fixed Asimov data plus the
    dependence of ``D_A`` on ``h``: explicitly through the rates at fixed ``theta_A`` and
    through ``theta_A`` itself, ``d theta_A / d h = -H^{-1} d^2 NLL_obs / (d theta d h)``
    (implicit function theorem at the optimum; ``H`` the exact Hessian over the free
    parameters, parameters fixed or on a bound held); then the chain rule through the CLs
    formula, with the ``eps`` guard ``d sqrt(q)/dq = 1 / (2 sqrt(q + eps))`` in its first branch
    (finite at ``q = 0``).
    Numba backend: :func:`nextstat.engine.overrides.observed_cls_statistics` (an adjoint solve
    ``H z = Jext^T w`` and per-bin mixed derivatives). PyTorch backend (CUDA, batches): autograd
    through :class:`~nextstat.engine.torch_model.TorchModel` of a surrogate with the same first
    derivatives. When ``h`` is a signal scaled by the POI, ``theta_A`` (fitted at POI = 0) does
    not depend on it; the implicit term matters for histograms of samples present at POI = 0
    (backgrounds in a mapping). Edge cases: the statistics are clipped at 0 (``mu_hat >
    mu_test`` or rounding) with zero gradient, and ``CLs = 1`` where ``q_A = 0``.
    """
    mu_test = _mu(mu_test)
    if session.data == "observed":
        return _apply(session, histogram, _Transform("q", 1.0, session.eps), _STAT_CLS_OBS, mu_test, None)
    return _apply(session, histogram, _Transform("cls", 1.0, session.eps), ovr.STAT_QMU, mu_test, None)


def _mu(mu_test: Any) -> float:
    if isinstance(mu_test, bool) or not isinstance(mu_test, (int, float)) or not math.isfinite(mu_test):
        raise ValueError(f"mu_test: expected a finite float, got {mu_test!r}")
    return float(mu_test)


def signal_jacobian(histogram, session: ProfiledSession) -> torch.Tensor:
    """``d q0 / d histogram`` without autograd, as a tensor with the histogram's dtype and device.

    Args:
        histogram: the signal histogram ``[n_bins]`` (or ``[B, n_bins]``, or a mapping: then a
            mapping of the same keys is returned).
        session: e.g. ``loss_fn.session``.
    """
    samples, h, is_batched, (dtype, device) = session.prepare(histogram, batched=None)
    with torch.no_grad():
        _, grad = session.evaluate(samples, h.detach().contiguous(), ovr.STAT_Q0, 0.0)
    if isinstance(grad, np.ndarray):
        grad = torch.from_numpy(grad)
    grad = grad.to(device=device, dtype=dtype)
    if not is_batched:
        grad = grad[0]
    if not isinstance(histogram, Mapping):
        return grad
    out, start = {}, 0
    for s in samples:
        n = session.sample_size(s)
        out[s] = grad[..., start:start + n]
        start += n
    return out


def signal_jacobian_numpy(histogram, session: ProfiledSession):
    """:func:`signal_jacobian` as NumPy array(s); accepts array-likes (converted to float64
    tensors on the session's device)."""
    if isinstance(histogram, Mapping):
        histogram = {k: _as_tensor(v, session) for k, v in histogram.items()}
    else:
        histogram = _as_tensor(histogram, session)
    g = signal_jacobian(histogram, session)
    if isinstance(g, dict):
        return {k: v.detach().cpu().numpy() for k, v in g.items()}
    return g.detach().cpu().numpy()


def _as_tensor(x, session: ProfiledSession) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    from nextstat.torch.interop import as_tensor

    return as_tensor(x, dtype=session.dtype, device=session.device)
