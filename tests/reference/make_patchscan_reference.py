"""Make the pyhf reference numbers for NextStat's patch-scan test (tests/test_tune.py).

For four signal points of the ATLAS sbottom multi-b search (HEPData ins1748602), RegionA, this
computes with pyhf 0.7.6 (NumPy backend, SciPy optimiser with ``tolerance=1e-10``, as the
pyhf comparisons in tests/infer/test_inference.py) the asymptotic ``qtilde`` CLs of ``mu_SIG = 1``::

    pyhf.infer.hypotest(1.0, workspace.data(model), model, test_stat="qtilde",
                        return_expected_set=True)

and writes ``patchscan_sbottom_A.json`` beside this script. The default SciPy tolerance leaves
pyhf's own CLs uncertain at the 1e-5 level on these models; 1e-10 makes the reference good to
~1e-7, so the test can require agreement to 1e-5.

It runs in the project venv (pyhf 0.7.6 is a test dependency), ~20 s per patch::

    python tests/reference/make_patchscan_reference.py

The workspaces are read from ``$NEXTSTAT_WORKSPACES/atlas-sbottom-ins1748602.tar.gz`` (default
folder ``../shared/workspaces`` next to the repository) through :mod:`nextstat.testing`;
nothing is copied into the repository.

Output JSON: ``region``, ``mu``, ``test_stat``, ``settings``, ``versions`` (pyhf, numpy, scipy,
python), ``runtime_s``, and ``patches``: one entry per patch file name with ``cls_obs`` and
``cls_exp`` (5 values, pyhf's ``return_expected_set`` order: -2 ... +2 sigma).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import pyhf
import scipy

from nextstat import testing

REGION = "RegionA"
PATCHES = (  # CLs from ~0.005 to ~0.64
    "patch.sbottom_1000_131_1.json",
    "patch.sbottom_1000_205_60.json",
    "patch.sbottom_1300_205_60.json",
    "patch.sbottom_1500_330_200.json",
)
MU = 1.0
TOLERANCE = 1e-10
OUTPUT = Path(__file__).with_name("patchscan_sbottom_A.json")


def main() -> None:
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=TOLERANCE))
    background = testing.sbottom(REGION)
    t0 = time.perf_counter()
    results = {}
    for name in PATCHES:
        workspace = pyhf.Workspace(background)
        model = workspace.model(patches=[testing.sbottom_patch(REGION, name)])
        cls_obs, cls_exp = pyhf.infer.hypotest(
            MU, workspace.data(model), model, test_stat="qtilde", return_expected_set=True
        )
        results[name] = {"cls_obs": float(cls_obs), "cls_exp": [float(c) for c in cls_exp]}
        print(f"{name}: CLs = {float(cls_obs):.8g}")
    out = {
        "region": REGION,
        "mu": MU,
        "test_stat": "qtilde",
        "settings": {"backend": "numpy", "optimizer": "scipy", "tolerance": TOLERANCE},
        "versions": {"pyhf": pyhf.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "python": platform.python_version()},
        "runtime_s": round(time.perf_counter() - t0, 1),
        "patches": results,
    }
    OUTPUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
