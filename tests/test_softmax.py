"""log_softmax, softmax and logsumexp (cecore/_softmax.py)."""

import math

import _reference as ref
import numpy as np
import pytest
import scipy.special as sp
from _helpers import (
    assert_log_softmax_close,
    assert_logsumexp_close,
    assert_softmax_close,
    variants,
)

import cecore

FUNCS = {
    "log_softmax": cecore.log_softmax,
    "softmax": cecore.softmax,
    "logsumexp": cecore.logsumexp,
}
SCIPY = {
    "log_softmax": sp.log_softmax,
    "softmax": sp.softmax,
    "logsumexp": sp.logsumexp,
}
CHECKS = {
    "log_softmax": assert_log_softmax_close,
    "softmax": assert_softmax_close,
    "logsumexp": assert_logsumexp_close,
}

# (shape, axis): K = shape[axis] covers 1, the packed small-row path (<= 32),
# its boundary (32/33) and the long-row path
SHAPES = [
    ((7,), -1),
    ((5, 1), -1),
    ((9, 2), -1),
    ((40, 10), -1),
    ((20, 31), 1),
    ((20, 32), -1),
    ((20, 33), -1),
    ((3, 1000), -1),
    ((10, 6), 0),
    ((4, 5, 6), 1),
    ((4, 5, 6), -3),
    ((2, 3, 4, 5), 2),
]
SHAPE_IDS = [f"{'x'.join(map(str, s))}-axis{a}" for s, a in SHAPES]


def _data(rng, shape, dtype, scale=3.0):
    return (rng.normal(size=shape) * scale).astype(dtype)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_matches_reference_within_error_bound(rng, name, dtype, shape, axis):
    x = _data(rng, shape, dtype)
    got = FUNCS[name](x, axis=axis)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype
    CHECKS[name](got, x, axis)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_matches_scipy(rng, name, dtype, shape, axis):
    x = _data(rng, shape, dtype, scale=5.0)
    got = FUNCS[name](x, axis=axis)
    want = SCIPY[name](x.astype(np.float64), axis=axis)
    assert got.shape == np.shape(want)
    if dtype == np.float64:
        # atol: log(sum) of a sum near 1 is good to ~1 ulp of 1 absolute
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    else:
        np.testing.assert_allclose(got, want, rtol=5e-6, atol=1e-6)




@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("int_dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_integer_input_gives_float64(name, int_dtype):
    x = np.array([[1, 2, 3], [0, 5, 7]], dtype=int_dtype)
    got = FUNCS[name](x)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, FUNCS[name](x.astype(np.float64)))


@pytest.mark.parametrize("name", list(FUNCS))
def test_list_input(name):
    data = [[0.5, -1.0, 2.0], [3.0, 3.0, 3.0]]
    np.testing.assert_array_equal(FUNCS[name](data), FUNCS[name](np.array(data)))


@pytest.mark.parametrize("name", list(FUNCS))
def test_axis_is_moveaxis_of_last_axis(rng, name):
    # a class axis followed by >= MIN_COLUMN_POSITIONS contiguous positions takes the
    # column kernels: the same quantities, the float sums in another order (a few ulp)
    x = _data(rng, (3, 4, 5, 6), np.float64)
    for axis in range(-4, 4):
        got = FUNCS[name](x, axis=axis)
        last = FUNCS[name](np.moveaxis(x, axis, -1))
        want = last if name == "logsumexp" else np.moveaxis(last, -1, axis)
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15, err_msg=f"axis={axis}")


def test_logsumexp_reduces_the_axis(rng):
    x = _data(rng, (2, 3, 4), np.float64)
    assert cecore.logsumexp(x, axis=0).shape == (3, 4)
    assert cecore.logsumexp(x, axis=1).shape == (2, 4)
    assert cecore.logsumexp(x).shape == (2, 3)
    assert np.ndim(cecore.logsumexp(x[0, 0])) == 0
    assert cecore.softmax(x, axis=1).shape == x.shape
    assert cecore.log_softmax(x, axis=0).shape == x.shape


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=["f64", "f32", "f16"])
def test_layouts_give_identical_results_and_inputs_are_not_modified(rng, name, dtype):
    x = _data(rng, (12, 40), dtype)
    want = FUNCS[name](x)
    for label, v in variants(x):
        before = v.copy()
        got = FUNCS[name](v)
        np.testing.assert_array_equal(got, want, err_msg=label)
        assert got.dtype == want.dtype, label
        np.testing.assert_array_equal(v, before, err_msg=f"{label}: input modified")
        assert not np.shares_memory(got, v), label


@pytest.mark.parametrize("name", list(FUNCS))
def test_transposed_axis0_equals_axis_last(rng, name):
    x = _data(rng, (50, 7), np.float32)
    got = FUNCS[name](x.T, axis=0)
    want = FUNCS[name](x, axis=-1)
    # the column kernels (see test_axis_is_moveaxis_of_last_axis): a few float32 ulp
    np.testing.assert_allclose(got, want.T if name != "logsumexp" else want, rtol=1e-6,
                               atol=1e-7)
    # and every layout of the same (7, 50) array gives the same bits
    np.testing.assert_array_equal(got, FUNCS[name](np.ascontiguousarray(x.T), axis=0))


@pytest.mark.parametrize("name", list(FUNCS))
def test_empty_batch(name):
    x = np.zeros((0, 5))
    got = FUNCS[name](x)
    assert got.shape == ((0,) if name == "logsumexp" else (0, 5))
    assert got.dtype == np.float64
    got = FUNCS[name](np.zeros((3, 0, 5), np.float32), axis=-1)
    assert got.shape == ((3, 0) if name == "logsumexp" else (3, 0, 5))


# ---------------------------------------------------------------------------
# extreme and special values


# rows whose differences x - max(x) are exact in the dtype, so that the exact
# answer is the float64 reference of the shifted row. (Rows with a huge
# maximum and several terms of the sum are a regression test: softmax gave
# [1, 1, 1] for [-1e38] * 3 before the log-sum-exp was kept as (shift, logsum).)
EXTREME = [
    ("f32-1e38-dominant", np.array([1e38, -1e38, 0.0], np.float32)),
    ("f32-3e38-tie", np.array([3e38, 3e38, -3e38], np.float32)),
    ("f32-minus-1e38-all-equal", np.full(3, -1e38, np.float32)),
    ("f32-minus-1e38-all-equal-long-row", np.full(40, -1e38, np.float32)),
    ("f64-1e308-dominant", np.array([1e308, -1e308, 0.0])),
    ("f64-1.7e308-tie", np.array([1.7e308, 1.7e308, -1.7e308])),
    ("f64-minus-1e308-all-equal", np.full(4, -1e308)),
    ("f64-1e15-offset", np.array([1e15, 1e15 + 1.0, 1e15 - 2.0])),
    ("f32-all-equal-long-row", np.full(50, 7.25, np.float32)),
    ("f64-all-equal", np.full(4, -123.5)),
    ("f64-huge-outlier", np.array([1e4, 0.0, 0.0, 0.0])),
    ("f32-huge-outlier-long-row", np.concatenate([[1e4], np.zeros(99)]).astype(np.float32)),
    ("f32-huge-outlier-middle", np.array([0.0, 0.0, 5e3, 0.0], np.float32)),
]


def _extreme_params():
    return [pytest.param(x, id=name) for name, x in EXTREME]


def _shifted(x):
    """x - max(x) in float64 (exact for the EXTREME rows; -inf where it overflows)."""
    with np.errstate(over="ignore"):
        return x.astype(np.float64) - float(np.max(x))


def _assert_extreme_close(got, want, dtype):
    """Within 2 ulps of the exact answer (inf where it overflows the dtype)."""
    got = np.asarray(got, np.float64)
    with np.errstate(over="ignore"):
        want = want.astype(dtype).astype(np.float64)  # e.g. -6e38 is -inf in float32
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin], want[~fin])
    spacing = np.spacing(np.abs(want[fin]).astype(dtype)).astype(np.float64)
    assert np.all(np.abs(got[fin] - want[fin]) <= 2 * spacing), (got, want)


@pytest.mark.parametrize("x", _extreme_params())
def test_extreme_softmax(x):
    got = cecore.softmax(x)
    assert got.dtype == x.dtype
    _assert_extreme_close(got, ref.softmax(_shifted(x)), x.dtype)


@pytest.mark.parametrize("x", _extreme_params())
def test_extreme_log_softmax(x):
    got = cecore.log_softmax(x)
    assert got.dtype == x.dtype
    _assert_extreme_close(got, ref.log_softmax(_shifted(x)), x.dtype)


@pytest.mark.parametrize("x", _extreme_params())
def test_extreme_logsumexp(x):
    m = float(np.max(x))
    want = np.float64(m + ref.logsumexp(_shifted(x)))
    got = cecore.logsumexp(x)
    assert got.dtype == x.dtype
    assert np.isfinite(got)
    # the result is m + log(sum) rounded to the dtype: within one ulp
    assert abs(float(got) - want) <= float(np.spacing(np.abs(want).astype(x.dtype))), (got, want)


def test_extreme_values_explicitly():
    # 1e308 + log(2) rounds to 1e308: no overflow on the way
    assert cecore.logsumexp(np.array([1e308, 1e308])) == 1e308
    assert cecore.logsumexp(np.array([1000.0, 1000.0])) == pytest.approx(1000 + math.log(2),
                                                                         rel=1e-15, abs=0)
    assert cecore.logsumexp(np.array([3e38, 3e38], np.float32)) == np.float32(3e38)
    np.testing.assert_array_equal(cecore.softmax(np.array([1e4, 0.0, 0.0])), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(cecore.log_softmax(np.array([1e4, 0.0, 0.0])), [0.0, -1e4, -1e4])
    np.testing.assert_allclose(cecore.softmax(np.full(8, 5.0)), np.full(8, 0.125),
                               rtol=4e-16, atol=0)
    np.testing.assert_allclose(cecore.softmax(np.full(64, -3.0, np.float32)),
                               np.full(64, 1 / 64), rtol=2e-7, atol=0)
    np.testing.assert_allclose(cecore.log_softmax(np.full(5, 10.0)), np.full(5, -math.log(5)),
                               rtol=1e-15)


@pytest.mark.parametrize("k", [2, 40], ids=["short-row", "long-row"])
def test_softmax_float32_underflows_gradually_into_subnormals(k):
    x = np.zeros(k, np.float32)
    x[1] = -100.0
    out = cecore.softmax(x)
    tiny = np.finfo(np.float32).tiny
    want = math.exp(-100.0) / (k - 1 + math.exp(-100.0))  # ~3.7e-44 / (k - 1)
    assert 0.0 < out[1] < tiny, "expected a subnormal, not 0 or a normal number"
    assert abs(float(out[1]) - want) <= float(np.finfo(np.float32).smallest_subnormal)
    assert cecore.log_softmax(x)[1] == pytest.approx(-100.0 - math.log(k - 1), rel=1e-7, abs=0)


@pytest.mark.parametrize("k", [2, 40], ids=["short-row", "long-row"])
def test_softmax_float64_underflows_gradually_into_subnormals(k):
    x = np.zeros(k)
    x[1] = -740.0
    out = cecore.softmax(x)
    want = math.exp(-740.0) / (k - 1)
    assert 0.0 < out[1] < np.finfo(np.float64).tiny
    assert abs(out[1] - want) <= 2 * np.finfo(np.float64).smallest_subnormal


def test_softmax_subnormal_grid_float32():
    # exp(-d) for d across the subnormal range: monotone and within one step
    d = np.linspace(87.5, 103.0, 200)
    x = np.stack([np.zeros_like(d), -d], axis=1).astype(np.float32)
    out = cecore.softmax(x)[:, 1].astype(np.float64)
    exact = np.exp(x[:, 1].astype(np.float64))
    np.testing.assert_array_less(np.abs(out - exact),
                                 exact * 1e-6 + np.finfo(np.float32).smallest_subnormal)
    assert np.all(np.diff(out) <= 0)
    assert np.all(out > 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("k", [3, 50], ids=["short-row", "long-row"])
def test_neg_inf_entries_are_masks(rng, dtype, k):
    x = _data(rng, (6, k), dtype)
    mask = np.zeros((6, k), bool)
    mask[:, 1] = True
    mask[2, : k - 1] = True  # row 2 keeps only its last class
    xm = np.where(mask, -np.inf, x).astype(dtype)
    sm = cecore.softmax(xm)
    lsm = cecore.log_softmax(xm)
    lse = cecore.logsumexp(xm)
    assert np.all(sm[mask] == 0.0)
    assert np.all(lsm[mask] == -np.inf)
    np.testing.assert_array_equal(sm[2], np.eye(k, dtype=dtype)[k - 1])
    assert lse[2] == x[2, k - 1]
    assert lsm[2, k - 1] == 0.0
    # the same as the row without its masked entries (to rounding: the
    # partial sums are laid out by position, so not always bitwise)
    tol = {"rtol": 1e-14, "atol": 0} if dtype == np.float64 else {"rtol": 2e-6, "atol": 0}
    for r in range(6):
        keep = ~mask[r]
        np.testing.assert_allclose(sm[r, keep], cecore.softmax(x[r, keep]), **tol)
        np.testing.assert_allclose(lsm[r, keep], cecore.log_softmax(x[r, keep]), **tol)
        np.testing.assert_allclose(lse[r], cecore.logsumexp(x[r, keep]), **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("k", [1, 4, 50], ids=["k1", "short-row", "long-row"])
def test_all_neg_inf_row(rng, dtype, k):
    x = _data(rng, (3, k), dtype)
    x[1] = -np.inf
    lse = cecore.logsumexp(x)
    assert lse[1] == -np.inf
    assert np.all(np.isnan(cecore.log_softmax(x)[1]))
    assert np.all(np.isnan(cecore.softmax(x)[1]))
    # other rows unaffected
    for fn in FUNCS.values():
        np.testing.assert_array_equal(fn(x)[[0, 2]], fn(x[[0, 2]]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("k", [4, 50], ids=["short-row", "long-row"])
@pytest.mark.parametrize("where", ["first", "last", "all"])
def test_nan_spoils_only_its_row(rng, dtype, k, where):
    x = _data(rng, (5, k), dtype)
    cols = {"first": [0], "last": [k - 1], "all": list(range(k))}[where]
    x[3, cols] = np.nan
    for name, fn in FUNCS.items():
        got = fn(x)
        assert np.all(np.isnan(got[3])), name
        keep = [0, 1, 2, 4]
        np.testing.assert_array_equal(got[keep], fn(x[keep]), err_msg=name)


@pytest.mark.parametrize("k", [3, 50], ids=["short-row", "long-row"])
def test_pos_inf_gives_nan_in_log_softmax_and_softmax(k):
    x = np.zeros((2, k))
    x[0, 1] = np.inf
    assert np.all(np.isnan(cecore.log_softmax(x)[0]))
    assert np.all(np.isnan(cecore.softmax(x)[0]))
    np.testing.assert_allclose(cecore.softmax(x)[1], np.full(k, 1.0 / k), rtol=1e-15)


@pytest.mark.parametrize("k", [2, 50], ids=["short-row", "long-row"])
def test_logsumexp_of_pos_inf_is_pos_inf(k):
    # as log(sum(exp(x))), scipy and torch (regression: was NaN)
    x = np.zeros((2, k))
    x[0, 1] = np.inf
    with np.errstate(invalid="ignore"):
        assert sp.logsumexp(x[0]) == np.inf
    got = cecore.logsumexp(x)
    assert got[0] == np.inf
    assert got[1] == pytest.approx(math.log(k), rel=1e-15, abs=0)
    x[0, 0] = np.nan  # NaN wins over +inf
    assert np.isnan(cecore.logsumexp(x)[0])


def test_log_softmax_float64_tiny_output_is_accurate():
    # regression: log(sum) of a sum rounded near 1 gave -9.348e-14 (rel. error 1e-3)
    x = np.array([0.0, -30.0])
    exact = -math.log1p(math.exp(-30.0))
    assert cecore.log_softmax(x)[0] == pytest.approx(exact, rel=1e-14, abs=0)
    assert cecore.logsumexp(x) == pytest.approx(-exact, rel=1e-14, abs=0)


# (K, rows): short rows in blocks of many rows (the packed / 16-row paths) and
# long rows (the chunked path)
DOMINATED = [(2, 1), (2, 4096), (10, 4096), (33, 1), (33, 4096), (1000, 1), (1000, 64)]


def test_float32_rows_dominated_by_their_maximum_keep_relative_accuracy():
    # regression: the maximum's exp(0) = 1 was rounded into float32 partial sums,
    # costing tiny log-sum-exps (confident losses) up to 100% (AVX-512 gave
    # logsumexp([0, -20]) = 0); now the terms below the maximum are summed
    # apart: error <= (16 + 8) u ~ 1.4e-6 relative with float32 partial sums
    failures = []
    for k, n in DOMINATED:
        a = np.linspace(-20.0, -3.0, n).astype(np.float32)
        x = np.repeat(a[:, None], k, axis=1)
        x[:, 0] = 0.0
        exact = np.log1p((k - 1) * np.exp(a.astype(np.float64)))  # exact to 1e-16 rel.
        lse = cecore.logsumexp(x).astype(np.float64)
        lsm0 = cecore.log_softmax(x)[:, 0].astype(np.float64)
        total = cecore.softmax(x).astype(np.float64).sum(axis=1)
        for what, err in [("logsumexp", np.abs(lse / exact - 1)),
                          ("log_softmax", np.abs(-lsm0 / exact - 1)),
                          ("softmax sum", np.abs(total - 1))]:
            if err.max() > 2e-6:
                failures.append(f"K={k} rows={n}: {what} error {err.max():.2g}")
    assert not failures, failures


def test_float32_log_softmax_is_far_more_accurate_than_naive_float32():
    # the fused kernel keeps log_softmax of the dominant class accurate where a
    # float32 log(sum) would round 1 + 4.5e-5 and lose most digits
    x = np.array([0.0, -10.0], np.float32)
    exact = -math.log1p(math.exp(-10.0))
    assert cecore.log_softmax(x)[0] == pytest.approx(exact, rel=1e-6, abs=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("k", [1, 2, 17, 33, 500])
def test_softmax_sums_to_one_and_is_exp_of_log_softmax(rng, dtype, k):
    x = _data(rng, (64, k), dtype, scale=4.0)
    sm = cecore.softmax(x)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(sm.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=(k + 2) * eps)
    assert np.all((sm >= 0) & (sm <= 1))
    np.testing.assert_allclose(np.exp(cecore.log_softmax(x).astype(np.float64)),
                               sm.astype(np.float64), rtol=200 * eps, atol=1e-300)
    if k == 1:
        np.testing.assert_array_equal(sm, np.ones((64, 1), dtype))
        np.testing.assert_array_equal(cecore.log_softmax(x), np.zeros((64, 1), dtype))
        np.testing.assert_array_equal(cecore.logsumexp(x), x[:, 0])


def test_shift_invariance(rng):
    x = _data(rng, (20, 13), np.float64)
    np.testing.assert_allclose(cecore.softmax(x + 1000.0), cecore.softmax(x), rtol=1e-12)
    np.testing.assert_allclose(cecore.log_softmax(x - 500.0), cecore.log_softmax(x),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cecore.logsumexp(x + 250.0), cecore.logsumexp(x) + 250.0,
                               rtol=1e-14)


def test_torch_tensor_input():
    torch = pytest.importorskip("torch")
    t = torch.linspace(-3, 3, 24, dtype=torch.float32).reshape(4, 6)
    x = t.numpy().copy()
    for name, fn in FUNCS.items():
        got = fn(t)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, fn(x), err_msg=name)
    np.testing.assert_allclose(cecore.log_softmax(t), torch.log_softmax(t, -1).numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cecore.logsumexp(t, axis=0), torch.logsumexp(t, 0).numpy(),
                               rtol=1e-6)
