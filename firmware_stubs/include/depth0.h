/* Depth-0 whole model: token ids -> int8 head input (toolchain/mcu/depth0.py is the bit-exact
 * Python twin and documents the arithmetic). Integer only: no float, no libm, no malloc. */
#ifndef CS_DEPTH0_H
#define CS_DEPTH0_H

#include <stdint.h>

typedef struct {
    uint32_t n_words, dim, max_len, pos_ratio, shift;
    const int8_t *word;      /* [n_words][dim], int8 per tensor */
    const int8_t *position;  /* [max_len][dim], token type 0 folded in, scale pos_ratio x word's */
    const int32_t *gain;     /* [dim], Q(shift): LayerNorm weight / (feature std x input scale) */
    const int32_t *offset;   /* [dim], Q(shift): standardised LayerNorm bias + input zero point */
} cs_depth0_t;

/* Head input out[dim] for ids[0..n) ([CLS] .. [SEP]); scratch holds 2 x dim int32.
 * Returns 0, or -1 when n is 0 or above max_len or an id is not below n_words. */
int32_t cs_depth0_features(const cs_depth0_t *m, const uint16_t *ids, uint32_t n,
                           int32_t *scratch, int8_t *out);

#endif /* CS_DEPTH0_H */
