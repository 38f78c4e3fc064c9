"""Compiling in a background process (nextstat.engine.warmup.BackgroundWarmup, jit.is_cached).

Each test runs in a fresh process with its own empty compiled cache, so that what it sees is
what a new user's process sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nextstat
from nextstat.engine.warmup import BackgroundWarmup


def _run(code: str, cache: Path) -> dict:
    env = dict(os.environ, NEXTSTAT_CACHE_DIR=str(cache), NEXTSTAT_QUIET_COMPILE="1", TQDM_DISABLE="1")
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


CALLER = """import json
import nextstat
from nextstat.engine import numba_core
from nextstat.engine.warmup import BackgroundWarmup, is_compiled
before = is_compiled("fit")
with BackgroundWarmup(["fit"]) as bg:
    started = bg.parts
    ok = bg.wait()
after = is_compiled("fit")
m = nextstat.from_pyhf(nextstat.examples.simple_workspace())
r = nextstat.fit(m)
k = numba_core.fit_with_errors
again = BackgroundWarmup(["fit"])
print(json.dumps({"before": before, "started": list(started), "ok": ok, "after": after, "mu": r.mu,
                  "converged": r.converged, "misses": sum(k.stats.cache_misses.values()),
                  "hits": sum(k.stats.cache_hits.values()), "again": list(again.parts), "again_ok": again.wait()}))
"""


def test_background_process_compiles_what_the_caller_then_loads(tmp_path: Path):
    out = _run(CALLER, tmp_path / "cache")
    assert out["before"] is False and out["started"] == ["fit"] and out["ok"] is True
    assert out["after"] is True
    # the caller's first fit loaded the child's code instead of compiling it again
    assert out["misses"] == 0 and out["hits"] == 1
    reference = nextstat.fit(nextstat.from_pyhf(nextstat.examples.simple_workspace()))
    assert out["converged"] and out["mu"] == reference.mu  # the same compiled code
    assert out["again"] == [] and out["again_ok"] is True  # compiled already: no second child


KILLED = """import json
from nextstat.engine.warmup import BackgroundWarmup
with BackgroundWarmup(["hypotest"]) as bg:
    proc = bg._proc
print(json.dumps({"returncode": proc.returncode, "ok": bg.wait()}))
"""


def test_child_still_running_at_the_end_of_the_block_is_stopped(tmp_path: Path):
    out = _run(KILLED, tmp_path / "cache")
    assert out["returncode"] is not None and out["returncode"] < 0  # killed, not left running
    assert out["ok"] is False


def test_unknown_part_is_refused():
    with pytest.raises(ValueError, match="parts: unknown"):
        BackgroundWarmup(["fits"])


WARMUP_ALONE = """import json, os
import nextstat.engine.fitter as fitter
import nextstat.engine.jit as jit
import nextstat.engine.warmup as warmup
jit.is_cached = lambda dispatcher: False  # as on a first use: nothing is in the compiled cache
started = []
class Job:
    def running(self):
        return False
fitter.background_compile = lambda *a, **k: started.append(a) or Job()
warmup._steps = lambda model: {"fit": lambda: None}  # the model's construction alone
steps = warmup.warmup(["fit"], progress=False)
print(json.dumps({"started": len(started), "parts": [s.part for s in steps],
                  "env": os.environ.get("NEXTSTAT_FITTER")}))
"""


def test_warmup_starts_no_background_compilation_of_its_own():
    """``nextstat warmup`` compiles in its own process: building its example model (which
    computes rates) must not start the first-use background compilation too (it did: two
    processes then compiled the same kernels on the same cores)."""
    env = dict(os.environ, NEXTSTAT_QUIET_COMPILE="1", TQDM_DISABLE="1")
    env.pop("NEXTSTAT_FITTER", None)
    out = subprocess.run([sys.executable, "-c", WARMUP_ALONE], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"started": 0, "parts": ["fit"], "env": None}
