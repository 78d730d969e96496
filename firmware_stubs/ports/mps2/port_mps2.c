/*
 * QEMU mps2-an386: CMSDK APB UART0 (0x40004000, RX IRQ 0) and SysTick on the 25 MHz CPU clock.
 *
 * Run QEMU with -icount shift=0,align=off,sleep=off: each guest instruction then advances the
 * virtual clock by 1 ns, so one SysTick tick (40 ns at 25 MHz) is exactly 40 instructions.
 * The counter therefore reports instructions, with a resolution of 40.
 */
#include "cortexm.h"
#include "cs_core.h"
#include "port.h"

#define UART0_BASE 0x40004000u
#define UART_DATA REG32(UART0_BASE + 0x00u)
#define UART_STATE REG32(UART0_BASE + 0x04u)
#define UART_CTRL REG32(UART0_BASE + 0x08u)
#define UART_INTCLEAR REG32(UART0_BASE + 0x0Cu)
#define UART_BAUDDIV REG32(UART0_BASE + 0x10u)
#define STATE_TXFULL 1u
#define STATE_RXFULL 2u
#define CTRL_TXEN 1u
#define CTRL_RXEN 2u
#define CTRL_RXINTEN 8u
#define INT_RX 2u

#define INSTR_PER_TICK 40u /* 1e9 ns/s / 25e6 Hz with -icount shift=0 */
#define SYST_RELOAD 0xFFFFFFu

static volatile uint32_t systick_wraps;

void port_init(void) {
    UART_BAUDDIV = 16u; /* QEMU ignores the rate but flags a divisor below 16 */
    UART_CTRL = CTRL_TXEN | CTRL_RXEN | CTRL_RXINTEN;
    NVIC_ISER0 = 1u << 0; /* UART0 RX: wakes the WFI in port_getc */
    cm_enable_irq();
}

static void uart0_rx_handler(void) { UART_INTCLEAR = INT_RX; }

int port_getc(void) {
    for (;;) {
        /* Check and sleep with interrupts masked: a byte arriving in between still wakes WFI. */
        cm_disable_irq();
        if (UART_STATE & STATE_RXFULL) {
            cm_enable_irq();
            return (int)(UART_DATA & 0xFFu);
        }
        cm_wfi();
        cm_enable_irq();
    }
}

void port_putc(char c) {
    while (UART_STATE & STATE_TXFULL) {
    }
    UART_DATA = (uint8_t)c;
}

void port_flush(void) {}

static void systick_handler(void) { systick_wraps++; }

void port_counter_start(void) {
    SYST_CSR = 0;
    SYST_RVR = SYST_RELOAD;
    systick_wraps = 0;
    SYST_CVR = 0; /* any write clears; the count phase restarts here, so results repeat */
    SYST_CSR = 7u; /* enable, interrupt on wrap, CPU clock */
}

uint64_t port_counter_elapsed(void) {
    uint32_t w1, v, w2;
    do {
        w1 = systick_wraps;
        v = SYST_CVR;
        w2 = systick_wraps;
    } while (w1 != w2);
    /* Stop the timer: left running it would keep waking the idle loop (sleep=off warps time). */
    SYST_CSR = 0;
    /* After the clearing write CVR reads 0 until the first tick reloads it, and reads 0
     * again right at each wrap: both mean "no ticks beyond the counted wraps". */
    uint64_t ticks = (uint64_t)w1 * (SYST_RELOAD + 1u) + (v ? SYST_RELOAD - v + 1u : 0u);
    return ticks * INSTR_PER_TICK;
}

const char *port_counter_unit(void) { return "instructions"; }
const char *port_name(void) { return "mps2-an386"; }

int main(void) {
    port_init();
    cs_run();
    return 0;
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[17])(void) = {
    (void (*)(void))(uintptr_t)&_estack,
    cm_reset_handler,
    cm_default_handler, /* NMI */
    cm_default_handler, /* HardFault */
    cm_default_handler, /* MemManage */
    cm_default_handler, /* BusFault */
    cm_default_handler, /* UsageFault */
    0, 0, 0, 0,
    cm_default_handler, /* SVCall */
    cm_default_handler, /* DebugMon */
    0,
    cm_default_handler, /* PendSV */
    systick_handler,
    uart0_rx_handler,   /* IRQ 0: UART0 RX */
};
