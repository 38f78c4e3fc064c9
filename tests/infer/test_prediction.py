"""nextstat.prediction against cabinetry 0.6.0's ``model_utils.prediction``, given the same fit.

cabinetry is fed NextStat's best fit, Hesse errors and correlations (``cabinetry.fit.FitResults``),
so both compute the same formula on the same numbers: yields and standard deviations per
channel, sample and bin, of the per-bin totals and of the per-channel sums, pre- and post-fit.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pytest
from conftest import EXAMPLE, all_modifiers_workspace, needs_workspaces, pyhf_model_and_data

import nextstat
from nextstat import testing
from nextstat.errors import ConvergenceWarning
from nextstat.infer.prediction import prefit_parameters

RTOL = 1e-6


def cabinetry_prediction(ws: dict, fit: nextstat.FitResult | None):
    import cabinetry
    import pyhf

    pyhf.set_backend("numpy")
    pm, _ = pyhf_model_and_data(ws)
    if fit is None:
        return cabinetry.model_utils.prediction(pm)
    fr = cabinetry.fit.FitResults(np.asarray(fit.bestfit), np.asarray(fit.errors), pm.config.par_names,
                                  np.asarray(fit.correlation), 2.0 * fit.nll)
    return cabinetry.model_utils.prediction(pm, fit_results=fr)


def assert_same(ours: nextstat.PredictionResult, theirs, atol: float = 1e-9) -> None:
    assert ours.label == theirs.label
    assert list(ours.channels) == theirs.model.config.channels
    assert list(ours.samples) == theirs.model.config.samples
    for c, name in enumerate(ours.channels):
        ch = ours.channel(name)
        by_bin = np.asarray(theirs.total_stdev_model_bins[c])   # (S + 1, n): samples, then the total
        by_channel = np.asarray(theirs.total_stdev_model_channels[c])  # (S + 1,)
        np.testing.assert_allclose(ch.yields, np.asarray(theirs.model_yields[c]), rtol=RTOL, atol=atol)
        np.testing.assert_allclose(ch.stdev, by_bin[:-1], rtol=RTOL, atol=atol)
        np.testing.assert_allclose(ch.total_stdev, by_bin[-1], rtol=RTOL, atol=atol)
        np.testing.assert_allclose(ch.sample_sums_stdev, by_channel[:-1], rtol=RTOL, atol=atol)
        assert math.isclose(ch.sum_stdev, by_channel[-1], rel_tol=RTOL, abs_tol=atol)
        np.testing.assert_allclose(ch.total, np.sum(theirs.model_yields[c], axis=0), rtol=RTOL)


@pytest.fixture(scope="module")
def all_mods():
    ws = all_modifiers_workspace()
    model = nextstat.from_pyhf(ws)
    return ws, model, nextstat.fit(model)


@pytest.mark.parametrize("post", [False, True], ids=["prefit", "postfit"])
def test_all_modifiers_equal_cabinetry(all_mods, post):
    ws, model, fit = all_mods
    ours = nextstat.prediction(model, fit if post else None)
    assert_same(ours, cabinetry_prediction(ws, fit if post else None))
    assert ours.converged and ours.method == "variations"
    # correlations matter post-fit: the total's band is not the quadrature sum of the samples'
    if post:
        quad = np.sqrt(np.sum(ours.stdev**2, axis=0))
        assert np.max(np.abs(ours.total_stdev / quad - 1)) > 0.05


def test_example_and_custom_inits_equal_cabinetry():
    """A normfactor with a custom initial value and a fixed constrained parameter: cabinetry
    evaluates pre-fit yields at the normfactor's init and gives the fixed one no width."""
    ws = json.loads(EXAMPLE.read_text())
    params = ws["measurements"][0]["config"]["parameters"]
    next(p for p in params if p["name"] == "ttbar_norm")["inits"] = [1.3]
    params.append({"name": "jes", "fixed": True})
    model = nextstat.from_pyhf(ws)
    values, widths = prefit_parameters(model)
    assert values[model.parameter_names.index("ttbar_norm")] == 1.3
    assert widths[model.parameter_names.index("jes")] == 0.0
    assert_same(nextstat.prediction(model), cabinetry_prediction(ws, None))
    fit = nextstat.fit(model)
    assert_same(nextstat.prediction(model, fit), cabinetry_prediction(ws, fit))


@needs_workspaces
def test_sbottom_postfit_equals_cabinetry():
    import jsonpatch

    ws = jsonpatch.apply_patch(testing.sbottom("RegionA"),
                               testing.sbottom_patch("RegionA", "patch.sbottom_1300_205_60.json"))
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    assert_same(nextstat.prediction(model, fit), cabinetry_prediction(ws, fit))


@needs_workspaces
def test_tttt_pre_and_postfit_equal_cabinetry():
    """The ATLAS four-top likelihood: 19 samples over 5 channels, shapesys and 6 normfactors."""
    ws = testing.tttt()
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    assert fit.converged
    for fr in (None, fit):
        assert_same(nextstat.prediction(model, fr), cabinetry_prediction(ws, fr))


def linear_workspace() -> dict:
    """Rates linear in every parameter: normfactors, lumi, staterror, shapesys, shapefactor."""
    ws = copy.deepcopy(all_modifiers_workspace())
    for ch in ws["channels"]:
        for s in ch["samples"]:
            s["modifiers"] = [m for m in s["modifiers"] if m["type"] not in ("normsys", "histosys")]
    return ws


def test_jacobian_equals_variations_where_rates_are_linear():
    ws = linear_workspace()
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    for fr in (None, fit):
        var = nextstat.prediction(model, fr)
        jac = nextstat.prediction(model, fr, method="jacobian")
        assert jac.method == "jacobian"
        for what in ("stdev", "total_stdev", "channel_stdev", "channel_total_stdev"):
            np.testing.assert_allclose(getattr(jac, what), getattr(var, what), rtol=1e-9, atol=1e-12)


def test_jacobian_is_the_derivative(all_mods):
    """method="jacobian" propagates the analytic dy/dtheta: check it against central
    differences of the yields (small step) through the same variance formula."""
    _, model, fit = all_mods
    jac = nextstat.prediction(model, fit, method="jacobian")
    theta, sigma, corr = fit.bestfit, fit.errors, fit.correlation
    h = 1e-6
    grads = []
    for i in range(model.n_params):
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        diff = {s: (model.expected_by_sample(up)[s] - model.expected_by_sample(dn)[s]) / (2 * h)
                for s in model.samples}
        grads.append(np.array([diff[s] for s in model.samples]))
    v = np.array(grads) * sigma[:, None, None]  # (P, S, B)
    var = np.einsum("isb,ij,jsb->sb", v, corr, v)
    np.testing.assert_allclose(jac.stdev, np.sqrt(var), rtol=1e-5, atol=1e-8)


def test_container_and_tables(all_mods):
    _, model, fit = all_mods
    post = nextstat.prediction(model, fit)
    np.testing.assert_allclose(post.total, post.yields.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(post.channel_total, post.channel_yields.sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(post.data, model.main_data)
    np.testing.assert_array_equal(post.parameters, fit.bestfit)
    cr = post.channel("CR")
    assert cr.yields.shape == (len(model.samples), model.channel_nbins["CR"])
    np.testing.assert_array_equal(cr.yields[list(model.samples).index("signal")], 0.0)  # no signal in CR
    with pytest.raises(KeyError, match="no channel named 'XX'"):
        post.channel("XX")

    df = post.to_dataframe()
    assert list(df.columns) == ["channel", "bin", "sample", "yield", "stdev", "data"]
    assert len(df) == model.n_bins * (len(model.samples) + 1)
    row = df[(df.channel == "SR") & (df.bin == 1) & (df["sample"] == "total")].iloc[0]
    b = model.channel_slices["SR"].start + 1
    assert row["yield"] == post.total[b] and row["stdev"] == post.total_stdev[b] and row["data"] == post.data[b]
    dc = post.to_dataframe("channel")
    assert len(dc) == len(model.channels) * (len(model.samples) + 1)
    with pytest.raises(ValueError, match="level"):
        post.to_dataframe("sample")

    md = post.to_markdown()
    assert "| sample | bin 0 | bin 1 |" in md and "post-fit yields per channel" in md
    tex = post.to_latex(bins=False)
    assert tex.count("\\begin{tabular}") == 1 and "\\pm" in tex and "\\toprule" in tex
    text = str(post)
    assert "total" in text and "data" in text
    # one PDG-rounded cell, checked by hand: SR total of the channel
    v, e = post.channel("SR").sum, post.channel("SR").sum_stdev
    from nextstat._html import pdg_round

    assert f"{pdg_round(v, e)[0]} ± {pdg_round(v, e)[1]}" in text
    assert "<table" in post._repr_html_()
    with pytest.raises(ValueError, match="fmt"):
        post.table("html")
    assert json.loads(json.dumps(post.to_dict()))["label"] == "post-fit"


def test_refusals(all_mods):
    _, model, fit = all_mods
    with pytest.raises(ValueError, match="method"):
        nextstat.prediction(model, method="numeric")
    with pytest.raises(ValueError, match="hesse=True"):
        nextstat.prediction(model, nextstat.fit(model, hesse=False))
    other = nextstat.from_pyhf(EXAMPLE)
    with pytest.raises(ValueError, match="parameter names differ"):
        nextstat.prediction(other, fit)
    with pytest.raises(TypeError, match="fit_result"):
        nextstat.prediction(model, {"bestfit": fit.bestfit})


def test_unconverged_fit_is_flagged(all_mods):
    _, model, fit = all_mods
    bad = nextstat.fit(model, maxiter=1)
    assert not bad.converged
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        pred = nextstat.prediction(model, bad)
    assert pred.converged is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nextstat.prediction(model, fit).converged
