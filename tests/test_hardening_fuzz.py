"""Fuzzing the whole public API with hypothesis.

Every drawn call mixes valid and invalid pieces: dtypes (floating - float16
and bfloat16 included -, integer, non-native byte order, and bool, longdouble,
complex, object, str, bytes, datetime), shapes (0-d, empty, up to 3-d),
layouts (C, Fortran, negative and gapped strides, stride-0 broadcasts,
misaligned and read-only buffers, nested lists), values (moderate, NaN/inf,
extremes) and option values (valid, out of range, wrong type). Each piece
knows whether it is valid, invalid (and which exception README promises:
TypeError for non-numeric or complex data, ValueError for bad values and
shapes) or "gray" (accepted or rejected, both fine). The oracle:

* every call returns or raises TypeError/ValueError - never anything else,
  never a crash, never a hang (faulthandler kills a call stuck for 120 s);
* a call whose pieces are all valid must return, with the documented result
  shape and dtype, and, for finite (or NaN) inputs, values equal to a float64
  NumPy reference within a tolerance scaled by the inputs' magnitude; inputs
  with +-inf or extreme values are checked for NaN consistency only (their
  exact semantics are pinned in tests/test_hardening_numerics.py);
* dtypes follow README's rule: reductions (every loss, reduction="none"
  included, logsumexp, the divergences, Evaluator) in float64 for float64 or
  integer input and float32 otherwise - 16-bit input too, whose values the
  kernels upcast exactly and compute on in float32, so the float32 tolerance
  applies against the float64 reference on the upcast values; elementwise
  results (log_softmax, softmax, gradients) in the input's floating dtype,
  16-bit ones rounded once (half an ulp of the 16-bit type, plus slack);
* a call with an invalid piece must raise (the promised type when there is
  only one kind of invalid piece).

Properties: the softmax family, cross_entropy, nll_loss, both binary
cross-entropies, the three divergences, linear_cross_entropy and Evaluator;
and test_fuzz_half_logits, valid calls of every function on bfloat16 and
float16 logits with rows of up to 80 classes (the block kernels, their partial
row groups and the vector loops' remainders), checked against the float64
reference on the upcast values, or, with NaN/inf mixed in, against the float32
call on them.
Profiles: CECORE_FUZZ=ci (default: 300 derandomized examples per test, and 30
per (function, dtype) of test_fuzz_half_logits; ~20 s in all) or
CECORE_FUZZ=full (3000 random examples per test, 300 per pair; a few minutes). Run
against the code before the hardening fixes, the ci profile failed 3 of the
first 6 tests and the full profile 5 (OverflowError, ZeroDivisionError,
RuntimeWarning); on main's new API it found the linear_cross_entropy and
Evaluator bugs fixed alongside.
"""

import faulthandler
import math
import os
import warnings

import ml_dtypes
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
import _reference  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cecore  # noqa: E402
from cecore._validation import is_bfloat16  # noqa: E402

_COMMON = dict(
    deadline=None,
    database=None,  # never write into the source tree
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.register_profile("cecore-fuzz-ci", max_examples=300, derandomize=True, **_COMMON)
settings.register_profile("cecore-fuzz-full", max_examples=3000, **_COMMON)
PROFILE = os.environ.get("CECORE_FUZZ", "ci")
FUZZ = settings(settings.get_profile(f"cecore-fuzz-{PROFILE}"))

OK, TYPE, VALUE, GRAY = "ok", "type", "value", "gray"
HANG_SECONDS = 120

BF16 = np.dtype(ml_dtypes.bfloat16)  # kind 'V', no byte-swapped variant
FLOATS = ["float16", BF16, "float32", "float64", ">f2", ">f4", ">f8"]
HALVES = ["float16", BF16, ">f2"]  # drawn more often: the kernels' 16-bit load paths
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", ">i8"]
NON_NUMERIC = ["complex64", "complex128", "object", "U4", "S4", "datetime64[s]",
               "timedelta64[s]"]
ODD = ["bool", "longdouble"]  # numeric, but not what the API documents

SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e-310, 1.2e-38, 1e-45]


def _is_float(dtype):
    """A floating dtype (bfloat16's NumPy kind is 'V', not 'f')."""
    return dtype.kind == "f" or is_bfloat16(dtype)


def _finfo(dtype):
    """np.finfo, which does not know bfloat16."""
    return ml_dtypes.finfo(BF16) if is_bfloat16(dtype) else np.finfo(dtype)


class Arg:
    """A drawn argument: the value passed, and whether it is valid."""

    def __init__(self, value, status=OK, values="moderate"):
        self.value, self.status, self.values = value, status, values

    def __repr__(self):
        return f"Arg({self.status}, {self.values}, {self.value!r})"


# ---------------------------------------------------------------------------
# strategies


@st.composite
def shapes(draw, min_dims=0, max_dims=3, max_side=5):
    return tuple(draw(st.lists(st.integers(0, max_side), min_size=min_dims,
                               max_size=max_dims)))


def _layout(draw, a):
    """The same logical values in another memory layout."""
    if a.ndim == 0:  # asfortranarray & co. would return 1-d arrays
        return a.copy()
    kind = draw(st.sampled_from(["C", "F", "reversed", "gapped", "swapped", "misaligned",
                                 "readonly", "broadcast", "list", "C"]))
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "reversed" and a.ndim:
        return np.flip(np.flip(a).copy())
    if kind == "gapped" and a.ndim:
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    if kind == "swapped" and a.dtype.kind in "fiu" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder())  # (bfloat16 has no byte order)
    if kind == "misaligned" and (a.dtype.kind in "fiu" or is_bfloat16(a.dtype)) \
            and a.dtype.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
        out = np.frombuffer(raw[1:].data, dtype=a.dtype, count=a.size).reshape(a.shape)
        out[...] = a
        return out
    if kind == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if kind == "broadcast" and a.ndim and a.shape[0] > 1:
        return np.broadcast_to(a[:1], a.shape)  # stride 0 along the first axis
    if kind == "list" and a.size and (_is_float(a.dtype) or (
            a.dtype.kind in "iu" and a.dtype.itemsize >= 4)):
        return a.tolist()  # floats (16-bit ones exactly) come back as float64, ints as int64
    return np.ascontiguousarray(a)


def _values(draw, n, kind, dtype):
    """n float64 values of a kind: moderate, specials (NaN/inf mixed in), extreme."""
    if kind == "probs":
        elements = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 1e-300]))
    elif kind == "extreme":
        big = float(_finfo(dtype).max) if _is_float(dtype) else 1e300
        elements = st.one_of(st.floats(-100, 100), st.sampled_from([big, -big, big / 3,
                                                                    1e30, -1e30]))
    elif kind == "specials":
        elements = st.one_of(st.floats(-100, 100), st.sampled_from(SPECIALS))
    else:
        elements = st.one_of(st.floats(-100, 100), st.sampled_from([0.0, -0.0, 1e-310]))
    return draw(st.lists(elements, min_size=n, max_size=n))


@st.composite
def arrays(draw, shape, values=None, dtypes=None, name="x"):
    """An Arg holding an array of ``shape`` (floats or ints, or an invalid dtype)."""
    group = draw(st.sampled_from(["float", "float", "float", "half", "int", "non-numeric",
                                  "odd"]))
    pool = dtypes or {"float": FLOATS, "half": HALVES, "int": INTS,
                      "non-numeric": NON_NUMERIC, "odd": ODD}[group]
    dtype = np.dtype(draw(st.sampled_from(pool)))
    n = math.prod(shape)
    if values is None:
        values = draw(st.sampled_from(["moderate", "moderate", "specials", "extreme"]))
    if dtype.kind in "fc" or is_bfloat16(dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.array(_values(draw, n, values, dtype)).astype(dtype).reshape(shape)
    elif dtype.kind in "iub":
        lo = 0 if dtype.kind in "ub" else -50
        hi = 1 if dtype.kind == "b" else 50
        a = np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)),
                     dtype=np.int64).astype(dtype).reshape(shape)
        values = "moderate"
    elif dtype.kind == "O":
        a = np.array(_values(draw, n, "moderate", np.dtype(float)) + [None])[:-1]
        a = a.astype(object).reshape(shape)
    else:
        a = np.zeros(shape, dtype=np.float64).astype(dtype)
    if (dtype.kind in "fiu" and dtype.itemsize <= 8) or is_bfloat16(dtype):
        status = OK
    elif dtype.kind in "b" or dtype.kind == "f":  # bool, longdouble
        status = GRAY
    else:
        status = TYPE
    if dtype.kind in "fiu" or is_bfloat16(dtype):
        a = _layout(draw, a)
    return Arg(a, status, values)


def _option(draw, valid, invalid_type, invalid_value, gray=()):
    """An option value: (value, status) drawn from the four pools."""
    pools = [(v, OK) for v in valid] + [(v, TYPE) for v in invalid_type]
    pools += [(v, VALUE) for v in invalid_value] + [(v, GRAY) for v in gray]
    # valid values are drawn about half of the time
    if valid and draw(st.booleans()):
        value = draw(st.sampled_from(list(valid)))
        return Arg(value, OK)
    value, status = draw(st.sampled_from(pools))
    return Arg(value, status)


def axis_arg(draw, ndim, zero_d_element=False):
    """An axis for ndim dimensions. ``zero_d_element``: as in PyTorch, axis 0 or -1
    of a 0-d array is its one element (the softmax family); elsewhere a 0-d array
    has no axis."""
    if ndim == 0 and zero_d_element:
        return _option(draw, [0, -1, np.int64(0)], [None, 1.5, "0"], [1, -2, 2**70], [])
    if ndim == 0:
        return _option(draw, [], [None, 1.5, "0"], [0, -1], [])
    return _option(draw, list(range(-ndim, ndim)) + [np.int64(-1)], [None, 1.5, "0", [0]],
                   [ndim, -ndim - 1, 2**70], [True, False])


def n_threads_arg(draw):
    return _option(draw, [None, 1, 2, 3, np.int32(2), 64, 2**40], [2.0, "2", True],
                   [0, -1])


def reduction_arg(draw):
    return _option(draw, ["mean", "sum", "none"], [], ["avg", "MEAN", None, 3, ""])


# ---------------------------------------------------------------------------
# running a call


def _expected(*args):
    statuses = {a.status for a in args}
    if statuses & {TYPE, VALUE}:
        kinds = statuses & {TYPE, VALUE}
        if len(kinds) == 1 and GRAY not in statuses:  # a gray piece may fail first
            return {TypeError} if TYPE in kinds else {ValueError}
        return {TypeError, ValueError}
    return GRAY if GRAY in statuses else OK


def run(fn, args, kwargs, expect):
    """Call fn; check the exception contract. Returns the result or None if it raised."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning escapes either
            result = fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        if expect == OK:
            raise AssertionError(f"valid call raised {exc!r}") from exc
        if isinstance(expect, set) and type(exc) not in expect and not any(
                isinstance(exc, e) for e in expect):
            raise AssertionError(f"expected {expect}, got {exc!r}") from exc
        return None
    finally:
        faulthandler.cancel_dump_traceback_later()
    if isinstance(expect, set):
        raise AssertionError(f"invalid call returned instead of raising {expect}: {result!r}")
    return result


def _float(a):
    """The values the kernels see, in float64."""
    return np.asarray(np.asarray(a), dtype=np.float64)


def _result_dtype(*arrays):
    """float64 for float64 or integer input, else float32 (cecore's reductions;
    16-bit input included)."""
    dts = [np.asarray(a).dtype for a in arrays]
    return np.dtype(np.float64) if any(d.kind in "iu" or d.itemsize == 8 for d in dts) \
        else np.dtype(np.float32)


def _elementwise_dtype(given):
    """log_softmax, softmax and gradients: the input's floating dtype (native
    order), float64 for integer input."""
    return given.newbyteorder("=") if _is_float(given) else np.dtype(np.float64)


def _tolerance(dtype):
    """Relative tolerance of a result of ``dtype``: for 16-bit results (elementwise
    ones, computed in float32 and rounded once) half an ulp of the 16-bit type
    (its unit roundoff, 2**-8 for bfloat16, 2**-11 for float16) with slack for
    float32's error; reductions of 16-bit input are float32 results."""
    dtype = np.dtype(dtype)
    if is_bfloat16(dtype):
        return 1.25 * 2.0**-8
    return {2: 1.25 * 2.0**-11, 4: 3e-5, 8: 1e-10}[dtype.itemsize]


def _compute_tolerance(dtype):
    """The tolerance of the arithmetic behind a result of ``dtype``: float32's for
    16-bit results (the kernels compute them in float32, then round once)."""
    return _tolerance(np.float32 if np.dtype(dtype).itemsize == 2 else dtype)


def check_close(got, ref, dtype, scale, what=""):
    """got vs a float64 reference: same NaNs and infs; finite values within
    tolerance * |ref| + compute tolerance * scale + the dtype's smallest normal
    (underflow): the result's rounding, relative to the value, and the error of
    the arithmetic, relative to the inputs' magnitude (``scale``)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), ref.shape)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (what, got, ref)
    inf = np.isinf(ref) | np.isinf(got)
    assert np.array_equal(got[inf], ref[inf]), (what, got, ref)
    fin = ~np.isnan(ref) & ~inf
    tol = (_tolerance(dtype) * np.abs(ref[fin]) + _compute_tolerance(dtype) * scale[fin]
           + float(_finfo(dtype).tiny))
    err = np.abs(got[fin] - ref[fin])
    assert (err <= tol).all(), (what, got, ref, err.max())


def check_nan_consistency(got, x, axis=None):
    """Where a row of x has a NaN, the result of that row is NaN."""
    got = np.asarray(got, dtype=np.float64)
    xf = _float(x)
    if axis is None:
        rows_nan = np.isnan(xf)
    else:
        rows_nan = np.isnan(xf).any(axis=axis)
        if got.shape != rows_nan.shape:  # elementwise output: broadcast the row flag
            rows_nan = np.expand_dims(rows_nan, axis) & np.ones(got.shape, bool)
    assert np.isnan(got[rows_nan]).all()


# ---------------------------------------------------------------------------
# float64 references


def ref_lse(x):
    """log-sum-exp along the last axis; all -inf -> -inf, NaN -> NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x, axis=-1, keepdims=True) if x.shape[-1] else np.full(
            x.shape[:-1] + (1,), -np.inf)
        m = np.where(np.isfinite(m), m, 0.0)
        return (np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)) + m)[..., 0]


def _row_scale(x):
    finite = np.where(np.isfinite(x), np.abs(x), 0.0)
    return 1.0 + finite.max(axis=-1) if x.shape[-1] else np.ones(x.shape[:-1])


# ---------------------------------------------------------------------------
# softmax family


@FUZZ
@given(st.data())
def test_fuzz_softmax_family(data):
    draw = data.draw
    fn = draw(st.sampled_from([cecore.logsumexp, cecore.log_softmax, cecore.softmax]))
    shape = draw(shapes())
    x = draw(arrays(shape))
    ndim = len(shape)
    axis = axis_arg(draw, ndim, zero_d_element=True)
    n_threads = n_threads_arg(draw)
    zero_classes = Arg(None, OK)
    if ndim and axis.status == OK and shape[int(axis.value)] == 0:
        zero_classes = Arg(None, VALUE)
    expect = _expected(x, axis, n_threads, zero_classes)
    result = run(fn, (x.value,), dict(axis=axis.value, n_threads=n_threads.value), expect)
    if result is None:
        return
    given_dtype = np.asarray(x.value).dtype
    if fn is cecore.logsumexp:  # a reduction: float32 for 16-bit input
        out_dtype = _result_dtype(x.value)
    else:
        out_dtype = _elementwise_dtype(given_dtype)
    assert isinstance(result, np.ndarray) and result.dtype == out_dtype, (result.dtype,
                                                                           given_dtype)
    xv = x.value
    if ndim == 0:  # the one element: a 0-d result, checked as a row of one
        assert result.shape == ()
        xv, shape, ndim = np.asarray(xv).reshape(1), (1,), 1
        result = result.reshape(() if fn is cecore.logsumexp else (1,))
    ax = int(axis.value) % ndim
    xf = np.moveaxis(_float(xv), ax, -1)
    want_shape = shape[:ax] + shape[ax + 1:] if fn is cecore.logsumexp else shape
    assert result.shape == want_shape
    if x.values == "moderate" and expect == OK:
        lse = ref_lse(xf)
        scale = _row_scale(xf)
        if fn is cecore.logsumexp:
            check_close(result, lse, out_dtype, scale, "logsumexp")
        elif fn is cecore.log_softmax:
            ref = np.moveaxis(xf - lse[..., None], -1, ax)
            check_close(result, ref, out_dtype, np.moveaxis(
                np.broadcast_to(scale[..., None], xf.shape), -1, ax), "log_softmax")
        else:
            with np.errstate(under="ignore"):
                ref = np.moveaxis(np.exp(xf - lse[..., None]), -1, ax)
            # relative, down to two ulps of the subnormal range (gradual underflow)
            floor = 2 * float(_finfo(out_dtype).smallest_subnormal) / _compute_tolerance(
                out_dtype)
            check_close(result, ref, out_dtype, floor, "softmax")
    elif expect == OK:
        check_nan_consistency(result, xv, ax)


# ---------------------------------------------------------------------------
# cross_entropy and nll_loss


def _class_target(draw, batch_shape, k):
    """(Arg, kind): integer class indices (some maybe out of range: see
    _check_indices), "prob" (the caller draws probabilities) or a bad dtype."""
    kind = draw(st.sampled_from(["index", "index", "prob", "bad"]))
    n = math.prod(batch_shape)
    if kind == "index":
        dtype = np.dtype(draw(st.sampled_from(INTS)))
        values = draw(st.lists(st.one_of(st.integers(0, max(k - 1, 0)), st.just(-100)),
                               min_size=n, max_size=n))
        if n and draw(st.integers(0, 3)) == 0:  # out of range, unless it is ignore_index
            values[draw(st.integers(0, n - 1))] = draw(st.sampled_from([k, -1, 2**40]))
        if dtype.kind == "u":
            values = [abs(v) for v in values]
        if values and not (np.iinfo(dtype).min <= min(values) and max(values) <= np.iinfo(
                dtype).max):
            dtype = np.dtype(np.int64)
        t = np.array(values, dtype=np.int64).astype(dtype).reshape(batch_shape)
        return Arg(_layout(draw, t)), "index"
    if kind == "prob":
        return None, "prob"
    bad = draw(st.sampled_from([np.zeros(batch_shape, bool), np.zeros(batch_shape, complex),
                                np.zeros(batch_shape, "U2"), np.zeros(batch_shape, object)]))
    return Arg(bad, TYPE), "bad"


def _check_indices(target, k, ignore_index):
    """Mark an index target VALUE-invalid if an entry is neither a class nor ignored."""
    if target.status != OK or ignore_index.status != OK:
        return
    ii = int(ignore_index.value)
    if any(v != ii and not 0 <= v < k for v in np.asarray(target.value).reshape(-1).tolist()):
        target.status = VALUE


def _weight(draw, k, name="weight"):
    kind = draw(st.sampled_from(["none", "none", "ok", "ok", "shape", "complex", "str", "nan"]))
    if kind == "none":
        return Arg(None)
    if kind == "ok":
        w = np.array(draw(st.lists(st.floats(0, 3), min_size=k, max_size=k)))
        return Arg(_layout(draw, w.astype(draw(st.sampled_from(["float64", "float32",
                                                                  "int64"])))))
    if kind == "shape":
        return Arg(np.ones(k + 1), VALUE)
    if kind == "complex":
        return Arg(np.ones(k, complex), TYPE)
    if kind == "str":
        return Arg(np.array(["a"] * k), TYPE)
    return Arg(np.full(k, np.nan), OK, "specials")  # NaN weights: NaN losses


def ref_cross_entropy_index(xf, t, w, eps, ignore_index):
    """Per-row losses and counted weights (PyTorch's formula), xf (n, k) float64."""
    n, k = xf.shape
    w = np.ones(k) if w is None else w
    lse = ref_lse(xf)
    losses = np.zeros(n)
    wsum = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for r in range(n):
            y = int(t[r])
            if y == ignore_index:
                continue
            loss = (1 - eps) * w[y] * (lse[r] - xf[r, y])
            if eps:
                loss += eps / k * np.sum(w * (lse[r] - xf[r]))
            losses[r] = loss
            wsum += w[y]
    return losses, wsum


def ref_cross_entropy_prob(xf, tf, w, eps):
    n, k = xf.shape
    w = np.ones(k) if w is None else w
    tp = (1 - eps) * tf + eps / k
    with np.errstate(invalid="ignore", over="ignore"):
        terms = w * tp * (ref_lse(xf)[:, None] - xf)
        terms = np.where(w * tp == 0, 0.0, terms)
    return terms.sum(axis=1)


def _divide(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float64(a) / np.float64(b)


@FUZZ
@given(st.data())
def test_fuzz_cross_entropy(data):
    draw = data.draw
    shape = draw(shapes(max_side=4))
    logits = draw(arrays(shape))
    ndim = len(shape)
    axis = axis_arg(draw, ndim)
    ax = int(axis.value) % ndim if ndim and axis.status == OK else None
    k = shape[ax] if ax is not None else 1
    batch = shape[:ax] + shape[ax + 1:] if ax is not None else shape
    target, kind = _class_target(draw, batch, k)
    if kind == "prob":
        target = draw(arrays(shape, values="probs", dtypes=FLOATS))
        if ax is None:
            target.status = GRAY  # shape checks depend on the (invalid) axis
    shape_ok = Arg(None, OK if (ax is None or k > 0) else VALUE)
    weight = _weight(draw, k)
    smoothing = _option(draw, [0.0, 0.1, 1.0], [None, "x", 1j], [-0.1, 1.5, math.nan],
                        ["0.5"])
    ignore_index = _option(draw, [-100, 0, np.int64(1)], [1.5, "1", True], [2**63, -(2**70)])
    reduction = reduction_arg(draw)
    n_threads = n_threads_arg(draw)
    return_grad = draw(st.booleans())
    if kind == "index" and ax is not None:
        _check_indices(target, k, ignore_index)
    if kind == "prob" and ignore_index.status == OK and int(ignore_index.value) >= 0:
        # PyTorch's rule: no class to ignore in probability targets (negative values,
        # the default -100 included, pass)
        ignore_index = Arg(ignore_index.value, VALUE)
    expect = _expected(logits, axis, target, shape_ok, weight, smoothing, ignore_index,
                       reduction, n_threads)
    kwargs = dict(axis=axis.value, weight=weight.value, label_smoothing=smoothing.value,
                  ignore_index=ignore_index.value, reduction=reduction.value,
                  n_threads=n_threads.value)
    if return_grad:
        kwargs["return_grad"] = True
    result = run(cecore.cross_entropy, (logits.value, target.value), kwargs, expect)
    if result is None:
        return
    loss, grad = result if return_grad else (result, None)
    rdt = _result_dtype(logits.value)
    if reduction.value == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == batch and loss.dtype == rdt
    else:
        assert type(loss) is rdt.type
    if grad is not None:
        want = _elementwise_dtype(np.asarray(logits.value).dtype)
        assert grad.shape == shape and grad.dtype == want
    if expect != OK:
        return
    if logits.values != "moderate" or weight.values != "moderate":
        return
    xf = np.moveaxis(_float(logits.value), ax, -1).reshape(-1, k)
    w = None if weight.value is None else _float(weight.value)
    eps = float(smoothing.value)
    if kind == "index":
        tf = np.asarray(target.value).reshape(-1)
        losses, wsum = ref_cross_entropy_index(xf, tf, w, eps, int(ignore_index.value))
    else:
        tfull = np.moveaxis(_float(target.value), ax, -1).reshape(-1, k)
        losses = ref_cross_entropy_prob(xf, tfull, w, eps)
        wsum = xf.shape[0]
    wmax = 1.0 if w is None else 1.0 + float(np.max(np.abs(w), initial=0))
    scale = _row_scale(xf) * k * wmax
    if reduction.value == "none":
        check_close(loss, losses.reshape(batch), rdt, scale.reshape(batch), "none")
    elif reduction.value == "sum":
        check_close(loss, losses.sum(), rdt, scale.sum(), "sum")
    else:
        check_close(loss, _divide(losses.sum(), wsum), rdt,
                    _divide(scale.sum(), abs(wsum)) if wsum else np.inf, "mean")


@FUZZ
@given(st.data())
def test_fuzz_nll_loss(data):
    draw = data.draw
    shape = draw(shapes(max_side=4))
    lp = draw(arrays(shape))
    ndim = len(shape)
    axis = axis_arg(draw, ndim)
    ax = int(axis.value) % ndim if ndim and axis.status == OK else None
    k = shape[ax] if ax is not None else 1
    batch = shape[:ax] + shape[ax + 1:] if ax is not None else shape
    target, kind = _class_target(draw, batch, k)
    if kind == "prob":
        target = Arg(np.zeros(shape), TYPE)  # nll_loss takes class indices only
    shape_ok = Arg(None, OK if (ax is None or k > 0) else VALUE)
    weight = _weight(draw, k)
    ignore_index = _option(draw, [-100, 0], [1.5], [2**64])
    reduction = reduction_arg(draw)
    n_threads = n_threads_arg(draw)
    if kind == "index" and ax is not None:
        _check_indices(target, k, ignore_index)
    expect = _expected(lp, axis, target, shape_ok, weight, ignore_index, reduction, n_threads)
    kwargs = dict(axis=axis.value, weight=weight.value, ignore_index=ignore_index.value,
                  reduction=reduction.value, n_threads=n_threads.value)
    loss = run(cecore.nll_loss, (lp.value, target.value), kwargs, expect)
    if loss is None:
        return
    rdt = _result_dtype(lp.value)
    if reduction.value == "none":
        assert loss.shape == batch and loss.dtype == rdt
    else:
        assert type(loss) is rdt.type
    if expect != OK or lp.values != "moderate" or weight.values != "moderate":
        return
    xf = np.moveaxis(_float(lp.value), ax, -1).reshape(-1, k)
    tf = np.asarray(target.value).reshape(-1)
    w = np.ones(k) if weight.value is None else _float(weight.value)
    ii = int(ignore_index.value)
    counted = tf != ii
    losses = np.zeros(xf.shape[0])
    rows = np.flatnonzero(counted)
    losses[rows] = -w[tf[rows]] * xf[rows, tf[rows]]
    wsum = w[tf[rows]].sum()
    scale = np.abs(losses) + 1e-300
    if reduction.value == "none":
        check_close(loss, losses.reshape(batch), rdt, scale.reshape(batch))
    elif reduction.value == "sum":
        check_close(loss, losses.sum(), rdt, scale.sum())
    else:
        check_close(loss, _divide(losses.sum(), wsum), rdt,
                    _divide(scale.sum(), abs(wsum)) if wsum else np.inf)


# ---------------------------------------------------------------------------
# binary cross-entropy


def _broadcast_weight(draw, shape, name):
    kind = draw(st.sampled_from(["none", "none", "trailing", "full", "scalar", "bad-shape",
                                 "complex"]))
    if kind == "none":
        return Arg(None)
    if kind == "trailing" and shape:
        n = draw(st.integers(1, len(shape)))
        wshape = shape[len(shape) - n:]
    elif kind == "full":
        wshape = shape
    elif kind == "bad-shape":  # (s + 2 broadcasts neither to s nor s to it, s = 0 too)
        return Arg(np.ones(tuple(s + 2 for s in shape) or (2,)), VALUE)
    elif kind == "complex":
        return Arg(np.ones(shape, complex), TYPE)
    else:
        wshape = ()
    n = math.prod(wshape)
    w = np.array(draw(st.lists(st.floats(0, 3), min_size=n, max_size=n))).reshape(wshape)
    return Arg(_layout(draw, w))


def _softplus(x):
    return np.logaddexp(0.0, x)


@FUZZ
@given(st.data())
def test_fuzz_binary_cross_entropy_with_logits(data):
    draw = data.draw
    shape = draw(shapes())
    logits = draw(arrays(shape))
    target = draw(arrays(shape, values=draw(st.sampled_from(["probs", "moderate"]))))
    if draw(st.integers(0, 9)) == 0:
        target = Arg(np.zeros(tuple(s + 1 for s in shape) or (3,)), VALUE)
    weight = _broadcast_weight(draw, shape, "weight")
    pos_weight = _broadcast_weight(draw, shape, "pos_weight")
    reduction = reduction_arg(draw)
    n_threads = n_threads_arg(draw)
    return_grad = draw(st.booleans())
    expect = _expected(logits, target, weight, pos_weight, reduction, n_threads)
    kwargs = dict(weight=weight.value, pos_weight=pos_weight.value, reduction=reduction.value,
                  n_threads=n_threads.value)
    if return_grad:
        kwargs["return_grad"] = True
    result = run(cecore.binary_cross_entropy_with_logits, (logits.value, target.value),
                 kwargs, expect)
    if result is None:
        return
    loss, grad = result if return_grad else (result, None)
    rdt = _result_dtype(logits.value)
    if reduction.value == "none":
        assert loss.shape == shape and loss.dtype == rdt
    else:
        assert type(loss) is rdt.type
    if grad is not None:
        assert grad.shape == shape
        assert grad.dtype == _elementwise_dtype(np.asarray(logits.value).dtype)
    if expect != OK or logits.values != "moderate" or target.values not in ("probs",
                                                                             "moderate"):
        return
    x = _float(logits.value)
    t = _float(target.value)
    w = 1.0 if weight.value is None else _float(weight.value)
    p = 1.0 if pos_weight.value is None else _float(pos_weight.value)
    # the kernels compute in float32 for 16-bit/float32 input: round t, w, p alike
    cdt = np.float64 if rdt == np.float64 else np.float32
    t, w, p = (np.asarray(v, dtype=cdt).astype(np.float64) for v in (t, w, p))
    ref = w * (p * t * _softplus(-x) + (1 - t) * _softplus(x))
    scale = np.abs(w) * (np.abs(p * t) + np.abs(1 - t)) * (np.abs(x) + 1)
    scale = np.broadcast_to(scale, shape)
    if reduction.value == "none":
        check_close(loss, ref, rdt, scale)
    elif reduction.value == "sum":
        check_close(loss, ref.sum(), rdt, scale.sum())
    else:
        check_close(loss, _divide(ref.sum(), ref.size), rdt, _divide(scale.sum(), ref.size)
                    if ref.size else np.inf)
    if grad is not None:
        sig = 1 / (1 + np.exp(-x))
        g = w * ((1 + (p - 1) * t) * sig - p * t)
        if reduction.value == "mean":
            g = g / max(g.size, 1)
        check_close(grad, np.broadcast_to(g, shape), grad.dtype,
                    np.broadcast_to(np.abs(w) * (np.abs(p * t) + np.abs(1 - t) + 1), shape)
                    / (max(g.size, 1) if reduction.value == "mean" else 1))


@FUZZ
@given(st.data())
def test_fuzz_binary_cross_entropy(data):
    draw = data.draw
    shape = draw(shapes())
    probs = draw(arrays(shape, values=draw(st.sampled_from(["probs", "probs", "moderate",
                                                             "specials"]))))
    target = draw(arrays(shape, values="probs"))
    weight = _broadcast_weight(draw, shape, "weight")
    reduction = reduction_arg(draw)
    n_threads = n_threads_arg(draw)
    pf = _float(probs.value) if probs.status == OK else None
    in_range = Arg(None)
    if pf is not None and ((pf < 0) | (pf > 1)).any():
        in_range = Arg(None, VALUE)
    expect = _expected(probs, target, weight, reduction, n_threads, in_range)
    kwargs = dict(weight=weight.value, reduction=reduction.value, n_threads=n_threads.value)
    loss = run(cecore.binary_cross_entropy, (probs.value, target.value), kwargs, expect)
    if loss is None:
        return
    rdt = _result_dtype(probs.value)
    if reduction.value == "none":
        assert loss.shape == shape and loss.dtype == rdt
    else:
        assert type(loss) is rdt.type
    if expect != OK:
        return
    cdt = np.float64 if rdt == np.float64 else np.float32
    t = np.asarray(_float(target.value), dtype=cdt).astype(np.float64)
    w = 1.0 if weight.value is None else np.asarray(_float(weight.value), dtype=cdt)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.maximum(np.log(pf), -100)
        lq = np.maximum(np.log1p(-pf), -100)
        lp = np.where(np.isnan(pf), np.nan, lp)
        ref = -np.asarray(w, np.float64) * (t * lp + (1 - t) * lq)
    scale = np.broadcast_to(np.abs(w) * 101.0, shape)
    if reduction.value == "none":
        check_close(loss, ref, rdt, scale)
    elif reduction.value == "sum":
        check_close(loss, ref.sum(), rdt, scale.sum())
    else:
        check_close(loss, _divide(ref.sum(), ref.size), rdt, _divide(scale.sum(), ref.size)
                    if ref.size else np.inf)


# ---------------------------------------------------------------------------
# entropy, cross_entropy_pq, kl_divergence


def _divergence_ref(kind, p, q, w, log_base):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "entropy":
            term = -p * np.log(p)
        elif kind == "cross_entropy_pq":
            term = -p * np.log(q)
        else:
            term = p * np.log(p / q)
            term = np.where(np.isfinite(p / q) & (p / q > 0), term,
                            p * (np.log(p) - np.log(q)))
        term = np.where(p == 0, np.where(np.isnan(q), np.nan, 0.0), term)
        return np.sum(w * term, axis=-1) / log_base


@FUZZ
@given(st.data())
def test_fuzz_divergences(data):
    draw = data.draw
    kind = draw(st.sampled_from(["entropy", "cross_entropy_pq", "kl_divergence"]))
    fn = getattr(cecore, kind)
    shape = draw(shapes())
    p = draw(arrays(shape, values=draw(st.sampled_from(["probs", "probs", "specials",
                                                         "moderate"]))))
    q_shape = shape
    if kind != "entropy" and shape and draw(st.booleans()):  # broadcasting q
        q_shape = tuple(1 if draw(st.booleans()) else s for s in shape)
    q = draw(arrays(q_shape, values=draw(st.sampled_from(["probs", "probs", "specials"]))))
    ndim = len(shape)
    axis = axis_arg(draw, ndim)
    ax = int(axis.value) % ndim if ndim and axis.status == OK else None
    k = shape[ax] if ax is not None else 0
    base = _option(draw, [None, 2, 10, math.e, 0.5], [1j, "b", [2]], [1, 0, -2, math.inf,
                                                                      math.nan], [True, "2"])
    measure_kind = draw(st.sampled_from(["none", "none", "scalar", "array", "bad"]))
    if measure_kind == "none":
        measure = Arg(None)
    elif measure_kind == "scalar":
        measure = _option(draw, [0.5, 2, 0], [1j], [-1.0, math.inf, math.nan])
    elif measure_kind == "array":
        measure = Arg(np.array(draw(st.lists(st.floats(0, 2), min_size=k, max_size=k))),
                      OK if ax is not None else GRAY)
    else:
        measure = draw(st.sampled_from([Arg(np.ones(k + 1), VALUE),
                                        Arg(-np.ones(k), VALUE if k else GRAY),
                                        Arg(np.ones(k, complex), TYPE),
                                        Arg(np.array(["a"] * max(k, 1)), TYPE)]))
    n_threads = n_threads_arg(draw)
    checks = [p, axis, base, measure, n_threads]
    if kind != "entropy":
        checks.append(q)
    if ax is not None and k == 0:
        checks.append(Arg(None, VALUE))  # no points along the axis
    values_ok = all(a.status == OK for a in checks)
    if values_ok:
        arrays_f = [_float(p.value)] + ([] if kind == "entropy" else [_float(q.value)])
        if any((a < 0).any() for a in arrays_f):
            checks.append(Arg(None, VALUE))  # negative entries
    expect = _expected(*checks)
    args = (p.value,) if kind == "entropy" else (p.value, q.value)
    kwargs = dict(axis=axis.value, base=base.value, measure=measure.value,
                  n_threads=n_threads.value)
    result = run(fn, args, kwargs, expect)
    if result is None:
        return
    batch = shape[:ax] + shape[ax + 1:] if ax is not None else None
    if expect == OK:
        assert np.shape(result) == batch
        if p.values not in ("probs", "moderate") or q.values != "probs":
            check_nan_consistency(result, np.moveaxis(np.broadcast_to(
                _float(p.value), shape), ax, -1), -1)
            return
        dts = [np.asarray(a).dtype for a in args]
        want = np.dtype(np.float64) if any(d.kind in "iu" or d.itemsize == 8 for d in dts) \
            else np.dtype(np.float32)
        assert np.asarray(result).dtype == want
        pf = np.moveaxis(_float(p.value), ax, -1)
        qf = pf if kind == "entropy" else np.moveaxis(
            np.broadcast_to(_float(q.value), shape), ax, -1)
        w = 1.0 if measure.value is None else _float(measure.value)
        log_base = 1.0 if base.value is None else math.log(float(base.value))
        ref = _divergence_ref(kind, pf, qf, w, log_base)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            scale = np.sum(np.abs(w * pf) * (1 + np.abs(np.log(np.where(pf > 0, pf, 1))) + np.abs(
                np.log(np.where(qf > 0, qf, 1)))), axis=-1) / abs(log_base) + 1e-300
        check_close(result, ref, want, scale)


# ---------------------------------------------------------------------------
# linear_cross_entropy and Evaluator


@FUZZ
@given(st.data())
def test_fuzz_linear_cross_entropy(data):
    draw = data.draw
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=4))
    d = draw(st.integers(0, 4))
    hidden = draw(arrays(lead + (d,), values=draw(st.sampled_from(["moderate", "moderate",
                                                                    "specials"]))))
    v = draw(st.integers(0, 5))
    weight = draw(arrays((v, d), values="moderate"))
    checks = [hidden, weight]
    if v == 0:
        checks.append(Arg(None, VALUE))  # no classes
    if draw(st.integers(0, 5)) == 0:  # a weight of the wrong width or rank
        weight = Arg(np.ones((v, d + 1)) if draw(st.booleans()) else np.ones(v), VALUE)
        checks[1] = weight
    target, kind = _class_target(draw, lead, v)
    if kind == "prob":
        target = Arg(np.zeros(lead), VALUE)  # probabilities need the logits' shape
    bias_kind = draw(st.sampled_from(["none", "none", "ok", "bad"]))
    bias = {"none": Arg(None), "ok": draw(arrays((v,), values="moderate")),
            "bad": Arg(np.ones(v + 1), VALUE)}[bias_kind]
    ignore_index = _option(draw, [-100, 0], [1.5], [2**64])
    _check_indices(target, v, ignore_index)
    reduction = reduction_arg(draw)
    chunk_size = _option(draw, [None, 1, 2, 1000], [1.5, "2"], [0, -1])
    n_threads = n_threads_arg(draw)
    checks += [target, bias, ignore_index, reduction, chunk_size, n_threads]
    expect = _expected(*checks)
    kwargs = dict(bias=bias.value, ignore_index=ignore_index.value, reduction=reduction.value,
                  chunk_size=chunk_size.value, n_threads=n_threads.value)
    loss = run(cecore.linear_cross_entropy, (hidden.value, weight.value, target.value), kwargs,
               expect)
    if loss is None or expect != OK:
        return
    dts = [np.asarray(a).dtype for a in (hidden.value, weight.value, bias.value)
           if a is not None]
    rdt = np.dtype(np.float64) if any(t.kind in "iu" or t.itemsize == 8 for t in dts) \
        else np.dtype(np.float32)
    if reduction.value == "none":
        assert loss.shape == lead and loss.dtype == rdt
    else:
        assert type(loss) is rdt.type
    if hidden.values != "moderate" or bias.values != "moderate":
        return
    h = _float(hidden.value).reshape(math.prod(lead), d)
    w = _float(weight.value)
    z = h @ w.T + (0.0 if bias.value is None else _float(bias.value))
    tf = np.asarray(target.value).reshape(-1)
    losses, wsum = ref_cross_entropy_index(z, tf, None, 0.0, int(ignore_index.value))
    scale = (1 + np.abs(h) @ np.abs(w).T).max(axis=1, initial=1.0) * 4
    if reduction.value == "none":
        check_close(loss, losses.reshape(lead), rdt, scale.reshape(lead))
    elif reduction.value == "sum":
        check_close(loss, losses.sum(), rdt, scale.sum())
    else:
        check_close(loss, _divide(losses.sum(), wsum), rdt,
                    _divide(scale.sum(), wsum) if wsum else np.inf)


@FUZZ
@given(st.data())
def test_fuzz_evaluator(data):
    draw = data.draw
    axis = _option(draw, [-1, 0], [1.5, None], [], [True])
    weight_kind = draw(st.sampled_from(["none", "none", "ok", "2d", "complex"]))
    k = draw(st.integers(0, 5))
    weight = {"none": Arg(None), "ok": Arg(np.linspace(0.5, 2, k)),
              "2d": Arg(np.ones((k, 1)), VALUE), "complex": Arg(np.ones(k, complex), TYPE)
              }[weight_kind]
    ignore_index = _option(draw, [-100, 0], [1.5], [2**63])
    smoothing = _option(draw, [0.0, 0.1], ["x"], [1.5, -1.0])
    topk = _option(draw, [(1,), 1, (1, 3), (), (7, 2, 2), [2**62]], ["a", 1.5, (1.5,)],
                   [0, (1, 0), (-2,), (2**63,), 2**70])
    n_threads = n_threads_arg(draw)
    options = [axis, weight, ignore_index, smoothing, topk, n_threads]
    expect = _expected(*options)
    ev = run(cecore.Evaluator, (), dict(axis=axis.value, weight=weight.value,
                                        ignore_index=ignore_index.value,
                                        label_smoothing=smoothing.value, topk=topk.value,
                                        n_threads=n_threads.value), expect)
    if ev is None:
        return
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(0, 6))
        shape = (n, k) if axis.value in (-1, True) else (k, n)
        logits = draw(arrays(shape, values=draw(st.sampled_from(["moderate", "specials"]))))
        target, kind = _class_target(draw, (n,), k)
        if kind == "prob":
            target = Arg(np.zeros(shape), TYPE)
        _check_indices(target, k, ignore_index)
        checks = [logits, target]
        if k == 0:
            checks.append(Arg(None, VALUE))  # zero classes
        if weight.value is not None and weight.status == OK and weight.value.shape != (k,):
            checks.append(Arg(None, VALUE))
        before = ev.result()
        expect = _expected(*checks)
        if run(ev.update, (logits.value, target.value), {}, expect) is None and expect != OK:
            after = ev.result()
            assert repr(after) == repr(before), "a failed update changed the totals"
            continue
        if expect == OK:
            batches.append((logits, target))
    result = ev.result()
    assert set(result) >= {"loss", "bits", "perplexity", "count"}
    if batches and all(lg.values == "moderate" for lg, _ in batches) and axis.status == OK \
            and weight.status == OK and smoothing.status == OK and ignore_index.status == OK:
        ax = int(axis.value)
        x = np.concatenate([np.moveaxis(_float(lg.value), ax, -1) for lg, _ in batches])
        t = np.concatenate([np.asarray(tg.value).reshape(-1) for _, tg in batches])
        losses, wsum = ref_cross_entropy_index(
            x, t, None if weight.value is None else _float(weight.value),
            float(smoothing.value), int(ignore_index.value))
        rdt = _result_dtype(*[lg.value for lg, _ in batches])
        counted = int(np.sum(t != int(ignore_index.value)))
        assert result["count"] == counted
        scale = _row_scale(x).sum() * max(k, 1) * 3
        check_close(result["loss"], _divide(losses.sum(), wsum), rdt,
                    _divide(scale, abs(wsum)) if wsum else np.inf)


# ---------------------------------------------------------------------------
# 16-bit logits: valid calls only, on rows long enough for every load path


def _half_layout(x, kind):
    """(array, axis): the (n, k) logits x in another layout, rows along axis."""
    n, k = x.shape
    if kind == "strided":  # a row stride: a column slice of a wider array
        wide = np.zeros((n, k + 3), x.dtype)
        wide[:, 1:k + 1] = x
        return wide[:, 1:k + 1], -1
    if kind == "axis0":
        return np.ascontiguousarray(x.T), 0
    if kind == "fortran":
        return np.asfortranarray(x), -1
    if kind == "reversed":
        return np.flip(np.flip(x).copy()), -1
    if kind == "misaligned":
        raw = np.zeros(x.nbytes + 1, dtype=np.uint8)
        out = np.frombuffer(raw[1:].data, dtype=x.dtype, count=x.size).reshape(x.shape)
        out[...] = x
        return out, -1
    if kind == "readonly":
        x = x.copy()
        x.setflags(write=False)
    return x, -1


HALF_FUNCTIONS = ["logsumexp", "log_softmax", "softmax", "cross_entropy", "nll_loss",
                  "bce_with_logits", "entropy", "kl_divergence", "evaluator"]


# every (function, dtype) pair gets its share of the profile's examples
HALF_FUZZ = settings(FUZZ, max_examples=max(30, FUZZ.max_examples // 10))


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16)], ids=["bf16", "f16"])
@pytest.mark.parametrize("fn", HALF_FUNCTIONS)
@HALF_FUZZ
@given(data=st.data())
def test_fuzz_half_logits(fn, dtype, data):
    """bfloat16 and float16 logits, n x k with k up to 80 (the K <= 32 block kernels,
    their partial row groups, and vector loops with remainders), in several layouts:
    reductions in float32 and within float32's tolerance of the float64 reference on
    the exactly upcast values, elementwise results in the input dtype within half an
    ulp of it; with NaN/inf mixed in, the same result as for the upcast float32 input
    (NaN/inf positions equal, finite values close)."""
    draw = data.draw
    n, k = draw(st.integers(1, 40)), draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x64 = rng.standard_normal((n, k)) * draw(st.sampled_from([0.5, 3.0, 30.0]))
    specials = draw(st.integers(0, 3)) == 0
    if specials:
        for _ in range(draw(st.integers(1, 4))):
            x64[rng.integers(n), rng.integers(k)] = draw(st.sampled_from(
                [math.nan, math.inf, -math.inf, -math.inf]))
    x = x64.astype(dtype)
    xf = _float(x)  # the exact 16-bit values, (n, k)
    xl, axis = _half_layout(x, draw(st.sampled_from(
        ["C", "C", "strided", "axis0", "fortran", "reversed", "misaligned", "readonly"])))
    n_threads = draw(st.sampled_from([None, 1, 2]))
    f32 = np.dtype(np.float32)

    def rows(a):  # a result laid out as xl -> (n, k) rows
        return np.moveaxis(np.asarray(a), axis, -1)

    def upcast(a):
        return a if a is None or not isinstance(a, np.ndarray) or a.dtype not in (
            BF16, np.dtype(np.float16)) else a.astype(np.float32)

    def compare(got, call, reference, rdt, scale, what):
        """16-bit result vs the reference (finite input) or vs the float32 call on
        the upcast values (NaN/inf in the input)."""
        if not specials:
            check_close(got, reference, rdt, scale, what)
            return
        want = np.asarray(call(), dtype=np.float64)
        check_close(got, want, rdt, scale, what + " (vs float32 on the upcast values)")

    scale = _row_scale(xf)
    if fn == "logsumexp":
        got = cecore.logsumexp(xl, axis=axis, n_threads=n_threads)
        assert got.dtype == f32 and got.shape == (n,)
        compare(got, lambda: cecore.logsumexp(upcast(xl), axis=axis), ref_lse(xf), f32,
                scale, fn)
    elif fn in ("log_softmax", "softmax"):
        out_dtype = draw(st.sampled_from([None, np.float32]))
        f = getattr(cecore, fn)
        got = f(xl, axis=axis, dtype=out_dtype, n_threads=n_threads)
        rdt = dtype if out_dtype is None else f32
        assert got.dtype == rdt and got.shape == xl.shape
        lse = ref_lse(xf)[:, None]
        with np.errstate(invalid="ignore", under="ignore"):
            want = xf - lse if fn == "log_softmax" else np.exp(xf - lse)
        sc = np.broadcast_to(scale[:, None], (n, k)) if fn == "log_softmax" else \
            2 * float(_finfo(rdt).smallest_subnormal) / _compute_tolerance(rdt)
        compare(rows(got), lambda: rows(f(upcast(xl), axis=axis)), want, rdt, sc, fn)
    elif fn in ("cross_entropy", "nll_loss"):
        y = rng.integers(0, k, n)
        y[rng.random(n) < 0.2] = -100
        weight = rng.uniform(0.5, 2.0, k) if draw(st.booleans()) else None
        reduction = draw(st.sampled_from(["mean", "sum", "none"]))
        opts = dict(axis=axis, weight=weight, reduction=reduction, n_threads=n_threads)
        if fn == "nll_loss":
            got = cecore.nll_loss(xl, y, **opts)
            grad = None
            want = _reference.nll_loss(xf, y, weight=weight, reduction=reduction)
            sc = _row_scale(xf) * (1 if weight is None else 2)
        else:
            target_kind = draw(st.sampled_from(["index", "index", "prob"]))
            if target_kind == "prob":
                y = rng.dirichlet(np.ones(k), n).astype(draw(st.sampled_from(
                    [np.float64, np.float32, dtype])))
                y = np.moveaxis(y, -1, axis) if axis == 0 else y
            opts["label_smoothing"] = draw(st.sampled_from([0.0, 0.1]))
            return_grad = draw(st.booleans())
            result = cecore.cross_entropy(xl, y, return_grad=return_grad, **opts)
            got, grad = result if return_grad else (result, None)
            yr = y if target_kind == "index" else rows(y)
            want = _reference.cross_entropy(xf, yr, weight=weight, reduction=reduction,
                                     label_smoothing=opts["label_smoothing"])
            sc = scale * k * (1 if weight is None else 3)
            if grad is not None:
                assert grad.dtype == dtype and grad.shape == xl.shape
                gref = _reference.cross_entropy_grad(
                    xf, yr, weight=weight, reduction="sum" if reduction == "mean" else
                    reduction, label_smoothing=opts["label_smoothing"])
                gscale = 3.0 if weight is None else 7.0
                if reduction == "mean":
                    norm = n if target_kind == "prob" else float(
                        np.sum(np.where(y != -100, 1.0 if weight is None else
                                        weight[np.where(y != -100, y, 0)], 0.0)))
                    if norm:  # else every row is ignored: a zero gradient
                        gref, gscale = gref / norm, gscale / norm
                if not specials:
                    check_close(rows(grad), gref, dtype, gscale, "gradient")
        if reduction == "none":
            assert got.dtype == f32 and got.shape == (n,)
        else:
            assert type(got) is np.float32
            norm = float(np.sum(y != -100)) if y.dtype.kind in "iu" else n
            sc = sc.sum() / (max(norm, 1) if reduction == "mean" else 1)
        call = getattr(cecore, fn)
        call_opts = {key: v for key, v in opts.items()}
        compare(got, lambda: call(upcast(xl), upcast(y), **call_opts), want, f32, sc, fn)
    elif fn == "bce_with_logits":
        t = rng.random((n, k)).astype(draw(st.sampled_from([np.float64, np.float32, dtype])))
        pos_weight = rng.uniform(0.5, 2.0, k) if draw(st.booleans()) else None
        weight = rng.uniform(0.5, 2.0, (n, k)) if draw(st.booleans()) else None
        reduction = draw(st.sampled_from(["mean", "sum", "none"]))
        return_grad = draw(st.booleans())
        xb = x if axis == -1 else x  # elementwise: any layout of the same shape
        xb = _half_layout(x, "strided")[0] if draw(st.booleans()) else xb
        opts = dict(weight=weight, pos_weight=pos_weight, reduction=reduction)
        result = cecore.binary_cross_entropy_with_logits(xb, t, return_grad=return_grad,
                                                         n_threads=n_threads, **opts)
        got, grad = result if return_grad else (result, None)
        # the kernels compute in float32: targets and weights rounded to it
        t32, w32, p32 = (None if v is None else np.asarray(v, np.float32).astype(np.float64)
                         for v in (t, weight, pos_weight))
        want = _reference.binary_cross_entropy_with_logits(xf, t32, weight=w32, pos_weight=p32,
                                                    reduction=reduction)
        elem = 4.0 * (np.where(np.isfinite(xf), np.abs(xf), 0.0) + 2)
        sc = elem if reduction == "none" else elem.sum() / (xf.size if reduction == "mean"
                                                            else 1)
        assert (got.dtype if reduction == "none" else type(got)) in (f32, np.float32)
        compare(got, lambda: cecore.binary_cross_entropy_with_logits(
            upcast(xb), upcast(t), **opts), want, f32, sc, fn)
        if grad is not None:
            assert grad.dtype == dtype and grad.shape == (n, k)
            gref = _reference.binary_cross_entropy_with_logits_grad(xf, t32, weight=w32,
                                                             pos_weight=p32,
                                                             reduction=reduction)
            if not specials:
                check_close(grad, gref, dtype, 8.0 / (xf.size if reduction == "mean" else 1),
                            "gradient")
    elif fn in ("entropy", "kl_divergence"):
        with np.errstate(invalid="ignore", under="ignore"):
            p = np.exp(xf - ref_lse(xf)[:, None]).astype(dtype)  # 16-bit probabilities
        q = rng.dirichlet(np.ones(k), n).astype(draw(st.sampled_from([dtype, np.float32])))
        base = draw(st.sampled_from([None, 2]))
        pl = _half_layout(p, "axis0")[0] if axis == 0 else p
        ql = np.ascontiguousarray(q.T) if axis == 0 else q
        if fn == "entropy":
            got = cecore.entropy(pl, axis=axis, base=base, n_threads=n_threads)
        else:
            got = cecore.kl_divergence(pl, ql, axis=axis, base=base, n_threads=n_threads)
        assert got.dtype == f32 and got.shape == (n,)
        pf, qf = _float(p), _float(q)
        with np.errstate(all="ignore"):  # NaN rows (specials): compared with float32
            want = _reference.entropy(pf, base=base) if fn == "entropy" else \
                _reference.kl_divergence(pf, qf, base=base)
            sc = np.nansum(pf * (1 + np.abs(np.log(np.where(pf > 0, pf, 1)))
                                 + np.abs(np.log(np.where(qf > 0, qf, 1)))), axis=1) * 2
        compare(got, lambda: getattr(cecore, fn)(*[upcast(a) for a in (
            (pl,) if fn == "entropy" else (pl, ql))], axis=axis, base=base), want, f32, sc, fn)
    else:
        y = rng.integers(0, k, n)
        y[rng.random(n) < 0.2] = -100
        smoothing = draw(st.sampled_from([0.0, 0.1]))
        ev = cecore.Evaluator(axis=axis, topk=(1, 3), label_smoothing=smoothing,
                              n_threads=n_threads)
        ev32 = cecore.Evaluator(axis=axis, topk=(1, 3), label_smoothing=smoothing)
        cut = draw(st.integers(0, n))
        for lo, hi in ((0, cut), (cut, n)):
            part = xl[lo:hi] if axis == -1 else xl[:, lo:hi]
            ev.update(part, y[lo:hi])
            ev32.update(upcast(part), y[lo:hi])
        got, got32 = ev.result(), ev32.result()
        assert got["count"] == int(np.sum(y != -100)) == got32["count"]
        if not specials:
            losses, wsum = ref_cross_entropy_index(xf, y, None, smoothing, -100)
            check_close(got["loss"], _divide(losses.sum(), wsum), f32,
                        _divide(scale.sum() * k, wsum) if wsum else np.inf, "evaluator")
        # top-k counts: the upcast values, the same ranks
        for key in got:
            if key.startswith("accuracy"):
                assert got[key] == got32[key] or (np.isnan(got[key]) and np.isnan(got32[key])), key
        check_close(got["loss"], got32["loss"], f32, abs(got32["loss"]) if np.isfinite(
            got32["loss"]) else 1.0, "evaluator vs float32")
