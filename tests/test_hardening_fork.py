"""Fork safety: processes forked after cecore ran OpenMP teams finish, with
results identical to the parent's.

GNU OpenMP's thread pool does not survive fork(): the child inherits a pool
whose threads do not exist, and its first parallel region waits for them
forever. cecore/_threads.py registers an os.register_at_fork hook that makes
every later call in the child single-threaded (no parallel region is entered:
the kernels' prange/parallel blocks carry use_threads_if=n_threads > 1);
without it these tests hang (checked by hand: a child that resets the flag
never returns). Results do not depend on the thread count, so the child's
single-threaded results must equal the parent's bitwise.
"""

import multiprocessing
import os
import sys

import numpy as np
import pytest

import cecore

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin",
    reason="needs the fork start method (macOS: fork without exec is unsafe anyway)",
)

TIMEOUT = 60  # seconds a child may take: far more than the work, far less than a hang


def _work():
    """Calls of every kernel family, each large enough to run in parallel."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 256)).astype(np.float32)
    y = rng.integers(0, 256, 2048)
    t = rng.dirichlet(np.ones(256), 2048)
    flat = rng.standard_normal(1 << 19)
    return {
        "log_softmax": lambda nt: cecore.log_softmax(x, n_threads=nt),
        "cross_entropy+grad": lambda nt: cecore.cross_entropy(x, y, return_grad=True,
                                                              n_threads=nt),
        "cross_entropy prob": lambda nt: cecore.cross_entropy(x, t, n_threads=nt),
        "nll_loss": lambda nt: cecore.nll_loss(x, y, reduction="sum", n_threads=nt),
        "bce_with_logits": lambda nt: cecore.binary_cross_entropy_with_logits(
            flat, (flat > 0) * 1.0, n_threads=nt),
        "bce": lambda nt: cecore.binary_cross_entropy(np.abs(np.tanh(flat)), (flat > 0) * 1.0,
                                                      n_threads=nt),
        "kl_divergence": lambda nt: cecore.kl_divergence(t, t[::-1], n_threads=nt),
    }


def _digest(results):
    out = {}
    for name, r in results.items():
        parts = r if isinstance(r, tuple) else (r,)
        out[name] = b"".join(np.asarray(p).tobytes() for p in parts)
    return out


def _child(queue, depth):
    """Runs every call with n_threads=2 and None; forks a grandchild if depth > 1."""
    try:
        from cecore import _threads

        work = _work()
        results = {}
        for nt in (2, None):
            results.update({f"{k} n_threads={nt}": f(nt) for k, f in work.items()})
        report = {"pid": os.getpid(), "default_n_threads": _threads.default_n_threads(),
                  "digest": _digest(results)}
        if depth > 1:
            ctx = multiprocessing.get_context("fork")
            inner = ctx.Queue()
            proc = ctx.Process(target=_child, args=(inner, depth - 1))
            proc.start()
            report["grandchild"] = inner.get(timeout=TIMEOUT)
            proc.join(TIMEOUT)
        queue.put(report)
    except BaseException as exc:  # noqa: BLE001 - report anything instead of dying silently
        queue.put({"error": repr(exc)})


def _parent_digest():
    work = _work()
    results = {}
    for nt in (2, None):
        results.update({f"{k} n_threads={nt}": f(nt) for k, f in work.items()})
    return _digest(results)


def _run_children(n_children, depth=1):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(queue, depth)) for _ in range(n_children)]
    for p in procs:
        p.start()
    reports = []
    try:
        for _ in procs:
            reports.append(queue.get(timeout=TIMEOUT))
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():  # hung: fail, and leave no process behind
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return reports


def test_children_forked_after_threaded_use_finish_with_the_same_results():
    parent = _parent_digest()  # starts OpenMP teams (n_threads=2) in the parent first
    for report in _run_children(3):
        assert "error" not in report, report
        assert report["default_n_threads"] == 1
        assert report["digest"] == parent


def test_grandchildren_finish_too():
    parent = _parent_digest()
    (report,) = _run_children(1, depth=2)
    assert "error" not in report, report
    assert "error" not in report["grandchild"], report["grandchild"]
    assert report["grandchild"]["digest"] == parent


def test_children_of_a_parent_that_never_used_threads(tmp_path):
    """Forked before any parallel region: still fine (and still single-threaded)."""
    import subprocess
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import test_hardening_fork as t
        (report,) = t._run_children(1)
        assert "error" not in report, report
        assert report["digest"] == t._parent_digest()
        print("ok")
    """)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cecore.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # from an empty directory: `python -c` puts the working directory first on sys.path
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=3 * TIMEOUT, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
