"""What a fit returns, named: its status, default settings, and the outputs of the fit engines'
calls (:mod:`nextstat.engine.fitter`)."""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np

from nextstat.engine.compiled.codes import (FIT_CONVERGED, FIT_LINESEARCH, FIT_MAXITER, FIT_NONFINITE,
                                            FIT_NONFINITE_RESULT)

__all__ = ["FitStatus", "FitOutput", "DevFit", "NewtonFit", "AsymptoticFits", "Refits", "DEFAULT_MAXITER", "DEFAULT_TOL",
           "errors_and_correlation", "STATUS_MESSAGES"]

#: Newton iteration limit of every fit (``fit``, hypothesis tests, scans, limits)
DEFAULT_MAXITER = 200
#: EDM threshold ``g^T H^-1 g / 2`` below which a fit has converged
DEFAULT_TOL = 1e-10


class FitStatus(enum.IntEnum):
    """How a fit ended (the compiled core's ``FIT_*`` codes; 0 is success).

    >>> FitStatus(0).message
    'converged'
    """

    CONVERGED = FIT_CONVERGED
    MAXITER = FIT_MAXITER
    LINESEARCH = FIT_LINESEARCH
    NONFINITE = FIT_NONFINITE
    NONFINITE_RESULT = FIT_NONFINITE_RESULT

    @property
    def message(self) -> str:
        """A human-readable account of the status."""
        return STATUS_MESSAGES[self]


#: the message of each status code (plain ``int`` keys: a lookup costs no enum construction)
STATUS_MESSAGES = {
    FIT_CONVERGED: "converged",
    FIT_MAXITER: "reached the iteration limit before converging",
    FIT_LINESEARCH: "line search found no decrease: the fit did not converge",
    FIT_NONFINITE: "the NLL is not finite at the starting point (expected rate <= 0 where data > 0)",
    FIT_NONFINITE_RESULT: "the fit ended on a non-finite NLL, parameter or error",
}


class FitOutput(NamedTuple):
    """A fit with Hesse errors (:meth:`Fitter.fit`; the compiled ``fit_with_errors``' order).

    ``theta`` (P,), ``nll`` (pyhf's form), ``n_iter``, ``status`` (:class:`FitStatus` code),
    ``edm``, ``covariance`` (P, P; zeros without Hesse), ``errors`` (P,), ``correlation`` (P, P),
    ``posdef`` (the Hessian was positive definite over the free parameters), ``fixed`` (P,) and
    ``at_limit`` (P,, free parameters on a bound) masks."""

    theta: np.ndarray
    nll: float
    n_iter: int
    status: int
    edm: float
    covariance: np.ndarray
    errors: np.ndarray
    correlation: np.ndarray
    posdef: bool
    fixed: np.ndarray
    at_limit: np.ndarray


class DevFit(NamedTuple):
    """A fit without Hesse, for test statistics (:meth:`Fitter.fit_dev`): ``bestfit`` (P,),
    ``nll`` (pyhf's form), ``nll_dev`` (the NLL minus the saturated NLL: what test statistics
    difference, free of the cancellation of huge constant terms), ``status``, ``n_iter``,
    ``edm``."""

    bestfit: np.ndarray
    nll: float
    nll_dev: float
    status: int
    n_iter: int
    edm: float

    @property
    def converged(self) -> bool:
        return self.status == FIT_CONVERGED


class NewtonFit(NamedTuple):
    """A bounded Newton fit on a model's arrays, without Hesse (:meth:`Fitter.newton`; the
    compiled ``newton_fit``'s order): ``theta`` (P,), ``nll`` (pyhf's form), ``gradient`` (P,),
    ``n_iter``, ``status`` (:class:`FitStatus` code), ``edm``."""

    theta: np.ndarray
    nll: float
    gradient: np.ndarray
    n_iter: int
    status: int
    edm: float


class Refits(NamedTuple):
    """The ranking's refits (:meth:`Fitter.refits`), K of them: ``theta`` (K, P); ``status`` (K,)
    :class:`FitStatus` codes; ``n_iter`` (K,); ``newton`` (K,) whether the refit needed the full
    Newton fit (the chord iterations did not converge)."""

    theta: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    newton: np.ndarray


class AsymptoticFits(NamedTuple):
    """The five fits of an asymptotic test (:meth:`Fitter.asymptotic_fits`): ``thetas`` (5, P);
    ``stats`` (5, 6): per fit nll, nll_dev, status, n_iter, edm and the number of free parameters
    on a bound; ``asimov`` (n_bins + n_aux,) the Asimov data."""

    thetas: np.ndarray
    stats: np.ndarray
    asimov: np.ndarray


def errors_and_correlation(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(errors (P,), correlation (P, P))`` from a covariance (P, P), as the compiled fit builds
    them: errors ``sqrt(max(C_ii, 0))``; correlations 0 where an error is 0 or not finite, 1 on the
    diagonal."""
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    den = np.outer(err, err)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where((den > 0) & np.isfinite(den), cov / den, 0.0)
    np.fill_diagonal(corr, 1.0)
    return err, corr
