"""log_softmax, softmax and logsumexp along an axis."""

import numpy as np

from cecore import _softmax_kernels
from cecore._threads import run_kernel
from cecore._validation import asarray, cast, check_int, logits_rows

_LSE, _LOG_SOFTMAX, _SOFTMAX = 0, 1, 2


def _row_transform(x, axis, mode, n_threads, name="x"):
    if type(x) is not np.ndarray or x.ndim == 0:
        x = asarray(x, name)
        if x.ndim == 0:
            # as PyTorch: axis 0 (or -1) of a 0-d array is its one element
            if check_int(axis, "axis") not in (0, -1):
                raise ValueError(f"axis {axis} is out of range for {name} with 0 dimensions "
                                 "(a 0-d array has only axis 0 or -1, its one element)")
            return _row_transform(x.reshape(1), 0, mode, n_threads, name).reshape(())
    rows, batch_shape, axis, in_dtype = logits_rows(x, axis, name)
    n, k = rows.shape
    out = np.empty((n, 1 if mode == _LSE else k), dtype=rows.dtype)
    run_kernel(_softmax_kernels.softmax_rows, n_threads, rows.size, rows, out, mode)
    if mode == _LSE:
        result = out.reshape(batch_shape)
    else:
        moved = batch_shape + (k,)
        result = np.moveaxis(out.reshape(moved), -1, axis)
    return cast(result, in_dtype)


def logsumexp(x, axis=-1, *, n_threads=None):
    """Log of the sum of exponentials along an axis, computed stably.

    ``logsumexp(x)[i] = log(sum_j exp(x[i, j]))``, evaluated as
    ``m + log(sum_j exp(x[i, j] - m))`` with ``m`` the row maximum, so any finite
    input (up to the dtype's maximum) gives a finite, accurate result.

    Parameters
    ----------
    x : array_like
        Real values, float16/float32/float64 (integers are promoted to float64).
    axis : int, default -1
        The axis to reduce. As in PyTorch, axis 0 (or -1) of a 0-d ``x`` is
        its one element: ``logsumexp`` returns it, ``softmax`` gives 1 and
        ``log_softmax`` 0 (NaN for an infinite or NaN element), as 0-d arrays.
    n_threads : int, optional
        OpenMP threads; default follows OMP_NUM_THREADS (see README).

    Returns
    -------
    numpy.ndarray
        ``x``'s shape without ``axis``, in ``x``'s floating dtype. A row of all
        ``-inf`` gives ``-inf``; a row containing NaN or ``+inf`` gives NaN or
        ``+inf`` as ``log(sum(exp(x)))`` would.

    Examples
    --------
    >>> import cecore
    >>> float(cecore.logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    """
    return _row_transform(x, axis, _LSE, n_threads)


def log_softmax(x, axis=-1, *, n_threads=None):
    """Logarithm of the softmax along an axis: ``x - logsumexp(x, axis)``.

    Computed in one fused kernel with the subtraction done in float64, so each
    output is correctly rounded to within an ulp. Same dtypes and special values
    as :func:`logsumexp` (an all ``-inf`` row gives NaN, as in PyTorch/SciPy).

    Examples
    --------
    >>> import cecore
    >>> cecore.log_softmax([0.0, 0.0]).tolist()
    [-0.6931471805599453, -0.6931471805599453]
    """
    return _row_transform(x, axis, _LOG_SOFTMAX, n_threads)


def softmax(x, axis=-1, *, n_threads=None):
    """Softmax along an axis: ``exp(x - max) / sum(exp(x - max))``.

    Outputs are in ``[0, 1]`` and sum to 1 along ``axis`` (to rounding); tiny
    probabilities underflow gradually into the subnormal range.

    Examples
    --------
    >>> import cecore
    >>> cecore.softmax([0.0, 0.0, 0.0, 0.0]).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    return _row_transform(x, axis, _SOFTMAX, n_threads)
