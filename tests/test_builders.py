"""Tests for nextstat.builders: workspaces accepted by pyhf, yields as given."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyhf
import pytest

from nextstat.builders import (
    binning,
    build_workspace_from_events,
    build_workspace_from_histograms,
    combine_workspaces,
)

SIGNAL = np.array([1.0, 3.0, 6.0])
BACKGROUNDS = {"ttbar": np.array([50.0, 20.0, 5.0]), "wjets": np.array([30.0, 10.0, 2.0])}


def _pyhf_model(ws):
    """Validate the schema with pyhf and return its model (numpy backend)."""
    pyhf.set_backend("numpy")
    workspace = pyhf.Workspace(ws)
    return workspace, workspace.model()


def _modifiers(ws, sample, channel=0):
    samples = ws["channels"][channel]["samples"]
    return {m["name"]: m for m in next(s for s in samples if s["name"] == sample)["modifiers"]}


def test_binning():
    np.testing.assert_array_equal(binning(4, 0.2, 1.0), np.linspace(0.2, 1.0, 5))
    assert binning(1, -1, 1).dtype == np.float64


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0.0, 1.0), "n_bins"),
        ((2.5, 0.0, 1.0), "n_bins"),
        ((True, 0.0, 1.0), "n_bins"),
        ((3, 1.0, 1.0), "hi"),
        ((3, 0.0, float("nan")), "hi"),
        ((3, float("-inf"), 1.0), "lo"),
    ],
)
def test_binning_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        binning(*args)


def test_minimal_workspace_accepted_by_pyhf():
    ws = build_workspace_from_histograms(SIGNAL, BACKGROUNDS)
    json.dumps(ws)  # plain JSON types only
    assert ws["version"] == "1.0.0"
    workspace, model = _pyhf_model(ws)
    assert model.config.poi_name == "mu"
    assert model.config.channels == ["SR"]
    assert model.config.samples == ["signal", "ttbar", "wjets"]
    init = model.config.suggested_init()
    expected = model.expected_data(init, include_auxdata=False)
    np.testing.assert_allclose(expected, SIGNAL + sum(BACKGROUNDS.values()), rtol=1e-12)
    # default observed data: total background, no signal
    np.testing.assert_allclose(
        workspace.data(model, include_auxdata=False), sum(BACKGROUNDS.values()), rtol=1e-12
    )


def test_full_workspace_accepted_by_pyhf():
    ws = build_workspace_from_histograms(
        SIGNAL,
        BACKGROUNDS,
        data=[81.0, 35.0, 12.5],
        channel="SR_highpt",
        poi="mu_sig",
        poi_bounds=(-5.0, 20.0),
        signal_name="hww",
        normsys={
            "ttbar": {"ttbar_xsec": (0.9, 1.1), "jes": (0.97, 1.04)},
            "hww": {"jes": (0.95, 1.06)},
        },
        histosys={"wjets": {"wjets_shape": ([28.0, 10.0, 3.0], [32.0, 10.0, 1.0])}},
        staterror={"ttbar": [5.0, 3.0, 1.0], "wjets": [4.0, 2.0, 1.0]},
        shapesys={"wjets": [3.0, 1.0, 0.5]},
        lumi=0.017,
        measurement="fit",
    )
    workspace, model = _pyhf_model(ws)
    init = model.config.suggested_init()
    np.testing.assert_allclose(
        model.expected_data(init, include_auxdata=False),
        SIGNAL + sum(BACKGROUNDS.values()),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        workspace.data(model, include_auxdata=False), [81.0, 35.0, 12.5], rtol=1e-12
    )
    assert model.config.poi_name == "mu_sig"
    assert list(model.config.suggested_bounds()[model.config.poi_index]) == [-5.0, 20.0]
    assert set(model.config.parameters) == {
        "mu_sig",
        "lumi",
        "ttbar_xsec",
        "jes",
        "wjets_shape",
        "staterror_SR_highpt",
        "shapesys_SR_highpt_wjets",
    }

    # each modifier appears with the right data
    sig = _modifiers(ws, "hww")
    assert sig["mu_sig"] == {"name": "mu_sig", "type": "normfactor", "data": None}
    assert sig["lumi"]["type"] == "lumi"
    assert sig["jes"] == {"name": "jes", "type": "normsys", "data": {"hi": 1.06, "lo": 0.95}}
    ttbar = _modifiers(ws, "ttbar")
    assert ttbar["ttbar_xsec"]["data"] == {"hi": 1.1, "lo": 0.9}
    assert ttbar["staterror_SR_highpt"] == {
        "name": "staterror_SR_highpt",
        "type": "staterror",
        "data": [5.0, 3.0, 1.0],
    }
    assert "mu_sig" not in ttbar
    wjets = _modifiers(ws, "wjets")
    assert wjets["wjets_shape"] == {
        "name": "wjets_shape",
        "type": "histosys",
        "data": {"hi_data": [32.0, 10.0, 1.0], "lo_data": [28.0, 10.0, 3.0]},
    }
    assert wjets["shapesys_SR_highpt_wjets"]["type"] == "shapesys"
    assert wjets["shapesys_SR_highpt_wjets"]["data"] == [3.0, 1.0, 0.5]

    (meas,) = ws["measurements"]
    assert meas["name"] == "fit"
    params = {p["name"]: p for p in meas["config"]["parameters"]}
    assert params["mu_sig"]["bounds"] == [[-5.0, 20.0]]
    assert params["lumi"]["sigmas"] == [0.017]
    assert params["lumi"]["auxdata"] == [1.0]
    # pyhf reads the lumi constraint width from the measurement
    lumi_set = model.config.param_set("lumi")
    assert lumi_set.width() == pytest.approx([0.017])

    # staterror: pyhf combines sample uncertainties in quadrature, relative to the total
    stat_set = model.config.param_set("staterror_SR_highpt")
    rel = np.hypot([5.0, 3.0, 1.0], [4.0, 2.0, 1.0]) / (BACKGROUNDS["ttbar"] + BACKGROUNDS["wjets"])
    np.testing.assert_allclose(stat_set.width(), rel, rtol=1e-12)


def test_normsys_moves_expected_yields_like_pyhf():
    ws = build_workspace_from_histograms(
        SIGNAL, BACKGROUNDS, normsys={"ttbar": {"ttbar_xsec": (0.9, 1.2)}}
    )
    _, model = _pyhf_model(ws)
    pars = model.config.suggested_init()
    pars[model.config.par_slice("ttbar_xsec")] = [1.0]
    expected = model.expected_data(pars, include_auxdata=False)
    np.testing.assert_allclose(
        expected, SIGNAL + 1.2 * BACKGROUNDS["ttbar"] + BACKGROUNDS["wjets"], rtol=1e-12
    )


def test_inputs_not_mutated_and_torch_accepted():
    torch = pytest.importorskip("torch")
    backgrounds = {"bkg": torch.tensor([4.0, 5.0], requires_grad=True)}
    normsys = {"bkg": {"n": (0.9, 1.1)}}
    before = copy.deepcopy(normsys)
    ws = build_workspace_from_histograms(torch.tensor([1.0, 2.0]), backgrounds, normsys=normsys)
    assert normsys == before
    assert ws["channels"][0]["samples"][1]["data"] == [4.0, 5.0]


def _events(rng, n, a, b):
    return rng.beta(a, b, n), rng.uniform(0.5, 1.5, n)


def test_events_equal_numpy_histogram():
    rng = np.random.default_rng(1)
    sig = _events(rng, 500, 5, 2)
    bkgs = {"ttbar": _events(rng, 2000, 2, 5), "qcd": _events(rng, 3000, 1, 3)}
    data = rng.beta(2, 4, 1500)
    edges = binning(6, 0.1, 0.9)
    ws = build_workspace_from_events(sig, bkgs, edges, data=data, staterror=True, lumi=0.02)
    samples = {s["name"]: s for s in ws["channels"][0]["samples"]}
    for name, (values, weights) in {"signal": sig, **bkgs}.items():
        sumw = np.histogram(values, edges, weights=weights)[0]
        sumw2 = np.histogram(values, edges, weights=weights**2)[0]
        np.testing.assert_allclose(samples[name]["data"], sumw, rtol=1e-12)
        stat = {m["type"]: m for m in samples[name]["modifiers"]}["staterror"]
        assert stat["name"] == "staterror_SR"
        np.testing.assert_allclose(stat["data"], np.sqrt(sumw2), rtol=1e-12)
    np.testing.assert_array_equal(ws["observations"][0]["data"], np.histogram(data, edges)[0])

    workspace, model = _pyhf_model(ws)
    expected = model.expected_data(model.config.suggested_init(), include_auxdata=False)
    total = sum(np.histogram(v, edges, weights=w)[0] for v, w in [sig, *bkgs.values()])
    np.testing.assert_allclose(expected, total, rtol=1e-12)


def test_events_defaults_and_options():
    rng = np.random.default_rng(2)
    sig_values = rng.uniform(0, 1, 100)  # bare values: unit weights
    bkg = _events(rng, 400, 1, 2)
    edges = [0.0, 0.5, 1.0]
    lo = (bkg[0] * 0.95, bkg[1])
    hi = (np.clip(bkg[0] * 1.05, 0, 1), bkg[1])
    ws = build_workspace_from_events(
        sig_values,
        {"bkg": bkg},
        edges,
        staterror=["bkg"],
        histosys={"bkg": {"jes": (lo, hi)}},
        shapesys={"signal": [1.0, 1.0]},
    )
    signal_mods = _modifiers(ws, "signal")
    assert "staterror_SR" not in signal_mods
    assert signal_mods["shapesys_SR_signal"]["data"] == [1.0, 1.0]
    np.testing.assert_array_equal(
        ws["channels"][0]["samples"][0]["data"], np.histogram(sig_values, edges)[0]
    )
    bkg_hist = np.histogram(bkg[0], edges, weights=bkg[1])[0]
    np.testing.assert_allclose(ws["observations"][0]["data"], bkg_hist, rtol=1e-12)
    jes = _modifiers(ws, "bkg")["jes"]["data"]
    np.testing.assert_allclose(jes["lo_data"], np.histogram(lo[0], edges, weights=lo[1])[0])
    np.testing.assert_allclose(jes["hi_data"], np.histogram(hi[0], edges, weights=hi[1])[0])
    _pyhf_model(ws)

    explicit = build_workspace_from_events(
        sig_values, {"bkg": bkg}, edges, staterror={"bkg": [2.0, 3.0]}
    )
    assert _modifiers(explicit, "bkg")["staterror_SR"]["data"] == [2.0, 3.0]
    none = build_workspace_from_events(sig_values, {"bkg": bkg}, edges)
    assert _modifiers(none, "bkg") == {}


def test_events_outside_range_dropped():
    ws = build_workspace_from_events(
        ([-1.0, 0.25, 0.75, 1.0, 2.0], None), {"b": [0.5]}, binning(2, 0.0, 1.0)
    )
    # like numpy: the last bin includes its upper edge, out-of-range events are dropped
    assert ws["channels"][0]["samples"][0]["data"] == [1.0, 2.0]


def test_combine_workspaces_pyhf():
    sr = build_workspace_from_histograms(
        [5.0, 8.0],
        {"bkg": [20.0, 10.0]},
        channel="SR",
        lumi=0.02,
        normsys={"bkg": {"bkg_norm": (0.9, 1.1)}},
        staterror={"bkg": [2.0, 1.0]},
    )
    cr = build_workspace_from_histograms(
        [0.1],
        {"bkg": [200.0]},
        channel="CR",
        lumi=0.02,
        normsys={"bkg": {"bkg_norm": (0.9, 1.1)}},
        staterror={"bkg": [14.0]},
    )
    sr_before = copy.deepcopy(sr)
    ws = combine_workspaces(sr, cr)
    assert sr == sr_before
    _, model = _pyhf_model(ws)
    assert model.config.channels == ["CR", "SR"]  # pyhf sorts channels
    assert {"bkg_norm", "lumi", "staterror_SR", "staterror_CR", "mu"} == set(
        model.config.parameters
    )
    assert model.config.param_set("bkg_norm").n_parameters == 1  # correlated
    np.testing.assert_allclose(
        model.expected_data(model.config.suggested_init(), include_auxdata=False),
        [200.1, 25.0, 18.0],  # CR then SR
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="channel 'SR' already defined"):
        combine_workspaces(sr, sr)
    other_lumi = build_workspace_from_histograms([1.0], {"bkg": [1.0]}, channel="X", lumi=0.05)
    with pytest.raises(ValueError, match="'lumi'"):
        combine_workspaces(sr, other_lumi)
    other_poi = build_workspace_from_histograms([1.0], {"bkg": [1.0]}, channel="Y", poi="k")
    with pytest.raises(ValueError, match="poi"):
        combine_workspaces(sr, other_poi)
    with pytest.raises(ValueError, match="workspaces"):
        combine_workspaces()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"signal": [[1.0, 2.0]]}, r"signal: expected shape \[B\], got \[1, 2\]"),
        ({"signal": [-1.0, 2.0]}, r"signal: expected non-negative values, got -1.0 in bin 0"),
        ({"signal": []}, "signal: expected at least one bin"),
        ({"signal": ["a", "b"]}, "signal: expected an array of numbers"),
        ({"backgrounds": {"b": [1.0, 2.0, 3.0]}}, r"backgrounds\['b'\]: expected shape \[2\]"),
        ({"backgrounds": {"b": [1.0, float("nan")]}}, r"backgrounds\['b'\]: expected finite"),
        ({"backgrounds": {}}, "backgrounds: expected at least one"),
        ({"backgrounds": [1.0, 2.0]}, "backgrounds: expected a mapping"),
        ({"backgrounds": {"signal": [1.0, 2.0]}}, "clashes with signal_name"),
        ({"backgrounds": {"": [1.0, 2.0]}}, "backgrounds: expected a non-empty string"),
        ({"data": [1.0]}, r"data: expected shape \[2\]"),
        ({"data": [1.0, -2.0]}, "data: expected non-negative"),
        ({"normsys": {"x": {"n": (0.9, 1.1)}}}, r"normsys: unknown sample\(s\) \['x'\]"),
        ({"normsys": {"b": {"n": (0.0, 1.1)}}}, r"normsys\['b'\]\['n'\] lo: expected a value > 0"),
        ({"normsys": {"b": {"n": 1.1}}}, r"normsys\['b'\]\['n'\]: expected a pair"),
        ({"normsys": {"b": (0.9, 1.1)}}, r"normsys\['b'\]: expected a mapping"),
        ({"normsys": {"b": {"mu": (0.9, 1.1)}}}, "clashes with the poi"),
        ({"histosys": {"b": {"h": ([1.0, 2.0], [1.0])}}}, r"histosys\['b'\]\['h'\] hi: expected"),
        ({"staterror": {"b": [1.0, 2.0, 3.0]}}, r"staterror\['b'\]: expected shape \[2\]"),
        ({"staterror": True}, "use build_workspace_from_events"),
        ({"shapesys": {"b": [1.0, -1.0]}}, r"shapesys\['b'\]: expected non-negative"),
        ({"lumi": 0.0}, "lumi: expected a value > 0"),
        ({"lumi": float("inf")}, "lumi: expected a finite"),
        ({"poi_bounds": (1.0, 0.0)}, "poi_bounds: expected lo < hi"),
        ({"channel": ""}, "channel: expected a non-empty string"),
        ({"poi": None}, "poi: expected a non-empty string"),
    ],
)
def test_histograms_bad_input(kwargs, match):
    args = {"signal": [1.0, 2.0], "backgrounds": {"b": [3.0, 4.0]}, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_workspace_from_histograms(args.pop("signal"), args.pop("backgrounds"), **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bin_edges": [0.0]}, r"bin_edges: expected shape \[B \+ 1\]"),
        ({"bin_edges": [0.0, 0.5, 0.5]}, "bin_edges: expected strictly increasing"),
        ({"bin_edges": [[0.0, 1.0]]}, "bin_edges: expected shape"),
        ({"signal": ([0.1, 0.2], [1.0])}, r"signal weights: expected shape \[2\]"),
        ({"signal": ([0.1, 0.2], [1.0, 1.0], [1.0])}, "tuple of length 3"),
        ({"signal": [0.1, float("nan")]}, "signal values: expected finite"),
        (
            {"backgrounds": {"b": ([0.1, 0.2], [1.0, -3.0])}},
            r"backgrounds\['b'\]: expected non-neg",
        ),
        ({"data": [[0.1]]}, "data: expected shape"),
        ({"staterror": ["nope"]}, r"staterror: unknown sample\(s\) \['nope'\]"),
        ({"staterror": "b"}, "staterror: expected a bool"),
        ({"histosys": {"b": {"h": ([0.1],)}}}, r"histosys\['b'\]\['h'\]: expected a pair"),
        ({"histosys": {"x": {"h": ([0.1], [0.2])}}}, r"histosys: unknown sample\(s\) \['x'\]"),
    ],
)
def test_events_bad_input(kwargs, match):
    args = {
        "signal": ([0.1, 0.7], [1.0, 1.0]),
        "backgrounds": {"b": ([0.2, 0.6, 0.9], None)},
        "bin_edges": [0.0, 0.5, 1.0],
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        build_workspace_from_events(
            args.pop("signal"), args.pop("backgrounds"), args.pop("bin_edges"), **args
        )
