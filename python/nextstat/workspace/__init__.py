"""HistFactory workspaces in pyhf's JSON format: load, validate, patch, and pyhf's workspace tools.

A workspace is a plain ``dict`` following pyhf's ``workspace.json`` schema (version 1.0.0).

- :mod:`nextstat.workspace.io`: :func:`load` (dict, JSON text, ``.json`` / ``.json.gz``),
  :func:`validate` (what a model needs, naming the offending field by its JSON path),
  :func:`apply_patches` (JSON Patch, RFC 6902) and :func:`select_measurement`.
- :mod:`nextstat.workspace.tools`: :func:`inspect`, :func:`prune`, :func:`rename`,
  :func:`combine`, :func:`sorted` and :func:`digest`, with pyhf 0.7.6's semantics and results.
- :mod:`nextstat.workspace.patchset`: pyhf patchsets (HEPData): :func:`load_patchset`,
  :func:`extract_patch`, :func:`verify_patchset`, :func:`apply_patchset`,
  :func:`inspect_patchset`.
- :mod:`nextstat.workspace.schema`: pyhf's schema rules, :func:`check_workspace` and
  :func:`check_patchset`.
"""

from nextstat.errors import WorkspaceError
from nextstat.workspace.io import (
    MODIFIER_TYPES,
    WorkspaceLike,
    _file,
    _is_json_text,
    _number,
    _parse_json,
    _patch_list,
    _read_json,
    _require,
    _short,
    _validate_modifier,
    apply_patches,
    load,
    load_patch,
    numbers,
    select_measurement,
    validate,
)
from nextstat.workspace.patchset import (
    apply_patchset,
    extract_patch,
    inspect_patchset,
    is_patchset,
    load_patchset,
    verify_patchset,
)
from nextstat.workspace.schema import check_patchset, check_workspace
from nextstat.workspace.tools import JOINS, combine, digest, inspect, prune, rename, sorted  # noqa: A004

__all__ = [
    "JOINS", "MODIFIER_TYPES", "WorkspaceError", "WorkspaceLike", "apply_patches", "apply_patchset",
    "check_patchset", "check_workspace", "combine", "digest", "extract_patch", "inspect", "inspect_patchset",
    "is_patchset", "load", "load_patch", "load_patchset", "numbers", "prune", "rename", "select_measurement",
    "sorted", "validate", "verify_patchset",
]
