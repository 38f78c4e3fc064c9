"""Regenerate tests/reference/pyhf_toys_reference.json: pyhf 0.7.6 toy-based hypothesis tests.

pyhf's ``ToyCalculator`` fits every toy with SciPy (two fits per toy), far too slow for the test
suite at the toy counts needed for a sharp comparison, so its results are recorded here and
``tests/infer/test_toys.py`` compares NextStat's toys with them within the Monte Carlo errors.

Run from the repository root with the test dependencies installed (about 10-20 minutes)::

    python tests/reference/make_toy_reference.py
    python tests/reference/make_toy_reference.py --ntoys 500 --only simple_qtilde   # quick look

For each case it records what ``pyhf.infer.hypotest(mu, data, model, calctype="toybased",
return_tail_probs=True, return_expected_set=True)`` computes (the ``ToyCalculator`` steps are
called one by one to also keep the expected CLsb band, which gives the expected p0 for q0), plus
the two sampled test-statistic distributions, with numpy's global RNG seeded (pyhf samples
with ``scipy.stats`` on it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyhf

OUT = Path(__file__).with_name("pyhf_toys_reference.json")


def _workspace(signal: list[float], bkg: list[float], bkg_unc: list[float], observed: list[float]) -> dict:
    """``pyhf.simplemodels.uncorrelated_background`` as a full workspace with observations."""
    model = pyhf.simplemodels.uncorrelated_background(signal, bkg, bkg_unc)
    return {
        "channels": model.spec["channels"],
        "observations": [{"name": "singlechannel", "data": observed}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


CASES = {
    # the brief's small model: 5 signal on 10 +- 3.5 background, 12 observed; CLs ~ 0.4
    "simple_qtilde": dict(ws=_workspace([5.0], [10.0], [3.5], [12.0]), mu=1.0, test_stat="qtilde"),
    # two bins, CLs ~ 0.05
    "twobin_qtilde": dict(ws=_workspace([6.0, 4.0], [10.0, 8.0], [2.0, 2.5], [9.0, 8.0]), mu=1.0, test_stat="qtilde"),
    # discovery: an excess in two bins
    "twobin_q0": dict(ws=_workspace([6.0, 4.0], [10.0, 8.0], [2.0, 2.5], [17.0, 12.0]), mu=0.0, test_stat="q0"),
}


def _numpy2_percentile_shim() -> None:
    """pyhf 0.7.6's NumPy backend calls ``np.percentile(..., interpolation=...)``, a keyword
    NumPy 2 removed (renamed ``method``, same meaning), so ``ToyCalculator.expected_pvalues``
    raises TypeError there. Route it to ``method``; nothing else changes."""
    backend = pyhf.tensor.numpy_backend

    def percentile(self, tensor_in, q, axis=None, interpolation="linear"):
        return np.percentile(tensor_in, q, axis=axis, method=interpolation)

    backend.percentile = percentile


def run(key: str, ntoys: int, seed: int) -> dict:
    case = CASES[key]
    workspace = pyhf.Workspace(case["ws"])
    model = workspace.model()
    data = workspace.data(model)
    np.random.seed(seed)
    t0 = time.perf_counter()
    calc = pyhf.infer.calculators.ToyCalculator(data, model, test_stat=case["test_stat"], ntoys=ntoys,
                                                track_progress=False)
    q_obs = float(calc.teststatistic(case["mu"]))
    sb, b = calc.distributions(case["mu"])
    clsb, clb, cls = (float(x) for x in calc.pvalues(q_obs, sb, b))
    bands = calc.expected_pvalues(sb, b)
    seconds = time.perf_counter() - t0
    return {
        "workspace": case["ws"],
        "mu": case["mu"],
        "test_stat": case["test_stat"],
        "ntoys": ntoys,
        "numpy_seed": seed,
        "q_obs": q_obs,
        "clsb": clsb,
        "clb": clb,
        "cls": cls,
        "clsb_expected": [float(x) for x in bands[0]],
        "cls_expected": [float(x) for x in bands[2]],
        "q_sb": [float(f"{x:.8g}") for x in np.sort(np.asarray(sb.samples))],
        "q_b": [float(f"{x:.8g}") for x in np.sort(np.asarray(b.samples))],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ntoys", type=int, default=4000, help="toys per hypothesis")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to (re)compute; others are kept")
    args = parser.parse_args()
    if int(np.__version__.split(".")[0]) >= 2:
        _numpy2_percentile_shim()
    pyhf.set_backend("numpy")
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    out["_meta"] = {"pyhf": pyhf.__version__, "numpy": np.__version__, "script": "tests/reference/make_toy_reference.py"}
    for key in args.only or CASES:
        print(f"{key}: {args.ntoys} toys per hypothesis ...", flush=True)
        out[key] = run(key, args.ntoys, args.seed)
        print(f"  CLs={out[key]['cls']:.4f} CLsb={out[key]['clsb']:.4f} CLb={out[key]['clb']:.4f} "
              f"({out[key]['seconds']:.0f} s)", flush=True)
        OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
