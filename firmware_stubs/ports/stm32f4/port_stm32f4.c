/*
 * STM32F4 skeleton (e.g. STM32F407 Discovery): USART2 on PA2/PA3 at 115200 8N1 from the
 * 16 MHz HSI reset clock, DWT cycle counter. It compiles in CI; nothing runs it there.
 *
 * A production port would keep the two model slots in flash sectors and program them in
 * cmd_mdata; this skeleton keeps them in SRAM, so CS_SLOT_BYTES is small.
 */
#include "cortexm.h"
#include "cs_core.h"
#include "port.h"

#define RCC_AHB1ENR REG32(0x40023830u)
#define RCC_APB1ENR REG32(0x40023840u)
#define GPIOA_MODER REG32(0x40020000u)
#define GPIOA_AFRL REG32(0x40020020u)
#define USART2_BASE 0x40004400u
#define USART_SR REG32(USART2_BASE + 0x00u)
#define USART_DR REG32(USART2_BASE + 0x04u)
#define USART_BRR REG32(USART2_BASE + 0x08u)
#define USART_CR1 REG32(USART2_BASE + 0x0Cu)
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_UE (1u << 13)
#define CR1_TE (1u << 3)
#define CR1_RE (1u << 2)
#define HSI_HZ 16000000u
#define BAUD 115200u

static uint32_t cycles_start;

void port_init(void) {
    RCC_AHB1ENR |= 1u << 0;  /* GPIOA */
    RCC_APB1ENR |= 1u << 17; /* USART2 */
    /* PA2/PA3 alternate function 7 (USART2). */
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4);
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);
    USART_BRR = (HSI_HZ + BAUD / 2u) / BAUD;
    USART_CR1 = CR1_UE | CR1_TE | CR1_RE;
    /* DWT cycle counter: trace enable, reset, start. */
    DEMCR |= 1u << 24;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
}

int port_getc(void) {
    while (!(USART_SR & SR_RXNE)) {
    }
    return (int)(USART_DR & 0xFFu);
}

void port_putc(char c) {
    while (!(USART_SR & SR_TXE)) {
    }
    USART_DR = (uint8_t)c;
}

void port_flush(void) {}

void port_counter_start(void) { cycles_start = DWT_CYCCNT; }

/* Unsigned subtraction handles one wrap of the 32-bit counter (268 s at 16 MHz). */
uint64_t port_counter_elapsed(void) { return (uint32_t)(DWT_CYCCNT - cycles_start); }

const char *port_counter_unit(void) { return "cycles"; }
const char *port_name(void) { return "stm32f4"; }

int main(void) {
    port_init();
    cs_run();
    return 0;
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
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
    cm_default_handler, /* SysTick */
};
