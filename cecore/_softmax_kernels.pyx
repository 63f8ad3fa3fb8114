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

from cecore._rowmath cimport (HALF_BF16, cec_bf16_t, cec_dispatch_init, cec_f16_t,
                              cec_simd_level, is_f64, load, logit_t, row_exp, row_grad,
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


cdef inline object _mean(double total, double weight, bint f64):
    """total / weight with IEEE semantics (cecore._validation.divide), as the
    result's NumPy scalar; beyond float32's range a float32 result is +-inf."""
    cdef double value
    if weight != 0.0:
        value = total / weight
    elif total == 0.0 or total != total:
        value = NAN
    else:
        value = INFINITY if (total > 0) == (weight >= 0 and not signbit(weight)) else -INFINITY
    if f64:
        return np.float64(value)
    return np.float32(<float> value)


cdef (double, double, Py_ssize_t) _ce_index_serial(const floating *x, Py_ssize_t n,
                                                    Py_ssize_t k, Py_ssize_t stride,
                                                    const int64_t *target) noexcept nogil:
    """Sum of losses, of weights and the first bad row of _ce_index with default options
    and one thread (blocks added in the same order). Returns bad row -2 when out of memory."""
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
        _ce_index_block(x, stride, k, target, NULL, k, -100, 0.0, 0.0, NULL, 0, NULL,
                        b * brows, min(n, (b + 1) * brows), s, &block_loss, &block_weight,
                        &block_bad, NULL)
        loss += block_loss
        weight += block_weight
        if bad < 0 and block_bad >= 0:
            bad = block_bad
    scratch_free(s)
    return loss, weight, bad


def ce_index_fast(object logits, object target):
    """cross_entropy(logits, target) with every option at its default, or None.

    None unless logits is a small plain 2-D float array (see _plain_rows) and
    target a contiguous native int64 array of one index per row, all in range.
    """
    cdef cnp.ndarray x, t
    cdef Py_ssize_t n, k, stride
    cdef double loss, weight
    cdef Py_ssize_t bad
    cdef bint f64
    if not _plain_rows(logits, MIN_PARALLEL_WORK) or type(target) is not np.ndarray:
        return None
    x = <cnp.ndarray> logits
    t = <cnp.ndarray> target
    n = cnp.PyArray_DIMS(x)[0]
    k = cnp.PyArray_DIMS(x)[1]
    if (cnp.PyArray_NDIM(t) != 1 or cnp.PyArray_TYPE(t) != cnp.NPY_INT64
            or not cnp.PyArray_ISNOTSWAPPED(t) or not cnp.PyArray_ISALIGNED(t)
            or cnp.PyArray_DIMS(t)[0] != n or n == 0
            or (n > 1 and cnp.PyArray_STRIDES(t)[0] != sizeof(int64_t))):
        return None
    f64 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64
    stride = cnp.PyArray_STRIDES(x)[0] // cnp.PyArray_ITEMSIZE(x)
    with nogil:
        if f64:
            loss, weight, bad = _ce_index_serial(<const double *> cnp.PyArray_DATA(x), n, k,
                                                 stride, <const int64_t *> cnp.PyArray_DATA(t))
        else:
            loss, weight, bad = _ce_index_serial(<const float *> cnp.PyArray_DATA(x), n, k,
                                                 stride, <const int64_t *> cnp.PyArray_DATA(t))
    if bad != -1:
        return None  # the general path names the bad target (or reports no memory)
    return _mean(loss, weight, f64)


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
    if mode == 0:
        out = np.empty(n, dtype=x.dtype)
    else:
        out = np.empty((n, k), dtype=x.dtype)
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
