"""Tests for nextstat.plots.plot_from_model: each kind fits the model and draws a non-blank figure."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

import nextstat
from nextstat.plots import plot_from_model
from nextstat.plots.from_model import KINDS


@pytest.fixture(scope="module")
def model():
    from conftest import EXAMPLE

    return nextstat.from_pyhf(EXAMPLE)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_renders(model, kind: str) -> None:
    fig = plot_from_model(kind, model)
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    buf.seek(0)
    pixels = matplotlib.image.imread(buf, format="png")
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10


def test_contents(model) -> None:
    result = nextstat.fit(model)
    pulls = plot_from_model("pulls", model).axes[0]
    labels = [t.get_text() for t in pulls.get_yticklabels()]
    assert "mu" not in labels and "jes" in labels
    brazil = plot_from_model("brazil", model).axes[0]
    assert any(line.get_gid() == "observed_limit" for line in brazil.lines)
    assert brazil.get_xlim()[0] == 0.0
    profile = plot_from_model("profile", model).axes[0]
    lo, hi = profile.get_xlim()
    assert lo <= result.mu <= hi
    yields = plot_from_model("yields", model)
    assert [a.get_title() for a in yields.axes] == model.channels
    assert yields.get_suptitle() == "post-fit"


def test_pulls_of_a_large_model_keep_the_largest() -> None:
    """Above PULLS_TOP_ABOVE constrained parameters only the PULLS_TOP_N largest |pull| are
    drawn (issue 15: the four-top model's 242 gave a 10,361-pixel-tall plot)."""
    from nextstat.builders import build_workspace_from_histograms
    from nextstat.plots.from_model import PULLS_TOP_ABOVE, PULLS_TOP_N

    n = PULLS_TOP_ABOVE + 5
    rng = np.random.default_rng(1)
    bkg = {f"b{k}": list(rng.uniform(20.0, 40.0, 3)) for k in range(n)}
    total = np.sum(list(bkg.values()), axis=0)
    ws = build_workspace_from_histograms([5.0, 8.0, 6.0], bkg, data=list(np.round(total * [1.3, 0.8, 1.1])),
                                         normsys={f"b{k}": {f"n{k}": (0.9, 1.1)} for k in range(n)})
    big = nextstat.from_pyhf(ws)
    fit = nextstat.fit(big)
    labels = [t.get_text() for t in plot_from_model("pulls", big).axes[0].get_yticklabels()]
    pulls = {f"n{k}": abs(fit.value(f"n{k}")) for k in range(n)}
    assert labels == sorted(pulls, key=lambda k: -pulls[k])[:PULLS_TOP_N]


def test_unknown_kind(model) -> None:
    with pytest.raises(ValueError, match="kind: expected one of"):
        plot_from_model("ranking", model)
