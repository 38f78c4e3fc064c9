"""Workspace tooling with pyhf 0.7.6's semantics: inspect, prune, rename, combine, sort, digest.

Each function takes a workspace as :func:`nextstat.workspace.load` does (a ``dict``, e.g. a
``pyhf.Workspace``; JSON text; a ``.json`` / ``.json.gz`` path), never modifies it, and returns
a new plain ``dict`` equal (as JSON) to what ``pyhf.Workspace``'s method of the same name returns,
checked against pyhf's schema (:mod:`nextstat.workspace.schema`) on the way in and out, as pyhf
does. They back the ``nextstat inspect|prune|rename|combine|sort|digest`` commands.

>>> from nextstat import examples, workspace
>>> ws = examples.simple_workspace()
>>> small = workspace.prune(ws, modifier_types=["histosys"])
>>> any(m["type"] == "histosys" for c in small["channels"] for s in c["samples"] for m in s["modifiers"])
False
>>> workspace.rename(ws, channels={"SR": "signal_region"})["observations"][0]["name"]
'signal_region'
>>> workspace.digest(ws) == workspace.digest(workspace.load(examples.path()))
True
"""

from __future__ import annotations

import builtins
import collections
import copy
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from nextstat.errors import WorkspaceError
from nextstat.workspace import io
from nextstat.workspace.schema import check_workspace

__all__ = ["JOINS", "combine", "digest", "inspect", "prune", "rename", "sorted"]

_sorted = builtins.sorted  # this module defines ``sorted`` (pyhf's ``Workspace.sorted``)
log = logging.getLogger("nextstat")

JOINS = ("none", "outer", "left outer", "right outer")
"""Join operations of :func:`combine` (``pyhf.Workspace.valid_joins``)."""

# constraint term of the parameters each modifier type makes (pyhf's paramset classes)
CONSTRAINTS = {
    "histosys": "constrained_by_normal", "lumi": "constrained_by_normal", "normsys": "constrained_by_normal",
    "staterror": "constrained_by_normal", "shapesys": "constrained_by_poisson",
    "normfactor": "unconstrained", "shapefactor": "unconstrained",
}


def _checked(ws: Any) -> dict:
    """A fresh copy of the workspace ``ws``, checked against pyhf's schema."""
    spec = io.load(ws)
    check_workspace(spec)
    return spec


def _result(spec: dict, what: str) -> dict:
    """``spec`` after pyhf's schema check of the workspace an operation made."""
    try:
        check_workspace(spec)
    except WorkspaceError as exc:
        reason = str(exc)[len(exc.path) + 2:] if exc.path else str(exc)
        raise WorkspaceError(exc.path, f"the {what} workspace would not be valid: {reason}") from None
    return spec


def _modifier_pairs(spec: dict) -> list[tuple[str, str]]:
    """Sorted distinct (name, type) of the workspace's modifiers (pyhf's ``Workspace.modifiers``)."""
    return _sorted({(m["name"], m["type"]) for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]})


def _samples(spec: dict) -> list[str]:
    return _sorted({s["name"] for c in spec["channels"] for s in c["samples"]})


def inspect(ws: Any) -> dict:
    """Summary of a workspace: the JSON ``pyhf inspect --output-file`` writes.

    Returns a dict with
    ``samples`` (sorted names), ``channels`` (``[name, nbins]`` sorted by name),
    ``modifiers`` (``{name: type}``; for a name of several types the last in sorted order),
    ``parameters`` (``[name, constraint]`` sorted, constraint one of ``unconstrained``,
    ``constrained_by_normal``, ``constrained_by_poisson``), ``systematics``
    (``[name, constraint, [types]]``) and ``measurements`` (``[name, poi, [configured
    parameters]]``, in workspace order).

    Unlike pyhf (which builds the model of the first measurement to list the parameters, and so
    fails where its POI is not a parameter, e.g. on a background-only workspace from HEPData),
    the parameters come from the modifiers directly.

    Raises:
        WorkspaceError: a workspace that breaks pyhf's schema, or a parameter shared by modifiers
            with different constraint terms (pyhf cannot build such a model either).
    """
    spec = _checked(ws)
    pairs = _modifier_pairs(spec)
    types: dict[str, list[str]] = {}
    for name, mtype in pairs:
        types.setdefault(name, []).append(mtype)
    parameters = []
    for name in _sorted(types):
        kinds = {CONSTRAINTS[t] for t in types[name]}
        if len(kinds) > 1:
            raise WorkspaceError("channels", f"parameter {name!r} is used by modifiers of types {types[name]} "
                                             "with different constraint terms; use distinct names")
        parameters.append([name, kinds.pop()])
    nbins = {c["name"]: len(c["samples"][0]["data"]) for c in spec["channels"]}
    return {
        "samples": _samples(spec),
        "channels": [[c, nbins[c]] for c in _sorted(nbins)],
        "modifiers": dict(pairs),
        "parameters": parameters,
        "systematics": [[name, constraint, types[name]] for name, constraint in parameters],
        "measurements": [[m["name"], m["config"]["poi"], [p["name"] for p in m["config"]["parameters"]]]
                         for m in spec["measurements"]],
    }


def _names(values: Any, arg: str) -> list[str]:
    """``values`` (a list or tuple of strings; None for none) as a list, else TypeError."""
    if values is None:
        return []
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(f"{arg}: expected a list of names, got {type(values).__name__}")
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{arg}: expected names (str), got {v!r}")
    return out


def _mapping(values: Any, arg: str) -> dict[str, str]:
    """``values`` (a dict old name -> new name; None for none) as a dict, else TypeError."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{arg}: expected a dict of old name -> new name, got {type(values).__name__}")
    for k, v in values.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{arg}: expected str -> str, got {k!r} -> {v!r}")
    return dict(values)


def _require_known(names: Iterable[str], known: Iterable[str], arg: str, what: str) -> None:
    known = list(known)
    for name in names:
        if name not in known:
            shown = ", ".join(map(repr, known[:20])) + (" ..." if len(known) > 20 else "")
            raise ValueError(f"{arg}: {name!r} is not one of the {what} in this workspace ({shown})")


def _prune_and_rename(spec: dict, *, prune: dict[str, list[str]], rename: dict[str, dict[str, str]],
                      what: str) -> dict:
    """The workspace without the pruned components, with the renamed ones renamed, as pyhf's
    ``Workspace._prune_and_rename`` builds it: channels keep ``name`` and ``samples``, samples
    ``name``, ``data`` and ``modifiers``, measurements ``name`` and ``config`` (``parameters``,
    ``poi``); pruned modifiers also leave the measurements' parameter configurations, renamed
    ones are renamed there and in the POI; pruned / renamed channels take their observations
    along."""
    pairs = _modifier_pairs(spec)
    _require_known(prune["modifier_types"], _sorted({t for _, t in pairs}), "modifier_types", "modifier types")
    modifier_names = _sorted({n for n, _ in pairs})
    _require_known(prune["modifiers"], modifier_names, "modifiers", "modifiers")
    _require_known(rename["modifiers"], modifier_names, "modifiers", "modifiers")
    for key, known, label in (("samples", _samples(spec), "samples"),
                              ("channels", [c["name"] for c in spec["channels"]], "channels"),
                              ("measurements", [m["name"] for m in spec["measurements"]], "measurements")):
        _require_known(prune.get(key, ()), known, key, label)
        _require_known(rename.get(key, ()), known, key, label)
    drop_mods, drop_types = set(prune["modifiers"]), set(prune["modifier_types"])
    new_mod, new_sample = rename["modifiers"], rename["samples"]
    new_channel, new_meas = rename["channels"], rename["measurements"]
    channels = [
        {"name": new_channel.get(c["name"], c["name"]),
         "samples": [
             {"name": new_sample.get(s["name"], s["name"]),
              "data": copy.deepcopy(s["data"]),
              "modifiers": [{**copy.deepcopy(m), "name": new_mod.get(m["name"], m["name"])}
                            for m in s["modifiers"] if m["name"] not in drop_mods and m["type"] not in drop_types]}
             for s in c["samples"] if s["name"] not in prune["samples"]]}
        for c in spec["channels"] if c["name"] not in prune["channels"]
    ]
    measurements = [
        {"name": new_meas.get(m["name"], m["name"]),
         "config": {
             "parameters": [{**copy.deepcopy(p), "name": new_mod.get(p["name"], p["name"])}
                            for p in m["config"]["parameters"] if p["name"] not in drop_mods],
             "poi": new_mod.get(m["config"]["poi"], m["config"]["poi"])}}
        for m in spec["measurements"] if m["name"] not in prune["measurements"]
    ]
    observations = [{**copy.deepcopy(o), "name": new_channel.get(o["name"], o["name"])}
                    for o in spec["observations"] if o["name"] not in prune["channels"]]
    return _result({"channels": channels, "measurements": measurements, "observations": observations,
                    "version": spec["version"]}, what)


def prune(ws: Any, *, channels: Iterable[str] | None = None, samples: Iterable[str] | None = None,
          modifiers: Iterable[str] | None = None, modifier_types: Iterable[str] | None = None,
          measurements: Iterable[str] | None = None) -> dict:
    """The workspace without the named components (``pyhf.Workspace.prune``).

    Args:
        ws: the workspace (as :func:`nextstat.workspace.load` accepts).
        channels: channels to remove, with their observations.
        samples: samples to remove from every channel.
        modifiers: modifiers to remove by name, from every sample and from the measurements'
            parameter configurations (a POI stays named in the measurements).
        modifier_types: modifier types to remove (e.g. ``["shapesys"]``). pyhf 0.7.6 refuses
            a type whose every modifier shares its name with one of another type (it looks
            types up in ``dict(Workspace.modifiers)``, one type per name); this prunes it.
        measurements: measurements to remove.

    Raises:
        ValueError: a name (or type) that the workspace does not have, naming the argument.
        TypeError: an argument that is not a list of names.
        WorkspaceError: an input, or a result (e.g. a channel left without samples), that breaks
            pyhf's schema.
    """
    spec = _checked(ws)
    lists = {"channels": _names(channels, "channels"), "samples": _names(samples, "samples"),
             "modifiers": _names(modifiers, "modifiers"), "modifier_types": _names(modifier_types, "modifier_types"),
             "measurements": _names(measurements, "measurements")}
    empty: dict[str, dict[str, str]] = {k: {} for k in ("channels", "samples", "modifiers", "measurements")}
    return _prune_and_rename(spec, prune=lists, rename=empty, what="pruned")


def rename(ws: Any, *, channels: Mapping[str, str] | None = None, samples: Mapping[str, str] | None = None,
           modifiers: Mapping[str, str] | None = None, measurements: Mapping[str, str] | None = None) -> dict:
    """The workspace with components renamed (``pyhf.Workspace.rename``).

    Each argument maps old names to new ones. Renamed channels rename their observations;
    renamed modifiers rename the measurements' parameter configurations and POI.

    Raises:
        ValueError: an old name the workspace does not have, naming the argument.
        TypeError: an argument that is not a dict of str -> str.
        WorkspaceError: an input or result that breaks pyhf's schema.
    """
    spec = _checked(ws)
    maps = {"channels": _mapping(channels, "channels"), "samples": _mapping(samples, "samples"),
            "modifiers": _mapping(modifiers, "modifiers"), "measurements": _mapping(measurements, "measurements")}
    none: dict[str, list[str]] = {k: [] for k in ("channels", "samples", "modifiers", "modifier_types", "measurements")}
    return _prune_and_rename(spec, prune=none, rename=maps, what="renamed")


def _join_named(join: str, left: list, right: list, merge_key: str | None = None) -> list:
    """Join two lists of named items (pyhf's ``_join_items``): start from the primary side
    (``right`` for ``right outer``, else ``left``), then take each item of the other side:
    with ``merge_key``, an item whose name the primary side has merges its ``merge_key`` list
    into that item (``left outer``); otherwise it is added for ``none`` (always), ``outer``
    (unless an equal item is on the primary side) and ``left/right outer`` (unless its name is)."""
    primary, secondary = (right, left) if join == "right outer" else (left, right)
    out = copy.deepcopy(primary)
    names = [item["name"] for item in out]
    for item in secondary:
        if merge_key is not None and item["name"] in names:
            target = out[names.index(item["name"])]
            target[merge_key] = _join_named("left outer", target[merge_key], item[merge_key])
        elif (join == "none" or join == "outer" and item not in primary
              or join in ("left outer", "right outer") and item["name"] not in names):
            out.append(copy.deepcopy(item))
    return out


def _check_join(join: str, kind: str, left: list, right: list, joined: list) -> None:
    """pyhf's refusals of a join: ``none`` with a name on both sides, ``outer`` with a name left
    twice (items that differ)."""
    if join == "none":
        common = _sorted({i["name"] for i in left} & {i["name"] for i in right})
        if common:
            raise WorkspaceError(kind, f"the workspaces have {kind} with the same names: {common}; "
                                       f"try another join ({', '.join(JOINS)})")
    elif join == "outer":
        twice = [n for n, k in collections.Counter(i["name"] for i in joined).items() if k > 1]
        if twice:
            raise WorkspaceError(kind, f"the workspaces have {kind} of the same names with different contents: "
                                       f"{twice}; try another join ({', '.join(JOINS)})")


def _join_measurements(join: str, left: list, right: list) -> list:
    joined = _join_named(join, left, right)
    if join == "none":
        _check_join(join, "measurements", left, right, joined)
    if join != "outer":
        return joined
    groups: dict[str, list[dict]] = {}
    for meas in joined:
        groups.setdefault(meas["name"], []).append(meas)
    clash = [name for name, ms in groups.items() if len({m["config"]["poi"] for m in ms}) > 1]
    if clash:
        raise WorkspaceError("measurements", f"the workspaces have measurements of the same names with different "
                                             f"POIs: {clash}")
    out = []
    for name, ms in groups.items():
        if len(ms) == 1:
            out.append(ms[0])
            continue
        params = ms[0]["config"]["parameters"]
        for other in ms[1:]:
            params = _join_named("outer", params, other["config"]["parameters"])
        twice = [n for n, k in collections.Counter(p["name"] for p in params).items() if k > 1]
        if twice:
            raise WorkspaceError("measurements", f"measurement {name!r} configures the parameters {twice} differently "
                                                 f"in the two workspaces; try another join ({', '.join(JOINS)})")
        out.append({"name": name, "config": {"poi": ms[0]["config"]["poi"], "parameters": params}})
    return out


def combine(left: Any, right: Any, *, join: str = "none", merge_channels: bool = False) -> dict:
    """One workspace from two (``pyhf.Workspace.combine``): their channels, observations and
    measurements joined by name.

    Args:
        left, right: the workspaces.
        join: ``"none"`` (no name may be on both sides), ``"outer"`` (a name on both sides must
            hold equal items; measurements of the same name and POI have their parameter
            configurations joined), ``"left outer"`` / ``"right outer"`` (the left / right
            item wins where a name is on both sides; logged as unsafe, as pyhf warns).
        merge_channels: with an outer join, a channel on both sides gets the samples of both
            (the winning side's sample where a name is on both).

    Raises:
        ValueError: an unknown ``join``, or ``merge_channels`` with ``join="none"``.
        WorkspaceError: inputs or a result breaking pyhf's schema, and the clashes each join
            refuses (naming ``channels``, ``observations`` or ``measurements``).
    """
    if join not in JOINS:
        raise ValueError(f"join: expected one of {JOINS}, got {join!r}")
    if merge_channels and join == "none":
        raise ValueError("merge_channels: channels can only be merged with the 'outer', 'left outer' or "
                         "'right outer' join")
    a, b = _checked(left), _checked(right)
    if join in ("left outer", "right outer"):
        log.warning("combine: the %r join is unsafe: where both workspaces have a channel, observation or "
                    "measurement of the same name, the %s one is kept without checking the other",
                    join, join.split()[0])
    if a["version"] != b["version"]:
        raise WorkspaceError("version", f"workspaces of different versions cannot be combined: "
                                        f"{a['version']} != {b['version']}")
    channels = _join_named(join, a["channels"], b["channels"], "samples" if merge_channels else None)
    _check_join(join, "channels", a["channels"], b["channels"], channels)
    observations = _join_named(join, a["observations"], b["observations"])
    _check_join(join, "observations", a["observations"], b["observations"], observations)
    measurements = _join_measurements(join, a["measurements"], b["measurements"])
    return _result({"channels": channels, "measurements": measurements, "observations": observations,
                    "version": a["version"]}, "combined")


def sorted(ws: Any) -> dict:  # noqa: A001 -- pyhf's name (Workspace.sorted)
    """The workspace with its lists in name order (``pyhf.Workspace.sorted``): channels,
    samples, modifiers (by name, then type), measurements, their parameter configurations and
    observations. Sorting is stable, so items of equal names keep their order."""
    spec = _checked(ws)
    spec["channels"].sort(key=lambda c: c["name"])
    for channel in spec["channels"]:
        channel["samples"].sort(key=lambda s: s["name"])
        for sample in channel["samples"]:
            sample["modifiers"].sort(key=lambda m: (m["name"], m["type"]))
    spec["measurements"].sort(key=lambda m: m["name"])
    for meas in spec["measurements"]:
        meas["config"]["parameters"].sort(key=lambda p: p["name"])
    spec["observations"].sort(key=lambda o: o["name"])
    return _result(spec, "sorted")


def _hash_algorithm(algorithm: str) -> Any:
    if not isinstance(algorithm, str) or algorithm.startswith("shake_") \
            or algorithm not in hashlib.algorithms_available or not hasattr(hashlib, algorithm):
        names = _sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_"))
        raise ValueError(f"algorithm: expected a hashlib algorithm ({', '.join(names)}), got {algorithm!r}")
    return getattr(hashlib, algorithm)


def digest(ws: Any, algorithm: str = "sha256") -> str:
    """Hex digest of the workspace (``pyhf.utils.digest``, ``pyhf digest``): the hash of its JSON
    text with sorted keys and non-ASCII characters kept, UTF-8 encoded. Patchsets name the
    background-only workspace they were made for by this digest (``metadata.digests``).

    Args:
        ws: the workspace (as :func:`nextstat.workspace.load` accepts); hashed as given (not
            checked against the schema).
        algorithm: a :mod:`hashlib` algorithm name (``sha256``, ``md5``, ``sha1``, ...).

    Raises:
        ValueError: an unknown algorithm, or content that is not JSON (e.g. NumPy arrays).
    """
    hasher = _hash_algorithm(algorithm)
    spec = io.load(ws)
    try:
        text = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ws: cannot be written as JSON to compute its digest ({exc})") from exc
    return hasher(text.encode("utf8")).hexdigest()
