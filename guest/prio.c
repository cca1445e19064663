/* prio.c - GIC priorities on one CPU: preemption three deep (SGI 0xc0 < SGI 0x80 < SPI 0x40) with ICC_RPR_EL1
   in each handler and after each nested EOI, no preemption by equal or lower priority (ICC_HPPIR1_EL1 shows
   the waiting one), ICC_PMR_EL1 masking; the SPI is pended by software through GICD_ISPENDR. */
#include "rt.h"

#define SGI_LOW 8    /* priority PRIO_LOW */
#define SGI_HIGH 9   /* PRIO_HIGH */
#define SGI_EQUAL 10 /* PRIO_LOW */
#define SGI_LOWER 11 /* PRIO_LOWER */
#define SPI_TOP 46   /* PRIO_TOP, edge; SPIs 42-47 are unused on QEMU virt and vmmpy */
#define PRIO_TOP 0x40
#define PRIO_HIGH 0x80
#define PRIO_LOW 0xc0
#define PRIO_LOWER 0xe0
#define IDLE_PRIO 0xff
#define WAIT_MS 1000 /* for an interrupt that should come (returns as soon as it does) */
#define QUIET_MS 20  /* for one that must not */
#define LOG_MAX 16

enum { NEST = 1, NO_PREEMPT, PLAIN };
static volatile int scenario;

/* ---- what the handlers saw ---- */
/* events: INTID << 1 | 1 on exit; rpr_in[intid] on entry; rpr_back_* after a nested one returned */
static volatile uint32_t events[LOG_MAX];
static volatile unsigned nevents;
static volatile uint64_t rpr_in[64], rpr_back_low, rpr_back_high, hppir_in_low;
static volatile int pending_in_low;

static void event(unsigned intid, int exit)
{
    uint64_t daif = irq_save();
    if (nevents < LOG_MAX)
        events[nevents] = intid << 1 | (exit ? 1 : 0);
    nevents++;
    irq_restore(daif);
}

static int happened(unsigned intid, int exit)
{
    for (unsigned i = 0; i < nevents && i < LOG_MAX; i++)
        if (events[i] == (intid << 1 | (exit ? 1u : 0u)))
            return 1;
    return 0;
}

static void reset(int s)
{
    scenario = s;
    nevents = 0;
    for (unsigned i = 0; i < 64; i++)
        rpr_in[i] = 0;
    rpr_back_low = rpr_back_high = hppir_in_low = 0;
    pending_in_low = 0;
}

static uint64_t rpr(void)
{
    return read_sysreg_s(ICC_RPR_EL1) & 0xff;
}

static void send_self(unsigned sgi)
{
    gic_send_sgi(sgi, read_sysreg(mpidr_el1));
}

/* SGI_LOW: in NEST lets SGI_HIGH preempt it; in NO_PREEMPT sends an equal and a lower one that must wait */
static void on_low(unsigned intid, void *arg)
{
    (void)arg;
    event(intid, 0);
    rpr_in[intid] = rpr();
    if (scenario == NEST) {
        irq_enable();
        send_self(SGI_HIGH);
        POLL_UNTIL(happened(SGI_HIGH, 1), WAIT_MS);
        rpr_back_low = rpr(); /* SGI_HIGH's EOI dropped the running priority back to ours */
        irq_disable();
    } else if (scenario == NO_PREEMPT) {
        irq_enable();
        send_self(SGI_EQUAL);
        send_self(SGI_LOWER);
        POLL_UNTIL(0, QUIET_MS); /* neither may be taken while we are active */
        hppir_in_low = read_sysreg_s(ICC_HPPIR1_EL1) & 0xffffff;
        pending_in_low = gic_is_pending(SGI_EQUAL) && gic_is_pending(SGI_LOWER);
        irq_disable();
    }
    event(intid, 1);
}

/* SGI_HIGH: in NEST lets SPI_TOP preempt it */
static void on_high(unsigned intid, void *arg)
{
    (void)arg;
    event(intid, 0);
    rpr_in[intid] = rpr();
    if (scenario == NEST) {
        irq_enable();
        gic_set_pending(SPI_TOP);
        POLL_UNTIL(happened(SPI_TOP, 1), WAIT_MS);
        rpr_back_high = rpr();
        irq_disable();
    }
    event(intid, 1);
}

static void on_other(unsigned intid, void *arg)
{
    (void)arg;
    event(intid, 0);
    rpr_in[intid] = rpr();
    event(intid, 1);
}

static void print_events(const char *what)
{
    printf("prio: %s:", what);
    for (unsigned i = 0; i < nevents && i < LOG_MAX; i++)
        printf(" %u%c", events[i] >> 1, (events[i] & 1) ? '-' : '+');
    printf("\n");
}

/* the handlers' events were exactly `want` (INTIDs, negative for an exit) */
static void check_events(const char *what, const int *want, unsigned n)
{
    int same = nevents == n;
    for (unsigned i = 0; same && i < n; i++)
        same = events[i] == ((unsigned)(want[i] < 0 ? -want[i] : want[i]) << 1 | (want[i] < 0 ? 1u : 0u));
    print_events(what);
    test_check(same, "%s: wrong order of handler entries (+) and exits (-)", what);
}

static void check_rpr(const char *where, uint64_t got, uint64_t want)
{
    test_check(got == want, "ICC_RPR_EL1 %s is 0x%lx, want 0x%lx", where, got, want);
}

static void nesting(void)
{
    static const int want[] = { SGI_LOW, SGI_HIGH, SPI_TOP, -SPI_TOP, -SGI_HIGH, -SGI_LOW };

    reset(NEST);
    irq_enable();
    send_self(SGI_LOW);
    test_check(POLL_UNTIL(happened(SGI_LOW, 1), 1000), "SGI %u not handled within 1 s", SGI_LOW);
    irq_disable();
    check_events("nested preemption", want, 6);
    check_rpr("in the 0xc0 handler", rpr_in[SGI_LOW], PRIO_LOW);
    check_rpr("in the 0x80 handler", rpr_in[SGI_HIGH], PRIO_HIGH);
    check_rpr("in the 0x40 handler", rpr_in[SPI_TOP], PRIO_TOP);
    check_rpr("in the 0x80 handler after the 0x40 one's EOI", rpr_back_high, PRIO_HIGH);
    check_rpr("in the 0xc0 handler after the 0x80 one's EOI", rpr_back_low, PRIO_LOW);
    check_rpr("when idle", rpr(), IDLE_PRIO);
    printf("prio: RPR 0x%lx > 0x%lx > 0x%lx, back to 0x%lx, 0x%lx, idle 0x%lx\n", rpr_in[SGI_LOW], rpr_in[SGI_HIGH],
           rpr_in[SPI_TOP], rpr_back_high, rpr_back_low, rpr());
}

static void no_preemption(void)
{
    static const int want[] = { SGI_LOW, -SGI_LOW, SGI_EQUAL, -SGI_EQUAL, SGI_LOWER, -SGI_LOWER };

    reset(NO_PREEMPT);
    irq_enable();
    send_self(SGI_LOW);
    test_check(POLL_UNTIL(happened(SGI_LOWER, 1), 1000), "SGI %u not handled within 1 s", SGI_LOWER);
    irq_disable();
    check_events("equal and lower priority wait", want, 6);
    test_check(hppir_in_low == SGI_EQUAL, "ICC_HPPIR1_EL1 in the 0xc0 handler is %lu, want %u", hppir_in_low,
               SGI_EQUAL);
    test_check(pending_in_low, "SGIs %u and %u not both pending (GICR_ISPENDR0) while blocked", SGI_EQUAL, SGI_LOWER);
    check_rpr("in the equal-priority handler", rpr_in[SGI_EQUAL], PRIO_LOW);
    check_rpr("in the lower-priority handler", rpr_in[SGI_LOWER], PRIO_LOWER);
    check_rpr("when idle", rpr(), IDLE_PRIO);
}

static uint64_t set_pmr(uint64_t v)
{
    write_sysreg_s(ICC_PMR_EL1, v);
    isb();
    return read_sysreg_s(ICC_PMR_EL1);
}

/* with IRQs unmasked: only priorities strictly higher (numerically lower) than PMR are signalled */
static void pmr(void)
{
    static const int want_low[] = { SGI_LOW, -SGI_LOW };
    static const int want_top[] = { SPI_TOP, -SPI_TOP };
    uint64_t v;

    reset(PLAIN);
    irq_enable();
    v = set_pmr(PRIO_LOW);
    test_check(v == PRIO_LOW, "ICC_PMR_EL1 reads 0x%lx after writing 0x%x", v, PRIO_LOW);
    send_self(SGI_LOW);
    POLL_UNTIL(0, QUIET_MS);
    test_check(nevents == 0, "priority 0x%x taken with PMR 0x%x", PRIO_LOW, PRIO_LOW);
    test_check(gic_is_pending(SGI_LOW), "SGI %u not pending while PMR masks it", SGI_LOW);
    uint64_t hppir = read_sysreg_s(ICC_HPPIR1_EL1) & 0xffffff;
    test_check(hppir == SGI_LOW, "ICC_HPPIR1_EL1 is %lu while PMR masks SGI %u (HPPIR ignores PMR)", hppir, SGI_LOW);
    set_pmr(PRIO_LOW + 0x10);
    test_check(POLL_UNTIL(happened(SGI_LOW, 1), WAIT_MS), "priority 0x%x not taken with PMR 0x%x", PRIO_LOW,
               PRIO_LOW + 0x10);
    check_events("PMR 0xc0 then 0xd0", want_low, 2);

    reset(PLAIN);
    set_pmr(0);
    gic_set_pending(SPI_TOP);
    POLL_UNTIL(0, QUIET_MS);
    test_check(nevents == 0, "priority 0x%x taken with PMR 0", PRIO_TOP);
    set_pmr(PRIO_TOP);
    POLL_UNTIL(0, QUIET_MS);
    test_check(nevents == 0, "priority 0x%x taken with PMR 0x%x (equal must be masked)", PRIO_TOP, PRIO_TOP);
    set_pmr(PRIO_TOP + 0x10);
    test_check(POLL_UNTIL(happened(SPI_TOP, 1), WAIT_MS), "priority 0x%x not taken with PMR 0x%x", PRIO_TOP,
               PRIO_TOP + 0x10);
    check_events("PMR 0, 0x40, then 0x50", want_top, 2);
    irq_disable();
    v = set_pmr(0xff);
    printf("prio: ICC_PMR_EL1 0xff reads back 0x%lx (%u priority bits)\n", v, 8 - __builtin_ctzll(v | 0x100));
    check_rpr("when idle", rpr(), IDLE_PRIO);
}

int main(uint64_t dtb)
{
    (void)dtb;
    if (test_begin_gic("prio"))
        return test_end();
    if (!test_check(gic_num_intids() > SPI_TOP, "GICD_TYPER: only %u INTIDs", gic_num_intids()))
        return test_end();
    printf("prio: ICC_BPR1_EL1 %lu, ICC_CTLR_EL1 0x%lx\n", read_sysreg_s(ICC_BPR1_EL1), read_sysreg_s(ICC_CTLR_EL1));

    static const struct {
        unsigned intid;
        uint8_t prio;
        irq_fn fn;
    } irqs[] = {
        { SGI_LOW, PRIO_LOW, on_low },       { SGI_HIGH, PRIO_HIGH, on_high }, { SGI_EQUAL, PRIO_LOW, on_other },
        { SGI_LOWER, PRIO_LOWER, on_other }, { SPI_TOP, PRIO_TOP, on_other },
    };
    for (unsigned i = 0; i < sizeof(irqs) / sizeof(irqs[0]); i++) {
        gic_set_handler(irqs[i].intid, irqs[i].fn, 0);
        gic_set_priority(irqs[i].intid, irqs[i].prio);
        gic_enable(irqs[i].intid);
    }
    gic_set_edge(SPI_TOP, 1);
    check_rpr("when idle", rpr(), IDLE_PRIO);

    nesting();
    no_preemption();
    pmr();
    return test_end();
}
