"""Stacked-histogram yields per channel with data and an uncertainty band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nextstat.plots.data_mc import _legend_columns, _legend_width, sample_colors

__all__ = ["plot_yields"]


def _check_channels(
    channel_names: Sequence[str],
    sample_names: Sequence[str],
    yields: Sequence[np.ndarray],
    data: Sequence[np.ndarray],
    uncertainty: Sequence[np.ndarray],
    bin_edges: Sequence[np.ndarray] | None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    n_ch, n_s = len(channel_names), len(sample_names)
    for what, seq in (("yields", yields), ("data", data), ("uncertainty", uncertainty)):
        if len(seq) != n_ch:
            raise ValueError(f"{what} must hold one array per channel ({n_ch}), got {len(seq)}")
    if bin_edges is not None and len(bin_edges) != n_ch:
        raise ValueError(f"bin_edges must hold one array per channel ({n_ch}), got "
                         f"{len(bin_edges)}")
    out = []
    for c, name in enumerate(channel_names):
        y = np.asarray(yields[c], dtype=float)
        if y.ndim != 2 or y.shape[0] != n_s:
            raise ValueError(
                f"yields[{c}] (channel {name!r}) must have shape ({n_s}, n_bins), got {y.shape}"
            )
        nb = y.shape[1]
        d = np.asarray(data[c], dtype=float)
        u = np.asarray(uncertainty[c], dtype=float)
        if d.shape != (nb,) or u.shape != (nb,):
            raise ValueError(
                f"data[{c}] and uncertainty[{c}] (channel {name!r}) must have shape ({nb},), "
                f"got {d.shape} and {u.shape}"
            )
        edges = np.arange(nb + 1, dtype=float) if bin_edges is None else np.asarray(
            bin_edges[c], dtype=float)
        if edges.shape != (nb + 1,):
            raise ValueError(f"bin_edges[{c}] must have shape ({nb + 1},), got {edges.shape}")
        out.append((y, d, u, edges))
    return out


def plot_yields(
    channel_names: Sequence[str],
    sample_names: Sequence[str],
    yields: Sequence[np.ndarray],
    data: Sequence[np.ndarray],
    uncertainty: Sequence[np.ndarray],
    *,
    bin_edges: Sequence[np.ndarray] | None = None,
    log_scale: bool = False,
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Draw stacked sample yields, data and the total-prediction uncertainty, one axis per channel.

    In each channel the samples are stacked in ``sample_names`` order (first at the bottom),
    one colour per sample (:func:`nextstat.plots.data_mc.sample_colors`, distinct for any
    number of samples), data are black points with Poisson errors ``sqrt(n)``, and the
    prediction's uncertainty is a hatched band ``total +- uncertainty``. One legend is drawn,
    to the right of the last axis (outside the data).

    Args:
        channel_names: channel names, length ``C`` (used as axis titles).
        sample_names: sample names, length ``S``, the same in every channel (a sample absent
            from a channel has zero yields there).
        yields: per channel, the yields of each sample in each bin, shape ``(S, n_bins_c)``,
            in events.
        data: per channel, the observed counts, shape ``(n_bins_c,)``.
        uncertainty: per channel, the absolute uncertainty of the total prediction (events),
            shape ``(n_bins_c,)``.
        bin_edges: per channel, the bin edges, shape ``(n_bins_c + 1,)``; None numbers the
            bins 0, 1, ... (x axis "bin").
        log_scale: logarithmic y axis.
        ax: None creates a ``Figure`` with one row of ``C`` axes; otherwise one Axes per
            channel (a single Axes is accepted when ``C == 1``).

    Returns:
        The Figure holding the (first) axes.
    """
    channels = _check_channels(channel_names, sample_names, yields, data, uncertainty,
                               bin_edges)
    n_ch = len(channels)
    if n_ch == 0:
        raise ValueError("no channel to draw")
    height = 4.2
    legend_cols = _legend_columns(len(sample_names) + 2, height)
    if ax is None:
        width = min(4.0 * n_ch, 16.0) + 1.0 + legend_cols * _legend_width(sample_names)
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = list(np.atleast_1d(fig.subplots(1, n_ch, squeeze=False)[0]))
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != n_ch:
            raise ValueError(f"ax must hold one Axes per channel ({n_ch}), got {len(axes)}")

    colors = sample_colors(len(sample_names))
    for c, (a, (y, d, u, edges)) in enumerate(zip(axes, channels, strict=True)):
        base = np.zeros(y.shape[1])
        for s, sample in enumerate(sample_names):
            top = base + y[s]
            a.stairs(top, edges, baseline=base, fill=True, color=colors[s], label=sample)
            base = top
        total = base
        a.stairs(total, edges, color="black", linewidth=0.8)
        a.stairs(total + u, edges, baseline=total - u, fill=True, facecolor="none",
                 edgecolor="dimgray", hatch="////", linewidth=0, label="uncertainty")
        centres = 0.5 * (edges[:-1] + edges[1:])
        a.errorbar(centres, d, yerr=np.sqrt(np.clip(d, 0, None)), fmt="o", color="black",
                   markersize=4, capsize=0, label="data")
        a.set_title(channel_names[c], fontsize="medium")
        a.set_xlim(edges[0], edges[-1])
        if bin_edges is None:
            a.set_xlabel("bin")
            a.set_xticks(centres, [str(i) for i in range(len(centres))])
        high = float(np.nanmax(np.r_[total + u, d + np.sqrt(np.clip(d, 0, None))]))
        if log_scale:
            positive = np.r_[y[y > 0], d[d > 0]]
            low = float(positive.min()) if positive.size else 0.1
            a.set_yscale("log")
            a.set_ylim(low * 0.5, high * 30)
        else:
            a.set_ylim(0.0, high * 1.15)
        if c == 0:
            a.set_ylabel("events")
    handles, labels = axes[0].get_legend_handles_labels()
    n_stack = len(sample_names)
    # data, then the samples from the top of the stack down, then the band
    order = [n_stack + 1, *range(n_stack - 1, -1, -1), n_stack]
    axes[-1].legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small", frameon=False,
                    loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, ncols=legend_cols)
    return axes[0].figure
