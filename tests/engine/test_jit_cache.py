"""The compiled-kernel cache is always consistent (nextstat.engine.jit).

Numba's own cache keys a file's kernels on that file's mtime and size: a kernel compiled into a
kernel of another module stays stale when only the first file changes. Ours keys every kernel
on the content of all kernel modules. The test copies the package, adds two kernel modules
(one calling the other), and edits the callee between runs in fresh processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nextstat
from nextstat.engine import jit

PACKAGE = Path(nextstat.__file__).resolve().parent

PROBE_A = """from nextstat.engine.jit import kernel


@kernel
def base(x):
    return x + {inc}
"""
PROBE_B = """from nextstat.engine._probe_a import base
from nextstat.engine.jit import kernel


@kernel
def dependent(x):
    return 2.0 * base(x)
"""
RUN = """import json
from nextstat.engine._probe_b import dependent
value = dependent(1.0)
print(json.dumps({"value": value, "hits": sum(dependent.stats.cache_hits.values()),
                  "misses": sum(dependent.stats.cache_misses.values())}))
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "nextstat", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "nextstat" / "engine" / "_probe_b.py").write_text(PROBE_B)
    return root


def _run(root: Path, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), NEXTSTAT_CACHE_DIR=str(cache), NEXTSTAT_QUIET_COMPILE="1")
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=300,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editing_a_callee_in_another_module_recompiles_the_caller(tree: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    probe_a = tree / "nextstat" / "engine" / "_probe_a.py"
    probe_a.write_text(PROBE_A.format(inc="1.0"))
    first = _run(tree, cache)
    assert first == {"value": 4.0, "hits": 0, "misses": 1}
    assert _run(tree, cache) == {"value": 4.0, "hits": 1, "misses": 0}  # cached

    stat = probe_a.stat()
    probe_a.write_text(PROBE_A.format(inc="2.0"))  # same size, same mtime: Numba's stamp would not see it
    os.utime(probe_a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _run(tree, cache) == {"value": 6.0, "hits": 0, "misses": 1}


def test_cache_lives_outside_the_package(tree: Path, tmp_path: Path):
    (tree / "nextstat" / "engine" / "_probe_a.py").write_text(PROBE_A.format(inc="1.0"))
    cache = tmp_path / "cache"
    _run(tree, cache)
    assert not list(tree.rglob("*.nbi")), "kernel cache written into the package tree"
    assert list((cache / "kernels" / "engine").rglob("*.nbi"))


def test_cache_dir_policy(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("NEXTSTAT_CACHE_DIR", raising=False)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert jit.cache_dir() == tmp_path / "nextstat"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert jit.cache_dir() == tmp_path / "numba"
    monkeypatch.setenv("NEXTSTAT_CACHE_DIR", str(tmp_path / "ns"))
    assert jit.cache_dir() == tmp_path / "ns"


def test_kernel_sources_cover_every_kernel_module():
    sources = {p.relative_to(jit.PACKAGE_DIR).as_posix() for p in jit.kernel_sources()}
    assert {"engine/compiled/newton.py", "engine/compiled/rates.py", "engine/overrides.py"} <= sources
    for path in jit.PACKAGE_DIR.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "@njit" in text or "numba.njit" in text:
            pytest.fail(f"{path} compiles kernels outside nextstat.engine.jit's policy")


STAMP = """import json
from pathlib import Path
from nextstat.engine import jit
print(json.dumps({"stamp": jit.source_stamp(jit.PACKAGE_DIR / "engine" / "overrides.py")}))
"""


def test_stamp_of_a_kernel_importing_numba_core_follows_the_compiled_modules(tree: Path):
    # overrides.py calls kernels through the numba_core gathering module, which holds no kernel
    env = dict(os.environ, PYTHONPATH=str(tree))

    def stamp() -> str:
        out = subprocess.run([sys.executable, "-c", STAMP], env=env, capture_output=True, text=True, timeout=120,
                             cwd=tree, check=True)
        return json.loads(out.stdout)["stamp"]

    before = stamp()
    rates = tree / "nextstat" / "engine" / "compiled" / "rates.py"
    rates.write_text(rates.read_text() + "\n# edited\n")
    assert stamp() != before


def _ast_imported_names(text: str, package: str) -> set[str]:
    """The oracle of jit.imported_names: every Import / ImportFrom node of the parsed source."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_imports_found_in_the_text_are_those_of_the_syntax_tree():
    sources = sorted(jit.PACKAGE_DIR.rglob("*.py"))
    assert len(sources) > 50
    for path in sources:
        package = ".".join(("nextstat", *path.relative_to(jit.PACKAGE_DIR).parent.parts))
        text = path.read_text(encoding="utf-8")
        found, oracle = jit.imported_names(text, package), _ast_imported_names(text, package)
        assert oracle <= found, (path, oracle - found)  # nothing missed
        # extra names come only from import-like text inside strings (docstrings): none resolves
        # to a kernel module, so no stamp covers a file it should not
        assert not any(jit._module_file(n) in set(jit.kernel_sources()) for n in found - oracle), path
    tricky = ("from .compiled import (\n    rates as r,  # (comment)\n    likelihood)\nimport a.b as c, d\n"
              "from .. import x\n    from nextstat.engine.jit import kernel, \\\n        leaf\n")
    assert jit.imported_names(tricky, "nextstat.engine") == _ast_imported_names(
        tricky.replace("    from nextstat", "from nextstat").replace("        leaf", "leaf"), "nextstat.engine")
