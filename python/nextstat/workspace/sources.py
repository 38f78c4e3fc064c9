"""What :func:`nextstat.from_pyhf` accepts besides workspace dicts, JSON text and files: pyhf
objects (``pyhf.Model``; ``pyhf.Workspace`` is a dict) and pyhf patchsets with a patch name.

pyhf is never imported: its objects are recognised by their attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nextstat.errors import WorkspaceError
from nextstat.workspace.io import apply_patches, load
from nextstat.workspace.patchset import apply_patchset, is_patchset

__all__ = ["apply_patch_args", "is_pyhf_model", "pyhf_model_workspace"]


def is_pyhf_model(obj: Any) -> bool:
    """A ``pyhf.Model`` (duck-typed: a model ``spec`` and a ``config`` with a ``par_map``)."""
    return (not isinstance(obj, Mapping) and hasattr(obj, "spec") and hasattr(obj, "config")
            and hasattr(obj.config, "par_map") and hasattr(obj.config, "channel_slices"))


def pyhf_model_workspace(model: Any, data: Any) -> tuple[dict, str | None, Any]:
    """(workspace, POI name, modifier_settings) of a ``pyhf.Model`` and its observed ``data``.

    The workspace holds the model's channels, one measurement ``"measurement"`` (pyhf's
    ``Workspace.build`` name) with the model's parameter configurations, and the observations
    ``data`` (main bins in ``model.config.channels`` order, optionally followed by auxiliary data
    equal to ``model.config.auxdata``)."""
    config = model.config
    if data is None:
        raise ValueError("data: a pyhf.Model carries no observed data; pass data= (pyhf's workspace.data(model), "
                         "or the main bins only), or give the pyhf.Workspace")
    n_main, aux = int(config.nmaindata), np.asarray(config.auxdata, dtype=np.float64)
    try:
        d = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data: expected numbers, got {type(data).__name__} ({exc})") from None
    if d.shape not in ((n_main,), (n_main + aux.size,)):
        raise ValueError(f"data: expected shape ({n_main},) (main bins) or ({n_main + aux.size},) (main + auxiliary), "
                         f"got {d.shape}")
    if d.size > n_main and not np.array_equal(d[n_main:], aux):
        raise ValueError("data: auxiliary data other than the model's are not stored in a model; build it with the "
                         "main bins and pass the full data to the inference (nextstat.fit(model, data=...))")
    config_pars = model.spec.get("parameters", [])
    spec = {
        "channels": model.spec["channels"],
        "observations": [{"name": c, "data": d[config.channel_slices[c]].tolist()} for c in config.channels],
        "measurements": [{"name": "measurement", "config": {"parameters": config_pars}}],
        "version": "1.0.0",
    }
    return load(spec), config.poi_name, getattr(config, "modifier_settings", None)


def apply_patch_args(spec: dict, patches: Any, patch_name: str | None) -> dict:
    """``spec`` with ``patches`` applied, or, with ``patch_name``, the patch of that name (or
    values) of the patchset ``patches`` (digests verified, as ``pyhf.PatchSet.apply``)."""
    if patch_name is not None:
        if patches is None:
            raise ValueError("patch_name: pass the patchset as patches= (a pyhf.PatchSet, a patchset dict, "
                             "its JSON text or its file)")
        return apply_patchset(spec, patches, patch_name)
    if is_patchset(patches):
        entries = patches["patches"] if isinstance(patches, Mapping) else patches.patches
        first = entries[0]["metadata"]["name"] if isinstance(patches, Mapping) else entries[0].name
        raise WorkspaceError("patches", f"a pyhf patchset holds {len(entries)} patches: choose one with "
                                        f"patch_name= (e.g. {first!r})")
    return apply_patches(spec, patches)
