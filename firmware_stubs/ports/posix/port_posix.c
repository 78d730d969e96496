/*
 * Host port: the firmware as a process on stdin/stdout. Run it on a pseudo-terminal (the
 * host opens the pty's slave path like /dev/ttyUSB0) or on pipes for fuzzing. The counter
 * is CLOCK_MONOTONIC in ns: wall time of the host, not an MCU instruction count.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "cs_core.h"
#include "port.h"

static unsigned char rx[256];
static ssize_t rx_len, rx_pos;
static char tx[4096];
static size_t tx_len;
static uint64_t t0;

void port_init(void) {}

int port_getc(void) {
    if (rx_pos >= rx_len) {
        port_flush();
        do {
            rx_len = read(0, rx, sizeof rx);
        } while (rx_len < 0 && errno == EINTR);
        /* 0 (EOF) or EIO (pty slave closed by everyone) ends the process cleanly. */
        if (rx_len <= 0) return -1;
        rx_pos = 0;
    }
    return rx[rx_pos++];
}

void port_flush(void) {
    size_t off = 0;
    while (off < tx_len) {
        ssize_t n = write(1, tx + off, tx_len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* host gone: drop the output, the next read reports EOF */
        off += (size_t)n;
    }
    tx_len = 0;
}

void port_putc(char c) {
    if (tx_len == sizeof tx) port_flush();
    tx[tx_len++] = c;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void port_counter_start(void) { t0 = now_ns(); }
uint64_t port_counter_elapsed(void) { return now_ns() - t0; }
const char *port_counter_unit(void) { return "ns"; }
const char *port_name(void) { return "posix"; }

int main(void) {
    port_init();
    cs_run();
    port_flush();
    return 0;
}
