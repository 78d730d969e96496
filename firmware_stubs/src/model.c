/* Model blob parsing and the layer loop. The blob layout is defined in toolchain/mcu/blob.py. */
#include "cs_core.h"

static int8_t act_a[CS_MAX_DIM];
static int8_t act_b[CS_MAX_DIM];

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint32_t pad4(uint32_t n) { return (n + 3u) & ~3u; }

const char *cs_model_parse(const uint8_t *blob, uint32_t len, cs_model_t *m) {
    if (len < CS_BLOB_HEADER_BYTES + 4u) return "blob too short";
    if (((uintptr_t)blob & 3u) != 0) return "blob not 4-byte aligned";
    if (rd32(blob) != CS_BLOB_MAGIC) return "bad magic";
    if (rd16(blob + 4) != CS_BLOB_VERSION) return "unsupported blob version";
    if (rd32(blob + 32) != len) return "length field mismatch";
    if (cs_crc32(0, blob, len - 4u) != rd32(blob + len - 4u)) return "blob crc mismatch";
    m->n_layers = rd16(blob + 6);
    m->in_dim = rd16(blob + 8);
    m->out_dim = rd16(blob + 10);
    m->n_ref = rd16(blob + 12);
    if (m->n_layers == 0 || m->n_layers > CS_MAX_LAYERS) return "layer count out of range";
    uint32_t off = CS_BLOB_HEADER_BYTES;
    uint32_t prev_out = m->in_dim;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        cs_layer_t *L = &m->layers[l];
        if (off + CS_LAYER_HEADER_BYTES > len - 4u) return "truncated layer header";
        L->in = rd16(blob + off);
        L->out = rd16(blob + off + 2);
        L->act = blob[off + 4];
        L->out_zp = (int32_t)rd32(blob + off + 8);
        off += CS_LAYER_HEADER_BYTES;
        if (L->in != prev_out) return "layer dims do not chain";
        if (L->in == 0 || L->out == 0 || L->in > CS_MAX_DIM || L->out > CS_MAX_DIM)
            return "layer wider than CS_MAX_DIM";
        if (L->act > CS_ACT_RELU) return "unknown activation";
        if (L->out_zp < -128 || L->out_zp > 127) return "zero point out of range";
        uint32_t wbytes = pad4(L->in * L->out);
        if ((uint64_t)off + wbytes + 12u * L->out > len - 4u) return "truncated layer data";
        /* Sections are 4-aligned inside an aligned slot, so the int32 arrays read directly. */
        L->weight = (const int8_t *)(blob + off);
        off += wbytes;
        L->bias = (const int32_t *)(const void *)(blob + off);
        L->mult = L->bias + L->out;
        L->shift = L->mult + L->out;
        off += 12u * L->out;
        L->requant_fast = 1;
        for (uint32_t o = 0; o < L->out; o++) {
            if (L->shift[o] < -31 || L->shift[o] > 30) return "shift out of range";
            if (L->shift[o] > 0 || L->mult[o] == INT32_MIN) L->requant_fast = 0;
        }
        prev_out = L->out;
    }
    if (prev_out != m->out_dim) return "output dim mismatch";
    if (off + pad4(m->n_ref * m->in_dim) + 4u != len) return "reference section size mismatch";
    m->refs = (const int8_t *)(blob + off);
    m->bytes = len;
    m->id = rd32(blob + len - 4u); /* checked above: the CRC32 of everything before it */
    return 0;
}

void cs_model_run(const cs_model_t *m, const int8_t *x, int8_t *y) {
    const int8_t *src = x;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        /* Ping-pong between two static buffers; the last layer writes straight into y. */
        int8_t *dst = (l + 1 == m->n_layers) ? y : ((l & 1u) ? act_b : act_a);
        cs_dense_s8(&m->layers[l], src, dst);
        src = dst;
    }
}
