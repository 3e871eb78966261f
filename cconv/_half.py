"""float16 and bfloat16 for every public op: computed in float32, returned in the input's dtype.

The public functions exported by :mod:`cconv` are listed here. The 2-d ops of :mod:`cconv._api`
handle 2-byte float arrays themselves, on the path a call takes when its arguments are not the
common float32/float64 kind; the ops of :mod:`cconv._api_nd` and :mod:`cconv._adaptive` are
wrapped by :func:`cconv._widen.half_capable`. A call whose arrays are all float32/float64 goes
straight through (one cheap check per argument). See :mod:`cconv._widen` for the conversion.
"""
from __future__ import annotations

from . import _adaptive
from . import _api
from . import _api_nd
from ._widen import half_capable as _half_capable

# the 2-d ops widen 2-byte floats on their own slow path (see cconv._api)
conv2d = _api.conv2d
conv2d_backward = _api.conv2d_backward
conv_transpose2d = _api.conv_transpose2d
conv_transpose2d_backward = _api.conv_transpose2d_backward
max_pool2d = _api.max_pool2d
max_pool2d_backward = _api.max_pool2d_backward
avg_pool2d = _api.avg_pool2d
avg_pool2d_backward = _api.avg_pool2d_backward

conv1d = _half_capable(_api_nd.conv1d)
conv1d_backward = _half_capable(_api_nd.conv1d_backward)
conv_transpose1d = _half_capable(_api_nd.conv_transpose1d)
conv_transpose1d_backward = _half_capable(_api_nd.conv_transpose1d_backward)
max_pool1d = _half_capable(_api_nd.max_pool1d)
max_pool1d_backward = _half_capable(_api_nd.max_pool1d_backward)
avg_pool1d = _half_capable(_api_nd.avg_pool1d)
avg_pool1d_backward = _half_capable(_api_nd.avg_pool1d_backward)
conv3d = _half_capable(_api_nd.conv3d)
conv3d_backward = _half_capable(_api_nd.conv3d_backward)
conv_transpose3d = _half_capable(_api_nd.conv_transpose3d)
conv_transpose3d_backward = _half_capable(_api_nd.conv_transpose3d_backward)
max_pool3d = _half_capable(_api_nd.max_pool3d)
max_pool3d_backward = _half_capable(_api_nd.max_pool3d_backward)
avg_pool3d = _half_capable(_api_nd.avg_pool3d)
avg_pool3d_backward = _half_capable(_api_nd.avg_pool3d_backward)

adaptive_avg_pool1d = _half_capable(_adaptive.adaptive_avg_pool1d)
adaptive_avg_pool2d = _half_capable(_adaptive.adaptive_avg_pool2d)
adaptive_avg_pool3d = _half_capable(_adaptive.adaptive_avg_pool3d)
adaptive_avg_pool1d_backward = _half_capable(_adaptive.adaptive_avg_pool1d_backward)
adaptive_avg_pool2d_backward = _half_capable(_adaptive.adaptive_avg_pool2d_backward)
adaptive_avg_pool3d_backward = _half_capable(_adaptive.adaptive_avg_pool3d_backward)
adaptive_max_pool1d = _half_capable(_adaptive.adaptive_max_pool1d)
adaptive_max_pool2d = _half_capable(_adaptive.adaptive_max_pool2d)
adaptive_max_pool3d = _half_capable(_adaptive.adaptive_max_pool3d)
adaptive_max_pool1d_backward = _half_capable(_adaptive.adaptive_max_pool1d_backward)
adaptive_max_pool2d_backward = _half_capable(_adaptive.adaptive_max_pool2d_backward)
adaptive_max_pool3d_backward = _half_capable(_adaptive.adaptive_max_pool3d_backward)

__all__ = _api.__all__ + _api_nd.__all__ + _adaptive.__all__
