"""Speed benchmark of the differentiable profiled significance (``nextstat.torch``), CPU or CUDA.

Model: one 10-bin channel built with :func:`nextstat.builders.build_workspace_from_histograms`:
a signal and three backgrounds with 5 normsys, 4 histosys, a staterror on the backgrounds
(10 parameters) and a luminosity uncertainty: 20 nuisance parameters plus the POI.

Timed (median wall time over the repeats, after warm-up calls that absorb JIT compilation):

1. ``SignificanceLoss`` forward + backward per step (``loss = loss_fn(h); loss.backward()``;
   histograms drawn before timing):
   * "training step": a new histogram every step (the previous one times ``1 + 1% noise``),
     fits warm-started from the previous step's optimum: what a training loop sees;
   * "same histogram": the fits start at their optimum (lower bound of the cost);
   * the training step with ``fit_backend="torch"``: the CUDA code path (batched PyTorch
     Newton fits), run on the CPU, for reference.
2. ``batch_profiled_q0_loss`` forward + backward for ``B`` = 1, 64, 1024 histograms (each the
   nominal signal times ``1 + 10% noise``, redrawn every call), fitted together by the batched
   PyTorch Newton fit: time per call and throughput (histograms per second).

With ``--device cuda`` the loss lives on the GPU (``SignificanceLoss(device="cuda")``: histograms,
fits and gradients stay on the device, batched PyTorch Newton fits) and the batch sizes go up
to 16384; CUDA is synchronised before every clock reading.

PyTorch intra-op threads are set with ``--threads`` (default 1: on a small shared machine the
OpenMP thread pool of a second thread costs far more than it gains on tensors this small).

Usage::

    python benchmarks/bench_torch.py            # ~1 minute
    python benchmarks/bench_torch.py --quick
    python benchmarks/bench_torch.py --device cuda

Writes ``benchmarks/results/torch.md`` (``torch_cuda.md`` with ``--device cuda``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, format_ms, machine_info, markdown_table, timeit  # noqa: E402

import nextstat  # noqa: E402
from nextstat.builders import build_workspace_from_histograms  # noqa: E402
from nextstat.torch import SignificanceLoss, batch_profiled_q0_loss  # noqa: E402

TARGET_MS = 0.5


def bench_workspace() -> dict:
    """10 bins, 20 nuisance parameters (see the module doc)."""
    x = np.linspace(0.05, 0.95, 10)
    signal = 2.0 + 18.0 * x**3
    ttbar = 120.0 * np.exp(-2.0 * x)
    wjets = 60.0 * np.exp(-3.0 * x) + 5.0
    qcd = 30.0 * (1.0 - x) + 1.0
    return build_workspace_from_histograms(
        signal,
        {"ttbar": ttbar, "wjets": wjets, "qcd": qcd},
        normsys={
            "signal": {"sig_xsec": (0.9, 1.1)},
            "ttbar": {"ttbar_xsec": (0.95, 1.05), "btag": (0.97, 1.03)},
            "wjets": {"wjets_xsec": (0.9, 1.12), "btag": (0.98, 1.02)},
            "qcd": {"qcd_norm": (0.7, 1.4)},
        },
        histosys={
            "ttbar": {"jes": (ttbar * (1 - 0.05 * x), ttbar * (1 + 0.06 * x)),
                      "jer": (ttbar * (1 + 0.02 * (x - 0.5)), ttbar * (1 - 0.02 * (x - 0.5)))},
            "wjets": {"jes": (wjets * (1 - 0.04 * x), wjets * (1 + 0.05 * x)),
                      "pileup": (wjets * 0.98, wjets * 1.03)},
            "qcd": {"qcd_shape": (qcd * (1 + 0.1 * (x - 0.5)), qcd * (1 - 0.1 * (x - 0.5)))},
        },
        staterror={"ttbar": np.sqrt(ttbar) * 0.3, "wjets": np.sqrt(wjets) * 0.3, "qcd": np.sqrt(qcd) * 0.5},
        lumi=0.017,
    )


def synced(fn):
    """``fn`` followed by a CUDA synchronisation when CUDA is in use (honest wall times)."""
    if not torch.cuda.is_available():
        return fn

    def call():
        fn()
        torch.cuda.synchronize()

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the loss runs")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    repeat = (50 if args.quick else 300) if cuda else (200 if args.quick else 2000)
    dev = torch.device(args.device)

    ws = bench_workspace()
    model = nextstat.from_pyhf(ws)
    loss_fn = SignificanceLoss(model, "signal", device=args.device)
    nominal = np.asarray(ws["channels"][0]["samples"][0]["data"])
    n_nuis = model.n_params - 1
    rng = np.random.default_rng(0)

    # histograms are drawn before timing; a step is loss_fn(h) + backward only
    walk = [nominal.copy()]
    for _ in range(repeat + 100):
        walk.append(np.maximum(walk[-1] * (1.0 + rng.normal(0.0, 0.01, nominal.shape[0])), 0.1))
    leaves = [torch.tensor(h, dtype=torch.float64, device=dev, requires_grad=True) for h in walk]

    def stepper(fn):
        it = iter(leaves)

        def step():
            fn(next(it)).backward()

        return step

    def same():
        h = torch.tensor(nominal, dtype=torch.float64, device=dev, requires_grad=True)
        return lambda: loss_fn(h).backward()

    cases = [
        ("training step (new histogram each step)", stepper(loss_fn), repeat),
        ("same histogram every step", same(), repeat),
    ]
    if not cuda:
        torch_loss = SignificanceLoss(model, "signal", device="cpu", fit_backend="torch")
        cases.append(("training step, fit_backend='torch' (the CUDA code path, run on CPU)", stepper(torch_loss),
                      max(10, repeat // 20)))
    rows = []
    single = {}
    for name, fn, reps in cases:
        t = timeit(synced(fn), repeat=reps, warmup=20, budget_s=20.0)
        single[name] = t.median_s
        rows.append([name, format_ms(t.median_s), format_ms(float(np.percentile(t.times_s, 90))), len(t.times_s)])
    table1 = markdown_table(["SignificanceLoss forward + backward", "median ms", "p90 ms", "steps"], rows)

    brows = []
    for B in (1, 64, 1024, 16384) if cuda else (1, 64, 1024):
        reps = (20 if args.quick else 100) if B < 1024 else (3 if args.quick else 10)
        batches = [torch.from_numpy(nominal * (1.0 + rng.normal(0.0, 0.1, (B, nominal.shape[0])))).clamp(min=0.1)
                   .to(dev).requires_grad_(True) for _ in range(reps + 2)]
        it = iter(batches)

        def batch_step():
            qs = batch_profiled_q0_loss(next(it), loss_fn.session)
            torch.stack(qs).sum().backward()

        t = timeit(synced(batch_step), repeat=reps, warmup=2, budget_s=30.0)
        brows.append([B, format_ms(t.median_s), f"{B / t.median_s:,.0f}", len(t.times_s)])
    table2 = markdown_table(["B", "ms per call (fwd + bwd)", "histograms / s", "calls"], brows)

    info = machine_info()
    train_ms = single["training step (new histogram each step)"] * 1e3
    verdict = "meets" if train_ms <= TARGET_MS else "misses"
    where = f"CUDA ({torch.cuda.get_device_name(dev)})" if cuda else "CPU"
    target = ("The 0.5 ms target is for the 2-core CPU (torch.md); on the GPU a single small model is "
              "bound by kernel launches, and the batch is what the GPU is for."
              if cuda else f"Target: <= {TARGET_MS} ms per training step: {verdict} ({train_ms:.3f} ms).")
    text = "\n".join([
        f"# Differentiable profiled significance: speed ({where})",
        "",
        f"Model: 1 channel, 10 bins, {n_nuis} nuisance parameters + POI "
        f"(`benchmarks/bench_torch.py: bench_workspace`). Expected (Asimov) data; two profile fits per step.",
        f"Machine: {info['cpu']}, {info['cores']} cores; torch {info['versions']['torch']}, "
        f"numba {info['versions']['numba']}; torch threads = {args.threads}; "
        f"1-minute load average at the end of the run: {os.getloadavg()[0]:.1f} (a shared machine: "
        "timings on an idle one are lower).",
        "",
        table1,
        "",
        target,
        "",
        "## Batched (`batch_profiled_q0_loss`, PyTorch Newton fit, 2B fits advanced together)",
        "",
        table2,
        "",
    ])
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / ("torch_cuda.md" if cuda else "torch.md")).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
