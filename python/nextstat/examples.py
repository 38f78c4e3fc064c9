"""Example workspaces shipped with the package, and where to get the published ones.

The bundled workspaces are pyhf JSON documents installed as package data, so they work from
any directory and from a wheel:

>>> from nextstat import examples
>>> ws = examples.simple_workspace()
>>> [c["name"] for c in ws["channels"]]
['SR', 'CR']
>>> examples.path("simple").name
'simple.json'

Published likelihoods are not bundled (they are large and belong to their collaborations);
:data:`PUBLISHED` names them with where to download them, and :func:`published_path` finds one in
a local folder (``$NEXTSTAT_WORKSPACES``).
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from importlib import resources
from pathlib import Path

BUNDLED = ("simple",)
"""Names of the bundled example workspaces (``path(name)``, ``workspace(name)``)."""

PUBLISHED: dict[str, str] = {
    "atlas-sbottom-ins1748602.tar.gz":
        "ATLAS sbottom multi-b search (JHEP 06 (2020) 46): https://www.hepdata.net/record/ins1748602 "
        "(background-only workspaces RegionA/B/C and their signal patchsets)",
    "atlas-3l-erjr":
        "ATLAS three-lepton compressed electroweakinos (eRJR): https://www.hepdata.net/record/ins1771533",
    "tttt-prod.json.gz":
        "ATLAS four-top production full likelihood: https://www.hepdata.net (search 'four top "
        "production full likelihood', ATLAS)",
}
"""Published likelihoods used by the benchmarks and slow tests, with where to get them."""


def path(name: str = "simple") -> Path:
    """File of the bundled example workspace ``name`` (one of :data:`BUNDLED`)."""
    if name not in BUNDLED:
        raise ValueError(f"name: no bundled example {name!r} (bundled: {', '.join(BUNDLED)}; "
                         f"published likelihoods are not bundled, see nextstat.examples.PUBLISHED)")
    return Path(str(resources.files("nextstat") / "data" / f"{name}.json"))


@cache
def _load(name: str) -> dict:
    return json.loads(path(name).read_text(encoding="utf-8"))


def workspace(name: str = "simple") -> dict:
    """A fresh copy of the bundled example workspace ``name`` as a pyhf JSON ``dict``."""
    return copy.deepcopy(_load(name))


def simple_workspace() -> dict:
    """The bundled two-channel example: SR and CR, 2 bins each, POI ``mu``, 18 parameters
    (normfactor, normsys, histosys, staterror, shapesys, lumi)."""
    return workspace("simple")


def published_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Local copy of the published likelihood ``name`` (a key of :data:`PUBLISHED`) in ``folder``
    (default ``$NEXTSTAT_WORKSPACES``); ``FileNotFoundError`` says where to download it."""
    if name not in PUBLISHED:
        raise ValueError(f"name: unknown published likelihood {name!r} (known: {', '.join(PUBLISHED)})")
    base = folder if folder is not None else os.environ.get("NEXTSTAT_WORKSPACES")
    if base is not None and (Path(base) / name).exists():
        return Path(base) / name
    raise FileNotFoundError(f"{name} is not bundled; download it from {PUBLISHED[name]} and set "
                            f"NEXTSTAT_WORKSPACES to its folder")
