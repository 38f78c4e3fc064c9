"""Train a classifier on the profiled discovery significance and compare with BCE.

Same as ``nextstat demo``; see :mod:`nextstat.demo` for the pieces (dataset, model, training
loops) to copy into your own training code.

    python examples/train_significance.py --epochs 30 --out demo_output
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nextstat.demo import run_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    print(run_demo(epochs=args.epochs, out_dir=args.out, seed=args.seed, progress=not args.no_progress))
