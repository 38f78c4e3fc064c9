"""Notebook representations of the result containers: ``_repr_html_`` (golden files under
tests/golden/), ``to_dataframe`` and the shared HTML helpers; ``fit(hesse=False)`` errors.

The golden files are the exact HTML of results built from fixed numbers; after an intended
change of the rendering, rewrite them with ``NEXTSTAT_UPDATE_GOLDEN=1 pytest tests/test_repr.py``
and look at the diff.
"""

from __future__ import annotations

import html.parser
import os
from pathlib import Path

import numpy as np
import pytest

import nextstat
from nextstat._html import html_summary, html_table, pdg_round
from nextstat.interpret import GroupedImpactResult, RankingResult
from nextstat.interpret.ranking import COLUMNS
from nextstat.results import (
    FitResult,
    HypotestResult,
    ProfileScanResult,
    ToyDistributions,
    ToyFitResults,
    UpperLimitResult,
    _html_table,
)

GOLDEN = Path(__file__).parent / "golden"


def fit_result(errors: bool = True) -> FitResult:
    cov = np.array([[0.1194, 0.001, 0.0], [0.001, 0.000151, 0.0], [0.0, 0.0, 0.0]])
    err = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(err, err) > 0, cov / np.outer(err, err), 0.0)
    np.fill_diagonal(corr, 1.0)
    return FitResult(
        bestfit=np.array([1.2345678, 0.98765, 1.0]), errors=err if errors else None,
        covariance=cov if errors else None, correlation=corr if errors else None,
        parameter_names=("mu", "bkg_norm", "lumi<1>"), poi_index=0, nll=12.3456789, edm=1.2e-12, converged=True,
        n_iter=5, time_ms=1.5, message="converged", fixed=np.array([False, False, True]),
        at_limit=np.array([False, True, False]),
    )


def ranking() -> RankingResult:
    base = dict(zip(COLUMNS, [1, "jes", 0.21, 0.1, -0.11, 0.15, -0.16, 0.3, 0.8, 0.3, 0.8, 1.0, 0.0, True, False,
                              [], True]))
    second = {**base, "rank": 2, "name": "norm", "total_impact": 0.05, "prefit_delta_mu_up": None,
              "prefit_delta_mu_down": None, "pull": None, "constraint": None, "constrained": False,
              "clipped": True, "clipped_shifts": ["postfit_down"], "converged": False}
    return RankingResult([base, second], method="hesse", poi_name="mu", mu_hat=1.2345, mu_error=0.34)


RESULTS = {
    "fit": fit_result,
    "fit_no_hesse": lambda: fit_result(errors=False),
    "hypotest_cls": lambda: HypotestResult(
        mu_test=1.0, test_stat="qtilde", q_obs=1.25, mu_hat=0.4, q_asimov=3.1, cls=0.123456, clsb=0.05,
        clb=0.405, cls_expected=np.array([0.01, 0.03, 0.08, 0.2, 0.4])),
    "hypotest_q0_toys": lambda: HypotestResult(
        mu_test=0.0, test_stat="q0", q_obs=9.0, mu_hat=1.3, calculator="toybased", clsb=0.0013, p0=0.0013,
        clsb_error=0.0004, significance=3.01, p0_expected=0.01, significance_expected=2.33, n_toys=(8000, 7990),
        n_failed_toys=10, converged=False, failed_fits=("toys",)),
    "limit": lambda: UpperLimitResult(
        observed=2.5, expected=np.array([1.1, 1.5, 2.0, 2.8, 3.9]), alpha=0.05, mu_values=np.array([3.0, 1.0, 2.0]),
        cls_observed=np.array([0.03, 0.4, 0.1]), cls_expected=np.tile([0.01, 0.02, 0.05, 0.1, 0.2], (3, 1)),
        found=np.array([True, True, True, True, True, False])),
    "scan": lambda: ProfileScanResult(
        mu_values=np.array([0.0, 1.0, 2.0]), nll=np.array([5.0, 4.5, 5.5]), twice_delta_nll=np.array([1.0, 0.0, 2.0]),
        mu_hat=1.0, nll_min=4.5, bestfit=np.zeros((3, 2)), converged=np.array([True, True, False])),
    "toy_fits": lambda: ToyFitResults(
        bestfit=np.array([[1.0, 0.9], [1.2, 1.1], [np.nan, 1.0]]), nll=np.array([3.0, 4.0, 5.0]),
        converged=np.array([True, True, False]), parameter_names=("mu", "b"), seed=3, device="cpu", time_s=0.25,
        n_iter=np.array([4, 5, 200]), toy_index=np.array([10, 11, 12]), pars=np.array([1.0, 1.0])),
    "toy_distributions": lambda: ToyDistributions(
        mu_test=1.0, test_stat="qtilde", q_obs=1.5, mu_hat=0.6, observed_converged=True,
        q_sb=np.array([0.0, 2.0, 3.0]), ok_sb=np.array([True, True, False]), index_sb=np.arange(3),
        q_b=np.array([1.0, 4.0]), ok_b=np.array([True, True]), index_b=np.array([0, 2]),
        pars_sb=np.array([1.0, 1.0]), pars_b=np.array([0.0, 1.0]), parameter_names=("mu", "b"), seed=1),
    "ranking": ranking,
    "grouped": lambda: GroupedImpactResult(
        poi_name="mu", mu_hat=1.07, total=0.4644, stat=0.4037, groups=("staterror", "lumi"),
        members=(("staterror_SR[0]", "staterror_SR[1]"), ("lumi",)), impacts=np.array([0.1032, 0.0404]),
        sigma_without=np.array([0.4528, 0.4627])),
}


class _Balanced(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_repr_html_golden(name) -> None:
    text = RESULTS[name]()._repr_html_()
    parser = _Balanced()
    parser.feed(text)
    parser.close()
    assert parser.stack == [] and text.startswith('<div class="nextstat-result">')
    path = GOLDEN / f"{name}.html"
    if os.environ.get("NEXTSTAT_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == path.read_text(encoding="utf-8"), f"{path.name}: rendering changed (see module docstring)"


def test_repr_html_content() -> None:
    fit = RESULTS["fit"]()._repr_html_()
    assert "1.23 &plusmn;" not in fit and ">1.23<" in fit and ">0.35<" in fit  # PDG: 0.3455 -> 0.35
    assert "lumi&lt;1&gt;" in fit and ">fixed<" in fit and ">at limit<" in fit
    no_hesse = RESULTS["fit_no_hesse"]()._repr_html_()
    assert "positive definite" not in no_hesse and ">-<" in no_hesse
    bad = RESULTS["hypotest_q0_toys"]()._repr_html_()
    assert "color:#b00" in bad and "0.0013 \u00b1 0.0004" in bad
    assert "not bracketed" in RESULTS["limit"]()._repr_html_()
    assert "not converged" in RESULTS["ranking"]()._repr_html_()


def test_to_dataframe() -> None:
    df = RESULTS["fit"]().to_dataframe()
    assert list(df.index) == ["mu", "bkg_norm", "lumi<1>"] and list(df.columns) == ["value", "error", "fixed",
                                                                                     "at_limit"]
    assert RESULTS["fit_no_hesse"]().to_dataframe()["error"].isna().all()
    lim = RESULTS["limit"]().to_dataframe()
    assert list(lim["mu"]) == [1.0, 2.0, 3.0] and list(lim["cls_observed"]) == [0.4, 0.1, 0.03]
    assert list(lim.columns) == ["mu", "cls_observed", "cls_exp_m2", "cls_exp_m1", "cls_exp_median", "cls_exp_p1",
                                 "cls_exp_p2"]
    scan = RESULTS["scan"]().to_dataframe()
    assert list(scan.columns) == ["mu", "nll", "twice_delta_nll", "converged"]
    toys = RESULTS["toy_fits"]().to_dataframe()
    assert list(toys.index) == [10, 11, 12] and list(toys.columns) == ["mu", "b", "nll", "converged", "n_iter"]
    dist = RESULTS["toy_distributions"]().to_dataframe()
    assert list(dist["hypothesis"]) == ["s+b"] * 3 + ["b"] * 2 and list(dist["toy"]) == [0, 1, 2, 0, 2]
    rank = RESULTS["ranking"]().to_dataframe()
    assert list(rank.columns) == list(COLUMNS) and np.isnan(rank["pull"].iloc[1])


def test_html_helpers() -> None:
    assert _html_table is html_table  # the helper other results use, importable from nextstat.results
    t = html_table([("a<b", None), (1.23456789, True)], ["x", "y"], caption="c&d", bad=[False, True])
    assert "a&lt;b" in t and "&ndash;" in t and "1.23457" in t and "c&amp;d" in t and t.count("#fdd") == 1
    with pytest.raises(ValueError, match=r"rows\[0\]: expected 2 cells"):
        html_table([(1,)], ["x", "y"])
    many = html_table(([i] for i in range(70)), ["i"], max_rows=5)
    assert many.count("<tr>") == 1 + 5 + 1 and "65 more rows" in many
    assert pdg_round(0.0, 0.0) == ("0", "0") and pdg_round(5.0, float("inf")) == ("5", "inf")
    assert pdg_round(123456.0, 789.0) == ("123500", "800")
    assert pdg_round(1.0, 0.0996) == ("1.00", "0.10")
    assert "<div" in html_summary("t", {})


def test_fit_without_hesse_reports_no_errors() -> None:
    model = nextstat.from_pyhf(nextstat.examples.simple_workspace())
    res = nextstat.fit(model, hesse=False)
    assert res.errors is None and res.covariance is None and res.correlation is None
    assert res.mu_error is None and res.error("mu") is None
    assert "mu" in str(res) and res.to_dict()["errors"] is None
    with_hesse = nextstat.fit(model)
    np.testing.assert_array_equal(res.bestfit, with_hesse.bestfit)
    assert with_hesse.errors is not None and with_hesse.mu_error > 0
