/*
 * Row moments for cecore._token_kernels: one SIMD pass over a row, given its
 * maximum m, of d_j = (x_j - m) * scale (scale = 1 / temperature):
 *
 *   res[0] = sum_{d_j != 0} e^{d_j}   (the "rest": the maximum's 1s stay out, as in row_lse)
 *   res[1] = #{j : d_j == 0}          (ties with the maximum)
 *   res[2] = sum_j d_j e^{d_j}        (<= 0; entropy = log S - res[2] / S, S = res[0] + res[1])
 *   res[3] = sum_j e^{2 d_j}          (sum of squared probabilities times S^2)
 *   res[4] = #{j : x_j > v}, res[5] = #{j : x_j == v}  (v: the target logit, for its rank)
 *
 * d_j is clamped below at -128 (float) / -1024 (double), where cec_expsum_* gives 0, so that
 * -inf logits give 0 * -128 = 0 in res[2] rather than 0 * -inf = NaN; NaN
 * propagates into every sum. Partial sums in T over chunks of 256 elements,
 * then in double, as row_sumexp. Compiled for the baseline, AVX2 and AVX-512
 * (the always-inline body takes the ISA of its caller) and picked with
 * cec_simd_level, which the module's dispatch_init sets.
 */
#ifndef CECORE_TOKENMATH_H
#define CECORE_TOKENMATH_H

#include "_rowmath.h"

#if defined(__GNUC__)
#define CEC_TOK_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define CEC_TOK_PREFETCH(p) ((void)0)
#endif

/*
 * While a chunk is computed (from L1), the n elements after x are prefetched:
 * that is where the next chunk or row usually starts, and without it the
 * memory reads and the arithmetic take turns (see cec_row_sumexp_f32_avx512).
 */
#define CEC_TOK_BODY(T, EXPSUM, LOW)                                                     \
    double rest = 0.0, dsum = 0.0, sq = 0.0;                                             \
    cec_intp ties = 0, gt = 0, eqv = 0;                                                  \
    const char *ahead = (const char *)(x + n);                                           \
    for (cec_intp c = 0; c < n; c += 256) {                                              \
        cec_intp end = n - c < 256 ? n : c + 256;                                        \
        T a0 = 0, a2 = 0, a3 = 0;                                                        \
        int t = 0, g = 0, q = 0; /* int lanes: as wide as float's */                     \
        for (cec_intp p = 0; p < (end - c) * (cec_intp)sizeof(T); p += 64) {             \
            CEC_TOK_PREFETCH(ahead + c * (cec_intp)sizeof(T) + p);                       \
        }                                                                                \
        _Pragma("omp simd reduction(+ : a0, a2, a3, t, g, q)")                           \
        for (cec_intp i = c; i < end; i++) {                                             \
            T d = (x[i] - m) * scale;                                                    \
            d = d < (T)(LOW) ? (T)(LOW) : d; /* NaN stays NaN */                         \
            T e = EXPSUM(d);                                                             \
            a0 += d != 0 ? e : (T)0;                                                     \
            t += d == 0;                                                                 \
            a2 += d * e;                                                                 \
            a3 += e * e;                                                                 \
            g += x[i] > v;                                                               \
            q += x[i] == v;                                                              \
        }                                                                                \
        rest += (double)a0;                                                              \
        ties += t;                                                                       \
        gt += g;                                                                         \
        eqv += q;                                                                        \
        dsum += (double)a2;                                                              \
        sq += (double)a3;                                                                \
    }                                                                                    \
    res[0] = rest;                                                                       \
    res[1] = (double)ties;                                                               \
    res[2] = dsum;                                                                       \
    res[3] = sq;                                                                         \
    res[4] = (double)gt;                                                                 \
    res[5] = (double)eqv;

/*
 * Comparison scans (for ranks, the argmax and the top-k prefilter):
 *   count: #{j < n : x_j > v} (strict) or #{j < n : x_j >= v}
 *   find:  the first j < n with x_j > v (strict) or x_j >= v, or n
 * int lanes in blocks of 64 elements (a vector's worth of compares each).
 */
#define CEC_TOK_SCANS(T, SFX)                                                            \
    CEC_INLINE cec_intp cec_tok_count_##SFX##_body(const T *x, cec_intp n, T v,          \
                                                   int strict)                           \
    {                                                                                    \
        cec_intp total = 0;                                                              \
        for (cec_intp c = 0; c < n; c += 1024) {                                         \
            cec_intp end = n - c < 1024 ? n : c + 1024;                                  \
            int cnt = 0;                                                                 \
            if (strict) {                                                                \
                _Pragma("omp simd reduction(+ : cnt)")                                   \
                for (cec_intp i = c; i < end; i++) cnt += x[i] > v;                      \
            } else {                                                                     \
                _Pragma("omp simd reduction(+ : cnt)")                                   \
                for (cec_intp i = c; i < end; i++) cnt += x[i] >= v;                     \
            }                                                                            \
            total += cnt;                                                                \
        }                                                                                \
        return total;                                                                    \
    }                                                                                    \
    CEC_INLINE cec_intp cec_tok_find_##SFX##_body(const T *x, cec_intp n, T v,           \
                                                  int strict)                            \
    {                                                                                    \
        for (cec_intp c = 0; c < n; c += 64) {                                           \
            cec_intp end = n - c < 64 ? n : c + 64;                                      \
            int any = 0;                                                                 \
            if (strict) {                                                                \
                _Pragma("omp simd reduction(| : any)")                                   \
                for (cec_intp i = c; i < end; i++) any |= x[i] > v;                      \
            } else {                                                                     \
                _Pragma("omp simd reduction(| : any)")                                   \
                for (cec_intp i = c; i < end; i++) any |= x[i] >= v;                     \
            }                                                                            \
            if (any) {                                                                   \
                for (cec_intp i = c; i < end; i++) {                                     \
                    if (strict ? x[i] > v : x[i] >= v) return i;                         \
                }                                                                        \
            }                                                                            \
        }                                                                                \
        return n;                                                                        \
    }

CEC_TOK_SCANS(float, f32)
CEC_TOK_SCANS(double, f64)

CEC_INLINE double cec_tok_moments_f32_body(const float *x, cec_intp n, float m, float scale,
                                           float v, double *res)
{
    CEC_TOK_BODY(float, cec_expsum_f32, -128)
    return rest;
}

CEC_INLINE double cec_tok_moments_f64_body(const double *x, cec_intp n, double m,
                                           double scale, double v, double *res)
{
    CEC_TOK_BODY(double, cec_expsum_f64, -1024)
    return rest;
}

#if CEC_HAVE_X86_DISPATCH
#define CEC_TOK_ATTR_avx2 CEC_ATTR_AVX2
#define CEC_TOK_ATTR_avx512 CEC_ATTR_AVX512 __attribute__((target("prefer-vector-width=512")))
#endif
#define CEC_TOK_ATTR_base

/* One function per ISA around an always-inline body, and its dispatcher. */
#define CEC_TOK_VARIANT(RET, NAME, SFX, ISA, PARAMS, ARGS)                               \
    CEC_TOK_ATTR_##ISA static RET cec_tok_##NAME##_##SFX##_##ISA PARAMS                  \
    {                                                                                    \
        return cec_tok_##NAME##_##SFX##_body ARGS;                                       \
    }
#if CEC_HAVE_X86_DISPATCH
#define CEC_TOK_DISPATCH(RET, NAME, SFX, PARAMS, ARGS)                                   \
    CEC_TOK_VARIANT(RET, NAME, SFX, avx512, PARAMS, ARGS)                                \
    CEC_TOK_DISPATCH_BASE_AVX2(RET, NAME, SFX, PARAMS, ARGS)
/* everything but the AVX-512 variant (hand-written for moments f32) */
#define CEC_TOK_DISPATCH_BASE_AVX2(RET, NAME, SFX, PARAMS, ARGS)                         \
    CEC_TOK_VARIANT(RET, NAME, SFX, base, PARAMS, ARGS)                                  \
    CEC_TOK_VARIANT(RET, NAME, SFX, avx2, PARAMS, ARGS)                                  \
    static RET cec_tok_##NAME##_##SFX PARAMS                                             \
    {                                                                                    \
        if (cec_simd_level == CEC_SIMD_AVX512) return cec_tok_##NAME##_##SFX##_avx512 ARGS; \
        if (cec_simd_level == CEC_SIMD_AVX2) return cec_tok_##NAME##_##SFX##_avx2 ARGS;  \
        return cec_tok_##NAME##_##SFX##_base ARGS;                                       \
    }
#else
#define CEC_TOK_DISPATCH(RET, NAME, SFX, PARAMS, ARGS)                                   \
    CEC_TOK_VARIANT(RET, NAME, SFX, base, PARAMS, ARGS)                                  \
    static RET cec_tok_##NAME##_##SFX PARAMS { return cec_tok_##NAME##_##SFX##_base ARGS; }
#define CEC_TOK_DISPATCH_BASE_AVX2 CEC_TOK_DISPATCH
#endif

/*
 * A float32 row's top-k, kept while the row pass runs (AVX-512 only): bv/bi
 * hold `held` <= kk candidates best first; an element enters when it is above
 * thr (the last candidate's value) or while fewer than kk are held. Compares
 * are those of a row without NaN (larger first, ties to the lower index, as
 * indices only grow); a row with a NaN is redone by the caller.
 */
typedef struct {
    float *bv;
    int64_t *bi;
    cec_intp kk;
    cec_intp held;
    float thr;
} cec_tok_topk_f32_t;

#if CEC_HAVE_X86_DISPATCH
CEC_INLINE void cec_tok_topk_insert_f32(cec_tok_topk_f32_t *t, float v, cec_intp j)
{
    cec_intp i;
    if (t->held < t->kk) {
        i = t->held++;
    }
    else {
        if (!(v > t->thr)) {
            return;
        }
        i = t->kk - 1;
    }
    while (i > 0 && v > t->bv[i - 1]) {
        t->bv[i] = t->bv[i - 1];
        t->bi[i] = t->bi[i - 1];
        i--;
    }
    t->bv[i] = v;
    t->bi[i] = j;
    if (t->held == t->kk) {
        t->thr = t->bv[t->kk - 1];
    }
}

/*
 * cec_tok_moments for float32 on AVX-512, by hand (GCC's vectorisation of the
 * portable body costs ~1.6x row_sumexp): same contract and partial sums (16
 * terms per lane, then double), prefetching the n elements after x as
 * cec_row_sumexp_f32_avx512 does. Lanes past n are masked out.
 */
CEC_ATTR_AVX512 static inline __attribute__((always_inline)) void cec_tok_step_f32_avx512(
    const float *x, __mmask16 k, __m512 vm, __m512 vs, __m512 vv, __m512 *a0, __m512 *a2,
    __m512 *a3, __m512i *ties, __m512i *gt, __m512i *eqv, cec_tok_topk_f32_t *t,
    cec_intp base, int counts)
{
    const __m512 lo = _mm512_set1_ps(-128.0f);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 xv = _mm512_maskz_loadu_ps(k, x);
    /* max(lo, d) returns d when d is NaN (MAXPS returns its second operand) */
    __m512 d = _mm512_max_ps(lo, _mm512_mul_ps(_mm512_sub_ps(xv, vm), vs));
    __mmask16 tie = _mm512_mask_cmp_ps_mask(k, d, _mm512_setzero_ps(), _CMP_EQ_OQ);
    __m512 e = _mm512_maskz_mov_ps(k, cec_expsum16_avx512(d));
    *a0 = _mm512_mask_add_ps(*a0, (__mmask16)(k & ~tie), *a0, e);
    *a2 = _mm512_fmadd_ps(d, e, *a2);
    *a3 = _mm512_fmadd_ps(e, e, *a3);
    /* counts in int lanes, reduced once at the end */
    *ties = _mm512_mask_add_epi32(*ties, tie, *ties, one);
    if (counts) { /* the target logit's rank: elements above it and equal to it */
        *gt = _mm512_mask_add_epi32(*gt, _mm512_mask_cmp_ps_mask(k, xv, vv, _CMP_GT_OQ), *gt,
                                    one);
        *eqv = _mm512_mask_add_epi32(*eqv, _mm512_mask_cmp_ps_mask(k, xv, vv, _CMP_EQ_OQ),
                                     *eqv, one);
    }
    if (t != NULL) {
        __mmask16 h = t->held < t->kk
                          ? k : _mm512_mask_cmp_ps_mask(k, xv, _mm512_set1_ps(t->thr), _CMP_GT_OQ);
        while (h) {
            int b = __builtin_ctz((unsigned)h);
            h &= (__mmask16)(h - 1);
            cec_tok_topk_insert_f32(t, x[b], base + b);
        }
    }
}

CEC_ATTR_AVX512 static inline __attribute__((always_inline)) double cec_tok_moments_body_f32_avx512(
    const float *x, cec_intp n, float m, float scale, float v, double *res,
    cec_tok_topk_f32_t *t, cec_intp base, int counts)
{
    const __m512 vm = _mm512_set1_ps(m), vs = _mm512_set1_ps(scale), vv = _mm512_set1_ps(v);
    const char *ahead = (const char *)(x + n);
    __m512 a0 = _mm512_setzero_ps(), a2 = a0, a3 = a0;
    __m512i ties = _mm512_setzero_si512(), gt = ties, eqv = ties;
    double rest = 0.0, dsum = 0.0, sq = 0.0;
    cec_intp i = 0;
    int steps = 0;
    /* n <= 4096 per call (cec_tok_row's chunks): int lanes cannot overflow */
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch(ahead + 4 * i, _MM_HINT_T0);
        cec_tok_step_f32_avx512(x + i, (__mmask16)0xffff, vm, vs, vv, &a0, &a2, &a3, &ties,
                                &gt, &eqv, t, base + i, counts);
        if (++steps == 16) {
            rest += cec_sum16_avx512(a0);
            dsum += cec_sum16_avx512(a2);
            sq += cec_sum16_avx512(a3);
            a0 = a2 = a3 = _mm512_setzero_ps();
            steps = 0;
        }
    }
    if (i < n) {
        cec_tok_step_f32_avx512(x + i, cec_tail_mask16(n - i), vm, vs, vv, &a0, &a2, &a3,
                                &ties, &gt, &eqv, t, base + i, counts);
    }
    res[0] = rest + cec_sum16_avx512(a0);
    res[1] = (double)_mm512_reduce_add_epi32(ties);
    res[2] = dsum + cec_sum16_avx512(a2);
    res[3] = sq + cec_sum16_avx512(a3);
    res[4] = (double)_mm512_reduce_add_epi32(gt);
    res[5] = (double)_mm512_reduce_add_epi32(eqv);
    return res[0];
}

CEC_ATTR_AVX512 static double cec_tok_moments_topk_f32_avx512(
    const float *x, cec_intp n, float m, float scale, float v, double *res,
    cec_tok_topk_f32_t *t, cec_intp base)
{
    return cec_tok_moments_body_f32_avx512(x, n, m, scale, v, res, t, base, 1);
}

/* the moments without the rank counts (res[4] = res[5] = 0): the Evaluator's top-1 */
CEC_ATTR_AVX512 static double cec_tok_moments_nocount_f32_avx512(const float *x, cec_intp n,
                                                                 float m, float scale,
                                                                 double *res)
{
    return cec_tok_moments_body_f32_avx512(x, n, m, scale, 0.0f, res, NULL, 0, 0);
}

CEC_ATTR_AVX512 static double cec_tok_moments_f32_avx512(const float *x, cec_intp n, float m,
                                                         float scale, float v, double *res)
{
    return cec_tok_moments_topk_f32_avx512(x, n, m, scale, v, res, NULL, 0);
}

/* cec_tok_find for float32 on AVX-512, by hand: 64 compares per step into masks. */
CEC_ATTR_AVX512 static cec_intp cec_tok_find_f32_avx512(const float *x, cec_intp n, float v,
                                                        int strict)
{
    const __m512 vv = _mm512_set1_ps(v);
    cec_intp i = 0;
    if (strict) {
        for (; i + 64 <= n; i += 64) {
            __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), vv, _CMP_GT_OQ);
            __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 16), vv, _CMP_GT_OQ);
            __mmask16 m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 32), vv, _CMP_GT_OQ);
            __mmask16 m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 48), vv, _CMP_GT_OQ);
            if (m0 | m1 | m2 | m3) break;
        }
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : cec_tail_mask16(n - i);
        __m512 xv = _mm512_maskz_loadu_ps(k, x + i);
        __mmask16 m = strict ? _mm512_mask_cmp_ps_mask(k, xv, vv, _CMP_GT_OQ)
                             : _mm512_mask_cmp_ps_mask(k, xv, vv, _CMP_GE_OQ);
        if (m) return i + (cec_intp)__builtin_ctz((unsigned)m);
    }
    return n;
}
#endif

CEC_TOK_DISPATCH_BASE_AVX2(double, moments, f32, (const float *x, cec_intp n, float m, float scale,
                                        float v, double *res), (x, n, m, scale, v, res))
CEC_TOK_DISPATCH(double, moments, f64, (const double *x, cec_intp n, double m, double scale,
                                        double v, double *res), (x, n, m, scale, v, res))
CEC_TOK_DISPATCH(cec_intp, count, f32, (const float *x, cec_intp n, float v, int strict),
                 (x, n, v, strict))
CEC_TOK_DISPATCH(cec_intp, count, f64, (const double *x, cec_intp n, double v, int strict),
                 (x, n, v, strict))
CEC_TOK_DISPATCH_BASE_AVX2(cec_intp, find, f32, (const float *x, cec_intp n, float v, int strict),
                 (x, n, v, strict))
CEC_TOK_DISPATCH(cec_intp, find, f64, (const double *x, cec_intp n, double v, int strict),
                 (x, n, v, strict))

/*
 * A whole row: its maximum m (returned) and res[0..5] as cec_tok_moments
 * relative to m, reading the row once from memory: chunks of 4096 elements
 * get their maximum, then the moments while they are in L1 (as row_lse).
 * When a chunk raises the maximum from m to m', the sums so far are rescaled
 * with delta = (m - m') scale: rest' = (rest + ties) e^delta, ties' = 0,
 * D' = e^delta (D + delta (rest + ties)), Q' = e^{2 delta} Q. res[6] is the
 * start of the chunk holding the first occurrence of m; res[7] is 1 if a chunk
 * was skipped (all -inf or NaN while the maximum was -inf). res is only
 * meaningful for a finite m (a +inf maximum returns at once); a NaN makes
 * res[0] NaN (also in a chunk skipped while the maximum was -inf).
 */
#define COMMA_TOPK , cec_tok_topk_f32_t *t
#define CEC_TOK_ROW(T, SFX)                                                              \
    CEC_TOK_ROW_(T, SFX, cec_tok_row_##SFX, , cec_tok_moments_##SFX(x + c, len, m, scale, v, r))
#define CEC_TOK_ROW_(T, SFX, NAME, EXTRA, MOMENTS)                                       \
    static T NAME(const T *x, cec_intp n, T scale, T v, double *res EXTRA)               \
    {                                                                                    \
        const cec_intp chunk = 4096;                                                     \
        T m = -INFINITY;                                                                 \
        double rest = 0.0, ties = 0.0, dsum = 0.0, sq = 0.0, gt = 0.0, eqv = 0.0, r[6];  \
        cec_intp at = 0;                                                                 \
        double skipped = 0.0;                                                            \
        for (cec_intp c = 0; c < n; c += chunk) {                                        \
            cec_intp len = n - c < chunk ? n - c : chunk;                                \
            T cm = cec_ops_##SFX.row_max(x + c, len);                                    \
            if (cm > m) {                                                                \
                if (m != -INFINITY) {                                                    \
                    double delta = ((double)m - (double)cm) * (double)scale;             \
                    double e = exp(delta), s_old = rest + ties;                          \
                    dsum = e == 0.0 ? 0.0 : e * (dsum + delta * s_old);                  \
                    rest = s_old * e;                                                    \
                    sq = sq * e * e;                                                     \
                    ties = 0.0;                                                          \
                }                                                                        \
                m = cm;                                                                  \
                at = c;                                                                  \
            }                                                                            \
            if (m == INFINITY) {                                                         \
                return m;                                                                \
            }                                                                            \
            if (m != -INFINITY) {                                                        \
                MOMENTS;                                                                 \
                rest += r[0];                                                            \
                ties += r[1];                                                            \
                dsum += r[2];                                                            \
                sq += r[3];                                                              \
                gt += r[4];                                                              \
                eqv += r[5];                                                             \
            }                                                                            \
            else { /* all -inf so far, or NaN */                                         \
                for (cec_intp i = c; i < c + len; i++) {                                 \
                    if (x[i] != x[i]) rest = NAN;                                        \
                }                                                                        \
                eqv += v == -INFINITY ? (double)len : 0.0;                               \
                skipped = 1.0;                                                           \
            }                                                                            \
        }                                                                                \
        res[0] = rest;                                                                   \
        res[1] = ties;                                                                   \
        res[2] = dsum;                                                                   \
        res[3] = sq;                                                                     \
        res[4] = gt;                                                                     \
        res[5] = eqv;                                                                    \
        res[6] = (double)at;                                                             \
        res[7] = skipped;                                                                \
        return m;                                                                        \
    }

CEC_TOK_ROW(float, f32)
CEC_TOK_ROW(double, f64)

#if CEC_HAVE_X86_DISPATCH
/* cec_tok_row_f32 keeping the top-k in *t as it goes (AVX-512 only) */
CEC_TOK_ROW_(float, f32, cec_tok_row_topk_f32_avx512, COMMA_TOPK,
             cec_tok_moments_topk_f32_avx512(x + c, len, m, scale, v, r, t, c))
#endif

#if CEC_HAVE_X86_DISPATCH
CEC_TOK_ROW_(float, f32, cec_tok_row_nocount_f32_avx512, ,
             cec_tok_moments_nocount_f32_avx512(x + c, len, m, scale, r))
#endif

/*
 * cec_tok_row_f32 without the rank counts where the AVX-512 kernels are in use
 * (res[4] = res[5] = 0; the caller must not read them); elsewhere cec_tok_row_f32.
 */
static float cec_tok_row_nocount_f32(const float *x, cec_intp n, float scale, double *res)
{
#if CEC_HAVE_X86_DISPATCH
    if (cec_simd_level == CEC_SIMD_AVX512) {
        return cec_tok_row_nocount_f32_avx512(x, n, scale, 0.0f, res);
    }
#endif
    return cec_tok_row_f32(x, n, scale, 0.0f, res);
}

/*
 * cec_tok_row_f32, and the row's top-k into *t when the AVX-512 kernels are in
 * use (returns 1) or 0 (the caller computes the top-k itself). A row with a
 * NaN, or whose maximum is not finite, needs the caller's NaN-aware top-k.
 */
static float cec_tok_row_topk_f32(const float *x, cec_intp n, float scale, float v,
                                  double *res, cec_tok_topk_f32_t *t, int *done)
{
#if CEC_HAVE_X86_DISPATCH
    if (cec_simd_level == CEC_SIMD_AVX512) {
        t->held = 0;
        t->thr = -INFINITY;
        *done = 1;
        return cec_tok_row_topk_f32_avx512(x, n, scale, v, res, t);
    }
#endif
    *done = 0;
    return cec_tok_row_f32(x, n, scale, v, res);
}

/*
 * A 16-bit row widened to float32 (exactly) into out[0:n], for the kernels that
 * compute on float32 rows (the token kernels stage each 16-bit row this way).
 * bfloat16 is a 16-bit shift; float16 is F16C's vcvtph2ps on AVX2/AVX-512 and
 * the branch-free cec_load_f16 otherwise. The scalar loops vectorise for the
 * ISA of the function they are compiled in.
 */
#define CEC_TOK_WIDEN_LOOPS(ATTR, ISA)                                                   \
    ATTR static void cec_tok_widen_bf16_##ISA(const cec_bf16_t *x, cec_intp n, float *out) \
    {                                                                                    \
        const uint16_t *b = (const uint16_t *)x;                                         \
        _Pragma("omp simd")                                                              \
        for (cec_intp i = 0; i < n; i++) {                                               \
            out[i] = cec_f32_from_bits((int32_t)((uint32_t)b[i] << 16));                 \
        }                                                                                \
    }

CEC_TOK_WIDEN_LOOPS(, base)

static void cec_tok_widen_f16_base(const cec_f16_t *x, cec_intp n, float *out)
{
    for (cec_intp i = 0; i < n; i++) out[i] = cec_load_f16(x[i]);
}

#if CEC_HAVE_X86_DISPATCH
CEC_TOK_WIDEN_LOOPS(CEC_ATTR_AVX2, avx2)
CEC_TOK_WIDEN_LOOPS(CEC_ATTR_AVX512, avx512)

CEC_ATTR_AVX2 static void cec_tok_widen_f16_avx2(const cec_f16_t *x, cec_intp n, float *out)
{
    cec_intp i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(x + i));
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) out[i] = cec_load_f16(x[i]);
}

CEC_ATTR_AVX512 static void cec_tok_widen_f16_avx512(const cec_f16_t *x, cec_intp n,
                                                     float *out)
{
    for (cec_intp i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m256i h = _mm256_maskz_loadu_epi16(m, x + i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_cvtph_ps(h));
    }
}
#endif

static void cec_tok_widen_bf16(const cec_bf16_t *x, cec_intp n, float *out)
{
#if CEC_HAVE_X86_DISPATCH
    if (cec_simd_level == CEC_SIMD_AVX512) {
        cec_tok_widen_bf16_avx512(x, n, out);
        return;
    }
    if (cec_simd_level == CEC_SIMD_AVX2) {
        cec_tok_widen_bf16_avx2(x, n, out);
        return;
    }
#endif
    cec_tok_widen_bf16_base(x, n, out);
}

static void cec_tok_widen_f16(const cec_f16_t *x, cec_intp n, float *out)
{
#if CEC_HAVE_X86_DISPATCH
    if (cec_simd_level == CEC_SIMD_AVX512) {
        cec_tok_widen_f16_avx512(x, n, out);
        return;
    }
    if (cec_simd_level == CEC_SIMD_AVX2) {
        cec_tok_widen_f16_avx2(x, n, out);
        return;
    }
#endif
    cec_tok_widen_f16_base(x, n, out);
}

#endif /* CECORE_TOKENMATH_H */
