"""Adaptive average pooling keeps an Inf or NaN inside the bins that hold it (as PyTorch does),
forward and backward, on bins that do not divide the input evenly (the path that is not an
ordinary pool). Checked against the direct N-d reference, which averages each bin on its own."""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import _reference_nd as reference


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_a_non_finite_value_stays_in_its_bins(dims, value):
    rng = np.random.default_rng(dims)
    shape = (2, 3) + (7, 5, 6)[:dims]
    out = (3, 4, 4)[:dims]  # uneven: 7 -> 3, 5 -> 4, 6 -> 4
    x = rng.standard_normal(shape)
    x[(1, 2) + (0,) * dims] = value
    y = getattr(cconv, f"adaptive_avg_pool{dims}d")(x, out)
    expected = reference.adaptive_avg_pool(x, out)
    np.testing.assert_allclose(y, expected, rtol=1e-12)  # NaN/Inf in the same places, the rest close
    assert np.isfinite(y).sum() == y.size - 1  # only the first bin of that plane holds the value

    gy = rng.standard_normal(y.shape)
    gy[(0, 1) + (1,) * dims] = value
    grad = getattr(cconv, f"adaptive_avg_pool{dims}d_backward")(gy, shape)
    np.testing.assert_allclose(grad, reference.adaptive_avg_pool_backward(gy, shape), rtol=1e-12)
    assert 0 < np.sum(~np.isfinite(grad)) < grad[0, 1].size  # only that bin's inputs
