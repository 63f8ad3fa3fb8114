"""Entropy, cross-entropy and KL divergence of distributions and densities."""

import math

import numpy as np

from cecore import _divergence_kernels
from cecore._threads import run_kernel
from cecore._validation import (
    aligned,
    as_logits_array,
    as_rows,
    asarray,
    check_axis,
    check_real,
    check_real_number,
    compute_dtype,
    kernel_array,
)

_ENTROPY, _CROSS_ENTROPY, _KL = 0, 1, 2


def _check_base(base):
    if base is None:
        return 1.0
    b = check_real_number(base, "base", "a positive number or None")
    if not (b > 0.0 and b != 1.0 and math.isfinite(b)):
        raise ValueError(f"base must be positive, finite and != 1, got {base}")
    return math.log(b)


def _check_measure(measure, n_points):
    """Weights of the base measure: empty (counting measure) or (n_points,) float64."""
    if measure is None:
        return np.empty(0)
    w = asarray(measure, "measure")
    check_real(w, "measure", "fiub")
    if w.ndim == 0:
        w = np.full(n_points, w, dtype=np.float64)
    if w.shape != (n_points,):
        raise ValueError(
            f"measure must be a scalar or have shape ({n_points},) (one weight per point "
            f"along axis), got {w.shape}"
        )
    w = aligned(np.ascontiguousarray(w, dtype=np.float64))
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("measure must hold finite, non-negative weights")
    return w


def _divergence(kind, p, q, axis, base, measure, n_threads):
    two = kind != _ENTROPY  # q is only read (and must be an array) for two distributions
    names = ("p", "q") if two else ("p",)
    arrays = [as_logits_array(p, "p")[0]] + ([as_logits_array(q, "q")[0]] if two else [])
    # one type for both (16-bit stays 16-bit when both are); results in the compute type
    dtype = arrays[0].dtype if len({a.dtype for a in arrays}) == 1 else np.result_type(*arrays)
    result_dtype = compute_dtype(dtype)
    if two:
        try:
            arrays = np.broadcast_arrays(*arrays)
        except ValueError:
            raise ValueError(
                f"p with shape {arrays[0].shape} and q with shape {arrays[1].shape} "
                "do not broadcast together"
            ) from None
    axis = check_axis(axis, arrays[0].ndim, names[-1])
    k = arrays[0].shape[axis]
    if k == 0:
        raise ValueError(f"p has no elements along axis {axis}")
    log_base = _check_base(base)
    w = _check_measure(measure, k)
    rows = [as_rows(a.astype(dtype, copy=False), axis) for a in arrays]
    p_rows = rows[0]
    q_rows = rows[-1]
    out = np.empty(p_rows.shape[0], dtype=result_dtype)
    p_kernel, half = kernel_array(p_rows)
    n_negative = run_kernel(_divergence_kernels.divergence_rows, n_threads, p_rows.size,
                            p_kernel, kernel_array(q_rows)[0], half, w, kind, out)
    if n_negative:
        raise ValueError(
            f"{' and '.join(names)} must be non-negative; found {n_negative} row(s) with "
            "negative entries"
        )
    if log_base != 1.0:
        out /= result_dtype.type(log_base)
    batch_shape = arrays[0].shape[:axis] + arrays[0].shape[axis + 1:]
    return out.reshape(batch_shape)[()]


def entropy(p, *, axis=-1, base=None, measure=None, n_threads=None):
    r"""Entropy ``H(p) = -sum_i w_i p_i log p_i`` along an axis.

    With ``measure=None`` (``w_i = 1``) this is the Shannon entropy of a pmf;
    with ``measure`` the weights of a base measure (e.g. quadrature weights of a
    grid, or a scalar spacing) and ``p`` a density sampled on it, it is the
    differential entropy ``-\int p \log p \, d\nu``. ``0 log 0 = 0``. ``p`` is
    not normalised (unlike ``scipy.stats.entropy``): pass a distribution.

    Parameters
    ----------
    p : array_like
        Non-negative values (ValueError otherwise; NaN propagates to its row).
    axis : int, default -1
    base : float, optional
        Logarithm base: None for nats, 2 for bits.
    measure : float or array_like of shape (p.shape[axis],), optional
        Non-negative weights ``w_i`` of the base measure.

    Returns
    -------
    numpy.ndarray or numpy scalar
        ``p``'s shape without ``axis``; float64 for float64 input, else float32.

    Examples
    --------
    >>> import cecore
    >>> float(cecore.entropy([0.5, 0.5], base=2))
    1.0
    """
    return _divergence(_ENTROPY, p, None, axis, base, measure, n_threads)


def cross_entropy_pq(p, q, *, axis=-1, base=None, measure=None, n_threads=None):
    r"""Cross-entropy ``H(p, q) = -sum_i w_i p_i log q_i`` of two distributions.

    ``0 log q = 0``; ``p_i > 0 = q_i`` gives ``+inf``. ``p`` and ``q`` broadcast
    together; ``measure`` and ``base`` as in :func:`entropy`.

    Examples
    --------
    >>> import cecore
    >>> round(float(cecore.cross_entropy_pq([0.5, 0.5], [0.25, 0.75], base=2)), 6)
    1.207519
    """
    return _divergence(_CROSS_ENTROPY, p, q, axis, base, measure, n_threads)


def kl_divergence(p, q, *, axis=-1, base=None, measure=None, n_threads=None):
    r"""Kullback-Leibler divergence ``KL(p || q) = sum_i w_i p_i log(p_i / q_i)``.

    Equals ``cross_entropy_pq(p, q) - entropy(p)``, computed directly for
    accuracy; ``0 log(0 / q) = 0`` and ``p_i > 0 = q_i`` gives ``+inf``.
    Matches ``scipy.special.rel_entr(p, q).sum(axis)`` with the counting measure.

    Examples
    --------
    >>> import cecore
    >>> round(float(cecore.kl_divergence([0.5, 0.5], [0.25, 0.75])), 6)
    0.143841
    """
    return _divergence(_KL, p, q, axis, base, measure, n_threads)
