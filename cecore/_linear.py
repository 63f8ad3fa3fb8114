"""Cross-entropy of a linear layer's output without materialising the logits."""

import math

import numpy as np

from cecore import _softmax_kernels
from cecore._losses import _check_class_targets, _reduce, _result_dtype
from cecore._threads import resolve_n_threads, run_kernel
from cecore._validation import (
    HALF_NONE,
    as_float_array,
    as_logits_array,
    asarray,
    check_int,
    check_reduction,
    class_targets,
    class_weight,
    compute_dtype,
)

# Bytes of logits computed at a time when chunk_size is None.
CHUNK_BYTES = 64 << 20


def linear_cross_entropy(hidden, weight, target, *, bias=None, ignore_index=-100,
                         reduction="mean", chunk_size=None, n_threads=None):
    r"""Cross-entropy of ``hidden @ weight.T + bias`` without materialising the logits.

    Equal to ``cross_entropy(hidden @ weight.T + bias, target, ...)`` (PyTorch's
    ``linear_cross_entropy`` with default options), but the ``N x V`` logits are
    never held at once: ``chunk_size`` rows at a time are projected with NumPy's
    matrix product (BLAS) into one reused buffer, and the fused cross-entropy
    kernel reduces that block to its loss sum before the next block overwrites
    it. Peak extra memory is ``chunk_size x V`` logits (about 64 MB by default)
    instead of ``N x V``. With :math:`z_i = W h_i + b`, counted positions
    :math:`P` (``target != ignore_index``):

    .. math:: \ell_i = \log \sum_v e^{z_{iv}} - z_{i y_i}, \qquad
              \mathrm{mean} = \frac{1}{|P|} \sum_{i \in P} \ell_i

    Parameters
    ----------
    hidden : array_like of shape (..., D)
        Inputs of the layer (``N`` = the product of the leading dimensions).
    weight : array_like of shape (V, D)
        The layer's weight, one row per class (as ``torch.nn.Linear.weight``).
    target : array_like of int, shape (...)
        Class indices in ``[0, V)`` or ``ignore_index``; ``hidden``'s shape
        without its last axis.
    bias : array_like of shape (V,), optional
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    chunk_size : int, optional
        Rows per block; default: as many as fit ``V`` logits each in 64 MB.
    n_threads : int, optional
        OpenMP threads of the cross-entropy kernel; default 1. The matrix
        product runs on NumPy's BLAS threads, which spin-wait on the other
        cores for a while after each product, so a parallel kernel between
        two products would only contend with them (measured, 8 blocks of
        524 x 32,000: 33 ms of kernel time on one thread, 99 ms on two).

    Returns
    -------
    loss : numpy.float64 or numpy.float32, or numpy.ndarray for ``"none"``
        float64 when ``hidden``, ``weight`` or ``bias`` is float64 (they are
        computed in their common dtype), float32 otherwise; ``"none"`` has
        ``target``'s shape.

    Raises
    ------
    TypeError
        Non-numeric or complex data, non-integer targets.
    ValueError
        Shapes that do not match (naming the argument), a target out of range
        (checked before any product is computed), a bad ``reduction`` or
        ``chunk_size < 1``.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> rng = np.random.default_rng(0)
    >>> h = rng.standard_normal((6, 4)); w = rng.standard_normal((10, 4))
    >>> y = np.array([1, 2, 3, 4, 5, -100])
    >>> loss = cecore.linear_cross_entropy(h, w, y, chunk_size=2)
    >>> bool(np.isclose(loss, cecore.cross_entropy(h @ w.T, y)))
    True
    """
    # 16-bit hidden states are converted a chunk at a time, the weight once (BLAS
    # multiplies float32/float64)
    h, _ = as_logits_array(hidden, "hidden")
    w, _ = as_float_array(weight, "weight")
    if h.ndim == 0:
        raise ValueError("hidden must have at least one dimension (the features)")
    if w.ndim != 2 or w.shape[1] != h.shape[-1]:
        raise ValueError(f"weight must have shape (V, {h.shape[-1]}) to match hidden's last "
                         f"axis, got {w.shape}")
    n_classes = w.shape[0]
    if n_classes == 0:
        raise ValueError("weight has zero rows (classes)")
    dtype = np.result_type(compute_dtype(h.dtype), w.dtype)
    if bias is not None:
        bias, _ = as_float_array(bias, "bias")
        if bias.shape != (n_classes,):
            raise ValueError(f"bias must have shape ({n_classes},) (one per row of weight), "
                             f"got {bias.shape}")
        dtype = np.result_type(dtype, bias.dtype)
        bias = bias.astype(dtype, copy=False)
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    t = asarray(target, "target")
    batch_shape = h.shape[:-1]
    t_flat = class_targets(t, batch_shape, n_classes, ignore_index)
    _check_class_targets(t, t_flat, n_classes, ignore_index)  # before the expensive part
    # not reshape(-1, D): NumPy cannot infer the row count when D = 0
    rows = h.reshape(math.prod(batch_shape), h.shape[-1])
    w_t = w.astype(dtype, copy=False).T  # a view: BLAS reads the transpose in place
    n = rows.shape[0]
    if chunk_size is None:
        chunk_size = CHUNK_BYTES // (n_classes * dtype.itemsize)
    elif check_int(chunk_size, "chunk_size") < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk = max(1, min(chunk_size, n))
    buffer = np.empty((chunk, n_classes), dtype=dtype)
    per_row = np.empty(n if reduction == "none" else 0, dtype=dtype)
    no_weight, no_grad = class_weight(None, n_classes), buffer[:0, :0]
    if n_threads is None:
        n_threads = 1  # the BLAS's threads hold the other cores (see the docstring)
    resolve_n_threads(n_threads, buffer.size)  # validated before the first product
    total = weight_sum = 0.0
    for first in range(0, n, chunk):
        last = min(n, first + chunk)
        logits = buffer[:last - first]
        with np.errstate(over="ignore", invalid="ignore"):  # IEEE inf/NaN, as elsewhere
            np.matmul(rows[first:last].astype(dtype, copy=False), w_t, out=logits)
            if bias is not None:
                logits += bias
        loss, weights, _ = run_kernel(
            _softmax_kernels.ce_index_loss, n_threads, buffer.size,
            logits, HALF_NONE, t_flat[first:last], no_weight, ignore_index, 0.0, 1.0, no_grad,
            per_row[first:last],
        )
        total += loss
        weight_sum += weights
    return _reduce(total, weight_sum, per_row, reduction, batch_shape, _result_dtype(buffer))
