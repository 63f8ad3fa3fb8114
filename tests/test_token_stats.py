"""cecore.token_stats, cecore.sequence_logprob and shift=True, against the float64
references of tests/_reference.py."""

import math
import pickle
import tracemalloc

import _reference
import numpy as np
import pytest
from _helpers import run_python_child

import cecore

FIELDS = ("logprob", "lse", "entropy", "argmax", "rank", "is_greedy", "mask")


def assert_stats(got, want, rtol, topk=0):
    for name in FIELDS + (("topk_indices", "topk_logprobs") if topk else ()):
        g, w = getattr(got, name), want[name]
        assert g.shape == w.shape, name
        if g.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)
    if not topk:
        assert got.topk_indices is None and got.topk_logprobs is None


def make(rng, shape, k, dtype=np.float32, ignore=0.1):
    z = (rng.standard_normal(shape + (k,)) * 3).astype(dtype)
    t = rng.integers(0, k, shape)
    t[rng.random(shape) < ignore] = -100
    return z, t


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("k", [1, 7, 33, 1000, 5000])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
def test_fields_match_reference(rng, dtype, rtol, k, temperature):
    z, t = make(rng, (4, 30), k, dtype)
    topk = min(k, 5)
    got = cecore.token_stats(z, t, temperature=temperature, topk=topk)
    want = _reference.token_stats(z, t, temperature=temperature, topk=topk)
    assert_stats(got, want, rtol, topk)
    result = np.float64 if dtype == np.float64 else np.float32
    for name in ("logprob", "lse", "entropy", "topk_logprobs"):
        assert getattr(got, name).dtype == result
    assert got.argmax.dtype == got.rank.dtype == got.topk_indices.dtype == np.int64
    assert got.mask.dtype == got.is_greedy.dtype == bool


def test_long_rows_and_rising_maxima(rng):
    # maxima rising from chunk to chunk (the row pass rescales its sums)
    z = (np.linspace(-30, 30, 20000)[None, :] + rng.standard_normal((6, 20000))).astype(np.float32)
    z[1] = z[1, ::-1]
    t = rng.integers(0, 20000, 6)
    assert_stats(cecore.token_stats(z, t, topk=30), _reference.token_stats(z, t, topk=30), 2e-6,
                 30)


def test_float16_is_computed_in_float32(rng):
    z, t = make(rng, (50,), 40, np.float16)
    got = cecore.token_stats(z, t)
    assert got.logprob.dtype == np.float32
    assert_stats(got, _reference.token_stats(z.astype(np.float32), t), 2e-6)


@pytest.mark.parametrize("k", [10, 300, 9000])
def test_topk_order_and_ties(rng, k):
    z = rng.integers(-3, 3, (40, k)).astype(np.float32)  # many ties
    t = rng.integers(0, k, 40)
    for topk in sorted({1, 2, min(k, 20), min(k, 128), min(k, 129), k}):
        got = cecore.token_stats(z, t, topk=topk)
        want = _reference.token_stats(z, t, topk=topk)
        assert_stats(got, want, 2e-6, topk)
        # decreasing log-probabilities, ties by increasing index
        lp, idx = got.topk_logprobs, got.topk_indices
        assert np.all((lp[:, :-1] > lp[:, 1:]) | ((lp[:, :-1] == lp[:, 1:])
                                                  & (idx[:, :-1] < idx[:, 1:])))


def test_special_rows():
    inf, nan = np.inf, np.nan
    z = np.array([
        [0.0, -inf, 1.0, -inf],       # -inf logits: probability 0, 0 log 0 = 0
        [-inf, -inf, -inf, -inf],     # all -inf
        [0.0, nan, 1.0, 2.0],         # NaN
        [0.0, inf, 1.0, inf],         # +inf
        [nan, 0.0, nan, 1.0],
        [3.0, 3.0, 1.0, 3.0],         # ties
    ])
    t = np.array([1, 2, 3, 0, 2, 3])
    for dtype in (np.float32, np.float64):
        got = cecore.token_stats(z.astype(dtype), t, topk=4)
        assert_stats(got, _reference.token_stats(z, t, topk=4), 1e-6, 4)
    assert got.logprob[0] == -inf and math.isfinite(got.entropy[0])
    assert got.lse[1] == -inf and math.isnan(got.logprob[1]) and math.isnan(got.entropy[1])
    assert math.isnan(got.lse[2]) and got.argmax[2] == 1 and got.rank[2] == 1
    assert got.lse[3] == inf and math.isnan(got.logprob[3]) and got.argmax[3] == 1
    assert got.argmax[4] == 0 and got.rank[4] == 1 and got.topk_indices[4].tolist() == [0, 2, 3, 1]
    assert got.argmax[5] == 0 and got.rank[5] == 2
    assert got.entropy[5] == pytest.approx(_reference.entropy(_reference.softmax(z[5])))


def test_nan_after_an_all_minus_inf_chunk():
    z = np.full((1, 9000), -np.inf, dtype=np.float32)
    z[0, 3] = np.nan
    z[0, 5000] = 1.0
    got = cecore.token_stats(z, np.array([5000]))
    assert math.isnan(got.lse[0]) and math.isnan(got.logprob[0]) and got.argmax[0] == 3


def test_ignored_positions():
    z = np.arange(12.0).reshape(3, 4)
    got = cecore.token_stats(z, np.array([0, 1, 7]), ignore_index=7, topk=2)
    assert got.mask.tolist() == [True, True, False]
    assert got.logprob[2] == got.lse[2] == got.entropy[2] == 0.0
    assert got.rank[2] == got.argmax[2] == -1 and not got.is_greedy[2]
    assert got.topk_indices[2].tolist() == [-1, -1] and got.topk_logprobs[2].tolist() == [0, 0]


def test_axis_and_layouts(rng):
    z, t = make(rng, (6, 5), 20, np.float64)
    want = cecore.token_stats(z, t, topk=3)
    moved = cecore.token_stats(np.moveaxis(z, -1, 0), t, axis=0, topk=3)
    fortran = cecore.token_stats(np.asfortranarray(z), t.astype(np.int16), topk=3)
    for got in (moved, fortran):
        for name in TokenStatsFields:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


TokenStatsFields = cecore.TokenStats._fields


def test_bitwise_identical_for_any_thread_count(rng):
    z, t = make(rng, (64, 40), 700)
    base = cecore.token_stats(z, t, topk=7, n_threads=1)
    seq = cecore.sequence_logprob(z, t, shift=True, n_threads=1)
    ev = cecore.Evaluator(topk=(1, 5), n_threads=1, shift=True)
    ev.update(z, t)
    for n in (2, 3, 4):
        got = cecore.token_stats(z, t, topk=7, n_threads=n)
        for name in TokenStatsFields:
            np.testing.assert_array_equal(getattr(got, name), getattr(base, name))
        for a, b in zip(cecore.sequence_logprob(z, t, shift=True, n_threads=n), seq, strict=True):
            np.testing.assert_array_equal(a, b)
        other = cecore.Evaluator(topk=(1, 5), n_threads=n, shift=True)
        other.update(z, t)
        assert other._totals() == ev._totals()


# ---------------------------------------------------------------- shift=True


@pytest.mark.parametrize("shape", [(3, 9), (9,), (2, 3, 6)])
def test_shift_equals_slicing_by_hand(rng, shape):
    z, t = make(rng, shape, 50)
    got = cecore.token_stats(z, t, shift=True, topk=4)
    want = cecore.token_stats(z[..., :-1, :], t[..., 1:], topk=4)
    for name in TokenStatsFields:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert got.logprob.shape == shape[:-1] + (shape[-1] - 1,)


def test_shift_makes_no_copy(rng):
    z, t = make(rng, (4, 256), 2000)  # 8 MB of logits
    cecore.token_stats(z, t, shift=True)  # warm up
    for call in (lambda: cecore.token_stats(z, t, shift=True),
                 lambda: cecore.sequence_logprob(z, t, shift=True),
                 lambda: cecore.Evaluator(shift=True).update(z, t),
                 lambda: cecore.cross_entropy(z, t, shift=True),
                 lambda: cecore.nll_loss(z, t, shift=True)):
        tracemalloc.start()
        call()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < z.nbytes / 20, peak
    # without shift, slicing by hand and copying would show
    tracemalloc.start()
    np.ascontiguousarray(z[:, :-1])
    assert tracemalloc.get_traced_memory()[1] > z.nbytes / 2
    tracemalloc.stop()


def test_shift_t_equals_one_counts_nothing(rng):
    z, t = make(rng, (3, 1), 5, ignore=0)
    got = cecore.token_stats(z, t, shift=True)
    assert got.logprob.shape == (3, 0)
    lp, n, greedy = cecore.sequence_logprob(z, t, shift=True)
    assert lp.tolist() == [0.0] * 3 and n.tolist() == [0] * 3 and greedy.all()
    assert math.isnan(cecore.cross_entropy(z, t, shift=True))
    ev = cecore.Evaluator(shift=True)
    ev.update(z, t)
    assert ev.count == 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda z, t: cecore.token_stats(z, t, shift=True, axis=0), "class axis last"),
        (lambda z, t: cecore.token_stats(z[0, 0], t[0, 0], shift=True), r"\(\.\.\., T, V\)"),
        (lambda z, t: cecore.token_stats(z[:, :0], t[:, :0], shift=True), "T >= 1"),
        (lambda z, t: cecore.token_stats(z, t[:, 1:], shift=True), "target has shape"),
        (lambda z, t: cecore.cross_entropy(z, t, shift=True, axis=0), "class axis last"),
        (lambda z, t: cecore.Evaluator(shift=True, axis=1).update(z, t), "class axis last"),
    ],
)
def test_shift_errors(rng, call, match):
    z, t = make(rng, (2, 4), 3)
    with pytest.raises(ValueError, match=match):
        call(z, t)


def test_shift_bad_target_is_named_in_the_unshifted_target(rng):
    z, t = make(rng, (3, 8), 10, ignore=0)
    t[2, 5] = 10
    for call in (cecore.token_stats, cecore.sequence_logprob, cecore.cross_entropy,
                 cecore.nll_loss):
        with pytest.raises(ValueError, match=r"target\[2, 5\] = 10 is out of range"):
            call(z, t, shift=True)
    with pytest.raises(ValueError, match=r"target\[2, 5\] = 10 is out of range"):
        cecore.Evaluator(shift=True).update(z, t)
    t[2, 5] = 3
    t[1, 0] = 99  # position 0 is never a shifted target
    cecore.token_stats(z, t, shift=True)


# ---------------------------------------------------------------- sequence_logprob


def test_sequence_logprob_is_the_sum_of_token_stats(rng):
    z, t = make(rng, (5, 3, 12), 40, np.float64, ignore=0.3)
    t[0, 1] = -100  # a sequence with nothing counted
    lp, n, greedy = cecore.sequence_logprob(z, t)
    stats = cecore.token_stats(z, t)
    np.testing.assert_allclose(lp, stats.logprob.sum(-1), rtol=1e-13)
    np.testing.assert_array_equal(n, stats.mask.sum(-1))
    np.testing.assert_array_equal(greedy, np.all(stats.is_greedy | ~stats.mask, axis=-1))
    assert lp.dtype == np.float64 and n.dtype == np.int64 and greedy.dtype == bool
    assert lp[0, 1] == 0 and n[0, 1] == 0 and greedy[0, 1]
    shifted = cecore.sequence_logprob(z, t, shift=True)
    by_hand = cecore.sequence_logprob(z[..., :-1, :], t[..., 1:])
    for a, b in zip(shifted, by_hand, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sequence_logprob_greedy_continuation():
    z = np.log(np.array([[[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]]]))
    lp, n, greedy = cecore.sequence_logprob(z, np.array([[-100, 0, 1]]))
    assert lp[0] == pytest.approx(math.log(0.3 * 0.5)) and n[0] == 2 and not greedy[0]
    lp, n, greedy = cecore.sequence_logprob(z, np.array([[0, 1, 0]]))
    assert lp[0] == pytest.approx(math.log(0.6 * 0.7 * 0.5)) and greedy[0]  # tie -> index 0
    lp32, _, _ = cecore.sequence_logprob(z.astype(np.float32), np.array([[0, 1, 0]]))
    assert lp32.dtype == np.float64


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"temperature": 0.0}, ValueError, "temperature must be positive and finite"),
        ({"temperature": -1.0}, ValueError, "temperature must be positive and finite"),
        ({"temperature": math.nan}, ValueError, "temperature must be positive and finite"),
        ({"temperature": math.inf}, ValueError, "temperature must be positive and finite"),
        ({"temperature": 1e-40}, ValueError, "too small for float32"),
        ({"temperature": "1"}, TypeError, "temperature must be a positive real number"),
        ({"temperature": None}, TypeError, "temperature must be a positive real number"),
        ({"topk": -1}, ValueError, "topk must be a non-negative integer"),
        ({"topk": 1.5}, TypeError, "topk must be a non-negative integer"),
        ({"topk": True}, TypeError, "topk must be a non-negative integer"),
        ({"topk": 6}, ValueError, r"topk = 6 is larger than the number of classes \(5\)"),
        ({"shift": 1}, TypeError, "shift must be True or False"),
        ({"ignore_index": 1.0}, TypeError, "ignore_index must be an integer"),
        ({"n_threads": 0}, ValueError, "n_threads must be >= 1"),
    ],
)
def test_bad_options(options, error, match):
    z = np.zeros((3, 5), dtype=np.float32)
    with pytest.raises(error, match=match):
        cecore.token_stats(z, np.zeros(3, dtype=int), **options)


def test_bad_targets():
    z = np.zeros((4, 10, 1000), dtype=np.float32)
    t = np.zeros((4, 10), dtype=np.int64)
    t[3, 7] = 1000
    with pytest.raises(ValueError, match=r"target\[3, 7\] = 1000 is out of range"):
        cecore.token_stats(z, t)
    with pytest.raises(ValueError, match=r"target\[3, 7\] = 1000 is out of range"):
        cecore.sequence_logprob(z, t)
    with pytest.raises(TypeError, match="integer class indices"):
        cecore.token_stats(z, t.astype(float))
    with pytest.raises(ValueError, match="target has shape"):
        cecore.token_stats(z, t[:, :3])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., T, V\)"):
        cecore.sequence_logprob(z[0, 0], t[0, 0])


def test_tokenstats_pickles(rng):
    z, t = make(rng, (3,), 4)
    stats = cecore.token_stats(z, t, topk=2)
    again = pickle.loads(pickle.dumps(stats))
    assert type(again) is cecore.TokenStats
    np.testing.assert_array_equal(again.topk_indices, stats.topk_indices)


# ---------------------------------------------------------------- losses with shift=True


@pytest.mark.parametrize("options", [{}, {"weight": "w", "label_smoothing": 0.2},
                                     {"ignore_index": 3}])
def test_cross_entropy_shift_equals_slicing_by_hand(rng, options):
    z, t = make(rng, (3, 7), 40, np.float64)
    if options.get("weight") == "w":
        options = {**options, "weight": rng.random(40) + 0.5}
    if "ignore_index" in options:
        t[t == -100] = 3
    sliced = (z[:, :-1], t[:, 1:])
    for reduction in ("none", "sum", "mean"):
        got = cecore.cross_entropy(z, t, shift=True, reduction=reduction, **options)
        want = cecore.cross_entropy(*sliced, reduction=reduction, **options)
        np.testing.assert_allclose(got, want, rtol=1e-13)
        assert np.shape(got) == np.shape(want)
        loss, grad = cecore.cross_entropy(z, t, shift=True, reduction=reduction,
                                          return_grad=True, **options)
        want_loss, want_grad = cecore.cross_entropy(*sliced, reduction=reduction,
                                                    return_grad=True, **options)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
        assert grad.shape == z.shape and grad.dtype == z.dtype
        np.testing.assert_allclose(grad[:, :-1], want_grad, rtol=1e-13, atol=1e-16)
        assert not grad[:, -1].any()
    out = np.full_like(z, 7.0)
    _, got = cecore.cross_entropy(z, t, shift=True, return_grad=True, out=out, **options)
    assert got is out and not out[:, -1].any()
    lp = _reference.log_softmax(z)
    nll_options = {k: v for k, v in options.items() if k != "label_smoothing"}
    np.testing.assert_allclose(cecore.nll_loss(lp, t, shift=True, **nll_options),
                               cecore.nll_loss(lp[:, :-1], t[:, 1:], **nll_options), rtol=1e-13)


def test_cross_entropy_shift_float32_is_identical_per_position(rng):
    z, t = make(rng, (2, 50), 100)
    np.testing.assert_array_equal(
        cecore.cross_entropy(z, t, shift=True, reduction="none"),
        cecore.cross_entropy(z[:, :-1], t[:, 1:], reduction="none"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_of_long_rows_with_masks_and_nan(rng, dtype):
    k = 10000
    z = rng.standard_normal((6, k)).astype(dtype)
    z[0, :9000] = -np.inf            # a skipped all -inf chunk; fewer finite than topk
    z[0, 9000:] = -np.inf
    z[0, [9500, 9990]] = 1.0
    z[1, :] = -np.inf                # all -inf: the top-k are the first indices
    z[2, 7000] = np.nan              # NaN in a later chunk: NaN first
    z[3, ::2] = -np.inf
    z[4] = np.round(z[4])            # ties across chunks
    t = np.array([9500, 3, 7000, 1, 5, 0])
    for topk in (1, 5, 20, 128, 200):
        got = cecore.token_stats(z, t, topk=topk)
        assert_stats(got, _reference.token_stats(z, t, topk=topk), 2e-6, topk)
    assert got.topk_indices[0, :4].tolist() == [9500, 9990, 0, 1]


_WIDEN_SCRIPT = """
import numpy as np, ml_dtypes, cecore
rng = np.random.default_rng(3)
for k in (1, 7, 16, 33, 1000, 4099):  # tails of the 8- and 16-lane loops
    x = (rng.standard_normal((5, k)) * 4).astype(np.float32)
    x[0, 0], x[1, -1] = -np.inf, 65504.0
    if k > 2:
        x[2, 1] = 1e-6  # float16 subnormal
    t = rng.integers(0, k, 5)
    for dtype in (ml_dtypes.bfloat16, np.float16):
        h = x.astype(dtype)
        got = cecore.token_stats(h, t, topk=min(k, 3))
        want = cecore.token_stats(h.astype(np.float32), t, topk=min(k, 3))
        for field in got._fields:
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field),
                                          err_msg=f"{dtype} k={k} {field}")
print("ok")
"""


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_16_bit_rows_are_widened_exactly_at_every_simd_level(level, tmp_path, monkeypatch):
    """The staged 16-bit row (SIMD widening per ISA) gives float32's results bit for bit."""
    monkeypatch.setenv("CECORE_SIMD", level)
    done = run_python_child(_WIDEN_SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
