"""cecore.torch.linear_cross_entropy against torch.nn.functional.linear_cross_entropy."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
from cecore.torch import linear_cross_entropy  # noqa: E402


def inputs(dtype=torch.float64, n=37, d=16, v=50, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, dtype=dtype, generator=g).requires_grad_()
    w = (torch.randn(v, d, dtype=dtype, generator=g) * 0.5).requires_grad_()
    b = torch.randn(v, dtype=dtype, generator=g).requires_grad_() if bias else None
    y = torch.randint(0, v, (n,), generator=g)
    y[::5] = -100
    return h, w, b, y


def run(function, h, w, b, y, grad_output, **options):
    for t in (h, w, b):
        if t is not None:
            t.grad = None
    loss = function(h, w, y, linear_bias=b, **options)
    (loss * grad_output).sum().backward()
    return [loss.detach()] + [t.grad.clone() for t in (h, w, b) if t is not None]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"weight": "random"},
                                     {"ignore_index": 7, "label_smoothing": 0.2,
                                      "weight": "random"}, {"ignore_index": None}])
@pytest.mark.parametrize("chunk_size", [None, 1, 8])
def test_matches_torch(reduction, bias, options, chunk_size):
    h, w, b, y = inputs(bias=bias)
    options = dict(options)
    if options.get("weight") == "random":
        options["weight"] = torch.rand(50, dtype=torch.float64) + 0.5
    if options.get("ignore_index") not in (None, -100):
        y[y == -100] = options["ignore_index"]
    grad_output = torch.randn(37 if reduction == "none" else (), dtype=torch.float64)
    want = run(F.linear_cross_entropy, h, w, b, y, grad_output, reduction=reduction,
               **options)
    got = run(linear_cross_entropy, h, w, b, y, grad_output, reduction=reduction,
              chunk_size=chunk_size, **options)
    for a, c in zip(got, want):
        assert a.dtype == c.dtype and a.shape == c.shape
        torch.testing.assert_close(a, c, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets_match_torch(reduction):
    h, w, b, _ = inputs()
    p = torch.rand(37, 50, dtype=torch.float64).softmax(-1)
    cw = torch.rand(50, dtype=torch.float64) + 0.5
    grad_output = torch.randn(37 if reduction == "none" else (), dtype=torch.float64)
    options = dict(reduction=reduction, weight=cw, label_smoothing=0.1)
    want = run(F.linear_cross_entropy, h, w, b, p, grad_output, **options)
    got = run(linear_cross_entropy, h, w, b, p, grad_output, chunk_size=6, **options)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-11, atol=1e-13)


def test_float32_and_unbatched():
    h, w, b, y = inputs(torch.float32)
    want = run(F.linear_cross_entropy, h, w, b, y, 1.0)
    got = run(linear_cross_entropy, h, w, b, y, 1.0)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=2e-5, atol=1e-6)
    one = linear_cross_entropy(h[0], w, y[1], linear_bias=b)
    torch.testing.assert_close(one, F.linear_cross_entropy(h[0], w, y[1], linear_bias=b))


def test_bfloat16():
    h, w, b, y = inputs(torch.bfloat16, n=300, d=64, v=500)
    want = run(F.linear_cross_entropy, h, w, b, y, 1.0)
    got = run(linear_cross_entropy, h, w, b, y, 1.0, chunk_size=64)
    for a, c in zip(got, want):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), c.float(), rtol=3e-2, atol=3e-2 * c.abs().max())


@pytest.mark.parametrize("wanted", ["input", "weight", "bias"])
def test_bfloat16_one_gradient(wanted):
    """Without an input gradient the 16-bit weight gradient goes through its own buffer."""
    h, w, b, y = inputs(torch.bfloat16, n=300, d=64, v=500)
    for name, t in zip(("input", "weight", "bias"), (h, w, b)):
        t.requires_grad_(name == wanted)
    got = linear_cross_entropy(h, w, y, linear_bias=b, chunk_size=64)
    want = F.linear_cross_entropy(h, w, y, linear_bias=b)
    tensor = {"input": h, "weight": w, "bias": b}[wanted]
    got_grad = torch.autograd.grad(got, tensor)[0]
    want_grad = torch.autograd.grad(want, tensor)[0]
    assert got_grad.dtype == torch.bfloat16
    torch.testing.assert_close(got_grad.float(), want_grad.float(), rtol=3e-2,
                               atol=3e-2 * want_grad.abs().max())


def test_gradcheck():
    h, w, b, y = inputs(n=6, d=3, v=5)
    y[y == -100] = 2
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda h, w, b, r=reduction: linear_cross_entropy(h, w, y, linear_bias=b, reduction=r,
                                                 label_smoothing=0.1, chunk_size=4),
            (h, w, b))


def test_only_the_wanted_gradients():
    h, w, b, y = inputs()
    w.requires_grad_(False)
    loss = linear_cross_entropy(h, w, y, linear_bias=b.detach(), options=object())
    loss.backward()
    assert h.grad is not None and w.grad is None
    with torch.no_grad():
        assert not linear_cross_entropy(h, w, y).requires_grad


def test_once_differentiable():
    h, w, b, y = inputs()
    loss = linear_cross_entropy(h, w, y)
    (gh,) = torch.autograd.grad(loss, (h,), create_graph=False)
    loss = linear_cross_entropy(h, w, y)
    with pytest.raises(RuntimeError, match="once differentiable"):
        torch.autograd.grad(loss, (h,), create_graph=True)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"input": torch.zeros(4, 16, device="meta")}, ValueError, "on device 'meta'"),
        ({"linear_weight": torch.zeros(50, 16, dtype=torch.float32)}, TypeError,
         "linear_weight has dtype torch.float32"),
        ({"linear_weight": torch.zeros(50, 2, 16, dtype=torch.float64)}, ValueError,
         "K-dimensional weights are not supported"),
        ({"linear_bias": torch.zeros(49, dtype=torch.float64)}, ValueError,
         r"linear_bias must have shape \(50,\)"),
        ({"input": np.zeros((4, 16))}, TypeError, "input must be a torch.Tensor"),
        ({"target": torch.zeros(37, 50, dtype=torch.float64), "ignore_index": -100},
         ValueError, "ignore_index cannot be specified when target contains probabilities"),
        ({"weight": torch.ones(50, dtype=torch.float64, requires_grad=True)}, ValueError,
         "weight requires a gradient"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing must be in"),
        ({"z_loss": -1.0}, ValueError, "z_loss must be"),
        ({"softcap": 0.0}, ValueError, "softcap must be"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"n_threads": 0}, ValueError, "n_threads must be >= 1"),
        ({"target": torch.full((37,), 50)}, ValueError, r"target\[0\] = 50 is out of range"),
    ],
)
def test_bad_input(change, error, match):
    h, w, b, y = inputs()
    arguments = {"input": h, "linear_weight": w, "target": y, "linear_bias": b, **change}
    with pytest.raises(error, match=match):
        linear_cross_entropy(arguments.pop("input"), arguments.pop("linear_weight"),
                             arguments.pop("target"), **arguments)


def composite_z_loss_softcap(h, w, y, linear_bias=None, reduction="mean", z_loss=0.0,
                             softcap=None):
    """PyTorch's own ops: cap the materialised logits, cross-entropy plus z_loss lse^2
    per counted position (divided, for "mean", by the number of counted positions)."""
    z = F.linear(h, w, linear_bias)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    counted = y != -100
    per = F.cross_entropy(z, y, reduction="none")
    per = per + z_loss * torch.logsumexp(z, -1) ** 2 * counted
    if reduction == "none":
        return per
    return per.sum() / counted.sum() if reduction == "mean" else per.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{"z_loss": 0.01}, {"softcap": 2.0},
                                     {"z_loss": 0.1, "softcap": 1.5}])
def test_z_loss_and_softcap_match_a_torch_composite(reduction, options):
    h, w, b, y = inputs()
    with torch.no_grad():
        h *= 3
    grad_output = torch.randn(37 if reduction == "none" else (), dtype=torch.float64)
    want = run(composite_z_loss_softcap, h, w, b, y, grad_output, reduction=reduction,
               **options)
    got = run(linear_cross_entropy, h, w, b, y, grad_output, reduction=reduction,
              chunk_size=8, **options)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-11, atol=1e-13)


def test_z_loss_and_softcap_gradcheck():
    h, w, b, y = inputs(n=6, d=3, v=5)
    y[y == -100] = 2
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_cross_entropy(h, w, y, linear_bias=b, z_loss=0.1, softcap=1.5,
                                             chunk_size=4), (h, w, b))
