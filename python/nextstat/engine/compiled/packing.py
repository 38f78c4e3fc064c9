"""The model arrays ``A`` and ``AUX`` as two flat buffers for cheap compiled calls, and back."""

from __future__ import annotations

import numpy as np

from nextstat.engine.jit import kernel


# ------------------------------------------------------------------------------ packing
_A_INT = (0, 1, 2, 4, 5, 6, 10, 11, 12, 13, 16, 17)  # int64 arrays of A
_A_FLOAT = (3, 7, 8, 9, 14, 15)  # float64 arrays of A (9: sc_coef, (n, 6))
_HDR = 1 + 15 + 9  # n_bins, 14 int array offsets + end, 8 float array offsets + end


def pack(A, AUX):
    """The model arrays ``A`` and ``AUX`` as two flat buffers ``(FB float64, IB int64)``.

    Passing two arrays instead of 23 makes a compiled call about 3 us cheaper, which is most of
    a small model's fit. :func:`unpack` restores the tuples (views, no copies) in compiled code.
    """
    ints = [np.asarray(A[k], np.int64).ravel() for k in _A_INT] + [np.asarray(AUX[k], np.int64) for k in (0, 1)]
    floats = [np.asarray(A[k], np.float64).ravel() for k in _A_FLOAT] + [np.asarray(AUX[k], np.float64)
                                                                       for k in (2, 3)]
    io = _HDR + np.concatenate([[0], np.cumsum([len(x) for x in ints])])
    fo = np.concatenate([[0], np.cumsum([len(x) for x in floats])])
    IB = np.concatenate([[int(A[18])], io, fo, *ints]).astype(np.int64)
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
