"""Benchmark: the neos "Gaussian blobs" study (Simpson & Heinrich, arXiv:2203.05570) with nextstat.torch.

A network is trained on the *expected CLs* of a HistFactory model whose templates it makes
itself, and compared with the same network trained on binary cross-entropy (BCE). The set-up
follows the neos paper-era demo as summarised in ``../shared/benchmarks/inferno_neos.md`` (next to the repository)
(sources there: gradhep/neos ``demo.ipynb`` and ``src/neos/experiments/nn_observable.py`` at
v0.2.1, N. Simpson's thesis ``diffprog-hep.qmd``); no code or text is taken from neos.

Set-up
------
* **Data**: four 2-D Gaussian blobs with identity covariance, ``--n-points`` (10,000) each:
  signal centred (-1, 1), background nominal (1, -1), background "up" (2.5, 2) and "down"
  (-2.5, -1.5). As in neos, the four blobs share the same standard-normal draws (one noise
  array, shifted). One random 75 / 25 train / test split (the same rows for all four blobs).
* **Observable**: MLP 2 -> 1024 ReLU -> 1024 ReLU -> 1, sigmoid (float32), binned into 4 equal
  bins on [0, 1]: in training by :class:`nextstat.torch.SoftHistogram` (Gaussian-kernel KDE,
  bandwidth 0.1, as neos' bKDE), in the evaluation by hard histograms.
* **Yields**: a sample's histogram is counts / N_events times its scale factor times 10:
  signal scale 2 (about 20 events), background nominal and each variation scale 10 (about
  100 events each), plus 1e-3 per bin (the floor neos adds).
* **Model** (:func:`nextstat.builders.build_workspace_from_histograms`): one channel, 4 bins;
  sample ``signal`` with normfactor ``mu`` (bounds [0, 10]); sample ``background`` with one
  histosys ``bkg_shape`` whose hi / lo templates are the histograms of the up / down blobs;
  nothing else. Data: the background-only Asimov data (the nominal background).
* **Losses**: (a) expected CLs at mu = 1 (:func:`nextstat.torch.profiled_cls_loss`,
  ``data="expected"``: qtilde on the background-only Asimov data of the current histograms,
  profile fits with envelope-theorem gradients); the network shapes the signal, the nominal
  background and both histosys templates (mapping input of :mod:`nextstat.torch.inputs`).
  (b) BCE, signal vs nominal background.
* **Training**: Adam, lr 1e-3, batch 2000 points per blob (the last batch of an epoch is
  the remaining 1500: 4 steps per epoch, 60 steps in 15 epochs), 15 epochs, seeds 0..N-1
  (the seed sets the data, the network initialisation and the batch order).
* **Figure of merit** (test set, hard histograms): ``nextstat.hypotest(model, 1.0)``
  ``.cls_expected[2]`` (the median of the expected band, equal to the observed CLs on these
  Asimov data), and the median expected discovery significance
  ``nextstat.hypotest(model, 0.0).significance_expected``. Medians over seeds are reported.
* **Timing**: wall time of each training step of the CLs loss (network forward, soft
  histograms, CLs, backward, Adam step), median over all steps after the first of each seed;
  also the statistics alone (``profiled_cls_loss`` + its backward to the histograms).

Published values (read off the neos paper figure, mean over 7 seeds at epoch 15, approximate
to about +-30 % on a log axis): expected CLs about 1e-6 (CLs loss) vs about 3e-5 (BCE); 2.2-3.5 s
per step on a CPU (neos demo).

Usage::

    python benchmarks/bench_neos.py --quick              # a minute: debugging
    python benchmarks/bench_neos.py --seeds 7            # the full study
    python benchmarks/bench_neos.py --seeds 7 --epochs 15 --no-progress

The last stdout line is one JSON object; ``benchmarks/results/neos.md`` gets the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, machine_info, markdown_table  # noqa: E402

import nextstat  # noqa: E402
from nextstat.builders import build_workspace_from_histograms  # noqa: E402
from nextstat.progress import bar  # noqa: E402
from nextstat.torch import ProfiledSession, SoftHistogram, profiled_cls_loss  # noqa: E402

N_BINS = 4
EDGES = np.linspace(0.0, 1.0, N_BINS + 1)
MEANS = {"signal": (-1.0, 1.0), "bkg_nom": (1.0, -1.0), "bkg_up": (2.5, 2.0), "bkg_dn": (-2.5, -1.5)}
SCALES = {"signal": 2.0, "bkg_nom": 10.0, "bkg_up": 10.0, "bkg_dn": 10.0}
OVERALL = 10.0
FLOOR = 1e-3
BANDWIDTH = 0.1
SYST = "bkg_shape"
PUBLISHED = {"cls_neos_loss": 1e-6, "cls_bce": 3e-5, "s_per_step": (2.2, 3.5)}

Blobs = dict[str, torch.Tensor]  # blob name -> [N, 2] float32 points


@dataclass
class RunResult:
    cls: float
    z0: float
    step_s: list[float]
    stat_s: list[float]


def make_blobs(n_points: int, seed: int) -> tuple[Blobs, Blobs]:
    """The four blobs (shared noise, as neos) split 75 / 25 into (train, test)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_points, 2))
    perm = rng.permutation(n_points)
    n_train = int(round(0.75 * n_points))
    train, test = {}, {}
    for name, mean in MEANS.items():
        pts = torch.as_tensor(noise + np.asarray(mean), dtype=torch.float32)
        train[name], test[name] = pts[perm[:n_train]], pts[perm[n_train:]]
    return train, test


def make_network(seed: int, hidden: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1), nn.Sigmoid())


def workspace(hists: dict[str, np.ndarray]) -> dict[str, Any]:
    """One channel: signal (normfactor mu) + background with histosys ``bkg_shape`` (hi = up,
    lo = down); background-only Asimov data."""
    return build_workspace_from_histograms(
        hists["signal"], {"background": hists["bkg_nom"]},
        histosys={"background": {SYST: (hists["bkg_dn"], hists["bkg_up"])}})


def yields_weight(name: str, n_events: int) -> float:
    """Weight of one event of blob ``name`` in a histogram of ``n_events`` events."""
    return SCALES[name] * OVERALL / n_events


def hard_histograms(net: nn.Module, data: Blobs) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = {}
        for name, x in data.items():
            s = net(x).squeeze(-1).double().numpy()
            counts = np.histogram(np.clip(s, 0.0, 1.0), EDGES)[0]
            out[name] = counts * yields_weight(name, len(x)) + FLOOR
    return out


def evaluate(net: nn.Module, test: Blobs) -> tuple[float, float]:
    """(expected CLs at mu = 1, median expected Z0) with hard test-set histograms."""
    model = nextstat.from_pyhf(workspace(hard_histograms(net, test)))
    cls = float(nextstat.hypotest(model, 1.0).cls_expected[2])
    z0 = float(nextstat.hypotest(model, 0.0).significance_expected)
    return cls, z0


def soft_mapping(net: nn.Module, soft: SoftHistogram, batch: Blobs) -> dict[str, Any]:
    """The loss input: all four templates from the network (float64 for the statistics)."""
    h = {}
    for name, x in batch.items():
        s = net(x).squeeze(-1)
        h[name] = (soft(s) * yields_weight(name, len(x)) + FLOOR).double()
    return {"signal": h["signal"],
            "background": {"nominal": h["bkg_nom"],
                           "histosys": {SYST: {"hi_data": h["bkg_up"], "lo_data": h["bkg_dn"]}}}}


def batches(n: int, size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, size):
        yield perm[i:i + size]


def leaves(mapping: Any) -> tuple[Any, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Copy of the mapping with detached leaf tensors (to time the statistics alone), and the
    (graph tensor, leaf) pairs to continue the backward pass into the network."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(u) for k, u in v.items()}
        leaf = v.detach().requires_grad_(True)
        pairs.append((v, leaf))
        return leaf

    return walk(mapping), pairs


def train(loss_name: str, seed: int, train_data: Blobs, test: Blobs, epochs: int, batch: int, hidden: int,
          lr: float, progress: bool | None) -> RunResult:
    net = make_network(seed, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    soft = SoftHistogram(torch.as_tensor(EDGES), bandwidth=BANDWIDTH, mode="kde")
    session = None
    if loss_name == "cls":
        init = {name: np.full(N_BINS, v) for name, v in (("signal", 5.0), ("bkg_nom", 25.0), ("bkg_up", 30.0),
                                                         ("bkg_dn", 20.0))}
        session = ProfiledSession(nextstat.from_pyhf(workspace(init)), "signal", device="cpu", data="expected")
    n = len(train_data["signal"])
    step_s: list[float] = []
    stat_s: list[float] = []
    bce = nn.BCELoss()
    for _ in bar(range(epochs), progress=progress, desc=f"{loss_name} seed {seed}", leave=False):
        for idx in batches(n, batch, gen):
            t0 = time.perf_counter()
            opt.zero_grad()
            b = {k: v[idx] for k, v in train_data.items()}
            if session is not None:
                mapping, pairs = leaves(soft_mapping(net, soft, b))
                t1 = time.perf_counter()
                loss = profiled_cls_loss(mapping, session, mu_test=1.0)
                loss.backward()
                stat_s.append(time.perf_counter() - t1)
                torch.autograd.backward([g for g, _ in pairs], [leaf.grad for _, leaf in pairs])
            else:
                x = torch.cat([b["signal"], b["bkg_nom"]])
                y = torch.cat([torch.ones(len(idx)), torch.zeros(len(idx))])
                bce(net(x).squeeze(-1), y).backward()
            opt.step()
            step_s.append(time.perf_counter() - t0)
    cls, z0 = evaluate(net, test)
    return RunResult(cls, z0, step_s[1:] if len(step_s) > 1 else step_s, stat_s[1:] if len(stat_s) > 1 else stat_s)


def fmt(x: float) -> str:
    return f"{x:.2e}"


def mean(runs: list[RunResult], field: str) -> str:
    m = statistics.fmean(getattr(r, field) for r in runs)
    return fmt(m) if field == "cls" else f"{m:.3f}"


def write_report(path: Path, res: dict[str, list[RunResult]], summary: dict[str, Any], args: argparse.Namespace,
                 argv: list[str], deviations: list[str]) -> None:
    info = machine_info()
    cls_n, cls_b = summary["cls_neos_loss"], summary["cls_bce"]
    rows = [
        ["expected CLs (mu = 1), CLs loss", fmt(cls_n), mean(res["cls"], "cls"),
         f"≈ {PUBLISHED['cls_neos_loss']:.0e}", " ".join(fmt(r.cls) for r in res["cls"])],
        ["expected CLs (mu = 1), BCE", fmt(cls_b), mean(res["bce"], "cls"), f"≈ {PUBLISHED['cls_bce']:.0e}",
         " ".join(fmt(r.cls) for r in res["bce"])],
        ["ratio BCE / CLs loss", f"{cls_b / cls_n:.3g}", "",
         f"≈ {PUBLISHED['cls_bce'] / PUBLISHED['cls_neos_loss']:.0f}", ""],
        ["expected Z0, CLs loss", f"{summary['z0_neos_loss']:.3f}", mean(res["cls"], "z0"), "—",
         " ".join(f"{r.z0:.2f}" for r in res["cls"])],
        ["expected Z0, BCE", f"{summary['z0_bce']:.3f}", mean(res["bce"], "z0"), "—",
         " ".join(f"{r.z0:.2f}" for r in res["bce"])],
        ["ms per training step (CLs loss, all of it)", f"{summary['ms_per_step']:.1f}", "",
         f"{PUBLISHED['s_per_step'][0] * 1e3:,.0f}–{PUBLISHED['s_per_step'][1] * 1e3:,.0f}", ""],
        ["  of which statistics (CLs + its backward)", f"{summary['ms_stat_per_step']:.2f}", "", "—", ""],
        ["ms per training step (BCE)", f"{summary['ms_per_step_bce']:.1f}", "", "—", ""],
    ]
    pub = PUBLISHED["cls_neos_loss"]
    verdict = ("at or below" if cls_n <= pub else
               "within the ±30 % read-off uncertainty of" if cls_n <= 1.3 * pub else "above")
    text = "\n".join([
        "# neos Gaussian blobs: expected-CLs training vs BCE (`benchmarks/bench_neos.py`)",
        "",
        "Set-up (module docstring of the script): 4 Gaussian blobs (signal (-1, 1), background (1, -1), "
        "up (2.5, 2), down (-2.5, -1.5)), MLP 2-1024-1024-1 sigmoid, 4 bins, KDE bandwidth 0.1, yields "
        "20 signal / 100 background per template, one histosys, Adam lr 1e-3, "
        f"batch {args.batch}, {args.epochs} epochs, {args.seeds} seed(s), {args.n_points} points per blob. "
        "Figure of merit: `nextstat.hypotest(model, 1.0).cls_expected[2]` (median expected CLs) with hard "
        "test-set histograms; Z0 = `nextstat.hypotest(model, 0.0).significance_expected`.",
        "",
        markdown_table(["quantity", f"ours: median over {args.seeds} seed(s)", "ours: mean", "neos (published, mean)",
                        "ours per seed"], rows),
        "",
        "Published values are read off the neos paper's figure (mean over 7 seeds at epoch 15) and the neos "
        "demo (time per step, CPU): approximate, about ±30 % on a log axis. The verdict below uses our median.",
        f"Our expected CLs with the CLs loss is **{verdict}** the published ≈ 1e-6 (ours / published = "
        f"{cls_n / pub:.2g}); with BCE ours / published = {cls_b / PUBLISHED['cls_bce']:.2g}.",
        "",
        "Time per step: the 2-1024-1024-1 network (float32, one thread, forward and backward on 4 × "
        f"{args.batch} points) is almost all of it; the row 'of which statistics' is the two profile fits on the "
        "Asimov data, the CLs and its gradient to all four templates (signal, nominal background, up, down). "
        "neos's 2.2–3.5 s is its whole step on a CPU (JAX; its thread count is not stated).",
        "",
        *(["Deviations from the published set-up:", "", *[f"- {d}" for d in deviations], ""] if deviations else []),
        f"Machine: {info['cpu']}, {info['cores']} cores (shared; another job was running); torch "
        f"{info['versions']['torch']}, numba {info['versions']['numba']}, numpy {info['versions']['numpy']}; "
        f"torch threads = {torch.get_num_threads()}; 1-minute load average at the end: {os.getloadavg()[0]:.1f}. "
        f"Total wall time {summary['seconds']:.0f} s.",
        "",
        "Command: `python benchmarks/bench_neos.py " + " ".join(shlex.quote(a) for a in argv) + "`",
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1); default 7 (1 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 15; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="debug run: 2 epochs, 2000 points per blob, 1 seed by default")
    p.add_argument("--n-points", type=int, default=None, help="points per blob (default 10000)")
    p.add_argument("--batch", type=int, default=2000, help="points per blob per step (default 2000)")
    p.add_argument("--hidden", type=int, default=1024, help="hidden layer width (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm bars (default: only on an interactive terminal; TQDM_DISABLE honoured)")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "neos.md")
    args = p.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 7)
    args.epochs = args.epochs if args.epochs is not None else (2 if args.quick else 15)
    args.n_points = args.n_points if args.n_points is not None else (2000 if args.quick else 10_000)
    args.batch = min(args.batch, int(round(0.75 * args.n_points)))
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    res: dict[str, list[RunResult]] = {"bce": [], "cls": []}
    for seed in range(args.seeds):
        tr, te = make_blobs(args.n_points, seed)
        for loss_name in ("bce", "cls"):
            r = train(loss_name, seed, tr, te, args.epochs, args.batch, args.hidden, args.lr, args.progress)
            res[loss_name].append(r)
            print(f"seed {seed} {loss_name:>3}: expected CLs = {r.cls:.3e}, Z0 = {r.z0:.3f}, "
                  f"median step {1e3 * statistics.median(r.step_s):.1f} ms", flush=True)

    med = statistics.median
    summary = {
        "cls_bce": med(r.cls for r in res["bce"]),
        "cls_neos_loss": med(r.cls for r in res["cls"]),
        "z0_bce": med(r.z0 for r in res["bce"]),
        "z0_neos_loss": med(r.z0 for r in res["cls"]),
        "ms_per_step": 1e3 * med(t for r in res["cls"] for t in r.step_s),
        "ms_stat_per_step": 1e3 * med(t for r in res["cls"] for t in r.stat_s),
        "ms_per_step_bce": 1e3 * med(t for r in res["bce"] for t in r.step_s),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "seconds": time.perf_counter() - t_start,
    }
    deviations = []
    if args.quick or args.epochs != 15 or args.seeds != 7 or args.n_points != 10_000 or args.hidden != 1024:
        deviations.append(f"reduced run: {args.seeds} seed(s), {args.epochs} epochs, {args.n_points} points per "
                          f"blob, hidden width {args.hidden} (published: 7 seeds, 15 epochs, 10000, 1024)")
    deviations += [
        "train / test split: one numpy permutation per seed (neos: sklearn `train_test_split(random_state=0)`); "
        "the seed also sets the data and the network initialisation (neos: network init `PRNGKey(0)`).",
        "profile fits: exact Newton fits to convergence with envelope-theorem gradients (neos: gradient-descent "
        "fits inside jaxopt with implicit differentiation); the network runs in float32, the statistics in float64.",
    ]
    write_report(args.output, res, summary, args, argv, deviations)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
