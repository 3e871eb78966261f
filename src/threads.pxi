# The thread policy, shared by the extension modules (included by _conv.pyx and _pool.pyx).
#
# The thread count arrives with each call from the Python layer (cconv.get_num_threads(),
# read once per op call).  Each pass's plan takes a team of that many threads at most, one
# when the pass is too small to pay for waking a team or has a single task; a team of one
# runs its loop without entering an OpenMP parallel region at all (a forked child whose
# parent used OpenMP must not enter one: libgomp's thread pool did not survive the fork).
# At run time a planned team is checked against one thread by timing (the end of this file).


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


# ---- teams chosen by measurement ----------------------------------------------------------
# The rules above assume the machine's other cores are free.  On a laptop, a CI runner or a
# shared server they often are not: with one other busy process on a 2-core machine, a team
# of two gets about 1.2 cores (the scheduler shares the busy core) and pays a wake-up and a
# join, so small and medium calls run slower on two threads than on one.  Since no result
# depends on the thread count, the team a plan asks for can be checked against one thread
# as the calls come: each keyed call (a pass's plan, a pool's geometry) keeps the recent
# time of both, runs the faster, and measures the other now and then, often when the two
# are close or the team's time rises, rarely when the team is clearly ahead.
# Opt-in (CCONV_ADAPTIVE_THREADS=1): it helps next to a busy process (benchmarks/
# under_load_results.md), but in a process that alternates cconv's calls with torch's (a
# backend comparison: torch's OpenMP workers spin on the cores after each of its calls) it
# put 2-thread passes on one thread where the team was faster: the seed-0 sweep's first 25
# layers at 2 threads, torch/cconv geomean 1.60 on, 2.16 off.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static double cconv_now(void) { return omp_get_wtime(); }
    #else
    static double cconv_now(void) { return 0.0; }
    #endif
    """
    double cconv_now() nogil

DEF _TEAM_SLOTS = 256
DEF _TEAM_KEY = 24
DEF _TEAM_CLOSE = 0.8        # team below this fraction of one thread's time: clearly ahead
DEF _TEAM_PROBE_CLOSE = 16   # calls between measurements of the other size when close
DEF _TEAM_PROBE_AHEAD = 256  # ... and when the team is clearly ahead


cdef struct TeamStats:
    Py_ssize_t key[_TEAM_KEY]
    double t_team             # recent seconds per call on the plan's team (0: not measured)
    double t_one              # recent seconds per call on one thread (0: not measured)
    int since                 # calls since the size not in use was last measured
    int last                  # what the previous call ran: 0 nothing yet, 1 one thread, 2 the team
    int probe                 # 0, or the size (1, 2) being measured until one warm call is timed


cdef TeamStats _team_stats[_TEAM_SLOTS]
cdef bint _adaptive_teams = False
cdef Py_ssize_t _team_runs[2]   # calls run on [one thread, the plan's team] by the choice below


cdef TeamStats *_team_slot(const Py_ssize_t *key) noexcept nogil:
    """The stats of `key` (_TEAM_KEY values; a different key in its slot is replaced)."""
    cdef size_t h = 0
    cdef int i
    for i in range(_TEAM_KEY):
        h = (h ^ <size_t>key[i]) * <size_t>1000003
    cdef TeamStats *st = &_team_stats[(h ^ (h >> 17)) % _TEAM_SLOTS]
    if memcmp(st.key, key, sizeof(st.key)) != 0:
        memset(st, 0, sizeof(TeamStats))
        memcpy(st.key, key, sizeof(st.key))
    return st


cdef int _team_now(TeamStats *st, int team) noexcept nogil:
    """Threads for this call of a keyed call whose plan asks for `team`: the team until it
    has been timed, then one thread until it has, then the faster of the two, the other
    measured again every _TEAM_PROBE_* calls."""
    cdef int size
    if team < 2 or st == NULL:
        return team
    if st.t_team == 0:
        size = 2
    elif st.t_one == 0:
        size = 1
    elif st.probe:
        size = st.probe
    else:
        size = 1 if st.t_one < st.t_team else 2
        st.since = st.since + 1 if size == st.last else 0   # a switch starts the count again
        if st.since >= (_TEAM_PROBE_AHEAD if st.t_team < _TEAM_CLOSE * st.t_one else _TEAM_PROBE_CLOSE):
            st.since = 0
            size = st.probe = 3 - size
    return 1 if size == 1 else team


cdef inline double _blend(double recent, double secs, double weight) noexcept nogil:
    """`recent` moved by `weight` toward `secs`, a sample counted as at most twice `recent`
    (a call that lost its core for a time slice must not decide alone)."""
    return secs if recent == 0 else recent + weight * (min(secs, 2 * recent) - recent)


cdef void _team_learn(TeamStats *st, int ran, double secs) noexcept nogil:
    """Record that a call of `st` took `secs` on `ran` threads (>= 2: the plan's team).  A
    call right after the other size ran is not counted: the data sat in the other threads'
    caches.  The size in use moves a quarter of the way per call, a probe half of the way."""
    cdef int size = 2 if ran >= 2 else 1
    if st == NULL:
        return
    if st.last != size or secs <= 0:
        st.last = size
        return
    if size == 2:
        st.t_team = _blend(st.t_team, secs, 0.5 if st.probe else 0.25)
    else:
        st.t_one = _blend(st.t_one, secs, 0.5 if st.probe else 0.25)
    st.probe = 0


cdef bint _adaptive_from_env() except -1:
    """$CCONV_ADAPTIVE_THREADS: 1 (teams checked against one thread by timing) or 0 (the
    default: the planned team always runs)."""
    import os
    raw = os.environ.get("CCONV_ADAPTIVE_THREADS", "")
    value = raw.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("", "0", "false", "off", "no"):
        return False
    raise ValueError(f"CCONV_ADAPTIVE_THREADS={raw!r} is not understood; accepted: 1 (a plan's team "
                     f"is checked against one thread by timing) or 0 (the default: always the team)")


_adaptive_teams = _adaptive_from_env()


def set_adaptive_threads(bint on):
    """Check each plan's team against one thread by timing (True) or not (False, the default);
    the recorded times are forgotten either way."""
    global _adaptive_teams
    _adaptive_teams = on
    memset(_team_stats, 0, sizeof(_team_stats))


def team_runs():
    """(calls run on one thread, calls run on the plan's team) by the timed choice, since
    import (for tests: which way it went)."""
    return int(_team_runs[0]), int(_team_runs[1])


cdef struct TimedTeam:
    TeamStats *st       # the call's record, NULL when nothing is chosen or timed
    int ran             # the threads this call runs on
    double t0


cdef inline int _timed_team_start(TimedTeam *tt, const Py_ssize_t *key, int team) noexcept nogil:
    """Begin a keyed call whose plan asks for `team`: the threads it runs on (the timed
    choice's pick when it is on and there is a choice, else `team`)."""
    tt.st = _team_slot(key) if team >= 2 and _adaptive_teams else NULL
    tt.ran = _team_now(tt.st, team)
    tt.t0 = cconv_now() if tt.st != NULL else 0
    return tt.ran


cdef inline void _timed_team_end(const TimedTeam *tt) noexcept nogil:
    """End the call begun by _timed_team_start: its time is learnt and counted."""
    if tt.st != NULL:
        _team_learn(tt.st, tt.ran, cconv_now() - tt.t0)
        _team_runs[1 if tt.ran >= 2 else 0] += 1


def team_choice_trace(int team, times):
    """The sizes (1 or `team`) the timed team choice runs for a sequence of calls of one key
    whose call i would take times[i] = (seconds on one thread, seconds on the team): its
    decisions on made-up times, for tests."""
    cdef TeamStats st
    memset(&st, 0, sizeof(TeamStats))
    ran = []
    for one, on_team in times:
        size = _team_now(&st, team)
        _team_learn(&st, size, one if size == 1 else on_team)
        ran.append(size)
    return ran
