/*
 * int8 kernels, TFLite integer-only scheme: int8 weights (symmetric, per output channel),
 * int32 accumulation, requantisation by a Q31 multiplier and a power-of-two shift.
 * toolchain/mcu/reference.py is the bit-exact numpy twin of this file. These are the portable
 * kernels (posix, cores without the DSP extension); kernels_dsp.c replaces cs_dense_s8 and
 * cs_embed_bag_s8 when __ARM_FEATURE_DSP is defined.
 */
#include "cs_core.h"
#include "kernels_internal.h"

/* gemmlowp SaturatingRoundingDoublingHighMul. The division by 2^31 truncates toward zero
 * (C semantics) and is written with shifts so no 64-bit division helper is needed. */
static inline int32_t srdhm(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    int64_t s = ab + nudge;
    return (int32_t)(s >= 0 ? (s >> 31) : -((-s) >> 31));
}

/* gemmlowp RoundingDivideByPOT: round half away from zero. Relies on arithmetic >> of
 * negative values, which GCC guarantees. */
static inline int32_t rdbpot(int32_t x, int32_t exponent) {
    int32_t mask = (int32_t)((1u << exponent) - 1u);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t cs_requantize(int32_t acc, int32_t mult, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    /* Saturate the left shift instead of overflowing (TFLite leaves this undefined). */
    int64_t v = (int64_t)acc * ((int64_t)1 << left);
    if (v > INT32_MAX) v = INT32_MAX;
    if (v < INT32_MIN) v = INT32_MIN;
    return rdbpot(srdhm((int32_t)v, mult), right);
}

#ifndef CS_KERNELS_DSP
const char *const cs_kernels_variant = "portable";

void cs_dense_s8(const cs_layer_t *layer, const int8_t *x, int8_t *y) {
    const uint32_t in = layer->in;
    /* ReLU is fused as a clamp at the output zero point, as TFLite does. */
    const int32_t lo = layer->act == CS_ACT_RELU ? layer->out_zp : -128;
    for (uint32_t o = 0; o < layer->out; o++) {
        const int8_t *w = layer->weight + (size_t)o * in;
        int32_t acc = layer->bias[o];
        for (uint32_t i = 0; i < in; i++) acc += (int32_t)w[i] * (int32_t)x[i];
        int32_t r = cs_requantize(acc, layer->mult[o], layer->shift[o]);
        /* Pre-clamp so adding the zero point cannot overflow; the result is unchanged. */
        if (r > 255) r = 255;
        if (r < -256) r = -256;
        r += layer->out_zp;
        if (r < lo) r = lo;
        if (r > 127) r = 127;
        y[o] = (int8_t)r;
    }
}

void cs_embed_bag_s8(const int8_t *table, uint32_t dim, const uint16_t *ids, uint32_t n,
                     int32_t *acc) {
    for (uint32_t t = 0; t < n; t++) {
        const int8_t *row = table + (size_t)ids[t] * dim;
        for (uint32_t d = 0; d < dim; d++) acc[d] += row[d];
    }
}
#endif /* !CS_KERNELS_DSP */

uint32_t cs_argmax_s8(const int8_t *v, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;  /* first maximum wins, like numpy.argmax */
    return best;
}
