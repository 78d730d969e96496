/* Reply printing without printf (the bare-metal ports link no libc), and the reply's frame
 * check: a CRC32 over the command as received, '%', and every reply byte (see protocol.h). */
#include "cs_core.h"
#include "port.h"

static uint32_t reply_crc; /* the boot banner answers no command: its seed is empty */

void cs_reply_begin(const char *line, uint32_t len) {
    static const uint8_t term = (uint8_t)CS_TERMINATOR;
    reply_crc = cs_crc32(cs_crc32(0, (const uint8_t *)line, len), &term, 1);
}

void cs_putc(char c) {
    uint8_t b = (uint8_t)c;
    reply_crc = cs_crc32(reply_crc, &b, 1);
    port_putc(c);
}

void cs_puts(const char *s) {
    while (*s) cs_putc(*s++);
}

void cs_put_u64(uint64_t v) {
    char buf[21];
    int n = 0;
    do {
        /* Divide by 10 via 32-bit halves would be faster; 64-bit here is simple and rare. */
        buf[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v && n < 20);
    while (n) cs_putc(buf[--n]);
}

void cs_put_i32(int32_t v) {
    if (v < 0) {
        cs_putc('-');
        cs_put_u64((uint64_t)(-(int64_t)v));
    } else {
        cs_put_u64((uint64_t)v);
    }
}

void cs_put_hex32(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    for (int s = 28; s >= 0; s -= 4) cs_putc(digits[(v >> s) & 0xFu]);
}

void cs_end_line(void) { cs_puts(CS_EOL); }

void cs_ready(void) {
    uint32_t fcs = reply_crc;
    cs_puts(CS_FCS "[");
    cs_put_hex32(fcs);
    cs_puts("]" CS_EOL CS_READY CS_EOL);
    port_flush();
    reply_crc = 0;
}
