"""Benchmark: INFERNO's "3D synthetic mixture" benchmarks 0-4 (de Castro & Dorigo, arXiv:1806.04743).

A network with 10 softmax outputs (the 10 bins of a summary statistic) is trained on the Hesse
variance of the signal yield at the Asimov point of a HistFactory model whose templates it
makes itself (:func:`nextstat.torch.profiled_poi_variance_loss`, gradients through the
histosys templates of the shape nuisances), and compared with a binary classifier trained on
cross-entropy (BCE) and with the same 10-bin network trained on the profiled discovery
significance (:class:`nextstat.torch.SignificanceLoss`). The set-up follows
``../shared/benchmarks/inferno_neos.md`` (next to the repository; its sources are the INFERNO
paper and code, pablodecm/paper-inferno ``code/synthetic_3D_*.py``); no code or text is taken
from there.

Set-up
------
* **Data** (``numpy.random.default_rng``): signal (x0, x1) ~ N((0, 0), I), x2 ~ Exp(rate 2);
  background (x0, x1) ~ N((r, 0), diag(5, 9)) with r = 2, x2 ~ Exp(rate lambda = 3). Train
  100k + 100k (seed 27), test 500k + 500k (seed 47). INFERNO's validation set (seed 37, only
  monitored there) is not used.
* **Nuisances** act on background events as INFERNO's input transforms: x0 -> x0 - 2 + r,
  x2 -> x2 * 3 / lambda. Templates at r in {1.8, 2.0, 2.2} and lambda in {2.5, 3.0, 3.5}.
* **Model** (pyhf JSON, one channel, 10 bins, histosys ``interpcode`` code2 = INFERNO's
  quadratic-inside / linear-outside interpolation): ``signal`` (50 events) with normfactor
  ``mu`` (sigma(s) = 50 sigma(mu)); ``background`` (1000 events) with histosys ``r`` (hi: r =
  2.2, lo: r = 1.8; alpha = (r - 2) / 0.2) and ``lam`` (hi: 3.5, lo: 2.5; alpha = (lambda - 3) /
  0.5) where the benchmark lets them float, and a ``lumi``-type modifier ``b_norm`` (auxdata 1,
  sigma 0.1: b ~ N(1000, 100) exactly, rate linear in it) in benchmark 4.

  ========= ============================ ===================================================
  benchmark free nuisances                  constraints (on alpha)
  ========= ============================ ===================================================
  0         none                          --
  1         r                             unconstrained (``sigmas: [1e4]``)
  2         r, lambda                     unconstrained
  3         r, lambda                     r ~ N(2, 0.4) -> N(0, 2); lambda ~ N(3, 1) -> N(0, 2)
  4         r, lambda, b                  as 3, plus b ~ N(1000, 100)
  ========= ============================ ===================================================

* **Networks**: 3 -> 100 ReLU -> 100 ReLU -> 10 (inference-aware) or 2 (BCE), He-normal
  weights, zero biases, float32, initialised with seed 777 + i (i = 0..N-1; the same seed sets
  the batch order).
* **Inference-aware training** (loss ``var(s) = 2500 var(mu)``): soft histograms = mean of
  softmax(logits / 0.1) over a batch of 2000 signal + 2000 background events, times 50 / 1000;
  the r / lambda templates are the same background events shifted; every bin gets a floor of
  1e-6 of the sample's yield (a float32 softmax at temperature 0.1 underflows to 0); SGD, lr 1e-6, 200 epochs
  (INFERNO's values; ``--optimizer adam`` for Adam, lr 1e-3, and ``--schedule cosine`` for a
  cosine decay of the learning rate to 0 over the epochs).
* **Z0 training**: the same network and soft histograms, loss ``-Z0`` (profiled discovery
  significance on the Asimov data at mu = 1, :class:`~nextstat.torch.SignificanceLoss`), Adam
  lr 1e-3 (INFERNO has no such baseline; SGD at 1e-6 does not move a loss of order 1).
* **BCE baseline**: 2-class softmax, cross-entropy, SGD lr 1e-3, batch 64 + 64, 200 epochs;
  the signal probability binned uniformly in 10 bins on [0, 1]. One BCE network per seed is
  evaluated on every benchmark (its training does not depend on the benchmark).
* **Figure of merit** (test set, hard histograms: the argmax bin, or the BCE probability's
  bin): ``sigma(s) = 50 * nextstat.fit(model, data=asimov).errors["mu"]`` (Hesse: the exact
  Hessian of the binned likelihood over the free parameters, constraints included, at the
  Asimov point, mu = 1, nominal nuisances); also the median expected discovery significance
  ``nextstat.hypotest(model, 0.0).significance_expected`` and the median expected CLs at
  mu = 1, ``nextstat.hypotest(model, 1.0).cls_expected[2]``. Medians over seeds.

Published values (INFERNO ``paper/table.tex``: medians over 100 initialisations): BCE 14.99,
18.94, 23.94, 21.54, 26.71; INFERNO matched to the benchmark 15.51, 16.79, 16.95, 16.89,
18.68; analytical unbinned likelihood 14.71, 15.52, 15.65, 15.62, 16.89 (benchmarks 0-4).

Usage::

    python benchmarks/bench_inferno.py --quick                  # a minute: debugging
    python benchmarks/bench_inferno.py --benchmark 2 --seeds 3  # one benchmark
    python benchmarks/bench_inferno.py --benchmark 0 1 2 3 4 --seeds 3 --jobs 2
    # the runs in benchmarks/results/inferno.md (README):
    python benchmarks/bench_inferno.py --benchmark 0 1 2 3 4 --seeds 3 --epochs 40 --optimizer adam --jobs 2
    python benchmarks/bench_inferno.py --benchmark 0 1 2 3 4 --seeds 3 --epochs 100 --optimizer adam \
        --schedule cosine --losses variance --jobs 2

Each run stores its per-seed results in ``benchmarks/results/inferno_runs.json`` (keyed by
benchmark and settings, so runs of different benchmarks add up) and rewrites
``benchmarks/results/inferno.md`` from all of them: for each benchmark and method, the stored
settings with the most seeds, then the most epochs (every stored run is listed under Runs). The
script refuses nothing silently: an Asimov fit that does not converge raises, and a hypotest
that refuses (a bin with signal and no background) is reported as such. The last stdout line is one JSON object
(``{"benchmark": K, "sigma_s_bce": ..., "sigma_s_inference_aware": ..., "sigma_s_z0": ...,
"seconds": ...}``; a list of those for several benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, machine_info, markdown_table  # noqa: E402

from nextstat.inferno_mixture import (  # noqa: E402
    BENCHMARKS, PUBLISHED, SIZES, Settings, evaluate, hard_histograms, train_bce, train_summary,
)


def run_task(task: tuple[str, tuple[int, ...], int, Settings]) -> dict[str, Any]:
    """One training (``kind``, benchmarks, seed) and its evaluation on each benchmark."""
    kind, benches, seed, st = task
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if kind == "bce":
        net, curve = train_bce(seed, st)
    else:
        net, curve = train_summary(kind, BENCHMARKS[benches[0]], seed, st)
    train_s = time.perf_counter() - t0
    metrics = {}
    for k in benches:
        sig, bkg = hard_histograms(net, BENCHMARKS[k], st.n_test, kind == "bce")
        metrics[k] = asdict(evaluate(sig, bkg, BENCHMARKS[k]))
    return {"kind": kind, "seed": seed, "metrics": metrics, "train_s": train_s, "curve": curve}


# ------------------------------------------------------------------------------------------------
# Stored runs and the report
# ------------------------------------------------------------------------------------------------

KINDS = {"bce": "BCE", "variance": "var(s) loss (ours)", "z0": "-Z0 loss (ours)"}
#: the settings that define each method's training (runs with equal ones are pooled over seeds)
KIND_FIELDS = {
    "bce": ("bce_epochs", "bce_batch", "bce_lr", "bce_optimizer", "n_train", "n_test"),
    "variance": ("epochs", "batch", "lr", "optimizer", "schedule", "temperature", "n_train", "n_test"),
    "z0": ("z0_epochs", "batch", "z0_lr", "schedule", "temperature", "n_train", "n_test"),
}


def kind_settings(kind: str, st: Settings) -> dict[str, Any]:
    return {f: getattr(st, f) for f in KIND_FIELDS[kind]}


def describe(kind: str, ks: dict[str, Any]) -> str:
    """One-line description of a method's settings."""
    if kind == "bce":
        return f"{ks['bce_optimizer'].upper()} lr {ks['bce_lr']:g}, batch {ks['bce_batch']}, {ks['bce_epochs']} epochs"
    sched = ", cosine lr decay" if ks.get("schedule", "constant") == "cosine" else ""
    if kind == "variance":
        return (f"{ks['optimizer'].upper()} lr {ks['lr']:g}{sched}, batch {ks['batch']}, {ks['epochs']} epochs, "
                f"T = {ks['temperature']:g}")
    return (f"ADAM lr {ks['z0_lr']:g}{sched}, batch {ks['batch']}, {ks['z0_epochs']} epochs, "
            f"T = {ks['temperature']:g}")


def load_runs(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _median(values) -> float | None:
    """Median of the reported values (``None``: refused, see ``evaluate``), ``None`` if none."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise(entry: dict[str, Any]) -> dict[str, Any]:
    """Medians (and 16th / 84th percentiles of sigma(s)) over the seeds of one stored entry."""
    vals = list(entry["seeds"].values())
    sig = [v["sigma_s"] for v in vals]
    return {"sigma_s": statistics.median(sig), "z0": _median(v["z0"] for v in vals),
            "cls": _median(v["cls"] for v in vals), "q16": float(np.percentile(sig, 16)),
            "q84": float(np.percentile(sig, 84)), "n": len(vals),
            "train_s": statistics.median(v["train_s"] for v in vals),
            "unconverged": sum(not v.get("hypotest_converged", True) for v in vals)}


def headline(runs: dict[str, Any], k: int, kind: str) -> dict[str, Any] | None:
    """The entry reported for (benchmark, method): most seeds, then most epochs."""
    epochs = {"bce": "bce_epochs", "variance": "epochs", "z0": "z0_epochs"}[kind]
    cands = [e for e in runs.values() if e["benchmark"] == k and e["kind"] == kind]
    return max(cands, key=lambda e: (len(e["seeds"]), e["settings"][epochs]), default=None)


def write_report(path: Path, runs: dict[str, Any]) -> None:
    info = machine_info()
    rows, z_rows = [], []
    benches = sorted({e["benchmark"] for e in runs.values()})
    for k in benches:
        summ = {kind: summarise(e) for kind in KINDS if (e := headline(runs, k, kind)) is not None}

        def cell(kind: str, field: str = "sigma_s", fmt: str = "{:.2f}") -> str:
            if kind not in summ:
                return "—"
            sm = summ[kind]
            if field == "sigma_s":
                return f"{sm['sigma_s']:.2f} ({sm['q16']:.2f}–{sm['q84']:.2f}, n={sm['n']})"
            return "—" if sm[field] is None else fmt.format(sm[field])

        rows.append([str(k), cell("bce"), f"{PUBLISHED['bce'][k]:.2f}", cell("variance"), cell("z0"),
                     f"{PUBLISHED['inferno'][k]:.2f}", f"{PUBLISHED['floor'][k]:.2f}"])
        z_rows.append([str(k), *(cell(kind, "z0", "{:.3f}") for kind in KINDS),
                       *(cell(kind, "cls", "{:.2e}") for kind in KINDS)])
    notes = []
    for key in sorted(runs):
        e = runs[key]
        sm = summarise(e)
        used = headline(runs, e["benchmark"], e["kind"]) is e
        notes.append(f"- benchmark {e['benchmark']}, {KINDS[e['kind']]}: {describe(e['kind'], e['settings'])}; "
                     f"{e['settings']['n_train']} + {e['settings']['n_train']} train, {e['settings']['n_test']} + "
                     f"{e['settings']['n_test']} test events; {sm['n']} seed(s), sigma(s) median {sm['sigma_s']:.2f}; "
                     f"training {sm['train_s']:.0f} s per network (median); hypotests not converged: "
                     f"{sm['unconverged']}; {'reported above' if used else 'not reported above'}; "
                     f"command `{e['command']}`")
    text = "\n".join([
        "# INFERNO 3D synthetic mixture: sigma(s) with BCE and inference-aware training (`benchmarks/bench_inferno.py`)",
        "",
        "Set-up: the module docstrings of the script and of `nextstat.inferno_mixture` (INFERNO's data, networks "
        "and templates, histosys code2, hard 10-bin test histograms; sigma(s) = 50 sigma(mu) from `nextstat.fit` "
        "(Hesse) on the Asimov data). Ours: median over seeds (16th–84th percentile, number of seeds); the "
        "training settings of each column are listed under Runs. Published: INFERNO `paper/table.tex`, medians "
        "over 100 initialisations (INFERNO: the network trained for that benchmark).",
        "",
        markdown_table(["bench", "BCE (ours)", "BCE (published)", "var(s) loss (ours)", "-Z0 loss (ours)",
                        "INFERNO (published)", "analytic floor"], rows),
        "",
        "Median expected discovery significance Z0 (`hypotest(model, 0.0).significance_expected`) and median "
        "expected CLs at mu = 1 (`hypotest(model, 1.0).cls_expected[2]`) of the same networks (INFERNO reports "
        "neither):",
        "",
        markdown_table(["bench", *(f"Z0, {v}" for v in KINDS.values()), *(f"CLs, {v}" for v in KINDS.values())],
                       z_rows),
        "",
        "Runs:",
        "",
        *notes,
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; torch {info['versions']['torch']}, numba "
        f"{info['versions']['numba']}; one torch thread per training.",
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def store(runs: dict[str, Any], results: list[dict[str, Any]], st: Settings, command: str) -> None:
    """Add the per-seed results to ``runs`` (keyed by benchmark, method and its settings)."""
    for r in results:
        ks = kind_settings(r["kind"], st)
        for k, m in r["metrics"].items():
            key = f"{k}|{r['kind']}|{json.dumps(ks, sort_keys=True)}"
            entry = runs.setdefault(key, {"benchmark": k, "kind": r["kind"], "settings": ks, "seeds": {}})
            entry["command"] = command
            entry["seeds"][str(r["seed"])] = {**m, "train_s": r["train_s"], "curve": r["curve"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", type=int, nargs="+", default=None, choices=sorted(BENCHMARKS),
                   help="benchmark(s) 0-4 (default 2)")
    p.add_argument("--seeds", type=int, default=None, help="networks per method: seeds 777 + 0..N-1 (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the var(s) training (default 200)")
    p.add_argument("--z0-epochs", type=int, default=None, help="epochs of the -Z0 training (default: --epochs)")
    p.add_argument("--bce-epochs", type=int, default=None, help="epochs of the BCE training (default 200)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="var(s) training (default: sgd, INFERNO's)")
    p.add_argument("--lr", type=float, default=None, help="var(s) learning rate (default 1e-6 sgd, 1e-3 adam)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate of the var(s) and -Z0 trainings: constant (INFERNO's) or cosine decay to 0")
    p.add_argument("--losses", nargs="+", choices=sorted(KINDS), default=sorted(KINDS), help="methods to train")
    p.add_argument("--n-train", type=int, default=None, help="train events per class (default 100000)")
    p.add_argument("--n-test", type=int, default=None, help="test events per class (default 500000)")
    p.add_argument("--quick", action="store_true",
                   help="debug run: 2 epochs, 10000 train / 50000 test events, 1 seed; results not stored")
    p.add_argument("--jobs", type=int, default=1, help="trainings run in parallel processes (default 1)")
    p.add_argument("--runs", type=Path, default=RESULTS_DIR / "inferno_runs.json")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "inferno.md")
    args = p.parse_args(argv)
    benches = tuple(args.benchmark or (2,))
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 200)
    st = Settings(epochs=epochs,
                  lr=args.lr if args.lr is not None else (1e-6 if args.optimizer == "sgd" else 1e-3),
                  optimizer=args.optimizer, schedule=args.schedule,
                  bce_epochs=args.bce_epochs if args.bce_epochs is not None else (2 if args.quick else 200),
                  z0_epochs=args.z0_epochs if args.z0_epochs is not None else epochs,
                  n_train=args.n_train or (10_000 if args.quick else SIZES["train"]),
                  n_test=args.n_test or (50_000 if args.quick else SIZES["test"]))
    t_start = time.perf_counter()
    tasks: list[tuple[str, tuple[int, ...], int, Settings]] = []
    for i in range(seeds):
        if "bce" in args.losses:
            tasks.append(("bce", benches, 777 + i, st))
        for kind in ("variance", "z0"):
            if kind in args.losses:
                tasks.extend((kind, (k,), 777 + i, st) for k in benches)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_task, tasks))
    else:
        results = [run_task(t) for t in tasks]
    for r in results:
        for k, m in r["metrics"].items():
            print(f"benchmark {k} {r['kind']:>8} seed {r['seed']}: sigma(s) = {m['sigma_s']:.3f}, "
                  f"Z0 = {m['z0']}, CLs = {m['cls']}, hypotests converged: {m['hypotest_converged']} "
                  f"(training {r['train_s']:.0f} s)", flush=True)
    seconds = time.perf_counter() - t_start
    command = "python benchmarks/bench_inferno.py " + " ".join(shlex.quote(a) for a in argv)
    new: dict[str, Any] = {}
    store(new, results, st, command)
    out = []
    for k in benches:
        summ = {e["kind"]: summarise(e) for e in new.values() if e["benchmark"] == k}
        get = lambda kind, f: summ[kind][f] if kind in summ else None  # noqa: E731
        out.append({"benchmark": k, "sigma_s_bce": get("bce", "sigma_s"),
                    "sigma_s_inference_aware": get("variance", "sigma_s"), "sigma_s_z0": get("z0", "sigma_s"),
                    "z0_bce": get("bce", "z0"), "z0_inference_aware": get("variance", "z0"), "z0_z0": get("z0", "z0"),
                    "cls_bce": get("bce", "cls"), "cls_inference_aware": get("variance", "cls"),
                    "cls_z0": get("z0", "cls"), "seeds": seeds, "seconds": seconds})
    if not args.quick:
        runs = load_runs(args.runs)
        store(runs, results, st, command)
        args.runs.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.runs.with_suffix(".tmp")
        tmp.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
        tmp.replace(args.runs)
        write_report(args.output, runs)
    print(json.dumps(out[0] if len(out) == 1 else out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
