"""`import nextstat` stays cheap: heavy dependencies load only when a function needs them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "scipy", "pandas", "matplotlib", "numba", "uproot", "awkward", "jax")


def test_import_loads_no_heavy_dependency():
    code = ("import json, sys, nextstat; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


def test_public_names_resolve_lazily():
    import nextstat

    for name in nextstat.__all__:
        assert getattr(nextstat, name) is not None, name
    assert set(nextstat.__all__) <= set(dir(nextstat))
    assert nextstat.examples.simple_workspace()["channels"][0]["name"] == "SR"
