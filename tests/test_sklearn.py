"""cecore.sklearn.log_loss (cecore/sklearn.py) against scikit-learn's."""

import inspect
import warnings

import numpy as np
import pytest
from _helpers import run_python_child

metrics = pytest.importorskip("sklearn.metrics")
from cecore.sklearn import log_loss  # noqa: E402


def _theirs(*args, **kwargs):
    """scikit-learn's result or exception, and the categories of its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = metrics.log_loss(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - compared with ours below
            result = error
    return result, sorted({w.category.__name__ for w in caught})


def _ours(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = log_loss(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            result = error
    return result, sorted({w.category.__name__ for w in caught})


def assert_same(*args, rtol=1e-12, **kwargs):
    theirs, their_warnings = _theirs(*args, **kwargs)
    ours, our_warnings = _ours(*args, **kwargs)
    assert our_warnings == their_warnings
    if isinstance(theirs, Exception):
        assert isinstance(ours, Exception), f"scikit-learn raised {theirs!r}, cecore gave {ours}"
        assert isinstance(ours, type(theirs)) or isinstance(theirs, type(ours)) or (
            isinstance(ours, ValueError) and isinstance(theirs, ValueError)), (ours, theirs)
        return
    assert not isinstance(ours, Exception), ours
    assert type(ours) is float
    np.testing.assert_allclose(ours, theirs, rtol=rtol)


def _proba(rng, n, k, dtype=np.float64):
    return rng.dirichlet(np.ones(k), size=n).astype(dtype)


LABEL_SETS = {
    "int": np.array([0, 1, 2, 3]),
    "shifted-int": np.array([-3, 5, 10, 11]),
    "str": np.array(["cat", "ant", "dog", "bee"]),
    "object-str": np.array(["b", "a", "d", "c"], dtype=object),
    "float": np.array([0.0, 1.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("label_set", list(LABEL_SETS))
def test_multiclass_matches_sklearn(label_set, k, dtype, normalize, weighted):
    rng = np.random.default_rng(k)
    labels = LABEL_SETS[label_set][:k]
    y = labels[rng.integers(0, k, 50)]
    y[:k] = labels  # every class occurs
    p = _proba(rng, 50, k, dtype)
    if dtype != np.float64:
        p = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    w = rng.uniform(0, 3, 50) if weighted else None
    assert_same(y, p, normalize=normalize, sample_weight=w,
                rtol={np.float64: 1e-12, np.float32: 1e-5, np.float16: 5e-3}[dtype])


@pytest.mark.parametrize("shape", ["1d", "column", "two"])
@pytest.mark.parametrize("y", [[0, 1, 1, 0], ["no", "yes", "yes", "no"], [True, False, True, True],
                               [2, 7, 7, 2]])
def test_binary_shapes_match_sklearn(y, shape):
    p = np.array([0.2, 0.7, 0.9, 0.4])
    proba = {"1d": p, "column": p[:, None], "two": np.stack([1 - p, p], axis=1)}[shape]
    assert_same(y, proba)
    assert_same(y, proba.tolist())


def test_labels_for_classes_absent_from_y_true():
    rng = np.random.default_rng(0)
    p = _proba(rng, 6, 3)
    assert_same([0, 2, 2, 0, 2, 0], p, labels=[0, 1, 2])
    assert_same(["a", "c", "a", "c", "c", "a"], p, labels=["a", "b", "c"])
    assert_same([1, 1, 1, 1, 1, 1], p[:, :2] / p[:, :2].sum(1, keepdims=True), labels=[1, 2])


def test_unsorted_labels_warn_as_sklearn():
    p = _proba(np.random.default_rng(1), 3, 3)
    assert_same([0, 1, 2], p, labels=[2, 1, 0])
    with pytest.warns(UserWarning, match="ordered lexicographically"):
        log_loss([0, 1, 2], p, labels=[2, 1, 0])


def test_clipping_of_zero_and_one_as_sklearn():
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-6), (np.float16, 5e-3)):
        assert_same([0, 1, 1], np.array([0.0, 1.0, 0.0], dtype), rtol=rtol)
        assert_same([0, 1], np.array([[1.0, 0.0], [1.0, 0.0]], dtype), rtol=rtol)
    assert_same([0, 1], [0, 1])  # integer probabilities


def test_indicator_y_true_matches_sklearn():
    rng = np.random.default_rng(2)
    p = _proba(rng, 5, 3)
    y = np.eye(3, dtype=int)[[0, 2, 1, 1, 0]]
    assert_same(y, p)
    assert_same(y, p, sample_weight=[1, 2, 3, 4, 5], normalize=False)
    soft_y = np.array([[0, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 1], [1, 0, 1]])
    assert_same(soft_y, p)


def test_probabilities_not_summing_to_one_warn():
    p = np.array([[0.2, 0.7], [0.6, 0.5]])
    assert_same([0, 1], p)
    with pytest.warns(UserWarning, match="do not sum to one"):
        log_loss([0, 1], p)


def test_y_pred_is_a_deprecated_alias():
    assert_same([0, 1], y_pred=[0.2, 0.7])
    with pytest.warns(FutureWarning, match="`y_pred` was renamed to `y_proba` in version 1.9"):
        value = log_loss([0, 1], y_pred=[0.2, 0.7])
    assert value == log_loss([0, 1], [0.2, 0.7])
    with pytest.raises(ValueError, match="Cannot use both `y_pred` and `y_proba`"):
        log_loss([0, 1], [0.2, 0.7], y_pred=[0.2, 0.7])


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (([0, 1], [0.2, np.nan]), {}, "NaN"),
    (([0, 1], [0.2, np.inf]), {}, "infinity"),
    (([0, 1], [0.2, 1.5]), {}, "greater than 1"),
    (([0, 1], [0.2, -0.5]), {}, "lower than 0"),
    (([0, 0], [0.2, 0.3]), {}, "only one label"),
    (([0, 2], [[.1, .2, .7], [.2, .2, .6]]), {}, "different number of classes"),
    (([0, 2], [[.1, .2, .7], [.2, .2, .6]]), {"labels": [0, 1]}, "not belonging"),
    (([0, 1], [[.1, .2, .7], [.2, .2, .6]]), {"labels": [0, 1]}, "number of classes in labels"),
    (([1, 1], [0.2, 0.3]), {"labels": [1]}, "at least two labels"),
    (([0, 1, 1], [0.2, 0.3]), {}, "inconsistent numbers of samples"),
    (([0, 1], [0.2, 0.3]), {"sample_weight": [0, 0]}, "at least one non-zero"),
    (([0, 1], [0.2, 0.3]), {"sample_weight": [1, 2, 3]}, "inconsistent numbers of samples"),
    (([0, 1], [0.2, 0.3]), {"sample_weight": [np.nan, 1]}, "NaN"),
    (([0.5, 1], [0.2, 0.3]), {}, "continuous"),
    (([0, "a"], [0.2, 0.3]), {}, None),
    (([0, 1], [[[0.2]], [[0.3]]]), {}, "dim 3"),
    (([], []), {}, "0 sample"),
    (([0, 1], 0.2), {}, "array-like"),
    (([0, 1], [0.2, 0.3]), {"normalize": 1}, "'normalize'"),
    (([0, 1], [0.2, 0.3]), {"sample_weight": 2}, "array-like"),
    (([0, 1], [0.2 + 1j, 0.3]), {}, "omplex"),
])
def test_errors_where_sklearn_raises(args, kwargs, match):
    theirs, _ = _theirs(*args, **kwargs)
    assert isinstance(theirs, (ValueError, TypeError)), theirs
    expected = ValueError if isinstance(theirs, ValueError) else TypeError
    with pytest.raises(expected, match=match):
        log_loss(*args, **kwargs)


def test_weights_summing_to_zero():
    assert_same([0, 1], [0.2, 0.3], sample_weight=[1, -1])
    with pytest.raises(ZeroDivisionError, match="Weights sum to zero"):
        log_loss([0, 1], [0.2, 0.3], sample_weight=[1, -1])
    assert_same([0, 1], [0.2, 0.3], sample_weight=[1, -1], normalize=False)


def test_large_random_case():
    rng = np.random.default_rng(7)
    p = _proba(rng, 20000, 10, np.float32)
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, 10, 20000)
    assert_same(y, p, rtol=1e-5)
    assert_same(y, p, sample_weight=rng.uniform(size=20000), rtol=1e-5)


def test_signature_matches_sklearn():
    params = inspect.signature(log_loss).parameters
    theirs = inspect.signature(metrics.log_loss).parameters
    assert [(p.name, p.default, p.kind) for p in params.values()] == [
        (p.name, p.default, p.kind) for p in theirs.values()]


def test_import_does_not_import_sklearn(tmp_path):
    code = ("import sys, cecore.sklearn; assert 'sklearn' not in sys.modules; "
            "assert 'cecore.sklearn' not in __import__('cecore').__all__")
    proc = run_python_child(code, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_docstring_examples():
    import doctest

    import cecore.sklearn

    failures, tried = doctest.testmod(cecore.sklearn, report=False)
    assert tried and failures == 0
