"""The command line's parameter types: each checks its value while the command line is parsed,
so a bad value is a usage error (exit 2, one line) before any work is done."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import click

MAX_SCAN_POINTS = 100_000


class FiniteFloat(click.FloatRange):
    """A finite float (``nan`` and ``inf`` are usage errors), optionally in a range."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Convert to float, refusing non-finite values, then check the range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid float.", param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value!r}.", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return "finite"
        return super()._describe_range()


class ScanGrid(click.ParamType):
    """``LO:HI:N``: N (2..MAX_SCAN_POINTS) evenly spaced finite values from LO to HI > LO."""

    name = "LO:HI:N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return the grid as a numpy array."""
        if not isinstance(value, str):
            return value
        try:
            lo_s, hi_s, n_s = value.split(":")
            lo, hi, n = float(lo_s), float(hi_s), int(n_s)
        except ValueError:
            self.fail(f"expected LO:HI:N, got {value!r}.", param, ctx)
        if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
            self.fail(f"expected finite LO < HI, got {value!r}.", param, ctx)
        if not 2 <= n <= MAX_SCAN_POINTS:
            self.fail(f"expected 2 <= N <= {MAX_SCAN_POINTS}, got {value!r}.", param, ctx)
        import numpy as np

        return np.linspace(lo, hi, n)


def _image_formats() -> dict[str, str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


class OutputFile(click.ParamType):
    """A file to write: its directory must exist and be writable, and it must not be a directory.

    Checked while the command line is parsed, so a bad output path is a usage error before any
    work is done. With ``image=True`` the suffix must name a format matplotlib can write.
    """

    name = "file"

    def __init__(self, image: bool = False):
        self.image = image

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Return the path (as given) after checking that it can be written."""
        text = os.fspath(value)
        if not text:
            self.fail("empty file name.", param, ctx)
        try:
            path = Path(text)
            parent = path.parent
            if path.is_dir():
                self.fail(f"{text!r} is a directory.", param, ctx)
            if not parent.is_dir():
                what = "is not a directory" if parent.exists() else "does not exist"
                self.fail(f"directory {str(parent)!r} {what}.", param, ctx)
            if not os.access(parent, os.W_OK | os.X_OK):
                self.fail(f"directory {str(parent)!r} is not writable.", param, ctx)
            if path.exists() and not os.access(path, os.W_OK):
                self.fail(f"{text!r} is not writable.", param, ctx)
        except (OSError, ValueError) as exc:  # name too long, NUL byte
            self.fail(f"cannot write {text!r}: {exc}", param, ctx)
        if self.image:
            formats = _image_formats()
            suffix = path.suffix[1:].lower()
            if suffix not in formats:
                self.fail(f"{text!r}: expected a file name ending in one of "
                          f"{', '.join('.' + f for f in sorted(formats))}.", param, ctx)
        return text
