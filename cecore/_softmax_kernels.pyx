# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Softmax-family kernels: log-sum-exp of rows and everything built on it.

All kernels take 2-D arrays whose rows are contiguous (any row stride) and
assume validated input. Logits come as float32, float64 or, for bfloat16 and
float16, as uint16 views with a `half` code (see _rowmath.pxd); 16-bit logits
are read as they are and computed on in float32, whose per-row results
(losses, log-sum-exps) they share; gradients come back in the logits' type (the Python layer in cecore/_losses.py and
cecore/_softmax.py checks shapes, dtypes and options). Rows are processed in
blocks whose size depends on the shape alone; each block's sums are kept
separately and added in block order, so results are bitwise identical for any
number of threads and any schedule. Blocks are handed out "guided": a thread
slowed by another process does not hold the others up at the end.
"""


import numpy as np

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, exp, signbit
from libc.stdint cimport int32_t, int64_t, uint16_t
from libc.stdlib cimport calloc, free, malloc

from cecore._rowmath cimport (CEC_COL_CHUNK, CEC_COL_W, HALF_BF16, cec_bf16_t,
                              cec_dispatch_init,
                              cec_f16_t, cec_simd_level, col_grad, col_lse, col_sub, col_wsum,
                              is_f64, load, logit_t, row_exp, row_grad,
                              row_grad_softcap, row_lse_softcap, row_sub, row_tdot,
                              row_tdot_softcap, row_wsum, row_wsum_softcap, softcap_grad_of,
                              storage_t, store)
from cecore._rows cimport (SMALL_K, Scratch, class_index_loss, logsum_of_probs, lse_rows,
                           scratch_free, scratch_new, scratch_rowmax, shift_of, total_weight)

ctypedef fused target_t:
    int32_t
    int64_t

cnp.import_array()

# Below this many elements a call runs on one thread (cecore._threads.MIN_PARALLEL_WORK).
cdef Py_ssize_t MIN_PARALLEL_WORK = 1 << 15


def dispatch_init(int requested):
    """Select the SIMD variant (-1: best supported). Returns the level in use."""
    return cec_dispatch_init(requested)


def simd_level():
    return cec_simd_level


cdef Py_ssize_t _block_rows(Py_ssize_t n_rows, Py_ssize_t k) noexcept nogil:
    """Rows per block: ~32 KB of float32 per block and, for inputs large enough
    to run in parallel, >= 64 blocks when rows allow (load balance).

    A function of the shape only, never of the thread count (reproducible sums).
    """
    cdef Py_ssize_t b = 256 if k <= SMALL_K else max(1, 8192 // k)
    if n_rows * k >= 32768:
        b = min(b, n_rows // 64)
    return max(1, b)


def block_rows(Py_ssize_t n_rows, Py_ssize_t k):
    return _block_rows(n_rows, k)


cdef class _BlockSums:
    """Per-block partial results, added in block order (thread-count independent)."""
    cdef double *loss
    cdef double *weight
    cdef Py_ssize_t *bad
    cdef Py_ssize_t n

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        self.loss = <double *> calloc(max(n, 1), sizeof(double))
        self.weight = <double *> calloc(max(n, 1), sizeof(double))
        self.bad = <Py_ssize_t *> malloc(max(n, 1) * sizeof(Py_ssize_t))
        if self.loss == NULL or self.weight == NULL or self.bad == NULL:
            raise MemoryError("cecore: could not allocate block sums")
        for b in range(n):
            self.bad[b] = -1

    def __dealloc__(self):
        free(self.loss)
        free(self.weight)
        free(self.bad)

    cdef tuple totals(self):
        """(sum of losses, sum of weights, first bad row or -1), in block order."""
        cdef double loss = 0.0, weight = 0.0
        cdef Py_ssize_t b, bad = -1
        for b in range(self.n):
            loss += self.loss[b]
            weight += self.weight[b]
            if bad < 0 and self.bad[b] >= 0:
                bad = self.bad[b]
        return loss, weight, bad


cdef inline Py_ssize_t _stride(Py_ssize_t byte_stride, Py_ssize_t itemsize):
    return byte_stride // itemsize


cdef struct CeOpts:
    # the training options of cross_entropy; a NULL CeOpts * means all at their defaults
    double z_loss                 # adds z_loss * lse^2 to each counted row's loss
    double softcap                # > 0: logits x replaced by c tanh(x / c); 0: none
    double inv_softcap            # 1 / softcap
    const double *sample_weight   # (n,) per-row weights multiplying loss and gradient, or NULL
    void *lse_out                 # (n,) per-row lse in the compute type (0 if ignored), or NULL


cdef inline void _lse_rows_opts(const logit_t *x, Py_ssize_t rows, Py_ssize_t stride,
                                Py_ssize_t k, Scratch *s, const CeOpts *o) noexcept nogil:
    """lse_rows, of the soft-capped logits when o.softcap != 0 (rowmax: the capped maximum)."""
    cdef Py_ssize_t r
    cdef Py_ssize_t itemsize = sizeof(double) if s.f64 else sizeof(float)
    if o.softcap == 0.0:
        lse_rows(x, rows, stride, k, s)
        return
    for r in range(rows):
        s.logsum[r] = row_lse_softcap(x + r * stride, k, o.softcap, o.inv_softcap,
                                      <char *> s.rowmax + r * itemsize)


cdef inline void _zero_row(logit_t *gr, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(k):
        store(gr, j, 0.0)


cdef inline double _smoothing_and_z_loss(const logit_t *xr, Py_ssize_t k,
                                         const double *weight, double weight_total,
                                         double smoothing, double shift, double logsum,
                                         double lse, double c, double inv_c,
                                         double z_loss) noexcept nogil:
    """The label-smoothing term eps sum_j w_j (lse - z_j) / k and z_loss lse^2 of a row
    (z the logits, capped when c != 0), added to its loss by both target kinds."""
    cdef double extra = 0.0
    if smoothing != 0.0:
        if c != 0.0:
            extra = smoothing * (logsum * (weight_total / k)
                                 - row_wsum_softcap(weight, xr, k, shift, 1.0 / k, c, inv_c))
        else:
            extra = smoothing * (logsum * (weight_total / k)
                                 - row_wsum(weight, xr, k, shift, 1.0 / k))
    if z_loss != 0.0:
        extra = extra + z_loss * lse * lse
    return extra


cdef void _ce_index_rows_opts(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                              const target_t *target, const double *weight,
                              double weight_total, Py_ssize_t ignore_index, double smoothing,
                              double scale, logit_t *grad, Py_ssize_t gstride, void *loss_out,
                              Py_ssize_t r0, Py_ssize_t r1, Scratch *s, const CeOpts *o,
                              double *loss_sum, double *weight_sum,
                              Py_ssize_t *first_bad) noexcept nogil:
    """_ce_index_rows with the training options of o (see _ce_index_block).

    With sw = sample_weight[r] (1 without) and lse the log-sum-exp of the
    (capped) logits, a counted row's loss is sw (CE + z_loss lse^2) and it adds
    sw w[y] to the weight sum; a row with sw == 0 contributes exactly 0 (loss,
    weight and gradient, even if its logits are not finite).
    d (z_loss lse^2) / d x[j] = 2 z_loss lse softmax(x)[j]; through the cap,
    every d / d x[j] is multiplied by cap'(x[j]) = 1 - tanh(x[j] / c)^2.
    """
    cdef Py_ssize_t r, y
    cdef double logsum, shift, lse, wy, sw, xy, loss, total = 0.0, wtotal = 0.0
    cdef double c = o.softcap, inv_c = o.inv_softcap
    cdef const logit_t *xr
    cdef logit_t *gr
    for r in range(r0, r1):
        y = target[r]
        xr = x + r * stride
        gr = grad + r * gstride
        if y == ignore_index or y < 0 or y >= k:
            if y != ignore_index and first_bad[0] < 0:
                first_bad[0] = r
            if loss_out != NULL:
                _store_loss(x, loss_out, r, 0.0)
            if o.lse_out != NULL:
                _store_loss(x, o.lse_out, r, 0.0)
            if grad != NULL:
                _zero_row(gr, k)
            continue
        shift = shift_of(scratch_rowmax(s, r - r0))
        lse = shift + s.logsum[r - r0]
        logsum = logsum_of_probs(s.logsum[r - r0], shift)
        if o.lse_out != NULL:
            _store_loss(x, o.lse_out, r, lse)
        sw = 1.0 if o.sample_weight == NULL else o.sample_weight[r]
        if sw == 0.0:
            if loss_out != NULL:
                _store_loss(x, loss_out, r, 0.0)
            if grad != NULL:
                _zero_row(gr, k)
            continue
        wy = 1.0 if weight == NULL else weight[y]
        if c != 0.0:
            # the kernels' own cap(x[y]), so that a maximal target gives shift - xy = 0
            xy = shift + row_wsum_softcap(NULL, xr + y, 1, shift, 1.0, c, inv_c)
        else:
            xy = load(xr, y)
        loss = (1.0 - smoothing) * wy * (logsum + (shift - xy))
        loss = sw * (loss + _smoothing_and_z_loss(xr, k, weight, weight_total, smoothing,
                                                  shift, logsum, lse, c, inv_c, o.z_loss))
        if loss_out != NULL:
            _store_loss(x, loss_out, r, loss)
        total = total + loss
        wtotal = wtotal + sw * wy
        if grad != NULL:
            _ce_index_grad_opts(xr, k, y, shift, logsum, lse, wy, weight, weight_total,
                                smoothing, scale * sw, o, gr)
    loss_sum[0] = total
    weight_sum[0] = wtotal


cdef inline void _ce_index_grad_opts(const logit_t *xr, Py_ssize_t k, Py_ssize_t y,
                                     double shift, double logsum, double lse, double wy,
                                     const double *weight, double weight_total,
                                     double smoothing, double scale, const CeOpts *o,
                                     logit_t *gr) noexcept nogil:
    """_ce_index_grad with z-loss and soft-capping (scale includes the row's sample weight)."""
    cdef double sm = scale * ((1.0 - smoothing) * wy + smoothing * weight_total / k
                              + 2.0 * o.z_loss * lse)
    cdef double c0 = scale * smoothing / k
    cdef double wc0 = c0 if weight == NULL else weight[y] * c0
    cdef double yterm = scale * (1.0 - smoothing) * wy
    cdef double xy = load(xr, y), d, g  # read before gr overwrites it
    if o.softcap == 0.0:
        row_grad(xr, NULL, weight, k, shift, sm * exp(-logsum), 0, c0, gr)
        if logit_t is float or logit_t is double:
            gr[y] = gr[y] - <logit_t> yterm
        else:
            store(gr, y, sm * exp(xy - shift - logsum) - wc0 - yterm)
        return
    d = softcap_grad_of(xr, xy, o.softcap, o.inv_softcap, &xy)
    xy = shift + row_wsum_softcap(NULL, xr + y, 1, shift, 1.0, o.softcap, o.inv_softcap)
    row_grad_softcap(xr, NULL, weight, k, shift, sm * exp(-logsum), 0, c0, o.softcap,
                     o.inv_softcap, gr)
    g = (sm * exp(xy - shift - logsum) - wc0 - yterm) * d
    store(gr, y, g)


cdef inline void _ce_index_rows(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                                const target_t *target, const double *weight, double weight_total,
                                Py_ssize_t ignore_index, double smoothing, double scale,
                                logit_t *grad, Py_ssize_t gstride, void *loss_out,
                                Py_ssize_t r0, Py_ssize_t r1, Scratch *s, double *loss_sum,
                                double *weight_sum, Py_ssize_t *first_bad) noexcept nogil:
    cdef Py_ssize_t r, j, y
    cdef double logsum, shift, wy, loss, total = 0.0, wtotal = 0.0
    cdef const logit_t *xr
    cdef logit_t *gr
    for r in range(r0, r1):
        y = target[r]
        xr = x + r * stride
        gr = grad + r * gstride
        if y == ignore_index or y < 0 or y >= k:
            if y != ignore_index and first_bad[0] < 0:
                first_bad[0] = r
            if loss_out != NULL:
                _store_loss(x, loss_out, r, 0.0)
            if grad != NULL:
                for j in range(k):
                    store(gr, j, 0.0)
            continue
        shift = shift_of(scratch_rowmax(s, r - r0))
        logsum = logsum_of_probs(s.logsum[r - r0], shift)
        wy = 1.0 if weight == NULL else weight[y]
        loss = class_index_loss(xr, k, y, logsum, shift, wy, weight, weight_total, smoothing)
        if loss_out != NULL:
            _store_loss(x, loss_out, r, loss)
        total = total + loss
        wtotal = wtotal + wy
        if grad != NULL:
            _ce_index_grad(xr, k, y, shift, logsum, wy, weight, weight_total, smoothing, scale,
                           gr)
    loss_sum[0] = total
    weight_sum[0] = wtotal


cdef inline void _store_loss(const logit_t *x, void *loss_out, Py_ssize_t r,
                             double loss) noexcept nogil:
    """loss_out[r] = loss in the compute type (float, double for float64 logits)."""
    if logit_t is double:
        (<double *> loss_out)[r] = loss
    else:
        (<float *> loss_out)[r] = <float> loss


cdef inline void _ce_index_grad(const logit_t *xr, Py_ssize_t k, Py_ssize_t y, double shift,
                                double logsum, double wy, const double *weight,
                                double weight_total, double smoothing, double scale,
                                logit_t *gr) noexcept nogil:
    """The gradient row of a class-index target (see _ce_index_block). gr may be xr."""
    cdef double g, xy = load(xr, y)  # read before gr overwrites it
    row_grad(xr, NULL, weight, k, shift,
             scale * ((1.0 - smoothing) * wy + smoothing * weight_total / k) * exp(-logsum),
             0, scale * smoothing / k, gr)
    if logit_t is float or logit_t is double:
        gr[y] = gr[y] - <logit_t> (scale * (1.0 - smoothing) * wy)
    else:
        # subtract before rounding to 16 bits: row_grad's value is recomputed in float
        g = ((scale * ((1.0 - smoothing) * wy + smoothing * weight_total / k))
             * exp(xy - shift - logsum))
        if weight != NULL:
            g = g - weight[y] * (scale * smoothing / k)
        else:
            g = g - scale * smoothing / k
        store(gr, y, g - scale * (1.0 - smoothing) * wy)


cdef void _ce_index_block(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                          const target_t *target, const double *weight, double weight_total,
                          Py_ssize_t ignore_index, double smoothing, double scale,
                          logit_t *grad, Py_ssize_t gstride, void *loss_out,
                          Py_ssize_t r0, Py_ssize_t r1, Scratch *s, double *loss_sum,
                          double *weight_sum, Py_ssize_t *first_bad,
                          const CeOpts *opts) noexcept nogil:
    """Loss (and, if grad != NULL, gradient) of rows r0..r1 with class-index targets.

    loss = (1 - eps) w[y] (lse - x[y]) + eps / k sum_j w[j] (lse - x[j])    (PyTorch)
    with lse - x[j] = logsum + (shift - x[j]) (see lse_rows in _rows.pxd)
    d loss / d x[j] = scale [((1 - eps) w[y] + eps W / k) softmax(x)[j]
                             - (1 - eps) w[y] [j == y] - eps w[j] / k],  W = sum_j w[j]
    Ignored rows, and rows whose target is out of range (the first is reported
    in first_bad), contribute 0. With a gradient the caller validates targets
    first: grad may alias x, and a row's loss is computed before its gradient
    overwrites it. opts != NULL: the training options (see _ce_index_rows_opts),
    decided once per block; NULL keeps the default loops below untouched.
    """
    if opts != NULL:
        _lse_rows_opts(x + r0 * stride, r1 - r0, stride, k, s, opts)
        _ce_index_rows_opts(x, stride, k, target, weight, weight_total, ignore_index, smoothing,
                            scale, grad, gstride, loss_out, r0, r1, s, opts, loss_sum,
                            weight_sum, first_bad)
        return
    lse_rows(x + r0 * stride, r1 - r0, stride, k, s)
    # Inlined with constant NULL/0 the loop has no calls left, so GCC keeps its sums in
    # registers; the general loop spills them (~2 ns a row: a third of the time at K = 10).
    if grad == NULL and smoothing == 0.0:
        _ce_index_rows(x, stride, k, target, weight, weight_total, ignore_index, 0.0, 0.0,
                       NULL, 0, loss_out, r0, r1, s, loss_sum, weight_sum, first_bad)
    else:
        _ce_index_rows(x, stride, k, target, weight, weight_total, ignore_index, smoothing,
                       scale, grad, gstride, loss_out, r0, r1, s, loss_sum, weight_sum,
                       first_bad)


cdef _ce_index(const logit_t *x, Py_ssize_t n, Py_ssize_t k, Py_ssize_t stride,
               const target_t *target, const double *w, Py_ssize_t ignore_index,
               double label_smoothing, double scale, logit_t *g, Py_ssize_t gstride,
               void *out, int n_threads, const CeOpts *opts):
    cdef Py_ssize_t brows = _block_rows(n, k)
    cdef Py_ssize_t nblocks = (n + brows - 1) // brows
    cdef _BlockSums sums = _BlockSums(nblocks)
    cdef double weight_total = total_weight(w, k)
    cdef Py_ssize_t b
    cdef int failed = 0
    cdef int *failed_flag = &failed  # written from inside the parallel region
    cdef Scratch *s = NULL
    # one thread: a plain loop (entering an OpenMP region costs ~1 us per call)
    if n_threads == 1:
        with nogil:
            s = scratch_new(brows, k, is_f64(x))
            if s != NULL:
                for b in range(nblocks):
                    _ce_index_block(x, stride, k, target, w, weight_total, ignore_index,
                                    label_smoothing, scale, g, gstride, out, b * brows,
                                    min(n, (b + 1) * brows), s, &sums.loss[b], &sums.weight[b],
                                    &sums.bad[b], opts)
            else:
                failed_flag[0] = 1
            scratch_free(s)
    else:
        with nogil, parallel(num_threads=n_threads):
            # assigned inside the parallel block, so each thread has its own
            s = scratch_new(brows, k, is_f64(x))
            if s != NULL:
                for b in prange(nblocks, schedule="guided"):
                    _ce_index_block(x, stride, k, target, w, weight_total, ignore_index,
                                    label_smoothing, scale, g, gstride, out, b * brows,
                                    min(n, (b + 1) * brows), s, &sums.loss[b], &sums.weight[b],
                                    &sums.bad[b], opts)
            else:
                failed_flag[0] = 1
            scratch_free(s)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")
    return sums.totals()


def ce_index_loss(const storage_t[:, :] logits, int half, const target_t[::1] target,
                  const double[::1] weight, Py_ssize_t ignore_index, double label_smoothing,
                  double scale, storage_t[:, :] grad, floating[::1] loss_out, int n_threads):
    """Cross-entropy of logits (n, k) against class indices (n,), optionally with gradient.

    half: what uint16 logits hold (HALF_BF16 or HALF_F16); weight: class
    weights (k,) or empty; loss_out: per-row losses (n,) in the compute type,
    or empty; grad: (n, k) in the logits' type with contiguous rows (may alias
    logits) or (0, 0) for no gradient, which is that of scale * (sum of the
    per-row losses). Returns (sum of losses, sum of the weights of counted
    targets, first row whose target is out of range or -1).
    """
    cdef void *out = <void *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    return _ce_index_call(logits, half, target, weight, ignore_index, label_smoothing, scale,
                          grad, out, n_threads, NULL)


def ce_index_loss_opts(const storage_t[:, :] logits, int half, const target_t[::1] target,
                       const double[::1] weight, Py_ssize_t ignore_index,
                       double label_smoothing, double scale, storage_t[:, :] grad,
                       floating[::1] loss_out, double z_loss, double softcap,
                       const double[::1] sample_weight, floating[::1] lse_out, int n_threads):
    """ce_index_loss with the training options (validated by the caller):

    z_loss >= 0 (adds z_loss lse^2 per counted row); softcap > 0 caps the logits
    at c tanh(x / c) (0: no cap); sample_weight: (n,) float64 weights >= 0 per
    row, multiplying its loss and gradient (a row of weight 0 contributes exactly
    0), or empty; lse_out: (n,) in the compute type for each row's log-sum-exp
    of the (capped) logits, 0 at ignored rows, or empty. The weight sum returned
    is sum sw[r] w[y_r] over counted rows. With every option at its default this
    is ce_index_loss (the same loops).
    """
    cdef CeOpts o
    cdef void *out = <void *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    o.z_loss = z_loss
    o.softcap = softcap
    o.inv_softcap = 1.0 / softcap if softcap != 0.0 else 0.0
    o.sample_weight = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    o.lse_out = <void *> &lse_out[0] if lse_out.shape[0] > 0 else NULL
    if z_loss == 0.0 and softcap == 0.0 and o.sample_weight == NULL and o.lse_out == NULL:
        return _ce_index_call(logits, half, target, weight, ignore_index, label_smoothing,
                              scale, grad, out, n_threads, NULL)
    return _ce_index_call(logits, half, target, weight, ignore_index, label_smoothing, scale,
                          grad, out, n_threads, &o)


cdef _ce_index_call(const storage_t[:, :] logits, int half, const target_t[::1] target,
                    const double[::1] weight, Py_ssize_t ignore_index, double label_smoothing,
                    double scale, storage_t[:, :] grad, void *out, int n_threads,
                    const CeOpts *opts):
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1]
    cdef Py_ssize_t stride = _stride(logits.strides[0], sizeof(storage_t))
    cdef const double *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef storage_t *g = &grad[0, 0] if grad.shape[0] > 0 else NULL
    cdef Py_ssize_t gstride = _stride(grad.strides[0], sizeof(storage_t)) if g != NULL else 0
    if n == 0:
        return 0.0, 0.0, -1
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _ce_index(<const cec_bf16_t *> &logits[0, 0], n, k, stride, &target[0], w,
                             ignore_index, label_smoothing, scale, <cec_bf16_t *> g, gstride,
                             out, n_threads, opts)
        return _ce_index(<const cec_f16_t *> &logits[0, 0], n, k, stride, &target[0], w,
                         ignore_index, label_smoothing, scale, <cec_f16_t *> g, gstride, out,
                         n_threads, opts)
    return _ce_index(&logits[0, 0], n, k, stride, &target[0], w, ignore_index, label_smoothing,
                     scale, g, gstride, out, n_threads, opts)


cdef void _ce_prob_block(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                         const char *t, Py_ssize_t tstride, const double *weight,
                         double weight_total, double smoothing, double scale,
                         logit_t *grad, Py_ssize_t gstride, void *loss_out,
                         Py_ssize_t r0, Py_ssize_t r1, Scratch *s,
                         double *loss_sum, const CeOpts *opts) noexcept nogil:
    """Loss (and, if grad != NULL, gradient) of rows r0..r1 with probability targets.

    t: targets in the compute type, rows tstride bytes apart.
    With t' = (1 - eps) t + eps / k:  loss = sum_j w[j] t'[j] (lse - x[j])    (PyTorch)
      = (1 - eps) (logsum sum_j w t - sum_j w t (x - shift))
        + eps / k (logsum sum_j w - sum_j w (x - shift))
    where terms with t[j] == 0 count as 0 even if x[j] = -inf, and
    d loss / d x[j] = scale [(sum_i w[i] t'[i]) softmax(x)[j] - w[j] t'[j]].
    """
    cdef Py_ssize_t r
    cdef double logsum, shift, loss, tw, tx, total = 0.0
    cdef const logit_t *xr
    cdef const void *tr
    if opts != NULL:
        _lse_rows_opts(x + r0 * stride, r1 - r0, stride, k, s, opts)
        _ce_prob_rows_opts(x, stride, k, t, tstride, weight, weight_total, smoothing, scale,
                           grad, gstride, loss_out, r0, r1, s, opts, loss_sum)
        return
    lse_rows(x + r0 * stride, r1 - r0, stride, k, s)
    for r in range(r0, r1):
        xr = x + r * stride
        tr = t + r * tstride
        shift = shift_of(scratch_rowmax(s, r - r0))
        logsum = logsum_of_probs(s.logsum[r - r0], shift)
        tx = row_tdot(tr, weight, xr, k, shift, &tw)
        loss = (1.0 - smoothing) * (logsum * tw - tx)
        if smoothing != 0.0:
            loss = loss + smoothing * (logsum * (weight_total / k)
                                       - row_wsum(weight, xr, k, shift, 1.0 / k))
        if grad != NULL:
            row_grad(xr, tr, weight, k, shift,
                     scale * ((1.0 - smoothing) * tw + smoothing * weight_total / k)
                     * exp(-logsum), scale * (1.0 - smoothing), scale * smoothing / k,
                     grad + r * gstride)
        if loss_out != NULL:
            _store_loss(x, loss_out, r, loss)
        total = total + loss
    loss_sum[0] = total


cdef void _ce_prob_rows_opts(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                             const char *t, Py_ssize_t tstride, const double *weight,
                             double weight_total, double smoothing, double scale,
                             logit_t *grad, Py_ssize_t gstride, void *loss_out,
                             Py_ssize_t r0, Py_ssize_t r1, Scratch *s, const CeOpts *o,
                             double *loss_sum) noexcept nogil:
    """_ce_prob_block's rows with the training options (as _ce_index_rows_opts):
    loss sw (CE + z_loss lse^2); gradient
    scale sw [((sum_i w t'_i) + 2 z_loss lse) softmax(x)[j] - w[j] t'[j]] cap'(x[j])."""
    cdef Py_ssize_t r
    cdef double logsum, shift, lse, sw, loss, tw, tx, a, sc, total = 0.0
    cdef double c = o.softcap, inv_c = o.inv_softcap
    cdef const logit_t *xr
    cdef const void *tr
    for r in range(r0, r1):
        xr = x + r * stride
        tr = t + r * tstride
        shift = shift_of(scratch_rowmax(s, r - r0))
        lse = shift + s.logsum[r - r0]
        logsum = logsum_of_probs(s.logsum[r - r0], shift)
        if o.lse_out != NULL:
            _store_loss(x, o.lse_out, r, lse)
        sw = 1.0 if o.sample_weight == NULL else o.sample_weight[r]
        if sw == 0.0:
            if loss_out != NULL:
                _store_loss(x, loss_out, r, 0.0)
            if grad != NULL:
                _zero_row(grad + r * gstride, k)
            continue
        if c != 0.0:
            tx = row_tdot_softcap(tr, weight, xr, k, shift, c, inv_c, &tw)
        else:
            tx = row_tdot(tr, weight, xr, k, shift, &tw)
        loss = (1.0 - smoothing) * (logsum * tw - tx)
        loss = sw * (loss + _smoothing_and_z_loss(xr, k, weight, weight_total, smoothing,
                                                  shift, logsum, lse, c, inv_c, o.z_loss))
        if grad != NULL:
            sc = scale * sw
            a = sc * ((1.0 - smoothing) * tw + smoothing * weight_total / k
                      + 2.0 * o.z_loss * lse) * exp(-logsum)
            if c != 0.0:
                row_grad_softcap(xr, tr, weight, k, shift, a, sc * (1.0 - smoothing),
                                 sc * smoothing / k, c, inv_c, grad + r * gstride)
            else:
                row_grad(xr, tr, weight, k, shift, a, sc * (1.0 - smoothing),
                         sc * smoothing / k, grad + r * gstride)
        if loss_out != NULL:
            _store_loss(x, loss_out, r, loss)
        total = total + loss
    loss_sum[0] = total


cdef _ce_prob(const logit_t *x, Py_ssize_t n, Py_ssize_t k, Py_ssize_t stride, const char *t,
              Py_ssize_t tstride, const double *w, double label_smoothing, double scale,
              logit_t *g, Py_ssize_t gstride, void *out, int n_threads, const CeOpts *opts):
    cdef Py_ssize_t brows = _block_rows(n, k)
    cdef Py_ssize_t nblocks = (n + brows - 1) // brows
    cdef _BlockSums sums = _BlockSums(nblocks)
    cdef double weight_total = total_weight(w, k)
    cdef Py_ssize_t b
    cdef int failed = 0
    cdef int *failed_flag = &failed  # written from inside the parallel region
    cdef Scratch *s = NULL
    # one thread: a plain loop (entering an OpenMP region costs ~1 us per call)
    if n_threads == 1:
        with nogil:
            s = scratch_new(brows, k, is_f64(x))
            if s != NULL:
                for b in range(nblocks):
                    _ce_prob_block(x, stride, k, t, tstride, w, weight_total, label_smoothing,
                                   scale, g, gstride, out, b * brows, min(n, (b + 1) * brows),
                                   s, &sums.loss[b], opts)
            else:
                failed_flag[0] = 1
            scratch_free(s)
    else:
        with nogil, parallel(num_threads=n_threads):
            # assigned inside the parallel block, so each thread has its own
            s = scratch_new(brows, k, is_f64(x))
            if s != NULL:
                for b in prange(nblocks, schedule="guided"):
                    _ce_prob_block(x, stride, k, t, tstride, w, weight_total, label_smoothing,
                                   scale, g, gstride, out, b * brows, min(n, (b + 1) * brows),
                                   s, &sums.loss[b], opts)
            else:
                failed_flag[0] = 1
            scratch_free(s)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")
    return sums.totals()[0]


def ce_prob_loss(const storage_t[:, :] logits, int half, const floating[:, :] target,
                 const double[::1] weight, double label_smoothing, double scale,
                 storage_t[:, :] grad, floating[::1] loss_out, int n_threads):
    """Cross-entropy of logits (n, k) against probability targets (n, k).

    target and loss_out in the compute type (float32, float64 for float64
    logits); the other arguments as ce_index_loss. Returns the sum of the
    per-row losses.
    """
    cdef void *out = <void *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    return _ce_prob_call(logits, half, target, weight, label_smoothing, scale, grad, out,
                         n_threads, NULL)


def ce_prob_loss_opts(const storage_t[:, :] logits, int half, const floating[:, :] target,
                      const double[::1] weight, double label_smoothing, double scale,
                      storage_t[:, :] grad, floating[::1] loss_out, double z_loss,
                      double softcap, const double[::1] sample_weight, floating[::1] lse_out,
                      int n_threads):
    """ce_prob_loss with the training options of ce_index_loss_opts."""
    cdef CeOpts o
    cdef void *out = <void *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    o.z_loss = z_loss
    o.softcap = softcap
    o.inv_softcap = 1.0 / softcap if softcap != 0.0 else 0.0
    o.sample_weight = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    o.lse_out = <void *> &lse_out[0] if lse_out.shape[0] > 0 else NULL
    if z_loss == 0.0 and softcap == 0.0 and o.sample_weight == NULL and o.lse_out == NULL:
        return _ce_prob_call(logits, half, target, weight, label_smoothing, scale, grad, out,
                             n_threads, NULL)
    return _ce_prob_call(logits, half, target, weight, label_smoothing, scale, grad, out,
                         n_threads, &o)


cdef _ce_prob_call(const storage_t[:, :] logits, int half, const floating[:, :] target,
                   const double[::1] weight, double label_smoothing, double scale,
                   storage_t[:, :] grad, void *out, int n_threads, const CeOpts *opts):
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1]
    cdef Py_ssize_t stride = _stride(logits.strides[0], sizeof(storage_t))
    cdef const double *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef storage_t *g = &grad[0, 0] if grad.shape[0] > 0 else NULL
    cdef Py_ssize_t gstride = _stride(grad.strides[0], sizeof(storage_t)) if g != NULL else 0
    if n == 0:
        return 0.0
    cdef const char *t = <const char *> &target[0, 0]
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _ce_prob(<const cec_bf16_t *> &logits[0, 0], n, k, stride, t,
                            target.strides[0], w, label_smoothing, scale, <cec_bf16_t *> g,
                            gstride, out, n_threads, opts)
        return _ce_prob(<const cec_f16_t *> &logits[0, 0], n, k, stride, t, target.strides[0],
                        w, label_smoothing, scale, <cec_f16_t *> g, gstride, out, n_threads,
                        opts)
    return _ce_prob(&logits[0, 0], n, k, stride, t, target.strides[0], w, label_smoothing,
                    scale, g, gstride, out, n_threads, opts)


cdef void _nll_block(const logit_t *x, Py_ssize_t stride, Py_ssize_t k,
                     const target_t *target, const double *weight, Py_ssize_t ignore_index,
                     void *loss_out, Py_ssize_t r0, Py_ssize_t r1, double *loss_sum,
                     double *weight_sum, Py_ssize_t *first_bad,
                     const double *sw) noexcept nogil:
    """sw: per-row sample weights (NULL: 1); a row of weight 0 contributes exactly 0."""
    cdef Py_ssize_t r, y
    cdef double wy, loss, total = 0.0, wtotal = 0.0
    for r in range(r0, r1):
        y = target[r]
        loss = 0.0
        if y == ignore_index:
            pass
        elif y < 0 or y >= k:
            if first_bad[0] < 0:
                first_bad[0] = r
        else:
            wy = 1.0 if weight == NULL else weight[y]
            if sw == NULL:
                loss = -wy * load(x, r * stride + y)
            elif sw[r] != 0.0:
                loss = sw[r] * (-wy * load(x, r * stride + y))
                wy = sw[r] * wy
            else:
                wy = 0.0
            wtotal = wtotal + wy
        if loss_out != NULL:
            _store_loss(x, loss_out, r, loss)
        total = total + loss
    loss_sum[0] = total
    weight_sum[0] = wtotal


cdef _nll(const logit_t *x, Py_ssize_t n, Py_ssize_t k, Py_ssize_t stride,
          const target_t *target, const double *w, Py_ssize_t ignore_index, void *out,
          int n_threads, const double *sw):
    cdef Py_ssize_t brows = max(1, min(4096, n // 64))
    cdef Py_ssize_t nblocks = (n + brows - 1) // brows
    cdef _BlockSums sums = _BlockSums(nblocks)
    cdef Py_ssize_t b
    for b in prange(nblocks, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _nll_block(x, stride, k, target, w, ignore_index, out, b * brows,
                   min(n, (b + 1) * brows), &sums.loss[b], &sums.weight[b], &sums.bad[b], sw)
    return sums.totals()


def nll_loss(const storage_t[:, :] log_probs, int half, const target_t[::1] target,
             const double[::1] weight, Py_ssize_t ignore_index, floating[::1] loss_out,
             const double[::1] sample_weight, int n_threads):
    """Negative log-likelihood -sw[r] w[y] log_probs[r, y]; returns like ce_index_loss.

    sample_weight: (n,) float64 per-row weights, or empty (all 1).
    """
    cdef const double *sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    cdef Py_ssize_t n = log_probs.shape[0], k = log_probs.shape[1]
    cdef Py_ssize_t stride = _stride(log_probs.strides[0], sizeof(storage_t))
    cdef const double *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef void *out = <void *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    if n == 0:
        return 0.0, 0.0, -1
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _nll(<const cec_bf16_t *> &log_probs[0, 0], n, k, stride, &target[0], w,
                        ignore_index, out, n_threads, sw)
        return _nll(<const cec_f16_t *> &log_probs[0, 0], n, k, stride, &target[0], w,
                    ignore_index, out, n_threads, sw)
    return _nll(&log_probs[0, 0], n, k, stride, &target[0], w, ignore_index, out, n_threads,
                sw)


cdef void _softmax_block(const logit_t *x, Py_ssize_t stride, Py_ssize_t k, char *out,
                         Py_ssize_t ostride, Py_ssize_t osize, int mode, Py_ssize_t r0,
                         Py_ssize_t r1, Scratch *s) noexcept nogil:
    """mode 0: lse (out is (n,) of the compute type); 1: log_softmax; 2: softmax (out is
    (n, k) of x's type, or of float32 when osize is 4 for 16-bit x); ostride in bytes."""
    cdef Py_ssize_t r
    cdef double logsum, shift
    cdef bint out_f32 = osize == 4
    lse_rows(x + r0 * stride, r1 - r0, stride, k, s)
    for r in range(r0, r1):
        logsum = s.logsum[r - r0]
        shift = shift_of(scratch_rowmax(s, r - r0))
        if mode == 0:
            _store_loss(x, out, r, shift + logsum)
            continue
        logsum = logsum_of_probs(logsum, shift)
        if mode == 1:
            row_sub(x + r * stride, k, shift, logsum, out + r * ostride, out_f32)
        else:
            # exp(x - shift) exp(-logsum): one rounding of the scale, none of lse
            row_exp(x + r * stride, k, shift, exp(-logsum), out + r * ostride, out_f32)


cdef _softmax(const logit_t *x, Py_ssize_t n, Py_ssize_t k, Py_ssize_t stride, char *out,
              Py_ssize_t ostride, Py_ssize_t osize, int mode, int n_threads):
    cdef Py_ssize_t brows = _block_rows(n, k)
    cdef Py_ssize_t nblocks = (n + brows - 1) // brows
    cdef Py_ssize_t b
    cdef int failed = 0
    cdef int *failed_flag = &failed  # written from inside the parallel region
    cdef Scratch *s = NULL
    # one thread: a plain loop (entering an OpenMP region costs ~1 us per call)
    if n_threads == 1:
        with nogil:
            s = scratch_new(brows, k, is_f64(x))
            if s != NULL:
                for b in range(nblocks):
                    _softmax_block(x, stride, k, out, ostride, osize, mode, b * brows,
                                   min(n, (b + 1) * brows), s)
            else:
                failed_flag[0] = 1
            scratch_free(s)
    else:
        with nogil, parallel(num_threads=n_threads):
            # assigned inside the parallel block, so each thread has its own
            s = scratch_new(brows, k, is_f64(x))
            if s != NULL:
                for b in prange(nblocks, schedule="guided"):
                    _softmax_block(x, stride, k, out, ostride, osize, mode, b * brows,
                                   min(n, (b + 1) * brows), s)
            else:
                failed_flag[0] = 1
            scratch_free(s)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")


def softmax_rows(const storage_t[:, :] x, int half, out, int mode, int n_threads):
    """Row-wise log-sum-exp (mode 0), log_softmax (1) or softmax (2).

    out: a NumPy array, (n, 1) of the compute type for mode 0, else (n, k) with
    contiguous rows of x's type (bfloat16/float16 as they are) or, for 16-bit
    x, of float32.
    """
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1]
    cdef Py_ssize_t stride = _stride(x.strides[0], sizeof(storage_t))
    cdef unsigned char[:, :] out_bytes
    if n == 0:
        return
    # the output as bytes: its element type is the kernel's to know (see _softmax_block)
    out_bytes = out.view(np.uint8) if out.shape[1] > 0 else out.view(np.uint8).reshape(n, 0)
    cdef char *o = <char *> &out_bytes[0, 0]
    cdef Py_ssize_t ostride = out_bytes.strides[0], osize = out.itemsize
    if storage_t is uint16_t:
        if half == HALF_BF16:
            _softmax(<const cec_bf16_t *> &x[0, 0], n, k, stride, o, ostride, osize, mode,
                     n_threads)
        else:
            _softmax(<const cec_f16_t *> &x[0, 0], n, k, stride, o, ostride, osize, mode,
                     n_threads)
    else:
        _softmax(&x[0, 0], n, k, stride, o, ostride, osize, mode, n_threads)


# ------------------------------------------------------------ class axis not last
#
# Logits viewed as (outer, k, inner) with the inner positions contiguous and the
# classes cs elements apart: PyTorch's (N, C, d1, ...) with the class axis 1, or
# any axis but the last. Blocks of up to CEC_COL_W positions go through the
# column kernels of _colmath_impl.h (vectorised across positions, reading the
# block class after class); per position the formulas are those of the row code
# above. Tasks of up to _COL_GROUP blocks within one outer index, a function of
# the shape alone, keep their sums separately (thread-count independent).


cdef struct ColScratch:
    void *buf        # CEC_COL_CHUNK * (CEC_COL_W + 16) values in the compute type (col_lse)
    void *rowmax     # CEC_COL_W values each, in the compute type:
    void *shift_t    #   the lanes' maxima, shifts,
    void *a_t        #   and col_grad's a and c0
    void *c0_t
    double *logsum   # CEC_COL_W doubles each
    double *xy       # the target logits (read before a gradient in place overwrites them)
    double *shift
    double *aux      # col_wsum's sums, then the probabilities' logsum
    double *sm       # the gradient's softmax factor (16-bit fix-up of the target entry)
    double *yterm    # its target term; NAN marks a lane whose gradient is 0


cdef inline void col_scratch_free(ColScratch *s) noexcept nogil:
    if s != NULL:
        free(s.buf)
        free(s.logsum)
        free(s)


cdef inline ColScratch *col_scratch_new(bint f64) noexcept nogil:
    """Per-thread work space for the column kernels, or NULL if out of memory."""
    cdef ColScratch *s = <ColScratch *> calloc(1, sizeof(ColScratch))
    cdef Py_ssize_t w = CEC_COL_W, itemsize = sizeof(double) if f64 else sizeof(float)
    if s == NULL:
        return NULL
    s.buf = malloc((CEC_COL_CHUNK * (w + 16) + 4 * w) * itemsize)
    s.logsum = <double *> malloc(6 * w * sizeof(double))
    if s.buf == NULL or s.logsum == NULL:
        col_scratch_free(s)
        return NULL
    s.rowmax = <char *> s.buf + CEC_COL_CHUNK * (w + 16) * itemsize
    s.shift_t = <char *> s.rowmax + w * itemsize
    s.a_t = <char *> s.shift_t + w * itemsize
    s.c0_t = <char *> s.a_t + w * itemsize
    s.shift = s.logsum + w
    s.aux = s.shift + w
    s.sm = s.aux + w
    s.yterm = s.sm + w
    s.xy = s.yterm + w
    return s


cdef inline double _tval(const logit_t *x, const void *a, Py_ssize_t i) noexcept nogil:
    """a[i] of an array in x's compute type."""
    if logit_t is double:
        return (<const double *> a)[i]
    else:
        return (<const float *> a)[i]


cdef inline void _col_shifts(const logit_t *x, Py_ssize_t nb, ColScratch *s) noexcept nogil:
    cdef Py_ssize_t l
    for l in range(nb):
        s.shift[l] = shift_of(_tval(x, s.rowmax, l))
        _store_loss(x, s.shift_t, l, s.shift[l])


# positions per block, and blocks per task at most
cdef enum:
    _COL_GROUP = 16


cdef void _ce_cols_block(const logit_t *x, Py_ssize_t cs, Py_ssize_t k, Py_ssize_t nb,
                         Py_ssize_t p0, const target_t *target, const double *weight,
                         double weight_total, Py_ssize_t ignore_index, double smoothing,
                         double scale, logit_t *grad, Py_ssize_t gcs, void *loss_out,
                         ColScratch *s, const CeOpts *o, double *loss_sum, double *weight_sum,
                         Py_ssize_t *first_bad) noexcept nogil:
    """_ce_index_rows_opts (no soft-capping) for the nb <= CEC_COL_W positions p0, p0 + 1, ...
    of one block; x and grad point at its lane 0, classes cs and gcs elements apart."""
    cdef Py_ssize_t l, y, c, p
    cdef double logsum, shift, lse, wy, sw, xy, loss, extra, sc, g
    cdef double total = 0.0, wtotal = 0.0
    col_lse(x, k, cs, nb, s.buf, s.rowmax, s.logsum)
    for l in range(nb):
        # the target logits in a loop of their own: its cache misses overlap
        y = target[p0 + l]
        s.xy[l] = load(x, y * cs + l) if 0 <= y < k else 0.0
    _col_shifts(x, nb, s)
    if smoothing != 0.0:
        col_wsum(x, k, cs, nb, weight, s.shift, 1.0 / k, s.aux)
    for l in range(nb):
        _store_loss(x, s.a_t, l, 0.0)
        _store_loss(x, s.c0_t, l, 0.0)
        s.yterm[l] = NAN
    for l in range(nb):
        p = p0 + l
        y = target[p]
        if y == ignore_index or y < 0 or y >= k:
            if y != ignore_index and first_bad[0] < 0:
                first_bad[0] = p
            if loss_out != NULL:
                _store_loss(x, loss_out, p, 0.0)
            if o.lse_out != NULL:
                _store_loss(x, o.lse_out, p, 0.0)
            continue
        shift = s.shift[l]
        lse = shift + s.logsum[l]
        logsum = logsum_of_probs(s.logsum[l], shift)
        if o.lse_out != NULL:
            _store_loss(x, o.lse_out, p, lse)
        sw = 1.0 if o.sample_weight == NULL else o.sample_weight[p]
        if sw == 0.0:
            if loss_out != NULL:
                _store_loss(x, loss_out, p, 0.0)
            continue
        wy = 1.0 if weight == NULL else weight[y]
        xy = s.xy[l]
        loss = (1.0 - smoothing) * wy * (logsum + (shift - xy))
        extra = 0.0
        if smoothing != 0.0:
            extra = smoothing * (logsum * (weight_total / k) - s.aux[l])
        if o.z_loss != 0.0:
            extra = extra + o.z_loss * lse * lse
        loss = sw * (loss + extra)
        if loss_out != NULL:
            _store_loss(x, loss_out, p, loss)
        total = total + loss
        wtotal = wtotal + sw * wy
        if grad != NULL:
            sc = scale * sw
            s.sm[l] = sc * ((1.0 - smoothing) * wy + smoothing * weight_total / k
                            + 2.0 * o.z_loss * lse)
            s.yterm[l] = sc * (1.0 - smoothing) * wy
            s.logsum[l] = logsum
            _store_loss(x, s.a_t, l, s.sm[l] * exp(-logsum))
            _store_loss(x, s.c0_t, l, sc * smoothing / k)
    loss_sum[0] = total
    weight_sum[0] = wtotal
    if grad == NULL:
        return
    col_grad(x, k, cs, nb, s.shift_t, s.a_t, s.c0_t, weight, grad, gcs)
    for l in range(nb):
        if s.yterm[l] != s.yterm[l]:
            for c in range(k):
                store(grad, c * gcs + l, 0.0)
            continue
        y = target[p0 + l]
        if logit_t is float or logit_t is double:
            grad[y * gcs + l] = grad[y * gcs + l] - <logit_t> s.yterm[l]
        else:
            # subtract before rounding to 16 bits, as _ce_index_grad_opts
            xy = s.xy[l]
            g = _tval(x, s.c0_t, l)
            if weight != NULL:
                g = weight[y] * g
            store(grad, y * gcs + l,
                  s.sm[l] * exp(xy - s.shift[l] - s.logsum[l]) - g - s.yterm[l])


cdef inline (Py_ssize_t, Py_ssize_t) _col_tasks(Py_ssize_t outer, Py_ssize_t inner) noexcept nogil:
    """(blocks per task, tasks per outer index): >= 64 tasks when the shape allows."""
    cdef Py_ssize_t nib = (inner + CEC_COL_W - 1) // CEC_COL_W
    cdef Py_ssize_t group = max(1, min(<Py_ssize_t> _COL_GROUP, outer * nib // 64))
    return group, (nib + group - 1) // group


cdef void _ce_cols_task(const logit_t *x, Py_ssize_t xos, Py_ssize_t cs, Py_ssize_t k,
                        Py_ssize_t inner, Py_ssize_t group, Py_ssize_t tpo, Py_ssize_t t,
                        const target_t *target, const double *weight, double weight_total,
                        Py_ssize_t ignore_index, double smoothing, double scale, logit_t *grad,
                        Py_ssize_t gos, Py_ssize_t gcs, void *loss_out, ColScratch *s,
                        const CeOpts *o, double *loss_sum, double *weight_sum,
                        Py_ssize_t *first_bad) noexcept nogil:
    cdef Py_ssize_t ob = t // tpo, b, i0, nib = (inner + CEC_COL_W - 1) // CEC_COL_W
    cdef double bl, bw, total = 0.0, wtotal = 0.0
    cdef logit_t *g
    for b in range((t % tpo) * group, min(nib, (t % tpo + 1) * group)):
        i0 = b * CEC_COL_W
        g = grad + ob * gos + i0 if grad != NULL else NULL
        _ce_cols_block(x + ob * xos + i0, cs, k, min(<Py_ssize_t> CEC_COL_W, inner - i0),
                       ob * inner + i0, target, weight, weight_total, ignore_index, smoothing,
                       scale, g, gcs, loss_out, s, o, &bl, &bw, first_bad)
        total = total + bl
        wtotal = wtotal + bw
    loss_sum[0] = total
    weight_sum[0] = wtotal


cdef _ce_cols(const logit_t *x, Py_ssize_t outer, Py_ssize_t k, Py_ssize_t inner,
              Py_ssize_t xos, Py_ssize_t cs, const target_t *target, const double *w,
              Py_ssize_t ignore_index, double smoothing, double scale, logit_t *g,
              Py_ssize_t gos, Py_ssize_t gcs, void *out, int n_threads, const CeOpts *o):
    cdef Py_ssize_t group, tpo, t
    group, tpo = _col_tasks(outer, inner)
    cdef _BlockSums sums = _BlockSums(outer * tpo)
    cdef double weight_total = total_weight(w, k)
    cdef int failed = 0
    cdef int *failed_flag = &failed  # written from inside the parallel region
    cdef ColScratch *s = NULL
    if n_threads == 1:
        with nogil:
            s = col_scratch_new(is_f64(x))
            if s != NULL:
                for t in range(outer * tpo):
                    _ce_cols_task(x, xos, cs, k, inner, group, tpo, t, target, w, weight_total,
                                  ignore_index, smoothing, scale, g, gos, gcs, out, s, o,
                                  &sums.loss[t], &sums.weight[t], &sums.bad[t])
            else:
                failed_flag[0] = 1
            col_scratch_free(s)
    else:
        with nogil, parallel(num_threads=n_threads):
            s = col_scratch_new(is_f64(x))
            if s != NULL:
                for t in prange(outer * tpo, schedule="guided"):
                    _ce_cols_task(x, xos, cs, k, inner, group, tpo, t, target, w, weight_total,
                                  ignore_index, smoothing, scale, g, gos, gcs, out, s, o,
                                  &sums.loss[t], &sums.weight[t], &sums.bad[t])
            else:
                failed_flag[0] = 1
            col_scratch_free(s)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")
    return sums.totals()


def ce_index_cols(const storage_t[:, :, :] logits, int half, const target_t[::1] target,
                  const double[::1] weight, Py_ssize_t ignore_index, double label_smoothing,
                  double scale, storage_t[:, :, :] grad, floating[::1] loss_out,
                  double z_loss, const double[::1] sample_weight, floating[::1] lse_out,
                  int n_threads):
    """ce_index_loss_opts (no softcap) for logits (outer, k, inner) whose inner positions
    are contiguous; targets, loss_out, sample_weight and lse_out in C order of (outer,
    inner). grad: the logits' layout (inner contiguous; may alias logits) or (0, 0, 0)."""
    cdef CeOpts o
    cdef Py_ssize_t outer = logits.shape[0], k = logits.shape[1], inner = logits.shape[2]
    cdef Py_ssize_t xos = _stride(logits.strides[0], sizeof(storage_t))
    cdef Py_ssize_t cs = _stride(logits.strides[1], sizeof(storage_t))
    cdef const double *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef storage_t *g = &grad[0, 0, 0] if grad.shape[0] > 0 else NULL
    cdef Py_ssize_t gos = _stride(grad.strides[0], sizeof(storage_t)) if g != NULL else 0
    cdef Py_ssize_t gcs = _stride(grad.strides[1], sizeof(storage_t)) if g != NULL else 0
    cdef void *out = <void *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    o.z_loss = z_loss
    o.softcap = 0.0
    o.inv_softcap = 0.0
    o.sample_weight = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    o.lse_out = <void *> &lse_out[0] if lse_out.shape[0] > 0 else NULL
    if outer == 0 or inner == 0:
        return 0.0, 0.0, -1
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _ce_cols(<const cec_bf16_t *> &logits[0, 0, 0], outer, k, inner, xos, cs,
                            &target[0], w, ignore_index, label_smoothing, scale,
                            <cec_bf16_t *> g, gos, gcs, out, n_threads, &o)
        return _ce_cols(<const cec_f16_t *> &logits[0, 0, 0], outer, k, inner, xos, cs,
                        &target[0], w, ignore_index, label_smoothing, scale, <cec_f16_t *> g,
                        gos, gcs, out, n_threads, &o)
    return _ce_cols(&logits[0, 0, 0], outer, k, inner, xos, cs, &target[0], w, ignore_index,
                    label_smoothing, scale, g, gos, gcs, out, n_threads, &o)


cdef void _softmax_cols_task(const logit_t *x, Py_ssize_t xos, Py_ssize_t cs, Py_ssize_t k,
                             Py_ssize_t inner, Py_ssize_t group, Py_ssize_t tpo, Py_ssize_t t,
                             logit_t *out, void *lse, int mode, ColScratch *s) noexcept nogil:
    """_softmax_block for the blocks of task t: mode 0 writes lse (flat positions, compute
    type), 1 and 2 log_softmax and softmax into out, C-ordered (outer, k, inner)."""
    cdef Py_ssize_t ob = t // tpo, b, i0, l, nb, nib = (inner + CEC_COL_W - 1) // CEC_COL_W
    cdef logit_t *o
    for b in range((t % tpo) * group, min(nib, (t % tpo + 1) * group)):
        i0 = b * CEC_COL_W
        nb = min(<Py_ssize_t> CEC_COL_W, inner - i0)
        col_lse(x + ob * xos + i0, k, cs, nb, s.buf, s.rowmax, s.logsum)
        _col_shifts(x, nb, s)
        if mode == 0:
            for l in range(nb):
                _store_loss(x, lse, ob * inner + i0 + l, s.shift[l] + s.logsum[l])
            continue
        for l in range(nb):
            s.aux[l] = logsum_of_probs(s.logsum[l], s.shift[l])
        o = out + ob * k * inner + i0
        if mode == 1:
            col_sub(x + ob * xos + i0, k, cs, nb, s.shift, s.aux, o, inner)
        else:
            for l in range(nb):
                # exp(x - shift) exp(-logsum): one rounding of the scale, none of lse
                _store_loss(x, s.a_t, l, exp(-s.aux[l]))
                _store_loss(x, s.c0_t, l, 0.0)
            col_grad(x + ob * xos + i0, k, cs, nb, s.shift_t, s.a_t, s.c0_t, NULL, o, inner)


cdef _softmax_cols(const logit_t *x, Py_ssize_t outer, Py_ssize_t k, Py_ssize_t inner,
                   Py_ssize_t xos, Py_ssize_t cs, logit_t *out, void *lse, int mode,
                   int n_threads):
    cdef Py_ssize_t group, tpo, t
    group, tpo = _col_tasks(outer, inner)
    cdef int failed = 0
    cdef int *failed_flag = &failed  # written from inside the parallel region
    cdef ColScratch *s = NULL
    if n_threads == 1:
        with nogil:
            s = col_scratch_new(is_f64(x))
            if s != NULL:
                for t in range(outer * tpo):
                    _softmax_cols_task(x, xos, cs, k, inner, group, tpo, t, out, lse, mode, s)
            else:
                failed_flag[0] = 1
            col_scratch_free(s)
    else:
        with nogil, parallel(num_threads=n_threads):
            s = col_scratch_new(is_f64(x))
            if s != NULL:
                for t in prange(outer * tpo, schedule="guided"):
                    _softmax_cols_task(x, xos, cs, k, inner, group, tpo, t, out, lse, mode, s)
            else:
                failed_flag[0] = 1
            col_scratch_free(s)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")


def softmax_cols(const storage_t[:, :, :] x, int half, storage_t[:, :, ::1] out,
                 floating[::1] lse, int mode, int n_threads):
    """softmax_rows for x (outer, k, inner) whose inner positions are contiguous: mode 0
    writes lse (outer * inner,) in the compute type (out is (0, 0, 0)); 1 and 2 write
    out, C-contiguous (outer, k, inner) of x's type."""
    cdef Py_ssize_t outer = x.shape[0], k = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t xos = _stride(x.strides[0], sizeof(storage_t))
    cdef Py_ssize_t cs = _stride(x.strides[1], sizeof(storage_t))
    cdef storage_t *o = &out[0, 0, 0] if out.shape[0] > 0 else NULL
    cdef void *ls = <void *> &lse[0] if lse.shape[0] > 0 else NULL
    if outer == 0 or inner == 0:
        return
    if storage_t is uint16_t:
        if half == HALF_BF16:
            _softmax_cols(<const cec_bf16_t *> &x[0, 0, 0], outer, k, inner, xos, cs,
                          <cec_bf16_t *> o, ls, mode, n_threads)
        else:
            _softmax_cols(<const cec_f16_t *> &x[0, 0, 0], outer, k, inner, xos, cs,
                          <cec_f16_t *> o, ls, mode, n_threads)
    else:
        _softmax_cols(&x[0, 0, 0], outer, k, inner, xos, cs, o, ls, mode, n_threads)


# ------------------------------------------------------------------ fast paths
#
# The common call of a library that calls cecore in a loop: a small 2-D float32 or
# float64 array with contiguous rows and default options. Validated here, in
# compiled code, it skips the Python layer's general checks (a few microseconds);
# anything else returns None and the caller takes the general path, which also
# raises every error, so errors are the same either way. Results are those of the
# general path bit for bit (same kernels, same block order, one thread: the
# general path also runs inputs this small on one thread).


cdef inline bint _plain_rows(object x, Py_ssize_t max_size) noexcept:
    """x is a 2-D native float32/float64 ndarray with aligned, contiguous rows, at
    least one class and fewer than max_size elements."""
    cdef cnp.ndarray a
    cdef int kind
    cdef Py_ssize_t itemsize
    if type(x) is not np.ndarray:
        return False
    a = <cnp.ndarray> x
    if cnp.PyArray_NDIM(a) != 2:
        return False
    kind = cnp.PyArray_TYPE(a)
    if kind != cnp.NPY_FLOAT32 and kind != cnp.NPY_FLOAT64:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a):
        return False
    itemsize = cnp.PyArray_ITEMSIZE(a)
    if cnp.PyArray_DIMS(a)[1] == 0 or cnp.PyArray_SIZE(a) >= max_size:
        return False
    if cnp.PyArray_DIMS(a)[1] > 1 and cnp.PyArray_STRIDES(a)[1] != itemsize:
        return False
    return cnp.PyArray_STRIDES(a)[0] % itemsize == 0


cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)

cdef cnp.dtype _FLOAT32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32)
cdef cnp.dtype _FLOAT64 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64)


cdef inline object _mean(double total, double weight, bint f64, bint as_array):
    """total / weight with IEEE semantics (cecore._validation.divide), as the
    result's NumPy scalar (a 0-d array with as_array); beyond float32's range a
    float32 result is +-inf."""
    cdef double value
    cdef float single
    cdef cnp.ndarray out
    if weight != 0.0:
        value = total / weight
    elif total == 0.0 or total != total:
        value = NAN
    else:
        value = INFINITY if (total > 0) == (weight >= 0 and not signbit(weight)) else -INFINITY
    single = <float> value
    if as_array:
        out = cnp.PyArray_SimpleNew(0, NULL, cnp.NPY_FLOAT64 if f64 else cnp.NPY_FLOAT32)
        if f64:
            (<double *> cnp.PyArray_DATA(out))[0] = value
        else:
            (<float *> cnp.PyArray_DATA(out))[0] = single
        return out
    if f64:
        return PyArray_Scalar(&value, _FLOAT64, None)
    return PyArray_Scalar(&single, _FLOAT32, None)


cdef (double, double, Py_ssize_t) _ce_index_serial(const floating *x, Py_ssize_t n,
                                                    Py_ssize_t k, Py_ssize_t stride,
                                                    const int64_t *target, double scale,
                                                    floating *grad) noexcept nogil:
    """Sum of losses, of weights and the first bad row of _ce_index with default options
    and one thread (blocks added in the same order); grad: NULL, or (n, k) C-ordered for
    the gradient of scale * the sum. Returns bad row -2 when out of memory."""
    cdef Py_ssize_t brows = _block_rows(n, k), b
    cdef double loss = 0.0, weight = 0.0, block_loss, block_weight
    cdef Py_ssize_t bad = -1, block_bad
    cdef Scratch *s = scratch_new(brows, k, floating is double)
    if s == NULL:
        return 0.0, 0.0, -2
    for b in range((n + brows - 1) // brows):
        block_loss = 0.0
        block_weight = 0.0
        block_bad = -1
        _ce_index_block(x, stride, k, target, NULL, k, -100, 0.0, scale, grad,
                        k if grad != NULL else 0, NULL, b * brows, min(n, (b + 1) * brows), s,
                        &block_loss, &block_weight, &block_bad, NULL)
        loss += block_loss
        weight += block_weight
        if bad < 0 and block_bad >= 0:
            bad = block_bad
    scratch_free(s)
    return loss, weight, bad


cdef inline bint _plain_targets(object target, Py_ssize_t n) noexcept:
    """target is a 1-D native int64 ndarray of n >= 1 contiguous, aligned elements."""
    cdef cnp.ndarray t
    if type(target) is not np.ndarray:
        return False
    t = <cnp.ndarray> target
    return (cnp.PyArray_NDIM(t) == 1 and cnp.PyArray_TYPE(t) == cnp.NPY_INT64
            and cnp.PyArray_ISNOTSWAPPED(t) and cnp.PyArray_ISALIGNED(t)
            and cnp.PyArray_DIMS(t)[0] == n and n > 0
            and (n == 1 or cnp.PyArray_STRIDES(t)[0] == sizeof(int64_t)))


cdef inline Py_ssize_t _counted_targets(const int64_t *t, Py_ssize_t n,
                                        Py_ssize_t k) noexcept nogil:
    """How many targets are not ignored (-100), or -1 if one is out of range."""
    cdef Py_ssize_t r, count = 0
    for r in range(n):
        if t[r] != -100:
            if t[r] < 0 or t[r] >= k:
                return -1
            count += 1
    return count


def ce_index_fast(object logits, object target, bint as_array=False):
    """cross_entropy(logits, target) with every option at its default, or None.

    None unless logits is a small plain 2-D float array (see _plain_rows) and
    target a contiguous native int64 array of one index per row, all in range.
    as_array: the loss as a 0-d array instead of a NumPy scalar (for torch.from_numpy).
    """
    cdef const int64_t *t
    if not _fast_call(logits, target, &t):
        return None
    return _ce_index_pass(<cnp.ndarray> logits, t, 0.0, None, as_array)


def ce_index_grad_fast(object logits, object target, bint as_array=False):
    """cross_entropy(logits, target, return_grad=True) with every other option at its
    default: (loss, gradient), the gradient a new C-ordered array; or None, on the
    terms of ce_index_fast. As the general path, the targets are checked (and the
    mean's 1 / count formed) before the pass."""
    cdef cnp.ndarray x
    cdef const int64_t *t
    cdef Py_ssize_t count
    if not _fast_call(logits, target, &t):
        return None
    x = <cnp.ndarray> logits
    count = _counted_targets(t, cnp.PyArray_DIMS(x)[0], cnp.PyArray_DIMS(x)[1])
    if count < 0:
        return None
    grad = cnp.PyArray_SimpleNew(2, cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x))
    # inf for no counted target, as divide(1.0, 0)
    loss = _ce_index_pass(x, t, 1.0 / <double> count, grad, as_array)
    return None if loss is None else (loss, grad)


cdef inline bint _fast_call(object logits, object target, const int64_t **t) noexcept:
    """True if the fast path takes this call (see _plain_rows, _plain_targets), with
    the int64 targets in t[0]."""
    if not _plain_rows(logits, MIN_PARALLEL_WORK):
        return False
    if not _plain_targets(target, cnp.PyArray_DIMS(<cnp.ndarray> logits)[0]):
        return False
    t[0] = <const int64_t *> cnp.PyArray_DATA(<cnp.ndarray> target)
    return True


cdef object _ce_index_pass(cnp.ndarray x, const int64_t *t, double scale, object grad,
                           bint as_array):
    """The fast path's pass over x (and the gradient times scale into grad, a new
    array like x, unless None): the mean loss, or None where the general path must
    answer (a bad target, which it names; no memory, which it reports)."""
    cdef Py_ssize_t n = cnp.PyArray_DIMS(x)[0], k = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t stride = cnp.PyArray_STRIDES(x)[0] // cnp.PyArray_ITEMSIZE(x)
    cdef bint f64 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64
    cdef void *g = NULL if grad is None else cnp.PyArray_DATA(<cnp.ndarray> grad)
    cdef double loss, weight
    cdef Py_ssize_t bad
    with nogil:
        if f64:
            loss, weight, bad = _ce_index_serial(<const double *> cnp.PyArray_DATA(x), n, k,
                                                 stride, t, scale, <double *> g)
        else:
            loss, weight, bad = _ce_index_serial(<const float *> cnp.PyArray_DATA(x), n, k,
                                                 stride, t, scale, <float *> g)
    if bad != -1:
        return None
    return _mean(loss, weight, f64, as_array)


cdef void _softmax_serial(const floating *x, Py_ssize_t n, Py_ssize_t k, Py_ssize_t stride,
                          char *out, Py_ssize_t ostride, int mode, int *failed) noexcept nogil:
    cdef Py_ssize_t brows = _block_rows(n, k), b
    cdef Scratch *s = scratch_new(brows, k, floating is double)
    if s == NULL:
        failed[0] = 1
        return
    for b in range((n + brows - 1) // brows):
        _softmax_block(x, stride, k, out, ostride, sizeof(floating), mode, b * brows,
                       min(n, (b + 1) * brows), s)
    scratch_free(s)


def softmax_fast(object x, int mode):
    """logsumexp (mode 0), log_softmax (1) or softmax (2) along the last axis of a
    small plain 2-D float array (see _plain_rows), or None for any other input."""
    cdef cnp.ndarray a, out
    cdef Py_ssize_t n, k
    cdef int failed = 0
    if not _plain_rows(x, MIN_PARALLEL_WORK):
        return None
    a = <cnp.ndarray> x
    n = cnp.PyArray_DIMS(a)[0]
    k = cnp.PyArray_DIMS(a)[1]
    out = cnp.PyArray_SimpleNew(1 if mode == 0 else 2, cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a))
    if n == 0:
        return out
    with nogil:
        if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64:
            _softmax_serial(<const double *> cnp.PyArray_DATA(a), n, k,
                            cnp.PyArray_STRIDES(a)[0] // sizeof(double),
                            <char *> cnp.PyArray_DATA(out), k * sizeof(double), mode, &failed)
        else:
            _softmax_serial(<const float *> cnp.PyArray_DATA(a), n, k,
                            cnp.PyArray_STRIDES(a)[0] // sizeof(float),
                            <char *> cnp.PyArray_DATA(out), k * sizeof(float), mode, &failed)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")
    return out
