"""Where the time of a batched toy fit goes on a GPU: toys/s against the batch size, iterations.

Runs :func:`nextstat.fit_toys` with ``device="cuda"`` (or ``--device``) on the synthetic
201-parameter shapesys model of ``bench_toys.py`` for several chunk sizes, then the PyTorch
profiler over one chunk (top kernels by device time).

Usage: ``python benchmarks/profile_gpu_toys.py [--device cuda] [--sizes 1000 4000 16000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_toys import synthetic_workspace  # noqa: E402

import nextstat  # noqa: E402
from nextstat.infer.toys import fit_toys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 8000])
    parser.add_argument("--model", choices=("synthetic-201", "tttt"), default="synthetic-201")
    args = parser.parse_args(argv)
    if args.model == "tttt":
        from nextstat.testing import tttt

        model = nextstat.from_pyhf(tttt())
    else:
        model = nextstat.from_pyhf(synthetic_workspace())
    pars = nextstat.fit(model, hesse=False).bestfit
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    fit_toys(model, pars, n_toys=64, seed=1, device=args.device, progress=False)
    for n in args.sizes:
        sync()
        t0 = time.perf_counter()
        res = fit_toys(model, pars, n_toys=n, seed=2, device=args.device, progress=False, chunk_size=n)
        sync()
        dt = time.perf_counter() - t0
        it = res.n_iter
        print(f"{args.model} N={n:6d}: {dt:7.3f} s, {n / dt:9.1f} toys/s, failed {res.n_failed}, "
              f"iterations median {np.median(it):.0f} max {it.max()}", flush=True)
    n = args.sizes[0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        fit_toys(model, pars, n_toys=n, seed=3, device=args.device, progress=False, chunk_size=n)
        sync()
    key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
