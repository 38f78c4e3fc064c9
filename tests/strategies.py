"""Hypothesis strategies for HistFactory workspaces (pyhf JSON), valid and mutated.

``workspaces()`` draws a workspace that satisfies pyhf's schema and
:func:`nextstat.workspace.validate` structurally, over all seven modifier types, with
1-3 channels of 1-6 bins, parameters shared across samples and channels, and degenerate
yields and variations at a rate drawn per example (zero bins, zero observations, signal-only
bins, yields of 1e-300 and of 1e12..1e300, staterror / shapesys on empty bins, normsys
factors at or near 0, histosys templates at 0), plus measurement parameter configurations
(bounds, inits at a bound, fixed parameters). Such a workspace may still describe an
undefined likelihood (observed events where nothing is expected, a normsys factor of 0):
NextStat may refuse it, with a WorkspaceError naming the field.

``mutated_workspaces()`` draws a valid one and breaks it: wrong types and lengths,
duplicates, bounds with low > high, unknown modifier types and names, missing keys,
NaN / inf numbers, negative yields, a missing or unknown POI, bad modifier_settings.

Every draw is ``(workspace, modifier_settings, description)``; ``description`` lists the
degenerate features or mutations (for hypothesis.event and failure reports).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from hypothesis import strategies as st

# ----------------------------------------------------------------------------- numbers
TINY = 1e-300

#: modifier_settings as passed to both nextstat.from_pyhf and pyhf's Workspace.model;
#: None -> pyhf defaults (code4 / code4p), a dict replaces them (a type left out falls back
#: to its applier default: normsys code1, histosys code0)
MODIFIER_SETTINGS = st.one_of(
    st.none(),
    st.just({}),
    st.builds(lambda n: {"normsys": {"interpcode": n}}, st.sampled_from(["code1", "code4"])),
    st.builds(lambda h: {"histosys": {"interpcode": h}}, st.sampled_from(["code0", "code2", "code4p"])),
    st.builds(lambda n, h: {"normsys": {"interpcode": n}, "histosys": {"interpcode": h}},
              st.sampled_from(["code1", "code4"]), st.sampled_from(["code0", "code2", "code4p"])),
)


def _chance(draw, p: float) -> bool:
    """True with probability ~p (p in [0, 1]); shrinks towards False."""
    if p <= 0:
        return False
    if p >= 1:
        return True
    return draw(st.integers(0, 999)) >= 1000 - int(round(p * 1000))


def _yield(draw, degenerate: float, tags: set) -> float:
    """One nominal bin content: typical (0.1..500), or degenerate (0, 1e-300, 1e12..1e300)."""
    if _chance(draw, degenerate):
        kind = draw(st.sampled_from(["zero", "zero", "tiny", "huge", "large"]))
        tags.add(f"yield:{kind}")
        if kind == "zero":
            return 0.0
        if kind == "tiny":
            return draw(st.sampled_from([TINY, 5e-324, 1e-200]))
        if kind == "huge":
            return float(draw(st.sampled_from([1e12, 1e15, 1e50, 1e150, 1e300])))
        return draw(st.floats(1e12, 1e300, allow_nan=False, allow_infinity=False))
    return draw(st.floats(0.1, 500.0, allow_nan=False, allow_infinity=False))


def _normsys_data(draw, degenerate: float, tags: set) -> dict:
    if _chance(draw, degenerate):
        kind = draw(st.sampled_from(["lo0", "lo_tiny", "hi_tiny", "inverted", "one_sided", "flat", "large"]))
        tags.add(f"normsys:{kind}")
        hi, lo = {
            "lo0": (1.1, 0.0),               # undefined (log 0): validate refuses it
            "lo_tiny": (1.2, 1e-10),
            "hi_tiny": (1e-12, 0.9),
            "inverted": (0.9, 1.1),
            "one_sided": (1.1, 1.05),
            "flat": (1.0, 1.0),
            "large": (50.0, 0.02),
        }[kind]
        return {"hi": hi, "lo": lo}
    hi = draw(st.floats(1.001, 1.6, allow_nan=False))
    lo = draw(st.floats(0.5, 0.999, allow_nan=False))
    return {"hi": round(hi, 6), "lo": round(lo, 6)}


def _histosys_data(draw, nominal: list[float], degenerate: float, tags: set) -> dict:
    hi, lo = [], []
    for x in nominal:
        if _chance(draw, degenerate):
            kind = draw(st.sampled_from(["lo0", "hi0", "from_empty", "inverted", "negative_lo", "wide"]))
            tags.add(f"histosys:{kind}")
            base = x if x > 0 else 1.0
            h, l = {
                "lo0": (x * 1.2, 0.0),
                "hi0": (0.0, x * 0.8),
                "from_empty": (x + 2.0, x + 0.5),  # a template with events where the nominal has none
                "inverted": (x * 0.9, x * 1.1),
                "negative_lo": (x * 1.1, -0.5 * base),
                "wide": (x * 3.0, x * 0.05),
            }[kind]
        else:
            fu = draw(st.floats(1.0, 1.4, allow_nan=False))
            fd = draw(st.floats(0.6, 1.0, allow_nan=False))
            h, l = x * fu, x * fd
        hi.append(float(h))
        lo.append(float(l))
    return {"hi_data": hi, "lo_data": lo}


def _uncertainties(draw, nominal: list[float], degenerate: float, tags: set, what: str) -> list[float]:
    """Absolute per-bin uncertainties for staterror / shapesys."""
    out = []
    for x in nominal:
        if _chance(draw, degenerate):
            kind = draw(st.sampled_from(["zero", "huge_rel", "on_empty"]))
            tags.add(f"{what}:{kind}")
            out.append({"zero": 0.0, "huge_rel": 20.0 * x, "on_empty": 0.0 if x > 0 else 1.5}[kind])
        else:
            out.append(float(x * draw(st.integers(0, 500)) / 1000.0))
    return out


def _observed(draw, total: float, degenerate: float, tags: set) -> float:
    if _chance(draw, degenerate):
        kind = draw(st.sampled_from(["zero", "exact", "random", "far"]))
        tags.add(f"obs:{kind}")
        if kind == "zero":
            return 0.0
        if kind == "exact":  # non-integer counts are allowed
            return float(total) if math.isfinite(total) else 0.0
        if kind == "far":
            return float(round(total * 5.0 + 10.0)) if math.isfinite(total * 5.0) else 0.0
        return float(draw(st.integers(0, 60)))
    f = draw(st.floats(0.7, 1.3, allow_nan=False))
    v = total * f
    return float(round(v)) if math.isfinite(v) else 0.0


# ----------------------------------------------------------------------------- workspaces
CHANNEL_NAMES = ["SR", "CR", "VR", "ch_a", "ch_b"]
BKG_NAMES = ["bkg", "ttbar", "wjets", "fakes"]


@st.composite
def workspaces(draw, degenerate: float | None = None, max_channels: int = 3, max_bins: int = 6):
    """A structurally valid workspace over all modifier types: ``(ws, modifier_settings, tags)``."""
    if degenerate is None:
        degenerate = draw(st.sampled_from([0.0, 0.0, 0.05, 0.2, 0.5]))
    tags: set[str] = set()
    n_channels = draw(st.integers(1, max_channels))
    chnames = draw(st.lists(st.sampled_from(CHANNEL_NAMES), min_size=n_channels, max_size=n_channels, unique=True))
    nbins = {c: draw(st.integers(1, max_bins)) for c in chnames}
    share_staterror = n_channels > 1 and draw(st.booleans())
    used: dict[str, dict] = {}  # parameter name -> {"type": ..., "n": ..., "channels": set}

    def use(name: str, mtype: str, n: int, channel: str) -> None:
        u = used.setdefault(name, {"type": mtype, "n": 0, "channels": set(), "types": set()})
        u["types"].add(mtype)
        if channel not in u["channels"]:
            u["channels"].add(channel)
            if mtype in ("staterror",):
                u["n"] += n
            else:
                u["n"] = n if mtype in ("shapefactor", "shapesys") else 1

    channels = []
    signal_somewhere = False
    for ic, c in enumerate(chnames):
        n = nbins[c]
        has_signal = ic == 0 or draw(st.booleans())
        n_bkg = draw(st.integers(0 if has_signal else 1, 3))
        snames = (["signal"] if has_signal else []) + draw(
            st.lists(st.sampled_from(BKG_NAMES), min_size=n_bkg, max_size=n_bkg, unique=True))
        samples = []
        for sname in snames:
            data = [_yield(draw, degenerate, tags) for _ in range(n)]
            mods: list[dict] = []
            if sname == "signal":
                mods.append({"name": "mu", "type": "normfactor", "data": None})
                signal_somewhere = True
                use("mu", "normfactor", 1, c)
            # which other modifier types this sample gets
            kinds = draw(st.lists(st.sampled_from(["normfactor", "lumi", "normsys", "histosys", "shapesys",
                                                   "staterror", "shapefactor"]), max_size=5, unique=True))
            taken: set[tuple[str, str]] = {(m["name"], m["type"]) for m in mods}
            for kind in kinds:
                if kind == "normfactor":
                    name = draw(st.sampled_from(["k_bkg", "k_other"] + (["mu"] if sname != "signal" else [])))
                    mod = {"name": name, "type": "normfactor", "data": None}
                    use(name, "normfactor", 1, c)
                elif kind == "lumi":
                    name = "lumi"
                    mod = {"name": name, "type": "lumi", "data": None}
                    use(name, "lumi", 1, c)
                elif kind == "normsys":
                    name = draw(st.sampled_from(["alpha_a", "alpha_b", "alpha_c"]))
                    mod = {"name": name, "type": "normsys", "data": _normsys_data(draw, degenerate, tags)}
                    use(name, "normsys", 1, c)
                elif kind == "histosys":
                    name = draw(st.sampled_from(["alpha_a", "alpha_b", "alpha_d"]))
                    mod = {"name": name, "type": "histosys", "data": _histosys_data(draw, data, degenerate, tags)}
                    use(name, "histosys", 1, c)
                elif kind == "shapesys":
                    name = f"ss_{c}_{sname}"  # shapesys parameters cannot be shared
                    mod = {"name": name, "type": "shapesys",
                           "data": _uncertainties(draw, data, degenerate, tags, "shapesys")}
                    use(name, "shapesys", n, c)
                elif kind == "staterror":
                    name = "staterror_shared" if share_staterror else f"staterror_{c}"
                    mod = {"name": name, "type": "staterror",
                           "data": _uncertainties(draw, data, degenerate, tags, "staterror")}
                    use(name, "staterror", n, c)
                else:  # shapefactor: shared across channels of equal bin counts
                    name = draw(st.sampled_from([f"sf_{c}", f"sf_{n}bins"]))
                    mod = {"name": name, "type": "shapefactor", "data": None}
                    use(name, "shapefactor", n, c)
                if (mod["name"], mod["type"]) in taken:
                    continue
                taken.add((mod["name"], mod["type"]))
                mods.append(mod)
            mods = draw(st.permutations(mods))
            samples.append({"name": sname, "data": data, "modifiers": list(mods)})
        channels.append({"name": c, "samples": samples})
    assert signal_somewhere

    # observations from the nominal totals
    observations = []
    for ch in channels:
        n = nbins[ch["name"]]
        totals = []
        for b in range(n):
            t = 0.0
            for s in ch["samples"]:
                t += s["data"][b]
            totals.append(t)
        observations.append({"name": ch["name"], "data": [_observed(draw, t, degenerate, tags) for t in totals]})
    observations = list(draw(st.permutations(observations)))

    # measurement parameter configurations
    params: list[dict] = []
    lumi_used = "lumi" in used
    if lumi_used:
        cfg = {"name": "lumi", "auxdata": [1.0], "sigmas": [draw(st.sampled_from([0.017, 0.05, 0.1]))]}
        if not _chance(draw, 0.1):  # pyhf needs lumi's bounds and inits; NextStat has defaults
            lo, hi = draw(st.sampled_from([(0.5, 1.5), (0.9, 1.1), (0.0, 10.0)]))
            cfg["bounds"] = [[lo, hi]]
            cfg["inits"] = [draw(st.sampled_from([1.0, lo, hi]))]
            if cfg["inits"][0] in (lo, hi):
                tags.add("init_at_bound")
        else:
            tags.add("lumi_without_bounds")
        if _chance(draw, 0.1):
            cfg["fixed"] = True
            tags.add("fixed")
        params.append(cfg)
    for name in sorted(used):
        if name == "lumi" or not _chance(draw, 0.25 + degenerate):
            continue
        u = used[name]
        n = u["n"]
        types = u["types"]
        cfg: dict[str, Any] = {"name": name}
        if "normfactor" in types:
            choices = [(0.0, 10.0), (-5.0, 10.0), (0.0, 2.0), (0.0, 50.0)]
            if name != "mu" or _chance(draw, 0.2):
                choices.append((0.5, 5.0))  # excludes 0: hypotest(mu=0) is refused for the POI
            default = 1.0
        elif types & {"normsys", "histosys"}:
            choices = [(-5.0, 5.0), (-3.0, 3.0), (0.0, 5.0), (-5.0, 0.0)]
            default = 0.0
        else:  # shapefactor, shapesys, staterror
            choices = [(1e-10, 10.0), (0.5, 1.5), (0.0, 10.0)]
            default = 1.0
        if draw(st.booleans()):
            lo, hi = draw(st.sampled_from(choices))
            cfg["bounds"] = [[lo, hi]] * n
            at = draw(st.sampled_from(["default", "lo", "hi", "mid"]))
            init = {"default": min(max(default, lo), hi), "lo": lo, "hi": hi, "mid": 0.5 * (lo + hi)}[at]
            if at in ("lo", "hi"):
                tags.add("init_at_bound")
            cfg["inits"] = [init] * n
        elif _chance(draw, 0.3):
            cfg["inits"] = [draw(st.sampled_from([default, 0.5 * default + 0.25]))] * n
        if _chance(draw, 0.3 if name != "mu" else 0.05):
            cfg["fixed"] = True  # pyhf's schema: a boolean (NextStat also takes a list)
            tags.add("fixed")
        if types & {"normsys", "histosys"} and _chance(draw, 0.2):
            cfg["auxdata"] = [draw(st.sampled_from([0.0, 0.5, -1.0]))]
            if _chance(draw, 0.3):  # pyhf 0.7.6 refuses sigmas for normsys / histosys; NextStat takes them
                cfg["sigmas"] = [draw(st.sampled_from([1.0, 0.5, 2.0]))]
                tags.add("sigmas_on_normsys")
        params.append(cfg)
    params = list(draw(st.permutations(params)))

    poi = "mu"
    if _chance(draw, 0.05):
        scalars = sorted(k for k, u in used.items() if u["n"] == 1 and u["types"] <= {"normfactor", "normsys", "histosys", "lumi"})
        poi = draw(st.sampled_from(scalars))
        if poi != "mu":
            tags.add("poi:" + "/".join(sorted(used[poi]["types"])))

    ws = {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": poi, "parameters": params}}],
        "version": "1.0.0",
    }
    settings = draw(MODIFIER_SETTINGS)
    return ws, settings, sorted(tags)


# ----------------------------------------------------------------------------- mutations
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON tree, the root excluded."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


def path_str(path: tuple) -> str:
    s = ""
    for k in path:
        s += f"[{k}]" if isinstance(k, int) else (f".{k}" if s else str(k))
    return s


WEIRD_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2**70, -(2**70), 10**400]),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e308, -1e308, 5e-324]),
    st.text(max_size=4), st.just([]), st.just({}), st.just([1.0, 2.0]), st.just({"a": 1}),
    st.just([[1.0, 0.0]]), st.just(["x"]), st.just([None]),
)

MUTATIONS = ("replace", "delete", "append", "pop", "duplicate", "nan_inf", "negative_yield", "bad_bounds",
             "unknown_type", "unknown_name", "poi", "wrong_length", "bad_settings", "config_type", "two")


@st.composite
def mutated_workspaces(draw):
    """A valid workspace with one or two mutations: ``(ws, modifier_settings, descriptions)``."""
    ws, settings, _ = draw(workspaces())
    ws = copy.deepcopy(ws)
    done: list[str] = []
    kind = draw(st.sampled_from(MUTATIONS))
    kinds = [draw(st.sampled_from(MUTATIONS[:-1])) for _ in range(2)] if kind == "two" else [kind]
    for k in kinds:
        ws, settings = _mutate(draw, k, ws, settings, done)
    return ws, settings, done


def _numeric_paths(ws: Any) -> list[tuple]:
    return [p for p in _paths(ws) if isinstance(_get(ws, p), (int, float)) and not isinstance(_get(ws, p), bool)]


def _mutate(draw, kind: str, ws: Any, settings: Any, done: list) -> tuple[Any, Any]:
    if not isinstance(ws, dict):
        return ws, settings
    paths = _paths(ws)
    if kind == "replace" and paths:
        p = draw(st.sampled_from(paths))
        v = draw(WEIRD_VALUES)
        _get(ws, p[:-1])[p[-1]] = v
        done.append(f"replace {path_str(p)} = {v!r}"[:120])
    elif kind == "delete":
        keyed = [p for p in paths if isinstance(_get(ws, p[:-1]), dict)] + [("version",), ("observations",)]
        p = draw(st.sampled_from(keyed))
        parent = _get(ws, p[:-1])
        if isinstance(parent, dict) and p[-1] in parent:
            del parent[p[-1]]
            done.append(f"delete {path_str(p)}")
    elif kind in ("append", "pop", "duplicate", "wrong_length"):
        lists = [p for p in paths if isinstance(_get(ws, p), list)]
        if kind == "duplicate":
            lists = [p for p in lists if _get(ws, p) and isinstance(_get(ws, p)[0], dict)]
        if kind == "wrong_length":
            lists = [p for p in lists if _get(ws, p) and all(isinstance(x, (int, float)) for x in _get(ws, p))]
        if lists:
            p = draw(st.sampled_from(lists))
            lst = _get(ws, p)
            if kind == "pop" or (kind == "wrong_length" and draw(st.booleans())):
                if lst:
                    lst.pop(draw(st.integers(0, len(lst) - 1)))
                    done.append(f"{kind} (shorten) {path_str(p)}")
            elif kind == "duplicate" or (kind == "append" and lst and draw(st.booleans())):
                i = draw(st.integers(0, len(lst) - 1))
                lst.insert(i, copy.deepcopy(lst[i]))
                done.append(f"{kind} {path_str(p)}[{i}]")
            else:
                lst.append(draw(st.one_of(st.sampled_from([1.0, 0.0, 7]), WEIRD_VALUES)) if kind == "append" else 1.0)
                done.append(f"{kind} (extend) {path_str(p)}")
    elif kind == "nan_inf":
        nums = _numeric_paths(ws)
        if nums:
            p = draw(st.sampled_from(nums))
            v = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            _get(ws, p[:-1])[p[-1]] = v
            done.append(f"nan_inf {path_str(p)} = {v!r}")
    elif kind == "negative_yield":
        cands = [p for p in _numeric_paths(ws) if len(p) >= 2 and p[-2] == "data"
                 and p[0] in ("channels", "observations")]
        if cands:
            p = draw(st.sampled_from(cands))
            v = -abs(float(_get(ws, p))) - draw(st.sampled_from([0.0, 1.0, 1e-300, 1e300]))
            _get(ws, p[:-1])[p[-1]] = v
            done.append(f"negative {path_str(p)} = {v!r}")
    elif kind == "bad_bounds":
        meas = ws.get("measurements")
        if isinstance(meas, list) and meas and isinstance(meas[0], dict) and isinstance(meas[0].get("config"), dict):
            cfg = meas[0]["config"]
            name = draw(st.sampled_from(["mu", "lumi", "alpha_a", "k_bkg", "staterror_SR", "sf_SR"]))
            lo, hi = draw(st.sampled_from([(5.0, 1.0), (1.0, 1.0), (math.nan, 1.0), (0.0, math.inf), (2.0, 3.0)]))
            pars = cfg.setdefault("parameters", [])
            if isinstance(pars, list):
                pars[:] = [x for x in pars if not (isinstance(x, dict) and x.get("name") == name)]
                pars.append({"name": name, "bounds": [[lo, hi]]})
                done.append(f"bounds {name} = [[{lo}, {hi}]]")
    elif kind == "unknown_type":
        mods = [p for p in paths if len(p) >= 2 and p[-2] == "modifiers" and isinstance(_get(ws, p), dict)]
        if mods:
            p = draw(st.sampled_from(mods))
            t = draw(st.sampled_from(["normsys2", "NormFactor", "", "custom", "staterr"]))
            _get(ws, p)["type"] = t
            done.append(f"type {path_str(p)} = {t!r}")
    elif kind == "unknown_name":
        mods = [p for p in paths if len(p) >= 2 and p[-2] in ("modifiers", "samples", "channels", "observations",
                                                               "parameters") and isinstance(_get(ws, p), dict)]
        if mods:
            p = draw(st.sampled_from(mods))
            nm = draw(st.sampled_from(["", "nope", "mu", "lumi", "SR", "a b", "ü", "x" * 300]))
            _get(ws, p)["name"] = nm
            done.append(f"name {path_str(p)} = {nm[:10]!r}")
    elif kind == "poi":
        try:
            cfg = ws["measurements"][0]["config"]
            assert isinstance(cfg, dict)
        except (KeyError, IndexError, TypeError, AssertionError):
            return ws, settings
        how = draw(st.sampled_from(["delete", "unknown", "shapefactor", "staterror", "none", "empty_measurements"]))
        if how == "delete":
            cfg.pop("poi", None)
        elif how == "unknown":
            cfg["poi"] = "not_a_parameter"
        elif how in ("shapefactor", "staterror"):  # a vector parameter as POI
            types = ("shapefactor",) if how == "shapefactor" else ("staterror", "shapesys")
            names = [m.get("name") for p in paths if len(p) >= 2 and p[-2] == "modifiers"
                     for m in [_get(ws, p)] if isinstance(m, dict) and m.get("type") in types]
            cfg["poi"] = names[0] if names else ("sf_SR" if how == "shapefactor" else "staterror_SR")
        elif how == "none":
            cfg["poi"] = None
        else:
            ws["measurements"] = []
        done.append(f"poi {how}")
    elif kind == "bad_settings":
        settings = draw(st.sampled_from([
            {"normsys": {"interpcode": "code2"}}, {"histosys": {"interpcode": "code1"}},
            {"normsys": {"interpcode": 4}}, {"foo": {}}, {"normsys": "code1"}, "code4",
            {"normsys": {"interpcode": "code4", "extra": 1}}, {"staterror": {"interpcode": "code0"}},
            [("normsys", {"interpcode": "code1"})], {"lumi": {}},
        ]))
        done.append(f"settings {settings!r}")
    elif kind == "config_type":
        try:
            cfg = ws["measurements"][0]["config"]
            assert isinstance(cfg, dict)
        except (KeyError, IndexError, TypeError, AssertionError):
            return ws, settings
        name = draw(st.sampled_from(["mu", "lumi", "alpha_a", "staterror_SR", "sf_SR", "ss_SR_signal"]))
        field = draw(st.sampled_from(["bounds", "inits", "fixed", "auxdata", "sigmas"]))
        value = draw(st.sampled_from([[], [1.0], [[0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]], "x", 1.0, True, [True],
                                      [[0.0]], [0.0], [-1.0], [[1.0, 0.0]], [[None, 1]], None, [math.nan]]))
        pars = cfg.setdefault("parameters", [])
        if isinstance(pars, list):
            pars.append({"name": name, field: value})
            done.append(f"config {name}.{field} = {value!r}")
    return ws, settings


def compact(ws: Any, settings: Any = None) -> str:
    """One-line JSON of a draw (non-finite floats as JSON's NaN / Infinity tokens) for reports."""
    text = json.dumps(ws, separators=(",", ":"), allow_nan=True, default=repr)
    return text if settings is None else f"{text}  modifier_settings={json.dumps(settings, default=repr)}"
