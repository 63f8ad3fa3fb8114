"""Model against model: llama.cpp's ``perplexity --kl-divergence`` statistics, streamed."""

import math

import numpy as np

from cecore._softmax import log_softmax
from cecore._threads import resolve_n_threads
from cecore._tokens import token_layout
from cecore._validation import asarray, check_bool, check_int

# The fractions of the reported percentiles: (key suffix, fraction), largest first, as
# llama.cpp prints them; Δp also has the quartiles (llama.cpp prints those for Δp only).
_KL_PERCENTILES = (("max", 1.0), ("p99.9", 0.999), ("p99", 0.99), ("p95", 0.95),
                   ("p90", 0.90), ("median", 0.5), ("p10", 0.10), ("p5", 0.05),
                   ("p1", 0.01), ("p0.1", 0.001), ("min", 0.0))
_DP_PERCENTILES = (_KL_PERCENTILES[:5] + (("p75", 0.75),) + _KL_PERCENTILES[5:6]
                   + (("p25", 0.25),) + _KL_PERCENTILES[6:])

# The sums kept per Comparison (exactly, see _ExactSum): of the per-position values
# and of their squares and products, as llama.cpp's kl_divergence_result keeps them.
# (d = logr - logp: its variance is llama.cpp's var(a) + var(b) - 2 cov(a, b), but from
# the differences' own squares it does not cancel when the two models are close.)
_SUMS = ("kl", "kl2", "dp", "dp2", "dp4", "logp", "logp2", "logr", "logr2", "logp_logr",
         "d", "d2")


def _comparison_rows_numpy(logits, ref_logits, target, *, axis=-1, ignore_index=-100,
                           shift=False, n_threads=None):
    """Per-position KL(r || p), log p(target), log r(target), same argmax: NumPy stand-in.

    The interface of the fused kernel ``cecore._logit_divergence._comparison_rows``
    (which replaces this function when it is built): 1-D arrays over the
    counted positions only (targets not equal to ``ignore_index``), in
    position order. ``kl`` = sum_j r_j (log r_j - log p_j) with 0 log 0 = 0,
    float64; ``logp``, ``logr``: float64; ``same_top``: bool, argmax(logits)
    == argmax(ref_logits), ties to the lower index. p = softmax(logits), r =
    softmax(ref_logits) along ``axis``, in float64 (two log_softmax passes and
    an (n, V) float64 copy of each input: slow, for when the kernel is absent).
    """
    ignore_index = check_int(ignore_index, "ignore_index")
    z, ref = asarray(logits, "logits"), asarray(ref_logits, "ref_logits")
    if z.shape != ref.shape:
        raise ValueError(f"logits has shape {z.shape} but ref_logits has shape {ref.shape}: "
                         "the two must have the same shape")
    resolve_n_threads(n_threads, 0)  # validates
    lay = token_layout(z, target, axis, shift, ignore_index)
    ref_lay = token_layout(ref, target, axis, shift, ignore_index, name="ref_logits")
    t = lay.targets.reshape(-1)
    counted = t != ignore_index
    bad = counted & ((t < 0) | (t >= lay.n_classes))
    if bad.any():
        lay.raise_bad(int(np.argmax(bad)), ignore_index)
    k = lay.n_classes

    def counted_rows(rows):
        return np.asarray(rows.reshape(-1, k)[counted], dtype=np.float64)

    x, xr = counted_rows(lay.rows), counted_rows(ref_lay.rows)
    t = t[counted].astype(np.intp)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lp = log_softmax(x, axis=-1, n_threads=n_threads) if len(x) else x
        lr = log_softmax(xr, axis=-1, n_threads=n_threads) if len(xr) else xr
        r = np.exp(lr)
        kl = np.sum(np.where(r > 0, r * (lr - lp), np.where(np.isnan(r), np.nan, 0.0)),
                    axis=-1)
    rows = np.arange(len(t))
    same = np.argmax(x, axis=-1) == np.argmax(xr, axis=-1) if len(t) else np.zeros(0, bool)
    return kl, lp[rows, t], lr[rows, t], same


# ------------------------------------------------------------------------------------
# The per-position kernel. Swapped for the fused one when cecore._logit_divergence is
# built (issue 14 item 1); the stand-in above has the same signature and results.
try:
    from cecore._logit_divergence import _comparison_rows
except ImportError:
    _comparison_rows = _comparison_rows_numpy
# ------------------------------------------------------------------------------------

# Sums are integers in units of 2**-_UNITS: every float64 is one (the smallest
# subnormal, 2**-1074, is its 53-bit mantissa times 2**-1126).
_UNITS = 1130
# Elements per block of an exact sum: the halves of the mantissas (at most 2**27 in
# magnitude) of this many elements add up exactly in float64 (below 2**53).
_EXACT_BLOCK = 1 << 25


class _ExactSum:
    """The exact sum of float64 values: an integer (units of 2**-1130) and counts of
    the non-finite values, so adding in any order or grouping gives the same sum."""

    __slots__ = ("total", "pos_inf", "neg_inf", "nan")

    def __init__(self, total=0, pos_inf=0, neg_inf=0, nan=0):
        self.total, self.pos_inf, self.neg_inf, self.nan = total, pos_inf, neg_inf, nan

    @classmethod
    def of(cls, x):
        """The exact sum of the float64 array ``x``."""
        sums = _ExactSums(1)
        sums.add_values(np.asarray(x, dtype=np.float64).reshape(1, -1))
        return sums.folded()[0]

    def add(self, other):
        self.total += other.total
        self.pos_inf += other.pos_inf
        self.neg_inf += other.neg_inf
        self.nan += other.nan

    @property
    def finite(self):
        return not (self.pos_inf or self.neg_inf or self.nan)

    def mean(self, n):
        """sum / n rounded once (IEEE: NaN for a NaN, inf - inf or n = 0)."""
        if self.nan or (self.pos_inf and self.neg_inf) or n == 0:
            return math.nan
        if self.pos_inf or self.neg_inf:
            return math.inf if self.pos_inf else -math.inf
        return _ratio(self.total, n << _UNITS)

    def state(self):
        return (self.total, self.pos_inf, self.neg_inf, self.nan)


# Bins of the exponents np.frexp gives finite doubles, [-1073, 1024], offset by 1100.
_BINS, _BIN_OFFSET = 2200, 1100
# Elements per bin a bin's int64 sums take before they are folded into Python
# integers: |mantissa half| <= 2**27, so 2**34 of them stay below 2**63 (twice that
# after a merge).
_FOLD_AT = 1 << 34


class _ExactSums:
    """Exact sums of k float64 statistics, fed (k, n) blocks of values, vectorised.

    Each finite value is m 2**e (np.frexp), its 53-bit integer mantissa split into
    a high and a low half; the halves are added per (statistic, exponent) bin in
    int64 (np.bincount of one block: float64 sums of integers below 2**53, exact),
    and the bins are folded into one Python integer per statistic (units of
    2**-1130) when needed, so no per-value Python work is done.
    """

    def __init__(self, k):
        self.k = k
        self.high = np.zeros((k, _BINS), np.int64)
        self.low = np.zeros((k, _BINS), np.int64)
        self.pending = 0
        self._folded = [_ExactSum() for _ in range(k)]

    def add_values(self, values):
        k, n = values.shape
        finite = np.isfinite(values)
        if not finite.all():
            for i in np.flatnonzero(~finite.all(axis=1)):
                row, s = values[i], self._folded[i]
                s.nan += int(np.count_nonzero(np.isnan(row)))
                s.pos_inf += int(np.count_nonzero(row == np.inf))
                s.neg_inf += int(np.count_nonzero(row == -np.inf))
            values = np.where(finite, values, 0.0)
        step = max(1, _EXACT_BLOCK // k)
        for first in range(0, n, step):
            m, e = np.frexp(values[:, first:first + step])
            if not e.size:
                continue
            mantissa = (m * 2.0**53).astype(np.int64)  # exact: |m| < 1
            # bins of this block's exponents only: [low, low + span) per statistic
            lowest = int(e.min())
            span = int(e.max()) - lowest + 1
            index = (e + (np.arange(k, dtype=np.int64) * span - lowest)[:, None]).reshape(-1)
            where = slice(lowest + _BIN_OFFSET, lowest + _BIN_OFFSET + span)
            for bins, half in ((self.high, mantissa >> 26),  # mantissa = high 2**26 + low
                               (self.low, mantissa & ((1 << 26) - 1))):
                bins[:, where] += np.bincount(index, weights=half.reshape(-1),
                                              minlength=k * span).reshape(k, span).astype(
                                                  np.int64)
            self.pending += min(step, n - first)
            if self.pending >= _FOLD_AT:
                self.fold()

    def add(self, other):
        self.high += other.high
        self.low += other.low
        self.pending += other.pending
        for mine, theirs in zip(self._folded, other._folded, strict=True):
            mine.add(theirs)
        if self.pending >= _FOLD_AT:
            self.fold()

    def fold(self):
        for i in range(self.k):
            high, low = self.high[i], self.low[i]
            s = self._folded[i]
            for b in np.flatnonzero((high != 0) | (low != 0)):
                value = (int(high[b]) << 26) + int(low[b])
                s.total += value << (int(b) - _BIN_OFFSET - 53 + _UNITS)
        self.high[:] = 0
        self.low[:] = 0
        self.pending = 0

    def folded(self):
        """The k sums as _ExactSum (copies)."""
        self.fold()
        return [_ExactSum(*s.state()) for s in self._folded]

    def set(self, states):
        self.__init__(len(states))
        self._folded = [_ExactSum(*state) for state in states]


def _ratio(numerator, denominator):
    """Two integers' quotient, correctly rounded (+-inf when it overflows)."""
    try:
        return numerator / denominator
    except OverflowError:
        return math.copysign(math.inf, numerator) * math.copysign(1.0, denominator)


def _percentiles(values, table, prefix):
    """``{prefix + name: value}`` at each fraction of ``table`` of the float32 ``values``.

    Linear interpolation between the closest ranks of the sorted values v:
    h = f (n - 1), i = floor(h), v_i + (h - i)(v_{i+1} - v_i) -- llama.cpp's
    ``percentile`` (there in float32; here in float64) and numpy.percentile's
    default ``method="linear"``. NaN when n = 0 or a value is NaN.
    """
    n = len(values)
    if n == 0 or np.isnan(values).any():
        return {prefix + name: math.nan for name, _ in table}
    v = np.sort(values)
    out = {}
    for name, fraction in table:
        h = fraction * (n - 1)
        i = min(int(math.floor(h)), n - 1)
        j = min(i + 1, n - 1)
        a, b = float(v[i]), float(v[j])
        t = h - i
        out[prefix + name] = a if t == 0 or a == b else a + t * (b - a)
    return out


class Comparison:
    r"""Compare a model's logits with a reference's: llama.cpp's KL-divergence report.

    What ``llama-perplexity --kl-divergence`` reports when a model (e.g.
    quantised) is checked against its reference (e.g. the original), computed
    from the two sets of logits on the same tokens. Feed batches with
    :meth:`update`, combine Comparisons that saw different parts of the data
    with :meth:`merge` (they pickle, so they can come from other processes)
    and read the statistics with :meth:`result`.

    At each counted position i (target :math:`y_i` not ``ignore_index``),
    with p = softmax(logits) (the model) and r = softmax(ref_logits) (the
    reference) along ``axis``:

    .. math:: \mathrm{KL}_i = \sum_j r_{ij} (\log r_{ij} - \log p_{ij}), \qquad
              \Delta p_i = p_{i y_i} - r_{i y_i}

    (:math:`0 \log 0 = 0`; KL is +inf where r > 0 and p = 0), the log-likelihoods
    :math:`a_i = \log p_{i y_i}`, :math:`b_i = \log r_{i y_i}`, and whether
    the two argmaxes agree (ties to the lower index). Over the n counted
    positions, :meth:`result` reports as llama.cpp defines them:

    * means with their standard errors: ``kl_mean``, ``dp_mean``, and
      ``stderr(x) = sqrt(var(x) / (n - 1))`` with the population variance
      var(x) = mean(x^2) - mean(x)^2 (= std(x, ddof=1) / sqrt(n));
    * ``ppl = exp(-mean(a))`` and ``ref_ppl = exp(-mean(b))``, with
      ``ppl_stderr = ppl * stderr(a)`` (likewise ``ref_ppl_stderr``);
      ``ln_ppl_ratio = mean(b - a) = ln(ppl / ref_ppl)`` with
      ``ln_ppl_ratio_stderr = sqrt(stderr(a)^2 + stderr(b)^2 - 2 cov(a, b))``,
      cov(a, b) = (mean(ab) - mean(a) mean(b)) / (n - 1) (that is stderr(b - a),
      and is computed so, from the differences, which does not cancel when the
      models are close);
      ``ppl_ratio = exp(ln_ppl_ratio)``, ``ppl_ratio_stderr = ppl_ratio *
      ln_ppl_ratio_stderr``; ``ppl_diff = ppl - ref_ppl`` with
      ``ppl_diff_stderr = sqrt(ppl_stderr^2 + ref_ppl_stderr^2 - 2 ppl ref_ppl
      cov(a, b))``; ``logprob_corr``, the Pearson correlation of a and b
      (llama.cpp's "Cor(ln(PPL(Q)), ln(PPL(base)))");
    * ``dp_rms = sqrt(mean(dp^2))`` with ``dp_rms_stderr = stderr(dp^2) / (2
      dp_rms)``;
    * ``same_top``, the fraction of positions whose argmaxes agree, with the
      binomial ``same_top_stderr = sqrt(same_top (1 - same_top) / (n - 1))``;
    * percentiles of KL and of Δp: ``kl_max``, ``kl_p99.9``, ``kl_p99``,
      ``kl_p95``, ``kl_p90``, ``kl_median``, ``kl_p10``, ``kl_p5``, ``kl_p1``,
      ``kl_p0.1``, ``kl_min``, and the same ``dp_*`` with ``dp_p75`` and
      ``dp_p25`` too (llama.cpp prints those for Δp). Linear interpolation
      between the closest ranks: with v the n sorted values, h = f (n - 1) and
      i = floor(h), the value at fraction f is v_i + (h - i)(v_{i+1} - v_i).
      That is llama.cpp's ``percentile`` (which computes it in float32; here
      float64) and numpy.percentile's default ``method="linear"`` (equal but
      for the last bits of the interpolation); the median is the mean of the
      two middle values for even n, as in llama.cpp;
    * ``count``, the number of counted positions.

    Differences from llama.cpp: the standard errors are NaN for n < 2
    (llama.cpp reports 0 below 11 positions and prints nothing below 100);
    llama.cpp's reference log-probabilities are stored quantised to 16 bits
    and its per-token values are float32, here both models' are float64.

    Exactness. The percentiles are exact: every counted position keeps its
    KL and Δp as one float32 each, **8 bytes per token (8 MB per million
    tokens)**, sorted when :meth:`result` is called. The means and standard
    errors come from float64 per-position values (squares and products rounded
    to float64) whose sums are kept exactly (as integers), so the statistics
    are the same, to the last bit, whether the data came in one batch, in
    many, or split over merged Comparisons, in any order, and for any
    ``n_threads``; the variances are formed from the exact sums, without the
    cancellation of the textbook one-pass formula.

    Parameters
    ----------
    axis : int, default -1
        The class axis of each batch of logits.
    ignore_index : int, default -100
        Target value of positions that are not counted.
    shift : bool, default False
        Next-token prediction: logits (..., T, V), class axis last, targets
        (..., T); position t is scored against target t + 1.
    n_threads : int, optional
        OpenMP threads per batch; default follows OMP_NUM_THREADS.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.standard_normal((1000, 50))
    >>> model = ref + 0.1 * rng.standard_normal((1000, 50))   # a perturbed copy
    >>> target = rng.integers(0, 50, 1000)
    >>> c = cecore.Comparison()
    >>> c.update(model[:600], ref[:600], target[:600])
    >>> c.update(model[600:], ref[600:], target[600:])
    >>> r = c.result()
    >>> r["count"], round(r["kl_mean"], 5), round(r["same_top"], 3)
    (1000, 0.00478, 0.874)
    >>> r["kl_min"] <= r["kl_median"] <= r["kl_max"]
    True
    """

    def __init__(self, *, axis=-1, ignore_index=-100, shift=False, n_threads=None):
        self.axis = check_int(axis, "axis")
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.shift = check_bool(shift, "shift")
        resolve_n_threads(n_threads, 0)  # validates
        self.n_threads = n_threads
        self.reset()

    def reset(self):
        """Forget every batch seen so far."""
        self.count = 0
        self.same_top_count = 0
        self._sums = _ExactSums(len(_SUMS))
        self._kl = []  # float32 arrays, one per batch, in the order seen
        self._dp = []

    def update(self, logits, ref_logits, target):
        """Add a batch: the model's ``logits``, the reference's ``ref_logits`` (the
        same shape; each float64, float32, float16 or bfloat16) and integer
        ``target`` (the logits' shape without the class axis; with ``shift``
        the same (..., T) as the logits' (..., T, V)). Raises ValueError for
        shapes that differ or a target out of range, TypeError for bad dtypes;
        a batch that raises leaves the totals unchanged.
        """
        kl, logp, logr, same = _comparison_rows(
            logits, ref_logits, target, axis=self.axis, ignore_index=self.ignore_index,
            shift=self.shift, n_threads=self.n_threads)
        with np.errstate(invalid="ignore", over="ignore"):
            dp = np.exp(logp) - np.exp(logr)
            dp2 = dp * dp
            values = {"kl": kl, "kl2": kl * kl, "dp": dp, "dp2": dp2, "dp4": dp2 * dp2,
                      "logp": logp, "logp2": logp * logp, "logr": logr, "logr2": logr * logr,
                      "logp_logr": logp * logr}
            values["d"] = d = logr - logp
            values["d2"] = d * d
            kl32, dp32 = kl.astype(np.float32), dp.astype(np.float32)
        sums = _ExactSums(len(_SUMS))
        sums.add_values(np.stack([values[name] for name in _SUMS]))
        self._add(len(kl), int(np.count_nonzero(same)), sums, [kl32], [dp32])

    def _add(self, count, same_top_count, sums, kl, dp):
        self._sums.add(sums)
        self.count += count
        self.same_top_count += same_top_count
        for chunks, new in ((self._kl, kl), (self._dp, dp)):
            for a in new:
                if len(a):
                    a.flags.writeable = False  # shared with merged Comparisons
                    chunks.append(a)

    def merge(self, other):
        """Add the positions of ``other``, a Comparison with the same options; returns self.

        The result is that of one Comparison that saw self's batches, then other's.
        """
        if not isinstance(other, Comparison):
            raise TypeError(f"can only merge a Comparison, got {type(other).__name__}")
        if self._options() != other._options():
            raise ValueError("cannot merge comparisons with different options: "
                             f"{self._options()} and {other._options()}")
        sums = _ExactSums(len(_SUMS))
        sums.add(other._sums)
        self._add(other.count, other.same_top_count, sums, list(other._kl), list(other._dp))
        return self

    def _options(self):
        return {"ignore_index": self.ignore_index, "shift": self.shift}

    def _values(self, chunks):
        """The float32 values of every position so far, as one array (kept as such)."""
        if len(chunks) != 1:
            whole = np.concatenate(chunks) if chunks else np.empty(0, np.float32)
            whole.flags.writeable = False
            chunks[:] = [whole] if len(whole) else []
            return whole
        return chunks[0]

    def __getstate__(self):
        return {"axis": self.axis, "ignore_index": self.ignore_index, "shift": self.shift,
                "n_threads": self.n_threads, "count": self.count,
                "same_top_count": self.same_top_count,
                "sums": {name: s.state() for name, s in self._exact().items()},
                "kl": np.array(self._values(self._kl)), "dp": np.array(self._values(self._dp))}

    def __setstate__(self, state):
        self.axis, self.ignore_index = state["axis"], state["ignore_index"]
        self.shift, self.n_threads = state["shift"], state["n_threads"]
        self.reset()
        sums = _ExactSums(len(_SUMS))
        sums.set([tuple(state["sums"][name]) for name in _SUMS])
        self._add(state["count"], state["same_top_count"], sums, [state["kl"]], [state["dp"]])

    # ------------------------------------------------------------------ statistics

    def _exact(self):
        """``{name: _ExactSum}`` of the sums so far."""
        return dict(zip(_SUMS, self._sums.folded(), strict=True))

    def _variance(self, sums, name, name2):
        """The population variance of the values summed in ``name`` (squares in
        ``name2``), from the exact sums; NaN when non-finite or n = 0."""
        s, s2, n = sums[name], sums[name2], self.count
        if not (s.finite and s2.finite) or n == 0:
            return math.nan
        return _ratio(max(n * s2.total * (1 << _UNITS) - s.total * s.total, 0),
                      (n * n) << (2 * _UNITS))

    def _stderr(self, variance):
        n = self.count
        return math.sqrt(variance / (n - 1)) if n >= 2 else math.nan

    def result(self):
        """The statistics so far, as a dict of Python numbers (see the class docstring).

        Keys: ``count``; ``ppl``, ``ppl_stderr``, ``ref_ppl``, ``ref_ppl_stderr``,
        ``logprob_corr``, ``ln_ppl_ratio``, ``ln_ppl_ratio_stderr``,
        ``ppl_ratio``, ``ppl_ratio_stderr``, ``ppl_diff``, ``ppl_diff_stderr``;
        ``kl_mean``, ``kl_mean_stderr``, ``kl_max``, ``kl_p99.9``, ...,
        ``kl_median``, ..., ``kl_min``; ``dp_mean``, ``dp_mean_stderr``,
        ``dp_max``, ..., ``dp_min``, ``dp_rms``, ``dp_rms_stderr``; ``same_top``,
        ``same_top_stderr``. With nothing counted the statistics are NaN.
        """
        n = self.count
        sums = self._exact()
        mean = {name: sums[name].mean(n) for name in _SUMS}
        var_a = self._variance(sums, "logp", "logp2")
        var_b = self._variance(sums, "logr", "logr2")
        a, b, ab = sums["logp"], sums["logr"], sums["logp_logr"]
        if a.finite and b.finite and ab.finite and n:
            # n^2 U^2 * (population covariance), exactly
            cov_num = n * ab.total * (1 << _UNITS) - a.total * b.total
            var_a_num = max(n * sums["logp2"].total * (1 << _UNITS) - a.total * a.total, 0)
            var_b_num = max(n * sums["logr2"].total * (1 << _UNITS) - b.total * b.total, 0)
            denominator = (n * n) << (2 * _UNITS)
            cov = _ratio(cov_num, denominator)
            if var_a_num and var_b_num:
                # cov / sqrt(var_a var_b) in integers, scaled to keep >= 200 bits
                product = var_a_num * var_b_num
                scale = max(0, 220 - product.bit_length() // 2)
                corr = _ratio(cov_num << scale, math.isqrt(product << (2 * scale)))
                corr = min(max(corr, -1.0), 1.0)
            else:
                corr = math.nan
        else:
            cov = corr = math.nan
        se_a, se_b = self._stderr(var_a), self._stderr(var_b)
        cov_mean = cov / (n - 1) if n >= 2 else math.nan  # llama.cpp's covariance()

        ppl, ref_ppl = _exp(-mean["logp"]), _exp(-mean["logr"])
        ln_ratio = mean["d"]
        # var(b - a) = var(a) + var(b) - 2 cov(a, b), from the differences themselves
        ln_ratio_se = self._stderr(self._variance(sums, "d", "d2"))
        ppl_ratio = _exp(ln_ratio)
        ppl_se, ref_ppl_se = ppl * se_a, ref_ppl * se_b
        ppl_diff_var = ppl_se * ppl_se + ref_ppl_se * ref_ppl_se - 2.0 * ppl * ref_ppl * cov_mean
        same_top = self.same_top_count / n if n else math.nan
        dp_rms = math.sqrt(mean["dp2"]) if mean["dp2"] >= 0 else math.nan
        dp2_se = self._stderr(self._variance(sums, "dp2", "dp4"))

        out = {"count": n}
        out["ppl"], out["ppl_stderr"] = ppl, ppl_se
        out["ref_ppl"], out["ref_ppl_stderr"] = ref_ppl, ref_ppl_se
        out["logprob_corr"] = corr
        out["ln_ppl_ratio"], out["ln_ppl_ratio_stderr"] = ln_ratio, ln_ratio_se
        out["ppl_ratio"], out["ppl_ratio_stderr"] = ppl_ratio, ppl_ratio * ln_ratio_se
        out["ppl_diff"] = ppl - ref_ppl
        out["ppl_diff_stderr"] = math.sqrt(max(ppl_diff_var, 0.0)) \
            if not math.isnan(ppl_diff_var) else math.nan
        out["kl_mean"] = mean["kl"]
        out["kl_mean_stderr"] = self._stderr(self._variance(sums, "kl", "kl2"))
        out.update(_percentiles(self._values(self._kl), _KL_PERCENTILES, "kl_"))
        out["dp_mean"] = mean["dp"]
        out["dp_mean_stderr"] = self._stderr(self._variance(sums, "dp", "dp2"))
        out.update(_percentiles(self._values(self._dp), _DP_PERCENTILES, "dp_"))
        out["dp_rms"] = dp_rms
        out["dp_rms_stderr"] = 0.5 / dp_rms * dp2_se if dp_rms > 0 else math.nan
        out["same_top"] = same_top
        out["same_top_stderr"] = math.sqrt(same_top * (1.0 - same_top) / (n - 1)) \
            if n >= 2 else math.nan
        return out

    def __repr__(self):
        return (f"Comparison(count={self.count}, ignore_index={self.ignore_index!r}, "
                f"shift={self.shift!r})")


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
