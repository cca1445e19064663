/* sgi.c - SGIs through ICC_SGI1R_EL1 with affinity routing: ping-pong between CPU 0 and CPU 1, one TargetList
   to every other CPU, IRM=1 (all but self), and an SGI to self. Needs at least 2 CPUs. */
#include "rt.h"

#define ROUNDS 256
#define SGI_PING 1 /* CPU 0 -> CPU 1 */
#define SGI_PONG 2 /* CPU 1 -> CPU 0, sent from the PING handler */
#define SGI_LIST 3 /* CPU 0 -> CPUs 1..n-1 in one TargetList */
#define SGI_ALL 4  /* CPU 0 -> all but self (IRM) */
#define SGI_SELF 5 /* CPU 0 -> CPU 0 */
#define SGI_STOP 6 /* wakes the secondaries once `stop` is set */
#define NR_SGI_USED 7

static unsigned ncpus;
static uint64_t mpidrs[RT_MAX_CPUS];
static volatile uint32_t got[RT_MAX_CPUS][NR_SGI_USED]; /* each row written by its own CPU only */
static volatile uint32_t misrouted, ready, stop;

/* the SGIs each CPU should get */
static int wanted(unsigned cpu, unsigned sgi)
{
    switch (sgi) {
    case SGI_PING:
        return cpu == 1;
    case SGI_PONG:
    case SGI_SELF:
        return cpu == 0;
    case SGI_LIST:
    case SGI_ALL:
    case SGI_STOP:
        return cpu != 0;
    }
    return 0;
}

static void on_sgi(unsigned intid, void *arg)
{
    unsigned me = smp_cpu_id();

    (void)arg;
    got[me][intid]++;
    if (!wanted(me, intid))
        atomic_add32(&misrouted, 1);
    else if (intid == SGI_PING)
        gic_send_sgi(SGI_PONG, mpidrs[0]);
}

static void enable_sgis(void)
{
    for (unsigned sgi = 1; sgi < NR_SGI_USED; sgi++)
        gic_enable(sgi); /* all of them, so a misrouted SGI is seen */
}

static void secondary(void *arg)
{
    (void)arg;
    if (gic_cpu_init()) {
        cpu_printf("cpu %u: GIC CPU interface setup failed\n", smp_cpu_id());
        return;
    }
    enable_sgis();
    atomic_add32(&ready, 1);
    if (!WFI_UNTIL(stop, 60000))
        cpu_printf("cpu %u: not stopped within 60 s\n", smp_cpu_id());
}

static int all_got(unsigned sgi)
{
    for (unsigned c = 0; c < ncpus; c++)
        if (got[c][sgi] < (uint32_t)wanted(c, sgi))
            return 0;
    return 1;
}

/* each CPU got `sgi` exactly if it should, once */
static void check_one_each(unsigned sgi, const char *what)
{
    test_check(POLL_UNTIL(all_got(sgi), 1000), "%s: not every CPU got SGI %u within 1 s", what, sgi);
    irq_enable();
    POLL_UNTIL(0, 20); /* nothing more may come */
    irq_disable();
    for (unsigned c = 0; c < ncpus; c++)
        test_check(got[c][sgi] == (uint32_t)wanted(c, sgi), "%s: cpu %u got SGI %u %u times, want %d", what, c, sgi,
                   got[c][sgi], wanted(c, sgi));
}

static void ping_pong(void)
{
    uint64_t t0 = timer_now();
    unsigned i;

    for (i = 0; i < ROUNDS; i++) {
        gic_send_sgi(SGI_PING, mpidrs[1]);
        if (!WFI_UNTIL(got[0][SGI_PONG] == i + 1, 1000)) {
            test_fail("round trip %u: no pong within 1 s (cpu 1 got %u pings)", i, got[1][SGI_PING]);
            break;
        }
    }
    uint64_t us = timer_ticks_to_us(timer_now() - t0);
    printf("sgi: %u round trips between cpu 0 and cpu 1 in %lu us (%lu us each)\n", i, us, i ? us / i : 0);
    test_check(got[1][SGI_PING] == ROUNDS && got[0][SGI_PONG] == ROUNDS, "pings %u, pongs %u, want %u each",
               got[1][SGI_PING], got[0][SGI_PONG], ROUNDS);
}

int main(uint64_t dtb)
{
    if (test_begin_gic("sgi"))
        return test_end();
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);
    printf("sgi: %d cpus (%s)\n", n, from_dtb ? "DTB" : "PSCI AFFINITY_INFO");
    if (!test_check(n >= 2, "needs at least 2 CPUs, found %d", n))
        return test_end();
    ncpus = (unsigned)n;

    for (unsigned sgi = 1; sgi < NR_SGI_USED; sgi++)
        gic_set_handler(sgi, on_sgi, 0);
    enable_sgis();
    for (unsigned c = 1; c < ncpus; c++) {
        int32_t r = smp_start_cpu(mpidrs[c], secondary, 0);
        test_check(r == 0, "CPU_ON 0x%lx: %d", mpidrs[c], r);
    }
    if (!test_check(POLL_UNTIL(ready == ncpus - 1, 5000), "only %u of %u secondaries ready", ready, ncpus - 1))
        return test_end();

    ping_pong();

    uint16_t list = 0;
    for (unsigned c = 1; c < ncpus; c++)
        list |= 1u << (mpidrs[c] & 0xf); /* all in Aff0 0..7 (fdt and smp_start_cpu checked) */
    gic_send_sgi_list(SGI_LIST, 0, list);
    check_one_each(SGI_LIST, "TargetList");
    printf("sgi: TargetList 0x%x reached cpus 1..%u once each\n", list, ncpus - 1);

    gic_send_sgi_others(SGI_ALL);
    check_one_each(SGI_ALL, "IRM=1");
    printf("sgi: IRM=1 reached cpus 1..%u once each\n", ncpus - 1);

    gic_send_sgi(SGI_SELF, mpidrs[0]);
    test_check(WFI_UNTIL(got[0][SGI_SELF] == 1, 1000), "SGI to self not taken within 1 s");
    check_one_each(SGI_SELF, "self");
    printf("sgi: SGI to self taken\n");
    test_check(misrouted == 0, "%u SGIs reached a CPU they were not sent to", misrouted);

    stop = 1;
    gic_send_sgi_others(SGI_STOP);
    for (unsigned c = 1; c < ncpus; c++)
        test_check(POLL_UNTIL(psci_affinity_info(mpidrs[c], 0) == PSCI_AFF_OFF, 2000), "cpu %u did not turn off", c);
    printf("sgi: secondaries off\n");
    return test_end();
}
