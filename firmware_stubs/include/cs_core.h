/* Shared firmware core: model storage, int8 kernels, CRC32 and reply printing. */
#ifndef CS_CORE_H
#define CS_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

/* Capacity of one model slot; two slots exist so an upload never touches the active model. */
#ifndef CS_SLOT_BYTES
#define CS_SLOT_BYTES (1024u * 1024u)
#endif
/* Widest layer (inputs or outputs) the static activation buffers can hold. */
#ifndef CS_MAX_DIM
#define CS_MAX_DIM 4096u
#endif
#ifndef CS_MAX_LAYERS
#define CS_MAX_LAYERS 8u
#endif

#define CS_BLOB_HEADER_BYTES 40u
#define CS_LAYER_HEADER_BYTES 12u

typedef struct {
    uint32_t in, out, act;
    int32_t out_zp;
    const int8_t *weight;   /* [out][in], per-output-channel symmetric */
    const int32_t *bias;    /* input zero point already folded in */
    const int32_t *mult;    /* Q31 requantisation multiplier per output channel */
    const int32_t *shift;   /* >0: left shift, <=0: rounding right shift */
    /* Set by cs_model_parse: every multiplier > INT32_MIN and every shift <= 0, so the DSP
     * kernels may skip the saturation and left-shift cases (kernels_internal.h). */
    uint32_t requant_fast;
} cs_layer_t;

typedef struct {
    /* id: the CRC32 of the blob without its 4-byte trailer (= the trailer). It differs
     * between models; the CRC32 over the whole blob does not (it is the CRC residue). */
    uint32_t n_layers, in_dim, out_dim, n_ref, bytes, id;
    cs_layer_t layers[CS_MAX_LAYERS];
    const int8_t *refs;     /* [n_ref][in_dim] reference inputs for the self-check */
} cs_model_t;

/* crc32(crc32(0, a), b) == crc32(0, a || b), the zlib convention. */
uint32_t cs_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* NULL when the blob is a valid model, else a short reason for the e- reply. */
const char *cs_model_parse(const uint8_t *blob, uint32_t len, cs_model_t *model);

/* Run every layer on x (in_dim int8) into y (out_dim int8). */
void cs_model_run(const cs_model_t *model, const int8_t *x, int8_t *y);

/* Kernels, exported for the bit-exactness tests. */
int32_t cs_requantize(int32_t acc, int32_t mult, int32_t shift);
void cs_dense_s8(const cs_layer_t *layer, const int8_t *x, int8_t *y);
uint32_t cs_argmax_s8(const int8_t *v, uint32_t n);
/* Embedding bag: acc[d] += table[ids[t] * dim + d] for every t < n (int32 sums, exact). */
void cs_embed_bag_s8(const int8_t *table, uint32_t dim, const uint16_t *ids, uint32_t n,
                     int32_t *acc);
/* "dsp" (kernels_dsp.c, SMLAD/SXTB16) or "portable" (kernels.c): which kernels were built. */
extern const char *const cs_kernels_variant;

/* Reply printing (no printf: the bare-metal ports have no libc). Every byte goes through
 * cs_putc, which folds it into the reply's frame check; cs_reply_begin seeds that check with
 * the command line as received, and cs_ready prints m-fcs-[..] then m-ready. */
void cs_reply_begin(const char *line, uint32_t len);
void cs_putc(char c);
void cs_puts(const char *s);
void cs_put_u64(uint64_t v);
void cs_put_i32(int32_t v);
void cs_put_hex32(uint32_t v);
void cs_end_line(void);
void cs_ready(void);

/* The command loop; returns only when port_getc() reports the link is gone. */
void cs_run(void);
void cs_handle_line(char *line, uint32_t len);
void cs_boot_banner(void);

#endif /* CS_CORE_H */
