"""The session shared by the differentiable statistics: compiled model, device, fit settings,
input layouts and warm starts (:class:`ProfiledSession`).

The evaluations themselves (fits and gradients) live in :mod:`nextstat.torch.backends`
(Numba and PyTorch) and :mod:`nextstat.torch.variance`; the inputs (tensors, mappings with
histosys templates) in :mod:`nextstat.torch.inputs`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from nextstat.engine import overrides as ovr
from nextstat.engine.devices import resolve_device
from nextstat.engine.fitter import FitStatus, compiled_ready
from nextstat.engine.torch_model import NominalOverrides, TorchModel
from nextstat.torch import backends
from nextstat.torch.inputs import InputLayout, build_layout, layout_overrides, parse_sample

__all__ = ["ProfiledSession"]

_DATA = ("expected", "observed")
_BACKENDS = ("auto", "numba", "torch")
#: statistic codes of :meth:`ProfiledSession.evaluate` beyond ``ovr.STAT_Q0`` / ``ovr.STAT_QMU``:
#: the observed CLs (q~_mu on observed data, with its Asimov data) and the POI variance
STAT_CLS_OBS = 2
STAT_VARIANCE = 3


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
        fit_backend: ``"auto"`` (Numba on the CPU for single histograms once it is compiled,
            PyTorch until then and otherwise),
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
        from nextstat.model import require_model

        require_model(model)
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
        self.device = torch.device(resolve_device(device))
        if fit_backend == "numba" and self.device.type != "cpu":
            raise ValueError(f'fit_backend: "numba" runs on the CPU only, but device is {self.device}')
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.model = model
        self.signal_sample_name = signal_sample_name
        self.data = data
        self.eps = float(eps)
        # "auto" on the CPU: Numba once its fit is compiled (cached); until then (a first use, while
        # a background process compiles it: nextstat.engine.fitter.compiled_ready) PyTorch, and
        # evaluate() moves to Numba when it is ready
        self._auto_cpu = fit_backend == "auto" and self.device.type == "cpu"
        if fit_backend == "auto":
            fit_backend = "numba" if self._auto_cpu and compiled_ready("newton_fit") else "torch"
        self.fit_backend = fit_backend
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
        self._layouts: dict[tuple, InputLayout] = {}
        self._layout_index: dict[tuple, dict] = {}

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

    def layout(self, samples: tuple[str, ...], templates: tuple[tuple[str, str], ...] = (),
               dict_samples: frozenset = frozenset()) -> InputLayout:
        """The (cached) :class:`~nextstat.torch.inputs.InputLayout` replacing ``samples`` (model
        order) with the histosys ``templates`` (``(sample, modifier)`` pairs)."""
        key = (samples, templates, dict_samples)
        lay = self._layouts.get(key)
        if lay is None:
            lay = self._layouts[key] = build_layout(self.model, self.tmodel._e_pos_np, samples, templates,
                                                    dict_samples)
        return lay

    def overrides(self, layout: InputLayout, h: torch.Tensor) -> NominalOverrides:
        """Effective nominals and deltas of the flat inputs ``h`` ``[M, layout.size]`` (differentiable)."""
        if not layout.templates:
            return self.tmodel.replaced(layout.samples, h)
        idx = self._layout_index.get(layout.key)
        if idx is None:
            L = dict(device=self.device, dtype=torch.int64)
            idx = self._layout_index[layout.key] = {k: torch.as_tensor(getattr(layout, k), **L)
                                                    for k in ("t_entry", "t_nom", "t_hi", "t_lo")}
        return layout_overrides(self.tmodel, layout, idx, h)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, layout: InputLayout | tuple[str, ...], h: torch.Tensor, stat: int = ovr.STAT_Q0,
                 mu_test: float = 0.0, backend: str | None = None):
        """Run the fits for the flat inputs ``h`` (``[R]`` or ``[B, R]``, session dtype and device,
        no graph) of ``layout`` (from :meth:`prepare`; a tuple of sample names means their
        nominals only, concatenated in model order).

        Returns ``(q [B], dq/dh [B, R])`` (B = 1 for ``[R]``): NumPy arrays from the Numba
        backend (single plain histograms), tensors on the device otherwise. For the observed
        CLs (``stat = STAT_CLS_OBS``, observed data): ``(CLs [B], dCLs/dh [B, R])``; for
        ``STAT_VARIANCE``: ``(var(POI) [B], dvar/dh [B, R])`` with ``mu_test`` the POI of the
        Asimov data (:func:`nextstat.torch.profiled_poi_variance_loss`).
        ``backend`` overrides the session's ``fit_backend`` (``"torch"`` for batches).
        """
        if not isinstance(layout, InputLayout):
            layout = self.layout(tuple(layout))
        if self._auto_cpu and self.fit_backend == "torch" and compiled_ready("newton_fit"):
            self.fit_backend = "numba"
            self.reset()  # the warm starts are the other back end's
        backend = backend or self.fit_backend
        single = h.ndim == 1 or h.shape[0] == 1
        hb = h if h.ndim == 2 else h.unsqueeze(0)
        samples = layout.samples
        # float64 overflow for huge yields surfaces as a non-finite result, refused below
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if stat == STAT_VARIANCE:
                from nextstat.torch.variance import evaluate_variance

                out = evaluate_variance(self, layout, hb, mu_test, backend)
            elif stat == STAT_CLS_OBS:
                if backend == "numba" and single and not layout.templates:
                    out = backends.numba_cls(self, samples, h, mu_test)
                else:
                    out = backends.torch_cls(self, layout, hb, mu_test)
            elif layout.templates:
                out = backends.template_statistic(self, layout, hb, stat, mu_test, backend)
            elif backend == "numba" and single:
                out = backends.numba_statistic(self, samples, h, stat, mu_test)
            else:
                out = backends.torch_statistic(self, samples, hb, stat, mu_test)
        return _require_finite_result(*out)

    def _fit_problem(self, key, sf, sc):
        if sf == ovr.STATUS_NONFINITE_INPUT:
            raise ValueError("histogram: expected finite values, got NaN or inf")
        if sf == FitStatus.NONFINITE or sc == FitStatus.NONFINITE:
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
        if FitStatus.NONFINITE in status:
            self._warm.pop(key, None)
            raise ValueError("histogram: the expected rate is <= 0 in a bin with data for these histograms; "
                             "the likelihood is undefined")
        if any(x != FitStatus.CONVERGED for x in status):
            names = ("free", "conditional", "asimov", "asimov free", "asimov conditional")
            warnings.warn("profiled fit did not converge (status " + ", ".join(f"{n}={x}" for n, x in zip(names, status))
                          + "); the statistic and its gradient are approximate", RuntimeWarning, stacklevel=5)

    # ------------------------------------------------------------------ inputs
    def prepare(self, histogram, *, batched: bool | None = None):
        """Validate a histogram input and flatten it for :meth:`evaluate`.

        Args:
            histogram: the signal histogram ``[n_bins]`` / ``[B, n_bins]``, or a mapping
                ``{sample: h}`` with ``h`` a tensor ``[n_s]`` / ``[B, n_s]`` (the sample's new
                nominal) or ``{"nominal": h, "histosys": {name: {"hi_data": h_up, "lo_data":
                h_dn}}}`` (nominal and up/down templates; :mod:`nextstat.torch.inputs`).
            batched: require a batch axis (True), forbid it (False) or accept both (None).

        Returns:
            ``(layout, h, batched, (dtype, device) of the input)`` with ``h`` ``[R]`` or
            ``[B, R]`` in the session's dtype and device (differentiable w.r.t. the input), the
            tensors flattened as ``layout`` (:class:`~nextstat.torch.inputs.InputLayout`) says.
        """
        if isinstance(histogram, Mapping):
            if not histogram:
                raise ValueError("histogram: expected a tensor or a non-empty mapping sample -> tensor, got {}")
            noms, tpls, dicts = {}, {}, set()
            for s, v in histogram.items():
                if s not in self.model.samples:
                    raise ValueError(f"histogram: unknown sample {s!r}; expected names among {self.model.samples}")
                where = f"histogram[{s!r}]"
                nom, hs, as_dict = parse_sample(self.model, s, v, where)
                if as_dict:
                    dicts.add(s)
                    where += "['nominal']"
                noms[s] = self._check(where, nom, self.sample_size(s))
                for name in sorted(hs):
                    size = self.layout((s,), ((s, name),)).templates[0].size
                    w = f"histogram[{s!r}]['histosys'][{name!r}]"
                    tpls[(s, name)] = (self._check(f"{w}['hi_data']", hs[name][0], size),
                                       self._check(f"{w}['lo_data']", hs[name][1], size))
            samples = tuple(s for s in self.model.samples if s in noms)
            templates = tuple(k for s in samples for k in sorted(tpls) if k[0] == s)
            items = [noms[s] for s in samples] + [t for k in templates for t in tpls[k]]
            layout = self.layout(samples, templates, frozenset(dicts))
        else:
            layout = self.layout((self.signal_sample_name,))
            items = [self._check("histogram", histogram, self.n_bins)]
        ndims = {t.ndim for t in items}
        if len(ndims) != 1:
            raise ValueError("histogram: mix of batched ([B, n]) and unbatched ([n]) tensors in the mapping")
        is_batched = ndims.pop() == 2
        first = items[0]
        if batched is True and not is_batched:
            raise ValueError(f"histograms: expected a batch [B, n], got shape {list(first.shape)}")
        if batched is False and is_batched:
            raise ValueError(f"histogram: expected an unbatched shape [n], got {list(first.shape)}")
        if is_batched and len({t.shape[0] for t in items}) != 1:
            raise ValueError(f"histogram: batch sizes differ across samples: {[t.shape[0] for t in items]}")
        io = (first.dtype, first.device)
        h = first if len(items) == 1 else torch.cat([t.to(self.dtype) for t in items], -1)
        if h.dtype != self.dtype or h.device != self.device:
            h = h.to(device=self.device, dtype=self.dtype)
        return layout, h, is_batched, io

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
