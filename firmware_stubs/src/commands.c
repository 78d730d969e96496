/*
 * The shared command parser (after MLPerf Tiny's internally_implemented.c): no board edits it.
 * Model uploads are staged into the inactive slot and become active only on a verified
 * commit, so an interrupted or corrupted upload leaves the previous model running. A model is
 * named by its id (CRC32 of the blob without its trailer): mload announces it, commit must
 * name it, and committing the id that is already active succeeds again (a retried commit).
 */
#include "cs_core.h"
#include "port.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#ifdef __VERSION__
#define CS_CC "gcc " __VERSION__
#else
#define CS_CC "unknown"
#endif

#ifdef CS_BAKED_MODEL
#include CS_BAKED_MODEL /* defines cs_baked_blob[] and cs_baked_blob_len */
#endif

static uint8_t slots[2][CS_SLOT_BYTES] __attribute__((aligned(4)));
static cs_model_t model;
static int active_slot = -1;

static struct {
    int open;
    uint32_t expected, received, id;
} staging;

static int8_t input[CS_MAX_DIM];
static uint32_t input_expected, input_filled;
static int8_t output[CS_MAX_DIM];
static uint32_t output_valid;

#ifdef CS_WHOLE_MODEL
/* Whole-model images (-DCS_WHOLE_MODEL): a committed CSD0 blob classifies raw text sent with
 * tload/tdata/tinfer; its head is `model`, so selfcheck, infer and results work as for a head. */
#include "depth0.h"
static cs_whole_t whole;
static int whole_active;
static uint8_t text[CS_TEXT_MAX];
static struct {
    int open;
    uint32_t expected, received, crc;
} text_staging;
#endif

/* ---------------------------------------------------------------- small parsing helpers */

static int streq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

static int parse_u32(const char *s, uint32_t *out) {
    uint64_t v = 0;
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10u + (uint32_t)(*s - '0');
        if (v > 0xFFFFFFFFu) return 0;
    }
    *out = (uint32_t)v;
    return 1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int parse_hex32(const char *s, uint32_t *out) {
    uint32_t v = 0;
    int n = 0;
    for (; *s; s++, n++) {
        int d = hexval(*s);
        if (d < 0 || n >= 8) return 0;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return n > 0;
}

/* Decode hex pairs into dst (capacity cap); returns the byte count or -1. */
static int32_t decode_hex(const char *s, uint8_t *dst, uint32_t cap) {
    uint32_t n = 0;
    while (s[0]) {
        int hi = hexval(s[0]), lo = s[1] ? hexval(s[1]) : -1;
        if (hi < 0 || lo < 0 || n >= cap) return -1;
        dst[n++] = (uint8_t)((hi << 4) | lo);
        s += 2;
    }
    return (int32_t)n;
}

static void err(const char *msg) {
    cs_puts(CS_PREFIX_ERR "[");
    cs_puts(msg);
    cs_puts("]" CS_EOL);
}

static void nak(const char *msg) {
    cs_puts(CS_PREFIX_ERR "nak-[");
    cs_puts(msg);
    cs_puts("]" CS_EOL);
}

#define FAIL(msg) do { err(msg); return; } while (0)
#define FAIL_NAK(msg) do { nak(msg); return; } while (0)

/* Echo at most 16 printable characters of untrusted input. */
static void put_sanitized(const char *s) {
    for (int i = 0; s[i] && i < 16; i++) cs_putc(s[i] >= 32 && s[i] < 127 ? s[i] : '?');
}

/* ---------------------------------------------------------------- commands */

static void cmd_version(void) {
    cs_puts(CS_PREFIX_OK "version-[proto=" STR(CS_PROTOCOL_VERSION) ";fw=" CS_FW_VERSION
            ";port=");
    cs_puts(port_name());
    cs_puts(";cc=" CS_CC ";counter=");
    cs_puts(port_counter_unit());
    cs_puts(";slot=");
    cs_put_u64(CS_SLOT_BYTES);
    cs_puts(";maxdim=");
    cs_put_u64(CS_MAX_DIM);
    cs_puts(";layers=");
    cs_put_u64(CS_MAX_LAYERS);
    cs_puts(";line=");
    cs_put_u64(CS_LINE_MAX);
    cs_puts("]" CS_EOL);
}

static void cmd_profile(void) {
    cs_puts(CS_PREFIX_OK "profile-[codesign " CS_FW_VERSION "]" CS_EOL);
    if (active_slot < 0) {
        cs_puts(CS_PREFIX_OK "model-[none]" CS_EOL);
        return;
    }
    cs_puts(CS_PREFIX_OK "model-[id=");
    cs_put_hex32(model.id);
    cs_puts(";bytes=");
    cs_put_u64(model.bytes);
    cs_puts(";layers=");
    cs_put_u64(model.n_layers);
    cs_puts(";in=");
    cs_put_u64(model.in_dim);
    cs_puts(";out=");
    cs_put_u64(model.out_dim);
    cs_puts(";refs=");
    cs_put_u64(model.n_ref);
    cs_puts("]" CS_EOL);
}

static void cmd_db(int argc, char **argv) {
    uint32_t n;
    if (argc == 3 && streq(argv[1], "load")) {
        if (!parse_u32(argv[2], &n) || n == 0 || n > CS_MAX_DIM) FAIL("db load: bad size");
        input_expected = n;
        input_filled = 0;
        output_valid = 0;
        cs_puts(CS_PREFIX_OK "[Expecting ");
        cs_put_u64(n);
        cs_puts(" bytes]" CS_EOL);
        return;
    }
    if (argc != 2) FAIL("db: usage 'db load N' or 'db HEX'");
    if (input_expected == 0) FAIL("db: no 'db load N' first");
    int32_t got = decode_hex(argv[1], (uint8_t *)input + input_filled,
                             input_expected - input_filled);
    if (got < 0) FAIL("db: bad hex or more bytes than announced");
    input_filled += (uint32_t)got;
    if (input_filled == input_expected) cs_puts(CS_PREFIX_OK "load-done" CS_EOL);
}

static int model_ready_for_input(void) {
    if (active_slot < 0) { err("no model committed"); return 0; }
    if (input_filled != input_expected || input_expected != model.in_dim)
        { err("input not loaded or size differs from the model's input"); return 0; }
    return 1;
}

static void cmd_infer(int argc, char **argv) {
    uint32_t n = 1, w = 0;
    if (argc > 3 || (argc > 1 && !parse_u32(argv[1], &n)) || (argc > 2 && !parse_u32(argv[2], &w)))
        FAIL("infer: usage 'infer N W'");
    if (n == 0 || n > CS_INFER_MAX || w > CS_INFER_MAX) FAIL("infer: N or W out of range");
    if (!model_ready_for_input()) return;
    for (uint32_t i = 0; i < w; i++) cs_model_run(&model, input, output);
    port_counter_start();
    for (uint32_t i = 0; i < n; i++) cs_model_run(&model, input, output);
    uint64_t t = port_counter_elapsed();
    output_valid = model.out_dim;
    cs_puts(CS_PREFIX_OK "infer-done-[n=");
    cs_put_u64(n);
    cs_puts(";icount=");
    cs_put_u64(t);
    /* CRC of the input actually used: 'db' lines carry no checksum (MLPerf format), so the
     * host compares this to catch an input corrupted on the wire. */
    cs_puts(";incrc=");
    cs_put_hex32(cs_crc32(0, (const uint8_t *)input, input_filled));
    cs_puts("]" CS_EOL);
}

static void cmd_results(void) {
    if (!output_valid) FAIL("results: no inference since the last input or model");
    cs_puts(CS_PREFIX_OK "results-[");
    for (uint32_t i = 0; i < output_valid; i++) {
        if (i) cs_putc(',');
        cs_put_i32(output[i]);
    }
    cs_puts("]" CS_EOL CS_PREFIX_OK "argmax-[");
    cs_put_u64(cs_argmax_s8(output, output_valid));
    /* The host checks this CRC, so a reply corrupted on the wire is retried, not believed. */
    cs_puts("]" CS_EOL CS_PREFIX_OK "crc-[");
    cs_put_hex32(cs_crc32(0, (const uint8_t *)output, output_valid));
    cs_puts("]" CS_EOL);
}

static void cmd_mload(int argc, char **argv) {
    uint32_t n, id;
    if (argc != 3 || !parse_u32(argv[1], &n) || !parse_hex32(argv[2], &id))
        FAIL("mload: usage 'mload NBYTES IDHEX'");
    if (n < CS_BLOB_HEADER_BYTES || n > CS_SLOT_BYTES) FAIL("mload: size out of range for the model slot");
    staging.open = 1;
    staging.expected = n;
    staging.received = 0;
    staging.id = id;
    cs_puts(CS_PREFIX_OK "mload-[expecting ");
    cs_put_u64(n);
    cs_puts("]" CS_EOL);
}

static uint8_t *staging_slot(void) { return slots[active_slot == 0 ? 1 : 0]; }

/* One upload chunk 'CMD OFFSET HEX CRC' into dst (expected bytes, received so far): the rules
 * mdata and tdata share. Returns the new received count, or 0 after a nak. */
static uint32_t take_chunk(int argc, char **argv, uint8_t *dst, uint32_t expected,
                           uint32_t received) {
    static uint8_t chunk[CS_LINE_MAX / 2];
    uint32_t off, crc;
    if (argc != 4 || !parse_u32(argv[1], &off) || !parse_hex32(argv[3], &crc)) {
        nak("usage 'mdata|tdata OFFSET HEX CRC'");
        return 0;
    }
    int32_t n = decode_hex(argv[2], chunk, sizeof chunk);
    if (n <= 0) { nak("bad hex"); return 0; }
    /* The chunk CRC covers the offset too, so a corrupted offset cannot pass as valid. */
    uint8_t le[4] = {(uint8_t)off, (uint8_t)(off >> 8), (uint8_t)(off >> 16), (uint8_t)(off >> 24)};
    if (cs_crc32(cs_crc32(0, le, 4), chunk, (size_t)n) != crc) { nak("chunk crc"); return 0; }
    /* Resending an already acknowledged chunk is allowed (its ack may have been lost). */
    if (off > received || (uint64_t)off + (uint32_t)n > expected) {
        nak("offset out of sequence");
        return 0;
    }
    for (int32_t i = 0; i < n; i++) dst[off + (uint32_t)i] = chunk[i];
    if (off + (uint32_t)n > received) received = off + (uint32_t)n;
    cs_puts(CS_PREFIX_OK "ack-");
    cs_put_u64(off + (uint32_t)n);
    cs_end_line();
    return received;
}

static void cmd_mdata(int argc, char **argv) {
    if (!staging.open) FAIL("mdata: no upload open; send mload first");
    uint32_t r = take_chunk(argc, argv, staging_slot(), staging.expected, staging.received);
    if (r) staging.received = r;
}

static void reply_commit(void) {
    cs_puts(CS_PREFIX_OK "commit-[id=");
    cs_put_hex32(model.id);
    cs_puts("]" CS_EOL);
}

static void cmd_commit(int argc, char **argv) {
    uint32_t id;
    if (argc != 2 || !parse_hex32(argv[1], &id)) FAIL("commit: usage 'commit IDHEX'");
    if (!staging.open) {
        /* The host retries a commit whose reply it lost: that model is already active. */
        if (active_slot >= 0 && model.id == id) {
            reply_commit();
            return;
        }
        FAIL("commit: nothing staged");
    }
    /* A commit naming another model (e.g. corrupted on the wire) leaves the staging intact. */
    if (id != staging.id) FAIL("commit: id differs from the staged upload's, nothing changed");
    if (staging.received != staging.expected) FAIL("commit: upload incomplete");
    uint8_t *slot = staging_slot();
    /* The id is the CRC32 of all but the 4-byte trailer (mload guarantees >= 40 bytes). */
    if (cs_crc32(0, slot, staging.expected - 4u) != staging.id) {
        staging.open = 0; /* the staged bytes are unusable; the host must upload again */
        FAIL("commit: staged blob does not match its id, previous model kept");
    }
    cs_model_t candidate;
#ifdef CS_WHOLE_MODEL
    static cs_whole_t wcand;
    const int is_whole = staging.expected >= 4u && slot[0] == 'C' && slot[1] == 'S' &&
                         slot[2] == 'D' && slot[3] == '0';
    const char *why = is_whole ? cs_whole_parse(slot, staging.expected, &wcand)
                               : cs_model_parse(slot, staging.expected, &candidate);
    if (is_whole && !why) {
        candidate = wcand.head;
        candidate.id = staging.id; /* the whole blob's id, verified above */
        candidate.bytes = staging.expected;
    }
#else
    const char *why = cs_model_parse(slot, staging.expected, &candidate);
#endif
    if (why) {
        staging.open = 0;
        FAIL(why);
    }
    model = candidate;
#ifdef CS_WHOLE_MODEL
    whole_active = is_whole;
    if (is_whole) whole = wcand;
#endif
    active_slot = (slot == slots[0]) ? 0 : 1;
    staging.open = 0;
    output_valid = 0;
    reply_commit();
}

static void cmd_selfcheck(void) {
    static int8_t out[CS_MAX_DIM];
    if (active_slot < 0) FAIL("selfcheck: no model committed");
    if (model.n_ref == 0) FAIL("selfcheck: model has no reference inputs");
    uint32_t crc = 0;
    uint64_t total = 0;
    for (uint32_t r = 0; r < model.n_ref; r++) {
        port_counter_start();
        cs_model_run(&model, model.refs + (size_t)r * model.in_dim, out);
        total += port_counter_elapsed();
        crc = cs_crc32(crc, (const uint8_t *)out, model.out_dim);
    }
    cs_puts(CS_PREFIX_OK "selfcheck-[n=");
    cs_put_u64(model.n_ref);
    cs_puts(";crc=");
    cs_put_hex32(crc);
    cs_puts(";icount=");
    cs_put_u64(total);
    cs_puts("]" CS_EOL);
}

/* A loop of exactly 2 instructions per iteration on ARM: lets the host check the counter's
 * instructions-per-tick scale (calib 2N minus calib N must be 2N instructions). */
static void spin(uint32_t n) {
#if defined(__arm__)
    if (n) __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b\n" : "+r"(n) : : "cc");
#else
    volatile uint32_t k = n;
    while (k) k--;
#endif
}

static void cmd_calib(int argc, char **argv) {
    uint32_t n;
    if (argc != 2 || !parse_u32(argv[1], &n) || n > CS_CALIB_MAX) FAIL("calib: usage 'calib N'");
    port_counter_start();
    spin(n);
    uint64_t t = port_counter_elapsed();
    cs_puts(CS_PREFIX_OK "calib-[n=");
    cs_put_u64(n);
    cs_puts(";icount=");
    cs_put_u64(t);
    cs_puts("]" CS_EOL);
}

#ifdef CS_WHOLE_MODEL
/* tload NBYTES CRC%: open a text upload; CRC is the CRC32 of the whole text, checked by tinfer. */
static void cmd_tload(int argc, char **argv) {
    uint32_t n, crc;
    if (argc != 3 || !parse_u32(argv[1], &n) || !parse_hex32(argv[2], &crc))
        FAIL("tload: usage 'tload NBYTES CRC'");
    if (n > CS_TEXT_MAX) FAIL("tload: text longer than CS_TEXT_MAX");
    text_staging.open = 1;
    text_staging.expected = n;
    text_staging.received = 0;
    text_staging.crc = crc;
    output_valid = 0;
    cs_puts(CS_PREFIX_OK "tload-[expecting ");
    cs_put_u64(n);
    cs_puts("]" CS_EOL);
}

static void cmd_tdata(int argc, char **argv) {
    if (!text_staging.open) FAIL("tdata: no text upload open; send tload first");
    uint32_t r = take_chunk(argc, argv, text, text_staging.expected, text_staging.received);
    if (r) text_staging.received = r;
}

/* tinfer%: tokenize the uploaded text, depth-0 features, head; the logits go to results. */
static void cmd_tinfer(void) {
    static uint16_t ids[CS_MAX_DIM];
    static int32_t scratch[2 * CS_MAX_DIM];
    static int8_t feat[CS_MAX_DIM];
    if (active_slot < 0 || !whole_active) FAIL("tinfer: no whole model committed");
    if (!text_staging.open || text_staging.received != text_staging.expected)
        FAIL("tinfer: text not uploaded");
    if (cs_crc32(0, text, text_staging.expected) != text_staging.crc)
        FAIL("tinfer: text crc mismatch, upload it again");
    if (whole.d0.max_len > CS_MAX_DIM) FAIL("tinfer: max_len above CS_MAX_DIM");
    port_counter_start();
    int32_t n = cs_whole_classify(&whole, text, text_staging.expected, ids, scratch, feat, output);
    uint64_t t = port_counter_elapsed();
    if (n < 0) FAIL("tinfer: the model refused the text");
    output_valid = model.out_dim;
    cs_puts(CS_PREFIX_OK "tinfer-done-[tokens=");
    cs_put_u64((uint32_t)n);
    cs_puts(";icount=");
    cs_put_u64(t);
    cs_puts(";incrc=");
    cs_put_hex32(text_staging.crc);
    cs_puts("]" CS_EOL);
}
#endif

/* ---------------------------------------------------------------- dispatch */

void cs_handle_line(char *line, uint32_t len) {
    char *argv[5];
    int argc = 0;
    line[len] = 0;
    cs_reply_begin(line, len); /* before tokenizing, which overwrites separators in place */
    for (char *p = line; *p && argc < 5;) {
        while (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t') *p++ = 0;
        if (!*p) break;
        argv[argc++] = p;
        while (*p && *p != ' ' && *p != '\r' && *p != '\n' && *p != '\t') p++;
    }
    if (argc == 0) return; /* a bare '%' resynchronises: it ends any partial line silently */
    if (streq(argv[0], CS_CMD_NAME)) {
        cs_puts(CS_PREFIX_OK "name-dut-[codesign-");
        cs_puts(port_name());
        cs_puts("]" CS_EOL);
    } else if (streq(argv[0], CS_CMD_PING) && argc == 2) {
        cs_puts(CS_PREFIX_OK "pong-");
        put_sanitized(argv[1]);
        cs_end_line();
    } else if (streq(argv[0], CS_CMD_VERSION)) {
        cmd_version();
    } else if (streq(argv[0], CS_CMD_PROFILE)) {
        cmd_profile();
    } else if (streq(argv[0], CS_CMD_DB)) {
        cmd_db(argc, argv);
    } else if (streq(argv[0], CS_CMD_INFER)) {
        cmd_infer(argc, argv);
    } else if (streq(argv[0], CS_CMD_RESULTS)) {
        cmd_results();
    } else if (streq(argv[0], CS_CMD_MLOAD)) {
        cmd_mload(argc, argv);
    } else if (streq(argv[0], CS_CMD_MDATA)) {
        cmd_mdata(argc, argv);
    } else if (streq(argv[0], CS_CMD_COMMIT)) {
        cmd_commit(argc, argv);
    } else if (streq(argv[0], CS_CMD_SELFCHECK)) {
        cmd_selfcheck();
    } else if (streq(argv[0], CS_CMD_CALIB)) {
        cmd_calib(argc, argv);
#ifdef CS_WHOLE_MODEL
    } else if (streq(argv[0], CS_CMD_TLOAD)) {
        cmd_tload(argc, argv);
    } else if (streq(argv[0], CS_CMD_TDATA)) {
        cmd_tdata(argc, argv);
    } else if (streq(argv[0], CS_CMD_TINFER)) {
        cmd_tinfer();
#endif
    } else {
        cs_puts(CS_PREFIX_ERR "[unknown command '");
        put_sanitized(argv[0]);
        cs_puts("']" CS_EOL);
    }
    cs_ready();
}

void cs_boot_banner(void) {
#ifdef CS_BAKED_MODEL
#ifdef CS_WHOLE_MODEL
    /* A baked whole model is used where it lies in flash (it may be larger than a RAM slot,
     * e.g. a full pruned vocabulary on mps2's 4 MiB flash); an upload later replaces it. */
    if (cs_baked_blob_len >= 4u && cs_baked_blob[0] == 'C' && cs_baked_blob[1] == 'S' &&
        cs_baked_blob[2] == 'D' && cs_baked_blob[3] == '0') {
        if (!cs_whole_parse(cs_baked_blob, cs_baked_blob_len, &whole)) {
            model = whole.head;
            model.id = cs_crc32(0, cs_baked_blob, cs_baked_blob_len - 4u);
            model.bytes = cs_baked_blob_len;
            whole_active = 1;
            active_slot = 1; /* uploads stage into slot 0 */
        }
    } else
#endif
    /* A model baked into the image is committed at boot exactly like an uploaded one. */
    if (cs_baked_blob_len <= CS_SLOT_BYTES) {
        for (uint32_t i = 0; i < cs_baked_blob_len; i++) slots[0][i] = cs_baked_blob[i];
        if (!cs_model_parse(slots[0], cs_baked_blob_len, &model)) active_slot = 0;
    }
#endif
    /* Provenance first (as TFLM's benchmark does): version, compiler, protocol. */
    cs_puts(CS_PREFIX_OK "codesign-[fw=" CS_FW_VERSION ";proto=" STR(CS_PROTOCOL_VERSION) ";port=");
    cs_puts(port_name());
    cs_puts(";cc=" CS_CC "]" CS_EOL);
    cs_ready();
}

void cs_run(void) {
    static char line[CS_LINE_MAX + 1];
    uint32_t len = 0;
    int overflow = 0;
    cs_boot_banner();
    for (;;) {
        int c = port_getc();
        if (c < 0) return;
        if (c == CS_TERMINATOR) {
            if (overflow) {
                cs_reply_begin(line, len);
                err("line too long");
                cs_ready();
            } else {
                cs_handle_line(line, len);
            }
            len = 0;
            overflow = 0;
        } else if (len < CS_LINE_MAX) {
            line[len++] = (char)c;
        } else {
            overflow = 1; /* keep reading until '%' so the next command starts clean */
        }
    }
}
