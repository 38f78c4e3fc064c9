"""HTML rendering of result containers for notebooks (private; used by ``_repr_html_``).

Jupyter shows an object through its ``_repr_html_`` method. Every result container renders
the same way: a title line, a two-column summary table (field, value) and, where the result
holds one, a data table (a row per parameter, scan point or toy set). The helpers here build
those pieces from plain Python values; they escape every cell, format floats to six
significant digits (:func:`cell`) and round value/error pairs by the Particle Data Group rule
(:func:`pdg_round`, PDG Review "Introduction", sec. 5.3), as iminuit's ``_repr_html_`` does.
Only the standard library is used (no pandas, no IPython).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: inline style of every table (notebook themes restyle ``<table>``; this keeps it compact)
_TABLE_STYLE = "border-collapse:collapse;font-family:monospace;font-size:90%;margin:0.2em 0"
_CELL_STYLE = "padding:0.1em 0.6em;text-align:right;border-bottom:1px solid #ddd"
_HEAD_STYLE = "padding:0.1em 0.6em;text-align:right;border-bottom:2px solid #888"
_LEFT = ";text-align:left"  # the first column (names) is left-aligned
_BAD_STYLE = "background:#fdd"
#: table rows shown before the rest are summarised as "... N more rows"
MAX_ROWS = 60


def cell(value: Any) -> str:
    """Escaped text of one table cell.

    None is an en dash (not computed), floats have six significant digits (``nan``/``inf`` as
    written by Python), bools are ``True``/``False``, arrays are compact lists.

    >>> [cell(v) for v in (None, 1.23456789, True, "a<b", np.array([0.5, 1.0]))]
    ['&ndash;', '1.23457', 'True', 'a&lt;b', '[0.5, 1]']
    """
    if value is None:
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return html.escape(f"{float(value):.6g}")
    if isinstance(value, np.ndarray):
        return html.escape("[" + ", ".join(f"{float(v):.6g}" for v in value.ravel()) + "]")
    if isinstance(value, (tuple, list)):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape(str(value))


def pdg_round(value: float, error: float | None) -> tuple[str, str]:
    """``value`` and ``error`` as text, rounded by the PDG rule.

    The three leading digits of the error decide: 100-354 keep two significant digits, 355-949
    one, 950-999 round up to 1000 and keep two; the value is rounded to the same decimal
    place. Without a usable error (None, 0, not finite) the value gets six significant digits
    and the error is ``"-"`` (None) or written as it is.

    >>> pdg_round(1.23456, 0.0123)
    ('1.235', '0.012')
    >>> pdg_round(1.23456, 0.0456)
    ('1.23', '0.05')
    >>> pdg_round(12.3, 0.0987)
    ('12.30', '0.10')
    >>> pdg_round(2.0, None)
    ('2', '-')
    """
    if error is None or not math.isfinite(error) or error <= 0 or not math.isfinite(value):
        return f"{value:.6g}", "-" if error is None else f"{error:.6g}"
    exponent = math.floor(math.log10(error)) - 2
    digits = round(error / 10.0**exponent)  # three leading digits, 100 ... 1000
    if digits >= 1000:
        exponent += 1
        digits = round(digits / 10)
    if digits < 355:
        keep = exponent + 1
    elif digits < 950:
        keep = exponent + 2
    else:
        keep = exponent + 2
        error = 10.0 ** (exponent + 3)
    decimals = max(0, -keep)
    return f"{round(value, -keep):.{decimals}f}", f"{round(error, -keep):.{decimals}f}"


def html_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *, caption: str | None = None,
               bad: Iterable[bool] | None = None, max_rows: int = MAX_ROWS) -> str:
    """An HTML ``<table>``: a header row, then one row per entry of ``rows``.

    Args:
        rows: sequences of cell values, each as long as ``headers``; a cell is rendered by
            :func:`cell`, except a ``str`` subclass :class:`Raw`, inserted as it is (already HTML).
        headers: column titles (escaped).
        caption: a caption above the table (escaped).
        bad: one flag per row; flagged rows get a red background (e.g. fits that did not
            converge).
        max_rows: rows shown; the rest are summarised in one last row.

    Returns:
        The HTML text.

    Raises:
        ValueError: a row whose length differs from ``headers``.

    >>> t = html_table([("mu", 1.0)], ["name", "value"])
    >>> t.count("<tr"), ">mu<" in t, ">1<" in t
    (2, True, True)
    """
    flags = None if bad is None else list(bad)
    parts = [f'<table style="{_TABLE_STYLE}">']
    if caption:
        parts.append(f'<caption style="text-align:left;font-weight:bold">{html.escape(caption)}</caption>')
    parts.append("<thead><tr>" + "".join(f'<th style="{_HEAD_STYLE}{_LEFT if j == 0 else ""}">{html.escape(str(h))}</th>'
                                         for j, h in enumerate(headers)) + "</tr></thead><tbody>")
    n = 0
    for k, row in enumerate(rows):
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"rows[{k}]: expected {len(headers)} cells (one per header), got {len(row)}")
        n += 1
        if n > max_rows:
            continue
        style = f' style="{_BAD_STYLE}"' if flags is not None and flags[k] else ""
        parts.append(f"<tr{style}>" + "".join(
            f'<td style="{_CELL_STYLE}{_LEFT if j == 0 else ""}">{v if isinstance(v, Raw) else cell(v)}</td>'
            for j, v in enumerate(row)) + "</tr>")
    if n > max_rows:
        parts.append(f'<tr><td style="{_CELL_STYLE}" colspan="{len(headers)}">... {n - max_rows} more rows '
                     "(<code>to_dataframe()</code> has them all)</td></tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


class Raw(str):
    """A table cell that is already HTML (inserted without escaping)."""

    __slots__ = ()


def html_summary(title: str, items: Mapping[str, Any], *tables: str, ok: bool = True) -> str:
    """A result's whole ``_repr_html_``: a title, a field/value table of ``items`` and the
    extra ``tables`` (HTML from :func:`html_table`) below it.

    ``ok=False`` marks the title in red (a result built on fits that did not converge).

    >>> "converged" in html_summary("FitResult", {"converged": True})
    True
    """
    color = "" if ok else ";color:#b00"
    head = f'<div style="font-weight:bold{color}">{html.escape(title)}</div>'
    summary = html_table(items.items(), ["field", "value"]) if items else ""
    return '<div class="nextstat-result">' + head + summary + "".join(tables) + "</div>"
