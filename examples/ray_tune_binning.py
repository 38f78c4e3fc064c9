"""Binning study with Ray Tune: the search of ``optuna_binning.py``, trials in parallel on Ray.

Same data set, search space and score as ``examples/optuna_binning.py`` (a classifier score
with background ~ Beta(2, 5) and signal ~ Beta(5, 2); ``n_bins`` equal-width bins between ``lo``
and ``hi``, outer events folded into the outer bins; 10% background normsys and staterror;
expected (pre-fit Asimov) Z0 from :func:`nextstat.tune.score_workspace`), searched with TPE
through Ray Tune's ``OptunaSearch``, ``--workers`` trials at a time on a local Ray (started
here with ``num_cpus=--workers`` unless Ray is already initialised, e.g. by ``ray start`` +
``RAY_ADDRESS``).

Ray Tune has no "pruned" state for a finished trial, so a binning with a bin of fewer than
``MIN_BKG_EVENTS`` effective simulated background events reports ``z0 = 0`` ("no usable
sensitivity") and ``valid = False`` instead of being pruned as in the Optuna example.

The simulated events are shipped once through Ray's object store (``tune.with_parameters``);
actors are reused between trials (``reuse_actors=True``), so each worker pays the import of
NextStat and the loading of its compiled kernels once. Ray's per-trial bookkeeping (~0.1-0.5 s)
dwarfs the ~3 ms of a trial's statistics: on one machine, Ray Tune is for searches whose trials
are expensive (training a classifier per trial, say); for cheap ones use Optuna directly, or
share one Optuna study between processes or machines with an RDB storage.

Run::

    python examples/ray_tune_binning.py                  # 40 trials, 2 at a time
    python examples/ray_tune_binning.py --trials 100 --workers 4
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from nextstat.builders import binning, build_workspace_from_histograms
from nextstat.tune import SortedEvents, direction, score_workspace

N_SIG, W_SIG = 20_000, 0.0005  # 10 expected signal events
N_BKG, W_BKG = 500_000, 0.002  # 1000 expected background events
BKG_NORM = (0.9, 1.1)  # 10% normsys on the background
MIN_BKG_EVENTS = 10.0  # minimum effective simulated background events per bin
METRIC = "z0"

SEARCH_SPACE = {
    "n_bins": tune.randint(3, 41),  # upper bound exclusive: 3..40 as in the Optuna example
    "lo": tune.uniform(0.0, 0.3),
    "hi": tune.uniform(0.7, 1.0),
}


def make_events(seed: int = 0) -> tuple[SortedEvents, SortedEvents]:
    """Simulated (signal, background) scores and weights, sorted once for fast histogramming."""
    rng = np.random.default_rng(seed)
    signal = SortedEvents(rng.beta(5.0, 2.0, N_SIG), np.full(N_SIG, W_SIG))
    background = SortedEvents(rng.beta(2.0, 5.0, N_BKG), np.full(N_BKG, W_BKG))
    return signal, background


def make_workspace(signal: SortedEvents, background: SortedEvents, n_bins: int, lo: float,
                   hi: float) -> dict | None:
    """The workspace of one binning, or None if a bin has < MIN_BKG_EVENTS simulated background."""
    edges = binning(n_bins, lo, hi)
    edges[0], edges[-1] = 0.0, 1.0  # fold the events below lo / above hi into the outer bins
    s, s_w2 = signal.histogram(edges)
    b, b_w2 = background.histogram(edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(b_w2 > 0, b * b / b_w2, 0.0)
    if np.any(n_eff < MIN_BKG_EVENTS):
        return None
    return build_workspace_from_histograms(
        s, {"background": b},
        normsys={"background": {"bkg_norm": BKG_NORM}},
        staterror={"signal": np.sqrt(s_w2), "background": np.sqrt(b_w2)},
    )


def trainable(config: dict, signal: SortedEvents, background: SortedEvents) -> None:
    """One Ray Tune trial: build the binning's workspace, report its expected Z0."""
    t0 = time.perf_counter()
    ws = make_workspace(signal, background, int(config["n_bins"]), config["lo"], config["hi"])
    z0 = 0.0 if ws is None else score_workspace(ws, metric=METRIC)
    tune.report({METRIC: z0, "valid": ws is not None,
                 "trial_ms": (time.perf_counter() - t0) * 1e3})


def run_search(n_trials: int = 40, *, workers: int = 2, seed: int = 0,
               storage_path: str | None = None, verbose: int = 1) -> tune.ResultGrid:
    """Run the search on the current Ray (which must be initialised); return Ray's ResultGrid."""
    signal, background = make_events(seed)
    mode = direction(METRIC)[:3]  # "max"
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), metric=METRIC,
                            mode=mode)
    tuner = tune.Tuner(
        tune.with_parameters(trainable, signal=signal, background=background),
        param_space=SEARCH_SPACE,
        tune_config=tune.TuneConfig(num_samples=n_trials, max_concurrent_trials=workers,
                                    search_alg=searcher, metric=METRIC, mode=mode,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="nextstat-binning", storage_path=storage_path,
                                  verbose=verbose),
    )
    return tuner.fit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="number of trials (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="trials in parallel (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="data set and TPE seed (default 0)")
    parser.add_argument("--storage-path", default=None,
                        help="where Ray Tune writes its results (default: a temporary folder)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=args.workers, include_dashboard=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            results = run_search(args.trials, workers=args.workers, seed=args.seed,
                                 storage_path=args.storage_path or tmp, verbose=0)
            elapsed = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()

    best = results.get_best_result()
    frame = results.get_dataframe()
    default = score_workspace(make_workspace(*make_events(args.seed), 10, 0.0, 1.0))
    print(f"{len(frame)} trials ({int((~frame['valid']).sum())} rejected binnings) in "
          f"{elapsed:.1f} s with {args.workers} workers")
    print(f"default binning {{'n_bins': 10, 'lo': 0.0, 'hi': 1.0}}: Z0 = {default:.3f}")
    print(f"best binning    {best.config}: Z0 = {best.metrics[METRIC]:.3f}")


if __name__ == "__main__":
    main()
