"""cecore.torch.logit_divergence / KLDivLogitsLoss and cecore.logit_divergence against
PyTorch's composite expressions (log_softmax + kl_div; TRL's generalised JSD)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import cecore  # noqa: E402
import cecore.torch as ct  # noqa: E402


def torch_divergence(z, r, kind="kl", beta=0.5, temperature=1.0, mask=None,
                     reduction="mean"):
    """The usual PyTorch recipe (TRL's generalized_jsd_loss for "jsd"), per position
    over the last dimension."""
    lp = F.log_softmax(z / temperature, -1)
    lr = F.log_softmax(r / temperature, -1)
    if kind == "kl" or (kind == "jsd" and beta == 0):
        d = F.kl_div(lp, lr, reduction="none", log_target=True)
    elif kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        d = F.kl_div(lr, lp, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=lp.dtype)
        lm = torch.logsumexp(torch.stack([lp + torch.log1p(-b), lr + torch.log(b)]), dim=0)
        d = (b * F.kl_div(lm, lr, reduction="none", log_target=True)
             + (1 - b) * F.kl_div(lm, lp, reduction="none", log_target=True))
    d = d.sum(-1)
    if mask is not None:
        d = torch.where(mask, d, torch.zeros_like(d))
    if reduction == "none":
        return d
    if reduction == "sum":
        return d.sum()
    return d.sum() / (mask.sum() if mask is not None else d.numel())


KINDS = [("kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.0), ("jsd", 0.3), ("jsd", 1.0)]


def make(shape, k, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(shape + (k,), generator=g, dtype=torch.float64)
    r = z + torch.randn(z.shape, generator=g, dtype=torch.float64)
    return z.to(dtype), r.to(dtype)


@pytest.mark.parametrize("kind, beta", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_forward_and_backward_match_torch(kind, beta, temperature, reduction):
    z, r = make((3, 5), 300)
    t = torch.randint(0, 300, (3, 5), generator=torch.Generator().manual_seed(1))
    t[0, :2] = -100
    x = z.clone().requires_grad_()
    loss = ct.logit_divergence(x, r, kind=kind, beta=beta, temperature=temperature, target=t,
                               reduction=reduction)
    xr = z.clone().requires_grad_()
    want = torch_divergence(xr, r, kind, beta, temperature, t != -100, reduction)
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-14)
    g = torch.randn(want.shape, dtype=torch.float64) if reduction == "none" else None
    (loss if g is None else (loss * g).sum()).backward()
    (want if g is None else (want * g).sum()).backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-14)
    # the NumPy function gives the same values
    np.testing.assert_allclose(
        cecore.logit_divergence(z.numpy(), r.numpy(), kind=kind, beta=beta,
                                temperature=temperature, target=t.numpy(),
                                reduction=reduction), want.detach().numpy(), rtol=1e-10,
        atol=1e-14)


@pytest.mark.parametrize("kind, beta", KINDS)
def test_gradcheck(kind, beta):
    z, r = make((2, 3), 6)
    t = torch.tensor([[1, -100, 2], [0, 5, 3]])
    for reduction in ("mean", "none"):
        def f(x, reduction=reduction):
            return ct.logit_divergence(x, r, kind=kind, beta=beta, temperature=1.3, target=t,
                                       reduction=reduction)
        assert torch.autograd.gradcheck(f, (z.clone().requires_grad_(),), eps=1e-6,
                                        atol=1e-7)


def test_shift_backward_none():
    z, r = make((2, 6), 9)
    ids = torch.randint(0, 9, (2, 6), generator=torch.Generator().manual_seed(3))
    ids[:, :2] = -100
    x = z.clone().requires_grad_()
    loss = ct.logit_divergence(x, r, target=ids, shift=True, reduction="none")
    assert loss.shape == (2, 5)
    g = torch.randn(2, 5, dtype=torch.float64)
    (loss * g).sum().backward()
    xr = z.clone().requires_grad_()
    want = torch_divergence(xr[:, :-1], r[:, :-1], mask=ids[:, 1:] != -100, reduction="none")
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-14)
    (want * g).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-14)


def test_axis_none_backward():
    z, r = make((4, 5), 3)  # classes on axis 1 after a transpose
    zt, rt = z.transpose(1, 2).contiguous(), r.transpose(1, 2).contiguous()
    x = zt.clone().requires_grad_()
    loss = ct.logit_divergence(x, rt, axis=1, reduction="none", kind="reverse_kl")
    g = torch.randn(loss.shape, dtype=torch.float64)
    (loss * g).sum().backward()
    xr = z.clone().requires_grad_()
    want = torch_divergence(xr, r, "reverse_kl", reduction="none")
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-14)
    (want * g).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad.transpose(1, 2), rtol=1e-9, atol=1e-14)


def test_ref_requiring_grad_gets_none():
    z, r = make((3,), 7)
    x = z.clone().requires_grad_()
    rr = r.clone().requires_grad_()
    ct.logit_divergence(x, rr).backward()
    assert x.grad is not None and rr.grad is None
    # only the reference requires grad: a constant, no graph
    assert not ct.logit_divergence(z, rr).requires_grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_16_and_32_bit(dtype):
    z, r = make((4, 3), 2000, dtype)
    x = z.clone().requires_grad_()
    loss = ct.logit_divergence(x, r, kind="jsd")
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    want = torch_divergence(z.double(), r.double(), "jsd")
    assert loss.double().item() == pytest.approx(want.item(), rel=1e-2 if dtype != torch.float32
                                                 else 1e-4)
    # mixed: a bfloat16 student against a float32 teacher
    loss = ct.logit_divergence(z, r.float())
    assert loss.dtype == torch.promote_types(dtype, torch.float32)


def test_float32_accuracy_against_torch_float32():
    # cecore's float32 result is at least as close to the float64 value as torch's float32
    z, r = make((64,), 4000, torch.float32, seed=5)
    exact = torch_divergence(z.double(), r.double(), reduction="none")
    ours = ct.logit_divergence(z, r, reduction="none").double()
    theirs = torch_divergence(z, r, reduction="none").double()
    assert (ours - exact).abs().max() <= (theirs - exact).abs().max()


def test_module():
    z, r = make((2, 4), 11)
    t = torch.tensor([[1, 2, -100, 3], [4, 5, 6, -100]])
    fn = ct.KLDivLogitsLoss(kind="reverse_kl", temperature=2.0, reduction="sum")
    torch.testing.assert_close(fn(z, r, t), torch_divergence(z, r, "reverse_kl", 0.5, 2.0,
                                                             t != -100, "sum"))
    fn = ct.KLDivLogitsLoss(shift=True)
    assert fn(z, r, t).shape == ()


def test_errors():
    z, r = make((3,), 5)
    with pytest.raises(ValueError, match="ref_logits"):
        ct.logit_divergence(z, r[:, :4])
    with pytest.raises(ValueError, match="beta"):
        ct.logit_divergence(z, r, kind="jsd", beta=2.0)
    with pytest.raises(TypeError, match="ref_logits"):
        ct.logit_divergence(z, r.numpy())
    with pytest.raises(TypeError, match="target"):
        ct.logit_divergence(z, r, target=torch.zeros(3))
    x = z.clone().requires_grad_()
    loss = ct.logit_divergence(x, r)
    with pytest.raises(RuntimeError, match="once differentiable"):
        torch.autograd.grad(loss, x, create_graph=True)
    assert math.isfinite(loss.item())
