"""pyhf patchsets (as published on HEPData): read, look up, verify and apply patches.

A patchset holds the signal hypotheses of a search as JSON Patches to one background-only
workspace, with metadata naming that workspace by its digest (pyhf's ``patchset.json``, see
:func:`nextstat.workspace.schema.check_patchset`). These functions have the semantics of
``pyhf.PatchSet`` and back ``nextstat patchset extract|apply|verify|inspect``.

>>> from nextstat import examples, workspace
>>> bkg = examples.simple_workspace()
>>> ps = {"metadata": {"description": "signal strength x2", "references": {"hepdata": "ins0000000"},
...                    "digests": {"sha256": workspace.digest(bkg)}, "labels": ["scale"]},
...       "patches": [{"metadata": {"name": "double", "values": [2]},
...                    "patch": [{"op": "replace", "path": "/channels/0/samples/0/data/0", "value": 10.0}]}],
...       "version": "1.0.0"}
>>> workspace.inspect_patchset(ps)["patches"]
[{'name': 'double', 'values': [2]}]
>>> workspace.apply_patchset(bkg, ps, "double")["channels"][0]["samples"][0]["data"][0]
10.0
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from nextstat.errors import WorkspaceError
from nextstat.workspace import io
from nextstat.workspace.schema import check_patchset
from nextstat.workspace.tools import _checked, _result, digest

__all__ = ["apply_patchset", "extract_patch", "inspect_patchset", "is_patchset", "load_patchset", "verify_patchset"]


def is_patchset(obj: Any) -> bool:
    """True for a ``pyhf.PatchSet`` (duck-typed: ``metadata`` and a list of ``patches``) or a
    mapping with the ``patches`` and ``metadata`` fields of a patchset document."""
    if isinstance(obj, Mapping):
        return "patches" in obj and "metadata" in obj
    return hasattr(obj, "patches") and hasattr(obj, "metadata") and not isinstance(obj, (str, bytes))


def load_patchset(ps: Any) -> dict:
    """A patchset as a fresh, checked ``dict``: from a dict, a ``pyhf.PatchSet``, JSON text, or a
    ``.json`` / ``.json.gz`` path.

    Raises:
        WorkspaceError: unreadable or malformed JSON, or a document breaking pyhf's patchset
            schema (naming the field), duplicate patch names or values, or values that do not
            match the labels.
    """
    if not isinstance(ps, Mapping) and is_patchset(ps):  # a pyhf.PatchSet
        spec = {"metadata": copy.deepcopy(ps.metadata),
                "patches": [{"metadata": copy.deepcopy(p.metadata), "patch": copy.deepcopy(list(p.patch))}
                            for p in ps.patches],
                "version": getattr(ps, "version", None)}
    elif isinstance(ps, Mapping):
        spec = copy.deepcopy(dict(ps))
    elif isinstance(ps, (str, bytes)) or hasattr(ps, "__fspath__"):
        spec = io.load(ps)  # JSON text or a file; a JSON object is all load checks
    else:
        raise TypeError(f"patchset: expected a patchset dict, a pyhf.PatchSet, JSON text or a path, "
                        f"got {type(ps).__name__}")
    check_patchset(spec)
    return spec


def _lookup(spec: dict, name: Any) -> dict:
    """The patch entry named ``name``, or whose values are ``name`` (a list or tuple; pyhf's
    ``PatchSet.__getitem__``)."""
    for entry in spec["patches"]:
        if isinstance(name, str) and entry["metadata"]["name"] == name:
            return entry
        if isinstance(name, (list, tuple)) and list(entry["metadata"]["values"]) == list(name):
            return entry
    names = [e["metadata"]["name"] for e in spec["patches"]]
    shown = ", ".join(names[:10]) + (f" ... ({len(names)} patches)" if len(names) > 10 else "")
    raise ValueError(f"name: no patch {name!r} in the patchset (patches: {shown})")


def extract_patch(ps: Any, name: str | tuple | list, *, with_metadata: bool = False) -> list | dict:
    """One patch of a patchset (``pyhf patchset extract``).

    Args:
        ps: the patchset (as :func:`load_patchset` accepts).
        name: the patch's name, or its values (a list or tuple, one per label).
        with_metadata: return ``{"metadata": ..., "patch": [...]}`` with the patch's metadata
            updated by the patchset's (description, digests, labels, references), as pyhf
            does; otherwise the JSON Patch operation list.

    Raises:
        ValueError: no such patch (the message lists the names).
    """
    spec = load_patchset(ps)
    entry = _lookup(spec, name)
    if not with_metadata:
        return entry["patch"]
    return {"metadata": {**entry["metadata"], **spec["metadata"]}, "patch": entry["patch"]}


def verify_patchset(ws: Any, ps: Any) -> None:
    """Check that the patchset was made for the workspace ``ws``: each digest in its
    ``metadata.digests`` equals the workspace's (``pyhf.PatchSet.verify``).

    Raises:
        WorkspaceError: naming ``metadata.digests.<algorithm>``, with the expected and the
            computed digest, where one differs.
    """
    spec = load_patchset(ps)
    workspace = io.load(ws)
    for algorithm, expected in spec["metadata"]["digests"].items():
        got = digest(workspace, algorithm)
        if got != expected:
            raise WorkspaceError(f"metadata.digests.{algorithm}", f"the patchset was made for another background-only "
                                                                  f"workspace: expected {expected}, the workspace has {got}")


def apply_patchset(ws: Any, ps: Any, name: str | tuple | list) -> dict:
    """The background-only workspace ``ws`` with patch ``name`` of the patchset applied
    (``pyhf.PatchSet.apply``, ``pyhf patchset apply``): the digests are verified first
    (:func:`verify_patchset`) and the result is checked against pyhf's schema.

    Raises:
        WorkspaceError: digest mismatch, a patch that cannot be applied, or a result breaking
            the schema. ValueError: no such patch.
    """
    spec = load_patchset(ps)
    workspace = _checked(ws)
    verify_patchset(workspace, spec)
    entry = _lookup(spec, name)
    patched = io.apply_patches(workspace, [entry["patch"]])
    return _result(patched, "patched")


def inspect_patchset(ps: Any) -> dict:
    """What a patchset holds (``pyhf patchset inspect`` prints the names): its ``description``,
    ``references``, ``digests``, ``labels``, ``version`` and ``patches`` (``{"name", "values"}``
    of each, in file order)."""
    spec = load_patchset(ps)
    meta = spec["metadata"]
    return {"description": meta["description"], "references": meta["references"], "digests": meta["digests"],
            "labels": meta["labels"], "version": spec["version"],
            "patches": [{"name": e["metadata"]["name"], "values": e["metadata"]["values"]} for e in spec["patches"]]}
