/*
 * cecore's hand-written AVX2 + FMA kernels (8 float lanes); F16C converts
 * float16. Compiled with a target attribute and called only when the CPU has
 * these (see the dispatch in _rowmath.h). The loops that read logits come from
 * _rowmath_avx2_read.h, once per input type.
 */
#ifndef CECORE_ROWMATH_AVX2_H
#define CECORE_ROWMATH_AVX2_H

#include "_rowmath_scalar.h"

#if CEC_HAVE_X86_DISPATCH
#include <immintrin.h>

#define CEC_CAT3_(a, b, c) a##_##b##_##c
#define CEC_CAT3(a, b, c) CEC_CAT3_(a, b, c)

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

/* cec_col_sumexp_avx512 (col_lse's sum over a chunk) with 8-lane vectors. */
CEC_ATTR_AVX2 static void cec_col_sumexp_avx2(const float *buf, cec_intp k, cec_intp bs,
                                              cec_intp bp, const float *sh, double *rest,
                                              double *ties)
{
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (cec_intp l0 = 0; l0 < bp; l0 += 16) {
        __m256 sh0 = _mm256_loadu_ps(sh + l0), sh1 = _mm256_loadu_ps(sh + l0 + 8);
        __m256 acc0 = zero, acc1 = zero, eq0 = zero, eq1 = zero;
        for (cec_intp c = 0; c < k; c++) {
            const float *bc = buf + c * bs + l0;
            __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(bc), sh0);
            __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(bc + 8), sh1);
            __m256 z0 = _mm256_cmp_ps(d0, zero, _CMP_EQ_OQ);
            __m256 z1 = _mm256_cmp_ps(d1, zero, _CMP_EQ_OQ);
            acc0 = _mm256_add_ps(acc0, _mm256_andnot_ps(z0, cec_expsum8_avx2(d0)));
            acc1 = _mm256_add_ps(acc1, _mm256_andnot_ps(z1, cec_expsum8_avx2(d1)));
            eq0 = _mm256_add_ps(eq0, _mm256_and_ps(z0, one));
            eq1 = _mm256_add_ps(eq1, _mm256_and_ps(z1, one));
        }
        __m256 accs[4] = {acc0, acc1, eq0, eq1};
        for (int v = 0; v < 4; v++) {
            double *dst = (v < 2 ? rest : ties) + l0 + 8 * (v & 1);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(accs[v]));
            __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(accs[v], 1));
            _mm256_storeu_pd(dst, _mm256_add_pd(_mm256_loadu_pd(dst), lo));
            _mm256_storeu_pd(dst + 4, _mm256_add_pd(_mm256_loadu_pd(dst + 4), hi));
        }
    }
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


/* ---- loading 8 elements of each input type as floats ---- */

CEC_ATTR_AVX2 static inline __m256 cec_load8_f32_avx2(const float *p)
{
    return _mm256_loadu_ps(p);
}

CEC_ATTR_AVX2 static inline __m256 cec_load8_part_f32_avx2(const float *p, cec_intp width)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i load = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)width), lane);
    /* masked lanes read nothing and become -inf */
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(p, load),
                            _mm256_castsi256_ps(load));
}

CEC_ATTR_AVX2 static inline __m256 cec_load8_bf16_avx2(const cec_bf16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

CEC_ATTR_AVX2 static inline __m256 cec_load8_f16_avx2(const cec_f16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* 16-bit types have no masked load in AVX2: the few elements go through a buffer */
#define CEC_DEFINE_LOAD8_PART(SFX, T)                                                   \
    CEC_ATTR_AVX2 static inline __m256 cec_load8_part_##SFX##_avx2(const T *p,          \
                                                                 cec_intp width)       \
    {                                                                                   \
        T buf[8];                                                                       \
        memset(buf, 0, sizeof buf);                                                     \
        memcpy(buf, p, (size_t)width * sizeof(T));                                      \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                 \
        __m256 keep = _mm256_castsi256_ps(                                              \
            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)width), lane));                   \
        return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), cec_load8_##SFX##_avx2(buf), \
                                keep);                                                  \
    }
CEC_DEFINE_LOAD8_PART(bf16, cec_bf16_t)
CEC_DEFINE_LOAD8_PART(f16, cec_f16_t)
#undef CEC_DEFINE_LOAD8_PART

#define CEC_IN float
#define CEC_RD(name) CEC_CAT3(cec, name, f32_avx2)
#define CEC_LD(v) (v)
#define CEC_LOAD8 cec_load8_f32_avx2
#define CEC_LOAD8_PART cec_load8_part_f32_avx2
#include "_rowmath_avx2_read.h"
#undef CEC_IN
#undef CEC_RD
#undef CEC_LD
#undef CEC_LOAD8
#undef CEC_LOAD8_PART

#define CEC_IN cec_bf16_t
#define CEC_RD(name) CEC_CAT3(cec, name, bf16_avx2)
#define CEC_LD cec_load_bf16
#define CEC_LOAD8 cec_load8_bf16_avx2
#define CEC_LOAD8_PART cec_load8_part_bf16_avx2
#include "_rowmath_avx2_read.h"
#undef CEC_IN
#undef CEC_RD
#undef CEC_LD
#undef CEC_LOAD8
#undef CEC_LOAD8_PART

#define CEC_IN cec_f16_t
#define CEC_RD(name) CEC_CAT3(cec, name, f16_avx2)
#define CEC_LD cec_load_f16
#define CEC_LOAD8 cec_load8_f16_avx2
#define CEC_LOAD8_PART cec_load8_part_f16_avx2
#include "_rowmath_avx2_read.h"
#undef CEC_IN
#undef CEC_RD
#undef CEC_LD
#undef CEC_LOAD8
#undef CEC_LOAD8_PART

#endif /* CEC_HAVE_X86_DISPATCH */
#endif /* CECORE_ROWMATH_AVX2_H */
