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


# Element-wise passes (pooling: work = elements read plus window taps visited) give each thread
# of a team at least this much work: with less, waking a thread costs more than it saves
# (benchmarks/pool_threads.py measures where a second thread starts to pay).
DEF _ELEMENTWISE_GRAIN = 262144


cdef inline int _elementwise_team(int threads, Py_ssize_t tasks, Py_ssize_t work) noexcept nogil:
    """Threads for an element-wise pass over `tasks` independent planes: at most one per
    _ELEMENTWISE_GRAIN of work, then _team_size (one below the grain, never more than the
    setting or the tasks)."""
    return _team_size(<int>min(<Py_ssize_t>threads, work // _ELEMENTWISE_GRAIN), <double>work,
                      _ELEMENTWISE_GRAIN, tasks)
