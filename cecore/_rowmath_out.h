/*
 * The row kernels whose elementwise output type is a parameter of its own:
 * log_softmax and softmax of a 16-bit input return the input's type or, with
 * dtype=float32, float32. Included by _rowmath_impl.h (output = input type)
 * and again by _rowmath.h for 16-bit inputs with
 *   CEC_OUT     the output element type
 *   CEC_STO(v)  a CEC_T rounded to CEC_OUT
 *   CEC_FO      the name decoration for this output type
 * and the parameters of _rowmath_impl.h.
 */

#ifndef CEC_HAND_WRITTEN_ROW_OUT
/* out_i = exp(x_i - shift) * scale. out may alias x. */
CEC_ATTR static void CEC_FO(row_exp)(const CEC_IN *x, cec_intp n, CEC_T shift, CEC_T scale,
                                     CEC_OUT *out)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        out[i] = CEC_STO(CEC_EXP(CEC_LD(x[i]) - shift) * scale);
    }
}
#endif

#ifndef CEC_HAND_WRITTEN_ROW_SUB
/* out_i = (x_i - shift) - logsum, in double and rounded once. out may alias x. */
CEC_ATTR static void CEC_FO(row_sub)(const CEC_IN *x, cec_intp n, double shift, double logsum,
                                     CEC_OUT *out)
{
#pragma omp simd
    for (cec_intp i = 0; i < n; i++) {
        out[i] = CEC_STO((CEC_T)(((double)CEC_LD(x[i]) - shift) - logsum));
    }
}
#endif
