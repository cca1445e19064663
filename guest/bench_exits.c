/* bench_exits.c - times N exits of each kind with CNTVCT; the host turns ticks into ns per exit. */
#include "rt.h"

#ifndef N
#define N 100000
#endif
#define REPEATS 3

static inline uint64_t now(void)
{
    uint64_t t;
    __asm__ volatile("isb\n mrs %0, cntvct_el0\n isb" : "=r"(t)::"memory");
    return t;
}

static void report(const char *name, uint64_t ticks)
{
    printf_("BENCH name=%s iters=%u ticks=%lu freq=%lu\n", name, (unsigned)N, ticks, read_sysreg(cntfrq_el0));
}

#define TIMED(name, body)                              \
    do {                                               \
        uint64_t t0 = now();                           \
        for (uint64_t i = N; i; i--)                   \
            __asm__ volatile(body ::: "x0", "memory"); \
        report(name, now() - t0);                      \
    } while (0)

int main(uint64_t dtb)
{
    (void)dtb;
    volatile uint32_t *ibrd = (volatile uint32_t *)(UART_BASE + 0x24);
    int have_gic_sysregs = ((read_sysreg(id_aa64pfr0_el1) >> 24) & 0xf) != 0;

    for (int rep = 0; rep < REPEATS; rep++) {
        TIMED("loop", "");
        TIMED("hvc", "mov x0, #0x84000000\n hvc #0");
        {
            uint64_t t0 = now();
            for (uint64_t i = N; i; i--)
                *ibrd = 0x1a;
            report("mmio_write", now() - t0);
            t0 = now();
            for (uint64_t i = N; i; i--)
                (void)*ibrd;
            report("mmio_read", now() - t0);
        }
        TIMED("sysreg_cntv_ctl", "mrs x0, cntv_ctl_el0");
        if (have_gic_sysregs)
            TIMED("sysreg_icc_pmr", "mrs x0, S3_0_C4_C6_0");
    }
    puts_("BENCH done\n");
    return 0;
}
