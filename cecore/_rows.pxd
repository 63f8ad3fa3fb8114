# cython: language_level=3
"""Row machinery shared by the kernel modules (_softmax_kernels, _token_kernels).

Per-thread scratch space, the log-sum-exp of a block of rows (split as shift +
logsum, see row_lse in _rowmath_impl.h) and the class-index cross-entropy of
one row. Inline, so each module compiles its own copy and calls stay free.
"""

from libc.math cimport INFINITY, NAN
from libc.stdlib cimport free, malloc

from cecore._rowmath cimport block_lse, load, logit_t, row_wsum, rows_lse

# Rows of at most this many classes go through block_lse (several rows at once).
cdef enum:
    SMALL_K = 32


cdef struct Scratch:
    # in the compute type: float, or double for float64 logits
    void *packed     # SMALL_K path: at least 16 rows' worth of elements
    void *rowmax     # rows elements
    double *logsum   # rows doubles
    bint f64         # the compute type is double


cdef inline void scratch_free(Scratch *s) noexcept nogil:
    if s != NULL:
        free(s.packed)
        free(s.rowmax)
        free(s.logsum)
        free(s)


cdef inline Scratch *scratch_new(Py_ssize_t rows, Py_ssize_t k, bint f64) noexcept nogil:
    """Per-thread work space for blocks of up to `rows` rows, or NULL if out of memory.

    f64: the logits compute in double (float64 input); else in float.
    """
    cdef Scratch *s = <Scratch *> malloc(sizeof(Scratch))
    cdef Py_ssize_t itemsize = sizeof(double) if f64 else sizeof(float)
    if s == NULL:
        return NULL
    s.f64 = f64
    # short rows: block_lse pads the last rows of a block to a group of 16
    s.packed = malloc((max(rows, 16) * k if k <= SMALL_K else 1) * itemsize)
    s.rowmax = malloc(rows * itemsize)
    s.logsum = <double *> malloc(rows * sizeof(double))
    if s.packed == NULL or s.rowmax == NULL or s.logsum == NULL:
        scratch_free(s)
        return NULL
    return s


cdef inline double scratch_rowmax(const Scratch *s, Py_ssize_t r) noexcept nogil:
    """The maximum of row r of the last block, as a double."""
    return (<double *> s.rowmax)[r] if s.f64 else (<float *> s.rowmax)[r]


cdef inline void lse_rows(const logit_t *x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t k,
                          Scratch *s) noexcept nogil:
    """Row maxima and log-sum-exps of rows r < rows into s, split as (see row_lse)

        log sum_j exp(x[r, j]) = shift_of(rowmax[r]) + logsum[r]

    Callers form lse - x[r, j] as logsum[r] + (shift - x[r, j]): rounding lse
    first would lose logsum next to a huge shift.
    """
    if k <= SMALL_K:
        block_lse(x, rows, stride, k, s.packed, s.rowmax, s.logsum)
        return
    rows_lse(x, rows, stride, k, s.rowmax, s.logsum)


cdef inline double total_weight(const double *w, Py_ssize_t k) noexcept nogil:
    """sum_j w[j], or k without weights (W in the label-smoothing terms)."""
    cdef double total = 0.0
    cdef Py_ssize_t j
    if w == NULL:
        return k
    for j in range(k):
        total += w[j]
    return total


cdef inline double shift_of(double rowmax) noexcept nogil:
    """The shift of a row: its maximum, or 0 when that is -inf (no finite entry)."""
    return 0.0 if rowmax == -INFINITY else rowmax


cdef inline double logsum_of_probs(double logsum, double shift) noexcept nogil:
    """logsum for forming log-probabilities lse - x: NaN when the shift is +inf.

    A row holding +inf has lse = +inf but no log-probabilities (inf - inf);
    log_softmax, softmax and the losses are NaN for it, as in PyTorch.
    """
    return NAN if shift == INFINITY else logsum


cdef inline double class_index_loss(const logit_t *xr, Py_ssize_t k, Py_ssize_t y,
                                    double logsum, double shift, double wy,
                                    const double *weight, double weight_total,
                                    double smoothing) noexcept nogil:
    """Cross-entropy of one row with target y (PyTorch semantics):

        (1 - eps) w[y] (lse - x[y]) + eps / k sum_j w[j] (lse - x[j])

    with lse - x[j] = logsum + (shift - x[j]) and logsum from logsum_of_probs.
    """
    cdef double loss = (1.0 - smoothing) * wy * (logsum + (shift - load(xr, y)))
    if smoothing != 0.0:
        # as eps (logsum W / k - mean_j w[j] (x[j] - shift)): no overflow near the dtype's max
        loss = loss + smoothing * (logsum * (weight_total / k)
                                   - row_wsum(weight, xr, k, shift, 1.0 / k))
    return loss
