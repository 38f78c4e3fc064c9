"""Load, validate and patch HistFactory workspaces in pyhf's JSON format.

A workspace is a plain ``dict`` following pyhf's ``workspace.json`` schema (version 1.0.0):
``channels`` (each with ``samples`` and their ``modifiers``), ``observations`` and
``measurements``. Every check here names the offending field by its JSON path, e.g.
``channels[2].samples[0].modifiers[3].data.hi_data``.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonpatch

from nextstat.errors import WorkspaceError

MODIFIER_TYPES = (
    "histosys",
    "lumi",
    "normfactor",
    "normsys",
    "shapefactor",
    "shapesys",
    "staterror",
)

WorkspaceLike = Mapping[str, Any] | str | os.PathLike


def load(ws: WorkspaceLike) -> dict:
    """Return the workspace as a fresh ``dict`` (the caller's object is never modified).

    Args:
        ws: a ``dict``, a JSON string, or a path to a ``.json`` / ``.json.gz`` file.

    Raises:
        WorkspaceError: unreadable file or malformed JSON.
    """
    if isinstance(ws, Mapping):
        return copy.deepcopy(dict(ws))
    if isinstance(ws, os.PathLike) or (isinstance(ws, str) and not ws.lstrip().startswith("{")):
        path = Path(ws)
        if not path.is_file():
            raise WorkspaceError("", f"no workspace file at {str(path)!r}")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkspaceError("", f"cannot read workspace {str(path)!r}: {exc}") from exc
    if isinstance(ws, str):
        try:
            return json.loads(ws)
        except json.JSONDecodeError as exc:
            raise WorkspaceError("", f"malformed workspace JSON: {exc}") from exc
    raise TypeError(f"ws: expected a dict, JSON string or path, got {type(ws).__name__}")


def load_patch(patch: Any) -> list:
    """Return a JSON Patch (RFC 6902) operation list from a list, a JSON string or a path.

    A pyhf patchset entry (``{"metadata": ..., "patch": [...]}``) is accepted too.
    """
    if isinstance(patch, (str, os.PathLike)):
        text = str(patch)
        if isinstance(patch, os.PathLike) or not text.lstrip().startswith(("[", "{")):
            patch = load(patch)
        else:
            try:
                patch = json.loads(text)
            except json.JSONDecodeError as exc:
                raise WorkspaceError("patch", f"malformed JSON Patch: {exc}") from exc
    if isinstance(patch, Mapping) and "patch" in patch:
        patch = patch["patch"]
    if not isinstance(patch, list):
        raise WorkspaceError("patch", f"expected a list of JSON Patch operations, got {type(patch).__name__}")
    return patch


def apply_patches(ws: dict, patches: Sequence[Any] | None) -> dict:
    """Apply JSON Patches (RFC 6902, via ``jsonpatch``) in order and return the new workspace."""
    for i, p in enumerate(patches or ()):
        ops = load_patch(p)
        try:
            ws = jsonpatch.apply_patch(ws, ops, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise WorkspaceError(f"patches[{i}]", f"cannot apply patch: {exc}") from exc
    return ws


def _require(obj: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, Mapping):
        raise WorkspaceError(path, f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise WorkspaceError(f"{path}.{key}" if path else key, "required field is missing")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise WorkspaceError(f"{path}.{key}" if path else key,
                             f"expected {names}, got {type(value).__name__}")
    return value


def numbers(values: Any, path: str, n: int | None = None, *, nonnegative: bool = False) -> list[float]:
    """Validate a list of finite numbers (optionally of length ``n``, optionally >= 0)."""
    if not isinstance(values, (list, tuple)):
        raise WorkspaceError(path, f"expected a list of numbers, got {type(values).__name__}")
    if n is not None and len(values) != n:
        raise WorkspaceError(path, f"expected {n} bins, got {len(values)}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise WorkspaceError(f"{path}[{i}]", f"expected a finite number, got {v!r}")
        if nonnegative and v < 0:
            raise WorkspaceError(f"{path}[{i}]", f"must be >= 0, got {v!r}")
        out.append(float(v))
    return out


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorkspaceError(path, f"expected a finite number, got {value!r}")
    return float(value)


def validate(ws: dict) -> None:
    """Check the structure of a workspace; raise :class:`WorkspaceError` naming the first bad field.

    Checks: required fields and their types, unique channel and sample names, equal bin counts
    across a channel's samples, modifier types and data shapes, observations for every channel,
    finite numbers, and at least one measurement with a POI.
    """
    channels = _require(ws, "channels", "", list)
    if not channels:
        raise WorkspaceError("channels", "a workspace needs at least one channel")
    nbins: dict[str, int] = {}
    for ic, ch in enumerate(channels):
        cpath = f"channels[{ic}]"
        name = _require(ch, "name", cpath, str)
        if name in nbins:
            raise WorkspaceError(f"{cpath}.name", f"duplicate channel name {name!r}")
        samples = _require(ch, "samples", cpath, list)
        if not samples:
            raise WorkspaceError(f"{cpath}.samples", "a channel needs at least one sample")
        seen: set[str] = set()
        for isa, sample in enumerate(samples):
            spath = f"{cpath}.samples[{isa}]"
            sname = _require(sample, "name", spath, str)
            if sname in seen:
                raise WorkspaceError(f"{spath}.name", f"duplicate sample name {sname!r} in channel {name!r}")
            seen.add(sname)
            data = _require(sample, "data", spath, list)
            n = nbins.setdefault(name, len(data))
            if n == 0:
                raise WorkspaceError(f"{spath}.data", "a sample needs at least one bin")
            numbers(data, f"{spath}.data", n, nonnegative=False)
            modifiers = _require(sample, "modifiers", spath, list)
            for im, mod in enumerate(modifiers):
                _validate_modifier(mod, f"{spath}.modifiers[{im}]", n)
    observations = _require(ws, "observations", "", list)
    seen_obs: set[str] = set()
    for io, obs in enumerate(observations):
        opath = f"observations[{io}]"
        oname = _require(obs, "name", opath, str)
        if oname in seen_obs:
            raise WorkspaceError(f"{opath}.name", f"duplicate observation for channel {oname!r}")
        seen_obs.add(oname)
        if oname in nbins:
            numbers(_require(obs, "data", opath, list), f"{opath}.data", nbins[oname], nonnegative=True)
    for ic, ch in enumerate(channels):
        if ch["name"] not in seen_obs:
            raise WorkspaceError("observations", f"no observation for channel {ch['name']!r} (channels[{ic}])")
    measurements = _require(ws, "measurements", "", list)
    if not measurements:
        raise WorkspaceError("measurements", "a workspace needs at least one measurement")
    for im, meas in enumerate(measurements):
        mpath = f"measurements[{im}]"
        _require(meas, "name", mpath, str)
        config = _require(meas, "config", mpath, dict)
        _require(config, "poi", f"{mpath}.config", str)
        params = config.get("parameters", [])
        if not isinstance(params, list):
            raise WorkspaceError(f"{mpath}.config.parameters", "expected a list")
        for ip, par in enumerate(params):
            _require(par, "name", f"{mpath}.config.parameters[{ip}]", str)


def _validate_modifier(mod: Any, path: str, n: int) -> None:
    _require(mod, "name", path, str)
    mtype = _require(mod, "type", path, str)
    if mtype not in MODIFIER_TYPES:
        raise WorkspaceError(f"{path}.type", f"unknown modifier type {mtype!r}; expected one of {', '.join(MODIFIER_TYPES)}")
    data = mod.get("data")
    dpath = f"{path}.data"
    if mtype in ("normfactor", "lumi", "shapefactor"):
        return  # data is ignored (null in the schema)
    if mtype == "normsys":
        if not isinstance(data, Mapping):
            raise WorkspaceError(dpath, "expected an object with 'hi' and 'lo'")
        for key in ("hi", "lo"):
            if key not in data:
                raise WorkspaceError(f"{dpath}.{key}", "required field is missing")
            v = _number(data[key], f"{dpath}.{key}")
            if v <= 0:
                raise WorkspaceError(f"{dpath}.{key}", f"normsys factors must be > 0, got {v!r}")
    elif mtype == "histosys":
        if not isinstance(data, Mapping):
            raise WorkspaceError(dpath, "expected an object with 'hi_data' and 'lo_data'")
        for key in ("hi_data", "lo_data"):
            if key not in data:
                raise WorkspaceError(f"{dpath}.{key}", "required field is missing")
            numbers(data[key], f"{dpath}.{key}", n)
    else:  # staterror, shapesys: absolute uncertainties per bin
        numbers(data, dpath, n, nonnegative=True)


def select_measurement(ws: dict, measurement: str | None) -> dict:
    """Return the measurement named ``measurement`` (default: the first one)."""
    measurements = ws["measurements"]
    if measurement is None:
        return measurements[0]
    for meas in measurements:
        if meas["name"] == measurement:
            return meas
    names = [m["name"] for m in measurements]
    raise ValueError(f"measurement: no measurement named {measurement!r}; the workspace has {names}")
