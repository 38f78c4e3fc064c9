"""Models without a parameter of interest (``from_pyhf(ws, poi_name=None)``, pyhf's keyword).

Fits, predictions and the plots of a fit work and agree with pyhf's POI-less model
(``Workspace.model(poi_name=None)``); everything built on a POI (hypothesis tests, limits, scans,
tests with toys, rankings, Asimov data at mu, the brazil and profile plots) refuses with a
ValueError saying that it needs one.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from matplotlib.figure import Figure

import nextstat
from nextstat import examples, testing
from nextstat.errors import WorkspaceError

from conftest import needs_workspaces

pyhf = pytest.importorskip("pyhf")


@pytest.fixture(scope="module")
def bare() -> nextstat.Model:
    return nextstat.from_pyhf(examples.simple_workspace(), poi_name=None)


def pyhf_fit(ws: dict, **kwargs) -> tuple[np.ndarray, float]:
    pyhf.set_backend("numpy")
    pws = pyhf.Workspace(ws)
    pm = pws.model(**kwargs)
    pars, twice_nll = pyhf.infer.mle.fit(pws.data(pm), pm, return_fitted_val=True)
    return np.asarray(pars), float(twice_nll)


def test_poi_less_model_matches_pyhf(bare):
    pm = pyhf.Workspace(examples.simple_workspace()).model(poi_name=None)
    assert bare.poi_name is None and bare.poi_index is None and pm.config.poi_index is None
    assert bare.parameter_names == pm.config.par_names
    assert "poi=None" in repr(bare)
    result = nextstat.fit(bare)
    assert result.converged and result.poi_index is None and result.mu is None and result.mu_error is None
    assert result.to_dict()["mu"] is None
    pars, twice_nll = pyhf_fit(examples.simple_workspace(), poi_name=None)
    assert result.twice_nll == pytest.approx(twice_nll, rel=1e-7)
    assert result.twice_nll <= twice_nll + 1e-9  # our minimum is at least as deep
    np.testing.assert_allclose(result.bestfit, pars, atol=2e-3)


def test_poi_choice_like_pyhf():
    ws = examples.simple_workspace()
    m = nextstat.from_pyhf(ws, poi_name="ttbar_norm")
    pm = pyhf.Workspace(ws).model(poi_name="ttbar_norm")
    assert (m.poi_name, m.poi_index) == (pm.config.poi_name, pm.config.poi_index)
    with pytest.raises(ValueError, match="^poi_name: POI 'nope' is not a parameter of the model"):
        nextstat.from_pyhf(ws, poi_name="nope")
    with pytest.raises(ValueError, match="^poi_name: POI 'staterror_SR' has 4 components"):
        nextstat.from_pyhf(ws, poi_name="staterror_SR")
    with pytest.raises(TypeError, match="^poi_name: expected a parameter name"):
        nextstat.from_pyhf(ws, poi_name=1)


def test_measurement_without_poi_field():
    ws = examples.simple_workspace()
    del ws["measurements"][0]["config"]["poi"]
    with pytest.raises(WorkspaceError, match=r"^measurements\[0\]\.config\.poi: required field is missing.*poi_name=None"):
        nextstat.from_pyhf(ws)
    assert nextstat.from_pyhf(ws, poi_name=None).poi_index is None
    assert nextstat.from_pyhf(ws, poi_name="mu").poi_name == "mu"


@needs_workspaces
def test_background_only_sbottom_like_pyhf():
    ws = testing.sbottom("RegionA")
    with pytest.raises(pyhf.exceptions.InvalidModel):
        pyhf.Workspace(ws).model()
    with pytest.raises(WorkspaceError, match=r"^measurements\[0\]\.config\.poi: POI 'mu_SIG' is not a parameter"
                                             r".*poi_name=None"):
        nextstat.from_pyhf(ws)
    m = nextstat.from_pyhf(ws, poi_name=None)
    result = nextstat.fit(m)
    pars, twice_nll = pyhf_fit(ws, poi_name=None)
    assert result.converged
    assert result.twice_nll == pytest.approx(twice_nll, rel=1e-6)
    assert result.twice_nll <= twice_nll + 1e-7
    pm = pyhf.Workspace(ws).model(poi_name=None)
    assert m.nll(pars) == pytest.approx(-float(pm.logpdf(pars, pyhf.Workspace(ws).data(pm))[0]), rel=1e-12)


def _refusals(model: nextstat.Model) -> dict:
    from nextstat.infer.toys import hypotest_toys
    from nextstat.interpret import rank_impact
    from nextstat.plots import plot_from_model

    return {
        "hypotest": lambda: nextstat.hypotest(model, 1.0),
        "discovery": lambda: nextstat.hypotest(model, 0.0),
        "upper_limit": lambda: nextstat.upper_limit(model),
        "profile_scan": lambda: nextstat.profile_scan(model, [0.5, 1.0]),
        "fixed_poi_fit": lambda: nextstat.fixed_poi_fit(model, 1.0),
        "hypotest_toys": lambda: hypotest_toys(model, 1.0, n_toys=5, progress=False),
        "rank_impact": lambda: rank_impact(model, progress=False),
        "asimov_data": lambda: nextstat.asimov_data(model, 1.0),
        "plot_brazil": lambda: plot_from_model("brazil", model),
        "plot_profile": lambda: plot_from_model("profile", model),
    }


@pytest.mark.parametrize("name", sorted(_refusals(nextstat.from_pyhf(examples.simple_workspace(), poi_name=None))))
def test_poi_operations_refuse(bare, name):
    with pytest.raises(ValueError, match="POI"):
        _refusals(bare)[name]()


def test_what_works_without_poi(bare):
    from nextstat.infer.toys import fit_toys
    from nextstat.plots import plot_from_model

    for kind in ("pulls", "corr", "yields"):
        assert isinstance(plot_from_model(kind, bare), Figure)
    import matplotlib.pyplot as plt

    plt.close("all")
    pars = nextstat.fit(bare).bestfit
    toys = fit_toys(bare, pars, n_toys=4, seed=3, progress=False)
    assert toys.n_toys == 4 and np.all(np.isfinite(toys.nll))
    np.testing.assert_allclose(nextstat.asimov_data(bare, pars=pars), bare.expected_data(pars))
    pred = nextstat.prediction(bare)
    assert np.all(np.isfinite(pred.total))


def test_poi_less_model_from_pyhf_model():
    ws = copy.deepcopy(examples.simple_workspace())
    pws = pyhf.Workspace(ws)
    pm = pws.model(poi_name=None)
    m = nextstat.from_pyhf(pm, data=pws.data(pm))
    assert m.poi_index is None
    m2 = nextstat.from_pyhf(pm, data=pws.data(pm), poi_name="mu")  # an explicit POI wins
    assert m2.poi_name == "mu"


# --------------------------------------------------------------------------- CLI: --poi NAME|none

def _cli(args: list, tmp_path) -> object:
    from click.testing import CliRunner

    from nextstat import cli

    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def bkg_only_file(tmp_path):
    """The example without its signal sample: the measurement's POI ``mu`` is not a parameter."""
    from nextstat import workspace as wsmod

    path = tmp_path / "bkg_only.json"
    path.write_text(json.dumps(wsmod.prune(examples.simple_workspace(), samples=["signal"])))
    return path


def test_cli_fits_background_only_workspaces(bkg_only_file, tmp_path):
    result = _cli(["fit", bkg_only_file, "--json"], tmp_path)  # the measurement's POI is missing: none, warned
    assert result.exit_code == 0, result.output
    assert "building the model without a POI" in result.stderr and "--poi none" in result.stderr
    out = json.loads(result.stdout)
    assert out["poi_index"] is None and out["mu"] is None and out["converged"]
    quiet = _cli(["fit", bkg_only_file, "--json", "--poi", "none"], tmp_path)
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["nll"] == out["nll"]
    ws = json.loads(bkg_only_file.read_text())
    pars, twice_nll = pyhf_fit(ws, poi_name=None)
    assert out["twice_nll"] == pytest.approx(twice_nll, rel=1e-7)
    pyhf_layout = _cli(["fit", bkg_only_file, "--poi", "none", "--pyhf", "--value"], tmp_path)
    assert json.loads(pyhf_layout.stdout)["twice_nll"] == pytest.approx(twice_nll, rel=1e-7)
    plot = _cli(["plot", "pulls", bkg_only_file, "--poi", "none", "-o", tmp_path / "pulls.png"], tmp_path)
    assert plot.exit_code == 0 and (tmp_path / "pulls.png").stat().st_size > 0


def test_cli_poi_choice_and_refusals(bkg_only_file, tmp_path):
    chosen = _cli(["fit", examples.path(), "--json", "--poi", "ttbar_norm"], tmp_path)
    assert chosen.exit_code == 0 and json.loads(chosen.stdout)["mu"] == pytest.approx(
        json.loads(chosen.stdout)["bestfit"][json.loads(chosen.stdout)["parameter_names"].index("ttbar_norm")])
    for args, fragment in [(["hypotest", bkg_only_file], "a POI is required"),
                           (["cls", bkg_only_file, "--poi", "none"], "a POI is required"),
                           (["limit", examples.path(), "--poi", "none"], "a POI is required"),
                           (["fit", examples.path(), "--poi", "nope"], "poi_name: POI 'nope' is not a parameter")]:
        result = _cli(args, tmp_path)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == "" and result.stderr.splitlines()[-1].startswith("Error: ")
        assert fragment in result.stderr.splitlines()[-1]
