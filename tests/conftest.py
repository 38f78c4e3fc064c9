"""Shared fixtures: generated models covering every modifier type, and the published likelihoods."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nextstat import testing

# JAX would otherwise take 75% of a GPU's memory at its first array, starving the CUDA tests
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# the compiled engine throughout (deterministic numbers; the cache is filled by the first tests):
# tests of the torch fitter and of the auto policy ask for them (tests/engine/test_fitter.py)
os.environ.setdefault("NEXTSTAT_FITTER", "compiled")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "python" / "nextstat" / "data" / "simple.json"

# Hypothesis profiles (tests/test_properties.py): "ci" (default) is a small fixed budget with a
# fixed seed; "fuzz" the long run. Select with HYPOTHESIS_PROFILE=fuzz.
try:
    from hypothesis import HealthCheck, settings as hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is in the "test" extra
    pass
else:
    _slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    hypothesis_settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                                         print_blob=True, suppress_health_check=_slow_ok)
    hypothesis_settings.register_profile("fuzz", max_examples=10000, deadline=None, print_blob=True,
                                         suppress_health_check=_slow_ok)
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

needs_workspaces = pytest.mark.skipif(not testing.have_workspaces(),
                                      reason="published likelihoods not found ($NEXTSTAT_WORKSPACES)")


def all_modifiers_workspace(seed: int = 0, n_sr: int = 3, n_cr: int = 2) -> dict:
    """A two-channel workspace using all seven modifier types, with asymmetric variations,
    a shared histosys+normsys parameter, a staterror shared by two samples and a shapesys."""
    rng = np.random.default_rng(seed)

    def hist(n: int, lo: float, hi: float) -> list[float]:
        return [float(x) for x in np.round(rng.uniform(lo, hi, n), 3)]

    sig, bkg1, bkg2 = hist(n_sr, 2, 12), hist(n_sr, 20, 60), hist(n_sr, 10, 30)
    cr1, cr2 = hist(n_cr, 100, 300), hist(n_cr, 50, 150)

    def var(h: list[float], up: float, dn: float) -> dict:
        f_up = 1 + up * rng.uniform(0.5, 1.5, len(h))
        f_dn = 1 - dn * rng.uniform(0.5, 1.5, len(h))
        return {"hi_data": [float(x) for x in np.asarray(h) * f_up], "lo_data": [float(x) for x in np.asarray(h) * f_dn]}

    ws = {
        "channels": [
            {"name": "SR", "samples": [
                {"name": "signal", "data": sig, "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "sig_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.85}}]},
                {"name": "bkg1", "data": bkg1, "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "jes", "type": "histosys", "data": var(bkg1, 0.08, 0.05)},
                    {"name": "jes", "type": "normsys", "data": {"hi": 1.04, "lo": 0.95}},
                    {"name": "bkg1_norm", "type": "normfactor", "data": None},
                    {"name": "staterror_SR", "type": "staterror", "data": hist(n_sr, 1, 4)}]},
                {"name": "bkg2", "data": bkg2, "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "bkg2_xsec", "type": "normsys", "data": {"hi": 1.2, "lo": 0.9}},
                    {"name": "bkg2_shape", "type": "shapesys", "data": hist(n_sr, 1, 3)},
                    {"name": "staterror_SR", "type": "staterror", "data": hist(n_sr, 0.5, 2)},
                    {"name": "res", "type": "histosys", "data": var(bkg2, 0.1, 0.12)}]}]},
            {"name": "CR", "samples": [
                {"name": "bkg1", "data": cr1, "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "jes", "type": "histosys", "data": var(cr1, 0.05, 0.04)},
                    {"name": "bkg1_norm", "type": "normfactor", "data": None},
                    {"name": "cr_shape", "type": "shapefactor", "data": None}]},
                {"name": "bkg2", "data": cr2, "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "bkg2_xsec", "type": "normsys", "data": {"hi": 1.2, "lo": 0.9}},
                    {"name": "staterror_CR", "type": "staterror", "data": hist(n_cr, 2, 6)}]}]},
        ],
        "observations": [],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]], "inits": [1.0]},
            {"name": "bkg1_norm", "bounds": [[0.2, 5.0]]},
        ]}}],
        "version": "1.0.0",
    }
    totals = {}
    for ch in ws["channels"]:
        tot = np.sum([s["data"] for s in ch["samples"]], axis=0)
        totals[ch["name"]] = tot
    ws["observations"] = [{"name": c, "data": [float(x) for x in np.round(rng.poisson(t * 1.05))]} for c, t in totals.items()]
    # give the shapefactor something to fix: one CR bin per parameter is determined, keep bounds wide
    return ws


@pytest.fixture
def all_mods_ws() -> dict:
    return all_modifiers_workspace()


@pytest.fixture
def example_ws() -> dict:
    return json.loads(EXAMPLE.read_text())


def pyhf_model_and_data(ws: dict, patches: list | None = None, modifier_settings: dict | None = None):
    import pyhf

    workspace = pyhf.Workspace(copy.deepcopy(ws))
    kwargs = {"modifier_settings": modifier_settings} if modifier_settings else {}
    model = workspace.model(patches=patches or [], **kwargs)
    return model, np.asarray(workspace.data(model))


@pytest.fixture(scope="session")
def pyhf_numpy():
    import pyhf

    pyhf.set_backend("numpy")
    return pyhf


def nll_pair(spec_ours: dict, spec_pyhf: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NLL of nextstat's model of ``spec_ours`` and pyhf's of ``spec_pyhf`` at three points (pyhf's
    suggested init and two random offsets from it): ``(ours, pyhf)``, same parameter order checked."""
    import pyhf

    from nextstat import from_pyhf

    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(copy.deepcopy(spec_pyhf))
    pm = ws.model()
    data = np.asarray(ws.data(pm))
    model = from_pyhf(spec_ours)
    assert list(model.parameter_names) == list(pm.config.par_names)
    rng = np.random.default_rng(seed)
    init = np.asarray(pm.config.suggested_init())
    points = [init, init + rng.normal(0, 0.05, init.size), init + rng.normal(0, 0.1, init.size)]
    return np.array([model.nll(p) for p in points]), np.array([-float(pm.logpdf(p, data)[0]) for p in points])


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread while a test runs (tiny tensors: a second thread only adds
    contention on a shared CPU); the torch tests use it for every test (``pytestmark``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
