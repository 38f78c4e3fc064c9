"""pyhf JSON <-> HS3, the HistFactory dialect of ROOT's ``RooJSONFactoryWSTool``.

HS3 (HEP Statistics Serialization Standard, version 0.2) describes each channel as a
``histfactory_dist`` distribution; :func:`to_hs3` writes a pyhf workspace in the layout ROOT
writes and reads (ROOT >= 6.30), and which the ``pyhs3`` package validates; :func:`from_hs3`
reads such a document (from ROOT, pyhs3 or :func:`to_hs3`) back into pyhf JSON.

Layout written (ROOT's names)::

    distributions  model_<channel>: histfactory_dist (axes obs_x_<channel>: 0..n, samples,
                   modifiers) and one gaussian_dist per lumi parameter (lumiConstraint)
    data           obsData_<channel>: binned observations
    likelihoods    simPdf_obsData: the channels paired with their data; the lumi constraints
                   as aux_distributions
    analyses       one per measurement: POI, its domain and its parameter_points ("init")
    domains        default_domain (first measurement), <measurement>_domain: parameter bounds
    parameter_points  default_values, <measurement>_values: initial values, const = fixed,
                   and the global observable of each lumi (nominalLumi = auxdata)

Modifiers: normfactor ``mu`` -> parameter ``mu``; normsys/histosys ``x`` -> ``alpha_x``,
Gaussian constraint (``"constraint": "Gauss"``); lumi ``lumi`` -> normfactor ``Lumi`` with
``"constraint_name": "lumiConstraint"`` (Gaussian, mean ``nominalLumi``, sigma); staterror,
shapesys, shapefactor ``s`` -> per-bin parameters ``gamma_s_bin_<i>`` (staterror
``staterror_<channel>``: ``gamma_stat_<channel>_bin_<i>``, ROOT's default). A staterror's
absolute per-sample uncertainties are the sample's ``data.errors`` (BB-lite: the channel's
relative uncertainty is ``sqrt(sum errors^2) / sum contents`` over the samples carrying it, as in
pyhf); a shapesys's ``data.vals`` are relative uncertainties (uncertainty / nominal), as ROOT
writes and reads them. Interpolation is not written: pyhf's normsys code4 and histosys code4p
are ROOT's defaults (FlexibleInterpVar and PiecewiseInterpolation code 4).

Reading maps ROOT's conventions back (``Lumi`` -> ``lumi``, ``alpha_`` stripped, a
Gaussian-constrained normfactor is a lumi modifier, a shapesys without uncertainties is a
shapefactor) and refuses what pyhf JSON cannot hold (naming the field): other interpolations,
non-Gaussian constraints of normsys/histosys/staterror, Gaussian shapesys, custom modifiers,
non-HistFactory distributions in the likelihood. Measurement parameter configurations are
written for values that differ from pyhf's defaults, and for the keys the original pyhf
configuration set; :func:`to_hs3` keeps those keys, and the configurations of parameters no
modifier uses and observations of no channel (which pyhf ignores), in ``misc.nextstat``, so
that pyhf JSON -> HS3 -> pyhf JSON gives the same document.

Known difference: pyhs3 0.4 reads shapesys ``vals`` as absolute uncertainties (ROOT: relative).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nextstat import workspace as wsmod
from nextstat._version import __version__
from nextstat.errors import WorkspaceError

__all__ = ["HS3_VERSION", "LIKELIHOOD", "from_hs3", "to_hs3"]

HS3_VERSION = "0.2"
#: name of the likelihood :func:`to_hs3` writes (ROOT's default)
LIKELIHOOD = "simPdf_obsData"

#: pyhf 0.7.6's parameter defaults by modifier type: initial value and bounds (lumi: the
#: initial value is its auxdata). Pinned against :class:`nextstat.Model` in the tests.
PYHF_DEFAULTS: dict[str, tuple[float | None, tuple[float, float]]] = {
    "normfactor": (1.0, (0.0, 10.0)), "shapefactor": (1.0, (0.0, 10.0)),
    "normsys": (0.0, (-5.0, 5.0)), "histosys": (0.0, (-5.0, 5.0)),
    "staterror": (1.0, (1e-10, 10.0)), "shapesys": (1.0, (1e-10, 10.0)), "lumi": (None, (0.0, 10.0)),
}
_KIND = {"normsys": "alpha", "histosys": "alpha"}  # modifier types sharing one parameter kind
_CONFIG_KEYS = ("auxdata", "bounds", "fixed", "inits", "sigmas")


@dataclass(frozen=True)
class _Par:
    """A pyhf parameter and its HS3 names (one, or one per bin)."""

    name: str
    mtype: str
    names: tuple[str, ...]


def _gamma_names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"gamma_{prefix}_bin_{i}" for i in range(n))


def _hs3_names(mtype: str, name: str, channel: str, n: int) -> tuple[str, ...]:
    if mtype in ("normsys", "histosys"):
        return (f"alpha_{name}",)
    if mtype == "lumi":
        return ("Lumi" if name == "lumi" else name,)
    if mtype == "normfactor":
        return (name,)
    if mtype == "staterror" and name == f"staterror_{channel}":
        return _gamma_names(f"stat_{channel}", n)
    return _gamma_names(name, n)


def _lumi_names(par: _Par) -> tuple[str, str]:
    """(constraint distribution, global observable) of a lumi parameter (ROOT's names for 'lumi')."""
    return ("lumiConstraint", "nominalLumi") if par.name == "lumi" else (f"{par.name}Constraint", f"nom_{par.name}")


def _parameters(spec: dict) -> dict[str, _Par]:
    """Every pyhf parameter of the workspace, in order of first use."""
    pars: dict[str, _Par] = {}
    owner: dict[str, str] = {}
    for ic, ch in enumerate(spec["channels"]):
        n = len(ch["samples"][0]["data"])
        for isa, sample in enumerate(ch["samples"]):
            for im, mod in enumerate(sample["modifiers"]):
                path = f"channels[{ic}].samples[{isa}].modifiers[{im}]"
                mtype, name = mod["type"], mod["name"]
                par = _Par(name, mtype, _hs3_names(mtype, name, ch["name"], n))
                old = pars.setdefault(name, par)
                if _KIND.get(old.mtype, old.mtype) != _KIND.get(mtype, mtype) or old.names != par.names:
                    raise WorkspaceError(path, f"parameter {name!r} is used by {old.mtype} and {mtype} modifiers "
                                               "(or on channels of different bin counts); HS3 cannot hold it")
                for hs3 in par.names:
                    if owner.setdefault(hs3, name) != name:
                        raise WorkspaceError(path, f"the HS3 parameter name {hs3!r} would stand for the pyhf "
                                                   f"parameters {owner[hs3]!r} and {name!r}")
    return pars


def _effective(par: _Par, config: Mapping[str, Any], n: int, where: str) -> dict[str, Any]:
    """Initial values, bounds and fixed flags (one per HS3 name) of a parameter in a measurement."""
    init, bounds = PYHF_DEFAULTS[par.mtype]
    if par.mtype == "lumi":
        if "auxdata" not in config or "sigmas" not in config:
            raise WorkspaceError(where, f"lumi parameter {par.name!r} needs auxdata and sigmas in the "
                                        "measurement's parameter configuration")
        init = wsmod.numbers(config["auxdata"], f"{where}.auxdata", 1)[0]
    elif "auxdata" in config or "sigmas" in config:
        raise WorkspaceError(where, f"auxdata/sigmas of the {par.mtype} parameter {par.name!r} cannot be written "
                                    "to HS3 (only the lumi constraint's are)")
    inits = wsmod.numbers(config["inits"], f"{where}.inits", n) if "inits" in config else [init] * n
    pairs = [wsmod.numbers(b, f"{where}.bounds[{i}]", 2) for i, b in enumerate(config["bounds"])] \
        if "bounds" in config else [list(bounds)] * n
    if len(pairs) != n:
        raise WorkspaceError(f"{where}.bounds", f"expected {n} [low, high] pairs")
    fixed = config.get("fixed", False)
    fixed = list(fixed) if isinstance(fixed, list) else [bool(fixed)] * n
    if len(fixed) != n:
        raise WorkspaceError(f"{where}.fixed", f"expected a bool or {n} bools")
    return {"inits": inits, "bounds": pairs, "fixed": fixed}


def _exact_ratio(a: float, b: float) -> float:
    """``a / b``, nudged by up to two ulps so that ``ratio * b == a`` where such a float exists
    (a shapesys round trip relative -> absolute then gives the original number)."""
    if b == 0:
        return 0.0
    r = a / b
    for cand in (r, math.nextafter(r, math.inf), math.nextafter(r, -math.inf),
                 math.nextafter(math.nextafter(r, math.inf), math.inf),
                 math.nextafter(math.nextafter(r, -math.inf), -math.inf)):
        if cand * b == a:
            return cand
    return r


def _modifier(mod: dict, par: _Par, sample: dict) -> dict:
    mtype, name = mod["type"], mod["name"]
    if mtype == "normfactor":
        return {"name": name, "parameter": par.names[0], "type": "normfactor"}
    if mtype == "lumi":
        return {"name": name, "parameter": par.names[0], "type": "normfactor", "constraint_name": _lumi_names(par)[0]}
    if mtype == "normsys":
        return {"name": name, "parameter": par.names[0], "type": "normsys", "constraint": "Gauss",
                "data": {"hi": float(mod["data"]["hi"]), "lo": float(mod["data"]["lo"])}}
    if mtype == "histosys":
        return {"name": name, "parameter": par.names[0], "type": "histosys", "constraint": "Gauss",
                "data": {"hi": {"contents": [float(x) for x in mod["data"]["hi_data"]]},
                         "lo": {"contents": [float(x) for x in mod["data"]["lo_data"]]}}}
    if mtype == "shapesys":
        vals = [_exact_ratio(float(u), float(x)) for u, x in zip(mod["data"], sample["data"])]
        return {"name": name, "parameters": list(par.names), "type": "shapesys", "constraint": "Poisson",
                "data": {"vals": vals}}
    if mtype == "shapefactor":
        return {"name": name, "parameters": list(par.names), "type": "shapefactor"}
    return {"name": name, "parameters": list(par.names), "type": "staterror", "constraint": "Gauss"}


def to_hs3(ws: Any, *, patches: Sequence[Any] | None = None) -> dict:
    """Write a pyhf JSON workspace as an HS3 document (ROOT's HistFactory layout, module docstring).

    Args:
        ws: workspace (``dict``, JSON text or path). patches: JSON Patches applied first.

    Returns:
        The HS3 document (``metadata``, ``distributions``, ``data``, ``likelihoods``,
        ``analyses``, ``domains``, ``parameter_points``, ``misc``).

    Raises:
        WorkspaceError: a malformed workspace, or one HS3 cannot hold: two staterror modifiers
            in one channel, auxdata/sigmas set for parameters other than lumi, lumi widths
            that differ between measurements, parameter names that collide in HS3.

    >>> from nextstat import examples
    >>> doc = to_hs3(examples.simple_workspace())
    >>> [d["name"] for d in doc["distributions"]]
    ['model_SR', 'model_CR', 'lumiConstraint']
    >>> doc["analyses"][0]["parameters_of_interest"]
    ['mu']
    """
    spec = wsmod.apply_patches(wsmod.load(ws), patches)
    wsmod.validate(spec)
    pars = _parameters(spec)
    dists, data = [], []
    for ic, ch in enumerate(spec["channels"]):
        cname, n = ch["name"], len(ch["samples"][0]["data"])
        stat = sorted({m["name"] for s in ch["samples"] for m in s["modifiers"] if m["type"] == "staterror"})
        if len(stat) > 1:
            raise WorkspaceError(f"channels[{ic}]", f"channel {cname!r} has several staterror modifiers {stat}; "
                                                    "an HS3 channel has one (BB-lite)")
        axes = [{"name": f"obs_x_{cname}", "min": 0.0, "max": float(n), "nbins": n}]
        samples = []
        for sample in ch["samples"]:
            contents = {"contents": [float(x) for x in sample["data"]]}
            for mod in sample["modifiers"]:
                if mod["type"] == "staterror":
                    contents["errors"] = [float(x) for x in mod["data"]]
            samples.append({"name": sample["name"], "data": contents,
                            "modifiers": [_modifier(m, pars[m["name"]], sample) for m in sample["modifiers"]]})
        dist = {"name": f"model_{cname}", "type": "histfactory_dist", "axes": axes, "samples": samples}
        if stat:  # ROOT reads the staterror constraint type here (its default is Poisson)
            dist["staterror"] = {"constraint_type": "Gauss"}
        dists.append(dist)
        obs = next(o for o in spec["observations"] if o["name"] == cname)
        data.append({"name": f"obsData_{cname}", "type": "binned", "axes": [dict(a) for a in axes],
                     "contents": [float(x) for x in obs["data"]]})
    channel_names = {ch["name"] for ch in spec["channels"]}
    lumis = [p for p in pars.values() if p.mtype == "lumi"]
    analyses, domains, points, hints, unused = [], [], [], {}, {}
    sigmas: dict[str, float] = {}
    for im, meas in enumerate(spec["measurements"]):
        mname = meas["name"]
        configs = {c["name"]: c for c in meas["config"].get("parameters", [])}
        hints[mname] = {k: sorted(set(c) & set(_CONFIG_KEYS)) for k, c in configs.items() if k in pars}
        unused[mname] = [c for k, c in configs.items() if k not in pars]  # no model meaning: kept in misc
        axes, values = [], []
        for par in pars.values():
            where = f"measurements[{im}].config.parameters[{par.name!r}]"
            eff = _effective(par, configs.get(par.name, {}), len(par.names), where)
            for i, hs3 in enumerate(par.names):
                axes.append({"name": hs3, "min": eff["bounds"][i][0], "max": eff["bounds"][i][1]})
                point = {"name": hs3, "value": eff["inits"][i]}
                if eff["fixed"][i]:
                    point["const"] = True
                values.append(point)
            if par.mtype == "lumi":
                aux = float(configs[par.name]["auxdata"][0])
                sigma = float(configs[par.name]["sigmas"][0])
                if sigmas.setdefault(par.name, sigma) != sigma:
                    raise WorkspaceError(f"{where}.sigmas", f"the width of lumi {par.name!r} differs between "
                                                            "measurements; HS3 has one constraint per parameter")
                glob = _lumi_names(par)[1]
                axes.append({"name": glob, "min": min(0.0, aux), "max": max(2.0 * aux, 0.0)})
                values.append({"name": glob, "value": aux, "const": True})
        dom, init = ("default_domain", "default_values") if im == 0 else (f"{mname}_domain", f"{mname}_values")
        domains.append({"name": dom, "type": "product_domain", "axes": axes})
        points.append({"name": init, "parameters": values})
        poi = meas["config"]["poi"]
        analyses.append({"name": mname, "likelihood": LIKELIHOOD, "parameters_of_interest": [poi] if poi else [],
                         "domains": [dom], "init": init})
    for par in lumis:
        cname, glob = _lumi_names(par)
        dists.append({"name": cname, "type": "gaussian_dist", "x": par.names[0], "mean": glob,
                      "sigma": sigmas[par.name]})
    likelihood = {"name": LIKELIHOOD, "distributions": [d["name"] for d in dists[:len(data)]],
                  "data": [d["name"] for d in data]}
    if lumis:
        likelihood["aux_distributions"] = [_lumi_names(p)[0] for p in lumis]
    return {"metadata": {"hs3_version": HS3_VERSION, "packages": [{"name": "nextstat", "version": __version__}]},
            "distributions": dists, "data": data, "likelihoods": [likelihood], "analyses": analyses,
            "domains": domains, "parameter_points": points, "misc": {"nextstat": {
                "pyhf_parameter_keys": hints, "pyhf_unused_parameters": unused,
                "pyhf_unused_observations": [o for o in spec["observations"] if o["name"] not in channel_names]}}}


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def _named(doc: Mapping, key: str) -> dict[str, dict]:
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items):
        raise WorkspaceError(key, "expected a list of objects with a 'name'")
    return {i["name"]: i for i in items}


def _interp_ok(mod: Mapping, default: Any, mtype: str, where: str) -> None:
    """Refuse an interpolation other than pyhf's (normsys code4, histosys code4p)."""
    spec = mod.get("interpolation", default)
    if spec is None:
        return
    want = {"normsys": ({"type": "mult", "in": "poly6", "out": "exp"}, ("code4", 4, "4")),
            "histosys": ({"type": "add", "in": "poly6", "out": "poly1"}, ("code4p", 4, "4"))}[mtype]
    if (isinstance(spec, Mapping) and dict(spec) == want[0]) or (not isinstance(spec, Mapping) and spec in want[1]):
        return
    raise WorkspaceError(f"{where}.interpolation", f"interpolation {spec!r} of a {mtype} modifier cannot be "
                                                   f"represented in pyhf JSON (pyhf uses {want[1][0]})")


class _Reader:
    def __init__(self, doc: Mapping, analysis: str | None):
        if not isinstance(doc, Mapping):
            raise WorkspaceError("", f"an HS3 document is a JSON object, got {type(doc).__name__}")
        self.doc = doc
        self.dists = _named(doc, "distributions")
        self.data = _named(doc, "data")
        likelihoods, analyses = _named(doc, "likelihoods"), _named(doc, "analyses")
        if analysis is not None and analysis not in analyses:
            raise ValueError(f"analysis: no analysis named {analysis!r}; the document has {sorted(analyses)}")
        first = analyses[analysis] if analysis is not None else next(iter(analyses.values()), None)
        lname = first["likelihood"] if first is not None else next(iter(likelihoods), None)
        if lname not in likelihoods:
            raise WorkspaceError("likelihoods", f"no likelihood {lname!r} to read")
        self.likelihood = likelihoods[lname]
        self.analyses = [a for a in analyses.values() if a.get("likelihood") == lname and
                         (analysis is None or a["name"] == analysis)]
        self.points = _named(doc, "parameter_points")
        self.domains = _named(doc, "domains")
        self.pars: dict[str, tuple[str, tuple[str, ...]]] = {}  # pyhf name -> (type, HS3 names)
        self.lumi: dict[str, tuple[Any, Any]] = {}  # pyhf lumi name -> (mean, sigma) of its constraint
        self.constraints = {self._constraint_x(n, "likelihoods.aux_distributions"): n
                            for n in self.likelihood.get("aux_distributions") or []}

    def _constraint_x(self, name: Any, where: str) -> str:
        dist = self.dists.get(name) if isinstance(name, str) else None
        if dist is None:
            raise WorkspaceError(where, f"no distribution named {name!r}")
        if dist.get("type") != "gaussian_dist" or not isinstance(dist.get("x"), str):
            raise WorkspaceError(where, f"constraint {name!r} is a {dist.get('type')!r}; pyhf JSON holds Gaussian "
                                        "constraints of one parameter")
        return dist["x"]

    def _gaussian(self, mod: Mapping, param: str, where: str) -> tuple[Any, Any] | None:
        """(mean, sigma) of the Gaussian constraint of ``param`` that ``mod`` names (or that the
        likelihood's aux_distributions hold); None when it names none."""
        name = mod.get("constraint_name") or mod.get("constraint") or mod.get("constraint_type")
        if name in ("Poisson", "LogNormal", "Lognormal", "Const"):
            raise WorkspaceError(f"{where}.constraint", f"a {name} constraint of a {mod.get('type')} modifier "
                                                        "cannot be represented in pyhf JSON (Gaussian)")
        if name in (None, "Gauss", "Gaussian"):
            name = self.constraints.get(param)
            if name is None:  # ROOT's legacy constraint: Gaussian(param | nom_<param>, 1)
                return None if mod.get("constraint") is None else (f"nom_{param}", 1.0)
        elif self._constraint_x(name, f"{where}.constraint") != param:
            raise WorkspaceError(f"{where}.constraint", f"constraint {name!r} does not constrain {param!r}")
        dist = self.dists[name]
        return dist.get("mean"), dist.get("sigma")

    def _unit(self, constraint: tuple[Any, Any] | None, param: str, where: str) -> None:
        """Refuse a normsys/histosys constraint other than pyhf's Gaussian(0 | alpha, 1)."""
        if constraint is None:
            return
        mean, sigma = constraint
        means = [mean] if not isinstance(mean, str) else [
            p.get("value", 0.0) for s in self.points.values() for p in s.get("parameters", []) if p.get("name") == mean]
        if sigma != 1 or any(m != 0 for m in means):
            raise WorkspaceError(f"{where}.constraint", f"the constraint of {param!r} (mean {mean!r}, sigma {sigma!r}) "
                                                        "is not pyhf's unit Gaussian around 0")

    def _add(self, name: str, mtype: str, names: tuple[str, ...], where: str) -> None:
        old = self.pars.setdefault(name, (mtype, names))
        if (_KIND.get(old[0], old[0]), old[1]) != (_KIND.get(mtype, mtype), names):
            raise WorkspaceError(where, f"the pyhf parameter {name!r} would be both a {old[0]} {list(old[1])} and "
                                        f"a {mtype} {list(names)}")

    def _per_bin(self, mod: Mapping, n: int, fallback: str, where: str) -> tuple[str, tuple[str, ...]]:
        """(pyhf name, HS3 parameter names) of a staterror/shapesys/shapefactor modifier."""
        params = mod.get("parameters")
        name = mod.get("name") if isinstance(mod.get("name"), str) else None
        if params is None:
            if name is None:
                raise WorkspaceError(where, "a per-bin modifier needs 'name' or 'parameters'")
            prefix = f"stat_{fallback}" if mod.get("type") == "staterror" else name
            return (name if mod.get("type") != "staterror" else f"staterror_{fallback}"), _gamma_names(prefix, n)
        if not isinstance(params, list) or len(params) != n or not all(isinstance(p, str) for p in params):
            raise WorkspaceError(f"{where}.parameters", f"expected {n} parameter names")
        if name is not None and name != "staterror":
            return name, tuple(params)
        found = {m.group(1) if (m := re.fullmatch(r"gamma_(.+)_bin_(\d+)", p)) else None for p in params}
        base = found.pop() if len(found) == 1 else None
        if base is None:
            return f"staterror_{fallback}", tuple(params)
        return (f"staterror_{fallback}" if base == f"stat_{fallback}" else base), tuple(params)

    def modifier(self, mod: Mapping, sample: Mapping, channel: str, dist: Mapping, where: str) -> dict:
        mtype = mod.get("type")
        n = len(sample["data"]["contents"])
        if mtype in ("normsys", "histosys"):
            param = mod.get("parameter") or f"alpha_{mod.get('name')}"
            name = param[len("alpha_"):] if param.startswith("alpha_") else param
            _interp_ok(mod, dist.get("default_interpolation"), mtype, where)
            self._unit(self._gaussian(mod, param, where), param, where)
            self._add(name, mtype, (param,), where)
            d = mod.get("data") or {}
            if mtype == "normsys":
                return {"name": name, "type": "normsys", "data": {"hi": d["hi"], "lo": d["lo"]}}
            return {"name": name, "type": "histosys",
                    "data": {"hi_data": list(d["hi"]["contents"]), "lo_data": list(d["lo"]["contents"])}}
        if mtype == "normfactor":
            param = mod.get("parameter") or mod.get("name")
            constraint = self._gaussian(mod, param, where)
            if constraint is None:
                self._add(param, "normfactor", (param,), where)
                return {"name": param, "type": "normfactor", "data": None}
            name = "lumi" if param == "Lumi" else param
            self.lumi[name] = constraint
            self._add(name, "lumi", (param,), where)
            return {"name": name, "type": "lumi", "data": None}
        if mtype in ("staterror", "shapesys", "shapefactor"):
            name, params = self._per_bin(mod, n, channel, where)
            if mtype == "staterror":
                ctype = mod.get("constraint_type") or mod.get("constraint") or \
                    (dist.get("staterror") or {}).get("constraint_type") or "Gauss"
                if ctype not in ("Gauss", "Gaussian"):
                    raise WorkspaceError(f"{where}.constraint", f"a {ctype} staterror constraint cannot be represented "
                                                                "in pyhf JSON (Gaussian)")
                errors = sample["data"].get("errors")
                if errors is None:
                    raise WorkspaceError(f"{where}", "a staterror sample needs data.errors")
                self._add(name, "staterror", params, where)
                return {"name": name, "type": "staterror", "data": list(errors)}
            vals = (mod.get("data") or {}).get("vals")
            if mtype == "shapefactor" or (not any(vals or []) and not mod.get("constraint")):
                self._add(name, "shapefactor", params, where)
                return {"name": name, "type": "shapefactor", "data": None}
            kinds = {(self.dists.get(c) or {}).get("type") for c in mod.get("constraints") or [] if c is not None}
            if mod.get("constraint", "Poisson") != "Poisson" or kinds - {"poisson_dist"}:
                raise WorkspaceError(f"{where}.constraint", "pyhf's shapesys is Poisson-constrained, got "
                                                            f"{mod.get('constraint') or sorted(map(str, kinds))!r}")
            self._add(name, "shapesys", params, where)
            return {"name": name, "type": "shapesys",
                    "data": [float(v) * float(x) for v, x in zip(vals, sample["data"]["contents"])]}
        raise WorkspaceError(f"{where}.type", f"modifier type {mtype!r} cannot be represented in pyhf JSON")

    def channels(self) -> tuple[list, list]:
        channels, observations = [], []
        pairs = zip(self.likelihood.get("distributions") or [], self.likelihood.get("data") or [])
        for i, (dname, datum) in enumerate(pairs):
            where = f"distributions[{dname!r}]"
            dist = self.dists.get(dname) if isinstance(dname, str) else None
            if dist is None or dist.get("type") != "histfactory_dist":
                raise WorkspaceError(f"likelihoods[{self.likelihood['name']!r}].distributions[{i}]",
                                     f"{dname!r} is not a histfactory_dist; pyhf JSON holds HistFactory channels only")
            cname = dname[len("model_"):] if dname.startswith("model_") and len(dname) > 6 else dname
            samples = []
            for isa, sample in enumerate(dist.get("samples") or []):
                swhere = f"{where}.samples[{isa}]"
                sname = sample.get("name", f"sample_{isa}")
                mods = [self.modifier(m, sample, cname, dist, f"{swhere}.modifiers[{im}]")
                        for im, m in enumerate(sample.get("modifiers") or [])]
                samples.append({"name": sname, "data": list(sample["data"]["contents"]), "modifiers": mods})
            obs = datum if isinstance(datum, list) else (self.data.get(datum) or {}).get("contents")
            if obs is None:
                raise WorkspaceError(f"likelihoods[{self.likelihood['name']!r}].data[{i}]", f"no binned data {datum!r}")
            channels.append({"name": cname, "samples": samples})
            observations.append({"name": cname, "data": list(obs)})
        return channels, observations

    def _value(self, ref: Any, values: Mapping[str, Mapping], where: str) -> float:
        if isinstance(ref, (int, float)) and not isinstance(ref, bool):
            return float(ref)
        if isinstance(ref, str) and ref in values:
            return float(values[ref]["value"])
        raise WorkspaceError(where, f"no value for {ref!r} in the parameter points")

    def measurements(self) -> list[dict]:
        misc = (self.doc.get("misc") or {}).get("nextstat") or {}
        hints, unused = misc.get("pyhf_parameter_keys") or {}, misc.get("pyhf_unused_parameters") or {}
        analyses = self.analyses or [{"name": self.likelihood["name"], "parameters_of_interest": []}]
        pyhf_names = {names[0]: name for name, (_, names) in self.pars.items() if len(names) == 1}
        out = []
        for ana in analyses:
            where = f"analyses[{ana['name']!r}]"
            init = ana.get("init") or ("default_values" if "default_values" in self.points else
                                       next(iter(self.points), None))
            values = {p["name"]: p for p in (self.points.get(init) or {}).get("parameters", [])}
            bounds = {a["name"]: a for d in ana.get("domains") or list(self.domains)[:1]
                      for a in (self.domains.get(d) or {}).get("axes", [])}
            keys = hints.get(ana["name"], {})
            params = []
            for name, (mtype, names) in self.pars.items():
                config = self._config(name, mtype, names, values, bounds, set(keys.get(name, ())), where)
                if config:
                    params.append(config)
            params.extend(copy.deepcopy(c) for c in unused.get(ana["name"], []) if c.get("name") not in self.pars)
            pois = ana.get("parameters_of_interest") or []
            poi = pyhf_names.get(pois[0], pois[0]) if pois else ""
            out.append({"name": ana["name"], "config": {"poi": poi, "parameters": params}})
        return out

    def _config(self, name: str, mtype: str, names: tuple[str, ...], values: Mapping, bounds: Mapping,
                keys: set[str], where: str) -> dict:
        init, default_bounds = PYHF_DEFAULTS[mtype]
        config: dict[str, Any] = {"name": name}
        if mtype == "lumi":
            mean, sigma = self.lumi[name]
            config["auxdata"] = [self._value(mean, values, f"{where}: lumi {name!r} mean")]
            config["sigmas"] = [self._value(sigma, values, f"{where}: lumi {name!r} sigma")]
            init = config["auxdata"][0]
            keys = keys | {"inits", "bounds"}  # pyhf has no defaults for a lumi parameter's
        inits = [float(values[p]["value"]) if p in values else init for p in names]
        pairs = [[float(bounds[p]["min"]), float(bounds[p]["max"])] if p in bounds and "min" in bounds[p]
                 and "max" in bounds[p] else list(default_bounds) for p in names]
        fixed = [bool(values.get(p, {}).get("const", False)) for p in names]
        if "inits" in keys or any(v != init for v in inits):
            config["inits"] = inits
        if "bounds" in keys or any(tuple(b) != default_bounds for b in pairs):
            config["bounds"] = pairs
        if "fixed" in keys or any(fixed):
            config["fixed"] = fixed[0] if len(set(fixed)) == 1 else fixed
        return config if len(config) > 1 else {}


def from_hs3(doc: Any, *, analysis: str | None = None) -> dict:
    """Read an HS3 document (HistFactory channels) as a pyhf JSON workspace.

    Reads the likelihood of ``analysis`` (default: the first analysis, else the first
    likelihood): its ``histfactory_dist`` channels (name without ROOT's ``model_`` prefix) and
    their binned data; one measurement per analysis of that likelihood, with its POI and the
    parameter configurations of its domains and ``init`` parameter points (ROOT:
    ``default_values``). Conventions: module docstring.

    Args:
        doc: HS3 document: ``dict``, JSON text or path (``.json`` / ``.json.gz``).
        analysis: read only this analysis.

    Returns:
        pyhf JSON workspace (validated, version 1.0.0).

    Raises:
        WorkspaceError: a malformed document or one pyhf JSON cannot hold (module docstring).
        ValueError: no analysis named ``analysis``.

    >>> from nextstat import examples
    >>> ws = examples.simple_workspace()
    >>> back = from_hs3(to_hs3(ws))
    >>> [c["name"] for c in back["channels"]], back["measurements"][0]["config"]["poi"]
    (['SR', 'CR'], 'mu')
    """
    doc = wsmod.load(doc)
    reader = _Reader(doc, analysis)
    try:
        channels, observations = reader.channels()
        extra = ((doc.get("misc") or {}).get("nextstat") or {}).get("pyhf_unused_observations") or []
        observations += [o for o in extra if o.get("name") not in {c["name"] for c in channels}]
        measurements = reader.measurements()
    except (KeyError, TypeError, AttributeError) as exc:
        raise WorkspaceError("", f"malformed HS3 HistFactory document: missing or mistyped field {exc}") from exc
    spec = {"channels": channels, "observations": observations, "measurements": measurements, "version": "1.0.0"}
    wsmod.check_workspace(spec)
    wsmod.validate(spec)
    return spec
