"""First-use timings in fresh processes: import, first fit, first hypotest, first loss step, demo.

Every figure is one fresh ``python`` process (median of ``--repeats``): *cold* runs get an empty
compiled-kernel cache (``NEXTSTAT_CACHE_DIR`` set to a new temporary directory), *warm* runs
the cache that the previous cold run filled. Each process checks its numbers against the
bundled example's reference (fit converged, mu finite) before a time is kept.

On a cold cache the first fits run on the PyTorch fitter while a background process compiles
the engine (:mod:`nextstat.engine.fitter`); the cold process waits for that child before it
exits, and "cold: compiled engine cached" is when it finished. "cold, compiled engine only"
is the first fit with ``NEXTSTAT_FITTER=compiled`` (compiling in the process, the time a first
fit took before the torch fitter served first use).

Python's own bytecode cache is on in the children (``PYTHONDONTWRITEBYTECODE`` removed from
their environment), as on a user's machine: with it set (as on the development machines), every
process compiles the package's modules from source again, about 0.1 s of each warm figure.

    python benchmarks/bench_startup.py --repeats 3 [--demo] [--no-cold] [--baseline ../base] [--output F]

Writes ``benchmarks/results/startup.md`` and prints a JSON line last. The issue's targets
(2-core machine): cold first fit <= 10 s, fit + hypotest + loss step <= 30 s, demo <= 90 s; warm
``import nextstat`` <= 0.3 s, import + first fit <= 1 s, first loss step <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, markdown_table  # noqa: E402

# each snippet prints one JSON object of seconds measured inside the process
_START = "import time, json, math\nt0 = time.perf_counter()\nimport nextstat\n"
_MODEL = "m = nextstat.from_pyhf(nextstat.examples.simple_workspace())\n"
_LOSS = """import torch
from nextstat.torch import SignificanceLoss
fn = SignificanceLoss(m, signal_sample_name="signal", device="cpu")
x = torch.full((fn.n_bins,), 5.0, dtype=torch.float64, requires_grad=True)
fn(x).backward()
assert math.isfinite(float(x.grad.sum()))
"""
_END = "t1 = time.perf_counter()\n"
SNIPPETS = {
    "import": _START + _END + 'print(json.dumps({"seconds": t1 - t0}))\n',
    "import+fit": _START + _MODEL + "r = nextstat.fit(m)\n" + _END
    + 'assert r.converged and math.isfinite(r.mu), r\nprint(json.dumps({"seconds": t1 - t0, "mu": r.mu}))\n',
    "fit+hypotest+loss": _START + _MODEL + "r = nextstat.fit(m)\nt_fit = time.perf_counter()\n"
    + "h = nextstat.hypotest(m, 1.0)\nt_hyp = time.perf_counter()\n" + _LOSS + _END
    + "assert r.converged and 0.0 <= h.cls <= 1.0\n"
    + "from nextstat.engine import fitter\n"
    + "job = fitter.background_job()\ncompiled = job.wait() if job is not None else True\nt2 = time.perf_counter()\n"
    + "assert compiled and nextstat.fit(m).fitter == 'compiled'\n"
    + 'print(json.dumps({"seconds": t1 - t0, "fit": t_fit - t0, "hypotest": t_hyp - t_fit, "loss": t1 - t_hyp, '
    + '"fitter": r.fitter, "cached": t2 - t0}))\n',
    "import+loss": _START + _MODEL + _LOSS + _END + 'print(json.dumps({"seconds": t1 - t0}))\n',
}


def run_snippet(name: str, cache: Path, source: Path | None = None, **extra: str) -> dict:
    """Run snippet ``name`` in a fresh process with the compiled cache ``cache``, importing
    nextstat from ``source`` (a checkout's ``python/`` folder) where given."""
    env = {k: v for k, v in os.environ.items() if k not in ("NEXTSTAT_FITTER", "PYTHONDONTWRITEBYTECODE")}
    env.update(NEXTSTAT_CACHE_DIR=str(cache), NEXTSTAT_QUIET_COMPILE="1", TQDM_DISABLE="1", **extra)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [env.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SNIPPETS[name]], env=env, capture_output=True, text=True,
                         timeout=1800)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process"] = wall
    return result


def run_demo(cache: Path, out_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("NEXTSTAT_FITTER", "PYTHONDONTWRITEBYTECODE")}
    env.update(NEXTSTAT_CACHE_DIR=str(cache), NEXTSTAT_QUIET_COMPILE="1", TQDM_DISABLE="1")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "nextstat", "demo", "--out", str(out_dir), "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"demo failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--demo", action="store_true", help="also time `nextstat demo` (cold and warm)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold (empty cache) runs")
    ap.add_argument("--no-compiled-cold", action="store_true",
                    help="skip the cold first fit on the compiled engine only (~40 s per repeat)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of another revision (`git worktree add ../base REV`): its warm figures are "
                         "measured in the same run, interleaved with ours, and the ratios reported")
    ap.add_argument("--output", type=Path, default=RESULTS_DIR / "startup.md")
    args = ap.parse_args()
    base_source = None if args.baseline is None else args.baseline.resolve() / "python"
    if base_source is not None and not (base_source / "nextstat" / "__init__.py").is_file():
        raise SystemExit(f"--baseline: no python/nextstat in {args.baseline}")

    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="nextstat-bench-startup-") as tmp:
        for rep in range(args.repeats):
            cache = Path(tmp) / f"cache{0 if args.no_cold else rep}"  # warm only: one cache, filled once
            if not args.no_cold:
                cold = run_snippet("fit+hypotest+loss", cache)
                add("cold: first fit (s)", cold["fit"])
                add("cold: fit + hypotest + loss step (s)", cold["seconds"])
                add("cold: compiled engine cached, background (s)", cold["cached"])
                if not args.no_compiled_cold:
                    add("cold, compiled engine only: import + first fit (s)",
                        run_snippet("import+fit", Path(tmp) / f"compiled{rep}", NEXTSTAT_FITTER="compiled")["seconds"])
            elif rep == 0:
                run_snippet("fit+hypotest+loss", cache)  # fills the cache
            base_cache = Path(tmp) / "base"
            if base_source is not None and rep == 0:
                run_snippet("fit+hypotest+loss", base_cache, base_source)  # fills the baseline's cache
            for key, name in (("warm: import nextstat (s)", "import"), ("warm: import + first fit (s)", "import+fit"),
                              ("warm: import + first loss step (s)", "import+loss")):
                ours = run_snippet(name, cache)
                add(key, ours["seconds"])
                if base_source is not None:
                    base = run_snippet(name, base_cache, base_source)
                    if ours.get("mu") != base.get("mu"):  # the same numbers, or no timing
                        raise SystemExit(f"{name}: mu {ours.get('mu')!r} here, {base.get('mu')!r} in the baseline")
                    add("baseline " + key, base["seconds"])
            if args.demo:
                if not args.no_cold:
                    add("cold: nextstat demo (s)", run_demo(Path(tmp) / f"democache{rep}", Path(tmp) / f"d{rep}"))
                add("warm: nextstat demo (s)", run_demo(cache, Path(tmp) / f"w{rep}"))

    targets = {"cold: first fit (s)": 10, "cold: fit + hypotest + loss step (s)": 30, "cold: nextstat demo (s)": 90,
               "warm: import nextstat (s)": 0.3, "warm: import + first fit (s)": 1.0,
               "warm: import + first loss step (s)": 1.5}
    table = [[k, f"{statistics.median(v):.2f}", ", ".join(f"{x:.2f}" for x in v), targets.get(k, "")]
             for k, v in rows.items()]
    header = ["figure", "median", "runs", "target"]
    if base_source is not None:
        header.append("ours / baseline")
        for row in table:
            base = rows.get("baseline " + row[0])
            row.append(f"{statistics.median(rows[row[0]]) / statistics.median(base):.2f}" if base else "")
    info = machine_info()
    command = " ".join(["python benchmarks/bench_startup.py", *sys.argv[1:]])
    text = (f"# Startup (fresh processes)\n\n`{command}`\n\nMachine: {info}\n\n"
            + markdown_table(header, table) + "\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(json.dumps({k: statistics.median(v) for k, v in rows.items()}))


if __name__ == "__main__":
    main()
