/*
 * cecore's SIMD row maths: vectorisable exp/log, and the row kernels of
 * _rowmath_impl.h compiled for several ISAs with one picked at run time.
 *
 * Why not libm: a call to expf/logf inside a loop stops vectorisation, and the
 * kernels then run at the speed of the scalar call. The polynomials below are
 * plain arithmetic that GCC and Clang vectorise under `#pragma omp simd`.
 *
 * Runtime dispatch (x86-64 with GCC or Clang): every kernel is compiled for
 * AVX-512 (F/DQ/BW/VL), AVX2+FMA and the baseline; cec_dispatch_init() picks the
 * best the CPU supports, or the level named by the environment variable
 * CECORE_SIMD ("avx512", "avx2", "baseline") if the CPU supports it. Elsewhere
 * (MSVC, aarch64) only the baseline build exists, vectorised for the baseline.
 */
#ifndef CECORE_ROWMATH_H
#define CECORE_ROWMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t cec_intp;

#if defined(__GNUC__)
#define CEC_INLINE static inline __attribute__((always_inline))
#define CEC_MAYBE_UNUSED __attribute__((unused))
#else
#define CEC_INLINE static __forceinline
#define CEC_MAYBE_UNUSED
#endif

/* ------------------------------------------------------------------------ */
/* Element-wise exp and log, accurate to ~1-2 ulp over the whole input range */

CEC_INLINE float cec_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
CEC_INLINE int32_t cec_bits_of_f32(float f) { int32_t i; memcpy(&i, &f, 4); return i; }
CEC_INLINE double cec_f64_from_bits(int64_t i) { double f; memcpy(&f, &i, 8); return f; }
CEC_INLINE int64_t cec_bits_of_f64(double f) { int64_t i; memcpy(&i, &f, 8); return i; }

/*
 * exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2 (Cephes expf
 * polynomial). Rounding uses the 1.5 * 2^23 "magic number" so that no
 * float->int conversion is needed; 2^n is applied as 2^n1 * 2^n2 so that
 * results in the subnormal range underflow gradually instead of flushing to 0.
 * exp(-inf) = 0, exp(NaN) = NaN, exp(x > 88.72) = inf.
 */
CEC_INLINE float cec_exp_f32(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x > -110.0f ? x : -110.0f; /* also maps NaN to -110; restored below */
    xc = xc < 88.7228394f ? xc : 88.7228394f;
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic;
    /* Cody-Waite: ln2 split in two so that n * ln2_hi is exact */
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    float t1 = n * 0.5f + magic;
    float n1 = t1 - magic;
    float t2 = (n - n1) + magic;
    int32_t mb = cec_bits_of_f32(magic);
    float s1 = cec_f32_from_bits((cec_bits_of_f32(t1) - mb + 127) << 23);
    float s2 = cec_f32_from_bits((cec_bits_of_f32(t2) - mb + 127) << 23);
    float y = p * s1 * s2;
    return x != x ? x : y;
}

/* Same scheme in double: Taylor polynomial of degree 13 (truncation < 2^-57). */
CEC_INLINE double cec_exp_f64(double x)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double xc = x > -746.0 ? x : -746.0;
    xc = xc < 709.782712893384 ? xc : 709.782712893384;
    double t = xc * 1.4426950408889634074 + magic;
    double n = t - magic;
    double r = xc - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    double t1 = n * 0.5 + magic;
    double n1 = t1 - magic;
    double t2 = (n - n1) + magic;
    int64_t mb = cec_bits_of_f64(magic);
    double s1 = cec_f64_from_bits((cec_bits_of_f64(t1) - mb + 1023) << 52);
    double s2 = cec_f64_from_bits((cec_bits_of_f64(t2) - mb + 1023) << 52);
    double y = p * s1 * s2;
    return x != x ? x : y;
}

/*
 * exp(x) for x <= 0 (or NaN) whose results are only summed next to a term of 1
 * (the row maximum's): results below the smallest normal number are flushed to
 * 0, which changes such a sum by less than 2^-126 per term. That allows one
 * scale multiplication instead of two and no clamp at the top: about half the
 * instructions of cec_exp_f32. NaN propagates (through the polynomial).
 */
CEC_INLINE float cec_expsum_f32(float x)
{
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    float scale = cec_f32_from_bits((cec_bits_of_f32(t) - (cec_bits_of_f32(magic) - 127)) << 23);
    return x < -87.33654475f ? 0.0f : p * scale;
}

CEC_INLINE double cec_expsum_f64(double x)
{
    const double magic = 6755399441055744.0;
    double t = x * 1.4426950408889634074 + magic;
    double n = t - magic;
    double r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    double scale = cec_f64_from_bits((cec_bits_of_f64(t) - (cec_bits_of_f64(magic) - 1023)) << 52);
    return x < -708.39641853226 ? 0.0 : p * scale;
}

/*
 * log(x) for float (Cephes logf): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log(x) = log(m) + e ln2 with a degree-9 polynomial for log(1 + (m - 1)).
 * Subnormals are scaled into the normal range first. log(0) = -inf,
 * log(x < 0) = NaN, log(inf) = inf, log(NaN) = NaN.
 */
CEC_INLINE float cec_log_f32(float x)
{
    int tiny = x < 1.17549435e-38f;
    float xs = tiny ? x * 8388608.0f : x; /* 2^23 */
    int32_t ix = cec_bits_of_f32(xs);
    int32_t e = ((ix >> 23) & 0xff) - 126 - (tiny ? 23 : 0);
    float m = cec_f32_from_bits((ix & 0x007fffff) | 0x3f000000); /* [0.5, 1) */
    int small = m < 0.707106781186547524f;
    e = e - small;
    m = small ? m + m - 1.0f : m - 1.0f;
    float fe = (float)e;
    float z = m * m;
    float p = 7.0376836292E-2f;
    p = p * m - 1.1514610310E-1f;
    p = p * m + 1.1676998740E-1f;
    p = p * m - 1.2420140846E-1f;
    p = p * m + 1.4249322787E-1f;
    p = p * m - 1.6668057665E-1f;
    p = p * m + 2.0000714765E-1f;
    p = p * m - 2.4999993993E-1f;
    p = p * m + 3.3333331174E-1f;
    float y = p * m * z;
    y = y - 2.12194440e-4f * fe;
    y = y - 0.5f * z;
    float r = m + y + 0.693359375f * fe;
    r = x == 0.0f ? -INFINITY : r;
    r = x < 0.0f ? NAN : r;
    r = x == INFINITY ? INFINITY : r;
    return x != x ? x : r;
}

/*
 * log1p(u) for u in [-1/2, 1] without a log: 2 atanh(z), z = u / (2 + u) in
 * [-1/3, 1/3], by its odd series up to z^13 (truncation < 2e-8 relative);
 * relative error <= 2.3 ulp, exact in the limit u -> 0.
 */
CEC_INLINE float cec_log1p_unit_f32(float u)
{
    float z = u / (2.0f + u);
    float w = z * z;
    float p = 1.0f / 13.0f;
    p = p * w + 1.0f / 11.0f;
    p = p * w + 1.0f / 9.0f;
    p = p * w + 1.0f / 7.0f;
    p = p * w + 1.0f / 5.0f;
    p = p * w + 1.0f / 3.0f;
    p = p * w + 1.0f;
    return 2.0f * z * p;
}

/*
 * log1p(u) for u >= -1: the series above in [-1/2, 1], else log(1 + u), where
 * 1 + u is exact below -1/2 and log(1 + u) >= log 2 above 1.
 */
CEC_INLINE float cec_log1p_f32(float u)
{
    return u < -0.5f || u > 1.0f ? cec_log_f32(1.0f + u) : cec_log1p_unit_f32(u);
}

/* ------------------------------------------------------------------------ */
/* The row kernels, once per (dtype, ISA)                                    */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CEC_HAVE_X86_DISPATCH 1
#define CEC_ATTR_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2,popcnt")))
#define CEC_ATTR_AVX2 __attribute__((target("avx2,fma,bmi2,popcnt")))
#else
#define CEC_HAVE_X86_DISPATCH 0
#endif

#if CEC_HAVE_X86_DISPATCH
#include <immintrin.h>

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
CEC_ATTR_AVX512 static inline __m512 cec_expsum16_avx512(__m512 d)
{
    /* max(lo, u) returns u when u is NaN; -inf becomes -151 and 2^-151 -> 0 */
    __m512 u = _mm512_max_ps(_mm512_set1_ps(-151.0f),
                             _mm512_mul_ps(d, _mm512_set1_ps(1.44269504088896341f)));
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

CEC_ATTR_AVX512 static inline double cec_sum16_avx512(__m512 v)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

/* row_max for float32 on AVX-512: masked tail, two accumulators, no scalar loop. */
CEC_ATTR_AVX512 static float cec_row_max_f32_avx512(const float *x, cec_intp n)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = neg_inf, m1 = neg_inf;
    cec_intp i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
    }
    for (; i < n; i += 16) {
        cec_intp left = n - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        m0 = _mm512_max_ps(_mm512_mask_loadu_ps(neg_inf, m, x + i), m0);
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

/*
 * exp(x) for 16 floats, accurate to ~1 ulp over the whole range: Cody-Waite
 * reduction x = k ln2 + r, |r| <= ln2 / 2, the Cephes polynomial for e^r, and
 * vscalefps for 2^k, which underflows gradually and overflows to inf. NaN
 * propagates (max/min return their second operand for a NaN).
 */
CEC_ATTR_AVX512 static inline __m512 cec_exp16_avx512(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(100.0f), x);
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

CEC_ATTR_AVX512 static inline __mmask16 cec_tail_mask16(cec_intp left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
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

/* row_grad for float32 on AVX-512: out_i = a exp(x_i - shift) - w_i (c1 t_i + c0). */
CEC_ATTR_AVX512 static void cec_row_grad_f32_avx512(const float *x, const float *t,
                                                    const double *w, cec_intp n, float shift,
                                                    float a, float c1, float c0, float *out)
{
    const __m512 sh = _mm512_set1_ps(shift), va = _mm512_set1_ps(a);
    const __m512 vc1 = _mm512_set1_ps(c1), vc0 = _mm512_set1_ps(c0);
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 target = t == NULL ? vc0 : _mm512_fmadd_ps(vc1, _mm512_maskz_loadu_ps(m, t + i), vc0);
        if (w != NULL) {
            __m256 lo = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m & 0xFF), w + i));
            __m256 hi = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m >> 8), w + i + 8));
            __m512 wv = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
            target = _mm512_mul_ps(wv, target);
        }
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_fmsub_ps(va, cec_exp16_avx512(_mm512_sub_ps(v, sh)), target));
    }
}

/*
 * row_sumexp for float32 on AVX-512: same contract as the portable one. While
 * it computes (from L1), it prefetches the n elements that follow x, which is
 * where the next row or chunk usually starts: without this the core's memory
 * reads and its arithmetic take turns instead of overlapping (prefetching
 * past the end of an array is harmless).
 */
CEC_ATTR_AVX512 static double cec_row_sumexp_f32_avx512(const float *x, cec_intp n, float shift,
                                                       cec_intp *n_eq)
{
    const __m512 sh = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
    const char *ahead = (const char *)(x + n);
    __m512 acc0 = zero, acc1 = zero;
    double s = 0.0;
    cec_intp i = 0, eq = 0;
    int steps = 0;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch(ahead + 4 * i, _MM_HINT_T0);
        _mm_prefetch(ahead + 4 * i + 64, _MM_HINT_T0);
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), sh);
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), sh);
        /* elements equal to the shift are counted, not summed (see row_sumexp) */
        __mmask16 e0 = _mm512_cmp_ps_mask(d0, zero, _CMP_EQ_OQ);
        __mmask16 e1 = _mm512_cmp_ps_mask(d1, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_ps(acc0, (__mmask16)~e0, acc0, cec_expsum16_avx512(d0));
        acc1 = _mm512_mask_add_ps(acc1, (__mmask16)~e1, acc1, cec_expsum16_avx512(d1));
        eq += _mm_popcnt_u32(e0) + _mm_popcnt_u32(e1);
        /* float partial sums of at most 16 terms per lane, then into double */
        if (++steps == 16) {
            s += cec_sum16_avx512(_mm512_add_ps(acc0, acc1));
            acc0 = acc1 = zero;
            steps = 0;
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = cec_tail_mask16(n - i);
        __m512 d = _mm512_sub_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i), sh);
        __mmask16 e = _mm512_cmp_ps_mask(d, zero, _CMP_EQ_OQ);
        acc0 = _mm512_mask_add_ps(acc0, (__mmask16)~e, acc0, cec_expsum16_avx512(d));
        eq += _mm_popcnt_u32(e);
    }
    *n_eq = eq;
    return s + cec_sum16_avx512(_mm512_add_ps(acc0, acc1));
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
 * block_lse for float32 on AVX-512 and rows of k <= 32, vectorised across
 * rows: 16 rows are loaded as (masked, -inf padded) vectors and transposed in
 * registers, so that lane l holds row r + l and the max, exp and sum of 16
 * short rows run as k vertical steps instead of 16 latency-bound scalar loops
 * (AVX-512 gathers would do the same but cost ~60 cycles each on Zen 4).
 * One vector log serves 16 rows. Handles rows - rows % 16 rows; scratch holds
 * 16 * 32 floats.
 */
CEC_ATTR_AVX512 static void cec_block_lse_f32_avx512_rows(const float *x, cec_intp rows,
                                                          cec_intp stride, cec_intp k,
                                                          float *scratch, float *rowmax,
                                                          double *lse)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    for (cec_intp r = 0; r + 16 <= rows; r += 16) {
        __m512 m = neg_inf;
        for (cec_intp c0 = 0; c0 < k; c0 += 16) {
            cec_intp width = k - c0 < 16 ? k - c0 : 16;
            __mmask16 mask = (__mmask16)(width == 16 ? 0xFFFFu : (1u << width) - 1u);
            __m512 v[16];
            for (int l = 0; l < 16; l++) {
                v[l] = _mm512_mask_loadu_ps(neg_inf, mask, x + (r + l) * stride + c0);
            }
            cec_transpose16_avx512(v);
            for (int j = 0; j < width; j++) {
                m = _mm512_max_ps(v[j], m);
                _mm512_storeu_ps(scratch + 16 * (c0 + j), v[j]);
            }
        }
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
        _mm512_storeu_ps(rowmax + r, m);
        /* rest + ties - 1, exact for the small integer ties; -1 for an all -inf row */
        float u[16];
        _mm512_storeu_ps(u, _mm512_add_ps(rest, _mm512_sub_ps(_mm512_cvtepi32_ps(ties),
                                                               _mm512_set1_ps(1.0f))));
#pragma omp simd
        for (int l = 0; l < 16; l++) {
            u[l] = cec_log1p_f32(u[l]);
        }
        for (int l = 0; l < 16; l++) {
            lse[r + l] = (double)u[l];
        }
    }
}

/*
 * AVX2 + FMA version of the float32 sum of exponentials (8 lanes). Without
 * vscalefps, 2^k goes into the exponent bits, so d is clamped at -87.33 (the
 * result would leave the normal range) and such terms are zeroed by a mask:
 * they are below 2^-126 next to the maximum's 1, and an exact 0 for -inf.
 */
CEC_ATTR_AVX2 static inline __m256 cec_expsum8_avx2(__m256 d)
{
    const __m256 lo = _mm256_set1_ps(-87.33654475f);
    /* max(lo, d) returns d for NaN; the polynomial then keeps it NaN */
    __m256 u = _mm256_mul_ps(_mm256_max_ps(lo, d), _mm256_set1_ps(1.44269504088896341f));
    __m256 k = _mm256_round_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(u, k);
    __m256 p = _mm256_set1_ps(1.5337577497120947e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3399859890341759e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618519805371761e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550329014658928e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022646248340607e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471824645996e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_andnot_ps(_mm256_cmp_ps(d, lo, _CMP_LT_OQ), e);
}

CEC_ATTR_AVX2 static inline double cec_sum8_avx2(__m256 v)
{
    __m256d s = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

/* row_sumexp for float32 on AVX2: same contract as the portable one. */
CEC_ATTR_AVX2 static double cec_row_sumexp_f32_avx2(const float *x, cec_intp n, float shift,
                                                   cec_intp *n_eq)
{
    const __m256 sh = _mm256_set1_ps(shift), zero = _mm256_setzero_ps();
    const char *ahead = (const char *)(x + n);
    __m256 acc0 = zero, acc1 = zero;
    double s = 0.0;
    cec_intp i = 0, eq = 0;
    int steps = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch(ahead + 4 * i, _MM_HINT_T0);
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), sh);
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh);
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
            tail[j] = i + j < n ? x[i + j] : -INFINITY;
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
/* 8 x 8 float transpose in registers: on return r[j] lane l = old r[l] lane j. */
CEC_ATTR_AVX2 static inline void cec_transpose8_avx2(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/*
 * block_lse for float32 on AVX2 and rows of k <= 32: the 8-lane counterpart of
 * cec_block_lse_f32_avx512_rows (8 rows transposed at a time). Handles
 * rows - rows % 8 rows; scratch holds 8 * 32 floats.
 */
CEC_ATTR_AVX2 static void cec_block_lse_f32_avx2_rows(const float *x, cec_intp rows,
                                                      cec_intp stride, cec_intp k,
                                                      float *scratch, float *rowmax,
                                                      double *lse)
{
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (cec_intp r = 0; r + 8 <= rows; r += 8) {
        __m256 m = neg_inf;
        for (cec_intp c0 = 0; c0 < k; c0 += 8) {
            cec_intp width = k - c0 < 8 ? k - c0 : 8;
            __m256i load = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)width), lane);
            __m256 v[8];
            for (int l = 0; l < 8; l++) {
                /* masked lanes read nothing and become -inf */
                v[l] = _mm256_blendv_ps(neg_inf,
                                        _mm256_maskload_ps(x + (r + l) * stride + c0, load),
                                        _mm256_castsi256_ps(load));
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
#endif

#define CEC_CAT3_(a, b, c) a##_##b##_##c
#define CEC_CAT3(a, b, c) CEC_CAT3_(a, b, c)

#define CEC_T float
#define CEC_INFINITY INFINITY
#define CEC_EXP cec_exp_f32
#define CEC_EXPSUM cec_expsum_f32
#define CEC_LOG cec_log_f32
#define CEC_LOG1P cec_log1p_f32
#define CEC_LOG1P_UNIT cec_log1p_unit_f32
#define CEC_ATTR
#define CEC_FN(name) CEC_CAT3(cec, name, f32_base)
#include "_rowmath_impl.h"
#undef CEC_FN
#undef CEC_ATTR
#if CEC_HAVE_X86_DISPATCH
#define CEC_ATTR CEC_ATTR_AVX2
#define CEC_FN(name) CEC_CAT3(cec, name, f32_avx2)
#define CEC_HAND_WRITTEN_ROW_SUMEXP
#define CEC_BLOCK_LSE_ROWS cec_block_lse_f32_avx2_rows
#define CEC_BLOCK_LSE_GROUP 8
#include "_rowmath_impl.h"
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_BLOCK_LSE_ROWS
#undef CEC_BLOCK_LSE_GROUP
#undef CEC_FN
#undef CEC_ATTR
#define CEC_ATTR CEC_ATTR_AVX512
#define CEC_FN(name) CEC_CAT3(cec, name, f32_avx512)
#define CEC_HAND_WRITTEN_ROW_SUMEXP
#define CEC_HAND_WRITTEN_EXPSUM_INPLACE
#define CEC_HAND_WRITTEN_MAX
#define CEC_HAND_WRITTEN_ROW_OUT
#define CEC_HAND_WRITTEN_BCE_LOGITS
#define CEC_BLOCK_LSE_ROWS cec_block_lse_f32_avx512_rows
#define CEC_BLOCK_LSE_GROUP 16
#include "_rowmath_impl.h"
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_HAND_WRITTEN_EXPSUM_INPLACE
#undef CEC_HAND_WRITTEN_MAX
#undef CEC_HAND_WRITTEN_ROW_OUT
#undef CEC_HAND_WRITTEN_BCE_LOGITS
#undef CEC_BLOCK_LSE_ROWS
#undef CEC_BLOCK_LSE_GROUP
#undef CEC_FN
#undef CEC_ATTR
#endif
#undef CEC_T
#undef CEC_EXP
#undef CEC_EXPSUM
#undef CEC_LOG
#undef CEC_LOG1P
#undef CEC_LOG1P_UNIT

/* float64: vectorised exp; the BCE loops use libm's log/log1p (scalar). */
#define CEC_T double
#define CEC_EXP cec_exp_f64
#define CEC_EXPSUM cec_expsum_f64
#define CEC_LOG log
#define CEC_LOG1P log1p
#define CEC_LOG1P_UNIT log1p
#define CEC_ATTR
#define CEC_FN(name) CEC_CAT3(cec, name, f64_base)
#include "_rowmath_impl.h"
#undef CEC_FN
#undef CEC_ATTR
#if CEC_HAVE_X86_DISPATCH
#define CEC_ATTR CEC_ATTR_AVX2
#define CEC_FN(name) CEC_CAT3(cec, name, f64_avx2)
#include "_rowmath_impl.h"
#undef CEC_FN
#undef CEC_ATTR
#define CEC_ATTR CEC_ATTR_AVX512
#define CEC_FN(name) CEC_CAT3(cec, name, f64_avx512)
#define CEC_HAND_WRITTEN_ROW_SUMEXP
#define CEC_HAND_WRITTEN_EXPSUM_INPLACE
#define CEC_HAND_WRITTEN_MAX
#include "_rowmath_impl.h"
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_HAND_WRITTEN_EXPSUM_INPLACE
#undef CEC_HAND_WRITTEN_MAX
#undef CEC_FN
#undef CEC_ATTR
#endif
#undef CEC_T
#undef CEC_EXP
#undef CEC_EXPSUM
#undef CEC_LOG
#undef CEC_LOG1P
#undef CEC_LOG1P_UNIT
#undef CEC_INFINITY

/* ------------------------------------------------------------------------ */
/* Dispatch table                                                            */

#define CEC_DECLARE_OPS(T, SFX)                                                        \
    typedef struct {                                                                   \
        T (*row_max)(const T *, cec_intp);                                             \
        double (*row_sumexp)(const T *, cec_intp, T, cec_intp *);                      \
        double (*row_lse)(const T *, cec_intp, T *);                                   \
        double (*row_wsum)(const double *, const T *, cec_intp, double, double);       \
        double (*row_tdot)(const T *, const double *, const T *, cec_intp, double, double *); \
        void (*row_exp)(const T *, cec_intp, T, T, T *);                               \
        void (*row_sub)(const T *, cec_intp, double, double, T *);                        \
        void (*row_grad)(const T *, const T *, const double *, cec_intp, T, T, T, T, T *); \
        void (*block_lse)(const T *, cec_intp, cec_intp, cec_intp, T *, T *, double *); \
        double (*bce_logits)(const T *, const T *, const T *, const T *, cec_intp, T *); \
        double (*bce_probs)(const T *, const T *, const T *, cec_intp, T *, cec_intp *); \
        double (*bce_logits_grad)(const T *, const T *, const T *, const T *, cec_intp, T, T *, T *); \
    } cec_ops_##SFX##_t;

CEC_DECLARE_OPS(float, f32)
CEC_DECLARE_OPS(double, f64)

#define CEC_OPS_TABLE(SFX, ISA)                                                     \
    {                                                                               \
        .row_max = cec_row_max_##SFX##_##ISA,                                       \
        .row_sumexp = cec_row_sumexp_##SFX##_##ISA,                                 \
        .row_lse = cec_row_lse_##SFX##_##ISA,                                       \
        .row_wsum = cec_row_wsum_##SFX##_##ISA,                                     \
        .row_tdot = cec_row_tdot_##SFX##_##ISA,                                     \
        .row_exp = cec_row_exp_##SFX##_##ISA,                                       \
        .row_sub = cec_row_sub_##SFX##_##ISA,                                       \
        .row_grad = cec_row_grad_##SFX##_##ISA,                                     \
        .block_lse = cec_block_lse_##SFX##_##ISA,                                   \
        .bce_logits = cec_bce_logits_##SFX##_##ISA,                                 \
        .bce_probs = cec_bce_probs_##SFX##_##ISA,                                   \
        .bce_logits_grad = cec_bce_logits_grad_##SFX##_##ISA,                       \
    }

enum { CEC_SIMD_BASELINE = 0, CEC_SIMD_AVX2 = 1, CEC_SIMD_AVX512 = 2 };

static cec_ops_f32_t cec_ops_f32 = CEC_OPS_TABLE(f32, base);
static cec_ops_f64_t cec_ops_f64 = CEC_OPS_TABLE(f64, base);
static int cec_simd_level = CEC_SIMD_BASELINE;

/* Best level this CPU (and OS) supports. */
static int cec_simd_supported(void)
{
#if CEC_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
        return CEC_SIMD_AVX512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt")) {
        return CEC_SIMD_AVX2;
    }
#endif
    return CEC_SIMD_BASELINE;
}

/*
 * Select the kernels: the best supported level, lowered to `requested` when
 * 0 <= requested < best. Returns the level in use.
 */
CEC_MAYBE_UNUSED static int cec_dispatch_init(int requested)
{
    int level = cec_simd_supported();
    if (requested >= 0 && requested < level) {
        level = requested;
    }
#if CEC_HAVE_X86_DISPATCH
    if (level == CEC_SIMD_AVX512) {
        cec_ops_f32_t o32 = CEC_OPS_TABLE(f32, avx512);
        cec_ops_f64_t o64 = CEC_OPS_TABLE(f64, avx512);
        cec_ops_f32 = o32;
        cec_ops_f64 = o64;
    }
    else if (level == CEC_SIMD_AVX2) {
        cec_ops_f32_t o32 = CEC_OPS_TABLE(f32, avx2);
        cec_ops_f64_t o64 = CEC_OPS_TABLE(f64, avx2);
        cec_ops_f32 = o32;
        cec_ops_f64 = o64;
    }
    else
#endif
    {
        cec_ops_f32_t o32 = CEC_OPS_TABLE(f32, base);
        cec_ops_f64_t o64 = CEC_OPS_TABLE(f64, base);
        cec_ops_f32 = o32;
        cec_ops_f64 = o64;
    }
    cec_simd_level = level;
    return level;
}

#endif /* CECORE_ROWMATH_H */
