"""Divergences between two sets of logits (a model and its reference): logit_divergence,
and the per-position rows behind cecore.Comparison."""

import numpy as np

from cecore import _logit_divergence_kernels as _kernels
from cecore._threads import resolve_n_threads, run_kernel
from cecore._tokens import _int_targets, _merge_leading, check_temperature
from cecore._validation import (
    as_logits_array,
    as_result,
    as_rows,
    asarray,
    check_axis,
    check_bool,
    check_fraction,
    check_int,
    check_reduction,
    compute_dtype,
    divide,
    is_bfloat16,
    raise_bad_target,
)

KINDS = ("kl", "reverse_kl", "jsd")
_F32, _F64, _BF16, _F16 = 0, 1, 2, 3
_NO_TARGET = np.empty(0, np.int64)
_NO_F64 = np.empty(0)
_NO_U8 = np.empty(0, np.uint8)
_NO_GRAD = np.empty((0, 0, 0), np.uint8)


def _code(dtype):
    if dtype == np.float32:
        return _F32
    if dtype == np.float64:
        return _F64
    return _BF16 if is_bfloat16(dtype) else _F16


def _check_kind(kind):
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _bytes(rows):
    """A (S, L, V) view with contiguous, aligned rows as bytes (S, L, V * itemsize)."""
    itemsize = rows.dtype.itemsize
    if (not rows.flags.aligned or (rows.shape[2] > 0 and rows.strides[2] != itemsize)
            or any(s % itemsize for s in rows.strides[:2])):
        rows = np.ascontiguousarray(rows)
    if rows.shape[2] == 1 and rows.strides[2] != itemsize:
        rows = np.ascontiguousarray(rows)
    return rows, rows.view(np.uint8)


class _Layout:
    """Both inputs as (S, L, V) row views (no copies), the counted-position targets and
    the shape of the per-position results."""

    def __init__(self, logits, ref_logits, target, axis, shift, ignore_index,
                 need_target=False):
        shift = check_bool(shift, "shift")
        x, _ = as_logits_array(logits, "logits")  # 16-bit stays 16-bit (no copy)
        y, _ = as_logits_array(ref_logits, "ref_logits")
        if x.shape != y.shape:
            if x.ndim == y.ndim and x.ndim > 0:
                a = check_axis(axis, x.ndim, "logits")
                if x.shape[:a] + x.shape[a + 1:] == y.shape[:a] + y.shape[a + 1:]:
                    raise ValueError(
                        f"logits and ref_logits have different numbers of classes along axis "
                        f"{a}: {x.shape[a]} and {y.shape[a]} (shapes {x.shape} and {y.shape}; "
                        "the two models must share one vocabulary)")
            raise ValueError(f"logits with shape {x.shape} and ref_logits with shape {y.shape} "
                             "must have the same shape")
        axis = check_axis(axis, x.ndim, "logits")
        k = x.shape[axis]
        if k == 0:
            raise ValueError(f"logits has zero classes along axis {axis}")
        self.in_dtype = x.dtype.newbyteorder("=")
        self.ref_dtype = y.dtype.newbyteorder("=")
        self.compute = (np.dtype(np.float64) if np.float64 in (x.dtype, y.dtype)
                        else np.dtype(np.float32))
        self.shape, self.axis, self.k, self.shift = x.shape, axis, k, shift
        if shift:
            if axis != x.ndim - 1:
                raise ValueError(f"shift=True needs the class axis last, got axis {axis} of "
                                 f"logits with {x.ndim} dimensions")
            if x.ndim < 2:
                raise ValueError(f"shift=True needs logits of shape (..., T, V), got shape "
                                 f"{x.shape}")
            n_steps = x.shape[-2]
            if n_steps < 1:
                raise ValueError("shift=True needs at least one position (T >= 1), got T = 0")
            self.positions = x.shape[:-2] + (n_steps - 1,)
            self.full_x = _merge_leading(x, 2)
            xr = self.full_x[:, :-1, :]
            yr = _merge_leading(y, 2)[:, :-1, :]
        else:
            self.positions = x.shape[:axis] + x.shape[axis + 1:]
            self.full_x = None
            xr = as_rows(x, axis)[np.newaxis]
            yr = as_rows(y, axis)[np.newaxis]
        self.x_rows, self.x_bytes = _bytes(xr)
        self.y_rows, self.y_bytes = _bytes(yr)
        self.n = self.x_rows.shape[0] * self.x_rows.shape[1]
        self.target = None
        self.flat_target = _NO_TARGET
        self.count = self.n
        if target is None:
            if need_target:
                raise TypeError("target is required (class indices of the positions)")
            return
        t = asarray(target, "target")
        if isinstance(t.dtype, np.dtype) and t.dtype.kind == "b":
            raise TypeError("target must hold integer class indices, got dtype bool")
        tt = _int_targets(t, x.shape[:-1] if shift else self.positions, k, ignore_index)
        used = _merge_leading(tt, 1)[:, 1:] if shift else tt.reshape(1, -1)
        flat = np.array(used, dtype=np.int64).reshape(-1)  # a copy: n int64s
        counted = flat != ignore_index
        bad = np.flatnonzero(counted & ((flat < 0) | (flat >= k)))
        if bad.size:
            self._raise_bad(t, int(bad[0]), ignore_index)
        flat[~counted] = -1
        self.target = t
        self.flat_target = flat
        self.counted = counted
        self.count = int(np.count_nonzero(counted))

    def _raise_bad(self, t, flat, ignore_index):
        if self.shift:
            index = list(np.unravel_index(flat, self.positions))
            index[-1] += 1
            flat = int(np.ravel_multi_index(index, t.shape))
        raise_bad_target(t, flat, self.k, ignore_index)

    def gradient(self, out):
        """``(grad, kernel_view, finish)``: the gradient array of the logits' shape and
        dtype, the (S, L, V) byte view the kernel writes, and a function returning the
        gradient (written into ``out`` when given)."""
        shape, dtype = self.shape, self.in_dtype
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
            if out.shape != shape or out.dtype != dtype:
                raise ValueError(f"out must have the logits' shape {shape} and dtype {dtype}, "
                                 f"got {out.shape} and {out.dtype}")
            if not out.flags.writeable:
                raise ValueError("out must be writeable")
        target = self._direct(out) if out is not None else None
        if target is None:
            moved_shape = shape if self.shift else (
                shape[:self.axis] + shape[self.axis + 1:] + (self.k,))
            buffer = np.empty(moved_shape, dtype)
            grad = buffer if self.shift else np.moveaxis(buffer, -1, self.axis)
            full = _merge_leading(buffer, 2) if self.shift else buffer.reshape(1, -1, self.k)
        else:
            grad, full = out, target
        rows = full[:, :-1, :] if self.shift else full
        if self.shift:
            full[:, -1, :] = 0

        def finish():
            if out is None or grad is out:
                return grad
            with np.errstate(over="ignore"):
                np.copyto(out, grad, casting="same_kind")
            return out

        return grad, rows.view(np.uint8), finish

    def _direct(self, out):
        """``out`` as the (S, L(+1), V) view the kernel can write in place, or None."""
        if not out.flags.aligned:
            return None
        try:
            if self.shift:
                full = _merge_leading_view(out, 2)
            else:
                full = np.moveaxis(out, self.axis, -1).reshape(1, -1, self.k, copy=False)
        except ValueError:
            return None
        if full is None or (self.k > 1 and full.strides[2] != full.itemsize):
            return None
        if any(s % full.itemsize for s in full.strides[:2]):
            return None
        rows = full[:, :-1, :] if self.shift else full
        # in place over the logits themselves is safe element for element; any other
        # overlap with an input is not
        same = (rows.__array_interface__["data"][0]
                == self.x_rows.__array_interface__["data"][0]
                and rows.strides == self.x_rows.strides)
        if np.may_share_memory(full, self.y_rows) or (
                not same and np.may_share_memory(full, self.x_rows)):
            return None
        return full


def _merge_leading_view(arr, trailing):
    lead = arr.shape[:arr.ndim - trailing]
    shape = (int(np.prod(lead, dtype=np.int64)),) + arr.shape[arr.ndim - trailing:]
    return arr.reshape(shape, copy=False)


def _mode(kind, beta):
    if kind == "kl" or (kind == "jsd" and beta == 0.0):
        return _kernels.KL
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kernels.REVERSE_KL
    return _kernels.JSD


def logit_divergence(logits, ref_logits, *, kind="kl", axis=-1, temperature=1.0, beta=0.5,
                     target=None, ignore_index=-100, shift=False, reduction="mean",
                     return_grad=False, out=None, n_threads=None):
    r"""Divergence between the distributions of two sets of logits, fused, per position.

    With ``p = softmax(logits / T)`` (the model: trained, quantised, the student) and
    ``r = softmax(ref_logits / T)`` (the reference or teacher) along ``axis``:

    * ``kind="kl"``: :math:`\mathrm{KL}(r \| p) = \sum_j r_j (\log r_j - \log p_j)`, the
      forward KL of distillation and what ``llama.cpp perplexity --kl-divergence`` reports;
      PyTorch's ``F.kl_div(log_softmax(logits), log_softmax(ref_logits), log_target=True)``
    * ``kind="reverse_kl"``: :math:`\mathrm{KL}(p \| r)`
    * ``kind="jsd"``: with :math:`m = \beta r + (1 - \beta) p`,
      :math:`\beta\,\mathrm{KL}(r \| m) + (1 - \beta)\,\mathrm{KL}(p \| m)`, TRL's
      ``GKDTrainer.generalized_jsd_loss``, including its end points: ``beta=0`` gives
      ``KL(r || p)`` and ``beta=1`` gives ``KL(p || r)`` (as TRL special-cases them;
      the mixture formula itself tends to 0 there). ``beta=0.5`` is the
      Jensen-Shannon divergence.

    The temperature only scales the logits: the loss is not multiplied by ``T**2``
    (as in TRL's ``generalized_jsd_loss``; Hinton-style distillation multiplies by
    ``T**2`` itself). ``0 log 0 = 0``: ``-inf`` logits in either input are classes of
    probability 0; ``r_j > 0 = p_j`` gives ``KL(r || p) = +inf``, as the definition
    does. A row holding a NaN or ``+inf``, or all ``-inf``, in either input gives NaN
    (its gradient too).

    One kernel reads each row pair once from memory (chunks of 2,048 elements of both
    rows: their maxima, then one SIMD pass while they are in L1 for the sums of
    exponentials and of ``e^{b_j} (y_j - x_j)``, rescaled when a maximum grows;
    ``jsd`` and the gradient take one more pass over the cache-hot rows). No ``(N, V)``
    temporary is formed; sums are in float64, results identical for any ``n_threads``.

    Parameters
    ----------
    logits, ref_logits : array_like, float16/bfloat16/float32/float64
        The same shape; they may differ in dtype (computed in float64 if either is
        float64, else in float32; 16-bit rows are converted one at a time).
    kind : {"kl", "reverse_kl", "jsd"}, default "kl"
    axis : int, default -1
        The class axis.
    temperature : float > 0, default 1
    beta : float in [0, 1], default 0.5
        The mixture weight of ``kind="jsd"`` (ignored by the other kinds).
    target : array_like of int, optional
        Class indices of the positions (``logits``' shape without ``axis``); only
        masks: positions equal to ``ignore_index`` are not counted (0 in
        ``"none"``, gradient 0), e.g. prompt tokens. Others must be valid class indices.
    ignore_index : int, default -100
    shift : bool, default False
        Next-token layout (class axis last): logits and ref_logits ``(..., T, V)``,
        positions ``t < T - 1`` counted as masked by ``target[..., t + 1]`` (a
        ``(..., T)`` array); both inputs are read in place (no copies). Results have
        shape ``(..., T - 1)``; the gradient the logits' full shape, 0 at the last
        position.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of counted positions (PyTorch's
        ``"batchmean"`` per token); NaN when none is counted.
    return_grad : bool, default False
        Also return the gradient with respect to ``logits`` (``ref_logits`` is a
        constant), of the reduced loss (of the sum for ``"none"``):
        ``(p - r) / T`` for ``"kl"``, ``p (log p - log r - KL(p || r)) / T`` for
        ``"reverse_kl"``, ``(1 - beta) p (log(p / m) - KL(p || m)) / T`` for ``"jsd"``,
        times ``1 / count`` for ``"mean"``.
    out : numpy.ndarray, optional
        With ``return_grad``: receives the gradient (``logits``' shape and dtype; may
        be ``logits`` itself).
    n_threads : int, optional

    Returns
    -------
    loss : numpy.float32 or numpy.float64, or numpy.ndarray for ``"none"``
        float64 if either input is float64, else float32.
    grad : numpy.ndarray
        With ``return_grad=True``: ``(loss, grad)``, in ``logits``' shape and dtype.

    Raises
    ------
    ValueError
        Shapes that differ (also a different number of classes), a bad ``kind``,
        ``reduction`` or ``axis``, ``beta`` outside [0, 1], a temperature that is
        not positive and finite, a target out of range.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> z = np.log(np.array([[0.5, 0.25, 0.25]]))
    >>> ref = np.log(np.array([[0.25, 0.5, 0.25]]))
    >>> round(float(cecore.logit_divergence(z, ref)), 6)   # KL(r || p)
    0.173287
    >>> round(float(cecore.logit_divergence(z, ref, kind="jsd")), 6)
    0.042475
    """
    kind = _check_kind(kind)
    beta = check_fraction(beta, "beta")
    reduction = check_reduction(reduction)
    return_grad = check_bool(return_grad, "return_grad")
    ignore_index = check_int(ignore_index, "ignore_index")
    if out is not None and not return_grad:
        raise ValueError("out is only used with return_grad=True")
    lay = _Layout(logits, ref_logits, target, axis, shift, ignore_index)
    temperature = check_temperature(temperature, lay.compute)
    if 1.5 / temperature > float(np.finfo(lay.compute).max):  # the kernel scales by log2(e) / T
        raise ValueError(f"temperature {temperature} is too small for {lay.compute} logits")
    work = 2 * lay.x_rows.size
    resolve_n_threads(n_threads, work)  # validated before any work
    result_dtype = compute_dtype(lay.compute)
    scale = divide(1.0, lay.count) if reduction == "mean" else 1.0
    grad = None
    grad_view, finish = _NO_GRAD, None
    if return_grad:
        grad, grad_view, finish = lay.gradient(out)
    loss = np.empty(lay.n)
    run_kernel(_kernels.divergence, n_threads, work,
               lay.x_bytes, _code(lay.x_rows.dtype), lay.y_bytes, _code(lay.y_rows.dtype),
               lay.flat_target, _mode(kind, beta), temperature, beta, return_grad, scale,
               grad_view, loss, False, _NO_F64, _NO_F64, _NO_U8)
    if reduction == "none":
        with np.errstate(over="ignore"):
            value = loss.reshape(lay.positions).astype(result_dtype)
    else:
        total = float(np.sum(loss))  # pairwise, in position order: thread-independent
        value = as_result(total if reduction == "sum" else divide(total, lay.count),
                          result_dtype)
    if not return_grad:
        return value
    return value, finish()


def _comparison_rows(logits, ref_logits, target, *, axis=-1, ignore_index=-100, shift=False,
                     n_threads=None):
    """Per counted position (masked ones dropped, position order): ``(kl, logp, logr,
    same_top)`` with kl = KL(r || p) (float64), logp = log p(target), logr = log
    r(target) (float64) and same_top (bool) whether argmax(logits) == argmax(ref_logits)
    (ties to the lower index, NaN above every number), from one fused pass over each
    row pair (temperature 1). For cecore.Comparison.
    """
    ignore_index = check_int(ignore_index, "ignore_index")
    lay = _Layout(logits, ref_logits, target, axis, shift, ignore_index, need_target=True)
    work = 2 * lay.x_rows.size
    resolve_n_threads(n_threads, work)
    n = lay.n
    kl, logp, logr = np.empty(n), np.empty(n), np.empty(n)
    top = np.empty(n, np.uint8)
    run_kernel(_kernels.divergence, n_threads, work,
               lay.x_bytes, _code(lay.x_rows.dtype), lay.y_bytes, _code(lay.y_rows.dtype),
               lay.flat_target, _kernels.KL, 1.0, 0.0, False, 1.0, _NO_GRAD, kl, True, logp,
               logr, top)
    keep = lay.counted
    return kl[keep], logp[keep], logr[keep], top.view(bool)[keep]
