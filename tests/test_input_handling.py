"""Input handling at the edges: every public entry point returns a right result or refuses with
``WorkspaceError`` / ``ValueError`` / ``TypeError`` naming the field or argument.

Regression tests for the reliability cases 05, 06, 07, 13, 14, 15, 16 and 28
(``shared/reliability-cases/``, beside the clone), then the classes they stand for, checked
against pyhf 0.7.6 live wherever pyhf builds the model: ``modifier_settings`` (pyhf replaces its
default dict as a whole), loading (gzip, nesting, encoding, one patch instead of a list),
numbers (JSON ints of any size, NaN / Infinity tokens, squares that over- or underflow), toys
(numpy's Poisson limit) and the torch layer's histograms.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nextstat
from conftest import all_modifiers_workspace
from nextstat.errors import ConvergenceWarning
from nextstat.infer.toys import POISSON_LAM_MAX, fit_toys, hypotest_toys, sample_toys

CASES = Path(os.environ.get("NEXTSTAT_RELIABILITY_CASES",
                            Path(__file__).resolve().parents[2] / "shared" / "reliability-cases"))
needs_cases = pytest.mark.skipif(not CASES.is_dir(), reason=f"reliability cases not found at {CASES}")


def load_case(prefix: str) -> dict:
    (path,) = CASES.glob(f"{prefix}-*.json")
    return json.loads(path.read_text())


def ws_1bin(nom: list, mods: list[dict], obs: list, params: list | None = None) -> dict:
    """One channel ``c``, sample ``s`` with a normfactor POI ``mu`` and ``mods``."""
    return {"channels": [{"name": "c", "samples": [{"name": "s", "data": nom, "modifiers": [
                {"name": "mu", "type": "normfactor", "data": None}, *mods]}]}],
            "observations": [{"name": "c", "data": obs}],
            "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": params or []}}],
            "version": "1.0.0"}


def pyhf_build(ws: dict, **kwargs: Any):
    """pyhf's (model, data), its warnings silenced; exceptions pass through."""
    import pyhf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = pyhf.Workspace(copy.deepcopy(ws))
        model = w.model(**kwargs)
        return model, np.asarray(w.data(model))


def pyhf_nll(model, pars, data) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return -float(model.logpdf(np.asarray(pars, float), data)[0])


@pytest.fixture
def pyhf_tight():
    """pyhf's numpy backend with a tight scipy minimiser (restored afterwards)."""
    pyhf = pytest.importorskip("pyhf")
    old = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-14))
    yield pyhf
    pyhf.set_backend(*old)


# ================================================================ reliability cases
@needs_cases
@pytest.mark.parametrize("prefix", ["05", "06"])
def test_05_06_partial_modifier_settings_give_pyhf_likelihood(pyhf_tight, prefix):
    c = load_case(prefix)
    pm, data = pyhf_build(c["workspace"], **c["kwargs"])
    bestfit, twice_nll = pyhf_tight.infer.mle.fit(data, pm, return_fitted_val=True)
    pyhf_min = float(twice_nll) / 2
    m = nextstat.from_pyhf(c["workspace"], **c["kwargs"])
    # a partial dict replaces pyhf's defaults: the type it leaves out gets code1 / code0
    assert m.modifier_settings == {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
    assert m.parameter_names == pm.config.par_names
    assert m.nll(bestfit) == pytest.approx(pyhf_nll(pm, bestfit, data), rel=1e-12)
    assert m.nll(bestfit) == pytest.approx(pyhf_min, rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = nextstat.fit(m)
    assert r.nll <= pyhf_min * (1 + 1e-9)


@needs_cases
def test_07_toys_refuse_rates_beyond_numpys_poisson_sampler():
    c = load_case("07")
    m = nextstat.from_pyhf(c["workspace"], **c["kwargs"])
    p = m.suggested_init()
    for call in (lambda: fit_toys(m, p, n_toys=5, progress=False),
                 lambda: sample_toys(m, p, 5),
                 lambda: hypotest_toys(m, 1.0, n_toys=5, progress=False)):
        with pytest.raises(ValueError, match=r"^pars: the expected rate of main bin 0 .* 1e\+300; .*Poisson sampler"):
            call()


@needs_cases
def test_13_huge_integer_yield_is_refused_naming_the_shapesys_bin():
    c = load_case("13")
    with pytest.raises(nextstat.WorkspaceError, match=r"^channels\[0\]\.samples\[0\]\.modifiers\[4\]\.data\[0\]: "
                                                      r"shapesys constraint tau .* overflows"):
        nextstat.from_pyhf(c["workspace"], **c["kwargs"])


@needs_cases
def test_14_deeply_nested_json(tmp_path):
    c = load_case("14")
    with pytest.raises(nextstat.WorkspaceError, match="^channels: a workspace needs at least one channel"):
        nextstat.from_pyhf(c["workspace"])
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, '{"channels": ' + deep + "}"):
        with pytest.raises(nextstat.WorkspaceError, match="workspace JSON is nested too deeply"):
            nextstat.from_pyhf(text)
        f = tmp_path / "deep.json"
        f.write_text(text)
        with pytest.raises(nextstat.WorkspaceError, match=r"JSON in workspace file '.*deep\.json' is nested too deeply"):
            nextstat.from_pyhf(f)


@needs_cases
def test_15_modifier_settings_value_not_a_dict():
    c = load_case("15")
    with pytest.raises(ValueError, match=r"^modifier_settings\['normsys'\]: expected a dict of options"):
        nextstat.from_pyhf(c["workspace"], **c["kwargs"])


@needs_cases
def test_16_tiny_yields_give_the_exact_tau():
    c = load_case("16")
    with pytest.raises(nextstat.WorkspaceError, match=r"^measurements\[0\]\.config\.poi"):
        nextstat.from_pyhf(c["workspace"])  # the case has no POI; it used to divide by zero first
    ws = {"version": "1.0.0", **copy.deepcopy(c["workspace"])}
    ws["channels"][0]["samples"][0]["modifiers"].append({"name": "mu_SIG", "type": "normfactor", "data": None})
    with pytest.raises(ZeroDivisionError):
        pyhf_build(ws)  # pyhf computes nom**2 / unc**2 = 0 / 0
    m = nextstat.from_pyhf(ws)
    x, u = ws["channels"][0]["samples"][0]["data"][0], ws["channels"][0]["samples"][0]["modifiers"][0]["data"][0]
    assert m.aux_data.tolist() == [(x / u) ** 2]
    assert 99.99999 < m.aux_data[0] < 100.0
    assert np.isfinite(m.nll(m.suggested_init()))


@needs_cases
def test_28_torch_huge_histogram_is_refused():
    torch = pytest.importorskip("torch")
    from nextstat.builders import build_workspace_from_histograms
    from nextstat.torch import SignificanceLoss

    assert "-inf" in load_case("28")["symptom"]  # the case holds no input: a 1e300 histogram gave -inf
    loss_fn = SignificanceLoss(nextstat.from_pyhf(build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 20.0]})),
                               device="cpu")
    with pytest.raises(ValueError, match="^histogram: the statistic or its gradient is not finite"):
        loss_fn(torch.tensor([1e300, 1.0], dtype=torch.float64))


# ================================================================ modifier_settings
SETTINGS = [
    None,
    {},
    {"normsys": {"interpcode": "code4"}},
    {"histosys": {"interpcode": "code2"}},
    {"normsys": {}},
    {"histosys": {"interpcode": "code4p"}, "shapesys": {}, "lumi": {}, "staterror": {}},
    {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code0"}},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=repr)
def test_modifier_settings_follow_pyhf(pyhf_numpy, settings):
    ws = all_modifiers_workspace()
    pm, data = pyhf_build(ws, **({} if settings is None else {"modifier_settings": settings}))
    m = nextstat.from_pyhf(ws, modifier_settings=settings)
    appliers = pm.main_model.modifiers_appliers
    assert m.modifier_settings == {t: {"interpcode": appliers[t].interpcode} for t in ("normsys", "histosys")}
    rng = np.random.default_rng(5)
    lo, hi = m.suggested_bounds().T
    for _ in range(4):
        p = np.clip(m.suggested_init() + rng.normal(0, 0.8, m.n_params), lo + 1e-6, hi)
        assert m.nll(p) == pytest.approx(pyhf_nll(pm, p, data), rel=1e-10)


BAD_SETTINGS = [
    ("code4", r"modifier_settings: expected a dict"),
    ([("normsys", {})], r"modifier_settings: expected a dict"),
    ({"normsys": "code1"}, r"modifier_settings\['normsys'\]: expected a dict of options"),
    ({"normsys": None}, r"modifier_settings\['normsys'\]: expected a dict of options"),
    ({"histosys": ["code0"]}, r"modifier_settings\['histosys'\]: expected a dict of options"),
    ({"normsys": {"interpcode": "code0"}}, r"modifier_settings\['normsys'\]\['interpcode'\]: expected one of"),
    ({"normsys": {"interpcode": "code2"}}, r"modifier_settings\['normsys'\]\['interpcode'\]"),
    ({"normsys": {"interpcode": "code4p"}}, r"modifier_settings\['normsys'\]\['interpcode'\]"),
    ({"histosys": {"interpcode": "code1"}}, r"modifier_settings\['histosys'\]\['interpcode'\]"),
    ({"histosys": {"interpcode": "code4"}}, r"modifier_settings\['histosys'\]\['interpcode'\]"),
    ({"normsys": {"interpcode": None}}, r"modifier_settings\['normsys'\]\['interpcode'\]"),
    ({"normsys": {"interpcode": ["code1"]}}, r"modifier_settings\['normsys'\]\['interpcode'\]"),
    ({"normsys": {"interpcode": "code1", "foo": 1}}, r"modifier_settings\['normsys'\]\['foo'\]: unknown option"),
    ({"normsys": {"batch_size": 2}}, r"modifier_settings\['normsys'\]\['batch_size'\]: unknown option"),
    ({"shapesys": {"interpcode": "code1"}}, r"modifier_settings\['shapesys'\]\['interpcode'\]: unknown option; "
                                            r"shapesys takes no options"),
]


@pytest.mark.parametrize("settings,match", BAD_SETTINGS, ids=[repr(s) for s, _ in BAD_SETTINGS])
def test_malformed_modifier_settings_are_refused_where_pyhf_refuses(pyhf_numpy, settings, match):
    ws = all_modifiers_workspace()
    with pytest.raises(Exception):  # noqa: B017 - pyhf raises TypeError, AssertionError or AttributeError
        pyhf_build(ws, modifier_settings=settings)
    with pytest.raises(ValueError, match="^" + match):
        nextstat.from_pyhf(ws, modifier_settings=settings)


@pytest.mark.parametrize("settings", [{"normsy": {"interpcode": "code4"}}, {1: {}}], ids=repr)
def test_unknown_modifier_types_are_refused(pyhf_numpy, settings):
    """pyhf ignores them (a misspelt type silently falls back to code1 / code0); we refuse."""
    ws = all_modifiers_workspace()
    pm, _ = pyhf_build(ws, modifier_settings=settings)
    assert pm.main_model.modifiers_appliers["normsys"].interpcode == "code1"
    with pytest.raises(ValueError, match=r"^modifier_settings\[.*\]: unknown modifier type"):
        nextstat.from_pyhf(ws, modifier_settings=settings)


# ================================================================ loading
def _good_ws() -> dict:
    return ws_1bin([50.0], [], [52.0])


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


BAD_FILES = {
    "corrupt.json.gz": (lambda g: g[:12] + bytes([g[12] ^ 0xFF]) + g[13:], "corrupt gzip data"),
    "truncated.json.gz": (lambda g: g[: len(g) // 2], "corrupt gzip data"),
    "plain.json.gz": (lambda g: b'{"channels": []}', "corrupt gzip data"),
    "gzip_no_suffix.json": (lambda g: g[: len(g) - 5], "corrupt gzip data"),
    "latin1.json": (lambda g: '{"channels": "\u00e9"}'.encode("latin-1"), "not UTF-8 text"),
    "deep.json": (lambda g: b"[" * 50_000 + b"]" * 50_000, "is nested too deeply"),
    "deep.json.gz": (lambda g: _gz(b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"), "is nested too deeply"),
    "bigint.json": (lambda g: b'{"channels": ' + b"9" * 5000 + b"}", "malformed JSON"),
    "truncated.json": (lambda g: b'{"channels": [', "malformed JSON"),
    "list.json": (lambda g: b"[1, 2]", "a workspace is a JSON object, got a JSON list"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_unreadable_files_are_refused_naming_the_file(tmp_path, name):
    make, match = BAD_FILES[name]
    f = tmp_path / name
    f.write_bytes(make(_gz(json.dumps(_good_ws()).encode())))
    with pytest.raises(nextstat.WorkspaceError, match=match) as err:
        nextstat.from_pyhf(f)
    assert name in str(err.value)
    with pytest.raises(nextstat.WorkspaceError, match=match):
        nextstat.from_pyhf(str(f))


def test_gzip_is_read_by_its_magic_bytes_and_a_bom_is_accepted(tmp_path):
    ws = _good_ws()
    ref = nextstat.from_pyhf(ws).nll([1.0])
    (tmp_path / "a.json").write_bytes(_gz(json.dumps(ws).encode()))
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ws).encode())
    (tmp_path / "c.json.gz").write_bytes(_gz(json.dumps(ws).encode()))
    for f in ("a.json", "b.json", "c.json.gz"):
        assert nextstat.from_pyhf(tmp_path / f).nll([1.0]) == ref


@pytest.mark.parametrize("text,match", [
    ("[" * 100_000 + "]" * 100_000, "workspace JSON is nested too deeply"),
    ('{"channels": ' + "[" * 100_000 + "]" * 100_000 + "}", "workspace JSON is nested too deeply"),
    ('  [{"channels": []}]', "a workspace is a JSON object, got a JSON list"),
    ('{"channels": ' + "1" * 5000 + "}", "malformed workspace JSON"),
    ("x" * 100_000, "no workspace file at 'xxx"),
    ("a\0b.json", "no workspace file at"),
])
def test_bad_json_strings_and_names(text, match):
    with pytest.raises(nextstat.WorkspaceError, match=match):
        nextstat.from_pyhf(text)


def test_deeply_nested_objects_are_refused():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(nextstat.WorkspaceError, match="nested too deeply"):
        nextstat.from_pyhf({"channels": deep})
    with pytest.raises(nextstat.WorkspaceError, match=r"^patches\[0\]: cannot apply patch: nested too deeply"):
        nextstat.from_pyhf(_good_ws(), patches=[[{"op": "add", "path": "/x", "value": deep}]])


OP = {"op": "replace", "path": "/channels/0/samples/0/data/0", "value": 60.0}


def _patch_forms(tmp_path: Path) -> dict[str, Any]:
    import jsonpatch

    (tmp_path / "p.json").write_text(json.dumps([OP]))
    (tmp_path / "p.json.gz").write_bytes(_gz(json.dumps({"metadata": {"name": "x"}, "patch": [OP]}).encode()))
    return {"path": tmp_path / "p.json", "str path": str(tmp_path / "p.json.gz"), "one op": OP,
            "entry": {"metadata": {"name": "x"}, "patch": [OP]}, "ops": [OP], "json text": json.dumps([OP]),
            "JsonPatch": jsonpatch.JsonPatch([OP]), "tuple": ([OP],)}


@pytest.mark.parametrize("form", ["path", "str path", "one op", "entry", "ops", "json text", "JsonPatch", "tuple"])
def test_one_patch_instead_of_a_list_is_accepted(pyhf_numpy, tmp_path, form):
    ws = _good_ws()
    pm, data = pyhf_build(ws, patches=[[OP]])
    m = nextstat.from_pyhf(ws, patches=_patch_forms(tmp_path)[form])
    p = m.suggested_init()
    assert m.nll(p) == pytest.approx(pyhf_nll(pm, p, data), rel=1e-13)
    assert m.expected_main(p).tolist() == [60.0]


@pytest.mark.parametrize("patches,exc,match", [
    (5, TypeError, r"^patches: expected a list"),
    ({"patches": [{"metadata": {}, "patch": [OP]}]}, nextstat.WorkspaceError, r"^patches\[0\]: .*patchset"),
    ({"value": 1}, nextstat.WorkspaceError, r"^patches\[0\]: expected a JSON Patch"),
    ([[{"op": "replace", "path": "", "value": [1]}]], nextstat.WorkspaceError, r"^patches\[0\]: the patched workspace is a list"),
    ([[OP], "[{"], nextstat.WorkspaceError, r"^patches\[1\]: malformed JSON Patch"),
    ([[OP], "[" * 100_000], nextstat.WorkspaceError, r"^patches\[1\]: JSON Patch is nested too deeply"),
    ([[OP], "/no/such/patch.json"], nextstat.WorkspaceError, r"^patches\[1\]: no patch file at"),
    ([[OP], [{"op": "add"}]], nextstat.WorkspaceError, r"^patches\[1\]: cannot apply patch"),
    ([3], nextstat.WorkspaceError, r"^patches\[0\]: expected a list of JSON Patch operations"),
])
def test_bad_patches_are_refused_naming_them(patches, exc, match):
    with pytest.raises(exc, match=match):
        nextstat.from_pyhf(_good_ws(), patches=patches)


# ================================================================ numbers
NONFINITE = [
    ('"data": [50.0]', '"data": [NaN]', r"channels\[0\]\.samples\[0\]\.data\[0\]: expected a finite number"),
    ('"data": [52.0]', '"data": [Infinity]', r"observations\[0\]\.data\[0\]: expected a finite number"),
    ('"data": [50.0]', '"data": [-Infinity]', r"channels\[0\]\.samples\[0\]\.data\[0\]"),
    ('"hi": 1.1', '"hi": NaN', r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data\.hi: expected a finite"),
    ('"hi_data": [55.0]', '"hi_data": [Infinity]', r"channels\[0\]\.samples\[0\]\.modifiers\[2\]\.data\.hi_data\[0\]: expected a finite"),
    ('"data": [5.0]', '"data": [NaN]', r"channels\[0\]\.samples\[0\]\.modifiers\[3\]\.data\[0\]: expected a finite"),
    ('"inits": [1.0]', '"inits": [NaN]', r"measurements\[0\]\.config\.parameters\[0\]\.inits\[0\]"),
    ('"bounds": [[0.0, 10.0]]', '"bounds": [[0.0, Infinity]]', r"measurements\[0\]\.config\.parameters\[0\]\.bounds\[0\]\[1\]"),
    ('"data": [50.0]', '"data": [1' + "0" * 400 + "]", r"channels\[0\]\.samples\[0\]\.data\[0\]: expected a finite number \(float64\)"),
    ('"hi": 1.1', '"hi": 1' + "0" * 400, r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data\.hi: .*an integer of 1329 bits"),
]


def _numbers_ws() -> dict:
    return ws_1bin([50.0], [{"name": "n", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                            {"name": "h", "type": "histosys", "data": {"hi_data": [55.0], "lo_data": [45.0]}},
                            {"name": "st", "type": "staterror", "data": [5.0]}],
                   [52.0], [{"name": "mu", "inits": [1.0], "bounds": [[0.0, 10.0]]}])


@pytest.mark.parametrize("old,new,match", NONFINITE, ids=[n[:30] for _, n, _ in NONFINITE])
def test_numbers_that_are_not_finite_float64_are_refused(old, new, match):
    text = json.dumps(_numbers_ws())
    assert old in text
    text = text.replace(old, new, 1)
    with pytest.raises(nextstat.WorkspaceError, match="^" + match):
        nextstat.from_pyhf(text)


@pytest.mark.parametrize("ws,match", [
    (ws_1bin([-1e308], [{"name": "h", "type": "histosys", "data": {"hi_data": [1e308], "lo_data": [0.0]}}], [1.0]),
     r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data\.hi_data\[0\]: the difference 1e\+308 - -1e\+308 .* overflows"),
    (ws_1bin([1e300], [{"name": "s", "type": "shapesys", "data": [1e-100]}], [1.0]),
     r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data\[0\]: shapesys constraint tau .* overflows"),
    (ws_1bin([1e150], [{"name": "s", "type": "shapesys", "data": [1e-150]}], [1.0]),  # 1e300 / 1e-300 = inf
     r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data\[0\]: shapesys constraint tau .* overflows"),
    (ws_1bin([1e300], [{"name": "s", "type": "shapesys", "data": [1.0]}], [1.0]),
     r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data\[0\]: shapesys constraint tau .* overflows"),
    (ws_1bin([1e-300], [{"name": "st", "type": "staterror", "data": [1e300]}], [1.0]),
     r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data: staterror 'st': the relative uncertainty .* overflows"),
    (ws_1bin([1e-200], [{"name": "st", "type": "staterror", "data": [1.0]}], [1.0]),  # pyhf: sigma inf, logpdf -inf
     r"channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data: staterror 'st'"),
    (ws_1bin([1e308, 1e308], [], [1.0, 1.0]) | {"channels": [{"name": "c", "samples": [
        {"name": "a", "data": [1e308], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "b", "data": [1e308], "modifiers": []}]}], "observations": [{"name": "c", "data": [1.0]}]},
     r"channels\[0\]\.samples: bin 0 .* total expected yield inf"),
])
def test_overflowing_derived_numbers_are_refused(ws, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy RuntimeWarning on the way
        with pytest.raises(nextstat.WorkspaceError, match="^" + match):
            nextstat.from_pyhf(ws)


@pytest.mark.parametrize("nom,unc,obs", [
    (1e-160, 1e-161, 0.0),          # both squares subnormal: pyhf's imprecise tau, reproduced
    (1e-170, 1.0, 0.0),             # nom**2 underflows: tau = 0
    (0.0, 1.0, 0.0),                # invalid bin: fixed, tau 1
    (5.0, 0.0, 5.0),                # invalid bin: fixed, tau 1
    (5, 2, 5),                      # JSON ints
    (12345678901234567, 3, 5),      # ints beyond 2**53: pyhf's exact int division
    (1e150, 1e140, 1e150),
    (10**200, 10**100, 1e200),      # ints: pyhf's exact int division works where float squares overflow
])
def test_shapesys_tau_matches_pyhf(pyhf_numpy, nom, unc, obs):
    ws = ws_1bin([nom, 7.0], [{"name": "sh", "type": "shapesys", "data": [unc, 1.0]}], [obs, 7.0])
    pm, data = pyhf_build(ws)
    m = nextstat.from_pyhf(ws)
    np.testing.assert_array_equal(m.aux_data, data[pm.config.nmaindata:])
    np.testing.assert_array_equal(m.fixed_params, pm.config.suggested_fixed())
    p = m.suggested_init()
    assert m.nll(p) == pytest.approx(pyhf_nll(pm, p, data), rel=1e-12)


@pytest.mark.parametrize("nom,unc", [(1e-302, 1e-303), (1e200, 1e100), (1e-200, 1e-250)])
def test_shapesys_tau_where_pyhfs_squares_fail(pyhf_numpy, nom, unc):
    """pyhf raises ZeroDivisionError / OverflowError; tau = (nom / unc)**2 is representable."""
    ws = ws_1bin([nom], [{"name": "sh", "type": "shapesys", "data": [unc]}], [float(nom)])
    with pytest.raises((ZeroDivisionError, OverflowError)):
        pyhf_build(ws)
    m = nextstat.from_pyhf(ws)
    assert m.aux_data.tolist() == [(float(nom) / float(unc)) ** 2]


@pytest.mark.parametrize("nom,unc", [(1e-302, 1e-303), (1.0, 1e-200), (1.0, 1e-160), (0.0, 1.0)])
def test_staterror_sigma_matches_pyhf(pyhf_numpy, nom, unc):
    ws = ws_1bin([nom, 7.0], [{"name": "st", "type": "staterror", "data": [unc, 1.0]}], [0.0, 7.0])
    pm, data = pyhf_build(ws)
    m = nextstat.from_pyhf(ws)
    np.testing.assert_array_equal(m.aux_arrays[2], np.asarray(pm.config.param_set("st").sigmas))
    np.testing.assert_array_equal(m.fixed_params, pm.config.suggested_fixed())
    p = m.suggested_init()
    assert m.nll(p) == pytest.approx(pyhf_nll(pm, p, data), rel=1e-12)


@pytest.mark.parametrize("hi", [1e300, 1e307])
def test_huge_normsys_factors(pyhf_numpy, hi):
    ws = ws_1bin([5.0], [{"name": "n", "type": "normsys", "data": {"hi": hi, "lo": 0.5}}], [5.0])
    code1 = {"normsys": {"interpcode": "code1"}}
    pm, data = pyhf_build(ws, modifier_settings=code1)
    m = nextstat.from_pyhf(ws, modifier_settings=code1)
    for a in (0.0, 0.5, -1.0):
        assert m.nll([1.0, a]) == pytest.approx(pyhf_nll(pm, [1.0, a], data), rel=1e-12)
    if hi > 1e302:  # ln(hi)^2 hi overflows: code4's polynomial has no finite coefficients (pyhf: NaN)
        with pytest.raises(nextstat.WorkspaceError, match=r"^channels\[0\]\.samples\[0\]\.modifiers\[1\]\.data: normsys "
                                                          r"factors .* too large for the code4"):
            nextstat.from_pyhf(ws)
    else:
        assert np.isfinite(nextstat.from_pyhf(ws).nll([1.0, 0.5]))


# ================================================================ toys
def test_poisson_limit_is_numpys():
    rng = np.random.default_rng(0)
    assert rng.poisson(POISSON_LAM_MAX) > 0
    with pytest.raises(ValueError, match="lam value too large"):
        rng.poisson(np.nextafter(POISSON_LAM_MAX, np.inf))


@pytest.mark.parametrize("ws,match", [
    (ws_1bin([2e19], [], [1.0]), r"^pars: the expected rate of main bin 0 .* 2e\+19"),
    (ws_1bin([1e10], [{"name": "sh", "type": "shapesys", "data": [1.0]}], [1e10]),
     r"^pars: a Poisson \(shapesys\) constraint rate"),
])
def test_toys_refuse_rates_above_the_limit(ws, match):
    m = nextstat.from_pyhf(ws)
    with pytest.raises(ValueError, match=match):
        sample_toys(m, m.suggested_init(), 3)
    with pytest.raises(ValueError, match=match):
        fit_toys(m, m.suggested_init(), n_toys=3, progress=False)
    m_ok = nextstat.from_pyhf(ws_1bin([1e18], [], [1e18]))
    assert sample_toys(m_ok, m_ok.suggested_init(), 2).shape == (2, 1)


# ================================================================ torch layer
@pytest.fixture(scope="module")
def torch_session():
    torch = pytest.importorskip("torch")
    from nextstat.builders import build_workspace_from_histograms
    from nextstat.torch import SignificanceLoss

    ws = build_workspace_from_histograms([5.0, 10.0], {"bkg": [50.0, 20.0]}, data=[55.0, 30.0])
    return torch, SignificanceLoss(nextstat.from_pyhf(ws), device="cpu")


def _entry_points(loss_fn):
    import nextstat.torch as nt

    s = loss_fn.session
    return {
        "forward": loss_fn, "z0": loss_fn.z0, "q0": loss_fn.q0,
        "profiled_q0_loss": lambda h: nt.profiled_q0_loss(h, s),
        "batch_profiled_q0_loss": lambda h: nt.batch_profiled_q0_loss(
            {k: v[None] for k, v in h.items()} if isinstance(h, dict) else h[None], s),
        "profiled_qmu_loss": lambda h: nt.profiled_qmu_loss(h, s, 1.0),
        "profiled_cls_loss": lambda h: nt.profiled_cls_loss(h, s, 1.0),
        "signal_jacobian": lambda h: nt.signal_jacobian(h, s),
        "signal_jacobian_numpy": lambda h: nt.signal_jacobian_numpy(h, s),
    }


ENTRIES = ["forward", "z0", "q0", "profiled_q0_loss", "batch_profiled_q0_loss", "profiled_qmu_loss",
           "profiled_cls_loss", "signal_jacobian", "signal_jacobian_numpy"]


def _all_finite(out: Any) -> bool:
    outs = out if isinstance(out, list) else [out]
    return all(np.all(np.isfinite(np.asarray(o.detach() if hasattr(o, "detach") else o))) for o in outs)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_torch_entry_points_refuse_non_yields(torch_session, entry, bad):
    torch, loss_fn = torch_session
    call = _entry_points(loss_fn)[entry]
    good = torch.tensor([5.0, 10.0], dtype=torch.float64)
    assert _all_finite(call(good))
    h = good.clone()
    h[1] = bad
    with pytest.raises(ValueError, match=r"^histogram: expected finite yields >= 0, got .* at index \[(0, )?1\]"):
        call(h)
    with pytest.raises(ValueError, match=r"^histogram\['bkg'\]: expected finite yields >= 0"):
        call({"signal": good, "bkg": torch.tensor([50.0, bad], dtype=torch.float64)})


@pytest.mark.parametrize("value", [1e20, 1e300])
def test_torch_loss_never_returns_a_non_finite_value(torch_session, value):
    torch, loss_fn = torch_session
    h = torch.tensor([value, 1.0], dtype=torch.float64, requires_grad=True)
    for call in _entry_points(loss_fn).values():
        try:
            out = call(h)
        except ValueError as exc:
            assert str(exc).startswith("histogram: the statistic or its gradient is not finite")
            continue
        assert _all_finite(out)
    with pytest.raises(ValueError, match="^histogram: the statistic or its gradient is not finite"):
        loss_fn(h)


# --- fit diagnostics (issue 15): wrong types and values are refused naming the argument ----------


@pytest.fixture(scope="module")
def diagnostics_inputs():
    from conftest import EXAMPLE

    model = nextstat.from_pyhf(EXAMPLE)
    fit = nextstat.fit(model)
    return model, fit, nextstat.prediction(model, fit)


def _diagnostics_calls():
    from nextstat import plots
    from nextstat.interpret import grouped_impacts, rank_impact

    return [
        (lambda m, f, p: nextstat.prediction(Path("model.json")), TypeError, "^model: expected a nextstat.Model"),
        (lambda m, f, p: nextstat.minos({"channels": []}), TypeError, "^model: expected"),
        (lambda m, f, p: nextstat.goodness_of_fit(None), TypeError, "^model: expected"),
        (lambda m, f, p: grouped_impacts("ws.json"), TypeError, "^model: expected"),
        (lambda m, f, p: rank_impact(f, method="hesse"), TypeError, "^model: expected"),
        (lambda m, f, p: nextstat.minos(m, 5), TypeError, "^parameters: expected a parameter name"),
        (lambda m, f, p: grouped_impacts(m, fit_result=f.to_dict()), TypeError, "^fit_result: expected a nextstat"),
        (lambda m, f, p: rank_impact(m, fit_result="fit", method="hesse"), TypeError, "^fit_result: expected"),
        (lambda m, f, p: plots.plot_data_mc(f), TypeError, "^prediction: expected a nextstat PredictionResult"),
        (lambda m, f, p: plots.plot_data_mc(p, ncols=1.5), ValueError, "^ncols: expected an integer"),
        (lambda m, f, p: plots.plot_data_mc(p, ncols="2"), ValueError, "^ncols: expected an integer"),
        (lambda m, f, p: plots.draw_data_mc(None, ["a"], [[1.0, 2.0]], [0.1, 0.1], [-1.0, 2.0]), ValueError,
         "^data: expected finite counts"),
        (lambda m, f, p: plots.plot_correlation(f, threshold=2.0), ValueError, r"^threshold: expected a number in \[0, 1\]"),
        (lambda m, f, p: plots.plot_correlation(f, threshold=float("nan")), ValueError, "^threshold: expected"),
    ]


@pytest.mark.parametrize("k", range(14))
def test_diagnostics_refuse_naming_the_argument(diagnostics_inputs, k):
    calls = _diagnostics_calls()
    assert len(calls) == 14
    call, exc, match = calls[k]
    with pytest.raises(exc, match=match):
        call(*diagnostics_inputs)


def test_plot_data_mc_takes_one_channel_name(diagnostics_inputs):
    from nextstat.plots import plot_data_mc

    _, _, pred = diagnostics_inputs
    fig = plot_data_mc(pred, channels="SR", style=None)
    assert [a.get_title(loc="right") for a in fig.axes if a.get_title(loc="right")] == ["SR"]


# --- the inference entry points refuse what is not a compiled model (was AttributeError) ------------

INFERENCE_CALLS = {
    "fit": lambda bad: nextstat.fit(bad),
    "hypotest": lambda bad: nextstat.hypotest(bad, 1.0),
    "upper_limit": lambda bad: nextstat.upper_limit(bad),
    "profile_scan": lambda bad: nextstat.profile_scan(bad, [0.5, 1.0]),
    "fit_toys": lambda bad: nextstat.fit_toys(bad, [1.0], n_toys=2),
    "hypotest_toys": lambda bad: nextstat.hypotest_toys(bad, 1.0, n_toys=2),
}


@pytest.mark.parametrize("bad", ["ws.json", Path("ws.json"), {"channels": []}, None], ids=["str", "path", "dict", "none"])
@pytest.mark.parametrize("name", sorted(INFERENCE_CALLS))
def test_inference_entry_points_refuse_a_non_model(name, bad):
    with pytest.raises(TypeError, match=r"^model: expected a nextstat.Model \(nextstat.from_pyhf\(\.\.\.\)\), got "):
        INFERENCE_CALLS[name](bad)
