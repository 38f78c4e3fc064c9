"""CLs over many signal patches of one background-only workspace, serially or scaled out.

Published HistFactory likelihoods (HEPData) come as a background-only workspace plus one JSON
Patch per signal hypothesis; an exclusion contour needs CLs for each. :func:`scan_patches` runs
the same pure function, :func:`hypotest_patch`, on every patch, in this process, in a process
pool, or as Ray tasks, and returns one table row per patch. The numbers do not depend on where
a patch ran: each row is computed from the background workspace, the patch, ``mu`` and
``test_stat`` alone, by the deterministic fits of :func:`nextstat.hypotest`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from nextstat import workspace as wsmod
from nextstat.errors import ConvergenceWarning
from nextstat.infer.hypotest import AsymptoticCalculator
from nextstat.model import from_pyhf
from nextstat.progress import resolve as progress_rule

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["COLUMNS", "hypotest_patch", "scan_patches"]

#: Result columns after ``patch``, in order. ``cls_exp_m2`` .. ``cls_exp_p2`` are the expected
#: CLs at -2, -1, 0, +1, +2 sigma of the background-only expectation (pyhf's
#: ``return_expected_set`` order: ``cls_exp_m2`` is the smallest).
COLUMNS = ("cls_obs", "cls_exp_m2", "cls_exp_m1", "cls_exp", "cls_exp_p1", "cls_exp_p2",
           "mu_hat", "converged")
_TEST_STATS = ("qtilde", "q")
_EXECUTORS = (None, "serial", "process", "ray")


def hypotest_patch(background: Mapping[str, Any], patch: Sequence[Mapping[str, Any]], *,
                   mu: float = 1.0, test_stat: str = "qtilde") -> dict[str, float | bool]:
    """Asymptotic CLs of POI = ``mu`` for one signal patch: one row of :func:`scan_patches`.

    Compiles ``background`` with ``patch`` applied and runs the asymptotic calculator of
    :func:`nextstat.hypotest` (arXiv:1007.1727; pyhf 0.7.6's ``hypotest(mu, data, model,
    test_stat, return_expected_set=True)``) on the workspace's observed data. The values are
    identical to ``nextstat.hypotest(nextstat.from_pyhf(background, patches=[patch]), mu)``.

    Args:
        background: background-only workspace ``dict``.
        patch: JSON Patch (RFC 6902) operation list adding the signal.
        mu: tested POI value. test_stat: ``"qtilde"`` (default) or ``"q"``.

    Returns:
        ``{column: value}`` for :data:`COLUMNS`: observed and expected CLs; ``mu_hat``, the
        POI of the free fit to the observed data within the POI's bounds (so 0 for a deficit
        when the lower bound is 0, as in most published workspaces); ``converged``, True when
        all five fits of the test converged (free and conditional fits on the observed data,
        the conditional fit that generates the background-only Asimov data, free and
        conditional fits on that Asimov data). A row with ``converged=False`` should not be
        trusted: inspect that patch with
        :func:`nextstat.fit`.
    """
    model = from_pyhf(background, patches=[patch])
    calc = AsymptoticCalculator(model, test_stat=test_stat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the row carries it
        h = calc.hypotest(mu)
    row: dict[str, float | bool] = {"cls_obs": float(h.cls)}
    row.update({name: float(v) for name, v in zip(COLUMNS[1:6], h.cls_expected, strict=True)})
    row["mu_hat"] = float(h.mu_hat)
    row["converged"] = bool(h.converged)
    return row


def scan_patches(
    background_ws: Any,
    patches: Any,
    *,
    mu: float = 1.0,
    executor: str | Executor | None = None,
    progress: bool | None = None,
    test_stat: str = "qtilde",
    n_workers: int | None = None,
) -> pd.DataFrame:
    """CLs of POI = ``mu`` for every signal patch of a background-only workspace.

    Args:
        background_ws: background-only workspace: ``dict``, JSON string or path
            (``.json``/``.json.gz``).
        patches: the signal hypotheses, one of

            * a pyhf patchset ``{"patches": [{"metadata": {"name": ...}, "patch": [...]}, ...]}``
              (a ``dict``, a path to its JSON file, or a ``pyhf.PatchSet``): rows are named by
              ``metadata.name``;
            * a mapping ``{name: patch}``;
            * a sequence of patches: rows are named by ``metadata.name`` for patchset entries
              (``{"metadata": ..., "patch": [...]}``), else ``"patch_<i>"`` (position ``i``).

            Each patch is a JSON Patch operation list, a patchset entry, or a path / JSON string
            holding either (see :func:`nextstat.workspace.load_patch`).
        mu: tested POI value (> 0).
        executor: where each patch runs:

            * ``None`` or ``"serial"``: in this process, in order;
            * ``"process"``: a ``ProcessPoolExecutor`` of ``n_workers`` processes (default:
              ``os.cpu_count()``), created and shut down here; the background workspace is
              sent once per process;
            * ``"ray"``: Ray tasks (``num_cpus=1`` each). An already initialised Ray (a local
              or remote cluster, ``ray.init(...)`` called before) is used as it is and left
              running, with at most ``n_workers`` tasks in flight if given; otherwise a local
              Ray with ``num_cpus=n_workers`` (default: all cores) is started here and shut
              down before returning. The background workspace is put in the object store once.
            * a ``concurrent.futures.Executor`` you own (e.g. a pool reused across scans): the
              tasks are submitted to it and it is left open.

        progress: show a tqdm progress bar (one tick per finished patch).
        test_stat: ``"qtilde"`` (default, POI bounded below at 0) or ``"q"``.
        n_workers: parallelism of ``"process"`` / ``"ray"`` (see above); ignored otherwise.

    Returns:
        ``pandas.DataFrame`` with one row per patch in the input order (whatever order they
        finished in): ``patch`` (the name), then :data:`COLUMNS` (``cls_obs``, ``cls_exp_m2``,
        ``cls_exp_m1``, ``cls_exp``, ``cls_exp_p1``, ``cls_exp_p2``, ``mu_hat``,
        ``converged``; see :func:`hypotest_patch`). The values are identical for every
        executor.

    Raises:
        ValueError: bad ``mu``, ``test_stat``, ``executor`` or ``n_workers``; no patches;
            duplicate patch names.
        WorkspaceError: a malformed workspace or patch. Any error raised while testing a patch
            carries a note (``exc.__notes__``) naming the patch.
        ImportError: ``executor="ray"`` without Ray installed (``pip install 'nextstat-hep[tune]'``).

    Example::

        from nextstat.infer.patchscan import scan_patches
        table = scan_patches("BkgOnly.json", "patchset.json", executor="process")
        excluded = table[table.cls_obs < 0.05].patch
    """
    import pandas as pd

    if isinstance(mu, bool) or not isinstance(mu, numbers.Real) or not math.isfinite(mu) or mu <= 0:
        raise ValueError(f"mu: expected a finite POI value > 0, got {mu!r}")
    if test_stat not in _TEST_STATS:
        raise ValueError(f"test_stat: expected one of {_TEST_STATS} (CLs test statistics), got {test_stat!r}")
    if not (executor in _EXECUTORS or isinstance(executor, Executor)):
        raise ValueError(f"executor: expected None, 'serial', 'process', 'ray' or a "
                         f"concurrent.futures.Executor, got {executor!r}")
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int)
                                  or n_workers < 1):
        raise ValueError(f"n_workers: expected an integer >= 1 or None, got {n_workers!r}")

    background = wsmod.load(background_ws)
    named = _named_patches(patches)
    names = [name for name, _ in named]
    ops = [patch for _, patch in named]
    mu = float(mu)

    from tqdm.auto import tqdm

    with tqdm(total=len(ops), desc="patches", unit="patch", disable=not progress_rule(progress)) as bar:
        if executor is None or executor == "serial":
            rows = []
            for name, patch in named:
                with _naming(name):
                    rows.append(hypotest_patch(background, patch, mu=mu, test_stat=test_stat))
                bar.update()
        elif executor == "process":
            workers = min(n_workers or os.cpu_count() or 1, len(ops))
            with ProcessPoolExecutor(max_workers=workers, initializer=_set_background,
                                     initargs=(background,)) as pool:
                rows = _run_futures(pool, _task_in_worker, (mu, test_stat), named, bar)
        elif executor == "ray":
            rows = _run_ray(background, named, mu, test_stat, n_workers, bar)
        else:
            rows = _run_futures(executor, _task, (background, mu, test_stat), named, bar)

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.insert(0, "patch", names)
    return table


def _task(background: Mapping[str, Any], mu: float, test_stat: str,
          patch: Sequence[Mapping[str, Any]]) -> dict[str, float | bool]:
    """:func:`hypotest_patch` with positional arguments: the task run by every executor."""
    return hypotest_patch(background, patch, mu=mu, test_stat=test_stat)


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Add the patch's name to any exception raised while testing it."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"(while testing patch {name!r} in nextstat.infer.patchscan.scan_patches)")
        raise


# --- patch normalisation --------------------------------------------------------------------


def _named_patches(patches: Any) -> list[tuple[str, list]]:
    """``[(name, JSON Patch operations)]`` from any accepted form (see :func:`scan_patches`)."""
    if isinstance(patches, str) and patches.lstrip().startswith("["):
        try:
            patches = json.loads(patches)
        except json.JSONDecodeError as exc:
            raise ValueError(f"patches: malformed JSON: {exc}") from exc
    elif isinstance(patches, (str, os.PathLike)):
        patches = wsmod.load(patches)  # a patchset or {name: patch} file, or its JSON text
    if _is_patchset_object(patches):  # pyhf.PatchSet
        named = [(str(p.name), list(p.patch)) for p in patches.patches]
    elif isinstance(patches, Mapping) and isinstance(patches.get("patches"), list) and all(
        isinstance(p, Mapping) and "patch" in p for p in patches["patches"]
    ):
        named = [(_entry_name(p, i), wsmod.load_patch(p)) for i, p in enumerate(patches["patches"])]
    elif isinstance(patches, Mapping):
        named = []
        for name, p in patches.items():
            if not isinstance(name, str):
                raise ValueError(f"patches: expected string names in the mapping, got {name!r}")
            named.append((name, _load(p, name)))
    elif isinstance(patches, Iterable):
        items = list(patches)
        if items and all(isinstance(op, Mapping) and "op" in op for op in items):
            raise ValueError("patches: got a single JSON Patch (a list of operations); pass a list "
                             "of patches, e.g. [patch], or a mapping {name: patch}")
        named = [(_entry_name(p, i), _load(p, i)) for i, p in enumerate(items)]
    else:
        raise ValueError(f"patches: expected a patchset, a mapping name -> patch or a sequence of "
                         f"patches, got {type(patches).__name__}")
    if not named:
        raise ValueError("patches: expected at least one patch, got none")
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            raise ValueError(f"patches: duplicate patch name {name!r}")
        seen.add(name)
    return named


def _is_patchset_object(obj: Any) -> bool:
    return not isinstance(obj, Mapping) and hasattr(obj, "patches") and all(
        hasattr(p, "name") and hasattr(p, "patch") for p in getattr(obj, "patches", ())
    )


def _entry_name(entry: Any, index: int) -> str:
    metadata = entry.get("metadata") if isinstance(entry, Mapping) else None
    if isinstance(metadata, Mapping) and "name" in metadata:
        return str(metadata["name"])
    return f"patch_{index}"


def _load(patch: Any, name: str | int) -> list:
    try:
        return wsmod.load_patch(patch)
    except wsmod.WorkspaceError as exc:
        raise wsmod.WorkspaceError(f"patches[{name!r}]", str(exc)) from exc


# --- executors ------------------------------------------------------------------------------

_BACKGROUND: dict | None = None  # the background workspace of a process-pool worker


def _set_background(background: dict) -> None:
    global _BACKGROUND
    _BACKGROUND = background


def _task_in_worker(mu: float, test_stat: str, patch: list) -> dict[str, float | bool]:
    assert _BACKGROUND is not None, "process-pool worker started without its background workspace"
    return hypotest_patch(_BACKGROUND, patch, mu=mu, test_stat=test_stat)


def _run_futures(pool: Executor, fn: Callable[..., dict], args: tuple,
                 named: list[tuple[str, list]], bar: Any) -> list[dict]:
    """Submit ``fn(*args, patch)`` for every patch; rows in input order."""
    futures = {pool.submit(fn, *args, patch): i for i, (_, patch) in enumerate(named)}
    rows: list[dict | None] = [None] * len(named)
    try:
        for future in as_completed(futures):
            i = futures[future]
            with _naming(named[i][0]):
                rows[i] = future.result()
            bar.update()
    finally:
        for future in futures:
            future.cancel()  # no-op for finished ones; drops the queue after an error
    return rows  # type: ignore[return-value]


def _run_ray(background: dict, named: list[tuple[str, list]], mu: float, test_stat: str,
             n_workers: int | None, bar: Any) -> list[dict]:
    """Ray tasks by the one Ray policy (:func:`nextstat.infer.executors.ray_map`)."""
    from nextstat.infer.executors import ray_map

    return ray_map(_task, (background, mu, test_stat), [(patch,) for _, patch in named], n_workers=n_workers,
                   on_done=lambda i, row: bar.update(), context=lambda i: _naming(named[i][0]))
