/*
 * int8 kernels for Cortex-M cores with the DSP extension (M4, M7, M33 with DSP), selected at
 * compile time when __ARM_FEATURE_DSP is defined; kernels.c holds the portable twins used on
 * posix and on cores without DSP (or when built with -DCS_KERNELS_PORTABLE). Both are bit-exact
 * with toolchain/mcu/reference.py: the arithmetic is the same int32 dot product and the same
 * requantisation, only the instruction selection differs.
 *
 * Building with -DCS_DSP_EMULATE on any host compiles this file with plain-C stand-ins for the
 * four ACLE intrinsics, so the blocking and remainder logic is tested on the host too (the
 * bit-exactness tests run it on random shapes); the real instructions are checked under QEMU.
 *
 * Dense layer (weights [out][in] int8, row-major as in the blob): SMLAD does two 16x16 MACs per
 * instruction, so each word of 4 int8 is unpacked into two int16 pairs by SXTB16 (bytes 0,2)
 * and SXTB16 with ROR 8 (bytes 1,3). Both operands are unpacked the same way, so the pairs line
 * up without any reordering of the weights. Rows are processed six at a time: each input word
 * is loaded and unpacked once for six rows (3 instructions per 4 inputs, shared), and each row
 * costs LDR + 2 SXTB16 + 2 SMLAD per 4 MACs, about 1.375 instructions per MAC with every
 * pointer update folded into post-indexed loads. The six rows are addressed from two bases and
 * one stride ([p], [p,s], [p,s,LSL 1], [p3], ...) so the loop fits the 14 usable registers.
 * Inputs and rows need no alignment: Cortex-M4/M7 LDR accepts unaligned addresses.
 */
#include "cs_core.h"
#include "kernels_internal.h"

#if defined(CS_KERNELS_DSP) && !defined(CS_DSP_EMULATE)
#include <arm_acle.h>
#define CS_DSP_ASM 1
#define SXTB16(x) ((uint32_t)__sxtb16((int32_t)(x)))
#define SXTAB16(acc, x) ((uint32_t)__sxtab16((int32_t)(acc), (int32_t)(x)))
#define SMLAD(a, b, acc) __smlad((int32_t)(a), (int32_t)(b), (acc))
/* CMSIS's __SXTB16_RORn: gcc 12 does not fold a rotate into SXTB16's ROR operand (it emits a
 * separate ROR), so the rotated forms are one-instruction asm, as CMSIS-Core writes them. */
static inline uint32_t SXTB16_ROR8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t SXTAB16_ROR8(uint32_t acc, uint32_t x) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(x));
    return r;
}
#elif defined(CS_KERNELS_DSP)
/* Plain-C definitions of the instructions (ARM ARM): lanes are the two int16 halves. */
static inline uint32_t lanes(int32_t lo, int32_t hi) {
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}
static inline int32_t lane_lo(uint32_t v) { return (int16_t)(v & 0xFFFFu); }
static inline int32_t lane_hi(uint32_t v) { return (int16_t)(v >> 16); }
static inline uint32_t SXTB16(uint32_t x) { return lanes((int8_t)x, (int8_t)(x >> 16)); }
static inline uint32_t SXTB16_ROR8(uint32_t x) { return SXTB16((x >> 8) | (x << 24)); }
static inline uint32_t SXTAB16(uint32_t acc, uint32_t x) {
    uint32_t e = SXTB16(x);
    return lanes(lane_lo(acc) + lane_lo(e), lane_hi(acc) + lane_hi(e));
}
static inline uint32_t SXTAB16_ROR8(uint32_t acc, uint32_t x) {
    return SXTAB16(acc, (x >> 8) | (x << 24));
}
static inline int32_t SMLAD(uint32_t a, uint32_t b, int32_t acc) {
    /* The sum wraps modulo 2^32 like the instruction; the quantizer keeps it in range. */
    return (int32_t)((uint32_t)acc + (uint32_t)(lane_lo(a) * lane_lo(b)) +
                     (uint32_t)(lane_hi(a) * lane_hi(b)));
}
#endif

#ifdef CS_KERNELS_DSP

const char *const cs_kernels_variant = "dsp";

/* One 32-bit load from any address; a single LDR on Cortex-M4/M7. */
static inline uint32_t ld32(const int8_t *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

#define ROW(acc, ptr)                                  \
    do {                                               \
        uint32_t w_ = ld32(ptr);                       \
        acc = SMLAD(SXTB16(w_), x02, acc);             \
        acc = SMLAD(SXTB16_ROR8(w_), x13, acc);        \
    } while (0)

/* Four inputs for R rows (on the target six rows go through dense_rows6_asm instead). */
#define STEP4()                                                        \
    do {                                                               \
        uint32_t xr_ = ld32(xp);                                       \
        uint32_t x02 = SXTB16(xr_), x13 = SXTB16_ROR8(xr_);            \
        xp += 4;                                                       \
        ROW(a[0], p);                                                  \
        if (R > 1) ROW(a[1], p + s);                                   \
        if (R > 2) ROW(a[2], p + 2 * s);                               \
        if (R > 3) ROW(a[3], p + 3 * s);                               \
        if (R > 4) ROW(a[4], p + 4 * s);                               \
        if (R > 5) ROW(a[5], p + 5 * s);                               \
        p += 4;                                                        \
    } while (0)

#ifdef CS_DSP_ASM
/* One step of six rows: 4 inputs unpacked once, then per row LDR, SXTB16, SMLAD, SXTB16 ROR 8,
 * SMLAD. Rows 1, 2 (4, 5) are read at [p, s] and [p, s, LSL 1] ([p3, ...]) before the
 * post-indexed loads of rows 0 and 3 move both bases on by 4. */
#define SIX_ROW(acc, addr)                       \
    "ldr %[w], " addr "\n\t"                     \
    "sxtb16 %[t], %[w]\n\t"                      \
    "smlad " acc ", %[t], %[x02], " acc "\n\t"   \
    "sxtb16 %[w], %[w], ror #8\n\t"              \
    "smlad " acc ", %[w], %[x13], " acc "\n\t"
#define SIX_STEP                                                 \
    "ldr %[x13], [%[xp]], #4\n\t"                                \
    "sxtb16 %[x02], %[x13]\n\t"                                  \
    "sxtb16 %[x13], %[x13], ror #8\n\t"                          \
    SIX_ROW("%[a1]", "[%[p], %[s]]")                             \
    SIX_ROW("%[a2]", "[%[p], %[s], lsl #1]")                     \
    SIX_ROW("%[a0]", "[%[p]], #4")                               \
    SIX_ROW("%[a4]", "[%[p3], %[s]]")                            \
    SIX_ROW("%[a5]", "[%[p3], %[s], lsl #1]")                    \
    SIX_ROW("%[a3]", "[%[p3]], #4")

/* The same step on inputs unpacked once per layer (unpack_x): one LDRD fetches both pairs. */
#define SIX_STEP_PRE                                             \
    "ldrd %[x02], %[x13], [%[xp]], #8\n\t"                       \
    SIX_ROW("%[a1]", "[%[p], %[s]]")                             \
    SIX_ROW("%[a2]", "[%[p], %[s], lsl #1]")                     \
    SIX_ROW("%[a0]", "[%[p]], #4")                               \
    SIX_ROW("%[a4]", "[%[p3], %[s]]")                            \
    SIX_ROW("%[a5]", "[%[p3], %[s], lsl #1]")                    \
    SIX_ROW("%[a3]", "[%[p3]], #4")

/* The loop needs all 14 allocatable registers (6 accumulators, 3 pointers, the stride and 4
 * temporaries), so the end address is read from the stack (3 instructions per iteration). */
#define SIX_LOOP(body)                                                                    \
    __asm__ volatile("1:\n\t" body "ldr %[t], %[end]\n\t"                                 \
                     "cmp %[xp], %[t]\n\t"                                                \
                     "bne 1b\n\t"                                                         \
                     : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),         \
                       [a4] "+r"(a4), [a5] "+r"(a5), [p] "+r"(p), [p3] "+r"(p3),        \
                       [xp] "+r"(xp), [x02] "=&r"(x02), [x13] "=&r"(x13), [w] "=&r"(w),     \
                       [t] "=&r"(t)                                                         \
                     : [s] "r"(s), [end] "m"(end)                                           \
                     : "cc", "memory")

/* Six rows from row o: the main loop takes 32 inputs per iteration (its end test costs 3
 * instructions per 192 MACs), a second loop the remaining groups of 4, then scalar tails. */
/* Inputs as SXTB16 pairs (x0,x2),(x1,x3),(x4,x6),...: a layer with more than one block of six
 * rows unpacks them once (4 instructions per 4 inputs) instead of once per block (3). */
static uint32_t x_pairs[(CS_MAX_DIM / 4u) * 2u] __attribute__((aligned(8)));

static void unpack_x(const int8_t *x, uint32_t in) {
    uint32_t *d = x_pairs;
    for (uint32_t k = in >> 2; k; k--, x += 4, d += 2) {
        uint32_t v = ld32(x);
        d[0] = SXTB16(v);
        d[1] = SXTB16_ROR8(v);
    }
}

/* pre: the inputs are in x_pairs (unpack_x ran for this x). */
static void __attribute__((noinline)) dense_rows6_asm(const cs_layer_t *L, uint32_t o,
                                                      const int8_t *x, int8_t *y, int pre) {
    const uint32_t in = L->in;
    const int32_t s = (int32_t)in;
    const int8_t *p = L->weight + (size_t)o * in;
    const int8_t *p3 = p + 3 * (size_t)in;
    const int32_t *b = L->bias + o;
    int32_t a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3], a4 = b[4], a5 = b[5];
    uint32_t x02, x13, w, t;
    const void *end;
    if (pre) {
        const uint32_t *xp = x_pairs;
        if (in >= 32) {
            end = xp + 2 * (in >> 5) * 8;
            SIX_LOOP(SIX_STEP_PRE SIX_STEP_PRE SIX_STEP_PRE SIX_STEP_PRE SIX_STEP_PRE
                         SIX_STEP_PRE SIX_STEP_PRE SIX_STEP_PRE);
        }
        if (in & 28u) {
            end = xp + 2 * ((in & 28u) >> 2);
            SIX_LOOP(SIX_STEP_PRE);
        }
    } else {
        const int8_t *xp = x;
        if (in >= 32) {
            end = x + (in & ~31u);
            SIX_LOOP(SIX_STEP SIX_STEP SIX_STEP SIX_STEP SIX_STEP SIX_STEP SIX_STEP SIX_STEP);
        }
        if (in & 28u) {
            end = xp + (in & 28u);
            SIX_LOOP(SIX_STEP);
        }
    }
    for (uint32_t i = in & ~3u; i < in; i++) {
        const int32_t xi = x[i];
        const int8_t *wi = L->weight + (size_t)o * in + i;
        a0 += wi[0] * xi;
        a1 += wi[s] * xi;
        a2 += wi[2 * s] * xi;
        a3 += wi[3 * s] * xi;
        a4 += wi[4 * s] * xi;
        a5 += wi[5 * s] * xi;
    }
    const int32_t *m = L->mult + o, *sh = L->shift + o;
    y += o;
    if (L->requant_fast) { /* the usual case, see cs_output_stage_fast */
        const int32_t zp = L->out_zp;
        if (L->act == CS_ACT_RELU) {
            y[0] = cs_output_stage_fast(a0, m[0], sh[0], zp, zp);
            y[1] = cs_output_stage_fast(a1, m[1], sh[1], zp, zp);
            y[2] = cs_output_stage_fast(a2, m[2], sh[2], zp, zp);
            y[3] = cs_output_stage_fast(a3, m[3], sh[3], zp, zp);
            y[4] = cs_output_stage_fast(a4, m[4], sh[4], zp, zp);
            y[5] = cs_output_stage_fast(a5, m[5], sh[5], zp, zp);
        } else {
            y[0] = cs_output_stage_fast_linear(a0, m[0], sh[0], zp);
            y[1] = cs_output_stage_fast_linear(a1, m[1], sh[1], zp);
            y[2] = cs_output_stage_fast_linear(a2, m[2], sh[2], zp);
            y[3] = cs_output_stage_fast_linear(a3, m[3], sh[3], zp);
            y[4] = cs_output_stage_fast_linear(a4, m[4], sh[4], zp);
            y[5] = cs_output_stage_fast_linear(a5, m[5], sh[5], zp);
        }
        return;
    }
    const int32_t lo = L->act == CS_ACT_RELU ? L->out_zp : -128, zp = L->out_zp;
    y[0] = cs_output_stage(a0, m[0], sh[0], zp, lo);
    y[1] = cs_output_stage(a1, m[1], sh[1], zp, lo);
    y[2] = cs_output_stage(a2, m[2], sh[2], zp, lo);
    y[3] = cs_output_stage(a3, m[3], sh[3], zp, lo);
    y[4] = cs_output_stage(a4, m[4], sh[4], zp, lo);
    y[5] = cs_output_stage(a5, m[5], sh[5], zp, lo);
}
#endif

/* R (1..6, a compile-time constant after inlining) rows starting at row o. */
static inline __attribute__((always_inline)) void dense_block(const cs_layer_t *L, uint32_t o,
                                                              const uint32_t R,
                                                              const int8_t *x, int8_t *y) {
    const uint32_t in = L->in;
    const int32_t s = (int32_t)in;
    const int8_t *p = L->weight + (size_t)o * in;
    const int8_t *xp = x;
    int32_t a[6];
    for (uint32_t r = 0; r < R; r++) a[r] = L->bias[o + r];
    for (uint32_t k = in >> 2; k; k--) STEP4();
    for (uint32_t i = in & ~3u; i < in; i++) {
        const int32_t xi = x[i];
        const int8_t *w = L->weight + (size_t)o * in + i;
        for (uint32_t r = 0; r < R; r++) a[r] += w[r * in] * xi;
    }
    const int32_t lo = L->act == CS_ACT_RELU ? L->out_zp : -128;
    for (uint32_t r = 0; r < R; r++)
        y[o + r] = L->requant_fast
                       ? cs_output_stage_fast(a[r], L->mult[o + r], L->shift[o + r], L->out_zp, lo)
                       : cs_output_stage(a[r], L->mult[o + r], L->shift[o + r], L->out_zp, lo);
}

#ifndef CS_DSP_ASM
static void __attribute__((noinline)) dense_rows6(const cs_layer_t *L, uint32_t o,
                                                  const int8_t *x, int8_t *y) {
    dense_block(L, o, 6, x, y);
}
#endif
static void __attribute__((noinline)) dense_rows4(const cs_layer_t *L, uint32_t o,
                                                  const int8_t *x, int8_t *y) {
    dense_block(L, o, 4, x, y);
}
static void __attribute__((noinline)) dense_rows2(const cs_layer_t *L, uint32_t o,
                                                  const int8_t *x, int8_t *y) {
    dense_block(L, o, 2, x, y);
}
static void __attribute__((noinline)) dense_rows1(const cs_layer_t *L, uint32_t o,
                                                  const int8_t *x, int8_t *y) {
    dense_block(L, o, 1, x, y);
}

void cs_dense_s8(const cs_layer_t *layer, const int8_t *x, int8_t *y) {
    const uint32_t out = layer->out;
#ifdef CS_DSP_ASM
    if (out == 6) { /* a 6-class softmax head or readout: one block, no dispatch */
        dense_rows6_asm(layer, 0, x, y, 0);
        return;
    }
#endif
    uint32_t o = 0;
#ifdef CS_DSP_ASM
    const int pre = out >= 12 && layer->in >= 4;
    if (pre) unpack_x(x, layer->in);
    for (; o + 6 <= out; o += 6) dense_rows6_asm(layer, o, x, y, pre);
#else
    for (; o + 6 <= out; o += 6) dense_rows6(layer, o, x, y);
#endif
    /* 1..5 rows left: 4 + 1, 4, 2 + 1, 2, 1. */
    if (out - o >= 4) { dense_rows4(layer, o, x, y); o += 4; }
    if (out - o >= 2) { dense_rows2(layer, o, x, y); o += 2; }
    if (out - o >= 1) dense_rows1(layer, o, x, y);
}

/* Embedding bag: 16 dims at a time held as eight int16x2 lane accumulators in registers,
 * each token row adding 4 words with SXTAB16 (2 adds per instruction). int16 lanes hold the
 * sum of up to 256 int8 values exactly (|sum| <= 128 * 256 = 32768 fits -32768..32512 since
 * int8 >= -128 and <= 127), so tokens are taken 256 at a time and flushed into int32. */
#define BAG_CHUNK 256u

static inline void bag_flush(uint32_t ev, uint32_t od, int32_t *acc) {
    /* ev holds dims (0, 2), od holds (1, 3) of a group of 4. */
    acc[0] += (int16_t)(ev & 0xFFFFu);
    acc[2] += (int16_t)(ev >> 16);
    acc[1] += (int16_t)(od & 0xFFFFu);
    acc[3] += (int16_t)(od >> 16);
}

void cs_embed_bag_s8(const int8_t *table, uint32_t dim, const uint16_t *ids, uint32_t n,
                     int32_t *acc) {
    for (uint32_t t0 = 0; t0 < n; t0 += BAG_CHUNK) {
        const uint32_t t1 = n - t0 < BAG_CHUNK ? n : t0 + BAG_CHUNK;
        uint32_t d = 0;
        for (; d + 16 <= dim; d += 16) {
            uint32_t e0 = 0, o0 = 0, e1 = 0, o1 = 0, e2 = 0, o2 = 0, e3 = 0, o3 = 0;
            for (uint32_t t = t0; t < t1; t++) {
                const int8_t *row = table + (size_t)ids[t] * dim + d;
                uint32_t w0 = ld32(row), w1 = ld32(row + 4), w2 = ld32(row + 8),
                         w3 = ld32(row + 12);
                e0 = SXTAB16(e0, w0); o0 = SXTAB16_ROR8(o0, w0);
                e1 = SXTAB16(e1, w1); o1 = SXTAB16_ROR8(o1, w1);
                e2 = SXTAB16(e2, w2); o2 = SXTAB16_ROR8(o2, w2);
                e3 = SXTAB16(e3, w3); o3 = SXTAB16_ROR8(o3, w3);
            }
            bag_flush(e0, o0, acc + d);
            bag_flush(e1, o1, acc + d + 4);
            bag_flush(e2, o2, acc + d + 8);
            bag_flush(e3, o3, acc + d + 12);
        }
        for (; d + 4 <= dim; d += 4) {
            uint32_t e0 = 0, o0 = 0;
            for (uint32_t t = t0; t < t1; t++) {
                uint32_t w0 = ld32(table + (size_t)ids[t] * dim + d);
                e0 = SXTAB16(e0, w0);
                o0 = SXTAB16_ROR8(o0, w0);
            }
            bag_flush(e0, o0, acc + d);
        }
        for (; d < dim; d++) {
            int32_t sum = 0;
            for (uint32_t t = t0; t < t1; t++) sum += table[(size_t)ids[t] * dim + d];
            acc[d] += sum;
        }
    }
}

#endif /* CS_KERNELS_DSP */
