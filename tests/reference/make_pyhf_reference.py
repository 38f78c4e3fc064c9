"""Regenerate tests/reference/pyhf_reference.json from pyhf 0.7.6 (the numerical oracle).

Run from the repository root with the test dependencies installed::

    python tests/reference/make_pyhf_reference.py            # all models (about 20-40 minutes)
    python tests/reference/make_pyhf_reference.py --only tttt

It reads the published likelihoods from $NEXTSTAT_WORKSPACES (default ../shared/workspaces) and
records, per model: NLL at two parameter points, the best fit, asymptotic CLs with its expected
band at mu = 1, the discovery p0, and (for some) CLs upper limits on a fixed scan grid. pyhf's
SciPy optimiser runs with a tight tolerance so that its numbers are precise enough to test against.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyhf

from nextstat import testing

OUT = Path(__file__).with_name("pyhf_reference.json")
SCAN = np.linspace(0.0, 5.0, 21)


# (patch, compute a limit scan?): per region an insensitive point (CLs ~ 1), and sensitive ones
SBOTTOM = {
    "RegionA": [("patch.sbottom_1000_131_1.json", False), ("patch.sbottom_1500_230_100.json", False),
                ("patch.sbottom_1300_205_60.json", True)],
    "RegionB": [("patch.sbottom_1000_131_1.json", False), ("patch.sbottom_800_580_450.json", False),
                ("patch.sbottom_600_300_60.json", True)],
    "RegionC": [("patch.sbottom_1000_131_1.json", False), ("patch.sbottom_1400_1150_60.json", False),
                ("patch.sbottom_1100_450_60.json", True)],
}


def cases() -> list[tuple[str, dict, list, dict]]:
    """(key, background workspace, patches, what to compute)."""
    out = []
    for region, patches in SBOTTOM.items():
        for name, limit in patches:
            out.append((f"sbottom/{region}/{name}", testing.sbottom(region), [testing.sbottom_patch(region, name)],
                        {"limit": limit}))
    for name in testing.erjr_patch_names():
        out.append((f"erjr/{name}", testing.erjr(), [testing.erjr_patch(name)], {"limit": False}))
    # pyhf's numpy backend takes ~10 minutes per tttt fit here (finite-difference gradients of
    # 249 parameters at tolerance 1e-10); its JAX backend (autodiff gradients) a few seconds
    out.append(("tttt", testing.tttt(), [], {"limit": False, "backend": "jax"}))
    return out


def perturbed(model: pyhf.pdf.Model) -> np.ndarray:
    rng = np.random.default_rng(7)
    init = np.asarray(model.config.suggested_init(), dtype=float)
    fixed = np.asarray(model.config.suggested_fixed())
    bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
    p = init + 0.1 * rng.standard_normal(init.size) * ~fixed
    return np.clip(p, bounds[:, 0], bounds[:, 1])


def compute(ws: dict, patches: list, what: dict, old: dict) -> dict:
    workspace = pyhf.Workspace(ws)
    model = workspace.model(patches=patches) if patches else workspace.model()
    data = np.asarray(workspace.data(model))
    init = np.asarray(model.config.suggested_init(), dtype=float)
    p1 = perturbed(model)
    rec: dict = {
        "par_names": model.config.par_names,
        "points": [init.tolist(), p1.tolist()],
        "nll": [float(-model.logpdf(p, data)[0]) for p in (init, p1)],
    }
    t0 = time.time()
    try:
        bestfit, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
        rec["fit"] = {"bestfit": np.asarray(bestfit).tolist(), "nll": float(twice_nll) / 2}
    except pyhf.exceptions.FailedMinimization as exc:
        rec["fit"] = {"failed": str(exc)[:200]}
    try:
        cls, tails, band = pyhf.infer.hypotest(1.0, data, model, return_tail_probs=True, return_expected_set=True)
        rec["hypotest_mu1"] = {"cls": float(cls), "clsb": float(tails[0]), "clb": float(tails[1]),
                               "cls_expected": [float(x) for x in band]}
        # for q0 pyhf returns p0 (= CLsb) first and CLb as the tail probability
        p0, _tails, p0_exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_tail_probs=True,
                                                 return_expected=True)
        rec["discovery"] = {"p0": float(p0), "p0_expected": float(p0_exp)}
    except pyhf.exceptions.FailedMinimization as exc:
        rec["hypotest_failed"] = str(exc)[:200]
    if what.get("limit") and "limit_scan" in old and old["limit_scan"]["scan"] == SCAN.tolist():
        rec["limit_scan"] = old["limit_scan"]  # slowest part: reuse unless --force
    elif what.get("limit"):
        obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=SCAN)
        rec["limit_scan"] = {"scan": SCAN.tolist(), "observed": float(obs), "expected": [float(x) for x in exp]}
    rec["seconds"] = time.time() - t0
    rec["backend"] = pyhf.tensorlib.name
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="substrings of the case keys to (re)compute")
    parser.add_argument("--force", action="store_true", help="recompute limit scans already recorded")
    args = parser.parse_args()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    ref = json.loads(OUT.read_text()) if OUT.exists() else {}
    keys = {key for key, *_ in cases()}
    ref = {k: v for k, v in ref.items() if k in keys}
    ref["_meta"] = {"pyhf": pyhf.__version__, "optimizer": "scipy SLSQP, tolerance 1e-10",
                    "backend": "numpy (jax for tttt)"}
    for key, ws, patches, what in cases():
        if args.only and not any(o in key for o in args.only):
            continue
        print(key, flush=True)
        pyhf.set_backend(what.get("backend", "numpy"), pyhf.optimize.scipy_optimizer(tolerance=1e-10))
        ref[key] = compute(ws, patches, what, {} if args.force else ref.get(key, {}))
        tmp = OUT.with_suffix(".tmp")
        tmp.write_text(json.dumps(ref, indent=1, sort_keys=True))
        tmp.replace(OUT)


if __name__ == "__main__":
    main()
