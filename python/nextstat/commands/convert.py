"""Format conversion: ``xml2json`` / ``json2xml`` (HistFactory XML + ROOT, pyhf 0.7.6's names,
arguments and options) and ``json2hs3`` / ``hs3tojson`` (HS3, ROOT's HistFactory dialect).

``nextstat xml2json ENTRYPOINT-XML [--basedir D] [-v HOST:MOUNT] [--output-file F]
[--track-progress/--hide-progress] [--validation-as-error/--validation-as-warning]`` prints the
workspace as pyhf does (4-space indent, sorted keys); ``nextstat json2xml [WORKSPACE]
[--output-dir D] [--specroot config] [--dataroot data] [--resultprefix FitConfig] [-p PATCH]``
writes the XML and ``data.root``. As in pyhf, ``-v`` of ``xml2json`` is ``--mount``; its
verbose flag is ``--verbose`` (or ``nextstat -v xml2json ...``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nextstat.cli import (
    CONTEXT,
    OutputFile,
    _read_stdin_workspace,
    _set_verbose,
    resolve_progress,
    to_strict_json,
    verbose_option,
    write_atomic,
)

_WORKSPACE = click.Path(exists=True, allow_dash=True, dir_okay=False)
_PATCHES = click.Path(exists=True, dir_okay=False)


class VolumeMount(click.ParamType):
    """``HOST:MOUNT``: read files the XML names under MOUNT from HOST (an existing path)."""

    name = "HOST:MOUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return ``(host, mount)`` as paths; host must exist (resolved to an absolute path)."""
        if isinstance(value, tuple):
            return value
        try:
            host, mount = str(value).split(":")
        except ValueError:
            self.fail(f"{value!r} is not a valid colon-separated option", param, ctx)
        if not Path(host).exists():
            self.fail(f"path {host!r} does not exist.", param, ctx)
        return Path(host).resolve(), Path(mount)


def _source(workspace: str) -> Any:
    """The workspace argument as ``nextstat.workspace.load`` takes it (``-``: standard input)."""
    return _read_stdin_workspace() if workspace == "-" else Path(workspace)


def _write(text: str, output_file: str | None) -> None:
    if output_file is None:
        click.echo(text)
    else:
        write_atomic(output_file, text + "\n")


def _pyhf_json(spec: dict) -> str:
    """A workspace as ``pyhf xml2json`` prints it (strict JSON)."""
    return json.dumps(spec, indent=4, sort_keys=True, allow_nan=False)


@click.command(context_settings=CONTEXT)
@click.argument("entrypoint_xml", metavar="ENTRYPOINT-XML", type=click.Path(exists=True, dir_okay=False))
@click.option("--basedir", type=click.Path(exists=True, file_okay=False), default=".",
              help="The base directory for the XML files to point relative to [default: the current directory].",
              show_default=False)
@click.option("-v", "--mount", "mounts", type=VolumeMount(), multiple=True,
              help="HOST:MOUNT, where HOST is the local path to where files are located and MOUNT the path "
                   "where the file or directory is saved in the XML configuration (like Docker volumes). "
                   "Repeatable.")
@click.option("--output-file", type=OutputFile(), default=None,
              help="The location of the output json file. If not specified, prints to screen.")
@click.option("--track-progress/--hide-progress", default=None, show_default=False,
              help="Show progress bars [default: only if standard error is a terminal].")
@click.option("--validation-as-error/--validation-as-warning", default=True,
              help="Refuse (or only warn about) a result that breaks pyhf's workspace schema.")
@click.option("--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
              help="Show tracebacks on errors and log what NextStat does (-v is --mount here, as in pyhf).")
def xml2json(entrypoint_xml: str, basedir: str, mounts: tuple, output_file: str | None,
             track_progress: bool | None, validation_as_error: bool) -> None:
    """Read HistFactory XML + ROOT histograms (ENTRYPOINT-XML: the top-level XML) as pyhf JSON."""
    from nextstat.histfactory_xml import read_xml

    spec = read_xml(entrypoint_xml, basedir, mounts=mounts, track_progress=resolve_progress(track_progress),
                    validation_as_error=validation_as_error)
    _write(_pyhf_json(spec), output_file)


@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_WORKSPACE, default="-")
@click.option("--output-dir", type=click.Path(exists=True, file_okay=False), default=".",
              help="Folder to write the XML, data.root and HistFactorySchema.dtd into.")
@click.option("--specroot", default="config", help="Sub-folder of the channel XML files.")
@click.option("--dataroot", default="data", help="Sub-folder of data.root.")
@click.option("--resultprefix", default="FitConfig", help="Prefix of the XML file names.")
@click.option("-p", "--patch", "patches", multiple=True, type=_PATCHES,
              help="JSON Patch file applied to the workspace first (repeatable, in order).")
@verbose_option
def json2xml(workspace: str, output_dir: str, specroot: str, dataroot: str, resultprefix: str,
             patches: tuple[str, ...]) -> None:
    """Convert pyhf JSON back to XML + ROOT files (WORKSPACE: a file or - for standard input)."""
    from nextstat.histfactory_xml import write_xml

    write_xml(_source(workspace), output_dir, specroot=specroot, dataroot=dataroot, resultprefix=resultprefix,
              patches=[Path(p) for p in patches])


@click.command(context_settings=CONTEXT)
@click.argument("workspace", type=_WORKSPACE, default="-")
@click.option("-p", "--patch", "patches", multiple=True, type=_PATCHES,
              help="JSON Patch file applied to the workspace first (repeatable, in order).")
@click.option("--output-file", type=OutputFile(), default=None,
              help="Write the HS3 JSON to this file instead of standard output.")
@verbose_option
def json2hs3(workspace: str, patches: tuple[str, ...], output_file: str | None) -> None:
    """Convert a pyhf JSON workspace to HS3 (ROOT's HistFactory dialect; nextstat.hs3)."""
    from nextstat.hs3 import to_hs3

    _write(to_strict_json(to_hs3(_source(workspace), patches=[Path(p) for p in patches])), output_file)


@click.command(context_settings=CONTEXT)
@click.argument("hs3_file", metavar="HS3-FILE", type=_WORKSPACE, default="-")
@click.option("--analysis", default=None, show_default=False,
              help="Analysis to read [default: all analyses of the first one's likelihood].")
@click.option("--output-file", type=OutputFile(), default=None,
              help="Write the pyhf JSON to this file instead of standard output.")
@verbose_option
def hs3tojson(hs3_file: str, analysis: str | None, output_file: str | None) -> None:
    """Convert an HS3 document (HistFactory channels, e.g. from ROOT) to a pyhf JSON workspace."""
    from nextstat.hs3 import from_hs3

    _write(_pyhf_json(from_hs3(_source(hs3_file), analysis=analysis)), output_file)


COMMANDS = [xml2json, json2xml, json2hs3, hs3tojson]
