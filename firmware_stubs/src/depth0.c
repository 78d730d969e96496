/* Depth-0 features: integer LayerNorm per token, masked mean pooling and the head's input
 * quantisation folded into one per-dimension gain and offset. Every step mirrors
 * toolchain/mcu/depth0.py; int64 where a product needs it (q below 2^59, c x inv below 2^57). */
#include "depth0.h"

/* floor(sqrt(v)), bit by bit (no libm on the bare-metal ports). */
static uint64_t isqrt64(uint64_t v) {
    uint64_t r = 0, b = 1ull << 62;
    while (b > v) b >>= 2;
    while (b) {
        if (v >= r + b) {
            v -= r + b;
            r = (r >> 1) + b;
        } else {
            r >>= 1;
        }
        b >>= 2;
    }
    return r;
}

int32_t cs_depth0_features(const cs_depth0_t *m, const uint16_t *ids, uint32_t n,
                           int32_t *scratch, int8_t *out) {
    const uint32_t d = m->dim;
    int32_t *sum = scratch, *c = scratch + d;
    if (n == 0 || n > m->max_len) return -1;
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] >= m->n_words) return -1;
    for (uint32_t j = 0; j < d; j++) sum[j] = 0;
    for (uint32_t t = 0; t < n; t++) {
        const int8_t *w = m->word + (uint32_t)ids[t] * d;
        const int8_t *p = m->position + t * d;
        int32_t total = 0;
        for (uint32_t j = 0; j < d; j++) {
            c[j] = (int32_t)m->word_mult * w[j] + (int32_t)m->pos_mult * p[j];
            total += c[j];
        }
        uint64_t q = 0;
        for (uint32_t j = 0; j < d; j++) {
            c[j] = (int32_t)d * c[j] - total; /* D x the centred value */
            q += (uint64_t)((int64_t)c[j] * c[j]);
        }
        if (q == 0) continue; /* a constant token: LayerNorm gives 0 (eps dropped) */
        const int64_t r = (int64_t)isqrt64(q / d);
        const int64_t inv = (1ll << 40) / r;
        for (uint32_t j = 0; j < d; j++)
            sum[j] += (int32_t)(((int64_t)c[j] * inv + (1ll << 27)) >> 28);
    }
    const int64_t half = (int64_t)(n / 2u), nn = (int64_t)n;
    for (uint32_t j = 0; j < d; j++) {
        const int64_t a = (int64_t)sum[j] * m->gain[j];
        const int64_t mean = a >= 0 ? (a + half) / nn : -((-a + half) / nn);
        int64_t v = (mean + m->offset[j] + (1ll << (m->shift - 1u))) >> m->shift;
        out[j] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
    }
    return 0;
}
