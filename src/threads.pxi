# The thread policy, shared by the extension modules (included by _conv.pyx and _pool.pyx).
#
# The thread count arrives with each call from the Python layer (cconv.get_num_threads(),
# read once per op call).  Each pass's plan takes a team of that many threads at most, one
# when the pass is too small to pay for waking a team or has a single task; a team of one
# runs its loop without entering an OpenMP parallel region at all (a forked child whose
# parent used OpenMP must not enter one: libgomp's thread pool did not survive the fork).


cdef inline int _team_size(int threads, double work, double min_work,
                           Py_ssize_t tasks) noexcept nogil:
    """Threads for a pass of `work` units (multiply-adds, elements) over `tasks`
    independent tasks: one below `min_work`, else the setting capped by the task count."""
    if threads < 2 or work < min_work or tasks < 2:
        return 1
    return <int>min(<Py_ssize_t>threads, tasks)


# Waking the sleeping workers of a team costs about this many microseconds per parallel region
# (GNU libgomp with passive waits, which cconv sets at import unless the user chose a wait
# policy).  Measured on the 2-core VM this was tuned on (2026-12-02, 2000 repetitions each): an
# empty 2-thread region took 82-97 us median (p10 52-76, p90 125-150) after a serial gap of
# 0-100 us and 138 us after 1 ms, against 1.3-3.5 us on one thread and 1.0-2.2 us with
# spinning waits; inside cconv, a batch-1 pass with one parallel region took 85-146 us (median
# 116 over 14 layers) longer on 2 threads than half its 1-thread time.  Each thread of a team
# must therefore bring at least this much time's work (see _grain_team's callers).
DEF _TEAM_WAKE_US = 116


cdef inline int _grain_team(int threads, double work, double grain, Py_ssize_t tasks) noexcept nogil:
    """Threads for a pass of `work` units over `tasks` independent tasks when each thread of a
    team must have at least `grain` units: at most one per grain (so one below two grains),
    never more than the setting or the tasks."""
    return _team_size(<int>min(<double>threads, work / grain), work, grain, tasks)


# Element-wise passes (pooling: work = elements read plus window taps visited) give each thread
# of a team at least this much work: with less, waking a thread costs more than it saves
# (benchmarks/pool_threads.py measures where a second thread starts to pay).
DEF _ELEMENTWISE_GRAIN = 262144


cdef inline int _elementwise_team(int threads, Py_ssize_t tasks, Py_ssize_t work) noexcept nogil:
    """Threads for an element-wise pass over `tasks` independent planes: at most one per
    _ELEMENTWISE_GRAIN of work (_grain_team)."""
    return _grain_team(threads, <double>work, _ELEMENTWISE_GRAIN, tasks)
