/*
 * Instantiations for one 16-bit input type (included by _rowmath.h with
 * CEC_IN, CEC_LD, CEC_ST, CEC_SFX set; CEC_T is float). For each ISA: the
 * template of _rowmath_impl.h, with the hand-written loops that read logits
 * where the ISA has them, then the float32-output row_exp/row_sub.
 */
#define CEC_HALF_NAME_(name, SFX, ISA) cec_##name##_##SFX##_##ISA
#define CEC_HALF_NAME(name, SFX, ISA) CEC_HALF_NAME_(name, SFX, ISA)
#define CEC_HALF_F32_NAME_(name, SFX, ISA) cec_##name##_##SFX##f32_##ISA
#define CEC_HALF_F32_NAME(name, SFX, ISA) CEC_HALF_F32_NAME_(name, SFX, ISA)

#define CEC_ATTR
#define CEC_FN(name) CEC_HALF_NAME(name, CEC_SFX, base)
#define CEC_FO_F32(name) CEC_HALF_F32_NAME(name, CEC_SFX, base)
#include "_rowmath_impl.h"
#define CEC_OUT float
#define CEC_STO CEC_ID
#define CEC_FO CEC_FO_F32
#include "_rowmath_out.h"
#undef CEC_OUT
#undef CEC_STO
#undef CEC_FO
#undef CEC_FN
#undef CEC_FO_F32
#undef CEC_ATTR

#if CEC_HAVE_X86_DISPATCH
#define CEC_ATTR CEC_ATTR_AVX2
#define CEC_FN(name) CEC_HALF_NAME(name, CEC_SFX, avx2)
#define CEC_FO_F32(name) CEC_HALF_F32_NAME(name, CEC_SFX, avx2)
#define CEC_HAND_WRITTEN_ROW_SUMEXP
#define CEC_BLOCK_LSE_ROWS CEC_FN(block_lse_rows)
#define CEC_BLOCK_LSE_GROUP 8
#define CEC_COL_SUMEXP cec_col_sumexp_avx2
#include "_rowmath_impl.h"
#define CEC_OUT float
#define CEC_STO CEC_ID
#define CEC_FO CEC_FO_F32
#include "_rowmath_out.h"
#undef CEC_OUT
#undef CEC_STO
#undef CEC_FO
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_BLOCK_LSE_ROWS
#undef CEC_BLOCK_LSE_GROUP
#undef CEC_COL_SUMEXP
#undef CEC_FN
#undef CEC_FO_F32
#undef CEC_ATTR

#define CEC_ATTR CEC_ATTR_AVX512
#define CEC_FN(name) CEC_HALF_NAME(name, CEC_SFX, avx512)
#define CEC_FO_F32(name) CEC_HALF_F32_NAME(name, CEC_SFX, avx512)
#define CEC_HAND_WRITTEN_ROW_SUMEXP
#define CEC_HAND_WRITTEN_MAX
#define CEC_HAND_WRITTEN_SOFTCAP
#define CEC_HAND_WRITTEN_ROW_GRAD
#define CEC_HAND_WRITTEN_ROW_SUB
#define CEC_BLOCK_LSE_ROWS CEC_FN(block_lse_rows)
#define CEC_BLOCK_LSE_GROUP 16
#define CEC_COL_SUMEXP cec_col_sumexp_avx512
#include "_rowmath_impl.h"
#undef CEC_HAND_WRITTEN_SOFTCAP
#undef CEC_HAND_WRITTEN_ROW_SUB
#define CEC_OUT float
#define CEC_STO CEC_ID
#define CEC_FO CEC_FO_F32
#include "_rowmath_out.h"
#undef CEC_OUT
#undef CEC_STO
#undef CEC_FO
#undef CEC_HAND_WRITTEN_ROW_SUMEXP
#undef CEC_HAND_WRITTEN_MAX
#undef CEC_HAND_WRITTEN_ROW_GRAD
#undef CEC_BLOCK_LSE_ROWS
#undef CEC_BLOCK_LSE_GROUP
#undef CEC_COL_SUMEXP
#undef CEC_FN
#undef CEC_FO_F32
#undef CEC_ATTR
#endif

#undef CEC_HALF_NAME_
#undef CEC_HALF_NAME
#undef CEC_HALF_F32_NAME_
#undef CEC_HALF_F32_NAME
