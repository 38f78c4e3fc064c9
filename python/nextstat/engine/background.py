"""Compiling the engine in a background process: ``nextstat warmup --part ...`` in a child while the
caller works (:class:`BackgroundWarmup`), and whether a part is compiled already (:func:`is_compiled`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

logger = logging.getLogger("nextstat")

PARTS = ("fit", "hypotest", "limit", "scan", "toys", "ranking", "loss")
"""The parts ``nextstat warmup`` (:func:`nextstat.engine.warmup.warmup`) knows, in the order it compiles them."""


#: the compiled entry point whose cache tells whether a part is compiled already
_PART_KERNEL = {"fit": "fit_with_errors", "hypotest": "asymptotic_fits", "loss": "newton_fit"}


def is_compiled(part: str) -> bool:
    """Whether ``part``'s kernels are in the compiled cache (``False`` where it cannot be told)."""
    name = _PART_KERNEL.get(part)
    if name is None:
        return False
    from nextstat.engine import numba_core
    from nextstat.engine.jit import is_cached

    return is_cached(getattr(numba_core, name))


class BackgroundWarmup:
    """``nextstat warmup --part ...`` in a child process, compiling into the shared cache while the
    caller does other work (e.g. trains a network); :meth:`wait` before the calls that need the
    kernels, so that they load them instead of compiling them a second time.

    Numba writes a cache entry atomically (a temporary file, then a rename), so the child and the
    caller may share the cache directory. Parts compiled already (:func:`is_compiled`) start no
    child. Used as a context manager, a child still running at the end is stopped.
    """

    def __init__(self, parts: Sequence[str], *, note: str = ""):
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"parts: unknown {unknown} (known: {', '.join(PARTS)})")
        self.parts = tuple(p for p in parts if not is_compiled(p))
        self.started = time.perf_counter()
        self._proc: subprocess.Popen | None = None
        self._done: bool | None = None if self.parts else True
        if not self.parts:
            return
        args = [sys.executable, "-m", "nextstat", "warmup", "--no-progress"]
        for part in self.parts:
            args += ["--part", part]
        env = dict(os.environ, NEXTSTAT_QUIET_COMPILE="1", TQDM_DISABLE="1", NEXTSTAT_FITTER="compiled")
        self._err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks
        self._proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=self._err)
        from nextstat.engine.jit import COMPILE_ESTIMATE_S, announce_compiling, cache_dir

        announce_compiling(f"background pid {self._proc.pid}",
                  f"nextstat: compiling the engine ({', '.join(self.parts)}) in a background process, once "
                  f"(~{COMPILE_ESTIMATE_S} s per part, cached in {cache_dir()}){note}")

    def running(self) -> bool:
        """Whether the child is still compiling (``False`` once it ended, or where none started)."""
        return self._proc is not None and self._done is None and self._proc.poll() is None

    def wait(self, timeout: float = 900.0) -> bool:
        """Wait (at most ``timeout`` seconds) for the child; ``True`` when it compiled everything.

        A child that fails or runs over is logged and stopped; the caller's own calls then compile
        what they need, so the result of the work does not depend on the child.
        """
        if self._done is None:
            self._done = self._wait(timeout)
        return self._done

    def _wait(self, timeout: float) -> bool:
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            logger.warning("background compilation of %s ran over %.0f s; stopped", ", ".join(self.parts), timeout)
            return False
        finally:
            self._err.seek(0)
            err = self._err.read()
            self._err.close()
        if self._proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:]
            logger.warning("background compilation of %s failed (exit %d): %s", ", ".join(self.parts),
                           self._proc.returncode, tail[0] if tail else "")
            return False
        logger.info("background compilation of %s done in %.1f s", ", ".join(self.parts),
                    time.perf_counter() - self.started)
        return True

    def __enter__(self) -> "BackgroundWarmup":
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._done is None:
            self._err.close()
            self._done = False
