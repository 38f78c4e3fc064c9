"""Exceptions raised by NextStat."""

from __future__ import annotations


class WorkspaceError(ValueError):
    """A workspace (pyhf JSON) is malformed or describes an undefined likelihood.

    The message starts with the JSON path of the offending field, for example
    ``channels[2].samples[0].modifiers[3].data.hi_data: expected 4 bins, got 3``.
    ``path`` holds that path on its own.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ConvergenceWarning(RuntimeWarning):
    """A result was built on fits that did not all converge.

    The result says so too (``converged=False`` and, where it has one, a field naming the
    fits); it is issued once per result. Filter it with ``warnings.filterwarnings``.
    """
