"""Command-line interface: thin commands over the public API.

``nextstat fit|hypotest|limit|rank WORKSPACE [--patch P ...]``, ``nextstat plot KIND WORKSPACE -o FILE``
and ``nextstat demo``. WORKSPACE is a pyhf JSON file (``.json`` or ``.json.gz``) or ``-`` for
standard input. ``--json`` prints machine-readable output (to ``--output-file`` if given).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from nextstat._version import __version__

CITATION = """@software{nextstat,
  title = {NextStat: fast, differentiable binned statistical inference},
  version = {%s},
  url = {https://github.com/nextstat/nextstat}
}""" % __version__

CONTEXT = dict(help_option_names=["-h", "--help"], show_default=True)


def _print_citation(ctx: click.Context, _param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(CITATION)
        ctx.exit()


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version")
@click.option("--cite", is_flag=True, expose_value=False, is_eager=True, callback=_print_citation,
              help="Print the BibTeX citation and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
def main(verbose: bool) -> None:
    """NextStat: fast binned statistical inference for HistFactory (pyhf JSON) workspaces."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def model_options(func: Callable) -> Callable:
    """Options shared by every command that reads a workspace."""

    @click.argument("workspace", type=click.Path(allow_dash=True, dir_okay=False), default="-")
    @click.option("--patch", "patches", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="JSON Patch file applied to the workspace (repeatable, in order).")
    @click.option("--measurement", default=None, help="Measurement name (default: the first).")
    @functools.wraps(func)
    def wrapper(workspace: str, patches: tuple[str, ...], measurement: str | None, **kwargs: Any) -> Any:
        from nextstat import WorkspaceError, from_pyhf

        source: Any = sys.stdin.read() if workspace == "-" else Path(workspace)
        try:
            model = from_pyhf(source, measurement=measurement, patches=[Path(p) for p in patches])
        except (WorkspaceError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        return func(model=model, **kwargs)

    return wrapper


def output_options(func: Callable) -> Callable:
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
    @click.option("--output-file", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Write the JSON output to this file (implies --json).")
    @functools.wraps(func)
    def wrapper(as_json: bool, output_file: str | None, **kwargs: Any) -> Any:
        payload, text = func(**kwargs)
        if output_file:
            _write_atomic(Path(output_file), json.dumps(payload, indent=2) + "\n")
        elif as_json:
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(text)

    return wrapper


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file so a failure never leaves a partial output file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@main.command(context_settings=CONTEXT)
@model_options
@output_options
def fit(model: Any) -> tuple[dict, str]:
    """Maximum-likelihood fit with Hesse errors."""
    from nextstat import fit as do_fit

    result = do_fit(model)
    return result.to_dict(), str(result)


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--mu", type=float, default=1.0, help="Tested POI value (0: discovery test).")
@click.option("--test-stat", type=click.Choice(["q0", "q", "qtilde"]), default=None,
              help="Test statistic [default: q0 at mu=0, else qtilde].")
@output_options
def hypotest(model: Any, mu: float, test_stat: str | None) -> tuple[dict, str]:
    """Asymptotic hypothesis test: CLs (and the expected band), or Z0 at --mu 0."""
    from nextstat import hypotest as do_hypotest

    result = do_hypotest(model, mu, test_stat=test_stat)
    if result.test_stat == "q0":
        text = (f"Discovery test (q0): q0 = {result.q_obs:.6g}, p0 = {result.p0:.6g}, "
                f"Z0 = {result.significance:.4f} sigma (expected Z0 = {result.significance_expected:.4f})")
    else:
        band = "  ".join(f"{v:.4g}" for v in result.cls_expected)
        text = (f"Test of {model.poi_name} = {mu:g} ({result.test_stat}): CLs = {result.cls:.6g}  "
                f"CLsb = {result.clsb:.6g}  CLb = {result.clb:.6g}\n"
                f"expected CLs (-2..+2 sigma): {band}")
    return result.to_dict(), text


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--alpha", type=float, default=0.05, help="Test size (0.05: 95% CL).")
@click.option("--scan", default=None, metavar="LO:HI:N", help="Grid scan of the POI instead of root finding.")
@output_options
def limit(model: Any, alpha: float, scan: str | None) -> tuple[dict, str]:
    """CLs upper limit on the POI (observed and expected band)."""
    import numpy as np

    from nextstat import upper_limit

    grid = None
    if scan:
        try:
            lo, hi, n = scan.split(":")
            grid = np.linspace(float(lo), float(hi), int(n))
        except ValueError as exc:
            raise click.BadParameter(f"expected LO:HI:N, got {scan!r}", param_hint="--scan") from exc
    result = upper_limit(model, alpha=alpha, scan=grid)
    band = "  ".join(f"{v:.4g}" for v in result.expected)
    text = (f"{100 * (1 - alpha):g}% CL upper limit on {model.poi_name}: observed {result.observed:.4g}\n"
            f"expected (-2..+2 sigma): {band}")
    return result.to_dict(), text


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--top", type=int, default=None, help="Show only the N highest-impact parameters.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Save a ranking plot.")
@output_options
def rank(model: Any, top: int | None, plot_file: str | None) -> tuple[dict, str]:
    """Rank nuisance parameters by their impact on the POI."""
    from nextstat.interpret import format_ranking, plot_rank_impact, rank_impact

    table = rank_impact(model, top_n=top)
    if plot_file:
        fig = plot_rank_impact(model, top_n=top or 20, table=table)
        fig.savefig(plot_file, dpi=150, bbox_inches="tight")
    return {"ranking": table}, format_ranking(table)


@main.command(context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(["pulls", "corr", "brazil", "profile", "yields"]))
@model_options
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True, help="Image file to write.")
def plot(kind: str, model: Any, output: str) -> None:
    """Draw a standard plot from a fit of the workspace."""
    from nextstat.plots import plot_from_model

    fig = plot_from_model(kind, model)
    fig.savefig(output, dpi=150, bbox_inches="tight")
    click.echo(f"wrote {output}")


@main.command(context_settings=CONTEXT)
@click.option("--epochs", type=int, default=30, help="Training epochs for each network.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo_output", help="Folder for the plot and summary.")
@click.option("--seed", type=int, default=0, help="Random seed.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def demo(epochs: int, out_dir: str, seed: int, no_progress: bool) -> None:
    """Train a small network on the profiled significance (SignificanceLoss) and compare with BCE."""
    from nextstat.demo import run_demo

    summary = run_demo(epochs=epochs, out_dir=Path(out_dir), seed=seed, progress=not no_progress)
    click.echo(summary)


if __name__ == "__main__":  # pragma: no cover
    main()
