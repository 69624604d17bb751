"""Batched small-matrix linear algebra on arrays (n, d, d), with a scalar path for d = 1.

numpy's batched ``cholesky``, ``solve`` and ``inv`` cost about as much per matrix for
d = 1 as for small d > 1; the memory screen and the Cochrane-Orcutt rounds call them on
every window, and with one slow variable a square root and a division do the same work
several times faster.
"""

from __future__ import annotations

import numpy as np


def cholesky(s: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of symmetric positive definite matrices s (..., d, d)."""
    if s.shape[-1] == 1:  # as numpy: an entry <= 0 raises, NaN passes through
        if np.any(s <= 0):
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        return np.sqrt(s)
    return np.linalg.cholesky(s)


def solve_lower(chol: np.ndarray, r: np.ndarray) -> np.ndarray:
    """L^-1 r for lower-triangular factors L (..., d, d) and vectors r (..., d)."""
    if chol.shape[-1] == 1:
        return r / chol[..., 0]
    return np.linalg.solve(chol, r[..., None])[..., 0]


def inv(a: np.ndarray) -> np.ndarray:
    """Inverses of square matrices a (..., d, d)."""
    if a.shape[-1] == 1:
        return 1.0 / a
    return np.linalg.inv(a)
