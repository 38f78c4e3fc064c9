"""The engine's numbers stay what they were (tests/reference/engine_golden.json, written by
tests/reference/make_engine_golden.py before a refactor).

On the machine that wrote the file a refactor must leave them bit-identical
(``make_engine_golden.py --check``); here they are compared at tolerances that also hold on
other CPUs (BLAS kernels differ in their last bits), on the well-posed models only: the property
survey's edge-case workspaces are in the file for the bit-identity check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REF = Path(__file__).resolve().parents[1] / "reference"
sys.path.insert(0, str(REF))
import make_engine_golden as golden  # noqa: E402

STORED = json.loads((REF / "engine_golden.json").read_text())
MODELS = golden.models()
NAMES = [n for n in STORED if not n.startswith("fuzz/")]


def _floats(x) -> np.ndarray:
    return np.array([float.fromhex(v) for v in (x if isinstance(x, list) else [x])])


@pytest.mark.parametrize("name", NAMES)
def test_numbers_as_stored(name):
    if name not in MODELS:
        pytest.skip("published likelihood not available ($NEXTSTAT_WORKSPACES)")
    stored, now = STORED[name], golden.numbers(*MODELS[name])
    assert set(now) == set(stored)
    fit, ref = now["fit"], stored["fit"]
    assert fit["converged"] == ref["converged"] and fit["message"] == ref["message"]
    np.testing.assert_allclose(_floats(fit["nll"]), _floats(ref["nll"]), rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(_floats(fit["bestfit"]), _floats(ref["bestfit"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_floats(fit["errors"]), _floats(ref["errors"]), rtol=1e-5, atol=1e-7)
    for key in ("qtilde_1", "q0"):
        if key in stored:
            assert now[key]["converged"] == stored[key]["converged"]
            for figure, value in stored[key].items():
                if figure != "converged" and value is not None:
                    np.testing.assert_allclose(_floats(now[key][figure]), _floats(value), rtol=1e-6, atol=1e-8,
                                               err_msg=f"{key}.{figure}")


def test_compare_finds_a_changed_bit():
    stored = STORED["example"]
    changed = json.loads(json.dumps(stored))
    x = float.fromhex(changed["fit"]["nll"])
    changed["fit"]["nll"] = np.nextafter(x, np.inf).hex()
    same, diff = golden.compare(stored, changed)
    assert [d[0] for d in diff] == ["/fit/nll"] and same == len(dict(golden._leaves(stored))) - 1
