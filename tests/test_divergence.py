"""entropy, cross_entropy_pq and kl_divergence (cecore/_divergence.py)."""

import math

import _reference as ref
import numpy as np
import pytest
import scipy.special as sp
import scipy.stats
from _helpers import variants

import cecore

FUNCS = {
    "entropy": cecore.entropy,
    "cross_entropy_pq": cecore.cross_entropy_pq,
    "kl_divergence": cecore.kl_divergence,
}


def _call(name, p, q, **kw):
    if name == "entropy":
        return FUNCS[name](p, **kw)
    return FUNCS[name](p, q, **kw)


def _ref(name, p, q, **kw):
    if name == "entropy":
        return ref.entropy(p, **kw)
    return getattr(ref, name)(p, q, **kw)


def _dists(rng, shape, axis=-1, zeros=True, dtype=np.float64):
    """Normalised distributions along ``axis``, with some exact zeros."""
    p = rng.dirichlet(np.full(shape[axis], 0.7), size=shape[:axis % len(shape)] +
                      shape[axis % len(shape) + 1:])
    if zeros:
        p[p < 0.03] = 0.0
        p /= p.sum(axis=-1, keepdims=True)
    return np.moveaxis(p, -1, axis).astype(dtype)


SHAPES = [((8,), -1), ((6, 5), -1), ((5, 6), 0), ((3, 4, 7), 1), ((2, 3, 40), -1)]
SHAPE_IDS = [f"{'x'.join(map(str, s))}-axis{a}" for s, a in SHAPES]


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("base", [None, 2, 10], ids=["nats", "bits", "base10"])
def test_matches_reference(rng, name, shape, axis, dt, base):
    dtype = {"f64": np.float64, "f32": np.float32}[dt]
    p = _dists(rng, shape, axis, dtype=dtype)
    q = _dists(rng, shape, axis, zeros=False, dtype=dtype)
    got = _call(name, p, q, axis=axis, base=base)
    want = _ref(name, p, q, axis=axis, base=base)
    batch = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    assert np.shape(got) == batch
    if batch == ():
        assert isinstance(got, np.floating)
    assert np.asarray(got).dtype == dtype
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_matches_scipy_special(rng, shape, axis):
    p = _dists(rng, shape, axis)
    q = _dists(rng, shape, axis, zeros=False)
    np.testing.assert_allclose(cecore.entropy(p, axis=axis), sp.entr(p).sum(axis=axis),
                               rtol=1e-13)
    np.testing.assert_allclose(cecore.cross_entropy_pq(p, q, axis=axis),
                               -sp.xlogy(p, q).sum(axis=axis), rtol=1e-13)
    np.testing.assert_allclose(cecore.kl_divergence(p, q, axis=axis),
                               sp.rel_entr(p, q).sum(axis=axis), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("base", [None, 2, math.e, 10])
def test_matches_scipy_stats_entropy(rng, base):
    # scipy.stats.entropy normalises its inputs; cecore does not: pass distributions
    p = _dists(rng, (7, 9))
    q = _dists(rng, (7, 9), zeros=False)
    np.testing.assert_allclose(cecore.entropy(p, base=base),
                               scipy.stats.entropy(p, base=base, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(cecore.kl_divergence(p, q, base=base),
                               scipy.stats.entropy(p, q, base=base, axis=-1),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cecore.entropy(p.T, axis=0, base=base),
                               scipy.stats.entropy(p.T, base=base, axis=0), rtol=1e-13)


def test_cross_entropy_pq_is_scipy_entropy_plus_relative_entropy(rng):
    p = _dists(rng, (6, 9))
    q = _dists(rng, (6, 9), zeros=False)
    for base in (None, 2):
        want = (scipy.stats.entropy(p, base=base, axis=-1)
                + scipy.stats.entropy(p, q, base=base, axis=-1))
        np.testing.assert_allclose(cecore.cross_entropy_pq(p, q, base=base), want, rtol=1e-13)


def test_is_not_normalised_unlike_scipy():
    p = np.array([1.0, 3.0])  # sums to 4
    assert cecore.entropy(p) == pytest.approx(-3 * math.log(3), rel=1e-15, abs=0)
    assert cecore.entropy(p) != pytest.approx(scipy.stats.entropy(p))


@pytest.mark.parametrize("dt", ["f64", "f32"])
def test_kl_is_cross_entropy_minus_entropy(rng, dt):
    dtype = {"f64": np.float64, "f32": np.float32}[dt]
    p = _dists(rng, (50, 12), dtype=dtype)
    q = _dists(rng, (50, 12), zeros=False, dtype=dtype)
    kl = cecore.kl_divergence(p, q).astype(np.float64)
    h_pq = cecore.cross_entropy_pq(p, q).astype(np.float64)
    h_p = cecore.entropy(p).astype(np.float64)
    tol = 1e-13 if dtype == np.float64 else 2e-6
    err = np.abs(kl - (h_pq - h_p))
    assert np.all(err <= tol * (np.abs(h_pq) + np.abs(h_p))), err.max()
    assert np.all(kl >= 0)
    np.testing.assert_array_equal(cecore.kl_divergence(p, p), np.zeros(50, dtype))
    np.testing.assert_allclose(cecore.cross_entropy_pq(p, p), h_p, rtol=tol)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("base", [2, 10, 0.5, 7.3])
def test_base_conversion(rng, name, base):
    p = _dists(rng, (9, 6))
    q = _dists(rng, (9, 6), zeros=False)
    nats = _call(name, p, q)
    np.testing.assert_allclose(_call(name, p, q, base=base), nats / math.log(base), rtol=1e-14)
    np.testing.assert_allclose(_call(name, p, q, base=math.e), nats, rtol=1e-15)


def test_bits_of_fair_coin_and_die():
    assert cecore.entropy([0.5, 0.5], base=2) == 1.0
    assert cecore.entropy(np.full(8, 0.125), base=2) == pytest.approx(3.0, rel=1e-15, abs=0)
    assert cecore.entropy(np.full(6, 1 / 6)) == pytest.approx(math.log(6), rel=1e-15, abs=0)
    assert cecore.cross_entropy_pq([0.5, 0.5], [0.25, 0.75], base=2) == pytest.approx(
        1.2075187496394222, rel=1e-15, abs=0)
    assert cecore.kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-14, abs=0)


def test_zero_conventions():
    assert cecore.entropy([1.0, 0.0, 0.0]) == 0.0
    assert cecore.entropy([0.0, 0.0]) == 0.0
    assert cecore.cross_entropy_pq([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert cecore.kl_divergence([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert cecore.kl_divergence([0.0, 1.0], [0.5, 0.5]) == pytest.approx(
        math.log(2), rel=1e-15, abs=0)
    assert cecore.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert cecore.cross_entropy_pq([0.5, 0.5], [1.0, 0.0]) == np.inf
    got = cecore.kl_divergence([[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_array_equal(got, [np.inf, 0.0])


def test_extreme_ratios_stay_finite_and_accurate():
    # p / q overflows or underflows: log(p) - log(q) is used instead
    p = np.array([1e-300, 1.0 - 1e-300])
    q = np.array([1e300, 1e-300])
    got = cecore.kl_divergence(p, q)
    want = 1e-300 * (math.log(1e-300) - math.log(1e300)) + 1.0 * (0 - math.log(1e-300))
    assert got == pytest.approx(want, rel=1e-15, abs=0)
    got = cecore.kl_divergence([5e-324, 1.0], [1.0, 1.0])
    assert got == 0.0 or abs(got) < 1e-320


@pytest.mark.parametrize("name", ["cross_entropy_pq", "kl_divergence"])
def test_broadcasting(rng, name):
    p = _dists(rng, (5, 7))
    q = _dists(rng, (7,), zeros=False)
    got = _call(name, p, q)
    want = np.array([_call(name, p[i], q) for i in range(5)])
    np.testing.assert_array_equal(got, want)
    got = _call(name, q, p)  # p broadcast against q
    want = np.array([_call(name, q, p[i]) for i in range(5)])
    np.testing.assert_array_equal(got, want)
    # a size-1 axis broadcast along the reduced axis
    q1 = np.full((5, 1), 1 / 7)
    np.testing.assert_allclose(_call(name, p, q1), _call(name, p, np.full((5, 7), 1 / 7)),
                               rtol=1e-15)
    # 3-D with the reduced axis in the middle
    p3 = _dists(rng, (2, 7, 3), axis=1)
    q3 = _dists(rng, (7, 1), axis=0, zeros=False)
    np.testing.assert_allclose(_call(name, p3, q3, axis=1),
                               _ref(name, p3, q3, axis=1), rtol=1e-13)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dt", ["f64", "f32"])
def test_layouts_identical_and_inputs_unmodified(rng, name, dt):
    dtype = {"f64": np.float64, "f32": np.float32}[dt]
    p = _dists(rng, (9, 8), dtype=dtype)
    q = _dists(rng, (9, 8), zeros=False, dtype=dtype)
    want = _call(name, p, q)
    for (pn, pv), (qn, qv) in zip(variants(p), variants(q)):
        pb, qb = pv.copy(), qv.copy()
        np.testing.assert_array_equal(_call(name, pv, qv), want, err_msg=f"{pn}/{qn}")
        np.testing.assert_array_equal(pv, pb)
        np.testing.assert_array_equal(qv, qb)


@pytest.mark.parametrize("name", list(FUNCS))
def test_input_types(rng, name):
    p = _dists(rng, (3, 4))
    q = _dists(rng, (3, 4), zeros=False)
    want = _call(name, p, q)
    np.testing.assert_array_equal(_call(name, p.tolist(), q.tolist()), want)
    got16 = _call(name, p.astype(np.float16), q.astype(np.float16))
    assert got16.dtype == np.float32
    np.testing.assert_allclose(got16, _ref(name, p.astype(np.float16), q.astype(np.float16)),
                               rtol=2e-6, atol=1e-7)
    counts = np.array([[1, 0, 3], [2, 2, 0]])
    got_int = _call(name, counts, counts + 1)
    assert got_int.dtype == np.float64
    np.testing.assert_allclose(got_int, _ref(name, counts, counts + 1), rtol=1e-14)
    if name != "entropy":
        assert _call(name, p.astype(np.float32), q).dtype == np.float64
        assert _call(name, p.astype(np.float32), q.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("name", list(FUNCS))
def test_nan_spoils_only_its_row(rng, name):
    p = _dists(rng, (4, 6), zeros=False)
    q = _dists(rng, (4, 6), zeros=False)
    p[1, 2] = np.nan
    got = _call(name, p, q)
    assert np.isnan(got[1])
    np.testing.assert_array_equal(got[[0, 2, 3]], _call(name, p[[0, 2, 3]], q[[0, 2, 3]]))
    if name != "entropy":
        q2 = q.copy()
        q2[3, 0] = np.nan
        p2 = p.copy()
        p2[3, 0] = 0.0  # NaN in q propagates even where p = 0
        assert np.isnan(_call(name, p2, q2)[3])


# ---------------------------------------------------------------------------
# densities on a grid: the measure


def _grid(n, lo, hi):
    x = np.linspace(lo, hi, n)
    dx = x[1] - x[0]
    trap = np.full(n, dx)
    trap[[0, -1]] = dx / 2
    return x, dx, trap


def _gauss(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("rule", ["trapezoid", "rectangle"])
def test_gaussian_differential_entropy(sigma, rule):
    x, dx, trap = _grid(4001, -12 * sigma, 12 * sigma)
    p = _gauss(x, 0.0, sigma)
    measure = trap if rule == "trapezoid" else dx
    h = cecore.entropy(p, measure=measure)
    assert h == pytest.approx(0.5 * math.log(2 * math.pi * math.e * sigma**2), abs=1e-6)
    bits = cecore.entropy(p, measure=measure, base=2)
    assert bits == pytest.approx(h / math.log(2), rel=1e-14, abs=0)


def test_gaussian_kl_and_cross_entropy():
    mu1, s1, mu2, s2 = 0.3, 1.2, -0.5, 2.0
    x, _, trap = _grid(6001, -20, 20)
    p, q = _gauss(x, mu1, s1), _gauss(x, mu2, s2)
    kl = cecore.kl_divergence(p, q, measure=trap)
    want = math.log(s2 / s1) + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5
    assert kl == pytest.approx(want, abs=1e-6)
    h_pq = cecore.cross_entropy_pq(p, q, measure=trap)
    h_p = 0.5 * math.log(2 * math.pi * math.e * s1**2)
    assert h_pq == pytest.approx(h_p + want, abs=1e-6)


def test_measure_weights_each_term(rng):
    p = _dists(rng, (4, 5))
    q = _dists(rng, (4, 5), zeros=False)
    w = rng.uniform(0, 3, 5)
    for name in FUNCS:
        got = _call(name, p, q, measure=w)
        np.testing.assert_allclose(got, _ref(name, p, q, measure=w), rtol=1e-13, err_msg=name)
        np.testing.assert_allclose(_call(name, p, q, measure=2.0), 2.0 * _call(name, p, q),
                                   rtol=1e-15, err_msg=name)
        np.testing.assert_allclose(_call(name, p, q, measure=w.tolist()), got, rtol=0)
        np.testing.assert_allclose(_call(name, p, q, measure=w.astype(np.float32)),
                                   _ref(name, p, q, measure=w.astype(np.float32)), rtol=1e-13)
    # a zero weight removes a point
    w0 = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(cecore.entropy(p, measure=w0),
                               cecore.entropy(p[:, [0, 2, 3, 4]]), rtol=1e-15)


@pytest.mark.parametrize("name", ["kl_divergence", "cross_entropy_pq"])
def test_zero_measure_point_with_infinite_term_does_not_count(name):
    # regression: 0 * inf gave NaN
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.5, 0.0, 0.5])
    w = np.array([1.0, 0.0, 1.0])
    got = _call(name, p, q, measure=w)
    want = _call(name, p[[0]], q[[0]])
    assert got == pytest.approx(float(want), rel=1e-15, abs=0)


def test_empty_batch():
    for name in FUNCS:
        got = _call(name, np.zeros((0, 4)), np.zeros((0, 4)))
        assert got.shape == (0,)


# ---------------------------------------------------------------------------
# errors specific to the divergences (the shared ones: tests/test_validation.py)


def test_p_q_do_not_broadcast():
    for fn in (cecore.cross_entropy_pq, cecore.kl_divergence):
        with pytest.raises(ValueError, match=r"p .*q"):
            fn(np.full((3, 4), 0.25), np.full((2, 4), 0.25))


@pytest.mark.parametrize("fn", ["entropy", "cross_entropy_pq", "kl_divergence"])
def test_distributions_with_no_points(fn):
    args = (np.zeros((2, 0)),) if fn == "entropy" else (np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="p has no elements"):
        getattr(cecore, fn)(*args)


@pytest.mark.parametrize("fn", ["entropy", "cross_entropy_pq", "kl_divergence"])
def test_negative_p(fn):
    p = np.array([[0.5, 0.5], [1.5, -0.5]])
    q = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="p .*non-negative"):
        getattr(cecore, fn)(p) if fn == "entropy" else getattr(cecore, fn)(p, q)


@pytest.mark.parametrize("fn", ["cross_entropy_pq", "kl_divergence"])
def test_negative_q(fn):
    p = np.full((2, 2), 0.5)
    q = np.array([[0.5, 0.5], [1.5, -0.5]])
    with pytest.raises(ValueError, match="q .*non-negative|non-negative.*q"):
        getattr(cecore, fn)(p, q)
    # also where p is 0 (a negative q is invalid regardless of p)
    with pytest.raises(ValueError, match="non-negative"):
        getattr(cecore, fn)(np.array([1.0, 0.0]), np.array([1.0, -0.5]))


@pytest.mark.parametrize("fn", ["entropy", "cross_entropy_pq", "kl_divergence"])
@pytest.mark.parametrize("measure", [[1.0, 2.0, 3.0], [[1.0, 1.0]], [1.0, -1.0], [1.0, np.inf],
                                     [1.0, np.nan], -1.0],
                         ids=["long", "2d", "negative", "inf", "nan", "negative-scalar"])
def test_bad_measure(fn, measure):
    p = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="measure"):
        getattr(cecore, fn)(p, measure=measure) if fn == "entropy" else \
            getattr(cecore, fn)(p, p, measure=measure)


def test_measure_of_bad_dtype():
    with pytest.raises(TypeError, match="measure"):
        cecore.entropy([0.5, 0.5], measure=["a", "b"])
    with pytest.raises(TypeError, match="measure"):
        cecore.entropy([0.5, 0.5], measure=[1j, 1j])


@pytest.mark.parametrize("base", [1, 0, -2, np.inf, np.nan, 1.0])
def test_bad_base(base):
    with pytest.raises(ValueError, match="base"):
        cecore.entropy([0.5, 0.5], base=base)
    with pytest.raises(ValueError, match="base"):
        cecore.kl_divergence([0.5, 0.5], [0.5, 0.5], base=base)


def test_base_of_bad_type():
    with pytest.raises(TypeError, match="base"):
        cecore.entropy([0.5, 0.5], base="two")


def test_entropy_of_zero_measure_is_positive_zero():
    h = cecore.entropy([0.5, 0.5], measure=0.0)
    assert h == 0.0 and not np.signbit(h)
