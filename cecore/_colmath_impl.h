/*
 * Column kernels: the class axis not last. Included at the end of
 * _rowmath_impl.h, so compiled per (input type, ISA) with its parameters.
 *
 * A block holds CEC_COL_W positions side by side: logit of class c at lane l
 * is x[c * cs + l] (positions contiguous, classes cs elements apart), for
 * c < k and l < B <= CEC_COL_W. The loops run across the lanes, so they are
 * vectorised over positions rather than along the classes. col_lse copies the
 * block into buf (k rows of CEC_COL_W compute-type values, lanes >= B padded
 * with -inf), which the later passes read from cache in place of the strided
 * input. Each lane computes what row_lse computes for a row (the same maximum,
 * ties and special values; only the order of the float sums differs).
 */
#ifndef CEC_COL_W
#define CEC_COL_W 32
#endif

/*
 * Per lane l: rowmax[l] = the maximum over classes (NaNs skipped) and
 * logsum[l] = log1p(rest + ties - 1) as row_lse returns it (-inf for an all
 * -inf column, 0 for a +inf maximum, NaN when the column holds a NaN and its
 * maximum is not finite; otherwise a NaN makes rest NaN).
 */
CEC_ATTR static void CEC_FN(col_lse)(const CEC_IN *x, cec_intp k, cec_intp cs, cec_intp B,
                                     CEC_T *buf, CEC_T *rowmax, double *logsum)
{
    CEC_T m[CEC_COL_W], sh[CEC_COL_W];
    double rest[CEC_COL_W], ties[CEC_COL_W];
    for (int l = 0; l < CEC_COL_W; l++) {
        m[l] = -CEC_INFINITY;
        rest[l] = 0.0;
        ties[l] = 0.0;
    }
    for (cec_intp c = 0; c < k; c++) {
        const CEC_IN *xc = x + c * cs;
        CEC_T *bc = buf + c * CEC_COL_W;
        if (B == CEC_COL_W) {
#pragma omp simd
            for (int l = 0; l < CEC_COL_W; l++) {
                CEC_T v = CEC_LD(xc[l]);
                bc[l] = v;
                m[l] = v > m[l] ? v : m[l];
            }
        }
        else {
            for (int l = 0; l < CEC_COL_W; l++) {
                CEC_T v = l < B ? CEC_LD(xc[l]) : -CEC_INFINITY;
                bc[l] = v;
                m[l] = v > m[l] ? v : m[l];
            }
        }
    }
    for (int l = 0; l < CEC_COL_W; l++) {
        sh[l] = m[l] == -CEC_INFINITY ? (CEC_T)0 : m[l];
    }
    /* float sums over 256 classes per lane (each term <= 1), added in double */
    for (cec_intp c0 = 0; c0 < k; c0 += 256) {
        cec_intp end = k - c0 < 256 ? k : c0 + 256;
        CEC_T acc[CEC_COL_W], eq[CEC_COL_W];
        for (int l = 0; l < CEC_COL_W; l++) {
            acc[l] = 0;
            eq[l] = 0;
        }
        for (cec_intp c = c0; c < end; c++) {
            const CEC_T *bc = buf + c * CEC_COL_W;
#pragma omp simd
            for (int l = 0; l < CEC_COL_W; l++) {
                CEC_T d = bc[l] - sh[l];
                acc[l] += d != 0 ? CEC_EXPSUM(d) : (CEC_T)0;
                eq[l] += d == 0 ? (CEC_T)1 : (CEC_T)0;
            }
        }
        for (int l = 0; l < CEC_COL_W; l++) {
            rest[l] += (double)acc[l];
            ties[l] += (double)eq[l];
        }
    }
    for (int l = 0; l < CEC_COL_W; l++) {
        rowmax[l] = m[l];
        if (m[l] == -CEC_INFINITY || m[l] == CEC_INFINITY) {
            int nan = 0;
            for (cec_intp c = 0; c < k; c++) {
                CEC_T v = buf[c * CEC_COL_W + l];
                nan |= v != v;
            }
            logsum[l] = nan ? (double)NAN : m[l] == CEC_INFINITY ? 0.0 : -CEC_INFINITY;
        }
        else {
            logsum[l] = log1p(rest[l] + (ties[l] - 1.0));
        }
    }
}

/* out[l] = sum_c cc w_c (buf[c][l] - shift[l]) (w == NULL: w_c = 1), as row_wsum. */
CEC_ATTR static void CEC_FN(col_wsum)(const CEC_T *buf, cec_intp k, const double *w,
                                      const double *shift, double cc, double *out)
{
    double s[CEC_COL_W];
    for (int l = 0; l < CEC_COL_W; l++) {
        s[l] = 0.0;
    }
    for (cec_intp c = 0; c < k; c++) {
        const CEC_T *bc = buf + c * CEC_COL_W;
        double wc = w == NULL ? cc : cc * w[c];
#pragma omp simd
        for (int l = 0; l < CEC_COL_W; l++) {
            s[l] += wc * ((double)bc[l] - shift[l]);
        }
    }
    for (int l = 0; l < CEC_COL_W; l++) {
        out[l] = s[l];
    }
}

/*
 * out[c * cs + l] = a[l] exp(buf[c][l] - shift[l]) - w_c c0[l] for l < B, in
 * the input's type (w == NULL: w_c = 1): row_grad per lane, and row_exp with
 * c0 = 0. out may be the block's own logits (buf holds a copy).
 */
CEC_ATTR static void CEC_FN(col_grad)(const CEC_T *buf, cec_intp k, cec_intp B,
                                      const CEC_T *shift, const CEC_T *a, const CEC_T *c0,
                                      const double *w, CEC_IN *out, cec_intp cs)
{
    for (cec_intp c = 0; c < k; c++) {
        const CEC_T *bc = buf + c * CEC_COL_W;
        CEC_IN *oc = out + c * cs;
        CEC_T wc = w == NULL ? (CEC_T)1 : (CEC_T)w[c];
        if (B == CEC_COL_W) {
#pragma omp simd
            for (int l = 0; l < CEC_COL_W; l++) {
                oc[l] = CEC_ST(a[l] * CEC_EXP(bc[l] - shift[l]) - wc * c0[l]);
            }
        }
        else {
            CEC_T g[CEC_COL_W];
#pragma omp simd
            for (int l = 0; l < CEC_COL_W; l++) {
                g[l] = a[l] * CEC_EXP(bc[l] - shift[l]) - wc * c0[l];
            }
            for (cec_intp l = 0; l < B; l++) {
                oc[l] = CEC_ST(g[l]);
            }
        }
    }
}

/* out[c * cs + l] = (buf[c][l] - shift[l]) - logsum[l] in double, rounded once (row_sub). */
CEC_ATTR static void CEC_FN(col_sub)(const CEC_T *buf, cec_intp k, cec_intp B,
                                     const double *shift, const double *logsum, CEC_IN *out,
                                     cec_intp cs)
{
    for (cec_intp c = 0; c < k; c++) {
        const CEC_T *bc = buf + c * CEC_COL_W;
        CEC_IN *oc = out + c * cs;
        if (B == CEC_COL_W) {
#pragma omp simd
            for (int l = 0; l < CEC_COL_W; l++) {
                oc[l] = CEC_ST((CEC_T)(((double)bc[l] - shift[l]) - logsum[l]));
            }
        }
        else {
            for (cec_intp l = 0; l < B; l++) {
                oc[l] = CEC_ST((CEC_T)(((double)bc[l] - shift[l]) - logsum[l]));
            }
        }
    }
}
