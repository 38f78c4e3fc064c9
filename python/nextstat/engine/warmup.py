"""Compile the engine's kernels ahead of first use (``nextstat warmup``).

Each part runs the public call that compiles its kernels on the bundled example model, so the
compiled cache (:func:`nextstat.engine.jit.cache_dir`) holds what those calls need and later
processes start in about a second. A part already cached takes milliseconds.

For a cache that several machines share (a cluster's home directory), compile with
``NUMBA_CPU_NAME=generic`` so the code runs on any x86-64 CPU (slightly slower than code built
for the host CPU).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nextstat.engine.background import PARTS, BackgroundWarmup, is_compiled
from nextstat.errors import ConvergenceWarning

__all__ = ["PARTS", "WarmupStep", "warmup", "BackgroundWarmup", "is_compiled"]


@dataclass(frozen=True)
class WarmupStep:
    """One compiled part and the seconds it took (milliseconds when it was cached already)."""

    part: str
    seconds: float


def _steps(model) -> dict[str, Callable[[], object]]:
    import nextstat

    def loss() -> None:
        import torch

        from nextstat.torch import SignificanceLoss

        fn = SignificanceLoss(model, signal_sample_name="signal", device="cpu")
        fn(torch.full((fn.n_bins,), 5.0, dtype=torch.float64, requires_grad=True)).backward()

    return {
        "fit": lambda: nextstat.fit(model),
        "hypotest": lambda: (nextstat.hypotest(model, 1.0), nextstat.hypotest(model, 0.0, test_stat="q0")),
        "limit": lambda: nextstat.upper_limit(model),
        "scan": lambda: nextstat.profile_scan(model, [0.5, 1.0]),
        "toys": lambda: nextstat.fit_toys(model, model.suggested_init(), n_toys=2, seed=0, progress=False),
        "ranking": lambda: __import__("nextstat.interpret", fromlist=["rank_impact"]).rank_impact(model, top_n=1),
        "loss": loss,
    }


@contextlib.contextmanager
def _compiled_engine():
    """``NEXTSTAT_FITTER=compiled`` within the block: the public calls that compile the parts must
    not serve them on the PyTorch fitter (:func:`nextstat.engine.fitter.resolve_fitter`)."""
    before = os.environ.get("NEXTSTAT_FITTER")
    os.environ["NEXTSTAT_FITTER"] = "compiled"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NEXTSTAT_FITTER"]
        else:
            os.environ["NEXTSTAT_FITTER"] = before


def warmup(parts: Sequence[str] = PARTS, *, progress: bool | None = None) -> list[WarmupStep]:
    """Compile the kernels of ``parts`` (names from :data:`PARTS`) on the bundled example.

    Returns one :class:`WarmupStep` per part, in order. ``ValueError`` names an unknown part.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"parts: unknown {unknown} (known: {', '.join(PARTS)})")
    from tqdm.auto import tqdm

    from nextstat.progress import resolve

    import nextstat
    from nextstat import examples

    with _compiled_engine():  # building the model computes rates: not on the first-use engine either
        model = nextstat.from_pyhf(examples.simple_workspace())
    steps = _steps(model)
    done = []
    bar = tqdm(list(parts), desc="compiling", unit="part", disable=not resolve(progress))
    for part in bar:
        bar.set_postfix_str(part)
        t0 = time.perf_counter()
        with warnings.catch_warnings(), _compiled_engine():
            warnings.simplefilter("ignore", ConvergenceWarning)
            steps[part]()
        done.append(WarmupStep(part, time.perf_counter() - t0))
    return done
