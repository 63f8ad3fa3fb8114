/*
 * Row maths of cecore._logit_divergence_kernels: the divergence between
 * p = softmax(x s) and r = softmax(y s) (s = 1 / temperature) of two logit rows
 * x (the model) and y (the reference), and its gradient with respect to x.
 *
 * With a_j = (x_j - mx) s, b_j = (y_j - my) s (mx, my the row maxima),
 * Sp = sum_j e^a_j, Sr = sum_j e^b_j, Lp = log Sp, Lr = log Sr:
 *
 *   log p_j - log r_j = (x_j - y_j) s - C,  C = (mx - my) s + Lp - Lr
 *   KL(r || p) = s Dr / Sr - (my - mx) s + (Lp - Lr),  Dr = sum_j e^b_j (y_j - x_j)
 *   KL(p || r) = s Dp / Sp - (mx - my) s + (Lr - Lp),  Dp = sum_j e^a_j (x_j - y_j)
 *
 * Forming y_j - x_j first (exact when the two logits are close) keeps the
 * divergence of two nearly equal rows to the accuracy of the difference, not
 * of the logits themselves. A term with e^b_j = 0 (resp. e^a_j = 0) is 0
 * (0 log 0 = 0, also when x_j or y_j is -inf); e^b_j > 0 where x_j = -inf
 * gives +inf, as the definition does.
 *
 * One read of each row from memory (cec_ld_row): chunks of 2,048 elements of
 * both rows get their maxima (the row ops of _rowmath.h), then one SIMD pass of
 * cec_ld_moments_* over the chunks while they are in L1 gives the sums relative
 * to the running maxima; when a chunk raises a maximum the sums so far are
 * rescaled (as cec_tok_row). A row's maximum's 1s ("ties") are kept out of the
 * rest of the sum, as row_lse does, so that log Sp = log1p(rest + ties - 1) is
 * accurate for a dominant class.
 *
 * The generalised JSD (beta in (0, 1), m = beta r + (1 - beta) p) needs the
 * final Lp, Lr: a second pass over the cache-hot rows (cec_ld_jsd_*) with
 * d_j = log p_j - log r_j and
 *   d_j <= 0:  Lr_j = log(m_j / r_j) = log1p((1 - beta) expm1(d_j)),  Lp_j = Lr_j - d_j
 *   d_j  > 0:  Lp_j = log(m_j / p_j) = log1p(beta expm1(-d_j)),       Lr_j = Lp_j + d_j
 *   JSD = -sum_j [beta r_j Lr_j + (1 - beta) p_j Lp_j],  KL(p || m) = -sum_j p_j Lp_j
 * (both logarithms of a number in [min(beta, 1 - beta), 1]: no overflow, and
 * exactly 0 for identical rows).
 *
 * Gradients with respect to x (times c = s * the reduction's scale):
 *   KL(r || p):  c (p_j - r_j)
 *   KL(p || r):  c p_j (log p_j - log r_j - KL(p || r))
 *   JSD:         c (1 - beta) p_j (log(p_j / m_j) - KL(p || m))
 *
 * Partial sums in T over 256 elements, then in double. Every body is compiled
 * for the baseline, AVX2 and AVX-512 (as _tokenmath.h) and picked with
 * cec_simd_level.
 */
#ifndef CECORE_LOGITDIVMATH_H
#define CECORE_LOGITDIVMATH_H

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the token row kernels not used here */
#endif
#include "_tokenmath.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

enum { CEC_LD_KL = 0, CEC_LD_REV = 1, CEC_LD_JSD = 2, CEC_LD_LSE = 3 };

typedef struct {
    double mx, my;     /* row maxima of x and y */
    double lp, lr;     /* log Sp, log Sr (NaN for a special row) */
    double sp, sr;
    double c;          /* (mx - my) s + lp - lr */
    double loss;       /* the divergence (NaN if either row is special) */
    double klpm;       /* JSD: KL(p || m), for the gradient */
    cec_intp atx, aty; /* start of the chunk holding the first maximum */
    int bad;           /* 1: x special, 2: y special (a NaN, +inf, or all -inf) */
} cec_ld_row_t;

/* expm1(z) for z <= 0: Taylor polynomial above -1/2 (error < 2e-8 relative), e^z - 1 below. */
CEC_INLINE float cec_ld_expm1_f32(float z, float e)
{
    float p = 1.0f / 40320.0f;
    p = p * z + 1.0f / 5040.0f;
    p = p * z + 1.0f / 720.0f;
    p = p * z + 1.0f / 120.0f;
    p = p * z + 1.0f / 24.0f;
    p = p * z + 1.0f / 6.0f;
    p = p * z + 0.5f;
    p = p * (z * z) + z;
    return z > -0.5f ? p : e - 1.0f;
}

CEC_INLINE double cec_ld_expm1_f64(double z, double e)
{
    double p = 1.0 / 20922789888000.0;
    p = p * z + 1.0 / 1307674368000.0;
    p = p * z + 1.0 / 87178291200.0;
    p = p * z + 1.0 / 6227020800.0;
    p = p * z + 1.0 / 479001600.0;
    p = p * z + 1.0 / 39916800.0;
    p = p * z + 1.0 / 3628800.0;
    p = p * z + 1.0 / 362880.0;
    p = p * z + 1.0 / 40320.0;
    p = p * z + 1.0 / 5040.0;
    p = p * z + 1.0 / 720.0;
    p = p * z + 1.0 / 120.0;
    p = p * z + 1.0 / 24.0;
    p = p * z + 1.0 / 6.0;
    p = p * z + 0.5;
    p = p * (z * z) + z;
    return z > -0.5 ? p : e - 1.0;
}

/* log(c1 + c2 e) = log1p(c2 em1) with em1 = e - 1, for e in [0, 1], c1 + c2 = 1 */
CEC_INLINE float cec_ld_logmix_f32(float c1, float c2, float e, float em1)
{
    float u = c2 * em1;
    return u < -0.5f ? cec_log_f32(c1 + c2 * e) : cec_log1p_unit_f32(u);
}

CEC_INLINE double cec_ld_logmix_f64(double c1, double c2, double e, double em1)
{
    double u = c2 * em1;
    return u < -0.5 ? log(c1 + c2 * e) : log1p(u);
}

/*
 * 2^u for u <= 0, clamped below at LOW = -125 (where it is 2^-125 p(f), not 0:
 * at most 2^-125 per term, next to the maximum's 1): u = k + f, k = round(u),
 * |f| <= 1/2, 2^f by a degree-6 polynomial (relative error < 1.7e-8, as
 * cec_expsum16_avx512) and 2^k added to its exponent bits (read off the rounding
 * magic number's low bits). About 11 instructions, branch-free. A NaN u gives an
 * unspecified value: the moments detect NaN with a separate sum.
 */
CEC_INLINE float cec_ld_exp2_f32(float u)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    u = u < -125.0f ? -125.0f : u;
    float t = u + magic;
    float f = u - (t - magic);
    float p = 1.5337577497120947e-4f;
    p = p * f + 1.3399859890341759e-3f;
    p = p * f + 9.618519805371761e-3f;
    p = p * f + 5.550329014658928e-2f;
    p = p * f + 2.4022646248340607e-1f;
    p = p * f + 6.931471824645996e-1f;
    p = p * f + 1.0f;
    /* (bits(magic) + k) << 23 == k << 23 (mod 2^32): bits(magic)'s low 23 bits are 0 */
    return cec_f32_from_bits((int32_t)((uint32_t)cec_bits_of_f32(p)
                                       + ((uint32_t)cec_bits_of_f32(t) << 23)));
}

/* 2^u for u <= 0, exactly 0 below -125 (probabilities of -inf logits are 0) */
CEC_INLINE float cec_ld_exp2z_f32(float u)
{
    float e = cec_ld_exp2_f32(u);
    return u > -125.0f ? e : 0.0f;
}

/* e^u for u <= 0 in double (cec_expsum_f64: 0 below -708.4; NaN propagates) */
CEC_INLINE double cec_ld_exp2_f64(double u)
{
    return cec_expsum_f64(u);
}

#define cec_ld_exp2z_f64 cec_ld_exp2_f64

/*
 * Sums over a chunk of both rows relative to the maxima mx, my (finite, or 0
 * standing in for a maximum of -inf: then every term of that row is 0 or NaN),
 * with u_j = (x_j - mx) c and c = s log2(e) for float (exponentials as 2^u),
 * c = s for double (as e^u):
 * res[0] = sum_{u_j != 0} e^a_j, res[1] = #{u_j == 0}, res[2], res[3] the same
 * for y, res[4] = Dr, res[5] = Dp (each only if asked for, else 0). A term of
 * Dr (Dp) is taken where u > LOW: a reference probability below 2^-125 (float;
 * e^-708 for double) of the row's top one counts as 0. NaN in x (y) makes
 * res[0] (res[2]) NaN. While the chunk is computed (from L1) the n elements
 * after it are prefetched: where the next chunk starts.
 */
#define CEC_LD_MOMENTS_BODY(T, EXPU, LOW, DR, DP)                                        \
    double rp = 0.0, rr = 0.0, dr = 0.0, dp = 0.0;                                       \
    cec_intp tp = 0, tr = 0;                                                             \
    const char *ax = (const char *)(x + n), *ay = (const char *)(y + n);                 \
    for (cec_intp c0 = 0; c0 < n; c0 += 256) {                                           \
        cec_intp end = n - c0 < 256 ? n : c0 + 256;                                      \
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0, n0 = 0, n1 = 0;                                \
        int t0 = 0, t1 = 0;                                                              \
        for (cec_intp q = 0; q < (end - c0) * (cec_intp)sizeof(T); q += 64) {            \
            CEC_TOK_PREFETCH(ax + c0 * (cec_intp)sizeof(T) + q);                         \
            CEC_TOK_PREFETCH(ay + c0 * (cec_intp)sizeof(T) + q);                         \
        }                                                                                \
        _Pragma("omp simd reduction(+ : s0, s1, s2, s3, n0, n1, t0, t1)")                \
        for (cec_intp i = c0; i < end; i++) {                                            \
            T xi = x[i], yi = y[i];                                                      \
            T ua = (xi - mx) * c, ub = (yi - my) * c;                                    \
            T ea = EXPU(ua), eb = EXPU(ub);                                              \
            int za = ua == 0, zb = ub == 0;                                              \
            n0 += ua;                                                                    \
            n1 += ub;                                                                    \
            s0 += za ? (T)0 : ea;                                                        \
            t0 += za;                                                                    \
            s1 += zb ? (T)0 : eb;                                                        \
            t1 += zb;                                                                    \
            if (DR) s2 += ub > (T)(LOW) ? eb * (yi - xi) : (T)0;                         \
            if (DP) s3 += ua > (T)(LOW) ? ea * (xi - yi) : (T)0;                         \
        }                                                                                \
        rp += n0 == n0 ? (double)s0 : NAN;                                               \
        rr += n1 == n1 ? (double)s1 : NAN;                                               \
        dr += (double)s2;                                                                \
        dp += (double)s3;                                                                \
        tp += t0;                                                                        \
        tr += t1;                                                                        \
    }                                                                                    \
    res[0] = rp;                                                                         \
    res[1] = (double)tp;                                                                 \
    res[2] = rr;                                                                         \
    res[3] = (double)tr;                                                                 \
    res[4] = dr;                                                                         \
    res[5] = dp;

#define CEC_LD_MOMENTS_FNS(T, SFX, EXPU, LOW)                                            \
    CEC_INLINE void cec_ld_mkl_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,    \
                                            T my, T c, double *res)                      \
    {                                                                                    \
        CEC_LD_MOMENTS_BODY(T, EXPU, LOW, 1, 0)                                          \
    }                                                                                    \
    CEC_INLINE void cec_ld_mrev_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,   \
                                             T my, T c, double *res)                     \
    {                                                                                    \
        CEC_LD_MOMENTS_BODY(T, EXPU, LOW, 0, 1)                                          \
    }                                                                                    \
    CEC_INLINE void cec_ld_mlse_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,   \
                                             T my, T c, double *res)                     \
    {                                                                                    \
        CEC_LD_MOMENTS_BODY(T, EXPU, LOW, 0, 0)                                          \
    }

CEC_LD_MOMENTS_FNS(float, f32, cec_ld_exp2_f32, -125)
CEC_LD_MOMENTS_FNS(double, f64, cec_ld_exp2_f64, -708)

/* the factor of u in the moments: log2(e) s for float, s for double */
#define CEC_LD_UNIT_f32 1.4426950408889634
#define CEC_LD_UNIT_f64 1.0

/*
 * The JSD terms of a whole row given its normalisers (lp, lr, c as above):
 * res[0] = JSD, res[1] = KL(p || m).
 */
#define CEC_LD_JSD_TERM(T, EXPZ, EXPM1, LOGMIX, UNIT)                                   \
    T xi = x[i], yi = y[i];                                                              \
    T p = EXPZ((xi - mx) * cu - lpu), r = EXPZ((yi - my) * cu - lru);                    \
    T d = (xi - yi) * s - c;                                                             \
    int neg = d <= 0;                                                                    \
    T z = neg ? d : -d;                                                                  \
    T e = EXPZ(z * (T)(UNIT));                                                           \
    T lq = LOGMIX(neg ? beta : omb, neg ? omb : beta, e, EXPM1(z, e));                   \
    T l_p = neg ? lq - d : lq; /* log(m / p) */                                          \
    T l_r = neg ? lq : lq + d; /* log(m / r) */

#define CEC_LD_JSD_FNS(T, SFX, EXPZ, EXPM1, LOGMIX, UNIT)                               \
    CEC_INLINE void cec_ld_jsd_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,    \
                                            T my, T s, T lp, T lr, T c, T beta,          \
                                            double *res)                                 \
    {                                                                                    \
        T omb = (T)1 - beta;                                                             \
        T cu = s * (T)(UNIT), lpu = lp * (T)(UNIT), lru = lr * (T)(UNIT);                \
        double jsd = 0.0, kpm = 0.0;                                                     \
        for (cec_intp c0 = 0; c0 < n; c0 += 256) {                                       \
            cec_intp end = n - c0 < 256 ? n : c0 + 256;                                  \
            T s0 = 0, s1 = 0;                                                            \
            _Pragma("omp simd reduction(+ : s0, s1)")                                    \
            for (cec_intp i = c0; i < end; i++) {                                        \
                CEC_LD_JSD_TERM(T, EXPZ, EXPM1, LOGMIX, UNIT)                           \
                T tp = p != 0 ? p * l_p : (T)0;                                          \
                s0 += (r != 0 ? beta * r * l_r : (T)0) + omb * tp;                       \
                s1 += tp;                                                                \
            }                                                                            \
            jsd += (double)s0;                                                           \
            kpm += (double)s1;                                                           \
        }                                                                                \
        res[0] = 0.0 - jsd;                                                              \
        res[1] = 0.0 - kpm;                                                              \
    }                                                                                    \
    /* gradient rows (g may be x itself: each element is read before it is written) */  \
    CEC_INLINE void cec_ld_gjsd_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,   \
                                             T my, T s, T lp, T lr, T c, T beta, T k1,   \
                                             T klpm, T *g)                               \
    {                                                                                    \
        T omb = (T)1 - beta;                                                             \
        T k = k1 * omb;                                                                  \
        T cu = s * (T)(UNIT), lpu = lp * (T)(UNIT), lru = lr * (T)(UNIT);                \
        _Pragma("omp simd")                                                              \
        for (cec_intp i = 0; i < n; i++) {                                               \
            CEC_LD_JSD_TERM(T, EXPZ, EXPM1, LOGMIX, UNIT)                               \
            (void)r;                                                                     \
            (void)l_r;                                                                   \
            g[i] = p != 0 ? k * p * ((0 - l_p) - klpm) : (T)0;                           \
        }                                                                                \
    }                                                                                    \
    CEC_INLINE void cec_ld_gkl_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,    \
                                            T my, T s, T cp, T cr, T *g)                 \
    {                                                                                    \
        T dc = cp - cr, cu = s * (T)(UNIT);                                              \
        _Pragma("omp simd")                                                              \
        for (cec_intp i = 0; i < n; i++) {                                               \
            T xi = x[i], yi = y[i];                                                      \
            T ea = EXPZ((xi - mx) * cu), eb = EXPZ((yi - my) * cu);                      \
            /* exactly 0 for identical rows, with or without FMA contraction */          \
            g[i] = cp * (ea - eb) + dc * eb;                                             \
        }                                                                                \
    }                                                                                    \
    CEC_INLINE void cec_ld_grev_##SFX##_body(const T *x, const T *y, cec_intp n, T mx,   \
                                             T s, T lp, T c, T k1, T kl, T *g)           \
    {                                                                                    \
        T cu = s * (T)(UNIT), lpu = lp * (T)(UNIT);                                      \
        _Pragma("omp simd")                                                              \
        for (cec_intp i = 0; i < n; i++) {                                               \
            T xi = x[i], yi = y[i];                                                      \
            T p = EXPZ((xi - mx) * cu - lpu);                                            \
            T d = (xi - yi) * s - c;                                                     \
            g[i] = p != 0 ? k1 * p * (d - kl) : (T)0;                                    \
        }                                                                                \
    }

CEC_LD_JSD_FNS(float, f32, cec_ld_exp2z_f32, cec_ld_expm1_f32, cec_ld_logmix_f32,
               1.4426950408889634)
CEC_LD_JSD_FNS(double, f64, cec_ld_exp2z_f64, cec_ld_expm1_f64, cec_ld_logmix_f64, 1.0)

/* One function per ISA around each always-inline body, and its dispatcher. */
#define CEC_LD_VARIANT(NAME, SFX, ISA, PARAMS, ARGS)                                     \
    CEC_TOK_ATTR_##ISA static void cec_ld_##NAME##_##SFX##_##ISA PARAMS                  \
    {                                                                                    \
        cec_ld_##NAME##_##SFX##_body ARGS;                                               \
    }
#if CEC_HAVE_X86_DISPATCH
#define CEC_LD_DISPATCH(NAME, SFX, PARAMS, ARGS)                                         \
    CEC_LD_VARIANT(NAME, SFX, base, PARAMS, ARGS)                                        \
    CEC_LD_VARIANT(NAME, SFX, avx2, PARAMS, ARGS)                                        \
    CEC_LD_VARIANT(NAME, SFX, avx512, PARAMS, ARGS)                                      \
    static void cec_ld_##NAME##_##SFX PARAMS                                             \
    {                                                                                    \
        if (cec_simd_level == CEC_SIMD_AVX512) cec_ld_##NAME##_##SFX##_avx512 ARGS;      \
        else if (cec_simd_level == CEC_SIMD_AVX2) cec_ld_##NAME##_##SFX##_avx2 ARGS;     \
        else cec_ld_##NAME##_##SFX##_base ARGS;                                          \
    }
#else
#define CEC_LD_DISPATCH(NAME, SFX, PARAMS, ARGS)                                         \
    CEC_LD_VARIANT(NAME, SFX, base, PARAMS, ARGS)                                        \
    static void cec_ld_##NAME##_##SFX PARAMS { cec_ld_##NAME##_##SFX##_base ARGS; }
#endif

#define CEC_LD_DISPATCH_ALL(T, SFX)                                                      \
    CEC_LD_DISPATCH(mkl, SFX, (const T *x, const T *y, cec_intp n, T mx, T my, T c,      \
                               double *res), (x, y, n, mx, my, c, res))                  \
    CEC_LD_DISPATCH(mrev, SFX, (const T *x, const T *y, cec_intp n, T mx, T my, T c,     \
                                double *res), (x, y, n, mx, my, c, res))                 \
    CEC_LD_DISPATCH(mlse, SFX, (const T *x, const T *y, cec_intp n, T mx, T my, T c,     \
                                double *res), (x, y, n, mx, my, c, res))                 \
    CEC_LD_DISPATCH(jsd, SFX, (const T *x, const T *y, cec_intp n, T mx, T my, T s,      \
                               T lp, T lr, T c, T beta, double *res),                    \
                    (x, y, n, mx, my, s, lp, lr, c, beta, res))                          \
    CEC_LD_DISPATCH(gjsd, SFX, (const T *x, const T *y, cec_intp n, T mx, T my, T s,     \
                                T lp, T lr, T c, T beta, T k1, T klpm, T *g),            \
                    (x, y, n, mx, my, s, lp, lr, c, beta, k1, klpm, g))                  \
    CEC_LD_DISPATCH(gkl, SFX, (const T *x, const T *y, cec_intp n, T mx, T my, T s,      \
                               T cp, T cr, T *g), (x, y, n, mx, my, s, cp, cr, g))       \
    CEC_LD_DISPATCH(grev, SFX, (const T *x, const T *y, cec_intp n, T mx, T s, T lp,     \
                                T c, T k1, T kl, T *g), (x, y, n, mx, s, lp, c, k1, kl, g))

CEC_LD_DISPATCH_ALL(float, f32)
CEC_LD_DISPATCH_ALL(double, f64)

/*
 * A row pair: maxima, normalisers and the divergence of `mode` (CEC_LD_KL,
 * CEC_LD_REV, CEC_LD_JSD; CEC_LD_LSE: normalisers only) into *o, each row read
 * once from memory (chunks of 2,048 elements: maxima, then the moments from L1).
 */
#define CEC_LD_ROW(T, SFX)                                                               \
    static void cec_ld_row_##SFX(const T *x, const T *y, cec_intp n, T s, int mode,      \
                                 double beta, cec_ld_row_t *o)                           \
    {                                                                                    \
        const cec_intp chunk = 2048;                                                     \
        T mx = -INFINITY, my = -INFINITY;                                                \
        double rp = 0.0, tp = 0.0, rr = 0.0, tr = 0.0, dr = 0.0, dp = 0.0, res[6];       \
        double sd = (double)s;                                                           \
        const T su = (T)(sd * CEC_LD_UNIT_##SFX);                                        \
        cec_intp atx = 0, aty = 0;                                                       \
        for (cec_intp c = 0; c < n; c += chunk) {                                        \
            cec_intp len = n - c < chunk ? n - c : chunk;                                \
            T cx = cec_ops_##SFX.row_max(x + c, len);                                    \
            T cy = cec_ops_##SFX.row_max(y + c, len);                                    \
            if (cx > mx) {                                                               \
                if (mx != -INFINITY) {                                                   \
                    double f = exp(((double)mx - (double)cx) * sd);                      \
                    rp = (rp + tp) * f;                                                  \
                    tp = 0.0;                                                            \
                    dp = dp * f;                                                         \
                }                                                                        \
                mx = cx;                                                                 \
                atx = c;                                                                 \
            }                                                                            \
            if (cy > my) {                                                               \
                if (my != -INFINITY) {                                                   \
                    double f = exp(((double)my - (double)cy) * sd);                      \
                    rr = (rr + tr) * f;                                                  \
                    tr = 0.0;                                                            \
                    dr = dr * f;                                                         \
                }                                                                        \
                my = cy;                                                                 \
                aty = c;                                                                 \
            }                                                                            \
            /* a maximum of -inf so far: 0 stands in (all terms are then 0, or NaN) */   \
            T ex = mx == -INFINITY ? (T)0 : mx, ey = my == -INFINITY ? (T)0 : my;        \
            if (mode == CEC_LD_KL) cec_ld_mkl_##SFX(x + c, y + c, len, ex, ey, su, res); \
            else if (mode == CEC_LD_REV)                                                 \
                cec_ld_mrev_##SFX(x + c, y + c, len, ex, ey, su, res);                   \
            else cec_ld_mlse_##SFX(x + c, y + c, len, ex, ey, su, res);                  \
            rp += res[0];                                                                \
            tp += res[1];                                                                \
            rr += res[2];                                                                \
            tr += res[3];                                                                \
            dr += res[4];                                                                \
            dp += res[5];                                                                \
        }                                                                                \
        o->mx = mx;                                                                      \
        o->my = my;                                                                      \
        o->atx = atx;                                                                    \
        o->aty = aty;                                                                    \
        o->bad = (!isfinite((double)mx) || rp != rp ? 1 : 0) |                           \
                 (!isfinite((double)my) || rr != rr ? 2 : 0);                            \
        o->sp = rp + tp;                                                                 \
        o->sr = rr + tr;                                                                 \
        o->lp = o->bad & 1 ? NAN : log1p(rp + (tp - 1.0));                               \
        o->lr = o->bad & 2 ? NAN : log1p(rr + (tr - 1.0));                               \
        o->c = ((double)mx - (double)my) * sd + (o->lp - o->lr);                         \
        o->klpm = 0.0;                                                                   \
        if (o->bad) {                                                                    \
            o->loss = NAN;                                                               \
            return;                                                                      \
        }                                                                                \
        if (mode == CEC_LD_KL) {                                                         \
            o->loss = (sd * dr / o->sr - ((double)my - (double)mx) * sd) + (o->lp - o->lr); \
        }                                                                                \
        else if (mode == CEC_LD_REV) {                                                   \
            o->loss = (sd * dp / o->sp - ((double)mx - (double)my) * sd) + (o->lr - o->lp); \
        }                                                                                \
        else if (mode == CEC_LD_JSD) {                                                   \
            cec_ld_jsd_##SFX(x, y, n, mx, my, s, (T)o->lp, (T)o->lr, (T)o->c, (T)beta,    \
                             res);                                                       \
            o->loss = res[0];                                                            \
            o->klpm = res[1];                                                            \
        }                                                                                \
        else {                                                                           \
            o->loss = 0.0;                                                               \
        }                                                                                \
    }                                                                                    \
    /* the gradient row of `mode` for the row pair described by *o, times scale */       \
    static void cec_ld_grad_##SFX(const T *x, const T *y, cec_intp n, T s, int mode,     \
                                  double beta, double scale, const cec_ld_row_t *o, T *g) \
    {                                                                                    \
        double k1 = (double)s * scale;                                                   \
        if (o->bad) {                                                                    \
            for (cec_intp i = 0; i < n; i++) g[i] = (T)NAN;                              \
            return;                                                                      \
        }                                                                                \
        if (mode == CEC_LD_KL) {                                                         \
            cec_ld_gkl_##SFX(x, y, n, (T)o->mx, (T)o->my, s, (T)(k1 / o->sp),            \
                             (T)(k1 / o->sr), g);                                        \
        }                                                                                \
        else if (mode == CEC_LD_REV) {                                                   \
            cec_ld_grev_##SFX(x, y, n, (T)o->mx, s, (T)o->lp, (T)o->c, (T)k1,            \
                              (T)o->loss, g);                                            \
        }                                                                                \
        else {                                                                           \
            cec_ld_gjsd_##SFX(x, y, n, (T)o->mx, (T)o->my, s, (T)o->lp, (T)o->lr,        \
                              (T)o->c, (T)beta, (T)k1, (T)o->klpm, g);                   \
        }                                                                                \
    }                                                                                    \
    /* the first maximum of a row (NaN above every number: the first NaN) */            \
    static cec_intp cec_ld_argmax_##SFX(const T *x, cec_intp n, double m, cec_intp at,   \
                                        int bad)                                         \
    {                                                                                    \
        cec_intp best = 0;                                                               \
        if (!bad) return at + cec_tok_find_##SFX(x + at, n - at, (T)m, 0);               \
        for (cec_intp j = 0; j < n; j++) {                                               \
            if (x[j] != x[j]) return j;                                                  \
        }                                                                                \
        for (cec_intp j = 1; j < n; j++) {                                               \
            if (x[j] > x[best]) best = j;                                                \
        }                                                                                \
        return best;                                                                     \
    }

CEC_LD_ROW(float, f32)
CEC_LD_ROW(double, f64)

#endif /* CECORE_LOGITDIVMATH_H */
