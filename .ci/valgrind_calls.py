"""A few calls of every public function, for .ci/valgrind.sh (memcheck).

Small inputs on both dtypes, every kernel path (K <= 32 blocks and longer
rows, 16-row blocks and their remainder, per-element and periodic BCE
weights), gradients and out=, strided inputs; the same calls on bfloat16 and
float16 logits (the 16-bit load paths, and the gradients and softmax outputs
stored back to 16 bits), the error paths that raise after a kernel ran, and
one input large enough to run with OpenMP threads.
"""

import numpy as np  # isort: skip
import ml_dtypes  # isort: skip  (after numpy: the order of valgrind.sh's suppression baseline)

import cecore

BF16, F16 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)

rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    for n, k in ((37, 5), (20, 33), (3, 300), (1, 1)):
        x = (rng.standard_normal((n, k)) * 3).astype(dtype)
        x[0, 0] = -np.inf
        y = rng.integers(0, k, n)
        y[-1] = -100
        t = rng.dirichlet(np.ones(k), n).astype(dtype)
        w = rng.random(k) + 0.5
        cecore.logsumexp(x)
        cecore.log_softmax(x[:, ::-1])
        cecore.softmax(x.T, axis=0)
        cecore.cross_entropy(x, y, weight=w, label_smoothing=0.1)
        cecore.cross_entropy(x, y, reduction="none", return_grad=True)
        cecore.cross_entropy(x.copy(), y, return_grad=True, out=np.empty_like(x))
        xc = x.copy()
        cecore.cross_entropy(xc, y, return_grad=True, out=xc)  # in place
        cecore.cross_entropy(x, t, label_smoothing=0.2, return_grad=True)
        cecore.nll_loss(x, y, weight=w, reduction="sum")
        p = rng.dirichlet(np.ones(k), n).astype(dtype)
        cecore.entropy(p, base=2)
        cecore.cross_entropy_pq(p, t, measure=w)
        cecore.kl_divergence(p, t)
    flat = rng.standard_normal((50, 7)).astype(dtype)
    probs = rng.random((50, 7)).astype(dtype)
    cecore.binary_cross_entropy_with_logits(flat, probs, pos_weight=rng.random(7) * 2)
    cecore.binary_cross_entropy_with_logits(flat, probs, weight=probs, return_grad=True)
    big = rng.standard_normal(20000).astype(dtype)  # per-element weights (> one block)
    cecore.binary_cross_entropy_with_logits(big, np.abs(np.tanh(big)), weight=np.abs(big),
                                            reduction="none")
    cecore.binary_cross_entropy(probs, probs[::-1], weight=probs)

# 16-bit logits: the same shapes (K <= 32 blocks with remainders, longer rows,
# a long row, one element), the load paths of every kernel and the 16-bit stores
for dtype in (BF16, F16):
    for n, k in ((37, 5), (20, 33), (3, 300), (1, 1), (2, 5003), (17, 32)):
        x = (rng.standard_normal((n, k)) * 3).astype(dtype)
        x[0, 0] = -np.inf
        y = rng.integers(0, k, n)
        y[-1] = -100
        t = rng.dirichlet(np.ones(k), n).astype(np.float32)
        w = rng.random(k) + 0.5
        cecore.logsumexp(x)
        cecore.logsumexp(x.T, axis=0)
        cecore.log_softmax(x[:, ::-1])
        cecore.log_softmax(x, dtype=np.float32)
        cecore.softmax(x.T, axis=0)
        cecore.softmax(x, dtype=np.float32)
        cecore.cross_entropy(x, y, weight=w, label_smoothing=0.1)
        cecore.cross_entropy(x, y, reduction="none", return_grad=True)
        cecore.cross_entropy(x.copy(), y, return_grad=True, out=np.empty_like(x))
        xc = x.copy()
        cecore.cross_entropy(xc, y, return_grad=True, out=xc)  # in place
        cecore.cross_entropy(x, t, label_smoothing=0.2, return_grad=True)
        cecore.cross_entropy(x, t.astype(dtype), reduction="none")
        cecore.nll_loss(x, y, weight=w, reduction="sum")
        cecore.nll_loss(x, y, reduction="none")
        p = rng.dirichlet(np.ones(k), n).astype(dtype)
        cecore.entropy(p, base=2)
        cecore.cross_entropy_pq(p, t, measure=w)
        cecore.kl_divergence(p, t.astype(dtype))
        ev = cecore.Evaluator(topk=(1, 3), label_smoothing=0.1)
        ev.update(x, y)
        ev.update(x[:1], y[:1])
        ev.result()
    wide = np.zeros((20, 40), dtype)
    wide[:, 3:36] = (rng.standard_normal((20, 33)) * 3).astype(dtype)
    cecore.cross_entropy(wide[:, 3:36], rng.integers(0, 33, 20), return_grad=True)  # strided
    cecore.softmax(wide[:, 3:36])
    flat = rng.standard_normal((50, 7)).astype(dtype)
    probs = rng.random((50, 7)).astype(dtype)
    cecore.binary_cross_entropy_with_logits(flat, probs, pos_weight=rng.random(7) * 2)
    cecore.binary_cross_entropy_with_logits(flat, probs, weight=probs, return_grad=True)
    cecore.binary_cross_entropy_with_logits(flat, probs.astype(np.float32), reduction="none",
                                            return_grad=True)
    big = rng.standard_normal(20000).astype(dtype)  # per-element weights (> one block)
    cecore.binary_cross_entropy_with_logits(big, np.abs(np.tanh(big)), weight=np.abs(big),
                                            reduction="none", return_grad=True)
    cecore.binary_cross_entropy(probs, probs[::-1], weight=probs)
    cecore.binary_cross_entropy(probs, probs[::-1], reduction="none")
    hidden = rng.standard_normal((9, 6)).astype(dtype)
    cecore.linear_cross_entropy(hidden, rng.standard_normal((40, 6)).astype(dtype),
                                rng.integers(0, 40, 9), chunk_size=4)

# newer kernels: training options, token statistics, model against model, linear gradients
for dtype in (np.float32, np.float64, BF16, F16):
    for n, k in ((37, 5), (20, 33), (3, 300), (2, 5003)):
        x = (rng.standard_normal((n, k)) * 3).astype(dtype)
        x[0, 0] = -np.inf
        ref = (x.astype(np.float32) + rng.standard_normal((n, k)).astype(np.float32) * 0.1)
        y = rng.integers(0, k, n)
        y[-1] = -100
        sw = rng.random(n)
        cecore.cross_entropy(x, y, z_loss=1e-3, softcap=5.0, sample_weight=sw,
                             return_grad=True, return_lse=True)
        cecore.cross_entropy(x, rng.dirichlet(np.ones(k), n), softcap=3.0, return_grad=True)
        cecore.token_stats(x, y, topk=min(k, 4), temperature=0.7)
        cecore.sequence_logprob(x[np.newaxis], y[np.newaxis], shift=True)
        for kind in ("kl", "reverse_kl", "jsd"):
            cecore.logit_divergence(x, ref, kind=kind, beta=0.3, target=y, return_grad=True)
        cmp = cecore.Comparison()
        cmp.update(x, ref.astype(dtype), y)
        cmp.result()
    if dtype in (np.float32, np.float64):
        hidden = rng.standard_normal((2, 9, 6)).astype(dtype)
        cecore.linear_cross_entropy(hidden, rng.standard_normal((40, 6)).astype(dtype),
                                    rng.integers(0, 40, (2, 9)), bias=rng.standard_normal(40),
                                    z_loss=1e-3, softcap=4.0, shift=True, chunk_size=4,
                                    return_grad=True)

# raising after the kernel ran (bad targets, probs outside [0, 1], negative p)
for call in (lambda: cecore.cross_entropy(np.zeros((4, 3)), np.array([0, 5, 1, 2])),
             lambda: cecore.nll_loss(np.zeros((4, 3)), np.array([0, 5, 1, 2])),
             lambda: cecore.binary_cross_entropy(np.array([0.5, 2.0]), np.zeros(2)),
             lambda: cecore.entropy(np.array([0.5, -0.5]))):
    try:
        call()
    except ValueError:
        pass
    else:
        raise AssertionError("expected ValueError")

# threads: large enough to start an OpenMP team
x = rng.standard_normal((256, 256)).astype(np.float32)
cecore.cross_entropy(x, rng.integers(0, 256, 256), n_threads=2, return_grad=True)
cecore.binary_cross_entropy_with_logits(x, np.abs(np.tanh(x)), n_threads=2)
for dtype in (BF16, F16):
    xh = x.astype(dtype)
    cecore.cross_entropy(xh, rng.integers(0, 256, 256), n_threads=2, return_grad=True)
    cecore.softmax(xh, n_threads=2)
print("valgrind_calls: ok, SIMD level in use:", cecore._config.simd_level())
