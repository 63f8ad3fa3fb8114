"""cecore.Comparison: llama.cpp's KL-divergence statistics of two sets of logits.

The expected statistics are computed here from per-position values of a float64
log-softmax (tests/_reference.py) with direct NumPy formulas (two-pass
variances, numpy.percentile, numpy.corrcoef), independently of how cecore
computes them, so these tests check the fused per-position kernel too.
"""

import math
import pickle
from fractions import Fraction

import _reference as ref_impl
import numpy as np
import pytest
from ml_dtypes import bfloat16

import cecore
from cecore import _comparison

ISSUE_KEYS = (
    ["kl_mean", "kl_mean_stderr", "kl_max", "kl_p99.9", "kl_p99", "kl_p95", "kl_p90",
     "kl_median", "kl_p10", "kl_p5", "kl_p1", "kl_p0.1", "kl_min"]
    + ["dp_mean", "dp_mean_stderr", "dp_rms", "dp_max", "dp_p99.9", "dp_p99", "dp_p95",
       "dp_p90", "dp_median", "dp_p10", "dp_p5", "dp_p1", "dp_p0.1", "dp_min"]
    + ["same_top", "same_top_stderr", "ppl", "ref_ppl", "ppl_ratio", "ppl_ratio_stderr",
       "ln_ppl_ratio", "logprob_corr", "count"]
)
# beyond the issue's list: the other numbers llama.cpp's report prints
EXTRA_KEYS = ["ppl_stderr", "ref_ppl_stderr", "ln_ppl_ratio_stderr", "ppl_diff",
              "ppl_diff_stderr", "dp_p75", "dp_p25", "dp_rms_stderr"]
PERCENTILES = {"max": 100, "p99.9": 99.9, "p99": 99, "p95": 95, "p90": 90, "p75": 75,
               "median": 50, "p25": 25, "p10": 10, "p5": 5, "p1": 1, "p0.1": 0.1, "min": 0}


def rows_of(logits, ref, target, axis=-1, ignore_index=-100, shift=False):
    """Per counted position, in float64: KL(r || p), log p(t), log r(t), same argmax."""
    z = np.moveaxis(ref_impl._f64(logits), axis, -1)
    r = np.moveaxis(ref_impl._f64(ref), axis, -1)
    t = np.asarray(target)
    if shift:
        z, r, t = z[..., :-1, :], r[..., :-1, :], t[..., 1:]
    k = z.shape[-1]
    z, r, t = z.reshape(-1, k), r.reshape(-1, k), t.reshape(-1)
    keep = t != ignore_index
    z, r, t = z[keep], r[keep], t[keep]
    lp, lr = ref_impl.log_softmax(z), ref_impl.log_softmax(r)
    pr = np.exp(lr)
    with np.errstate(invalid="ignore"):
        kl = np.where(pr > 0, pr * (lr - lp), 0.0).sum(axis=-1)
    i = np.arange(len(t))
    return kl, lp[i, t], lr[i, t], np.argmax(z, -1) == np.argmax(r, -1)


def expected_stats(kl, a, b, same):
    """llama.cpp's statistics from per-position values, by direct formulas."""
    n = len(kl)
    dp = np.exp(a) - np.exp(b)

    def se(x):
        return np.std(x, ddof=1) / math.sqrt(n)

    ppl, ref_ppl = math.exp(-a.mean()), math.exp(-b.mean())
    cov = np.cov(a, b)[0, 1] / n  # llama.cpp's covariance(): population cov / (n - 1)
    ln_ratio_se = math.sqrt(se(a) ** 2 + se(b) ** 2 - 2 * cov)
    out = {
        "count": n, "ppl": ppl, "ppl_stderr": ppl * se(a), "ref_ppl": ref_ppl,
        "ref_ppl_stderr": ref_ppl * se(b), "logprob_corr": np.corrcoef(a, b)[0, 1],
        "ln_ppl_ratio": np.mean(b - a), "ln_ppl_ratio_stderr": ln_ratio_se,
        "ppl_ratio": ppl / ref_ppl, "ppl_ratio_stderr": ppl / ref_ppl * ln_ratio_se,
        "ppl_diff": ppl - ref_ppl,
        "ppl_diff_stderr": math.sqrt((ppl * se(a)) ** 2 + (ref_ppl * se(b)) ** 2
                                     - 2 * ppl * ref_ppl * cov),
        "kl_mean": kl.mean(), "kl_mean_stderr": se(kl),
        "dp_mean": dp.mean(), "dp_mean_stderr": se(dp),
        "dp_rms": math.sqrt(np.mean(dp**2)),
        "dp_rms_stderr": 0.5 / math.sqrt(np.mean(dp**2)) * se(dp**2),
        "same_top": same.mean(), "same_top_stderr": math.sqrt(same.mean() * (1 - same.mean())
                                                              / (n - 1)),
    }
    kl32 = kl.astype(np.float32).astype(np.float64)
    dp32 = dp.astype(np.float32).astype(np.float64)
    for name, q in PERCENTILES.items():
        if name not in ("p75", "p25"):
            out[f"kl_{name}"] = np.percentile(kl32, q)
        out[f"dp_{name}"] = np.percentile(dp32, q)
    return {k: float(v) for k, v in out.items()}


def tolerances(dtype):
    # float64: the stand-in and the kernel compute in float64; 32/16-bit input may be
    # computed in float32 by the kernel
    return (1e-9, 1e-13) if np.dtype(dtype) == np.float64 else (3e-4, 1e-5)


def assert_stats_close(got, want, dtype=np.float64):
    rtol, atol = tolerances(dtype)
    assert set(want) <= set(got)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=rtol, abs=atol, nan_ok=True), key


def assert_identical(x, y):
    assert list(x) == list(y)
    for key in x:
        assert x[key] == y[key] or (math.isnan(x[key]) and math.isnan(y[key])), key


def pair(rng, shape, noise=0.3, dtype=np.float64, ignore=0.1):
    """Reference logits, a perturbed model (a 'quantised' copy) and targets."""
    ref = rng.standard_normal(shape) * 2
    model = ref + noise * rng.standard_normal(shape)
    target = rng.integers(0, shape[-1], shape[:-1])
    target[rng.random(shape[:-1]) < ignore] = -100
    return model.astype(dtype), ref.astype(dtype), target


def test_keys():
    rng = np.random.default_rng(0)
    r = cecore.Comparison()
    r.update(*pair(rng, (50, 8)))
    result = r.result()
    assert set(result) == set(ISSUE_KEYS) | set(EXTRA_KEYS)
    assert isinstance(result["count"], int)
    assert all(type(v) is float for k, v in result.items() if k != "count")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,v", [(3000, 40), (257, 1000)])
def test_statistics_match_direct_formulas(dtype, n, v):
    rng = np.random.default_rng(n + v)
    model, ref, target = pair(rng, (n, v), dtype=dtype)
    c = cecore.Comparison()
    c.update(model, ref, target)
    want = expected_stats(*rows_of(model, ref, target))
    assert want["count"] == np.count_nonzero(target != -100)
    assert_stats_close(c.result(), want, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_inputs(dtype):
    rng = np.random.default_rng(3)
    model, ref, target = pair(rng, (600, 64))
    wanted = bfloat16 if dtype == "bfloat16" else np.float16
    model, ref = model.astype(wanted), ref.astype(wanted)
    c = cecore.Comparison()
    c.update(model, ref, target)
    # against the exact statistics of the rounded inputs
    assert_stats_close(c.result(), expected_stats(*rows_of(model, ref, target)), np.float32)


def test_mixed_dtypes():
    rng = np.random.default_rng(4)
    model, ref, target = pair(rng, (400, 30))
    c = cecore.Comparison()
    c.update(model.astype(np.float32), ref, target)
    want = expected_stats(*rows_of(model.astype(np.float32), ref, target))
    assert_stats_close(c.result(), want, np.float32)


def test_percentiles_are_numpy_percentile_of_the_stored_float32():
    # many ties and an odd count: the interpolation between ranks matters
    rng = np.random.default_rng(5)
    model, ref, target = pair(rng, (1001, 5), noise=1.0, ignore=0.0)
    c = cecore.Comparison()
    c.update(model, ref, target)
    got = c.result()
    kl, a, b, _ = rows_of(model, ref, target)
    dp = np.exp(a) - np.exp(b)
    for name, q in PERCENTILES.items():
        for prefix, values in (("kl_", kl), ("dp_", dp)):
            if prefix + name in got:
                want = np.percentile(values.astype(np.float32).astype(np.float64), q)
                assert got[prefix + name] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert got["kl_max"] == np.float32(kl.max()) and got["kl_min"] == np.float32(kl.min())
    assert got["kl_median"] == pytest.approx(float(np.median(kl.astype(np.float32))),
                                             rel=1e-12)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    # llama.cpp: 0.5 * (v[n/2 - 1] + v[n/2])
    rng = np.random.default_rng(6)
    model, ref, target = pair(rng, (10, 6), noise=1.0, ignore=0.0)
    c = cecore.Comparison()
    c.update(model, ref, target)
    kl = np.sort(rows_of(model, ref, target)[0].astype(np.float32)).astype(np.float64)
    assert c.result()["kl_median"] == pytest.approx(0.5 * (kl[4] + kl[5]), rel=1e-12)


def batches(arrays, bounds):
    return [tuple(x[first:last] for x in arrays) for first, last in zip(bounds, bounds[1:])]


def test_streaming_one_shot_and_merged_are_identical():
    rng = np.random.default_rng(7)
    data = pair(rng, (2000, 50), dtype=np.float32)
    one = cecore.Comparison()
    one.update(*data)
    streamed = cecore.Comparison()
    parts = batches(data, [0, 1, 333, 334, 1000, 1999, 2000])
    for batch in parts:
        streamed.update(*batch)
    singles = []
    for batch in parts:
        c = cecore.Comparison()
        c.update(*batch)
        singles.append(c)
    merged = cecore.Comparison()
    for c in singles:
        merged.merge(c)
    # another grouping and the reverse order: sums are exact, percentiles sort
    left = pickle.loads(pickle.dumps(singles[0])).merge(singles[1]).merge(singles[2])
    right = pickle.loads(pickle.dumps(singles[3])).merge(singles[4]).merge(singles[5])
    reverse = cecore.Comparison()
    for c in reversed(singles):
        reverse.merge(c)
    expected = one.result()
    for other in (streamed, merged, left.merge(right), reverse):
        assert_identical(other.result(), expected)
    # merging did not change the merged-in Comparisons
    assert sum(c.count for c in singles) == one.count


def test_results_do_not_depend_on_threads():
    rng = np.random.default_rng(8)
    data = pair(rng, (1500, 300), dtype=np.float32)
    results = []
    for n_threads in (1, 2, 3):
        c = cecore.Comparison(n_threads=n_threads)
        c.update(*data)
        results.append(c.result())
    assert_identical(results[0], results[1])
    assert_identical(results[0], results[2])


def test_pickle_round_trip_and_continue():
    rng = np.random.default_rng(9)
    data = pair(rng, (300, 20))
    first, second = batches(data, [0, 120, 300])
    c = cecore.Comparison(ignore_index=-100)
    c.update(*first)
    copy = pickle.loads(pickle.dumps(c))
    assert copy.count == c.count
    assert_identical(copy.result(), c.result())
    c.update(*second)
    copy.update(*second)
    assert_identical(copy.result(), c.result())
    whole = cecore.Comparison()
    whole.update(*data)
    assert_identical(copy.result(), whole.result())


def test_reset():
    rng = np.random.default_rng(10)
    data = pair(rng, (100, 10))
    c = cecore.Comparison()
    c.update(*data)
    c.reset()
    assert c.count == 0 and math.isnan(c.result()["kl_mean"])
    c.update(*data)
    fresh = cecore.Comparison()
    fresh.update(*data)
    assert_identical(c.result(), fresh.result())


def test_masks_and_ignore_index():
    rng = np.random.default_rng(11)
    model, ref, target = pair(rng, (500, 12), ignore=0.0)
    target[::3] = 7_777 % 12  # a valid class ...
    target[::5] = -1  # ... and a custom ignore_index
    c = cecore.Comparison(ignore_index=-1)
    c.update(model, ref, target)
    want = expected_stats(*rows_of(model, ref, target, ignore_index=-1))
    assert_stats_close(c.result(), want)
    assert c.result()["count"] == np.count_nonzero(target != -1)


def test_nothing_counted():
    rng = np.random.default_rng(12)
    model, ref, _ = pair(rng, (5, 4))
    c = cecore.Comparison()
    c.update(model, ref, np.full(5, -100))
    r = c.result()
    assert r["count"] == 0
    assert all(math.isnan(v) for k, v in r.items() if k != "count")
    assert r.keys() == cecore.Comparison().result().keys()


def test_one_position():
    c = cecore.Comparison()
    c.update(np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]]), np.array([1]))
    r = c.result()
    assert r["count"] == 1 and r["kl_mean"] == pytest.approx(0.0, abs=1e-15)
    assert r["kl_max"] == r["kl_min"] == r["kl_median"] == r["kl_mean"]
    assert math.isnan(r["kl_mean_stderr"]) and math.isnan(r["same_top_stderr"])


def test_shift():
    rng = np.random.default_rng(13)
    model, ref, target = pair(rng, (3, 40, 25))
    c = cecore.Comparison(shift=True)
    c.update(model, ref, target)
    want = expected_stats(*rows_of(model, ref, target, shift=True))
    assert_stats_close(c.result(), want)
    unshifted = cecore.Comparison()
    unshifted.update(model[:, :-1], ref[:, :-1], target[:, 1:])
    assert_identical(c.result(), unshifted.result())


def test_class_axis():
    rng = np.random.default_rng(14)
    model, ref, target = pair(rng, (4, 50, 30))
    c = cecore.Comparison(axis=1)
    c.update(np.swapaxes(model, 1, 2), np.swapaxes(ref, 1, 2), target)
    last = cecore.Comparison()
    last.update(model, ref, target)
    assert_stats_close(c.result(), last.result())


def test_identical_models():
    rng = np.random.default_rng(15)
    _, ref, target = pair(rng, (400, 30))
    c = cecore.Comparison()
    c.update(ref, ref.copy(), target)
    r = c.result()
    assert r["kl_max"] == pytest.approx(0.0, abs=1e-13)
    assert r["kl_mean"] == pytest.approx(0.0, abs=1e-13)
    assert r["dp_max"] == r["dp_min"] == 0.0 and r["dp_rms"] == 0.0
    assert r["same_top"] == 1.0 and r["same_top_stderr"] == 0.0
    assert r["ppl_ratio"] == 1.0 and r["ln_ppl_ratio"] == 0.0 and r["ppl"] == r["ref_ppl"]
    assert r["ln_ppl_ratio_stderr"] == 0.0
    assert r["logprob_corr"] == 1.0


def test_close_models_do_not_cancel():
    # ln-ratio stderr from the differences: exact where var(a) + var(b) - 2 cov cancels
    rng = np.random.default_rng(16)
    model, ref, target = pair(rng, (2000, 20), noise=1e-7, ignore=0.0)
    c = cecore.Comparison()
    c.update(model, ref, target)
    kl, a, b, same = rows_of(model, ref, target)
    want = np.std(b - a, ddof=1) / math.sqrt(len(a))
    assert c.result()["ln_ppl_ratio_stderr"] == pytest.approx(want, rel=1e-6)


def test_infinite_kl_where_the_model_rules_out_a_reference_class():
    ref = np.zeros((3, 4))
    model = np.zeros((3, 4))
    model[1, 2] = -np.inf  # p = 0 where r = 1/4
    c = cecore.Comparison()
    c.update(model, ref, np.array([0, 0, 1]))
    r = c.result()
    assert r["kl_max"] == math.inf and r["kl_mean"] == math.inf
    assert r["kl_min"] == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(r["kl_mean_stderr"])
    assert math.isfinite(r["ppl"]) and math.isfinite(r["dp_mean"])
    # -inf in the reference: 0 log 0 = 0, finite
    c = cecore.Comparison()
    c.update(ref, model, np.array([0, 0, 1]))
    kl, *_ = rows_of(ref, model, np.array([0, 0, 1]))
    assert c.result()["kl_max"] == pytest.approx(float(kl.max().astype(np.float32)), rel=1e-6)


def test_read_only_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    data = pair(rng, (50, 9), dtype=np.float32)
    copies = [a.copy() for a in data]
    for a in data:
        a.flags.writeable = False
    c = cecore.Comparison()
    c.update(*data)
    for a, b in zip(data, copies):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad input


def test_shapes_that_differ():
    c = cecore.Comparison()
    with pytest.raises(ValueError, match=r"logits and ref_logits .*\(4, 5\) and \(4, 6\)"):
        c.update(np.zeros((4, 5)), np.zeros((4, 6)), np.zeros(4, int))
    with pytest.raises(ValueError, match="ref_logits"):
        c.update(np.zeros((4, 5)), np.zeros((3, 5)), np.zeros(4, int))
    assert c.count == 0


def test_bad_targets_leave_the_totals_unchanged():
    rng = np.random.default_rng(18)
    model, ref, target = pair(rng, (20, 5), ignore=0.0)
    c = cecore.Comparison()
    c.update(model, ref, target)
    before = c.result()
    bad = target.copy()
    bad[7] = 5
    with pytest.raises(ValueError, match=r"target\[7\] = 5 is out of range"):
        c.update(model, ref, bad)
    bad[7] = -3
    with pytest.raises(ValueError, match=r"target\[7\] = -3"):
        c.update(model, ref, bad)
    with pytest.raises(ValueError, match="target has shape"):
        c.update(model, ref, target[:-1])
    with pytest.raises(TypeError, match="target"):
        c.update(model, ref, target.astype(float))
    assert_identical(c.result(), before)


def test_bad_dtypes_and_options():
    c = cecore.Comparison()
    with pytest.raises(TypeError, match="ref_logits"):
        c.update(np.zeros((2, 3)), np.zeros((2, 3), complex), np.zeros(2, int))
    with pytest.raises(TypeError, match="logits"):
        c.update(np.zeros((2, 3), "U1"), np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(TypeError, match="ignore_index"):
        cecore.Comparison(ignore_index=1.5)
    with pytest.raises(TypeError, match="shift"):
        cecore.Comparison(shift="yes")
    with pytest.raises(TypeError, match="axis"):
        cecore.Comparison(axis=None)
    with pytest.raises(ValueError, match="n_threads"):
        cecore.Comparison(n_threads=0)
    with pytest.raises(ValueError, match="class axis last"):
        cecore.Comparison(shift=True, axis=0).update(np.zeros((3, 4)), np.zeros((3, 4)),
                                                     np.zeros(3, int))
    with pytest.raises(TypeError, match="Comparison"):
        c.merge(cecore.Evaluator())
    with pytest.raises(ValueError, match="different options"):
        c.merge(cecore.Comparison(ignore_index=0))


# ---------------------------------------------------------------- exact sums


@pytest.mark.parametrize("seed", range(4))
def test_exact_sum_is_exact(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([
        rng.standard_normal(1000) * 10.0 ** rng.integers(-300, 300, 1000),
        np.array([5e-324, -5e-324, 2.2e-308, 1.7e308, -1.7e308, 0.0, -0.0, 1.0, 1e-16]),
    ])
    rng.shuffle(x)
    s = _comparison._ExactSum.of(x)
    exact = sum(Fraction(float(v)) for v in x)
    assert Fraction(s.total, 2**_comparison._UNITS) == exact
    assert s.mean(len(x)) == float(exact / len(x))
    # any split adds up to the same integer
    parts = _comparison._ExactSum()
    for chunk in np.array_split(x, 7):
        parts.add(_comparison._ExactSum.of(chunk))
    assert parts.total == s.total


def test_exact_sum_non_finite():
    s = _comparison._ExactSum.of(np.array([1.0, np.inf, 2.0]))
    assert s.mean(3) == math.inf
    s.add(_comparison._ExactSum.of(np.array([-np.inf])))
    assert math.isnan(s.mean(4))
    assert math.isnan(_comparison._ExactSum.of(np.array([np.nan, 1.0])).mean(2))
    assert math.isnan(_comparison._ExactSum().mean(0))


def test_numpy_stand_in_matches_the_kernel_interface():
    # whichever implementation is bound, it returns the counted positions in order
    rng = np.random.default_rng(19)
    model, ref, target = pair(rng, (40, 7))
    kl, logp, logr, same = _comparison._comparison_rows(model, ref, target)
    want = rows_of(model, ref, target)
    assert kl.dtype == logp.dtype == logr.dtype == np.float64 and same.dtype == bool
    for got, expected in zip((kl, logp, logr), want[:3]):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(same, want[3])
