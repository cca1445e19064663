/* badmmio.c - accesses nobody answers: a hole in the device window, then an address above RAM (MMU off). */
#include "rt.h"

#define HOLE 0x0C000000UL /* device window, no device (QEMU virt: the empty platform bus) */
#define ABOVE_RAM 0x100000000UL
#define DFSC_SYNC_EXTERNAL 0x10

static volatile int expect_external, aborts;
static volatile uint64_t abort_esr, abort_far, abort_elr;
static int failures;

static int on_exception(struct exc_frame *f)
{
    if (f->vector != VEC_EL1_SYNC || ESR_EC(f->esr) != EC_DABT_CUR)
        return 0;
    aborts++;
    abort_esr = f->esr;
    abort_far = f->far;
    abort_elr = f->elr;
    if (expect_external && ESR_DFSC(f->esr) == DFSC_SYNC_EXTERNAL)
        printf("external abort ok esr=0x%lx\n", f->esr);
    f->elr += 4; /* skip the access: read32/write32 are one instruction each */
    return 1;
}

/* *at: the access instruction's address. Each is followed in its block by another instruction. */
static uint32_t read32(uint64_t addr, uint64_t *at)
{
    uint32_t v = 0xdeadbeef; /* left as it is if the load aborts */
    __asm__ volatile("adr %1, 1f\n1:\tldr %w0, [%2]\n\tnop" : "+r"(v), "=&r"(*at) : "r"(addr) : "memory");
    return v;
}

static void write32(uint64_t addr, uint32_t v, uint64_t *at)
{
    __asm__ volatile("adr %0, 1f\n1:\tstr %w1, [%2]\n\tnop" : "=&r"(*at) : "r"(v), "r"(addr) : "memory");
}

/*
 * An access above RAM must be a synchronous external abort with the right direction and address, taken at
 * the access: ELR is its address (a stop taken later in its block, as an engine's exit check could, is not).
 */
static void check_abort(const char *what, int before, int is_write, uint64_t at)
{
    int ok = aborts == before + 1 && ESR_DFSC(abort_esr) == DFSC_SYNC_EXTERNAL && !!(abort_esr & ESR_WNR) == is_write &&
             ((abort_esr & ESR_FNV) || abort_far == ABOVE_RAM) && abort_elr == at;
    if (ok)
        return;
    printf("FAIL %s above RAM: %d abort(s), last esr=0x%lx far=0x%lx elr=0x%lx; want DFSC 0x10, WnR=%d, far=0x%lx, "
           "elr=0x%lx\n",
           what, aborts - before, abort_esr, abort_far, abort_elr, is_write, ABOVE_RAM, at);
    failures++;
}

int main(uint64_t dtb)
{
    (void)dtb;
    exc_set_handler(on_exception);

    /* the hole: RAZ/WI on vmmpy; whatever happens here is reported, not judged */
    uint64_t at;
    int before = aborts;
    write32(HOLE, 0x1234, &at);
    if (aborts != before)
        printf("unmapped write aborted esr=0x%lx far=0x%lx\n", abort_esr, abort_far);
    before = aborts;
    uint32_t v = read32(HOLE, &at);
    if (aborts != before)
        printf("unmapped read aborted esr=0x%lx far=0x%lx\n", abort_esr, abort_far);
    else
        printf("unmapped read 0x%x\n", v);

    expect_external = 1;
    before = aborts;
    (void)read32(ABOVE_RAM, &at);
    check_abort("read", before, 0, at);
    before = aborts;
    write32(ABOVE_RAM, 1, &at);
    check_abort("write", before, 1, at);

    uart_puts(failures ? "SOME FAILED\n" : "ALL PASS\n");
    return failures ? 1 : 0;
}
