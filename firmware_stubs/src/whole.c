/* Whole-model blob parsing and raw text -> class (tokenizer, depth-0 features, int8 head).
 * Layout: toolchain/mcu/depth0_blob.py. */
#include "depth0.h"
#include "wordpiece.h"

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint32_t pad4(uint32_t n) { return (n + 3u) & ~3u; }

const char *cs_whole_parse(const uint8_t *blob, uint32_t len, cs_whole_t *w) {
    if (len < CS_D0_HEADER_BYTES + 4u) return "whole blob too short";
    if (((uintptr_t)blob & 3u) != 0) return "blob not 4-byte aligned";
    if (rd32(blob) != CS_D0_MAGIC || rd16(blob + 4) != CS_D0_VERSION) return "not a CSD0 v1 blob";
    if (rd32(blob + 28) != len) return "length field mismatch";
    if (cs_crc32(0, blob, len - 4u) != rd32(blob + len - 4u)) return "blob crc mismatch";
    cs_depth0_t *d = &w->d0;
    d->dim = rd16(blob + 6);
    d->n_words = rd32(blob + 8);
    d->max_len = rd16(blob + 12);
    d->word_mult = rd16(blob + 14);
    d->pos_mult = rd16(blob + 16);
    d->shift = blob[18];
    w->vocab_bytes = rd32(blob + 20);
    const uint32_t head_bytes = rd32(blob + 24);
    if (d->dim == 0 || d->dim > CS_MAX_DIM || d->max_len < 2 || d->n_words == 0 ||
        d->n_words > 65535u || d->shift < 1 || d->shift > 40 ||
        d->word_mult == 0 || d->pos_mult == 0 || d->word_mult > 256u || d->pos_mult > 256u)
        return "depth-0 header out of range";
    uint64_t need = (uint64_t)CS_D0_HEADER_BYTES + pad4(w->vocab_bytes) +
                    pad4(d->n_words * d->dim) + pad4(d->max_len * d->dim) + 8ull * d->dim +
                    head_bytes + 4u;
    if (need != len || (uint64_t)d->n_words * d->dim > len) return "section sizes do not add up";
    uint32_t off = CS_D0_HEADER_BYTES;
    w->vocab = blob + off;
    off += pad4(w->vocab_bytes);
    d->word = (const int8_t *)(blob + off);
    off += pad4(d->n_words * d->dim);
    d->position = (const int8_t *)(blob + off);
    off += pad4(d->max_len * d->dim);
    d->gain = (const int32_t *)(const void *)(blob + off);
    d->offset = d->gain + d->dim;
    off += 8u * d->dim;
    if (cs_wp_check(w->vocab, w->vocab_bytes) != 0) return "bad vocabulary table";
    const char *why = cs_model_parse(blob + off, head_bytes, &w->head);
    if (why) return why;
    if (w->head.in_dim != d->dim) return "head input differs from the feature dim";
    return 0;
}

int32_t cs_whole_classify(const cs_whole_t *w, const uint8_t *text, uint32_t len, uint16_t *ids,
                          int32_t *scratch, int8_t *feat, int8_t *logits) {
    int32_t n = cs_wp_encode(w->vocab, w->vocab_bytes, text, len, ids, w->d0.max_len);
    if (n < 0 || cs_depth0_features(&w->d0, ids, (uint32_t)n, scratch, feat) != 0) return -1;
    cs_model_run(&w->head, feat, logits);
    return n;
}
