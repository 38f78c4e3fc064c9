"""Where independent tasks run: the one Ray policy of NextStat (patch scans, toys).

:func:`ray_map` runs ``fn(*shared, *args)`` for every ``args`` of a list as Ray tasks and
returns the results in input order, whatever order they finished in. The policy:

* an already initialised Ray (a local or remote cluster, ``ray.init(...)`` called before) is
  used as it is and left running, with at most ``n_workers`` tasks in flight if given;
  otherwise a local Ray with ``num_cpus=n_workers`` (default: all cores) is started here and
  shut down before returning;
* every task asks for one CPU (``num_cpus=1``);
* the ``shared`` arguments (a workspace, a model) are put in the object store once;
* after an error the tasks still pending on a cluster we did not start are cancelled, so that
  none is left running on a shared cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["import_ray", "ray_map"]

RAY_HINT = "pip install 'nextstat-hep[tune]' (or pip install 'ray[tune]')"


def import_ray() -> Any:
    """The ``ray`` module; ImportError with the install command when Ray is missing."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"executor='ray' needs Ray, an optional dependency of nextstat: {RAY_HINT}") from exc
    return ray


def ray_map(fn: Callable[..., Any], shared: Sequence[Any], args: Sequence[tuple], *, n_workers: int | None = None,
            on_done: Callable[[int, Any], None] | None = None,
            context: Callable[[int], AbstractContextManager] | None = None) -> list[Any]:
    """``[fn(*shared, *args[i]) for i]`` computed as Ray tasks (policy in the module docstring).

    Args:
        fn: a module-level function (Ray workers import it by name).
        shared: arguments common to every task, sent to the object store once.
        args: the per-task arguments.
        n_workers: CPUs of the Ray started here, or the tasks in flight on a running Ray.
        on_done: called as ``on_done(i, result)`` when task ``i`` finishes (e.g. a progress bar).
        context: ``context(i)`` wraps the retrieval of task ``i``'s result (e.g. to add a note
            naming the task to its exception).

    Returns:
        The results, in the order of ``args``.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=n_workers, include_dashboard=False)
    pending: dict[Any, int] = {}
    try:
        task = ray.remote(num_cpus=1)(fn)
        refs = [ray.put(x) for x in shared]
        # a Ray we started has n_workers CPUs; on someone else's, cap the tasks in flight
        limit = len(args) if (n_workers is None or started) else n_workers
        results: list[Any] = [None] * len(args)
        queue = iter(enumerate(args))

        def submit() -> None:
            for i, a in queue:
                pending[task.remote(*refs, *a)] = i
                return

        for _ in range(limit):
            submit()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                with context(i) if context is not None else nullcontext():
                    results[i] = ray.get(ref)
                if on_done is not None:
                    on_done(i, results[i])
                submit()
        return results
    finally:
        if started:
            ray.shutdown()
        else:
            for ref in pending:  # after an error: do not leave our tasks on a shared cluster
                ray.cancel(ref)
