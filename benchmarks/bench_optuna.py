"""Speed benchmark: the 200-trial Optuna binning study of ``examples/optuna_binning.py``.

Measures, on this machine:

1. **End to end**: ``python examples/optuna_binning.py --trials 200`` in a fresh process (Python
   start, imports, data set generation, first-call loading of the compiled kernels, 200 TPE
   trials, report), wall time of the whole process and the study time it prints itself.
2. **Warm, in process** (``--repeat`` times): the same study (data set seed 0, TPE seed 0) with the
   objective wrapped in a timer, so the wall time splits into the objective (histogramming,
   workspace, model, hypotest) and Optuna's own work (TPE sampling, trial bookkeeping).
3. **Per-trial breakdown**: for the 200 binnings the study visited, the median time of each step
   of one trial: histogramming the pre-sorted events and building the workspace
   (``make_workspace``), compiling the model (``nextstat.from_pyhf``) and the discovery test
   (``nextstat.hypotest(model, 0, data=asimov)``).

Usage::

    python benchmarks/bench_optuna.py              # ~1 minute on 2 cores
    python benchmarks/bench_optuna.py --repeat 5

Writes ``benchmarks/results/optuna.md`` and ``benchmarks/results/optuna.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

from common import RESULTS_DIR, REPO_ROOT, machine_info, markdown_table, write_json

EXAMPLE = REPO_ROOT / "examples" / "optuna_binning.py"
N_TRIALS = 200


def load_example():
    spec = importlib.util.spec_from_file_location("optuna_binning", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["optuna_binning"] = module
    spec.loader.exec_module(module)
    return module


def end_to_end() -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--trials", str(N_TRIALS)],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    study_s = float(re.search(r"trials in ([0-9.]+) s", proc.stdout).group(1))
    return {"process_wall_s": wall, "study_wall_s": study_s, "stdout": proc.stdout.strip()}


def warm_study(ex, events, optuna) -> dict:
    """The example's study, with its build instrumented: TPE sampling happens lazily inside
    ``trial.suggest_*``, so the suggest calls are timed apart from the workspace building."""
    from nextstat.tune import significance_objective

    spent = {"suggest": 0.0, "workspace": 0.0, "objective": 0.0}

    def build(trial):  # the search space and rejection of examples/optuna_binning.py:make_build
        t0 = time.perf_counter()
        n_bins = trial.suggest_int("n_bins", 3, 40)
        lo = trial.suggest_float("lo", 0.0, 0.3)
        hi = trial.suggest_float("hi", 0.7, 1.0)
        t1 = time.perf_counter()
        ws = ex.make_workspace(*events, n_bins, lo, hi)
        spent["suggest"] += t1 - t0
        spent["workspace"] += time.perf_counter() - t1
        if ws is None:
            raise optuna.TrialPruned("too few simulated background events in a bin")
        return ws

    objective = significance_objective(build)

    def timed(trial):
        t = time.perf_counter()
        try:
            return objective(trial)
        finally:
            spent["objective"] += time.perf_counter() - t

    study = optuna.create_study(direction=objective.direction,
                                sampler=optuna.samplers.TPESampler(seed=0))
    c0, t0 = time.process_time(), time.perf_counter()
    study.optimize(timed, n_trials=N_TRIALS)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    score = spent["objective"] - spent["suggest"] - spent["workspace"]
    return {"wall_s": wall, "cpu_s": cpu, "workspace_s": spent["workspace"], "score_s": score,
            "optuna_s": wall - spent["workspace"] - score, "pruned": pruned,
            "best_value": study.best_value, "best_params": study.best_params,
            "params": [t.params for t in study.trials]}


def breakdown(ex, events, params: list[dict]) -> dict:
    import nextstat
    from nextstat.tune import _asimov

    steps: dict[str, list[float]] = {"workspace": [], "from_pyhf": [], "hypotest": []}
    for p in params:
        t0 = time.perf_counter()
        ws = ex.make_workspace(*events, **p)
        t1 = time.perf_counter()
        steps["workspace"].append(t1 - t0)
        if ws is None:
            continue
        model = nextstat.from_pyhf(ws)
        t2 = time.perf_counter()
        nextstat.hypotest(model, 0.0, data=_asimov(model, 1.0), test_stat="q0")
        t3 = time.perf_counter()
        steps["from_pyhf"].append(t2 - t1)
        steps["hypotest"].append(t3 - t2)
    return {k: statistics.median(v) for k, v in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm in-process studies (default 3)")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = machine_info()
    info.pop("peer", None)
    info["versions"]["optuna"] = metadata.version("optuna")

    print("end to end (fresh process) ...", flush=True)
    e2e = end_to_end()
    print(f"  {e2e['process_wall_s']:.2f} s process, {e2e['study_wall_s']:.2f} s study", flush=True)

    ex = load_example()
    events = ex.make_events(0)
    ex.run_study(5, events=events)  # load the compiled kernels
    runs = []
    for i in range(args.repeat):
        runs.append(warm_study(ex, events, optuna))
        print(f"  warm run {i + 1}: {runs[-1]['wall_s']:.2f} s wall, {runs[-1]['cpu_s']:.2f} s CPU",
              flush=True)
    steps = breakdown(ex, events, runs[0]["params"])
    load_end = round(__import__("os").getloadavg()[0], 2)

    median_wall = statistics.median(r["wall_s"] for r in runs)
    median_cpu = statistics.median(r["cpu_s"] for r in runs)
    median = {k: statistics.median(r[k] for r in runs) for k in ("workspace_s", "score_s", "optuna_s")}
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    rows = [
        ["end to end: `python examples/optuna_binning.py` (fresh process)",
         f"{e2e['process_wall_s']:.2f}", "—", "—"],
        ["end to end: study time printed by that process (cold kernels)",
         f"{e2e['study_wall_s']:.2f}", "—", f"{N_TRIALS / e2e['study_wall_s']:.0f}"],
        [f"warm study in process (median of {args.repeat})", f"{median_wall:.2f}", f"{median_cpu:.2f}",
         f"{N_TRIALS / median_wall:.0f}"],
        ["  of which: histogramming + workspace (`make_workspace`)", f"{median['workspace_s']:.2f}", "—", "—"],
        ["  of which: scoring (`from_pyhf` + `hypotest`, valid binnings)", f"{median['score_s']:.2f}", "—", "—"],
        ["  of which: Optuna (TPE sampling in `suggest_*`, bookkeeping)", f"{median['optuna_s']:.2f}", "—", "—"],
    ]
    step_rows = [
        ["histogram pre-sorted events + build workspace", f"{steps['workspace'] * 1e3:.3f}"],
        ["`nextstat.from_pyhf` (validate + compile)", f"{steps['from_pyhf'] * 1e3:.3f}"],
        ["`nextstat.hypotest(model, 0, data=asimov)` (Z0)", f"{steps['hypotest'] * 1e3:.3f}"],
    ]
    report = f"""# NextStat speed benchmark: 200-trial Optuna binning study

Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; {versions}.
Load average (1 min) at the end: {load_end} — the machine is shared; CPU time is the steadier number.
Generated by `benchmarks/bench_optuna.py` on {datetime.now():%Y-%m-%d %H:%M}.

Study: `examples/optuna_binning.py` — {N_TRIALS} trials of TPE (seed 0) over (n_bins, lo, hi), expected
(Asimov) Z0 of a one-channel workspace with a background normsys and staterror, binnings with
fewer than 10 effective simulated background events in a bin pruned ({runs[0]['pruned']} of {N_TRIALS}).
Best: Z0 = {runs[0]['best_value']:.3f} at {json.dumps({k: round(v, 4) for k, v in runs[0]['best_params'].items()})}.

## {N_TRIALS} trials

{markdown_table(["what", "wall s", "CPU s", "trials/s"], rows)}

## One trial, median over the study's binnings

{markdown_table(["step", "ms"], step_rows)}

Target: {N_TRIALS} trials end to end in <= 5 s (the study itself; imports and Python start-up come on top,
see the first row).
"""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "optuna.md").write_text(report)
    write_json(RESULTS_DIR / "optuna.json", {
        "machine": info, "load_avg_end": load_end, "n_trials": N_TRIALS, "end_to_end": e2e,
        "warm_runs": [{k: v for k, v in r.items() if k != "params"} for r in runs],
        "step_median_s": steps,
    })
    print(report)


if __name__ == "__main__":
    main()
