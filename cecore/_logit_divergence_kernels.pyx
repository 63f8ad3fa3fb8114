# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Divergences between two sets of logits, row pair by row pair (see _logitdivmath.h).

Both inputs arrive as (S, L, V) views, viewed as bytes (uint8, the last axis
V * itemsize contiguous) with their element type given by a code (F32, F64,
BF16, F16) and free sequence and position strides, so that the shifted views
x[:, :-1] need no copy. They may differ in type: a row is computed in float64
if either input is float64, else in float32; a row whose type is not the
compute type is converted into a per-thread buffer of one row (exactly, for
the 16-bit types: as the token kernels stage theirs), read from L1/L2 by the
row passes. The gradient is written in the type of x, directly when that is
the compute type, else through a per-thread buffer.

Per position r of the flattened S * L: counted unless target[r] < 0 (target
empty: every position counts); its divergence goes to loss[r] (0 when not
counted). Results per row do not depend on the thread count.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport NAN, fabs, nextafterf
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cecore._rowmath cimport (cec_bf16_t, cec_dispatch_init, cec_f16_t, cec_load_bf16,
                              cec_load_f16, cec_store_bf16, cec_store_f16)


cdef extern from "_logitdivmath.h" nogil:
    ctypedef struct cec_ld_row_t:
        double mx
        double my
        double lp
        double lr
        double sp
        double sr
        double c
        double loss
        double klpm
        Py_ssize_t atx
        Py_ssize_t aty
        int bad
    void cec_ld_row_f32(const float *x, const float *y, Py_ssize_t n, float s, int mode,
                        double beta, cec_ld_row_t *o)
    void cec_ld_row_f64(const double *x, const double *y, Py_ssize_t n, double s, int mode,
                        double beta, cec_ld_row_t *o)
    void cec_ld_grad_f32(const float *x, const float *y, Py_ssize_t n, float s, int mode,
                         double beta, double scale, const cec_ld_row_t *o, float *g)
    void cec_ld_grad_f64(const double *x, const double *y, Py_ssize_t n, double s, int mode,
                         double beta, double scale, const cec_ld_row_t *o, double *g)
    Py_ssize_t cec_ld_argmax_f32(const float *x, Py_ssize_t n, double m, Py_ssize_t at,
                                 int bad)
    Py_ssize_t cec_ld_argmax_f64(const double *x, Py_ssize_t n, double m, Py_ssize_t at,
                                 int bad)


# element type codes (cecore/_logit_divergence.py passes them)
cdef enum:
    F32 = 0
    F64 = 1
    BF16 = 2
    F16 = 3

# modes (CEC_LD_* in _logitdivmath.h)
KL, REVERSE_KL, JSD = 0, 1, 2


def dispatch_init(int requested):
    """Select the SIMD variant (-1: best supported). Returns the level in use."""
    return cec_dispatch_init(requested)


cdef inline Py_ssize_t _itemsize(int code) noexcept nogil:
    return 4 if code == F32 else (8 if code == F64 else 2)


cdef struct Args:
    const char *x
    Py_ssize_t x_seq, x_pos        # byte strides
    int x_code
    const char *y
    Py_ssize_t y_seq, y_pos
    int y_code
    char *g                         # NULL: no gradient
    Py_ssize_t g_seq, g_pos
    const int64_t *t                # NULL: every position counts
    Py_ssize_t seq_len, k
    int mode
    double s                        # 1 / temperature
    double beta
    double scale                    # of the gradient (1 / count for "mean")
    double *loss
    double *logp                    # comparison outputs (NULL: not asked for)
    double *logr
    uint8_t *top


cdef inline const floating *_row_in(floating dummy, const char *p, int code, Py_ssize_t k,
                                    floating *buf) noexcept nogil:
    """The row at p in the compute type: p itself, or converted into buf."""
    cdef Py_ssize_t j
    if floating is float:
        if code == F32:
            return <const float *> p
    else:
        if code == F64:
            return <const double *> p
    if code == F32:
        for j in range(k):
            buf[j] = (<const float *> p)[j]
    elif code == F64:  # not reached: float64 input computes in float64
        for j in range(k):
            buf[j] = <floating> (<const double *> p)[j]
    elif code == BF16:
        for j in range(k):
            buf[j] = cec_load_bf16((<const cec_bf16_t *> p)[j])
    else:
        for j in range(k):
            buf[j] = cec_load_f16((<const cec_f16_t *> p)[j])
    return buf


cdef inline float _to_odd(double d) noexcept nogil:
    """d rounded to float with round-to-odd: a second rounding (to a 16-bit type, to
    nearest) then gives d correctly rounded, as one rounding would."""
    cdef float f = <float> d
    cdef uint32_t bits
    if <double> f == d or f != f:
        return f
    if fabs(<double> f) > fabs(d):
        f = nextafterf(f, 0.0)
    memcpy(&bits, &f, 4)
    bits = bits | 1
    memcpy(&f, &bits, 4)
    return f


cdef inline void _store(const floating *g, char *out, int code, Py_ssize_t k) noexcept nogil:
    """Gradient row g (compute type) into out (type code), rounded once."""
    cdef Py_ssize_t j
    if floating is double and code == BF16:
        for j in range(k):
            (<cec_bf16_t *> out)[j] = cec_store_bf16(_to_odd(g[j]))
        return
    if floating is double and code == F16:
        for j in range(k):
            (<cec_f16_t *> out)[j] = cec_store_f16(_to_odd(g[j]))
        return
    if code == F32:
        for j in range(k):
            (<float *> out)[j] = <float> g[j]
    elif code == F64:
        for j in range(k):
            (<double *> out)[j] = g[j]
    elif code == BF16:
        for j in range(k):
            (<cec_bf16_t *> out)[j] = cec_store_bf16(<float> g[j])
    else:
        for j in range(k):
            (<cec_f16_t *> out)[j] = cec_store_f16(<float> g[j])


cdef void _row(floating dummy, const Args *a, Py_ssize_t r, floating *bx, floating *by,
               floating *bg) noexcept nogil:
    cdef Py_ssize_t seq = r // a.seq_len
    cdef Py_ssize_t pos = r - seq * a.seq_len
    cdef Py_ssize_t k = a.k, y_t
    cdef const floating *xr
    cdef const floating *yr
    cdef floating *gr
    cdef char *gout = NULL
    cdef cec_ld_row_t o
    cdef int x_bad, y_bad
    cdef bint direct
    if a.g != NULL:
        gout = a.g + seq * a.g_seq + pos * a.g_pos
    if a.t != NULL and a.t[r] < 0:
        a.loss[r] = 0.0
        if a.logp != NULL:
            a.logp[r] = 0.0
            a.logr[r] = 0.0
            a.top[r] = 0
        if gout != NULL:
            memset(gout, 0, k * _itemsize(a.x_code))
        return
    xr = _row_in(dummy, a.x + seq * a.x_seq + pos * a.x_pos, a.x_code, k, bx)
    yr = _row_in(dummy, a.y + seq * a.y_seq + pos * a.y_pos, a.y_code, k, by)
    if floating is float:
        cec_ld_row_f32(xr, yr, k, <float> a.s, a.mode, a.beta, &o)
    else:
        cec_ld_row_f64(xr, yr, k, a.s, a.mode, a.beta, &o)
    a.loss[r] = o.loss
    if a.logp != NULL:
        y_t = a.t[r]
        x_bad = o.bad & 1
        y_bad = o.bad & 2
        a.logp[r] = NAN if x_bad else ((<double> xr[y_t]) - o.mx) * a.s - o.lp
        a.logr[r] = NAN if y_bad else ((<double> yr[y_t]) - o.my) * a.s - o.lr
        if floating is float:
            a.top[r] = (cec_ld_argmax_f32(xr, k, o.mx, o.atx, x_bad)
                        == cec_ld_argmax_f32(yr, k, o.my, o.aty, y_bad))
        else:
            a.top[r] = (cec_ld_argmax_f64(xr, k, o.mx, o.atx, x_bad)
                        == cec_ld_argmax_f64(yr, k, o.my, o.aty, y_bad))
    if gout == NULL:
        return
    if floating is float:
        direct = a.x_code == F32
    else:
        direct = a.x_code == F64
    gr = <floating *> gout if direct else bg
    if floating is float:
        cec_ld_grad_f32(xr, yr, k, <float> a.s, a.mode, a.beta, a.scale, &o, gr)
    else:
        cec_ld_grad_f64(xr, yr, k, a.s, a.mode, a.beta, a.scale, &o, gr)
    if not direct:
        _store(gr, gout, a.x_code, k)


cdef int _run(floating dummy, const Args *a, Py_ssize_t n, int n_threads) noexcept nogil:
    """All rows, in parallel; per-thread buffers for rows not in the compute type.
    Returns 1 if a buffer could not be allocated."""
    cdef Py_ssize_t r, k = a.k
    cdef floating *bx = NULL
    cdef floating *by = NULL
    cdef floating *bg = NULL
    cdef bint need_x, need_y, need_g
    cdef int failed = 0
    cdef int *failed_flag = &failed
    if floating is float:
        need_x = a.x_code != F32
        need_y = a.y_code != F32
    else:
        need_x = a.x_code != F64
        need_y = a.y_code != F64
    need_g = need_x and a.g != NULL
    with parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
        bx = <floating *> malloc(k * sizeof(floating)) if need_x else NULL
        by = <floating *> malloc(k * sizeof(floating)) if need_y else NULL
        bg = <floating *> malloc(k * sizeof(floating)) if need_g else NULL
        if (need_x and bx == NULL) or (need_y and by == NULL) or (need_g and bg == NULL):
            failed_flag[0] = 1
        else:
            for r in prange(n, schedule="guided"):
                _row(dummy, a, r, bx, by, bg)
        free(bx)
        free(by)
        free(bg)
    return failed


def divergence(const uint8_t[:, :, :] x, int x_code, const uint8_t[:, :, :] y, int y_code,
               const int64_t[::1] target, int mode, double temperature, double beta,
               bint want_grad, double scale, uint8_t[:, :, :] grad, double[::1] loss,
               bint compare, double[::1] logp, double[::1] logr, uint8_t[::1] same_top,
               int n_threads):
    """Per-position divergence of logits x and y, (S, L, V) byte views, into loss.

    mode: KL (KL(r || p)), REVERSE_KL (KL(p || r)) or JSD (generalised, beta in
    (0, 1)). target: flat over the S * L positions, negative = not counted; empty:
    all count. With want_grad, grad (a byte view of x's type and shape) receives
    the gradient with respect to x times scale (0 at positions not counted). With
    compare (mode KL, target given), logp / logr receive log p / log r of the
    target class and same_top whether the two argmaxes agree.
    """
    cdef Py_ssize_t ns = x.shape[0], nl = x.shape[1]
    cdef Py_ssize_t n = ns * nl
    cdef Args a
    cdef int failed
    if n == 0:
        return
    a.k = x.shape[2] // _itemsize(x_code)
    a.x = <const char *> &x[0, 0, 0]
    a.x_seq = x.strides[0]
    a.x_pos = x.strides[1]
    a.x_code = x_code
    a.y = <const char *> &y[0, 0, 0]
    a.y_seq = y.strides[0]
    a.y_pos = y.strides[1]
    a.y_code = y_code
    a.g = NULL
    a.g_seq = a.g_pos = 0
    if want_grad:
        a.g = <char *> &grad[0, 0, 0]
        a.g_seq = grad.strides[0]
        a.g_pos = grad.strides[1]
    a.t = &target[0] if target.shape[0] > 0 else NULL
    a.seq_len = nl
    a.mode = mode
    a.s = 1.0 / temperature
    a.beta = beta
    a.scale = scale
    a.loss = &loss[0]
    a.logp = a.logr = NULL
    a.top = NULL
    if compare:
        a.logp = &logp[0]
        a.logr = &logr[0]
        a.top = &same_top[0]
    with nogil:
        if x_code == F64 or y_code == F64:
            failed = _run(<double> 0, &a, n, n_threads)
        else:
            failed = _run(<float> 0, &a, n, n_threads)
    if failed:
        raise MemoryError("cecore: could not allocate kernel scratch space")
