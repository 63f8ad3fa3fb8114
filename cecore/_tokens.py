"""Per-token statistics of language-model outputs: token_stats and sequence_logprob,
and the shifted (next-token) layout shared with the losses and the Evaluator."""

import math
from typing import NamedTuple

import numpy as np

from cecore import _softmax_kernels, _token_kernels
from cecore._threads import resolve_n_threads, run_kernel
from cecore._validation import (
    as_logits_array,
    asarray,
    check_axis,
    check_bool,
    check_int,
    check_real_number,
    compute_dtype,
    kernel_array,
    logits_rows,
    raise_bad_target,
)


class TokenStats(NamedTuple):
    """Per-position results of :func:`token_stats` (arrays over the positions).

    Examples
    --------
    >>> import numpy as np, cecore
    >>> s = cecore.token_stats(np.zeros((2, 4)), np.array([3, -100]))
    >>> s.mask.tolist(), s.rank.tolist(), s.topk_indices is None
    ([True, False], [3, -1], True)
    """

    logprob: np.ndarray
    lse: np.ndarray
    entropy: np.ndarray
    argmax: np.ndarray
    is_greedy: np.ndarray
    rank: np.ndarray
    mask: np.ndarray
    topk_indices: np.ndarray | None
    topk_logprobs: np.ndarray | None


def check_temperature(temperature, dtype=None):
    """``temperature`` as a positive finite float (its reciprocal finite in ``dtype``)."""
    t = check_real_number(temperature, "temperature", "a positive real number")
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be positive and finite, got {t}")
    if dtype is not None and 1.0 / t > float(np.finfo(dtype).max):
        raise ValueError(f"temperature {t} is too small for {dtype} logits (1 / temperature "
                         "overflows)")
    return t


def _int_targets(target, expected_shape, n_classes, ignore_index):
    """Integer targets of ``expected_shape`` as an int32/int64 array (any strides)."""
    t = target
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != tuple(expected_shape):
        raise ValueError(
            f"target has shape {t.shape}, expected {tuple(expected_shape)} "
            "(the logits' shape without the class axis)"
        )
    if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        bad = int(np.argmax((t > np.iinfo(np.int64).max).reshape(-1)))
        raise_bad_target(t, bad, n_classes, ignore_index)
    if t.dtype not in (np.int32, np.int64) or not t.dtype.isnative or not t.flags.aligned:
        t = t.astype(np.int64)
    return t


def _merge_leading(arr, trailing):
    """``arr`` (..., *trailing dims) as (S, ...): a view when the leading axes merge."""
    lead = arr.shape[:arr.ndim - trailing]
    shape = (math.prod(lead),) + arr.shape[arr.ndim - trailing:]
    try:
        return arr.reshape(shape, copy=False)
    except ValueError:
        return arr.reshape(shape)  # leading axes that do not merge: a copy


class Layout(NamedTuple):
    """Logits as (S, L, V) rows and targets as (S, L), both views where possible.

    ``positions``: the shape of the per-position results; ``target``: the
    target as given (for error messages); ``shift``: whether position (s, l)
    is target (s, l + 1).
    """

    rows: np.ndarray
    targets: np.ndarray
    positions: tuple
    in_dtype: np.dtype
    target: np.ndarray
    shift: bool
    n_classes: int

    def target_index(self, flat):
        """The flat index in ``target`` of position ``flat`` (of the S * L)."""
        if not self.positions:
            return 0
        index = list(np.unravel_index(flat, self.positions))
        if self.shift:
            index[-1] += 1
        return int(np.ravel_multi_index(index, self.target.shape))

    def raise_bad(self, flat, ignore_index):
        """Raise for the position ``flat`` (of the S * L) naming it in ``target``."""
        raise_bad_target(self.target, self.target_index(flat), self.n_classes, ignore_index)


def token_layout(logits, target, axis, shift, ignore_index, name="logits"):
    """Validate ``logits``/``target`` and lay them out for the token kernels.

    With ``shift`` the class axis must be last and logits (..., T, V) pair
    positions 0..T-2 with targets 1..T-1 of (..., T): slice views, no copy.
    """
    shift = check_bool(shift, "shift")
    t = asarray(target, "target")
    if not shift:
        rows, batch_shape, _, in_dtype = logits_rows(logits, axis, name)
        k = rows.shape[1]
        tt = _int_targets(t, batch_shape, k, ignore_index).reshape(1, -1)
        return Layout(rows[np.newaxis], tt, tuple(batch_shape), in_dtype, t, False, k)
    given = asarray(logits, name)
    arr, _ = as_logits_array(given, name)  # 16-bit stays 16-bit (no copy)
    axis = check_axis(axis, arr.ndim, name)
    if axis != arr.ndim - 1:
        raise ValueError(f"shift=True needs the class axis last, got axis {axis} of {name} "
                         f"with {arr.ndim} dimensions")
    if arr.ndim < 2:
        raise ValueError(f"shift=True needs {name} of shape (..., T, V), got shape {arr.shape}")
    n_steps, k = arr.shape[-2], arr.shape[-1]
    if k == 0:
        raise ValueError(f"{name} has zero classes along axis {axis}")
    if n_steps < 1:
        raise ValueError("shift=True needs at least one position (T >= 1), got T = 0")
    in_dtype = arr.dtype
    tt = _int_targets(t, arr.shape[:-1], k, ignore_index)
    rows = _merge_leading(arr, 2)[:, :-1, :]
    itemsize = rows.dtype.itemsize
    if not rows.flags.aligned or (k > 1 and rows.strides[2] != itemsize) or any(
            s % itemsize for s in rows.strides):
        rows = np.ascontiguousarray(rows)
    tt = _merge_leading(tt, 1)[:, 1:]
    positions = arr.shape[:-2] + (n_steps - 1,)
    return Layout(rows, tt, positions, np.dtype(in_dtype).newbyteorder("="), t, True, k)


def _stride1(rows):
    """A (S, L, V) view whose last stride is exactly one element (V = 1 may have any)."""
    if rows.shape[2] == 1 and rows.strides[2] != rows.itemsize:
        rows = np.lib.stride_tricks.as_strided(
            rows, rows.shape, rows.strides[:2] + (rows.itemsize,))
    return rows


def _check_topk(topk):
    if isinstance(topk, (bool, np.bool_)):
        raise TypeError("topk must be a non-negative integer, got bool")
    try:
        topk = int(check_int(topk, "topk"))
    except TypeError:
        raise TypeError(f"topk must be a non-negative integer, got {topk!r}") from None
    if topk < 0:
        raise ValueError(f"topk must be a non-negative integer, got {topk}")
    return topk


def token_stats(logits, target, *, axis=-1, ignore_index=-100, shift=False, temperature=1.0,
                topk=0, n_threads=None):
    r"""Per-position log-probability, log-sum-exp, entropy, argmax and rank, fused.

    For each position with logits ``z`` (``V`` classes along ``axis``), target
    ``y`` and ``x = z / temperature``, with ``p = softmax(x)``:

    * ``logprob = log p_y = x_y - lse``
    * ``lse = log sum_j e^{x_j}``
    * ``entropy = -sum_j p_j log p_j = lse - sum_j p_j x_j`` (``0 log 0 = 0``)
    * ``argmax``: the top class, ties to the lower index, NaN above every
      number (as ``torch.argmax``)
    * ``rank = #{j : z_j > z_y} + #{j < y : z_j == z_y}`` (0 = top), the
      :class:`Evaluator`'s rank; ``is_greedy = (argmax == y) = (rank == 0)``
    * with ``topk = k > 0``: the k top classes and their log-probabilities,
      best first, in that order.

    One kernel reads each row once from memory (chunks of 4,096 elements: the
    chunk's maximum, then one SIMD pass over the L1-hot chunk for the sums of
    ``e^d``, ``d e^d`` and the target's rank counts; the top-k in a sorted
    k-entry buffer, fed from the same pass or a threshold scan); no (N, V)
    array is formed. Results are identical for any ``n_threads``.

    Special rows: a row with a NaN has NaN ``logprob``, ``lse`` and
    ``entropy``; a row holding +inf has ``lse = +inf`` and NaN ``logprob``
    and ``entropy``; an all ``-inf`` row has ``lse = -inf`` and NaN
    ``logprob`` and ``entropy``; a target logit of ``-inf`` in a finite row
    has ``logprob = -inf``. Orders (argmax, rank, top-k) are those of the
    logits ``z``.

    Parameters
    ----------
    logits : array_like, float16/float32/float64
    target : array_like of int
        Class indices of ``logits``' shape without ``axis``.
    axis : int, default -1
        The class axis.
    ignore_index : int, default -100
        Positions with this target are not counted: ``mask`` False, ``logprob``,
        ``lse``, ``entropy`` 0.0, ``rank`` and ``argmax`` -1, ``is_greedy``
        False, ``topk_indices`` -1, ``topk_logprobs`` 0.0.
    shift : bool, default False
        Next-token prediction: logits ``(..., T, V)`` (class axis last) and
        target ``(..., T)``; position ``t < T - 1`` of the logits is scored
        against target ``t + 1``. Results have shape ``(..., T - 1)``. Neither
        array is copied (slice views).
    temperature : float > 0, default 1
    topk : int >= 0, default 0
        At most the number of classes.
    n_threads : int, optional

    Returns
    -------
    TokenStats
        ``logprob``, ``lse``, ``entropy``: float64 for float64 logits, float32
        otherwise; ``argmax``, ``rank``: int64; ``is_greedy``, ``mask``: bool;
        all of the positions' shape. ``topk_indices`` (int64) and
        ``topk_logprobs`` of shape ``positions + (k,)``, or None for topk=0.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> z = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    >>> s = cecore.token_stats(z, np.array([1, 2]), topk=2)
    >>> np.round(np.exp(s.logprob), 6).tolist(), s.argmax.tolist(), s.rank.tolist()
    ([0.25, 0.7], [0, 2], [1, 0])
    >>> np.round(s.entropy, 4).tolist(), s.topk_indices.tolist()
    ([1.0397, 0.8018], [[0, 1], [2, 1]])
    """
    ignore_index = check_int(ignore_index, "ignore_index")
    topk = _check_topk(topk)
    lay = token_layout(logits, target, axis, shift, ignore_index)
    rows = _stride1(lay.rows)
    temperature = check_temperature(temperature, compute_dtype(rows.dtype))
    k = rows.shape[2]
    if topk > k:
        raise ValueError(f"topk = {topk} is larger than the number of classes ({k})")
    resolve_n_threads(n_threads, rows.size)
    n = rows.shape[0] * rows.shape[1]
    logprob, lse, entropy = np.empty(n), np.empty(n), np.empty(n)
    argmax, rank = np.empty(n, np.int64), np.empty(n, np.int64)
    greedy, mask = np.empty(n, np.uint8), np.empty(n, np.uint8)
    topk_idx = np.empty(n * topk, np.int64)
    topk_lp = np.empty(n * topk)
    bad = run_kernel(
        _token_kernels.token_stats, n_threads, rows.size,
        *kernel_array(rows), lay.targets, ignore_index, temperature, topk, logprob, lse,
        entropy, argmax,
        rank, greedy, mask, topk_idx, topk_lp, _softmax_kernels.block_rows(n, k),
    )
    if bad >= 0:
        lay.raise_bad(bad, ignore_index)
    result_dtype = np.float64 if rows.dtype == np.float64 else np.float32
    shape = lay.positions

    def floats(a, s=shape):
        with np.errstate(over="ignore"):
            return a.reshape(s).astype(result_dtype, copy=False)

    return TokenStats(
        logprob=floats(logprob), lse=floats(lse), entropy=floats(entropy),
        argmax=argmax.reshape(shape), is_greedy=greedy.view(bool).reshape(shape),
        rank=rank.reshape(shape), mask=mask.view(bool).reshape(shape),
        topk_indices=topk_idx.reshape(shape + (topk,)) if topk else None,
        topk_logprobs=floats(topk_lp, shape + (topk,)) if topk else None,
    )


_EMPTY_F = np.empty(0)
_EMPTY_I = np.empty(0, np.int64)
_EMPTY_U = np.empty(0, np.uint8)


def sequence_logprob(logits, target, *, ignore_index=-100, shift=False, n_threads=None):
    r"""Log-likelihood of each sequence's counted tokens, and whether greedy decoding
    reproduces them: lm-evaluation-harness's ``loglikelihood`` for a batch of requests.

    For logits ``(..., T, V)`` and targets ``(..., T)`` (class axis last), over
    the counted positions ``P`` of each sequence (targets not equal to
    ``ignore_index``; mark the prompt tokens with it):

    .. math:: \mathrm{logprob\_sum} = \sum_{t \in P} \log \mathrm{softmax}(z_t)[y_t],
              \qquad \mathrm{all\_greedy} = \bigwedge_{t \in P} (\arg\max z_t = y_t)

    (argmax ties to the lower index, as in :func:`token_stats`). A sequence
    with no counted token has ``logprob_sum = 0``, ``n_tokens = 0`` and
    ``all_greedy = True`` (an empty continuation is its own greedy
    continuation, as lm-eval's ``(greedy == cont).all()`` of empty tensors).
    With ``shift=True`` logits at position ``t`` predict target ``t + 1``
    (the raw output of a causal LM and its input ids), without copies.

    Returns
    -------
    logprob_sum : numpy.ndarray of float64, shape (...)
        float64 for every input dtype: each token's log-probability is
        computed in float64 from the logits and the sum is float64.
    n_tokens : numpy.ndarray of int64, shape (...)
    all_greedy : numpy.ndarray of bool, shape (...)

    Examples
    --------
    >>> import numpy as np, cecore
    >>> z = np.log(np.array([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))  # (1, T=3, V=2)
    >>> ids = np.array([[-100, 0, 1]])                                   # prompt ignored
    >>> lp, n, greedy = cecore.sequence_logprob(z, ids)
    >>> round(float(np.exp(lp[0])), 6), n.tolist(), greedy.tolist()
    (0.72, [2], [True])
    """
    ignore_index = check_int(ignore_index, "ignore_index")
    given = asarray(logits, "logits")
    if given.ndim < 2:
        raise ValueError(f"logits must have shape (..., T, V), got shape {given.shape}")
    lay = token_layout(given, target, -1, shift, ignore_index)
    rows = _stride1(lay.rows)
    k = rows.shape[2]
    resolve_n_threads(n_threads, rows.size)
    n = rows.shape[0] * rows.shape[1]
    logprob = np.empty(n)
    greedy = np.empty(n, np.uint8)
    bad = run_kernel(
        _token_kernels.token_stats, n_threads, rows.size,
        *kernel_array(rows), lay.targets, ignore_index, 1.0, 0, logprob, _EMPTY_F, _EMPTY_F,
        _EMPTY_I,
        _EMPTY_I, greedy, _EMPTY_U, _EMPTY_I, _EMPTY_F, _softmax_kernels.block_rows(n, k),
    )
    if bad >= 0:
        lay.raise_bad(bad, ignore_index)
    shape = lay.positions
    counted = (lay.targets != ignore_index).reshape(shape)
    logprob = logprob.reshape(shape)
    greedy = greedy.view(bool).reshape(shape)
    return (logprob.sum(axis=-1), counted.sum(axis=-1, dtype=np.int64),
            np.all(greedy | ~counted, axis=-1))
