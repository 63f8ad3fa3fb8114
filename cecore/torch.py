"""PyTorch drop-in for ``torch.nn.functional.cross_entropy`` and ``torch.nn.CrossEntropyLoss``.

The loss and its gradient are computed in one fused pass by
:func:`cecore.cross_entropy` on zero-copy NumPy views of CPU tensors; the
gradient is kept for the backward pass, which only scales it by the incoming
gradient. Importing this module imports PyTorch (``import cecore`` does not).

Examples
--------
>>> import torch
>>> from cecore.torch import cross_entropy
>>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]], requires_grad=True)
>>> loss = cross_entropy(logits, torch.tensor([0, 2]))
>>> loss.backward()
>>> round(loss.item(), 5), logits.grad.shape
(0.66996, torch.Size([2, 3]))
"""

import numpy as np

from cecore import _logit_divergence, _losses, _softmax, _softmax_kernels
from cecore._validation import _from_torch, is_bfloat16

try:
    import torch
except ImportError as error:
    raise ImportError(
        'cecore.torch needs PyTorch; install it with: pip install "cecore[torch]"'
    ) from error

__all__ = ["CrossEntropyLoss", "KLDivLogitsLoss", "cross_entropy", "logit_divergence"]

_FLOATS = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
_FAST_FLOATS = (torch.float32, torch.float64)
_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def cross_entropy(input, target, weight=None, *, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, z_loss=0.0, softcap=None, sample_weight=None,
                  shift=False):
    r"""Cross-entropy of ``softmax(input)`` and ``target``: ``torch.nn.functional.cross_entropy``.

    Same semantics and results as PyTorch's function of this name (see
    :func:`cecore.cross_entropy` for the formulas), computed by cecore's fused
    CPU kernel. When ``input`` requires a gradient (and grad mode is on), the
    gradient is computed in the same pass as the loss and saved for the
    backward pass; otherwise only the loss is computed. Probability targets
    that require a gradient get one too. The function is once differentiable:
    ``create_graph=True`` in its backward pass raises RuntimeError.

    Parameters
    ----------
    input : torch.Tensor, bfloat16/float16/float32/float64, on the CPU
        Logits of shape ``(C,)`` (unbatched), ``(N, C)`` or ``(N, C, d1, ...)``:
        the class dimension is 0 for 1-D input and 1 otherwise. bfloat16 and
        float16 are read as they are (no copy) and computed in float32.
    target : torch.Tensor, on the CPU
        Class indices (an integer dtype, usually int64) of ``input``'s shape
        without the class dimension, or class probabilities (floating, the
        shape of ``input``).
    weight : torch.Tensor of shape (C,), optional
        Per-class weights (bfloat16/float16/float32/float64, on the CPU, not requiring
        a gradient).
    ignore_index : int, default -100
        Class-index target value that contributes neither loss nor gradient
        and is not counted by ``"mean"``. With probability targets a value
        >= 0 raises ValueError (PyTorch raises RuntimeError).
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0
    z_loss : float >= 0, default 0
        cecore's option: adds ``z_loss * lse(z)**2`` per counted position (PaLM's
        z-loss; see :func:`cecore.cross_entropy`).
    softcap : float > 0, optional
        cecore's option: the logits become ``softcap * tanh(input / softcap)``
        before everything else (Gemma 2's final-logit soft-capping); the
        gradient goes through the tanh.
    sample_weight : torch.Tensor, optional
        cecore's option: one non-negative weight per position (the target's shape
        for class indices; ``input``'s shape without the class dimension for
        probabilities), multiplying that position's loss; ``"mean"`` divides by
        ``sum(sample_weight * weight[target])`` over counted positions (see
        :func:`cecore.cross_entropy`). It is a constant: it gets no gradient
        (one that requires a gradient raises ValueError).
    shift : bool, default False
        cecore's option: next-token prediction, ``input`` (..., T, C) with the
        class dimension last and ``target`` (..., T): position t is scored
        against target t + 1, without copies (the gradient is 0 at the last
        position). With ``shift``, the class dimension is the last one (not 1).

    Returns
    -------
    torch.Tensor
        The loss in ``input``'s dtype, as PyTorch returns it (for 16-bit input
        computed in float32 and rounded once): a 0-dim tensor for ``"mean"``
        and ``"sum"``, the shape of the target positions for ``"none"``. The
        gradient is in ``input``'s dtype too.

    Raises
    ------
    TypeError
        An argument that is not a tensor, or has an unsupported dtype (e.g.
        complex) or layout.
    ValueError
        A tensor on another device than the CPU (e.g. CUDA), a ``weight``
        that requires a gradient, and every error of
        :func:`cecore.cross_entropy` (mismatched shapes, targets out of range,
        a bad ``reduction`` or ``label_smoothing``).

    Notes
    -----
    Unlike PyTorch's function, the options after ``weight`` are keyword-only
    and the deprecated ``size_average`` and ``reduce`` are not accepted.
    Threads follow cecore's default (``OMP_NUM_THREADS``, threadpoolctl), not
    ``torch.set_num_threads``.
    """
    if (type(input) is torch.Tensor and type(target) is torch.Tensor and weight is None
            and input.dtype in _FAST_FLOATS and target.dtype is torch.int64
            and input.dim() == 2 and input.is_cpu and target.is_cpu
            and input.layout is torch.strided
            and target.layout is torch.strided and not input.is_neg()
            and type(ignore_index) is int and ignore_index == -100
            and type(label_smoothing) is float and label_smoothing == 0.0
            and type(reduction) is str and reduction == "mean" and shift is False
            and softcap is None and sample_weight is None
            and type(z_loss) is float and z_loss == 0.0):
        # the common call, validated in compiled code (None: take the general path, which
        # also raises every error)
        if not input.requires_grad:
            loss = _softmax_kernels.ce_index_fast(input.numpy(), target.numpy(), True)
            if loss is not None:
                return torch.from_numpy(loss)
        elif torch.is_grad_enabled():
            result = _softmax_kernels.ce_index_grad_fast(input.detach().numpy(),
                                                         target.numpy(), True)
            if result is not None:
                return _CommonCrossEntropy.apply(input, result)
        else:
            loss = _softmax_kernels.ce_index_fast(input.detach().numpy(), target.numpy(), True)
            if loss is not None:
                return torch.from_numpy(loss)
    _check_tensor(input, "input", _FLOATS)
    _check_tensor(target, "target", _FLOATS + _INTEGERS)
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the class dimension)")
    if weight is not None:
        _check_tensor(weight, "weight", _FLOATS)
        if weight.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "weight requires a gradient, but the loss is not differentiable with "
                "respect to weight (nor is PyTorch's); pass weight.detach()"
            )
    if sample_weight is not None:
        _check_tensor(sample_weight, "sample_weight", _FLOATS + _INTEGERS + (torch.bool,))
        if sample_weight.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "sample_weight requires a gradient, but cecore.torch.cross_entropy gives it "
                "none (it is a constant weighting); pass sample_weight.detach()"
            )
    if not isinstance(shift, bool):
        raise TypeError(f"shift must be True or False, got {shift!r}")
    axis = -1 if shift else (0 if input.dim() == 1 else 1)
    options = {"axis": axis, "ignore_index": ignore_index,
               "reduction": reduction, "label_smoothing": label_smoothing,
               "z_loss": z_loss, "softcap": softcap, "shift": shift,
               "sample_weight": _numpy(sample_weight, "sample_weight")}
    if torch.is_grad_enabled() and (input.requires_grad or target.requires_grad):
        return _CrossEntropy.apply(input, target, weight, options)
    return _loss(input, target, weight, options, with_grad=False)[0]


class CrossEntropyLoss(torch.nn.Module):
    """Module form of :func:`cross_entropy`, a drop-in for ``torch.nn.CrossEntropyLoss``.

    Parameters
    ----------
    weight : torch.Tensor of shape (C,), optional
        Per-class weights, registered as a buffer (as PyTorch does).
    size_average, reduce : None
        Deprecated in PyTorch; anything but None raises ValueError (use
        ``reduction``).
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0
    z_loss, softcap, shift : keyword-only
        cecore's options of :func:`cross_entropy`; ``forward(input, target,
        sample_weight=None)`` takes the per-position weights.

    Examples
    --------
    >>> import torch
    >>> from cecore.torch import CrossEntropyLoss
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    >>> loss = loss_fn(torch.zeros(4, 10), torch.tensor([1, 2, 3, 4]))
    >>> round(loss.item(), 5)
    2.30259
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0, *, z_loss=0.0, softcap=None,
                 shift=False):
        super().__init__()
        if size_average is not None or reduce is not None:
            raise ValueError(
                "size_average and reduce are deprecated (in PyTorch too) and not supported; "
                "use reduction='mean', 'sum' or 'none'"
            )
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.shift = shift

    def forward(self, input, target, sample_weight=None):
        return cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing,
                             z_loss=self.z_loss, softcap=self.softcap,
                             sample_weight=sample_weight, shift=self.shift)


class _CrossEntropy(torch.autograd.Function):
    """cross_entropy with the gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, input, target, weight, options):
        loss, grad = _loss(input, target, weight, options, with_grad=ctx.needs_input_grad[0])
        ctx.options = options
        ctx.save_for_backward(grad, input if ctx.needs_input_grad[1] else None, weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        # The saved gradient is a constant: differentiating it again would give
        # silently wrong second derivatives (torch's once_differentiable only
        # catches the case where grad_output requires a gradient).
        if torch.is_grad_enabled():
            raise RuntimeError(
                "cecore.torch.cross_entropy is once differentiable: its gradient cannot be "
                "differentiated again (create_graph=True); use "
                "torch.nn.functional.cross_entropy for higher-order gradients"
            )
        grad, input, weight = ctx.saved_tensors
        grad_output = _over_classes(grad_output, ctx.options)
        grad_input = None
        if grad is not None:
            # loss.backward() passes 1: hand over the saved gradient, saving a pass
            # over it (autograd copies it if the graph is retained)
            grad_input = grad if _is_one(grad_output) else grad * grad_output
        grad_target = None
        if input is not None:
            grad_target = _target_grad(input, weight, ctx.options) * grad_output
        return grad_input, grad_target, None, None


class _CommonCrossEntropy(torch.autograd.Function):
    """The common call's loss, its gradient computed with it by the compiled fast path.

    ``apply(input, (loss, grad))`` with the NumPy 0-d loss and gradient of
    ``ce_index_grad_fast``: less Python per call than _CrossEntropy, the same values.
    """

    @staticmethod
    def forward(ctx, input, result):
        loss, grad = result
        ctx.save_for_backward(torch.from_numpy(grad))
        return torch.from_numpy(loss)

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # see _CrossEntropy.backward
            raise RuntimeError(
                "cecore.torch.cross_entropy is once differentiable: its gradient cannot be "
                "differentiated again (create_graph=True); use "
                "torch.nn.functional.cross_entropy for higher-order gradients"
            )
        (grad,) = ctx.saved_tensors
        return (grad if _is_one(grad_output) else grad * grad_output), None


def _check_tensor(tensor, name, dtypes):
    """Raise unless ``tensor`` is a strided CPU tensor of one of ``dtypes``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(
            f"{name} is on device '{tensor.device}', but cecore computes on the CPU only: "
            f"use torch.nn.functional.cross_entropy for {tensor.device.type} tensors"
        )
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {tensor.layout}")
    if tensor.dtype not in dtypes:
        supported = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(
            f"{name} has unsupported dtype {tensor.dtype} (supported: {supported}); "
            "use torch.nn.functional.cross_entropy for other dtypes"
        )


def _numpy(tensor, name="input"):
    """A zero-copy NumPy view of a CPU tensor (any strides; bfloat16 as
    ``ml_dtypes.bfloat16``), or None."""
    return None if tensor is None else _from_torch(tensor, name)


def _tensor(array):
    """A NumPy array as a tensor sharing its memory (``ml_dtypes.bfloat16`` too)."""
    array = np.asarray(array)
    if is_bfloat16(array.dtype):
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _loss(input, target, weight, options, with_grad):
    """(loss, gradient or None) as tensors of ``input``'s dtype, computed by cecore."""
    result = _losses.cross_entropy(_numpy(input), _numpy(target, "target"),
                                   weight=_numpy(weight, "weight"), return_grad=with_grad,
                                   **options)
    loss, grad = result if with_grad else (result, None)
    loss = torch.from_numpy(np.asarray(loss)).to(input.dtype)
    return loss, None if grad is None else _tensor(grad)


def _over_classes(grad_output, options):
    """``grad_output`` shaped to broadcast against the input (a class dim for "none";
    with shift, a zero at the last position, which scores nothing)."""
    if options["reduction"] != "none":
        return grad_output
    if options.get("shift"):
        grad_output = torch.nn.functional.pad(grad_output, (0, 1))
    return grad_output.unsqueeze(options["axis"])


def _is_one(grad_output):
    return grad_output.dim() == 0 and grad_output.item() == 1


def _target_grad(input, weight, options):
    """Gradient of the loss (of the sum for "none") with respect to probability targets.

    ``-(1 - label_smoothing) * sample_weight * weight[k] * log_softmax(z)[k]`` with z
    the (soft-capped) logits, divided by the number of positions (by the sum of
    the sample weights) for ``"mean"``. The z-loss does not depend on the target.
    """
    axis = options["axis"]
    z = _numpy(input)
    if options["softcap"] is not None:
        c = float(options["softcap"])
        with np.errstate(over="ignore", invalid="ignore"):
            z = (c * np.tanh(np.asarray(z, np.float64) / c)).astype(
                np.float64 if input.dtype == torch.float64 else np.float32)
    log_probs = _tensor(_softmax.log_softmax(z, axis=axis))
    grad = log_probs.mul_(options["label_smoothing"] - 1.0)
    if weight is not None:
        grad.mul_(weight.reshape(weight.shape + (1,) * (input.dim() - axis - 1)))
    sw = options["sample_weight"]
    if sw is not None:
        grad.mul_(torch.from_numpy(np.asarray(sw, np.float64)).to(grad.dtype).unsqueeze(axis))
    if options["reduction"] == "mean":
        grad.div_(input.numel() // input.shape[axis] if sw is None
                  else float(np.sum(np.asarray(sw, np.float64))))
    return grad.to(input.dtype)


def logit_divergence(logits, ref_logits, *, kind="kl", axis=-1, temperature=1.0, beta=0.5,
                     target=None, ignore_index=-100, shift=False, reduction="mean",
                     n_threads=None):
    r"""Divergence between ``softmax(logits / T)`` and ``softmax(ref_logits / T)``, differentiable.

    :func:`cecore.logit_divergence` for CPU tensors (same arguments, formulas and
    errors; see there): ``kind="kl"`` is ``KL(r || p)``, i.e.
    ``F.kl_div(F.log_softmax(logits / T), F.log_softmax(ref_logits / T),
    log_target=True)`` summed over the classes, ``"reverse_kl"`` is ``KL(p || r)`` and
    ``"jsd"`` TRL's generalised JSD. When ``logits`` requires a gradient (and grad
    mode is on), the gradient is computed in the same pass as the loss and saved for
    the backward pass. ``ref_logits`` is a constant (a teacher's or the reference
    model's output): it gets no gradient (None) even if it requires one; detach it
    or compute its gradient with PyTorch if you need it. Once differentiable.

    Tensors are read without a copy (bfloat16 included); the loss is returned in the
    promoted dtype of the two inputs (for 16-bit inputs computed in float32 and
    rounded once), the gradient in ``logits``' dtype.

    Examples
    --------
    >>> import torch
    >>> from cecore.torch import logit_divergence
    >>> student = torch.zeros(2, 4, requires_grad=True)
    >>> teacher = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    >>> loss = logit_divergence(student, teacher)
    >>> loss.backward()
    >>> round(loss.item(), 5), student.grad.shape
    (0.23401, torch.Size([2, 4]))
    """
    _check_tensor(logits, "logits", _FLOATS)
    _check_tensor(ref_logits, "ref_logits", _FLOATS)
    if target is not None:
        _check_tensor(target, "target", _INTEGERS)
    options = {"kind": kind, "axis": axis, "temperature": temperature, "beta": beta,
               "ignore_index": ignore_index, "shift": shift, "reduction": reduction,
               "n_threads": n_threads}
    if torch.is_grad_enabled() and logits.requires_grad:
        return _LogitDivergence.apply(logits, ref_logits, target, options)
    return _divergence(logits, ref_logits, target, options, with_grad=False)[0]


class KLDivLogitsLoss(torch.nn.Module):
    """Module form of :func:`logit_divergence`: ``loss_fn(logits, ref_logits, target=None)``.

    Parameters
    ----------
    kind : {"kl", "reverse_kl", "jsd"}, default "kl"
    temperature : float > 0, default 1
    beta : float in [0, 1], default 0.5 (``kind="jsd"``)
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    shift : bool, default False

    Examples
    --------
    >>> import torch
    >>> from cecore.torch import KLDivLogitsLoss
    >>> loss_fn = KLDivLogitsLoss(kind="jsd", beta=0.5, temperature=2.0)
    >>> round(loss_fn(torch.zeros(3, 5), torch.zeros(3, 5)).item(), 6)
    0.0
    """

    def __init__(self, kind="kl", temperature=1.0, beta=0.5, ignore_index=-100,
                 reduction="mean", shift=False):
        super().__init__()
        self.kind = kind
        self.temperature = temperature
        self.beta = beta
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.shift = shift

    def forward(self, logits, ref_logits, target=None):
        return logit_divergence(logits, ref_logits, kind=self.kind,
                                temperature=self.temperature, beta=self.beta, target=target,
                                ignore_index=self.ignore_index, shift=self.shift,
                                reduction=self.reduction)


def _divergence(logits, ref_logits, target, options, with_grad):
    """(loss, gradient or None) as tensors, computed by cecore."""
    result = _logit_divergence.logit_divergence(
        _numpy(logits, "logits"), _numpy(ref_logits, "ref_logits"),
        target=_numpy(target, "target"), return_grad=with_grad, **options)
    loss, grad = result if with_grad else (result, None)
    dtype = torch.promote_types(logits.dtype, ref_logits.dtype)
    loss = torch.from_numpy(np.asarray(loss)).to(dtype)
    return loss, None if grad is None else _tensor(grad)


class _LogitDivergence(torch.autograd.Function):
    """logit_divergence with the gradient to logits computed in the forward pass."""

    @staticmethod
    def forward(ctx, logits, ref_logits, target, options):
        loss, grad = _divergence(logits, ref_logits, target, options, with_grad=True)
        ctx.options = options
        ctx.shape = logits.shape
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "cecore.torch.logit_divergence is once differentiable: its gradient cannot "
                "be differentiated again (create_graph=True)")
        (grad,) = ctx.saved_tensors
        options = ctx.options
        if options["reduction"] != "none":
            return (grad if _is_one(grad_output) else grad * grad_output), None, None, None
        # "none": grad_output has the positions' shape; the class axis is put back, and
        # with shift the last position (which has no loss) gets a zero
        go = grad_output
        if options["shift"]:
            go = torch.cat([go, go.new_zeros(go.shape[:-1] + (1,))], dim=-1)
            go = go.unsqueeze(-1)
        else:
            axis = options["axis"] % len(ctx.shape)
            go = go.unsqueeze(axis)
        return grad * go.to(grad.dtype), None, None, None


# ---------------------------------------------------------------- linear_cross_entropy
# (kept in its own module and block: the chunk loop lives in cecore/_torch_linear.py)
from cecore._torch_linear import linear_cross_entropy  # noqa: E402

__all__ += ["linear_cross_entropy"]
