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
