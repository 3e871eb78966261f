"""convert/revert of :mod:`cconv.torch`: swap a torch layer's class for a subclass whose forward
calls cconv's functions (:mod:`cconv._torch_functional`), and back.

The swap changes ``__class__`` only: parameters, buffers, hooks and ``state_dict`` are the
layer's own, and the subclass is still an instance of the torch class.
"""
from __future__ import annotations

import copy
import warnings

import torch.nn.functional as F
from torch import nn

from . import _torch_functional as cf


class _Converted:
    """Mixin of the classes :func:`convert` swaps in. ``repr`` stays the torch layer's, with a
    ``cconv`` marker; :func:`revert` swaps the class back to ``_torch_class``."""

    _torch_class: type

    def _get_name(self):
        return self._torch_class.__name__

    def extra_repr(self):
        return f"{super().extra_repr()}, cconv"


# ---- convolutions ---------------------------------------------------------

class _Conv(_Converted):
    _function: staticmethod

    def _conv_forward(self, input, weight, bias):  # what nn.Conv1d/2d/3d.forward calls
        if self.padding_mode != "zeros":  # padded by torch, as the torch layer does; convolved by cconv
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return self._function(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return self._function(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class _Conv1d(_Conv, nn.Conv1d):
    _torch_class, _function = nn.Conv1d, staticmethod(cf.conv1d)


class _Conv2d(_Conv, nn.Conv2d):
    _torch_class, _function = nn.Conv2d, staticmethod(cf.conv2d)


class _Conv3d(_Conv, nn.Conv3d):
    _torch_class, _function = nn.Conv3d, staticmethod(cf.conv3d)


class _ConvTranspose(_Converted):
    _function: staticmethod

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {self._torch_class.__name__}")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              len(self.kernel_size), self.dilation)
        return self._function(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                              self.groups, self.dilation)


class _ConvTranspose1d(_ConvTranspose, nn.ConvTranspose1d):
    _torch_class, _function = nn.ConvTranspose1d, staticmethod(cf.conv_transpose1d)


class _ConvTranspose2d(_ConvTranspose, nn.ConvTranspose2d):
    _torch_class, _function = nn.ConvTranspose2d, staticmethod(cf.conv_transpose2d)


class _ConvTranspose3d(_ConvTranspose, nn.ConvTranspose3d):
    _torch_class, _function = nn.ConvTranspose3d, staticmethod(cf.conv_transpose3d)


# ---- pools ------------------------------------------------------------------

class _MaxPool(_Converted):
    _function: staticmethod

    def forward(self, input):
        return self._function(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class _MaxPool1d(_MaxPool, nn.MaxPool1d):
    _torch_class, _function = nn.MaxPool1d, staticmethod(cf.max_pool1d)


class _MaxPool2d(_MaxPool, nn.MaxPool2d):
    _torch_class, _function = nn.MaxPool2d, staticmethod(cf.max_pool2d)


class _MaxPool3d(_MaxPool, nn.MaxPool3d):
    _torch_class, _function = nn.MaxPool3d, staticmethod(cf.max_pool3d)


class _AvgPool1d(_Converted, nn.AvgPool1d):  # nn.AvgPool1d has no divisor_override
    _torch_class = nn.AvgPool1d

    def forward(self, input):
        return cf.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad)


class _AvgPool(_Converted):
    _function: staticmethod

    def forward(self, input):
        return self._function(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override)


class _AvgPool2d(_AvgPool, nn.AvgPool2d):
    _torch_class, _function = nn.AvgPool2d, staticmethod(cf.avg_pool2d)


class _AvgPool3d(_AvgPool, nn.AvgPool3d):
    _torch_class, _function = nn.AvgPool3d, staticmethod(cf.avg_pool3d)


class _AdaptiveAvgPool(_Converted):
    _function: staticmethod

    def forward(self, input):
        return self._function(input, self.output_size)


class _AdaptiveAvgPool1d(_AdaptiveAvgPool, nn.AdaptiveAvgPool1d):
    _torch_class, _function = nn.AdaptiveAvgPool1d, staticmethod(cf.adaptive_avg_pool1d)


class _AdaptiveAvgPool2d(_AdaptiveAvgPool, nn.AdaptiveAvgPool2d):
    _torch_class, _function = nn.AdaptiveAvgPool2d, staticmethod(cf.adaptive_avg_pool2d)


class _AdaptiveAvgPool3d(_AdaptiveAvgPool, nn.AdaptiveAvgPool3d):
    _torch_class, _function = nn.AdaptiveAvgPool3d, staticmethod(cf.adaptive_avg_pool3d)


class _AdaptiveMaxPool(_Converted):
    _function: staticmethod

    def forward(self, input):
        return self._function(input, self.output_size, self.return_indices)


class _AdaptiveMaxPool1d(_AdaptiveMaxPool, nn.AdaptiveMaxPool1d):
    _torch_class, _function = nn.AdaptiveMaxPool1d, staticmethod(cf.adaptive_max_pool1d)


class _AdaptiveMaxPool2d(_AdaptiveMaxPool, nn.AdaptiveMaxPool2d):
    _torch_class, _function = nn.AdaptiveMaxPool2d, staticmethod(cf.adaptive_max_pool2d)


class _AdaptiveMaxPool3d(_AdaptiveMaxPool, nn.AdaptiveMaxPool3d):
    _torch_class, _function = nn.AdaptiveMaxPool3d, staticmethod(cf.adaptive_max_pool3d)


_CONVERTIBLE = {cls._torch_class: cls for cls in (
    _Conv1d, _Conv2d, _Conv3d, _ConvTranspose1d, _ConvTranspose2d, _ConvTranspose3d,
    _MaxPool1d, _MaxPool2d, _MaxPool3d, _AvgPool1d, _AvgPool2d, _AvgPool3d,
    _AdaptiveAvgPool1d, _AdaptiveAvgPool2d, _AdaptiveAvgPool3d,
    _AdaptiveMaxPool1d, _AdaptiveMaxPool2d, _AdaptiveMaxPool3d)}

# Layer families that compute a convolution or a pooling: any member not in _CONVERTIBLE is reported.
_FAMILIES = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
             nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
             nn.modules.pooling._LPPoolNd, nn.modules.pooling._MaxUnpoolNd,
             nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)


def _why_not(layer):
    """Why ``layer`` (a convolution or pooling layer) cannot be converted, or None if it can."""
    cls = type(layer)
    if cls not in _CONVERTIBLE:
        base = next((b for b in cls.__mro__[1:] if b in _CONVERTIBLE), None)
        if base is not None:
            return f"a subclass of nn.{base.__name__} with its own forward"
        return f"cconv has no op for nn.{cls.__name__}"
    devices = {p.device.type for p in layer.parameters()}
    if devices - {"cpu"}:
        return f"its parameters are on {', '.join(sorted(devices - {'cpu'}))}; cconv computes on the CPU only"
    return None


def unconverted(module):
    """The convolution and pooling layers in ``module`` that :func:`convert` leaves to torch:
    a list of ``(qualified name, reason)``."""
    return [(name or "(the module itself)", why) for name, layer in module.named_modules()
            if isinstance(layer, _FAMILIES) and not isinstance(layer, _Converted)
            and (why := _why_not(layer)) is not None]


def convert(module, inplace=False):
    """Make every ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, ``nn.MaxPool1d/2d/3d``,
    ``nn.AvgPool1d/2d/3d``, ``nn.AdaptiveAvgPool1d/2d/3d`` and ``nn.AdaptiveMaxPool1d/2d/3d`` in
    ``module`` (the module itself included) compute through cconv; returns the module.

    The layers keep their parameters, buffers, ``state_dict`` and ``repr`` (plus a ``cconv``
    marker). Without ``inplace`` a deep copy is converted and ``module`` is left alone.
    Convolution and pooling layers that cannot be converted (other poolings such as LPPool or
    FractionalMaxPool, subclasses with their own forward, parameters off the CPU) stay on torch
    and are named in one ``UserWarning``; :func:`unconverted` lists them.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert takes a torch.nn.Module, got {type(module).__name__}")
    skipped = unconverted(module)
    if not inplace:
        module = copy.deepcopy(module)
    for layer in module.modules():
        if type(layer) in _CONVERTIBLE and _why_not(layer) is None:
            layer.__class__ = _CONVERTIBLE[type(layer)]
    if skipped:
        listing = "; ".join(f"{name}: {why}" for name, why in skipped)
        warnings.warn(f"cconv.torch.convert left {len(skipped)} layer(s) on torch's kernels: {listing}",
                      UserWarning, stacklevel=2)
    return module


def revert(module, inplace=False):
    """Undo :func:`convert`: every converted layer computes through torch again; returns the module."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"revert takes a torch.nn.Module, got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    for layer in module.modules():
        if isinstance(layer, _Converted):
            layer.__class__ = layer._torch_class
    return module
