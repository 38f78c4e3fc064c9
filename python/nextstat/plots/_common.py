"""Helpers shared by the drawers: axes creation and argument checks (private)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the single Axes of a new (constrained-layout) ``Figure``.

    Figures are created with ``matplotlib.figure.Figure``, never through pyplot, so no global
    state is touched and nothing is shown or kept alive by matplotlib.
    """
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").subplots()


def as_1d(x: object, what: str, n: int | None = None) -> np.ndarray:
    """``x`` as a float64 1-d array (of length ``n`` when given); ValueError naming ``what``."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = f"({n},)" if n is not None else "(n,)"
        raise ValueError(f"{what} must have shape {want}, got {arr.shape}")
    return arr


def excluded(names: Sequence[str], exclude: Iterable[str] | str | None) -> np.ndarray:
    """Boolean mask of ``names`` matched by ``exclude``.

    Each entry of ``exclude`` matches a name exactly, or as a shell-style pattern
    (``"staterror_*"``); exact matching is tried first because names such as
    ``staterror_SR[0]`` contain pattern characters.
    """
    if exclude is None:
        return np.zeros(len(names), dtype=bool)
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    return np.array(
        [any(name == p or fnmatchcase(name, p) for p in patterns) for name in names], dtype=bool
    )
