"""Cross-entropy losses with PyTorch's semantics: cross_entropy, nll_loss, and
binary cross-entropy from probabilities or logits."""

import math

import numpy as np

from cecore import _binary_kernels, _softmax_kernels
from cecore._threads import resolve_n_threads, run_kernel
from cecore._tokens import token_layout
from cecore._validation import (
    aligned,
    as_float_array,
    as_logits_array,
    as_columns,
    as_result,
    as_rows,
    asarray,
    cast,
    check_bool,
    check_fraction,
    check_int,
    check_real,
    check_real_number,
    check_reduction,
    class_targets,
    class_weight,
    compute_dtype,
    divide,
    is_bfloat16,
    kernel_array,
    layout_shape,
    logits_rows,
    raise_bad_target,
    rows_of,
    trailing_broadcast,
)


def _reduce(total, normaliser, per_row, reduction, batch_shape, result_dtype):
    if reduction == "none":
        return per_row.reshape(batch_shape).astype(result_dtype, copy=False)
    if reduction == "sum":
        return as_result(total, result_dtype)
    return as_result(divide(total, normaliser), result_dtype)


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
_NO_PER_ROW = {_FLOAT32: np.empty(0, _FLOAT32), _FLOAT64: np.empty(0, _FLOAT64)}


def _result_dtype(rows):
    """float64 for float64 input, float32 for float32 and 16-bit input."""
    return compute_dtype(rows.dtype)


def _per_row_losses(reduction, n, dtype):
    """Where the kernel writes per-row losses: only for reduction="none"."""
    return np.empty(n, dtype) if reduction == "none" else _NO_PER_ROW[dtype]


def _check_z_loss(z_loss):
    """``z_loss`` as a float >= 0 (finite)."""
    value = check_real_number(z_loss, "z_loss", "a finite float >= 0")
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"z_loss must be a finite float >= 0, got {value}")
    return value


def _check_softcap(softcap, dtype):
    """``softcap`` as the kernels take it: 0.0 for None, else a float c > 0 that is a
    normal number of the compute ``dtype`` (float32 or float64) whose 1/c is finite."""
    if softcap is None:
        return 0.0
    value = check_real_number(softcap, "softcap", "None or a positive finite float")
    info = np.finfo(dtype)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"softcap must be None or a positive finite float, got {value}")
    if not float(info.tiny) <= value <= float(info.max) or not math.isfinite(
            float(np.divide(dtype.type(1.0), dtype.type(value)))):
        raise ValueError(
            f"softcap must be a normal {dtype} number with a finite reciprocal for "
            f"{dtype} computation, got {value}")
    return value


_NO_WEIGHTS = np.empty(0, np.float64)


def _sample_weights(sample_weight, shape, name="sample_weight"):
    """One weight per position: ``sample_weight`` (of exactly ``shape``) as a C-ordered
    float64 array of that shape, or None. TypeError for non-numeric data, ValueError
    for another shape or a negative, NaN or infinite weight (the first is named)."""
    if sample_weight is None:
        return None
    arr = asarray(sample_weight, name)
    check_real(arr, name, "fiub")
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have one weight per position, shape {tuple(shape)}, got "
            f"{arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~(np.isfinite(arr) & (arr >= 0.0))
    if bad.any():
        index = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape) if arr.ndim else ()
        raise ValueError(
            f"{name} must be finite and >= 0, got {arr[index]} at index {tuple(map(int, index))}")
    return arr


def _layout_sample_weights(sample_weight, lay):
    """Sample weights as (S, L) float64 for a token layout (cecore._tokens.Layout), or None.

    Without shift they have the target's shape; with shift either the target's
    shape (..., T) (the weight of target t weighs the prediction made at t - 1;
    [..., 0] is unused) or the positions' (..., T - 1).
    """
    if sample_weight is None:
        return None
    n_seq, length = lay.targets.shape
    given = np.shape(sample_weight)
    if lay.shift and given == lay.target.shape:
        return _sample_weights(sample_weight, given).reshape(n_seq, -1)[:, 1:]
    return _sample_weights(sample_weight, lay.positions).reshape(n_seq, length)


def _lse_out(return_lse, n, dtype):
    return np.empty(n, dtype) if return_lse else _NO_PER_ROW[dtype]


def _outputs(loss, grad, lse, return_grad, return_lse):
    """loss, (loss, grad), (loss, lse) or (loss, grad, lse)."""
    if not return_grad and not return_lse:
        return loss
    return (loss,) + ((grad,) if return_grad else ()) + ((lse,) if return_lse else ())


def cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    reduction="mean",
    n_threads=None,
    return_grad=False,
    out=None,
    shift=False,
    z_loss=0.0,
    softcap=None,
    sample_weight=None,
    return_lse=False,
):
    r"""Cross-entropy between softmax(logits) and targets, fused and stable.

    For class-index targets ``y`` (integer dtype, ``logits``' shape without
    ``axis``), each position contributes, with ``w`` the class weights (1 by
    default), ``K`` the number of classes and ``eps = label_smoothing``:

    .. math:: \ell = (1 - \epsilon) w_y (\mathrm{lse}(z) - z_y)
              + \frac{\epsilon}{K} \sum_k w_k (\mathrm{lse}(z) - z_k)

    where ``lse`` is the log-sum-exp of the logits ``z`` along ``axis``.
    Positions whose target equals ``ignore_index`` contribute 0 and are not
    counted. ``"mean"`` divides the sum by the total weight ``sum w_y`` of the
    counted positions (their number when ``weight`` is None).

    For probability targets (floating dtype, ``logits``' shape), with
    ``t' = (1 - eps) t + eps / K``: ``l = -sum_k w_k t'_k log softmax(z)_k``,
    and ``"mean"`` divides by the number of positions. Terms with
    ``t_k == 0`` are 0 even where ``z_k = -inf`` (``0 log 0 = 0``).

    These are the semantics of ``torch.nn.functional.cross_entropy``;
    ``axis=1`` on an ``(N, C, d1, ...)`` array is PyTorch's K-dimensional case.
    The logits are read once: each row's maximum, sum of exponentials and
    target logit come from one pass, with sums in float64.

    Parameters
    ----------
    logits : array_like, float16/float32/float64
        Unnormalised log-probabilities; ``-inf`` entries act as masks.
    target : array_like
        Class indices (any integer dtype) or probabilities (floating).
    axis : int, default -1
        The class axis of ``logits``.
    weight : array_like of shape (K,), optional
        Per-class weights.
    ignore_index : int, default -100
        Target value that is ignored (class-index targets only; with
        probability targets a value >= 0 raises ValueError, as in PyTorch).
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution over classes.
    reduction : {"mean", "sum", "none"}, default "mean"
    n_threads : int, optional
        OpenMP threads; default follows OMP_NUM_THREADS (see README).
    return_grad : bool, default False
        Also return the gradient of the loss with respect to ``logits``
        (of the sum of the losses for ``"none"``), computed in the same pass:
        ``scale * (c softmax(z) - smoothed target weights)``.
    out : numpy.ndarray, optional
        With ``return_grad``: receives the gradient; must have ``logits``'
        shape and dtype. It may be ``logits`` itself to save memory.
    shift : bool, default False
        Next-token prediction (class-index targets): logits ``(..., T, V)``
        with the class axis last and targets ``(..., T)``; logits at position
        ``t < T - 1`` are scored against target ``t + 1``, read in place (no
        copy of either array; one kernel call per sequence). ``"none"``
        returns ``(..., T - 1)``; the gradient has the logits' full shape,
        0 at the last position.
    z_loss : float >= 0, default 0
        PaLM's z-loss: adds ``z_loss * lse(z)**2`` to each counted position's
        loss (lse of the capped logits with ``softcap``); its gradient is
        ``2 z_loss lse softmax(z)``. Divided by the same normaliser as the rest.
    softcap : float > 0, optional
        Gemma 2's soft-capping: the logits become ``c tanh(z / c)`` before
        everything else (fused, nothing capped is stored); the gradient is
        multiplied by ``1 - tanh(z / c)**2``. ``+-inf`` logits become ``+-c``.
    sample_weight : array_like, optional
        One weight >= 0 per position (``logits``' shape without ``axis``; with
        ``shift``: the target's ``(..., T)``, whose ``[..., t]`` weighs the
        prediction of ``target[..., t]``, or the positions' ``(..., T - 1)``),
        multiplying that position's loss and gradient. With it ``"mean"`` is

        .. math:: \frac{\sum_{i \in P} s_i \ell_i}{\sum_{i \in P} s_i w_{y_i}}

        over the counted positions P (PyTorch's class-weight rule
        :math:`\sum_P w_{y_i}` with each position weighted by s); for
        probability targets the denominator is :math:`\sum_i s_i`. A weight
        of 0 makes the position contribute exactly 0, even with non-finite
        logits.
    return_lse : bool, default False
        Also return each position's log-sum-exp of the (capped) logits, in the
        result dtype, 0 at ignored positions (as :func:`token_stats`).

    Returns
    -------
    loss : numpy.float64 or numpy.float32, or numpy.ndarray for ``"none"``
        float64 for float64 logits, float32 otherwise. ``"none"`` has the
        target positions' shape (0 at ignored positions).
    grad : numpy.ndarray
        Only with ``return_grad=True``: ``(loss, grad)``, grad of ``logits``'
        shape and dtype (0 in rows whose target is ignored).
    lse : numpy.ndarray
        Only with ``return_lse=True``: ``(loss, lse)`` or, with a gradient,
        ``(loss, grad, lse)``; the positions' shape.

    Raises
    ------
    TypeError
        Non-numeric or complex data, a bool target.
    ValueError
        Mismatched shapes, a target out of range (its index and value are
        named; checked before any result is returned), a bad ``reduction``,
        ``label_smoothing`` outside [0, 1], ``axis`` out of range, ``weight``
        of the wrong length, zero classes, ``n_threads < 1``.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> round(float(cecore.cross_entropy(logits, np.array([0, 2]))), 5)
    0.66996
    """
    if (weight is None and n_threads is None and out is None
            and shift is False and softcap is None and sample_weight is None
            and return_lse is False and type(z_loss) is float and z_loss == 0.0
            and type(axis) is int and axis in (-1, 1) and type(ignore_index) is int
            and ignore_index == -100 and type(label_smoothing) is float
            and label_smoothing == 0.0 and type(reduction) is str and reduction == "mean"):
        # the common call, validated in compiled code (None: take the general path)
        if return_grad is False:
            loss = _softmax_kernels.ce_index_fast(logits, target)
            if loss is not None:
                return loss
        elif return_grad is True:
            result = _softmax_kernels.ce_index_grad_fast(logits, target)
            if result is not None:
                return result
    z_loss = _check_z_loss(z_loss)
    return_lse = check_bool(return_lse, "return_lse")
    if check_bool(shift, "shift"):
        return _shifted(_softmax_kernels.ce_index_loss_opts, logits, target, axis, weight,
                        ignore_index, reduction, n_threads, "logits",
                        (check_fraction(label_smoothing, "label_smoothing"), z_loss, softcap,
                         return_lse),
                        check_bool(return_grad, "return_grad"), out, sample_weight)
    rows, batch_shape, axis, in_dtype = logits_rows(logits, axis, "logits", columns=True)
    n, k = layout_shape(rows)
    reduction = check_reduction(reduction)
    label_smoothing = check_fraction(label_smoothing, "label_smoothing")
    ignore_index = check_int(ignore_index, "ignore_index")
    return_grad = check_bool(return_grad, "return_grad")
    w = class_weight(weight, k)
    result_dtype = _result_dtype(rows)
    softcap = _check_softcap(softcap, result_dtype)
    sw = _sample_weights(sample_weight, batch_shape)
    sw_flat = _NO_WEIGHTS if sw is None else sw.reshape(-1)
    logits_shape = batch_shape[:axis] + (k,) + batch_shape[axis:]
    t = asarray(target, "target")
    if rows.ndim == 3 and (softcap != 0.0 or t.dtype.kind not in "iu"):
        rows = rows_of(rows, axis)  # no column kernel for these (a transposed copy)
    resolve_n_threads(n_threads, rows.size)  # validated before any work
    per_row = _per_row_losses(reduction, n, result_dtype)
    lse = _lse_out(return_lse, n, result_dtype)
    x, half = kernel_array(rows)
    options = (z_loss, softcap, sw_flat, lse)

    if t.dtype.kind in "iu":
        t_flat = class_targets(t, batch_shape, k, ignore_index)
        scale = 1.0
        if return_grad:
            # validated up front: the gradient may overwrite the logits
            counted = _check_class_targets(t, t_flat, k, ignore_index)
            if reduction == "mean":
                scale = divide(1.0, _mean_normaliser(w, t_flat, counted, sw_flat if sw is not None
                                                     else None))
        grad_rows, finish = _gradient_buffer(return_grad, out, rows, (t_flat,), logits_shape,
                                             axis, in_dtype)
        if rows.ndim == 3:
            total, weight_sum, bad = run_kernel(
                _softmax_kernels.ce_index_cols, n_threads, rows.size,
                x, half, t_flat, w, ignore_index, label_smoothing, scale,
                kernel_array(grad_rows)[0], per_row, z_loss, sw_flat, lse,
            )
        else:
            total, weight_sum, bad = run_kernel(
                _softmax_kernels.ce_index_loss_opts, n_threads, rows.size,
                x, half, t_flat, w, ignore_index, label_smoothing, scale,
                kernel_array(grad_rows)[0], per_row, *options,
            )
        if bad >= 0:
            raise_bad_target(t, bad, k, ignore_index)
        loss = _reduce(total, weight_sum, per_row, reduction, batch_shape, result_dtype)
        return _outputs(loss, finish() if return_grad else None,
                        lse.reshape(batch_shape) if return_lse else None,
                        return_grad, return_lse)

    if t.dtype.kind == "f" or is_bfloat16(t.dtype):
        if ignore_index >= 0:  # PyTorch's rule: negative values (the default -100) pass
            raise ValueError(
                f"ignore_index is not supported for floating point target (got ignore_index="
                f"{ignore_index}; probability targets have no class to ignore: leave it at "
                "its default -100)"
            )
        if t.shape != logits_shape:
            raise ValueError(
                f"probability target has shape {t.shape}, expected the logits' shape "
                f"{logits_shape}"
            )
        t_arr, _ = as_float_array(t, "target")
        t_rows = as_rows(cast(t_arr, result_dtype), axis)
        normaliser = n if sw is None else float(np.sum(sw_flat))
        scale = divide(1.0, normaliser) if return_grad and reduction == "mean" else 1.0
        grad_rows, finish = _gradient_buffer(return_grad, out, rows, (t_rows,), logits_shape,
                                             axis, in_dtype)
        total = run_kernel(_softmax_kernels.ce_prob_loss_opts, n_threads, rows.size,
                           x, half, t_rows, w, label_smoothing, scale,
                           kernel_array(grad_rows)[0], per_row, *options)
        loss = _reduce(total, normaliser, per_row, reduction, batch_shape, result_dtype)
        return _outputs(loss, finish() if return_grad else None,
                        lse.reshape(batch_shape) if return_lse else None,
                        return_grad, return_lse)

    kind = "complex" if t.dtype.kind == "c" else str(t.dtype)
    raise TypeError(
        f"target must hold integer class indices or floating probabilities, got {kind}"
    )


def _mean_normaliser(w, targets, counted, sample_weight):
    """What "mean" divides by for class-index targets: sum over the counted positions
    of sample_weight * w[y] (either factor 1 when absent)."""
    per_target = w[targets[counted]] if w.size else None
    if sample_weight is None:
        return np.sum(per_target) if per_target is not None else np.count_nonzero(counted)
    return np.sum(sample_weight[counted] * per_target if per_target is not None
                  else sample_weight[counted])


def _check_class_targets(target, t_flat, n_classes, ignore_index, first_row=0):
    """Raise for the first out-of-range target; return the mask of counted positions.

    ``first_row``: where ``target`` starts in a larger array (see raise_bad_target).
    """
    counted = t_flat != ignore_index
    bad = np.flatnonzero(counted & ((t_flat < 0) | (t_flat >= n_classes)))
    if bad.size:
        raise_bad_target(target, int(bad[0]), n_classes, ignore_index, first_row)
    return counted




def _check_out(out, shape, in_dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != in_dtype:
        raise ValueError(
            f"out must have the logits' shape {shape} and dtype {in_dtype}, "
            f"got {out.shape} and {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out must be writeable")


def _gradient_columns(out, cols, inputs, shape, axis, in_dtype):
    """_gradient_buffer for a columns layout (cecore._validation.as_columns): the
    gradient in the logits' own shape, ``out`` written directly when it has a columns
    layout of the logits' dtype and is the logits themselves or overlaps no input."""
    if out is None:
        grad = np.empty(shape, cols.dtype)
        return grad.reshape(cols.shape), lambda: cast(grad, in_dtype)
    _check_out(out, shape, in_dtype)
    direct = None
    if out.dtype == cols.dtype:
        direct = as_columns(out, axis)
    if direct is not None:
        same = (direct.__array_interface__["data"][0] == cols.__array_interface__["data"][0]
                and direct.strides == cols.strides)
        if not same and any(np.may_share_memory(direct, a) for a in (cols, *inputs)):
            direct = None
    if direct is not None:
        return direct, lambda: out
    grad = np.empty(cols.shape, cols.dtype)

    def finish():
        with np.errstate(over="ignore"):
            np.copyto(out, grad.reshape(shape), casting="same_kind")
        return out

    return grad, finish


def _gradient_buffer(wanted, out, rows, inputs, shape, axis, in_dtype):
    """Where the kernel writes the gradient, and how to hand it back.

    Returns ``(grad_rows, finish)``: the 2-D array (rows layout) the kernel
    writes, and a function returning the gradient in ``shape``/``in_dtype``.
    ``out`` is written directly when it has the rows' layout and dtype (as the
    logits themselves do, when C-ordered with the class axis last); otherwise
    through a temporary, and always so when ``out`` overlaps an input in
    another layout (in-place is only safe element for element).
    """
    if not wanted:
        if out is not None:
            raise ValueError("out is only used with return_grad=True")
        return np.empty((0,) * rows.ndim, rows.dtype), None
    if rows.ndim == 3:
        return _gradient_columns(out, rows, inputs, shape, axis, in_dtype)
    k = rows.shape[1]
    moved_shape = shape[:axis] + shape[axis + 1:] + (k,)
    if out is None:
        grad_rows = np.empty_like(rows)
        grad = np.moveaxis(grad_rows.reshape(moved_shape), -1, axis)
        return grad_rows, lambda: np.ascontiguousarray(cast(grad, in_dtype))
    _check_out(out, shape, in_dtype)
    moved = np.moveaxis(out, axis, -1)
    direct = None
    if out.dtype == rows.dtype and out.flags.aligned:
        try:
            direct = moved.reshape(-1, k, copy=False)
        except ValueError:
            direct = None
    if direct is not None and k > 1 and direct.strides[1] != direct.itemsize:
        direct = None
    if direct is not None:
        same_as_rows = (direct.__array_interface__["data"][0]
                        == rows.__array_interface__["data"][0] and direct.strides == rows.strides)
        if not same_as_rows and any(np.may_share_memory(direct, a) for a in (rows, *inputs)):
            direct = None
    if direct is not None:
        return direct, lambda: out
    grad_rows = np.empty_like(rows)

    def finish():
        with np.errstate(over="ignore"):
            np.copyto(moved, grad_rows.reshape(moved_shape), casting="same_kind")
        return out

    return grad_rows, finish


def nll_loss(
    log_probs, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean",
    n_threads=None, shift=False, sample_weight=None,
):
    r"""Negative log-likelihood of class indices under given log-probabilities.

    ``l = -w_y log_probs[y]`` for each position, 0 where ``target ==
    ignore_index``; ``"mean"`` divides by the total weight of counted positions.
    Same semantics as ``torch.nn.functional.nll_loss``; ``log_probs`` is
    typically the output of :func:`log_softmax` (use :func:`cross_entropy` on
    logits to fuse both steps).

    Parameters and returns are those of :func:`cross_entropy` with class-index
    targets (no ``label_smoothing``, no gradient), ``shift`` and
    ``sample_weight`` included (``"mean"``: ``sum s_i l_i / sum s_i w_{y_i}``).
    ``z_loss`` and ``softcap`` act on logits, so they do not apply to
    log-probabilities: use :func:`cross_entropy`.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> lp = np.log(np.array([[0.5, 0.25, 0.25]]))
    >>> round(float(cecore.nll_loss(lp, np.array([1]))), 6)
    1.386294
    """
    if check_bool(shift, "shift"):
        return _shifted(_softmax_kernels.nll_loss, log_probs, target, axis, weight,
                        ignore_index, reduction, n_threads, "log_probs", None, False, None,
                        sample_weight)
    rows, batch_shape, axis, _ = logits_rows(log_probs, axis, "log_probs")
    n, k = rows.shape
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    w = class_weight(weight, k)
    t = asarray(target, "target")
    t_flat = class_targets(t, batch_shape, k, ignore_index)
    sw = _sample_weights(sample_weight, batch_shape)
    per_row = _per_row_losses(reduction, n, _result_dtype(rows))
    total, weight_sum, bad = run_kernel(_softmax_kernels.nll_loss, n_threads, n,
                                        *kernel_array(rows), t_flat, w, ignore_index, per_row,
                                        _NO_WEIGHTS if sw is None else sw.reshape(-1))
    if bad >= 0:
        raise_bad_target(t, bad, k, ignore_index)
    return _reduce(total, weight_sum, per_row, reduction, batch_shape, _result_dtype(rows))


def _shifted(kernel, x, target, axis, weight, ignore_index, reduction, n_threads, name,
             options, return_grad, out, sample_weight):
    """cross_entropy / nll_loss with shift=True: one kernel call per sequence on the
    views x[s, :-1] and target[s, 1:] (no copies), sums added in sequence order.

    ``options``: (label_smoothing, z_loss, softcap, return_lse) for ce_index_loss_opts,
    None for nll_loss. ``sample_weight``: the target's shape (..., T) (the weight of
    target t weighs the prediction of position t - 1; [..., 0] is unused) or the
    positions' (..., T - 1).
    """
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    lay = token_layout(x, target, axis, True, ignore_index, name)
    rows, targets = lay.rows, lay.targets
    n_seq, length, k = rows.shape
    w = class_weight(weight, k)
    dtype = rows.dtype  # of the gradient; per-row losses in the compute type
    result_dtype = _result_dtype(rows)
    softcap = 0.0 if options is None else _check_softcap(options[2], result_dtype)
    sw = _layout_sample_weights(sample_weight, lay)
    resolve_n_threads(n_threads, rows.size)
    counted = targets != ignore_index
    bad = np.flatnonzero(counted & ((targets < 0) | (targets >= k)))
    if bad.size:
        lay.raise_bad(int(bad[0]), ignore_index)
    per_row = np.zeros((n_seq, length), result_dtype) if reduction == "none" else None
    return_lse = options is not None and options[3]
    lse = np.zeros((n_seq, length), result_dtype) if return_lse else None
    logits_shape = lay.positions[:-1] + (length + 1, k)
    grad = np.zeros((n_seq, length + 1, k), dtype) if return_grad else None
    if out is not None and not return_grad:
        raise ValueError("out is only used with return_grad=True")
    scale = 1.0
    if return_grad and reduction == "mean":
        scale = divide(1.0, _mean_normaliser(w, targets, counted, sw))
    total = weight_sum = 0.0
    for s in range(n_seq):
        t_s = targets[s]
        if not t_s.flags.c_contiguous:
            t_s = np.ascontiguousarray(t_s)
        out_s = per_row[s] if per_row is not None else _NO_PER_ROW[result_dtype]
        sw_s = _NO_WEIGHTS if sw is None else np.ascontiguousarray(sw[s])
        x_s, half = kernel_array(rows[s])
        if options is None:
            args = (x_s, half, t_s, w, ignore_index, out_s, sw_s)
        else:
            grad_s = grad[s, :-1] if grad is not None else np.empty((0, 0), dtype)
            lse_s = lse[s] if lse is not None else _NO_PER_ROW[result_dtype]
            args = (x_s, half, t_s, w, ignore_index, options[0], scale,
                    kernel_array(grad_s)[0], out_s, options[1], softcap, sw_s, lse_s)
        loss, wsum, _ = run_kernel(kernel, n_threads, rows[s].size, *args)
        total += loss
        weight_sum += wsum
    if reduction == "none":
        loss = per_row.reshape(lay.positions)
    else:
        loss = _reduce(total, weight_sum, None, reduction, None, result_dtype)
    lse = lse.reshape(lay.positions) if return_lse else None
    if not return_grad:
        return _outputs(loss, None, lse, False, return_lse)
    grad = cast(grad.reshape(logits_shape), lay.in_dtype)
    if out is None:
        return _outputs(loss, grad, lse, True, return_lse)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != logits_shape or out.dtype != lay.in_dtype or not out.flags.writeable:
        raise ValueError(f"out must be a writeable array of the logits' shape {logits_shape} "
                         f"and dtype {lay.in_dtype}")
    np.copyto(out, grad)
    return _outputs(loss, out, lse, True, return_lse)


# Elements per kernel block; weights repeat with a period that divides it.
_BCE_BLOCK = 16384


def _bce_inputs(x, target, name, weights):
    """Flatten x and target (same shape) and lay out the weights for the kernels.

    ``weights`` maps names to arrays (or None) that broadcast to x's shape.
    Returns ``(x_flat, t_flat, block, laid_out, per_element, shape, result_dtype)``
    where each laid-out weight is empty (absent), of length ``block`` (a periodic
    weight tiled to the block) or, when ``per_element``, of x's size.
    """
    arr, dtype = as_logits_array(x, name)  # dtype: what targets and weights compute in
    t = asarray(target, "target")
    check_real(t, "target", "fiub")
    if t.shape != arr.shape:
        raise ValueError(f"target has shape {t.shape}, expected {name}'s shape {arr.shape}")
    if is_bfloat16(t.dtype):
        t = t.astype(dtype)
    x_flat = aligned(np.ascontiguousarray(arr)).reshape(-1)
    t_flat = aligned(np.ascontiguousarray(cast(t, dtype))).reshape(-1)
    size = x_flat.size
    periods = {
        key: trailing_broadcast(value, arr.shape, key, dtype)
        for key, value in weights.items()
        if value is not None
    }
    period = max((p.size for p in periods.values()), default=1)
    block = _BCE_BLOCK
    laid_out = {key: np.empty(0, dtype) for key in weights}
    if size == 0:  # nothing to weigh (and a weight may have size 0)
        return x_flat, t_flat, block, laid_out, False, arr.shape, _result_dtype(x_flat)
    per_element = period > _BCE_BLOCK
    if not per_element:
        # whole periods, at most _BCE_BLOCK elements, no more than the input holds
        block = period * min(_BCE_BLOCK // period, -(-size // period))
        for key, p in periods.items():
            laid_out[key] = np.tile(p, block // p.size)
    else:
        for key, p in periods.items():
            laid_out[key] = np.ascontiguousarray(
                np.broadcast_to(p, (size // p.size, p.size))
            ).reshape(-1)
    return x_flat, t_flat, block, laid_out, per_element, arr.shape, _result_dtype(x_flat)


def binary_cross_entropy_with_logits(
    logits, target, *, weight=None, pos_weight=None, reduction="mean", n_threads=None,
    return_grad=False, out=None,
):
    r"""Binary cross-entropy of targets under sigmoid(logits), computed stably.

    .. math:: \ell = w \left[ p\,t \log(1 + e^{-x}) + (1 - t) \log(1 + e^{x}) \right]
              = w \left[ (1 - t) x + (1 + (p - 1) t)\,\mathrm{softplus}(-x) \right]

    with ``p = pos_weight``; the right-hand form is exact for every finite ``x``.
    ``weight`` and ``pos_weight`` broadcast to ``logits``' shape (pos_weight is
    typically one weight per class along the last axis). ``"mean"`` divides by
    the number of elements. Same semantics as PyTorch's function of this name.

    With ``return_grad=True`` returns ``(loss, grad)``, grad of ``logits``'
    shape and dtype: ``scale w [(1 + (p - 1) t) sigmoid(x) - p t]`` with
    ``scale`` 1/size for ``"mean"`` and 1 otherwise (``"none"``: the gradient
    of the sum). ``out`` (``logits``' shape and dtype, possibly ``logits``
    itself) receives it.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> round(float(cecore.binary_cross_entropy_with_logits(np.array([0.0]), np.array([1.0]))), 6)
    0.693147
    """
    reduction = check_reduction(reduction)
    return_grad = check_bool(return_grad, "return_grad")
    logits = asarray(logits, "logits")
    x, t, block, w, per_element, shape, result_dtype = _bce_inputs(
        logits, target, "logits", {"weight": weight, "pos_weight": pos_weight}
    )
    losses = np.empty(x.size if reduction == "none" else 0, dtype=result_dtype)
    scale = divide(1.0, x.size) if reduction == "mean" else 1.0
    in_dtype = x.dtype
    # element-wise: rows of length 1 along a new last axis
    out_rows = out[..., np.newaxis] if isinstance(out, np.ndarray) else out
    grad_rows, finish = _gradient_buffer(return_grad, out_rows, x.reshape(-1, 1), (t,),
                                         shape + (1,), len(shape), in_dtype)
    total = run_kernel(
        _binary_kernels.bce_logits_loss, n_threads, x.size,
        *kernel_array(x), t, w["pos_weight"], w["weight"], block, per_element, losses, scale,
        kernel_array(grad_rows.reshape(-1))[0],
    )
    loss = _reduce(total, x.size, losses, reduction, shape, result_dtype)
    if not return_grad:
        return loss
    grad = finish()
    return loss, (out if out is not None else grad.reshape(shape))


def binary_cross_entropy(probs, target, *, weight=None, reduction="mean", n_threads=None):
    r"""Binary cross-entropy of targets under probabilities.

    ``l = -w [t log p + (1 - t) log(1 - p)]`` with each log clamped at -100,
    as PyTorch does, so that ``p`` of exactly 0 or 1 gives a finite loss.
    ``probs`` must lie in [0, 1] (ValueError otherwise; NaN propagates).
    ``weight`` broadcasts to ``probs``' shape; ``"mean"`` divides by the
    number of elements. Prefer :func:`binary_cross_entropy_with_logits` when
    logits are available: it is exact where ``p`` rounds to 0 or 1.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> round(float(cecore.binary_cross_entropy(np.array([0.5]), np.array([1.0]))), 6)
    0.693147
    """
    reduction = check_reduction(reduction)
    p, t, block, w, per_element, shape, result_dtype = _bce_inputs(
        probs, target, "probs", {"weight": weight}
    )
    losses = np.empty(p.size if reduction == "none" else 0, dtype=result_dtype)
    total, n_bad = run_kernel(_binary_kernels.bce_probs_loss, n_threads, p.size,
                              *kernel_array(p), t, w["weight"], block, per_element, losses)
    if n_bad:
        raise ValueError(f"probs must lie in [0, 1]; {n_bad} element(s) are outside")
    return _reduce(total, p.size, losses, reduction, shape, result_dtype)
