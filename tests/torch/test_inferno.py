"""INFERNO's 3D synthetic mixture (``nextstat.inferno_mixture``), its benchmark script and the
``nextstat demo --benchmark inferno`` job: the model's sigma(s) and the variance loss against the
Fisher information written out by hand, the input transforms, the stored-run report, and the
warm-start retry of the compiled fits the losses make."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nextstat
from nextstat import inferno_mixture as im
from nextstat.engine import numba_core as core
from nextstat.torch import ProfiledSession, profiled_poi_variance_loss
from nextstat.torch import backends

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_inferno  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIG = np.array([1.0, 2.0, 4.0, 6.0, 8.0, 9.0, 7.0, 6.0, 4.0, 3.0])
BKG = {"nominal": np.array([200.0, 150.0, 120.0, 100.0, 90.0, 80.0, 70.0, 80.0, 60.0, 50.0])}
BKG["r_hi"] = BKG["nominal"] * np.linspace(0.9, 1.1, 10)
BKG["r_lo"] = BKG["nominal"] * np.linspace(1.08, 0.93, 10)
BKG["lam_hi"] = BKG["nominal"] * (1.0 + 0.05 * np.cos(np.arange(10)))
BKG["lam_lo"] = BKG["nominal"] * (1.0 - 0.04 * np.cos(np.arange(10)))


def fisher_sigma_s(bench: im.Benchmark) -> float:
    """50 sqrt([I^-1]_mu,mu) with I = sum_i dnu_i/dtheta_a dnu_i/dtheta_b / nu_i + constraints, at
    the Asimov point (mu = 1, alpha = 0, b_norm = 1): histosys code2 has dnu/dalpha = (hi - lo) / 2
    there; b_norm scales the background linearly (sigma 0.1)."""
    nu = SIG + BKG["nominal"]
    cols, prior = [SIG], [0.0]
    for name, sigma in bench.nuisances.items():
        cols.append((BKG[f"{name}_hi"] - BKG[f"{name}_lo"]) / 2.0)
        prior.append(1.0 / (im.UNCONSTRAINED if sigma is None else sigma) ** 2)
    if bench.b_norm:
        cols.append(BKG["nominal"])
        prior.append(1.0 / 0.1 ** 2)
    d = np.stack(cols)
    info = d @ np.diag(1.0 / nu) @ d.T + np.diag(prior)
    return 50.0 * float(np.sqrt(np.linalg.inv(info)[0, 0]))


@pytest.mark.parametrize("k", sorted(im.BENCHMARKS))
def test_sigma_s_is_the_fisher_information(k):
    bench = im.BENCHMARKS[k]
    m = im.evaluate(SIG, BKG, bench)
    assert m.sigma_s == pytest.approx(fisher_sigma_s(bench), rel=1e-7)
    assert m.hypotest_converged and np.isfinite(m.z0) and 0.0 < m.cls < 1.0


def _mapping(bench: im.Benchmark) -> tuple[dict[str, torch.Tensor], dict]:
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in BKG.items()}
    s = torch.tensor(SIG, dtype=torch.float64, requires_grad=True)
    if not bench.nuisances:
        return {"signal": s, **t}, {"signal": s, "background": t["nominal"]}
    systs = {n: {"hi_data": t[f"{n}_hi"], "lo_data": t[f"{n}_lo"]} for n in bench.nuisances}
    return {"signal": s, **t}, {"signal": s, "background": {"nominal": t["nominal"], "histosys": systs}}


@pytest.mark.parametrize("k", [0, 2, 4])
def test_variance_loss_value_and_gradient(k):
    """The training loss at given histograms equals the hand-written Fisher variance, and its
    gradient w.r.t. a template entry equals central finite differences of that formula."""
    bench = im.BENCHMARKS[k]
    session = im.loss_session(bench, "variance")
    leaves, mapping = _mapping(bench)
    var = profiled_poi_variance_loss(mapping, session)
    assert 2500.0 * var.item() == pytest.approx(fisher_sigma_s(bench) ** 2, rel=1e-9)
    var.backward()
    name = "r_hi" if bench.nuisances else "nominal"
    for i in (0, 4, 9):
        h = 1e-4 * BKG[name][i]
        BKG[name][i] += h
        up = fisher_sigma_s(bench) ** 2
        BKG[name][i] -= 2 * h
        dn = fisher_sigma_s(bench) ** 2
        BKG[name][i] += h
        assert 2500.0 * leaves[name].grad[i].item() == pytest.approx((up - dn) / (2 * h), rel=1e-5)


def test_input_transforms_and_variants():
    x = torch.tensor([[1.0, -2.0, 0.6], [3.0, 0.5, 0.3]])
    assert torch.equal(im.shifted(x), x)
    np.testing.assert_allclose(im.shifted(x, r=2.2)[:, 0].numpy(), [1.2, 3.2], rtol=1e-6)
    np.testing.assert_allclose(im.shifted(x, lam=2.5)[:, 2].numpy(), [0.72, 0.36], rtol=1e-6)
    v = im.background_variants(im.BENCHMARKS[4], x)
    assert sorted(v) == ["lam_hi", "lam_lo", "nominal", "r_hi", "r_lo"]
    np.testing.assert_allclose(v["lam_hi"][:, 2].numpy(), x[:, 2].numpy() * 3.0 / 3.5, rtol=1e-6)
    assert sorted(im.background_variants(im.BENCHMARKS[0], x)) == ["nominal"]
    sig, bkg = im.make_data(20_000, 1)
    assert sig.dtype == torch.float32 and sig.shape == (20_000, 3)
    assert float(bkg[:, 0].mean()) == pytest.approx(2.0, abs=0.05)
    assert float(bkg[:, 1].var()) == pytest.approx(9.0, rel=0.05)
    assert float(bkg[:, 2].mean()) == pytest.approx(1 / 3.0, rel=0.03)
    assert float(sig[:, 2].mean()) == pytest.approx(1 / 2.0, rel=0.03)


def test_hard_histograms_hold_the_yields():
    net = im.make_network(im.N_BINS, 777)
    sig, bkg = im.hard_histograms(net, im.BENCHMARKS[2], 5000, bce=False)
    assert sig.sum() == pytest.approx(50.0) and bkg["nominal"].sum() == pytest.approx(1000.0)
    assert sorted(bkg) == ["lam_hi", "lam_lo", "nominal", "r_hi", "r_lo"]
    sig2, _ = im.hard_histograms(im.make_network(2, 777), im.BENCHMARKS[0], 5000, bce=True)
    assert sig2.sum() == pytest.approx(50.0)


def test_warm_start_in_a_negative_rate_region_is_retried_cold():
    """A warm start where the new histograms' rates are negative (a histosys extrapolated
    linearly, code2) ends non-finite; the fit is redone from the suggested init."""
    bkg = {**BKG, "r_lo": 0.1 * BKG["nominal"]}  # alpha_r = -5 extrapolates to a negative rate
    session = ProfiledSession(im.load_model(im.workspace(SIG, bkg, im.BENCHMARKS[2])), "signal", device="cpu")
    m = session.model
    data = np.concatenate((m.expected_main(m.suggested_init()), m.aux_data))
    bad = m.suggested_init().copy()
    bad[m.parameter_names.index("r")] = -5.0
    args = (data, session._lo, session._hi, session._fixed, m.arrays, m.aux_arrays, session.maxiter, session.tol,
            False)
    th_bad = core.newton_fit(bad, *args)
    th_cold = core.newton_fit(session._init, *args)
    assert th_bad[4] == core.FIT_NONFINITE and th_cold[4] == core.FIT_CONVERGED
    th, st = backends.numba_fit(session, bad, data, session._fixed, m.arrays)
    assert st == core.FIT_CONVERGED
    np.testing.assert_array_equal(th, th_cold[0])


def test_report_from_stored_runs(tmp_path):
    st = im.Settings(epochs=3, n_train=100, n_test=200, bce_epochs=2, z0_epochs=3)
    results = [{"kind": kind, "seed": seed, "train_s": 1.0 + seed, "curve": [1.0],
                "metrics": {2: {"sigma_s": v + seed, "z0": 3.0, "cls": 1e-3, "hypotest_converged": seed != 1}}}
               for kind, v in (("bce", 24.0), ("variance", 17.0), ("z0", 18.0)) for seed in (0, 1, 2)]
    runs: dict = {}
    bench_inferno.store(runs, results, st, "cmd")
    assert len(runs) == 3
    summ = bench_inferno.summarise(next(e for e in runs.values() if e["kind"] == "variance"))
    assert summ["sigma_s"] == 18.0 and summ["n"] == 3 and summ["unconverged"] == 1
    out = tmp_path / "inferno.md"
    bench_inferno.write_report(out, runs)
    text = out.read_text()
    assert "| 2 | 25.00 (24.32–25.68, n=3) | 23.94 | 18.00 (17.32–18.68, n=3) | 19.00" in text
    assert "hypotests not converged: 1" in text


def test_quick_bench_prints_json(capsys, tmp_path):
    assert bench_inferno.main(["--quick", "--benchmark", "0", "--losses", "variance", "--n-train", "4000",
                               "--n-test", "4000", "--runs", str(tmp_path / "r.json"),
                               "--output", str(tmp_path / "r.md")]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["benchmark"] == 0 and last["sigma_s_bce"] is None and last["sigma_s_inference_aware"] > 14.0
    assert not (tmp_path / "r.json").exists()  # --quick stores nothing


def test_demo_writes_plot_and_summary(tmp_path):
    from nextstat.demo_inferno import run_inferno_demo

    text = run_inferno_demo(epochs=1, out_dir=tmp_path, progress=False, n_train=4000, n_test=4000)
    summary = json.loads((tmp_path / "inferno.json").read_text())
    assert (tmp_path / "inferno.png").stat().st_size > 10_000
    assert f"var(s)-trained {summary['inference_aware']['sigma_s']:.2f}" in text
    assert summary["published"] == {"bce": 23.94, "inferno": 16.95, "floor": 15.65}
    assert summary["inference_aware"]["sigma_s"] > 15.0 and summary["bce"]["sigma_s"] > 15.0
    with pytest.raises(ValueError, match="epochs"):
        run_inferno_demo(epochs=0, out_dir=tmp_path)
