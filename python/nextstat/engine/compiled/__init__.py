"""The Numba-compiled CPU core, one job per module (see :mod:`nextstat.engine.numba_core` for the
model-array layout and the modules' order of dependence)."""
