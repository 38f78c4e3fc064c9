"""Shared helpers for the NextStat speed benchmarks.

This module is imported both by the harness (``bench_fit.py``, run in the project venv) and by
``peer_runner.py`` (run in the speed peer's venv, which has a *different* package called
``nextstat`` installed). It therefore depends on the standard library only at import time;
``jsonpatch`` and ``numpy`` are imported inside the functions that need them, and nothing here
imports our ``nextstat`` package.

Contents:

* workspace locations and loaders for the published likelihoods (read straight from the
  tarball / gzip file, never extracted into the repository),
* :func:`timeit`, the one timing loop used by every tool,
* :func:`run_peer`, which runs ``peer_runner.py`` in the peer venv,
* :func:`markdown_table` and :func:`machine_info` for the report.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Repository root (the folder holding ``benchmarks/``)."""

BENCH_DIR = REPO_ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
PEER_RUNNER = BENCH_DIR / "peer_runner.py"
PEER_VERSION = "0.10.1"

JsonPatch = list[dict[str, Any]]
"""One RFC 6902 JSON Patch: a list of operations."""


# --------------------------------------------------------------------------------------------
# Workspaces
# --------------------------------------------------------------------------------------------


def workspaces_dir() -> Path:
    """Folder holding the published likelihoods.

    ``$NEXTSTAT_WORKSPACES`` if set, else ``<repo>/../shared/workspaces``.
    """
    env = os.environ.get("NEXTSTAT_WORKSPACES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "workspaces"


def read_tar_json(tar_path: Path, member: str) -> Any:
    """Parse the JSON file ``member`` of the (gzipped) tarball ``tar_path`` without extracting."""
    with tarfile.open(tar_path, "r:*") as tar:
        handle = tar.extractfile(member)
        if handle is None:
            raise FileNotFoundError(f"{member!r} is not a regular file in {tar_path}")
        with handle:
            return json.load(handle)


def read_json(path: Path) -> Any:
    """Parse a JSON file, transparently gunzipping ``*.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def apply_patches(spec: dict[str, Any], patches: Sequence[JsonPatch]) -> dict[str, Any]:
    """Return a new workspace with the JSON Patches applied in order (``spec`` is not modified)."""
    import jsonpatch  # lazy: only needed when there are patches

    patched = spec
    for patch in patches:
        patched = jsonpatch.apply_patch(patched, patch, in_place=False)
    return patched


@dataclass(frozen=True)
class BenchWorkspace:
    """A benchmark model: a background-only workspace plus the signal patches to apply.

    Attributes:
        key: short name used on the command line (``--models``).
        description: one line for the report.
        spec: the background-only pyhf workspace (JSON-like dict).
        patches: JSON Patches that turn ``spec`` into the signal workspace.
    """

    key: str
    description: str
    spec: dict[str, Any]
    patches: tuple[JsonPatch, ...] = field(default_factory=tuple)

    def patched(self) -> dict[str, Any]:
        """The workspace with all patches applied."""
        return apply_patches(self.spec, self.patches)


def _simple_workspace() -> BenchWorkspace:
    """pyhf's ``simplemodels.uncorrelated_background([5, 10], [50, 60], [5, 12])`` as a workspace.

    Observed counts ``[53, 65]`` put the best fit away from the suggested initial point.
    """
    spec = {
        "channels": [
            {
                "name": "singlechannel",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 10.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [50.0, 60.0],
                        "modifiers": [
                            {"name": "uncorr_bkguncrt", "type": "shapesys", "data": [5.0, 12.0]}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "singlechannel", "data": [53.0, 65.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    return BenchWorkspace("simple", "pyhf simplemodel, 1 channel / 2 bins / 3 pars", spec)


def _example_workspace() -> BenchWorkspace:
    """The bundled example ``nextstat.examples.simple_workspace()`` (the README's demo model)."""
    spec = read_json(REPO_ROOT / "python" / "nextstat" / "data" / "simple.json")
    n = sum(len(c["data"]) for c in spec["observations"])
    return BenchWorkspace("example", f"bundled example workspace, {n} bins", spec)


SBOTTOM_TARBALL = "atlas-sbottom-ins1748602.tar.gz"
SBOTTOM_SIGNAL = "sbottom_1300_850_60"
ERJR_SIGNAL = "ERJR_200p0_100p0"


def _sbottom_workspace(region: str, signal: str = SBOTTOM_SIGNAL) -> BenchWorkspace:
    """ATLAS sbottom ``Region{A,B,C}/BkgOnly.json`` plus one signal patch, read from the tarball."""
    tar_path = workspaces_dir() / SBOTTOM_TARBALL
    spec = read_tar_json(tar_path, f"Region{region}/BkgOnly.json")
    patch = read_tar_json(tar_path, f"Region{region}/patch.{signal}.json")
    return BenchWorkspace(
        f"sbottom-{region}", f"ATLAS sbottom Region{region} + {signal}", spec, (patch,)
    )


def _erjr_workspace(signal: str = ERJR_SIGNAL) -> BenchWorkspace:
    """ATLAS three-lepton eRJR background-only workspace plus one signal patch."""
    folder = workspaces_dir() / "atlas-3l-erjr"
    spec = read_json(folder / "BkgOnly.json")
    patch = read_json(folder / f"patch.{signal}.json")
    return BenchWorkspace("3l-erjr", f"ATLAS 3L eRJR + {signal}", spec, (patch,))


def _tttt_workspace() -> BenchWorkspace:
    """ATLAS four-top production workspace (gzip JSON, no patch)."""
    spec = read_json(workspaces_dir() / "tttt-prod.json.gz")
    return BenchWorkspace("tttt", "ATLAS tttt production (full workspace)", spec)


WORKSPACE_LOADERS: dict[str, Callable[[], BenchWorkspace]] = {
    "simple": _simple_workspace,
    "example": _example_workspace,
    "sbottom-A": lambda: _sbottom_workspace("A"),
    "sbottom-C": lambda: _sbottom_workspace("C"),
    "3l-erjr": _erjr_workspace,
    "tttt": _tttt_workspace,
}
"""Benchmark models by key, in report order."""


def load_workspace(key: str) -> BenchWorkspace:
    """Load the benchmark model ``key`` (one of :data:`WORKSPACE_LOADERS`)."""
    try:
        loader = WORKSPACE_LOADERS[key]
    except KeyError:
        known = list(WORKSPACE_LOADERS)
        raise KeyError(f"unknown model {key!r}; expected one of {known}") from None
    return loader()


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls.

    Attributes:
        times_s: wall time of each timed call, in seconds, in call order.
        warmup: number of untimed calls made first.
    """

    times_s: tuple[float, ...]
    warmup: int

    @property
    def median_s(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        """Fastest wall time in seconds."""
        return min(self.times_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "times_s": list(self.times_s),
            "warmup": self.warmup,
            "median_s": self.median_s,
            "min_s": self.min_s,
        }


def timeit(
    fn: Callable[[], Any],
    repeat: int,
    warmup: int = 1,
    budget_s: float | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeat`` timed calls.

    With ``budget_s``, timing stops early once the timed calls have used that many seconds
    (at least one timed call is always made), so that slow tools get fewer repeats.
    Warm-up calls are not counted against the budget; they absorb JIT compilation.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeat:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if budget_s is not None and spent >= budget_s:
            break
    return Timing(tuple(times), warmup)


# --------------------------------------------------------------------------------------------
# Speed peer (PyPI nextstat 0.10.1, in its own venv)
# --------------------------------------------------------------------------------------------


def peer_venv() -> Path:
    """The peer's virtualenv: ``$NEXTSTAT_PEER_VENV`` or ``<repo>/.venv-peer``."""
    env = os.environ.get("NEXTSTAT_PEER_VENV")
    return Path(env) if env else REPO_ROOT / ".venv-peer"


def peer_python() -> Path:
    """The peer venv's interpreter; raises with the setup command if it is missing."""
    python = peer_venv() / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(
            f"speed peer venv not found at {peer_venv()}: run `bash benchmarks/setup_peer.sh`"
        )
    return python


class PeerError(RuntimeError):
    """The peer runner failed or reported an error."""


def run_peer(request: dict[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    """Run one request through ``peer_runner.py`` in the peer venv and return its JSON reply.

    The request is sent on stdin as JSON (see ``peer_runner.py`` for the schema). The
    subprocess starts in the benchmarks folder with a clean ``PYTHONPATH`` so that it cannot
    import our ``nextstat`` package.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(peer_python()), str(PEER_RUNNER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=BENCH_DIR,
        env=env,
        check=False,
    )
    try:
        reply = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise PeerError(
            f"peer runner exited {proc.returncode} without a JSON reply:\n{proc.stderr.strip()}"
        ) from None
    if "error" in reply:
        raise PeerError(f"peer runner: {reply['error']}\n{reply.get('traceback', '')}")
    return reply


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Machine and software description for the report."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("numpy", "scipy", "numba", "torch", "pyhf", "jax", "jaxlib")
        },
        "peer": f"nextstat {PEER_VERSION} (PyPI, Rust) in {peer_venv()}",
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render a GitHub-flavoured Markdown table; ``None`` cells render as an em dash."""

    def cell(value: Any) -> str:
        return "—" if value is None else str(value)

    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def format_ms(seconds: float) -> str:
    """A duration in milliseconds with about three significant digits, no exponent."""
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f}"
    return f"{ms:.3g}" if ms >= 0.01 else f"{ms:.2e}"


def format_ratio(ratio: float) -> str:
    """A speed ratio such as ``61.8×`` or ``1,970×``."""
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
