"""cconv.explain on the 1-d, 3-d and adaptive ops: the plans of the 2-d calls they make."""
import numpy as np
import pytest

import cconv

KEYS = {"algorithm", "isa", "threads", "workspace_bytes", "reason"}
rng = np.random.default_rng(0)
X1 = rng.standard_normal((4, 16, 100)).astype(np.float32)
W1 = rng.standard_normal((32, 16, 5)).astype(np.float32)
X3 = rng.standard_normal((2, 8, 6, 10, 10)).astype(np.float32)
W3 = rng.standard_normal((16, 8, 3, 3, 3)).astype(np.float32)
WT3 = rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
I3 = np.zeros((2, 8, 3, 5, 5), np.int64)

CASES = [  # (op, args, kwargs, passes)
    ("conv1d", (X1, W1), {"padding": 2}, {"forward"}),
    ("conv1d_backward", (np.zeros((4, 32, 100), np.float32), X1, W1), {"padding": 2},
     {"grad_input", "grad_weight", "grad_bias"}),
    ("conv3d", (X3, W3), {"padding": 1}, {"forward"}),
    ("conv3d_backward", (np.zeros((2, 16, 6, 10, 10), np.float32), X3, W3), {"padding": 1,
                                                                            "output_mask": (False, True, False)},
     {"grad_weight"}),
    ("conv_transpose1d", (X1, np.zeros((16, 8, 3), np.float32)), {"stride": 2}, {"forward"}),
    ("conv_transpose3d", (X3, WT3), {"stride": 2}, {"forward"}),
    ("max_pool1d", (X1, 3), {"stride": 2}, {"forward"}),
    ("max_pool1d_backward", (np.zeros((4, 16, 49), np.float32), np.zeros((4, 16, 49), np.int64), X1.shape), {},
     {"grad_input"}),
    ("max_pool3d", (X3, 2), {}, {"forward"}),
    ("max_pool3d_backward", (I3.astype(np.float32), I3, X3.shape), {}, {"grad_input"}),
    ("avg_pool1d", (X1, 2), {}, {"forward"}),
    ("avg_pool3d_backward", (I3.astype(np.float32), X3.shape, 2), {}, {"grad_input"}),
    ("adaptive_avg_pool2d", (X3[:, :, 0], 1), {}, {"forward"}),
    ("adaptive_avg_pool2d", (X3[:, :, 0], 5), {}, {"forward"}),
    ("adaptive_avg_pool3d", (X3, (None, 3, 3)), {}, {"forward"}),
    ("adaptive_max_pool1d", (X1, 10), {}, {"forward"}),
    ("adaptive_max_pool3d_backward", (I3.astype(np.float32), I3, X3.shape), {}, {"grad_input"}),
    ("conv3d", (X3.astype(np.float16), W3.astype(np.float16)), {}, {"forward"}),
]


@pytest.mark.parametrize("op, args, kwargs, passes", CASES, ids=[c[0] for c in CASES])
def test_every_nd_op_explains_its_passes(op, args, kwargs, passes):
    plan = cconv.explain(op, *args, **kwargs)
    assert set(plan) == passes
    for entry in plan.values():
        assert KEYS <= set(entry)
        assert entry["reason"].startswith(op)
        assert entry["threads"] >= 1 and entry["workspace_bytes"] >= 0


def test_conv3d_names_the_2d_call_and_its_algorithm():
    # two output channels: the planner folds the depth taps into a conv2d (no volume algorithm)
    plan = cconv.explain("conv3d", X3, W3[:2], padding=1, backend="cython")["forward"]
    assert plan["runs_as"].startswith("conv2d on ")
    assert plan["algorithm"] in cconv.backend_info()["conv_algorithms"]
    assert cconv.explain("conv3d", X3, W3, padding=1, backend="numpy")["forward"]["algorithm"] == "reference"


def test_uneven_adaptive_bins_name_the_compiled_bin_kernels():
    for op, args, pass_name, algorithm in (
            ("adaptive_avg_pool1d", (X1, 7), "forward", "adaptive_avg_bins"),
            ("adaptive_max_pool3d", (X3, (4, 3, 7)), "forward", "adaptive_max_bins"),
            ("adaptive_avg_pool2d_backward", (np.zeros((4, 16, 3, 7), np.float32), (4, 16, 10, 10)), "grad_input",
             "adaptive_avg_spread")):
        plan = cconv.explain(op, *args, backend="cython")[pass_name]
        assert plan["algorithm"] == algorithm and plan["algorithm"] in cconv.backend_info()["pool_algorithms"]
    plan = cconv.explain("adaptive_avg_pool1d", X1, 7, backend="numpy")["forward"]
    assert plan["algorithm"] == "adaptive-bins" and plan["isa"] == "numpy"


def test_max_pool3d_runs_one_compiled_kernel():
    plan = cconv.explain("max_pool3d", X3, 3, 2, 1, backend="cython")["forward"]
    assert plan["algorithm"] == "max_rows" and "runs_as" not in plan
    assert cconv.explain("max_pool3d", X3, 2, backend="numpy")["forward"]["runs_as"].startswith("max_pool2d on ")


def _generic_calls():
    """Every 1-d, 3-d and adaptive op with small valid arguments: (op, args, kwargs)."""
    calls = []
    for dims in (1, 2, 3):
        x = np.zeros((2, 4) + (6,) * dims, np.float32)
        w = np.zeros((4, 4) + (3,) * dims, np.float32)
        small = np.zeros((2, 4) + (3,) * dims, np.float32)
        idx = np.zeros(small.shape, np.int64)
        if dims != 2:
            for conv in (f"conv{dims}d", f"conv_transpose{dims}d"):
                calls += [(conv, (x, w), {"padding": 1}), (conv + "_backward", (x, x, w), {"padding": 1})]
            calls += [(f"max_pool{dims}d", (x, 2), {}), (f"max_pool{dims}d_backward", (small, idx, x.shape), {}),
                      (f"avg_pool{dims}d", (x, 2), {}), (f"avg_pool{dims}d_backward", (small, x.shape, 2), {})]
        calls += [(f"adaptive_avg_pool{dims}d", (x, 3), {}), (f"adaptive_avg_pool{dims}d_backward", (small, x.shape), {}),
                  (f"adaptive_max_pool{dims}d", (x, 3), {}),
                  (f"adaptive_max_pool{dims}d_backward", (small, idx, x.shape), {})]
    return calls


def test_every_public_op_has_an_explanation():
    ops = {name for name in cconv.__all__ if "pool" in name or name.startswith("conv")}
    calls = _generic_calls()
    assert ops - {op for op, _, _ in calls} == {
        "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "max_pool2d",
        "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"}   # the plan layer's own tests
    for op, args, kwargs in calls:
        plan = cconv.explain(op, *args, **kwargs)
        assert plan and all(KEYS <= set(entry) for entry in plan.values()), op


def test_half_arrays_are_planned_as_float32_and_explain_is_not_an_op():
    x, w = X3[:, :, 0].astype(np.float16), np.zeros((16, 8, 3, 3), np.float16)
    assert cconv.explain("conv2d", x, w) == cconv.explain("conv2d", x.astype(np.float32), w.astype(np.float32))
    with pytest.raises(ValueError, match="unknown op"):
        cconv.explain("explain")
