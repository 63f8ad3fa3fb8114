"""Cross-entropy and evaluation of Dask arrays chunked along rows.

``import cecore.dask`` needs ``dask[array]`` (``pip install "cecore[dask]"``);
``import cecore`` does not import Dask. Each chunk of rows is reduced by
cecore's kernels to an :class:`cecore.Evaluator` (float64 partial sums), and
the partial results are merged as a tree, in an order fixed by the chunks, so
the result is the same on every scheduler (threads, processes, distributed).
"""

import copy

import dask
import dask.array as da
import numpy as np

import cecore
from cecore._evaluate import Evaluator
from cecore._losses import _check_class_targets
from cecore._validation import (
    as_result,
    check_axis,
    check_int,
    check_reduction,
    class_weight,
    is_bfloat16,
    raise_bad_target,
)

__all__ = ["cross_entropy", "evaluate"]

# Partial results merged per task of the tree reduction (when split_every is None).
SPLIT_EVERY = 8


def evaluate(logits, target, *, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0,
             topk=(1,), n_threads=None, split_every=None):
    """:class:`cecore.Evaluator`'s result for Dask arrays, lazily.

    ``logits`` is a Dask array chunked along its rows only (the first axis
    other than ``axis``): every other axis, the class axis included, must be
    one chunk. ``target`` (integer class indices, ``logits``' shape without
    ``axis``) is a Dask or NumPy array; it is rechunked to ``logits``' rows if
    needed. Options are those of :class:`cecore.Evaluator`; ``n_threads`` is
    per chunk (pass 1 when the scheduler runs as many chunks at once as there
    are cores). ``split_every`` partial results are merged per task (default 8).

    Returns
    -------
    dask.delayed.Delayed
        ``.compute()`` gives the dict of :meth:`cecore.Evaluator.result`, equal
        to evaluating the whole arrays in memory to rounding (as streaming
        evaluation is, see :class:`cecore.Evaluator`), and identical on every
        scheduler.

    Raises
    ------
    TypeError, ValueError
        At once for bad options, dtypes, shapes or chunks; a target out of
        range raises ValueError at compute time, naming its index in ``target``.

    Examples
    --------
    >>> import dask.array as da, numpy as np, cecore.dask
    >>> logits = da.from_array(np.eye(4) * 3, chunks=(2, 4))
    >>> result = cecore.dask.evaluate(logits, np.array([0, 1, 2, 0])).compute()
    >>> result["accuracy@1"], result["count"]
    (0.75, 4)
    """
    tree = _evaluator_tree(logits, target, axis, split_every,
                           {"weight": weight, "ignore_index": ignore_index,
                            "label_smoothing": label_smoothing, "topk": topk,
                            "n_threads": n_threads})
    return dask.delayed(Evaluator.result, pure=True)(tree)


def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean", n_threads=None, split_every=None):
    """:func:`cecore.cross_entropy` of Dask arrays with class-index targets, lazily.

    Chunking and ``target`` as in :func:`evaluate`; options as
    :func:`cecore.cross_entropy`. ``"mean"`` and ``"sum"`` reduce per-chunk
    float64 sums as a tree; ``"none"`` maps the kernel over the chunks.

    Returns
    -------
    dask.array.Array
        0-d for ``"mean"`` and ``"sum"`` (``.compute()`` gives the NumPy
        scalar ``cecore.cross_entropy`` would return for the whole arrays, to
        rounding, as :func:`evaluate`), ``target``'s shape and chunks for
        ``"none"``.

    Examples
    --------
    >>> import dask.array as da, numpy as np, cecore.dask
    >>> logits = da.from_array(np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]), chunks=(1, 3))
    >>> round(float(cecore.dask.cross_entropy(logits, np.array([0, 2])).compute()), 6)
    0.669962
    """
    reduction = check_reduction(reduction)
    options = {"weight": weight, "ignore_index": ignore_index,
               "label_smoothing": label_smoothing, "n_threads": n_threads}
    logits = _as_dask(logits, "logits")
    # that of cecore.cross_entropy's result: float32 for float32 and 16-bit logits
    dtype = np.dtype(np.float32 if is_bfloat16(logits.dtype) or (
        logits.dtype.kind == "f" and logits.dtype.itemsize < 8) else np.float64)
    if reduction == "none":
        logits, target, axis, row_axis = _aligned(logits, target, axis,
                                                  {**options, "topk": ()})
        indices = tuple(range(logits.ndim))
        out_indices = indices[:axis] + indices[axis + 1:]
        # each block's first row, paired with the blocks by position (one per row chunk)
        starts = np.cumsum((0,) + logits.chunks[row_axis][:-1])
        first_rows = da.from_array(starts, chunks=1)
        return da.blockwise(_cross_entropy_block, out_indices, logits, indices, target,
                            out_indices, first_rows, (out_indices[0],), dtype=dtype,
                            concatenate=True, align_arrays=False, axis=axis, **options)
    tree = _evaluator_tree(logits, target, axis, split_every, {**options, "topk": ()})
    value = dask.delayed(_loss, pure=True)(tree, reduction, dtype)
    return da.from_delayed(value, shape=(), dtype=dtype)


def _loss(evaluator, reduction, dtype):
    value = evaluator.loss_sum if reduction == "sum" else evaluator.result()["loss"]
    return as_result(value, dtype)


def _cross_entropy_block(logits, target, first_row, *, axis, ignore_index, **options):
    """Per-row losses of one block; a bad target is named by its index in the whole array."""
    try:
        return cecore.cross_entropy(logits, target, axis=axis, ignore_index=ignore_index,
                                    reduction="none", **options)
    except ValueError:
        n_classes = logits.shape[axis]
        _check_class_targets(target, target.reshape(-1), n_classes, ignore_index,
                             first_row=int(first_row[0]))
        raise


def _as_dask(array, name):
    if not isinstance(array, da.Array):
        raise TypeError(f"{name} must be a dask array, got {type(array).__name__} "
                        "(use cecore's functions for in-memory arrays)")
    return array


def _aligned(logits, target, axis, options):
    """Validate and align: ``(logits, target, class axis, row axis of logits)``.

    Everything that can be checked without computing is checked here: options
    (by building an Evaluator), dtypes, shapes, the weight's length, chunks.
    """
    Evaluator(**options)
    logits = _as_dask(logits, "logits")
    if not is_bfloat16(logits.dtype) and (
            logits.dtype.kind not in "fiu" or logits.dtype.itemsize > 8):
        raise TypeError(f"logits must be a real float or integer array, got {logits.dtype}")
    if logits.ndim < 2:
        raise ValueError(f"logits must have rows and classes (2 or more dimensions), "
                         f"got shape {logits.shape}")
    axis = check_axis(axis, logits.ndim, "logits")
    class_weight(options["weight"], logits.shape[axis])
    if logits.shape[axis] == 0:
        raise ValueError(f"logits has zero classes along axis {axis}")
    if any(np.isnan(size) for size in logits.shape):
        raise ValueError("logits has unknown chunk sizes; call logits.compute_chunk_sizes()")
    row_axis = 0 if axis != 0 else 1
    split = [i for i, chunks in enumerate(logits.chunks) if len(chunks) > 1 and i != row_axis]
    if split:
        raise ValueError(
            f"logits must be chunked along its rows (axis {row_axis}) only, but axis "
            f"{split[0]} has {len(logits.chunks[split[0]])} chunks; rechunk it, e.g. "
            f"logits.rechunk({{{split[0]}: -1}})"
        )
    expected = logits.shape[:axis] + logits.shape[axis + 1:]
    if not isinstance(target, da.Array):
        target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != expected:
        raise ValueError(f"target has shape {target.shape}, expected {expected} "
                         "(the logits' shape without the class axis)")
    target = da.asarray(target).rechunk((logits.chunks[row_axis],) + (-1,) * (len(expected) - 1))
    return logits, target, axis, row_axis


def _evaluate_block(logits, target, first_row, options):
    evaluator = Evaluator(**options)
    bad, n_classes = evaluator._update(logits, target)
    if bad >= 0:
        raise_bad_target(target, bad, n_classes, options["ignore_index"], first_row)
    return evaluator


def _merge(*evaluators):
    total = copy.copy(evaluators[0])  # the inputs stay as they are (dask may reuse them)
    for evaluator in evaluators[1:]:
        total.merge(evaluator)
    return total


def _evaluator_tree(logits, target, axis, split_every, options):
    """Delayed Evaluator of the whole arrays: one per chunk, merged as a tree."""
    split_every = SPLIT_EVERY if split_every is None else check_int(split_every, "split_every")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    logits, target, axis, row_axis = _aligned(logits, target, axis, options)
    options = {**options, "axis": axis}
    starts = np.cumsum((0,) + logits.chunks[row_axis])
    parts = [
        dask.delayed(_evaluate_block, pure=True)(block, target_block, int(first), options)
        for block, target_block, first in zip(logits.to_delayed().ravel(),
                                              target.to_delayed().ravel(), starts[:-1],
                                              strict=True)
    ]
    while len(parts) > 1:
        parts = [dask.delayed(_merge, pure=True)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]
