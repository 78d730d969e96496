/* Reset handler and the few libc functions GCC may emit calls to under -nostdlib. */
#include <stddef.h>
#include <stdint.h>

#include "cortexm.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);

void cm_reset_handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; dst++) *dst = 0;
    main();
    for (;;) cm_wfi();
}

void cm_default_handler(void) {
    /* An unexpected exception: stop where a debugger can see it; the host times out cleanly. */
    for (;;) cm_wfi();
}

/* GCC emits these for struct copies and zeroing even under -ffreestanding. */
void *memcpy(void *dst, const void *src, size_t n) {
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    uint8_t *d = dst;
    while (n--) *d++ = (uint8_t)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}
