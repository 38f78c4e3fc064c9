"""Load, validate and patch HistFactory workspaces in pyhf's JSON format (``nextstat.workspace``).

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
import zlib
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


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of ``value`` for an error message, cut to ``limit`` characters (huge ints too)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_json(text: str, what: str, path: str = "") -> Any:
    """``json.loads`` that refuses malformed or too deeply nested JSON, naming ``what`` (and ``path``)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise WorkspaceError(path, f"{what} is nested too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over Python's digit limit
        raise WorkspaceError(path, f"malformed {what}: {exc}") from exc


def _read_json(file: Path, what: str, path: str = "") -> Any:
    """Parse a ``.json`` file or a gzip-compressed one (by its magic bytes or a ``.gz`` suffix);
    ``what`` (``"workspace"``, ``"patch"``) and ``path`` name it in errors."""
    name = f"{what} file {str(file)!r}"
    try:
        raw = file.read_bytes()
        if raw[:2] == b"\x1f\x8b" or file.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise WorkspaceError(path, f"cannot read {name}: corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise WorkspaceError(path, f"cannot read {name}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise WorkspaceError(path, f"cannot read {name}: not UTF-8 text ({exc})") from exc
    return _parse_json(text, f"JSON in {name}", path)


def _is_json_text(text: str) -> bool:
    return text.lstrip().startswith(("{", "["))


def _file(name: str | os.PathLike, what: str, path: str = "") -> Path:
    """The existing file ``name``, or WorkspaceError (also for names no file can have)."""
    try:
        file = Path(name)
        if file.is_file():
            return file
    except (OSError, ValueError):  # name too long, embedded NUL byte
        pass
    raise WorkspaceError(path, f"no {what} file at {_short(str(name))}")


def load(ws: WorkspaceLike) -> dict:
    """Return the workspace as a fresh ``dict`` (the caller's object is never modified).

    Args:
        ws: a ``dict``, a JSON string, or a path to a ``.json`` / ``.json.gz`` file.

    Raises:
        WorkspaceError: unreadable file, corrupt gzip, text that is not UTF-8, malformed or too
            deeply nested JSON, or JSON that is not an object.
        TypeError: ``ws`` of another type.
    """
    if isinstance(ws, Mapping):
        try:
            return copy.deepcopy(dict(ws))
        except RecursionError:
            raise WorkspaceError("", "workspace nested too deeply to copy") from None
    if isinstance(ws, str) and _is_json_text(ws):
        spec = _parse_json(ws, "workspace JSON")
    elif isinstance(ws, (str, os.PathLike)):
        spec = _read_json(_file(ws, "workspace"), "workspace")
    else:
        raise TypeError(f"ws: expected a dict, JSON string or path, got {type(ws).__name__}")
    if not isinstance(spec, dict):
        where = "" if isinstance(ws, str) and _is_json_text(ws) else f" in {str(ws)!r}"
        raise WorkspaceError("", f"a workspace is a JSON object, got a JSON {type(spec).__name__}{where}")
    return spec


def load_patch(patch: Any, path: str = "patch") -> list:
    """Return a JSON Patch (RFC 6902) operation list from a list, a JSON string or a path.

    Also accepted: a pyhf patchset entry (``{"metadata": ..., "patch": [...]}``), a single
    operation (``{"op": ..., "path": ...}``) and a ``jsonpatch.JsonPatch`` (e.g. a
    ``pyhf.patchset.Patch``). ``path`` names the patch in error messages.
    """
    if isinstance(patch, str) and _is_json_text(patch):
        patch = _parse_json(patch, "JSON Patch", path)
    elif isinstance(patch, (str, os.PathLike)):
        patch = _read_json(_file(patch, "patch", path), "patch", path)
    if isinstance(patch, jsonpatch.JsonPatch):
        patch = list(patch.patch)
    if isinstance(patch, Mapping) and "patch" in patch:
        patch = patch["patch"]
    elif isinstance(patch, Mapping) and "op" in patch:
        patch = [dict(patch)]
    elif isinstance(patch, Mapping):
        hint = ("; a pyhf patchset holds several: choose one with patch_name= (from_pyhf; CLI: --patch-name) or pass its entries"
                if "patches" in patch else "")
        raise WorkspaceError(path, "expected a JSON Patch (list of operations), one operation or a pyhf patch "
                                   f"entry {{'metadata': ..., 'patch': [...]}}, got an object with keys {sorted(map(str, patch))[:5]}{hint}")
    if not isinstance(patch, list):
        raise WorkspaceError(path, f"expected a list of JSON Patch operations, got {type(patch).__name__}")
    return patch


def _patch_list(patches: Any) -> list:
    """``patches`` as a list: one patch (a path, JSON text, operation or patch entry) is wrapped."""
    if patches is None:
        return []
    if isinstance(patches, (str, os.PathLike, Mapping, jsonpatch.JsonPatch)):
        return [patches]
    if isinstance(patches, (list, tuple)):
        return list(patches)
    raise TypeError(f"patches: expected a list of JSON Patches (or one patch, path or JSON text), "
                    f"got {type(patches).__name__}")


def apply_patches(ws: dict, patches: Sequence[Any] | None) -> dict:
    """Apply JSON Patches (RFC 6902, via ``jsonpatch``) in order and return the new workspace.

    ``patches``: a list of patches (each as :func:`load_patch` accepts), or one patch on its own
    (a path, JSON text, operation, patch entry or ``jsonpatch.JsonPatch``). A list of operations
    is applied one operation after the other, which is the same as applying it as one patch.
    """
    for i, p in enumerate(_patch_list(patches)):
        ops = load_patch(p, f"patches[{i}]")
        try:
            ws = jsonpatch.apply_patch(ws, ops, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise WorkspaceError(f"patches[{i}]", f"cannot apply patch: {exc}") from exc
        except RecursionError:
            raise WorkspaceError(f"patches[{i}]", "cannot apply patch: nested too deeply") from None
        if not isinstance(ws, dict):
            raise WorkspaceError(f"patches[{i}]", f"the patched workspace is a {type(ws).__name__}, not an object")
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


def _number(value: Any, path: str) -> float:
    """``value`` as a finite float64: JSON's ints of any size and NaN / Infinity tokens included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkspaceError(path, f"expected a finite number, got {_short(value)}")
    try:
        out = float(value)
    except OverflowError:  # an int beyond the float64 range
        out = math.inf
    if not math.isfinite(out):
        raise WorkspaceError(path, f"expected a finite number (float64), got {_short(value)}")
    return out


def numbers(values: Any, path: str, n: int | None = None, *, nonnegative: bool = False) -> list[float]:
    """Validate a list of finite numbers (optionally of length ``n``, optionally >= 0)."""
    if not isinstance(values, (list, tuple)):
        raise WorkspaceError(path, f"expected a list of numbers, got {type(values).__name__}")
    if n is not None and len(values) != n:
        raise WorkspaceError(path, f"expected {n} bins, got {len(values)}")
    out = [_number(v, f"{path}[{i}]") for i, v in enumerate(values)]
    if nonnegative:
        for i, v in enumerate(out):
            if v < 0:
                raise WorkspaceError(f"{path}[{i}]", f"must be >= 0, got {v!r}")
    return out


def validate(ws: dict) -> None:
    """Check the structure of a workspace; raise :class:`WorkspaceError` naming the first bad field.

    Checks: required fields and their types, unique channel and sample names, equal bin counts
    across a channel's samples, modifier types and data shapes, observations for every channel,
    finite numbers, and at least one measurement (its ``poi``, where given, a string: a
    measurement without one is for a model without a POI, ``from_pyhf(ws, poi_name=None)``).
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
            nominal = numbers(data, f"{spath}.data", n, nonnegative=False)
            modifiers = _require(sample, "modifiers", spath, list)
            for im, mod in enumerate(modifiers):
                _validate_modifier(mod, f"{spath}.modifiers[{im}]", nominal)
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
        if "poi" in config:
            _require(config, "poi", f"{mpath}.config", str)
        params = config.get("parameters", [])
        if not isinstance(params, list):
            raise WorkspaceError(f"{mpath}.config.parameters", "expected a list")
        for ip, par in enumerate(params):
            _require(par, "name", f"{mpath}.config.parameters[{ip}]", str)


def _validate_modifier(mod: Any, path: str, nominal: list[float]) -> None:
    n = len(nominal)
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
            for b, (v, nom) in enumerate(zip(numbers(data[key], f"{dpath}.{key}", n), nominal)):
                if not math.isfinite(v - nom):  # the engine stores the deltas to the nominal
                    raise WorkspaceError(f"{dpath}.{key}[{b}]", f"the difference {v!r} - {nom!r} to the "
                                                                "sample's nominal overflows float64")
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
