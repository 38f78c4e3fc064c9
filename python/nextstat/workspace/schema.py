"""The structure pyhf 0.7.6's JSON schemas (version 1.0.0) require of workspaces and patchsets.

``pyhf.Workspace`` and ``pyhf.PatchSet`` validate their input against ``defs.json`` of
``pyhf/schemas/1.0.0``; the workspace tools (:mod:`nextstat.workspace.tools`,
:mod:`nextstat.workspace.patchset`) check the same rules here, so they accept and refuse the same
documents, and report the first violation as :class:`~nextstat.errors.WorkspaceError` naming its
JSON path. These are structural rules only (required fields, types, no unknown fields, at least
one item where the schema says so); :func:`nextstat.workspace.validate` checks what a model needs.

>>> from nextstat import examples
>>> ws = examples.simple_workspace()
>>> check_workspace(ws)
>>> check_workspace({**ws, "channels": []})
Traceback (most recent call last):
...
nextstat.errors.WorkspaceError: channels: expected at least 1 item, got 0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nextstat.errors import WorkspaceError

SCHEMA_VERSION = "1.0.0"
"""The only version of pyhf's workspace and patchset schemas (pyhf 0.7.6)."""

_NAME = re.compile(r"^[a-zA-Z0-9_]+$")
_DIGEST_PATTERNS = {"md5": re.compile(r"^[a-f0-9]{32}$"), "sha256": re.compile(r"^[a-fA-F0-9]{64}$")}
_HEPDATA = re.compile(r"^ins[0-9]{7}$")
_JSONPATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")
_JSON_POINTER = re.compile(r"^(?:/(?:[^~/]|~[01])*)*$")  # RFC 6901: "" or "/"-separated, "~" only as ~0 / ~1


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def _object(value: Any, path: str, required: tuple[str, ...], allowed: tuple[str, ...] | None) -> Mapping:
    """``value`` as a JSON object with the ``required`` keys and (unless ``allowed`` is None) no
    keys outside ``allowed``."""
    if not isinstance(value, Mapping):
        raise WorkspaceError(path, f"expected an object, got {_type_name(value)}")
    for key in required:
        if key not in value:
            raise WorkspaceError(_join(path, key), "required field is missing")
    if allowed is not None:
        extra = [k for k in value if k not in allowed]
        if extra:
            raise WorkspaceError(path, f"unknown field {extra[0]!r} (allowed: {', '.join(allowed)})")
    return value


def _array(value: Any, path: str, min_items: int = 0) -> list:
    if not isinstance(value, list):
        raise WorkspaceError(path, f"expected an array, got {_type_name(value)}")
    if len(value) < min_items:
        raise WorkspaceError(path, f"expected at least {min_items} item{'s' * (min_items != 1)}, got {len(value)}")
    return value


def _string(value: Any, path: str, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str):
        raise WorkspaceError(path, f"expected a string, got {_type_name(value)}")
    if pattern is not None and not pattern.match(value):
        raise WorkspaceError(path, f"{value!r} does not match {pattern.pattern!r}")
    return value


def _numbers(value: Any, path: str, min_items: int = 1) -> None:
    for i, x in enumerate(_array(value, path, min_items)):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise WorkspaceError(_join(path, i), f"expected a number, got {_type_name(x)}")


def _const(value: Any, path: str, expected: Any) -> None:
    if value != expected or type(value) is not type(expected):
        raise WorkspaceError(path, f"expected {expected!r}, got {value!r}")


def _modifier(mod: Any, path: str) -> None:
    _object(mod, path, ("name", "type", "data"), ("name", "type", "data"))
    mtype = mod["type"]
    if mtype not in ("histosys", "lumi", "normfactor", "normsys", "shapefactor", "shapesys", "staterror"):
        raise WorkspaceError(_join(path, "type"), f"unknown modifier type {mtype!r}")
    _string(mod["name"], _join(path, "name"))
    if mtype == "lumi":
        _const(mod["name"], _join(path, "name"), "lumi")
    data, dpath = mod["data"], _join(path, "data")
    if mtype in ("lumi", "normfactor", "shapefactor"):
        if data is not None:
            raise WorkspaceError(dpath, f"expected null for a {mtype} modifier, got {_type_name(data)}")
    elif mtype == "histosys":
        _object(data, dpath, ("lo_data", "hi_data"), ("lo_data", "hi_data"))
        _numbers(data["lo_data"], _join(dpath, "lo_data"))
        _numbers(data["hi_data"], _join(dpath, "hi_data"))
    elif mtype == "normsys":
        _object(data, dpath, ("lo", "hi"), ("lo", "hi"))
        for key in ("lo", "hi"):
            if isinstance(data[key], bool) or not isinstance(data[key], (int, float)):
                raise WorkspaceError(_join(dpath, key), f"expected a number, got {_type_name(data[key])}")
    else:  # shapesys, staterror
        _numbers(data, dpath)


def _parameter(par: Any, path: str) -> None:
    allowed = ("name", "inits", "bounds", "auxdata", "factors", "sigmas", "fixed")
    _object(par, path, ("name",), allowed)
    _string(par["name"], _join(path, "name"))
    for key in ("inits", "auxdata", "factors", "sigmas"):
        if key in par:
            _numbers(par[key], _join(path, key))
    if "bounds" in par:
        for i, pair in enumerate(_array(par["bounds"], _join(path, "bounds"), 1)):
            _numbers(pair, _join(_join(path, "bounds"), i), 0)
    if "fixed" in par and not isinstance(par["fixed"], bool):
        raise WorkspaceError(_join(path, "fixed"), f"expected a boolean, got {_type_name(par['fixed'])}")


def check_measurement(meas: Any, path: str) -> None:
    """pyhf's ``measurement.json``: ``{"name": str, "config": {"poi": str, "parameters": [...]}}``."""
    _object(meas, path, ("name", "config"), ("name", "config"))
    _string(meas["name"], _join(path, "name"))
    cpath = _join(path, "config")
    config = _object(meas["config"], cpath, ("poi", "parameters"), ("poi", "parameters"))
    _string(config["poi"], _join(cpath, "poi"))
    for i, par in enumerate(_array(config["parameters"], _join(cpath, "parameters"))):
        _parameter(par, _join(_join(cpath, "parameters"), i))


def check_workspace(ws: Any) -> None:
    """Raise :class:`WorkspaceError` where ``ws`` breaks pyhf's ``workspace.json`` (1.0.0).

    Required: ``channels`` (>= 1, each with a name and >= 1 sample of >= 1 bin and a modifier
    list), ``measurements`` (>= 1), ``observations`` (>= 1) and ``version`` = ``"1.0.0"``; no
    other fields at any level. Bin counts and names are not cross-checked (pyhf's schema does
    not either).
    """
    _object(ws, "", ("channels", "measurements", "observations", "version"),
            ("channels", "measurements", "observations", "version"))
    for ic, ch in enumerate(_array(ws["channels"], "channels", 1)):
        cpath = f"channels[{ic}]"
        _object(ch, cpath, ("name", "samples"), ("name", "samples"))
        _string(ch["name"], f"{cpath}.name")
        for isa, sample in enumerate(_array(ch["samples"], f"{cpath}.samples", 1)):
            spath = f"{cpath}.samples[{isa}]"
            _object(sample, spath, ("name", "data", "modifiers"), ("name", "data", "modifiers"))
            _string(sample["name"], f"{spath}.name")
            _numbers(sample["data"], f"{spath}.data")
            for im, mod in enumerate(_array(sample["modifiers"], f"{spath}.modifiers")):
                _modifier(mod, f"{spath}.modifiers[{im}]")
    for im, meas in enumerate(_array(ws["measurements"], "measurements", 1)):
        check_measurement(meas, f"measurements[{im}]")
    for io, obs in enumerate(_array(ws["observations"], "observations", 1)):
        opath = f"observations[{io}]"
        _object(obs, opath, ("name", "data"), ("name", "data"))
        _string(obs["name"], f"{opath}.name")
        _numbers(obs["data"], f"{opath}.data")
    _const(ws["version"], "version", SCHEMA_VERSION)


def check_jsonpatch(patch: Any, path: str) -> None:
    """A JSON Patch (RFC 6902) as pyhf's ``jsonpatch.json``: operations with ``op`` and ``path``
    (a JSON Pointer, as ``jsonpatch`` parses it), ``value`` for add / replace / test and ``from``
    for move / copy."""
    for i, op in enumerate(_array(patch, path)):
        opath = _join(path, i)
        _object(op, opath, ("op", "path"), None)
        if op["op"] not in _JSONPATCH_OPS:
            raise WorkspaceError(_join(opath, "op"), f"expected one of {', '.join(_JSONPATCH_OPS)}, got {op['op']!r}")
        _string(op["path"], _join(opath, "path"))
        if not _JSON_POINTER.match(op["path"]):  # pyhf.PatchSet builds jsonpatch operations, which refuse it
            raise WorkspaceError(_join(opath, "path"), f"expected a JSON Pointer ('' or starting with '/', '~' only "
                                                        f"as ~0 or ~1), got {op['path']!r}")
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise WorkspaceError(_join(opath, "value"), f"required field is missing (op {op['op']!r})")
        if op["op"] in ("move", "copy"):
            if "from" not in op:
                raise WorkspaceError(_join(opath, "from"), f"required field is missing (op {op['op']!r})")
            _string(op["from"], _join(opath, "from"))


def check_patchset(ps: Any) -> None:
    """Raise :class:`WorkspaceError` where ``ps`` breaks pyhf's ``patchset.json`` (1.0.0), or
    where pyhf's ``PatchSet`` refuses it: two patches with the same name or the same values, or
    a patch with as many values as the patchset has labels.

    A patchset (as published on HEPData) is ``{"metadata": {"description", "digests" (md5 and/or
    sha256 of the background-only workspace), "labels", "references"}, "patches": [{"metadata":
    {"name", "values"}, "patch": [JSON Patch]}], "version": "1.0.0"}``.
    """
    _object(ps, "", ("patches", "metadata", "version"), ("patches", "metadata", "version"))
    meta = _object(ps["metadata"], "metadata", ("references", "digests", "labels", "description"), None)
    refs = _object(meta["references"], "metadata.references", (), ("hepdata",))
    if not refs:
        raise WorkspaceError("metadata.references", "expected at least 1 reference")
    if "hepdata" in refs:
        _string(refs["hepdata"], "metadata.references.hepdata", _HEPDATA)
    digests = _object(meta["digests"], "metadata.digests", (), tuple(_DIGEST_PATTERNS))
    if not digests:
        raise WorkspaceError("metadata.digests", "expected at least 1 digest (md5 or sha256)")
    for alg, value in digests.items():
        _string(value, f"metadata.digests.{alg}", _DIGEST_PATTERNS[alg])
    labels = _array(meta["labels"], "metadata.labels", 1)
    for i, label in enumerate(labels):
        _string(label, f"metadata.labels[{i}]", _NAME)
    _string(meta["description"], "metadata.description")
    names: dict[str, int] = {}
    values: dict[tuple, int] = {}
    for ip, patch in enumerate(_array(ps["patches"], "patches", 1)):
        ppath = f"patches[{ip}]"
        _object(patch, ppath, ("metadata", "patch"), ("metadata", "patch"))
        pmeta = _object(patch["metadata"], f"{ppath}.metadata", ("name", "values"), None)
        name = _string(pmeta["name"], f"{ppath}.metadata.name", _NAME)
        vals = _array(pmeta["values"], f"{ppath}.metadata.values")
        for iv, v in enumerate(vals):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise WorkspaceError(f"{ppath}.metadata.values[{iv}]", f"expected a number or a string, got {_type_name(v)}")
        check_jsonpatch(patch["patch"], f"{ppath}.patch")
        if name in names:
            raise WorkspaceError(f"{ppath}.metadata.name", f"patch name {name!r} also used by patches[{names[name]}]")
        if tuple(vals) in values:
            raise WorkspaceError(f"{ppath}.metadata.values", f"values {vals} also used by patches[{values[tuple(vals)]}]")
        if len(vals) != len(labels):
            raise WorkspaceError(f"{ppath}.metadata.values", f"expected {len(labels)} values (one per label "
                                                             f"{labels}), got {len(vals)}")
        names[name] = ip
        values[tuple(vals)] = ip
    _const(ps["version"], "version", SCHEMA_VERSION)
