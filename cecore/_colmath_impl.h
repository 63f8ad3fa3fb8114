/*
 * Column kernels: the class axis not last. Included at the end of
 * _rowmath_impl.h, so compiled per (input type, ISA) with its parameters.
 *
 * A block holds B <= CEC_COL_W positions side by side: the logit of class c
 * at lane l is x[c * cs + l] (positions contiguous, classes cs elements
 * apart). The loops run across the lanes, vectorised over positions rather
 * than along the classes, and walk the block class after class, i.e. through
 * memory in long contiguous runs that the hardware prefetchers follow. Lanes
 * are processed in multiples of 32 (bp below); each lane computes what row_lse
 * computes for a row: the same maximum, ties and special values, only the
 * order of the float sums differs (a few ulp).
 * CEC_COL_SUMEXP, if defined, is a hand-written version of col_lse's sum over
 * a chunk for this ISA (see cec_col_sumexp_avx512); CEC_COL_DIRECT says that
 * the input type is the compute type.
 */

/*
 * Per lane l < B: rowmax[l] = the maximum over classes (NaNs skipped) and
 * logsum[l] = log1p(rest + ties - 1) as row_lse returns it (-inf for an all
 * -inf column, 0 for a +inf maximum, NaN when the column holds a NaN and its
 * maximum is not finite; otherwise a NaN makes rest NaN). buf: scratch for
 * CEC_COL_CHUNK * (CEC_COL_W + 16) compute-type values.
 */
CEC_ATTR static void CEC_FN(col_lse)(const CEC_IN *x, cec_intp k, cec_intp cs, cec_intp B,
                                     CEC_T *buf, CEC_T *rowmax, double *logsum)
{
    CEC_T m[CEC_COL_W], cm[CEC_COL_W], sh[CEC_COL_W];
    double rest[CEC_COL_W], ties[CEC_COL_W];
    cec_intp bp = (B + 31) & ~(cec_intp)31;
    /* buf's rows bp + 16 apart: x's rows are often 4 KB apart, and stores to
       addresses equal to a later load's modulo 4 KB stall that load */
    cec_intp bs = bp + 16;
    for (cec_intp l = 0; l < bp; l++) {
        m[l] = -CEC_INFINITY;
        rest[l] = 0.0;
        ties[l] = 0.0;
    }
    /* classes in chunks, as row_lse takes a long row: the chunk's maximum while
       it is copied to buf (rows of bp lanes, padded with -inf), then its
       exponentials relative to the running maximum, from cache */
    for (cec_intp c0 = 0; c0 < k; c0 += CEC_COL_CHUNK) {
        cec_intp end = k - c0 < CEC_COL_CHUNK ? k : c0 + CEC_COL_CHUNK;
        for (cec_intp l = 0; l < bp; l++) {
            cm[l] = -CEC_INFINITY;
        }
        /* the chunk's sums read from src, rows sstride apart: buf, or with
           CEC_COL_DIRECT (input of the compute type) x itself unless the block
           is not a whole number of 32 lanes (no -inf padding in x) */
        const CEC_T *src = buf;
        cec_intp sstride = bs;
#ifdef CEC_COL_DIRECT
        if (B == bp) {
            src = (const CEC_T *)x + c0 * cs;
            sstride = cs;
            for (cec_intp c = c0; c < end; c++) {
                const CEC_IN *xc = x + c * cs;
#pragma omp simd
                for (cec_intp l = 0; l < B; l++) {
                    CEC_T v = xc[l];
                    cm[l] = v > cm[l] ? v : cm[l];
                }
            }
        }
        else
#endif
        for (cec_intp c = c0; c < end; c++) {
            const CEC_IN *xc = x + c * cs;
            CEC_T *bc = buf + (c - c0) * bs;
#pragma omp simd
            for (cec_intp l = 0; l < B; l++) {
                CEC_T v = CEC_LD(xc[l]);
                bc[l] = v;
                cm[l] = v > cm[l] ? v : cm[l];
            }
            for (cec_intp l = B; l < bp; l++) {
                bc[l] = -CEC_INFINITY;
            }
        }
#pragma omp simd
        for (cec_intp l = 0; l < bp; l++) {
            /* a larger maximum rescales the sum and makes the old ties ordinary terms;
               (rest + ties) * 0 keeps a NaN met while the maximum was -inf */
            int grow = cm[l] > m[l];
            double f = m[l] == -CEC_INFINITY ? 0.0 : cec_exp_f64((double)m[l] - (double)cm[l]);
            rest[l] = grow ? (rest[l] + ties[l]) * f : rest[l];
            ties[l] = grow ? 0.0 : ties[l];
            m[l] = grow ? cm[l] : m[l];
            sh[l] = m[l] == -CEC_INFINITY ? (CEC_T)0 : m[l];
        }
#ifdef CEC_COL_SUMEXP
        CEC_COL_SUMEXP(src, end - c0, sstride, bp, sh, rest, ties);
#else
        for (cec_intp l0 = 0; l0 < bp; l0 += 32) {
            /* a float sum per lane over the chunk (each term <= 1), added in double */
            CEC_T acc[32], eq[32];
            for (int l = 0; l < 32; l++) {
                acc[l] = 0;
                eq[l] = 0;
            }
            for (cec_intp c = 0; c < end - c0; c++) {
                const CEC_T *bc = src + c * sstride + l0;
#pragma omp simd
                for (int l = 0; l < 32; l++) {
                    CEC_T d = bc[l] - sh[l0 + l];
                    acc[l] += d != 0 ? CEC_EXPSUM(d) : (CEC_T)0;
                    eq[l] += d == 0 ? (CEC_T)1 : (CEC_T)0;
                }
            }
            for (int l = 0; l < 32; l++) {
                rest[l0 + l] += (double)acc[l];
                ties[l0 + l] += (double)eq[l];
            }
        }
#endif
    }
    for (cec_intp l = 0; l < B; l++) {
        rowmax[l] = m[l];
        if (m[l] == -CEC_INFINITY || m[l] == CEC_INFINITY) {
            int nan = 0;
            for (cec_intp c = 0; c < k; c++) {
                CEC_T v = CEC_LD(x[c * cs + l]);
                nan |= v != v;
            }
            logsum[l] = nan ? (double)NAN : m[l] == CEC_INFINITY ? 0.0 : -CEC_INFINITY;
        }
        else {
            logsum[l] = log1p(rest[l] + (ties[l] - 1.0));
        }
    }
}

/* out[l] = sum_c cc w_c (x[c * cs + l] - shift[l]) (w == NULL: w_c = 1), as row_wsum. */
CEC_ATTR static void CEC_FN(col_wsum)(const CEC_IN *x, cec_intp k, cec_intp cs, cec_intp B,
                                      const double *w, const double *shift, double cc,
                                      double *out)
{
    for (cec_intp l = 0; l < B; l++) {
        out[l] = 0.0;
    }
    for (cec_intp c = 0; c < k; c++) {
        const CEC_IN *xc = x + c * cs;
        double wc = w == NULL ? cc : cc * w[c];
#pragma omp simd
        for (cec_intp l = 0; l < B; l++) {
            out[l] += wc * ((double)CEC_LD(xc[l]) - shift[l]);
        }
    }
}

/*
 * out[c * os + l] = a[l] exp(x[c * cs + l] - shift[l]) - w_c c0[l] for l < B,
 * in the input's type (w == NULL: w_c = 1): row_grad per lane, and row_exp
 * with c0 = 0. out may be x (element for element).
 */
CEC_ATTR static void CEC_FN(col_grad)(const CEC_IN *x, cec_intp k, cec_intp cs, cec_intp B,
                                      const CEC_T *shift, const CEC_T *a, const CEC_T *c0,
                                      const double *w, CEC_IN *out, cec_intp os)
{
    for (cec_intp c = 0; c < k; c++) {
        const CEC_IN *xc = x + c * cs;
        CEC_IN *oc = out + c * os;
        CEC_T wc = w == NULL ? (CEC_T)1 : (CEC_T)w[c];
#pragma omp simd
        for (cec_intp l = 0; l < B; l++) {
            oc[l] = CEC_ST(a[l] * CEC_EXP(CEC_LD(xc[l]) - shift[l]) - wc * c0[l]);
        }
    }
}

/* out[c * os + l] = (x[c * cs + l] - shift[l]) - logsum[l] in double, rounded once (row_sub). */
CEC_ATTR static void CEC_FN(col_sub)(const CEC_IN *x, cec_intp k, cec_intp cs, cec_intp B,
                                     const double *shift, const double *logsum, CEC_IN *out,
                                     cec_intp os)
{
    for (cec_intp c = 0; c < k; c++) {
        const CEC_IN *xc = x + c * cs;
        CEC_IN *oc = out + c * os;
#pragma omp simd
        for (cec_intp l = 0; l < B; l++) {
            oc[l] = CEC_ST((CEC_T)(((double)CEC_LD(xc[l]) - shift[l]) - logsum[l]));
        }
    }
}
