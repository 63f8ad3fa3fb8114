/*
 * cecore's hand-written AVX-512 (F/DQ/BW/VL) kernels: the loops where GCC's
 * vectorisation of the portable template falls short (it does not turn
 * ldexp/rint into vscalefps/vrndscaleps). Compiled with a target attribute and
 * called only when the CPU has AVX-512 (see the dispatch in _rowmath.h). The
 * loops that read logits come from _rowmath_avx512_read.h, once per input type.
 */
#ifndef CECORE_ROWMATH_AVX512_H
#define CECORE_ROWMATH_AVX512_H

#include "_rowmath_scalar.h"

#if CEC_HAVE_X86_DISPATCH
#include <immintrin.h>

#define CEC_CAT3_(a, b, c) a##_##b##_##c
#define CEC_CAT3(a, b, c) CEC_CAT3_(a, b, c)

/*
 * AVX-512 versions of the two loops that dominate the softmax kernels. GCC
 * does not turn ldexp/rint into vscalefps/vrndscaleps, so these are written
 * with intrinsics: exp(d) = 2^u, u = d log2(e) = k + f with k = round(u),
 * |f| <= 1/2, 2^f by a degree-6 polynomial (relative error < 1.7e-8) and
 * 2^k applied by vscalefps, which also underflows gradually and keeps NaN.
 * About 13 instructions per 16 elements, half of the portable version's.
 * Rounding u to float costs |u| 2^-25 relative, which only matters for terms
 * far below the row maximum, whose share of the sum is as small.
 */
CEC_ATTR_AVX512 static inline __m512 cec_exp2sum16_avx512(__m512 u)
{
    /* max(lo, u) returns u when u is NaN; -inf becomes -151 and 2^-151 -> 0 */
    u = _mm512_max_ps(_mm512_set1_ps(-151.0f), u);
    __m512 k = _mm512_roundscale_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(u, k);
    __m512 p = _mm512_set1_ps(1.5337577497120947e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3399859890341759e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618519805371761e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550329014658928e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022646248340607e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471824645996e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

/*
 * 2^d for |d| <= 2^-4 in double, to a few ulp (3e-16 measured): the Taylor polynomial of
 * e^y, y = d ln 2, to degree 7 (the offset row_sumexp_blocks takes out of its
 * sum once per call: a libm exp2 there costs more than a short row's sum).
 */
static inline double cec_exp2_small(double d)
{
    double y = d * 0.69314718055994530942;
    double p = 1.0 / 5040.0;
    p = p * y + 1.0 / 720.0;
    p = p * y + 1.0 / 120.0;
    p = p * y + 1.0 / 24.0;
    p = p * y + 1.0 / 6.0;
    p = p * y + 0.5;
    p = p * y + 1.0;
    return p * y + 1.0;
}

/* exp(d) as 2^(d log2(e)) (the contract above) */
CEC_ATTR_AVX512 static inline __m512 cec_expsum16_avx512(__m512 d)
{
    return cec_exp2sum16_avx512(_mm512_mul_ps(d, _mm512_set1_ps(1.44269504088896341f)));
}

CEC_ATTR_AVX512 static inline double cec_sum16_avx512(__m512 v)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

/*
 * exp(x) for 16 floats, accurate to ~1 ulp over the whole range: Cody-Waite
 * reduction x = k ln2 + r, |r| <= ln2 / 2, the Cephes polynomial for e^r, and
 * vscalefps for 2^k, which underflows gradually and overflows to inf. NaN
 * propagates (max/min return their second operand for a NaN).
 */
CEC_ATTR_AVX512 static inline __m512 cec_exp_in_range16_avx512(__m512 x)
{
    /* x in [-110, 100] or NaN: the callers clamp */
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    return _mm512_scalef_ps(_mm512_add_ps(p, _mm512_set1_ps(1.0f)), k);
}

CEC_ATTR_AVX512 static inline __m512 cec_exp16_avx512(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), x);
    return cec_exp_in_range16_avx512(_mm512_min_ps(_mm512_set1_ps(100.0f), x));
}

/* cec_log1p_unit_f32 for 16 floats (u in [-1/2, 1]). */
CEC_ATTR_AVX512 static inline __m512 cec_log1p_unit16_avx512(__m512 u)
{
    __m512 z = _mm512_div_ps(u, _mm512_add_ps(_mm512_set1_ps(2.0f), u));
    __m512 w = _mm512_mul_ps(z, z);
    __m512 p = _mm512_set1_ps(1.0f / 13.0f);
    p = _mm512_fmadd_ps(p, w, _mm512_set1_ps(1.0f / 11.0f));
    p = _mm512_fmadd_ps(p, w, _mm512_set1_ps(1.0f / 9.0f));
    p = _mm512_fmadd_ps(p, w, _mm512_set1_ps(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, w, _mm512_set1_ps(1.0f / 5.0f));
    p = _mm512_fmadd_ps(p, w, _mm512_set1_ps(1.0f / 3.0f));
    p = _mm512_fmadd_ps(p, w, _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(_mm512_add_ps(z, z), p);
}

/*
 * col_lse's sum over a chunk of k <= 256 classes (_colmath_impl.h) for float
 * blocks: rows of the chunk bs floats apart, lanes l < bp (a multiple of 32);
 * adds to rest[l] the sum over classes c with d = buf[c][l] - sh[l] != 0 of
 * exp(d) (a float sum, added in double) and to ties[l] the number of d == 0.
 * A NaN d is not 0 and makes the sum NaN, as in row_sumexp.
 */
CEC_ATTR_AVX512 static void cec_col_sumexp_avx512(const float *buf, cec_intp k, cec_intp bs,
                                                  cec_intp bp, const float *sh, double *rest,
                                                  double *ties)
{
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    /* two vectors of lanes at a time: two independent sums in flight */
    for (cec_intp l0 = 0; l0 < bp; l0 += 32) {
        __m512 sh0 = _mm512_loadu_ps(sh + l0), sh1 = _mm512_loadu_ps(sh + l0 + 16);
        __m512 acc0 = zero, acc1 = zero, eq0 = zero, eq1 = zero;
        for (cec_intp c = 0; c < k; c++) {
            const float *bc = buf + c * bs + l0;
            __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(bc), sh0);
            __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(bc + 16), sh1);
            __mmask16 ne0 = _mm512_cmp_ps_mask(d0, zero, _CMP_NEQ_UQ);
            __mmask16 ne1 = _mm512_cmp_ps_mask(d1, zero, _CMP_NEQ_UQ);
            acc0 = _mm512_mask_add_ps(acc0, ne0, acc0, cec_expsum16_avx512(d0));
            acc1 = _mm512_mask_add_ps(acc1, ne1, acc1, cec_expsum16_avx512(d1));
            eq0 = _mm512_mask_add_ps(eq0, (__mmask16)~ne0, eq0, one);
            eq1 = _mm512_mask_add_ps(eq1, (__mmask16)~ne1, eq1, one);
        }
        __m512 accs[4] = {acc0, acc1, eq0, eq1};
        for (int v = 0; v < 4; v++) {
            double *dst = (v < 2 ? rest : ties) + l0 + 16 * (v & 1);
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(accs[v]));
            __m512d hi = _mm512_cvtps_pd(
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(accs[v]), 1)));
            _mm512_storeu_pd(dst, _mm512_add_pd(_mm512_loadu_pd(dst), lo));
            _mm512_storeu_pd(dst + 8, _mm512_add_pd(_mm512_loadu_pd(dst + 8), hi));
        }
    }
}

CEC_ATTR_AVX512 static inline __mmask16 cec_tail_mask16(cec_intp left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/*
 * tanh for 16 floats: cec_tanh_f32's scheme (x + x^3 R(x^2) below 0.625,
 * (1 - e) / (1 + e) with e = exp(-2|x|) above) with e by Cody-Waite and
 * vscalefps, about half the instructions of the portable expsum. Error <= 1.51
 * ulp measured over every float (tanh'(x): <= 4.3 ulp); +-inf -> +-1, NaN -> NaN.
 * The soft-capping kernels of this ISA all cap through these two functions, so
 * that a capped value is the same wherever it is computed (ties with the row
 * maximum are detected by equality).
 */
CEC_ATTR_AVX512 static inline __m512 cec_exp_neg2abs16_avx512(__m512 ax)
{
    /* max keeps NaN (its second operand); below -110 the result is 0 anyway; d <= 0 */
    return cec_exp_in_range16_avx512(
        _mm512_max_ps(_mm512_set1_ps(-110.0f), _mm512_mul_ps(ax, _mm512_set1_ps(-2.0f))));
}

CEC_ATTR_AVX512 static inline __m512 cec_tanh_small16_avx512(__m512 x)
{
    __m512 s = _mm512_mul_ps(x, x);
    __m512 r = _mm512_set1_ps(-5.704953168e-03f);
    r = _mm512_fmadd_ps(r, s, _mm512_set1_ps(2.063905393e-02f));
    r = _mm512_fmadd_ps(r, s, _mm512_set1_ps(-5.373970363e-02f));
    r = _mm512_fmadd_ps(r, s, _mm512_set1_ps(1.333144204e-01f));
    r = _mm512_fmadd_ps(r, s, _mm512_set1_ps(-3.333328193e-01f));
    return _mm512_fmadd_ps(_mm512_mul_ps(x, s), r, x);
}

/* |v| with the sign of x (v >= 0): v | (x & sign bit) in one vpternlogd */
CEC_ATTR_AVX512 static inline __m512 cec_with_sign16_avx512(__m512 v, __m512 x)
{
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
        _mm512_castps_si512(v), _mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN), 0xF8));
}

CEC_ATTR_AVX512 static inline __m512 cec_tanh16_avx512(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 ax = _mm512_abs_ps(x);
    __mmask16 small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    __m512 ts = cec_tanh_small16_avx512(x);
    if (small == 0xFFFF) {
        return ts; /* the common case of logits well inside the cap: no exp, no division */
    }
    __m512 e = cec_exp_neg2abs16_avx512(ax);
    __m512 big = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    return _mm512_mask_blend_ps(small, cec_with_sign16_avx512(big, x), ts);
}

/* tanh'(x) = 1 - tanh(x)^2 (as cec_tanh_grad_f32), and tanh(x) in *t as cec_tanh16_avx512 */
CEC_ATTR_AVX512 static inline __m512 cec_tanh_grad16_avx512(__m512 x, __m512 *t)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 ax = _mm512_abs_ps(x);
    __mmask16 small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    __m512 ts = cec_tanh_small16_avx512(x);
    __m512 dsmall = _mm512_fnmadd_ps(ts, ts, one);
    if (small == 0xFFFF) {
        *t = ts;
        return dsmall;
    }
    __m512 e = cec_exp_neg2abs16_avx512(ax);
    __m512 q = _mm512_add_ps(one, e);
    __m512 big = _mm512_div_ps(_mm512_sub_ps(one, e), q);
    __m512 dbig = _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(4.0f), e), _mm512_mul_ps(q, q));
    *t = _mm512_mask_blend_ps(small, cec_with_sign16_avx512(big, x), ts);
    return _mm512_mask_blend_ps(small, dbig, dsmall);
}

/* bce_logits_grad for float32 on AVX-512 (same contract and formulas). */
CEC_ATTR_AVX512 static double cec_bce_logits_grad_f32_avx512(const float *x, const float *t,
                                                             const float *pw, const float *w,
                                                             cec_intp n, float scale, float *out,
                                                             float *grad)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 acc = _mm512_setzero_ps();
    double s = 0.0;
    int steps = 0;
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 xi = _mm512_maskz_loadu_ps(m, x + i);
        __m512 ti = _mm512_maskz_loadu_ps(m, t + i);
        __m512 pi = pw == NULL ? one : _mm512_mask_loadu_ps(one, m, pw + i);
        __m512 wi = w == NULL ? one : _mm512_mask_loadu_ps(one, m, w + i);
        __m512 ax = _mm512_abs_ps(xi);
        __m512 e = cec_exp16_avx512(_mm512_sub_ps(_mm512_setzero_ps(), ax));
        __mmask16 neg = _mm512_cmp_ps_mask(xi, _mm512_setzero_ps(), _CMP_LT_OQ);
        /* (1 - t) x for x >= 0, p t |x| for x < 0: both terms non-negative */
        __m512 linear = _mm512_mask_blend_ps(neg, _mm512_mul_ps(_mm512_sub_ps(one, ti), xi),
                                             _mm512_mul_ps(_mm512_mul_ps(pi, ti), ax));
        __m512 lw = _mm512_fmadd_ps(pi, ti, _mm512_sub_ps(one, ti));
        __m512 li = _mm512_maskz_mul_ps(m, wi, _mm512_fmadd_ps(lw, cec_log1p_unit16_avx512(e), linear));
        if (out != NULL) {
            _mm512_mask_storeu_ps(out + i, m, li);
        }
        if (grad != NULL) {
            __m512 sig = _mm512_div_ps(_mm512_mask_blend_ps(neg, one, e), _mm512_add_ps(one, e));
            __m512 g = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(scale), wi),
                                     _mm512_fmsub_ps(lw, sig, _mm512_mul_ps(pi, ti)));
            _mm512_mask_storeu_ps(grad + i, m, g);
        }
        acc = _mm512_add_ps(acc, li);
        if (++steps == 16) {
            s += cec_sum16_avx512(acc);
            acc = _mm512_setzero_ps();
            steps = 0;
        }
    }
    return s + cec_sum16_avx512(acc);
}

CEC_ATTR_AVX512 static double cec_bce_logits_f32_avx512(const float *x, const float *t,
                                                        const float *pw, const float *w,
                                                        cec_intp n, float *out)
{
    return cec_bce_logits_grad_f32_avx512(x, t, pw, w, n, 0.0f, out, NULL);
}

/* row_exp for float32 on AVX-512: out_i = exp(x_i - shift) * scale. */
CEC_ATTR_AVX512 static void cec_row_exp_f32_avx512(const float *x, cec_intp n, float shift,
                                                   float scale, float *out)
{
    const __m512 sh = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale);
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_mul_ps(cec_exp16_avx512(_mm512_sub_ps(v, sh)), sc));
    }
}

CEC_ATTR_AVX512 static void cec_expsum_inplace_f32_avx512(float *a, cec_intp n)
{
    cec_intp i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(a + i, cec_expsum16_avx512(_mm512_loadu_ps(a + i)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(a + i, m, cec_expsum16_avx512(_mm512_maskz_loadu_ps(m, a + i)));
    }
}

/*
 * exp(d) for 8 doubles with d <= 0 (or NaN), < 2 ulp: d = (k/8) ln2 + r with
 * k = round(8 d / ln2) and a Cody-Waite split of ln2/8 (k * hi is exact for
 * |k| < 2^20), so |r| <= ln2/16 and a degree-8 Taylor polynomial is exact to
 * < 2^-58; 2^(k/8) = 2^floor(k/8) * 2^((k mod 8)/8), the second factor from
 * an 8-entry table held in one register (vpermpd reads k's low 3 bits), the
 * first applied by vscalefpd (gradual underflow). Fewer than half the
 * multiply-adds of the portable degree-13 version. -inf -> 0, NaN -> NaN.
 */
CEC_ATTR_AVX512 static inline __m512d cec_expsum8_avx512(__m512d d)
{
    const __m512d table = _mm512_setr_pd(1.0, 1.0905077326652577, 1.189207115002721,
                                         1.2968395546510096, 1.4142135623730951,
                                         1.5422108254079407, 1.681792830507429,
                                         1.8340080864093424);
    /* max(lo, d) returns d when d is NaN; below -800 every result is 0 */
    d = _mm512_max_pd(_mm512_set1_pd(-800.0), d);
    __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(d, _mm512_set1_pd(11.541560327111707)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(0.08664339757524431), d);
    r = _mm512_fnmadd_pd(k, _mm512_set1_pd(-5.251143840851356e-12), r);
    __m512d p = _mm512_set1_pd(1.0 / 40320.0);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 5040.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    __m512d fraction = _mm512_permutexvar_pd(_mm512_cvtpd_epi64(k), table);
    __m512d whole = _mm512_roundscale_pd(_mm512_mul_pd(k, _mm512_set1_pd(0.125)),
                                         _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    return _mm512_scalef_pd(_mm512_mul_pd(p, fraction), whole);
}

CEC_ATTR_AVX512 static inline __mmask8 cec_tail_mask8(cec_intp left)
{
    return left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
}

/* row_max for float64 on AVX-512 (as the float32 one). */
CEC_ATTR_AVX512 static double cec_row_max_f64_avx512(const double *x, cec_intp n)
{
    const __m512d neg_inf = _mm512_set1_pd(-INFINITY);
    __m512d m0 = neg_inf, m1 = neg_inf;
    cec_intp i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm512_max_pd(_mm512_loadu_pd(x + i), m0);
        m1 = _mm512_max_pd(_mm512_loadu_pd(x + i + 8), m1);
    }
    for (; i < n; i += 8) {
        m0 = _mm512_max_pd(_mm512_mask_loadu_pd(neg_inf, cec_tail_mask8(n - i), x + i), m0);
    }
    return _mm512_reduce_max_pd(_mm512_max_pd(m0, m1));
}

/* row_sumexp for float64 on AVX-512: contract and prefetching as the float32 one. */
CEC_ATTR_AVX512 static double cec_row_sumexp_f64_avx512(const double *x, cec_intp n,
                                                       double shift, cec_intp *n_eq)
{
    const __m512d sh = _mm512_set1_pd(shift), zero = _mm512_setzero_pd();
    const char *ahead = (const char *)(x + n);
    __m512d acc0 = zero, acc1 = zero;
    cec_intp i = 0, eq = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch(ahead + 8 * i, _MM_HINT_T0);
        _mm_prefetch(ahead + 8 * i + 64, _MM_HINT_T0);
        __m512d d0 = _mm512_sub_pd(_mm512_loadu_pd(x + i), sh);
        __m512d d1 = _mm512_sub_pd(_mm512_loadu_pd(x + i + 8), sh);
        __mmask8 e0 = _mm512_cmp_pd_mask(d0, zero, _CMP_EQ_OQ);
        __mmask8 e1 = _mm512_cmp_pd_mask(d1, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_pd(acc0, (__mmask8)~e0, acc0, cec_expsum8_avx512(d0));
        acc1 = _mm512_mask_add_pd(acc1, (__mmask8)~e1, acc1, cec_expsum8_avx512(d1));
        eq += _mm_popcnt_u32(e0) + _mm_popcnt_u32(e1);
    }
    for (; i < n; i += 8) {
        __mmask8 m = cec_tail_mask8(n - i);
        __m512d d = _mm512_sub_pd(_mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY), m, x + i), sh);
        __mmask8 e = _mm512_cmp_pd_mask(d, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_pd(acc0, (__mmask8)~e, acc0, cec_expsum8_avx512(d));
        eq += _mm_popcnt_u32(e);
    }
    *n_eq = eq;
    return _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
}

CEC_ATTR_AVX512 static void cec_expsum_inplace_f64_avx512(double *a, cec_intp n)
{
    for (cec_intp i = 0; i < n; i += 8) {
        __mmask8 m = cec_tail_mask8(n - i);
        _mm512_mask_storeu_pd(a + i, m, cec_expsum8_avx512(_mm512_maskz_loadu_pd(m, a + i)));
    }
}

/* 16 x 16 float transpose in registers: on return r[j] lane l = old r[l] lane j. */
CEC_ATTR_AVX512 static inline void cec_transpose16_avx512(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/*
 * The second half of a 16-row block's log-sum-exp: given the lane-wise row
 * maxima m and the transposed rows in scratch (16 * k floats), store the
 * maxima and lse = logsum relative to the shift (see row_lse).
 */
CEC_ATTR_AVX512 static inline void cec_block_lse16_finish_avx512(__m512 m, const float *scratch,
                                                                 cec_intp k, float *rowmax,
                                                                 double *lse)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    /* an all -inf row would give -inf - -inf = NaN: shift it by 0 */
    __m512 shift = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m, neg_inf, _CMP_EQ_OQ), m,
                                        _mm512_setzero_ps());
    /* as in row_lse: the sum of the non-maximal terms and the count of ties */
    __m512 rest = _mm512_setzero_ps();
    __m512i ties = _mm512_setzero_si512();
    for (cec_intp j = 0; j < k; j++) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(scratch + 16 * j), shift);
        __mmask16 tie = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_EQ_OQ);
        rest = _mm512_mask_add_ps(rest, (__mmask16)~tie, rest, cec_expsum16_avx512(d));
        ties = _mm512_mask_add_epi32(ties, tie, ties, _mm512_set1_epi32(1));
    }
    _mm512_storeu_ps(rowmax, m);
    /* rest + ties - 1, exact for the small integer ties; -1 for an all -inf row */
    float u[16];
    _mm512_storeu_ps(u, _mm512_add_ps(rest, _mm512_sub_ps(_mm512_cvtepi32_ps(ties),
                                                           _mm512_set1_ps(1.0f))));
#pragma omp simd
    for (int l = 0; l < 16; l++) {
        u[l] = cec_log1p_f32(u[l]);
    }
    for (int l = 0; l < 16; l++) {
        lse[l] = (double)u[l];
    }
}

/* ---- loading 16 elements of each input type as floats ---- */

CEC_ATTR_AVX512 static inline __m512 cec_load16_f32_avx512(const float *p)
{
    return _mm512_loadu_ps(p);
}

CEC_ATTR_AVX512 static inline __m512 cec_mask_load16_f32_avx512(__m512 src, __mmask16 m,
                                                               const float *p)
{
    return _mm512_mask_loadu_ps(src, m, p);
}

/* bfloat16: widen to 32 bits and shift into the upper half */
CEC_ATTR_AVX512 static inline __m512 cec_widen16_bf16_avx512(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

CEC_ATTR_AVX512 static inline __m512 cec_load16_bf16_avx512(const cec_bf16_t *p)
{
    return cec_widen16_bf16_avx512(_mm256_loadu_si256((const __m256i *)p));
}

CEC_ATTR_AVX512 static inline __m512 cec_mask_load16_bf16_avx512(__m512 src, __mmask16 m,
                                                                const cec_bf16_t *p)
{
    return _mm512_mask_blend_ps(m, src, cec_widen16_bf16_avx512(_mm256_maskz_loadu_epi16(m, p)));
}

/*
 * 32 bfloat16 as two vectors in one 64-byte load: the even elements shifted
 * into the upper halves of the 32-bit lanes, the odd ones masked in place (one
 * instruction per 16 elements instead of a widen and a shift). For the row
 * loops that do not care about the order of the elements: max and sums.
 */
CEC_ATTR_AVX512 static inline void cec_load32_bf16_avx512(const cec_bf16_t *p, __m512 *v0,
                                                          __m512 *v1)
{
    __m512i w = _mm512_loadu_si512((const void *)p);
    *v0 = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    *v1 = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* float16: F16C's vcvtph2ps */
CEC_ATTR_AVX512 static inline __m512 cec_load16_f16_avx512(const cec_f16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

CEC_ATTR_AVX512 static inline __m512 cec_mask_load16_f16_avx512(__m512 src, __mmask16 m,
                                                               const cec_f16_t *p)
{
    return _mm512_mask_blend_ps(m, src, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)));
}

/*
 * Stores of floats as the input type, rounded to nearest even as
 * cec_store_bf16 / cec_store_f16 do, bit for bit (NaN included: bfloat16 keeps
 * the upper payload and sets the quiet bit, float16 gives sign | 0x7E00):
 * masked for 16 lanes, and 32 lanes (two vectors, in the order of the
 * type's cec_load32) as one 64-byte store.
 */
CEC_ATTR_AVX512 static inline __m512i cec_round_bf16_avx512(__m512 v)
{
    /* the bfloat16 in the upper half of each 32-bit lane */
    __m512i u = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

CEC_ATTR_AVX512 static inline __m256i cec_round_f16_avx512(__m512 v)
{
    __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m256i canon = _mm512_cvtepi32_epi16(_mm512_or_si512(
        _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(v), 16), _mm512_set1_epi32(0x8000)),
        _mm512_set1_epi32(0x7E00)));
    return _mm256_mask_mov_epi16(h, nan, canon);
}

CEC_ATTR_AVX512 static inline void cec_mask_store16_f32_avx512(float *p, __mmask16 m, __m512 v)
{
    _mm512_mask_storeu_ps(p, m, v);
}

CEC_ATTR_AVX512 static inline void cec_store32_f32_avx512(float *p, __m512 v0, __m512 v1)
{
    _mm512_storeu_ps(p, v0);
    _mm512_storeu_ps(p + 16, v1);
}

CEC_ATTR_AVX512 static inline void cec_mask_store16_bf16_avx512(cec_bf16_t *p, __mmask16 m,
                                                                __m512 v)
{
    __m512i r = _mm512_srli_epi32(cec_round_bf16_avx512(v), 16);
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(r));
}

/* the inverse of cec_load32_bf16_avx512: v0 holds the even elements, v1 the odd ones */
CEC_ATTR_AVX512 static inline void cec_store32_bf16_avx512(cec_bf16_t *p, __m512 v0, __m512 v1)
{
    __m512i even = _mm512_srli_epi32(cec_round_bf16_avx512(v0), 16);
    /* 0xF8: a | (b & c), c the upper-half mask */
    __m512i both = _mm512_ternarylogic_epi32(even, cec_round_bf16_avx512(v1),
                                             _mm512_set1_epi32((int)0xFFFF0000u), 0xF8);
    _mm512_storeu_si512((void *)p, both);
}

CEC_ATTR_AVX512 static inline void cec_mask_store16_f16_avx512(cec_f16_t *p, __mmask16 m,
                                                               __m512 v)
{
    _mm256_mask_storeu_epi16(p, m, cec_round_f16_avx512(v));
}

CEC_ATTR_AVX512 static inline void cec_store32_f16_avx512(cec_f16_t *p, __m512 v0, __m512 v1)
{
    _mm512_storeu_si512((void *)p, _mm512_inserti64x4(
        _mm512_castsi256_si512(cec_round_f16_avx512(v0)), cec_round_f16_avx512(v1), 1));
}

/* ((double)v - shift) - logsum for the 16 floats of v, rounded once to float */
CEC_ATTR_AVX512 static inline __m512 cec_sub_in_double16_avx512(__m512 v, __m512d sh, __m512d ls)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    lo = _mm512_sub_pd(_mm512_sub_pd(lo, sh), ls);
    hi = _mm512_sub_pd(_mm512_sub_pd(hi, sh), ls);
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}

CEC_ATTR_AVX512 static inline void cec_load32_f32_avx512(const float *p, __m512 *v0, __m512 *v1)
{
    *v0 = _mm512_loadu_ps(p);
    *v1 = _mm512_loadu_ps(p + 16);
}

CEC_ATTR_AVX512 static inline void cec_load32_f16_avx512(const cec_f16_t *p, __m512 *v0,
                                                         __m512 *v1)
{
    *v0 = cec_load16_f16_avx512(p);
    *v1 = cec_load16_f16_avx512(p + 16);
}

#define CEC_IN float
#define CEC_RD(name) CEC_CAT3(cec, name, f32_avx512)
#define CEC_LOAD16 cec_load16_f32_avx512
#define CEC_MASK_LOAD16 cec_mask_load16_f32_avx512
#define CEC_LOAD32 cec_load32_f32_avx512
#define CEC_MASK_STORE16 cec_mask_store16_f32_avx512
#define CEC_STORE32 cec_store32_f32_avx512
#include "_rowmath_avx512_read.h"
#undef CEC_IN
#undef CEC_RD
#undef CEC_LOAD16
#undef CEC_MASK_LOAD16
#undef CEC_LOAD32
#undef CEC_MASK_STORE16
#undef CEC_STORE32

#define CEC_IN cec_bf16_t
#define CEC_RD(name) CEC_CAT3(cec, name, bf16_avx512)
#define CEC_LOAD16 cec_load16_bf16_avx512
#define CEC_MASK_LOAD16 cec_mask_load16_bf16_avx512
#define CEC_LOAD32 cec_load32_bf16_avx512
#define CEC_MASK_STORE16 cec_mask_store16_bf16_avx512
#define CEC_STORE32 cec_store32_bf16_avx512
#include "_rowmath_avx512_read.h"
#undef CEC_IN
#undef CEC_RD
#undef CEC_LOAD16
#undef CEC_MASK_LOAD16
#undef CEC_LOAD32
#undef CEC_MASK_STORE16
#undef CEC_STORE32

#define CEC_IN cec_f16_t
#define CEC_RD(name) CEC_CAT3(cec, name, f16_avx512)
#define CEC_LOAD16 cec_load16_f16_avx512
#define CEC_MASK_LOAD16 cec_mask_load16_f16_avx512
#define CEC_LOAD32 cec_load32_f16_avx512
#define CEC_MASK_STORE16 cec_mask_store16_f16_avx512
#define CEC_STORE32 cec_store32_f16_avx512
#include "_rowmath_avx512_read.h"
#undef CEC_IN
#undef CEC_RD
#undef CEC_LOAD16
#undef CEC_MASK_LOAD16
#undef CEC_LOAD32
#undef CEC_MASK_STORE16
#undef CEC_STORE32

/* cap(v) = c tanh(v inv_c) of one value, as the vector kernels compute it. */
CEC_ATTR_AVX512 static inline float cec_softcap1_avx512(float v, float c, float inv_c)
{
    __m512 t = cec_tanh16_avx512(_mm512_mul_ps(_mm512_set1_ps(v), _mm512_set1_ps(inv_c)));
    return _mm512_cvtss_f32(_mm512_mul_ps(_mm512_set1_ps(c), t));
}

/*
 * row_grad_softcap for float32 on AVX-512:
 * out_i = (a exp(cap(x_i) - shift) - w_i (c1 t_i + c0)) cap'(x_i). out may alias x.
 */
CEC_ATTR_AVX512 static void cec_row_grad_softcap_f32_avx512(const float *x, const float *t,
                                                            const double *w, cec_intp n,
                                                            float shift, float a, float c1,
                                                            float c0, float c, float inv_c,
                                                            float *out)
{
    const __m512 sh = _mm512_set1_ps(shift), va = _mm512_set1_ps(a);
    const __m512 vc1 = _mm512_set1_ps(c1), vc0 = _mm512_set1_ps(c0);
    const __m512 vc = _mm512_set1_ps(c), vi = _mm512_set1_ps(inv_c);
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 th, v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 d = cec_tanh_grad16_avx512(_mm512_mul_ps(v, vi), &th);
        __m512 target = t == NULL ? vc0 : _mm512_fmadd_ps(vc1, _mm512_maskz_loadu_ps(m, t + i), vc0);
        if (w != NULL) {
            __m256 lo = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m & 0xFF), w + i));
            __m256 hi = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m >> 8), w + i + 8));
            target = _mm512_mul_ps(_mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1), target);
        }
        __m512 p = cec_exp16_avx512(_mm512_sub_ps(_mm512_mul_ps(vc, th), sh));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_fmsub_ps(va, p, target), d));
    }
}

#endif /* CEC_HAVE_X86_DISPATCH */
#endif /* CECORE_ROWMATH_AVX512_H */
