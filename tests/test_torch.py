"""cecore.torch against PyTorch: losses, autograd gradients, the module, errors, training."""

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cecore
import cecore._losses

torch = pytest.importorskip("torch")
ct = importlib.import_module("cecore.torch")  # only now: it imports torch
F = torch.nn.functional

C = 5  # classes
SHAPES = {"2-D": (6, C), "K-dim": (3, C, 2, 4), "unbatched": (C,)}
REDUCTIONS = ("mean", "sum", "none")
# ignore_index cases: (ignore_index, the flat target positions set to it)
IGNORE = {"none ignored": (-100, slice(0)), "some ignored": (1, slice(None, None, 2)),
          "all ignored": (-1, slice(None))}
RTOL = {torch.float32: 2e-6, torch.float64: 1e-12}


# ---------------------------------------------------------------- helpers


def class_dim(shape):
    return 0 if len(shape) == 1 else 1


def make_logits(shape, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def make_class_target(shape, ignore_index=-100, ignored=slice(0), seed=1):
    """int64 class indices for logits of ``shape``; flat positions ``ignored`` ignored."""
    batch = shape[:class_dim(shape)] + shape[class_dim(shape) + 1:]
    target = torch.randint(0, C, batch, generator=torch.Generator().manual_seed(seed))
    target.view(-1)[ignored] = ignore_index
    return target


def make_prob_target(shape, dtype, seed=2):
    logits = make_logits(shape, torch.float64, seed)
    return torch.softmax(logits, dim=class_dim(shape)).to(dtype)


def make_weight(dtype, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(C, generator=generator, dtype=torch.float64) + 0.5).to(dtype)


def grad_output_for(loss):
    """A non-uniform incoming gradient (0.5 for a scalar loss)."""
    values = torch.linspace(0.5, 1.5, loss.numel(), dtype=torch.float64)
    return values.reshape(loss.shape).to(loss.dtype)


def loss_and_grads(function, input, target, **options):
    """``function``'s loss and its gradients for input (and float targets), on fresh leaves."""
    leaves = [input.detach().clone().requires_grad_()]
    if target.is_floating_point():
        target = target.detach().clone().requires_grad_()
        leaves.append(target)
    loss = function(leaves[0], target, **options)
    grads = torch.autograd.grad(loss, leaves, grad_output_for(loss))
    return loss.detach(), grads


def assert_matches(actual, expected, rtol=None):
    """Equal dtypes and shapes, values to ``rtol`` (relative to the largest |expected|)."""
    rtol = RTOL[expected.dtype] if rtol is None else rtol
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=True)


def assert_same_as_torch(input, target, **options):
    loss, grads = loss_and_grads(ct.cross_entropy, input, target, **options)
    expected_loss, expected_grads = loss_and_grads(F.cross_entropy, input, target, **options)
    assert_matches(loss, expected_loss)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert_matches(grad, expected)


# --------------------------------------------------- equality with PyTorch


@pytest.mark.parametrize("dtype", RTOL)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
@pytest.mark.parametrize("ignore", IGNORE.values(), ids=IGNORE)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_class_targets_match_pytorch(dtype, reduction, shape, ignore, weighted, label_smoothing):
    ignore_index, ignored = ignore
    assert_same_as_torch(
        make_logits(shape, dtype), make_class_target(shape, ignore_index, ignored),
        weight=make_weight(dtype) if weighted else None, ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing,
    )


@pytest.mark.parametrize("dtype", RTOL)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_probability_targets_match_pytorch(dtype, reduction, shape, weighted, label_smoothing):
    """Including the gradient with respect to the (soft) target."""
    assert_same_as_torch(
        make_logits(shape, dtype), make_prob_target(shape, dtype),
        weight=make_weight(dtype) if weighted else None, reduction=reduction,
        label_smoothing=label_smoothing,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float16_is_computed_in_float32_and_rounded(reduction):
    input, target = make_logits((8, C), torch.float16), make_class_target((8, C))
    loss, (grad,) = loss_and_grads(ct.cross_entropy, input, target, reduction=reduction)
    expected_loss, (expected_grad,) = loss_and_grads(F.cross_entropy, input.float(), target,
                                                     reduction=reduction)
    assert loss.dtype == grad.dtype == torch.float16
    assert_matches(loss.float(), expected_loss, rtol=1e-3)
    assert_matches(grad.float(), expected_grad, rtol=1e-3)


@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_non_contiguous_input(layout):
    base = make_logits((C, 12), torch.float64)
    input = base.t() if layout == "transposed" else base.t()[::2]
    assert not input.is_contiguous()
    assert_same_as_torch(input, make_class_target(tuple(input.shape)), label_smoothing=0.1)


def test_input_without_grad_gets_no_grad_fn_and_same_loss():
    input, target = make_logits((6, C), torch.float32), make_class_target((6, C))
    loss = ct.cross_entropy(input, target)
    assert loss.grad_fn is None
    assert not loss.requires_grad
    assert_matches(loss, F.cross_entropy(input, target))


# ------------------------------------------------------------------ autograd


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["class indices", "probabilities"])
def test_gradcheck(reduction, soft):
    shape = (3, C, 2)
    input = make_logits(shape, torch.float64).requires_grad_()
    if soft:
        target = make_prob_target(shape, torch.float64).requires_grad_()
        inputs, options = (input, target), {}
    else:
        target = make_class_target(shape, 1, slice(None, None, 2))
        inputs, options = (input,), {"ignore_index": 1}
    weight = make_weight(torch.float64)

    def loss(input, target=target):
        return ct.cross_entropy(input, target, weight, reduction=reduction,
                                label_smoothing=0.1, **options)

    assert torch.autograd.gradcheck(loss, inputs)


def test_gradient_for_probability_targets_only():
    input = make_logits((6, C), torch.float64)
    grads = {}
    for function in (ct.cross_entropy, F.cross_entropy):
        target = make_prob_target((6, C), torch.float64).requires_grad_()
        function(input, target, label_smoothing=0.3).backward()
        grads[function] = target.grad
    assert_matches(grads[ct.cross_entropy], grads[F.cross_entropy])


def test_gradient_is_computed_in_the_forward_only_when_needed(monkeypatch):
    calls = []

    def spy(logits, target, **options):
        calls.append(options["return_grad"])
        return original(logits, target, **options)

    original = cecore._losses.cross_entropy
    monkeypatch.setattr(cecore._losses, "cross_entropy", spy)
    input, target = make_logits((6, C), torch.float32), make_class_target((6, C))
    # label smoothing: not the common call, which a compiled fast path takes without a gradient
    ct.cross_entropy(input, target, label_smoothing=0.1)
    with torch.no_grad():
        ct.cross_entropy(input.requires_grad_(), target, label_smoothing=0.1)
    ct.cross_entropy(input, target, label_smoothing=0.1).backward()
    assert calls == [False, False, True]


def test_tensors_are_passed_to_cecore_without_copies(monkeypatch):
    seen = []

    def spy(logits, target, **options):
        seen.append((logits, target, options["weight"]))
        return original(logits, target, **options)

    original = cecore._losses.cross_entropy
    monkeypatch.setattr(cecore._losses, "cross_entropy", spy)
    input = make_logits((C, 12), torch.float32).t().requires_grad_()
    target, weight = make_class_target((12, C)), make_weight(torch.float32)
    ct.cross_entropy(input, target, weight)
    (logits, target_array, weight_array), = seen
    for tensor, array in ((input, logits), (target, target_array), (weight, weight_array)):
        assert np.shares_memory(array, tensor.detach().numpy())


def test_double_backward_raises():
    """Also when the incoming gradient is a constant (torch's once_differentiable lets
    that case through, and the second derivative would silently be 0)."""
    input = make_logits((4, C), torch.float64).requires_grad_()
    loss = ct.cross_entropy(input, make_class_target((4, C)))
    with pytest.raises(RuntimeError, match=r"once differentiable.*create_graph=True"):
        torch.autograd.grad(loss, input, create_graph=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_repeated_backward_with_retain_graph_accumulates(reduction):
    """The saved gradient, handed over as is for a grad_output of 1, stays intact."""
    input = make_logits((4, C), torch.float64).requires_grad_()
    loss = ct.cross_entropy(input, make_class_target((4, C)), reduction=reduction)
    loss.backward(retain_graph=True)
    once = input.grad.clone()
    loss.backward(retain_graph=True)
    loss.backward()
    assert_matches(input.grad, 3 * once)


# -------------------------------------------------------------------- module


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weight"])
def test_module_matches_torch_module(reduction, weighted):
    options = {"weight": make_weight(torch.float64) if weighted else None,
               "ignore_index": 2, "reduction": reduction, "label_smoothing": 0.2}
    ours, theirs = ct.CrossEntropyLoss(**options), torch.nn.CrossEntropyLoss(**options)
    assert isinstance(ours, torch.nn.Module)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    input, target = make_logits((3, C, 4), torch.float64), make_class_target((3, C, 4))
    loss, (grad,) = loss_and_grads(lambda x, t: ours(x, t), input, target)
    expected_loss, (expected_grad,) = loss_and_grads(lambda x, t: theirs(x, t), input, target)
    assert_matches(loss, expected_loss)
    assert_matches(grad, expected_grad)


def test_module_weight_is_a_buffer():
    module = ct.CrossEntropyLoss(weight=make_weight(torch.float32)).to(torch.float64)
    assert module.weight.dtype == torch.float64
    assert [name for name, _ in module.named_buffers()] == ["weight"]


@pytest.mark.parametrize("deprecated", ["size_average", "reduce"])
def test_module_rejects_deprecated_arguments(deprecated):
    with pytest.raises(ValueError, match=f"{deprecated}.*use reduction="):
        ct.CrossEntropyLoss(**{deprecated: False})


# -------------------------------------------------------------------- errors


def _arguments_with(name, convert):
    """Arguments of a 2-D call, ``convert`` applied to the one called ``name``."""
    args = {"input": make_logits((4, C), torch.float32),
            "target": make_class_target((4, C)), "weight": make_weight(torch.float32)}
    args[name] = convert(args[name])
    return args


@pytest.mark.parametrize("name", ["input", "target", "weight"])
def test_other_devices_are_rejected(name):
    with pytest.raises(ValueError, match=rf"{name} is on device 'meta'.*"
                                         r"torch\.nn\.functional\.cross_entropy"):
        ct.cross_entropy(**_arguments_with(name, lambda t: t.to("meta")))


@pytest.mark.parametrize("name, dtype", [
    ("input", torch.complex64), ("input", torch.int64), ("target", torch.bool),
    ("weight", torch.int64),
])
def test_unsupported_dtypes_are_rejected(name, dtype):
    with pytest.raises(TypeError, match=rf"{name} has unsupported dtype {dtype}.*"
                                        r"torch\.nn\.functional\.cross_entropy"):
        ct.cross_entropy(**_arguments_with(name, lambda t: t.to(dtype)))


@pytest.mark.parametrize("call, error, message", [
    (lambda: ct.cross_entropy(np.zeros((2, C)), torch.zeros(2, dtype=torch.int64)),
     TypeError, "input must be a torch.Tensor, got ndarray"),
    (lambda: ct.cross_entropy(torch.eye(C).to_sparse(), torch.zeros(C, dtype=torch.int64)),
     TypeError, "input must be a dense"),
    (lambda: ct.cross_entropy(torch.tensor(1.0), torch.tensor(0)),
     ValueError, "input must have at least one dimension"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.tensor([0, C])),
     ValueError, r"target\[1\] = 5 is out of range"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(3, dtype=torch.int64)),
     ValueError, "target has shape"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(2, C + 1)),
     ValueError, "probability target has shape"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(2, dtype=torch.int64),
                              reduction="avg"),
     ValueError, "reduction must be one of"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(2, dtype=torch.int64),
                              label_smoothing=1.5),
     ValueError, "label_smoothing must be in"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(2, dtype=torch.int64),
                              torch.ones(C + 1)),
     ValueError, "weight must have shape"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(2, dtype=torch.int64),
                              torch.ones(C, requires_grad=True)),
     ValueError, "weight requires a gradient"),
    (lambda: ct.cross_entropy(torch.zeros(2, C), torch.zeros(2, dtype=torch.int64), None, 0),
     TypeError, "positional argument"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------ import, training


def test_import_cecore_does_not_import_torch():
    code = "import sys, cecore; print('torch' in sys.modules)"
    root = Path(cecore.__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=root)
    assert result.stdout.strip() == "False"


def test_import_without_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    monkeypatch.delitem(sys.modules, "cecore.torch")
    with pytest.raises(ImportError, match=r'pip install "cecore\[torch\]"'):
        importlib.import_module("cecore.torch")


def train(loss_function, dtype, steps=20):
    """Losses of SGD steps on a linear classifier of synthetic data."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(256, 20, generator=generator, dtype=dtype)
    labels = (features @ torch.randn(20, C, generator=generator, dtype=dtype)).argmax(1)
    torch.manual_seed(0)
    model = torch.nn.Linear(20, C, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_function(model(features), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_training_loop_matches_pytorch(dtype, rtol):
    losses = train(ct.cross_entropy, dtype)
    expected = train(F.cross_entropy, dtype)
    assert losses == pytest.approx(expected, rel=rtol)
    assert losses[-1] < 0.5 * losses[0]  # it trains


def test_module_in_training_loop_matches_pytorch():
    losses = train(ct.CrossEntropyLoss(label_smoothing=0.1), torch.float64)
    expected = train(torch.nn.CrossEntropyLoss(label_smoothing=0.1), torch.float64)
    assert losses == pytest.approx(expected, rel=1e-10)
