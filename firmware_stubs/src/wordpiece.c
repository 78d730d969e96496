/* WordPiece tokenizer (see wordpiece.h for what it handles and what it does not). */
#include "wordpiece.h"

#include "wordpiece_unicode.h"

#define WP_HEADER 32u
#define WP_ADDED 16u
#define WP_BLOCK 16u
#define WP_BLOCK_BYTES 8u
#define WP_NONE 0xFFFFFFFFu

typedef struct {
    const uint8_t *added, *blocks, *ids, *pool;
    uint32_t n_added, n_wblocks, n_cblocks, pool_bytes, max_chars, max_word, max_cont;
    uint16_t unk, cls, sep;
} wp_table_t;

typedef struct {
    uint16_t *ids;
    size_t n, cap; /* cap: index just past the last piece's slot (room is left for [SEP]) */
} wp_out_t;

typedef struct {
    uint8_t buf[CS_WP_MAX_CHARS * 4u];
    uint32_t bytes, chars;
} wp_word_t;

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd24(const uint8_t *p) { return rd16(p) | (uint32_t)p[2] << 16; }
static uint32_t rd32(const uint8_t *p) { return rd24(p) | (uint32_t)p[3] << 24; }

static int32_t wp_open(wp_table_t *t, const uint8_t *p, size_t bytes) {
    if (p == 0 || bytes < WP_HEADER || p[0] != 'C' || p[1] != 'S' || p[2] != 'W' || p[3] != 'P' ||
        rd16(p + 4) != 2u)
        return -1;
    t->n_added = rd16(p + 6);
    uint32_t n_words = rd32(p + 8), n_conts = rd32(p + 12);
    t->n_wblocks = (uint32_t)(((uint64_t)n_words + WP_BLOCK - 1u) / WP_BLOCK);
    t->n_cblocks = (uint32_t)(((uint64_t)n_conts + WP_BLOCK - 1u) / WP_BLOCK);
    t->pool_bytes = rd32(p + 16);
    t->unk = (uint16_t)rd16(p + 20);
    t->cls = (uint16_t)rd16(p + 22);
    t->sep = (uint16_t)rd16(p + 24);
    t->max_chars = rd16(p + 26);
    t->max_word = p[28];
    t->max_cont = p[29];
    uint32_t n_ids = rd16(p + 30);
    uint64_t need = WP_HEADER + (uint64_t)WP_ADDED * t->n_added +
                    (uint64_t)WP_BLOCK_BYTES * ((uint64_t)t->n_wblocks + t->n_cblocks) +
                    2u * (uint64_t)n_ids + t->pool_bytes;
    if (need != bytes || t->max_chars == 0u || t->max_chars > CS_WP_MAX_CHARS) return -1;
    t->added = p + WP_HEADER;
    t->blocks = t->added + WP_ADDED * t->n_added;
    t->ids = t->blocks + WP_BLOCK_BYTES * (t->n_wblocks + t->n_cblocks);
    t->pool = t->ids + 2u * n_ids;
    return 0;
}

/* Entry j's front-coding header at *pp: shared prefix and suffix length; advances *pp. */
static void wp_entry(const uint8_t **pp, uint32_t j, uint32_t *pre, uint32_t *suf) {
    const uint8_t *p = *pp;
    if (j == 0u) { *pre = 0u; *suf = p[0]; p += 1; }
    else if (p[0] == 0xFFu) { *pre = p[1]; *suf = p[2]; p += 3; }
    else { *pre = p[0] >> 4; *suf = p[0] & 0x0Fu; p += 1; }
    *pp = p;
}

int32_t cs_wp_check(const uint8_t *table, size_t table_bytes) {
    wp_table_t t;
    if (wp_open(&t, table, table_bytes) != 0) return -1;
    uint32_t rank = 0, n_ids = rd16(table + 30);
    /* Every block decodes inside the pool, prefixes reuse only bytes that exist, and the ranks
     * and masks account for exactly n_ids ids: encode then never reads outside the table. */
    for (uint32_t b = 0; b < t.n_wblocks + t.n_cblocks; b++) {
        const uint8_t *blk = t.blocks + WP_BLOCK_BYTES * b;
        uint32_t off = rd24(blk), count = blk[3], mask = rd16(blk + 4);
        if (count == 0u || count > WP_BLOCK || rd16(blk + 6) != rank || off >= t.pool_bytes ||
            (mask >> count) != 0u)
            return -1;
        const uint8_t *p = t.pool + off, *end = t.pool + t.pool_bytes;
        uint32_t len = 0;
        for (uint32_t j = 0; j < count; j++) {
            uint32_t pre, suf;
            if (p >= end || (j > 0u && p[0] == 0xFFu && end - p < 3)) return -1;
            wp_entry(&p, j, &pre, &suf);
            if (pre > len || pre + suf > 255u || suf > (uint32_t)(end - p)) return -1;
            p += suf;
            len = pre + suf;
            if (mask >> j & 1u) rank++;
        }
    }
    return rank == n_ids ? 0 : -1;
}

/* Byte-wise order, a prefix first: the order Python's sorted() gives the UTF-8 strings. */
static int wp_cmp(const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb) {
    uint32_t n = na < nb ? na : nb;
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return na < nb ? -1 : (na > nb ? 1 : 0);
}

static uint32_t wp_popcount(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    return (((v + (v >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24;
}

/* The id of piece s (a continuation piece without its "##" when cont), or WP_NONE. */
static uint32_t wp_find(const wp_table_t *t, int cont, const uint8_t *s, uint32_t len) {
    uint32_t lo = cont ? t->n_wblocks : 0u, hi = cont ? t->n_wblocks + t->n_cblocks : t->n_wblocks;
    if (lo == hi) return WP_NONE;
    while (hi - lo > 1u) { /* the last block whose first string is <= s */
        uint32_t mid = lo + (hi - lo) / 2u;
        const uint8_t *first = t->pool + rd24(t->blocks + WP_BLOCK_BYTES * mid);
        if (wp_cmp(first + 1, first[0], s, len) <= 0) lo = mid;
        else hi = mid;
    }
    const uint8_t *blk = t->blocks + WP_BLOCK_BYTES * lo, *p = t->pool + rd24(blk);
    uint32_t count = blk[3], m = 0; /* m: bytes the current entry shares with s */
    for (uint32_t j = 0; j < count; j++) {
        uint32_t pre, suf;
        wp_entry(&p, j, &pre, &suf);
        const uint8_t *x = p;
        p += suf;
        /* The entry before agreed with s on m bytes and was smaller. A longer shared prefix
         * keeps this one smaller; a shorter one makes it larger (the list is sorted). */
        if (pre > m) continue;
        if (pre < m) return WP_NONE;
        uint32_t k = 0;
        while (k < suf && m + k < len && x[k] == s[m + k]) k++;
        m += k;
        if (k == suf && m == len) {
            uint32_t mask = rd16(blk + 4);
            if (!(mask >> j & 1u)) return t->unk;
            return rd16(t->ids + 2u * (rd16(blk + 6) + wp_popcount(mask & ((1u << j) - 1u))));
        }
        if (m == len || (k < suf && x[k] > s[m])) return WP_NONE;
    }
    return WP_NONE;
}

static void wp_emit(wp_out_t *o, uint32_t id) {
    if (o->n < o->cap) o->ids[o->n] = (uint16_t)id;
    o->n++;
}

/* The word's pieces, greedy longest match first; a part with no match makes it one [UNK]. */
static void wp_flush(const wp_table_t *t, wp_word_t *w, wp_out_t *o) {
    if (w->chars == 0u) return;
    size_t n0 = o->n;
    if (w->chars > t->max_chars) {
        wp_emit(o, t->unk);
    } else {
        const uint8_t *s = w->buf;
        uint32_t start = 0;
        while (start < w->bytes) {
            int cont = start > 0u;
            uint32_t end = w->bytes, lim = start + (cont ? t->max_cont : t->max_word);
            if (end > lim) { /* no piece is longer: start at the last whole character that fits */
                end = lim;
                while (end > start && (s[end] & 0xC0u) == 0x80u) end--;
            }
            uint32_t id = WP_NONE;
            while (end > start) {
                id = wp_find(t, cont, s + start, end - start);
                if (id != WP_NONE) break;
                do end--;
                while (end > start && (s[end] & 0xC0u) == 0x80u);
            }
            if (id == WP_NONE) {
                o->n = n0;
                wp_emit(o, t->unk);
                break;
            }
            wp_emit(o, id);
            start = end;
        }
    }
    if (o->n > o->cap) o->n = o->cap; /* truncation may cut a word's pieces */
    w->bytes = w->chars = 0u;
}

static void wp_append(const wp_table_t *t, wp_word_t *w, uint32_t c) {
    w->chars++;
    if (w->chars > t->max_chars) return; /* [UNK] anyway: only the count matters */
    uint8_t *p = w->buf + w->bytes;
    if (c < 0x80u) {
        p[0] = (uint8_t)c;
        w->bytes += 1u;
    } else if (c < 0x800u) {
        p[0] = (uint8_t)(0xC0u | (c >> 6));
        p[1] = (uint8_t)(0x80u | (c & 0x3Fu));
        w->bytes += 2u;
    } else if (c < 0x10000u) {
        p[0] = (uint8_t)(0xE0u | (c >> 12));
        p[1] = (uint8_t)(0x80u | ((c >> 6) & 0x3Fu));
        p[2] = (uint8_t)(0x80u | (c & 0x3Fu));
        w->bytes += 3u;
    } else {
        p[0] = (uint8_t)(0xF0u | (c >> 18));
        p[1] = (uint8_t)(0x80u | ((c >> 12) & 0x3Fu));
        p[2] = (uint8_t)(0x80u | ((c >> 6) & 0x3Fu));
        p[3] = (uint8_t)(0x80u | (c & 0x3Fu));
        w->bytes += 4u;
    }
}

/* Strict UTF-8 (no overlongs, surrogates or > U+10FFFF); a bad byte is U+FFFD, consumed alone. */
static size_t wp_utf8(const uint8_t *s, size_t len, uint32_t *c) {
    uint32_t b0 = s[0];
    if (b0 < 0x80u) { *c = b0; return 1; }
    size_t n;
    uint32_t lo = 0x80u, hi = 0xBFu, v;
    if (b0 >= 0xC2u && b0 <= 0xDFu) { n = 2; v = b0 & 0x1Fu; }
    else if (b0 >= 0xE0u && b0 <= 0xEFu) {
        n = 3; v = b0 & 0x0Fu;
        if (b0 == 0xE0u) lo = 0xA0u;
        if (b0 == 0xEDu) hi = 0x9Fu;
    } else if (b0 >= 0xF0u && b0 <= 0xF4u) {
        n = 4; v = b0 & 0x07u;
        if (b0 == 0xF0u) lo = 0x90u;
        if (b0 == 0xF4u) hi = 0x8Fu;
    } else { *c = 0xFFFDu; return 1; }
    if (len < n) { *c = 0xFFFDu; return 1; }
    for (size_t i = 1; i < n; i++) {
        uint32_t b = s[i];
        if (b < (i == 1 ? lo : 0x80u) || b > (i == 1 ? hi : 0xBFu)) { *c = 0xFFFDu; return 1; }
        v = v << 6 | (b & 0x3Fu);
    }
    *c = v;
    return n;
}

static int wp_in16(const uint16_t (*r)[2], uint32_t n, uint32_t c) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2u;
        if (c < r[mid][0]) hi = mid;
        else if (c > r[mid][1]) lo = mid + 1u;
        else return 1;
    }
    return 0;
}

static int wp_in32(const uint32_t (*r)[2], uint32_t n, uint32_t c) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2u;
        if (c < r[mid][0]) hi = mid;
        else if (c > r[mid][1]) lo = mid + 1u;
        else return 1;
    }
    return 0;
}

#define WP_N(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))
#define WP_IN(name, c)                                                                          \
    ((c) <= 0xFFFFu ? wp_in16(wp_##name##_bmp, WP_N(wp_##name##_bmp), (c))                      \
                    : wp_in32(wp_##name##_supp, WP_N(wp_##name##_supp), (c)))

/* Rust's char::is_whitespace (the White_Space property), which BertPreTokenizer splits on. */
static int wp_space(uint32_t c) {
    return c == 0x20u || (c >= 0x09u && c <= 0x0Du) || c == 0x85u || c == 0xA0u || c == 0x1680u ||
           (c >= 0x2000u && c <= 0x200Au) || c == 0x2028u || c == 0x2029u || c == 0x202Fu ||
           c == 0x205Fu || c == 0x3000u;
}

static int wp_cjk(uint32_t c) {
    return (c >= 0x4E00u && c <= 0x9FFFu) || (c >= 0x3400u && c <= 0x4DBFu) ||
           (c >= 0x20000u && c <= 0x2A6DFu) || (c >= 0x2A700u && c <= 0x2B73Fu) ||
           (c >= 0x2B740u && c <= 0x2B81Fu) || (c >= 0x2B920u && c <= 0x2CEAFu) ||
           (c >= 0xF900u && c <= 0xFAFFu) || (c >= 0x2F800u && c <= 0x2FA1Fu);
}

static int wp_punct(uint32_t c) {
    if (c < 0x80u)
        return (c >= 33u && c <= 47u) || (c >= 58u && c <= 64u) || (c >= 91u && c <= 96u) ||
               (c >= 123u && c <= 126u);
    return WP_IN(punct, c);
}

#ifdef CS_WP_WIDE_FOLD
/* Case and accents beyond Latin-1 (opt-in: 8.7 KB of flash). */
static uint32_t wp_wide(uint32_t c) {
    uint32_t lo = 0, hi = WP_N(wp_wide_fold);
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2u;
        if (c < wp_wide_fold[mid][0]) hi = mid;
        else if (c > wp_wide_fold[mid][0]) lo = mid + 1u;
        else return wp_wide_fold[mid][1];
    }
    return c;
}
#endif

/* An added token (e.g. [MASK]) spelled out at s: its length in bytes and id, else 0. */
static size_t wp_added(const wp_table_t *t, const uint8_t *s, size_t len, uint32_t *id) {
    size_t best = 0;
    for (uint32_t k = 0; k < t->n_added; k++) {
        const uint8_t *a = t->added + WP_ADDED * k;
        size_t n = a[2];
        if (n <= best || n > len) continue; /* the longest match wins, as in `tokenizers` */
        size_t i = 0;
        while (i < n && a[3 + i] == s[i]) i++;
        if (i == n) { best = n; *id = rd16(a); }
    }
    return best;
}

int32_t cs_wp_encode(const uint8_t *table, size_t table_bytes, const uint8_t *text, size_t len,
                     uint16_t *ids, size_t max_ids) {
    wp_table_t t;
    if (wp_open(&t, table, table_bytes) != 0 || ids == 0 || max_ids < 2u) return -1;
    wp_out_t o = {ids, 1u, max_ids - 1u};
    wp_word_t w;
    w.bytes = w.chars = 0u;
    ids[0] = t.cls;
    size_t i = 0;
    while (i < len && o.n < o.cap) {
        uint32_t c, id;
        size_t k = t.n_added ? wp_added(&t, text + i, len - i, &id) : 0u;
        if (k) {
            wp_flush(&t, &w, &o);
            if (o.n < o.cap) wp_emit(&o, id);
            i += k;
            continue;
        }
        i += wp_utf8(text + i, len - i, &c);
        if (c == '\t' || c == '\n' || c == '\r') {
            wp_flush(&t, &w, &o); /* clean_text keeps these three as whitespace */
            continue;
        }
        if (c == 0u || c == 0xFFFDu || (c < 0x100u ? (c < 0x20u || (c >= 0x7Fu && c <= 0x9Fu) ||
                                                      c == 0xADu)
                                                   : WP_IN(other, c)))
            continue; /* clean_text: NUL, U+FFFD and control/format/private characters go */
        if (wp_space(c)) { /* after the controls: U+000B, U+000C and U+0085 are removed */
            wp_flush(&t, &w, &o);
            continue;
        }
        if (c >= 0x100u && WP_IN(mark, c)) continue; /* accent stripping removes every Mn */
        if (c >= 'A' && c <= 'Z') c += 32u;
        else if (c >= 0xC0u && c <= 0xFFu) c = wp_latin1_fold[c - 0xC0u];
#ifdef CS_WP_WIDE_FOLD
        else if (c >= 0x100u && c <= 0xFFFFu) c = wp_wide(c);
#endif
        if (wp_punct(c) || wp_cjk(c)) { /* a word of its own */
            wp_flush(&t, &w, &o);
            if (o.n >= o.cap) break;
            wp_append(&t, &w, c);
            wp_flush(&t, &w, &o);
            continue;
        }
        wp_append(&t, &w, c);
    }
    if (o.n < o.cap) wp_flush(&t, &w, &o);
    ids[o.n++] = t.sep;
    return (int32_t)o.n;
}
