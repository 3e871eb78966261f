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
