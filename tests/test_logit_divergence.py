"""cecore.logit_divergence and the rows behind cecore.Comparison, against the float64
references of tests/_reference.py and finite differences."""

import math

import _reference
import numpy as np
import pytest

import cecore
from cecore._logit_divergence import _comparison_rows

KINDS = [("kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.0), ("jsd", 0.3), ("jsd", 0.5),
         ("jsd", 1.0)]
KIND_IDS = [f"{k}-{b}" if k == "jsd" else k for k, b in KINDS]


def pair(rng, shape, k, dtype=np.float64, spread=1.0):
    """Logits 2 N(0, 1) and a reference that differs by `spread` N(0, 1)."""
    z = 2 * rng.standard_normal(shape + (k,))
    r = z + spread * rng.standard_normal(z.shape)
    return z.astype(dtype), r.astype(dtype)


def masked_target(rng, shape, k, ignore=0.2, ignore_index=-100):
    t = rng.integers(0, k, shape)
    t[rng.random(shape) < ignore] = ignore_index
    return t


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("k", [1, 7, 1000, 5000])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.5])
def test_per_position_matches_reference(rng, kind, beta, dtype, rtol, k, temperature):
    z, r = pair(rng, (3, 11), k, dtype)
    got = cecore.logit_divergence(z, r, kind=kind, beta=beta, temperature=temperature,
                                  reduction="none")
    want = _reference.logit_divergence(z, r, kind, temperature=temperature, beta=beta,
                                       reduction="none")
    assert got.shape == (3, 11) and got.dtype == dtype
    # float32: the sums' absolute error is ~1e-7 of the logits' scale
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_mask(rng, kind, beta, reduction):
    z, r = pair(rng, (4, 9), 50)
    t = masked_target(rng, (4, 9), 50)
    got = cecore.logit_divergence(z, r, kind=kind, beta=beta, target=t, reduction=reduction)
    want = _reference.logit_divergence(z, r, kind, beta=beta, target=t, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    if reduction == "none":
        assert np.all(got[t == -100] == 0)
    else:
        assert np.ndim(got) == 0 and isinstance(got, np.float64)


def test_mean_is_over_counted_positions(rng):
    z, r = pair(rng, (6,), 20)
    t = np.array([1, -100, 3, -100, -100, 5])
    per = cecore.logit_divergence(z, r, reduction="none")
    assert cecore.logit_divergence(z, r, target=t) == pytest.approx(per[t != -100].mean())
    assert cecore.logit_divergence(z, r, target=t, reduction="sum") == pytest.approx(
        per[t != -100].sum())
    t7 = np.where(t == -100, 7, t)  # another ignore_index
    assert cecore.logit_divergence(z, r, target=t7, ignore_index=7) == pytest.approx(
        per[t != -100].mean())
    none = cecore.logit_divergence(z, r, target=np.full(6, -100))
    assert math.isnan(none)


def test_known_values():
    z = np.log(np.array([[0.5, 0.25, 0.25]]))
    ref = np.log(np.array([[0.25, 0.5, 0.25]]))
    assert float(cecore.logit_divergence(z, ref)) == pytest.approx(0.25 * math.log(2))
    m = np.array([0.375, 0.375, 0.25])
    kl_rm = 0.25 * math.log(0.25 / 0.375) + 0.5 * math.log(0.5 / 0.375)
    assert float(cecore.logit_divergence(z, ref, kind="jsd")) == pytest.approx(kl_rm)
    assert m.sum() == 1


@pytest.mark.parametrize("axis", [0, 1, -2])
def test_axis(rng, axis):
    z, r = pair(rng, (5, 6), 7)  # (5, 6, 7)
    got = cecore.logit_divergence(z, r, axis=axis, reduction="none", kind="reverse_kl")
    want = _reference.logit_divergence(z, r, "reverse_kl", axis=axis, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    loss, grad = cecore.logit_divergence(z, r, axis=axis, return_grad=True)
    np.testing.assert_allclose(grad, _reference.logit_divergence_grad(z, r, axis=axis),
                               rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
def test_shift(rng, kind, beta):
    z, r = pair(rng, (2, 3, 8), 30)  # (B, S, T, V)
    ids = masked_target(rng, (2, 3, 8), 30)
    for reduction in ("none", "mean"):
        got = cecore.logit_divergence(z, r, kind=kind, beta=beta, target=ids, shift=True,
                                      reduction=reduction)
        want = _reference.logit_divergence(z, r, kind, beta=beta, target=ids, shift=True,
                                           reduction=reduction)
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-15)
    assert got.shape == () and np.shape(cecore.logit_divergence(
        z, r, target=ids, shift=True, reduction="none")) == (2, 3, 7)
    # the same as slicing by hand
    manual = cecore.logit_divergence(z[..., :-1, :], r[..., :-1, :], kind=kind, beta=beta,
                                     target=ids[..., 1:])
    assert got == pytest.approx(manual, rel=1e-13)
    loss, grad = cecore.logit_divergence(z, r, kind=kind, beta=beta, target=ids, shift=True,
                                         return_grad=True)
    np.testing.assert_allclose(
        grad, _reference.logit_divergence_grad(z, r, kind, beta=beta, target=ids, shift=True),
        rtol=1e-9, atol=1e-15)
    assert grad.shape == z.shape and np.all(grad[..., -1, :] == 0)
    # without a target: every position but the last counts
    nt = cecore.logit_divergence(z, r, kind=kind, beta=beta, shift=True, reduction="none")
    assert nt.shape == (2, 3, 7)
    np.testing.assert_allclose(nt, _reference.logit_divergence(
        z, r, kind, beta=beta, shift=True, reduction="none"), rtol=1e-11, atol=1e-15)


def test_shift_errors(rng):
    z, r = pair(rng, (4,), 5)
    with pytest.raises(ValueError, match="T"):
        cecore.logit_divergence(z[0], r[0], shift=True)
    with pytest.raises(ValueError, match="class axis last"):
        cecore.logit_divergence(z, r, shift=True, axis=0)
    with pytest.raises(ValueError, match="target"):
        cecore.logit_divergence(z, r, shift=True, target=np.zeros(3, int))


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
def test_identical_inputs_give_zero(rng, kind, beta):
    for dtype in (np.float32, np.float64):
        z = pair(rng, (5,), 3000, dtype)[0]
        z[0, :10] = -np.inf
        loss, grad = cecore.logit_divergence(z, z.copy(), kind=kind, beta=beta,
                                             reduction="none", return_grad=True,
                                             temperature=0.7)
        assert np.all(loss == 0), loss
        assert np.all(grad == 0)


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_gradient_finite_differences(rng, kind, beta, temperature):
    z, r = pair(rng, (3,), 6)
    t = np.array([1, -100, 4])
    loss, grad = cecore.logit_divergence(z, r, kind=kind, beta=beta, temperature=temperature,
                                         target=t, return_grad=True)

    def f(zz):
        return float(cecore.logit_divergence(zz, r, kind=kind, beta=beta,
                                             temperature=temperature, target=t))

    h = 1e-5
    fd = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        # fourth-order central differences
        fd[idx] = (-f(z + 2 * e) + 8 * f(z + e) - 8 * f(z - e) + f(z - 2 * e)) / (12 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-10)
    assert np.all(grad[1] == 0)


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_gradient_matches_reference(rng, kind, beta, reduction, dtype, rtol):
    z, r = pair(rng, (4, 5), 3000, dtype)
    t = masked_target(rng, (4, 5), 3000)
    loss, grad = cecore.logit_divergence(z, r, kind=kind, beta=beta, target=t,
                                         reduction=reduction, return_grad=True,
                                         temperature=0.8)
    want = _reference.logit_divergence_grad(z, r, kind, beta=beta, target=t,
                                            reduction=reduction, temperature=0.8)
    assert grad.dtype == dtype and grad.shape == z.shape
    scale = np.abs(want).max()
    np.testing.assert_allclose(grad, want, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(
        loss, _reference.logit_divergence(z, r, kind, beta=beta, target=t,
                                          reduction=reduction, temperature=0.8),
        rtol=rtol * 10, atol=rtol * 1e-2)


def test_out(rng):
    z, r = pair(rng, (4,), 9)
    want = _reference.logit_divergence_grad(z, r)
    out = np.full_like(z, 7.0)
    loss, grad = cecore.logit_divergence(z, r, return_grad=True, out=out)
    assert grad is out
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-18)
    # in place over the logits
    zz = z.copy()
    loss2, grad = cecore.logit_divergence(zz, r, return_grad=True, out=zz)
    assert grad is zz and loss2 == loss
    np.testing.assert_allclose(zz, want, rtol=1e-12, atol=1e-18)
    # a strided out, and out over the reference: through a temporary
    big = np.zeros((4, 18))
    cecore.logit_divergence(z, r, return_grad=True, out=big[:, ::2])
    np.testing.assert_allclose(big[:, ::2], want, rtol=1e-12, atol=1e-18)
    rr = r.copy()
    cecore.logit_divergence(z, rr, return_grad=True, out=rr)
    np.testing.assert_allclose(rr, want, rtol=1e-12, atol=1e-18)
    # shift: the last position zeroed in out
    z3, r3 = pair(rng, (2, 5), 9)
    ids = masked_target(rng, (2, 5), 9)
    out3 = np.full_like(z3, 3.0)
    cecore.logit_divergence(z3, r3, target=ids, shift=True, return_grad=True, out=out3)
    np.testing.assert_allclose(out3, _reference.logit_divergence_grad(
        z3, r3, target=ids, shift=True), rtol=1e-12, atol=1e-18)
    with pytest.raises(ValueError, match="out"):
        cecore.logit_divergence(z, r, return_grad=True, out=np.zeros((4, 9), np.float32))
    with pytest.raises(ValueError, match="out"):
        cecore.logit_divergence(z, r, out=np.zeros_like(z))
    with pytest.raises(TypeError, match="out"):
        cecore.logit_divergence(z, r, return_grad=True, out=[[0.0] * 9] * 4)


def test_minus_inf_logits(rng):
    z, r = pair(rng, (4,), 10)
    # -inf in both at the same class: 0 log 0 = 0, the rest unchanged
    z[0, 3] = r[0, 3] = -np.inf
    # -inf in the reference only: r = 0 there, KL(r || p) finite, KL(p || r) = +inf
    r[1, 2] = -np.inf
    # -inf in the model only: p = 0 where r > 0, KL(r || p) = +inf
    z[2, 5] = -np.inf
    for kind in ("kl", "reverse_kl", "jsd"):
        got = cecore.logit_divergence(z, r, kind=kind, reduction="none")
        want = _reference.logit_divergence(z, r, kind, reduction="none")
        np.testing.assert_allclose(got, want, rtol=1e-12)
    kl = cecore.logit_divergence(z, r, reduction="none")
    rev = cecore.logit_divergence(z, r, kind="reverse_kl", reduction="none")
    assert np.isfinite(kl[[0, 1, 3]]).all() and kl[2] == np.inf
    assert np.isfinite(rev[[0, 2, 3]]).all() and rev[1] == np.inf
    assert np.isfinite(cecore.logit_divergence(z, r, kind="jsd", reduction="none")).all()
    # gradient: 0 where p = 0
    _, g = cecore.logit_divergence(z, r, kind="jsd", return_grad=True)
    assert g[2, 5] == 0 and np.isfinite(g).all()
    _, g = cecore.logit_divergence(z, r, return_grad=True)
    assert g[0, 3] == 0 and g[2, 5] < 0
    # jsd of disjoint supports is finite: log 2 for beta = 1/2
    a = np.array([[0.0, -np.inf]])
    b = np.array([[-np.inf, 0.0]])
    assert cecore.logit_divergence(a, b, kind="jsd") == pytest.approx(math.log(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_rows_are_nan_for_their_row_only(rng, dtype):
    z, r = pair(rng, (5,), 3000, dtype)
    z[0, 7] = np.nan
    r[1, 2999] = np.nan
    z[2, 100] = np.inf
    z[3] = -np.inf
    for kind in ("kl", "reverse_kl", "jsd"):
        loss, grad = cecore.logit_divergence(z, r, kind=kind, reduction="none",
                                             return_grad=True)
        assert np.isnan(loss[:4]).all() and np.isfinite(loss[4])
        assert np.isnan(grad[:4]).all() and np.isfinite(grad[4]).all()


def test_maximum_growing_across_chunks(rng):
    # rows whose maximum rises chunk after chunk (the rescaling of the running sums)
    k = 9000
    z = np.linspace(-30, 5, k)[None, :] + 0.1 * rng.standard_normal((3, k))
    r = np.linspace(-25, 8, k)[None, :] + 0.1 * rng.standard_normal((3, k))
    r[1] = r[1][::-1]
    for dtype, rtol in ((np.float64, 1e-11), (np.float32, 1e-4)):
        for kind in ("kl", "reverse_kl", "jsd"):
            got = cecore.logit_divergence(z.astype(dtype), r.astype(dtype), kind=kind,
                                          reduction="none")
            want = _reference.logit_divergence(z.astype(dtype), r.astype(dtype), kind,
                                               reduction="none")
            np.testing.assert_allclose(got, want, rtol=rtol)


def test_nearly_identical_rows_are_accurate(rng):
    # the divergence of two close rows: float32 sums of exponentials are good to ~1e-7
    # relative, which bounds the absolute error of the divergence (~1e-8 here, where the
    # log-probabilities themselves would carry ~1e-6 each)
    z = 3 * rng.standard_normal((4, 32000))
    r = z + 1e-3 * rng.standard_normal(z.shape)
    for dtype, rtol, atol in ((np.float32, 1e-3, 5e-8), (np.float64, 1e-9, 5e-15)):
        got = cecore.logit_divergence(z.astype(dtype), r.astype(dtype), reduction="none")
        want = _reference.logit_divergence(z.astype(dtype), r.astype(dtype),
                                           reduction="none")
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # a dominant class: KL ~ 1e-9 in float32
    zp = np.zeros((2, 1000), np.float32)
    zp[:, 0] = 30
    rp = zp.copy()
    rp[:, 1] = 10
    got = cecore.logit_divergence(zp, rp, reduction="none")
    want = _reference.logit_divergence(zp, rp, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-3)


HALF = ["float16", "bfloat16"]


def _as(dtype, a):
    if dtype == "bfloat16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    return a.astype(dtype)


@pytest.mark.parametrize("xd", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("yd", ["float16", "bfloat16", "float32", "float64"])
def test_dtype_combinations(rng, xd, yd):
    pytest.importorskip("ml_dtypes")
    z, r = pair(rng, (3, 4), 3000, np.float32)
    z, r = _as(xd, z), _as(yd, r)
    compute = np.float64 if "float64" in (xd, yd) else np.float32
    zc, rc = z.astype(compute), r.astype(compute)  # the same values, exactly
    for kind in ("kl", "jsd"):
        loss, grad = cecore.logit_divergence(z, r, kind=kind, reduction="none",
                                             return_grad=True)
        want_loss, want_grad = cecore.logit_divergence(zc, rc, kind=kind, reduction="none",
                                                       return_grad=True)
        assert loss.dtype == compute
        assert grad.dtype == z.dtype
        # 16-bit rows are converted exactly: the compute type's result bit for bit
        np.testing.assert_array_equal(loss, want_loss)
        np.testing.assert_array_equal(grad, want_grad.astype(z.dtype))


def test_bfloat16_inputs_are_not_copied_or_modified(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    z, r = pair(rng, (3,), 100, np.float32)
    zb, rb = z.astype(ml_dtypes.bfloat16), r.astype(ml_dtypes.bfloat16)
    zb0, rb0 = zb.copy(), rb.copy()
    zb.flags.writeable = False
    cecore.logit_divergence(zb, rb, kind="reverse_kl", return_grad=True)
    assert (zb.view(np.uint16) == zb0.view(np.uint16)).all()
    assert (rb.view(np.uint16) == rb0.view(np.uint16)).all()


@pytest.mark.parametrize("kind, beta", KINDS, ids=KIND_IDS)
def test_threads_are_bitwise_identical(rng, kind, beta):
    z, r = pair(rng, (37,), 4100, np.float32)
    t = masked_target(rng, (37,), 4100)
    results = [cecore.logit_divergence(z, r, kind=kind, beta=beta, target=t,
                                       return_grad=True, n_threads=n) for n in (1, 2, 3, 8)]
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])
    per = [cecore.logit_divergence(z, r, kind=kind, beta=beta, reduction="none", n_threads=n)
           for n in (1, 4)]
    np.testing.assert_array_equal(per[0], per[1])


def test_inputs_not_modified_and_read_only(rng):
    z, r = pair(rng, (4,), 50, np.float32)
    z0, r0 = z.copy(), r.copy()
    z.flags.writeable = False
    r.flags.writeable = False
    for kind in ("kl", "reverse_kl", "jsd"):
        cecore.logit_divergence(z, r, kind=kind, return_grad=True)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(r, r0)


def test_layouts(rng):
    z, r = pair(rng, (6,), 40)
    want = cecore.logit_divergence(z, r, reduction="none")
    zf, rf = np.asfortranarray(z), np.asfortranarray(r)
    np.testing.assert_array_equal(cecore.logit_divergence(zf, rf, reduction="none"), want)
    big = np.zeros((6, 80))
    big[:, ::2] = z
    np.testing.assert_array_equal(cecore.logit_divergence(big[:, ::2], r, reduction="none"),
                                  want)
    np.testing.assert_allclose(cecore.logit_divergence(z.tolist(), r.astype(">f8"),
                                                       reduction="none"), want, rtol=1e-15)
    # integers are promoted to float64
    zi = np.arange(12).reshape(3, 4)
    assert cecore.logit_divergence(zi, zi[::-1]).dtype == np.float64


def test_bad_input(rng):
    z, r = pair(rng, (3,), 5)
    with pytest.raises(ValueError, match="logits.*ref_logits"):
        cecore.logit_divergence(z, r[:2])
    with pytest.raises(ValueError, match="ref_logits have different numbers of classes"):
        cecore.logit_divergence(z, r[:, :4])
    with pytest.raises(ValueError, match="ref_logits"):
        cecore.logit_divergence(z, r[None])
    for beta in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="beta"):
            cecore.logit_divergence(z, r, kind="jsd", beta=beta)
    with pytest.raises(TypeError, match="beta"):
        cecore.logit_divergence(z, r, beta="half")
    with pytest.raises(ValueError, match="kind"):
        cecore.logit_divergence(z, r, kind="js")
    with pytest.raises(ValueError, match="kind"):
        cecore.logit_divergence(z, r, kind=None)
    with pytest.raises(ValueError, match="reduction"):
        cecore.logit_divergence(z, r, reduction="batchmean")
    for temperature in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            cecore.logit_divergence(z, r, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        cecore.logit_divergence(z.astype(np.float32), r.astype(np.float32), temperature=1e-39)
    with pytest.raises(TypeError, match="temperature"):
        cecore.logit_divergence(z, r, temperature="1")
    with pytest.raises(ValueError, match="axis"):
        cecore.logit_divergence(z, r, axis=2)
    with pytest.raises(ValueError, match="target"):
        cecore.logit_divergence(z, r, target=np.zeros(4, int))
    with pytest.raises(ValueError, match=r"target\[1\] = 5 is out of range"):
        cecore.logit_divergence(z, r, target=np.array([0, 5, -100]))
    with pytest.raises(TypeError, match="target"):
        cecore.logit_divergence(z, r, target=np.zeros(3))
    with pytest.raises(TypeError, match="logits"):
        cecore.logit_divergence(z + 1j, r)
    with pytest.raises(TypeError, match="ref_logits"):
        cecore.logit_divergence(z, np.array([["a"] * 5] * 3))
    with pytest.raises(ValueError, match="zero classes"):
        cecore.logit_divergence(np.zeros((3, 0)), np.zeros((3, 0)))
    with pytest.raises(TypeError, match="return_grad"):
        cecore.logit_divergence(z, r, return_grad=1)
    with pytest.raises(ValueError, match="n_threads"):
        cecore.logit_divergence(z, r, n_threads=0)


def test_empty_batch():
    z = np.zeros((0, 5))
    assert math.isnan(cecore.logit_divergence(z, z))
    assert cecore.logit_divergence(z, z, reduction="sum") == 0
    loss, grad = cecore.logit_divergence(z, z, return_grad=True, reduction="none")
    assert loss.shape == (0,) and grad.shape == (0, 5)


# ---------------------------------------------------------------- Comparison rows


def _comparison_reference(z, r, t, ignore_index=-100, shift=False):
    x, y, counted = _reference._divergence_layout(z, r, t, -1, ignore_index, shift)
    tt = np.asarray(t)[..., 1:] if shift else np.asarray(t)
    kl = _reference._divergence_rows(x, y, "kl", 1.0, 0.5)[0]
    lp = _reference.log_softmax(x)
    lr = _reference.log_softmax(y)
    safe = np.where(counted, tt, 0)[..., None]
    logp = np.take_along_axis(lp, safe, -1)[..., 0]
    logr = np.take_along_axis(lr, safe, -1)[..., 0]
    top = _reference.order(x)[..., 0] == _reference.order(y)[..., 0]
    return kl[counted], logp[counted], logr[counted], top[counted]


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-4)])
@pytest.mark.parametrize("shift", [False, True])
def test_comparison_rows(rng, dtype, rtol, shift):
    z, r = pair(rng, (3, 40), 2500, dtype, spread=0.5)
    t = masked_target(rng, (3, 40), 2500)
    # ties at the top, decided by the lower index
    z[0, 0, 5] = z[0, 0, 9] = r[0, 0, 9] = r[0, 0, 5] = 50
    z[0, 1, 5] = z[0, 1, 9] = r[0, 1, 9] = 50
    kl, logp, logr, top = _comparison_rows(z, r, t, shift=shift)
    want = _comparison_reference(z, r, t, shift=shift)
    n = int(np.count_nonzero((t[:, 1:] if shift else t) != -100))
    assert kl.shape == logp.shape == logr.shape == top.shape == (n,)
    assert kl.dtype == logp.dtype == logr.dtype == np.float64 and top.dtype == bool
    np.testing.assert_allclose(kl, want[0], rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(logp, want[1], rtol=rtol)
    np.testing.assert_allclose(logr, want[2], rtol=rtol)
    np.testing.assert_array_equal(top, want[3])
    assert 0 < top.mean() < 1


def test_comparison_rows_special_values(rng):
    z, r = pair(rng, (5,), 30)
    t = np.array([1, 2, 3, 4, 5])
    z[0, 4] = np.nan                 # NaN ranks first: argmax 4
    r[0, 4] = 100.0
    r[1, 7] = np.nan
    z[2, 3] = -np.inf                # the target's log p is -inf, KL +inf
    z[3] = -np.inf                   # all -inf: NaN KL and logp, argmax 0
    kl, logp, logr, top = _comparison_rows(z, r, t)
    assert np.isnan(kl[[0, 1, 3]]).all() and kl[2] == np.inf and np.isfinite(kl[4])
    assert math.isnan(logp[0]) and np.isfinite(logr[0]) and bool(top[0])
    assert math.isnan(logr[1]) and np.isfinite(logp[1])
    assert logp[2] == -np.inf and np.isfinite(logr[2])
    assert math.isnan(logp[3])
    assert bool(top[3]) == (np.argmax(r[3]) == 0)


def test_comparison_rows_threads_and_errors(rng):
    z, r = pair(rng, (50,), 700, np.float32)
    t = masked_target(rng, (50,), 700)
    a = _comparison_rows(z, r, t, n_threads=1)
    b = _comparison_rows(z, r, t, n_threads=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="out of range"):
        _comparison_rows(z, r, np.full(50, 700))
    with pytest.raises(TypeError, match="target"):
        _comparison_rows(z, r, None)
    with pytest.raises(ValueError, match="ref_logits"):
        _comparison_rows(z, r[:, :10], t)
