"""Speed benchmark: MLE fit and asymptotic CLs hypotest on published HistFactory likelihoods.

Tools compared (all on CPU):

* ``nextstat`` — this package (run in this process);
* ``peer`` — the Rust engine published on PyPI as ``nextstat`` 0.10.1, run through
  ``peer_runner.py`` in its own venv (``bash benchmarks/setup_peer.sh``);
* ``pyhf`` — pyhf 0.7.6, numpy backend, default scipy optimiser (the numerical oracle);
* ``pyhf-jax`` — pyhf 0.7.6, jax backend (x64, CPU), scipy optimiser with jax gradients.

For every model the harness first **checks agreement** and only then times:

1. NLL at two parameter points (pyhf's suggested init and a perturbed point) must match pyhf's
   ``-logpdf`` to ``RTOL_NLL_POINT`` (relative);
2. each tool's best fit, re-evaluated with pyhf's NLL, must be within ``RTOL_NLL_BESTFIT``
   (relative to ``max(1, |NLL|)``) of the lowest best fit found by any agreeing tool — a tool that
   stops short of the minimum is doing a different computation;
3. CLs at mu = 1 (qtilde) must be within ``ATOL_CLS`` of the median CLs of the agreeing tools.

A tool failing a check is not timed for the affected operation: its cell reads ``✗`` and the
reason is printed and written to the report.

Timing: wall time of one call on an already-built model (model building excluded), after the
check calls have warmed up any JIT; up to ``--repeat`` calls, stopping early once a tool has
spent ``--budget`` seconds on one operation; the median is reported. Tools whose single call is
known to take minutes (pyhf numpy on tttt) or whose fit took longer than ``--max-call`` seconds
in the check are skipped unless ``--include-slow``.

Usage::

    python benchmarks/bench_fit.py                       # all models, ~5-8 minutes on 2 cores
    python benchmarks/bench_fit.py --quick               # 1 repeat, small budgets
    python benchmarks/bench_fit.py --models simple sbottom-A --repeat 20

Writes ``benchmarks/results/fit.md`` (tables) and ``benchmarks/results/fit.json`` (raw numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    WORKSPACE_LOADERS,
    BenchWorkspace,
    PeerError,
    Timing,
    format_ms,
    format_ratio,
    load_workspace,
    machine_info,
    markdown_table,
    run_peer,
    timeit,
    write_json,
)

RTOL_NLL_POINT = 1e-8
"""NLL at a fixed point: relative tolerance against pyhf."""
RTOL_NLL_BESTFIT = 1e-6
"""Best-fit NLL: tolerance relative to ``max(1, |NLL|)``."""
ATOL_CLS = 1e-4
"""CLs at mu = 1: absolute tolerance against the median of the agreeing tools."""
MU_TEST = 1.0

TOOLS = ("nextstat", "peer", "pyhf", "pyhf-jax")
REFERENCE = "nextstat"
"""Denominator of the speed ratios."""
OPERATIONS = ("fit", "hypotest")

KNOWN_SLOW: dict[tuple[str, str], str] = {
    ("tttt", "pyhf"): "≈160 s per fit (finite-difference gradients over 249 parameters)",
}
"""(model, tool) pairs skipped (except for the NLL check) unless ``--include-slow``."""


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOutcome:
    """What the agreement check needs from one fit.

    Attributes:
        nll: best-fit NLL reported by the tool.
        bestfit: best-fit parameters in pyhf's ``par_names`` order.
        mu_hat: best-fit POI.
        converged: the tool's own convergence flag (None if it has none).
        seconds: wall time of this (first, possibly JIT-compiling) call.
    """

    nll: float
    bestfit: np.ndarray
    mu_hat: float
    converged: bool | None
    seconds: float


class Tool(ABC):
    """One engine under test, holding one built model at a time."""

    name: str
    note: str
    """How this tool fits (for the report)."""

    @abstractmethod
    def build(self, bench: BenchWorkspace, spec: dict[str, Any], par_names: list[str]) -> None:
        """Build the model for the patched workspace ``spec`` (untimed)."""

    @abstractmethod
    def nll(self, points: np.ndarray) -> list[float]:
        """NLL at each row of ``points`` (parameters in pyhf order)."""

    @abstractmethod
    def fit(self) -> FitOutcome:
        """Unconditional MLE on the observed data."""

    @abstractmethod
    def hypotest(self, mu: float) -> tuple[float, float]:
        """Asymptotic qtilde CLs at ``mu`` and the wall time of the call."""

    @abstractmethod
    def time(self, operation: str, repeat: int, budget_s: float) -> Timing:
        """Time ``operation`` (``"fit"`` or ``"hypotest"``) on the built model."""


class InProcessTool(Tool):
    """A tool called directly in this process.

    Subclasses provide the raw calls (``_fit_call``, ``_hypotest_call``) and how to read their
    results; checking and timing share those calls, so both measure the same thing.
    """

    def _activate(self) -> None:
        """Hook run before any call (pyhf: select the global backend)."""

    @abstractmethod
    def _fit_call(self) -> Any: ...

    @abstractmethod
    def _read_fit(self, result: Any) -> tuple[float, np.ndarray, float, bool | None]:
        """``(nll, bestfit in pyhf order, mu_hat, converged)`` from a ``_fit_call`` result."""

    @abstractmethod
    def _hypotest_call(self, mu: float) -> Any: ...

    @abstractmethod
    def _read_cls(self, result: Any) -> float:
        """Observed CLs from a ``_hypotest_call`` result."""

    def fit(self) -> FitOutcome:
        self._activate()
        start = time.perf_counter()
        result = self._fit_call()
        seconds = time.perf_counter() - start
        return FitOutcome(*self._read_fit(result), seconds=seconds)

    def hypotest(self, mu: float) -> tuple[float, float]:
        self._activate()
        start = time.perf_counter()
        result = self._hypotest_call(mu)
        seconds = time.perf_counter() - start
        return self._read_cls(result), seconds

    def time(self, operation: str, repeat: int, budget_s: float) -> Timing:
        self._activate()
        calls: dict[str, Callable[[], Any]] = {
            "fit": self._fit_call,
            "hypotest": lambda: self._hypotest_call(MU_TEST),
        }
        # The check already ran each call once on this model: JIT caches are warm.
        return timeit(calls[operation], repeat, warmup=0, budget_s=budget_s)


class NextStatTool(InProcessTool):
    """This package."""

    name = "nextstat"
    note = "nextstat.fit (with errors), nextstat.hypotest"

    def build(self, bench: BenchWorkspace, spec: dict[str, Any], par_names: list[str]) -> None:
        import nextstat

        self._ns = nextstat
        self.model = nextstat.from_pyhf(spec)
        if list(self.model.parameter_names) != par_names:
            raise RuntimeError("nextstat parameter order differs from pyhf's par_names")

    def nll(self, points: np.ndarray) -> list[float]:
        return [float(self.model.nll(p)) for p in points]

    def _fit_call(self) -> Any:
        return self._ns.fit(self.model)

    def _read_fit(self, result: Any) -> tuple[float, np.ndarray, float, bool | None]:
        bestfit = np.asarray(result.bestfit, dtype=float)
        return float(result.nll), bestfit, float(result.mu), bool(result.converged)

    def _hypotest_call(self, mu: float) -> Any:
        return self._ns.hypotest(self.model, mu=mu)

    def _read_cls(self, result: Any) -> float:
        return float(result.cls)


class PyhfTool(InProcessTool):
    """pyhf 0.7.6 with a given tensor backend and its default (scipy SLSQP) optimiser."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = "pyhf" if backend == "numpy" else f"pyhf-{backend}"
        self.note = (
            "scipy SLSQP, finite-difference gradients, no errors"
            if backend == "numpy"
            else f"scipy SLSQP with {backend} autodiff gradients (JIT), no errors"
        )

    def _activate(self) -> None:
        """Make our backend pyhf's global one.

        pyhf converts every live model on a backend switch (``tensorlib_changed`` event), and
        its jax JIT cache is keyed by model object, so models survive switching back and forth.
        """
        import pyhf

        if pyhf.tensorlib.name != self.backend:
            pyhf.set_backend(self.backend)

    def build(self, bench: BenchWorkspace, spec: dict[str, Any], par_names: list[str]) -> None:
        import pyhf

        pyhf.set_backend(self.backend)
        workspace = pyhf.Workspace(spec)
        self.model = workspace.model()
        self.data = pyhf.tensorlib.astensor(workspace.data(self.model))

    def nll(self, points: np.ndarray) -> list[float]:
        import pyhf

        self._activate()
        tl = pyhf.tensorlib
        return [float(-tl.tolist(self.model.logpdf(tl.astensor(p), self.data))[0]) for p in points]

    def _fit_call(self) -> Any:
        import pyhf

        return pyhf.infer.mle.fit(self.data, self.model, return_fitted_val=True)

    def _read_fit(self, result: Any) -> tuple[float, np.ndarray, float, bool | None]:
        import pyhf

        pars, twice_nll = result
        bestfit = np.asarray(pyhf.tensorlib.tolist(pars), dtype=float)
        # pyhf raises on a failed minimisation, so it has no convergence flag to report.
        return float(twice_nll) / 2.0, bestfit, float(bestfit[self.model.config.poi_index]), None

    def _hypotest_call(self, mu: float) -> Any:
        import pyhf

        return pyhf.infer.hypotest(mu, self.data, self.model, test_stat="qtilde")

    def _read_cls(self, result: Any) -> float:
        return float(result)


class PeerTool(Tool):
    """The PyPI ``nextstat`` 0.10.1 Rust engine, one ``peer_runner.py`` subprocess per request."""

    name = "peer"
    note = "Rust fit (L-BFGS) with Hessian errors, hypotest (qtilde); own venv, Rayon threads"

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def build(self, bench: BenchWorkspace, spec: dict[str, Any], par_names: list[str]) -> None:
        # The peer gets the already patched workspace through a temporary file.
        handle = tempfile.NamedTemporaryFile(
            "w", suffix=f"-{bench.key}.json", prefix="nextstat-bench-", delete=False
        )
        with handle:
            json.dump(spec, handle)
        self.path = handle.name
        self.par_names = par_names

    def close(self) -> None:
        """Remove the temporary workspace file."""
        if getattr(self, "path", None):
            Path(self.path).unlink(missing_ok=True)

    def _request(self, operation: str, params: dict[str, Any] | None = None, **extra: Any) -> dict:
        request = {"workspace": self.path, "operation": operation, "params": params or {}}
        if self.threads:
            request["threads"] = self.threads
        request.update(extra)
        return run_peer(request)

    def nll(self, points: np.ndarray) -> list[float]:
        named = [dict(zip(self.par_names, map(float, p))) for p in points]
        return self._request("nll", {"points": named})["result"]["nll"]

    def fit(self) -> FitOutcome:
        reply = self._request("fit", repeat=1, warmup=0)
        res = reply["result"]
        bestfit = np.array([res["bestfit"][n] for n in self.par_names], dtype=float)
        return FitOutcome(res["nll"], bestfit, res["mu_hat"], res["converged"], reply["times_s"][0])

    def hypotest(self, mu: float) -> tuple[float, float]:
        reply = self._request("hypotest", {"mu": mu}, repeat=1, warmup=0)
        return reply["result"]["cls"], reply["times_s"][0]

    def time(self, operation: str, repeat: int, budget_s: float) -> Timing:
        params = {"mu": MU_TEST} if operation == "hypotest" else {}
        reply = self._request(operation, params, repeat=repeat, warmup=1, budget_s=budget_s)
        return Timing(tuple(reply["times_s"]), reply["warmup"])


def make_tools(names: Sequence[str], peer_threads: int | None) -> list[Tool]:
    """Instantiate the requested tools (in ``TOOLS`` order)."""
    factories: dict[str, Callable[[], Tool]] = {
        "nextstat": NextStatTool,
        "peer": lambda: PeerTool(peer_threads),
        "pyhf": lambda: PyhfTool("numpy"),
        "pyhf-jax": lambda: PyhfTool("jax"),
    }
    return [factories[n]() for n in TOOLS if n in names]


# --------------------------------------------------------------------------------------------
# Agreement check
# --------------------------------------------------------------------------------------------


@dataclass
class ToolReport:
    """Everything measured for one tool on one model."""

    nll_points: list[float] | None = None
    fit: dict[str, Any] | None = None
    cls: float | None = None
    check_seconds: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    """Per operation: ``"ok"`` or why it was not timed."""
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def perturbed_point(model: Any, rng: np.random.Generator) -> np.ndarray:
    """pyhf's suggested init moved by about half a constraint width (10% for free parameters).

    Fixed parameters stay at their initial values; the point is clipped to the bounds.
    """
    init = np.asarray(model.config.suggested_init(), dtype=float)
    bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
    fixed = np.asarray(model.config.suggested_fixed(), dtype=bool)
    scale = np.maximum(np.abs(init), 1.0) * 0.1
    for name in model.config.par_order:
        paramset = model.config.param_set(name)
        if hasattr(paramset, "width"):
            scale[model.config.par_slice(name)] = 0.5 * np.asarray(paramset.width(), dtype=float)
    point = init + scale * rng.uniform(-1.0, 1.0, size=init.size)
    point[fixed] = init[fixed]
    return np.clip(point, bounds[:, 0], bounds[:, 1])


def _skip_reason(model_key: str, tool: Tool, include_slow: bool) -> str | None:
    if include_slow:
        return None
    reason = KNOWN_SLOW.get((model_key, tool.name))
    return f"skipped: {reason} (--include-slow)" if reason else None


def check_agreement(
    bench: BenchWorkspace,
    tools: Sequence[Tool],
    oracle: PyhfTool,
    *,
    include_slow: bool,
    max_call_s: float,
    allow_offset: bool,
    log: Callable[[str], None],
) -> dict[str, ToolReport]:
    """Run the agreement checks; fills each tool's ``status`` with ``"ok"`` or the reason."""
    model = oracle.model
    init = np.asarray(model.config.suggested_init(), dtype=float)
    points = np.stack([init, perturbed_point(model, np.random.default_rng(0))])
    oracle_nll = oracle.nll(points)
    reports = {tool.name: ToolReport() for tool in tools}

    # 1. NLL at fixed points, against the oracle.
    for tool in tools:
        rep = reports[tool.name]
        try:
            rep.nll_points = tool.nll(points)
        except Exception as exc:  # noqa: BLE001 — any failure disqualifies the tool
            rep.status = {op: f"✗ nll failed: {type(exc).__name__}: {exc}" for op in OPERATIONS}
            continue
        rel = [_rel(v, r) for v, r in zip(rep.nll_points, oracle_nll)]
        if max(rel) > RTOL_NLL_POINT:
            diffs = [v - r for v, r in zip(rep.nll_points, oracle_nll)]
            offset = abs(diffs[1] - diffs[0]) <= RTOL_NLL_POINT * abs(oracle_nll[0])
            kind = "constant offset" if offset else "disagreement"
            msg = f"NLL {kind} vs pyhf: Δ = {diffs[0]:+.3e} / {diffs[1]:+.3e} (rel {max(rel):.1e})"
            if not (offset and allow_offset):
                rep.status = {op: f"✗ {msg}" for op in OPERATIONS}
            log(f"  {tool.name}: {msg}")

    # 2. Best fit, re-evaluated with the oracle's NLL.
    for tool in tools:
        rep = reports[tool.name]
        reason = rep.status.get("fit") or _skip_reason(bench.key, tool, include_slow)
        if reason:
            rep.status = {op: rep.status.get(op, reason) for op in OPERATIONS}
            continue
        try:
            outcome = tool.fit()
        except Exception as exc:  # noqa: BLE001
            rep.status = {op: f"✗ fit failed: {type(exc).__name__}: {exc}" for op in OPERATIONS}
            continue
        rep.check_seconds["fit"] = outcome.seconds
        rep.fit = {
            "nll": outcome.nll,
            "nll_pyhf_at_bestfit": oracle.nll(outcome.bestfit[None, :])[0],
            "mu_hat": outcome.mu_hat,
            "converged": outcome.converged,
        }
    fitted = {n: r.fit["nll_pyhf_at_bestfit"] for n, r in reports.items() if r.fit is not None}
    best = min(fitted.values()) if fitted else None
    for name, value in fitted.items():
        rep = reports[name]
        excess = value - best
        if excess > RTOL_NLL_BESTFIT * max(1.0, abs(best)):
            msg = f"✗ best fit NLL {excess:.3e} above the lowest found ({best:.8f})"
            rep.status = {op: msg for op in OPERATIONS}
            log(f"  {name}: {msg}")
        else:
            rep.status["fit"] = "ok"

    # 3. CLs at mu = 1 among the tools whose fit agreed.
    for tool in tools:
        rep = reports[tool.name]
        if rep.status.get("fit") != "ok":
            continue
        if rep.check_seconds["fit"] > max_call_s and not include_slow:
            rep.status["hypotest"] = (
                f"skipped: fit took {rep.check_seconds['fit']:.0f} s > --max-call {max_call_s:g} s"
            )
            continue
        try:
            rep.cls, rep.check_seconds["hypotest"] = tool.hypotest(MU_TEST)
        except Exception as exc:  # noqa: BLE001
            rep.status["hypotest"] = f"✗ hypotest failed: {type(exc).__name__}: {exc}"
    cls_values = {n: r.cls for n, r in reports.items() if r.cls is not None}
    if cls_values:
        median = statistics.median(cls_values.values())
        for name, cls in cls_values.items():
            if abs(cls - median) > ATOL_CLS:
                msg = f"✗ CLs {cls:.6g} vs median {median:.6g}"
                reports[name].status["hypotest"] = msg
                log(f"  {name}: {msg}")
            else:
                reports[name].status["hypotest"] = "ok"
    return reports


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def bench_model(
    key: str, tools: Sequence[Tool], args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """Check and time every tool on model ``key``; returns the JSON-ready record."""
    bench = load_workspace(key)
    spec = bench.patched()
    oracle = PyhfTool("numpy")
    oracle.build(bench, spec, [])
    par_names = list(oracle.model.config.par_names)
    n_bins = int(sum(oracle.model.config.channel_nbins.values()))
    log(f"{key}: {bench.description} — {len(par_names)} parameters, {n_bins} bins")

    built: list[Tool] = []
    failed: dict[str, ToolReport] = {}
    for tool in tools:
        try:
            tool.build(bench, spec, par_names)
        except Exception as exc:  # noqa: BLE001 — report the tool, benchmark the others
            reason = f"✗ build failed: {type(exc).__name__}: {exc}"
            failed[tool.name] = ToolReport(status={op: reason for op in OPERATIONS})
        else:
            built.append(tool)
    try:
        reports = failed | check_agreement(
            bench,
            built,
            oracle,
            include_slow=args.include_slow,
            max_call_s=args.max_call,
            allow_offset=args.allow_offset,
            log=log,
        )
        for tool in built:
            rep = reports[tool.name]
            for op in OPERATIONS:
                if rep.status.get(op) != "ok":
                    continue
                try:
                    timing = tool.time(op, args.repeat, args.budget)
                except (PeerError, RuntimeError) as exc:
                    rep.status[op] = f"✗ timing failed: {exc}"
                    continue
                rep.timings[op] = timing.to_dict()
                log(
                    f"  {tool.name:9s} {op:9s} median {timing.median_s * 1e3:10.2f} ms"
                    f"  ({len(timing.times_s)} runs)"
                )
    finally:
        for tool in built:
            if isinstance(tool, PeerTool):
                tool.close()
    for name, rep in reports.items():
        for op, status in rep.status.items():
            if status != "ok":
                log(f"  {name:9s} {op:9s} {status}")
    return {
        "key": key,
        "description": bench.description,
        "n_params": len(par_names),
        "n_bins": n_bins,
        "tools": {name: asdict(rep) for name, rep in reports.items()},
    }


def _cell(record: dict[str, Any], tool: str, op: str) -> str | None:
    rep = record["tools"].get(tool)
    if rep is None:
        return None
    timing = rep["timings"].get(op)
    if timing is not None:
        return format_ms(timing["median_s"])
    status = rep["status"].get(op, "")
    return "✗" if status.startswith("✗") else "skipped"


def _ratio(record: dict[str, Any], tool: str, op: str) -> str | None:
    try:
        num = record["tools"][tool]["timings"][op]["median_s"]
        den = record["tools"][REFERENCE]["timings"][op]["median_s"]
    except KeyError:
        return None
    return format_ratio(num / den)


def render_markdown(
    records: Sequence[dict[str, Any]], tool_objects: Sequence[Tool], meta: dict[str, Any]
) -> str:
    """The report: machine, one timing table per operation, the agreement table and notes."""
    tools = [t.name for t in tool_objects]
    machine = meta["machine"]
    settings = meta["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        "# NextStat speed benchmark: fit and asymptotic hypotest",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}; "
        f"{versions}. Load average (1 min) at start: {machine['load_avg_1m']} — the machine "
        "is shared, so compare ratios within one run rather than absolute times across runs.",
        f"Peer: {machine['peer']}. Generated by `benchmarks/bench_fit.py` on {meta['date']}.",
        "",
        f"Median wall time per call in ms (model already built; up to {settings['repeat']} runs, "
        f"at most {settings['budget_s']:g} s per tool and operation). Ratios are tool / NextStat: "
        "above 1 means NextStat is faster. `✗`: disagreed, not timed (see notes); `skipped`: too "
        "slow for a default run.",
        "",
        "Tools: " + "; ".join(f"**{t.name}**: {t.note}" for t in tool_objects) + ".",
    ]
    others = [t for t in tools if t != REFERENCE]
    titles = {
        "fit": "MLE fit",
        "hypotest": f"Asymptotic CLs hypotest at mu = {MU_TEST:g} (qtilde)",
    }
    for op, title in titles.items():
        headers = ["model", "pars", *[f"{t} ms" for t in tools]]
        headers += [f"{t}/{REFERENCE}" for t in others] if REFERENCE in tools else []
        rows = []
        for rec in records:
            row = [rec["key"], rec["n_params"], *[_cell(rec, t, op) for t in tools]]
            if REFERENCE in tools:
                row += [_ratio(rec, t, op) for t in others]
            rows.append(row)
        lines += ["", f"## {title}", "", markdown_table(headers, rows)]

    headers = ["model", *[f"{t} NLL̂ / μ̂ / CLs" for t in tools]]
    rows = []
    for rec in records:
        row: list[Any] = [rec["key"]]
        for t in tools:
            rep = rec["tools"].get(t)
            if rep is None or rep["fit"] is None:
                row.append(None)
                continue
            cls = "—" if rep["cls"] is None else f"{rep['cls']:.6g}"
            flag = " (not converged)" if rep["fit"]["converged"] is False else ""
            fit = rep["fit"]
            row.append(f"{fit['nll_pyhf_at_bestfit']:.8f} / {fit['mu_hat']:.5g} / {cls}{flag}")
        rows.append(row)
    lines += [
        "",
        "## Agreement",
        "",
        f"Checks: NLL at pyhf's init and a perturbed point vs pyhf (rel {RTOL_NLL_POINT:g}); "
        f"best fit re-evaluated with pyhf's NLL vs the lowest found (rel {RTOL_NLL_BESTFIT:g}); "
        f"CLs vs the median (abs {ATOL_CLS:g}). NLL̂ below is pyhf's NLL at each tool's best "
        "fit; 'not converged' is the tool's own flag.",
        "",
        markdown_table(headers, rows),
    ]
    notes = [
        f"- {rec['key']} / {name} / {op}: {status}"
        for rec in records
        for name, rep in rec["tools"].items()
        for op, status in rep["status"].items()
        if status != "ok"
    ]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    models = list(WORKSPACE_LOADERS)
    add("--models", nargs="+", choices=models, default=models, help="models to run")
    add("--tools", nargs="+", choices=TOOLS, default=list(TOOLS), help="tools to compare")
    add("--repeat", type=int, default=7, help="maximum timed calls per tool and operation")
    add("--budget", type=float, default=8.0, help="seconds per tool and operation, then stop")
    add("--max-call", type=float, default=10.0, help="skip hypotest if the fit took longer (s)")
    add("--quick", action="store_true", help="smoke run: 1 repeat, 1 s budget")
    add("--include-slow", action="store_true", help="also run calls known to take minutes")
    add("--allow-offset", action="store_true", help="time tools off pyhf by a constant NLL")
    add("--peer-threads", type=int, default=None, help="Rayon threads for the peer (None: all)")
    add("--output-dir", type=Path, default=RESULTS_DIR, help="where fit.md and fit.json go")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.budget = 1, 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the reports."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # pyhf's qtilde-with-unbounded-POI notice on tttt
    machine = machine_info()  # before the run: its load average shows the contention we start in
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    tools = make_tools(args.tools, args.peer_threads)
    records = [bench_model(key, tools, args, log) for key in args.models]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine,
        "settings": {
            "repeat": args.repeat,
            "budget_s": args.budget,
            "max_call_s": args.max_call,
            "include_slow": args.include_slow,
            "allow_offset": args.allow_offset,
            "peer_threads": args.peer_threads,
            "rtol_nll_point": RTOL_NLL_POINT,
            "rtol_nll_bestfit": RTOL_NLL_BESTFIT,
            "atol_cls": ATOL_CLS,
        },
        "total_s": time.perf_counter() - start,
    }
    tool_names = [t.name for t in tools]
    markdown = render_markdown(records, tools, meta)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "fit.md").write_text(markdown, encoding="utf-8")
    write_json(args.output_dir / "fit.json", {**meta, "tools": tool_names, "models": records})
    print()
    print(markdown)
    log(f"wrote {args.output_dir / 'fit.md'} and fit.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
