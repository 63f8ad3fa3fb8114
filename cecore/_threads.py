"""How many OpenMP threads a kernel call gets.

``n_threads=None`` follows OpenMP's default (OMP_NUM_THREADS, or the number of
usable cores; threadpoolctl's limits act on it). Small inputs run on one thread:
starting a team costs more than it saves. In a process forked from one that had
used OpenMP threads, every call runs single-threaded: GNU OpenMP's thread pool
does not survive fork() and a parallel region there would hang.

Calls with ``n_threads=None`` running at the same time (from several Python
threads, e.g. under an outer thread pool) share the default: each takes the
threads the others leave free, at least its own, instead of every caller
starting a full team (8 callers on 8 cores would otherwise run 64 threads).
An explicit ``n_threads`` is taken as given.
"""

import os
import threading

from cecore import _openmp
from cecore._validation import check_int

# Below this many elements a call runs on one thread.
MIN_PARALLEL_WORK = 1 << 15

_in_forked_child = False


def _after_fork_in_child():
    global _in_forked_child
    _in_forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_n_threads():
    """Threads a large call uses with ``n_threads=None``."""
    return 1 if _in_forked_child else _openmp.max_threads()


def max_n_threads():
    """Most threads an explicit ``n_threads`` gets: the CPUs (or OpenMP's default,
    if larger). More never speeds up a CPU-bound kernel, and a team of tens of
    thousands makes GNU OpenMP abort the process."""
    return max(os.cpu_count() or 1, _openmp.max_threads())


_shared_lock = threading.Lock()
_shared_in_use = 0  # threads held by running calls that came with n_threads=None


def threads_in_use():
    """Threads currently held by running ``n_threads=None`` calls."""
    return _shared_in_use


def run_kernel(kernel, n_threads, work, *args):
    """``kernel(*args, n)`` with ``n`` the thread count for ``work`` elements.

    With ``n_threads=None`` the count is taken from OpenMP's default as shared
    with the other ``n_threads=None`` calls running at the same moment (at
    least 1: the calling thread's own) and given back when the kernel returns.
    """
    if n_threads is not None:
        return kernel(*args, resolve_n_threads(n_threads, work))
    if _in_forked_child or work < MIN_PARALLEL_WORK:
        return kernel(*args, 1)
    budget = default_n_threads()
    global _shared_in_use
    with _shared_lock:
        n = max(1, budget - _shared_in_use)
        _shared_in_use += n
    try:
        return kernel(*args, n)
    finally:
        with _shared_lock:
            _shared_in_use -= n


def resolve_n_threads(n_threads, work):
    """Validate ``n_threads`` and return the thread count for ``work`` elements."""
    if n_threads is None:
        n = default_n_threads()
    else:
        n = check_int(n_threads, "n_threads")
        if n < 1:
            raise ValueError(f"n_threads must be >= 1 or None, got {n}")
    if _in_forked_child or work < MIN_PARALLEL_WORK:
        return 1
    if n_threads is not None and n > 2:
        n = min(n, max_n_threads())
    return n
