"""Slow, obviously-correct float64 NumPy twins of cecore's public functions.

Every function here follows the documented semantics of its cecore
counterpart (PyTorch's for the losses, SciPy's conventions for the
divergences) with plain NumPy in float64, without any attempt at speed. The
tests compare cecore against these and, where available, against torch/scipy.

Inputs are converted to float64 first, so a float32 test compares cecore's
float32 result with the exact-ish value for the same (rounded) inputs.
"""

import math

import numpy as np

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_pq",
    "cross_entropy_train",
    "entropy",
    "kl_divergence",
    "log_softmax",
    "logit_divergence",
    "logit_divergence_grad",
    "logsumexp",
    "nll_loss",
    "softmax",
]


def _f64(x):
    return np.array(x, dtype=np.float64, copy=True)


def _divide(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float64(num) / np.float64(den)


def _reduce(loss, reduction, normaliser):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.float64(loss.sum())
    if reduction == "mean":
        return _divide(loss.sum(), normaliser)
    raise ValueError(reduction)


# --------------------------------------------------------------------------
# softmax family


def _shift(x):
    """Row maximum (keepdims) along the last axis, 0 for all -inf rows.

    Like PyTorch/cecore, a +inf maximum is kept (so +inf rows become NaN in
    log_softmax/softmax); NaN propagates.
    """
    with np.errstate(invalid="ignore"):
        m = np.max(x, axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,))
    return np.where(m == -np.inf, 0.0, m)


def _lse_last(x):
    m = _shift(x)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = np.sum(np.exp(x - m), axis=-1, keepdims=True)
        return m + np.log(s)


def logsumexp(x, axis=-1):
    """log(sum(exp(x))) along ``axis`` (reduced); all -inf rows give -inf."""
    x = np.moveaxis(_f64(x), axis, -1)
    return _lse_last(x)[..., 0]


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis`` (NaN for all -inf and +inf rows)."""
    x = np.moveaxis(_f64(x), axis, -1)
    with np.errstate(invalid="ignore"):
        out = x - _lse_last(x)
    return np.moveaxis(out, -1, axis)


def softmax(x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along ``axis``."""
    x = np.moveaxis(_f64(x), axis, -1)
    m = _shift(x)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(x - m)
        out = e / np.sum(e, axis=-1, keepdims=True)
    return np.moveaxis(out, -1, axis)


# --------------------------------------------------------------------------
# losses (PyTorch semantics)


def _class_index_terms(logp, target, weight, ignore_index):
    """Per-position -w_y log p_y, the counted weight w_y and the mask of counted positions."""
    k = logp.shape[-1]
    t = np.asarray(target).astype(np.int64)
    mask = t != ignore_index
    if np.any(mask & ((t < 0) | (t >= k))):
        raise ValueError("target out of range")
    safe = np.where(mask, t, 0)
    w = np.ones(k) if weight is None else _f64(weight)
    lp_y = np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    w_y = np.where(mask, w[safe], 0.0)
    with np.errstate(invalid="ignore"):
        nll = np.where(mask, -w[safe] * lp_y, 0.0)
    return nll, w_y, mask, w


def cross_entropy(logits, target, axis=-1, weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean"):
    """torch.nn.functional.cross_entropy in float64.

    Integer targets: class indices (``logits``' shape without ``axis``);
    floating targets: probabilities of ``logits``' shape, where a term with
    ``w_k t_k == 0`` counts 0 even at ``z_k = -inf`` (cecore's documented
    deviation from torch).
    """
    x = np.moveaxis(_f64(logits), axis, -1)
    k = x.shape[-1]
    eps = float(label_smoothing)
    logp = log_softmax(x, -1)
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        nll, w_y, mask, w = _class_index_terms(logp, target, weight, ignore_index)
        with np.errstate(invalid="ignore"):
            smooth = np.where(mask, -np.sum(w * logp, axis=-1), 0.0)
            loss = (1.0 - eps) * nll + (eps / k) * smooth if eps else nll
        return _reduce(loss, reduction, w_y.sum())
    t = np.moveaxis(_f64(target), axis, -1)
    w = np.ones(k) if weight is None else _f64(weight)
    wt = w * t
    with np.errstate(invalid="ignore"):
        hard = -np.sum(np.where(wt != 0, wt * logp, 0.0), axis=-1)
        loss = hard
        if eps:
            loss = (1.0 - eps) * hard + (eps / k) * -np.sum(w * logp, axis=-1)
    return _reduce(loss, reduction, loss.size)


def cross_entropy_train(logits, target, axis=-1, weight=None, ignore_index=-100,
                        label_smoothing=0.0, reduction="mean", z_loss=0.0, softcap=None,
                        sample_weight=None):
    """cecore.cross_entropy with the training options, in float64: returns (loss, lse).

    z = c tanh(logits / c) with c = softcap (if given); per position
    l = sample_weight * (cross_entropy(z) + z_loss * lse(z)^2) at counted
    positions, 0 elsewhere; "mean" divides by sum(sample_weight * w_y) over
    counted positions (class indices) or sum(sample_weight) (probabilities).
    lse is 0 at ignored positions.
    """
    x = _f64(logits)
    if softcap is not None:
        x = softcap * np.tanh(x / softcap)
    target = np.asarray(target)
    per = cross_entropy(x, target, axis, weight, ignore_index, label_smoothing, "none")
    lse = logsumexp(x, axis)
    k = x.shape[axis]
    sw = np.ones(per.shape) if sample_weight is None else _f64(sample_weight)
    if target.dtype.kind in "iu":
        mask = target != ignore_index
        w = np.ones(k) if weight is None else _f64(weight)
        w_y = np.where(mask, w[np.where(mask, target, 0)], 0.0)
        normaliser = np.sum(sw * w_y)
    else:
        mask = np.ones(per.shape, bool)
        normaliser = np.sum(sw)
    lse = np.where(mask, lse, 0.0)
    with np.errstate(invalid="ignore"):
        loss = np.where(mask & (sw != 0), sw * (per + z_loss * lse ** 2), 0.0)
    return _reduce(loss, reduction, normaliser), lse


def nll_loss(log_probs, target, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """torch.nn.functional.nll_loss in float64."""
    lp = np.moveaxis(_f64(log_probs), axis, -1)
    nll, w_y, _, _ = _class_index_terms(lp, target, weight, ignore_index)
    return _reduce(nll, reduction, w_y.sum())


def binary_cross_entropy(probs, target, weight=None, reduction="mean"):
    """torch.nn.functional.binary_cross_entropy (logs clamped at -100)."""
    p, t = _f64(probs), _f64(target)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.maximum(np.log(p), -100.0)
        lq = np.maximum(np.log1p(-p), -100.0)
        lp = np.where(np.isnan(p), np.nan, lp)
        lq = np.where(np.isnan(p), np.nan, lq)
        loss = -(t * lp + (1.0 - t) * lq)
    if weight is not None:
        loss = loss * _f64(weight)
    return _reduce(loss, reduction, loss.size)


def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None,
                                     reduction="mean"):
    """torch's binary_cross_entropy_with_logits, from its definition

        l = w [pos_weight * t * log(1 + e^-x) + (1 - t) * log(1 + e^x)]

    where both softplus terms come from np.logaddexp (accurate to ~1 ulp and
    non-negative), so confident predictions keep full relative accuracy.
    """
    x, t = _f64(logits), _f64(target)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    with np.errstate(invalid="ignore"):
        loss = pw * t * np.logaddexp(0.0, -x) + (1.0 - t) * np.logaddexp(0.0, x)
    if weight is not None:
        loss = loss * _f64(weight)
    loss = np.broadcast_to(loss, x.shape).copy()
    return _reduce(loss, reduction, loss.size)


# --------------------------------------------------------------------------
# divergences


def _weights(measure, k):
    if measure is None:
        return np.ones(k)
    w = _f64(measure)
    return np.full(k, float(w)) if w.ndim == 0 else w


def _finish(s, base):
    return s if base is None else s / math.log(base)


def entropy(p, axis=-1, base=None, measure=None):
    """-sum w p log p along ``axis``, 0 log 0 = 0."""
    p = np.moveaxis(_f64(p), axis, -1)
    w = _weights(measure, p.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(p == 0, 0.0, p * np.log(p))
    return _finish(-np.sum(w * term, axis=-1), base)


def cross_entropy_pq(p, q, axis=-1, base=None, measure=None):
    """-sum w p log q along ``axis``; 0 log q = 0, p > 0 = q gives +inf."""
    p, q = np.broadcast_arrays(_f64(p), _f64(q))
    p, q = np.moveaxis(p, axis, -1), np.moveaxis(q, axis, -1)
    w = _weights(measure, p.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(p == 0, np.where(np.isnan(q), np.nan, 0.0), p * np.log(q))
    return _finish(-np.sum(w * term, axis=-1), base)


def kl_divergence(p, q, axis=-1, base=None, measure=None):
    """sum w p log(p / q) along ``axis``; 0 log(0 / q) = 0, p > 0 = q gives +inf."""
    p, q = np.broadcast_arrays(_f64(p), _f64(q))
    p, q = np.moveaxis(p, axis, -1), np.moveaxis(q, axis, -1)
    w = _weights(measure, p.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = p / q
        direct = p * np.log(ratio)
        split = p * (np.log(p) - np.log(q))
        ok = (ratio > 0) & np.isfinite(ratio)
        term = np.where(p == 0, np.where(np.isnan(q), np.nan, 0.0), np.where(ok, direct, split))
    return _finish(np.sum(w * term, axis=-1), base)


# --------------------------------------------------------------------------
# gradients (of the reduced loss; of the sum of the losses for "none")


def cross_entropy_grad(logits, target, axis=-1, weight=None, ignore_index=-100,
                       label_smoothing=0.0, reduction="mean"):
    """d loss / d logits for cross_entropy, from the closed form

    index targets:  [(1-eps) w_y + eps/K sum_k w_k] softmax - (1-eps) w_y onehot(y) - eps/K w
    probabilities:  (sum_k w_k t'_k) softmax - w t'
    times 1/(sum of counted w_y) (index) or 1/N (probabilities) for "mean";
    0 in ignored rows.
    """
    x = np.moveaxis(_f64(logits), axis, -1)
    k = x.shape[-1]
    eps = float(label_smoothing)
    sm = softmax(x, -1)
    w = np.ones(k) if weight is None else _f64(weight)
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        t = target.astype(np.int64)
        mask = t != ignore_index
        safe = np.where(mask, t, 0)
        w_y = np.where(mask, w[safe], 0.0)
        onehot = np.eye(k)[safe]
        g = (((1 - eps) * w_y + eps / k * w.sum())[..., None] * sm
             - (1 - eps) * w_y[..., None] * onehot - eps / k * w)
        g = np.where(mask[..., None], g, 0.0)
        norm = w_y.sum()
    else:
        tp = (1 - eps) * np.moveaxis(_f64(target), axis, -1) + eps / k
        g = np.sum(w * tp, axis=-1, keepdims=True) * sm - w * tp
        norm = g[..., 0].size
    if reduction == "mean":
        g = g * _divide(1.0, norm)
    return np.moveaxis(g, -1, axis)


def binary_cross_entropy_with_logits_grad(logits, target, weight=None, pos_weight=None,
                                          reduction="mean"):
    """w [(1 + (p - 1) t) sigmoid(x) - p t], times 1/size for "mean"."""
    x, t = _f64(logits), _f64(target)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    with np.errstate(over="ignore"):
        sig = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))),
                       np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
    g = (1 + (pw - 1) * t) * sig - pw * t
    if weight is not None:
        g = g * _f64(weight)
    g = np.broadcast_to(g, x.shape).copy()
    if reduction == "mean":
        g = g / max(g.size, 1) if g.size else g
    return g


# --------------------------------------------------------------------------
# per-token statistics (cecore.token_stats, sequence_logprob, Evaluator extras)


def ranks(logits, target):
    """rank = #{j : z_j > z_y} + #{j < y : z_j == z_y} per row (last axis), NaN above
    every number; ``target`` must be valid class indices."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target).astype(np.int64)
    xy = np.take_along_axis(x, y[..., None], axis=-1)
    before = np.arange(x.shape[-1]) < y[..., None]
    nan, y_nan = np.isnan(x), np.isnan(xy)
    greater = (x > xy) | (nan & ~y_nan)
    tie = (x == xy) | (nan & y_nan)
    return np.sum(greater | (tie & before), axis=-1)


def order(logits):
    """Class indices of each row (last axis) best first: NaN first, then larger, then
    lower index (the argmax/top-k order)."""
    x = np.asarray(logits, dtype=np.float64)
    idx = np.broadcast_to(np.arange(x.shape[-1]), x.shape)
    key = np.where(np.isnan(x), 0.0, -x)
    return np.lexsort((idx, key, ~np.isnan(x)), axis=-1)


def token_stats(logits, target, ignore_index=-100, temperature=1.0, topk=0):
    """token_stats's fields (float64) for logits (..., V) and targets (...), from
    log_softmax / softmax of z / T; ignored positions as documented."""
    z = _f64(logits)
    t = np.asarray(target).astype(np.int64)
    mask = t != ignore_index
    safe = np.where(mask, t, 0)
    x = z / temperature
    lp = log_softmax(x, -1)
    p = softmax(x, -1)
    lse = logsumexp(x, -1)
    with np.errstate(invalid="ignore"):
        ent = -np.sum(np.where(p == 0, 0.0, p * lp), axis=-1)
    # special rows (NaN, +inf, all -inf): NaN log-probabilities and entropy
    m = np.max(np.where(np.isnan(z), -np.inf, z), axis=-1)
    special = np.isnan(z).any(-1) | ~np.isfinite(m)
    # a +inf logit (and no NaN): lse = +inf, as cecore.logsumexp
    lse = np.where((m == np.inf) & ~np.isnan(z).any(-1), np.inf, lse)
    lp = np.where(special[..., None], np.nan, lp)
    ent = np.where(special, np.nan, ent)
    ords = order(z)
    rank = ranks(z, safe)
    out = {
        "logprob": np.where(mask, np.take_along_axis(lp, safe[..., None], -1)[..., 0], 0.0),
        "lse": np.where(mask, lse, 0.0),
        "entropy": np.where(mask, ent, 0.0),
        "argmax": np.where(mask, ords[..., 0], -1),
        "rank": np.where(mask, rank, -1),
        "is_greedy": mask & (rank == 0),
        "mask": mask,
    }
    if topk:
        idx = ords[..., :topk]
        out["topk_indices"] = np.where(mask[..., None], idx, -1)
        out["topk_logprobs"] = np.where(mask[..., None], np.take_along_axis(lp, idx, -1), 0.0)
    return out


def calibration_error(confidence, correct, n_bins=15):
    """Guo et al. (2017) ECE: bins (b/n, (b+1)/n], sum_b |B_b|/n |acc(B_b) - conf(B_b)|,
    computed directly bin by bin (with the bin of c being ceil(n c) - 1)."""
    conf = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += sel.sum() / conf.size * abs(correct[sel].mean() - conf[sel].mean())
    return total


def evaluator_extras(logits, target, ignore_index=-100, temperature=1.0):
    """entropy, brier and ece of the counted rows of 2-D logits, from the definitions."""
    z = _f64(logits)
    t = np.asarray(target)
    keep = t != ignore_index
    z, t = z[keep], t[keep]
    p = softmax(z / temperature, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(p == 0, 0.0, p * np.log(p)), axis=-1)
    onehot = np.eye(z.shape[-1])[t]
    brier = np.sum((p - onehot) ** 2, axis=-1)
    conf = p.max(axis=-1)
    correct = ranks(z, t) == 0
    n = len(t)
    return {"entropy": ent.mean() if n else math.nan, "brier": brier.mean() if n else math.nan,
            "ece": calibration_error(conf, correct) if n else math.nan}


# --------------------------------------------------------------------------
# divergences between two sets of logits (cecore.logit_divergence)


def _divergence_rows(x, y, kind, temperature, beta):
    """Per-row divergence of p = softmax(x / T) from r = softmax(y / T) (last axis),
    and what the gradient needs: (loss, p, lp, lr, lm) with lm = log m for "jsd"."""
    lp = log_softmax(x / temperature)
    lr = log_softmax(y / temperature)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        p, r = np.exp(lp), np.exp(lr)
        bad = ~np.isfinite(logsumexp(x)) | ~np.isfinite(logsumexp(y))
        lm = None
        if kind == "jsd" and beta == 0.0:
            kind = "kl"
        if kind == "jsd" and beta == 1.0:
            kind = "reverse_kl"
        if kind == "kl":
            loss = np.where(r > 0, r * (lr - lp), 0.0).sum(-1)
        elif kind == "reverse_kl":
            loss = np.where(p > 0, p * (lp - lr), 0.0).sum(-1)
        else:
            lm = np.logaddexp(lr + math.log(beta), lp + math.log1p(-beta))
            loss = (beta * np.where(r > 0, r * (lr - lm), 0.0).sum(-1)
                    + (1 - beta) * np.where(p > 0, p * (lp - lm), 0.0).sum(-1))
    return np.where(bad, np.nan, loss), p, lp, lr, lm, bad, kind


def _divergence_layout(logits, ref_logits, target, axis, ignore_index, shift):
    x = np.moveaxis(_f64(logits), axis, -1)
    y = np.moveaxis(_f64(ref_logits), axis, -1)
    counted = np.ones(x.shape[:-1], bool)
    if target is not None:
        counted = np.asarray(target) != ignore_index
    if shift:
        x, y = x[..., :-1, :], y[..., :-1, :]
        counted = counted[..., 1:]
    return x, y, counted


def logit_divergence(logits, ref_logits, kind="kl", axis=-1, temperature=1.0, beta=0.5,
                     target=None, ignore_index=-100, shift=False, reduction="mean"):
    """KL(r || p), KL(p || r) or TRL's generalised JSD per position, masked, reduced."""
    x, y, counted = _divergence_layout(logits, ref_logits, target, axis, ignore_index, shift)
    loss = _divergence_rows(x, y, kind, temperature, beta)[0]
    loss = np.where(counted, loss, 0.0)
    return _reduce(loss, reduction, counted.sum())


def logit_divergence_grad(logits, ref_logits, kind="kl", axis=-1, temperature=1.0, beta=0.5,
                          target=None, ignore_index=-100, shift=False, reduction="mean"):
    """The gradient of logit_divergence with respect to logits (of the sum for "none"),
    by the closed forms (checked against finite differences in the tests)."""
    x, y, counted = _divergence_layout(logits, ref_logits, target, axis, ignore_index, shift)
    loss, p, lp, lr, lm, bad, kind = _divergence_rows(x, y, kind, temperature, beta)
    with np.errstate(invalid="ignore"):
        if kind == "kl":
            g = p - np.exp(lr)
        elif kind == "reverse_kl":
            g = np.where(p > 0, p * (lp - lr - loss[..., None]), 0.0)
        else:
            kpm = np.where(p > 0, p * (lp - lm), 0.0).sum(-1)
            g = (1 - beta) * np.where(p > 0, p * (lp - lm - kpm[..., None]), 0.0)
    g = np.where(bad[..., None], np.nan, g) / temperature
    scale = 1.0 / counted.sum() if reduction == "mean" else 1.0
    g = np.where(counted[..., None], g * scale, 0.0)
    if shift:
        g = np.concatenate([g, np.zeros_like(g[..., :1, :])], axis=-2)
    return np.moveaxis(g, -1, axis)
