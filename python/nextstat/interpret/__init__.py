"""Interpretation of a fit: which nuisance parameters drive the parameter of interest.

* :func:`rank_impact` / :func:`rank_impact_df`: the per-parameter ranking ("impact plot",
  feature importance), by refits (cabinetry 0.6.0's ``fit.ranking`` definitions) or by the
  linear approximation from the covariance (``method="hesse"``); definitions in
  :mod:`nextstat.interpret.ranking`. The rows come as a :class:`RankingResult` (a list of
  dicts, also a table in notebooks); :func:`format_ranking` writes them as text.
* :func:`grouped_impacts`: the breakdown of the POI's uncertainty by groups of nuisance
  parameters (modifier types by default, :func:`modifier_groups`), statistical part included;
  :mod:`nextstat.interpret.grouped`.
* plots (:mod:`nextstat.plots.ranking`, imported on first use here so that this package does
  not load matplotlib): :func:`plot_rank_impact` / :func:`draw_rank_impact` and
  :func:`plot_grouped_impacts` / :func:`draw_grouped_impacts`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nextstat.interpret.grouped import GroupedImpactResult, grouped_impacts, modifier_groups
from nextstat.interpret.ranking import (
    COLUMNS,
    METHODS,
    SORT_KEYS,
    RankingResult,
    format_ranking,
    rank_impact,
    rank_impact_df,
)

_PLOTS = ("draw_grouped_impacts", "draw_rank_impact", "plot_grouped_impacts", "plot_rank_impact")

__all__ = sorted([
    "COLUMNS", "METHODS", "SORT_KEYS", "GroupedImpactResult", "RankingResult", "format_ranking",
    "grouped_impacts", "modifier_groups", "rank_impact", "rank_impact_df", *_PLOTS,
])


def __getattr__(name: str) -> Any:
    """The plotting functions of :mod:`nextstat.plots.ranking`, imported on first use."""
    if name in _PLOTS:
        value = getattr(importlib.import_module("nextstat.plots.ranking"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nextstat.interpret' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # pragma: no cover
    from nextstat.plots.ranking import (
        draw_grouped_impacts,
        draw_rank_impact,
        plot_grouped_impacts,
        plot_rank_impact,
    )
