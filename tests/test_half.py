"""16-bit input (bfloat16, float16) read natively by every function.

The contract (README, "16-bit input"): a 16-bit input gives the result of the
same values upcast to float32 (the kernels load 16-bit values and compute in
float32 exactly as for float32 input); reductions come back in float32,
elementwise results in the input's dtype (rounded once from float32) or in
float32 with ``dtype=np.float32``. Each kernel is checked at every SIMD level
the CPU has, against cecore's float32 result on the upcast values and against
the float64 reference.
"""

import tracemalloc

import _reference as ref
import numpy as np
import pytest
from _helpers import run_python_child

import cecore
from cecore import _binary_kernels, _config, _softmax_kernels, _token_kernels

ml_dtypes = pytest.importorskip("ml_dtypes")

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = [pytest.param(BF16, id="bf16"), pytest.param(F16, id="f16")]


def _supported_levels():
    best = _config.SIMD_LEVELS.index(_config.config()["simd_supported"])
    return list(_config.SIMD_LEVELS[: best + 1])


@pytest.fixture(params=_supported_levels())
def simd(request):
    """Run the test with the kernels of one SIMD level, then restore the default."""
    level = _config.SIMD_LEVELS.index(request.param)
    for module in (_softmax_kernels, _binary_kernels, _token_kernels):
        module.dispatch_init(level)
    yield request.param
    _config.init_dispatch()


def _logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _up(x):
    return np.asarray(x).astype(np.float32)


# shapes: rows longer than the block kernels' 32 classes, rows of the block
# kernels (K <= 32, with a partial last group), a long row (chunked), one row
SHAPES = [(37, 1000), (101, 10), (19, 32), (3, 5003), (1, 7)]


def _layouts(x):
    """The same logits contiguous, with a row stride (a column slice) and with
    the class axis first (a transposed view)."""
    n, k = x.shape
    wide = np.zeros((n, k + 5), x.dtype)
    wide[:, 2:k + 2] = x
    return {"contiguous": (x, -1), "strided": (wide[:, 2:k + 2], -1),
            "axis0": (np.ascontiguousarray(x.T), 0)}


def _within_an_ulp(got, want32, dtype):
    """got (16-bit) is want32 rounded to dtype, give or take one ulp of dtype
    (relative to the value; the subnormal step for the smallest values)."""
    info = ml_dtypes.finfo(dtype)
    tol = np.abs(want32) * float(info.eps) + float(info.smallest_subnormal)
    return bool(np.all(np.abs(_up(got) - want32) <= tol))


def _assert_f32_close(got, want):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_equals_float32_on_upcast_values(simd, dtype, shape, rng):
    x = _logits(rng, shape, dtype)
    y = rng.integers(0, shape[1], shape[0])
    y[::7] = -100
    w = rng.uniform(0.5, 2.0, shape[1])
    for layout, (xl, axis) in _layouts(x).items():
        for options in ({}, {"weight": w}, {"label_smoothing": 0.1}):
            for reduction in ("mean", "sum", "none"):
                got = cecore.cross_entropy(xl, y, axis=axis, reduction=reduction, **options)
                want = cecore.cross_entropy(_up(xl), y, axis=axis, reduction=reduction,
                                            **options)
                assert got.dtype == np.float32, (layout, options, reduction)
                _assert_f32_close(got, want)
        exact = ref.cross_entropy(_up(x).astype(np.float64), y)
        np.testing.assert_allclose(cecore.cross_entropy(xl, y, axis=axis), exact, rtol=1e-5)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("shape", [(37, 1000), (101, 10)], ids=["k1000", "k10"])
def test_gradient_in_input_dtype_and_rounded_once(simd, dtype, shape, rng):
    x = _logits(rng, shape, dtype)
    y = rng.integers(0, shape[1], shape[0])
    y[::5] = -100
    for options in ({}, {"label_smoothing": 0.2, "weight": rng.uniform(0.5, 2, shape[1])}):
        loss, grad = cecore.cross_entropy(x, y, return_grad=True, **options)
        loss32, grad32 = cecore.cross_entropy(_up(x), y, return_grad=True, **options)
        assert loss.dtype == np.float32 and grad.dtype == dtype and grad.shape == x.shape
        _assert_f32_close(loss, loss32)
        # within one ulp of the 16-bit type of the float32 gradient (rounded once;
        # the exp polynomial may differ from float32's hand-written one by an ulp)
        assert _within_an_ulp(grad, grad32, dtype)
        exact = ref.cross_entropy_grad(_up(x).astype(np.float64), y, **options)
        info = ml_dtypes.finfo(dtype)
        np.testing.assert_allclose(_up(grad), exact, rtol=float(info.eps),
                                   atol=float(info.smallest_subnormal))
        assert np.all(grad[y == -100] == 0)


@pytest.mark.parametrize("dtype", HALVES)
def test_gradient_into_the_logits_themselves(dtype, rng):
    x = _logits(rng, (50, 40), dtype)
    y = rng.integers(0, 40, 50)
    _, want = cecore.cross_entropy(x, y, return_grad=True)
    buf = x.copy()
    _, got = cecore.cross_entropy(buf, y, return_grad=True, out=buf)
    assert got is buf
    np.testing.assert_array_equal(_up(got), _up(want))


@pytest.mark.parametrize("dtype", HALVES)
def test_probability_targets(simd, dtype, rng):
    x = _logits(rng, (30, 50), dtype)
    t = rng.dirichlet(np.ones(50), 30)
    t[:, :5] = 0
    x[:, :5] = -np.inf
    for target in (t, t.astype(np.float32), t.astype(dtype)):
        got = cecore.cross_entropy(x, target, label_smoothing=0.0)
        want = cecore.cross_entropy(_up(x), np.asarray(target).astype(np.float32))
        assert got.dtype == np.float32
        _assert_f32_close(got, want)
    loss, grad = cecore.cross_entropy(x, t, return_grad=True)
    assert grad.dtype == dtype


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_softmax_family(simd, dtype, shape, rng):
    x = _logits(rng, shape, dtype)
    for layout, (xl, axis) in _layouts(x).items():
        lse = cecore.logsumexp(xl, axis=axis)
        assert lse.dtype == np.float32, layout
        _assert_f32_close(lse, cecore.logsumexp(_up(xl), axis=axis))
        np.testing.assert_allclose(lse, ref.logsumexp(_up(xl), axis=axis), rtol=1e-5,
                                   atol=1e-5)
        for name in ("log_softmax", "softmax"):
            f = getattr(cecore, name)
            got = f(xl, axis=axis)
            want32 = f(_up(xl), axis=axis)
            assert got.dtype == dtype and got.shape == xl.shape
            assert _within_an_ulp(got, want32, dtype), (layout, name)
            as32 = f(xl, axis=axis, dtype=np.float32)
            assert as32.dtype == np.float32
            # the float32 arithmetic of float32 input, up to the order in which the
            # compiler's vector loops add a row's exponentials
            np.testing.assert_allclose(as32, want32, rtol=1e-6, atol=1e-38)
            exact = getattr(ref, name)(_up(xl).astype(np.float64), axis=axis)
            np.testing.assert_allclose(as32, exact, rtol=2e-5, atol=1e-6)


def test_dtype_argument_follows_pytorch(rng):
    x = _logits(rng, (4, 9), np.float32)
    # other dtypes: the input is cast to dtype first, as torch's dtype= does
    got = cecore.log_softmax(x, dtype=np.float64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, cecore.log_softmax(x.astype(np.float64)))
    got = cecore.softmax(x, dtype=BF16)
    assert got.dtype == BF16
    np.testing.assert_array_equal(_up(got), _up(cecore.softmax(x.astype(BF16))))
    with pytest.raises(TypeError, match="dtype must be"):
        cecore.softmax(x, dtype=np.int32)
    with pytest.raises(TypeError, match="dtype must be"):
        cecore.log_softmax(x, dtype="no such dtype")


@pytest.mark.parametrize("dtype", HALVES)
def test_nll_and_evaluator(simd, dtype, rng):
    x = _logits(rng, (200, 64), dtype)
    y = rng.integers(0, 64, 200)
    y[3] = -100
    x[7, :] = x[7, 0]  # ties: ranks go to the lower index
    lp = cecore.log_softmax(x)
    for reduction in ("mean", "none"):
        got = cecore.nll_loss(lp, y, reduction=reduction)
        assert got.dtype == np.float32
        _assert_f32_close(got, cecore.nll_loss(_up(lp), y, reduction=reduction))
    ev, ev32 = cecore.Evaluator(topk=(1, 5)), cecore.Evaluator(topk=(1, 5))
    for block in range(0, 200, 64):
        ev.update(x[block:block + 64], y[block:block + 64])
        ev32.update(_up(x[block:block + 64]), y[block:block + 64])
    got, want = ev.result(), ev32.result()
    assert got.keys() == want.keys()
    for key in got:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)


@pytest.mark.parametrize("dtype", HALVES)
def test_binary_cross_entropy(simd, dtype, rng):
    x = _logits(rng, (33, 70), dtype)
    t = (rng.random((33, 70)) < 0.3).astype(np.float32)
    w, pw = rng.uniform(0.5, 2, 70), rng.uniform(0.5, 3, 70)
    for reduction in ("mean", "none"):
        got = cecore.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw,
                                                      reduction=reduction)
        want = cecore.binary_cross_entropy_with_logits(_up(x), t, weight=w, pos_weight=pw,
                                                       reduction=reduction)
        assert got.dtype == np.float32  # a reduction, also for "none"
        _assert_f32_close(got, want)
    loss, grad = cecore.binary_cross_entropy_with_logits(x, t.astype(dtype), return_grad=True)
    _, grad32 = cecore.binary_cross_entropy_with_logits(_up(x), t, return_grad=True)
    assert grad.dtype == dtype
    assert _within_an_ulp(grad, grad32, dtype)
    p = cecore.softmax(x)  # probabilities in [0, 1], 16-bit
    for reduction in ("sum", "none"):
        got = cecore.binary_cross_entropy(p, t, reduction=reduction)
        assert got.dtype == np.float32
        _assert_f32_close(got, cecore.binary_cross_entropy(_up(p), t, reduction=reduction))


@pytest.mark.parametrize("dtype", HALVES)
def test_divergences(dtype, rng):
    p = rng.dirichlet(np.ones(40), 25).astype(dtype)
    q = rng.dirichlet(np.ones(40), 25).astype(dtype)
    p[0, :3] = 0
    for name, args in (("entropy", (p,)), ("cross_entropy_pq", (p, q)),
                       ("kl_divergence", (p, q))):
        got = getattr(cecore, name)(*args)
        want = getattr(cecore, name)(*(_up(a) for a in args))
        assert got.dtype == np.float32, name
        _assert_f32_close(got, want)
        exact = getattr(ref, name)(*(_up(a).astype(np.float64) for a in args))
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-7)
    # mixed dtypes: computed in the common type (float32 here)
    got = cecore.kl_divergence(p, _up(q))
    _assert_f32_close(got, cecore.kl_divergence(_up(p), _up(q)))


@pytest.mark.parametrize("dtype", HALVES)
def test_special_values_as_float32(simd, dtype):
    inf, nan = np.inf, np.nan
    rows = np.array([[0.0, 1.0, -inf, 2.0], [-inf] * 4, [1.0, inf, 0.0, 0.0],
                     [1.0, nan, 0.0, 0.0], [60000.0, 60000.0, -60000.0, 0.0]])
    x = rows.astype(dtype)
    y = np.array([0, 1, 0, 2, 1])
    for f in (cecore.logsumexp, lambda v: cecore.log_softmax(v, dtype=np.float32),
              lambda v: cecore.softmax(v, dtype=np.float32),
              lambda v: cecore.cross_entropy(v, y, reduction="none")):
        np.testing.assert_array_equal(f(x), f(_up(x)))
    np.testing.assert_array_equal(cecore.cross_entropy(x[:1], np.array([2])),
                                  cecore.cross_entropy(_up(x[:1]), np.array([2])))


@pytest.mark.parametrize("dtype", HALVES)
def test_bitwise_identical_for_any_thread_count(dtype, rng):
    x = _logits(rng, (2048, 300), dtype)
    y = rng.integers(0, 300, 2048)
    results = [cecore.cross_entropy(x, y, n_threads=t) for t in (1, 2, 3)]
    assert len({r.tobytes() for r in results}) == 1
    grads = [cecore.cross_entropy(x, y, return_grad=True, n_threads=t)[1] for t in (1, 2)]
    assert grads[0].tobytes() == grads[1].tobytes()
    lse = [cecore.logsumexp(x, n_threads=t) for t in (1, 2)]
    assert lse[0].tobytes() == lse[1].tobytes()


@pytest.mark.parametrize("dtype", HALVES)
def test_empty_batch(dtype):
    x = np.zeros((0, 5), dtype)
    assert cecore.cross_entropy(x, np.zeros(0, np.int64), reduction="none").shape == (0,)
    assert cecore.log_softmax(x).dtype == dtype
    assert cecore.logsumexp(x).dtype == np.float32


def test_inputs_are_not_modified(rng):
    x = _logits(rng, (20, 30), BF16)
    before = x.copy()
    cecore.cross_entropy(x, rng.integers(0, 30, 20), return_grad=True)
    cecore.softmax(x)
    np.testing.assert_array_equal(x.view(np.uint16), before.view(np.uint16))


def test_no_float32_copy_of_16_bit_logits(rng):
    x = _logits(rng, (4096, 4000), BF16)  # 32 MB
    y = rng.integers(0, 4000, 4096)
    cecore.cross_entropy(x, y)  # warm up
    tracemalloc.start()
    try:
        cecore.cross_entropy(x, y)
        cecore.Evaluator().update(x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # a float32 copy would be 64 MB


# ---------------------------------------------------------------- PyTorch


def _torch():
    return pytest.importorskip("torch")


def test_torch_bfloat16_tensor_through_plain_functions(rng):
    torch = _torch()
    t = torch.randn(300, 70, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, 70, (300,))
    from cecore._validation import asarray
    view = asarray(t, "logits")
    assert view.dtype == BF16
    assert view.__array_interface__["data"][0] == t.data_ptr()  # the tensor's own bytes
    got = cecore.cross_entropy(t, y)
    want = cecore.cross_entropy(t.detach().float().numpy(), y.numpy())
    _assert_f32_close(got, want)
    _assert_f32_close(cecore.logsumexp(t[:, ::2]),
                      cecore.logsumexp(t.detach().float()[:, ::2].numpy()))


def test_torch_tensor_on_another_device_is_named():
    torch = _torch()
    t = torch.empty(3, 4, device="meta")
    with pytest.raises(ValueError, match="logits is on device 'meta'"):
        cecore.cross_entropy(t, np.zeros(3, np.int64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cecore_torch_bfloat16_forward_and_backward(reduction):
    torch = _torch()
    import cecore.torch as ct

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 300, generator=gen) * 3).to(torch.bfloat16).requires_grad_()
    y = torch.randint(0, 300, (64,), generator=gen)
    y[::9] = -100
    loss = ct.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1)
    assert loss.dtype == torch.bfloat16  # as PyTorch's function returns it
    loss.sum().backward()
    grad = x.grad.clone()
    assert grad.dtype == torch.bfloat16
    x32 = x.detach().float().requires_grad_()
    want = torch.nn.functional.cross_entropy(x32, y, reduction=reduction, label_smoothing=0.1)
    want.sum().backward()
    # the loss is float32's rounded once to bfloat16, the gradient too
    torch.testing.assert_close(loss.float(), want.to(torch.bfloat16).float(), rtol=2**-7,
                               atol=1e-6)
    torch.testing.assert_close(grad.float(), x32.grad, rtol=2**-7, atol=1e-5)


def test_jax_arrays(tmp_path):
    """A JAX bfloat16 array through np.asarray, in a child process: importing JAX here
    would make the fork tests' children warn (JAX registers an at-fork hook)."""
    pytest.importorskip("jax")
    script = """
import numpy as np, jax.numpy as jnp, ml_dtypes, cecore
x = np.random.default_rng(0).standard_normal((50, 20)).astype(np.float32)
jx = jnp.asarray(x, dtype=jnp.bfloat16)
y = np.arange(50) % 20
a = np.asarray(jx)
assert a.dtype == np.dtype(ml_dtypes.bfloat16), a.dtype
got = cecore.cross_entropy(a, y)
want = cecore.cross_entropy(a.astype(np.float32), y)
assert abs(float(got) - float(want)) <= 1e-6 * abs(float(want)), (got, want)
print("ok")
"""
    proc = run_python_child(script, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("shift", [False, True])
def test_token_statistics_equal_float32_on_upcast_values(simd, dtype, shift, rng):
    """token_stats, sequence_logprob, the Evaluator's new metrics and shifted losses:
    16-bit rows are staged one at a time as float32, so the results are float32's."""
    x = _logits(rng, (3, 40, 70), dtype)
    y = rng.integers(0, 70, (3, 40))
    y[:, :4] = -100
    x32 = _up(x)
    got, want = cecore.token_stats(x, y, topk=4, shift=shift), \
        cecore.token_stats(x32, y, topk=4, shift=shift)
    assert got.logprob.dtype == np.float32
    for field in got._fields:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    for a, b in zip(cecore.sequence_logprob(x, y, shift=shift),
                    cecore.sequence_logprob(x32, y, shift=shift), strict=True):
        np.testing.assert_array_equal(a, b)
    ev, ev32 = cecore.Evaluator(topk=(1, 5), shift=shift), cecore.Evaluator(topk=(1, 5),
                                                                            shift=shift)
    ev.update(x, y, n_bytes=1000)
    ev32.update(x32, y, n_bytes=1000)
    assert ev.result() == ev32.result()
    if shift:
        loss, grad = cecore.cross_entropy(x, y, shift=True, return_grad=True)
        loss32, grad32 = cecore.cross_entropy(x32, y, shift=True, return_grad=True)
        assert loss.dtype == np.float32 and grad.dtype == dtype and grad.shape == x.shape
        _assert_f32_close(loss, loss32)
        assert _within_an_ulp(grad, grad32, dtype)
        lp = cecore.log_softmax(x)
        _assert_f32_close(cecore.nll_loss(lp, y, shift=True),
                          cecore.nll_loss(_up(lp), y, shift=True))


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("k", [7, 32, 100, 1037])
def test_gradient_is_the_float32_gradient_rounded_once(simd, dtype, k, rng):
    """Every gradient element but the target's (computed apart, in double) is the
    float32 kernel's value for the upcast logits, rounded to nearest even into the
    16-bit type: the hand-written 16-bit stores must round exactly as
    ml_dtypes/NumPy do, NaN rows included, for every row length and tail."""
    x = _logits(rng, (9, k), dtype, scale=4.0)
    x[3, k // 2] = np.nan
    x[5, :] = -np.inf
    x[5, 1] = 0.0
    y = rng.integers(0, k, 9)
    _, got = cecore.cross_entropy(x, y, return_grad=True, reduction="sum")
    _, g32 = cecore.cross_entropy(_up(x), y, return_grad=True, reduction="sum")
    want = g32.astype(dtype)
    off_target = np.ones(x.shape, bool)
    off_target[np.arange(9), y] = False
    np.testing.assert_array_equal(got.view(np.uint16)[off_target & ~np.isnan(_up(want))],
                                  want.view(np.uint16)[off_target & ~np.isnan(_up(want))])
    assert np.array_equal(np.isnan(_up(got)), np.isnan(_up(want)))


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("k", [5, 32, 77, 2051])
def test_log_softmax_is_its_float32_result_rounded_once(simd, dtype, k, rng):
    """log_softmax into the 16-bit type (hand-written on AVX-512) equals its
    dtype=float32 result (the portable loop) rounded to the 16-bit type, bit for
    bit: both are (x - shift) - logsum in double, rounded to float, then stored."""
    x = _logits(rng, (6, k), dtype, scale=5.0)
    x[2, k // 3] = np.nan
    x[4, :] = -np.inf
    x[4, 0] = 1.0
    got = cecore.log_softmax(x)
    want = cecore.log_softmax(x, dtype=np.float32).astype(dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(np.uint16)[~np.isnan(_up(want))],
                                  want.view(np.uint16)[~np.isnan(_up(want))])
    assert np.array_equal(np.isnan(_up(got)), np.isnan(_up(want)))
