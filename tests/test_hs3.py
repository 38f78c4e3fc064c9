"""pyhf JSON <-> HS3 (nextstat.hs3): round trips against pyhf 0.7.6 live, ROOT-style documents,
and what pyhs3 makes of what we write."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest

from conftest import all_modifiers_workspace, needs_workspaces, nll_pair
from nextstat import examples, from_pyhf, hs3, testing
from nextstat.errors import WorkspaceError

pyhf = pytest.importorskip("pyhf")


def _sorted(spec: dict) -> dict:
    return dict(pyhf.Workspace.sorted(pyhf.Workspace(copy.deepcopy(spec))))


def _two_measurements() -> dict:
    spec = examples.simple_workspace()
    second = copy.deepcopy(spec["measurements"][0])
    second["name"] = "fixed_ttbar"
    second["config"]["parameters"] = [p for p in second["config"]["parameters"] if p["name"] == "lumi"] + [
        {"name": "ttbar_norm", "fixed": True, "inits": [1.1]}, {"name": "jes", "bounds": [[-3.0, 3.0]]},
        {"name": "staterror_SR", "inits": [1.0, 1.01, 0.99, 1.0]}]
    spec["measurements"].append(second)
    return spec


def _published(name: str) -> dict:
    import jsonpatch

    if name == "erjr":
        return jsonpatch.apply_patch(testing.erjr(), testing.erjr_patch(testing.erjr_patch_names()[0]))
    if name == "tttt":
        return testing.tttt()
    return jsonpatch.apply_patch(testing.sbottom("RegionA"),
                                 testing.sbottom_patch("RegionA", testing.sbottom_patch_names("RegionA")[0]))


BUNDLED = {"simple": examples.simple_workspace, "all_modifiers": all_modifiers_workspace,
           "two_measurements": _two_measurements}


def _round_trip(spec: dict) -> None:
    doc = hs3.to_hs3(spec)
    back = hs3.from_hs3(json.loads(json.dumps(doc, allow_nan=False)))  # strict JSON on the way
    assert _sorted(back) == _sorted(spec)
    for meas in spec["measurements"]:  # every measurement's model is pyhf's
        model = from_pyhf(back, measurement=meas["name"])
        ours = np.array([model.nll(p) for p in _points(spec, meas["name"])])
        np.testing.assert_allclose(ours, _pyhf_nll_at(spec, meas["name"]), rtol=1e-12)


def _points(spec: dict, measurement: str) -> list[np.ndarray]:
    pm = pyhf.Workspace(copy.deepcopy(spec)).model(measurement_name=measurement)
    init = np.asarray(pm.config.suggested_init())
    return [init, init + np.random.default_rng(3).normal(0, 0.05, init.size)]


def _pyhf_nll_at(spec: dict, measurement: str) -> np.ndarray:
    ws = pyhf.Workspace(copy.deepcopy(spec))
    pm = ws.model(measurement_name=measurement)
    data = np.asarray(ws.data(pm))
    return np.array([-float(pm.logpdf(p, data)[0]) for p in _points(spec, measurement)])


@pytest.mark.parametrize("name", list(BUNDLED))
def test_round_trip(name: str) -> None:
    _round_trip(BUNDLED[name]())


@needs_workspaces
@pytest.mark.parametrize("name", ["erjr", "sbottom", pytest.param("tttt", marks=pytest.mark.slow)])
def test_round_trip_published(name: str) -> None:
    _round_trip(_published(name))


def test_layout_is_roots() -> None:
    doc = hs3.to_hs3(examples.simple_workspace())
    sr = doc["distributions"][0]
    assert sr["name"] == "model_SR" and sr["type"] == "histfactory_dist"
    assert sr["axes"] == [{"name": "obs_x_SR", "min": 0.0, "max": 4.0, "nbins": 4}]
    mods = {m["name"] + "/" + m["type"]: m for s in sr["samples"] for m in s["modifiers"]}
    assert mods["lumi/normfactor"] == {"name": "lumi", "parameter": "Lumi", "type": "normfactor",
                                       "constraint_name": "lumiConstraint"}
    assert mods["jes/histosys"]["parameter"] == "alpha_jes" and mods["jes/normsys"]["parameter"] == "alpha_jes"
    assert mods["staterror_SR/staterror"]["parameters"] == [f"gamma_stat_SR_bin_{i}" for i in range(4)]
    wjets = next(s for s in sr["samples"] if s["name"] == "wjets")
    shape = next(m for m in wjets["modifiers"] if m["type"] == "shapesys")
    spec = examples.simple_workspace()
    pyhf_shape = next(m for m in spec["channels"][0]["samples"][2]["modifiers"] if m["type"] == "shapesys")
    np.testing.assert_allclose(np.multiply(shape["data"]["vals"], wjets["data"]["contents"]), pyhf_shape["data"],
                               rtol=1e-15)  # relative uncertainties, as ROOT writes them
    lumi = next(d for d in doc["distributions"] if d["name"] == "lumiConstraint")
    assert lumi == {"name": "lumiConstraint", "type": "gaussian_dist", "x": "Lumi", "mean": "nominalLumi",
                    "sigma": 0.017}
    assert doc["likelihoods"] == [{"name": "simPdf_obsData", "distributions": ["model_SR", "model_CR"],
                                   "data": ["obsData_SR", "obsData_CR"], "aux_distributions": ["lumiConstraint"]}]
    values = {p["name"]: p for p in doc["parameter_points"][0]["parameters"]}
    assert values["nominalLumi"] == {"name": "nominalLumi", "value": 1.0, "const": True}


def test_defaults_table_is_the_models() -> None:
    """hs3.PYHF_DEFAULTS (what is not written back) equals nextstat's (= pyhf's) parameter defaults."""
    spec = all_modifiers_workspace()
    spec["measurements"][0]["config"]["parameters"] = [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.02]}]
    model = from_pyhf(spec)
    init, bounds = model.suggested_init(), model.suggested_bounds()
    types = {m["name"]: m["type"] for ch in spec["channels"] for s in ch["samples"] for m in s["modifiers"]}
    seen = set()
    for i, full in enumerate(model.parameter_names):
        name = full.split("[")[0]
        default_init, default_bounds = hs3.PYHF_DEFAULTS[types[name]]
        expected = 1.0 if types[name] == "lumi" else default_init  # lumi: its auxdata
        assert init[i] == expected and tuple(bounds[i]) == default_bounds, full
        seen.add(types[name])
    assert seen == set(hs3.PYHF_DEFAULTS)


# --------------------------------------------------------------------------- ROOT's dialect


def _root_style() -> dict:
    """A document as ROOT 6.3x's RooJSONFactoryWSTool writes a HistFactory model: named
    constraints, structured interpolation, default gamma names, ROOT's parameter ranges."""
    axes = [{"name": "obs_x_SR", "min": 0.0, "max": 2.0, "nbins": 2}]
    lumi = {"name": "Lumi", "parameter": "Lumi", "type": "normfactor", "constraint": "lumiConstraint"}
    return {
        "metadata": {"hs3_version": "0.1.90", "packages": [{"name": "ROOT", "version": "6.32.02"}]},
        "distributions": [
            {"name": "model_SR", "type": "histfactory_dist", "axes": axes,
             "default_interpolation": {"type": "mult", "in": "poly6", "out": "exp"},
             "samples": [
                 {"name": "bkg", "data": {"contents": [50.0, 30.0], "errors": [5.0, 3.0]}, "modifiers": [
                     lumi,
                     {"name": "jes", "type": "normsys", "parameter": "alpha_jes", "constraint": "alpha_jesConstraint",
                      "data": {"lo": 0.95, "hi": 1.04}},
                     {"name": "jes", "type": "histosys", "parameter": "alpha_jes",
                      "interpolation": {"type": "add", "in": "poly6", "out": "poly1"},
                      "constraint": "alpha_jesConstraint",
                      "data": {"lo": {"contents": [48.0, 29.5]}, "hi": {"contents": [52.5, 30.25]}}},
                     {"name": "bkg_shape", "type": "shapesys",
                      "constraints": ["gamma_bkg_shape_bin_0_constraint", "gamma_bkg_shape_bin_1_constraint"],
                      "data": {"vals": [0.1, 0.25]}},
                     {"name": "staterror", "type": "staterror"}]},
                 {"name": "cr_like", "data": {"contents": [10.0, 12.0]}, "modifiers": [
                     {"name": "free_shape", "type": "shapesys", "data": {"vals": [0.0, 0.0]}}]},
                 {"name": "sig", "data": {"contents": [2.0, 6.0], "errors": [0.5, 1.0]}, "modifiers": [
                     lumi, {"name": "mu", "parameter": "mu", "type": "normfactor"},
                     {"name": "staterror", "type": "staterror"}]},
             ]},
            {"name": "lumiConstraint", "type": "gaussian_dist", "x": "Lumi", "mean": "nominalLumi", "sigma": 0.02},
            {"name": "alpha_jesConstraint", "type": "gaussian_dist", "x": "alpha_jes", "mean": "nom_alpha_jes",
             "sigma": 1.0},
            {"name": "gamma_bkg_shape_bin_0_constraint", "type": "poisson_dist", "x": "nom_gamma_bkg_shape_bin_0",
             "mean": "gamma_bkg_shape_bin_0_poisMean"},
            {"name": "gamma_bkg_shape_bin_1_constraint", "type": "poisson_dist", "x": "nom_gamma_bkg_shape_bin_1",
             "mean": "gamma_bkg_shape_bin_1_poisMean"},
        ],
        "data": [{"name": "obsData_SR", "type": "binned", "axes": axes, "contents": [55.0, 40.0]}],
        "likelihoods": [{"name": "simPdf_obsData", "distributions": ["model_SR"], "data": ["obsData_SR"]}],
        "analyses": [{"name": "simPdf_obsData", "likelihood": "simPdf_obsData", "parameters_of_interest": ["mu"],
                      "domains": ["default_domain"]}],
        "domains": [{"name": "default_domain", "type": "product_domain", "axes": [
            {"name": "mu", "min": -3.0, "max": 5.0}, {"name": "Lumi", "min": 0.0, "max": 10.0},
            {"name": "alpha_jes", "min": -5.0, "max": 5.0}, {"name": "nominalLumi", "min": 0.0, "max": 2.0},
            {"name": "gamma_stat_SR_bin_0", "min": 0.0, "max": 10.0},
            {"name": "gamma_stat_SR_bin_1", "min": 0.0, "max": 10.0}]}],
        "parameter_points": [{"name": "default_values", "parameters": [
            {"name": "mu", "value": 1.0}, {"name": "Lumi", "value": 1.0}, {"name": "alpha_jes", "value": 0.0},
            {"name": "nominalLumi", "value": 1.0, "const": True},
            {"name": "nom_alpha_jes", "value": 0.0, "const": True},
            {"name": "gamma_stat_SR_bin_0", "value": 1.0}, {"name": "gamma_stat_SR_bin_1", "value": 1.0},
            {"name": "free_shape_gamma_unused", "value": 3.0}]}],
        "misc": {"ROOT_internal": {"combined_distributions": {"simPdf": {"distributions": ["model_SR"],
                                                                          "index_cat": "channelCat"}}}},
    }


def test_root_style_document() -> None:
    got = hs3.from_hs3(_root_style())
    lumi = {"name": "lumi", "type": "lumi", "data": None}
    expected = {
        "channels": [{"name": "SR", "samples": [
            {"name": "bkg", "data": [50.0, 30.0], "modifiers": [
                lumi, {"name": "jes", "type": "normsys", "data": {"hi": 1.04, "lo": 0.95}},
                {"name": "jes", "type": "histosys", "data": {"hi_data": [52.5, 30.25], "lo_data": [48.0, 29.5]}},
                {"name": "bkg_shape", "type": "shapesys", "data": [5.0, 7.5]},
                {"name": "staterror_SR", "type": "staterror", "data": [5.0, 3.0]}]},
            {"name": "cr_like", "data": [10.0, 12.0], "modifiers": [
                {"name": "free_shape", "type": "shapefactor", "data": None}]},
            {"name": "sig", "data": [2.0, 6.0], "modifiers": [
                lumi, {"name": "mu", "type": "normfactor", "data": None},
                {"name": "staterror_SR", "type": "staterror", "data": [0.5, 1.0]}]}]}],
        "observations": [{"name": "SR", "data": [55.0, 40.0]}],
        "measurements": [{"name": "simPdf_obsData", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "inits": [1.0], "bounds": [[0.0, 10.0]]},
            {"name": "mu", "bounds": [[-3.0, 5.0]]},
            {"name": "staterror_SR", "bounds": [[0.0, 10.0], [0.0, 10.0]]}]}}],
        "version": "1.0.0",
    }
    assert _sorted(got) == _sorted(expected)
    ours, theirs = nll_pair(got, expected)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def _edited(path: tuple, value) -> dict:
    doc = _root_style()
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_BKG = ("distributions", 0, "samples", 0, "modifiers")


@pytest.mark.parametrize(("doc", "message"), [
    (_edited(_BKG + (1, "interpolation"), {"type": "mult", "in": "exp", "out": None}), "interpolation"),
    (_edited(_BKG + (2, "interpolation"), KeyError), "interpolation"),  # the channel's default: mult/poly6/exp
    (_edited(_BKG + (1, "constraint"), "Poisson"), "Poisson constraint"),
    (_edited(("distributions", 2, "sigma"), 2.0), "unit Gaussian"),
    (_edited(("distributions", 0, "staterror"), {"constraint_type": "Poisson"}), "Poisson staterror"),
    (_edited(_BKG + (3, "constraint"), "Gauss"), "Poisson-constrained"),
    (_edited(_BKG + (0, "type"), "custom"), "custom"),
    (_edited(("likelihoods", 0, "distributions"), ["lumiConstraint"]), "not a histfactory_dist"),
    (_edited(("distributions", 0, "samples", 0, "data", "errors"), KeyError), "data.errors"),
    (_edited(("likelihoods", 0, "data"), ["nope"]), "no binned data"),
])
def test_what_pyhf_json_cannot_hold_is_refused(doc: dict, message: str) -> None:
    with pytest.raises(WorkspaceError, match=message):
        hs3.from_hs3(doc)


def test_unknown_analysis() -> None:
    with pytest.raises(ValueError, match="analysis: no analysis named 'nope'"):
        hs3.from_hs3(_root_style(), analysis="nope")


def _spec_with(edit) -> dict:
    spec = examples.simple_workspace()
    edit(spec)
    return spec


@pytest.mark.parametrize(("spec", "message"), [
    (_spec_with(lambda s: s["channels"][0]["samples"][1]["modifiers"].__setitem__(
        -1, {**s["channels"][0]["samples"][1]["modifiers"][-1], "name": "other_stat"})), "several staterror"),
    (_spec_with(lambda s: s["measurements"][0]["config"]["parameters"].append(
        {"name": "jes", "auxdata": [0.5], "sigmas": [1.0]})), "auxdata/sigmas"),
    (_spec_with(lambda s: s["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "alpha_jes", "type": "normfactor", "data": None})), "would stand for"),
])
def test_what_hs3_cannot_hold_is_refused(spec: dict, message: str) -> None:
    with pytest.raises(WorkspaceError, match=message):
        hs3.to_hs3(spec)


# --------------------------------------------------------------------------- pyhs3
@pytest.fixture(autouse=True)
def _keep_loggers_enabled():
    """Importing pyhs3 runs ``logging.config.dictConfig``, which disables every existing logger
    (``nextstat`` included) for the rest of the process; undo that after each test."""
    before = {name: lg.disabled for name, lg in logging.Logger.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    yield
    for name, disabled in before.items():
        logging.getLogger(name).disabled = disabled




@pytest.mark.parametrize("name", list(BUNDLED))
def test_pyhs3_accepts_what_we_write(name: str) -> None:
    pyhs3 = pytest.importorskip("pyhs3")
    doc = hs3.to_hs3(BUNDLED[name]())
    ws = pyhs3.Workspace(**json.loads(json.dumps(doc)))
    assert [a.name for a in ws.analyses] == [m["name"] for m in BUNDLED[name]()["measurements"]]
    channels = [d for d in ws.distributions if d.type == "histfactory_dist"]
    assert [c.name for c in channels] == ["model_SR", "model_CR"]
    stat = [m for c in channels for s in c.samples for m in s.modifiers if m.type == "staterror"]
    assert stat and all(m.constraint == "Gauss" for m in stat)


@pytest.mark.slow
def test_pyhs3_likelihood_equals_pyhf() -> None:
    """pyhs3 evaluates the likelihood of what we write as pyhf does (normfactor, lumi, normsys,
    histosys, shapefactor). Left out: staterror (pyhs3 0.4.2 fails to build BB-lite channels)
    and shapesys (pyhs3 reads ``vals`` as absolute uncertainties, ROOT as relative)."""
    pyhs3 = pytest.importorskip("pyhs3")
    pytensor = pytest.importorskip("pytensor")
    from pytensor.graph.traversal import explicit_graph_inputs

    spec = all_modifiers_workspace()
    for ch in spec["channels"]:
        for s in ch["samples"]:
            s["modifiers"] = [m for m in s["modifiers"] if m["type"] not in ("shapesys", "staterror")]
    doc = hs3.to_hs3(spec)
    ws = pyhs3.Workspace(**json.loads(json.dumps(doc)))
    logp = ws.model(ws.analyses[0], progress=False, mode="FAST_COMPILE").log_prob
    inputs = [v for v in explicit_graph_inputs([logp]) if v.name is not None]
    f = pytensor.function(inputs, logp, mode="FAST_COMPILE", on_unused_input="ignore")
    pyhf.set_backend("numpy")
    pws = pyhf.Workspace(spec)
    pm = pws.model()
    data = np.asarray(pws.data(pm))
    where = {hs3_name: (par.name, i) for par in hs3._parameters(spec).values() for i, hs3_name in enumerate(par.names)}
    init = np.asarray(pm.config.suggested_init())
    for pars in (init, init + np.random.default_rng(5).normal(0, 0.1, init.size)):
        args = [np.asarray(pars[pm.config.par_slice(where[v.name][0])][where[v.name][1]]) for v in inputs]
        assert float(np.squeeze(f(*args))) == pytest.approx(float(pm.logpdf(pars, data)[0]), rel=1e-10)
