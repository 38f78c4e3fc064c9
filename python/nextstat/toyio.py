"""Merging and saving toy results: runs split over jobs make one run.

A toy is identified by its seed and its position (index) in that seed's sequence
(:mod:`nextstat.infer.toys`: toy ``i`` depends only on the model, the generating parameters,
the seed and ``i``). Jobs that share a seed and cover disjoint index ranges (``first_toy``)
therefore hold pieces of one run; :func:`concatenate` checks that they are pieces of the same
run, puts the toys in index order and returns a container equal, array by array, to the one a
single run over the union of the ranges returns. Toys of different seeds are not merged (no
single run holds them; give every job the same seed and its own ``first_toy``).

:func:`save` / :func:`load` store a container in the format of :mod:`nextstat.resultfile`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from nextstat import resultfile

# per container: the per-toy groups (index field, the fields indexed by it), the fields that
# must be equal, those that must agree to rounding (fits to the same data on other machines)
_GROUPS = {
    "ToyFitResults": [("toy_index", ("bestfit", "nll", "converged", "toy_data", "n_iter"))],
    "ToyDistributions": [("index_sb", ("q_sb", "ok_sb")), ("index_b", ("q_b", "ok_b"))],
}
_EQUAL = {
    "ToyFitResults": ("parameter_names",),
    "ToyDistributions": ("parameter_names", "mu_test", "test_stat", "seed"),
}
_CLOSE = {"ToyFitResults": (), "ToyDistributions": ("q_obs", "mu_hat", "pars_sb", "pars_b")}
_RTOL, _ATOL = 1e-9, 1e-12


def _is_array_field(f: dataclasses.Field) -> bool:
    return "ndarray" in str(f.type)


def concatenate(cls: type, parts: Any) -> Any:
    """Merge ``parts`` (instances of ``cls``) into one; see the module docstring."""
    kind = cls.__name__
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or not parts:
        raise TypeError(f"parts: expected a non-empty sequence of {kind}, got {type(parts).__name__}")
    for k, p in enumerate(parts):
        if not isinstance(p, cls):
            raise TypeError(f"parts[{k}]: expected a {kind}, got {type(p).__name__}")
    first = parts[0]
    for name in _EQUAL[kind]:
        for k, p in enumerate(parts[1:], 1):
            if getattr(p, name) != getattr(first, name):
                raise ValueError(f"parts[{k}].{name}: {getattr(p, name)!r} differs from parts[0]'s "
                                 f"{getattr(first, name)!r}; only pieces of one run merge")
    for name in _CLOSE[kind]:
        for k, p in enumerate(parts[1:], 1):
            a, b = np.asarray(getattr(first, name), dtype=float), np.asarray(getattr(p, name), dtype=float)
            if a.shape != b.shape or not np.allclose(a, b, rtol=_RTOL, atol=_ATOL, equal_nan=True):
                raise ValueError(f"parts[{k}].{name}: differs from parts[0]'s; the parts come from fits to "
                                 "different observed data or models and do not merge")
    values: dict[str, Any] = {f.name: getattr(first, f.name) for f in dataclasses.fields(cls)}
    if kind == "ToyFitResults":
        _check_generated(parts)
    for index_name, names in _GROUPS[kind]:
        values.update(_merge_group(parts, index_name, names))
    values["time_s"] = float(sum(p.time_s for p in parts))
    values["device"] = "+".join(dict.fromkeys(p.device for p in parts))
    if kind == "ToyDistributions":
        values["observed_converged"] = all(p.observed_converged for p in parts)
    return cls(**values)


def _check_generated(parts: Sequence[Any]) -> None:
    generated = [p.toy_index is not None for p in parts]
    if any(generated) and not all(generated):
        raise ValueError("parts: fits of generated toys mixed with fits of given datasets (toy_index None)")
    if not generated[0]:
        return
    first = parts[0]
    for k, p in enumerate(parts[1:], 1):
        if p.seed != first.seed:
            raise ValueError(f"parts[{k}].seed: {p.seed} differs from parts[0]'s {first.seed}: toys of "
                             "different seeds are not pieces of one run (give every job the same seed and its "
                             "own first_toy)")
        if p.pars is None or first.pars is None or not np.array_equal(p.pars, first.pars):
            raise ValueError(f"parts[{k}].pars: the toys were generated at other parameters than parts[0]'s")


def _merge_group(parts: Sequence[Any], index_name: str, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        present = [getattr(p, name) is not None for p in parts]
        if not any(present):
            out[name] = None
            continue
        if not all(present):
            raise ValueError(f"parts: {name} is kept by some parts only (run every part with the same options)")
        out[name] = np.concatenate([np.asarray(getattr(p, name)) for p in parts], axis=0)
    indices = [getattr(p, index_name) for p in parts]
    if indices[0] is None:  # given datasets: in the order given
        out[index_name] = None
        return out
    index = np.concatenate([np.asarray(i, dtype=np.int64) for i in indices])
    order = np.argsort(index, kind="stable")
    index = index[order]
    dup = np.flatnonzero(index[1:] == index[:-1])
    if dup.size:
        raise ValueError(f"parts: toy {int(index[dup[0]])} ({index_name}) is in more than one part; the parts "
                         "overlap (give each job its own first_toy range)")
    out[index_name] = index
    for name in names:
        if out[name] is not None:
            out[name] = np.ascontiguousarray(out[name][order])
    return out


def save(obj: Any, path: Any) -> None:
    """Write a toy container to ``path`` (format of :mod:`nextstat.resultfile`)."""
    arrays, meta = {}, {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if _is_array_field(f):
            arrays[f.name] = value
        else:
            meta[f.name] = list(value) if isinstance(value, tuple) else value
    resultfile.save_arrays(path, type(obj).__name__, arrays, meta)


def load(cls: type, path: Any) -> Any:
    """Read a ``cls`` container written by :func:`save`."""
    arrays, meta = resultfile.load_arrays(path, cls.__name__)
    fields = dataclasses.fields(cls)
    required = tuple(f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    resultfile.require(arrays, meta, path, tuple(f.name for f in fields if _is_array_field(f) and f.name in required),
                       tuple(f.name for f in fields if not _is_array_field(f) and f.name in required))
    for index_name, names in _GROUPS[cls.__name__]:
        n = {name: len(arrays[name]) for name in (index_name, *names) if name in arrays and arrays[name].ndim}
        if len(set(n.values())) > 1:
            raise ValueError(f"path: the per-toy arrays of {path!s} have different lengths {n}")
    values: dict[str, Any] = {}
    for f in fields:
        if _is_array_field(f):
            if f.name in arrays:
                values[f.name] = arrays[f.name]
        elif f.name in meta:
            v = meta[f.name]
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)
