/*
 * cecore's row kernels, compiled for several ISAs and input types with one
 * ISA picked at run time. The pieces, one concern per file:
 *   _rowmath_scalar.h   portable exp/log polynomials, 16-bit types, load/store
 *   _rowmath_avx2.h     hand-written AVX2 + FMA (+ F16C) loops
 *   _rowmath_avx512.h   hand-written AVX-512 loops
 *   _rowmath_impl.h     the portable row kernels, a template over
 *                       (input type, compute type, ISA); _rowmath_out.h holds
 *                       the ones whose output type is a parameter too, and
 *                       _colmath_impl.h the column kernels (class axis not last)
 *   this file           the instantiations and the dispatch table
 *
 * Input types: float32 and float64, computed in their own type, and bfloat16
 * and float16, read as 16-bit values (no float32 copy) and computed in
 * float32 exactly as float32 input is.
 *
 * Runtime dispatch (x86-64 with GCC or Clang): every kernel is compiled for
 * AVX-512 (F/DQ/BW/VL), AVX2+FMA+F16C and the baseline; cec_dispatch_init()
 * picks the best the CPU supports, or the level named by the environment
 * variable CECORE_SIMD ("avx512", "avx2", "baseline") if the CPU supports it.
 * Elsewhere (MSVC, aarch64) only the baseline build exists, vectorised for the
 * baseline.
 */
#ifndef CECORE_ROWMATH_H
#define CECORE_ROWMATH_H

#include "_rowmath_scalar.h"
#include "_rowmath_avx2.h"
#include "_rowmath_avx512.h"

#ifndef CEC_CAT3
#define CEC_CAT3_(a, b, c) a##_##b##_##c
#define CEC_CAT3(a, b, c) CEC_CAT3_(a, b, c)
#endif

#define CEC_INFINITY INFINITY
#define CEC_ID(v) (v)

/* ---- float32 ---- */
#define CEC_COL_DIRECT
#define CEC_IN float
#define CEC_T float
#define CEC_LD CEC_ID
#define CEC_ST CEC_ID
#define CEC_EXP cec_exp_f32
#define CEC_EXPSUM cec_expsum_f32
#define CEC_TANH cec_tanh_f32
#define CEC_TANH_GRAD cec_tanh_grad_f32
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
#define CEC_BLOCK_LSE_ROWS cec_block_lse_rows_f32_avx2
#define CEC_BLOCK_LSE_GROUP 8
#define CEC_COL_SUMEXP cec_col_sumexp_avx2
#include "_rowmath_impl.h"
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_BLOCK_LSE_ROWS
#undef CEC_BLOCK_LSE_GROUP
#undef CEC_COL_SUMEXP
#undef CEC_FN
#undef CEC_ATTR
#define CEC_ATTR CEC_ATTR_AVX512
#define CEC_FN(name) CEC_CAT3(cec, name, f32_avx512)
#define CEC_HAND_WRITTEN_ROW_SUMEXP
#define CEC_HAND_WRITTEN_EXPSUM_INPLACE
#define CEC_HAND_WRITTEN_MAX
#define CEC_HAND_WRITTEN_ROW_OUT
#define CEC_HAND_WRITTEN_ROW_SUB
#define CEC_HAND_WRITTEN_BCE_LOGITS
#define CEC_HAND_WRITTEN_SOFTCAP
#define CEC_HAND_WRITTEN_GRAD_SOFTCAP
#define CEC_BLOCK_LSE_ROWS cec_block_lse_rows_f32_avx512
#define CEC_BLOCK_LSE_GROUP 16
#define CEC_COL_SUMEXP cec_col_sumexp_avx512
#include "_rowmath_impl.h"
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_HAND_WRITTEN_EXPSUM_INPLACE
#undef CEC_HAND_WRITTEN_MAX
#undef CEC_HAND_WRITTEN_ROW_OUT
#undef CEC_HAND_WRITTEN_ROW_SUB
#undef CEC_HAND_WRITTEN_BCE_LOGITS
#undef CEC_HAND_WRITTEN_SOFTCAP
#undef CEC_HAND_WRITTEN_GRAD_SOFTCAP
#undef CEC_BLOCK_LSE_ROWS
#undef CEC_BLOCK_LSE_GROUP
#undef CEC_COL_SUMEXP
#undef CEC_FN
#undef CEC_ATTR
#endif
#undef CEC_IN
#undef CEC_LD
#undef CEC_ST
#undef CEC_COL_DIRECT

/*
 * ---- bfloat16 and float16: float32 arithmetic on 16-bit loads ----
 * _rowmath_half.h instantiates, for CEC_IN/CEC_LD/CEC_ST set to a 16-bit
 * type, the template for each ISA (the hand-written AVX2/AVX-512 loops that
 * read logits exist for each input type) and the float32-output
 * row_exp/row_sub as cec_<name>_<SFX>f32_<ISA>.
 */

#define CEC_IN cec_bf16_t
#define CEC_LD cec_load_bf16
#define CEC_ST cec_store_bf16
#define CEC_SFX bf16
#include "_rowmath_half.h"
#undef CEC_IN
#undef CEC_LD
#undef CEC_ST
#undef CEC_SFX

#define CEC_IN cec_f16_t
#define CEC_LD cec_load_f16
#define CEC_ST cec_store_f16
#define CEC_SFX f16
#include "_rowmath_half.h"
#undef CEC_IN
#undef CEC_LD
#undef CEC_ST
#undef CEC_SFX

#undef CEC_T
#undef CEC_EXP
#undef CEC_EXPSUM
#undef CEC_TANH
#undef CEC_TANH_GRAD
#undef CEC_LOG
#undef CEC_LOG1P
#undef CEC_LOG1P_UNIT

/* ---- float64: vectorised exp; the BCE loops use libm's log/log1p (scalar) ---- */
#define CEC_COL_DIRECT
#define CEC_IN double
#define CEC_T double
#define CEC_LD CEC_ID
#define CEC_ST CEC_ID
#define CEC_EXP cec_exp_f64
#define CEC_EXPSUM cec_expsum_f64
#define CEC_TANH cec_tanh_f64
#define CEC_TANH_GRAD cec_tanh_grad_f64
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
#undef CEC_IN
#undef CEC_T
#undef CEC_LD
#undef CEC_ST
#undef CEC_EXP
#undef CEC_EXPSUM
#undef CEC_TANH
#undef CEC_TANH_GRAD
#undef CEC_LOG
#undef CEC_LOG1P
#undef CEC_LOG1P_UNIT
#undef CEC_COL_DIRECT
#undef CEC_INFINITY

/* ------------------------------------------------------------------------ */
/* Dispatch table                                                            */

/*
 * One table per input type. IN is the type in memory, T the type computed in.
 * row_exp_f32 / row_sub_f32 write float32 output (16-bit input with
 * dtype=float32; the same functions as row_exp / row_sub for float32 input;
 * NULL for float64).
 */
#define CEC_DECLARE_OPS(IN, T, SFX)                                                    \
    typedef struct {                                                                   \
        T (*row_max)(const IN *, cec_intp);                                            \
        double (*row_sumexp)(const IN *, cec_intp, T, cec_intp *);                     \
        double (*row_lse)(const IN *, cec_intp, T *);                                  \
        void (*rows_lse)(const IN *, cec_intp, cec_intp, cec_intp, T *, double *);     \
        double (*row_wsum)(const double *, const IN *, cec_intp, double, double);      \
        double (*row_tdot)(const T *, const double *, const IN *, cec_intp, double, double *); \
        void (*row_exp)(const IN *, cec_intp, T, T, IN *);                             \
        void (*row_sub)(const IN *, cec_intp, double, double, IN *);                   \
        void (*row_exp_f32)(const IN *, cec_intp, T, T, float *);                      \
        void (*row_sub_f32)(const IN *, cec_intp, double, double, float *);            \
        void (*row_grad)(const IN *, const T *, const double *, cec_intp, T, T, T, T, IN *); \
        void (*block_lse)(const IN *, cec_intp, cec_intp, cec_intp, T *, T *, double *); \
        double (*bce_logits)(const IN *, const T *, const T *, const T *, cec_intp, T *); \
        double (*bce_probs)(const IN *, const T *, const T *, cec_intp, T *, cec_intp *); \
        double (*bce_logits_grad)(const IN *, const T *, const T *, const T *, cec_intp, T, T *, IN *); \
        double (*row_lse_softcap)(const IN *, cec_intp, T, T, T *);                    \
        double (*row_wsum_softcap)(const double *, const IN *, cec_intp, double, double, T, T); \
        double (*row_tdot_softcap)(const T *, const double *, const IN *, cec_intp, double, T, T, \
                                   double *);                                          \
        void (*row_grad_softcap)(const IN *, const T *, const double *, cec_intp, T, T, T, T, T, \
                                 T, IN *);                                             \
        void (*col_lse)(const IN *, cec_intp, cec_intp, cec_intp, T *, T *, double *);  \
        void (*col_wsum)(const IN *, cec_intp, cec_intp, cec_intp, const double *,     \
                         const double *, double, double *);                            \
        void (*col_grad)(const IN *, cec_intp, cec_intp, cec_intp, const T *, const T *, \
                         const T *, const double *, IN *, cec_intp);                   \
        void (*col_sub)(const IN *, cec_intp, cec_intp, cec_intp, const double *,      \
                        const double *, IN *, cec_intp);                               \
    } cec_ops_##SFX##_t;

CEC_DECLARE_OPS(float, float, f32)
CEC_DECLARE_OPS(double, double, f64)
CEC_DECLARE_OPS(cec_bf16_t, float, bf16)
CEC_DECLARE_OPS(cec_f16_t, float, f16)

#define CEC_OPS_TABLE_(SFX, ISA, EXP_F32, SUB_F32)                                  \
    {                                                                               \
        .row_max = cec_row_max_##SFX##_##ISA,                                       \
        .row_sumexp = cec_row_sumexp_##SFX##_##ISA,                                 \
        .row_lse = cec_row_lse_##SFX##_##ISA,                                       \
        .rows_lse = cec_rows_lse_##SFX##_##ISA,                                     \
        .row_wsum = cec_row_wsum_##SFX##_##ISA,                                     \
        .row_tdot = cec_row_tdot_##SFX##_##ISA,                                     \
        .row_exp = cec_row_exp_##SFX##_##ISA,                                       \
        .row_sub = cec_row_sub_##SFX##_##ISA,                                       \
        .row_exp_f32 = EXP_F32,                                                     \
        .row_sub_f32 = SUB_F32,                                                     \
        .row_grad = cec_row_grad_##SFX##_##ISA,                                     \
        .block_lse = cec_block_lse_##SFX##_##ISA,                                   \
        .bce_logits = cec_bce_logits_##SFX##_##ISA,                                 \
        .bce_probs = cec_bce_probs_##SFX##_##ISA,                                   \
        .bce_logits_grad = cec_bce_logits_grad_##SFX##_##ISA,                       \
        .row_lse_softcap = cec_row_lse_softcap_##SFX##_##ISA,                       \
        .row_wsum_softcap = cec_row_wsum_softcap_##SFX##_##ISA,                     \
        .row_tdot_softcap = cec_row_tdot_softcap_##SFX##_##ISA,                     \
        .row_grad_softcap = cec_row_grad_softcap_##SFX##_##ISA,                     \
        .col_lse = cec_col_lse_##SFX##_##ISA,                                       \
        .col_wsum = cec_col_wsum_##SFX##_##ISA,                                     \
        .col_grad = cec_col_grad_##SFX##_##ISA,                                     \
        .col_sub = cec_col_sub_##SFX##_##ISA,                                       \
    }
#define CEC_OPS_TABLE_F32(ISA) \
    CEC_OPS_TABLE_(f32, ISA, cec_row_exp_f32_##ISA, cec_row_sub_f32_##ISA)
#define CEC_OPS_TABLE_F64(ISA) CEC_OPS_TABLE_(f64, ISA, NULL, NULL)
#define CEC_OPS_TABLE_HALF(SFX, ISA) \
    CEC_OPS_TABLE_(SFX, ISA, cec_row_exp_##SFX##f32_##ISA, cec_row_sub_##SFX##f32_##ISA)

enum { CEC_SIMD_BASELINE = 0, CEC_SIMD_AVX2 = 1, CEC_SIMD_AVX512 = 2 };

static cec_ops_f32_t cec_ops_f32 = CEC_OPS_TABLE_F32(base);
static cec_ops_f64_t cec_ops_f64 = CEC_OPS_TABLE_F64(base);
static cec_ops_bf16_t cec_ops_bf16 = CEC_OPS_TABLE_HALF(bf16, base);
static cec_ops_f16_t cec_ops_f16 = CEC_OPS_TABLE_HALF(f16, base);
static int cec_simd_level = CEC_SIMD_BASELINE;

/* Best level this CPU (and OS) supports. */
static int cec_simd_supported(void)
{
#if CEC_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2") &&
               __builtin_cpu_supports("popcnt");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
        return CEC_SIMD_AVX512;
    }
    if (avx2) {
        return CEC_SIMD_AVX2;
    }
#endif
    return CEC_SIMD_BASELINE;
}

#define CEC_SET_OPS(ISA)                                                            \
    do {                                                                            \
        cec_ops_f32_t o32 = CEC_OPS_TABLE_F32(ISA);                                 \
        cec_ops_f64_t o64 = CEC_OPS_TABLE_F64(ISA);                                 \
        cec_ops_bf16_t obf = CEC_OPS_TABLE_HALF(bf16, ISA);                         \
        cec_ops_f16_t of16 = CEC_OPS_TABLE_HALF(f16, ISA);                          \
        cec_ops_f32 = o32;                                                          \
        cec_ops_f64 = o64;                                                          \
        cec_ops_bf16 = obf;                                                         \
        cec_ops_f16 = of16;                                                         \
    } while (0)

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
        CEC_SET_OPS(avx512);
    }
    else if (level == CEC_SIMD_AVX2) {
        CEC_SET_OPS(avx2);
    }
    else
#endif
    {
        CEC_SET_OPS(base);
    }
    cec_simd_level = level;
    return level;
}

#endif /* CECORE_ROWMATH_H */
