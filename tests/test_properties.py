"""Property-based tests (hypothesis) over shapes, dtypes, axes and options."""

import _reference as ref
import numpy as np
import pytest
from _helpers import (
    assert_log_softmax_close,
    assert_logsumexp_close,
    assert_softmax_close,
    loss_tol,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cecore

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

FLOAT_DTYPES = st.sampled_from([np.float64, np.float32])


@st.composite
def logits_and_axis(draw, min_k=1, max_k=70, max_batch=4, elements=None, dtypes=FLOAT_DTYPES):
    """A float array of 1-4 dimensions (batch sizes 1..max_batch, K in [min_k, max_k]) and
    its class axis."""
    dtype = draw(dtypes)
    ndim = draw(st.integers(1, 4))
    axis = draw(st.integers(-ndim, ndim - 1))
    k = draw(st.one_of(st.just(1), st.integers(min_k, 8), st.integers(min_k, max_k)))
    k = max(k, min_k)
    shape = [draw(st.integers(1, max_batch)) for _ in range(ndim)]
    shape[axis] = k
    if elements is None:
        elements = st.floats(-30, 30, allow_nan=False, width=32)
    x = draw(hnp.arrays(dtype, tuple(shape), elements=elements))
    return x, axis


def _batch(shape, axis):
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1:]


@SETTINGS
@given(case=logits_and_axis(), data=st.data(),
       reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]),
       use_weight=st.booleans(), ignore_frac=st.sampled_from([0.0, 0.4]))
def test_cross_entropy_index_targets_match_reference(case, data, reduction, eps, use_weight,
                                                    ignore_frac):
    x, axis = case
    k = x.shape[axis]
    batch = _batch(x.shape, axis)
    target = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, k - 1)))
    if ignore_frac:
        mask = data.draw(hnp.arrays(np.bool_, batch))
        target = np.where(mask, -100, target)
    weight = (data.draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.1, 3.0)))
              if use_weight else None)
    t_dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int16]))
    if t_dtype == np.uint8:
        assume(not ignore_frac)
    target = target.astype(t_dtype)
    got = cecore.cross_entropy(x, target, axis=axis, weight=weight, label_smoothing=eps,
                               reduction=reduction)
    want = ref.cross_entropy(x, target, axis=axis, weight=weight, label_smoothing=eps,
                             reduction=reduction)
    np.testing.assert_allclose(got, want, **loss_tol(x.dtype))


@SETTINGS
@given(case=logits_and_axis(), data=st.data(),
       reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.25]), use_weight=st.booleans())
def test_cross_entropy_soft_targets_match_reference(case, data, reduction, eps, use_weight):
    x, axis = case
    k = x.shape[axis]
    raw = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(0, 1)))
    total = raw.sum(axis=axis, keepdims=True)
    target = np.where(total > 0, raw / np.where(total > 0, total, 1), 1.0 / k).astype(x.dtype)
    weight = (data.draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.1, 3.0)))
              if use_weight else None)
    got = cecore.cross_entropy(x, target, axis=axis, weight=weight, label_smoothing=eps,
                               reduction=reduction)
    want = ref.cross_entropy(x, target, axis=axis, weight=weight, label_smoothing=eps,
                             reduction=reduction)
    tol = loss_tol(x.dtype)
    np.testing.assert_allclose(got, want, rtol=tol["rtol"] * 2, atol=tol["atol"] * 2)


@SETTINGS
@given(case=logits_and_axis(), data=st.data(), eps=st.sampled_from([0.0, 0.3]),
       use_weight=st.booleans())
def test_one_hot_float_targets_equal_index_targets(case, data, eps, use_weight):
    x, axis = case
    k = x.shape[axis]
    batch = _batch(x.shape, axis)
    target = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, k - 1)))
    one_hot = np.moveaxis(np.eye(k, dtype=x.dtype)[target], -1, axis)
    weight = (data.draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.1, 3.0)))
              if use_weight else None)
    kw = {"axis": axis, "weight": weight, "label_smoothing": eps}
    hard = cecore.cross_entropy(x, target, reduction="none", **kw)
    soft = cecore.cross_entropy(x, one_hot, reduction="none", **kw)
    np.testing.assert_allclose(soft, hard, **loss_tol(x.dtype))
    np.testing.assert_allclose(cecore.cross_entropy(x, one_hot, reduction="sum", **kw),
                               cecore.cross_entropy(x, target, reduction="sum", **kw),
                               **loss_tol(x.dtype))
    if weight is None:
        # without weights both means divide by the number of positions
        np.testing.assert_allclose(cecore.cross_entropy(x, one_hot, **kw),
                                   cecore.cross_entropy(x, target, **kw), **loss_tol(x.dtype))


@SETTINGS
@given(case=logits_and_axis(max_k=300))
def test_softmax_family_matches_reference(case):
    x, axis = case
    assert_softmax_close(cecore.softmax(x, axis=axis), x, axis)
    assert_log_softmax_close(cecore.log_softmax(x, axis=axis), x, axis)
    assert_logsumexp_close(cecore.logsumexp(x, axis=axis), x, axis)


@SETTINGS
@given(case=logits_and_axis(max_k=300, elements=st.floats(-1e4, 1e4, width=32)))
def test_softmax_sums_to_one_and_log_softmax_is_its_log(case):
    x, axis = case
    k = x.shape[axis]
    sm = cecore.softmax(x, axis=axis)
    assert sm.dtype == x.dtype and sm.shape == x.shape
    assert np.all((sm >= 0) & (sm <= 1))
    eps = np.finfo(x.dtype).eps
    m = np.max(x.astype(np.float64), axis=axis, keepdims=True)
    # each output has a relative error ~ (|x - m| + 24) u, plus |m| 2**-53 from
    # the float64 rounding of the shift (see _helpers); the sum inherits it
    lse = np.expand_dims(ref.logsumexp(x, axis), axis)
    shift_err = 8 * 2.0**-53 * (np.abs(m) + np.abs(lse))
    total = sm.astype(np.float64).sum(axis=axis, keepdims=True)
    assert np.all(np.abs(total - 1) <= (k + 24) * eps + shift_err), total
    lsm = cecore.log_softmax(x, axis=axis)
    assert np.all(lsm <= 0)
    fin = sm > np.finfo(x.dtype).tiny  # log of normal (not subnormal or 0) outputs
    with np.errstate(divide="ignore"):
        log_sm = np.log(sm.astype(np.float64))
    tol = (np.abs(x.astype(np.float64) - m) + 32) * eps + 2 * shift_err
    assert np.all(np.abs(log_sm - lsm)[fin] <= (tol + 8 * eps * np.abs(lsm))[fin])


@SETTINGS
@given(case=logits_and_axis(max_k=40, elements=st.floats(-1.0000000150474662e30,
                                                         1.0000000150474662e30, width=32)))
def test_logsumexp_bounds(case):
    # max <= lse <= max + log K, for any finite input
    x, axis = case
    lse = cecore.logsumexp(x, axis=axis).astype(np.float64)
    m = np.max(x, axis=axis).astype(np.float64)
    k = x.shape[axis]
    spacing = np.spacing(np.abs(m).astype(x.dtype)).astype(np.float64)
    assert np.all(np.isfinite(lse))
    assert np.all(lse >= m - spacing)
    assert np.all(lse <= m + np.log(k) + spacing + 1e-6 * np.log(k))


@st.composite
def distributions(draw, n_max=4, k_max=30):
    dtype = draw(FLOAT_DTYPES)
    n = draw(st.integers(1, n_max))
    k = draw(st.integers(1, k_max))
    zero_prob = draw(st.sampled_from([0.0, 0.3]))
    raw = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(1e-6, 1.0)))
    zeros = draw(hnp.arrays(np.bool_, (n, k))) if zero_prob else np.zeros((n, k), bool)
    raw = np.where(zeros, 0.0, raw)
    raw[:, 0] = np.maximum(raw[:, 0], 1e-3)  # at least one positive entry
    return (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)


@SETTINGS
@given(p=distributions(), q=distributions(), base=st.sampled_from([None, 2, 10]))
def test_kl_non_negative_and_identities(p, q, base):
    k = min(p.shape[1], q.shape[1])
    n = min(p.shape[0], q.shape[0])
    p, q = p[:n, :k], q[:n, :k]
    p = (p / p.sum(axis=1, keepdims=True)).astype(p.dtype)
    q = q.astype(p.dtype)  # normalised in p's dtype (q may have been drawn in another)
    assume(np.all(q.sum(axis=1) > 0))
    q = (q / q.sum(axis=1, keepdims=True)).astype(p.dtype)
    kl = cecore.kl_divergence(p, q, base=base)
    # non-negative up to rounding of the normalisation (sum p, sum q = 1 +- k eps)
    eps = np.finfo(p.dtype).eps
    assert np.all(kl >= -4 * k * eps)
    np.testing.assert_allclose(kl, ref.kl_divergence(p, q, base=base),
                               rtol=1e-12 if p.dtype == np.float64 else 2e-6,
                               atol=4 * k * eps)
    h = cecore.entropy(p, base=base).astype(np.float64)
    hpq = cecore.cross_entropy_pq(p, q, base=base).astype(np.float64)
    fin = np.isfinite(hpq)
    if fin.any():
        scale = 1 + np.abs(hpq[fin]) + np.abs(h[fin])
        np.testing.assert_allclose(kl.astype(np.float64)[fin], (hpq - h)[fin], rtol=0,
                                   atol=float(np.max(8 * k * eps * scale)))
    assert np.all(np.isinf(kl[~fin]))
    np.testing.assert_array_equal(cecore.kl_divergence(p, p, base=base), np.zeros(len(p)))
    assert np.all(h >= -4 * k * eps)
    assert np.all(h <= np.log(k) / (np.log(base) if base else 1) * (1 + 4 * eps) + 4 * k * eps)


@settings(max_examples=25, deadline=None)
@given(k=st.one_of(st.integers(1, 40), st.integers(41, 3000)), extra_rows=st.integers(0, 300),
       seed=st.integers(0, 2**32 - 1), dtype=FLOAT_DTYPES, n_threads=st.integers(2, 4))
def test_results_do_not_depend_on_n_threads(k, extra_rows, seed, dtype, n_threads):
    # shapes big enough to run in parallel (>= 2**15 elements), with ragged
    # block boundaries
    n = -(-(2**15) // k) + extra_rows
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, k)) * 3).astype(dtype)
    y = rng.integers(0, k, size=n)
    for fn in (cecore.log_softmax, cecore.softmax, cecore.logsumexp):
        assert fn(x, n_threads=n_threads).tobytes() == fn(x, n_threads=1).tobytes()
    for reduction in ("mean", "none"):
        a = cecore.cross_entropy(x, y, reduction=reduction, n_threads=n_threads)
        b = cecore.cross_entropy(x, y, reduction=reduction, n_threads=1)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@SETTINGS
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                    elements=st.floats(-40, 40)),
       t=st.floats(0, 1), pw=st.floats(0.1, 5), w=st.floats(0, 3))
def test_bce_with_logits_matches_reference(x, t, pw, w):
    target = np.full(x.shape, t)
    got = cecore.binary_cross_entropy_with_logits(x, target, pos_weight=pw, weight=w,
                                                  reduction="none")
    want = ref.binary_cross_entropy_with_logits(x, target, pos_weight=pw, weight=w,
                                                reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert np.all(got >= 0)
    p = 1 / (1 + np.exp(-x))
    got_p = cecore.binary_cross_entropy(p, target, weight=w, reduction="none")
    np.testing.assert_allclose(got_p, ref.binary_cross_entropy(p, target, weight=w,
                                                                reduction="none"),
                               rtol=1e-13, atol=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_tiny_k_explicit(k):
    # a deterministic companion of the properties for the smallest class counts
    x = np.linspace(-2, 2, 6 * k).reshape(6, k)
    y = np.arange(6) % k
    np.testing.assert_allclose(cecore.cross_entropy(x, y, reduction="none"),
                               ref.cross_entropy(x, y, reduction="none"), rtol=1e-13, atol=1e-15)
    if k == 1:
        np.testing.assert_array_equal(cecore.cross_entropy(x, y, reduction="none"), np.zeros(6))
