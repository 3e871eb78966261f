"""Autotune: time the algorithms that apply on the first call of each conv geometry, keep the fastest.

Off by default: the planner's prediction (:func:`cconv.explain` says which and why) runs, and the
defaults are what the performance figures measure. ``cconv.set_autotune(True)`` or
``CCONV_AUTOTUNE=1`` turns it on, like ``torch.backends.cudnn.benchmark``: the first call of each
(pass, shapes, stride, padding, dilation, groups, dtype, thread count) runs every algorithm that
computes that pass exactly, on the call's own arrays and twice each (an algorithm whose first run
is clearly slower, once), and the call returns the fastest one's result; later calls of the
geometry run it. The last 512 pass geometries used are remembered, per process. A tuned result is
bit for bit what forcing the winning algorithm (``CCONV_CONV_ALGO``) gives; with
``CCONV_CONV_ALGO`` set, that algorithm is used and nothing is tuned. Only the compiled backend
tunes.
"""
from __future__ import annotations

import os

import numpy as np

from . import _backends

_ENV_VALUES = {"1": True, "true": True, "on": True, "yes": True,
               "0": False, "false": False, "off": False, "no": False, "": False}
_enabled = False


def _from_env():
    raw = os.environ.get("CCONV_AUTOTUNE", "")
    value = raw.strip().lower()
    if value not in _ENV_VALUES:
        raise ValueError(f"CCONV_AUTOTUNE={raw!r} is not understood; accepted: 1 (tune; also true, on, "
                         f"yes) or 0 (the planner's choice, the default; also false, off, no)")
    return _ENV_VALUES[value]


def set_autotune(enabled):
    """Turn autotuning of the compiled backend's conv algorithms on (True) or off (False), process-wide.

    Geometries tuned while it was on stay remembered; turned off, calls use the planner's choice."""
    global _enabled
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_autotune: enabled must be a bool, got {type(enabled).__name__}")
    _enabled = bool(enabled)
    if _backends._compiled is not None:
        _backends._compiled._conv.set_autotune(_enabled)


def get_autotune():
    """Whether autotuning is on (:func:`set_autotune`, else ``CCONV_AUTOTUNE``; off by default)."""
    return _enabled


def info():
    """Autotune's state for :func:`cconv.backend_info`: on/off and the tuned-geometry cache's figures."""
    if _backends._compiled is None:
        return {"enabled": _enabled, "active": False}
    return _backends._compiled._conv.autotune_info()


set_autotune(_from_env())
