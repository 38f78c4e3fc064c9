"""The one fitter interface (nextstat.engine.fitter): both engines give the same numbers, the
first-use engine hands every edge case to the compiled one, and the auto policy picks the torch
fitter only while the compiled code is not cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nextstat
from nextstat.engine import numba_core as core
from nextstat.engine.fitter import (FITTERS, CompiledFitter, FirstUseFitter, FitStatus, compiled_ready,
                                    resolve_fitter)
from nextstat.engine.torch_fitter import TorchFitter, hesse_from_hessian

REF = Path(__file__).resolve().parents[1] / "reference"
sys.path.insert(0, str(REF))
import make_engine_golden as golden  # noqa: E402

MODELS = golden.models()
WELL_POSED = [n for n in MODELS if not n.startswith("fuzz/")]


def _model(name: str):
    ws, settings = MODELS[name]
    return nextstat.from_pyhf(ws, modifier_settings=settings) if settings else nextstat.from_pyhf(ws)


@pytest.fixture(params=["compiled", "torch", "first_use"])
def fitter(request):
    """Every engine a fit can run on (a fresh first-use engine per test)."""
    return FirstUseFitter() if request.param == "first_use" else resolve_fitter(request.param)


@pytest.mark.parametrize("name", WELL_POSED)
def test_engines_agree_on_well_posed_models(name, fitter):
    model = _model(name)
    ref = nextstat.fit(model, fitter="compiled")
    res = nextstat.fit(model, fitter=fitter)
    assert res.converged and res.fitter in ("compiled", "torch")
    assert abs(res.nll - ref.nll) < 1e-9 * max(1.0, abs(ref.nll))
    free = ~ref.fixed
    np.testing.assert_allclose(res.bestfit[free], ref.bestfit[free], atol=1e-4 * ref.errors[free].max())
    np.testing.assert_allclose(res.errors, ref.errors, rtol=1e-4, atol=1e-9)
    for mu in (1.0, 0.0):
        a = nextstat.hypotest(model, mu, fitter="compiled")
        b = nextstat.hypotest(model, mu, fitter=fitter)
        assert b.converged
        # the Asimov data hang on the generating fit's parameters at first order (each engine stops
        # within ~sqrt(tol) of the optimum): q_asimov agrees to ~1e-6, as pyhf's own fits do
        np.testing.assert_allclose(b.q_obs, a.q_obs, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(b.q_asimov, a.q_asimov, rtol=1e-5, atol=1e-7)
        if mu:
            np.testing.assert_allclose(b.cls_expected, a.cls_expected, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("fuzz/")])
def test_first_use_matches_compiled_on_edge_cases(name):
    """The property survey's edge cases: the first-use engine gives the compiled engine's figures
    (its strict torch fits refuse what is not clean and the compiled engine takes over)."""
    try:
        model = _model(name)
    except (nextstat.WorkspaceError, ValueError):
        pytest.skip("refused at build time")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = nextstat.fit(model, fitter="compiled")
        b = nextstat.fit(model, fitter=FirstUseFitter())
    assert (b.converged, b.message) == (a.converged, a.message)
    if np.isfinite(a.nll):
        assert abs(b.nll - a.nll) <= 1e-8 * max(1.0, abs(a.nll))
    if b.fitter == "torch":
        np.testing.assert_allclose(b.errors, a.errors, rtol=1e-3, atol=1e-8)
    else:
        np.testing.assert_array_equal(b.bestfit, a.bestfit)


def test_degenerate_model_goes_to_the_compiled_engine():
    """fuzz3-2: mu and k_bkg scale one sample (a flat valley): the torch fit is not clean."""
    model = _model("fuzz/fuzz3-2")
    res = nextstat.fit(model, fitter=FirstUseFitter())
    assert res.fitter == "compiled"
    np.testing.assert_array_equal(res.bestfit, nextstat.fit(model, fitter="compiled").bestfit)


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_pyhf_nll_is_the_compiled_one(name):
    """The torch fitter's reported NLL is computed as the compiled core does: bit-identical."""
    try:
        model = _model(name)
    except (nextstat.WorkspaceError, ValueError):
        pytest.skip("refused at build time")
    theta = model.suggested_init()
    assert TorchFitter().nll(model, theta, model.data) == model.nll(theta)


def test_hesse_twin_matches_compiled_on_indefinite_hessians():
    rng = np.random.default_rng(3)
    for _ in range(20):
        A = rng.normal(size=(5, 5))
        H = A + A.T + np.diag(rng.uniform(0.1, 3.0, 5))
        H[2, :] = H[:, 2] = 0.0
        H[2, 2] = 0.0  # no curvature: never positive definite
        fixed = np.zeros(5, dtype=bool)
        fixed[4] = True
        cov, posdef = hesse_from_hessian(H, fixed)
        ref = core._hesse_degenerate(H, np.flatnonzero(~fixed))
        assert not posdef and np.any(cov != 0)
        np.testing.assert_allclose(cov, ref, rtol=1e-10, atol=1e-12)


def test_hesse_twin_on_positive_definite():
    model = _model("example")
    r = nextstat.fit(model, fitter="compiled")
    cov, posdef = hesse_from_hessian(model.hess_nll(r.bestfit), r.fixed)
    assert posdef
    np.testing.assert_allclose(cov, r.covariance, rtol=1e-8, atol=1e-14)


def test_fit_status_codes_and_messages():
    assert [int(s) for s in FitStatus] == [core.FIT_CONVERGED, core.FIT_MAXITER, core.FIT_LINESEARCH,
                                            core.FIT_NONFINITE, core.FIT_NONFINITE_RESULT]
    assert FitStatus(core.FIT_MAXITER).message == "reached the iteration limit before converging"
    model = _model("example")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in ("compiled", "torch"):
            r = nextstat.fit(model, maxiter=1, fitter=f)
            assert not r.converged and r.message == FitStatus.MAXITER.message


def test_resolve_fitter_refuses_by_name():
    assert isinstance(resolve_fitter("compiled"), CompiledFitter)
    assert resolve_fitter("torch").name == "torch"
    with pytest.raises(ValueError, match="fitter"):
        resolve_fitter("numba")
    with pytest.raises(TypeError, match="fitter"):
        resolve_fitter(3)
    with pytest.raises(ValueError, match="fitter"):
        nextstat.fit(_model("example"), fitter="gpu")
    assert set(FITTERS) == {"auto", "compiled", "torch"}


def test_auto_is_compiled_once_cached():
    model = _model("example")
    nextstat.fit(model, fitter="compiled")  # compiled in this process
    assert compiled_ready("fit_with_errors")
    assert nextstat.fit(model).fitter == "compiled"


def test_loss_moves_to_numba_when_compiled(monkeypatch):
    import nextstat.torch.session as session_mod
    from nextstat.torch import SignificanceLoss

    ready = {"now": False}
    monkeypatch.setattr(session_mod, "compiled_ready", lambda name: ready["now"])
    model = _model("example")
    fn = SignificanceLoss(model, signal_sample_name="signal", device="cpu")
    assert fn.session.fit_backend == "torch"
    h = torch.full((fn.n_bins,), 5.0, dtype=torch.float64, requires_grad=True)
    a = fn(h)
    ready["now"] = True
    b = fn(h)
    assert fn.session.fit_backend == "numba"
    assert abs(a.item() - b.item()) < 1e-8 * abs(b.item())


_FIRST_USE = """
import json, sys, time
import nextstat
from nextstat import examples
from nextstat.engine.fitter import background_job
model = nextstat.from_pyhf(examples.simple_workspace())
fit = nextstat.fit(model)
test = nextstat.hypotest(model, 1.0)
job = background_job()
out = {"fitter": fit.fitter, "nll": fit.nll, "cls": test.cls, "background": job is not None and job.running()}
if job is not None:
    job.__exit__(None, None, None)  # stop the child: the test does not wait for the compile
print(json.dumps(out))
"""


def test_first_use_runs_on_torch_while_compiling(tmp_path):
    """An empty compiled cache: the first fit and test run on the torch fitter, a background
    process compiles, one line says so; the numbers are the compiled engine's."""
    env = {k: v for k, v in os.environ.items() if k != "NEXTSTAT_FITTER"}
    env.update(NEXTSTAT_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", _FIRST_USE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["fitter"] == "torch" and out["background"]
    notes = [line for line in p.stderr.splitlines() if line.startswith("nextstat: compiling")]
    assert len(notes) == 1 and "background" in notes[0] and "PyTorch" in notes[0]
    model = _model("example")
    assert abs(out["nll"] - nextstat.fit(model, fitter="compiled").nll) < 1e-10
    assert abs(out["cls"] - nextstat.hypotest(model, 1.0, fitter="compiled").cls) < 1e-8


@pytest.mark.parametrize("name", WELL_POSED[:3])
def test_newton_refits_and_held_parameter_agree_across_engines(name, fitter):
    """``Fitter.newton``, ``Fitter.refits`` (the ranking) and ``fit_conditional(par=)`` (MINOS):
    every engine ends at the compiled engine's minima, and the refits at the minima of plain
    Newton fits with the parameter held."""
    model = _model(name)
    ref = CompiledFitter()
    nominal = nextstat.fit(model, fitter="compiled")
    bounds = np.asarray(model.suggested_bounds(), dtype=np.float64)
    d, lo, hi = model.data, np.ascontiguousarray(bounds[:, 0]), np.ascontiguousarray(bounds[:, 1])
    fixed, P = np.asarray(nominal.fixed, dtype=bool), model.n_params
    start = model.suggested_init()
    a = ref.newton(model, start, d, lo, hi, fixed, 200, 1e-10)
    b = fitter.newton(model, start, d, lo, hi, fixed, 200, 1e-10)
    assert a.status == b.status == FitStatus.CONVERGED and a.gradient.shape == b.gradient.shape == (P,)
    assert abs(b.nll - nominal.nll) < 1e-9 * max(1.0, abs(nominal.nll))
    np.testing.assert_allclose(b.theta[~fixed], nominal.bestfit[~fixed], atol=1e-4 * nominal.errors.max())
    # two nuisance parameters (not the POI), each held one Hesse error up
    pars = np.array([i for i in range(P) if not fixed[i] and i != model.poi_index][:2], dtype=np.int64)
    values = nominal.bestfit[pars] + nominal.errors[pars]
    args = (np.ascontiguousarray(nominal.bestfit), np.ascontiguousarray(nominal.covariance), d, lo, hi, fixed,
            pars, values, 200, 1e-10, 20)
    ra, rb = ref.refits(model, *args), fitter.refits(model, *args)
    assert np.all(ra.status == FitStatus.CONVERGED) and np.all(rb.status == FitStatus.CONVERGED)
    for k, (i, v) in enumerate(zip(pars, values)):
        fx = fixed.copy()
        fx[i] = True
        s = nominal.bestfit.copy()
        s[i] = v
        plain = ref.newton(model, s, d, lo, hi, fx, 200, 1e-10, True)
        assert ra.theta[k, i] == rb.theta[k, i] == v
        tol = 1e-4 * nominal.errors[model.poi_index]
        assert abs(ra.theta[k, model.poi_index] - plain.theta[model.poi_index]) < tol
        assert abs(rb.theta[k, model.poi_index] - plain.theta[model.poi_index]) < tol
        # MINOS's conditional fit of parameter i (not the POI) at v
        ca = ref.fit_conditional(model, nominal.bestfit, v, d, lo, hi, fx, 200, 1e-10, int(i))
        cb = fitter.fit_conditional(model, nominal.bestfit, v, d, lo, hi, fx, 200, 1e-10, int(i))
        assert ca.converged and cb.converged and ca.bestfit[i] == cb.bestfit[i] == v
        assert abs(cb.nll - plain.nll) < 1e-8 * max(1.0, abs(plain.nll))
        assert abs(ca.nll - plain.nll) < 1e-8 * max(1.0, abs(plain.nll))
