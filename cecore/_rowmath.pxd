# cython: language_level=3
"""Fused-type access to the SIMD row kernels of _rowmath.h.

Every kernel module cimports this file; each compiles the header once, and
calls ``cec_dispatch_init`` at import to select the ISA variant.
"""

from cython cimport floating

cdef extern from "_rowmath.h" nogil:
    ctypedef Py_ssize_t cec_intp

    ctypedef struct cec_ops_f32_t:
        float (*row_max)(const float *, cec_intp) noexcept nogil
        double (*row_sumexp)(const float *, cec_intp, float, cec_intp *) noexcept nogil
        double (*row_lse)(const float *, cec_intp, float *) noexcept nogil
        double (*row_wsum)(const double *, const float *, cec_intp, double,
                           double) noexcept nogil
        double (*row_tdot)(const float *, const double *, const float *, cec_intp, double,
                           double *) noexcept nogil
        void (*row_exp)(const float *, cec_intp, float, float, float *) noexcept nogil
        void (*row_sub)(const float *, cec_intp, double, double, float *) noexcept nogil
        void (*row_grad)(const float *, const float *, const double *, cec_intp, float, float,
                         float, float, float *) noexcept nogil
        void (*block_lse)(const float *, cec_intp, cec_intp, cec_intp, float *, float *,
                          double *) noexcept nogil
        double (*bce_logits)(const float *, const float *, const float *, const float *,
                             cec_intp, float *) noexcept nogil
        double (*bce_probs)(const float *, const float *, const float *, cec_intp, float *,
                            cec_intp *) noexcept nogil
        double (*bce_logits_grad)(const float *, const float *, const float *, const float *,
                                  cec_intp, float, float *, float *) noexcept nogil

    ctypedef struct cec_ops_f64_t:
        double (*row_max)(const double *, cec_intp) noexcept nogil
        double (*row_sumexp)(const double *, cec_intp, double, cec_intp *) noexcept nogil
        double (*row_lse)(const double *, cec_intp, double *) noexcept nogil
        double (*row_wsum)(const double *, const double *, cec_intp, double,
                           double) noexcept nogil
        double (*row_tdot)(const double *, const double *, const double *, cec_intp, double,
                           double *) noexcept nogil
        void (*row_exp)(const double *, cec_intp, double, double, double *) noexcept nogil
        void (*row_sub)(const double *, cec_intp, double, double, double *) noexcept nogil
        void (*row_grad)(const double *, const double *, const double *, cec_intp, double,
                         double, double, double, double *) noexcept nogil
        void (*block_lse)(const double *, cec_intp, cec_intp, cec_intp, double *, double *,
                          double *) noexcept nogil
        double (*bce_logits)(const double *, const double *, const double *, const double *,
                             cec_intp, double *) noexcept nogil
        double (*bce_probs)(const double *, const double *, const double *, cec_intp,
                            double *, cec_intp *) noexcept nogil
        double (*bce_logits_grad)(const double *, const double *, const double *,
                                  const double *, cec_intp, double, double *,
                                  double *) noexcept nogil

    cec_ops_f32_t cec_ops_f32
    cec_ops_f64_t cec_ops_f64
    int cec_simd_level
    int cec_simd_supported()
    int cec_dispatch_init(int requested)
    float cec_exp_f32(float)
    double cec_exp_f64(double)
    float cec_log_f32(float)
    float cec_log1p_f32(float)


cdef inline floating row_max(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return cec_ops_f32.row_max(x, n)
    else:
        return cec_ops_f64.row_max(x, n)


cdef inline double row_lse(const floating *x, Py_ssize_t n, floating *rowmax) noexcept nogil:
    if floating is float:
        return cec_ops_f32.row_lse(x, n, rowmax)
    else:
        return cec_ops_f64.row_lse(x, n, rowmax)


cdef inline double row_wsum(const double *w, const floating *x, Py_ssize_t n,
                            double shift, double c) noexcept nogil:
    if floating is float:
        return cec_ops_f32.row_wsum(w, x, n, shift, c)
    else:
        return cec_ops_f64.row_wsum(w, x, n, shift, c)


cdef inline double row_tdot(const floating *t, const double *w, const floating *x,
                            Py_ssize_t n, double shift, double *tw_sum) noexcept nogil:
    if floating is float:
        return cec_ops_f32.row_tdot(t, w, x, n, shift, tw_sum)
    else:
        return cec_ops_f64.row_tdot(t, w, x, n, shift, tw_sum)


cdef inline void row_exp(const floating *x, Py_ssize_t n, floating shift, floating scale,
                         floating *out) noexcept nogil:
    if floating is float:
        cec_ops_f32.row_exp(x, n, shift, scale, out)
    else:
        cec_ops_f64.row_exp(x, n, shift, scale, out)


cdef inline void row_sub(const floating *x, Py_ssize_t n, double shift, double logsum,
                         floating *out) noexcept nogil:
    if floating is float:
        cec_ops_f32.row_sub(x, n, shift, logsum, out)
    else:
        cec_ops_f64.row_sub(x, n, shift, logsum, out)


cdef inline void row_grad(const floating *x, const floating *t, const double *w, Py_ssize_t n,
                          floating shift, floating a, floating c1, floating c0,
                          floating *out) noexcept nogil:
    if floating is float:
        cec_ops_f32.row_grad(x, t, w, n, shift, a, c1, c0, out)
    else:
        cec_ops_f64.row_grad(x, t, w, n, shift, a, c1, c0, out)


cdef inline void block_lse(const floating *x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t k,
                           floating *scratch, floating *rowmax, double *lse) noexcept nogil:
    if floating is float:
        cec_ops_f32.block_lse(x, rows, stride, k, scratch, rowmax, lse)
    else:
        cec_ops_f64.block_lse(x, rows, stride, k, scratch, rowmax, lse)


cdef inline double bce_logits(const floating *x, const floating *t, const floating *pw,
                              const floating *w, Py_ssize_t n, floating *out) noexcept nogil:
    if floating is float:
        return cec_ops_f32.bce_logits(x, t, pw, w, n, out)
    else:
        return cec_ops_f64.bce_logits(x, t, pw, w, n, out)


cdef inline double bce_probs(const floating *p, const floating *t, const floating *w,
                             Py_ssize_t n, floating *out, Py_ssize_t *n_bad) noexcept nogil:
    if floating is float:
        return cec_ops_f32.bce_probs(p, t, w, n, out, n_bad)
    else:
        return cec_ops_f64.bce_probs(p, t, w, n, out, n_bad)


cdef inline double bce_logits_grad(const floating *x, const floating *t, const floating *pw,
                                   const floating *w, Py_ssize_t n, floating scale,
                                   floating *out, floating *grad) noexcept nogil:
    if floating is float:
        return cec_ops_f32.bce_logits_grad(x, t, pw, w, n, scale, out, grad)
    else:
        return cec_ops_f64.bce_logits_grad(x, t, pw, w, n, scale, out, grad)
