# cython: language_level=3
"""Fused-type access to the SIMD row kernels of _rowmath.h.

Every kernel module cimports this file; each compiles the header once, and
calls ``cec_dispatch_init`` at import to select the ISA variant.

Logits come in four storage types (``logit_t``): float, double, and the 16-bit
``cec_bf16_t`` / ``cec_f16_t`` (structs holding the bits, so that nothing can
compute on them unconverted). Element values are read with ``load``; whole rows
go through the wrappers below, which take scalars as double and pointers to
the compute type (float, or double for double input) as ``void *``. Python
hands 16-bit arrays over as uint16 views (``storage_t``) plus a ``half`` code.
"""

from libc.stdint cimport uint16_t

cdef extern from "_rowmath.h" nogil:
    ctypedef Py_ssize_t cec_intp

    ctypedef struct cec_bf16_t:
        uint16_t bits
    ctypedef struct cec_f16_t:
        uint16_t bits

    ctypedef struct cec_ops_f32_t:
        float (*row_max)(const float *, cec_intp) noexcept nogil
        double (*row_sumexp)(const float *, cec_intp, float, cec_intp *) noexcept nogil
        double (*row_lse)(const float *, cec_intp, float *) noexcept nogil
        void (*rows_lse)(const float *, cec_intp, cec_intp, cec_intp, float *,
                         double *) noexcept nogil
        double (*row_wsum)(const double *, const float *, cec_intp, double,
                           double) noexcept nogil
        double (*row_tdot)(const float *, const double *, const float *, cec_intp, double,
                           double *) noexcept nogil
        void (*row_exp)(const float *, cec_intp, float, float, float *) noexcept nogil
        void (*row_sub)(const float *, cec_intp, double, double, float *) noexcept nogil
        void (*row_exp_f32)(const float *, cec_intp, float, float, float *) noexcept nogil
        void (*row_sub_f32)(const float *, cec_intp, double, double, float *) noexcept nogil
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
        double (*row_lse_softcap)(const float *, cec_intp, float, float, float *) noexcept nogil
        double (*row_wsum_softcap)(const double *, const float *, cec_intp, double, double,
                                   float, float) noexcept nogil
        double (*row_tdot_softcap)(const float *, const double *, const float *, cec_intp,
                                   double, float, float, double *) noexcept nogil
        void (*row_grad_softcap)(const float *, const float *, const double *, cec_intp, float,
                                 float, float, float, float, float, float *) noexcept nogil
        void (*col_lse)(const float *, cec_intp, cec_intp, cec_intp, float *, float *,
                        double *) noexcept nogil
        void (*col_wsum)(const float *, cec_intp, cec_intp, cec_intp, const double *,
                         const double *, double, double *) noexcept nogil
        void (*col_grad)(const float *, cec_intp, cec_intp, cec_intp, const float *,
                         const float *, const float *, const double *, float *,
                         cec_intp) noexcept nogil
        void (*col_sub)(const float *, cec_intp, cec_intp, cec_intp, const double *,
                        const double *, float *, cec_intp) noexcept nogil

    ctypedef struct cec_ops_f64_t:
        double (*row_max)(const double *, cec_intp) noexcept nogil
        double (*row_sumexp)(const double *, cec_intp, double, cec_intp *) noexcept nogil
        double (*row_lse)(const double *, cec_intp, double *) noexcept nogil
        void (*rows_lse)(const double *, cec_intp, cec_intp, cec_intp, double *,
                         double *) noexcept nogil
        double (*row_wsum)(const double *, const double *, cec_intp, double,
                           double) noexcept nogil
        double (*row_tdot)(const double *, const double *, const double *, cec_intp, double,
                           double *) noexcept nogil
        void (*row_exp)(const double *, cec_intp, double, double, double *) noexcept nogil
        void (*row_sub)(const double *, cec_intp, double, double, double *) noexcept nogil
        void (*row_exp_f32)(const double *, cec_intp, double, double, float *) noexcept nogil
        void (*row_sub_f32)(const double *, cec_intp, double, double, float *) noexcept nogil
        void (*row_grad)(const double *, const double *, const double *, cec_intp, double, double,
                         double, double, double *) noexcept nogil
        void (*block_lse)(const double *, cec_intp, cec_intp, cec_intp, double *, double *,
                          double *) noexcept nogil
        double (*bce_logits)(const double *, const double *, const double *, const double *,
                             cec_intp, double *) noexcept nogil
        double (*bce_probs)(const double *, const double *, const double *, cec_intp, double *,
                            cec_intp *) noexcept nogil
        double (*bce_logits_grad)(const double *, const double *, const double *, const double *,
                                  cec_intp, double, double *, double *) noexcept nogil
        double (*row_lse_softcap)(const double *, cec_intp, double, double, double *) noexcept nogil
        double (*row_wsum_softcap)(const double *, const double *, cec_intp, double, double,
                                   double, double) noexcept nogil
        double (*row_tdot_softcap)(const double *, const double *, const double *, cec_intp,
                                   double, double, double, double *) noexcept nogil
        void (*row_grad_softcap)(const double *, const double *, const double *, cec_intp, double,
                                 double, double, double, double, double, double *) noexcept nogil
        void (*col_lse)(const double *, cec_intp, cec_intp, cec_intp, double *, double *,
                        double *) noexcept nogil
        void (*col_wsum)(const double *, cec_intp, cec_intp, cec_intp, const double *,
                         const double *, double, double *) noexcept nogil
        void (*col_grad)(const double *, cec_intp, cec_intp, cec_intp, const double *,
                         const double *, const double *, const double *, double *,
                         cec_intp) noexcept nogil
        void (*col_sub)(const double *, cec_intp, cec_intp, cec_intp, const double *,
                        const double *, double *, cec_intp) noexcept nogil

    ctypedef struct cec_ops_bf16_t:
        float (*row_max)(const cec_bf16_t *, cec_intp) noexcept nogil
        double (*row_sumexp)(const cec_bf16_t *, cec_intp, float, cec_intp *) noexcept nogil
        double (*row_lse)(const cec_bf16_t *, cec_intp, float *) noexcept nogil
        void (*rows_lse)(const cec_bf16_t *, cec_intp, cec_intp, cec_intp, float *,
                         double *) noexcept nogil
        double (*row_wsum)(const double *, const cec_bf16_t *, cec_intp, double,
                           double) noexcept nogil
        double (*row_tdot)(const float *, const double *, const cec_bf16_t *, cec_intp, double,
                           double *) noexcept nogil
        void (*row_exp)(const cec_bf16_t *, cec_intp, float, float, cec_bf16_t *) noexcept nogil
        void (*row_sub)(const cec_bf16_t *, cec_intp, double, double, cec_bf16_t *) noexcept nogil
        void (*row_exp_f32)(const cec_bf16_t *, cec_intp, float, float, float *) noexcept nogil
        void (*row_sub_f32)(const cec_bf16_t *, cec_intp, double, double, float *) noexcept nogil
        void (*row_grad)(const cec_bf16_t *, const float *, const double *, cec_intp, float, float,
                         float, float, cec_bf16_t *) noexcept nogil
        void (*block_lse)(const cec_bf16_t *, cec_intp, cec_intp, cec_intp, float *, float *,
                          double *) noexcept nogil
        double (*bce_logits)(const cec_bf16_t *, const float *, const float *, const float *,
                             cec_intp, float *) noexcept nogil
        double (*bce_probs)(const cec_bf16_t *, const float *, const float *, cec_intp, float *,
                            cec_intp *) noexcept nogil
        double (*bce_logits_grad)(const cec_bf16_t *, const float *, const float *, const float *,
                                  cec_intp, float, float *, cec_bf16_t *) noexcept nogil
        double (*row_lse_softcap)(const cec_bf16_t *, cec_intp, float, float, float *) noexcept nogil
        double (*row_wsum_softcap)(const double *, const cec_bf16_t *, cec_intp, double, double,
                                   float, float) noexcept nogil
        double (*row_tdot_softcap)(const float *, const double *, const cec_bf16_t *, cec_intp,
                                   double, float, float, double *) noexcept nogil
        void (*row_grad_softcap)(const cec_bf16_t *, const float *, const double *, cec_intp, float,
                                 float, float, float, float, float, cec_bf16_t *) noexcept nogil
        void (*col_lse)(const cec_bf16_t *, cec_intp, cec_intp, cec_intp, float *, float *,
                        double *) noexcept nogil
        void (*col_wsum)(const cec_bf16_t *, cec_intp, cec_intp, cec_intp, const double *,
                         const double *, double, double *) noexcept nogil
        void (*col_grad)(const cec_bf16_t *, cec_intp, cec_intp, cec_intp, const float *,
                         const float *, const float *, const double *, cec_bf16_t *,
                         cec_intp) noexcept nogil
        void (*col_sub)(const cec_bf16_t *, cec_intp, cec_intp, cec_intp, const double *,
                        const double *, cec_bf16_t *, cec_intp) noexcept nogil

    ctypedef struct cec_ops_f16_t:
        float (*row_max)(const cec_f16_t *, cec_intp) noexcept nogil
        double (*row_sumexp)(const cec_f16_t *, cec_intp, float, cec_intp *) noexcept nogil
        double (*row_lse)(const cec_f16_t *, cec_intp, float *) noexcept nogil
        void (*rows_lse)(const cec_f16_t *, cec_intp, cec_intp, cec_intp, float *,
                         double *) noexcept nogil
        double (*row_wsum)(const double *, const cec_f16_t *, cec_intp, double,
                           double) noexcept nogil
        double (*row_tdot)(const float *, const double *, const cec_f16_t *, cec_intp, double,
                           double *) noexcept nogil
        void (*row_exp)(const cec_f16_t *, cec_intp, float, float, cec_f16_t *) noexcept nogil
        void (*row_sub)(const cec_f16_t *, cec_intp, double, double, cec_f16_t *) noexcept nogil
        void (*row_exp_f32)(const cec_f16_t *, cec_intp, float, float, float *) noexcept nogil
        void (*row_sub_f32)(const cec_f16_t *, cec_intp, double, double, float *) noexcept nogil
        void (*row_grad)(const cec_f16_t *, const float *, const double *, cec_intp, float, float,
                         float, float, cec_f16_t *) noexcept nogil
        void (*block_lse)(const cec_f16_t *, cec_intp, cec_intp, cec_intp, float *, float *,
                          double *) noexcept nogil
        double (*bce_logits)(const cec_f16_t *, const float *, const float *, const float *,
                             cec_intp, float *) noexcept nogil
        double (*bce_probs)(const cec_f16_t *, const float *, const float *, cec_intp, float *,
                            cec_intp *) noexcept nogil
        double (*bce_logits_grad)(const cec_f16_t *, const float *, const float *, const float *,
                                  cec_intp, float, float *, cec_f16_t *) noexcept nogil
        double (*row_lse_softcap)(const cec_f16_t *, cec_intp, float, float, float *) noexcept nogil
        double (*row_wsum_softcap)(const double *, const cec_f16_t *, cec_intp, double, double,
                                   float, float) noexcept nogil
        double (*row_tdot_softcap)(const float *, const double *, const cec_f16_t *, cec_intp,
                                   double, float, float, double *) noexcept nogil
        void (*row_grad_softcap)(const cec_f16_t *, const float *, const double *, cec_intp, float,
                                 float, float, float, float, float, cec_f16_t *) noexcept nogil
        void (*col_lse)(const cec_f16_t *, cec_intp, cec_intp, cec_intp, float *, float *,
                        double *) noexcept nogil
        void (*col_wsum)(const cec_f16_t *, cec_intp, cec_intp, cec_intp, const double *,
                         const double *, double, double *) noexcept nogil
        void (*col_grad)(const cec_f16_t *, cec_intp, cec_intp, cec_intp, const float *,
                         const float *, const float *, const double *, cec_f16_t *,
                         cec_intp) noexcept nogil
        void (*col_sub)(const cec_f16_t *, cec_intp, cec_intp, cec_intp, const double *,
                        const double *, cec_f16_t *, cec_intp) noexcept nogil

    cec_ops_f32_t cec_ops_f32
    cec_ops_f64_t cec_ops_f64
    cec_ops_bf16_t cec_ops_bf16
    cec_ops_f16_t cec_ops_f16
    int cec_simd_level
    int cec_simd_supported()
    int cec_dispatch_init(int requested)
    float cec_exp_f32(float)
    double cec_exp_f64(double)
    float cec_log_f32(float)
    float cec_log1p_f32(float)
    float cec_tanh_f32(float)
    float cec_tanh_grad_f32(float, float *)
    double cec_tanh_f64(double)
    double cec_tanh_grad_f64(double, double *)
    float cec_load_bf16(cec_bf16_t)
    float cec_load_f16(cec_f16_t)
    cec_bf16_t cec_store_bf16(float)
    cec_f16_t cec_store_f16(float)


# What a kernel's def function receives: 16-bit arrays as uint16 views.
ctypedef fused storage_t:
    float
    double
    uint16_t

# The type of a logit in memory, as the kernels' inner functions see it.
ctypedef fused logit_t:
    float
    double
    cec_bf16_t
    cec_f16_t

# `half` codes that say what a uint16 storage_t array holds.
cdef enum:
    HALF_NONE = 0
    HALF_BF16 = 1
    HALF_F16 = 2


cdef inline double load(const logit_t *x, Py_ssize_t i) noexcept nogil:
    """x[i] as a number (16-bit values converted exactly to float)."""
    if logit_t is float or logit_t is double:
        return x[i]
    elif logit_t is cec_bf16_t:
        return cec_load_bf16(x[i])
    else:
        return cec_load_f16(x[i])


cdef inline void store(logit_t *x, Py_ssize_t i, double v) noexcept nogil:
    """x[i] = v, rounded to x's type (through float for the 16-bit types)."""
    if logit_t is float:
        x[i] = <float> v
    elif logit_t is double:
        x[i] = v
    elif logit_t is cec_bf16_t:
        x[i] = cec_store_bf16(<float> v)
    else:
        x[i] = cec_store_f16(<float> v)


cdef inline bint is_f64(const logit_t *x) noexcept nogil:
    """True when logit_t computes in double (the compute type of the rest is float)."""
    return logit_t is double


cdef inline double row_max(const logit_t *x, Py_ssize_t n) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.row_max(x, n)
    elif logit_t is double:
        return cec_ops_f64.row_max(x, n)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_max(x, n)
    else:
        return cec_ops_f16.row_max(x, n)


cdef inline double row_lse(const logit_t *x, Py_ssize_t n, void *rowmax) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.row_lse(x, n, <float *> rowmax)
    elif logit_t is double:
        return cec_ops_f64.row_lse(x, n, <double *> rowmax)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_lse(x, n, <float *> rowmax)
    else:
        return cec_ops_f16.row_lse(x, n, <float *> rowmax)


cdef inline void rows_lse(const logit_t *x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t n,
                          void *rowmax, double *lse) noexcept nogil:
    if logit_t is float:
        cec_ops_f32.rows_lse(x, rows, stride, n, <float *> rowmax, lse)
    elif logit_t is double:
        cec_ops_f64.rows_lse(x, rows, stride, n, <double *> rowmax, lse)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.rows_lse(x, rows, stride, n, <float *> rowmax, lse)
    else:
        cec_ops_f16.rows_lse(x, rows, stride, n, <float *> rowmax, lse)


cdef inline double row_wsum(const double *w, const logit_t *x, Py_ssize_t n,
                            double shift, double c) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.row_wsum(w, x, n, shift, c)
    elif logit_t is double:
        return cec_ops_f64.row_wsum(w, x, n, shift, c)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_wsum(w, x, n, shift, c)
    else:
        return cec_ops_f16.row_wsum(w, x, n, shift, c)


cdef inline double row_tdot(const void *t, const double *w, const logit_t *x,
                            Py_ssize_t n, double shift, double *tw_sum) noexcept nogil:
    """t: probability targets in the compute type."""
    if logit_t is float:
        return cec_ops_f32.row_tdot(<const float *> t, w, x, n, shift, tw_sum)
    elif logit_t is double:
        return cec_ops_f64.row_tdot(<const double *> t, w, x, n, shift, tw_sum)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_tdot(<const float *> t, w, x, n, shift, tw_sum)
    else:
        return cec_ops_f16.row_tdot(<const float *> t, w, x, n, shift, tw_sum)


cdef inline void row_exp(const logit_t *x, Py_ssize_t n, double shift, double scale,
                         void *out, bint out_f32) noexcept nogil:
    """out = exp(x - shift) * scale in x's type, or in float32 if out_f32 (16-bit x)."""
    if logit_t is float:
        cec_ops_f32.row_exp(x, n, <float> shift, <float> scale, <float *> out)
    elif logit_t is double:
        cec_ops_f64.row_exp(x, n, shift, scale, <double *> out)
    elif logit_t is cec_bf16_t:
        if out_f32:
            cec_ops_bf16.row_exp_f32(x, n, <float> shift, <float> scale, <float *> out)
        else:
            cec_ops_bf16.row_exp(x, n, <float> shift, <float> scale, <cec_bf16_t *> out)
    else:
        if out_f32:
            cec_ops_f16.row_exp_f32(x, n, <float> shift, <float> scale, <float *> out)
        else:
            cec_ops_f16.row_exp(x, n, <float> shift, <float> scale, <cec_f16_t *> out)


cdef inline void row_sub(const logit_t *x, Py_ssize_t n, double shift, double logsum,
                         void *out, bint out_f32) noexcept nogil:
    """out = (x - shift) - logsum in x's type, or in float32 if out_f32 (16-bit x)."""
    if logit_t is float:
        cec_ops_f32.row_sub(x, n, shift, logsum, <float *> out)
    elif logit_t is double:
        cec_ops_f64.row_sub(x, n, shift, logsum, <double *> out)
    elif logit_t is cec_bf16_t:
        if out_f32:
            cec_ops_bf16.row_sub_f32(x, n, shift, logsum, <float *> out)
        else:
            cec_ops_bf16.row_sub(x, n, shift, logsum, <cec_bf16_t *> out)
    else:
        if out_f32:
            cec_ops_f16.row_sub_f32(x, n, shift, logsum, <float *> out)
        else:
            cec_ops_f16.row_sub(x, n, shift, logsum, <cec_f16_t *> out)


cdef inline void row_grad(const logit_t *x, const void *t, const double *w, Py_ssize_t n,
                          double shift, double a, double c1, double c0,
                          logit_t *out) noexcept nogil:
    """out = a exp(x - shift) - w (c1 t + c0), in x's type; t in the compute type."""
    if logit_t is float:
        cec_ops_f32.row_grad(x, <const float *> t, w, n, <float> shift, <float> a,
                             <float> c1, <float> c0, out)
    elif logit_t is double:
        cec_ops_f64.row_grad(x, <const double *> t, w, n, shift, a, c1, c0, out)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.row_grad(x, <const float *> t, w, n, <float> shift, <float> a,
                              <float> c1, <float> c0, out)
    else:
        cec_ops_f16.row_grad(x, <const float *> t, w, n, <float> shift, <float> a,
                             <float> c1, <float> c0, out)


cdef inline void block_lse(const logit_t *x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t k,
                           void *scratch, void *rowmax, double *lse) noexcept nogil:
    """scratch and rowmax in the compute type."""
    if logit_t is float:
        cec_ops_f32.block_lse(x, rows, stride, k, <float *> scratch, <float *> rowmax, lse)
    elif logit_t is double:
        cec_ops_f64.block_lse(x, rows, stride, k, <double *> scratch, <double *> rowmax, lse)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.block_lse(x, rows, stride, k, <float *> scratch, <float *> rowmax, lse)
    else:
        cec_ops_f16.block_lse(x, rows, stride, k, <float *> scratch, <float *> rowmax, lse)


cdef inline double bce_logits(const logit_t *x, const void *t, const void *pw,
                              const void *w, Py_ssize_t n, void *out) noexcept nogil:
    """t, pw, w and the per-element losses out in the compute type."""
    if logit_t is float:
        return cec_ops_f32.bce_logits(x, <const float *> t, <const float *> pw,
                                      <const float *> w, n, <float *> out)
    elif logit_t is double:
        return cec_ops_f64.bce_logits(x, <const double *> t, <const double *> pw,
                                      <const double *> w, n, <double *> out)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.bce_logits(x, <const float *> t, <const float *> pw,
                                       <const float *> w, n, <float *> out)
    else:
        return cec_ops_f16.bce_logits(x, <const float *> t, <const float *> pw,
                                      <const float *> w, n, <float *> out)


cdef inline double bce_probs(const logit_t *p, const void *t, const void *w,
                             Py_ssize_t n, void *out, Py_ssize_t *n_bad) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.bce_probs(p, <const float *> t, <const float *> w, n,
                                     <float *> out, n_bad)
    elif logit_t is double:
        return cec_ops_f64.bce_probs(p, <const double *> t, <const double *> w, n,
                                     <double *> out, n_bad)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.bce_probs(p, <const float *> t, <const float *> w, n,
                                      <float *> out, n_bad)
    else:
        return cec_ops_f16.bce_probs(p, <const float *> t, <const float *> w, n,
                                     <float *> out, n_bad)


cdef inline double bce_logits_grad(const logit_t *x, const void *t, const void *pw,
                                   const void *w, Py_ssize_t n, double scale,
                                   void *out, logit_t *grad) noexcept nogil:
    """As bce_logits; grad (which may alias x) in x's type."""
    if logit_t is float:
        return cec_ops_f32.bce_logits_grad(x, <const float *> t, <const float *> pw,
                                           <const float *> w, n, <float> scale,
                                           <float *> out, grad)
    elif logit_t is double:
        return cec_ops_f64.bce_logits_grad(x, <const double *> t, <const double *> pw,
                                           <const double *> w, n, scale, <double *> out, grad)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.bce_logits_grad(x, <const float *> t, <const float *> pw,
                                            <const float *> w, n, <float> scale,
                                            <float *> out, grad)
    else:
        return cec_ops_f16.bce_logits_grad(x, <const float *> t, <const float *> pw,
                                           <const float *> w, n, <float> scale,
                                           <float *> out, grad)


# ---- soft-capped logits, cap(x) = c tanh(x inv_c) (see _rowmath_impl.h) ----

cdef inline double softcap_of(const logit_t *x, double v, double c, double inv_c) noexcept nogil:
    """cap(v) as the row kernels compute it (in float, or double for double x)."""
    if logit_t is double:
        return c * cec_tanh_f64(v * inv_c)
    else:
        return <float> c * cec_tanh_f32(<float> v * <float> inv_c)


cdef inline double softcap_grad_of(const logit_t *x, double v, double c, double inv_c,
                                   double *capped) noexcept nogil:
    """cap'(v) = 1 - tanh(v inv_c)^2, and cap(v) in *capped."""
    cdef double td, d2
    cdef float tf, d
    if logit_t is double:
        d2 = cec_tanh_grad_f64(v * inv_c, &td)
        capped[0] = c * td
        return d2
    else:
        d = cec_tanh_grad_f32(<float> v * <float> inv_c, &tf)
        capped[0] = <float> c * tf
        return d


cdef inline double row_lse_softcap(const logit_t *x, Py_ssize_t n, double c, double inv_c,
                                   void *rowmax) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.row_lse_softcap(x, n, <float> c, <float> inv_c, <float *> rowmax)
    elif logit_t is double:
        return cec_ops_f64.row_lse_softcap(x, n, c, inv_c, <double *> rowmax)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_lse_softcap(x, n, <float> c, <float> inv_c, <float *> rowmax)
    else:
        return cec_ops_f16.row_lse_softcap(x, n, <float> c, <float> inv_c, <float *> rowmax)


cdef inline double row_wsum_softcap(const double *w, const logit_t *x, Py_ssize_t n,
                                    double shift, double cc, double c,
                                    double inv_c) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.row_wsum_softcap(w, x, n, shift, cc, <float> c, <float> inv_c)
    elif logit_t is double:
        return cec_ops_f64.row_wsum_softcap(w, x, n, shift, cc, c, inv_c)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_wsum_softcap(w, x, n, shift, cc, <float> c, <float> inv_c)
    else:
        return cec_ops_f16.row_wsum_softcap(w, x, n, shift, cc, <float> c, <float> inv_c)


cdef inline double row_tdot_softcap(const void *t, const double *w, const logit_t *x,
                                    Py_ssize_t n, double shift, double c, double inv_c,
                                    double *tw_sum) noexcept nogil:
    if logit_t is float:
        return cec_ops_f32.row_tdot_softcap(<const float *> t, w, x, n, shift, <float> c,
                                            <float> inv_c, tw_sum)
    elif logit_t is double:
        return cec_ops_f64.row_tdot_softcap(<const double *> t, w, x, n, shift, c, inv_c,
                                            tw_sum)
    elif logit_t is cec_bf16_t:
        return cec_ops_bf16.row_tdot_softcap(<const float *> t, w, x, n, shift, <float> c,
                                             <float> inv_c, tw_sum)
    else:
        return cec_ops_f16.row_tdot_softcap(<const float *> t, w, x, n, shift, <float> c,
                                            <float> inv_c, tw_sum)


cdef inline void row_grad_softcap(const logit_t *x, const void *t, const double *w, Py_ssize_t n,
                                  double shift, double a, double c1, double c0, double c,
                                  double inv_c, logit_t *out) noexcept nogil:
    """out = (a exp(cap(x) - shift) - w (c1 t + c0)) cap'(x), in x's type."""
    if logit_t is float:
        cec_ops_f32.row_grad_softcap(x, <const float *> t, w, n, <float> shift, <float> a,
                                     <float> c1, <float> c0, <float> c, <float> inv_c, out)
    elif logit_t is double:
        cec_ops_f64.row_grad_softcap(x, <const double *> t, w, n, shift, a, c1, c0, c, inv_c,
                                     out)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.row_grad_softcap(x, <const float *> t, w, n, <float> shift, <float> a,
                                      <float> c1, <float> c0, <float> c, <float> inv_c, out)
    else:
        cec_ops_f16.row_grad_softcap(x, <const float *> t, w, n, <float> shift, <float> a,
                                     <float> c1, <float> c0, <float> c, <float> inv_c, out)


# ---- column kernels: the class axis not last (see _colmath_impl.h) ----

cdef extern from "_rowmath.h" nogil:
    enum:
        CEC_COL_W
        CEC_COL_CHUNK


cdef inline void col_lse(const logit_t *x, Py_ssize_t k, Py_ssize_t cs, Py_ssize_t b,
                         void *buf, void *rowmax, double *logsum) noexcept nogil:
    """rowmax (CEC_COL_W) and buf (CEC_COL_CHUNK * (CEC_COL_W + 16)) in the compute type."""
    if logit_t is float:
        cec_ops_f32.col_lse(x, k, cs, b, <float *> buf, <float *> rowmax, logsum)
    elif logit_t is double:
        cec_ops_f64.col_lse(x, k, cs, b, <double *> buf, <double *> rowmax, logsum)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.col_lse(x, k, cs, b, <float *> buf, <float *> rowmax, logsum)
    else:
        cec_ops_f16.col_lse(x, k, cs, b, <float *> buf, <float *> rowmax, logsum)


cdef inline void col_wsum(const logit_t *x, Py_ssize_t k, Py_ssize_t cs, Py_ssize_t b,
                          const double *w, const double *shift, double c,
                          double *out) noexcept nogil:
    if logit_t is float:
        cec_ops_f32.col_wsum(x, k, cs, b, w, shift, c, out)
    elif logit_t is double:
        cec_ops_f64.col_wsum(x, k, cs, b, w, shift, c, out)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.col_wsum(x, k, cs, b, w, shift, c, out)
    else:
        cec_ops_f16.col_wsum(x, k, cs, b, w, shift, c, out)


cdef inline void col_grad(const logit_t *x, Py_ssize_t k, Py_ssize_t cs, Py_ssize_t b,
                          const void *shift, const void *a, const void *c0, const double *w,
                          logit_t *out, Py_ssize_t os) noexcept nogil:
    """shift, a, c0: b values each in the compute type."""
    if logit_t is float:
        cec_ops_f32.col_grad(x, k, cs, b, <const float *> shift, <const float *> a,
                             <const float *> c0, w, out, os)
    elif logit_t is double:
        cec_ops_f64.col_grad(x, k, cs, b, <const double *> shift, <const double *> a,
                             <const double *> c0, w, out, os)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.col_grad(x, k, cs, b, <const float *> shift, <const float *> a,
                              <const float *> c0, w, out, os)
    else:
        cec_ops_f16.col_grad(x, k, cs, b, <const float *> shift, <const float *> a,
                             <const float *> c0, w, out, os)


cdef inline void col_sub(const logit_t *x, Py_ssize_t k, Py_ssize_t cs, Py_ssize_t b,
                         const double *shift, const double *logsum, logit_t *out,
                         Py_ssize_t os) noexcept nogil:
    if logit_t is float:
        cec_ops_f32.col_sub(x, k, cs, b, shift, logsum, out, os)
    elif logit_t is double:
        cec_ops_f64.col_sub(x, k, cs, b, shift, logsum, out, os)
    elif logit_t is cec_bf16_t:
        cec_ops_bf16.col_sub(x, k, cs, b, shift, logsum, out, os)
    else:
        cec_ops_f16.col_sub(x, k, cs, b, shift, logsum, out, os)
