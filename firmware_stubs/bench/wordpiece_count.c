/* Instruction counts of the WordPiece tokenizer on a board port (QEMU mps2 -icount): tokenizes
 * the baked texts, each CS_WP_REPEAT times between counter reads, and prints one line per text,
 * "<index> <ids> <instructions per encode x repeat> <id> <id> ...", then "done". Built by
 * toolchain/mcu/wordpiece_host.py:build_count_image with the port's own main renamed away. */
#include <stdint.h>

#include "port.h"
#include "wordpiece.h"
#include CS_WP_BAKED /* cs_wp_table[], CS_WP_TABLE_BYTES, cs_wp_texts[], cs_wp_lens[], CS_WP_N_TEXTS */

#ifndef CS_WP_REPEAT
#define CS_WP_REPEAT 8u
#endif
#ifndef CS_WP_MAX_LEN
#define CS_WP_MAX_LEN 128u
#endif

static void put_str(const char *s) {
    while (*s) port_putc(*s++);
}

static void put_u64(uint64_t v) {
    char buf[21];
    int n = 0;
    do {
        buf[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (n) port_putc(buf[--n]);
}

int main(void) {
    static uint16_t ids[CS_WP_MAX_LEN];
    port_init();
    if (cs_wp_check(cs_wp_table, CS_WP_TABLE_BYTES) != 0) {
        put_str("bad table\n");
    } else {
        for (uint32_t i = 0; i < CS_WP_N_TEXTS; i++) {
            int32_t n = 0;
            port_counter_start();
            for (uint32_t r = 0; r < CS_WP_REPEAT; r++)
                n = cs_wp_encode(cs_wp_table, CS_WP_TABLE_BYTES, cs_wp_texts[i], cs_wp_lens[i], ids,
                                 CS_WP_MAX_LEN);
            uint64_t count = port_counter_elapsed();
            put_u64(i);
            port_putc(' ');
            put_u64((uint64_t)n);
            port_putc(' ');
            put_u64(count);
            for (int32_t k = 0; k < n; k++) {
                port_putc(' ');
                put_u64(ids[k]);
            }
            port_putc('\n');
        }
    }
    put_str("done\n");
    port_flush();
    for (;;) (void)port_getc();
    return 0;
}
