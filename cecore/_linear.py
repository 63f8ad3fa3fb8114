"""Cross-entropy of a linear layer's output without materialising the logits, and
its gradients with respect to the layer's input, weight and bias in the same pass."""

import math

import numpy as np

from cecore import _blas, _softmax_kernels
from cecore._losses import _check_softcap, _check_z_loss, _reduce, _result_dtype
from cecore._threads import resolve_n_threads, run_kernel
from cecore._validation import (
    as_float_array,
    as_logits_array,
    asarray,
    cast,
    check_bool,
    check_fraction,
    check_int,
    check_reduction,
    class_targets,
    compute_dtype,
    divide,
    is_bfloat16,
    kernel_array,
    raise_bad_target,
)
from cecore._validation import (
    class_weight as class_weight_array,
)

# The most extra memory a call takes with chunk_size=None (the outputs aside) ...
CHUNK_BYTES = 64 << 20
# ... and at most this fraction of what the N x V logits would take.
MEMORY_FRACTION = 8
# _Targets are checked and counted this many at a time (no N-sized temporaries).
_COUNT_BLOCK = 1 << 16


# Below this many logits (64 MB in float32) the default holds them all in one chunk:
# chunking would only cost time (each chunk streams the weight three times and adds
# to its gradient once).
SMALL_LOGITS = 1 << 24


def memory_budget(n, n_classes, itemsize):
    """Bytes of extra memory the default chunk size keeps to:
    ``min(CHUNK_BYTES, N V itemsize / MEMORY_FRACTION)``, and ``min(CHUNK_BYTES,
    N V itemsize / 0.75)`` (one chunk) when ``N V < SMALL_LOGITS``."""
    if n * n_classes < SMALL_LOGITS:
        return min(CHUNK_BYTES, -(-n * n_classes * itemsize * 4 // 3))
    return min(CHUNK_BYTES, n * n_classes * itemsize // MEMORY_FRACTION)


# Bytes of the default budget kept for small change (the bias gradient's partial sum
# is V itemsize more; Python objects, target slices).
SMALL_CHANGE = 64 << 10


def default_chunk_rows(n, n_classes, itemsize, row_extra=0):
    """Rows per chunk with ``chunk_size=None``: the logits buffer takes all of
    :func:`memory_budget` but the small change (``V itemsize + SMALL_CHANGE``),
    ``row_extra`` more bytes per row (scratch rows of width D, when they are
    needed), rounded so that every chunk has about the same number of rows.

    The weight gradient needs no buffer of its own: each chunk's product is added
    a slice of classes at a time through the rows of ``grad_hidden`` that are not
    yet written (see ``_NumpyProjection``). Few rows per chunk cost time: the
    product ``G W`` (inner dimension V) has little work per block of V for the
    BLAS's threads to share, so the chunk is as large as the budget allows."""
    if n == 0:
        return 1
    row_bytes = n_classes * itemsize + row_extra
    room = memory_budget(n, n_classes, itemsize) - n_classes * itemsize - SMALL_CHANGE
    if n * n_classes < SMALL_LOGITS:  # one chunk, if it fits in CHUNK_BYTES
        room = max(room, min(n * row_bytes, CHUNK_BYTES - n_classes * itemsize - SMALL_CHANGE))
    most = max(1, room // row_bytes)
    n_chunks = -(-n // most)
    return -(-n // n_chunks)


def _grad_dtype(given, dtype):
    """The dtype of an argument's gradient: the argument's own floating dtype
    (float16/bfloat16 included), the compute dtype for anything else."""
    if is_bfloat16(given.dtype) or (given.dtype.kind == "f" and given.dtype.itemsize <= 8):
        return np.dtype(given.dtype.newbyteorder("=")) if given.dtype.kind == "f" \
            else given.dtype
    return dtype


_NO_SAMPLE_WEIGHT = np.empty(0)


class _Targets:
    """Validated targets laid out as the logits' rows, and the options of the kernel.

    ``kind`` is "index" (``flat``: int32/int64 (N,)) or "prob" (``rows``: (N, V),
    converted to the compute dtype a chunk at a time). ``normaliser``: what
    ``"mean"`` divides by (sum of the counted targets' class weights, or N for
    probabilities), known before any product so that the gradient can be scaled
    in the chunk loop.
    """

    def __init__(self, kind, flat, rows, weight, ignore_index, label_smoothing, normaliser):
        self.kind, self.flat, self.rows, self.weight = kind, flat, rows, weight
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.normaliser = normaliser
        self.z_loss, self.softcap = 0.0, 0.0  # cross_entropy's (0.0: no cap)

    def training_options(self, z_loss, softcap):
        """Set the z-loss and soft cap (validated: see cecore._losses)."""
        self.z_loss, self.softcap = z_loss, softcap

    def loss(self, logits, first, last, scale, with_grad, per_row, n_threads, dtype):
        """Loss sum and weight sum of rows first..last; with_grad: logits become
        ``scale`` x the gradient of their losses, in place."""
        x, half = kernel_array(logits)
        grad = x if with_grad else x[:0, :0]
        options = ()
        if self.z_loss or self.softcap:
            options = (self.z_loss, self.softcap, _NO_SAMPLE_WEIGHT, per_row[:0])
        if self.kind == "index":
            kernel = (_softmax_kernels.ce_index_loss_opts if options
                      else _softmax_kernels.ce_index_loss)
            loss, weights, _ = run_kernel(
                kernel, n_threads, x.size, x, half, self.flat[first:last], self.weight,
                self.ignore_index, self.label_smoothing, scale, grad, per_row, *options)
            return loss, weights
        t = np.ascontiguousarray(cast(self.rows[first:last], dtype))
        kernel = _softmax_kernels.ce_prob_loss_opts if options else _softmax_kernels.ce_prob_loss
        loss = run_kernel(kernel, n_threads, x.size, x, half, t, self.weight,
                          self.label_smoothing, scale, grad, per_row, *options)
        return loss, float(last - first)


def _prepare_targets(target, batch_shape, n_classes, *, ignore_index, label_smoothing,
                    weight, shift, ignore_index_given=True):
    """Validate the targets (all of them, before any product) and lay them out.

    Returns ``(_Targets, positions)``: ``positions`` is the shape of the per-position
    losses (``batch_shape``, one step shorter along T with ``shift``).
    ``weight`` is the validated class weight array (empty for none).
    ``ignore_index_given``: False when the caller left ignore_index at its default
    (PyTorch's rule for probability targets: an explicit ignore_index is an error).
    """
    t = asarray(target, "target")
    if t.dtype.kind in "iu":
        if shift:
            flat, positions = _shifted_targets(t, batch_shape, n_classes, ignore_index)
        else:
            flat = class_targets(t, batch_shape, n_classes, ignore_index)
            positions = batch_shape
        normaliser, bad = _count_targets(flat, n_classes, ignore_index, weight)
        if bad >= 0:
            raise_bad_target(t, bad + 1 if shift else bad, n_classes, ignore_index)
        return _Targets("index", flat, None, weight, ignore_index, label_smoothing,
                       normaliser), positions
    if t.dtype.kind == "f" or is_bfloat16(t.dtype):
        if shift:
            raise ValueError("shift=True needs class-index targets (an integer dtype), got "
                             f"floating targets of dtype {t.dtype}")
        if ignore_index_given and ignore_index >= 0:
            raise ValueError(
                f"ignore_index is not supported for probability targets (got ignore_index="
                f"{ignore_index}; leave it at its default)")
        shape = tuple(batch_shape) + (n_classes,)
        if t.shape != shape:
            raise ValueError(f"probability target has shape {t.shape}, expected the logits' "
                             f"shape {shape} (class indices need an integer dtype)")
        if t.dtype.kind == "f" and (t.dtype.itemsize > 8 or not t.dtype.isnative):
            t = t.astype(np.float64)
        rows = t.reshape(math.prod(batch_shape), n_classes)
        return _Targets("prob", None, rows, weight, ignore_index, label_smoothing,
                       rows.shape[0]), batch_shape
    kind = "complex" if t.dtype.kind == "c" else str(t.dtype)
    raise TypeError(f"target must hold integer class indices or floating probabilities, "
                    f"got {kind}")


def _shifted_targets(t, batch_shape, n_classes, ignore_index):
    """_Targets of next-token prediction, as the rows of hidden (..., T, D) see them:
    row (s, j) predicts target (s, j + 1); the last row of each sequence is ignored
    (its logits are computed and discarded). A copy of the targets (N int64)."""
    if len(batch_shape) < 1:
        raise ValueError("shift=True needs hidden of shape (..., T, D), got a 1-D hidden")
    if t.shape != tuple(batch_shape):
        raise ValueError(f"target has shape {t.shape}, expected {tuple(batch_shape)} "
                         "(hidden's shape without its last axis)")
    if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        raise_bad_target(t, int(np.argmax(t.reshape(-1) > np.iinfo(np.int64).max)),
                         n_classes, ignore_index)
    n_steps = batch_shape[-1]
    if n_steps < 1:
        raise ValueError("shift=True needs at least one position (T >= 1), got T = 0")
    seqs = t.reshape(-1, n_steps)
    flat = np.empty(seqs.shape, np.int64)
    flat[:, :-1] = seqs[:, 1:]
    flat[:, -1] = ignore_index
    return flat.reshape(-1), tuple(batch_shape[:-1]) + (n_steps - 1,)


def _count_targets(flat, n_classes, ignore_index, weight):
    """(sum of the class weights of the counted targets, first out-of-range index or -1),
    in blocks (no temporary of the targets' size)."""
    total, bad = 0.0, -1
    for first in range(0, flat.size, _COUNT_BLOCK):
        block = flat[first:first + _COUNT_BLOCK]
        counted = block != ignore_index
        out = counted & ((block < 0) | (block >= n_classes))
        if out.any():
            return total, first + int(np.argmax(out))
        if weight.size:
            total += float(np.sum(weight[block[counted]]))
        else:
            total += int(np.count_nonzero(counted))
    return total, bad


class _NumpyProjection:
    """``rows @ weight.T + bias`` a chunk of rows at a time into one buffer (NumPy's
    BLAS), and the backward products of each chunk's logit gradients ``dz``:
    ``grad_weight += dz.T @ rows[chunk]``, ``grad_hidden[chunk] = dz @ weight``,
    ``grad_bias += sum(dz)``.

    NumPy's matmul cannot add to its output, so the weight gradient's product goes
    a slice of classes at a time through scratch rows of width D and is added from
    there. The scratch is ``grad_hidden[first:]``: the rows of this chunk and the
    later ones, not written yet (the weight product comes first, then the chunk's
    hidden gradient overwrites its rows), so it costs no memory; 16-bit hidden
    states use the float32 chunk of hidden gradient rows instead."""

    def __init__(self, rows, w, bias, dtype, chunk, wanted, grad_dtypes):
        n, d = rows.shape
        v = w.shape[0]
        self.rows, self.w, self.bias, self.dtype = rows, w, bias, dtype
        self.w_t = w.T  # a view: BLAS reads the transpose in place
        self.buffer = np.empty((min(chunk, max(n, 1)), v), dtype)
        self.want_h, self.want_w, self.want_b = wanted
        self.grad_dtypes = grad_dtypes
        self.h_chunk = None
        self.grad_hidden = self.grad_weight = self.grad_bias = None
        self.hidden_buffer = None
        if self.want_h:
            self.grad_hidden = np.zeros((n, d), grad_dtypes[0])
        if self.want_h and grad_dtypes[0] != dtype or self.want_w and not self.want_h:
            self.hidden_buffer = np.empty((self.buffer.shape[0], d), dtype)
        if self.want_w:
            self.grad_weight = np.zeros((v, d), dtype)
            self.first_product = True
        if self.want_b and bias is not None:
            self.grad_bias = np.zeros(v, np.float64)
            self.ones = np.ones(self.buffer.shape[0], dtype)
            self.bias_sum = np.empty(v, dtype)

    def logits(self, first, last):
        logits = self.buffer[:last - first]
        self.h_chunk = self.rows[first:last].astype(self.dtype, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # IEEE inf/NaN, as elsewhere
            np.matmul(self.h_chunk, self.w_t, out=logits)
            if self.bias is not None:
                logits += self.bias
        return logits

    def backward(self, first, last, dz):
        with np.errstate(over="ignore", invalid="ignore"):
            if self.want_w:  # first: it uses grad_hidden[first:] as scratch
                scratch = self.hidden_buffer if self.hidden_buffer is not None \
                    else self.grad_hidden[first:]
                self._add_weight_product(dz, self.h_chunk, scratch)
            if self.want_h:
                if self.hidden_buffer is None:
                    np.matmul(dz, self.w, out=self.grad_hidden[first:last])
                else:
                    part = self.hidden_buffer[:last - first]
                    np.matmul(dz, self.w, out=part)
                    self.grad_hidden[first:last] = part
            if self.grad_bias is not None:
                np.matmul(self.ones[:last - first], dz, out=self.bias_sum)
                self.grad_bias += self.bias_sum

    def _add_weight_product(self, dz, h, scratch):
        """grad_weight += dz.T @ h: the first chunk's product is written in place,
        the others' are added by NumPy's BLAS (cecore._blas) or, without it, go
        through ``scratch`` a slice of classes at a time."""
        if self.first_product:
            np.matmul(dz.T, h, out=self.grad_weight)
            self.first_product = False
            return
        if _blas.gemm_add(self.grad_weight, dz.T, h):  # BLAS beta = 1, when available
            return
        v, step = self.grad_weight.shape[0], scratch.shape[0]
        for v0 in range(0, v, step):
            v1 = min(v, v0 + step)
            part = scratch[:v1 - v0]
            np.matmul(dz[:, v0:v1].T, h, out=part)
            self.grad_weight[v0:v1] += part

    def gradients(self):
        gw = self.grad_weight
        if gw is not None:
            gw = cast(gw, self.grad_dtypes[1])
        gb = self.grad_bias
        if gb is not None:
            gb = cast(gb, self.grad_dtypes[2])
        return self.grad_hidden, gw, gb


def _chunk_loop(projection, targets, n, chunk, scale, with_grad, per_row, n_threads, dtype):
    """The loss sum and weight sum over all rows, chunk by chunk; with_grad: each
    chunk's logits become their gradient in place and go to the projection's
    backward products before the next chunk overwrites them."""
    total = weight_sum = 0.0
    no_per_row = per_row[:0]
    for first in range(0, n, chunk):
        last = min(n, first + chunk)
        logits = projection.logits(first, last)
        loss, weights = targets.loss(logits, first, last, scale, with_grad,
                                     per_row[first:last] if per_row.size else no_per_row,
                                     n_threads, dtype)
        total += loss
        weight_sum += weights
        if with_grad:
            projection.backward(first, last, logits)
    return total, weight_sum


# Bytes per row that the class-chunked forward pass keeps beside its logits buffer
# (the running log-sum-exp and target logit in float64, a chunk's log-sum-exp and
# the masks and indices of the targets that fall in it).
_CLASS_CHUNK_ROW_BYTES = 64


def class_chunk_width(n, n_classes, itemsize):
    """Classes per chunk of the forward pass that chunks over classes (see
    :func:`_class_chunk_loss`): the logits buffer ``N x width`` takes all of
    :func:`memory_budget` but the small change and ``_CLASS_CHUNK_ROW_BYTES``
    per row, evened out over the chunks; 0 when that leaves no room."""
    room = memory_budget(n, n_classes, itemsize) - SMALL_CHANGE - n * _CLASS_CHUNK_ROW_BYTES
    most = room // (n * itemsize) if n else 0
    if most < 1:
        return 0
    n_chunks = -(-n_classes // most)
    return -(-n_classes // n_chunks)


def _class_chunk_loss(rows, w, bias, targets, width, per_row, n_threads, dtype):
    """Loss sum and weight sum of class-index targets (no label smoothing, no cap), with
    the logits projected ``width`` classes at a time over all rows.

    Each chunk ``z = rows @ w[v0:v1].T (+ bias[v0:v1])`` gives every row a partial
    log-sum-exp, merged into a running float64 one (``logaddexp``), and the target
    logits of the rows whose target falls in the chunk. Then, per counted row,
    ``loss = w_y (lse - z_y) + z_loss lse**2``, as cross_entropy's. Chunking over
    classes rather than rows lets the BLAS pack each slice of the weight once,
    where row chunks make every product pack the whole weight again (measured at
    4,096 x 1,024 -> 32,000: within 1% of one full product, row chunks 8% slower).
    """
    n, v = rows.shape[0], w.shape[0]
    y = targets.flat
    counted = y != targets.ignore_index
    lse = np.full(n, -np.inf)
    target_logit = np.zeros(n)
    chunk_lse = np.empty((n, 1), compute_dtype(dtype))
    buffer = np.empty(n * width, dtype)
    for v0 in range(0, v, width):
        v1 = min(v, v0 + width)
        z = buffer[:n * (v1 - v0)].reshape(n, v1 - v0)
        with np.errstate(over="ignore", invalid="ignore"):  # IEEE inf/NaN, as elsewhere
            np.matmul(rows, w[v0:v1].T, out=z)
            if bias is not None:
                z += bias[v0:v1]
            run_kernel(_softmax_kernels.softmax_rows, n_threads, z.size, *kernel_array(z),
                       chunk_lse, 0)
            np.logaddexp(lse, chunk_lse[:, 0], out=lse)
        here = np.flatnonzero(counted & (y >= v0) & (y < v1))
        target_logit[here] = z[here, y[here] - v0]
    del z, buffer  # the per-row arithmetic below takes N-sized temporaries
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in the row kernels
        loss = lse - target_logit
        if targets.weight.size:
            loss *= targets.weight[np.where(counted, y, 0)]
        if targets.z_loss:
            loss += targets.z_loss * lse * lse
    loss[~counted] = 0.0
    if per_row.size:
        per_row[...] = loss
    return float(np.sum(loss)), targets.normaliser


def _check_chunk_size(chunk_size, n, n_classes, itemsize, row_extra=0):
    if chunk_size is None:
        return default_chunk_rows(n, n_classes, itemsize, row_extra)
    if check_int(chunk_size, "chunk_size") < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return max(1, min(int(chunk_size), n))


def linear_cross_entropy(hidden, weight, target, *, bias=None, ignore_index=-100,
                         label_smoothing=0.0, class_weight=None, z_loss=0.0, softcap=None,
                         shift=False, reduction="mean", return_grad=False, chunk_size=None,
                         n_threads=None):
    r"""Cross-entropy of ``hidden @ weight.T + bias`` without materialising the logits.

    Equal to ``cross_entropy(hidden @ weight.T + bias, target, ...)`` (PyTorch's
    ``linear_cross_entropy``), but the ``N x V`` logits are never held at
    once: ``chunk_size`` rows at a time are projected with NumPy's matrix
    product (BLAS) into one reused buffer, and the fused cross-entropy kernel
    reduces that block to its loss sum before the next block overwrites it.
    With :math:`z_i = W h_i + b`, class weights :math:`w` (1 by default),
    :math:`\epsilon` = ``label_smoothing``, :math:`V` classes and counted
    positions :math:`P` (``target != ignore_index``):

    .. math:: \ell_i = (1 - \epsilon) w_{y_i} (\mathrm{lse}(z_i) - z_{i y_i})
              + \frac{\epsilon}{V} \sum_v w_v (\mathrm{lse}(z_i) - z_{iv}), \qquad
              \mathrm{mean} = \sum_{i \in P} \ell_i \Big/ \sum_{i \in P} w_{y_i}

    (probability targets as in :func:`cross_entropy`; their mean divides by N).

    With ``return_grad=True`` the gradients come from the same chunk loop: each
    chunk's logits are projected once, the fused kernel turns them into their
    gradient :math:`G = \partial \mathrm{loss} / \partial z` in place
    (``s (c\,\mathrm{softmax}(z) - \text{smoothed target weights})``, ``s`` =
    1 / the mean's denominator, counted from the targets before the loop), and
    three products finish the chunk:

    .. math:: \nabla_h = G W, \qquad \nabla_W \mathrel{+}= G^\top h, \qquad
              \nabla_b \mathrel{+}= \textstyle\sum_i G_i

    Without ``return_grad``, with ``chunk_size=None`` and fewer rows than
    classes (class-index targets, no ``label_smoothing``, no ``softcap``,
    ``hidden`` in the compute dtype), the chunks are slices of classes over all
    rows instead, within the same memory bound: each row's log-sum-exp is merged
    over the slices (``logaddexp`` in float64). The BLAS then packs each slice of
    the weight once, where row chunks make every product pack all of it again.

    Memory: with ``chunk_size=None`` the peak extra memory (everything but the
    inputs and the returned arrays) is at most ``min(64 MB, N V itemsize / 8)``
    when ``N V >= 2**24`` — 1/8 of what the logits would take, and never more
    than 64 MB (smaller shapes take one chunk of all the logits, at most 64 MB:
    there chunking would only cost time). The logits buffer takes all of that
    bound but ``V itemsize`` + 64 kB (``chunk_size`` rows, evened out over the
    chunks): the weight gradient needs no buffer of its own, its product is added
    a slice of classes at a time through the rows of ``grad_hidden`` not written
    yet. Large chunks matter for speed: the product :math:`G W` has inner
    dimension V, and with few rows the BLAS's threads have little work between
    their synchronisations. Hidden states of another dtype than the computation's
    (16-bit ones: float32) take two more chunks of rows of width D from the same
    bound (the converted rows and their gradient); targets other than contiguous
    int32/int64 add a converted copy.

    Parameters
    ----------
    hidden : array_like of shape (..., D)
        Inputs of the layer (``N`` = the product of the leading dimensions).
    weight : array_like of shape (V, D)
        The layer's weight, one row per class (as ``torch.nn.Linear.weight``).
    target : array_like
        Class indices (integer dtype) in ``[0, V)`` or ``ignore_index``, of
        ``hidden``'s shape without its last axis; or class probabilities
        (floating, shape ``(..., V)``).
    bias : array_like of shape (V,), optional
    ignore_index : int, default -100
        Class-index target that is not counted (with probability targets a
        value >= 0 raises ValueError, as in :func:`cross_entropy`).
    label_smoothing : float in [0, 1], default 0
    class_weight : array_like of shape (V,), optional
        Per-class weights (``weight=`` of :func:`cross_entropy`).
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse(z)**2`` per counted position (PaLM), as
        :func:`cross_entropy`'s ``z_loss``; fused into the chunk's kernel.
    softcap : float > 0, optional
        Replaces the logits by ``softcap * tanh(z / softcap)`` before
        everything else (Gemma 2), as :func:`cross_entropy`'s ``softcap``; the
        gradients include the tanh's derivative.
    shift : bool, default False
        Next-token prediction: ``hidden`` ``(..., T, D)`` and ``target``
        ``(..., T)``; the logits of position ``t < T - 1`` are scored against
        target ``t + 1``. ``hidden`` is not copied (the last position of each
        sequence is projected with the others and discarded, 1/T extra
        products); ``"none"`` returns ``(..., T - 1)``; ``grad_hidden`` has
        ``hidden``'s full shape, 0 at the last position.
    reduction : {"mean", "sum", "none"}, default "mean"
    return_grad : bool, default False
        Also return the gradients of the loss (of the sum of the losses for
        ``"none"``) with respect to ``hidden``, ``weight`` and ``bias``.
    chunk_size : int, optional
        Rows per block; default: the memory rule above.
    n_threads : int, optional
        OpenMP threads of the cross-entropy kernel; default 1. The matrix
        products run on NumPy's BLAS threads, which spin-wait on the other
        cores for a while after each product, so a parallel kernel between
        two products would only contend with them (measured, 8 blocks of
        524 x 32,000: 33 ms of kernel time on one thread, 99 ms on two).

    Returns
    -------
    loss : numpy.float64 or numpy.float32, or numpy.ndarray for ``"none"``
        float64 when ``hidden``, ``weight`` or ``bias`` is float64 (they are
        computed in their common dtype), float32 otherwise; ``"none"`` has
        the target positions' shape.
    grad_hidden, grad_weight, grad_bias : numpy.ndarray
        Only with ``return_grad=True``: ``(loss, grad_hidden, grad_weight,
        grad_bias)``, each of its argument's shape and floating dtype
        (``grad_bias`` is None without a bias).

    Raises
    ------
    TypeError
        Non-numeric or complex data, a non-bool ``shift``/``return_grad``, a
        non-number option.
    ValueError
        Shapes that do not match (naming the argument), a target out of range
        (checked before any product is computed), a bad ``reduction``,
        ``label_smoothing`` outside [0, 1], negative/NaN/inf ``z_loss``,
        ``softcap`` <= 0, ``chunk_size < 1``.

    Examples
    --------
    >>> import numpy as np, cecore
    >>> rng = np.random.default_rng(0)
    >>> h = rng.standard_normal((6, 4)); w = rng.standard_normal((10, 4))
    >>> y = np.array([1, 2, 3, 4, 5, -100])
    >>> loss = cecore.linear_cross_entropy(h, w, y, chunk_size=2)
    >>> bool(np.isclose(loss, cecore.cross_entropy(h @ w.T, y)))
    True
    >>> loss, gh, gw, gb = cecore.linear_cross_entropy(h, w, y, return_grad=True)
    >>> gh.shape, gw.shape, gb is None
    ((6, 4), (10, 4), True)
    """
    # 16-bit hidden states are converted a chunk at a time, the weight once (BLAS
    # multiplies float32/float64)
    h_given = asarray(hidden, "hidden")
    h, _ = as_logits_array(h_given, "hidden")
    w_given = asarray(weight, "weight")
    w, _ = as_float_array(w_given, "weight")
    if h.ndim == 0:
        raise ValueError("hidden must have at least one dimension (the features)")
    if w.ndim != 2 or w.shape[1] != h.shape[-1]:
        raise ValueError(f"weight must have shape (V, {h.shape[-1]}) to match hidden's last "
                         f"axis, got {w.shape}")
    n_classes = w.shape[0]
    if n_classes == 0:
        raise ValueError("weight has zero rows (classes)")
    dtype = np.result_type(compute_dtype(h.dtype), w.dtype)
    b_given = None
    if bias is not None:
        b_given = asarray(bias, "bias")
        bias, _ = as_float_array(b_given, "bias")
        if bias.shape != (n_classes,):
            raise ValueError(f"bias must have shape ({n_classes},) (one per row of weight), "
                             f"got {bias.shape}")
        dtype = np.result_type(dtype, bias.dtype)
        bias = bias.astype(dtype, copy=False)
    reduction = check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    label_smoothing = check_fraction(label_smoothing, "label_smoothing")
    cw = class_weight_array(class_weight, n_classes, "class_weight")
    z_loss = _check_z_loss(z_loss)
    softcap = _check_softcap(softcap, dtype)
    shift = check_bool(shift, "shift")
    return_grad = check_bool(return_grad, "return_grad")
    targets, positions = _prepare_targets(
        target, h.shape[:-1], n_classes, ignore_index=ignore_index,
        label_smoothing=label_smoothing, weight=cw, shift=shift)
    # not reshape(-1, D): NumPy cannot infer the row count when D = 0
    n = math.prod(h.shape[:-1])
    rows = h.reshape(n, h.shape[-1])
    # rows of another dtype are converted a chunk at a time; 16-bit ones also get
    # their hidden gradient a chunk at a time in the compute dtype (_NumpyProjection)
    converted = rows.dtype != dtype
    row_extra = (converted + (converted and return_grad)) * h.shape[-1] * dtype.itemsize
    chunk = _check_chunk_size(chunk_size, n, n_classes, dtype.itemsize, row_extra)
    if n_threads is None:
        n_threads = 1  # the BLAS's threads hold the other cores (see the docstring)
    resolve_n_threads(n_threads, chunk * n_classes)  # validated before the first product
    targets.training_options(z_loss, softcap)
    scale = 1.0
    if return_grad and reduction == "mean":
        scale = divide(1.0, targets.normaliser)
    grad_dtypes = (_grad_dtype(h_given, dtype), _grad_dtype(w_given, dtype),
                   _grad_dtype(b_given, dtype) if b_given is not None else None)
    w = w.astype(dtype, copy=False)
    result_dtype = _result_dtype(np.empty(0, dtype))
    per_row = np.empty(n if reduction == "none" else 0, result_dtype)
    # fewer rows than classes and more than one chunk: the forward pass chunks over
    # classes (see _class_chunk_loss), where its options allow
    width = 0
    if (not return_grad and chunk_size is None and chunk < n < n_classes
            and targets.kind == "index" and not label_smoothing and not softcap
            and rows.dtype == dtype):
        width = class_chunk_width(n, n_classes, dtype.itemsize)
    if width:
        total, weight_sum = _class_chunk_loss(rows, w, bias, targets, width, per_row,
                                              n_threads, dtype)
    else:
        projection = _NumpyProjection(rows, w, bias, dtype, chunk, (return_grad,) * 3,
                                      grad_dtypes)
        total, weight_sum = _chunk_loop(projection, targets, n, chunk, scale, return_grad,
                                       per_row, n_threads, dtype)
    if reduction == "none" and shift:
        steps = h.shape[-2]
        per_row = per_row.reshape(-1, steps)[:, :-1].copy()
    loss = _reduce(total, weight_sum, per_row, reduction, positions, result_dtype)
    if not return_grad:
        return loss
    grad_hidden, grad_weight, grad_bias = projection.gradients()
    return loss, grad_hidden.reshape(h.shape), grad_weight, grad_bias
