/* rt.h - the guest runtime: UART, printf, PSCI, semihosting, exceptions, MMU. */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stdint.h>

#define UART_BASE 0x09000000UL
#define RAM_BASE 0x40000000UL

/* registers saved on exception entry (see start.S) */
struct frame {
    uint64_t x[31];
    uint64_t elr, spsr, vector;
};

/* a guest's exception handler: return 1 if handled, 0 to report and stop */
typedef int (*exc_fn)(struct frame *f, uint64_t esr, uint64_t far);
void set_exception_handler(exc_fn fn);

void putc_(char c);
void puts_(const char *s);
int getc_(void); /* -1 if no input */
void printf_(const char *fmt, ...);

/* PSCI / SMCCC over HVC */
uint64_t smccc(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3);
#define PSCI_VERSION 0x84000000UL
#define PSCI_FEATURES 0x8400000AUL
#define PSCI_SYSTEM_OFF 0x84000008UL
#define PSCI_SYSTEM_RESET 0x84000009UL
#define SMCCC_VERSION 0x80000000UL

void semihost_exit(int code);
/* 0: PSCI SYSTEM_OFF; otherwise a semihosting exit with that status */
__attribute__((noreturn)) void guest_exit(int code);

/* identity map: 0-1 GiB device, 1-2 GiB normal memory (2 MiB blocks), the block at
   0x40400000 EL0-accessible; everything above 2 GiB unmapped */
void mmu_enable(void);

uint64_t run_user(void (*entry)(void), uint64_t user_sp);
extern char user_return[];

#define read_sysreg(r)                              \
    ({                                              \
        uint64_t _v;                                \
        __asm__ volatile("mrs %0, " #r : "=r"(_v)); \
        _v;                                         \
    })
#define write_sysreg(r, v) __asm__ volatile("msr " #r ", %0" ::"r"((uint64_t)(v)))
#define isb() __asm__ volatile("isb" ::: "memory")

#define ESR_EC(esr) (((esr) >> 26) & 0x3f)

#endif
