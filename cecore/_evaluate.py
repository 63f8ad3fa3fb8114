"""Streaming evaluation: mean cross-entropy, bits, perplexity and top-k accuracy."""

import math
import operator

import numpy as np

from cecore import _eval_kernels, _softmax_kernels
from cecore._threads import resolve_n_threads, run_kernel
from cecore._validation import (
    asarray,
    check_fraction,
    check_int,
    class_targets,
    class_weight,
    divide,
    kernel_array,
    logits_rows,
    raise_bad_target,
)

LN2 = math.log(2.0)


def _check_topk(topk):
    """``topk`` (an int or ints >= 1) as a sorted tuple without repeats."""
    try:
        values = [topk] if hasattr(topk, "__index__") else list(topk)
        if any(isinstance(k, (bool, np.bool_)) for k in values):
            raise TypeError
        values = [operator.index(k) for k in values]
    except TypeError:
        raise TypeError(f"topk must be an integer or a sequence of integers, got {topk!r}") \
            from None
    if any(not 1 <= k < 2**63 for k in values):  # the kernel takes int64
        raise ValueError(f"topk values must be >= 1 and fit in 64 bits, got {topk!r}")
    return tuple(sorted(set(values)))


def _check_weight(weight):
    """Class weights as a float64 vector (its length is checked against K per batch)."""
    if weight is None:
        return None
    shape = np.shape(weight)
    if len(shape) != 1:
        raise ValueError(f"weight must be 1-D (one weight per class), got shape {shape}")
    return class_weight(weight, shape[0])


class Evaluator:
    r"""Accumulate cross-entropy and top-k accuracy over batches of logits.

    Feed batches of any size with :meth:`update`, combine evaluators that saw
    different parts of the data with :meth:`merge` (they pickle, so they can
    come from other processes), and read the totals with :meth:`result`. Over
    the counted positions ``P`` (targets not equal to ``ignore_index``):

    .. math:: \mathrm{loss} = \frac{\sum_{i \in P} \ell_i}{\sum_{i \in P} w_{y_i}},
              \qquad \mathrm{accuracy@}k = \frac{|\{i \in P : \mathrm{rank}_i < k\}|}{|P|}

    where :math:`\ell_i` is the cross-entropy of position *i* exactly as in
    :func:`cecore.cross_entropy` (class weights ``w``, label smoothing), so
    ``loss`` is ``cross_entropy(all_logits, all_targets)`` with
    ``reduction="mean"``, in nats. ``rank_i = #{j : z_j > z_y} + #{j < y : z_j
    == z_y}`` is the target's position when the logits ``z`` are sorted in
    decreasing order with ties going to the lower class index, as in
    ``argmax`` (accuracy@1 is the fraction with ``argmax(z) == y``; NaN ranks
    above every number, as in ``torch.argmax``). Accuracy is not weighted.

    Each batch is read once, by one fused kernel (log-sum-exp, loss and ranks
    per block of rows); sums are float64 and added in a fixed order, so the
    result does not depend on the thread count, and streaming, merged and
    one-shot evaluation of the same data agree to float64 rounding (to float32
    rounding for float32 logits of at most 32 classes on AVX-512, where a
    row's log-sum-exp depends on its place in the batch at that level).

    Parameters
    ----------
    axis : int, default -1
        The class axis of each batch of logits.
    weight : array_like of shape (K,), optional
        Per-class weights of the loss (not of the accuracy).
    ignore_index : int, default -100
        Target value of positions that are skipped (not counted).
    label_smoothing : float in [0, 1], default 0
        As in :func:`cecore.cross_entropy`.
    topk : int or sequence of int, default (1,)
        The ``k`` of each reported ``accuracy@k`` (empty: no accuracy).
    n_threads : int, optional
        OpenMP threads per batch; default follows OMP_NUM_THREADS.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> ev = cecore.Evaluator(topk=(1, 2))
    >>> ev.update(np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), np.array([0, 1]))
    >>> ev.update(np.array([[0.0, 0.0, 3.0]]), np.array([-100]))  # ignored
    >>> r = ev.result()
    >>> round(r["loss"], 6), round(r["perplexity"], 4), r["accuracy@1"], r["accuracy@2"], r["count"]
    (0.907606, 2.4784, 0.5, 1.0, 2)
    """

    def __init__(self, *, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0,
                 topk=(1,), n_threads=None):
        self.axis = check_int(axis, "axis")
        self.weight = _check_weight(weight)
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.label_smoothing = check_fraction(label_smoothing, "label_smoothing")
        self.topk = _check_topk(topk)
        resolve_n_threads(n_threads, 0)  # validates
        self.n_threads = n_threads
        self.reset()

    def reset(self):
        """Forget every batch seen so far."""
        self.loss_sum = 0.0
        self.weight_sum = 0.0
        self.count = 0
        self.hits = (0,) * len(self.topk)

    def update(self, logits, target):
        """Add a batch: ``logits`` with classes along ``axis``, integer ``target``.

        ``target`` has ``logits``' shape without the class axis. Raises like
        :func:`cecore.cross_entropy` (a target out of range is named with its
        index in this batch); a batch that raises leaves the totals unchanged.
        """
        target = asarray(target, "target")
        bad, n_classes = self._update(logits, target)
        if bad >= 0:
            raise_bad_target(target, bad, n_classes, self.ignore_index)

    def _update(self, logits, target):
        """update() without raising for a bad target.

        Returns ``(flat index of the first out-of-range target or -1, K)``; the
        totals are only changed when every target is valid.
        """
        rows, batch_shape, _, _ = logits_rows(logits, self.axis, "logits")
        n, k = rows.shape
        t_flat = class_targets(target, batch_shape, k, self.ignore_index)
        loss, weight, count, hits, bad = run_kernel(
            _eval_kernels.eval_index, self.n_threads, rows.size,
            *kernel_array(rows), t_flat, class_weight(self.weight, k), self.ignore_index,
            self.label_smoothing,
            np.array(self.topk, dtype=np.int64), _softmax_kernels.block_rows(n, k),
        )
        if bad < 0:
            self._add(loss, weight, count, hits)
        return bad, k

    def _add(self, loss, weight, count, hits):
        self.loss_sum += loss
        self.weight_sum += weight
        self.count += count
        self.hits = tuple(a + b for a, b in zip(self.hits, hits, strict=True))

    def merge(self, other):
        """Add the totals of ``other``, an Evaluator with the same options; returns self."""
        if not isinstance(other, Evaluator):
            raise TypeError(f"can only merge an Evaluator, got {type(other).__name__}")
        if self._options() != other._options():
            raise ValueError(
                "cannot merge evaluators with different options: "
                f"{self._options()} and {other._options()}"
            )
        self._add(other.loss_sum, other.weight_sum, other.count, other.hits)
        return self

    def _options(self):
        weight = None if self.weight is None else tuple(self.weight.tolist())
        return {"weight": weight, "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing, "topk": self.topk}

    def result(self):
        """The metrics so far, as a dict of Python numbers.

        ``loss`` (mean cross-entropy, nats), ``bits`` (loss / ln 2),
        ``perplexity`` (exp(loss)), ``accuracy@k`` for each k of ``topk``, and
        ``count`` (positions not ignored). With nothing counted, loss and
        accuracies are NaN, as in PyTorch.
        """
        loss = divide(self.loss_sum, self.weight_sum)
        try:
            perplexity = math.exp(loss)
        except OverflowError:
            perplexity = math.inf
        metrics = {"loss": loss, "bits": loss / LN2, "perplexity": perplexity}
        for k, hits in zip(self.topk, self.hits, strict=True):
            metrics[f"accuracy@{k}"] = divide(hits, self.count)
        metrics["count"] = self.count
        return metrics

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items() if v is not None)
        return f"Evaluator(count={self.count}, {options})"
