"""The HistFactory expected rates and NLL in PyTorch, batched, on any device.

:class:`TorchModel` evaluates the same flat arrays as the Numba core (``model.arrays``,
``model.aux_arrays``; layout at the top of :mod:`nextstat.engine.numba_core`) for ``N``
parameter points at once::

    nu_b(theta) = sum_{blocks} (nom_f + sum_h delta_hf(alpha_h)) * prod_k f_k(theta_k) * prod_g gamma_gf

with ``f`` the flat (per-block) bin of global bin ``b``. All index tensors are built once per
model, device and dtype; a call is a fixed sequence of gather / ``index_add`` / elementwise ops
with no Python loop over bins or modifier terms. The NLL is pyhf's (arXiv:1007.1727 eq. 5):
``sum_b [nu_b - n_b ln nu_b + lgamma(n_b + 1)]`` (``nu_b`` alone where ``n_b = 0``, ``+inf``
where ``nu_b <= 0 < n_b``) plus Gaussian ``-ln N(a | theta, sigma)`` and Poisson
``-ln Pois(a | tau gamma)`` constraint terms.

:meth:`TorchModel.rates` and :meth:`TorchModel.nll` are differentiable (autograd) in the
parameters and in replaced sample nominals. :meth:`TorchModel.nll_grad_hess` gives the analytic
gradient and the Gauss-Newton and exact Hessians without autograd, for :mod:`torch_fit`.

Replaced nominals (``nominal_overrides``): a mapping ``{sample: tensor [N, n_s] or [n_s]}``
with ``n_s`` the sample's bins over the channels where it exists, in channel order. The
modifiers carry over as documented in :mod:`nextstat.engine.overrides` (normsys unchanged,
histosys deltas scaled by ``h / nom_old``, per-bin constraint widths frozen).

>>> import numpy as np, torch, nextstat
>>> from nextstat.builders import build_workspace_from_histograms
>>> model = nextstat.from_pyhf(build_workspace_from_histograms([1.0, 4.0], {"bkg": [50.0, 20.0]}))
>>> tm = TorchModel(model)
>>> theta = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
>>> bool(np.allclose(tm.nll(theta, torch.as_tensor(model.data)).numpy(),
...                  [model.nll([1.0]), model.nll([2.0])], rtol=1e-12))
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from nextstat.engine import numba_core as core
from nextstat.engine import torch_derivatives
from nextstat.engine.layout import AUX_KIND, AUX_PAR, AUX_SIGMA, AUX_TAU, named
from nextstat.engine.overrides import NominalReplacement, nominal_replacement

__all__ = ["NominalOverrides", "TorchModel"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class NominalOverrides:
    """Effective nominals and histosys deltas for ``M`` problems (``M == 1``: shared by all).

    Built by :meth:`TorchModel.overrides`; pass it wherever ``nominal_overrides`` is accepted
    to avoid rebuilding it (e.g. across the iterations of a fit).

    Attributes:
        nom: ``[M, NF]`` flat nominals. up, dn: ``[M, E]`` or ``[1, E]`` histosys deltas per
            entry (``[1, E]`` when no replaced bin carries a histosys).
        replacement: the index arrays (None without replaced samples).
    """

    nom: torch.Tensor
    up: torch.Tensor
    dn: torch.Tensor
    replacement: NominalReplacement | None = None

    @property
    def batch(self) -> int:
        return self.nom.shape[0]

    def select(self, index: torch.Tensor) -> NominalOverrides:
        """The rows ``index`` (kept as is when shared, ``M == 1``)."""
        if self.batch == 1:
            return self

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t[index] if t.shape[0] > 1 else t

        return NominalOverrides(rows(self.nom), rows(self.up), rows(self.dn), self.replacement)


def _pad(rows: list[list[int]], fill: int) -> np.ndarray:
    width = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), width), fill, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class TorchModel:
    """A compiled :class:`nextstat.Model` as batched PyTorch functions on one device.

    Args:
        model: the compiled model.
        device: torch device (default CPU).
        dtype: floating dtype (default float64; float32 for devices without float64, at a
            cost in precision: NLL differences resolve to about 1e-7 of the NLL).

    Attributes:
        n_params, n_bins, n_aux, poi_index: as on the model.
        aux_data: ``[n_aux]`` nominal auxiliary data. main_data: ``[n_bins]`` observed counts.
        init, lo, hi: ``[n_params]`` suggested init and bounds. fixed: ``[n_params]`` bool.
    """

    def __init__(self, model, *, device: str | torch.device | None = None, dtype: torch.dtype = torch.float64):
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype: expected torch.float64 or torch.float32, got {dtype}")
        self.model = model
        dev = torch.device("cpu") if device is None else torch.device(device)
        if dev.type != "cpu" and dev.index is None:  # "cuda" -> "cuda:0", as tensors report it
            dev = torch.empty(0, device=dev).device
        self.device = dev
        self.dtype = dtype
        A = model.arrays
        F = named(A)
        blk_b0, blk_nb, blk_off, nom = F.blk_b0, F.blk_nb, F.blk_off, F.nom
        sc_ptr, sc_par, sc_kind, sc_lhi, sc_llo, sc_coef = F.sc_ptr, F.sc_par, F.sc_kind, F.sc_lhi, F.sc_llo, F.sc_coef
        hs_ptr, hs_par, hs_code, hs_doff, hs_up, hs_dn = F.hs_ptr, F.hs_par, F.hs_code, F.hs_doff, F.hs_up, F.hs_dn
        pb_ptr, pb_par, n_bins = F.pb_ptr, F.pb_par, F.n_bins
        P = model.n_params
        self.n_params = P
        self.n_bins = int(n_bins)
        self.n_aux = model.n_aux
        self.poi_index = model.poi_index
        NB = blk_b0.shape[0]
        NF = nom.shape[0]
        self._nf = NF
        f_blk = np.repeat(np.arange(NB), blk_nb)
        f_gb = np.concatenate([blk_b0[i] + np.arange(blk_nb[i]) for i in range(NB)]) if NB else np.zeros(0, np.int64)
        T = sc_par.shape[0]
        t_blk = np.repeat(np.arange(NB), np.diff(sc_ptr))
        blk_terms = _pad([list(range(sc_ptr[i], sc_ptr[i + 1])) for i in range(NB)], T)  # pad: dummy term T
        par_ext = np.append(sc_par, P)  # dummy parameter index P
        blk_par = par_ext[blk_terms]
        # histosys entries (term h, bin j of its block)
        h_blk = np.repeat(np.arange(NB), np.diff(hs_ptr))
        e_term, e_f, e_pos = [], [], []
        for h in range(hs_par.shape[0]):
            b = h_blk[h]
            for j in range(blk_nb[b]):
                e_term.append(h)
                e_f.append(blk_off[b] + j)
                e_pos.append(hs_doff[h] + j)
        e_term = np.asarray(e_term, np.int64)
        e_f = np.asarray(e_f, np.int64)
        e_pos = np.asarray(e_pos, np.int64)
        e_par = hs_par[e_term] if e_term.size else np.zeros(0, np.int64)
        self._e_pos_np = e_pos
        pb_pad = _pad([list(pb_par[pb_ptr[f]:pb_ptr[f + 1]]) for f in range(NF)], P)
        self._kq = pb_pad.shape[1]
        self._ks = blk_terms.shape[1]
        P1 = P + 1

        # Hessian index lists (flattened [P+1, P+1] positions), see nll_grad_hess
        idx_ss = (blk_par[:, :, None] * P1 + blk_par[:, None, :]).reshape(-1)
        hp = hs_par
        idx_hs = np.concatenate([(hp[:, None] * P1 + blk_par[h_blk]).reshape(-1),
                                 (blk_par[h_blk] * P1 + hp[:, None]).reshape(-1)])
        idx_hh = hp * P1 + hp
        qs_a = pb_pad[:, :, None] * P1 + blk_par[f_blk][:, None, :]
        qs_b = blk_par[f_blk][:, None, :] * P1 + pb_pad[:, :, None]
        idx_qs = np.concatenate([qs_a.reshape(-1), qs_b.reshape(-1)])
        qh_a = pb_pad[e_f] * P1 + e_par[:, None]
        qh_b = e_par[:, None] * P1 + pb_pad[e_f]
        idx_qh = np.concatenate([qh_a.reshape(-1), qh_b.reshape(-1)])
        idx_qq = (pb_pad[:, :, None] * P1 + pb_pad[:, None, :]).reshape(-1)
        self._n_h2 = [idx_ss.size, idx_hs.size // 2, idx_hh.size, idx_qs.size // 2, idx_qh.size // 2, idx_qq.size]
        idx_h2 = np.concatenate([idx_ss, idx_hs, idx_hh, idx_qs, idx_qh, idx_qq])
        # Jacobian index lists (flattened [n_bins, P+1] positions)
        idx_j = np.concatenate([(f_gb[:, None] * P1 + blk_par[f_blk]).reshape(-1),
                                f_gb[e_f] * P1 + e_par,
                                (f_gb[:, None] * P1 + pb_pad).reshape(-1)])

        aux_par = model.aux_arrays[AUX_PAR]
        aux_kind = model.aux_arrays[AUX_KIND]
        aux_sigma = model.aux_arrays[AUX_SIGMA]
        aux_tau = model.aux_arrays[AUX_TAU]
        codes = sorted(set(hs_code.tolist()))
        self._hs_codes = codes
        self._has_poisson = bool(np.any(aux_kind == core.AUX_POISSON))
        self._has_gauss = bool(np.any(aux_kind == core.AUX_GAUSS))

        dev, dt = self.device, dtype
        L = dict(device=dev, dtype=torch.int64)
        F = dict(device=dev, dtype=dt)
        self._f_blk = torch.as_tensor(f_blk, **L)
        self._f_gb = torch.as_tensor(f_gb, **L)
        self._nom = torch.as_tensor(nom, **F)
        self._sc_par = torch.as_tensor(sc_par, **L)
        lin = sc_kind == core.SC_LINEAR
        self._lh = torch.as_tensor(np.where(lin, 0.0, sc_lhi), **F)
        self._mll = torch.as_tensor(np.where(lin, 0.0, -sc_llo), **F)
        self._sc_lin = torch.as_tensor(lin, device=dev)
        self._sc_code1 = torch.as_tensor(sc_kind == core.SC_CODE1, device=dev)
        self._sc_code4 = torch.as_tensor(sc_kind == core.SC_CODE4, device=dev)
        self._nonlinear = bool(np.any(~lin))
        self._has_code4 = bool(np.any(sc_kind == core.SC_CODE4))
        coef = sc_coef.reshape(-1, 6)
        n = np.arange(1, 7, dtype=float)
        self._coef = torch.as_tensor(coef, **F)
        self._coef1 = torch.as_tensor(coef * n, **F)  # d/dx of a_n x^n
        self._coef2 = torch.as_tensor(coef * n * (n - 1), **F)
        self._blk_terms = torch.as_tensor(blk_terms, **L)
        self._t_blk = torch.as_tensor(t_blk, **L)
        self._h_blk = torch.as_tensor(h_blk, **L)
        self._e_term = torch.as_tensor(e_term, **L)
        self._e_f = torch.as_tensor(e_f, **L)
        self._e_par = torch.as_tensor(e_par, **L)
        self._e_code = torch.as_tensor(hs_code[e_term] if e_term.size else np.zeros(0, np.int64), **L)
        self._up = torch.as_tensor(hs_up[e_pos], **F).reshape(1, -1)
        self._dn = torch.as_tensor(hs_dn[e_pos], **F).reshape(1, -1)
        self._pb_pad = torch.as_tensor(pb_pad, **L)
        self._idx_h2 = torch.as_tensor(idx_h2, **L)
        self._idx_j = torch.as_tensor(idx_j, **L)
        self._aux_par = torch.as_tensor(aux_par, **L)
        self._aux_gauss = torch.as_tensor(aux_kind == core.AUX_GAUSS, device=dev)
        self._aux_sigma = torch.as_tensor(aux_sigma, **F)
        self._aux_tau = torch.as_tensor(aux_tau, **F)
        self.aux_data = torch.as_tensor(model.aux_data, **F)
        self.main_data = torch.as_tensor(model.main_data, **F)
        self.init = torch.as_tensor(model.suggested_init(), **F)
        b = model.suggested_bounds()
        self.lo = torch.as_tensor(b[:, 0], **F)
        self.hi = torch.as_tensor(b[:, 1], **F)
        self.fixed = torch.as_tensor(model.fixed_params, device=dev)
        self._default = NominalOverrides(self._nom.reshape(1, -1), self._up, self._dn, None)
        self._replacements: dict[tuple[str, ...], tuple[NominalReplacement, dict]] = {}
        self._units: dict[tuple[str, ...], NominalOverrides] = {}

    def __repr__(self) -> str:
        return f"TorchModel({self.model!r}, device={self.device}, dtype={self.dtype})"

    # ------------------------------------------------------------------ overrides
    def replacement(self, samples: tuple[str, ...]) -> tuple[NominalReplacement, dict]:
        """Cached index arrays (NumPy and device tensors) for replacing ``samples``' nominals."""
        if samples not in self._replacements:
            rep = nominal_replacement(self.model, samples)
            # histosys entries of replaced bins: map entry -> replaced bin via its storage pos
            rix_of_pos = dict(zip(rep.hs_pos.tolist(), rep.hs_rix.tolist()))
            e_sel = [i for i, p in enumerate(self._e_pos_np.tolist()) if p in rix_of_pos]
            e_pos = self._e_pos_np.tolist()
            e_rix = [rix_of_pos[e_pos[i]] for i in e_sel]
            inv = np.divide(1.0, rep.nom_old, out=np.zeros_like(rep.nom_old), where=rep.nom_old != 0)
            L = dict(device=self.device, dtype=torch.int64)
            dev = {
                "rep_flat": torch.as_tensor(rep.rep_flat, **L),
                "rep_gb": torch.as_tensor(rep.rep_gb, **L),
                "e_sel": torch.as_tensor(np.asarray(e_sel, np.int64), **L),
                "e_rix": torch.as_tensor(np.asarray(e_rix, np.int64), **L),
                "inv_nom": torch.as_tensor(inv, device=self.device, dtype=self.dtype),
            }
            self._replacements[samples] = (rep, dev)
        return self._replacements[samples]

    def overrides(self, nominal_overrides: Mapping[str, torch.Tensor] | NominalOverrides | None,
                  n: int | None = None) -> NominalOverrides:
        """Resolve ``nominal_overrides`` (see module doc) into effective nominals and deltas.

        Args:
            nominal_overrides: ``{sample: [M, n_s] or [n_s]}`` (``M`` = ``n`` or 1), an already
                resolved :class:`NominalOverrides`, or None (workspace nominals).
            n: expected batch size (checked when given).
        """
        if nominal_overrides is None:
            return self._default
        if isinstance(nominal_overrides, NominalOverrides):
            if n is not None and nominal_overrides.batch not in (1, n):
                raise ValueError(f"nominal_overrides: expected batch 1 or {n}, got {nominal_overrides.batch}")
            return nominal_overrides
        if not isinstance(nominal_overrides, Mapping) or not nominal_overrides:
            raise ValueError("nominal_overrides: expected a non-empty mapping sample -> tensor, "
                             f"got {type(nominal_overrides).__name__}")
        names = tuple(s for s in self.model.samples if s in nominal_overrides)
        unknown = [s for s in nominal_overrides if s not in self.model.samples]
        if unknown:
            raise ValueError(f"nominal_overrides: unknown sample(s) {unknown}; "
                             f"expected names among {self.model.samples}")
        rep, _ = self.replacement(names)
        vals = []
        for s, size in zip(names, rep.sizes):
            v = nominal_overrides[s]
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"nominal_overrides[{s!r}]: expected a torch.Tensor, got {type(v).__name__}")
            if v.device != self.device:
                raise ValueError(f"nominal_overrides[{s!r}]: expected device {self.device}, got {v.device}")
            if v.ndim == 1:
                v = v.unsqueeze(0)
            if v.ndim != 2 or v.shape[1] != size:
                raise ValueError(f"nominal_overrides[{s!r}]: expected shape [{size}] or [M, {size}], "
                                 f"got {list(v.shape)}")
            vals.append(v.to(self.dtype))
        m = max(v.shape[0] for v in vals)
        if any(v.shape[0] not in (1, m) for v in vals) or (n is not None and m not in (1, n)):
            raise ValueError(f"nominal_overrides: batch sizes {[v.shape[0] for v in vals]} do not match {n}")
        h = torch.cat([v.expand(m, -1) for v in vals], dim=1)
        return self.replaced(names, h)

    def replaced(self, samples: tuple[str, ...], h: torch.Tensor) -> NominalOverrides:
        """Overrides from the concatenated histograms ``h`` ``[M, R]`` of ``samples`` (model order)."""
        _, d = self.replacement(samples)
        m = h.shape[0]
        nom = self._nom.expand(m, -1).index_copy(1, d["rep_flat"], h)
        up, dn = self._up, self._dn
        if d["e_sel"].numel():
            scale = torch.ones(m, up.shape[1], device=self.device, dtype=self.dtype).index_copy(
                1, d["e_sel"], h[:, d["e_rix"]] * d["inv_nom"][d["e_rix"]])
            up = up * scale
            dn = dn * scale
        return NominalOverrides(nom, up, dn, self.replacement(samples)[0])

    def unit_overrides(self, samples: tuple[str, ...]) -> NominalOverrides:
        """Nominal 1 on ``samples``' bins: flat rates there are ``d rate / d h`` (cached)."""
        if samples not in self._units:
            rep, _ = self.replacement(samples)
            ones = torch.ones(1, rep.n_replaced, device=self.device, dtype=self.dtype)
            self._units[samples] = self.replaced(samples, ones)
        return self._units[samples]

    # ------------------------------------------------------------------ pieces
    def _theta(self, theta: torch.Tensor) -> torch.Tensor:
        if not isinstance(theta, torch.Tensor):
            raise ValueError(f"theta: expected a torch.Tensor, got {type(theta).__name__}")
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if theta.ndim != 2 or theta.shape[1] != self.n_params:
            raise ValueError(f"theta: expected shape [N, {self.n_params}] or [{self.n_params}], "
                             f"got {list(theta.shape)}")
        if theta.device != self.device or theta.dtype != self.dtype:
            raise ValueError(f"theta: expected {self.dtype} on {self.device}, got {theta.dtype} on {theta.device}")
        return theta

    def _scalar(self, x: torch.Tensor, derivs: bool):
        """Scalar factors (normfactor/lumi linear, normsys code1/code4) and derivatives, [N, T]."""
        d1 = d2 = None
        if derivs:
            d1 = torch.ones_like(x)
            d2 = torch.zeros_like(x)
        if not self._nonlinear:
            return x, d1, d2
        lin = self._sc_lin
        sel_hi = torch.where(self._sc_code1, x > 0, x >= 1)
        lsel = torch.where(sel_hi, self._lh, self._mll)  # 0 for linear terms
        e = torch.exp(lsel * x)
        val = torch.where(lin, x, e)
        if derivs:
            e1 = lsel * e
            d1 = torch.where(lin, d1, e1)
            d2 = torch.where(lin, d2, lsel * e1)
        if self._has_code4:
            poly = self._sc_code4 & (x > -1) & (x < 1)
            xc = torch.where(poly, x, torch.zeros_like(x))
            xs = xc.unsqueeze(-1).expand(*xc.shape, 6).cumprod(-1)  # x^1..x^6
            val = torch.where(poly, 1.0 + (self._coef * xs).sum(-1), val)
            if derivs:
                one = torch.ones_like(xc).unsqueeze(-1)
                xm1 = torch.cat([one, xs[..., :5]], -1)  # x^0..x^5
                xm2 = torch.cat([torch.zeros_like(one), one, xs[..., :4]], -1)  # 0, x^0..x^4
                d1 = torch.where(poly, (self._coef1 * xm1).sum(-1), d1)
                d2 = torch.where(poly, (self._coef2 * xm2).sum(-1), d2)
        return val, d1, d2

    def _delta(self, x: torch.Tensor, up: torch.Tensor, dn: torch.Tensor, derivs: bool):
        """Histosys deltas (code0, code2, code4p) and derivatives, [N, E]."""
        outs = []
        for code in self._hs_codes:
            if code == core.HS_CODE0:
                pos = x > 0
                s = torch.where(pos, up, dn)
                outs.append((code, x * s, s, torch.zeros_like(x) if derivs else None))
            elif code == core.HS_CODE2:
                a = 0.5 * (up - dn)
                b = 0.5 * (up + dn)
                hi_s = b + 2.0 * a
                lo_s = b - 2.0 * a
                mid = a * x * x + b * x
                d = torch.where(x > 1, (x - 1) * hi_s, torch.where(x >= -1, mid, x * lo_s))
                if derivs:
                    d1 = torch.where(x > 1, hi_s, torch.where(x >= -1, 2.0 * a * x + b, lo_s))
                    d2 = torch.where((x > 1) | (x < -1), torch.zeros_like(d), 2.0 * a.expand_as(d))
                else:
                    d1 = d2 = None
                outs.append((code, d, d1, d2))
            else:
                s = 0.5 * (up + dn)
                aa = 0.0625 * (up - dn)
                inside = (x >= -1) & (x <= 1)
                xi = torch.where(inside, x, torch.zeros_like(x))
                x2 = xi * xi
                poly = xi * s + aa * x2 * (15.0 + x2 * (-10.0 + 3.0 * x2))
                lin = torch.where(x > 1, up, dn)
                d = torch.where(inside, poly, x * lin)
                if derivs:
                    p1 = s + aa * xi * (30.0 + x2 * (-40.0 + 18.0 * x2))
                    p2 = aa * (30.0 + x2 * (-120.0 + 90.0 * x2))
                    d1 = torch.where(inside, p1, lin.expand_as(d))
                    d2 = torch.where(inside, p2, torch.zeros_like(d))
                else:
                    d1 = d2 = None
                outs.append((code, d, d1, d2))
        if len(outs) == 1:
            return outs[0][1:]
        res = list(outs[0][1:])
        for code, *vals in outs[1:]:
            m = self._e_code == code
            res = [torch.where(m, v, r) if v is not None else None for v, r in zip(vals, res)]
        return tuple(res)

    def flat_rates(self, theta: torch.Tensor, nominal_overrides=None) -> torch.Tensor:
        """Expected yield of every (channel, sample) block bin, ``[N, NF]`` (aligned with ``nom``)."""
        theta = self._theta(theta)
        ov = self.overrides(nominal_overrides, theta.shape[0])
        N = theta.shape[0]
        ones = torch.ones(N, 1, device=self.device, dtype=self.dtype)
        phi, _, _ = self._scalar(theta[:, self._sc_par], False)
        F = torch.cat([phi, ones], 1)[:, self._blk_terms].prod(-1)  # [N, NB]
        base = ov.nom.expand(N, -1)
        if self._e_f.numel():
            d, _, _ = self._delta(theta[:, self._e_par], ov.up, ov.dn, False)
            base = base.index_add(1, self._e_f, d)
        G = torch.cat([theta, ones], 1)[:, self._pb_pad].prod(-1)  # [N, NF]
        return base * F[:, self._f_blk] * G

    def rates(self, theta: torch.Tensor, nominal_overrides=None) -> torch.Tensor:
        """Expected main-bin rates ``[N, n_bins]`` for ``theta`` ``[N, P]`` (or ``[P]`` -> N = 1)."""
        fr = self.flat_rates(theta, nominal_overrides)
        return torch.zeros(fr.shape[0], self.n_bins, device=self.device, dtype=self.dtype).index_add(1, self._f_gb, fr)

    def _data(self, data: torch.Tensor, n: int) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"data: expected a torch.Tensor, got {type(data).__name__}")
        if data.ndim == 1:
            data = data.unsqueeze(0)
        width = self.n_bins + self.n_aux
        if data.ndim != 2 or data.shape[1] != width or data.shape[0] not in (1, n):
            raise ValueError(f"data: expected shape [{n}, {width}] or [{width}], got {list(data.shape)}")
        if data.device != self.device or data.dtype != self.dtype:
            raise ValueError(f"data: expected {self.dtype} on {self.device}, got {data.dtype} on {data.device}")
        return data.expand(n, -1)

    def _main_nll(self, nu: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        pos = n > 0
        lnu = torch.log(torch.where(pos, nu, torch.ones_like(nu)))
        terms = torch.where(pos, nu - n * lnu + torch.lgamma(n + 1.0), nu)
        # summed in order (a running sum), as pyhf and the compiled core do: the terms of huge
        # counts cancel to the last bits, which the order of a pairwise sum would change
        s = terms.cumsum(-1)[..., -1] if terms.shape[-1] else terms.sum(-1)
        bad = (pos & (nu <= 0)).any(-1)
        return torch.where(bad, torch.full_like(s, math.inf), s)

    @staticmethod
    def _dev(lam: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """``lam - n - n ln(lam / n)`` elementwise (``lam`` where ``n = 0``, inf where
        ``lam <= 0 < n``), via log1p near ``lam = n``: see ``numba_core.dev_term``."""
        pos = n > 0
        ok = pos & (lam > 0)
        one = torch.ones_like(lam)
        ns = torch.where(pos, n, one)
        ls = torch.where(ok, lam, one)
        x = (ls - ns) / ns
        near = x.abs() < 0.5
        xn = torch.where(near, x, torch.zeros_like(x))
        v = torch.where(near, ns * (xn - torch.log1p(xn)), ls - ns - ns * torch.log(ls / ns))
        v = torch.where(ok, v, torch.full_like(v, math.inf))
        return torch.where(pos, v, lam)

    def _constraint_dev(self, theta: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        if self.n_aux == 0:
            return torch.zeros(theta.shape[0], device=self.device, dtype=self.dtype)
        x = theta[:, self._aux_par]
        z = (x - aux) / self._aux_sigma
        gauss = 0.5 * z * z
        if not self._has_poisson:
            return gauss.cumsum(-1)[..., -1]
        return torch.where(self._aux_gauss, gauss, self._dev(x * self._aux_tau, aux)).sum(-1)

    def constraint_dev(self, theta: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """Constraint NLL minus its theta-free constant, ``[N]`` (``numba_core.constraint_dev``):
        differences between points equal those of :meth:`constraint_nll`, without the rounding
        noise of its lgamma terms."""
        theta = self._theta(theta)
        return self._constraint_dev(theta, self.aux_data.unsqueeze(0) if aux is None else aux)

    def nll_dev(self, theta: torch.Tensor, data: torch.Tensor, nominal_overrides=None) -> torch.Tensor:
        """:meth:`nll` minus a theta-free constant (the saturated likelihood), ``[N]``: the form
        fits compare (as ``numba_core.newton_fit``), precise even for huge counts."""
        theta = self._theta(theta)
        N = theta.shape[0]
        data = self._data(data, N)
        nb = self.n_bins
        nu = self.rates(theta, nominal_overrides)
        return self._dev(nu, data[:, :nb]).sum(-1) + self._constraint_dev(theta, data[:, nb:])

    def constraint_nll(self, theta: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """Constraint part of the NLL, ``[N]``; ``aux`` ``[N or 1, n_aux]`` (default nominal)."""
        theta = self._theta(theta)
        if aux is None:
            aux = self.aux_data.unsqueeze(0)
        return self._constraint(theta, aux)

    def _constraint(self, theta: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        if self.n_aux == 0:
            return torch.zeros(theta.shape[0], device=self.device, dtype=self.dtype)
        x = theta[:, self._aux_par]
        g = self._aux_gauss
        sig = self._aux_sigma
        y = (aux - x) / (_SQRT2 * sig)
        gauss = torch.log(sig * _SQRT2PI) + y * y
        if not self._has_poisson:
            return gauss.cumsum(-1)[..., -1]
        rate = x * self._aux_tau
        apos = aux != 0
        lrate = torch.log(torch.where(apos & ~g, rate, torch.ones_like(rate)))
        pois = torch.where(apos, rate - aux * lrate + torch.lgamma(aux + 1.0), rate)
        terms = torch.where(g, gauss, pois)
        s = terms.cumsum(-1)[..., -1]  # in order, as _main_nll
        bad = (~g & apos & (rate <= 0)).any(-1)
        return torch.where(bad, torch.full_like(s, math.inf), s)

    def nll(self, theta: torch.Tensor, data: torch.Tensor, nominal_overrides=None) -> torch.Tensor:
        """Negative log-likelihood ``[N]`` (= -pyhf ``logpdf``); ``+inf`` where a rate is <= 0
        in a bin with data.

        Args:
            theta: ``[N, P]`` or ``[P]``.
            data: ``[N, n_bins + n_aux]`` or ``[n_bins + n_aux]`` (main then auxiliary data).
            nominal_overrides: see the module doc.
        """
        theta = self._theta(theta)
        N = theta.shape[0]
        data = self._data(data, N)
        nu = self.rates(theta, nominal_overrides)
        nb = self.n_bins
        return self._main_nll(nu, data[:, :nb]) + self._constraint(theta, data[:, nb:])

    # ------------------------------------------------------------------ analytic derivatives
    def nll_grad_hess(self, theta: torch.Tensor, data: torch.Tensor, nominal_overrides=None, *,
                      exact: bool = True, deviance: bool = False):
        """Analytic NLL ``[N]``, gradient ``[N, P]``, Gauss-Newton matrix and exact Hessian.

        The Gauss-Newton matrix is ``J^T diag(n / nu^2) J`` plus the (diagonal, exact)
        constraint curvature, positive semi-definite; the exact Hessian adds
        ``sum_b (1 - n_b / nu_b) d^2 nu_b / d theta^2`` (as ``numba_core.nll_grad_hess``).

        Returns:
            ``(nll [N], grad [N, P], H_gn [N, P, P], H [N, P, P] or None when not exact)``;
            with ``deviance=True`` the value is :meth:`nll_dev`'s. Rows with a non-finite NLL have
            meaningless derivatives.
        """
        return torch_derivatives.nll_grad_hess(self, theta, data, nominal_overrides, exact=exact, deviance=deviance)
