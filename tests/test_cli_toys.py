"""``nextstat toys``, ``nextstat scan-patches`` and ``nextstat hypotest --toys``: the numbers are the
library's (same seed, same toys), patch scans are pyhf's CLs, and the CLI's error policy holds."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import nextstat
from nextstat import cli, examples, from_pyhf

pyhf = pytest.importorskip("pyhf")

EXAMPLE = str(examples.path("simple"))


def _run(args: list[str]):
    return CliRunner().invoke(cli.main, args, catch_exceptions=False)


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --------------------------------------------------------------------------- toys


def test_toys_are_fit_toys() -> None:
    payload = _json(_run(["toys", EXAMPLE, "--n-toys", "40", "--seed", "3", "--mu", "0.5", "--json", "--no-progress"]))
    model = from_pyhf(examples.simple_workspace())
    pars = model.suggested_init()
    pars[model.poi_index] = 0.5
    ref = nextstat.fit_toys(model, pars, n_toys=40, seed=3, progress=False)
    assert payload["pars"] == pars.tolist()
    np.testing.assert_array_equal(payload["bestfit"], ref.bestfit)  # the same toys, fitted the same way
    np.testing.assert_array_equal(payload["nll"], ref.nll)
    assert payload["converged"] == ref.converged.tolist() and payload["seed"] == 3
    text = _run(["toys", EXAMPLE, "--n-toys", "40", "--seed", "3", "--mu", "0.5", "--no-progress"]).output
    poi = ref.bestfit[ref.converged, model.poi_index]
    assert text.startswith("40 toys (seed 3) at mu = 0.5, fitted on cpu in ")
    assert f"mean {poi.mean():.4g}, std {poi.std():.4g}, median {np.median(poi):.4g}" in text


def test_toys_without_poi(tmp_path: Path) -> None:
    result = _run(["toys", EXAMPLE, "--poi", "none", "--n-toys", "5", "--no-progress"])
    assert result.exit_code == 0 and "best-fit" not in result.output
    refused = _run(["toys", EXAMPLE, "--poi", "none", "--mu", "1", "--n-toys", "5"])
    assert refused.exit_code == 2 and "--mu needs a model with a parameter of interest" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert _run(["toys", EXAMPLE, "--n-toys", "0"]).exit_code == 2


# --------------------------------------------------------------------------- hypotest --toys


@pytest.mark.parametrize("mu", [1.0, 0.0])
def test_hypotest_toys_is_hypotest_toys(mu: float) -> None:
    args = ["hypotest", EXAMPLE, "--mu", str(mu), "--toys", "60", "--seed", "4", "--no-progress"]
    payload = _json(_run([*args, "--json"]))
    model = from_pyhf(examples.simple_workspace())
    ref = nextstat.hypotest_toys(model, mu, n_toys=60, seed=4, test_stat="q0" if mu == 0 else "qtilde",
                                 progress=False)
    assert payload == json.loads(cli.to_strict_json(ref.to_dict()))
    assert payload["calculator"] == "toybased" and payload["n_toys"] == [60, 60]
    text = _run(args).output
    if mu == 0:
        assert text.startswith(f"Discovery test (q0): q0 = {ref.q_obs:.6g}, p0 = {ref.p0:.6g} +- ")
    else:
        assert f"CLs = {ref.cls:.6g} +- {ref.cls_error:.2g}" in text and "[60 s+b / 60 b toys, seed 4" in text


def test_hypotest_without_toys_is_asymptotic() -> None:
    payload = _json(_run(["hypotest", EXAMPLE, "--json"]))
    ref = nextstat.hypotest(from_pyhf(examples.simple_workspace()), 1.0)
    assert payload["calculator"] == "asymptotics" and payload["cls"] == pytest.approx(ref.cls, rel=1e-12)


# --------------------------------------------------------------------------- scan-patches


def _signal(scale: float) -> list:
    data = [x * scale for x in examples.simple_workspace()["channels"][0]["samples"][0]["data"]]
    return [{"op": "replace", "path": "/channels/0/samples/0/data", "value": data}]


def _patchset(background: dict) -> dict:
    return {"metadata": {"name": "signal_grid", "description": "scaled signals",
                         "digests": {"sha256": pyhf.utils.digest(background)}, "labels": ["scale"],
                         "references": {"hepdata": "ins0000001"}},
            "patches": [{"metadata": {"name": f"scale_{int(10 * s)}", "values": [s]}, "patch": _signal(s)}
                        for s in (0.5, 2.0)],
            "version": "1.0.0"}


def test_scan_patches_matches_pyhf(tmp_path: Path) -> None:
    background = examples.simple_workspace()
    (tmp_path / "patchset.json").write_text(json.dumps(_patchset(background)))
    (tmp_path / "patch.one.json").write_text(json.dumps(_signal(1.5)))
    rows = _json(_run(["scan-patches", EXAMPLE, str(tmp_path / "patchset.json"), str(tmp_path / "patch.one.json"),
                       "--json", "--no-progress"]))
    assert [r["patch"] for r in rows] == ["scale_5", "scale_20", "patch.one.json"]
    ref = nextstat.scan_patches(background, {"scale_5": _signal(0.5), "scale_20": _signal(2.0),
                                             "patch.one.json": _signal(1.5)}, progress=False)
    assert rows == json.loads(cli.to_strict_json(ref.to_dict(orient="records")))
    # pyhf 0.7.6 live: asymptotic qtilde CLs of one patch, observed and expected
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(copy.deepcopy(background))
    pm = ws.model(patches=[_signal(2.0)])
    obs, band = pyhf.infer.hypotest(1.0, ws.data(pm), pm, test_stat="qtilde", return_expected_set=True)
    assert rows[1]["cls_obs"] == pytest.approx(float(obs), rel=1e-4)
    np.testing.assert_allclose([rows[1][k] for k in ("cls_exp_m2", "cls_exp_m1", "cls_exp", "cls_exp_p1",
                                                     "cls_exp_p2")], np.asarray(band, float), rtol=1e-4)
    text = _run(["scan-patches", EXAMPLE, str(tmp_path / "patch.one.json"), "--no-progress"]).output
    assert text.splitlines()[0].split() == ["patch", "cls_obs", "cls_exp_m2", "cls_exp_m1", "cls_exp", "cls_exp_p1",
                                            "cls_exp_p2", "mu_hat", "converged"]


@pytest.mark.parametrize(("choice", "executor"), [("processes", "process"), ("ray", "ray"), ("serial", "serial")])
def test_scan_patches_executor_choice(tmp_path: Path, choice: str, executor: str) -> None:
    (tmp_path / "p.json").write_text(json.dumps(_signal(2.0)))
    table = pd.DataFrame([{"patch": "p.json", "cls_obs": 0.1}])
    with mock.patch("nextstat.scan_patches", autospec=True, return_value=table) as scan:
        result = _run(["scan-patches", EXAMPLE, str(tmp_path / "p.json"), "--executor", choice, "--n-workers", "3",
                       "--mu", "2", "--test-stat", "q", "--no-progress"])
    assert result.exit_code == 0, result.output
    (args, kwargs), = scan.call_args_list
    assert args == (Path(EXAMPLE), {"p.json": _signal(2.0)})
    assert kwargs == {"mu": 2.0, "executor": executor, "progress": False, "test_stat": "q", "n_workers": 3}


def test_scan_patches_errors(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(_signal(2.0)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/p.json").write_text(json.dumps(_signal(3.0)))
    twice = _run(["scan-patches", EXAMPLE, str(tmp_path / "p.json"), str(tmp_path / "sub/p.json")])
    assert twice.exit_code == 1 and "patch name 'p.json' appears twice" in twice.output
    assert _run(["scan-patches", EXAMPLE]).exit_code == 2  # no patches
    assert _run(["scan-patches", EXAMPLE, str(tmp_path / "p.json"), "--executor", "threads"]).exit_code == 2
    assert _run(["scan-patches", EXAMPLE, str(tmp_path / "p.json"), "--mu", "0"]).exit_code == 2
    not_patch = _run(["scan-patches", EXAMPLE, EXAMPLE])
    assert not_patch.exit_code == 1 and not_patch.output.startswith("Error: ")
    assert len(not_patch.output.strip().splitlines()) == 1
