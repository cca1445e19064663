/* exceptions.c - synchronous exceptions at EL1 and EL0, the MMU, and UNDEF for unknown system registers. */
#include "rt.h"

static volatile uint64_t got_esr, got_far, got_elr, got_vector;
static volatile int el0_undefs;
static int failures;

static int on_exception(struct frame *f, uint64_t esr, uint64_t far)
{
    unsigned ec = ESR_EC(esr);
    got_esr = esr;
    got_far = far;
    got_elr = f->elr;
    got_vector = f->vector;
    if (f->vector == 8) { /* synchronous, from EL0 */
        if (ec == 0x15 && (esr & 0xffff) == 1) {
            f->x[0]++;
            return 1;
        }
        if (ec == 0x15 && (esr & 0xffff) == 2) { /* back to the kernel */
            f->elr = (uint64_t)user_return;
            f->spsr = 0x3c5;
            return 1;
        }
        if (ec == 0x00) {
            el0_undefs++;
            f->elr += 4;
            return 1;
        }
        return 0;
    }
    if (ec == 0x00 || ec == 0x3c || ec == 0x25)
        f->elr += 4; /* skip the faulting instruction */
    return ec == 0x15 || ec == 0x00 || ec == 0x3c || ec == 0x25;
}

static void expect(const char *name, int ok, uint64_t detail)
{
    if (ok) {
        printf_("PASS %s\n", name);
    } else {
        printf_("FAIL %s: esr=0x%lx far=0x%lx elr=0x%lx detail=0x%lx\n", name, got_esr, got_far, got_elr, detail);
        failures++;
    }
}

/* EL0 code: five "svc #1" (the kernel increments x0), an EL1-only register read, then "svc #2" */
__attribute__((section(".usertext"), naked)) static void user_entry(void)
{
    __asm__ volatile("mov x0, #0\n"
                     "1: svc #1\n"
                     "cmp x0, #5\n"
                     "b.lt 1b\n"
                     "mrs x1, sctlr_el1\n"
                     "svc #2\n"
                     "b .\n");
}

int main(uint64_t dtb)
{
    uint64_t after;
    (void)dtb;
    set_exception_handler(on_exception);

    __asm__ volatile("adr %0, 1f\n svc #0x123\n 1:" : "=r"(after)::"memory");
    expect("svc at EL1",
           ESR_EC(got_esr) == 0x15 && (got_esr & 0xffff) == 0x123 && got_elr == after && got_vector == 4 &&
               (got_esr & (1u << 25)),
           after);

    __asm__ volatile("adr %0, 1f\n 1: udf #0" : "=r"(after)::"memory");
    expect("udf at EL1", got_esr == 0x02000000 && got_elr == after, after);

    __asm__ volatile("adr %0, 1f\n 1: brk #7" : "=r"(after)::"memory");
    expect("brk at EL1", ESR_EC(got_esr) == 0x3c && (got_esr & 0xffff) == 7 && got_elr == after, after);

    mmu_enable();
    static volatile uint64_t cell;
    cell = 0x1122334455667788ull;
    expect("MMU on", (read_sysreg(sctlr_el1) & 1) && cell == 0x1122334455667788ull, read_sysreg(sctlr_el1));

    got_esr = 0;
    volatile uint64_t *unmapped = (volatile uint64_t *)0x80000000ull;
    (void)*unmapped;
    /* data abort, same EL, translation fault at level 1 */
    expect("data abort", ESR_EC(got_esr) == 0x25 && (got_esr & 0x3f) == 0x05 && got_far == 0x80000000ull,
           got_esr & 0x3f);

    uint64_t r = run_user(user_entry, 0x40600000ull - 16);
    expect("EL0 svc", r == 5, r);
    if (r == 5)
        puts_("EL0 svc ok\n");
    expect("EL0 reading an EL1 register is UNDEFINED", el0_undefs == 1, el0_undefs);

    got_esr = 0xffffffff;
    uint64_t v;
    __asm__ volatile("adr %1, 1f\n 1: mrs %0, S3_1_C15_C15_7" : "=r"(v), "=r"(after)::"memory");
    expect("unknown sysreg is UNDEFINED", got_esr == 0x02000000 && got_elr == after, after);
    if (got_esr == 0x02000000)
        puts_("unknown sysreg undef ok\n");

    puts_(failures ? "SOME FAILED\n" : "ALL PASS\n");
    return failures ? 1 : 0;
}
