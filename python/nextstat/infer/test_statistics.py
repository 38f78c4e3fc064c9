"""Profile-likelihood test statistics (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727).

With ``lambda(mu) = L(mu, theta_hat_hat(mu)) / L(mu_hat, theta_hat)``, ``t_mu = -2 ln lambda(mu)``
(eq. 8) and:

* ``q0``: t_0 if mu_hat > 0 else 0 (discovery, eq. 12; t_0 = 0 at mu_hat = 0);
* ``q`` (q_mu): t_mu if mu_hat <= mu else 0 (upper limits, eq. 14);
* ``qtilde``: as q_mu with the POI bounded below at 0 in the fits (eq. 16);
* ``tmu``, ``tmu_tilde``: t_mu itself (eqs. 8, 11).

As in pyhf 0.7.6, t_mu is clipped at 0 and the bounds are the model's (``qtilde`` expects a
POI lower bound of 0). The clip rule is :func:`nextstat.engine.statistic_rules.keeps`, the one
of every engine (its doc says why ``q0`` is the exact 0 at mu_hat = 0, where pyhf returns the
fits' rounding of 0).

>>> import numpy as np
>>> q0_from_fits(nll_fixed=10.5, nll_free=8.0, mu_hat=0.7)
5.0
>>> bool(np.isclose(qmu_from_fits(mu=1.0, nll_fixed=9.0, nll_free=8.0, mu_hat=1.5), 0.0))
True
"""

from __future__ import annotations

from nextstat.engine.statistic_rules import STAT_Q0, STAT_QMU, keeps

TEST_STATS = ("q0", "q", "qtilde", "tmu", "tmu_tilde")


def tmu_from_fits(nll_fixed: float, nll_free: float) -> float:
    """t_mu = 2 (NLL(mu, theta_hat_hat) - NLL(mu_hat, theta_hat)), clipped at 0 (eq. 8)."""
    return max(2.0 * (nll_fixed - nll_free), 0.0)


def qmu_from_fits(mu: float, nll_fixed: float, nll_free: float, mu_hat: float) -> float:
    """q_mu (and q~_mu with bounded fits): 0 when mu_hat > mu, else t_mu (eqs. 14, 16)."""
    return tmu_from_fits(nll_fixed, nll_free) if keeps(STAT_QMU, mu_hat, mu) else 0.0


def q0_from_fits(nll_fixed: float, nll_free: float, mu_hat: float) -> float:
    """q_0: t_0 when mu_hat > 0, else 0 (eq. 12)."""
    return tmu_from_fits(nll_fixed, nll_free) if keeps(STAT_Q0, mu_hat, 0.0) else 0.0


def statistic(name: str, mu: float, nll_fixed: float, nll_free: float, mu_hat: float) -> float:
    """Evaluate test statistic ``name`` (one of :data:`TEST_STATS`) from the two fits."""
    if name == "q0":
        return q0_from_fits(nll_fixed, nll_free, mu_hat)
    if name in ("q", "qtilde"):
        return qmu_from_fits(mu, nll_fixed, nll_free, mu_hat)
    if name in ("tmu", "tmu_tilde"):
        return tmu_from_fits(nll_fixed, nll_free)
    raise ValueError(f"test_stat: expected one of {TEST_STATS}, got {name!r}")
