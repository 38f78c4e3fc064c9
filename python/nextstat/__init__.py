"""NextStat: fast, differentiable binned statistical inference for HistFactory models.

>>> import nextstat
>>> model = nextstat.from_pyhf(nextstat.examples.simple_workspace())   # doctest: +SKIP
>>> nextstat.fit(model).mu                                               # doctest: +SKIP
"""

from __future__ import annotations

from nextstat._version import __version__
from nextstat.errors import WorkspaceError
from nextstat.infer.fit import fit, fixed_poi_fit
from nextstat.infer.hypotest import hypotest
from nextstat.infer.limits import upper_limit
from nextstat.infer.patchscan import scan_patches
from nextstat.infer.scan import profile_scan
from nextstat.infer.toys import fit_toys, hypotest_toys
from nextstat.model import Model, from_pyhf
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
    "Model",
    "ProfileScanResult",
    "ToyFitResults",
    "UpperLimitResult",
    "WorkspaceError",
    "__version__",
    "fit",
    "fit_toys",
    "fixed_poi_fit",
    "from_pyhf",
    "hypotest",
    "hypotest_toys",
    "profile_scan",
    "scan_patches",
    "upper_limit",
]
