"""The one clip rule of q0 / q_mu (nextstat.engine.statistic_rules.keeps) is the same on every
engine: Python floats (reported statistics), NumPy arrays (toys), Numba (compiled loss kernels)
and torch tensors (torch loss back ends); and a free fit that ends on mu_hat = 0 gives q0 = 0
exactly, with a zero gradient, everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numba import njit

import nextstat
from nextstat.builders import build_workspace_from_histograms
from nextstat.engine.statistic_rules import STAT_Q0, STAT_QMU, keeps
from nextstat.infer import test_statistics as ts
from nextstat.torch import ProfiledSession

MU_HATS = [-1.0, -1e-300, -0.0, 0.0, 5e-324, 1e-12, 0.5, 1.0, 1.0 + 2e-16, 2.0, math.inf, -math.inf, math.nan]


@njit(cache=False)
def _compiled(stat, mu_hat, mu_test):
    return keeps(stat, mu_hat, mu_test)


@pytest.mark.parametrize("stat, mu_test", [(STAT_Q0, 0.0), (STAT_QMU, 1.0), (STAT_QMU, 0.0)])
def test_every_engine_runs_the_same_rule(stat, mu_test):
    exact = [(x > 0.0 if stat == STAT_Q0 else x <= mu_test) or math.isnan(x) for x in MU_HATS]
    assert [bool(keeps(stat, x, mu_test)) for x in MU_HATS] == exact
    assert [bool(_compiled(stat, x, mu_test)) for x in MU_HATS] == exact
    assert keeps(stat, np.array(MU_HATS), mu_test).tolist() == exact
    assert keeps(stat, torch.tensor(MU_HATS, dtype=torch.float64), mu_test).tolist() == exact


def test_reported_statistics_follow_the_rule():
    assert ts.q0_from_fits(10.5, 8.0, 0.7) == 5.0
    assert ts.q0_from_fits(10.5, 8.0, 0.0) == 0.0  # t_0 vanishes at mu_hat = 0: the exact 0
    assert ts.q0_from_fits(10.5, 8.0, -0.1) == 0.0
    assert ts.qmu_from_fits(1.0, 9.0, 8.0, 1.0) == 2.0 and ts.qmu_from_fits(1.0, 9.0, 8.0, 1.5) == 0.0
    assert math.isnan(ts.q0_from_fits(math.nan, 8.0, math.nan))  # a failed fit is not read as 0


@pytest.fixture(scope="module")
def deficit_model():
    """Observed counts below the background: the free fit ends on the POI's lower bound 0."""
    ws = build_workspace_from_histograms([4.0, 6.0], {"bkg": [50.0, 40.0]}, data=[44.0, 33.0],
                                         normsys={"bkg": {"bkg_norm": (0.9, 1.1)}})
    return nextstat.from_pyhf(ws)


def test_mu_hat_on_zero_gives_q0_zero_on_every_engine(deficit_model):
    m = deficit_model
    assert nextstat.fit(m).bestfit[m.poi_index] == 0.0
    h = nextstat.hypotest(m, 0.0, test_stat="q0")
    assert h.mu_hat == 0.0 and h.q_obs == 0.0 and h.significance == 0.0
    signal = torch.tensor([4.0, 6.0], dtype=torch.float64)
    for backend in ("numba", "torch"):
        session = ProfiledSession(m, "signal", device="cpu", data="observed", fit_backend=backend)
        q, grad = session.evaluate(("signal",), signal, STAT_Q0, 0.0)
        assert float(np.asarray(q).ravel()[0]) == 0.0, backend
        assert np.all(np.asarray(grad) == 0.0), backend


def test_engines_agree_where_q0_is_kept():
    ws = build_workspace_from_histograms([4.0, 6.0], {"bkg": [50.0, 40.0]}, data=[60.0, 52.0],
                                         normsys={"bkg": {"bkg_norm": (0.9, 1.1)}})
    m = nextstat.from_pyhf(ws)
    h = nextstat.hypotest(m, 0.0, test_stat="q0")
    assert h.mu_hat > 0 and h.q_obs > 1.0
    signal = torch.tensor([4.0, 6.0], dtype=torch.float64)
    for backend in ("numba", "torch"):
        session = ProfiledSession(m, "signal", device="cpu", data="observed", fit_backend=backend)
        q, _ = session.evaluate(("signal",), signal, STAT_Q0, 0.0)
        assert float(np.asarray(q).ravel()[0]) == pytest.approx(h.q_obs, rel=1e-8), backend
