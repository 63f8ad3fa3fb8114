# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Binary cross-entropy kernels (element-wise, flat contiguous arrays).

Weights and pos_weight arrive either tiled by the Python layer to the block
length (a weight that repeats along leading axes: every block sees the same
arrays, no index arithmetic per element) or, with per_element, at full size.
Block sums are added in block order: results are bitwise identical for any
number of threads.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from cecore._rowmath cimport bce_logits, bce_logits_grad, bce_probs, cec_dispatch_init

# Elements per block when no weight forces another period.
BLOCK = 16384


def dispatch_init(int requested):
    return cec_dispatch_init(requested)


cdef inline const floating *_at(const floating *w, Py_ssize_t start,
                                bint per_element) noexcept nogil:
    """The weights of the block starting at element `start`."""
    if w == NULL or not per_element:
        return w
    return w + start


def bce_logits_loss(const floating[::1] logits, const floating[::1] target,
                    const floating[::1] pos_weight, const floating[::1] weight,
                    Py_ssize_t block, bint per_element, floating[::1] loss_out,
                    double scale, floating[::1] grad, int n_threads):
    """Sum of BCE-with-logits losses (written to loss_out if not empty).

    pos_weight/weight are empty, of length `block`, or of length n if
    per_element. If grad is not empty it receives the gradient of scale * (sum
    of the losses); it may alias logits.
    """
    cdef Py_ssize_t n = logits.shape[0]
    cdef Py_ssize_t nblocks = (n + block - 1) // block
    cdef double[::1] block_loss = np.zeros(nblocks)
    cdef const floating *pw = &pos_weight[0] if pos_weight.shape[0] > 0 else NULL
    cdef const floating *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef floating *out = &loss_out[0] if loss_out.shape[0] > 0 else NULL
    cdef floating *g = &grad[0] if grad.shape[0] > 0 else NULL
    cdef Py_ssize_t b, start, length
    if n == 0:
        return 0.0
    for b in prange(nblocks, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        start = b * block
        length = min(block, n - start)
        if g == NULL:
            block_loss[b] = bce_logits(&logits[start], &target[start],
                                       _at(pw, start, per_element), _at(w, start, per_element),
                                       length, out + start if out != NULL else NULL)
        else:
            block_loss[b] = bce_logits_grad(&logits[start], &target[start],
                                            _at(pw, start, per_element),
                                            _at(w, start, per_element), length,
                                            <floating> scale,
                                            out + start if out != NULL else NULL, g + start)
    return float(np.sum(block_loss))


def bce_probs_loss(const floating[::1] probs, const floating[::1] target,
                   const floating[::1] weight, Py_ssize_t block, bint per_element,
                   floating[::1] loss_out, int n_threads):
    """Sum of BCE losses of probabilities and the count of probs outside [0, 1]."""
    cdef Py_ssize_t n = probs.shape[0]
    cdef Py_ssize_t nblocks = (n + block - 1) // block
    cdef double[::1] block_loss = np.zeros(nblocks)
    cdef Py_ssize_t[::1] block_bad = np.zeros(nblocks, dtype=np.intp)
    cdef const floating *w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef floating *out = &loss_out[0] if loss_out.shape[0] > 0 else NULL
    cdef Py_ssize_t b, start
    if n == 0:
        return 0.0, 0
    for b in prange(nblocks, schedule="guided", nogil=True, num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        start = b * block
        block_loss[b] = bce_probs(&probs[start], &target[start], _at(w, start, per_element),
                                  min(block, n - start),
                                  out + start if out != NULL else NULL, &block_bad[b])
    return float(np.sum(block_loss)), int(np.sum(block_bad))
