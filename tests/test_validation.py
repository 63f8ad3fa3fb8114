"""Errors of every public function (cecore/_validation.py and the callers).

Each error must have the documented type and a message naming the offending
argument, and must be raised before any result is returned.
"""

import re

import numpy as np
import pytest

import cecore

X = np.zeros((3, 4))
T = np.array([0, 1, 2])
P = np.full((3, 4), 0.25)
B = np.full((3, 4), 0.5)


def _all_calls():
    """(id, function of **kwargs) for every public function with valid data."""
    return {
        "cross_entropy": lambda **kw: cecore.cross_entropy(X, T, **kw),
        "cross_entropy-soft": lambda **kw: cecore.cross_entropy(X, P, **kw),
        "nll_loss": lambda **kw: cecore.nll_loss(X, T, **kw),
        "log_softmax": lambda **kw: cecore.log_softmax(X, **kw),
        "softmax": lambda **kw: cecore.softmax(X, **kw),
        "logsumexp": lambda **kw: cecore.logsumexp(X, **kw),
        "binary_cross_entropy": lambda **kw: cecore.binary_cross_entropy(B, B, **kw),
        "binary_cross_entropy_with_logits":
            lambda **kw: cecore.binary_cross_entropy_with_logits(X, B, **kw),
        "entropy": lambda **kw: cecore.entropy(P, **kw),
        "cross_entropy_pq": lambda **kw: cecore.cross_entropy_pq(P, P, **kw),
        "kl_divergence": lambda **kw: cecore.kl_divergence(P, P, **kw),
    }


CALLS = _all_calls()
WITH_AXIS = [n for n in CALLS if not n.startswith("binary")]
WITH_REDUCTION = ["cross_entropy", "cross_entropy-soft", "nll_loss", "binary_cross_entropy",
                  "binary_cross_entropy_with_logits"]


@pytest.mark.parametrize("name", list(CALLS))
def test_valid_calls_work(name):
    # the baseline for every error test below: the same call without the bad argument
    out = CALLS[name]()
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("n_threads", [0, -1, -100])
def test_n_threads_below_one(name, n_threads):
    with pytest.raises(ValueError, match="n_threads"):
        CALLS[name](n_threads=n_threads)


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("n_threads", [1.5, "2", True], ids=["float", "str", "bool"])
def test_n_threads_not_an_integer(name, n_threads):
    with pytest.raises(TypeError, match="n_threads"):
        CALLS[name](n_threads=n_threads)


@pytest.mark.parametrize("name", list(CALLS))
def test_n_threads_accepts_numpy_integers(name):
    np.testing.assert_array_equal(CALLS[name](n_threads=np.int64(2)), CALLS[name](n_threads=1))


@pytest.mark.parametrize("name", WITH_AXIS)
@pytest.mark.parametrize("axis", [2, -3, 100])
def test_axis_out_of_range(name, axis):
    with pytest.raises(ValueError, match=r"axis.*out of range"):
        CALLS[name](axis=axis)


@pytest.mark.parametrize("name", WITH_AXIS)
@pytest.mark.parametrize("axis", [1.0, 1.5, "1"])
def test_axis_not_an_integer(name, axis):
    # a 3-D input (not the 2-D fast path)
    x3 = np.zeros((2, 3, 4))
    fns = {"cross_entropy": lambda **kw: cecore.cross_entropy(x3, np.zeros((2, 3), int), **kw),
           "cross_entropy-soft": lambda **kw: cecore.cross_entropy(x3, x3 + 0.25, **kw),
           "nll_loss": lambda **kw: cecore.nll_loss(x3, np.zeros((2, 3), int), **kw),
           "log_softmax": lambda **kw: cecore.log_softmax(x3, **kw),
           "softmax": lambda **kw: cecore.softmax(x3, **kw),
           "logsumexp": lambda **kw: cecore.logsumexp(x3, **kw),
           "entropy": lambda **kw: cecore.entropy(x3, **kw),
           "cross_entropy_pq": lambda **kw: cecore.cross_entropy_pq(x3, x3, **kw),
           "kl_divergence": lambda **kw: cecore.kl_divergence(x3, x3, **kw)}
    with pytest.raises(TypeError, match="axis must be an integer"):
        fns[name](axis=axis)


@pytest.mark.parametrize("name", WITH_AXIS)
@pytest.mark.parametrize("axis", [1.0, np.float64(1.0)], ids=["float", "np-float"])
def test_float_axis_rejected_for_2d_contiguous_input(name, axis):
    # regression: the 2-D fast path compared `axis == 1` before validating it
    with pytest.raises(TypeError, match="axis must be an integer"):
        CALLS[name](axis=axis)


# ---------------------------------------------------------------------------
# data types


BAD_DATA = {
    "str": np.array([["a", "b"], ["c", "d"]]),
    "object": np.array([[1.0, None], [2.0, 3.0]], dtype=object),
    "complex": np.zeros((2, 2), np.complex128),
    "datetime": np.zeros((2, 2), "datetime64[s]"),
}


@pytest.mark.parametrize("bad", list(BAD_DATA))
@pytest.mark.parametrize("fn", ["log_softmax", "softmax", "logsumexp"])
def test_non_numeric_softmax_input(fn, bad):
    with pytest.raises(TypeError, match=r"^x must be (a )?real"):
        getattr(cecore, fn)(BAD_DATA[bad])


@pytest.mark.parametrize("bad", list(BAD_DATA))
def test_non_numeric_logits(bad):
    with pytest.raises(TypeError, match=r"^logits must be (a )?real"):
        cecore.cross_entropy(BAD_DATA[bad], np.array([0, 1]))
    with pytest.raises(TypeError, match=r"^log_probs must be (a )?real"):
        cecore.nll_loss(BAD_DATA[bad], np.array([0, 1]))
    with pytest.raises(TypeError, match=r"^logits must be (a )?real"):
        cecore.binary_cross_entropy_with_logits(BAD_DATA[bad], np.zeros((2, 2)))
    with pytest.raises(TypeError, match=r"^probs must be (a )?real"):
        cecore.binary_cross_entropy(BAD_DATA[bad], np.zeros((2, 2)))


@pytest.mark.parametrize("bad", list(BAD_DATA))
def test_non_numeric_distributions(bad):
    with pytest.raises(TypeError, match=r"^p must be (a )?real"):
        cecore.entropy(BAD_DATA[bad])
    with pytest.raises(TypeError, match=r"^q must be (a )?real"):
        cecore.kl_divergence(np.full((2, 2), 0.5), BAD_DATA[bad])
    with pytest.raises(TypeError, match=r"^p must be (a )?real"):
        cecore.cross_entropy_pq(BAD_DATA[bad], np.full((2, 2), 0.5))


@pytest.mark.parametrize("target", [
    pytest.param(np.array([True, False, True]), id="bool"),
    pytest.param(np.array(["a", "b", "c"]), id="str"),
    pytest.param(np.array([0, 1, 2], dtype=object), id="object"),
    pytest.param(np.array([0, 1, 2]) + 0j, id="complex"),
])
def test_bad_class_target_type(target):
    with pytest.raises(TypeError, match="target"):
        cecore.cross_entropy(X, target)
    with pytest.raises(TypeError, match="target"):
        cecore.nll_loss(X, target)


def test_nll_loss_rejects_float_targets():
    with pytest.raises(TypeError, match="target"):
        cecore.nll_loss(X, np.array([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("fn", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("target", [np.array([["a"] * 4] * 3), np.zeros((3, 4)) + 0j],
                         ids=["str", "complex"])
def test_bce_bad_target_type(fn, target):
    with pytest.raises(TypeError, match="target"):
        getattr(cecore, fn)(B, target)


# ---------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize(("logits_shape", "target_shape", "axis"), [
    ((3, 4), (2,), -1),
    ((3, 4), (4,), -1),
    ((3, 4), (3, 1), -1),
    ((3, 4), (), -1),
    ((2, 4, 5), (2, 4), 1),
    ((2, 4, 5), (2, 5, 1), 1),
    ((4,), (1,), -1),
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_class_target_shape_mismatch(logits_shape, target_shape, axis):
    target = np.zeros(target_shape, np.int64)
    with pytest.raises(ValueError, match=re.escape(f"target has shape {target_shape}")):
        cecore.cross_entropy(np.zeros(logits_shape), target, axis=axis)
    with pytest.raises(ValueError, match="target"):
        cecore.nll_loss(np.zeros(logits_shape), target, axis=axis)


@pytest.mark.parametrize("target_shape", [(3, 5), (4, 3), (3, 4, 1), (12,)])
def test_probability_target_shape_mismatch(target_shape):
    with pytest.raises(ValueError, match="target"):
        cecore.cross_entropy(X, np.zeros(target_shape))


@pytest.mark.parametrize("fn", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("target_shape", [(3,), (4, 3), (3, 4, 1), (1, 4)])
def test_bce_target_shape_mismatch(fn, target_shape):
    # no broadcasting of the target (as torch)
    with pytest.raises(ValueError, match="target"):
        getattr(cecore, fn)(B, np.zeros(target_shape))


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss", "log_softmax", "softmax",
                                "logsumexp"])
@pytest.mark.parametrize("shape", [(3, 0), (0,), (2, 0, 3)])
def test_zero_classes(fn, shape):
    x = np.zeros(shape)
    axis = 1 if len(shape) > 1 else 0
    name = "x" if fn in ("log_softmax", "softmax", "logsumexp") else (
        "logits" if fn == "cross_entropy" else "log_probs")
    with pytest.raises(ValueError, match=f"{name} has zero classes"):
        if fn in ("cross_entropy", "nll_loss"):
            batch = tuple(s for i, s in enumerate(shape) if i != axis)
            getattr(cecore, fn)(x, np.zeros(batch, np.int64), axis=axis)
        else:
            getattr(cecore, fn)(x, axis=axis)


@pytest.mark.parametrize("fn", ["cross_entropy", "entropy"])
def test_zero_dimensional_input(fn):
    with pytest.raises(ValueError, match="at least one dimension"):
        if fn == "cross_entropy":
            cecore.cross_entropy(np.float64(1.0), np.int64(0))
        else:
            getattr(cecore, fn)(np.float64(1.0))


@pytest.mark.parametrize("fn", ["log_softmax", "softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [1, -2, 5])
def test_zero_dimensional_input_other_axes(fn, axis):
    # axis 0 / -1 of a 0-d array is its element (tests/test_torch_edge_cases.py)
    with pytest.raises(ValueError, match=f"axis {axis} is out of range for x with 0 dim"):
        getattr(cecore, fn)(np.float64(1.0), axis=axis)


# ---------------------------------------------------------------------------
# target values


@pytest.mark.parametrize(("target", "where", "value"), [
    (np.array([[0, 1, 2], [0, 1, 7]]), "target[1, 2]", 7),
    (np.array([[0, -1, 2], [0, 1, 3]]), "target[0, 1]", -1),
    (np.array([[0, 1, 2], [4, 1, 3]]), "target[1, 0]", 4),
    (np.array([[0, 1, 2], [-101, 1, 3]]), "target[1, 0]", -101),
])
def test_target_out_of_range_names_index_and_value(target, where, value):
    logits = np.zeros((2, 3, 4))
    msg = re.escape(f"{where} = {value} is out of range")
    for fn in (cecore.cross_entropy, cecore.nll_loss):
        for reduction in ("mean", "sum", "none"):
            with pytest.raises(ValueError, match=msg):
                fn(logits, target, reduction=reduction)
    with pytest.raises(ValueError, match=msg):
        cecore.cross_entropy(logits, target, label_smoothing=0.2, weight=np.ones(4))


def test_target_out_of_range_kdim_and_1d():
    logits = np.zeros((2, 4, 3, 2))
    target = np.zeros((2, 3, 2), np.int64)
    target[1, 2, 0] = 4
    with pytest.raises(ValueError, match=re.escape("target[1, 2, 0] = 4 is out of range")):
        cecore.cross_entropy(logits, target, axis=1)
    with pytest.raises(ValueError, match=re.escape("target = 5 is out of range")):
        cecore.cross_entropy(np.zeros(4), np.int64(5))
    with pytest.raises(ValueError, match=re.escape("target[2] = 9 is out of range")):
        cecore.nll_loss(X, np.array([0, 1, 9]))


@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int32, np.uint32, np.uint64])
def test_target_out_of_range_for_every_integer_dtype(int_dtype):
    target = np.array([0, 1, 4], dtype=int_dtype)
    with pytest.raises(ValueError, match=re.escape("target[2] = 4 is out of range")):
        cecore.cross_entropy(X, target)


def test_uint64_target_beyond_int64():
    target = np.array([0, 2**63 + 5, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=re.escape(f"target[1] = {2**63 + 5} is out of range")):
        cecore.cross_entropy(X, target)
    with pytest.raises(ValueError, match=re.escape("target[1]")):
        cecore.nll_loss(X, target)


def test_ignore_index_only_exempts_its_own_value():
    target = np.array([0, -100, 2])
    with pytest.raises(ValueError, match=re.escape("target[1] = -100 is out of range")):
        cecore.cross_entropy(X, target, ignore_index=-1)
    assert np.isfinite(cecore.cross_entropy(X, np.array([0, -1, 2]), ignore_index=-1))
    assert np.isfinite(cecore.cross_entropy(X, np.array([0, 255, 2], np.uint8), ignore_index=255))


def test_ignore_index_must_be_an_integer():
    with pytest.raises(TypeError, match="ignore_index"):
        cecore.cross_entropy(X, T, ignore_index=1.5)


@pytest.mark.parametrize("n_threads", [1, 2, 4])
def test_first_bad_target_is_reported_in_large_parallel_calls(rng, n_threads):
    # bad targets in several kernel blocks: the first in C order is named,
    # whatever the thread that met it
    n, k = 40_000, 10
    logits = rng.normal(size=(n, k)).astype(np.float32)
    target = rng.integers(0, k, size=n)
    target[[12_345, 20_000, 39_999]] = [k, -3, k + 7]
    before = logits.copy(), target.copy()
    for fn in (cecore.cross_entropy, cecore.nll_loss):
        for reduction in ("mean", "none"):
            with pytest.raises(ValueError, match=re.escape(f"target[12345] = {k} is out of range")):
                fn(logits, target, reduction=reduction, n_threads=n_threads)
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(target, before[1])


# ---------------------------------------------------------------------------
# values of probabilities (errors of the divergences: tests/test_divergence.py)


@pytest.mark.parametrize("bad", [-1e-12, 1.0000001, -np.inf, np.inf])
def test_bce_probs_outside_unit_interval(bad):
    p = np.full(40_000, 0.5)
    p[31_000] = bad
    with pytest.raises(ValueError, match="probs"):
        cecore.binary_cross_entropy(p, np.zeros_like(p))
    with pytest.raises(ValueError, match="probs"):
        cecore.binary_cross_entropy(p.astype(np.float32), np.zeros(p.shape, np.float32),
                                    reduction="none")


def test_errors_do_not_modify_inputs():
    logits = np.arange(12.0).reshape(3, 4)
    target = np.array([0, 9, 1])
    before = logits.copy(), target.copy()
    with pytest.raises(ValueError):
        cecore.cross_entropy(logits, target, reduction="none")
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(target, before[1])


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1], ids=["above", "below"])
def test_ignore_index_out_of_int64_range(value):
    with pytest.raises(ValueError, match="ignore_index"):
        cecore.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), ignore_index=value)


# ------------------------------------------------- review fixes: each failed before


@pytest.mark.parametrize("name", WITH_AXIS)
@pytest.mark.parametrize("axis", [True, np.True_], ids=["bool", "np-bool"])
def test_bool_axis_rejected(name, axis):
    # was read as axis 1 (bool is an int to operator.index)
    with pytest.raises(TypeError, match="axis must be an integer, got bool"):
        CALLS[name](axis=axis)


@pytest.mark.parametrize("value", ["0.5", b"0.5", True, np.True_],
                         ids=["str", "bytes", "bool", "np-bool"])
def test_label_smoothing_must_be_a_number(value):
    with pytest.raises(TypeError, match="label_smoothing must be a float in"):
        cecore.cross_entropy(X, T, label_smoothing=value)
    with pytest.raises(TypeError, match="label_smoothing must be a float in"):
        cecore.Evaluator(label_smoothing=value)


@pytest.mark.parametrize("name", ["entropy", "cross_entropy_pq", "kl_divergence"])
@pytest.mark.parametrize("base", ["2", True], ids=["str", "bool"])
def test_base_must_be_a_number(name, base):
    with pytest.raises(TypeError, match="base must be a positive number or None"):
        CALLS[name](base=base)


@pytest.mark.parametrize("name", WITH_REDUCTION)
def test_reduction_must_be_a_string(name):
    # an array gave NumPy's "truth value of an array is ambiguous"
    with pytest.raises(ValueError, match="reduction must be one of"):
        CALLS[name](reduction=np.array(["mean", "sum"]))


@pytest.mark.parametrize("fn", [
    lambda **kw: cecore.cross_entropy(X, T, **kw),
    lambda **kw: cecore.binary_cross_entropy_with_logits(X, B, **kw),
], ids=["cross_entropy", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("value", ["no", 1, np.array([1, 0]), None])
def test_return_grad_must_be_a_bool(fn, value):
    # "no" and 1 returned a (loss, grad) tuple
    with pytest.raises(TypeError, match="return_grad must be True or False"):
        fn(return_grad=value)


def test_return_grad_accepts_numpy_bools():
    loss, grad = cecore.cross_entropy(X, T, return_grad=np.True_)
    assert grad.shape == X.shape
    assert np.isscalar(cecore.cross_entropy(X, T, return_grad=np.False_))


@pytest.mark.parametrize("name", ["cross_entropy_pq", "kl_divergence"])
def test_q_none_is_rejected(name):
    # was read as "no q": H(p) and zeros came back
    fn = getattr(cecore, name)
    with pytest.raises(TypeError, match="q must be a real numeric array"):
        fn(P, None)


@pytest.mark.parametrize(("call", "name"), [
    (lambda bad: cecore.cross_entropy(bad, [0, 1]), "logits"),
    (lambda bad: cecore.cross_entropy([[0.0, 1.0], [1.0, 0.0]], bad), "target"),
    (lambda bad: cecore.softmax(bad), "x"),
    (lambda bad: cecore.cross_entropy(X, T, weight=bad), "weight"),
    (lambda bad: cecore.binary_cross_entropy_with_logits(X, B, pos_weight=bad), "pos_weight"),
    (lambda bad: cecore.entropy(bad), "p"),
    (lambda bad: cecore.entropy(P, measure=bad), "measure"),
    (lambda bad: cecore.Evaluator().update(bad, [0, 1]), "logits"),
], ids=["logits", "target", "softmax", "weight", "pos_weight", "entropy", "measure",
        "evaluator"])
def test_ragged_sequences_name_the_argument(call, name):
    # NumPy's own "setting an array element with a sequence" named nothing
    with pytest.raises(ValueError, match=rf"^{name} must be a rectangular array"):
        call([[1.0, 2.0], [3.0]])


@pytest.mark.parametrize("topk", [np.int64(5), [np.int32(1), 5]])
def test_evaluator_topk_accepts_numpy_integers(topk):
    # np.int64(5) was rejected as "not an integer"
    assert cecore.Evaluator(topk=topk).topk[-1] == 5


@pytest.mark.parametrize("topk", [True, [True, 2], np.True_])
def test_evaluator_topk_rejects_bools(topk):
    with pytest.raises(TypeError, match="topk must be an integer"):
        cecore.Evaluator(topk=topk)
