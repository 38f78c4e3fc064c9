"""Command-line interface: thin commands over the public API.

``nextstat fit|hypotest|limit|rank WORKSPACE [--patch P ...]``, ``nextstat plot KIND WORKSPACE -o FILE``,
``nextstat demo`` and ``nextstat warmup`` (plus the command families of :mod:`nextstat.commands`). WORKSPACE is a pyhf JSON file (``.json`` or ``.json.gz``) or ``-`` for
standard input. ``--json`` prints machine-readable output (to ``--output-file`` if given).

Contract at the edges (implemented once, in :class:`NextStatGroup`):

- exit 0: success;
- exit 2: usage error (bad option value, unknown choice, missing input file, output directory
  that does not exist or is not writable), reported on one line before anything is computed;
- exit 1: runtime error (a malformed workspace, a value the library refuses, an unreadable
  input, or a bug), reported on one line ``Error: ...`` on standard error. ``-v`` / ``--verbose``
  adds the traceback and shows the ``nextstat`` logger's messages down to DEBUG.

JSON output (``--json``, ``--output-file``) is strict JSON (non-finite numbers become ``null``);
output files are written through a temporary file in the same directory and ``os.replace``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import math
import os
import sys
import traceback
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

from nextstat._version import __version__
from nextstat.atomic import atomic_output, save_figure, write_atomic  # noqa: F401 - also used by commands/
from nextstat.engine.warmup import PARTS as WARMUP_PARTS
from nextstat.commands.params import MAX_SCAN_POINTS, FiniteFloat, OutputFile, ScanGrid  # noqa: F401 - also used by commands/
from nextstat.commands.pyhf_compat import engine_options

CITATION = """@software{nextstat,
  title = {NextStat: fast, differentiable binned statistical inference},
  version = {%s},
  url = {https://github.com/nextstat/nextstat}
}""" % __version__

CONTEXT = dict(help_option_names=["-h", "--help"], show_default=True)

LOGGER_NAME = "nextstat"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
MAX_MESSAGE = 2000  # characters of an error message shown on its one line

_VERBOSE_KEY = "nextstat.verbose"
_HANDLER_KEY = "nextstat.log_handler"


# --------------------------------------------------------------------------- error reporting

def _one_line(message: str) -> str:
    """``message`` with its whitespace (newlines included) collapsed, cut to MAX_MESSAGE characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def describe_error(exc: BaseException) -> str:
    """The one-line message the CLI prints (after ``Error: ``) for an exception from a command.

    Errors of the input or of values the library refuses (``WorkspaceError``, ``ValueError``,
    ``TypeError``, ``OSError``, ``RecursionError``, ``zlib.error``, ``EOFError``, ``MemoryError``,
    ``ImportError``) give their own message; anything else is a bug and is reported as
    ``internal error: <type>: <message> (run with -v for the traceback)``.
    """
    text = _one_line(str(exc))
    if isinstance(exc, RecursionError):
        return f"input nested too deeply to process ({text or 'maximum recursion depth exceeded'})"
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({text})"
    if isinstance(exc, EOFError):
        return f"unexpected end of compressed input ({text or 'truncated'})"
    if isinstance(exc, MemoryError):
        return "out of memory" + (f" ({text})" if text else "")
    if isinstance(exc, ImportError):
        return f"missing dependency: {text}"
    if isinstance(exc, (ValueError, TypeError, OSError)):
        return text or type(exc).__name__
    name = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    return _one_line(f"internal error: {name}: {text} (run with -v for the traceback)" if text
                     else f"internal error: {name} (run with -v for the traceback)")


class CommandFailed(click.ClickException):
    """A runtime error of a command: exit status 1, shown as one line ``Error: <message>``."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def _is_verbose(ctx: click.Context | None) -> bool:
    return bool(ctx is not None and ctx.meta.get(_VERBOSE_KEY))


def _set_verbose(ctx: click.Context, _param: Any, value: bool) -> None:
    """Callback of ``-v``: record verbosity (shared by the group and its subcommands) and lower
    the level of the ``nextstat`` logger if its handler is already installed."""
    if value and not ctx.resilient_parsing:
        ctx.meta[_VERBOSE_KEY] = True
        handler = ctx.meta.get(_HANDLER_KEY)
        if handler is not None:
            handler.setLevel(logging.DEBUG)
            logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG)


def verbose_option(func: Callable) -> Callable:
    """``-v/--verbose``: tracebacks on errors, and the ``nextstat`` logger's messages down to DEBUG."""
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_verbose,
                        help="Show tracebacks on errors and log what NextStat does (DEBUG).")(func)


@contextlib.contextmanager
def _cli_logging(ctx: click.Context) -> Iterator[None]:
    """Route the ``nextstat`` logger (only it) to standard error for one invocation: WARNING and
    above, DEBUG with ``-v``. Restores the logger's level, propagation and handlers afterwards."""
    logger = logging.getLogger(LOGGER_NAME)
    old_level, old_propagate = logger.level, logger.propagate
    level = logging.DEBUG if _is_verbose(ctx) else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    ctx.meta[_HANDLER_KEY] = handler
    try:
        yield
    finally:
        ctx.meta.pop(_HANDLER_KEY, None)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: one line ``Warning: <Category>: <message>``."""
    click.echo(f"Warning: {category.__name__}: {_one_line(str(message))}", err=True)


class NextStatGroup(click.Group):
    """Click group implementing the CLI's exit-status contract once for every command.

    Usage errors exit 2 with one line; exceptions from commands exit 1 with one line
    ``Error: ...`` (see :func:`describe_error`), plus the traceback with ``-v``. Logging of the
    ``nextstat`` logger and one-line warnings are set up for the duration of the invocation.
    """

    def _load_modules(self) -> None:
        """Add the commands of :data:`nextstat.commands.MODULES` (once)."""
        if getattr(self, "_modules_loaded", False):
            return
        self._modules_loaded = True
        import importlib

        from nextstat.commands import MODULES

        for name in MODULES:
            for command in importlib.import_module(name).COMMANDS:
                self.add_command(command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_modules()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_modules()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand, turning its exceptions into :class:`CommandFailed`."""
        with _cli_logging(ctx), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except OSError as exc:
                if getattr(exc, "errno", None) == 32:  # EPIPE: click handles a closed pipe quietly
                    raise
                self._fail(ctx, exc)
            except Exception as exc:  # noqa: BLE001 -- the contract: one line, never a traceback
                self._fail(ctx, exc)

    @staticmethod
    def _fail(ctx: click.Context, exc: Exception) -> NoReturn:
        if _is_verbose(ctx):
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        raise CommandFailed(describe_error(exc)) from exc

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """As :meth:`click.Group.main`, but a usage error is reported on one line (exit 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        no_args_help = getattr(click.exceptions, "NoArgsIsHelpError", ())
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except no_args_help as exc:  # bare `nextstat`: the help text, exit 2 (click's behaviour)
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None and exc.ctx.help_option_names:
                hint = f" (see '{exc.ctx.command_path} {exc.ctx.help_option_names[0]}')"
            click.echo(f"Error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


# --------------------------------------------------------------------------- output helpers

def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_json_key(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    import numpy as np

    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict())
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _json_key(key: Any) -> str:
    key = _json_safe(key)
    return key if isinstance(key, str) else json.dumps(key)


def to_strict_json(payload: Any, *, indent: int | None = 2) -> str:
    """Serialise ``payload`` as strict JSON (RFC 8259).

    NaN and infinities become ``null`` (recursively), numpy scalars and arrays become Python
    numbers and lists, tuples become lists, and objects with ``to_dict`` are converted with it;
    anything else raises TypeError. Dict keys become strings.
    """
    return json.dumps(_json_safe(payload), indent=indent, allow_nan=False)


# --------------------------------------------------------------------------- shared options

def _print_citation(ctx: click.Context, _param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(CITATION)
        ctx.exit()


def resolve_progress(flag: bool | None) -> bool:
    """Whether to show progress bars: ``--progress``/``--no-progress`` if given, else the
    library's rule (:func:`nextstat.progress.resolve`)."""
    from nextstat.progress import resolve

    return resolve(flag)


def progress_option(func: Callable) -> Callable:
    """``--progress/--no-progress`` (passed as ``progress``: True, False or None = automatic)."""
    return click.option("--progress/--no-progress", "progress", default=None, show_default=False,
                        help="Show progress bars on standard error [default: only if it is a terminal "
                             "and TQDM_DISABLE is unset].")(func)


def _read_stdin_workspace() -> str:
    """The workspace text on standard input (gzip-compressed or not)."""
    from nextstat.errors import WorkspaceError

    stream = click.get_binary_stream("stdin")
    if stream.isatty():
        raise click.UsageError("no WORKSPACE given and standard input is a terminal "
                               "(give a file, or pipe the JSON in)")
    raw = stream.read()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, zlib.error) as exc:
        raise WorkspaceError("", f"cannot read standard input: corrupt gzip data ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise WorkspaceError("", f"cannot read standard input: not UTF-8 text ({exc})") from exc
    if not text.strip():
        raise WorkspaceError("", "standard input is empty (expected a JSON workspace)")
    if not text.lstrip().startswith(("{", "[")):
        raise WorkspaceError("", "standard input does not hold a JSON workspace")
    return text


def model_options(func: Callable) -> Callable:
    """Options shared by every command that reads a workspace; the command receives ``model``."""

    @click.argument("workspace", type=click.Path(exists=True, allow_dash=True, dir_okay=False), default="-")
    @click.option("-p", "--patch", "patches", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="JSON Patch file applied to the workspace (repeatable, in order).")
    @click.option("--patch-name", default=None, metavar="NAME",
                  help="With one --patch that is a pyhf patchset (e.g. HEPData's patchset.json): the patch "
                       "of that name to apply, after verifying the patchset's digests (as `patchset apply`).")
    @click.option("--measurement", default=None, help="Measurement name (default: the first).")
    @click.option("--poi", default=None, metavar="NAME|none",
                  help="Parameter of interest, or 'none' for a model without one (fits and plots of "
                       "background-only workspaces) [default: the measurement's; where the model lacks "
                       "it, none, with a warning].")
    @verbose_option
    @functools.wraps(func)
    def wrapper(workspace: str, patches: tuple[str, ...], patch_name: str | None, measurement: str | None,
                poi: str | None, **kwargs: Any) -> Any:
        from nextstat import WorkspaceError, from_pyhf

        source: Any = _read_stdin_workspace() if workspace == "-" else Path(workspace)
        if patch_name is not None and len(patches) != 1:
            raise click.UsageError(f"--patch-name needs exactly one --patch (the patchset file), got {len(patches)}")
        patch_kw: dict[str, Any] = ({"patches": Path(patches[0]), "patch_name": patch_name} if patch_name is not None
                                    else {"patches": [Path(p) for p in patches]})
        poi_kw = {} if poi is None else {"poi_name": None if poi.lower() == "none" else poi}
        try:
            model = from_pyhf(source, measurement=measurement, **patch_kw, **poi_kw)
        except WorkspaceError as exc:  # e.g. a background-only workspace naming the signal's POI
            if poi is not None or not exc.path.endswith(".config.poi"):
                raise
            logging.getLogger(LOGGER_NAME).warning("building the model without a POI: %s", exc)
            model = from_pyhf(source, measurement=measurement, **patch_kw, poi_name=None)
        return func(model=model, **kwargs)

    return wrapper


def output_options(func: Callable) -> Callable:
    """``--json`` / ``--output-file``: the command returns ``(payload, text)``; this prints the text,
    or the payload as strict JSON, or writes it atomically to the file."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
    @click.option("--output-file", type=OutputFile(), default=None,
                  help="Write the JSON output to this file (implies --json).")
    @functools.wraps(func)
    def wrapper(as_json: bool, output_file: str | None, **kwargs: Any) -> None:
        payload, text = func(**kwargs)
        if output_file:
            write_atomic(output_file, to_strict_json(payload) + "\n")
        elif as_json:
            click.echo(to_strict_json(payload))
        else:
            click.echo(text)

    return wrapper


# --------------------------------------------------------------------------- commands

@click.group(cls=NextStatGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version")
@click.option("--cite", is_flag=True, expose_value=False, is_eager=True, callback=_print_citation,
              help="Print the BibTeX citation and exit.")
@verbose_option
def main() -> None:
    """NextStat: fast binned statistical inference for HistFactory (pyhf JSON) workspaces."""


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--pyhf", "pyhf_layout", is_flag=True,
              help="Print pyhf's `fit` JSON layout ({\"mle_parameters\": {name: [values]}}) instead of NextStat's.")
@click.option("--value", is_flag=True, help="With --pyhf: add \"twice_nll\" (pyhf's --value).")
@engine_options
@output_options
def fit(model: Any, pyhf_layout: bool, value: bool) -> tuple[dict, str]:
    """Maximum-likelihood fit with Hesse errors.

    --json: NextStat's layout (FitResult.to_dict(): bestfit, errors, covariance, ..., nll,
    twice_nll, converged, message); --pyhf: the layout of `pyhf fit`.
    """
    from nextstat import fit as do_fit

    result = do_fit(model)
    if pyhf_layout:
        from nextstat.commands.pyhf_compat import fit_layout, pyhf_json

        payload = fit_layout(model, result, value)
        return payload, pyhf_json(payload)
    return result.to_dict(), str(result)


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--mu", type=FiniteFloat(), default=1.0, help="Tested POI value (0: discovery test).")
@click.option("--test-stat", type=click.Choice(["q0", "q", "qtilde"]), default=None,
              help="Test statistic [default: q0 at mu=0, else qtilde].")
@click.option("--toys", "n_toys", type=click.IntRange(min=1), default=None, show_default=False,
              help="Toy-based test with N pseudo-experiments per hypothesis (nextstat.hypotest_toys) "
                   "[default: asymptotic formulae].")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Random seed of the toys (with --toys).")
@progress_option
@output_options
def hypotest(model: Any, mu: float, test_stat: str | None, n_toys: int | None, seed: int,
             progress: bool | None) -> tuple[dict, str]:
    """Hypothesis test: CLs (and the expected band), or Z0 at --mu 0; asymptotic, or with --toys N."""
    from nextstat import hypotest as do_hypotest
    from nextstat import hypotest_toys

    if n_toys is None:
        result = do_hypotest(model, mu, test_stat=test_stat)
    else:
        stat = test_stat or ("q0" if mu == 0 else "qtilde")  # as nextstat.hypotest chooses
        result = hypotest_toys(model, mu, n_toys=n_toys, seed=seed, test_stat=stat,
                               progress=resolve_progress(progress))

    def pm(value: float | None, error: float | None) -> str:
        return f"{value:.6g}" + (f" +- {error:.2g}" if error is not None else "")

    how = "" if n_toys is None else f" [{result.n_toys[0]} s+b / {result.n_toys[1]} b toys, seed {seed}, " \
                                    f"{result.n_failed_toys} failed]"
    if result.test_stat == "q0":
        expected = "" if result.significance_expected is None else \
            f" (expected Z0 = {result.significance_expected:.4f})"
        text = (f"Discovery test (q0): q0 = {result.q_obs:.6g}, p0 = {pm(result.p0, result.clsb_error)}, "
                f"Z0 = {result.significance:.4f} sigma{expected}{how}")
    else:
        band = "  ".join(f"{v:.4g}" for v in result.cls_expected)
        text = (f"Test of {model.poi_name} = {mu:g} ({result.test_stat}): CLs = {pm(result.cls, result.cls_error)}  "
                f"CLsb = {pm(result.clsb, result.clsb_error)}  CLb = {pm(result.clb, result.clb_error)}{how}\n"
                f"expected CLs (-2..+2 sigma): {band}")
    return result.to_dict(), text


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--alpha", type=FiniteFloat(0.0, 1.0, min_open=True, max_open=True), default=0.05,
              help="Test size (0.05: 95% CL).")
@click.option("--scan", type=ScanGrid(), default=None, help="Grid scan of the POI instead of root finding.")
@progress_option
@output_options
def limit(model: Any, alpha: float, scan: Any, progress: bool | None) -> tuple[dict, str]:
    """CLs upper limit on the POI (observed and expected band)."""
    from nextstat import upper_limit

    result = upper_limit(model, alpha=alpha, scan=scan, progress=resolve_progress(progress))
    band = "  ".join(f"{v:.4g}" for v in result.expected)
    text = (f"{100 * (1 - alpha):g}% CL upper limit on {model.poi_name}: observed {result.observed:.4g}\n"
            f"expected (-2..+2 sigma): {band}")
    return result.to_dict(), text


@main.command(context_settings=CONTEXT)
@model_options
@click.option("--top", type=click.IntRange(min=1), default=None, help="Show only the N highest-impact parameters.")
@click.option("--plot", "plot_file", type=OutputFile(image=True), default=None, help="Save a ranking plot.")
@progress_option
@output_options
def rank(model: Any, top: int | None, plot_file: str | None, progress: bool | None) -> tuple[dict, str]:
    """Rank nuisance parameters by their impact on the POI."""
    from nextstat.interpret import format_ranking, plot_rank_impact, rank_impact

    table = rank_impact(model, top_n=top, progress=resolve_progress(progress))
    if plot_file:
        fig = plot_rank_impact(model, top_n=top or 20, table=table)
        save_figure(fig, plot_file)
    return {"ranking": table}, format_ranking(table)


@main.command(context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(["pulls", "corr", "brazil", "profile", "yields", "data-mc"]))
@model_options
@click.option("-o", "--output", "output", type=OutputFile(image=True), required=True, help="Image file to write.")
@click.option("--prefit", is_flag=True, help="data-mc: the pre-fit prediction (no fit).")
@click.option("--log-scale", is_flag=True, help="data-mc: logarithmic y axes.")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="pulls, corr: only the N most pulled / most correlated parameters [default: all, a large "
                   "model's trimmed as nextstat.plots.plot_from_model does].")
def plot(kind: str, model: Any, output: str, prefit: bool, log_scale: bool, top: int | None) -> None:
    """Draw a standard plot from a fit of the workspace (data-mc: per channel, pre- or post-fit)."""
    from nextstat.plots import plot_from_model

    for flag, given, kinds in (("--prefit", prefit, ("data-mc",)), ("--log-scale", log_scale, ("data-mc",)),
                               ("--top", top is not None, ("pulls", "corr"))):
        if given and kind not in kinds:
            raise click.UsageError(f"{flag} applies to the {' and '.join(kinds)} plot{'s' if len(kinds) > 1 else ''} only")
    if kind == "data-mc" or top is not None:
        from nextstat import fit, prediction
        from nextstat.plots import plot_correlation, plot_data_mc, plot_pulls

        result = None if prefit else fit(model)
        if result is not None and not result.converged:
            raise ValueError(f"the fit did not converge ({result.message}); nothing to plot")
        if kind == "data-mc":
            fig = plot_data_mc(prediction(model, result), log_scale=log_scale)
        elif kind == "pulls":
            fig = plot_pulls(result, model=model, top_n=top)
        else:
            fig = plot_correlation(result, top_n=top)
    else:
        fig = plot_from_model(kind, model)
    save_figure(fig, output)
    click.echo(f"wrote {output}")


@main.command(context_settings=CONTEXT)
@click.option("--benchmark", type=click.Choice(["inferno", "norm"]), default="inferno", show_default=True,
              help="inferno: INFERNO's benchmark 2 (two shape systematics), var(s) loss vs BCE; "
                   "norm: a normalisation systematic, -Z0 loss vs BCE.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, help="Training epochs for each network.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo_output", help="Folder for the plot and summary.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Random seed.")
@progress_option
@verbose_option
def demo(benchmark: str, epochs: int, out_dir: str, seed: int, progress: bool | None) -> None:
    """Train a small network on a profiled statistic of a full model and compare with BCE."""
    if benchmark == "inferno":
        from nextstat.demo_inferno import run_inferno_demo as run
    else:
        from nextstat.demo import run_demo as run
    summary = run(epochs=epochs, out_dir=Path(out_dir), seed=seed, progress=resolve_progress(progress))
    click.echo(summary)


@main.command(context_settings=CONTEXT)
@click.option("--part", "parts", multiple=True, type=click.Choice(WARMUP_PARTS),
              help="Compile only these parts (repeatable; default: all).")
@progress_option
@verbose_option
def warmup(parts: tuple[str, ...], progress: bool | None) -> None:
    """Compile the engine's kernels once, ahead of first use (cached for later processes)."""
    from nextstat.engine.jit import cache_dir
    from nextstat.engine.warmup import warmup as do_warmup

    steps = do_warmup(parts or WARMUP_PARTS, progress=resolve_progress(progress))
    for step in steps:
        click.echo(f"{step.part:<9} {step.seconds:8.2f} s")
    click.echo(f"compiled kernels cached in {cache_dir()}")


if __name__ == "__main__":  # pragma: no cover
    main()
