"""Helpers shared by the test suite and the benchmarks: locate and read the published likelihoods.

The ATLAS workspaces are read in place from ``$NEXTSTAT_WORKSPACES`` (default: ``../shared/workspaces``
next to the repository); nothing is copied into the repository.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from functools import lru_cache
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def workspaces_dir() -> Path:
    """Folder holding the published likelihoods (may not exist)."""
    env = os.environ.get("NEXTSTAT_WORKSPACES")
    return Path(env) if env else _REPO.parent / "shared" / "workspaces"


def have_workspaces() -> bool:
    return (workspaces_dir() / "tttt-prod.json.gz").is_file()


@lru_cache(maxsize=None)
def _sbottom_members() -> dict[str, bytes]:
    with tarfile.open(workspaces_dir() / "atlas-sbottom-ins1748602.tar.gz") as tar:
        return {
            m.name.split("/", 1)[-1] if m.name.count("/") > 1 else m.name: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile() and m.name.endswith(".json")
        }


def _sbottom_key(region: str, fname: str) -> str:
    for key in _sbottom_members():
        if key.endswith(f"{region}/{fname}"):
            return key
    raise FileNotFoundError(f"no {region}/{fname} in the sbottom archive")


def sbottom(region: str) -> dict:
    """Background-only workspace of sbottom region 'RegionA' / 'RegionB' / 'RegionC'."""
    return json.loads(_sbottom_members()[_sbottom_key(region, "BkgOnly.json")])


def sbottom_patch_names(region: str) -> list[str]:
    """Sorted signal patch file names of a sbottom region."""
    names = [k.rsplit("/", 1)[-1] for k in _sbottom_members() if f"{region}/patch." in k]
    return sorted(names)


def sbottom_patch(region: str, name: str) -> list:
    """JSON Patch of a sbottom signal point, e.g. ``sbottom_patch('RegionA', 'patch.sbottom_1300_205_60.json')``."""
    return json.loads(_sbottom_members()[_sbottom_key(region, name)])


def tttt() -> dict:
    """The ATLAS four-top workspace (tttt-prod)."""
    with gzip.open(workspaces_dir() / "tttt-prod.json.gz", "rt") as f:
        return json.load(f)


def erjr() -> dict:
    """The ATLAS 3L eRJR background-only workspace."""
    return json.loads((workspaces_dir() / "atlas-3l-erjr" / "BkgOnly.json").read_text())


def erjr_patch_names() -> list[str]:
    return sorted(p.name for p in (workspaces_dir() / "atlas-3l-erjr").glob("patch.*.json"))


def erjr_patch(name: str) -> list:
    return json.loads((workspaces_dir() / "atlas-3l-erjr" / name).read_text())
