"""The model arrays' layout: field names and offsets of the tuples ``A`` (rates) and ``AUX``
(constraints) that :class:`nextstat.model.Model` builds once and every kernel takes, their two
packed buffers, and the compiled helpers that rebuild ``A`` with some fields replaced. This is
the only module that knows the offsets; everything else reads ``A[NOM]``, ``A[N_BINS]``, ...

``A`` (``blk`` = a (channel, sample) block, ``flat`` = per-block-bin storage)::

    BLK_B0, BLK_NB, BLK_OFF     first global bin, bin count, flat offset of each block   int64
    NOM                         nominal yields, flat                                     float64
    SC_PTR, SC_PAR, SC_KIND     scalar multiplicative terms per block (CSR): normfactor/ int64
    SC_LHI, SC_LLO, SC_COEF     lumi (linear), normsys code1/code4 with log(hi), log(lo) float64
                                and the code4 polynomial ``(n, 6)``
    HS_PTR, HS_PAR, HS_CODE,    additive histosys terms per block (CSR); deltas          int64
    HS_DOFF                     up = hi - nom, dn = nom - lo stored flat from HS_DOFF
    HS_UP, HS_DN                                                                         float64
    PB_PTR, PB_PAR              per-bin multiplicative terms (staterror, shapesys,       int64
                                shapefactor) indexed by flat bin (CSR)
    N_BINS                      number of main bins                                      int64 scalar

``AUX``: ``AUX_PAR`` (parameter of each auxiliary datum), ``AUX_KIND`` (Gaussian or Poisson,
:mod:`nextstat.engine.compiled.codes`), ``AUX_SIGMA``, ``AUX_TAU``.

The tuples stay plain tuples: a 19-field ``NamedTuple`` costs Numba's dispatcher about 0.9 us
more per call from Python (its slow typeof path), which per-toy and per-refit calls would pay.
The offsets are named constants instead, which Numba folds like literals.
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import numpy as np

from nextstat.engine.jit import kernel

(BLK_B0, BLK_NB, BLK_OFF, NOM, SC_PTR, SC_PAR, SC_KIND, SC_LHI, SC_LLO, SC_COEF, HS_PTR, HS_PAR, HS_CODE,
 HS_DOFF, HS_UP, HS_DN, PB_PTR, PB_PAR, N_BINS) = range(19)
A_FIELDS = ("blk_b0", "blk_nb", "blk_off", "nom", "sc_ptr", "sc_par", "sc_kind", "sc_lhi", "sc_llo", "sc_coef",
            "hs_ptr", "hs_par", "hs_code", "hs_doff", "hs_up", "hs_dn", "pb_ptr", "pb_par", "n_bins")
"""Names of ``A``'s fields, in order (lower-case of the offset constants)."""
AUX_PAR, AUX_KIND, AUX_SIGMA, AUX_TAU = range(4)
AUX_FIELDS = ("aux_par", "aux_kind", "aux_sigma", "aux_tau")

_A_INT = (BLK_B0, BLK_NB, BLK_OFF, SC_PTR, SC_PAR, SC_KIND, HS_PTR, HS_PAR, HS_CODE, HS_DOFF, PB_PTR, PB_PAR)
_A_FLOAT = (NOM, SC_LHI, SC_LLO, SC_COEF, HS_UP, HS_DN)  # SC_COEF is (n, 6)
_HDR = 1 + 15 + 9  # n_bins, 14 int array offsets + end, 8 float array offsets + end


def model_arrays(**fields) -> tuple:
    """``A`` from its fields by name (:data:`A_FIELDS`; arrays converted to int64 / float64,
    ``sc_coef`` reshaped to ``(n, 6)``). ``TypeError`` names a missing or unknown field."""
    missing = [f for f in A_FIELDS if f not in fields]
    unknown = [f for f in fields if f not in A_FIELDS]
    if missing or unknown:
        raise TypeError(f"model_arrays: missing fields {missing}, unknown fields {unknown}")
    out = []
    for k, name in enumerate(A_FIELDS):
        if k == N_BINS:
            out.append(np.int64(fields[name]))
        else:
            a = np.asarray(fields[name], np.float64 if k in _A_FLOAT else np.int64)
            out.append(a.reshape(-1, 6) if k == SC_COEF else a)
    return tuple(out)


def aux_arrays(aux_par, aux_kind, aux_sigma, aux_tau) -> tuple:
    """``AUX`` from its fields (int64, int64, float64, float64)."""
    return (np.asarray(aux_par, np.int64), np.asarray(aux_kind, np.int64), np.asarray(aux_sigma, np.float64),
            np.asarray(aux_tau, np.float64))


ModelFields = namedtuple("ModelFields", A_FIELDS)
"""``A``'s fields by name, for Python code (kernels take the plain tuple)."""


class ModelArrays(NamedTuple):
    """A model's two array tuples under the names :class:`nextstat.model.Model` gives them: what
    the compiled :class:`~nextstat.engine.fitter.Fitter` methods read of a model, for arrays that
    are not a model's own (the torch session's fits of replaced histograms)."""

    arrays: tuple
    aux_arrays: tuple


def named(A) -> ModelFields:
    """``A`` as a :data:`ModelFields` (``named(A).nom``; ``._asdict()`` for :func:`model_arrays`)."""
    return ModelFields(*A)


@kernel
def with_nominal(A, nom, hs_up, hs_dn):
    """``A`` with the fields ``NOM``, ``HS_UP`` and ``HS_DN`` replaced (the torch layer's
    histograms in place of the workspace's)."""
    return (A[BLK_B0], A[BLK_NB], A[BLK_OFF], nom, A[SC_PTR], A[SC_PAR], A[SC_KIND], A[SC_LHI], A[SC_LLO],
            A[SC_COEF], A[HS_PTR], A[HS_PAR], A[HS_CODE], A[HS_DOFF], hs_up, hs_dn, A[PB_PTR], A[PB_PAR],
            A[N_BINS])


@kernel
def flat_layout(A):
    """``A`` with every flat (per-block) bin as its own main bin: rates and Jacobians of these
    arrays are per block bin (``blk_b0 = blk_off``, ``n_bins`` = number of flat bins)."""
    return (A[BLK_OFF], A[BLK_NB], A[BLK_OFF], A[NOM], A[SC_PTR], A[SC_PAR], A[SC_KIND], A[SC_LHI], A[SC_LLO],
            A[SC_COEF], A[HS_PTR], A[HS_PAR], A[HS_CODE], A[HS_DOFF], A[HS_UP], A[HS_DN], A[PB_PTR],
            A[PB_PAR], np.int64(A[NOM].shape[0]))


def pack(A, AUX):
    """The model arrays ``A`` and ``AUX`` as two flat buffers ``(FB float64, IB int64)``.

    Passing two arrays instead of 23 makes a compiled call about 3 us cheaper, which is most of
    a small model's fit. :func:`unpack` restores the tuples (views, no copies) in compiled code.
    """
    ints = [np.asarray(A[k], np.int64).ravel() for k in _A_INT] + [np.asarray(AUX[k], np.int64)
                                                                   for k in (AUX_PAR, AUX_KIND)]
    floats = [np.asarray(A[k], np.float64).ravel() for k in _A_FLOAT] + [np.asarray(AUX[k], np.float64)
                                                                       for k in (AUX_SIGMA, AUX_TAU)]
    io = _HDR + np.concatenate([[0], np.cumsum([len(x) for x in ints])])
    fo = np.concatenate([[0], np.cumsum([len(x) for x in floats])])
    IB = np.concatenate([[int(A[N_BINS])], io, fo, *ints]).astype(np.int64)
    FB = np.concatenate(floats).astype(np.float64) if floats else np.zeros(0)
    return np.ascontiguousarray(FB), np.ascontiguousarray(IB)


@kernel
def unpack(FB, IB):
    """``(A, AUX)`` from :func:`pack`'s buffers (views)."""
    i = IB[1:16]
    f = IB[16:25]
    A = (IB[i[0]:i[1]], IB[i[1]:i[2]], IB[i[2]:i[3]], FB[f[0]:f[1]],
         IB[i[3]:i[4]], IB[i[4]:i[5]], IB[i[5]:i[6]],
         FB[f[1]:f[2]], FB[f[2]:f[3]], FB[f[3]:f[4]].reshape(-1, 6),
         IB[i[6]:i[7]], IB[i[7]:i[8]], IB[i[8]:i[9]], IB[i[9]:i[10]], FB[f[4]:f[5]], FB[f[5]:f[6]],
         IB[i[10]:i[11]], IB[i[11]:i[12]], IB[0])
    AUX = (IB[i[12]:i[13]], IB[i[13]:i[14]], FB[f[6]:f[7]], FB[f[7]:f[8]])
    return A, AUX
