"""Accuracy of every public function against exact values computed with mpmath.

Every input is converted exactly (float32 inputs are compared with the exact
value *of the float32 input*, not of some float64 original), the exact result
is computed at 160 bits and kept as a double-double, and the error of cecore's
result is measured in ulps of the result's dtype:

    err = |got - exact| / ulp(max(|exact|, floor))

``floor`` is 1 for the log-sum-exp family (logsumexp, log_softmax,
cross_entropy): their error has an absolute part of about an ulp of 1 (the
log of a sum that is >= 1), so below 1 the bound is absolute and above 1
relative. It is the smallest normal number (pure relative error) for softmax,
nll_loss and both binary cross-entropies, whose results are sums of
same-signed terms, and ``sum |terms|`` (the condition number of the sum) for
entropy, cross_entropy_pq and kl_divergence, which equals |exact| whenever all
terms share a sign (normalised p, q).

16-bit input (bfloat16, float16; README "16-bit input"): the kernels upcast the
values exactly and compute in float32, so every reduction (losses with any
reduction, "none" included, logsumexp, the divergences) is a float32 result
held to the float32 bound against the exact value of the 16-bit input, and
log_softmax and softmax, whose results are rounded once to the input's type,
are held to half an ulp of that type plus float32's error (with the same
floors: within one ulp, and rounding, not truncation), and with
``dtype=np.float32`` to the float32 bound. Small case families keep these
rows to a few seconds (few distinct 16-bit values: cheap references).

``BOUNDS`` holds the asserted bound of each (function, dtype), a small margin
above the maximum measured over all cases; ``python
tests/test_hardening_numerics.py`` prints the measured table (README,
"Guarantees"). Rows whose maximum is huge (up to the dtype's maximum) are
held to the same bounds.
"""

import math
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")

if __name__ == "__main__":  # run as a script from anywhere: import the checkout's cecore
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cecore  # noqa: E402

mpf = mpmath.mpf
PREC = 160
DTYPES = (np.float32, np.float64)
BF16, F16 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)
HALVES = (BF16, F16)  # 16-bit input: float32 reductions, elementwise results rounded to it
INF = math.inf


def _finfo(dtype):
    """np.finfo, which does not know bfloat16 (NumPy kind 'V')."""
    return ml_dtypes.finfo(dtype) if np.dtype(dtype) == BF16 else np.finfo(dtype)


def _reduced(dtype):
    """The dtype of reductions of ``dtype`` input: float32 for 16-bit input."""
    return np.dtype(np.float32) if np.dtype(dtype) in HALVES else np.dtype(dtype)

# ---------------------------------------------------------------------------
# exact references (mpmath), kept as double-doubles (hi, lo)


def _dd(values):
    """mpf values -> (hi, lo) float64 arrays with hi + lo = value to ~2^-106."""
    hi = np.empty(len(values))
    lo = np.zeros(len(values))
    with mpmath.workprec(PREC):
        for i, v in enumerate(values):
            if mpmath.isinf(v) or mpmath.isnan(v):
                hi[i] = float(v)
                continue
            h = float(v)
            hi[i] = h
            if math.isfinite(h):
                lo[i] = float(v - mpf(h))
    return hi, lo


def _groups(*cols):
    """Unique tuples of the given equal-length columns: (uniques, inverse, counts)."""
    stacked = np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)
    uniq, inverse, counts = np.unique(stacked, axis=0, return_inverse=True,
                                      return_counts=True)
    return uniq, inverse.reshape(-1), counts


_GROUP_CACHE = {}


def _weighted_groups(cols, w):
    """Distinct tuples of ``cols`` and, per tuple, the exact sum of the weights ``w``
    of its elements: sum_j w_j f(cols_j) = sum_g W_g f(g). The grouping is cached
    (the same rows come back with other weights); W_g is exact because the weights
    take few distinct values: W_g = sum_v v * count(g, v)."""
    cols = [np.asarray(c, dtype=np.float64) for c in cols]
    key = tuple(hash(c.tobytes()) for c in cols)
    if key not in _GROUP_CACHE:
        uniq, inverse = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
        _GROUP_CACHE[key] = uniq, inverse.reshape(-1)
    uniq, inverse = _GROUP_CACHE[key]
    wv, widx = np.unique(np.broadcast_to(np.asarray(w, dtype=np.float64), cols[0].shape),
                         return_inverse=True)
    counts = np.bincount(inverse * len(wv) + widx.reshape(-1),
                         minlength=len(uniq) * len(wv)).reshape(len(uniq), len(wv))
    wv_mpf = [mpf(float(v)) for v in wv]
    weights = [mpmath.fsum(int(c) * v for c, v in zip(row, wv_mpf) if c) for row in counts]
    return uniq, weights


_LSE_CACHE = {}


def _lse_parts(row):
    """(m, log S) with lse = m + log S, S = sum exp(x - m); m = -inf for an all -inf row.

    Cached by the row's bytes: every case is measured by several functions.
    """
    row = np.asarray(row)
    key = (row.dtype.str, row.size, hash(row.tobytes()))
    if key in _LSE_CACHE:
        return _LSE_CACHE[key]
    vals, counts = np.unique(row.astype(np.float64), return_counts=True)
    finite = vals > -INF
    if not finite.any():
        parts = mpf("-inf"), mpf("-inf")
    else:
        with mpmath.workprec(PREC):
            m = mpf(float(vals[finite].max()))
            s = mpmath.fsum(int(c) * mpmath.exp(mpf(float(v)) - m)
                            for v, c in zip(vals[finite], counts[finite]))
            parts = m, mpmath.log(s)
    _LSE_CACHE[key] = parts
    return parts


def ref_logsumexp(x):
    out = []
    with mpmath.workprec(PREC):
        for row in x:
            m, logs = _lse_parts(row)
            out.append(m + logs if m != -INF else mpf("-inf"))
    return _dd(out)


def _per_element(x, fn):
    """fn(m, logS, value) for every element, evaluated once per distinct value of a row."""
    hi = np.empty(x.shape)
    lo = np.empty(x.shape)
    for r, row in enumerate(x):
        m, logs = _lse_parts(row)
        vals, inverse = np.unique(row.astype(np.float64), return_inverse=True)
        with mpmath.workprec(PREC):
            exact = [fn(m, logs, mpf(float(v))) for v in vals]
        row_hi, row_lo = _dd(exact)
        hi[r] = row_hi[inverse.reshape(-1)]
        lo[r] = row_lo[inverse.reshape(-1)]
    return hi, lo


def ref_log_softmax(x):
    return _per_element(x, lambda m, logs, v: (v - m) - logs if v != -INF else mpf("-inf"))


def ref_softmax(x):
    return _per_element(x, lambda m, logs, v: mpmath.exp((v - m) - logs) if v != -INF else mpf(0))


def _weight_of(weight, k):
    return np.ones(k) if weight is None else np.asarray(weight, dtype=np.float64)


def _lse_minus(m, logs, v):
    """lse - v as log S + (m - v): forming lse first would lose log S next to a huge m
    even at 160 bits (m = 1e308 needs ~1100)."""
    return logs + (m - mpf(float(v)))


def ref_ce_index(x, y, weight=None, eps=0.0, ignore_index=-100):
    """Per-row losses (mpf) and the weights of counted rows, PyTorch's formula."""
    n, k = x.shape
    w = _weight_of(weight, k)
    losses, wsum = [], mpf(0)
    with mpmath.workprec(PREC):
        e = mpf(eps)
        for row, t in zip(x, y):
            if t == ignore_index:
                losses.append(mpf(0))
                continue
            m, logs = _lse_parts(row)
            loss = (1 - e) * mpf(w[t]) * _lse_minus(m, logs, row[t])
            if eps:
                uniq, weights = _weighted_groups((row,), w)
                loss += e / k * mpmath.fsum(wk * _lse_minus(m, logs, xk)
                                            for (xk,), wk in zip(uniq, weights))
            losses.append(loss)
            wsum += mpf(w[t])
    return losses, wsum


def ref_ce_prob(x, t, weight=None, eps=0.0):
    n, k = x.shape
    w = _weight_of(weight, k)
    losses = []
    with mpmath.workprec(PREC):
        e = mpf(eps)
        for row, trow in zip(x, t):
            m, logs = _lse_parts(row)
            total = mpf(0)
            uniq, weights = _weighted_groups((row, trow), w)
            for (xk, tk), wk in zip(uniq, weights):
                tp = (1 - e) * mpf(tk) + e / k
                if tp == 0 or wk == 0:
                    continue
                total += wk * tp * _lse_minus(m, logs, xk)
            losses.append(total)
    return losses


def ref_nll(lp, y, weight=None, ignore_index=-100):
    w = _weight_of(weight, lp.shape[1])
    losses, wsum = [], mpf(0)
    for row, t in zip(lp, y):
        if t == ignore_index:
            losses.append(mpf(0))
            continue
        losses.append(-mpf(w[t]) * mpf(float(row[t])))
        wsum += mpf(w[t])
    return losses, wsum


def _softplus(x):
    """log(1 + e^x), exactly (mpmath), for any float x."""
    x = mpf(x)
    if x == INF:
        return mpf("inf")
    if x == -INF:
        return mpf(0)
    return max(x, 0) + mpmath.log1p(mpmath.exp(-abs(x)))


def ref_bce_logits(x, t, w, pw):
    """Elementwise w [p t softplus(-x) + (1 - t) softplus(x)] (flat float64 arrays)."""
    with mpmath.workprec(PREC):
        uniq, inverse, _ = _groups(x, t, w, pw)
        exact = []
        for xi, ti, wi, pi in uniq:
            loss = mpf(pi) * mpf(ti) * _softplus(-xi) + (1 - mpf(ti)) * _softplus(xi)
            exact.append(mpf(wi) * loss)
        return [exact[i] for i in inverse]


def ref_bce_probs(p, t, w):
    with mpmath.workprec(PREC):
        uniq, inverse, _ = _groups(p, t, w)
        exact = []
        for pi, ti, wi in uniq:
            pi = mpf(pi)
            lp = max(mpmath.log(pi), -100) if pi > 0 else mpf(-100)
            lq = max(mpmath.log1p(-pi), -100) if pi < 1 else mpf(-100)
            exact.append(-mpf(wi) * (mpf(ti) * lp + (1 - mpf(ti)) * lq))
        return [exact[i] for i in inverse]


def ref_divergence(kind, p, q, measure, base):
    """Per-row value and error scale of entropy / cross-entropy / KL.

    The scale is sum |terms|, plus sum w p for KL: log(p / q) of nearly equal p
    and q has an absolute error of about an ulp of 1 (the quotient's rounding).
    """
    k = p.shape[1]
    w = np.ones(k) if measure is None else np.broadcast_to(np.asarray(measure, float), (k,))
    values, conds = [], []
    with mpmath.workprec(PREC):
        lb = mpf(1) if base is None else mpmath.log(mpf(base))
        for prow, qrow in zip(p, q):
            uniq, weights = _weighted_groups((prow, qrow), w)
            total, cond = mpf(0), mpf(0)
            for (pj, qj), wj in zip(uniq, weights):
                pj, qj = mpf(pj), mpf(qj)
                if pj == 0:
                    continue
                if kind == "entropy":
                    term = -pj * mpmath.log(pj)
                elif kind == "cross_entropy_pq":
                    term = -pj * mpmath.log(qj) if qj > 0 else mpf("inf")
                else:
                    term = pj * (mpmath.log(pj) - mpmath.log(qj)) if qj > 0 else mpf("inf")
                total += wj * term / lb
                cond += abs(wj * term / lb)
                if kind == "kl_divergence":  # log(p/q) is good to ~1 ulp of 1, not of itself
                    cond += wj * pj / lb
            values.append(total)
            conds.append(cond)
    return values, conds


# ---------------------------------------------------------------------------
# error measure


def ulp_errors(got, hi, lo, dtype, floor):
    """|got - (hi + lo)| in ulps of dtype at max(|hi|, floor); 0 where both are the
    same inf/NaN, inf where only one of them is non-finite."""
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    floor = np.broadcast_to(np.asarray(floor, dtype=np.float64), hi.shape)
    finfo = _finfo(dtype)
    scale = np.minimum(np.maximum(np.abs(hi), floor), float(finfo.max))
    with np.errstate(over="ignore"):
        ulp = np.spacing(scale.astype(dtype)).astype(np.float64)
    with np.errstate(over="ignore"):
        rounded = hi.astype(dtype).astype(np.float64)  # +-inf where exact overflows dtype
    finite = np.isfinite(rounded) & np.isfinite(got)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((got - hi) - lo) / ulp
    same_special = ~np.isfinite(rounded) & (
        (np.isnan(rounded) & np.isnan(got)) | (rounded == got)
    )
    return np.where(finite, err, np.where(same_special, 0.0, np.inf))


def _floor_tiny(dtype):
    return float(_finfo(dtype).tiny)


# ---------------------------------------------------------------------------
# input cases: (name, float64 array exactly representable in dtype)


def _as(dtype, a):
    """a rounded to dtype, returned as that dtype (the reference reads the same values)."""
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float64).astype(dtype)


def logit_cases(dtype, seed=0):
    """Logit matrices for the softmax family: random and adversarial rows.

    The number of rows (37) exercises both the 16-row AVX-512 block path and
    its remainder for K <= 32; K spans the block (<= 32) and row paths.
    """
    rng = np.random.default_rng(seed)
    f = np.finfo(dtype)
    cases = []
    for k in (1, 2, 3, 5, 16, 31, 32, 33, 100):
        for s in (1.0, 8.0, 30.0):
            cases.append((f"normal K={k} x{s:g}", rng.standard_normal((37, k)) * s))
    for k in (1000, 4097):
        cases.append((f"normal K={k} x8", rng.standard_normal((3, k)) * 8))
    for c in (0.0, 1.0, -1.0, 30.0, -30.0, 1e-3, -math.log(33)):
        for k in (1, 5, 33, 1000):
            cases.append((f"all equal {c:g} K={k}", np.full((3 if k >= 1000 else 17, k), c)))
    x = rng.standard_normal((37, 33))
    x[np.arange(37), rng.integers(0, 33, 37)] = 60.0
    cases.append(("one dominant outlier +60", x))
    x = rng.standard_normal((37, 40))
    x[np.arange(37), rng.integers(0, 40, 37)] = -float(f.max)
    cases.append(("one outlier at -max", x))
    for k in (7, 40, 300):
        x = rng.standard_normal((21, k)) * 4
        x[rng.random(x.shape) < 0.6] = -INF
        x[np.arange(21), rng.integers(0, k, 21)] = rng.standard_normal(21)
        cases.append((f"-inf masks K={k}", x))
    x = np.full((17, 9), -float(f.max))
    x[:, 3] = 0.5
    cases.append(("huge negative entries", x))
    x = rng.integers(-20, 20, (17, 12)) * float(f.tiny) * float(f.eps)
    cases.append(("subnormal logits", x))
    # softmax outputs deep in (and below) the subnormal range
    lo_tail = 110.0 if dtype == np.float32 else 750.0
    x = -rng.random((17, 40)) * lo_tail
    x[:, 0] = 0.0
    cases.append(("tails into the subnormal range", x))
    # one row of a million classes, from 1000 distinct values (exact reference stays cheap)
    values = np.concatenate([rng.standard_normal(999) * 8, [-INF]])
    cases.append(("K=1e6 one row", values[rng.integers(0, 1000, (1, 1_000_000))]))
    if dtype == np.float32:
        x = rng.standard_normal((37, 33))
        x[np.arange(37), rng.integers(0, 33, 37)] = 1e4
        cases.append(("outlier +1e4 (float32)", x))
        cases.append(("all equal 1e6 (float32)", np.full((17, 40), 1e6)))
    return [(name, _as(dtype, a)) for name, a in cases]


def large_max_cases(dtype):
    """Rows whose maximum is huge: the kernels round m + log S before subtracting m."""
    f = np.finfo(dtype)
    rng = np.random.default_rng(5)
    big = [1e17, float(f.max) / 2, float(f.max)]
    if dtype == np.float64:
        big = [1e4, 1e8] + big
    cases = []
    for b in big:
        cases.append((f"all equal {b:g}", np.full((17, 5), b)))
        x = rng.standard_normal((17, 40))
        x[:, 7] = b
        x[:, 9] = b
        cases.append((f"two maxima at {b:g}", x))
        cases.append((f"near {b:g}", b * (1 - rng.random((17, 40)) * 4 * float(f.eps))))
    return [(name, _as(dtype, a)) for name, a in cases]


def prob_cases(dtype, seed=1):
    """Rows of (p, q) for entropy, cross_entropy_pq and kl_divergence."""
    rng = np.random.default_rng(seed)
    f = np.finfo(dtype)
    cases = []
    for k in (1, 2, 5, 33, 1000):
        p = rng.dirichlet(np.ones(k), 13)
        q = rng.dirichlet(np.ones(k), 13)
        cases.append((f"dirichlet K={k}", p, q))
    p = rng.dirichlet(np.ones(40) * 0.1, 13)  # many tiny entries
    q = rng.dirichlet(np.ones(40) * 0.1, 13)
    cases.append(("dirichlet 0.1 (tiny entries)", p, q))
    p = rng.dirichlet(np.ones(20), 13)
    p[rng.random(p.shape) < 0.4] = 0.0
    q = rng.dirichlet(np.ones(20), 13)
    q[p == 0] = np.where(rng.random(int((p == 0).sum())) < 0.5, 0.0, q[p == 0])
    cases.append(("zeros (0 log 0)", p, q))
    p = rng.integers(1, 50, (13, 16)) * float(f.tiny) * float(f.eps)
    p[:, 0] = 0.5
    q = rng.dirichlet(np.ones(16), 13)
    cases.append(("subnormal p", p, q))
    q2 = rng.integers(1, 50, (13, 16)) * float(f.tiny) * float(f.eps)
    q2[:, 0] = 0.5
    cases.append(("subnormal q", q, q2))
    p = rng.dirichlet(np.ones(30), 13)
    q = p * (1 + rng.standard_normal(p.shape) * 1e-3)  # KL close to 0
    cases.append(("q close to p", p, q))
    if dtype == np.float32:  # float64: see long_prob_rows
        cases += long_prob_rows(dtype, raw=True)
    return [(name, _as(dtype, p), _as(dtype, q)) for name, p, q in cases]


def long_prob_rows(dtype, raw=False):
    """One row of a million points (1000 distinct (p, q) pairs: cheap exact references)."""
    rng = np.random.default_rng(9)
    idx = rng.integers(0, 1000, (1, 1_000_000))
    p = rng.random(1000)[idx]
    q = rng.random(1000)[idx]
    cases = [("K=1e6 one row", p / p.sum(), q / q.sum())]
    return cases if raw else [(name, _as(dtype, p), _as(dtype, q)) for name, p, q in cases]


def bce_logit_cases(dtype, seed=2):
    rng = np.random.default_rng(seed)
    f = np.finfo(dtype)
    # +-max / 8: weight * pos_weight * |x| stays finite (+-max: test_bce_special_values)
    special = np.array([0.0, 1e-3, -1e-3, 15.0, -15.0, 33.0, -33.0, 100.0, -100.0, 1e4,
                        -1e4, float(f.max) / 8, -float(f.max) / 8, float(f.tiny), -float(f.tiny),
                        float(f.tiny) * float(f.eps) * 3, 88.0, -88.0, 700.0, -700.0])
    cases = []
    for s in (1.0, 8.0, 30.0):
        x = rng.standard_normal((64, 40)) * s
        cases.append((f"normal x{s:g}", x, rng.random(x.shape)))
        cases.append((f"normal x{s:g}, t in {{0, 1}}", x, (rng.random(x.shape) < 0.5) * 1.0))
    x = np.tile(special, (6, 1))
    t = np.repeat(np.array([0.0, 1.0, 0.5, 0.25, 1e-3, 0.999]), special.size).reshape(6, -1)
    cases.append(("extreme logits", x, t))
    return [(name, _as(dtype, x), _as(dtype, t)) for name, x, t in cases]


def bce_prob_cases(dtype, seed=3):
    rng = np.random.default_rng(seed)
    f = np.finfo(dtype)
    eps = float(f.eps)
    special = np.array([0.0, 1.0, float(f.tiny), float(f.tiny) * eps * 3, eps, eps / 2,
                        1 - eps, 1 - eps / 2, 0.5, 1e-30, 1e-45, 3e-44, 0.999, 1e-7])
    cases = []
    p = rng.random((64, 40))
    cases.append(("uniform", p, rng.random(p.shape)))
    cases.append(("uniform, t in {0, 1}", p, (rng.random(p.shape) < 0.5) * 1.0))
    p = np.tile(special, (5, 1))
    t = np.repeat(np.array([0.0, 1.0, 0.5, 0.125, 0.999]), special.size).reshape(5, -1)
    cases.append(("extreme probabilities", p, t))
    return [(name, _as(dtype, p), _as(dtype, t)) for name, p, t in cases]


def half_logit_cases(dtype, seed=10):
    """Logits for 16-bit input: the block (K <= 32, 17 rows: a 16-row block and its
    remainder) and row paths, -inf masks, an outlier, the type's extremes, softmax
    tails into the 16-bit subnormal range."""
    rng = np.random.default_rng(seed)
    f = _finfo(dtype)
    cases = []
    for k in (1, 5, 31, 33, 100):
        for s in (1.0, 8.0):
            cases.append((f"normal K={k} x{s:g}", rng.standard_normal((17, k)) * s))
    cases.append(("normal K=1000 x8", rng.standard_normal((2, 1000)) * 8))
    for c in (0.0, -30.0):
        cases.append((f"all equal {c:g} K=33", np.full((17, 33), c)))
    x = rng.standard_normal((17, 33))
    x[np.arange(17), rng.integers(0, 33, 17)] = 60.0
    cases.append(("one dominant outlier +60", x))
    x = rng.standard_normal((17, 40)) * 4
    x[rng.random(x.shape) < 0.6] = -INF
    x[np.arange(17), rng.integers(0, 40, 17)] = rng.standard_normal(17)
    cases.append(("-inf masks K=40", x))
    x = np.full((17, 9), -float(f.max))
    x[:, 3] = 0.5
    cases.append(("huge negative entries", x))
    lo_tail = 110.0 if dtype == BF16 else 20.0  # exp(-20) is below float16's subnormals
    x = -rng.random((17, 40)) * lo_tail
    x[:, 0] = 0.0
    cases.append(("tails into the subnormal range", x))
    return [(name, _as(dtype, a)) for name, a in cases]


def half_prob_cases(dtype, seed=11):
    rng = np.random.default_rng(seed)
    f = _finfo(dtype)
    cases = []
    for k, n in ((5, 13), (33, 13), (1000, 2)):
        cases.append((f"dirichlet K={k}", rng.dirichlet(np.ones(k), n),
                      rng.dirichlet(np.ones(k), n)))
    p = rng.dirichlet(np.ones(20), 13)
    p[rng.random(p.shape) < 0.4] = 0.0
    cases.append(("zeros (0 log 0)", p, rng.dirichlet(np.ones(20), 13)))
    p = rng.integers(1, 50, (13, 16)) * float(f.smallest_subnormal)
    p[:, 0] = 0.5
    cases.append(("subnormal p", p, rng.dirichlet(np.ones(16), 13)))
    p = rng.dirichlet(np.ones(30), 13)
    cases.append(("q close to p", p, p * (1 + rng.standard_normal(p.shape) * 1e-2)))
    return [(name, _as(dtype, p), _as(dtype, q)) for name, p, q in cases]


def half_bce_logit_cases(dtype, seed=12):
    rng = np.random.default_rng(seed)
    f = _finfo(dtype)
    special = np.array([0.0, 1e-3, -1e-3, 15.0, -15.0, 33.0, -33.0, 100.0, -100.0, 1e4,
                        -1e4, float(f.max) / 8, -float(f.max) / 8, float(f.tiny),
                        float(f.smallest_subnormal) * 3, 88.0, -88.0])
    x = rng.standard_normal((17, 40)) * 8
    x2 = np.tile(special, (4, 1))
    t2 = np.repeat(np.array([0.0, 1.0, 0.5, 0.25]), special.size).reshape(4, -1)
    cases = [("normal x8", x, rng.random(x.shape)),
             ("normal x8, t in {0, 1}", x, (rng.random(x.shape) < 0.5) * 1.0),
             ("extreme logits", x2, t2)]
    return [(name, _as(dtype, x), _as(dtype, t)) for name, x, t in cases]


def half_bce_prob_cases(dtype, seed=13):
    rng = np.random.default_rng(seed)
    f = _finfo(dtype)
    eps = float(f.eps)
    special = np.array([0.0, 1.0, float(f.tiny), float(f.smallest_subnormal) * 3, eps,
                        eps / 2, 1 - eps / 2, 0.5, 0.999, 1e-3])
    p = rng.random((17, 40))
    cases = [("uniform", p, rng.random(p.shape)),
             ("extreme probabilities", np.tile(special, (3, 1)),
              np.repeat(np.array([0.0, 1.0, 0.5]), special.size).reshape(3, -1))]
    return [(name, _as(dtype, p), _as(dtype, t)) for name, p, t in cases]


HALF_FAMILIES = {logit_cases: half_logit_cases, prob_cases: half_prob_cases,
                 bce_logit_cases: half_bce_logit_cases, bce_prob_cases: half_bce_prob_cases}


# ---------------------------------------------------------------------------
# measurements: each returns a list of (case name, max error in ulps)


def _few_values(rng, size, low, high):
    """Weights drawn from 7 distinct values in [low, high): cheap exact references."""
    return rng.choice(np.linspace(low, high, 7, endpoint=False), size)


def _total(values, count=1):
    """Exact sum(values) / count; inf when the sum overflows float64, as it does in
    the kernels (they accumulate in double)."""
    with mpmath.workprec(PREC):
        total = mpmath.fsum(values)
        if mpmath.isfinite(total) and abs(total) > np.finfo(np.float64).max:
            return mpmath.sign(total) * mpf("inf")
        return total / count if count else mpf("nan")


class Errors:
    """Worst errors of one case: elementwise (or per row) and of reduced results."""

    def __init__(self, dtype, floor):
        """``dtype``: the results' dtype (asserted), in whose ulps errors are measured."""
        self.dtype, self.floor = np.dtype(dtype), floor
        self.elementwise = 0.0
        self.reduction = float("nan")

    def _check_dtype(self, got):
        assert np.asarray(got).dtype == self.dtype, (np.asarray(got).dtype, self.dtype)

    def values(self, got, hi, lo, floor=None):
        self._check_dtype(got)
        floor = self.floor if floor is None else floor
        self.elementwise = max(self.elementwise,
                               ulp_errors(got, hi, lo, self.dtype, floor).max())

    def scalar(self, got, exact):
        self._check_dtype(got)
        hi, lo = _dd([exact])
        err = float(ulp_errors([got], hi, lo, self.dtype, self.floor)[0])
        self.reduction = err if math.isnan(self.reduction) else max(self.reduction, err)


def measure_logsumexp(dtype, cases):
    out = []
    for name, x in cases:
        e = Errors(_reduced(dtype), 1.0)
        e.values(cecore.logsumexp(x), *ref_logsumexp(x))
        out.append((name, e))
    return out


def measure_log_softmax(dtype, cases):
    out = []
    for name, x in cases:
        e = Errors(dtype, 1.0)
        e.values(cecore.log_softmax(x), *ref_log_softmax(x))
        if np.dtype(dtype) in HALVES:  # measured apart: the float32 result of dtype=float32
            e.as_float32 = Errors(np.float32, 1.0)
            e.as_float32.values(cecore.log_softmax(x, dtype=np.float32), *ref_log_softmax(x))
        out.append((name, e))
    return out


def measure_softmax(dtype, cases):
    out = []
    for name, x in cases:
        e = Errors(dtype, _floor_tiny(dtype))
        e.values(cecore.softmax(x), *ref_softmax(x))
        if np.dtype(dtype) in HALVES:
            e.as_float32 = Errors(np.float32, _floor_tiny(np.float32))
            e.as_float32.values(cecore.softmax(x, dtype=np.float32), *ref_softmax(x))
        out.append((name, e))
    return out


def _smoothing_overflows(x, dtype):
    """float64 logits near -DBL_MAX: the smoothing term's intermediate sum overflows
    (test_label_smoothing_near_dbl_max); those combinations are left out here."""
    finite = x[np.isfinite(x)]
    return dtype == np.float64 and bool((np.abs(finite) > np.finfo(dtype).max / 4).any())


SMOOTHING = ((None, 0.0), ("w", 0.0), (None, 0.1), ("w", 0.25))


def _ce_options(x, dtype, w):
    for weight, eps in SMOOTHING:
        if eps and _smoothing_overflows(x, dtype):
            continue
        yield (w if weight == "w" else None), eps


def _class_targets(rng, n, k):
    y = rng.integers(0, k, n)
    if n > 2:
        y[rng.random(n) < 0.2] = -100  # ignored positions
    return y


def measure_cross_entropy_index(dtype, cases):
    out = []
    for i, (name, x) in enumerate(cases):
        rng = np.random.default_rng(100 + i)
        n, k = x.shape
        y = _class_targets(rng, n, k)
        w = _few_values(rng, k, 0.5, 1.5)
        e = Errors(_reduced(dtype), 1.0)
        for weight, eps in _ce_options(x, dtype, w):
            losses, wsum = ref_ce_index(x, y, weight, eps)
            opts = dict(weight=weight, label_smoothing=eps)
            e.values(cecore.cross_entropy(x, y, reduction="none", **opts), *_dd(losses))
            e.scalar(cecore.cross_entropy(x, y, reduction="sum", **opts), _total(losses))
            e.scalar(cecore.cross_entropy(x, y, **opts), _total(losses, wsum))
        out.append((name, e))
    return out


def measure_cross_entropy_prob(dtype, cases):
    out = []
    for i, (name, x) in enumerate(cases):
        x = x[:17]  # the exact reference is per element: 17 rows still cover 16-row blocks
        rng = np.random.default_rng(200 + i)
        if x.shape[1] > 5000:  # the K=1e6 row: targets from few distinct values
            t = rng.choice([0.0, 0.5e-6, 1e-6, 2e-6], x.shape)
        else:
            t = rng.dirichlet(np.ones(x.shape[1]), x.shape[0])
            t[rng.random(t.shape) < 0.3] = 0.0
        t = _as(dtype, t)
        w = _few_values(rng, x.shape[1], 0.5, 1.5)
        e = Errors(_reduced(dtype), 1.0)
        for weight, eps in _ce_options(x, dtype, w):
            losses = ref_ce_prob(x, t, weight, eps)
            opts = dict(weight=weight, label_smoothing=eps)
            e.values(cecore.cross_entropy(x, t, reduction="none", **opts), *_dd(losses))
            e.scalar(cecore.cross_entropy(x, t, reduction="sum", **opts), _total(losses))
            e.scalar(cecore.cross_entropy(x, t, **opts), _total(losses, x.shape[0]))
        out.append((name, e))
    return out


def measure_nll_loss(dtype, cases):
    out = []
    for i, (name, x) in enumerate(cases):
        rng = np.random.default_rng(300 + i)
        n, k = x.shape
        lp = -np.abs(x)  # log-probabilities: <= 0 (and -inf where x is +-inf)
        y = _class_targets(rng, n, k)
        w = _few_values(rng, k, 0.5, 1.5)
        e = Errors(_reduced(dtype), _floor_tiny(_reduced(dtype)))
        for weight in (None, w):
            losses, wsum = ref_nll(lp, y, weight)
            e.values(cecore.nll_loss(lp, y, weight=weight, reduction="none"), *_dd(losses))
            e.scalar(cecore.nll_loss(lp, y, weight=weight, reduction="sum"), _total(losses))
            e.scalar(cecore.nll_loss(lp, y, weight=weight), _total(losses, wsum))
        out.append((name, e))
    return out


def _bce_measure(dtype, x, t, weights, call, reference):
    e = Errors(_reduced(dtype), _floor_tiny(_reduced(dtype)))
    for kw in weights:
        full = {key: np.broadcast_to(v, x.shape).reshape(-1) for key, v in kw.items()}
        exact = reference(x.reshape(-1), t.reshape(-1), **full)
        e.values(call(x, t, reduction="none", **kw), *_dd(exact))
        e.scalar(call(x, t, reduction="sum", **kw), _total(exact))
        e.scalar(call(x, t, **kw), _total(exact, x.size))
    return e


def measure_bce_with_logits(dtype, cases):
    rng = np.random.default_rng(4)
    out = []
    for name, x, t in cases:
        k = x.shape[1]
        pw = _as(dtype, _few_values(rng, k, 0.5, 3.0))
        w = _as(dtype, _few_values(rng, k, 0.5, 1.5))

        def reference(x, t, weight=None, pos_weight=None):
            return ref_bce_logits(x, t, np.ones_like(x) if weight is None else weight,
                                  np.ones_like(x) if pos_weight is None else pos_weight)

        out.append((name, _bce_measure(
            dtype, x, t, ({}, {"pos_weight": pw}, {"weight": w, "pos_weight": pw}),
            cecore.binary_cross_entropy_with_logits, reference)))
    return out


def measure_bce(dtype, cases):
    rng = np.random.default_rng(6)
    out = []
    for name, p, t in cases:
        w = _as(dtype, _few_values(rng, p.shape[1], 0.5, 1.5))

        def reference(p, t, weight=None):
            return ref_bce_probs(p, t, np.ones_like(p) if weight is None else weight)

        out.append((name, _bce_measure(dtype, p, t, ({}, {"weight": w}),
                                       cecore.binary_cross_entropy, reference)))
    return out


def _measure_divergence(kind, dtype, cases):
    fn = getattr(cecore, kind)
    out = []
    for name, p, q in cases:
        rng = np.random.default_rng(8)
        measure = _few_values(rng, p.shape[1], 0.25, 1.25)
        e = Errors(_reduced(dtype), None)
        for base, meas in ((None, None), (2, None), (None, measure), (None, 0.125)):
            values, conds = ref_divergence(kind, p, p if kind == "entropy" else q, meas, base)
            args = (p,) if kind == "entropy" else (p, q)
            e.values(fn(*args, base=base, measure=meas), *_dd(values),
                     floor=np.array([float(c) for c in conds]))
        out.append((name, e))
    return out


def measure_entropy(dtype, cases):
    return _measure_divergence("entropy", dtype, cases)


def measure_cross_entropy_pq(dtype, cases):
    return _measure_divergence("cross_entropy_pq", dtype, cases)


def measure_kl_divergence(dtype, cases):
    return _measure_divergence("kl_divergence", dtype, cases)


FUNCTIONS = {
    "logsumexp": (measure_logsumexp, logit_cases),
    "log_softmax": (measure_log_softmax, logit_cases),
    "softmax": (measure_softmax, logit_cases),
    "cross_entropy (class index)": (measure_cross_entropy_index, logit_cases),
    "cross_entropy (probabilities)": (measure_cross_entropy_prob, logit_cases),
    "nll_loss": (measure_nll_loss, logit_cases),
    "binary_cross_entropy_with_logits": (measure_bce_with_logits, bce_logit_cases),
    "binary_cross_entropy": (measure_bce, bce_prob_cases),
    "entropy": (measure_entropy, prob_cases),
    "cross_entropy_pq": (measure_cross_entropy_pq, prob_cases),
    "kl_divergence": (measure_kl_divergence, prob_cases),
}

# Asserted bounds in ulps (unit: module docstring) as (elementwise or per row,
# reduced "mean"/"sum"; None: no reduction): the maximum measured with the
# AVX-512, AVX2 and baseline kernels (CECORE_SIMD=...) plus a margin of about
# 25% (50% for float64 reductions, whose rounding depends on the summation
# order a compiler picks; the sanitizer build sums differently). README
# "Guarantees" says where the larger numbers come from.
BOUNDS = {
    ("logsumexp", np.float32): (1.7, None),
    ("logsumexp", np.float64): (1.8, None),
    ("log_softmax", np.float32): (2.3, None),
    ("log_softmax", np.float64): (2.7, None),
    ("softmax", np.float32): (80, None),
    ("softmax", np.float64): (160, None),
    ("cross_entropy (class index)", np.float32): (2, 1),
    ("cross_entropy (class index)", np.float64): (5, 6.6),
    ("cross_entropy (probabilities)", np.float32): (1.6, 1),
    ("cross_entropy (probabilities)", np.float64): (30, 14),
    ("nll_loss", np.float32): (0.51, 1),
    ("nll_loss", np.float64): (1.25, 4.5),
    ("binary_cross_entropy_with_logits", np.float32): (4.9, 1),
    ("binary_cross_entropy_with_logits", np.float64): (3.5, 3.7),
    ("binary_cross_entropy", np.float32): (3.7, 1),
    ("binary_cross_entropy", np.float64): (3, 3.9),
    ("entropy", np.float32): (1.5, None),
    ("entropy", np.float64): (2, None),
    ("cross_entropy_pq", np.float32): (1.3, None),
    ("cross_entropy_pq", np.float64): (1.8, None),
    ("kl_divergence", np.float32): (1.5, None),
    ("kl_divergence", np.float64): (1.5, None),
}

_MEASURED = {}


def measure(function, dtype, family=None):
    """[(case name, Errors)] of one function and dtype on a case family (by default
    the function's own), cached per process."""
    fn, default = FUNCTIONS[function]
    family = family or default
    key = (function, dtype, family.__name__)
    if key not in _MEASURED:
        _MEASURED[key] = fn(dtype, family(dtype))
    return _MEASURED[key]


def _exceeding(results, bounds):
    bound_e, bound_r = bounds
    bad = []
    for name, e in results:
        if not e.elementwise <= bound_e:
            bad.append(f"{name}: {e.elementwise:.3g} ulp")
        if bound_r is not None and not e.reduction <= bound_r:
            bad.append(f"{name} (reduced): {e.reduction:.3g} ulp")
    return bad


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_error_bound(function, dtype):
    bounds = BOUNDS[(function, dtype)]
    bad = _exceeding(measure(function, dtype), bounds)
    assert not bad, f"{function} {np.dtype(dtype).name} exceeds {bounds} ulp: {bad}"


def _half_bounds(function):
    """16-bit input: the float32 bounds for reductions (float32 results); for
    log_softmax and softmax, rounded once from float32, half an ulp of the 16-bit
    type plus float32's error (at most 80 float32 ulps: 0.01 of a float16 ulp) -
    within one ulp, and tight enough that truncating instead of rounding fails."""
    if function in ("log_softmax", "softmax"):
        return (0.51, None)
    return BOUNDS[(function, np.float32)]


@pytest.mark.parametrize("dtype", HALVES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_error_bound_16bit_input(function, dtype):
    results = measure(function, dtype, HALF_FAMILIES[FUNCTIONS[function][1]])
    bounds = _half_bounds(function)
    bad = _exceeding(results, bounds)
    assert not bad, f"{function} {dtype.name} input exceeds {bounds} ulp: {bad}"
    if function in ("log_softmax", "softmax"):  # dtype=np.float32: the float32 bound
        as32 = [(name, e.as_float32) for name, e in results]
        bounds = BOUNDS[(function, np.float32)]
        bad = _exceeding(as32, bounds)
        assert not bad, f"{function} {dtype.name} input, dtype=float32: {bounds} ulp: {bad}"


# ---------------------------------------------------------------------------
# rows with a huge maximum: the kernels keep log S apart from the shift (main,
# "logsum"); forming lse = m + log S first lost log S entirely once
# ulp(m) > log S (softmax([1e17, 1e17]) was [1, 1] in float32 and float64)


LARGE_MAX = ["logsumexp", "log_softmax", "softmax", "cross_entropy (class index)",
             "cross_entropy (probabilities)"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("function", LARGE_MAX)
def test_large_row_maximum(function, dtype):
    results = measure(function, dtype, large_max_cases)
    assert not _exceeding(results, BOUNDS[(function, dtype)])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bce_with_logits_small_pos_weight(dtype):
    x = _as(dtype, np.linspace(-3, 20, 64))
    t = np.ones_like(x)
    pw = _as(dtype, np.full(64, 1e-3 + 1e-9))
    exact = ref_bce_logits(x.astype(float), t.astype(float), np.ones(64), pw.astype(float))
    got = cecore.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
    assert ulp_errors(got, *_dd(exact), dtype, _floor_tiny(dtype)).max() <= 4


@pytest.mark.parametrize("function", ["entropy", "cross_entropy_pq", "kl_divergence"])
def test_divergence_of_long_float64_rows(function):
    results = measure(function, np.float64, long_prob_rows)
    assert not _exceeding(results, (8, None))


@pytest.mark.parametrize("target", ["class index", "probabilities"])
def test_label_smoothing_near_dbl_max(target):
    big = np.finfo(np.float64).max
    x = np.array([[-big, -big, 0.0, 1.0]])
    t = np.array([3]) if target == "class index" else np.array([[0.0, 0.0, 0.5, 0.5]])
    got = cecore.cross_entropy(x, t, label_smoothing=0.1)
    assert math.isfinite(got) and got == pytest.approx(0.1 / 4 * 2 * big, rel=1e-12)


# ---------------------------------------------------------------------------
# special values (README, "Special values"): exact expectations, every dtype and path


@pytest.mark.parametrize("k", [3, 40], ids=["K=3 (block path)", "K=40 (row path)"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_special_rows(dtype, k):
    n = 20  # > 16: the AVX-512 16-row block path and its remainder
    x = np.zeros((n, k), dtype=dtype)
    x[0] = -INF  # all -inf row
    x[1, 0] = np.nan  # NaN: its own row only
    x[2, 1] = INF  # +inf
    x[3, 1:] = -INF  # one finite entry
    x[4, 0] = -INF  # a masked class
    lse = cecore.logsumexp(x)
    ls = cecore.log_softmax(x)
    sm = cecore.softmax(x)
    ce = cecore.cross_entropy(x, np.zeros(n, dtype=np.int64), reduction="none")
    assert lse[0] == -INF and np.isnan(ls[0]).all() and np.isnan(sm[0]).all() and np.isnan(ce[0])
    assert np.isnan(lse[1]) and np.isnan(ls[1]).all() and np.isnan(sm[1]).all()
    assert np.isnan(ls[2]).all() and np.isnan(sm[2]).all() and np.isnan(ce[2])
    assert lse[3] == 0 and ls[3, 0] == 0 and sm[3, 0] == 1 and (sm[3, 1:] == 0).all()
    assert (ls[3, 1:] == -INF).all() and ce[3] == 0
    assert sm[4, 0] == 0 and ls[4, 0] == -INF and ce[4] == INF
    # other rows are untouched by their neighbours' specials
    ok = np.arange(5, n)
    assert np.allclose(lse[ok], math.log(k)) and np.allclose(sm[ok], 1 / k)


@pytest.mark.parametrize("k", [3, 40])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_logsumexp_of_plus_inf_row(dtype, k):
    """+inf (and no NaN) gives +inf, as log(sum(exp(x))) and PyTorch/SciPy do (it was NaN)."""
    x = np.zeros((20, k), dtype=dtype)
    x[:, 1] = INF
    assert (cecore.logsumexp(x) == INF).all()


def test_divergence_special_values():
    for dtype in DTYPES:
        p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [np.nan, 0.5, 0.5]], dtype=dtype)
        q = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=dtype)
        assert cecore.entropy(p)[0] == pytest.approx(math.log(2))
        assert cecore.kl_divergence(p, q)[0] == 0  # 0 log(0/0) = 0
        assert cecore.kl_divergence(p, q)[1] == INF  # p > 0 = q
        assert cecore.cross_entropy_pq(p, q)[1] == INF
        assert np.isnan(cecore.entropy(p)[2]) and np.isnan(cecore.kl_divergence(p, q)[2])


def test_bce_special_values():
    for dtype in DTYPES:
        x = np.array([INF, -INF, INF, -INF, np.nan, 0.0], dtype=dtype)
        t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=dtype)
        got = cecore.binary_cross_entropy_with_logits(x, t, reduction="none")
        # the limits are 0, 0, inf, inf; PyTorch gives nan, nan, inf, nan (0 * inf)
        assert np.isnan(got[0]) or got[0] == 0
        assert np.isnan(got[1]) or got[1] == 0
        assert got[2] == INF and got[3] == INF and np.isnan(got[4])
        assert got[5] == pytest.approx(math.log(2), rel=1e-6)  # elementwise: no leaks
        p = np.array([0.0, 1.0, np.nan, 0.0], dtype=dtype)
        t = np.array([1.0, 0.0, 1.0, 0.0], dtype=dtype)
        got = cecore.binary_cross_entropy(p, t, reduction="none")
        assert got[0] == 100 and got[1] == 100 and np.isnan(got[2]) and got[3] == 0
        big = np.finfo(dtype).max
        x = np.array([big, -big, big, -big], dtype=dtype)
        t = np.array([0.0, 0.0, 1.0, 1.0], dtype=dtype)
        got = cecore.binary_cross_entropy_with_logits(x, t, reduction="none")
        assert got.tolist() == [big, 0.0, 0.0, big]


# ---------------------------------------------------------------------------


def _table():
    """Print the measured maximum errors (README "Guarantees")."""
    head = ("float32", "f32 reduced", "float64", "f64 reduced")
    print(f"{'function':34}" + "".join(f"{h:>12}" for h in head) + "   worst cases")
    for function in FUNCTIONS:
        cells, worst = [], []
        start = time.perf_counter()
        for dtype in DTYPES:
            results = measure(function, dtype)
            for attr in ("elementwise", "reduction"):
                name, e = max(results, key=lambda r: np.nan_to_num(getattr(r[1], attr), nan=-1))
                value = getattr(e, attr)
                cells.append("-" if math.isnan(value) else f"{value:.3g}")
                if not math.isnan(value):
                    worst.append(name)
        print(f"{function:34}" + "".join(f"{c:>12}" for c in cells)
              + f"   {'; '.join(dict.fromkeys(worst))}  [{time.perf_counter() - start:.1f} s]")
    print("large row maximum:")
    for function in LARGE_MAX:
        cells = []
        for dtype in DTYPES:
            results = measure(function, dtype, large_max_cases)
            name, e = max(results, key=lambda r: r[1].elementwise)
            cells.append(f"{e.elementwise:10.3g} ({name})")
        print(f"  {function:32} {'  '.join(cells)}")


if __name__ == "__main__":
    _table()
