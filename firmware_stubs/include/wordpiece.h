/* BERT uncased WordPiece tokenizer over a flash vocabulary table (toolchain/mcu/vocab_table.py).
 *
 * Handled as the `tokenizers` library's BertNormalizer + BertPreTokenizer + WordPiece do:
 * added (special) tokens matched in the raw text; clean_text (NUL, U+FFFD, Cc/Cf/Co/Cs removed,
 * whitespace to a space); CJK ideographs split into one word each; accents stripped and
 * lower-casing for ASCII and Latin-1 (U+0000..U+00FF), and combining marks (Mn) removed
 * everywhere; punctuation split (ASCII punctuation ranges plus Unicode P*); greedy
 * longest-match-first pieces with "##" continuation; [UNK] for a word with more than the
 * table's max characters (100) or with a part no piece matches; [CLS] ... [SEP]; truncation.
 * Invalid UTF-8 bytes count as U+FFFD (removed), as Python's errors="replace" decoding gives.
 *
 * Not handled by default: lower-casing and NFD decomposition of precomposed characters beyond
 * Latin-1 (Latin Extended, Greek, Cyrillic...). -DCS_WP_WIDE_FOLD adds them for every BMP
 * character that folds to one character (8.6 KB more flash). Never handled: characters that fold
 * to several (Hangul syllables into jamo) or outside the BMP, unassigned code points (Cn, which
 * BERT removes), and Unicode versions after the tables' (wordpiece_unicode.h, Unicode 14). No malloc, no libc, no
 * static RAM: one word buffer on the stack (about 620 bytes of stack in all on a Cortex-M4). */
#ifndef CS_WORDPIECE_H
#define CS_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

/* Characters of the longest word the buffer holds; longer words are [UNK] whatever the table. */
#define CS_WP_MAX_CHARS 100u

/* 0 when `table` is a well-formed CSWP v2 table of exactly `table_bytes` bytes, else -1. Call it
 * once when a table arrives: cs_wp_encode checks only the header and trusts the rest. */
int32_t cs_wp_check(const uint8_t *table, size_t table_bytes);

/* Token ids of `text` (UTF-8, `len` bytes) into ids[0..max_ids): [CLS], at most max_ids - 2
 * pieces, [SEP]. Returns the count, or -1 for a bad table or max_ids < 2. */
int32_t cs_wp_encode(const uint8_t *table, size_t table_bytes, const uint8_t *text, size_t len,
                     uint16_t *ids, size_t max_ids);

#endif /* CS_WORDPIECE_H */
