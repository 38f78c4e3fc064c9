"""CLI: nextstat yields, minos, gof, and plot data-mc (plus --top of the pulls and corr plots)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner, Result

import nextstat
from nextstat import cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "python" / "nextstat" / "data" / "simple.json"


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON token {name}")


def run(args: list) -> Result:
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def model():
    return nextstat.from_pyhf(EXAMPLE)


def test_yields_json_equals_library(model):
    for flags, fit in (([], nextstat.fit(model)), (["--prefit"], None)):
        r = run(["yields", EXAMPLE, "--json", *flags])
        assert r.exit_code == 0, r.output
        payload = json.loads(r.stdout, parse_constant=_refuse_constant)
        ref = nextstat.prediction(model, fit)
        assert payload["label"] == ref.label
        np.testing.assert_allclose(payload["total_stdev"], ref.total_stdev, rtol=1e-12)
        np.testing.assert_allclose(payload["yields"], ref.yields, rtol=1e-12)


@pytest.mark.parametrize("fmt, marker", [("text", "post-fit yields in SR"), ("markdown", "| sample | bin 0 |"),
                                         ("latex", "\\begin{tabular}")])
def test_yields_formats(model, fmt, marker):
    r = run(["yields", EXAMPLE, "--format", fmt])
    assert r.exit_code == 0, r.output
    assert marker in r.stdout
    assert r.stdout.strip() == nextstat.prediction(model, nextstat.fit(model)).table(fmt)


def test_yields_output_file(tmp_path):
    out = tmp_path / "y.json"
    r = run(["yields", EXAMPLE, "--prefit", "--output-file", out])
    assert r.exit_code == 0 and json.loads(out.read_text())["label"] == "pre-fit"


def test_minos(model):
    r = run(["minos", EXAMPLE, "--parameter", "mu", "--parameter", "lumi", "--json"])
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout, parse_constant=_refuse_constant)
    ref = nextstat.minos(model, ["mu", "lumi"])
    for name in ("mu", "lumi"):
        np.testing.assert_allclose(payload["errors"][name], ref.errors[name], rtol=1e-9)
    assert payload["converged"] is True
    text = run(["minos", EXAMPLE]).stdout
    assert "MINOS" in text and "mu" in text and "lumi" not in text  # default: the POI


def test_minos_all_calls_library_with_free_parameters(model):
    with mock.patch("nextstat.minos", autospec=True, return_value=nextstat.minos(model)) as m:
        r = run(["minos", EXAMPLE, "--all"])
    assert r.exit_code == 0, r.output
    names = m.call_args.args[1]
    assert names == [n for n, f in zip(model.parameter_names, model.fixed_params) if not f]


def test_minos_usage_and_runtime_errors():
    r = run(["minos", EXAMPLE, "--all", "--parameter", "mu"])
    assert r.exit_code == 2 and "not both" in r.stderr
    r = run(["minos", EXAMPLE, "--parameter", "nope"])
    assert r.exit_code == 1 and r.stderr.startswith("Error: parameters: 'nope'") and len(r.stderr.splitlines()) == 1


def test_gof(model):
    r = run(["gof", EXAMPLE, "--json"])
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout, parse_constant=_refuse_constant)
    assert payload["pvalue"] == pytest.approx(nextstat.goodness_of_fit(model), rel=1e-12)
    assert payload["dof"] == 2 and payload["converged"] is True
    assert "p = " in run(["gof", EXAMPLE]).stdout


@pytest.mark.parametrize("flags", [[], ["--prefit", "--log-scale"]])
def test_plot_data_mc(tmp_path, flags):
    out = tmp_path / "dm.png"
    r = run(["plot", "data-mc", EXAMPLE, "-o", out, *flags])
    assert r.exit_code == 0, r.output
    img = matplotlib.image.imread(out)
    assert img.shape[1] > img.shape[0] and float(np.std(img[..., :3])) > 0.05


def test_plot_data_mc_passes_the_prediction(tmp_path, model):
    from matplotlib.figure import Figure

    with mock.patch("nextstat.plots.plot_data_mc", autospec=True, return_value=Figure()) as m:
        r = run(["plot", "data-mc", EXAMPLE, "-o", tmp_path / "x.png", "--prefit", "--log-scale"])
    assert r.exit_code == 0, r.output
    pred = m.call_args.args[0]
    assert pred.label == "pre-fit" and m.call_args.kwargs == {"log_scale": True}


def test_plot_top(tmp_path):
    for kind in ("pulls", "corr"):
        out = tmp_path / f"{kind}.png"
        r = run(["plot", kind, EXAMPLE, "-o", out, "--top", 3])
        assert r.exit_code == 0, r.output
        assert out.is_file()
    r = run(["plot", "brazil", EXAMPLE, "-o", tmp_path / "b.png", "--top", 3])
    assert r.exit_code == 2 and "--top applies to the pulls and corr plots only" in r.stderr
    r = run(["plot", "pulls", EXAMPLE, "-o", tmp_path / "b.png", "--prefit"])
    assert r.exit_code == 2 and "--prefit applies to the data-mc plot only" in r.stderr
    assert not (tmp_path / "b.png").exists()
