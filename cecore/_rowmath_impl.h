/*
 * Row kernels of cecore, written once and compiled once per (input type, ISA).
 *
 * This file is a template: _rowmath.h includes it several times with
 *   CEC_IN   the element type in memory (float, double, cec_bf16_t, cec_f16_t)
 *   CEC_T    the type computed in (float for float and the 16-bit types, double)
 *   CEC_LD(v)  an element of CEC_IN as CEC_T; CEC_ST(v) a CEC_T rounded to CEC_IN
 *   CEC_FN   a macro that decorates a function name with type and ISA suffixes
 *   CEC_ATTR a function attribute selecting the target ISA (may be empty)
 *   CEC_EXP / CEC_LOG1P  the element-wise exp and log1p for CEC_T
 * Logits are only ever read through CEC_LD, so a new input type needs a load
 * function, not new loops. Targets, weights and per-row losses are CEC_T;
 * gradients are written in the input's type.
 * The loops are plain C under `#pragma omp simd` so that GCC/Clang vectorise
 * them for whichever ISA CEC_ATTR names; nothing here calls libm in a hot loop
 * for float (the float64 BCE loop does, and stays scalar).
 *
 * Sums are accumulated in double, in an order fixed by the ISA alone, so a
 * row's result never depends on the number of threads.
 */

#ifndef CEC_HAND_WRITTEN_MAX
/* Largest element of x[0:n]; NaNs are skipped (they poison the sum later). */
CEC_ATTR static CEC_T CEC_FN(row_max)(const CEC_IN *x, cec_intp n)
{
    CEC_T m = -CEC_INFINITY;
#pragma omp simd reduction(max : m)
    for (cec_intp i = 0; i < n; i++) {
        CEC_T v = CEC_LD(x[i]);
        m = v > m ? v : m;
    }
    return m;
}
#endif

#ifndef CEC_HAND_WRITTEN_ROW_SUMEXP
/*
 * sum over x_i != shift of exp(x_i - shift), in double, and *n_eq = the number
 * of x_i == shift. With shift the row maximum the row's sum of exponentials is
 * 1 + (this + n_eq - 1): keeping the maximum's 1 out of the sum keeps the rest
 * to full relative accuracy (log_softmax of a dominant class is -log1p(rest)).
 * Float partial sums over chunks of 256 elements (16 terms per lane, each
 * <= 1), added in double. The tail that does not fill a whole vector goes
 * through a padded 16-element buffer so that it runs vectorised too.
 */
CEC_ATTR static double CEC_FN(row_sumexp)(const CEC_IN *x, cec_intp n, CEC_T shift,
                                          cec_intp *n_eq)
{
    double s = 0.0;
    cec_intp eq = 0;
    cec_intp body = n - n % 16;
    cec_intp c = 0;
    for (; c + 256 <= body; c += 256) {
        CEC_T acc = 0;
#pragma omp simd reduction(+ : acc, eq)
        for (cec_intp i = c; i < c + 256; i++) {
            CEC_T d = CEC_LD(x[i]) - shift;
            acc += d != 0 ? CEC_EXPSUM(d) : (CEC_T)0;
            eq += d == 0;
        }
        s += (double)acc;
    }
    CEC_T acc = 0;
#pragma omp simd reduction(+ : acc, eq)
    for (cec_intp i = c; i < body; i++) {
        CEC_T d = CEC_LD(x[i]) - shift;
        acc += d != 0 ? CEC_EXPSUM(d) : (CEC_T)0;
        eq += d == 0;
    }
    s += (double)acc;
    if (body < n) {
        CEC_T tail[16];
        for (int i = 0; i < 16; i++) {
            tail[i] = body + i < n ? CEC_LD(x[body + i]) - shift : -CEC_INFINITY;
        }
#pragma omp simd reduction(+ : s, eq)
        for (int i = 0; i < 16; i++) {
            s += tail[i] != 0 ? (double)CEC_EXPSUM(tail[i]) : 0.0;
            eq += tail[i] == 0;
        }
    }
    *n_eq = eq;
    return s;
}
#endif

#ifndef CEC_HAND_WRITTEN_EXPSUM_INPLACE
/* a_i = exp(a_i) for a_i <= 0, flushing results below the normal range to 0. */
CEC_ATTR static void CEC_FN(expsum_inplace)(CEC_T *a, cec_intp n)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        a[i] = CEC_EXPSUM(a[i]);
    }
}
#endif

/* 1 if x[0:n] holds a NaN. */
CEC_ATTR static int CEC_FN(row_has_nan)(const CEC_IN *x, cec_intp n)
{
    int nan = 0;
#pragma omp simd reduction(| : nan)
    for (cec_intp i = 0; i < n; i++) {
        CEC_T v = CEC_LD(x[i]);
        nan |= v != v;
    }
    return nan;
}

/*
 * Log-sum-exp of one row, split as lse = shift + logsum with shift the row
 * maximum (0 when there is no finite maximum): returns logsum and stores the
 * maximum in *rowmax. Keeping the two apart lets callers form lse - x_j as
 * logsum + (shift - x_j) without rounding lse first, which would lose logsum
 * entirely next to a huge shift (a row of -1e38 must give log(K), not 0).
 * logsum = log1p(rest + ties - 1) where rest sums the exponentials of the
 * elements below the maximum and ties counts those equal to it: no rounding of
 * 1 + rest, so a dominant class keeps full relative accuracy.
 * Long rows are taken in L1-sized chunks (chunk maximum, then the chunk's
 * exponentials relative to the running maximum, the running sums rescaled when
 * the maximum grows), so that memory is read once and the second look at each
 * element hits L1. An all -inf row gives -inf; a NaN anywhere gives NaN; a
 * +inf (and no NaN) gives shift = +inf and logsum = 0, so lse = +inf.
 */
CEC_ATTR static double CEC_FN(row_lse)(const CEC_IN *x, cec_intp n, CEC_T *rowmax)
{
    const cec_intp chunk = 4096;
    CEC_T m = -CEC_INFINITY;
    double rest = 0.0;
    cec_intp ties = 0, eq;
    for (cec_intp c = 0; c < n; c += chunk) {
        cec_intp len = n - c < chunk ? n - c : chunk;
        CEC_T cm = CEC_FN(row_max)(x + c, len);
        if (cm > m) {
            /* the old maximum's ties become ordinary terms of the new rest */
            rest = m == -CEC_INFINITY ? 0.0 : (rest + (double)ties) * exp((double)m - (double)cm);
            ties = 0;
            m = cm;
        }
        if (m != -CEC_INFINITY) {
            rest += CEC_FN(row_sumexp)(x + c, len, m, &eq);
            ties += eq;
        }
    }
    *rowmax = m;
    if (m == -CEC_INFINITY) {
        /* no finite maximum: log 0 = -inf for an all -inf row, NaN if a NaN was skipped */
        return CEC_FN(row_has_nan)(x, n) ? (double)NAN : -CEC_INFINITY;
    }
    if (m == CEC_INFINITY) {
        return CEC_FN(row_has_nan)(x, n) ? (double)NAN : 0.0;
    }
    return log1p(rest + (double)(ties - 1));
}

/*
 * row_lse of `rows` rows (row r at x + r * stride): logsum into lse[r], the maximum into
 * rowmax[r]. Rows of up to one chunk are taken four at a time, so that the rows' max,
 * sum and log1p (chains of dependent steps: at a few hundred elements one row alone
 * leaves the core waiting on them) overlap. Each row gets row_lse's arithmetic in
 * row_lse's order, so the results are the same bit for bit; a group with a row
 * without a finite maximum goes through row_lse itself.
 */
CEC_ATTR static void CEC_FN(rows_lse)(const CEC_IN *x, cec_intp rows, cec_intp stride,
                                      cec_intp n, CEC_T *rowmax, double *lse)
{
    cec_intp r = 0;
    if (n <= 4096) { /* row_lse's chunk: its loop runs once */
        for (; r + 4 <= rows; r += 4) {
            const CEC_IN *p[4];
            CEC_T m[4];
            double rest[4];
            cec_intp ties[4];
            int finite = 1;
            for (int i = 0; i < 4; i++) {
                p[i] = x + (r + i) * stride;
                m[i] = CEC_FN(row_max)(p[i], n);
                finite &= m[i] > -CEC_INFINITY && m[i] < CEC_INFINITY;
            }
            if (!finite) {
                for (int i = 0; i < 4; i++) {
                    lse[r + i] = CEC_FN(row_lse)(p[i], n, rowmax + r + i);
                }
                continue;
            }
            /* as row_lse: rest = 0.0, then rest += row_sumexp; ties = 0, then += eq */
            for (int i = 0; i < 4; i++) {
                rest[i] = 0.0;
                rest[i] += CEC_FN(row_sumexp)(p[i], n, m[i], &ties[i]);
            }
            for (int i = 0; i < 4; i++) {
                rowmax[r + i] = m[i];
                lse[r + i] = log1p(rest[i] + (double)(ties[i] - 1));
            }
        }
    }
    for (; r < rows; r++) {
        lse[r] = CEC_FN(row_lse)(x + r * stride, n, rowmax + r);
    }
}

/*
 * sum_i c (x_i - shift) (w == NULL) or sum_i c w_i (x_i - shift), in double.
 * With c = 1/n this is a mean, which cannot overflow where the sum of logits
 * near the dtype's maximum would.
 */
CEC_ATTR static double CEC_FN(row_wsum)(const double *w, const CEC_IN *x, cec_intp n, double shift,
                                        double c)
{
    double s = 0.0;
    if (w == NULL) {
#pragma omp simd reduction(+ : s)
        for (cec_intp i = 0; i < n; i++) {
            s += c * ((double)CEC_LD(x[i]) - shift);
        }
    }
    else {
#pragma omp simd reduction(+ : s)
        for (cec_intp i = 0; i < n; i++) {
            s += (c * w[i]) * ((double)CEC_LD(x[i]) - shift);
        }
    }
    return s;
}

/*
 * Soft targets: returns sum_i w_i t_i (x_i - shift) and stores sum_i w_i t_i in
 * *tw_sum (w == NULL means w_i = 1). Terms with t_i == 0 contribute 0 even
 * where x_i = -inf (the convention 0 * log 0 = 0).
 */
CEC_ATTR static double CEC_FN(row_tdot)(const CEC_T *t, const double *w, const CEC_IN *x,
                                        cec_intp n, double shift, double *tw_sum)
{
    double s = 0.0, ts = 0.0;
    if (w == NULL) {
#pragma omp simd reduction(+ : s, ts)
        for (cec_intp i = 0; i < n; i++) {
            double ti = (double)t[i];
            s += ti != 0.0 ? ti * ((double)CEC_LD(x[i]) - shift) : 0.0;
            ts += ti;
        }
    }
    else {
#pragma omp simd reduction(+ : s, ts)
        for (cec_intp i = 0; i < n; i++) {
            double wt = w[i] * (double)t[i];
            s += wt != 0.0 ? wt * ((double)CEC_LD(x[i]) - shift) : 0.0;
            ts += wt;
        }
    }
    *tw_sum = ts;
    return s;
}

#if !defined(CEC_HAND_WRITTEN_ROW_OUT) && !defined(CEC_HAND_WRITTEN_ROW_GRAD)
/*
 * Gradient row of the softmax cross-entropy family:
 *   out_i = a exp(x_i - shift) - w_i (c1 t_i + c0)
 * with t == NULL meaning t_i = 0 and w == NULL meaning w_i = 1. With shift the
 * row maximum and a = s exp(shift - lse), a exp(x_i - shift) is s softmax(x)_i.
 * out may alias x (each element is read before it is written).
 */
CEC_ATTR static void CEC_FN(row_grad)(const CEC_IN *x, const CEC_T *t, const double *w,
                                      cec_intp n, CEC_T shift, CEC_T a, CEC_T c1, CEC_T c0,
                                      CEC_IN *out)
{
    if (t == NULL && w == NULL) {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = CEC_ST(a * CEC_EXP(CEC_LD(x[i]) - shift) - c0);
        }
    }
    else if (t == NULL) {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = CEC_ST(a * CEC_EXP(CEC_LD(x[i]) - shift) - (CEC_T)w[i] * c0);
        }
    }
    else if (w == NULL) {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = CEC_ST(a * CEC_EXP(CEC_LD(x[i]) - shift) - (c1 * t[i] + c0));
        }
    }
    else {
#pragma omp simd
        for (cec_intp i = 0; i < n; i++) {
            out[i] = CEC_ST(a * CEC_EXP(CEC_LD(x[i]) - shift) - (CEC_T)w[i] * (c1 * t[i] + c0));
        }
    }
}
#endif

/*
 * log-sum-exp of `rows` short rows of length k (row i starts at x + i*stride),
 * for small k where per-row loops cost more than the arithmetic. Writes
 * rowmax[i] and lse[i] = logsum relative to the shift, as row_lse returns it;
 * scratch holds at least rows * k elements.
 * Portable version: the shifted rows are packed into scratch so that exp runs
 * as one long vectorised loop. (On AVX-512 and AVX2, float32 blocks of 16 or 8 rows take
 * the transposing versions in _rowmath.h first.)
 */
CEC_ATTR static void CEC_FN(block_lse_packed)(const CEC_IN *x, cec_intp rows, cec_intp stride,
                                              cec_intp k, CEC_T *scratch, CEC_T *rowmax,
                                              double *lse)
{
    for (cec_intp r = 0; r < rows; r++) {
        const CEC_IN *xr = x + r * stride;
        CEC_T m = -CEC_INFINITY;
        for (cec_intp j = 0; j < k; j++) {
            CEC_T v = CEC_LD(xr[j]);
            m = v > m ? v : m;
        }
        rowmax[r] = m;
        /* an all -inf row would give -inf - -inf = NaN; shift it by 0 instead */
        CEC_T shift = m == -CEC_INFINITY ? (CEC_T)0 : m;
        CEC_T *sr = scratch + r * k;
        for (cec_intp j = 0; j < k; j++) {
            sr[j] = CEC_LD(xr[j]) - shift;
        }
    }
    CEC_FN(expsum_inplace)(scratch, rows * k);
    for (cec_intp r = 0; r < rows; r++) {
        const CEC_IN *xr = x + r * stride;
        const CEC_T *sr = scratch + r * k;
        CEC_T m = rowmax[r];
        double rest = 0.0;
        cec_intp ties = 0;
        for (cec_intp j = 0; j < k; j++) {
            /* as in row_lse: the maximum's 1 stays out of the sum */
            int tie = CEC_LD(xr[j]) == m;
            rest += tie ? 0.0 : (double)sr[j];
            ties += tie;
        }
        /* an all -inf row has rest = 0 and ties = k: log of the plain sum (0) */
        lse[r] = m == -CEC_INFINITY ? log(rest) : log1p(rest + (double)(ties - 1));
    }
}

CEC_ATTR static void CEC_FN(block_lse)(const CEC_IN *x, cec_intp rows, cec_intp stride,
                                       cec_intp k, CEC_T *scratch, CEC_T *rowmax, double *lse)
{
#ifdef CEC_BLOCK_LSE_ROWS
    if (k <= 32) {
        CEC_BLOCK_LSE_ROWS(x, rows, stride, k, scratch, rowmax, lse);
        cec_intp done = rows - rows % CEC_BLOCK_LSE_GROUP;
        if (done < rows) {
            /* the last rows go through the same kernel, padded to a full group,
               so that a row's result never depends on where it sits in a batch */
            CEC_IN pad[CEC_BLOCK_LSE_GROUP * 32];
            CEC_T pad_max[CEC_BLOCK_LSE_GROUP];
            double pad_lse[CEC_BLOCK_LSE_GROUP];
            memset(pad, 0, sizeof pad);
            for (cec_intp r = done; r < rows; r++) {
                memcpy(pad + (r - done) * k, x + r * stride, (size_t)k * sizeof(CEC_IN));
            }
            CEC_BLOCK_LSE_ROWS(pad, CEC_BLOCK_LSE_GROUP, k, k, scratch, pad_max, pad_lse);
            for (cec_intp r = done; r < rows; r++) {
                rowmax[r] = pad_max[r - done];
                lse[r] = pad_lse[r - done];
            }
        }
    }
    else
#endif
    {
        CEC_FN(block_lse_packed)(x, rows, stride, k, scratch, rowmax, lse);
    }
    int any_inf = 0;
#pragma omp simd reduction(| : any_inf)
    for (cec_intp r = 0; r < rows; r++) {
        any_inf |= rowmax[r] == CEC_INFINITY;
    }
    for (cec_intp r = 0; any_inf && r < rows; r++) {
        /* a +inf maximum: lse = +inf unless the row holds a NaN (see row_lse) */
        if (rowmax[r] == CEC_INFINITY) {
            lse[r] = CEC_FN(row_has_nan)(x + r * stride, k) ? (double)NAN : 0.0;
        }
    }
}

/*
 * The binary kernels below run over sub-chunks of CEC_BCE_CHUNK elements with
 * every pointer valid inside the vector loop: absent weights point at a local
 * array of ones, and losses always go to a stack buffer (copied out when
 * wanted). A NULL test or conditional store inside the loop would stop GCC
 * from vectorising it.
 */
#ifndef CEC_BCE_CHUNK
#define CEC_BCE_CHUNK 256
#endif

#ifndef CEC_HAND_WRITTEN_BCE_LOGITS
/*
 * Binary cross-entropy with logits over n elements, p = pos_weight:
 *   l_i = w_i [ p t log(1 + e^-x) + (1 - t) log(1 + e^x) ]
 * evaluated as a sum of non-negative terms (for t in [0, 1], p >= 0):
 *   x >= 0:  (1 - t) x   + (1 + (p - 1) t) log1p(e^-|x|)
 *   x <  0:  p t |x|     + (1 + (p - 1) t) log1p(e^-|x|)
 * with 1 + (p - 1) t formed as (1 - t) + p t (exact for small p and t ~ 1).
 * PyTorch's (1 - t) x + (1 + (p - 1) t)(max(-x, 0) + log1p(e^-|x|)) cancels
 * to 0 for confident correct predictions; this form keeps full relative
 * accuracy. pw, w, out and grad may be NULL (weights then 1). With grad, also
 *   grad_i = scale w_i [(1 + (p - 1) t) sigmoid(x_i) - p t]
 * with sigmoid from e = exp(-|x|) (1 / (1 + e), or e / (1 + e) for x < 0),
 * accurate in both tails. grad may alias x. Returns sum_i l_i in double.
 */
CEC_ATTR static double CEC_FN(bce_logits_grad)(const CEC_IN *x, const CEC_T *t, const CEC_T *pw,
                                               const CEC_T *w, cec_intp n, CEC_T scale,
                                               CEC_T *out, CEC_IN *grad)
{
    CEC_T ones[CEC_BCE_CHUNK], loss[CEC_BCE_CHUNK], dx[CEC_BCE_CHUNK];
    double s = 0.0;
    for (int i = 0; i < CEC_BCE_CHUNK; i++) {
        ones[i] = (CEC_T)1;
    }
    for (cec_intp c = 0; c < n; c += CEC_BCE_CHUNK) {
        cec_intp len = n - c < CEC_BCE_CHUNK ? n - c : CEC_BCE_CHUNK;
        const CEC_IN *xc = x + c;
        const CEC_T *tc = t + c;
        const CEC_T *pc = pw == NULL ? ones : pw + c;
        const CEC_T *wc = w == NULL ? ones : w + c;
#pragma omp simd reduction(+ : s)
        for (cec_intp i = 0; i < len; i++) {
            CEC_T xi = CEC_LD(xc[i]), ti = tc[i], pi = pc[i];
            CEC_T ax = xi < 0 ? -xi : xi;
            CEC_T e = CEC_EXP(-ax);
            CEC_T linear = xi < 0 ? pi * ti * ax : ((CEC_T)1 - ti) * xi;
            CEC_T lw = ((CEC_T)1 - ti) + pi * ti;
            CEC_T li = wc[i] * (linear + lw * CEC_LOG1P_UNIT(e));
            CEC_T sig = (xi < 0 ? e : (CEC_T)1) / ((CEC_T)1 + e);
            loss[i] = li;
            dx[i] = scale * wc[i] * (lw * sig - pi * ti);
            s += (double)li;
        }
        if (out != NULL) {
            memcpy(out + c, loss, (size_t)len * sizeof(CEC_T));
        }
        if (grad != NULL) {
            for (cec_intp i = 0; i < len; i++) {
                grad[c + i] = CEC_ST(dx[i]);
            }
        }
    }
    return s;
}

/* Loss only (see bce_logits_grad): skips the sigmoid and gradient work. */
CEC_ATTR static double CEC_FN(bce_logits)(const CEC_IN *x, const CEC_T *t, const CEC_T *pw,
                                          const CEC_T *w, cec_intp n, CEC_T *out)
{
    CEC_T ones[CEC_BCE_CHUNK], loss[CEC_BCE_CHUNK];
    double s = 0.0;
    for (int i = 0; i < CEC_BCE_CHUNK; i++) {
        ones[i] = (CEC_T)1;
    }
    for (cec_intp c = 0; c < n; c += CEC_BCE_CHUNK) {
        cec_intp len = n - c < CEC_BCE_CHUNK ? n - c : CEC_BCE_CHUNK;
        const CEC_IN *xc = x + c;
        const CEC_T *tc = t + c;
        const CEC_T *pc = pw == NULL ? ones : pw + c;
        const CEC_T *wc = w == NULL ? ones : w + c;
#pragma omp simd reduction(+ : s)
        for (cec_intp i = 0; i < len; i++) {
            CEC_T xi = CEC_LD(xc[i]), ti = tc[i], pi = pc[i];
            CEC_T ax = xi < 0 ? -xi : xi;
            CEC_T linear = xi < 0 ? pi * ti * ax : ((CEC_T)1 - ti) * xi;
            CEC_T lw = ((CEC_T)1 - ti) + pi * ti;
            CEC_T li = wc[i] * (linear + lw * CEC_LOG1P_UNIT(CEC_EXP(-ax)));
            loss[i] = li;
            s += (double)li;
        }
        if (out != NULL) {
            memcpy(out + c, loss, (size_t)len * sizeof(CEC_T));
        }
    }
    return s;
}
#endif

/*
 * Binary cross-entropy of probabilities, logs clamped at -100 as in PyTorch:
 *   l_i = -w_i [ t_i max(log p_i, -100) + (1 - t_i) max(log1p(-p_i), -100) ]
 * Counts elements outside [0, 1] in *n_bad (NaN is not counted: it propagates).
 */
CEC_ATTR static double CEC_FN(bce_probs)(const CEC_IN *p, const CEC_T *t, const CEC_T *w,
                                         cec_intp n, CEC_T *out, cec_intp *n_bad)
{
    CEC_T ones[CEC_BCE_CHUNK], loss[CEC_BCE_CHUNK];
    double s = 0.0;
    cec_intp bad = 0;
    for (int i = 0; i < CEC_BCE_CHUNK; i++) {
        ones[i] = (CEC_T)1;
    }
    for (cec_intp c = 0; c < n; c += CEC_BCE_CHUNK) {
        cec_intp len = n - c < CEC_BCE_CHUNK ? n - c : CEC_BCE_CHUNK;
        const CEC_IN *pc = p + c;
        const CEC_T *tc = t + c;
        const CEC_T *wc = w == NULL ? ones : w + c;
#pragma omp simd reduction(+ : s, bad)
        for (cec_intp i = 0; i < len; i++) {
            CEC_T pi = CEC_LD(pc[i]), ti = tc[i];
            bad += (pi < 0) | (pi > 1);
            CEC_T lp = CEC_LOG(pi), lq = CEC_LOG1P(-pi);
            lp = lp > (CEC_T)-100 ? lp : (CEC_T)-100;
            lq = lq > (CEC_T)-100 ? lq : (CEC_T)-100;
            /* keep NaN inputs NaN: the clamp above would turn them into -100 */
            lp = pi != pi ? pi : lp;
            CEC_T li = -wc[i] * (ti * lp + ((CEC_T)1 - ti) * lq);
            loss[i] = li;
            s += (double)li;
        }
        if (out != NULL) {
            memcpy(out + c, loss, (size_t)len * sizeof(CEC_T));
        }
    }
    *n_bad = bad;
    return s;
}

/*
 * ---- Soft-capped logits (Gemma 2): cap(x) = c tanh(x inv_c), inv_c = 1 / c ----
 * Each function is its plain counterpart above applied to cap(x_i), computed on
 * the fly from the logits (nothing capped is stored). cap is increasing, so the
 * capped row maximum is cap(row maximum); cap(+-inf) = +-c, so a capped row is
 * always finite (or NaN).
 */
#define CEC_CAP(v) (c * CEC_TANH((v) * inv_c))
#ifndef CEC_SOFTCAP_CHUNK
#define CEC_SOFTCAP_CHUNK 256
#endif

#ifdef CEC_HAND_WRITTEN_SOFTCAP
/* the ISA's vector tanh for the row maximum too, so that it ties with itself */
#define CEC_CAP1(v) cec_softcap1_avx512((v), c, inv_c)
#else
#define CEC_CAP1(v) CEC_CAP(v)

/* out_i = cap(x_i). */
CEC_ATTR static void CEC_FN(softcap_row)(const CEC_IN *x, cec_intp n, CEC_T c, CEC_T inv_c,
                                         CEC_T *out)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        out[i] = CEC_CAP(CEC_LD(x[i]));
    }
}

/* cap(x_i) and cap'(x_i) = tanh'(x_i inv_c). */
CEC_ATTR static void CEC_FN(softcap_grad_row)(const CEC_IN *x, cec_intp n, CEC_T c, CEC_T inv_c,
                                              CEC_T *cap, CEC_T *d)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        CEC_T th;
        d[i] = CEC_TANH_GRAD(CEC_LD(x[i]) * inv_c, &th);
        cap[i] = c * th;
    }
}

/* row_sumexp of the capped logits: sum over cap(x_i) != shift of exp(cap(x_i) - shift). */
CEC_ATTR static double CEC_FN(row_sumexp_softcap)(const CEC_IN *x, cec_intp n, CEC_T shift,
                                                  CEC_T c, CEC_T inv_c, cec_intp *n_eq)
{
    double s = 0.0;
    cec_intp eq = 0;
    for (cec_intp c0 = 0; c0 < n; c0 += 256) {
        cec_intp end = n - c0 < 256 ? n : c0 + 256;
        CEC_T acc = 0;
#pragma omp simd reduction(+ : acc, eq)
        for (cec_intp i = c0; i < end; i++) {
            CEC_T d = CEC_CAP(CEC_LD(x[i])) - shift;
            acc += d != 0 ? CEC_EXPSUM(d) : (CEC_T)0;
            eq += d == 0;
        }
        s += (double)acc;
    }
    *n_eq = eq;
    return s;
}
#endif

/* row_lse of the capped logits (same chunked scheme); *rowmax = the capped maximum. */
CEC_ATTR static double CEC_FN(row_lse_softcap)(const CEC_IN *x, cec_intp n, CEC_T c, CEC_T inv_c,
                                               CEC_T *rowmax)
{
    const cec_intp chunk = 4096;
    CEC_T m = -CEC_INFINITY;
    double rest = 0.0;
    cec_intp ties = 0, eq;
    for (cec_intp c0 = 0; c0 < n; c0 += chunk) {
        cec_intp len = n - c0 < chunk ? n - c0 : chunk;
        CEC_T cm = CEC_CAP1(CEC_FN(row_max)(x + c0, len));
        if (cm > m) {
            rest = m == -CEC_INFINITY ? 0.0 : (rest + (double)ties) * exp((double)m - (double)cm);
            ties = 0;
            m = cm;
        }
        rest += CEC_FN(row_sumexp_softcap)(x + c0, len, m, c, inv_c, &eq);
        ties += eq;
    }
    *rowmax = m;
    if (n == 0 || m != m) {
        return n == 0 ? -CEC_INFINITY : (double)NAN;
    }
    /* a NaN anywhere makes rest NaN; no tie at all (NaN maximum chunk) leaves log1p(rest - 1) */
    return log1p(rest + (double)(ties - 1));
}

/*
 * row_wsum of the capped logits: sum_i cc w_i (cap(x_i) - shift). With n = 1,
 * w = NULL and cc = 1: cap(x_0) - shift, the capped value the other kernels use.
 */
CEC_ATTR static double CEC_FN(row_wsum_softcap)(const double *w, const CEC_IN *x, cec_intp n,
                                                double shift, double cc, CEC_T c, CEC_T inv_c)
{
    CEC_T cap[CEC_SOFTCAP_CHUNK];
    double s = 0.0;
    for (cec_intp c0 = 0; c0 < n; c0 += CEC_SOFTCAP_CHUNK) {
        cec_intp len = n - c0 < CEC_SOFTCAP_CHUNK ? n - c0 : CEC_SOFTCAP_CHUNK;
        CEC_FN(softcap_row)(x + c0, len, c, inv_c, cap);
        if (w == NULL) {
#pragma omp simd reduction(+ : s)
            for (cec_intp i = 0; i < len; i++) {
                s += cc * ((double)cap[i] - shift);
            }
        }
        else {
            const double *wc = w + c0;
#pragma omp simd reduction(+ : s)
            for (cec_intp i = 0; i < len; i++) {
                s += (cc * wc[i]) * ((double)cap[i] - shift);
            }
        }
    }
    return s;
}

/* row_tdot of the capped logits. */
CEC_ATTR static double CEC_FN(row_tdot_softcap)(const CEC_T *t, const double *w, const CEC_IN *x,
                                                cec_intp n, double shift, CEC_T c, CEC_T inv_c,
                                                double *tw_sum)
{
    CEC_T cap[CEC_SOFTCAP_CHUNK];
    double s = 0.0, ts = 0.0;
    for (cec_intp c0 = 0; c0 < n; c0 += CEC_SOFTCAP_CHUNK) {
        cec_intp len = n - c0 < CEC_SOFTCAP_CHUNK ? n - c0 : CEC_SOFTCAP_CHUNK;
        const CEC_T *tc = t + c0;
        const double *wc = w == NULL ? NULL : w + c0;
        CEC_FN(softcap_row)(x + c0, len, c, inv_c, cap);
#pragma omp simd reduction(+ : s, ts)
        for (cec_intp i = 0; i < len; i++) {
            double wt = (wc == NULL ? 1.0 : wc[i]) * (double)tc[i];
            s += wt != 0.0 ? wt * ((double)cap[i] - shift) : 0.0;
            ts += wt;
        }
    }
    *tw_sum = ts;
    return s;
}

#ifndef CEC_HAND_WRITTEN_GRAD_SOFTCAP
/*
 * row_grad through the cap: out_i = (a exp(cap(x_i) - shift) - w_i (c1 t_i + c0)) cap'(x_i)
 * with cap'(x) = tanh'(x inv_c) = 1 - tanh(x inv_c)^2. out may alias x (each
 * chunk is read whole before it is written).
 */
CEC_ATTR static void CEC_FN(row_grad_softcap)(const CEC_IN *x, const CEC_T *t, const double *w,
                                              cec_intp n, CEC_T shift, CEC_T a, CEC_T c1, CEC_T c0,
                                              CEC_T c, CEC_T inv_c, CEC_IN *out)
{
    CEC_T cap[CEC_SOFTCAP_CHUNK], d[CEC_SOFTCAP_CHUNK];
    for (cec_intp j = 0; j < n; j += CEC_SOFTCAP_CHUNK) {
        cec_intp len = n - j < CEC_SOFTCAP_CHUNK ? n - j : CEC_SOFTCAP_CHUNK;
        CEC_IN *o = out + j;
        CEC_FN(softcap_grad_row)(x + j, len, c, inv_c, cap, d);
        if (t == NULL && w == NULL) {
#pragma omp simd
            for (cec_intp i = 0; i < len; i++) {
                o[i] = CEC_ST((a * CEC_EXP(cap[i] - shift) - c0) * d[i]);
            }
        }
        else if (t == NULL) {
            const double *wc = w + j;
#pragma omp simd
            for (cec_intp i = 0; i < len; i++) {
                o[i] = CEC_ST((a * CEC_EXP(cap[i] - shift) - (CEC_T)wc[i] * c0) * d[i]);
            }
        }
        else {
            const CEC_T *tc = t + j;
            const double *wc = w == NULL ? NULL : w + j;
#pragma omp simd
            for (cec_intp i = 0; i < len; i++) {
                CEC_T wi = wc == NULL ? (CEC_T)1 : (CEC_T)wc[i];
                o[i] = CEC_ST((a * CEC_EXP(cap[i] - shift) - wi * (c1 * tc[i] + c0)) * d[i]);
            }
        }
    }
}
#endif
#undef CEC_CAP
#undef CEC_CAP1

/* row_exp and row_sub, whose output type is a parameter of their own */
#define CEC_OUT CEC_IN
#define CEC_STO CEC_ST
#define CEC_FO CEC_FN
#include "_rowmath_out.h"
#undef CEC_OUT
#undef CEC_STO
#undef CEC_FO

/* the column kernels (class axis not last) */
#include "_colmath_impl.h"
