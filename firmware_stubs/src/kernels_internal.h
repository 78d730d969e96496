/* Shared by kernels.c and kernels_dsp.c: which dense kernel is built, and the fast
 * requantisation the DSP path inlines (bit-exact with cs_requantize, see below). */
#ifndef CS_KERNELS_INTERNAL_H
#define CS_KERNELS_INTERNAL_H

#include <stdint.h>

#include "cs_core.h"

#if (defined(__ARM_FEATURE_DSP) && !defined(CS_KERNELS_PORTABLE)) || defined(CS_DSP_EMULATE)
#define CS_KERNELS_DSP 1
#endif

/* (v * m + 2^30) >> 31 as one SMLAL on a pre-loaded 2^30 (gcc builds it from three multiplies
 * when it cannot prove the operands are 32-bit). */
static inline int32_t cs_mulhi_round(int32_t v, int32_t m) {
#if defined(__ARM_FEATURE_DSP) && !defined(CS_DSP_EMULATE)
    uint32_t lo = 1u << 30;
    int32_t hi = 0;
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(v), "r"(m));
    return (int32_t)(((uint32_t)hi << 1) | (lo >> 31));
#else
    return (int32_t)(((int64_t)v * (int64_t)m + (1LL << 30)) >> 31);
#endif
}

/* cs_requantize, rewritten for speed and identical to it for every input (tests/mcu checks it
 * on random and edge values, and the Python reference has the same two identities):
 *  - SaturatingRoundingDoublingHighMul adds the nudge 2^30 when a*b >= 0 (then floors by 2^31)
 *    and 1 - 2^30 when a*b < 0 (then truncates toward zero); truncating s < 0 toward zero is
 *    ceil(s / 2^31) = floor((s + 2^31 - 1) / 2^31) = floor((a*b + 2^30) / 2^31), the other
 *    branch's floor. So both are (a*b + 2^30) >> 31; only a = b = INT32_MIN saturates.
 *  - RoundingDivideByPOT(x, e) for e >= 1 is (x >> e) + ((rem + 2^(e-1) - [x < 0]) >> e) with
 *    rem = x & (2^e - 1): the carry out of the low e bits is exactly the reference's
 *    "remainder > threshold", and rem + 2^(e-1) < 2^32 cannot overflow as unsigned. */
static inline int32_t cs_requantize_fast(int32_t acc, int32_t mult, int32_t shift) {
    if (__builtin_expect(mult == INT32_MIN, 0)) return cs_requantize(acc, mult, shift);
    if (shift >= 0) {
        int32_t v = acc;
        if (shift > 0) { /* left shift, saturated as cs_requantize does */
            int64_t w = (int64_t)acc * ((int64_t)1 << shift);
            v = w > INT32_MAX ? INT32_MAX : (w < INT32_MIN ? INT32_MIN : (int32_t)w);
        }
        return cs_mulhi_round(v, mult);
    }
    const int32_t hi = cs_mulhi_round(acc, mult);
    const uint32_t e = (uint32_t)-shift;
    const uint32_t one = 1u << e;
    uint32_t carry = (((uint32_t)hi & (one - 1u)) + (one >> 1) - ((uint32_t)hi >> 31)) >> e;
    return (hi >> e) + (int32_t)carry;
}

/* Requantise, add the output zero point, clamp (ReLU fused as the clamp floor lo). */
static inline int8_t cs_output_stage(int32_t acc, int32_t mult, int32_t shift, int32_t zp,
                                     int32_t lo) {
    int32_t r = cs_requantize_fast(acc, mult, shift);
    if (r > 255) r = 255;
    if (r < -256) r = -256;
    r += zp;
    if (r < lo) r = lo;
    if (r > 127) r = 127;
    return (int8_t)r;
}

/* RoundingDivideByPOT for e >= 1: (x + 2^(e-1) - [x < 0]) >> e, the same rounding (half away
 * from zero) in fewer instructions; the one input where x + 2^(e-1) overflows int32 goes
 * through the carry form of cs_requantize_fast. */
static inline int32_t cs_rdbpot_fast(int32_t x, uint32_t e) {
    int32_t t;
    if (__builtin_expect(__builtin_add_overflow(x, (int32_t)(1u << (e - 1u)), &t), 0)) {
        const uint32_t one = 1u << e;
        return (x >> e) +
               (int32_t)((((uint32_t)x & (one - 1u)) + (one >> 1) - ((uint32_t)x >> 31)) >> e);
    }
    return (t + (x >> 31)) >> e;
}

/* cs_output_stage for a layer whose parse found every multiplier != INT32_MIN and every
 * shift <= 0 (requant_fast: what the quantizer produces for multipliers below 1): no
 * saturation or left-shift branches, and both clamps as SSAT (clamp to [-256, 255], add the
 * zero point, clamp to [-128, 127]; then the ReLU floor lo). */
static inline int8_t cs_output_stage_fast(int32_t acc, int32_t mult, int32_t shift, int32_t zp,
                                          int32_t lo) {
    const int32_t hi = cs_mulhi_round(acc, mult);
    int32_t r = hi;
    if (shift != 0) r = cs_rdbpot_fast(hi, (uint32_t)-shift);
#if defined(__ARM_FEATURE_DSP) && !defined(CS_DSP_EMULATE)
    r = __builtin_arm_ssat(__builtin_arm_ssat(r, 9) + zp, 8);
#else
    r = r > 255 ? 255 : (r < -256 ? -256 : r);
    r += zp;
    r = r > 127 ? 127 : (r < -128 ? -128 : r);
#endif
    return (int8_t)(r < lo ? lo : r);
}

/* The same without a ReLU floor (lo = -128 is already SSAT's floor). */
static inline int8_t cs_output_stage_fast_linear(int32_t acc, int32_t mult, int32_t shift,
                                                 int32_t zp) {
    const int32_t hi = cs_mulhi_round(acc, mult);
    int32_t r = hi;
    if (shift != 0) r = cs_rdbpot_fast(hi, (uint32_t)-shift);
#if defined(__ARM_FEATURE_DSP) && !defined(CS_DSP_EMULATE)
    r = __builtin_arm_ssat(__builtin_arm_ssat(r, 9) + zp, 8);
#else
    r = r > 255 ? 255 : (r < -256 ? -256 : r);
    r += zp;
    r = r > 127 ? 127 : (r < -128 ? -128 : r);
#endif
    return (int8_t)r;
}

#endif /* CS_KERNELS_INTERNAL_H */
