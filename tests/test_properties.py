"""Property-based tests of NextStat's contract at the edges ("Trust at the edges", item 8).

For every workspace (generated valid ones, degenerate ones, mutated ones; see
``tests/strategies.py``):

* ``nextstat.from_pyhf(ws, modifier_settings=...)`` returns a Model or raises
  WorkspaceError / ValueError / TypeError whose message names the field (``path: ...``),
  and leaves ``ws`` unchanged;
* ``nextstat.fit(model)`` returns a FitResult: converged with finite NLL, best fit and errors,
  the best fit within the bounds (fixed parameters at their initial values) and ``nll`` equal
  to ``model.nll(bestfit)``; or ``converged=False``. Never another exception;
* ``nextstat.hypotest(model, 1.0)``: finite CLs, CLsb, CLb and expected band in [0, 1];
  ``hypotest(model, 0.0)``: finite p0 in [0, 1] and significance >= 0; or ValueError naming
  the argument. Where the result says ``converged=False`` a ConvergenceWarning was issued;
* ``nextstat.upper_limit(model)``: each of the six limits finite (and >= 0), or flagged
  (``found`` False or ``converged`` False); a message other than "ok" comes with a warning;
* where pyhf 0.7.6 (scipy SLSQP, tight tolerance) fits the same workspace, the same parameter
  names and data, the same NLL at pyhf's best fit, and our converged minimum not above pyhf's.

Budget: the Hypothesis profile ``ci`` (default; fixed seed) or ``fuzz``
(``HYPOTHESIS_PROFILE=fuzz``, 10,000 examples per property), see ``tests/conftest.py``.
With ``NEXTSTAT_PROPERTY_LOG=file.jsonl`` set, contract violations are appended to that file
(class, message, workspace) instead of failing the test, so that a long run surveys every
failure class rather than stopping at the first.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import traceback
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, note, settings  # noqa: E402

import nextstat  # noqa: E402
from nextstat.errors import ConvergenceWarning, WorkspaceError  # noqa: E402
from strategies import compact, mutated_workspaces, workspaces  # noqa: E402

REFUSALS = (WorkspaceError, ValueError, TypeError)
LOG = os.environ.get("NEXTSTAT_PROPERTY_LOG")
#: a message naming its field starts with ``field: `` (a JSON path or an argument name)
_FIELD = re.compile(r"^[A-Za-z_][\w.\[\]'\"-]*: \S")
#: pyhf comparisons: fewer examples (each pyhf fit takes ~0.1-1 s)
PYHF_EXAMPLES = max(10, settings().max_examples // 5)


def _quietly(func, *args, **kwargs):
    """``func(*args, **kwargs)`` with every warning recorded (not raised): (result, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    return out, caught


def _note_warnings(where: str, caught) -> None:
    for w in caught:
        event(f"{where} warns {w.category.__name__}")


def _clean_refusal(exc: BaseException, where: str) -> None:
    msg = str(exc)
    assert msg.strip(), f"{where} raised {type(exc).__name__} with an empty message"
    assert _FIELD.match(msg), f"{where} raised {type(exc).__name__} whose message names no field: {msg!r}"
    if isinstance(exc, WorkspaceError):
        assert exc.path, f"{where}: WorkspaceError without a path: {msg!r}"
        assert msg.startswith(exc.path), f"{where}: WorkspaceError message does not start with its path: {msg!r}"


def _finite(x) -> bool:
    return x is not None and bool(np.all(np.isfinite(np.asarray(x, dtype=float))))


def _in01(x) -> bool:
    a = np.asarray(x, dtype=float)
    return _finite(a) and bool(np.all((a >= 0.0) & (a <= 1.0)))


# ----------------------------------------------------------------------------- contract pieces
def check_from_pyhf(ws, modifier_settings):
    """The model, or None where from_pyhf refused the workspace cleanly."""
    before = compact(ws)
    try:
        model, caught = _quietly(nextstat.from_pyhf, ws, modifier_settings=modifier_settings)
    except REFUSALS as exc:
        _clean_refusal(exc, "from_pyhf")
        event(f"from_pyhf refused: {type(exc).__name__}")
        return None
    finally:
        assert compact(ws) == before, "from_pyhf modified its input workspace"
    _note_warnings("from_pyhf", caught)
    assert isinstance(model, nextstat.Model)
    event("from_pyhf: model")
    return model


def check_fit(model) -> nextstat.FitResult:
    r, caught = _quietly(nextstat.fit, model)
    _note_warnings("fit", caught)
    assert isinstance(r, nextstat.FitResult)
    assert isinstance(r.converged, (bool, np.bool_))
    if not r.converged:
        event("fit: not converged (flagged)")
        assert isinstance(r.message, str) and r.message, "a fit that did not converge carries no message"
        return r
    event("fit: converged")
    assert np.isfinite(r.nll), f"converged fit with non-finite NLL {r.nll!r} ({r.message})"
    assert _finite(r.bestfit), f"converged fit with non-finite best fit {r.bestfit!r}"
    assert _finite(r.errors), f"converged fit with non-finite errors {r.errors!r}"
    assert np.all(r.errors >= 0), f"negative errors {r.errors!r}"
    b = model.suggested_bounds()
    outside = np.flatnonzero((r.bestfit < b[:, 0]) | (r.bestfit > b[:, 1]))
    assert outside.size == 0, (f"best fit outside the bounds: {[(model.parameter_names[i], r.bestfit[i], tuple(b[i])) for i in outside]}")
    fx = model.fixed_params
    assert np.array_equal(r.bestfit[fx], model.suggested_init()[fx]), "fixed parameters moved"
    nll_at = model.nll(r.bestfit)
    assert math.isclose(r.nll, nll_at, rel_tol=1e-9, abs_tol=1e-9), (
        f"FitResult.nll {r.nll!r} differs from model.nll(bestfit) {nll_at!r}")
    return r


def check_hypotest(model, mu: float) -> None:
    try:
        h, caught = _quietly(nextstat.hypotest, model, mu)
    except ValueError as exc:
        _clean_refusal(exc, f"hypotest(mu={mu})")
        event(f"hypotest({mu}) refused")
        return
    _note_warnings(f"hypotest({mu})", caught)
    assert isinstance(h, nextstat.HypotestResult)
    converged = getattr(h, "converged", None)
    if converged is not None:
        assert isinstance(converged, (bool, np.bool_))
        event(f"hypotest({mu}): converged={bool(converged)}")
        if not converged:
            assert any(issubclass(w.category, ConvergenceWarning) for w in caught), (
                "hypotest returned converged=False without a ConvergenceWarning")
    assert _finite(h.q_obs) and h.q_obs >= 0, f"q_obs = {h.q_obs!r}"
    if h.q_asimov is not None:
        assert _finite(h.q_asimov) and h.q_asimov >= 0, f"q_asimov = {h.q_asimov!r}"
    if mu == 0.0:
        assert _in01(h.p0), f"p0 = {h.p0!r} ({h!r})"
        assert _finite(h.significance) and h.significance >= 0, f"significance = {h.significance!r} ({h!r})"
        if h.p0_expected is not None:
            assert _in01(h.p0_expected), f"p0_expected = {h.p0_expected!r}"
        if h.significance_expected is not None:
            assert _finite(h.significance_expected), f"significance_expected = {h.significance_expected!r}"
    else:
        for name in ("cls", "clsb", "clb"):
            assert _in01(getattr(h, name)), f"{name} = {getattr(h, name)!r} ({h!r})"
        assert h.cls_expected is not None and np.shape(h.cls_expected) == (5,), f"cls_expected = {h.cls_expected!r}"
        assert _in01(h.cls_expected), f"cls_expected = {h.cls_expected!r} ({h!r})"


def check_upper_limit(model) -> None:
    try:
        ul, caught = _quietly(nextstat.upper_limit, model)
    except ValueError as exc:
        _clean_refusal(exc, "upper_limit")
        event("upper_limit refused")
        return
    _note_warnings("upper_limit", caught)
    assert isinstance(ul, nextstat.UpperLimitResult)
    limits = np.r_[ul.observed, np.asarray(ul.expected, dtype=float)]
    assert limits.shape == (6,)
    found = np.asarray(ul.found, dtype=bool)
    converged = bool(getattr(ul, "converged", True))
    flagged = ~found | (not converged)
    bad = np.flatnonzero(~np.isfinite(limits) & ~flagged)
    assert bad.size == 0, f"unflagged non-finite limits {limits!r} (found={found}, converged={converged}, {ul.message!r})"
    fin = np.isfinite(limits)
    assert np.all(limits[fin] >= 0), f"negative limits {limits!r}"
    event(f"upper_limit: {'ok' if ul.message == 'ok' else 'flagged'}")
    if flagged.any() or np.any(ul.beyond_bound):
        assert ul.message != "ok", f"flags set (found={found}, converged={converged}) but message 'ok'"
    if ul.message != "ok":
        assert caught, f"upper_limit message {ul.message!r} without a warning"


def contract(ws, modifier_settings, tags, kind: str) -> None:
    """The whole contract on one workspace (or, with NEXTSTAT_PROPERTY_LOG, log violations)."""
    note(f"workspace: {compact(ws, modifier_settings)}")
    note(f"features: {tags}")
    for t in tags:
        event(f"{kind}: {t.split(' ')[0]}")
    try:
        model = check_from_pyhf(ws, modifier_settings)
        if model is None:
            return
        check_fit(model)
        check_hypotest(model, 1.0)
        check_hypotest(model, 0.0)
        check_upper_limit(model)
    except BaseException as exc:  # noqa: BLE001 - logged, then re-raised unless surveying
        if not LOG or isinstance(exc, (KeyboardInterrupt, SystemExit)) or type(exc).__name__ in (
                "Flaky", "Frozen", "StopTest", "UnsatisfiedAssumption", "DeadlineExceeded"):
            raise
        _log(exc, ws, modifier_settings, tags, kind)


def _log(exc: BaseException, ws, modifier_settings, tags, kind: str) -> None:
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(tb)), "?")
    here = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(tb)
                 if f.filename.endswith("test_properties.py")), "?")
    record = {"kind": kind, "class": f"{type(exc).__name__} at {where} (check {here})",
              "message": str(exc)[:500], "tags": tags, "workspace": json.loads(compact(ws)) if _jsonable(ws) else compact(ws),
              "modifier_settings": modifier_settings if _jsonable(modifier_settings) else repr(modifier_settings),
              "size": len(compact(ws)), "traceback": "".join(traceback.format_exception(exc))[-3000:]}
    event(f"VIOLATION {record['class']}")
    with open(LOG, "a") as fh:
        fh.write(json.dumps(record, default=repr) + "\n")


def _jsonable(x) -> bool:
    try:
        json.loads(json.dumps(x))
        return True
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- properties
@given(workspaces())
def test_valid_workspaces_keep_the_contract(draw):
    ws, modifier_settings, tags = draw
    contract(ws, modifier_settings, tags, "valid")


@given(workspaces(degenerate=0.5, max_channels=2, max_bins=3))
def test_degenerate_workspaces_keep_the_contract(draw):
    ws, modifier_settings, tags = draw
    contract(ws, modifier_settings, tags, "degenerate")


@given(mutated_workspaces())
def test_mutated_workspaces_keep_the_contract(draw):
    ws, modifier_settings, mutations = draw
    contract(ws, modifier_settings, mutations, "mutated")


# ----------------------------------------------------------------------------- pyhf oracle
@pytest.fixture(scope="module")
def pyhf_scipy():
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy", "scipy")
    return pyhf


def _pyhf_fit(pyhf, ws, modifier_settings):
    """(pyhf model, data, best fit, NLL) or None where pyhf refuses the workspace or its fit fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            w = pyhf.Workspace(copy.deepcopy(ws))
            kw = {} if modifier_settings is None else {"modifier_settings": copy.deepcopy(modifier_settings)}
            pm = w.model(**kw)
            data = np.asarray(w.data(pm), dtype=float)
            bf, twice_nll = pyhf.infer.mle.fit(data, pm, return_fitted_val=True, tolerance=1e-12,
                                              maxiter=20000)
        except Exception as exc:  # noqa: BLE001 - pyhf refused or did not converge: no oracle
            event(f"pyhf: no fit ({type(exc).__name__})")
            return None
    nll = 0.5 * float(twice_nll)
    if not (np.isfinite(nll) and np.all(np.isfinite(bf))):
        event("pyhf: non-finite fit")
        return None
    if np.any(np.asarray(pm.expected_actualdata(bf)) < 0):
        # pyhf's minimiser went where an expected rate is negative (a Poisson term with n = 0
        # is then -|nu|, unbounded below): no valid model there, so no oracle
        event("pyhf: negative expected rate at its minimum")
        return None
    return pm, data, np.asarray(bf, dtype=float), nll


def nll_resolution(pm, data, theta) -> float:
    """Rounding error of a float64 Poisson NLL near ``theta``: its terms ``nu - n log nu +
    lgamma(n + 1)`` cancel to a small sum, which is known only to ~eps times their magnitudes
    (1e16 events: ~30 in NLL units, the NLLs of two points closer than that are equal)."""
    from scipy.special import gammaln

    n = np.asarray(data, dtype=float)[: pm.config.nmaindata]
    nu = np.asarray(pm.expected_actualdata(theta), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_log_nu = np.where(n > 0, n * np.log(np.where(nu > 0, nu, 1.0)), 0.0)
    return 8 * np.finfo(float).eps * float(np.sum(np.abs(n_log_nu) + np.abs(nu) + gammaln(n + 1)))


def pyhf_contract(pyhf, ws, modifier_settings, tags) -> None:
    note(f"workspace: {compact(ws, modifier_settings)}")
    model = check_from_pyhf(ws, modifier_settings)
    if model is None:
        return
    r = check_fit(model)
    if not r.converged:
        return
    ref = _pyhf_fit(pyhf, ws, modifier_settings)
    if ref is None:
        return
    pm, data, bf, pyhf_nll = ref
    event("pyhf: compared")
    assert list(pm.config.par_names) == list(model.parameter_names), (
        f"parameter order differs from pyhf: {pm.config.par_names} vs {model.parameter_names}")
    assert data.shape == model.data.shape and np.allclose(data, model.data, rtol=1e-12, atol=0), (
        f"data differs from pyhf's: {data!r} vs {model.data!r}")
    b = model.suggested_bounds()
    inside = np.all((bf >= b[:, 0] - 1e-12 * (1 + np.abs(b[:, 0]))) & (bf <= b[:, 1] + 1e-12 * (1 + np.abs(b[:, 1]))))
    if inside:
        ours_at = model.nll(np.clip(bf, b[:, 0], b[:, 1]))
        tol = 1e-6 * abs(pyhf_nll) + 1e-8
        assert abs(ours_at - pyhf_nll) <= tol, (
            f"NLL at pyhf's best fit differs: ours {ours_at!r}, pyhf {pyhf_nll!r}")
    tol = 1e-6 * abs(pyhf_nll) + 1e-8 + nll_resolution(pm, data, bf)
    assert r.nll <= pyhf_nll + tol, (
        f"converged fit NLL {r.nll!r} above pyhf's minimum {pyhf_nll!r} by {r.nll - pyhf_nll:.3g} "
        f"(ours mu={r.mu!r}, pyhf mu={bf[model.poi_index]!r}; {r.message})")


@settings(max_examples=PYHF_EXAMPLES)
@given(workspaces(max_channels=2, max_bins=4))
def test_fit_not_above_pyhf(pyhf_scipy, draw):
    ws, modifier_settings, tags = draw
    if not LOG:
        pyhf_contract(pyhf_scipy, ws, modifier_settings, tags)
        return
    try:
        pyhf_contract(pyhf_scipy, ws, modifier_settings, tags)
    except Exception as exc:  # noqa: BLE001 - surveying: log every violation
        _log(exc, ws, modifier_settings, tags, "pyhf")
