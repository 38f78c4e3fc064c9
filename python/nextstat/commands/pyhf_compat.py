"""pyhf 0.7.6's CLI conventions that NextStat's commands accept: its engine options and its
output layouts of ``pyhf fit`` and ``pyhf cls``.

Imported by :mod:`nextstat.cli` (for ``fit --pyhf``), so it imports neither :mod:`nextstat.cli`
nor NumPy at module level.

Layouts (pyhf prints them with ``json.dumps(..., indent=4, sort_keys=True)``; so does
:func:`pyhf_json`):

- ``pyhf fit``: ``{"mle_parameters": {parameter set: [best-fit values]}}``, plus
  ``"twice_nll"`` (``2 * NLL`` at the minimum, all constants included) with ``--value``;
- ``pyhf cls``: ``{"CLs_obs": CLs, "CLs_exp": [CLs expected at -2, -1, 0, +1, +2 sigma]}``.

>>> print(pyhf_json({"b": [1.0], "a": 2}))
{
    "a": 2,
    "b": [
        1.0
    ]
}
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable

import click

__all__ = ["EqDelimString", "cls_layout", "engine_options", "fit_layout", "pyhf_json"]

log = logging.getLogger("nextstat")

BACKENDS = ("numpy", "pytorch", "tensorflow", "jax", "np", "torch", "tf")
OPTIMIZERS = ("scipy", "minuit")


class EqDelimString(click.ParamType):
    """``KEY=VALUE`` (pyhf's ``EqDelimStringParamType``), converted to ``{KEY: VALUE}``."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict:
        """Split at the first ``=``; a value without one is a usage error."""
        if isinstance(value, dict):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"expected KEY=VALUE, got {value!r}.", param, ctx)
        return {key: val}


def engine_options(func: Callable) -> Callable:
    """pyhf's ``--backend``, ``--optimizer`` and ``--optconf``, accepted so that pyhf command
    lines run unchanged. NextStat has one engine (compiled, float64) and its own minimiser, so
    they change nothing; a warning says so when one asks for something else than pyhf's default
    (NumPy backend, SciPy optimizer)."""

    @click.option("--backend", type=click.Choice(BACKENDS), default=None,
                  help="Accepted for pyhf compatibility; NextStat always uses its compiled float64 engine.")
    @click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
                  help="Accepted for pyhf compatibility; NextStat always uses its own Newton minimiser.")
    @click.option("--optconf", type=EqDelimString(), multiple=True,
                  help="Accepted for pyhf compatibility (pyhf's optimizer options); ignored.")
    @functools.wraps(func)
    def wrapper(backend: str | None, optimizer: str | None, optconf: tuple[dict, ...], **kwargs: Any) -> Any:
        given = [f"--{name} {v}" for name, v in (("backend", backend), ("optimizer", optimizer)) if v not in
                 (None, "numpy", "np", "scipy")] + (["--optconf"] if optconf else [])
        if given:
            log.warning("%s: accepted for pyhf compatibility and ignored (NextStat has one engine and minimiser)",
                        ", ".join(given))
        return func(**kwargs)

    return wrapper


def fit_layout(model: Any, result: Any, value: bool) -> dict:
    """``pyhf fit``'s output for a NextStat fit: best-fit values per parameter set (a list, one
    value per component, e.g. per bin of a staterror), and ``twice_nll`` with ``value``."""
    out: dict[str, Any] = {"mle_parameters": {name: [float(x) for x in result.bestfit[sl]]
                                              for name, sl in sorted(model.par_slices.items())}}
    if value:
        out["twice_nll"] = float(result.twice_nll)
    return out


def cls_layout(result: Any) -> dict:
    """``pyhf cls``'s output for a NextStat hypothesis test (a CLs test, ``q`` or ``qtilde``)."""
    return {"CLs_exp": [float(x) for x in result.cls_expected], "CLs_obs": float(result.cls)}


def pyhf_json(payload: Any) -> str:
    """``payload`` as pyhf's CLI prints JSON (4-space indent, sorted keys), strict: a non-finite
    number raises ValueError instead of writing ``NaN``."""
    try:
        return json.dumps(payload, indent=4, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"the output holds a non-finite number and cannot be written as JSON ({exc})") from None
