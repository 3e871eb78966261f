"""Every valid array is accepted: each kind of array x each op x each backend.

Kinds users meet: read-only arrays (``np.frombuffer`` over bytes, arrays from JAX or shared
memory), ``np.load(..., mmap_mode='r')`` and read-only ``np.memmap`` files, broadcast views
(zero strides), misaligned buffers, negative strides and Fortran order. Every array argument of
the op is given as that kind at once; the result must be bit-identical to the same call on
fresh C-contiguous copies, and the inputs (and the files behind memory maps) must be unchanged.
"""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from conftest import assert_identical, tally

BACKENDS = cconv.available_backends()  # including torch, when installed


def _read_only(a, tmp_path):
    a = a.copy()
    a.flags.writeable = False
    return a


def _from_bytes(a, tmp_path):
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)   # read-only, over bytes


def _np_load_mmap(a, tmp_path):
    path = tmp_path / f"array{len(list(tmp_path.iterdir()))}.npy"
    np.save(path, a)
    return np.load(path, mmap_mode="r")


def _np_memmap(a, tmp_path):
    path = tmp_path / f"array{len(list(tmp_path.iterdir()))}.bin"
    a.tofile(path)
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def _broadcast(a, tmp_path):
    """Zero stride on the first axis: every row repeats row 0."""
    return np.broadcast_to(a[:1], a.shape)


def _misaligned(a, tmp_path):
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    b = raw[1:].view(a.dtype).reshape(a.shape)
    b[...] = a
    assert not b.flags.aligned
    return b


def _negative_strides(a, tmp_path):
    flip = (slice(None, None, -1),) * a.ndim
    return np.ascontiguousarray(a[flip])[flip]


def _fortran(a, tmp_path):
    return np.asfortranarray(a)


def _memory_mapped(a):
    return isinstance(a, np.memmap) and not a.flags.writeable


# kind -> (make(array, tmp_path), is_that_kind(array))
KINDS = {
    "read-only": (_read_only, lambda a: not a.flags.writeable),
    "frombuffer": (_from_bytes, lambda a: not a.flags.writeable and not a.flags.owndata),
    "np.load mmap": (_np_load_mmap, _memory_mapped),
    "np.memmap": (_np_memmap, _memory_mapped),
    "broadcast": (_broadcast, lambda a: a.strides[0] == 0),
    "misaligned": (_misaligned, lambda a: not a.flags.aligned),
    "negative strides": (_negative_strides, lambda a: all(s < 0 for s in a.strides if s)),
    "Fortran order": (_fortran, lambda a: a.flags.f_contiguous and (a.ndim == 1 or not a.flags.c_contiguous)),
}


def _pool_indices(dtype):
    """Valid max-pool indices for an (2, 16, 12, 12) input and 2x2 windows (Ho = Wo = 6)."""
    x = np.random.default_rng(7).standard_normal((2, 16, 12, 12)).astype(dtype)
    return cconv.max_pool2d(x, 2, return_indices=True, backend="numpy")[1]


# op name -> (call(arrays, backend), {argument: shape}); every array argument gets the kind.
OPS = {
    "conv2d": (lambda a, be: cconv.conv2d(a["x"], a["w"], a["b"], padding=1, backend=be),
               {"x": (2, 16, 12, 12), "w": (16, 16, 3, 3), "b": (16,)}),
    "conv2d_backward": (lambda a, be: cconv.conv2d_backward(a["gy"], a["x"], a["w"], stride=2, padding=1,
                                                            backend=be),
                        {"gy": (2, 8, 6, 6), "x": (2, 16, 12, 12), "w": (8, 16, 3, 3)}),
    "conv_transpose2d": (lambda a, be: cconv.conv_transpose2d(a["x"], a["w"], a["b"], stride=2, padding=1,
                                                              backend=be),
                         {"x": (2, 8, 6, 6), "w": (8, 16, 3, 3), "b": (16,)}),
    "conv_transpose2d_backward": (lambda a, be: cconv.conv_transpose2d_backward(
                                      a["gy"], a["x"], a["w"], stride=2, padding=1, output_padding=1,
                                      backend=be),
                                  {"gy": (2, 16, 12, 12), "x": (2, 8, 6, 6), "w": (8, 16, 3, 3)}),
    "max_pool2d": (lambda a, be: cconv.max_pool2d(a["x"], 3, stride=2, padding=1, return_indices=True,
                                                  backend=be),
                   {"x": (2, 16, 12, 12)}),
    "max_pool2d_backward": (lambda a, be: cconv.max_pool2d_backward(a["gy"], a["indices"], (2, 16, 12, 12),
                                                                    backend=be),
                            {"gy": (2, 16, 6, 6), "indices": None}),
    "avg_pool2d": (lambda a, be: cconv.avg_pool2d(a["x"], 3, stride=2, padding=1, backend=be),
                   {"x": (2, 16, 12, 12)}),
    "avg_pool2d_backward": (lambda a, be: cconv.avg_pool2d_backward(a["gy"], (2, 16, 12, 12), 3, stride=2,
                                                                    padding=1, backend=be),
                            {"gy": (2, 16, 6, 6)}),
}


def _fresh_arrays(op, dtype):
    rng = np.random.default_rng(sorted(OPS).index(op))
    arrays = {}
    for name, shape in OPS[op][1].items():
        arrays[name] = (_pool_indices(dtype) if name == "indices"
                        else rng.standard_normal(shape).astype(dtype))
    return arrays


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.filterwarnings("error")  # no warning either: these are valid arrays
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_array_kind_gives_the_result_of_a_contiguous_copy(kind, op, backend, dtype, tmp_path):
    call = OPS[op][0]
    make, is_that_kind = KINDS[kind]
    unusual = {name: make(a, tmp_path) for name, a in _fresh_arrays(op, dtype).items()}
    for name, a in unusual.items():
        assert is_that_kind(a), f"{name} is not a {kind} array"
    before = {name: np.array(a) for name, a in unusual.items()}   # values, in fresh C-contiguous copies
    files = {path: path.read_bytes() for path in tmp_path.iterdir()}

    result = _as_tuple(call(unusual, backend))
    expected = _as_tuple(call({name: np.array(a) for name, a in before.items()}, backend))

    assert len(result) == len(expected)
    for i, (got, want) in enumerate(zip(result, expected)):
        assert_identical(got, want, context=f"{op} output {i} on {backend} with {kind} inputs")
        for name, a in unusual.items():
            assert not np.shares_memory(got, a), f"{op} output {i} aliases input {name}"
    for name, a in unusual.items():
        assert_identical(a, before[name], context=f"{kind} input {name} was modified")
    for path, content in files.items():   # the files behind the memory maps too
        assert path.read_bytes() == content, f"{path.name} was modified"
    tally("array kinds", kind)
