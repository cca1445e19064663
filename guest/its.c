/* its.c - LPIs through the GICv3 ITS, no PCI: the guest enables LPIs, sets up the ITS tables and command
   queue, maps DeviceID 0's events with MAPD/MAPC/MAPTI, raises them by writing GITS_TRANSLATER itself (a
   CPU's write is DeviceID 0) and takes the LPIs; then priorities from the configuration table, INV, INT,
   CLEAR, DISCARD and MOVI, and a command error. Built with ITS_INT=1 (make -C guest ITS_INT=1) it raises
   them with INT commands instead: KVM's in-kernel ITS ignores a CPU's GITS_TRANSLATER writes (only
   KVM_SIGNAL_MSI and irqfds inject MSIs there). */
#include "rt.h"

#define DEV 0     /* a CPU's GITS_TRANSLATER write: DeviceID 0 on QEMU virt and vmmpy */
#define LPI0 8192 /* the first LPI */
#define WAIT_MS 1000
#define QUIET_MS 20

static volatile unsigned count, order[8], norder;
static volatile unsigned last;
static uint64_t rd; /* the RDbase of this CPU for MAPC and SYNC */

#ifdef ITS_TRIGGER_INT
#define TRIGGER "INT"
#else
#define TRIGGER "GITS_TRANSLATER"
#endif

static void on_lpi(unsigned intid, void *arg)
{
    (void)arg;
    last = intid;
    if (norder < 8)
        order[norder] = intid;
    norder++;
    count++;
}

/* Event `event` of DeviceID 0: a GITS_TRANSLATER write, or an INT command (a failed one is skipped by Retry) */
static void trigger(uint32_t event)
{
#ifdef ITS_TRIGGER_INT
    if (its_event_cmd(ITS_INT, DEV, event) && (its_creadr() & 1))
        its_retry(ITS_SYNC, 0, rd, 0);
#else
    dsb(ish);
    mmio_write32(GITS_TRANSLATER, event);
#endif
}

/* IRQs unmasked until `n` LPIs were taken (or WAIT_MS), then QUIET_MS more to see nothing else comes */
static void take_until(unsigned n)
{
    irq_enable();
    POLL_UNTIL(count >= n, WAIT_MS);
    POLL_UNTIL(0, QUIET_MS);
    irq_disable();
}

static void reset_counts(void)
{
    count = 0;
    norder = 0;
    last = 0;
}

static int setup(void)
{
    if (!test_check(its_lpis_supported(), "GICD_TYPER.LPIS or GICR_TYPER.PLPIS is 0"))
        return -1;
    for (unsigned i = 0; i < 8; i++)
        its_lpi_config(LPI0 + i, GIC_PRIO_DEFAULT, 1);
    if (its_lpi_cpu_init() || its_init())
        return -1;
    gic_set_lpi_handler(on_lpi, 0);
    if (!test_check(!its_mapd(DEV, 5), "MAPD failed (GITS_CREADR 0x%lx)", its_creadr()) ||
        !test_check(!its_mapc(0, rd), "MAPC failed (GITS_CREADR 0x%lx)", its_creadr()) ||
        !test_check(!its_mapc(1, rd), "MAPC 1 failed") || !test_check(!its_sync(rd), "SYNC failed"))
        return -1;
    for (unsigned e = 0; e < 4; e++)
        if (!test_check(!its_mapti(DEV, e, LPI0 + e, 0), "MAPTI event %u failed", e))
            return -1;
    test_check(!its_cmd(ITS_INVALL, 0, 0, 0), "INVALL failed");
    test_check(!its_sync(rd), "SYNC failed");
    printf("its: LPIs on, ITS enabled, DeviceID %u events 0-3 -> LPIs %u-%u\n", DEV, LPI0, LPI0 + 3);
    return 0;
}

static void translate(void)
{
    reset_counts();
    trigger(2);
    take_until(1);
    test_check(count == 1 && last == LPI0 + 2, TRIGGER " event 2: %u LPI(s), last %u (want 1, %u)", count, last,
               LPI0 + 2);
    printf("its: " TRIGGER " event 2 -> LPI %u taken\n", last);
}

/* Pended with IRQs masked, taken in priority order (then lower INTID first on a tie) */
static void priorities(void)
{
    its_lpi_config(LPI0 + 1, 0x40, 1);
    its_lpi_config(LPI0 + 3, 0x20, 1);
    test_check(!its_event_cmd(ITS_INV, DEV, 1) && !its_event_cmd(ITS_INV, DEV, 3) && !its_sync(rd), "INV failed");
    reset_counts();
    for (unsigned e = 0; e < 4; e++)
        trigger(e);
    take_until(4);
    test_check(count == 4 && order[0] == LPI0 + 3 && order[1] == LPI0 + 1 && order[2] == LPI0 && order[3] == LPI0 + 2,
               "priority order %u %u %u %u (%u taken)", order[0], order[1], order[2], order[3], count);
    printf("its: priority order %u %u %u %u\n", order[0], order[1], order[2], order[3]);
}

/* Disabled in the configuration table: pending, not taken until enabled again (INV) */
static void disabled(void)
{
    its_lpi_config(LPI0, GIC_PRIO_DEFAULT, 0);
    test_check(!its_event_cmd(ITS_INV, DEV, 0) && !its_sync(rd), "INV failed");
    reset_counts();
    trigger(0);
    take_until(1);
    test_check(count == 0, "disabled LPI %u taken", LPI0);
    its_lpi_config(LPI0, GIC_PRIO_DEFAULT, 1);
    test_check(!its_event_cmd(ITS_INV, DEV, 0) && !its_sync(rd), "INV failed");
    take_until(1);
    test_check(count == 1 && last == LPI0, "LPI %u not taken once enabled (%u taken)", LPI0, count);
    printf("its: disabled LPI held pending, taken after enable + INV\n");
}

static void commands(void)
{
    reset_counts();
    test_check(!its_event_cmd(ITS_INT, DEV, 1), "INT failed");
    take_until(1);
    test_check(count == 1 && last == LPI0 + 1, "INT: %u taken, last %u", count, last);

    reset_counts();
    test_check(!its_event_cmd(ITS_INT, DEV, 1) && !its_event_cmd(ITS_CLEAR, DEV, 1), "INT/CLEAR failed");
    take_until(1);
    test_check(count == 0, "CLEAR: the LPI was still taken");

    /* MOVI to collection 1 (the same CPU) */
    its_lpi_config(LPI0 + 5, GIC_PRIO_DEFAULT, 1);
    test_check(!its_mapti(DEV, 5, LPI0 + 5, 0) && !its_event_cmd(ITS_INV, DEV, 5), "MAPTI 5 failed");
    test_check(!its_cmd(ITS_MOVI | (uint64_t)DEV << 32, 5, 1, 0) && !its_sync(rd), "MOVI failed");
    reset_counts();
    trigger(5);
    take_until(1);
    test_check(count == 1 && last == LPI0 + 5, "after MOVI: %u taken, last %u", count, last);

    /* DISCARD: the mapping goes, a later write is dropped */
    test_check(!its_event_cmd(ITS_DISCARD, DEV, 5) && !its_sync(rd), "DISCARD failed");
    reset_counts();
    trigger(5);
    take_until(1);
    test_check(count == 0, "DISCARD: event 5 still delivered");
    printf("its: INT, CLEAR, MOVI, DISCARD ok\n");
}

/* MAPTI of an EventID beyond the device's 32: a command error. IHI0069 lets the ITS ignore the command
   (QEMU) or stall the queue at it (vmmpy: GITS_CREADR.Stalled, resumed by GITS_CWRITER.Retry); either way
   the event stays unmapped. */
static void error(void)
{
    uint64_t at = its_creadr();
    int stalled;

    its_mapti(DEV, 40, LPI0 + 6, 0);
    stalled = its_creadr() & 1;
    if (stalled) {
        test_check((its_creadr() & ~1ul) == at, "stalled at 0x%lx, the command was at 0x%lx", its_creadr(), at);
        test_check(!its_retry(ITS_SYNC, 0, rd, 0), "the queue did not resume after Retry");
    }
    reset_counts();
    trigger(40);
    take_until(1);
    test_check(count == 0, "event 40 delivered after a failed MAPTI");
    test_check(!its_sync(rd), "SYNC after the error failed");
    printf("its: command error: %s\n", stalled ? "queue stalled, resumed by Retry" : "command ignored");
}

int main(uint64_t dtb)
{
    uintptr_t fdt = fdt_find(dtb);

    if (test_begin_gic("its"))
        return test_end();
    if (fdt) { /* QEMU gives bare-metal ELFs no DTB */
        uint32_t len;
        const char *c = fdt_getprop(fdt, "/intc@8000000/its@8080000", "compatible", &len);
        test_check(c && len >= 15, "no /intc@8000000/its@8080000 node in the DTB");
        test_check(fdt_getprop(fdt, "/intc@8000000/its@8080000", "msi-controller", &len) != 0,
                   "the ITS node is not an msi-controller");
    }
    rd = its_rdbase();
    if (setup())
        return test_end();
    translate();
    priorities();
    disabled();
    commands();
    error();
    return test_end();
}
