"""Tests for nextstat.plots: each drawer renders a non-blank PNG, plus content checks."""

from __future__ import annotations

import inspect
import io
import sys
from collections.abc import Callable

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.stats import norm

from nextstat.plots import (
    correlated_parameters,
    draw_brazil,
    draw_correlation,
    draw_profile,
    draw_pulls,
    plot_brazil,
    plot_correlation,
    plot_profile,
    plot_pulls,
    plot_yields,
)
from nextstat.results import FitResult, ProfileScanResult, UpperLimitResult

# --- synthetic results -----------------------------------------------------------------------

NAMES = ("mu_SIG", "lumi", "alpha_JES", "alpha_JER", "alpha_ttbar_norm", "staterror_SR[0]",
         "staterror_SR[1]", "mu_ttbar", "alpha_fixed")


class FakeModel:
    """What plot_pulls needs from a model: names, suggested init and prior widths."""

    parameter_names = list(NAMES)

    def suggested_init(self) -> np.ndarray:
        return np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])

    def prior_widths(self) -> np.ndarray:
        # POI and the normfactor mu_ttbar are unconstrained (NaN)
        return np.array([np.nan, 0.017, 1.0, 1.0, 1.0, 0.05, 0.12, np.nan, 1.0])


def make_fit() -> FitResult:
    n = len(NAMES)
    bestfit = np.array([0.8, 1.004, 0.45, -1.3, 0.1, 0.97, 1.15, 1.1, 0.0])
    errors = np.array([0.3, 0.016, 0.8, 0.6, 0.95, 0.04, 0.1, 0.12, 0.0])
    corr = np.eye(n)
    pairs = {(0, 2): -0.55, (0, 7): -0.7, (2, 3): 0.35, (1, 4): 0.05, (5, 6): 0.12,
             (3, 7): 0.25}
    for (i, j), c in pairs.items():
        corr[i, j] = corr[j, i] = c
    fixed = np.zeros(n, dtype=bool)
    fixed[-1] = True
    cov = corr * np.outer(errors, errors)
    return FitResult(
        bestfit=bestfit, errors=errors, covariance=cov, correlation=corr, parameter_names=NAMES,
        poi_index=0, nll=12.5, edm=1e-8, converged=True, n_iter=6, time_ms=2.0, message="ok",
        fixed=fixed, at_limit=np.zeros(n, dtype=bool),
    )


def make_upper_limit(observed_shift: float = 0.4) -> UpperLimitResult:
    """Asymptotic-like CLs curves for sigma_mu = 0.6, observed best fit at ``observed_shift``."""
    sigma = 0.6
    mu = np.linspace(0.0, 3.0, 31)
    bands = np.array([-2, -1, 0, 1, 2])
    cls_exp = norm.cdf(-mu[:, None] / sigma + bands) / norm.cdf(bands)
    cls_obs = norm.cdf(-(mu - observed_shift) / sigma) / norm.cdf(observed_shift / sigma)
    cls_obs = np.minimum(cls_obs, 1.0)

    def crossing(curve: np.ndarray) -> float:
        return float(np.interp(0.05, curve[::-1], mu[::-1]))

    expected = np.array([crossing(cls_exp[:, k]) for k in range(5)])
    return UpperLimitResult(
        observed=crossing(cls_obs), expected=expected, alpha=0.05, mu_values=mu,
        cls_observed=cls_obs, cls_expected=cls_exp, method="scan",
    )


def make_profile() -> ProfileScanResult:
    mu = np.linspace(-0.5, 2.5, 25)
    q = ((mu - 0.8) / 0.45) ** 2 * (1 + 0.05 * (mu - 0.8))
    converged = np.ones(25, dtype=bool)
    converged[20] = False
    return ProfileScanResult(
        mu_values=mu, nll=10.0 + q / 2, twice_delta_nll=q, mu_hat=0.8, nll_min=10.0,
        bestfit=np.zeros((25, 3)), converged=converged, poi_name="mu_SIG",
    )


def make_yields() -> dict:
    rng = np.random.default_rng(3)
    ttbar = [np.array([120.0, 80.0, 40.0, 15.0]), np.array([60.0, 30.0, 9.0])]
    wjets = [np.array([50.0, 30.0, 12.0, 4.0]), np.array([20.0, 8.0, 3.0])]
    signal = [np.array([2.0, 5.0, 9.0, 7.0]), np.array([1.0, 6.0, 8.0])]
    yields = [np.stack([ttbar[c], wjets[c], signal[c]]) for c in range(2)]
    totals = [y.sum(axis=0) for y in yields]
    return {
        "channel_names": ["SR_b", "CR_ttbar"],
        "sample_names": ["ttbar", "W+jets", "signal"],
        "yields": yields,
        "data": [rng.poisson(t).astype(float) for t in totals],
        "uncertainty": [0.08 * t + 2.0 for t in totals],
    }


# --- helpers ---------------------------------------------------------------------------------


def png_pixels(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    assert buf.getbuffer().nbytes > 1000
    buf.seek(0)
    return matplotlib.image.imread(buf, format="png")


def n_colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


DRAWERS: dict[str, Callable[[], Figure]] = {
    "pulls": lambda: plot_pulls(make_fit(), model=FakeModel()),
    "correlation": lambda: plot_correlation(make_fit()),
    "correlation_pruned": lambda: plot_correlation(make_fit(), threshold=0.3),
    "brazil": lambda: plot_brazil(make_upper_limit()),
    "profile": lambda: plot_profile(make_profile()),
    "yields": lambda: plot_yields(**make_yields()),
    "yields_log": lambda: plot_yields(**make_yields(), log_scale=True),
}


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_renders_non_blank_png(name: str) -> None:
    fig = DRAWERS[name]()
    assert isinstance(fig, Figure)
    pixels = png_pixels(fig)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert n_colours(pixels) > 10
    # the plotting area is not one uniform colour
    assert n_colours(pixels[pixels.shape[0] // 4: 3 * pixels.shape[0] // 4]) > 5


@pytest.mark.parametrize(
    "draw",
    [
        lambda ax: plot_pulls(make_fit(), model=FakeModel(), ax=ax),
        lambda ax: plot_correlation(make_fit(), ax=ax),
        lambda ax: plot_brazil(make_upper_limit(), ax=ax),
        lambda ax: plot_profile(make_profile(), ax=ax),
    ],
    ids=["pulls", "correlation", "brazil", "profile"],
)
def test_draws_on_given_axes(draw: Callable) -> None:
    fig = Figure()
    ax = fig.subplots()
    assert draw(ax) is fig
    assert ax.has_data() or ax.images


def test_no_pyplot_state() -> None:
    import nextstat.plots as plots_pkg

    for module in (sys.modules[f"nextstat.plots.{m}"] for m in
                   ("brazil", "correlation", "profile", "pulls", "yields", "_common")):
        source = inspect.getsource(module)
        for banned in ("matplotlib.pyplot", "import pyplot", "style.use"):
            assert banned not in source, (module.__name__, banned)
    assert "matplotlib.pyplot" not in inspect.getsource(plots_pkg)
    draw_profile(np.arange(3.0), np.array([1.0, 0.0, 1.0]))
    draw_correlation(np.eye(2), ["a", "b"])
    plt = sys.modules.get("matplotlib.pyplot")  # imported by some other library, if at all
    if plt is not None:
        assert plt.get_fignums() == []


# --- pulls -----------------------------------------------------------------------------------


def _ytick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def test_pulls_show_constrained_free_parameters_only() -> None:
    fig = plot_pulls(make_fit(), model=FakeModel())
    ax = fig.axes[0]
    # POI, normfactor (NaN width) and the fixed parameter are left out; top to bottom order
    assert _ytick_labels(ax) == [
        "lumi", "alpha_JES", "alpha_JER", "alpha_ttbar_norm", "staterror_SR[0]",
        "staterror_SR[1]",
    ]


def test_pulls_values_and_exclude() -> None:
    fig = draw_pulls(
        ["a", "b", "staterror_x[0]", "n"],
        bestfit=[0.5, 1.02, 1.1, 3.0],
        errors=[0.5, 0.01, 0.05, 1.0],
        init=[0.0, 1.0, 1.0, 1.0],
        prior_sigma=[1.0, 0.02, 0.1, np.nan],
        exclude=["staterror_*"],
    )
    ax = fig.axes[0]
    assert _ytick_labels(ax) == ["a", "b"]
    (container,) = ax.containers
    line = container.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0.5, 1.0])
    fig = draw_pulls(["staterror_x[0]"], [1.1], [0.05], [1.0], [0.1], exclude="nothing_*")
    assert _ytick_labels(fig.axes[0]) == ["staterror_x[0]"]


def test_pulls_exact_name_with_brackets_is_excluded() -> None:
    fig = draw_pulls(["s[0]", "s[1]"], [1.0, 1.0], [0.1, 0.1], [1.0, 1.0], [0.1, 0.1],
                     exclude=["s[0]"])
    assert _ytick_labels(fig.axes[0]) == ["s[1]"]


def test_pulls_errors() -> None:
    with pytest.raises(ValueError, match="no constrained parameter"):
        draw_pulls(["n"], [1.0], [0.1], [1.0], [np.nan])
    with pytest.raises(ValueError, match=r"errors must have shape \(2,\)"):
        draw_pulls(["a", "b"], [0.0, 0.0], [1.0], [0.0, 0.0], [1.0, 1.0])

    class Other(FakeModel):
        parameter_names = ["x", *NAMES[1:]]

    with pytest.raises(ValueError, match="parameter_names"):
        plot_pulls(make_fit(), model=Other())


# --- correlation -----------------------------------------------------------------------------


def _xtick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.0, list(NAMES[:-1])),  # all free parameters; the fixed one is always dropped
        (0.1, ["mu_SIG", "alpha_JES", "alpha_JER", "staterror_SR[0]", "staterror_SR[1]",
               "mu_ttbar"]),
        (0.3, ["mu_SIG", "alpha_JES", "alpha_JER", "mu_ttbar"]),
        (0.6, ["mu_SIG", "mu_ttbar"]),
    ],
)
def test_correlation_pruning(threshold: float, expected: list[str]) -> None:
    fig = plot_correlation(make_fit(), threshold=threshold)
    ax = fig.axes[0]
    assert _xtick_labels(ax) == expected
    assert _ytick_labels(ax) == expected
    assert ax.images[0].get_array().shape == (len(expected), len(expected))


def test_correlation_annotations_for_small_matrices() -> None:
    fig = plot_correlation(make_fit(), threshold=0.6)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["-0.70", "-0.70", "1.00", "1.00"]
    big = draw_correlation(np.eye(20), [f"p{i}" for i in range(20)])
    assert len(big.axes[0].texts) == 0


def test_correlated_parameters_and_errors() -> None:
    corr = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, -0.2], [0.0, -0.2, 1.0]])
    assert correlated_parameters(corr, 0.3).tolist() == [0, 1]
    assert correlated_parameters(corr, 0.2).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="no parameter"):
        draw_correlation(corr, ["a", "b", "c"], threshold=0.9)
    with pytest.raises(ValueError, match="shape"):
        draw_correlation(corr, ["a", "b"])


# --- brazil ----------------------------------------------------------------------------------


def test_brazil_marks_limits_and_bands() -> None:
    result = make_upper_limit()
    fig = plot_brazil(result)
    ax = fig.axes[0]
    by_gid = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    assert set(by_gid) == {"observed_limit", "expected_limit", "observed_limit_marker"}
    np.testing.assert_allclose(by_gid["observed_limit"].get_xdata(), result.observed)
    np.testing.assert_allclose(by_gid["expected_limit"].get_xdata(), result.expected[2])
    np.testing.assert_allclose(by_gid["observed_limit_marker"].get_xydata(),
                               [[result.observed, 0.05]])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"observed limit {result.observed:.3g}" in labels
    assert f"expected limit {result.expected[2]:.3g}" in labels
    assert r"$\alpha = 0.05$" in labels
    # two filled bands (yellow 2 sigma, green 1 sigma)
    assert len(ax.collections) == 2
    alpha_lines = [ln for ln in ax.lines if np.allclose(ln.get_ydata(), 0.05)]
    assert alpha_lines, "alpha line missing"


def test_brazil_sorts_root_finder_points() -> None:
    r = make_upper_limit()
    perm = np.random.default_rng(0).permutation(len(r.mu_values))
    fig = draw_brazil(r.mu_values[perm], r.cls_observed[perm], r.cls_expected[perm])
    observed = [ln for ln in fig.axes[0].lines if ln.get_label() == "observed"][0]
    assert np.all(np.diff(observed.get_xdata()) > 0)
    with pytest.raises(ValueError, match=r"cls_expected must have shape \(31, 5\)"):
        draw_brazil(r.mu_values, r.cls_observed, r.cls_expected[:, :3])


# --- profile ---------------------------------------------------------------------------------


def test_profile_levels_and_failed_points() -> None:
    fig = plot_profile(make_profile())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "mu_SIG"
    levels = sorted(float(ln.get_ydata()[0]) for ln in ax.lines
                    if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2)
    assert levels == [1.0, 4.0]
    failed = [ln for ln in ax.lines if ln.get_label() == "not converged"][0]
    np.testing.assert_allclose(failed.get_xdata(), [make_profile().mu_values[20]])
    assert draw_profile([0.0, 1.0], [0.0, 1.0]).axes[0].get_legend() is None


# --- yields ----------------------------------------------------------------------------------


def test_yields_one_axis_per_channel_with_legend() -> None:
    fig = plot_yields(**make_yields())
    assert [a.get_title() for a in fig.axes] == ["SR_b", "CR_ttbar"]
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels == ["data", "signal", "W+jets", "ttbar", "uncertainty"]
    assert fig.axes[0].get_legend() is None


def test_yields_many_samples_distinct_colours_legend_outside() -> None:
    """Issue 15: on the four-top model (19 samples) the colours repeated (C0..C9) and the
    legend covered the data; every sample gets its own colour, the legend sits right of the axes."""
    kw = make_yields()
    names = [f"sample {k}" for k in range(23)]
    kw["sample_names"] = names
    kw["yields"] = [np.tile(y[:1], (23, 1)) / 23 for y in kw["yields"]]
    fig = plot_yields(**kw)
    fills = [p.get_facecolor() for p in fig.axes[0].patches if p.get_label() in names]
    assert len(fills) == 23 and len(set(fills)) == 23
    fig.canvas.draw()
    legend = fig.axes[-1].get_legend().get_window_extent()
    for a in fig.axes:
        box = a.get_window_extent()
        assert legend.x0 >= box.x1 or legend.y1 <= box.y0  # no overlap with any panel


def test_yields_on_given_axes_and_errors() -> None:
    kw = make_yields()
    fig = Figure()
    axes = fig.subplots(2, 1)
    assert plot_yields(**kw, ax=axes, bin_edges=[np.linspace(0, 4, 5), np.linspace(0, 3, 4)]) \
        is fig
    with pytest.raises(ValueError, match="one Axes per channel"):
        plot_yields(**kw, ax=axes[0])
    bad = dict(kw, yields=[kw["yields"][0], kw["yields"][1][:2]])
    with pytest.raises(ValueError, match=r"yields\[1\] \(channel 'CR_ttbar'\)"):
        plot_yields(**bad)


def test_pulls_of_a_real_fit() -> None:
    pyhf = pytest.importorskip("pyhf")
    import nextstat

    simple = pyhf.simplemodels.uncorrelated_background([5.0, 10.0], [50.0, 60.0], [5.0, 12.0])
    spec = {
        "channels": simple.spec["channels"],
        "observations": [{"name": "singlechannel", "data": [53.0, 65.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    model = nextstat.from_pyhf(spec)
    result = nextstat.fit(model)
    fig = plot_pulls(result, model=model)
    ax = fig.axes[0]
    assert _ytick_labels(ax) == ["uncorr_bkguncrt[0]", "uncorr_bkguncrt[1]"]
    widths = model.prior_widths()
    (container,) = ax.containers
    np.testing.assert_allclose(
        container.lines[0].get_xdata(),
        (result.bestfit[1:] - model.suggested_init()[1:]) / widths[1:],
    )
    assert n_colours(png_pixels(fig)) > 10
