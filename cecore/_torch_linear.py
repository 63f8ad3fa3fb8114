"""cecore.torch.linear_cross_entropy: ``torch.nn.functional.linear_cross_entropy``
with the gradients computed in the forward pass's chunk loop (see cecore._linear).

The products run in PyTorch (its BLAS, its dtypes: bfloat16 products stay
bfloat16), the fused cross-entropy kernel on zero-copy NumPy views of each
chunk of logits, which it turns into their gradient in place.
"""

import math

import numpy as np
import torch

from cecore import _linear
from cecore._losses import _check_softcap, _check_z_loss, _reduce
from cecore._validation import _from_torch, check_int, check_reduction, divide
from cecore._validation import class_weight as class_weight_array

_FLOATS = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check(tensor, name, dtypes, optional=False):
    if tensor is None and optional:
        return
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(
            f"{name} is on device '{tensor.device}', but cecore computes on the CPU only: "
            f"use torch.nn.functional.linear_cross_entropy for {tensor.device.type} tensors")
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {tensor.layout}")
    if tensor.dtype not in dtypes:
        supported = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} has unsupported dtype {tensor.dtype} (supported: {supported})")


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         reduction="mean", ignore_index=None, label_smoothing=0.0, z_loss=0.0,
                         softcap=None, chunk_size=None, n_threads=None, options=None):
    r"""``cross_entropy(input @ linear_weight.T + linear_bias, target)`` without the logits:
    ``torch.nn.functional.linear_cross_entropy`` on the CPU.

    Same signature, semantics and results as PyTorch 2.13's function (class-index
    and probability targets, class ``weight``, ``ignore_index=None`` meaning -100
    for class indices; see :func:`cecore.linear_cross_entropy` for the formulas),
    plus cecore's options after them. The ``N x V`` logits never exist: the
    forward pass projects ``chunk_size`` rows at a time into one buffer (with
    PyTorch's matrix product, in the input's dtype), cecore's fused kernel turns
    them into the loss and, when a gradient is wanted, into their gradient in
    place, and two products add that chunk's share to the gradients of
    ``input``, ``linear_weight`` and ``linear_bias`` (only those that require
    one). The backward pass scales the saved gradients by the incoming one.
    With ``reduction="none"`` the incoming gradient differs per position, so the
    backward pass runs the chunk loop again (one more product of the logits).
    Memory: as :func:`cecore.linear_cross_entropy` (at most
    ``min(64 MB, N V itemsize / 8)`` besides the gradients).

    Parameters
    ----------
    input : torch.Tensor of shape (..., D), float32/bfloat16/float16/float64, CPU
        PyTorch accepts ``(D,)`` and ``(N, D)``; more leading dimensions are
        flattened here.
    linear_weight : torch.Tensor of shape (V, D), the dtype of ``input``
        (PyTorch's K-dimensional weights ``(V, d1, ..., D)`` are not supported).
    target : torch.Tensor
        Class indices (integer, ``input``'s shape without its last dimension)
        or class probabilities (floating, shape ``(..., V)``).
    linear_bias : torch.Tensor of shape (V,), optional
    weight : torch.Tensor of shape (V,), optional
        Per-class weights (not differentiated, as in PyTorch).
    reduction : {"mean", "sum", "none"}, default "mean"
    ignore_index : int, optional
        Default: -100 for class indices; with probability targets an explicit
        value raises ValueError (PyTorch: RuntimeError).
    label_smoothing : float in [0, 1], default 0
    z_loss, softcap
        As :func:`cecore.linear_cross_entropy`: PaLM's z-loss and Gemma 2's
        logit soft-capping, fused into each chunk's kernel, in the gradients too.
    chunk_size : int, optional
        Rows per chunk; default: the memory rule of
        :func:`cecore.linear_cross_entropy`.
    n_threads : int, optional
        OpenMP threads of the kernel (default 1: PyTorch's threads run the
        products).
    options : optional
        Accepted for PyTorch compatibility and ignored: PyTorch's
        ``LinearCrossEntropyOptions`` choose its own chunking strategy; cecore
        always chunks (``chunk_size`` sets the chunk).

    Returns
    -------
    torch.Tensor
        The loss in ``input``'s dtype (computed in float32 for 16-bit input):
        0-dim for ``"mean"``/``"sum"``, the target positions' shape for
        ``"none"``. Once differentiable (``create_graph=True`` raises).

    Raises
    ------
    TypeError, ValueError
        Non-tensors, unsupported dtypes, mismatched dtypes or shapes, a tensor
        on another device (named), a class ``weight`` or probability ``target``
        requiring a gradient, and the errors of
        :func:`cecore.linear_cross_entropy`.

    Examples
    --------
    >>> import torch
    >>> from cecore.torch import linear_cross_entropy
    >>> h = torch.randn(8, 16, requires_grad=True)
    >>> w = torch.randn(100, 16, requires_grad=True)
    >>> loss = linear_cross_entropy(h, w, torch.randint(0, 100, (8,)))
    >>> loss.backward()
    >>> h.grad.shape, w.grad.shape
    (torch.Size([8, 16]), torch.Size([100, 16]))
    """
    del options  # accepted and ignored (see the docstring)
    _check(input, "input", _FLOATS)
    _check(linear_weight, "linear_weight", _FLOATS)
    _check(linear_bias, "linear_bias", _FLOATS, optional=True)
    _check(target, "target", _FLOATS + _INTEGERS)
    _check(weight, "weight", _FLOATS, optional=True)
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the features)")
    if linear_weight.dim() != 2 or linear_weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"linear_weight must have shape (V, {input.shape[-1]}) to match input's last "
            f"dimension, got {tuple(linear_weight.shape)} (K-dimensional weights are not "
            "supported)")
    if linear_weight.dtype != input.dtype:
        raise TypeError(f"linear_weight has dtype {linear_weight.dtype}, expected input's "
                        f"dtype {input.dtype}")
    n_classes = linear_weight.shape[0]
    if n_classes == 0:
        raise ValueError("linear_weight has zero rows (classes)")
    if linear_bias is not None:
        if tuple(linear_bias.shape) != (n_classes,):
            raise ValueError(f"linear_bias must have shape ({n_classes},), got "
                             f"{tuple(linear_bias.shape)}")
        if linear_bias.dtype != input.dtype:
            raise TypeError(f"linear_bias has dtype {linear_bias.dtype}, expected input's "
                            f"dtype {input.dtype}")
    grad_on = torch.is_grad_enabled()
    if weight is not None and weight.requires_grad and grad_on:
        raise ValueError("weight requires a gradient, but the loss is not differentiated "
                         "with respect to class weights (nor is PyTorch's); pass "
                         "weight.detach()")
    if target.requires_grad and grad_on:
        raise ValueError("target requires a gradient: cecore.torch.linear_cross_entropy does "
                         "not differentiate probability targets; pass target.detach()")
    reduction = check_reduction(reduction)
    given = ignore_index is not None
    ignore_index = -100 if ignore_index is None else check_int(ignore_index, "ignore_index")
    if given and target.dtype in _FLOATS:
        raise ValueError("ignore_index cannot be specified when target contains "
                         f"probabilities (got ignore_index={ignore_index})")
    settings = dict(reduction=reduction, ignore_index=ignore_index,
                    label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                    chunk_size=chunk_size, n_threads=n_threads)
    plan = _Plan(input, linear_weight, target, weight, settings)  # validates all options
    if grad_on and (input.requires_grad or linear_weight.requires_grad
                    or (linear_bias is not None and linear_bias.requires_grad)):
        return _LinearCrossEntropy.apply(input, linear_weight, linear_bias, plan)
    return plan.run(input, linear_weight, linear_bias, (False, False, False))[0]


class _Plan:
    """The validated targets and options of one call."""

    def __init__(self, input, linear_weight, target, weight, s):
        n_classes = linear_weight.shape[0]
        self.reduction = s["reduction"]
        label_smoothing = _linear.check_fraction(s["label_smoothing"], "label_smoothing")
        cw = class_weight_array(None if weight is None else _from_torch(weight, "weight"),
                                n_classes, "weight")
        z_loss = _check_z_loss(s["z_loss"])
        self.batch_shape = tuple(input.shape[:-1])
        self.n = math.prod(self.batch_shape)
        self.targets, self.positions = _linear._prepare_targets(
            _from_torch(target, "target"), self.batch_shape, n_classes,
            ignore_index=s["ignore_index"], label_smoothing=label_smoothing, weight=cw,
            shift=False, ignore_index_given=False)
        itemsize = input.element_size()
        compute_itemsize = 8 if input.dtype == torch.float64 else 4
        # scratch rows of width D: 16-bit weight gradients without an input gradient
        # (TorchProjection), and the scaled input rows of "none"'s backward pass
        d = input.shape[-1]
        row_extra = d * itemsize * ((input.dtype not in (torch.float32, torch.float64))
                                    + (self.reduction == "none"))
        self.chunk = _linear._check_chunk_size(s["chunk_size"], self.n, n_classes, itemsize,
                                               row_extra)
        self.n_threads = 1 if s["n_threads"] is None else s["n_threads"]
        _linear.resolve_n_threads(self.n_threads, self.chunk * n_classes)
        self.result_dtype = np.dtype(np.float64 if compute_itemsize == 8 else np.float32)
        self.targets.training_options(z_loss, _check_softcap(s["softcap"], self.result_dtype))

    def run(self, input, linear_weight, linear_bias, wanted, row_scale=None):
        """(loss tensor, grad_input, grad_weight, grad_bias) — gradients of those
        ``wanted``; ``row_scale``: per-position weights of the gradient ("none")."""
        with torch.no_grad():
            rows = input.detach().reshape(self.n, input.shape[-1])
            w = linear_weight.detach()
            b = None if linear_bias is None else linear_bias.detach()
            with_grad = any(wanted)
            projection = TorchProjection(rows, w, b, self.chunk, wanted, row_scale)
            scale = 1.0
            if with_grad and self.reduction == "mean":
                scale = divide(1.0, self.targets.normaliser)
            none = self.reduction == "none" and row_scale is None
            per_row = np.empty(self.n if none else 0, self.result_dtype)
            total, weight_sum = _linear._chunk_loop(
                projection, self.targets, self.n, self.chunk, scale, with_grad, per_row,
                self.n_threads, self.result_dtype)
            loss = None
            if row_scale is None:
                loss = _reduce(total, weight_sum, per_row, self.reduction, self.positions,
                               self.result_dtype)
                loss = torch.from_numpy(np.asarray(loss)).to(input.dtype)
            gh, gw, gb = projection.gradients()
            if gh is not None:
                gh = gh.reshape(input.shape)
            return loss, gh, gw, gb


class TorchProjection:
    """As cecore._linear._NumpyProjection, with PyTorch's products and dtypes: float32
    and float64 weight gradients are accumulated by ``addmm_`` in place. Weight and
    bias gradients of 16-bit tensors are accumulated in float32 (each chunk's product
    rounded once to 16 bits, added in float32), the product going a slice of classes
    at a time through the input gradient's rows not yet written (or a chunk-sized
    buffer when no input gradient is wanted)."""

    def __init__(self, rows, w, bias, chunk, wanted, row_scale):
        n, d = rows.shape
        v = w.shape[0]
        self.rows, self.w, self.bias = rows, w, bias
        self.w_t = w.T
        self.want_h, self.want_w, self.want_b = wanted
        self.want_b = self.want_b and bias is not None
        self.buffer = torch.empty((min(chunk, max(n, 1)), v), dtype=rows.dtype)
        self.view = _from_torch(self.buffer, "logits")
        self.row_scale = None
        if row_scale is not None:
            self.row_scale = row_scale.detach().reshape(n, 1).to(rows.dtype)
        self.wide = rows.dtype in (torch.float32, torch.float64)
        acc = rows.dtype if self.wide else torch.float32
        self.gh = torch.zeros((n, d), dtype=rows.dtype) if self.want_h else None
        self.gw = torch.zeros((v, d), dtype=acc) if self.want_w else None
        self.gb = torch.zeros(v, dtype=acc) if self.want_b else None
        self.first_product = True
        self.accumulator = None
        if self.want_w and not self.wide and not self.want_h:
            self.accumulator = torch.empty((self.buffer.shape[0], d), dtype=rows.dtype)

    def logits(self, first, last):
        z = self.buffer[:last - first]
        h = self.rows[first:last]
        if self.bias is not None:
            torch.addmm(self.bias, h, self.w_t, out=z)
        else:
            torch.mm(h, self.w_t, out=z)
        return self.view[:last - first]

    def backward(self, first, last, _):
        dz = self.buffer[:last - first]  # the kernel's gradient, written in place
        h = self.rows[first:last]
        g = None if self.row_scale is None else self.row_scale[first:last]
        if self.want_w:  # first: the 16-bit path uses gh[first:] as scratch
            hs = h if g is None else h * g
            if not self.wide:
                self._add_16bit(dz, hs, first)
            elif self.first_product:
                torch.mm(dz.T, hs, out=self.gw)
            else:
                self.gw.addmm_(dz.T, hs)
            self.first_product = False
        if self.want_h:
            out = self.gh[first:last]
            torch.mm(dz, self.w, out=out)
            if g is not None:
                out.mul_(g)
        if self.want_b:
            if g is None:
                self.gb += dz.sum(0, dtype=self.gb.dtype)
            else:
                self.gb += (dz.T @ g).reshape(-1).to(self.gb.dtype)

    def _add_16bit(self, dz, hs, first):
        scratch = self.accumulator if self.accumulator is not None else self.gh[first:]
        v, step = self.gw.shape[0], scratch.shape[0]
        for v0 in range(0, v, step):
            v1 = min(v, v0 + step)
            part = scratch[:v1 - v0]
            torch.mm(dz[:, v0:v1].T, hs, out=part)
            self.gw[v0:v1] += part

    def gradients(self):
        dtype = self.rows.dtype
        gw = None if self.gw is None else self.gw.to(dtype)
        gb = None if self.gb is None else self.gb.to(dtype)
        return self.gh, gw, gb


def _is_one(t):
    return t.dim() == 0 and t.item() == 1


class _LinearCrossEntropy(torch.autograd.Function):
    """The loss, with the gradients computed in the forward pass ("mean", "sum") or
    by a second chunk loop in the backward pass ("none")."""

    @staticmethod
    def forward(ctx, input, linear_weight, linear_bias, plan):
        wanted = tuple(ctx.needs_input_grad[:3])
        ctx.plan = plan
        if plan.reduction == "none":
            loss = plan.run(input, linear_weight, linear_bias, (False,) * 3)[0]
            ctx.save_for_backward(input, linear_weight, linear_bias)
            ctx.wanted = wanted
            return loss
        loss, gh, gw, gb = plan.run(input, linear_weight, linear_bias, wanted)
        ctx.save_for_backward(gh, gw, gb)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "cecore.torch.linear_cross_entropy is once differentiable: its gradient "
                "cannot be differentiated again (create_graph=True); use "
                "torch.nn.functional.linear_cross_entropy for higher-order gradients")
        plan = ctx.plan
        if plan.reduction == "none":
            input, linear_weight, linear_bias = ctx.saved_tensors
            _, gh, gw, gb = plan.run(input, linear_weight, linear_bias, ctx.wanted,
                                     row_scale=grad_output)
            return gh, gw, gb, None
        grads = ctx.saved_tensors
        if not _is_one(grad_output):
            grads = [None if g is None else g * grad_output.to(g.dtype) for g in grads]
        return (*grads, None)

