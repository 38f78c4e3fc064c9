"""Speed benchmark: toy fits (pseudo-experiments) per second.

Tools:

* ``nextstat`` — this package: :func:`nextstat.infer.toys.fit_toys` on the CPU (compiled Newton
  fits over all cores), or with ``--device cuda`` the batched PyTorch fitter on the GPU;
* ``peer`` — the Rust engine published on PyPI as ``nextstat`` 0.10.1, ``fit_toys`` in batch
  mode (no Hessian), run through ``peer_runner.py`` in its own venv, CPU only.

Models:

* ``tttt`` — the ATLAS four-top workspace (249 parameters, 31 bins);
* ``synthetic-201`` — built here: one POI (normfactor on the signal) and 50 channels of 4 bins
  whose background carries a shapesys, 1 + 50 x 4 = 201 parameters.

What a toy is differs between the tools: ours are pyhf's (main counts *and* auxiliary data
drawn: ``model.make_pdf(pars).sample()``), the peer's fluctuate the main bins only and keep the
observed auxiliary data (``PEER_API.md``). So NextStat is timed twice: on its own toys, and on
the peer's kind of toys (main-only Poisson counts passed as ``data=``, observed auxiliary data)
— the like-for-like column. All toys are generated at the same point: the best fit to the
observed data, handed to the peer by parameter name.

Timing: wall time of one ``fit_toys`` call on an already-built model, after a warm-up call
(JIT compilation); the median over ``--repeat`` calls. The peer gets fewer toys (it takes
about a second per tttt toy here) and reports its own per-call times. Toys per second =
toys / median wall time. As a check, the mean and spread of the fitted POI over the toys are
printed next to each tool's rate (like-for-like toys must agree within their statistical
errors).

Usage::

    python benchmarks/bench_toys.py                     # both models, CPU, ~5 minutes on 2 cores
    python benchmarks/bench_toys.py --quick             # fewer toys, 1 repeat
    python benchmarks/bench_toys.py --device cuda       # our GPU throughput (no peer on GPU)

Writes ``benchmarks/results/toys.md`` (or ``toys_cuda.md``) and the matching ``.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    PeerError,
    format_ratio,
    machine_info,
    markdown_table,
    run_peer,
    timeit,
    workspaces_dir,
    write_json,
)

MODELS = ("tttt", "synthetic-201")
SEED = 1234


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def synthetic_workspace(n_channels: int = 50, n_bins: int = 4, seed: int = 7) -> dict[str, Any]:
    """1 POI + ``n_channels`` x ``n_bins`` shapesys parameters (201 by default), fixed numbers.

    Each channel ``chNN`` has a signal (normfactor ``mu``) of 1-10 events per bin on a
    background of 20-200 events per bin with a 5-20% uncorrelated shapesys; the observed counts
    are one Poisson draw of the background plus half the signal.
    """
    rng = np.random.default_rng(seed)
    channels, observations = [], []
    for c in range(n_channels):
        name = f"ch{c:02d}"
        sig = np.round(rng.uniform(1.0, 10.0, n_bins), 3)
        bkg = np.round(rng.uniform(20.0, 200.0, n_bins), 3)
        unc = np.round(bkg * rng.uniform(0.05, 0.2, n_bins), 3)
        channels.append({"name": name, "samples": [
            {"name": "signal", "data": sig.tolist(),
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": bkg.tolist(),
             "modifiers": [{"name": f"shape_{name}", "type": "shapesys", "data": unc.tolist()}]},
        ]})
        observations.append({"name": name, "data": rng.poisson(bkg + 0.5 * sig).astype(float).tolist()})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def load(key: str) -> tuple[dict[str, Any] | str, dict[str, Any]]:
    """(what the peer runner gets: a path or an inline workspace, the workspace itself)."""
    if key == "tttt":
        from nextstat.testing import tttt

        return str(workspaces_dir() / "tttt-prod.json.gz"), tttt()
    if key == "synthetic-201":
        ws = synthetic_workspace()
        return ws, ws
    raise KeyError(f"unknown model {key!r}; expected one of {MODELS}")


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def poi_summary(mu_hat: np.ndarray) -> dict[str, float | None]:
    """Mean and standard deviation of the fitted POI, and the error of the mean."""
    n = mu_hat.size
    std = float(np.std(mu_hat, ddof=1)) if n > 1 else None
    return {"mu_hat_mean": float(np.mean(mu_hat)) if n else None, "mu_hat_std": std,
            "mu_hat_mean_error": None if std is None else std / math.sqrt(n)}


def bench_ours(model: Any, pars: np.ndarray, n_toys: int, repeat: int, device: str,
               n_threads: int | None, data: np.ndarray | None) -> dict[str, Any]:
    """Time ``fit_toys`` (own toys when ``data`` is None, else fits of the given datasets)."""
    from nextstat.infer.toys import fit_toys

    def call() -> Any:
        return fit_toys(model, pars, n_toys=None if data is not None else n_toys, data=data, seed=SEED,
                        device=device, progress=False, n_threads=n_threads)

    fit_toys(model, pars, n_toys=4, seed=SEED + 1, device=device, progress=False, n_threads=n_threads)  # JIT
    out: list[Any] = []
    timing = timeit(lambda: out.append(call()), repeat, warmup=0)
    res = out[-1]
    conv = res.converged
    return {
        "n_toys": res.n_toys,
        "times_s": list(timing.times_s),
        "median_s": timing.median_s,
        "toys_per_s": res.n_toys / timing.median_s,
        "n_failed": res.n_failed,
        "device": res.device,
        **poi_summary(res.bestfit[conv, model.poi_index]),
    }


def bench_peer(workspace: dict[str, Any] | str, point: dict[str, float], n_toys: int, repeat: int,
               threads: int | None) -> dict[str, Any]:
    """Time the peer's ``fit_toys`` (main-bin toys, batch mode) through ``peer_runner.py``."""
    request = {
        "workspace": workspace,
        "operation": "fit_toys",
        "params": {"n_toys": n_toys, "seed": SEED, "point": point},
        "repeat": repeat,
        "warmup": 1,
    }
    if threads:
        request["threads"] = threads
    reply = run_peer(request, timeout_s=3600.0)
    median = statistics.median(reply["times_s"])
    res = reply["result"]
    n_conv = res["n_converged"]
    std = res["mu_hat_std"]
    return {
        "n_toys": res["n_toys"],
        "times_s": reply["times_s"],
        "median_s": median,
        "toys_per_s": res["n_toys"] / median,
        "n_failed": res["n_toys"] - n_conv,
        "device": "cpu",
        "mu_hat_mean": res["mu_hat_mean"],
        "mu_hat_std": std,
        "mu_hat_mean_error": None if std is None or n_conv < 2 else std / math.sqrt(n_conv),
    }


def main_only_toys(model: Any, pars: np.ndarray, n_toys: int, seed: int) -> np.ndarray:
    """The peer's kind of toys: Poisson main counts at ``pars``, shape (n_toys, n_bins)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.poisson(model.expected_main(pars), size=(n_toys, model.n_bins)).astype(np.float64)


def bench_model(key: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import nextstat

    peer_ws, ws = load(key)
    model = nextstat.from_pyhf(ws)
    fit = nextstat.fit(model, hesse=False)
    pars = fit.bestfit
    log(f"{key}: {model.n_params} parameters, {model.n_bins} bins; toys at the observed best fit "
        f"(mu_hat = {fit.mu:.4g})")
    n_ours = args.toys[key]
    record: dict[str, Any] = {"key": key, "n_params": model.n_params, "n_bins": model.n_bins,
                              "n_aux": model.n_aux, "mu_hat_observed": fit.mu, "tools": {}}
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("nextstat", lambda: bench_ours(model, pars, n_ours, args.repeat, args.device, args.threads, None)),
        ("nextstat (main-only toys)", lambda: bench_ours(model, pars, n_ours, args.repeat, args.device, args.threads,
                                                          main_only_toys(model, pars, n_ours, SEED))),
    ]
    if not args.no_peer and args.device == "cpu":
        point = dict(zip(model.parameter_names, (float(x) for x in pars)))
        runs.append(("peer", lambda: bench_peer(peer_ws, point, args.peer_toys[key], args.repeat, args.peer_threads)))
    for name, run in runs:
        try:
            rec = run()
        except (PeerError, RuntimeError, OSError) as exc:
            record["tools"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name:26s} ✗ {exc}")
            continue
        record["tools"][name] = rec
        log(f"  {name:26s} {rec['toys_per_s']:9.2f} toys/s  ({rec['n_toys']} toys, median "
            f"{rec['median_s']:.2f} s, {rec['n_failed']} failed; mu_hat {rec['mu_hat_mean']:.4f} "
            f"± {rec['mu_hat_mean_error'] or float('nan'):.4f}, sd {rec['mu_hat_std'] or float('nan'):.4f})")
    return record


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render_markdown(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    machine, settings = meta["machine"], meta["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    tools = ["nextstat", "nextstat (main-only toys)", "peer"]
    device = settings["device"]
    lines = [
        f"# NextStat speed benchmark: toy fits ({device})",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}; {versions}. "
        f"Load average (1 min) at start: {machine['load_avg_1m']}, at end: {meta['load_avg_end']} — the "
        "machine is shared, so compare ratios within one run rather than absolute rates across runs.",
        f"Peer: {machine['peer']}. Generated by `benchmarks/bench_toys.py` on {meta['date']} "
        f"(seed {SEED}, median of up to {settings['repeat']} calls after a warm-up call).",
        "",
        "Toys per second, generation included, on an already-built model; toys at the observed-data "
        "best fit. **nextstat**: `fit_toys` on its own toys (main counts and auxiliary data drawn, as "
        "pyhf); **nextstat (main-only toys)**: the peer's kind of toys (Poisson main counts, observed "
        "auxiliary data) fitted with `fit_toys(data=...)`, the like-for-like comparison; **peer**: "
        "nextstat 0.10.1 `fit_toys` (batch mode, main-bin toys, all cores). Ratio: like-for-like "
        "nextstat rate / peer rate.",
        "",
    ]
    headers = ["model", "pars", *[f"{t} toys/s" for t in tools], "ratio", "toys (ours / peer)"]
    rows = []
    for rec in records:
        cells = []
        for t in tools:
            r = rec["tools"].get(t)
            cells.append(None if r is None else ("✗" if "error" in r else f"{r['toys_per_s']:,.3g}"))
        like, peer = rec["tools"].get("nextstat (main-only toys)"), rec["tools"].get("peer")
        ratio = None
        if like and peer and "error" not in like and "error" not in peer:
            ratio = format_ratio(like["toys_per_s"] / peer["toys_per_s"])
        ours = rec["tools"].get("nextstat", {})
        counts = f"{ours.get('n_toys', '—')} / {peer['n_toys'] if peer and 'error' not in peer else '—'}"
        rows.append([rec["key"], rec["n_params"], *cells, ratio, counts])
    lines += [markdown_table(headers, rows), "", "## Fitted POI over the toys (check)", "",
              "Mean ± error of the mean (standard deviation); failed: fits that did not converge. "
              "The like-for-like column and the peer fit the same kind of toys and should agree "
              "within the errors; our own toys also fluctuate the auxiliary data, so their spread is "
              "larger.", ""]
    headers = ["model", *tools]
    rows = []
    for rec in records:
        row: list[Any] = [rec["key"]]
        for t in tools:
            r = rec["tools"].get(t)
            if r is None or "error" in r:
                row.append(None if r is None else f"✗ {r['error'][:80]}")
                continue
            err = r["mu_hat_mean_error"]
            row.append(f"{r['mu_hat_mean']:.4f} ± {err:.4f} ({r['mu_hat_std']:.4f}); failed {r['n_failed']}"
                       if err is not None else f"{r['mu_hat_mean']}; failed {r['n_failed']}")
        rows.append(row)
    lines += [markdown_table(headers, rows)]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--models", nargs="+", choices=MODELS, default=list(MODELS))
    add("--device", choices=("cpu", "cuda"), default="cpu", help="where our toys are fitted")
    add("--toys", type=int, default=None, help="our toys per call (default: 400 tttt, 1000 synthetic; "
        "20000 on cuda)")
    add("--peer-toys", type=int, default=None, help="peer toys per call (default: 24 tttt, 100 synthetic)")
    add("--repeat", type=int, default=3, help="timed calls per tool")
    add("--threads", type=int, default=None, help="our CPU threads (default: all usable cores)")
    add("--peer-threads", type=int, default=None, help="Rayon threads for the peer (default: all)")
    add("--no-peer", action="store_true", help="time NextStat only")
    add("--quick", action="store_true", help="smoke run: few toys, 1 repeat")
    add("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    ours = {"tttt": 400, "synthetic-201": 1000} if args.device == "cpu" else {"tttt": 20000, "synthetic-201": 20000}
    peer = {"tttt": 24, "synthetic-201": 100}
    if args.quick:
        ours, peer, args.repeat = {k: max(8, v // 20) for k, v in ours.items()}, {k: 4 for k in peer}, 1
    args.toys = {k: args.toys or v for k, v in ours.items()}
    args.peer_toys = {k: args.peer_toys or v for k, v in peer.items()}
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    machine = machine_info()
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    records = [bench_model(key, args, log) for key in args.models]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine,
        "load_avg_end": round(os.getloadavg()[0], 2),
        "settings": {"device": args.device, "repeat": args.repeat, "toys": args.toys, "peer_toys": args.peer_toys,
                     "threads": args.threads, "peer_threads": args.peer_threads, "seed": SEED},
        "total_s": time.perf_counter() - start,
    }
    markdown = render_markdown(records, meta)
    stem = "toys" if args.device == "cpu" else f"toys_{args.device}"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    write_json(args.output_dir / f"{stem}.json", {**meta, "models": records})
    print()
    print(markdown)
    log(f"wrote {args.output_dir / (stem + '.md')} and {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
