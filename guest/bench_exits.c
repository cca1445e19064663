/* bench_exits.c - exit-latency benchmark: N of each trapping operation, timed with CNTVCT_EL0. */
#include "rt.h"

#ifndef N
#define N 100000
#endif
#define REPEATS 3 /* the host keeps the minimum */

#define PL011_IBRD (UART_BASE + 0x24)

/* Each loop runs its operation n times: the operation, subs, b.ne. Nothing else in the loop. */
static void loop_empty(uint64_t n)
{
    __asm__ volatile("1: subs %0, %0, #1\n b.ne 1b" : "+r"(n)::"cc");
}

static void loop_hvc(uint64_t n)
{
    /* w0 is rebuilt every time: the call returns its result there; SMCCC 1.0 may change x0..x17 */
    __asm__ volatile("1: movz w0, #0x8400, lsl #16\n" /* PSCI_VERSION */
                     "   hvc #0\n"
                     "   subs %0, %0, #1\n"
                     "   b.ne 1b"
                     : "+r"(n)
                     :
                     : "cc", "memory", "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12",
                       "x13", "x14", "x15", "x16", "x17");
}

static uint32_t ibrd; /* written back unchanged */

static void loop_mmio_write(uint64_t n)
{
    __asm__ volatile("1: str %w1, [%2]\n subs %0, %0, #1\n b.ne 1b"
                     : "+r"(n)
                     : "r"(ibrd), "r"(PL011_IBRD)
                     : "cc", "memory");
}

static void loop_mmio_read(uint64_t n)
{
    uint32_t v;
    __asm__ volatile("1: ldr %w1, [%2]\n subs %0, %0, #1\n b.ne 1b"
                     : "+r"(n), "=&r"(v)
                     : "r"(PL011_IBRD)
                     : "cc", "memory");
}

static void loop_cntv_ctl(uint64_t n)
{
    uint64_t v;
    __asm__ volatile("1: mrs %1, cntv_ctl_el0\n subs %0, %0, #1\n b.ne 1b" : "+r"(n), "=&r"(v)::"cc");
}

static void loop_icc_pmr(uint64_t n)
{
    uint64_t v;
    __asm__ volatile("1: mrs %1, S3_0_C4_C6_0\n subs %0, %0, #1\n b.ne 1b" : "+r"(n), "=&r"(v)::"cc");
}

static uint64_t counter(void)
{
    uint64_t t;
    __asm__ volatile("isb\n mrs %0, cntvct_el0\n isb" : "=r"(t)::"memory");
    return t;
}

/* ICC_* system registers need a GICv3 CPU interface (ID_AA64PFR0_EL1.GIC) with ICC_SRE_EL1.SRE set;
   an UNDEF while probing (a VMM without them) skips that measurement. Returns why not, or NULL. */
static volatile int undefs;

static int count_undef(struct exc_frame *f)
{
    if (f->vector != VEC_EL1_SYNC || ESR_EC(f->esr) != EC_UNKNOWN)
        return 0;
    undefs++;
    f->elr += 4;
    return 1;
}

static const char *icc_sysregs_missing(void)
{
    if (((read_sysreg(id_aa64pfr0_el1) >> 24) & 0xf) == 0)
        return "ID_AA64PFR0_EL1.GIC=0";
    exc_handler_fn old = exc_set_handler(count_undef);
    uint64_t sre = read_sysreg(S3_0_C12_C12_5); /* ICC_SRE_EL1 */
    if (!undefs && !(sre & 1)) {
        write_sysreg(S3_0_C12_C12_5, sre | 1);
        isb();
        sre = read_sysreg(S3_0_C12_C12_5);
    }
    (void)read_sysreg(S3_0_C4_C6_0); /* ICC_PMR_EL1 */
    exc_set_handler(old);
    if (undefs)
        return "ICC register access UNDEFINED";
    return (sre & 1) ? NULL : "ICC_SRE_EL1.SRE stays 0";
}

static const struct {
    const char *name;
    void (*run)(uint64_t n);
} benches[] = {
    { "loop", loop_empty },
    { "hvc", loop_hvc },
    { "mmio_write", loop_mmio_write },
    { "mmio_read", loop_mmio_read },
    { "sysreg_cntv_ctl", loop_cntv_ctl },
    { "sysreg_icc_pmr", loop_icc_pmr }, /* last: skipped without ICC system registers */
};

int main(uint64_t dtb)
{
    (void)dtb;
    uint64_t freq = read_sysreg(cntfrq_el0);
    unsigned count = sizeof(benches) / sizeof(benches[0]);

    ibrd = mmio_read32(PL011_IBRD);
    const char *why = icc_sysregs_missing();
    if (why) {
        printf("BENCH skip name=sysreg_icc_pmr reason=\"%s\"\n", why);
        count--;
    }
    for (int rep = 0; rep < REPEATS; rep++) {
        for (unsigned i = 0; i < count; i++) {
            uint64_t t0 = counter();
            benches[i].run(N);
            uint64_t t1 = counter();
            printf("BENCH name=%s iters=%u ticks=%lu freq=%lu\n", benches[i].name, (unsigned)N, t1 - t0, freq);
        }
    }
    printf("BENCH done\n");
    return 0;
}
