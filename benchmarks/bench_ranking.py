"""Speed benchmark: nuisance-parameter ranking (impacts on the POI) on published likelihoods.

Tools compared (CPU):

* ``nextstat`` — :func:`nextstat.interpret.rank_impact` (this package, run in this process):
  nominal fit with Hesse errors, then four refits per constrained nuisance parameter (post-fit
  and pre-fit, up and down), warm-started and run in threads over the cores;
* ``peer`` — the Rust engine published on PyPI as ``nextstat`` 0.10.1 (``nextstat.ranking``),
  run through ``peer_runner.py`` in its own venv. It computes the post-fit impacts only (two
  refits per parameter), so it does half of our fits.

Timing: wall time of one call on an already-built model, after one warm-up call (JIT caches
and the peer's thread pool); up to ``--repeat`` calls, stopping early once a tool has spent
``--budget`` seconds; the median is reported. The ratio is peer / nextstat.

Agreement: pulls and constraints of the parameters both tools rank are compared. Where the
post-fit impacts differ by more than ``ATOL_IMPACT``, the POI each tool reports is checked by
profiling the likelihood with the NP fixed at its shifted value and the POI fixed at that
tool's value (all else fitted): the tool whose POI gives the lower NLL found the conditional
minimum.

Usage::

    python benchmarks/bench_ranking.py                 # tttt, ~2 minutes on 2 loaded cores
    python benchmarks/bench_ranking.py --models tttt sbottom-A --repeat 5

Writes ``benchmarks/results/ranking.md`` and ``benchmarks/results/ranking.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    WORKSPACE_LOADERS,
    PeerError,
    format_ms,
    format_ratio,
    load_workspace,
    machine_info,
    markdown_table,
    run_peer,
    timeit,
    write_json,
)

ATOL_IMPACT = 1e-3
"""Post-fit impacts differing by more than this are checked by profiling (see module doc)."""
ATOL_PULL = 5e-3
"""Pulls and constraints: agreement tolerance (the tools' Hesse errors differ slightly)."""
N_CHECK = 6
"""Largest impact disagreements checked by profiling."""
PEER_REFUSED = {"3l-erjr": "peer NLL loses precision at shapesys tau ~ 1e11 (see PEER_API.md)"}


def nextstat_side(key: str, repeat: int, budget: float, log) -> dict[str, Any]:
    import nextstat
    from nextstat.interpret import rank_impact

    bench = load_workspace(key)
    model = nextstat.from_pyhf(bench.patched())
    rank_impact(model)  # warm-up: JIT compilation or cache load
    timing = timeit(lambda: rank_impact(model), repeat, warmup=0, budget_s=budget)
    log(f"{key}: nextstat rank_impact median {timing.median_s:.3f} s over {len(timing.times_s)} calls")
    serial = timeit(lambda: rank_impact(model, n_jobs=1), max(1, repeat // 2), warmup=0, budget_s=budget / 2)
    nominal = nextstat.fit(model)
    table = rank_impact(model, fit_result=nominal)
    fit_timing = timeit(lambda: nextstat.fit(model), repeat, warmup=0, budget_s=budget / 2)
    return {
        "model": model,
        "nominal": nominal,
        "table": table,
        "timing": timing.to_dict(),
        "timing_one_thread": serial.to_dict(),
        "nominal_fit": fit_timing.to_dict(),
        "n_ranked": len(table),
        "n_refits": 4 * len(table),
        "all_converged": all(r["converged"] for r in table),
        "n_clipped": sum(r["clipped"] for r in table),
    }


def peer_side(key: str, repeat: int, budget: float, log) -> dict[str, Any] | str:
    if key in PEER_REFUSED:
        return PEER_REFUSED[key]
    bench = load_workspace(key)
    try:
        reply = run_peer({"workspace": bench.patched(), "operation": "ranking", "repeat": repeat,
                          "warmup": 1, "budget_s": budget}, timeout_s=1800)
    except PeerError as exc:
        return f"peer failed: {exc}"
    times = reply["times_s"]
    log(f"{key}: peer ranking median {float(np.median(times)):.3f} s over {len(times)} calls")
    return {"times_s": times, "median_s": float(np.median(times)), "ranking": reply["result"]["ranking"]}


def profiled_nll(model, nominal, index: int, value: float, mu: float) -> float:
    """NLL with parameter ``index`` fixed at ``value`` and the POI at ``mu``, the rest fitted."""
    import nextstat

    init = nominal.bestfit.copy()
    init[index] = value
    init[model.poi_index] = mu
    fixed = model.fixed_params.copy()
    fixed[[index, model.poi_index]] = True
    return nextstat.fit(model, init_pars=init, fixed_params=fixed, hesse=False, tol=1e-14).nll


def agreement(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    model, nominal = ours["model"], ours["nominal"]
    mine = {r["name"]: r for r in ours["table"]}
    theirs = {r["name"]: r for r in peer["ranking"]}
    common_names = [n for n in mine if n in theirs]
    d_pull = max(abs(mine[n]["pull"] - theirs[n]["pull"]) for n in common_names)
    d_con = max(abs(mine[n]["constraint"] - theirs[n]["constraint"]) for n in common_names)
    diffs = []
    for n in common_names:
        for side, key in (("up", "delta_mu_up"), ("down", "delta_mu_down")):
            diffs.append((abs(mine[n][key] - theirs[n][key]), n, side, mine[n][key], theirs[n][key]))
    diffs.sort(reverse=True)
    n_off = sum(d > ATOL_IMPACT for d, *_ in diffs)
    checks = []
    for d, name, side, ours_dmu, peer_dmu in diffs[:N_CHECK]:
        if d <= ATOL_IMPACT:
            break
        i = model.parameter_names.index(name)
        sign = 1.0 if side == "up" else -1.0
        value = nominal.bestfit[i] + sign * nominal.errors[i]
        mu_hat = nominal.mu
        nll_ours = profiled_nll(model, nominal, i, value, mu_hat + ours_dmu)
        nll_peer = profiled_nll(model, nominal, i, value, mu_hat + peer_dmu)
        checks.append({"name": name, "side": side, "nextstat": ours_dmu, "peer": peer_dmu,
                       "nll_at_nextstat_mu": nll_ours, "nll_at_peer_mu": nll_peer})
    return {"n_common": len(common_names), "only_peer": sorted(set(theirs) - set(mine)),
            "max_abs_pull_diff": d_pull, "max_abs_constraint_diff": d_con,
            "n_impacts_off": n_off, "n_impacts": len(diffs), "max_abs_impact_diff": diffs[0][0],
            "checks": checks}


def render(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        "# NextStat speed benchmark: nuisance-parameter ranking",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}; {versions}. "
        f"Load average (1 min) at start: {m['load_avg_1m']} — the machine is shared, so compare "
        "ratios within one run rather than absolute times across runs.",
        f"Peer: {m['peer']}. Generated by `benchmarks/bench_ranking.py` on {meta['date']}.",
        "",
        "Median wall time per ranking (model already built, after one warm-up call; "
        f"up to {meta['settings']['repeat']} calls, at most {meta['settings']['budget_s']:g} s per tool). "
        "Ratio: peer / nextstat (above 1: NextStat is faster).",
        "",
        "- **nextstat**: `nextstat.interpret.rank_impact(model)`: nominal fit + Hesse, then post-fit "
        "**and pre-fit** impacts (4 refits per constrained NP, cabinetry's definitions), warm-started "
        "from the nominal fit's linear response, threads over all cores.",
        "- **peer**: Rust `nextstat.ranking(model)` (Rayon threads): post-fit impacts only (2 refits per NP).",
        "",
    ]
    rows = []
    for r in records:
        ours = r["nextstat"]
        peer = r["peer"]
        peer_ms = None if isinstance(peer, str) else format_ms(peer["median_s"])
        ratio = None if isinstance(peer, str) else format_ratio(peer["median_s"] / ours["timing"]["median_s"])
        rows.append([r["key"], ours["n_ranked"], ours["n_refits"], format_ms(ours["timing"]["median_s"]),
                     format_ms(ours["timing_one_thread"]["median_s"]), format_ms(ours["nominal_fit"]["median_s"]),
                     peer_ms, ratio])
    lines.append(markdown_table(
        ["model", "NPs ranked", "nextstat refits", "nextstat ms", "nextstat ms (1 thread)",
         "nominal fit ms", "peer ms", "peer/nextstat"], rows))
    lines += ["", "## Agreement with the peer", ""]
    for r in records:
        ours, peer, agr = r["nextstat"], r["peer"], r.get("agreement")
        lines.append(f"**{r['key']}**: all nextstat refits converged: {ours['all_converged']}; "
                     f"parameters with a shift clipped at a bound: {ours['n_clipped']}.")
        if isinstance(peer, str):
            lines += [f"Peer not run: {peer}.", ""]
            continue
        lines.append(
            f"{agr['n_common']} parameters in common"
            + (f" (the peer also ranks {', '.join(agr['only_peer'])})" if agr["only_peer"] else "")
            + f"; pulls agree to {agr['max_abs_pull_diff']:.1e}, constraints to "
            f"{agr['max_abs_constraint_diff']:.1e}; post-fit impacts: {agr['n_impacts_off']} of "
            f"{agr['n_impacts']} differ by more than {ATOL_IMPACT:g} (largest {agr['max_abs_impact_diff']:.3g}).")
        if agr["checks"]:
            lines += [
                "",
                "Largest differences, checked by profiling the likelihood with the NP at its shifted "
                "value and the POI fixed at each tool's answer (lower NLL = the conditional minimum):",
                "",
                markdown_table(
                    ["parameter", "shift", "Δμ nextstat", "Δμ peer", "NLL at nextstat's μ", "NLL at peer's μ"],
                    [[c["name"], c["side"], f"{c['nextstat']:+.4f}", f"{c['peer']:+.4f}",
                      f"{c['nll_at_nextstat_mu']:.6f}", f"{c['nll_at_peer_mu']:.6f}"] for c in agr["checks"]],
                ),
            ]
        lines.append("")
    lines.append(f"Total benchmark time: {meta['total_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tttt"], choices=list(WORKSPACE_LOADERS))
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per tool (at most)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed calls per tool")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    machine = machine_info()
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    records = []
    for key in args.models:
        ours = nextstat_side(key, args.repeat, args.budget, log)
        peer = peer_side(key, args.repeat, args.budget, log)
        record = {"key": key, "nextstat": ours, "peer": peer}
        if not isinstance(peer, str):
            record["agreement"] = agreement(ours, peer)
        records.append(record)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine,
            "settings": {"repeat": args.repeat, "budget_s": args.budget}, "total_s": time.perf_counter() - start}
    markdown = render(records, meta)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "ranking.md").write_text(markdown, encoding="utf-8")
    payload = [{"key": r["key"],
                "nextstat": {k: v for k, v in r["nextstat"].items() if k not in ("model", "nominal")},
                "peer": r["peer"], "agreement": r.get("agreement")} for r in records]
    write_json(args.output_dir / "ranking.json", {**meta, "models": payload})
    print(markdown)
    log(f"wrote {args.output_dir / 'ranking.md'} and ranking.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
