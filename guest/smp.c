/* smp.c - PSCI CPU_ON of every CPU; all of them increment a counter under a spinlock and an atomic counter;
   the order in which they got the lock is printed (so identical output across runs means identical
   interleaving); AFFINITY_INFO ON/OFF, CPU_OFF, restarting a CPU, and CPU_ON's ALREADY_ON and
   INVALID_PARAMETERS errors. */
#include "rt.h"

#ifndef ITERS
#define ITERS 2000 /* lock acquisitions per CPU */
#endif
#define OUTSIDE_SPINS 100
#define ORDER_SHOWN 64

static unsigned ncpus;
static uint64_t mpidrs[RT_MAX_CPUS];
static struct smp_barrier start_line;
static volatile uint32_t online, finished, release, restarted, barrier_late, mmu_off;

/* under `lock` */
static spinlock_t lock;
static volatile uint64_t counter;          /* a plain read-modify-write: exact only with mutual exclusion */
static uint8_t order[RT_MAX_CPUS * ITERS]; /* who held the lock, in order */
static volatile uint32_t norder;

static volatile uint64_t atomic_total; /* atomic_add64 only, no lock */

/* With LSE (cpu model max): a second lock taken with SWPA (test-and-set) around a plain increment, whose
   count is exact only if SWP is atomic across vCPUs (Unicorn made it a load and a store: parallel.patch) */
static int lse;
static volatile uint32_t swp_lock_word;
static volatile uint64_t swp_counter;

/* Also with LSE: every CPU exchanges (SWP) SWP_ITERS values of its own into one word and sums what it gets back.
   If each exchange is atomic, what was received plus what is left equals what was written; a load and a store
   that interleave with another CPU's receive one value twice and lose another. */
#define SWP_ITERS 200000
static struct smp_barrier swp_line; /* all start exchanging together */
static volatile uint64_t swp_word;
static volatile uint64_t swp_received[RT_MAX_CPUS];

static void swp_exchanges(void)
{
    unsigned me = smp_cpu_id() % RT_MAX_CPUS;
    uint64_t sum = 0;

    if (smp_barrier_wait(&swp_line, ncpus, 5000))
        atomic_add32(&barrier_late, 1);
    for (uint64_t i = 1; i <= SWP_ITERS; i++) {
        uint64_t v = i << 8 | (me + 1), old;
        __asm__ volatile(".arch_extension lse\n swp %1, %0, [%2]" : "=&r"(old) : "r"(v), "r"(&swp_word) : "memory");
        sum += old;
    }
    swp_received[me] = sum;
}

static void swp_locked_increment(void)
{
    uint32_t one = 1, old;

    do {
        __asm__ volatile(".arch_extension lse\n swpa %w1, %w0, [%2]" /* stores %w1, loads the old value */
                         : "=&r"(old)
                         : "r"(one), "r"(&swp_lock_word)
                         : "memory");
    } while (old);
    swp_counter++;
    __asm__ volatile("stlr wzr, [%0]" : : "r"(&swp_lock_word) : "memory");
}

static void work(void)
{
    uint8_t me = (uint8_t)smp_cpu_id();

    for (unsigned i = 0; i < ITERS; i++) {
        spin_lock(&lock);
        counter++;
        order[norder++] = me;
        spin_unlock(&lock);
        atomic_add64(&atomic_total, 1);
        if (lse)
            swp_locked_increment();
        for (volatile unsigned k = 0; k < OUTSIDE_SPINS; k++) /* time outside the lock: let others in */
            ;
    }
    if (lse)
        swp_exchanges();
}

static void hello(void)
{
    uint64_t sctlr = read_sysreg(sctlr_el1);

    if (!(sctlr & 1))
        atomic_add32(&mmu_off, 1);
    cpu_printf("cpu %u online: mpidr 0x%lx, MMU %s\n", smp_cpu_id(), read_sysreg(mpidr_el1),
               (sctlr & 1) ? "on" : "off");
}

static void secondary(void *arg)
{
    (void)arg;
    hello();
    atomic_add32(&online, 1);
    if (smp_barrier_wait(&start_line, ncpus, 5000))
        atomic_add32(&barrier_late, 1);
    work();
    atomic_add32(&finished, 1);
    if (!POLL_UNTIL(release, 30000))
        cpu_printf("cpu %u: not released within 30 s\n", smp_cpu_id());
    /* returning makes the runtime call PSCI CPU_OFF */
}

static void restart(void *arg)
{
    (void)arg;
    cpu_printf("cpu %u restarted\n", smp_cpu_id());
    atomic_add32(&restarted, 1);
}

static int all_affinity(int32_t want, unsigned from)
{
    for (unsigned c = from; c < ncpus; c++)
        if (psci_affinity_info(mpidrs[c], 0) != want)
            return 0;
    return 1;
}

static void check_affinity(int32_t want, unsigned from, uint64_t ms, const char *when)
{
    if (POLL_UNTIL(all_affinity(want, from), ms))
        return;
    for (unsigned c = from; c < ncpus; c++) {
        int32_t r = psci_affinity_info(mpidrs[c], 0);
        test_check(r == want, "AFFINITY_INFO(cpu %u) %s is %d, want %d", c, when, r, want);
    }
}

static void print_order(void)
{
    unsigned handoffs = 0, n = norder < sizeof(order) ? norder : sizeof(order);
    uint32_t hash = 2166136261u; /* FNV-1a over the whole order */

    printf("smp: lock order (first %u of %u):", ORDER_SHOWN, n);
    for (unsigned i = 0; i < n; i++) {
        if (i < ORDER_SHOWN)
            printf(" %u", order[i]);
        handoffs += i && order[i] != order[i - 1];
        hash = (hash ^ order[i]) * 16777619u;
    }
    printf("\nsmp: lock handoffs %u, order hash 0x%08x\n", handoffs, hash);
}

int main(uint64_t dtb)
{
    test_begin("smp");
    irq_disable();
    if (!test_check(mmu_enable(NULL) == 0, "mmu_enable failed"))
        return test_end();

    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);
    printf("smp: %d cpus (%s), %u lock acquisitions each\n", n, from_dtb ? "DTB" : "PSCI AFFINITY_INFO", ITERS);
    if (!test_check(n >= 1, "no CPUs found"))
        return test_end();
    ncpus = (unsigned)n;
    lse = ((read_sysreg(id_aa64isar0_el1) >> 20) & 0xf) >= 2;

    test_check(psci_affinity_info(read_sysreg(mpidr_el1) & MPIDR_AFF_MASK, 0) == PSCI_AFF_ON,
               "AFFINITY_INFO(self) is not ON");
    check_affinity(PSCI_AFF_OFF, 1, 0, "before CPU_ON");
    if (ncpus < RT_MAX_CPUS) { /* Aff0 = ncpus is no CPU */
        int32_t r = psci_cpu_on(ncpus, (uintptr_t)_start_secondary, ncpus);
        test_check(r == PSCI_INVALID_PARAMETERS, "CPU_ON(0x%x) of a CPU that does not exist: %d, want %d", ncpus, r,
                   PSCI_INVALID_PARAMETERS);
    }

    for (unsigned c = 1; c < ncpus; c++) {
        int32_t r = smp_start_cpu(mpidrs[c], secondary, 0);
        test_check(r == 0, "CPU_ON(0x%lx): %d", mpidrs[c], r);
    }
    hello();
    if (!test_check(POLL_UNTIL(online == ncpus - 1, 5000), "only %u of %u secondaries came online", online, ncpus - 1))
        return test_end();
    check_affinity(PSCI_AFF_ON, 0, 0, "while running");
    if (ncpus > 1) {
        int32_t r = psci_cpu_on(mpidrs[1], (uintptr_t)_start_secondary, 1);
        test_check(r == PSCI_ALREADY_ON, "CPU_ON of running cpu 1: %d, want %d", r, PSCI_ALREADY_ON);
    }
    int32_t r = psci_cpu_on(mpidrs[0], (uintptr_t)_start_secondary, 0);
    test_check(r == PSCI_ALREADY_ON, "CPU_ON of the calling cpu: %d, want %d", r, PSCI_ALREADY_ON);

    if (smp_barrier_wait(&start_line, ncpus, 5000))
        atomic_add32(&barrier_late, 1);
    work();
    test_check(POLL_UNTIL(finished == ncpus - 1, 30000), "only %u of %u secondaries finished", finished, ncpus - 1);
    check_affinity(PSCI_AFF_ON, 0, 0, "after the work");

    release = 1;
    check_affinity(PSCI_AFF_OFF, 1, 5000, "after CPU_OFF");
    printf("smp: secondaries off\n");

    if (ncpus > 1) {
        test_check(smp_start_cpu(mpidrs[1], restart, 0) == 0, "CPU_ON of cpu 1 again failed");
        test_check(POLL_UNTIL(restarted == 1, 5000), "cpu 1 did not restart");
        check_affinity(PSCI_AFF_OFF, 1, 5000, "after the restart");
    }

    print_order();
    uint64_t want = (uint64_t)ncpus * ITERS;
    printf("smp: counter %lu (expected %lu), atomic %lu\n", counter, want, atomic_total);
    if (lse) {
        uint64_t written = 0, received = swp_word;
        for (unsigned c = 0; c < ncpus; c++) {
            received += swp_received[c];
            for (uint64_t i = 1; i <= SWP_ITERS; i++)
                written += i << 8 | (c + 1);
        }
        printf("smp: swp lock counter %lu, swp exchanges %s\n", swp_counter, received == written ? "exact" : "LOST");
        test_check(swp_counter == want, "counter under the SWP lock is %lu, want %lu", swp_counter, want);
        test_check(received == written, "SWP exchanges: received + left 0x%lx, written 0x%lx", received, written);
    }
    test_check(counter == want, "counter under the lock is %lu, want %lu", counter, want);
    test_check(norder == want, "%u lock acquisitions logged, want %lu", norder, want);
    test_check(atomic_total == want, "atomic counter is %lu, want %lu", atomic_total, want);
    test_check(!barrier_late, "%u CPUs timed out at the start barrier", barrier_late);
    test_check(!mmu_off, "%u CPUs ran with the MMU off", mmu_off);
    return test_end();
}
