/* exc.c - exception dispatch: the IRQ handler, semihosting fallback, the guest's handler, a report for the rest. */
#include "rt.h"

_Static_assert(sizeof(struct exc_frame) == 304, "vectors.S FRAME_SIZE");
_Static_assert(offsetof(struct exc_frame, sp_el0) == 248, "vectors.S F_SP_EL0");
_Static_assert(offsetof(struct exc_frame, elr) == 256, "vectors.S F_ELR");
_Static_assert(offsetof(struct exc_frame, esr) == 272, "vectors.S F_ESR");
_Static_assert(offsetof(struct exc_frame, vector) == 288, "vectors.S F_VECTOR");

#define INSN_HLT_SEMIHOST 0xd45e0000u /* hlt #0xf000 */
#define SPSR_EL1H_MASKED 0x3c5

static exc_handler_fn registered, irq_registered;

exc_handler_fn exc_set_handler(exc_handler_fn fn)
{
    exc_handler_fn old = registered;
    registered = fn;
    return old;
}

exc_handler_fn exc_set_irq_handler(exc_handler_fn fn)
{
    exc_handler_fn old = irq_registered;
    irq_registered = fn;
    return old;
}

__attribute__((weak)) int exc_handler(struct exc_frame *f)
{
    return registered ? registered(f) : 0;
}

const char *exc_vector_name(uint64_t vector)
{
    static const char *const names[16] = {
        "sync/EL1t", "irq/EL1t", "fiq/EL1t", "serror/EL1t", "sync/EL1h",   "irq/EL1h",   "fiq/EL1h",   "serror/EL1h",
        "sync/EL0",  "irq/EL0",  "fiq/EL0",  "serror/EL0",  "sync/EL0-32", "irq/EL0-32", "fiq/EL0-32", "serror/EL0-32",
    };
    return names[vector & 15];
}

void el0_return(struct exc_frame *f, uint64_t value)
{
    extern char el0_resume[];

    f->elr = (uintptr_t)el0_resume;
    f->spsr = SPSR_EL1H_MASKED;
    f->x[0] = value;
}

/* A semihosting call without a semihosting host is an UNDEFINED hlt: fail the call with -1. */
static int semihost_unavailable(struct exc_frame *f)
{
    if (f->vector != VEC_EL1_SYNC || ESR_EC(f->esr) != EC_UNKNOWN)
        return 0;
    if (*(volatile uint32_t *)f->elr != INSN_HLT_SEMIHOST)
        return 0;
    f->x[0] = (uint64_t)-1;
    f->elr += 4;
    return 1;
}

void rt_exception(struct exc_frame *f)
{
    static int reporting;

    if (VEC_KIND(f->vector) == 1 && irq_registered && irq_registered(f))
        return;
    if (semihost_unavailable(f) || exc_handler(f))
        return;
    if (reporting++) /* another unexpected exception while reporting one */
        psci_system_off();
    printf("UNEXPECTED EXCEPTION %s esr=0x%lx far=0x%lx elr=0x%lx spsr=0x%lx\n", exc_vector_name(f->vector), f->esr,
           f->far, f->elr, f->spsr);
    guest_exit(RT_EXIT_EXCEPTION);
}
