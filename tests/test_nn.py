"""cconv.nn: every layer's backward against central finite differences (float64, tiny
shapes) on each backend (conftest's ``backend`` fixture), PyTorch-like initialisation, SGD,
and a reproducible training run."""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import nn
from conftest import numerical_gradient


def _distinct(rng, shape, spacing=0.05):
    """Values at least ``spacing`` apart, away from zero: no max-pool ties or ReLU kinks within eps."""
    values = (rng.permutation(int(np.prod(shape))) + 0.5) * spacing
    return (values - values.mean()).reshape(shape)


def _check_layer(layer, x, rng):
    """Compare the layer's input and parameter gradients with finite differences of sum(r * y)."""
    r = rng.standard_normal(layer.forward(x).shape)

    def loss():
        return float((layer.forward(x) * r).sum())

    loss()
    grad_x = layer.backward(r)
    assert grad_x.shape == x.shape and grad_x.dtype == x.dtype
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x, 1e-6), rtol=1e-6, atol=1e-8)
    for param, grad in layer.parameters():
        loss()
        layer.backward(r)
        analytic = grad.copy()
        np.testing.assert_allclose(analytic, numerical_gradient(loss, param, 1e-6), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(2, 3), stride=2, padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding="same", groups=2, bias=False),
])
def test_conv2d_gradients(backend, kwargs):
    rng = np.random.default_rng(1)
    layer = nn.Conv2d(4, 6, rng=rng, dtype=np.float64, backend=backend, **kwargs)
    assert (layer.bias is None) == (kwargs.get("bias") is False)
    _check_layer(layer, rng.standard_normal((2, 4, 5, 6)), rng)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True),
])
def test_max_pool2d_gradients(backend, kwargs):
    rng = np.random.default_rng(2)
    _check_layer(nn.MaxPool2d(backend=backend, **kwargs), _distinct(rng, (2, 3, 6, 7)), rng)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=1, padding=1, divisor_override=5),
])
def test_avg_pool2d_gradients(backend, kwargs):
    rng = np.random.default_rng(3)
    _check_layer(nn.AvgPool2d(backend=backend, **kwargs), rng.standard_normal((2, 3, 6, 7)), rng)


def test_relu_flatten_linear_gradients():
    rng = np.random.default_rng(4)
    _check_layer(nn.ReLU(), _distinct(rng, (2, 3, 4)), rng)
    _check_layer(nn.Flatten(), rng.standard_normal((2, 3, 2, 2)), rng)
    _check_layer(nn.Linear(5, 3, rng=rng, dtype=np.float64), rng.standard_normal((4, 5)), rng)


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, size=6)
    loss_fn = nn.SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probs[np.arange(6), labels]).mean(), rel=1e-12)
    grad = loss_fn.backward()
    np.testing.assert_allclose(grad, numerical_gradient(lambda: loss_fn.forward(logits, labels), logits, 1e-6),
                               rtol=1e-6, atol=1e-9)
    # Huge logits must not overflow.
    assert np.isfinite(loss_fn.forward(logits * 1e4, labels))


def test_sequential_network_gradients(backend):
    """A whole tiny CNN plus loss: every parameter's gradient and the input gradient."""
    rng = np.random.default_rng(6)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64, backend=backend), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(3, 4, 2, rng=rng, dtype=np.float64, backend=backend), nn.ReLU(),
        nn.AvgPool2d(2, backend=backend),
        nn.Flatten(), nn.Linear(4, 5, rng=rng, dtype=np.float64))
    x = rng.standard_normal((3, 2, 6, 6))
    labels = np.array([0, 4, 2])
    loss_fn = nn.SoftmaxCrossEntropy()

    def loss():
        return loss_fn.forward(model.forward(x), labels)

    loss()
    grad_x = model.backward(loss_fn.backward())
    params = model.parameters()
    assert len(params) == 6
    analytic = [grad.copy() for _, grad in params]
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x, 1e-6), rtol=1e-5, atol=1e-9)
    for (param, _), grad in zip(params, analytic):
        np.testing.assert_allclose(grad, numerical_gradient(loss, param, 1e-6), rtol=1e-5, atol=1e-9)


def test_float32_by_default_and_dtype_mismatch(backend):
    rng = np.random.default_rng(7)
    conv, linear = nn.Conv2d(1, 2, 3, rng=rng, backend=backend), nn.Linear(3, 2, rng=rng)
    assert conv.weight.dtype == conv.bias.dtype == linear.weight.dtype == np.float32
    y = conv.forward(rng.random((1, 1, 4, 4), dtype=np.float32))
    assert y.dtype == np.float32 and conv.backward(np.ones_like(y)).dtype == np.float32
    with pytest.raises(TypeError):
        conv.forward(np.zeros((1, 1, 4, 4)))  # float64 input, float32 weights
    with pytest.raises(TypeError):
        linear.forward(np.zeros((1, 3)))
    with pytest.raises(TypeError):
        nn.Linear(3, 2, dtype=np.int32)


def test_backward_before_forward_raises(backend):
    for layer in (nn.Conv2d(1, 1, 1, backend=backend), nn.MaxPool2d(2, backend=backend),
                  nn.AvgPool2d(2, backend=backend), nn.ReLU(), nn.Flatten(), nn.Linear(1, 1)):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.zeros((1, 1, 1, 1), dtype=np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.SoftmaxCrossEntropy().backward()


def test_pytorch_like_initialisation(backend):
    """Uniform in ±1/sqrt(fan_in) for weight and bias, as torch.nn.Conv2d/Linear; seeded."""
    conv = nn.Conv2d(8, 64, 3, groups=2, rng=np.random.default_rng(0), backend=backend)
    linear = nn.Linear(50, 400, rng=np.random.default_rng(0))
    for layer, fan_in in ((conv, 4 * 9), (linear, 50)):
        bound = 1 / np.sqrt(fan_in)
        for array in (layer.weight, layer.bias):
            assert np.abs(array).max() <= bound
            assert np.abs(array).max() > 0.9 * bound  # fills the range, not a narrower one
        assert abs(layer.weight.mean()) < 0.05 * bound
    again = nn.Conv2d(8, 64, 3, groups=2, rng=np.random.default_rng(0), backend=backend)
    other = nn.Conv2d(8, 64, 3, groups=2, rng=np.random.default_rng(1), backend=backend)
    assert np.array_equal(conv.weight, again.weight) and np.array_equal(conv.bias, again.bias)
    assert not np.array_equal(conv.weight, other.weight)
    with pytest.raises(TypeError, match="Generator"):
        nn.Linear(2, 2, rng=0)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 1, groups=2)


def test_sgd_momentum_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    param = rng.standard_normal((3, 4))
    grad = np.zeros_like(param)
    opt = nn.SGD([(param, grad)], lr=0.1, momentum=0.9, weight_decay=0.01)
    tparam = torch.tensor(param.copy(), requires_grad=True)
    topt = torch.optim.SGD([tparam], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        g = rng.standard_normal(param.shape)
        grad[...] = g
        opt.step()
        tparam.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(param, tparam.detach().numpy(), rtol=1e-12)


def test_load_digits():
    images, labels = nn.load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    counts = np.bincount(labels)
    assert len(counts) == 10 and counts.min() >= 170
    assert images.min() == 0 and images.max() == 1
    np.testing.assert_array_equal(images * 16, np.round(images * 16))  # the 0..16 pixel counts


def test_training_is_reproducible_and_learns(backend):
    from cconv._train import train_digits

    with cconv.use_backend(backend):
        first = train_digits(epochs=1, seed=1)
    second = train_digits(backend, epochs=1, seed=1)
    assert first.backend == second.backend == backend
    assert first.final_loss == second.final_loss and first.correct == second.correct
    assert first.test_size == 360 and first.accuracy > 0.5  # chance is 0.1
    assert set(first.op_seconds) == {"conv forward", "conv backward", "pool forward", "pool backward", "other"}
    assert all(t >= 0 for t in first.op_seconds.values())
