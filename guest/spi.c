/* spi.c - edge vs level SPIs: software-pended edge SPIs are taken exactly once (pended twice, or again while
   active), ICPENDR, a level SPI pended by software is taken once, one pended with IRQs unmasked is taken at
   once; the PL011 TX interrupt (INTID 33, level) is pending while its source is high, ICPENDR cannot clear
   it, and it fires again after every EOI until the guest clears UARTIMSC.TXIM. */
#include "rt.h"

#define SPI_EDGE 44   /* SPIs 42-47 are unused on QEMU virt and vmmpy */
#define SPI_REPEND 45 /* edge, pended again by its own handler */
#define SPI_LEVEL 46  /* level, pended only by software */
#define UART_IMSC (UART_BASE + 0x38)
#define UART_RIS (UART_BASE + 0x3c)
#define UART_MIS (UART_BASE + 0x40)
#define UART_TXI (1u << 5)
#define TX_FIRES 5   /* TX interrupts taken before the handler masks the source */
#define WAIT_MS 1000 /* for an interrupt that should come (returns as soon as it does) */
#define QUIET_MS 20  /* for one that must not */

static volatile unsigned count[64], active_in[64], pending_in[64], mis_in;

static void on_spi(unsigned intid, void *arg)
{
    (void)arg;
    active_in[intid] += gic_is_active(intid);
    if (intid == SPI_REPEND && count[intid] == 0) {
        gic_set_pending(intid); /* active and pending: taken again after our EOI */
        pending_in[intid] = gic_is_pending(intid);
    }
    count[intid]++;
}

/* the TX source stays high: every EOI lets it in again, until we mask it at the UART */
static void on_uart(unsigned intid, void *arg)
{
    (void)arg;
    active_in[intid] += gic_is_active(intid);
    pending_in[intid] += gic_is_pending(intid); /* active and pending while the line is high */
    mis_in += (mmio_read32(UART_MIS) & UART_TXI) != 0;
    if (++count[intid] == TX_FIRES)
        mmio_write32(UART_IMSC, mmio_read32(UART_IMSC) & ~UART_TXI);
}

/* IRQs taken for ms: to see that nothing (more) comes */
static void idle_ms(uint64_t ms)
{
    irq_enable();
    POLL_UNTIL(0, ms);
    irq_disable();
}

static void take_until(volatile unsigned *c, unsigned n)
{
    irq_enable();
    POLL_UNTIL(*c >= n, WAIT_MS);
    irq_disable();
    idle_ms(QUIET_MS);
}

static void edge(void)
{
    gic_set_edge(SPI_EDGE, 1);
    test_check(gic_is_edge(SPI_EDGE), "GICD_ICFGR: SPI %u does not read back as edge", SPI_EDGE);

    /* disabled: pending state only */
    gic_set_pending(SPI_EDGE);
    gic_set_pending(SPI_EDGE);
    test_check(gic_is_pending(SPI_EDGE), "GICD_ISPENDR: SPI %u not pending after a write", SPI_EDGE);
    gic_clear_pending(SPI_EDGE);
    test_check(!gic_is_pending(SPI_EDGE), "GICD_ICPENDR: SPI %u still pending", SPI_EDGE);
    idle_ms(QUIET_MS);
    test_check(count[SPI_EDGE] == 0, "disabled SPI %u was taken", SPI_EDGE);

    /* pended twice, enabled: taken once */
    gic_set_pending(SPI_EDGE);
    gic_set_pending(SPI_EDGE);
    gic_enable(SPI_EDGE);
    take_until(&count[SPI_EDGE], 1);
    test_check(count[SPI_EDGE] == 1, "edge SPI %u pended twice was taken %u times, want 1", SPI_EDGE, count[SPI_EDGE]);
    test_check(active_in[SPI_EDGE] == count[SPI_EDGE], "GICD_ISACTIVER: SPI %u not active in its handler", SPI_EDGE);
    test_check(!gic_is_pending(SPI_EDGE) && !gic_is_active(SPI_EDGE), "SPI %u pending or active after its EOI",
               SPI_EDGE);

    /* enabled but PSTATE.I set: ICPENDR withdraws it before it is taken */
    gic_set_pending(SPI_EDGE);
    gic_clear_pending(SPI_EDGE);
    idle_ms(QUIET_MS);
    test_check(count[SPI_EDGE] == 1, "SPI %u taken after GICD_ICPENDR cleared it", SPI_EDGE);
    printf("spi: edge SPI %u: pended twice -> taken %u time(s), ICPENDR withdraws it\n", SPI_EDGE, count[SPI_EDGE]);

    /* pended again by its own handler (active and pending): taken exactly once more */
    gic_set_edge(SPI_REPEND, 1);
    gic_enable(SPI_REPEND);
    gic_set_pending(SPI_REPEND);
    take_until(&count[SPI_REPEND], 2);
    test_check(count[SPI_REPEND] == 2, "edge SPI %u re-pended while active was taken %u times, want 2", SPI_REPEND,
               count[SPI_REPEND]);
    test_check(pending_in[SPI_REPEND], "SPI %u not pending after GICD_ISPENDR in its own handler", SPI_REPEND);
    printf("spi: edge SPI %u re-pended while active: taken %u times\n", SPI_REPEND, count[SPI_REPEND]);
}

/* a level-sensitive SPI with no source: the software pending latch is cleared by the acknowledge */
static void level_software(void)
{
    gic_set_edge(SPI_LEVEL, 0);
    test_check(!gic_is_edge(SPI_LEVEL), "GICD_ICFGR: SPI %u does not read back as level", SPI_LEVEL);
    gic_enable(SPI_LEVEL);
    gic_set_pending(SPI_LEVEL);
    take_until(&count[SPI_LEVEL], 1);
    test_check(count[SPI_LEVEL] == 1, "level SPI %u pended by GICD_ISPENDR was taken %u times, want 1", SPI_LEVEL,
               count[SPI_LEVEL]);
    printf("spi: level SPI %u pended by software: taken %u time(s)\n", SPI_LEVEL, count[SPI_LEVEL]);
}

static int uart_pending(void)
{
    return gic_is_pending(INTID_UART);
}

/*
 * A GICD_ISPENDR write with IRQs unmasked: the SPI is taken at once, here within a few iterations of a
 * loop that traps nothing (no system register, no exception, no device access). A backend that raises
 * the vCPU's line inside the write must still end the translated code it is in (QEMU TCG: the next
 * block start), or the loop runs to its end first. Taken after SPIN_MAX iterations is a failure.
 */
#define SPIN_MAX 1000000u
#define SPIN_SOON 1000u

static void at_once(void)
{
    unsigned n = 0, before = count[SPI_EDGE];

    gic_enable(SPI_EDGE);
    irq_enable();
    gic_set_pending(SPI_EDGE);
    while (count[SPI_EDGE] == before && n < SPIN_MAX)
        n++;
    irq_disable();
    test_check(count[SPI_EDGE] == before + 1 && n < SPIN_SOON,
               "edge SPI %u pended with IRQs unmasked: taken %u time(s) after %u loop iterations, want once within %u",
               SPI_EDGE, count[SPI_EDGE] - before, n, SPIN_SOON);
    printf("spi: edge SPI %u pended with IRQs unmasked: taken at once\n", SPI_EDGE);
}

static void uart_tx_level(void)
{
    test_check(mmio_read32(UART_RIS) & UART_TXI, "UARTRIS.TXRIS is 0 (transmit FIFO empty after output)");
    printf("spi: PL011 TX interrupt (INTID %u, level), UARTRIS 0x%x\n", INTID_UART, mmio_read32(UART_RIS));
    uart_flush();

    /* no printing from here on until TXIM is clear again: the UART stays as it is */
    gic_set_edge(INTID_UART, 0);
    gic_set_handler(INTID_UART, on_uart, 0);
    gic_enable(INTID_UART);
    mmio_write32(UART_IMSC, UART_TXI);
    int pend_high = POLL_UNTIL(uart_pending(), WAIT_MS);
    gic_clear_pending(INTID_UART);
    int pend_after_icpendr = !POLL_UNTIL(!uart_pending(), QUIET_MS);
    mmio_write32(UART_IMSC, 0);
    int pend_low = !POLL_UNTIL(!uart_pending(), WAIT_MS);

    mmio_write32(UART_IMSC, UART_TXI);
    take_until(&count[INTID_UART], TX_FIRES);
    mmio_write32(UART_IMSC, 0);

    test_check(pend_high, "INTID %u not pending with UARTIMSC.TXIM set", INTID_UART);
    test_check(pend_after_icpendr, "GICD_ICPENDR cleared INTID %u although its source is high", INTID_UART);
    test_check(!pend_low, "INTID %u still pending after UARTIMSC.TXIM was cleared", INTID_UART);
    test_check(count[INTID_UART] == TX_FIRES, "TX interrupt taken %u times, want %u (until masked)", count[INTID_UART],
               TX_FIRES);
    test_check(active_in[INTID_UART] == count[INTID_UART], "GICD_ISACTIVER: INTID %u active in %u of %u handler calls",
               INTID_UART, active_in[INTID_UART], count[INTID_UART]);
    test_check(pending_in[INTID_UART] == count[INTID_UART],
               "INTID %u active and pending (source high) in %u of %u handler calls", INTID_UART,
               pending_in[INTID_UART], count[INTID_UART]);
    test_check(mis_in == count[INTID_UART], "UARTMIS.TXMIS set in %u of %u handler calls", mis_in, count[INTID_UART]);
    test_check(!uart_pending() && !gic_is_active(INTID_UART), "INTID %u pending or active at the end", INTID_UART);
    printf("spi: level INTID %u: pending %d, after ICPENDR %d, after TXIM cleared %d; taken %u times until masked\n",
           INTID_UART, pend_high, pend_after_icpendr, pend_low, count[INTID_UART]);
}

int main(uint64_t dtb)
{
    (void)dtb;
    if (test_begin_gic("spi"))
        return test_end();
    if (!test_check(gic_num_intids() > SPI_LEVEL, "GICD_TYPER: only %u INTIDs", gic_num_intids()))
        return test_end();
    printf("spi: %u INTIDs\n", gic_num_intids());
    gic_set_handler(SPI_EDGE, on_spi, 0);
    gic_set_handler(SPI_REPEND, on_spi, 0);
    gic_set_handler(SPI_LEVEL, on_spi, 0);

    edge();
    level_software();
    at_once();
    uart_tx_level();
    return test_end();
}
