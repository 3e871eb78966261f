"""cconv.nn's 1-d/3-d and adaptive layers: they run the ops they name, initialise like PyTorch,
and a small ResNet-style head (conv, adaptive average pool to 1, linear) trains."""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import nn
from conftest import assert_close


@pytest.mark.parametrize("layer_cls,op,dims", [(nn.Conv1d, "conv1d", 1), (nn.Conv3d, "conv3d", 3)])
def test_conv_layers(rng, layer_cls, op, dims):
    layer = layer_cls(4, 6, 3, stride=2, padding=1, groups=2, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(2 * 3 ** dims)
    assert layer.weight.shape == (6, 2) + (3,) * dims and layer.weight.dtype == np.float32
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.weight).max() > 0.8 * bound
    x = rng.standard_normal((2, 4) + (7,) * dims).astype(np.float32)
    y = layer.forward(x)
    assert_close(y, getattr(cconv, op)(x, layer.weight, layer.bias, 2, 1, 1, 2))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(gy)
    expected = getattr(cconv, f"{op}_backward")(gy, x, layer.weight, 2, 1, 1, 2)
    for got, want in zip((gx, layer.weight_grad, layer.bias_grad), expected):
        assert_close(got, want)


@pytest.mark.parametrize("layer,op,args", [
    (nn.MaxPool1d(3, 2, 1), "max_pool1d", (3, 2, 1)),
    (nn.MaxPool3d((1, 2, 2), ceil_mode=True), "max_pool3d", ((1, 2, 2), None, 0, 1, True)),
    (nn.AvgPool1d(3, 2, 1, count_include_pad=False), "avg_pool1d", (3, 2, 1, False, False)),
    (nn.AvgPool3d(2, 1, 1), "avg_pool3d", (2, 1, 1)),
    (nn.AdaptiveAvgPool2d((3, None)), "adaptive_avg_pool2d", ((3, None),)),
    (nn.AdaptiveMaxPool2d(3), "adaptive_max_pool2d", (3,)),
])
def test_pool_layers(rng, layer, op, args):
    dims = 1 if op.endswith("1d") else 3 if op.endswith("3d") else 2
    x = rng.standard_normal((2, 3) + (5,) * dims)
    y = layer.forward(x)
    assert_close(y, getattr(cconv, op)(x, *args))
    gy = rng.standard_normal(y.shape)
    gx = layer.backward(gy)
    if "max" in op:
        _, idx = getattr(cconv, op)(x, *args, return_indices=True)
        assert_close(gx, getattr(cconv, f"{op}_backward")(gy, idx, x.shape))
    elif op.startswith("adaptive"):
        assert_close(gx, getattr(cconv, f"{op}_backward")(gy, x.shape))
    else:
        assert_close(gx, getattr(cconv, f"{op}_backward")(gy, x.shape, *args))


def test_resnet_head_trains():
    """conv -> ReLU -> conv -> ReLU -> global average pool -> linear learns to tell two kinds
    of 8x8 images apart (horizontal vs vertical stripes with noise): the loss falls."""
    rng = np.random.default_rng(0)
    n = 64
    labels = rng.integers(0, 2, n)
    stripes = (np.arange(8) % 2).astype(np.float32)
    images = np.where(labels[:, None, None] == 0, stripes[:, None] + 0 * stripes, stripes[None, :] + 0 * stripes[:, None])
    images = (images + 0.3 * rng.standard_normal((n, 8, 8))).astype(np.float32)[:, None]
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, rng=rng), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2, rng=rng),
    )
    loss_fn = nn.SoftmaxCrossEntropy()
    optimizer = nn.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(60):
        losses.append(loss_fn.forward(model.forward(images), labels))
        model.backward(loss_fn.backward())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses
    accuracy = (model.forward(images).argmax(axis=1) == labels).mean()
    assert accuracy > 0.9
