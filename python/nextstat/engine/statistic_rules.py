"""The one clip rule of the one-sided test statistics (Cowan, Cranmer, Gross, Vitells,
arXiv:1007.1727), for every engine: the reported statistics (:mod:`nextstat.infer.test_statistics`,
floats), the toys (NumPy arrays), the compiled loss kernels (:mod:`nextstat.engine.overrides`,
Numba) and the PyTorch loss back ends (:mod:`nextstat.torch.backends`, tensors).

With ``t_mu = -2 ln lambda(mu)`` (eq. 8), clipped at 0:

* ``q0 = t_0`` where ``mu_hat > 0``, else 0 (discovery, eq. 12);
* ``q_mu = t_mu`` where ``mu_hat <= mu``, else 0 (upper limits, eq. 14; ``q~_mu`` the same with
  the POI bounded below at 0 in the fits, eq. 16).

Eq. 12 keeps ``t_0`` at ``mu_hat = 0``, where it vanishes: the free fit is then the conditional
one. Both fits only reach that 0 to their tolerance (``t_0`` of 1e-14 where the POI sits on its
bound 0, ``Z0 = sqrt(q0)`` of 1e-7, with a gradient that ``1 / sqrt(q0)`` amplifies in a loss), so
the rule returns the exact 0 there. pyhf 0.7.6 keeps ``t_0`` at ``mu_hat = 0``
(``where(mu_hat < 0, 0, t_mu)``); the two agree to the fits' tolerance.

:func:`keeps` is a plain Python function that Numba also compiles into the kernels
(``register_jitable``), so the four engines run the same comparison.

>>> keeps(STAT_Q0, 0.7, 0.0), keeps(STAT_Q0, 0.0, 0.0), keeps(STAT_QMU, 1.5, 1.0), keeps(STAT_QMU, 0.5, 1.0)
(True, False, False, True)
>>> import numpy as np
>>> keeps(STAT_Q0, np.array([-1.0, 0.0, 2.0, np.nan]), 0.0)
array([False, False,  True,  True])
"""

from __future__ import annotations

from numba.extending import register_jitable

__all__ = ["STAT_Q0", "STAT_QMU", "keeps"]

#: statistic codes: q0 (discovery) and q_mu / q~_mu (upper limits)
STAT_Q0, STAT_QMU = 0, 1


@register_jitable
def keeps(stat, mu_hat, mu_test):
    """Where the statistic ``stat`` (:data:`STAT_Q0` or :data:`STAT_QMU`) is ``t_mu`` rather
    than 0, for the free fit's POI ``mu_hat`` and the tested ``mu_test`` (module doc): a bool,
    or a bool array / tensor of ``mu_hat``'s shape. A NaN ``mu_hat`` (a failed free fit) keeps
    ``t_mu``, which is then NaN too and refused where results are checked."""
    failed = mu_hat != mu_hat  # NaN: kept, so that the NaN statistic is refused, never read as 0
    if stat == STAT_Q0:
        return (mu_hat > 0.0) | failed
    return (mu_hat <= mu_test) | failed
