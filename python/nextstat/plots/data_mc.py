"""Data/MC plots: stacked sample yields, data with Poisson intervals, the prediction's uncertainty
band and a data/model ratio panel, per channel, pre- or post-fit.

:func:`draw_data_mc` draws one channel from arrays; :func:`plot_data_mc` draws the channels of a
:class:`nextstat.PredictionResult` in a grid with one legend beside it. Styling comes from an
``mplhep`` style applied with ``matplotlib.style.context`` while the figure is built (nothing
global changes); ``style=None`` keeps the current matplotlib settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import matplotlib.style
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import hsv_to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from nextstat.plots._common import as_1d

__all__ = ["draw_data_mc", "plot_data_mc", "poisson_interval", "sample_colors"]

#: the coverage of a one-sigma interval, ``erf(1 / sqrt(2))``
ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))
#: default mplhep style
STYLE = "ATLAS"


def poisson_interval(counts: Any, cl: float = ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Garwood's central confidence interval for Poisson means given observed ``counts``
    (F. Garwood, Biometrika 28 (1936) 437; PDG RPP "Statistics", eq. 40.76)::

        lower = chi2.ppf((1 - cl) / 2, 2 n) / 2      (0 for n = 0)
        upper = chi2.ppf((1 + cl) / 2, 2 (n + 1)) / 2

    Returns ``(lower, upper)``, each shaped as ``counts`` (events, not distances).

    >>> lo, hi = poisson_interval([0, 10])
    >>> [round(float(x), 3) for x in (*lo, *hi)]
    [0.0, 6.891, 1.841, 14.267]
    """
    from scipy.stats import chi2

    n = np.asarray(counts, dtype=float)
    if not 0.0 < cl < 1.0:
        raise ValueError(f"cl: expected a confidence level in (0, 1), got {cl!r}")
    if np.any(n < 0) or not np.all(np.isfinite(n)):
        raise ValueError("counts: expected finite values >= 0")
    alpha = 1.0 - cl
    lower = np.where(n > 0, chi2.ppf(alpha / 2, 2 * np.maximum(n, 1e-300)) / 2, 0.0)
    upper = chi2.ppf(1 - alpha / 2, 2 * (n + 1)) / 2
    return lower, upper


def sample_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct RGBA colours: tab10 up to 10, tab20 up to 20, tab20 + tab20b + tab20c up to 60,
    and beyond that evenly spaced hues at three lightness levels (all distinct for any ``n``).

    >>> len(set(sample_colors(100))) == 100
    True
    """
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    if n <= 10:
        return [to_rgba(c) for c in colormaps["tab10"].colors[:n]]
    if n <= 20:
        return [to_rgba(c) for c in colormaps["tab20"].colors[:n]]
    if n <= 60:
        pool = [*colormaps["tab20"].colors, *colormaps["tab20b"].colors, *colormaps["tab20c"].colors]
        return [to_rgba(c) for c in pool[:n]]
    levels = ((0.75, 0.95), (0.55, 0.75), (0.9, 0.55))  # (saturation, value)
    per = -(-n // len(levels))
    out = []
    for k in range(n):
        s, v = levels[k % len(levels)]
        h = ((k // len(levels)) + 0.5 * (k % len(levels)) / len(levels)) / per
        out.append((*hsv_to_rgb((h % 1.0, s, v)), 1.0))
    return out


def _style(style: str | None) -> Any:
    if style is None:
        return nullcontext()
    import mplhep

    try:
        rc = getattr(mplhep.style, style)
    except AttributeError:
        raise ValueError(f"style: {style!r} is not an mplhep style (e.g. 'ATLAS', 'CMS', 'ROOT')") from None
    # mplhep's "custom" mathtext fonts are looked up when a figure is saved, after the style is
    # left (matplotlib then warns that it has no "cursive" font): use a built-in math font set
    return matplotlib.style.context({**rc, "mathtext.fontset": "stixsans"})


def _new_pair(fig: Figure) -> tuple[Axes, Axes]:
    main, ratio = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    return main, ratio


def draw_data_mc(
    bin_edges: Any,
    sample_names: Sequence[str],
    yields: Any,
    total_stdev: Any,
    data: Any,
    *,
    label: str = "post-fit",
    channel: str = "",
    log_scale: bool = False,
    colors: Sequence[Any] | None = None,
    legend: bool = True,
    xlabel: str | None = None,
    style: str | None = STYLE,
    ax: tuple[Axes, Axes] | None = None,
) -> Figure:
    """Draw one channel: stacked yields, the total's uncertainty band, data with Garwood
    intervals (:func:`poisson_interval`), and below a data/model ratio panel with the band
    ``1 +- total_stdev / total``.

    Samples are stacked in the given order (the first at the bottom). Bins where the model
    predicts nothing get no ratio point. The upper left title says ``label`` ("pre-fit" /
    "post-fit"), the upper right one ``channel``; the legend (data, the samples from the top of
    the stack down, the band) is placed to the right of the main axes, outside the data.

    Args:
        bin_edges: shape ``(n + 1,)``, increasing; None numbers the bins 0..n-1 (x axis "bin").
        sample_names: length ``S``.
        yields: shape ``(S, n)`` (events).
        total_stdev: uncertainty of the total prediction per bin, shape ``(n,)``.
        data: observed counts, shape ``(n,)``.
        label, channel: the titles.
        log_scale: logarithmic y axis of the main panel.
        colors: one matplotlib colour per sample; default :func:`sample_colors`.
        legend: draw the legend (off when the caller draws one for several channels).
        xlabel: x-axis label (default "bin" or "observable").
        style: an ``mplhep.style`` name applied while drawing, or None.
        ax: a pair ``(main, ratio)`` of Axes to draw on; None creates a new ``Figure``.

    Returns:
        The Figure holding the axes.

    Raises:
        ValueError: on mismatched shapes, negative counts or non-increasing edges.
    """
    y = np.asarray(yields, dtype=float)
    names = list(sample_names)
    if y.ndim != 2 or y.shape[0] != len(names):
        raise ValueError(f"yields must have shape ({len(names)}, n_bins), got {y.shape}")
    n = y.shape[1]
    if n == 0:
        raise ValueError("yields: no bins to draw")
    unc = as_1d(total_stdev, "total_stdev", n)
    counts = as_1d(data, "data", n)
    edges = np.arange(n + 1, dtype=float) if bin_edges is None else as_1d(bin_edges, "bin_edges", n + 1)
    if not np.all(np.diff(edges) > 0):
        raise ValueError("bin_edges must be strictly increasing")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(unc)) and np.all(unc >= 0)):
        raise ValueError("yields and total_stdev must be finite, total_stdev >= 0")
    if not (np.all(np.isfinite(counts)) and np.all(counts >= 0)):
        raise ValueError("data: expected finite counts >= 0")
    cols = sample_colors(len(names)) if colors is None else list(colors)
    if len(cols) != len(names):
        raise ValueError(f"colors: expected one colour per sample ({len(names)}), got {len(cols)}")
    d_lo, d_hi = poisson_interval(counts)

    with _style(style):
        if ax is None:
            rows = len(names) + 2
            ncol = _legend_columns(rows, 5.5)
            width = 5.5 + (ncol * _legend_width(names) if legend else 0.0)
            fig = Figure(figsize=(width, 5.5), layout="constrained")
            main, ratio = _new_pair(fig)
        else:
            main, ratio = ax
        base = np.zeros(n)
        for s, name in enumerate(names):
            top = base + y[s]
            main.stairs(top, edges, baseline=base, fill=True, facecolor=cols[s], edgecolor="none", label=name)
            base = top
        total = base
        main.stairs(total, edges, color="black", linewidth=0.8)
        band_label = f"{label} uncertainty" if label else "uncertainty"
        main.stairs(total + unc, edges, baseline=total - unc, fill=True, facecolor="none", edgecolor="dimgray",
                    hatch="////", linewidth=0, label=band_label)
        centres = 0.5 * (edges[:-1] + edges[1:])
        main.errorbar(centres, counts, yerr=np.vstack([counts - d_lo, d_hi - counts]), fmt="o", color="black",
                      markersize=4, capsize=0, linewidth=1, label="data")
        high = float(np.max(np.r_[total + unc, d_hi]))
        if log_scale:
            positive = y[y > 0]
            low = max(float(positive.min()), 1e-2 * float(total[total > 0].min())) if positive.size else 0.1
            main.set_yscale("log")
            main.set_ylim(low * 0.5, max(high, low) * 10)
            main.yaxis.set_minor_formatter(NullFormatter())
        else:
            main.set_ylim(0.0, high * 1.15 if high > 0 else 1.0)
        main.set_ylabel("events", loc="center")
        main.set_title(label, loc="left", fontsize="medium", fontweight="bold")
        main.set_title(channel, loc="right", fontsize="medium")
        main.tick_params(labelbottom=False)

        ok = total > 0
        safe = np.where(ok, total, 1.0)
        rel = np.where(ok, unc / safe, 0.0)
        ratio.stairs(np.where(ok, 1 + rel, np.nan), edges, baseline=np.where(ok, 1 - rel, np.nan), fill=True,
                     facecolor="none", edgecolor="dimgray", hatch="////", linewidth=0)
        ratio.axhline(1.0, color="black", linewidth=0.8)
        r = counts / safe
        lo_err, hi_err = (counts - d_lo) / safe, (d_hi - counts) / safe
        ratio.errorbar(centres[ok], r[ok], yerr=np.vstack([lo_err[ok], hi_err[ok]]), fmt="o", color="black",
                       markersize=4, capsize=0, linewidth=1)
        reach = np.r_[r[ok], 1 + rel[ok], 1 - rel[ok]] if ok.any() else np.array([1.0])
        span = max(0.25, float(np.max(np.abs(reach - 1.0))) * 1.2)
        span = min(span, 1.0)
        ratio.set_ylim(max(0.0, 1 - span), 1 + span)
        ratio.set_ylabel("data / model", loc="center", fontsize="small")
        ratio.set_xlim(edges[0], edges[-1])
        if bin_edges is None:
            every = max(1, math.ceil(n / 10))
            ratio.set_xticks(centres[::every], [str(i) for i in range(0, n, every)])
            ratio.set_xticks(centres, minor=True)
        ratio.set_xlabel(xlabel if xlabel is not None else ("bin" if bin_edges is None else "observable"))
        if legend:
            handles, labels = _legend_entries(main, n_samples=len(names))
            main.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                        fontsize="small", borderaxespad=0.0, ncols=_legend_columns(len(labels), 5.5))
    return main.figure


def _legend_columns(entries: int, height: float) -> int:
    """Legend columns so that ``entries`` rows of small text fit ``height`` inches."""
    return max(1, math.ceil(entries / max(1, int(height / 0.27))))


def _legend_width(labels: Sequence[str]) -> float:
    """Inches of one legend column of small text."""
    return 0.9 + 0.075 * max([len(s) for s in labels] + [20])


def _legend_entries(main: Axes, n_samples: int) -> tuple[list, list]:
    """Data first, then the samples from the top of the stack down, then the band."""
    handles, labels = main.get_legend_handles_labels()
    # drawn order: samples (0..S-1), band (S), data (S+1)
    order = [n_samples + 1, *range(n_samples - 1, -1, -1), n_samples]
    return [handles[i] for i in order], [labels[i] for i in order]


def plot_data_mc(
    prediction: Any,
    *,
    channels: Sequence[str] | None = None,
    bin_edges: Mapping[str, Any] | None = None,
    log_scale: bool = False,
    ncols: int | None = None,
    style: str | None = STYLE,
) -> Figure:
    """Data/MC plot of each channel of a prediction (:func:`nextstat.prediction`), in a grid.

    Samples are stacked by their total yield over the drawn channels (largest on top) with one
    colour per sample in every channel; one legend, to the right of the grid, lists them. The
    panels are titled with the prediction's label ("pre-fit" / "post-fit") and the channel.

    Args:
        prediction: a :class:`nextstat.PredictionResult`.
        channels: the channels to draw, in order (or one channel's name); default all.
        bin_edges: per channel name, the bin edges (shape ``(n + 1,)``); channels left out are
            drawn against the bin number.
        log_scale: logarithmic y axes.
        ncols: panels per row (default: up to 3).
        style: an ``mplhep.style`` name, or None for the current matplotlib settings.

    Returns:
        The Figure.

    Raises:
        KeyError: an unknown channel. ValueError: no channel, bad ``bin_edges`` or ``ncols``.
        TypeError: ``prediction`` is not a PredictionResult.
    """
    from nextstat.infer.prediction import PredictionResult

    if not isinstance(prediction, PredictionResult):
        raise TypeError(f"prediction: expected a nextstat PredictionResult (nextstat.prediction(...)), "
                        f"got {type(prediction).__name__}")
    names = list(prediction.channels if channels is None else [channels] if isinstance(channels, str) else channels)
    if not names:
        raise ValueError("channels: no channel to draw")
    chans = [prediction.channel(c) for c in names]
    edges = dict(bin_edges or {})
    unknown = set(edges) - set(prediction.channels)
    if unknown:
        raise ValueError(f"bin_edges: unknown channels {sorted(unknown)}")
    samples = list(prediction.samples)
    colours = dict(zip(samples, sample_colors(len(samples))))
    total = np.sum([c.sample_sums for c in chans], axis=0)
    order = [samples[k] for k in np.argsort(total, kind="stable")]  # smallest at the bottom
    present = [s for s in order if total[samples.index(s)] > 0] or order
    rows_of = {s: k for k, s in enumerate(samples)}
    k = len(chans)
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1):
        raise ValueError(f"ncols: expected an integer >= 1 or None, got {ncols!r}")
    nc = min(3, k) if ncols is None else int(ncols)
    nr = -(-k // nc)
    height = 4.4 * nr
    ncol = _legend_columns(len(present) + 2, height)
    with _style(style):
        fig = Figure(figsize=(4.6 * nc + ncol * _legend_width(present), height), layout="constrained")
        subs = np.atleast_1d(fig.subfigures(nr, nc, squeeze=False)).ravel()
        for j, ch in enumerate(chans):
            pair = _new_pair(subs[j])
            draw_data_mc(edges.get(ch.name), present, ch.yields[[rows_of[s] for s in present]], ch.total_stdev,
                         ch.data, label=prediction.label, channel=ch.name, log_scale=log_scale,
                         colors=[colours[s] for s in present], legend=False, style=None, ax=pair)
            if j == 0:
                handles, labels = _legend_entries(pair[0], n_samples=len(present))
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize="small", ncols=ncol)
    return fig
