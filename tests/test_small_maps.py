"""Layers whose output has only a few pixels per image, on a large batch (a 2x2 map under a
2x2 stride-2 kernel is a plain GEMM over the batch): the GEMM-class algorithms take their
columns (forward, input gradient) or depth (weight gradient) across images instead of running
a matrix-vector product per image."""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close

pytestmark = pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                                reason="plans exist in the compiled backend only")

CASES = [  # x shape, w shape, kwargs
    ((24, 40, 4, 4), (36, 40, 2, 2), dict(stride=2)),
    ((41, 24, 3, 3), (20, 12, 3, 3), dict(stride=2, groups=2)),
    ((9, 16, 5, 4), (12, 16, 3, 2), dict(stride=(3, 2), padding=(1, 0))),
    ((30, 20, 1, 1), (24, 20, 1, 1), dict(stride=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[str(c[0]) for c in CASES])
def test_few_pixels_per_image(case, dtype):
    x_shape, w_shape, kwargs = case
    rng = np.random.default_rng(len(x_shape) + x_shape[0])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y = cconv.conv2d(x, w, **kwargs)
    assert_close(y, cconv.conv2d(x, w, **kwargs, backend=REFERENCE), context=f"forward {case}")
    gy = rng.standard_normal(y.shape).astype(dtype)
    saved = cconv.get_num_threads()
    try:
        cconv.set_num_threads(1)
        plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
        got = cconv.conv2d_backward(gy, x, w, **kwargs)
    finally:
        cconv.set_num_threads(saved)
    assert plan["grad_input"]["algorithm"] == "col2im" and plan["grad_input"]["images_per_task"] > 1, plan
    ref = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
        assert_close(a, e, context=f"{name} {case}")


def test_whole_map_kernel_is_one_gemm():
    """The kernel covers the whole 2x2 map: the forward packs im2col blocks across images
    rather than a padded grid per image (one real column of 8 or 16 per GEMM)."""
    x = np.zeros((64, 96, 2, 2))
    w = np.zeros((48, 96, 2, 2))
    assert cconv.explain("conv2d", x, w, stride=2)["forward"]["algorithm"] == "im2col"
