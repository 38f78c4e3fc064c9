"""``nextstat demo`` (``--benchmark inferno``): inference-aware training where shape systematics matter.

INFERNO's benchmark 2 (de Castro & Dorigo, arXiv:1806.04743; :mod:`nextstat.inferno_mixture`):
a 3-D signal/background mixture whose background shape depends on two nuisance parameters
(r shifts x0, lambda rescales x2), both free. A network with 10 softmax outputs (the bins) is
trained on the Hesse variance of the signal yield at the Asimov point,
:func:`nextstat.torch.profiled_poi_variance_loss`, with gradients through the histosys
templates the network makes from the shifted events; a classifier trained on binary
cross-entropy is the baseline. Both are evaluated on a held-out test set with hard histograms:
``sigma(s)`` (the figure of merit of INFERNO's table), the expected discovery significance and
the expected CLs at mu = 1. A shorter run than the benchmark (``benchmarks/bench_inferno.py``):
fewer events and epochs, Adam for both networks. On an empty compiled cache, the kernels of the
evaluation compile in a background process while the networks train
(:func:`nextstat.engine.fitter.background_compile`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nextstat import inferno_mixture as im
from nextstat.engine.fitter import background_compile

BENCHMARK = 2


def run_inferno_demo(*, epochs: int = 30, out_dir: Path = Path("demo_output"), seed: int = 0,
                     progress: bool | None = None, n_train: int = 20_000, n_test: int = 100_000) -> str:
    """Train both networks on benchmark 2, evaluate them, save ``inferno.png`` and ``inferno.json``
    in ``out_dir``.

    Args:
        epochs: epochs of each training (Adam, lr 1e-3; batches of 2000 + 2000 events for the
            variance loss, 256 + 256 for BCE).
        seed: network seed ``777 + seed`` (INFERNO's convention).
        n_train, n_test: events per class (INFERNO's seeds 27 and 47).

    Returns:
        a text summary (sigma(s) in events, Z0, CLs of both networks).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs!r}")
    torch.set_num_threads(1)  # small networks: threads only add contention
    t0 = time.perf_counter()
    bench = im.BENCHMARKS[BENCHMARK]
    st = im.Settings(epochs=epochs, optimizer="adam", lr=1e-3, bce_epochs=epochs, bce_optimizer="adam",
                     bce_lr=1e-3, bce_batch=256, n_train=n_train, n_test=n_test)
    # the evaluation's fit and hypotest kernels compile on the other core while the networks train
    # (the training's loss kernels compile in this process: nextstat.inferno_mixture.loss_session)
    with background_compile(("fit", "hypotest")) as compiling:
        bce_net, _ = im.train_bce(777 + seed, st, progress=progress)
        var_net, var_curve = im.train_summary("variance", bench, 777 + seed, st, progress=progress)
        compiling.wait()
    m_bce = im.evaluate(*im.hard_histograms(bce_net, bench, n_test, True), bench)
    hists = im.hard_histograms(var_net, bench, n_test, False)
    m_var = im.evaluate(*hists, bench)
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(m_bce, m_var, var_curve, hists, out_dir / "inferno.png")
    summary = {"benchmark": BENCHMARK, "bce": asdict(m_bce), "inference_aware": asdict(m_var), "epochs": epochs,
               "seed": seed, "n_train": n_train, "n_test": n_test, "seconds": seconds,
               "published": {k: v[BENCHMARK] for k, v in im.PUBLISHED.items()}}
    (out_dir / "inferno.json").write_text(json.dumps(summary, indent=2))

    def fmt(v: float | None, f: str) -> str:
        return "refused" if v is None else format(v, f)

    pub = summary["published"]
    return (f"INFERNO benchmark 2 (two free shape nuisances), test set of {n_test} + {n_test} events:\n"
            f"  sigma(s): var(s)-trained {m_var.sigma_s:.2f}, BCE {m_bce.sigma_s:.2f} events "
            f"(published with 200 epochs: INFERNO {pub['inferno']:.2f}, BCE {pub['bce']:.2f}, floor {pub['floor']:.2f})\n"
            f"  expected Z0: {fmt(m_var.z0, '.3f')} vs {fmt(m_bce.z0, '.3f')}; "
            f"expected CLs(mu=1): {fmt(m_var.cls, '.2e')} vs {fmt(m_bce.cls, '.2e')}\n"
            f"  ({seconds:.1f} s; plot: {out_dir / 'inferno.png'})")


def _plot(m_bce: im.Metrics, m_var: im.Metrics, curve: list[float], hists: tuple[np.ndarray, dict],
          path: Path) -> None:
    from matplotlib.figure import Figure

    pub = {k: v[BENCHMARK] for k, v in im.PUBLISHED.items()}
    fig = Figure(figsize=(13, 3.9))
    ax = fig.subplots(1, 3)
    ax[0].bar([0, 1], [m_bce.sigma_s, m_var.sigma_s], color=["#5790fc", "#e42536"], width=0.6)
    ax[0].set_xticks([0, 1], ["BCE", "var(s) loss"])
    for value, label, style in ((pub["bce"], "BCE, published", ":"), (pub["inferno"], "INFERNO, published", "--"),
                                (pub["floor"], "unbinned floor", "-")):
        ax[0].axhline(value, color="k", ls=style, lw=1, label=f"{label} ({value:.2f})")
    for x, m in ((0, m_bce), (1, m_var)):
        ax[0].text(x, m.sigma_s, f"{m.sigma_s:.2f}", ha="center", va="bottom")
    ax[0].set_ylim(0, 1.7 * max(m_bce.sigma_s, m_var.sigma_s, pub["bce"]))
    ax[0].set_ylabel(r"$\sigma(s)$ on the test set [events]")
    ax[0].set_title("figure of merit (lower is better)")
    ax[0].legend(frameon=False, fontsize=7, loc="upper right")
    ep = np.arange(1, len(curve) + 1)
    ax[1].plot(ep, np.sqrt(curve), color="#e42536", label="var(s) training (soft, train batches)")
    ax[1].axhline(m_bce.sigma_s, color="#5790fc", ls="--", label="BCE network (test, hard)")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel(r"$\sigma(s)$ [events]")
    ax[1].legend(frameon=False, fontsize=8)
    sig, bkg = hists
    bins = np.arange(im.N_BINS + 1)
    ax[2].stairs(bkg["nominal"], bins, color="k", label="background")
    for name, color in (("r", "#f89c20"), ("lam", "#964a8b")):
        ax[2].stairs(bkg[f"{name}_hi"], bins, color=color, ls="--", label=f"background, {name} up")
        ax[2].stairs(bkg[f"{name}_lo"], bins, color=color, ls=":", label=f"background, {name} down")
    ax[2].stairs(sig, bins, color="#e42536", lw=2, label="signal")
    ax[2].set_yscale("log")
    ax[2].set_ylim(0.1, 3000 * max(float(np.max(bkg["nominal"])), 1.0))
    ax[2].set_xlabel("bin (argmax of the 10 outputs), var(s)-trained network")
    ax[2].set_ylabel("expected events (test set)")
    ax[2].legend(frameon=False, fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
