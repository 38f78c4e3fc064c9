"""NextStat: fast, differentiable binned statistical inference for HistFactory models.

>>> import nextstat
>>> model = nextstat.from_pyhf(nextstat.examples.simple_workspace())
>>> result = nextstat.fit(model)
>>> result.converged, round(result.mu, 3)
(True, 0.6)

``import nextstat`` is cheap: the public names below are imported on first use (PEP 562), so
NumPy, Numba, SciPy, torch, pandas and matplotlib load only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nextstat._version import __version__
from nextstat.errors import ConvergenceWarning, WorkspaceError

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "FitResult": "nextstat.results",
    "HypotestResult": "nextstat.results",
    "ProfileScanResult": "nextstat.results",
    "ToyFitResults": "nextstat.results",
    "UpperLimitResult": "nextstat.results",
    "Model": "nextstat.model",
    "from_pyhf": "nextstat.model",
    "fit": "nextstat.infer.fit",
    "fixed_poi_fit": "nextstat.infer.fit",
    "asimov_data": "nextstat.infer.fit",
    "hypotest": "nextstat.infer.hypotest",
    "upper_limit": "nextstat.infer.limits",
    "scan_patches": "nextstat.infer.patchscan",
    "profile_scan": "nextstat.infer.scan",
    "fit_toys": "nextstat.infer.toys",
    "hypotest_toys": "nextstat.infer.toys",
    "prediction": "nextstat.infer.prediction",
    "PredictionResult": "nextstat.infer.prediction",
    "minos": "nextstat.infer.minos",
    "MinosResult": "nextstat.infer.minos",
    "goodness_of_fit": "nextstat.infer.gof",
    "ToyDistributions": "nextstat.results",
    "toy_distributions": "nextstat.infer.toys",
    "hypotest_from_toys": "nextstat.infer.toys",
}

# subpackages reachable as attributes without an explicit import (``nextstat.torch.SignificanceLoss``)
_SUBMODULES = frozenset({
    "builders", "cli", "commands", "demo", "engine", "examples", "histfactory_xml", "hs3", "infer",
    "interpret", "mlops", "plots", "progress", "results", "testing", "torch", "tune", "workspace",
})

__all__ = sorted(["ConvergenceWarning", "WorkspaceError", "__version__", *_LAZY])


def __getattr__(name: str) -> Any:
    """Import a public name or a subpackage on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"nextstat.{name}")
    raise AttributeError(f"module 'nextstat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
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
