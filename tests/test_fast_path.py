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
import os

import numpy as np
import pytest

import cconv
from cconv import _api
from conftest import REFERENCE, assert_close, assert_identical, tally
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


@pytest.mark.parametrize("op, dims", [("max_pool2d", 2), ("max_pool1d", 1), ("max_pool3d", 3)])
def test_compiled_max_pool_backward_checks_indices_in_its_scatter(monkeypatch, op, dims):
    """The compiled backend checks the index range in its parallel scatter pass (no serial
    NumPy pass first: check_index_range runs only to word the error); the reference backend
    checks first. A bad index deep in a multi-plane call on 2 threads raises the usual error."""
    from cconv import _api_nd, _shapes
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5) + (12,) * dims)
    y, idx = getattr(cconv, op)(x, 2, return_indices=True)
    gy = rng.standard_normal(y.shape)
    back = getattr(cconv, op + "_backward")
    seen = []
    monkeypatch.setattr(_shapes, "check_index_range", lambda *a: seen.append(a))
    monkeypatch.setattr(_api_nd, "_check_flat_indices", lambda *a: seen.append(a))
    saved = cconv.get_num_threads()
    try:
        cconv.set_num_threads(2)
        for _ in range(2):   # the first call and a remembered repeat
            got = back(gy, idx, x.shape, backend="cython")
            assert not seen
        assert_close(got, back(gy, idx, x.shape, backend=REFERENCE), context=op)
        assert len(seen) == 1
        monkeypatch.undo()
        cconv.set_num_threads(2)
        for bad in (12 ** dims, -1):
            spoiled = idx.copy()
            spoiled.reshape(-1)[spoiled.size * 2 // 3] = bad
            with pytest.raises(ValueError, match=rf"indices must lie in \[0, {12 ** dims}\).*found {bad}"):
                back(gy, spoiled, x.shape, backend="cython")
    finally:
        cconv.set_num_threads(saved)


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


# --------------------------------------------------------------------------
# the compiled backend: remembered conv2d calls keep their geometry in C and their arrays are
# checked there (exact ndarray, dtype in native byte order, shape, C-contiguous, aligned)
# --------------------------------------------------------------------------

needs_compiled = pytest.mark.skipif("cython" not in cconv.available_backends(),
                                    reason="the compiled backend is not built")


def _conv_module():
    from cconv import _compiled
    return _compiled._conv


def _ready_calls():
    return _conv_module().ready_calls()


class _Sub(np.ndarray):
    """An ndarray subclass: never run as is by a remembered call."""


def _conv_calls(rng, dtype):
    """(op, args, kwargs) of conv2d and conv2d_backward: batched, unbatched, options, masks."""
    a = _arrays(rng, dtype)
    x, w, b = a["x"], a["w"], a["b"]
    kwargs = dict(padding="same", dilation=(1, 2), groups=2)
    gy = rng.standard_normal(cconv.conv2d(x, w, None, **kwargs).shape).astype(dtype)
    calls = [("conv2d", (x, w, b), kwargs), ("conv2d", (x[0], w, None), dict(stride=2, groups=2)),
             ("conv2d", (x[:, :2].copy(), w), {}), ("conv2d_backward", (gy[1], x[1], w), kwargs)]
    calls += [("conv2d_backward", (gy, x, w), dict(kwargs, output_mask=mask))
              for mask in itertools.product([True, False], repeat=3)]
    return calls


def _results(r):
    return r if isinstance(r, tuple) else (r,)


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_conv_calls_run_through_the_compiled_entry(dtype, checked_calls, rng):
    """The repeat of a validated call skips the checked path and is served by the compiled
    entry for remembered calls (its counter), with the same bits and the inputs untouched."""
    for op, args, kwargs in _conv_calls(rng, dtype):
        before = [a.copy() for a in args if a is not None]
        checked_calls[op] = 0
        ready = _ready_calls()
        first = getattr(cconv, op)(*args, **kwargs)
        assert (checked_calls[op], _ready_calls()) == (1, ready), op
        again = getattr(cconv, op)(*args, **kwargs)
        assert (checked_calls[op], _ready_calls()) == (1, ready + 1), op
        reference = getattr(cconv, op)(*args, **kwargs, backend="numpy")
        for a, f, r in zip(_results(again), _results(first), _results(reference)):
            assert (a is None) == (f is None) == (r is None), op
            if a is not None:
                assert_identical(a, f)
                assert_close(a, r)
                assert type(a) is np.ndarray and a.flags.c_contiguous and a.flags.writeable
        for old, new in zip(before, (a for a in args if a is not None)):
            assert_identical(new, old)
        tally("fast path: compiled entry", op)


def _same_key_variants(a):
    """Arrays with a's shape and dtype (so the remembered call's key) that no kernel may read as is."""
    misaligned = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    misaligned[...] = a
    return {"Fortran": np.asfortranarray(a), "strided": np.repeat(a, 2, axis=-1)[..., ::2],
            "misaligned": misaligned, "subclass": a.copy().view(_Sub)}


@needs_compiled
def test_arrays_not_as_remembered_take_the_checked_path(checked_calls, rng):
    """Same key (shapes, dtypes, arguments), arrays the kernels cannot read in place: each call
    is validated again, gives the checked path's result and leaves its arrays as they were."""
    for op, args, kwargs in _conv_calls(rng, np.float32)[:1] + _conv_calls(rng, np.float32)[4:5]:
        expected = getattr(cconv, op)(*args, **kwargs)
        for i, a in enumerate(args):
            for kind, odd in _same_key_variants(a).items():
                if kind == "Fortran" and a.ndim == 1:
                    continue            # a 1-d array is C-contiguous in either order
                call_args = args[:i] + (odd,) + args[i + 1:]
                kept = odd.copy()
                checked_calls[op] = 0
                ready = _ready_calls()
                got = getattr(cconv, op)(*call_args, **kwargs)
                assert (checked_calls[op], _ready_calls()) == (1, ready), (op, i, kind)
                for g, e in zip(_results(got), _results(expected)):
                    assert_identical(g, e)
                assert_identical(odd, kept)
                assert odd.flags.c_contiguous == (kind in ("misaligned", "subclass"))
                tally("fast path: same key, array not in place", f"{op} {kind}")


@needs_compiled
def test_every_changed_argument_misses_the_remembered_call(checked_calls, rng):
    """A call differing from a remembered one in any array's dtype or shape, in
    bias presence, in any argument or in output_mask is validated, not run as remembered."""
    a = _arrays(rng, np.float32)
    x, w, b = a["x"], a["w"], a["b"]
    base = dict(input=x, weight=w, bias=b, stride=1, padding=1, dilation=1, groups=2)
    changes = {"input dtype": dict(input=x.astype(np.float64), weight=w.astype(np.float64),
                                   bias=b.astype(np.float64)),
               "input shape": dict(input=x[:1]), "unbatched": dict(input=x[0]),
               "weight shape": dict(weight=w[:, :, :2]), "no bias": dict(bias=None),
               "stride": dict(stride=2), "stride pair": dict(stride=(1, 2)), "padding": dict(padding=0),
               "padding str": dict(padding="same"), "dilation": dict(dilation=2), "groups": dict(groups=1,
                                                                                                  input=x[:, :2].copy())}
    cconv.conv2d(**base)
    for name, change in changes.items():
        checked_calls["conv2d"] = 0
        ready = _ready_calls()
        got = cconv.conv2d(**dict(base, **change))
        assert (checked_calls["conv2d"], _ready_calls()) == (1, ready), name
        assert_close(got, cconv.conv2d(**dict(base, **change), backend="numpy"))
    swapped = dict(input=x.astype(">f4"), weight=w.astype(">f4"), bias=b.astype(">f4"))
    with pytest.raises(TypeError, match="input has dtype >f4"):     # validation refuses it
        cconv.conv2d(**dict(base, **swapped))
    gy = rng.standard_normal(cconv.conv2d(**base).shape).astype(np.float32)
    masks = list(itertools.product([True, False], repeat=3))
    cconv.conv2d_backward(gy, x, w, 1, 1, 1, 2, output_mask=masks[0])
    for mask in masks[1:]:
        checked_calls["conv2d_backward"] = 0
        cconv.conv2d_backward(gy, x, w, 1, 1, 1, 2, output_mask=mask)
        assert checked_calls["conv2d_backward"] == 1, mask


@needs_compiled
def test_the_compiled_entry_refuses_arrays_unlike_its_call(rng):
    """conv2d_ready / conv2d_backward_ready check every array in C and return None (the caller then
    validates) for anything the kernels cannot read in place as the remembered call's arrays."""
    conv = _conv_module()
    a = _arrays(rng, np.float32)
    x, w, b = a["x"], a["w"], a["b"]
    g = _shapes_geometry(x, w)
    call = conv.ConvCall(g, np.float32, x.shape, w.shape, g.output_shape)
    y = conv.conv2d_ready(x, w, b, call, 1)
    assert_identical(y, cconv.conv2d(x, w, b, groups=2))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    good = dict(x=x, w=w, b=b, gy=gy)
    bad = {"float64": lambda v: v.astype(np.float64), "byte-swapped": lambda v: v.astype(">f4"),
           "shape": lambda v: v[:1], "ndim": lambda v: v[None], "list": lambda v: v.tolist(),
           "None": lambda v: None, **{kind: (lambda v, k=kind: _same_key_variants(v)[k])
                                      for kind in ("Fortran", "strided", "misaligned", "subclass")}}
    for name, spoil in bad.items():
        for which in ("x", "w", "b", "gy"):
            if name in ("None", "Fortran") and which == "b":
                continue                # None is no bias; a 1-d array is Fortran-ordered too
            arrays = dict(good, **{which: spoil(good[which])})
            kept = [v.copy() for v in arrays.values() if isinstance(v, np.ndarray)]
            if which != "gy":
                assert conv.conv2d_ready(arrays["x"], arrays["w"], arrays["b"], call, 1) is None, (name, which)
            if which != "b":
                assert conv.conv2d_backward_ready(arrays["gy"], arrays["x"], arrays["w"], call, True, True, True,
                                                  1) is None, (name, which)
            for old, new in zip(kept, (v for v in arrays.values() if isinstance(v, np.ndarray))):
                assert_identical(new, old)
    with pytest.raises(TypeError):
        conv.conv2d_ready(x, w, b, g, 1)      # a geometry object is not a remembered call
    with pytest.raises(TypeError, match="float32 or float64"):
        conv.ConvCall(g, np.int64, x.shape, w.shape, g.output_shape)


def _shapes_geometry(x, w):
    from cconv import _shapes
    return _shapes.conv_geometry(x.shape, w.shape, 1, 0, 1, 2)


@needs_compiled
def test_remembered_calls_follow_thread_count_and_autotune(checked_calls):
    """The plan is looked up on every remembered call with the settings of the moment: a new
    thread count is a new plan, and turning autotune on tunes on the next remembered call."""
    conv = _conv_module()
    saved = cconv.get_num_threads()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 16, 13, 11), dtype=np.float32)   # a geometry no other test plans
    w = rng.standard_normal((20, 16, 3, 3), dtype=np.float32)
    try:
        cconv.set_num_threads(1)
        expected = cconv.conv2d(x, w, padding=1)
        cconv.set_num_threads(3)
        misses = conv.build_info()["plan_cache"]["misses"]
        ready = _ready_calls()
        assert_identical(cconv.conv2d(x, w, padding=1), expected)     # bit-identical for any thread count
        assert _ready_calls() == ready + 1
        assert conv.build_info()["plan_cache"]["misses"] == misses + 1      # planned for 3 threads
        conv._forget_tuned()
        cconv.set_autotune(True)
        assert_close(cconv.conv2d(x, w, padding=1), expected)
        info = conv.autotune_info()
        assert (info["tunings"], info["entries"]) == (1, 1), info
        assert _ready_calls() == ready + 2
        assert checked_calls["conv2d"] == 1
    finally:
        cconv.set_autotune(False)
        conv._forget_tuned()
        cconv.set_num_threads(saved)


@needs_compiled
def test_remembered_calls_run_the_forced_algorithm():
    """CCONV_CONV_ALGO (read at import, like CCONV_KERNEL_ISA) applies to remembered calls too."""
    import subprocess
    import sys
    code = ("import numpy as np, cconv\n"
            "from cconv import _compiled\n"
            "x, w = np.ones((1, 8, 9, 9), np.float32), np.ones((8, 8, 3, 3), np.float32)\n"
            "for _ in range(3): cconv.conv2d(x, w)\n"
            "print(_compiled._conv.ready_calls(), _compiled._conv.algorithm_counts())\n")
    env = dict(os.environ, CCONV_CONV_ALGO="im2col")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 {('im2col', 'forward'): 3}", out.stdout


# --------------------------------------------------------------------------
# conv1d and conv1d_backward: (N, C, L) arrays run as remembered conv2d calls of height 1
# --------------------------------------------------------------------------

def _forget_1d():
    from cconv import _api_nd
    _api_nd._CONV1D.clear()
    _api_nd._CONV1D_BACKWARD.clear()


CONV1D_BAD_TWINS = [dict(stride=True), dict(stride=1.0), dict(stride=(1.0,)), dict(padding=False),
                    dict(padding=0.0), dict(dilation=True), dict(dilation=np.float64(1)), dict(groups=True),
                    dict(groups=1.0), dict(padding="VALID")]
CONV1D_BACKWARD_BAD_MASKS = [(1, 1, 1), (True, True, 1), (True, False, np.float64(0))]


def test_conv1d_bad_inputs_fail_alike_after_their_good_twin_was_remembered():
    x, w = np.ones((2, 4, 9)), np.ones((6, 4, 3))
    gy = np.ones((2, 6, 7))
    cases = [(lambda kw: cconv.conv1d(x, w, **kw), kw) for kw in CONV1D_BAD_TWINS]
    cases += [(lambda kw: cconv.conv1d_backward(gy, x, w, **kw), kw) for kw in CONV1D_BAD_TWINS]
    cases += [(lambda kw: cconv.conv1d_backward(gy, x, w, **kw), dict(output_mask=m)) for m in CONV1D_BACKWARD_BAD_MASKS]
    for call, bad in cases:
        _forget_1d()
        fresh = _outcome(lambda: call(bad))
        assert fresh is not None, bad
        twin = {k: _twin(v, k == "output_mask") if k != "padding" or not isinstance(v, str) else v.lower()
                for k, v in bad.items()}
        assert _outcome(lambda: call(twin)) is None, twin
        assert _outcome(lambda: call(twin)) is None, twin      # the repeat of the remembered twin
        assert _outcome(lambda: call(bad)) == fresh, bad
        tally("fast path: bad input after its twin", "conv1d")
    _forget_1d()


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_conv1d_calls_run_through_the_compiled_entry(dtype, rng):
    x = rng.standard_normal((2, 4, 9)).astype(dtype)
    w = rng.standard_normal((6, 2, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    _forget_1d()
    for kwargs in (dict(groups=2), dict(groups=2, padding="same", dilation=2), dict(groups=2, stride=2, padding=1)):
        for xx, bb in ((x, b), (x[1], None)):
            ready = _ready_calls()
            first, again = cconv.conv1d(xx, w, bb, **kwargs), cconv.conv1d(xx, w, bb, **kwargs)
            assert _ready_calls() == ready + 1
            assert_identical(again, first)
            assert_close(again, cconv.conv1d(xx, w, bb, **kwargs, backend="numpy"))
            gy = rng.standard_normal(first.shape).astype(dtype)
            for mask in itertools.product([True, False], repeat=3):
                ready = _ready_calls()
                first = cconv.conv1d_backward(gy, xx, w, **kwargs, output_mask=mask)
                again = cconv.conv1d_backward(gy, xx, w, **kwargs, output_mask=mask)
                assert _ready_calls() == ready + 1
                reference = cconv.conv1d_backward(gy, xx, w, **kwargs, output_mask=mask, backend="numpy")
                for a, f, r in zip(again, first, reference):
                    assert (a is None) == (f is None) == (r is None)
                    if a is not None:
                        assert_identical(a, f)
                        assert_close(a, r)
            for kind, odd in _same_key_variants(xx).items():   # same key, not readable in place
                ready = _ready_calls()
                assert_identical(cconv.conv1d(odd, w, bb, **kwargs), cconv.conv1d(xx, w, bb, **kwargs))
                assert _ready_calls() == ready + 1, kind     # only the second call ran as remembered
            tally("fast path: compiled entry", "conv1d")
    _forget_1d()


# --------------------------------------------------------------------------
# the other 1-d and 3-d ops: validation remembered, the work done on every call
# --------------------------------------------------------------------------

ND_VALIDATORS = {"conv3d": "_conv3d_plan", "conv3d_backward": "_conv3d_plan", "max_pool1d": "_pool1d_args",
                 "avg_pool1d": "_pool1d_args", "max_pool3d": "_pool3d_plan", "avg_pool3d": "_avg3d_plan",
                 "conv_transpose1d": "_transpose1d_args", "conv_transpose1d_backward": "_transpose1d_args",
                 "conv_transpose3d": "_transpose3d_plan", "conv_transpose3d_backward": "_transpose3d_plan"}


@pytest.fixture
def nd_validations(monkeypatch):
    """Count the calls of each N-d op's validation; the tables start and end empty."""
    from cconv import _api_nd
    counts = {"n": 0}
    for name in set(ND_VALIDATORS.values()):
        original = getattr(_api_nd, name)

        def counting(*args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(_api_nd, name, counting)

    def forget():
        for table in (_api_nd._CONV3D, _api_nd._CONV3D_BACKWARD, _api_nd._MAX_POOL1D, _api_nd._AVG_POOL1D,
                      _api_nd._MAX_POOL3D, _api_nd._AVG_POOL3D, _api_nd._CONV_TRANSPOSE1D,
                      _api_nd._CONV_TRANSPOSE1D_BACKWARD, _api_nd._CONV_TRANSPOSE3D, _api_nd._CONV_TRANSPOSE3D_BACKWARD):
            table.clear()

    forget()
    counts["forget"] = forget
    yield counts
    forget()


def _nd_calls(rng, dtype):
    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    x3, w3, b3, x1 = r(2, 4, 5, 6, 6), r(6, 2, 3, 2, 3), r(6), r(2, 3, 9)
    conv3 = dict(stride=(1, 2, 1), padding=1, groups=2)
    gy3 = r(*cconv.conv3d(x3, w3, **conv3).shape)
    rows = dict(padding=(1, 0, 0), groups=2)          # a (kd, 1, 1) kernel: the depth-as-rows route
    w3r = r(6, 2, 3, 1, 1)
    gy3r = r(*cconv.conv3d(x3, w3r, **rows).shape)
    calls = [("conv3d", (x3, w3, b3), conv3), ("conv3d", (x3[1], w3, None), dict(padding="same", groups=2)),
             ("conv3d", (x3, w3r, b3), rows), ("conv3d_backward", (gy3[0], x3[0], w3), conv3),
             ("max_pool1d", (x1, 3), dict(stride=2, padding=1, ceil_mode=True, return_indices=True)),
             ("max_pool1d", (x1[0], (2,)), dict(dilation=2)), ("avg_pool1d", (x1, 3, 2, 1, True, False), {}),
             ("avg_pool1d", (x1[1], 2), {}),
             ("max_pool3d", (x3, 2), dict(stride=(1, 2, 2), padding=1, return_indices=True)),
             ("max_pool3d", (x3[0], (3, 2, 2)), dict(ceil_mode=True)),
             ("avg_pool3d", (x3, 3, 2, 1), dict(ceil_mode=True, count_include_pad=False)),
             ("avg_pool3d", (x3[1], 2), dict(divisor_override=3))]
    calls += [("conv3d_backward", (gy3, x3, w3), dict(conv3, output_mask=m))
              for m in itertools.product([True, False], repeat=3)]
    calls += [("conv3d_backward", (gy3r, x3, w3r), dict(rows, output_mask=m))
              for m in [(True, True, True), (True, False, False)]]
    tw1, tw3 = r(3, 2, 3), r(4, 3, 2, 3, 2)
    t1 = dict(stride=2, padding=1, output_padding=1)
    t3 = dict(stride=(2, 1, 2), padding=(1, 0, 1), output_padding=(1, 0, 0), dilation=(1, 2, 1))
    gyt1, gyt3 = r(*cconv.conv_transpose1d(x1, tw1, **t1).shape), r(*cconv.conv_transpose3d(x3, tw3, **t3).shape)
    calls += [("conv_transpose1d", (x1, tw1, r(2)), t1), ("conv_transpose1d", (x1[0], tw1), dict(dilation=2)),
              ("conv_transpose3d", (x3, tw3, r(3)), t3), ("conv_transpose3d", (x3[1], tw3), {}),
              ("conv_transpose1d_backward", (gyt1[0], x1[0], tw1), t1),
              ("conv_transpose3d_backward", (gyt3[1], x3[1], tw3), t3)]
    calls += [(op, args, dict(kw, output_mask=m)) for m in [(True, True, True), (False, True, False)]
              for op, args, kw in (("conv_transpose1d_backward", (gyt1, x1, tw1), t1),
                                   ("conv_transpose3d_backward", (gyt3, x3, tw3), t3))]
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", cconv.available_backends())
def test_repeated_nd_calls_skip_validation(backend, dtype, nd_validations, rng):
    for op, args, kwargs in _nd_calls(rng, dtype):
        for kind in ("C", "Fortran"):
            call_args = tuple(np.asfortranarray(a) if kind == "Fortran" and isinstance(a, np.ndarray) else a
                              for a in args)
            before = [a.copy() for a in call_args if isinstance(a, np.ndarray)]
            nd_validations["forget"]()
            nd_validations["n"] = 0
            first = getattr(cconv, op)(*call_args, **kwargs, backend=backend)
            validated = nd_validations["n"]
            again = getattr(cconv, op)(*call_args, **kwargs, backend=backend)
            assert validated > 0 and nd_validations["n"] == (1 if kind == "C" else 2) * validated, (op, kind)
            for a, f in zip(_results(again), _results(first)):
                assert (a is None) == (f is None), op
                if a is not None:
                    assert_identical(a, f)
            for old, new in zip(before, (a for a in call_args if isinstance(a, np.ndarray))):
                assert_identical(new, old)
            tally("fast path: n-d repeated calls", f"{op} {kind}")


ND_BAD_TWINS = [
    ("conv3d", lambda kw: cconv.conv3d(np.ones((1, 2, 4, 4, 4)), np.ones((2, 2, 2, 2, 2)), **kw),
     [dict(stride=True), dict(stride=(1, 1, 1.0)), dict(padding=False), dict(dilation=1.0), dict(groups=True)]),
    ("conv3d_backward", lambda kw: cconv.conv3d_backward(np.ones((1, 2, 3, 3, 3)), np.ones((1, 2, 4, 4, 4)),
                                                         np.ones((2, 2, 2, 2, 2)), **kw),
     [dict(output_mask=(1, 1, 1)), dict(output_mask=(True, np.float64(1), True)), dict(groups=1.0)]),
    ("max_pool1d", lambda kw: cconv.max_pool1d(np.ones((1, 2, 8)), **kw),
     [dict(kernel_size=2.0), dict(kernel_size=True), dict(kernel_size=2, stride=1.0),
      dict(kernel_size=2, ceil_mode=0), dict(kernel_size=2, return_indices=1), dict(kernel_size=2, padding=False)]),
    ("avg_pool1d", lambda kw: cconv.avg_pool1d(np.ones((1, 2, 8)), **kw),
     [dict(kernel_size=2.0), dict(kernel_size=2, ceil_mode=0), dict(kernel_size=2, count_include_pad=1)]),
    ("max_pool3d", lambda kw: cconv.max_pool3d(np.ones((1, 2, 4, 4, 4)), **kw),
     [dict(kernel_size=(2, 2, 2.0)), dict(kernel_size=2, ceil_mode=1), dict(kernel_size=2, return_indices=0),
      dict(kernel_size=2, dilation=True)]),
    ("conv_transpose1d", lambda kw: cconv.conv_transpose1d(np.ones((1, 2, 5)), np.ones((2, 3, 2)), **kw),
     [dict(stride=2.0), dict(output_padding=False), dict(groups=True), dict(dilation=(1.0,))]),
    ("conv_transpose3d_backward", lambda kw: cconv.conv_transpose3d_backward(
        np.ones((1, 3, 5, 5, 5)), np.ones((1, 2, 4, 4, 4)), np.ones((2, 3, 2, 2, 2)), **kw),
     [dict(output_mask=(True, 0, True)), dict(padding=(0, 0, False)), dict(stride=True)]),
    ("avg_pool3d", lambda kw: cconv.avg_pool3d(np.ones((1, 2, 4, 4, 4)), **kw),
     [dict(kernel_size=2, divisor_override=2.0), dict(kernel_size=2, divisor_override=True),
      dict(kernel_size=2, count_include_pad=0), dict(kernel_size=True)]),
]


def test_nd_bad_inputs_fail_alike_after_their_good_twin_was_remembered(nd_validations):
    for op, call, bads in ND_BAD_TWINS:
        for bad in bads:
            nd_validations["forget"]()
            fresh = _outcome(lambda: call(bad))
            assert fresh is not None, (op, bad)
            twin = {k: _twin(v, k in BOOL_ARGUMENTS | {"return_indices"}) for k, v in bad.items()}
            assert _outcome(lambda: call(twin)) is None, (op, twin)
            assert _outcome(lambda: call(twin)) is None, (op, twin)
            assert _outcome(lambda: call(bad)) == fresh, (op, bad)
            tally("fast path: bad input after its twin", op)
