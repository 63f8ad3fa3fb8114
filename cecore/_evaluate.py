"""Streaming evaluation: mean cross-entropy, bits, perplexity and top-k accuracy."""

import math
import operator

import numpy as np

from cecore import _softmax_kernels, _token_kernels
from cecore._losses import _check_softcap, _check_z_loss, _layout_sample_weights
from cecore._threads import resolve_n_threads, run_kernel
from cecore._tokens import _stride1, check_temperature, token_layout
from cecore._validation import (
    check_bool,
    check_fraction,
    check_int,
    class_weight,
    compute_dtype,
    divide,
    kernel_array,
)

LN2 = math.log(2.0)
N_BINS = _token_kernels.N_CALIBRATION_BINS


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


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


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

    With p = softmax(z / T) (``temperature`` T; the loss is that of z / T too),
    :meth:`result` also reports, over the counted positions (unweighted):

    .. math:: \mathrm{entropy} = \frac{1}{|P|} \sum_{i \in P} -\sum_k p_{ik} \log p_{ik},
              \qquad \mathrm{brier} = \frac{1}{|P|} \sum_{i \in P}
              \Big(\sum_k p_{ik}^2 - 2 p_{i y_i} + 1\Big)

    and ``ece``, the expected calibration error of the top-1 prediction
    (Guo et al. 2017) with 15 equal-width bins ``(b/15, (b+1)/15]`` of the
    confidence ``c_i = max_k p_ik`` (bin ``ceil(15 c) - 1``):
    ``ece = sum_b |B_b| / |P| * |acc(B_b) - conf(B_b)|`` (NaN if a confidence
    is NaN). :meth:`calibration` gives the per-bin counts, mean confidences
    and accuracies. When every batch came with ``n_bytes`` (``n_words``),
    result() adds lm-evaluation-harness's corpus-level ``bits_per_byte`` =
    L / (ln 2 * bytes), ``byte_perplexity`` = exp(L / bytes) (and
    ``word_perplexity`` = exp(L / words)), L the sum of the counted
    positions' losses in nats; they need an unweighted, unsmoothed loss
    (update raises otherwise). ``shift=True`` scores logits (..., T, V) at
    position t against target t + 1 (next-token prediction), without copies.

    Each batch is read once, by one fused kernel (row maximum, then one SIMD
    pass for the sums of exponentials, entropy and squared probabilities, and
    the target's rank); sums are float64 and added in a fixed order, so the
    result does not depend on the thread count, and streaming, merged and
    one-shot evaluation of the same data agree to float64 rounding (to float32
    rounding).

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
    temperature : float > 0, default 1
        Every metric is that of softmax(logits / temperature).
    shift : bool, default False
        Next-token prediction: logits (..., T, V), class axis last, targets
        (..., T); position t is scored against target t + 1.
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse**2`` to each counted position's loss, as
        :func:`cecore.cross_entropy` does (loss, bits and perplexity only).
    softcap : float > 0, optional
        The loss is that of the soft-capped logits ``c tanh(z / c)``, as in
        :func:`cecore.cross_entropy`; the other metrics (accuracy, entropy,
        brier, ece) stay those of softmax(z). z_loss, softcap and
        ``update(..., sample_weight=)`` need ``temperature=1`` and cost a
        second pass over each batch (cross_entropy's kernel).
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
                 topk=(1,), n_threads=None, temperature=1.0, shift=False, z_loss=0.0,
                 softcap=None):
        self.axis = check_int(axis, "axis")
        self.weight = _check_weight(weight)
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.label_smoothing = check_fraction(label_smoothing, "label_smoothing")
        self.topk = _check_topk(topk)
        self.temperature = check_temperature(temperature)
        self.shift = check_bool(shift, "shift")
        self.z_loss = _check_z_loss(z_loss)
        _check_softcap(softcap, np.dtype(np.float64))
        self.softcap = None if softcap is None else float(softcap)
        if (self.z_loss or self.softcap is not None) and self.temperature != 1.0:
            raise ValueError("z_loss and softcap are loss options of temperature 1: "
                             "they cannot be combined with temperature != 1")
        resolve_n_threads(n_threads, 0)  # validates
        self.n_threads = n_threads
        self.reset()

    def reset(self):
        """Forget every batch seen so far."""
        self.loss_sum = 0.0
        self.weight_sum = 0.0
        self.count = 0
        self.hits = (0,) * len(self.topk)
        self.entropy_sum = 0.0
        self.brier_sum = 0.0
        self.bin_count = (0,) * (N_BINS + 1)     # the last: NaN confidences
        self.bin_confidence = (0.0,) * N_BINS    # sums
        self.bin_correct = (0,) * N_BINS
        self.batches = 0
        self.n_bytes = 0
        self.n_words = 0
        self.batches_with_bytes = 0
        self.batches_with_words = 0

    def update(self, logits, target, *, n_bytes=None, n_words=None, sample_weight=None):
        """Add a batch: ``logits`` with classes along ``axis``, integer ``target``.

        ``target`` has ``logits``' shape without the class axis (with
        ``shift``: the same (..., T) as the logits' (..., T, V)). ``n_bytes``,
        ``n_words``: the batch's size in UTF-8 bytes / words of the scored
        text, for bits_per_byte, byte_perplexity and word_perplexity (need no
        ``weight``, ``label_smoothing``, ``z_loss`` or ``sample_weight``).
        ``sample_weight``: one weight >= 0 per position, as in
        :func:`cecore.cross_entropy` (with ``shift`` the target's shape or the
        positions'); it weighs the loss only. Raises like
        :func:`cecore.cross_entropy` (a target out of range is named with its
        index in this batch); a batch that raises leaves the totals unchanged.
        """
        sizes = self._check_sizes(n_bytes, n_words, sample_weight)
        bad, lay = self._update_layout(logits, target, sizes, sample_weight)
        if bad >= 0:
            lay.raise_bad(bad, self.ignore_index)

    def _check_sizes(self, n_bytes, n_words, sample_weight=None):
        sizes = []
        if sample_weight is not None and self.temperature != 1.0:
            raise ValueError("sample_weight is a loss option of temperature 1: it cannot be "
                             "combined with temperature != 1")
        for value, name in ((n_bytes, "n_bytes"), (n_words, "n_words")):
            if value is not None:
                value = check_int(value, name)
                if value < 0:
                    raise ValueError(f"{name} must be >= 0, got {value}")
                if (self.weight is not None or self.label_smoothing or self.z_loss
                        or sample_weight is not None):
                    raise ValueError(
                        f"{name} is for bits_per_byte / byte_perplexity / word_perplexity, "
                        "which are defined for the plain log-likelihood only: not with "
                        "weight or label_smoothing (nor z_loss or sample_weight)")
            sizes.append(value)
        return sizes

    def _update(self, logits, target, *, n_bytes=None, n_words=None):
        """update() without raising for a bad target.

        Returns ``(flat index in target of the first out-of-range target or -1, K)``;
        the totals are only changed when every target is valid.
        """
        sizes = self._check_sizes(n_bytes, n_words)
        bad, lay = self._update_layout(logits, target, sizes)
        return (lay.target_index(bad) if bad >= 0 else -1), lay.n_classes

    def _update_layout(self, logits, target, sizes=(None, None), sample_weight=None):
        """_update's work; returns ``(first bad position of the layout or -1, layout)``."""
        lay = token_layout(logits, target, self.axis, self.shift, self.ignore_index)
        sw = _layout_sample_weights(sample_weight, lay)
        rows = _stride1(lay.rows)
        check_temperature(self.temperature, compute_dtype(rows.dtype))
        k = rows.shape[2]
        n = rows.shape[0] * rows.shape[1]
        sums, counts, bad = run_kernel(
            _token_kernels.eval_stats, self.n_threads, rows.size,
            *kernel_array(rows), lay.targets, class_weight(self.weight, k), self.ignore_index,
            self.label_smoothing, self.temperature, np.array(self.topk, dtype=np.int64),
            _softmax_kernels.block_rows(n, k),
        )
        if bad < 0:
            nt = len(self.topk)
            counts = [int(c) for c in counts]
            sums = [float(v) for v in sums]
            if self.z_loss or self.softcap is not None or sw is not None:
                sums[0], sums[1] = self._option_loss(rows, lay.targets, sw)
            self._add(sums[0], sums[1], counts[0], counts[1:1 + nt], sums[2], sums[3],
                      counts[1 + nt:2 + nt + N_BINS], sums[4:4 + N_BINS],
                      counts[2 + nt + N_BINS:2 + nt + 2 * N_BINS], 1,
                      *(0 if v is None else v for v in sizes),
                      *(v is not None for v in sizes))
        return bad, lay

    def _option_loss(self, rows, targets, sw):
        """(sum of losses, sum of sample_weight * w[y]) with z_loss / softcap / sample
        weights: a second pass, by cross_entropy's kernel, per sequence in order."""
        k = rows.shape[2]
        w = class_weight(self.weight, k)
        dtype = compute_dtype(rows.dtype)
        softcap = _check_softcap(self.softcap, dtype)
        empty = np.empty(0, dtype)
        loss = weight = 0.0
        for s in range(rows.shape[0]):
            x, half = kernel_array(rows[s])
            t = np.ascontiguousarray(targets[s])
            sw_s = np.empty(0) if sw is None else np.ascontiguousarray(sw[s])
            total, wsum, _ = run_kernel(
                _softmax_kernels.ce_index_loss_opts, self.n_threads, rows[s].size,
                x, half, t, w, self.ignore_index, self.label_smoothing, 1.0,
                np.empty((0, 0), x.dtype), empty, self.z_loss, softcap, sw_s, empty)
            loss += total
            weight += wsum
        return loss, weight

    def _add(self, loss, weight, count, hits, entropy, brier, bin_count, bin_confidence,
             bin_correct, batches, n_bytes, n_words, with_bytes, with_words):
        def add(a, b):
            return tuple(x + y for x, y in zip(a, b, strict=True))

        self.loss_sum += loss
        self.weight_sum += weight
        self.count += count
        self.hits = add(self.hits, hits)
        self.entropy_sum += entropy
        self.brier_sum += brier
        self.bin_count = add(self.bin_count, bin_count)
        self.bin_confidence = add(self.bin_confidence, bin_confidence)
        self.bin_correct = add(self.bin_correct, bin_correct)
        self.batches += batches
        self.n_bytes += n_bytes
        self.n_words += n_words
        self.batches_with_bytes += int(with_bytes)
        self.batches_with_words += int(with_words)

    def _totals(self):
        return (self.loss_sum, self.weight_sum, self.count, self.hits, self.entropy_sum,
                self.brier_sum, self.bin_count, self.bin_confidence, self.bin_correct,
                self.batches, self.n_bytes, self.n_words, self.batches_with_bytes,
                self.batches_with_words)

    def merge(self, other):
        """Add the totals of ``other``, an Evaluator with the same options; returns self."""
        if not isinstance(other, Evaluator):
            raise TypeError(f"can only merge an Evaluator, got {type(other).__name__}")
        if self._options() != other._options():
            raise ValueError(
                "cannot merge evaluators with different options: "
                f"{self._options()} and {other._options()}"
            )
        self._add(*other._totals())
        return self

    def _options(self):
        weight = None if self.weight is None else tuple(self.weight.tolist())
        return {"weight": weight, "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing, "topk": self.topk,
                "temperature": self.temperature, "shift": self.shift, "z_loss": self.z_loss,
                "softcap": self.softcap}

    def result(self):
        """The metrics so far, as a dict of Python numbers.

        ``loss`` (mean cross-entropy, nats), ``bits`` (loss / ln 2),
        ``perplexity`` (exp(loss)), ``accuracy@k`` for each k of ``topk``,
        ``entropy`` (mean predictive entropy, nats), ``brier``, ``ece`` (see
        the class docstring), ``count`` (positions not ignored), and, when
        every batch came with ``n_bytes`` / ``n_words``, ``bits_per_byte``,
        ``byte_perplexity`` / ``word_perplexity``. With nothing counted, the
        means are NaN, as in PyTorch. Raises ValueError when only some
        batches came with ``n_bytes`` (or ``n_words``).
        """
        loss = divide(self.loss_sum, self.weight_sum)
        metrics = {"loss": loss, "bits": loss / LN2, "perplexity": _exp(loss)}
        for k, hits in zip(self.topk, self.hits, strict=True):
            metrics[f"accuracy@{k}"] = divide(hits, self.count)
        metrics["entropy"] = divide(self.entropy_sum, self.count)
        metrics["brier"] = divide(self.brier_sum, self.count)
        metrics["ece"] = self._ece()
        metrics["count"] = self.count
        for name, given, total, keys in (
                ("n_bytes", self.batches_with_bytes, self.n_bytes,
                 ("bits_per_byte", "byte_perplexity")),
                ("n_words", self.batches_with_words, self.n_words, ("word_perplexity",))):
            if given == 0:
                continue
            if given != self.batches:
                raise ValueError(
                    f"{name} was given for {given} of {self.batches} batches: give it for "
                    "every batch (or none)")
            per_unit = divide(self.loss_sum, total)
            for key in keys:
                metrics[key] = per_unit / LN2 if key == "bits_per_byte" else _exp(per_unit)
        return metrics

    def _ece(self):
        if self.bin_count[N_BINS]:
            return math.nan  # a NaN confidence
        return divide(sum(abs(correct - conf) for correct, conf
                          in zip(self.bin_correct, self.bin_confidence, strict=True)),
                      self.count)

    def calibration(self):
        """Reliability diagram data: 15 equal-width confidence bins ``(b/15, (b+1)/15]``.

        Returns a dict of lists of length 15: ``edges`` (the bins' upper
        edges), ``count`` (counted positions whose top-1 probability falls in
        the bin), ``confidence`` (their mean top-1 probability) and
        ``accuracy`` (the fraction whose argmax is the target); NaN for empty
        bins. Positions with a NaN confidence are in no bin.
        """
        counts = list(self.bin_count[:N_BINS])
        return {
            "edges": [(b + 1) / N_BINS for b in range(N_BINS)],
            "count": counts,
            "confidence": [divide(c, n) for c, n in zip(self.bin_confidence, counts,
                                                        strict=True)],
            "accuracy": [divide(c, n) for c, n in zip(self.bin_correct, counts,
                                                      strict=True)],
        }

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items() if v is not None)
        return f"Evaluator(count={self.count}, {options})"
