"""Pseudo-experiments and patch scans from the command line.

``nextstat toys WORKSPACE --n-toys N --seed S [--mu MU]``: fits of toys generated at the
model's initial parameters (the POI at ``--mu``), :func:`nextstat.fit_toys`; ``--json`` gives
:meth:`nextstat.ToyFitResults.to_dict`.

``nextstat scan-patches BKG_ONLY PATCHSET_OR_PATCHES... [--executor serial|processes|ray]``:
asymptotic CLs of every signal patch (:func:`nextstat.scan_patches`); ``--json`` gives one
object per patch (``patch``, ``cls_obs``, ``cls_exp_m2`` ... ``cls_exp_p2``, ``mu_hat``,
``converged``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nextstat.cli import (
    CONTEXT,
    FiniteFloat,
    model_options,
    output_options,
    progress_option,
    resolve_progress,
    verbose_option,
)

_EXECUTORS = {"serial": "serial", "processes": "process", "ray": "ray"}


def _toys_summary(model: Any, result: Any, pars: Any) -> str:
    """A few lines on the toys: counts, time and the spread of the POI's best fits."""
    import numpy as np

    at = f" at {model.poi_name} = {pars[model.poi_index]:g}" if model.poi_index is not None else ""
    lines = [f"{result.n_toys} toys (seed {result.seed}){at}, fitted on {result.device} in {result.time_s:.3g} s: "
             f"{result.n_failed} fits did not converge"]
    ok = result.converged
    if model.poi_index is not None and ok.any():
        poi = result.bestfit[ok, model.poi_index]
        q16, q50, q84 = np.percentile(poi, [15.865525, 50.0, 84.134475])
        lines.append(f"best-fit {model.poi_name} of the converged toys: mean {poi.mean():.4g}, std {poi.std():.4g}, "
                     f"median {q50:.4g}, 68% central interval [{q16:.4g}, {q84:.4g}]")
    if ok.any():
        lines.append(f"NLL at the best fit: mean {result.nll[ok].mean():.6g}, std {result.nll[ok].std():.4g}")
    return "\n".join(lines)


@click.command("toys", context_settings=CONTEXT)
@model_options
@click.option("--n-toys", type=click.IntRange(min=1), default=1000, help="Number of pseudo-experiments.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Random seed (the same seed gives the same toys).")
@click.option("--mu", type=FiniteFloat(), default=None, show_default=False,
              help="POI value the toys are generated at [default: the POI's initial value]; the other "
                   "parameters are at their initial values.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              help="Where the fits run (auto: CUDA if available).")
@progress_option
@output_options
def toys(model: Any, n_toys: int, seed: int, mu: float | None, device: str, progress: bool | None) -> tuple[dict, str]:
    """Generate pseudo-experiments and fit each one (nextstat.fit_toys)."""
    from nextstat import fit_toys

    pars = model.suggested_init()
    if mu is not None:
        if model.poi_index is None:
            raise click.UsageError("--mu needs a model with a parameter of interest (see --poi)")
        pars[model.poi_index] = mu
    result = fit_toys(model, pars, n_toys=n_toys, seed=seed, device=device, progress=resolve_progress(progress))
    return result.to_dict(), _toys_summary(model, result, pars)


def _named_patches(paths: tuple[str, ...]) -> dict[str, list]:
    """``{name: JSON Patch}`` from patchset files (entries named by ``metadata.name``) and patch
    files (named by the file name)."""
    from nextstat import workspace as wsmod

    named: dict[str, list] = {}

    def add(name: str, patch: list, path: str) -> None:
        if name in named:
            raise ValueError(f"patch name {name!r} appears twice (again in {path})")
        named[name] = patch

    for path in paths:
        try:
            doc: Any = wsmod.load(Path(path))
        except wsmod.WorkspaceError:  # not a JSON object: a JSON Patch (operation list), or unreadable
            add(Path(path).name, wsmod.load_patch(Path(path), path), path)
            continue
        if wsmod.is_patchset(doc):
            for entry in wsmod.load_patchset(doc)["patches"]:
                add(str(entry["metadata"]["name"]), list(entry["patch"]), path)
        else:
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            add(str(meta.get("name", Path(path).name)), wsmod.load_patch(doc, path), path)
    return named


@click.command("scan-patches", context_settings=CONTEXT)
@click.argument("background", metavar="BKG_ONLY", type=click.Path(exists=True, dir_okay=False))
@click.argument("patch_files", metavar="PATCHSET_OR_PATCHES...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--mu", type=FiniteFloat(0.0, min_open=True), default=1.0, help="Tested POI value.")
@click.option("--test-stat", type=click.Choice(["qtilde", "q"]), default="qtilde", help="Test statistic.")
@click.option("--executor", type=click.Choice(list(_EXECUTORS)), default="serial",
              help="Where the patches run: this process, a process pool, or Ray tasks.")
@click.option("--n-workers", type=click.IntRange(min=1), default=None, show_default=False,
              help="Processes or Ray CPUs [default: all cores].")
@progress_option
@output_options
@verbose_option
def scan_patches(background: str, patch_files: tuple[str, ...], mu: float, test_stat: str, executor: str,
                 n_workers: int | None, progress: bool | None) -> tuple[list, str]:
    """CLs of every signal patch of a background-only workspace (nextstat.scan_patches).

    PATCHSET_OR_PATCHES: pyhf patchset files (e.g. HEPData's) and/or JSON Patch files.
    """
    from nextstat import scan_patches as do_scan

    table = do_scan(Path(background), _named_patches(patch_files), mu=mu, executor=_EXECUTORS[executor],
                    progress=resolve_progress(progress), test_stat=test_stat, n_workers=n_workers)
    rows = table.to_dict(orient="records")
    text = table.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    return rows, text


COMMANDS = [toys, scan_patches]
