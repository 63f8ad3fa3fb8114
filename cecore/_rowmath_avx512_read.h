/*
 * The AVX-512 loops that read logits, written once for every input type.
 * Included by _rowmath_avx512.h with
 *   CEC_IN            the element type in memory (float, cec_bf16_t, cec_f16_t)
 *   CEC_RD(name)      decorates a function name with the input's suffix
 *   CEC_LOAD16(p)     16 elements at p as an __m512 of floats
 *   CEC_MASK_LOAD16(src, m, p)  the same for the lanes in mask m, src elsewhere
 *                               (masked-off elements are not read)
 *   CEC_LOAD32(p, &v0, &v1)     32 elements as two vectors, in an order of its
 *                               own (for max and sums only)
 *   CEC_MASK_STORE16(p, m, v)   the lanes of v in mask m rounded to CEC_IN
 *   CEC_STORE32(p, v0, v1)      the inverse of CEC_LOAD32, rounding to CEC_IN
 * The arithmetic is float32 for every input type, so a 16-bit row gives the
 * result of the same values stored as float32.
 */

/* row_max on AVX-512: masked tail, two accumulators, no scalar loop. */
CEC_ATTR_AVX512 static float CEC_RD(row_max)(const CEC_IN *x, cec_intp n)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = neg_inf, m1 = neg_inf;
    cec_intp i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0, v1;
        CEC_LOAD32(x + i, &v0, &v1);
        m0 = _mm512_max_ps(v0, m0);
        m1 = _mm512_max_ps(v1, m1);
    }
    for (; i < n; i += 16) {
        m0 = _mm512_max_ps(CEC_MASK_LOAD16(neg_inf, cec_tail_mask16(n - i), x + i), m0);
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

/*
 * The loop of row_sumexp over whole blocks of 32 elements, for a finite shift.
 * by_fma = 1 (a compile-time constant at each call) takes u = x log2(e) -
 * fl(shift log2(e)) in one FMA instead of (x - shift) log2(e) in two steps:
 * every u then carries the same offset delta = shift log2(e) - fl(shift
 * log2(e)) (|delta| <= 2^-4 for |shift| <= 2^20, where the caller uses it),
 * and the sum is scaled by 2^-delta, in double, once. Elements equal to the
 * shift are compared on x itself (x == shift exactly when x - shift == 0),
 * counted and not summed (see row_sumexp). While it computes (from L1) it
 * prefetches the n elements that follow x, which is where the next row or
 * chunk usually starts: without this the core's memory reads and its
 * arithmetic take turns instead of overlapping (prefetching past the end of
 * an array is harmless).
 */
CEC_ATTR_AVX512 static inline __attribute__((always_inline)) double CEC_RD(row_sumexp_blocks)(
    const CEC_IN *x, cec_intp n, float shift, cec_intp *n_eq, int by_fma)
{
    const float unit = 1.44269504088896341f;
    const __m512 sh = _mm512_set1_ps(shift), vu = _mm512_set1_ps(unit), zero = _mm512_setzero_ps();
    const float c = shift * unit;
    const __m512 vc = _mm512_set1_ps(c);
    const char *ahead = (const char *)(x + n);
    __m512 acc0 = zero, acc1 = zero;
    double s = 0.0;
    cec_intp i = 0, ne = 0;
    int steps = 0;
    for (; i + 32 <= n; i += 32) {
        /* 32 elements are 128 bytes of float32 or 64 of a 16-bit type */
        _mm_prefetch(ahead + sizeof(CEC_IN) * i, _MM_HINT_T0);
        if (sizeof(CEC_IN) == 4) {
            _mm_prefetch(ahead + sizeof(CEC_IN) * i + 64, _MM_HINT_T0);
        }
        __m512 v0, v1;
        CEC_LOAD32(x + i, &v0, &v1);
        __mmask16 k0 = _mm512_cmp_ps_mask(v0, sh, _CMP_NEQ_UQ);
        __mmask16 k1 = _mm512_cmp_ps_mask(v1, sh, _CMP_NEQ_UQ);
        __m512 u0 = by_fma ? _mm512_fmsub_ps(v0, vu, vc) : _mm512_mul_ps(_mm512_sub_ps(v0, sh), vu);
        __m512 u1 = by_fma ? _mm512_fmsub_ps(v1, vu, vc) : _mm512_mul_ps(_mm512_sub_ps(v1, sh), vu);
        acc0 = _mm512_mask_add_ps(acc0, k0, acc0, cec_exp2sum16_avx512(u0));
        acc1 = _mm512_mask_add_ps(acc1, k1, acc1, cec_exp2sum16_avx512(u1));
        ne += _mm_popcnt_u32(k0) + _mm_popcnt_u32(k1);
        /* float partial sums of at most 16 terms per lane, then into double */
        if (++steps == 16) {
            s += cec_sum16_avx512(_mm512_add_ps(acc0, acc1));
            acc0 = acc1 = zero;
            steps = 0;
        }
    }
    s += cec_sum16_avx512(_mm512_add_ps(acc0, acc1));
    *n_eq = i - ne;
    /* exact: c is a float, shift * unit is exact in double */
    return by_fma ? s * cec_exp2_small((double)c - (double)shift * (double)unit) : s;
}

/*
 * row_sumexp on AVX-512: same contract as the portable one; the masked tail
 * takes the remaining < 32 elements.
 */
CEC_ATTR_AVX512 static double CEC_RD(row_sumexp)(const CEC_IN *x, cec_intp n, float shift,
                                                 cec_intp *n_eq)
{
    const __m512 sh = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
    cec_intp eq;
    double s = fabsf(shift) <= 1048576.0f ? CEC_RD(row_sumexp_blocks)(x, n, shift, &eq, 1)
                                          : CEC_RD(row_sumexp_blocks)(x, n, shift, &eq, 0);
    __m512 acc = zero;
    for (cec_intp i = n - n % 32; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 d = _mm512_sub_ps(CEC_MASK_LOAD16(_mm512_set1_ps(-INFINITY), m, x + i), sh);
        __mmask16 e = _mm512_cmp_ps_mask(d, zero, _CMP_EQ_OQ);
        acc = _mm512_mask_add_ps(acc, (__mmask16)~e, acc, cec_expsum16_avx512(d));
        eq += _mm_popcnt_u32(e);
    }
    *n_eq = eq;
    return s + cec_sum16_avx512(acc);
}

/*
 * Gradient row (the contract of the portable row_grad):
 * out_i = a exp(x_i - shift) - w_i (c1 t_i + c0), rounded once to the input
 * type; t == NULL means t_i = 0, w == NULL w_i = 1. out may alias x.
 */
CEC_ATTR_AVX512 static inline __attribute__((always_inline)) __m512 CEC_RD(grad16)(
    __m512 v, const float *t, const double *w, __mmask16 m, __m512 sh, __m512 va, __m512 vc1,
    __m512 vc0)
{
    __m512 target = t == NULL ? vc0 : _mm512_fmadd_ps(vc1, _mm512_maskz_loadu_ps(m, t), vc0);
    if (w != NULL) {
        __m256 lo = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m & 0xFF), w));
        __m256 hi = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m >> 8), w + 8));
        __m512 wv = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
        target = _mm512_mul_ps(wv, target);
    }
    return _mm512_fmsub_ps(va, cec_exp16_avx512(_mm512_sub_ps(v, sh)), target);
}

CEC_ATTR_AVX512 static void CEC_RD(row_grad)(const CEC_IN *x, const float *t, const double *w,
                                             cec_intp n, float shift, float a, float c1, float c0,
                                             CEC_IN *out)
{
    const __m512 sh = _mm512_set1_ps(shift), va = _mm512_set1_ps(a);
    const __m512 vc1 = _mm512_set1_ps(c1), vc0 = _mm512_set1_ps(c0);
    cec_intp i = 0;
    if (t == NULL && w == NULL) {
        /* elementwise: any order of the 32 elements will do, as long as the store undoes it */
        for (; i + 32 <= n; i += 32) {
            __m512 v0, v1;
            CEC_LOAD32(x + i, &v0, &v1); /* before the store: out may alias x */
            CEC_STORE32(out + i, CEC_RD(grad16)(v0, t, w, 0xFFFF, sh, va, vc1, vc0),
                        CEC_RD(grad16)(v1, t, w, 0xFFFF, sh, va, vc1, vc0));
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 v = CEC_MASK_LOAD16(_mm512_setzero_ps(), m, x + i);
        CEC_MASK_STORE16(out + i, m,
                         CEC_RD(grad16)(v, t ? t + i : t, w ? w + i : w, m, sh, va, vc1, vc0));
    }
}

/*
 * row_sub with output in the input type (the portable one's contract, bit for
 * bit: out_i = (x_i - shift) - logsum in double, rounded to float, then to
 * CEC_IN). out may alias x.
 */
CEC_ATTR_AVX512 static void CEC_RD(row_sub)(const CEC_IN *x, cec_intp n, double shift,
                                            double logsum, CEC_IN *out)
{
    const __m512d sh = _mm512_set1_pd(shift), ls = _mm512_set1_pd(logsum);
    cec_intp i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0, v1;
        CEC_LOAD32(x + i, &v0, &v1); /* before the store: out may alias x */
        CEC_STORE32(out + i, cec_sub_in_double16_avx512(v0, sh, ls),
                    cec_sub_in_double16_avx512(v1, sh, ls));
    }
    for (; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 v = CEC_MASK_LOAD16(_mm512_setzero_ps(), m, x + i);
        CEC_MASK_STORE16(out + i, m, cec_sub_in_double16_avx512(v, sh, ls));
    }
}

/*
 * block_lse on AVX-512 for rows of k <= 32, vectorised across rows: 16 rows
 * are loaded as (masked, -inf padded) vectors and transposed in registers, so
 * that lane l holds row r + l and the max, exp and sum of 16 short rows run as
 * k vertical steps instead of 16 latency-bound scalar loops (AVX-512 gathers
 * would do the same but cost ~60 cycles each on Zen 4). One vector log serves
 * 16 rows. Handles rows - rows % 16 rows; scratch holds 16 * 32 floats.
 */
CEC_ATTR_AVX512 static void CEC_RD(block_lse_rows)(const CEC_IN *x, cec_intp rows,
                                                   cec_intp stride, cec_intp k, float *scratch,
                                                   float *rowmax, double *lse)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    for (cec_intp r = 0; r + 16 <= rows; r += 16) {
        __m512 m = neg_inf;
        for (cec_intp c0 = 0; c0 < k; c0 += 16) {
            cec_intp width = k - c0 < 16 ? k - c0 : 16;
            __mmask16 mask = (__mmask16)(width == 16 ? 0xFFFFu : (1u << width) - 1u);
            __m512 v[16];
            for (int l = 0; l < 16; l++) {
                v[l] = CEC_MASK_LOAD16(neg_inf, mask, x + (r + l) * stride + c0);
            }
            cec_transpose16_avx512(v);
            for (int j = 0; j < width; j++) {
                m = _mm512_max_ps(v[j], m);
                _mm512_storeu_ps(scratch + 16 * (c0 + j), v[j]);
            }
        }
        cec_block_lse16_finish_avx512(m, scratch, k, rowmax + r, lse + r);
    }
}

/* ---- soft-capped logits, cap(x) = c tanh(x inv_c) (see _rowmath_impl.h) ---- */

/* out_i = cap(x_i) as float. */
CEC_ATTR_AVX512 static void CEC_RD(softcap_row)(const CEC_IN *x, cec_intp n, float c, float inv_c,
                                                float *out)
{
    const __m512 vc = _mm512_set1_ps(c), vi = _mm512_set1_ps(inv_c);
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 v = CEC_MASK_LOAD16(_mm512_setzero_ps(), m, x + i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(vc, cec_tanh16_avx512(_mm512_mul_ps(v, vi))));
    }
}

/* cap(x_i) and cap'(x_i) = tanh'(x_i inv_c) as floats. */
CEC_ATTR_AVX512 CEC_MAYBE_UNUSED static void CEC_RD(softcap_grad_row)(const CEC_IN *x, cec_intp n, float c,
                                                     float inv_c, float *cap, float *d)
{
    const __m512 vc = _mm512_set1_ps(c), vi = _mm512_set1_ps(inv_c);
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 t, v = CEC_MASK_LOAD16(_mm512_setzero_ps(), m, x + i);
        _mm512_mask_storeu_ps(d + i, m, cec_tanh_grad16_avx512(_mm512_mul_ps(v, vi), &t));
        _mm512_mask_storeu_ps(cap + i, m, _mm512_mul_ps(vc, t));
    }
}

/* row_sumexp of the capped logits (contract and prefetching as row_sumexp). */
CEC_ATTR_AVX512 static double CEC_RD(row_sumexp_softcap)(const CEC_IN *x, cec_intp n, float shift,
                                                         float c, float inv_c, cec_intp *n_eq)
{
    const __m512 sh = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
    const __m512 vc = _mm512_set1_ps(c), vi = _mm512_set1_ps(inv_c);
    const char *ahead = (const char *)(x + n);
    __m512 acc0 = zero, acc1 = zero;
    double s = 0.0;
    cec_intp i = 0, eq = 0;
    int steps = 0;
    for (; i + 32 <= n; i += 32) {
        /* two independent vectors per step: the chain through tanh and exp is long */
        _mm_prefetch(ahead + sizeof(CEC_IN) * i, _MM_HINT_T0);
        if (sizeof(CEC_IN) == 4) {
            _mm_prefetch(ahead + sizeof(CEC_IN) * i + 64, _MM_HINT_T0);
        }
        __m512 t0 = cec_tanh16_avx512(_mm512_mul_ps(CEC_LOAD16(x + i), vi));
        __m512 t1 = cec_tanh16_avx512(_mm512_mul_ps(CEC_LOAD16(x + i + 16), vi));
        __m512 d0 = _mm512_sub_ps(_mm512_mul_ps(vc, t0), sh);
        __m512 d1 = _mm512_sub_ps(_mm512_mul_ps(vc, t1), sh);
        __mmask16 e0 = _mm512_cmp_ps_mask(d0, zero, _CMP_EQ_OQ);
        __mmask16 e1 = _mm512_cmp_ps_mask(d1, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_ps(acc0, (__mmask16)~e0, acc0, cec_expsum16_avx512(d0));
        acc1 = _mm512_mask_add_ps(acc1, (__mmask16)~e1, acc1, cec_expsum16_avx512(d1));
        eq += _mm_popcnt_u32(e0) + _mm_popcnt_u32(e1);
        if (++steps == 16) {
            s += cec_sum16_avx512(_mm512_add_ps(acc0, acc1));
            acc0 = acc1 = zero;
            steps = 0;
        }
    }
    for (; i + 16 < n; i += 16) {
        __m512 v = _mm512_mul_ps(vc, cec_tanh16_avx512(_mm512_mul_ps(CEC_LOAD16(x + i), vi)));
        __m512 d = _mm512_sub_ps(v, sh);
        __mmask16 e = _mm512_cmp_ps_mask(d, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_ps(acc0, (__mmask16)~e, acc0, cec_expsum16_avx512(d));
        eq += _mm_popcnt_u32(e);
    }
    if (i < n) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 v = _mm512_mul_ps(vc, cec_tanh16_avx512(_mm512_mul_ps(
            CEC_MASK_LOAD16(zero, m, x + i), vi)));
        __m512 d = _mm512_sub_ps(v, sh);
        __mmask16 e = _mm512_mask_cmp_ps_mask(m, d, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_ps(acc0, m & (__mmask16)~e, acc0, cec_expsum16_avx512(d));
        eq += _mm_popcnt_u32(e);
    }
    *n_eq = eq;
    return s + cec_sum16_avx512(_mm512_add_ps(acc0, acc1));
}
