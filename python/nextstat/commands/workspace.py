"""pyhf's workspace commands, with pyhf 0.7.6's names, arguments and options.

``inspect``, ``prune``, ``rename``, ``combine``, ``sort``, ``digest``, ``patchset
extract|apply|verify|inspect`` and ``cls``: a pyhf command line runs with ``pyhf`` replaced by
``nextstat``, and prints (or writes with ``--output-file``) the same document: JSON with a
4-space indent and sorted keys, as pyhf does. WORKSPACE and PATCHSET are files (``.json`` or
``.json.gz``) or ``-`` for standard input. The work is done by :mod:`nextstat.workspace`.

Differences from pyhf: ``inspect`` lists the parameters without building the model, so it also
works where the measurement's POI is not a parameter (background-only workspaces), and marks
the ``--measurement`` given (pyhf ignores that option); ``cls`` also takes ``--poi`` and
``--n-toys``, and pyhf's ``--backend`` / ``--optimizer`` / ``--optconf`` are accepted but change
nothing (NextStat has one engine). Errors follow NextStat's CLI policy (one line, exit 1 or 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nextstat.cli import (
    CONTEXT,
    FiniteFloat,
    OutputFile,
    _read_stdin_workspace,
    model_options,
    progress_option,
    resolve_progress,
    verbose_option,
    write_atomic,
)
from nextstat.commands.pyhf_compat import cls_layout, engine_options, pyhf_json

MODIFIER_TYPES = ("histosys", "lumi", "normfactor", "normsys", "shapefactor", "shapesys", "staterror")
TOY_COUNT = 2000  # pyhf 0.7.6's ToyCalculator default (ntoys)

_INPUT = click.Path(exists=True, allow_dash=True, dir_okay=False)
_OUTPUT_HELP = "The location of the output json file. If not specified, prints to screen."


def _source(arg: str) -> Any:
    """What :func:`nextstat.workspace.load` reads for a file argument (``-``: standard input)."""
    return _read_stdin_workspace() if arg == "-" else Path(arg)


def _emit(document: Any, output_file: str | None) -> None:
    """Print ``document`` as pyhf does, or write it (atomically) to ``output_file``."""
    text = pyhf_json(document)
    if output_file:
        write_atomic(output_file, text + "\n")
    else:
        click.echo(text)


def output_file_option(func: Any) -> Any:
    return click.option("--output-file", type=OutputFile(), default=None, help=_OUTPUT_HELP)(func)


# --------------------------------------------------------------------------- inspect

def format_inspect(summary: dict, default_measurement: str) -> str:
    """The table ``pyhf inspect`` prints for :func:`nextstat.workspace.inspect`'s ``summary``;
    ``default_measurement`` is marked ``(*)``."""
    width = max(len(name) for name in [*(c for c, _ in summary["channels"]), *summary["samples"],
                                       *(p for p, _ in summary["parameters"]),
                                       *(m[0] for m in summary["measurements"])])
    lines = [f"{'     Summary     ':>{width + len('Summary')}}  ", f"{'-' * 18:>{width + len('Summary')}}  "]
    lines += [f"{key:>{width}}  {len(summary[key])}" for key in ("channels", "samples", "parameters", "modifiers")]
    lines += ["", f"{'channels':>{width}}  {'nbins':^5}", f"{'-' * 10:>{width}}  {'-' * 5:^5}"]
    lines += [f"{c:>{width}}  {str(n):^5}" for c, n in summary["channels"]]
    lines += ["", f"{'samples':>{width}}", f"{'-' * 10:>{width}}"]
    lines += [f"{s:>{width}}" for s in summary["samples"]]
    lines += ["", f"{'parameters':>{width}}  {'constraint':<22}  modifiers", f"{'-' * 10:>{width}}  {'-' * 10:<22}  {'-' * 10}"]
    lines += [f"{p:>{width}}  {c:<22}  {','.join(sorted(set(t)))}" for p, c, t in summary["systematics"]]
    lines += ["", f"{'measurement':>{width}}  {'poi':^22}  parameters", f"{'-' * 10:>{width}}  {'-' * 10:^22}  {'-' * 10}"]
    for name, poi, params in summary["measurements"]:
        mark = "(*) " if name == default_measurement else ""
        lines.append(f"{mark + name:>{width}}  {poi:^22}  {','.join(params) if params else '(none)'}")
    return "\n".join(lines) + "\n"


@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_INPUT, default="-")
@output_file_option
@click.option("--measurement", default=None, help="Measurement to mark as the one used (default: the first).")
@verbose_option
def inspect(workspace: str, output_file: str | None, measurement: str | None) -> None:
    """Inspect a pyhf JSON document: channels, samples, parameters and measurements.

    Prints pyhf's table; --output-file also writes the summary as JSON.
    """
    from nextstat import workspace as wsmod

    spec = wsmod.load(_source(workspace))
    summary = wsmod.inspect(spec)
    names = [m[0] for m in summary["measurements"]]
    if measurement is not None and measurement not in names:
        raise click.BadParameter(f"no measurement {measurement!r}; the workspace has {names}",
                                 param_hint="'--measurement'")
    click.echo(format_inspect(summary, measurement or names[0]))
    if output_file:
        write_atomic(output_file, pyhf_json(summary) + "\n")


# --------------------------------------------------------------------------- prune, rename, sort, combine

@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_INPUT, default="-")
@output_file_option
@click.option("-c", "--channel", default=[], multiple=True, metavar="<CHANNEL>...")
@click.option("-s", "--sample", default=[], multiple=True, metavar="<SAMPLE>...")
@click.option("-m", "--modifier", default=[], multiple=True, metavar="<MODIFIER>...")
@click.option("-t", "--modifier-type", default=[], multiple=True, type=click.Choice(MODIFIER_TYPES))
@click.option("--measurement", default=[], multiple=True, metavar="<MEASUREMENT>...")
@verbose_option
def prune(workspace: str, output_file: str | None, channel: tuple[str, ...], sample: tuple[str, ...],
          modifier: tuple[str, ...], modifier_type: tuple[str, ...], measurement: tuple[str, ...]) -> None:
    """Prune components from the workspace (nextstat.workspace.prune)."""
    from nextstat import workspace as wsmod

    _emit(wsmod.prune(_source(workspace), channels=channel, samples=sample, modifiers=modifier,
                      modifier_types=modifier_type, measurements=measurement), output_file)


_PAIR = dict(default=[], multiple=True, type=click.Tuple([str, str]), metavar="<PATTERN> <REPLACE>...")


@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_INPUT, default="-")
@output_file_option
@click.option("-c", "--channel", **_PAIR)
@click.option("-s", "--sample", **_PAIR)
@click.option("-m", "--modifier", **_PAIR)
@click.option("--measurement", **_PAIR)
@verbose_option
def rename(workspace: str, output_file: str | None, channel: tuple, sample: tuple, modifier: tuple,
           measurement: tuple) -> None:
    """Rename components of the workspace (nextstat.workspace.rename)."""
    from nextstat import workspace as wsmod

    _emit(wsmod.rename(_source(workspace), channels=dict(channel), samples=dict(sample), modifiers=dict(modifier),
                       measurements=dict(measurement)), output_file)


@click.command(context_settings=CONTEXT)
@click.argument("workspace-one", type=_INPUT, default="-")
@click.argument("workspace-two", type=_INPUT, default="-")
@click.option("-j", "--join", default="none", type=click.Choice(["none", "outer", "left outer", "right outer"]),
              help="The join operation to apply when combining the two workspaces.")
@output_file_option
@click.option("--merge-channels/--no-merge-channels", default=False,
              help="Whether or not to deeply merge channels. Can only be done with left/right outer joins.")
@verbose_option
def combine(workspace_one: str, workspace_two: str, join: str, output_file: str | None, merge_channels: bool) -> None:
    """Combine two workspaces into a single workspace (nextstat.workspace.combine)."""
    from nextstat import workspace as wsmod

    if workspace_one == "-" and workspace_two == "-":
        raise click.UsageError("only one of WORKSPACE_ONE and WORKSPACE_TWO can be read from standard input")
    _emit(wsmod.combine(_source(workspace_one), _source(workspace_two), join=join, merge_channels=merge_channels),
          output_file)


@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_INPUT, default="-")
@output_file_option
@verbose_option
def sort(workspace: str, output_file: str | None) -> None:
    """Sort the workspace (nextstat.workspace.sorted)."""
    from nextstat import workspace as wsmod

    _emit(wsmod.sorted(_source(workspace)), output_file)


@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_INPUT, default="-")
@click.option("-a", "--algorithm", default=["sha256"], multiple=True,
              help="The hashing algorithm used to compute the workspace digest.")
@click.option("-j/-p", "--json/--plaintext", "output_json",
              help="Output the hash values as a JSON dictionary or plaintext strings")
@verbose_option
def digest(workspace: str, algorithm: tuple[str, ...], output_json: bool) -> None:
    """Use hashing algorithm to calculate the workspace digest (nextstat.workspace.digest)."""
    from nextstat import workspace as wsmod
    from nextstat.workspace.schema import check_workspace

    spec = wsmod.load(_source(workspace))
    check_workspace(spec)  # as pyhf, which hashes a validated pyhf.Workspace
    digests = {alg: wsmod.digest(spec, alg) for alg in algorithm}
    click.echo(pyhf_json(digests) if output_json else "\n".join(f"{a}:{d}" for a, d in digests.items()))


# --------------------------------------------------------------------------- patchset

@click.group(context_settings=CONTEXT)
def patchset() -> None:
    """Operations involving patchsets."""


def _name_option(func: Any) -> Any:
    return click.option("--name", default=None, help="The name of the patch to extract.")(func)


def _require_name(name: str | None, source: Any) -> str:
    if name is None:
        from nextstat import workspace as wsmod

        names = [p["name"] for p in wsmod.inspect_patchset(source)["patches"]]
        shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        raise click.UsageError(f"give the patch with --name (the patchset has {len(names)}: {shown})")
    return name


@patchset.command(context_settings=CONTEXT)
@click.argument("patchset", type=_INPUT, default="-")
@_name_option
@output_file_option
@click.option("--with-metadata/--without-metadata", default=False, help="Include patchset metadata in output.")
@verbose_option
def extract(patchset: str, name: str | None, output_file: str | None, with_metadata: bool) -> None:
    """Extract a patch from a patchset (nextstat.workspace.extract_patch)."""
    from nextstat import workspace as wsmod

    spec = wsmod.load_patchset(_source(patchset))
    _emit(wsmod.extract_patch(spec, _require_name(name, spec), with_metadata=with_metadata), output_file)


@patchset.command(context_settings=CONTEXT)
@click.argument("background-only", type=_INPUT, default="-")
@click.argument("patchset", type=_INPUT, default="-")
@_name_option
@output_file_option
@verbose_option
def apply(background_only: str, patchset: str, name: str | None, output_file: str | None) -> None:
    """Apply a patch from patchset to the background-only workspace specification (digests verified)."""
    from nextstat import workspace as wsmod

    if background_only == "-" and patchset == "-":
        raise click.UsageError("only one of BACKGROUND_ONLY and PATCHSET can be read from standard input")
    spec = wsmod.load_patchset(_source(patchset))
    _emit(wsmod.apply_patchset(_source(background_only), spec, _require_name(name, spec)), output_file)


@patchset.command(context_settings=CONTEXT)
@click.argument("background-only", type=_INPUT, default="-")
@click.argument("patchset", type=_INPUT, default="-")
@verbose_option
def verify(background_only: str, patchset: str) -> None:
    """Verify the patchset digests against a background-only workspace specification."""
    from nextstat import workspace as wsmod

    if background_only == "-" and patchset == "-":
        raise click.UsageError("only one of BACKGROUND_ONLY and PATCHSET can be read from standard input")
    spec = wsmod.load(_source(background_only))
    wsmod.check_workspace(spec)  # as pyhf, which verifies a validated pyhf.Workspace
    wsmod.verify_patchset(spec, _source(patchset))
    click.echo("All good.")


@patchset.command(name="inspect", context_settings=CONTEXT)
@click.argument("patchset", type=_INPUT, default="-")
@verbose_option
def inspect_patchset(patchset: str) -> None:
    """Inspect the PatchSet (e.g. list individual patches)."""
    from nextstat import workspace as wsmod

    names = [p["name"] for p in wsmod.inspect_patchset(_source(patchset))["patches"]]
    click.echo(f"\n    {len(names)} patches found in Patchset")
    click.echo("---------------------------------\n")
    for patch_name in names:
        click.echo(patch_name)


# --------------------------------------------------------------------------- cls

@click.command(context_settings=CONTEXT)
@model_options
@output_file_option
@click.option("--test-poi", type=FiniteFloat(), default=1.0, help="The POI value tested.")
@click.option("--test-stat", type=click.Choice(["q", "qtilde"]), default="qtilde")
@click.option("--calctype", type=click.Choice(["asymptotics", "toybased"]), default="asymptotics")
@click.option("--n-toys", type=click.IntRange(min=1), default=TOY_COUNT,
              help="Pseudo-experiments per hypothesis with --calctype toybased (pyhf's default).")
@engine_options
@progress_option
def cls(model: Any, output_file: str | None, test_poi: float, test_stat: str, calctype: str, n_toys: int,
        progress: bool | None) -> None:
    """Compute CLs value(s) for a given pyhf workspace: {"CLs_obs": ..., "CLs_exp": [-2..+2 sigma]}.

    The layout of `pyhf cls`; `nextstat hypotest --json` gives NextStat's full result.
    """
    from nextstat import hypotest

    toys = {"n_toys": n_toys, "progress": resolve_progress(progress)} if calctype == "toybased" else {}
    result = hypotest(model, test_poi, test_stat=test_stat, calctype=calctype, **toys)
    _emit(cls_layout(result), output_file)


COMMANDS: list = [inspect, prune, rename, combine, sort, digest, patchset, cls]
