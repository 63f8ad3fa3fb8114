/*
 * cecore's portable element maths: exp/log polynomials that vectorise (no libm
 * call in a loop), and the 16-bit storage types with their scalar load/store.
 * Every other _rowmath header builds on this one; nothing here is ISA-specific.
 *
 * Why not libm: a call to expf/logf inside a loop stops vectorisation, and the
 * kernels then run at the speed of the scalar call. The polynomials below are
 * plain arithmetic that GCC and Clang vectorise under `#pragma omp simd`.
 */
#ifndef CECORE_ROWMATH_SCALAR_H
#define CECORE_ROWMATH_SCALAR_H

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


/*
 * tanh(x) for float without libm (logit soft-capping, c tanh(z / c)):
 *   |x| <  0.625: x + x^3 R(x^2), R a degree-4 minimax fit of (tanh(x) - x) / x^3
 *                (relative error of the fit < 5e-9);
 *   |x| >= 0.625: (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29 (no cancellation),
 *                the sign restored; e flushes to 0 below 2^-126, giving +-1 exactly
 *                (tanh rounds to +-1 in float from |x| > 9.01 anyway).
 * Both branches are computed and one selected, so that loops vectorise. Error
 * against float64 tanh, measured over every float: <= 1.51 ulp, with or without
 * FMA contraction (tests/test_losses_training.py sweeps each SIMD level);
 * tanh(+-inf) = +-1, tanh(NaN) = NaN.
 */
CEC_INLINE float cec_tanh_small_f32(float x)
{
    float s = x * x;
    float r = -5.704953168e-03f;
    r = r * s + 2.063905393e-02f;
    r = r * s - 5.373970363e-02f;
    r = r * s + 1.333144204e-01f;
    r = r * s - 3.333328193e-01f;
    return x + (x * s) * r;
}

CEC_INLINE float cec_tanh_f32(float x)
{
    float ax = x < 0 ? -x : x;
    float e = cec_expsum_f32(-2.0f * ax);
    float big = (1.0f - e) / (1.0f + e);
    big = x < 0 ? -big : big;
    return ax < 0.625f ? cec_tanh_small_f32(x) : big;
}

/*
 * tanh'(x) = 1 - tanh(x)^2, and tanh(x) in *t (as cec_tanh_f32): 1 - t^2 for
 * |x| < 0.625, else 4e / (1 + e)^2 (which keeps its relative accuracy where
 * 1 - t^2 would cancel). tanh'(+-inf) = 0.
 */
CEC_INLINE float cec_tanh_grad_f32(float x, float *t)
{
    float ax = x < 0 ? -x : x;
    float e = cec_expsum_f32(-2.0f * ax);
    float q = 1.0f + e;
    float big = (1.0f - e) / q;
    big = x < 0 ? -big : big;
    float small = cec_tanh_small_f32(x);
    int is_small = ax < 0.625f;
    *t = is_small ? small : big;
    return is_small ? 1.0f - small * small : (4.0f * e) / (q * q);
}

/* float64: libm's tanh (scalar; float64 is not the fast path), the derivative as above */
CEC_INLINE double cec_tanh_f64(double x) { return tanh(x); }

CEC_INLINE double cec_tanh_grad_f64(double x, double *t)
{
    double ax = fabs(x);
    double e = exp(-2.0 * ax);
    double th = tanh(x);
    *t = th;
    return ax < 0.625 ? 1.0 - th * th : (4.0 * e) / ((1.0 + e) * (1.0 + e));
}

/* ------------------------------------------------------------------------ */
/* 16-bit storage types                                                      */

/*
 * bfloat16 and IEEE float16 values as stored in memory. Distinct struct types
 * (not two typedefs of uint16_t) so that C and Cython's fused types tell them
 * apart; kernels never compute on them, they load them into float.
 */
typedef struct { uint16_t bits; } cec_bf16_t;
typedef struct { uint16_t bits; } cec_f16_t;

/* bfloat16 -> float is exact: the 16 bits are the float's upper half. */
CEC_INLINE float cec_load_bf16(cec_bf16_t v)
{
    return cec_f32_from_bits((int32_t)((uint32_t)v.bits << 16));
}

/*
 * float16 -> float, exact, branch-free (so that it vectorises): the 15 bits
 * below the sign are shifted into a float's exponent and mantissa and the
 * exponent rebased by a multiplication by 2^-112, which also maps the float16
 * exponent 31 (inf, NaN) to 255; subnormals come from a magic-number
 * subtraction instead. (Marat Dukhan's FP16 library, public domain scheme.)
 * Hand-written AVX2/AVX-512 loops use F16C's vcvtph2ps instead.
 */
CEC_INLINE float cec_load_f16(cec_f16_t v)
{
    uint32_t w = (uint32_t)v.bits << 16;
    uint32_t sign = w & 0x80000000u;
    uint32_t two_w = w + w;
    float normal = cec_f32_from_bits((int32_t)((two_w >> 4) + (0xE0u << 23))) * 1.925929944387235853e-34f;
    float subnormal = cec_f32_from_bits((int32_t)((two_w >> 17) | (126u << 23))) - 0.5f;
    uint32_t mag = two_w < (1u << 27) ? (uint32_t)cec_bits_of_f32(subnormal)
                                      : (uint32_t)cec_bits_of_f32(normal);
    return cec_f32_from_bits((int32_t)(sign | mag));
}

/* float -> bfloat16, rounded to nearest even (as PyTorch and ml_dtypes); NaN stays NaN. */
CEC_INLINE cec_bf16_t cec_store_bf16(float f)
{
    uint32_t u = (uint32_t)cec_bits_of_f32(f);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    cec_bf16_t r;
    r.bits = (uint16_t)(f != f ? (u >> 16) | 0x40u : rounded);
    return r;
}

/*
 * float -> float16, rounded to nearest even, overflow to inf, gradual
 * underflow, NaN kept (same source as cec_load_f16): adding a power of two
 * chosen from the exponent makes the FPU round the mantissa at float16's
 * precision, whose bits are then read off.
 */
CEC_INLINE cec_f16_t cec_store_f16(float f)
{
    float mag = f < 0 ? -f : f;
    float base = (mag * 5.192296858534827628e+33f) * 7.703719777548943412e-34f;
    uint32_t w = (uint32_t)cec_bits_of_f32(f);
    uint32_t shl1_w = w + w;
    uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    bias = bias < 0x71000000u ? 0x71000000u : bias;
    base = cec_f32_from_bits((int32_t)((bias >> 1) + 0x07800000u)) + base;
    uint32_t bits = (uint32_t)cec_bits_of_f32(base);
    uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    cec_f16_t r;
    r.bits = (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
    return r;
}

/* ------------------------------------------------------------------------ */
/* Instruction sets with their own kernels (_rowmath_avx2.h, _rowmath_avx512.h) */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CEC_HAVE_X86_DISPATCH 1
#define CEC_ATTR_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi2,popcnt")))
#define CEC_ATTR_AVX2 __attribute__((target("avx2,fma,f16c,bmi2,popcnt")))
#else
#define CEC_HAVE_X86_DISPATCH 0
#endif

/* Positions per block of the column kernels (_colmath_impl.h), and classes per
   chunk of their log-sum-exp (<= 256: the chunk's sums are float; the chunk,
   CEC_COL_CHUNK * CEC_COL_W values, stays in L1/L2) */
#define CEC_COL_W 1024
#define CEC_COL_CHUNK 16


#endif /* CECORE_ROWMATH_SCALAR_H */
