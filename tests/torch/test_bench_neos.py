"""Quick checks of ``benchmarks/bench_neos.py``: its workspace, its CLs loss with network-made
histosys templates (value against ``nextstat.hypotest``, gradient against finite differences)
and a tiny training step."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nextstat
from nextstat.torch import ProfiledSession, SoftHistogram, profiled_cls_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_neos  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HISTS = {"signal": np.array([1.0, 3.0, 6.0, 10.0]), "bkg_nom": np.array([40.0, 30.0, 20.0, 10.0]),
         "bkg_up": np.array([30.0, 35.0, 25.0, 12.0]), "bkg_dn": np.array([50.0, 25.0, 15.0, 9.0])}



def _mapping(h: dict[str, np.ndarray]) -> dict:
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in h.items()}
    return t, {"signal": t["signal"],
               "background": {"nominal": t["bkg_nom"],
                              "histosys": {bench_neos.SYST: {"hi_data": t["bkg_up"], "lo_data": t["bkg_dn"]}}}}


def _session() -> ProfiledSession:
    other = {k: v * 0.5 + 1.0 for k, v in HISTS.items()}  # the session's own templates get replaced
    return ProfiledSession(nextstat.from_pyhf(bench_neos.workspace(other)), "signal", device="cpu", data="expected")


def test_workspace_templates():
    ws = bench_neos.workspace(HISTS)
    bkg = ws["channels"][0]["samples"][1]
    (mod,) = bkg["modifiers"]
    assert mod["type"] == "histosys" and mod["name"] == bench_neos.SYST
    assert mod["data"]["hi_data"] == HISTS["bkg_up"].tolist()
    assert mod["data"]["lo_data"] == HISTS["bkg_dn"].tolist()
    assert ws["observations"][0]["data"] == HISTS["bkg_nom"].tolist()


def test_cls_loss_follows_templates_and_matches_hypotest():
    session = _session()
    _, m = _mapping(HISTS)
    cls = profiled_cls_loss(m, session, mu_test=1.0).item()
    ref = nextstat.hypotest(nextstat.from_pyhf(bench_neos.workspace(HISTS)), 1.0).cls_expected[2]
    assert cls == pytest.approx(ref, rel=1e-6)
    # moving the up template changes the loss like rebuilding the workspace does
    shifted = dict(HISTS, bkg_up=HISTS["bkg_up"] * np.array([1.3, 0.8, 1.1, 1.0]))
    _, m2 = _mapping(shifted)
    ref2 = nextstat.hypotest(nextstat.from_pyhf(bench_neos.workspace(shifted)), 1.0).cls_expected[2]
    assert profiled_cls_loss(m2, session, mu_test=1.0).item() == pytest.approx(ref2, rel=1e-6)
    assert abs(ref2 - ref) > 1e-3 * ref


def test_cls_gradient_matches_finite_differences():
    session = _session()
    t, m = _mapping(HISTS)
    profiled_cls_loss(m, session, mu_test=1.0).backward()
    eps = 1e-5
    for name in HISTS:
        for b in range(bench_neos.N_BINS):
            vals = []
            for sgn in (1.0, -1.0):
                h = {k: v.copy() for k, v in HISTS.items()}
                h[name][b] += sgn * eps
                vals.append(profiled_cls_loss(_mapping(h)[1], session, mu_test=1.0).item())
            fd = (vals[0] - vals[1]) / (2 * eps)
            assert t[name].grad[b].item() == pytest.approx(fd, rel=1e-4, abs=1e-9), (name, b)


def test_tiny_training_step_reaches_network():
    train, _ = bench_neos.make_blobs(200, seed=0)
    net = bench_neos.make_network(0, hidden=8)
    soft = SoftHistogram(torch.as_tensor(bench_neos.EDGES), bandwidth=bench_neos.BANDWIDTH)
    loss = profiled_cls_loss(bench_neos.soft_mapping(net, soft, train), _session(), mu_test=1.0)
    loss.backward()
    assert 0.0 < loss.item() < 1.0
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
