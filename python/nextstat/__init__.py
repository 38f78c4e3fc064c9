"""NextStat: fast, differentiable binned statistical inference for HistFactory models."""

from __future__ import annotations

from nextstat._version import __version__
from nextstat.errors import WorkspaceError
from nextstat.results import (
    FitResult,
    HypotestResult,
    ProfileScanResult,
    ToyFitResults,
    UpperLimitResult,
)

__all__ = [
    "FitResult",
    "HypotestResult",
    "ProfileScanResult",
    "ToyFitResults",
    "UpperLimitResult",
    "WorkspaceError",
    "__version__",
]
