"""Histogram inputs of the differentiable statistics, with or without histosys templates.

The losses take, besides a plain tensor (the signal sample's nominal), a mapping per sample of

* a tensor: the sample's new nominal; its histosys modifiers keep their relative variations
  (deltas scaled by ``h / nom_old``, :mod:`nextstat.engine.overrides`); or
* ``{"nominal": h, "histosys": {name: {"hi_data": h_up, "lo_data": h_dn}}}`` (pyhf's own words):
  the nominal and, for the named histosys modifiers of that sample, the up and down templates
  themselves (e.g. histograms of the shifted inputs), so the network shapes the variations too.
  Named modifiers take the deltas ``up = h_up - h`` and ``dn = h - h_dn`` (the engine's storage,
  :mod:`nextstat.engine.numba_core`) in every interpolation code; the sample's other histosys
  modifiers keep the scaled deltas.

Lengths: a nominal covers the sample's bins over the channels where the sample exists; a
template covers the bins of the channels where the sample carries that histosys modifier (the
channels where pyhf's ``hi_data`` / ``lo_data`` exist), both in the model's channel order
(channels sorted by name).

:class:`InputLayout` describes how such an input is flattened into one vector ``x`` (all
nominals in model sample order, then each template's ``hi_data`` and ``lo_data``) and holds the
index arrays that put ``x`` into the model's arrays: :func:`layout_overrides` (PyTorch,
differentiable) and :func:`layout_arrays` (NumPy, for the Numba fits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from nextstat.engine import overrides as ovr
from nextstat.engine.layout import BLK_NB, HS_DN, HS_DOFF, HS_PAR, HS_PTR, HS_UP
from nextstat.engine.torch_model import NominalOverrides

__all__ = ["InputLayout", "Template", "build_layout", "layout_arrays", "layout_overrides", "split_gradient"]

_SAMPLE_KEYS = ("nominal", "histosys")
_TEMPLATE_KEYS = ("hi_data", "lo_data")


@dataclass(frozen=True)
class Template:
    """The up/down templates of histosys ``modifier`` on ``sample``: ``size`` bins each, at
    ``start`` (hi_data) and ``start + size`` (lo_data) in the flat input."""

    sample: str
    modifier: str
    size: int
    start: int


@dataclass(frozen=True, eq=False)
class InputLayout:
    """How a histogram input is flattened (module doc) and put into the model.

    Attributes:
        samples: the replaced samples, in model order; ``sizes`` their nominal lengths.
        templates: the given histosys templates, in sample order, then modifier name order.
        n_nominal: length of the nominal part of the flat input; ``size`` its total length.
        dict_samples: samples given as ``{"nominal": ..., ...}`` (their gradient is a mapping).
        t_store, t_entry: for each template bin, its position in the model's histosys delta
            storage (``arrays[HS_UP]``, ``arrays[HS_DN]``) and its histosys entry in
            :class:`~nextstat.engine.torch_model.TorchModel`.
        t_nom, t_hi, t_lo: positions in the flat input of each template bin's nominal, up and
            down values.
    """

    samples: tuple[str, ...]
    sizes: tuple[int, ...]
    templates: tuple[Template, ...]
    n_nominal: int
    size: int
    dict_samples: frozenset
    t_store: np.ndarray
    t_entry: np.ndarray
    t_nom: np.ndarray
    t_hi: np.ndarray
    t_lo: np.ndarray

    @property
    def has_templates(self) -> bool:
        return bool(self.templates)

    @property
    def key(self) -> tuple:
        """Hashable identity (warm starts and caches): the sample tuple without templates."""
        if not self.templates:
            return self.samples
        return ("templates", self.samples, tuple((t.sample, t.modifier) for t in self.templates))


def _sample_blocks(model, sample: str) -> list[int]:
    return [i for i, s in enumerate(model.block_sample) if s == sample]


def _histosys_terms(model, block: int) -> dict[str, int]:
    """``{modifier name: histosys term}`` of one (channel, sample) block."""
    hs_ptr, hs_par = model.arrays[HS_PTR], model.arrays[HS_PAR]
    return {model.parameter_names[int(hs_par[h])]: h for h in range(int(hs_ptr[block]), int(hs_ptr[block + 1]))}


def sample_histosys(model, sample: str) -> dict[str, int]:
    """``{histosys modifier of sample: template length}`` (bins of the channels carrying it)."""
    nb = model.arrays[BLK_NB]
    out: dict[str, int] = {}
    for b in _sample_blocks(model, sample):
        for name in _histosys_terms(model, b):
            out[name] = out.get(name, 0) + int(nb[b])
    return out


def build_layout(model, entry_positions: np.ndarray, samples: tuple[str, ...],
                 templates: tuple[tuple[str, str], ...], dict_samples: frozenset = frozenset()) -> InputLayout:
    """The layout of an input replacing ``samples`` (model order) with the histosys templates
    ``templates`` (``(sample, modifier)`` pairs, in layout order); ``entry_positions`` is the
    delta-storage position of each TorchModel histosys entry (``TorchModel._e_pos_np``)."""
    nb, hs_doff = model.arrays[BLK_NB], model.arrays[HS_DOFF]
    sizes = tuple(int(ovr.sample_flat_bins(model, s).shape[0]) for s in samples)
    nom_start = dict(zip(samples, np.cumsum((0,) + sizes[:-1]).tolist()))
    n_nominal = int(sum(sizes))
    pos2entry = {int(p): e for e, p in enumerate(entry_positions.tolist())}
    t_store, t_nom, t_hi, t_lo, tpl = [], [], [], [], []
    start = n_nominal
    for sample, name in templates:
        size = sample_histosys(model, sample)[name]
        tpl.append(Template(sample, name, size, start))
        off_nom, off_t = nom_start[sample], 0
        for b in _sample_blocks(model, sample):
            h = _histosys_terms(model, b).get(name)
            if h is not None:
                for j in range(int(nb[b])):
                    t_store.append(int(hs_doff[h]) + j)
                    t_nom.append(off_nom + j)
                    t_hi.append(start + off_t + j)
                    t_lo.append(start + size + off_t + j)
                off_t += int(nb[b])
            off_nom += int(nb[b])
        start += 2 * size
    i64 = np.int64
    return InputLayout(samples, sizes, tuple(tpl), n_nominal, start, frozenset(dict_samples),
                       np.asarray(t_store, i64), np.asarray([pos2entry[p] for p in t_store], i64),
                       np.asarray(t_nom, i64), np.asarray(t_hi, i64), np.asarray(t_lo, i64))


def layout_overrides(tm, layout: InputLayout, index: dict, x: torch.Tensor) -> NominalOverrides:
    """Effective nominals and histosys deltas for flat inputs ``x`` ``[M, size]``
    (differentiable); ``index`` holds ``t_entry``, ``t_nom``, ``t_hi``, ``t_lo`` as device tensors."""
    ov = tm.replaced(layout.samples, x[:, :layout.n_nominal])
    if not layout.templates:
        return ov
    m = x.shape[0]
    nom_b = x[:, index["t_nom"]]
    up = ov.up.expand(m, -1).index_copy(1, index["t_entry"], x[:, index["t_hi"]] - nom_b)
    dn = ov.dn.expand(m, -1).index_copy(1, index["t_entry"], nom_b - x[:, index["t_lo"]])
    return NominalOverrides(ov.nom, up, dn, ov.replacement)


def layout_arrays(model, rep: ovr.NominalReplacement, layout: InputLayout, x: np.ndarray) -> tuple:
    """The model arrays (NumPy, for the compiled :meth:`Fitter.newton <nextstat.engine.fitter.Fitter.newton>`) for one flat
    input ``x`` ``[size]``: nominals replaced, deltas scaled or set from the templates."""
    A2 = ovr.replaced_arrays(model.arrays, rep.rep_flat, rep.hs_pos, rep.hs_rix, rep.unit_up, rep.unit_dn,
                             np.ascontiguousarray(x[:layout.n_nominal]))
    if layout.templates:
        nom_b = x[layout.t_nom]
        A2[HS_UP][layout.t_store] = x[layout.t_hi] - nom_b
        A2[HS_DN][layout.t_store] = nom_b - x[layout.t_lo]
    return A2


def split_gradient(layout: InputLayout, grad: torch.Tensor, signal_only: bool):
    """The flat gradient ``[..., size]`` in the structure of the input: a tensor for a plain
    signal histogram (``signal_only``), else ``{sample: tensor}`` or, for samples given as a
    mapping, ``{sample: {"nominal": g, "histosys": {name: {"hi_data": g, "lo_data": g}}}}``."""
    if signal_only:
        return grad
    out: dict = {}
    start = 0
    for s, n in zip(layout.samples, layout.sizes):
        g = grad[..., start:start + n]
        out[s] = {"nominal": g} if s in layout.dict_samples else g
        start += n
    for t in layout.templates:
        hs = out[t.sample].setdefault("histosys", {})
        hs[t.modifier] = {"hi_data": grad[..., t.start:t.start + t.size],
                          "lo_data": grad[..., t.start + t.size:t.start + 2 * t.size]}
    return out


def parse_sample(model, sample: str, value, where: str):
    """Split one mapping value into ``(nominal, {modifier: (hi, lo)}, given_as_dict)`` after
    checking its keys (tensor types and shapes are checked by the session)."""
    if not isinstance(value, Mapping):
        return value, {}, False
    unknown = [k for k in value if k not in _SAMPLE_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected 'nominal' and optionally 'histosys'")
    if "nominal" not in value:
        raise ValueError(f"{where}: expected a 'nominal' histogram next to 'histosys'")
    hs = value.get("histosys", {})
    if not isinstance(hs, Mapping):
        raise ValueError(f"{where}['histosys']: expected a mapping modifier -> "
                         f"{{'hi_data': h_up, 'lo_data': h_dn}}, got {type(hs).__name__}")
    available = sample_histosys(model, sample)
    out = {}
    for name, tpl in hs.items():
        w = f"{where}['histosys'][{name!r}]"
        if name not in available:
            raise ValueError(f"{w}: sample {sample!r} has no histosys modifier {name!r}; "
                             f"its histosys modifiers are {sorted(available)}")
        if not isinstance(tpl, Mapping) or set(tpl) != set(_TEMPLATE_KEYS):
            got = sorted(tpl) if isinstance(tpl, Mapping) else type(tpl).__name__
            raise ValueError(f"{w}: expected a mapping with exactly 'hi_data' and 'lo_data', got {got}")
        out[name] = (tpl["hi_data"], tpl["lo_data"])
    return value["nominal"], out, True
