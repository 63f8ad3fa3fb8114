"""cecore.scipy (cecore/scipy.py) against SciPy's own functions."""

import warnings

import numpy as np
import pytest
from _helpers import run_python_child

sp = pytest.importorskip("scipy.special")
ss = pytest.importorskip("scipy.stats")
import cecore.scipy as cs  # noqa: E402

SPECIALS = [0.0, 1.0, -np.inf, np.inf, np.nan, 700.0, -3.0]
DTYPES = [np.float64, np.float32, np.float16, np.int64]
DTYPE_IDS = ["f64", "f32", "f16", "int"]
SHAPES = [(7,), (3, 5), (2, 3, 4), ()]


def _axes(ndim):
    axes = [None, ()] + list(range(-ndim, ndim))
    if ndim > 1:
        axes.append((0, ndim - 1))
    if ndim > 2:
        axes.append((-1, 0))
    return axes


CASES = [(shape, axis) for shape in SHAPES for axis in _axes(len(shape))]
CASE_IDS = [f"{'x'.join(map(str, s)) or 'scalar'}-axis{a}" for s, a in CASES]


def _data(shape, dtype, special, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        x = rng.integers(0 if positive else -5, 6, size=shape)
    else:
        x = rng.normal(size=shape) * 3
        if positive:
            x = np.abs(x)
        if special and x.size:
            n = max(1, x.size // 3)
            x.flat[rng.integers(0, x.size, n)] = rng.choice(SPECIALS, n)
        x = np.asarray(x).astype(dtype)
    return x


def _scipy(fn, *args, **kwargs):
    """SciPy's result (or exception), its warnings on special values silenced."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - compared with ours below
            return error


def _tol(dtype, in_dtype):
    kinds = {np.dtype(np.float16): 4e-3, np.dtype(np.float32): 3e-6}
    return max(kinds.get(np.dtype(dtype), 1e-12), kinds.get(np.dtype(in_dtype), 1e-12))


def assert_same(ours, theirs, in_dtype):
    if isinstance(theirs, Exception):
        pytest.fail(f"SciPy raised {theirs!r}, cecore returned {ours!r}")
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours) == len(theirs)
    for x, y in zip(ours, theirs):
        assert type(x) is type(y), (type(x), type(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype
        assert np.shape(x) == np.shape(y)
        tol = _tol(np.asarray(y).dtype, in_dtype)
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol, equal_nan=True)


# ----------------------------------------------------------------- logsumexp

@pytest.mark.parametrize("special", [False, True], ids=["finite", "special"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("shape", "axis"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("weights", ["none", "signed", "positive-f32", "zeros"])
def test_logsumexp_matches_scipy(shape, axis, dtype, special, weights):
    a = _data(shape, dtype, special)
    b = None
    if weights != "none":
        rng = np.random.default_rng(1)
        b = rng.normal(size=shape)
        if weights == "positive-f32":
            b = np.abs(b).astype(np.float32)
        elif weights == "zeros" and b.size:
            b.flat[:: 2] = 0.0
    for return_sign in (False, True):
        for keepdims in (False, True):
            kw = {"axis": axis, "b": b, "return_sign": return_sign, "keepdims": keepdims}
            assert_same(cs.logsumexp(a, **kw), _scipy(sp.logsumexp, a, **kw), a.dtype)


@pytest.mark.parametrize(("a", "b"), [
    ([1.0, 2.0], [1.0, -1.0]),            # negative result: NaN, or sign -1
    ([2.0, 2.0], [1.0, -1.0]),            # exact cancellation: -inf, sign 0
    ([np.inf, 1.0], [0.0, 1.0]),          # b == 0 drops an infinite a
    ([np.nan, 1.0], [0.0, 1.0]),          # ... and a NaN
    ([np.inf, -np.inf], [0.0, 1.0]),      # ... but 0 * inf in SciPy's direct sum is NaN
    ([np.inf, 1.0], [-1.0, 1.0]),         # -inf sum
    ([np.inf, np.inf], [1.0, -1.0]),      # inf - inf
    ([1.0, 2.0], [np.inf, 1.0]),
    ([1.0, 2.0], [np.nan, 1.0]),
    ([0.0, 0.0], [1e308, 1e308]),         # the sum of b overflows
    ([1.0, 2.0], [0.0, 0.0]),             # every b is 0
    ([-np.inf, -np.inf], [1.0, 2.0]),
    ([700.0, 700.0], [1e300, -1e299]),
    ([3.0], [-2.0]),
])
def test_logsumexp_special_weights(a, b):
    for return_sign in (False, True):
        kw = {"b": b, "return_sign": return_sign}
        assert_same(cs.logsumexp(a, **kw), _scipy(sp.logsumexp, a, **kw), np.float64)


@pytest.mark.parametrize(("a", "b"), [
    (np.float32([3, 4]), 2.0), (np.float32([3, 4]), np.float64(2.0)),
    (np.float32([3, 4]), [1, 2]), (np.float16([3, 4]), None), ([True, False], None),
    (3, None), (np.float32(3), None), (np.arange(3), np.ones((2, 3))),  # b broadcasts a
])
def test_logsumexp_dtype_promotion(a, b):
    assert_same(cs.logsumexp(a, b=b), _scipy(sp.logsumexp, a, b=b), np.float16)


@pytest.mark.parametrize(("shape", "axis"), [((0,), None), ((0,), 0), ((3, 0), 1), ((3, 0), -1),
                                             ((0, 3), 0), ((0, 3), 1), ((2, 0, 3), 1)])
def test_logsumexp_empty_matches_scipy(shape, axis):
    a = np.empty(shape, np.float32)
    for kw in ({}, {"return_sign": True}, {"keepdims": True}):
        assert_same(cs.logsumexp(a, axis=axis, **kw), _scipy(sp.logsumexp, a, axis=axis, **kw),
                    a.dtype)


def test_logsumexp_empty_over_several_axes():
    # SciPy 1.17 raises IndexError here (a bug of its empty-input branch); cecore
    # returns the empty sum's logarithm
    assert isinstance(_scipy(sp.logsumexp, np.empty((3, 0))), IndexError)
    assert cs.logsumexp(np.empty((3, 0))) == -np.inf
    out, sgn = cs.logsumexp(np.empty((2, 0, 4)), axis=(0, 1), return_sign=True)
    assert out.shape == sgn.shape == (4,) and np.all(out == -np.inf) and np.all(sgn == -1)


# ------------------------------------------------------ softmax, log_softmax

@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "special"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("shape", "axis"), CASES, ids=CASE_IDS)
def test_softmax_family_matches_scipy(name, shape, axis, dtype, special):
    x = _data(shape, dtype, special)
    assert_same(getattr(cs, name)(x, axis=axis), _scipy(getattr(sp, name), x, axis=axis),
                x.dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("row", [[np.inf, 1.0, -np.inf], [np.inf, np.nan], [-np.inf, -np.inf],
                                 [np.inf, np.inf], [1e308, -1e308], [np.nan]])
def test_softmax_family_special_rows(name, row):
    x = np.array([row, [0.0] * len(row)])
    assert_same(getattr(cs, name)(x, axis=1), _scipy(getattr(sp, name), x, axis=1), x.dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize(("shape", "axis"), [((3, 0), 0), ((0, 3), 1), ((2, 0, 3), (0, 2))])
def test_softmax_family_empty_result(name, shape, axis):
    x = np.empty(shape)
    assert_same(getattr(cs, name)(x, axis=axis), _scipy(getattr(sp, name), x, axis=axis),
                x.dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize(("shape", "axis"), [((0,), None), ((0, 3), 0), ((3, 0), 1)])
def test_softmax_family_empty_reduction_raises_as_scipy(name, shape, axis):
    x = np.empty(shape)
    assert isinstance(_scipy(getattr(sp, name), x, axis=axis), ValueError)
    with pytest.raises(ValueError, match="no elements along axis"):
        getattr(cs, name)(x, axis=axis)


# ------------------------------------------------------------------ entropy

ENTROPY_CASES = [(s, a) for s, a in CASES if a != ()]
ENTROPY_IDS = [i for (s, a), i in zip(CASES, CASE_IDS) if a != ()]


@pytest.mark.parametrize("nan_policy", ["propagate", "omit", "raise"])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "special"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("shape", "axis"), ENTROPY_CASES, ids=ENTROPY_IDS)
def test_entropy_matches_scipy(shape, axis, dtype, special, nan_policy):
    pk = _data(shape, dtype, special, positive=not special)
    qk = _data(shape, dtype, False, seed=3, positive=True)
    for args, base in (((pk,), None), ((pk, qk), None), ((pk,), 2), ((pk, qk), 10.0)):
        for keepdims in (False, True):
            kw = {"base": base, "axis": axis, "nan_policy": nan_policy, "keepdims": keepdims}
            theirs = _scipy(ss.entropy, *args, **kw)
            if isinstance(theirs, ValueError):
                with pytest.raises(ValueError, match=str(theirs)):
                    cs.entropy(*args, **kw)
            else:
                assert_same(cs.entropy(*args, **kw), theirs, pk.dtype)


@pytest.mark.parametrize(("pk", "qk", "kw"), [
    ([], None, {}), (np.ones((0, 3)), None, {}), (np.ones((3, 0)), None, {}),
    (np.ones((3, 0)), np.ones((3, 0)), {"axis": 1}),
    ([np.nan, np.nan], None, {"nan_policy": "omit"}),
    ([[1.0, np.nan], [np.nan, np.nan]], [[1.0, 2.0], [3.0, 4.0]], {"nan_policy": "omit",
                                                                   "axis": 1}),
    ([1.0, -2.0], None, {}), ([1.0, 2.0], [1.0, -1.0], {}), ([0.0, 0.0], None, {}),
    ([1.0, 0.0], [0.0, 1.0], {}), ([np.inf, 1.0], None, {}),
    (np.ones((2, 3)), np.ones(3), {"axis": 1}), ([[1, 2]], np.ones((3, 1)), {"axis": 1}),
    (np.float16([[1, 2], [np.nan, 1]]), None, {"axis": 1}),
    (np.float16([[np.nan, 1], [1, 2]]), None, {"axis": 1}),
    (np.float16([1, np.nan]), None, {}), ([True, False, True], None, {}),
    (np.ones((2, 3, 4)), None, {"axis": None, "keepdims": True}),
    ([1, 2], [1, 2, 3], {}), ([1, 2], [5], {"axis": None}),
    (np.float32([1, 2]), [1, 1], {}), (np.float32([1, 2]), 2.0, {}),
])
def test_entropy_edge_cases(pk, qk, kw):
    theirs = _scipy(ss.entropy, pk, qk, **kw)
    if isinstance(theirs, ValueError):
        with pytest.raises(ValueError):
            cs.entropy(pk, qk, **kw)
    else:
        assert_same(cs.entropy(pk, qk, **kw), theirs, np.float64)


def test_entropy_base_one_divides_by_zero_as_scipy():
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        theirs = ss.entropy([1, 2], base=1)
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        ours = cs.entropy([1, 2], base=1)
    assert ours == theirs == np.inf


# ------------------------------------------------------------------- errors

@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda m: m.special.logsumexp([1.0, 2.0], axis=1), np.exceptions.AxisError, "axis 1"),
    (lambda m: m.special.logsumexp(np.ones((2, 3)), axis=(0, 0)), ValueError, "duplicate"),
    (lambda m: m.special.logsumexp([1.0], axis=1.0), TypeError, None),
    (lambda m: m.special.softmax([1.0, 2.0], axis=2), np.exceptions.AxisError, "axis 2"),
    (lambda m: m.special.softmax([True, False]), TypeError, None),
    (lambda m: m.special.log_softmax([True, False]), TypeError, None),
    (lambda m: m.stats.entropy([1, 2], base=0), ValueError, "`base` must be a positive"),
    (lambda m: m.stats.entropy([1, 2], base=-1), ValueError, "`base` must be a positive"),
    (lambda m: m.stats.entropy([1, np.nan], nan_policy="raise"), ValueError, "contains nan"),
    (lambda m: m.stats.entropy([1, 2], nan_policy="x"), ValueError, "nan_policy must be one"),
    (lambda m: m.stats.entropy(np.ones((2, 3)), np.ones((2, 4))), ValueError, None),
    (lambda m: m.stats.entropy(["a", "b"]), TypeError, None),
])
def test_errors_as_scipy(call, error, match):
    class Scipy:
        special, stats = sp, ss

    class Ours:
        special = stats = cs

    with pytest.raises(error, match=match):
        call(Scipy)
    with pytest.raises(error, match=match):
        call(Ours)


@pytest.mark.parametrize("call", [
    lambda: cs.logsumexp([1 + 1j, 2]), lambda: cs.logsumexp([1.0, 2.0], b=[1j, 1]),
    lambda: cs.softmax(np.array([1 + 0j])), lambda: cs.log_softmax([1j]),
    lambda: cs.entropy([1 + 1j, 2.0]), lambda: cs.entropy([1.0, 2.0], [1j, 1.0]),
])
def test_complex_input_is_rejected(call):
    with pytest.raises(TypeError, match="complex"):
        call()


def test_masked_arrays_are_rejected():
    with pytest.raises(TypeError, match="masked array"):
        cs.entropy(np.ma.masked_array([1.0, 2.0], mask=[0, 1]))


def test_import_does_not_import_scipy(tmp_path):
    code = ("import sys, cecore; assert 'cecore.scipy' not in sys.modules; "
            "import cecore.scipy; assert 'scipy' not in sys.modules, 'scipy imported'")
    proc = run_python_child(code, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_signatures_match_scipy():
    import inspect

    for ours, theirs in [(cs.logsumexp, sp.logsumexp), (cs.softmax, sp.softmax),
                         (cs.log_softmax, sp.log_softmax)]:
        assert str(inspect.signature(ours)) == str(inspect.signature(theirs))
    params = inspect.signature(cs.entropy).parameters
    assert [(p.name, p.default, p.kind) for p in params.values()] == [
        (p.name, p.default, p.kind) for p in inspect.signature(ss.entropy).parameters.values()]


def test_docstring_examples():
    import doctest

    failures, tried = doctest.testmod(cs, optionflags=doctest.ELLIPSIS, report=False)
    assert tried and failures == 0
