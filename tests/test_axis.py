"""The class axis not last: the column kernels (cecore/_colmath_impl.h) read such
logits in place. Each result is checked against the same data with the classes
moved last (the row kernels) and against the float64 reference."""

import tracemalloc

import _reference as ref
import ml_dtypes
import numpy as np
import pytest

import cecore
from cecore._validation import MIN_COLUMN_POSITIONS, as_columns

DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]

# (shape, axis): inner positions of every residue modulo the 32-lane block, C = 1
SHAPES = [
    ((3, 7, 37), 1),
    ((2, 1, 40), 1),
    ((5, 64), 0),
    ((9, 33), 0),
    ((2, 3, 4, 5, 6), 2),
    ((4, 300, 8), 1),
    ((3, 6, 2, 9), 1),
]


def _moved(x, axis):
    return np.ascontiguousarray(np.moveaxis(x, axis, -1))


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-6


def _logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _targets(rng, shape, axis, ignore_index=-100, p_ignore=0.2):
    k = shape[axis]
    batch = shape[:axis] + shape[axis + 1:]
    t = rng.integers(0, k, size=batch)
    t[rng.random(batch) < p_ignore] = ignore_index
    return t


@pytest.mark.parametrize("shape,axis", SHAPES)
def test_takes_the_column_path(shape, axis):
    x = np.zeros(shape, np.float32)
    inner = int(np.prod(shape[axis + 1:]))
    assert (as_columns(x, axis) is not None) == (inner >= MIN_COLUMN_POSITIONS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_classes_last(dtype, shape, axis, reduction):
    rng = np.random.default_rng(hash((shape, axis)) % 2**32)
    x = _logits(rng, shape, dtype)
    t = _targets(rng, shape, axis)
    w = rng.random(shape[axis]) + 0.5
    for options in ({}, {"weight": w}, {"ignore_index": 1}):
        tt = np.where(t == -100, 1, t) if "ignore_index" in options else t
        got = cecore.cross_entropy(x, tt, axis=axis, reduction=reduction, **options)
        last = cecore.cross_entropy(_moved(x, axis), tt, axis=-1, reduction=reduction,
                                    **options)
        want = ref.cross_entropy(x.astype(np.float64), tt, axis=axis, reduction=reduction,
                                 **options)
        assert np.asarray(got).dtype == np.asarray(last).dtype
        np.testing.assert_allclose(got, last, rtol=_tol(dtype), atol=_tol(dtype))
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype != np.float64 else 1e-12,
                                   atol=1e-5 if dtype != np.float64 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES)
def test_training_options_match_classes_last(dtype, shape, axis):
    rng = np.random.default_rng(7)
    x = _logits(rng, shape, dtype)
    t = _targets(rng, shape, axis)
    batch = t.shape
    options = {"label_smoothing": 0.1, "z_loss": 1e-3, "weight": rng.random(shape[axis]) + .5,
               "sample_weight": rng.random(batch), "return_lse": True}
    got, lse = cecore.cross_entropy(x, t, axis=axis, reduction="none", **options)
    want, want_lse = cecore.cross_entropy(_moved(x, axis), t, reduction="none", **options)
    np.testing.assert_allclose(got, want, rtol=_tol(dtype), atol=_tol(dtype))
    np.testing.assert_allclose(lse, want_lse, rtol=_tol(dtype), atol=_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradient_matches_classes_last(dtype, shape, axis, smoothing):
    rng = np.random.default_rng(3)
    x = _logits(rng, shape, dtype)
    t = _targets(rng, shape, axis)
    w = rng.random(shape[axis]) + 0.5
    loss, g = cecore.cross_entropy(x, t, axis=axis, weight=w, label_smoothing=smoothing,
                                   return_grad=True)
    loss_l, g_l = cecore.cross_entropy(_moved(x, axis), t, weight=w,
                                       label_smoothing=smoothing, return_grad=True)
    assert g.shape == x.shape and g.dtype == x.dtype
    np.testing.assert_allclose(loss, loss_l, rtol=_tol(dtype))
    g64, gl64 = g.astype(np.float64), np.moveaxis(g_l.astype(np.float64), -1, axis)
    # a few ulps of the gradient's dtype (the exp polynomials may differ by ISA)
    atol = {np.float64: 1e-14, np.float32: 1e-7}.get(dtype, 1e-2)
    np.testing.assert_allclose(g64, gl64, atol=atol * max(1.0, np.abs(gl64).max()))
    want = ref.cross_entropy_grad(x.astype(np.float64), t, axis=axis, weight=w,
                                  label_smoothing=smoothing)
    np.testing.assert_allclose(g64, want, atol=1e-6 if dtype in (np.float32, np.float64)
                               else 1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ml_dtypes.bfloat16])
def test_gradient_in_place_and_out(dtype):
    rng = np.random.default_rng(5)
    x = _logits(rng, (3, 11, 50), dtype)
    t = _targets(rng, x.shape, 1)
    _, want = cecore.cross_entropy(x, t, axis=1, return_grad=True)
    y = x.copy()
    _, g = cecore.cross_entropy(y, t, axis=1, return_grad=True, out=y)
    assert g is y
    np.testing.assert_array_equal(g, want)
    out = np.empty_like(x)
    _, g = cecore.cross_entropy(x, t, axis=1, return_grad=True, out=out)
    assert g is out
    np.testing.assert_array_equal(g, want)
    fortran = np.asfortranarray(np.empty_like(x))
    _, g = cecore.cross_entropy(x, t, axis=1, return_grad=True, out=fortran)
    np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES)
def test_softmax_family_matches_classes_last(dtype, shape, axis):
    rng = np.random.default_rng(11)
    x = _logits(rng, shape, dtype)
    xl = _moved(x, axis)
    for fn in (cecore.logsumexp, cecore.log_softmax, cecore.softmax):
        got = fn(x, axis=axis)
        last = fn(xl, axis=-1)
        if fn is not cecore.logsumexp:
            last = np.moveaxis(last, -1, axis)
            assert got.flags.c_contiguous
        assert got.shape == last.shape and got.dtype == last.dtype
        g64, l64 = got.astype(np.float64), last.astype(np.float64)
        tol = _tol(dtype) if dtype in (np.float32, np.float64) else 1e-2
        np.testing.assert_allclose(g64, l64, rtol=tol, atol=tol)
    np.testing.assert_allclose(cecore.logsumexp(x, axis=axis).astype(np.float64),
                               ref.logsumexp(x.astype(np.float64), axis=axis),
                               rtol=1e-5 if dtype != np.float64 else 1e-13)


def test_softmax_dtype_float32_of_16_bit():
    x = _logits(np.random.default_rng(0), (2, 5, 40), np.float16)
    got = cecore.softmax(x, axis=1, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.moveaxis(cecore.softmax(_moved(x, 1), dtype=np.float32),
                                                -1, 1), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_special_values(dtype):
    """-inf masks, all -inf columns, +inf, NaN: as the row kernels."""
    rng = np.random.default_rng(2)
    x = _logits(rng, (2, 6, 40), dtype)
    x[0, :3, 1] = -np.inf            # masked classes
    x[0, :, 2] = -np.inf             # all masked
    x[1, 2, 3] = np.inf              # +inf
    x[1, 4, 4] = np.nan              # NaN
    x[1, 1, 5] = np.inf
    x[1, 3, 5] = np.nan              # NaN next to +inf
    x[0, :, 6] = 5.0                 # ties
    x[0, 2, 7] = np.finfo(dtype).max  # huge
    x[0, :, 8] = -np.finfo(dtype).max / 2
    t = rng.integers(0, 6, size=(2, 40))
    t[0, 1] = 4
    xl = _moved(x, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        for fn in (cecore.logsumexp, cecore.log_softmax, cecore.softmax):
            got = fn(x, axis=1)
            last = fn(xl)
            if fn is not cecore.logsumexp:
                last = np.moveaxis(last, -1, 1)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(last))
            np.testing.assert_allclose(got.astype(np.float64), last.astype(np.float64),
                                       rtol=1e-6 if dtype != np.float16 else 1e-3)
        got = cecore.cross_entropy(x, t, axis=1, reduction="none")
        last = cecore.cross_entropy(xl, t, reduction="none")
        np.testing.assert_allclose(got, last, rtol=1e-6)
        _, g = cecore.cross_entropy(x, t, axis=1, reduction="sum", return_grad=True)
        _, gl = cecore.cross_entropy(xl, t, reduction="sum", return_grad=True)
        np.testing.assert_allclose(g.astype(np.float64),
                                   np.moveaxis(gl, -1, 1).astype(np.float64),
                                   atol=1e-6 if dtype != np.float16 else 1e-3)


@pytest.mark.parametrize("fn", ["ce", "ce_grad", "lse", "log_softmax", "softmax"])
def test_threads_bitwise_equal(fn):
    rng = np.random.default_rng(9)
    x = _logits(rng, (6, 40, 333), np.float32)
    t = _targets(rng, x.shape, 1)
    w = rng.random(40)

    def run(n):
        if fn == "ce":
            return cecore.cross_entropy(x, t, axis=1, weight=w, n_threads=n)
        if fn == "ce_grad":
            return cecore.cross_entropy(x, t, axis=1, return_grad=True, n_threads=n)[1]
        return getattr(cecore, {"lse": "logsumexp"}.get(fn, fn))(x, axis=1, n_threads=n)

    one, two = run(1), run(2)
    np.testing.assert_array_equal(one, two)
    assert np.asarray(one).tobytes() == np.asarray(two).tobytes()


def test_bad_target_is_named():
    x = np.zeros((2, 3, 20), np.float32)
    t = np.zeros((2, 20), np.int64)
    t[1, 13] = 3
    with pytest.raises(ValueError, match=r"target\[1, 13\] = 3"):
        cecore.cross_entropy(x, t, axis=1)


def test_inputs_unchanged():
    rng = np.random.default_rng(4)
    x = _logits(rng, (3, 9, 45), np.float32)
    t = _targets(rng, x.shape, 1)
    x0, t0 = x.copy(), t.copy()
    cecore.cross_entropy(x, t, axis=1, return_grad=True, label_smoothing=0.1)
    cecore.softmax(x, axis=1)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)


@pytest.mark.parametrize("view", ["strided_inner", "strided_classes", "fortran", "offset"])
def test_non_contiguous_inputs(view):
    rng = np.random.default_rng(6)
    base = _logits(rng, (4, 10, 96), np.float32)
    x = {"strided_inner": base[:, :, ::2], "strided_classes": base[:, ::3, :],
         "fortran": np.asfortranarray(base), "offset": base[1:, 2:, 5:]}[view]
    t = _targets(rng, x.shape, 1)
    got, g = cecore.cross_entropy(x, t, axis=1, reduction="none", return_grad=True)
    want, gl = cecore.cross_entropy(_moved(x, 1), t, reduction="none", return_grad=True)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    np.testing.assert_allclose(g, np.moveaxis(gl, -1, 1), atol=1e-7)
    np.testing.assert_allclose(cecore.log_softmax(x, axis=1),
                               np.moveaxis(cecore.log_softmax(_moved(x, 1)), -1, 1),
                               rtol=2e-6, atol=2e-6)


def test_no_transposed_copy():
    rng = np.random.default_rng(8)
    x = _logits(rng, (4, 100, 4096), np.float32)  # 6.5 MB
    t = _targets(rng, x.shape, 1)
    out = np.empty_like(x)
    for call in (lambda: cecore.cross_entropy(x, t, axis=1),
                 lambda: cecore.logsumexp(x, axis=1),
                 lambda: cecore.cross_entropy(x, t, axis=1, reduction="sum",
                                              return_grad=True, out=out)):
        call()
        tracemalloc.start()
        call()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < x.nbytes / 8, peak


def test_torch_class_dim_1():
    torch = pytest.importorskip("torch")
    import cecore.torch as ct

    rng = np.random.default_rng(1)
    x = torch.tensor(_logits(rng, (2, 7, 5, 9), np.float32), requires_grad=True)
    t = torch.tensor(_targets(rng, (2, 7, 5, 9), 1, p_ignore=0.0))
    loss = ct.cross_entropy(x, t)
    loss.backward()
    x2 = x.detach().clone().requires_grad_(True)
    want = torch.nn.functional.cross_entropy(x2, t)
    want.backward()
    np.testing.assert_allclose(loss.item(), want.item(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), atol=1e-7)
