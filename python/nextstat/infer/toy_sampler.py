"""Pseudo-data of toy experiments: which toys a seed gives, drawn on the CPU.

Toys
    A toy is one draw of the full HistFactory likelihood's data at parameters ``pars``, as
    pyhf's ``model.make_pdf(pars).sample()`` draws it (arXiv:1007.1727 sec. 2; pyhf
    ``pdf.Model.make_pdf``): main counts ``n_b ~ Poisson(nu_b(pars))``, then the auxiliary data
    of the Gaussian constraints ``a_p ~ Normal(theta_p, sigma_p)`` (normsys, histosys, lumi,
    staterror) and of the Poisson constraints ``a_p ~ Poisson(tau_p * gamma_p)`` (shapesys).
    The auxiliary data keep the model's order (``model.data`` layout), so a toy can be passed
    as ``data`` anywhere.

Reproducibility and splitting
    Toys are drawn on the CPU with NumPy's ``Generator(PCG64)`` on every device, in blocks of
    :data:`RNG_BLOCK` toys; block ``k`` of stream ``s`` uses ``SeedSequence(seed,
    spawn_key=(s, k))``. Toy ``i`` therefore depends only on the model, ``pars``, ``seed`` and
    ``i``: not on ``n_toys``, ``chunk_size``, the thread count, the device, or where the run
    starts. A run of toys ``[a, b)`` (``first_toy=a``, ``n_toys=b - a``) is the slice
    ``[a, b)`` of one long run with the same seed, so jobs with one seed and disjoint ranges
    split a run (merge them with ``ToyFitResults.concatenate`` / ``ToyDistributions.concatenate``).
    Streams: 0 for :func:`nextstat.infer.toys.fit_toys` and :func:`sample_toys`, 1 and 2 for
    the signal+background and background-only toys of a toy-based hypothesis test. Different
    NumPy versions may draw different numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nextstat.engine.compiled.codes import AUX_GAUSS
from nextstat.engine.layout import AUX_KIND, AUX_PAR, AUX_SIGMA, AUX_TAU
from nextstat.model import Model

__all__ = ["POISSON_LAM_MAX", "RNG_BLOCK", "sample_toys"]

#: toys drawn from one random stream block (see the module docstring).
RNG_BLOCK = 256

# random streams: fit_toys, signal+background toys, background-only toys
_STREAM_FIT, _STREAM_SB, _STREAM_B = 0, 1, 2

#: the largest rate numpy's Poisson sampler accepts (``numpy/random/_common.pyx``: int64 max
#: minus 10 sqrt of it); larger expected rates are refused before sampling
POISSON_LAM_MAX = float(np.iinfo(np.int64).max - np.sqrt(np.iinfo(np.int64).max) * 10)


class _ToySampler:
    """Draws toys of ``model`` at ``pars``; rows ``[start, stop)`` of an endless sequence."""

    def __init__(self, model: Model, pars: np.ndarray, seed: int, stream: int):
        lam = model.expected_main(pars)
        bad = np.flatnonzero(~np.isfinite(lam) | (lam < 0) | (lam > POISSON_LAM_MAX))
        if bad.size:
            raise ValueError(f"pars: the expected rate of main bin {int(bad[0])} at the parameters the toys are "
                             f"generated at is {float(lam[bad[0]])!r}; toys need "
                             f"finite rates in [0, {POISSON_LAM_MAX:.6g}] (numpy's Poisson sampler's limit)")
        par = model.aux_arrays[AUX_PAR]
        kind = model.aux_arrays[AUX_KIND]
        sigma = model.aux_arrays[AUX_SIGMA]
        tau = model.aux_arrays[AUX_TAU]
        gauss = kind == AUX_GAUSS
        self.nb = model.n_bins
        self.width = model.n_bins + model.n_aux
        self.lam = lam
        self.g_col = model.n_bins + np.flatnonzero(gauss)
        self.g_loc = pars[par[gauss]]
        self.g_scale = sigma[gauss]
        self.p_col = model.n_bins + np.flatnonzero(~gauss)
        self.p_rate = pars[par[~gauss]] * tau[~gauss]
        if np.any(~np.isfinite(self.p_rate) | (self.p_rate < 0) | (self.p_rate > POISSON_LAM_MAX)):
            raise ValueError("pars: a Poisson (shapesys) constraint rate tau * gamma is negative, not finite or "
                             f"above {POISSON_LAM_MAX:.6g} (numpy's Poisson sampler's limit)")
        self.seed = seed
        self.stream = stream
        self._cache: tuple[int, np.ndarray] | None = None

    def block(self, k: int) -> np.ndarray:
        """Toys ``k * RNG_BLOCK ... (k + 1) * RNG_BLOCK - 1``, shape (RNG_BLOCK, n_bins + n_aux)."""
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(self.stream, k))))
        out = np.empty((RNG_BLOCK, self.width))
        # the order of pyhf's Simultaneous pdf: main Poisson, Gaussian constraints, Poisson constraints
        out[:, :self.nb] = rng.poisson(self.lam, size=(RNG_BLOCK, self.nb))
        out[:, self.g_col] = rng.normal(self.g_loc, self.g_scale, size=(RNG_BLOCK, self.g_col.size))
        out[:, self.p_col] = rng.poisson(self.p_rate, size=(RNG_BLOCK, self.p_col.size))
        self._cache = (k, out)
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Toys ``start ... stop - 1``, shape (stop - start, n_bins + n_aux), C-contiguous."""
        out = np.empty((stop - start, self.width))
        i = start
        while i < stop:
            k, j = divmod(i, RNG_BLOCK)
            n = min(RNG_BLOCK - j, stop - i)
            out[i - start:i - start + n] = self.block(k)[j:j + n]
            i += n
        return out


def _seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


def sample_toys(model: Model, pars: Any, n_toys: int, *, seed: int = 0, first_toy: int = 0) -> np.ndarray:
    """Pseudo-data drawn at ``pars``: main and auxiliary data, shape (n_toys, n_bins + n_aux).

    Toys ``first_toy ... first_toy + n_toys - 1`` of the seed's sequence: the same toys as
    :func:`nextstat.infer.toys.fit_toys` fits for the same ``pars``, ``seed`` and ``first_toy``
    (module docstring).

    >>> import nextstat
    >>> from nextstat.builders import build_workspace_from_histograms
    >>> model = nextstat.from_pyhf(build_workspace_from_histograms([1.0, 2.0], {"b": [40.0, 30.0]}))
    >>> toys = sample_toys(model, model.suggested_init(), 20000, seed=1)
    >>> bool(np.allclose(toys.mean(0), model.expected_data(model.suggested_init()), rtol=0.02))
    True
    """
    p = model._pars(pars)
    n = _n_toys(n_toys, "n_toys")
    a = _first_toy(first_toy)
    return _ToySampler(model, p, _seed(seed), _STREAM_FIT).rows(a, a + n)


def _n_toys(n: Any, name: str) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {n!r}")
    return int(n)


def _first_toy(first: Any) -> int:
    if (isinstance(first, (bool, np.bool_)) or not isinstance(first, (int, np.integer))
            or not 0 <= first < 2**62):
        raise ValueError(f"first_toy: expected an integer in [0, 2**62), got {first!r}")
    return int(first)
