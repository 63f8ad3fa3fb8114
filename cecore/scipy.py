"""Drop-ins for ``scipy.special.logsumexp``, ``softmax``, ``log_softmax`` and
``scipy.stats.entropy``, computed by cecore's kernels.

Same signatures, defaults, result dtypes and shapes and special values as
SciPy 1.17 (the tests compare them), for real input: complex input raises
TypeError. Axes (None, an int or a tuple) are moved to the end and the array is
laid out as rows, so that one kernel call reduces them. This module does not
import SciPy (nor does ``import cecore`` import this module).

Examples
--------
>>> import numpy as np
>>> from cecore.scipy import logsumexp, softmax, entropy
>>> float(logsumexp([1.0, 2.0], b=[1, -1], return_sign=True)[0])
1.5413248546129181
>>> softmax(np.zeros((2, 2)), axis=(0, 1)).tolist()
[[0.25, 0.25], [0.25, 0.25]]
>>> float(entropy([1, 1], base=2))
1.0
"""

import math
import operator

import numpy as np

from cecore import _divergence, _softmax

__all__ = ["entropy", "log_softmax", "logsumexp", "softmax"]

_POLICIES = {"propagate", "raise", "omit"}


# ----------------------------------------------------------------- helpers

def _as_real(x, name, what):
    """``x`` as an array of a real dtype cecore computes in (TypeError otherwise)."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array: cecore.scipy.{what} does not support masks "
                        f"(use scipy's {what}, or fill the masked elements)")
    arr = np.asarray(x)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}): cecore.scipy.{what} takes real "
                        f"input only; use scipy's {what} for complex numbers")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"{name} has dtype {arr.dtype}, which cecore does not compute in "
                        "(float16, float32 or float64)")
    return arr


def _promoted(args, names, what, force_floating):
    """SciPy's ``xp_promote``: arrays' dtypes are strong, Python scalars weak."""
    arrays, keys = [], []
    for x, name in zip(args, names):
        if x is None:
            arrays.append(None)
            continue
        arr = _as_real(x, name, what)
        arrays.append(arr)
        # iterables (lists, arrays) and NumPy scalars carry their dtype; Python scalars
        # take the other argument's (NEP 50), as in SciPy
        keys.append(x if isinstance(x, (int, float, bool)) and not isinstance(x, np.generic)
                    else arr.dtype)
    if force_floating:
        keys.append(1.0)
    dtype = np.result_type(*keys)
    return [None if a is None else a.astype(dtype, copy=False) for a in arrays], dtype


def _broadcast(a, b, names):
    if b is None:
        return a, b
    try:
        return tuple(np.broadcast_arrays(a, b))
    except ValueError:
        raise ValueError(f"{names[0]} with shape {a.shape} and {names[1]} with shape "
                         f"{b.shape} do not broadcast together") from None


def _axes(axis, ndim, name):
    """``axis`` (None, an int or a tuple of ints) as a tuple of distinct axes >= 0."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"axis must be None, an integer or a tuple of integers, got {axis!r}")
        try:
            i = operator.index(item)
        except TypeError:
            raise TypeError("axis must be None, an integer or a tuple of integers, "
                            f"got {axis!r}") from None
        if not -ndim <= i < ndim:
            raise np.exceptions.AxisError(
                f"axis {i} is out of bounds for {name} of dimension {ndim}")
        out.append(i % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate value in 'axis': {axis!r}")
    return tuple(out)


def _rows(arr, axes):
    """``arr`` with ``axes`` moved to the end, as 2-D rows; and the kept shape."""
    kept = tuple(s for i, s in enumerate(arr.shape) if i not in axes)
    k = math.prod(arr.shape[i] for i in axes)
    moved = np.moveaxis(arr, axes, tuple(range(arr.ndim - len(axes), arr.ndim)))
    return moved.reshape(math.prod(kept), k), kept


def _unrows(rows, arr_shape, axes):
    """Inverse of :func:`_rows` for a result of the input's shape."""
    kept = [i for i in range(len(arr_shape)) if i not in axes]
    moved_shape = tuple(arr_shape[i] for i in kept) + tuple(arr_shape[i] for i in axes)
    return np.moveaxis(rows.reshape(moved_shape), tuple(range(len(kept), len(arr_shape))),
                       axes)


def _reduced_shape(kept, shape, axes, keepdims):
    return tuple(1 if i in axes else s for i, s in enumerate(shape)) if keepdims else kept


def _scalar(x):
    """0-d arrays become NumPy scalars, as SciPy returns them."""
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _cast(x, dtype):
    with np.errstate(over="ignore"):
        return x.astype(dtype, copy=False)


# --------------------------------------------------------------- logsumexp

def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    r"""Log of the sum of exponentials, ``log(sum(b * exp(a)))``: ``scipy.special.logsumexp``.

    Same signature, defaults and results as SciPy's (real input only).

    Parameters
    ----------
    a : array_like
        Real input; integers and bools are promoted to float64, float16/32/64
        are kept (the dtype follows SciPy's promotion of ``a`` with ``b``).
    axis : None, int or tuple of ints, default None
        Axes summed over; None sums all elements.
    b : array_like, optional
        Scale factors of ``exp(a)``, broadcast against ``a`` (which may then
        broadcast to ``b``'s shape); may be negative or 0. An element with
        ``b == 0`` adds nothing, even where ``a`` is infinite or NaN.
    keepdims : bool, default False
        Keep the reduced axes as dimensions of size one.
    return_sign : bool, default False
        Return ``(log|s|, sign(s))`` for ``s = sum(b * exp(a))``; without it a
        negative ``s`` gives NaN.

    Returns
    -------
    res : numpy.ndarray or numpy scalar
        ``a``'s (broadcast) shape without ``axis``; an empty sum is ``-inf``
        (with sign ``-1``, as SciPy). A NumPy scalar when 0-d.
    sgn : numpy.ndarray or numpy scalar
        Only with ``return_sign``: +1, 0, -1 (NaN for NaN).

    Notes
    -----
    Without ``b``, one kernel call computes the rows' log-sum-exp. With
    ``b``, the positive and negative terms are two log-sum-exps of
    ``a + log|b|`` (in float64), combined as ``hi + log1p(-exp(lo - hi))``.
    Rows whose result is not finite, or negative/zero without
    ``return_sign``, or with non-finite entries, are computed with SciPy's
    own algorithm so that every special value comes out as in SciPy. Where
    ``sum(b * exp(a))`` cancels to within rounding of 0 the two results are
    both inaccurate and may differ.

    Examples
    --------
    >>> from cecore.scipy import logsumexp
    >>> float(logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    >>> [float(v) for v in logsumexp([1, 2], b=[1, -1], return_sign=True)]
    [1.5413248546129181, -1.0]
    """
    keepdims = bool(keepdims)
    return_sign = bool(return_sign)
    (a, b), dtype = _promoted((a, b), ("a", "b"), "logsumexp", force_floating=True)
    a, b = _broadcast(a, b, ("a", "b"))
    a = np.atleast_1d(a)
    b = None if b is None else np.atleast_1d(b)
    axes = _axes(axis, a.ndim, "a")
    kept = tuple(s for i, s in enumerate(a.shape) if i not in axes)
    shape = _reduced_shape(kept, a.shape, axes, keepdims)
    if a.size == 0:
        out = np.full(shape, -np.inf, dtype=dtype)
        sgn = np.full(shape, -1.0, dtype=dtype)  # SciPy: sign(-inf)
        return (_scalar(out), _scalar(sgn)) if return_sign else _scalar(out)
    a_rows, _ = _rows(a, axes)
    if b is None:
        # cecore returns 16-bit input's log-sum-exp in float32; SciPy keeps the dtype
        out = _cast(np.asarray(_softmax.logsumexp(a_rows, axis=-1)), dtype)
        sgn = np.where(out == -np.inf, 0.0, np.where(np.isnan(out), np.nan, 1.0)).astype(dtype)
    else:
        out, sgn = _weighted_logsumexp(a_rows, _rows(b, axes)[0], return_sign, dtype)
    out, sgn = out.reshape(shape), sgn.reshape(shape)
    return (_scalar(out), _scalar(sgn)) if return_sign else _scalar(out)


def _weighted_logsumexp(a, b, return_sign, dtype):
    """log|sum(b exp(a))| and its sign per row of the 2-D ``a``, ``b``."""
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        absb = np.abs(b64)
        la = a64 + np.log(absb)
        pos = np.asarray(_softmax.logsumexp(np.where(b64 > 0, la, -np.inf), axis=-1))
        neg = np.asarray(_softmax.logsumexp(np.where(b64 < 0, la, -np.inf), axis=-1))
        hi, lo = np.maximum(pos, neg), np.minimum(pos, neg)
        out = hi + np.log1p(-np.exp(lo - hi))
        sgn = np.sign(pos - neg)
        used = b64 != 0
        finite_inputs = np.all(np.isfinite(a64) | ~used, axis=-1) & np.all(np.isfinite(b64),
                                                                           axis=-1)
        finite_inputs &= np.isfinite(np.sum(absb, axis=-1))
    exact = finite_inputs & np.isfinite(out) & (sgn != 0)
    if not return_sign:
        exact &= sgn > 0
    out = _cast(out, dtype)
    sgn = sgn.astype(dtype)
    redo = np.flatnonzero(~exact)
    if redo.size:
        out[redo], sgn[redo] = _scipy_logsumexp_rows(a[redo], b[redo], return_sign)
    return out, sgn


def _scipy_logsumexp_rows(a, b, return_sign):
    """SciPy 1.17's algorithm (real case) along the last axis, for the special rows."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        naive = np.sum(b * np.exp(a), axis=-1, keepdims=True)
        sgn_inf = np.sign(naive)
        out_inf = np.log(np.abs(naive) if return_sign else naive)
        a = np.where(b == 0, -np.inf, a)
        a_max = np.max(a, axis=-1, keepdims=True)
        i_max = a == a_max
        a = np.where(i_max, -np.inf, a)
        m = np.sum(b * i_max.astype(a.dtype), axis=-1, keepdims=True, dtype=a.dtype)
        terms = b * np.exp(a - a_max)
        s = np.sum(terms, axis=-1, keepdims=True, dtype=terms.dtype)
        s = np.where(s == 0, s, s / m)
        sgn = np.sign(s + 1) * np.sign(m)
        s = np.where(s < -1, -s - 2, s)
        out = np.log1p(s) + np.log(np.abs(m)) + a_max
        if not return_sign:
            out[sgn < 0] = np.nan
    finite = np.isfinite(out)
    return np.where(finite, out, out_inf)[:, 0], np.where(finite, sgn, sgn_inf)[:, 0]


# ------------------------------------------------------ softmax, log_softmax

def _softmax_like(x, axis, fn, what):
    x = _as_real(x, "x", what)
    if x.dtype.kind == "b":
        raise TypeError(f"x has dtype bool: {what} of booleans is undefined "
                        "(scipy raises TypeError too); convert to a float dtype")
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    axes = _axes(axis, x.ndim, "x")
    rows, kept = _rows(x, axes)
    if rows.shape[1] == 0:
        raise ValueError(f"x has no elements along axis {axis!r}: {what} of an empty set is "
                         "undefined (scipy raises 'zero-size array to reduction operation "
                         "maximum which has no identity')")
    if rows.size == 0:
        return np.empty(x.shape, dtype=dtype)
    result = np.asarray(fn(rows, axis=-1))
    return result, rows, x.shape, axes, dtype


def softmax(x, axis=None):
    r"""Softmax ``exp(x) / sum(exp(x))`` over ``axis``: ``scipy.special.softmax``.

    Parameters
    ----------
    x : array_like
        Real input (float16/32/64 kept, integers give float64).
    axis : None, int or tuple of ints, default None
        Axes normalised over together; None: the whole array.

    Returns
    -------
    numpy.ndarray or numpy scalar
        ``x``'s shape and floating dtype (a NumPy scalar for 0-d ``x``). Rows
        holding NaN or ``+inf``, or only ``-inf``, are NaN, as in SciPy.

    Raises
    ------
    TypeError
        Complex, bool or non-numeric input.
    ValueError
        No elements along ``axis`` (SciPy raises ValueError too).
    numpy.exceptions.AxisError
        An axis out of range.

    Examples
    --------
    >>> from cecore.scipy import softmax
    >>> softmax([0.0, 0.0]).tolist()
    [0.5, 0.5]
    """
    done = _softmax_like(x, axis, _softmax.softmax, "softmax")
    if isinstance(done, np.ndarray):
        return done
    result, _, shape, axes, dtype = done
    return _scalar(_unrows(_cast(result, dtype), shape, axes))


def log_softmax(x, axis=None):
    r"""``x - logsumexp(x)`` over ``axis``: ``scipy.special.log_softmax``.

    Parameters and results as :func:`softmax`. Special values as SciPy: a
    row holding NaN or only ``-inf`` is NaN; a row whose maximum is ``+inf``
    (and no NaN) gives NaN at the ``+inf`` entries and ``-inf`` elsewhere.

    Examples
    --------
    >>> from cecore.scipy import log_softmax
    >>> log_softmax([1000.0, 1.0]).tolist()
    [0.0, -999.0]
    """
    done = _softmax_like(x, axis, _softmax.log_softmax, "log_softmax")
    if isinstance(done, np.ndarray):
        return done
    result, rows, shape, axes, dtype = done
    result = _cast(result, dtype)
    with np.errstate(invalid="ignore"):
        infinite = np.flatnonzero((np.max(rows, axis=-1) == np.inf)
                                  & ~np.any(np.isnan(rows), axis=-1))
    if infinite.size:
        special = rows[infinite]
        result[infinite] = np.where(special == np.inf, np.nan, -np.inf)
    return _scalar(_unrows(result, shape, axes))


# ------------------------------------------------------------------ entropy

def entropy(pk, qk=None, base=None, axis=0, *, nan_policy="propagate", keepdims=False):
    r"""Shannon entropy or relative entropy (KL divergence): ``scipy.stats.entropy``.

    ``H = -sum(pk log pk)``, or ``D = sum(pk log(pk / qk))`` with ``qk``,
    after normalising ``pk`` and ``qk`` to sum to 1 along ``axis`` (unlike
    :func:`cecore.entropy`). Same signature, defaults and results as SciPy
    1.17, for real input.

    Parameters
    ----------
    pk, qk : array_like
        Non-negative (possibly unnormalised) weights; ``qk`` broadcasts with
        ``pk``. A negative entry gives ``-inf`` (entropy) or ``+inf`` (KL)
        as in SciPy.
    base : float, optional
        Logarithm base (e by default); ``base <= 0`` raises ValueError.
    axis : int, tuple of ints or None, default 0
        Axes reduced together; None ravels the inputs first.
    nan_policy : {"propagate", "raise", "omit"}, default "propagate"
        NaN gives NaN for its slice, raises ValueError, or is left out (with
        the element it is paired with in the other input).
    keepdims : bool, default False

    Returns
    -------
    numpy.ndarray or numpy scalar
        The inputs' broadcast shape without ``axis``; float64 for float64,
        integer or mixed input, float32 for float32 and float16.

    Examples
    --------
    >>> from cecore.scipy import entropy
    >>> round(float(entropy([9, 1])), 6)
    0.325083
    >>> round(float(entropy([1, 1], [9, 1])), 6)
    0.510826
    """
    if base is not None and base <= 0:
        raise ValueError("`base` must be a positive number or `None`.")
    if not isinstance(nan_policy, str) or nan_policy not in _POLICIES:
        raise ValueError(f"nan_policy must be one of {_POLICIES}, got {nan_policy!r}.")
    keepdims = bool(keepdims)
    (pk, qk), dtype = _promoted((pk, qk), ("pk", "qk"), "entropy", force_floating=False)
    pk = np.atleast_1d(pk)
    qk = None if qk is None else np.atleast_1d(qk)
    if axis is None:
        ndim = max(pk.ndim, 0 if qk is None else qk.ndim)
        reduced = tuple(range(ndim))
        pk = pk.reshape(-1)
        qk = None if qk is None else qk.reshape(-1)
        pk, qk = _broadcast(pk, qk, ("pk", "qk"))
        axes = (0,)
        full_shape = tuple(1 for _ in reduced)
    else:
        pk, qk = _broadcast(pk, qk, ("pk", "qk"))
        axes = _axes(axis, pk.ndim, "pk")
        reduced = axes
        full_shape = pk.shape
    p_rows, kept = _rows(pk, axes)
    q_rows = None if qk is None else _rows(qk, axes)[0]
    out_dtype = np.result_type(dtype, np.float32) if dtype.kind == "f" else np.dtype(np.float64)
    if p_rows.shape[0] == 0:
        return _entropy_shape(np.empty(kept, dtype=np.result_type(dtype, 1.0)), full_shape,
                              reduced, keepdims, axis is None)
    out = _entropy_rows(p_rows, q_rows, nan_policy, out_dtype)
    if base is not None:
        out /= math.log(base)  # in place, in out's dtype, with NumPy's warnings (as SciPy)
    return _entropy_shape(out.reshape(kept), full_shape, reduced, keepdims, axis is None)


def _entropy_shape(out, full_shape, reduced, keepdims, raveled):
    if keepdims:
        out = np.expand_dims(out, reduced) if not raveled else out.reshape(full_shape)
    return _scalar(out)


def _entropy_rows(p, q, nan_policy, out_dtype):
    """Entropy (or KL with ``q``) of the normalised rows of ``p``."""
    n, k = p.shape
    out = np.zeros(n, dtype=out_dtype)
    if k == 0:
        return out
    nan_rows = emptied = None
    in_dtype = p.dtype
    if p.dtype.kind == "f":
        nan = np.isnan(p) if q is None else np.isnan(p) | np.isnan(q)
        if nan.any():
            if nan_policy == "raise":
                raise ValueError("The input contains nan values")
            if nan_policy == "propagate":
                nan_rows = np.any(nan, axis=-1)
            else:  # omit: the NaN and its partner leave the sums (0 log 0 = 0 terms)
                p = np.where(nan, 0, p)
                q = None if q is None else np.where(nan, 0, q)
                emptied = np.all(nan, axis=-1)  # nothing left: SciPy's empty sum, 0
    with np.errstate(all="ignore"):
        p = p / np.sum(p, axis=-1, keepdims=True)
        q = None if q is None else q / np.sum(q, axis=-1, keepdims=True)
        fine = np.all(np.isfinite(p) & (p >= 0), axis=-1)
        if q is not None:
            fine &= np.all(np.isfinite(q) & (q >= 0), axis=-1)
    good = np.flatnonzero(fine)
    if good.size == n:
        out[:] = _kernel_entropy(p, q)
    elif good.size:
        out[good] = _kernel_entropy(p[good], None if q is None else q[good])
    bad = np.flatnonzero(~fine)
    if bad.size:
        out[bad] = _numpy_entropy(p[bad], None if q is None else q[bad], out_dtype)
    if nan_rows is not None:
        out[nan_rows] = np.nan
        if nan_rows[0]:
            # SciPy's NaN result takes the inputs' float dtype (float16 stays float16)
            # when the first slice is NaN (np.apply_along_axis keeps the first's dtype)
            out = out.astype(np.result_type(in_dtype, 1.0))
    elif emptied is not None:
        out[emptied] = 0.0
    return out


def _kernel_entropy(p, q):
    if q is None:
        return _divergence.entropy(p, axis=-1)
    return _divergence.kl_divergence(p, q, axis=-1)


def _numpy_entropy(p, q, dtype):
    """SciPy's ``entr`` / ``rel_entr`` summed, for rows with negative or non-finite entries."""
    p = p.astype(dtype)
    with np.errstate(all="ignore"):
        if q is None:
            terms = np.where(p > 0, -p * np.log(p), np.where(p == 0, 0.0, -np.inf))
            terms = np.where(np.isnan(p), np.nan, terms)
        else:
            q = q.astype(dtype)
            terms = np.where((p > 0) & (q > 0), p * np.log(p / q),
                             np.where((p == 0) & (q >= 0), 0.0, np.inf))
            terms = np.where(np.isnan(p) | np.isnan(q), np.nan, terms)
        return np.sum(terms.astype(dtype), axis=-1)
