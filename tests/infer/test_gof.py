"""nextstat.goodness_of_fit against cabinetry 0.6.0's saturated-model goodness of fit."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from conftest import EXAMPLE, all_modifiers_workspace, needs_workspaces, pyhf_model_and_data
from scipy.stats import chi2

import nextstat
from nextstat import testing
from nextstat.errors import ConvergenceWarning
from nextstat.infer.gof import degrees_of_freedom, saturated_deviance


def cabinetry_gof_formula(ws: dict, nll: float) -> float:
    """cabinetry's definition evaluated at NextStat's best-fit NLL (same minimum, same formula)."""
    import cabinetry
    import pyhf

    pyhf.set_backend("numpy")
    pm, data = pyhf_model_and_data(ws)
    return float(cabinetry.fit._goodness_of_fit(pm, data.tolist(), 2.0 * nll))


def cabinetry_gof_fit(ws: dict) -> float:
    """cabinetry end to end: its own (Minuit) fit, then its goodness of fit."""
    import cabinetry
    import pyhf

    pyhf.set_backend("numpy")
    pm, data = pyhf_model_and_data(ws)
    return float(cabinetry.fit.fit(pm, data.tolist(), goodness_of_fit=True, tolerance=1e-4).goodness_of_fit)


@pytest.mark.parametrize("which", ["example", "all_modifiers"])
def test_equals_cabinetry(which):
    ws = all_modifiers_workspace() if which == "all_modifiers" else __import__("json").loads(EXAMPLE.read_text())
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    p = nextstat.goodness_of_fit(model, fit)
    assert 0.0 < p < 1.0
    assert p == pytest.approx(cabinetry_gof_formula(ws, fit.nll), rel=1e-8)
    assert p == pytest.approx(cabinetry_gof_fit(ws), rel=1e-5)
    assert nextstat.goodness_of_fit(model) == pytest.approx(p, rel=1e-10)


@needs_workspaces
def test_sbottom_equals_cabinetry():
    """Published likelihood with shapesys-free but histosys-heavy constraints; cabinetry's
    constant terms include gammaln of the auxiliary data, ours cancel them term by term."""
    import jsonpatch

    ws = jsonpatch.apply_patch(testing.sbottom("RegionA"),
                               testing.sbottom_patch("RegionA", "patch.sbottom_1300_205_60.json"))
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    assert nextstat.goodness_of_fit(model, fit) == pytest.approx(cabinetry_gof_formula(ws, fit.nll), rel=1e-7)


@needs_workspaces
def test_tttt_equals_cabinetry():
    """249 parameters with shapesys (Poisson constraints) and 6 normfactors: dof = 31 - 6."""
    ws = testing.tttt()
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    assert degrees_of_freedom(model) == 31 - 6
    assert nextstat.goodness_of_fit(model, fit) == pytest.approx(cabinetry_gof_formula(ws, fit.nll), rel=1e-8)


def test_definition_by_hand():
    """dof = bins - free unconstrained parameters; p = chi2.sf(2 (NLL - NLL_saturated), dof),
    the saturated NLL written out for the example (Poisson terms at n and at the shapesys
    auxiliary data, Gaussians at their centres)."""
    model = nextstat.from_pyhf(EXAMPLE)
    fit = nextstat.fit(model)
    free_unconstrained = [n for n, c, f in zip(model.parameter_names, model.constrained, model.fixed_params)
                          if not c and not f]
    assert degrees_of_freedom(model) == model.n_bins - len(free_unconstrained)
    n = model.main_data
    sat_main = -np.sum(n * np.log(np.where(n > 0, n, 1.0)) - n - np.array([math.lgamma(x + 1) for x in n]))
    _, kind, sigma, _ = model.aux_arrays
    a = model.aux_data
    gauss = kind == 0
    assert gauss.any() and (~gauss).any()  # both kinds of constraint (staterror, shapesys)
    sat_aux = np.sum(np.log(sigma[gauss] * math.sqrt(2 * math.pi)))
    sat_aux -= sum(x * math.log(x) - x - math.lgamma(x + 1) for x in a[~gauss])  # Poisson(a | a)
    deviance = 2.0 * (fit.nll - (sat_main + sat_aux))
    assert saturated_deviance(model, fit.bestfit) == pytest.approx(deviance, rel=1e-9)
    dof = degrees_of_freedom(model)
    assert nextstat.goodness_of_fit(model, fit) == pytest.approx(chi2.sf(deviance, dof), rel=1e-8)
    # fixing a normfactor in the fit adds a degree of freedom
    fixed = model.fixed_params.copy()
    fixed[model.parameter_names.index(free_unconstrained[0])] = True
    refit = nextstat.fit(model, fixed_params=fixed)
    assert degrees_of_freedom(model, refit.fixed) == dof + 1
    assert nextstat.goodness_of_fit(model, refit) == pytest.approx(
        chi2.sf(saturated_deviance(model, refit.bestfit), dof + 1), rel=1e-10)


def test_refusals():
    ws = copy.deepcopy(__import__("json").loads(EXAMPLE.read_text()))
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model)
    with pytest.raises(ValueError, match="differs from the NLL"):
        nextstat.goodness_of_fit(model, fit, data=model.main_data + 1.0)
    other = nextstat.from_pyhf(all_modifiers_workspace())
    with pytest.raises(ValueError, match="parameter names differ"):
        nextstat.goodness_of_fit(other, fit)
    # a shapefactor in every bin: as many free parameters as bins, no degree of freedom left
    for ch in ws["channels"]:
        ch["samples"][0]["modifiers"].append({"name": f"sf_{ch['name']}", "type": "shapefactor", "data": None})
    saturated = nextstat.from_pyhf(ws)
    with pytest.raises(ValueError, match="degrees of freedom"):
        nextstat.goodness_of_fit(saturated)


def test_unconverged_fit_warns():
    model = nextstat.from_pyhf(all_modifiers_workspace())
    bad = nextstat.fit(model, maxiter=1)
    with pytest.warns(ConvergenceWarning, match="goodness_of_fit"):
        p = nextstat.goodness_of_fit(model, bad)
    assert 0.0 <= p <= 1.0
