# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Evaluation kernel: loss, weight, count and top-k hits of class-index targets.

One pass over each block of rows gives every row's log-sum-exp and maximum (the
row maths of _rowmath.h), from which the cross-entropy (as in
_softmax_kernels.ce_index_loss) and the rank of the target logit follow:

    rank = #{j : x_j > x_y} + #{j < y : x_j == x_y}

(ties go to the lower index, as in argmax, so rank 0 is argmax == y; NaN sorts
above every number, as in torch.argmax). A target is a top-k hit when rank < k.
The row maximum settles top-1 without a scan unless x_y is the maximum (then
only the earlier elements are compared, for ties); larger k count elements,
stopping as soon as the count reaches the largest k. Nothing is sorted.

Blocks of rows are sized by the caller from the shape alone; per-block sums are
added in block order, so results are bitwise identical for any thread count.
"""

import numpy as np

from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t, int64_t, uint16_t

from cecore._rowmath cimport (HALF_BF16, cec_bf16_t, cec_dispatch_init, cec_f16_t, is_f64, load,
                              logit_t, storage_t)
from cecore._rows cimport (Scratch, class_index_loss, logsum_of_probs, lse_rows, scratch_free,
                           scratch_new, scratch_rowmax, shift_of, total_weight)

ctypedef fused target_t:
    int32_t
    int64_t

# Elements counted between checks for an early exit in _rank.
cdef Py_ssize_t RANK_CHUNK = 512


def dispatch_init(int requested):
    """Select the SIMD variant (-1: best supported). Returns the level in use."""
    return cec_dispatch_init(requested)


cdef int _count_at_least(const logit_t *x, int n, double v, bint strict) noexcept nogil:
    """#{j < n : x_j > v} if strict else #{j < n : x_j >= v} (a vectorisable loop).

    int, not Py_ssize_t: 32-bit lanes match float's, so it vectorises twice as wide;
    v is compared in x's compute type (float, or double for double).
    """
    cdef int j, c = 0
    cdef float vf = <float> v
    if logit_t is double:
        if strict:
            for j in range(n):
                c += x[j] > v
        else:
            for j in range(n):
                c += x[j] >= v
    elif logit_t is float:
        if strict:
            for j in range(n):
                c += x[j] > vf
        else:
            for j in range(n):
                c += x[j] >= vf
    elif strict:
        for j in range(n):
            c += <float> load(x, j) > vf
    else:
        for j in range(n):
            c += <float> load(x, j) >= vf
    return c


cdef Py_ssize_t _count_chunked(const logit_t *x, Py_ssize_t n, double v, bint strict,
                               Py_ssize_t c, Py_ssize_t limit) noexcept nogil:
    """c + _count_at_least(x, n, v, strict), or any value >= limit once it gets there."""
    cdef Py_ssize_t j0 = 0, length
    while j0 < n and c < limit:
        length = min(RANK_CHUNK, n - j0)
        c += _count_at_least(x + j0, <int> length, v, strict)
        j0 += length
    return c


cdef Py_ssize_t _rank(const logit_t *x, Py_ssize_t k, Py_ssize_t y, double rowmax,
                      Py_ssize_t limit) noexcept nogil:
    """Rank of x[y] in a row without NaN: exact when below limit, else some value >= limit.

    rank = #{j < y : x_j >= x_y} + #{j > y : x_j > x_y}; when x_y is the row
    maximum nothing is greater, so only the earlier elements can count (ties).
    """
    cdef double v = load(x, y)
    cdef Py_ssize_t c
    if v < rowmax and limit == 1:
        return 1
    c = _count_chunked(x, y, v, False, 0, limit)
    if v == rowmax or c >= limit:
        return c
    return _count_chunked(x + y + 1, k - y - 1, v, True, c, limit)


cdef Py_ssize_t _rank_nan(const logit_t *x, Py_ssize_t k, Py_ssize_t y) noexcept nogil:
    """Rank of x[y] in a row that may hold NaN, which sorts above every number."""
    cdef double v = load(x, y), a
    cdef bint v_nan = v != v
    cdef Py_ssize_t j, c = 0
    for j in range(y):
        a = load(x, j)
        c += a >= v or a != a
    for j in range(y + 1, k):
        a = load(x, j)
        c += a > v or (a != a and not v_nan)
    return c


cdef inline void _eval_rows(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                            const target_t *target, const double *weight, double weight_total,
                            Py_ssize_t ignore_index, double smoothing, const int64_t *topk,
                            Py_ssize_t ntopk, Py_ssize_t r0, Py_ssize_t r1, Scratch *s,
                            double *sums, int64_t *counts, Py_ssize_t *first_bad) noexcept nogil:
    """Rows r0..r1: sums = (loss, weight of counted rows), counts = (count, hits@topk[i]).

    The loss of a row is that of _softmax_kernels.ce_index_loss (class_index_loss).
    Ignored rows and rows whose target is out of range (the first is reported
    in first_bad) contribute nothing.
    """
    cdef Py_ssize_t r, y, i, rank, kmax = 0
    cdef double logsum, shift, wy, loss, total = 0.0, wtotal = 0.0
    cdef const logit_t *xr
    for i in range(ntopk):
        kmax = max(kmax, topk[i])
    for r in range(r0, r1):
        y = target[r]
        if y == ignore_index or y < 0 or y >= k:
            if y != ignore_index and first_bad[0] < 0:
                first_bad[0] = r
            continue
        xr = x + r * stride
        shift = shift_of(scratch_rowmax(s, r - r0))
        logsum = logsum_of_probs(s.logsum[r - r0], shift)
        wy = 1.0 if weight == NULL else weight[y]
        loss = class_index_loss(xr, k, y, logsum, shift, wy, weight, weight_total, smoothing)
        total = total + loss
        wtotal = wtotal + wy
        counts[0] += 1
        if ntopk == 0:
            continue
        # a NaN in the row makes its logsum NaN; only such rows need the NaN order
        rank = (_rank_nan(xr, k, y) if s.logsum[r - r0] != s.logsum[r - r0]
                else _rank(xr, k, y, scratch_rowmax(s, r - r0), kmax))
        for i in range(ntopk):
            counts[1 + i] += rank < topk[i]
    sums[0] = total
    sums[1] = wtotal


cdef void _eval_block(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                      const target_t *target, const double *weight, double weight_total,
                      Py_ssize_t ignore_index, double smoothing, const int64_t *topk,
                      Py_ssize_t ntopk, Py_ssize_t r0, Py_ssize_t r1, Scratch *s,
                      double *sums, int64_t *counts, Py_ssize_t *first_bad) noexcept nogil:
    lse_rows(x + r0 * stride, r1 - r0, stride, k, s)
    # constant arguments: the inlined loop has no calls, its sums stay in registers
    # (see _ce_index_block in _softmax_kernels.pyx)
    if ntopk == 0 and smoothing == 0.0:
        _eval_rows(x, stride, k, target, weight, weight_total, ignore_index, 0.0, NULL, 0,
                   r0, r1, s, sums, counts, first_bad)
    else:
        _eval_rows(x, stride, k, target, weight, weight_total, ignore_index, smoothing, topk,
                   ntopk, r0, r1, s, sums, counts, first_bad)


cdef _eval(const logit_t *x, Py_ssize_t n, Py_ssize_t k, Py_ssize_t stride,
           const target_t *target, const double *w, Py_ssize_t ignore_index,
           double label_smoothing, const int64_t *tk, Py_ssize_t ntopk, Py_ssize_t brows,
           double[:, ::1] sums, int64_t[:, ::1] counts, Py_ssize_t[::1] bad, int n_threads):
    cdef Py_ssize_t nblocks = sums.shape[0]
    cdef double weight_total = total_weight(w, k)
    cdef Py_ssize_t b
    cdef int failed = 0
    cdef int *failed_flag = &failed  # written from inside the parallel region
    cdef Scratch *s = NULL
    with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
        # assigned inside the parallel block, so each thread has its own
        s = scratch_new(brows, k, is_f64(x))
        if s != NULL:
            for b in prange(nblocks, schedule="guided"):
                _eval_block(x, stride, k, target, w, weight_total, ignore_index,
                            label_smoothing, tk, ntopk, b * brows, min(n, (b + 1) * brows), s,
                            &sums[b, 0], &counts[b, 0], &bad[b])
        else:
            failed_flag[0] = 1
        scratch_free(s)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")


def eval_index(const storage_t[:, :] logits, int half, const target_t[::1] target,
               const double[::1] weight, Py_ssize_t ignore_index, double label_smoothing,
               const int64_t[::1] topk, Py_ssize_t block_rows, int n_threads):
    """Evaluation totals of logits (n, k) against class indices (n,).

    half: what uint16 logits hold (HALF_BF16 or HALF_F16); weight: class
    weights (k,) or empty; topk: the k of each accuracy (>= 1);
    block_rows: rows per block (a function of the shape only). Returns
    ``(loss_sum, weight_sum, count, hits, first_bad)``: the sum of the losses
    and of the target weights over counted rows (float64, in block order), the
    number of counted rows, a tuple with the number of top-k hits for each k,
    and the first row whose target is out of range (or -1).
    """
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1], ntopk = topk.shape[0]
    cdef Py_ssize_t stride = logits.strides[0] // sizeof(storage_t)
    cdef Py_ssize_t brows = max(1, block_rows)
    cdef Py_ssize_t nblocks = (n + brows - 1) // brows
    cdef double[:, ::1] sums = np.zeros((nblocks, 2))
    cdef int64_t[:, ::1] counts = np.zeros((nblocks, 1 + ntopk), dtype=np.int64)
    cdef Py_ssize_t[::1] bad = np.full(nblocks, -1, dtype=np.intp)
    cdef const double *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef const int64_t *tk = &topk[0] if ntopk > 0 else NULL
    cdef double loss_sum = 0.0, weight_sum = 0.0
    cdef Py_ssize_t b, first_bad = -1
    if n > 0:
        if storage_t is uint16_t:
            if half == HALF_BF16:
                _eval(<const cec_bf16_t *> &logits[0, 0], n, k, stride, &target[0], w,
                      ignore_index, label_smoothing, tk, ntopk, brows, sums, counts, bad,
                      n_threads)
            else:
                _eval(<const cec_f16_t *> &logits[0, 0], n, k, stride, &target[0], w,
                      ignore_index, label_smoothing, tk, ntopk, brows, sums, counts, bad,
                      n_threads)
        else:
            _eval(&logits[0, 0], n, k, stride, &target[0], w, ignore_index, label_smoothing,
                  tk, ntopk, brows, sums, counts, bad, n_threads)
    for b in range(nblocks):
        loss_sum += sums[b, 0]
        weight_sum += sums[b, 1]
        if first_bad < 0 and bad[b] >= 0:
            first_bad = bad[b]
    totals = np.asarray(counts).sum(axis=0)
    return loss_sum, weight_sum, int(totals[0]), tuple(int(h) for h in totals[1:]), first_bad
