"""The one rule for progress bars of long work (toys, scans, limits, ranking, patch scans, demo).

Every long-running public function takes ``progress: bool | None = None``: ``True`` / ``False``
force the bar on / off; ``None`` (the default) shows it only when standard error is an
interactive terminal and ``TQDM_DISABLE`` is unset or false. The CLI's ``--progress`` /
``--no-progress`` pass ``True`` / ``False``.

>>> resolve(False), resolve(True)
(False, True)
"""

from __future__ import annotations

import os
import sys
from typing import Any

_FALSE = ("", "0", "false", "no", "off")


def resolve(progress: bool | None) -> bool:
    """Whether to show a progress bar for ``progress`` (see the module docstring)."""
    if progress is not None:
        if not isinstance(progress, (bool, int)):
            raise TypeError(f"progress: expected True, False or None, got {type(progress).__name__}")
        return bool(progress)
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def bar(iterable: Any = None, *, progress: bool | None = None, **kwargs: Any):
    """A ``tqdm`` bar over ``iterable`` (or ``total=``), shown per :func:`resolve`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not resolve(progress), **kwargs)
