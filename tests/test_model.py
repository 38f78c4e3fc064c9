"""The compiled model against pyhf 0.7.6: layout, expected data, NLL, derivatives, bad input."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest

import nextstat
from conftest import all_modifiers_workspace, pyhf_model_and_data

CODES = list(itertools.product(["code1", "code4"], ["code0", "code2", "code4p"]))


def _points(model: nextstat.Model, n: int = 4, seed: int = 3) -> list[np.ndarray]:
    """Initial point plus random points inside the bounds, with nuisance parameters well beyond
    +-1 so every interpolation branch (|alpha| < 1, > 1, < -1) is exercised."""
    rng = np.random.default_rng(seed)
    lo, hi = model.suggested_bounds().T
    pts = [model.suggested_init()]
    for _ in range(n):
        p = model.suggested_init() + rng.normal(0, 0.15, model.n_params)
        alphas = np.array([not n.endswith("]") and lo_ < 0 for n, lo_ in zip(model.parameter_names, lo)])
        p[alphas] = rng.uniform(-2.5, 2.5, alphas.sum())
        pts.append(np.clip(p, lo + 1e-6, hi))
    return pts


def test_layout_matches_pyhf(pyhf_numpy, all_mods_ws):
    pm, data = pyhf_model_and_data(all_mods_ws)
    m = nextstat.from_pyhf(all_mods_ws)
    assert m.parameter_names == pm.config.par_names
    assert m.poi_name == pm.config.poi_name and m.poi_index == pm.config.poi_index
    np.testing.assert_array_equal(m.suggested_init(), pm.config.suggested_init())
    np.testing.assert_array_equal(m.suggested_bounds(), pm.config.suggested_bounds())
    np.testing.assert_array_equal(m.fixed_params, pm.config.suggested_fixed())
    np.testing.assert_array_equal(m.data, data)
    assert m.channels == pm.config.channels and m.samples == pm.config.samples
    assert m.n_params == pm.config.npars


@pytest.mark.parametrize("normsys,histosys", CODES)
def test_nll_and_expected_data_match_pyhf(pyhf_numpy, all_mods_ws, normsys, histosys):
    settings = {"normsys": {"interpcode": normsys}, "histosys": {"interpcode": histosys}}
    pm, data = pyhf_model_and_data(all_mods_ws, modifier_settings=settings)
    m = nextstat.from_pyhf(all_mods_ws, modifier_settings=settings)
    for p in _points(m):
        np.testing.assert_allclose(m.expected_data(p), pm.expected_data(p), rtol=1e-12)
        ref = -pm.logpdf(p, data)[0]
        assert m.nll(p) == pytest.approx(ref, rel=1e-10)
        # alternative data (Asimov at this point)
        d2 = pm.expected_data(p)
        assert m.nll(p, data=d2) == pytest.approx(-pm.logpdf(p, d2)[0], rel=1e-10)


def test_expected_by_sample_sums_to_total(all_mods_ws):
    m = nextstat.from_pyhf(all_mods_ws)
    p = _points(m)[1]
    total = sum(m.expected_by_sample(p).values())
    np.testing.assert_allclose(total, m.expected_main(p), rtol=1e-13)


@pytest.mark.parametrize("normsys,histosys", CODES)
def test_gradient_and_hessian_match_finite_differences(all_mods_ws, normsys, histosys):
    settings = {"normsys": {"interpcode": normsys}, "histosys": {"interpcode": histosys}}
    m = nextstat.from_pyhf(all_mods_ws, modifier_settings=settings)
    for p in _points(m, n=2, seed=11)[1:]:
        # stay away from the kinks of piecewise interpolation at |alpha| = 1 and 0
        h = 1e-6
        g = m.grad_nll(p)
        g_fd = np.array([(m.nll(p + h * e) - m.nll(p - h * e)) / (2 * h) for e in np.eye(m.n_params)])
        np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-5)
        H = m.hess_nll(p)
        H_fd = np.array([(m.grad_nll(p + h * e) - m.grad_nll(p - h * e)) / (2 * h) for e in np.eye(m.n_params)])
        np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-12)


def test_gradient_at_zero_poi(all_mods_ws):
    """Factors that vanish (mu = 0) must not break the product rule."""
    m = nextstat.from_pyhf(all_mods_ws)
    p = m.suggested_init()
    p[m.poi_index] = 0.0
    h = 1e-6
    e = np.zeros(m.n_params)
    e[m.poi_index] = h
    fd = (m.nll(p + e) - m.nll(p)) / h  # one-sided: mu >= 0
    assert m.grad_nll(p)[m.poi_index] == pytest.approx(fd, rel=1e-4)
    assert np.all(np.isfinite(m.hess_nll(p)))


def test_inputs_accepted_as_dict_string_path_and_gz(tmp_path, example_ws):
    import gzip

    path = tmp_path / "ws.json"
    path.write_text(json.dumps(example_ws))
    gz = tmp_path / "ws.json.gz"
    with gzip.open(gz, "wt") as f:
        json.dump(example_ws, f)
    ms = [nextstat.from_pyhf(x) for x in (example_ws, json.dumps(example_ws), path, str(path), gz)]
    nlls = {m.nll(m.suggested_init()) for m in ms}
    assert len(nlls) == 1
    assert "channels" in example_ws  # caller's dict untouched


def test_patches_and_measurement(pyhf_numpy, example_ws):
    patch = [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [1.0, 2.0, 3.0, 4.0]}]
    m = nextstat.from_pyhf(example_ws, patches=[patch])
    pm, data = pyhf_model_and_data(example_ws, patches=[patch])
    p = m.suggested_init()
    assert m.nll(p) == pytest.approx(-pm.logpdf(p, data)[0], rel=1e-12)
    with pytest.raises(ValueError, match="measurement: no measurement named 'nope'"):
        nextstat.from_pyhf(example_ws, measurement="nope")


def test_user_parameter_config(pyhf_numpy, all_mods_ws):
    ws = copy.deepcopy(all_mods_ws)
    ws["measurements"][0]["config"]["parameters"] += [
        {"name": "jes", "fixed": True, "inits": [0.5]},
        {"name": "staterror_SR", "bounds": [[0.5, 1.5]] * 3},
    ]
    pm, data = pyhf_model_and_data(ws)
    m = nextstat.from_pyhf(ws)
    np.testing.assert_array_equal(m.fixed_params, pm.config.suggested_fixed())
    np.testing.assert_array_equal(m.suggested_init(), pm.config.suggested_init())
    np.testing.assert_array_equal(m.suggested_bounds(), pm.config.suggested_bounds())


def test_prior_widths(all_mods_ws):
    m = nextstat.from_pyhf(all_mods_ws)
    w = m.prior_widths()
    assert np.isnan(w[m.poi_index])
    assert w[m.parameter_names.index("lumi")] == pytest.approx(0.02)
    assert w[m.parameter_names.index("jes")] == 1.0
    tau = np.array(all_mods_ws["channels"][0]["samples"][2]["data"]) ** 2 / np.array(
        all_mods_ws["channels"][0]["samples"][2]["modifiers"][2]["data"]) ** 2
    np.testing.assert_allclose(w[[n.startswith("bkg2_shape") for n in m.parameter_names]], 1 / np.sqrt(tau))


def _broken(mutate) -> dict:
    ws = all_modifiers_workspace()
    mutate(ws)
    return ws


@pytest.mark.parametrize("mutate,path", [
    (lambda ws: ws["channels"][0]["samples"][1]["modifiers"][1]["data"].__setitem__("hi_data", [1.0]),
     r"channels\[0\]\.samples\[1\]\.modifiers\[1\]\.data\.hi_data: expected 3 bins, got 1"),
    (lambda ws: ws["channels"][1]["samples"][1].__setitem__("data", [1.0, 2.0, 3.0]),
     r"channels\[1\]\.samples\[1\]\.data: expected 2 bins, got 3"),
    (lambda ws: ws["channels"][0]["samples"][0]["modifiers"][0].__setitem__("type", "normfactr"),
     r"channels\[0\]\.samples\[0\]\.modifiers\[0\]\.type: unknown modifier type 'normfactr'"),
    (lambda ws: ws["channels"][0]["samples"][0].pop("modifiers"),
     r"channels\[0\]\.samples\[0\]\.modifiers: required field is missing"),
    (lambda ws: ws["measurements"][0]["config"].__setitem__("poi", "nope"),
     r"measurements\[0\]\.config\.poi: POI 'nope' is not a parameter"),
    (lambda ws: ws["channels"][0]["samples"][2]["modifiers"][1]["data"].__setitem__("lo", -0.1),
     r"channels\[0\]\.samples\[2\]\.modifiers\[1\]\.data\.lo: normsys factors must be > 0"),
    (lambda ws: ws["channels"][0]["samples"][1]["data"].__setitem__(0, float("nan")),
     r"channels\[0\]\.samples\[1\]\.data\[0\]: expected a finite number"),
    (lambda ws: ws["observations"].pop(),
     r"observations: no observation for channel 'CR'"),
    (lambda ws: ws["observations"][0]["data"].__setitem__(1, -3.0),
     r"observations\[0\]\.data\[1\]: must be >= 0"),
    (lambda ws: ws["channels"][0]["samples"][2]["modifiers"][2].__setitem__("data", [1.0, -1.0, 1.0]),
     r"channels\[0\]\.samples\[2\]\.modifiers\[2\]\.data\[1\]: must be >= 0"),
    (lambda ws: [s.__setitem__("data", [0.0] * 3) for s in ws["channels"][0]["samples"]],
     r"bin 0 of channel 'SR' has total expected yield 0.0 .* the likelihood is undefined"),
    (lambda ws: ws["measurements"][0]["config"]["parameters"].pop(0),
     r"lumi parameter 'lumi' needs 'auxdata'"),
])
def test_bad_workspaces_name_the_field(mutate, path):
    with pytest.raises(nextstat.WorkspaceError, match=path):
        nextstat.from_pyhf(_broken(mutate))


def test_malformed_json_and_missing_file(tmp_path):
    with pytest.raises(nextstat.WorkspaceError, match="malformed workspace JSON"):
        nextstat.from_pyhf('{"channels": [')
    with pytest.raises(nextstat.WorkspaceError, match="no workspace file"):
        nextstat.from_pyhf(tmp_path / "missing.json")
    with pytest.raises(nextstat.WorkspaceError, match=r"patches\[0\]: cannot apply patch"):
        nextstat.from_pyhf(all_modifiers_workspace(), patches=[[{"op": "remove", "path": "/channels/7"}]])


def test_bad_arguments(all_mods_ws):
    m = nextstat.from_pyhf(all_mods_ws)
    with pytest.raises(ValueError, match=r"pars: expected shape \(\d+,\), got \(2,\)"):
        m.nll([1.0, 2.0])
    with pytest.raises(ValueError, match="data: expected shape"):
        m.nll(m.suggested_init(), data=[1.0])
    with pytest.raises(ValueError, match="interpcode"):
        nextstat.from_pyhf(all_mods_ws, modifier_settings={"normsys": {"interpcode": "code0"}})


def test_nll_is_inf_not_nan_where_rates_vanish(all_mods_ws):
    m = nextstat.from_pyhf(all_mods_ws)
    p = m.suggested_init()
    p[m.parameter_names.index("lumi")] = 0.0
    assert m.nll(p) == np.inf
