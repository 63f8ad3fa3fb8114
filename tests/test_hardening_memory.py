"""Memory: no leaks over many calls, and inputs are never written.

* 100,000 small calls of every function (successful and raising ones) leave
  the resident set flat (Linux /proc/self/statm, after a warm-up).
* Every argument of every function, in every option combination that
  returns (gradients included), is either read-only - which must be accepted
  - or checksummed before and after the call. The only documented exception
  is ``out=logits`` with return_grad (in-place gradient), not exercised here.
  Floating arguments are also passed as bfloat16 and float16 (the kernels
  read 16-bit logits natively, through a uint16 view of the caller's buffer),
  contiguous, strided and read-only.
"""

import hashlib
import itertools
import sys

import ml_dtypes
import numpy as np
import pytest

import cecore

BF16 = np.dtype(ml_dtypes.bfloat16)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    import resource

    return resident_pages * resource.getpagesize()


def _small_calls():
    """Thunks covering every function, options and error paths, on small inputs."""
    rng = np.random.default_rng(0)
    x32 = rng.standard_normal((16, 10)).astype(np.float32)
    x64 = rng.standard_normal((16, 10))
    y = rng.integers(0, 10, 16)
    bad_y = y.copy()
    bad_y[3] = 99
    t = rng.dirichlet(np.ones(10), 16)
    w = rng.random(10) + 0.5
    flat = rng.standard_normal(160)
    probs = rng.random(160)
    p = rng.dirichlet(np.ones(10), 16)

    def raises(fn):
        def call():
            try:
                fn()
            except (TypeError, ValueError):
                return
            raise AssertionError("expected an error")
        return call

    return [
        lambda: cecore.logsumexp(x32),
        lambda: cecore.log_softmax(x64, axis=0),
        lambda: cecore.softmax(x32.astype(np.float16)),
        lambda: cecore.cross_entropy(x32.astype(BF16), y, return_grad=True),
        lambda: cecore.cross_entropy(x32, y),
        lambda: cecore.cross_entropy(x64, y, weight=w, label_smoothing=0.1, reduction="none"),
        lambda: cecore.cross_entropy(x64, t, return_grad=True),
        lambda: cecore.cross_entropy(x32, y, return_grad=True, out=np.empty_like(x32)),
        lambda: cecore.nll_loss(x64, y, reduction="sum"),
        lambda: cecore.binary_cross_entropy_with_logits(flat, probs, pos_weight=2.0,
                                                        return_grad=True),
        lambda: cecore.binary_cross_entropy(probs, probs, weight=probs),
        lambda: cecore.entropy(p, base=2),
        lambda: cecore.cross_entropy_pq(p, p[::-1], measure=0.5),
        lambda: cecore.kl_divergence(p, p[::-1]),
        raises(lambda: cecore.cross_entropy(x32, bad_y)),
        raises(lambda: cecore.cross_entropy(x32, bad_y, return_grad=True)),
        raises(lambda: cecore.nll_loss(x32, bad_y)),
        raises(lambda: cecore.binary_cross_entropy(flat, probs)),
        raises(lambda: cecore.entropy(-p)),
        raises(lambda: cecore.logsumexp(np.zeros(3, complex))),
        raises(lambda: cecore.cross_entropy(x32, y, reduction="avg")),
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_resident_memory_stays_flat_over_100000_calls():
    calls = _small_calls()
    for call in calls * 200:  # warm-up: allocator pools, caches, first-use imports
        call()
    before = _rss_bytes()
    n = 0
    for call in itertools.islice(itertools.cycle(calls), 100_000):
        call()
        n += 1
    grown = _rss_bytes() - before
    # a leak of even 64 bytes per call would be 6.4 MB
    assert grown < 4 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MB over {n} calls"


# ---------------------------------------------------------------------------
# inputs are never written


def _digest(value):
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.strides,
                hashlib.sha256(np.ascontiguousarray(value).view(np.uint8).tobytes()).hexdigest())
    return repr(value)


def _variants(a):
    """The array as given, read-only, Fortran-ordered, strided, big-endian, and as
    bfloat16 and float16 (contiguous, strided, read-only)."""
    out = {"plain": a}
    ro = a.copy()
    ro.setflags(write=False)
    out["readonly"] = ro
    if a.ndim == 2:
        out["fortran"] = np.asfortranarray(a)
        buf = np.zeros((a.shape[0], 2 * a.shape[1]), dtype=a.dtype)
        buf[:, ::2] = a
        out["strided"] = buf[:, ::2]
    if a.dtype.kind == "f":
        out["big-endian"] = a.astype(a.dtype.newbyteorder(">"))
        for half in (np.dtype(np.float16), BF16):
            h = a.astype(half)
            out[half.name] = h
            ro = h.copy()
            ro.setflags(write=False)
            out[f"{half.name} read-only"] = ro
            if a.ndim == 2:
                buf = np.zeros((a.shape[0], 2 * a.shape[1]), dtype=half)
                buf[:, ::2] = h
                out[f"{half.name} strided"] = buf[:, ::2]
    return out


def _cases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((33, 12)).astype(np.float32)
    y = rng.integers(0, 12, 33)
    y[::5] = -100
    t = rng.dirichlet(np.ones(12), 33).astype(np.float32)
    w = rng.random(12) + 0.5
    flat = rng.standard_normal((33, 12))
    probs = rng.random((33, 12))
    pw = rng.random(12) * 2
    p = rng.dirichlet(np.ones(12), 33)
    q = rng.dirichlet(np.ones(12), 33)
    cases = []
    for fn in (cecore.logsumexp, cecore.log_softmax, cecore.softmax):
        for axis in (-1, 0):
            cases.append((fn, dict(x=x), dict(axis=axis)))
    for reduction, smoothing, grad in itertools.product(("mean", "sum", "none"), (0.0, 0.2),
                                                        (False, True)):
        opts = dict(reduction=reduction, label_smoothing=smoothing, return_grad=grad)
        cases.append((cecore.cross_entropy, dict(logits=x, target=y, weight=w), opts))
        cases.append((cecore.cross_entropy, dict(logits=x, target=t), opts))
    cases.append((cecore.cross_entropy, dict(logits=x.T, target=y), dict(axis=0)))
    cases.append((cecore.cross_entropy, dict(logits=x, target=y),
                  dict(return_grad=True, out=np.empty_like(x))))
    for reduction in ("mean", "sum", "none"):
        cases.append((cecore.nll_loss, dict(log_probs=x, target=y, weight=w),
                      dict(reduction=reduction)))
        for grad in (False, True):
            cases.append((cecore.binary_cross_entropy_with_logits,
                          dict(logits=flat, target=probs, weight=probs, pos_weight=pw),
                          dict(reduction=reduction, return_grad=grad)))
        cases.append((cecore.binary_cross_entropy, dict(probs=probs, target=probs[::-1],
                                                        weight=pw), dict(reduction=reduction)))
    for base, measure in ((None, None), (2, w), (None, 0.5)):
        cases.append((cecore.entropy, dict(p=p), dict(base=base, measure=measure)))
        cases.append((cecore.cross_entropy_pq, dict(p=p, q=q), dict(base=base, measure=measure)))
        cases.append((cecore.kl_divergence, dict(p=p, q=q), dict(base=base, measure=measure)))
    return cases


@pytest.mark.parametrize("case", range(len(_cases())))
def test_inputs_are_never_written(case):
    fn, arrays, opts = _cases()[case]
    names = list(arrays)
    # one argument at a time in each variant; the others plain
    for name in names:
        for variant, value in _variants(arrays[name]).items():
            args = dict(arrays, **{name: value})
            kw_arrays = {k: v for k, v in opts.items() if isinstance(v, np.ndarray)}
            before = {k: _digest(v) for k, v in {**args, **kw_arrays}.items()
                      if k != "out"}
            positional = [args[k] for k in names[:2]]
            extra = {k: args[k] for k in names[2:]}
            call_opts = dict(opts)
            if "out" in opts:  # out must have the logits' (native) dtype
                logits = args["logits"]
                call_opts["out"] = np.empty(logits.shape, logits.dtype.newbyteorder("="))
            fn(*positional, **extra, **call_opts)
            after = {k: _digest(v) for k, v in {**args, **kw_arrays}.items() if k != "out"}
            assert after == before, (fn.__name__, name, variant, opts)


def test_read_only_memory_maps_are_accepted(tmp_path):
    x = np.random.default_rng(2).standard_normal((64, 8))
    path = tmp_path / "x.f64"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.float64, mode="r", shape=x.shape)
    y = np.arange(64) % 8
    assert cecore.cross_entropy(mm, y) == cecore.cross_entropy(x, y)
    loss, grad = cecore.cross_entropy(mm, y, return_grad=True)
    assert grad.flags.writeable and not np.shares_memory(grad, mm)
    assert cecore.binary_cross_entropy_with_logits(mm, np.abs(np.tanh(x))) == \
        cecore.binary_cross_entropy_with_logits(x, np.abs(np.tanh(x)))
