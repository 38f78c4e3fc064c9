"""nextstat.minos against iminuit's MINOS (run through cabinetry 0.6.0), and its own contract.

cabinetry fits with Minuit's EDM < 2e-3 * tolerance; with its default tolerance (0.1) Minuit's
minimum is off by up to 3e-3 in a nuisance parameter, which shifts both MINOS errors by that
(the interval ends agree), so the oracle runs with ``tolerance=1e-4``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import EXAMPLE, all_modifiers_workspace, pyhf_model_and_data

import nextstat
from nextstat.errors import ConvergenceWarning
from nextstat.infer.minos import MinosInterval

ATOL = 2e-3


def cabinetry_minos(ws: dict, names: list[str]):
    import cabinetry
    import pyhf

    pyhf.set_backend("numpy")
    pm, data = pyhf_model_and_data(ws)
    return cabinetry.fit.fit(pm, data, minos=names, tolerance=1e-4)


ALL_MODS_NAMES = ["mu", "jes", "bkg1_norm", "bkg2_xsec", "cr_shape[0]", "bkg2_shape[1]", "staterror_SR[0]"]


@pytest.fixture(scope="module")
def all_mods():
    ws = all_modifiers_workspace()
    return ws, nextstat.from_pyhf(ws), cabinetry_minos(ws, ALL_MODS_NAMES)


def test_all_modifiers_equal_iminuit(all_mods):
    _, model, oracle = all_mods
    result = nextstat.minos(model, ALL_MODS_NAMES)
    assert result.converged
    assert [iv.name for iv in result.intervals] == ALL_MODS_NAMES
    for name in ALL_MODS_NAMES:
        np.testing.assert_allclose(result.errors[name], oracle.minos_uncertainty[name], atol=ATOL, rtol=0)
        iv = result[name]
        assert iv.minus < 0 < iv.plus and not (iv.lower_at_bound or iv.upper_at_bound)
        assert iv.value == pytest.approx(result.fit_result.value(name), abs=1e-12)
    # asymmetric where the likelihood is: the POI's interval is not Hesse's symmetric one
    minus, plus = result.errors["mu"]
    assert abs(plus + minus) > 0.05


def test_ends_are_on_the_profile_crossing(all_mods):
    """Exact maths: the conditional fit at each end sits 1 above the minimum in 2 NLL."""
    _, model, _ = all_mods
    result = nextstat.minos(model, ["mu", "jes"])
    nll_min = result.fit_result.nll
    for iv in result.intervals:
        i = model.parameter_names.index(iv.name)
        for x in (iv.lower, iv.upper):
            init = result.fit_result.bestfit.copy()
            init[i] = x
            fixed = model.fixed_params.copy()
            fixed[i] = True
            cond = nextstat.fit(model, init_pars=init, fixed_params=fixed, hesse=False)
            assert 2 * (cond.nll - nll_min) == pytest.approx(1.0, abs=1e-6)


def bounded_workspace() -> dict:
    """A signal strength fitted near its lower bound 0: the lower MINOS end is cut there."""
    return {
        "channels": [{"name": "c", "samples": [
            {"name": "s", "data": [5.0, 8.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "b", "data": [50.0, 60.0], "modifiers": [
                {"name": "u", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}}]}]}],
        "observations": [{"name": "c", "data": [51.0, 61.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def test_bound_equals_iminuit():
    ws = bounded_workspace()
    oracle = cabinetry_minos(ws, ["mu", "u"])
    model = nextstat.from_pyhf(ws)
    result = nextstat.minos(model, ["mu", "u"])
    for name in ("mu", "u"):
        np.testing.assert_allclose(result.errors[name], oracle.minos_uncertainty[name], atol=ATOL, rtol=0)
    mu = result["mu"]
    assert mu.lower_at_bound and not mu.upper_at_bound and mu.lower == 0.0  # the bound itself
    assert mu.converged and result.converged
    assert "lower at bound" in str(result)


def test_parameter_on_its_bound_and_flat_direction():
    """A best fit on the bound (no excess at all) has minus = 0 there; a parameter the data do
    not constrain within its range reaches both bounds, flagged, in a bounded number of fits."""
    ws = bounded_workspace()
    ws["observations"][0]["data"] = [40.0, 48.0]
    ws["channels"][0]["samples"][0]["modifiers"].append({"name": "k", "type": "normfactor", "data": None})
    ws["measurements"][0]["config"]["parameters"] = [{"name": "k", "bounds": [[0.5, 1.5]]}]
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    result = nextstat.minos(model, ["mu", "k"], fit_result=fit)
    mu, k = result["mu"], result["k"]
    assert fit.bestfit[model.poi_index] == 0.0 and mu.minus == 0.0 and mu.lower_at_bound
    assert k.lower_at_bound and k.upper_at_bound  # mu = 0: k changes nothing
    assert (k.lower, k.upper) == (0.5, 1.5) and k.n_fits < 20


def test_fit_result_without_hesse_and_defaults():
    model = nextstat.from_pyhf(EXAMPLE)
    default = nextstat.minos(model)
    assert [iv.name for iv in default.intervals] == [model.poi_name]
    no_hesse = nextstat.minos(model, fit_result=nextstat.fit(model, hesse=False))
    np.testing.assert_allclose(no_hesse.errors[model.poi_name], default.errors[model.poi_name], atol=1e-6)
    d = default.to_dict()
    assert set(d) == {"errors", "intervals", "converged", "fit"}
    assert isinstance(default.intervals[0], MinosInterval)
    with pytest.raises(TypeError):
        default.errors["x"] = (0, 0)  # read-only
    assert "<table" in default._repr_html_()
    df = default.to_dataframe()
    assert list(df.index) == [model.poi_name] and df.index.name == "parameter"
    assert list(df.columns) == ["value", "minus", "plus", "lower_at_bound", "upper_at_bound", "lower_converged",
                                "upper_converged", "n_fits", "lower", "upper"]
    iv = default.intervals[0]
    assert (df.loc[model.poi_name, "minus"], df.loc[model.poi_name, "plus"]) == default.errors[model.poi_name]
    assert df.loc[model.poi_name, "lower"] == iv.value + iv.minus and df.loc[model.poi_name, "upper"] == iv.upper


def test_refusals():
    model = nextstat.from_pyhf(EXAMPLE)
    with pytest.raises(ValueError, match="'nope' is not a parameter"):
        nextstat.minos(model, ["nope"])
    with pytest.raises(ValueError, match="distinct"):
        nextstat.minos(model, ["mu", "mu"])
    ws = copy.deepcopy(bounded_workspace())
    ws["measurements"][0]["config"]["parameters"] = [{"name": "u", "fixed": True}]
    fixed_model = nextstat.from_pyhf(ws)
    with pytest.raises(ValueError, match="'u' is fixed"):
        nextstat.minos(fixed_model, ["u"])
    other = nextstat.from_pyhf(bounded_workspace())
    with pytest.raises(ValueError, match="parameter names differ"):
        nextstat.minos(model, fit_result=nextstat.fit(other))
    no_poi = nextstat.from_pyhf(EXAMPLE, poi_name=None)
    with pytest.raises(ValueError, match="no POI"):
        nextstat.minos(no_poi)
    assert nextstat.minos(no_poi, ["mu"]).converged


def test_better_minimum_found_on_the_way_is_refitted():
    """A free fit stopped early (1 iteration): conditional fits below it trigger a refit from
    there, and the intervals are measured from the refitted minimum."""
    model = nextstat.from_pyhf(all_modifiers_workspace())
    bad = nextstat.fit(model, maxiter=1)
    assert not bad.converged
    result = nextstat.minos(model, ["mu"], fit_result=bad)
    good = nextstat.minos(model, ["mu"])
    assert result.converged and result.fit_result.converged
    np.testing.assert_allclose(result.errors["mu"], good.errors["mu"], atol=1e-6)


def test_failed_conditional_fits_are_flagged(monkeypatch):
    from nextstat.engine import numba_core as core
    from nextstat.infer import minos as minos_mod

    real = minos_mod._Profile._fit

    def failing(self, start, x):
        return real(self, start, x)._replace(status=core.FIT_MAXITER)

    monkeypatch.setattr(minos_mod._Profile, "_fit", failing)
    model = nextstat.from_pyhf(EXAMPLE)
    with pytest.warns(ConvergenceWarning, match="1 intervals did not converge"):
        result = nextstat.minos(model)
    assert not result.converged and not result.intervals[0].lower_converged
    assert np.all(np.isfinite(result.errors[model.poi_name]))
