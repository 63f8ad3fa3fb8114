"""log_softmax, softmax and logsumexp along an axis."""

import numpy as np

from cecore import _softmax_kernels
from cecore._threads import run_kernel
from cecore._validation import (
    as_logits_array,
    asarray,
    cast,
    check_int,
    compute_dtype,
    is_bfloat16,
    is_half,
    kernel_array,
    logits_rows,
    rows_of,
)

_LSE, _LOG_SOFTMAX, _SOFTMAX = 0, 1, 2
_FLOAT32 = np.dtype(np.float32)


def _output_dtype(dtype):
    """``dtype=`` as a NumPy dtype: None, or a floating type the kernels can produce."""
    if dtype is None:
        return None
    try:
        wanted = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype or None, got {dtype!r}") from None
    if not (wanted.kind == "f" and wanted.itemsize <= 8) and not is_bfloat16(wanted):
        raise TypeError(
            f"dtype must be float16, bfloat16, float32 or float64 (or None), got {wanted}"
        )
    return wanted.newbyteorder("=")


def _row_transform(x, axis, mode, n_threads, name="x", dtype=None):
    if n_threads is None and dtype is None and type(axis) is int and axis in (-1, 1):
        # the common call, validated in compiled code (None: take the general path)
        result = _softmax_kernels.softmax_fast(x, mode)
        if result is not None:
            return result
    if type(x) is not np.ndarray or x.ndim == 0:
        x = asarray(x, name)
        if x.ndim == 0:
            # as PyTorch: axis 0 (or -1) of a 0-d array is its one element
            if check_int(axis, "axis") not in (0, -1):
                raise ValueError(f"axis {axis} is out of range for {name} with 0 dimensions "
                                 "(a 0-d array has only axis 0 or -1, its one element)")
            return _row_transform(x.reshape(1), 0, mode, n_threads, name, dtype).reshape(())
    wanted = _output_dtype(dtype)
    if wanted is not None:
        arr, _ = as_logits_array(x, name)
        # dtype= is PyTorch's: the input is cast to it first, except that 16-bit input
        # asked for float32 is read as it is (the kernels compute in float32 anyway)
        if arr.dtype != wanted and not (is_half(arr.dtype) and wanted == _FLOAT32):
            x = cast(arr, wanted)
    rows, batch_shape, axis, in_dtype = logits_rows(x, axis, name, columns=True)
    if rows.ndim == 3:
        if mode == _LSE or wanted is None or wanted == rows.dtype:
            return _column_transform(rows, batch_shape, axis, mode, n_threads)
        rows = rows_of(rows, axis)  # the column kernels write the input's type only
    n, k = rows.shape
    if mode == _LSE:
        out = np.empty((n, 1), dtype=compute_dtype(rows.dtype))
    else:
        out = np.empty((n, k), dtype=wanted if wanted is not None else in_dtype)
    run_kernel(_softmax_kernels.softmax_rows, n_threads, rows.size, *kernel_array(rows), out,
               mode)
    if mode == _LSE:
        return out.reshape(batch_shape)
    return np.moveaxis(out.reshape(batch_shape + (k,)), -1, axis)


def _column_transform(cols, batch_shape, axis, mode, n_threads):
    """_row_transform's result for a columns layout (see cecore._validation.as_columns),
    computed in place; elementwise results come back C-ordered in the input's shape."""
    outer, k, inner = cols.shape
    x, half = kernel_array(cols)
    compute = compute_dtype(cols.dtype)
    if mode == _LSE:
        lse = np.empty(outer * inner, compute)
        run_kernel(_softmax_kernels.softmax_cols, n_threads, cols.size, x, half,
                   np.empty((0, 0, 0), x.dtype), lse, mode)
        return lse.reshape(batch_shape)
    out = np.empty(cols.shape, cols.dtype)
    run_kernel(_softmax_kernels.softmax_cols, n_threads, cols.size, x, half,
               kernel_array(out)[0], np.empty(0, compute), mode)
    return out.reshape(batch_shape[:axis] + (k,) + batch_shape[axis:])


def logsumexp(x, axis=-1, *, n_threads=None):
    """Log of the sum of exponentials along an axis, computed stably.

    ``logsumexp(x)[i] = log(sum_j exp(x[i, j]))``, evaluated as
    ``m + log(sum_j exp(x[i, j] - m))`` with ``m`` the row maximum, so any finite
    input (up to the dtype's maximum) gives a finite, accurate result.

    Parameters
    ----------
    x : array_like
        Real values: float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``,
        or a ``torch.bfloat16`` tensor); integers are promoted to float64.
    axis : int, default -1
        The axis to reduce. As in PyTorch, axis 0 (or -1) of a 0-d ``x`` is
        its one element: ``logsumexp`` returns it, ``softmax`` gives 1 and
        ``log_softmax`` 0 (NaN for an infinite or NaN element), as 0-d arrays.
    n_threads : int, optional
        OpenMP threads; default follows OMP_NUM_THREADS (see README).

    Returns
    -------
    numpy.ndarray
        ``x``'s shape without ``axis``: float64 for float64 input, float32 for
        float32 and 16-bit input (a reduction: see README, "16-bit input"). A row of all
        ``-inf`` gives ``-inf``; a row containing NaN or ``+inf`` gives NaN or
        ``+inf`` as ``log(sum(exp(x)))`` would.

    Examples
    --------
    >>> import cecore
    >>> float(cecore.logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    """
    return _row_transform(x, axis, _LSE, n_threads)


def log_softmax(x, axis=-1, *, dtype=None, n_threads=None):
    """Logarithm of the softmax along an axis: ``x - logsumexp(x, axis)``.

    Computed in one fused kernel with the subtraction done in float64, so each
    output is correctly rounded to within an ulp. Same inputs and special values
    as :func:`logsumexp` (an all ``-inf`` row gives NaN, as in PyTorch/SciPy).
    The result has ``x``'s shape and floating dtype (16-bit input is computed in
    float32 and rounded once), or ``dtype`` when given: as PyTorch's ``dtype=``,
    the input is cast to it first, except that float16/bfloat16 input with
    ``dtype=np.float32`` is read as it is and the float32 result returned.

    Examples
    --------
    >>> import cecore
    >>> cecore.log_softmax([0.0, 0.0]).tolist()
    [-0.6931471805599453, -0.6931471805599453]
    """
    return _row_transform(x, axis, _LOG_SOFTMAX, n_threads, dtype=dtype)


def softmax(x, axis=-1, *, dtype=None, n_threads=None):
    """Softmax along an axis: ``exp(x - max) / sum(exp(x - max))``.

    Outputs are in ``[0, 1]`` and sum to 1 along ``axis`` (to rounding); tiny
    probabilities underflow gradually into the subnormal range. Dtypes and
    ``dtype=`` as for :func:`log_softmax`.

    Examples
    --------
    >>> import cecore
    >>> cecore.softmax([0.0, 0.0, 0.0, 0.0]).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    return _row_transform(x, axis, _SOFTMAX, n_threads, dtype=dtype)
