"""Make the cabinetry reference numbers for NextStat's nuisance-parameter ranking test.

Fits the ATLAS sbottom multi-b search (HEPData ins1748602), RegionA background-only workspace
with one signal patch, to the observed data with cabinetry 0.6.0 (pyhf 0.7.6 NumPy backend,
iminuit), then computes cabinetry's ranking (impacts of each nuisance parameter on the POI
``mu_SIG``) and writes them to ``cabinetry_ranking_sbottom_A.json`` beside this script.

Run it with a separate virtual environment (cabinetry is not a NextStat dependency)::

    python3 -m venv .venv-cabinetry
    .venv-cabinetry/bin/pip install cabinetry==0.6.0 pyhf==0.7.6
    .venv-cabinetry/bin/python tests/reference/make_cabinetry_ranking.py

The workspaces are read straight from the tarball
``$NEXTSTAT_WORKSPACES/atlas-sbottom-ins1748602.tar.gz`` (default folder:
``/work/shared/workspaces``); nothing is extracted or copied into the repository.

Output JSON (impacts are ``mu_SIG(fit with the NP fixed at bestfit +- shift) - mu_SIG_hat``):

- ``patch``: the signal patch applied; ``poi``: the POI name; ``data``: the observed data
  (main bins then auxdata, pyhf order).
- ``fit``: cabinetry's nominal fit: ``labels``, ``bestfit``, ``uncertainty`` (Hesse),
  ``best_twice_nll``, all in the model's parameter order.
- ``ranking``: one entry per parameter except the POI, in cabinetry's order (the model's
  parameter order), each with ``name``, ``bestfit``, ``uncertainty``, ``prefit_up``,
  ``prefit_down``, ``postfit_up``, ``postfit_down``. Pre-fit impacts are 0 for unconstrained
  parameters, as cabinetry defines them.
- ``order_by_max_postfit_impact``: names sorted as cabinetry's ranking plot sorts them
  (decreasing ``max(|postfit_up|, |postfit_down|)``, ties in model order).
- ``asimov``: the same (``data``, ``fit``, ``ranking``, ``order_by_max_postfit_impact``) for
  the pre-fit Asimov data with ``mu_SIG = 1``. On the observed data ``mu_SIG`` ends on its
  lower bound 0 (a deficit in the signal region; so do all 20 RegionA patches tried), so every
  observed impact is ~0; the Asimov block is the one with impacts worth comparing.
- ``settings``, ``versions`` (cabinetry, pyhf, iminuit, numpy, python), ``runtime_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tarfile
import time
from pathlib import Path

TARBALL = "atlas-sbottom-ins1748602.tar.gz"
REGION = "RegionA"
WANTED_PATCH = "patch.sbottom_1300_205_60.json"
OUTPUT = Path(__file__).with_name("cabinetry_ranking_sbottom_A.json")


def workspaces_folder() -> Path:
    """Folder holding the published workspaces (``$NEXTSTAT_WORKSPACES`` overrides)."""
    return Path(os.environ.get("NEXTSTAT_WORKSPACES", "/work/shared/workspaces"))


def load_region(tarball: Path, region: str, wanted_patch: str) -> tuple[dict, list, str]:
    """Read ``<region>/BkgOnly.json`` and one signal patch from the tarball.

    Returns (background-only workspace spec, JSON Patch operations, patch file name). When
    ``wanted_patch`` is not in the tarball, the first patch of the region in sorted order is
    used instead (and named in the output).
    """
    with tarfile.open(tarball, "r:gz") as tar:
        names = tar.getnames()
        patches = sorted(
            n.split("/", 1)[1]
            for n in names
            if n.startswith(f"{region}/patch.") and n.endswith(".json")
        )
        if not patches:
            raise FileNotFoundError(f"no {region}/patch.*.json in {tarball}")
        patch_name = wanted_patch if wanted_patch in patches else patches[0]
        if patch_name != wanted_patch:
            print(f"{wanted_patch} not found; using {patch_name}", file=sys.stderr)

        def read(member: str):
            f = tar.extractfile(member)
            if f is None:
                raise FileNotFoundError(f"{member} in {tarball}")
            return json.load(f)

        return read(f"{region}/BkgOnly.json"), read(f"{region}/{patch_name}"), patch_name


def run_ranking(cabinetry, np, model, data: list, tolerance: float | None) -> dict:
    """cabinetry fit + ranking of ``model`` on ``data``, as JSON-ready dict (cabinetry's order)."""
    t0 = time.perf_counter()
    fit = cabinetry.fit.fit(model, data, tolerance=tolerance)
    ranking = cabinetry.fit.ranking(model, data, fit_results=fit, tolerance=tolerance)
    runtime = time.perf_counter() - t0
    entries = [
        {
            "name": name,
            "bestfit": float(ranking.bestfit[i]),
            "uncertainty": float(ranking.uncertainty[i]),
            "prefit_up": float(ranking.prefit_up[i]),
            "prefit_down": float(ranking.prefit_down[i]),
            "postfit_up": float(ranking.postfit_up[i]),
            "postfit_down": float(ranking.postfit_down[i]),
        }
        for i, name in enumerate(ranking.labels)
    ]
    max_post = np.maximum(np.abs(ranking.postfit_up), np.abs(ranking.postfit_down))
    order = [ranking.labels[i] for i in np.argsort(-max_post, kind="stable")]
    return {
        "fit": {
            "labels": list(fit.labels),
            "bestfit": [float(x) for x in fit.bestfit],
            "uncertainty": [float(x) for x in fit.uncertainty],
            "best_twice_nll": float(fit.best_twice_nll),
        },
        "ranking": entries,
        "order_by_max_postfit_impact": order,
        "runtime_s": round(runtime, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="JSON file to write")
    parser.add_argument("--patch", default=WANTED_PATCH, help="signal patch file name")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="iminuit tolerance (EDM < 0.002 * tolerance); default: cabinetry's (0.1)",
    )
    args = parser.parse_args(argv)

    import cabinetry
    import iminuit
    import jsonpatch
    import numpy as np
    import pyhf

    pyhf.set_backend("numpy")
    bkg, patch_ops, patch_name = load_region(
        workspaces_folder() / TARBALL, REGION, args.patch
    )
    spec = jsonpatch.apply_patch(bkg, patch_ops)
    ws = pyhf.Workspace(spec)
    model = ws.model()  # pyhf 0.7.6 defaults: normsys code4, histosys code4p
    data = ws.data(model)  # observed main data + auxdata
    poi = model.config.poi_name

    settings = {
        "backend": "numpy",
        "optimizer": "pyhf minuit_optimizer (cabinetry default)",
        "tolerance": args.tolerance,
        "strategy": None,
        "custom_fit": False,
        "par_bounds": "pyhf suggested (mu_SIG in [0, 10])",
        "impact_definition": "POI(NP fixed at bestfit +- prefit/postfit uncertainty) - POI_hat",
    }
    t_start = time.perf_counter()
    observed = run_ranking(cabinetry, np, model, data, args.tolerance)
    # Asimov data: model expectation at the pre-fit parameters with mu_SIG = 1 (auxdata
    # included), so that mu_hat = 1 is inside the bounds and the impacts are not zero.
    asimov = [float(x) for x in cabinetry.model_utils.asimov_data(model, poi_value=1.0)]
    expected = run_ranking(cabinetry, np, model, asimov, args.tolerance)
    runtime = time.perf_counter() - t_start
    runtimes = {
        "observed": observed.pop("runtime_s"),
        "asimov": expected.pop("runtime_s"),
        "total": round(runtime, 1),
    }

    out = {
        "description": (
            "cabinetry 0.6.0 nuisance-parameter ranking on the ATLAS sbottom (ins1748602) "
            f"{REGION} workspace with {patch_name}; made by "
            "tests/reference/make_cabinetry_ranking.py"
        ),
        "note": (
            "Top-level 'fit'/'ranking' are for the observed data, where mu_SIG_hat sits at its "
            "lower bound 0 (the SR shows a deficit; so do all 20 RegionA patches tried), so "
            "all observed impacts are ~0 (fit noise, |impact| < 1e-4). 'asimov' repeats the "
            "fit and ranking on the pre-fit Asimov data with mu_SIG = 1 (data included), where "
            "the impacts are non-trivial: compare rankings there."
        ),
        "workspace": f"{TARBALL}:{REGION}/BkgOnly.json",
        "patch": patch_name,
        "poi": poi,
        "n_parameters": int(model.config.npars),
        "data": [float(x) for x in data],
        **observed,
        "asimov": {"poi_value": 1.0, "data": asimov, **expected},
        "settings": settings,
        "versions": {
            "cabinetry": cabinetry.__version__,
            "pyhf": pyhf.__version__,
            "iminuit": iminuit.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "runtime_s": runtimes,
    }
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output} ({runtime:.1f} s)")
    for label, block in (("observed", out), ("asimov mu_SIG=1", out["asimov"])):
        by_name = {e["name"]: e for e in block["ranking"]}
        print(f"{label}: mu_hat = {block['fit']['bestfit'][block['fit']['labels'].index(poi)]:.4g}")
        for name in block["order_by_max_postfit_impact"][:5]:
            e = by_name[name]
            print(
                f"  {name:40s} postfit {e['postfit_up']:+.4f} {e['postfit_down']:+.4f}"
                f"  prefit {e['prefit_up']:+.4f} {e['prefit_down']:+.4f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
