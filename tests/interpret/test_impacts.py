"""Fast impacts: the Hesse ranking (``rank_impact(method="hesse")``) and grouped impacts.

cabinetry 0.6.0 has neither (its ``fit.ranking`` refits; no uncertainty breakdown), so both are
checked against exact maths: the covariance of the nominal fit (Hesse ranking, Schur
complements), a closed-form Hessian on Asimov data where the likelihood's curvature is known
analytically, and a finite-difference Hessian; and the Hesse ranking against the refit ranking
on a nearly linear model.
"""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

import nextstat
from conftest import all_modifiers_workspace
from nextstat.interpret import (
    COLUMNS,
    GroupedImpactResult,
    RankingResult,
    draw_grouped_impacts,
    grouped_impacts,
    modifier_groups,
    plot_grouped_impacts,
    rank_impact,
    rank_impact_df,
)


def linear_workspace() -> dict:
    """High counts, small symmetric systematics: a nearly quadratic likelihood."""
    sig, bkg, cr = [12.0, 20.0, 8.0], [100.0, 80.0, 60.0], [400.0, 300.0]

    def var(h: list[float], up: float) -> dict:
        return {"hi_data": [x * (1 + up) for x in h], "lo_data": [x * (1 - up) for x in h]}

    return {
        "channels": [
            {"name": "SR", "samples": [
                {"name": "signal", "data": sig, "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "sig_theory", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}}]},
                {"name": "bkg", "data": bkg, "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "jes", "type": "histosys", "data": var(bkg, 0.04)},
                    {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.06, "lo": 0.94}},
                    {"name": "staterror_SR", "type": "staterror", "data": [3.0, 2.5, 2.0]}]}]},
            {"name": "CR", "samples": [
                {"name": "bkg", "data": cr, "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "jes", "type": "histosys", "data": var(cr, 0.03)},
                    {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.06, "lo": 0.94}}]}]}],
        "observations": [{"name": "SR", "data": [115.0, 103.0, 66.0]}, {"name": "CR", "data": [410.0, 296.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.8, 1.2]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


@pytest.fixture(scope="module")
def small():
    model = nextstat.from_pyhf(all_modifiers_workspace())
    nominal = nextstat.fit(model)
    assert nominal.converged
    return model, nominal


@pytest.fixture(scope="module")
def linear():
    model = nextstat.from_pyhf(linear_workspace())
    nominal = nextstat.fit(model)
    assert nominal.converged
    return model, nominal


# --- Hesse ranking -------------------------------------------------------------------------------


def test_hesse_ranking_is_the_covariance_regression(small) -> None:
    model, nominal = small
    hesse = rank_impact(model, fit_result=nominal, method="hesse", sort_by="name", include_unconstrained=True)
    refit = rank_impact(model, fit_result=nominal, sort_by="name", include_unconstrained=True)
    assert isinstance(hesse, RankingResult) and hesse.method == "hesse" and refit.method == "refit"
    assert [r["name"] for r in hesse] == [r["name"] for r in refit]
    C, poi, prior = nominal.covariance, model.poi_index, model.prior_widths()
    for row, ref in zip(hesse, refit):
        assert list(row) == list(COLUMNS)
        i = model.parameter_names.index(row["name"])
        slope = C[poi, i] / C[i, i]
        assert row["delta_mu_up"] == pytest.approx(C[poi, i] / np.sqrt(C[i, i]), rel=1e-12, abs=1e-15)
        assert row["delta_mu_down"] == pytest.approx(-row["delta_mu_up"], rel=1e-12, abs=1e-15)
        assert row["total_impact"] == pytest.approx(2 * abs(C[poi, i]) / np.sqrt(C[i, i]), rel=1e-12, abs=1e-15)
        if row["constrained"]:
            assert row["prefit_delta_mu_up"] == pytest.approx(slope * prior[i], rel=1e-12, abs=1e-15)
            assert row["prefit_delta_mu_down"] == pytest.approx(-slope * prior[i], rel=1e-12, abs=1e-15)
        else:
            assert row["prefit_delta_mu_up"] is None and row["prefit_delta_mu_down"] is None
        # everything but the impacts is the refit's row
        for key in ("pull", "constraint", "bestfit", "error", "prior_width", "theta0", "constrained", "clipped"):
            assert row[key] == ref[key], key
        assert row["converged"]


def test_hesse_ranking_clips_like_the_refits(small) -> None:
    model, _ = small
    bounds = model.suggested_bounds()
    i = model.parameter_names.index("res")
    bounds[i] = (-0.3, 5.0)
    nominal = nextstat.fit(model, par_bounds=bounds)
    row = next(r for r in rank_impact(model, par_bounds=bounds, fit_result=nominal, method="hesse")
               if r["name"] == "res")
    assert row["clipped"] and "prefit_down" in row["clipped_shifts"]
    C, poi = nominal.covariance, model.poi_index
    assert row["prefit_delta_mu_down"] == pytest.approx(C[poi, i] / C[i, i] * (-0.3 - nominal.bestfit[i]), rel=1e-12)


def test_hesse_ranking_is_close_to_the_refits_on_a_linear_model(linear) -> None:
    model, nominal = linear
    hesse = {r["name"]: r for r in rank_impact(model, fit_result=nominal, method="hesse")}
    refit = rank_impact(model, fit_result=nominal)
    assert len(refit) == len(hesse) == 7
    sigma_mu = nominal.mu_error
    for r in refit:
        h = hesse[r["name"]]
        # the linear approximation is the mean of the (slightly asymmetric) refit shifts
        assert h["total_impact"] == pytest.approx(r["total_impact"], rel=0.01), r["name"]
        for key in ("delta_mu_up", "delta_mu_down", "prefit_delta_mu_up", "prefit_delta_mu_down"):
            assert abs(h[key] - r[key]) < 0.02 * sigma_mu, (r["name"], key)
    # and the ranking order is the same
    assert [r["name"] for r in rank_impact(model, fit_result=nominal, method="hesse")] == [r["name"] for r in refit]


def test_hesse_ranking_arguments(small) -> None:
    model, nominal = small
    with pytest.raises(ValueError, match="method"):
        rank_impact(model, fit_result=nominal, method="approx")
    with pytest.raises(ValueError, match="fit_result: has no covariance"):
        rank_impact(model, fit_result=nextstat.fit(model, hesse=False), method="hesse")
    df = rank_impact_df(model, fit_result=nominal, method="hesse", top_n=3)
    assert list(df.columns) == list(COLUMNS) and list(df["rank"]) == [1, 2, 3]


# --- grouped impacts: exact maths ------------------------------------------------------------


def asimov_workspace() -> dict:
    """Two bins; the background's histosys is symmetric (linear in alpha for |alpha| <= 1) and
    lumi and staterror are linear: on the Asimov data of the nominal point the Hessian of the
    NLL is exactly J^T diag(1/nu) J + diag(1/sigma^2)."""
    return {
        "channels": [{"name": "c", "samples": [
            {"name": "s", "data": [10.0, 20.0], "modifiers": [
                {"name": "mu", "type": "normfactor", "data": None},
                {"name": "lumi", "type": "lumi", "data": None}]},
            {"name": "b", "data": [100.0, 50.0], "modifiers": [
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "h", "type": "histosys", "data": {"hi_data": [105.0, 52.5], "lo_data": [95.0, 47.5]}},
                {"name": "staterror_c", "type": "staterror", "data": [5.0, 4.0]}]}]}],
        "observations": [{"name": "c", "data": [110.0, 70.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.5, 1.5]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


def test_grouped_impacts_closed_form_on_asimov_data() -> None:
    model = nextstat.from_pyhf(asimov_workspace())
    assert model.parameter_names == ["h", "lumi", "mu", "staterror_c[0]", "staterror_c[1]"]
    s, b = np.array([10.0, 20.0]), np.array([100.0, 50.0])
    nu = s + b
    # d nu / d (h, lumi, mu, gamma_0, gamma_1) at h = 0, lumi = mu = gamma = 1
    J = np.stack([0.05 * b, s + b, s, [b[0], 0.0], [0.0, b[1]]], axis=1)
    sigma = np.array([1.0, 0.02, np.inf, 5.0 / 100.0, 4.0 / 50.0])
    H = J.T @ (J / nu[:, None]) + np.diag(1.0 / sigma**2)
    poi = 2

    def sigma_mu(free: list[int]) -> float:
        return float(np.sqrt(np.linalg.inv(H[np.ix_(free, free)])[free.index(poi), free.index(poi)]))

    asimov = model.expected_data([0.0, 1.0, 1.0, 1.0, 1.0])
    res = grouped_impacts(model, data=asimov)
    assert isinstance(res, GroupedImpactResult) and res.posdef and res.converged
    assert res.mu_hat == pytest.approx(1.0, abs=1e-8)
    total = sigma_mu([0, 1, 2, 3, 4])
    assert res.total == pytest.approx(total, rel=1e-7)
    assert res.stat == pytest.approx(1.0 / np.sqrt(H[poi, poi]), rel=1e-7)
    assert res.syst == pytest.approx(np.sqrt(total**2 - 1.0 / H[poi, poi]), rel=1e-6)
    expected = {"histosys": [1, 2, 3, 4], "lumi": [0, 2, 3, 4], "staterror": [0, 1, 2]}
    assert set(res.groups) == set(expected)
    for group, free in expected.items():
        assert res.impact(group) == pytest.approx(np.sqrt(total**2 - sigma_mu(free) ** 2), rel=1e-6), group
    assert list(res.impacts) == sorted(res.impacts, reverse=True)
    assert res.members[res.groups.index("staterror")] == ("staterror_c[0]", "staterror_c[1]")
    # a user grouping: parameter-set names expand, groups may overlap
    user = grouped_impacts(model, {"bkg": ["h", "staterror_c"], "lumi only": ["lumi"]}, data=asimov)
    assert user.impact("bkg") == pytest.approx(np.sqrt(total**2 - sigma_mu([1, 2]) ** 2), rel=1e-6)
    assert user.impact("lumi only") == pytest.approx(res.impact("lumi"), rel=1e-12)


def test_grouped_impacts_are_schur_complements(small) -> None:
    model, nominal = small
    res = grouped_impacts(model, fit_result=nominal)
    C, poi, names = nominal.covariance, model.poi_index, model.parameter_names
    groups = modifier_groups(model)
    assert set(res.groups) == set(groups) == {"normsys", "histosys", "histosys+normsys", "lumi", "staterror",
                                              "shapesys", "normfactor", "shapefactor"}
    assert groups["histosys+normsys"] == ["jes"] and groups["normfactor"] == ["bkg1_norm"]
    for group, members in groups.items():
        G = [names.index(n) for n in members]
        # variance of mu given theta_G (Gaussian conditioning on the covariance)
        cond = C[poi, poi] - C[poi, G] @ np.linalg.solve(C[np.ix_(G, G)], C[G, poi])
        k = res.groups.index(group)
        assert res.sigma_without[k] == pytest.approx(np.sqrt(cond), rel=1e-8), group
        assert res.impacts[k] == pytest.approx(np.sqrt(C[poi, poi] - cond), rel=1e-6, abs=1e-9), group
    assert res.total == pytest.approx(np.sqrt(C[poi, poi]), rel=1e-12)
    free = [i for i in range(model.n_params) if not nominal.fixed[i] and i != poi]
    stat2 = C[poi, poi] - C[poi, free] @ np.linalg.solve(C[np.ix_(free, free)], C[free, poi])
    assert res.stat == pytest.approx(np.sqrt(stat2), rel=1e-7)


def test_grouped_impacts_match_a_finite_difference_hessian(linear) -> None:
    """Independent of the analytic Hessian: central differences of the analytic gradient."""
    model, nominal = linear
    res = grouped_impacts(model, fit_result=nominal)
    theta, P, poi, names = nominal.bestfit, model.n_params, model.poi_index, model.parameter_names
    h = 1e-5
    H = np.array([(model.grad_nll(theta + h * e) - model.grad_nll(theta - h * e)) / (2 * h) for e in np.eye(P)])
    H = 0.5 * (H + H.T)
    for group, members in zip(res.groups, res.members):
        free = [i for i in range(P) if names[i] not in members]
        s = np.sqrt(np.linalg.inv(H[np.ix_(free, free)])[free.index(poi), free.index(poi)])
        assert res.sigma_without[res.groups.index(group)] == pytest.approx(s, rel=1e-5), group


# --- grouped impacts: interface ----------------------------------------------------------------


def test_grouped_impacts_table_and_refusals(linear) -> None:
    model, nominal = linear
    res = grouped_impacts(model, fit_result=nominal)
    df = res.to_dataframe()
    assert list(df.columns) == ["group", "impact", "fraction", "n_parameters"]
    assert list(df["group"]) == [*res.groups, "stat", "syst", "total"]
    assert df["fraction"].iloc[-1] == 1.0
    assert df["impact"].iloc[-1] == res.total and df["impact"].iloc[-3] == res.stat
    md = res.to_markdown().splitlines()
    assert md[0].startswith("| group | impact on mu") and len(md) == 2 + len(df)
    assert md[2].startswith(f"| {res.groups[0]} |")
    assert "stat" in str(res) and res.to_dict()["syst"] == pytest.approx(res.syst)
    with pytest.raises(KeyError, match="no group named 'nope'"):
        res.impact("nope")
    for groups, match in [({"g": ["nope"]}, r"groups\['g'\]: the model has no parameter named 'nope'"),
                          ({"g": ["mu"]}, "holds the POI"),
                          ({"stat": ["jes"]}, "cannot name a group"),
                          ({"g": "jes"}, "non-empty list"),
                          ({}, "non-empty mapping")]:
        with pytest.raises(ValueError, match=match):
            grouped_impacts(model, groups, fit_result=nominal)
    with pytest.raises(ValueError, match="fit_result: has no covariance"):
        grouped_impacts(model, fit_result=nextstat.fit(model, hesse=False))


def _pixels(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    buf.seek(0)
    return matplotlib.image.imread(buf, format="png")


def test_grouped_impacts_plot(linear) -> None:
    model, nominal = linear
    res = grouped_impacts(model, fit_result=nominal)
    fig = plot_grouped_impacts(res)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [*res.groups, "stat", "total"]
    assert "mu" in ax.get_xlabel()
    widths = sorted(p.get_width() for p in ax.patches)
    np.testing.assert_allclose(widths, sorted([*res.impacts, res.stat, res.total]))
    assert len(np.unique(_pixels(fig).reshape(-1, 4), axis=0)) > 10
    own = Figure()
    assert plot_grouped_impacts(res, top_n=2, ax=own.subplots()) is own
    assert len(own.axes[0].get_yticklabels()) == 4
    with pytest.raises(ValueError, match="impacts"):
        draw_grouped_impacts(["a"], [-1.0])
    with pytest.raises(TypeError, match="GroupedImpactResult"):
        plot_grouped_impacts(rank_impact(model, fit_result=nominal, method="hesse"))
