"""Run one operation of the speed peer (PyPI ``nextstat`` 0.10.1, a Rust engine) and time it.

Executed with the peer venv's interpreter (see ``setup_peer.sh``); it imports the *peer's*
``nextstat`` and never ours. Reads one JSON request on stdin, prints one JSON reply on stdout.

Request::

    {
      "workspace": "path/to/ws.json[.gz]" | {...inline pyhf workspace...},
      "patches": [[{"op": ...}, ...], ...],      # optional JSON Patches, applied in order
      "operation": "nll" | "fit" | "hypotest" | "hypotest_q0" | "ranking"
                   | "fit_toys" | "upper_limit",
      "params": {...},                           # per operation, see below
      "repeat": 5, "warmup": 1,                  # timed / untimed calls
      "budget_s": 10.0,                          # optional: stop timing after this many seconds
      "threads": 1                               # optional: Rayon threads (default: all cores)
    }

``params`` by operation (parameter points are ``{name: value}`` dicts keyed by pyhf's
``model.config.par_names``; missing names keep the peer's suggested initial value):

* ``nll``: ``points`` (list of points) -> ``nll`` (list of floats).
* ``fit``: none -> ``nll``, ``mu_hat``, ``bestfit``/``errors`` (by name), ``converged``.
* ``hypotest``: ``mu`` (default 1.0) -> ``cls``, ``clsb``, ``clb`` (asymptotic, qtilde).
* ``hypotest_q0``: none -> ``q0``, ``p0``, ``z0``, ``mu_hat`` (discovery test, from a profile
  scan at mu = 0: the peer has no CPU discovery hypotest).
* ``ranking``: none -> ``ranking`` (list of peer ranking entries).
* ``fit_toys``: ``n_toys`` (100), ``seed`` (42), ``point`` (default suggested init) ->
  ``n_toys``, ``n_converged``, ``mu_hat_mean``, ``mu_hat_std``.
* ``upper_limit``: ``alpha`` (0.05), ``method`` (``"root"``: also ``exp``, the 5 expected band
  values; ``"bisect"``: observed only) -> ``obs``, ``exp``.

Reply: ``{"operation", "result", "times_s", "warmup", "peer_version", "parameter_names",
"setup_s"}``, or ``{"error": "..."}`` with exit status 1.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import apply_patches, read_json, timeit  # noqa: E402

import nextstat as peer  # noqa: E402  (the peer, not our package: run in the peer venv)

Point = dict[str, float]


def load_model(request: dict[str, Any]) -> Any:
    """Build the peer's HistFactoryModel from the request's workspace and patches."""
    workspace = request["workspace"]
    spec = workspace if isinstance(workspace, dict) else read_json(Path(workspace))
    patches = request.get("patches") or []
    if patches:
        spec = apply_patches(spec, patches)
    return peer.from_pyhf(json.dumps(spec))


def to_vector(model: Any, point: Point) -> list[float]:
    """Map a ``{name: value}`` point onto the peer's parameter order.

    Unknown names raise: a silent mismatch would make any agreement check meaningless.
    """
    names = model.parameter_names()
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(point) - set(index))
    if unknown:
        raise KeyError(f"parameters unknown to the peer: {unknown[:10]}")
    values = list(model.suggested_init())
    for name, value in point.items():
        values[index[name]] = float(value)
    return values


def _poi(model: Any) -> int:
    poi = model.poi_index()
    if poi is None:
        raise ValueError("model has no parameter of interest")
    return poi


def op_nll(model: Any, params: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """NLL at each point of ``params['points']``."""
    vectors = [to_vector(model, p) for p in params.get("points", [{}])]
    return (
        lambda: [model.nll(v) for v in vectors],
        lambda out: {"nll": out},
    )


def op_fit(model: Any, params: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """Unconditional MLE with Hessian errors (peer's ``nextstat.fit``)."""
    names = model.parameter_names()
    poi = model.poi_index()

    def summary(res: Any) -> dict[str, Any]:
        return {
            "nll": res.nll,
            "mu_hat": None if poi is None else res.parameters[poi],
            "converged": res.converged,
            "bestfit": dict(zip(names, res.parameters)),
            "errors": dict(zip(names, res.uncertainties)),
            "termination_reason": res.termination_reason,
        }

    return (lambda: peer.fit(model), summary)


def op_hypotest(
    model: Any, params: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """Asymptotic CLs with qtilde at ``params['mu']`` (default 1)."""
    mu = float(params.get("mu", 1.0))

    def summary(out: Any) -> dict[str, Any]:
        cls, (clsb, clb) = out
        return {"mu": mu, "cls": cls, "clsb": clsb, "clb": clb}

    return (lambda: peer.hypotest(mu, model, return_tail_probs=True), summary)


def op_hypotest_q0(
    model: Any, params: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """Discovery test statistic (arXiv:1007.1727 Eq. 12) from a profile scan at mu = 0.

    q0 = 2 (NLL(mu=0, profiled) - NLL_hat) for mu_hat >= 0, else 0; Z0 = sqrt(q0).
    """

    def summary(scan: dict[str, Any]) -> dict[str, Any]:
        mu_hat = scan["mu_hat"]
        q0 = max(2.0 * (scan["points"][0]["nll_mu"] - scan["nll_hat"]), 0.0) if mu_hat >= 0 else 0.0
        z0 = math.sqrt(q0)
        return {"q0": q0, "z0": z0, "p0": 0.5 * math.erfc(z0 / math.sqrt(2.0)), "mu_hat": mu_hat}

    return (lambda: peer.profile_scan(model, [0.0]), summary)


def op_ranking(
    model: Any, params: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """Nuisance-parameter impacts on the POI (peer's ``nextstat.ranking``)."""
    return (lambda: peer.ranking(model), lambda out: {"ranking": list(out)})


def op_fit_toys(
    model: Any, params: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """Poisson toys generated at ``params['point']`` and fitted (peer batch mode, no Hessian)."""
    n_toys = int(params.get("n_toys", 100))
    seed = int(params.get("seed", 42))
    point = to_vector(model, params.get("point", {}))
    poi = _poi(model)

    def summary(results: list[Any]) -> dict[str, Any]:
        mus = [r.parameters[poi] for r in results if r.converged]
        return {
            "n_toys": len(results),
            "n_converged": len(mus),
            "mu_hat_mean": statistics.fmean(mus) if mus else None,
            "mu_hat_std": statistics.stdev(mus) if len(mus) > 1 else None,
        }

    return (lambda: peer.fit_toys(model, point, n_toys=n_toys, seed=seed), summary)


def op_upper_limit(
    model: Any, params: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[Any], dict]]:
    """Asymptotic CLs upper limit: ``method="root"`` (default) gives observed and 5 expected."""
    alpha = float(params.get("alpha", 0.05))
    method = params.get("method", "root")
    if method not in ("root", "bisect"):
        raise ValueError(f"upper_limit method must be 'root' or 'bisect', got {method!r}")

    def summary(out: Any) -> dict[str, Any]:
        obs, exp = out if method == "root" else (out, None)
        expected = None if exp is None else list(exp)
        return {"alpha": alpha, "method": method, "obs": obs, "exp": expected}

    return (lambda: peer.upper_limit(model, method=method, alpha=alpha), summary)


OPERATIONS = {
    "nll": op_nll,
    "fit": op_fit,
    "hypotest": op_hypotest,
    "hypotest_q0": op_hypotest_q0,
    "ranking": op_ranking,
    "fit_toys": op_fit_toys,
    "upper_limit": op_upper_limit,
}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request and return the reply dict."""
    operation = request["operation"]
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; expected one of {list(OPERATIONS)}")
    threads = request.get("threads")
    if threads:
        peer.set_threads(int(threads))

    start = time.perf_counter()
    model = load_model(request)
    setup_s = time.perf_counter() - start

    call, summarise = OPERATIONS[operation](model, request.get("params") or {})
    result = summarise(call())  # also serves as the first warm-up call
    warmup = max(int(request.get("warmup", 1)) - 1, 0)
    timing = timeit(call, int(request.get("repeat", 1)), warmup, request.get("budget_s"))
    return {
        "operation": operation,
        "result": result,
        "times_s": list(timing.times_s),
        "warmup": timing.warmup + 1,
        "setup_s": setup_s,
        "peer_version": peer.__version__,
        "parameter_names": model.parameter_names(),
    }


def main() -> int:
    """Read the request from stdin, print the reply; exit status 1 on error."""
    try:
        reply = handle(json.load(sys.stdin))
    except Exception as exc:  # noqa: BLE001 — report every failure as JSON to the harness
        error = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"error": error, "traceback": traceback.format_exc()}))
        return 1
    print(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
