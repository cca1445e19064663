/*
 * exceptions.c - synchronous exceptions at EL1 and from EL0, the MMU, UNDEF for an IMPDEF register, and the
 * generic timer's EL0 access controls (CNTKCTL_EL1).
 */
#include "rt.h"

#define UNMAPPED_VA 0x80001234UL /* the identity map stops at 2 GiB (1 GiB of RAM) */
#define EL0_SVC_CALLS 5
#define EL0_ABANDONED 0xdeadUL

/* EL0 code, linked into the EL0-accessible block (rt/link.ld, .user) */
__asm__(".pushsection .user.text, \"ax\"\n"
        ".globl user_svc_loop\n"
        "user_svc_loop:\n" /* x0 = how many "svc #1" to make; the kernel adds 1 to x0 each time */
        "    mov x19, x0\n"
        "    mov x0, #0\n"
        "1:  svc #1\n"
        "    subs x19, x19, #1\n"
        "    b.ne 1b\n"
        "    svc #2\n" /* back to the kernel with x0 */
        "    b .\n"
        ".globl user_read_sctlr\n"
        "user_read_sctlr:\n"
        "    mrs x0, sctlr_el1\n" /* EL1-only: UNDEFINED at EL0 */
        "    svc #2\n"
        "    b .\n"
        ".globl user_read_idreg\n"
        "user_read_idreg:\n"
        "    mrs x0, id_aa64pfr0_el1\n" /* EL1's; the soft backend corrects its GIC field */
        "    svc #2\n"
        "    b .\n"
        ".globl user_read_mdscr\n"
        "user_read_mdscr:\n"
        "    mrs x0, mdscr_el1\n" /* EL1's; the soft backend serves it under the OS lock */
        "    svc #2\n"
        "    b .\n"
        ".globl user_write_mdscr\n"
        "user_write_mdscr:\n"
        "    msr mdscr_el1, xzr\n"
        "    svc #2\n"
        "    b .\n"
        ".globl user_hvc\n"
        "user_hvc:\n"
        "    mov x0, #0x84000000\n" /* PSCI_VERSION: what a VMM would answer at EL1 */
        "    hvc #0\n"              /* UNDEFINED at EL0 (Arm ARM C6.2.114) */
        "    svc #2\n"
        "    b .\n"
        ".globl user_ret\n"
        "user_ret:\n" /* EL1 branches here: the block is PXN, so this must never run at EL1 */
        "    mov x0, #1\n"
        "    ret\n"
        /* the generic timer's registers, each read at EL0 into x0 */
        ".globl user_cntvct\n"
        "user_cntvct:\n"
        "    mrs x0, cntvct_el0\n"
        "    svc #2\n"
        ".globl user_cntpct\n"
        "user_cntpct:\n"
        "    mrs x0, cntpct_el0\n"
        "    svc #2\n"
        ".globl user_cntfrq\n"
        "user_cntfrq:\n"
        "    mrs x0, cntfrq_el0\n"
        "    svc #2\n"
        ".globl user_cntv_ctl\n"
        "user_cntv_ctl:\n"
        "    mrs x0, cntv_ctl_el0\n"
        "    svc #2\n"
        ".globl user_cntp_ctl\n"
        "user_cntp_ctl:\n"
        "    mrs x0, cntp_ctl_el0\n"
        "    svc #2\n"
        ".popsection\n");
extern char user_svc_loop[], user_read_sctlr[], user_hvc[], user_ret[];
extern char user_read_idreg[], user_read_mdscr[], user_write_mdscr[];
extern char user_cntvct[], user_cntpct[], user_cntfrq[], user_cntv_ctl[], user_cntp_ctl[];
static volatile uint64_t user_cell __attribute__((section(".user.data"))) = 0;

static uint8_t user_stack[4096] __attribute__((section(".user.bss"), aligned(16)));

/* the exceptions taken since the last clear(), except EL0's "svc #2" (return to the kernel) */
static volatile struct {
    int count;
    uint64_t esr, far, elr, spsr, vector;
} seen;
static int failures;

static int on_exception(struct exc_frame *f)
{
    unsigned ec = ESR_EC(f->esr), imm = f->esr & 0xffff;

    if (f->vector == VEC_EL0_SYNC && ec == EC_SVC64 && imm == 2) {
        el0_return(f, f->x[0]);
        return 1;
    }
    seen.count++;
    seen.esr = f->esr;
    seen.far = f->far;
    seen.elr = f->elr;
    seen.spsr = f->spsr;
    seen.vector = f->vector;

    if (f->vector == VEC_EL0_SYNC) {
        if (ec == EC_SVC64 && imm == 1)
            f->x[0]++;
        else if (ec == EC_UNKNOWN)
            f->elr += 4;
        else
            el0_return(f, EL0_ABANDONED);
        return 1;
    }
    if (f->vector != VEC_EL1_SYNC)
        return 0;
    switch (ec) {
    case EC_SVC64: /* ELR already points past the svc */
        return 1;
    case EC_IABT_CUR: /* only test_pxn branches (BLR) into non-executable code: back to its caller */
        f->elr = f->x[30];
        return 1;
    case EC_UNKNOWN:
    case EC_BRK64:
    case EC_DABT_CUR:
        f->elr += 4; /* skip the instruction */
        return 1;
    }
    return 0;
}

static void clear(void)
{
    seen.count = 0;
    seen.esr = seen.far = seen.elr = seen.spsr = seen.vector = 0;
}

static void pass(const char *name)
{
    printf("PASS %s\n", name);
}

__attribute__((format(printf, 2, 3))) static void fail(const char *name, const char *fmt, ...)
{
    va_list ap;

    printf("FAIL %s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    failures++;
}

/* exactly one exception, with this syndrome, return address and vector */
static int expect_exc(const char *name, uint64_t esr, uint64_t elr, uint64_t vector)
{
    if (seen.count == 1 && seen.esr == esr && seen.elr == elr && seen.vector == vector) {
        pass(name);
        return 1;
    }
    fail(name, "%d exception(s), last esr=0x%lx elr=0x%lx vector=%lu; want esr=0x%lx elr=0x%lx vector=%lu", seen.count,
         seen.esr, seen.elr, seen.vector, esr, elr, vector);
    return 0;
}

static void test_svc(void)
{
    uint64_t next;

    clear();
    __asm__ volatile("adr %0, 1f\n svc #0x123\n 1:" : "=r"(next)::"memory");
    expect_exc("svc at EL1", ESR_MAKE(EC_SVC64, 0x123), next, VEC_EL1_SYNC);
}

static void test_udf(void)
{
    uint64_t at;

    clear();
    __asm__ volatile("adr %0, 1f\n 1: udf #0" : "=r"(at)::"memory");
    expect_exc("udf at EL1", ESR_MAKE(EC_UNKNOWN, 0), at, VEC_EL1_SYNC);
}

static void test_brk(void)
{
    uint64_t at;

    clear();
    __asm__ volatile("adr %0, 1f\n 1: brk #7" : "=r"(at)::"memory");
    expect_exc("brk at EL1", ESR_MAKE(EC_BRK64, 7), at, VEC_EL1_SYNC);
}

static __attribute__((noinline)) uint64_t rotate(uint64_t v)
{
    return v << 8 | v >> 56;
}

/* PAR_EL1 after a stage 1 EL1 read translation of va */
static uint64_t translate(uint64_t va)
{
    __asm__ volatile("at s1e1r, %0\n isb" ::"r"(va) : "memory");
    return read_sysreg(par_el1);
}

static void test_mmu(void)
{
    static volatile uint64_t cell;
    struct mmu_config cfg = MMU_CONFIG_DEFAULT;

    cfg.el0_base = (uintptr_t)__user_start;
    cfg.el0_size = 2UL << 20;
    int rc = mmu_enable(&cfg);
    printf("MMU on\n");

    cell = 0x1122334455667788UL;
    uint64_t got = cell, sctlr = read_sysreg(sctlr_el1);
    uint64_t par = translate((uintptr_t)&cell), par_unmapped = translate(UNMAPPED_VA);
    int par_ok = !(par & 1) && (par & 0xfffffffff000UL) == ((uintptr_t)&cell & ~0xfffUL);

    if (rc == 0 && (sctlr & 1) && got == 0x1122334455667788UL && rotate(got) == 0x2233445566778811UL && par_ok &&
        (par_unmapped & 1))
        pass("MMU on");
    else
        fail("MMU on", "rc=%d sctlr=0x%lx cell=0x%lx par(&cell)=0x%lx par(0x%lx)=0x%lx", rc, sctlr, got, par,
             UNMAPPED_VA, par_unmapped);
}

static void test_data_abort(void)
{
    uint64_t at;
    uint32_t v;

    clear();
    __asm__ volatile("adr %0, 1f\n 1: ldr %w1, [%2]" : "=&r"(at), "=r"(v) : "r"(UNMAPPED_VA) : "memory");
    (void)v;
    uint64_t dfsc = ESR_DFSC(seen.esr);
    if (seen.count == 1 && ESR_EC(seen.esr) == EC_DABT_CUR && (dfsc & 0x3c) == 0x04 && !(seen.esr & ESR_WNR) &&
        seen.far == UNMAPPED_VA && seen.elr == at)
        pass("data abort");
    else
        fail("data abort",
             "%d exception(s), last esr=0x%lx far=0x%lx elr=0x%lx; want EC 0x25, translation fault read, "
             "far=0x%lx elr=0x%lx",
             seen.count, seen.esr, seen.far, seen.elr, UNMAPPED_VA, at);
}

/* BLR from EL1 into the EL0 block, which rt/mmu.c maps PXN (and writable): an instruction abort, permission
   fault at level 2 (a 2 MiB block), FAR and ELR the target (Arm ARM D8.4.x, execute-never; ESR IFSC 0b001110).
   The second branch follows a store to the same block, so the TLB entry may have been filled by a write. */
static void test_pxn(const char *name, int store_first)
{
    uint64_t ran = 0;

    clear();
    if (store_first)
        user_cell = 0x5a5a;
    __asm__ volatile("mov x0, #0\n blr %1\n mov %0, x0" : "=r"(ran) : "r"(user_ret) : "x0", "x30", "memory");
    if (!ran && seen.count == 1 && seen.vector == VEC_EL1_SYNC && seen.esr == ESR_MAKE(EC_IABT_CUR, 0x0e) &&
        seen.far == (uintptr_t)user_ret && seen.elr == (uintptr_t)user_ret)
        pass(name);
    else
        fail(name,
             "ran=%lu, %d exception(s), last esr=0x%lx far=0x%lx elr=0x%lx vector=%lu; want esr=0x%lx far=elr=0x%lx",
             ran, seen.count, seen.esr, seen.far, seen.elr, seen.vector, ESR_MAKE(EC_IABT_CUR, 0x0e),
             (uintptr_t)user_ret);
}

static void test_el0_svc(void)
{
    uintptr_t sp = (uintptr_t)user_stack + sizeof(user_stack);

    clear();
    uint64_t r = el0_call((uintptr_t)user_svc_loop, sp, EL0_SVC_CALLS);
    if (r == EL0_SVC_CALLS && seen.count == EL0_SVC_CALLS && seen.vector == VEC_EL0_SYNC &&
        seen.esr == ESR_MAKE(EC_SVC64, 1) && (seen.spsr & 0xf) == 0) {
        printf("EL0 svc ok\n");
        pass("EL0 svc");
    } else {
        fail("EL0 svc", "returned %lu after %d exception(s), last esr=0x%lx vector=%lu spsr=0x%lx; want %d svc #1", r,
             seen.count, seen.esr, seen.vector, seen.spsr, EL0_SVC_CALLS);
    }
}

static void test_el0_sysreg(void)
{
    uintptr_t sp = (uintptr_t)user_stack + sizeof(user_stack);

    clear();
    el0_call((uintptr_t)user_read_sctlr, sp, 0);
    /* vector 8 is VBAR_EL1 + 0x400: synchronous, from a lower EL using AArch64 */
    expect_exc("EL0 reading an EL1 register is UNDEFINED", ESR_MAKE(EC_UNKNOWN, 0), (uintptr_t)user_read_sctlr,
               VEC_EL0_SYNC);
}

/*
 * EL1 registers a VMM may serve itself (the soft backend corrects ID_AA64PFR0_EL1 and keeps MDSCR_EL1 under
 * the OS lock) are still EL1's: UNDEFINED at EL0 (Arm ARM D13.2.64, D13.3.x), except that with FEAT_IDST
 * (ID_AA64MMFR2_EL1.IDS = 1) an ID register read traps as EC 0x18 with the MRS's syndrome (ISS: op0 3,
 * CRm 4, read).
 */
static void test_el0_served_sysregs(void)
{
    uintptr_t sp = (uintptr_t)user_stack + sizeof(user_stack);
    int idst = (read_sysreg(S3_0_C0_C7_2) >> 36 & 0xf) != 0; /* ID_AA64MMFR2_EL1.IDS */
    uint64_t mdscr = read_sysreg(mdscr_el1);

    clear();
    el0_call((uintptr_t)user_read_idreg, sp, 0);
    expect_exc("EL0 reading ID_AA64PFR0_EL1 traps",
               idst ? ESR_MAKE(EC_SYSREG, 3u << 20 | 4u << 1 | 1) : ESR_MAKE(EC_UNKNOWN, 0), (uintptr_t)user_read_idreg,
               VEC_EL0_SYNC);
    clear();
    el0_call((uintptr_t)user_read_mdscr, sp, 0);
    expect_exc("EL0 reading MDSCR_EL1 is UNDEFINED", ESR_MAKE(EC_UNKNOWN, 0), (uintptr_t)user_read_mdscr, VEC_EL0_SYNC);
    write_sysreg(mdscr_el1, mdscr | 1u << 15); /* MDE: a write from EL0 that took effect would clear it */
    isb();
    clear();
    el0_call((uintptr_t)user_write_mdscr, sp, 0);
    if (expect_exc("EL0 writing MDSCR_EL1 is UNDEFINED", ESR_MAKE(EC_UNKNOWN, 0), (uintptr_t)user_write_mdscr,
                   VEC_EL0_SYNC) &&
        !(read_sysreg(mdscr_el1) & 1u << 15))
        fail("EL0 writing MDSCR_EL1 changes nothing", "MDSCR_EL1.MDE was cleared");
    write_sysreg(mdscr_el1, mdscr);
    isb();
}

static void test_el0_hvc(void)
{
    uintptr_t sp = (uintptr_t)user_stack + sizeof(user_stack);

    clear();
    el0_call((uintptr_t)user_hvc, sp, 0);
    expect_exc("EL0 HVC is UNDEFINED", ESR_MAKE(EC_UNKNOWN, 0), (uintptr_t)user_hvc + 4, VEC_EL0_SYNC);
}

/* CNTKCTL_EL1 bits (Arm ARM D13.8.x): EL0 access to the counters, the frequency and the timers */
#define KCTL_EL0PCTEN (1u << 0)
#define KCTL_EL0VCTEN (1u << 1)
#define KCTL_EL0VTEN (1u << 8)
#define KCTL_EL0PTEN (1u << 9)

/* an MRS trapped to EL1 (EC 0x18): Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn [13:10], Rt [9:5], CRm [4:1], read */
#define MRS_ISS(op0, op1, crn, crm, op2, rt)                                                         \
    ((uint64_t)(op0) << 20 | (uint64_t)(op2) << 17 | (uint64_t)(op1) << 14 | (uint64_t)(crn) << 10 | \
     (uint64_t)(rt) << 5 | (uint64_t)(crm) << 1 | 1)

static const struct el0_timer_reg {
    const char *trap_name, *read_name;
    char *code;
    uint32_t enable; /* the CNTKCTL_EL1 bits any of which lets EL0 read it */
    uint8_t crm, op2;
} el0_timer_regs[] = {
    { "EL0 CNTVCT_EL0 traps when CNTKCTL_EL1 denies it", "EL0 CNTVCT_EL0 reads when CNTKCTL_EL1 allows it", user_cntvct,
      KCTL_EL0VCTEN, 0, 2 },
    { "EL0 CNTPCT_EL0 traps when CNTKCTL_EL1 denies it", "EL0 CNTPCT_EL0 reads when CNTKCTL_EL1 allows it", user_cntpct,
      KCTL_EL0PCTEN, 0, 1 },
    { "EL0 CNTFRQ_EL0 traps when CNTKCTL_EL1 denies it", "EL0 CNTFRQ_EL0 reads when CNTKCTL_EL1 allows it", user_cntfrq,
      KCTL_EL0PCTEN | KCTL_EL0VCTEN, 0, 0 },
    { "EL0 CNTV_CTL_EL0 traps when CNTKCTL_EL1 denies it", "EL0 CNTV_CTL_EL0 reads when CNTKCTL_EL1 allows it",
      user_cntv_ctl, KCTL_EL0VTEN, 3, 1 },
    { "EL0 CNTP_CTL_EL0 traps when CNTKCTL_EL1 denies it", "EL0 CNTP_CTL_EL0 reads when CNTKCTL_EL1 allows it",
      user_cntp_ctl, KCTL_EL0PTEN, 2, 1 },
};

/* what the register reads at EL1 now */
static uint64_t el1_timer_read(const struct el0_timer_reg *r)
{
    if (r->code == user_cntvct)
        return read_sysreg(cntvct_el0);
    if (r->code == user_cntpct)
        return read_sysreg(cntpct_el0);
    if (r->code == user_cntfrq)
        return read_sysreg(cntfrq_el0);
    if (r->code == user_cntv_ctl)
        return read_sysreg(cntv_ctl_el0);
    return read_sysreg(cntp_ctl_el0);
}

/*
 * With its CNTKCTL_EL1 enable bits clear, an EL0 read of a generic timer register traps to EL1 as EC 0x18
 * (Arm ARM D13.11, CNTVCT_EL0 and the others' "Accessibility"; QEMU's gt_*_access); with them set it reads
 * what EL1 reads (a counter: a value between two EL1 reads around it).
 */
static void test_el0_timer_access(void)
{
    uintptr_t sp = (uintptr_t)user_stack + sizeof(user_stack);
    uint64_t saved = read_sysreg(cntkctl_el1);

    for (unsigned i = 0; i < sizeof(el0_timer_regs) / sizeof(el0_timer_regs[0]); i++) {
        const struct el0_timer_reg *r = &el0_timer_regs[i];

        write_sysreg(cntkctl_el1, saved & ~(uint64_t)r->enable);
        __asm__ volatile("isb" ::: "memory");
        clear();
        uint64_t got = el0_call((uintptr_t)r->code, sp, 0);
        if (expect_exc(r->trap_name, ESR_MAKE(EC_SYSREG, MRS_ISS(3, 3, 14, r->crm, r->op2, 0)), (uintptr_t)r->code,
                       VEC_EL0_SYNC) &&
            got != EL0_ABANDONED)
            fail(r->trap_name, "el0_call returned 0x%lx", got);

        write_sysreg(cntkctl_el1, saved | r->enable);
        __asm__ volatile("isb" ::: "memory");
        clear();
        uint64_t before = el1_timer_read(r);
        got = el0_call((uintptr_t)r->code, sp, 0);
        uint64_t after = el1_timer_read(r);
        int counter = r->crm == 0 && r->op2 != 0;
        if (seen.count == 0 && (counter ? before <= got && got <= after : got == before && got == after))
            pass(r->read_name);
        else
            fail(r->read_name, "%d exception(s) (esr=0x%lx), read 0x%lx; EL1 read 0x%lx before and 0x%lx after",
                 seen.count, seen.esr, got, before, after);
    }
    write_sysreg(cntkctl_el1, saved);
    __asm__ volatile("isb" ::: "memory");
}

static void test_impdef_sysreg(void)
{
    uint64_t at, v;

    clear();
    __asm__ volatile("adr %0, 1f\n 1: mrs %1, S3_1_C15_C15_7" : "=&r"(at), "=r"(v)::"memory");
    (void)v;
    if (expect_exc("unknown sysreg is UNDEFINED", ESR_MAKE(EC_UNKNOWN, 0), at, VEC_EL1_SYNC))
        printf("unknown sysreg undef ok\n");
}

int main(uint64_t dtb)
{
    (void)dtb;
    exc_set_handler(on_exception);

    test_svc();
    test_udf();
    test_brk();
    test_mmu();
    test_data_abort();
    test_pxn("EL1 fetch from a PXN page", 0);
    test_pxn("EL1 fetch from a PXN page just written", 1);
    test_el0_svc();
    test_el0_sysreg();
    test_el0_served_sysregs();
    test_el0_hvc();
    test_el0_timer_access();
    test_impdef_sysreg();

    uart_puts(failures ? "SOME FAILED\n" : "ALL PASS\n");
    return failures ? 1 : 0;
}
