/* badmmio.c - accesses nobody answers: an empty device-window address, then an address above RAM. */
#include "rt.h"

static volatile int aborts;
static uint64_t last_esr;

static int on_exception(struct frame *f, uint64_t esr, uint64_t far)
{
    (void)far;
    if (ESR_EC(esr) == 0x25 && (esr & 0x3f) == 0x10) { /* sync external abort, same EL */
        aborts++;
        last_esr = esr;
        f->elr += 4;
        return 1;
    }
    return 0;
}

int main(uint64_t dtb)
{
    (void)dtb;
    set_exception_handler(on_exception);
    volatile uint32_t *hole = (volatile uint32_t *)0x0C000000UL;
    *hole = 0x1234;
    printf_("unmapped read 0x%x\n", *hole);
    volatile uint32_t *above = (volatile uint32_t *)0x100000000UL;
    uint32_t v = *above;
    (void)v;
    *above = 1;
    if (aborts == 2) {
        printf_("external abort ok esr=0x%lx\n", last_esr);
        puts_("ALL PASS\n");
        return 0;
    }
    printf_("FAIL expected 2 external aborts, got %d\n", aborts);
    return 1;
}
