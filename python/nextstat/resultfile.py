"""Result files: arrays and metadata of a result container in one ``.npz`` archive.

Format (version 1)
    A NumPy ``.npz`` archive (a zip of ``.npy`` arrays, ``numpy.savez``; readable with
    ``numpy.load(path, allow_pickle=False)`` from any language with an ``.npy`` reader):

    * ``__metadata__``: a 0-d unicode array holding a JSON object with ``"format":
      "nextstat-result"``, ``"version": 1``, ``"kind"`` (the container's class name, e.g.
      ``"ToyFitResults"``), ``"nextstat"`` (the writing version) and the container's scalar
      fields (numbers, strings, booleans, lists of strings);
    * one entry per array field, named as the field (float64, int64 or bool); a field that is
      None is absent.

    Files are written atomically (:func:`nextstat.atomic.atomic_output`): a reader sees the old
    file or the complete new one, never a partial write. Nothing is unpickled on reading.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "nextstat-result"
VERSION = 1
_META = "__metadata__"


def save_arrays(path: str | os.PathLike, kind: str, arrays: Mapping[str, np.ndarray | None],
                meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` (None entries left out) and ``meta`` (JSON-serialisable) to ``path``.

    The file is written as given (no ``.npz`` suffix is appended) and atomically.
    """
    from nextstat._version import __version__
    from nextstat.atomic import atomic_output

    header = {"format": FORMAT, "version": VERSION, "kind": kind, "nextstat": __version__, **meta}
    payload = {name: np.asarray(a) for name, a in arrays.items() if a is not None}
    if _META in payload:  # pragma: no cover - programming error
        raise ValueError(f"arrays: {_META!r} is reserved")
    text = json.dumps(header, allow_nan=False)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{_META: np.array(text)}, **payload)
        fh.flush()
        os.fsync(fh.fileno())


def load_arrays(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, metadata)`` of a file written by :func:`save_arrays` for a ``kind`` container.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a NextStat result file, another kind of result, or a newer version.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no file {os.fspath(path)!r}")
    if not zipfile.is_zipfile(path):  # np.load would read other files as .npy or pickles
        raise ValueError(f"path: {os.fspath(path)!r} is not a NextStat result file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # a damaged archive, object arrays
        raise ValueError(f"path: {os.fspath(path)!r} is not a NextStat result file (.npz): {exc}") from exc
    if _META not in arrays:
        raise ValueError(f"path: {os.fspath(path)!r} is an .npz file but not a NextStat result file "
                         f"(no {_META!r} entry)")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except ValueError as exc:
        raise ValueError(f"path: the metadata of {os.fspath(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"path: {os.fspath(path)!r} is not a NextStat result file (format {meta.get('format')!r})"
                         if isinstance(meta, dict) else f"path: malformed metadata in {os.fspath(path)!r}")
    if meta.get("kind") != kind:
        raise ValueError(f"path: {os.fspath(path)!r} holds a {meta.get('kind')!r}, not a {kind!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ValueError(f"path: {os.fspath(path)!r} has format version {meta.get('version')!r}; this NextStat "
                         f"reads versions <= {VERSION} (upgrade nextstat)")
    return arrays, meta


def require(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], path: Any,
            array_names: tuple[str, ...], meta_names: tuple[str, ...]) -> None:
    """ValueError naming the first array or metadata field missing from a loaded file."""
    for name in array_names:
        if name not in arrays:
            raise ValueError(f"path: {os.fspath(path)!r} lacks the array {name!r}")
    for name in meta_names:
        if name not in meta:
            raise ValueError(f"path: {os.fspath(path)!r} lacks the metadata field {name!r}")
