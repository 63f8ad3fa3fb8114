"""cecore.linear_cross_entropy: cross_entropy(hidden @ weight.T + bias) in blocks of rows."""

import tracemalloc

import _reference
import numpy as np
import pytest

import cecore
import cecore._linear

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl is a test dependency
    threadpool_limits = None


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Single-threaded BLAS: these products are small, and on a busy machine waking BLAS
    threads for each block's product costs more than the product (measured: 35 ms per
    128 x 32 x 2048 product with 2 OpenBLAS threads under load, 0.4 ms with 1)."""
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def make_inputs(rng, batch_shape=(300,), d=24, v=50, dtype=np.float32, bias=True):
    hidden = rng.standard_normal((*batch_shape, d)).astype(dtype)
    weight = (rng.standard_normal((v, d)) * 0.5).astype(dtype)
    b = rng.standard_normal(v).astype(dtype) if bias else None
    target = rng.integers(0, v, batch_shape)
    target[rng.random(batch_shape) < 0.1] = -100
    return hidden, weight, b, target


def materialised(hidden, weight, bias, target, **options):
    """The reference: float64 logits, then cross_entropy."""
    logits = hidden.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        logits += bias
    return _reference.cross_entropy(logits, target, **options)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 10_000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_materialised_float32(rng, reduction, chunk_size, with_bias):
    hidden, weight, bias, target = make_inputs(rng, bias=with_bias)
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction=reduction,
                                      chunk_size=chunk_size)
    want = materialised(hidden, weight, bias, target, reduction=reduction)
    assert got.dtype == np.float32
    # float32 logits round to ~6e-8 relative; the loss of a row is a difference of
    # logit-sized terms, so compare at float32 rounding of the logits' size
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    same = cecore.cross_entropy(hidden @ weight.T + (0 if bias is None else bias), target,
                                reduction=reduction)
    np.testing.assert_allclose(got, same, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_materialised_float64(rng, reduction):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(4, 50), dtype=np.float64)
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction=reduction,
                                      chunk_size=16, ignore_index=-100)
    want = materialised(hidden, weight, bias, target, reduction=reduction)
    assert got.dtype == np.float64 and np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_ignore_index_may_be_a_class(rng):
    hidden, weight, bias, target = make_inputs(rng)
    target[target == -100] = 0
    for reduction in ("mean", "sum", "none"):
        got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, ignore_index=0,
                                          reduction=reduction, chunk_size=33)
        want = materialised(hidden, weight, bias, target, ignore_index=0, reduction=reduction)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    everything_ignored = np.full_like(target, -100)
    assert np.isnan(cecore.linear_cross_entropy(hidden, weight, everything_ignored))


def test_dtypes_are_promoted_together(rng):
    hidden, weight, bias, target = make_inputs(rng, dtype=np.float16)
    half = cecore.linear_cross_entropy(hidden, weight, target, bias=bias)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, materialised(hidden, weight, bias, target), rtol=2e-6)
    mixed = cecore.linear_cross_entropy(hidden.astype(np.float32), weight.astype(np.float64),
                                        target, bias=bias)
    assert mixed.dtype == np.float64
    np.testing.assert_allclose(mixed, materialised(hidden, weight, bias, target), rtol=1e-12)


def test_thread_count_does_not_change_the_result(rng):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(2000,), d=16, v=300)
    results = {float(cecore.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                 chunk_size=256, n_threads=n))
               for n in (1, 2, 3)}
    assert len(results) == 1


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(rng, reduction):
    hidden, weight, bias, target = make_inputs(rng, dtype=np.float64)
    want = torch.nn.functional.linear_cross_entropy(
        torch.from_numpy(hidden), torch.from_numpy(weight), torch.from_numpy(target),
        linear_bias=torch.from_numpy(bias), reduction=reduction, ignore_index=-100,
    ).numpy()
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction=reduction,
                                      chunk_size=40)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def peak_numpy_bytes(function):
    """Peak bytes traced by tracemalloc (NumPy reports its allocations to it) during a call."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_one_chunk_of_logits(rng, monkeypatch):
    n, d, v = 4096, 32, 2048
    hidden = rng.standard_normal((n, d), dtype=np.float32)
    weight = rng.standard_normal((v, d), dtype=np.float32)
    target = rng.integers(0, v, n)
    logits_bytes = n * v * 4  # 32 MiB if materialised
    chunk_bytes = 128 * v * 4  # 1 MiB
    peak = peak_numpy_bytes(lambda: cecore.linear_cross_entropy(hidden, weight, target,
                                                                chunk_size=128))
    assert peak < chunk_bytes + 256 * 1024  # the buffer, plus the targets and small change
    assert peak_numpy_bytes(lambda: cecore.cross_entropy(hidden @ weight.T, target)) \
        >= logits_bytes
    monkeypatch.setattr(cecore._linear, "CHUNK_BYTES", 2 << 20)  # the default chunk size
    peak = peak_numpy_bytes(lambda: cecore.linear_cross_entropy(hidden, weight, target))
    assert peak < (2 << 20) + 256 * 1024
    per_row = peak_numpy_bytes(lambda: cecore.linear_cross_entropy(
        hidden, weight, target, reduction="none"))
    assert per_row < (2 << 20) + n * 4 + 256 * 1024  # plus the (N,) losses returned


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"weight": np.zeros((50, 23))}, ValueError,
         r"weight must have shape \(V, 24\) to match hidden's last axis, got \(50, 23\)"),
        ({"weight": np.zeros(24)}, ValueError, r"weight must have shape \(V, 24\)"),
        ({"weight": np.zeros((0, 24))}, ValueError, "weight has zero rows"),
        ({"hidden": np.float32(1.0)}, ValueError, "hidden must have at least one dimension"),
        ({"hidden": np.zeros((300, 24), dtype=complex)}, TypeError, "hidden must be real"),
        ({"weight": np.zeros((50, 24), dtype=object)}, TypeError, "weight must be a real"),
        ({"bias": np.zeros(49)}, ValueError, r"bias must have shape \(50,\)"),
        ({"bias": "x"}, TypeError, "bias must be a real numeric array"),
        ({"target": np.zeros(300)}, ValueError, r"probability target has shape \(300,\)"),
        ({"target": np.zeros(300, complex)}, TypeError, "target must hold integer class"),
        ({"target": np.zeros(299, dtype=int)}, ValueError, r"target has shape \(299,\)"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"chunk_size": 1.5}, TypeError, "chunk_size must be an integer"),
        ({"ignore_index": None}, TypeError, "ignore_index must be an integer"),
        ({"n_threads": 0}, ValueError, "n_threads must be >= 1"),
    ],
)
def test_bad_arguments(rng, change, error, match):
    hidden, weight, bias, target = make_inputs(rng)
    arguments = {"hidden": hidden, "weight": weight, "target": target, "bias": bias, **change}
    with pytest.raises(error, match=match):
        cecore.linear_cross_entropy(arguments.pop("hidden"), arguments.pop("weight"),
                                    arguments.pop("target"), **arguments)


def test_target_out_of_range_is_reported_before_any_product(rng, monkeypatch):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(3, 100))
    target[2, 41] = 50

    def fail(*args, **kwargs):
        raise AssertionError("the product was computed")

    monkeypatch.setattr(cecore._linear.np, "matmul", fail)
    with pytest.raises(ValueError, match=r"target\[2, 41\] = 50 is out of range"):
        cecore.linear_cross_entropy(hidden, weight, target)


def test_exported():
    assert "linear_cross_entropy" in cecore.__all__


# ---------------------------------------------------------------- gradients (issue 15)


def reference_gradients(hidden, weight, bias, target, *, reduction="mean", ignore_index=-100,
                        label_smoothing=0.0, class_weight=None):
    """Closed form in float64: dZ = c softmax(z) - (1 - eps) w_y onehot - eps w / V,
    c = (1 - eps) w_y + eps sum(w) / V, over counted rows, divided by sum w_y for "mean";
    then dH = dZ W, dW = dZ^T H, db = sum dZ."""
    h = hidden.astype(np.float64).reshape(-1, hidden.shape[-1])
    w64 = weight.astype(np.float64)
    z = h @ w64.T + (0.0 if bias is None else bias.astype(np.float64))
    v = z.shape[1]
    cw = np.ones(v) if class_weight is None else np.asarray(class_weight, np.float64)
    t = target.reshape(-1)
    counted = t != ignore_index
    y = np.where(counted, t, 0)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    wy = cw[y] * counted
    eps = label_smoothing
    dz = ((1 - eps) * wy + eps * cw.sum() / v * counted)[:, None] * p
    dz[np.arange(len(t)), y] -= (1 - eps) * wy
    dz -= (eps / v) * cw[None, :] * counted[:, None]
    if reduction == "mean":
        dz /= wy.sum()
    return (dz @ w64).reshape(hidden.shape), dz.T @ h, (None if bias is None else dz.sum(0))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 10_000])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}, {"class_weight": "random"},
                                     {"label_smoothing": 0.1, "class_weight": "random",
                                      "ignore_index": 3}])
def test_gradients_match_the_closed_form(rng, reduction, chunk_size, with_bias, options):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(5, 41), dtype=np.float64,
                                               bias=with_bias)
    options = dict(options)
    if "ignore_index" in options:
        target[target == -100] = options["ignore_index"]
    if options.get("class_weight") == "random":
        options["class_weight"] = rng.random(weight.shape[0]) + 0.5
    loss, gh, gw, gb = cecore.linear_cross_entropy(
        hidden, weight, target, bias=bias, reduction=reduction, chunk_size=chunk_size,
        return_grad=True, **options)
    ref_options = {"weight" if k == "class_weight" else k: o for k, o in options.items()}
    z = hidden @ weight.T + (0.0 if bias is None else bias)
    np.testing.assert_allclose(loss, _reference.cross_entropy(z, target, reduction=reduction,
                                                              **ref_options),
                               rtol=1e-12, atol=1e-12)
    want = reference_gradients(hidden, weight, bias, target, reduction=reduction, **options)
    assert gh.shape == hidden.shape and gh.dtype == np.float64
    np.testing.assert_allclose(gh, want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, want[1], rtol=1e-10, atol=1e-12)
    if with_bias:
        np.testing.assert_allclose(gb, want[2], rtol=1e-10, atol=1e-12)
    else:
        assert gb is None


def test_gradients_match_finite_differences(rng):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(9,), d=3, v=5,
                                               dtype=np.float64)
    options = dict(bias=bias, label_smoothing=0.15, class_weight=np.array([1, 2, .5, 1, 3.]),
                   chunk_size=4)

    def loss_of(h, w, b):
        return float(cecore.linear_cross_entropy(h, w, target, **{**options, "bias": b}))

    _, gh, gw, gb = cecore.linear_cross_entropy(hidden, weight, target, return_grad=True,
                                                **options)
    for k, (arg, grad) in enumerate([(hidden, gh), (weight, gw), (bias, gb)]):
        numeric = np.zeros_like(arg)
        for i in np.ndindex(arg.shape):
            args = [hidden.copy(), weight.copy(), bias.copy()]
            args[k][i] += 1e-6
            up = loss_of(*args)
            args[k][i] -= 2e-6
            numeric[i] = (up - loss_of(*args)) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_float32_gradients_and_dtypes(rng):
    hidden, weight, bias, target = make_inputs(rng)
    loss, gh, gw, gb = cecore.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                   return_grad=True, chunk_size=64)
    assert (gh.dtype, gw.dtype, gb.dtype) == (np.float32,) * 3
    want = reference_gradients(hidden, weight, bias, target)
    for got, ref in zip((gh, gw, gb), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    half = cecore.linear_cross_entropy(hidden.astype(np.float16), weight, target,
                                       return_grad=True)[1]
    assert half.dtype == np.float16


@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_float16_hidden_gradients(rng, chunk_size):
    """16-bit rows: converted a chunk at a time, the weight gradient's product added
    through the float32 chunk of hidden gradient rows (not grad_hidden itself)."""
    hidden, weight, bias, target = make_inputs(rng)
    half = hidden.astype(np.float16)
    loss, gh, gw, gb = cecore.linear_cross_entropy(half, weight, target, bias=bias,
                                                   return_grad=True, chunk_size=chunk_size)
    assert (gh.dtype, gw.dtype, gb.dtype) == (np.float16, np.float32, np.float32)
    want = reference_gradients(half, weight, bias, target)
    np.testing.assert_allclose(gh, want[0], rtol=2e-3, atol=1e-5)
    for got, ref in zip((gw, gb), want[1:]):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_probability_targets(rng):
    hidden, weight, bias, _ = make_inputs(rng, batch_shape=(3, 20), dtype=np.float64)
    probs = rng.random((3, 20, weight.shape[0]))
    probs /= probs.sum(-1, keepdims=True)
    cw = rng.random(weight.shape[0]) + 0.5
    z = hidden @ weight.T + bias
    for reduction in ("mean", "sum", "none"):
        loss, gh, gw, gb = cecore.linear_cross_entropy(
            hidden, weight, probs, bias=bias, class_weight=cw, label_smoothing=0.1,
            reduction=reduction, chunk_size=7, return_grad=True)
        want, gz = cecore.cross_entropy(z, probs, weight=cw, label_smoothing=0.1,
                                        reduction=reduction, return_grad=True)
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        np.testing.assert_allclose(loss, _reference.cross_entropy(
            z, probs, weight=cw, label_smoothing=0.1, reduction=reduction), rtol=1e-10)
        gz = gz.reshape(-1, weight.shape[0])
        np.testing.assert_allclose(gh.reshape(-1, 24), gz @ weight, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gw, gz.T @ hidden.reshape(-1, 24), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gb, gz.sum(0), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_shift_is_slicing_by_hand(rng, reduction):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(3, 17), dtype=np.float64)
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, shift=True,
                                      reduction=reduction, chunk_size=5, return_grad=True)
    h, t = hidden[:, :-1], target[:, 1:]
    want = cecore.linear_cross_entropy(h, weight, t, bias=bias, reduction=reduction,
                                       return_grad=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    assert np.shape(got[0]) == ((3, 16) if reduction == "none" else ())
    assert got[1].shape == hidden.shape
    np.testing.assert_allclose(got[1][:, :-1], want[1], rtol=1e-12, atol=1e-15)
    assert not got[1][:, -1].any()
    for a, b in zip(got[2:], want[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    # T = 1 counts nothing; a bad target is named at its own index
    assert np.isnan(cecore.linear_cross_entropy(hidden[:, :1], weight, target[:, :1],
                                                shift=True))
    target[1, 5] = 99
    with pytest.raises(ValueError, match=r"target\[1, 5\] = 99"):
        cecore.linear_cross_entropy(hidden, weight, target, shift=True)
    target[1, 5] = 3
    target[2, 0] = 99  # never predicted: not checked
    cecore.linear_cross_entropy(hidden, weight, target, shift=True)


def test_gradients_do_not_depend_on_the_thread_count(rng):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(700,), d=16, v=300)
    results = [cecore.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=256,
                                           return_grad=True, label_smoothing=0.1, n_threads=n)
               for n in (1, 2, 3)]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_inputs_are_not_modified(rng):
    hidden, weight, bias, target = make_inputs(rng)
    copies = [a.copy() for a in (hidden, weight, bias, target)]
    cecore.linear_cross_entropy(hidden, weight, target, bias=bias, return_grad=True,
                                shift=False, chunk_size=10)
    for a, b in zip((hidden, weight, bias, target), copies):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("n, v, d", [(1024, 16_384, 16), (16_384, 1_024, 16),
                                     (4_096, 8_192, 8), (8_192, 20_000, 4)])
def test_default_chunk_keeps_the_memory_rule(rng, n, v, d):
    """Peak extra memory (the outputs aside) <= min(64 MB, N V itemsize / 8) for N V >= 2^24,
    forward and forward + backward."""
    assert n * v >= 1 << 24
    hidden = rng.standard_normal((n, d), dtype=np.float32)
    weight = rng.standard_normal((v, d), dtype=np.float32)
    bias = rng.standard_normal(v, dtype=np.float32)
    target = rng.integers(0, v, n)
    bound = min(64 << 20, n * v * 4 // 8)
    peak = peak_numpy_bytes(lambda: cecore.linear_cross_entropy(hidden, weight, target,
                                                                bias=bias))
    assert peak <= bound
    outputs = (n * d + v * d + v) * 4 + v * 8  # the gradients (and the bias's float64 sum)
    peak = peak_numpy_bytes(lambda: cecore.linear_cross_entropy(
        hidden, weight, target, bias=bias, return_grad=True))
    assert peak - outputs <= bound
    assert cecore._linear.memory_budget(n, v, 4) == bound


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be in \[0, 1\]"),
        ({"label_smoothing": "x"}, TypeError, "label_smoothing must be"),
        ({"class_weight": np.ones(49)}, ValueError, r"class_weight must have shape \(50,\)"),
        ({"class_weight": "x"}, TypeError, "class_weight must be"),
        ({"z_loss": -1.0}, ValueError, "z_loss must be a finite float >= 0"),
        ({"z_loss": float("nan")}, ValueError, "z_loss must be a finite float >= 0"),
        ({"z_loss": float("inf")}, ValueError, "z_loss must be a finite float >= 0"),
        ({"z_loss": "x"}, TypeError, "z_loss must be"),
        ({"softcap": 0.0}, ValueError, "softcap must be None or a positive finite float"),
        ({"softcap": -3.0}, ValueError, "softcap must be None or a positive finite float"),
        ({"softcap": float("nan")}, ValueError, "softcap must be None or a positive finite"),
        ({"softcap": 1e-300}, ValueError, "softcap must be a normal"),
        ({"softcap": "x"}, TypeError, "softcap must be"),
        ({"shift": 1}, TypeError, "shift must be True or False"),
        ({"return_grad": "yes"}, TypeError, "return_grad must be True or False"),
        ({"shift": True, "hidden": np.zeros(24), "target": np.array(1)}, ValueError,
         r"shift=True needs hidden of shape \(..., T, D\)"),
        ({"shift": True, "target": np.zeros((300, 50))}, ValueError, "shift=True needs class"),
        ({"target": np.zeros((300, 50)), "ignore_index": 0}, ValueError,
         "ignore_index is not supported for probability targets"),
    ],
)
def test_bad_new_arguments(rng, change, error, match):
    hidden, weight, bias, target = make_inputs(rng)
    arguments = {"hidden": hidden, "weight": weight, "target": target, "bias": bias, **change}
    with pytest.raises(error, match=match):
        cecore.linear_cross_entropy(arguments.pop("hidden"), arguments.pop("weight"),
                                    arguments.pop("target"), **arguments)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{"z_loss": 1e-2}, {"softcap": 3.0},
                                     {"z_loss": 0.05, "softcap": 2.5, "label_smoothing": 0.1,
                                      "class_weight": "random"}])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_z_loss_and_softcap_match_cross_entropy_of_the_logits(rng, reduction, options,
                                                              chunk_size):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(4, 29), dtype=np.float64)
    hidden *= 4  # logits well beyond the caps
    options = dict(options)
    if options.get("class_weight") == "random":
        options["class_weight"] = rng.random(weight.shape[0]) + 0.5
    loss, gh, gw, gb = cecore.linear_cross_entropy(
        hidden, weight, target, bias=bias, reduction=reduction, chunk_size=chunk_size,
        return_grad=True, **options)
    ce_options = {"weight" if k == "class_weight" else k: o for k, o in options.items()}
    z = hidden @ weight.T + bias
    want, _ = _reference.cross_entropy_train(z, target, reduction=reduction, **ce_options)
    np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-13)
    # the logits' gradient from cross_entropy (tested against finite differences there)
    _, dz = cecore.cross_entropy(z.reshape(-1, z.shape[-1]), target.reshape(-1),
                                 reduction=reduction, return_grad=True, **ce_options)
    h = hidden.reshape(-1, hidden.shape[-1])
    np.testing.assert_allclose(gh, (dz @ weight).reshape(hidden.shape), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(gw, dz.T @ h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, dz.sum(0), rtol=1e-10, atol=1e-12)


def test_z_loss_and_softcap_gradients_match_finite_differences(rng):
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(7,), d=3, v=6,
                                               dtype=np.float64)
    hidden *= 3
    options = dict(z_loss=0.1, softcap=2.0, chunk_size=3)

    def loss_of(h, w, b):
        return float(cecore.linear_cross_entropy(h, w, target, bias=b, **options))

    _, gh, gw, gb = cecore.linear_cross_entropy(hidden, weight, target, bias=bias,
                                                return_grad=True, **options)
    for k, (arg, grad) in enumerate([(hidden, gh), (weight, gw), (bias, gb)]):
        numeric = np.zeros_like(arg)
        for i in np.ndindex(arg.shape):
            args = [hidden.copy(), weight.copy(), bias.copy()]
            args[k][i] += 1e-6
            up = loss_of(*args)
            args[k][i] -= 2e-6
            numeric[i] = (up - loss_of(*args)) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_z_loss_and_softcap_with_probability_targets(rng):
    hidden, weight, bias, _ = make_inputs(rng, batch_shape=(33,), dtype=np.float64)
    probs = rng.random((33, weight.shape[0]))
    probs /= probs.sum(1, keepdims=True)
    loss = cecore.linear_cross_entropy(hidden * 3, weight, probs, bias=bias, z_loss=0.02,
                                       softcap=1.5, chunk_size=5)
    want, _ = _reference.cross_entropy_train(hidden * 3 @ weight.T + bias, probs,
                                             z_loss=0.02, softcap=1.5)
    np.testing.assert_allclose(loss, want, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_gemm_add_matches_matmul(rng, dtype):
    """cecore._blas.gemm_add (NumPy's own BLAS, beta = 1) on every layout it accepts,
    against float64 matmul; layouts it does not accept are refused (False)."""
    from cecore import _blas

    if _blas._functions() is None:
        pytest.skip("NumPy's bundled OpenBLAS not found (the buffered path is used)")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for m, k, n in [(7, 5, 3), (1, 4, 6), (6, 1, 2), (3, 3, 1), (40, 33, 17)]:
        a_forms = [rng.standard_normal((m, k)).astype(dtype),
                   rng.standard_normal((k, m)).astype(dtype).T,
                   rng.standard_normal((m, k + 4)).astype(dtype)[:, 2:k + 2]]
        b_forms = [rng.standard_normal((k, n)).astype(dtype),
                   rng.standard_normal((n, k)).astype(dtype).T]
        for a in a_forms:
            for b in b_forms:
                out = rng.standard_normal((m, n)).astype(dtype)
                want = out.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
                assert _blas.gemm_add(out, a, b)
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol * k)
    out = np.zeros((4, 4), dtype)
    assert not _blas.gemm_add(out, np.ones((4, 8), dtype)[:, ::2], np.ones((4, 4), dtype))
    assert not _blas.gemm_add(out, np.ones((4, 4), np.float16), np.ones((4, 4), np.float16))
    assert not _blas.gemm_add(out[:, ::2], np.ones((4, 4), dtype), np.ones((4, 2), dtype))


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_gradients_without_the_blas_accumulation(rng, monkeypatch, chunk_size):
    """The buffered weight-gradient path (no BLAS beta = 1): same gradients."""
    hidden, weight, bias, target = make_inputs(rng, dtype=np.float64)
    want = reference_gradients(hidden, weight, bias, target)
    monkeypatch.setattr(cecore._linear._blas, "gemm_add", lambda out, a, b: False)
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, return_grad=True,
                                      chunk_size=chunk_size)[1:]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def force_class_chunks(monkeypatch, calls):
    """A budget small enough that the default forward pass of make_inputs-sized calls
    chunks over classes, and a record of the widths it used."""
    monkeypatch.setattr(cecore._linear, "SMALL_LOGITS", 0)
    monkeypatch.setattr(cecore._linear, "SMALL_CHANGE", 0)
    chunk_loss = cecore._linear._class_chunk_loss

    def recorded(rows, w, bias, targets, width, *args):
        calls.append(width)
        return chunk_loss(rows, w, bias, targets, width, *args)

    monkeypatch.setattr(cecore._linear, "_class_chunk_loss", recorded)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"z_loss": 1e-2}, {"class_weight": "random"},
                                     {"shift": True}, {"ignore_index": 3}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_chunked_over_classes_matches_materialised(rng, monkeypatch, reduction,
                                                          options, dtype):
    """Fewer rows than classes: the default forward pass projects a slice of classes at a
    time over all rows and merges the rows' log-sum-exps; same losses as the logits'."""
    calls = []
    force_class_chunks(monkeypatch, calls)
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(6, 40), d=16, v=700,
                                               dtype=dtype)
    options = dict(options)
    if options.get("class_weight") == "random":
        options["class_weight"] = rng.random(700) + 0.5
    if "ignore_index" in options:
        target[target == -100] = options["ignore_index"]
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction=reduction,
                                      **options)
    assert calls and 1 <= calls[0] < 700  # more than one chunk of classes
    z = hidden.astype(np.float64) @ weight.astype(np.float64).T + bias
    t = target
    ref = {k: options[k] for k in ("class_weight", "ignore_index") if k in options}
    if "class_weight" in ref:
        ref["weight"] = ref.pop("class_weight")
    if options.get("shift"):
        z, t = z[:, :-1], target[:, 1:]
    want = _reference.cross_entropy(z, t, reduction="none", **ref)
    if "z_loss" in options:
        lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        counted = t != ref.get("ignore_index", -100)
        want = want + np.where(counted, options["z_loss"] * lse ** 2, 0.0)
    if reduction != "none":
        counted = t != ref.get("ignore_index", -100)
        wy = ref["weight"][np.where(counted, t, 0)] if "weight" in ref else np.ones(t.shape)
        want = want.sum() / (np.sum(wy[counted]) if reduction == "mean" else 1.0)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert np.asarray(got).dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # and the row-chunked pass (an explicit chunk_size) agrees to rounding
    rows = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction=reduction,
                                       chunk_size=50, **options)
    assert len(calls) == 1
    np.testing.assert_allclose(got, rows, rtol=tol, atol=tol)


def test_forward_chunked_over_classes_keeps_nan_and_the_row_rule(rng, monkeypatch):
    """A NaN row stays NaN (the others do not see it); options the class chunks do not
    cover (label smoothing, soft cap, probability targets, gradients) keep row chunks."""
    calls = []
    force_class_chunks(monkeypatch, calls)
    hidden, weight, bias, target = make_inputs(rng, batch_shape=(200,), d=16, v=700)
    hidden[5, 3] = np.nan
    target[5] = 1
    got = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction="none")
    assert len(calls) == 1
    rows = cecore.linear_cross_entropy(hidden, weight, target, bias=bias, reduction="none",
                                       chunk_size=64)
    assert np.isnan(got[5]) and np.isnan(rows[5])
    np.testing.assert_allclose(np.delete(got, 5), np.delete(rows, 5), rtol=2e-6, atol=2e-6)
    probs = rng.dirichlet(np.ones(700), 200)
    for kwargs in ({"label_smoothing": 0.1}, {"softcap": 5.0}, {"return_grad": True},
                   {"target": probs}):
        kwargs = {"target": target, **kwargs}
        cecore.linear_cross_entropy(hidden, weight, bias=bias, **kwargs)
    assert len(calls) == 1
