"""Regression tests for bugs the hardening suites found in cecore's Python layer.

Each test is minimal and deterministic; the fuzz suite
(tests/test_hardening_fuzz.py) found or would find each of them again.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import cecore
from cecore import _binary_kernels, _divergence_kernels, _softmax_kernels

F32_MAX = float(np.finfo(np.float32).max)


# -- results that overflow the result dtype --------------------------------


@pytest.mark.parametrize("call", [
    lambda: cecore.cross_entropy(np.array([[F32_MAX, -F32_MAX]] * 3, np.float32),
                                 np.array([1, 1, 1]), reduction="sum"),
    lambda: cecore.nll_loss(np.full((3, 2), -F32_MAX, np.float32), np.array([1, 1, 1]),
                            reduction="sum"),
    lambda: cecore.binary_cross_entropy_with_logits(np.full(3, F32_MAX, np.float32),
                                                    np.zeros(3, np.float32), reduction="sum"),
    lambda: cecore.log_softmax(np.array([65504, -65504], np.float16)),
    lambda: cecore.cross_entropy(np.zeros((2, 3), np.float32), np.full((2, 3), 1e300)),
    lambda: cecore.binary_cross_entropy_with_logits(np.zeros(3, np.float32), np.full(3, 1e300)),
    lambda: cecore.binary_cross_entropy_with_logits(np.zeros(3, np.float32), np.zeros(3),
                                                    weight=np.full(3, 1e300)),
], ids=["ce sum", "nll sum", "bce sum", "float16 log_softmax", "ce float64 target",
        "bce float64 target", "bce float64 weight"])
def test_overflow_to_inf_is_silent(call):
    """IEEE overflow gives +-inf (or NaN downstream), as inside the kernels, without
    NumPy's "overflow encountered in cast" RuntimeWarning (an error under -W error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = call()
    assert not np.isfinite(result).all()


def test_float32_result_rounding_at_the_overflow_threshold():
    from cecore._validation import as_result

    f32 = np.dtype(np.float32)
    below = 2.0**128 - 2.0**104  # the midpoint minus an ulp rounds to FLT_MAX
    assert as_result(below, f32) == np.float32(F32_MAX)
    assert as_result(2.0**128 - 2.0**103, f32) == np.inf  # the midpoint rounds to even: inf
    assert as_result(-1e39, f32) == -np.inf
    assert np.isnan(as_result(float("nan"), f32))
    assert as_result(1e300, np.dtype(np.float64)) == 1e300


# -- integer options that do not fit the kernels' C types ------------------


@pytest.mark.parametrize("fn", [cecore.cross_entropy, cecore.nll_loss])
@pytest.mark.parametrize("ignore_index", [2**63, -(2**63) - 1, 2**70])
def test_ignore_index_beyond_int64_is_a_value_error(fn, ignore_index):
    with pytest.raises(ValueError, match="ignore_index"):
        fn(np.zeros((4, 3)), np.array([0, 1, 2, 0]), ignore_index=ignore_index)


@pytest.mark.parametrize("fn", [cecore.cross_entropy, cecore.nll_loss])
def test_ignore_index_at_int64_limits(fn):
    for ignore_index in (2**63 - 1, -(2**63)):
        t = np.array([0, 1, ignore_index, 0], dtype=np.int64)
        got = fn(np.zeros((4, 3)), t, ignore_index=ignore_index, reduction="none")
        assert got[2] == 0


@pytest.mark.parametrize("n_threads", [2**31, 2**40])
def test_huge_n_threads_is_capped(n_threads):
    """More threads than CPUs never help; tens of thousands abort GNU OpenMP."""
    x = np.zeros((200, 200))
    assert cecore.logsumexp(x, n_threads=n_threads)[0] == pytest.approx(np.log(200))
    assert cecore.cross_entropy(x, np.zeros(200, int), n_threads=n_threads) == pytest.approx(
        np.log(200))


def test_huge_n_threads_does_not_abort_the_process(tmp_path):
    """Before the cap, n_threads=100000 on a large input killed the interpreter
    (libgomp: "Thread creation failed", or a segfault)."""
    code = textwrap.dedent("""
        import numpy as np, cecore
        print(cecore.logsumexp(np.zeros((2000, 100)), n_threads=100000)[0])
    """)
    # the cecore under test, from an empty directory (not the source tree of the cwd)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cecore.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout) == pytest.approx(np.log(100))


# -- empty inputs with broadcast weights -----------------------------------


@pytest.mark.parametrize("shape,wshape", [((3, 0), (0,)), ((3, 0), (3, 0)), ((0, 5), (0, 5)),
                                          ((0, 5), (5,))])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_of_empty_input_with_weights(shape, wshape, reduction):
    x = np.zeros(shape)
    w = np.ones(wshape)
    a = cecore.binary_cross_entropy_with_logits(x, x, weight=w, pos_weight=w,
                                                reduction=reduction)
    b = cecore.binary_cross_entropy(x, x, weight=w, reduction=reduction)
    for r in (a, b):
        if reduction == "none":
            assert r.shape == shape
        elif reduction == "sum":
            assert r == 0
        else:
            assert np.isnan(r)


# -- kernels only ever see aligned buffers ---------------------------------


def _unaligned(values, dtype):
    """A contiguous but misaligned copy of ``values`` (NumPy's ALIGNED flag off)."""
    values = np.asarray(values, dtype=dtype)
    buf = np.zeros(values.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(buf[1:].data, dtype=dtype, count=values.size).reshape(values.shape)
    out[...] = values
    assert not out.flags.aligned
    return out


@pytest.fixture
def aligned_kernels(monkeypatch):
    """Wrap every kernel entry point to assert that all its array arguments are aligned
    (C requires it: UBSan reports misaligned loads, and vectorised code may use
    aligned loads)."""
    calls = []

    def wrap(module, name):
        kernel = getattr(module, name)

        def checked(*args):
            for a in args:
                if isinstance(a, np.ndarray):
                    assert a.flags.aligned, f"{name} got a misaligned array"
            calls.append(name)
            return kernel(*args)

        monkeypatch.setattr(module, name, checked)

    for name in ("ce_index_loss", "ce_prob_loss", "nll_loss", "softmax_rows", "ce_index_cols",
                 "softmax_cols"):
        wrap(_softmax_kernels, name)
    for name in ("bce_logits_loss", "bce_probs_loss"):
        wrap(_binary_kernels, name)
    wrap(_divergence_kernels, "divergence_rows")
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_get_aligned_buffers(aligned_kernels, dtype):
    rng = np.random.default_rng(0)
    x = _unaligned(rng.standard_normal((50, 7)), dtype)
    p = _unaligned(rng.random((50, 7)), dtype)
    t = _unaligned(rng.integers(0, 7, 50), np.int64)
    w = _unaligned(rng.random(7) + 0.5, np.float64)
    flat = _unaligned(rng.random(350), dtype)
    big = _unaligned(rng.random(20000), dtype)  # a weight this long is laid out per element
    expected = {
        "ce": cecore.cross_entropy(x.copy(), t.copy(), weight=w.copy()),
        "nll": cecore.nll_loss(x.copy(), t.copy(), weight=w.copy()),
        "bce": cecore.binary_cross_entropy_with_logits(flat.copy(), flat.copy(),
                                                       weight=w[:1].copy()),
        "bce_grad": cecore.binary_cross_entropy_with_logits(
            big.copy(), big.copy(), weight=big.copy(), return_grad=True)[0],
        "bcep": cecore.binary_cross_entropy(flat.copy(), flat.copy()),
        "ent": cecore.entropy(p.copy(), measure=w.copy()),
        "kl": cecore.kl_divergence(p.copy(), p.copy()[::-1]),
    }
    got = {
        "ce": cecore.cross_entropy(x, t, weight=w),
        "nll": cecore.nll_loss(x, t, weight=w),
        "bce": cecore.binary_cross_entropy_with_logits(flat, flat, weight=w[:1]),
        "bce_grad": cecore.binary_cross_entropy_with_logits(big, big, weight=big,
                                                            return_grad=True)[0],
        "bcep": cecore.binary_cross_entropy(flat, flat),
        "ent": cecore.entropy(p, measure=w),
        "kl": cecore.kl_divergence(p, p[::-1]),
    }
    assert aligned_kernels  # the wrappers were called
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


# -- linear_cross_entropy and Evaluator ------------------------------------


@pytest.mark.parametrize("n", [0, 3])
def test_linear_cross_entropy_with_zero_features(n):
    """D = 0: the logits are the bias alone (reshape(-1, 0) cannot infer the rows)."""
    bias = np.arange(4.0)
    got = cecore.linear_cross_entropy(np.zeros((n, 0)), np.zeros((4, 0)), np.zeros(n, int),
                                      bias=bias, reduction="none")
    want = cecore.cross_entropy(np.zeros((n, 4)) + bias, np.zeros(n, int), reduction="none")
    np.testing.assert_array_equal(got, want)


def test_linear_cross_entropy_overflow_is_silent():
    """Logits that overflow in the matrix product give inf/NaN like any other input,
    without NumPy's RuntimeWarning from inside cecore."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = cecore.linear_cross_entropy(np.full((2, 2), 1e300), np.full((3, 2), 1e300),
                                           np.array([0, 1]), bias=np.zeros(3))
    assert np.isnan(loss)


@pytest.mark.parametrize("topk", [(2**63,), 2**70, (1, 2**64)])
def test_evaluator_topk_beyond_int64_is_a_value_error(topk):
    """Accepted before, then an OverflowError from the first update()."""
    with pytest.raises(ValueError, match="topk"):
        cecore.Evaluator(topk=topk)
    ev = cecore.Evaluator(topk=(1, 2**63 - 1))
    ev.update(np.zeros((2, 3)), np.array([0, 1]))
    assert ev.result()[f"accuracy@{2**63 - 1}"] == 1.0
