"""cross_entropy, nll_loss, binary_cross_entropy(_with_logits) (cecore/_losses.py).

Compared with the float64 NumPy references of tests/_reference.py and, where
torch is installed, with torch.nn.functional itself.
"""

import itertools
import math

import _reference as ref
import numpy as np
import pytest
from _helpers import loss_tol, result_dtype, variants

import cecore

REDUCTIONS = ["mean", "sum", "none"]
DTYPES = {"f64": np.float64, "f32": np.float32, "f16": np.float16}

# layout name -> (logits shape, axis); the class axis has K = 5
LAYOUTS = {
    "2d": ((11, 5), -1),
    "axis0": ((5, 11), 0),
    "kdim": ((3, 5, 4, 2), 1),  # PyTorch's K-dimensional case (N, C, d1, d2)
    "1d": ((5,), -1),  # a single sample, 0-d target
}

# target kind -> (integer targets?, ignore_index, fraction ignored)
TARGETS = {
    "index": (True, -100, 0.0),
    "index-ignored": (True, -100, 0.3),
    "index-ignore-valid-class": (True, 2, None),  # class 2 is ignored wherever it occurs
    "soft": (False, -100, 0.0),
}


def _batch_shape(shape, axis):
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1:]


def make_case(rng, layout, dtype, target_kind, k=None):
    """(logits, target, axis, ignore_index) for a layout and a target kind."""
    shape, axis = LAYOUTS[layout]
    if k is not None:
        shape = tuple(k if i == axis % len(shape) else s for i, s in enumerate(shape))
    k = shape[axis]
    logits = (rng.normal(size=shape) * 2.0).astype(dtype)
    is_index, ignore_index, frac = TARGETS[target_kind]
    batch = _batch_shape(shape, axis)
    if is_index:
        target = rng.integers(0, k, size=batch)
        if frac:
            target = np.where(rng.random(batch) < frac, ignore_index, target)
            if target.ndim and np.all(target == ignore_index):
                target.flat[0] = 0
        return logits, np.asarray(target, dtype=np.int64), axis, ignore_index
    p = rng.dirichlet(np.ones(k), size=batch)  # (*batch, k)
    p[p < 0.05] = 0.0  # some exact zeros
    p = np.moveaxis(p, -1, axis).astype(dtype)
    return logits, p, axis, ignore_index


def _class_weight(rng, k):
    return rng.uniform(0.2, 2.0, size=k)


def _loss_cases():
    for dt, red, w, eps, tk, lay in itertools.product(
        DTYPES, REDUCTIONS, ["noweight", "weight"], [0.0, 0.15], TARGETS, LAYOUTS
    ):
        yield pytest.param(dt, red, w, eps, tk, lay, id=f"{dt}-{red}-{w}-ls{eps}-{tk}-{lay}")


def _check_type(got, dtype, reduction, batch_shape):
    if reduction == "none":
        assert isinstance(got, np.ndarray)
        assert got.shape == batch_shape
        if np.dtype(dtype) != np.float16:
            assert got.dtype == dtype
    else:
        assert isinstance(got, np.floating) and not isinstance(got, np.ndarray)
        assert type(got) is result_dtype(dtype).type


@pytest.mark.parametrize(("dt", "reduction", "w", "eps", "tk", "layout"), list(_loss_cases()))
def test_cross_entropy_matches_reference(rng, dt, reduction, w, eps, tk, layout):
    dtype = DTYPES[dt]
    logits, target, axis, ignore_index = make_case(rng, layout, dtype, tk)
    k = logits.shape[axis]
    weight = _class_weight(rng, k) if w == "weight" else None
    got = cecore.cross_entropy(logits, target, axis=axis, weight=weight,
                               ignore_index=ignore_index, label_smoothing=eps,
                               reduction=reduction)
    want = ref.cross_entropy(logits, target, axis=axis, weight=weight,
                             ignore_index=ignore_index, label_smoothing=eps, reduction=reduction)
    _check_type(got, dtype, reduction, _batch_shape(logits.shape, axis))
    np.testing.assert_allclose(got, want, **loss_tol(dtype))


@pytest.mark.parametrize(("dt", "reduction", "w", "eps", "tk", "layout"),
                         [p for p in _loss_cases() if p.values[0] != "f16"])
def test_cross_entropy_matches_torch(rng, dt, reduction, w, eps, tk, layout):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    dtype = DTYPES[dt]
    logits, target, axis, ignore_index = make_case(rng, layout, dtype, tk)
    k = logits.shape[axis]
    weight = _class_weight(rng, k) if w == "weight" else None
    got = cecore.cross_entropy(logits, target, axis=axis, weight=weight,
                               ignore_index=ignore_index, label_smoothing=eps,
                               reduction=reduction)
    # torch wants the class axis at 1; a single sample gets a batch axis
    # (torch's unbatched path fails with label smoothing and index targets)
    if logits.ndim == 1:
        logits, target, axis = logits[None], target[None], -1
    t_logits = np.moveaxis(logits, axis, 1)
    t_target = target if TARGETS[tk][0] else np.moveaxis(target, axis, 1)
    want = F.cross_entropy(
        torch.from_numpy(np.ascontiguousarray(t_logits)),
        torch.from_numpy(np.ascontiguousarray(t_target)),
        weight=None if weight is None else torch.tensor(weight,
                                                        dtype=torch.from_numpy(logits).dtype),
        ignore_index=ignore_index, label_smoothing=eps, reduction=reduction,
    ).numpy()
    if reduction == "none":
        want = want.reshape(got.shape)
    tol = {"rtol": 1e-12, "atol": 1e-13} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(got, want, **tol)


def _nll_cases():
    for dt, red, w, tk, lay in itertools.product(
        DTYPES, REDUCTIONS, ["noweight", "weight"],
        [t for t in TARGETS if TARGETS[t][0]], LAYOUTS,
    ):
        yield pytest.param(dt, red, w, tk, lay, id=f"{dt}-{red}-{w}-{tk}-{lay}")


@pytest.mark.parametrize(("dt", "reduction", "w", "tk", "layout"), list(_nll_cases()))
def test_nll_loss_matches_reference_and_torch(rng, dt, reduction, w, tk, layout):
    dtype = DTYPES[dt]
    logits, target, axis, ignore_index = make_case(rng, layout, dtype, tk)
    log_probs = ref.log_softmax(logits, axis).astype(dtype)
    weight = _class_weight(rng, logits.shape[axis]) if w == "weight" else None
    got = cecore.nll_loss(log_probs, target, axis=axis, weight=weight,
                          ignore_index=ignore_index, reduction=reduction)
    want = ref.nll_loss(log_probs, target, axis=axis, weight=weight,
                        ignore_index=ignore_index, reduction=reduction)
    _check_type(got, dtype, reduction, _batch_shape(logits.shape, axis))
    # a sum of products of the inputs: good to a few ulps of the dtype
    tol = {"rtol": 1e-13, "atol": 0} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-7}
    np.testing.assert_allclose(got, want, **tol)
    try:
        import torch
    except ImportError:
        return
    if dtype == np.float16:
        return
    t_lp = np.ascontiguousarray(np.moveaxis(log_probs, axis, 1 if log_probs.ndim > 1 else 0))
    tw = None if weight is None else torch.tensor(weight, dtype=torch.from_numpy(t_lp).dtype)
    want_t = torch.nn.functional.nll_loss(
        torch.from_numpy(t_lp), torch.from_numpy(target), weight=tw,
        ignore_index=ignore_index, reduction=reduction).numpy()
    np.testing.assert_allclose(got, want_t.reshape(np.shape(got)), **tol)


@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_equals_nll_of_log_softmax(rng, dt, reduction):
    dtype = DTYPES[dt]
    logits, target, axis, _ignore_index = make_case(rng, "kdim", dtype, "index-ignored")
    weight = _class_weight(rng, logits.shape[axis])
    ce = cecore.cross_entropy(logits, target, axis=axis, weight=weight, reduction=reduction)
    nll = cecore.nll_loss(cecore.log_softmax(logits.astype(np.float64), axis=axis), target,
                          axis=axis, weight=weight, reduction=reduction)
    np.testing.assert_allclose(ce, nll, **loss_tol(dtype))


@pytest.mark.parametrize("k", [1000, 100_000], ids=["K1000", "K100k"])
@pytest.mark.parametrize("eps", [0.0, 0.1], ids=["nosmooth", "smooth"])
def test_cross_entropy_float32_large_k(rng, k, eps):
    n = max(4, 200_000 // k)
    logits = (rng.normal(size=(n, k)) * 4).astype(np.float32)
    target = rng.integers(0, k, size=n)
    weight = _class_weight(rng, k)
    for reduction in REDUCTIONS:
        got = cecore.cross_entropy(logits, target, weight=weight, label_smoothing=eps,
                                   reduction=reduction)
        want = ref.cross_entropy(logits, target, weight=weight, label_smoothing=eps,
                                 reduction=reduction)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=reduction)
    soft = rng.dirichlet(np.full(k, 0.1), size=n).astype(np.float32)
    got = cecore.cross_entropy(logits, soft, label_smoothing=eps, reduction="none")
    want = ref.cross_entropy(logits, soft, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_cross_entropy_docstring_example():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    got = cecore.cross_entropy(logits, np.array([0, 2]))
    want = ((math.log(math.exp(2) + math.exp(0.5) + math.exp(-1)) - 2) + math.log(3)) / 2
    assert got == pytest.approx(want, rel=1e-15, abs=0)
    assert cecore.nll_loss(np.log([[0.5, 0.25, 0.25]]), np.array([1])) == pytest.approx(
        math.log(4), rel=1e-15, abs=0)


@pytest.mark.parametrize("int_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                       np.uint16, np.uint32, np.uint64])
def test_any_integer_target_dtype(rng, int_dtype):
    logits = rng.normal(size=(40, 7))
    target = rng.integers(0, 7, size=40)
    want = cecore.cross_entropy(logits, target, reduction="none")
    t = target.astype(int_dtype)
    np.testing.assert_array_equal(cecore.cross_entropy(logits, t, reduction="none"), want)
    np.testing.assert_array_equal(cecore.nll_loss(logits, t, reduction="none"),
                                  -logits[np.arange(40), target])
    swapped = t.astype(t.dtype.newbyteorder("S"))
    np.testing.assert_array_equal(cecore.cross_entropy(logits, swapped, reduction="none"), want)


def test_integer_logits_are_float64(rng):
    logits = rng.integers(-5, 5, size=(6, 4))
    target = rng.integers(0, 4, size=6)
    got = cecore.cross_entropy(logits, target)
    assert type(got) is np.float64
    assert got == cecore.cross_entropy(logits.astype(np.float64), target)


def test_python_lists_are_accepted():
    got = cecore.cross_entropy([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [2, 0], reduction="none")
    np.testing.assert_allclose(got, ref.cross_entropy(np.array([[1.0, 2, 3], [0, 0, 0]]),
                                                      np.array([2, 0]), reduction="none"),
                               rtol=1e-15)
    soft = cecore.cross_entropy([[1.0, 2.0]], [[0.25, 0.75]])
    want = float(ref.cross_entropy(np.array([[1.0, 2.0]]), np.array([[0.25, 0.75]])))
    assert soft == pytest.approx(want, rel=1e-15, abs=0)


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    logits = rng.normal(size=(16, 6)).astype(np.float32)
    target = rng.integers(0, 6, size=16)
    soft = rng.dirichlet(np.ones(6), size=16).astype(np.float32)
    tl, tt, ts = (torch.from_numpy(a.copy()) for a in (logits, target, soft))
    for reduction in REDUCTIONS:
        np.testing.assert_array_equal(cecore.cross_entropy(tl, tt, reduction=reduction),
                                      cecore.cross_entropy(logits, target, reduction=reduction))
        np.testing.assert_array_equal(cecore.cross_entropy(tl, ts, reduction=reduction),
                                      cecore.cross_entropy(logits, soft, reduction=reduction))
        np.testing.assert_array_equal(cecore.nll_loss(tl, tt, reduction=reduction),
                                      cecore.nll_loss(logits, target, reduction=reduction))
    probs = torch.sigmoid(tl)
    bt = (ts > 0.15).to(torch.float32)
    np.testing.assert_array_equal(
        cecore.binary_cross_entropy(probs, bt),
        cecore.binary_cross_entropy(probs.numpy(), bt.numpy()))
    np.testing.assert_array_equal(
        cecore.binary_cross_entropy_with_logits(tl, bt, pos_weight=torch.full((6,), 2.0)),
        cecore.binary_cross_entropy_with_logits(logits, bt.numpy(), pos_weight=np.full(6, 2.0)))
    # the tensors were not modified
    np.testing.assert_array_equal(tl.numpy(), logits)
    np.testing.assert_array_equal(tt.numpy(), target)


def test_memmap_inputs(rng, tmp_path):
    logits = rng.normal(size=(64, 9)).astype(np.float32)
    target = rng.integers(0, 9, size=64)
    lpath, tpath = tmp_path / "logits.bin", tmp_path / "target.bin"
    mm = np.memmap(lpath, dtype=np.float32, mode="w+", shape=logits.shape)
    mm[:] = logits
    mm.flush()
    del mm
    tm = np.memmap(tpath, dtype=np.int64, mode="w+", shape=target.shape)
    tm[:] = target
    tm.flush()
    del tm
    ml = np.memmap(lpath, dtype=np.float32, mode="r", shape=logits.shape)
    mt = np.memmap(tpath, dtype=np.int64, mode="r", shape=target.shape)
    try:
        for reduction in REDUCTIONS:
            np.testing.assert_array_equal(
                cecore.cross_entropy(ml, mt, reduction=reduction),
                cecore.cross_entropy(logits, target, reduction=reduction))
        np.testing.assert_array_equal(cecore.log_softmax(ml), cecore.log_softmax(logits))
        np.testing.assert_array_equal(np.asarray(ml), logits)
    finally:
        del ml, mt


# ---------------------------------------------------------------------------
# layouts, dtypes of the other arguments, inputs not modified


@pytest.mark.parametrize("dt", ["f64", "f32", "f16"])
@pytest.mark.parametrize("tk", ["index-ignored", "soft"])
@pytest.mark.parametrize("layout", ["2d", "kdim"])
def test_cross_entropy_layouts_identical_and_inputs_unmodified(rng, dt, tk, layout):
    logits, target, axis, ignore_index = make_case(rng, layout, DTYPES[dt], tk)
    weight = _class_weight(rng, logits.shape[axis])
    kw = {"axis": axis, "weight": weight, "label_smoothing": 0.05, "ignore_index": ignore_index}
    want = {r: cecore.cross_entropy(logits, target, reduction=r, **kw) for r in REDUCTIONS}
    for (ln, lv), (tn, tv) in itertools.product(variants(logits), variants(target)):
        lb, tb = lv.copy(), tv.copy()
        for r in REDUCTIONS:
            got = cecore.cross_entropy(lv, tv, reduction=r, **kw)
            np.testing.assert_array_equal(got, want[r], err_msg=f"{ln}/{tn}/{r}")
            if r == "none":
                assert not np.shares_memory(got, lv) and not np.shares_memory(got, tv)
        np.testing.assert_array_equal(lv, lb, err_msg=f"{ln}: logits modified")
        np.testing.assert_array_equal(tv, tb, err_msg=f"{tn}: target modified")
        assert lv.dtype == lb.dtype and tv.dtype == tb.dtype


@pytest.mark.parametrize("dt", ["f64", "f32"])
def test_nll_and_bce_layouts_identical_and_inputs_unmodified(rng, dt):
    dtype = DTYPES[dt]
    lp = ref.log_softmax(rng.normal(size=(9, 6))).astype(dtype)
    target = rng.integers(0, 6, size=9)
    x = rng.normal(size=(9, 6)).astype(dtype)
    t = (rng.random((9, 6)) < 0.4).astype(dtype)
    p = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dtype)
    w = rng.uniform(0.5, 2, 6)
    pw = rng.uniform(0.5, 3, 6)
    want_nll = cecore.nll_loss(lp, target, weight=w, reduction="none")
    want_bcel = cecore.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw,
                                                        reduction="none")
    want_bce = cecore.binary_cross_entropy(p, t, weight=w, reduction="none")
    for (n1, v_lp), (n2, v_x), (n3, v_p), (n4, v_t) in zip(
        variants(lp), variants(x), variants(p), variants(t)
    ):
        copies = [a.copy() for a in (v_lp, v_x, v_p, v_t)]
        np.testing.assert_array_equal(cecore.nll_loss(v_lp, target, weight=w, reduction="none"),
                                      want_nll, err_msg=n1)
        np.testing.assert_array_equal(
            cecore.binary_cross_entropy_with_logits(v_x, v_t, weight=w, pos_weight=pw,
                                                    reduction="none"), want_bcel, err_msg=n2)
        np.testing.assert_array_equal(
            cecore.binary_cross_entropy(v_p, v_t, weight=w, reduction="none"), want_bce,
            err_msg=n3)
        for a, c in zip((v_lp, v_x, v_p, v_t), copies):
            np.testing.assert_array_equal(a, c, err_msg=f"{n4}: input modified")


def test_weight_as_list_and_int_and_readonly(rng):
    logits = rng.normal(size=(10, 3))
    target = rng.integers(0, 3, size=10)
    want = cecore.cross_entropy(logits, target, weight=np.array([1.0, 2.0, 3.0]))
    assert cecore.cross_entropy(logits, target, weight=[1, 2, 3]) == want
    w = np.array([1.0, 2.0, 3.0])[::-1][::-1]
    w.flags.writeable = False
    assert cecore.cross_entropy(logits, target, weight=w) == want
    assert cecore.cross_entropy(logits, target, weight=np.array([1, 2, 3], np.float32)) == want


# ---------------------------------------------------------------------------
# empty batches, ignored positions, special values


@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3), (2, 4, 0)], ids=["N0", "N0-kdim", "d0-kdim"])
def test_empty_batch(dt, shape):
    dtype = DTYPES[dt]
    axis = 1 if len(shape) == 3 else -1
    logits = np.zeros(shape, dtype)
    batch = _batch_shape(shape, axis)
    index = np.zeros(batch, np.int64)
    soft = np.zeros(shape, dtype)
    for fn, args in [(cecore.cross_entropy, (logits, index)),
                     (cecore.cross_entropy, (logits, soft)),
                     (cecore.nll_loss, (logits, index))]:
        mean = fn(*args, axis=axis)
        assert type(mean) is result_dtype(dtype).type and np.isnan(mean)
        total = fn(*args, axis=axis, reduction="sum")
        assert type(total) is result_dtype(dtype).type and total == 0
        none = fn(*args, axis=axis, reduction="none")
        assert none.shape == batch and none.dtype == dtype
    for fn in (cecore.binary_cross_entropy, cecore.binary_cross_entropy_with_logits):
        assert np.isnan(fn(soft, soft))
        assert fn(soft, soft, reduction="sum") == 0
        assert fn(soft, soft, reduction="none").shape == shape


@pytest.mark.parametrize("which", ["bce-weight", "bce-logits-weight", "bce-logits-pos-weight"])
def test_empty_batch_with_elementwise_weight(which):
    # regression: a size-0 weight made the block layout divide by zero
    x = np.zeros((3, 0))
    w = np.ones(0)
    if which == "bce-weight":
        got = cecore.binary_cross_entropy(x, x, weight=w, reduction="none")
    elif which == "bce-logits-weight":
        got = cecore.binary_cross_entropy_with_logits(x, x, weight=w, reduction="none")
    else:
        got = cecore.binary_cross_entropy_with_logits(x, x, pos_weight=w, reduction="none")
    assert got.shape == (3, 0)


@pytest.mark.parametrize("w", [None, [0.5, 2.0, 1.0]], ids=["noweight", "weight"])
def test_all_targets_ignored(w):
    logits = np.arange(12.0).reshape(4, 3)
    target = np.full(4, -100)
    assert np.isnan(cecore.cross_entropy(logits, target, weight=w))
    assert np.isnan(cecore.nll_loss(logits, target, weight=w))
    assert cecore.cross_entropy(logits, target, weight=w, reduction="sum") == 0
    np.testing.assert_array_equal(
        cecore.cross_entropy(logits, target, weight=w, reduction="none", label_smoothing=0.3),
        np.zeros(4))


def test_ignored_positions_give_zero_and_are_not_counted():
    logits = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [0.0, 5.0, 1.0]])
    target = np.array([0, -100, 1])
    none = cecore.cross_entropy(logits, target, reduction="none")
    assert none[1] == 0.0  # even with a NaN logit in the ignored row
    mean = cecore.cross_entropy(logits, target)
    assert mean == pytest.approx((none[0] + none[2]) / 2, rel=1e-15, abs=0)
    w = np.array([2.0, 3.0, 5.0])
    wmean = cecore.cross_entropy(logits, target, weight=w)
    assert wmean == pytest.approx((2.0 * none[0] + 3.0 * none[2]) / 5.0, rel=1e-15, abs=0)


def test_label_smoothing_extremes():
    logits = np.array([[1.0, 2.0, 4.0], [0.5, -1.0, 0.0]])
    target = np.array([2, 0])
    lsm = ref.log_softmax(logits)
    full = cecore.cross_entropy(logits, target, label_smoothing=1.0, reduction="none")
    np.testing.assert_allclose(full, -lsm.mean(axis=1), rtol=1e-14)
    none = cecore.cross_entropy(logits, target, label_smoothing=0.0, reduction="none")
    np.testing.assert_allclose(none, -lsm[[0, 1], target], rtol=1e-14)


@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("k", [4, 40], ids=["short-row", "long-row"])
def test_neg_inf_logits_are_masks(rng, dt, k):
    dtype = DTYPES[dt]
    logits = rng.normal(size=(6, k)).astype(dtype)
    target = rng.integers(0, k // 2, size=6)
    masked = logits.copy()
    masked[:, k // 2:] = -np.inf
    got = cecore.cross_entropy(masked, target, reduction="none")
    want = cecore.cross_entropy(logits[:, : k // 2], target, reduction="none")
    np.testing.assert_allclose(got, want, **loss_tol(dtype))
    # the target class itself masked: infinite loss
    masked[0, target[0]] = -np.inf
    assert cecore.cross_entropy(masked, target, reduction="none")[0] == np.inf


@pytest.mark.parametrize("dt", ["f64", "f32"])
def test_soft_target_zero_where_logit_is_neg_inf_counts_zero(rng, dt):
    # documented deviation from torch: 0 * log 0 = 0 (torch gives NaN)
    dtype = DTYPES[dt]
    logits = rng.normal(size=(5, 6)).astype(dtype)
    soft = rng.dirichlet(np.ones(3), size=5).astype(dtype)
    target = np.concatenate([soft, np.zeros((5, 3), dtype)], axis=1)
    masked = logits.copy()
    masked[:, 3:] = -np.inf
    got = cecore.cross_entropy(masked, target, reduction="none")
    want = ref.cross_entropy(logits[:, :3], soft, reduction="none")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, **loss_tol(dtype))
    w = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 1.0])
    got_w = cecore.cross_entropy(masked, target, weight=w)
    assert got_w == pytest.approx(float(ref.cross_entropy(logits[:, :3], soft, weight=w[:3])),
                                  rel=loss_tol(dtype)["rtol"] * 10, abs=0)
    # with label smoothing every class has positive target mass: infinite loss
    assert cecore.cross_entropy(masked, target, label_smoothing=0.1) == np.inf


@pytest.mark.parametrize("k", [3, 40], ids=["short-row", "long-row"])
def test_all_neg_inf_row_gives_nan_like_torch(k):
    logits = np.zeros((3, k))
    logits[1] = -np.inf
    target = np.array([0, 1, 2])
    got = cecore.cross_entropy(logits, target, reduction="none")
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], math.log(k), rtol=1e-15)
    try:  # the checks above ran: a missing torch must not report them as skipped
        import torch
    except ImportError:
        return
    want = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target),
                                             reduction="none").numpy()
    assert np.isnan(want[1])


@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("k", [3, 40], ids=["short-row", "long-row"])
@pytest.mark.parametrize("bad", ["nan", "pos-inf"])
def test_nan_and_pos_inf_spoil_only_their_row(rng, dt, k, bad):
    dtype = DTYPES[dt]
    logits = rng.normal(size=(5, k)).astype(dtype)
    logits[2, 1] = np.nan if bad == "nan" else np.inf
    target = np.array([0, 1, 2, 0, 1])
    soft = rng.dirichlet(np.ones(k), size=5).astype(dtype)
    keep = [0, 1, 3, 4]
    for tgt in (target, soft):
        got = cecore.cross_entropy(logits, tgt, reduction="none")
        assert np.isnan(got[2])
        np.testing.assert_array_equal(got[keep], cecore.cross_entropy(logits[keep], tgt[keep],
                                                                      reduction="none"))
        assert np.isnan(cecore.cross_entropy(logits, tgt))
    got = cecore.nll_loss(logits, np.array([0, 1, 1, 0, 1]), reduction="none")
    assert np.isnan(got[2]) if bad == "nan" else got[2] == -np.inf


@pytest.mark.parametrize("case", ["f32-all-minus-1e38", "f64-all-minus-1e300",
                                  "f64-1e15-offset"])
def test_cross_entropy_huge_logits(case):
    # regression: the loss was 0 for rows of equal huge logits (lse rounded as m + log(sum))
    if case == "f32-all-minus-1e38":
        logits, want = np.full((2, 3), -1e38, np.float32), math.log(3)
    elif case == "f64-all-minus-1e300":
        logits, want = np.full((2, 4), -1e300), math.log(4)
    else:
        logits = np.array([[1e15, 1e15 + 1.0, 1e15 - 2.0]] * 2)
        want = float(ref.cross_entropy(np.array([[0.0, 1.0, -2.0]]), np.array([0])))
    got = cecore.cross_entropy(logits, np.array([0, 0]))
    assert got == pytest.approx(want, rel=1e-6, abs=0)


def test_huge_but_safe_logits():
    # a dominant huge logit is handled exactly
    logits = np.array([[1e38, 0.0, -1e38]], np.float32)
    assert cecore.cross_entropy(logits, np.array([0])) == 0.0
    assert cecore.cross_entropy(logits, np.array([1])) == np.float32(1e38)
    logits = np.array([[1e308, 0.0]])
    assert cecore.cross_entropy(logits, np.array([1])) == 1e308


# ---------------------------------------------------------------------------
# binary cross-entropy


BCE_WEIGHTS = {
    # name -> function of (rng, shape) giving a weight that broadcasts to shape
    "none": lambda rng, shape: None,
    "scalar": lambda rng, shape: 0.7,
    "per-class": lambda rng, shape: rng.uniform(0.2, 2.0, shape[-1]),
    "per-row": lambda rng, shape: rng.uniform(0.2, 2.0, shape[:-1] + (1,)),
    "full": lambda rng, shape: rng.uniform(0.2, 2.0, shape),
    "leading-one": lambda rng, shape: rng.uniform(0.2, 2.0, (1,) + shape[1:]),
}
BCE_SHAPES = {"1d": (13,), "2d": (7, 5), "3d": (3, 4, 5)}


def _bce_data(rng, shape, dtype):
    x = (rng.normal(size=shape) * 3).astype(dtype)
    t = rng.random(shape).astype(dtype)
    t[rng.random(shape) < 0.3] = 0.0
    t[rng.random(shape) < 0.3] = 1.0
    return x, t


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("w", list(BCE_WEIGHTS))
@pytest.mark.parametrize("shape", list(BCE_SHAPES))
@pytest.mark.parametrize("dt", ["f64", "f32", "f16"])
def test_bce_with_logits_matches_reference(rng, dt, shape, w, reduction):
    dtype = DTYPES[dt]
    shp = BCE_SHAPES[shape]
    x, t = _bce_data(rng, shp, dtype)
    weight = BCE_WEIGHTS[w](rng, shp)
    pos_weight = rng.uniform(0.5, 3.0, shp[-1])
    for pw in (None, pos_weight, 2.5):
        got = cecore.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pw,
                                                      reduction=reduction)
        want = ref.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pw,
                                                    reduction=reduction)
        _check_type(got, dtype, reduction, shp)
        tol = {"rtol": 1e-13, "atol": 0} if dtype == np.float64 else {"rtol": 2e-6, "atol": 0}
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("w", list(BCE_WEIGHTS))
@pytest.mark.parametrize("shape", list(BCE_SHAPES))
@pytest.mark.parametrize("dt", ["f64", "f32", "f16"])
def test_bce_matches_reference(rng, dt, shape, w, reduction):
    dtype = DTYPES[dt]
    shp = BCE_SHAPES[shape]
    x, t = _bce_data(rng, shp, dtype)
    p = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dtype)
    p.flat[0], p.flat[-1] = 0.0, 1.0  # the clamped logs
    weight = BCE_WEIGHTS[w](rng, shp)
    got = cecore.binary_cross_entropy(p, t, weight=weight, reduction=reduction)
    want = ref.binary_cross_entropy(p, t, weight=weight, reduction=reduction)
    _check_type(got, dtype, reduction, shp)
    tol = {"rtol": 1e-13, "atol": 0} if dtype == np.float64 else {"rtol": 2e-6, "atol": 0}
    np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("w", [w for w in BCE_WEIGHTS if w != "leading-one"])
@pytest.mark.parametrize("dt", ["f64", "f32"])
def test_bce_matches_torch(rng, dt, w, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    dtype = DTYPES[dt]
    shp = (6, 5)
    x, t = _bce_data(rng, shp, dtype)
    weight = BCE_WEIGHTS[w](rng, shp)
    pos_weight = rng.uniform(0.5, 3.0, shp[-1]).astype(dtype)

    def tt(a):
        return None if a is None else torch.as_tensor(np.asarray(a, dtype=dtype))

    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-6}
    got = cecore.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pos_weight,
                                                  reduction=reduction)
    want = F.binary_cross_entropy_with_logits(tt(x), tt(t), weight=tt(weight),
                                              pos_weight=tt(pos_weight), reduction=reduction)
    np.testing.assert_allclose(got, want.numpy(), **tol)
    p = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dtype)
    p[0, 0], p[1, 1] = 0.0, 1.0
    got = cecore.binary_cross_entropy(p, t, weight=weight, reduction=reduction)
    want = F.binary_cross_entropy(tt(p), tt(t), weight=tt(weight), reduction=reduction)
    np.testing.assert_allclose(got, want.numpy(), **tol)


@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("period", ["divides-block", "odd-period", "per-element"])
def test_bce_weights_across_kernel_blocks(rng, dt, period):
    # weights that repeat with a period not dividing the kernel block, and
    # weights longer than a block (laid out per element)
    dtype = DTYPES[dt]
    shape = {"divides-block": (9000, 8), "odd-period": (12001, 3), "per-element": (7001, 3)}[period]
    x, t = _bce_data(rng, shape, dtype)
    weight = (rng.uniform(0.2, 2.0, shape[-1]) if period != "per-element"
              else rng.uniform(0.2, 2.0, (shape[0], 1)))
    pos_weight = rng.uniform(0.5, 3.0, shape[-1])
    got = cecore.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pos_weight,
                                                  reduction="none")
    want = ref.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pos_weight,
                                                reduction="none")
    tol = {"rtol": 1e-13, "atol": 0} if dtype == np.float64 else {"rtol": 2e-6, "atol": 0}
    np.testing.assert_allclose(got, want, **tol)
    total = cecore.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pos_weight,
                                                    reduction="sum")
    np.testing.assert_allclose(total, want.sum(), **tol)
    p = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dtype)
    got = cecore.binary_cross_entropy(p, t, weight=weight, reduction="none")
    np.testing.assert_allclose(got, ref.binary_cross_entropy(p, t, weight=weight,
                                                             reduction="none"), **tol)


def _mp_bce_logits(x, t, pw=1.0):
    import mpmath

    mpmath.mp.dps = 50
    x, t, pw = mpmath.mpf(float(x)), mpmath.mpf(float(t)), mpmath.mpf(float(pw))
    return float(pw * t * mpmath.log1p(mpmath.exp(-x)) + (1 - t) * mpmath.log1p(mpmath.exp(x)))


@pytest.mark.parametrize("x", [-745.0, -700.0, -100.0, -33.0, -20.0, -1e-8, 0.0, 1e-8, 5.0,
                               33.0, 100.0, 700.0, 1e300])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("pw", [1.0, 4.0])
def test_bce_with_logits_extreme_float64_vs_mpmath(x, t, pw):
    got = cecore.binary_cross_entropy_with_logits(np.array([x]), np.array([t]),
                                                  pos_weight=np.array([pw]), reduction="sum")
    want = _mp_bce_logits(x, t, pw)
    assert got == pytest.approx(want, rel=4e-16 * 8, abs=1e-320)


def test_bce_with_logits_confident_is_more_accurate_than_torch_formula():
    got = cecore.binary_cross_entropy_with_logits(np.array([-33.0]), np.array([0.0]))
    assert got == pytest.approx(math.exp(-33.0), rel=1e-14, abs=0)  # log1p(e^-33) ~ e^-33
    assert got == pytest.approx(_mp_bce_logits(-33.0, 0.0), rel=1e-15, abs=0)
    got = cecore.binary_cross_entropy_with_logits(np.array([40.0]), np.array([1.0]))
    assert got == pytest.approx(math.exp(-40.0), rel=1e-14, abs=0)


@pytest.mark.parametrize("x", [-100.0, -87.0, -30.0, -16.0, -1e-3, 0.0, 2.0, 16.0, 30.0, 87.0,
                               100.0])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.75])
def test_bce_with_logits_extreme_float32_vs_mpmath(x, t):
    got = cecore.binary_cross_entropy_with_logits(np.array([x], np.float32),
                                                  np.array([t], np.float32), reduction="none")
    want = _mp_bce_logits(np.float32(x), np.float32(t))
    assert got.dtype == np.float32
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    assert abs(float(got[0]) - want) <= 2e-6 * abs(want) + 4 * tiny


def test_bce_clamps_log_at_minus_100():
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-50])
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    got = cecore.binary_cross_entropy(p, t, reduction="none")
    np.testing.assert_allclose(got, [100.0, 100.0, 0.0, 0.0, 100.0], rtol=1e-15)
    got32 = cecore.binary_cross_entropy(p.astype(np.float32), t.astype(np.float32),
                                        reduction="none")
    np.testing.assert_allclose(got32, [100.0, 100.0, 0.0, 0.0, 100.0], rtol=1e-7)
    # log(1e-40) = -92.1 is not clamped (and 1e-40 is a float32 subnormal)
    got = cecore.binary_cross_entropy(np.array([1e-40], np.float32), np.array([1.0], np.float32))
    assert got == pytest.approx(-math.log(float(np.float32(1e-40))), rel=1e-6, abs=0)


def test_bce_nan_propagates_to_its_element_only():
    p = np.array([0.5, np.nan, 0.25])
    t = np.array([1.0, 0.0, 1.0])
    got = cecore.binary_cross_entropy(p, t, reduction="none")
    assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]]))
    assert np.isnan(cecore.binary_cross_entropy(p, t))
    got = cecore.binary_cross_entropy_with_logits(p, t, reduction="none")
    assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]]))


def test_bce_targets_of_any_real_dtype(rng):
    x, _ = _bce_data(rng, (20,), np.float64)
    t = rng.random(20) < 0.5
    want = cecore.binary_cross_entropy_with_logits(x, t.astype(np.float64))
    for tt in (t, t.astype(np.int8), t.astype(np.uint64), t.astype(np.float32)):
        assert cecore.binary_cross_entropy_with_logits(x, tt) == want


# ---------------------------------------------------------------------------
# fused gradients: return_grad= and out=


def _grad_cases():
    for dt, red, w, eps, tk, lay in itertools.product(
        ["f64", "f32"], REDUCTIONS, ["noweight", "weight"], [0.0, 0.2],
        ["index-ignored", "index-ignore-valid-class", "soft"], ["2d", "axis0", "kdim"],
    ):
        yield pytest.param(dt, red, w, eps, tk, lay, id=f"{dt}-{red}-{w}-ls{eps}-{tk}-{lay}")


@pytest.mark.parametrize(("dt", "reduction", "w", "eps", "tk", "layout"), list(_grad_cases()))
def test_cross_entropy_gradient_matches_reference(rng, dt, reduction, w, eps, tk, layout):
    dtype = DTYPES[dt]
    logits, target, axis, ignore_index = make_case(rng, layout, dtype, tk)
    weight = _class_weight(rng, logits.shape[axis]) if w == "weight" else None
    kw = {"axis": axis, "weight": weight, "ignore_index": ignore_index, "label_smoothing": eps,
              "reduction": reduction}
    before = logits.copy()
    loss, grad = cecore.cross_entropy(logits, target, return_grad=True, **kw)
    np.testing.assert_array_equal(logits, before)  # not modified without out=
    np.testing.assert_array_equal(loss, cecore.cross_entropy(logits, target, **kw))
    assert grad.shape == logits.shape and grad.dtype == dtype
    want = ref.cross_entropy_grad(logits, target, **kw)
    tol = {"rtol": 1e-12, "atol": 1e-15} if dtype == np.float64 else {"rtol": 2e-6, "atol": 2e-7}
    np.testing.assert_allclose(grad, want, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tk", ["index-ignored", "soft"])
def test_cross_entropy_gradient_matches_torch_autograd(rng, reduction, tk):
    torch = pytest.importorskip("torch")
    logits, target, axis, _ignore_index = make_case(rng, "kdim", np.float64, tk)
    weight = _class_weight(rng, logits.shape[axis])
    _, grad = cecore.cross_entropy(logits, target, axis=axis, weight=weight,
                                   label_smoothing=0.1, reduction=reduction, return_grad=True)
    tx = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(tx, torch.from_numpy(target),
                                             weight=torch.tensor(weight), label_smoothing=0.1,
                                             reduction=reduction)
    loss.sum().backward()
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("tk", ["index-ignored", "soft"])
@pytest.mark.parametrize("layout", ["2d", "axis0", "kdim"])
def test_cross_entropy_gradient_into_out_and_in_place(rng, dt, tk, layout):
    dtype = DTYPES[dt]
    logits, target, axis, _ = make_case(rng, layout, dtype, tk)
    loss, grad = cecore.cross_entropy(logits, target, axis=axis, return_grad=True)
    out = np.full_like(logits, np.nan)
    loss2, grad2 = cecore.cross_entropy(logits, target, axis=axis, return_grad=True, out=out)
    assert grad2 is out
    np.testing.assert_array_equal(out, grad)
    assert loss2 == loss
    inplace = logits.copy()
    loss3, grad3 = cecore.cross_entropy(inplace, target, axis=axis, return_grad=True,
                                        out=inplace)
    assert grad3 is inplace
    np.testing.assert_array_equal(inplace, grad)
    assert loss3 == loss


def test_cross_entropy_bad_target_with_out_leaves_logits_untouched(rng):
    logits = rng.normal(size=(6, 4))
    target = np.array([0, 1, 2, 3, 9, 0])
    before = logits.copy()
    with pytest.raises(ValueError, match=r"target\[4\] = 9 is out of range"):
        cecore.cross_entropy(logits, target, return_grad=True, out=logits)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("fn", ["cross_entropy", "binary_cross_entropy_with_logits"])
def test_out_validation(fn):
    x = np.zeros((3, 4))
    t = np.array([0, 1, 2]) if fn == "cross_entropy" else np.zeros((3, 4))
    f = getattr(cecore, fn)
    with pytest.raises(ValueError, match="out"):
        f(x, t, return_grad=True, out=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="out"):
        f(x, t, return_grad=True, out=np.zeros((3, 4), np.float32))
    ro = np.zeros((3, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        f(x, t, return_grad=True, out=ro)
    with pytest.raises(ValueError, match="out"):
        f(x, t, out=np.zeros((3, 4)))  # out without return_grad
    with pytest.raises(TypeError, match="out"):
        f(x, t, return_grad=True, out=[[0.0] * 4] * 3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dt", ["f64", "f32"])
@pytest.mark.parametrize("w", ["none", "per-class", "full"])
def test_bce_with_logits_gradient(rng, dt, reduction, w):
    dtype = DTYPES[dt]
    x, t = _bce_data(rng, (7, 5), dtype)
    weight = BCE_WEIGHTS[w](rng, (7, 5))
    pos_weight = rng.uniform(0.5, 3.0, 5)
    kw = {"weight": weight, "pos_weight": pos_weight, "reduction": reduction}
    before = x.copy()
    loss, grad = cecore.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)
    np.testing.assert_array_equal(x, before)
    # the loss-only kernel multiplies by w in another order: equal to rounding
    np.testing.assert_allclose(loss, cecore.binary_cross_entropy_with_logits(x, t, **kw),
                               rtol=4 * np.finfo(dtype).eps, atol=0)
    assert grad.shape == x.shape and grad.dtype == dtype
    # (1 + (p-1) t) sigmoid(x) - p t cancels for good predictions: absolute
    # error of a few ulps of its terms (<= ~6 w), scaled like the gradient
    scale = 1 / x.size if reduction == "mean" else 1.0
    tol = ({"rtol": 1e-13, "atol": 1e-15 * scale} if dtype == np.float64
           else {"rtol": 2e-6, "atol": 2e-6 * scale})
    np.testing.assert_allclose(grad, ref.binary_cross_entropy_with_logits_grad(x, t, **kw),
                               **tol)
    inplace = x.copy()
    _, g2 = cecore.binary_cross_entropy_with_logits(inplace, t, return_grad=True, out=inplace,
                                                    **kw)
    assert g2 is inplace
    np.testing.assert_array_equal(inplace, grad)
    try:  # the checks above ran: a missing torch must not report them as skipped
        import torch
    except ImportError:
        return
    if dtype == np.float64:
        tx = torch.tensor(x, requires_grad=True)
        tw = None if weight is None else torch.as_tensor(np.asarray(weight, np.float64))
        torch.nn.functional.binary_cross_entropy_with_logits(
            tx, torch.tensor(t), weight=tw, pos_weight=torch.tensor(pos_weight),
            reduction=reduction).sum().backward()
        np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("eps", [0.0, 0.1], ids=["nosmooth", "smooth"])
@pytest.mark.parametrize("k", [6, 40], ids=["short-row", "long-row"])
def test_cross_entropy_gradient_special_values_match_torch(rng, eps, k):
    # -inf masks get a finite gradient (0 without smoothing); a +inf row is NaN
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(4, k))
    x[:, k - 2:] = -np.inf
    x[2, 1] = np.inf
    y = np.array([0, 1, 2, 3])
    loss, grad = cecore.cross_entropy(x, y, label_smoothing=eps, reduction="none",
                                      return_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tx, torch.from_numpy(y), label_smoothing=eps,
                                           reduction="none")
    tl.sum().backward()
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-13, atol=1e-16)
    assert np.all(np.isnan(grad[2]))
    assert np.all(np.isfinite(grad[[0, 1, 3]]))


@pytest.mark.parametrize("k", [2, 10, 17, 32])
def test_short_row_results_do_not_depend_on_position_in_batch(k):
    # rows of <= 32 classes are processed in groups of 16 (8 on AVX2); the rest
    # of a batch must get bitwise the same per-row result as inside a group
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((100, k)) * 3).astype(np.float32)
    t = rng.integers(0, k, 100)
    full = cecore.cross_entropy(x, t, reduction="none")
    for start in range(0, 95, 7):
        part = cecore.cross_entropy(x[start:start + 5], t[start:start + 5], reduction="none")
        np.testing.assert_array_equal(part, full[start:start + 5])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_row_sums_on_both_sides_of_the_fused_shift(dtype):
    """The AVX-512 row sum forms (x - max) log2(e) in one FMA for |max| <= 2^20,
    off by a constant that it takes out of the sum at the end, and by subtraction
    above: the loss (logsum + max - x_target, no rounding of lse) must match the
    float64 reference on both sides and for rows long enough for the SIMD blocks."""
    import ml_dtypes
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(7)
    offsets = [0.0, 3.0, *rng.uniform(-1500, 1500, 12)]  # 16-bit spacing <= 8 (bfloat16)
    if dtype == "float32":
        offsets += [12345.678, 2.0 ** 20 - 64, 2.0 ** 20, 2.0 ** 20 + 128, 3.3e6, 1.0e7, -5.0e5]
    for offset in offsets:
        x = (offset + rng.standard_normal((4, 203)) * 4).astype(np_dtype)
        y = rng.integers(0, 203, 4)
        x64 = x.astype(np.float64)
        m = x64.max(axis=1, keepdims=True)
        want = np.log(np.exp(x64 - m).sum(axis=1)) + m[:, 0] - x64[np.arange(4), y]
        got = cecore.cross_entropy(x, y, reduction="none")
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, err_msg=f"offset {offset}")
