"""The scalar path of the batched linear algebra gives numpy's results."""

from __future__ import annotations

import numpy as np
import pytest

from slowflow.model import batched


@pytest.mark.parametrize("d", [1, 2, 3])
def test_batched_helpers_match_numpy(d):
    rng = np.random.default_rng(d)
    a = rng.standard_normal((50, d, d))
    s = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    r = rng.standard_normal((50, d))
    chol = batched.cholesky(s)
    np.testing.assert_allclose(chol, np.linalg.cholesky(s), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        batched.solve_lower(chol, r), np.linalg.solve(chol, r[..., None])[..., 0], rtol=1e-10
    )
    np.testing.assert_allclose(batched.inv(chol), np.linalg.inv(chol), rtol=1e-10)


def test_scalar_cholesky_refuses_what_numpy_refuses():
    for bad in (-1e-3, 0.0):
        s = np.array([[[1.0]], [[bad]]])
        for chol in (batched.cholesky, np.linalg.cholesky):
            with pytest.raises(np.linalg.LinAlgError):
                chol(s)
    nan = np.array([[[np.nan]]])  # numpy passes NaN through; so does the scalar path
    assert np.isnan(batched.cholesky(nan)).all() and np.isnan(np.linalg.cholesky(nan)).all()
