"""The compiled fast path of the common call (small plain arrays, default options).

cross_entropy(logits, target), logsumexp(x), log_softmax(x) and softmax(x) on a
small 2-D float32/float64 array with contiguous rows skip the Python layer's
checks. They must give the general path's results bit for bit and its errors
word for word: the general path is reached with the same inputs by passing an
option at a value equal to its default (n_threads=1, which small inputs use anyway).
"""

import numpy as np
import pytest

import cecore
from cecore import _softmax_kernels

FLOATS = [np.float32, np.float64]


def _general_ce(x, y):
    return cecore.cross_entropy(x, y, n_threads=1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (64, 100), (17, 32), (300, 7), (3, 5000)])
def test_cross_entropy_matches_the_general_path_bitwise(dtype, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    y[::3] = -100
    assert _softmax_kernels.ce_index_fast(x, y) is not None  # the fast path ran
    got, want = cecore.cross_entropy(x, y), _general_ce(x, y)
    assert type(got) is type(want) and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", FLOATS)
def test_row_strided_logits_take_the_fast_path(dtype, rng):
    wide = rng.standard_normal((50, 40)).astype(dtype)
    x = wide[:, 5:25]  # rows contiguous, row stride 40
    y = rng.integers(0, 20, 50)
    assert _softmax_kernels.ce_index_fast(x, y) is not None
    assert cecore.cross_entropy(x, y).tobytes() == _general_ce(x, y).tobytes()


def test_all_ignored_and_special_values(rng):
    x = np.array([[0.0, -np.inf, 1.0], [np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0]], np.float32)
    for y in ([-100, -100, -100], [0, 1, 2], [2, 1, 0]):
        y = np.array(y)
        got, want = cecore.cross_entropy(x, y), _general_ce(x, y)
        assert got.tobytes() == want.tobytes(), y


@pytest.mark.parametrize("bad", [5, -1, -101])
def test_a_bad_target_raises_the_general_error(bad, rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = np.zeros(10, np.int64)
    y[7] = bad
    with pytest.raises(ValueError) as fast:
        cecore.cross_entropy(x, y)
    with pytest.raises(ValueError) as general:
        _general_ce(x, y)
    assert str(fast.value) == str(general.value)
    assert "target[7]" in str(fast.value)


@pytest.mark.parametrize("call", [
    lambda x, y: cecore.cross_entropy(x, y[:-1]),  # a target too short
    lambda x, y: cecore.cross_entropy(x, y.astype(np.float32)),  # probabilities, wrong shape
    lambda x, y: cecore.cross_entropy(x, y, axis=True),
    lambda x, y: cecore.cross_entropy(x, y, label_smoothing=False),
    lambda x, y: cecore.cross_entropy(x, y, ignore_index=-100.0),
    lambda x, y: cecore.cross_entropy(x, y, reduction="avg"),
    lambda x, y: cecore.cross_entropy(x.astype(np.complex64), y),
])
def test_calls_that_are_not_the_common_one_still_raise(call, rng):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    with pytest.raises((TypeError, ValueError)):
        call(x, y)


@pytest.mark.parametrize("make", [
    lambda x: x.astype(">f4"),  # byte-swapped
    lambda x: np.asfortranarray(x),  # columns contiguous
    lambda x: x.astype(np.float16),
    lambda x: x.tolist(),
    lambda x: np.zeros((300, 200), np.float32),  # too large for one thread
])
def test_other_inputs_leave_the_fast_path(make, rng):
    x = make(rng.standard_normal((8, 6)).astype(np.float32))
    assert _softmax_kernels.ce_index_fast(x, np.zeros(len(x), np.int64)) is None
    assert _softmax_kernels.softmax_fast(x, 1) is None


def test_other_targets_leave_the_fast_path(rng):
    x = rng.standard_normal((8, 6)).astype(np.float32)
    want = _general_ce(x, np.zeros(8, np.int64))
    for y in (np.zeros(8, np.int32), np.zeros(8, ">i8"), np.zeros(16, np.int64)[::2], [0] * 8):
        assert _softmax_kernels.ce_index_fast(x, y) is None
        assert cecore.cross_entropy(x, y).tobytes() == want.tobytes()
    assert _softmax_kernels.ce_index_fast(x, np.zeros((8, 1), np.int64)) is None
    with pytest.raises(ValueError, match="target has shape"):
        cecore.cross_entropy(x, np.zeros((8, 1), np.int64))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, mode", [("logsumexp", 0), ("log_softmax", 1), ("softmax", 2)])
@pytest.mark.parametrize("shape", [(1, 1), (64, 100), (33, 9), (2, 4000)])
def test_softmax_family_matches_the_general_path_bitwise(dtype, name, mode, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x[0, 0] = -np.inf
    assert _softmax_kernels.softmax_fast(x, mode) is not None
    f = getattr(cecore, name)
    got, want = f(x), f(x, n_threads=1)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert not np.shares_memory(got, x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cecore_torch_common_call(dtype, rng):
    torch = pytest.importorskip("torch")
    import cecore.torch as ct

    x = torch.from_numpy((rng.standard_normal((64, 100)) * 3).astype(dtype))
    y = torch.from_numpy(rng.integers(0, 100, 64))
    got = ct.cross_entropy(x, y)
    assert got.dim() == 0 and got.dtype == x.dtype
    want = cecore.cross_entropy(x.numpy(), y.numpy(), n_threads=1)
    assert got.numpy().tobytes() == np.asarray(want).tobytes()
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(x, y))
    y[3] = 100
    with pytest.raises(ValueError, match=r"target\[3\] = 100 is out of range"):
        ct.cross_entropy(x, y)
    # with a gradient wanted, the autograd path runs
    xg = x.clone().requires_grad_()
    ct.cross_entropy(xg, y.clamp(max=99)).backward()
    assert xg.grad is not None


def _general_ce_grad(x, y):
    return cecore.cross_entropy(x, y, n_threads=1, return_grad=True)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (64, 100), (17, 32), (300, 7), (3, 5000)])
def test_loss_and_gradient_match_the_general_path_bitwise(dtype, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    y[::3] = -100
    assert _softmax_kernels.ce_index_grad_fast(x, y) is not None  # the fast path ran
    (loss, grad), (want_loss, want_grad) = (cecore.cross_entropy(x, y, return_grad=True),
                                            _general_ce_grad(x, y))
    assert type(loss) is type(want_loss) and loss.tobytes() == want_loss.tobytes()
    assert grad.dtype == want_grad.dtype and grad.shape == want_grad.shape
    assert grad.flags.c_contiguous and not np.shares_memory(grad, x)
    assert grad.tobytes() == want_grad.tobytes()


@pytest.mark.parametrize("dtype", FLOATS)
def test_gradient_of_row_strided_and_special_logits(dtype, rng):
    wide = (rng.standard_normal((50, 40)) * 3).astype(dtype)
    x = wide[:, 5:25]
    x[1, 3], x[2, 0], x[4, :] = -np.inf, np.nan, -np.inf
    y = rng.integers(0, 20, 50)
    for target in (y, np.full(50, -100)):  # all ignored: 1 / 0 scale, loss nan
        got, want = cecore.cross_entropy(x, target, return_grad=True), _general_ce_grad(x, target)
        for a, b in zip(got, want):
            _assert_same_bits_but_nan_signs(a, b)


def _assert_same_bits_but_nan_signs(a, b):
    """a and b bitwise equal, except that a NaN may have either sign: which of two NaNs
    a sum keeps depends on the order GCC gives the operands, which differs between the
    kernel's inlined copies (the general path's own, with and without a gradient, too)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(a)
    assert (nan == np.isnan(b)).all()
    assert a[~nan].tobytes() == b[~nan].tobytes()


@pytest.mark.parametrize("bad", [5, -1, -101])
def test_a_bad_target_with_a_gradient_raises_the_general_error(bad, rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = np.zeros(10, np.int64)
    y[7] = bad
    assert _softmax_kernels.ce_index_grad_fast(x, y) is None
    with pytest.raises(ValueError) as fast:
        cecore.cross_entropy(x, y, return_grad=True)
    with pytest.raises(ValueError) as general:
        _general_ce_grad(x, y)
    assert str(fast.value) == str(general.value)
    assert "target[7]" in str(fast.value)


def test_the_gradient_fast_path_leaves_other_inputs(rng):
    x = rng.standard_normal((8, 6)).astype(np.float32)
    for logits, target in ((np.asfortranarray(x), np.zeros(8, np.int64)),
                           (x.astype(np.float16), np.zeros(8, np.int64)),
                           (x, np.zeros(8, np.int32)), (x, np.zeros(9, np.int64)),
                           (np.zeros((300, 200), np.float32), np.zeros(300, np.int64))):
        assert _softmax_kernels.ce_index_grad_fast(logits, target) is None
    # return_grad=1 (not the bool) and out= go to the general path, with its results
    want = _general_ce_grad(x, np.zeros(8, np.int64))
    out = np.empty_like(x)
    got = cecore.cross_entropy(x, np.zeros(8, np.int64), return_grad=True, out=out)
    assert got[1] is out and out.tobytes() == want[1].tobytes()
    with pytest.raises(TypeError):
        cecore.cross_entropy(x, np.zeros(8, np.int64), return_grad=1)


def test_the_loss_as_a_0d_array(rng):
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 6, 8)
    scalar = _softmax_kernels.ce_index_fast(x, y)
    array = _softmax_kernels.ce_index_fast(x, y, True)
    assert type(array) is np.ndarray and array.shape == () and array.dtype == np.float32
    assert array.tobytes() == scalar.tobytes()
    loss, grad = _softmax_kernels.ce_index_grad_fast(x, y, True)
    assert type(loss) is np.ndarray and loss.tobytes() == scalar.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(64, 100), (1, 10), (5, 3)])
def test_cecore_torch_common_call_with_a_gradient(dtype, shape, rng):
    torch = pytest.importorskip("torch")
    import cecore.torch as ct

    base = torch.from_numpy((rng.standard_normal(shape) * 3).astype(dtype))
    y = torch.from_numpy(rng.integers(0, shape[1], shape[0]))
    y[::4] = -100
    x = base.clone().requires_grad_()
    loss = ct.cross_entropy(x, y)
    assert type(loss.grad_fn).__name__ == "_CommonCrossEntropyBackward"
    assert loss.dim() == 0 and loss.dtype == x.dtype and loss.requires_grad
    loss.backward()
    want_loss, want_grad = _general_ce_grad(base.numpy(), y.numpy())
    assert loss.detach().numpy().tobytes() == np.asarray(want_loss).tobytes()
    assert x.grad.numpy().tobytes() == want_grad.tobytes()
    # the general autograd path (a Parameter is not a plain Tensor) gives the same
    p = torch.nn.Parameter(base.clone())
    general = ct.cross_entropy(p, y)
    assert type(general.grad_fn).__name__ == "_CrossEntropyBackward"
    general.backward()
    assert general.detach().numpy().tobytes() == loss.detach().numpy().tobytes()
    assert p.grad.numpy().tobytes() == x.grad.numpy().tobytes()
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(base, y),
                               equal_nan=True)  # 1 x 10: its one target is ignored


def test_cecore_torch_common_call_backward_semantics(rng):
    torch = pytest.importorskip("torch")
    import cecore.torch as ct

    base = torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, 6))
    x = base.clone().requires_grad_()
    ct.cross_entropy(x, y).backward()
    g = x.grad.clone()
    x.grad = None
    (ct.cross_entropy(x, y) * 3).backward()  # grad_output 3
    torch.testing.assert_close(x.grad, 3 * g)
    x.grad = None
    loss = ct.cross_entropy(x, y)
    loss.backward(retain_graph=True)
    loss.backward()  # accumulated, not aliased with the saved gradient
    torch.testing.assert_close(x.grad, 2 * g)
    with pytest.raises(RuntimeError, match="once differentiable"):
        (gx,) = torch.autograd.grad(ct.cross_entropy(x, y), x, create_graph=True)
    # torch.no_grad: no graph; a bad target: the general path's error
    with torch.no_grad():
        assert ct.cross_entropy(x, y).grad_fn is None
    y[2] = 4
    with pytest.raises(ValueError, match=r"target\[2\] = 4 is out of range"):
        ct.cross_entropy(x, y)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("k", [33, 100, 257, 4096, 4097])
def test_rows_four_at_a_time_match_rows_one_at_a_time(dtype, k, rng):
    # a block's rows go through rows_lse four at a time (rows 0-3 and 4-7 here; 8-11
    # hold an all -inf row, so that group takes row_lse; row 12 is left over); a 1-row
    # call takes row_lse. Above 4,096 classes every row takes row_lse.
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    x = rng.standard_normal((13, k)) * 3
    x[5, 3] = np.nan
    x[6, :5] = x[6].max() + 1  # ties at the maximum
    x[7, :] = -6e4  # a large shift (float16 holds it)
    x[9, :] = -np.inf
    x[10, 0] = np.inf
    x = x.astype(dtype)
    y = rng.integers(0, k, 13)
    whole = [cecore.logsumexp(x), cecore.log_softmax(x),
             cecore.cross_entropy(x, y, reduction="none")]
    for i in range(len(x)):
        row = [cecore.logsumexp(x[i:i + 1]), cecore.log_softmax(x[i:i + 1]),
               cecore.cross_entropy(x[i:i + 1], y[i:i + 1], reduction="none")]
        for one, every in zip(row, whole):
            _assert_same_bits_but_nan_signs(one[0], every[i])
