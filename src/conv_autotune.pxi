# Autotune (opt-in): on the first call of a pass geometry, run every algorithm that can
# compute the pass exactly on the call's own arrays, timed, and keep the fastest for that
# geometry; later calls of the geometry run it.  Included by _conv.pyx.
#
# The candidates are the planner's (applicable_algos): an algorithm added to the planner is
# tuned over without code here.  A tuned entry is keyed like a plan (pass, geometry, dtype,
# threads, finiteness facts), so a tuned call runs exactly the plan that forcing the winner
# would give, and its result is that plan's, bit for bit.  Off when CCONV_CONV_ALGO forces.

from collections import OrderedDict
from time import perf_counter

DEF _TUNED_MAX = 512        # pass geometries remembered; the least recently used goes first
DEF _TUNE_REPEATS = 2       # timed runs per candidate; the fastest counts
DEF _CLEARLY_SLOWER = 1.5   # a first run this much slower than the best: not repeated
DEF _MARGIN = 0.97          # a candidate replaces the best only when >= 3% faster

cdef bint _autotune = False
# plan key (bytes) -> (want, algo, timings): want is the algorithm to force (-1: the planner's
# choice won, or nothing to tune), algo the one that runs, timings {algorithm: microseconds}
# (None: only one algorithm applies)
_tuned = OrderedDict()
cdef Py_ssize_t _tuned_hits = 0, _tunings = 0, _timed_runs = 0, _tuned_evictions = 0


cdef inline bint _tunable(int pass_, const cconv_geom *s, Py_ssize_t batch,
                          Py_ssize_t m) noexcept:
    return (_autotune and _env_algo < 0 and pass_ != P_GRAD_BIAS and batch > 0 and m > 0
            and s.channels * s.kernel_h * s.kernel_w > 0)


cdef bytes _tuned_key(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                      Py_ssize_t m, int itemsize, int threads, int fin):
    cdef Py_ssize_t key[_KEY_LEN]
    _make_key(key, pass_, s, batch, groups, m, itemsize, threads, fin, -1)
    return (<char *>key)[:sizeof(key)]


cdef object _tuned_plan(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                        Py_ssize_t m, int itemsize, int threads, const void *data,
                        Py_ssize_t n_data, const void *other, Py_ssize_t n_other, _Facts *f,
                        ConvPlan *plan, bint use):
    """The tuned entry (want, algo, timings) of this pass on these operands, its plan into
    `plan`; None when not tuned yet, f then holding both operands' facts.  use: a call will
    run it (a hit, and the entry becomes the most recently used), not explain.

    The entry tuned on finite operands serves whenever its winner is still exact (it beat
    every algorithm that is exact here too); else the entry of the facts as they are."""
    global _tuned_hits
    key = _tuned_key(pass_, s, batch, groups, m, itemsize, threads, F_ALL)
    entry = _tuned.get(key)
    if entry is not None:
        plan[0] = _plan(pass_, s, batch, groups, m, itemsize, threads, data, n_data, other,
                        n_other, entry[0], f)
        if plan.algo != entry[1] or (entry[0] >= 0 and plan.forced != 1):
            entry = None          # its winner is not exact on these operands
    if entry is None:
        _learn(f, F_ALL, data, n_data, other, n_other, itemsize)
        if f.fin == F_ALL:
            return None
        key = _tuned_key(pass_, s, batch, groups, m, itemsize, threads, f.fin)
        entry = _tuned.get(key)
        if entry is None:
            return None
        plan[0] = _plan(pass_, s, batch, groups, m, itemsize, threads, data, n_data, other,
                        n_other, entry[0], f)
    if use:
        _tuned.move_to_end(key)
        _tuned_hits += 1
    return entry


cdef void _remember(bytes key, entry):
    global _tuned_evictions
    _tuned.pop(key, None)
    _tuned[key] = entry
    while len(_tuned) > _TUNED_MAX:
        _tuned.popitem(last=False)
        _tuned_evictions += 1


cdef double _timed(const ConvPlan *p, const floating *a, const floating *b,
                   const floating *bias, floating *out) except -1:
    global _timed_runs
    cdef double start = perf_counter()
    _execute_plan(p, a, b, bias, out)     # the plan's team: the timed team choice stays out
    _timed_runs += 1
    return perf_counter() - start


cdef ConvPlan _tune(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                    Py_ssize_t m, int threads, const floating *a, Py_ssize_t n_a,
                    const floating *b, Py_ssize_t n_b, const floating *bias, floating *out,
                    _Facts *f, bint *done) except *:
    """Time each applicable algorithm on this call's arrays (the planner's choice first), keep
    the fastest for the geometry and return its plan; out then holds its result (*done)."""
    global _tunings
    cdef int itemsize = sizeof(floating), n, i
    cdef int algos[N_ALGOS]
    cdef int best_want = -1
    cdef double t, best = 0
    cdef ConvPlan plan, best_plan
    cdef ConvPlan predicted = _plan(pass_, s, batch, groups, m, itemsize, threads, a, n_a, b,
                                    n_b, -1, f)
    key = _tuned_key(pass_, s, batch, groups, m, itemsize, threads, f.fin)
    n = applicable_algos(pass_, s, batch, groups, m, itemsize, threads, f.fin, algos)
    wants = [-1] + [algos[i] for i in range(n) if algos[i] != predicted.algo]
    if len(wants) < 2:
        _remember(key, (-1, predicted.algo, None))
        return predicted
    _tunings += 1
    timings = {}
    for want in wants:
        plan = predicted if want < 0 else _plan(pass_, s, batch, groups, m, itemsize, threads,
                                                a, n_a, b, n_b, want, f)
        t = _timed(&plan, a, b, bias, out)
        if want < 0 or t < _CLEARLY_SLOWER * best:
            for i in range(1, _TUNE_REPEATS):
                t = min(t, _timed(&plan, a, b, bias, out))
        timings[ALGORITHMS[plan.algo]] = round(t * 1e6, 1)
        if want < 0 or t < _MARGIN * best:
            best = t
            best_want = want
            best_plan = plan
    if best_want != wants[len(wants) - 1]:
        _execute(&best_plan, a, b, bias, out)   # the winner's result is the call's
    done[0] = True
    _remember(key, (best_want, best_plan.algo, timings))
    return best_plan


cdef ConvPlan _select(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                      Py_ssize_t m, int threads, const floating *a, Py_ssize_t n_a,
                      const floating *b, Py_ssize_t n_b, const floating *bias, floating *out,
                      bint *done) except *:
    """The plan a call of pass_ runs on operands a, b (see _execute): the planner's, or with
    autotune on the geometry's tuned one, tuned now if it is the geometry's first call (*done
    is then set: out holds the result)."""
    cdef int itemsize = sizeof(floating)
    cdef _Facts f
    cdef ConvPlan plan
    f.fin = F_ALL
    f.known = 0
    done[0] = False
    if not _tunable(pass_, s, batch, m):
        return _plan(pass_, s, batch, groups, m, itemsize, threads, a, n_a, b, n_b, -1, &f)
    if _tuned_plan(pass_, s, batch, groups, m, itemsize, threads, a, n_a, b, n_b, &f,
                   &plan, True) is not None:
        return plan
    return _tune(pass_, s, batch, groups, m, threads, a, n_a, b, n_b, bias, out, &f, done)


def set_autotune(bint enabled):
    """Turn autotuning on or off (cconv.set_autotune is the public switch)."""
    global _autotune
    _autotune = enabled


def autotune_info():
    """Autotune's state and its cache of tuned geometries (for cconv.backend_info())."""
    return {"enabled": bool(_autotune), "active": bool(_autotune and _env_algo < 0),
            "entries": len(_tuned), "capacity": _TUNED_MAX, "tunings": int(_tunings),
            "timed_runs": int(_timed_runs), "calls_served": int(_tuned_hits),
            "evictions": int(_tuned_evictions)}


def _forget_tuned():
    """Empty the tuned cache and its counters (tests)."""
    global _tuned_hits, _tunings, _timed_runs, _tuned_evictions
    _tuned.clear()
    _tuned_hits = _tunings = _timed_runs = _tuned_evictions = 0
