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
(:meth:`Fitter.newton <nextstat.engine.fitter.Fitter.newton>`) on the CPU, with the batched PyTorch Newton fit
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
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nextstat.engine import overrides as ovr
from nextstat.torch.function import _Transform, apply_statistic
from nextstat.torch.inputs import split_gradient
from nextstat.torch.session import STAT_CLS_OBS, STAT_VARIANCE, ProfiledSession

__all__ = [
    "ProfiledSession",
    "SignificanceLoss",
    "batch_profiled_q0_loss",
    "profiled_cls_loss",
    "profiled_poi_variance_loss",
    "profiled_q0_loss",
    "profiled_qmu_loss",
    "signal_jacobian",
    "signal_jacobian_numpy",
]


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
        return apply_statistic(self.session, histogram, self._loss, ovr.STAT_Q0, 0.0, None)

    def z0(self, histogram) -> torch.Tensor:
        """Discovery significance ``Z0 = sqrt(q0)`` (differentiable, never negated)."""
        return apply_statistic(self.session, histogram, self._z, ovr.STAT_Q0, 0.0, None)

    def q0(self, histogram) -> torch.Tensor:
        """Discovery test statistic ``q0`` (differentiable)."""
        return apply_statistic(self.session, histogram, self._q, ovr.STAT_Q0, 0.0, None)


def profiled_q0_loss(histogram, session: ProfiledSession) -> torch.Tensor:
    """``q0`` of one histogram (or mapping; see :class:`SignificanceLoss`), differentiable."""
    return apply_statistic(session, histogram, _Transform("q", 1.0, session.eps), ovr.STAT_Q0, 0.0, None)


def batch_profiled_q0_loss(histograms, session: ProfiledSession) -> list[torch.Tensor]:
    """``q0`` of ``B`` histograms, fitted together in one batched PyTorch Newton fit.

    Args:
        histograms: ``[B, n_bins]`` signal histograms, or a mapping ``{sample: [B, n_s]}``.
        session: e.g. ``loss_fn.session``.

    Returns:
        list of ``B`` 0-d tensors (``q0``, not negated), each differentiable w.r.t. its
        histogram (they share one graph node).
    """
    out = apply_statistic(session, histograms, _Transform("q", 1.0, session.eps), ovr.STAT_Q0, 0.0, True, "torch")
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
    return apply_statistic(session, histogram, _Transform("q", 1.0, session.eps), ovr.STAT_QMU, mu_test, None)


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
        return apply_statistic(session, histogram, _Transform("q", 1.0, session.eps), STAT_CLS_OBS, mu_test, None)
    return apply_statistic(session, histogram, _Transform("cls", 1.0, session.eps), ovr.STAT_QMU, mu_test, None)


def _mu(mu_test: Any) -> float:
    if isinstance(mu_test, bool) or not isinstance(mu_test, (int, float)) or not math.isfinite(mu_test):
        raise ValueError(f"mu_test: expected a finite float, got {mu_test!r}")
    return float(mu_test)


def signal_jacobian(histogram, session: ProfiledSession):
    """``d q0 / d histogram`` without autograd, as a tensor with the histogram's dtype and device.

    Args:
        histogram: the signal histogram ``[n_bins]`` (or ``[B, n_bins]``), or a mapping (see
            :class:`SignificanceLoss`): then a mapping of the same structure is returned (for a
            sample given as ``{"nominal": h, "histosys": ...}``, ``{"nominal": g, "histosys":
            {name: {"hi_data": g_up, "lo_data": g_dn}}}``).
        session: e.g. ``loss_fn.session``.
    """
    layout, h, is_batched, (dtype, device) = session.prepare(histogram, batched=None)
    with torch.no_grad():
        _, grad = session.evaluate(layout, h.detach().contiguous(), ovr.STAT_Q0, 0.0)
    if isinstance(grad, np.ndarray):
        grad = torch.from_numpy(grad)
    grad = grad.to(device=device, dtype=dtype)
    if not is_batched:
        grad = grad[0]
    return split_gradient(layout, grad, not isinstance(histogram, Mapping))


def _to_numpy(g):
    if isinstance(g, Mapping):
        return {k: _to_numpy(v) for k, v in g.items()}
    return g.detach().cpu().numpy()


def _to_tensors(x, session: ProfiledSession):
    if isinstance(x, Mapping):
        return {k: _to_tensors(v, session) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x
    from nextstat.torch.interop import as_tensor

    return as_tensor(x, dtype=session.dtype, device=session.device)


def signal_jacobian_numpy(histogram, session: ProfiledSession):
    """:func:`signal_jacobian` as NumPy array(s); accepts array-likes (converted to float64
    tensors on the session's device), also inside mappings."""
    return _to_numpy(signal_jacobian(_to_tensors(histogram, session), session))


def profiled_poi_variance_loss(histogram, session: ProfiledSession, *, asimov_mu: float = 1.0) -> torch.Tensor:
    r"""Hesse variance of the POI, ``[H^{-1}]_{poi, poi}``, differentiable in every template.

    Args:
        histogram: the signal histogram ``[n_bins]`` / ``[B, n_bins]``, or a mapping
            ``{sample: h}`` with ``h`` a tensor or ``{"nominal": h, "histosys": {name:
            {"hi_data": h_up, "lo_data": h_dn}}}`` (:mod:`nextstat.torch.inputs`).
        session: a :class:`~nextstat.torch.ProfiledSession` (its ``data``, fit backend and
            settings apply).
        asimov_mu: POI value of the Asimov data (``data="expected"``; INFERNO: the nominal
            signal, 1).

    Returns:
        0-d tensor (``[B]`` for a batch) with the input's dtype and device; ``sigma(mu)`` is its
        square root (:mod:`nextstat.torch.variance`: value, gradient, unconstrained nuisances).

    Raises:
        ValueError: the POI is fixed, ``asimov_mu`` is not finite, the histograms are invalid
            (as for :class:`~nextstat.torch.SignificanceLoss`), or the Hessian over the free
            parameters is not positive definite there (a direction the likelihood does not
            constrain, so the variance is not defined).
    """
    if not isinstance(session, ProfiledSession):
        raise ValueError(f"session: expected a nextstat.torch.ProfiledSession, got {type(session).__name__}")
    if session.model.fixed_params[session.model.poi_index]:
        raise ValueError(f"session: the POI {session.model.poi_name!r} is fixed in the model; its variance is not defined")
    if isinstance(asimov_mu, bool) or not isinstance(asimov_mu, (int, float)) or not math.isfinite(asimov_mu):
        raise ValueError(f"asimov_mu: expected a finite float, got {asimov_mu!r}")
    return apply_statistic(session, histogram, _Transform("q", 1.0, session.eps), STAT_VARIANCE,
                           float(asimov_mu), None)
