"""SciPy's gammaln, BLAS dsyrk and LAPACK dpotrf/dpotri bound into compiled code by symbol name (so
kernels stay cacheable), and the raw-pointer wrappers that keep their buffers alive across the call.
SciPy's OpenBLAS threads: :func:`nextstat.engine.threads.pin_scipy_blas`.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import types

from nextstat.engine.jit import kernel
from nextstat.engine.scipy_capi import address


# scipy.special.gammaln, bound into compiled code by symbol name (so kernels stay cacheable):
# the function pyhf uses, so that terms such as gammaln(1.9e11) in shapesys constraints of
# published workspaces (about 5e12, where one ulp is 1e-3) round exactly as in pyhf.
llvm.add_symbol("nextstat_scipy_gammaln",
                address("scipy.special.cython_special", "gammaln"))
_gammaln = types.ExternalFunction("nextstat_scipy_gammaln", types.float64(types.float64))


# LAPACK's SPD inverse (dpotrf + dpotri) from SciPy, bound by symbol name as gammaln above;
# Fortran int32 arguments are passed by address (int64 values: the x86-64 / aarch64 ABIs pass
# pointers and 64-bit integers alike).
for _name in ("dpotrf", "dpotri"):
    llvm.add_symbol(f"nextstat_{_name}", address("scipy.linalg.cython_lapack", _name))


_I = types.intp
_dpotrf = types.ExternalFunction("nextstat_dpotrf", types.void(_I, _I, _I, _I, _I))
_dpotri = types.ExternalFunction("nextstat_dpotri", types.void(_I, _I, _I, _I, _I))


# BLAS dsyrk (C := alpha A A^T + beta C, one triangle) for the Gauss-Newton Gram matrix
llvm.add_symbol("nextstat_dsyrk", address("scipy.linalg.cython_blas", "dsyrk"))
_dsyrk = types.ExternalFunction("nextstat_dsyrk", types.void(_I, _I, _I, _I, _I, _I, _I, _I, _I, _I))


# Raw-pointer calls and buffer lifetime. Numba frees a local array right after its last use in
# the code, and taking ``x.ctypes.data`` is such a use: an array whose address is passed to
# BLAS/LAPACK but that is not used after the call may be freed (and its memory reused) while
# the routine still reads it. So every buffer of a raw call is either an argument of the small
# wrapper below (the caller holds it until the wrapper returns) or is read after the call
# (``_after``), which keeps it alive until then. Never pass ``x[k:].ctypes.data`` of a
# temporary view; offset the parent's address instead.


@kernel
def _after(chars, ints, reals):
    """A value read from each argument after a raw call: keeps these buffers alive through
    the call (see above). Returns ints[-1] (the routine's ``info`` where it has one)."""
    if chars[0] == 0 or not np.isfinite(reals[0]):
        return -1
    return ints[ints.shape[0] - 1]


@kernel
def _syrk_lower(Jw, H):
    """Lower triangle of ``H = Jw^T Jw`` (BLAS ``dsyrk``) for C-order ``Jw`` (B, P) and
    ``H`` (P, P); H's strict upper triangle is left as it was. Fortran sees Jw as Jw^T
    (P x B, ld P) and H as H^T, whose upper triangle is H's lower one."""
    B, P = Jw.shape
    chars = np.array([85, 78], dtype=np.uint8)  # "U", "N"
    ints = np.array([P, B, 0], dtype=np.int32)  # N, K (also LDA, LDC = N)
    reals = np.array([1.0, 0.0])  # alpha, beta
    c, i, r = chars.ctypes.data, ints.ctypes.data, reals.ctypes.data
    _dsyrk(c, c + 1, i, i + 4, r, Jw.ctypes.data, i, r + 8, H.ctypes.data, i)
    _after(chars, ints, reals)


@kernel
def _lapack_spd(routine, a):
    """LAPACK ``dpotrf`` (routine 0) or ``dpotri`` (1) with UPLO "U" on the C-order square
    matrix ``a`` in place: Fortran's upper triangle is C's lower one. Returns LAPACK's info
    (0: success; > 0: not positive definite)."""
    n = a.shape[0]
    chars = np.array([85], dtype=np.uint8)  # "U"
    ints = np.array([n, 0], dtype=np.int32)  # N (also LDA), INFO
    reals = np.zeros(1)
    c, i = chars.ctypes.data, ints.ctypes.data
    if routine == 0:
        _dpotrf(c, i, a.ctypes.data, i, i + 4)
    else:
        _dpotri(c, i, a.ctypes.data, i, i + 4)
    return _after(chars, ints, reals)


@kernel
def _potrf(a):
    """In-place lower Cholesky factor (C order) of the symmetric matrix in ``a``'s lower
    triangle (LAPACK ``dpotrf``); returns info."""
    return _lapack_spd(0, a)


@kernel
def _potri(a):
    """In-place inverse from the lower Cholesky factor in ``a`` (LAPACK ``dpotri``); the
    result is in the lower triangle. Returns info."""
    return _lapack_spd(1, a)
