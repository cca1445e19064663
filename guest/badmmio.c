/* badmmio.c - accesses nobody answers: a hole in the device window, then an address above RAM (MMU off). */
#include "rt.h"

#define HOLE 0x0C000000UL /* device window, no device (QEMU virt: the empty platform bus) */
#define ABOVE_RAM 0x100000000UL
#define DFSC_SYNC_EXTERNAL 0x10

static volatile int expect_external, aborts;
static volatile uint64_t abort_esr, abort_far;
static int failures;

static int on_exception(struct exc_frame *f)
{
    if (f->vector != VEC_EL1_SYNC || ESR_EC(f->esr) != EC_DABT_CUR)
        return 0;
    aborts++;
    abort_esr = f->esr;
    abort_far = f->far;
    if (expect_external && ESR_DFSC(f->esr) == DFSC_SYNC_EXTERNAL)
        printf("external abort ok esr=0x%lx\n", f->esr);
    f->elr += 4; /* skip the access: read32/write32 are one instruction each */
    return 1;
}

static uint32_t read32(uint64_t addr)
{
    uint32_t v = 0xdeadbeef; /* left as it is if the load aborts */
    __asm__ volatile("ldr %w0, [%1]" : "+r"(v) : "r"(addr) : "memory");
    return v;
}

static void write32(uint64_t addr, uint32_t v)
{
    __asm__ volatile("str %w0, [%1]" ::"r"(v), "r"(addr) : "memory");
}

/* an access above RAM must be a synchronous external abort with the right direction and address */
static void check_abort(const char *what, int before, int is_write)
{
    int ok = aborts == before + 1 && ESR_DFSC(abort_esr) == DFSC_SYNC_EXTERNAL && !!(abort_esr & ESR_WNR) == is_write &&
             ((abort_esr & ESR_FNV) || abort_far == ABOVE_RAM);
    if (ok)
        return;
    printf("FAIL %s above RAM: %d abort(s), last esr=0x%lx far=0x%lx; want DFSC 0x10, WnR=%d, far=0x%lx\n", what,
           aborts - before, abort_esr, abort_far, is_write, ABOVE_RAM);
    failures++;
}

int main(uint64_t dtb)
{
    (void)dtb;
    exc_set_handler(on_exception);

    /* the hole: RAZ/WI on vmmpy; whatever happens here is reported, not judged */
    int before = aborts;
    write32(HOLE, 0x1234);
    if (aborts != before)
        printf("unmapped write aborted esr=0x%lx far=0x%lx\n", abort_esr, abort_far);
    before = aborts;
    uint32_t v = read32(HOLE);
    if (aborts != before)
        printf("unmapped read aborted esr=0x%lx far=0x%lx\n", abort_esr, abort_far);
    else
        printf("unmapped read 0x%x\n", v);

    expect_external = 1;
    before = aborts;
    (void)read32(ABOVE_RAM);
    check_abort("read", before, 0);
    before = aborts;
    write32(ABOVE_RAM, 1);
    check_abort("write", before, 1);

    uart_puts(failures ? "SOME FAILED\n" : "ALL PASS\n");
    return failures ? 1 : 0;
}
