/*
 * The AVX2 loops that read logits, written once for every input type.
 * Included by _rowmath_avx2.h with
 *   CEC_IN, CEC_RD(name)   as in _rowmath_avx512_read.h
 *   CEC_LD(v)              one element as a float
 *   CEC_LOAD8(p)           8 elements at p as an __m256 of floats
 *   CEC_LOAD8_PART(p, w)   the first w < 8 elements at p, -inf in the other
 *                          lanes (elements past w are not read)
 */

/* row_sumexp for AVX2: same contract as the portable one. */
CEC_ATTR_AVX2 static double CEC_RD(row_sumexp)(const CEC_IN *x, cec_intp n, float shift,
                                               cec_intp *n_eq)
{
    const __m256 sh = _mm256_set1_ps(shift), zero = _mm256_setzero_ps();
    const char *ahead = (const char *)(x + n);
    __m256 acc0 = zero, acc1 = zero;
    double s = 0.0;
    cec_intp i = 0, eq = 0;
    int steps = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch(ahead + sizeof(CEC_IN) * i, _MM_HINT_T0);
        __m256 d0 = _mm256_sub_ps(CEC_LOAD8(x + i), sh);
        __m256 d1 = _mm256_sub_ps(CEC_LOAD8(x + i + 8), sh);
        /* elements equal to the shift are counted, not summed (see row_sumexp) */
        __m256 e0 = _mm256_cmp_ps(d0, zero, _CMP_EQ_OQ), e1 = _mm256_cmp_ps(d1, zero, _CMP_EQ_OQ);
        acc0 = _mm256_add_ps(acc0, _mm256_andnot_ps(e0, cec_expsum8_avx2(d0)));
        acc1 = _mm256_add_ps(acc1, _mm256_andnot_ps(e1, cec_expsum8_avx2(d1)));
        eq += _mm_popcnt_u32((unsigned)_mm256_movemask_ps(e0)) +
              _mm_popcnt_u32((unsigned)_mm256_movemask_ps(e1));
        /* float partial sums of at most 16 terms per lane, then into double */
        if (++steps == 16) {
            s += cec_sum8_avx2(_mm256_add_ps(acc0, acc1));
            acc0 = acc1 = zero;
            steps = 0;
        }
    }
    if (i < n) {
        float tail[16];
        for (int j = 0; j < 16; j++) {
            tail[j] = i + j < n ? CEC_LD(x[i + j]) : -INFINITY;
        }
        for (int j = 0; j < 16; j += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(tail + j), sh);
            __m256 e = _mm256_cmp_ps(d, zero, _CMP_EQ_OQ);
            acc0 = _mm256_add_ps(acc0, _mm256_andnot_ps(e, cec_expsum8_avx2(d)));
            eq += _mm_popcnt_u32((unsigned)_mm256_movemask_ps(e));
        }
    }
    *n_eq = eq;
    return s + cec_sum8_avx2(_mm256_add_ps(acc0, acc1));
}

/*
 * block_lse on AVX2 for rows of k <= 32: the 8-lane counterpart of the AVX-512
 * block_lse_rows (8 rows transposed at a time). Handles rows - rows % 8 rows;
 * scratch holds 8 * 32 floats.
 */
CEC_ATTR_AVX2 static void CEC_RD(block_lse_rows)(const CEC_IN *x, cec_intp rows, cec_intp stride,
                                                 cec_intp k, float *scratch, float *rowmax,
                                                 double *lse)
{
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
    for (cec_intp r = 0; r + 8 <= rows; r += 8) {
        __m256 m = neg_inf;
        for (cec_intp c0 = 0; c0 < k; c0 += 8) {
            cec_intp width = k - c0 < 8 ? k - c0 : 8;
            __m256 v[8];
            for (int l = 0; l < 8; l++) {
                const CEC_IN *p = x + (r + l) * stride + c0;
                v[l] = width == 8 ? CEC_LOAD8(p) : CEC_LOAD8_PART(p, width);
            }
            cec_transpose8_avx2(v);
            for (int j = 0; j < width; j++) {
                m = _mm256_max_ps(v[j], m);
                _mm256_storeu_ps(scratch + 8 * (c0 + j), v[j]);
            }
        }
        /* an all -inf row would give -inf - -inf = NaN: shift it by 0 */
        __m256 shift = _mm256_blendv_ps(m, zero, _mm256_cmp_ps(m, neg_inf, _CMP_EQ_OQ));
        /* as in row_lse: the sum of the non-maximal terms and the count of ties */
        __m256 rest = zero, ties = zero;
        for (cec_intp j = 0; j < k; j++) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(scratch + 8 * j), shift);
            __m256 tie = _mm256_cmp_ps(d, zero, _CMP_EQ_OQ);
            rest = _mm256_add_ps(rest, _mm256_andnot_ps(tie, cec_expsum8_avx2(d)));
            ties = _mm256_add_ps(ties, _mm256_and_ps(tie, _mm256_set1_ps(1.0f)));
        }
        _mm256_storeu_ps(rowmax + r, m);
        /* rest + ties - 1, exact for the small integer ties; -1 for an all -inf row */
        float u[8];
        _mm256_storeu_ps(u, _mm256_add_ps(rest, _mm256_sub_ps(ties, _mm256_set1_ps(1.0f))));
#pragma omp simd
        for (int l = 0; l < 8; l++) {
            u[l] = cec_log1p_f32(u[l]);
        }
        for (int l = 0; l < 8; l++) {
            lse[r + l] = (double)u[l];
        }
    }
}
