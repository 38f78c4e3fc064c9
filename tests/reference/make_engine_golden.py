"""The engine's own numbers, stored before a refactor and compared after it (issue 13: "numbers
bit-identical before and after").

    python tests/reference/make_engine_golden.py           # write tests/reference/engine_golden.json
    python tests/reference/make_engine_golden.py --check   # compare this tree with the stored file

Per model (the bundled example, generated models with every modifier type, the property survey's
contract-violation workspaces, and the published likelihoods where $NEXTSTAT_WORKSPACES has
them): the fit's best fit, NLL, errors, iterations and status; the qtilde hypotest at mu = 1
(q, CLs and its expected band) and the discovery test (q0, Z0 observed and expected); a refusal is stored as its exception type.
Floats are stored as ``float.hex`` so that equality means bit-identical. ``--check`` reports
how many values are bit-identical and the largest deviation of the others;
``tests/engine/test_engine_golden.py`` asserts them at tolerances that hold across CPUs.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "engine_golden.json"
sys.path.insert(0, str(HERE.parent))


def models() -> dict[str, tuple[dict, dict | None]]:
    """name -> (workspace, modifier_settings)."""
    from conftest import EXAMPLE, all_modifiers_workspace

    from nextstat import testing

    out: dict[str, tuple[dict, dict | None]] = {"example": (json.loads(EXAMPLE.read_text()), None)}
    for seed in range(3):
        out[f"all_modifiers/{seed}"] = (all_modifiers_workspace(seed), None)
    for case in json.loads((HERE / "fuzz" / "contract_violations.json").read_text()):
        out[f"fuzz/{case['id']}"] = (case["workspace"], case["modifier_settings"])
    try:
        import jsonpatch

        a = testing.sbottom("RegionA")
        out["sbottom/RegionA/1300_205_60"] = (
            jsonpatch.apply_patch(a, testing.sbottom_patch("RegionA", "patch.sbottom_1300_205_60.json")), None)
        name = testing.erjr_patch_names()[0]
        out[f"erjr/{name}"] = (jsonpatch.apply_patch(testing.erjr(), testing.erjr_patch(name)), None)
        out["tttt"] = (testing.tttt(), None)
    except (OSError, LookupError, ValueError) as exc:  # published likelihoods not available
        print(f"published likelihoods skipped: {exc}", file=sys.stderr)
    return out


def _hex(x) -> list | str | None:
    if x is None:
        return None
    a = np.asarray(x, dtype=float)
    if a.ndim == 0:
        return float(a).hex()
    return [float(v).hex() for v in a.ravel()]


def numbers(ws: dict, settings: dict | None) -> dict:
    """The stored figures of one workspace."""
    import nextstat

    out: dict = {}
    try:
        model = nextstat.from_pyhf(ws, modifier_settings=settings) if settings else nextstat.from_pyhf(ws)
    except Exception as exc:  # noqa: BLE001 - a refusal is a figure too
        return {"from_pyhf": type(exc).__name__}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = nextstat.fit(model)
            out["fit"] = {"bestfit": _hex(r.bestfit), "nll": _hex(r.nll), "errors": _hex(r.errors),
                          "n_iter": int(r.n_iter), "converged": bool(r.converged), "message": r.message}
        except Exception as exc:  # noqa: BLE001
            out["fit"] = type(exc).__name__
        if model.poi_index is None:
            return out
        for key, mu, stat in (("qtilde_1", 1.0, None), ("q0", 0.0, "q0")):
            try:
                h = nextstat.hypotest(model, mu, test_stat=stat) if stat else nextstat.hypotest(model, mu)
                out[key] = {"q_obs": _hex(h.q_obs), "q_asimov": _hex(h.q_asimov), "cls": _hex(h.cls),
                            "cls_expected": _hex(h.cls_expected), "significance": _hex(h.significance),
                            "significance_expected": _hex(h.significance_expected), "converged": bool(h.converged)}
            except Exception as exc:  # noqa: BLE001
                out[key] = type(exc).__name__
    return out


def compute() -> dict:
    return {name: numbers(ws, settings) for name, (ws, settings) in models().items()}


def _leaves(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def compare(stored: dict, now: dict) -> tuple[int, list[tuple[str, object, object]]]:
    """(number of identical leaves, the differing ones as (path, stored, now))."""
    a, b = dict(_leaves(stored)), dict(_leaves(now))
    same = sum(1 for k in a if k in b and a[k] == b[k])
    diff = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return same, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored file instead of writing it")
    args = ap.parse_args()
    now = compute()
    if not args.check:
        OUT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {OUT} ({len(now)} models)")
        return
    same, diff = compare(json.loads(OUT.read_text()), now)
    print(f"{same} values bit-identical, {len(diff)} differ")
    for k, x, y in diff[:40]:
        print(f"  {k}: {x} -> {y}")


if __name__ == "__main__":
    main()
