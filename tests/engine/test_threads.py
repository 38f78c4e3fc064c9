"""The engine's thread policy (nextstat.engine.threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nextstat.engine import threads

PROBE = """import json, os
from threadpoolctl import ThreadpoolController

def scipy_blas():
    import scipy.linalg  # noqa: F401
    return sorted({c.num_threads for c in ThreadpoolController().lib_controllers
                   if "scipy" in os.path.basename(c.filepath) and "64_" not in os.path.basename(c.filepath)})

before = scipy_blas()
import nextstat
import nextstat.engine.numba_core  # the kernels loaded, no model yet
import_only = scipy_blas()
nextstat.from_pyhf(nextstat.examples.simple_workspace())
print(json.dumps({"before": before, "import": import_only, "model": scipy_blas()}))
"""


@pytest.mark.parametrize("setting", [None, "2"])
def test_scipy_blas_pinned_when_a_model_is_compiled(setting):
    env = dict(os.environ, NEXTSTAT_QUIET_COMPILE="1")
    env.pop("NEXTSTAT_BLAS_THREADS", None)
    if setting:
        env["NEXTSTAT_BLAS_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["import"] == seen["before"]  # importing the engine changes nothing
    assert seen["model"] == [min(int(setting or 1), seen["before"][0])]


def test_usable_cpus_is_the_affinity_mask():
    assert threads.usable_cpus() == len(os.sched_getaffinity(0))
