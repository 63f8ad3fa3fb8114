# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Entropy, cross-entropy and KL divergence of distributions, row by row.

With weights w (a base measure; 1 when absent), for each row:
  ENTROPY:        -sum_j w_j p_j log p_j
  CROSS_ENTROPY:  -sum_j w_j p_j log q_j
  KL:              sum_j w_j p_j log(p_j / q_j)
with 0 log 0 = 0 and p_j log(p_j / 0) = +inf for p_j > 0. Accumulated in double.
p and q are float32, float64 or 16-bit (uint16 views with a `half` code, see
_rowmath.pxd), of one type; results in the compute type (float32, float64).
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs, isfinite, log
from libc.stdint cimport uint16_t

from cecore._rowmath cimport HALF_BF16, cec_bf16_t, cec_f16_t, load, logit_t, storage_t

cdef enum:
    ENTROPY = 0
    CROSS_ENTROPY = 1
    KL = 2


cdef inline double _term(double p, double q, int kind) noexcept nogil:
    """One summand without the weight and sign: p log p, p log q or p log(p / q)."""
    cdef double ratio
    if p == 0.0:
        # 0 log 0 = 0 (and 0 log q = 0 for any q >= 0); NaN still propagates via q
        return 0.0 if q == q else q
    if kind == ENTROPY:
        return p * log(p)
    if kind == CROSS_ENTROPY:
        return p * log(q)
    ratio = p / q
    # log(p / q) is the more accurate form unless the ratio over/underflows
    if ratio > 0.0 and isfinite(ratio):
        return p * log(ratio)
    return p * (log(p) - log(q))


cdef void _rows(const logit_t *p, Py_ssize_t pstride, const logit_t *q, Py_ssize_t qstride,
                const double *w, Py_ssize_t k, int kind, Py_ssize_t r,
                void *out, Py_ssize_t *n_negative) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0.0, c = 0.0, total, pj, qj, term
    cdef Py_ssize_t neg = 0
    cdef const logit_t *pr = p + r * pstride
    cdef const logit_t *qr = q + r * qstride
    for j in range(k):
        pj = load(pr, j)
        qj = load(qr, j) if kind != ENTROPY else pj
        neg += (pj < 0.0) | (qj < 0.0)
        term = _term(pj, qj, kind)
        if w != NULL:
            if w[j] == 0.0:
                continue  # a point of measure zero does not count, even where its term is inf
            term = w[j] * term
        # Neumaier's compensated sum: a few ulps for any K (the log per term costs more)
        total = s + term
        if fabs(s) >= fabs(term):
            c += (s - total) + term
        else:
            c += (term - total) + s
        s = total
    # the compensation means nothing once the sum is infinite or NaN
    s = s + c if isfinite(s) else s
    # 0.0 - s, not -s: an empty sum is +0, not -0
    s = s if kind == KL else 0.0 - s
    if logit_t is double:
        (<double *> out)[r] = s
    else:
        (<float *> out)[r] = <float> s
    n_negative[0] = neg


cdef Py_ssize_t _divergence(const logit_t *p, Py_ssize_t n, Py_ssize_t k, Py_ssize_t pstride,
                            const logit_t *q, Py_ssize_t qstride, const double *w, int kind,
                            void *out, int n_threads):
    cdef Py_ssize_t[::1] negatives = np.zeros(n, dtype=np.intp)
    cdef Py_ssize_t r
    for r in prange(n, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _rows(p, pstride, q, qstride, w, k, kind, r, out, &negatives[r])
    return int(np.sum(negatives))


def divergence_rows(const storage_t[:, :] p, const storage_t[:, :] q, int half,
                    const double[::1] measure, int kind, floating[::1] out, int n_threads):
    """Per-row entropy (kind 0, q ignored), cross-entropy (1) or KL divergence (2).

    out is in the compute type. Returns the number of negative entries met in p and q.
    """
    cdef Py_ssize_t n = p.shape[0], k = p.shape[1], r
    cdef Py_ssize_t pstride = p.strides[0] // sizeof(storage_t)
    cdef Py_ssize_t qstride = q.strides[0] // sizeof(storage_t)
    cdef const double *w = &measure[0] if measure.shape[0] > 0 else NULL
    if n == 0:
        return 0
    if k == 0:
        for r in range(n):
            out[r] = 0
        return 0
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _divergence(<const cec_bf16_t *> &p[0, 0], n, k, pstride,
                               <const cec_bf16_t *> &q[0, 0], qstride, w, kind, &out[0],
                               n_threads)
        return _divergence(<const cec_f16_t *> &p[0, 0], n, k, pstride,
                           <const cec_f16_t *> &q[0, 0], qstride, w, kind, &out[0], n_threads)
    return _divergence(&p[0, 0], n, k, pstride, &q[0, 0], qstride, w, kind, &out[0], n_threads)
