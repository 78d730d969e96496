/*
 * The few functions each board implements (after MLPerf Tiny's submitter_implemented.h).
 * Everything else -- parser, model storage, kernels -- is shared and no board edits it.
 */
#ifndef CS_PORT_H
#define CS_PORT_H

#include <stdint.h>

/* Bring up the UART (or stdio) and the counter. Called once before anything else. */
void port_init(void);

/* Blocking read of one byte; returns -1 when the link is gone (host process only). */
int port_getc(void);

/* Write one byte; port_flush() pushes buffered bytes out (called after each reply). */
void port_putc(char c);
void port_flush(void);

/* Start the measurement counter and read the elapsed count since the last start, in the unit
 * port_counter_unit() names: "instructions" (QEMU -icount), "cycles" (DWT) or "ns" (host). */
void port_counter_start(void);
uint64_t port_counter_elapsed(void);
const char *port_counter_unit(void);

/* Short name of the board, e.g. "posix", "mps2-an386", "stm32f4". */
const char *port_name(void);

#endif /* CS_PORT_H */
