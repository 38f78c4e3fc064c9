"""Small dense linear algebra of the fits: Gram matrices, Cholesky factor and solves, the Gauss-Newton
direction (dense and bin-space), SPD inverse.
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.codes import _SMALL_DENSE
from nextstat.engine.compiled.externals import _potrf, _potri
from nextstat.engine.jit import kernel, leaf


@leaf
def _gram_into(J, w, sel, M):
    """Lower triangle of ``J_s^T diag(w) J_s`` over the columns ``sel`` into the leading
    m x m block of ``M`` (plain loops, for small problems; the upper triangle is not written)."""
    m = sel.shape[0]
    for a in range(m):
        for c in range(a + 1):
            M[a, c] = 0.0
    for b in range(J.shape[0]):
        wb = w[b]
        if wb == 0.0:
            continue
        for a in range(m):
            v = J[b, sel[a]] * wb
            if v != 0.0:
                for c in range(a + 1):
                    M[a, c] += v * J[b, sel[c]]


@kernel
def _gram_lower(J, w, sel):
    """:func:`_gram_into` into a new (m, m) array whose strict upper triangle is 0."""
    m = sel.shape[0]
    M = np.zeros((m, m))
    _gram_into(J, w, sel, M)
    return M


@kernel
def submatrix(H, sel):
    """``H[sel][:, sel]`` as a new C-order array."""
    m = sel.shape[0]
    Hs = np.empty((m, m))
    for a in range(m):
        for b in range(m):
            Hs[a, b] = H[sel[a], sel[b]]
    return Hs


@leaf
def _mask_lower(H, keep):
    """Take the parameters with ``keep[i]`` False out of the system held in H's lower triangle:
    their rows and columns become those of the identity (the solution there is the right-hand
    side, the inverse there is 1), so no smaller copy of H is needed."""
    P = H.shape[0]
    for i in range(P):
        if keep[i]:
            continue
        for j in range(i):
            H[i, j] = 0.0
        for k in range(i + 1, P):
            H[k, i] = 0.0
        H[i, i] = 1.0


@leaf
def _chol_inplace(M, n):
    """Cholesky factor of the leading n x n block of ``M`` in place: reads and overwrites its
    lower triangle (the upper is untouched). Plain loops, for small matrices. Returns ok."""
    for j in range(n):
        s = M[j, j]
        for k in range(j):
            s -= M[j, k] * M[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        M[j, j] = d
        for i in range(j + 1, n):
            t = M[i, j]
            for k in range(j):
                t -= M[i, k] * M[j, k]
            M[i, j] = t / d
    return True


@kernel
def _chol(M):
    """Cholesky factor of a symmetric matrix; (ok, L) with L lower, C order. Plain loops for
    small matrices (a LAPACK call costs more than the arithmetic there), LAPACK otherwise."""
    n = M.shape[0]
    if n == 0:
        return True, M.copy()
    if n <= _SMALL_DENSE:
        L = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1):
                L[i, j] = M[i, j]
        if not _chol_inplace(L, n):
            return False, M
        return True, L
    # LAPACK in place: C-order lower L is Fortran-order upper U = L^T
    L = M.copy()
    if _potrf(L) != 0:
        return False, M
    for i in range(n):
        for j in range(i + 1, n):
            L[i, j] = 0.0
    return True, L


@leaf
def _lower_solve(L, x, n):
    """Solve L y = x in place over the leading n x n block of L (lower triangular, C order)."""
    for i in range(n):
        t = x[i]
        for k in range(i):
            t -= L[i, k] * x[k]
        x[i] = t / L[i, i]


@leaf
def _upper_solve(L, x, n):
    """Solve L^T y = x in place over the leading n x n block of L (lower triangular, C order)."""
    for i in range(n - 1, -1, -1):
        t = x[i]
        for k in range(i + 1, n):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]


@kernel
def _chol_solve(L, rhs):
    """Solve L L^T x = rhs (1-D) for a Cholesky factor L; returns a new array."""
    x = rhs.copy()
    _lower_solve(L, x, L.shape[0])
    _upper_solve(L, x, L.shape[0])
    return x


@kernel
def _gn_dense(J, w, dcon, sel, rhs, ridge):
    """Solve (J_s^T diag(w) J_s + diag(dcon_s) + ridge I) x = rhs over the parameters ``sel``
    with a dense Cholesky (small problems). Returns (ok, x)."""
    m = sel.shape[0]
    M = _gram_lower(J, w, sel)  # _chol reads the lower triangle only
    for a in range(m):
        M[a, a] += dcon[sel[a]] + ridge
    ok, L = _chol(M)
    if not ok:
        return False, rhs.copy()
    return True, _chol_solve(L, rhs)


@leaf
def _row_residual(U, a, c, y):
    """``c - U[a] . y`` (row ``a`` of a 2-D array, no view created)."""
    for b in range(y.shape[0]):
        c -= U[a, b] * y[b]
    return c


@kernel
def _gn_solve(Ut, D, rhs, ridge):
    """Solve (diag(D) + U^T U + ridge I) x = rhs in bin space (Woodbury identity).

    Ut: (m, B) = (sqrt(w) J)^T over the active parameters, C order; D: (m,) >= 0 constraint
    curvature. With c the parameters where D + ridge > 0 and u the others (unconstrained),
    K = I + U_c D_c^-1 U_c^T (B x B) gives M_cc^-1 = D_c^-1 - D_c^-1 U_c^T K^-1 U_c D_c^-1, and
    the Schur complement of the unconstrained block is U_u^T K^-1 U_u (since
    I - U_c M_cc^-1 U_c^T = K^-1). Cost O(m B^2) for K (rows with zeros skipped) plus O(m B) and
    O(u^3): no m x m matrix is formed. Returns (ok, x).
    """
    m, B = Ut.shape
    K = np.zeros((B, B))
    y = np.zeros(B)  # U_c D_c^-1 rhs_c
    uidx = np.empty(m, dtype=np.int64)
    nu = 0
    for a in range(m):
        da = D[a] + ridge
        if not da > 0.0:
            uidx[nu] = a
            nu += 1
            continue
        ra = rhs[a] / da
        for b in range(B):
            ub = Ut[a, b]
            if ub != 0.0:
                y[b] += ub * ra
                v = ub / da
                for c in range(b + 1):
                    K[b, c] += v * Ut[a, c]
    for b in range(B):
        K[b, b] += 1.0
        for c in range(b):
            K[c, b] = K[b, c]
    ok, LK = _chol(K)
    if not ok:
        return False, rhs.copy()
    x = np.empty(m)
    s = y  # U_c D_c^-1 v_c with v_c = rhs_c - U_c^T U_u x_u
    if nu > 0:
        # S = Z^T Z with Z = LK^-1 U_u; ru = rhs_u - Z^T LK^-1 y
        Z = np.empty((nu, B))
        yl = y.copy()
        _lower_solve(LK, yl, B)
        S = np.zeros((nu, nu))
        ru = np.empty(nu)
        for j in range(nu):
            for b in range(B):
                Z[j, b] = Ut[uidx[j], b]
            _lower_solve(LK, Z[j], B)
            ru[j] = _row_residual(Z, j, rhs[uidx[j]], yl)
            for k in range(j + 1):
                v = 0.0
                for b in range(B):
                    v += Z[j, b] * Z[k, b]
                S[j, k] = v
                S[k, j] = v
        okS, LS = _chol(S)
        if not okS:
            return False, rhs.copy()
        xu = _chol_solve(LS, ru)
        z = np.zeros(B)  # U_u x_u
        for j in range(nu):
            x[uidx[j]] = xu[j]
            for b in range(B):
                z[b] += Ut[uidx[j], b] * xu[j]
        s = np.zeros(B)
        for a in range(m):
            da = D[a] + ridge
            if not da > 0.0:
                continue
            v = _row_residual(Ut, a, rhs[a], z)
            x[a] = v  # v_c, finished below
            v /= da
            for b in range(B):
                s[b] += Ut[a, b] * v
    else:
        for a in range(m):
            x[a] = rhs[a]
    t = _chol_solve(LK, s)
    for a in range(m):
        da = D[a] + ridge
        if da > 0.0:
            x[a] = _row_residual(Ut, a, x[a], t) / da
    return True, x


@leaf
def _gn_dense_into(J, w, dcon, sel, gs, ridge, M, x):
    """Solve (J_s^T diag(w) J_s + diag(dcon_s) + ridge I) x = -gs over the parameters ``sel``
    in the caller's buffers (``M`` at least m x m, ``x`` at least m): no allocation, for small
    problems. Returns ok."""
    m = sel.shape[0]
    _gram_into(J, w, sel, M)
    for a in range(m):
        M[a, a] += dcon[sel[a]] + ridge
        x[a] = -gs[a]
    if not _chol_inplace(M, m):
        return False
    _lower_solve(M, x, m)
    _upper_solve(M, x, m)
    return True


@kernel
def _gn_direction(J, w, dcon, sel, gs, ridge0, M, x):
    """Gauss-Newton step over the parameters ``sel`` (gradient ``gs``) with ``ridge0`` added to
    the diagonal (Levenberg-Marquardt damping; 0 for a plain step): in the work buffers ``M``,
    ``x`` where they hold m parameters (small problems; pass 0-size buffers otherwise), else
    dense Cholesky for m <= bins, else in bin space (:func:`_gn_solve`); a growing ridge where
    the matrix is singular. Returns (ok, d)."""
    m = sel.shape[0]
    ridge = ridge0
    if m <= M.shape[0]:
        for _ in range(12):
            if _gn_dense_into(J, w, dcon, sel, gs, ridge, M, x):
                return True, x[:m]
            ridge = 1e-10 if ridge == 0.0 else ridge * 100.0
        return False, x[:m]
    mgs = -gs
    dense = m <= _SMALL_DENSE or m <= J.shape[0]
    if dense:
        Ut = np.empty((0, 0))
        Ds = np.empty(0)
    else:
        B = J.shape[0]
        sw = np.sqrt(w)
        Ut = np.empty((m, B))
        for a in range(m):
            i = sel[a]
            for b in range(B):
                Ut[a, b] = J[b, i] * sw[b]
        Ds = dcon[sel]
    for _ in range(12):
        if dense:
            ok, d = _gn_dense(J, w, dcon, sel, mgs, ridge)
        else:
            ok, d = _gn_solve(Ut, Ds, mgs, ridge)
        if ok:
            return True, d
        ridge = 1e-10 if ridge == 0.0 else ridge * 100.0
    return False, mgs


# ------------------------------------------------------------------------------ Hesse
@kernel
def _spd_inverse_small(a, factored):
    """:func:`_spd_inverse` with plain loops (small matrices, where a LAPACK call costs more
    than the arithmetic): X = L^-1 by forward substitution, then a = X^T X."""
    n = a.shape[0]
    if factored:
        L = a
    else:
        ok, L = _chol(a)
        if not ok:
            return False
    X = np.zeros((n, n))
    for j in range(n):
        X[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, n):
            t = 0.0
            for k in range(j, i):
                t -= L[i, k] * X[k, j]
            X[i, j] = t / L[i, i]
    for i in range(n):
        for j in range(i + 1):
            t = 0.0
            for k in range(i, n):
                t += X[k, i] * X[k, j]
            a[i, j] = t
            a[j, i] = t
    return True


@kernel
def _spd_inverse(a, factored):
    """Inverse of a symmetric positive-definite matrix, in place in ``a`` (C order).

    ``factored``: ``a`` already holds the lower Cholesky factor L (C order) of the matrix, else
    ``a`` holds the (symmetric) matrix itself. Returns False where LAPACK finds it not positive
    definite (``a`` is then garbage)."""
    n = a.shape[0]
    if n == 0:
        return True
    if n <= _SMALL_DENSE:
        return _spd_inverse_small(a, factored)
    if not factored and _potrf(a) != 0:
        return False
    if _potri(a) != 0:
        return False
    # the result is in Fortran's upper = C's lower triangle
    for i in range(n):
        for j in range(i + 1, n):
            a[i, j] = a[j, i]
    return True
