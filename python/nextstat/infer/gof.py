"""Goodness of fit against the saturated model (cabinetry 0.6.0's ``fit._goodness_of_fit``).

The saturated model predicts every observed count exactly (main bins: ``nu_b = n_b``; each
constraint term at its maximum, ``theta = a`` for a Gaussian and ``tau gamma = a`` for a
Poisson constraint), so ``2 (NLL_fit - NLL_saturated)`` is asymptotically chi2-distributed
(Wilks' theorem; Baker and Cousins, NIM 221 (1984) 437) with

    dof = (number of main bins) - (number of free unconstrained parameters)

(cabinetry's count: normfactors and shapefactor bins that are not fixed). The p-value is the
chi2 survival function at ``2 (NLL_fit - NLL_saturated)``. The difference is computed without
cancellation: :meth:`Fitter.nll_dev <nextstat.engine.fitter.Fitter.nll_dev>` is the NLL minus the saturated NLL, term
by term.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from nextstat.engine.fitter import resolve_fitter
from nextstat.errors import ConvergenceWarning
from nextstat.infer.fit import fit
from nextstat.model import Model, require_model
from nextstat.results import FitResult

__all__ = ["goodness_of_fit", "saturated_deviance", "degrees_of_freedom"]


def degrees_of_freedom(model: Model, fixed: Any = None) -> int:
    """Main bins minus the free unconstrained parameters (``fixed``: the fit's fixed mask,
    default ``model.fixed_params``)."""
    fx = model.fixed_params if fixed is None else np.asarray(fixed, dtype=bool)
    return int(model.n_bins - np.count_nonzero(~model.constrained & ~fx))


def saturated_deviance(model: Model, pars: Any, data: Any = None) -> float:
    """``2 (NLL(pars) - NLL_saturated)`` on ``data`` (default observed), >= 0."""
    d = model.data if data is None else model._data(data)
    return 2.0 * resolve_fitter("compiled").nll_dev(model, model._pars(pars), d)


def goodness_of_fit(model: Model, fit_result: FitResult | None = None, *, data: Any = None) -> float:
    """Saturated-model goodness-of-fit p-value of a fit (cabinetry's definition, module docstring).

    Args:
        model: the model.
        fit_result: a fit of ``model`` to ``data`` (its fixed parameters count as not free);
            default: :func:`nextstat.fit` here.
        data: main + auxiliary (or main only) data; default observed.

    Returns:
        The p-value in [0, 1]. A fit that did not converge gives a
        :class:`nextstat.errors.ConvergenceWarning`.

    Raises:
        ValueError: no degrees of freedom (as many free unconstrained parameters as bins, or
            more; cabinetry returns NaN there), a ``fit_result`` of another model, or one whose
            NLL does not match ``data``.
        TypeError: ``model`` not a Model or ``fit_result`` not a FitResult.

    >>> import nextstat
    >>> m = nextstat.from_pyhf(nextstat.examples.simple_workspace())
    >>> p = nextstat.goodness_of_fit(m)
    >>> 0.0 <= p <= 1.0
    True
    """
    from scipy.stats import chi2

    require_model(model)
    d = model.data if data is None else model._data(data)
    if fit_result is None:
        fit_result = fit(model, data=d, hesse=False)
    elif not isinstance(fit_result, FitResult):
        raise TypeError(f"fit_result: expected a nextstat FitResult, got {type(fit_result).__name__}")
    elif tuple(fit_result.parameter_names) != tuple(model.parameter_names):
        raise ValueError("fit_result: its parameter names differ from the model's (a fit of another model?)")
    nll = model.nll(fit_result.bestfit, d)
    if not math.isclose(nll, fit_result.nll, rel_tol=1e-8, abs_tol=1e-6):
        raise ValueError(f"fit_result: its NLL {fit_result.nll!r} differs from the NLL {nll!r} of its best fit on "
                         "these data (a fit of other data? pass them as data=)")
    dof = degrees_of_freedom(model, fit_result.fixed)
    if dof <= 0:
        raise ValueError(f"model: {model.n_bins} bins and {model.n_bins - dof} free unconstrained parameters leave "
                         f"{dof} degrees of freedom; the saturated-model test needs at least one")
    if not fit_result.converged:
        warnings.warn(f"goodness_of_fit: the fit did not converge ({fit_result.message})", ConvergenceWarning,
                      stacklevel=2)
    return float(chi2.sf(saturated_deviance(model, fit_result.bestfit, d), dof))
