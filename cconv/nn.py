"""Layers for NumPy training loops, on top of cconv's ops.

Not a framework: each layer is a small object with ``forward(x)``, which keeps what the
backward pass needs, and ``backward(grad)``, which returns the gradient with respect to
the layer's input and stores the gradients of its parameters. Parameters are plain NumPy
arrays (``layer.weight``, ``layer.bias``) with their gradients next to them
(``layer.weight_grad``, ``layer.bias_grad``), initialised like PyTorch's defaults from a
``numpy.random.Generator`` so that runs are reproducible::

    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10, rng=rng))
    loss_fn, opt = nn.SoftmaxCrossEntropy(), nn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = loss_fn.forward(model.forward(x), labels)
    model.backward(loss_fn.backward())
    opt.step()

Convolution and pooling layers call the public ops (:func:`cconv.conv2d`,
:func:`cconv.conv2d_backward`, :func:`cconv.max_pool2d`, ...) with the layer's
``backend=`` (None: the current default backend). Backward overwrites the stored
gradients (it does not accumulate), so no ``zero_grad`` is needed.
"""
from __future__ import annotations

import gzip
import importlib.resources

import numpy as np

from . import _api
from . import _shapes

__all__ = [
    "Layer", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "Flatten", "Linear", "Sequential",
    "SoftmaxCrossEntropy", "SGD", "load_digits",
]


def _uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _rng(rng):
    return np.random.default_rng() if rng is None else _shapes.check_generator(rng)


def _float_dtype(dtype):
    return _shapes.float_dtype(dtype)


class Layer:
    """Base class: a layer without parameters that passes its input through."""

    def forward(self, x):
        return x

    def backward(self, grad):
        return grad

    def __call__(self, x):
        return self.forward(x)

    def parameters(self):
        """``[(param, grad), ...]``: arrays updated in place by an optimiser."""
        return []

    def _saved(self, name):
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value


class _Affine(Layer):
    """Shared parameter handling of Conv2d and Linear: weight, optional bias, and their gradients."""

    def _init_parameters(self, weight_shape, fan_in, bias, rng, dtype):
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives bound sqrt(6 / ((1 + 5) * fan_in))
        # = 1/sqrt(fan_in) for the weight, and the bias uses the same bound.
        rng, dtype = _rng(rng), _float_dtype(dtype)
        bound = 1.0 / np.sqrt(fan_in)
        self.weight = _uniform(rng, bound, weight_shape, dtype)
        self.weight_grad = np.zeros_like(self.weight)
        self.bias = _uniform(rng, bound, weight_shape[0], dtype) if bias else None
        self.bias_grad = np.zeros_like(self.bias) if bias else None

    def parameters(self):
        pairs = [(self.weight, self.weight_grad)]
        if self.bias is not None:
            pairs.append((self.bias, self.bias_grad))
        return pairs

    def _store_grads(self, grad_weight, grad_bias):
        self.weight_grad[...] = grad_weight
        if self.bias is not None:
            self.bias_grad[...] = grad_bias


class Conv2d(_Affine):
    """2-d convolution (:func:`cconv.conv2d`): (N, C, H, W) -> (N, O, Ho, Wo).

    ``weight`` (O, C/groups, kh, kw) and ``bias`` (O,) start uniform in
    ±1/sqrt(C/groups * kh * kw), as in ``torch.nn.Conv2d``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, rng=None, dtype=np.float32, backend=None):
        kh, kw = _shapes.positive(kernel_size, 2, "kernel_size")
        groups = _shapes.layer_groups(in_channels, out_channels, groups)
        self._args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, backend=backend)
        self._init_parameters((out_channels, in_channels // groups, kh, kw),
                              in_channels // groups * kh * kw, bias, rng, dtype)
        self._x = None

    def forward(self, x):
        self._x = x
        return _api.conv2d(x, self.weight, self.bias, **self._args)

    def backward(self, grad):
        grad_input, grad_weight, grad_bias = _api.conv2d_backward(
            grad, self._saved("_x"), self.weight, output_mask=(True, True, self.bias is not None), **self._args)
        self._store_grads(grad_weight, grad_bias)
        return grad_input


class Linear(_Affine):
    """Fully connected layer: (N, in_features) -> (N, out_features), ``y = x @ weight.T + bias``.

    ``weight`` (out, in) and ``bias`` (out,) start uniform in ±1/sqrt(in), as in ``torch.nn.Linear``.
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32):
        self._init_parameters((out_features, in_features), in_features, bias, rng, dtype)
        self._x = None

    def forward(self, x):
        _shapes.check_dtype(x, self.weight.dtype, "Linear")  # NumPy would silently promote
        self._x = x
        y = x @ self.weight.T
        if self.bias is not None:
            y += self.bias
        return y

    def backward(self, grad):
        self._store_grads(grad.T @ self._saved("_x"), grad.sum(axis=0))
        return grad @ self.weight


class _MaxPoolNd(Layer):
    _forward = _backward = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None):
        self._args = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                          ceil_mode=ceil_mode)
        self.backend = backend
        self._indices = self._input_shape = None

    def forward(self, x):
        y, self._indices = type(self)._forward(x, **self._args, return_indices=True, backend=self.backend)
        self._input_shape = x.shape
        return y

    def backward(self, grad):
        return type(self)._backward(grad, self._saved("_indices"), self._input_shape, backend=self.backend)


class MaxPool2d(_MaxPoolNd):
    """Max pooling (:func:`cconv.max_pool2d`); backward routes each gradient to its window's maximum."""

    _forward, _backward = _api.max_pool2d, _api.max_pool2d_backward


class AvgPool2d(Layer):
    """Average pooling (:func:`cconv.avg_pool2d`); backward spreads each gradient over its window."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend=None):
        self._args = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                          count_include_pad=count_include_pad, divisor_override=divisor_override,
                          backend=backend)
        self._input_shape = None

    def forward(self, x):
        self._input_shape = x.shape
        return _api.avg_pool2d(x, **self._args)

    def backward(self, grad):
        return _api.avg_pool2d_backward(grad, self._saved("_input_shape"), **self._args)


class ReLU(Layer):
    """``max(x, 0)``; the gradient passes where the input was positive."""

    def __init__(self):
        self._mask = None

    def forward(self, x):
        self._mask = x > 0
        return x * self._mask

    def backward(self, grad):
        return grad * self._saved("_mask")


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), e.g. between the last pooling layer and a Linear."""

    def __init__(self):
        self._shape = None

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape(self._saved("_shape"))


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def parameters(self):
        return [pair for layer in self.layers for pair in layer.parameters()]


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels (``torch.nn.CrossEntropyLoss``).

    ``forward(logits (N, K), labels (N,))`` returns the loss as a float; ``backward()``
    returns its gradient with respect to the logits, ``(softmax - onehot) / N``.
    """

    def __init__(self):
        self._probs = self._labels = None

    def forward(self, logits, labels):
        labels = _shapes.check_labels(logits, labels)
        shifted = logits - logits.max(axis=1, keepdims=True)  # exp cannot overflow
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._probs, self._labels = np.exp(log_probs), labels
        return float(-log_probs[np.arange(len(labels)), labels].mean())

    def backward(self):
        if self._probs is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        grad = self._probs.copy()
        grad[np.arange(len(self._labels)), self._labels] -= 1
        grad /= len(self._labels)
        return grad


class SGD:
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``:
    ``v = momentum * v + (grad + weight_decay * p)``, ``p -= lr * v`` (in place)."""

    def __init__(self, parameters, lr, momentum=0.0, weight_decay=0.0):
        _shapes.check_sgd(lr, momentum, weight_decay)
        self.parameters = list(parameters)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._velocity = [np.zeros_like(p) for p, _ in self.parameters]

    def step(self):
        """Update every parameter in place from its current gradient. ``lr`` may change between steps."""
        lr = float(self.lr)  # a NumPy float64 scalar would promote float32 arithmetic to float64
        for (param, grad), velocity in zip(self.parameters, self._velocity):
            step = grad + self.weight_decay * param if self.weight_decay else grad
            velocity *= self.momentum
            velocity += step
            param -= lr * velocity


def load_digits(dtype=np.float32):
    """The 8x8 handwritten digits shipped with cconv (UCI, CC BY 4.0; see cconv/data/LICENSE-digits.txt).

    Returns ``images`` (1797, 1, 8, 8) of ``dtype`` scaled to [0, 1] and ``labels`` (1797,) int64.
    """
    resource = importlib.resources.files("cconv") / "data" / "digits.csv.gz"
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    images = (table[:, :64] / 16.0).astype(_float_dtype(dtype)).reshape(-1, 1, 8, 8)
    return images, table[:, 64].copy()


# --------------------------------------------------------------------------
# 1-d and 3-d layers, adaptive pooling
# --------------------------------------------------------------------------

from . import _adaptive, _api_nd  # noqa: E402  (the N-d ops build on _api, imported above)


class _ConvNd(_Affine):
    """Shared by Conv1d and Conv3d: ``weight`` (O, C/groups, *kernel) and ``bias`` (O,) start uniform
    in ±1/sqrt(C/groups * prod(kernel)), as in PyTorch."""

    _dims = 0
    _forward = _backward = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, rng=None, dtype=np.float32, backend=None):
        kernel = _shapes.positive(kernel_size, self._dims, "kernel_size")
        groups = _shapes.layer_groups(in_channels, out_channels, groups)
        self._args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, backend=backend)
        self._init_parameters((out_channels, in_channels // groups) + kernel,
                              in_channels // groups * int(np.prod(kernel)), bias, rng, dtype)
        self._x = None

    def forward(self, x):
        self._x = x
        return type(self)._forward(x, self.weight, self.bias, **self._args)

    def backward(self, grad):
        grad_input, grad_weight, grad_bias = type(self)._backward(
            grad, self._saved("_x"), self.weight, output_mask=(True, True, self.bias is not None), **self._args)
        self._store_grads(grad_weight, grad_bias)
        return grad_input


class Conv1d(_ConvNd):
    """1-d convolution (:func:`cconv.conv1d`): (N, C, L) -> (N, O, Lo); weight (O, C/groups, k)."""

    _dims = 1
    _forward, _backward = _api_nd.conv1d, _api_nd.conv1d_backward


class Conv3d(_ConvNd):
    """3-d convolution (:func:`cconv.conv3d`): (N, C, D, H, W) -> (N, O, Do, Ho, Wo);
    weight (O, C/groups, kd, kh, kw)."""

    _dims = 3
    _forward, _backward = _api_nd.conv3d, _api_nd.conv3d_backward


class MaxPool1d(_MaxPoolNd):
    """1-d max pooling (:func:`cconv.max_pool1d`); backward routes each gradient to its window's maximum."""

    _forward, _backward = _api_nd.max_pool1d, _api_nd.max_pool1d_backward


class MaxPool3d(_MaxPoolNd):
    """3-d max pooling (:func:`cconv.max_pool3d`); backward routes each gradient to its window's maximum."""

    _forward, _backward = _api_nd.max_pool3d, _api_nd.max_pool3d_backward


class _AvgPoolNd(Layer):
    _forward = _backward = None

    def __init__(self, **args):
        self._args = args
        self._input_shape = None

    def forward(self, x):
        self._input_shape = x.shape
        return type(self)._forward(x, **self._args)

    def backward(self, grad):
        return type(self)._backward(grad, self._saved("_input_shape"), **self._args)


class AvgPool1d(_AvgPoolNd):
    """1-d average pooling (:func:`cconv.avg_pool1d`); backward spreads each gradient over its window."""

    _forward, _backward = _api_nd.avg_pool1d, _api_nd.avg_pool1d_backward

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
                 backend=None):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad, backend=backend)


class AvgPool3d(_AvgPoolNd):
    """3-d average pooling (:func:`cconv.avg_pool3d`); backward spreads each gradient over its window."""

    _forward, _backward = _api_nd.avg_pool3d, _api_nd.avg_pool3d_backward

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend=None):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad, divisor_override=divisor_override, backend=backend)


class AdaptiveAvgPool2d(_AvgPoolNd):
    """Adaptive average pooling (:func:`cconv.adaptive_avg_pool2d`) to ``output_size`` (int, pair,
    None keeping a size); ``AdaptiveAvgPool2d(1)`` is global average pooling."""

    _forward, _backward = _adaptive.adaptive_avg_pool2d, _adaptive.adaptive_avg_pool2d_backward

    def __init__(self, output_size, *, backend=None):
        self.output_size, self.backend = output_size, backend
        self._input_shape = None

    def forward(self, x):
        self._input_shape = x.shape
        return _adaptive.adaptive_avg_pool2d(x, self.output_size, backend=self.backend)

    def backward(self, grad):
        return _adaptive.adaptive_avg_pool2d_backward(grad, self._saved("_input_shape"), backend=self.backend)


class AdaptiveMaxPool2d(_MaxPoolNd):
    """Adaptive max pooling (:func:`cconv.adaptive_max_pool2d`) to ``output_size``."""

    def __init__(self, output_size, *, backend=None):
        self.output_size, self.backend = output_size, backend
        self._indices = self._input_shape = None

    def forward(self, x):
        y, self._indices = _adaptive.adaptive_max_pool2d(x, self.output_size, True, backend=self.backend)
        self._input_shape = x.shape
        return y

    def backward(self, grad):
        return _adaptive.adaptive_max_pool2d_backward(grad, self._saved("_indices"), self._input_shape,
                                                      backend=self.backend)


__all__ += ["Conv1d", "Conv3d", "MaxPool1d", "MaxPool3d", "AvgPool1d", "AvgPool3d",
            "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]
