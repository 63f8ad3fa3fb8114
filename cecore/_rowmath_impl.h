/*
 * Row kernels of cecore, written once and compiled once per (dtype, ISA).
 *
 * This file is a template: _rowmath.h includes it several times with
 *   CEC_T    the element type (float or double)
 *   CEC_FN   a macro that decorates a function name with dtype and ISA suffixes
 *   CEC_ATTR a function attribute selecting the target ISA (may be empty)
 *   CEC_EXP / CEC_LOG1P  the element-wise exp and log1p for CEC_T
 * The loops are plain C under `#pragma omp simd` so that GCC/Clang vectorise
 * them for whichever ISA CEC_ATTR names; nothing here calls libm in a hot loop
 * for float (the float64 BCE loop does, and stays scalar).
 *
 * Sums are accumulated in double, in an order fixed by the ISA alone, so a
 * row's result never depends on the number of threads.
 */

#ifndef CEC_HAND_WRITTEN_MAX
/* Largest element of x[0:n]; NaNs are skipped (they poison the sum later). */
CEC_ATTR static CEC_T CEC_FN(row_max)(const CEC_T *x, cec_intp n)
{
    CEC_T m = -CEC_INFINITY;
#pragma omp simd reduction(max : m)
    for (cec_intp i = 0; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    return m;
}
#endif

#ifndef CEC_HAND_WRITTEN_EXPSUM
/*
 * sum_i exp(x_i - shift) in double, for shift >= max_i x_i: float partial sums
 * over chunks of 256 elements (16 terms per lane, each <= 1), added in double.
 * The tail that does not fill a whole vector goes through a padded 16-element
 * buffer so that it runs vectorised too (a scalar tail costs ~10% at K = 1000).
 */
CEC_ATTR static double CEC_FN(row_sumexp)(const CEC_T *x, cec_intp n, CEC_T shift)
{
    double s = 0.0;
    cec_intp body = n - n % 16;
    cec_intp c = 0;
    for (; c + 256 <= body; c += 256) {
        CEC_T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (cec_intp i = c; i < c + 256; i++) {
            acc += CEC_EXPSUM(x[i] - shift);
        }
        s += (double)acc;
    }
#pragma omp simd reduction(+ : s)
    for (cec_intp i = c; i < body; i++) {
        s += (double)CEC_EXPSUM(x[i] - shift);
    }
    if (body < n) {
        CEC_T tail[16];
        for (int i = 0; i < 16; i++) {
            tail[i] = body + i < n ? x[body + i] - shift : -CEC_INFINITY;
        }
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < 16; i++) {
            s += (double)CEC_EXPSUM(tail[i]);
        }
    }
    return s;
}

/* a_i = exp(a_i) for a_i <= 0, flushing results below the normal range to 0. */
CEC_ATTR static void CEC_FN(expsum_inplace)(CEC_T *a, cec_intp n)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        a[i] = CEC_EXPSUM(a[i]);
    }
}
#endif

/*
 * Log-sum-exp of one row, split as lse = shift + logsum with shift the row
 * maximum (0 when there is no finite maximum): returns logsum and stores the
 * maximum in *rowmax. Keeping the two apart lets callers form lse - x_j as
 * logsum + (shift - x_j) without rounding lse first, which would lose logsum
 * entirely next to a huge shift (a row of -1e38 must give log(K), not 0).
 * Long rows are taken in L1-sized chunks (chunk maximum, then the chunk's
 * exponentials relative to the running maximum, the running sum rescaled when
 * the maximum grows), so that memory is read once and the second look at each
 * element hits L1. An all -inf row gives logsum = -inf; a NaN anywhere gives
 * NaN; +inf gives NaN (inf - inf), as in PyTorch.
 */
CEC_ATTR static double CEC_FN(row_lse)(const CEC_T *x, cec_intp n, CEC_T *rowmax)
{
    const cec_intp chunk = 4096;
    CEC_T m = -CEC_INFINITY;
    double s = 0.0;
    for (cec_intp c = 0; c < n; c += chunk) {
        cec_intp len = n - c < chunk ? n - c : chunk;
        CEC_T cm = CEC_FN(row_max)(x + c, len);
        if (cm > m) {
            s = m == -CEC_INFINITY ? 0.0 : s * exp((double)m - (double)cm);
            m = cm;
        }
        if (m != -CEC_INFINITY) {
            s += CEC_FN(row_sumexp)(x + c, len, m);
        }
    }
    *rowmax = m;
    if (m == -CEC_INFINITY) {
        /* no finite maximum: 0 for an all -inf row, NaN if a NaN was skipped */
        return log(CEC_FN(row_sumexp)(x, n, (CEC_T)0));
    }
    return log(s);
}

/* sum_i (x_i - shift) (w == NULL) or sum_i w_i (x_i - shift), in double. */
CEC_ATTR static double CEC_FN(row_wsum)(const double *w, const CEC_T *x, cec_intp n, double shift)
{
    double s = 0.0;
    if (w == NULL) {
#pragma omp simd reduction(+ : s)
        for (cec_intp i = 0; i < n; i++) {
            s += (double)x[i] - shift;
        }
    }
    else {
#pragma omp simd reduction(+ : s)
        for (cec_intp i = 0; i < n; i++) {
            s += w[i] * ((double)x[i] - shift);
        }
    }
    return s;
}

/*
 * Soft targets: returns sum_i w_i t_i (x_i - shift) and stores sum_i w_i t_i in
 * *tw_sum (w == NULL means w_i = 1). Terms with t_i == 0 contribute 0 even
 * where x_i = -inf (the convention 0 * log 0 = 0).
 */
CEC_ATTR static double CEC_FN(row_tdot)(const CEC_T *t, const double *w, const CEC_T *x,
                                        cec_intp n, double shift, double *tw_sum)
{
    double s = 0.0, ts = 0.0;
    if (w == NULL) {
#pragma omp simd reduction(+ : s, ts)
        for (cec_intp i = 0; i < n; i++) {
            double ti = (double)t[i];
            s += ti != 0.0 ? ti * ((double)x[i] - shift) : 0.0;
            ts += ti;
        }
    }
    else {
#pragma omp simd reduction(+ : s, ts)
        for (cec_intp i = 0; i < n; i++) {
            double wt = w[i] * (double)t[i];
            s += wt != 0.0 ? wt * ((double)x[i] - shift) : 0.0;
            ts += wt;
        }
    }
    *tw_sum = ts;
    return s;
}

/* out_i = exp(x_i - shift) * scale. out may alias x. */
CEC_ATTR static void CEC_FN(row_exp)(const CEC_T *x, cec_intp n, CEC_T shift, CEC_T scale,
                                     CEC_T *out)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        out[i] = CEC_EXP(x[i] - shift) * scale;
    }
}

/*
 * Gradient row of the softmax cross-entropy family:
 *   out_i = a exp(x_i - shift) - w_i (c1 t_i + c0)
 * with t == NULL meaning t_i = 0 and w == NULL meaning w_i = 1. With shift the
 * row maximum and a = s exp(shift - lse), a exp(x_i - shift) is s softmax(x)_i.
 * out may alias x (each element is read before it is written).
 */
CEC_ATTR static void CEC_FN(row_grad)(const CEC_T *x, const CEC_T *t, const double *w,
                                      cec_intp n, CEC_T shift, CEC_T a, CEC_T c1, CEC_T c0,
                                      CEC_T *out)
{
    if (t == NULL && w == NULL) {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = a * CEC_EXP(x[i] - shift) - c0;
        }
    }
    else if (t == NULL) {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = a * CEC_EXP(x[i] - shift) - (CEC_T)w[i] * c0;
        }
    }
    else if (w == NULL) {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = a * CEC_EXP(x[i] - shift) - (c1 * t[i] + c0);
        }
    }
    else {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = a * CEC_EXP(x[i] - shift) - (CEC_T)w[i] * (c1 * t[i] + c0);
        }
    }
}

/* out_i = (x_i - shift) - logsum, in double and rounded once. out may alias x. */
CEC_ATTR static void CEC_FN(row_sub)(const CEC_T *x, cec_intp n, double shift, double logsum,
                                     CEC_T *out)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        out[i] = (CEC_T)(((double)x[i] - shift) - logsum);
    }
}

/*
 * log-sum-exp of `rows` short rows of length k (row i starts at x + i*stride),
 * for small k where per-row loops cost more than the arithmetic. Writes
 * rowmax[i] and lse[i] = logsum relative to the shift, as row_lse returns it;
 * scratch holds at least rows * k elements.
 * Portable version: the shifted rows are packed into scratch so that exp runs
 * as one long vectorised loop. (On AVX-512, float32 blocks of 16 rows take the
 * gather-based version in _rowmath.h first.)
 */
CEC_ATTR static void CEC_FN(block_lse_packed)(const CEC_T *x, cec_intp rows, cec_intp stride,
                                              cec_intp k, CEC_T *scratch, CEC_T *rowmax,
                                              double *lse)
{
    for (cec_intp r = 0; r < rows; r++) {
        const CEC_T *xr = x + r * stride;
        CEC_T m = -CEC_INFINITY;
        for (cec_intp j = 0; j < k; j++) {
            m = xr[j] > m ? xr[j] : m;
        }
        rowmax[r] = m;
        /* an all -inf row would give -inf - -inf = NaN; shift it by 0 instead */
        CEC_T shift = m == -CEC_INFINITY ? (CEC_T)0 : m;
        CEC_T *sr = scratch + r * k;
        for (cec_intp j = 0; j < k; j++) {
            sr[j] = xr[j] - shift;
        }
    }
    CEC_FN(expsum_inplace)(scratch, rows * k);
    for (cec_intp r = 0; r < rows; r++) {
        const CEC_T *sr = scratch + r * k;
        double s = 0.0;
        for (cec_intp j = 0; j < k; j++) {
            s += (double)sr[j];
        }
        /* s is 0 for an all -inf row (-inf) and NaN if the row has a NaN */
        lse[r] = log(s);
    }
}

CEC_ATTR static void CEC_FN(block_lse)(const CEC_T *x, cec_intp rows, cec_intp stride,
                                       cec_intp k, CEC_T *scratch, CEC_T *rowmax, double *lse)
{
    cec_intp done = 0;
#ifdef CEC_BLOCK_LSE_ROWS16
    if (k <= 32) {
        CEC_BLOCK_LSE_ROWS16(x, rows, stride, k, scratch, rowmax, lse);
        done = rows - rows % 16;
    }
#endif
    CEC_FN(block_lse_packed)(x + done * stride, rows - done, stride, k, scratch,
                             rowmax + done, lse + done);
}

/*
 * Binary cross-entropy with logits over n elements, p = pos_weight:
 *   l_i = w_i [ p t log(1 + e^-x) + (1 - t) log(1 + e^x) ]
 * evaluated as a sum of non-negative terms (for t in [0, 1], p >= 0):
 *   x >= 0:  (1 - t) x   + (1 + (p - 1) t) log1p(e^-|x|)
 *   x <  0:  p t |x|     + (1 + (p - 1) t) log1p(e^-|x|)
 * PyTorch's (1 - t) x + (1 + (p - 1) t)(max(-x, 0) + log1p(e^-|x|)) cancels
 * to 0 for confident correct predictions; this form keeps full relative accuracy.
 * pw and w may be NULL (= 1). Writes l_i to out when out != NULL; returns the
 * sum in double.
 */
CEC_ATTR static double CEC_FN(bce_logits)(const CEC_T *x, const CEC_T *t, const CEC_T *pw,
                                          const CEC_T *w, cec_intp n, CEC_T *out)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (cec_intp i = 0; i < n; i++) {
        CEC_T xi = x[i], ti = t[i];
        CEC_T pi = pw == NULL ? (CEC_T)1 : pw[i];
        CEC_T ax = xi < 0 ? -xi : xi;
        CEC_T linear = xi < 0 ? pi * ti * ax : ((CEC_T)1 - ti) * xi;
        CEC_T lw = (CEC_T)1 + (pi - (CEC_T)1) * ti;
        CEC_T li = linear + lw * CEC_LOG1P(CEC_EXP(-ax));
        li = w == NULL ? li : li * w[i];
        if (out != NULL) {
            out[i] = li;
        }
        s += (double)li;
    }
    return s;
}

/*
 * Loss and gradient of BCE with logits: the loss as bce_logits (into out when
 * out != NULL), and grad_i = scale w_i [(1 + (p_i - 1) t_i) sigmoid(x_i) - p_i t_i],
 * with sigmoid from e = exp(-|x|) (1 / (1 + e), or e / (1 + e) for x < 0) so
 * that it is accurate in both tails. grad may alias x.
 */
CEC_ATTR static double CEC_FN(bce_logits_grad)(const CEC_T *x, const CEC_T *t, const CEC_T *pw,
                                               const CEC_T *w, cec_intp n, CEC_T scale,
                                               CEC_T *out, CEC_T *grad)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (cec_intp i = 0; i < n; i++) {
        CEC_T xi = x[i], ti = t[i];
        CEC_T pi = pw == NULL ? (CEC_T)1 : pw[i];
        CEC_T wi = w == NULL ? (CEC_T)1 : w[i];
        CEC_T ax = xi < 0 ? -xi : xi;
        CEC_T e = CEC_EXP(-ax);
        CEC_T linear = xi < 0 ? pi * ti * ax : ((CEC_T)1 - ti) * xi;
        CEC_T lw = (CEC_T)1 + (pi - (CEC_T)1) * ti;
        CEC_T li = wi * (linear + lw * CEC_LOG1P(e));
        CEC_T sig = (xi < 0 ? e : (CEC_T)1) / ((CEC_T)1 + e);
        if (out != NULL) {
            out[i] = li;
        }
        grad[i] = scale * wi * (lw * sig - pi * ti);
        s += (double)li;
    }
    return s;
}

/*
 * Binary cross-entropy of probabilities, logs clamped at -100 as in PyTorch:
 *   l_i = -w_i [ t_i max(log p_i, -100) + (1 - t_i) max(log1p(-p_i), -100) ]
 * Counts elements outside [0, 1] in *n_bad (NaN is not counted: it propagates).
 */
CEC_ATTR static double CEC_FN(bce_probs)(const CEC_T *p, const CEC_T *t, const CEC_T *w,
                                         cec_intp n, CEC_T *out, cec_intp *n_bad)
{
    double s = 0.0;
    cec_intp bad = 0;
#pragma omp simd reduction(+ : s, bad)
    for (cec_intp i = 0; i < n; i++) {
        CEC_T pi = p[i], ti = t[i];
        bad += (pi < 0) | (pi > 1);
        CEC_T lp = CEC_LOG(pi), lq = CEC_LOG1P(-pi);
        lp = lp > (CEC_T)-100 ? lp : (CEC_T)-100;
        lq = lq > (CEC_T)-100 ? lq : (CEC_T)-100;
        /* keep NaN inputs NaN: the clamps above would turn them into -100 */
        lp = pi != pi ? pi : lp;
        CEC_T li = -(ti * lp + ((CEC_T)1 - ti) * lq);
        li = w == NULL ? li : li * w[i];
        if (out != NULL) {
            out[i] = li;
        }
        s += (double)li;
    }
    *n_bad = bad;
    return s;
}
