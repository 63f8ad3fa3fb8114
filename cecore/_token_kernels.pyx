# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Per-token statistics and the Evaluator's extended metrics, in one fused pass.

Logits arrive as a 3-D view (S, L, V): S sequences of L positions, each a
contiguous row of V classes, with free sequence and position strides, so that
the shifted view x[:, :-1] of a (B, T, V) array needs no copy. Targets are a
(S, L) view with free strides. Position r of the flattened S * L positions is
(r // L, r % L).

Per counted row (target != ignore_index), with x = z / T (T the temperature):

1. m = row_max(z) (the SIMD row op of _rowmath.h);
2. one pass of cec_tok_moments (_tokenmath.h) over the now cache-hot row gives,
   with d_j = (z_j - m) / T: rest = sum_{d_j != 0} e^d_j, the ties with the
   maximum, D = sum_j d_j e^d_j and Q = sum_j e^{2 d_j}. Then S = rest + ties,
   log S = log1p(rest + ties - 1) (as row_lse), lse = m / T + log S,
   logprob_j = d_j - log S, entropy = log S - D / S, sum_j p_j^2 = Q / S^2;
3. comparison scans for what is asked: the target's rank, the argmax, a top-k
   heap. They order the logits z: larger first, ties to the lower index, NaN
   above every number (as torch.argmax). A row whose maximum is not finite or
   which holds a NaN is "special": its log-probabilities and entropy are NaN,
   its lse +-inf or NaN (as logsumexp), and its scans use NaN-aware compares.

Every read of a logit element for arithmetic goes through _at (the one place
a 16-bit storage type would be converted to its float compute type); whole-row
work goes through row_max and cec_tok_moments. Rows are processed in blocks
whose size is a function of the shape only, sums are kept per block and added
in block order: results are bitwise identical for any thread count.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, ceil, exp, log1p
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc

from cecore._rowmath cimport (HALF_BF16, cec_bf16_t, cec_dispatch_init, cec_f16_t,
                              row_max, row_wsum, storage_t)


cdef extern from "_tokenmath.h" nogil:
    float cec_tok_row_f32(const float *x, Py_ssize_t n, float scale, float v, double *res)
    float cec_tok_row_nocount_f32(const float *x, Py_ssize_t n, float scale, double *res)
    double cec_tok_row_f64(const double *x, Py_ssize_t n, double scale, double v,
                           double *res)
    ctypedef struct cec_tok_topk_f32_t:
        float *bv
        int64_t *bi
        Py_ssize_t kk
        Py_ssize_t held
        float thr
    float cec_tok_row_topk_f32(const float *x, Py_ssize_t n, float scale, float v,
                               double *res, cec_tok_topk_f32_t *t, int *done)
    Py_ssize_t cec_tok_count_f32(const float *x, Py_ssize_t n, float v, int strict)
    Py_ssize_t cec_tok_count_f64(const double *x, Py_ssize_t n, double v, int strict)
    Py_ssize_t cec_tok_find_f32(const float *x, Py_ssize_t n, float v, int strict)
    Py_ssize_t cec_tok_find_f64(const double *x, Py_ssize_t n, double v, int strict)
    void cec_tok_widen_bf16(const cec_bf16_t *x, Py_ssize_t n, float *out)
    void cec_tok_widen_f16(const cec_f16_t *x, Py_ssize_t n, float *out)


ctypedef fused target_t:
    int32_t
    int64_t

# Calibration bins of the Evaluator (Guo et al. 2017); one more counts NaN confidences.
cdef enum:
    N_BINS = 15

N_CALIBRATION_BINS = 15



def dispatch_init(int requested):
    """Select the SIMD variant (-1: best supported). Returns the level in use."""
    return cec_dispatch_init(requested)


cdef inline floating _at(const floating *x, Py_ssize_t i) noexcept nogil:
    """Logit x[i] in the compute type: the only element read of the logits."""
    return x[i]


cdef struct RowStats:
    double m          # row maximum of z
    double logsum     # log S (lse = m / T + log S); NaN for special rows
    double lse
    double entropy
    double sumsq      # sum_j p_j^2
    double top        # the top-1 probability 1 / S (NaN for special rows)
    Py_ssize_t above  # #{j : z_j > z_y}
    Py_ssize_t equal  # #{j : z_j == z_y}
    Py_ssize_t at     # where to look for the first maximum
    bint special      # NaN in the row or a non-finite maximum


cdef inline void _row_stats(const floating *x, Py_ssize_t k, Py_ssize_t y,
                            double temperature, floating scale, RowStats *st) noexcept nogil:
    cdef double res[8]
    cdef floating m
    if floating is float:
        m = cec_tok_row_f32(x, k, scale, _at(x, y), res)
    else:
        m = cec_tok_row_f64(x, k, scale, _at(x, y), res)
    _finish_stats(x, k, m, res, temperature, st)


cdef inline void _finish_stats(const floating *x, Py_ssize_t k, floating m, const double *res,
                               double temperature, RowStats *st) noexcept nogil:
    """RowStats from the row pass's maximum m and sums res (see cec_tok_row)."""
    cdef double s
    cdef Py_ssize_t j
    cdef floating a
    st.special = True
    st.logsum = NAN
    st.entropy = NAN
    st.sumsq = NAN
    st.top = NAN
    if m != m:
        st.m = m
        st.lse = NAN
        return
    if m == INFINITY or m == -INFINITY:
        st.m = m = row_max(x, k)   # the row's maximum (+inf may come after a NaN chunk)
        # lse +inf / -inf (an all -inf row), NaN if the row also holds a NaN
        st.lse = m / temperature
        for j in range(k):
            a = _at(x, j)
            if a != a:
                st.lse = NAN
                break
        return
    st.m = m
    if res[0] != res[0] or res[2] != res[2]:
        st.lse = NAN
        return
    s = res[0] + res[1]
    st.special = False
    st.above = <Py_ssize_t> res[4]
    st.equal = <Py_ssize_t> res[5]
    st.at = <Py_ssize_t> res[6]
    st.logsum = log1p(res[0] + (res[1] - 1.0))
    st.lse = m / temperature + st.logsum
    st.entropy = st.logsum - res[2] / s
    st.sumsq = res[3] / (s * s)
    st.top = 1.0 / s


cdef inline double _logprob(const floating *x, Py_ssize_t j, const RowStats *st,
                            double temperature) noexcept nogil:
    """log softmax(z / T)[j] (NaN in special rows)."""
    if st.special:
        return NAN
    return ((<double> _at(x, j)) - st.m) / temperature - st.logsum


cdef inline bint _above(floating a, Py_ssize_t i, floating b, Py_ssize_t j) noexcept nogil:
    """(a, i) ranks above (b, j): NaN above every number, then larger, then lower index."""
    if a != a:
        return b == b or i < j
    if b != b:
        return False
    return a > b or (a == b and i < j)


cdef inline Py_ssize_t _count(const floating *x, Py_ssize_t n, floating v,
                             bint strict) noexcept nogil:
    """#{j < n : x_j > v} if strict else #{j < n : x_j >= v} (SIMD, _tokenmath.h)."""
    if floating is float:
        return cec_tok_count_f32(x, n, v, strict)
    else:
        return cec_tok_count_f64(x, n, v, strict)


cdef inline Py_ssize_t _find(const floating *x, Py_ssize_t n, floating v,
                             bint strict) noexcept nogil:
    """The first j < n with x_j > v (strict) or x_j >= v, else n (SIMD, _tokenmath.h)."""
    if floating is float:
        return cec_tok_find_f32(x, n, v, strict)
    else:
        return cec_tok_find_f64(x, n, v, strict)


cdef Py_ssize_t _rank(const floating *x, Py_ssize_t k, Py_ssize_t y,
                      const RowStats *st) noexcept nogil:
    """Rank of x[y]: #{j ranked above it} = #{j : x_j > x_y} + #{j < y : x_j == x_y}."""
    cdef floating v = _at(x, y), a
    cdef bint v_nan = v != v
    cdef Py_ssize_t j, c = 0
    if st.special:
        for j in range(y):
            a = _at(x, j)
            c += a >= v or a != a
        for j in range(y + 1, k):
            a = _at(x, j)
            c += a > v or (a != a and not v_nan)
        return c
    # the row pass counted the greater and equal elements; earlier ties only if any
    c = st.above
    if st.equal > 1:
        c += _count(x, y, v, False) - _count(x, y, v, True)
    return c


cdef inline Py_ssize_t _top1_rank(const floating *x, Py_ssize_t y,
                                  const RowStats *st) noexcept nogil:
    """0 when x[y] is the first maximum of a row without NaN (argmax == y), else 1: all
    that top-1 accuracy and calibration need, without counting the target's rank."""
    if _at(x, y) < st.m:
        return 1
    # x[y] is a maximum: it ranks first unless an earlier element ties with it
    return 0 if _find(x, y, <floating> st.m, False) == y else 1


cdef Py_ssize_t _argmax(const floating *x, Py_ssize_t k, const RowStats *st) noexcept nogil:
    """Index of the top-ranked element (the first maximum; the first NaN if any)."""
    cdef Py_ssize_t j, best = 0
    cdef floating m = <floating> st.m
    if st.special:
        for j in range(1, k):
            if _above(_at(x, j), j, _at(x, best), best):
                best = j
        return best
    return st.at + _find(x + st.at, k - st.at, m, False)


cdef inline void _sift_down(floating *hv, int64_t *hi, Py_ssize_t size,
                            Py_ssize_t pos) noexcept nogil:
    """Restore the heap below pos (root = the lowest-ranked candidate)."""
    cdef Py_ssize_t child, worse
    cdef floating tv
    cdef int64_t ti
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        worse = child
        if child + 1 < size and _above(hv[child], hi[child], hv[child + 1], hi[child + 1]):
            worse = child + 1
        if not _above(hv[pos], hi[pos], hv[worse], hi[worse]):
            return
        tv = hv[pos]
        hv[pos] = hv[worse]
        hv[worse] = tv
        ti = hi[pos]
        hi[pos] = hi[worse]
        hi[worse] = ti
        pos = worse


cdef void _topk(const floating *x, Py_ssize_t k, Py_ssize_t kk, const RowStats *st,
                floating *hv, int64_t *hi, int64_t *out_idx) noexcept nogil:
    """The kk top-ranked indices of the row, best first, into out_idx.

    A heap of kk candidates whose root is the lowest-ranked; later elements
    enter only by ranking above the root (for rows without NaN: x_j > root,
    as j exceeds every index held), checked a chunk at a time.
    """
    cdef Py_ssize_t j, pos, parent, size = 0
    cdef floating v, tv, thr
    cdef int64_t ti
    for j in range(kk):
        # push (x_j, j)
        hv[size] = _at(x, j)
        hi[size] = j
        pos = size
        size += 1
        while pos > 0:
            parent = (pos - 1) // 2
            if not _above(hv[parent], hi[parent], hv[pos], hi[pos]):
                break
            tv = hv[parent]
            hv[parent] = hv[pos]
            hv[pos] = tv
            ti = hi[parent]
            hi[parent] = hi[pos]
            hi[pos] = ti
            pos = parent
    if st.special:
        for j in range(kk, k):
            v = _at(x, j)
            if _above(v, j, hv[0], hi[0]):
                hv[0] = v
                hi[0] = j
                _sift_down(hv, hi, size, 0)
    else:
        thr = hv[0]
        j = _find(x + kk, k - kk, thr, True) + kk
        while j < k:
            hv[0] = _at(x, j)
            hi[0] = j
            _sift_down(hv, hi, size, 0)
            thr = hv[0]
            j = _find(x + j + 1, k - j - 1, thr, True) + j + 1
    # pop the lowest-ranked first: it goes last
    while size > 0:
        size -= 1
        out_idx[size] = hi[0]
        hv[0] = hv[size]
        hi[0] = hi[size]
        _sift_down(hv, hi, size, 0)


# Top-k of at most this many entries keep a sorted array (one predictable
# insertion scan each); larger k a heap.
cdef Py_ssize_t TOPK_SORTED = 128


cdef inline void _insert_sorted(floating *bv, int64_t *bi, Py_ssize_t held, Py_ssize_t cap,
                                floating v, Py_ssize_t j) noexcept nogil:
    """Insert (v, j) into bv/bi[0..held) (best first), keeping at most cap entries.

    j exceeds every index held, so (v, j) goes after the entries it does not
    rank above.
    """
    cdef Py_ssize_t p = held, q
    while p > 0 and _above(v, j, bv[p - 1], bi[p - 1]):
        p -= 1
    if p >= cap:
        return
    q = min(held, cap - 1)
    while q > p:
        bv[q] = bv[q - 1]
        bi[q] = bi[q - 1]
        q -= 1
    bv[p] = v
    bi[p] = j


cdef void _topk_sorted(const floating *x, Py_ssize_t k, Py_ssize_t kk, const RowStats *st,
                       floating *bv, int64_t *bi, int64_t *out_idx) noexcept nogil:
    """_topk with a sorted array of kk entries (kk <= TOPK_SORTED)."""
    cdef Py_ssize_t j, i
    cdef floating v, thr
    for j in range(kk):
        _insert_sorted(bv, bi, j, kk, _at(x, j), j)
    if st.special:
        for j in range(kk, k):
            v = _at(x, j)
            if _above(v, j, bv[kk - 1], bi[kk - 1]):
                _insert_sorted(bv, bi, kk, kk, v, j)
    else:
        # no NaN: (v, j) with j above every index held ranks above exactly the
        # entries with a smaller value
        thr = bv[kk - 1]
        j = _find(x + kk, k - kk, thr, True) + kk
        while j < k:
            v = _at(x, j)
            i = kk - 1
            while i > 0 and v > bv[i - 1]:
                bv[i] = bv[i - 1]
                bi[i] = bi[i - 1]
                i -= 1
            bv[i] = v
            bi[i] = j
            thr = bv[kk - 1]
            j = _find(x + j + 1, k - j - 1, thr, True) + j + 1
    for i in range(kk):
        out_idx[i] = bi[i]


cdef struct Layout:
    Py_ssize_t seq_len      # L
    Py_ssize_t x_seq        # element strides of the logits' sequence and position axes
    Py_ssize_t x_pos
    Py_ssize_t t_seq        # element strides of the targets
    Py_ssize_t t_pos


cdef inline Py_ssize_t _x_offset(const Layout *lay, Py_ssize_t r) noexcept nogil:
    cdef Py_ssize_t s = r // lay.seq_len
    return s * lay.x_seq + (r - s * lay.seq_len) * lay.x_pos


cdef inline Py_ssize_t _t_offset(const Layout *lay, Py_ssize_t r) noexcept nogil:
    cdef Py_ssize_t s = r // lay.seq_len
    return s * lay.t_seq + (r - s * lay.seq_len) * lay.t_pos


cdef struct TokenOut:
    double *logprob
    double *lse
    double *entropy
    int64_t *argmax
    int64_t *rank
    uint8_t *greedy
    uint8_t *mask
    int64_t *topk_idx
    double *topk_lp


cdef void _token_block(const floating *x, const target_t *target, const Layout *lay,
                       Py_ssize_t k, Py_ssize_t ignore_index, double temperature,
                       floating scale, Py_ssize_t kk, const TokenOut *o, floating *hv,
                       int64_t *hi, Py_ssize_t r0, Py_ssize_t r1,
                       Py_ssize_t *first_bad) noexcept nogil:
    cdef Py_ssize_t r, y, i, rank, am
    cdef const floating *xr
    cdef RowStats st
    cdef cec_tok_topk_f32_t tk
    cdef double res[8]
    cdef int done
    cdef floating m
    for r in range(r0, r1):
        y = target[_t_offset(lay, r)]
        if y == ignore_index or y < 0 or y >= k:
            if y != ignore_index and first_bad[0] < 0:
                first_bad[0] = r
            o.logprob[r] = 0.0
            if o.lse != NULL:
                o.lse[r] = 0.0
                o.entropy[r] = 0.0
                o.argmax[r] = -1
                o.rank[r] = -1
                o.mask[r] = 0
            o.greedy[r] = 0
            for i in range(kk):
                o.topk_idx[r * kk + i] = -1
                o.topk_lp[r * kk + i] = 0.0
            continue
        xr = x + _x_offset(lay, r)
        done = 0
        if floating is float:
            if 0 < kk <= TOPK_SORTED:
                # the AVX-512 row pass keeps the top-k itself (done = 1)
                tk.bv = hv
                tk.bi = hi
                tk.kk = kk
                m = cec_tok_row_topk_f32(xr, k, scale, _at(xr, y), res, &tk, &done)
                _finish_stats(xr, k, m, res, temperature, &st)
            else:
                _row_stats(xr, k, y, temperature, scale, &st)
        else:
            _row_stats(xr, k, y, temperature, scale, &st)
        o.logprob[r] = _logprob(xr, y, &st, temperature)
        if o.lse == NULL:  # sequence_logprob: log-probability and greedy flag only
            o.greedy[r] = _rank(xr, k, y, &st) == 0
            continue
        o.lse[r] = st.lse
        o.entropy[r] = st.entropy
        o.mask[r] = 1
        rank = _rank(xr, k, y, &st)
        o.rank[r] = rank
        o.greedy[r] = rank == 0
        if kk > 0:
            if done and not st.special and res[7] == 0:
                for i in range(kk):
                    o.topk_idx[r * kk + i] = hi[i]
            elif kk <= TOPK_SORTED:
                _topk_sorted(xr, k, kk, &st, hv, hi, o.topk_idx + r * kk)
            else:
                _topk(xr, k, kk, &st, hv, hi, o.topk_idx + r * kk)
            for i in range(kk):
                o.topk_lp[r * kk + i] = _logprob(xr, o.topk_idx[r * kk + i], &st, temperature)
            am = o.topk_idx[r * kk]
        else:
            am = y if rank == 0 else _argmax(xr, k, &st)
        o.argmax[r] = am


cdef inline Layout _layout(Py_ssize_t seq_len, Py_ssize_t xs0, Py_ssize_t xs1,
                           Py_ssize_t ts0, Py_ssize_t ts1, Py_ssize_t xitem,
                           Py_ssize_t titem) noexcept:
    cdef Layout lay
    lay.seq_len = seq_len
    lay.x_seq = xs0 // xitem
    lay.x_pos = xs1 // xitem
    lay.t_seq = ts0 // titem
    lay.t_pos = ts1 // titem
    return lay


cdef inline void _stage_row(const uint16_t *x, int half, const Layout *lay, Py_ssize_t k,
                            Py_ssize_t r, float *buf) noexcept nogil:
    """Row r of 16-bit logits (bfloat16 or float16, by half) as float32 in buf[0:k].

    The token kernels compute on float32 rows: a 16-bit row is converted (exactly)
    into this per-thread buffer of one row, read from L1/L2 by the row pass, so a
    16-bit input gives the float32 result of the same values bit for bit.
    """
    cdef const uint16_t *xr = x + _x_offset(lay, r)
    if half == HALF_BF16:
        cec_tok_widen_bf16(<const cec_bf16_t *> xr, k, buf)
    else:
        cec_tok_widen_f16(<const cec_f16_t *> xr, k, buf)


cdef inline Layout _staged(const Layout *lay) noexcept nogil:
    """The layout of rows staged one at a time in a buffer: every row at offset 0,
    targets where they were."""
    cdef Layout staged = lay[0]
    staged.x_seq = 0
    staged.x_pos = 0
    return staged


def token_stats(const storage_t[:, :, :] logits, int half, const target_t[:, :] target,
                Py_ssize_t ignore_index, double temperature, Py_ssize_t topk,
                double[::1] logprob, double[::1] lse, double[::1] entropy,
                int64_t[::1] argmax, int64_t[::1] rank, uint8_t[::1] greedy,
                uint8_t[::1] mask, int64_t[::1] topk_idx, double[::1] topk_lp,
                Py_ssize_t block_rows, int n_threads):
    """Per-position statistics of logits (S, L, V) against targets (S, L).

    Outputs are flat over the S * L positions (C order); lse, entropy, argmax,
    rank and mask may all be empty (sequence_logprob: log-probability and
    greedy flag only); topk_idx / topk_lp hold topk entries per position.
    16-bit logits come as a uint16 view with their half code (see _stage_row).
    Returns the flat position of the first target out of range, or -1.
    """
    cdef Py_ssize_t ns = logits.shape[0], nl = logits.shape[1], k = logits.shape[2]
    cdef Py_ssize_t n = ns * nl
    cdef Py_ssize_t brows = max(1, block_rows)
    cdef Py_ssize_t nblocks = (n + brows - 1) // brows
    cdef Py_ssize_t[::1] bad
    cdef Layout lay
    cdef TokenOut o
    cdef Py_ssize_t b, r, first_bad = -1
    cdef Layout staged
    cdef float *buf = NULL
    cdef float *hv16 = NULL
    cdef int64_t *hi = NULL
    cdef int failed = 0
    cdef int *failed_flag = &failed
    if n == 0:
        return -1
    bad = np.full(nblocks, -1, dtype=np.intp)
    lay = _layout(nl, logits.strides[0], logits.strides[1], target.strides[0],
                  target.strides[1], sizeof(storage_t), sizeof(target_t))
    o.logprob = &logprob[0]
    o.greedy = &greedy[0]
    o.lse = &lse[0] if lse.shape[0] > 0 else NULL
    o.entropy = &entropy[0] if lse.shape[0] > 0 else NULL
    o.argmax = &argmax[0] if lse.shape[0] > 0 else NULL
    o.rank = &rank[0] if lse.shape[0] > 0 else NULL
    o.mask = &mask[0] if lse.shape[0] > 0 else NULL
    o.topk_idx = &topk_idx[0] if topk > 0 else NULL
    o.topk_lp = &topk_lp[0] if topk > 0 else NULL
    if storage_t is uint16_t:
        staged = _staged(&lay)
        with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
            buf = <float *> malloc(k * sizeof(float))
            hv16 = <float *> malloc(max(topk, 1) * sizeof(float))
            hi = <int64_t *> malloc(max(topk, 1) * sizeof(int64_t))
            if buf != NULL and hv16 != NULL and hi != NULL:
                for b in prange(nblocks, schedule="guided"):
                    for r in range(b * brows, min(n, (b + 1) * brows)):
                        _stage_row(&logits[0, 0, 0], half, &lay, k, r, buf)
                        _token_block(buf, &target[0, 0], &staged, k, ignore_index,
                                     temperature, <float> (1.0 / temperature), topk, &o,
                                     hv16, hi, r, r + 1, &bad[b])
            else:
                failed_flag[0] = 1
            free(buf)
            free(hv16)
            free(hi)
    else:
        _token_stats_rows(&logits[0, 0, 0], &target[0, 0], &lay, k, ignore_index,
                          temperature, topk, &o, nblocks, brows, n, bad, n_threads,
                          failed_flag)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")
    for b in range(nblocks):
        if bad[b] >= 0:
            first_bad = bad[b]
            break
    return first_bad


cdef void _token_stats_rows(const floating *x, const target_t *target, const Layout *lay,
                            Py_ssize_t k, Py_ssize_t ignore_index, double temperature,
                            Py_ssize_t topk, const TokenOut *o, Py_ssize_t nblocks,
                            Py_ssize_t brows, Py_ssize_t n, Py_ssize_t[::1] bad,
                            int n_threads, int *failed_flag):
    """token_stats' parallel loop over blocks of float32/float64 rows."""
    cdef floating scale = <floating> (1.0 / temperature)
    cdef floating *hv = NULL
    cdef int64_t *hi = NULL
    cdef Py_ssize_t b
    with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
        hv = <floating *> malloc(max(topk, 1) * sizeof(floating))
        hi = <int64_t *> malloc(max(topk, 1) * sizeof(int64_t))
        if hv != NULL and hi != NULL:
            for b in prange(nblocks, schedule="guided"):
                _token_block(x, target, lay, k, ignore_index, temperature, scale, topk, o,
                             hv, hi, b * brows, min(n, (b + 1) * brows), &bad[b])
        else:
            failed_flag[0] = 1
        free(hv)
        free(hi)


# Evaluator totals per block: doubles and counts.
cdef enum:
    S_LOSS = 0
    S_WEIGHT = 1
    S_ENTROPY = 2
    S_BRIER = 3
    N_SUMS = 4 + N_BINS + 1     # then the confidence sum of each bin (the last: NaN)


cdef void _eval_block(const floating *x, const target_t *target, const Layout *lay,
                      Py_ssize_t k, const double *weight, double weight_total,
                      Py_ssize_t ignore_index, double smoothing, double temperature,
                      floating scale, const int64_t *topk, Py_ssize_t ntopk,
                      Py_ssize_t r0, Py_ssize_t r1, double *sums, int64_t *counts,
                      Py_ssize_t *first_bad) noexcept nogil:
    """Rows r0..r1. sums: loss, weight, entropy, brier, confidence per bin;
    counts: count, hits@topk[i], then per bin the count and the correct top-1s.

    The loss is cross_entropy's of z / T (class_index_loss with temperature):
    (1 - eps) w_y (log S + (m - z_y) / T) + eps (log S W / K - sum_j w_j (z_j - m) / (K T)).
    """
    cdef Py_ssize_t r, y, i, rank, nb, kmax = 0
    cdef double wy, loss, conf, py
    cdef const floating *xr
    cdef RowStats st
    cdef double res[8]
    cdef floating m
    cdef int64_t *bin_count = counts + 1 + ntopk
    cdef int64_t *bin_correct = counts + 1 + ntopk + N_BINS + 1
    for i in range(ntopk):
        kmax = max(kmax, topk[i])
    for r in range(r0, r1):
        y = target[_t_offset(lay, r)]
        if y == ignore_index or y < 0 or y >= k:
            if y != ignore_index and first_bad[0] < 0:
                first_bad[0] = r
            continue
        xr = x + _x_offset(lay, r)
        if floating is float and kmax <= 1:
            # top-1 only: the row pass need not count the target's rank (see _top1_rank)
            m = cec_tok_row_nocount_f32(xr, k, scale, res)
            _finish_stats(xr, k, m, res, temperature, &st)
        else:
            _row_stats(xr, k, y, temperature, scale, &st)
        wy = 1.0 if weight == NULL else weight[y]
        loss = (1.0 - smoothing) * wy * (st.logsum + (st.m - <double> _at(xr, y)) / temperature)
        if smoothing != 0.0:
            loss = loss + smoothing * (st.logsum * (weight_total / k)
                                       - row_wsum(weight, xr, k, st.m, 1.0 / k) / temperature)
        if st.special:
            loss = NAN
        sums[S_LOSS] += loss
        sums[S_WEIGHT] += wy
        sums[S_ENTROPY] += st.entropy
        py = exp(_logprob(xr, y, &st, temperature))
        sums[S_BRIER] += st.sumsq - 2.0 * py + 1.0
        counts[0] += 1
        if floating is float and kmax <= 1 and not st.special:
            rank = _top1_rank(xr, y, &st)
        else:
            rank = _rank(xr, k, y, &st)
        for i in range(ntopk):
            counts[1 + i] += rank < topk[i]
        conf = st.top
        if conf != conf:
            nb = N_BINS
        else:
            nb = <Py_ssize_t> ceil(conf * N_BINS) - 1
            nb = min(N_BINS - 1, max(0, nb))
        bin_count[nb] += 1
        bin_correct[nb] += rank == 0
        if nb < N_BINS:
            sums[4 + nb] += conf


cdef void _eval_rows(const floating *x, const target_t *target, const Layout *lay,
                     Py_ssize_t k, const double *w, double weight_total,
                     Py_ssize_t ignore_index, double label_smoothing, double temperature,
                     const int64_t *tk, Py_ssize_t ntopk, Py_ssize_t nblocks,
                     Py_ssize_t brows, Py_ssize_t n, double[:, ::1] sums,
                     int64_t[:, ::1] counts, Py_ssize_t[::1] bad, int n_threads):
    """eval_stats' parallel loop over blocks of float32/float64 rows."""
    cdef floating scale = <floating> (1.0 / temperature)
    cdef Py_ssize_t b
    for b in prange(nblocks, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _eval_block(x, target, lay, k, w, weight_total, ignore_index, label_smoothing,
                    temperature, scale, tk, ntopk, b * brows, min(n, (b + 1) * brows),
                    &sums[b, 0], &counts[b, 0], &bad[b])


def eval_stats(const storage_t[:, :, :] logits, int half, const target_t[:, :] target,
               const double[::1] weight, Py_ssize_t ignore_index, double label_smoothing,
               double temperature, const int64_t[::1] topk, Py_ssize_t block_rows,
               int n_threads):
    """Evaluator totals of logits (S, L, V) against class indices (S, L).

    Returns ``(sums, counts, first_bad)``: sums (float64) = loss, weight,
    entropy, Brier score, then the confidence sum of each of the 15
    calibration bins and of the NaN bin; counts (int64) = count, hits for
    each k of topk, the count of each bin (16), the correct top-1 predictions
    of each bin (16); each added over blocks in block order. first_bad: the
    flat position of the first target out of range, or -1.
    """
    cdef Py_ssize_t ns = logits.shape[0], nl = logits.shape[1], k = logits.shape[2]
    cdef Py_ssize_t n = ns * nl, ntopk = topk.shape[0]
    cdef Py_ssize_t brows = max(1, block_rows)
    cdef Py_ssize_t nblocks = max(1, (n + brows - 1) // brows)
    cdef Py_ssize_t ncounts = 1 + ntopk + 2 * (N_BINS + 1)
    cdef double[:, ::1] sums = np.zeros((nblocks, N_SUMS))
    cdef int64_t[:, ::1] counts = np.zeros((nblocks, ncounts), dtype=np.int64)
    cdef Py_ssize_t[::1] bad = np.full(nblocks, -1, dtype=np.intp)
    cdef const double *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef const int64_t *tk = &topk[0] if ntopk > 0 else NULL
    cdef double weight_total = 0.0
    cdef Py_ssize_t b, i, r, first_bad = -1
    cdef Layout lay, staged
    cdef float *buf = NULL
    cdef int failed = 0
    cdef int *failed_flag = &failed
    if w == NULL:
        weight_total = k
    else:
        for i in range(k):
            weight_total += w[i]
    if n > 0:
        lay = _layout(nl, logits.strides[0], logits.strides[1], target.strides[0],
                      target.strides[1], sizeof(storage_t), sizeof(target_t))
        if storage_t is uint16_t:
            staged = _staged(&lay)
            with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
                buf = <float *> malloc(k * sizeof(float))
                if buf != NULL:
                    for b in prange(nblocks, schedule="guided"):
                        for r in range(b * brows, min(n, (b + 1) * brows)):
                            _stage_row(&logits[0, 0, 0], half, &lay, k, r, buf)
                            _eval_block(buf, &target[0, 0], &staged, k, w, weight_total,
                                        ignore_index, label_smoothing, temperature,
                                        <float> (1.0 / temperature), tk, ntopk, r, r + 1,
                                        &sums[b, 0], &counts[b, 0], &bad[b])
                else:
                    failed_flag[0] = 1
                free(buf)
            if failed:
                raise MemoryError("cecore: could not allocate kernel scratch space")
        else:
            _eval_rows(&logits[0, 0, 0], &target[0, 0], &lay, k, w, weight_total,
                       ignore_index, label_smoothing, temperature, tk, ntopk, nblocks,
                       brows, n, sums, counts, bad, n_threads)
    for b in range(nblocks):
        if bad[b] >= 0:
            first_bad = bad[b]
            break
    total = np.zeros(N_SUMS)
    for b in range(nblocks):  # block order: the same sums for any thread count
        total += np.asarray(sums[b])
    return total, np.asarray(counts).sum(axis=0), first_bad
