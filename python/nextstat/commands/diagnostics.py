"""Fit diagnostics from the command line: yields tables, MINOS intervals, goodness of fit.

``nextstat yields WORKSPACE [--prefit] [--format text|markdown|latex]``: pre- or post-fit yields
per channel, sample and bin with uncertainties (:func:`nextstat.prediction`); ``--json`` gives
:meth:`nextstat.PredictionResult.to_dict`.

``nextstat minos WORKSPACE [--parameter NAME ...] [--all]``: MINOS intervals of the POI, of the
named parameters, or of every free parameter (:func:`nextstat.minos`).

``nextstat gof WORKSPACE``: the saturated-model goodness-of-fit p-value of the fit
(:func:`nextstat.goodness_of_fit`).
"""

from __future__ import annotations

from typing import Any

import click

from nextstat.cli import CONTEXT, model_options, output_options, progress_option, resolve_progress


@click.command(context_settings=CONTEXT)
@model_options
@click.option("--prefit", is_flag=True, help="Pre-fit yields and uncertainties (no fit).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex"]), default="text",
              help="Table format of the summary.")
@output_options
def yields(model: Any, prefit: bool, fmt: str) -> tuple[dict, str]:
    """Yields per channel, sample and bin with their uncertainties (cabinetry's convention)."""
    from nextstat import fit, prediction

    result = prediction(model, None if prefit else fit(model))
    return result.to_dict(), result.table(fmt)


@click.command(context_settings=CONTEXT)
@model_options
@click.option("--parameter", "parameters", multiple=True, metavar="NAME",
              help="Parameter to find the interval of (repeatable) [default: the POI].")
@click.option("--all", "all_free", is_flag=True, help="Intervals of every free parameter.")
@progress_option
@output_options
def minos(model: Any, parameters: tuple[str, ...], all_free: bool, progress: bool | None) -> tuple[dict, str]:
    """MINOS intervals: where 2 delta NLL = 1 with the other parameters profiled."""
    from nextstat import minos as do_minos

    if all_free and parameters:
        raise click.UsageError("give --parameter or --all, not both")
    names: Any = [n for n, fx in zip(model.parameter_names, model.fixed_params) if not fx] if all_free else (
        list(parameters) or None)
    result = do_minos(model, names, progress=resolve_progress(progress))
    return result.to_dict(), str(result)


@click.command(context_settings=CONTEXT)
@model_options
@output_options
def gof(model: Any) -> tuple[dict, str]:
    """Goodness of fit: saturated-model p-value (dof = bins - free unconstrained parameters)."""
    from nextstat import fit, goodness_of_fit
    from nextstat.infer.gof import degrees_of_freedom, saturated_deviance

    result = fit(model, hesse=False)
    pvalue = goodness_of_fit(model, result)
    dof = degrees_of_freedom(model, result.fixed)
    deviance = saturated_deviance(model, result.bestfit)
    payload = {"pvalue": pvalue, "dof": dof, "deviance": deviance, "converged": result.converged,
               "nll": result.nll}
    text = (f"Goodness of fit (saturated model): p = {pvalue:.4g}  "
            f"(2 delta NLL = {deviance:.6g}, dof = {dof}{'' if result.converged else '; the fit did NOT converge'})")
    return payload, text


COMMANDS = [yields, minos, gof]
"""CLI commands (see nextstat.commands)."""
