"""cconv's kernels inside PyTorch models: differentiable ops and a one-line module conversion.

::

    import cconv.torch
    y = cconv.torch.conv2d(x, w, b, padding=1)   # like torch.nn.functional.conv2d, on cconv's kernels
    model = cconv.torch.convert(model)            # its nn.Conv1d/2d/3d, nn.MaxPool2d, ... now compute through cconv
    model = cconv.torch.revert(model)             # back to torch's kernels

The functions cover every cconv op: conv1d/2d/3d, conv_transpose1d/2d/3d, max_pool1d/2d/3d,
avg_pool1d/2d/3d, adaptive_avg_pool1d/2d/3d and adaptive_max_pool1d/2d/3d. Each has
``torch.nn.functional``'s name and signature and takes float32/float64 CPU tensors (float16 and
bfloat16 too, computed in float32; bfloat16 needs ml_dtypes). It is a torch custom operator
(``torch.ops.cconv.<name>``, with a fake implementation and an autograd formula whose backward
runs cconv's ``*_backward``), so it works under autograd and, as an opaque op, under
``torch.compile``. Contiguous tensors reach cconv as NumPy views (no copy) and cconv's results
come back as tensors sharing their memory. Gradients of gradients (double backward) are not
supported and raise.

Where things are: the operators in :mod:`cconv._torch_ops`, the functions in
:mod:`cconv._torch_functional`, convert/revert in :mod:`cconv._torch_layers`. Not to be
confused with ``cconv._torch_backend``, the other direction (torch's kernels behind cconv's
NumPy API).
"""
from __future__ import annotations

try:
    import torch
except ImportError as exc:  # the optional extra is missing
    raise ImportError('cconv.torch needs PyTorch, which is not installed: pip install "cconv[torch]"') from exc

if not hasattr(torch.library, "custom_op"):
    raise ImportError(f"cconv.torch needs PyTorch >= 2.4 (torch.library.custom_op); this is {torch.__version__}: "
                      'pip install "cconv[torch]"')

from ._torch_functional import (  # noqa: E402
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)
from ._torch_layers import convert, revert, unconverted  # noqa: E402

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "convert", "revert", "unconverted",
]
