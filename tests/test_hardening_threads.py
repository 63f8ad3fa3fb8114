"""Thread safety, oversubscription and thread-count independence.

* Many Python threads calling mixed functions at once get exactly the results
  of serial calls (kernels keep no shared mutable state; results do not
  depend on the thread count).
* Calls with n_threads=None from an outer thread pool share OpenMP's default
  thread count instead of each starting a full team: the OpenMP threads
  running for cecore at any moment stay within that default (plus one per
  calling thread, which runs its own call anyway).
* Every result, reductions included, is bitwise identical for n_threads 1..4.
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cecore
from cecore import (
    _binary_kernels,
    _divergence_kernels,
    _softmax_kernels,
    _threads,
    _token_kernels,
)

# big enough to run in parallel (>= MIN_PARALLEL_WORK elements) and in many blocks
N, K = 3000, 97


def _inputs(seed=0, n=N, k=K, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, k)) * 4).astype(dtype)
    x[rng.random(x.shape) < 0.02] = -np.inf
    y = rng.integers(0, k, n)
    y[rng.random(n) < 0.1] = -100
    t = rng.dirichlet(np.ones(k), n).astype(dtype)
    w = rng.random(k) + 0.5
    p = rng.dirichlet(np.ones(k), n).astype(dtype)
    flat = (rng.standard_normal(n * k) * 3).astype(dtype)
    tflat = rng.random(n * k).astype(dtype)
    return dict(x=x, y=y, t=t, w=w, p=p, flat=flat, tflat=tflat, pw=rng.random(k) * 2,
                proj=rng.standard_normal((50, k)))


def _calls(d, n_threads):
    """Every public function (reductions and elementwise), as name -> thunk."""
    nt = dict(n_threads=n_threads)
    x, y, t, w, p = d["x"], d["y"], d["t"], d["w"], d["p"]
    flat, tflat = d["flat"], d["tflat"]
    k = x.shape[1]
    x2 = flat.reshape(-1, k)
    return {
        "logsumexp": lambda: cecore.logsumexp(x, **nt),
        "log_softmax": lambda: cecore.log_softmax(x, **nt),
        "softmax": lambda: cecore.softmax(x, **nt),
        "ce mean": lambda: cecore.cross_entropy(x, y, **nt),
        "ce sum weighted smoothed": lambda: cecore.cross_entropy(
            x, y, weight=w, label_smoothing=0.1, reduction="sum", **nt),
        "ce none": lambda: cecore.cross_entropy(x, y, reduction="none", **nt),
        "ce grad": lambda: cecore.cross_entropy(x, y, weight=w, return_grad=True, **nt),
        "ce prob mean": lambda: cecore.cross_entropy(x, t, **nt),
        "ce prob grad": lambda: cecore.cross_entropy(x, t, label_smoothing=0.2,
                                                     return_grad=True, **nt),
        "ce axis 0": lambda: cecore.cross_entropy(x.T, y, axis=0, **nt),
        "nll mean": lambda: cecore.nll_loss(cecore.log_softmax(x, n_threads=1), y,
                                            weight=w, **nt),
        "bce logits mean": lambda: cecore.binary_cross_entropy_with_logits(
            x2, tflat.reshape(-1, k), pos_weight=d["pw"], **nt),
        "bce logits sum grad": lambda: cecore.binary_cross_entropy_with_logits(
            flat, tflat, reduction="sum", return_grad=True, **nt),
        "bce mean": lambda: cecore.binary_cross_entropy(tflat, np.flip(tflat), **nt),
        "entropy": lambda: cecore.entropy(p, **nt),
        "cross_entropy_pq": lambda: cecore.cross_entropy_pq(p, t, base=2, **nt),
        "kl_divergence": lambda: cecore.kl_divergence(p, t, measure=0.5, **nt),
        "linear_cross_entropy": lambda: cecore.linear_cross_entropy(
            x2[:, :64], d["proj"][:, :64].astype(x.dtype), np.arange(x2.shape[0]) % 50,
            chunk_size=1000, **nt),  # 1,000 x 50 logits per block: parallel
        "Evaluator": lambda: _evaluate(x, y, n_threads),
    }


def _evaluate(x, y, n_threads):
    ev = cecore.Evaluator(topk=(1, 5), label_smoothing=0.1, n_threads=n_threads)
    for part in range(0, x.shape[0], 1000):
        ev.update(x[part:part + 1000], y[part:part + 1000])
    return np.array(list(ev.result().values()), dtype=np.float64)


def _bytes(result):
    if isinstance(result, tuple):
        return b"".join(_bytes(r) for r in result)
    a = np.asarray(result)
    return a.dtype.str.encode() + a.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count(dtype):
    d = _inputs(dtype=dtype)
    reference = {name: _bytes(call()) for name, call in _calls(d, 1).items()}
    for n_threads in (2, 3, 4, None):
        for name, call in _calls(d, n_threads).items():
            assert _bytes(call()) == reference[name], (name, n_threads)


@pytest.mark.parametrize("shape", [(1, 40000), (40000, 1), (333, 333), (65, 1024), (7, 9999)])
def test_bitwise_identical_for_awkward_shapes(shape):
    """Row counts that do not divide into blocks or threads evenly, K = 1, one long row."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    y = rng.integers(0, shape[1], shape[0])
    for fn in (lambda nt: cecore.cross_entropy(x, y, reduction="sum", n_threads=nt),
               lambda nt: cecore.logsumexp(x, n_threads=nt),
               lambda nt: cecore.entropy(np.abs(x), n_threads=nt),
               lambda nt: cecore.binary_cross_entropy_with_logits(x, np.abs(np.tanh(x)),
                                                                  n_threads=nt)):
        results = {_bytes(fn(nt)) for nt in (1, 2, 3, 4)}
        assert len(results) == 1


@pytest.mark.parametrize("callers", [8, 16])
def test_concurrent_calls_from_many_threads(callers):
    """8 or 16 Python threads (a server) x mixed functions x both dtypes, each result
    bitwise equal to the serial result (small and large inputs, n_threads None/1/2)."""
    data = {dtype: _inputs(seed=3, dtype=dtype) for dtype in (np.float32, np.float64)}
    small = {dtype: _inputs(seed=4, n=40, k=9, dtype=dtype) for dtype in data}
    jobs = []
    for dtype in data:
        for d, names in ((data[dtype], None), (small[dtype], ("logsumexp", "ce mean",
                                                              "softmax", "entropy"))):
            serial = _calls(d, 1)
            for name in names or serial:
                expected = _bytes(serial[name]())
                for n_threads in (None, 1, 2):
                    jobs.append((_calls(d, n_threads)[name], expected, name))
    rng = np.random.default_rng(5)
    order = rng.permutation(len(jobs))
    jobs = [jobs[i] for i in order] * 2

    def run(job):
        call, expected, name = job
        return name, _bytes(call()) == expected

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(run, jobs))
    assert all(ok for _, ok in results), [name for name, ok in results if not ok]


class _Recorder:
    """Wraps every kernel entry point to record how many OpenMP threads the calls
    running at the same moment were given."""

    def __init__(self, monkeypatch):
        self.lock = threading.Lock()
        self.extra = 0  # sum over running kernel calls of (threads - 1)
        self.peak_extra = 0
        self.running = 0
        self.peak_running = 0
        self.counts = []
        kernels = [(_softmax_kernels, n) for n in ("ce_index_loss", "ce_prob_loss",
                                                    "ce_index_loss_opts", "ce_prob_loss_opts",
                                                    "nll_loss", "softmax_rows",
                                                    "ce_index_cols", "softmax_cols")]
        kernels += [(_binary_kernels, "bce_logits_loss"), (_binary_kernels, "bce_probs_loss"),
                    (_divergence_kernels, "divergence_rows"), (_token_kernels, "eval_stats"),
                    (_token_kernels, "token_stats")]
        for module, name in kernels:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, kernel):
        def wrapped(*args):
            n = args[-1]  # every kernel takes n_threads last
            with self.lock:
                self.extra += n - 1
                self.running += 1
                self.peak_extra = max(self.peak_extra, self.extra)
                self.peak_running = max(self.peak_running, self.running)
                self.counts.append(n)
            try:
                return kernel(*args)
            finally:
                with self.lock:
                    self.extra -= n - 1
                    self.running -= 1
        return wrapped


def _os_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux
        return threading.active_count()


@pytest.mark.parametrize("callers", [8, 16])
def test_no_oversubscription_under_an_outer_thread_pool(monkeypatch, callers):
    """8 or 16 worker threads calling large kernels with n_threads=None: the OpenMP
    threads running beyond the callers never exceed the default team's (default - 1)."""
    budget = _threads.default_n_threads()
    if budget < 2:
        pytest.skip("OpenMP's default is one thread here: nothing to share")
    rec = _Recorder(monkeypatch)
    d = _inputs(seed=6)
    calls = list(_calls(d, None).values())
    barrier = threading.Barrier(callers)

    def worker(i):
        barrier.wait()  # start together: calls overlap
        for call in calls[i::2] * 2:
            call()

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(worker, range(callers)))
    assert rec.peak_running > 1, "the calls never overlapped: the test proves nothing"
    assert rec.peak_extra <= budget - 1, (rec.peak_extra, budget, rec.peak_running)
    # the budget is shared, not lost: some calls still got the full default team
    assert max(rec.counts) == budget


def test_explicit_n_threads_is_honoured_under_a_pool(monkeypatch):
    """An explicit thread count is the caller's decision: it is not budgeted."""
    rec = _Recorder(monkeypatch)
    d = _inputs(seed=7)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: cecore.logsumexp(d["x"], n_threads=2), range(8)))
    assert set(rec.counts) == {min(2, _threads.max_n_threads())}


def test_explicit_n_threads_reaches_every_kernel(monkeypatch):
    """n_threads=2 is what each public function hands its kernel (a function that
    ignored it would still pass the bitwise tests above)."""
    if _threads.max_n_threads() < 2:
        pytest.skip("needs 2 threads")
    rec = _Recorder(monkeypatch)
    for name, call in _calls(_inputs(seed=9), 2).items():
        if name.startswith("nll"):
            continue  # its work is counted in rows: 3,000 rows stay on one thread
        rec.counts.clear()
        call()
        assert rec.counts and max(rec.counts) == 2, (name, rec.counts)


def test_shared_threads_given_back_after_errors():
    """A call that raises inside its kernel section gives its threads back."""
    d = _inputs(seed=8)
    bad = d["y"].copy()
    bad[5] = K + 3  # out of range: raised after the kernel ran
    for _ in range(3):
        with pytest.raises(ValueError):
            cecore.cross_entropy(d["x"], bad)
    assert _threads.threads_in_use() == 0


def test_os_thread_count_stays_bounded():
    """Observation, reported by -s: OS threads while 8 Python threads call cecore.
    libgomp keeps one pool per calling thread, so the count is bounded by
    callers x (default - 1) even when those pools sit idle."""
    d = _inputs(seed=9)
    before = _os_threads()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _os_threads())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: [cecore.logsumexp(d["x"]) for _ in range(3)], range(8)))
    finally:
        stop.set()
        sampler.join()
    budget = _threads.default_n_threads()
    print(f"\nOS threads: {before} before, peak {peak[0]} with 8 callers (+1 sampler), "
          f"OpenMP default {budget}")
    assert peak[0] <= before + 8 + 1 + 8 * (budget - 1)
