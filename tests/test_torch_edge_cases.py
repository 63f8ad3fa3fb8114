"""PyTorch's edge cases (issue #16, item 5): 0-d inputs to the softmax family and
``ignore_index`` with probability targets, compared with PyTorch itself."""

import numpy as np
import pytest

import cecore

torch = pytest.importorskip("torch")
F = torch.nn.functional
ct = pytest.importorskip("cecore.torch")

VALUES = [3.0, -2.5, 0.0, np.inf, -np.inf, np.nan]
TORCH_FUNCS = {
    "softmax": lambda t, axis: torch.softmax(t, axis),
    "log_softmax": lambda t, axis: torch.log_softmax(t, axis),
    "logsumexp": lambda t, axis: torch.logsumexp(t, axis),
}


@pytest.mark.parametrize("name", list(TORCH_FUNCS))
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_zero_dimensional_input_matches_torch(name, value, axis, dtype):
    x = np.asarray(value, dtype=dtype)
    ours = getattr(cecore, name)(x, axis=axis)
    theirs = TORCH_FUNCS[name](torch.from_numpy(x.copy()), axis).numpy()
    assert ours.shape == theirs.shape == ()
    if name == "logsumexp" and x.dtype == np.float16:
        # a reduction: float32 for 16-bit input (README, "16-bit input"), PyTorch's value
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours.astype(np.float16), theirs)
        return
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", list(TORCH_FUNCS))
def test_zero_dimensional_python_scalar(name):
    ours = getattr(cecore, name)(3)  # integers are promoted to float64
    expected = TORCH_FUNCS[name](torch.tensor(3.0, dtype=torch.float64), -1).numpy()
    assert ours.shape == () and ours.dtype == np.float64
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("name", list(TORCH_FUNCS))
@pytest.mark.parametrize("axis", [1, -2])
def test_zero_dimensional_other_axes_raise_as_torch_does(name, axis):
    with pytest.raises(IndexError, match="Dimension out of range"):
        TORCH_FUNCS[name](torch.tensor(3.0), axis)
    with pytest.raises(ValueError, match="out of range"):
        getattr(cecore, name)(np.float64(3.0), axis=axis)


# ------------------------------------------------ ignore_index with probabilities

def _soft_case():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 4))
    target = rng.dirichlet(np.ones(4), size=6)
    return logits, target


def _torch_outcome(call):
    try:
        return call()
    except RuntimeError as error:
        return error


@pytest.mark.parametrize("ignore_index", [-100, -1, -2, -101, -(2**63), 0, 1, 3, 4, 100])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_target_ignore_index_as_torch(ignore_index, reduction):
    logits, target = _soft_case()
    theirs = _torch_outcome(lambda: F.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(target), ignore_index=ignore_index,
        reduction=reduction))
    calls = {
        "cecore.cross_entropy": lambda: cecore.cross_entropy(
            logits, target, ignore_index=ignore_index, reduction=reduction),
        "cecore.torch.cross_entropy": lambda: ct.cross_entropy(
            torch.from_numpy(logits), torch.from_numpy(target), ignore_index=ignore_index,
            reduction=reduction).numpy(),
        "cecore.torch.CrossEntropyLoss": lambda: ct.CrossEntropyLoss(
            ignore_index=ignore_index, reduction=reduction)(
            torch.from_numpy(logits), torch.from_numpy(target)).numpy(),
    }
    for name, call in calls.items():
        if isinstance(theirs, RuntimeError):
            assert "ignore_index is not supported for floating point target" in str(theirs)
            with pytest.raises(ValueError,
                               match="ignore_index is not supported for floating point target"):
                call()
        else:
            np.testing.assert_allclose(call(), theirs.numpy(), rtol=1e-12, err_msg=name)


def test_probability_target_ignore_index_raises_before_any_gradient_is_written():
    logits, target = _soft_case()
    out = np.full_like(logits, 7.0)
    with pytest.raises(ValueError, match="ignore_index is not supported"):
        cecore.cross_entropy(logits, target, ignore_index=0, return_grad=True, out=out)
    assert np.all(out == 7.0)
    x = torch.from_numpy(logits).requires_grad_()
    with pytest.raises(ValueError, match="ignore_index is not supported"):
        ct.cross_entropy(x, torch.from_numpy(target), ignore_index=2)


def test_class_index_targets_still_take_any_ignore_index():
    logits, _ = _soft_case()
    target = np.array([0, 1, 2, 3, 2, 1])
    ours = cecore.cross_entropy(logits, target, ignore_index=2)
    theirs = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target), ignore_index=2)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)
