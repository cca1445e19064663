/* smp.c - secondary CPUs (PSCI CPU_ON/CPU_OFF), per-CPU data, spinlocks, atomics, barriers, locked printf. */
#include "rt.h"

/* CPU_ON's context_id for CPU id: not the MPIDR (Aff0 equals id here), so a PSCI that passed x1 for x3 fails */
#define RT_CPU_CONTEXT(id) (0xc0de0000UL + (id))

#define LOCK_TIMEOUT_MS 10000
#define STXR_TRIES 10000000u /* store-exclusive failures in a row before calling it broken */

struct cpu_data cpu_data[RT_MAX_CPUS];

__attribute__((noreturn)) static void fail(const char *what, const void *where)
{
    printf("FAIL %s: cpu %u at %p\n", what, smp_cpu_id(), where);
    guest_exit(RT_EXIT_TIMEOUT);
}

/* ---- starting and stopping CPUs ---- */

int32_t smp_start_cpu(uint64_t mpidr, smp_fn fn, void *arg)
{
    unsigned id = mpidr & 0xff;

    if (id >= RT_MAX_CPUS || (mpidr & MPIDR_AFF_MASK & ~0xffUL))
        return PSCI_INVALID_PARAMETERS;
    this_cpu()->state = CPU_RUNNING; /* the caller runs, whether it was started or booted */
    struct cpu_data *c = &cpu_data[id];
    if (c->state == CPU_STARTING || c->state == CPU_RUNNING)
        return PSCI_ALREADY_ON; /* do not touch what it is running */
    c->fn = fn;
    c->arg = arg;
    c->state = CPU_STARTING;
    dsb(sy); /* visible to the new CPU once its MMU is on (or from memory if the MMU stays off) */
    int32_t r = psci_cpu_on(mpidr & MPIDR_AFF_MASK, (uintptr_t)_start_secondary, RT_CPU_CONTEXT(id));
    if (r != 0)
        c->state = CPU_OFF;
    return r;
}

int smp_find_cpus(uint64_t dtb, uint64_t *mpidrs, int max, int *from_dtb)
{
    int n = fdt_cpus(fdt_find(dtb), mpidrs, max);

    *from_dtb = n > 0;
    if (n > 0)
        return n < max ? n : max;
    for (n = 0; n < max && psci_affinity_info((uint64_t)n, 0) >= 0; n++)
        mpidrs[n] = (uint64_t)n;
    return n;
}

/* From start.S on a new CPU's own stack. Nothing the boot CPU wrote with its MMU (and caches) on is
   read before this CPU's MMU is on too. */
__attribute__((noreturn)) void rt_secondary_main(uint64_t context);
void rt_secondary_main(uint64_t context)
{
    mmu_enable_secondary();

    struct cpu_data *c = this_cpu();
    c->id = smp_cpu_id();
    c->mpidr = read_sysreg(mpidr_el1) & MPIDR_AFF_MASK;
    c->gicr = 0;
    c->wake_ready = 0;
    if (context != RT_CPU_CONTEXT(c->id)) /* CPU_ON's context_id arrives in x0 (DEN0022 5.6.2) */
        test_fail("cpu %u: started with context 0x%lx, want 0x%lx", c->id, (unsigned long)context,
                  (unsigned long)RT_CPU_CONTEXT(c->id));
    dsb(sy);
    c->state = CPU_RUNNING;
    dsb(sy);

    smp_fn fn = c->fn;
    c->fn = 0; /* once: a CPU_ON that did not come through smp_start_cpu has nothing to run */
    if (fn)
        fn(c->arg);
    else
        cpu_printf("cpu %u: started without a function (a direct CPU_ON?)\n", c->id);

    irq_disable();
    c->state = CPU_STOPPING;
    dsb(sy);
    int32_t r = psci_cpu_off();
    cpu_printf("cpu %u: CPU_OFF returned %d\n", c->id, r);
    for (;;)
        wfi();
}

/* ---- spinlock ---- */

int spin_trylock(spinlock_t *l)
{
    uint32_t old, failed;

    __asm__ volatile("   ldaxr   %w0, [%2]\n"
                     "   cbnz    %w0, 1f\n"
                     "   stxr    %w1, %w3, [%2]\n"
                     "   b       2f\n"
                     "1: clrex\n"
                     "   mov     %w1, #1\n"
                     "2:\n"
                     : "=&r"(old), "=&r"(failed)
                     : "r"(&l->owner), "r"(smp_cpu_id() + 1)
                     : "memory");
    return !failed;
}

void spin_lock(spinlock_t *l)
{
    struct deadline d;

    deadline_set(&d, LOCK_TIMEOUT_MS);
    for (unsigned n = 1;; n++) {
        if (l->owner == 0 && spin_trylock(l))
            return;
        cpu_relax();
        if (!(n & 0xff) && deadline_passed(&d)) {
            printf("FAIL spinlock: cpu %u waited %u ms for %p (owner cpu %d)\n", smp_cpu_id(), LOCK_TIMEOUT_MS,
                   (void *)l, (int)l->owner - 1);
            guest_exit(RT_EXIT_TIMEOUT);
        }
    }
}

void spin_unlock(spinlock_t *l)
{
    __asm__ volatile("stlr wzr, [%0]" ::"r"(&l->owner) : "memory");
}

/* ---- atomics ---- */

uint32_t atomic_add32(volatile uint32_t *p, uint32_t v)
{
    for (uint32_t tries = 0; tries < STXR_TRIES; tries++) {
        uint32_t val, failed;
        __asm__ volatile("ldaxr   %w0, [%2]\n"
                         "add     %w0, %w0, %w3\n"
                         "stlxr   %w1, %w0, [%2]\n"
                         : "=&r"(val), "=&r"(failed)
                         : "r"(p), "r"(v)
                         : "memory");
        if (!failed)
            return val;
    }
    fail("atomic_add32: STLXR keeps failing", (const void *)p);
}

uint64_t atomic_add64(volatile uint64_t *p, uint64_t v)
{
    for (uint32_t tries = 0; tries < STXR_TRIES; tries++) {
        uint64_t val;
        uint32_t failed;
        __asm__ volatile("ldaxr   %0, [%2]\n"
                         "add     %0, %0, %3\n"
                         "stlxr   %w1, %0, [%2]\n"
                         : "=&r"(val), "=&r"(failed)
                         : "r"(p), "r"(v)
                         : "memory");
        if (!failed)
            return val;
    }
    fail("atomic_add64: STLXR keeps failing", (const void *)p);
}

/* ---- barrier ---- */

int smp_barrier_wait(struct smp_barrier *b, unsigned n, uint64_t ms)
{
    uint32_t gen = b->generation;

    dmb(ish); /* read the generation before arriving */
    if (atomic_add32(&b->count, 1) == n) {
        b->count = 0;
        dmb(ish); /* the reset before the release */
        b->generation = gen + 1;
        dsb(ish);
        return 0;
    }
    return POLL_UNTIL(b->generation != gen, ms) ? 0 : -1;
}

/* ---- printing ---- */

static spinlock_t print_lock;

uint64_t cpu_print_begin(void)
{
    uint64_t daif = irq_save();

    spin_lock(&print_lock);
    return daif;
}

void cpu_print_end(uint64_t flags)
{
    spin_unlock(&print_lock);
    irq_restore(flags);
}

int cpu_printf(const char *fmt, ...)
{
    va_list ap;
    uint64_t flags = cpu_print_begin();

    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    cpu_print_end(flags);
    return n;
}
