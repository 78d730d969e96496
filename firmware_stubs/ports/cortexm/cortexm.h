/* Cortex-M helpers shared by the bare-metal ports (core registers only, no vendor SDK). */
#ifndef CS_CORTEXM_H
#define CS_CORTEXM_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define NVIC_ISER0 REG32(0xE000E100u)
#define NVIC_ISER1 REG32(0xE000E104u)
#define SCB_VTOR REG32(0xE000ED08u)
#define DEMCR REG32(0xE000EDFCu)
#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CYCCNT REG32(0xE0001004u)

static inline void cm_disable_irq(void) { __asm__ volatile("cpsid i" ::: "memory"); }
static inline void cm_enable_irq(void) { __asm__ volatile("cpsie i" ::: "memory"); }
static inline void cm_wfi(void) { __asm__ volatile("wfi" ::: "memory"); }

/* Provided by cortexm_reset.c; the port's vector table points at it. */
void cm_reset_handler(void);
void cm_default_handler(void);
extern uint32_t _estack;

#endif /* CS_CORTEXM_H */
