"""cconv.torch beyond 2-d: the 1-d/3-d convolutions and pools, the adaptive pools (1-, 2- and 3-d),
float16/bfloat16 tensors, and convert()/revert() of models holding every convertible layer type.

Skipped where PyTorch is not installed. Each op is checked against torch.nn.functional (values,
indices) and by torch.autograd.gradcheck in float64 on random geometries; spies on cconv's public
functions prove that cconv ran, forward and backward, on the tensors' own memory.
"""
from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import cconv.torch as ct  # noqa: E402
from conftest import address, spy_on  # noqa: E402

# spatial sizes per dimension count: small enough for gradcheck's numerical Jacobians
_SIZES = {1: (9,), 2: (6, 5), 3: (4, 3, 4)}


def _leaf(rng, shape, dtype=torch.float64):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype).requires_grad_()


def _per_dim(rng, low, high, dims):
    """An int or a tuple of ``dims`` ints in [low, high]."""
    if rng.random() < 0.5:
        return int(rng.integers(low, high + 1))
    return tuple(int(v) for v in rng.integers(low, high + 1, size=dims))


def _input(rng, channels, dims, unbatched=False):
    return _leaf(rng, ((channels,) if unbatched else (2, channels)) + _SIZES[dims])


def _check_op(name, x, args, kwargs=None, params=()):
    """``cconv.torch.<name>`` against ``F.<name>`` (values; indices exactly), then gradcheck over
    ``x`` and ``params``. A geometry torch refuses must be refused by cconv too (ValueError)."""
    kwargs = kwargs or {}
    ours, theirs = getattr(ct, name), getattr(F, name)
    try:
        expected = theirs(x, *params, *args, **kwargs)
    except RuntimeError:
        with pytest.raises(ValueError):
            ours(x, *params, *args, **kwargs)
        return False
    got = ours(x, *params, *args, **kwargs)
    if isinstance(expected, tuple):
        assert torch.equal(got[1], expected[1]) and got[1].dtype == torch.int64 and not got[1].requires_grad
        got, expected = got[0], expected[0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    inputs = (x, *(p for p in params if p is not None))

    def fn(x, *rest):
        it = iter(rest)
        full = [None if p is None else next(it) for p in params]
        out = ours(x, *full, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    assert torch.autograd.gradcheck(fn, inputs), (name, args, kwargs)
    return True


# --------------------------------------------------------------------------
# every op: values, indices, gradcheck on random geometries
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("seed", range(2))
def test_conv_matches_torch_and_passes_gradcheck(dims, seed):
    rng = np.random.default_rng(1000 * dims + seed)
    for _ in range(3):
        groups = int(rng.choice([1, 2]))
        c, o = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        stride = _per_dim(rng, 1, 2, dims)
        padding = (["same", "valid"][int(rng.integers(0, 2))] if stride == 1 and rng.random() < 0.4
                   else _per_dim(rng, 0, 1, dims))
        x = _input(rng, c, dims, unbatched=rng.random() < 0.2)
        w = _leaf(rng, (o, c // groups) + tuple(int(k) for k in rng.integers(1, 4, size=dims)))
        b = _leaf(rng, (o,)) if rng.random() < 0.7 else None
        _check_op(f"conv{dims}d", x, (stride, padding, _per_dim(rng, 1, 2, dims), groups), params=(w, b))


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("seed", range(2))
def test_conv_transpose_matches_torch_and_passes_gradcheck(dims, seed):
    rng = np.random.default_rng(2000 * dims + seed)
    for _ in range(3):
        groups = int(rng.choice([1, 2]))
        c, o = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        output_padding = int(rng.integers(0, max(stride, dilation)))
        x = _leaf(rng, (2, c) + tuple(int(n) for n in rng.integers(2, 6 - dims, size=dims)))
        w = _leaf(rng, (c, o // groups) + tuple(int(k) for k in rng.integers(1, 4, size=dims)))
        b = _leaf(rng, (o,)) if rng.random() < 0.7 else None
        _check_op(f"conv_transpose{dims}d", x, (stride, _per_dim(rng, 0, 1, dims), output_padding, groups, dilation),
                  params=(w, b))


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("seed", range(2))
def test_max_pool_matches_torch_and_passes_gradcheck(dims, seed):
    rng = np.random.default_rng(3000 * dims + seed)
    checked = 0
    for _ in range(4):
        k = tuple(int(v) for v in rng.integers(1, 4, size=dims))
        stride = None if rng.random() < 0.3 else _per_dim(rng, 1, 2, dims)
        padding = tuple(int(rng.integers(0, v // 2 + 1)) for v in k)
        args = (k, stride, padding, _per_dim(rng, 1, 2, dims), bool(rng.random() < 0.5))
        checked += _check_op(f"max_pool{dims}d", _input(rng, 2, dims), args, {"return_indices": True})
    assert checked  # not every geometry was one torch refuses


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("seed", range(2))
def test_avg_pool_matches_torch_and_passes_gradcheck(dims, seed):
    rng = np.random.default_rng(4000 * dims + seed)
    for _ in range(4):
        k = tuple(int(v) for v in rng.integers(1, 4, size=dims))
        stride = None if rng.random() < 0.3 else _per_dim(rng, 1, 2, dims)
        padding = tuple(int(rng.integers(0, v // 2 + 1)) for v in k)
        args = (k, stride, padding, bool(rng.random() < 0.5), bool(rng.random() < 0.5))
        if dims == 3:  # torch's avg_pool1d has no divisor_override
            args += (int(rng.integers(1, 5)) if rng.random() < 0.3 else None,)
        _check_op(f"avg_pool{dims}d", _input(rng, 2, dims, unbatched=rng.random() < 0.2), args)


def _output_size(rng, dims, sizes):
    """An int, or a tuple mixing ints (smaller, equal or larger than the input) and None (torch's
    1-d adaptive pools take an int only)."""
    if dims == 1 or rng.random() < 0.3:
        return int(rng.integers(1, min(sizes) + 2))
    return tuple(None if rng.random() < 0.25 else int(rng.integers(1, n + 2)) for n in sizes)


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_adaptive_pool_matches_torch_and_passes_gradcheck(kind, dims):
    rng = np.random.default_rng(5000 + 10 * dims + (kind == "max"))
    for _ in range(4):
        x = _input(rng, 2, dims, unbatched=rng.random() < 0.2)
        kwargs = {"return_indices": True} if kind == "max" else {}
        _check_op(f"adaptive_{kind}_pool{dims}d", x, (_output_size(rng, dims, _SIZES[dims]),), kwargs)


def test_float32_matches_torch():
    rng = np.random.default_rng(8)
    x1 = torch.from_numpy(rng.standard_normal((2, 4, 20), dtype=np.float32))
    x3 = torch.from_numpy(rng.standard_normal((2, 4, 6, 7, 5), dtype=np.float32))
    w3 = torch.from_numpy(rng.standard_normal((6, 4, 3, 3, 3), dtype=np.float32))
    torch.testing.assert_close(ct.conv3d(x3, w3, padding=1), F.conv3d(x3, w3, padding=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ct.conv1d(x1, w3[:, :, 0, 0]), F.conv1d(x1, w3[:, :, 0, 0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ct.avg_pool3d(x3, 3, 2, 1), F.avg_pool3d(x3, 3, 2, 1))
    torch.testing.assert_close(ct.adaptive_avg_pool3d(x3, (2, 3, None)), F.adaptive_avg_pool3d(x3, (2, 3, None)))
    assert torch.equal(ct.max_pool1d(x1, 3), F.max_pool1d(x1, 3))
    assert torch.equal(ct.adaptive_max_pool2d(x1, 3), F.adaptive_max_pool2d(x1, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_tensors_compute_in_float32_and_keep_their_dtype(dtype):
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(9)
    x = _leaf(rng, (2, 4, 5, 6, 5), dtype)
    w = _leaf(rng, (3, 4, 2, 2, 2), dtype)
    y = ct.conv3d(x, w, padding=1)
    assert y.dtype == dtype
    # against torch in float32 from the same half values, rounded once to the half dtype
    expected = F.conv3d(x.float(), w.float(), padding=1)
    torch.testing.assert_close(y.float(), expected.to(dtype).float(), rtol=2e-2, atol=2e-2)
    y.sum().backward()
    assert x.grad.dtype == dtype and w.grad.dtype == dtype
    gx = torch.autograd.grad(F.conv3d(x.float(), w.float(), padding=1).sum(), x)[0]
    torch.testing.assert_close(x.grad.float(), gx.to(dtype).float(), rtol=2e-2, atol=5e-2)
    out, indices = ct.adaptive_max_pool1d(x[0, 0, 0].detach(), 3, return_indices=True)
    expected_out, expected_indices = F.adaptive_max_pool1d(x[0, 0, 0].detach(), 3, return_indices=True)
    assert out.dtype == dtype and torch.equal(out, expected_out) and torch.equal(indices, expected_indices)


def test_bfloat16_without_ml_dtypes_names_the_extra(monkeypatch):
    import cconv._torch_functional as functional

    monkeypatch.setattr(functional, "_bfloat16", lambda: None)
    with pytest.raises(TypeError, match="ml_dtypes"):
        ct.max_pool1d(torch.ones(1, 2, 4, dtype=torch.bfloat16), 2)


# --------------------------------------------------------------------------
# registration, zero copy, cconv really runs (forward and backward)
# --------------------------------------------------------------------------

def _example(name, make):
    """Positional arguments of ``torch.ops.cconv.<name>`` for a small valid call."""
    dims = int(name[-2])
    spatial = _SIZES[dims]
    x = make((2, 4) + spatial)
    one, two = [1] * dims, [2] * dims
    if name.startswith("conv_transpose"):
        return x, make((4, 3) + (2,) * dims), make((6,)), two, [0] * dims, one, 2, one
    if name.startswith("conv"):
        return x, make((6, 2) + (3,) * dims), make((6,)), one, one, one, 2, False
    if name.startswith("max_pool"):
        return x, two, two, one, one, True
    if name.startswith("avg_pool"):
        return (x, [3] * dims, two, one, False, False) + ((None,) if dims > 1 else ())
    return x, [3] + [2] * (dims - 1)  # adaptive: 3 does not divide the sizes evenly, 2 may


_NEW_OPS = [f"{op}{d}d" for d in (1, 3) for op in ("conv", "conv_transpose", "max_pool", "avg_pool")] + \
           [f"adaptive_{k}_pool{d}d" for k in ("avg", "max") for d in (1, 2, 3)]


@pytest.mark.parametrize("name", _NEW_OPS)
def test_custom_op_registration_passes_opcheck(name):
    """torch's own check of a custom op: schema, fake implementation, autograd registration."""
    rng = np.random.default_rng(12)
    inputs = _example(name, lambda shape: torch.from_numpy(rng.standard_normal(shape)).requires_grad_())
    torch.library.opcheck(getattr(torch.ops.cconv, name).default, inputs,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("name", _NEW_OPS)
def test_forward_and_backward_run_cconv_on_the_tensors_memory(monkeypatch, name):
    forward, backward = spy_on(monkeypatch, name), spy_on(monkeypatch, f"{name}_backward")
    rng = np.random.default_rng(13)
    inputs = _example(name, lambda shape: torch.from_numpy(rng.standard_normal(shape)).requires_grad_())
    result = getattr(torch.ops.cconv, name)(*inputs)
    out = result[0] if isinstance(result, tuple) else result
    (args, array), = forward
    assert address(args[0]) == inputs[0].data_ptr()  # the input reached cconv as a view
    arrays = array if isinstance(array, tuple) else (array,)
    tensors = result if isinstance(result, tuple) else (result,)
    assert [address(a) for a in arrays] == [t.data_ptr() for t in tensors]  # results: cconv's memory
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    (args, array), = backward
    assert address(args[0]) == grad_output.data_ptr()
    assert (array[0] if isinstance(array, tuple) else array).shape == tuple(inputs[0].shape)


@pytest.mark.parametrize("name", ["conv3d", "conv_transpose1d", "max_pool3d", "adaptive_avg_pool1d",
                                  "adaptive_max_pool3d"])
def test_double_backward_raises(name):
    rng = np.random.default_rng(14)
    inputs = _example(name, lambda shape: torch.from_numpy(rng.standard_normal(shape)).requires_grad_())
    result = getattr(torch.ops.cconv, name)(*inputs)
    out = result[0] if isinstance(result, tuple) else result
    (grad,) = torch.autograd.grad((out ** 2).sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


def test_bad_arguments_are_refused_with_the_reason():
    x = torch.ones(1, 2, 4, 4, 4)
    with pytest.raises(TypeError, match="kernel_size must be an int or 3 ints"):
        ct.max_pool3d(x, (2, 2))
    with pytest.raises(TypeError, match="output_size"):
        ct.adaptive_avg_pool3d(x, (2, 2.5, 2))
    with pytest.raises(ValueError, match="output_size"):
        ct.adaptive_max_pool1d(torch.ones(1, 2, 4), 0)
    with pytest.raises(ValueError, match="device 'meta'"):
        ct.conv1d(torch.ones(1, 2, 4, device="meta"), torch.ones(2, 2, 1))
    with pytest.raises(TypeError, match="torch.int64"):
        ct.avg_pool1d(torch.ones(1, 2, 4, dtype=torch.int64), 2)


# --------------------------------------------------------------------------
# convert / revert with every convertible layer type
# --------------------------------------------------------------------------

class _Model1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2, ceil_mode=True),
            nn.Conv1d(6, 6, 3, padding="same", padding_mode="circular", groups=2), nn.AvgPool1d(3, 1, 1),
            nn.ConvTranspose1d(6, 4, 2, stride=2), nn.AdaptiveMaxPool1d(5), nn.AdaptiveAvgPool1d(3))
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class _Model3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(2, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2, 1, 1),
            nn.Conv3d(4, 4, (1, 3, 2), stride=(1, 2, 1), padding_mode="reflect", padding=(0, 1, 1)),
            nn.AvgPool3d(2, ceil_mode=True, count_include_pad=False), nn.ConvTranspose3d(4, 3, 2, stride=2),
            nn.AdaptiveMaxPool3d((2, None, 3)), nn.AdaptiveAvgPool3d(2))
        self.pool2d = nn.AdaptiveAvgPool2d((None, 1))  # the 2-d adaptive pools too
        self.max2d = nn.AdaptiveMaxPool2d(2)
        self.head = nn.Linear(3 * 4 + 3 * 2 * 2, 2)

    def forward(self, x):
        y = self.features(x)  # (N, 3, 2, 2, 2)
        planes = y.flatten(2, 3)  # (N, 3, 4, 2)
        return self.head(torch.cat([self.pool2d(planes).flatten(1), self.max2d(planes).flatten(1)], 1))


_LAYER_TYPES = {  # every convertible type, and where the two models hold it
    "Conv1d", "Conv3d", "ConvTranspose1d", "ConvTranspose3d", "MaxPool1d", "MaxPool3d", "AvgPool1d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"}

_FUNCTIONS = ["conv1d", "conv3d", "conv_transpose1d", "conv_transpose3d", "max_pool1d", "max_pool3d",
              "avg_pool1d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
              "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"]


def _models():
    torch.manual_seed(3)
    return [(_Model1d(), (4, 3, 11)), (_Model3d(), (2, 2, 5, 6, 5))]


def test_the_models_hold_every_layer_type():
    held = {type(layer).__name__ for model, _ in _models() for layer in model.modules()}
    assert _LAYER_TYPES <= held


@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float64, 1e-11, 1e-12), (torch.float32, 1e-4, 1e-5)])
def test_converted_models_match_torch_values_and_gradients(monkeypatch, dtype, rtol, atol):
    calls = {name: spy_on(monkeypatch, name) for name in _FUNCTIONS}
    backward_calls = {name: spy_on(monkeypatch, f"{name}_backward") for name in _FUNCTIONS}
    for model, shape in _models():
        model = model.to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing is left unconverted
            converted = ct.convert(model)
        x = torch.randn(shape, dtype=dtype)
        expected, got = model(x), converted(x)
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
        expected.square().sum().backward()
        got.square().sum().backward()
        for (name, p), q in zip(model.named_parameters(), converted.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=rtol, atol=atol, msg=name)
    assert all(len(c) >= 1 for c in calls.values()), {n: len(c) for n, c in calls.items()}
    # every layer's backward ran through cconv (the first conv of each model needs no input gradient,
    # but still its weight gradient)
    assert all(len(c) >= 1 for c in backward_calls.values()), {n: len(c) for n, c in backward_calls.items()}


def test_convert_keeps_state_dict_and_repr_and_revert_restores():
    for model, shape in _models():
        converted = ct.convert(model)
        assert list(converted.state_dict()) == list(model.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(converted.state_dict().values(), model.state_dict().values()))
        assert repr(converted).replace(", cconv)", ")") == repr(model)
        marked = [type(layer).__name__ for layer in converted.modules() if "cconv" in layer.extra_repr()]
        assert len(marked) == sum(type(layer).__name__ in _LAYER_TYPES for layer in model.modules())
        assert all(isinstance(layer, layer._torch_class) for layer in converted.modules() if hasattr(layer, "_torch_class"))
        reverted = ct.revert(converted)
        assert repr(reverted) == repr(model)
        assert [type(layer) for layer in reverted.modules()] == [type(layer) for layer in model.modules()]
        x = torch.randn(shape)
        torch.testing.assert_close(reverted(x), model(x), rtol=0, atol=0)


def test_convert_handles_return_indices_and_output_size():
    torch.manual_seed(4)
    x1, x3 = torch.randn(2, 3, 10, dtype=torch.float64), torch.randn(1, 2, 4, 5, 6, dtype=torch.float64)
    for layer, x in [(nn.MaxPool1d(3, 2, 1, return_indices=True), x1), (nn.AdaptiveMaxPool1d(4, True), x1),
                     (nn.MaxPool3d(2, return_indices=True), x3), (nn.AdaptiveMaxPool3d((3, None, 2), True), x3)]:
        (out, indices), (expected_out, expected_indices) = ct.convert(layer)(x), layer(x)
        assert torch.equal(out, expected_out) and torch.equal(indices, expected_indices), layer
    for layer, x, size in [(nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1).double(), x1, [20]),
                           (nn.ConvTranspose3d(2, 2, 3, stride=2, padding=1).double(), x3, [8, 10, 12])]:
        torch.testing.assert_close(ct.convert(layer)(x, output_size=size), layer(x, output_size=size))


class _OwnPool(nn.MaxPool3d):
    def forward(self, x):
        return super().forward(x) + 1


def test_unconvertible_layers_are_reported():
    model = nn.Sequential(nn.Conv1d(2, 2, 1), nn.LPPool1d(2, 2), nn.FractionalMaxPool3d(2, output_size=2),
                          nn.MaxUnpool3d(2), _OwnPool(2), nn.AdaptiveAvgPool3d(1))
    with pytest.warns(UserWarning, match="left 4 layer") as record:
        converted = ct.convert(model)
    expected = [("1", "cconv has no op for nn.LPPool1d"), ("2", "cconv has no op for nn.FractionalMaxPool3d"),
                ("3", "cconv has no op for nn.MaxUnpool3d"), ("4", "a subclass of nn.MaxPool3d with its own forward")]
    assert ct.unconverted(converted) == expected
    assert all(f"{name}: {why}" in str(record[0].message) for name, why in expected)
    assert type(converted[0]) is not nn.Conv1d and type(converted[5]) is not nn.AdaptiveAvgPool3d
    assert type(converted[1]) is nn.LPPool1d and type(converted[4]) is _OwnPool


def test_torch_compile_of_a_converted_nd_model_matches_eager():
    """A converted model with 1-d and 3-d layers under torch.compile (inductor): one graph, cconv's ops opaque."""
    if not any(shutil.which(name) for name in (os.environ.get("CXX") or "g++", "c++", "clang++")):
        pytest.skip("torch.compile's default (inductor) backend needs a C++ compiler; none was found")
    torch.manual_seed(5)
    model = ct.convert(nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                                     nn.AvgPool3d(2, ceil_mode=True), nn.AdaptiveAvgPool3d((2, None, 1)),
                                     nn.Flatten(2), nn.Conv1d(4, 3, 2), nn.AdaptiveMaxPool1d(1), nn.Flatten()))
    x = torch.randn(2, 2, 8, 7, 6)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    x.requires_grad_()
    compiled(x).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    model(x).sum().backward()
    torch.testing.assert_close(grad, x.grad)
