/* Reply printing without printf (the bare-metal ports link no libc). */
#include "cs_core.h"
#include "port.h"

void cs_puts(const char *s) {
    while (*s) port_putc(*s++);
}

void cs_put_u64(uint64_t v) {
    char buf[21];
    int n = 0;
    do {
        /* Divide by 10 via 32-bit halves would be faster; 64-bit here is simple and rare. */
        buf[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v && n < 20);
    while (n) port_putc(buf[--n]);
}

void cs_put_i32(int32_t v) {
    if (v < 0) {
        port_putc('-');
        cs_put_u64((uint64_t)(-(int64_t)v));
    } else {
        cs_put_u64((uint64_t)v);
    }
}

void cs_put_hex32(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    for (int s = 28; s >= 0; s -= 4) port_putc(digits[(v >> s) & 0xFu]);
}

void cs_end_line(void) { cs_puts(CS_EOL); }

void cs_ready(void) {
    cs_puts(CS_READY CS_EOL);
    port_flush();
}
