"""Matplotlib plots of fit results: pulls, correlations, Brazil bands, profile scans, yields.

Each ``draw_*`` function takes plain arrays; each ``plot_*`` function takes a NextStat result
object and calls the matching drawer (``plot_yields`` takes arrays; ``plot_data_mc`` takes a
:class:`nextstat.PredictionResult`). All accept ``ax=None``:
with an Axes they draw on it, without one they create a new ``matplotlib.figure.Figure``
(never through pyplot, and no style is changed). All return the Figure; saving is left to
the caller::

    fig = nextstat.plots.plot_pulls(result, model=model)
    fig.savefig("pulls.png", dpi=150)
"""

from __future__ import annotations

from nextstat.plots.brazil import draw_brazil, plot_brazil
from nextstat.plots.correlation import correlated_parameters, draw_correlation, plot_correlation
from nextstat.plots.data_mc import draw_data_mc, plot_data_mc
from nextstat.plots.from_model import plot_from_model
from nextstat.plots.profile import draw_profile, plot_profile
from nextstat.plots.pulls import draw_pulls, plot_pulls
from nextstat.plots.yields import plot_yields

__all__ = [
    "correlated_parameters",
    "draw_brazil",
    "draw_correlation",
    "draw_data_mc",
    "draw_profile",
    "draw_pulls",
    "plot_brazil",
    "plot_correlation",
    "plot_data_mc",
    "plot_from_model",
    "plot_profile",
    "plot_pulls",
    "plot_yields",
]
