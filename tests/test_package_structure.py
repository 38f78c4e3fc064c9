"""The package's shape (issue 13): no import circle, small modules, a pinned public namespace."""

from __future__ import annotations

import ast
from pathlib import Path

import nextstat

PACKAGE = Path(nextstat.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its text (function-level imports
    count too: a lazy import is still a dependence). ``from pkg import sub`` names ``pkg.sub``."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in mods]
                if len(targets) < len(subs):
                    targets.append(base)
            else:
                continue
            for target in targets:
                dep = resolve(target) if target.startswith("nextstat") else None
                if dep and dep not in (name, "nextstat"):
                    deps.add(dep)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a list of modules, first == last), or None."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_no_import_circle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_650_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 650}
    assert not long


def test_public_namespace_is_pinned():
    assert nextstat.__all__ == [
        "ConvergenceWarning", "FitResult", "HypotestResult", "MinosResult", "Model", "PredictionResult",
        "ProfileScanResult", "ToyDistributions", "ToyFitResults", "UpperLimitResult", "WorkspaceError",
        "__version__", "asimov_data", "fit", "fit_toys", "fixed_poi_fit", "from_pyhf", "goodness_of_fit",
        "hypotest", "hypotest_from_toys", "hypotest_toys", "minos", "prediction", "profile_scan",
        "scan_patches", "toy_distributions", "upper_limit"]
    import nextstat.torch as nt

    assert sorted(nt.__all__) == [
        "ProfiledSession", "SignificanceLoss", "SoftHistogram", "as_tensor", "batch_profiled_q0_loss",
        "profiled_cls_loss", "profiled_poi_variance_loss", "profiled_q0_loss", "profiled_qmu_loss",
        "signal_jacobian", "signal_jacobian_numpy"]


def test_model_arrays_are_indexed_by_name_outside_the_layout_module():
    import re

    positional = re.compile(r"\b(A|A2|AUX|arrays|aux_arrays)\[\d+\]")
    found = [f"{path.relative_to(PACKAGE)}:{k}" for path in PACKAGE.rglob("*.py") if path.name != "layout.py"
             for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if positional.search(line)]
    assert not found


def test_only_the_engine_and_the_model_call_the_compiled_kernels():
    """Inference, interpretation, the torch layer and the plots reach the compiled engine through
    :class:`nextstat.engine.fitter.Fitter` (or the model's methods), never its kernels."""
    graph = import_graph()
    allowed = ("nextstat.engine", "nextstat.model")
    kernels = ("nextstat.engine.numba_core", "nextstat.engine.compiled")
    found = {m: sorted(d for d in deps if d.startswith(kernels) and not d.startswith("nextstat.engine.compiled.codes"))
             for m, deps in graph.items() if not m.startswith(allowed)}
    assert not {m: d for m, d in found.items() if d}
    # the check sees an import of the kernels where there is one
    assert any(d.startswith(kernels) for d in graph["nextstat.model"])
