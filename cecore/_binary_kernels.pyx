# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Binary cross-entropy kernels (element-wise, flat contiguous arrays).

Weights and pos_weight arrive either tiled by the Python layer to the block
length (a weight that repeats along leading axes: every block sees the same
arrays, no index arithmetic per element) or, with per_element, at full size.
Inputs are float32, float64 or 16-bit (uint16 views with a `half` code, see
_rowmath.pxd; read as they are, computed in float32); targets, weights and
per-element losses are in the compute type (float32, float64 for float64),
gradients in the input's type. Block sums are added in block order: results
are bitwise identical for any number of threads.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint16_t

from cecore._rowmath cimport (HALF_BF16, bce_logits, bce_logits_grad, bce_probs, cec_bf16_t,
                              cec_dispatch_init, cec_f16_t, logit_t, storage_t)

# Elements per block when no weight forces another period.
BLOCK = 16384


def dispatch_init(int requested):
    return cec_dispatch_init(requested)


cdef inline const char *_at(const char *w, Py_ssize_t start, Py_ssize_t itemsize,
                            bint per_element) noexcept nogil:
    """The weights of the block starting at element `start`."""
    if w == NULL or not per_element:
        return w
    return w + start * itemsize


cdef inline char *_offset(char *p, Py_ssize_t start, Py_ssize_t itemsize) noexcept nogil:
    return p + start * itemsize if p != NULL else NULL


cdef double _bce_logits(const logit_t *x, Py_ssize_t n, const char *t, const char *pw,
                        const char *w, Py_ssize_t itemsize, Py_ssize_t block, bint per_element,
                        char *out, double scale, logit_t *g, int n_threads):
    cdef Py_ssize_t nblocks = (n + block - 1) // block
    cdef double[::1] block_loss = np.zeros(nblocks)
    cdef Py_ssize_t b, start, length
    for b in prange(nblocks, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        start = b * block
        length = min(block, n - start)
        if g == NULL:
            block_loss[b] = bce_logits(x + start, t + start * itemsize,
                                       _at(pw, start, itemsize, per_element),
                                       _at(w, start, itemsize, per_element), length,
                                       _offset(out, start, itemsize))
        else:
            block_loss[b] = bce_logits_grad(x + start, t + start * itemsize,
                                            _at(pw, start, itemsize, per_element),
                                            _at(w, start, itemsize, per_element), length,
                                            scale, _offset(out, start, itemsize), g + start)
    return float(np.sum(block_loss))


def bce_logits_loss(const storage_t[::1] logits, int half, const floating[::1] target,
                    const floating[::1] pos_weight, const floating[::1] weight,
                    Py_ssize_t block, bint per_element, floating[::1] loss_out,
                    double scale, storage_t[::1] grad, int n_threads):
    """Sum of BCE-with-logits losses (written to loss_out if not empty).

    target, pos_weight, weight and loss_out are in the compute type;
    pos_weight/weight are empty, of length `block`, or of length n if
    per_element. If grad (the logits' type) is not empty it receives the
    gradient of scale * (sum of the losses); it may alias logits.
    """
    cdef Py_ssize_t n = logits.shape[0]
    cdef const char *pw = <const char *> &pos_weight[0] if pos_weight.shape[0] > 0 else NULL
    cdef const char *w = <const char *> &weight[0] if weight.shape[0] > 0 else NULL
    cdef char *out = <char *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    cdef storage_t *g = &grad[0] if grad.shape[0] > 0 else NULL
    if n == 0:
        return 0.0
    cdef const char *t = <const char *> &target[0]
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _bce_logits(<const cec_bf16_t *> &logits[0], n, t, pw, w, sizeof(floating),
                               block, per_element, out, scale, <cec_bf16_t *> g, n_threads)
        return _bce_logits(<const cec_f16_t *> &logits[0], n, t, pw, w, sizeof(floating),
                           block, per_element, out, scale, <cec_f16_t *> g, n_threads)
    return _bce_logits(&logits[0], n, t, pw, w, sizeof(floating), block, per_element, out,
                       scale, g, n_threads)


cdef tuple _bce_probs(const logit_t *p, Py_ssize_t n, const char *t, const char *w,
                      Py_ssize_t itemsize, Py_ssize_t block, bint per_element, char *out,
                      int n_threads):
    cdef Py_ssize_t nblocks = (n + block - 1) // block
    cdef double[::1] block_loss = np.zeros(nblocks)
    cdef Py_ssize_t[::1] block_bad = np.zeros(nblocks, dtype=np.intp)
    cdef Py_ssize_t b, start
    for b in prange(nblocks, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        start = b * block
        block_loss[b] = bce_probs(p + start, t + start * itemsize,
                                  _at(w, start, itemsize, per_element), min(block, n - start),
                                  _offset(out, start, itemsize), &block_bad[b])
    return float(np.sum(block_loss)), int(np.sum(block_bad))


def bce_probs_loss(const storage_t[::1] probs, int half, const floating[::1] target,
                   const floating[::1] weight, Py_ssize_t block, bint per_element,
                   floating[::1] loss_out, int n_threads):
    """Sum of BCE losses of probabilities and the count of probs outside [0, 1]."""
    cdef Py_ssize_t n = probs.shape[0]
    cdef const char *w = <const char *> &weight[0] if weight.shape[0] > 0 else NULL
    cdef char *out = <char *> &loss_out[0] if loss_out.shape[0] > 0 else NULL
    if n == 0:
        return 0.0, 0
    cdef const char *t = <const char *> &target[0]
    if storage_t is uint16_t:
        if half == HALF_BF16:
            return _bce_probs(<const cec_bf16_t *> &probs[0], n, t, w, sizeof(floating), block,
                              per_element, out, n_threads)
        return _bce_probs(<const cec_f16_t *> &probs[0], n, t, w, sizeof(floating), block,
                          per_element, out, n_threads)
    return _bce_probs(&probs[0], n, t, w, sizeof(floating), block, per_element, out, n_threads)
