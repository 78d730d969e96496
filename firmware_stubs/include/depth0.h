/* Depth-0 whole model: token ids -> int8 head input (toolchain/mcu/depth0.py is the bit-exact
 * Python twin and documents the arithmetic). Integer only: no float, no libm, no malloc. */
#ifndef CS_DEPTH0_H
#define CS_DEPTH0_H

#include <stdint.h>

typedef struct {
    uint32_t n_words, dim, max_len, word_mult, pos_mult, shift;
    const int8_t *word;      /* [n_words][dim], int8 per tensor */
    const int8_t *position;  /* [max_len][dim], token type 0 folded in, int8 per tensor */
    const int32_t *gain;     /* [dim], Q(shift): LayerNorm weight / (feature std x input scale) */
    const int32_t *offset;   /* [dim], Q(shift): standardised LayerNorm bias + input zero point */
} cs_depth0_t;

/* Head input out[dim] for ids[0..n) ([CLS] .. [SEP]); scratch holds 2 x dim int32.
 * Returns 0, or -1 when n is 0 or above max_len or an id is not below n_words. */
int32_t cs_depth0_features(const cs_depth0_t *m, const uint16_t *ids, uint32_t n,
                           int32_t *scratch, int8_t *out);



#include "cs_core.h"

/* A whole-model blob ("CSD0", toolchain/mcu/depth0_blob.py): vocabulary table, depth-0 tables and
 * an ordinary CSGN head blob, under one CRC32 trailer. */
#define CS_D0_MAGIC 0x30445343u /* "CSD0" little-endian */
#define CS_D0_VERSION 1
#define CS_D0_HEADER_BYTES 32u

typedef struct {
    const uint8_t *vocab;
    uint32_t vocab_bytes;
    cs_depth0_t d0;
    cs_model_t head;
} cs_whole_t;

/* NULL when blob is a valid whole model (its head parsed by cs_model_parse), else a reason. */
const char *cs_whole_parse(const uint8_t *blob, uint32_t len, cs_whole_t *w);

/* Tokenize text, compute the depth-0 features and run the head into logits[head.out_dim].
 * ids holds max_len entries, scratch 2 x dim int32, feat dim int8. Returns the token count or -1. */
int32_t cs_whole_classify(const cs_whole_t *w, const uint8_t *text, uint32_t len, uint16_t *ids,
                          int32_t *scratch, int8_t *feat, int8_t *logits);
#endif /* CS_DEPTH0_H */
