"""cconv.torch: cconv's ops as differentiable torch custom operators, and convert()/revert() of models.

Skipped where PyTorch is not installed. Every op is checked against torch.nn.functional (values,
indices) and by torch.autograd.gradcheck in float64 on random geometries; spies on cconv's public
functions prove that cconv ran, on the tensors' own memory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import cconv.torch as ct  # noqa: E402
from conftest import address, spy_on  # noqa: E402
from cconv._torch_model_bench import resnet18_cifar, train_side_by_side  # noqa: E402


# --------------------------------------------------------------------------
# importing
# --------------------------------------------------------------------------

def test_import_cconv_does_not_import_torch():
    code = "import sys, cconv; cconv.conv2d; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torch_the_error_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import cconv.torch\nexcept ImportError as e:\n    print(e)\nelse:\n    print('imported')")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert 'pip install "cconv[torch]"' in out


# --------------------------------------------------------------------------
# the ops: values, indices and gradients against torch
# --------------------------------------------------------------------------

def _conv_cases(rng, count):
    for _ in range(count):
        groups = int(rng.choice([1, 2]))
        stride, dilation = (int(v) for v in rng.integers(1, 3, size=2))
        kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
        padding = "same" if stride == 1 and rng.random() < 0.3 else (int(rng.integers(0, 2)), int(rng.integers(0, 3)))
        yield {"c": groups * int(rng.integers(1, 3)), "o": groups * int(rng.integers(1, 3)), "k": (kh, kw),
               "stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
               "bias": bool(rng.random() < 0.7), "unbatched": bool(rng.random() < 0.2)}


def _leaf(rng, shape):
    return torch.from_numpy(rng.standard_normal(shape)).requires_grad_()


@pytest.mark.parametrize("seed", range(3))
def test_conv2d_matches_torch_and_passes_gradcheck(seed):
    rng = np.random.default_rng(seed)
    for case in _conv_cases(rng, 3):
        x = _leaf(rng, ((case["c"],) if case["unbatched"] else (2, case["c"])) + (6, 5))
        w = _leaf(rng, (case["o"], case["c"] // case["groups"], *case["k"]))
        b = _leaf(rng, (case["o"],)) if case["bias"] else None
        args = (case["stride"], case["padding"], case["dilation"], case["groups"])
        torch.testing.assert_close(ct.conv2d(x, w, b, *args), F.conv2d(x, w, b, *args), rtol=1e-12, atol=1e-12)
        inputs = (x, w) if b is None else (x, w, b)
        assert torch.autograd.gradcheck(lambda x, w, b=None, args=args: ct.conv2d(x, w, b, *args), inputs), case


@pytest.mark.parametrize("seed", range(3))
def test_conv_transpose2d_matches_torch_and_passes_gradcheck(seed):
    rng = np.random.default_rng(100 + seed)
    for case in _conv_cases(rng, 3):
        padding = (0, 1) if isinstance(case["padding"], str) else case["padding"]
        output_padding = int(rng.integers(0, max(case["stride"], case["dilation"])))
        x = _leaf(rng, (2, case["c"], 4, 5))
        w = _leaf(rng, (case["c"], case["o"] // case["groups"], *case["k"]))
        b = _leaf(rng, (case["o"],)) if case["bias"] else None
        args = (case["stride"], padding, output_padding, case["groups"], case["dilation"])
        torch.testing.assert_close(ct.conv_transpose2d(x, w, b, *args), F.conv_transpose2d(x, w, b, *args),
                                   rtol=1e-12, atol=1e-12)
        inputs = (x, w) if b is None else (x, w, b)
        assert torch.autograd.gradcheck(lambda x, w, b=None, args=args: ct.conv_transpose2d(x, w, b, *args),
                                        inputs), case


def _pool_cases(rng, count):
    for _ in range(count):
        k = tuple(int(v) for v in rng.integers(1, 4, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 3, size=2)) if rng.random() < 0.7 else None
        yield {"k": k, "stride": stride, "padding": tuple(int(rng.integers(0, v // 2 + 1)) for v in k),
               "ceil_mode": bool(rng.random() < 0.5)}


@pytest.mark.parametrize("seed", range(3))
def test_max_pool2d_matches_torch_and_passes_gradcheck(seed):
    rng = np.random.default_rng(200 + seed)
    for case in _pool_cases(rng, 4):
        x = _leaf(rng, (1, 3, 7, 6))
        dilation = int(rng.integers(1, 3))
        args = (case["k"], case["stride"], case["padding"], dilation, case["ceil_mode"])
        try:
            expected, expected_indices = F.max_pool2d(x, *args, return_indices=True)
        except RuntimeError:  # a geometry torch refuses; cconv refuses it too
            with pytest.raises(ValueError):
                ct.max_pool2d(x, *args)
            continue
        out, indices = ct.max_pool2d(x, *args, return_indices=True)
        assert torch.equal(out, expected) and torch.equal(indices, expected_indices), case
        assert indices.dtype == torch.int64 and not indices.requires_grad
        assert torch.autograd.gradcheck(lambda t, args=args: ct.max_pool2d(t, *args), (x,)), case


@pytest.mark.parametrize("seed", range(3))
def test_avg_pool2d_matches_torch_and_passes_gradcheck(seed):
    rng = np.random.default_rng(300 + seed)
    for case in _pool_cases(rng, 4):
        x = _leaf(rng, (1, 3, 7, 6))
        divisor = int(rng.integers(1, 5)) if rng.random() < 0.3 else None
        args = (case["k"], case["stride"], case["padding"], case["ceil_mode"], bool(rng.random() < 0.5), divisor)
        torch.testing.assert_close(ct.avg_pool2d(x, *args), F.avg_pool2d(x, *args), rtol=1e-12, atol=1e-12)
        assert torch.autograd.gradcheck(lambda t, args=args: ct.avg_pool2d(t, *args), (x,)), case


def test_float32_matches_torch():
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((2, 4, 9, 9), dtype=np.float32))
    w = torch.from_numpy(rng.standard_normal((6, 4, 3, 3), dtype=np.float32))
    torch.testing.assert_close(ct.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ct.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1))
    assert torch.equal(ct.max_pool2d(x, 2), F.max_pool2d(x, 2))


@pytest.mark.parametrize("op, args", [
    (torch.ops.cconv.conv2d.default, lambda t: (t((2, 4, 6, 6)), t((4, 2, 3, 3)), t((4,)), [1, 2], [1, 0], [1, 1], 2,
                                                False)),
    (torch.ops.cconv.conv_transpose2d.default, lambda t: (t((2, 4, 3, 3)), t((4, 3, 2, 2)), None, [2, 2], [0, 0],
                                                          [1, 0], 1, [1, 1])),
    (torch.ops.cconv.max_pool2d.default, lambda t: (t((2, 3, 6, 6)), [3, 3], [2, 2], [1, 1], [1, 1], True)),
    (torch.ops.cconv.avg_pool2d.default, lambda t: (t((2, 3, 6, 6)), [3, 2], [2, 2], [1, 0], False, False, None)),
], ids=["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"])
def test_custom_op_registration_passes_opcheck(op, args):
    """torch's own check of a custom op: schema, fake implementation, autograd registration."""
    rng = np.random.default_rng(11)
    inputs = args(lambda shape: torch.from_numpy(rng.standard_normal(shape)).requires_grad_())
    torch.library.opcheck(op, inputs, test_utils=("test_schema", "test_autograd_registration",
                                                   "test_faketensor", "test_aot_dispatch_dynamic"))


# --------------------------------------------------------------------------
# zero copy, and cconv really runs
# --------------------------------------------------------------------------

def test_forward_shares_memory_with_cconv(monkeypatch):
    calls = spy_on(monkeypatch, "conv2d")
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    y = ct.conv2d(x, w, padding=1)
    (args, result), = calls
    assert address(args[0]) == x.data_ptr() and address(args[1]) == w.data_ptr()  # inputs: views
    assert address(result) == y.data_ptr()                                          # output: cconv's array


def test_backward_runs_cconv_and_shares_its_memory(monkeypatch):
    calls = spy_on(monkeypatch, "conv2d_backward")
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    gy = torch.randn(2, 4, 8, 8)
    grads = torch.ops.cconv.conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, False, [True, True, True])
    (args, result), = calls
    assert address(args[0]) == gy.data_ptr() and address(args[1]) == x.data_ptr()
    assert [address(a) for a in result] == [g.data_ptr() for g in grads]
    # through autograd: only the gradients asked for are computed
    x.requires_grad_()
    ct.conv2d(x, w, b, padding=1).backward(gy)
    assert calls[-1][1][1] is None and calls[-1][1][2] is None and calls[-1][1][0] is not None


@pytest.mark.parametrize("name", ["max_pool2d_backward", "avg_pool2d_backward", "conv_transpose2d_backward"])
def test_every_backward_runs_cconv(monkeypatch, name):
    calls = spy_on(monkeypatch, name)
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    if name == "conv_transpose2d_backward":
        y = ct.conv_transpose2d(x, torch.randn(2, 3, 2, 2, requires_grad=True), stride=2)
    else:
        y = getattr(ct, name.replace("_backward", ""))(x, 2)
    y.sum().backward()
    assert len(calls) == 1


def test_non_contiguous_input_is_copied_and_correct():
    x = torch.randn(2, 8, 8, 3).permute(0, 3, 1, 2)
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(ct.conv2d(x, w), F.conv2d(x, w))


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, words", [
    (lambda: torch.empty(1, 2, 5, 5, device="meta"), ValueError, "device 'meta'"),
    (lambda: torch.randn(1, 2, 5, 5).to_sparse(), TypeError, "sparse"),
    (lambda: torch.ones(1, 2, 5, 5, dtype=torch.int64), TypeError, "torch.int64"),
    (lambda: torch.ones(1, 2, 5, 5, dtype=torch.int32), TypeError, "torch.int32"),
    (lambda: torch.ones(1, 2, 5, 5, dtype=torch.complex64, requires_grad=True), TypeError, "torch.complex64"),
    (lambda: np.ones((1, 2, 5, 5)), TypeError, "must be a torch.Tensor"),
])
def test_tensors_cconv_cannot_take_are_refused(make, error, words):
    for call in (lambda x: ct.conv2d(x, torch.ones(3, 2, 3, 3)), lambda x: ct.max_pool2d(x, 2),
                 lambda x: ct.avg_pool2d(x, 2)):
        with pytest.raises(error, match=words.replace("(", r"\(")):
            call(make())


def test_mixed_dtypes_and_bad_geometry_are_refused():
    with pytest.raises(TypeError, match="share one dtype"):
        ct.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="stride"):
        ct.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3), stride=1.5)
    with pytest.raises(ValueError, match="stride"):
        ct.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3), stride=0)


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"])
def test_double_backward_raises(name):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    if name.startswith("conv"):
        w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        y = getattr(ct, name)(x, w)
    else:
        y = getattr(ct, name)(x, 2)
    (grad,) = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


# --------------------------------------------------------------------------
# convert / revert
# --------------------------------------------------------------------------

class _OwnConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def _mixed_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(8, 8, 3, padding="same", padding_mode="reflect", groups=2), nn.AvgPool2d(3, 1, 1),
        nn.ConvTranspose2d(8, 4, 2, stride=2), _OwnConv(4, 4, 1), nn.AdaptiveAvgPool2d(2), nn.LPPool2d(2, 1),
        nn.Flatten(), nn.Linear(16, 3))


def test_convert_runs_cconv_and_matches_torch(monkeypatch):
    model = _mixed_model().double()
    with pytest.warns(UserWarning, match="left 2 layer") as record:
        converted = ct.convert(model)
    message = str(record[0].message)
    assert "7: a subclass of nn.Conv2d" in message and "9: cconv has no op for nn.LPPool2d" in message
    assert ct.unconverted(converted) == [("7", "a subclass of nn.Conv2d with its own forward"),
                                         ("9", "cconv has no op for nn.LPPool2d")]
    calls = {name: spy_on(monkeypatch, name)
             for name in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")}
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    expected, got = model(x), converted(x)
    assert {name: len(c) for name, c in calls.items()} == {"conv2d": 2, "conv_transpose2d": 1, "max_pool2d": 1,
                                                           "avg_pool2d": 1, "adaptive_avg_pool2d": 1}
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    expected.sum().backward()
    got.sum().backward()
    for (name, p), q in zip(model.named_parameters(), converted.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-11, atol=1e-12, msg=name)


def test_convert_keeps_parameters_state_dict_and_repr():
    model = _mixed_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copied = ct.convert(model)
        params = list(model.parameters())
        same = ct.convert(model, inplace=True)
    assert same is model and all(p is q for p, q in zip(params, same.parameters()))
    assert type(copied[0]) is not nn.Conv2d and isinstance(copied[0], nn.Conv2d)
    reference = _mixed_model()
    assert list(copied.state_dict()) == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copied.state_dict().values(), reference.state_dict().values()))
    assert repr(copied).replace(", cconv)", ")") == repr(reference)
    assert repr(copied).count(", cconv)") == 6
    reverted = ct.revert(copied)
    assert repr(reverted) == repr(reference) and type(reverted[0]) is nn.Conv2d
    assert type(copied[0]) is not nn.Conv2d  # revert without inplace leaves its argument alone


def test_convert_handles_the_layer_options():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    pool = nn.MaxPool2d(3, 2, 1, return_indices=True).double()
    out, indices = ct.convert(pool)(x)
    expected_out, expected_indices = pool(x)
    assert torch.equal(out, expected_out) and torch.equal(indices, expected_indices)
    up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    torch.testing.assert_close(ct.convert(up)(x, output_size=[14, 14]), up(x, output_size=[14, 14]))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ct.convert(torch.ones(1))


def test_converted_resnet18_trains_like_torch():
    """20 SGD steps of a CIFAR ResNet-18 (narrowed to 8-64 channels, batch 4) converted and not.

    float64: the losses stay within 1e-10 (relative) all along. float32: within 1e-4 over the first
    10 steps only. Later, float32 training of this small-batch model is chaotic: a ReLU or max-pool
    choice flipped by rounding, spread over a channel by batch norm, grows step by step (perturbing
    torch's own weights by 1e-7 moved its 20th loss by 13% here, and torch's float32 losses drifted
    5% from its float64 ones), so two float32 implementations cannot stay 1e-4 apart that long.
    """
    model = resnet18_cifar(width=8)
    assert ct.unconverted(model) == []
    for dtype, steps, tolerance in (("float64", 20, 1e-10), ("float32", 10, 1e-4)):
        result = train_side_by_side(model, steps=20, batch=4, dtype=dtype)
        gaps = result["loss_gaps"]
        assert len(gaps) == 20 and max(gaps[:steps]) < tolerance, (dtype, gaps)
        assert result["torch_losses"][-1] < result["torch_losses"][0]  # it did train


def test_torch_compile_matches_eager():
    """The converted model under torch.compile (inductor): cconv's ops are opaque nodes of one graph."""
    if not any(shutil.which(name) for name in (os.environ.get("CXX") or "g++", "c++", "clang++")):
        pytest.skip("torch.compile's default (inductor) backend needs a C++ compiler; none was found")
    torch.manual_seed(2)
    model = ct.convert(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.AvgPool2d(2), nn.Flatten()))
    x = torch.randn(2, 2, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    x.requires_grad_()
    compiled(x).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    model(x).sum().backward()
    torch.testing.assert_close(grad, x.grad)


def test_bench_command_quick_run(capsys):
    from cconv._cli import main

    assert main(["bench", "--torch-model", "resnet18", "--quick", "--threads", "1", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "narrowed to width 8" in out and "float32" in out and "float64" in out and "speedup" in out


def test_bench_command_runs_only_the_dtype_asked_for(capsys):
    from cconv._cli import main

    assert main(["bench", "--torch-model", "resnet18", "--quick", "--threads", "1", "--steps", "3",
                 "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "float64, 1 thread(s)" in out and "float32, 1 thread(s)" not in out


def test_bench_command_without_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from cconv._cli import main\n"
            "sys.exit(main(['bench', '--torch-model', 'resnet18', '--quick']))")
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert run.returncode == 2 and 'pip install "cconv[torch]"' in run.stderr, run
