"""cecore.Evaluator: streaming cross-entropy and top-k accuracy.

References: cecore.cross_entropy for the loss (itself checked against PyTorch
and float64 NumPy in test_losses.py), a float64 NumPy formula, and PyTorch's
cross_entropy / argmax / topk where installed.
"""

import math
import pickle

import _reference
import numpy as np
import pytest

import cecore

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def reference_ranks(logits, target):
    """rank = #{j : x_j > x_y} + #{j < y : x_j == x_y} per row, NaN above every number."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target)
    xy = x[np.arange(len(y)), y][:, None]
    before = np.arange(x.shape[1])[None, :] < y[:, None]
    nan, y_nan = np.isnan(x), np.isnan(xy)
    greater = (x > xy) | (nan & ~y_nan)
    tie = (x == xy) | (nan & y_nan)
    return np.sum(greater | (tie & before), axis=1)


def reference_result(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                     topk=(1,)):
    """The expected result() of one update with 2-D logits."""
    keep = target != ignore_index
    loss = _reference.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                                    label_smoothing=label_smoothing)
    ranks = reference_ranks(logits[keep], target[keep])
    count = int(keep.sum())
    expected = {"loss": float(loss), "bits": float(loss) / math.log(2),
                "perplexity": math.exp(loss)}
    for k in topk:
        expected[f"accuracy@{k}"] = np.sum(ranks < k) / count if count else math.nan
    expected.update(_reference.evaluator_extras(logits, target, ignore_index=ignore_index))
    expected["count"] = count
    return expected


def assert_result_close(got, expected, rtol):
    assert list(got) == list(expected)
    for key, value in expected.items():
        if key.startswith("accuracy") or key == "count":
            assert got[key] == value or (math.isnan(value) and math.isnan(got[key])), key
        else:
            atol = 1e-12 if key in ("ece", "entropy", "brier") else 0
            np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=key)


def make_data(rng, n, k, dtype=np.float32, ignore_fraction=0.1, boost=4.0):
    """Logits 2 N(0, 1) with the target's logit raised by ``boost`` in half the rows."""
    logits = (rng.standard_normal((n, k)) * 2).astype(dtype)
    target = rng.integers(0, k, n)
    hit = rng.random(n) < 0.5
    logits[hit, target[hit]] += dtype(boost)
    target[rng.random(n) < ignore_fraction] = -100
    return logits, target


@pytest.mark.parametrize("k", [1, 3, 16, 32, 33, 1000, 2500])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference(rng, k, dtype):
    logits, target = make_data(rng, 300, k, dtype)
    ev = cecore.Evaluator(topk=(1, 2, 5, 600))
    ev.update(logits, target)
    expected = reference_result(logits, target, topk=(1, 2, 5, 600))
    assert_result_close(ev.result(), expected, rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_options_match_cross_entropy(rng, label_smoothing, weighted):
    logits, target = make_data(rng, 500, 40, np.float64)
    weight = rng.random(40) + 0.5 if weighted else None
    target[target == -100] = 7  # ignore_index may be a valid class: those rows are skipped
    ev = cecore.Evaluator(weight=weight, ignore_index=7, label_smoothing=label_smoothing,
                          topk=(1, 3))
    ev.update(logits, target)
    expected = reference_result(logits, target, weight=weight, ignore_index=7,
                                label_smoothing=label_smoothing, topk=(1, 3))
    assert_result_close(ev.result(), expected, rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_torch(rng, weighted):
    logits, target = make_data(rng, 2000, 100, np.float32)
    weight = (rng.random(100) + 0.5).astype(np.float32) if weighted else None
    ev = cecore.Evaluator(weight=weight, label_smoothing=0.1, topk=(1, 5))
    ev.update(logits, target)
    got = ev.result()
    x, y = torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(target)
    w = None if weight is None else torch.from_numpy(weight.astype(np.float64))
    loss = torch.nn.functional.cross_entropy(x, y, weight=w, label_smoothing=0.1).item()
    keep = y != -100
    top5 = torch.topk(x[keep], 5, dim=1).indices  # continuous data: no ties
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-6)
    assert got["accuracy@1"] == (x[keep].argmax(1) == y[keep]).double().mean().item()
    assert got["accuracy@5"] == (top5 == y[keep][:, None]).any(1).double().mean().item()
    assert got["count"] == keep.sum().item()


@needs_torch
def test_top1_is_torch_argmax_with_ties_nan_and_inf():
    inf, nan = math.inf, math.nan
    logits = np.array([
        [1.0, 1.0, 1.0, 1.0],
        [0.0, 2.0, 2.0, 1.0],
        [1.0, nan, 3.0, nan],
        [nan, nan, nan, nan],
        [-inf, -inf, -inf, -inf],
        [1.0, inf, inf, 0.0],
        [-inf, 0.0, -inf, 0.0],
    ])
    argmax = torch.from_numpy(logits).argmax(1).numpy()
    for dtype in (np.float32, np.float64):
        for target in (argmax, (argmax + 1) % 4, np.full(7, 3), np.full(7, 2)):
            ev = cecore.Evaluator(topk=(1, 2, 3))
            ev.update(logits.astype(dtype), target)
            ranks = reference_ranks(logits, target)
            result = ev.result()
            assert result["accuracy@1"] == np.mean(argmax == target)
            for k in (1, 2, 3):
                assert result[f"accuracy@{k}"] == np.mean(ranks < k)


def test_ties_go_to_the_lower_index():
    logits = np.zeros((4, 6), dtype=np.float32)  # every class tied: rank = y
    ev = cecore.Evaluator(topk=(1, 2, 3))
    ev.update(logits, np.array([0, 1, 2, 5]))
    assert ev.result()["accuracy@1"] == 0.25
    assert ev.result()["accuracy@2"] == 0.5
    assert ev.result()["accuracy@3"] == 0.75


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_counting_stops_at_the_largest_k(rng, dtype):
    # long rows (several count chunks) and ranks right at the k boundaries, with the
    # larger logits placed before, after and on both sides of the target
    k_classes, ks = 3000, (1, 2, 7, 8, 9, 600)
    rows, targets = [], []
    for rank in (0, 1, 6, 7, 8, 9, 599, 600, 601, 2999):
        for layout in ("before", "after", "both"):
            x = rng.standard_normal(k_classes).astype(dtype)
            y = {"before": k_classes - 1, "after": 0, "both": k_classes // 2}[layout]
            x[y] = 10
            others = np.delete(np.arange(k_classes), y)
            chosen = rng.choice(others, size=rank, replace=False)
            x[chosen] = 20
            rows.append(x)
            targets.append(y)
    logits, target = np.array(rows), np.array(targets)
    ev = cecore.Evaluator(topk=ks)
    ev.update(logits, target)
    ranks = reference_ranks(logits, target)
    for k in ks:
        assert ev.result()[f"accuracy@{k}"] == np.mean(ranks < k)


def test_integer_valued_logits_have_many_ties(rng):
    logits = rng.integers(-3, 4, size=(3000, 50)).astype(np.float32)
    target = rng.integers(0, 50, 3000)
    ev = cecore.Evaluator(topk=(1, 2, 5, 10, 49, 50))
    ev.update(logits, target)
    ranks = reference_ranks(logits, target)
    for k in (1, 2, 5, 10, 49, 50):
        assert ev.result()[f"accuracy@{k}"] == np.mean(ranks < k)


# float32 rows of K <= 32 on AVX-512: see test_row_loss_does_not_depend_on_the_batch
@pytest.mark.parametrize("k, rtol", [(300, 1e-13), (20, 1e-6)])
def test_streaming_merged_and_one_shot_agree(rng, k, rtol):
    logits, target = make_data(rng, 5000, k, np.float32)
    one_shot = cecore.Evaluator(topk=(1, 5))
    one_shot.update(logits, target)
    streamed = cecore.Evaluator(topk=(1, 5))
    parts = [cecore.Evaluator(topk=(1, 5)) for _ in range(3)]
    bounds = np.sort(rng.choice(np.arange(1, 5000), size=20, replace=False))
    for i, (a, b) in enumerate(zip(np.r_[0, bounds], np.r_[bounds, 5000], strict=True)):
        streamed.update(logits[a:b], target[a:b])
        parts[i % 3].update(logits[a:b], target[a:b])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    want = one_shot.result()
    for got in (streamed.result(), merged.result()):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=rtol, err_msg=key)
        assert got["count"] == want["count"]
        assert got["accuracy@5"] == want["accuracy@5"]


def test_row_loss_does_not_depend_on_the_batch(rng):
    logits = rng.standard_normal((3000, 20)).astype(np.float32)  # blocks of 46 rows
    target = rng.integers(0, 20, 3000)
    whole = cecore.cross_entropy(logits, target, reduction="none")
    one_by_one = [cecore.cross_entropy(logits[i:i + 1], target[i:i + 1], reduction="none")[0]
                  for i in range(3000)]
    np.testing.assert_array_equal(whole, one_by_one)


def test_identical_for_any_thread_count(rng):
    logits, target = make_data(rng, 20000, 64, np.float32)
    results = []
    for n_threads in (1, 2, 3):
        ev = cecore.Evaluator(topk=(1, 5), n_threads=n_threads, label_smoothing=0.1)
        ev.update(logits, target)
        results.append((ev.loss_sum, ev.weight_sum, ev.count, ev.hits))
    assert results[0] == results[1] == results[2]


def test_layouts_and_dtypes(rng):
    base, target = make_data(rng, 200, 20, np.float64)
    ev = cecore.Evaluator(topk=(1, 3))
    ev.update(base, target)
    want = ev.result()
    variants = [
        (base.astype(">f8"), target),  # byte-swapped
        (np.asfortranarray(base), target.astype(np.int32)),
        (base[:, ::-1].copy()[:, ::-1], target.astype(np.int16)),  # negative strides
        (base.T, target, 0),  # classes along axis 0
        (base.reshape(10, 20, 20).transpose(0, 2, 1), target.reshape(10, 20), 1),
    ]
    for logits, t, *axis in variants:
        ev = cecore.Evaluator(axis=axis[0] if axis else -1, topk=(1, 3))
        ev.update(logits, t)
        assert ev.result() == pytest.approx(want, rel=1e-13)
    readonly = base.copy()
    readonly.flags.writeable = False
    ev = cecore.Evaluator(topk=(1, 3))
    ev.update(readonly, target)
    assert ev.result() == pytest.approx(want, rel=1e-13)


def test_float16_is_evaluated_in_float32(rng):
    logits, target = make_data(rng, 300, 30, np.float16)
    ev = cecore.Evaluator(topk=(1, 5))
    ev.update(logits, target)
    expected = reference_result(logits.astype(np.float32), target, topk=(1, 5))
    assert_result_close(ev.result(), expected, rtol=1e-6)


def test_empty_and_all_ignored():
    assert math.isnan(cecore.Evaluator().result()["loss"])
    ev = cecore.Evaluator(topk=(1, 5))
    ev.update(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64))
    ev.update(np.ones((3, 4)), np.full(3, -100))
    result = ev.result()
    assert result["count"] == 0
    assert all(math.isnan(result[key]) for key in ("loss", "bits", "perplexity",
                                                   "accuracy@1", "accuracy@5"))


def test_result_keys_and_units():
    ev = cecore.Evaluator(topk=[5, 1, 5])  # sorted, repeats dropped
    assert ev.topk == (1, 5)
    ev.update(np.log(np.array([[0.5, 0.25, 0.25]])), np.array([1]))
    result = ev.result()
    assert list(result) == ["loss", "bits", "perplexity", "accuracy@1", "accuracy@5", "entropy",
                            "brier", "ece", "count"]
    assert result["loss"] == pytest.approx(math.log(4), rel=1e-15)
    assert result["bits"] == pytest.approx(2.0, rel=1e-15)
    assert result["perplexity"] == pytest.approx(4.0, rel=1e-15)
    assert result["accuracy@1"] == 0.0 and result["accuracy@5"] == 1.0
    no_accuracy = cecore.Evaluator(topk=())
    no_accuracy.update(np.zeros((2, 3)), np.array([0, 1]))
    assert list(no_accuracy.result()) == ["loss", "bits", "perplexity", "entropy", "brier",
                                          "ece", "count"]


def test_perplexity_overflows_to_inf():
    ev = cecore.Evaluator()
    ev.update(np.array([[0.0, -1000.0]]), np.array([1]))
    assert ev.result()["loss"] == pytest.approx(1000.0)
    assert ev.result()["perplexity"] == math.inf


def test_pickle_round_trip_and_merge(rng):
    logits, target = make_data(rng, 400, 10, np.float64)
    weight = rng.random(10)
    a = cecore.Evaluator(weight=weight, topk=(1, 2))
    a.update(logits[:150], target[:150])
    b = pickle.loads(pickle.dumps(a))
    assert b.result() == a.result()
    b.update(logits[150:], target[150:])
    c = cecore.Evaluator(weight=weight, topk=(1, 2))
    c.update(logits[150:], target[150:])
    assert a.merge(c).result() == pytest.approx(b.result(), rel=1e-14)


def test_merge_checks_options():
    with pytest.raises(TypeError, match="can only merge an Evaluator"):
        cecore.Evaluator().merge({"loss": 1.0})
    for options in ({"topk": (1, 5)}, {"ignore_index": 0}, {"label_smoothing": 0.1},
                    {"weight": [1.0, 2.0]}):
        with pytest.raises(ValueError, match="different options"):
            cecore.Evaluator().merge(cecore.Evaluator(**options))
    a = cecore.Evaluator(weight=[1.0, 2.0])
    a.merge(cecore.Evaluator(weight=np.array([1, 2])))  # same weights, other dtype
    a.reset()
    assert a.count == 0 and a.hits == (0,)


def test_bad_target_names_it_and_leaves_the_totals_unchanged(rng):
    logits, target = make_data(rng, 50, 5, np.float32, ignore_fraction=0)
    ev = cecore.Evaluator()
    ev.update(logits, target)
    before = ev.result()
    bad = target.copy()
    bad[37] = 5
    with pytest.raises(ValueError, match=r"target\[37\] = 5 is out of range"):
        ev.update(logits, bad)
    bad[37] = -1
    with pytest.raises(ValueError, match=r"target\[37\] = -1 is out of range"):
        ev.update(logits, bad)
    assert ev.result() == before


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"topk": 0}, ValueError, "topk values must be >= 1"),
        ({"topk": (1, -2)}, ValueError, "topk values must be >= 1"),
        ({"topk": "1"}, TypeError, "topk must be an integer"),
        ({"topk": (1.5,)}, TypeError, "topk must be an integer"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing must be in"),
        ({"ignore_index": 1.0}, TypeError, "ignore_index must be an integer"),
        ({"axis": "x"}, TypeError, "axis must be an integer"),
        ({"weight": [[1.0]]}, ValueError, "weight must be 1-D"),
        ({"weight": ["a"]}, TypeError, "weight must be a real numeric array"),
        ({"n_threads": 0}, ValueError, "n_threads must be >= 1"),
    ],
)
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        cecore.Evaluator(**options)


@pytest.mark.parametrize(
    "logits, target, options, error, match",
    [
        (np.zeros((3, 4)), np.zeros(3), {}, TypeError, "integer class indices"),
        (np.zeros((3, 4)), np.zeros(4, dtype=int), {}, ValueError, r"target has shape \(4,\)"),
        (np.zeros((3, 4)), np.zeros(3, dtype=int), {"weight": np.ones(3)}, ValueError,
         r"weight must have shape \(4,\)"),
        (np.zeros((3, 0)), np.zeros(3, dtype=int), {}, ValueError, "zero classes"),
        (np.zeros((3, 4)), np.zeros(3, dtype=int), {"axis": 2}, ValueError, "out of range"),
        (np.zeros((3, 4), dtype=complex), np.zeros(3, dtype=int), {}, TypeError, "complex"),
    ],
)
def test_bad_batches(logits, target, options, error, match):
    with pytest.raises(error, match=match):
        cecore.Evaluator(**options).update(logits, target)


def test_exported():
    assert "Evaluator" in cecore.__all__
    assert repr(cecore.Evaluator(topk=(1, 5))).startswith("Evaluator(count=0")


# ---------------------------------------------------------------- extended metrics


def test_entropy_brier_ece_match_direct_implementations(rng):
    logits, target = make_data(rng, 3000, 50, np.float64)
    ev = cecore.Evaluator()
    ev.update(logits, target)
    got = ev.result()
    keep = target != -100
    p = _reference.softmax(logits[keep])
    conf, correct = p.max(1), p.argmax(1) == target[keep]
    assert got["ece"] == pytest.approx(_reference.calibration_error(conf, correct), rel=1e-12)
    assert got["brier"] == pytest.approx(
        np.mean(np.sum((p - np.eye(50)[target[keep]]) ** 2, axis=1)), rel=1e-12)
    assert got["entropy"] == pytest.approx(np.mean(-np.sum(p * np.log(p), axis=1)), rel=1e-12)
    cal = ev.calibration()
    bins = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
    assert cal["count"] == np.bincount(bins, minlength=15).tolist()
    for b in range(15):
        sel = bins == b
        if sel.any():
            assert cal["confidence"][b] == pytest.approx(conf[sel].mean(), rel=1e-12)
            assert cal["accuracy"][b] == pytest.approx(correct[sel].mean(), rel=1e-12)
        else:
            assert math.isnan(cal["confidence"][b]) and math.isnan(cal["accuracy"][b])
    assert cal["edges"][0] == pytest.approx(1 / 15) and cal["edges"][-1] == 1.0


def test_ece_is_nan_with_a_nan_confidence():
    ev = cecore.Evaluator()
    ev.update(np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 0]))
    assert math.isnan(ev.result()["ece"]) and sum(ev.calibration()["count"]) == 1


def test_temperature(rng):
    logits, target = make_data(rng, 500, 30, np.float64)
    ev = cecore.Evaluator(temperature=2.5, topk=(1, 3), label_smoothing=0.1)
    ev.update(logits, target)
    expected = reference_result(logits / 2.5, target, topk=(1, 3), label_smoothing=0.1)
    assert_result_close(ev.result(), expected, rtol=1e-11)
    with pytest.raises(ValueError, match="temperature must be positive"):
        cecore.Evaluator(temperature=0)


@pytest.mark.parametrize("k", [40, 3000])
def test_shift_equals_slicing_by_hand(rng, k):
    logits = rng.standard_normal((3, 20, k)).astype(np.float32)
    target = rng.integers(0, k, (3, 20))
    shifted = cecore.Evaluator(shift=True, topk=(1, 5))
    shifted.update(logits, target, n_bytes=100)
    by_hand = cecore.Evaluator(topk=(1, 5))
    by_hand.update(logits[:, :-1], target[:, 1:], n_bytes=100)
    assert shifted.result() == pytest.approx(by_hand.result(), rel=1e-12)
    assert shifted.count == 3 * 19


def test_bits_per_byte_on_a_small_corpus(rng):
    # three "documents" with known UTF-8 byte and word counts
    docs = ["héllo wörld", "a b c", "naïve café au lait"]
    n_bytes = [len(d.encode("utf-8")) for d in docs]
    n_words = [len(d.split()) for d in docs]
    batches = [make_data(rng, 7 + i, 20, np.float64) for i in range(3)]
    ev = cecore.Evaluator()
    for (logits, target), b, w in zip(batches, n_bytes, n_words, strict=True):
        ev.update(logits, target, n_bytes=b, n_words=w)
    nll = sum(_reference.cross_entropy(x, t, reduction="sum") for x, t in batches)
    got = ev.result()
    assert got["bits_per_byte"] == pytest.approx(nll / (math.log(2) * sum(n_bytes)), rel=1e-12)
    assert got["byte_perplexity"] == pytest.approx(math.exp(nll / sum(n_bytes)), rel=1e-12)
    assert got["word_perplexity"] == pytest.approx(math.exp(nll / sum(n_words)), rel=1e-12)
    only_bytes = cecore.Evaluator()
    only_bytes.update(*batches[0], n_bytes=5)
    assert "bits_per_byte" in only_bytes.result() and "word_perplexity" not in only_bytes.result()
    assert "bits_per_byte" not in cecore.Evaluator().result()


def test_bytes_for_some_batches_only(rng):
    ev = cecore.Evaluator()
    logits, target = make_data(rng, 10, 5)
    ev.update(logits, target, n_bytes=30)
    ev.update(logits, target)
    with pytest.raises(ValueError, match="n_bytes was given for 1 of 2 batches"):
        ev.result()
    merged = cecore.Evaluator()
    merged.update(logits, target, n_words=3)
    merged.merge(cecore.Evaluator())  # no batches: nothing to disagree with
    assert merged.result()["word_perplexity"] > 0
    other = cecore.Evaluator()
    other.update(logits, target)
    with pytest.raises(ValueError, match="n_words was given for 1 of 2 batches"):
        merged.merge(other).result()


@pytest.mark.parametrize("options", [{"weight": np.ones(5)}, {"label_smoothing": 0.1}])
def test_bytes_need_the_plain_loss(rng, options):
    logits, target = make_data(rng, 10, 5)
    ev = cecore.Evaluator(**options)
    with pytest.raises(ValueError, match="not with weight or label_smoothing"):
        ev.update(logits, target, n_bytes=10)
    assert ev.count == 0
    for bad, error in ((-1, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="n_bytes"):
            cecore.Evaluator().update(logits, target, n_bytes=bad)


def test_new_metrics_stream_merge_and_pickle(rng):
    logits, target = make_data(rng, 4000, 300, np.float32)
    one_shot = cecore.Evaluator(topk=(1, 5))
    one_shot.update(logits, target, n_bytes=12345, n_words=2345)
    streamed = cecore.Evaluator(topk=(1, 5))
    parts = [cecore.Evaluator(topk=(1, 5)) for _ in range(3)]
    bounds = [0, 1, 777, 2000, 2001, 3999, 4000]
    sizes = np.diff(bounds)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        nb, nw = int(12345 * sizes[i] // 4000), int(2345 * sizes[i] // 4000)
        if i == len(sizes) - 1:
            nb, nw = 12345 - int(sum(12345 * sizes[:-1] // 4000)), \
                2345 - int(sum(2345 * sizes[:-1] // 4000))
        streamed.update(logits[a:b], target[a:b], n_bytes=nb, n_words=nw)
        parts[i % 3].update(logits[a:b], target[a:b], n_bytes=nb, n_words=nw)
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    want = one_shot.result()
    for got in (streamed.result(), merged.result()):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
        assert got.keys() >= {"entropy", "brier", "ece", "bits_per_byte", "word_perplexity"}
    for got in (streamed, merged):
        assert got.calibration()["count"] == one_shot.calibration()["count"]
    with pytest.raises(ValueError, match="different options"):
        cecore.Evaluator().merge(cecore.Evaluator(temperature=2.0))
    with pytest.raises(ValueError, match="different options"):
        cecore.Evaluator().merge(cecore.Evaluator(shift=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top1_only_path_agrees_with_the_full_rank(rng, dtype):
    """topk=(1,) skips counting the target's rank in the row pass (float32): accuracy
    and calibration must equal those of the counting path (topk=(1, 2)) and the
    reference ranks, with ties before, at and after the target, NaN and inf rows."""
    inf, nan = math.inf, math.nan
    special = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, 1.0], [1.0, nan, 3.0, nan],
                        [nan] * 4, [-inf] * 4, [1.0, inf, inf, 0.0], [-inf, 0.0, -inf, 0.0]])
    ints = rng.integers(-3, 4, size=(3000, 4)).astype(float)
    logits = np.concatenate([special, ints]).astype(dtype)
    for target in (rng.integers(0, 4, len(logits)), np.full(len(logits), 2)):
        top1, full = cecore.Evaluator(topk=(1,)), cecore.Evaluator(topk=(1, 2))
        top1.update(logits, target)
        full.update(logits, target)
        ranks = reference_ranks(logits, target)
        assert top1.result()["accuracy@1"] == full.result()["accuracy@1"] == np.mean(ranks < 1)
        assert top1.calibration() == full.calibration()
        for key in ("loss", "entropy", "brier"):
            np.testing.assert_equal(top1.result()[key], full.result()[key])
