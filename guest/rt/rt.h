/* rt.h - the guest runtime API: UART, printf, exceptions, EL0 calls, PSCI, semihosting, MMU, exit. */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- machine (QEMU virt layout) ---- */
#define UART_BASE 0x09000000UL
#define GICD_BASE 0x08000000UL
#define GICR_BASE 0x080A0000UL
#define RAM_BASE 0x40000000UL

/* ---- system registers ---- */
#define read_sysreg(r)                                        \
    ({                                                        \
        uint64_t _v;                                          \
        __asm__ volatile("mrs %0, " #r : "=r"(_v)::"memory"); \
        _v;                                                   \
    })
#define write_sysreg(r, v) __asm__ volatile("msr " #r ", %0" ::"r"((uint64_t)(v)) : "memory")
#define isb() __asm__ volatile("isb" ::: "memory")
#define dsb(opt) __asm__ volatile("dsb " #opt ::: "memory")

#define mmio_read32(a) (*(volatile uint32_t *)(uintptr_t)(a))
#define mmio_write32(a, v) (*(volatile uint32_t *)(uintptr_t)(a) = (uint32_t)(v))

/* ---- UART (PL011, polled) ---- */
void uart_putc(char c); /* "\n" goes out as "\r\n" */
void uart_puts(const char *s);
int uart_getc(void);    /* waits for a byte */
int uart_trygetc(void); /* -1 if nothing is waiting */
void uart_flush(void);  /* waits (bounded) until the transmitter is idle */

/* ---- printf: %d %i %u %x %X %p %s %c %%, "l"/"ll"/"z" sizes, width, '0' and '-' flags ---- */
__attribute__((format(printf, 1, 2))) int printf(const char *fmt, ...);
int vprintf(const char *fmt, va_list ap);

/* ---- exceptions ---- */
/* Saved by the vectors (vectors.S) on every exception; changes are written back on return. */
struct exc_frame {
    uint64_t x[31];
    uint64_t sp_el0;
    uint64_t elr, spsr;
    uint64_t esr, far; /* read only */
    uint64_t vector;   /* 0..15 = offset from VBAR_EL1 / 0x80 (read only) */
    uint64_t pad;
};

/* vector index: group * 4 + kind */
#define VEC_GROUP(v) ((v) >> 2) /* 0 EL1 with SP_EL0, 1 EL1 with SP_EL1, 2 EL0 AArch64, 3 EL0 AArch32 */
#define VEC_KIND(v) ((v)&3)     /* 0 sync, 1 IRQ, 2 FIQ, 3 SError */
#define VEC_EL1_SYNC 4
#define VEC_EL0_SYNC 8

#define ESR_EC(esr) (((esr) >> 26) & 0x3f)
#define ESR_IL (1UL << 25)
#define ESR_ISS(esr) ((esr)&0x1ffffff)
#define ESR_MAKE(ec, iss) (((uint64_t)(ec) << 26) | ESR_IL | (iss)) /* a 32-bit A64 instruction's syndrome */
#define EC_UNKNOWN 0x00
#define EC_SVC64 0x15
#define EC_HVC64 0x16
#define EC_SYSREG 0x18
#define EC_IABT_LOW 0x20
#define EC_IABT_CUR 0x21
#define EC_DABT_LOW 0x24
#define EC_DABT_CUR 0x25
#define EC_BRK64 0x3c
#define ESR_DFSC(esr) ((esr)&0x3f)
#define ESR_WNR (1UL << 6)
#define ESR_FNV (1UL << 10)

/* Return nonzero if the exception was dealt with (the frame is restored and execution resumes at
   frame->elr); zero reports it on the UART and ends the guest with exit status 3. */
typedef int (*exc_handler_fn)(struct exc_frame *f);
exc_handler_fn exc_set_handler(exc_handler_fn fn); /* returns the previous handler */
/* Called by the vectors. The default (weak) one calls the registered handler; a guest may define
   its own exc_handler instead. */
int exc_handler(struct exc_frame *f);
const char *exc_vector_name(uint64_t vector);

/* ---- EL0 ---- */
/* Runs entry(arg) at EL0 (SPSR = 0: EL0t, interrupts unmasked) on user_sp until an exception
   handler calls el0_return(); returns the value given there. entry must be EL0-executable. */
uint64_t el0_call(uintptr_t entry, uintptr_t user_sp, uint64_t arg);
/* From a handler for an exception taken from EL0: make el0_call() return value. */
void el0_return(struct exc_frame *f, uint64_t value);

/* ---- PSCI / SMCCC over HVC ---- */
#define SMCCC_VERSION 0x80000000U
#define PSCI_VERSION 0x84000000U
#define PSCI_CPU_OFF 0x84000002U
#define PSCI_SYSTEM_OFF 0x84000008U
#define PSCI_SYSTEM_RESET 0x84000009U
#define PSCI_FEATURES 0x8400000AU
#define PSCI_CPU_ON 0xC4000003U
#define PSCI_NOT_SUPPORTED (-1)

/* function id in w0, arguments in x1..x3; returns x0 (x4..x17 are treated as clobbered) */
uint64_t smccc_hvc(uint32_t fn, uint64_t a1, uint64_t a2, uint64_t a3);
uint32_t psci_version(void); /* major << 16 | minor */
int32_t psci_features(uint32_t fn);
int32_t psci_cpu_on(uint64_t mpidr, uintptr_t entry, uint64_t context);
__attribute__((noreturn)) void psci_system_off(void);
__attribute__((noreturn)) void psci_system_reset(void);

/* ---- semihosting (hlt #0xf000); without a semihosting host the call returns -1 ---- */
int64_t semihost_call(uint32_t op, const void *param);
void semihost_exit(int code); /* SYS_EXIT_EXTENDED, ADP_Stopped_ApplicationExit */

/* ---- MMU: identity map, 4 KiB granule ---- */
struct mmu_config {
    unsigned va_bits;   /* 39 (start at level 1) or 48 (start at level 0) */
    int ram_2m_blocks;  /* map RAM with 2 MiB blocks (otherwise 1 GiB blocks) */
    uint64_t ram_size;  /* bytes of normal memory from RAM_BASE, whole GiB, at most 4 GiB */
    uintptr_t el0_base; /* optional EL0 read/write/execute region (2 MiB aligned, in RAM) */
    uint64_t el0_size;  /* 0: none; forces 2 MiB blocks for the GiB holding it */
};
/* 0-1 GiB device nGnRnE (never executable); RAM normal write-back, EL1 read/write/execute;
   everything else unmapped. */
#define MMU_CONFIG_DEFAULT                                       \
    {                                                            \
        .va_bits = 39, .ram_2m_blocks = 1, .ram_size = 1UL << 30 \
    }
/* NULL: the default. Returns -1 (and changes nothing) if cfg is unsupported or the MMU is already on. */
int mmu_enable(const struct mmu_config *cfg);

/* ---- exit ---- */
/* 0: PSCI SYSTEM_OFF; otherwise a semihosting exit with that status, SYSTEM_OFF as the fallback.
   Returning from main(dtb) calls guest_exit() with main's return value. */
__attribute__((noreturn)) void guest_exit(int code);
#define RT_EXIT_EXCEPTION 3

int main(uint64_t dtb);

/* linker symbols (rt/link.ld) */
extern char __user_start[], __user_end[];

#endif
