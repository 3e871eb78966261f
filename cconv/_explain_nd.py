"""``cconv.explain`` for the 1-d, 3-d and adaptive ops: the plans of the 2-d calls they make.

A 1-d or 3-d op runs one or two compiled 2-d ops on views or stacks of its arrays
(:func:`cconv._api_nd.plan_2d` names them); its explanation is theirs, each pass
marked ``"runs_as"`` with the 2-d call and its shapes. The conv3d passes that the compiled
volume algorithm runs instead (forward, stride-1 input gradient) are its plan's, and the
compiled backend's max_pool3d runs one 3-d kernel. Adaptive pools run the ordinary pool of the
same dimension when their bins are uniform, one BLAS matrix-vector product for a global
average, and otherwise the compiled bin kernels (the NumPy backend: vectorised NumPy).
"""
from __future__ import annotations

import inspect

import numpy as np

from . import _adaptive, _api, _api_nd, _backends, _shapes

_DIMS = {"1d": 1, "2d": 2, "3d": 3}


def _dtype(*arrays):
    """The dtype the 2-d calls would compute in (float64 stays float64, the rest float32)."""
    return np.float64 if any(getattr(a, "dtype", None) == np.float64 for a in arrays) else np.float32


def _batched_shape(shape, dims):
    shape = tuple(int(s) for s in shape)
    return shape if len(shape) == dims + 2 else (1,) + shape


def _split(shape):
    """(N, C) and the spatial sizes of a batched shape."""
    return tuple(shape[:2]), tuple(shape[2:])


def _arrays_2d(name, shape, wshape, call, dtype, grad_shape):
    """Zero arrays standing for the 2-d call's operands (only shapes and dtype matter to a plan)."""
    def zeros(s):
        return np.zeros(s, dtype)  # calloc'ed: its pages are not touched unless a plan reads them
    if name.startswith("conv"):
        if name == "conv2d_backward":
            g = _shapes.conv_geometry(shape, wshape, call["stride"], call["padding"], call["dilation"], call["groups"])
            return (zeros(g.output_shape), zeros(shape), zeros(wshape))
        if name == "conv_transpose2d_backward":
            _, out = _shapes.conv_transpose_geometry(shape, wshape, call["stride"], call["padding"],
                                                     call["output_padding"], call["dilation"], call["groups"])
            return (zeros(out), zeros(shape), zeros(wshape))
        return (zeros(shape), zeros(wshape))
    if not name.endswith("_backward"):
        return (zeros(shape),)
    if call:
        g = _shapes.pool_geometry(shape, call["kernel_size"], call.get("stride"), call.get("padding", 0),
                                  call.get("dilation", 1), call.get("ceil_mode", False))
        out = shape[:2] + (g.out_h, g.out_w)
    else:  # max_pool3d's backward: one flat scatter per (n, c) volume
        out = shape[:3] + (int(np.prod(grad_shape[2:])),)
    if name == "max_pool2d_backward":
        return (zeros(out), np.zeros(out, np.int64), shape)
    return (zeros(out), shape)


def _via_2d(op, calls, dtype, grad_shape, extra, backend):
    result = {}
    for name, shape, wshape, call in calls:
        call = dict(call)
        operands = _arrays_2d(name, shape, wshape, call, dtype, grad_shape)
        for pass_name, entry in _api.explain(name, *operands, **call, **extra, backend=backend).items():
            entry = dict(entry)
            entry["runs_as"] = f"{name} on {tuple(shape)}"
            entry["reason"] = f"{op} runs as {name} on {tuple(shape)}: {entry['reason']}"
            result[pass_name] = entry
    return result


def _volume_entries(op, shape, w, dtype, a, backend):
    """The conv3d passes (forward, or grad_input) that the compiled volume algorithm runs:
    {pass: entry}, empty where the call folds its depth taps into a conv2d."""
    plan = _api_nd._conv3d_plan(shape, tuple(w.shape), a.get("stride", 1), a.get("padding", 0),
                                a.get("dilation", 1), a.get("groups", 1))
    impl = _api_nd._volume(plan, backend)
    if impl is None:
        return {}
    weights = np.ascontiguousarray(w, dtype)  # the plan may depend on the weights' finiteness
    entries = impl.explain_volume(weights, plan.geometry, plan.volume, not op.endswith("_backward"))
    for entry in entries.values():
        entry["runs_as"] = f"volume on {tuple(shape)}"
        entry["reason"] = f"{op} runs on the volume algorithm: {entry['reason']}"
    return entries


def _patches(shape, w, a, backend, dtype):
    """Whether a conv3d_backward runs on its kernel == stride patches (cconv._api_nd._patches)."""
    plan = _api_nd._conv3d_plan(shape, tuple(w.shape), a.get("stride", 1), a.get("padding", 0),
                                a.get("dilation", 1), a.get("groups", 1))
    return _api_nd._patches(plan, backend, np.dtype(dtype)) is not None


def _explain_adaptive(op, dims, a, backend):
    backward = op.endswith("_backward")
    kind = "max" if "max" in op else "avg"
    if backward:
        gy = np.asarray(a["grad_output"])
        planes, in_sizes = _split(_batched_shape(a["input_shape"], dims))
        out = _shapes.adaptive_output_size(gy.shape[-dims:], in_sizes)
        dtype, pass_name = _dtype(gy), "grad_input"
    else:
        x = np.asarray(a["input"])
        planes, in_sizes = _split(_batched_shape(x.shape, dims))
        out = _shapes.adaptive_output_size(a["output_size"], in_sizes)
        dtype, pass_name = _dtype(x), "forward"
    if kind == "max" and backward:
        shape = _batched_shape(a["input_shape"], dims)
        calls = [("max_pool2d_backward", shape[:2] + (1, int(np.prod(shape[2:]))), None, {})]
        return _via_2d(op, calls, dtype, shape[:2] + out, {}, backend)
    if kind == "avg" and all(o == 1 for o in out):
        return {pass_name: {"algorithm": "global-average", "isa": "numpy (BLAS)", "threads": 1,
                            "workspace_bytes": 0,
                            "reason": f"{op}: output size 1, one matrix-vector product per batch"}}
    pool = _adaptive.plan_pool(in_sizes, out)
    impl = _backends.resolve(backend)
    if pool is None and impl.name == "cython":
        shape = planes + _adaptive._volume_sizes(in_sizes)
        entries = impl._pool.explain(op, (shape, _adaptive._volume_sizes(out)), np.dtype(dtype).itemsize,
                                     _api._threads())
        for entry in entries.values():
            entry["reason"] = f"{op}: uneven bins ({in_sizes} -> {out}): " + entry["reason"]
        return entries
    if pool is None:
        return {pass_name: {"algorithm": "adaptive-bins", "isa": "numpy", "threads": 1, "workspace_bytes": 0,
                            "reason": f"{op}: uneven bins ({in_sizes} -> {out}), vectorised NumPy"}}
    suffix = "_backward" if backward else ""
    target = f"{kind}_pool{dims}d{suffix}"
    if backward:
        args = (np.zeros(planes + out, dtype), planes + in_sizes)
    else:
        args = (np.zeros(planes + in_sizes, dtype),)
    entries = explain(target, *args, **pool, backend=backend) if dims != 2 else \
        _api.explain(target, *args, **pool, backend=backend)
    for entry in entries.values():
        entry["reason"] = f"{op}: uniform bins, as {target} with kernel = stride = {pool['kernel_size']}: " \
                          + entry["reason"]
    return entries


def explain(op, *args, **kwargs):
    """:func:`cconv.explain` for ``op``, a 1-d, 3-d or adaptive op's name."""
    from . import _half
    fn = getattr(_half, op)
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    backend = a.pop("backend", None)
    base = op.removesuffix("_backward")
    dims = _DIMS[base[-2:]]
    if base.startswith("adaptive"):
        return _explain_adaptive(op, dims, a, backend)
    backward = base != op
    if base.startswith("conv"):
        x, w = np.asarray(a.pop("input")), np.asarray(a.pop("weight"))
        gy = a.pop("grad_output", None)
        extra = {"output_mask": a.pop("output_mask")} if backward else {}
        a.pop("bias", None)
        calls = _api_nd.plan_2d(op, _batched_shape(x.shape, dims), tuple(w.shape), **a, backend=backend,
                                dtype=_dtype(x, w))
        entries = _via_2d(op, calls, _dtype(x, w), None if gy is None else np.shape(gy), extra, backend)
        if base == "conv3d" and backward and _patches(_batched_shape(x.shape, dims), w, a, backend, _dtype(x, w)):
            for entry in entries.values():   # the 1x1 conv2d of the patches (_api_nd._patches)
                entry["runs_as"] += " (1x1 on the non-overlapping kernel == stride patches)"
                entry["reason"] = entry["reason"].replace(": ", " (1x1 on the non-overlapping kernel == stride "
                                                                "patches): ", 1)
        if base == "conv3d" and (not backward or _api_nd._output_mask(extra["output_mask"])[0]):
            entries.update(_volume_entries(op, _batched_shape(x.shape, dims), w, _dtype(x, w), a, backend))
        return entries
    a.pop("return_indices", None)
    a.pop("indices", None)
    if backward:
        gy = np.asarray(a.pop("grad_output"))
        shape = _batched_shape(a.pop("input_shape"), dims)
        if base.startswith("max"):  # one flat scatter per (n, c) row or volume
            calls = [("max_pool2d_backward", shape[:2] + (1, int(np.prod(shape[2:]))), None, {})]
        else:
            calls = _api_nd.plan_2d(op, shape, **a)
        return _via_2d(op, calls, _dtype(gy), _batched_shape(gy.shape, dims), {}, backend)
    x = np.asarray(a.pop("input"))
    impl = _backends.resolve(backend)
    if op == "max_pool3d" and impl.name == "cython":
        plan = _api_nd._pool3d_plan(_batched_shape(x.shape, dims), a["kernel_size"], a["stride"], a["padding"],
                                    a["dilation"], a["ceil_mode"])
        m = plan.depth
        entries = impl._pool.explain(op, plan.geometry, np.dtype(_dtype(x)).itemsize, _api._threads(),
                                     depth=(m.size, m.out, m.taps, m.stride, m.pad, m.dilation))
        for entry in entries.values():
            entry["reason"] = f"{op}: one 3-d kernel: {entry['reason']}"
        return entries
    return _via_2d(op, _api_nd.plan_2d(op, _batched_shape(x.shape, dims), **a), _dtype(x), None, {}, backend)
