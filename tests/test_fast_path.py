"""Remembered calls: a repeat of a validated call skips validation and must be
indistinguishable from the checked path, in results and in errors.

The 2-d ops remember each call that passed validation, keyed on shapes, dtypes and the
argument values. Dict keys compare by equality, and ``True``, ``1.0`` and ``np.int64(1)``
all equal ``1``: the danger is a bad call that equals a remembered good one. So every entry
of the bad-input table is run on a fresh table, then after its "good twin" (the same call
with each such value replaced by the plain int or bool it equals) was remembered, and must
raise the same error with the same message. Valid calls of every kind (unbatched, strided,
Fortran-ordered, misaligned, read-only, tuple and string arguments, every output_mask) must
give bit-identical results on the checked and the remembered path, and which path ran is
checked, not assumed.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import cconv
from cconv import _api
from conftest import assert_identical, tally
from test_validation import BAD_INPUTS, OPS

KNOWN = {
    "conv2d": _api._CONV2D, "conv2d_backward": _api._CONV2D_BACKWARD,
    "conv_transpose2d": _api._CONV_TRANSPOSE2D, "conv_transpose2d_backward": _api._CONV_TRANSPOSE2D_BACKWARD,
    "max_pool2d": _api._MAX_POOL2D, "max_pool2d_backward": _api._MAX_POOL2D_BACKWARD,
    "avg_pool2d": _api._AVG_POOL2D, "avg_pool2d_backward": _api._AVG_POOL2D_BACKWARD,
}
BOOL_ARGUMENTS = {"ceil_mode", "count_include_pad", "output_mask"}


def _forget():
    for known in KNOWN.values():
        known.clear()


@pytest.fixture
def checked_calls(monkeypatch):
    """Count the calls that take each op's checked path."""
    counts = dict.fromkeys(OPS, 0)
    for op in OPS:
        original = getattr(_api, f"_{op}_checked")

        def counting(*args, _op=op, _original=original, **kwargs):
            counts[_op] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(_api, f"_{op}_checked", counting)
    _forget()
    yield counts
    _forget()


def _twin(value, as_bool):
    """The plain value a bad argument equals (``True`` -> 1, ``1.0`` -> 1, ``0`` -> False), or itself."""
    if isinstance(value, tuple):
        return tuple(_twin(v, as_bool) for v in value)
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)) and not isinstance(value, str):
        if value == int(value):
            return bool(value) if as_bool else int(value)
    return value


def _outcome(call):
    try:
        call()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None


BAD_CASES = [(kind, op, i) for kind, (_, _, calls) in BAD_INPUTS.items()
             for op, overrides in calls.items() for i in range(len(overrides))]


@pytest.mark.parametrize("backend", cconv.available_backends())
def test_bad_inputs_fail_alike_after_their_good_twin_was_remembered(backend, checked_calls):
    twins_remembered = dict.fromkeys(BAD_INPUTS, 0)
    for kind, op, i in BAD_CASES:
        kwargs = BAD_INPUTS[kind][2][op][i]
        _forget()
        fresh = _outcome(lambda: OPS[op](backend, **kwargs))
        assert fresh is not None, (kind, op, i)
        twin = {k: _twin(v, k in BOOL_ARGUMENTS) for k, v in kwargs.items()}
        if _outcome(lambda: OPS[op](backend, **twin)) is None and KNOWN[op]:
            twins_remembered[kind] += 1
        assert _outcome(lambda: OPS[op](backend, **kwargs)) == fresh, (kind, op, i)
        tally("fast path: bad input after its twin", kind)
    # the dangerous kinds (bools and floats equal to ints, ints equal to bools) were exercised
    dangerous = ["float where an int is required", "bool where an int is required",
                 "non-bool where a bool is required", "bad output_mask"]
    assert all(twins_remembered[kind] >= 2 for kind in dangerous), twins_remembered
    assert sum(twins_remembered.values()) >= 30, twins_remembered


def _arrays(rng, dtype):
    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    return dict(x=r(2, 4, 7, 6), w=r(6, 2, 3, 2), b=r(6), tw=r(4, 3, 2, 3), tb=r(6))


def _kinds(a):
    """The same values as arrays the remembered path must run as is, or must leave to the checked path."""
    misaligned = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    misaligned[...] = a
    read_only = a.copy()
    read_only.flags.writeable = False
    return {"C": a, "read-only": read_only, "Fortran": np.asfortranarray(a),
            "strided": np.repeat(a, 2, axis=-1)[..., ::2], "misaligned": misaligned}


def _in_place(a):
    """Whether the kernels can read ``a`` as is (else the checked path copies it)."""
    return not isinstance(a, np.ndarray) or (type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned)


def _valid_calls(rng, dtype):
    """(op, args, kwargs) for every op: plain, unbatched, tuple/str arguments, options."""
    a = _arrays(rng, dtype)
    x, w, b, tw, tb = a["x"], a["w"], a["b"], a["tw"], a["tb"]
    y = cconv.conv2d(x, w, None, 1, "same", (1, 2), 2)
    ty = cconv.conv_transpose2d(x, tw, None, (2, 1), 1, (1, 0), 2)
    p, idx = cconv.max_pool2d(x, (3, 2), 2, 1, ceil_mode=True, return_indices=True)
    ap = cconv.avg_pool2d(x, 3, (2, 1), 1, True, False)
    gp = rng.standard_normal(p.shape).astype(dtype)
    calls = [
        ("conv2d", (x, w, b), dict(padding="same", dilation=(1, 2), groups=2)),
        ("conv2d", (x[0], w[:, :, :2], None), dict(stride=(2, 1), padding=(1, 0), groups=2)),
        ("conv_transpose2d", (x, tw, tb), dict(stride=(2, 1), padding=1, output_padding=(1, 0), groups=2)),
        ("conv_transpose2d", (x[1], tw, None), dict(stride=2, dilation=(2, 1), groups=2)),
        ("max_pool2d", (x, (3, 2), 2, 1), dict(ceil_mode=True, return_indices=True)),
        ("max_pool2d", (x[0], 2), dict(stride=(), dilation=(1, 2))),
        ("max_pool2d_backward", (gp, idx, x.shape), {}),
        ("max_pool2d_backward", (gp[1], idx[1], x.shape[1:]), {}),
        ("avg_pool2d", (x, 3, (2, 1), 1, True, False), {}),
        ("avg_pool2d", (x[0], (2, 3)), dict(divisor_override=5)),
        ("avg_pool2d_backward", (rng.standard_normal(ap.shape).astype(dtype), x.shape, 3, (2, 1), 1, True, False), {}),
    ]
    for mask in itertools.product([True, False], repeat=3):
        calls.append(("conv2d_backward", (rng.standard_normal(y.shape).astype(dtype), x, w),
                      dict(padding="same", dilation=(1, 2), groups=2, output_mask=mask)))
        calls.append(("conv_transpose2d_backward", (rng.standard_normal(ty.shape).astype(dtype), x, tw),
                      dict(stride=(2, 1), padding=1, output_padding=(1, 0), groups=2, output_mask=mask)))
    calls.append(("conv2d_backward", (rng.standard_normal(y.shape[1:]).astype(dtype), x[0], w),
                  dict(padding="same", dilation=(1, 2), groups=2)))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", cconv.available_backends())
def test_remembered_calls_give_identical_results(backend, dtype, checked_calls, rng):
    for op, args, kwargs in _valid_calls(rng, dtype):
        for kind in ("C", "read-only", "Fortran", "strided", "misaligned"):
            call_args = tuple(_kinds(a)[kind] if isinstance(a, np.ndarray) and a.dtype == dtype else a
                              for a in args)
            in_place = all(_in_place(a) for a in call_args)
            before = [a.copy() for a in call_args if isinstance(a, np.ndarray)]
            _forget()
            checked_calls[op] = 0
            first = getattr(cconv, op)(*call_args, **kwargs, backend=backend)
            assert checked_calls[op] == 1
            assert bool(KNOWN[op]) == in_place, (op, kind)   # remembered only when it can run as is
            again = getattr(cconv, op)(*call_args, **kwargs, backend=backend)
            assert checked_calls[op] == (1 if in_place else 2), (op, kind)  # the repeat skipped validation
            for a, f in zip(*((r if isinstance(r, tuple) else (r,)) for r in (again, first))):
                assert (a is None) == (f is None), (op, kind)
                if a is not None:
                    assert_identical(a, f)
            for old, new in zip(before, (a for a in call_args if isinstance(a, np.ndarray))):
                assert_identical(new, old)
            tally("fast path: repeated valid calls", f"{op} {kind}")


def test_remembered_max_pool_indices_are_checked_on_every_call(checked_calls):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    _, idx = cconv.max_pool2d(x, 2, return_indices=True)
    gy = np.ones((1, 1, 2, 2))
    cconv.max_pool2d_backward(gy, idx, x.shape)
    for bad in (16, -1, 2 ** 63 - 1):
        spoiled = idx.copy()
        spoiled[0, 0, 1, 1] = bad
        with pytest.raises(ValueError, match=rf"indices must lie in \[0, 16\).*found {bad}"):
            cconv.max_pool2d_backward(gy, spoiled, x.shape)
    big = np.zeros((1, 1, 8, 8), np.int64)      # more than the short-list check handles
    big[0, 0, 7, 7] = -5
    with pytest.raises(ValueError, match=r"found -5"):
        cconv.max_pool2d_backward(np.ones((1, 1, 8, 8)), big, (1, 1, 16, 16))
    assert checked_calls["max_pool2d_backward"] == 2    # the spoiled repeats took the remembered path


def test_backend_choice_is_followed_by_remembered_calls(checked_calls):
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2))
    cconv.conv2d(x, w)
    for name in cconv.available_backends():
        with cconv.use_backend(name):
            assert _api._resolve(None).name == name
            assert_identical(cconv.conv2d(x, w), cconv.conv2d(x, w, backend="numpy"))
    assert checked_calls["conv2d"] == 1
    with pytest.raises(ValueError, match="unknown or unavailable backend 'cuda'"):
        cconv.conv2d(x, w, backend="cuda")
    with pytest.raises(TypeError, match="backend name must be a str"):
        cconv.conv2d(x, w, backend=["numpy"])


def test_the_table_of_remembered_calls_is_bounded(checked_calls):
    w = np.ones((1, 1, 1, 1))
    for n in range(_api._MAX_KNOWN + 5):
        cconv.conv2d(np.ones((1, 1, 1, n + 1)), w)
    assert 0 < len(_api._CONV2D) <= _api._MAX_KNOWN
