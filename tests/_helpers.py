"""Assertion helpers shared by the test modules (tolerances with a derivation).

Error model of cecore's softmax family for an input row ``x`` of dtype T with
unit roundoff ``u`` (2**-24 for float32, 2**-53 for float64) and row maximum
``m``: each ``exp(x_j - m)`` is evaluated in T after rounding ``x_j - m`` to T,
so its relative error is at most ``u * (|x_j - m| + c)`` (argument rounding
plus a few ulps for the polynomial). The kernels add the exponentials in
partial sums of T over chunks of 256 elements, L terms per vector lane (see
lane_terms), each term <= 1, then in float64: a relative error of at most
``L u`` in the row's sum, i.e. an absolute error of ``L u`` in its logarithm.
Hence, with p = softmax(x):

* softmax_j:      |err| <= p_j (u (|x_j - m| + L + 16) + 8 * 2**-53 (|m| + |lse|))
                                 (+ T's subnormal step; softmax is scaled by exp(m - lse))
* logsumexp:      |err| <= 2 ulp_T(lse) + u * sum_{x_j < m} p_j (|x_j - m| + 4) + (L + 8) u
                                 + 4 * 2**-53 (|m| + |lse| + 2)
* log_softmax_j:  same as logsumexp with ulp_T(log_softmax_j)

where the 2**-53 terms cover the float64 roundings of m + log(sum) (in cecore
and in the float64 reference alike). These bounds are tight enough to catch a
wrong shift, a lost term or a sum accumulated wholly in float32, and loose
enough for the documented algorithm. The documented stronger claim (relative
accuracy of tiny outputs) has its own tests.
"""

import os
import subprocess
import sys

import _reference as ref
import numpy as np
import pytest

import cecore


def unit_roundoff(dtype):
    return float(np.finfo(dtype).eps) / 2


def lane_terms(dtype):
    """Bound on the terms per lane of the kernels' partial sums of exponentials.

    Chunks of 256 elements are summed in the dtype: 16 terms per lane with
    AVX-512 float32 (the README's figure), more with narrower vectors, where the
    rounding errors of such sums still stay well within this bound in practice
    (the property tests run at every SIMD level). float64 gets 128 (2-lane
    vectors); for float32 this makes the contract ~1.4e-6 absolute on a
    log-sum-exp, i.e. "float32 to ~1e-6".
    """
    return 16 if np.dtype(dtype) == np.float32 else 128


def subnormal_step(dtype):
    return float(np.finfo(dtype).smallest_subnormal)


def ulp(values, dtype):
    """Spacing of ``dtype`` at |values| (values given in float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.abs(np.asarray(values, dtype=np.float64)).astype(dtype)
    return np.spacing(v).astype(np.float64)


def _rows_last(x, axis):
    return np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)


def lse_budget(x, axis, dtype):
    """The error budget of a row's log-sum-exp (see the module docstring), axis reduced."""
    x = _rows_last(x, axis)
    u = unit_roundoff(dtype)
    m = np.max(x, axis=-1, keepdims=True)
    p = ref.softmax(x, -1)
    with np.errstate(invalid="ignore", over="ignore"):
        dist = np.abs(x - m)
        s = np.sum(np.where((x < m) & (p > 0), p * (dist + 4.0), 0.0), axis=-1)
        # float64 roundings of m + log(sum) in cecore and in the float64 reference
        lse = ref.logsumexp(x, -1)
        dbl = 4 * 2.0**-53 * (np.abs(m[..., 0]) + np.abs(lse) + 2.0)
    # partial sums in the dtype over <= L terms per lane: <= L u relative on the
    # sum, plus the float64 additions of the lanes (and of the reference's sum)
    return u * s + (lane_terms(dtype) + 8) * u + dbl


def assert_logsumexp_close(got, x, axis=-1):
    dtype = np.asarray(got).dtype
    want = ref.logsumexp(x, axis)
    tol = 2 * ulp(want, dtype) + lse_budget(x, axis, dtype)
    err = np.abs(np.asarray(got, dtype=np.float64) - want)
    bad = ~(err <= tol)
    assert not np.any(bad), (
        f"logsumexp off by up to {np.max(err[bad]):.3g} (tolerance {np.min(tol[bad]):.3g}) "
        f"at {np.argwhere(bad)[:5].tolist()}"
    )


def assert_log_softmax_close(got, x, axis=-1):
    dtype = np.asarray(got).dtype
    want = ref.log_softmax(x, axis)
    budget = np.expand_dims(lse_budget(x, axis, dtype), axis)
    tol = 2 * ulp(want, dtype) + budget
    err = np.abs(np.asarray(got, dtype=np.float64) - want)
    bad = ~(err <= tol)
    assert not np.any(bad), (
        f"log_softmax off by up to {np.max(err[bad]):.3g} at {np.argwhere(bad)[:5].tolist()}"
    )


def assert_softmax_close(got, x, axis=-1):
    dtype = np.asarray(got).dtype
    want = ref.softmax(x, axis)
    x64 = np.asarray(x, dtype=np.float64)
    m = np.max(x64, axis=axis, keepdims=True)
    u = unit_roundoff(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        lse = np.expand_dims(ref.logsumexp(x64, axis), axis)
        rel = (u * (np.abs(x64 - m) + lane_terms(dtype) + 16.0)
               + 8 * 2.0**-53 * (np.abs(m) + np.abs(lse)))
        tol = np.where(want > 0, want * rel, 0.0) + subnormal_step(dtype)
    err = np.abs(np.asarray(got, dtype=np.float64) - want)
    bad = ~(err <= tol)
    assert not np.any(bad), (
        f"softmax off by up to {np.max(err[bad]):.3g} at {np.argwhere(bad)[:5].tolist()}"
    )


# losses: float64 to ~1e-12 relative, float32 (and float16 computed in float32)
# to ~1e-6 relative; the absolute part covers tiny per-row losses, whose error
# is set by the log-sum-exp (absolute, ~1 ulp of 1) rather than by the loss.
LOSS_TOL = {
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-14},
    np.dtype(np.float32): {"rtol": 1e-6, "atol": 1e-6},
    np.dtype(np.float16): {"rtol": 1e-6, "atol": 1e-6},
}


def loss_tol(dtype):
    return LOSS_TOL[np.dtype(dtype)]


def result_dtype(in_dtype):
    """The documented dtype of reductions: float64 for float64 input, float32 otherwise."""
    return np.dtype(np.float64) if np.dtype(in_dtype) == np.float64 else np.dtype(np.float32)


def variants(x):
    """Same values, different memory layouts: (id, array) pairs.

    Each variant holds exactly ``x``'s values in ``x``'s logical order.
    """
    x = np.asarray(x)
    out = [("c", np.ascontiguousarray(x)), ("fortran", np.asfortranarray(x))]
    # strided view: embed in a bigger array and take every other element on each axis
    big = np.zeros(tuple(2 * s for s in x.shape), dtype=x.dtype)
    big[tuple(slice(None, None, 2) for _ in x.shape)] = x
    out.append(("strided", big[tuple(slice(None, None, 2) for _ in x.shape)]))
    # negative strides: a reversed copy, viewed reversed again
    rev = np.ascontiguousarray(x[tuple(slice(None, None, -1) for _ in x.shape)])
    out.append(("negative-strides", rev[tuple(slice(None, None, -1) for _ in x.shape)]))
    swapped = x.astype(x.dtype.newbyteorder("S"))
    out.append(("byteswapped", swapped))
    ro = np.array(x)
    ro.flags.writeable = False
    out.append(("readonly", ro))
    # unaligned: the data starts one byte into a buffer
    if x.dtype.itemsize > 1:
        buf = np.zeros(x.nbytes + 1, dtype=np.uint8)
        unaligned = buf[1:].view(x.dtype).reshape(x.shape)
        unaligned[...] = x
        assert not unaligned.flags.aligned
        out.append(("unaligned", unaligned))
    return out


def evaluator_result(logits, target, **options):
    """Evaluator(**options).result() after one in-memory update."""
    ev = cecore.Evaluator(**options)
    ev.update(logits, target)
    return ev.result()


def assert_metrics_equal(got, want, rtol=1e-13, other_keys=False):
    """Evaluator metrics: the same keys in order (``other_keys``: ``got`` may hold
    more, e.g. the CLI's file information), counts exactly, sums to ``rtol``."""
    assert [k for k in got if k in want or not other_keys] == list(want)
    for key, value in want.items():
        if key == "count" or key.startswith("accuracy"):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=rtol), key


def run_python_child(code, cwd, timeout=300):
    """Run ``python -c code`` from ``cwd`` (outside the source tree) importing the cecore
    under test, the installed one or an in-place build; returns the CompletedProcess."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(cecore.__file__)))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": here})
