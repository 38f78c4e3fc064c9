"""Compile a HistFactory workspace once into flat arrays and a parameter table.

The expected main-bin rate is (HistFactory, CERN-OPEN-2012-016 eq. 1; pyhf's ``Model.expected_data``)::

    nu_b(theta) = sum_s (nom_sb + sum_h delta_hsb(alpha_h)) * prod_k f_ks(theta_k) * prod_g gamma_gb

with additive histosys deltas ``delta``, per-sample scalar factors ``f`` (normfactor, lumi, normsys)
and per-bin factors ``gamma`` (staterror, shapesys, shapefactor). Channels and samples are ordered
by name and parameters in pyhf 0.7.6's order, so parameter vectors and data vectors are
interchangeable with pyhf's (``model.config.par_names``, ``workspace.data(model)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nextstat import workspace as wsmod
from nextstat.engine import layout, threads
from nextstat.engine import numba_core as core
from nextstat.engine.fitter import resolve_fitter
from nextstat.engine.layout import AUX_KIND, AUX_PAR, AUX_SIGMA, AUX_TAU, BLK_B0, BLK_NB, BLK_OFF
from nextstat.model_params import (BUILDER_ORDER, HISTOSYS_CODES, MEASUREMENT_POI, NORMSYS_CODES, MeasurementPOI,
                                   ParamSet, code4_coefficients, interpolation_codes, resolve_poi, shapesys_tau)
from nextstat.workspace import sources
from nextstat.errors import WorkspaceError

class Model:
    """A compiled HistFactory model (create it with :func:`nextstat.from_pyhf`).

    Attributes:
        parameter_names: one name per scalar parameter, pyhf style (``staterror_SR[2]``).
        poi_name, poi_index: the parameter of interest; both None for a model without one
            (``from_pyhf(ws, poi_name=None)``: fits, predictions and plots of the fit work,
            hypothesis tests, limits, scans, toys of a test and rankings refuse it).
        n_params: number of scalar parameters. ``n_bins``: main bins; ``n_aux``: auxiliary data.
        channels, channel_nbins, channel_slices: main-bin layout (channels sorted by name).
        samples: sample names (sorted).
        fixed_params: boolean mask, shape (n_params,).
        data: observed main data followed by the auxiliary data, shape (n_bins + n_aux,).
    """

    def __init__(self, spec: dict, measurement: dict, modifier_settings: Mapping | None = None,
                 poi_name: str | None | MeasurementPOI = MEASUREMENT_POI):
        threads.pin_scipy_blas()  # the kernels' BLAS policy, once per process
        normsys_code, histosys_code = interpolation_codes(modifier_settings)
        self.modifier_settings = {"normsys": {"interpcode": normsys_code}, "histosys": {"interpcode": histosys_code}}

        self.spec = spec
        self.measurement_name = measurement["name"]
        chans = {ch["name"]: (ic, ch) for ic, ch in enumerate(spec["channels"])}
        self.channels = sorted(chans)
        self.channel_nbins = {c: len(chans[c][1]["samples"][0]["data"]) for c in self.channels}
        self.samples = sorted({s["name"] for ch in spec["channels"] for s in ch["samples"]})
        offsets = np.cumsum([0] + [self.channel_nbins[c] for c in self.channels])
        self.channel_slices = {c: slice(int(offsets[i]), int(offsets[i + 1])) for i, c in enumerate(self.channels)}
        self.n_bins = int(offsets[-1])

        # (channel, sample) -> (sample dict, {key: (modifier, path)}, sample path)
        defined: dict[tuple[str, str], tuple[dict, dict, str]] = {}
        mod_keys: set[tuple[str, str]] = set()
        for c in self.channels:
            ic, ch = chans[c]
            for isa, s in enumerate(ch["samples"]):
                mods = {}
                for im, m in enumerate(s["modifiers"]):
                    key = (m["name"], m["type"])
                    path = f"channels[{ic}].samples[{isa}].modifiers[{im}]"
                    if key in mods:
                        raise WorkspaceError(path, f"modifier {m['name']!r} of type {m['type']!r} appears twice on sample {s['name']!r}")
                    mods[key] = (m, path)
                    mod_keys.add(key)
                defined[(c, s["name"])] = (s, mods, f"channels[{ic}].samples[{isa}]")
        self._defined = defined
        modifiers = sorted(mod_keys)

        # --- parameter sets, registered in pyhf's order --------------------------------------
        per_type: dict[str, dict[str, ParamSet]] = {t: {} for t in BUILDER_ORDER}
        for mtype in BUILDER_ORDER:
            if mtype == "staterror":
                continue
            for c in self.channels:
                for sname in self.samples:
                    if (c, sname) not in defined:
                        continue
                    sample, mods, _ = defined[(c, sname)]
                    for key in modifiers:
                        if key[1] != mtype or key not in mods:
                            continue
                        mod, path = mods[key]
                        self._register(per_type[mtype], mtype, mod, path, c, sample)
        self._staterror_sets(per_type["staterror"], modifiers)

        paramsets: dict[str, ParamSet] = {}
        for mtype in BUILDER_ORDER:
            for name, ps in per_type[mtype].items():
                if name in paramsets:
                    paramsets[name] = self._merge(paramsets[name], ps)
                else:
                    paramsets[name] = ps
        user = measurement["config"].get("parameters", [])
        mpath = f"measurements[{spec['measurements'].index(measurement)}].config.parameters"
        type_inits = {name: list(ps.inits) for name, ps in paramsets.items()}
        self._apply_user_config(paramsets, user, mpath)
        self._paramsets = paramsets

        names: list[str] = []
        self.par_slices: dict[str, slice] = {}
        for name, ps in paramsets.items():
            self.par_slices[name] = slice(len(names), len(names) + ps.n)
            names.extend([name] if ps.n == 1 and ps.types[0] in ("normsys", "histosys", "lumi", "normfactor") else [f"{name}[{i}]" for i in range(ps.n)])
        self.parameter_names: list[str] = names
        self.n_params = len(names)
        self._init = np.array([v for ps in paramsets.values() for v in ps.inits], dtype=np.float64)
        self._bounds = np.array([b for ps in paramsets.values() for b in ps.bounds], dtype=np.float64).reshape(-1, 2)
        # the modifier types' own initial values (pyhf's defaults, before the measurement's
        # ``inits``; lumi: its auxdata), inside the bounds: a retry start of the fits
        self._type_init = np.clip(np.array(
            [v if v is not None else ps.auxdata[i] for name, ps in paramsets.items()
             for i, v in enumerate(type_inits[name])], dtype=np.float64), self._bounds[:, 0], self._bounds[:, 1])
        self.fixed_params = np.array([f for ps in paramsets.values() for f in ps.fixed], dtype=bool)

        poi = resolve_poi(paramsets, measurement, spec["measurements"].index(measurement), poi_name)
        self.poi_name: str | None = poi
        self.poi_index: int | None = None if poi is None else self.par_slices[poi].start

        self._build_arrays(normsys_code, histosys_code)
        self._build_data()
        self._check_rates()
        # hot-path caches: the arrays packed into two buffers (cheap compiled calls), the
        # default bounds as contiguous columns, the names as a tuple (read-only)
        self.packed = core.pack(self.arrays, self.aux_arrays)
        self._lo = np.ascontiguousarray(self._bounds[:, 0])
        self._hi = np.ascontiguousarray(self._bounds[:, 1])
        self._names = tuple(self.parameter_names)

    # ----------------------------------------------------------------- parameter sets
    def _register(self, table: dict, mtype: str, mod: dict, path: str, channel: str, sample: dict) -> None:
        name = mod["name"]
        n = self.channel_nbins[channel]
        if mtype in ("normsys", "histosys"):
            ps = ParamSet(name, "normal", 1, [0.0], [(-5.0, 5.0)], [False], [0.0], [1.0])
        elif mtype == "lumi":
            ps = ParamSet(name, "normal", 1, [None], [None], [False], [None], [None])
        elif mtype == "normfactor":
            ps = ParamSet(name, "free", 1, [1.0], [(0.0, 10.0)], [False])
        elif mtype == "shapefactor":
            ps = ParamSet(name, "free", n, [1.0] * n, [(0.0, 10.0)] * n, [False] * n)
        elif mtype == "shapesys":
            if name in table:
                raise WorkspaceError(f"{path}.name", f"shapesys modifier {name!r} is defined on more than one sample; shapesys parameters cannot be shared")
            nom, unc = sample["data"], mod["data"]
            valid = [x > 0 and u > 0 for x, u in zip(nom, unc)]
            tau = [shapesys_tau(x, u, f"{path}.data[{j}]") if ok else 1.0
                   for j, (ok, x, u) in enumerate(zip(valid, nom, unc))]
            ps = ParamSet(name, "poisson", n, [1.0] * n, [(1e-10, 10.0)] * n, [not v for v in valid], tau, None, tau)
        else:  # pragma: no cover - staterror handled separately
            raise AssertionError(mtype)
        ps.types = (mtype,)
        if name in table:
            old = table[name]
            if old.n != ps.n:
                raise WorkspaceError(f"{path}.name", f"{mtype} parameter {name!r} is used on channels with different bin counts ({old.n} and {ps.n})")
            return
        table[name] = ps

    def _staterror_sets(self, table: dict, modifiers: list) -> None:
        for key in modifiers:
            name, mtype = key
            if mtype != "staterror":
                continue
            mask = np.zeros(self.n_bins, dtype=bool)
            nomsall = np.zeros(self.n_bins)
            uncs = []
            for (c, _), (sample, mods, _) in self._defined.items():
                if key in mods:
                    sl = self.channel_slices[c]
                    mask[sl] = True
                    with np.errstate(over="ignore"):  # an infinite total is refused by _check_rates
                        nomsall[sl] += np.array(sample["data"], dtype=float)  # JSON ints of any size
                    u = np.zeros(self.n_bins)
                    u[sl] = mods[key][0]["data"]
                    uncs.append(u)
            rel2 = np.zeros(self.n_bins)
            with np.errstate(over="ignore"):  # pyhf: (unc / nominal)**2 summed, 0 where nominal <= 0
                for u in uncs:
                    rel2 += np.divide(u, nomsall, out=np.zeros_like(u), where=nomsall > 0) ** 2
            if not np.all(np.isfinite(rel2)):
                b = int(np.flatnonzero(~np.isfinite(rel2))[0])
                path = next(mods[key][1] for (c, _), (_, mods, _) in self._defined.items()
                            if key in mods and self.channel_slices[c].start <= b < self.channel_slices[c].stop)
                raise WorkspaceError(f"{path}.data", f"staterror {name!r}: the relative uncertainty of global bin {b} "
                                                     "(uncertainty / total nominal) squared overflows float64")
            sig = np.sqrt(rel2)[mask]
            fixed = sig == 0
            sig[fixed] = 1.0
            n = int(mask.sum())
            ps = ParamSet(name, "normal", n, [1.0] * n, [(1e-10, 10.0)] * n, fixed.tolist(), [1.0] * n, sig.tolist())
            ps.types = ("staterror",)
            table[name] = ps

    @staticmethod
    def _merge(a: ParamSet, b: ParamSet) -> ParamSet:
        same = (a.kind, a.n, a.inits, a.bounds, a.auxdata, a.sigmas) == (b.kind, b.n, b.inits, b.bounds, b.auxdata, b.sigmas)
        if not same:
            raise WorkspaceError("channels", f"parameter {a.name!r} is used by modifiers of incompatible types ({a.types[0]} and {b.types[0]}); use distinct names")
        a.types = a.types + b.types
        return a

    @staticmethod
    def _apply_user_config(paramsets: dict, user: Sequence[dict], path: str) -> None:
        seen = set()
        for ip, cfg in enumerate(user):
            name = cfg["name"]
            ppath = f"{path}[{ip}]"
            if name in seen:
                raise WorkspaceError(f"{ppath}.name", f"parameter {name!r} is configured twice")
            seen.add(name)
            if name not in paramsets:
                continue  # pyhf ignores configurations of parameters the model does not have
            ps = paramsets[name]
            for field in ("inits", "auxdata", "sigmas"):
                if field in cfg:
                    if field != "inits" and ps.kind != "normal":
                        raise WorkspaceError(f"{ppath}.{field}", f"parameter {name!r} ({ps.types[0]}) does not use {field!r}")
                    setattr(ps, field, wsmod.numbers(cfg[field], f"{ppath}.{field}", ps.n))
            if "bounds" in cfg:
                b = cfg["bounds"]
                if not isinstance(b, list) or len(b) != ps.n:
                    raise WorkspaceError(f"{ppath}.bounds", f"expected {ps.n} [low, high] pairs")
                bounds = []
                for i, pair in enumerate(b):
                    lo, hi = wsmod.numbers(pair, f"{ppath}.bounds[{i}]", 2)
                    if not lo <= hi:
                        raise WorkspaceError(f"{ppath}.bounds[{i}]", f"low bound {lo} above high bound {hi}")
                    bounds.append((lo, hi))
                ps.bounds = bounds
            if "fixed" in cfg:
                fx = cfg["fixed"]
                if isinstance(fx, bool):
                    ps.fixed = [fx] * ps.n
                elif isinstance(fx, list) and len(fx) == ps.n and all(isinstance(x, bool) for x in fx):
                    ps.fixed = list(fx)
                else:
                    raise WorkspaceError(f"{ppath}.fixed", f"expected a bool or {ps.n} bools")
        for name, ps in paramsets.items():
            if "lumi" in ps.types:
                for field in ("auxdata", "sigmas"):
                    if getattr(ps, field)[0] is None:
                        raise WorkspaceError(path, f"lumi parameter {name!r} needs {field!r} in the measurement's parameter configuration")
                if ps.inits[0] is None:
                    ps.inits = list(ps.auxdata)
                if ps.bounds[0] is None:
                    ps.bounds = [(0.0, 10.0)]
            for i, (lo, hi) in enumerate(ps.bounds):
                if not lo <= ps.inits[i] <= hi:
                    raise WorkspaceError(path, f"initial value {ps.inits[i]} of {name!r} lies outside its bounds [{lo}, {hi}]")
            if ps.sigmas is not None and any(s <= 0 for s in ps.sigmas):
                raise WorkspaceError(path, f"constraint widths (sigmas) of {name!r} must be > 0")

    # ----------------------------------------------------------------- engine arrays
    def _build_arrays(self, normsys_code: str, histosys_code: str) -> None:
        blk_b0, blk_nb, blk_off, blk_channel, blk_sample = [], [], [], [], []
        nom: list[float] = []
        sc_ptr, sc_par, sc_kind, sc_lhi, sc_llo, sc_coef = [0], [], [], [], [], []
        hs_ptr, hs_par, hs_code, hs_up, hs_dn = [0], [], [], [], []
        pb_ptr, pb_par = [0], []
        for c in self.channels:
            sl = self.channel_slices[c]
            for sname in self.samples:
                if (c, sname) not in self._defined:
                    continue
                sample, mods, _ = self._defined[(c, sname)]
                n = sl.stop - sl.start
                off = len(nom)
                blk_b0.append(sl.start)
                blk_nb.append(n)
                blk_off.append(off)
                blk_channel.append(c)
                blk_sample.append(sname)
                nom.extend(sample["data"])
                per_bin: list[list[int]] = [[] for _ in range(n)]
                # scalar terms in parameter order: the exact Hessian's pair loop then runs along
                # rows of H with predictable branches
                scalars: list[tuple[int, int, float, float, np.ndarray]] = []
                for (mname, mtype), (mod, path) in sorted(mods.items()):
                    psl = self.par_slices[mname]
                    if mtype in ("normfactor", "lumi"):
                        scalars.append((psl.start, core.SC_LINEAR, 0.0, 0.0, np.zeros(6)))
                    elif mtype == "normsys":
                        hi, lo = float(mod["data"]["hi"]), float(mod["data"]["lo"])
                        # factors are > 0 (workspace validation)
                        coef = code4_coefficients(hi, lo)
                        if normsys_code == "code4" and not np.all(np.isfinite(coef)):
                            raise WorkspaceError(f"{path}.data", f"normsys factors hi={hi!r}, lo={lo!r} are too large for "
                                                                 "the code4 interpolation (its coefficients overflow float64)")
                        scalars.append((psl.start, NORMSYS_CODES[normsys_code], math.log(hi), math.log(lo), coef))
                    elif mtype == "histosys":
                        hs_par.append(psl.start)
                        hs_code.append(HISTOSYS_CODES[histosys_code])
                        # delta arrays live in flat per-block-bin storage aligned with `nom`
                        hs_up.append(np.asarray(mod["data"]["hi_data"], float) - np.asarray(sample["data"], float))
                        hs_dn.append(np.asarray(sample["data"], float) - np.asarray(mod["data"]["lo_data"], float))
                    elif mtype in ("shapesys", "shapefactor"):
                        for j in range(n):
                            per_bin[j].append(psl.start + j)
                    elif mtype == "staterror":
                        # parameters cover the masked global bins in order
                        masked = self._staterror_bins(mname)
                        for j in range(n):
                            per_bin[j].append(psl.start + masked.index(sl.start + j))
                for par, kind, lhi, llo, coef in sorted(scalars, key=lambda term: term[0]):
                    sc_par.append(par)
                    sc_kind.append(kind)
                    sc_lhi.append(lhi)
                    sc_llo.append(llo)
                    sc_coef.append(coef)
                sc_ptr.append(len(sc_par))
                hs_ptr.append(len(hs_par))
                for j in range(n):
                    pb_par.extend(per_bin[j])
                    pb_ptr.append(len(pb_par))
        up_flat = np.zeros(sum(len(u) for u in hs_up))
        dn_flat = np.zeros_like(up_flat)
        pos = 0
        hs_data_off = []
        for u, d in zip(hs_up, hs_dn):
            up_flat[pos:pos + len(u)] = u
            dn_flat[pos:pos + len(d)] = d
            hs_data_off.append(pos)
            pos += len(u)
        self.block_channel = blk_channel
        self.block_sample = blk_sample
        self.arrays = layout.model_arrays(
            blk_b0=blk_b0, blk_nb=blk_nb, blk_off=blk_off, nom=nom, sc_ptr=sc_ptr, sc_par=sc_par, sc_kind=sc_kind,
            sc_lhi=sc_lhi, sc_llo=sc_llo, sc_coef=sc_coef, hs_ptr=hs_ptr, hs_par=hs_par, hs_code=hs_code,
            hs_doff=hs_data_off, hs_up=up_flat, hs_dn=dn_flat, pb_ptr=pb_ptr, pb_par=pb_par, n_bins=self.n_bins)

    def _staterror_bins(self, name: str) -> list[int]:
        cache = self.__dict__.setdefault("_staterror_cache", {})
        if name not in cache:
            mask = np.zeros(self.n_bins, dtype=bool)
            for (c, _), (_, mods, _) in self._defined.items():
                if (name, "staterror") in mods:
                    mask[self.channel_slices[c]] = True
            cache[name] = np.flatnonzero(mask).tolist()
        return cache[name]

    def _build_data(self) -> None:
        obs = {o["name"]: o["data"] for o in self.spec["observations"]}
        self.main_data = np.concatenate([np.asarray(obs[c], float) for c in self.channels])
        aux_par, aux_kind, aux_sigma, aux_tau, aux_data = [], [], [], [], []
        for name, ps in self._paramsets.items():
            if ps.kind == "free":
                continue
            sl = self.par_slices[name]
            for i in range(ps.n):
                aux_par.append(sl.start + i)
                aux_data.append(ps.auxdata[i])
                if ps.kind == "normal":
                    aux_kind.append(core.AUX_GAUSS)
                    aux_sigma.append(ps.sigmas[i])
                    aux_tau.append(1.0)
                else:
                    aux_kind.append(core.AUX_POISSON)
                    aux_sigma.append(1.0)
                    aux_tau.append(ps.factors[i])
        self.aux_arrays = layout.aux_arrays(aux_par, aux_kind, aux_sigma, aux_tau)
        self.aux_data = np.asarray(aux_data, float)
        self.n_aux = len(aux_data)
        self.data = np.concatenate([self.main_data, self.aux_data])

    def _check_rates(self) -> None:
        # on the engine of the first fit (nextstat.engine.fitter): no compiling on a first use
        nu = resolve_fitter(None, "expected_main").expected_main(self, self._init)
        bad = np.flatnonzero((nu < 0) | ((nu == 0) & (self.main_data > 0)) | ~np.isfinite(nu))
        if bad.size:
            b = int(bad[0])
            c = next(c for c in self.channels if self.channel_slices[c].start <= b < self.channel_slices[c].stop)
            j = b - self.channel_slices[c].start
            ic = [ch["name"] for ch in self.spec["channels"]].index(c)
            raise WorkspaceError(f"channels[{ic}].samples", f"bin {j} of channel {c!r} has total expected yield {float(nu[b])!r} at the initial parameters, "
                                 f"with {float(self.main_data[b])!r} observed: the likelihood is undefined")

    # ----------------------------------------------------------------- public API
    def suggested_init(self) -> np.ndarray:
        """Initial parameter values, shape (n_params,)."""
        return self._init.copy()

    def suggested_bounds(self) -> np.ndarray:
        """Parameter bounds, shape (n_params, 2): columns low, high."""
        return self._bounds.copy()

    def prior_widths(self) -> np.ndarray:
        """Prior constraint width per parameter (shape (n_params,)); NaN for unconstrained ones.

        Gaussian constraints give their sigma; Poisson (shapesys) constraints 1/sqrt(tau)
        (inf for tau = 0, a constraint that does not constrain).
        """
        w = np.full(self.n_params, np.nan)
        par = self.aux_arrays[AUX_PAR]
        kind = self.aux_arrays[AUX_KIND]
        sigma = self.aux_arrays[AUX_SIGMA]
        tau = self.aux_arrays[AUX_TAU]
        with np.errstate(divide="ignore"):
            w[par] = np.where(kind == core.AUX_GAUSS, sigma, 1.0 / np.sqrt(tau))
        return w

    @property
    def constrained(self) -> np.ndarray:
        """Boolean mask of parameters with a constraint term, shape (n_params,)."""
        m = np.zeros(self.n_params, dtype=bool)
        m[self.aux_arrays[AUX_PAR]] = True
        return m

    def _pars(self, pars: Any, name: str = "pars") -> np.ndarray:
        p = np.asarray(pars, dtype=np.float64)
        if p.shape != (self.n_params,):
            raise ValueError(f"{name}: expected shape ({self.n_params},), got {p.shape}")
        if not np.all(np.isfinite(p)):
            bad = int(np.flatnonzero(~np.isfinite(p))[0])
            raise ValueError(f"{name}: value {p[bad]!r} of parameter {self.parameter_names[bad]!r} is not finite")
        return np.ascontiguousarray(p)

    def _data(self, data: Any) -> np.ndarray:
        if data is None:
            return self.data
        d = np.asarray(data, dtype=np.float64)
        n = self.n_bins + self.n_aux
        if d.shape == (self.n_bins,):
            d = np.concatenate([d, self.aux_data])
        if d.shape != (n,):
            raise ValueError(f"data: expected shape ({n},) (main + auxiliary) or ({self.n_bins},) (main only), got {d.shape}")
        if not np.all(np.isfinite(d)):
            raise ValueError("data: contains non-finite values")
        if np.any(d[: self.n_bins] < 0):
            raise ValueError("data: main-bin counts must be >= 0")
        return np.ascontiguousarray(d)

    def expected_main(self, pars: Any) -> np.ndarray:
        """Expected main-bin rates nu(pars), shape (n_bins,)."""
        return core.expected_main(self._pars(pars), self.arrays)

    def expected_auxdata(self, pars: Any) -> np.ndarray:
        """Expected auxiliary data: theta (Gaussian) or tau * gamma (Poisson), shape (n_aux,)."""
        p = self._pars(pars)
        par, kind, tau = self.aux_arrays[AUX_PAR], self.aux_arrays[AUX_KIND], self.aux_arrays[AUX_TAU]
        return np.where(kind == core.AUX_GAUSS, p[par], p[par] * tau)

    def expected_data(self, pars: Any, include_auxdata: bool = True) -> np.ndarray:
        """Expected data: main rates, then (by default) the expected auxiliary data (pyhf order)."""
        main = self.expected_main(pars)
        return np.concatenate([main, self.expected_auxdata(pars)]) if include_auxdata else main

    def expected_blocks(self, pars: Any) -> np.ndarray:
        """Expected yields of every (channel, sample) block's bins, flat in the model's block order
        (``block_channel``, ``block_sample``), shape (n_block_bins,)."""
        return core.expected_blocks(self._pars(pars), self.arrays)

    def rates_jacobian(self, pars: Any, *, per_block: bool = False) -> np.ndarray:
        """Jacobian of the expected main rates in the parameters, shape (n_bins, n_params); with
        ``per_block``, of the flat block yields (:meth:`expected_blocks`), shape
        (n_block_bins, n_params). Analytic (the engine's model pass)."""
        A = layout.flat_layout(self.arrays) if per_block else self.arrays
        return core.rates_jacobian(self._pars(pars), A)[1]

    def expected_by_sample(self, pars: Any) -> dict[str, np.ndarray]:
        """Expected main-bin yields per sample, each of shape (n_bins,) (zero where undefined)."""
        per_block = self.expected_blocks(pars)
        out = {s: np.zeros(self.n_bins) for s in self.samples}
        blk_b0, blk_nb, blk_off = self.arrays[BLK_B0], self.arrays[BLK_NB], self.arrays[BLK_OFF]
        for i, s in enumerate(self.block_sample):
            out[s][blk_b0[i]:blk_b0[i] + blk_nb[i]] = per_block[blk_off[i]:blk_off[i] + blk_nb[i]]
        return out

    def nll(self, pars: Any, data: Any = None) -> float:
        """Negative log-likelihood, ``-log L(pars | data)`` with all constants (= -pyhf ``logpdf``).

        Args:
            pars: shape (n_params,).
            data: main + auxiliary data (shape (n_bins + n_aux,)) or main only; default observed.
        """
        return float(core.nll(self._pars(pars), self._data(data), self.arrays, self.aux_arrays))

    def grad_nll(self, pars: Any, data: Any = None) -> np.ndarray:
        """Analytic gradient of :meth:`nll`, shape (n_params,)."""
        return core.nll_grad(self._pars(pars), self._data(data), self.arrays, self.aux_arrays)[1]

    def hess_nll(self, pars: Any, data: Any = None) -> np.ndarray:
        """Analytic Hessian of :meth:`nll`, shape (n_params, n_params)."""
        return core.nll_grad_hess(self._pars(pars), self._data(data), self.arrays, self.aux_arrays, True)[2]

    def with_nominal(self, sample: str, nominal: Any) -> Model:  # pragma: no cover - torch layer
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"Model(channels={len(self.channels)}, bins={self.n_bins}, samples={len(self.samples)}, "
                f"parameters={self.n_params}, poi={self.poi_name!r})")


def require_model(model: Any) -> Model:
    """``model`` itself; TypeError naming the argument when it is not a compiled :class:`Model`."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a nextstat.Model (nextstat.from_pyhf(...)), got {type(model).__name__}")
    return model


def from_pyhf(ws: Any, *, measurement: str | None = None,
              poi_name: str | None | MeasurementPOI = MEASUREMENT_POI,
              modifier_settings: Mapping | None = None, patches: Any = None,
              patch_name: str | Sequence | None = None, data: Any = None, validate: bool = True) -> Model:
    """Build a :class:`Model` from a pyhf JSON workspace.

    Args:
        ws: workspace ``dict`` (a ``pyhf.Workspace`` is one), JSON string, path to ``.json`` /
            ``.json.gz``, or a ``pyhf.Model`` (its channels, parameter configurations, POI and
            modifier settings; it carries no data, so pass ``data``).
        measurement: measurement name (default: the first one), which sets POI and parameter configs.
        poi_name: the parameter of interest, as pyhf's ``Workspace.model(poi_name=...)``:
            by default the measurement's ``config.poi``; a parameter name to choose another;
            ``None`` for a model without a POI (e.g. a background-only workspace from HEPData,
            whose measurement names a signal strength that only the signal patches add).
        modifier_settings: interpolation codes as in pyhf 0.7.6, e.g.
            ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}``.
            ``None``: pyhf's defaults (normsys code4, histosys code4p). A dict replaces them as a
            whole, as in pyhf: a type it leaves out gets pyhf's applier default (normsys code1,
            histosys code0), so ``{}`` means code1 / code0. ``model.modifier_settings`` holds the
            codes in use.
        patches: JSON Patches (RFC 6902) applied in order, e.g. a signal patch on a
            background-only workspace as published on HEPData: a list of patches, each an
            operation list, a pyhf patch entry ``{"metadata": ..., "patch": [...]}``, one
            operation, JSON text, a path or a ``pyhf.patchset.Patch``; or one such patch on its
            own (:func:`nextstat.workspace.apply_patches`). With ``patch_name``: one pyhf
            patchset (a ``pyhf.PatchSet``, its dict, JSON text or file).
        patch_name: the patch of the patchset ``patches`` to apply, by name or values (its
            digests are verified against ``ws`` first, as ``pyhf patchset apply`` does).
        data: the observed data of a ``pyhf.Model`` only: main bins, or main + auxiliary data
            as pyhf's ``workspace.data(model)``.

    Raises:
        WorkspaceError: malformed workspace or patch, or an unreadable file (the message names
            the JSON path, or the file).
        ValueError: bad arguments (``modifier_settings[...]``, ``measurement``, ``poi_name``,
            ``patch_name``, ``data``).
        TypeError: ``ws``, ``patches`` or ``poi_name`` of an unsupported type.
    """
    if sources.is_pyhf_model(ws):
        if measurement is not None:
            raise ValueError("measurement: a pyhf.Model carries the configuration of one measurement; "
                             "give the pyhf.Workspace to choose another")
        spec, model_poi, model_settings = sources.pyhf_model_workspace(ws, data)
        poi_name = model_poi if poi_name is MEASUREMENT_POI else poi_name
        modifier_settings = model_settings if modifier_settings is None else modifier_settings
    elif data is not None:
        raise ValueError("data: only for a pyhf.Model (a workspace carries its observations); to fit other "
                         "data pass them to the inference, e.g. nextstat.fit(model, data=...)")
    else:
        spec = wsmod.load(ws)
    spec = sources.apply_patch_args(spec, patches, patch_name)
    if validate:
        wsmod.validate(spec)
    meas = wsmod.select_measurement(spec, measurement)
    return Model(spec, meas, modifier_settings, poi_name)
