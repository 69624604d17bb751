"""The custom triangular affine transform of the increment parametrization, checked like
zuko checks its transforms: inverse, log-determinant against autograd's Jacobian, shapes."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from slowflow.model.flowmap import TriangularAffine


def _transform(d: int, batch: int, seed: int = 0) -> TriangularAffine:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, d, generator=g, dtype=torch.float64)
    diag = torch.rand(batch, d, generator=g, dtype=torch.float64) + 0.2
    if d == 1:
        return TriangularAffine(loc, None, diag)
    tril = torch.tril(torch.randn(batch, d, d, generator=g, dtype=torch.float64), -1)
    tril = tril + torch.diag_embed(diag)
    return TriangularAffine(loc, tril, diag)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_inverse_undoes_the_transform(d):
    t = _transform(d, 7)
    u = torch.randn(7, d, dtype=torch.float64)
    y = t(u)
    assert y.shape == (7, d)
    torch.testing.assert_close(t.inv(y), u, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t(t.inv(y)), y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_log_determinant_equals_autograds(d):
    """log |det dy/du| per batch element equals the log-determinant of the Jacobian that
    autograd computes (float64, 1e-10), and the inverse's is its negative."""
    t = _transform(d, 4, seed=1)
    u = torch.randn(4, d, dtype=torch.float64)
    ladj = t.log_abs_det_jacobian(u, t(u))
    assert ladj.shape == (4,)
    for i in range(4):
        single = _transform(d, 4, seed=1)

        def f(v, i=i, single=single):
            return single(v.expand(4, d))[i]

        jac = jacobian(f, u[i : i + 1].clone()).reshape(d, d)
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], rtol=1e-10, atol=1e-10)
    y = t(u)
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(y, u), -ladj, rtol=1e-12, atol=1e-12)


def test_batch_shape_broadcasts_over_leading_dimensions():
    t = _transform(3, 6)
    u = torch.randn(6, 3, dtype=torch.float64)
    assert t(u).shape == (6, 3) and t.log_abs_det_jacobian(u, t(u)).shape == (6,)
