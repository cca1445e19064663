/* bench_exits.c - exit-latency benchmark: N of each trapping operation, timed with CNTVCT_EL0; the same ELF
   runs on vmmpy and on QEMU -M virt (TCG). */
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

/* w0 is rebuilt every time: the call returns its result there; SMCCC 1.0 may change x0..x17 */
#define SMCCC_CLOBBERS                                                                                             \
    "cc", "memory", "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", \
        "x15", "x16", "x17"
#define LOOP_HVC(fn_hi, fn_lo)                            \
    __asm__ volatile("1: movz w0, #" #fn_hi ", lsl #16\n" \
                     "   movk w0, #" #fn_lo "\n"          \
                     "   hvc #0\n"                        \
                     "   subs %0, %0, #1\n"               \
                     "   b.ne 1b"                         \
                     : "+r"(n)                            \
                     :                                    \
                     : SMCCC_CLOBBERS)

static void loop_hvc(uint64_t n)
{
    LOOP_HVC(0x8400, 0x0000); /* PSCI_VERSION */
}

/* SMCCC function IDs nobody implements (DEN0028: fast call, OEN 6 "standard hypervisor service", function
   0xff00), as SMC32 and SMC64 calls: the answer is NOT_SUPPORTED (-1) on every VMM */
static void loop_hvc_unknown32(uint64_t n)
{
    LOOP_HVC(0x8600, 0xff00);
}

static void loop_hvc_unknown64(uint64_t n)
{
    LOOP_HVC(0xc600, 0xff00);
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

static void loop_cntvct(uint64_t n)
{
    uint64_t v;
    __asm__ volatile("1: mrs %1, cntvct_el0\n subs %0, %0, #1\n b.ne 1b" : "+r"(n), "=&r"(v)::"cc");
}

/* One 32-bit load or store of an address in a loop (GIC distributor and redistributor registers). */
static uintptr_t mmio_addr;
static uint32_t mmio_value;

static void loop_ldr(uint64_t n)
{
    uint32_t v;
    __asm__ volatile("1: ldr %w1, [%2]\n subs %0, %0, #1\n b.ne 1b"
                     : "+r"(n), "=&r"(v)
                     : "r"(mmio_addr)
                     : "cc", "memory");
}

static void loop_str(uint64_t n)
{
    __asm__ volatile("1: str %w1, [%2]\n subs %0, %0, #1\n b.ne 1b"
                     : "+r"(n)
                     : "r"(mmio_value), "r"(mmio_addr)
                     : "cc", "memory");
}

static void loop_gicd_typer(uint64_t n)
{
    mmio_addr = GICD_BASE + GICD_TYPER;
    loop_ldr(n);
}

static void loop_gicd_isenabler(uint64_t n)
{
    mmio_addr = GICD_BASE + GICD_ISENABLER + 4; /* SPIs 32..63 (ISENABLER0 is the redistributor's) */
    loop_ldr(n);
}

/* GICD_IPRIORITYR<8> (SPIs 32..35) written with what it holds */
static void loop_gicd_ipriorityr_write(uint64_t n)
{
    mmio_addr = GICD_BASE + GICD_IPRIORITYR + 32;
    mmio_value = mmio_read32(mmio_addr);
    loop_str(n);
}

static void loop_gicr_typer(uint64_t n)
{
    mmio_addr = GICR_BASE + GICR_TYPER; /* CPU 0's frame: the first */
    loop_ldr(n);
}

static void loop_gicr_isenabler0(uint64_t n)
{
    mmio_addr = GICR_BASE + GICR_SGI_OFFSET + GICD_ISENABLER;
    loop_ldr(n);
}

static void loop_icc_pmr(uint64_t n)
{
    uint64_t v;
    __asm__ volatile("1: mrs %1, S3_0_C4_C6_0\n subs %0, %0, #1\n b.ne 1b" : "+r"(n), "=&r"(v)::"cc");
}

/* ICC_PMR_EL1 written with what it holds (IRQs stay masked throughout) */
static void loop_icc_pmr_write(uint64_t n)
{
    uint64_t v = read_sysreg(S3_0_C4_C6_0);
    __asm__ volatile("1: msr S3_0_C4_C6_0, %1\n subs %0, %0, #1\n b.ne 1b" : "+r"(n) : "r"(v) : "cc", "memory");
}

/* ICC_EOIR1_EL1 with the spurious INTID 1023: ignored by the GIC (IHI0069 §12.2.10) */
static void loop_icc_eoir1_spurious(uint64_t n)
{
    uint64_t v = GIC_SPURIOUS;
    __asm__ volatile("1: msr S3_0_C12_C12_1, %1\n subs %0, %0, #1\n b.ne 1b" : "+r"(n) : "r"(v) : "cc", "memory");
}

/* SVC at EL1 and back (ERET), through the runtime's vectors and handler: a system call's round trip. Not an
   exit on any VMM (the guest's own exception), but a per-exception cost an emulator may add (issue 14). */
static int svc_return(struct exc_frame *f)
{
    return f->vector == VEC_EL1_SYNC && ESR_EC(f->esr) == EC_SVC64; /* ELR is already past the SVC */
}

static void loop_svc(uint64_t n)
{
    exc_handler_fn old = exc_set_handler(svc_return);
    __asm__ volatile("1: svc #0\n subs %0, %0, #1\n b.ne 1b" : "+r"(n)::"cc", "memory");
    exc_set_handler(old);
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
    int icc; /* needs the ICC system registers: skipped without them */
} benches[] = {
    { "loop", loop_empty, 0 },
    { "hvc", loop_hvc, 0 },
    { "hvc_unknown32", loop_hvc_unknown32, 0 },
    { "hvc_unknown64", loop_hvc_unknown64, 0 },
    { "mmio_write", loop_mmio_write, 0 },
    { "mmio_read", loop_mmio_read, 0 },
    { "gicd_typer", loop_gicd_typer, 0 },
    { "gicd_isenabler", loop_gicd_isenabler, 0 },
    { "gicd_ipriorityr_write", loop_gicd_ipriorityr_write, 0 },
    { "gicr_typer", loop_gicr_typer, 0 },
    { "gicr_isenabler0", loop_gicr_isenabler0, 0 },
    { "sysreg_cntv_ctl", loop_cntv_ctl, 0 },
    { "sysreg_cntvct", loop_cntvct, 0 },
    { "sysreg_icc_pmr", loop_icc_pmr, 1 },
    { "sysreg_icc_pmr_write", loop_icc_pmr_write, 1 },
    { "sysreg_icc_eoir1_spurious", loop_icc_eoir1_spurious, 1 },
    { "svc", loop_svc, 0 },
};

int main(uint64_t dtb)
{
    (void)dtb;
    uint64_t freq = read_sysreg(cntfrq_el0);
    unsigned count = sizeof(benches) / sizeof(benches[0]);

    ibrd = mmio_read32(PL011_IBRD);
    const char *why = icc_sysregs_missing();
    for (unsigned i = 0; why && i < count; i++)
        if (benches[i].icc)
            printf("BENCH skip name=%s reason=\"%s\"\n", benches[i].name, why);
    for (int rep = 0; rep < REPEATS; rep++) {
        for (unsigned i = 0; i < count; i++) {
            if (why && benches[i].icc)
                continue;
#ifdef ONLY /* for profiling one row: ONLY=k runs benches[k] alone (and the empty loop) */
            if (i && i != ONLY)
                continue;
#endif
            uint64_t t0 = counter();
            benches[i].run(N);
            uint64_t t1 = counter();
            printf("BENCH name=%s iters=%u ticks=%lu freq=%lu\n", benches[i].name, (unsigned)N, t1 - t0, freq);
        }
    }
    printf("BENCH done\n");
    return 0;
}
