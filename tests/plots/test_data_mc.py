"""Data/MC plots (nextstat.plots.data_mc), and top_n of the pulls and correlation plots."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from conftest import EXAMPLE, all_modifiers_workspace, needs_workspaces
from matplotlib.figure import Figure
from matplotlib.legend import Legend

import nextstat
from nextstat import testing
from nextstat.plots import (
    draw_correlation,
    draw_data_mc,
    draw_pulls,
    plot_correlation,
    plot_data_mc,
    plot_pulls,
)
from nextstat.plots.data_mc import poisson_interval, sample_colors


def png(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    buf.seek(0)
    return matplotlib.image.imread(buf)


def not_blank(img: np.ndarray) -> bool:
    return float(np.std(img[..., :3])) > 0.05


# --- Garwood intervals and colours ---------------------------------------------------------------

def test_poisson_interval_equals_mplhep_and_definition():
    from mplhep.error_estimation import poisson_interval as mplhep_interval
    from scipy.stats import poisson

    n = np.array([0.0, 1.0, 3.0, 10.0, 57.0, 1234.0])
    lo, hi = poisson_interval(n)
    ref = mplhep_interval(n, n)  # unweighted counts: Garwood
    np.testing.assert_allclose(lo, ref[0], rtol=1e-10)
    np.testing.assert_allclose(hi, ref[1], rtol=1e-10)
    # definition: P(N >= n | lo) = P(N <= n | hi) = (1 - 0.6827) / 2
    tail = (1 - 0.682689492137086) / 2
    np.testing.assert_allclose(poisson.sf(n[1:] - 1, lo[1:]), tail, rtol=1e-8)
    np.testing.assert_allclose(poisson.cdf(n, hi), tail, rtol=1e-8)
    assert lo[0] == 0.0
    with pytest.raises(ValueError, match="counts"):
        poisson_interval([-1.0])
    with pytest.raises(ValueError, match="cl"):
        poisson_interval([1.0], cl=1.0)


@pytest.mark.parametrize("n", [1, 3, 10, 11, 19, 20, 21, 59, 60, 61, 83, 250])
def test_sample_colors_distinct(n):
    colours = sample_colors(n)
    assert len(colours) == n
    rgb = np.array([c[:3] for c in colours])
    assert len({tuple(np.round(c, 4)) for c in rgb}) == n
    if n <= 60:  # from the tab palettes: clearly apart
        d = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(n)
        assert d.min() > 0.03


# --- the drawer ----------------------------------------------------------------------------------

YIELDS = np.array([[10.0, 20.0, 0.0], [30.0, 15.0, 0.0], [2.0, 3.0, 0.0]])
DATA = np.array([45.0, 36.0, 0.0])
UNC = np.array([4.0, 3.0, 1.0])


def test_draw_data_mc_content():
    fig = draw_data_mc(None, ["a", "b", "c"], YIELDS, UNC, DATA, label="pre-fit", channel="SR")
    assert isinstance(fig, Figure) and not_blank(png(fig))
    main, ratio = fig.axes
    assert main.get_title(loc="left") == "pre-fit" and main.get_title(loc="right") == "SR"
    assert main.get_yscale() == "linear" and ratio.get_ylabel() == "data / model"
    # legend: data, samples from the top of the stack down, the band; placed beside the axes
    legend = main.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["data", "c", "b", "a", "pre-fit uncertainty"]
    fig.canvas.draw()
    box, lbox = main.get_window_extent(), legend.get_window_extent()
    assert lbox.x0 >= box.x1  # outside the data
    # stacked fills: each sample from the cumulative sum below it to the one including it
    fills = main.patches[:3]
    cum = np.cumsum(YIELDS, axis=0)
    for k, patch in enumerate(fills):
        np.testing.assert_allclose(patch.get_data().values, cum[k])
        np.testing.assert_allclose(patch.get_data().baseline, cum[k] - YIELDS[k])
    # data points with Garwood errors (the empty bin's upper error is 1.84)
    lo, hi = poisson_interval(DATA)
    data_bars = main.containers[-1]
    np.testing.assert_allclose(data_bars.lines[0].get_data()[1], DATA)
    segments = data_bars.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[1, 1] for seg in segments], hi)
    np.testing.assert_allclose([seg[0, 1] for seg in segments], lo)
    # the bin without prediction gets no ratio point
    rx, ry = ratio.containers[-1].lines[0].get_data()
    np.testing.assert_allclose(ry, DATA[:2] / YIELDS.sum(axis=0)[:2])


def test_draw_data_mc_log_edges_and_axes():
    fig = Figure()
    pair = fig.subplots(2, 1, sharex=True)
    edges = [0.0, 10.0, 30.0, 100.0]
    out = draw_data_mc(edges, ["a", "b", "c"], YIELDS, UNC, DATA, log_scale=True, legend=False, style=None,
                       xlabel="m [GeV]", ax=tuple(pair))
    assert out is fig
    assert pair[0].get_yscale() == "log" and pair[0].get_ylim()[0] > 0
    assert pair[1].get_xlabel() == "m [GeV]" and pair[1].get_xlim() == (0.0, 100.0)
    assert pair[0].get_legend() is None
    assert not_blank(png(fig))


def test_draw_data_mc_does_not_touch_global_style():
    before = dict(matplotlib.rcParams)
    draw_data_mc(None, ["a", "b", "c"], YIELDS, UNC, DATA, style="CMS")
    assert dict(matplotlib.rcParams) == before


@pytest.mark.parametrize("kwargs, match", [
    (dict(yields=np.ones((2, 3))), "yields must have shape"),
    (dict(data=np.ones(2)), "data must have shape"),
    (dict(total_stdev=-np.ones(3)), "total_stdev"),
    (dict(bin_edges=[0, 2, 1, 3]), "increasing"),
    (dict(colors=["red"]), "colors"),
    (dict(style="NOPE"), "style"),
])
def test_draw_data_mc_refusals(kwargs, match):
    args = dict(bin_edges=None, sample_names=["a", "b", "c"], yields=YIELDS, total_stdev=UNC, data=DATA)
    style = kwargs.pop("style", "ATLAS")
    colors = kwargs.pop("colors", None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_data_mc(args["bin_edges"], args["sample_names"], args["yields"], args["total_stdev"], args["data"],
                     style=style, colors=colors)


# --- the wrapper ---------------------------------------------------------------------------------

def test_plot_data_mc_from_prediction():
    model = nextstat.from_pyhf(all_modifiers_workspace())
    fit = nextstat.fit(model)
    for pred in (nextstat.prediction(model), nextstat.prediction(model, fit)):
        fig = plot_data_mc(pred, bin_edges={"CR": [0.0, 1.0, 3.0]})
        assert not_blank(png(fig))
        mains = [a for a in fig.axes if a.get_title(loc="left")]
        assert [a.get_title(loc="right") for a in mains] == list(model.channels)
        assert {a.get_title(loc="left") for a in mains} == {pred.label}
        legends = [c for c in fig.get_children() if isinstance(c, Legend)]
        assert len(legends) == 1
        labels = [t.get_text() for t in legends[0].get_texts()]
        # samples by total yield, the largest on top of the stack and of the legend
        totals = pred.channel_yields.sum(axis=0)
        assert labels[1:-1] == [pred.samples[i] for i in np.argsort(-totals)]
        # the stacks' tops are the totals of the prediction
        for a in mains:
            ch = pred.channel(a.get_title(loc="right"))
            xs, ys = a.containers[-1].lines[0].get_data()
            np.testing.assert_allclose(ys, ch.data)
    with pytest.raises(KeyError):
        plot_data_mc(pred, channels=["XX"])
    with pytest.raises(ValueError, match="bin_edges"):
        plot_data_mc(pred, bin_edges={"XX": [0, 1]})


@needs_workspaces
def test_tttt_readable():
    model = nextstat.from_pyhf(testing.tttt())
    fit = nextstat.fit(model)
    pred = nextstat.prediction(model, fit)
    fig = plot_data_mc(pred, log_scale=True)
    w, h = fig.get_size_inches()
    assert w < 20 and h < 10
    legend = next(c for c in fig.get_children() if isinstance(c, Legend))
    assert len(legend.get_texts()) == len(model.samples) + 2
    colours = {tuple(np.round(h.get_facecolor(), 4)) for h in legend.legend_handles[1:-1]}
    assert len(colours) == len(model.samples)
    # pulls: 242 constrained parameters; top_n keeps the figure small
    full_h = plot_pulls(fit, model=model).get_size_inches()[1]
    top = plot_pulls(fit, model=model, top_n=25)
    assert top.get_size_inches()[1] * 100 < 1000 < full_h * 100
    corr = plot_correlation(fit, threshold=0.1, top_n=25)
    assert len(corr.axes[0].get_yticklabels()) == 25


# --- top_n of pulls and correlations -------------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e"]
BEST = np.array([0.1, -2.0, 0.5, 1.2, 0.0])
ERR = np.array([0.9, 0.8, 0.3, 0.95, 0.5])


def test_pulls_top_n():
    fig = draw_pulls(NAMES, BEST, ERR, np.zeros(5), np.ones(5), top_n=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d", "c"]  # by |pull|, largest on top
    assert "top 3 of 5 by |pull|" in ax.get_xlabel()
    fig = draw_pulls(NAMES, BEST, ERR, np.zeros(5), np.ones(5), top_n=2, rank_by="constraint")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["c", "e"]  # smallest error / prior
    full = draw_pulls(NAMES, BEST, ERR, np.zeros(5), np.ones(5), top_n=10)
    assert [t.get_text() for t in full.axes[0].get_yticklabels()] == ["b", "d", "c", "a", "e"]
    assert "top" not in full.axes[0].get_xlabel()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_n"):
            draw_pulls(NAMES, BEST, ERR, np.zeros(5), np.ones(5), top_n=bad)
    with pytest.raises(ValueError, match="rank_by"):
        draw_pulls(NAMES, BEST, ERR, np.zeros(5), np.ones(5), rank_by="impact")


def test_correlation_top_n_and_threshold():
    c = np.eye(5)
    for (i, j), v in {(0, 1): 0.9, (2, 3): -0.5, (3, 4): 0.15}.items():
        c[i, j] = c[j, i] = v
    fig = draw_correlation(c, NAMES, top_n=3)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c"]  # given order kept
    fig = draw_correlation(c, NAMES, threshold=0.2, top_n=10)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="top_n"):
        draw_correlation(c, NAMES, top_n=0)


def test_plot_wrappers_with_fits_without_hesse():
    model = nextstat.from_pyhf(EXAMPLE)
    fit = nextstat.fit(model, hesse=False)
    assert not_blank(png(plot_pulls(fit, model=model, top_n=4)))
    with pytest.raises(ValueError, match="hesse=True"):
        plot_correlation(fit)
    full = nextstat.fit(model)
    fig = plot_correlation(full, top_n=4)
    assert len(fig.axes[0].get_yticklabels()) == 4
